//! `cellpay bench`: a load generator. Creates and funds N customer accounts, runs p2p transfers
//! between them for a while (one transfer per request, or B per batch request), prints
//! throughput, latency (p50/p99/p999/max), rejections and errors by code and progress every
//! 5 s, and checks conservation of money at the end; `--json` writes the same as JSON.
//!
//! Two load shapes:
//! - **closed loop** (default): C workers, each with one request in flight; the next request
//!   leaves when the last is answered, so a slow server is offered less load.
//! - **open loop** (`--rate R`): R requests per second leave on a fixed schedule whatever the
//!   answers, at most C in flight; a request's latency runs from the moment the schedule meant it
//!   to leave, so time spent waiting for a free slot counts (no coordinated omission).
//!
//! A request that fails in transport or is answered 429/5xx is retried with the same transfer
//! ids: the idempotent-retry path of the API. A request's latency covers all its attempts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::limits::BATCH_MAX;

/// Money issued to each bench account, in minor units.
const FUNDING: u64 = 1_000_000;
/// Attempts of one request (the first included) on transport errors, 429 and 5xx.
const ATTEMPTS: u32 = 5;
/// Requests at once while creating, funding and reading accounts.
const SETUP_CONCURRENCY: usize = 64;
const FUNDING_CONCURRENCY: usize = 4;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After the run's end, transfers still failing get this long to be retried, then count as
/// unresolved (so a stalled cluster cannot keep the bench running for minutes).
const RETRY_GRACE: Duration = Duration::from_secs(10);
/// Largest account count of a run with transfers (each account is funded, and read back for
/// the conservation check).
const ACCOUNTS_MAX: usize = 1_000_000;
/// Accounts `--open-only` may open (the account id has room for 10,000,000 indexes).
const IDLE_ACCOUNTS_MAX: usize = 10_000_000;
/// Accounts per `POST /v1/accounts/batch` while setting up.
const OPEN_CHUNK: usize = 4096;
/// Open loop: requests scheduled but still waiting for a free slot, at most; past it the
/// schedule's requests are not sent and count as `not_sent_backlog` (the server is far behind).
const OPEN_BACKLOG_MAX: u64 = 100_000;
/// Error codes of a batch item that a retry may cure (their HTTP status is 429 or 5xx).
const RETRYABLE_CODES: [&str; 3] = ["overloaded", "unavailable", "internal"];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Node URLs, comma separated (http://127.0.0.1:8080,http://127.0.0.1:8081); requests are
    /// spread round-robin over them.
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    /// Admin bearer token.
    #[arg(long)]
    pub token: String,
    /// Accounts created and funded for the run (2..=1000000; up to 10000000 with --open-only).
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Only open the accounts (no funding, no transfers) and report how fast: for sizing the
    /// memory and the restart of a node holding many idle accounts.
    #[arg(long)]
    pub open_only: bool,
    /// How long to send transfers: 500ms, 30s, 2m, 1h (a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent workers, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Transfers per request: 1 uses POST /v1/transfers, more uses /v1/transfers/batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Open loop: send this many requests per second on a fixed schedule (at most
    /// --concurrency in flight) instead of closed-loop workers.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Percent of the transfers (0..=100) whose payer, payee and id all live on one shard, so
    /// each is one local command; the rest draw payer and payee at random over all accounts
    /// (with N shards, about 1 in N² of them is local by chance). For measuring what the
    /// cross-shard steps cost against the same load kept on each shard.
    #[arg(long, default_value_t = 0)]
    pub local_percent: u8,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let targets = check_args(&args)?;
    let bench = Arc::new(Bench::new(targets, &args.token, args.concurrency)?);
    let currency = bench.preflight().await?;
    let tag = format!("{:04}", rand::rng().random_range(0..10_000u32));
    let ids: Arc<Vec<String>> = Arc::new(
        (0..args.accounts)
            .map(|index| account_id(&tag, index))
            .collect(),
    );
    eprintln!("run {tag}: creating {} accounts ...", ids.len());
    let opening = Instant::now();
    create_accounts(&bench, &ids, &tag, currency.as_deref()).await?;
    if args.open_only {
        let seconds = opening.elapsed().as_secs_f64();
        println!(
            "opened {} accounts in {seconds:.1} s ({:.0}/s)",
            ids.len(),
            ids.len() as f64 / seconds.max(f64::EPSILON)
        );
        return Ok(());
    }
    eprintln!("run {tag}: funding them with {FUNDING} each ...");
    fund_accounts(&bench, &ids, &tag).await?;
    // Read after funding: a configured fee on `issue` is paid by `float`, not by bench accounts.
    let fees_start = summary_field(&bench, "fees_balance").await?;
    match args.rate {
        Some(rate) => eprintln!(
            "run {tag}: sending {rate} requests/s for {:?}, at most {} in flight ...",
            args.duration, args.concurrency
        ),
        None => eprintln!(
            "run {tag}: sending transfers for {:?} from {} workers ...",
            args.duration, args.concurrency
        ),
    }
    let shards = if args.local_percent > 0 {
        Shards::of(&bench, &ids).await?
    } else {
        Shards::default()
    };
    let deadline = Instant::now() + args.duration;
    let load = Load {
        bench: Arc::clone(&bench),
        ids: Arc::clone(&ids),
        tag: tag.clone(),
        batch: args.batch,
        local_percent: args.local_percent,
        shards: Arc::new(shards),
        deadline,
        progress: Arc::new(Progress {
            transfers: AtomicU64::new(0),
            give_up: deadline + RETRY_GRACE,
        }),
    };
    let (stats, elapsed) = match args.rate {
        Some(rate) => run_open_loop(load, rate, args.concurrency).await?,
        None => run_load(load, args.concurrency).await?,
    };
    let mut report = report(&args, &bench.targets, &stats, elapsed);
    print_report(&report);
    let conserved = check_conservation(&bench, &ids, fees_start).await;
    report["conservation_ok"] = json!(conserved.is_ok());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    conserved
}

/// Validates the arguments; returns the targets without trailing slashes.
fn check_args(args: &BenchArgs) -> anyhow::Result<Vec<String>> {
    let accounts_max = if args.open_only {
        IDLE_ACCOUNTS_MAX
    } else {
        ACCOUNTS_MAX
    };
    ensure!(
        (2..=accounts_max).contains(&args.accounts),
        "--accounts must be between 2 and {accounts_max}"
    );
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    ensure!(
        args.rate.is_none_or(|rate| rate >= 1),
        "--rate must be at least 1"
    );
    ensure!(
        (1..=BATCH_MAX).contains(&args.batch),
        "--batch must be between 1 and {BATCH_MAX}"
    );
    ensure!(
        args.local_percent <= 100,
        "--local-percent must be between 0 and 100"
    );
    let targets: Vec<String> = args
        .target
        .iter()
        .map(|target| target.trim().trim_end_matches('/').to_string())
        .filter(|target| !target.is_empty())
        .collect();
    ensure!(!targets.is_empty(), "--target needs at least one URL");
    for target in &targets {
        ensure!(
            target.starts_with("http://"),
            "--target {target}: only plain http:// URLs are supported"
        );
    }
    Ok(targets)
}

/// `+1999` + 4-digit run tag + 6-digit index: 14 digits, a valid E.164 number.
fn account_id(tag: &str, index: usize) -> String {
    format!("+1999{tag}{index:06}")
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    if duration.is_zero() {
        return Err("duration must be positive".into());
    }
    Ok(duration)
}

/// The value at the given per-mille rank of an ascending slice (nearest rank); 0 when empty.
fn percentile(sorted: &[u64], per_mille: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (per_mille * sorted.len())
        .div_ceil(1000)
        .clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The HTTP side: one pooled client, the targets and a round-robin cursor.
struct Bench {
    client: reqwest::Client,
    targets: Vec<String>,
    token: String,
    next: AtomicUsize,
}

/// One HTTP attempt's result: a status and JSON body, or a transport failure (its code).
enum Reply {
    Answer(u16, Value),
    Transport(&'static str),
}

impl Bench {
    fn new(targets: Vec<String>, token: &str, concurrency: usize) -> anyhow::Result<Bench> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(SETUP_CONCURRENCY))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Bench {
            client,
            targets,
            token: token.to_string(),
            next: AtomicUsize::new(0),
        })
    }

    /// Where a request starts in the round-robin; its retries move on to the next targets, so a
    /// dead node costs a retry at most every `targets.len()` attempts.
    fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn target(&self, start: usize, attempt: u32) -> &str {
        &self.targets[start.wrapping_add(attempt as usize) % self.targets.len()]
    }

    /// One attempt, on the next target.
    async fn send(
        &self,
        target: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("{target}{path}");
        let mut request = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Reply::Transport(transport_code(&error)),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(bytes) => Reply::Answer(
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ),
            Err(error) => Reply::Transport(transport_code(&error)),
        }
    }

    /// A set-up or check request, retried on transport errors, 429 and 5xx.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut last = String::new();
        let start = self.start();
        for attempt in 1..=ATTEMPTS {
            let target = self.target(start, attempt);
            match self.send(target, method.clone(), path, body).await {
                Reply::Answer(status, answer) if status != 429 && status < 500 => {
                    return Ok((status, answer))
                }
                Reply::Answer(status, answer) => last = format!("{status} {answer}"),
                Reply::Transport(code) => last = code.to_string(),
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        bail!("{method} {path} failed {ATTEMPTS} times; last: {last}")
    }

    /// A `GET` that must answer 200 (retried like [`Bench::call`]); its body.
    async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await?;
        ensure!(status == 200, "GET {path} answered {status}: {body}");
        Ok(body)
    }

    /// Checks every target's /health and the token; returns the cluster's currency when known.
    async fn preflight(&self) -> anyhow::Result<Option<String>> {
        for target in &self.targets {
            let url = format!("{target}/health");
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            ensure!(
                response.status().is_success(),
                "GET {url} answered {}",
                response.status()
            );
        }
        let (status, float) = self
            .call(reqwest::Method::GET, "/v1/accounts/float", None)
            .await?;
        ensure!(status != 401, "the token was refused (401)");
        Ok(float["currency"].as_str().map(str::to_string))
    }
}

fn transport_code(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "transport_timeout"
    } else if error.is_connect() {
        "transport_connect"
    } else {
        "transport"
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 * u64::from(attempt))
}

/// Opens the accounts through `POST /v1/accounts/batch`, [`OPEN_CHUNK`] per request and
/// [`FUNDING_CONCURRENCY`] requests at once. An account that already exists is accepted only
/// when it is empty (typically opened by an earlier attempt of the same request); items that
/// answer a code a retry may cure ([`RETRYABLE_CODES`]) are sent again, a bounded number of times.
async fn create_accounts(
    bench: &Bench,
    ids: &[String],
    tag: &str,
    currency: Option<&str>,
) -> anyhow::Result<()> {
    // Each chunk's bodies are built when it is sent: ten million JSON values at once would
    // take gigabytes.
    let item = |index: usize, id: &String| {
        let mut body =
            json!({"id": id, "kind": "customer", "name": format!("bench {tag} {index}")});
        if let Some(currency) = currency {
            body["currency"] = json!(currency);
        }
        body
    };
    stream::iter(ids.chunks(OPEN_CHUNK).enumerate())
        .map(|(chunk, chunk_ids)| {
            let first = chunk * OPEN_CHUNK;
            let items = chunk_ids
                .iter()
                .enumerate()
                .map(|(offset, id)| item(first + offset, id))
                .collect();
            open_chunk(bench, items)
        })
        .buffer_unordered(FUNDING_CONCURRENCY)
        .try_collect::<()>()
        .await
}

async fn open_chunk(bench: &Bench, mut items: Vec<Value>) -> anyhow::Result<()> {
    for attempt in 1..=ATTEMPTS {
        let body = json!({ "accounts": items });
        let (status, answer) = bench
            .call(reqwest::Method::POST, "/v1/accounts/batch", Some(&body))
            .await?;
        ensure!(
            status == 200,
            "opening accounts answered {status}: {answer}"
        );
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        ensure!(
            results.len() == items.len(),
            "opening accounts answered {answer}"
        );
        let mut again = Vec::new();
        for (item, result) in items.into_iter().zip(results) {
            let id = item["id"].as_str().unwrap_or_default().to_string();
            match result["error"]["code"].as_str() {
                None => {}
                Some("account_exists") => {
                    let account = get_account(bench, &id).await?;
                    let empty = ["balance", "pending_out", "pending_in"]
                        .iter()
                        .all(|field| account[field] == 0);
                    ensure!(empty, "account {id} already exists with money (run tag collision): retry the bench");
                }
                Some(code) if RETRYABLE_CODES.contains(&code) => again.push(item),
                Some(_) => bail!("opening {id} answered {result}"),
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        items = again;
        tokio::time::sleep(backoff(attempt)).await;
    }
    bail!(
        "{} accounts could not be opened after {ATTEMPTS} attempts",
        items.len()
    )
}

async fn get_account(bench: &Bench, id: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/accounts/{}", id.replace('+', "%2B"));
    let (status, account) = bench.call(reqwest::Method::GET, &path, None).await?;
    ensure!(status == 200, "GET {path} answered {status}: {account}");
    Ok(account)
}

/// Issues [`FUNDING`] to every account from `float`, in batches of up to [`BATCH_MAX`].
async fn fund_accounts(bench: &Bench, ids: &[String], tag: &str) -> anyhow::Result<()> {
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| {
            json!({"id": format!("b{tag}-fund-{index}"), "kind": "issue", "from": "float", "to": id, "amount": FUNDING})
        })
        .collect();
    stream::iter(items.chunks(BATCH_MAX))
        .map(|chunk| async move {
            let mut stats = Stats::default();
            let now = Instant::now();
            send_transfers(bench, chunk.to_vec(), true, &mut stats, None, now).await;
            ensure!(
                stats.completed == chunk.len() as u64,
                "funding failed: {} of {} completed; rejections {:?}, errors {:?}",
                stats.completed,
                chunk.len(),
                stats.rejections,
                stats.errors
            );
            Ok(())
        })
        .buffer_unordered(FUNDING_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// How one transfer fared in one attempt.
#[derive(Debug, PartialEq)]
enum Outcome {
    Completed {
        fee: u64,
    },
    Rejected(String),
    /// Worth retrying with the same id (transport error, 429, 5xx).
    Retry(String),
    /// A final error answer.
    Failed(String),
}

/// Classifies a single-transfer answer (`status` given) or a batch item (`status` None).
fn classify(status: Option<u16>, body: &Value) -> Outcome {
    match body["status"].as_str() {
        Some("completed" | "pending") => {
            return Outcome::Completed {
                fee: body["fee"].as_u64().unwrap_or(0),
            }
        }
        Some("rejected") => {
            return Outcome::Rejected(body["code"].as_str().unwrap_or("rejected").to_string())
        }
        _ => {}
    }
    let code = body["error"]["code"].as_str().map(str::to_string);
    match (status, code) {
        (Some(status), code) if status == 429 || status >= 500 => {
            Outcome::Retry(code.unwrap_or(format!("http_{status}")))
        }
        (_, Some(code)) if RETRYABLE_CODES.contains(&code.as_str()) => Outcome::Retry(code),
        (_, Some(code)) => Outcome::Failed(code),
        (Some(status), None) => Outcome::Failed(format!("http_{status}")),
        (None, None) => Outcome::Failed("bad_batch_item".to_string()),
    }
}

/// One attempt at sending `items`: one per request, or all in one batch request.
async fn attempt(bench: &Bench, target: &str, items: &[Value], batch: bool) -> Vec<Outcome> {
    if !batch {
        return match bench
            .send(
                target,
                reqwest::Method::POST,
                "/v1/transfers",
                items.first(),
            )
            .await
        {
            Reply::Answer(status, body) => vec![classify(Some(status), &body)],
            Reply::Transport(code) => vec![Outcome::Retry(code.to_string())],
        };
    }
    let body = json!({ "transfers": items });
    let every = |outcome: &dyn Fn() -> Outcome| items.iter().map(|_| outcome()).collect();
    match bench
        .send(
            target,
            reqwest::Method::POST,
            "/v1/transfers/batch",
            Some(&body),
        )
        .await
    {
        Reply::Transport(code) => every(&|| Outcome::Retry(code.to_string())),
        Reply::Answer(200, answer) => match answer["results"].as_array() {
            Some(results) if results.len() == items.len() => {
                results.iter().map(|item| classify(None, item)).collect()
            }
            _ => every(&|| Outcome::Retry("bad_batch_response".to_string())),
        },
        Reply::Answer(status, answer) => every(&|| classify(Some(status), &answer)),
    }
}

/// Sends `items` (same ids on every retry) until each has a final answer or [`ATTEMPTS`] ran out.
/// Records every attempt's latency, and each resolved transfer in `progress`, whose `give_up`
/// time also ends retrying.
/// Sends one request's transfers to a final outcome (retrying what may be retried); records one
/// latency, from `scheduled` to the last answer.
async fn send_transfers(
    bench: &Bench,
    mut items: Vec<Value>,
    batch: bool,
    stats: &mut Stats,
    progress: Option<&Progress>,
    scheduled: Instant,
) {
    let start = bench.start();
    let record = |stats: &mut Stats| {
        let latency = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.latencies_us.push(latency);
    };
    for attempt_number in 1..=ATTEMPTS {
        let target = bench.target(start, attempt_number);
        let outcomes = attempt(bench, target, &items, batch).await;
        stats.requests += 1;
        let mut retry = Vec::new();
        for (item, outcome) in items.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Completed { fee } => {
                    stats.completed += 1;
                    stats.fees += u128::from(fee);
                }
                Outcome::Rejected(code) => *stats.rejections.entry(code).or_default() += 1,
                Outcome::Failed(code) => *stats.errors.entry(code).or_default() += 1,
                Outcome::Retry(code) => {
                    *stats.errors.entry(code).or_default() += 1;
                    retry.push(item);
                    continue;
                }
            }
            if let Some(progress) = progress {
                progress.transfers.fetch_add(1, Ordering::Relaxed);
            }
        }
        if retry.is_empty() {
            record(stats);
            return;
        }
        items = retry;
        let too_late = progress.is_some_and(|progress| Instant::now() >= progress.give_up);
        if attempt_number == ATTEMPTS || too_late {
            break;
        }
        stats.retried += items.len() as u64;
        tokio::time::sleep(backoff(attempt_number)).await;
    }
    stats.unresolved += items.len() as u64;
    record(stats);
}

/// What a worker (or the whole run) counted.
#[derive(Default)]
struct Stats {
    latencies_us: Vec<u64>,
    requests: u64,
    completed: u64,
    retried: u64,
    unresolved: u64,
    fees: u128,
    rejections: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.completed += other.completed;
        self.retried += other.retried;
        self.unresolved += other.unresolved;
        self.fees += other.fees;
        for (code, count) in other.rejections {
            *self.rejections.entry(code).or_default() += count;
        }
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    fn rejected(&self) -> u64 {
        self.rejections.values().sum()
    }
}

/// Shared by the workers of a run.
struct Progress {
    /// Transfers with a final answer so far.
    transfers: AtomicU64,
    /// No retries after this instant (the end of the run plus [`RETRY_GRACE`]).
    give_up: Instant,
}

/// Everything a worker needs.
#[derive(Clone)]
struct Load {
    bench: Arc<Bench>,
    ids: Arc<Vec<String>>,
    tag: String,
    batch: usize,
    /// See [`BenchArgs::local_percent`].
    local_percent: u8,
    shards: Arc<Shards>,
    deadline: Instant,
    progress: Arc<Progress>,
}

/// The bench accounts grouped by the shard that holds them (for `--local-percent`).
#[derive(Default)]
struct Shards {
    count: u32,
    /// Per shard, the indices (into the run's ids) of its accounts.
    members: Vec<Vec<usize>>,
    /// Per account index, its shard.
    shard_of: Vec<u32>,
}

impl Shards {
    /// Learns the shard count from `GET /v1/cluster` and places every account.
    async fn of(bench: &Bench, ids: &[String]) -> anyhow::Result<Shards> {
        let cluster = bench.get_ok("/v1/cluster").await?;
        let count = cluster["shards"]
            .as_array()
            .map(Vec::len)
            .and_then(|count| u32::try_from(count).ok())
            .filter(|count| *count > 0)
            .context("GET /v1/cluster lists no shards")?;
        Shards::place(ids, count)
    }

    /// Places every account of `ids` on one of `count` shards, as the cluster does.
    fn place(ids: &[String], count: u32) -> anyhow::Result<Shards> {
        let mut members = vec![Vec::new(); count as usize];
        let mut shard_of = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            let account = ledger::AccountId::parse(id)
                .map_err(|error| anyhow::anyhow!("bench account {id}: {error:?}"))?;
            let shard = ledger::shard_of(&account, count).0;
            members[shard as usize].push(index);
            shard_of.push(shard);
        }
        Ok(Shards {
            count,
            members,
            shard_of,
        })
    }
}

/// Runs `concurrency` workers until the deadline; returns their merged stats and the elapsed time.
async fn run_load(load: Load, concurrency: usize) -> anyhow::Result<(Stats, Duration)> {
    let started = Instant::now();
    let reporter = tokio::spawn(report_progress(Arc::clone(&load.progress), started));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| tokio::spawn(run_worker(load.clone(), worker)))
        .collect();
    let mut total = Stats::default();
    for worker in workers {
        total.merge(worker.await.context("a bench worker panicked")?);
    }
    let elapsed = started.elapsed();
    reporter.abort();
    total.latencies_us.sort_unstable();
    Ok((total, elapsed))
}

/// The next request's transfers: random payer, a different random payee, 1..=100 each; ids
/// unique per run (`b<tag>-<source>-<seq>`). With `--local-percent`, that share of them takes
/// its payee from the payer's shard and skips sequence numbers until the id's home is there too.
fn next_items(load: &Load, rng: &mut StdRng, source: usize, seq: &mut u64) -> Vec<Value> {
    let count = load.ids.len();
    (0..load.batch)
        .map(|_| {
            *seq += 1;
            let from = rng.random_range(0..count);
            let local = load.local_percent > 0 && rng.random_range(0..100u8) < load.local_percent;
            let shard = load.shards.shard_of.get(from).copied();
            let neighbours = shard.map_or(&[][..], |shard| &load.shards.members[shard as usize]);
            let to = if local && neighbours.len() > 1 {
                loop {
                    let to = neighbours[rng.random_range(0..neighbours.len())];
                    if to != from {
                        break to;
                    }
                }
            } else {
                let to = rng.random_range(0..count - 1);
                if to >= from {
                    to + 1
                } else {
                    to
                }
            };
            let mut id = format!("b{}-{source}-{seq}", load.tag);
            if let (true, Some(shard)) = (local, shard) {
                // One in `count` ids is homed on the shard: a few tries on average.
                while ledger::TransferId::parse(&id)
                    .map(|parsed| ledger::home_of(&parsed, load.shards.count).0 != shard)
                    .unwrap_or(false)
                {
                    *seq += 1;
                    id = format!("b{}-{source}-{seq}", load.tag);
                }
            }
            json!({
                "id": id, "kind": "p2p",
                "from": load.ids[from], "to": load.ids[to], "amount": rng.random_range(1..=100u64),
            })
        })
        .collect()
}

async fn run_worker(load: Load, worker: usize) -> Stats {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut stats = Stats::default();
    let mut seq: u64 = 0;
    while Instant::now() < load.deadline {
        let items = next_items(&load, &mut rng, worker, &mut seq);
        let now = Instant::now();
        send_transfers(
            &load.bench,
            items,
            load.batch > 1,
            &mut stats,
            Some(&load.progress),
            now,
        )
        .await;
    }
    stats
}

/// Open loop: request `i` is meant to leave at `start + i / rate`; it waits for one of
/// `concurrency` slots, and its latency counts from the moment it was meant to leave.
async fn run_open_loop(
    load: Load,
    rate: u64,
    concurrency: usize,
) -> anyhow::Result<(Stats, Duration)> {
    let started = Instant::now();
    let reporter = tokio::spawn(report_progress(Arc::clone(&load.progress), started));
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let total = Arc::new(Mutex::new(Stats::default()));
    let waiting = Arc::new(AtomicU64::new(0));
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut seq: u64 = 0;
    let mut shed: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let period_ns = 1_000_000_000u64 / rate.max(1);
    for i in 0u64.. {
        let offset = Duration::from_nanos(i.saturating_mul(period_ns.max(1)));
        let scheduled = started + offset;
        if scheduled >= load.deadline {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let items = next_items(&load, &mut rng, 0, &mut seq);
        if waiting.load(Ordering::Relaxed) >= OPEN_BACKLOG_MAX {
            shed += items.len() as u64;
            continue;
        }
        waiting.fetch_add(1, Ordering::Relaxed);
        let (load, slots, total, waiting) = (
            load.clone(),
            Arc::clone(&slots),
            Arc::clone(&total),
            Arc::clone(&waiting),
        );
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            waiting.fetch_sub(1, Ordering::Relaxed);
            let mut stats = Stats::default();
            let batch = load.batch > 1;
            send_transfers(
                &load.bench,
                items,
                batch,
                &mut stats,
                Some(&load.progress),
                scheduled,
            )
            .await;
            total
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(stats);
        });
        // Reap finished tasks as we go so the set stays as small as the backlog.
        while tasks.try_join_next().is_some() {}
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a bench request task panicked")?;
    }
    let elapsed = started.elapsed();
    reporter.abort();
    let mut stats = std::mem::take(&mut *total.lock().unwrap_or_else(PoisonError::into_inner));
    if shed > 0 {
        stats.errors.insert("not_sent_backlog".to_string(), shed);
    }
    stats.latencies_us.sort_unstable();
    Ok((stats, elapsed))
}

async fn report_progress(progress: Arc<Progress>, started: Instant) {
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut previous = 0;
    loop {
        ticker.tick().await;
        let transfers = progress.transfers.load(Ordering::Relaxed);
        let rate = (transfers - previous) as f64 / PROGRESS_EVERY.as_secs_f64();
        previous = transfers;
        eprintln!(
            "[{:>6.1}s] {transfers} transfers, {rate:.0}/s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// The run's figures, printed and (with `--json`) written as JSON.
fn report(args: &BenchArgs, targets: &[String], stats: &Stats, elapsed: Duration) -> Value {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let transfers = stats.completed + stats.rejected();
    let ms = |per_mille: usize| percentile(&stats.latencies_us, per_mille) as f64 / 1000.0;
    let max = stats.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0;
    json!({
        "mode": if args.batch > 1 { "batch" } else { "single" },
        "batch": args.batch,
        "load": match args.rate {
            Some(rate) => format!("open loop, {rate} requests/s"),
            None => "closed loop".to_string(),
        },
        "rate": args.rate,
        "targets": targets,
        "concurrency": args.concurrency,
        "accounts": args.accounts,
        "local_percent": args.local_percent,
        "duration_s": seconds,
        "transfers": transfers,
        "completed": stats.completed,
        "rejected": stats.rejected(),
        "transfers_per_s": transfers as f64 / seconds,
        "requests": stats.requests,
        "requests_per_s": stats.requests as f64 / seconds,
        "latency_ms": {"p50": ms(500), "p99": ms(990), "p999": ms(999), "max": max},
        "retried": stats.retried,
        "unresolved": stats.unresolved,
        "rejections": stats.rejections,
        "errors": stats.errors,
        "fees": stats.fees.to_string(),
    })
}

fn print_report(report: &Value) {
    let number = |key: &str| report[key].as_f64().unwrap_or(0.0);
    let text = |key: &str| report[key].to_string();
    let latency = |key: &str| report["latency_ms"][key].as_f64().unwrap_or(0.0);
    let counts = |key: &str| {
        let map: BTreeMap<String, u64> =
            serde_json::from_value(report[key].clone()).unwrap_or_default();
        format_counts(&map)
    };
    let mode = match report["batch"].as_u64() {
        Some(batch) if batch > 1 => format!("batch {batch}"),
        _ => "single".to_string(),
    };
    println!("cellpay bench");
    println!("  {:<16}{mode}", "mode");
    println!("  {:<16}{}", "load", report["load"].as_str().unwrap_or(""));
    println!("  {:<16}{}", "targets", text("targets"));
    println!("  {:<16}{}", "concurrency", text("concurrency"));
    println!("  {:<16}{}", "accounts", text("accounts"));
    if number("local_percent") > 0.0 {
        println!("  {:<16}{}%", "local", text("local_percent"));
    }
    println!("  {:<16}{:.2} s", "duration", number("duration_s"));
    println!(
        "  {:<16}{} ({} completed, {} rejected)",
        "transfers",
        text("transfers"),
        text("completed"),
        text("rejected")
    );
    println!("  {:<16}{:.1}", "transfers/s", number("transfers_per_s"));
    println!("  {:<16}{}", "requests", text("requests"));
    println!("  {:<16}{:.1}", "requests/s", number("requests_per_s"));
    for key in ["p50", "p99", "p999", "max"] {
        println!("  {:<16}{:.3} ms", format!("latency {key}"), latency(key));
    }
    println!(
        "  {:<16}{} (unresolved, outcome unknown: {})",
        "retried",
        text("retried"),
        text("unresolved")
    );
    println!("  {:<16}{}", "rejections", counts("rejections"));
    println!("  {:<16}{}", "errors", counts("errors"));
    println!(
        "  {:<16}{}",
        "fees charged",
        report["fees"].as_str().unwrap_or("0")
    );
}

fn format_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    counts
        .iter()
        .map(|(code, count)| format!("{code}={count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn summary_field(bench: &Bench, field: &str) -> anyhow::Result<i128> {
    let summary = bench.get_ok("/v1/ledger/summary").await?;
    summary[field]
        .as_i64()
        .map(i128::from)
        .with_context(|| format!("the ledger summary has no integer {field}: {summary}"))
}

/// The ledger's balances sum to 0, and the bench accounts hold what was issued to them minus the
/// fees collected meanwhile. Checked up to 3 times, 2 s apart, in case a timed-out request was
/// still being applied.
async fn check_conservation(bench: &Bench, ids: &[String], fees_start: i128) -> anyhow::Result<()> {
    let issued = i128::from(FUNDING) * ids.len() as i128;
    let mut last = String::new();
    for round in 1..=3 {
        if round > 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let balance_sum = summary_field(bench, "balance_sum").await?;
        let fees = summary_field(bench, "fees_balance").await? - fees_start;
        let (sum, negative) = bench_balances(bench, ids).await?;
        let expected = issued - fees;
        println!("  {:<16}{balance_sum} (must be 0)", "ledger sum");
        println!(
            "  {:<16}{sum} (issued {issued} - fees {fees} = {expected})",
            "bench accounts"
        );
        if balance_sum == 0 && sum == expected && negative == 0 {
            println!("conservation: OK");
            return Ok(());
        }
        last = format!("balance_sum {balance_sum}, bench sum {sum} != {expected}, {negative} negative accounts");
    }
    bail!("conservation: FAILED ({last})")
}

/// The sum of the accounts' balances, and how many have a negative balance or available.
async fn bench_balances(bench: &Bench, ids: &[String]) -> anyhow::Result<(i128, usize)> {
    let accounts: Vec<Value> = stream::iter(ids)
        .map(|id| get_account(bench, id))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let mut sum = 0i128;
    let mut negative = 0;
    for account in &accounts {
        let balance = account["balance"]
            .as_i64()
            .with_context(|| format!("no integer balance in {account}"))?;
        sum += i128::from(balance);
        if balance < 0
            || account["available"]
                .as_i64()
                .is_some_and(|available| available < 0)
        {
            negative += 1;
        }
    }
    Ok((sum, negative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        for bad in ["", "s", "0s", "10x", "1.5s", "-3s", "10 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 500), 500);
        assert_eq!(percentile(&values, 990), 990);
        assert_eq!(percentile(&values, 999), 999);
        assert_eq!(percentile(&values, 1000), 1000);
        assert_eq!(percentile(&[7], 999), 7);
        assert_eq!(percentile(&[1, 2], 500), 1);
        assert_eq!(percentile(&[1, 2], 990), 2);
        assert_eq!(percentile(&[], 500), 0);
    }

    #[test]
    fn account_ids_are_e164() {
        let id = account_id("0042", 999_999);
        assert_eq!(id, "+19990042999999");
        assert!(id.len() - 1 <= 15);
        assert!(ledger::AccountId::parse(&id).is_ok());
    }

    /// Goal: `--local-percent 100` keeps payer, payee and id of every transfer on one shard
    /// (one local command each), and 0 leaves the draw spread over all shards.
    #[test]
    fn local_transfers_keep_payer_payee_and_id_on_one_shard() {
        let ids: Vec<String> = (0..400).map(|index| account_id("0042", index)).collect();
        let shards = Shards::place(&ids, 8).expect("placed");
        assert!(shards.members.iter().all(|members| members.len() > 1));
        let load = |local_percent| Load {
            bench: Arc::new(Bench::new(vec!["http://127.0.0.1:1".into()], "t", 1).expect("bench")),
            ids: Arc::new(ids.clone()),
            tag: "0042".into(),
            batch: 500,
            local_percent,
            shards: Arc::new(Shards::place(&ids, 8).expect("placed")),
            deadline: Instant::now(),
            progress: Arc::new(Progress {
                transfers: AtomicU64::new(0),
                give_up: Instant::now(),
            }),
        };
        let shard_of_account = |id: &Value| {
            let account = ledger::AccountId::parse(id.as_str().expect("id")).expect("E.164");
            ledger::shard_of(&account, 8)
        };
        let local = |item: &Value| {
            let transfer = ledger::TransferId::parse(item["id"].as_str().expect("id")).expect("id");
            let home = ledger::home_of(&transfer, 8);
            shard_of_account(&item["from"]) == home && shard_of_account(&item["to"]) == home
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut seq = 0;
        let items = next_items(&load(100), &mut rng, 3, &mut seq);
        assert_eq!(items.len(), 500);
        assert!(items.iter().all(local));
        assert!(items.iter().all(|item| item["from"] != item["to"]));
        let unique: std::collections::BTreeSet<&str> = items
            .iter()
            .map(|item| item["id"].as_str().expect("id"))
            .collect();
        assert_eq!(unique.len(), 500, "ids stay unique");
        let items = next_items(&load(0), &mut rng, 3, &mut seq);
        let locals = items.iter().filter(|item| local(item)).count();
        assert!(
            locals < 50,
            "random draws are mostly cross-shard: {locals} of 500 local"
        );
    }

    #[test]
    fn answers_are_classified() {
        let completed = json!({"id": "t", "status": "completed", "amount": 5, "fee": 2});
        assert_eq!(
            classify(Some(201), &completed),
            Outcome::Completed { fee: 2 }
        );
        let rejected = json!({"id": "t", "status": "rejected", "code": "insufficient_funds"});
        assert_eq!(
            classify(Some(422), &rejected),
            Outcome::Rejected("insufficient_funds".into())
        );
        let overloaded = json!({"error": {"code": "overloaded", "message": "busy"}});
        assert_eq!(
            classify(Some(429), &overloaded),
            Outcome::Retry("overloaded".into())
        );
        assert_eq!(
            classify(None, &overloaded),
            Outcome::Retry("overloaded".into())
        );
        assert_eq!(
            classify(Some(502), &Value::Null),
            Outcome::Retry("http_502".into())
        );
        let conflict = json!({"error": {"code": "id_conflict", "message": "used"}});
        assert_eq!(
            classify(Some(409), &conflict),
            Outcome::Failed("id_conflict".into())
        );
        assert_eq!(
            classify(None, &conflict),
            Outcome::Failed("id_conflict".into())
        );
        assert_eq!(
            classify(Some(404), &Value::Null),
            Outcome::Failed("http_404".into())
        );
    }
}
