//! Bounds of the storage layer.

/// Jobs waiting for the log writer; `append` waits (backpressure) when the queue is full.
pub const LOG_QUEUE_MAX: usize = 8192;
/// Jobs written in one transaction (one fsync).
pub const LOG_JOBS_PER_COMMIT_MAX: usize = 4096;
/// Longest a commit id (which nobody waits for) waits for an append to share its fsync.
pub const COMMITTED_DEFER_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// redb's page cache for each of the node's two databases (redb's default is 1 GiB each).
/// The log is written once and read back only by lagging followers, mostly its newest pages;
/// the state-machine database holds snapshots, read at restart and when a follower needs one.
/// Neither gains from caching much, and every cached byte is resident memory per node.
pub const LOG_DB_CACHE_BYTES: usize = 64 * 1024 * 1024;
pub const SM_DB_CACHE_BYTES: usize = 64 * 1024 * 1024;

const _: () = assert!(LOG_JOBS_PER_COMMIT_MAX <= LOG_QUEUE_MAX);
/// A snapshot is stored in pieces of this size, each committed (fsync'd) on its own: no value
/// comes near redb's cap (3 GiB; a busy group's snapshot outgrows it), and a Raft log fsync
/// waits behind at most one piece, not the whole snapshot.
pub const SNAPSHOT_CHUNK_BYTES: usize = 8 * 1024 * 1024;
