//! Wiring of one node: storage, Raft groups, the cluster transport, timers, the HTTP API, and a
//! graceful stop on SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use cluster::batcher::Clock;
use cluster::{Group, NetworkFactory, PeerClient, Peers, Shards, TlsFiles};
use consensus::{open_log_db, open_sm_db, LogStore, Raft, StateMachineStore};
use ledger::Currency;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::limits::{HTTP_CONCURRENCY_MAX, SHUTDOWN_GRACE, SNAPSHOT_CHECK_EVERY};
use crate::snapshots;
use crate::telemetry;

/// The node that should lead a shard when it is up: shards are dealt round-robin over the
/// members in id order, so leaders spread evenly.
pub fn preferred_leader(config: &Config, shard: u32) -> u64 {
    let mut ids: Vec<u64> = config.peers.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    let index = usize::try_from(shard).expect("u32 fits usize") % ids.len();
    ids[index]
}

/// The Raft configuration of one shard's group on this node. The shard's preferred leader
/// stands for election sooner (half the configured timeouts) than the other members, so it
/// wins the first election, and the election its current leader provokes by going quiet once
/// it is back after a failure (`cluster::rebalance`; openraft 0.9 has no leader transfer).
fn raft_config(config: &Config, shard: u32) -> anyhow::Result<Arc<openraft::Config>> {
    let tuning = &config.raft;
    let (election_min, election_max) = if preferred_leader(config, shard) == config.node_id {
        let min = (tuning.election_timeout_min_ms / 2).max(tuning.heartbeat_ms + 1);
        (min, (tuning.election_timeout_min_ms * 9 / 10).max(min + 1))
    } else {
        (
            tuning.election_timeout_min_ms,
            tuning.election_timeout_max_ms,
        )
    };
    let raft = openraft::Config {
        cluster_name: "cellpay".to_string(),
        heartbeat_interval: tuning.heartbeat_ms,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        // A backstop: `schedule_snapshots` snapshots the followers sooner, the leader as late.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshots::openraft_backstop(
            tuning.snapshot_logs_since_last,
        )),
        max_in_snapshot_log_to_keep: tuning.logs_to_keep,
        // openraft gives each AppendEntries RPC one heartbeat interval; a snapshot install
        // (decode, check, fsync) needs longer.
        install_snapshot_timeout: 10_000,
        max_payload_entries: 300,
        ..Default::default()
    };
    Ok(Arc::new(raft.validate()?))
}

fn peers(config: &Config, tls: &TlsFiles) -> anyhow::Result<Arc<Peers>> {
    let client_tls = cluster::tls::client_config(tls)?;
    let clients = config
        .peers
        .iter()
        .filter(|peer| peer.id != config.node_id)
        .map(|peer| {
            (
                peer.id,
                Arc::new(PeerClient::new(
                    peer.id,
                    peer.raft_addr.to_string(),
                    client_tls.clone(),
                )),
            )
        })
        .collect();
    Ok(Arc::new(Peers::new(clients)))
}

/// Each group's Raft handle and its count of commands applied since its last snapshot.
type SnapshotCounts = Vec<(Raft, Arc<AtomicU64>)>;

async fn open_groups(
    config: &Config,
    peers: &Arc<Peers>,
    currency: Currency,
    clock: &Arc<Clock>,
) -> anyhow::Result<(Vec<Group>, SnapshotCounts, Arc<consensus::LogDb>)> {
    let started = std::time::Instant::now();
    let log_db =
        open_log_db(&config.data_dir.join("raft-log.redb")).context("opening the Raft log")?;
    let log_opened = started.elapsed();
    let sm_db =
        open_sm_db(&config.data_dir.join("state.redb")).context("opening the state machine")?;
    tracing::info!(
        log_ms = log_opened.as_millis() as u64,
        state_ms = (started.elapsed() - log_opened).as_millis() as u64,
        "databases opened"
    );
    let mut groups = Vec::new();
    let mut counts = Vec::new();
    let states = load_states(config.shards, |group| {
        StateMachineStore::open(sm_db.clone(), group, currency)
            .with_context(|| format!("loading group {group}'s state"))
    })?;
    // One Raft group per shard, all sharing the node's two databases and its transport.
    for (group, sm) in (0..config.shards).zip(states) {
        let reader = sm.reader();
        let applied = sm.commands_since_snapshot();
        let network = NetworkFactory::new(peers.clone(), group);
        let mut log = LogStore::new(log_db.clone(), group);
        let startup_term = log.read_vote().await?.map_or(0, |vote| vote.leader_id.term);
        let startup_last = log
            .get_log_state()
            .await?
            .last_log_id
            .map_or(0, |id| id.index);
        let committed = log.committed_index();
        let log_view = log.clone();
        let raft_config = raft_config(config, group)?;
        let raft = Raft::new(config.node_id, raft_config, network, log, sm).await?;
        counts.push((raft.clone(), applied));
        groups.push(Group::new(
            raft,
            reader,
            (startup_term, startup_last),
            committed,
            clock.clone(),
            log_view,
        ));
    }
    Ok((groups, counts, log_db))
}

/// Loads every group's state machine from its last snapshot, on as many threads as the machine
/// has cores (decoding a large ledger is most of a restart), in group order.
fn load_states(
    shards: u32,
    open: impl Fn(u32) -> anyhow::Result<StateMachineStore> + Sync,
) -> anyhow::Result<Vec<StateMachineStore>> {
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicU32::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(usize::try_from(shards).unwrap_or(1));
    let mut loaded: Vec<(u32, StateMachineStore)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<(u32, StateMachineStore)>> {
                    let mut mine = Vec::new();
                    loop {
                        let group = next.fetch_add(1, Ordering::AcqRel);
                        if group >= shards {
                            return Ok(mine);
                        }
                        mine.push((group, open(group)?));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            let mine = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a state-loading thread panicked"))??;
            all.extend(mine);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    loaded.sort_by_key(|(group, _)| *group);
    tracing::info!(
        groups = shards,
        threads = workers,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state machines loaded from their snapshots"
    );
    Ok(loaded.into_iter().map(|(_, sm)| sm).collect())
}

/// Starts each group's snapshots on this node by the rules of [`crate::snapshots`]: at most
/// one a check, the groups taken in turn. A group already building a snapshot ignores the
/// trigger; the task ends when Raft has stopped.
async fn schedule_snapshots(counts: SnapshotCounts, me: u64, bounds: snapshots::Bounds) {
    // Per group: the command count last seen, and since when it has not moved.
    let mut seen: Vec<(u64, std::time::Instant)> =
        vec![(0, std::time::Instant::now()); counts.len()];
    let mut first = 0usize;
    let mut tick = tokio::time::interval(SNAPSHOT_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut started = false;
        for turn in 0..counts.len() {
            let group = (first + turn) % counts.len();
            let (raft, applied) = &counts[group];
            let commands = applied.load(Ordering::Acquire);
            let seen = &mut seen[group];
            if commands != seen.0 {
                *seen = (commands, std::time::Instant::now());
            }
            if started {
                continue;
            }
            let (role, entries) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                let voters = metrics.membership_config.membership().voter_ids();
                let applied = metrics.last_applied.map_or(0, |id| id.index);
                let snapshot = metrics.snapshot.map_or(0, |id| id.index);
                (
                    snapshots::Role::of(me, metrics.current_leader, voters),
                    applied.saturating_sub(snapshot),
                )
            };
            let progress = snapshots::Progress {
                commands,
                entries,
                quiet_for: seen.1.elapsed(),
            };
            if let Some(why) = snapshots::due(role, progress, bounds) {
                tracing::debug!(group, ?role, ?why, commands, entries, "snapshot due");
                if let Err(error) = raft.trigger().snapshot().await {
                    tracing::info!(group, %error, "snapshot trigger: Raft has stopped");
                    return;
                }
                started = true;
                first = (group + 1) % counts.len();
            }
        }
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)?;
    let pid_file = config.data_dir.join("pid");
    std::fs::write(&pid_file, std::process::id().to_string())?;
    let currency = Currency::parse(&config.currency).map_err(anyhow::Error::msg)?;
    let tls = TlsFiles {
        ca_cert: config.tls.ca_cert.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let peers = peers(&config, &tls)?;
    let clock = Arc::new(Clock::default());
    let (groups, snapshot_counts, log_db) = open_groups(&config, &peers, currency, &clock).await?;
    tokio::spawn(schedule_snapshots(
        snapshot_counts,
        config.node_id,
        snapshots::Bounds {
            commands: config.raft.snapshot_commands_since_last,
            entries: config.raft.snapshot_logs_since_last,
        },
    ));
    let preferred = (0..config.shards)
        .map(|shard| preferred_leader(&config, shard))
        .collect();
    let shards = Arc::new(Shards::new(
        config.node_id,
        config.shards,
        groups,
        peers,
        clock,
        preferred,
    ));
    shards.start_finisher(std::time::Duration::from_millis(
        config.sagas.record_linger_ms,
    ));

    // The actor layer: account actors take client transfers (forwarded ones too).
    let accounts = actors::Accounts::start(
        Arc::new(actors::ShardsBackend(shards.clone())),
        actors::AccountLimits {
            mailbox_max: config.actors.account_mailbox_max,
            inflight_max: config.actors.account_inflight_max,
            resident_max: config.actors.resident_accounts_max,
            ..actors::AccountLimits::default()
        },
    )
    .await;
    shards.set_transfer_hook(Arc::new(accounts.clone()));
    let sessions = actors::Sessions::default();

    let raft_listener = TcpListener::bind(config.raft_addr)
        .await
        .with_context(|| format!("binding {}", config.raft_addr))?;
    tokio::spawn(cluster::transport::serve(
        raft_listener,
        cluster::tls::server_config(&tls)?,
        shards.clone(),
    ));
    let members: BTreeMap<u64, BasicNode> = config
        .peers
        .iter()
        .map(|p| {
            (
                p.id,
                BasicNode {
                    addr: p.raft_addr.to_string(),
                },
            )
        })
        .collect();
    let bootstrapper = shards.clone();
    tokio::spawn(async move { bootstrapper.bootstrap(members).await });
    for group in shards.groups() {
        tokio::spawn(stop_on_fatal(group.raft.clone(), pid_file.clone()));
    }

    let prometheus = telemetry::install_metrics()?;
    // Timers, redress and the monitor, supervised (their deadlines live in replicated state).
    actors::supervisor::start(actors::supervisor::RootArgs {
        shards: shards.clone(),
        accounts: accounts.clone(),
        // The channels will hand sessions to the API; the monitor counts them meanwhile.
        sessions,
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the supervisors: {e}"))?;
    let state = Arc::new(AppState {
        shards: shards.clone(),
        accounts: accounts.clone(),
        config: config.clone(),
        currency,
        prometheus,
        request_seq: AtomicU64::new(0),
        inflight: tokio::sync::Semaphore::new(HTTP_CONCURRENCY_MAX),
    });
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(http = %config.http_addr, raft = %config.raft_addr, "node serving");
    axum::serve(http_listener, api::router(state))
        .with_graceful_shutdown(stop_signal())
        .await?;

    tracing::info!("stopping: shutting down Raft");
    for group in shards.groups() {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, group.raft.shutdown()).await;
    }
    // The log writer lets go of the database, so the file is closed cleanly when the last
    // handle drops as the process ends (a file left unclean is repaired at the next start).
    if tokio::time::timeout(SHUTDOWN_GRACE, log_db.close())
        .await
        .is_err()
    {
        tracing::warn!("the Raft log writer did not stop in time");
    }
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(())
}

async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stop signal received");
}

/// A Raft group that hit a fatal error (a failed fsync, a storage error) has stopped; the node
/// must not go on answering as if it were whole. It exits, so supervisors (systemd, `cellpay
/// dev`, an operator) see it and nothing is served from a node that cannot persist.
async fn stop_on_fatal(raft: consensus::Raft, pid_file: std::path::PathBuf) {
    let mut metrics = raft.metrics();
    loop {
        let state = metrics.borrow().running_state.clone();
        if let Err(openraft::error::Fatal::Stopped) = state {
            // A shutdown we asked for (graceful stop): not a failure.
            return;
        }
        if let Err(fatal) = &state {
            tracing::error!(%fatal, "Raft stopped on a fatal error; the node exits");
            let _ = std::fs::remove_file(&pid_file);
            std::process::exit(70);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
