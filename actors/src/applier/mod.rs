//! The Applier: owns a target folder; turns source entries into a plan, fetches only the
//! chunks it cannot find locally, assembles files in temp files and installs them atomically.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::target::is_temp_entry;
use ferry_engine::{
    ChunkParams, EntryKind, EntryState, FileEntry, IgnoreRules, Index, RelPath, ScanOptions, Seq,
    SkipKind, TargetDir, TargetIndex,
};

use crate::events::EventKind;
use crate::health::Role;
use crate::messages::{
    Applied, ApplyFailed, FolderId, IndexDelta, NeedChunks, NeedContent, NeedGroups, SkippedPath,
    Start,
};
use crate::persist::{TargetPersister, TargetStore};
use crate::pool::Pool;
use crate::stash::Stash;
use crate::stats::Stats;
use crate::wire::encoded_len;

mod chunks;
mod execution;
mod nesting;
mod outlines;
mod plan;
mod saved;

use chunks::bad_content;
use execution::Execution;
use nesting::{nested_in_non_dir, nested_in_non_dir_anywhere};
use outlines::PendingList;
use saved::{attach_saved, take_leftovers};

/// Mode bits a Sender across the network never sets here: set-user-ID and set-group-ID.
const REMOTE_MODE_DROPPED: u32 = 0o6000;

/// Blocking file-system jobs at once: writes and fsyncs are latency-bound, so wider than the core count.
const IO_JOBS: usize = 16;

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

impl SenderLink {
    /// Every message to `actor`, which answers them all (a Sender, or a link carrying them
    /// to a remote one).
    pub fn to<A>(actor: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<NeedContent>
            + Handler<NeedChunks>
            + Handler<NeedGroups>
            + Handler<Applied>
            + Handler<ApplyFailed>,
    {
        SenderLink {
            need_content: actor.clone().recipient(),
            need_chunks: actor.clone().recipient(),
            need_groups: actor.clone().recipient(),
            applied: actor.clone().recipient(),
            failed: actor.clone().recipient(),
        }
    }
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
    /// The paths `skipped` holds: a path is reported once per acknowledgement, with the
    /// first reason it failed for. What follows from that failure is not reported again (a
    /// directory that could not be made fails its metadata too, and later plans of the run
    /// try to make it again until the retry looks at the target).
    reported: HashSet<RelPath>,
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
            reported: HashSet::new(),
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
        self.failed_since_retry = true;
        if !self.reported.insert(path.clone()) {
            return;
        }
        tracing::warn!(folder = %self.folder, path = %path, "not applied: {reason}");
        Stats::add(&self.stats.skipped, 1);
        self.stats.events.publish(
            &self.folder,
            EventKind::Error {
                message: format!("{path} not applied: {reason}"),
            },
        );
        self.skipped.push(SkippedPath {
            path: path.to_string(),
            reason,
        });
    }
}

impl Actor for Applier {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.stats.actor_started(&self.folder, "applier");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.actor_stopped(&self.folder, "applier");
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
                // The step the target keeps file times in, before the scan (the probe is a
                // temp file, gone again). A dry run writes nothing, so it compares exactly
                // (on a target that cuts times it lists metadata updates a run would skip).
                let step = if dry_run {
                    Ok(0)
                } else {
                    target.probe_mtime_step()
                };
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
                    let kept_step = *step.as_ref().unwrap_or(&0);
                    let saver = TargetPersister::new(store, root, folder, kept_step);
                    (reused, saver)
                });
                Ok::<_, ferry_engine::Error>((index, skipped, leftovers, saved, removed, step))
            })
            .await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok((mut index, skipped, leftovers, saved, removed, step))) => {
                match step {
                    Ok(0) => {}
                    Ok(step) => tracing::info!(folder = %act.folder, "the target keeps file times in steps of {}: a source time cut down to that counts as equal", ferry_engine::entry::show_step(step)),
                    // Not fatal: times are compared exactly, and the plan finds out for
                    // itself whether the target is writable.
                    Err(e) => tracing::warn!(folder = %act.folder, "cannot find how the target keeps file times ({e}): times are compared exactly"),
                }
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
        if let Err(reason) = self.check_entries(&mut entries) {
            return self.fail(format!("protocol error: {reason}"));
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
            }
            if let Err(reason) = self.take_entries(entries, msg.content_reply) {
                return self.fail(format!("protocol error: {reason}"));
            }
        }
        self.upto = self.upto.max(msg.upto);
        self.dirty = true;
        self.try_plan(ctx);
    }
}

impl Applier {
    /// Checks received entries (their chunk lists already unpacked) and takes from them
    /// what a remote source may not set; the reason when one cannot be right.
    pub(super) fn check_entries(&self, entries: &mut [FileEntry]) -> Result<(), String> {
        if let Some(reason) = entries
            .iter()
            .find_map(|e| bad_content(e, &self.opts.params))
        {
            return Err(reason);
        }
        // A source never sends a file or symlink named as Ferry names its temp files (its scan
        // skips them; a directory so named is an ordinary one); a remote one that does would
        // have them taken for leftovers and removed, or collide with transfers.
        if self.opts.untrusted_sender {
            if let Some(e) = entries
                .iter()
                .find(|e| is_temp_entry(e.path.name(), e.kind == EntryKind::Dir))
            {
                return Err(format!("{} has the name of a Ferry temp file", e.path));
            }
            // A peer may replicate into this node's folder, not plant programs that run
            // with the rights of whoever owns them here (root, when serving as root).
            for e in entries.iter_mut() {
                e.mode &= !REMOTE_MODE_DROPPED;
            }
        }
        Ok(())
    }

    /// Takes checked entries of an update (not a snapshot) into the source view, each only
    /// if newer than the one held; those of a content reply leave the files in flight.
    pub(super) fn take_entries(
        &mut self,
        entries: Vec<FileEntry>,
        content_reply: bool,
    ) -> Result<(), String> {
        if content_reply {
            for e in &entries {
                if self.in_flight.remove(&e.path) {
                    self.changed_at(&e.path);
                }
            }
        }
        // Entries that appear or change kind: only they can place something inside a
        // file or symlink. One that stays what it was (a file with its content, a
        // directory's new mode) keeps the place in the tree the last check saw; a change
        // around it is checked as that change.
        let mut moved = Vec::new();
        let mut removed = Vec::new();
        for e in entries {
            // Content replies and change deltas travel separately: keep the newer entry.
            // Only a content reply can be stale for a path not held: the ordered stream
            // of deltas and resends always carries the source's current entries (a
            // resend may even arrive after newer live deltas, and must not be dropped).
            let old = self.source.get(&e.path);
            let newer = match old {
                Some(old) => old.seq <= e.seq,
                None => !content_reply || e.seq > self.forgotten,
            };
            if !newer {
                continue;
            }
            let stays = old.is_some_and(|old| old.is_present() && old.kind == e.kind);
            if let Some(c) = self.changed.as_mut() {
                c.insert(e.path.clone());
            }
            if e.state != EntryState::Deleted {
                if !stays {
                    moved.push(e.path.clone());
                }
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
        let fresh = moved.iter().filter_map(|p| self.source.get(p));
        match nested_in_non_dir(&self.source, fresh) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
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

impl Handler<crate::messages::Stop> for Applier {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
