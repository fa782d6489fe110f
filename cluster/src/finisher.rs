//! Records cross-shard transfers' answers on their home shards after the client has them, many
//! at a time (a part of the saga coordinator, [`crate::saga`]).
//!
//! A plain cross-shard transfer's answer is settled once its last money step has answered: the
//! hold, the credit and the post (or the redress) are each recorded on their shard, and every
//! step is idempotent, so anyone who drives the saga again computes the same answer from them.
//! Recording the answer at home (`SagaFinish`) closes the record and nothing else. So the
//! coordinator answers the client first and hands the record here, and the records queued on
//! this node go out as one `Command::Many` per home shard: one Raft entry for all of them
//! instead of one round per transfer on every client's path.
//!
//! Until its record lands the saga stays running at home, and everything that reads it there
//! reaches the same answer: a retry of the transfer drives the steps again (each answers what
//! it recorded); a read of the transfer (`GET`, a reversal, a post or void) drives the saga and
//! records the answer itself before it reads ([`crate::saga::drive_and_record`]); and if this
//! node dies with records queued, the home leader's sweep finishes those sagas (after 3 s).
//! **Bounded:** at most `RECORD_QUEUE_MAX` records wait here; past that, the coordinator
//! records its answer itself before answering, as it did before this queue existed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ledger::{Command, ShardId, TransferId, TransferOutcome};
use tokio::sync::mpsc;

use crate::limits::{RECORD_BATCH_MAX, RECORD_QUEUE_MAX, RECORD_ROUND_TIMEOUT};
use crate::shards::Shards;

/// One answer to record on its home shard.
struct Record {
    home: ShardId,
    id: TransferId,
    answer: TransferOutcome,
}

/// The queue of answers waiting to be recorded, and what it has done.
pub(crate) struct Finisher {
    sender: mpsc::Sender<Record>,
    /// Answers recorded through the queue (their home answered the `Many` that carried them).
    recorded: Arc<AtomicU64>,
}

impl Finisher {
    /// Starts the task that drains the queue: it takes everything queued (up to
    /// `RECORD_BATCH_MAX`), waits `linger` for more when asked to, writes one `Command::Many`
    /// per home shard (waiting at most `RECORD_ROUND_TIMEOUT` for them), and goes again. It
    /// ends when `shards` is dropped.
    pub(crate) fn start(shards: Weak<Shards>, linger: Duration) -> Finisher {
        let (sender, receiver) = mpsc::channel(RECORD_QUEUE_MAX);
        let recorded = Arc::new(AtomicU64::new(0));
        tokio::spawn(drain(shards, receiver, linger, Arc::clone(&recorded)));
        Finisher { sender, recorded }
    }

    /// Queues the record; `false` when the queue is full (the caller records it itself).
    pub(crate) fn offer(&self, home: ShardId, id: TransferId, answer: TransferOutcome) -> bool {
        self.sender.try_send(Record { home, id, answer }).is_ok()
    }

    pub(crate) fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

async fn drain(
    shards: Weak<Shards>,
    mut receiver: mpsc::Receiver<Record>,
    linger: Duration,
    recorded: Arc<AtomicU64>,
) {
    while let Some(first) = receiver.recv().await {
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH_MAX {
            match receiver.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        let Some(shards) = shards.upgrade() else {
            return;
        };
        let mut by_home: BTreeMap<ShardId, Vec<Command>> = BTreeMap::new();
        for Record { home, id, answer } in batch {
            by_home
                .entry(home)
                .or_default()
                .push(Command::SagaFinish { id, answer });
        }
        let writes = by_home.into_iter().map(|(home, finishes)| {
            let shards = Arc::clone(&shards);
            let recorded = Arc::clone(&recorded);
            async move {
                let count = finishes.len();
                match shards.write(home, Command::Many(finishes)).await {
                    Ok(_) => {
                        recorded.fetch_add(count as u64, Ordering::Relaxed);
                    }
                    // Still running at home: the home leader's sweep finishes them.
                    Err(error) => tracing::debug!(
                        ?home,
                        count,
                        %error,
                        "saga answers not recorded; left to the sweep"
                    ),
                }
            }
        });
        // One slow home (a leader being elected) must not hold the others' next records back:
        // what has not answered by the bound is left to that home's sweep.
        let round = futures::future::join_all(writes);
        if tokio::time::timeout(RECORD_ROUND_TIMEOUT, round)
            .await
            .is_err()
        {
            tracing::debug!("a round of saga answers timed out; the rest is left to the sweep");
        }
    }
}
