//! Account actors: one per active account, on the node that leads the account's shard.
//!
//! An account actor is the one door to its account for single transfers: it takes them in
//! arrival order, proposes them (up to `ACCOUNT_INFLIGHT_MAX` at once, so the shard's group
//! commit still batches them), keeps the account's hot state (the balance and the daily-limit
//! room in the last answer, and the debits it has in flight), and answers each caller with the ledger's own answer —
//! never its own guess, so an actor can be stopped, restarted or moved at any moment without
//! changing an answer.
//!
//! **Pre-validation** uses the hot state to schedule, never to answer: a debit that the last
//! known balance, or the last known room under the payer's daily limit (`ledger::daily`),
//! cannot cover beside the debits already in flight is not proposed beside them;
//! it (and everything that arrived after it) waits until they are answered, and is then
//! proposed alone, so the ledger decides it on the settled balance. A rejection decided from
//! the cache would be recorded and replayed forever, and the cache can miss a credit another
//! shard or a new leader has already acknowledged — so the actor never rejects by itself. Its mailbox is bounded
//! (`ACCOUNT_MAILBOX_MAX`, counted at the door): a flood gets `overloaded` (HTTP 429) instead
//! of an unbounded queue. It stops when idle (`ACCOUNT_IDLE`) and when its node no longer
//! leads the shard; the next transfer starts a fresh actor wherever the leader now is.
//!
//! [`Accounts`] is the node's registry: it finds or starts the actor of a transfer's account
//! (bounded by `RESIDENT_ACCOUNTS_MAX`), forwards transfers of shards this node does not lead
//! to their leader's registry, and fences a shard whose actors crash in a loop.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cluster::saga::owner;
use cluster::RouteError;
use futures::future::BoxFuture;
use ledger::{AccountId, ShardId, TransferOutcome, TransferRequest};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::limits::{
    ACCOUNT_IDLE, ACCOUNT_INFLIGHT_MAX, ACCOUNT_MAILBOX_MAX, ACCOUNT_TICK, CRASHES_MAX,
    CRASH_WINDOW, RESIDENT_ACCOUNTS_MAX,
};

/// What the actor layer needs from the cluster. `cluster::Shards` provides it in a node
/// (`crate::ShardsBackend`); tests give fakes.
pub trait Backend: Send + Sync + 'static {
    fn shard_of(&self, account: &AccountId) -> ShardId;
    /// Whether this node leads the shard's Raft group now.
    fn leads(&self, shard: ShardId) -> bool;
    /// Runs one transfer to its answer (locally coordinated).
    fn run(
        &self,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>>;
    /// Hands a transfer to the registry of the node leading `shard` (one hop).
    fn forward(
        &self,
        shard: ShardId,
        request: TransferRequest,
    ) -> BoxFuture<'static, Result<TransferOutcome, RouteError>>;
}

type Reply = oneshot::Sender<Result<TransferOutcome, RouteError>>;

/// The one message enum of the account actor.
pub enum AccountMsg {
    /// A transfer of this account, in arrival order.
    Transfer {
        request: TransferRequest,
        reply: Reply,
    },
    /// One of this actor's proposals answered (frees an in-flight slot and its debit,
    /// refreshes the balance, and the daily room when this account paid).
    Answered {
        balance: Option<i64>,
        room: Option<Option<u64>>,
        debit: u64,
    },
    /// Idle and leadership check.
    Tick,
}

/// Bounds and timings of account actors (the defaults are `crate::limits`; tests shrink them).
#[derive(Clone, Copy, Debug)]
pub struct AccountLimits {
    pub mailbox_max: usize,
    pub inflight_max: usize,
    pub resident_max: usize,
    pub idle: Duration,
    pub tick: Duration,
    pub crashes_max: usize,
    pub crash_window: Duration,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            mailbox_max: ACCOUNT_MAILBOX_MAX,
            inflight_max: ACCOUNT_INFLIGHT_MAX,
            resident_max: RESIDENT_ACCOUNTS_MAX,
            idle: ACCOUNT_IDLE,
            tick: ACCOUNT_TICK,
            crashes_max: CRASHES_MAX,
            crash_window: CRASH_WINDOW,
        }
    }
}

struct AccountActor;

pub struct AccountArgs {
    id: AccountId,
    shard: ShardId,
    depth: Arc<AtomicUsize>,
    registry: Arc<Registry>,
}

pub struct AccountState {
    id: AccountId,
    shard: ShardId,
    /// Accepted at the door and not yet proposed (mailbox + `waiting`).
    depth: Arc<AtomicUsize>,
    registry: Arc<Registry>,
    inflight: usize,
    waiting: VecDeque<(TransferRequest, Reply)>,
    last_active: Instant,
    /// The account's balance in the last answer seen (a cache, never used to answer).
    balance: Option<i64>,
    /// What the account could still send today under its daily limit, in the last answer in
    /// which it paid (`None`: not seen yet, or no daily limit). A cache, like `balance`.
    room: Option<u64>,
    /// Amounts this account pays in the transfers in flight.
    inflight_debit: u64,
}

impl AccountState {
    /// The amount this account pays in `request` (0 when it is not the payer).
    fn debit_of(&self, request: &TransferRequest) -> u64 {
        if request.from == self.id {
            request.amount
        } else {
            0
        }
    }

    /// Whether `request` may be proposed now: a free in-flight slot, and either nothing in
    /// flight or a hot state that covers its debit beside the debits in flight, in balance and
    /// in daily room (an unknown balance or room covers anything: the ledger decides).
    fn may_propose(&self, request: &TransferRequest) -> bool {
        if self.inflight >= self.registry.limits.inflight_max {
            return false;
        }
        if self.inflight == 0 {
            return true;
        }
        let debit = self.debit_of(request);
        if debit == 0 {
            return true;
        }
        let covers = |have: i128| have - i128::from(self.inflight_debit) >= i128::from(debit);
        self.balance
            .is_none_or(|balance| covers(i128::from(balance)))
            && self.room.is_none_or(|room| covers(i128::from(room)))
    }
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AccountMsg>,
        args: AccountArgs,
    ) -> Result<AccountState, ActorProcessingErr> {
        myself.send_interval(args.registry.limits.tick, || AccountMsg::Tick);
        Ok(AccountState {
            id: args.id,
            shard: args.shard,
            depth: args.depth,
            registry: args.registry,
            inflight: 0,
            waiting: VecDeque::new(),
            last_active: Instant::now(),
            balance: None,
            room: None,
            inflight_debit: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountMsg>,
        message: AccountMsg,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AccountMsg::Transfer { request, reply } => {
                state.last_active = Instant::now();
                if !state.registry.backend.leads(state.shard) {
                    // No answer from a stale actor: the caller retries where the leader is.
                    state.depth.fetch_sub(1, Ordering::AcqRel);
                    let _ = reply.send(Err(RouteError::NotLeader { leader: None }));
                    myself.stop(Some("leadership moved".into()));
                } else if state.waiting.is_empty() && state.may_propose(&request) {
                    propose(&myself, state, request, reply);
                } else {
                    // Arrival order: nothing overtakes a transfer that waits.
                    state.waiting.push_back((request, reply));
                }
            }
            AccountMsg::Answered {
                balance,
                room,
                debit,
            } => {
                if state.inflight == 0 {
                    return Err(
                        format!("account {}: an answer with nothing in flight", state.id).into(),
                    );
                }
                state.inflight -= 1;
                state.inflight_debit =
                    state.inflight_debit.checked_sub(debit).ok_or_else(|| {
                        format!("account {}: more debit answered than in flight", state.id)
                    })?;
                state.balance = balance.or(state.balance);
                if let Some(room) = room {
                    state.room = room;
                }
                while state
                    .waiting
                    .front()
                    .is_some_and(|(request, _)| state.may_propose(request))
                {
                    if let Some((request, reply)) = state.waiting.pop_front() {
                        propose(&myself, state, request, reply);
                    }
                }
            }
            AccountMsg::Tick => {
                let idle = state.inflight == 0
                    && state.waiting.is_empty()
                    && state.last_active.elapsed() >= state.registry.limits.idle;
                if idle {
                    myself.stop(Some("idle".into()));
                } else if state.inflight == 0
                    && state.waiting.is_empty()
                    && !state.registry.backend.leads(state.shard)
                {
                    myself.stop(Some("leadership moved".into()));
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<AccountMsg>,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        state.registry.forget(&state.id, myself.get_id());
        for (_, reply) in state.waiting.drain(..) {
            state.depth.fetch_sub(1, Ordering::AcqRel);
            let _ = reply.send(Err(RouteError::NotLeader { leader: None }));
        }
        Ok(())
    }
}

/// Starts one proposal; its answer goes to the caller and back to the actor.
fn propose(
    myself: &ActorRef<AccountMsg>,
    state: &mut AccountState,
    request: TransferRequest,
    reply: Reply,
) {
    state.depth.fetch_sub(1, Ordering::AcqRel);
    state.inflight += 1;
    let debit = state.debit_of(&request);
    state.inflight_debit = state.inflight_debit.saturating_add(debit);
    let run = state.registry.backend.run(request.clone());
    let myself = myself.clone();
    let id = state.id.clone();
    tokio::spawn(async move {
        let result = run.await;
        let (balance, room) = match &result {
            Ok(TransferOutcome::Accepted(a)) if request.from == id => {
                (Some(a.from_balance), Some(a.daily_room))
            }
            Ok(TransferOutcome::Accepted(a)) if request.to == id => (Some(a.to_balance), None),
            _ => (None, None),
        };
        let _ = reply.send(result);
        let _ = myself.send_message(AccountMsg::Answered {
            balance,
            room,
            debit,
        });
    });
}

struct Resident {
    actor: ActorRef<AccountMsg>,
    depth: Arc<AtomicUsize>,
}

struct Registry {
    backend: Arc<dyn Backend>,
    limits: AccountLimits,
    residents: Mutex<HashMap<AccountId, Resident>>,
    /// Shards fenced after a crash loop, and the recent failures per shard.
    fenced: Mutex<HashMap<ShardId, Vec<Instant>>>,
    fenced_any: AtomicBool,
    supervisor: Mutex<Option<ActorCell>>,
}

impl Registry {
    fn forget(&self, id: &AccountId, actor: ractor::ActorId) {
        let mut residents = self
            .residents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if residents.get(id).is_some_and(|r| r.actor.get_id() == actor) {
            residents.remove(id);
        }
    }

    fn is_fenced(&self, shard: ShardId) -> bool {
        if !self.fenced_any.load(Ordering::Acquire) {
            return false;
        }
        let fenced = self.fenced.lock().unwrap_or_else(PoisonError::into_inner);
        fenced
            .get(&shard)
            .is_some_and(|failures| failures.len() >= self.limits.crashes_max)
    }

    /// Counts a failure of an actor of `shard`; true when the shard is now fenced.
    fn failed(&self, shard: ShardId) -> bool {
        let mut fenced = self.fenced.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = fenced.entry(shard).or_default();
        if failures.len() >= self.limits.crashes_max {
            return true;
        }
        failures.retain(|at| at.elapsed() < self.limits.crash_window);
        failures.push(Instant::now());
        let loop_detected = failures.len() >= self.limits.crashes_max;
        if loop_detected {
            self.fenced_any.store(true, Ordering::Release);
        }
        loop_detected
    }
}

/// Parent of every account actor: a crashed actor is forgotten (the next transfer of its
/// account starts a fresh one — the restart), and a crash loop fences the shard.
struct AccountSupervisor;

impl Actor for AccountSupervisor {
    type Msg = ();
    type State = Arc<Registry>;
    type Arguments = Arc<Registry>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        registry: Arc<Registry>,
    ) -> Result<Arc<Registry>, ActorProcessingErr> {
        Ok(registry)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        registry: &mut Arc<Registry>,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            let found = {
                let residents = registry
                    .residents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                residents
                    .iter()
                    .find(|(_, r)| r.actor.get_id() == cell.get_id())
                    .map(|(id, r)| (id.clone(), r.actor.get_id()))
            };
            let Some((id, actor)) = found else {
                return Ok(());
            };
            registry.forget(&id, actor);
            let shard = registry.backend.shard_of(&id);
            tracing::error!(account = %id, %error, "account actor failed; restarting on demand");
            if registry.failed(shard) {
                tracing::error!(
                    shard = shard.0,
                    "account actors of this shard crash in a loop; the shard stops serving here"
                );
            }
        }
        Ok(())
    }
}

/// Counts for the monitor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountStats {
    pub resident: usize,
    /// Transfers accepted by account actors and not yet proposed, over all of them.
    pub mailbox_depth: usize,
    pub fenced_shards: usize,
}

/// The node's account actors.
#[derive(Clone)]
pub struct Accounts {
    registry: Arc<Registry>,
}

impl Accounts {
    pub async fn start(backend: Arc<dyn Backend>, limits: AccountLimits) -> Accounts {
        let registry = Arc::new(Registry {
            backend,
            limits,
            residents: Mutex::new(HashMap::new()),
            fenced: Mutex::new(HashMap::new()),
            fenced_any: AtomicBool::new(false),
            supervisor: Mutex::new(None),
        });
        match Actor::spawn(None, AccountSupervisor, registry.clone()).await {
            Ok((supervisor, _)) => {
                *registry
                    .supervisor
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(supervisor.get_cell());
            }
            Err(error) => tracing::error!(%error, "the account supervisor did not start"),
        }
        Accounts { registry }
    }

    /// Runs a transfer through its account's actor, on whichever node leads the account's
    /// shard (forwarded once if that is not this node).
    pub async fn transfer(&self, request: TransferRequest) -> Result<TransferOutcome, RouteError> {
        let shard = self.registry.backend.shard_of(owner(&request));
        if self.registry.backend.leads(shard) {
            match self.transfer_here(request.clone()).await {
                Err(RouteError::NotLeader { .. }) => {}
                other => return other,
            }
        }
        self.registry.backend.forward(shard, request).await
    }

    /// Runs a transfer through its account's actor on this node, which must lead the
    /// account's shard (else `NotLeader`).
    pub async fn transfer_here(
        &self,
        request: TransferRequest,
    ) -> Result<TransferOutcome, RouteError> {
        let account = owner(&request).clone();
        let shard = self.registry.backend.shard_of(&account);
        if self.registry.is_fenced(shard) {
            return Err(RouteError::Unavailable(format!(
                "shard {} is fenced on this node after its actors crashed in a loop",
                shard.0
            )));
        }
        if !self.registry.backend.leads(shard) {
            return Err(RouteError::NotLeader { leader: None });
        }
        // Twice at most: an actor that stopped between lookup and send is replaced once.
        for _ in 0..2 {
            let (actor, depth) = self.resident(&account, shard).await?;
            if depth.fetch_add(1, Ordering::AcqRel) >= self.registry.limits.mailbox_max {
                depth.fetch_sub(1, Ordering::AcqRel);
                return Err(RouteError::Overloaded);
            }
            let (reply, answer) = oneshot::channel();
            let message = AccountMsg::Transfer {
                request: request.clone(),
                reply,
            };
            match actor.send_message(message) {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Err(RouteError::Unavailable("the account actor stopped".into()))
                    })
                }
                Err(_) => {
                    depth.fetch_sub(1, Ordering::AcqRel);
                    self.registry.forget(&account, actor.get_id());
                }
            }
        }
        Err(RouteError::Unavailable(
            "the account actor keeps stopping".into(),
        ))
    }

    /// The account's actor, started if absent (bounded).
    async fn resident(
        &self,
        account: &AccountId,
        shard: ShardId,
    ) -> Result<(ActorRef<AccountMsg>, Arc<AtomicUsize>), RouteError> {
        {
            let residents = self
                .registry
                .residents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = residents.get(account) {
                return Ok((r.actor.clone(), r.depth.clone()));
            }
            if residents.len() >= self.registry.limits.resident_max {
                return Err(RouteError::Overloaded);
            }
        }
        let supervisor = self
            .registry
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| RouteError::Unavailable("no account supervisor".into()))?;
        let depth = Arc::new(AtomicUsize::new(0));
        let args = AccountArgs {
            id: account.clone(),
            shard,
            depth: depth.clone(),
            registry: self.registry.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, AccountActor, args, supervisor)
            .await
            .map_err(|e| RouteError::Unavailable(format!("starting an account actor: {e}")))?;
        let mut residents = self
            .registry
            .residents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another caller may have started one meanwhile: keep the first, stop ours.
        if let Some(r) = residents.get(account) {
            actor.stop(None);
            return Ok((r.actor.clone(), r.depth.clone()));
        }
        residents.insert(
            account.clone(),
            Resident {
                actor: actor.clone(),
                depth: depth.clone(),
            },
        );
        Ok((actor, depth))
    }

    pub fn stats(&self) -> AccountStats {
        let residents = self
            .registry
            .residents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fenced = self
            .registry
            .fenced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        AccountStats {
            resident: residents.len(),
            mailbox_depth: residents
                .values()
                .map(|r| r.depth.load(Ordering::Acquire))
                .sum(),
            fenced_shards: fenced
                .values()
                .filter(|f| f.len() >= self.registry.limits.crashes_max)
                .count(),
        }
    }

    /// Sends a raw message to an account's actor if resident (tests: fault injection).
    #[doc(hidden)]
    pub fn send_raw(&self, account: &AccountId, message: AccountMsg) -> bool {
        let residents = self
            .registry
            .residents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        residents
            .get(account)
            .is_some_and(|r| r.actor.send_message(message).is_ok())
    }

    /// Stops every account actor (graceful stop of the node).
    pub fn stop_all(&self) {
        let residents = self
            .registry
            .residents
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for r in residents.values() {
            r.actor.stop(Some("node stopping".into()));
        }
    }
}
