//! Content-defined chunking (FastCDC v2020) with a blake3 id per chunk, streaming in bounded memory.

use std::fmt;
use std::io::{self, Read};

use fastcdc::v2020::{cut, select_masks, Normalization};
use serde::{Deserialize, Serialize};

/// The blake3 hash of a chunk's bytes: its name everywhere in Ferry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(#[serde(with = "serde_bytes")] [u8; 32]);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkId(*blake3::hash(bytes).as_bytes())
    }

    /// True when `bytes` hash to this id.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; the ids are not secret, but it costs nothing.
        blake3::Hash::from_bytes(self.0) == blake3::hash(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", short_hex(&self.0))
    }
}

/// The identity of a whole file's content: blake3 over the chunker parameters and the
/// ordered chunk list. Two files with the same `ContentId` have the same bytes (each chunk
/// id is a blake3 of its bytes), and computing it costs no second pass over the data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentId(#[serde(with = "serde_bytes")] [u8; 32]);

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", short_hex(&self.0))
    }
}

fn short_hex(b: &[u8; 32]) -> String {
    b[..6].iter().map(|x| format!("{x:02x}")).collect()
}

/// Chunker parameters: minimum, average and maximum chunk size in bytes.
/// They are stored with every index because changing them changes every chunk id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    /// No chunk is cut before this many bytes.
    pub min: u32,
    /// The size chunks are normalised around.
    pub avg: u32,
    /// A chunk is cut here at the latest; fewer bytes than this left in a file are one chunk
    /// (so a file shorter than this is one chunk).
    pub max: u32,
}

impl Default for ChunkParams {
    /// 8 KiB / 32 KiB / 128 KiB, tuned on the edit benchmarks: the trade-off is documented
    /// in ARCHITECTURE.md.
    fn default() -> Self {
        ChunkParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 128 * 1024,
        }
    }
}

impl ChunkParams {
    /// Checks the parameters against FastCDC's limits and their order
    /// (64 B ≤ min ≤ avg ≤ max, avg ≥ 256 B, max between 1 KiB and 16 MiB, all even).
    pub fn new(min: u32, avg: u32, max: u32) -> Result<Self, String> {
        if !(64..=1 << 20).contains(&min) {
            return Err(format!("minimum chunk size {min} is outside 64 B..1 MiB"));
        }
        if !(256..=4 << 20).contains(&avg) {
            return Err(format!("average chunk size {avg} is outside 256 B..4 MiB"));
        }
        if !(1024..=16 << 20).contains(&max) {
            return Err(format!("maximum chunk size {max} is outside 1 KiB..16 MiB"));
        }
        if !(min <= avg && avg <= max) {
            return Err(format!(
                "chunk sizes must satisfy min <= avg <= max (got {min}, {avg}, {max})"
            ));
        }
        // FastCDC scans two bytes per step and asserts even sizes (in debug builds).
        if [min, avg, max].iter().any(|n| n % 2 != 0) {
            return Err(format!(
                "chunk sizes must be even (got {min}, {avg}, {max})"
            ));
        }
        Ok(ChunkParams { min, avg, max })
    }
}

impl std::str::FromStr for ChunkParams {
    type Err = String;

    /// Parses `MIN,AVG,MAX`, each a byte count with an optional `K` or `M` suffix
    /// (binary units), e.g. `16K,64K,256K`.
    fn from_str(s: &str) -> Result<Self, String> {
        let sizes: Vec<u32> = s.split(',').map(parse_size).collect::<Result<_, _>>()?;
        match sizes[..] {
            [min, avg, max] => ChunkParams::new(min, avg, max),
            _ => Err(format!(
                "expected MIN,AVG,MAX (e.g. 16K,64K,256K), got {s:?}"
            )),
        }
    }
}

fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (digits, unit) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1u64 << 20),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 4096, 16K, 1M)"))
}

/// One chunk in a file's chunk list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's id.
    pub id: ChunkId,
    /// Its length in bytes.
    pub len: u32,
}

/// A file's content as a chunk list, with the identity of the whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The identity of the whole content.
    pub id: ContentId,
    /// The chunks in file order.
    pub chunks: Vec<ChunkRef>,
}

impl Content {
    /// Builds the content from its chunk list, computing its id.
    pub fn from_chunks(params: &ChunkParams, chunks: Vec<ChunkRef>) -> Self {
        Content {
            id: Self::id_of(params, &chunks),
            chunks,
        }
    }

    /// The id of the content cut into `chunks` with `params`.
    pub fn id_of(params: &ChunkParams, chunks: &[ChunkRef]) -> ContentId {
        let mut h = blake3::Hasher::new();
        h.update(&params.min.to_le_bytes());
        h.update(&params.avg.to_le_bytes());
        h.update(&params.max.to_le_bytes());
        for c in chunks {
            h.update(c.id.as_bytes());
            h.update(&c.len.to_le_bytes());
        }
        ContentId(*h.finalize().as_bytes())
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Each chunk with its offset in the file.
    pub fn with_offsets(&self) -> impl Iterator<Item = (u64, &ChunkRef)> {
        self.chunks.iter().scan(0u64, |off, c| {
            let at = *off;
            *off += u64::from(c.len);
            Some((at, c))
        })
    }
}

/// Reads `reader` to the end, cutting it into chunks and calling `on_chunk(offset, bytes, id)`
/// for each while its bytes are still in cache. Memory stays bounded (a few times `max`)
/// whatever the input size.
pub fn chunk_stream<R: Read>(
    mut reader: R,
    params: &ChunkParams,
    mut on_chunk: impl FnMut(u64, &[u8], ChunkId) -> io::Result<()>,
) -> io::Result<Content> {
    let cap = (4 * params.max as usize).max(1 << 20);
    // One buffer per thread, reused: zeroing a fresh megabyte for every small file cost
    // more than hashing it (10 GiB of memset for a tree of 10,000 files).
    let mut scratch = SCRATCH.take();
    if scratch.len() < cap {
        scratch.resize(cap, 0);
    }
    let result = chunk_into(&mut reader, params, &mut scratch[..cap], |o, b, id| {
        on_chunk(o, b, id)
    });
    SCRATCH.set(scratch);
    result
}

thread_local! {
    /// The read buffer of [`chunk_stream`] on this thread (taken while in use, so a nested
    /// call gets its own).
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`chunk_stream`] reading through `buf`.
fn chunk_into<R: Read>(
    reader: &mut R,
    params: &ChunkParams,
    buf: &mut [u8],
    mut on_chunk: impl FnMut(u64, &[u8], ChunkId) -> io::Result<()>,
) -> io::Result<Content> {
    let max = params.max as usize;
    let cap = buf.len();
    let (mut start, mut end, mut eof, mut offset) = (0usize, 0usize, false, 0u64);
    let mut chunks = Vec::new();
    loop {
        if end - start < max && !eof {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            while end < cap {
                match reader.read(&mut buf[end..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if start == end {
            break;
        }
        let n = cut_at(&buf[start..end], params);
        let bytes = &buf[start..start + n];
        let id = ChunkId::of(bytes);
        on_chunk(offset, bytes, id)?;
        chunks.push(ChunkRef { id, len: n as u32 });
        start += n;
        offset += n as u64;
    }
    Ok(Content::from_chunks(params, chunks))
}

/// The length of the chunk that starts at the start of `bytes`, which holds at least
/// `params.max` bytes unless it ends where the file does.
///
/// Fewer than `max` bytes left are one chunk: a file shorter than `max` is never scanned
/// for cut points, and neither is the end of a longer one. An edit there re-sends at most
/// `max` bytes, which an edit cut by content costs too (the chunk before the edit's may
/// change with it); scanning small files cost about 4% of an initial copy's CPU time.
pub fn cut_at(bytes: &[u8], params: &ChunkParams) -> usize {
    let (min, avg, max) = (
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    );
    if bytes.len() < max {
        return bytes.len();
    }
    let (mask_s, mask_l) = select_masks(avg, Normalization::Level1);
    let (_, n) = cut(
        bytes,
        min,
        avg,
        max,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
    );
    n
}

/// The lengths of the chunks `data`, a whole file's content, is cut into (the cuts of
/// [`chunk_stream`], without naming the chunks).
pub fn cut_lengths(data: &[u8], params: &ChunkParams) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let n = cut_at(&data[start..], params);
        lens.push(n);
        start += n;
    }
    lens
}

/// Cuts `bytes`, a whole file's content, into chunks, each a buffer of its own, without
/// naming them (a receiver that names what it is sent spares the sender a blake3 pass): the
/// first is `bytes` itself, cut short, so a file of one chunk (any file shorter than `max`)
/// is never copied, and the others are copied once. The same cuts as [`chunk_stream`].
pub fn cut_owned(mut bytes: Vec<u8>, params: &ChunkParams) -> Vec<Vec<u8>> {
    let lens = cut_lengths(&bytes, params);
    // Split from the end, so that each tail copied holds only its own chunk.
    let mut owned = Vec::with_capacity(lens.len());
    let mut end = bytes.len();
    for n in lens.iter().skip(1).rev() {
        end -= n;
        owned.push(bytes.split_off(end));
    }
    if !lens.is_empty() {
        // What was split off is not given back by `split_off`: the first chunk would hold
        // the whole file's room.
        bytes.shrink_to_fit();
        owned.push(bytes);
    }
    owned.reverse();
    owned
}

/// Chunks `reader` and returns only the chunk list.
pub fn chunk_reader<R: Read>(reader: R, params: &ChunkParams) -> io::Result<Content> {
    chunk_stream(reader, params, |_, _, _| Ok(()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small chunk sizes (256 B / 1 KiB / 4 KiB), so that test files of a few hundred KiB
    /// hold hundreds of chunks; shared by the split and rehash tests.
    pub(crate) fn tiny_params() -> ChunkParams {
        ChunkParams::new(256, 1024, 4096).unwrap()
    }

    /// An unnamed temp file holding `bytes`, positioned at its start.
    pub(crate) fn file_with(bytes: &[u8]) -> std::fs::File {
        use std::io::{Seek as _, Write as _};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    /// [`pseudo_random`] bytes with a run of `zeros` zero bytes inserted at `at` (clamped to
    /// the end): content where FastCDC cuts only at the maximum size.
    pub(crate) fn noise_with_zeros(len: usize, seed: u64, zeros: usize, at: usize) -> Vec<u8> {
        let mut bytes = pseudo_random(len, seed);
        let at = at.min(bytes.len());
        bytes.splice(at..at, std::iter::repeat_n(0u8, zeros));
        bytes
    }

    /// Reproducible incompressible bytes (xorshift64), shared by the chunking tests.
    pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn small() -> ChunkParams {
        ChunkParams {
            min: 1024,
            avg: 4096,
            max: 16384,
        }
    }

    fn chunks_of(data: &[u8], p: &ChunkParams) -> Vec<(u64, Vec<u8>, ChunkId)> {
        let mut out = Vec::new();
        chunk_stream(data, p, |off, b, id| {
            out.push((off, b.to_vec(), id));
            Ok(())
        })
        .unwrap();
        out
    }

    /// A reader that returns at most `step` bytes per read, to exercise refills.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn small_input_is_one_chunk_and_empty_is_none() {
        let p = ChunkParams::default();
        assert_eq!(chunk_reader(&b"hello"[..], &p).unwrap().chunks.len(), 1);
        assert!(chunk_reader(&b""[..], &p).unwrap().chunks.is_empty());
    }

    #[test]
    fn fewer_than_max_bytes_are_one_chunk_however_many_cut_points_they_hold() {
        let p = ChunkParams::default();
        for len in [p.min as usize + 1, p.avg as usize * 2, p.max as usize - 1] {
            let data = pseudo_random(len, 5);
            let content = chunk_reader(&data[..], &p).unwrap();
            assert_eq!(content.chunks.len(), 1, "{len} bytes");
            assert_eq!(content.chunks[0].id, ChunkId::of(&data));
        }
        // Random bytes of `max` and more are cut by content as before.
        let data = pseudo_random(p.max as usize * 4, 5);
        assert!(chunk_reader(&data[..], &p).unwrap().chunks.len() > 2);
    }

    #[test]
    fn a_buffer_cut_in_place_gives_the_chunks_of_a_stream_each_in_its_own_buffer() {
        let p = small();
        for len in [
            0,
            1,
            p.max as usize - 1,
            p.max as usize,
            5 * p.max as usize + 7,
        ] {
            let data = pseudo_random(len, 11);
            let given = data.clone();
            let ptr = given.as_ptr();
            let owned = cut_owned(given, &p);
            let content = chunk_reader(&data[..], &p).unwrap();
            assert_eq!(owned.len(), content.chunks.len(), "{len} bytes");
            for (bytes, c) in owned.iter().zip(&content.chunks) {
                assert_eq!(bytes.len(), c.len as usize);
                assert_eq!(ChunkId::of(bytes), c.id);
            }
            assert_eq!(owned.concat(), data);
            if let Some(first) = owned.first() {
                assert_eq!(
                    first.capacity(),
                    first.len(),
                    "room kept past the first chunk"
                );
                if owned.len() == 1 {
                    assert_eq!(first.as_ptr(), ptr, "a file of one chunk was copied");
                }
            }
        }
    }

    #[test]
    fn an_edit_changes_only_nearby_chunks() {
        let p = small();
        let a = pseudo_random(1 << 20, 7);
        let mut b = a.clone();
        b[500_000] ^= 0xff;
        let ca = chunk_reader(&a[..], &p).unwrap();
        let cb = chunk_reader(&b[..], &p).unwrap();
        let ids_a: std::collections::HashSet<_> = ca.chunks.iter().map(|c| c.id).collect();
        let changed: u64 = cb
            .chunks
            .iter()
            .filter(|c| !ids_a.contains(&c.id))
            .map(|c| u64::from(c.len))
            .sum();
        assert!(changed > 0);
        assert!(changed <= 2 * u64::from(p.max), "{changed} bytes changed");
        // An insertion near the start shifts everything after it, yet chunks resynchronise.
        let mut c = a.clone();
        c.splice(1000..1000, [1u8; 100]);
        let cc = chunk_reader(&c[..], &p).unwrap();
        let new: u64 = cc
            .chunks
            .iter()
            .filter(|x| !ids_a.contains(&x.id))
            .map(|x| u64::from(x.len))
            .sum();
        assert!(new <= 2 * u64::from(p.max), "{new} bytes new after insert");
    }

    #[test]
    fn params_parse_and_are_checked() {
        let p: ChunkParams = "8K,32K,128K".parse().unwrap();
        assert_eq!(p, ChunkParams::default());
        assert_eq!("16K,64K,256K".parse::<ChunkParams>().unwrap().avg, 64 << 10);
        assert_eq!("4096,16k,1M".parse::<ChunkParams>().unwrap().max, 1 << 20);
        for bad in [
            "16K,64K",
            "64K,16K,256K",
            "1,2,3",
            "x,64K,256K",
            "16K,64K,32M",
            "4097,16K,64K",
            "4K,16385,64K",
            "4K,16K,65537",
        ] {
            assert!(bad.parse::<ChunkParams>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_input_within_bounds(len in 0usize..200_000, seed: u64, step in 1usize..70_000) {
            let p = small();
            let data = pseudo_random(len, seed);
            let whole = chunks_of(&data, &p);
            let mut joined = Vec::new();
            for (i, (off, bytes, id)) in whole.iter().enumerate() {
                prop_assert_eq!(*off as usize, joined.len());
                prop_assert!(bytes.len() <= p.max as usize);
                // Cut by content only while `max` bytes are left; what is left then is one chunk.
                let left = data.len() - *off as usize;
                if i + 1 < whole.len() {
                    prop_assert!(bytes.len() >= p.min as usize);
                    prop_assert!(left >= p.max as usize, "cut with {} bytes left", left);
                } else {
                    prop_assert!(left <= p.max as usize, "{} bytes left in the last chunk", left);
                }
                prop_assert_eq!(*id, ChunkId::of(bytes));
                joined.extend_from_slice(bytes);
            }
            prop_assert_eq!(&joined, &data);
            // Cut points do not depend on how the reader delivers the bytes.
            let trickled = chunk_reader(Trickle(&data, step), &p).unwrap();
            prop_assert_eq!(trickled, chunk_reader(&data[..], &p).unwrap());
        }
    }
}
