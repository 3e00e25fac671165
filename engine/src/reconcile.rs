//! `reconcile`: compares what a fresh scan of some paths found with what the index holds
//! there, yielding the changed entries and the removals, with content carried over where
//! the inode shows it cannot have changed (metadata-only changes, renames).

use std::collections::HashMap;

use crate::entry::{EntryKind, EntryState, FileEntry};
use crate::index::{Index, StatKey};
use crate::relpath::RelPath;

/// One change to a source index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new or changed entry. A file whose `content` is `None` must be hashed.
    Upsert(FileEntry, Option<StatKey>),
    /// The entry at this path is gone.
    Remove(RelPath),
}

/// The inode identity that proves a file's bytes did not change: a rename keeps it,
/// a `chmod` keeps it, any write changes the mtime or size. The birth time tells the same
/// file from a new one given a deleted file's inode number (ext4 reuses them at once) with
/// the same size and mtime (`tar`, `cp -p`, a build with a fixed `SOURCE_DATE_EPOCH`).
fn same_bytes(a: &StatKey, b: &StatKey) -> bool {
    a.dev == b.dev
        && a.ino == b.ino
        && a.size == b.size
        && a.mtime_ns == b.mtime_ns
        && a.btime_ns == b.btime_ns
}

/// Compares `fresh` (the scans of `scopes`; `None` = the whole folder) with `index`.
/// Entries of the index inside the scopes that the scans did not find are removed.
pub fn reconcile(
    index: &Index,
    scopes: Option<&[RelPath]>,
    fresh: &[(FileEntry, Option<StatKey>)],
) -> Vec<Change> {
    let in_scope = |p: &RelPath| scopes.is_none_or(|s| s.iter().any(|q| p.is_within(q)));
    let seen: HashMap<&RelPath, ()> = fresh.iter().map(|(e, _)| (&e.path, ())).collect();
    let mut removed: Vec<&FileEntry> = Vec::new();
    let mut changes = Vec::new();
    let old_entries: Box<dyn Iterator<Item = &FileEntry>> = match scopes {
        None => Box::new(index.iter()),
        Some(s) => Box::new(s.iter().flat_map(|q| index.subtree(q))),
    };
    for old in old_entries {
        if old.state == EntryState::Deleted || !in_scope(&old.path) || seen.contains_key(&old.path)
        {
            continue;
        }
        removed.push(old);
    }
    // Files that left one path may have arrived at another (a rename): same inode, same bytes.
    let mut moved: HashMap<(u64, u64), &FileEntry> = HashMap::new();
    for old in &removed {
        if let (EntryKind::File, Some(st), Some(_)) =
            (old.kind, index.stat(&old.path), &old.content)
        {
            moved.insert((st.dev, st.ino), *old);
        }
    }
    for (new, stat) in fresh {
        let old = index
            .get(&new.path)
            .filter(|o| o.state != EntryState::Deleted);
        if let Some(old) = old {
            if unchanged(old, index.stat(&old.path), new, stat.as_ref()) {
                continue;
            }
        }
        let mut entry = new.clone();
        if entry.kind == EntryKind::File && entry.state == EntryState::Present {
            // At the same path, a ctime that moved without a mode change (a chmod's) may be a
            // write whose mtime was set back (`touch -r`, `rsync --inplace -t`): read again.
            let carried = old
                .filter(|o| o.kind == EntryKind::File)
                .and_then(|o| Some((o, index.stat(&o.path)?)))
                .filter(|(o, st)| {
                    stat.as_ref().is_some_and(|s| {
                        same_bytes(st, s) && (st.ctime_ns == s.ctime_ns || o.mode != new.mode)
                    })
                })
                .map(|(o, _)| o)
                .or_else(|| {
                    let s = stat.as_ref()?;
                    let o = moved.get(&(s.dev, s.ino))?;
                    let ost = index.stat(&o.path)?;
                    same_bytes(ost, s).then_some(*o)
                });
            entry.content = carried.and_then(|o| o.content.clone());
        }
        changes.push(Change::Upsert(entry, *stat));
    }
    changes.extend(removed.into_iter().map(|o| Change::Remove(o.path.clone())));
    changes
}

fn unchanged(
    old: &FileEntry,
    old_stat: Option<&StatKey>,
    new: &FileEntry,
    new_stat: Option<&StatKey>,
) -> bool {
    old.kind == new.kind
        && old.state == new.state
        && old.mode == new.mode
        && old.mtime == new.mtime
        && old.size == new.size
        && old.symlink_target == new.symlink_target
        && (old.kind != EntryKind::File
            || matches!((old_stat, new_stat), (Some(a), Some(b)) if a == b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{ChunkParams, Content};
    use crate::entry::{MtimeNs, Seq, VersionVector};

    fn file(path: &str, ino: u64, mtime: i64, hashed: bool) -> (FileEntry, Option<StatKey>) {
        let e = FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            state: EntryState::Present,
            size: 10,
            mtime: MtimeNs(mtime),
            mode: 0o644,
            content: hashed.then(|| Content::from_chunks(&ChunkParams::default(), Vec::new())),
            symlink_target: None,
            seq: Seq(1),
            version: VersionVector::default(),
        };
        let st = StatKey {
            dev: 1,
            ino,
            size: 10,
            mtime_ns: mtime,
            ctime_ns: mtime,
            btime_ns: 1,
        };
        (e, Some(st))
    }

    fn index(entries: Vec<(FileEntry, Option<StatKey>)>) -> Index {
        Index::from_sorted(ChunkParams::default(), entries)
    }

    #[test]
    fn unchanged_files_yield_nothing_and_missing_ones_are_removed() {
        let idx = index(vec![file("a", 1, 5, true), file("b", 2, 5, true)]);
        let fresh = vec![file("a", 1, 5, false)];
        let changes = reconcile(&idx, None, &fresh);
        assert_eq!(changes, vec![Change::Remove(RelPath::new("b").unwrap())]);
    }

    #[test]
    fn a_renamed_file_keeps_its_content_and_a_rewritten_one_loses_it() {
        let idx = index(vec![file("a", 1, 5, true), file("b", 2, 5, true)]);
        let scopes = [
            RelPath::new("a").unwrap(),
            RelPath::new("c").unwrap(),
            RelPath::new("b").unwrap(),
        ];
        // a moved to c (same inode); b rewritten (new mtime).
        let fresh = vec![file("b", 2, 9, false), file("c", 1, 5, false)];
        let changes = reconcile(&idx, Some(&scopes), &fresh);
        let upserts: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(e, _) => Some((e.path.as_str().to_owned(), e.content.is_some())),
                Change::Remove(_) => None,
            })
            .collect();
        assert_eq!(
            upserts,
            vec![("b".to_owned(), false), ("c".to_owned(), true)]
        );
        assert!(changes.contains(&Change::Remove(RelPath::new("a").unwrap())));
    }

    #[test]
    fn a_ctime_that_moved_without_a_chmod_means_read_again() {
        // Same inode, size and mtime, but a new ctime: with the mode unchanged it may be a
        // write whose mtime was set back, so the content is not carried; with a new mode
        // it is the chmod's own ctime.
        let idx = index(vec![file("a", 1, 5, true)]);
        let (e, st) = file("a", 1, 5, false);
        let st = st.map(|s| StatKey { ctime_ns: 9, ..s });
        let carried = |changes: Vec<Change>| match &changes[..] {
            [Change::Upsert(e, _)] => e.content.is_some(),
            other => panic!("{other:?}"),
        };
        assert!(!carried(reconcile(&idx, None, &[(e.clone(), st)])));
        let chmod = FileEntry { mode: 0o600, ..e };
        assert!(carried(reconcile(&idx, None, &[(chmod, st)])));
    }

    #[test]
    fn a_new_file_on_a_reused_inode_number_is_read_not_carried() {
        // a deleted and b created with a's inode number, size and mtime (ext4 reuses inode
        // numbers at once; tar and cp -p keep mtimes): only the birth time tells them apart.
        let idx = index(vec![file("a", 1, 5, true)]);
        let scopes = [RelPath::new("a").unwrap(), RelPath::new("b").unwrap()];
        let reborn =
            |(e, st): (FileEntry, Option<StatKey>)| (e, st.map(|s| StatKey { btime_ns: 2, ..s }));
        let carried = |changes: &[Change], path: &str| {
            changes.iter().find_map(|c| match c {
                Change::Upsert(e, _) if e.path.as_str() == path => Some(e.content.is_some()),
                _ => None,
            })
        };
        let fresh = [reborn(file("b", 1, 5, false))];
        assert_eq!(
            carried(&reconcile(&idx, Some(&scopes), &fresh), "b"),
            Some(false)
        );
        // The same with the new file at the old path and another mode (the chmod-like case).
        let (e, st) = reborn(file("a", 1, 5, false));
        let fresh = [(FileEntry { mode: 0o600, ..e }, st)];
        assert_eq!(carried(&reconcile(&idx, None, &fresh), "a"), Some(false));
        // The same file renamed keeps its birth time: carried.
        let fresh = [file("b", 1, 5, false)];
        assert_eq!(
            carried(&reconcile(&idx, Some(&scopes), &fresh), "b"),
            Some(true)
        );
    }

    #[test]
    fn entries_outside_the_scopes_are_left_alone() {
        let idx = index(vec![file("a", 1, 5, true), file("d/x", 2, 5, true)]);
        let scopes = [RelPath::new("d").unwrap()];
        let changes = reconcile(&idx, Some(&scopes), &[]);
        assert_eq!(changes, vec![Change::Remove(RelPath::new("d/x").unwrap())]);
    }

    #[test]
    fn a_change_to_an_ignored_path_yields_nothing() {
        use crate::ignore::IgnoreRules;
        use crate::scan::{scan, scan_subtree, ScanOptions};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("cache")).unwrap();
        std::fs::write(root.join("a"), b"a").unwrap();
        let opts = ScanOptions {
            ignore: IgnoreRules::new(&["/cache/".into(), "*.tmp".into()]).unwrap(),
            ..ScanOptions::default()
        };
        let idx = scan(root, opts.clone()).unwrap().index;
        // Live changes at ignored paths: the Watcher reports them, the rescans find nothing,
        // and nothing of the index lies there to be taken as removed.
        std::fs::write(root.join("cache/x"), b"x").unwrap();
        std::fs::write(root.join("b.tmp"), b"b").unwrap();
        let scopes = [
            RelPath::new("cache/x").unwrap(),
            RelPath::new("cache").unwrap(),
            RelPath::new("b.tmp").unwrap(),
        ];
        let mut fresh = Vec::new();
        for s in &scopes {
            fresh.extend(
                scan_subtree(root, s, opts.clone())
                    .unwrap()
                    .index
                    .into_entries(),
            );
        }
        assert!(fresh.is_empty());
        assert_eq!(reconcile(&idx, Some(&scopes), &fresh), Vec::new());
        assert_eq!(idx.len(), 1);
    }
}
