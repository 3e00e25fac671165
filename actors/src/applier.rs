//! The Applier: owns a target folder; turns source entries into a plan, fetches only the
//! chunks it cannot find locally, assembles files in temp files and installs them atomically.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::assemble::{chunk_tasks, Assembly, ChunkTask};
use ferry_engine::outline::{self, Group, GroupId, Outline, Unresolved};
use ferry_engine::target::is_temp_name;
use ferry_engine::{
    apply_action, diff_within, patch, Action, ChangeKind, ChunkId, ChunkParams, ChunkRef,
    ContentId, DiffOptions, DiffOutcome, EntryKind, EntryState, FileEntry, IgnoreRules, Index,
    MtimeNs, Plan, RelPath, ScanOptions, Seq, SkipKind, TargetDir, TargetIndex,
};

use crate::events::EventKind;
use crate::health::Role;
use crate::messages::{
    Applied, ApplyFailed, ChunkBody, ChunkData, ChunkRequest, FolderId, GroupData, IndexDelta,
    ListForm, NeedChunks, NeedContent, NeedGroups, SkippedPath, Start,
};
use crate::persist::{TargetChange, TargetPersister, TargetStore};
use crate::pool::Pool;
use crate::stash::Stash;
use crate::stats::Stats;
use crate::transfer::{
    fail_slots, install_batch, withdraw_slots, write_chunks, Slot, SlotEvent, Waiters,
};
use crate::wire::encoded_len;

/// Chunks the outlines a Sender across the network has pending may claim together (about
/// 5 GiB of chunk lists: 4 TiB of large files at the default average chunk size, in one
/// update). Rebuilding copies each group's chunks once per mention, so a few bytes of
/// outline could otherwise claim any amount of memory; an update outlining more than that
/// is refused, for now, as the price of the bound (a configured memory budget would be
/// the better one).
const MAX_REMOTE_OUTLINED_CHUNKS: u64 = 1 << 27;
/// Mode bits a Sender across the network never sets here: set-user-ID and set-group-ID.
const REMOTE_MODE_DROPPED: u32 = 0o6000;
/// Files assembled at once, at most: small files need many in flight to keep a link busy
/// (each costs a round trip), and each holds a temp file open (see [`file_caps`]).
const MAX_ACTIVE_FILES: usize = 512;
/// Files assembled at once for a local target (no round trip to hide; each costs memory).
const LOCAL_ACTIVE_FILES: usize = 64;
/// Chunk bytes requested but not yet received, at most.
const MAX_INFLIGHT_BYTES: u64 = 16 << 20;
/// A `NeedChunks` message asks for at most this many bytes.
const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// A chunk that arrives corrupt is asked for again this many times before its files fail.
const CHUNK_RETRIES: u32 = 3;
/// Source files asked for in one `NeedContent`, at most...
const CONTENT_BATCH_FILES: usize = 1024;
/// ...or about this many bytes of them.
const CONTENT_BATCH_BYTES: u64 = 32 << 20;
/// ... or, when the chunks come along inline, this many bytes: the stash fills and drains
/// in smaller steps.
const INLINE_BATCH_BYTES: u64 = 4 << 20;
/// Chunks taken from the stash are written by jobs of at most this many bytes...
const STASHED_JOB_BYTES: u64 = 1 << 20;
/// ...or this many chunks.
const STASHED_JOB_CHUNKS: usize = 32;
/// A batch of complete files is installed when it reaches this many files...
const FLUSH_FILES: usize = 256;

/// How many files may be assembled at once and how many complete ones wait to be installed:
/// [`MAX_ACTIVE_FILES`] and [`FLUSH_FILES`], fewer when the open-file limit is low. Every
/// one of them holds a temp file open, and several folders share the process's limit.
fn file_caps() -> (usize, usize) {
    static CAPS: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *CAPS.get_or_init(|| {
        let share =
            usize::try_from(ferry_engine::target::open_files_limit() / 16).unwrap_or(usize::MAX);
        (
            share.clamp(16, MAX_ACTIVE_FILES),
            share.clamp(16, FLUSH_FILES),
        )
    })
}
/// ... or this many bytes (or when nothing else is being assembled).
const FLUSH_BYTES: u64 = 64 << 20;
/// Blocking file-system jobs at once: writes and fsyncs are latency-bound, so wider than the core count.
const IO_JOBS: usize = 16;
/// A file's local chunks are copied by one job per region of this many bytes.
const REGION_BYTES: u64 = 16 << 20;
/// A file whose source keeps changing while it is sent is tried this many times, then skipped.
const REFETCHES: u32 = 3;
/// Groups asked for in one `NeedGroups`: the reply holds at most this many groups of at
/// most 256 chunks (~12 KB each encoded), ~6 MB, well within a frame whatever the file's
/// size (a 1 TiB file at the default sizes has ~1,000 such requests).
const GROUPS_PER_REQUEST: usize = 512;

/// How an Applier decides and writes.
#[derive(Clone, Debug)]
pub struct ApplierOptions {
    /// Compare content even when size and mtime agree.
    pub checksum: bool,
    /// Plan only: report what would change and write nothing.
    pub dry_run: bool,
    /// fsync file data and directories before acknowledging.
    pub durable: bool,
    /// Chunker parameters (must match the source's).
    pub params: ChunkParams,
    /// The Sender is another node: a chunk that does not match its id is a protocol error
    /// (an honest Sender verifies every chunk it reads), not a reason to ask again.
    pub untrusted_sender: bool,
    /// Target entries left out of the target scan: never deleted, replaced or reused.
    pub ignore: IgnoreRules,
    /// The Sender is across a network: every chunk asked for costs a round trip, so the
    /// Applier spends memory to ask less and sooner. Up to `MAX_ACTIVE_FILES` files are
    /// assembled at once (else `LOCAL_ACTIVE_FILES`); into a target holding no file
    /// content at all, small files' chunks are asked for along with their chunk lists
    /// (`NeedContent::inline`: the source reads each once, no round trip per file); the
    /// chunks written last are kept for files that need them again. Costs up to about
    /// 60 MiB more while an initial sync lasts.
    pub remote: bool,
}

/// The recipients through which an Applier answers its Sender, local or remote.
#[derive(Clone)]
pub struct SenderLink {
    /// Requests for source chunk lists.
    pub need_content: Recipient<NeedContent>,
    /// Requests for chunk data.
    pub need_chunks: Recipient<NeedChunks>,
    /// Requests for groups of outlined chunk lists.
    pub need_groups: Recipient<NeedGroups>,
    /// Acknowledgements.
    pub applied: Recipient<Applied>,
    /// Fatal failures.
    pub failed: Recipient<ApplyFailed>,
}

/// A source file whose chunk list arrived as an outline and is being rebuilt.
struct PendingList {
    /// The sequence of the entry the outline belongs to.
    seq: Seq,
    id: ContentId,
    outline: Outline,
    /// Groups the Sender supplied.
    supplied: HashMap<GroupId, Vec<ChunkRef>>,
    /// The number of chunks of each group the outline names.
    sizes: HashMap<GroupId, u32>,
    /// Groups asked for and not supplied yet.
    awaited: HashSet<GroupId>,
    /// Group requests sent and not answered yet: when the last is answered and a group
    /// asked for is still missing, the Sender did not supply it.
    parts: u32,
}

/// A plan being carried out.
struct Execution {
    seq: Seq,
    post: Vec<Action>,
    queue: VecDeque<Arc<Slot>>,
    active: usize,
    jobs: usize,
    waiting: HashMap<ChunkId, Waiters>,
    requests: VecDeque<ChunkRequest>,
    inflight: u64,
    /// Chunks taken from the stash for files just started, to be written.
    stashed: Vec<(ChunkId, ChunkBody)>,
    /// Chunks in write jobs now (how many jobs each).
    writing: HashMap<ChunkId, u32>,
    /// Chunks that files started since wait for while a job writes them: written again
    /// from that job's bytes once it is done, never asked for twice.
    parked: HashSet<ChunkId>,
    retries: HashMap<ChunkId, u32>,
    dirs: BTreeSet<Option<RelPath>>,
    /// Complete files waiting to be made durable and installed as a batch.
    sealed: Vec<Arc<Slot>>,
    sealed_bytes: u64,
    /// Some file was withdrawn to be sent again: the plan's sequence is not reached yet.
    withdrawn: bool,
    /// A plan made while content was still being hashed at the source: it only adds, and
    /// what it leaves out follows, so it acknowledges nothing.
    partial: bool,
    /// Every file started (gone once it ends), for [`Retire`] to keep their temp files
    /// whatever job holds them; pruned as it doubles.
    started: Vec<std::sync::Weak<Slot>>,
}

/// Applies a source folder's index to one target folder.
pub struct Applier {
    folder: FolderId,
    target: Arc<TargetDir>,
    opts: ApplierOptions,
    sender: SenderLink,
    stats: Arc<Stats>,
    io: Pool,
    /// Copies of local chunks: verifying is CPU work, and more copy jobs than cores only
    /// queue on the temp file's inode lock (spinning on it).
    copier: Pool,
    hasher: Pool,
    target_index: Option<TargetIndex>,
    /// The source's entries but tombstones: a removal is applied by its absence, so they
    /// are not kept (under endless churn they would grow without bound).
    source: Index,
    /// The newest removal received: a content reply this old for a path not in `source`
    /// is stale (it crossed the removal).
    forgotten: Seq,
    have_snapshot: bool,
    upto: Seq,
    content_requests: usize,
    /// Chunks sent inline with content replies, and the content requests not sent yet.
    stash: Stash,
    /// Source files whose content was asked for and has not arrived: plans made meanwhile
    /// leave them out (see [`Applier::try_plan`]), and each goes (back) into `changed` when
    /// it leaves this set, so the next plan looks at it.
    in_flight: HashSet<RelPath>,
    target_jobs: usize,
    asked: HashSet<RelPath>,
    /// Something arrived since the last plan was made.
    dirty: bool,
    /// Paths changed since the last plan was made, the only ones the next plan looks at;
    /// `None` for the whole folder (after a snapshot, a scan of the target or a retry).
    changed: Option<BTreeSet<RelPath>>,
    exec: Option<Execution>,
    skipped: Vec<SkippedPath>,
    /// Whether a plan left paths not applied since the last retry was armed.
    failed_since_retry: bool,
    /// A retry of what was not applied is scheduled.
    retry_armed: bool,
    /// The delay before the next retry (doubling while retries keep failing).
    retry_delay: std::time::Duration,
    /// Paths whose action failed: what the target holds there is looked at again before
    /// the retry, as the target index may no longer say what is on disk.
    stale: BTreeSet<RelPath>,
    /// Files withdrawn because their source changed while they were sent, with attempts.
    refetches: HashMap<RelPath, u32>,
    /// Outlined chunk lists being rebuilt.
    pending: HashMap<RelPath, PendingList>,
    /// Where the target's chunk lists are kept between runs, if anywhere.
    target_store: Option<Arc<dyn TargetStore>>,
    /// Saves them, once the target is scanned.
    target_saver: Option<TargetPersister>,
    /// Paths whose chunk list this Applier learned or changed since it last saved.
    learned: BTreeSet<RelPath>,
    /// The next save replaces everything saved (the first after the scan).
    save_full: bool,
}

/// What an Applier knew of the source: the view a successor on the same target starts from
/// when the same source reconnects.
#[derive(Clone, Debug)]
pub struct SourceView {
    /// The source entries received.
    pub index: Index,
    /// The highest sequence they bring the target to.
    pub upto: Seq,
}

/// The first delay before retrying paths a plan could not apply.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest delay between retries.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// → Applier: stop, and answer once none of this Applier's work still touches the target.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Retired")]
pub struct Retire;

/// The answer to [`Retire`].
#[derive(Debug, MessageResponse)]
pub struct Retired {
    /// The source view, if a snapshot had been received.
    pub view: Option<SourceView>,
}

impl Applier {
    /// An Applier for `target`, answering through `sender`.
    pub fn new(
        folder: FolderId,
        target: TargetDir,
        opts: ApplierOptions,
        sender: SenderLink,
        stats: Arc<Stats>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let params = opts.params;
        Applier {
            folder,
            target: Arc::new(target.keeping(opts.ignore.clone())),
            opts,
            sender,
            stats,
            io: Pool::new(IO_JOBS),
            copier: Pool::new(cores * 2),
            hasher: Pool::new(cores),
            target_index: None,
            source: Index::new(params),
            forgotten: Seq::default(),
            have_snapshot: false,
            upto: Seq::default(),
            content_requests: 0,
            stash: Stash::default(),
            in_flight: HashSet::new(),
            target_jobs: 0,
            asked: HashSet::new(),
            dirty: false,
            changed: None,
            exec: None,
            skipped: Vec::new(),
            failed_since_retry: false,
            retry_armed: false,
            retry_delay: RETRY_FIRST,
            stale: BTreeSet::new(),
            refetches: HashMap::new(),
            pending: HashMap::new(),
            target_store: None,
            target_saver: None,
            learned: BTreeSet::new(),
            save_full: true,
        }
    }

    /// Keeps the target's chunk lists in `store`: at start, those of files whose stat did
    /// not change are reused instead of reading the files again.
    pub fn with_target_store(mut self, store: Arc<dyn TargetStore>) -> Self {
        self.target_store = Some(store);
        self
    }

    /// Notes that the chunk list of `path` (and of any file below it) was learned or changed,
    /// to be saved with the next acknowledgement.
    fn learn(&mut self, path: &RelPath) {
        if self.target_saver.is_none() {
            return;
        }
        self.learned.insert(path.clone());
        if let Some(index) = &self.target_index {
            let below = index.index().subtree(path).skip(1);
            self.learned.extend(below.map(|e| e.path.clone()));
        }
    }

    /// Queues what the target index now says of every learned path.
    fn save_target_index(&mut self) {
        let (Some(saver), Some(index)) = (&self.target_saver, &self.target_index) else {
            return;
        };
        let changes = std::mem::take(&mut self.learned)
            .into_iter()
            .map(|p| {
                let change = match index.get(&p) {
                    Some(e) if e.kind == EntryKind::File && e.is_present() => match &e.content {
                        Some(c) => TargetChange::Known {
                            size: e.size,
                            mtime: e.mtime,
                            content: c.clone(),
                        },
                        None => TargetChange::Forgotten,
                    },
                    _ => TargetChange::Forgotten,
                };
                (p, change)
            })
            .collect();
        saver.save(changes, self.save_full);
        self.save_full = false;
    }

    /// Forgets the saved chunk lists of the paths a plan is about to touch, before it
    /// touches them: a save queued earlier, whose check of the file may run after the file
    /// is replaced, is then overridden.
    fn forget_saved<'a>(
        &self,
        actions: impl Iterator<Item = &'a Action>,
        files: &VecDeque<Arc<Slot>>,
    ) {
        let (Some(saver), Some(index)) = (&self.target_saver, &self.target_index) else {
            return;
        };
        let mut paths: BTreeSet<RelPath> = BTreeSet::new();
        let touched = actions
            .flat_map(|a| match a {
                Action::Rename { from, entry } => vec![from, &entry.path],
                _ => vec![a.path()],
            })
            .chain(files.iter().map(|s| &s.entry.path));
        for p in touched {
            paths.extend(
                index
                    .index()
                    .subtree(p)
                    .filter(|e| e.content.is_some())
                    .map(|e| e.path.clone()),
            );
        }
        let changes = paths
            .into_iter()
            .map(|p| (p, TargetChange::Forgotten))
            .collect();
        saver.save(changes, false);
    }

    /// Starts from `view` instead of waiting for a snapshot: the target already received
    /// it from the same source, and the source sends only what is newer.
    pub fn resume(mut self, view: SourceView) -> Self {
        // A view saved by an older version may still hold tombstones.
        let entries = view
            .index
            .into_entries()
            .into_iter()
            .filter(|(e, _)| e.state != EntryState::Deleted)
            .collect();
        self.source = Index::from_sorted(self.opts.params, entries);
        self.upto = view.upto;
        self.forgotten = view.upto;
        self.changed = None;
        self.have_snapshot = true;
        self
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(actor = "applier", folder = %self.folder, "{reason}");
        let msg = ApplyFailed {
            folder: self.folder.clone(),
            reason,
        };
        self.meter(&msg);
        self.sender.failed.do_send(msg);
    }

    /// Counts a message to the Sender as metadata exchanged.
    fn meter<M: serde::Serialize>(&self, msg: &M) {
        Stats::add(&self.stats.bytes_metadata, encoded_len(msg));
        // A remote Applier's Sender is on another node, with counters of its own.
        if !self.opts.untrusted_sender {
            self.stats.actors.queued(Role::Sender);
        }
    }

    /// Delivers a request to the Sender with backpressure; a Sender that is gone is a failure.
    fn deliver_to_sender<M>(
        &mut self,
        request: actix::dev::RecipientRequest<M>,
        ctx: &mut Context<Self>,
    ) where
        M: Message<Result = ()> + Send + 'static,
    {
        ctx.spawn(request.into_actor(self).map(|r, act, _| {
            if let Err(e) = r {
                act.fail(format!("sender is gone: {e}"));
            }
        }));
    }

    /// Makes the next plan look at `path` (and what is below and above it).
    fn changed_at(&mut self, path: &RelPath) {
        if let Some(c) = self.changed.as_mut() {
            c.insert(path.clone());
        }
    }

    fn skip(&mut self, path: &RelPath, reason: String) {
        tracing::warn!(folder = %self.folder, path = %path, "not applied: {reason}");
        Stats::add(&self.stats.skipped, 1);
        self.stats.events.publish(
            &self.folder,
            EventKind::Error {
                message: format!("{path} not applied: {reason}"),
            },
        );
        self.failed_since_retry = true;
        self.skipped.push(SkippedPath {
            path: path.to_string(),
            reason,
        });
    }

    /// Diffs when everything needed is known; asks for content or starts applying.
    ///
    /// While source content is still being hashed, a plan leaving those files out runs if
    /// it only adds (`Plan::is_additive`): an initial sync writes files as their chunk lists
    /// arrive instead of after the whole tree is hashed. It acknowledges nothing; the plan
    /// made once all content is in does.
    fn try_plan(&mut self, ctx: &mut Context<Self>) {
        if !self.dirty || self.exec.is_some() || !self.have_snapshot || self.target_jobs > 0 {
            return;
        }
        if self.content_requests == 0 {
            // Paths a reply left out will not come: the next plan finds them still without
            // content and gives up on them.
            for p in std::mem::take(&mut self.in_flight) {
                self.changed_at(&p);
            }
        }
        let partial = self.content_requests > 0;
        if partial && (self.in_flight.is_empty() || self.opts.dry_run) {
            return;
        }
        if !self.pending.is_empty() && !self.rebuild_lists(ctx) {
            return;
        }
        let Some(target_index) = &self.target_index else {
            return;
        };
        let opts = DiffOptions {
            checksum: self.opts.checksum,
        };
        let none = HashSet::new();
        let pending = if partial { &self.in_flight } else { &none };
        // A partial plan leaves the files in flight out: it need not look at them at all
        // (they stay in `changed` for the plan made once they arrive).
        let arrived: Option<BTreeSet<RelPath>> = match &self.changed {
            Some(c) if partial => Some(
                c.iter()
                    .filter(|p| !self.in_flight.contains(*p))
                    .cloned()
                    .collect(),
            ),
            _ => None,
        };
        let scope = arrived.as_ref().or(self.changed.as_ref());
        match diff_within(&self.source, target_index.index(), scope, pending, opts) {
            DiffOutcome::NeedContent(needs) => self.resolve(needs, ctx),
            DiffOutcome::Ready(plan) if partial => {
                self.dirty = false;
                if plan.actions.is_empty() || !plan.is_additive() {
                    // Nothing to do yet, or removals that must wait for the whole source.
                    return;
                }
                // Everything but the files in flight is planned: only they, and what
                // arrives from now on, are left to look at (each file in flight goes back
                // into `changed` when it leaves `in_flight`).
                let in_flight = &self.in_flight;
                self.changed
                    .get_or_insert_with(BTreeSet::new)
                    .retain(|p| in_flight.contains(p));
                self.execute(plan, true, ctx);
            }
            DiffOutcome::Ready(plan) => {
                self.asked.clear();
                self.dirty = false;
                // A dry run applies nothing: its next plan must look at everything again.
                if !self.opts.dry_run {
                    self.changed = Some(BTreeSet::new());
                }
                if self.opts.dry_run {
                    self.acknowledge(self.upto, Some(plan));
                } else {
                    self.execute(plan, false, ctx);
                }
            }
        }
    }

    fn resolve(&mut self, needs: ferry_engine::ContentNeeds, ctx: &mut Context<Self>) {
        // A path asked for once and still without content will not get any: leave it alone
        // rather than ask forever.
        let mut source = Vec::new();
        for p in needs.source {
            if self.asked.insert(p.clone()) {
                source.push(p);
            } else if let Some(e) = self.source.get_mut(&p) {
                e.state = EntryState::Unreadable;
                let reason = "the source did not provide its content".to_owned();
                self.skip(&p, reason);
            }
        }
        // In batches, so the first files can be planned while the rest are hashed.
        let inline = self.opts.remote && !self.opts.dry_run && self.target_holds_no_content();
        let batch_limit = if inline {
            INLINE_BATCH_BYTES
        } else {
            CONTENT_BATCH_BYTES
        };
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let count = source.len();
        for (i, p) in source.into_iter().enumerate() {
            batch_bytes += self.source.get(&p).map_or(0, |e| e.size);
            self.in_flight.insert(p.clone());
            batch.push(p);
            if batch.len() >= CONTENT_BATCH_FILES || batch_bytes >= batch_limit || i + 1 == count {
                self.content_requests += 1;
                self.stash.push_request(NeedContent {
                    folder: self.folder.clone(),
                    paths: std::mem::take(&mut batch),
                    inline,
                });
                batch_bytes = 0;
            }
        }
        self.pump_content(ctx);
        for group in needs.target.chunks(32) {
            let group = group.to_vec();
            let target = self.target.clone();
            let params = self.opts.params;
            let pool = self.hasher.clone();
            self.target_jobs += 1;
            let job = async move {
                pool.run("hash target files", move || {
                    group
                        .into_iter()
                        .map(|p| {
                            let r = target.hash_file(&p, &params);
                            (p, r)
                        })
                        .collect::<Vec<_>>()
                })
                .await
            };
            ctx.spawn(job.into_actor(self).map(|res, act, ctx| {
                act.target_jobs -= 1;
                match res {
                    Ok(results) => {
                        let index = act
                            .target_index
                            .as_mut()
                            .expect("target scanned before hashing");
                        for (p, r) in results {
                            if let Ok(c) = &r {
                                Stats::add(&act.stats.target_bytes_hashed, c.len());
                            }
                            index.set_content(&p, r.ok());
                            if act.target_saver.is_some() {
                                act.learned.insert(p);
                            }
                        }
                    }
                    Err(e) => return act.fail(e.to_string()),
                }
                act.try_plan(ctx);
            }));
        }
        if self.content_requests == 0 && self.target_jobs == 0 {
            self.try_plan(ctx);
        }
    }

    /// Sends the content requests the stash lets go now.
    fn pump_content(&mut self, ctx: &mut Context<Self>) {
        while let Some(msg) = self.stash.next_request(self.exec.is_some()) {
            self.meter(&msg);
            let request = self.sender.need_content.send(msg);
            self.deliver_to_sender(request, ctx);
        }
    }

    /// True when the target holds no file content at all (nothing to reuse for any chunk):
    /// small files' chunks are then asked for inline, with their chunk lists.
    fn target_holds_no_content(&self) -> bool {
        self.target_index.as_ref().is_some_and(|t| {
            t.chunks().is_empty()
                && !t
                    .index()
                    .iter()
                    .any(|e| e.kind == EntryKind::File && e.is_present())
        })
    }

    /// Acknowledges `seq`: the sequence the applied plan was made from (deltas that arrived
    /// while it ran are newer and acknowledged by the next plan).
    fn acknowledge(&mut self, seq: Seq, dry_run_plan: Option<Plan>) {
        // Nothing of this plan still touches the target: what it learned can be saved.
        self.save_target_index();
        let msg = Applied {
            folder: self.folder.clone(),
            seq,
            skipped: std::mem::take(&mut self.skipped),
            dry_run_plan,
            counts: self.stats.apply_counts(),
        };
        self.meter(&msg);
        self.sender.applied.do_send(msg);
    }

    /// Removes the temp files a cut transfer left, once a plan that could copy from them
    /// has been applied (before it is acknowledged, so a run that ends there leaves none),
    /// then `then`. Runs in this actor's context, so a retired Applier's removal never
    /// starts after its successor has scanned (and may be copying from) the same files.
    fn remove_leftovers(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let doomed = match self.target_index.as_mut() {
            Some(index) => index.take_leftovers(),
            None => Vec::new(),
        };
        if doomed.is_empty() {
            return then(self, ctx);
        }
        // A removal moves its directory's mtime, which the plan already set to the
        // source's: it is set again after.
        let dirs: BTreeMap<RelPath, (u32, MtimeNs)> = doomed
            .iter()
            .filter_map(|p| p.parent())
            .filter_map(|d| {
                let e = self.source.get(&d)?;
                (e.kind == EntryKind::Dir && e.is_present()).then_some((d, (e.mode, e.mtime)))
            })
            .collect();
        let target = self.target.clone();
        let folder = self.folder.clone();
        let pool = self.io.clone();
        let job = async move {
            let r = pool
                .run("remove leftover temp files", move || {
                    for p in doomed {
                        match target.remove(&p, EntryKind::File) {
                            Ok(()) => tracing::debug!(folder = %folder, path = %p, "leftover temp file removed"),
                            Err(e) => tracing::warn!(folder = %folder, path = %p, "cannot remove leftover temp file: {e}"),
                        }
                    }
                    for (d, (mode, mtime)) in dirs {
                        if let Err(e) = target.set_meta(&d, EntryKind::Dir, mode, mtime) {
                            tracing::warn!(folder = %folder, path = %d, "cannot set the directory's metadata again after removing a leftover temp file: {e}");
                        }
                    }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!("{e}");
            }
        };
        ctx.spawn(job.into_actor(self).map(move |(), act, ctx| then(act, ctx)));
    }

    fn count(&self, change: Option<ChangeKind>) {
        let s = &self.stats;
        match change {
            Some(ChangeKind::Created) => Stats::add(&s.created, 1),
            Some(ChangeKind::Updated) => Stats::add(&s.updated, 1),
            Some(ChangeKind::Metadata) => Stats::add(&s.metadata_only, 1),
            Some(ChangeKind::Removed) => Stats::add(&s.removed, 1),
            Some(ChangeKind::Renamed) => Stats::add(&s.renamed, 1),
            None => {}
        }
    }

    fn execute(&mut self, plan: Plan, partial: bool, ctx: &mut Context<Self>) {
        let mut pre = Vec::new();
        let mut post = Vec::new();
        let mut queue = VecDeque::new();
        for a in plan.actions {
            match a {
                Action::WriteFile {
                    entry,
                    base,
                    replaces,
                } => {
                    if entry.content.is_none() {
                        self.skip(&entry.path, "the source sent no chunk list for it".into());
                        continue;
                    }
                    Stats::add(&self.stats.files_planned, 1);
                    Stats::add(&self.stats.bytes_planned, entry.size);
                    queue.push_back(Slot::new(
                        entry,
                        base,
                        replaces,
                        self.target.clone(),
                        self.opts.durable,
                        &self.opts.params,
                    ));
                }
                Action::Remove { .. } | Action::SetDirMeta { .. } => post.push(a),
                other => pre.push(other),
            }
        }
        self.forget_saved(pre.iter().chain(&post), &queue);
        self.exec = Some(Execution {
            seq: self.upto,
            post,
            queue,
            active: 0,
            jobs: 1,
            waiting: HashMap::new(),
            requests: VecDeque::new(),
            inflight: 0,
            stashed: Vec::new(),
            writing: HashMap::new(),
            parked: HashSet::new(),
            retries: HashMap::new(),
            dirs: BTreeSet::new(),
            sealed: Vec::new(),
            sealed_bytes: 0,
            withdrawn: false,
            partial,
            started: Vec::new(),
        });
        self.run_actions(pre, ctx, |act, ctx| {
            if let Some(x) = act.exec.as_mut() {
                x.jobs -= 1;
            }
            act.pump_files(ctx);
            act.check_done(ctx);
        });
    }

    /// Runs plain actions in order on the I/O pool, recording their effects, then `then`.
    fn run_actions(
        &mut self,
        actions: Vec<Action>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let target = self.target.clone();
        let pool = self.io.clone();
        let job = async move {
            pool.run("apply actions", move || {
                // What is at or below a path that could not be cleared is not tried: it
                // would fail too, and the failed clear already says why.
                let mut uncleared: Vec<RelPath> = Vec::new();
                actions
                    .into_iter()
                    .map(|a| {
                        if uncleared.iter().any(|u| a.path().is_within(u)) {
                            return (a, None);
                        }
                        let r = apply_action(&target, &a);
                        if r.is_err() && matches!(a, Action::Clear { .. }) {
                            uncleared.push(a.path().clone());
                        }
                        (a, Some(r))
                    })
                    .collect::<Vec<_>>()
            })
            .await
        };
        ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(results) => {
                    let mut uncleared = Vec::new();
                    for (a, r) in results {
                        let Some(r) = r else {
                            act.stale.insert(a.path().clone());
                            continue;
                        };
                        if r.is_err() && matches!(a, Action::Clear { .. }) {
                            uncleared.push(a.path().clone());
                        }
                        match r {
                            Ok(effect) => {
                                if effect.wrote {
                                    if let Some(x) = act.exec.as_mut() {
                                        // Directories whose entries changed are fsynced
                                        // before the plan is acknowledged.
                                        x.dirs.insert(a.path().parent());
                                        if let Action::Rename { from, .. } = &a {
                                            x.dirs.insert(from.parent());
                                        }
                                    }
                                    act.count(a.change());
                                    act.log_change(&a);
                                    act.record(&a);
                                }
                            }
                            Err(e) => {
                                act.stale.insert(a.path().clone());
                                // A rename may have happened before what failed after it.
                                if let Action::Rename { from, .. } = &a {
                                    act.stale.insert(from.clone());
                                }
                                act.skip(a.path(), e.to_string());
                            }
                        }
                    }
                    act.drop_files_within(&uncleared);
                }
                Err(e) => act.fail(e.to_string()),
            }
            then(act, ctx);
        }));
    }

    /// Takes the files not started yet at or below `paths` (which could not be cleared)
    /// out of the plan being applied; they are looked at again at the next retry.
    fn drop_files_within(&mut self, paths: &[RelPath]) {
        let Some(x) = self.exec.as_mut() else { return };
        if paths.is_empty() {
            return;
        }
        let mut dropped = Vec::new();
        x.queue.retain(|slot| {
            let keep = !paths.iter().any(|u| slot.entry.path.is_within(u));
            if !keep {
                dropped.push(slot.entry.path.clone());
            }
            keep
        });
        // Ended, as a failed file is, for the progress counts.
        Stats::add(&self.stats.files_done, dropped.len() as u64);
        self.stale.extend(dropped);
    }

    fn log_change(&self, a: &Action) {
        if let Some(change) = a.change() {
            let from = match a {
                Action::Rename { from, .. } => Some(from.clone()),
                _ => None,
            };
            self.announce(change, a.path().clone(), from);
        }
    }

    /// Logs a change to the target and publishes it to event subscribers.
    fn announce(&self, change: ChangeKind, path: RelPath, from: Option<RelPath>) {
        match &from {
            Some(from) => {
                tracing::info!(target: "ferry::changes", folder = %self.folder, path = %path, from = %from, "{}", change.as_str())
            }
            None => {
                tracing::info!(target: "ferry::changes", folder = %self.folder, path = %path, "{}", change.as_str())
            }
        }
        self.stats
            .events
            .publish(&self.folder, EventKind::Change { change, path, from });
    }

    /// Keeps the target index in step with what was applied.
    fn record(&mut self, a: &Action) {
        match a {
            Action::SetDirMeta { .. } | Action::MakeDir { .. } => {}
            Action::Rename { from, entry } => {
                self.learn(from);
                self.learn(&entry.path);
            }
            _ => self.learn(a.path()),
        }
        let Some(index) = self.target_index.as_mut() else {
            return;
        };
        match a {
            Action::Clear { path, .. } => index.remove_tree(path),
            Action::Remove { path, .. } => {
                index.remove(path);
            }
            Action::Rename { from, entry } => {
                index.remove(from);
                index.insert(entry.clone());
            }
            Action::WriteFile { entry, .. } | Action::Symlink { entry, .. } => {
                index.insert(entry.clone());
            }
            Action::SetMeta { entry } => {
                // The content did not change: keep the chunk list the target index knows
                // when the source entry came without one.
                let mut e = entry.clone();
                if e.content.is_none() {
                    e.content = index.get(&e.path).and_then(|t| t.content.clone());
                }
                index.insert(e);
            }
            Action::MakeDir { path } => {
                // A directory is on disk now, whatever the source view says: it may have
                // changed while the action ran (the directory replaced by a file), and a
                // file recorded here would be "updated" in place of the directory next.
                let dir = match self.source.get(path) {
                    Some(s) if s.kind == EntryKind::Dir => s.clone(),
                    // Its metadata unknown: the next plan sets the source's, or clears it.
                    _ => FileEntry::new(path.clone(), EntryKind::Dir),
                };
                index.insert(dir);
            }
            Action::SetDirMeta {
                path, mode, mtime, ..
            } => index.set_meta(path, *mode, *mtime),
        }
    }

    /// Starts files while there is room.
    fn pump_files(&mut self, ctx: &mut Context<Self>) {
        loop {
            let Some(x) = self.exec.as_mut() else { return };
            let cap = if self.opts.remote {
                file_caps().0
            } else {
                file_caps().0.min(LOCAL_ACTIVE_FILES)
            };
            if x.active >= cap || x.inflight >= MAX_INFLIGHT_BYTES {
                break;
            }
            let Some(slot) = x.queue.pop_front() else {
                break;
            };
            x.active += 1;
            if x.started.len() >= 64 && x.started.len() == x.started.capacity() {
                x.started.retain(|w| w.strong_count() > 0);
            }
            x.started.push(Arc::downgrade(&slot));
            // Planned now, not with the plan: files finished since are chunk sources too.
            let plan = match (&slot.entry.content, &self.target_index) {
                (Some(c), Some(t)) => {
                    chunk_tasks(&slot.entry.path, c, slot.base.as_ref(), t.chunks())
                }
                _ => Default::default(),
            };
            if Slot::needs_start(&plan) {
                // A very large file is copied and verified by several jobs, one per region.
                for part in plan.split(REGION_BYTES) {
                    self.start_part(&slot, part, ctx);
                }
            } else {
                self.want(&slot, plan.tasks);
            }
        }
        self.pump_requests(ctx);
    }

    /// Copies the local chunks of one part of a file on the I/O pool, then asks for the rest.
    fn start_part(&mut self, slot: &Arc<Slot>, part: Assembly, ctx: &mut Context<Self>) {
        let Some(x) = self.exec.as_mut() else { return };
        x.jobs += 1;
        let pool = self.copier.clone();
        let s = slot.clone();
        let slot = slot.clone();
        let job = async move { pool.run("start file", move || s.start(&part)).await };
        ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
            if let Some(x) = act.exec.as_mut() {
                x.jobs -= 1;
            }
            match res {
                Ok((copy, event)) => {
                    Stats::add(&act.stats.bytes_reused, copy.bytes);
                    Stats::add(&act.stats.chunks_reused, copy.chunks);
                    act.want(&slot, copy.remote);
                    act.on_events(event.into_iter().collect());
                }
                Err(e) => act.fail(e.to_string()),
            }
            act.pump_requests(ctx);
            act.pump_files(ctx);
            act.check_done(ctx);
        }));
    }

    /// Registers the chunks a slot needs from the sender: those that came inline are
    /// written by the next [`Applier::pump_requests`], the others asked for.
    fn want(&mut self, slot: &Arc<Slot>, tasks: Vec<ChunkTask>) {
        let Some(x) = self.exec.as_mut() else { return };
        for t in tasks {
            let waiters = x.waiting.entry(t.chunk.id).or_default();
            if waiters.is_empty() {
                match self.stash.take(&t.chunk.id) {
                    Some(body) => x.stashed.push((t.chunk.id, body)),
                    None if x.writing.contains_key(&t.chunk.id) => {
                        x.parked.insert(t.chunk.id);
                    }
                    None => x.requests.push_back(ChunkRequest {
                        id: t.chunk.id,
                        path: slot.entry.path.clone(),
                        offset: t.offset,
                        len: t.chunk.len,
                    }),
                }
            }
            waiters.push((slot.clone(), t));
        }
    }

    /// Writes the chunks that came inline for the files started since the last call, with
    /// every file that waits for them.
    fn write_stashed(&mut self, ctx: &mut Context<Self>) {
        let Some(x) = self.exec.as_mut() else { return };
        if x.stashed.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut wrong_length = Vec::new();
        for (id, body) in std::mem::take(&mut x.stashed) {
            let Some(waiters) = x.waiting.remove(&id) else {
                continue;
            };
            if body.len() == u64::from(waiters[0].1.chunk.len) {
                batch.push((body, id, waiters));
            } else {
                wrong_length.push((id, waiters));
            }
        }
        for (id, waiters) in wrong_length {
            self.retry_chunk(id, waiters);
        }
        // In several jobs, so that the I/O pool writes files in parallel (creating files is
        // slow on some file systems). Never counted in flight: they were not asked for.
        let mut job = Vec::new();
        let mut job_bytes = 0u64;
        for item in batch {
            job_bytes += item.0.len();
            job.push(item);
            if job_bytes >= STASHED_JOB_BYTES || job.len() >= STASHED_JOB_CHUNKS {
                self.write(std::mem::take(&mut job), 0, ctx);
                job_bytes = 0;
            }
        }
        self.write(job, 0, ctx);
        self.pump_content(ctx);
    }

    /// Sends chunk requests while the in-flight bound allows (writing those that came
    /// inline first).
    fn pump_requests(&mut self, ctx: &mut Context<Self>) {
        self.write_stashed(ctx);
        let Some(x) = self.exec.as_mut() else { return };
        let mut messages = Vec::new();
        while x.inflight < MAX_INFLIGHT_BYTES && !x.requests.is_empty() {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            while let Some(r) = x.requests.front() {
                // Every file waiting for it was withdrawn or failed: no need to fetch it.
                let wanted = x
                    .waiting
                    .get(&r.id)
                    .is_some_and(|w| w.iter().any(|(slot, _)| !slot.is_finished()));
                if !wanted {
                    let id = r.id;
                    x.waiting.remove(&id);
                    x.requests.pop_front();
                    continue;
                }
                let len = u64::from(r.len);
                if bytes > 0
                    && (bytes + len > MAX_REQUEST_BYTES || x.inflight + bytes >= MAX_INFLIGHT_BYTES)
                {
                    break;
                }
                bytes += len;
                batch.extend(x.requests.pop_front());
            }
            if batch.is_empty() {
                break;
            }
            x.inflight += bytes;
            messages.push(NeedChunks {
                folder: self.folder.clone(),
                chunks: batch,
            });
        }
        for msg in messages {
            self.meter(&msg);
            let request = self.sender.need_chunks.send(msg);
            self.deliver_to_sender(request, ctx);
        }
    }

    /// A slot that ended without being installed no longer counts as active: it ended
    /// either while assembled (active) or while being installed (sealed, already not).
    fn slot_left(&mut self, slot: &Slot) {
        if let Some(x) = self.exec.as_mut() {
            if !slot.is_sealed() {
                x.active -= 1;
            }
        }
    }

    fn on_events(&mut self, events: Vec<SlotEvent>) {
        for ev in events {
            match ev {
                SlotEvent::Sealed(slot) => {
                    if let Some(x) = self.exec.as_mut() {
                        x.active -= 1;
                        x.sealed_bytes += slot.entry.size;
                        x.sealed.push(slot);
                    }
                }
                SlotEvent::Committed(slot) => {
                    let change = if slot.replaces {
                        ChangeKind::Updated
                    } else {
                        ChangeKind::Created
                    };
                    self.count(Some(change));
                    Stats::add(&self.stats.files_done, 1);
                    Stats::add(&self.stats.bytes_written, slot.entry.size);
                    self.refetches.remove(&slot.entry.path);
                    self.announce(change, slot.entry.path.clone(), None);
                    if let Some(x) = self.exec.as_mut() {
                        x.dirs.insert(slot.entry.path.parent());
                    }
                    self.record(&Action::WriteFile {
                        entry: slot.entry.clone(),
                        base: None,
                        replaces: slot.replaces,
                    });
                }
                SlotEvent::Withdrawn(slot) => {
                    self.slot_left(&slot);
                    self.refetch(&slot.entry.path, slot.entry.seq);
                }
                SlotEvent::Failed(slot, reason) => {
                    Stats::add(&self.stats.files_done, 1);
                    self.slot_left(&slot);
                    self.stale.insert(slot.entry.path.clone());
                    self.skip(&slot.entry.path, reason);
                }
            }
        }
    }

    /// Makes the sealed files durable and installs them, in one batch, once the batch is
    /// large enough or nothing else is being assembled.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(x) = self.exec.as_mut() else { return };
        let full = x.sealed.len() >= file_caps().1 || x.sealed_bytes >= FLUSH_BYTES;
        if x.sealed.is_empty() || !(full || x.active == 0) {
            return;
        }
        let batch = std::mem::take(&mut x.sealed);
        x.sealed_bytes = 0;
        x.jobs += 1;
        let target = self.target.clone();
        let pool = self.io.clone();
        let job = async move {
            pool.run("install files", move || install_batch(&target, batch))
                .await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok(events) => act.on_events(events),
                Err(e) => act.fail(e.to_string()),
            }
            if let Some(x) = act.exec.as_mut() {
                x.jobs -= 1;
            }
            act.pump_files(ctx);
            act.check_done(ctx);
        }));
    }

    /// When every file is done, removes extraneous entries, fixes directory metadata,
    /// makes the renames durable, and acknowledges.
    fn check_done(&mut self, ctx: &mut Context<Self>) {
        self.flush(ctx);
        let Some(x) = self.exec.as_mut() else { return };
        if x.jobs > 0 || x.active > 0 || !x.queue.is_empty() || !x.sealed.is_empty() {
            return;
        }
        x.jobs += 1;
        let post = std::mem::take(&mut x.post);
        let durable = self.opts.durable;
        self.run_actions(post, ctx, move |act, ctx| {
            if !durable {
                return act.finish(ctx);
            }
            let dirs: Vec<Option<RelPath>> = match act.exec.as_mut() {
                Some(x) => std::mem::take(&mut x.dirs).into_iter().collect(),
                None => Vec::new(),
            };
            let target = act.target.clone();
            let pool = act.io.clone();
            let job = async move {
                pool.run("sync directories", move || {
                    dirs.iter()
                        .filter_map(|d| target.sync_dir(d.as_ref()).err())
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                })
                .await
            };
            ctx.spawn(job.into_actor(act).map(|res, act, ctx| {
                match res {
                    Ok(errors) => {
                        for e in errors {
                            tracing::warn!(folder = %act.folder, "{e}");
                        }
                    }
                    Err(e) => act.fail(e.to_string()),
                }
                act.finish(ctx);
            }));
        });
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        // With a file withdrawn, the target does not mirror `x.seq` yet: the next plan
        // (which fetches that file's new content) acknowledges.
        let acknowledges = self
            .exec
            .as_ref()
            .is_some_and(|x| !x.withdrawn && !x.partial);
        if acknowledges {
            self.remove_leftovers(ctx, Self::finish_plan);
        } else {
            self.finish_plan(ctx);
        }
    }

    fn finish_plan(&mut self, ctx: &mut Context<Self>) {
        let Some(x) = self.exec.take() else { return };
        if !x.withdrawn && !x.partial {
            self.acknowledge(x.seq, None);
        }
        if !x.partial && self.content_requests == 0 {
            // Every file has been planned: what is still kept was not needed after all
            // (a file that changed or failed meanwhile).
            if self.stash.bytes() > 0 {
                tracing::debug!(folder = %self.folder, "{} bytes sent inline not needed", self.stash.bytes());
            }
            self.stash.clear();
        }
        self.schedule_retry(ctx);
        // Deltas that arrived while the plan ran are planned now.
        self.try_plan(ctx);
        // Content requests held back while this plan took kept chunks may go now.
        self.pump_content(ctx);
    }

    /// What a plan could not apply (a full disk, a denied directory, a file that kept
    /// changing) is tried again later, with no change at the source needed: the whole view
    /// is planned again after a delay that doubles while tries keep failing.
    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if !std::mem::take(&mut self.failed_since_retry) {
            self.retry_delay = RETRY_FIRST;
            return;
        }
        if self.retry_armed || self.opts.dry_run {
            return;
        }
        self.retry_armed = true;
        let delay = self.retry_delay;
        self.retry_delay = (delay * 2).min(RETRY_MAX);
        tracing::info!(folder = %self.folder, "retrying what was not applied in {delay:?}");
        ctx.run_later(delay, |act, ctx| act.retry(ctx));
    }

    /// Looks again at what the target holds where actions failed, then plans again.
    fn retry(&mut self, ctx: &mut Context<Self>) {
        let stale: Vec<RelPath> = std::mem::take(&mut self.stale).into_iter().collect();
        let root = self.target.root().to_owned();
        let opts = ScanOptions {
            params: self.opts.params,
            skip_temp_files: true,
            ignore: self.opts.ignore.clone(),
        };
        let pool = self.hasher.clone();
        let job = async move {
            pool.run("rescan failed target paths", move || {
                stale
                    .into_iter()
                    .map(|p| {
                        let found = ferry_engine::scan_subtree(&root, &p, opts.clone());
                        (p, found)
                    })
                    .collect::<Vec<_>>()
            })
            .await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, ctx| {
            act.retry_armed = false;
            if let (Ok(found), Some(index)) = (res, act.target_index.as_mut()) {
                for (path, scanned) in found {
                    let Ok(scanned) = scanned else { continue };
                    index.remove_tree(&path);
                    for (entry, _) in scanned.index.into_entries() {
                        index.insert(entry);
                    }
                }
            }
            act.dirty = true;
            act.changed = None;
            act.try_plan(ctx);
        }));
    }
}

impl Actor for Applier {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        tracing::info!(actor = "applier", folder = %self.folder, "started");
        self.stats.actors.started("applier");
        self.stats
            .events
            .publish(&self.folder, EventKind::ActorStarted { actor: "applier" });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::info!(actor = "applier", folder = %self.folder, "stopped");
        self.stats.actors.stopped("applier");
        self.stats
            .events
            .publish(&self.folder, EventKind::ActorStopped { actor: "applier" });
    }
}

impl Handler<Start> for Applier {
    type Result = ();

    fn handle(&mut self, _: Start, ctx: &mut Self::Context) {
        let root = self.target.root().to_owned();
        let opts = ScanOptions {
            params: self.opts.params,
            skip_temp_files: false,
            ignore: self.opts.ignore.clone(),
        };
        let pool = self.hasher.clone();
        let target = self.target.clone();
        let store = self.target_store.clone();
        let folder = self.folder.to_string();
        let dry_run = self.opts.dry_run;
        let job = async move {
            pool.run("scan target", move || {
                let mut outcome = ferry_engine::scan(&root, opts.clone())?;
                let leftovers = take_leftovers(&target, &mut outcome.index, &opts.params);
                let mut skipped = std::mem::take(&mut outcome.skipped);
                // Special files are never replicated, so one in the target is extraneous, as
                // any other extra: removed now, so that nothing is in the way of the plan (a
                // fifo where the source has a directory) and a directory that held one can
                // go. (A name that is not UTF-8 is left: the source may hold it too, skipped
                // there with a warning, and a target copy is not deleted for that.)
                let unmirrorable = |s: &ferry_engine::Skipped| s.kind == SkipKind::Special;
                let removed: Vec<_> = skipped
                    .iter()
                    .filter(|s| unmirrorable(s))
                    .map(|s| {
                        let done = (!dry_run).then(|| target.remove_unmirrorable(&s.path));
                        (s.path.clone(), done)
                    })
                    .collect();
                skipped.retain(|s| !unmirrorable(s));
                let mut index = TargetIndex::new(outcome.index);
                let saved = store.map(|store| {
                    let reused = attach_saved(&mut index, store.as_ref(), &opts.params, &folder);
                    let saver = TargetPersister::new(store, root, folder);
                    (reused, saver)
                });
                Ok::<_, ferry_engine::Error>((index, skipped, leftovers, saved, removed))
            })
            .await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok((mut index, skipped, leftovers, saved, removed))) => {
                for s in &skipped {
                    if s.kind == SkipKind::Unrepresentable {
                        tracing::warn!(folder = %act.folder, path = %s.path.display(), "left in the target as it is: {}", s.reason);
                    } else {
                        tracing::debug!(folder = %act.folder, path = %s.path.display(), "target entry not indexed: {}", s.reason);
                    }
                }
                for (path, r) in removed {
                    match r {
                        None => tracing::info!(folder = %act.folder, path = %path.display(), "would be removed (it cannot be mirrored)"),
                        Some(Ok(())) => {
                            Stats::add(&act.stats.removed, 1);
                            tracing::info!(target: "ferry::changes", folder = %act.folder, path = %path.display(), "removed (it cannot be mirrored)");
                        }
                        Some(Err(e)) => tracing::warn!(folder = %act.folder, path = %path.display(), "cannot remove an entry that cannot be mirrored: {e}"),
                    }
                }
                for (path, content) in leftovers {
                    tracing::info!(folder = %act.folder, path = %path, bytes = content.len(), "reusing the chunks of a leftover temp file");
                    Stats::add(&act.stats.target_bytes_hashed, content.len());
                    index.add_leftover(path, content);
                }
                if let Some((reused, saver)) = saved {
                    match saver {
                        Ok(saver) => {
                            act.target_saver = Some(saver);
                            // The first save replaces what was saved: it lists every
                            // chunk list reused, and whatever is learned before it.
                            act.save_full = true;
                            act.learned.extend(reused);
                        }
                        Err(e) => {
                            tracing::warn!(folder = %act.folder, "cannot start saving the target's chunk lists: {e}")
                        }
                    }
                }
                act.target_index = Some(index);
                act.dirty = true;
                act.changed = None;
                act.try_plan(ctx);
            }
            Ok(Err(e)) => act.fail(format!("cannot scan target: {e}")),
            Err(e) => act.fail(e.to_string()),
        }));
    }
}

impl Handler<IndexDelta> for Applier {
    type Result = ();

    fn handle(&mut self, msg: IndexDelta, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Target);
        if let Some(e) = msg
            .entries
            .iter()
            .find(|e| e.kind != EntryKind::File && e.content.is_some())
        {
            return self.fail(format!(
                "protocol error: {} is not a file but has content",
                e.path
            ));
        }
        let mut entries = msg.entries;
        if msg.snapshot {
            self.pending.clear();
        }
        if let Err(reason) = self.unpack_lists(&mut entries, msg.lists) {
            return self.fail(format!("protocol error: {reason}"));
        }
        if let Some(reason) = entries
            .iter()
            .find_map(|e| bad_content(e, &self.opts.params))
        {
            return self.fail(format!("protocol error: {reason}"));
        }
        // A source never sends Ferry's own temp names (its scan skips them); a remote one that
        // does would have them taken for leftovers and removed, or collide with transfers.
        if self.opts.untrusted_sender {
            if let Some(e) = entries
                .iter()
                .find(|e| e.path.as_str().split('/').any(is_temp_name))
            {
                return self.fail(format!(
                    "protocol error: {} has the name of a Ferry temp file",
                    e.path
                ));
            }
            // A peer may replicate into this node's folder, not plant programs that run
            // with the rights of whoever owns them here (root, when serving as root).
            for e in entries.iter_mut() {
                e.mode &= !REMOTE_MODE_DROPPED;
            }
        }
        if msg.snapshot {
            let entries = entries
                .into_iter()
                .filter(|e| e.state != EntryState::Deleted)
                .map(|e| (e, None))
                .collect();
            self.source = Index::from_sorted(self.opts.params, entries);
            // Not the larger of the two: a restarted source without a saved index numbers
            // from zero again.
            self.forgotten = msg.upto;
            self.have_snapshot = true;
            self.changed = None;
            if let Some(reason) = nested_in_non_dir_anywhere(&self.source) {
                return self.fail(format!("protocol error: {reason}"));
            }
        } else {
            if msg.content_reply {
                self.content_requests = self.content_requests.saturating_sub(1);
                self.stash.replied();
                self.pump_content(ctx);
                for e in &entries {
                    if self.in_flight.remove(&e.path) {
                        self.changed_at(&e.path);
                    }
                }
            }
            let mut changed = Vec::new();
            let mut removed = Vec::new();
            for e in entries {
                // Content replies and change deltas travel separately: keep the newer entry.
                // Only a content reply can be stale for a path not held: the ordered stream
                // of deltas and resends always carries the source's current entries (a
                // resend may even arrive after newer live deltas, and must not be dropped).
                let newer = match self.source.get(&e.path) {
                    Some(old) => old.seq <= e.seq,
                    None => !msg.content_reply || e.seq > self.forgotten,
                };
                if !newer {
                    continue;
                }
                if let Some(c) = self.changed.as_mut() {
                    c.insert(e.path.clone());
                }
                if e.state != EntryState::Deleted {
                    changed.push(e.path.clone());
                    self.source.insert(e, None);
                } else {
                    self.source.remove(&e.path);
                    removed.push(e.seq);
                }
            }
            // After the whole message: a resend lists entries in path order, not in
            // sequence order.
            if let Some(newest) = removed.into_iter().max() {
                self.forgotten = self.forgotten.max(newest);
            }
            let fresh = changed.iter().filter_map(|p| self.source.get(p));
            if let Some(reason) = nested_in_non_dir(&self.source, fresh) {
                return self.fail(format!("protocol error: {reason}"));
            }
        }
        self.upto = self.upto.max(msg.upto);
        self.dirty = true;
        self.try_plan(ctx);
    }
}

impl Handler<ChunkData> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ChunkData, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Target);
        if msg.inline {
            if !self.stash.expects_inline() {
                if self.opts.untrusted_sender {
                    return self.fail("protocol error: chunks sent inline unasked".into());
                }
                tracing::debug!(folder = %self.folder, "chunks sent inline unasked ignored");
                return;
            }
            let requested = |id: &ChunkId| {
                self.exec
                    .as_ref()
                    .is_some_and(|x| x.waiting.contains_key(id))
            };
            let max = self.opts.params.max;
            let dropped = self.stash.keep(msg.chunks, max, requested);
            if dropped > 0 {
                tracing::debug!(folder = %self.folder, "{dropped} bytes sent inline dropped: too much kept already");
            }
            return;
        }
        let Some(x) = self.exec.as_mut() else {
            tracing::debug!(folder = %self.folder, "chunk data outside a transfer ignored");
            return;
        };
        let mut batch = Vec::new();
        // Received bytes stay counted as in flight until they are on disk, so a slow disk
        // holds back further requests instead of letting data pile up in memory.
        let mut held = 0u64;
        let mut wrong_length = Vec::new();
        for c in msg.chunks {
            let Some(waiters) = x.waiting.remove(&c.id) else {
                tracing::debug!(folder = %self.folder, "unrequested chunk {:?} ignored", c.id);
                continue;
            };
            // Checked before anything is allocated for it: the length is the sender's word.
            if c.body.len() != u64::from(waiters[0].1.chunk.len) {
                x.inflight = x.inflight.saturating_sub(u64::from(waiters[0].1.chunk.len));
                wrong_length.push((c.id, waiters));
                continue;
            }
            held += u64::from(waiters[0].1.chunk.len);
            batch.push((c.body, c.id, waiters));
        }
        let mut events = Vec::new();
        for f in msg.failed {
            if let Some(waiters) = x.waiting.remove(&f.id) {
                x.inflight = x.inflight.saturating_sub(u64::from(waiters[0].1.chunk.len));
                tracing::info!(folder = %self.folder, path = %f.path, "source changed while it was sent ({}); asking for it again", f.reason);
                // The files read from the failed path are withdrawn; others waiting for the
                // same chunk ask for it again from their own source file.
                let (failed, others): (Waiters, Waiters) = waiters
                    .into_iter()
                    .filter(|(slot, _)| !slot.is_finished())
                    .partition(|(slot, _)| slot.entry.path == f.path);
                events.extend(withdraw_slots(failed));
                if let Some((slot, task)) = others.first() {
                    x.requests.push_back(ChunkRequest {
                        id: f.id,
                        path: slot.entry.path.clone(),
                        offset: task.offset,
                        len: task.chunk.len,
                    });
                    x.waiting.insert(f.id, others);
                }
            }
        }
        self.on_events(events);
        for (id, waiters) in wrong_length {
            self.retry_chunk(id, waiters);
        }
        self.write(batch, held, ctx);
        self.pump_files(ctx);
        self.check_done(ctx);
    }
}

impl Applier {
    /// Verifies and writes chunk data on the I/O pool; `held` bytes of it were counted in
    /// flight and are released once it is on disk.
    fn write(
        &mut self,
        batch: Vec<(ChunkBody, ChunkId, Waiters)>,
        held: u64,
        ctx: &mut Context<Self>,
    ) {
        if !batch.is_empty() {
            let Some(x) = self.exec.as_mut() else { return };
            x.jobs += 1;
            let ids: Vec<ChunkId> = batch.iter().map(|(_, id, _)| *id).collect();
            for id in &ids {
                *x.writing.entry(*id).or_default() += 1;
            }
            let pool = self.io.clone();
            let job = async move { pool.run("write chunks", move || write_chunks(batch)).await };
            ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
                if let Some(x) = act.exec.as_mut() {
                    x.jobs -= 1;
                    x.inflight = x.inflight.saturating_sub(held);
                    for id in &ids {
                        if let Some(n) = x.writing.get_mut(id) {
                            *n -= 1;
                            if *n == 0 {
                                x.writing.remove(id);
                            }
                        }
                    }
                }
                match res {
                    Ok(outcome) => {
                        Stats::add(&act.stats.bytes_zero, outcome.zero_bytes);
                        for (id, body) in outcome.written {
                            act.written(id, body);
                        }
                        act.on_events(outcome.events);
                        for (id, mut waiters) in outcome.bad {
                            // Files parked on it wait for the same bytes: asked for together.
                            if let Some(x) = act.exec.as_mut() {
                                if x.parked.remove(&id) {
                                    waiters.extend(x.waiting.remove(&id).unwrap_or_default());
                                }
                            }
                            act.retry_chunk(id, waiters);
                        }
                        for id in &ids {
                            act.unpark(id);
                        }
                    }
                    Err(e) => act.fail(e.to_string()),
                }
                act.pump_files(ctx);
                act.check_done(ctx);
            }));
        }
    }

    /// A chunk was written: files parked on it get it next, else it is remembered.
    fn written(&mut self, id: ChunkId, body: ChunkBody) {
        if let Some(x) = self.exec.as_mut() {
            if x.parked.remove(&id) && x.waiting.contains_key(&id) {
                x.stashed.push((id, body));
                return;
            }
        }
        if self.opts.remote {
            self.stash.remember(id, body);
        }
    }

    /// Files parked on a chunk no job writes any more (none wrote it: the files it was
    /// for had ended) ask for it.
    fn unpark(&mut self, id: &ChunkId) {
        let Some(x) = self.exec.as_mut() else { return };
        if x.writing.contains_key(id) || !x.parked.remove(id) {
            return;
        }
        if let Some((slot, task)) = x.waiting.get(id).and_then(|w| w.first()) {
            x.requests.push_back(ChunkRequest {
                id: *id,
                path: slot.entry.path.clone(),
                offset: task.offset,
                len: task.chunk.len,
            });
        }
    }
}

impl Applier {
    /// A chunk arrived corrupt: ask again, up to a limit, then fail its files.
    fn retry_chunk(&mut self, id: ChunkId, mut waiters: Waiters) {
        waiters.retain(|(slot, _)| !slot.is_finished());
        let Some(x) = self.exec.as_mut() else { return };
        if waiters.is_empty() {
            return;
        }
        if self.opts.untrusted_sender {
            return self.fail(format!(
                "protocol error: the data sent for chunk {id:?} of {} does not match its id",
                waiters[0].0.entry.path
            ));
        }
        let n = x.retries.entry(id).or_insert(0);
        *n += 1;
        tracing::warn!(folder = %self.folder, path = %waiters[0].0.entry.path, attempt = *n, "chunk failed verification, asking again");
        if *n > CHUNK_RETRIES {
            let events = fail_slots(waiters, "a chunk kept failing verification");
            return self.on_events(events);
        }
        let (slot, task) = &waiters[0];
        x.requests.push_back(ChunkRequest {
            id,
            path: slot.entry.path.clone(),
            offset: task.offset,
            len: task.chunk.len,
        });
        x.waiting.insert(id, waiters);
    }
}

impl Applier {
    /// Asks again for the content of a file whose source changed while it was sent, so the
    /// next plan fetches the version there now; after [`REFETCHES`] tries it is skipped.
    fn refetch(&mut self, path: &RelPath, seq: Seq) {
        let n = self.refetches.entry(path.clone()).or_insert(0);
        *n += 1;
        if *n > REFETCHES {
            return self.skip(
                path,
                "the source file kept changing while it was sent".into(),
            );
        }
        // Only the version that failed is forgotten: a newer entry that arrived meanwhile
        // already carries the content to fetch.
        if let Some(e) = self.source.get_mut(path).filter(|e| e.seq == seq) {
            e.content = None;
        }
        self.asked.remove(path);
        self.dirty = true;
        self.changed_at(path);
        if let Some(x) = self.exec.as_mut() {
            x.withdrawn = true;
        }
    }
}

/// Why a received file entry's chunk list cannot be right, if it cannot: every chunk must
/// be within the chunker's maximum and the chunks must add up to the file's size.
fn bad_content(e: &FileEntry, params: &ChunkParams) -> Option<String> {
    let c = e.content.as_ref()?;
    if let Some(bad) = c.chunks.iter().find(|c| c.len == 0 || c.len > params.max) {
        return Some(format!("{}: a chunk of {} bytes", e.path, bad.len));
    }
    (c.len() != e.size).then(|| {
        format!(
            "{}: chunks add up to {} bytes, the entry says {}",
            e.path,
            c.len(),
            e.size
        )
    })
}

impl Applier {
    /// Fills in the chunk lists that travelled apart from their entries: a patch is applied
    /// to the list this Applier holds for the path; an outline is parked until the groups it
    /// names are found locally or fetched. A patch that does not apply leaves the entry
    /// without content, so it is asked for again.
    fn unpack_lists(
        &mut self,
        entries: &mut [FileEntry],
        lists: Vec<crate::messages::ChunkList>,
    ) -> Result<(), String> {
        if lists.is_empty() {
            return Ok(());
        }
        // Chunks the outlines pending claim, kept up to date as this update adds its own.
        let mut outlined: u64 = self.pending.values().map(|p| p.outline.chunk_count()).sum();
        let mut by_path: HashMap<RelPath, usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_path.insert(e.path.clone(), i);
        }
        for list in lists {
            let Some(&i) = by_path.get(&list.path) else {
                return Err(format!("a chunk list for {} without its entry", list.path));
            };
            let e = &mut entries[i];
            if e.kind != EntryKind::File || !e.is_present() || e.content.is_some() {
                return Err(format!(
                    "a chunk list for {}, which cannot take one",
                    e.path
                ));
            }
            match list.form {
                ListForm::Patch(p) => {
                    let base = self.source.get(&e.path).and_then(|s| s.content.as_ref());
                    let rebuilt = base.and_then(|b| patch::apply(&self.opts.params, b, &p).ok());
                    match rebuilt.filter(|c| c.id == list.id) {
                        Some(c) => e.content = Some(c),
                        None => {
                            tracing::debug!(folder = %self.folder, path = %e.path, "patch does not apply; asking for the whole list");
                            self.asked.remove(&e.path);
                        }
                    }
                }
                ListForm::Outline(outline) => {
                    self.check_outline(e, &outline, &mut outlined)?;
                    // The same list outlined again (a file touched while its groups were on
                    // their way): the groups asked for and those supplied still count.
                    let (supplied, awaited, parts) = match self.pending.remove(&e.path) {
                        Some(p) if p.id == list.id => (p.supplied, p.awaited, p.parts),
                        _ => Default::default(),
                    };
                    let sizes = outline.groups.iter().map(|g| (g.id, g.chunks)).collect();
                    self.pending.insert(
                        e.path.clone(),
                        PendingList {
                            seq: e.seq,
                            id: list.id,
                            outline,
                            sizes,
                            supplied,
                            awaited,
                            parts,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Refuses an outline that could not describe `e`: groups of impossible sizes, more
    /// chunks than its size allows, or, from a Sender across the network, more chunks in
    /// outlines being rebuilt than [`MAX_REMOTE_OUTLINED_CHUNKS`]. Checked before anything
    /// is built from it: a group named again and again costs nothing to send, and its
    /// chunks are copied out once per mention.
    fn check_outline(
        &self,
        e: &FileEntry,
        outline: &Outline,
        outlined: &mut u64,
    ) -> Result<(), String> {
        if !outline.is_well_formed() {
            return Err(format!(
                "the outline of {} has a group of impossible size",
                e.path
            ));
        }
        let claimed = outline.chunk_count();
        let most = e.size / u64::from(self.opts.params.min.max(1)) + 2;
        if claimed > most {
            return Err(format!(
                "the outline of {} claims {claimed} chunks for {} bytes",
                e.path, e.size
            ));
        }
        // It replaces the one pending for the same path, if any.
        let replaced = self
            .pending
            .get(&e.path)
            .map_or(0, |p| p.outline.chunk_count());
        let others = outlined.saturating_sub(replaced);
        if self.opts.untrusted_sender && others + claimed > MAX_REMOTE_OUTLINED_CHUNKS {
            return Err(format!(
                "the outline of {} claims {claimed} chunks, with {others} more being rebuilt: over the limit of {MAX_REMOTE_OUTLINED_CHUNKS}",
                e.path
            ));
        }
        *outlined = others + claimed;
        Ok(())
    }

    /// Rebuilds outlined chunk lists from the groups the target's own version of each file
    /// holds plus those the Sender supplied; asks for the missing groups. True when none is
    /// left pending.
    fn rebuild_lists(&mut self, ctx: &mut Context<Self>) -> bool {
        let paths: Vec<RelPath> = self.pending.keys().cloned().collect();
        for path in paths {
            let Some(p) = self.pending.get(&path) else {
                continue;
            };
            // A newer entry for the path replaced the one this outline belongs to.
            if self.source.get(&path).is_none_or(|e| e.seq != p.seq) {
                self.pending.remove(&path);
                continue;
            }
            // Groups still on their way: rebuilt once the last request is answered, not at
            // every reply (each rebuild walks the whole list).
            if p.parts > 0 {
                continue;
            }
            let own = self
                .target_index
                .as_ref()
                .and_then(|t| t.get(&path))
                .and_then(|e| e.content.as_ref());
            let mut known = outline::known_groups(own);
            for (id, chunks) in &p.supplied {
                known.insert(*id, chunks.as_slice());
            }
            match outline::resolve(&self.opts.params, p.id, &p.outline, &known) {
                Ok(content) => {
                    self.pending.remove(&path);
                    if let Some(e) = self.source.get_mut(&path) {
                        e.content = Some(content);
                        if let Some(reason) = bad_content(e, &self.opts.params) {
                            self.fail(format!("protocol error: {reason}"));
                            return false;
                        }
                    }
                }
                Err(Unresolved::Missing(groups)) => {
                    // Groups already asked for are awaited, not asked for again: the list
                    // is rebuilt on every planning pass, also while other lists' groups
                    // arrive. A group not yet asked for (the first pass, or one the target's
                    // own version held when the others were asked for) is asked for now.
                    let groups: Vec<GroupId> = groups
                        .into_iter()
                        .filter(|g| !p.awaited.contains(g))
                        .collect();
                    if groups.is_empty() {
                        continue;
                    }
                    let id = p.id;
                    if let Some(p) = self.pending.get_mut(&path) {
                        p.awaited.extend(groups.iter().copied());
                        p.parts += groups.len().div_ceil(GROUPS_PER_REQUEST) as u32;
                    }
                    for part in groups.chunks(GROUPS_PER_REQUEST) {
                        let msg = NeedGroups {
                            folder: self.folder.clone(),
                            path: path.clone(),
                            id,
                            groups: part.to_vec(),
                        };
                        self.meter(&msg);
                        self.content_requests += 1;
                        let request = self.sender.need_groups.send(msg);
                        self.deliver_to_sender(request, ctx);
                    }
                }
                Err(_) => {
                    self.pending.remove(&path);
                    self.fail(format!(
                        "protocol error: the chunk list of {path} cannot be rebuilt from its outline"
                    ));
                    return false;
                }
            }
        }
        self.pending.is_empty()
    }
}

impl Handler<GroupData> for Applier {
    type Result = ();

    fn handle(&mut self, msg: GroupData, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Target);
        self.content_requests = self.content_requests.saturating_sub(1);
        match self.pending.get_mut(&msg.path) {
            Some(p) if p.id == msg.id => {
                if msg.stale {
                    // The source changed since: its newer content is asked for afresh.
                    self.pending.remove(&msg.path);
                    self.asked.remove(&msg.path);
                } else {
                    p.parts = p.parts.saturating_sub(1);
                    // Only groups the outline names, each once, and each holding what its
                    // id says: what is kept stays within what the outline claims. A group
                    // the outline names more than once (runs of zeros) may come once per
                    // mention: the copies of one already taken are passed over.
                    let mut wrong = 0;
                    for g in msg.groups {
                        if p.supplied.contains_key(&g.id) {
                            continue;
                        }
                        let fits = p
                            .sizes
                            .get(&g.id)
                            .is_some_and(|&chunks| Group { id: g.id, chunks }.holds(&g.chunks));
                        if fits {
                            p.awaited.remove(&g.id);
                            p.supplied.insert(g.id, g.chunks);
                        } else {
                            wrong += 1;
                        }
                    }
                    if wrong > 0 {
                        if self.opts.untrusted_sender {
                            self.fail(format!(
                                "protocol error: {wrong} group(s) of {} not in its outline or not matching their ids",
                                msg.path
                            ));
                            return;
                        }
                        tracing::debug!(folder = %self.folder, path = %msg.path, wrong, "groups not in the outline or not matching their ids ignored");
                    }
                    if p.parts == 0 && !p.awaited.is_empty() {
                        // Every request answered, and still groups missing: rather than
                        // wait for them forever, the whole list is asked for again.
                        tracing::debug!(folder = %self.folder, path = %msg.path, missing = p.awaited.len(), "groups asked for were not supplied; asking for the list again");
                        self.pending.remove(&msg.path);
                        self.asked.remove(&msg.path);
                    }
                }
            }
            _ => {
                tracing::debug!(folder = %self.folder, path = %msg.path, "groups for a list no longer pending ignored")
            }
        }
        self.dirty = true;
        self.changed_at(&msg.path);
        self.try_plan(ctx);
    }
}

impl Handler<Retire> for Applier {
    type Result = ResponseFuture<Retired>;

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> Self::Result {
        let view = self.have_snapshot.then(|| SourceView {
            index: std::mem::replace(&mut self.source, Index::new(self.opts.params)),
            upto: self.upto,
        });
        // Files being assembled are left for the next Applier, which copies what already
        // arrived instead of fetching it again.
        // (Wherever they are: waiting for chunks, in a write or copy job, or sealed.)
        if let Some(x) = &self.exec {
            for slot in x.started.iter().filter_map(std::sync::Weak::upgrade) {
                if !slot.is_finished() {
                    slot.keep_temp();
                }
            }
        }
        let (io, hasher, copier) = (self.io.clone(), self.hasher.clone(), self.copier.clone());
        // What this Applier queued is saved before a successor loads the store. What it
        // learned since its last acknowledgement is not: a file being replaced may look
        // unchanged to the check at saving time.
        let saver = self.target_saver.take();
        ctx.stop();
        Box::pin(async move {
            io.drained().await;
            hasher.drained().await;
            copier.drained().await;
            if let Some(saver) = saver {
                if let Err(e) = io.run("finish saving chunk lists", || saver.finish()).await {
                    tracing::warn!("{e}");
                }
            }
            Retired { view }
        })
    }
}

/// An entry of `entries` that `source` places inside a symlink or a file, or a symlink or
/// file of `entries` with entries still inside it: a source index never holds one, and a
/// target writing it would have to go through that link.
fn nested_in_non_dir<'a>(
    source: &Index,
    entries: impl Iterator<Item = &'a FileEntry>,
) -> Option<String> {
    for e in entries.filter(|e| e.is_present()) {
        if e.kind != EntryKind::Dir {
            if let Some(inner) = source.subtree(&e.path).skip(1).find(|c| c.is_present()) {
                return Some(format!(
                    "{} lies inside {}, which is not a directory",
                    inner.path, e.path
                ));
            }
        }
        let mut at = e.path.parent();
        while let Some(p) = at {
            if let Some(a) = source.get(&p).filter(|a| a.is_present()) {
                if a.kind != EntryKind::Dir {
                    return Some(format!(
                        "{} lies inside {}, which is not a directory",
                        e.path, a.path
                    ));
                }
            }
            at = p.parent();
        }
    }
    None
}

/// [`nested_in_non_dir`] over the whole of `source`, in one pass: in component-wise order a
/// subtree follows its root at once, so an entry inside a file or symlink comes right after
/// it (tombstones aside) or after another entry inside it.
fn nested_in_non_dir_anywhere(source: &Index) -> Option<String> {
    let mut non_dir: Option<&RelPath> = None;
    for e in source.iter().filter(|e| e.is_present()) {
        if let Some(outer) = non_dir.filter(|outer| e.path.is_within(outer)) {
            return Some(format!(
                "{} lies inside {}, which is not a directory",
                e.path, outer
            ));
        }
        non_dir = (e.kind != EntryKind::Dir).then_some(&e.path);
    }
    None
}

/// Attaches to `index` the chunk lists `store` saved for files whose stat is exactly what
/// the scan saw, whose length is the file's size and which were cut with `params` (a list
/// cut otherwise would make every file look changed); returns their paths. A store that
/// cannot be read costs only the reuse.
fn attach_saved(
    index: &mut TargetIndex,
    store: &dyn TargetStore,
    params: &ChunkParams,
    folder: &str,
) -> Vec<RelPath> {
    let saved = match store.load() {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(folder = %folder, store = %store.describe(), "cannot load the target's saved chunk lists; reading files instead: {e}");
            return Vec::new();
        }
    };
    let total = saved.len();
    let mut reused = Vec::new();
    for (path, stat, content) in saved {
        let fits = index.get(&path).is_some_and(|e| {
            e.kind == EntryKind::File
                && e.is_present()
                && e.content.is_none()
                && e.size == content.len()
        }) && index.index().stat(&path) == Some(&stat)
            && ferry_engine::Content::from_chunks(params, content.chunks.clone()).id == content.id;
        if fits {
            index.set_content(&path, Some(content));
            reused.push(path);
        }
    }
    tracing::info!(folder = %folder, saved = total, reused = reused.len(), "target chunk lists reused from the store");
    reused
}

/// Takes the temp files a cut transfer left out of a scanned target `index` and chunks
/// them, so that what already arrived is copied instead of fetched again. A temp file that
/// cannot be read is left in the index, where the plan removes it as extraneous.
fn take_leftovers(
    target: &TargetDir,
    index: &mut Index,
    params: &ChunkParams,
) -> Vec<(RelPath, ferry_engine::Content)> {
    let temps: Vec<RelPath> = index
        .iter()
        .filter(|e| e.kind == EntryKind::File && is_temp_name(e.path.name()))
        .map(|e| e.path.clone())
        .collect();
    let mut out = Vec::new();
    for p in temps {
        match target.hash_file(&p, params) {
            Ok(c) => {
                index.remove(&p);
                out.push((p, c));
            }
            Err(e) => tracing::debug!(path = %p, "leftover temp file not reused: {e}"),
        }
    }
    out
}

impl Handler<crate::messages::Stop> for Applier {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An index of `entries` (path, kind, present).
    fn index(entries: &[(String, EntryKind, bool)]) -> Index {
        let mut index = Index::new(ChunkParams::default());
        for (path, kind, present) in entries {
            let mut e = FileEntry::new(RelPath::new(path).unwrap(), *kind);
            if !present {
                e.state = EntryState::Deleted;
            }
            index.insert(e, None);
        }
        index
    }

    /// Paths over names that sort around '/' ('-' and '.' below it in byte order, '0' above).
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "a-b", "a.b", "a0", "b"]),
            1..4,
        )
        .prop_map(|parts| parts.join("/"))
    }

    fn kind() -> impl Strategy<Value = EntryKind> {
        prop::sample::select(vec![EntryKind::Dir, EntryKind::File, EntryKind::Symlink])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn one_pass_over_an_index_agrees_with_the_check_of_each_entry(
            entries in prop::collection::vec((path(), kind(), any::<bool>()), 0..24)
        ) {
            let index = index(&entries);
            prop_assert_eq!(
                nested_in_non_dir_anywhere(&index),
                nested_in_non_dir(&index, index.iter())
            );
        }
    }

    #[test]
    fn an_entry_inside_a_file_is_found_past_names_that_sort_between() {
        let entries = [
            ("a".to_owned(), EntryKind::File, true),
            ("a/x".to_owned(), EntryKind::File, false),
            ("a/y".to_owned(), EntryKind::Dir, true),
            ("a-b".to_owned(), EntryKind::Dir, true),
        ];
        assert_eq!(
            nested_in_non_dir_anywhere(&index(&entries)).as_deref(),
            Some("a/y lies inside a, which is not a directory")
        );
        let fine = [
            ("a".to_owned(), EntryKind::File, true),
            ("a-b".to_owned(), EntryKind::Dir, true),
            ("a-b/c".to_owned(), EntryKind::File, true),
        ];
        assert_eq!(nested_in_non_dir_anywhere(&index(&fine)), None);
    }
}
