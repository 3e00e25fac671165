//! `Index`: a folder's entries keyed by `RelPath`, with the stat cache that lets a rescan skip unchanged files.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::chunk::ChunkParams;
use crate::entry::{EntryState, FileEntry, Seq};
use crate::relpath::RelPath;

/// What a scan saw of a file's inode, used to decide that it did not change since it was hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatKey {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Status change time, ns: catches a rewrite that restored the old mtime.
    pub ctime_ns: i64,
    /// Birth time, ns, or 0 where the file system records none: tells a new file that got
    /// a deleted one's inode number from the same file renamed or chmodded.
    pub btime_ns: i64,
}

impl StatKey {
    /// The stat of `md` (of a file at any path: none is read).
    pub fn of(md: &std::fs::Metadata) -> StatKey {
        use std::os::unix::fs::MetadataExt as _;
        StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            btime_ns: md
                .created()
                .map_or(0, |t| match t.duration_since(std::time::UNIX_EPOCH) {
                    Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
                    Err(before) => {
                        i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n)
                    }
                }),
        }
    }
}

/// A folder's entries and their stat cache, with the chunker parameters they were built with.
#[derive(Clone, Debug)]
pub struct Index {
    params: ChunkParams,
    entries: BTreeMap<RelPath, Slot>,
}

/// An entry with what the last scan saw of its inode.
#[derive(Clone, Debug)]
struct Slot {
    entry: FileEntry,
    stat: Option<StatKey>,
}

impl Index {
    /// An empty index whose contents will be chunked with `params`.
    pub fn new(params: ChunkParams) -> Self {
        Index {
            params,
            entries: BTreeMap::new(),
        }
    }

    /// An index of `entries`, which should already be in path order (a scan's output is):
    /// the map is then built in one pass. Later duplicates of a path win.
    pub fn from_sorted(params: ChunkParams, entries: Vec<(FileEntry, Option<StatKey>)>) -> Self {
        let entries = entries
            .into_iter()
            .map(|(entry, stat)| (entry.path.clone(), Slot { entry, stat }))
            .collect();
        Index { params, entries }
    }

    /// Every entry with its stat, in path order, consuming the index.
    pub fn into_entries(self) -> Vec<(FileEntry, Option<StatKey>)> {
        self.entries
            .into_values()
            .map(|s| (s.entry, s.stat))
            .collect()
    }

    /// A copy of the entries at and below each of `paths` (all of them for `None`).
    pub fn extract(&self, paths: Option<&[RelPath]>) -> Index {
        let Some(paths) = paths else {
            return self.clone();
        };
        let mut entries: BTreeMap<RelPath, Slot> = BTreeMap::new();
        for p in paths {
            for (k, v) in self
                .entries
                .range((Bound::Included(p), Bound::Unbounded))
                .take_while(|(k, _)| k.is_within(p))
            {
                entries.insert(k.clone(), v.clone());
            }
        }
        Index {
            params: self.params,
            entries,
        }
    }

    /// The chunker parameters of every `Content` in this index.
    pub fn params(&self) -> &ChunkParams {
        &self.params
    }

    /// The entry at `path`.
    pub fn get(&self, path: &RelPath) -> Option<&FileEntry> {
        self.entries.get(path).map(|s| &s.entry)
    }

    /// The entry at `path`, mutably.
    pub fn get_mut(&mut self, path: &RelPath) -> Option<&mut FileEntry> {
        self.entries.get_mut(path).map(|s| &mut s.entry)
    }

    /// What the last scan saw of `path`'s inode.
    pub fn stat(&self, path: &RelPath) -> Option<&StatKey> {
        self.entries.get(path).and_then(|s| s.stat.as_ref())
    }

    /// Inserts or replaces an entry, with the stat it was read under if any.
    pub fn insert(&mut self, entry: FileEntry, stat: Option<StatKey>) {
        self.entries
            .insert(entry.path.clone(), Slot { entry, stat });
    }

    /// Removes the entry at `path` (not its children).
    pub fn remove(&mut self, path: &RelPath) -> Option<FileEntry> {
        self.entries.remove(path).map(|s| s.entry)
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &RelPath) {
        let doomed: Vec<RelPath> = self.subtree(path).map(|e| e.path.clone()).collect();
        for p in doomed {
            self.remove(&p);
        }
    }

    /// `path` itself and every entry below it, in order.
    pub fn subtree<'a: 'p, 'p>(
        &'a self,
        path: &'p RelPath,
    ) -> impl Iterator<Item = &'a FileEntry> + 'p {
        self.entries
            .range((Bound::Included(path), Bound::Unbounded))
            .take_while(move |(p, _)| p.is_within(path))
            .map(|(_, s)| &s.entry)
    }

    /// All entries in path order (parents before children).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &FileEntry> {
        self.entries.values().map(|s| &s.entry)
    }

    /// All entries in path order, mutably (the path of an entry must not be changed).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut FileEntry> {
        self.entries.values_mut().map(|s| &mut s.entry)
    }

    /// Forgets the oldest tombstones, keeping the `keep` newest; returns the sequence of
    /// the newest one forgotten and their paths, or `None` when there are no more than
    /// `keep`. Changes up to that sequence can then no longer be told apart from a snapshot.
    pub fn forget_tombstones(&mut self, keep: usize) -> Option<(Seq, Vec<RelPath>)> {
        let mut seqs: Vec<Seq> = self
            .iter()
            .filter(|e| e.state == EntryState::Deleted)
            .map(|e| e.seq)
            .collect();
        if seqs.len() <= keep {
            return None;
        }
        let forget = seqs.len() - keep;
        let (_, cut, _) = seqs.select_nth_unstable(forget - 1);
        let cut = *cut;
        let doomed: Vec<RelPath> = self
            .iter()
            .filter(|e| e.state == EntryState::Deleted && e.seq <= cut)
            .map(|e| e.path.clone())
            .collect();
        for p in &doomed {
            self.entries.remove(p);
        }
        Some((cut, doomed))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;

    fn entry(path: &str, seq: u64, state: EntryState) -> FileEntry {
        FileEntry {
            state,
            seq: Seq(seq),
            ..FileEntry::new(RelPath::new(path).unwrap(), EntryKind::File)
        }
    }

    fn paths(index: &Index) -> Vec<&str> {
        index.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn the_oldest_tombstones_are_forgotten_and_present_entries_kept() {
        let rows = [
            ("a", 9, EntryState::Deleted),
            ("b", 2, EntryState::Present),
            ("c", 3, EntryState::Deleted),
            ("d", 7, EntryState::Deleted),
            ("e", 1, EntryState::Unreadable),
            ("f", 5, EntryState::Deleted),
        ];
        let entries = rows
            .iter()
            .map(|(p, s, st)| (entry(p, *s, *st), None))
            .collect();
        let mut index = Index::from_sorted(ChunkParams::default(), entries);
        assert_eq!(index.clone().forget_tombstones(4), None);
        let (cut, gone) = index.forget_tombstones(2).unwrap();
        assert_eq!(cut, Seq(5));
        let gone: Vec<&str> = gone.iter().map(RelPath::as_str).collect();
        assert_eq!(gone, ["c", "f"]);
        assert_eq!(paths(&index), ["a", "b", "d", "e"]);
        let (cut, _) = index.forget_tombstones(0).unwrap();
        assert_eq!(cut, Seq(9));
        assert_eq!(paths(&index), ["b", "e"]);
        assert_eq!(index.forget_tombstones(0), None);
    }
}
