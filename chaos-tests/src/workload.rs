//! The bank workload: clients moving money between a fixed set of accounts, reading balances and
//! looking transfers up, every step recorded in the history. A transfer whose outcome is unknown
//! is retried with the same id (and body) on another node, a bounded number of times.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::history::{Func, Op, OpKind, Recorder, TransferOp};

/// Attempts per transfer id (the first plus retries after unknown outcomes).
const ATTEMPTS_MAX: u32 = 3;

/// What the workload needs to reach the cluster.
#[derive(Clone)]
pub struct Target {
    pub urls: Vec<String>,
    pub token: String,
    pub client: reqwest::Client,
}

pub fn account_ids(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("+25479900{i:04}")).collect()
}

/// How one HTTP exchange ended.
enum Reply {
    Answer(u16, Value),
    /// Never reached the server: certainly no effect.
    NotSent(String),
    /// Sent, but no answer: unknown outcome.
    Lost(String),
}

async fn send(target: &Target, request: reqwest::RequestBuilder) -> Reply {
    match request.bearer_auth(&target.token).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.json::<Value>().await {
                Ok(body) => Reply::Answer(status, body),
                Err(e) => Reply::Lost(format!("unreadable answer: {e}")),
            }
        }
        Err(e) if e.is_connect() => Reply::NotSent(e.to_string()),
        Err(e) => Reply::Lost(e.to_string()),
    }
}

/// Opens the accounts and funds each with `per_account` from the float. Returns the balances
/// at the start of the workload.
pub async fn setup(
    target: &Target,
    accounts: &[String],
    per_account: u64,
) -> anyhow::Result<BTreeMap<String, i64>> {
    for (i, id) in accounts.iter().enumerate() {
        let url = format!("{}/v1/accounts", target.urls[i % target.urls.len()]);
        let body = json!({"id": id, "kind": "customer", "name": format!("chaos {i}")});
        let request = target.client.post(url).json(&body);
        match send(target, request).await {
            Reply::Answer(201 | 409, _) => {}
            Reply::Answer(status, body) => anyhow::bail!("creating {id}: {status} {body}"),
            Reply::NotSent(e) | Reply::Lost(e) => anyhow::bail!("creating {id}: {e}"),
        }
        let url = format!("{}/v1/transfers", target.urls[0]);
        let body = json!({"id": format!("setup-{i}"), "kind": "issue", "from": "float", "to": id, "amount": per_account});
        match send(target, target.client.post(url).json(&body)).await {
            Reply::Answer(201, _) => {}
            Reply::Answer(status, body) => anyhow::bail!("funding {id}: {status} {body}"),
            Reply::NotSent(e) | Reply::Lost(e) => anyhow::bail!("funding {id}: {e}"),
        }
    }
    let total = i64::try_from(per_account)
        .expect("small")
        .checked_mul(accounts.len() as i64)
        .expect("small");
    let mut initial: BTreeMap<String, i64> = accounts
        .iter()
        .map(|id| (id.clone(), i64::try_from(per_account).expect("small")))
        .collect();
    initial.insert("float".into(), -total);
    initial.insert("fees".into(), 0);
    Ok(initial)
}

/// Who a client is: its process number, the seed of its choices, and the prefix of its
/// transfer ids (`<prefix>c<process>-<n>`).
pub struct Client {
    pub process: u64,
    pub seed: u64,
    pub prefix: String,
}

/// One client: loops until `stop`, choosing transfers (70%), reads (20%) and lookups (10%).
pub async fn client(
    Client {
        process,
        seed,
        prefix,
    }: Client,
    target: Target,
    accounts: Arc<Vec<String>>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ process.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut sequence = 0u64;
    let mut known_ids: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let node = rng.random_range(0..target.urls.len());
        let roll = rng.random_range(0..100);
        if roll < 70 {
            sequence += 1;
            let id = format!("{prefix}c{process}-{sequence}");
            let from = &accounts[pick(&mut rng, accounts.len())];
            let mut to = &accounts[pick(&mut rng, accounts.len())];
            while to == from {
                to = &accounts[pick(&mut rng, accounts.len())];
            }
            let transfer = TransferOp::new(&id, "p2p", from, to, rng.random_range(1..=50));
            transfer_with_retries(process, node, &target, &recorder, transfer).await;
            known_ids.push(id);
        } else if roll < 90 {
            let account = &accounts[rng.random_range(0..accounts.len())];
            read(process, node, &target, &recorder, account).await;
        } else if let Some(id) = known_ids.get(rng.random_range(0..known_ids.len().max(1))) {
            lookup(process, node, &target, &recorder, id, Func::Lookup).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
    }
}

/// An account index; with many accounts, half the picks go to the first five (hot accounts).
fn pick(rng: &mut StdRng, count: usize) -> usize {
    if count > 50 && rng.random_bool(0.5) {
        return rng.random_range(0..5);
    }
    rng.random_range(0..count)
}

async fn transfer_with_retries(
    process: u64,
    first_node: usize,
    target: &Target,
    recorder: &Recorder,
    transfer: TransferOp,
) {
    let mut node = first_node;
    for _ in 0..ATTEMPTS_MAX {
        if !transfer_once(process, node, target, recorder, &transfer).await {
            return;
        }
        node = (node + 1) % target.urls.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One attempt; true when its outcome is unknown (worth retrying with the same id).
pub async fn transfer_once(
    process: u64,
    node: usize,
    target: &Target,
    recorder: &Recorder,
    transfer: &TransferOp,
) -> bool {
    transfer_as(process, node, target, recorder, transfer, Func::Transfer).await
}

pub async fn transfer_as(
    process: u64,
    node: usize,
    target: &Target,
    recorder: &Recorder,
    transfer: &TransferOp,
    f: Func,
) -> bool {
    let invoke =
        recorder.record(Op::invoke(process, f, 0, node as u64 + 1).with_transfer(transfer.clone()));
    let body = json!({"id": transfer.id, "kind": transfer.kind, "from": transfer.from, "to": transfer.to, "amount": transfer.amount});
    let request = target
        .client
        .post(format!("{}/v1/transfers", target.urls[node]))
        .json(&body);
    let (op, unknown) = match send(target, request).await {
        Reply::Answer(201, body) => {
            let mut op = invoke
                .complete(OpKind::Ok, 0)
                .with_status(body["status"].as_str().unwrap_or("completed"));
            op.from_balance = body["from_balance"].as_i64();
            op.to_balance = body["to_balance"].as_i64();
            (with_log(op, &body), false)
        }
        Reply::Answer(422, body) => {
            let op = invoke
                .complete(OpKind::Ok, 0)
                .with_status("rejected")
                .with_code(body["code"].as_str().unwrap_or(""));
            (with_log(op, &body), false)
        }
        Reply::Answer(status, body) if status < 500 => {
            let code = body["error"]["code"].as_str().unwrap_or("").to_string();
            (invoke.complete(OpKind::Fail, 0).with_code(&code), false)
        }
        Reply::Answer(status, body) => {
            let mut op = invoke.complete(OpKind::Info, 0);
            op.error = Some(format!("{status} {body}"));
            (op, true)
        }
        Reply::NotSent(e) => {
            let mut op = invoke.complete(OpKind::Fail, 0);
            op.error = Some(e);
            (op, false)
        }
        Reply::Lost(e) => {
            let mut op = invoke.complete(OpKind::Info, 0);
            op.error = Some(e);
            (op, true)
        }
    };
    recorder.record(op);
    unknown
}

fn with_log(mut op: Op, body: &Value) -> Op {
    if let Some(shard) = body["shard"].as_u64().and_then(|s| u32::try_from(s).ok()) {
        op.shard = Some(shard);
    }
    match body["log_index"].as_u64() {
        Some(index) => op.with_log(
            index,
            body["log_pos"].as_u64().and_then(|p| u32::try_from(p).ok()),
        ),
        None => op,
    }
}

/// Reads one balance; true when it succeeded.
pub async fn read(
    process: u64,
    node: usize,
    target: &Target,
    recorder: &Recorder,
    account: &str,
) -> bool {
    read_as(process, node, target, recorder, account, Func::Read).await
}

pub async fn read_as(
    process: u64,
    node: usize,
    target: &Target,
    recorder: &Recorder,
    account: &str,
    f: Func,
) -> bool {
    let invoke = recorder.record(Op::invoke(process, f, 0, node as u64 + 1).with_account(account));
    let url = format!(
        "{}/v1/accounts/{}",
        target.urls[node],
        account.replace('+', "%2B")
    );
    let (op, ok) = match send(target, target.client.get(url)).await {
        Reply::Answer(200, body) => {
            let balance = body["balance"].as_i64().unwrap_or(i64::MIN);
            let available = body["available"].as_i64().unwrap_or(i64::MIN);
            (
                with_log(
                    invoke
                        .complete(OpKind::Ok, 0)
                        .with_balance(balance, available),
                    &body,
                ),
                true,
            )
        }
        other => (failed(&invoke, other), false),
    };
    recorder.record(op);
    ok
}

/// A read or lookup that got no usable answer: definitely no effect, with what went wrong.
fn failed(invoke: &Op, reply: Reply) -> Op {
    let mut op = invoke.complete(OpKind::Fail, 0);
    op.error = Some(match reply {
        Reply::Answer(status, body) => format!("{status} {body}"),
        Reply::NotSent(e) | Reply::Lost(e) => e,
    });
    op
}

/// Looks a transfer up on one node; true when the node answered.
pub async fn lookup(
    process: u64,
    node: usize,
    target: &Target,
    recorder: &Recorder,
    id: &str,
    f: Func,
) -> bool {
    let transfer = TransferOp::new(id, "", "", "", 0);
    let invoke =
        recorder.record(Op::invoke(process, f, 0, node as u64 + 1).with_transfer(transfer));
    let url = format!("{}/v1/transfers/{id}", target.urls[node]);
    let (op, ok) = match send(target, target.client.get(url)).await {
        Reply::Answer(200, body) => {
            let op = invoke
                .complete(OpKind::Ok, 0)
                .with_status(body["status"].as_str().unwrap_or(""));
            (with_log(op, &body), true)
        }
        Reply::Answer(404, _) => (
            invoke.complete(OpKind::Ok, 0).with_status("not_found"),
            true,
        ),
        other => (failed(&invoke, other), false),
    };
    recorder.record(op);
    ok
}

/// Every account's balance as one node sees it (paged), or None if the node does not answer.
pub async fn read_all(target: &Target, node: usize) -> Option<BTreeMap<String, i64>> {
    let mut balances = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/accounts?limit=1000", target.urls[node]);
        if let Some(after) = &after {
            url.push_str(&format!("&after={}", after.replace('+', "%2B")));
        }
        let Reply::Answer(200, body) = send(target, target.client.get(url)).await else {
            return None;
        };
        for account in body["accounts"].as_array()? {
            balances.insert(
                account["id"].as_str()?.to_string(),
                account["balance"].as_i64()?,
            );
        }
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Some(balances),
        }
    }
}
