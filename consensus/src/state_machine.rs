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

use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOTS: TableDefinition<u32, &[u8]> = TableDefinition::new("snapshots");

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
}

impl StateReader {
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

/// Reads the group's stored snapshot and hands it, borrowed from the database's bytes, to
/// `read`.
fn with_snapshot<T>(
    db: &Database,
    group: u32,
    read: impl FnOnce(StoredSnapshotRef<'_>) -> Result<T, StorageError>,
) -> Result<Option<T>, StorageError> {
    let txn = db.begin_read().map_err(snap_read_err)?;
    let table = match txn.open_table(SNAPSHOTS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(snap_read_err(e)),
    };
    match table.get(group).map_err(snap_read_err)? {
        Some(bytes) => {
            let stored: StoredSnapshotRef<'_> =
                postcard::from_bytes(bytes.value()).map_err(snap_read_err)?;
            read(stored).map(Some)
        }
        None => Ok(None),
    }
}

fn load_snapshot(db: &Database, group: u32) -> Result<Option<StoredSnapshot>, StorageError> {
    with_snapshot(db, group, |stored| {
        Ok(StoredSnapshot {
            meta: stored.meta,
            data: stored.data.to_vec(),
        })
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
        let read = with_snapshot(&db, group, |stored| {
            let ledger = decode_body(stored.data)?;
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
            let kept = StoredSnapshot {
                meta: stored.meta,
                data: stored.data.to_vec(),
            };
            Ok((applied, kept))
        })?;
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
        }
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.state
            .write()
            .expect("state lock poisoned: a panic while applying stops the node")
    }

    /// Persists a snapshot, fsync'd, on the blocking pool.
    async fn persist(&self, stored: StoredSnapshot) -> Result<(), StorageError> {
        // The snapshot kept from the load is no longer the current one.
        drop(self.take_loaded());
        let bytes = postcard::to_allocvec(&stored).map_err(snap_write_err)?;
        let db = self.db.clone();
        let group = self.group;
        let work = move || -> Result<(), StorageError> {
            let mut txn = db.begin_write().map_err(snap_write_err)?;
            txn.set_durability(Durability::Immediate)
                .map_err(snap_write_err)?;
            {
                let mut table = txn.open_table(SNAPSHOTS).map_err(snap_write_err)?;
                table
                    .insert(group, bytes.as_slice())
                    .map_err(snap_write_err)?;
            }
            txn.commit().map_err(snap_write_err)
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(snap_write_err)?
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Encoded under the read lock, on the blocking pool: applies wait for the encoding
        // (about a tenth of a second per million accounts; the node snapshots mostly when a
        // group is quiet), and no copy of the ledger is made. A copy doubled a large ledger's
        // memory while the snapshot was built, and the allocator kept much of it afterwards.
        let state = self.state.clone();
        let since = self.since_snapshot.clone();
        let encode = move || {
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
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
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
        let mut state = self.write_state();
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
        let ledger = decode_body(&data)?;
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        let mut state = self.write_state();
        state.ledger = ledger;
        self.since_snapshot.store(0, Ordering::Release);
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
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
