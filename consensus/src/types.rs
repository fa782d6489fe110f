//! The openraft type configuration and the replicated request envelope.

use std::io::Cursor;

use ledger::{Command, Outcome, ShardId};
use serde::{Deserialize, Serialize};

/// One entry's payload: a ledger command for one shard, stamped with the leader's clock.
/// The stamp makes `apply` deterministic: every replica uses the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRequest {
    pub shard: ShardId,
    pub at_ms: u64,
    pub command: Command,
}

/// Raft node ids are the cluster's node numbers, 1..=N.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// cellpay's Raft types: ledger commands in, ledger outcomes out.
    pub TypeConfig:
        D = ShardRequest,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
