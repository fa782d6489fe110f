//! When a group's replica on this node takes a snapshot.
//!
//! A snapshot encodes the group's whole ledger while its state machine waits (the encoding
//! reads the state in place, so nothing is copied, and no command is applied meanwhile). On a
//! follower that wait costs nobody anything: a follower's log keeps taking entries and
//! acknowledging them, so commits go on, and it applies the backlog afterwards. On the leader
//! every client waits. And if all three replicas encode at once, on a machine with fewer cores
//! than that, the Raft tasks starve, heartbeats miss their deadlines and a follower calls an
//! election (measured: one group, batches at 90,000 transfers/s, a snapshot every 2,000,000
//! commands gave a p999 of 4.4 s and two elections in 40 s; without it, 238 ms and none).
//!
//! So under load the snapshots are taken by the followers, one after the other, and the
//! leader waits longer:
//! - **busy rule**: a replica snapshots once it has applied `bounds.commands` commands or
//!   `bounds.entries` entries since its last snapshot, scaled by its role: the first follower
//!   (by node id) at 1×, the other followers at 3/2× (so the two do not encode together), the
//!   leader at `SNAPSHOT_LEADER_DEFER`× (it still snapshots under a load that never stops, so
//!   its log and its replay at a restart stay bounded);
//! - **quiet rule**: any replica that has applied a fair amount since its last snapshot and
//!   then nothing for `SNAPSHOT_QUIET_AFTER` snapshots, so a restart after a busy spell
//!   replays little.
//!
//! A node starts at most one snapshot per check (`SNAPSHOT_CHECK_EVERY`), taking its groups in
//! turn, so that its own groups do not encode (and hold the encoding's memory) all at once.

use std::time::Duration;

use crate::limits::{SNAPSHOT_LEADER_DEFER, SNAPSHOT_QUIET_AFTER, SNAPSHOT_QUIET_COMMANDS_MIN};

/// The configured distances between snapshots (`[raft]` in the node's configuration).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub commands: u64,
    pub entries: u64,
}

/// This node's part in a group now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// `rank`: this node's place among the group's followers, by node id (0 first).
    Follower {
        rank: usize,
    },
    /// No leader known (an election is under way).
    Unknown,
}

impl Role {
    /// From a group's members (voters), its leader and this node's id.
    pub fn of(me: u64, leader: Option<u64>, voters: impl IntoIterator<Item = u64>) -> Role {
        let Some(leader) = leader else {
            return Role::Unknown;
        };
        if leader == me {
            return Role::Leader;
        }
        let mut followers: Vec<u64> = voters.into_iter().filter(|id| *id != leader).collect();
        followers.sort_unstable();
        followers.dedup();
        let rank = followers.iter().position(|id| *id == me).unwrap_or(0);
        Role::Follower { rank }
    }

    /// How far past the bounds this role waits, as a fraction (numerator, denominator).
    fn scale(self) -> (u64, u64) {
        match self {
            Role::Leader => (SNAPSHOT_LEADER_DEFER, 1),
            Role::Follower { rank: 0 } | Role::Unknown => (1, 1),
            Role::Follower { .. } => (3, 2),
        }
    }
}

/// A replica's progress since its last snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub commands: u64,
    pub entries: u64,
    /// How long its command count has not moved.
    pub quiet_for: Duration,
}

/// Why a replica snapshots now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Busy,
    Quiet,
}

/// Whether a replica in `role` with `progress` snapshots now, and why.
pub fn due(role: Role, progress: Progress, bounds: Bounds) -> Option<Due> {
    let (num, den) = role.scale();
    let scaled = |bound: u64| bound.saturating_mul(num) / den;
    if progress.commands >= scaled(bounds.commands) || progress.entries >= scaled(bounds.entries) {
        return Some(Due::Busy);
    }
    let enough = progress.commands >= bounds.commands.min(SNAPSHOT_QUIET_COMMANDS_MIN)
        || progress.entries >= bounds.entries;
    (enough && progress.quiet_for >= SNAPSHOT_QUIET_AFTER).then_some(Due::Quiet)
}

/// The entry count openraft's own policy snapshots at, on every replica: a backstop as far
/// away as the leader's busy rule (the followers reach theirs first).
pub fn openraft_backstop(entries: u64) -> u64 {
    entries.saturating_mul(SNAPSHOT_LEADER_DEFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        commands: 2_000_000,
        entries: 20_000,
    };

    fn busy(commands: u64, entries: u64) -> Progress {
        Progress {
            commands,
            entries,
            quiet_for: Duration::ZERO,
        }
    }

    /// Goal: roles come from the leader and the voters' ids: the followers ranked by id.
    #[test]
    fn roles_rank_the_followers_by_node_id() {
        assert_eq!(Role::of(1, Some(1), [1, 2, 3]), Role::Leader);
        assert_eq!(Role::of(2, Some(1), [3, 1, 2]), Role::Follower { rank: 0 });
        assert_eq!(Role::of(3, Some(1), [1, 2, 3]), Role::Follower { rank: 1 });
        assert_eq!(Role::of(1, Some(2), [1, 2, 3]), Role::Follower { rank: 0 });
        assert_eq!(Role::of(3, Some(2), [1, 2, 3]), Role::Follower { rank: 1 });
        assert_eq!(Role::of(2, None, [1, 2, 3]), Role::Unknown);
    }

    /// Goal: under load the first follower snapshots at the bounds, the second half as far
    /// again, the leader only at `SNAPSHOT_LEADER_DEFER` times them — so the three replicas
    /// never encode together and the leader, which every client waits on, encodes least.
    #[test]
    fn under_load_the_followers_snapshot_first_and_apart() {
        let first = Role::Follower { rank: 0 };
        let second = Role::Follower { rank: 1 };
        let leader = Role::Leader;
        assert_eq!(due(first, busy(2_000_000, 10), BOUNDS), Some(Due::Busy));
        assert_eq!(due(first, busy(10, 20_000), BOUNDS), Some(Due::Busy));
        assert_eq!(due(first, busy(1_999_999, 19_999), BOUNDS), None);
        assert_eq!(due(second, busy(2_000_000, 20_000), BOUNDS), None);
        assert_eq!(due(second, busy(3_000_000, 10), BOUNDS), Some(Due::Busy));
        assert_eq!(due(second, busy(10, 30_000), BOUNDS), Some(Due::Busy));
        assert_eq!(due(leader, busy(3_000_000, 30_000), BOUNDS), None);
        let deferred = 2_000_000 * SNAPSHOT_LEADER_DEFER;
        assert_eq!(due(leader, busy(deferred - 1, 10), BOUNDS), None);
        assert_eq!(due(leader, busy(deferred, 10), BOUNDS), Some(Due::Busy));
        assert_eq!(
            due(leader, busy(10, openraft_backstop(20_000)), BOUNDS),
            Some(Due::Busy)
        );
        // No leader known: as the first follower (an election is short; nothing waits on it).
        assert_eq!(
            due(Role::Unknown, busy(2_000_000, 0), BOUNDS),
            Some(Due::Busy)
        );
    }

    /// Goal: a replica of any role that has applied a fair amount and then gone quiet
    /// snapshots, the leader included; a little work, or a busy one, does not.
    #[test]
    fn a_quiet_replica_snapshots_whatever_its_role() {
        let quiet = |commands, entries| Progress {
            commands,
            entries,
            quiet_for: SNAPSHOT_QUIET_AFTER,
        };
        for role in [Role::Leader, Role::Follower { rank: 1 }, Role::Unknown] {
            assert_eq!(
                due(role, quiet(SNAPSHOT_QUIET_COMMANDS_MIN, 3), BOUNDS),
                Some(Due::Quiet)
            );
            // Past the entry bound: quiet for the leader and the second follower, busy (at
            // their own bound) when no leader is known.
            assert!(due(role, quiet(5, 20_000), BOUNDS).is_some());
            assert_eq!(
                due(role, quiet(SNAPSHOT_QUIET_COMMANDS_MIN - 1, 3), BOUNDS),
                None
            );
            let not_yet = Progress {
                quiet_for: SNAPSHOT_QUIET_AFTER - Duration::from_millis(1),
                ..quiet(SNAPSHOT_QUIET_COMMANDS_MIN, 3)
            };
            assert_eq!(due(role, not_yet, BOUNDS), None);
        }
        // Small bounds (tests): the quiet rule needs no more than the bound itself.
        let small = Bounds {
            commands: 100,
            entries: 20,
        };
        assert_eq!(due(Role::Leader, quiet(100, 1), small), Some(Due::Quiet));
    }
}
