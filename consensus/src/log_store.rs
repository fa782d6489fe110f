//! The durable Raft log on redb.
//!
//! One redb file per node holds the log of every Raft group on it, keyed by `(group, index)`, and
//! each group's vote, committed id and purge point. Writes go through the group-commit writer
//! ([`crate::log_writer`]); entries queued but not yet flushed stay readable from an in-memory
//! overlay, as openraft requires. **Invariant:** openraft hears that entries are flushed only
//! after the transaction holding them committed with `Durability::Immediate` (fsync); votes,
//! truncations and purges are durable before their call returns.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::log_writer::{
    Flushed, Job, LogDb, SyncOp, Unflushed, KEY_COMMITTED, KEY_PURGED, KEY_VOTE, LOG, META,
};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Opens (or creates) the node's log database and starts its writer.
pub fn open_log_db(path: &std::path::Path) -> Result<Arc<LogDb>, redb::DatabaseError> {
    LogDb::open(path)
}

/// The log of one Raft group. Cheap to clone: clones share the database and the overlay.
#[derive(Clone)]
pub struct LogStore {
    log_db: Arc<LogDb>,
    group: u32,
    unflushed: Unflushed,
    /// The last committed index openraft reported, for metrics (`cellpay_raft_commit_index`).
    committed: Arc<AtomicU64>,
    /// The last committed id saved through this store: the writer may hold it back for a while
    /// (see `log_writer`), so this store reads it from here, not from the file.
    saved_committed: Arc<Mutex<Option<Option<LogId>>>>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(write_err)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(read_err)
}

fn writer_gone() -> StorageError {
    write_err(std::io::Error::other("the log writer stopped"))
}

impl LogStore {
    pub fn new(log_db: Arc<LogDb>, group: u32) -> LogStore {
        let unflushed = Arc::new(Mutex::new(BTreeMap::new()));
        LogStore {
            log_db,
            group,
            unflushed,
            committed: Arc::new(AtomicU64::new(0)),
            saved_committed: Arc::new(Mutex::new(None)),
        }
    }

    /// A live view of the committed index, shared with telemetry.
    /// Appends entries outside openraft and waits until they are fsync'd: the storage write
    /// path on its own, for benchmarks and tools (a running node appends through openraft).
    pub async fn append_and_wait(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StorageError> {
        let (done, flushed) = oneshot::channel();
        self.queue_append(entries, Flushed::Caller(done)).await?;
        flushed
            .await
            .map_err(|_| writer_gone())?
            .map_err(|error| write_err(std::io::Error::other(error)))
    }

    /// Hands entries to the writer thread; `flushed` is told once they are on disk.
    async fn queue_append(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        flushed: Flushed,
    ) -> Result<(), StorageError> {
        let mut encoded = Vec::new();
        {
            let mut unflushed = self.unflushed();
            for entry in entries {
                encoded.push((entry.log_id, encode(&entry)?));
                unflushed.insert(entry.log_id.index, entry);
            }
        }
        let job = Job::Append {
            group: self.group,
            entries: encoded,
            callback: flushed,
            unflushed: self.unflushed.clone(),
        };
        self.log_db.jobs.send(job).await.map_err(|_| writer_gone())
    }

    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.log_db.begin_read().map_err(read_err)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match table.get((self.group, key)).map_err(read_err)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Queues an operation and waits until it (and everything queued before it) is durable.
    async fn sync(&self, op: SyncOp) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        let job = Job::Sync {
            group: self.group,
            op,
            done,
        };
        self.log_db
            .jobs
            .send(job)
            .await
            .map_err(|_| writer_gone())?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(write_err(std::io::Error::other(message))),
            Err(_) => Err(writer_gone()),
        }
    }

    fn last_flushed_id(&self) -> Result<Option<LogId>, StorageError> {
        let txn = self.log_db.begin_read().map_err(read_err)?;
        let table = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let mut range = table
            .range((self.group, 0)..=(self.group, u64::MAX))
            .map_err(read_err)?;
        match range.next_back() {
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                let entry: Entry = decode(value.value())?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.unflushed.lock().expect("unflushed cache lock")
    }
}

fn bound_start(bound: Bound<&u64>) -> u64 {
    match bound {
        Bound::Included(v) => *v,
        Bound::Excluded(v) => v.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

fn bound_end(bound: Bound<&u64>) -> Option<u64> {
    match bound {
        Bound::Included(v) => Some(*v),
        Bound::Excluded(0) => None,
        Bound::Excluded(v) => Some(v.saturating_sub(1)),
        Bound::Unbounded => Some(u64::MAX),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = bound_start(range.start_bound());
        let Some(end) = bound_end(range.end_bound()) else {
            return Ok(Vec::new());
        };
        if start > end {
            return Ok(Vec::new());
        }
        let mut entries = BTreeMap::new();
        {
            let txn = self.log_db.begin_read().map_err(read_err)?;
            match txn.open_table(LOG) {
                Ok(table) => {
                    for item in table
                        .range((self.group, start)..=(self.group, end))
                        .map_err(read_err)?
                    {
                        let (key, value) = item.map_err(read_err)?;
                        let entry: Entry = decode(value.value())?;
                        entries.insert(key.value().1, entry);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        // Entries still on their way to disk are newer than anything the database holds.
        for (index, entry) in self.unflushed().range(start..=end) {
            entries.insert(*index, entry.clone());
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_meta::<Option<LogId>>(KEY_PURGED)?.flatten();
        let last_unflushed = self
            .unflushed()
            .last_key_value()
            .map(|(_, entry)| entry.log_id);
        let last_log_id = match last_unflushed {
            Some(id) => Some(id),
            None => self.last_flushed_id()?.or(last_purged_log_id),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.sync(SyncOp::Vote(encode(vote)?)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE)
    }

    /// Written with the next append's commit (or alone after `COMMITTED_DEFER_MAX`) and not
    /// waited for: losing it only means re-applying from the last snapshot.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(id) = committed {
            self.committed.fetch_max(id.index, Ordering::Relaxed);
        }
        *self
            .saved_committed
            .lock()
            .map_err(|_| write_err(std::io::Error::other("committed id lock poisoned")))? =
            Some(committed);
        let job = Job::Committed {
            group: self.group,
            bytes: encode(&committed)?,
        };
        self.log_db.jobs.send(job).await.map_err(|_| writer_gone())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let saved = *self
            .saved_committed
            .lock()
            .map_err(|_| read_err(std::io::Error::other("committed id lock poisoned")))?;
        if let Some(committed) = saved {
            return Ok(committed);
        }
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.queue_append(entries, Flushed::Raft(callback)).await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.unflushed().retain(|index, _| *index < log_id.index);
        self.sync(SyncOp::Truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.unflushed().retain(|index, _| *index > log_id.index);
        self.sync(SyncOp::Purge {
            index: log_id.index,
            bytes: encode(&Some(log_id))?,
        })
        .await
    }
}
