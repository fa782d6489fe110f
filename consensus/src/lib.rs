//! # consensus — openraft glue for cellpay
//!
//! Owns the Raft type configuration ([`types`]), the durable Raft log on redb ([`log_store`]),
//! and the state machine that applies ledger commands and keeps fsync'd snapshots in a separate
//! redb file ([`state_machine`]). One log file and one state-machine file per node serve every
//! Raft group (shard) on it, keyed by group id.
//!
//! Depends on `ledger` only. Must never depend on the network, HTTP, actors or the node.

// openraft's StorageError (224 bytes) is the error type its storage traits require.
#![allow(clippy::result_large_err)]

pub mod limits;
pub mod log_store;
pub mod log_writer;
pub mod state_machine;
pub mod types;

pub use log_store::{open_log_db, LogStore};
pub use log_writer::LogDb;
pub use state_machine::{open_sm_db, Applied, SnapshotStats, StateMachineStore, StateReader};
pub use types::{NodeId, Raft, ShardRequest, TypeConfig};
