//! Where a Differ keeps its index between runs, and the ordered background writer that
//! saves changes without blocking the actor.
//!
//! Sequence numbers must never repeat within an epoch: a target that acknowledged `N` is
//! sent only entries above `N` after a restart. Saving runs behind sending, so a crash may
//! lose the last saved entries; to keep sequences from going back, each run first durably
//! reserves a block of [`SEQ_BLOCK`] sequences above the previous run's block and numbers
//! its changes from there. Entries lost in a crash only cost a resend: the first rescan
//! finds the files differ from the saved index and gives them new sequences.

use std::sync::mpsc;
use std::sync::Arc;

use ferry_engine::{ChunkParams, FileEntry, Index, Seq, StatKey};

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
    /// Saves entries (with `full`, replacing every saved entry).
    fn write(&self, entries: &[(FileEntry, Option<StatKey>)], full: bool) -> Result<(), String>;
    /// Forgets the saved entries, keeping the reservation: the next run scans afresh.
    fn drop_entries(&self) -> Result<(), String>;
    /// Where the store lives, for messages.
    fn describe(&self) -> String;
}

/// Saves batches in the order they were queued, on a thread of its own. Dropping it lets
/// the thread finish what is queued and exit.
pub struct Persister {
    tx: mpsc::Sender<Batch>,
}

struct Batch {
    entries: Vec<(FileEntry, Option<StatKey>)>,
    full: bool,
}

impl Persister {
    /// A writer to `store`; `folder` names it in logs.
    pub fn new(store: Arc<dyn SourceStore>, folder: String) -> std::io::Result<Persister> {
        let (tx, rx) = mpsc::channel::<Batch>();
        std::thread::Builder::new()
            .name(format!("ferry-save-{folder}"))
            .spawn(move || {
                let mut broken = false;
                while let Ok(first) = rx.recv() {
                    // Coalesce whatever is queued into one transaction.
                    let mut batch = first;
                    while let Ok(next) = rx.try_recv() {
                        if next.full {
                            batch = next;
                        } else {
                            batch.entries.extend(next.entries);
                        }
                    }
                    if broken {
                        continue;
                    }
                    if let Err(e) = store.write(&batch.entries, batch.full) {
                        // A gap in the saved index would be trusted by the next run: drop it
                        // all instead, so that run starts from a full scan.
                        tracing::error!(folder = %folder, store = %store.describe(), "cannot save the index ({e}); it will be rebuilt on the next start");
                        if let Err(e) = store.drop_entries() {
                            tracing::error!(folder = %folder, "cannot discard the saved index either: {e}");
                        }
                        broken = true;
                    }
                }
            })?;
        Ok(Persister { tx })
    }

    /// Queues `entries` to be saved.
    pub fn save(&self, entries: Vec<(FileEntry, Option<StatKey>)>, full: bool) {
        if entries.is_empty() && !full {
            return;
        }
        let _ = self.tx.send(Batch { entries, full });
    }
}
