//! Chunking one large file on several threads, with exactly the cut points (and so the chunk
//! list) that chunking it from start to end on one thread finds.
//!
//! The file is cut into segments and each is chunked on its own thread as if a chunk
//! started at the segment's first byte. Where a chunk starts depends only on where the
//! previous one started and the bytes from there on, so once the true sequence (from the
//! start of the file) lands on a chunk start a segment's thread also found, the rest of
//! that segment's chunks are the true ones. The join chunks the few bytes between the end
//! of what it holds and that meeting point itself (the "bridge"). When they never meet (long
//! runs cut only at the maximum size, e.g. zeros), the bridge simply goes on through the
//! segment: slower, never different.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::chunk::{chunk_reader, chunk_stream, cut_at, ChunkId, ChunkParams, ChunkRef, Content};
use crate::prints::ChunkPrint;

/// Files shorter than this are chunked on the calling thread.
pub const SPLIT_MIN: u64 = 32 << 20;
/// No segment is shorter than this (the bridge and thread start cost next to nothing then).
const SEGMENT_MIN: u64 = 16 << 20;
/// Threads for one file at most.
const MAX_THREADS: usize = 8;
/// The read buffers of one split's threads together stay below this (each holds
/// `max(4 × max chunk, 1 MiB)`): with very large chunks, fewer segments or none.
const BUFFER_BUDGET: u64 = 64 << 20;

/// Set while a file is being split: one at a time in a process. Hashing jobs already run
/// one per core, so when several large files are hashed at once the cores are busy anyway.
static SPLITTING: AtomicBool = AtomicBool::new(false);

/// Chunks `file` (read from offset 0 to its end) like [`chunk_reader`], on as many threads
/// as there are cores when it is large. `size` is its length as the caller last saw it
/// (only the split depends on it: the whole file is read, whatever its length now).
pub fn chunk_file(file: &File, size: u64, params: &ChunkParams) -> io::Result<Content> {
    let segments = segments_for(size, params);
    if segments < 2 {
        return chunk_reader(file, params);
    }
    let Some(_turn) = SplitTurn::take() else {
        return chunk_reader(file, params);
    };
    chunk_split(file, size, params, segments, false).map(|(content, _)| content)
}

/// [`chunk_file`], also giving the print of every chunk (see [`crate::prints`]).
pub(crate) fn chunk_file_printed(
    file: &File,
    size: u64,
    params: &ChunkParams,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    let segments = segments_for(size, params);
    let turn = (segments >= 2).then(SplitTurn::take).flatten();
    if turn.is_none() {
        return chunk_reader_printed(file, params);
    }
    chunk_split(file, size, params, segments, true)
}

/// [`chunk_reader`] on the calling thread, also giving the print of every chunk.
pub(crate) fn chunk_reader_printed<R: Read>(
    reader: R,
    params: &ChunkParams,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    let mut prints = Vec::new();
    let content = chunk_stream(reader, params, |_, bytes, _| {
        prints.push(ChunkPrint::of(bytes));
        Ok(())
    })?;
    Ok((content, prints))
}

/// How many segments a file of `size` bytes is cut into (below 2: none, it is chunked on
/// the calling thread).
pub(crate) fn segments_for(size: u64, params: &ChunkParams) -> usize {
    // Most files are small: decided before asking for the core count, which reads cgroup
    // files on every call.
    if size < SPLIT_MIN {
        return 1;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let per_thread = (4 * u64::from(params.max)).max(1 << 20);
    usize::try_from((size / SEGMENT_MIN).min(BUFFER_BUDGET / per_thread))
        .unwrap_or(usize::MAX)
        .min(threads)
}

/// This thread's turn to split a file ([`SPLITTING`]), given back when dropped.
pub(crate) struct SplitTurn;

impl SplitTurn {
    pub(crate) fn take() -> Option<SplitTurn> {
        SPLITTING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            .then_some(SplitTurn)
    }
}

impl Drop for SplitTurn {
    fn drop(&mut self) {
        SPLITTING.store(false, Ordering::Release);
    }
}

/// The chunks one thread found in its segment, starting at `start` (with their prints when
/// the split is asked for them; else none).
pub(crate) struct Found {
    pub(crate) start: u64,
    pub(crate) chunks: Vec<ChunkRef>,
    pub(crate) prints: Vec<ChunkPrint>,
}

/// [`chunk_file`] with `segments` segments of a file of (about) `size` bytes.
fn chunk_split(
    file: &File,
    size: u64,
    params: &ChunkParams,
    segments: usize,
    print: bool,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    let step = size / segments as u64;
    let starts: Vec<u64> = (0..segments as u64).map(|k| k * step).collect();
    split_at(file, params, &starts, print, |start, end| {
        chunk_segment(file, params, start, end, print)
    })
}

/// Chunks `file` in segments starting at `starts` (increasing, the first 0), each on a
/// thread of its own: `segment(start, end)` finds the chunks from `start` as if one started
/// there, at least up to `end` (the next segment's start; None for the last, which goes on to
/// the file's end). The join makes them the chunk list of one pass, with the chunks' prints
/// when `print` (each segment's then holds its own).
pub(crate) fn split_at(
    file: &File,
    params: &ChunkParams,
    starts: &[u64],
    print: bool,
    segment: impl Fn(u64, Option<u64>) -> io::Result<Found> + Sync,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    let bounds = |k: usize| (starts[k], starts.get(k + 1).copied());
    let segment = &segment;
    let found: Vec<io::Result<Found>> = std::thread::scope(|s| {
        let jobs: Vec<_> = (1..starts.len())
            .map(|k| {
                let (start, end) = bounds(k);
                let job = std::thread::Builder::new()
                    .name("ferry-chunk".into())
                    .spawn_scoped(s, move || segment(start, end));
                (start, job)
            })
            .collect();
        let (start, end) = bounds(0);
        let mut found = vec![segment(start, end)];
        found.extend(jobs.into_iter().map(|(start, job)| match job {
            Ok(j) => j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread: nothing found there, so the join chunks that segment itself.
            Err(_) => Ok(Found {
                start,
                chunks: Vec::new(),
                prints: Vec::new(),
            }),
        }));
        found
    });
    join(file, params, found, print)
}

/// The chunk list of `file` from what its segments' threads `found`, in file order, with
/// the chunks' prints when `print`.
fn join(
    file: &File,
    params: &ChunkParams,
    found: Vec<io::Result<Found>>,
    print: bool,
) -> io::Result<(Content, Vec<ChunkPrint>)> {
    let mut bridge = vec![0u8; params.max as usize];
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut prints: Vec<ChunkPrint> = Vec::new();
    let mut pos = 0u64;
    for seg in found {
        let seg = seg?;
        // Chunk from `pos` until the true sequence meets a chunk start of this segment
        // (`seg.start` itself is one) or passes what the segment found.
        let starts: Vec<u64> = std::iter::once(seg.start)
            .chain(seg.chunks.iter().scan(seg.start, |at, c| {
                *at += u64::from(c.len);
                Some(*at)
            }))
            .collect();
        let seg_end = *starts.last().expect("starts holds seg.start");
        while pos < seg_end {
            if let Ok(i) = starts.binary_search(&pos) {
                chunks.extend_from_slice(&seg.chunks[i..]);
                if print {
                    prints.extend_from_slice(&seg.prints[i..]);
                }
                pos = seg_end;
                break;
            }
            match bridge_chunk(file, params, pos, &mut bridge, print)? {
                Some((c, p)) => {
                    pos += u64::from(c.len);
                    chunks.push(c);
                    prints.extend(p);
                }
                None => break,
            }
        }
    }
    // After the last segment: the file's end (reached when the last segment was joined),
    // or more bytes the bridge chunks on its own (never joined, or the file grew).
    while let Some((c, p)) = bridge_chunk(file, params, pos, &mut bridge, print)? {
        pos += u64::from(c.len);
        chunks.push(c);
        prints.extend(p);
    }
    Ok((Content::from_chunks(params, chunks), prints))
}

/// The chunks of `file` from `start` as if one started there. With `end`, reading stops
/// there and the last chunk (cut by that artificial end) is left out; without it, the file
/// is read to its end. With `print`, each chunk's print too.
fn chunk_segment(
    file: &File,
    params: &ChunkParams,
    start: u64,
    end: Option<u64>,
    print: bool,
) -> io::Result<Found> {
    let reader = AtReader {
        file,
        pos: start,
        end: end.unwrap_or(u64::MAX),
    };
    let mut prints = Vec::new();
    let mut chunks = chunk_stream(reader, params, |_, bytes, _| {
        if print {
            prints.push(ChunkPrint::of(bytes));
        }
        Ok(())
    })?
    .chunks;
    if end.is_some() {
        chunks.pop();
        prints.pop();
    }
    Ok(Found {
        start,
        chunks,
        prints,
    })
}

/// The one chunk of `file` starting at `at`, with its print if `print` (None at the end of
/// the file), read through `buf` (`max` bytes long).
fn bridge_chunk(
    file: &File,
    params: &ChunkParams,
    at: u64,
    buf: &mut [u8],
    print: bool,
) -> io::Result<Option<(ChunkRef, Option<ChunkPrint>)>> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    let bytes = &buf[..got];
    let len = cut_at(bytes, params);
    Ok(Some((
        ChunkRef {
            id: ChunkId::of(&bytes[..len]),
            len: len as u32,
        },
        print.then(|| ChunkPrint::of(&bytes[..len])),
    )))
}

/// Reads `file` from `pos` up to `end` with positional reads (threads share the file).
struct AtReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for AtReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::{
        file_with, noise_with_zeros, pseudo_random as noise, tiny_params as small,
    };
    use proptest::prelude::*;

    #[test]
    fn the_split_finds_the_chunks_of_one_pass() {
        let bytes = noise(300_000, 7);
        let f = file_with(&bytes);
        let one = chunk_reader(&bytes[..], &small()).unwrap();
        for segments in [2, 3, 7, 50] {
            let (split, _) =
                chunk_split(&f, bytes.len() as u64, &small(), segments, false).unwrap();
            assert_eq!(split, one, "{segments} segments");
        }
    }

    #[test]
    fn zeros_that_never_meet_are_bridged_to_the_same_result() {
        // All zeros: cut only at the maximum size, so a segment starting off the grid of
        // the one pass never meets it and the bridge chunks the whole segment itself.
        let mut bytes = noise(5_000, 3);
        bytes.extend(std::iter::repeat_n(0u8, 200_000));
        bytes.extend(noise(30_000, 4));
        let f = file_with(&bytes);
        let one = chunk_reader(&bytes[..], &small()).unwrap();
        for segments in [2, 4, 9] {
            let (split, _) =
                chunk_split(&f, bytes.len() as u64, &small(), segments, false).unwrap();
            assert_eq!(split, one, "{segments} segments");
        }
    }

    #[test]
    fn a_file_that_grew_since_its_size_was_taken_is_chunked_to_its_end() {
        let bytes = noise(100_000, 11);
        let f = file_with(&bytes);
        let one = chunk_reader(&bytes[..], &small()).unwrap();
        // Split as if it were 60,000 bytes long: the rest is read by the last segment.
        let (split, _) = chunk_split(&f, 60_000, &small(), 4, false).unwrap();
        assert_eq!(split, one);
    }

    #[test]
    fn a_large_file_is_split_and_gives_the_same_chunks() {
        // Above SPLIT_MIN with two 16 MiB segments at least, with the default parameters.
        let bytes = noise((SPLIT_MIN + (1 << 20)) as usize, 5);
        let f = file_with(&bytes);
        let params = ChunkParams::default();
        let (split, prints) = chunk_split(&f, bytes.len() as u64, &params, 2, true).unwrap();
        let one = chunk_reader(&bytes[..], &params).unwrap();
        assert_eq!(split, one);
        assert_eq!(prints, prints_of(&bytes, &one));
        assert_eq!(chunk_file(&f, bytes.len() as u64, &params).unwrap(), one);
    }

    #[test]
    fn a_segment_no_thread_could_chunk_is_chunked_by_the_join() {
        let bytes = noise(200_000, 9);
        let f = file_with(&bytes);
        let p = small();
        let one = chunk_reader(&bytes[..], &p).unwrap();
        let step = bytes.len() as u64 / 4;
        let found = (0..4u64)
            .map(|k| {
                let end = (k < 3).then(|| (k + 1) * step);
                if k == 2 {
                    // What chunk_split records when the thread could not be started.
                    Ok(Found {
                        start: k * step,
                        chunks: Vec::new(),
                        prints: Vec::new(),
                    })
                } else {
                    chunk_segment(&f, &p, k * step, end, true)
                }
            })
            .collect();
        let (content, prints) = join(&f, &p, found, true).unwrap();
        assert_eq!(content, one);
        assert_eq!(prints, prints_of(&bytes, &one));
    }

    /// The print of each chunk of `content`, cut from `bytes`.
    fn prints_of(bytes: &[u8], content: &Content) -> Vec<ChunkPrint> {
        content
            .with_offsets()
            .map(|(at, c)| ChunkPrint::of(&bytes[at as usize..at as usize + c.len as usize]))
            .collect()
    }

    #[test]
    fn a_large_file_printed_gives_the_same_chunks_and_each_ones_print() {
        let bytes = noise(3 * SEGMENT_MIN as usize + 12_345, 11);
        let f = file_with(&bytes);
        let p = ChunkParams::default();
        let (content, prints) = chunk_file_printed(&f, bytes.len() as u64, &p).unwrap();
        assert_eq!(content, chunk_reader(&bytes[..], &p).unwrap());
        assert_eq!(prints, prints_of(&bytes, &content));
        let small = &bytes[..SEGMENT_MIN as usize];
        let (content, prints) =
            chunk_file_printed(&file_with(small), small.len() as u64, &p).unwrap();
        assert_eq!(prints, prints_of(small, &content));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn split_and_one_pass_agree(
            len in 0usize..120_000,
            seed: u64,
            zeros in 0usize..40_000,
            at in 0usize..120_000,
            segments in 2usize..12,
        ) {
            let bytes = noise_with_zeros(len, seed, zeros, at);
            let f = file_with(&bytes);
            let one = chunk_reader(&bytes[..], &small()).unwrap();
            let (split, prints) = chunk_split(&f, bytes.len() as u64, &small(), segments, true).unwrap();
            prop_assert_eq!(&prints, &prints_of(&bytes, &one));
            prop_assert_eq!(split, one);
        }
    }
}
