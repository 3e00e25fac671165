//! `TargetIndex`: a target folder's index together with its chunk index, kept in step by
//! routing every change through one place.

use crate::chunk::Content;
use crate::chunkindex::ChunkIndex;
use crate::entry::FileEntry;
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
}

impl TargetIndex {
    /// Wraps a scanned index, indexing the chunks of every entry whose content is known.
    pub fn new(index: Index) -> Self {
        let mut chunks = ChunkIndex::new();
        for e in index.iter().filter(|e| e.is_present()) {
            if let Some(c) = &e.content {
                chunks.add(&e.path, c);
            }
        }
        TargetIndex {
            index,
            chunks,
            leftovers: Vec::new(),
        }
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

    fn forget(&mut self, path: &RelPath) {
        if let Some(c) = self.index.get(path).and_then(|e| e.content.as_ref()) {
            self.chunks.remove(path, c);
        }
    }
}
