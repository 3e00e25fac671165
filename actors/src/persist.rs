//! Where a Differ keeps its index between runs, and the ordered background writer that
//! saves changes without blocking the actor.
//!
//! Sequence numbers must never repeat within an epoch: a target that acknowledged `N` is
//! sent only entries above `N` after a restart. Saving runs behind sending, so a crash may
//! lose the last saved entries; to keep sequences from going back, each run first durably
//! reserves a block of [`SEQ_BLOCK`] sequences above the previous run's block and numbers
//! its changes from there. Entries lost in a crash only cost a resend: the first rescan
//! finds the files differ from the saved index and gives them new sequences.
//!
//! An Applier may keep its target's chunk lists too ([`TargetStore`]), each saved with the
//! stat of the file it describes and trusted only while that stat is unchanged.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use ferry_engine::scan::entry_from_metadata;
use ferry_engine::{
    ChunkParams, Content, EntryKind, FileEntry, Index, MtimeNs, RelPath, Seq, StatKey,
};

/// Sequences one run may use; a run that uses them all fails and restarts with a new block.
pub const SEQ_BLOCK: u64 = 1 << 32;

/// What previous runs saved.
#[derive(Debug, Default)]
pub struct SavedIndex {
    /// Where the previous run's reserved block ends: this run numbers from here (zero when
    /// nothing was ever saved).
    pub reserved: Seq,
    /// The index, tombstones included, and the oldest sequence a target may resume from
    /// (the index holds every change, and every removal as a tombstone, since then). `None`
    /// when no index was saved or it was built with other chunker parameters.
    pub index: Option<(Index, Seq)>,
}

/// A store for one replication's source index.
pub trait SourceStore: Send + Sync + 'static {
    /// What was saved (an index saved with other chunker parameters is not returned).
    fn load(&self, params: &ChunkParams) -> Result<SavedIndex, String>;
    /// Durably records that sequences up to `reserved` may be in use, and `history_from`.
    fn reserve(&self, params: &ChunkParams, reserved: Seq, history_from: Seq)
        -> Result<(), String>;
    /// Saves one write: raises the saved `history_from`, forgets `removed`, then saves
    /// `upserts` (with `full`, replacing every saved entry), all at once.
    fn write(&self, write: &IndexWrite) -> Result<(), String>;
    /// Forgets the saved entries, keeping the reservation: the next run scans afresh.
    fn drop_entries(&self) -> Result<(), String>;
    /// Records that every entry of this run was saved (called after the last write, when
    /// the replication stops cleanly). Until then the next run trusts no delta from before it.
    fn complete(&self) -> Result<(), String>;
    /// Where the store lives, for messages.
    fn describe(&self) -> String;
}

/// Saves batches in the order they were queued, on a thread of its own. Dropping it lets
/// the thread finish what is queued and exit.
pub struct Persister {
    tx: mpsc::Sender<IndexWrite>,
    /// Says whether a write failed.
    thread: std::thread::JoinHandle<bool>,
    store: Arc<dyn SourceStore>,
}

/// Changes to a saved source index, written in one transaction.
#[derive(Debug, Default)]
pub struct IndexWrite {
    /// Entries to save, a later one for a path replacing an earlier one.
    pub upserts: Vec<(FileEntry, Option<StatKey>)>,
    /// Paths whose rows are forgotten (tombstones compacted away); none is in `upserts`.
    pub removed: Vec<RelPath>,
    /// The oldest sequence targets may now resume from, if it moved: saved with (never
    /// after) the removal of the tombstones it makes unneeded.
    pub history_from: Option<Seq>,
    /// `upserts` replace every saved entry.
    pub full: bool,
}

impl IndexWrite {
    /// Folds a later write into this one, so the result saves what both would in order.
    fn merge(&mut self, next: IndexWrite) {
        if next.full {
            // The full write saves no forgotten rows, but the history they moved stays.
            let history_from = self.history_from.max(next.history_from);
            *self = next;
            self.history_from = history_from;
            return;
        }
        if !next.removed.is_empty() {
            let gone: HashSet<&RelPath> = next.removed.iter().collect();
            self.upserts.retain(|(e, _)| !gone.contains(&e.path));
        }
        if !self.removed.is_empty() && !next.upserts.is_empty() {
            let fresh: HashSet<&RelPath> = next.upserts.iter().map(|(e, _)| &e.path).collect();
            self.removed.retain(|p| !fresh.contains(p));
        }
        self.upserts.extend(next.upserts);
        self.removed.extend(next.removed);
        self.history_from = self.history_from.max(next.history_from);
    }

    fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.removed.is_empty()
            && self.history_from.is_none()
            && !self.full
    }
}

impl Persister {
    /// A writer to `store`; `folder` names it in logs.
    pub fn new(store: Arc<dyn SourceStore>, folder: String) -> std::io::Result<Persister> {
        let (tx, rx) = mpsc::channel::<IndexWrite>();
        let saver = store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ferry-save-{folder}"))
            .spawn(move || {
                let mut broken = false;
                while let Ok(first) = rx.recv() {
                    // Coalesce whatever is queued into one transaction.
                    let mut batch = first;
                    while let Ok(next) = rx.try_recv() {
                        batch.merge(next);
                    }
                    if broken || batch.is_empty() {
                        continue;
                    }
                    if let Err(e) = saver.write(&batch) {
                        // A gap in the saved index would be trusted by the next run: drop it
                        // all instead, so that run starts from a full scan.
                        tracing::error!(folder = %folder, store = %saver.describe(), "cannot save the index ({e}); it will be rebuilt on the next start");
                        if let Err(e) = saver.drop_entries() {
                            tracing::error!(folder = %folder, "cannot discard the saved index either: {e}");
                        }
                        broken = true;
                    }
                }
                broken
            })?;
        Ok(Persister { tx, thread, store })
    }

    /// Blocking: writes everything queued, then marks the saved index complete. A writer
    /// that failed leaves it incomplete (and dropped), so the next run scans afresh.
    pub fn finish(self) -> Result<(), String> {
        let Persister { tx, thread, store } = self;
        drop(tx);
        let broken = thread
            .join()
            .map_err(|_| "the index writer panicked".to_owned())?;
        if broken {
            return Err("a write failed earlier; the saved index was dropped".into());
        }
        store.complete()
    }

    /// Queues a write.
    pub fn save(&self, write: IndexWrite) {
        if !write.is_empty() {
            let _ = self.tx.send(write);
        }
    }
}

/// A store for one target's chunk lists, each valid while the file's StatKey is unchanged.
///
/// An Applier with one reuses the chunk lists of target files whose inode is as it was when
/// they were saved, instead of reading those files again after a restart.
pub trait TargetStore: Send + Sync + 'static {
    /// Every saved chunk list, with the stat of the file it was saved for.
    fn load(&self) -> Result<Vec<(RelPath, StatKey, Content)>, String>;
    /// Deletes `removed`, then saves `upserts` (with `full`, every other saved row is
    /// deleted first, making `upserts` a snapshot).
    fn write(
        &self,
        upserts: &[(RelPath, StatKey, Content)],
        removed: &[RelPath],
        full: bool,
    ) -> Result<(), String>;
    /// Where the store lives, for messages.
    fn describe(&self) -> String;
}

/// What an Applier's target index says of one path when it asks for it to be saved.
#[derive(Clone, Debug)]
pub enum TargetChange {
    /// A file of `size` bytes modified at `mtime` holds `content`: saved under a fresh
    /// `lstat` when the file still has that size and mtime, forgotten otherwise.
    Known {
        /// The file's size in the index.
        size: u64,
        /// The file's mtime in the index.
        mtime: MtimeNs,
        /// Its chunk list.
        content: Content,
    },
    /// No chunk list is known for the path (any more): forgotten.
    Forgotten,
}

/// Saves a target's chunk lists in the order they were queued, on a thread of its own.
/// Dropping it lets the thread finish what is queued and exit; [`TargetPersister::finish`]
/// also waits for that.
pub struct TargetPersister {
    tx: Option<mpsc::Sender<TargetBatch>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct TargetBatch {
    changes: BTreeMap<RelPath, TargetChange>,
    full: bool,
}

impl TargetPersister {
    /// A writer to `store` for the target directory `root`, whose file system keeps file
    /// times in steps of `mtime_step` ns (see [`ferry_engine::TargetDir::probe_mtime_step`]);
    /// `folder` names it in logs.
    pub fn new(
        store: Arc<dyn TargetStore>,
        root: PathBuf,
        folder: String,
        mtime_step: u64,
    ) -> std::io::Result<TargetPersister> {
        let (tx, rx) = mpsc::channel::<TargetBatch>();
        let thread = std::thread::Builder::new()
            .name(format!("ferry-tsave-{folder}"))
            .spawn(move || {
                let mut broken = false;
                while let Ok(first) = rx.recv() {
                    // Coalesce whatever is queued: later changes of a path replace earlier
                    // ones, and a full batch replaces everything before it.
                    let mut batch = first;
                    while let Ok(next) = rx.try_recv() {
                        if next.full {
                            batch = next;
                        } else {
                            batch.changes.extend(next.changes);
                        }
                    }
                    if broken {
                        continue;
                    }
                    let (upserts, removed) = check_changes(&root, batch.changes, mtime_step);
                    if let Err(e) = store.write(&upserts, &removed, batch.full) {
                        // Rows saved by a failed write may be half there: clear them all, so
                        // the next start reads the files it needs instead.
                        tracing::error!(folder = %folder, store = %store.describe(), "cannot save the target's chunk lists ({e}); they will be rebuilt on the next start");
                        if let Err(e) = store.write(&[], &[], true) {
                            tracing::error!(folder = %folder, "cannot discard the saved chunk lists either: {e}");
                        }
                        broken = true;
                    }
                }
            })?;
        Ok(TargetPersister {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `changes` to be saved (with `full`, as a snapshot replacing what is saved).
    pub fn save(&self, changes: Vec<(RelPath, TargetChange)>, full: bool) {
        if changes.is_empty() && !full {
            return;
        }
        if let Some(tx) = &self.tx {
            let changes = changes.into_iter().collect();
            let _ = tx.send(TargetBatch { changes, full });
        }
    }

    /// Waits until everything queued is saved. Blocks: call it off the actor thread.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the target chunk-list writer panicked");
            }
        }
    }
}

/// Splits `changes` into what to save and what to forget: a known chunk list is saved under
/// the file's stat taken now, and only while the file has the size and mtime the index says
/// (one changed behind the Applier's back is forgotten, not saved).
fn check_changes(
    root: &Path,
    changes: BTreeMap<RelPath, TargetChange>,
    mtime_step: u64,
) -> (Vec<(RelPath, StatKey, Content)>, Vec<RelPath>) {
    let mut upserts = Vec::new();
    let mut removed = Vec::new();
    for (path, change) in changes {
        let TargetChange::Known {
            size,
            mtime,
            content,
        } = change
        else {
            removed.push(path);
            continue;
        };
        let stat = std::fs::symlink_metadata(path.under(root))
            .ok()
            .and_then(|md| entry_from_metadata(root, &path, &md).ok())
            .filter(|(e, _)| {
                e.kind == EntryKind::File
                    && e.size == size
                    // Written by Ferry, the index holds the source's time; the disk, that
                    // time as the file system keeps it.
                    && mtime.kept_as(e.mtime, mtime_step)
                    && content.len() == size
            });
        match stat {
            Some((_, stat)) => upserts.push((path, stat, content)),
            None => removed.push(path),
        }
    }
    (upserts, removed)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferry_engine::chunk_reader;

    use super::*;

    /// The paths saved and removed by one write, and whether it was full.
    type Write = (Vec<RelPath>, Vec<RelPath>, bool);

    /// Records every write.
    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<Write>>,
        fail: bool,
    }

    impl TargetStore for Recorder {
        fn load(&self) -> Result<Vec<(RelPath, StatKey, Content)>, String> {
            Ok(Vec::new())
        }
        fn write(
            &self,
            upserts: &[(RelPath, StatKey, Content)],
            removed: &[RelPath],
            full: bool,
        ) -> Result<(), String> {
            let up = upserts.iter().map(|(p, _, _)| p.clone()).collect();
            self.writes
                .lock()
                .unwrap()
                .push((up, removed.to_vec(), full));
            if self.fail {
                return Err("disk full".into());
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "recorder".into()
        }
    }

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A file at `root/name` and what an index would say of it.
    fn known(root: &Path, name: &str, bytes: &[u8]) -> TargetChange {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        let md = std::fs::symlink_metadata(&path).unwrap();
        let (e, _) = entry_from_metadata(root, &rel(name), &md).unwrap();
        TargetChange::Known {
            size: e.size,
            mtime: e.mtime,
            content: chunk_reader(bytes, &ChunkParams::default()).unwrap(),
        }
    }

    #[test]
    fn only_files_still_as_the_index_says_are_saved() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let same = known(root, "same", b"unchanged");
        let grown = known(root, "grown", b"short");
        std::fs::write(root.join("grown"), b"longer now").unwrap();
        let gone = known(root, "gone", b"removed");
        std::fs::remove_file(root.join("gone")).unwrap();
        let changes = BTreeMap::from([
            (rel("same"), same),
            (rel("grown"), grown),
            (rel("gone"), gone),
            (rel("forgotten"), TargetChange::Forgotten),
        ]);
        let (upserts, removed) = check_changes(root, changes, 0);
        assert_eq!(upserts.len(), 1);
        let (p, stat, content) = &upserts[0];
        assert_eq!(p, &rel("same"));
        assert_eq!(stat.size, 9);
        assert_eq!(content.len(), 9);
        assert_eq!(removed, vec![rel("forgotten"), rel("gone"), rel("grown")]);
    }

    #[test]
    fn batches_are_saved_in_order_and_a_failure_clears_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let store = Arc::new(Recorder::default());
        let saver = TargetPersister::new(store.clone(), root.clone(), "t".into(), 0).unwrap();
        saver.save(vec![(rel("a"), known(&root, "a", b"a"))], true);
        saver.save(vec![(rel("a"), TargetChange::Forgotten)], false);
        saver.save(Vec::new(), false);
        saver.finish();
        // Whether or not the two batches were coalesced, `a` ends up forgotten.
        let writes = store.writes.lock().unwrap().clone();
        let last = writes.last().unwrap();
        assert_eq!(last.1, vec![rel("a")]);
        assert!(writes[0].2, "the first write is full");

        let failing = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        let saver = TargetPersister::new(failing.clone(), root.clone(), "t".into(), 0).unwrap();
        saver.save(vec![(rel("b"), known(&root, "b", b"b"))], false);
        saver.finish();
        let writes = failing.writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 2, "the failed write, then the clearing one");
        assert_eq!(writes[1], (Vec::new(), Vec::new(), true));
    }
}
