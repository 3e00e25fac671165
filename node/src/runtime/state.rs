//! The node's state database as the stores the actors keep their indexes in.

use std::sync::{Arc, Mutex};

use ferry_actors::persist::{SavedIndex, SourceStore, TargetStore};
use ferry_engine::store::{SavedSource, SourceHead, StateDb, StoreError};
use ferry_engine::{ChunkParams, Content, FileEntry, RelPath, Seq, StatKey};

/// One replication's source index in the node's database.
pub struct DbSource {
    db: Arc<StateDb>,
    key: String,
    head: Mutex<Option<SourceHead>>,
    /// Read by the node at start (to check it and choose the epoch), handed to the first load.
    preloaded: Mutex<Option<SavedSource>>,
}

impl DbSource {
    /// The index kept under `key`, and its epoch. A saved index that does not decode is
    /// reported and forgotten (with a new epoch, so no target mistakes the new index for it).
    pub fn open(db: Arc<StateDb>, key: String) -> Result<(DbSource, u64), StoreError> {
        let preloaded = match db.load_source(&key) {
            Ok(saved) => saved,
            Err(e @ StoreError::Decode { .. }) => {
                tracing::error!(key = %key, "the saved index cannot be read ({e}); rebuilding it from disk");
                db.drop_source(&key)?;
                None
            }
            Err(e) => return Err(e),
        };
        let epoch = db.epoch(&key)?;
        Ok((
            DbSource {
                db,
                key,
                head: Mutex::new(None),
                preloaded: Mutex::new(preloaded),
            },
            epoch,
        ))
    }

    fn head(&self) -> std::sync::MutexGuard<'_, Option<SourceHead>> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SourceStore for DbSource {
    fn load(&self, params: &ChunkParams) -> Result<SavedIndex, String> {
        let preloaded = self
            .preloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let saved = match preloaded {
            Some(s) => Some(s),
            None => self.db.load_source(&self.key).map_err(|e| e.to_string())?,
        };
        let Some(saved) = saved else {
            return Ok(SavedIndex::default());
        };
        let reserved = saved.head.seq;
        if saved.head.params != *params {
            tracing::info!(key = %self.key, "chunker parameters changed: the saved index is rebuilt");
            let head = SourceHead {
                params: *params,
                complete: false,
                ..saved.head
            };
            self.db
                .write_source(&self.key, &head, &[], true)
                .map_err(|e| e.to_string())?;
            return Ok(SavedIndex {
                reserved,
                index: None,
            });
        }
        if saved.index.is_empty() {
            // Dropped (or never written): nothing to resume from, scan afresh.
            return Ok(SavedIndex {
                reserved,
                index: None,
            });
        }
        // After a crash some recorded entries (a file created and then removed, say) may be
        // missing from the saved index: its stat cache still saves rehashing, but every
        // target is sent a snapshot, as no delta from before this run can be trusted.
        let history_from = if saved.head.complete {
            saved.head.history_from
        } else {
            tracing::info!(key = %self.key, "the last run did not stop cleanly: targets are sent a full index");
            Seq(reserved.0.saturating_add(1))
        };
        Ok(SavedIndex {
            reserved,
            index: Some((saved.index, history_from)),
        })
    }

    fn reserve(
        &self,
        params: &ChunkParams,
        reserved: Seq,
        history_from: Seq,
    ) -> Result<(), String> {
        let head = SourceHead {
            params: *params,
            seq: reserved,
            history_from,
            complete: false,
        };
        self.db
            .write_source(&self.key, &head, &[], false)
            .map_err(|e| e.to_string())?;
        *self.head() = Some(head);
        Ok(())
    }

    fn write(&self, entries: &[(FileEntry, Option<StatKey>)], full: bool) -> Result<(), String> {
        let Some(head) = self.head().clone() else {
            return Err("entries saved before sequences were reserved".into());
        };
        self.db
            .write_source(&self.key, &head, entries, full)
            .map_err(|e| e.to_string())
    }

    fn drop_entries(&self) -> Result<(), String> {
        self.write(&[], true)
    }

    fn complete(&self) -> Result<(), String> {
        let Some(mut head) = self.head().clone() else {
            return Ok(());
        };
        head.complete = true;
        self.db
            .write_source(&self.key, &head, &[], false)
            .map_err(|e| e.to_string())?;
        *self.head() = Some(head);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.db.path().display(), self.key)
    }
}

/// One target's chunk lists in the node's database.
pub struct DbTarget {
    db: Arc<StateDb>,
    key: String,
}

impl DbTarget {
    /// The chunk lists kept under `key`.
    pub fn new(db: Arc<StateDb>, key: String) -> Self {
        DbTarget { db, key }
    }
}

impl TargetStore for DbTarget {
    fn load(&self) -> Result<Vec<(RelPath, StatKey, Content)>, String> {
        match self.db.load_target(&self.key) {
            Ok(rows) => Ok(rows),
            Err(e @ StoreError::Decode { .. }) => {
                // Never trusted: dropped, and the target's files are hashed when needed.
                let _ = self.db.write_target(&self.key, &[], &[], true);
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn write(
        &self,
        upserts: &[(RelPath, StatKey, Content)],
        removed: &[RelPath],
        full: bool,
    ) -> Result<(), String> {
        self.db
            .write_target(&self.key, upserts, removed, full)
            .map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.db.path().display(), self.key)
    }
}
