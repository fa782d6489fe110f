//! Actor tests with ractor and a fake cluster: bounded mailboxes answer `overloaded`,
//! idle actors passivate and come back on demand, a crashed actor is restarted by the next
//! transfer and a crash loop fences its shard, pre-validation holds back a debit the hot state
//! (balance or daily-limit room) cannot cover beside those in flight, a lost leadership stops the actor without an
//! answer from it, and sessions time out, stay bounded and belong to one phone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actors::account::AccountMsg;
use actors::{AccountLimits, Accounts, Backend, SessionError, Sessions};
use cluster::RouteError;
use futures::future::BoxFuture;
use ledger::{
    Accepted, AccountId, Currency, ShardId, TransferId, TransferKind, TransferOutcome,
    TransferRequest, TransferStatus,
};
use tokio::sync::Semaphore;

/// One shard led by this node (switchable); transfers wait for a permit of `gate`.
struct Fake {
    leads: AtomicBool,
    gate: Semaphore,
    runs: AtomicUsize,
    /// Transfers handed to `run` (proposed), answered or not.
    started: AtomicUsize,
    /// The payer's daily room the n-th answer shows is `room - n` (`None`: no daily limit).
    room: Option<u64>,
}

impl Fake {
    fn new(open: bool) -> Arc<Fake> {
        Fake::with_room(open, None)
    }

    fn with_room(open: bool, room: Option<u64>) -> Arc<Fake> {
        Arc::new(Fake {
            leads: AtomicBool::new(true),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            runs: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            room,
        })
    }
}

struct Shared(Arc<Fake>);

impl Backend for Shared {
    fn shard_of(&self, _account: &AccountId) -> ShardId {
        ShardId(0)
    }

    fn leads(&self, _shard: ShardId) -> bool {
        self.0.leads.load(Ordering::SeqCst)
    }

    fn run(
        &self,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>> {
        let fake = self.0.clone();
        fake.started.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            fake.gate.acquire().await.expect("gate open").forget();
            let n = fake.runs.fetch_add(1, Ordering::SeqCst) as i64;
            Ok(TransferOutcome::Accepted(Accepted {
                id: request.id,
                status: TransferStatus::Completed,
                amount: request.amount,
                fee: 0,
                from_balance: 1_000 - n,
                to_balance: n,
                daily_room: fake.room.map(|room| room - n as u64),
                log_index: 1,
                log_pos: 0,
            }))
        })
    }

    fn forward(
        &self,
        _shard: ShardId,
        _request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>> {
        Box::pin(async { Err(RouteError::Unavailable("no other node in this test".into())) })
    }
}

fn request(n: usize) -> TransferRequest {
    TransferRequest {
        id: TransferId::parse(&format!("t{n}")).expect("id"),
        kind: TransferKind::P2p,
        from: AccountId::parse("+254700000001").expect("id"),
        to: AccountId::parse("+254700000002").expect("id"),
        amount: 1,
        currency: Currency::parse("KES").expect("currency"),
        memo: String::new(),
        pending: false,
        timeout_s: 300,
    }
}

fn debit(n: usize, amount: u64) -> TransferRequest {
    TransferRequest {
        amount,
        ..request(n)
    }
}

fn limits() -> AccountLimits {
    AccountLimits {
        mailbox_max: 4,
        inflight_max: 2,
        resident_max: 8,
        idle: Duration::from_millis(150),
        tick: Duration::from_millis(20),
        crashes_max: 3,
        crash_window: Duration::from_secs(60),
    }
}

async fn start(fake: &Arc<Fake>) -> Accounts {
    Accounts::start(Arc::new(Shared(fake.clone())), limits()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_answers_overloaded_and_loses_nothing() {
    // Goal: with 2 in flight and 4 accepted behind them, further transfers of the account
    // are refused at once (overloaded); every accepted one completes once.
    let fake = Fake::new(false);
    let accounts = start(&fake).await;
    let mut tasks = Vec::new();
    for n in 0..6 {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            accounts.transfer_here(request(n)).await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accounts.stats().mailbox_depth, 4, "{:?}", accounts.stats());
    for n in 6..10 {
        assert_eq!(
            accounts.transfer_here(request(n)).await,
            Err(RouteError::Overloaded)
        );
    }
    fake.gate.add_permits(100);
    for task in tasks {
        assert!(matches!(
            task.await.expect("task"),
            Ok(TransferOutcome::Accepted(_))
        ));
    }
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        6,
        "each accepted transfer ran once"
    );
    assert_eq!(accounts.stats().mailbox_depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_passivate_and_come_back() {
    // Goal: an account actor stops after `idle` without work, freeing its slot; the next
    // transfer of the account starts a fresh one.
    let fake = Fake::new(true);
    let accounts = start(&fake).await;
    assert!(accounts.transfer_here(request(1)).await.is_ok());
    assert_eq!(accounts.stats().resident, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(accounts.stats().resident, 0, "passivated");
    assert!(accounts.transfer_here(request(2)).await.is_ok());
    assert_eq!(accounts.stats().resident, 1, "re-activated on demand");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_actor_restarts_and_a_crash_loop_fences_the_shard() {
    // Goal: an actor that fails (here: an answer it never asked for breaks its books) is
    // dropped by its supervisor and the next transfer gets a fresh actor; `crashes_max`
    // failures in the window stop the shard from serving on this node.
    let fake = Fake::new(true);
    let accounts = start(&fake).await;
    let payer = AccountId::parse("+254700000001").expect("id");
    for crash in 0..3 {
        assert!(
            accounts.transfer_here(request(crash)).await.is_ok(),
            "restarted after crash {crash}"
        );
        assert!(accounts.send_raw(
            &payer,
            AccountMsg::Answered {
                balance: None,
                room: None,
                debit: 0
            }
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accounts.stats().resident, 0, "the failed actor is gone");
    }
    assert!(matches!(
        accounts.transfer_here(request(9)).await,
        Err(RouteError::Unavailable(_))
    ));
    assert_eq!(accounts.stats().fenced_shards, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leadership_stops_the_actor_without_answering_from_it() {
    // Goal: once this node no longer leads the shard, its actor answers nothing itself (the
    // caller is told to go to the leader) and stops.
    let fake = Fake::new(true);
    let accounts = start(&fake).await;
    assert!(accounts.transfer_here(request(1)).await.is_ok());
    fake.leads.store(false, Ordering::SeqCst);
    assert_eq!(
        accounts.transfer_here(request(2)).await,
        Err(RouteError::NotLeader { leader: None })
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accounts.stats().resident, 0);
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        1,
        "nothing ran after leadership moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_time_out_stay_bounded_and_belong_to_one_phone() {
    let sessions = Sessions::new(2, Duration::from_millis(150));
    let values = BTreeMap::from([("menu".to_string(), "send money".to_string())]);
    let view = sessions
        .touch("s1", "+254700000001", 1, values)
        .await
        .expect("a new session");
    assert_eq!((view.step, view.touches), (1, 1));
    let view = sessions
        .touch("s1", "+254700000001", 2, BTreeMap::new())
        .await
        .expect("the same session");
    assert_eq!((view.step, view.touches, view.values.len()), (2, 2, 1));
    assert_eq!(
        sessions
            .touch("s1", "+254700000009", 3, BTreeMap::new())
            .await,
        Err(SessionError::NotYours)
    );
    sessions
        .touch("s2", "+254700000002", 1, BTreeMap::new())
        .await
        .expect("second session");
    assert_eq!(
        sessions
            .touch("s3", "+254700000003", 1, BTreeMap::new())
            .await,
        Err(SessionError::TooMany)
    );
    sessions.end("s2");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sessions.live(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sessions.live(), 0, "idle sessions stop");
    assert!(sessions.get("s1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_the_hot_state_cannot_cover_waits_for_those_in_flight() {
    // Goal: pre-validation schedules, never answers. After an answer shows a balance of 1000,
    // a debit of 800 goes out; a debit of 500 that 1000 - 800 cannot cover is not proposed
    // beside it (though a slot is free) and waits, with everything behind it; once the 800
    // is answered it goes out alone, and a small debit may then join it.
    let fake = Fake::new(false);
    let accounts = start(&fake).await;
    let spawn = |request: TransferRequest| {
        let accounts = accounts.clone();
        tokio::spawn(async move { accounts.transfer_here(request).await })
    };
    let started = |n: usize| {
        let fake = fake.clone();
        async move {
            for _ in 0..100 {
                if fake.started.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "{} proposed, expected {n}",
                fake.started.load(Ordering::SeqCst)
            );
        }
    };
    // The fake answers its n-th run with a payer balance of 1000 - n.
    let first = spawn(debit(0, 1));
    started(1).await;
    fake.gate.add_permits(1);
    assert!(matches!(
        first.await.expect("task"),
        Ok(TransferOutcome::Accepted(_))
    ));
    let big = spawn(debit(1, 800));
    started(2).await;
    let held = spawn(debit(2, 500));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let behind = spawn(debit(3, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fake.started.load(Ordering::SeqCst),
        2,
        "500 cannot be covered beside 800 in flight from 1000, and nothing overtakes it"
    );
    assert_eq!(accounts.stats().mailbox_depth, 2, "{:?}", accounts.stats());
    fake.gate.add_permits(1);
    assert!(matches!(
        big.await.expect("task"),
        Ok(TransferOutcome::Accepted(_))
    ));
    // 999 left: the 500 goes out, and the 1 behind it fits beside it.
    started(4).await;
    fake.gate.add_permits(2);
    for task in [held, behind] {
        assert!(matches!(
            task.await.expect("task"),
            Ok(TransferOutcome::Accepted(_))
        ));
    }
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        4,
        "each transfer ran once"
    );
    assert_eq!(accounts.stats().mailbox_depth, 0);
}

#[tokio::test]
async fn a_debit_beyond_the_daily_room_waits_for_those_in_flight() {
    // Goal: the daily-limit room is hot state too. The balance (about 1000) covers two debits
    // of 300, but the room in the last answer (500) does not cover the second beside the
    // first in flight: it waits, and goes out once the first is answered (room 499 then).
    let fake = Fake::with_room(false, Some(500));
    let accounts = start(&fake).await;
    let spawn = |request: TransferRequest| {
        let accounts = accounts.clone();
        tokio::spawn(async move { accounts.transfer_here(request).await })
    };
    let wait_started = |n: usize| {
        let fake = fake.clone();
        async move {
            for _ in 0..100 {
                if fake.started.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "{} proposed, expected {n}",
                fake.started.load(Ordering::SeqCst)
            );
        }
    };
    let first = spawn(debit(0, 1));
    wait_started(1).await;
    fake.gate.add_permits(1);
    assert!(matches!(
        first.await.expect("task"),
        Ok(TransferOutcome::Accepted(_))
    ));
    let one = spawn(debit(1, 300));
    wait_started(2).await;
    let two = spawn(debit(2, 300));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fake.started.load(Ordering::SeqCst),
        2,
        "300 is not within the room of 500 beside 300 in flight"
    );
    fake.gate.add_permits(1);
    assert!(matches!(
        one.await.expect("task"),
        Ok(TransferOutcome::Accepted(_))
    ));
    wait_started(3).await;
    fake.gate.add_permits(1);
    assert!(matches!(
        two.await.expect("task"),
        Ok(TransferOutcome::Accepted(_))
    ));
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        3,
        "each transfer ran once"
    );
}
