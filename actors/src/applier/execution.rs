//! The Applier carrying out a plan: actions in order, files assembled a bounded number at a
//! time, chunk requests pipelined within a bound on bytes in flight, files installed in batches.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::assemble::{chunk_tasks, Assembly, ChunkTask};
use ferry_engine::{
    apply_action, Action, ChangeKind, ChunkId, EntryKind, FileEntry, FreeSpace, Plan, RelPath,
    ScanOptions, Seq,
};

use crate::events::EventKind;
use crate::messages::{ChunkBody, ChunkRequest, NeedChunks};
use crate::stats::Stats;
use crate::transfer::{install_batch, Check, Failure, Slot, SlotEvent, Waiters};

use super::{Applier, RETRY_FIRST, RETRY_MAX};

/// Files assembled at once, at most: small files need many in flight to keep a link busy
/// (each costs a round trip), and each holds a temp file open (see [`file_caps`]).
const MAX_ACTIVE_FILES: usize = 512;
/// Files assembled at once for a local target (no round trip to hide; each costs memory).
const LOCAL_ACTIVE_FILES: usize = 64;
/// Chunk bytes requested but not yet received, at most.
const MAX_INFLIGHT_BYTES: u64 = 16 << 20;
/// A `NeedChunks` message asks for at most this many bytes.
const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// Chunks taken from the stash are written by jobs of at most this many bytes...
const STASHED_JOB_BYTES: u64 = 1 << 20;
/// ...or this many chunks.
const STASHED_JOB_CHUNKS: usize = 32;
/// A batch of complete files is installed when it reaches this many files...
const FLUSH_FILES: usize = 256;
/// ... or this many bytes (or when nothing else is being assembled).
const FLUSH_BYTES: u64 = 64 << 20;

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

/// How long the free space measured for files held back waits for replaced files still
/// being freed (about 0.2 s per GiB).
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A file's local chunks are copied by one job per region of this many bytes.
const REGION_BYTES: u64 = 16 << 20;

/// A plan being carried out.
pub(super) struct Execution {
    seq: Seq,
    post: Vec<Action>,
    queue: VecDeque<Arc<Slot>>,
    /// The files this plan writes that are not installed yet (those of plans that joined
    /// it included).
    files: HashSet<RelPath>,
    /// Where the plan is: only one writing files may be joined.
    phase: Phase,
    /// Every content request was answered and the plan made then has had its look: no
    /// other plan joins this one.
    closed_to_joins: bool,
    active: usize,
    pub(super) jobs: usize,
    pub(super) waiting: HashMap<ChunkId, Waiters>,
    pub(super) requests: VecDeque<ChunkRequest>,
    pub(super) inflight: u64,
    /// Chunks taken from the stash for files just started, to be written.
    pub(super) stashed: Vec<(ChunkId, ChunkBody)>,
    /// Chunks in write jobs now (how many jobs each).
    pub(super) writing: HashMap<ChunkId, u32>,
    /// Chunks that files started since wait for while a job writes them: written again
    /// from that job's bytes once it is done, never asked for twice.
    pub(super) parked: HashSet<ChunkId>,
    pub(super) retries: HashMap<ChunkId, u32>,
    dirs: BTreeSet<Option<RelPath>>,
    /// Complete files waiting to be made durable and installed as a batch.
    sealed: Vec<Arc<Slot>>,
    sealed_bytes: u64,
    /// Files in install batches running now.
    installing: usize,
    /// Some file was withdrawn to be sent again: the plan's sequence is not reached yet.
    pub(super) withdrawn: bool,
    /// A plan made while content was still being hashed at the source: it only adds, and
    /// what it leaves out follows, so it acknowledges nothing.
    partial: bool,
    /// Every file started (gone once it ends), for [`Retire`](super::Retire) to keep their temp files
    /// whatever job holds them; pruned as it doubles.
    pub(super) started: Vec<std::sync::Weak<Slot>>,
    /// Files that found the disk full while space was still to come back: tried again
    /// once nothing else is being written and the plan's removals are done.
    deferred: Vec<Arc<Slot>>,
    /// Files tried again for that reason in this plan (a second full disk fails them).
    retried: HashSet<RelPath>,
}

/// The steps of carrying out a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The opening actions (directories made, renames, …) run.
    Opening,
    /// Files are written.
    Writing,
    /// Every file is done: the closing actions (removals, directories' metadata) and the
    /// directories' fsync run, then the plan ends.
    Closing,
}

impl Execution {
    /// Whether `plan` may join this one: both are partial (they only add, and acknowledge
    /// nothing), this one is writing files (the directories it makes are there, and its
    /// closing actions, which end it, have not started), and `plan` only makes directories,
    /// writes files this one does not write, and sets directories' metadata (which this
    /// one's end then does, after every file). Anything else (a rename, a symlink, metadata
    /// of a file) waits until this plan is done.
    pub(super) fn can_join(&self, plan: &Plan) -> bool {
        self.partial
            && self.phase == Phase::Writing
            && plan.actions.iter().all(|a| match a {
                Action::WriteFile { entry, .. } => !self.files.contains(&entry.path),
                Action::MakeDir { path } => !self.files.contains(path),
                Action::SetDirMeta { .. } => true,
                _ => false,
            })
    }

    /// Whether a plan may be made now to join this one: this one is partial and writing
    /// files, and content requests are still out (`requests_out`) or the plan made once
    /// they were all answered has not had its look yet. Live changes arriving after that
    /// wait for this plan's end, so that it ends and the acknowledging plan follows.
    pub(super) fn takes_joins(&self, requests_out: bool) -> bool {
        self.partial && self.phase == Phase::Writing && (requests_out || !self.closed_to_joins)
    }

    /// See [`Execution::takes_joins`].
    pub(super) fn close_to_joins(&mut self) {
        self.closed_to_joins = true;
    }

    /// The files this plan writes that are not installed yet.
    pub(super) fn files(&self) -> &HashSet<RelPath> {
        &self.files
    }

    /// Queues, smallest first, the files held back that fit in `room` together (all of
    /// them if it is unknown), and at least one; the others stay held back for the next
    /// round.
    fn admit_deferred(&mut self, room: Option<FreeSpace>) {
        self.deferred
            .sort_by_key(|slot| std::cmp::Reverse(slot.entry.size));
        let mut room = room;
        let mut admitted = 0;
        while let Some(slot) = self.deferred.pop() {
            let fits = room.as_mut().is_none_or(|r| r.take(slot.entry.size));
            if !fits && admitted > 0 {
                self.deferred.push(slot);
                break;
            }
            self.retried.insert(slot.entry.path.clone());
            self.queue.push_back(slot);
            admitted += 1;
        }
    }
}

impl Applier {
    pub(super) fn execute(&mut self, plan: Plan, partial: bool, ctx: &mut Context<Self>) {
        let (pre, post, queue) = self.sort_actions(plan);
        let files = queue.iter().map(|s| s.entry.path.clone()).collect();
        self.exec = Some(Execution {
            seq: self.upto,
            post,
            queue,
            files,
            phase: Phase::Opening,
            closed_to_joins: false,
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
            installing: 0,
            withdrawn: false,
            partial,
            started: Vec::new(),
            deferred: Vec::new(),
            retried: HashSet::new(),
        });
        self.run_actions(pre, ctx, |act, ctx| {
            if let Some(x) = act.exec.as_mut() {
                x.jobs -= 1;
                x.phase = Phase::Writing;
            }
            act.pump_files(ctx);
            // A plan made while this one opened may join it now.
            act.try_plan(ctx);
            act.check_done(ctx);
        });
    }

    /// Adds a partial plan to the partial plan being applied (see [`Execution::can_join`]):
    /// files whose content arrives while that plan waits for others (a large file's
    /// fetched chunks, say) are written meanwhile instead of after it.
    pub(super) fn join(&mut self, plan: Plan, ctx: &mut Context<Self>) {
        let (pre, post, queue) = self.sort_actions(plan);
        let Some(x) = self.exec.as_mut() else { return };
        x.files.extend(queue.iter().map(|s| s.entry.path.clone()));
        x.post.extend(post);
        if pre.is_empty() {
            x.queue.extend(queue);
            self.pump_files(ctx);
            return self.check_done(ctx);
        }
        // Its directories first; the plan cannot end meanwhile (a job is running), and no
        // other plan joins until they are made (and recorded in the target index).
        x.jobs += 1;
        x.phase = Phase::Opening;
        self.run_actions(pre, ctx, move |act, ctx| {
            if let Some(x) = act.exec.as_mut() {
                x.jobs -= 1;
                x.phase = Phase::Writing;
                x.queue.extend(queue);
            }
            act.pump_files(ctx);
            act.try_plan(ctx);
            act.check_done(ctx);
        });
    }

    /// Sorts a plan's actions into those run first, those run last and the files to write
    /// (a file without a chunk list is skipped), forgetting what they touch in the saved
    /// target index until they are done.
    fn sort_actions(&mut self, plan: Plan) -> (Vec<Action>, Vec<Action>, VecDeque<Arc<Slot>>) {
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
        (pre, post, queue)
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
                    let _lines = crate::log_hold::hold();
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
            Action::Rename { from, entry, .. } => {
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
            Action::Rename { from, entry, .. } => {
                index.remove(from);
                index.insert(entry.clone());
            }
            Action::WriteFile { entry, .. } | Action::Symlink { entry, .. } => {
                index.insert(entry.clone());
            }
            Action::SetMeta { entry, .. } => {
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
    pub(super) fn pump_files(&mut self, ctx: &mut Context<Self>) {
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
    /// every file that waits for them. Kept chunks were named or verified here: they are
    /// not checked again.
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
                self.write(std::mem::take(&mut job), 0, Check::Known, ctx);
                job_bytes = 0;
            }
        }
        self.write(job, 0, Check::Known, ctx);
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

    pub(super) fn on_events(&mut self, events: Vec<SlotEvent>) {
        // The batch's change lines are written together, once it is recorded.
        let _lines = crate::log_hold::hold();
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
                    if let Some(x) = self.exec.as_mut() {
                        // In the target index from here on (recorded below).
                        x.files.remove(&slot.entry.path);
                    }
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
                SlotEvent::Failed(slot, why) => {
                    self.slot_left(&slot);
                    if self.defer_if_space_may_come(&slot, &why) {
                        continue;
                    }
                    Stats::add(&self.stats.files_done, 1);
                    self.stale.insert(slot.entry.path.clone());
                    self.skip(&slot.entry.path, why.reason);
                }
            }
        }
    }

    /// Holds back a file that found the disk full while space was still to come back: the
    /// other files being written hold theirs in temp files until they are installed or
    /// fail, and the plan's removals run only after every file is written. It is tried
    /// again once, after both (see [`Applier::retry_deferred`]); a second full disk fails
    /// it. True if it was held back.
    fn defer_if_space_may_come(&mut self, slot: &Slot, why: &Failure) -> bool {
        let Some(x) = self.exec.as_mut().filter(|_| why.no_space) else {
            return false;
        };
        let removals = x.post.iter().any(|a| matches!(a, Action::Remove { .. }));
        // Space may come back from files still being assembled or installed (their temp
        // files, if they fail; the versions they replace, once installed) and from files
        // held back already (their temp files are gone: several failing at once are held
        // back one after the other). This file's own job may still count in `jobs`: not a
        // reason.
        let others =
            x.active > 0 || !x.sealed.is_empty() || x.installing > 0 || !x.deferred.is_empty();
        if !(others || removals) || x.retried.contains(&slot.entry.path) {
            return false;
        }
        let waits_for = if removals {
            "the files being written and the entries this run removes have given their space back"
        } else {
            "the files being written have given their space back"
        };
        tracing::info!(
            folder = %self.folder,
            path = %slot.entry.path,
            "no space left on the target; tried again once {waits_for} ({})",
            why.reason
        );
        x.deferred.push(Slot::new(
            slot.entry.clone(),
            slot.base.clone(),
            slot.replaces,
            self.target.clone(),
            self.opts.durable,
            &self.opts.params,
        ));
        true
    }

    /// Once nothing is being written: runs the plan's removals (they may be what gives the
    /// space back), then starts again, smallest first, as many of the files held back as
    /// the free space measured then holds, and at least one: the measure is only a guide
    /// (XFS and btrfs free a removed file's blocks later, a sparse file needs less than its
    /// size, a mount point below the root has space of its own). The others wait for the
    /// next round, when these are done. The plan's other closing actions (directory
    /// metadata) wait until every file held back has been tried. False if none was.
    fn retry_deferred(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(x) = self.exec.as_mut() else {
            return false;
        };
        if x.deferred.is_empty() {
            return false;
        }
        let (removals, rest): (Vec<Action>, Vec<Action>) = std::mem::take(&mut x.post)
            .into_iter()
            .partition(|a| matches!(a, Action::Remove { .. }));
        x.post = rest;
        x.jobs += 1;
        self.run_actions(removals, ctx, move |act, ctx| {
            let target = act.target.clone();
            let pool = act.io.clone();
            // Replaced files freed on threads of their own count as free once they are.
            let measure = move || {
                crate::release::wait_for_releases(RELEASE_WAIT);
                target.free_space()
            };
            let job = async move { pool.run("measure free space", measure).await };
            ctx.spawn(job.into_actor(act).map(move |res, act, ctx| {
                let measured = res
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let room = match measured {
                    Ok(room) => Some(room),
                    Err(e) => {
                        tracing::warn!(folder = %act.folder, "{e}; the files held back are tried again all at once");
                        None
                    }
                };
                if let Some(x) = act.exec.as_mut() {
                    x.jobs -= 1;
                    x.admit_deferred(room);
                }
                act.pump_files(ctx);
                act.check_done(ctx);
            }));
        });
        true
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
        let files = batch.len();
        x.installing += files;
        x.jobs += 1;
        let target = self.target.clone();
        let pool = self.io.clone();
        let job = async move {
            pool.run("install files", move || install_batch(&target, batch))
                .await
        };
        ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
            if let Some(x) = act.exec.as_mut() {
                x.installing -= files;
            }
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
    pub(super) fn check_done(&mut self, ctx: &mut Context<Self>) {
        self.flush(ctx);
        let Some(x) = self.exec.as_mut() else { return };
        if x.jobs > 0 || x.active > 0 || !x.queue.is_empty() || !x.sealed.is_empty() {
            return;
        }
        if self.retry_deferred(ctx) {
            return;
        }
        let Some(x) = self.exec.as_mut() else { return };
        x.jobs += 1;
        x.phase = Phase::Closing;
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
