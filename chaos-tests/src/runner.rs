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
use crate::nemesis::{self, Scenario};
use crate::net::{lab_available, Lab};
use crate::nodes::{Cluster, Mode};
use crate::workload::{self, Target};

pub struct RunConfig {
    pub seed: u64,
    pub scenario: Scenario,
    pub nodes: usize,
    pub accounts: usize,
    pub clients: u64,
    pub duration: Duration,
    /// Where failing runs leave their evidence (`<out>/<seed>/`).
    pub out: PathBuf,
}

pub struct RunResult {
    pub report: Report,
    pub faults: Vec<String>,
    /// Promises the nemesis saw broken (they fail the run like violations).
    pub problems: Vec<String>,
    pub mode: &'static str,
}

const PER_ACCOUNT: u64 = 100_000;
const RECOVERY_WINDOW: Duration = Duration::from_secs(20);

pub async fn run(config: &RunConfig) -> anyhow::Result<RunResult> {
    let forced_loopback = std::env::var("CELLPAY_CHAOS_LOOPBACK").is_ok_and(|v| v == "1");
    let available = if forced_loopback {
        Err("CELLPAY_CHAOS_LOOPBACK=1".to_string())
    } else {
        lab_available()
    };
    let mode = match available {
        Ok(()) => Mode::Lab(Lab::create(config.nodes)?),
        Err(reason) => {
            eprintln!("chaos: network namespaces unavailable ({reason}); loopback mode");
            Mode::Loopback
        }
    };
    let scratch = tempfile::Builder::new()
        .prefix("cellpay-chaos-")
        .tempdir()?;
    let mut cluster = Cluster::create(config.nodes, &scratch.path().join("cluster"), mode)?;
    let mode_name = cluster.mode_name();
    eprintln!(
        "chaos: seed {} scenario {} mode {mode_name}",
        config.seed,
        config.scenario.name()
    );
    for k in 1..=config.nodes as u64 {
        cluster.start(k)?;
    }
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .context("no leader after start")?;
    let target = Target {
        urls: (1..=config.nodes as u64)
            .map(|k| cluster.url(k, ""))
            .collect(),
        token: cluster.token.clone(),
        client: cluster.client.clone(),
    };
    let accounts = Arc::new(workload::account_ids(config.accounts));
    let initial = workload::setup(&target, &accounts, PER_ACCOUNT).await?;
    let cluster = Arc::new(Mutex::new(cluster));
    let recorder = Arc::new(Recorder::new());

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for process in 0..config.clients {
        let task = workload::client(
            process,
            config.seed,
            target.clone(),
            accounts.clone(),
            recorder.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(task));
    }
    let nemesis = tokio::spawn(nemesis::run(
        config.seed,
        config.scenario,
        cluster.clone(),
        stop.clone(),
    ));
    let order = Arc::new(std::sync::Mutex::new(LogOrder::default()));
    let poller = tokio::spawn(poll_log(target.clone(), order.clone(), stop.clone()));
    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::Relaxed);
    let log = nemesis.await?;
    for client in clients {
        client.await?;
    }
    nemesis::heal(&cluster).await;
    recorder.mark_healed();
    probe(&target, &recorder, &accounts).await;
    final_reads(&cluster, &target, &recorder).await;
    poller.await?;
    let mut order = std::mem::take(
        &mut *order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    order.fetch(&target).await;

    let mut history = recorder.snapshot(config.seed, initial);
    order.annotate(&mut history);
    let report = checker::check(&history);
    if !report.violations.is_empty() || !log.problems.is_empty() {
        let guard = cluster.lock().await;
        keep_evidence(config, &history, &report, &guard)?;
    }
    Ok(RunResult {
        report,
        faults: log.faults,
        problems: log.problems,
        mode: mode_name,
    })
}

/// After healing: a transfer and a read must succeed on every node within the window.
async fn probe(target: &Target, recorder: &Recorder, accounts: &[String]) {
    let started = Instant::now();
    for node in 0..target.urls.len() {
        let process = 20_000 + node as u64;
        let mut attempt = 0u64;
        let mut transferred = false;
        let mut read = false;
        while !(transferred && read) && started.elapsed() < RECOVERY_WINDOW {
            attempt += 1;
            if !transferred {
                let id = format!("probe-{node}-{attempt}");
                let transfer = TransferOp::new(&id, "p2p", &accounts[0], &accounts[1], 1);
                let unknown =
                    workload::transfer_as(process, node, target, recorder, &transfer, Func::Probe)
                        .await;
                transferred = !unknown && last_ok(recorder, process);
            }
            if !read {
                read =
                    workload::read_as(process, node, target, recorder, &accounts[0], Func::Probe)
                        .await;
            }
            if !(transferred && read) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn last_ok(recorder: &Recorder, process: u64) -> bool {
    let history = recorder.snapshot(0, Default::default());
    history
        .ops
        .iter()
        .rev()
        .find(|op| op.process == process)
        .is_some_and(|op| op.kind == OpKind::Ok)
}

/// Every node's view of every account and of every transfer id the run used.
async fn final_reads(cluster: &Mutex<Cluster>, target: &Target, recorder: &Recorder) {
    {
        let guard = cluster.lock().await;
        let _ = guard.wait_for_leader(Duration::from_secs(30)).await;
    }
    // A consistent read of everything through the leader (conservation on a live snapshot).
    let invoke = recorder.record(Op::invoke(29_999, Func::ReadAll, 0, 1));
    let op = match workload::read_all(target, 0).await {
        Some(balances) => invoke.complete(OpKind::Ok, 0).with_balances(balances),
        None => invoke.complete(OpKind::Fail, 0),
    };
    recorder.record(op);
    let ids: std::collections::BTreeSet<String> = recorder
        .snapshot(0, Default::default())
        .ops
        .iter()
        .filter(|op| matches!(op.f, Func::Transfer | Func::Probe))
        .filter_map(|op| op.transfer.as_ref().map(|t| t.id.clone()))
        .collect();
    let replicas = settled_replicas(target).await;
    for (node, replica) in replicas.iter().enumerate() {
        let process = 30_000 + node as u64;
        let invoke = recorder.record(Op::invoke(process, Func::FinalRead, 0, node as u64 + 1));
        let op = match replica {
            Some(replica) => {
                let op = invoke
                    .complete(OpKind::Ok, 0)
                    .with_shard(0)
                    .with_log(replica.applied, None);
                op.with_balances(replica.balances.clone())
                    .with_digest(&replica.digest)
            }
            None => invoke.complete(OpKind::Fail, 0),
        };
        recorder.record(op);
        for id in &ids {
            workload::lookup(process, node, target, recorder, id, Func::FinalLookup).await;
        }
    }
}

/// One node's own replica, read locally (`/v1/admin/replica`).
struct Replica {
    applied: u64,
    digest: String,
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
    let group = &body["groups"][0];
    let balances = group["balances"]
        .as_object()?
        .iter()
        .filter_map(|(id, b)| Some((id.clone(), b.as_i64()?)))
        .collect();
    Some(Replica {
        applied: group["applied_index"].as_u64()?,
        digest: group["digest"].as_str()?.to_string(),
        balances,
    })
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
        let indexes: std::collections::BTreeSet<u64> =
            replicas.iter().flatten().map(|r| r.applied).collect();
        let all_answered = replicas.iter().all(Option::is_some);
        if (all_answered && indexes.len() == 1) || Instant::now() > deadline {
            return replicas;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn keep_evidence(
    config: &RunConfig,
    history: &History,
    report: &Report,
    cluster: &Cluster,
) -> anyhow::Result<()> {
    let dir = config.out.join(config.seed.to_string());
    std::fs::create_dir_all(&dir)?;
    history.write_jsonl(&dir.join("history.jsonl"))?;
    std::fs::write(dir.join("report.txt"), report.to_string())?;
    for node in &cluster.nodes {
        let from = cluster.dir.join(format!("node-{}/node.log", node.id));
        let _ = std::fs::copy(&from, dir.join(format!("node-{}.log", node.id)));
    }
    eprintln!("chaos: evidence kept in {}", dir.display());
    Ok(())
}

/// Where each transfer id was first applied in the Raft log: (index, position in the entry).
#[derive(Default)]
struct LogOrder {
    next: u64,
    first: std::collections::HashMap<String, (u64, u32)>,
}

impl LogOrder {
    /// Reads newly committed entries from any node that answers.
    async fn fetch(&mut self, target: &Target) {
        let from = self.next.max(1);
        for url in &target.urls {
            let request = target
                .client
                .get(format!("{url}/v1/admin/log?from={from}&limit=10000"));
            let Ok(response) = request.bearer_auth(&target.token).send().await else {
                continue;
            };
            let Ok(body) = response.json::<serde_json::Value>().await else {
                continue;
            };
            let Some(entries) = body["entries"].as_array() else {
                continue;
            };
            for entry in entries {
                let Some(index) = entry["index"].as_u64() else {
                    continue;
                };
                let ids = entry["transfers"].as_array().cloned().unwrap_or_default();
                for (pos, id) in ids.iter().enumerate() {
                    if let Some(id) = id.as_str() {
                        let pos = u32::try_from(pos).unwrap_or(u32::MAX);
                        self.first.entry(id.to_string()).or_insert((index, pos));
                    }
                }
                self.next = self.next.max(index + 1);
            }
            if !entries.is_empty() && entries.len() < 10_000 {
                return;
            }
            if entries.is_empty() {
                return;
            }
        }
    }

    /// Gives every definite transfer answer its place in the log.
    fn annotate(&self, history: &mut History) {
        for op in &mut history.ops {
            // One Raft group serves every shard in this version: every transfer and read,
            // failed or not, belongs to group 0's stream.
            if matches!(op.f, Func::Transfer | Func::Read | Func::Probe) && op.shard.is_none() {
                op.shard = Some(0);
            }
            if !matches!(op.f, Func::Transfer | Func::Probe) || op.kind != OpKind::Ok {
                continue;
            }
            let Some(transfer) = &op.transfer else {
                continue;
            };
            if let Some((index, pos)) = self.first.get(&transfer.id) {
                op.shard = Some(0);
                op.log_index = Some(*index);
                op.log_pos = Some(*pos);
            }
        }
    }
}

/// Follows the committed log during the run, so entries purged behind snapshots are seen.
async fn poll_log(target: Target, order: Arc<std::sync::Mutex<LogOrder>>, stop: Arc<AtomicBool>) {
    let mut local = LogOrder::default();
    while !stop.load(Ordering::Relaxed) {
        local.fetch(&target).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    *order
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = local;
}
