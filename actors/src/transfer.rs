//! The Applier's file transfers: one `Slot` per file being assembled, and the blocking jobs
//! that copy local chunks, write fetched ones (verified) and commit finished files.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferry_engine::assemble::{copy_local_chunks, Assembly, ChunkTask, LocalCopy};
use ferry_engine::{
    ChunkId, ChunkParams, Content, Error as EngineError, FileEntry, TargetDir, TempFile,
};

use crate::messages::ChunkBody;

/// The slots waiting for one chunk, each with where the chunk goes in its file.
pub(crate) type Waiters = Vec<(Arc<Slot>, ChunkTask)>;

/// A replaced file at least this large is released on a thread of its own after the rename
/// (freeing its cached pages takes about 0.1 s per GiB).
const RELEASE_APART: u64 = 16 << 20;

/// A file being assembled in a temp file beside its final name.
pub(crate) struct Slot {
    pub(crate) entry: FileEntry,
    pub(crate) base: Option<Content>,
    pub(crate) replaces: bool,
    target: Arc<TargetDir>,
    /// The file will be made durable before it is installed (with durability on, or on
    /// its own: a large file replacing another, see [`Slot::new`]).
    durable: bool,
    /// Its temp file's blocks are reserved up front, this many bytes (see
    /// [`worth_preallocating`]).
    preallocate: Option<u64>,
    /// Shared so that several jobs can fill one large file at once.
    temp: Mutex<Option<Arc<TempFile>>>,
    remaining: AtomicUsize,
    finished: AtomicBool,
    /// Complete in its temp file and handed over for installing (no longer being assembled).
    sealed: AtomicBool,
    /// Bytes whose writeback copy jobs started as they copied them (see
    /// [`copy_local_chunks`]).
    written_back: AtomicU64,
}

/// A new version at least this large has its temp file's blocks reserved up front.
const PREALLOCATE_FROM: u64 = 16 << 20;

/// True for content worth reserving the blocks of up front ([`TempFile::preallocate`]):
/// large, and without a run of zeros to leave as a hole (FastCDC cuts a run of zeros into
/// chunks of the maximum size, so such a chunk is recognised by its id).
pub(crate) fn worth_preallocating(content: &Content, params: &ChunkParams) -> bool {
    if content.len() < PREALLOCATE_FROM {
        return false;
    }
    let zeros = ChunkId::of(&vec![0u8; params.max as usize]);
    !content
        .chunks
        .iter()
        .any(|c| c.len == params.max && c.id == zeros)
}

/// What happened to a slot in a job.
pub(crate) enum SlotEvent {
    /// The content is complete in the temp file, waiting to be made durable and installed.
    Sealed(Arc<Slot>),
    /// The file is installed under its final name.
    Committed(Arc<Slot>),
    /// The file could not be completed; its temp file is gone.
    Failed(Arc<Slot>, Failure),
    /// The file was given up for now because its source changed while it was sent; its
    /// temp file is gone and its content will be asked for again.
    Withdrawn(Arc<Slot>),
}

/// Why a file could not be completed.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) reason: String,
    /// The file system (or the quota) was full: the file may fit once the other files
    /// being written, or the entries the plan removes, have given their space back.
    pub(crate) no_space: bool,
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure {
            no_space: e.is_no_space(),
            reason: e.to_string(),
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure {
            reason,
            no_space: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        Failure::from(reason.to_owned())
    }
}

/// The outcome of writing one batch of chunk data.
#[derive(Default)]
pub(crate) struct WriteOutcome {
    pub(crate) events: Vec<SlotEvent>,
    /// Chunks whose bytes did not match their id, with the slots still waiting for them.
    pub(crate) bad: Vec<(ChunkId, Waiters)>,
    /// Bytes of all-zero chunks left as holes (once for every place they fill).
    pub(crate) zero_bytes: u64,
    /// The chunks written, handed back: a file started later may need one again before
    /// any file holding it is installed.
    pub(crate) written: Vec<(ChunkId, ChunkBody)>,
}

impl Slot {
    pub(crate) fn new(
        entry: FileEntry,
        base: Option<Content>,
        replaces: bool,
        target: Arc<TargetDir>,
        durable: bool,
        params: &ChunkParams,
    ) -> Arc<Self> {
        let n = entry.content.as_ref().map_or(0, |c| c.chunks.len());
        let large = entry
            .content
            .as_ref()
            .filter(|c| worth_preallocating(c, params))
            .map(Content::len);
        // A large file that replaces another is made durable even without durability:
        // ext4 writes a file renamed over another back at that rename anyway (and its
        // regions started that as they were copied), so the flush costs little more, and
        // only a file flushed before its rename may have its blocks reserved up front.
        // Reserved blocks read as zeros until their data is on disk, and ext4's flush at
        // the rename covers only blocks it still has to allocate: unflushed, a power loss
        // could leave the name holding zeros.
        let durable = durable || (replaces && large.is_some());
        let preallocate = large.filter(|_| durable);
        Arc::new(Slot {
            entry,
            base,
            replaces,
            target,
            durable,
            preallocate,
            temp: Mutex::new(None),
            remaining: AtomicUsize::new(n),
            finished: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            written_back: AtomicU64::new(0),
        })
    }

    /// True for a slot that needs a blocking start job (local chunks to copy, or nothing to
    /// fetch at all) before its remote chunks are requested.
    pub(crate) fn needs_start(plan: &Assembly) -> bool {
        plan.tasks.is_empty() || plan.has_local()
    }

    fn with_temp<T>(
        &self,
        f: impl FnOnce(&TempFile) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let temp = {
            let mut guard = self.temp.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                // Given up (failed or withdrawn) while another job still worked on it: no
                // new temp file, which would hold its space until the slot is dropped.
                if self.is_finished() {
                    return Err(EngineError::Precondition {
                        path: self.entry.path.clone(),
                        reason: "the file was given up while it was written".into(),
                    });
                }
                let temp = self.target.create_temp(&self.entry.path)?;
                if let Some(len) = self.preallocate {
                    temp.preallocate(len);
                }
                *guard = Some(Arc::new(temp));
            }
            guard.clone().expect("temp file was just created")
        };
        // Written without the lock held: positional writes to disjoint ranges.
        f(&temp)
    }

    /// Marks the slot finished; true for the caller that did so first.
    fn finish(&self) -> bool {
        !self.finished.swap(true, Ordering::AcqRel)
    }

    /// True once the content is complete and the file waits to be (or is being) installed.
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Leaves the temp file (and the chunks already in it) in place for the next Applier.
    pub(crate) fn keep_temp(&self) {
        if let Some(t) = self.temp.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            t.keep();
        }
    }

    /// Drops the temp file (removing it) after a failure.
    fn abort(self: &Arc<Self>, why: impl Into<Failure>) -> Option<SlotEvent> {
        self.give_up()
            .then(|| SlotEvent::Failed(self.clone(), why.into()))
    }

    /// Takes the temp file and marks the slot finished under the temp file's lock (so no
    /// job starts another, see `with_temp`), then drops it (removing it) outside the lock;
    /// true for the caller that did so first.
    fn give_up(&self) -> bool {
        let (temp, first) = {
            let mut guard = self.temp.lock().unwrap_or_else(|p| p.into_inner());
            (guard.take(), self.finish())
        };
        drop(temp);
        first
    }

    /// Drops the temp file to try the file again later with fresh content.
    fn withdraw(self: &Arc<Self>) -> Option<SlotEvent> {
        self.give_up().then(|| SlotEvent::Withdrawn(self.clone()))
    }

    /// Counts `n` chunks as written; seals the file when none remain.
    fn written(self: &Arc<Self>, n: usize) -> Option<SlotEvent> {
        if self.remaining.fetch_sub(n, Ordering::AcqRel) != n {
            return None;
        }
        let len = self.entry.content.as_ref().map_or(0, Content::len);
        // A file whose copy jobs started the writeback of (nearly) all of it is left to
        // its fsync: asked again for the whole file, the kernel would mostly drop the pages
        // already written back, which the sealing job waits for (~70 ms per GiB).
        let copied_back = self.written_back.load(Ordering::Acquire);
        let writeback = self.durable && copied_back < len - len / 16;
        let sealed = self.with_temp(|t| {
            t.set_len(len)?;
            t.seal(self.entry.mode, self.entry.mtime, writeback)
        });
        match sealed {
            Ok(()) => {
                self.sealed.store(true, Ordering::Release);
                Some(SlotEvent::Sealed(self.clone()))
            }
            Err(e) => self.abort(e),
        }
    }

    /// Renames the sealed temp file into place.
    fn install(self: &Arc<Self>) -> Option<SlotEvent> {
        let temp = self.temp.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(temp) = temp.and_then(|t| Arc::try_unwrap(t).ok()) else {
            return self.abort("the temp file was lost or still in use when it was installed");
        };
        let installed = if self.base.as_ref().is_some_and(|b| b.len() >= RELEASE_APART) {
            temp.install_holding_old().map(|old| {
                if let Some(old) = old {
                    crate::release::release_apart(old);
                }
            })
        } else {
            temp.install()
        };
        match installed {
            Ok(()) => self.finish().then(|| SlotEvent::Committed(self.clone())),
            Err(e) => self.abort(e),
        }
    }

    fn sync(&self) -> Result<(), EngineError> {
        match self.temp.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(t) => t.sync(),
            None => Ok(()),
        }
    }

    /// Blocking: copies the chunks the target already holds, seals the file if that was
    /// all, and returns what was copied with the chunks still to fetch.
    pub(crate) fn start(self: &Arc<Self>, plan: &Assembly) -> (LocalCopy, Option<SlotEvent>) {
        let writeback = self.replaces || self.durable;
        let copied = self.with_temp(|temp| copy_local_chunks(&self.target, temp, plan, writeback));
        match copied {
            Ok(copy) => {
                let local = plan.tasks.len() - copy.remote.len();
                if writeback {
                    self.written_back.fetch_add(copy.bytes, Ordering::AcqRel);
                }
                let event = if plan.tasks.is_empty() {
                    // An empty file: nothing to write, commit right away.
                    self.remaining.store(1, Ordering::Release);
                    self.written(1)
                } else if local > 0 {
                    self.written(local)
                } else {
                    None
                };
                (copy, event)
            }
            Err(e) => (LocalCopy::default(), self.abort(e)),
        }
    }
}

/// Blocking: verifies each chunk once and writes it to every slot waiting for it,
/// committing the files that become complete. An all-zero chunk is not written: the temp
/// file is new, so the range stays a hole that reads as zeros.
pub(crate) fn write_chunks(batch: Vec<(ChunkBody, ChunkId, Waiters)>) -> WriteOutcome {
    let mut out = WriteOutcome::default();
    for (body, id, waiters) in batch {
        let (data, zeros) = match body {
            ChunkBody::Bytes(data) => (data, false),
            ChunkBody::Zeros(len) => (vec![0u8; len as usize], true),
        };
        let mut wrote = false;
        if !id.matches(&data) {
            out.bad.push((id, waiters));
            continue;
        }
        for (slot, task) in waiters {
            if slot.is_finished() {
                continue;
            }
            // The bytes were verified once above for every slot waiting for them.
            let res = if data.len() != task.chunk.len as usize {
                Err(EngineError::ChunkMismatch {
                    path: slot.entry.path.clone(),
                    offset: task.offset,
                })
            } else if zeros {
                out.zero_bytes += data.len() as u64;
                // Opens the temp file (so even an all-zero file exists) without writing.
                slot.with_temp(|_| Ok(()))
            } else {
                slot.with_temp(|temp| temp.write_at(task.offset, &data))
            };
            let event = match res {
                Ok(()) => {
                    wrote = true;
                    slot.written(1)
                }
                Err(e) => slot.abort(e),
            };
            out.events.extend(event);
        }
        if wrote {
            let body = if zeros {
                ChunkBody::Zeros(data.len() as u32)
            } else {
                ChunkBody::Bytes(data)
            };
            out.written.push((id, body));
        }
    }
    out
}

/// Withdraws every slot waiting for a chunk the sender could not supply (its source file
/// changed or vanished since it was scanned): they are tried again with fresh content.
pub(crate) fn withdraw_slots(waiters: Waiters) -> Vec<SlotEvent> {
    waiters
        .into_iter()
        .filter_map(|(slot, _)| slot.withdraw())
        .collect()
}

/// Fails every slot waiting for a chunk the sender could not supply.
pub(crate) fn fail_slots(waiters: Waiters, reason: &str) -> Vec<SlotEvent> {
    waiters
        .into_iter()
        .filter_map(|(slot, _)| slot.abort(reason))
        .collect()
}

/// Below this many files a batch is made durable with one fsync each; from it on, with a
/// single `syncfs` of the target's file system (one journal commit for the whole batch).
const SYNCFS_FROM: usize = 8;

/// Blocking: makes the batch's durable slots durable (all of them with durability on; else
/// those durable on their own, see [`Slot::new`]), then renames each slot into place. Data
/// reaches the disk before any of the batch's names point at it.
pub(crate) fn install_batch(target: &TargetDir, slots: Vec<Arc<Slot>>) -> Vec<SlotEvent> {
    let mut events = Vec::new();
    let durable = slots.iter().filter(|s| s.durable).count();
    let whole = (durable >= SYNCFS_FROM).then(|| target.sync_all().map_err(Failure::from));
    let ready: Vec<Arc<Slot>> = slots
        .into_iter()
        .filter(|s| {
            let synced = match (s.durable, &whole) {
                (false, _) => Ok(()),
                (true, Some(whole)) => whole.clone(),
                (true, None) => s.sync().map_err(Failure::from),
            };
            match synced {
                Ok(()) => true,
                Err(why) => {
                    events.extend(s.abort(why));
                    false
                }
            }
        })
        .collect();
    events.extend(ready.iter().filter_map(Slot::install));
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::ChunkRef;

    fn content(chunks: &[(u32, ChunkId)]) -> Content {
        let chunks = chunks
            .iter()
            .map(|&(len, id)| ChunkRef { id, len })
            .collect();
        Content::from_chunks(&ChunkParams::default(), chunks)
    }

    /// A regular file entry at `path` with `content`.
    fn file(path: &str, content: Content) -> FileEntry {
        FileEntry {
            size: content.len(),
            content: Some(content),
            ..FileEntry::new(
                ferry_engine::RelPath::new(path).unwrap(),
                ferry_engine::EntryKind::File,
            )
        }
    }

    /// A target folder in a fresh temp dir (kept alive by the returned guard).
    fn target_dir() -> (tempfile::TempDir, Arc<TargetDir>) {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(TargetDir::open(dir.path()).unwrap());
        (dir, target)
    }

    #[test]
    fn only_large_content_without_runs_of_zeros_is_preallocated() {
        let p = ChunkParams::default();
        let data = ChunkId::of(b"data");
        let zeros = ChunkId::of(&vec![0u8; p.max as usize]);
        let big = (PREALLOCATE_FROM / u64::from(p.max) + 1) as usize;
        assert!(worth_preallocating(&content(&vec![(p.max, data); big]), &p));
        assert!(!worth_preallocating(&content(&[(p.max, data); 4]), &p));
        let mut with_zeros = vec![(p.max, data); big];
        with_zeros[big / 2] = (p.max, zeros);
        assert!(!worth_preallocating(&content(&with_zeros), &p));
    }

    #[test]
    fn only_a_file_flushed_before_its_rename_is_preallocated() {
        // Without the fsync before the rename, reserved blocks could still read as zeros
        // under the new name after a power loss.
        let p = ChunkParams::default();
        let big = (PREALLOCATE_FROM / u64::from(p.max) + 1) as usize;
        let entry = file("big", content(&vec![(p.max, ChunkId::of(b"data")); big]));
        let (_dir, target) = target_dir();
        let slot = |durable, replaces| {
            Slot::new(entry.clone(), None, replaces, target.clone(), durable, &p)
        };
        assert_eq!(slot(true, false).preallocate, Some(entry.size));
        let new_file = slot(false, false);
        assert!(!new_file.durable);
        assert_eq!(new_file.preallocate, None);
        // Replacing a file, it is flushed before its rename without durability too.
        let replacing = slot(false, true);
        assert!(replacing.durable);
        assert_eq!(replacing.preallocate, Some(entry.size));
    }

    #[test]
    fn a_slot_given_up_starts_no_new_temp_file_for_a_job_still_working_on_it() {
        let p = ChunkParams::default();
        let entry = file("f", content(&[(4, ChunkId::of(b"data"))]));
        let (dir, target) = target_dir();
        let slot = Slot::new(entry, None, false, target, false, &p);
        let names = || std::fs::read_dir(dir.path()).unwrap().count();
        slot.with_temp(|_| Ok(())).unwrap();
        assert_eq!(names(), 1, "the temp file is made on first use");
        let failed = slot.abort("the disk failed");
        assert!(matches!(failed, Some(SlotEvent::Failed(_, ref f)) if !f.no_space));
        assert_eq!(names(), 0, "giving up removes the temp file");
        // Another copy job of the same file, still running, writes its next stretch.
        assert!(slot.with_temp(|t| t.write_at(0, b"data")).is_err());
        assert_eq!(
            names(),
            0,
            "no new temp file holds space for a file given up"
        );
        assert!(slot.abort("again").is_none(), "a slot fails once");
    }
}
