//! Group commit at the proposal level: single transfers and saga steps arriving at a group's
//! leader are gathered into one log entry (`Command::Batch` when all are transfers, else
//! `Command::Many`), so one Raft round (one entry, one fsync per replica, one apply call)
//! carries many of them. Each applies on its own, in order, exactly as if proposed alone; each
//! caller gets its own command's answer.
//!
//! Batches form naturally: while `PROPOSALS_INFLIGHT_MAX` proposals are in flight, new
//! commands wait in the queue and the next proposal takes all of them (up to `BATCH_MAX`).
//! Under light load every command goes out at once, alone; under heavy load batches grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use consensus::{Raft, ShardRequest};
use ledger::limits::BATCH_MAX;
use ledger::{Command, Outcome, ShardId};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::limits::{BATCH_QUEUE_MAX, PROPOSALS_INFLIGHT_MAX};
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

struct Item {
    shard: ShardId,
    command: Command,
    reply: Reply,
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

/// The transfer queue of one Raft group.
pub struct Batcher {
    queue: mpsc::Sender<Item>,
    counts: Arc<Counts>,
}

/// Proposals made and commands they carried (for the monitor's commands-per-proposal).
#[derive(Default)]
struct Counts {
    proposals: AtomicU64,
    commands: AtomicU64,
}

impl Batcher {
    /// Starts the batching task for a group (needs a tokio runtime).
    pub fn start(raft: Raft, clock: Arc<Clock>) -> Batcher {
        let (queue, items) = mpsc::channel(BATCH_QUEUE_MAX);
        let counts = Arc::new(Counts::default());
        tokio::spawn(gather(raft, clock, items, counts.clone()));
        Batcher { queue, counts }
    }

    /// `(proposals, commands)` this batcher has proposed since the node started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.proposals.load(Ordering::Relaxed),
            self.counts.commands.load(Ordering::Relaxed),
        )
    }

    /// Proposes one [`batchable`] command as part of the next batch and waits for its answer.
    pub async fn submit(&self, shard: ShardId, command: Command) -> Result<Outcome, RouteError> {
        debug_assert!(batchable(&command));
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Item {
            shard,
            command,
            reply,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(RouteError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(RouteError::Unavailable("the proposal queue stopped".into()));
            }
        }
        answer
            .await
            .map_err(|_| RouteError::Unavailable("the proposal was dropped".into()))?
    }
}

async fn gather(
    raft: Raft,
    clock: Arc<Clock>,
    mut items: mpsc::Receiver<Item>,
    counts: Arc<Counts>,
) {
    let inflight = Arc::new(Semaphore::new(PROPOSALS_INFLIGHT_MAX));
    while let Some(first) = items.recv().await {
        // Waiting for a slot is what lets the next batch grow.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match items.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        counts.proposals.fetch_add(1, Ordering::Relaxed);
        counts
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let raft = raft.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            propose(&raft, &clock, batch).await;
            drop(permit);
        });
    }
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
