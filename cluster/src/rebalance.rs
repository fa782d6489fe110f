//! Leadership handover: puts each shard's leadership back on its preferred node once that
//! node is up and caught up (after a restart, leaderships have moved to the survivors).
//!
//! openraft 0.9 has no leader-transfer message, so the leader hands over by going quiet: it
//! stops heartbeats for the group and holds its writes and reads (each would refresh the
//! followers' leader lease). The followers' lease runs out, and the preferred node, which stands
//! for election at half the configured timeouts (see the node's Raft configuration), wins the
//! next election; its log is as long as any, since it was caught up. The old leader then
//! releases what it held: those requests find the new leader. A handover that does not land
//! within [`HANDOVER_TIMEOUT`] is given up (heartbeats resume) and not tried again for that
//! group for [`HANDOVER_RETRY_AFTER`]. One handover at a time per node, so at most one shard
//! is quiet at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use openraft::RaftMetrics;
use tokio::sync::Notify;

use crate::limits::{HANDOVER_LAG_MAX, HANDOVER_POLL, HANDOVER_RETRY_AFTER, HANDOVER_TIMEOUT};
use crate::shards::{Group, Shards};
use consensus::NodeId;

/// A group's handover state on this node.
#[derive(Default)]
pub struct Handover {
    active: AtomicBool,
    done: Notify,
    failed_at: Mutex<Option<Instant>>,
}

impl Handover {
    /// Holds a request while this node hands the group over; then the caller routes again.
    pub async fn wait(&self) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let done = self.done.notified();
        if self.active.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(HANDOVER_TIMEOUT, done).await;
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn recently_failed(&self) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < HANDOVER_RETRY_AFTER)
    }
}

/// Whether `to` is close behind this leader's log: it gets the rest while the leader is quiet
/// (replication goes on; only new writes are held), so it can win the election.
fn caught_up(metrics: &RaftMetrics<NodeId, openraft::BasicNode>, to: NodeId) -> bool {
    let last = metrics.last_log_index.unwrap_or(0);
    metrics
        .replication
        .as_ref()
        .and_then(|replication| replication.get(&to))
        .and_then(|matched| *matched)
        .is_some_and(|matched| last.saturating_sub(matched.index) <= HANDOVER_LAG_MAX)
}

impl Shards {
    /// Hands one group this node leads, but should not, to its preferred node when that node
    /// is caught up. Returns the group handed over (or tried).
    pub async fn rebalance_once(&self) -> Option<(u32, bool)> {
        let me = self.node_id();
        for (index, group) in self.groups().iter().enumerate() {
            let index = u32::try_from(index).expect("group count fits u32");
            let Some(&preferred) = self.preferred().get(index as usize) else {
                continue;
            };
            if preferred == me || group.handover.recently_failed() {
                continue;
            }
            let metrics = group.raft.metrics().borrow().clone();
            if metrics.current_leader != Some(me) || !caught_up(&metrics, preferred) {
                continue;
            }
            let landed = hand_over(group, me, preferred).await;
            return Some((index, landed));
        }
        None
    }
}

async fn hand_over(group: &Group, me: NodeId, to: NodeId) -> bool {
    let handover = &group.handover;
    handover.active.store(true, Ordering::Release);
    group.raft.runtime_config().heartbeat(false);
    let started = Instant::now();
    let landed = loop {
        let leader = group.raft.metrics().borrow().current_leader;
        if leader.is_some_and(|leader| leader != me) {
            break true;
        }
        if started.elapsed() >= HANDOVER_TIMEOUT {
            break false;
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    };
    group.raft.runtime_config().heartbeat(true);
    handover.active.store(false, Ordering::Release);
    handover.done.notify_waiters();
    let leader = group.raft.metrics().borrow().current_leader;
    if landed {
        tracing::info!(to, ?leader, elapsed = ?started.elapsed(), "leadership handed over to the preferred node");
    } else {
        *handover
            .failed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(to, "leadership handover did not land; keeping the lead");
    }
    landed
}
