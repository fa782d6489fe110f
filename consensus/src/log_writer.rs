//! Group commit for the Raft log: one writer thread per log database.
//!
//! openraft calls `append` once per client write on a busy leader. Writing each in its own
//! fsync'd transaction caps a node at one fsync per entry, so `append` only queues the entries
//! and returns; this thread takes every job queued at the moment, writes them all in one redb
//! transaction with `Durability::Immediate`, and only after that commit (fsync) calls each
//! job's openraft callback. **Invariant:** no callback runs before the commit holding its
//! entries returned; jobs are written in the order they were queued.
//!
//! The committed id (which nobody waits for) does not get an fsync of its own while the log is
//! busy: it waits up to `COMMITTED_DEFER_MAX` for an append or vote to share a commit with.
//! Under load about a third of the commits held nothing else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::LogFlushed;
use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::limits::{COMMITTED_DEFER_MAX, LOG_JOBS_PER_COMMIT_MAX, LOG_QUEUE_MAX};
use crate::types::{Entry, LogId, TypeConfig};

pub(crate) const LOG: redb::TableDefinition<(u32, u64), &[u8]> =
    redb::TableDefinition::new("raft_log");
pub(crate) const META: redb::TableDefinition<(u32, &str), &[u8]> =
    redb::TableDefinition::new("raft_meta");
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_PURGED: &str = "last_purged";

/// Entries queued but not yet on disk, by index: readers overlay them on the database.
pub(crate) type Unflushed = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// Work for the writer thread.
pub(crate) enum Job {
    /// Entries to append; the callback runs after they are fsync'd.
    Append {
        group: u32,
        entries: Vec<(LogId, Vec<u8>)>,
        callback: Flushed,
        unflushed: Unflushed,
    },
    /// The committed id: written with the next commit, nobody waits for it.
    Committed { group: u32, bytes: Vec<u8> },
    /// An operation the caller waits for (and with it, for everything queued before it).
    Sync {
        group: u32,
        op: SyncOp,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Write everything queued, then end the thread; `done` is told once the thread has let
    /// go of the database (see [`LogDb::close`]).
    Stop { done: oneshot::Sender<()> },
}

/// Who is told that an append is on disk.
pub(crate) enum Flushed {
    /// openraft's callback (every append of a running node).
    Raft(LogFlushed<TypeConfig>),
    /// A caller outside openraft waiting for the fsync ([`crate::LogStore::append_and_wait`]).
    Caller(oneshot::Sender<Result<(), String>>),
}

pub(crate) enum SyncOp {
    Vote(Vec<u8>),
    /// Delete entries from this index on.
    Truncate(u64),
    /// Delete entries up to this index, inclusive, and record the purge point.
    Purge {
        index: u64,
        bytes: Vec<u8>,
    },
}

/// The log database and the queue to its writer thread.
pub struct LogDb {
    /// `None` once closed. Held here, not by every store: stores outlive a stopped node's
    /// groups (the node's handles refer to one another), and the file is closed cleanly only
    /// when its last handle drops.
    db: Mutex<Option<Arc<Database>>>,
    pub(crate) jobs: mpsc::Sender<Job>,
}

impl LogDb {
    /// Opens (or creates) the database and starts its writer thread.
    pub fn open(path: &std::path::Path) -> Result<Arc<LogDb>, redb::DatabaseError> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(crate::limits::LOG_DB_CACHE_BYTES)
                .set_repair_callback(|session| {
                    tracing::warn!(
                        progress = session.progress(),
                        "repairing the Raft log database: it was not closed cleanly"
                    );
                })
                .create(path)?,
        );
        let (jobs, queue) = mpsc::channel(LOG_QUEUE_MAX);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                let stopped = write_loop(&writer_db, queue);
                drop(writer_db);
                if let Some(done) = stopped {
                    let _ = done.send(());
                }
            })
            .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        Ok(Arc::new(LogDb {
            db: Mutex::new(Some(db)),
            jobs,
        }))
    }

    /// A read transaction on the log, or `DatabaseClosed` once [`LogDb::close`] has run.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        let db = self.db.lock().expect("log database handle lock");
        match db.as_ref() {
            Some(db) => db.begin_read(),
            None => Err(redb::TransactionError::Storage(
                redb::StorageError::DatabaseClosed,
            )),
        }
    }

    /// Writes everything queued, stops the writer thread and lets go of the database, which
    /// closes the file cleanly (at once, or when a read in progress ends). A file not closed
    /// cleanly is repaired at the next open (redb walks its trees), and a restart waits for
    /// that. Reads and appends after this fail.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.jobs.send(Job::Stop { done }).await.is_ok() {
            let _ = stopped.await;
        }
        drop(self.db.lock().expect("log database handle lock").take());
    }
}

/// Runs until the queue closes or a [`Job::Stop`] is written; returns that job's reply.
fn write_loop(db: &Database, mut queue: mpsc::Receiver<Job>) -> Option<oneshot::Sender<()>> {
    // A clock for the one timed wait below; the thread itself stays a plain blocking thread.
    let clock = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(clock) => clock,
        Err(error) => {
            tracing::error!(%error, "raft log writer: no timer; commit ids get their own fsync");
            return write_loop_plain(db, queue);
        }
    };
    // Commit ids held back, and since when.
    let mut deferred: Vec<Job> = Vec::new();
    let mut deferred_since = Instant::now();
    loop {
        let next = if deferred.is_empty() {
            Next::Job(queue.blocking_recv())
        } else {
            let left = COMMITTED_DEFER_MAX.saturating_sub(deferred_since.elapsed());
            match clock.block_on(async { tokio::time::timeout(left, queue.recv()).await }) {
                Ok(job) => Next::Job(job),
                Err(_) => Next::Quiet,
            }
        };
        let fresh = deferred.is_empty();
        let quiet = matches!(next, Next::Quiet);
        let mut jobs = std::mem::take(&mut deferred);
        match next {
            Next::Job(Some(job)) => jobs.push(job),
            Next::Job(None) => {
                if !jobs.is_empty() {
                    return commit_jobs(db, jobs);
                }
                return None;
            }
            Next::Quiet => {}
        }
        take_queued(&mut queue, &mut jobs);
        // A commit id nobody waits for does not earn an fsync of its own: it rides with the
        // next append or vote, or is written alone once it has waited `COMMITTED_DEFER_MAX`.
        let only_committed = jobs.iter().all(|job| matches!(job, Job::Committed { .. }));
        let waited = !fresh && deferred_since.elapsed() >= COMMITTED_DEFER_MAX;
        if only_committed && !(quiet || waited) {
            if fresh {
                deferred_since = Instant::now();
            }
            deferred = jobs;
            continue;
        }
        if let Some(stop) = commit_jobs(db, jobs) {
            return Some(stop);
        }
    }
}

enum Next {
    /// A job, or `None` when the queue closed.
    Job(Option<Job>),
    /// Nothing arrived while commit ids waited.
    Quiet,
}

fn write_loop_plain(db: &Database, mut queue: mpsc::Receiver<Job>) -> Option<oneshot::Sender<()>> {
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        take_queued(&mut queue, &mut jobs);
        if let Some(stop) = commit_jobs(db, jobs) {
            return Some(stop);
        }
    }
    None
}

/// Adds every job queued right now to `jobs`, up to `LOG_JOBS_PER_COMMIT_MAX`.
fn take_queued(queue: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < LOG_JOBS_PER_COMMIT_MAX {
        match queue.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// Writes `jobs` in one fsync'd transaction, then runs their callbacks; returns the reply of
/// a [`Job::Stop`] among them (the writer then ends).
fn commit_jobs(db: &Database, jobs: Vec<Job>) -> Option<oneshot::Sender<()>> {
    let result = write_all(db, &jobs).map_err(|e| e.to_string());
    let mut stop = None;
    for job in jobs {
        if let Job::Stop { done } = job {
            stop = Some(done);
        } else {
            finish(job, &result);
        }
    }
    stop
}

/// Writes every job in one transaction and commits it with fsync.
fn write_all(db: &Database, jobs: &[Job]) -> Result<(), redb::Error> {
    // Chaos runs make the log's fsync fail ("return") or slow ("sleep(ms)") here.
    #[cfg(feature = "chaos")]
    fail::fail_point!("raft-log-commit", |_| Err(redb::Error::Io(
        std::io::Error::other("fail point raft-log-commit: injected fsync failure")
    )));
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        // Each table is opened at most once per transaction (closing one updates its root),
        // and the meta table only when a job writes to it.
        let mut log = txn.open_table(LOG)?;
        let mut meta = None;
        for job in jobs {
            write_one(&txn, &mut log, &mut meta, job)?;
        }
    }
    txn.commit()?;
    Ok(())
}

type LogTable<'t> = redb::Table<'t, (u32, u64), &'static [u8]>;
type MetaTable<'t> = redb::Table<'t, (u32, &'static str), &'static [u8]>;

fn write_one<'t>(
    txn: &'t WriteTransaction,
    log: &mut LogTable<'t>,
    meta: &mut Option<MetaTable<'t>>,
    job: &Job,
) -> Result<(), redb::Error> {
    let mut meta_insert =
        |group: u32, key: &'static str, bytes: &[u8]| -> Result<(), redb::Error> {
            let table = match meta {
                Some(table) => table,
                None => meta.insert(txn.open_table(META)?),
            };
            table.insert((group, key), bytes)?;
            Ok(())
        };
    match job {
        Job::Append { group, entries, .. } => {
            for (log_id, bytes) in entries {
                log.insert((*group, log_id.index), bytes.as_slice())?;
            }
        }
        Job::Committed { group, bytes } => meta_insert(*group, KEY_COMMITTED, bytes)?,
        Job::Sync { group, op, .. } => match op {
            SyncOp::Vote(bytes) => meta_insert(*group, KEY_VOTE, bytes)?,
            SyncOp::Truncate(from) => {
                log.retain_in((*group, *from)..=(*group, u64::MAX), |_, _| false)?;
            }
            SyncOp::Purge { index, bytes } => {
                meta_insert(*group, KEY_PURGED, bytes)?;
                log.retain_in((*group, 0)..=(*group, *index), |_, _| false)?;
            }
        },
        Job::Stop { .. } => {}
    }
    Ok(())
}

fn finish(job: Job, result: &Result<(), String>) {
    match job {
        Job::Append {
            entries,
            callback,
            unflushed,
            ..
        } => {
            if result.is_ok() {
                // On disk now: readers find these in the database.
                let mut cache = unflushed.lock().expect("unflushed cache lock");
                for (log_id, _) in &entries {
                    if cache
                        .get(&log_id.index)
                        .is_some_and(|entry| entry.log_id == *log_id)
                    {
                        cache.remove(&log_id.index);
                    }
                }
            }
            match callback {
                Flushed::Raft(callback) => {
                    let io = result.clone().map_err(std::io::Error::other);
                    callback.log_io_completed(io);
                }
                Flushed::Caller(done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
        Job::Committed { .. } => {}
        Job::Sync { done, .. } => {
            let _ = done.send(result.clone());
        }
        // Answered by the thread itself once it has let go of the database (`commit_jobs`
        // hands the reply out instead of finishing it here).
        Job::Stop { .. } => {}
    }
}
