//! The node-to-node protocol: every frame names its Raft group, so all shards share one
//! connection per peer. Persisted nowhere, but versioned by the `HELLO` exchange of TLS ALPN-free
//! framing: both ends must run the same build of this enum.

use consensus::{NodeId, ShardRequest, TypeConfig};
use ledger::{Answer, Outcome, Query, TransferOutcome, TransferRequest};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
};
use openraft::raft::{VoteRequest, VoteResponse};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub body: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub body: Response,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Append {
        group: u32,
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    Vote {
        group: u32,
        rpc: VoteRequest<NodeId>,
    },
    Snapshot {
        group: u32,
        rpc: InstallSnapshotRequest<TypeConfig>,
    },
    /// A client write forwarded to the node believed to lead the group.
    Write {
        group: u32,
        request: ShardRequest,
    },
    /// A client read forwarded to the node believed to lead the group.
    Read {
        group: u32,
        query: Query,
    },
    /// A client transfer forwarded to the node believed to lead its account's shard, where
    /// the account's actor takes it.
    Transfer {
        request: TransferRequest,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Pong {
        node: NodeId,
    },
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Write(Result<Outcome, RouteError>),
    /// The answer and the applied log index of the state it was read from.
    Read(Result<(Answer, u64), RouteError>),
    Transfer(Result<TransferOutcome, RouteError>),
    /// The request could not be served at all (unknown group, node stopping).
    Failed(String),
}

/// Why a routed write or read did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RouteError {
    /// The node is not the group's leader; `leader` is its best guess.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader's queue is full: try again later (HTTP 429).
    #[error("overloaded")]
    Overloaded,
    /// No leader could be reached in time; the outcome of a write is unknown.
    #[error("shard unavailable: {0}")]
    Unavailable(String),
}
