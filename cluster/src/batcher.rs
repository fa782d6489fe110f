//! Group commit at the proposal level: single transfers arriving at a group's leader are
//! gathered into one `Command::Batch` log entry, so one Raft round (one entry, one fsync per
//! replica, one apply call) carries many transfers. A batch applies each transfer on its own,
//! in order, exactly as if each were proposed alone; each caller gets its own transfer's answer.
//!
//! Batches form naturally: while `PROPOSALS_INFLIGHT_MAX` proposals are in flight, new
//! transfers wait in the queue and the next proposal takes all of them (up to `BATCH_MAX`).
//! Under light load every transfer goes out at once, alone; under heavy load batches grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use consensus::{Raft, ShardRequest};
use ledger::limits::BATCH_MAX;
use ledger::{Command, Outcome, ShardId, TransferOutcome, TransferRequest};
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

type Reply = oneshot::Sender<Result<TransferOutcome, RouteError>>;

struct Item {
    shard: ShardId,
    request: TransferRequest,
    reply: Reply,
}

/// The transfer queue of one Raft group.
pub struct Batcher {
    queue: mpsc::Sender<Item>,
}

impl Batcher {
    /// Starts the batching task for a group (needs a tokio runtime).
    pub fn start(raft: Raft, clock: Arc<Clock>) -> Batcher {
        let (queue, items) = mpsc::channel(BATCH_QUEUE_MAX);
        tokio::spawn(gather(raft, clock, items));
        Batcher { queue }
    }

    /// Proposes one transfer as part of the next batch and waits for its answer.
    pub async fn submit(
        &self,
        shard: ShardId,
        request: TransferRequest,
    ) -> Result<TransferOutcome, RouteError> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Item {
            shard,
            request,
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

async fn gather(raft: Raft, clock: Arc<Clock>, mut items: mpsc::Receiver<Item>) {
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
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for item in batch {
        requests.push(item.request);
        replies.push(item.reply);
    }
    let count = requests.len();
    let request = ShardRequest {
        shard,
        at_ms: clock.stamp(),
        command: Command::Batch(requests),
    };
    let failure = match raft.client_write(request).await {
        Ok(response) => match response.data {
            Outcome::Batch(outcomes) if outcomes.len() == count => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                return;
            }
            other => RouteError::Unavailable(format!("unexpected batch outcome {other:?}")),
        },
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
