//! Group commit at the proposal level, by each group's **ShardActor** (ractor): single
//! transfers and saga steps arriving at a group's leader are gathered into one log entry (`Command::Batch` when all are transfers, else
//! `Command::Many`), so one Raft round (one entry, one fsync per replica, one apply call)
//! carries many of them. Each applies on its own, in order, exactly as if proposed alone; each
//! caller gets its own command's answer.
//!
//! Batches form naturally: while `PROPOSALS_INFLIGHT_MAX` proposals are in flight, new
//! commands wait in the actor's queue and the next proposal takes all of them (up to
//! `BATCH_MAX`).
//! Under light load every command goes out at once, alone; under heavy load batches grow.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use consensus::{Raft, ShardRequest};
use ledger::limits::BATCH_MAX;
use ledger::{Command, Outcome, ShardId};
use openraft::error::{ClientWriteError, RaftError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::limits::{
    BATCH_QUEUE_MAX, PROPOSALS_INFLIGHT_MAX, SHARD_ACTOR_RESTARTS_MAX, SHARD_ACTOR_RESTART_WINDOW,
};
use crate::rpc::RouteError;

/// The leader's clock for stamping commands: never goes backwards.
#[derive(Default)]
pub struct Clock {
    last_ms: AtomicU64,
}

impl Clock {
    pub fn stamp(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let previous = self.last_ms.fetch_max(now, Ordering::AcqRel);
        now.max(previous)
    }
}

type Reply = oneshot::Sender<Result<Outcome, RouteError>>;

pub struct Item {
    shard: ShardId,
    command: Command,
    reply: Reply,
    /// Its place in the bounded queue, given back when it is proposed or dropped (also when a
    /// failed actor's queue and mailbox are dropped).
    admitted: Option<Admitted>,
}

/// One place in a group's queue bound (`BATCH_QUEUE_MAX`), held from the door to the proposal.
struct Admitted(Arc<AtomicUsize>);

impl Admitted {
    /// Takes a place unless the queue is full.
    fn take(depth: &Arc<AtomicUsize>) -> Option<Admitted> {
        depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < BATCH_QUEUE_MAX).then_some(now + 1)
            })
            .ok()
            .map(|_| Admitted(depth.clone()))
    }
}

impl Admitted {
    /// Takes `count` places at once, or none when they do not all fit.
    fn take_many(depth: &Arc<AtomicUsize>, count: usize) -> Option<Vec<Admitted>> {
        depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(count)
                    .filter(|after| *after <= BATCH_QUEUE_MAX)
            })
            .ok()
            .map(|_| (0..count).map(|_| Admitted(depth.clone())).collect())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Commands that may share a log entry with others: each is applied on its own and answers on
/// its own (account openings, transfers and saga steps). Everything else is proposed alone.
pub fn batchable(command: &Command) -> bool {
    matches!(
        command,
        Command::CreateAccount(_)
            | Command::Transfer(_)
            | Command::SagaBegin { .. }
            | Command::SagaFinish { .. }
            | Command::Hold(_)
            | Command::PostHold(_)
            | Command::VoidHold(_)
            | Command::Credit(_)
            | Command::CancelCredit(_)
            | Command::ReversalBegin { .. }
            | Command::SagaDecide { .. }
            | Command::SagaClose { .. }
            | Command::ClaimReversal { .. }
            | Command::SettleReversal { .. }
    )
}

/// The ShardActor's one message enum.
pub enum ShardMsg {
    /// A command to propose with the next batch (counted at the door by [`Batcher::submit`]).
    Submit(Box<Item>),
    /// One of this actor's proposals answered: a slot is free.
    Proposed,
}

/// The ShardActor of one Raft group (ractor): the queue of commands waiting to be proposed on
/// this node while it leads the group, and the proposals in flight. At most
/// `PROPOSALS_INFLIGHT_MAX` proposals are in flight; everything arriving meanwhile waits in
/// `queue` and the next free slot proposes all of it (up to `BATCH_MAX`) as one entry. The queue
/// is bounded at the door (`BATCH_QUEUE_MAX`): past it the caller gets `overloaded` at once.
///
/// Its state is only the queue and a count, so a crash loses nothing replicated: the queued
/// callers' replies are dropped with the queue (they see `unavailable` and retry, and every
/// command is idempotent), their places in the bound are given back as their items drop,
/// proposals already handed to Raft still answer their callers, and the next submit starts a
/// fresh actor.
struct ShardActor;

pub struct ShardArgs {
    raft: Raft,
    clock: Arc<Clock>,
    counts: Arc<Counts>,
}

pub struct ShardState {
    raft: Raft,
    clock: Arc<Clock>,
    counts: Arc<Counts>,
    queue: VecDeque<Item>,
    inflight: usize,
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            raft: args.raft,
            clock: args.clock,
            counts: args.counts,
            queue: VecDeque::new(),
            inflight: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Submit(item) => state.queue.push_back(*item),
            ShardMsg::Proposed => {
                state.inflight = state
                    .inflight
                    .checked_sub(1)
                    .ok_or("a proposal answered with none in flight")?;
            }
        }
        // Waiting for a slot is what lets the next batch grow.
        while state.inflight < PROPOSALS_INFLIGHT_MAX && !state.queue.is_empty() {
            let take = state.queue.len().min(BATCH_MAX);
            let mut batch: Vec<Item> = state.queue.drain(..take).collect();
            for item in &mut batch {
                item.admitted = None;
            }
            state.inflight += 1;
            state.counts.proposals.fetch_add(1, Ordering::Relaxed);
            state
                .counts
                .commands
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let (raft, clock, myself) = (state.raft.clone(), state.clock.clone(), myself.clone());
            tokio::spawn(async move {
                propose(&raft, &clock, batch).await;
                let _ = myself.send_message(ShardMsg::Proposed);
            });
        }
        Ok(())
    }
}

/// The handle to one group's ShardActor: starts it on first use, and again after it stopped
/// (a ShardActor stops only by failing). `SHARD_ACTOR_RESTARTS_MAX` restarts within
/// `SHARD_ACTOR_RESTART_WINDOW` fence the group on this node: every write is refused
/// `unavailable` from then on (a shard stops serving rather than serving wrong).
pub struct Batcher {
    raft: Raft,
    clock: Arc<Clock>,
    actor: std::sync::Mutex<Option<ActorRef<ShardMsg>>>,
    /// Held while starting an actor, so one caller starts it.
    starting: tokio::sync::Mutex<()>,
    /// Whether an actor was ever started (any later start is a restart).
    started: AtomicBool,
    restarts: std::sync::Mutex<VecDeque<Instant>>,
    fenced: AtomicBool,
    counts: Arc<Counts>,
    depth: Arc<AtomicUsize>,
}

/// Proposals made and commands they carried (for the monitor's commands-per-proposal).
#[derive(Default)]
struct Counts {
    proposals: AtomicU64,
    commands: AtomicU64,
}

impl Batcher {
    /// The handle of a group's ShardActor (started by the first submit).
    pub fn start(raft: Raft, clock: Arc<Clock>) -> Batcher {
        Batcher {
            raft,
            clock,
            actor: std::sync::Mutex::new(None),
            starting: tokio::sync::Mutex::new(()),
            started: AtomicBool::new(false),
            restarts: std::sync::Mutex::new(VecDeque::new()),
            fenced: AtomicBool::new(false),
            counts: Arc::new(Counts::default()),
            depth: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `(proposals, commands)` this group's ShardActor has proposed since the node started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.proposals.load(Ordering::Relaxed),
            self.counts.commands.load(Ordering::Relaxed),
        )
    }

    /// Commands waiting for a proposal now.
    pub fn queued(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Whether the ShardActor failed too often and this node refuses the group's writes.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Proposes one [`batchable`] command as part of the next batch and waits for its answer.
    pub async fn submit(&self, shard: ShardId, command: Command) -> Result<Outcome, RouteError> {
        debug_assert!(batchable(&command));
        if self.is_fenced() {
            return Err(fenced());
        }
        // Bounded at the door: a full queue answers `overloaded` without queueing.
        let Some(admitted) = Admitted::take(&self.depth) else {
            return Err(RouteError::Overloaded);
        };
        let answer = self.enqueue(shard, command, admitted).await?;
        answered(answer).await
    }

    /// Hands one admitted command to the ShardActor; its answer arrives on the receiver.
    async fn enqueue(
        &self,
        shard: ShardId,
        command: Command,
        admitted: Admitted,
    ) -> Result<oneshot::Receiver<Result<Outcome, RouteError>>, RouteError> {
        let (reply, answer) = oneshot::channel();
        let item = Box::new(Item {
            shard,
            command,
            reply,
            admitted: Some(admitted),
        });
        self.send(item).await?;
        Ok(answer)
    }

    /// Proposes several [`batchable`] commands (a `Command::Many` sent by a coordinator that
    /// runs many sagas in lockstep) as part of the next batches, and waits for their answers,
    /// in order. They are admitted together or not at all (`overloaded`), so the queue bound
    /// holds for them as for single commands; each is then proposed and answered as if alone.
    pub async fn submit_many(
        &self,
        shard: ShardId,
        commands: Vec<Command>,
    ) -> Result<Vec<Outcome>, RouteError> {
        debug_assert!(commands.iter().all(batchable));
        if self.is_fenced() {
            return Err(fenced());
        }
        let Some(places) = Admitted::take_many(&self.depth, commands.len()) else {
            return Err(RouteError::Overloaded);
        };
        let mut answers = Vec::with_capacity(commands.len());
        for (command, admitted) in commands.into_iter().zip(places) {
            answers.push(self.enqueue(shard, command, admitted).await?);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answered(answer).await?);
        }
        Ok(outcomes)
    }

    fn running(&self) -> Option<ActorRef<ShardMsg>> {
        self.actor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Hands an item to the running ShardActor, starting one if there is none (or it stopped).
    async fn send(&self, item: Box<Item>) -> Result<(), RouteError> {
        let Some(item) = self.offer(item)? else {
            return Ok(());
        };
        let _starting = self.starting.lock().await;
        // Another caller may have started one meanwhile.
        let Some(item) = self.offer(item)? else {
            return Ok(());
        };
        if self.started.swap(true, Ordering::AcqRel) {
            self.count_restart()?;
        }
        let args = ShardArgs {
            raft: self.raft.clone(),
            clock: self.clock.clone(),
            counts: self.counts.clone(),
        };
        let (started, _) = Actor::spawn(None, ShardActor, args)
            .await
            .map_err(|error| RouteError::Unavailable(format!("shard actor: {error}")))?;
        started
            .send_message(ShardMsg::Submit(item))
            .map_err(|_| RouteError::Unavailable("the shard actor stopped".into()))?;
        *self.actor.lock().unwrap_or_else(PoisonError::into_inner) = Some(started);
        Ok(())
    }

    /// Offers an item to the running ShardActor: `None` once it took it, the item back when
    /// there is no running actor to take it.
    fn offer(&self, item: Box<Item>) -> Result<Option<Box<Item>>, RouteError> {
        let Some(actor) = self.running() else {
            return Ok(Some(item));
        };
        match actor.send_message(ShardMsg::Submit(item)) {
            Ok(()) => Ok(None),
            Err(ractor::MessagingErr::SendErr(ShardMsg::Submit(back))) => Ok(Some(back)),
            Err(_) => {
                self.forget(&actor);
                Err(RouteError::Unavailable("the shard actor stopped".into()))
            }
        }
    }

    /// Drops the handle of an actor that stopped (the next submit starts a new one).
    fn forget(&self, stopped: &ActorRef<ShardMsg>) {
        let mut actor = self.actor.lock().unwrap_or_else(PoisonError::into_inner);
        if actor
            .as_ref()
            .is_some_and(|current| current.get_id() == stopped.get_id())
        {
            *actor = None;
        }
    }

    /// Counts a restart of a failed ShardActor; too many in the window fence the group.
    fn count_restart(&self) -> Result<(), RouteError> {
        let mut restarts = self.restarts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > SHARD_ACTOR_RESTART_WINDOW)
        {
            restarts.pop_front();
        }
        restarts.push_back(now);
        if restarts.len() > SHARD_ACTOR_RESTARTS_MAX {
            self.fenced.store(true, Ordering::Release);
            tracing::error!(
                "a shard actor failed {} times within {:?}: this node stops serving the group",
                restarts.len(),
                SHARD_ACTOR_RESTART_WINDOW
            );
            return Err(fenced());
        }
        tracing::warn!("a shard actor failed; started a new one");
        Ok(())
    }
}

impl Batcher {
    /// Sends a message straight to the running ShardActor (tests: a `Proposed` with nothing in
    /// flight makes it fail). False when none is running.
    #[doc(hidden)]
    pub fn send_raw(&self, message: ShardMsg) -> bool {
        self.running()
            .is_some_and(|actor| actor.send_message(message).is_ok())
    }
}

/// A queued command's answer (`unavailable` when its proposal was dropped unanswered).
async fn answered(
    answer: oneshot::Receiver<Result<Outcome, RouteError>>,
) -> Result<Outcome, RouteError> {
    answer
        .await
        .map_err(|_| RouteError::Unavailable("the proposal was dropped".into()))?
}

fn fenced() -> RouteError {
    RouteError::Unavailable(
        "this node stopped serving the group (its shard actor kept failing)".into(),
    )
}

async fn propose(raft: &Raft, clock: &Clock, batch: Vec<Item>) {
    let shard = batch[0].shard;
    let mut commands = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for item in batch {
        commands.push(item.command);
        replies.push(item.reply);
    }
    let count = commands.len();
    let transfers_only = commands.iter().all(|c| matches!(c, Command::Transfer(_)));
    let command = if transfers_only {
        let requests = commands
            .into_iter()
            .map(|c| match c {
                Command::Transfer(request) => request,
                _ => unreachable!("checked above"),
            })
            .collect();
        Command::Batch(requests)
    } else {
        Command::Many(commands)
    };
    let request = ShardRequest {
        shard,
        at_ms: clock.stamp(),
        command,
    };
    let failure = match raft.client_write(request).await {
        Ok(response) => {
            let outcomes: Vec<Outcome> = match response.data {
                Outcome::Batch(outcomes) => outcomes.into_iter().map(Outcome::Transfer).collect(),
                Outcome::Many(outcomes) => outcomes,
                other => vec![other],
            };
            if outcomes.len() == count {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                return;
            }
            RouteError::Unavailable(format!("{} outcomes for {count} commands", outcomes.len()))
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            RouteError::NotLeader {
                leader: forward.leader_id,
            }
        }
        Err(error) => RouteError::Unavailable(error.to_string()),
    };
    for reply in replies {
        let _ = reply.send(Err(failure.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a `Command::Many` is admitted to the queue bound whole or not at all, and its
    /// places are given back as its items are proposed or dropped.
    #[test]
    fn many_commands_take_their_places_together() {
        let depth = Arc::new(AtomicUsize::new(BATCH_QUEUE_MAX - 2));
        assert!(Admitted::take_many(&depth, 3).is_none(), "three do not fit");
        assert_eq!(
            depth.load(Ordering::Acquire),
            BATCH_QUEUE_MAX - 2,
            "none taken"
        );
        let places = Admitted::take_many(&depth, 2).expect("two fit");
        assert_eq!(places.len(), 2);
        assert_eq!(depth.load(Ordering::Acquire), BATCH_QUEUE_MAX);
        assert!(Admitted::take(&depth).is_none(), "the queue is full");
        drop(places);
        assert_eq!(depth.load(Ordering::Acquire), BATCH_QUEUE_MAX - 2);
        assert!(
            Admitted::take_many(&depth, usize::MAX).is_none(),
            "no overflow"
        );
    }
}
