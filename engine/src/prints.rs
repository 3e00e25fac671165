//! Chunk prints: a keyed 128-bit xxh3 of each chunk of a large file, kept by a source
//! beside the file's chunk list, so that chunking the file again after an edit
//! ([`crate::rehash`]) finds its unchanged chunks at memory speed instead of hashing each
//! with blake3 (which costs about 0.25 CPU-seconds per GiB here, most of what a small edit
//! to a large file costs the source), and so that a chunk read again to be sent is checked
//! at memory speed too ([`crate::SourceFile::read_chunk_printed`]).
//!
//! A print only ever says "these are the bytes this process hashed to that chunk id": the
//! chunk ids that travel, are stored and are verified remain blake3. A chunk asked for
//! finds a print only if the chunk kept at that offset has that very id (the whole id is
//! compared) and length, so a print that matches the bytes read shows they hash to the id
//! asked for. Two different chunks share a print by chance with a probability of about
//! 2^-128 (the stat check that lets an unchanged file go unread altogether is far weaker). The seed is drawn at random when the
//! process starts and never leaves it, but xxh3 is not a MAC: pairs of short inputs (up to
//! 240 bytes) are known to collide whatever the seed, so a chunk that short is never taken
//! on its print ([`PRINT_MIN`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::chunk::{ChunkId, Content, ContentId};
use crate::relpath::RelPath;

/// Chunks shorter than this are checked by their id, never by their print: xxh3's
/// collisions that hold for any seed are in inputs of up to 240 bytes.
pub const PRINT_MIN: usize = 256;

/// The keyed 128-bit xxh3 of one chunk's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkPrint(u128);

impl ChunkPrint {
    /// The print of `bytes` under this process's key.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkPrint(xxhash_rust::xxh3::xxh3_128_with_seed(bytes, key()))
    }
}

/// This process's key, drawn once.
fn key() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(rand::random)
}

/// The prints of every chunk of one version of a file, in order.
#[derive(Clone, Debug)]
pub struct Prints {
    /// The content they are the prints of.
    content: ContentId,
    prints: Arc<[ChunkPrint]>,
    /// Where each chunk starts, and its id: a chunk asked for by offset, length and id
    /// finds its print ([`Prints::at`]).
    marks: Arc<[(u64, ChunkId)]>,
    /// The content's length (where the last chunk ends).
    end: u64,
}

impl Prints {
    /// The prints of `content`'s chunks, in order; None when there is not one per chunk,
    /// or more than are ever kept (their offsets and ids are then not gathered either).
    pub fn new(content: &Content, prints: Vec<ChunkPrint>) -> Option<Self> {
        (prints.len() == content.chunks.len() && prints.len() <= KEPT_PRINTS).then(|| Prints {
            content: content.id,
            prints: prints.into(),
            marks: content.with_offsets().map(|(at, c)| (at, c.id)).collect(),
            end: content.len(),
        })
    }

    /// The print of the chunk that starts at `offset`, if it is `len` bytes long and its id
    /// is `id`.
    pub fn at(&self, offset: u64, len: u32, id: &ChunkId) -> Option<ChunkPrint> {
        let i = self.marks.binary_search_by_key(&offset, |m| m.0).ok()?;
        let end = self.marks.get(i + 1).map_or(self.end, |m| m.0);
        (self.marks[i].1 == *id && end.checked_sub(offset) == Some(u64::from(len)))
            .then(|| self.prints[i])
    }

    /// The prints, if they are those of `content`.
    pub fn for_content(&self, content: &Content) -> Option<&[ChunkPrint]> {
        (self.content == content.id && self.prints.len() == content.chunks.len())
            .then_some(&self.prints[..])
    }
}

/// Prints kept at most, over all files: 56 bytes each with their chunk's offset and id, so
/// 56 MiB, which covers 32 GiB of large files at the default 32 KiB average chunk.
pub(crate) const KEPT_PRINTS: usize = 1 << 20;

/// The prints of the large files a source hashed last, by path, up to `KEPT_PRINTS`
/// (the files hashed longest ago are forgotten first). Shared by the clones of a
/// [`crate::SourceDir`].
#[derive(Default)]
pub struct PrintCache {
    inner: Mutex<Kept>,
}

impl fmt::Debug for PrintCache {
    /// Counts only: the prints themselves are up to 56 MiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("PrintCache")
            .field("files", &kept.by_path.len())
            .field("prints", &kept.total)
            .finish()
    }
}

#[derive(Default)]
struct Kept {
    by_path: HashMap<RelPath, (u64, Prints)>,
    /// Paths in the order they were stored, with the stamp they were stored under (an
    /// entry whose stamp differs was stored again later and is skipped).
    order: VecDeque<(RelPath, u64)>,
    next_stamp: u64,
    total: usize,
}

impl PrintCache {
    /// The prints kept for `path`, if they are those of `content`.
    pub fn get(&self, path: &RelPath, content: &Content) -> Option<Prints> {
        let kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (_, prints) = kept.by_path.get(path)?;
        prints
            .for_content(content)
            .is_some()
            .then(|| prints.clone())
    }

    /// The print of the chunk `id` of `len` bytes at `offset` of the file at `path`, if
    /// kept ([`Prints::at`]).
    pub fn print_at(
        &self,
        path: &RelPath,
        offset: u64,
        len: u32,
        id: &ChunkId,
    ) -> Option<ChunkPrint> {
        let kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        kept.by_path.get(path)?.1.at(offset, len, id)
    }

    /// Keeps `prints` as those of the file at `path` (replacing any it had), forgetting
    /// the oldest while there are more than `KEPT_PRINTS`. A file with more prints than
    /// that on its own is not kept (it would push out every other file, then itself).
    pub fn put(&self, path: &RelPath, prints: Prints) {
        let mut kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let kept = &mut *kept;
        if prints.prints.len() > KEPT_PRINTS {
            if let Some((_, old)) = kept.by_path.remove(path) {
                kept.total -= old.prints.len();
            }
            return;
        }
        kept.next_stamp += 1;
        let stamp = kept.next_stamp;
        kept.total += prints.prints.len();
        if let Some((_, old)) = kept.by_path.insert(path.clone(), (stamp, prints)) {
            kept.total -= old.prints.len();
        }
        kept.order.push_back((path.clone(), stamp));
        while kept.total > KEPT_PRINTS {
            let Some((p, s)) = kept.order.pop_front() else {
                break;
            };
            if kept.by_path.get(&p).is_some_and(|(at, _)| *at == s) {
                if let Some((_, old)) = kept.by_path.remove(&p) {
                    kept.total -= old.prints.len();
                }
            }
        }
        // Stale entries (paths stored again since) are dropped once they are half the queue.
        if kept.order.len() > 2 * kept.by_path.len() + 64 {
            let by_path = &kept.by_path;
            kept.order
                .retain(|(p, s)| by_path.get(p).is_some_and(|(at, _)| at == s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{ChunkId, ChunkParams, ChunkRef};

    fn content(n: usize, salt: u8) -> Content {
        let chunks = (0..n)
            .map(|i| ChunkRef {
                id: ChunkId::of(&[salt, i as u8]),
                len: 1,
            })
            .collect();
        Content::from_chunks(&ChunkParams::default(), chunks)
    }

    fn prints_of(c: &Content) -> Prints {
        let p = (0..c.chunks.len())
            .map(|i| ChunkPrint::of(&[i as u8]))
            .collect();
        Prints::new(c, p).unwrap()
    }

    /// Prints of `c` however many chunks it has (as [`Prints::new`] refuses to make them).
    fn any_prints_of(c: &Content) -> Prints {
        let prints: Vec<_> = (0..c.chunks.len()).map(|_| ChunkPrint(0)).collect();
        Prints {
            content: c.id,
            prints: prints.into(),
            marks: c.with_offsets().map(|(at, r)| (at, r.id)).collect(),
            end: c.len(),
        }
    }

    #[test]
    fn prints_depend_on_every_byte() {
        let a = vec![7u8; 100_000];
        let mut b = a.clone();
        b[54_321] = 8;
        assert_ne!(ChunkPrint::of(&a), ChunkPrint::of(&b));
        assert_eq!(ChunkPrint::of(&a), ChunkPrint::of(&a.clone()));
    }

    #[test]
    fn prints_are_given_only_for_the_content_they_were_made_from() {
        let (c, other) = (content(3, 1), content(3, 2));
        assert!(Prints::new(&c, vec![ChunkPrint::of(b"x")]).is_none());
        let cache = PrintCache::default();
        let path = RelPath::new("f").unwrap();
        cache.put(&path, prints_of(&c));
        assert!(cache.get(&path, &c).is_some());
        assert!(cache.get(&path, &other).is_none());
        assert!(cache.get(&RelPath::new("g").unwrap(), &c).is_none());
    }

    #[test]
    fn a_chunk_finds_its_print_by_offset_length_and_id_and_only_in_the_version_kept() {
        let cache = PrintCache::default();
        let path = RelPath::new("f").unwrap();
        let (c, newer) = (content(5, 1), content(5, 2));
        cache.put(&path, prints_of(&c));
        // `content` makes chunks of one byte: chunk i starts at i.
        for (i, chunk) in c.chunks.iter().enumerate() {
            let at = cache.print_at(&path, i as u64, 1, &chunk.id);
            assert_eq!(at, Some(ChunkPrint::of(&[i as u8])), "chunk {i}");
        }
        // Another chunk's id, an offset where no chunk starts, another path.
        assert_eq!(cache.print_at(&path, 1, 1, &c.chunks[2].id), None);
        assert_eq!(cache.print_at(&path, 9, 1, &c.chunks[2].id), None);
        // Another length than the chunk's, the last chunk included.
        assert_eq!(cache.print_at(&path, 2, 2, &c.chunks[2].id), None);
        assert_eq!(cache.print_at(&path, 4, 2, &c.chunks[4].id), None);
        assert!(cache.print_at(&path, 4, 1, &c.chunks[4].id).is_some());
        assert_eq!(
            cache.print_at(&RelPath::new("g").unwrap(), 0, 1, &c.chunks[0].id),
            None
        );
        // Once a newer version's prints are kept, the older chunks find none.
        cache.put(&path, prints_of(&newer));
        assert_eq!(cache.print_at(&path, 0, 1, &c.chunks[0].id), None);
        assert!(cache.print_at(&path, 0, 1, &newer.chunks[0].id).is_some());
    }

    #[test]
    fn the_files_hashed_longest_ago_are_forgotten_first() {
        let cache = PrintCache::default();
        let big = content(KEPT_PRINTS / 2, 1);
        let (a, b, c) = (
            RelPath::new("a").unwrap(),
            RelPath::new("b").unwrap(),
            RelPath::new("c").unwrap(),
        );
        cache.put(&a, prints_of(&big));
        cache.put(&b, prints_of(&big));
        // `a` again: now `b` is the oldest.
        cache.put(&a, prints_of(&big));
        cache.put(&c, prints_of(&big));
        assert!(cache.get(&b, &big).is_none());
        assert!(cache.get(&a, &big).is_some() && cache.get(&c, &big).is_some());
    }

    #[test]
    fn a_file_with_more_prints_than_are_kept_pushes_out_nothing() {
        let cache = PrintCache::default();
        let (small, huge) = (content(3, 1), content(KEPT_PRINTS + 1, 2));
        let (a, b) = (RelPath::new("a").unwrap(), RelPath::new("b").unwrap());
        cache.put(&a, prints_of(&small));
        cache.put(&b, prints_of(&small));
        assert!(Prints::new(&huge, vec![ChunkPrint(0); KEPT_PRINTS + 1]).is_none());
        cache.put(&b, any_prints_of(&huge));
        assert!(cache.get(&a, &small).is_some());
        assert!(cache.get(&b, &huge).is_none() && cache.get(&b, &small).is_none());
        assert_eq!(format!("{cache:?}"), "PrintCache { files: 1, prints: 3 }");
    }
}
