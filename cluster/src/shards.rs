//! The shard map and request routing. Every command names its shard; a shard is a Raft group
//! (this version runs one group for all shards: group = shard 0). A node that does not lead a
//! group forwards the request to the leader over the cluster transport, so clients may talk to
//! any node.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use consensus::{NodeId, Raft, ShardRequest, StateReader};
use futures::future::BoxFuture;
use ledger::{
    AccountId, Answer, Command, Outcome, Query, ShardId, TransferId, TransferOutcome,
    TransferRequest,
};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::BasicNode;

use crate::batcher::{Batcher, Clock};
use crate::limits::{
    BOOTSTRAP_DEFER, FORWARD_TIMEOUT, PING_TIMEOUT, ROUTE_ATTEMPTS_MAX, ROUTE_BACKOFF,
};
use crate::network::Peers;
use crate::rpc::{Request, Response, RouteError};
use crate::transport::Handler;

/// A shard's next deadlines, in ms since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    pub expiry: Option<u64>,
    pub saga: Option<u64>,
    pub cutoff: Option<u64>,
}

/// One Raft group on this node.
pub struct Group {
    pub raft: Raft,
    pub reader: StateReader,
    /// The term and last log index the group had when this node started. A node that resumes
    /// leadership of that same term after a crash reuses its old read point, which can be
    /// behind entries it had acknowledged before the crash; reads wait until applied reaches
    /// the startup log end (see `read_local`).
    pub startup: (u64, u64),
    /// The committed index as the log store last saw it.
    pub committed: Arc<std::sync::atomic::AtomicU64>,
    /// Gathers single transfers into batch proposals while this node leads the group.
    pub batcher: Batcher,
    /// A reader of the group's log, for the admin log view.
    pub log: consensus::LogStore,
    /// Leadership handover to the preferred node (see [`crate::rebalance`]).
    pub handover: crate::rebalance::Handover,
}

impl Group {
    /// `startup` is (vote term, last log index) read from storage before the Raft started.
    pub fn new(
        raft: Raft,
        reader: StateReader,
        startup: (u64, u64),
        committed: Arc<std::sync::atomic::AtomicU64>,
        clock: Arc<Clock>,
        log: consensus::LogStore,
    ) -> Group {
        let batcher = Batcher::start(raft.clone(), clock);
        Group {
            raft,
            reader,
            startup,
            committed,
            batcher,
            log,
            handover: crate::rebalance::Handover::default(),
        }
    }

    /// Committed entries from `from` on, at most `limit`: (index, leader time, command).
    pub async fn committed_entries(
        &self,
        from: u64,
        limit: u64,
    ) -> Result<Vec<(u64, u64, ledger::Command)>, String> {
        use openraft::storage::RaftLogReader;
        let committed = self.commit_index();
        let end = from.saturating_add(limit).min(committed.saturating_add(1));
        if from >= end {
            return Ok(Vec::new());
        }
        let mut log = self.log.clone();
        let entries = log
            .try_get_log_entries(from..end)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if let openraft::EntryPayload::Normal(request) = entry.payload {
                out.push((entry.log_id.index, request.at_ms, request.command));
            }
        }
        Ok(out)
    }

    pub fn commit_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }
}

/// Where a forwarded client transfer goes on the node leading its account's shard (the
/// node's account actors). Without one, the transfer runs directly (`saga::transfer`).
pub trait TransferHook: Send + Sync + 'static {
    fn transfer_here(
        &self,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>>;
}

pub struct Shards {
    hook: std::sync::OnceLock<Arc<dyn TransferHook>>,
    node_id: NodeId,
    shard_count: u32,
    groups: Vec<Group>,
    peers: Arc<Peers>,
    /// Stamps commands this node proposes as leader; never goes backwards.
    clock: Arc<Clock>,
    /// Each group's preferred leader (leaderships are dealt round-robin over the members).
    preferred: Vec<NodeId>,
    /// Records cross-shard answers at home after the client has them (once started).
    finisher: std::sync::OnceLock<crate::finisher::Finisher>,
}

/// Commands whose retry after an unknown outcome is harmless (the ledger dedups them).
fn is_idempotent(command: &Command) -> bool {
    !matches!(
        command,
        Command::CreateAccount(_) | Command::SetTariff(_) | Command::SetAccountStatus { .. }
    )
}

impl Shards {
    pub fn new(
        node_id: NodeId,
        shard_count: u32,
        groups: Vec<Group>,
        peers: Arc<Peers>,
        clock: Arc<Clock>,
        preferred: Vec<NodeId>,
    ) -> Shards {
        assert!(!groups.is_empty(), "a node runs at least one Raft group");
        assert_eq!(
            preferred.len(),
            groups.len(),
            "one preferred leader per group"
        );
        Shards {
            hook: std::sync::OnceLock::new(),
            node_id,
            shard_count,
            groups,
            peers,
            clock,
            preferred,
            finisher: std::sync::OnceLock::new(),
        }
    }

    /// Starts recording cross-shard answers at their home shards after the clients have them,
    /// many per Raft entry (see `finisher`), waiting `linger` after the first of a round for
    /// more. Until this is called (and if called again: the first stays), every coordinator
    /// records its answer before answering.
    pub fn start_finisher(self: &Arc<Self>, linger: std::time::Duration) {
        let finisher = crate::finisher::Finisher::start(Arc::downgrade(self), linger);
        if self.finisher.set(finisher).is_err() {
            tracing::warn!("the saga finisher was already started");
        }
    }

    /// Hands `answer` over to be recorded at `home` later; `false` when it cannot be (no
    /// finisher, or its queue is full): the caller records it now.
    pub(crate) fn record_later(
        &self,
        home: ShardId,
        id: TransferId,
        answer: TransferOutcome,
    ) -> bool {
        self.finisher
            .get()
            .is_some_and(|finisher| finisher.offer(home, id, answer))
    }

    /// Cross-shard answers recorded at home after their clients had them, since the start.
    pub fn answers_recorded_later(&self) -> u64 {
        self.finisher
            .get()
            .map_or(0, crate::finisher::Finisher::recorded)
    }

    /// Each group's preferred leader.
    pub fn preferred(&self) -> &[NodeId] {
        &self.preferred
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Sets where forwarded client transfers go (once, at start).
    pub fn set_transfer_hook(&self, hook: Arc<dyn TransferHook>) {
        if self.hook.set(hook).is_err() {
            tracing::warn!("the transfer hook was already set");
        }
    }

    /// Runs a client transfer on the node leading `shard` (this one, or one hop away),
    /// following leader hints; the transfer is idempotent, so unknown outcomes are retried.
    pub async fn forward_transfer(
        &self,
        shard: ShardId,
        request: TransferRequest,
    ) -> Result<TransferOutcome, RouteError> {
        let group = self
            .group(self.group_of(shard))
            .ok_or_else(|| RouteError::Unavailable("no such group".into()))?;
        let mut target = self.leader_of(group);
        let mut last_error = RouteError::Unavailable("no leader elected".into());
        for _ in 0..ROUTE_ATTEMPTS_MAX {
            let result = match target {
                Some(node) if node == self.node_id => self.transfer_here(request.clone()).await,
                Some(node) => match self
                    .forward(
                        node,
                        Request::Transfer {
                            request: request.clone(),
                        },
                    )
                    .await
                {
                    Ok(Response::Transfer(result)) => result,
                    Ok(other) => Err(RouteError::Unavailable(format!(
                        "unexpected answer {other:?}"
                    ))),
                    Err(error) => Err(error),
                },
                None => Err(RouteError::NotLeader { leader: None }),
            };
            match result {
                Err(RouteError::NotLeader { leader: Some(hint) }) if Some(hint) != target => {
                    target = Some(hint);
                    continue;
                }
                Err(RouteError::Overloaded) => return Err(RouteError::Overloaded),
                Err(error) => last_error = error,
                ok => return ok,
            }
            tokio::time::sleep(ROUTE_BACKOFF).await;
            target = self.leader_of(group);
        }
        Err(last_error)
    }

    /// A client transfer that reached the node leading its account's shard.
    async fn transfer_here(&self, request: TransferRequest) -> Result<TransferOutcome, RouteError> {
        match self.hook.get() {
            Some(hook) => hook.transfer_here(request).await,
            None => crate::saga::transfer(self, request).await,
        }
    }

    /// A shard's next deadlines from this node's replica: the earliest pending-transfer
    /// expiry, running-saga deadline and business-day cut-off (the timers re-arm from
    /// replicated state after every election).
    pub fn next_deadlines(&self, shard: ShardId) -> Deadlines {
        let Some(group) = self.group(self.group_of(shard)) else {
            return Deadlines::default();
        };
        let state = group.reader.read();
        Deadlines {
            expiry: state.ledger.next_expiry_ms(),
            saga: state.ledger.next_saga_deadline_ms(),
            cutoff: state.ledger.next_cutoff_ms(),
        }
    }

    /// Running sagas whose home is `shard`, in this node's replica.
    pub fn running_saga_count(&self, shard: ShardId) -> usize {
        self.group(self.group_of(shard)).map_or(0, |group| {
            group.reader.read().ledger.running_sagas().count()
        })
    }

    /// `(proposals, commands)` the shard's batcher proposed on this node.
    pub fn batched(&self, shard: ShardId) -> (u64, u64) {
        self.group(self.group_of(shard))
            .map_or((0, 0), |group| group.batcher.counts())
    }

    /// Commands waiting in the shard's ShardActor queue on this node.
    pub fn queued(&self, shard: ShardId) -> usize {
        self.group(self.group_of(shard))
            .map_or(0, |group| group.batcher.queued())
    }

    /// The leader clock's now, in ms (never goes backwards on this node).
    pub fn now_ms(&self) -> u64 {
        self.clock.stamp()
    }

    /// Up to `limit` running sagas whose home is `shard`, from this node's replica (the
    /// home leader's sweep reads them; a stale view only means a saga driven twice, which is
    /// harmless).
    pub fn running_sagas(&self, shard: ShardId, limit: usize) -> Vec<ledger::Saga> {
        let Some(group) = self.group(self.group_of(shard)) else {
            return Vec::new();
        };
        let state = group.reader.read();
        state.ledger.running_sagas().take(limit).cloned().collect()
    }

    /// Whether this node leads the group serving `shard`.
    pub fn leads(&self, shard: ShardId) -> bool {
        self.group(self.group_of(shard))
            .is_some_and(|group| self.leader_of(group) == Some(self.node_id))
    }

    /// The shard owning an account.
    pub fn shard_of(&self, account: &AccountId) -> ShardId {
        ledger::shard_of(account, self.shard_count)
    }

    /// The Raft group serving a shard.
    pub fn group_of(&self, shard: ShardId) -> u32 {
        let count = u32::try_from(self.groups.len()).expect("group count fits u32");
        shard.0 % count
    }

    fn group(&self, group: u32) -> Option<&Group> {
        self.groups.get(usize::try_from(group).ok()?)
    }

    fn leader_of(&self, group: &Group) -> Option<NodeId> {
        group.raft.metrics().borrow().current_leader
    }

    /// Routes a write to the shard's leader and returns the ledger's outcome.
    pub async fn write(&self, shard: ShardId, command: Command) -> Result<Outcome, RouteError> {
        let group_id = self.group_of(shard);
        let group = self
            .group(group_id)
            .ok_or_else(|| RouteError::Unavailable("no such group".into()))?;
        let idempotent = is_idempotent(&command);
        let request = ShardRequest {
            shard,
            at_ms: 0,
            command,
        };
        let mut target = self.leader_of(group);
        let mut last_error = RouteError::Unavailable("no leader elected".into());
        for _ in 0..ROUTE_ATTEMPTS_MAX {
            let result = match target {
                Some(node) if node == self.node_id => {
                    self.write_local(group_id, request.clone()).await
                }
                Some(node) => {
                    self.forward(
                        node,
                        Request::Write {
                            group: group_id,
                            request: request.clone(),
                        },
                    )
                    .await
                }
                None => Err(RouteError::NotLeader { leader: None }),
            };
            match result {
                Ok(Response::Write(Ok(outcome))) => return Ok(outcome),
                Ok(Response::Write(Err(RouteError::NotLeader { leader: Some(hint) })))
                    if Some(hint) != target =>
                {
                    target = Some(hint);
                    continue;
                }
                Ok(Response::Write(Err(error))) | Err(error) => {
                    let overloaded = matches!(error, RouteError::Overloaded);
                    if overloaded || (!idempotent && !matches!(error, RouteError::NotLeader { .. }))
                    {
                        return Err(error);
                    }
                    last_error = error;
                }
                Ok(other) => {
                    last_error = RouteError::Unavailable(format!("unexpected answer {other:?}"))
                }
            }
            tokio::time::sleep(ROUTE_BACKOFF).await;
            target = self.leader_of(group);
        }
        Err(last_error)
    }

    /// Routes a linearizable read to the shard's leader.
    pub async fn read(&self, shard: ShardId, query: Query) -> Result<Answer, RouteError> {
        self.read_at(shard, query).await.map(|(answer, _)| answer)
    }

    /// Routes a linearizable read to the shard's leader; also returns the applied log index of
    /// the state that answered (for clients checking their own view, like the chaos checker).
    pub async fn read_at(&self, shard: ShardId, query: Query) -> Result<(Answer, u64), RouteError> {
        let group_id = self.group_of(shard);
        let group = self
            .group(group_id)
            .ok_or_else(|| RouteError::Unavailable("no such group".into()))?;
        let mut target = self.leader_of(group);
        let mut last_error = RouteError::Unavailable("no leader elected".into());
        for _ in 0..ROUTE_ATTEMPTS_MAX {
            let result = match target {
                Some(node) if node == self.node_id => {
                    Ok(Response::Read(self.read_local(group_id, &query).await))
                }
                Some(node) => {
                    self.forward(
                        node,
                        Request::Read {
                            group: group_id,
                            query: query.clone(),
                        },
                    )
                    .await
                }
                None => Err(RouteError::NotLeader { leader: None }),
            };
            match result {
                Ok(Response::Read(Ok(answer))) => return Ok(answer),
                Ok(Response::Read(Err(RouteError::NotLeader { leader: Some(hint) })))
                    if Some(hint) != target =>
                {
                    target = Some(hint);
                    continue;
                }
                Ok(Response::Read(Err(error))) | Err(error) => last_error = error,
                Ok(other) => {
                    last_error = RouteError::Unavailable(format!("unexpected answer {other:?}"))
                }
            }
            tokio::time::sleep(ROUTE_BACKOFF).await;
            target = self.leader_of(group);
        }
        Err(last_error)
    }

    async fn forward(&self, node: NodeId, request: Request) -> Result<Response, RouteError> {
        let client = self
            .peers
            .get(node)
            .ok_or_else(|| RouteError::Unavailable(format!("unknown node {node}")))?;
        client
            .call(request, FORWARD_TIMEOUT)
            .await
            .map_err(|e| RouteError::Unavailable(e.to_string()))
    }

    /// Proposes on this node, which believes it leads the group. Stamps the leader's time.
    async fn write_local(
        &self,
        group_id: u32,
        request: ShardRequest,
    ) -> Result<Response, RouteError> {
        let group = self
            .group(group_id)
            .ok_or_else(|| RouteError::Unavailable("no such group".into()))?;
        // A write would refresh the followers' lease: held until the handover ends.
        group.handover.wait().await;
        if crate::batcher::batchable(&request.command) {
            let result = group.batcher.submit(request.shard, request.command).await;
            return Ok(Response::Write(result));
        }
        // Saga steps sent together (`saga::transfers`) join the group commit one by one.
        let mut request = match request.command {
            Command::Many(commands)
                if !commands.is_empty()
                    && commands.len() <= ledger::limits::BATCH_MAX
                    && commands.iter().all(crate::batcher::batchable) =>
            {
                let result = group.batcher.submit_many(request.shard, commands).await;
                return Ok(Response::Write(result.map(Outcome::Many)));
            }
            command => ShardRequest { command, ..request },
        };
        request.at_ms = self.clock.stamp();
        let result = match group.raft.client_write(request).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(RouteError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(error) => Err(RouteError::Unavailable(error.to_string())),
        };
        Ok(Response::Write(result))
    }

    /// Serves a read on this node after confirming leadership with a quorum (read index).
    async fn read_local(&self, group_id: u32, query: &Query) -> Result<(Answer, u64), RouteError> {
        let group = self
            .group(group_id)
            .ok_or_else(|| RouteError::Unavailable("no such group".into()))?;
        // A read index round refreshes the followers' lease too.
        group.handover.wait().await;
        match group.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                return Err(RouteError::NotLeader {
                    leader: forward.leader_id,
                });
            }
            Err(error) => return Err(RouteError::Unavailable(error.to_string())),
        }
        let (startup_term, startup_last) = group.startup;
        let resumed = group.raft.metrics().borrow().current_term == startup_term;
        if resumed && startup_last > 0 {
            let waited = group
                .raft
                .wait(Some(FORWARD_TIMEOUT))
                .applied_index_at_least(Some(startup_last), "resumed leader read")
                .await;
            if waited.is_err() {
                return Err(RouteError::Unavailable(
                    "catching up with the log after a restart".into(),
                ));
            }
        }
        let state = group.reader.read();
        let applied = state.last_applied.map_or(0, |id| id.index);
        Ok((state.ledger.query(query), applied))
    }

    /// Answers whether a peer is reachable now.
    pub async fn ping(&self, node: NodeId) -> bool {
        let Some(client) = self.peers.get(node) else {
            return false;
        };
        matches!(
            client.call(Request::Ping, PING_TIMEOUT).await,
            Ok(Response::Pong { .. })
        )
    }

    /// Initialises every group once a majority of the configured members answers. A group is
    /// initialised by its preferred leader (`preferred[group]`), which then wins its first
    /// election, so leaders start spread over the nodes; the other members step in after
    /// `BOOTSTRAP_DEFER` if the group is still uninitialised (its preferred node is down).
    /// Safe to run on every node: openraft refuses a second initialisation, and identical
    /// initial memberships proposed by several nodes resolve by election.
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, BasicNode>) {
        let preferred = self.preferred.clone();
        let majority = members.len() / 2 + 1;
        loop {
            let mut reachable = 1;
            for node in members.keys().filter(|node| **node != self.node_id) {
                if self.ping(*node).await {
                    reachable += 1;
                }
            }
            if reachable >= majority {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let mine = |index: usize| preferred.get(index) == Some(&self.node_id);
        for deferred in [false, true] {
            if deferred {
                tokio::time::sleep(BOOTSTRAP_DEFER).await;
            }
            for (index, group) in self.groups.iter().enumerate() {
                if mine(index) == deferred {
                    continue;
                }
                match group.raft.is_initialized().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(_) => return,
                }
                match group.raft.initialize(members.clone()).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(error) => tracing::warn!(%error, "initialising the Raft group failed"),
                }
            }
        }
    }
}

impl Handler for Shards {
    async fn handle(self: Arc<Self>, request: Request) -> Response {
        let unknown = |group: u32| Response::Failed(format!("unknown group {group}"));
        match request {
            Request::Ping => Response::Pong { node: self.node_id },
            Request::Append { group, rpc } => match self.group(group) {
                Some(g) => Response::Append(g.raft.append_entries(rpc).await),
                None => unknown(group),
            },
            Request::Vote { group, rpc } => match self.group(group) {
                Some(g) => Response::Vote(g.raft.vote(rpc).await),
                None => unknown(group),
            },
            Request::Snapshot { group, rpc } => match self.group(group) {
                Some(g) => Response::Snapshot(g.raft.install_snapshot(rpc).await),
                None => unknown(group),
            },
            Request::Write { group, request } => match self.write_local(group, request).await {
                Ok(response) => response,
                Err(error) => Response::Write(Err(error)),
            },
            Request::Read { group, query } => Response::Read(self.read_local(group, &query).await),
            Request::Transfer { request } => {
                // Served here only (no second hop): a stale leader says so and the caller retries.
                let owner_shard = self.shard_of(crate::saga::owner(&request));
                if !self.leads(owner_shard) {
                    let leader = self
                        .group(self.group_of(owner_shard))
                        .and_then(|g| self.leader_of(g));
                    return Response::Transfer(Err(RouteError::NotLeader { leader }));
                }
                Response::Transfer(self.transfer_here(request).await)
            }
        }
    }
}
