//! Goal: our redb log store and state machine satisfy openraft's storage contract.
//! Method: run `openraft::testing::Suite::test_all` with a builder that opens both stores on
//! fresh files in a temporary directory (the guard keeps the directory alive per test case).

#![allow(clippy::result_large_err)] // openraft's StorageError is the builder trait's error type

use consensus::{open_log_db, open_sm_db, LogStore, StateMachineStore, TypeConfig};
use ledger::Currency;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_db = open_log_db(&dir.path().join("log.redb")).expect("log db");
        let sm_db = open_sm_db(&dir.path().join("sm.redb")).expect("sm db");
        let currency = Currency::parse("KES").expect("valid currency");
        let sm = StateMachineStore::open(sm_db, 0, currency)?;
        Ok((dir, LogStore::new(log_db, 0), sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(RedbBuilder)?;
    Ok(())
}

/// Goal: a committed id reads back at once, and reaches the file even when no append follows
/// to share its fsync (the writer holds it back at most `COMMITTED_DEFER_MAX`).
/// Method: save one through a store and read it back; wait past the deferral with nothing else
/// written; a second store on the same database (which reads the file, not the first store's
/// memory) must find it.
#[test]
fn a_committed_id_reaches_the_file_without_a_following_append() {
    use openraft::storage::RaftLogStorage;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_log_db(&dir.path().join("log.redb")).expect("log db");
    let committed = openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut store = LogStore::new(db.clone(), 5);
        store.save_committed(Some(committed)).await.expect("save");
        assert_eq!(store.read_committed().await.expect("read"), Some(committed));
        tokio::time::sleep(consensus::limits::COMMITTED_DEFER_MAX * 3).await;
        let mut from_file = LogStore::new(db.clone(), 5);
        assert_eq!(
            from_file.read_committed().await.expect("read"),
            Some(committed),
            "the committed id was not written after the deferral"
        );
        assert_eq!(
            LogStore::new(db, 6).read_committed().await.expect("read"),
            None,
            "another group has no committed id"
        );
    });
}

/// Goal: a restarted node's openraft learns the snapshot the state was loaded from without
/// reading it from disk again (the loaded copy is handed over once), and is never handed that
/// copy once a newer snapshot exists.
/// Method: snapshot a state machine holding one account and reopen it on the same database:
/// its first `get_current_snapshot` is that snapshot (same meta, same bytes). Reopen again, apply
/// another account and snapshot: the current snapshot is the new one (the kept copy was
/// dropped), and a third reopen loads both accounts.
#[test]
fn a_reopened_state_machine_hands_over_its_loaded_snapshot_once() {
    use consensus::ShardRequest;
    use ledger::{AccountKind, Command, NewAccount, ShardId};
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use std::io::Read;

    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_sm_db(&dir.path().join("sm.redb")).expect("sm db");
    let currency = Currency::parse("KES").expect("valid currency");
    let open = |id: &str, index: u64| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ShardRequest {
            shard: ShardId(0),
            at_ms: 1,
            command: Command::CreateAccount(NewAccount {
                id: ledger::AccountId::parse(id).expect("id"),
                kind: AccountKind::Customer,
                name: "Wanjiru".into(),
                currency,
            }),
        }),
    };
    let bytes_of = |snapshot: openraft::Snapshot<TypeConfig>| {
        let mut data = Vec::new();
        let mut cursor = *snapshot.snapshot;
        cursor.read_to_end(&mut data).expect("read");
        (snapshot.meta, data)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut first = StateMachineStore::open(db.clone(), 0, currency).expect("open");
        first
            .apply([open("+254700000001", 1)])
            .await
            .expect("apply");
        let built = bytes_of(first.build_snapshot().await.expect("build"));

        let mut second = StateMachineStore::open(db.clone(), 0, currency).expect("reopen");
        let current = second
            .get_current_snapshot()
            .await
            .expect("get")
            .expect("some");
        assert_eq!(bytes_of(current), built, "the loaded snapshot, as built");
        let again = second
            .get_current_snapshot()
            .await
            .expect("get")
            .expect("some");
        assert_eq!(bytes_of(again), built, "read from disk the second time");

        let mut third = StateMachineStore::open(db.clone(), 0, currency).expect("reopen");
        third
            .apply([open("+254700000002", 2)])
            .await
            .expect("apply");
        let newer = bytes_of(third.build_snapshot().await.expect("build"));
        assert_ne!(newer.0, built.0);
        let current = third
            .get_current_snapshot()
            .await
            .expect("get")
            .expect("some");
        assert_eq!(
            bytes_of(current),
            newer,
            "the newer snapshot, not the loaded copy"
        );

        let fourth = StateMachineStore::open(db, 0, currency).expect("reopen");
        let reader = fourth.reader();
        let state = reader.read();
        assert_eq!(state.last_applied.map(|id| id.index), Some(2));
        for id in ["+254700000001", "+254700000002"] {
            let id = ledger::AccountId::parse(id).expect("id");
            assert!(state.ledger.account(&id).is_some(), "{id} after the reload");
        }
    });
}

/// Goal: a stopping node closes its Raft log file cleanly although handles to it outlive the
/// stop (a node's parts refer to one another, so they are never all dropped): a file left
/// unclean is repaired at the next open, and a restart waits for that.
/// Method: write a vote through a store, keep a clone of the store alive for good, and close
/// the database. Reads through the kept store now fail; opening the file again is allowed (the
/// close let go of it) and needs no repair; the vote is there.
#[test]
fn a_closed_log_database_needs_no_repair_at_the_next_open() {
    use openraft::storage::RaftLogStorage;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log.redb");
    let vote = openraft::Vote::new_committed(2, 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let db = open_log_db(&path).expect("log db");
        let mut store = LogStore::new(db.clone(), 0);
        store.save_vote(&vote).await.expect("save");
        let kept: &mut LogStore = Box::leak(Box::new(store.clone()));
        db.close().await;
        assert!(kept.read_vote().await.is_err(), "read after close");
    });
    let repaired = Arc::new(AtomicBool::new(false));
    let seen = repaired.clone();
    let reopened = redb::Database::builder()
        .set_repair_callback(move |_| seen.store(true, Ordering::Release))
        .create(&path)
        .expect("the closed database let go of the file");
    assert!(
        !repaired.load(Ordering::Acquire),
        "the file was left unclean"
    );
    drop(reopened);
    runtime.block_on(async {
        let mut store = LogStore::new(open_log_db(&path).expect("log db"), 0);
        assert_eq!(store.read_vote().await.expect("read"), Some(vote));
    });
}
