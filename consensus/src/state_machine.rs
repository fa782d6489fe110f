//! The replicated state machine: applies committed entries to the in-memory [`Ledger`] and keeps
//! snapshots of it, durably, in its own redb file (separate from the Raft log).
//!
//! Durability comes from the pair: the fsync'd log holds every committed entry after the last
//! snapshot, and the fsync'd snapshot holds everything before it. On restart the state is the
//! last snapshot, and openraft re-applies the committed log after it.
//! **Invariant:** a snapshot is fsync'd before openraft may purge the log behind it.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use ledger::{At, Currency, Ledger, Outcome, LEDGER_FORMAT_VERSION};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, EntryPayload, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::limits::SNAPSHOT_CHUNK_BYTES;
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Snapshots as one record each (`StoredSnapshot`), as written before chunked snapshots: still
/// read. When a group's chunked snapshot lands, its record becomes [`CHUNKED_MARKER`].
const SNAPSHOTS: TableDefinition<u32, &[u8]> = TableDefinition::new("snapshots");
/// What a group's one-record slot holds once its snapshots are chunked: bytes that an older
/// build, which reads only that slot, fails to decode (0xFF is no `Option` tag), so it refuses
/// to start instead of starting from an empty ledger with the log behind the snapshot purged.
const CHUNKED_MARKER: &[u8] = b"\xffcellpay: this group's snapshot is stored in chunks";
/// Each group's current snapshot: its meta and which chunks hold its bytes (`SnapshotHead`).
const SNAPSHOT_HEADS: TableDefinition<u32, &[u8]> = TableDefinition::new("snapshot_heads");
/// Snapshot bytes by (group, the snapshot's sequence number, chunk index), in pieces of
/// `SNAPSHOT_CHUNK_BYTES`.
const SNAPSHOT_CHUNKS: TableDefinition<(u32, u64, u32), &[u8]> =
    TableDefinition::new("snapshot_chunks");

/// What a snapshot holds, versioned because postcard is not self-describing.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    version: u32,
    ledger: Ledger,
}

/// [`SnapshotBody`] by reference, for encoding without a copy (the same bytes).
#[derive(Serialize)]
struct SnapshotBodyRef<'a> {
    version: u32,
    ledger: &'a Ledger,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A group's current snapshot: written last, in the transaction that makes the snapshot
/// current, after every chunk it names has been committed.
#[derive(Serialize, Deserialize)]
struct SnapshotHead {
    meta: SnapshotMeta,
    /// Numbers this group's snapshots (its chunks' keys), one more each time.
    seq: u64,
    chunks: u32,
    bytes: u64,
}

/// [`StoredSnapshot`] read in place from the database's bytes (the same encoding), so a
/// restart decodes the ledger without first copying the snapshot out.
#[derive(Deserialize)]
struct StoredSnapshotRef<'a> {
    meta: SnapshotMeta,
    #[serde(borrow)]
    data: &'a [u8],
}

/// The state every reader sees: the ledger and how far it has applied.
#[derive(Debug)]
pub struct Applied {
    pub ledger: Ledger,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// A read handle on a group's applied state, for queries (after a linearizable barrier).
#[derive(Clone)]
pub struct StateReader {
    state: Arc<RwLock<Applied>>,
    snapshots: Arc<std::sync::Mutex<SnapshotStats>>,
}

/// The snapshots this replica has built since it started, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// How many.
    pub built: u64,
    /// The last one's size, and how long it took to encode and to persist.
    pub bytes: u64,
    pub encode_ms: u64,
    pub persist_ms: u64,
}

impl StateReader {
    /// The snapshots built since the start.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        *self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Read access; never held across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.state
            .read()
            .expect("state lock poisoned: a panic while applying stops the node")
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    state: Arc<RwLock<Applied>>,
    db: Arc<Database>,
    group: u32,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
    /// Commands applied since the state was last snapshotted (built, installed or loaded).
    since_snapshot: Arc<AtomicU64>,
    /// The snapshot the state was loaded from, kept for openraft's first
    /// `get_current_snapshot` (its start asks for the snapshot only to learn its meta), so a
    /// start does not read every group's snapshot from disk a second time, one group after
    /// another. Taken by that call; cleared when a newer snapshot is persisted.
    loaded: Arc<std::sync::Mutex<Option<StoredSnapshot>>>,
    /// Held while a snapshot is written (a build and an install never interleave chunks).
    persisting: Arc<std::sync::Mutex<()>>,
    /// The snapshots built since the start (shared with the readers).
    snapshots: Arc<std::sync::Mutex<SnapshotStats>>,
    /// Writers to the state wait here, asynchronously, while a snapshot is encoded: the
    /// encoding holds it exclusively (and the state's read lock), each apply or install
    /// shares it while it holds the state's write lock. Without it an apply blocked on the
    /// write lock for the whole encoding (seconds for a busy group) and held one of the
    /// runtime's worker threads with it; the next reader of the state (the monitor's gauges,
    /// read on every node every few seconds) then waited behind that queued writer and held
    /// the other, so the node stopped answering anything, forwarding and Raft messages
    /// included, until the encoding ended.
    encoding: Arc<tokio::sync::RwLock<()>>,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn snap_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

fn snap_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

/// Opens (or creates) the node's state-machine database.
pub fn open_sm_db(path: &Path) -> Result<Arc<Database>, redb::DatabaseError> {
    let db = Database::builder()
        .set_cache_size(crate::limits::SM_DB_CACHE_BYTES)
        .set_repair_callback(|session| {
            tracing::warn!(
                progress = session.progress(),
                "repairing the state-machine database: it was not closed cleanly"
            );
        })
        .create(path)?;
    Ok(Arc::new(db))
}

/// Reads the group's current snapshot: from its chunks, or from a record written before
/// snapshots were chunked.
fn load_snapshot(db: &Database, group: u32) -> Result<Option<StoredSnapshot>, StorageError> {
    let txn = db.begin_read().map_err(snap_read_err)?;
    if let Some(head) = read_head(&txn, group)? {
        let chunks = txn.open_table(SNAPSHOT_CHUNKS).map_err(snap_read_err)?;
        let capacity = usize::try_from(head.bytes).map_err(snap_read_err)?;
        let mut data = Vec::with_capacity(capacity);
        for index in 0..head.chunks {
            let chunk = chunks
                .get((group, head.seq, index))
                .map_err(snap_read_err)?
                .ok_or_else(|| snap_read_err(torn(group, head.seq, index)))?;
            data.extend_from_slice(chunk.value());
        }
        if data.len() != capacity {
            return Err(snap_read_err(std::io::Error::other(format!(
                "group {group}: snapshot {} holds {} bytes, its head says {capacity}",
                head.seq,
                data.len()
            ))));
        }
        return Ok(Some(StoredSnapshot {
            meta: head.meta,
            data,
        }));
    }
    let table = match txn.open_table(SNAPSHOTS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(snap_read_err(e)),
    };
    match table.get(group).map_err(snap_read_err)? {
        Some(bytes) if bytes.value() == CHUNKED_MARKER => {
            Err(snap_read_err(std::io::Error::other(format!(
                "group {group}: its snapshot is stored in chunks, but their head is missing"
            ))))
        }
        Some(bytes) => {
            let stored: StoredSnapshotRef<'_> =
                postcard::from_bytes(bytes.value()).map_err(snap_read_err)?;
            Ok(Some(StoredSnapshot {
                meta: stored.meta,
                data: stored.data.to_vec(),
            }))
        }
        None => Ok(None),
    }
}

/// The group's snapshot head, if its snapshots are chunked.
fn read_head(
    txn: &redb::ReadTransaction,
    group: u32,
) -> Result<Option<SnapshotHead>, StorageError> {
    let heads = match txn.open_table(SNAPSHOT_HEADS) {
        Ok(heads) => heads,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(snap_read_err(e)),
    };
    match heads.get(group).map_err(snap_read_err)? {
        Some(bytes) => postcard::from_bytes(bytes.value())
            .map(Some)
            .map_err(snap_read_err),
        None => Ok(None),
    }
}

fn torn(group: u32, seq: u64, index: u32) -> std::io::Error {
    std::io::Error::other(format!(
        "group {group}: chunk {index} of snapshot {seq} is missing"
    ))
}

/// Stores `data` as the group's current snapshot: its chunks first, each committed (fsync'd)
/// on its own, then the head in one last transaction that also drops the previous snapshot.
/// Until that transaction commits the previous snapshot stays current, whole (a crash in
/// between leaves chunks nobody names, removed by the next call). Chunks keep every value far
/// below redb's cap (3 GiB), and let the Raft log's fsyncs pass between them instead of
/// waiting behind one write of the whole snapshot.
fn persist_chunked(
    db: &Database,
    group: u32,
    meta: &SnapshotMeta,
    data: &[u8],
    chunk_bytes: usize,
) -> Result<(), StorageError> {
    // The read ends here: an open one would keep redb from reusing pages while chunks land.
    let previous = read_head(&db.begin_read().map_err(snap_read_err)?, group)?;
    let seq = previous
        .map_or(0, |head| head.seq)
        .checked_add(1)
        .ok_or_else(|| snap_write_err(std::io::Error::other("snapshot sequence exhausted")))?;
    let write = |fill: &dyn Fn(&redb::WriteTransaction) -> Result<(), redb::Error>| {
        let mut txn = db.begin_write().map_err(snap_write_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(snap_write_err)?;
        fill(&txn).map_err(snap_write_err)?;
        txn.commit().map_err(snap_write_err)
    };
    let chunk_bytes = chunk_bytes.max(1);
    let mut chunks = 0u32;
    for (index, chunk) in data.chunks(chunk_bytes).enumerate() {
        let index = u32::try_from(index).map_err(snap_write_err)?;
        write(&|txn| {
            let mut table = txn.open_table(SNAPSHOT_CHUNKS)?;
            if index == 0 {
                // Left by a call that did not finish (its head never landed).
                table.retain_in((group, seq, 0)..=(group, u64::MAX, u32::MAX), |_, _| false)?;
            }
            table.insert((group, seq, index), chunk)?;
            Ok(())
        })?;
        chunks = index + 1;
    }
    let head = SnapshotHead {
        meta: meta.clone(),
        seq,
        chunks,
        bytes: u64::try_from(data.len()).map_err(snap_write_err)?,
    };
    let head = postcard::to_allocvec(&head).map_err(snap_write_err)?;
    write(&|txn| {
        txn.open_table(SNAPSHOT_HEADS)?
            .insert(group, head.as_slice())?;
        txn.open_table(SNAPSHOT_CHUNKS)?
            .retain_in((group, 0, 0)..(group, seq, 0), |_, _| false)?;
        txn.open_table(SNAPSHOTS)?.insert(group, CHUNKED_MARKER)?;
        Ok(())
    })
}

fn decode_body(data: &[u8]) -> Result<Ledger, StorageError> {
    let body: SnapshotBody = postcard::from_bytes(data).map_err(snap_read_err)?;
    if body.version != LEDGER_FORMAT_VERSION {
        let message = format!(
            "snapshot format {} is not {LEDGER_FORMAT_VERSION}",
            body.version
        );
        return Err(snap_read_err(std::io::Error::other(message)));
    }
    // Assert in pairs: the invariants held when written; check them again after reading.
    body.ledger.check_invariants();
    Ok(body.ledger)
}

impl StateMachineStore {
    /// Loads the group's last snapshot, or starts a fresh ledger in `currency`.
    pub fn open(
        db: Arc<Database>,
        group: u32,
        currency: Currency,
    ) -> Result<StateMachineStore, StorageError> {
        let started = std::time::Instant::now();
        let read = match load_snapshot(&db, group)? {
            Some(stored) => {
                let ledger = decode_body(&stored.data)?;
                tracing::info!(
                    group,
                    bytes = stored.data.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot loaded"
                );
                let applied = Applied {
                    ledger,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership.clone(),
                };
                Some((applied, stored))
            }
            None => None,
        };
        let (applied, loaded) = match read {
            Some((applied, kept)) => (applied, Some(kept)),
            None => (
                Applied {
                    ledger: Ledger::new(currency),
                    last_applied: None,
                    membership: Default::default(),
                },
                None,
            ),
        };
        Ok(StateMachineStore {
            state: Arc::new(RwLock::new(applied)),
            db,
            group,
            snapshot_seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            since_snapshot: Arc::new(AtomicU64::new(0)),
            loaded: Arc::new(std::sync::Mutex::new(loaded)),
            persisting: Arc::new(std::sync::Mutex::new(())),
            snapshots: Arc::default(),
            encoding: Arc::default(),
        })
    }

    fn take_loaded(&self) -> Option<StoredSnapshot> {
        self.loaded
            .lock()
            .expect("loaded-snapshot lock poisoned")
            .take()
    }

    /// Commands applied since the last snapshot, counted by `apply`: the node snapshots a
    /// group when they pass its bound, however few entries carried them (openraft's own
    /// policy counts entries, and one entry may carry thousands of commands, all of which a
    /// restart would replay).
    pub fn commands_since_snapshot(&self) -> Arc<AtomicU64> {
        self.since_snapshot.clone()
    }

    pub fn reader(&self) -> StateReader {
        StateReader {
            state: self.state.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    /// The state's write lock, taken once no snapshot is being encoded (awaited without
    /// holding a thread); the encoding cannot start until the returned gate is dropped.
    async fn write_state(
        &self,
    ) -> (
        tokio::sync::RwLockReadGuard<'_, ()>,
        std::sync::RwLockWriteGuard<'_, Applied>,
    ) {
        let gate = self.encoding.read().await;
        let state = self
            .state
            .write()
            .expect("state lock poisoned: a panic while applying stops the node");
        (gate, state)
    }

    /// Persists a snapshot (in chunks, each fsync'd, then its head) on the blocking pool; one
    /// at a time for a group.
    async fn persist(&self, meta: SnapshotMeta, data: Arc<Vec<u8>>) -> Result<(), StorageError> {
        // The snapshot kept from the load is no longer the current one.
        drop(self.take_loaded());
        let db = self.db.clone();
        let group = self.group;
        let persisting = self.persisting.clone();
        let work = move || -> Result<(), StorageError> {
            let _one_at_a_time = persisting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            persist_chunked(&db, group, &meta, &data, SNAPSHOT_CHUNK_BYTES)
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(snap_write_err)?
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Encoded under the read lock, on the blocking pool: applies wait for the encoding
        // (about a tenth of a second per million accounts, seconds for a busy group holding
        // millions of transfer records; under load the node snapshots its followers first, see
        // `node/src/snapshots.rs`) at the `encoding` gate, holding no thread while they wait,
        // and no copy of the ledger is made. A copy doubled a large ledger's
        // memory while the snapshot was built, and the allocator kept much of it afterwards.
        let started = std::time::Instant::now();
        let state = self.state.clone();
        let since = self.since_snapshot.clone();
        // Writers wait for this gate asynchronously, so no worker thread waits on the state's
        // lock while the encoding holds it (see `encoding`).
        let gate = self.encoding.clone().write_owned().await;
        let encode = move || {
            let _gate = gate;
            let state = state.read().expect("state lock poisoned");
            // `apply` counts under the write lock: this is the count of this state.
            let counted = since.load(Ordering::Acquire);
            let body = SnapshotBodyRef {
                version: LEDGER_FORMAT_VERSION,
                ledger: &state.ledger,
            };
            let data = postcard::to_allocvec(&body).map_err(snap_write_err)?;
            Ok::<_, StorageError>((data, state.last_applied, state.membership.clone(), counted))
        };
        let (data, last_log_id, last_membership, counted) = tokio::task::spawn_blocking(encode)
            .await
            .map_err(snap_write_err)??;
        let encoded = started.elapsed();
        let seq = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let data = Arc::new(data);
        self.persist(meta.clone(), data.clone()).await?;
        // The blocking task has let go of its handle: no copy.
        let data = Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone());
        let encode_ms = u64::try_from(encoded.as_millis()).unwrap_or(u64::MAX);
        let persist_ms =
            u64::try_from((started.elapsed() - encoded).as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            group = self.group,
            index = last_log_id.map_or(0, |id| id.index),
            commands = counted,
            bytes = data.len(),
            encode_ms,
            persist_ms,
            "snapshot built"
        );
        {
            let mut stats = self
                .snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *stats = SnapshotStats {
                built: stats.built.saturating_add(1),
                bytes: u64::try_from(data.len()).unwrap_or(u64::MAX),
                encode_ms,
                persist_ms,
            };
        }
        let _ = self
            .since_snapshot
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_sub(counted))
            });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.reader();
        let state = state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        let (_gate, mut state) = self.write_state().await;
        for entry in entries {
            assert!(
                state
                    .last_applied
                    .is_none_or(|applied| applied.index < entry.log_id.index),
                "entries are applied once, in order"
            );
            state.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Status(Ok(())),
                EntryPayload::Normal(request) => {
                    let count = u64::try_from(request.command.count()).unwrap_or(u64::MAX);
                    self.since_snapshot.fetch_add(count, Ordering::AcqRel);
                    state.ledger.apply_at(
                        &request.command,
                        At {
                            ms: request.at_ms,
                            log_index: entry.log_id.index,
                            log_pos: 0,
                        },
                    )
                }
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Status(Ok(()))
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decoding a busy group's snapshot takes seconds, and so does freeing the ledger it
        // replaces: both on the blocking pool, so no runtime worker stops for them.
        let (ledger, data) =
            tokio::task::spawn_blocking(move || decode_body(&data).map(|ledger| (ledger, data)))
                .await
                .map_err(snap_read_err)??;
        self.persist(meta.clone(), Arc::new(data)).await?;
        let replaced = {
            let (_gate, mut state) = self.write_state().await;
            self.since_snapshot.store(0, Ordering::Release);
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            std::mem::replace(&mut state.ledger, ledger)
        };
        tokio::task::spawn_blocking(move || drop(replaced));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        if let Some(stored) = self.take_loaded() {
            return Ok(Some(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(Cursor::new(stored.data)),
            }));
        }
        let db = self.db.clone();
        let group = self.group;
        let stored = tokio::task::spawn_blocking(move || load_snapshot(&db, group))
            .await
            .map_err(sm_read_err)??;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: id.to_string(),
        }
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn db() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_sm_db(&dir.path().join("state.redb")).expect("open");
        (dir, db)
    }

    /// Chunks of `group` in the database, by snapshot sequence number.
    fn chunks(db: &Database, group: u32) -> Vec<(u64, u32)> {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(SNAPSHOT_CHUNKS).expect("chunks");
        table
            .range((group, 0, 0)..=(group, u64::MAX, u32::MAX))
            .expect("range")
            .map(|item| {
                let (key, _) = item.expect("chunk");
                let (_, seq, index) = key.value();
                (seq, index)
            })
            .collect()
    }

    fn load(db: &Database, group: u32) -> (SnapshotMeta, Vec<u8>) {
        let stored = load_snapshot(db, group).expect("load").expect("a snapshot");
        (stored.meta, stored.data)
    }

    /// Goal: a snapshot is stored in chunks and read back whole; the next one replaces it and
    /// its chunks are removed; groups do not touch each other's.
    #[test]
    fn a_snapshot_is_stored_in_chunks_and_read_back_whole() {
        let (_dir, db) = db();
        assert!(load_snapshot(&db, 0).expect("load").is_none());
        let first = bytes(1000, 1);
        persist_chunked(&db, 0, &meta("first"), &first, 64).expect("persist");
        persist_chunked(&db, 1, &meta("other group"), &bytes(10, 9), 64).expect("persist");
        assert_eq!(load(&db, 0), (meta("first"), first));
        assert_eq!(chunks(&db, 0).len(), 16, "1000 bytes in chunks of 64");

        let second = bytes(250, 2);
        persist_chunked(&db, 0, &meta("second"), &second, 100).expect("persist");
        assert_eq!(load(&db, 0), (meta("second"), second));
        assert_eq!(
            chunks(&db, 0),
            vec![(2, 0), (2, 1), (2, 2)],
            "only the current one's"
        );
        assert_eq!(load(&db, 1), (meta("other group"), bytes(10, 9)));
    }

    /// Goal: a node whose snapshots were written as one record each (before chunks) still
    /// starts from them, and its first chunked snapshot replaces the record.
    #[test]
    fn a_snapshot_written_as_one_record_still_loads_and_is_replaced() {
        let (_dir, db) = db();
        let old = postcard::to_allocvec(&StoredSnapshot {
            meta: meta("one record"),
            data: bytes(300, 3),
        })
        .expect("encode");
        let txn = db.begin_write().expect("write");
        txn.open_table(SNAPSHOTS)
            .expect("table")
            .insert(0, old.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
        assert_eq!(load(&db, 0), (meta("one record"), bytes(300, 3)));

        persist_chunked(&db, 0, &meta("chunked"), &bytes(300, 4), 128).expect("persist");
        assert_eq!(load(&db, 0), (meta("chunked"), bytes(300, 4)));
        let txn = db.begin_read().expect("read");
        let records = txn.open_table(SNAPSHOTS).expect("table");
        let slot = records.get(0).expect("get").expect("the slot");
        assert_eq!(
            slot.value(),
            CHUNKED_MARKER,
            "the record is replaced by the marker"
        );
        // What an older build, reading only that slot, makes of it: an error, not a ledger.
        assert!(postcard::from_bytes::<StoredSnapshotRef<'_>>(slot.value()).is_err());
    }

    /// Goal: a slot marked chunked without its head (which cannot happen: both land in one
    /// transaction) is an error, never an empty ledger.
    #[test]
    fn a_chunked_marker_without_its_head_is_an_error() {
        let (_dir, db) = db();
        let txn = db.begin_write().expect("write");
        txn.open_table(SNAPSHOTS)
            .expect("table")
            .insert(3, CHUNKED_MARKER)
            .expect("insert");
        txn.commit().expect("commit");
        assert!(load_snapshot(&db, 3).is_err());
    }

    /// Goal: a snapshot whose writing stopped before its head (a crash between chunks) is not
    /// current: the previous one is read whole, and the next write removes the leftovers. A
    /// chunk missing under a head is an error, never a shorter ledger.
    #[test]
    fn a_snapshot_cut_short_leaves_the_previous_one_current() {
        let (_dir, db) = db();
        persist_chunked(&db, 0, &meta("whole"), &bytes(500, 5), 100).expect("persist");
        // Chunks of the next snapshot (sequence 2), and no head naming them.
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(SNAPSHOT_CHUNKS).expect("table");
            for index in 0..7 {
                table
                    .insert((0, 2, index), [0xEEu8; 100].as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
        assert_eq!(load(&db, 0), (meta("whole"), bytes(500, 5)));

        persist_chunked(&db, 0, &meta("next"), &bytes(150, 6), 100).expect("persist");
        assert_eq!(load(&db, 0), (meta("next"), bytes(150, 6)));
        assert_eq!(chunks(&db, 0), vec![(2, 0), (2, 1)], "no leftover chunk");

        let txn = db.begin_write().expect("write");
        txn.open_table(SNAPSHOT_CHUNKS)
            .expect("table")
            .remove((0, 2, 1))
            .expect("remove");
        txn.commit().expect("commit");
        assert!(
            load_snapshot(&db, 0).is_err(),
            "a torn snapshot is an error"
        );
    }

    /// A ledger whose snapshot takes a while to encode: accounts and many completed transfers.
    fn busy_ledger(accounts: u64, transfers: u64) -> Ledger {
        use ledger::{
            AccountId, AccountKind, Command, NewAccount, TransferId, TransferKind, TransferRequest,
        };
        let currency = Currency::parse("KES").expect("currency");
        let account = |n: u64| AccountId::parse(&format!("+2547{n:08}")).expect("id");
        let transfer = |id: String, kind, from, to, amount| {
            Command::Transfer(TransferRequest {
                id: TransferId::parse(&id).expect("id"),
                kind,
                from,
                to,
                amount,
                currency,
                memo: String::new(),
                pending: false,
                timeout_s: 60,
            })
        };
        let mut ledger = Ledger::new(currency);
        for n in 0..accounts {
            let new = NewAccount {
                id: account(n),
                kind: AccountKind::Customer,
                name: format!("Subscriber {n}"),
                currency,
            };
            ledger.apply(&Command::CreateAccount(new), 1);
            let issue = transfer(
                format!("issue-{n}"),
                TransferKind::Issue,
                AccountId::float(),
                account(n),
                1_000_000,
            );
            ledger.apply(&issue, 2);
        }
        for n in 0..transfers {
            let (from, to) = (account(n % accounts), account((n * 7 + 1) % accounts));
            let p2p = transfer(format!("t-{n}"), TransferKind::P2p, from, to, 1);
            ledger.apply(&p2p, 3);
        }
        ledger
    }

    /// Goal: while a snapshot is encoded (seconds for a busy group, under the state's read
    /// lock), an apply waiting for the state does not hold a runtime thread: the node's other
    /// work goes on. Before the gate, the apply blocked its worker thread for the whole
    /// encoding; on a runtime of one worker nothing else ran until the encoding ended, and on
    /// a node the next reader of the state stopped the other worker too (a 40-s batch run on
    /// one group stalled for ~5 s while a follower encoded, bench/RESULTS.md session 12).
    /// Method: one worker thread; an apply is started once the encoding holds the gate, then
    /// another task must run, and find the encoding still going, before the apply returns.
    #[test]
    fn an_apply_waiting_for_a_snapshot_encoding_does_not_hold_a_runtime_thread() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (_dir, db) = db();
        let currency = Currency::parse("KES").expect("currency");
        let store = StateMachineStore::open(db, 0, currency).expect("open");
        store.state.write().expect("state").ledger = busy_ledger(1_000, 100_000);
        runtime.block_on(async move {
            let mut builder = store.clone();
            let encoding = store.encoding.clone();
            let build = tokio::spawn(async move { builder.build_snapshot().await });
            // The build holds the gate while it encodes.
            while encoding.try_read().is_ok() {
                tokio::time::sleep(std::time::Duration::from_micros(100)).await;
            }
            let (started, applying) = tokio::sync::oneshot::channel();
            let mut applier = store.clone();
            let apply = tokio::spawn(async move {
                let _ = started.send(());
                let entry = Entry {
                    log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
                    payload: EntryPayload::Blank,
                };
                applier.apply([entry]).await.expect("apply")
            });
            applying.await.expect("the apply started");
            // Let the apply reach the state (and, before the gate, block the only worker).
            std::thread::sleep(std::time::Duration::from_millis(20));
            let encoding_now = encoding.clone();
            let still_encoding = tokio::spawn(async move { encoding_now.try_read().is_err() })
                .await
                .expect("probe");
            assert!(
                still_encoding,
                "another task ran only after the encoding: the waiting apply held the runtime"
            );
            build.await.expect("build").expect("snapshot");
            let outcomes = apply.await.expect("apply task");
            assert_eq!(outcomes.len(), 1, "the apply ran after the encoding");
            let applied = store.reader().read().last_applied;
            assert_eq!(applied.map(|id| id.index), Some(1));
        });
    }
}
