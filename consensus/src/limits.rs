//! Bounds of the storage layer.

/// Jobs waiting for the log writer; `append` waits (backpressure) when the queue is full.
pub const LOG_QUEUE_MAX: usize = 8192;
/// Jobs written in one transaction (one fsync).
pub const LOG_JOBS_PER_COMMIT_MAX: usize = 4096;
/// Longest a commit id (which nobody waits for) waits for an append to share its fsync.
pub const COMMITTED_DEFER_MAX: std::time::Duration = std::time::Duration::from_millis(100);

const _: () = assert!(LOG_JOBS_PER_COMMIT_MAX <= LOG_QUEUE_MAX);
