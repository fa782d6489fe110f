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
