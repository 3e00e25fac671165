//! `diff(source, target) -> Plan`: the pure decision of what must change, tested without disk.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::chunk::ContentId;
use crate::entry::{EntryKind, EntryState, FileEntry};
use crate::index::Index;
use crate::plan::{Action, Plan};
use crate::relpath::RelPath;

/// How "same file" is decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Compare content even when size and mtime agree (rsync's `--checksum`).
    pub checksum: bool,
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
pub fn diff(source: &Index, target: &Index, opts: DiffOptions) -> DiffOutcome {
    let mut needs = ContentNeeds::default();
    let mut d = Draft::default();
    let protected: Vec<&RelPath> = source
        .iter()
        .filter(|e| e.state == EntryState::Unreadable)
        .map(|e| &e.path)
        .collect();
    let is_protected = |p: &RelPath| protected.iter().any(|q| p.is_within(q));

    // Directories whose whole subtree goes away with a Clear: no per-entry removes inside.
    let mut cleared_dirs: Vec<RelPath> = Vec::new();
    for s in source.iter().filter(|e| e.is_present()) {
        let Some(t) = target.get(&s.path).filter(|t| t.is_present()) else {
            d.create(s, &mut needs);
            continue;
        };
        match (s.kind, t.kind) {
            (EntryKind::Dir, EntryKind::Dir) => {
                if s.mode != t.mode || s.mtime != t.mtime {
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
                } else if s.mtime != t.mtime {
                    d.content_phase.push(Action::SetMeta { entry: s.clone() });
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
    for t in target.iter().filter(|t| t.is_present()) {
        if is_protected(&t.path) || cleared_dirs.iter().any(|c| t.path.is_within(c) && t.path != *c) {
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
        let from = entry
            .content
            .as_ref()
            .and_then(|c| pool.get_mut(&c.id))
            .and_then(Vec::pop);
        match from {
            Some(from) if !replaces => {
                renamed_away.insert(from.path.clone());
                d.touch_parent(&from.path);
                renames.push(Action::Rename {
                    from: from.path.clone(),
                    entry,
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
        if let Some(s) = source.get(path).filter(|s| s.kind == EntryKind::Dir && s.is_present()) {
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

    fn compare_files(&mut self, s: &FileEntry, t: &FileEntry, opts: DiffOptions, needs: &mut ContentNeeds) {
        if !opts.checksum && s.quick_equal(t) {
            if s.mode != t.mode {
                self.content_phase.push(Action::SetMeta { entry: s.clone() });
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
            if s.mode != t.mode || s.mtime != t.mtime {
                self.content_phase.push(Action::SetMeta { entry: s.clone() });
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
