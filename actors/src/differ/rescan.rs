//! The Differ rescanning subtrees (at resume and on live changes) and reconciling them
//! with its index: renames carried over by inode, files that change while hashed looked at
//! again later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_engine::outline::OUTLINE_MIN_CHUNKS;
use ferry_engine::{reconcile, Change, Content};
use ferry_engine::{
    EntryKind, EntryState, FileEntry, Index, RelPath, ScanOptions, SourceDir, StatKey,
};

use crate::health::Role;
use crate::messages::{Dirty, Rescan};
use crate::stats::Stats;

use super::hashing::settled;
use super::Differ;

/// When a file a live rescan left alone (it changed while hashed) is looked at again if no
/// event brought it up first.
pub(super) const RECHECK_AFTER: Duration = Duration::from_millis(200);

/// What a live rescan found: the changes, in the order they are to be applied to the index.
pub(super) struct Rescanned {
    pub(super) changes: Vec<Change>,
    pub(super) skipped: Vec<ferry_engine::Skipped>,
    /// Files that could not be hashed, with why.
    pub(super) unreadable: Vec<(RelPath, String)>,
    /// Files still being written (with [`Changing::Wait`]): left as the index has them.
    changing: Vec<RelPath>,
    /// Changed files that have other names (hard links), with their inode and whether they
    /// were written: a write or a chmod through one name changes them all, though inotify
    /// reports only the name used (and a new link, only the new name).
    linked: Vec<(RelPath, (u64, u64), bool)>,
    /// Bytes read to hash changed files.
    pub(super) hashed: u64,
}

/// What a rescan does with a file that changes while it is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Changing {
    /// Hash it again, up to [`HASH_ATTEMPTS`](super::hashing::HASH_ATTEMPTS) times, then report it skipped (a scan that
    /// no later event follows up: the one at start).
    Retry,
    /// Leave it as the index has it, unreported, to be hashed again by the rescan its next
    /// event brings, or by the Differ's own recheck (see [`Differ::recheck_later`]) if none
    /// comes (live rescans). A writer still at work costs one read per batch of its events,
    /// and no warning.
    Wait,
}

/// Blocking: scans `scopes` (everything for `None`), compares with `old` (the index's
/// entries there), and hashes the files whose content is new, and the changed files in
/// `written` whatever their stat says.
pub(super) fn rescan(
    source: &SourceDir,
    opts: ScanOptions,
    old: &Index,
    scopes: Option<&[RelPath]>,
    written: &BTreeSet<RelPath>,
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
    // The stat alone cannot tell a write whose mtime was set back from a chmod or a rename
    // of the file in the same batch (all move the ctime): the write event can. It names the
    // file as it was when written: a file written, then renamed, is found by its inode.
    let written_inodes: HashSet<(u64, u64)> = written
        .iter()
        .filter_map(|p| old.stat(p))
        .map(|s| (s.dev, s.ino))
        .collect();
    let was_written = |path: &RelPath, stat: &Option<StatKey>| {
        written.contains(path)
            || stat
                .as_ref()
                .is_some_and(|s| written_inodes.contains(&(s.dev, s.ino)))
    };
    for c in &mut changes {
        if let Change::Upsert(e, stat) = c {
            if e.kind == EntryKind::File && was_written(&e.path, stat) {
                e.content = None;
            }
        }
    }
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
            Changing::Retry => settled(|| source.hash_file_again(&e.path, previous)),
            Changing::Wait => source.hash_file_again(&e.path, previous),
        };
        match result {
            Ok((content, st)) => {
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
    for c in &changes {
        if let Change::Upsert(e, stat @ Some(st)) = c {
            if e.kind == EntryKind::File && e.is_present() && has_other_names(source, &e.path) {
                let written = was_written(&e.path, stat);
                linked.push((e.path.clone(), (st.dev, st.ino), written));
            }
        }
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
        written: BTreeSet<RelPath>,
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
                let mut found = rescan(
                    &source,
                    opts,
                    &old,
                    scopes.as_deref(),
                    &written,
                    Changing::Wait,
                )?;
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
            // Still being written: read again whatever the stat says by then.
            act.recheck_later(found.changing, true, ctx);
            for (others, written) in act.other_names(&found.linked) {
                act.recheck_later(others, written, ctx);
            }
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
    /// `linked`, split by whether that file was written (then they are read again whatever
    /// their stat says: a write with its mtime set back and a chmod look alike). A look
    /// through the whole index, made only when a changed file has other names.
    fn other_names(&self, linked: &[(RelPath, (u64, u64), bool)]) -> [(Vec<RelPath>, bool); 2] {
        let mut out = [(Vec::new(), true), (Vec::new(), false)];
        let Some(index) = &self.index else {
            return out;
        };
        if linked.is_empty() {
            return out;
        }
        let mut inodes: HashMap<(u64, u64), bool> = HashMap::new();
        for (_, inode, written) in linked {
            *inodes.entry(*inode).or_default() |= written;
        }
        let changed: HashSet<&RelPath> = linked.iter().map(|(p, _, _)| p).collect();
        for e in index
            .iter()
            .filter(|e| e.kind == EntryKind::File && !changed.contains(&e.path))
        {
            let Some(s) = index.stat(&e.path) else {
                continue;
            };
            if let Some(written) = inodes.get(&(s.dev, s.ino)) {
                out[usize::from(!written)].0.push(e.path.clone());
            }
        }
        out
    }

    /// Looks at `paths` (files a rescan left alone because they changed while hashed, or
    /// other names of a changed file) again after [`RECHECK_AFTER`], whether or not an
    /// event brings them up first: a change can come without an event for the path (a hard
    /// link made elsewhere moves only the ctime, a write through a shared mapping raises
    /// none), and the file would otherwise wait for its next event or the periodic rescan.
    /// `written`: they were being written, so they are read again whatever their stat says.
    fn recheck_later(&mut self, paths: Vec<RelPath>, written: bool, ctx: &mut Context<Self>) {
        if paths.is_empty() {
            return;
        }
        let armed = self.recheck.is_some();
        let pending = self.recheck.get_or_insert_with(BTreeMap::new);
        for p in paths {
            *pending.entry(p).or_default() |= written;
        }
        if armed {
            return;
        }
        ctx.run_later(RECHECK_AFTER, |act, ctx| {
            let Some(pending) = act.recheck.take() else {
                return;
            };
            let written = pending
                .iter()
                .filter(|(_, w)| **w)
                .map(|(p, _)| p.clone())
                .collect();
            let paths = pending.into_keys().collect();
            act.rescan_and_send(Some(paths), Vec::new(), written, None, ctx);
        });
    }

    /// Applies changes to the index with fresh sequence numbers; returns the entries to send,
    /// and the former content of large files whose content changed.
    pub(super) fn record_changes(
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
        let written = msg.written.into_iter().collect();
        self.rescan_and_send(Some(msg.paths), msg.touched, written, Some(msg.since), ctx);
    }
}

impl Handler<Rescan> for Differ {
    type Result = ();

    fn handle(&mut self, msg: Rescan, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Differ);
        tracing::info!(folder = %self.folder, "rescanning: {}", msg.reason);
        self.rescan_and_send(None, Vec::new(), BTreeSet::new(), None, ctx);
    }
}
