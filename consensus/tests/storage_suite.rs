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
