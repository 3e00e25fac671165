//! The Differ: owns a source folder's index, scans it, and hashes files on request.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_engine::outline::OUTLINE_MIN_CHUNKS;
use ferry_engine::{reconcile, Change, Content};
use ferry_engine::{
    EntryKind, EntryState, FileEntry, Index, RelPath, ScanOptions, Seq, SourceDir, StatKey,
};
use futures_util::future::join_all;

use crate::changing::StillChanging;
use crate::error::Result;
use crate::events::EventKind;
use crate::health::Role;
use crate::messages::{
    ChunkBody, ChunkPayload, CurrentSeq, Dirty, Failed, FolderId, GetContent, HashFiles, Hashed,
    Rescan, Resend, SourceUpdate, Start,
};
use crate::persist::{IndexWrite, Persister, SavedIndex, SourceStore, SEQ_BLOCK};
use crate::pool::Pool;
use crate::stats::Stats;

/// How often hashing a file that keeps changing under us is retried before it is skipped.
const HASH_ATTEMPTS: usize = 3;
/// When a file a live rescan left alone (it changed while hashed) is looked at again if no
/// event brought it up first.
const RECHECK_AFTER: Duration = Duration::from_millis(200);
/// Files handed to one hashing job (jobs run in parallel, one per core).
const FILES_PER_JOB: usize = 32;
/// The most bytes of files' content one `HashFiles` keeps (by their scanned sizes; a file
/// that grew since is kept only up to the request's own limit per file).
const KEEP_BYTES: u64 = 8 << 20;
/// Tombstones always kept (see [`Differ::compact`]): a target away for fewer removals than
/// this is sent only what changed when it comes back.
const TOMBSTONES_KEPT: usize = 4096;

/// Hashes a source file, trying again while it changes under the read (a writer still at
/// work), up to [`HASH_ATTEMPTS`] times.
/// Keeps the bytes of files of at most `keep` bytes, and takes the cuts of `previous` where
/// they still hold (see [`SourceDir::hash_file_keeping`]).
fn hash_settled(
    source: &SourceDir,
    path: &RelPath,
    keep: u64,
    previous: Option<&Content>,
) -> std::result::Result<(ferry_engine::Content, StatKey, Vec<Vec<u8>>), ferry_engine::Error> {
    let mut last = source.hash_file_keeping(path, keep, previous);
    for _ in 1..HASH_ATTEMPTS {
        match &last {
            Err(ferry_engine::Error::Changed { .. }) => {
                last = source.hash_file_keeping(path, keep, previous);
            }
            _ => break,
        }
    }
    last
}

/// What the Differ sends once its first scan is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstSend {
    /// A snapshot of the whole index (a target that starts from nothing: a local Applier).
    Snapshot,
    /// Nothing until the target states what it holds with a `Resend` (a remote target that
    /// may resume).
    OnResend,
}

/// Owns the source index of one folder.
pub struct Differ {
    folder: FolderId,
    source: SourceDir,
    scan: ScanOptions,
    index: Option<Index>,
    seq: Seq,
    /// The last sequence this run may use (see [`crate::persist`]).
    reserved: Seq,
    /// A target that acknowledged less than this is sent a snapshot, not a delta.
    history_from: Seq,
    /// Tombstones in the index (see [`Differ::compact`]).
    tombstones: usize,
    first: FirstSend,
    /// A resend asked for before the first scan was done.
    early_resend: Option<Seq>,
    store: Option<Arc<dyn SourceStore>>,
    persister: Option<Persister>,
    /// The saved index was completed for a clean stop: nothing more is recorded.
    finished: bool,
    /// Files live rescans left alone because they changed while hashed.
    still_changing: StillChanging,
    /// Those to look at again once [`RECHECK_AFTER`] has passed (a recheck is pending
    /// while this is `Some`).
    recheck: Option<BTreeSet<RelPath>>,
    sender: Recipient<SourceUpdate>,
    monitor: Recipient<Failed>,
    /// Hashing requested by the Sender (run alongside other messages).
    pool: Pool,
    /// Scans and rescans, which the Differ waits for with its mailbox paused: a pool of their
    /// own, because a hashing job queued on `pool` holds its permit until this actor polls it
    /// again, which it does not do while it waits, so sharing one pool can deadlock.
    scan_pool: Pool,
    stats: Arc<Stats>,
}

/// What the first scan found: a fresh index, or changes to the saved one.
enum FirstScan {
    Fresh(ferry_engine::ScanOutcome),
    Resumed {
        index: Index,
        history_from: Seq,
        found: Rescanned,
    },
}

impl Differ {
    /// A Differ for `source`, reporting to `sender` and failures to `monitor`.
    pub fn new(
        folder: FolderId,
        source: SourceDir,
        scan: ScanOptions,
        sender: Recipient<SourceUpdate>,
        monitor: Recipient<Failed>,
        stats: Arc<Stats>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Differ {
            folder,
            source,
            scan,
            index: None,
            seq: Seq::default(),
            reserved: Seq(u64::MAX),
            history_from: Seq(1),
            tombstones: 0,
            first: FirstSend::Snapshot,
            early_resend: None,
            store: None,
            persister: None,
            finished: false,
            still_changing: StillChanging::default(),
            recheck: None,
            sender,
            monitor,
            pool: Pool::new(cores),
            scan_pool: Pool::new(1),
            stats,
        }
    }

    /// Sends nothing until a `Resend` says what the target holds.
    pub fn first_send(mut self, first: FirstSend) -> Self {
        self.first = first;
        self
    }

    /// Keeps the index in `store` between runs.
    pub fn store(mut self, store: Arc<dyn SourceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The next sequence number, within this run's reserved block.
    fn next_seq(&mut self) -> Seq {
        if self.seq >= self.reserved {
            // Four billion changes in one run: the block is used up. A restart reserves anew.
            self.fail("sequence block used up; restarting to reserve another".into());
            return self.seq;
        }
        self.seq = self.seq.next();
        self.seq
    }

    /// Queues entries to be saved, if the index is kept.
    fn save(&self, upserts: Vec<(FileEntry, Option<StatKey>)>, full: bool) {
        if let Some(p) = &self.persister {
            p.save(IndexWrite {
                upserts,
                full,
                ..IndexWrite::default()
            });
        }
    }

    /// Every entry but tombstones: a snapshot needs none, as a target removes whatever it
    /// does not list. (Unreadable entries are listed: they keep the target's copy.)
    fn snapshot(&self) -> Vec<FileEntry> {
        self.index
            .iter()
            .flat_map(|i| i.iter().filter(|e| e.state != EntryState::Deleted).cloned())
            .collect()
    }

    /// Forgets the oldest tombstones once they outnumber what is kept, so an index under
    /// endless churn stays the size of the folder: memory and the saved index stay flat.
    ///
    /// The newest `max(TOMBSTONES_KEPT, present / 4)` are kept; compaction runs when there
    /// are twice that (so its cost, one pass over the index, is paid once per that many
    /// removals). `history_from` moves past the forgotten ones: a target that acknowledged
    /// less is sent a snapshot (metadata only; nothing it holds is sent again).
    fn compact(&mut self) {
        let Some(index) = self.index.as_mut() else {
            return;
        };
        let keep = TOMBSTONES_KEPT.max(index.len().saturating_sub(self.tombstones) / 4);
        if self.tombstones <= 2 * keep {
            return;
        }
        let Some((cut, doomed)) = index.forget_tombstones(keep) else {
            // Fewer than counted (a tombstone replaced in a way not seen here): recount.
            self.tombstones = index
                .iter()
                .filter(|e| e.state == EntryState::Deleted)
                .count();
            return;
        };
        self.tombstones = keep;
        self.history_from = self.history_from.max(cut.next());
        tracing::info!(folder = %self.folder, forgotten = doomed.len(), kept = self.tombstones, history_from = self.history_from.0, "oldest removals forgotten; a target that acknowledged less is sent a full index");
        if let Some(p) = &self.persister {
            p.save(IndexWrite {
                removed: doomed,
                history_from: Some(self.history_from),
                ..IndexWrite::default()
            });
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(actor = "differ", folder = %self.folder, "{reason}");
        self.monitor.do_send(Failed {
            actor: "differ",
            folder: self.folder.clone(),
            reason,
        });
    }
}

impl Actor for Differ {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        tracing::info!(actor = "differ", folder = %self.folder, "started");
        self.stats.actors.started("differ");
        self.stats
            .events
            .publish(&self.folder, EventKind::ActorStarted { actor: "differ" });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::info!(actor = "differ", folder = %self.folder, "stopped");
        self.stats.actors.stopped("differ");
        self.stats
            .events
            .publish(&self.folder, EventKind::ActorStopped { actor: "differ" });
    }
}

impl Handler<Start> for Differ {
    type Result = ();

    fn handle(&mut self, _: Start, ctx: &mut Self::Context) {
        let source = self.source.clone();
        let opts = self.scan.clone();
        let pool = self.scan_pool.clone();
        let store = self.store.clone();
        let folder = self.folder.clone();
        let scan = async move {
            pool.run("scan source", move || {
                first_scan(&source, opts, store.as_deref(), &folder)
            })
            .await
        };
        ctx.wait(scan.into_actor(self).map(|res, act, ctx| {
            let (first, reserved) = match res {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => return act.fail(format!("cannot scan source: {e}")),
                Err(e) => return act.fail(e.to_string()),
            };
            act.seq = reserved;
            act.reserved = Seq(reserved.0.saturating_add(SEQ_BLOCK));
            if let Some(store) = &act.store {
                match Persister::new(store.clone(), act.folder.to_string()) {
                    Ok(p) => act.persister = Some(p),
                    Err(e) => return act.fail(format!("cannot start the index writer: {e}")),
                }
            }
            match first {
                FirstScan::Fresh(outcome) => act.first_fresh(outcome),
                FirstScan::Resumed {
                    index,
                    history_from,
                    found,
                } => act.first_resumed(index, history_from, found),
            }
            if act.first == FirstSend::Snapshot {
                let entries = act.snapshot();
                act.send_update(true, entries, HashMap::new(), ctx);
            }
            if let Some(after) = act.early_resend.take() {
                act.resend(after, ctx);
            }
        }));
    }
}

/// Blocking: the first scan. With a saved index (of the same chunker parameters), rescans
/// against it so unchanged files keep their content and sequence; otherwise scans afresh.
/// Then reserves this run's block of sequences. Returns the scan and where the block starts.
fn first_scan(
    source: &SourceDir,
    opts: ScanOptions,
    store: Option<&dyn SourceStore>,
    folder: &FolderId,
) -> ferry_engine::Result<(FirstScan, Seq)> {
    let store_err = |what: &str, e: String| {
        ferry_engine::Error::io(
            "use the saved index",
            source.root(),
            std::io::Error::other(format!("{what}: {e}")),
        )
    };
    let params = opts.params;
    let saved = match store {
        Some(store) => store
            .load(&params)
            .map_err(|e| store_err("cannot read it", e))?,
        None => SavedIndex::default(),
    };
    let reserved = saved.reserved;
    let (first, history_from) = match saved.index {
        Some((index, history_from)) => {
            tracing::info!(folder = %folder, entries = index.len(), "resuming from the saved index");
            let found = rescan(source, opts.clone(), &index, None, Changing::Retry)?;
            (
                FirstScan::Resumed {
                    index,
                    history_from,
                    found,
                },
                history_from,
            )
        }
        None => (
            FirstScan::Fresh(ferry_engine::scan(source.root(), opts)?),
            Seq(reserved.0 + 1),
        ),
    };
    if let Some(store) = store {
        store
            .reserve(
                &params,
                Seq(reserved.0.saturating_add(SEQ_BLOCK)),
                history_from,
            )
            .map_err(|e| store_err("cannot reserve sequence numbers", e))?;
    }
    Ok((first, reserved))
}

impl Differ {
    /// Numbers a fresh scan's entries and keeps it as the index.
    fn first_fresh(&mut self, outcome: ferry_engine::ScanOutcome) {
        for s in &outcome.skipped {
            tracing::warn!(folder = %self.folder, path = %s.path.display(), "skipped: {}", s.reason);
        }
        let gaps = outcome.skipped.iter().filter(|s| s.kind.is_gap()).count();
        Stats::add(&self.stats.skipped, gaps as u64);
        Stats::add(&self.stats.entries_scanned, outcome.index.len() as u64);
        self.history_from = self.seq.next();
        let mut index = outcome.index;
        for e in index.iter_mut() {
            self.seq = self.seq.next();
            e.seq = self.seq;
        }
        if self.persister.is_some() {
            let all: Vec<_> = index
                .iter()
                .map(|e| (e.clone(), index.stat(&e.path).copied()))
                .collect();
            self.save(all, true);
        }
        self.index = Some(index);
    }

    /// Takes the saved index back and records what changed while this folder was not watched.
    fn first_resumed(&mut self, index: Index, history_from: Seq, found: Rescanned) {
        for s in &found.skipped {
            tracing::warn!(folder = %self.folder, path = %s.path.display(), "skipped: {}", s.reason);
        }
        for (p, why) in &found.unreadable {
            tracing::warn!(folder = %self.folder, path = %p, "skipped: {why}");
        }
        Stats::add(&self.stats.skipped, found.unreadable.len() as u64);
        Stats::add(&self.stats.bytes_hashed, found.hashed);
        Stats::add(&self.stats.entries_scanned, index.len() as u64);
        self.history_from = history_from;
        self.tombstones = index
            .iter()
            .filter(|e| e.state == EntryState::Deleted)
            .count();
        self.index = Some(index);
        let changed = found.changes.len();
        // The previous contents are of no use to a target that is yet to say what it holds.
        let _ = self.record_changes(found.changes);
        tracing::info!(folder = %self.folder, changed, "saved index brought up to date");
    }

    /// Hands an update to the Sender, in order with everything sent before.
    fn send_update(
        &mut self,
        snapshot: bool,
        entries: Vec<FileEntry>,
        previous: HashMap<RelPath, Content>,
        ctx: &mut Context<Self>,
    ) {
        let update = SourceUpdate {
            snapshot,
            entries,
            previous,
            upto: self.seq,
        };
        self.stats
            .source_seq
            .fetch_max(self.seq.0, std::sync::atomic::Ordering::Relaxed);
        self.stats.actors.queued(Role::Sender);
        let sender = self.sender.clone();
        ctx.wait(
            async move { sender.send(update).await }
                .into_actor(self)
                .map(|r, act, _| {
                    if let Err(e) = r {
                        act.fail(format!("sender is gone: {e}"));
                    }
                }),
        );
    }
}

type HashResult = (
    RelPath,
    std::result::Result<(ferry_engine::Content, StatKey, Vec<Vec<u8>>), ferry_engine::Error>,
);

impl Handler<HashFiles> for Differ {
    type Result = ResponseActFuture<Self, Result<Hashed>>;

    fn handle(&mut self, msg: HashFiles, _: &mut Self::Context) -> Self::Result {
        self.stats.actors.handled(Role::Differ);
        // Each file with the sequence of the entry being hashed: a result for an entry
        // that a rescan has replaced meanwhile must not overwrite the newer one.
        let mut asked: HashMap<RelPath, Seq> = HashMap::new();
        // The bytes of at most KEEP_BYTES (by the scanned sizes) are kept per request.
        let mut budget = KEEP_BYTES;
        let files: Vec<(RelPath, u64)> = match &self.index {
            Some(index) => msg
                .paths
                .into_iter()
                .filter_map(|p| match index.get(&p) {
                    Some(e) if e.kind == EntryKind::File && e.is_present() => {
                        asked.insert(p.clone(), e.seq);
                        let keep = if e.size <= msg.keep && e.size <= budget {
                            budget -= e.size;
                            msg.keep
                        } else {
                            0
                        };
                        Some((p, keep))
                    }
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let jobs = files.chunks(FILES_PER_JOB).map(|group| {
            let group = group.to_vec();
            let source = self.source.clone();
            let pool = self.pool.clone();
            async move {
                pool.run("hash source files", move || {
                    group
                        .into_iter()
                        .map(|(p, keep)| {
                            let hashed = hash_settled(&source, &p, keep, None);
                            (p, hashed)
                        })
                        .collect::<Vec<HashResult>>()
                })
                .await
            }
        });
        let all = join_all(jobs.collect::<Vec<_>>());
        Box::pin(all.into_actor(self).map(move |results, act, _| {
            let mut out = Hashed::default();
            let mut kept = HashSet::new();
            for batch in results {
                for (path, res) in batch? {
                    let current = act.index.as_ref().and_then(|i| i.get(&path));
                    match current {
                        // Replaced since it was asked for: the newer entry (already sent,
                        // with its content) stands.
                        Some(e) if Some(&e.seq) != asked.get(&path) => {
                            out.entries.push(e.clone());
                        }
                        _ => {
                            let (res, bytes) = match res {
                                Ok((content, stat, bytes)) => (Ok((content, stat)), bytes),
                                Err(e) => (Err(e), Vec::new()),
                            };
                            let Some(entry) = act.record_hash(&path, res) else {
                                continue;
                            };
                            if let Some(content) = &entry.content {
                                for (c, data) in content.chunks.iter().zip(bytes) {
                                    if kept.insert(c.id) {
                                        out.chunks.push(ChunkPayload {
                                            id: c.id,
                                            body: ChunkBody::of(data),
                                        });
                                    }
                                }
                            }
                            out.entries.push(entry);
                        }
                    }
                }
            }
            Ok(out)
        }))
    }
}

impl Differ {
    /// Stores a hashing result in the index and returns the entry to send.
    fn record_hash(
        &mut self,
        path: &RelPath,
        res: std::result::Result<(ferry_engine::Content, StatKey), ferry_engine::Error>,
    ) -> Option<FileEntry> {
        let mut entry = self.index.as_ref()?.get(path)?.clone();
        let stat = match res {
            Ok((content, stat)) => {
                Stats::add(&self.stats.bytes_hashed, stat.size);
                if stat.size != entry.size || stat.mtime_ns != entry.mtime.0 {
                    // The file changed since the scan: what we hashed is its newer state.
                    entry.size = stat.size;
                    entry.mtime = ferry_engine::MtimeNs(stat.mtime_ns);
                    entry.seq = self.next_seq();
                }
                entry.content = Some(content);
                Some(stat)
            }
            // Gone since the scan (or its directory replaced by a file): the file is not
            // there to mirror, so it is removed, not kept as unreadable (which would protect
            // a stale copy at the target).
            Err(ferry_engine::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    || source.kind() == std::io::ErrorKind::NotADirectory =>
            {
                tracing::debug!(folder = %self.folder, path = %path, "gone before it was hashed");
                if entry.state != EntryState::Deleted {
                    self.tombstones += 1;
                }
                entry.state = EntryState::Deleted;
                entry.content = None;
                entry.seq = self.next_seq();
                None
            }
            Err(e) => {
                tracing::warn!(folder = %self.folder, path = %path, "skipped: {e}");
                Stats::add(&self.stats.skipped, 1);
                entry.state = EntryState::Unreadable;
                entry.content = None;
                None
            }
        };
        if self.persister.is_some() {
            self.save(vec![(entry.clone(), stat)], false);
        }
        self.index.as_mut()?.insert(entry.clone(), stat);
        Some(entry)
    }
}

/// What a live rescan found: the changes, in the order they are to be applied to the index.
struct Rescanned {
    changes: Vec<Change>,
    skipped: Vec<ferry_engine::Skipped>,
    /// Files that could not be hashed, with why.
    unreadable: Vec<(RelPath, String)>,
    /// Files still being written (with [`Changing::Wait`]): left as the index has them.
    changing: Vec<RelPath>,
    /// Files rewritten in place that have other names (hard links), with their inode: the
    /// write changed those names too, though inotify reported only the one written.
    linked: Vec<(RelPath, (u64, u64))>,
    /// Bytes read to hash changed files.
    hashed: u64,
}

/// What a rescan does with a file that changes while it is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Changing {
    /// Hash it again, up to [`HASH_ATTEMPTS`] times, then report it skipped (a scan that
    /// no later event follows up: the one at start).
    Retry,
    /// Leave it as the index has it, unreported, to be hashed again by the rescan its next
    /// event brings, or by the Differ's own recheck (see [`Differ::recheck_later`]) if none
    /// comes (live rescans). A writer still at work costs one read per batch of its events,
    /// and no warning.
    Wait,
}

/// Blocking: scans `scopes` (everything for `None`), compares with `old` (the index's
/// entries there), and hashes the files whose content is new.
fn rescan(
    source: &SourceDir,
    opts: ScanOptions,
    old: &Index,
    scopes: Option<&[RelPath]>,
    changing_files: Changing,
) -> ferry_engine::Result<Rescanned> {
    let mut fresh = Vec::new();
    let mut skipped = Vec::new();
    match scopes {
        None => {
            let out = ferry_engine::scan(source.root(), opts)?;
            skipped = out.skipped;
            fresh = out.index.into_entries();
        }
        Some(paths) => {
            for p in paths {
                let out = ferry_engine::scan_subtree(source.root(), p, opts.clone())?;
                skipped.extend(out.skipped);
                fresh.extend(out.index.into_entries());
            }
        }
    }
    let mut changes = reconcile(old, scopes, &fresh);
    let mut unreadable = Vec::new();
    let mut changing = Vec::new();
    let mut linked = Vec::new();
    let mut hashed = 0;
    for c in &mut changes {
        let Change::Upsert(e, stat) = c else { continue };
        if e.kind != EntryKind::File || !e.is_present() || e.content.is_some() {
            continue;
        }
        // The file's chunk list as the index has it: most of a large file is still there.
        let previous = old
            .get(&e.path)
            .filter(|o| o.kind == EntryKind::File)
            .and_then(|o| o.content.as_ref());
        let result = match changing_files {
            Changing::Retry => hash_settled(source, &e.path, 0, previous),
            Changing::Wait => source.hash_file_keeping(&e.path, 0, previous),
        };
        match result {
            Ok((content, st, _)) => {
                if previous.is_some() && has_other_names(source, &e.path) {
                    linked.push((e.path.clone(), (st.dev, st.ino)));
                }
                hashed += st.size;
                e.size = st.size;
                e.mtime = ferry_engine::MtimeNs(st.mtime_ns);
                e.content = Some(content);
                *stat = Some(st);
            }
            Err(ferry_engine::Error::Changed { .. }) if changing_files == Changing::Wait => {
                changing.push(e.path.clone());
            }
            Err(err) => {
                unreadable.push((e.path.clone(), err.to_string()));
                e.state = EntryState::Unreadable;
                *stat = None;
            }
        }
    }
    if !changing.is_empty() {
        let waiting: HashSet<&RelPath> = changing.iter().collect();
        changes.retain(|c| !matches!(c, Change::Upsert(e, _) if waiting.contains(&e.path)));
    }
    Ok(Rescanned {
        hashed,
        changes,
        skipped,
        unreadable,
        changing,
        linked,
    })
}

/// True when the file at `path` has more than one name.
fn has_other_names(source: &SourceDir, path: &RelPath) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path.under(source.root())).is_ok_and(|m| m.nlink() > 1)
}

/// Blocking: the directories in `dirs` whose own mode or mtime changed, as upserts. A
/// directory gone or replaced is left to the events of its own path.
fn refresh_dirs(source: &SourceDir, dirs: &[FileEntry]) -> Vec<Change> {
    dirs.iter()
        .filter_map(|old| {
            let md = std::fs::symlink_metadata(source.root().join(old.path.as_str())).ok()?;
            if !md.is_dir() {
                return None;
            }
            let (mut fresh, stat) =
                ferry_engine::scan::entry_from_metadata(source.root(), &old.path, &md).ok()?;
            if fresh.mtime == old.mtime && fresh.mode == old.mode {
                return None;
            }
            fresh.seq = old.seq;
            Some(Change::Upsert(fresh, Some(stat)))
        })
        .collect()
}

impl Differ {
    /// Rescans `scopes` (everything for `None`) and sends what changed. Runs to completion
    /// before the Differ handles anything else, so batches are applied in order.
    /// `since` is when the first change of a live batch was seen, for the latency histogram.
    fn rescan_and_send(
        &mut self,
        scopes: Option<Vec<RelPath>>,
        touched: Vec<RelPath>,
        since: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        let Some(index) = &self.index else {
            // Still in the initial scan: it will see these changes itself.
            return;
        };
        if self.finished {
            // Stopping: a change recorded now could not be saved; the next run's scan sees it.
            return;
        }
        let old = index.extract(scopes.as_deref());
        let dirs: Vec<FileEntry> = touched
            .iter()
            .filter_map(|d| index.get(d))
            .filter(|e| e.kind == EntryKind::Dir && e.is_present())
            .cloned()
            .collect();
        let source = self.source.clone();
        let opts = self.scan.clone();
        let pool = self.scan_pool.clone();
        let job = async move {
            pool.run("rescan source", move || {
                let mut found = rescan(&source, opts, &old, scopes.as_deref(), Changing::Wait)?;
                found.changes.extend(refresh_dirs(&source, &dirs));
                Ok::<_, ferry_engine::Error>(found)
            })
            .await
        };
        ctx.wait(job.into_actor(self).map(move |res, act, ctx| {
            let found = match res {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return act.fail(format!("cannot rescan source: {e}")),
                Err(e) => return act.fail(e.to_string()),
            };
            for s in &found.skipped {
                tracing::warn!(folder = %act.folder, path = %s.path.display(), "skipped: {}", s.reason);
            }
            for (p, why) in &found.unreadable {
                tracing::warn!(folder = %act.folder, path = %p, "skipped: {why}");
            }
            for c in &found.changes {
                match c {
                    Change::Upsert(e, _) => act.still_changing.settled(&e.path),
                    Change::Remove(p) => act.still_changing.settled(p),
                }
            }
            let now = Instant::now();
            for p in &found.changing {
                match act.still_changing.deferred(p, now) {
                    Some(t) => tracing::warn!(folder = %act.folder, path = %p, "still being written after {}s: replicated once it holds still while it is read", t.as_secs()),
                    None => tracing::debug!(folder = %act.folder, path = %p, "still being written; hashed again at its next change"),
                }
            }
            act.recheck_later(found.changing, ctx);
            let others = act.other_names(&found.linked);
            act.recheck_later(others, ctx);
            Stats::add(&act.stats.skipped, found.unreadable.len() as u64);
            Stats::add(&act.stats.bytes_hashed, found.hashed);
            let (entries, previous) = act.record_changes(found.changes);
            if entries.is_empty() {
                return;
            }
            if let Some(since) = since {
                act.stats.latency.changed(act.seq, since);
            }
            act.send_update(false, entries, previous, ctx);
        }));
    }

    /// The paths of the index that are other names (the same inode) of the files in
    /// `linked`. A look through the whole index, made only for a file rewritten in place
    /// that has other names.
    fn other_names(&self, linked: &[(RelPath, (u64, u64))]) -> Vec<RelPath> {
        let Some(index) = &self.index else {
            return Vec::new();
        };
        if linked.is_empty() {
            return Vec::new();
        }
        let inodes: HashSet<(u64, u64)> = linked.iter().map(|(_, i)| *i).collect();
        let written: HashSet<&RelPath> = linked.iter().map(|(p, _)| p).collect();
        index
            .iter()
            .filter(|e| e.kind == EntryKind::File && !written.contains(&e.path))
            .filter(|e| {
                index
                    .stat(&e.path)
                    .is_some_and(|s| inodes.contains(&(s.dev, s.ino)))
            })
            .map(|e| e.path.clone())
            .collect()
    }

    /// Looks at `paths` (files a rescan left alone because they changed while hashed, or
    /// other names of a file rewritten in place) again
    /// after [`RECHECK_AFTER`], whether or not an event brings them up first: a change can
    /// come without an event for the path (a hard link made elsewhere moves only the
    /// ctime, a write through a shared mapping raises none), and the file would otherwise
    /// wait for its next event or the periodic rescan.
    fn recheck_later(&mut self, paths: Vec<RelPath>, ctx: &mut Context<Self>) {
        if paths.is_empty() {
            return;
        }
        if let Some(pending) = &mut self.recheck {
            pending.extend(paths);
            return;
        }
        self.recheck = Some(paths.into_iter().collect());
        ctx.run_later(RECHECK_AFTER, |act, ctx| {
            let Some(paths) = act.recheck.take() else {
                return;
            };
            act.rescan_and_send(Some(paths.into_iter().collect()), Vec::new(), None, ctx);
        });
    }

    /// Applies changes to the index with fresh sequence numbers; returns the entries to send,
    /// and the former content of large files whose content changed.
    fn record_changes(
        &mut self,
        changes: Vec<Change>,
    ) -> (Vec<FileEntry>, HashMap<RelPath, Content>) {
        let mut previous = HashMap::new();
        let Some(mut index) = self.index.take() else {
            return (Vec::new(), previous);
        };
        let mut out = Vec::new();
        // Copies for the store only when the index is kept.
        let keep = self.persister.is_some();
        let mut saved = Vec::new();
        for c in changes {
            match c {
                Change::Upsert(mut e, stat) => {
                    e.seq = self.next_seq();
                    let large = e
                        .content
                        .as_ref()
                        .is_some_and(|c| c.chunks.len() >= OUTLINE_MIN_CHUNKS);
                    let old = index.get(&e.path);
                    if old.is_some_and(|o| o.state == EntryState::Deleted) {
                        self.tombstones = self.tombstones.saturating_sub(1);
                    }
                    let before = old.and_then(|o| o.content.as_ref());
                    if let (true, Some(before)) = (large, before) {
                        if Some(before.id) != e.content.as_ref().map(|c| c.id) {
                            previous.insert(e.path.clone(), before.clone());
                        }
                    }
                    index.insert(e.clone(), stat);
                    if keep {
                        saved.push((e.clone(), stat));
                    }
                    out.push(e);
                }
                Change::Remove(path) => {
                    let Some(old) = index.get(&path).filter(|e| e.state != EntryState::Deleted)
                    else {
                        continue;
                    };
                    let mut tomb = old.clone();
                    tomb.seq = self.next_seq();
                    tomb.state = EntryState::Deleted;
                    tomb.content = None;
                    index.insert(tomb.clone(), None);
                    self.tombstones += 1;
                    if keep {
                        saved.push((tomb.clone(), None));
                    }
                    out.push(tomb);
                }
            }
        }
        self.index = Some(index);
        self.save(saved, false);
        self.compact();
        (out, previous)
    }
}

impl Handler<Dirty> for Differ {
    type Result = ();

    fn handle(&mut self, msg: Dirty, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Differ);
        self.rescan_and_send(Some(msg.paths), msg.touched, Some(msg.since), ctx);
    }
}

impl Handler<Rescan> for Differ {
    type Result = ();

    fn handle(&mut self, msg: Rescan, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Differ);
        tracing::info!(folder = %self.folder, "rescanning: {}", msg.reason);
        self.rescan_and_send(None, Vec::new(), None, ctx);
    }
}

impl Handler<GetContent> for Differ {
    type Result = Option<Content>;

    fn handle(&mut self, msg: GetContent, _: &mut Self::Context) -> Self::Result {
        let e = self.index.as_ref()?.get(&msg.path)?;
        e.content.clone().filter(|_| e.is_present())
    }
}

impl Handler<Resend> for Differ {
    type Result = ();

    /// Sends the target every entry newer than what it holds: after a reconnect, the link
    /// may have lost any update sent since.
    fn handle(&mut self, msg: Resend, ctx: &mut Self::Context) {
        if self.index.is_none() {
            // Still in the first scan: answered when it is done.
            self.early_resend = Some(msg.after);
            return;
        }
        self.resend(msg.after, ctx);
    }
}

impl Differ {
    /// Sends the entries newer than `after`, or a snapshot when the index's history does
    /// not reach back to `after` (a target that knows nothing, or knew an older run's index).
    fn resend(&mut self, after: Seq, ctx: &mut Context<Self>) {
        let Some(index) = &self.index else { return };
        let snapshot = after < self.history_from || after > self.seq;
        let entries: Vec<FileEntry> = if snapshot {
            self.snapshot()
        } else {
            index.iter().filter(|e| e.seq > after).cloned().collect()
        };
        tracing::info!(folder = %self.folder, after = after.0, entries = entries.len(), snapshot, "sending what the target lacks");
        self.send_update(snapshot, entries, HashMap::new(), ctx);
    }
}

/// → Differ: save everything recorded and mark the saved index complete (a clean stop);
/// answered once it is on disk. Nothing is recorded after it.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct FinishSaving;

impl Handler<FinishSaving> for Differ {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FinishSaving, _: &mut Self::Context) -> Self::Result {
        self.finished = true;
        let Some(persister) = self.persister.take() else {
            return Box::pin(actix::fut::ready(()));
        };
        let pool = self.pool.clone();
        let folder = self.folder.clone();
        Box::pin(
            async move {
                match pool.run("save the index", move || persister.finish()).await {
                    Ok(Ok(())) => tracing::debug!(folder = %folder, "index saved"),
                    Ok(Err(e)) => {
                        tracing::warn!(folder = %folder, "index not saved completely: {e}")
                    }
                    Err(e) => tracing::warn!(folder = %folder, "index not saved completely: {e}"),
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<CurrentSeq> for Differ {
    type Result = MessageResult<CurrentSeq>;

    fn handle(&mut self, _: CurrentSeq, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.seq)
    }
}

impl Handler<crate::messages::Stop> for Differ {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Test support: runs hashing work that panics, as a corrupt chunker might; the panic must
/// come back as an error and reach the supervisor as a failure of this actor.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct PanicInPool;

impl Handler<PanicInPool> for Differ {
    type Result = ();

    fn handle(&mut self, _: PanicInPool, ctx: &mut Self::Context) {
        let pool = self.pool.clone();
        let job = async move {
            pool.run("hash source files", || {
                panic!("injected panic in the hashing pool")
            })
            .await
        };
        ctx.spawn(
            job.into_actor(self)
                .map(|res: crate::Result<()>, act, ctx| {
                    if let Err(e) = res {
                        act.fail(e.to_string());
                        ctx.stop();
                    }
                }),
        );
    }
}
