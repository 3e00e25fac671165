//! `ChunkIndex`: where each chunk can be found among a target folder's files, so a chunk the
//! target already holds anywhere is copied locally instead of fetched.

use std::collections::HashMap;

use crate::chunk::{ChunkId, Content};
use crate::relpath::RelPath;

/// Places remembered per chunk: enough to survive a few of them changing, bounded for a
/// chunk that thousands of files share (the zero chunk of sparse images).
const MAX_PLACES: usize = 8;

/// One place a chunk lives: a file and the chunk's offset in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// The file.
    pub path: RelPath,
    /// The chunk's offset in it.
    pub offset: u64,
}

/// Chunk id → the target files (and offsets) holding that chunk.
///
/// Only files whose chunk lists are known are indexed (those the Applier wrote or hashed).
/// A location is a hint: the file may have changed since, so bytes copied from it are
/// verified against the id before use.
#[derive(Clone, Debug, Default)]
pub struct ChunkIndex {
    locs: HashMap<ChunkId, Vec<ChunkLoc>>,
}

impl ChunkIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records every chunk of `content` as held by `path`.
    pub fn add(&mut self, path: &RelPath, content: &Content) {
        for (offset, c) in content.with_offsets() {
            let locs = self.locs.entry(c.id).or_default();
            // A chunk repeated inside one file needs only its first place (this call's
            // pushes are the last ones), and a few places are enough for any chunk.
            if locs.len() < MAX_PLACES && locs.last().is_none_or(|l| l.path != *path) {
                locs.push(ChunkLoc {
                    path: path.clone(),
                    offset,
                });
            }
        }
    }

    /// Forgets `path` as a holder of the chunks of `content` (its former content).
    pub fn remove(&mut self, path: &RelPath, content: &Content) {
        for c in &content.chunks {
            if let Some(locs) = self.locs.get_mut(&c.id) {
                locs.retain(|l| l.path != *path);
                if locs.is_empty() {
                    self.locs.remove(&c.id);
                }
            }
        }
    }

    /// The places holding chunk `id`, most recently added last.
    pub fn locate(&self, id: &ChunkId) -> &[ChunkLoc] {
        self.locs.get(id).map_or(&[], Vec::as_slice)
    }

    /// Number of distinct chunks indexed.
    pub fn len(&self) -> usize {
        self.locs.len()
    }

    /// True when no chunk is indexed.
    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{ChunkParams, ChunkRef};

    fn content(parts: &[&[u8]]) -> Content {
        let chunks = parts
            .iter()
            .map(|p| ChunkRef {
                id: ChunkId::of(p),
                len: p.len() as u32,
            })
            .collect();
        Content::from_chunks(&ChunkParams::default(), chunks)
    }

    #[test]
    fn locates_chunks_across_files_and_forgets_removed_ones() {
        let (a, b) = (RelPath::new("a").unwrap(), RelPath::new("d/b").unwrap());
        let ca = content(&[b"xx", b"yyy", b"xx"]);
        let cb = content(&[b"zz", b"yyy"]);
        let mut ix = ChunkIndex::new();
        ix.add(&a, &ca);
        ix.add(&b, &cb);
        let y = ChunkId::of(b"yyy");
        assert_eq!(
            ix.locate(&y),
            &[
                ChunkLoc {
                    path: a.clone(),
                    offset: 2
                },
                ChunkLoc {
                    path: b.clone(),
                    offset: 2
                }
            ]
        );
        // A repeated chunk is indexed at its first offset only.
        assert_eq!(ix.locate(&ChunkId::of(b"xx")).len(), 1);
        ix.remove(&a, &ca);
        assert_eq!(ix.locate(&y), &[ChunkLoc { path: b, offset: 2 }]);
        assert!(ix.locate(&ChunkId::of(b"xx")).is_empty());
        assert_eq!(ix.len(), 2);
    }
}
