//! openraft's network seam: Raft RPCs of one group travel as [`Request`]s over the shared
//! [`PeerClient`] of the target node.

use std::collections::BTreeMap;
use std::sync::Arc;

use consensus::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::BasicNode;

use crate::limits::APPEND_WEIGHT_MAX;
use crate::rpc::{Request, Response};
use crate::transport::{CallError, PeerClient};

/// Every peer of this node, by node id. Fixed at start from the configuration.
pub struct Peers {
    clients: BTreeMap<NodeId, Arc<PeerClient>>,
}

impl Peers {
    pub fn new(clients: BTreeMap<NodeId, Arc<PeerClient>>) -> Peers {
        Peers { clients }
    }

    pub fn get(&self, node: NodeId) -> Option<Arc<PeerClient>> {
        self.clients.get(&node).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<PeerClient>> {
        self.clients.values()
    }
}

#[derive(Clone)]
pub struct NetworkFactory {
    peers: Arc<Peers>,
    group: u32,
}

impl NetworkFactory {
    pub fn new(peers: Arc<Peers>, group: u32) -> NetworkFactory {
        NetworkFactory { peers, group }
    }
}

pub struct PeerNetwork {
    target: NodeId,
    client: Option<Arc<PeerClient>>,
    group: u32,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            client: self.peers.get(target),
            group: self.group,
        }
    }
}

impl PeerNetwork {
    async fn call<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let Some(client) = &self.client else {
            let error =
                std::io::Error::other(format!("node {} is not in the configuration", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        match client.call(request, option.hard_ttl()).await {
            Ok(response) => Ok(response),
            Err(error @ CallError::Connect { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }
}

/// How much replication work an entry carries: the transfers in it (at least 1).
fn entry_weight(entry: &consensus::types::Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(request) => request.command.count().max(1),
        _ => 1,
    }
}

/// Keeps an AppendEntries request under `APPEND_WEIGHT_MAX` transfers (always at least one
/// entry), so a lagging follower catches up in frames that fit the wire limit and the RPC
/// deadline. Returns the trimmed request and, when trimmed, the last log id it still carries.
/// The leader's commit index is capped at that id: the follower must not commit entries it was
/// not sent.
fn cap_append(
    mut rpc: AppendEntriesRequest<TypeConfig>,
) -> (
    AppendEntriesRequest<TypeConfig>,
    Option<consensus::types::LogId>,
) {
    let mut weight = 0usize;
    let mut keep = 0usize;
    for entry in &rpc.entries {
        let next = weight.saturating_add(entry_weight(entry));
        if keep > 0 && next > APPEND_WEIGHT_MAX {
            break;
        }
        weight = next;
        keep += 1;
    }
    if keep == rpc.entries.len() {
        return (rpc, None);
    }
    rpc.entries.truncate(keep);
    let last = rpc.entries.last().map(|entry| entry.log_id);
    if let (Some(committed), Some(last)) = (rpc.leader_commit, last) {
        if committed.index > last.index {
            rpc.leader_commit = Some(last);
        }
    }
    (rpc, last)
}

fn unexpected<E: std::error::Error>(
    response: &Response,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let error = std::io::Error::other(format!("unexpected response {response:?}"));
    RPCError::Network(NetworkError::new(&error))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let (rpc, sent_up_to) = cap_append(rpc);
        let response = self
            .call(
                Request::Append {
                    group: self.group,
                    rpc,
                },
                &option,
            )
            .await?;
        let result = match response {
            Response::Append(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))?
            }
            other => return Err(unexpected(&other)),
        };
        match (result, sent_up_to) {
            // Only a prefix went out: tell openraft how far the follower now matches.
            (AppendEntriesResponse::Success, Some(last)) => {
                Ok(AppendEntriesResponse::PartialSuccess(Some(last)))
            }
            (result, _) => Ok(result),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let response = self
            .call(
                Request::Snapshot {
                    group: self.group,
                    rpc,
                },
                &option,
            )
            .await?;
        match response {
            Response::Snapshot(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let response = self
            .call(
                Request::Vote {
                    group: self.group,
                    rpc,
                },
                &option,
            )
            .await?;
        match response {
            Response::Vote(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }
}
