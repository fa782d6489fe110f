//! One chaos run: cluster up, workload plus nemesis for the duration, heal, probe, final reads
//! on every node, check. On failure the history, node logs and report land in
//! `target/chaos/<seed>/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Mutex;

use crate::checker::{self, Report};
use crate::history::{Func, History, Op, OpKind, Recorder, TransferOp};
use crate::nemesis::{self, Plan, Scenario};
use crate::net::{lab_available, Lab};
use crate::nodes::{Cluster, Mode};
use crate::sharding;
use crate::workload::{self, Target};

pub struct RunConfig {
    pub seed: u64,
    pub scenario: Scenario,
    pub nodes: usize,
    /// Raft groups, each on every node: with more than one, most transfers are sagas.
    pub shards: u32,
    pub accounts: usize,
    pub clients: u64,
    pub duration: Duration,
    /// Where failing runs leave their evidence (`<out>/<seed>/`).
    pub out: PathBuf,
}

/// A soak: one long-lived cluster; faults change every `period`, the history is checked every
/// `check_every` (the workload pauses, faults heal, final reads and the checker run, then the
/// next stretch starts from the balances those reads saw).
pub struct SoakConfig {
    pub seed: u64,
    pub nodes: usize,
    pub shards: u32,
    pub accounts: usize,
    pub clients: u64,
    pub duration: Duration,
    pub check_every: Duration,
    pub period: Duration,
    pub out: PathBuf,
}

pub struct RunResult {
    pub report: Report,
    pub faults: Vec<String>,
    /// Promises the nemesis saw broken (they fail the run like violations).
    pub problems: Vec<String>,
    pub mode: &'static str,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.report.violations.is_empty() && self.problems.is_empty()
    }
}

const PER_ACCOUNT: u64 = 100_000;
const RECOVERY_WINDOW: Duration = Duration::from_secs(20);
/// Final lookups in flight per node.
const FINAL_LOOKUP_LANES: usize = 32;
/// Tries of one final lookup on one node, and the pause between them (together they outlast a
/// leadership handover, `cluster::limits::HANDOVER_TIMEOUT`).
const FINAL_LOOKUP_ATTEMPTS: u32 = 5;
const FINAL_LOOKUP_PAUSE: Duration = Duration::from_secs(1);
/// How long the final reads wait for every saga to end after healing (a saga a dead node left
/// running is finished by its home shard's sweep, which looks every few seconds).
const SAGAS_SETTLE_MAX: Duration = Duration::from_secs(60);

/// A running cluster with its funded accounts, between checked stretches of workload.
struct Session {
    cluster: Arc<Mutex<Cluster>>,
    target: Target,
    accounts: Arc<Vec<String>>,
    shards: u32,
    /// Every balance at the start of the next stretch (a consistent read, all quiet).
    initial: std::collections::BTreeMap<String, i64>,
    mode: &'static str,
    _scratch: tempfile::TempDir,
}

/// One checked stretch of workload and faults.
struct Stretch {
    seed: u64,
    /// Transfer ids start with it, so ids stay unique over a soak's stretches.
    prefix: String,
    plan: Plan,
    clients: u64,
    duration: Duration,
    evidence: PathBuf,
}

impl Session {
    async fn start(
        seed: u64,
        scenario: &str,
        nodes: usize,
        shards: u32,
        accounts: usize,
    ) -> anyhow::Result<Self> {
        let forced_loopback = std::env::var("CELLPAY_CHAOS_LOOPBACK").is_ok_and(|v| v == "1");
        let available = if forced_loopback {
            Err("CELLPAY_CHAOS_LOOPBACK=1".to_string())
        } else {
            lab_available()
        };
        let mode = match available {
            Ok(()) => Mode::Lab(Lab::create(nodes)?),
            Err(reason) => {
                eprintln!("chaos: network namespaces unavailable ({reason}); loopback mode");
                Mode::Loopback
            }
        };
        let scratch = tempfile::Builder::new()
            .prefix("cellpay-chaos-")
            .tempdir()?;
        let mut cluster = Cluster::create(nodes, shards, &scratch.path().join("cluster"), mode)?;
        let mode_name = cluster.mode_name();
        eprintln!("chaos: seed {seed} scenario {scenario} mode {mode_name} shards {shards}");
        for k in 1..=nodes as u64 {
            cluster.start(k)?;
        }
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .context("no leader after start")?;
        let target = Target {
            urls: (1..=nodes as u64).map(|k| cluster.url(k, "")).collect(),
            token: cluster.token.clone(),
            client: cluster.client.clone(),
        };
        let accounts = Arc::new(workload::account_ids(accounts));
        let initial = workload::setup(&target, &accounts, PER_ACCOUNT).await?;
        Ok(Session {
            cluster: Arc::new(Mutex::new(cluster)),
            target,
            accounts,
            shards,
            initial,
            mode: mode_name,
            _scratch: scratch,
        })
    }

    /// Workload and nemesis for the stretch, then heal, probe, final reads and check. The next
    /// stretch starts from the consistent read taken here.
    async fn stretch(&mut self, stretch: &Stretch) -> anyhow::Result<RunResult> {
        let recorder = Arc::new(Recorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for process in 0..stretch.clients {
            let task = workload::client(
                workload::Client {
                    process,
                    seed: stretch.seed,
                    prefix: stretch.prefix.clone(),
                },
                self.target.clone(),
                self.accounts.clone(),
                recorder.clone(),
                stop.clone(),
            );
            clients.push(tokio::spawn(task));
        }
        let nemesis = tokio::spawn(nemesis::run(
            stretch.seed,
            stretch.plan,
            self.cluster.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(stretch.duration).await;
        stop.store(true, Ordering::Relaxed);
        let log = nemesis.await?;
        for client in clients {
            client.await?;
        }
        nemesis::heal(&self.cluster).await;
        recorder.mark_healed();
        probe(
            &self.target,
            &recorder,
            &self.accounts,
            self.shards,
            &stretch.prefix,
        )
        .await;
        let settled = final_reads(&self.cluster, &self.target, &recorder).await;

        let initial = std::mem::take(&mut self.initial);
        let mut history = recorder.take(stretch.seed, initial);
        sharding::prepare(&mut history, self.shards);
        let report = checker::check(&history);
        if !report.violations.is_empty() || !log.problems.is_empty() {
            let guard = self.cluster.lock().await;
            keep_evidence(&stretch.evidence, &history, &report, &guard)?;
        }
        match settled {
            Some(balances) => self.initial = balances,
            None => anyhow::bail!("no consistent read of every account after healing"),
        }
        Ok(RunResult {
            report,
            faults: log.faults,
            problems: log.problems,
            mode: self.mode,
        })
    }
}

/// One scenario on a fresh cluster.
pub async fn run(config: &RunConfig) -> anyhow::Result<RunResult> {
    let mut session = Session::start(
        config.seed,
        config.scenario.name(),
        config.nodes,
        config.shards,
        config.accounts,
    )
    .await?;
    session
        .stretch(&Stretch {
            seed: config.seed,
            prefix: String::new(),
            plan: Plan::Scenario(config.scenario),
            clients: config.clients,
            duration: config.duration,
            evidence: config.out.join(config.seed.to_string()),
        })
        .await
}

/// What a soak did, stretch by stretch.
pub struct SoakResult {
    pub stretches: Vec<RunResult>,
    pub mode: &'static str,
}

/// A soak (see [`SoakConfig`]); stops at the first stretch that fails. `report` is called with
/// each stretch's number and result as soon as it is checked.
pub async fn soak(
    config: &SoakConfig,
    mut report: impl FnMut(u64, &RunResult),
) -> anyhow::Result<SoakResult> {
    let mut session = Session::start(
        config.seed,
        "soak",
        config.nodes,
        config.shards,
        config.accounts,
    )
    .await?;
    // The duration counts workload time; the checks in between come on top.
    let mut worked = Duration::ZERO;
    let mut stretches = Vec::new();
    let mut number = 0u64;
    while worked < config.duration {
        number += 1;
        let left = config.duration.saturating_sub(worked);
        let duration = config.check_every.min(left).max(config.period);
        worked += duration;
        let seed = config.seed.wrapping_add(number - 1);
        let result = session
            .stretch(&Stretch {
                seed,
                prefix: format!("s{number}-"),
                plan: Plan::Soak {
                    period: config.period,
                },
                clients: config.clients,
                duration,
                evidence: config.out.join(format!("{}-{number}", config.seed)),
            })
            .await?;
        report(number, &result);
        let passed = result.passed();
        stretches.push(result);
        if !passed {
            break;
        }
    }
    Ok(SoakResult {
        stretches,
        mode: session.mode,
    })
}

/// After healing: a transfer and a read must succeed on every node within the window, for
/// every shard holding one of the accounts (its first account pays, and is read).
async fn probe(
    target: &Target,
    recorder: &Recorder,
    accounts: &[String],
    shards: u32,
    prefix: &str,
) {
    let mut payers: std::collections::BTreeMap<u32, &String> = std::collections::BTreeMap::new();
    for account in accounts {
        if let Some(shard) = sharding::shard_of_account(account, shards) {
            payers.entry(shard).or_insert(account);
        }
    }
    let started = Instant::now();
    let probes = (0..target.urls.len()).flat_map(|node| payers.values().map(move |a| (node, *a)));
    for (number, (node, payer)) in probes.enumerate() {
        let process = 20_000 + number as u64;
        let payee = accounts.iter().find(|a| *a != payer).expect("two accounts");
        let mut attempt = 0u64;
        let mut transferred = false;
        let mut read = false;
        while !(transferred && read) && started.elapsed() < RECOVERY_WINDOW {
            attempt += 1;
            if !transferred {
                let id = format!("{prefix}probe-{node}-{number}-{attempt}");
                let transfer = TransferOp::new(&id, "p2p", payer, payee, 1);
                let unknown =
                    workload::transfer_as(process, node, target, recorder, &transfer, Func::Probe)
                        .await;
                transferred = !unknown && last_ok(recorder, process);
            }
            if !read {
                read = workload::read_as(process, node, target, recorder, payer, Func::Probe).await;
            }
            if !(transferred && read) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn last_ok(recorder: &Recorder, process: u64) -> bool {
    recorder
        .last_of(process)
        .is_some_and(|kind| kind == OpKind::Ok)
}

/// Every node's view of every account and of every transfer id the run used. Returns the
/// consistent read of every account, if the leader gave one.
async fn final_reads(
    cluster: &Mutex<Cluster>,
    target: &Target,
    recorder: &Recorder,
) -> Option<std::collections::BTreeMap<String, i64>> {
    {
        let guard = cluster.lock().await;
        let _ = guard.wait_for_leader(Duration::from_secs(30)).await;
    }
    // Sagas first: the replicas are compared once every transfer has settled.
    sagas_settled(target).await;
    // A consistent read of everything through the leader (conservation on a live snapshot).
    let invoke = recorder.record(Op::invoke(29_999, Func::ReadAll, 0, 1));
    let consistent = workload::read_all(target, 0).await;
    let op = match &consistent {
        Some(balances) => invoke
            .complete(OpKind::Ok, 0)
            .with_balances(balances.clone()),
        None => invoke.complete(OpKind::Fail, 0),
    };
    recorder.record(op);
    let ids = recorder.transfer_ids();
    let replicas = settled_replicas(target).await;
    for (node, replica) in replicas.iter().enumerate() {
        let process = 30_000 + node as u64;
        let invoke = recorder.record(Op::invoke(process, Func::FinalRead, 0, node as u64 + 1));
        let op = match replica {
            // One group: its applied index and digest, compared per shard. Several: the
            // balances summed over the groups (a system account has a slice in each), and
            // every group's index and digest in one mark, compared between the nodes.
            Some(replica) => match replica.groups.as_slice() {
                [(applied, digest)] => invoke
                    .complete(OpKind::Ok, 0)
                    .with_shard(0)
                    .with_log(*applied, None)
                    .with_balances(replica.balances.clone())
                    .with_digest(digest),
                groups => {
                    let mark: Vec<String> = groups
                        .iter()
                        .enumerate()
                        .map(|(g, (applied, digest))| format!("{g}@{applied}:{digest}"))
                        .collect();
                    invoke
                        .complete(OpKind::Ok, 0)
                        .with_balances(replica.balances.clone())
                        .with_digest(&mark.join(" "))
                }
            },
            None => invoke.complete(OpKind::Fail, 0),
        };
        recorder.record(op);
        // Lanes of lookups at once, each its own process with one op in flight: a soak's
        // stretch leaves 100k ids to settle on every node.
        let ids: Vec<&String> = ids.iter().collect();
        // Once one lookup has used all its tries, the node gets one try per id: a node that
        // does not answer at all must not multiply the wait.
        let gave_up = std::sync::atomic::AtomicBool::new(false);
        let lanes = (0..FINAL_LOOKUP_LANES).map(|lane| {
            let ids = &ids;
            let gave_up = &gave_up;
            async move {
                let lane_process = process * 1_000 + lane as u64;
                for id in ids.iter().skip(lane).step_by(FINAL_LOOKUP_LANES) {
                    // A healed cluster may still be moving leaders back (a handover holds a
                    // node's reads for seconds): a lookup that gets no answer is asked again,
                    // a bounded number of times, as any client would.
                    for attempt in 1..=FINAL_LOOKUP_ATTEMPTS {
                        let answered = workload::lookup(
                            lane_process,
                            node,
                            target,
                            recorder,
                            id,
                            Func::FinalLookup,
                        )
                        .await;
                        if answered {
                            break;
                        }
                        if attempt == FINAL_LOOKUP_ATTEMPTS
                            || gave_up.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            gave_up.store(true, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                        tokio::time::sleep(FINAL_LOOKUP_PAUSE).await;
                    }
                }
            }
        });
        futures::future::join_all(lanes).await;
    }
    consistent
}

/// One node's own replicas of every group, read locally (`/v1/admin/replica`).
struct Replica {
    /// Each group's applied index and state digest, in group order.
    groups: Vec<(u64, String)>,
    /// Every account's balance summed over the groups.
    balances: std::collections::BTreeMap<String, i64>,
}

async fn replica(target: &Target, node: usize) -> Option<Replica> {
    let url = format!("{}/v1/admin/replica", target.urls[node]);
    let response = target
        .client
        .get(url)
        .bearer_auth(&target.token)
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    let mut groups = Vec::new();
    let mut balances = std::collections::BTreeMap::new();
    for group in body["groups"].as_array()? {
        for (id, balance) in group["balances"].as_object()? {
            *balances.entry(id.clone()).or_insert(0i64) += balance.as_i64()?;
        }
        groups.push((
            group["applied_index"].as_u64()?,
            group["digest"].as_str()?.to_string(),
        ));
    }
    Some(Replica { groups, balances })
}

/// Waits (at most [`SAGAS_SETTLE_MAX`]) until the ledger summary shows no saga running.
async fn sagas_settled(target: &Target) {
    let deadline = Instant::now() + SAGAS_SETTLE_MAX;
    while Instant::now() < deadline {
        let url = format!("{}/v1/ledger/summary", target.urls[0]);
        let running = match target
            .client
            .get(url)
            .bearer_auth(&target.token)
            .send()
            .await
        {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|body| body["sagas_running"].as_u64()),
            Err(_) => None,
        };
        if running == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("chaos: sagas still running {SAGAS_SETTLE_MAX:?} after healing");
}

/// Every replica once they all applied the same index (bounded wait: with no writes left,
/// followers catch up with the leader's last commit within a heartbeat or two).
async fn settled_replicas(target: &Target) -> Vec<Option<Replica>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut replicas = Vec::new();
        for node in 0..target.urls.len() {
            replicas.push(replica(target, node).await);
        }
        let indexes: std::collections::BTreeSet<Vec<u64>> = replicas
            .iter()
            .flatten()
            .map(|r| r.groups.iter().map(|(applied, _)| *applied).collect())
            .collect();
        let all_answered = replicas.iter().all(Option::is_some);
        if (all_answered && indexes.len() == 1) || Instant::now() > deadline {
            return replicas;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn keep_evidence(
    dir: &std::path::Path,
    history: &History,
    report: &Report,
    cluster: &Cluster,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    history.write_jsonl(&dir.join("history.jsonl"))?;
    std::fs::write(dir.join("report.txt"), report.to_string())?;
    for node in &cluster.nodes {
        let from = cluster.dir.join(format!("node-{}/node.log", node.id));
        let _ = std::fs::copy(&from, dir.join(format!("node-{}.log", node.id)));
    }
    eprintln!("chaos: evidence kept in {}", dir.display());
    Ok(())
}
