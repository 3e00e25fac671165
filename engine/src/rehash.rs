//! Chunking a file again when its previous chunk list is known: wherever a previous chunk
//! is found in place, its cut is taken from the list, so the gear hash runs only where the
//! content changed. The result is exactly the chunk list of a full pass.
//!
//! Why a previous chunk's cut can be taken: with more than `max` bytes left, FastCDC decides
//! where a chunk that starts at `p` ends from the bytes after `p` alone. A cut at `len` below
//! `max` depends on the chunk's own bytes and on the byte at `len` (the mask is tested with
//! it hashed in); a cut at `max` on the chunk's own bytes only. So a previous chunk that
//! started more than `max` bytes before its file's end, found again (its bytes hash to its
//! id) more than `max` bytes before this file's end, and followed by its successor (whose
//! bytes hash to that one's id, so the byte at `len` is the same), is cut at the same `len`.
//!
//! Where a previous chunk is not found, the walk cuts with the gear hash and looks each chunk
//! it cuts up in the previous list: once one is there (after an edit, the chunker falls
//! back into step within a chunk or two), the walk expects that one's successor next. That
//! is how an insertion or a deletion, which moves everything after it, is caught up with.
//!
//! The previous list is trusted to come from this chunker with these parameters (the
//! Differ's own index); only the parameters are checked, by its `ContentId`.
//!
//! Whether a previous chunk is in place is checked against its id (blake3), or, when the
//! previous chunks' prints are known ([`crate::prints`]), against its print, at memory speed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::chunk::{chunk_reader, cut_at, ChunkId, ChunkParams, ChunkRef, Content};
use crate::prints::{ChunkPrint, Prints, PRINT_MIN};
use crate::split::{
    chunk_file_printed, chunk_reader_printed, segments_for, split_at, Found, SplitTurn,
};

/// Files shorter than this are chunked in one full pass.
pub(crate) const WALK_MIN: u64 = 4 << 20;

/// Chunks `file` (from offset 0 to its end) like [`crate::split::chunk_file`], taking the
/// cuts of `previous` (an earlier chunk list of the same file, from this chunker) wherever
/// its chunks are still in place. `size` is the file's length as the caller last saw it.
/// A `previous` cut with other parameters is not used.
pub fn chunk_file_again(
    file: &File,
    size: u64,
    params: &ChunkParams,
    previous: &Content,
) -> io::Result<Content> {
    again(file, size, params, previous, None, false).map(|(content, _)| content)
}

/// [`chunk_file_again`], also giving the print of every chunk (see [`crate::prints`]).
/// With `prints`, if they are those of `previous`, a previous chunk is found in place by
/// its print instead of its id.
pub(crate) fn chunk_file_again_printed(
    file: &File,
    size: u64,
    params: &ChunkParams,
    previous: &Content,
    prints: Option<&Prints>,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    let prints = prints.and_then(|p| p.for_content(previous));
    again(file, size, params, previous, prints, true)
}

/// [`chunk_file_again`] and [`chunk_file_again_printed`]: `prints` are those of
/// `previous`'s chunks; the new chunks' prints are given back only if `want_prints`.
fn again(
    file: &File,
    size: u64,
    params: &ChunkParams,
    previous: &Content,
    prints: Option<&[ChunkPrint]>,
    want_prints: bool,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    // A small file gains little and would cost the walk's window (zeroed afresh per call,
    // where `chunk_reader` reuses its buffer) and the hint's index.
    if size < WALK_MIN {
        if !want_prints {
            return Ok((chunk_reader(file, params)?, Vec::new()));
        }
        return chunk_reader_printed(file, params);
    }
    let Some(hint) = Hint::new(params, previous, prints) else {
        return if want_prints {
            chunk_file_printed(file, size, params)
        } else {
            Ok((crate::split::chunk_file(file, size, params)?, Vec::new()))
        };
    };
    let segments = segments_for(size, params);
    let turn = (segments >= 2).then(SplitTurn::take).flatten();
    if turn.is_none() {
        let found = walk(file, params, &hint, 0, None, want_prints)?;
        return Ok((Content::from_chunks(params, found.chunks), found.prints));
    }
    split_walk(
        file,
        params,
        &hint,
        &segment_starts(&hint, size, segments),
        want_prints,
    )
}

/// The walk in segments starting at `starts`, each on a thread, joined.
fn split_walk(
    file: &File,
    params: &ChunkParams,
    hint: &Hint<'_>,
    starts: &[u64],
    print: bool,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    split_at(file, params, starts, print, |start, end| {
        walk(file, params, hint, start, end, print)
    })
}

/// Where the segments of a file of `size` bytes start: where previous chunks did, so that,
/// unless something before moved them, each thread finds its first chunk in place.
fn segment_starts(hint: &Hint<'_>, size: u64, segments: usize) -> Vec<u64> {
    let step = size / segments as u64;
    let mut starts = vec![0u64];
    for k in 1..segments as u64 {
        if let Some(at) = hint.boundary_from(k * step) {
            if at > *starts.last().expect("starts holds 0") && at < size {
                starts.push(at);
            }
        }
    }
    starts
}

/// A file's previous chunk list, indexed for the walk.
struct Hint<'a> {
    chunks: &'a [ChunkRef],
    /// The chunks' prints, one each, when known.
    prints: Option<&'a [ChunkPrint]>,
    /// Where each previous chunk started, then the previous length.
    starts: Vec<u64>,
    /// The first previous chunk with each id.
    by_id: HashMap<ChunkId, usize>,
}

impl<'a> Hint<'a> {
    /// The hint for `previous` (with its chunks' `prints`, used if there is one per chunk),
    /// or None when it was not cut with `params` (its id covers them).
    fn new(
        params: &ChunkParams,
        previous: &'a Content,
        prints: Option<&'a [ChunkPrint]>,
    ) -> Option<Self> {
        if Content::id_of(params, &previous.chunks) != previous.id {
            return None;
        }
        let chunks = &previous.chunks[..];
        let mut starts = Vec::with_capacity(chunks.len() + 1);
        let mut at = 0u64;
        starts.push(at);
        for c in chunks {
            at += u64::from(c.len);
            starts.push(at);
        }
        let mut by_id = HashMap::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            by_id.entry(c.id).or_insert(i);
        }
        Some(Hint {
            chunks,
            prints: prints.filter(|p| p.len() == chunks.len()),
            starts,
            by_id,
        })
    }

    /// True when `bytes` are those of previous chunk `j`: by its print when known (and the
    /// chunk is not too short to trust one, see [`PRINT_MIN`]), else by its id.
    fn holds(&self, j: usize, bytes: &[u8]) -> bool {
        match self.prints {
            Some(prints) if bytes.len() >= PRINT_MIN => ChunkPrint::of(bytes) == prints[j],
            _ => self.chunks[j].id.matches(bytes),
        }
    }

    /// The print of previous chunk `j`, whose bytes are `bytes`.
    fn print(&self, j: usize, bytes: &[u8]) -> ChunkPrint {
        self.prints
            .map_or_else(|| ChunkPrint::of(bytes), |prints| prints[j])
    }

    /// The previous chunk that started at `offset`, if one did.
    fn chunk_at(&self, offset: u64) -> Option<usize> {
        self.starts[..self.chunks.len()].binary_search(&offset).ok()
    }

    /// The first offset at or after `offset` where a previous chunk started.
    fn boundary_from(&self, offset: u64) -> Option<u64> {
        let i = self.starts[..self.chunks.len()].partition_point(|&s| s < offset);
        self.starts
            .get(i)
            .copied()
            .filter(|_| i < self.chunks.len())
    }

    /// True when previous chunk `j` started more than `max` bytes before the previous end,
    /// so that end had no say in its cut.
    fn far_from_end(&self, j: usize, max: usize) -> bool {
        self.starts[self.chunks.len()] - self.starts[j] > max as u64
    }

    /// The chunk the walk expects after one with `id`, if `id` was a previous chunk's.
    fn successor_of(&self, id: &ChunkId) -> Option<usize> {
        self.by_id
            .get(id)
            .map(|&k| k + 1)
            .filter(|&k| k < self.chunks.len())
    }
}

/// The chunks of `file` from `start` on, as if one started there, until one ends at or past
/// `end` (None: the file's end). Each is the chunk a full pass from `start` cuts. With
/// `print`, each one's print too.
fn walk(
    file: &File,
    params: &ChunkParams,
    hint: &Hint<'_>,
    start: u64,
    end: Option<u64>,
    print: bool,
) -> io::Result<Found> {
    let max = params.max as usize;
    // The read buffer `split::segments_for` budgets per thread (`4 × max`, here at least
    // 2 MiB), and at least twice what one step asks for (`2 × max + 1`).
    let mut window = Window::new(file, start, (4 * max).max(2 << 20));
    let mut chunks = Vec::new();
    let mut prints = Vec::new();
    let mut at = start;
    // The previous chunk expected at `at`, and whether its bytes were already found there
    // (as the successor of the chunk before).
    let mut expected = hint.chunk_at(start);
    let mut found_already = false;
    while end.is_none_or(|e| at < e) {
        if let Some(j) = expected.filter(|&j| hint.far_from_end(j, max)) {
            let here = window.bytes(at, 2 * max + 1)?;
            let c = hint.chunks[j];
            let len = c.len as usize;
            let in_place = here.len() > max && (found_already || hint.holds(j, &here[..len]));
            let next_in_place = in_place
                && len < max
                && hint.chunks.get(j + 1).is_some_and(|n| {
                    let to = len + n.len as usize;
                    to <= here.len() && hint.holds(j + 1, &here[len..to])
                });
            if in_place && (len == max || next_in_place) {
                chunks.push(c);
                if print {
                    prints.push(hint.print(j, &here[..len]));
                }
                at += u64::from(c.len);
                expected = Some(j + 1);
                found_already = next_in_place;
                continue;
            }
        }
        let here = window.bytes(at, max)?;
        if here.is_empty() {
            break;
        }
        let len = cut_at(here, params);
        let id = ChunkId::of(&here[..len]);
        chunks.push(ChunkRef {
            id,
            len: len as u32,
        });
        if print {
            prints.push(ChunkPrint::of(&here[..len]));
        }
        at += len as u64;
        expected = hint.successor_of(&id);
        found_already = false;
    }
    Ok(Found {
        start,
        chunks,
        prints,
    })
}

/// A moving window on `file`, read with positional reads (threads share the file).
struct Window<'a> {
    file: &'a File,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    base: u64,
    /// Bytes of `buf` that hold data.
    len: usize,
    /// The file ends at `base + len`.
    eof: bool,
}

impl<'a> Window<'a> {
    fn new(file: &'a File, base: u64, cap: usize) -> Self {
        Window {
            file,
            buf: vec![0; cap],
            base,
            len: 0,
            eof: false,
        }
    }

    /// The `n` bytes from `at` (fewer where the file ends). `at` never goes back before an
    /// earlier call's, nor past what it returned; `n` is at most the window's size.
    fn bytes(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        let mut off = usize::try_from(at - self.base).expect("the window moves forward");
        if off + n > self.len && !self.eof {
            self.buf.copy_within(off..self.len, 0);
            self.len -= off;
            self.base = at;
            off = 0;
            while self.len < self.buf.len() {
                match self
                    .file
                    .read_at(&mut self.buf[self.len..], self.base + self.len as u64)
                {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(k) => self.len += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[off..(off + n).min(self.len)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::{
        file_with, noise_with_zeros, pseudo_random as noise, tiny_params as small,
    };
    use proptest::prelude::*;

    /// The walk over all of `new`, with `old`'s chunk list as the hint (small parameters).
    fn walked(old: &[u8], new: &[u8]) -> Content {
        let p = &small();
        let previous = chunk_reader(old, p).unwrap();
        let hint = Hint::new(p, &previous, None).unwrap();
        let found = walk(&file_with(new), p, &hint, 0, None, false).unwrap();
        Content::from_chunks(p, found.chunks)
    }

    /// `bytes` chunked in one full pass, with each chunk's print.
    fn printed(bytes: &[u8], p: &ChunkParams) -> (Content, Vec<ChunkPrint>) {
        chunk_reader_printed(bytes, p).unwrap()
    }

    /// `bytes` chunked in one full pass (small parameters).
    fn full(bytes: &[u8]) -> Content {
        chunk_reader(bytes, &small()).unwrap()
    }

    #[test]
    fn an_unchanged_file_gives_its_previous_chunks() {
        let bytes = noise(200_000, 1);
        assert_eq!(walked(&bytes, &bytes), full(&bytes));
    }

    #[test]
    fn edits_give_the_chunks_of_a_full_pass() {
        let old = noise(200_000, 2);
        let mut overwritten = old.clone();
        overwritten[100_000..100_100].fill(7);
        let mut inserted = old.clone();
        inserted.splice(50_000..50_000, noise(1_000, 3));
        let mut deleted = old.clone();
        deleted.drain(70_000..75_000);
        let mut appended = old.clone();
        appended.extend(noise(9_000, 4));
        let truncated = old[..150_003].to_vec();
        for (what, new) in [
            ("overwrite", overwritten),
            ("insert", inserted),
            ("delete", deleted),
            ("append", appended),
            ("truncate", truncated),
        ] {
            assert_eq!(walked(&old, &new), full(&new), "{what}");
        }
    }

    #[test]
    fn a_previous_chunk_found_before_a_different_byte_is_cut_again() {
        // A chunk whose bytes are in place but whose successor changed from its first byte:
        // the cut of a mask hit depends on that byte, so the walk must not take it.
        let old = noise(100_000, 5);
        let previous = chunk_reader(&old[..], &small()).unwrap();
        let (at, c) = previous
            .with_offsets()
            .find(|(at, c)| *at > 20_000 && c.len < 4096)
            .map(|(at, c)| (at as usize, *c))
            .unwrap();
        for byte in 0..=255u8 {
            let mut new = old.clone();
            new[at + c.len as usize] = byte;
            assert_eq!(walked(&old, &new), full(&new), "byte {byte}");
        }
    }

    #[test]
    fn zeros_cut_at_the_maximum_are_taken_from_the_list() {
        let mut old = noise(10_000, 6);
        old.extend(std::iter::repeat_n(0u8, 100_000));
        old.extend(noise(10_000, 7));
        let mut new = old.clone();
        new.splice(5_000..5_000, noise(300, 8));
        assert_eq!(walked(&old, &new), full(&new));
    }

    #[test]
    fn a_large_file_edited_is_chunked_again_by_prints_like_a_full_pass() {
        let p = ChunkParams::default();
        let old = noise((WALK_MIN + (1 << 20)) as usize, 14);
        let mut new = old.clone();
        new[3 << 20..(3 << 20) + 4096].fill(9);
        let (previous, prints) = printed(&old, &p);
        let f = file_with(&new);
        let prints = Prints::new(&previous, prints).unwrap();
        let (got, got_prints) =
            chunk_file_again_printed(&f, new.len() as u64, &p, &previous, Some(&prints)).unwrap();
        assert_eq!((got, got_prints), printed(&new, &p));
    }

    #[test]
    fn a_chunk_whose_print_differs_is_cut_again_even_if_its_id_matches() {
        // The prints decide alone: proof that they are what the walk checks (a print that
        // is not the chunk's makes it cut that chunk afresh, which gives the same chunks).
        let p = small();
        let bytes = noise(200_000, 15);
        let (previous, mut prints) = printed(&bytes, &p);
        let hint = Hint::new(&p, &previous, Some(&prints)).unwrap();
        let first = &bytes[..previous.chunks[0].len as usize];
        assert!(hint.holds(0, first));
        prints[0] = ChunkPrint::of(b"not these bytes");
        let hint = Hint::new(&p, &previous, Some(&prints)).unwrap();
        assert!(!hint.holds(0, first));
        assert!(previous.chunks[0].id.matches(first));
        let found = walk(&file_with(&bytes), &p, &hint, 0, None, true).unwrap();
        assert_eq!(Content::from_chunks(&p, found.chunks), previous);
        assert_eq!(found.prints[0], ChunkPrint::of(first));
    }

    #[test]
    fn a_chunk_too_short_to_trust_a_print_is_checked_by_its_id() {
        let p = ChunkParams::new(64, 256, 1024).unwrap();
        let bytes = noise(50_000, 16);
        let (previous, mut prints) = printed(&bytes, &p);
        let j = previous
            .chunks
            .iter()
            .position(|c| (c.len as usize) < PRINT_MIN)
            .unwrap();
        let at = previous.with_offsets().nth(j).unwrap().0 as usize;
        let own = &bytes[at..at + previous.chunks[j].len as usize];
        prints[j] = ChunkPrint::of(b"not these bytes");
        let hint = Hint::new(&p, &previous, Some(&prints)).unwrap();
        assert!(hint.holds(j, own), "taken by its id, whatever its print");
        assert!(!hint.holds(j, &own[1..]));
    }

    #[test]
    fn a_hint_cut_with_other_parameters_is_not_used() {
        let bytes = noise(50_000, 9);
        let other = ChunkParams::new(512, 2048, 8192).unwrap();
        let previous = chunk_reader(&bytes[..], &other).unwrap();
        assert!(Hint::new(&small(), &previous, None).is_none());
        let f = file_with(&bytes);
        assert_eq!(
            chunk_file_again(&f, bytes.len() as u64, &small(), &previous).unwrap(),
            chunk_reader(&bytes[..], &small()).unwrap()
        );
    }

    #[test]
    fn segments_of_a_split_walk_join_to_the_full_pass() {
        let old = noise(400_000, 10);
        let mut new = old.clone();
        new.splice(123_456..123_456, noise(777, 11));
        new[300_000..300_050].fill(0);
        let p = small();
        let previous = chunk_reader(&old[..], &p).unwrap();
        let hint = Hint::new(&p, &previous, None).unwrap();
        let f = file_with(&new);
        let full = chunk_reader(&new[..], &p).unwrap();
        for segments in [2, 3, 8] {
            let starts = segment_starts(&hint, new.len() as u64, segments);
            assert_eq!(starts.len(), segments);
            let (got, _) = split_walk(&f, &p, &hint, &starts, false).unwrap();
            assert_eq!(got, full, "{segments} segments");
        }
    }

    #[test]
    fn a_large_file_edited_is_chunked_again_on_threads_like_a_full_pass() {
        let p = ChunkParams::default();
        let old = noise((crate::split::SPLIT_MIN + (3 << 20)) as usize, 12);
        let mut new = old.clone();
        new.splice(20 << 20..20 << 20, noise(1024, 13));
        let previous = chunk_reader(&old[..], &p).unwrap();
        let f = file_with(&new);
        assert_eq!(
            chunk_file_again(&f, new.len() as u64, &p, &previous).unwrap(),
            chunk_reader(&new[..], &p).unwrap()
        );
    }

    /// An edit for the property test: overwrite, insert or delete `len` bytes at `at`.
    #[derive(Debug, Clone)]
    enum Edit {
        Overwrite(usize, usize, u8),
        Insert(usize, usize, u64),
        Delete(usize, usize),
    }

    fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
        let n = bytes.len();
        match *edit {
            Edit::Overwrite(at, len, b) => {
                let at = at.min(n);
                let to = (at + len).min(n);
                bytes[at..to].fill(b);
            }
            Edit::Insert(at, len, seed) => {
                let at = at.min(n);
                bytes.splice(at..at, noise(len, seed));
            }
            Edit::Delete(at, len) => {
                let at = at.min(n);
                let to = (at + len).min(n);
                bytes.drain(at..to);
            }
        }
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0usize..150_000, 1usize..5_000, any::<u8>())
                .prop_map(|(a, l, b)| Edit::Overwrite(a, l, b)),
            (0usize..150_000, 1usize..5_000, any::<u64>())
                .prop_map(|(a, l, s)| Edit::Insert(a, l, s)),
            (0usize..150_000, 1usize..5_000).prop_map(|(a, l)| Edit::Delete(a, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn the_walk_and_a_full_pass_agree(
            len in 0usize..150_000,
            seed: u64,
            zeros in 0usize..20_000,
            zeros_at in 0usize..150_000,
            edits in proptest::collection::vec(edit(), 0..4),
            segments in 1usize..6,
            by_print: bool,
        ) {
            let old = noise_with_zeros(len, seed, zeros, zeros_at);
            let mut new = old.clone();
            for e in &edits {
                apply(&mut new, e);
            }
            let p = small();
            let (previous, old_prints) = printed(&old, &p);
            let hint = Hint::new(&p, &previous, by_print.then_some(&old_prints[..])).unwrap();
            let f = file_with(&new);
            let starts = segment_starts(&hint, new.len() as u64, segments);
            let (got, prints) = split_walk(&f, &p, &hint, &starts, true).unwrap();
            let (full, full_prints) = printed(&new, &p);
            prop_assert_eq!(got, full);
            prop_assert_eq!(prints, full_prints);
        }
    }
}
