//! Goal: a group's ShardActor (ractor) gathers concurrent commands into batch proposals and
//! answers each caller with its own command's outcome; after it fails, the next submit starts
//! a new one and nothing is lost; a crash loop fences the group on this node (writes refused
//! `unavailable`) instead of serving on.
//! Method: a real one-node Raft group (redb log and state machine in a temporary directory);
//! the actor is made to fail by a `Proposed` with nothing in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cluster::batcher::{Batcher, Clock, ShardMsg};
use cluster::limits::SHARD_ACTOR_RESTARTS_MAX;
use cluster::{NetworkFactory, Peers, RouteError};
use consensus::{open_log_db, open_sm_db, LogStore, Raft, StateMachineStore};
use ledger::{
    AccountId, AccountKind, Command, Currency, NewAccount, Outcome, ShardId, TransferId,
    TransferKind, TransferOutcome, TransferRequest,
};

fn kes() -> Currency {
    Currency::parse("KES").expect("valid currency")
}

async fn one_node_group(dir: &std::path::Path) -> Raft {
    let log = LogStore::new(open_log_db(&dir.join("log.redb")).expect("log db"), 0);
    let sm = StateMachineStore::open(open_sm_db(&dir.join("sm.redb")).expect("sm db"), 0, kes())
        .expect("state machine");
    let network = NetworkFactory::new(Arc::new(Peers::new(BTreeMap::new())), 0);
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    let raft = Raft::new(
        1,
        Arc::new(config.validate().expect("config")),
        network,
        log,
        sm,
    )
    .await
    .expect("raft");
    raft.initialize(BTreeMap::from([(1, openraft::BasicNode::default())]))
        .await
        .expect("initialised");
    raft.wait(Some(Duration::from_secs(10)))
        .current_leader(1, "node 1 leads")
        .await
        .expect("a leader");
    raft
}

fn open(n: u32) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId::parse(&format!("+2547000{n:05}")).expect("valid id"),
        kind: AccountKind::Customer,
        name: format!("customer {n}"),
        currency: kes(),
    })
}

fn issue(n: u32) -> Command {
    Command::Transfer(TransferRequest {
        id: TransferId::parse(&format!("fund-{n}")).expect("valid id"),
        kind: TransferKind::Issue,
        from: AccountId::float(),
        to: AccountId::parse(&format!("+2547000{n:05}")).expect("valid id"),
        amount: 1_000,
        currency: kes(),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_actor_batches_restarts_and_fences() {
    let dir = tempfile::tempdir().expect("temp dir");
    let raft = one_node_group(dir.path()).await;
    let batcher = Arc::new(Batcher::start(raft.clone(), Arc::new(Clock::default())));
    let shard = ShardId(0);

    // 64 openings at once, then 64 fundings at once: each caller gets its own answer.
    for make in [open as fn(u32) -> Command, issue] {
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.submit(shard, make(n)).await) })
            })
            .collect();
        for task in tasks {
            let (n, answer) = task.await.expect("task");
            match answer {
                Ok(Outcome::Account(Ok(view))) => {
                    assert_eq!(view.id.as_str(), format!("+2547000{n:05}"));
                }
                Ok(Outcome::Transfer(TransferOutcome::Accepted(accepted))) => {
                    assert_eq!(accepted.id.as_str(), format!("fund-{n}"));
                    assert_eq!(accepted.to_balance, 1_000);
                }
                other => panic!("command {n} answered {other:?}"),
            }
        }
    }
    let (proposals, commands) = batcher.counts();
    assert_eq!(commands, 128);
    assert!(proposals < commands, "no batching: {proposals} proposals");
    assert_eq!(batcher.queued(), 0);

    // A failure: the next submit starts a new actor and is answered.
    for crash in 0..SHARD_ACTOR_RESTARTS_MAX {
        assert!(batcher.send_raw(ShardMsg::Proposed), "an actor is running");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let retry = batcher.submit(shard, issue(0)).await;
        assert!(
            matches!(retry, Ok(Outcome::Transfer(TransferOutcome::Accepted(_)))),
            "after crash {crash}: {retry:?}"
        );
        assert!(!batcher.is_fenced());
    }
    // One failure too many within the window: the group is fenced on this node.
    assert!(batcher.send_raw(ShardMsg::Proposed));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = batcher.submit(shard, issue(1)).await;
    assert!(
        matches!(refused, Err(RouteError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(batcher.is_fenced());
    assert!(matches!(
        batcher.submit(shard, issue(2)).await,
        Err(RouteError::Unavailable(_))
    ));
    assert_eq!(batcher.queued(), 0, "no place in the bound leaked");
    raft.shutdown().await.expect("shutdown");
}
