//! The Applier's file transfers: one `Slot` per file being assembled, and the blocking jobs
//! that copy local chunks, write fetched ones (verified) and commit finished files.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferry_engine::assemble::{copy_local_chunks, Assembly, ChunkTask, LocalCopy};
use ferry_engine::{
    ChunkId, ChunkParams, Content, Error as EngineError, FileEntry, ParentDirs, TargetDir, TempFile,
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
    /// The verified chunks some unfinished file was waiting for, handed back: a file
    /// started later may need one again before any file holding it is installed.
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
        self.with_temp_in(&mut ParentDirs::default(), f)
    }

    /// [`Slot::with_temp`], creating the temp file through `parents`.
    fn with_temp_in<T>(
        &self,
        parents: &mut ParentDirs,
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
                let temp = self.target.create_temp_in(parents, &self.entry.path)?;
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

/// Chunk data verified, then written, this many bytes at a time: small enough that the
/// bytes are still in the CPU's cache when written, large enough that the chunks of one
/// file go to the kernel as one write (see `ferry_engine::aligned`).
const WRITE_WINDOW: u64 = 512 << 10;

/// Whether chunk bytes to write still need checking against their ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Received as the chunk of that id: hashed to check them.
    Verify,
    /// Named or verified by this process already (chunks of files sent whole, chunks written
    /// before): written as they are.
    Known,
}

/// Blocking: verifies each chunk once (unless its bytes are [`Check::Known`]) and writes
/// it to every slot waiting for it, committing the files that become complete. The chunks
/// of one file that follow each other are written with one call. An all-zero chunk is not
/// written: the temp file is new, so the range stays a hole that reads as zeros.
pub(crate) fn write_chunks(
    batch: Vec<(ChunkBody, ChunkId, Waiters)>,
    check: Check,
) -> WriteOutcome {
    let mut out = WriteOutcome::default();
    let mut items = batch.into_iter().peekable();
    loop {
        let mut window = Vec::new();
        let mut bytes = 0u64;
        while let Some(item) =
            items.next_if(|(body, _, _)| window.is_empty() || bytes + body.len() <= WRITE_WINDOW)
        {
            bytes += item.0.len();
            window.push(item);
        }
        if window.is_empty() {
            return out;
        }
        write_window(window, check, &mut out);
    }
}

/// A verified chunk of a window and the slots waiting for it.
struct Verified {
    id: ChunkId,
    data: Vec<u8>,
    zeros: bool,
    waiters: Waiters,
}

/// A slot's share of a window: where each piece goes, and which verified chunk it is.
type Pieces = Vec<(ChunkTask, usize)>;

/// [`write_chunks`] for one window of chunks.
fn write_window(window: Vec<(ChunkBody, ChunkId, Waiters)>, check: Check, out: &mut WriteOutcome) {
    let mut good = Vec::with_capacity(window.len());
    for (body, id, waiters) in window {
        let (data, zeros) = match body {
            ChunkBody::Bytes(data) => (data, false),
            ChunkBody::Zeros(len) => (vec![0u8; len as usize], true),
        };
        if check == Check::Known || id.matches(&data) {
            good.push(Verified {
                id,
                data,
                zeros,
                waiters,
            });
        } else {
            out.bad.push((id, waiters));
        }
    }
    // Each slot with its pieces from this window.
    let mut slots: Vec<(Arc<Slot>, Pieces)> = Vec::new();
    for (i, v) in good.iter().enumerate() {
        for (slot, task) in &v.waiters {
            match slots.iter_mut().find(|(s, _)| Arc::ptr_eq(s, slot)) {
                Some((_, pieces)) => pieces.push((*task, i)),
                None => slots.push((slot.clone(), vec![(*task, i)])),
            }
        }
    }
    let mut wanted = vec![false; good.len()];
    // The window's files share the directories they are created in.
    let mut parents = ParentDirs::default();
    for (slot, mut pieces) in slots {
        if slot.is_finished() {
            continue;
        }
        pieces.sort_unstable_by_key(|(task, _)| task.offset);
        // Verified bytes a file still wanted are handed back even if that file fails here:
        // another one parked on the chunk can use them.
        for (_, i) in &pieces {
            wanted[*i] = true;
        }
        let event = match write_pieces(&slot, &pieces, &good, &mut parents) {
            Ok(zero_bytes) => {
                out.zero_bytes += zero_bytes;
                slot.written(pieces.len())
            }
            Err(e) => slot.abort(e),
        };
        out.events.extend(event);
    }
    for (v, wanted) in good.into_iter().zip(wanted) {
        if wanted {
            let body = if v.zeros {
                ChunkBody::Zeros(v.data.len() as u32)
            } else {
                ChunkBody::Bytes(v.data)
            };
            out.written.push((v.id, body));
        }
    }
}

/// Writes one slot's pieces (in file order), those that follow each other with one call;
/// returns the bytes of all-zero pieces left as holes. The bytes were verified once for
/// every slot waiting for them.
fn write_pieces(
    slot: &Slot,
    pieces: &[(ChunkTask, usize)],
    good: &[Verified],
    parents: &mut ParentDirs,
) -> Result<u64, EngineError> {
    if let Some((task, _)) = pieces
        .iter()
        .find(|(task, i)| good[*i].data.len() != task.chunk.len as usize)
    {
        return Err(EngineError::ChunkMismatch {
            path: slot.entry.path.clone(),
            offset: task.offset,
        });
    }
    // Opened even when every piece is zeros, so an all-zero file exists.
    slot.with_temp_in(parents, |temp| {
        let mut zero_bytes = 0u64;
        let mut run: Vec<&[u8]> = Vec::new();
        let (mut start, mut end) = (0u64, 0u64);
        for (task, i) in pieces {
            let v = &good[*i];
            if v.zeros {
                zero_bytes += v.data.len() as u64;
                continue;
            }
            if !run.is_empty() && task.offset != end {
                temp.write_parts_at(start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                start = task.offset;
            }
            run.push(&v.data);
            end = task.offset + v.data.len() as u64;
        }
        if !run.is_empty() {
            temp.write_parts_at(start, &run)?;
        }
        Ok(zero_bytes)
    })
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

    /// Where `task` puts chunk `id` of `len` bytes at `offset`, fetched.
    fn task(offset: u64, len: u32, id: ChunkId) -> ChunkTask {
        ChunkTask {
            offset,
            chunk: ChunkRef { id, len },
            origin: ferry_engine::assemble::ChunkOrigin::Remote,
        }
    }

    /// A new file `path` of `chunks` (length, id), all to be fetched, neither durable nor
    /// replacing anything.
    fn fetched(target: &Arc<TargetDir>, path: &str, chunks: &[(u32, ChunkId)]) -> Arc<Slot> {
        let p = ChunkParams::default();
        Slot::new(
            file(path, content(chunks)),
            None,
            false,
            target.clone(),
            false,
            &p,
        )
    }

    /// Installs every sealed slot among `events` and returns how many there were.
    fn install_sealed(target: &TargetDir, events: Vec<SlotEvent>) -> usize {
        let sealed: Vec<Arc<Slot>> = events
            .into_iter()
            .filter_map(|e| match e {
                SlotEvent::Sealed(s) => Some(s),
                _ => None,
            })
            .collect();
        let n = sealed.len();
        for e in install_batch(target, sealed) {
            assert!(matches!(e, SlotEvent::Committed(_)));
        }
        n
    }

    #[test]
    fn chunks_shared_by_files_zeros_and_a_corrupt_one_are_each_handled_in_one_batch() {
        let (x, y, z) = (b"hello".to_vec(), b"world!".to_vec(), vec![0u8; 4]);
        let (ix, iy, iz) = (ChunkId::of(&x), ChunkId::of(&y), ChunkId::of(&z));
        let corrupt_id = ChunkId::of(b"yes!");
        let (dir, target) = target_dir();
        let a = fetched(&target, "a", &[(5, ix), (4, iz), (6, iy)]);
        let b = fetched(&target, "b", &[(6, iy), (5, ix)]);
        let c = fetched(&target, "c", &[(4, corrupt_id)]);
        let batch = vec![
            (
                ChunkBody::Bytes(x),
                ix,
                vec![(a.clone(), task(0, 5, ix)), (b.clone(), task(6, 5, ix))],
            ),
            (
                ChunkBody::Bytes(y),
                iy,
                vec![(a.clone(), task(9, 6, iy)), (b.clone(), task(0, 6, iy))],
            ),
            (ChunkBody::Zeros(4), iz, vec![(a.clone(), task(5, 4, iz))]),
            (
                ChunkBody::Bytes(b"nope".to_vec()),
                corrupt_id,
                vec![(c.clone(), task(0, 4, corrupt_id))],
            ),
        ];
        let out = write_chunks(batch, Check::Verify);
        assert_eq!(out.bad.len(), 1);
        assert_eq!(out.bad[0].0, corrupt_id);
        assert!(
            !c.is_finished(),
            "a corrupt chunk is asked for again, not failed"
        );
        assert_eq!(out.zero_bytes, 4);
        let written: Vec<ChunkId> = out.written.iter().map(|(id, _)| *id).collect();
        assert_eq!(written, [ix, iy, iz]);
        assert_eq!(install_sealed(&target, out.events), 2);
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(read("a"), b"hello\0\0\0\0world!");
        assert_eq!(read("b"), b"world!hello");
    }

    #[test]
    fn a_file_failing_on_a_wrong_length_fails_alone_and_its_verified_chunks_are_handed_back() {
        let (x, y) = (b"hello".to_vec(), b"world!".to_vec());
        let (ix, iy) = (ChunkId::of(&x), ChunkId::of(&y));
        let (dir, target) = target_dir();
        // `a`'s list gives y a length its bytes do not have.
        let a = fetched(&target, "a", &[(5, ix), (7, iy)]);
        let b = fetched(&target, "b", &[(6, iy)]);
        let batch = vec![
            (ChunkBody::Bytes(x), ix, vec![(a.clone(), task(0, 5, ix))]),
            (
                ChunkBody::Bytes(y),
                iy,
                vec![(a.clone(), task(5, 7, iy)), (b.clone(), task(0, 6, iy))],
            ),
        ];
        let out = write_chunks(batch, Check::Verify);
        assert!(out.bad.is_empty());
        let written: Vec<ChunkId> = out.written.iter().map(|(id, _)| *id).collect();
        assert_eq!(written, [ix, iy], "both were verified and wanted");
        let failed = out
            .events
            .iter()
            .filter(|e| matches!(e, SlotEvent::Failed(s, _) if Arc::ptr_eq(s, &a)))
            .count();
        assert_eq!(failed, 1);
        assert_eq!(install_sealed(&target, out.events), 1);
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"world!");
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn a_batch_larger_than_a_window_is_written_whole_in_any_order() {
        // Twelve chunks of 100 KiB, out of order: windows of up to five chunks, holding one
        // stretch of consecutive chunks (written together), three, and two.
        let chunks: Vec<Vec<u8>> = (1..=12u8)
            .map(|k| (0..100u32 << 10).map(|i| (i % 253) as u8 ^ k).collect())
            .collect();
        let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId::of(c)).collect();
        let len = chunks[0].len() as u32;
        let list: Vec<(u32, ChunkId)> = ids.iter().map(|id| (len, *id)).collect();
        let (dir, target) = target_dir();
        let slot = fetched(&target, "f", &list);
        let batch = [5usize, 6, 7, 8, 9, 0, 1, 3, 4, 10, 2, 11]
            .into_iter()
            .map(|k| {
                let at = k as u64 * u64::from(len);
                let waiters = vec![(slot.clone(), task(at, len, ids[k]))];
                (ChunkBody::Bytes(chunks[k].clone()), ids[k], waiters)
            })
            .collect();
        let out = write_chunks(batch, Check::Verify);
        assert!(out.bad.is_empty());
        assert_eq!(install_sealed(&target, out.events), 1);
        assert_eq!(
            std::fs::read(dir.path().join("f")).unwrap(),
            chunks.concat()
        );
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
