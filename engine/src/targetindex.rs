//! `TargetIndex`: a target folder's index together with its chunk index, kept in step by
//! routing every change through one place.

use std::collections::{BTreeMap, BTreeSet};

use crate::chunk::Content;
use crate::chunkindex::ChunkIndex;
use crate::entry::{EntryKind, FileEntry};
use crate::index::Index;
use crate::relpath::RelPath;

/// A target's entries and where their chunks live.
#[derive(Clone, Debug)]
pub struct TargetIndex {
    index: Index,
    chunks: ChunkIndex,
    /// Files outside the index whose chunks may still be copied: the temp files a cut
    /// transfer left behind, until they are removed.
    leftovers: Vec<(RelPath, Content)>,
    /// The present files not hashed yet, by size: where a diff looks for likely copies of
    /// a large new file without going through every entry.
    unhashed: BTreeMap<u64, BTreeSet<RelPath>>,
}

impl TargetIndex {
    /// Wraps a scanned index, indexing the chunks of every entry whose content is known.
    pub fn new(index: Index) -> Self {
        let mut chunks = ChunkIndex::new();
        let mut unhashed: BTreeMap<u64, BTreeSet<RelPath>> = BTreeMap::new();
        for e in index.iter().filter(|e| e.is_present()) {
            if let Some(c) = &e.content {
                chunks.add(&e.path, c);
            }
            if is_unhashed(e) {
                unhashed.entry(e.size).or_default().insert(e.path.clone());
            }
        }
        TargetIndex {
            index,
            chunks,
            leftovers: Vec::new(),
            unhashed,
        }
    }

    /// The present files of `size` bytes not hashed yet, in path order.
    pub fn unhashed_of_size(&self, size: u64) -> impl Iterator<Item = &RelPath> {
        self.unhashed.get(&size).into_iter().flatten()
    }

    /// The entries.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Where chunks live.
    pub fn chunks(&self) -> &ChunkIndex {
        &self.chunks
    }

    /// The entry at `path`.
    pub fn get(&self, path: &RelPath) -> Option<&FileEntry> {
        self.index.get(path)
    }

    /// Inserts or replaces the entry at its path.
    pub fn insert(&mut self, entry: FileEntry) {
        self.forget(&entry.path);
        if entry.is_present() {
            if let Some(c) = &entry.content {
                self.chunks.add(&entry.path, c);
            }
        }
        if is_unhashed(&entry) {
            let paths = self.unhashed.entry(entry.size).or_default();
            paths.insert(entry.path.clone());
        }
        self.index.insert(entry, None);
    }

    /// Removes the entry at `path` (not its children).
    pub fn remove(&mut self, path: &RelPath) -> Option<FileEntry> {
        self.forget(path);
        self.index.remove(path)
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &RelPath) {
        let doomed: Vec<RelPath> = self.index.subtree(path).map(|e| e.path.clone()).collect();
        for p in doomed {
            self.remove(&p);
        }
    }

    /// Records the content found by hashing the file at `path` (`None`: it could not be read).
    pub fn set_content(&mut self, path: &RelPath, content: Option<Content>) {
        self.forget(path);
        let Some(e) = self.index.get_mut(path) else {
            return;
        };
        match content {
            Some(c) => {
                self.chunks.add(path, &c);
                e.content = Some(c);
            }
            // Unreadable at the target: it will be replaced, not compared.
            None => e.state = crate::entry::EntryState::Unreadable,
        }
        if is_unhashed(e) {
            self.unhashed
                .entry(e.size)
                .or_default()
                .insert(e.path.clone());
        }
    }

    /// Sets a directory's (or any entry's) mode and mtime.
    pub fn set_meta(&mut self, path: &RelPath, mode: u32, mtime: crate::entry::MtimeNs) {
        if let Some(e) = self.index.get_mut(path) {
            e.mode = mode;
            e.mtime = mtime;
        }
    }

    /// Offers the chunks of `path`, a file that is not an entry (a leftover temp file),
    /// as sources until [`TargetIndex::take_leftovers`].
    pub fn add_leftover(&mut self, path: RelPath, content: Content) {
        self.chunks.add(&path, &content);
        self.leftovers.push((path, content));
    }

    /// Stops offering the leftovers' chunks and returns their paths (to be removed).
    pub fn take_leftovers(&mut self) -> Vec<RelPath> {
        let mut paths = Vec::with_capacity(self.leftovers.len());
        for (p, c) in std::mem::take(&mut self.leftovers) {
            self.chunks.remove(&p, &c);
            paths.push(p);
        }
        paths
    }

    /// Takes the entry at `path` out of the chunk index and the unhashed files, before it
    /// changes or goes.
    fn forget(&mut self, path: &RelPath) {
        let Some(e) = self.index.get(path) else {
            return;
        };
        if let Some(c) = &e.content {
            self.chunks.remove(path, c);
        }
        if is_unhashed(e) {
            if let Some(paths) = self.unhashed.get_mut(&e.size) {
                paths.remove(path);
                if paths.is_empty() {
                    self.unhashed.remove(&e.size);
                }
            }
        }
    }
}

/// True for a present file whose content is not known.
fn is_unhashed(e: &FileEntry) -> bool {
    e.is_present() && e.kind == EntryKind::File && e.content.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{chunk_reader, ChunkParams};
    use crate::entry::{EntryState, MtimeNs, Seq, VersionVector};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A file of `size` bytes as a scan reports it: not hashed.
    fn file(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: p(path),
            kind: EntryKind::File,
            state: EntryState::Present,
            size,
            mtime: MtimeNs(1),
            mode: 0o644,
            content: None,
            symlink_target: None,
            seq: Seq::default(),
            version: VersionVector::default(),
        }
    }

    fn hashed(e: FileEntry) -> FileEntry {
        let bytes = vec![7u8; e.size as usize];
        FileEntry {
            content: Some(chunk_reader(&bytes[..], &ChunkParams::default()).unwrap()),
            ..e
        }
    }

    /// The unhashed files of each size, as a walk over every entry finds them.
    fn walked(t: &TargetIndex) -> BTreeMap<u64, Vec<RelPath>> {
        let mut by_size: BTreeMap<u64, Vec<RelPath>> = BTreeMap::new();
        for e in t.index().iter().filter(|e| is_unhashed(e)) {
            by_size.entry(e.size).or_default().push(e.path.clone());
        }
        by_size
    }

    fn kept(t: &TargetIndex) -> BTreeMap<u64, Vec<RelPath>> {
        let sizes: BTreeSet<u64> = t.index().iter().map(|e| e.size).collect();
        sizes
            .into_iter()
            .map(|n| (n, t.unhashed_of_size(n).cloned().collect::<Vec<_>>()))
            .filter(|(_, paths)| !paths.is_empty())
            .collect()
    }

    #[test]
    fn the_unhashed_files_by_size_follow_every_change_of_the_index() {
        let mut scanned = Index::new(ChunkParams::default());
        for e in [
            file("a", 10),
            file("b", 10),
            hashed(file("c", 10)),
            file("d/e", 20),
            file("d/f", 20),
            FileEntry {
                kind: EntryKind::Dir,
                ..file("d", 0)
            },
        ] {
            scanned.insert(e, None);
        }
        let mut t = TargetIndex::new(scanned);
        assert_eq!(kept(&t), walked(&t));
        assert_eq!(
            t.unhashed_of_size(10).collect::<Vec<_>>(),
            [&p("a"), &p("b")]
        );
        let steps: [fn(&mut TargetIndex); 8] = [
            // Hashed: no longer a candidate.
            |t| {
                let c = hashed(file("a", 10)).content;
                t.set_content(&p("a"), c)
            },
            // Unreadable: still present, still without content.
            |t| t.set_content(&p("b"), None),
            // Replaced by a file of another size, hashed or not.
            |t| t.insert(file("c", 30)),
            |t| t.insert(hashed(file("d/e", 30))),
            // A tombstone is not a file to copy from.
            |t| {
                t.insert(FileEntry {
                    state: EntryState::Deleted,
                    ..file("b", 10)
                })
            },
            |t| t.insert(file("g", 20)),
            |t| {
                t.remove(&p("g"));
            },
            |t| t.remove_tree(&p("d")),
        ];
        for step in steps {
            step(&mut t);
            assert_eq!(kept(&t), walked(&t));
        }
        assert!(t.unhashed_of_size(10).next().is_none());
        assert_eq!(t.unhashed_of_size(30).collect::<Vec<_>>(), [&p("c")]);
        assert!(t.unhashed_of_size(20).next().is_none());
    }
}
