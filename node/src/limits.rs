//! Bounds of the node: HTTP bodies, timeouts, connection counts.

use std::time::Duration;

/// Largest HTTP request body (a full batch of 8190 transfers is about 2 MiB of JSON).
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Transfers in one `/v1/transfers/batch` request.
pub const BATCH_MAX: usize = ledger::limits::BATCH_MAX;
/// Deadline for one HTTP request, forwarding and commit included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP requests served at once by one node; more wait in the accept queue.
pub const HTTP_CONCURRENCY_MAX: usize = 4096;
/// Default and largest statement length.
pub const STATEMENT_LIMIT_DEFAULT: usize = 50;
pub const STATEMENT_LIMIT_MAX: usize = ledger::limits::STATEMENT_LIMIT_MAX;
/// Accounts listed per page.
pub const ACCOUNTS_PAGE_MAX: usize = 1000;
/// Closed business days one `/v1/admin/days` request may ask for.
pub const DAYS_LIMIT_MAX: usize = ledger::limits::CLOSES_KEPT;
/// Cross-shard items of one batch request run as sagas, this many at once.
pub const BATCH_SAGAS_CONCURRENCY: usize = 256;
/// How long a read of a transfer may spend driving its still-running saga to its answer
/// before it shows the record as it stands (`api::transfers::settle_running`): a forwarded
/// call's own deadline (`cluster::limits::FORWARD_TIMEOUT`), so a leadership moving under one
/// of the saga's groups (a hand-back holds its writes for seconds) does not cut it short.
pub const SETTLE_ON_READ_MAX: Duration = cluster::limits::FORWARD_TIMEOUT;
/// The longest `sagas.record_linger_ms`: below the home shard's sweep of running sagas (3 s),
/// so a queued answer is recorded before the sweep would drive its saga again.
pub const SAGA_RECORD_LINGER_MS_MAX: u64 = 2000;
/// How long a graceful stop may take before the node exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const _: () = assert!(BATCH_MAX * 256 <= BODY_BYTES_MAX);
const _: () = assert!(STATEMENT_LIMIT_DEFAULT <= STATEMENT_LIMIT_MAX);

/// Commands applied on a group since its last snapshot after which a follower snapshots it
/// (`crate::snapshots`: the leader later), whatever the entry count (one entry of a batch
/// carries thousands of commands). Large, because a snapshot under load costs (measured: one
/// every 250,000 commands took batch p99 from 0.9 s to 7.5 s); see the quiet rule below.
pub const SNAPSHOT_COMMANDS_SINCE_LAST: u64 = 2_000_000;
/// How many times the followers' distances (commands, entries) a group's leader goes without
/// a snapshot while busy: every client waits while the leader encodes one.
pub const SNAPSHOT_LEADER_DEFER: u64 = 2;
/// The quiet rule: a group that has applied at least this many commands since its last
/// snapshot (or the bound above, if lower) and then nothing for `SNAPSHOT_QUIET_AFTER` is
/// snapshotted too, so a restart after a bulk load or a busy spell replays little.
pub const SNAPSHOT_QUIET_COMMANDS_MIN: u64 = 10_000;
pub const SNAPSHOT_QUIET_AFTER: Duration = Duration::from_secs(3);
/// How often the node looks at those counts.
pub const SNAPSHOT_CHECK_EVERY: Duration = Duration::from_secs(1);
