//! The node's state database as the stores the actors keep their indexes in.

use std::sync::{Arc, Mutex};

use ferry_actors::persist::{IndexWrite, SavedIndex, SourceStore, TargetStore};
use ferry_engine::store::{SavedSource, SourceHead, StateDb, StoreError};
use ferry_engine::{ChunkParams, Content, RelPath, Seq, StatKey};

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
                .write_source(&self.key, &head, &[], &[], true)
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
            .write_source(&self.key, &head, &[], &[], false)
            .map_err(|e| e.to_string())?;
        *self.head() = Some(head);
        Ok(())
    }

    fn write(&self, write: &IndexWrite) -> Result<(), String> {
        let Some(mut head) = self.head().clone() else {
            return Err("entries saved before sequences were reserved".into());
        };
        head.history_from = head
            .history_from
            .max(write.history_from.unwrap_or_default());
        self.db
            .write_source(&self.key, &head, &write.upserts, &write.removed, write.full)
            .map_err(|e| e.to_string())?;
        *self.head() = Some(head);
        Ok(())
    }

    fn drop_entries(&self) -> Result<(), String> {
        self.write(&IndexWrite {
            full: true,
            ..IndexWrite::default()
        })
    }

    fn complete(&self) -> Result<(), String> {
        let Some(mut head) = self.head().clone() else {
            return Ok(());
        };
        head.complete = true;
        self.db
            .write_source(&self.key, &head, &[], &[], false)
            .map_err(|e| e.to_string())?;
        *self.head() = Some(head);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.db.path().display(), self.key)
    }
}

/// The stores of the replication kept under `key`: its source index (with that index's
/// epoch) and its local target's chunk lists (under `target/<key>`).
pub fn replication_stores(
    db: &Arc<StateDb>,
    key: &str,
) -> Result<(DbSource, u64, DbTarget), StoreError> {
    let (source, epoch) = DbSource::open(db.clone(), key.to_owned())?;
    let target = DbTarget::new(db.clone(), format!("target/{key}"));
    Ok((source, epoch, target))
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::{EntryKind, FileEntry};

    fn entry(path: &str, seq: u64) -> (FileEntry, Option<StatKey>) {
        let e = FileEntry {
            mode: 0o644,
            seq: Seq(seq),
            ..FileEntry::new(RelPath::new(path).unwrap(), EntryKind::File)
        };
        (e, None)
    }

    fn store(dir: &std::path::Path) -> (Arc<StateDb>, DbSource) {
        let db = Arc::new(StateDb::open(&dir.join("state.redb")).unwrap());
        let (s, _) = DbSource::open(db.clone(), "k".into()).unwrap();
        (db, s)
    }

    #[test]
    fn deltas_are_trusted_only_after_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let (db, s) = store(dir.path());
        assert!(s.load(&params).unwrap().index.is_none());
        s.reserve(&params, Seq(100), Seq(1)).unwrap();
        s.write(&full(vec![entry("a", 1), entry("b", 2)])).unwrap();
        // A crash: the rows are there, but not marked complete.
        let (_, s) = store_again(&db);
        let saved = s.load(&params).unwrap();
        let (index, history_from) = saved.index.expect("the rows still serve as a stat cache");
        assert_eq!(index.len(), 2);
        assert_eq!(saved.reserved, Seq(100));
        assert_eq!(history_from, Seq(101), "no delta from before this run");
        // A clean stop keeps the history.
        s.reserve(&params, Seq(200), Seq(1)).unwrap();
        s.complete().unwrap();
        let (_, s) = store_again(&db);
        let (_, history_from) = s.load(&params).unwrap().index.unwrap();
        assert_eq!(history_from, Seq(1));
    }

    #[test]
    fn a_dropped_index_is_scanned_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let (db, s) = store(dir.path());
        s.reserve(&params, Seq(100), Seq(1)).unwrap();
        s.write(&full(vec![entry("a", 1)])).unwrap();
        s.drop_entries().unwrap();
        s.complete().unwrap();
        let (_, s) = store_again(&db);
        let saved = s.load(&params).unwrap();
        assert!(
            saved.index.is_none(),
            "an empty saved index must not be resumed from"
        );
        assert_eq!(saved.reserved, Seq(100), "the reservation survives");
    }

    #[test]
    fn compaction_forgets_rows_and_moves_history_forward_together() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let (db, s) = store(dir.path());
        s.reserve(&params, Seq(100), Seq(1)).unwrap();
        s.write(&full(vec![entry("a", 1), entry("b", 2), entry("c", 3)]))
            .unwrap();
        s.write(&IndexWrite {
            removed: vec![RelPath::new("b").unwrap()],
            history_from: Some(Seq(3)),
            ..IndexWrite::default()
        })
        .unwrap();
        // A later write without a history of its own does not move it back.
        s.write(&IndexWrite {
            upserts: vec![entry("d", 4)],
            ..IndexWrite::default()
        })
        .unwrap();
        s.complete().unwrap();
        let (_, s) = store_again(&db);
        let (index, history_from) = s.load(&params).unwrap().index.unwrap();
        assert_eq!(history_from, Seq(3));
        let paths: Vec<&str> = index.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "c", "d"]);
    }

    fn full(upserts: Vec<(FileEntry, Option<StatKey>)>) -> IndexWrite {
        IndexWrite {
            upserts,
            full: true,
            ..IndexWrite::default()
        }
    }

    fn store_again(db: &Arc<StateDb>) -> (Arc<StateDb>, DbSource) {
        let (s, _) = DbSource::open(db.clone(), "k".into()).unwrap();
        (db.clone(), s)
    }
}
