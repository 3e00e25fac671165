//! `diff(source, target) -> Plan`: the pure decision of what must change, tested without disk.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::chunk::ContentId;
use crate::entry::{EntryKind, EntryState, FileEntry};
use crate::index::Index;
use crate::plan::{Action, Plan, Seen};
use crate::relpath::RelPath;
use crate::targetindex::TargetIndex;

/// New files at least this large make the target's files of the same size get hashed, as
/// likely copies whose chunks can be reused (smaller ones are cheaper to send than to look for).
pub const COPY_SOURCE_MIN: u64 = 1 << 20;

/// How "same file" is decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Compare content even when size and mtime agree (rsync's `--checksum`).
    pub checksum: bool,
    /// The step, in nanoseconds, the target keeps file times in: a target mtime that is the
    /// source's cut down to it is equal (0: exact; see [`crate::TargetDir::probe_mtime_step`]
    /// and [`crate::MtimeNs::kept_as`]).
    pub mtime_step: u64,
}

/// Files whose chunk lists must be known before a plan can be made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentNeeds {
    /// Source files to hash.
    pub source: Vec<RelPath>,
    /// Target files to hash.
    pub target: Vec<RelPath>,
}

impl ContentNeeds {
    /// True when nothing needs hashing.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty() && self.target.is_empty()
    }
}

/// The result of a diff: a plan, or the content it needs first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffOutcome {
    /// The plan that makes the target a mirror of the source.
    Ready(Plan),
    /// Hash these files (filling `content` in the indexes) and diff again.
    NeedContent(ContentNeeds),
}

/// Compares a full source index with a target index.
///
/// Files are "the same" when size and mtime agree (unless `checksum`); when they differ
/// only in mtime, content decides, so identical bytes get a metadata update, not a rewrite.
/// Source entries marked unreadable protect whatever the target holds at and below them.
/// For one comparison: it builds a [`TargetIndex`] from a copy of `target`; a caller that
/// diffs again and again keeps its own and calls [`diff_within`].
pub fn diff(source: &Index, target: &Index, opts: DiffOptions) -> DiffOutcome {
    diff_within(source, &TargetIndex::new(target.clone()), None, &[], opts)
}

/// Like [`diff`], but looks only at `paths` (when given), with everything below and above
/// them: what changed since the last plan was applied in full. Entries elsewhere are taken
/// to be mirrored already, so a live change costs what it touches, not the whole folder.
/// (Likely copies of large new files are still looked for in the whole target, among the
/// files it has not hashed, which [`TargetIndex`] keeps by size.)
///
/// Source entries in any set of `pending` (content still being hashed, files being
/// written) are left out: nothing is planned for them, and what the target holds at their
/// paths is kept.
pub fn diff_within(
    source: &Index,
    target_index: &TargetIndex,
    paths: Option<&BTreeSet<RelPath>>,
    pending: &[&HashSet<RelPath>],
    opts: DiffOptions,
) -> DiffOutcome {
    let target = target_index.index();
    let mut sources = in_scope(source, paths);
    if pending.iter().any(|set| !set.is_empty()) {
        sources.retain(|e| !pending.iter().any(|set| set.contains(&e.path)));
    }
    let targets = in_scope(target, paths);
    let mut needs = ContentNeeds::default();
    let mut d = Draft::default();
    let protected: Vec<&RelPath> = sources
        .iter()
        .filter(|e| e.state == EntryState::Unreadable)
        .map(|e| &e.path)
        .collect();
    let is_protected = |p: &RelPath| protected.iter().any(|q| p.is_within(q));

    // Directories whose whole subtree goes away with a Clear: no per-entry removes inside.
    let mut cleared_dirs: Vec<RelPath> = Vec::new();
    for s in sources.iter().copied().filter(|e| e.is_present()) {
        let Some(t) = target.get(&s.path).filter(|t| t.is_present()) else {
            d.create(s, &mut needs);
            continue;
        };
        match (s.kind, t.kind) {
            (EntryKind::Dir, EntryKind::Dir) => {
                if s.mode != t.mode || !s.mtime.kept_as(t.mtime, opts.mtime_step) {
                    d.dir_meta.insert(s.path.clone(), true);
                }
            }
            (EntryKind::File, EntryKind::File) => d.compare_files(s, t, opts, &mut needs),
            (EntryKind::Symlink, EntryKind::Symlink) => {
                if s.symlink_target != t.symlink_target {
                    d.symlinks.push(Action::Symlink {
                        entry: s.clone(),
                        replaces: true,
                    });
                    d.touch_parent(&s.path);
                } else if !s.mtime.kept_as(t.mtime, opts.mtime_step) {
                    d.content_phase.push(Action::SetMeta {
                        entry: s.clone(),
                        seen: None,
                    });
                }
            }
            (_, EntryKind::Dir) => {
                // A directory is in the way of a file or symlink: it goes after renames,
                // which may still take files out of it.
                cleared_dirs.push(s.path.clone());
                d.clear_dirs.push(Action::Clear {
                    path: s.path.clone(),
                    found: EntryKind::Dir,
                });
                d.create_replacing(s, &mut needs);
            }
            (EntryKind::Dir, found) => {
                d.clear_first.push(Action::Clear {
                    path: s.path.clone(),
                    found,
                });
                d.create(s, &mut needs);
            }
            (EntryKind::File, EntryKind::Symlink) | (EntryKind::Symlink, EntryKind::File) => {
                // Renaming over a file or symlink replaces it atomically: no clear needed.
                d.create_replacing(s, &mut needs);
            }
        }
    }

    // Extraneous target entries, and the files among them that may be renamed into place.
    let mut extraneous: Vec<&FileEntry> = Vec::new();
    for t in targets.iter().copied().filter(|t| t.is_present()) {
        if is_protected(&t.path)
            || cleared_dirs
                .iter()
                .any(|c| t.path.is_within(c) && t.path != *c)
        {
            if t.kind == EntryKind::File && !is_protected(&t.path) {
                d.rename_pool.push(t);
            }
            continue;
        }
        if source.get(&t.path).is_some_and(FileEntry::is_present) {
            continue;
        }
        if t.kind == EntryKind::File {
            d.rename_pool.push(t);
        }
        extraneous.push(t);
    }

    // Rename candidates need content on both sides, but only where sizes could match.
    let wanted_sizes: HashSet<u64> = d.new_files.iter().map(|e| e.size).collect();
    for t in &d.rename_pool {
        if t.content.is_none() && wanted_sizes.contains(&t.size) {
            needs.target.push(t.path.clone());
        }
    }
    // A large new file may be a copy of one the target keeps: hash the target's files of
    // the same size so the chunk index can serve its chunks locally.
    let copy_sizes: HashSet<u64> = d
        .new_files
        .iter()
        .map(|e| e.size)
        .filter(|&n| n >= COPY_SOURCE_MIN)
        .collect();
    for size in copy_sizes {
        needs
            .target
            .extend(target_index.unhashed_of_size(size).cloned());
    }
    if !needs.is_empty() {
        needs.source.sort();
        needs.source.dedup();
        needs.target.sort();
        needs.target.dedup();
        return DiffOutcome::NeedContent(needs);
    }

    // Pair new files with doomed target files of equal content.
    let mut pool: HashMap<ContentId, Vec<&FileEntry>> = HashMap::new();
    for t in &d.rename_pool {
        if let Some(c) = &t.content {
            pool.entry(c.id).or_default().push(t);
        }
    }
    let mut renamed_away: BTreeSet<RelPath> = BTreeSet::new();
    let mut renames = Vec::new();
    let mut writes = Vec::new();
    for (entry, replaces) in std::mem::take(&mut d.new_file_actions) {
        // A file that replaces something cannot be renamed into place (renames never
        // replace), so it must not take a candidate another new file could use.
        let from = entry
            .content
            .as_ref()
            .filter(|_| !replaces)
            .and_then(|c| pool.get_mut(&c.id))
            .and_then(Vec::pop);
        match from {
            Some(from) => {
                renamed_away.insert(from.path.clone());
                d.touch_parent(&from.path);
                renames.push(Action::Rename {
                    from: from.path.clone(),
                    entry,
                    seen: Seen::of(from),
                });
            }
            _ => writes.push(Action::WriteFile {
                entry,
                base: None,
                replaces,
            }),
        }
    }

    let mut removes: Vec<Action> = Vec::new();
    for t in extraneous.iter().rev() {
        if renamed_away.contains(&t.path) {
            continue;
        }
        d.touch_parent(&t.path);
        removes.push(Action::Remove {
            path: t.path.clone(),
            kind: t.kind,
        });
    }

    let mut content: Vec<Action> = writes;
    content.append(&mut d.symlinks);
    content.append(&mut d.content_phase);
    content.sort_by(|a, b| a.path().cmp(b.path()));

    let mut actions = d.clear_first;
    actions.append(&mut d.make_dirs);
    actions.append(&mut renames);
    actions.append(&mut d.clear_dirs);
    actions.append(&mut content);
    actions.append(&mut removes);
    for (path, differs) in d.dir_meta.iter().rev() {
        if let Some(s) = source
            .get(path)
            .filter(|s| s.kind == EntryKind::Dir && s.is_present())
        {
            actions.push(Action::SetDirMeta {
                path: path.clone(),
                mode: s.mode,
                mtime: s.mtime,
                differs: *differs,
            });
        }
    }
    DiffOutcome::Ready(Plan { actions })
}

/// The entries of `index` at, below and above each of `paths` (all of them for `None`),
/// in path order.
fn in_scope<'a>(index: &'a Index, paths: Option<&BTreeSet<RelPath>>) -> Vec<&'a FileEntry> {
    let Some(paths) = paths else {
        return index.iter().collect();
    };
    let mut found: std::collections::BTreeMap<&'a RelPath, &'a FileEntry> = Default::default();
    for p in paths {
        // Looked up in `found` first: paths in one directory share their ancestors, and
        // the small map of what is in scope is cheaper to search than the whole index.
        let mut up = p.parent();
        while let Some(a) = up {
            if found.contains_key(&a) {
                // Seen already, with its own ancestors.
                break;
            }
            if let Some(e) = index.get(&a) {
                found.insert(&e.path, e);
            }
            up = a.parent();
        }
        for e in index.subtree(p) {
            found.insert(&e.path, e);
        }
    }
    found.into_values().collect()
}

/// The plan being assembled, phase by phase.
#[derive(Default)]
struct Draft<'a> {
    clear_first: Vec<Action>,
    make_dirs: Vec<Action>,
    clear_dirs: Vec<Action>,
    symlinks: Vec<Action>,
    content_phase: Vec<Action>,
    /// New files (nothing of the same kind at their path), written or renamed into place.
    new_files: Vec<&'a FileEntry>,
    new_file_actions: Vec<(FileEntry, bool)>,
    rename_pool: Vec<&'a FileEntry>,
    /// Directories to revisit at the end: `true` when their own metadata differs.
    dir_meta: std::collections::BTreeMap<RelPath, bool>,
}

impl<'a> Draft<'a> {
    fn touch_parent(&mut self, path: &RelPath) {
        if let Some(p) = path.parent() {
            self.dir_meta.entry(p).or_insert(false);
        }
    }

    /// A source entry with nothing (or nothing that stays) at its path in the target.
    fn create(&mut self, s: &'a FileEntry, needs: &mut ContentNeeds) {
        self.add_new(s, false, needs);
    }

    fn create_replacing(&mut self, s: &'a FileEntry, needs: &mut ContentNeeds) {
        self.add_new(s, true, needs);
    }

    fn add_new(&mut self, s: &'a FileEntry, replaces: bool, needs: &mut ContentNeeds) {
        self.touch_parent(&s.path);
        match s.kind {
            EntryKind::Dir => {
                self.make_dirs.push(Action::MakeDir {
                    path: s.path.clone(),
                });
                self.dir_meta.insert(s.path.clone(), false);
            }
            EntryKind::Symlink => self.symlinks.push(Action::Symlink {
                entry: s.clone(),
                replaces,
            }),
            EntryKind::File => {
                if s.content.is_none() {
                    needs.source.push(s.path.clone());
                }
                self.new_files.push(s);
                self.new_file_actions.push((s.clone(), replaces));
            }
        }
    }

    fn compare_files(
        &mut self,
        s: &FileEntry,
        t: &FileEntry,
        opts: DiffOptions,
        needs: &mut ContentNeeds,
    ) {
        // The quick check stands in for content only while content is unknown: chunk lists
        // known on both sides and different (a file renamed over another of the same size
        // and mtime, such as two extracted from one archive) mean different bytes.
        let known_different =
            matches!((&s.content, &t.content), (Some(sc), Some(tc)) if sc.id != tc.id);
        // On a target that cuts times, a source file rewritten within the step of the copy's
        // time looks unchanged by size and time. Where the source's content is known (a live
        // change, a kept index) and the target's is not, it is read rather than trusted: the
        // quick check's blind spot stays that of a one-shot run, which knows neither.
        let cut_only = s.mtime != t.mtime && s.content.is_some() && t.content.is_none();
        if !opts.checksum && !known_different && !cut_only && s.quick_equal(t, opts.mtime_step) {
            if s.mode != t.mode {
                self.content_phase.push(Action::SetMeta {
                    entry: s.clone(),
                    seen: Some(Seen::of(t)),
                });
            }
            return;
        }
        // Content decides. Both sides are hashed: the target's chunks are reused for the new
        // version, and equal content turns into a metadata update instead of a rewrite.
        let (Some(sc), Some(tc)) = (&s.content, &t.content) else {
            if s.content.is_none() {
                needs.source.push(s.path.clone());
            }
            if t.content.is_none() {
                needs.target.push(t.path.clone());
            }
            return;
        };
        if sc.id == tc.id {
            if s.mode != t.mode || !s.mtime.kept_as(t.mtime, opts.mtime_step) {
                self.content_phase.push(Action::SetMeta {
                    entry: s.clone(),
                    seen: Some(Seen::of(t)),
                });
            }
        } else {
            self.touch_parent(&s.path);
            self.content_phase.push(Action::WriteFile {
                entry: s.clone(),
                base: Some(tc.clone()),
                replaces: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    //! Pure tests: indexes are built in memory, nothing touches the disk.

    use super::*;
    use crate::chunk::{chunk_reader, ChunkParams, Content};
    use crate::entry::{MtimeNs, Seq, VersionVector};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn content(bytes: &[u8]) -> Content {
        chunk_reader(bytes, &ChunkParams::default()).unwrap()
    }

    fn entry(path: &str, kind: EntryKind, mode: u32, mtime: i64) -> FileEntry {
        FileEntry {
            path: p(path),
            kind,
            state: EntryState::Present,
            size: 0,
            mtime: MtimeNs(mtime),
            mode,
            content: None,
            symlink_target: None,
            seq: Seq::default(),
            version: VersionVector::default(),
        }
    }

    /// A hashed file holding `bytes`.
    fn file(path: &str, bytes: &[u8], mtime: i64) -> FileEntry {
        FileEntry {
            size: bytes.len() as u64,
            content: Some(content(bytes)),
            ..entry(path, EntryKind::File, 0o644, mtime)
        }
    }

    /// The same file as a scan reports it, before anyone hashed it.
    fn unhashed(e: FileEntry) -> FileEntry {
        FileEntry { content: None, ..e }
    }

    fn with_mode(e: FileEntry, mode: u32) -> FileEntry {
        FileEntry { mode, ..e }
    }

    fn dir(path: &str, mtime: i64) -> FileEntry {
        entry(path, EntryKind::Dir, 0o755, mtime)
    }

    fn symlink(path: &str, to: &str, mtime: i64) -> FileEntry {
        FileEntry {
            symlink_target: Some(to.to_owned()),
            ..entry(path, EntryKind::Symlink, 0o777, mtime)
        }
    }

    fn unreadable(e: FileEntry) -> FileEntry {
        FileEntry {
            state: EntryState::Unreadable,
            ..e
        }
    }

    fn index(entries: impl IntoIterator<Item = FileEntry>) -> Index {
        let mut i = Index::new(ChunkParams::default());
        for e in entries {
            i.insert(e, None);
        }
        i
    }

    fn ready(source: &Index, target: &Index, opts: DiffOptions) -> Plan {
        match diff(source, target, opts) {
            DiffOutcome::Ready(plan) => plan,
            DiffOutcome::NeedContent(n) => panic!("expected a plan, got NeedContent({n:?})"),
        }
    }

    fn needs(source: &Index, target: &Index, opts: DiffOptions) -> ContentNeeds {
        match diff(source, target, opts) {
            DiffOutcome::NeedContent(n) => n,
            DiffOutcome::Ready(plan) => panic!("expected NeedContent, got {plan:#?}"),
        }
    }

    fn paths(v: &[&str]) -> Vec<RelPath> {
        v.iter().map(|s| p(s)).collect()
    }

    fn name(a: &Action) -> &'static str {
        match a {
            Action::Clear { .. } => "Clear",
            Action::MakeDir { .. } => "MakeDir",
            Action::Rename { .. } => "Rename",
            Action::WriteFile { .. } => "WriteFile",
            Action::Symlink { .. } => "Symlink",
            Action::SetMeta { .. } => "SetMeta",
            Action::Remove { .. } => "Remove",
            Action::SetDirMeta { .. } => "SetDirMeta",
        }
    }

    /// Where the `kind` action on `path` sits in the plan; panics when there is none.
    fn at(plan: &Plan, kind: &str, path: &str) -> usize {
        plan.actions
            .iter()
            .position(|a| name(a) == kind && a.path().as_str() == path)
            .unwrap_or_else(|| panic!("no {kind} {path} in {plan:#?}"))
    }

    fn has(plan: &Plan, kind: &str, path: &str) -> bool {
        plan.actions
            .iter()
            .any(|a| name(a) == kind && a.path().as_str() == path)
    }

    fn count(plan: &Plan, kind: &str) -> usize {
        plan.actions.iter().filter(|a| name(a) == kind).count()
    }

    #[test]
    fn empty_target_makes_dirs_top_down_then_writes_files_once_hashed() {
        let hashed = [
            dir("a", 10),
            dir("a/b", 11),
            file("a/b/f", b"deep file", 12),
            file("a/g", b"shallow file", 13),
            symlink("a/l", "b/f", 14),
            file("h", b"top file", 15),
        ];
        let mut source = index(hashed.iter().cloned().map(|e| match e.kind {
            EntryKind::File => unhashed(e),
            _ => e,
        }));
        let target = index([]);

        let n = needs(&source, &target, DiffOptions::default());
        assert_eq!(n.source, paths(&["a/b/f", "a/g", "h"]));
        assert!(n.target.is_empty());

        for e in hashed.iter().filter(|e| e.kind == EntryKind::File) {
            source.get_mut(&e.path).unwrap().content = e.content.clone();
        }
        let plan = ready(&source, &target, DiffOptions::default());
        assert!(at(&plan, "MakeDir", "a") < at(&plan, "MakeDir", "a/b"));
        let last_dir = at(&plan, "MakeDir", "a/b");
        for f in ["a/b/f", "a/g", "h"] {
            assert!(at(&plan, "WriteFile", f) > last_dir);
        }
        assert!(at(&plan, "Symlink", "a/l") > last_dir);
        for a in &plan.actions {
            if let Action::WriteFile {
                entry,
                base,
                replaces,
            } = a
            {
                assert_eq!(base, &None, "{}", entry.path);
                assert!(!replaces, "{}", entry.path);
                assert!(entry.content.is_some());
            }
        }
        assert_eq!(
            count(&plan, "Clear") + count(&plan, "Remove") + count(&plan, "Rename"),
            0
        );
        // New directories get their metadata last, children before parents.
        assert!(at(&plan, "SetDirMeta", "a/b") < at(&plan, "SetDirMeta", "a"));
        assert!(at(&plan, "SetDirMeta", "a/b") > at(&plan, "WriteFile", "h"));
        assert!(!plan.is_noop());
    }

    #[test]
    fn identical_trees_need_nothing() {
        let entries = [
            dir("d", 1),
            with_mode(file("d/f", b"x", 2), 0o600),
            symlink("d/l", "f", 3),
            file("g", b"yy", 4),
        ];
        // Unhashed on both sides: the quick check alone proves them equal.
        let source = index(entries.iter().cloned().map(unhashed));
        let target = index(entries.iter().cloned().map(unhashed));
        let plan = ready(&source, &target, DiffOptions::default());
        assert!(plan.is_noop(), "{plan:#?}");
        assert!(plan.actions.is_empty(), "{plan:#?}");
    }

    #[test]
    fn a_time_the_target_cut_to_its_step_is_equal_and_any_other_is_not() {
        const SEC: i64 = 1_000_000_000;
        let step = DiffOptions {
            mtime_step: SEC as u64,
            ..DiffOptions::default()
        };
        // The target cut the source's 7.9 s to 7 s: no change with the step, one without.
        let s = file("f", b"same", 7 * SEC + 900_000_000);
        let cut = file("f", b"same", 7 * SEC);
        let (source, target) = (index([unhashed(s.clone())]), index([unhashed(cut.clone())]));
        assert!(ready(&source, &target, step).actions.is_empty());
        // With the source's content known (a live change, a kept index) and the target's
        // not, a cut time proves nothing: the target file is read and compared.
        let hashed = index([s.clone()]);
        assert_eq!(needs(&hashed, &target, step).target, paths(&["f"]));
        let other_bytes = file("f", b"diff", 7 * SEC);
        let plan = ready(&hashed, &index([other_bytes]), step);
        assert!(has(&plan, "WriteFile", "f"), "{plan:#?}");
        assert!(ready(&hashed, &index([cut]), step).actions.is_empty());
        assert_eq!(
            needs(&source, &target, DiffOptions::default()).source,
            paths(&["f"])
        );
        // A second or more apart is a change even with the step.
        let older = file("f", b"same", 6 * SEC + 900_000_000);
        let target = index([unhashed(older)]);
        assert_eq!(needs(&source, &target, step).source, paths(&["f"]));
        // Directories and symlinks compare their mtimes the same way.
        let (d, dcut) = (dir("d", 5 * SEC + 1), dir("d", 5 * SEC));
        assert!(ready(&index([d.clone()]), &index([dcut.clone()]), step)
            .actions
            .is_empty());
        assert!(!ready(&index([d]), &index([dcut]), DiffOptions::default())
            .actions
            .is_empty());
        let (l, lcut) = (symlink("l", "t", 3 * SEC + 5), symlink("l", "t", 3 * SEC));
        assert!(ready(&index([l]), &index([lcut]), step).actions.is_empty());
    }

    #[test]
    fn equal_size_and_mtime_is_unchanged_unless_checksum() {
        let s = file("f", b"new!", 7);
        let t = file("f", b"old!", 7);
        let source = index([unhashed(s.clone())]);
        let target = index([unhashed(t.clone())]);
        assert!(ready(&source, &target, DiffOptions::default())
            .actions
            .is_empty());

        let checksum = DiffOptions {
            checksum: true,
            ..DiffOptions::default()
        };
        let n = needs(&source, &target, checksum);
        assert_eq!(n.source, paths(&["f"]));
        assert_eq!(n.target, paths(&["f"]));

        let plan = ready(&index([s.clone()]), &index([t.clone()]), checksum);
        assert!(has(&plan, "WriteFile", "f"), "{plan:#?}");
        // With checksum and equal bytes there is nothing to do.
        let same = file("f", b"new!", 7);
        assert!(ready(&index([s]), &index([same]), checksum)
            .actions
            .is_empty());
    }

    #[test]
    fn known_different_content_is_written_whatever_the_quick_check_says() {
        // Both chunk lists known (a rename over a same-size, same-mtime file in a live run,
        // or lists kept by --state): the lists decide, not size and mtime.
        let s = file("f", b"new!", 7);
        let t = file("f", b"old!", 7);
        let plan = ready(&index([s.clone()]), &index([t]), DiffOptions::default());
        assert!(has(&plan, "WriteFile", "f"), "{plan:#?}");
        // Known and equal, or unknown on one side: the quick check stands.
        let same = file("f", b"new!", 7);
        assert!(
            ready(&index([s.clone()]), &index([same]), DiffOptions::default())
                .actions
                .is_empty()
        );
        let unknown = unhashed(file("f", b"old!", 7));
        assert!(
            ready(&index([s]), &index([unknown]), DiffOptions::default())
                .actions
                .is_empty()
        );
    }

    #[test]
    fn a_mode_change_alone_is_a_metadata_update() {
        let s = with_mode(unhashed(file("f", b"abc", 7)), 0o600);
        let t = unhashed(file("f", b"abc", 7));
        let seen = Some(Seen::of(&t));
        let plan = ready(&index([s]), &index([t]), DiffOptions::default());
        assert_eq!(plan.actions.len(), 1, "{plan:#?}");
        assert!(
            matches!(&plan.actions[0], Action::SetMeta { entry, seen: s } if entry.mode == 0o600 && *s == seen)
        );
    }

    #[test]
    fn same_content_with_another_mtime_only_sets_metadata() {
        let s = file("d/f", b"same bytes", 20);
        let t = file("d/f", b"same bytes", 10);
        let mut source = index([dir("d", 1), unhashed(s.clone())]);
        let mut target = index([dir("d", 1), unhashed(t.clone())]);
        let n = needs(&source, &target, DiffOptions::default());
        assert_eq!((n.source, n.target), (paths(&["d/f"]), paths(&["d/f"])));

        source.get_mut(&p("d/f")).unwrap().content = s.content.clone();
        target.get_mut(&p("d/f")).unwrap().content = t.content.clone();
        let plan = ready(&source, &target, DiffOptions::default());
        assert_eq!(count(&plan, "WriteFile"), 0, "{plan:#?}");
        assert_eq!(plan.actions.len(), 1, "{plan:#?}");
        // Checked against what the target index knows of the target file, not the source.
        let seen = Some(Seen::of(&t));
        assert!(
            matches!(&plan.actions[0], Action::SetMeta { entry, seen: s } if entry.mtime == MtimeNs(20) && *s == seen)
        );
    }

    #[test]
    fn changed_content_is_written_over_the_target_version() {
        let t = file("d/f", b"old content", 10);
        let source = index([dir("d", 1), file("d/f", b"new content!", 20)]);
        let target = index([dir("d", 1), t.clone()]);
        let plan = ready(&source, &target, DiffOptions::default());
        match &plan.actions[at(&plan, "WriteFile", "d/f")] {
            Action::WriteFile {
                entry,
                base,
                replaces,
            } => {
                assert_eq!(base, &t.content);
                assert!(replaces);
                assert_eq!(entry.mtime, MtimeNs(20));
            }
            other => unreachable!("{other:?}"),
        }
        // The rename over the old file changes the directory's mtime, which is then restored.
        assert!(at(&plan, "SetDirMeta", "d") > at(&plan, "WriteFile", "d/f"));
        assert!(!plan.is_noop());
    }

    #[test]
    fn extraneous_entries_are_removed_bottom_up() {
        let source = index([dir("keep", 1)]);
        let target = index([
            dir("keep", 1),
            file("keep/junk", b"j", 2),
            dir("x", 3),
            dir("x/y", 4),
            file("x/y/f", b"f", 5),
            symlink("x/y/l", "f", 5),
            file("x/g", b"g", 6),
            file("z", b"z", 7),
        ]);
        // No new source files: nothing can be a rename, so nothing needs hashing.
        let plan = ready(&source, &target, DiffOptions::default());
        let removed: Vec<&str> = plan
            .actions
            .iter()
            .filter(|a| name(a) == "Remove")
            .map(|a| a.path().as_str())
            .collect();
        assert_eq!(removed.len(), 7);
        for (child, parent) in [
            ("x/y/f", "x/y"),
            ("x/y/l", "x/y"),
            ("x/y", "x"),
            ("x/g", "x"),
        ] {
            assert!(
                at(&plan, "Remove", child) < at(&plan, "Remove", parent),
                "{removed:?}"
            );
        }
        assert!(matches!(
            &plan.actions[at(&plan, "Remove", "x/y")],
            Action::Remove {
                kind: EntryKind::Dir,
                ..
            }
        ));
        assert!(matches!(
            &plan.actions[at(&plan, "Remove", "x/y/l")],
            Action::Remove {
                kind: EntryKind::Symlink,
                ..
            }
        ));
        assert!(at(&plan, "SetDirMeta", "keep") > at(&plan, "Remove", "keep/junk"));
        assert!(!has(&plan, "SetDirMeta", "x"));
    }

    #[test]
    fn only_extraneous_files_of_a_wanted_size_are_hashed_for_renames() {
        let source = index([unhashed(file("new", b"12345", 1))]);
        let target = index([
            unhashed(file("same-size", b"abcde", 2)),
            unhashed(file("other-size", b"abc", 3)),
        ]);
        let n = needs(&source, &target, DiffOptions::default());
        assert_eq!(n.source, paths(&["new"]));
        assert_eq!(n.target, paths(&["same-size"]));
    }

    #[test]
    fn a_new_file_matching_an_extraneous_one_is_a_rename() {
        let mut source = index([dir("d", 1), unhashed(file("d/new", b"moved bytes", 5))]);
        let mut target = index([
            unhashed(file("old", b"moved bytes", 3)),
            unhashed(file("other", b"zz", 3)),
        ]);
        let n = needs(&source, &target, DiffOptions::default());
        assert_eq!((n.source, n.target), (paths(&["d/new"]), paths(&["old"])));

        source.get_mut(&p("d/new")).unwrap().content = Some(content(b"moved bytes"));
        target.get_mut(&p("old")).unwrap().content = Some(content(b"moved bytes"));
        let plan = ready(&source, &target, DiffOptions::default());
        let r = at(&plan, "Rename", "d/new");
        assert!(
            matches!(&plan.actions[r], Action::Rename { from, entry, .. } if *from == p("old") && entry.mtime == MtimeNs(5))
        );
        assert!(at(&plan, "MakeDir", "d") < r);
        assert!(!has(&plan, "WriteFile", "d/new"));
        assert!(!has(&plan, "Remove", "old"));
        assert!(has(&plan, "Remove", "other"));
        assert_eq!(count(&plan, "WriteFile"), 0, "{plan:#?}");
    }

    #[test]
    fn one_extraneous_file_is_renamed_once() {
        let source = index([file("a", b"dup", 5), file("b", b"dup", 5)]);
        let target = index([file("old", b"dup", 3)]);
        let plan = ready(&source, &target, DiffOptions::default());
        assert_eq!(count(&plan, "Rename"), 1, "{plan:#?}");
        assert_eq!(count(&plan, "WriteFile"), 1, "{plan:#?}");
        assert!(!has(&plan, "Remove", "old"));
    }

    #[test]
    fn a_non_dir_in_the_way_of_a_dir_is_cleared_before_mkdir() {
        let source = index([dir("b", 5), file("b/f", b"in b", 6), dir("c", 5)]);
        let target = index([file("b", b"was a file", 1), symlink("c", "/elsewhere", 1)]);
        let plan = ready(&source, &target, DiffOptions::default());
        assert!(matches!(
            &plan.actions[at(&plan, "Clear", "b")],
            Action::Clear {
                found: EntryKind::File,
                ..
            }
        ));
        assert!(matches!(
            &plan.actions[at(&plan, "Clear", "c")],
            Action::Clear {
                found: EntryKind::Symlink,
                ..
            }
        ));
        assert!(at(&plan, "Clear", "b") < at(&plan, "MakeDir", "b"));
        assert!(at(&plan, "Clear", "c") < at(&plan, "MakeDir", "c"));
        assert!(at(&plan, "MakeDir", "b") < at(&plan, "WriteFile", "b/f"));
        assert!(!has(&plan, "Remove", "b") && !has(&plan, "Remove", "c"));
    }

    #[test]
    fn a_dir_in_the_way_is_cleared_after_renames_out_of_it() {
        let source = index([
            file("a", b"a is a file now", 5),
            symlink("d", "a", 5),
            file("n", b"kept bytes", 5),
        ]);
        let target = index([
            dir("a", 1),
            file("a/keep", b"kept bytes", 1),
            file("a/junk", b"junk", 1),
            dir("d", 1),
            dir("d/sub", 1),
        ]);
        let plan = ready(&source, &target, DiffOptions::default());
        let rename = at(&plan, "Rename", "n");
        assert!(
            matches!(&plan.actions[rename], Action::Rename { from, .. } if *from == p("a/keep"))
        );
        assert!(matches!(
            &plan.actions[at(&plan, "Clear", "a")],
            Action::Clear {
                found: EntryKind::Dir,
                ..
            }
        ));
        assert!(rename < at(&plan, "Clear", "a"));
        assert!(at(&plan, "Clear", "a") < at(&plan, "WriteFile", "a"));
        assert!(at(&plan, "Clear", "d") < at(&plan, "Symlink", "d"));
        assert!(matches!(
            &plan.actions[at(&plan, "WriteFile", "a")],
            Action::WriteFile {
                replaces: true,
                base: None,
                ..
            }
        ));
        assert!(matches!(
            &plan.actions[at(&plan, "Symlink", "d")],
            Action::Symlink { replaces: true, .. }
        ));
        // The cleared directories' contents go with them, not one by one.
        assert_eq!(count(&plan, "Remove"), 0, "{plan:#?}");
    }

    #[test]
    fn a_file_replaces_a_symlink_and_back_without_a_clear() {
        let source = index([file("f", b"file", 5), symlink("l", "f", 5)]);
        let target = index([symlink("f", "/etc/passwd", 1), file("l", b"a file", 1)]);
        let plan = ready(&source, &target, DiffOptions::default());
        assert_eq!(count(&plan, "Clear"), 0, "{plan:#?}");
        assert!(matches!(
            &plan.actions[at(&plan, "WriteFile", "f")],
            Action::WriteFile {
                replaces: true,
                base: None,
                ..
            }
        ));
        assert!(matches!(
            &plan.actions[at(&plan, "Symlink", "l")],
            Action::Symlink { replaces: true, .. }
        ));
    }

    #[test]
    fn symlinks_are_compared_by_target_then_mtime() {
        let source = index([
            symlink("a", "x", 5),
            symlink("b", "y", 6),
            symlink("c", "z", 7),
        ]);
        let target = index([
            symlink("a", "x", 5),
            symlink("b", "y", 1),
            symlink("c", "other", 7),
        ]);
        let plan = ready(&source, &target, DiffOptions::default());
        assert!(!plan.actions.iter().any(|a| a.path() == &p("a")));
        assert!(has(&plan, "SetMeta", "b"));
        assert!(matches!(
            &plan.actions[at(&plan, "Symlink", "c")],
            Action::Symlink { replaces: true, .. }
        ));
    }

    #[test]
    fn unreadable_source_entries_protect_the_target() {
        let secret = b"the same bytes as a new file";
        let source = index([
            unreadable(dir("u", 9)),
            unreadable(file("v", b"v", 9)),
            unreadable(dir("w", 9)),
            file("n", secret, 9),
            dir("d", 1),
            unreadable(dir("d/u", 9)),
        ]);
        let target = index([
            with_mode(dir("u", 1), 0o700),
            file("u/f", secret, 1),
            dir("u/sub", 1),
            file("u/sub/g", b"g", 1),
            symlink("u/l", "f", 1),
            file("v", b"different", 1),
            file("w", b"a file where the source has an unreadable dir", 1),
            dir("d", 1),
            dir("d/u", 2),
            file("d/u/f", b"f", 1),
        ]);
        let plan = ready(&source, &target, DiffOptions::default());
        let protected = paths(&["u", "v", "w", "d/u"]);
        for a in &plan.actions {
            assert!(
                !protected.iter().any(|q| a.path().is_within(q)),
                "{a:?} touches a protected path"
            );
            if let Action::Rename { from, .. } = a {
                assert!(
                    !protected.iter().any(|q| from.is_within(q)),
                    "{a:?} takes a protected file"
                );
            }
        }
        assert!(has(&plan, "WriteFile", "n"), "{plan:#?}");
    }

    #[test]
    fn dir_metadata_is_set_bottom_up_after_removes() {
        let source = index([
            dir("d", 5),
            with_mode(dir("d/e", 7), 0o700),
            dir("same", 3),
            dir("same/child", 3),
        ]);
        let target = index([
            dir("d", 9),
            dir("d/e", 7),
            file("d/e/x", b"extra", 1),
            dir("same", 3),
            dir("same/child", 3),
        ]);
        let plan = ready(&source, &target, DiffOptions::default());
        let remove = at(&plan, "Remove", "d/e/x");
        let (e, d) = (at(&plan, "SetDirMeta", "d/e"), at(&plan, "SetDirMeta", "d"));
        assert!(remove < e && e < d, "{plan:#?}");
        assert_eq!(d, plan.actions.len() - 1);
        assert!(matches!(
            &plan.actions[e],
            Action::SetDirMeta {
                mode: 0o700,
                mtime: MtimeNs(7),
                differs: true,
                ..
            }
        ));
        assert!(matches!(
            &plan.actions[d],
            Action::SetDirMeta {
                mode: 0o755,
                mtime: MtimeNs(5),
                differs: true,
                ..
            }
        ));
        // Untouched, identical directories are not revisited.
        assert!(!has(&plan, "SetDirMeta", "same") && !has(&plan, "SetDirMeta", "same/child"));
    }

    #[test]
    fn a_dir_revisited_only_for_its_children_is_not_a_change() {
        let source = index([dir("d", 5)]);
        let target = index([dir("d", 5), file("d/x", b"x", 1)]);
        let plan = ready(&source, &target, DiffOptions::default());
        assert!(matches!(
            &plan.actions[at(&plan, "SetDirMeta", "d")],
            Action::SetDirMeta { differs: false, .. }
        ));
        let changes: Vec<_> = plan.itemize().collect();
        assert_eq!(changes, vec![(crate::plan::ChangeKind::Removed, &p("d/x"))]);
    }

    #[test]
    fn tombstones_in_the_source_remove_target_entries() {
        let mut gone = file("f", b"gone", 1);
        let target = index([gone.clone()]);
        gone.state = EntryState::Deleted;
        let plan = ready(&index([gone]), &target, DiffOptions::default());
        assert!(has(&plan, "Remove", "f"), "{plan:#?}");
    }

    #[test]
    fn a_file_replacing_a_dir_does_not_use_up_a_rename_candidate() {
        // "a" replaces a directory, so it cannot be renamed into place (the directory is
        // still there when renames run); "b" can, and must get the one matching file.
        let source = index([file("a", b"same", 5), file("b", b"same", 5)]);
        let target = index([dir("a", 1), file("old", b"same", 1)]);
        let plan = ready(&source, &target, DiffOptions::default());
        assert!(
            matches!(&plan.actions[at(&plan, "Rename", "b")], Action::Rename { from, .. } if *from == p("old")),
            "{plan:#?}"
        );
        assert!(has(&plan, "WriteFile", "a"));
        assert!(!has(&plan, "Remove", "old"));
    }

    /// The plan for `source` over `target` leaving `pending` out, which must ask for no
    /// content.
    fn plan_leaving_out(source: &Index, target: Index, pending: &HashSet<RelPath>) -> Plan {
        let target = TargetIndex::new(target);
        match diff_within(source, &target, None, &[pending], DiffOptions::default()) {
            DiffOutcome::Ready(plan) => plan,
            DiffOutcome::NeedContent(n) => panic!("pending content was asked for: {n:?}"),
        }
    }

    #[test]
    fn pending_entries_are_left_out_and_what_the_target_holds_there_is_kept() {
        let source = index([file("a", b"new", 1), unhashed(file("b", b"later", 2))]);
        let target = index([file("b", b"stale", 1)]);
        let pending: HashSet<RelPath> = [p("b")].into();
        let plan = plan_leaving_out(&source, target, &pending);
        assert!(has(&plan, "WriteFile", "a"));
        assert!(
            !plan.actions.iter().any(|a| a.path() == &p("b")),
            "{plan:#?}"
        );
        assert!(plan.is_additive());
        // An extraneous entry makes a plan that removes, which must wait for the rest.
        let target = index([file("b", b"stale", 1), file("x", b"extra", 1)]);
        let plan = plan_leaving_out(&source, target, &pending);
        assert!(has(&plan, "Remove", "x"));
        assert!(!plan.is_additive());
    }

    /// A small random tree for the scoped-diff property: names from {a, b, c}, three deep.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        /// A random entry (never a directory) at `path`.
        fn leaf(&mut self, path: &str) -> FileEntry {
            let t = self.next(40) as i64;
            match self.next(6) {
                0 => symlink(path, if self.next(2) == 0 { "x" } else { "y" }, t),
                1 => unreadable(file(path, b"?", t)),
                2 => with_mode(file(path, b"same", 7), 0o600),
                _ => file(path, format!("{}", self.next(3)).as_bytes(), t),
            }
        }

        fn fill(&mut self, index: &mut Index, parent: Option<&str>, depth: u32) {
            for name in ["a", "b", "c"] {
                let path = parent.map_or(name.to_owned(), |p| format!("{p}/{name}"));
                match self.next(5) {
                    0 => {}
                    1 | 2 if depth < 3 => {
                        let d = dir(&path, self.next(3) as i64);
                        // An unreadable directory: the source lists nothing below it (see
                        // `unlisted`), the target still holds what it had.
                        let d = if self.next(4) == 0 { unreadable(d) } else { d };
                        index.insert(d, None);
                        self.fill(index, Some(&path), depth + 1);
                    }
                    _ => index.insert(self.leaf(&path), None),
                }
            }
        }
    }

    /// Changes `source` at a random path (removing it, or putting a new entry or a new
    /// directory there, with directories made above it); returns every path it changed.
    fn mutate(g: &mut Gen, source: &mut Index) -> Vec<RelPath> {
        let depth = 1 + g.next(3);
        let names: Vec<&str> = (0..depth)
            .map(|_| ["a", "b", "c"][g.next(3) as usize])
            .collect();
        let path = p(&names.join("/"));
        let mut changed = vec![path.clone()];
        source.remove_tree(&path);
        match g.next(3) {
            0 => return changed,
            1 => source.insert(dir(path.as_str(), g.next(3) as i64), None),
            _ => source.insert(g.leaf(path.as_str()), None),
        }
        let mut up = path.parent();
        while let Some(a) = up {
            if source.get(&a).is_none_or(|e| e.kind != EntryKind::Dir) {
                source.remove(&a);
                source.insert(dir(a.as_str(), 5), None);
                changed.push(a.clone());
            }
            up = a.parent();
        }
        changed
    }

    proptest::proptest! {
        /// When the target mirrors the source but for some paths, diffing only those paths
        /// plans exactly what diffing everything does.
        #[test]
        fn a_diff_within_the_changed_paths_plans_what_a_full_diff_does(seed in 1u64.., edits in 1usize..5) {
            let mut g = Gen(seed);
            let mut target = Index::new(ChunkParams::default());
            g.fill(&mut target, None, 1);
            let mut source = target.clone();
            let unlisted: Vec<RelPath> = source
                .iter()
                .filter(|e| e.kind == EntryKind::Dir && e.state == EntryState::Unreadable)
                .flat_map(|e| source.subtree(&e.path).skip(1).map(|c| c.path.clone()))
                .collect();
            for c in &unlisted {
                source.remove(c);
            }
            let mut dirty = BTreeSet::new();
            for _ in 0..edits {
                dirty.extend(mutate(&mut g, &mut source));
            }
            let opts = DiffOptions::default();
            proptest::prop_assert_eq!(
                diff_within(&source, &TargetIndex::new(target.clone()), Some(&dirty), &[], opts),
                diff(&source, &target, opts)
            );
        }
    }
}
