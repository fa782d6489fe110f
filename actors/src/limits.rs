//! Every bound of the actor layer, in one place.

use std::time::Duration;

/// Transfers accepted by one account actor and not yet proposed (its mailbox plus its
/// waiting line); past it, the account answers `overloaded` (HTTP 429).
pub const ACCOUNT_MAILBOX_MAX: usize = 256;
/// Transfers one account actor has proposed and not yet seen answered (pipelined).
pub const ACCOUNT_INFLIGHT_MAX: usize = 64;
/// Account actors resident on one node; past it, new accounts answer `overloaded` until idle
/// actors passivate.
pub const RESIDENT_ACCOUNTS_MAX: usize = 100_000;
/// An account actor with nothing to do for this long stops (its state is only a cache).
pub const ACCOUNT_IDLE: Duration = Duration::from_secs(30);
/// How often an account actor checks whether it is idle or has lost its shard's leadership.
pub const ACCOUNT_TICK: Duration = Duration::from_secs(1);
/// Live sessions on one node, and how long an untouched session lives.
pub const SESSIONS_MAX: usize = 100_000;
pub const SESSION_IDLE: Duration = Duration::from_secs(180);
/// Deadline for asking a session actor anything.
pub const SESSION_CALL_TIMEOUT_MS: u64 = 2_000;
/// Actor failures of one shard within `CRASH_WINDOW` after which the shard stops serving on
/// this node (a crash loop escalates instead of serving wrong).
pub const CRASHES_MAX: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How often the timer supervisor looks at deadlines, the redress supervisor sweeps sagas and
/// the monitor samples.
pub const TIMER_TICK: Duration = Duration::from_millis(250);
pub const REDRESS_TICK: Duration = Duration::from_millis(1000);
/// How often the timer supervisor looks for a leadership to hand back to its preferred node.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(3);
pub const MONITOR_TICK: Duration = Duration::from_secs(1);
/// A saga younger than this still has its first coordinator; the redress sweep leaves it.
pub const REDRESS_AGE_MS: u64 = 3_000;
/// Forwarding a client transfer to the leader of its account's shard: attempts and pause.
pub const FORWARD_ATTEMPTS_MAX: u32 = 20;
pub const FORWARD_BACKOFF: Duration = Duration::from_millis(100);

const _: () = assert!(ACCOUNT_INFLIGHT_MAX <= ACCOUNT_MAILBOX_MAX);
const _: () = assert!(ACCOUNT_TICK.as_millis() < ACCOUNT_IDLE.as_millis());
