//! Framing: how a [`Frame`] travels on a connection, as a 4-byte big-endian length followed
//! by that many bytes: the frame's CBOR, then, for a `Chunks` frame, its chunks' bytes
//! ([`super::attached`]).
//!
//! Everything read here comes from a peer that may be broken or hostile, so every input
//! ends in a value or a [`FrameError`], never a panic, and memory follows the bytes that
//! actually arrived, not the length a peer announces.

use std::io::{self, IoSlice};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use ferry_actors::messages::ChunkData;

use super::attached::{AttachError, ChunksIn, ChunksOut};
use super::protocol::{Frame, MAX_FRAME};

/// The size of a frame's length prefix.
const PREFIX: usize = 4;

/// The most a frame body's buffer holds before its bytes arrive: a peer announcing a large
/// frame and sending little costs this much, not what it announced.
const INITIAL_BODY_CAPACITY: usize = 64 << 10;

/// How much of a frame body is read before its head is decoded: a `Chunks` frame's head
/// fits (a few kilobytes), and its chunks' bytes are then read into their own buffers.
const HEAD_PEEK: usize = 64 << 10;

/// How a `Chunks` frame's CBOR starts: a map of one entry keyed by the variant's name.
/// Other frames are not decoded twice (a partial index part is not worth parsing).
const CHUNKS_TAG: &[u8] = b"\xa1\x66Chunks";

/// The room a chunk's buffer gets beyond the bytes of it that arrived (every chunk of the
/// default sizes fits at once).
const ATTACHED_ALLOWANCE: usize = 1 << 20;

/// The most capacity a connection's frame buffer keeps between frames.
const KEPT_BODY_CAPACITY: usize = 8 << 20;

/// How deeply CBOR arrays, maps and tags may nest in a frame. The deepest legitimate frame
/// (an index part carrying a patch) nests about a dozen levels; the limit keeps garbage
/// that nests deeper (inside a field serde skips, say) from exhausting a small task stack.
const MAX_NESTING: usize = 64;

/// Why a frame could not be written or read (a cause is part of the message, not also a
/// `source`).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The frame is larger than the limit (announced by a peer, or about to be sent).
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The frame's size in bytes, without its length prefix.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection ended inside a frame's length prefix or body.
    #[error("connection closed in the middle of a frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// The bytes the prefix or body should have had.
        expected: usize,
        /// The bytes that arrived.
        got: usize,
    },
    /// The body is not the CBOR of a frame (or a frame could not be encoded).
    #[error("frame is not valid CBOR for a Ferry message: {0}")]
    Malformed(String),
    /// The body holds a whole frame and then more bytes.
    #[error("frame has {0} bytes after its message")]
    Trailing(usize),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl From<AttachError> for FrameError {
    /// Bytes after a `Chunks` frame's chunks are trailing bytes like any frame's; too few
    /// make the frame malformed.
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Extra(n) => FrameError::Trailing(n),
            short => FrameError::Malformed(format!("chunk bytes: {short}")),
        }
    }
}

/// A frame ready to send: `head` (the length prefix and the CBOR), then `attached`.
struct Encoded<'a> {
    head: Vec<u8>,
    attached: Vec<&'a [u8]>,
}

impl Encoded<'_> {
    /// The bytes on the wire, length prefix included.
    fn len(&self) -> usize {
        self.head.len() + self.attached.iter().map(|a| a.len()).sum::<usize>()
    }

    /// The head's buffer, for the next frame.
    fn into_buffer(self) -> Vec<u8> {
        self.head
    }
}

/// `frame` as it travels, its head written into `buf` (cleared first). Refuses a frame
/// over [`MAX_FRAME`]: a peer would refuse it anyway.
fn encode_into(frame: &Frame, mut buf: Vec<u8>) -> Result<Encoded<'_>, FrameError> {
    buf.clear();
    buf.extend_from_slice(&[0; PREFIX]);
    let malformed =
        |e| FrameError::Malformed(format!("cannot encode a {} frame: {e}", frame.kind()));
    let attached = match frame {
        Frame::Chunks(data) => {
            let (head, attached) = ChunksOut::split(data);
            ciborium::into_writer(&Frame::Chunks(head), &mut buf).map_err(malformed)?;
            attached
        }
        other => {
            ciborium::into_writer(other, &mut buf).map_err(malformed)?;
            Vec::new()
        }
    };
    let encoded = Encoded {
        head: buf,
        attached,
    };
    let len = encoded.len() - PREFIX;
    let prefix = match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME => n,
        _ => {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME,
            })
        }
    };
    let mut encoded = encoded;
    encoded.head[..PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(encoded)
}

/// `frame` as it travels, in one buffer.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let encoded = encode_into(frame, Vec::new())?;
    let mut out = Vec::with_capacity(encoded.len());
    out.extend_from_slice(&encoded.head);
    for a in &encoded.attached {
        out.extend_from_slice(a);
    }
    Ok(out)
}

/// The frame a body (the bytes after the length prefix) holds; the body must hold exactly
/// one frame.
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    let mut rest = body;
    let frame: Frame<ChunksIn> =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_NESTING)
            .map_err(|e| FrameError::Malformed(describe(e)))?;
    if !matches!(frame, Frame::Chunks(_)) && !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    frame.try_map_chunks(|head| head.join(rest).map_err(FrameError::from))
}

/// A decoding error in words (ciborium's `Debug` for some variants is terse).
fn describe(e: ciborium::de::Error<io::Error>) -> String {
    use ciborium::de::Error;
    match e {
        Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the body ends inside a value".to_string()
        }
        Error::Io(e) => e.to_string(),
        Error::Syntax(at) => format!("syntax error at byte {at}"),
        Error::Semantic(Some(at), msg) => format!("{msg} (at byte {at})"),
        Error::Semantic(None, msg) => msg,
        Error::RecursionLimitExceeded => format!("nested more than {MAX_NESTING} levels deep"),
    }
}

/// Reads the next frame: `None` when the connection ends cleanly between frames. A length
/// over `max` is refused before any of the body is read.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    read_frame_reusing(r, max, &mut Vec::new()).await
}

/// [`read_frame`] reading the body into `body` (its capacity kept for the next frame,
/// unless over `KEPT_BODY_CAPACITY`): a connection's frames do not each fault in fresh
/// memory.
pub async fn read_frame_reusing<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    body: &mut Vec<u8>,
) -> Result<Option<Frame>, FrameError> {
    body.clear();
    if body.capacity() > KEPT_BODY_CAPACITY {
        *body = Vec::new();
    }
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    while got < PREFIX {
        match r.read(&mut prefix[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(FrameError::Truncated {
                    expected: PREFIX,
                    got,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A u32 always fits in usize on the platforms Ferry builds for; saturating keeps a
    // 16-bit target from wrapping a length into a small one.
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    body.reserve(len.min(INITIAL_BODY_CAPACITY));
    // A `Chunks` frame's head (its CBOR) is a few kilobytes: once it is in, each chunk's
    // bytes are read straight into a buffer of their own.
    fill(r, body, len.min(HEAD_PEEK), len).await?;
    if body.len() < len {
        if let Some(chunks) = read_attached(r, body, len).await? {
            return Ok(Some(Frame::Chunks(chunks)));
        }
    }
    fill(r, body, len, len).await?;
    decode(body).map(Some)
}

/// Reads into `body` until it holds `want` bytes of a `len`-byte frame body.
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
    want: usize,
    len: usize,
) -> Result<(), FrameError> {
    while body.len() < want {
        if body.len() == body.capacity() {
            // Room for at most as much again as has arrived: a peer announcing a large frame
            // and sending little costs about what it sent. (The buffer is reused, so later
            // frames of a connection rarely grow it.)
            let more = (len - body.len()).min(body.len().max(INITIAL_BODY_CAPACITY));
            body.reserve_exact(more);
        }
        let more = (want - body.len()) as u64;
        match (&mut *r).take(more).read_buf(body).await {
            Ok(0) => {
                return Err(FrameError::Truncated {
                    expected: len,
                    got: body.len(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// When `body`, the first bytes of a `len`-byte frame body, holds the whole head of a
/// `Chunks` frame: that frame, its chunks' bytes taken from what follows the head in
/// `body` and then read from `r`, each straight into its own buffer. `None` (nothing more
/// read) for any other frame, or a head that does not fit in `body`: the caller reads the
/// whole body and decodes it, with the errors that brings.
async fn read_attached<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &[u8],
    len: usize,
) -> Result<Option<ChunkData>, FrameError> {
    if !body.starts_with(CHUNKS_TAG) {
        return Ok(None);
    }
    let mut rest = body;
    let Ok(Frame::Chunks(head)) = ciborium::de::from_reader_with_recursion_limit::<
        Frame<ChunksIn>,
        _,
    >(&mut rest, MAX_NESTING) else {
        return Ok(None);
    };
    let head_len = body.len() - rest.len();
    head.check(len - head_len)?;
    let mut got = body.len();
    let mut bodies = Vec::with_capacity(head.lengths().count());
    for n in head.lengths() {
        let (now, after) = rest.split_at(n.min(rest.len()));
        rest = after;
        // What arrived, and room for what may follow: a peer that names a large chunk and
        // sends little costs at most this much more than it sent.
        let mut bytes = Vec::with_capacity(n.min(now.len() + ATTACHED_ALLOWANCE));
        bytes.extend_from_slice(now);
        while bytes.len() < n {
            if bytes.len() == bytes.capacity() {
                bytes.reserve_exact((n - bytes.len()).min(bytes.len()));
            }
            let more = (n - bytes.len()) as u64;
            match (&mut *r).take(more).read_buf(&mut bytes).await {
                Ok(0) => return Err(FrameError::Truncated { expected: len, got }),
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        bodies.push(bytes);
    }
    Ok(Some(head.fill(bodies)))
}

/// Writes `frame` and returns the bytes written, length prefix included. Does not flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
) -> Result<usize, FrameError> {
    write_frame_reusing(w, frame, &mut Vec::new()).await
}

/// [`write_frame`] encoding the frame's head into `buf` (its capacity kept for the next
/// frame, unless over `KEPT_BODY_CAPACITY`). A chunk's bytes are written from the chunk
/// itself, never copied into `buf`.
pub async fn write_frame_reusing<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    buf: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    let encoded = encode_into(frame, std::mem::take(buf))?;
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(&encoded.head[..])
        .chain(encoded.attached.iter().copied())
        .filter(|s| !s.is_empty())
        .map(IoSlice::new)
        .collect();
    write_all_slices(w, &mut slices).await?;
    let len = encoded.len();
    *buf = encoded.into_buffer();
    if buf.capacity() > KEPT_BODY_CAPACITY {
        *buf = Vec::new();
    }
    Ok(len)
}

/// Writes every byte of `slices` in order. A writer that takes vectors (TLS does) gets
/// them whole: a frame's chunks go from their own buffers into TLS records, not through a
/// copy into `w`'s buffer first (a buffered writer passes on what it cannot hold).
async fn write_all_slices<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let n = w.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ferry_actors::messages::{ChunkBody, ChunkData, ChunkPayload};
    use ferry_actors::FolderId;
    use ferry_engine::ChunkId;
    use proptest::prelude::*;

    use super::*;
    use crate::remote::fuzz::{self, Mutation};

    /// Runs a future that never waits (every reader here is in memory).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn read_all(bytes: &[u8], max: usize) -> Result<Option<Frame>, FrameError> {
        block_on(async {
            let mut r = bytes;
            read_frame(&mut r, max).await
        })
    }

    #[test]
    fn every_variant_round_trips() {
        let frames = fuzz::sample_frames();
        let kinds: BTreeSet<_> = frames.iter().map(Frame::kind).collect();
        assert_eq!(kinds.len(), 14, "{kinds:?}");
        for f in &frames {
            let bytes = encode(f).unwrap();
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 4);
            let back = decode(&bytes[4..]).unwrap();
            assert_eq!(back.kind(), f.kind());
            // Frames have no `PartialEq` (index deltas do not); equal encodings and equal
            // debug output together show nothing was lost.
            assert_eq!(encode(&back).unwrap(), bytes);
            assert_eq!(format!("{back:?}"), format!("{f:?}"));
        }
    }

    #[test]
    fn frames_travel_through_a_stream() {
        let frames = fuzz::sample_frames();
        let wire = block_on(async {
            let mut w = Vec::new();
            let mut total = 0;
            for f in &frames {
                total += write_frame(&mut w, f).await.unwrap();
            }
            assert_eq!(total, w.len());
            w
        });
        let read = block_on(async {
            let mut r = &wire[..];
            let mut out = Vec::new();
            while let Some(f) = read_frame(&mut r, MAX_FRAME).await.unwrap() {
                out.push(f);
            }
            out
        });
        let kinds = |v: &[Frame]| v.iter().map(Frame::kind).collect::<Vec<_>>();
        assert_eq!(kinds(&read), kinds(&frames));
    }

    /// A vectored writer that takes at most `step` bytes per call, across slice boundaries.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            let mut room = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(room);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                room -= take;
                if room == 0 {
                    break;
                }
            }
            self.calls += 1;
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn partial_vectored_writes_through_a_buffer_carry_every_byte_in_order() {
        let frames = fuzz::sample_frames();
        let want: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        for (step, capacity) in [(1, 8), (7, 64), (4096, 16), (1 << 20, 1 << 16)] {
            let got = block_on(async {
                let inner = Trickle {
                    out: Vec::new(),
                    step,
                    calls: 0,
                };
                let mut w = tokio::io::BufWriter::with_capacity(capacity, inner);
                let mut head = Vec::new();
                for f in &frames {
                    write_frame_reusing(&mut w, f, &mut head).await.unwrap();
                }
                w.flush().await.unwrap();
                w.into_inner()
            });
            assert!(got.calls > 0);
            assert_eq!(got.out.len(), want.len(), "step {step}");
            assert!(got.out == want, "step {step}, capacity {capacity}");
        }
    }

    #[test]
    fn chunk_bytes_cost_their_length() {
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        let frame = Frame::Chunks(ChunkData {
            folder: FolderId::new("docs").unwrap(),
            chunks: vec![ChunkPayload {
                id: ChunkId::of(&data),
                body: ChunkBody::Bytes(data),
            }],
            failed: vec![],
            files: vec![],
        });
        let n = encode(&frame).unwrap().len();
        assert!((1 << 20..(1 << 20) + 200).contains(&n), "{n}");
    }

    #[test]
    fn refuses_to_encode_a_frame_over_the_limit() {
        let frame = Frame::Chunks(ChunkData {
            folder: FolderId::new("docs").unwrap(),
            chunks: vec![ChunkPayload {
                id: ChunkId::of(b"x"),
                body: ChunkBody::Bytes(vec![1; MAX_FRAME]),
            }],
            failed: vec![],
            files: vec![],
        });
        match encode(&frame) {
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > MAX_FRAME);
                assert_eq!(max, MAX_FRAME);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_a_large_announcement_before_reading_the_body() {
        // Nothing follows the prefix: the refusal cannot have come from reading a body.
        let wire = (MAX_FRAME as u32 + 1).to_be_bytes();
        match read_all(&wire, MAX_FRAME) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (MAX_FRAME + 1, MAX_FRAME));
            }
            other => panic!("{other:?}"),
        }
        // The limit is the caller's.
        let frame = encode(&Frame::Ping(1)).unwrap();
        assert!(matches!(
            read_all(&frame, 2),
            Err(FrameError::TooLarge { max: 2, .. })
        ));
    }

    #[test]
    fn a_large_announcement_with_a_short_body_costs_little_and_is_truncated() {
        let mut wire = (MAX_FRAME as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&[0x80; 10]);
        match read_all(&wire, MAX_FRAME) {
            Err(FrameError::Truncated { expected, got }) => {
                assert_eq!((expected, got), (MAX_FRAME, 10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_prefix_and_body() {
        let frame = encode(&Frame::Ping(7)).unwrap();
        for cut in 1..4 {
            match read_all(&frame[..cut], MAX_FRAME) {
                Err(FrameError::Truncated { expected: 4, got }) => assert_eq!(got, cut),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        for cut in 4..frame.len() {
            match read_all(&frame[..cut], MAX_FRAME) {
                Err(FrameError::Truncated { expected, got }) => {
                    assert_eq!((expected, got), (frame.len() - 4, cut - 4));
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    /// A reader that hands over at most `step` bytes per call.
    struct Dribble<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl tokio::io::AsyncRead for Dribble<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.step.min(self.bytes.len()).min(buf.remaining());
            let (now, rest) = self.bytes.split_at(n);
            buf.put_slice(now);
            self.bytes = rest;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A `Chunks` frame well over [`HEAD_PEEK`]: its chunks are read after its head.
    fn large_chunks_frame() -> Frame {
        let chunk = |len: usize, seed: u8| {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ seed).collect();
            ChunkPayload {
                id: ChunkId::of(&data),
                body: ChunkBody::Bytes(data),
            }
        };
        Frame::Chunks(ChunkData {
            folder: FolderId::new("docs").unwrap(),
            chunks: vec![
                chunk(100_000, 1),
                chunk(10, 2),
                ChunkPayload {
                    id: ChunkId::of(&[0; 4096]),
                    body: ChunkBody::Zeros(4096),
                },
                chunk(70_000, 3),
                chunk(1_300_000, 4),
                chunk(1, 5),
            ],
            failed: vec![],
            files: vec![],
        })
    }

    fn read_dribbled(wire: &[u8], step: usize) -> Vec<Result<Option<Frame>, String>> {
        block_on(async {
            let mut r = Dribble { bytes: wire, step };
            let mut body = Vec::new();
            let mut out = Vec::new();
            loop {
                let next = read_frame_reusing(&mut r, MAX_FRAME, &mut body).await;
                let end = !matches!(next, Ok(Some(_)));
                out.push(next.map_err(|e| e.to_string()));
                if end {
                    return out;
                }
            }
        })
    }

    #[test]
    fn a_chunks_frame_starts_with_its_tag_and_no_other_does() {
        assert!(encode(&large_chunks_frame()).unwrap()[PREFIX..].starts_with(CHUNKS_TAG));
        for f in fuzz::sample_frames() {
            let is_chunks = matches!(f, Frame::Chunks(_));
            assert_eq!(
                encode(&f).unwrap()[PREFIX..].starts_with(CHUNKS_TAG),
                is_chunks,
                "{}",
                f.kind()
            );
        }
    }

    #[test]
    fn a_large_chunks_frame_is_read_whatever_pieces_its_bytes_arrive_in() {
        let frame = large_chunks_frame();
        let one = encode(&frame).unwrap();
        assert!(one.len() > 2 * HEAD_PEEK);
        // Followed by a small frame: a chunk read never takes bytes of the next frame.
        let mut wire = one.clone();
        wire.extend(encode(&Frame::Ping(9)).unwrap());
        for step in [13, 4099, HEAD_PEEK + 1, 1 << 22] {
            let read = read_dribbled(&wire, step);
            assert_eq!(read.len(), 3, "step {step}: {read:?}");
            let first = read[0].as_ref().unwrap().as_ref().unwrap();
            assert_eq!(encode(first).unwrap(), one, "step {step}");
            assert!(matches!(read[1], Ok(Some(Frame::Ping(9)))), "step {step}");
            assert!(matches!(read[2], Ok(None)), "step {step}");
        }
        // Its chunks went straight into their own buffers, not through the frame buffer.
        let body = block_on(async {
            let mut body = Vec::new();
            read_frame_reusing(&mut &one[..], MAX_FRAME, &mut body)
                .await
                .unwrap();
            body
        });
        assert!(body.capacity() <= 2 * HEAD_PEEK, "{}", body.capacity());
    }

    #[test]
    fn a_large_chunks_frame_cut_in_its_chunks_is_truncated() {
        let wire = encode(&large_chunks_frame()).unwrap();
        let len = wire.len() - PREFIX;
        for cut in [HEAD_PEEK + 10, 150_000, wire.len() - 1] {
            match read_all(&wire[..cut], MAX_FRAME) {
                Err(FrameError::Truncated { expected, got }) => {
                    assert_eq!((expected, got), (len, cut - PREFIX), "cut at {cut}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_large_chunks_frame_must_hold_exactly_the_bytes_its_chunks_name() {
        let wire = encode(&large_chunks_frame()).unwrap();
        let with_len = |body: &[u8]| {
            let mut w = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
            w.extend_from_slice(body);
            w
        };
        let mut longer = wire[PREFIX..].to_vec();
        longer.extend_from_slice(&[7; 5]);
        assert!(matches!(
            read_all(&with_len(&longer), MAX_FRAME),
            Err(FrameError::Trailing(5))
        ));
        let shorter = &wire[PREFIX..wire.len() - 2];
        match read_all(&with_len(shorter), MAX_FRAME) {
            Err(FrameError::Malformed(m)) => assert!(m.contains("chunk bytes"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clean_end_between_frames() {
        assert!(read_all(&[], MAX_FRAME).unwrap().is_none());
        let frame = encode(&Frame::Pong(3)).unwrap();
        block_on(async {
            let mut r = &frame[..];
            assert!(matches!(
                read_frame(&mut r, MAX_FRAME).await,
                Ok(Some(Frame::Pong(3)))
            ));
            assert!(read_frame(&mut r, MAX_FRAME).await.unwrap().is_none());
        });
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode(&Frame::Ping(9)).unwrap();
        frame.extend_from_slice(&[0, 1, 2]);
        assert!(matches!(decode(&frame[4..]), Err(FrameError::Trailing(3))));
        // A length prefix that covers the extra bytes makes them part of the body.
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            read_all(&frame, MAX_FRAME),
            Err(FrameError::Trailing(3))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for body in [
            &b""[..],
            b"\xff",
            b"hello",
            b"\xa1\x64Ping\x61x",                // {"Ping": "x"}
            b"\xa1\x64Nope\x01",                 // an unknown variant
            b"\x5b\xff\xff\xff\xff\xff\xff\xff", // a byte string of 2^64 - 1 bytes
            b"\x9b\xff\xff\xff\xff\xff\xff\xff", // an array of 2^64 - 1 items
        ] {
            match decode(body) {
                Err(FrameError::Malformed(msg)) => assert!(!msg.is_empty()),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // Nesting inside a field serde skips is the one place a typed decoder follows
        // arbitrary structure. Decode on a thread with a deliberately small stack: in a
        // debug build, ciborium's default limit (256 levels) needs more than 512 KiB.
        let body = fuzz::deeply_nested(100_000);
        let outcome = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || decode(&body).map(|f| f.kind()))
            .unwrap()
            .join()
            .unwrap();
        match outcome {
            Err(FrameError::Malformed(msg)) => assert!(msg.contains("nested"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        // The variant's map and `Hello`'s map are two levels, the arrays `depth + 1` more.
        let at_limit = fuzz::deeply_nested(MAX_NESTING - 3);
        assert!(matches!(decode(&at_limit), Ok(Frame::Hello(_))));
        let over = fuzz::deeply_nested(MAX_NESTING - 2);
        assert!(matches!(decode(&over), Err(FrameError::Malformed(_))));
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
            any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
            (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
            (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
            any::<u32>().prop_map(|len| Mutation::SetPrefix { len }),
            (-8i64..8).prop_map(|by| Mutation::ShiftPrefix { by }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let _ = read_all(&bytes, MAX_FRAME);
            // With a prefix that matches, the bytes reach the decoder through the reader too.
            let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            let _ = read_all(&framed, MAX_FRAME);
        }

        #[test]
        fn mutated_frames_never_panic(
            which in any::<prop::sample::Index>(),
            mutations in prop::collection::vec(mutation(), 1..5),
        ) {
            let frames = fuzz::sample_frames();
            let mut bytes = encode(which.get(&frames)).unwrap();
            for m in &mutations {
                m.apply(&mut bytes);
            }
            let _ = decode(bytes.get(4..).unwrap_or(&bytes));
            let _ = block_on(fuzz::read_all_frames(&bytes));
        }
    }
}
