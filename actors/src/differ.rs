//! The Differ: owns a source folder's index, scans it, and hashes files on request.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::outline::OUTLINE_MIN_CHUNKS;
use ferry_engine::{reconcile, Change, Content};
use ferry_engine::{
    EntryKind, EntryState, FileEntry, Index, RelPath, ScanOptions, Seq, SkipKind, SourceDir,
    StatKey,
};
use futures_util::future::join_all;

use crate::error::Result;
use crate::messages::{
    CurrentSeq, Dirty, Failed, FolderId, GetContent, HashFiles, Rescan, Resend, SourceUpdate, Start,
};
use crate::pool::Pool;
use crate::stats::Stats;

/// How often hashing a file that keeps changing under us is retried before it is skipped.
const HASH_ATTEMPTS: usize = 3;
/// Files handed to one hashing job (jobs run in parallel, one per core).
const FILES_PER_JOB: usize = 32;

/// Hashes a source file, trying again while it changes under the read (a writer still at
/// work), up to [`HASH_ATTEMPTS`] times.
fn hash_settled(
    source: &SourceDir,
    path: &RelPath,
) -> std::result::Result<(ferry_engine::Content, StatKey), ferry_engine::Error> {
    let mut last = source.hash_file(path);
    for _ in 1..HASH_ATTEMPTS {
        match &last {
            Err(ferry_engine::Error::Changed { .. }) => last = source.hash_file(path),
            _ => break,
        }
    }
    last
}

/// Owns the source index of one folder.
pub struct Differ {
    folder: FolderId,
    source: SourceDir,
    scan: ScanOptions,
    index: Option<Index>,
    seq: Seq,
    sender: Recipient<SourceUpdate>,
    monitor: Recipient<Failed>,
    pool: Pool,
    stats: Arc<Stats>,
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
            sender,
            monitor,
            pool: Pool::new(cores),
            stats,
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
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::info!(actor = "differ", folder = %self.folder, "stopped");
    }
}

impl Handler<Start> for Differ {
    type Result = ();

    fn handle(&mut self, _: Start, ctx: &mut Self::Context) {
        let root = self.source.root().to_owned();
        let opts = self.scan.clone();
        let pool = self.pool.clone();
        let scan = async move {
            pool.run("scan source", move || ferry_engine::scan(&root, opts))
                .await
        };
        ctx.wait(scan.into_actor(self).map(|res, act, ctx| {
            let outcome = match res {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => return act.fail(format!("cannot scan source: {e}")),
                Err(e) => return act.fail(e.to_string()),
            };
            for s in &outcome.skipped {
                tracing::warn!(folder = %act.folder, path = %s.path.display(), "skipped: {}", s.reason);
            }
            let gaps = outcome.skipped.iter().filter(|s| s.kind == SkipKind::Unreadable).count();
            Stats::add(&act.stats.skipped, gaps as u64);
            Stats::add(&act.stats.entries_scanned, outcome.index.len() as u64);
            let mut index = outcome.index;
            for e in index.iter_mut() {
                act.seq = act.seq.next();
                e.seq = act.seq;
            }
            let entries: Vec<FileEntry> = index.iter().cloned().collect();
            act.index = Some(index);
            let update = SourceUpdate {
                snapshot: true,
                entries,
                previous: HashMap::new(),
                upto: act.seq,
            };
            let sender = act.sender.clone();
            ctx.wait(
                async move { sender.send(update).await }
                    .into_actor(act)
                    .map(|r, act, _| {
                        if let Err(e) = r {
                            act.fail(format!("sender is gone: {e}"));
                        }
                    }),
            );
        }));
    }
}

type HashResult = (
    RelPath,
    std::result::Result<(ferry_engine::Content, StatKey), ferry_engine::Error>,
);

impl Handler<HashFiles> for Differ {
    type Result = ResponseActFuture<Self, Result<Vec<FileEntry>>>;

    fn handle(&mut self, msg: HashFiles, _: &mut Self::Context) -> Self::Result {
        // Each file with the sequence of the entry being hashed: a result for an entry
        // that a rescan has replaced meanwhile must not overwrite the newer one.
        let mut asked: HashMap<RelPath, Seq> = HashMap::new();
        let files: Vec<RelPath> = match &self.index {
            Some(index) => msg
                .paths
                .into_iter()
                .filter(|p| match index.get(p) {
                    Some(e) if e.kind == EntryKind::File && e.is_present() => {
                        asked.insert(p.clone(), e.seq);
                        true
                    }
                    _ => false,
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
                        .map(|p| {
                            let hashed = hash_settled(&source, &p);
                            (p, hashed)
                        })
                        .collect::<Vec<HashResult>>()
                })
                .await
            }
        });
        let all = join_all(jobs.collect::<Vec<_>>());
        Box::pin(all.into_actor(self).map(move |results, act, _| {
            let mut out = Vec::new();
            for batch in results {
                for (path, res) in batch? {
                    let current = act.index.as_ref().and_then(|i| i.get(&path));
                    match current {
                        // Replaced since it was asked for: the newer entry (already sent,
                        // with its content) stands.
                        Some(e) if Some(&e.seq) != asked.get(&path) => out.push(e.clone()),
                        _ => out.extend(act.record_hash(&path, res)),
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
        let index = self.index.as_mut()?;
        let mut entry = index.get(path)?.clone();
        let stat = match res {
            Ok((content, stat)) => {
                if stat.size != entry.size || stat.mtime_ns != entry.mtime.0 {
                    // The file changed since the scan: what we hashed is its newer state.
                    entry.size = stat.size;
                    entry.mtime = ferry_engine::MtimeNs(stat.mtime_ns);
                    self.seq = self.seq.next();
                    entry.seq = self.seq;
                }
                entry.content = Some(content);
                Some(stat)
            }
            Err(e) => {
                tracing::warn!(folder = %self.folder, path = %path, "skipped: {e}");
                Stats::add(&self.stats.skipped, 1);
                entry.state = EntryState::Unreadable;
                entry.content = None;
                None
            }
        };
        index.insert(entry.clone(), stat);
        Some(entry)
    }
}

/// What a live rescan found: the changes, in the order they are to be applied to the index.
struct Rescanned {
    changes: Vec<Change>,
    skipped: Vec<ferry_engine::Skipped>,
    /// Files that could not be hashed, with why.
    unreadable: Vec<(RelPath, String)>,
}

/// Blocking: scans `scopes` (everything for `None`), compares with `old` (the index's
/// entries there), and hashes the files whose content is new.
fn rescan(
    source: &SourceDir,
    opts: ScanOptions,
    old: &Index,
    scopes: Option<&[RelPath]>,
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
    for c in &mut changes {
        let Change::Upsert(e, stat) = c else { continue };
        if e.kind != EntryKind::File || !e.is_present() || e.content.is_some() {
            continue;
        }
        match hash_settled(source, &e.path) {
            Ok((content, st)) => {
                e.size = st.size;
                e.mtime = ferry_engine::MtimeNs(st.mtime_ns);
                e.content = Some(content);
                *stat = Some(st);
            }
            Err(err) => {
                unreadable.push((e.path.clone(), err.to_string()));
                e.state = EntryState::Unreadable;
                *stat = None;
            }
        }
    }
    Ok(Rescanned {
        changes,
        skipped,
        unreadable,
    })
}

impl Differ {
    /// Rescans `scopes` (everything for `None`) and sends what changed. Runs to completion
    /// before the Differ handles anything else, so batches are applied in order.
    fn rescan_and_send(&mut self, scopes: Option<Vec<RelPath>>, ctx: &mut Context<Self>) {
        let Some(index) = &self.index else {
            // Still in the initial scan: it will see these changes itself.
            return;
        };
        let old = index.extract(scopes.as_deref());
        let source = self.source.clone();
        let opts = self.scan.clone();
        let pool = self.pool.clone();
        let job = async move {
            pool.run("rescan source", move || {
                rescan(&source, opts, &old, scopes.as_deref())
            })
            .await
        };
        ctx.wait(job.into_actor(self).map(|res, act, ctx| {
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
            Stats::add(&act.stats.skipped, found.unreadable.len() as u64);
            let (entries, previous) = act.record_changes(found.changes);
            if entries.is_empty() {
                return;
            }
            let update = SourceUpdate {
                snapshot: false,
                entries,
                previous,
                upto: act.seq,
            };
            let sender = act.sender.clone();
            ctx.wait(async move { sender.send(update).await }.into_actor(act).map(|r, act, _| {
                if let Err(e) = r {
                    act.fail(format!("sender is gone: {e}"));
                }
            }));
        }));
    }

    /// Applies changes to the index with fresh sequence numbers; returns the entries to send,
    /// and the former content of large files whose content changed.
    fn record_changes(
        &mut self,
        changes: Vec<Change>,
    ) -> (Vec<FileEntry>, HashMap<RelPath, Content>) {
        let mut previous = HashMap::new();
        let Some(index) = self.index.as_mut() else {
            return (Vec::new(), previous);
        };
        let mut out = Vec::new();
        for c in changes {
            match c {
                Change::Upsert(mut e, stat) => {
                    self.seq = self.seq.next();
                    e.seq = self.seq;
                    let large = e
                        .content
                        .as_ref()
                        .is_some_and(|c| c.chunks.len() >= OUTLINE_MIN_CHUNKS);
                    let before = index.get(&e.path).and_then(|o| o.content.as_ref());
                    if let (true, Some(before)) = (large, before) {
                        if Some(before.id) != e.content.as_ref().map(|c| c.id) {
                            previous.insert(e.path.clone(), before.clone());
                        }
                    }
                    index.insert(e.clone(), stat);
                    out.push(e);
                }
                Change::Remove(path) => {
                    let Some(old) = index.get(&path).filter(|e| e.state != EntryState::Deleted)
                    else {
                        continue;
                    };
                    let mut tomb = old.clone();
                    self.seq = self.seq.next();
                    tomb.seq = self.seq;
                    tomb.state = EntryState::Deleted;
                    tomb.content = None;
                    index.insert(tomb.clone(), None);
                    out.push(tomb);
                }
            }
        }
        (out, previous)
    }
}

impl Handler<Dirty> for Differ {
    type Result = ();

    fn handle(&mut self, msg: Dirty, ctx: &mut Self::Context) {
        self.rescan_and_send(Some(msg.paths), ctx);
    }
}

impl Handler<Rescan> for Differ {
    type Result = ();

    fn handle(&mut self, msg: Rescan, ctx: &mut Self::Context) {
        tracing::info!(folder = %self.folder, "rescanning: {}", msg.reason);
        self.rescan_and_send(None, ctx);
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
        let Some(index) = &self.index else {
            // Still in the initial scan: its snapshot is still to come.
            return;
        };
        let snapshot = msg.after == Seq::default();
        let entries: Vec<FileEntry> = index
            .iter()
            .filter(|e| snapshot || e.seq > msg.after)
            .cloned()
            .collect();
        tracing::info!(folder = %self.folder, after = msg.after.0, entries = entries.len(), snapshot, "resending to a reconnected target");
        let update = SourceUpdate {
            snapshot,
            entries,
            previous: HashMap::new(),
            upto: self.seq,
        };
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
