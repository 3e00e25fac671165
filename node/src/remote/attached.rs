//! How a `Chunks` frame travels: its CBOR names each chunk's length (those of its files
//! sent whole too), and the chunks' bytes follow the CBOR in the same frame, in order (the
//! chunks', then the files'). Neither side pushes chunk bytes through the
//! CBOR codec: the sender writes them from the chunks themselves, and the receiver reads
//! each into a buffer of its exact size (ciborium would build it 4 KiB at a time,
//! reallocating as it grows): straight from the connection once the frame's head is in
//! ([`super::codec`]), or copied out of a frame read whole.

use ferry_actors::messages::{
    ChunkBody, ChunkData, ChunkFailure, ChunkPayload, InlineFile, InlinePiece,
};
use ferry_actors::FolderId;
use ferry_engine::{ChunkId, ChunkRef, FileEntry};
use serde::{Deserialize, Serialize};

/// A chunk's body in its frame's CBOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireBody {
    /// This many bytes, after the frame's CBOR.
    Attached(u32),
    /// This many zero bytes (nothing attached).
    Zeros(u32),
}

/// A chunk as its frame's CBOR names it, borrowed from the chunk being sent.
#[derive(Serialize)]
struct PayloadOut<'a> {
    id: &'a ChunkId,
    body: WireBody,
}

/// A piece of a file sent whole as its frame's CBOR names it.
#[derive(Serialize)]
enum PieceOut<'a> {
    New(WireBody),
    Sent(&'a ChunkRef),
}

/// A file sent whole as its frame's CBOR carries it.
#[derive(Serialize)]
struct FileOut<'a> {
    entry: &'a FileEntry,
    pieces: Vec<PieceOut<'a>>,
}

/// A [`ChunkData`] as its frame's CBOR carries it, borrowed from the message being sent.
#[derive(Serialize)]
pub struct ChunksOut<'a> {
    folder: &'a FolderId,
    chunks: Vec<PayloadOut<'a>>,
    failed: &'a [ChunkFailure],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileOut<'a>>,
}

/// A chunk as a received frame's CBOR names it.
#[derive(Debug, Deserialize)]
struct PayloadIn {
    id: ChunkId,
    body: WireBody,
}

/// A piece of a file sent whole as a received frame's CBOR names it.
#[derive(Debug, Deserialize)]
enum PieceIn {
    New(WireBody),
    Sent(ChunkRef),
}

/// A file sent whole as a received frame's CBOR carries it.
#[derive(Debug, Deserialize)]
struct FileIn {
    entry: FileEntry,
    pieces: Vec<PieceIn>,
}

/// A [`ChunkData`] as a received frame's CBOR carries it, without its bytes.
#[derive(Debug, Deserialize)]
pub struct ChunksIn {
    folder: FolderId,
    chunks: Vec<PayloadIn>,
    failed: Vec<ChunkFailure>,
    #[serde(default)]
    files: Vec<FileIn>,
}

/// Why a received frame's attached bytes do not fit its CBOR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The chunks name more bytes than follow the CBOR.
    #[error("its chunks name {named} bytes, but only {attached} follow its CBOR")]
    Short {
        /// The bytes the chunks name (saturating).
        named: u64,
        /// The bytes that follow the CBOR.
        attached: usize,
    },
    /// More bytes follow the CBOR than the chunks name.
    #[error("{0} bytes follow its chunks")]
    Extra(usize),
}

impl<'a> ChunksOut<'a> {
    /// `data` as its frame's CBOR carries it, and the bytes to send after that CBOR, in
    /// order. A body longer than `u32::MAX` is named as `u32::MAX` bytes: no frame can
    /// hold it, and the caller refuses frames by their whole size before sending.
    pub fn split(data: &'a ChunkData) -> (Self, Vec<&'a [u8]>) {
        let mut attached = Vec::new();
        let mut wire = |body: &'a ChunkBody| match body {
            ChunkBody::Bytes(bytes) => {
                attached.push(&bytes[..]);
                WireBody::Attached(u32::try_from(bytes.len()).unwrap_or(u32::MAX))
            }
            ChunkBody::Zeros(n) => WireBody::Zeros(*n),
        };
        let chunks = data
            .chunks
            .iter()
            .map(|c| PayloadOut {
                id: &c.id,
                body: wire(&c.body),
            })
            .collect();
        let files = data
            .files
            .iter()
            .map(|f| FileOut {
                entry: &f.entry,
                pieces: f
                    .pieces
                    .iter()
                    .map(|p| match p {
                        InlinePiece::New(body) => PieceOut::New(wire(body)),
                        InlinePiece::Sent(c) => PieceOut::Sent(c),
                    })
                    .collect(),
            })
            .collect();
        let head = ChunksOut {
            folder: &data.folder,
            chunks,
            failed: &data.failed,
            files,
        };
        (head, attached)
    }
}

impl ChunksIn {
    /// Checks that the chunks name exactly `attached` bytes (those after the CBOR).
    pub fn check(&self, attached: usize) -> Result<(), AttachError> {
        let named: u64 = self.lengths().map(|n| n as u64).sum();
        match usize::try_from(named) {
            Ok(n) if n == attached => Ok(()),
            Ok(n) if n < attached => Err(AttachError::Extra(attached - n)),
            _ => Err(AttachError::Short { named, attached }),
        }
    }

    /// The length of each attached body, in order.
    pub fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        let pieces = self
            .files
            .iter()
            .flat_map(|f| &f.pieces)
            .filter_map(|p| match p {
                PieceIn::New(body) => Some(body),
                PieceIn::Sent(_) => None,
            });
        self.chunks
            .iter()
            .map(|c| &c.body)
            .chain(pieces)
            .filter_map(|body| match body {
                // A u32 fits in usize on every platform Ferry builds for.
                WireBody::Attached(n) => Some(*n as usize),
                WireBody::Zeros(_) => None,
            })
    }

    /// The [`ChunkData`], with `bodies` as the attached bodies, in order, one for each of
    /// [`ChunksIn::lengths`] and of that length (as [`ChunksIn::check`]ed bytes cut there).
    pub fn fill(self, bodies: Vec<Vec<u8>>) -> ChunkData {
        let mut bodies = bodies.into_iter();
        let mut body = |wire: WireBody| match wire {
            WireBody::Attached(_) => ChunkBody::Bytes(bodies.next().unwrap_or_default()),
            WireBody::Zeros(n) => ChunkBody::Zeros(n),
        };
        let chunks = self
            .chunks
            .into_iter()
            .map(|c| ChunkPayload {
                id: c.id,
                body: body(c.body),
            })
            .collect();
        let files = self
            .files
            .into_iter()
            .map(|f| InlineFile {
                entry: f.entry,
                pieces: f
                    .pieces
                    .into_iter()
                    .map(|p| match p {
                        PieceIn::New(wire) => InlinePiece::New(body(wire)),
                        PieceIn::Sent(c) => InlinePiece::Sent(c),
                    })
                    .collect(),
            })
            .collect();
        ChunkData {
            folder: self.folder,
            chunks,
            failed: self.failed,
            files,
        }
    }

    /// The [`ChunkData`], each chunk's bytes copied out of `attached` (the bytes after the
    /// CBOR), which the chunks must name exactly.
    pub fn join(self, attached: &[u8]) -> Result<ChunkData, AttachError> {
        self.check(attached.len())?;
        let mut rest = attached;
        let bodies = self
            .lengths()
            .map(|n| {
                // In range: the lengths were summed and checked against the bytes.
                let (bytes, after) = rest.split_at(n);
                rest = after;
                bytes.to_vec()
            })
            .collect();
        Ok(self.fill(bodies))
    }
}

#[cfg(test)]
mod tests {
    use ferry_engine::{EntryKind, RelPath};

    use super::*;

    fn data() -> ChunkData {
        let a = vec![1u8; 300];
        let b = b"second".to_vec();
        ChunkData {
            folder: FolderId::new("docs").unwrap(),
            chunks: vec![
                ChunkPayload {
                    id: ChunkId::of(&a),
                    body: ChunkBody::Bytes(a),
                },
                ChunkPayload {
                    id: ChunkId::of(&[0; 9]),
                    body: ChunkBody::Zeros(9),
                },
                ChunkPayload {
                    id: ChunkId::of(&b),
                    body: ChunkBody::Bytes(b),
                },
            ],
            failed: vec![ChunkFailure {
                id: ChunkId::of(b"gone"),
                path: RelPath::new("a/b").unwrap(),
                reason: "vanished".into(),
            }],
            files: vec![InlineFile {
                entry: FileEntry {
                    size: 4 + 9 + 6,
                    ..FileEntry::new(RelPath::new("whole").unwrap(), EntryKind::File)
                },
                pieces: vec![
                    InlinePiece::New(ChunkBody::Bytes(b"file".to_vec())),
                    InlinePiece::New(ChunkBody::Zeros(9)),
                    InlinePiece::Sent(ChunkRef {
                        id: ChunkId::of(b"second"),
                        len: 6,
                    }),
                ],
            }],
        }
    }

    /// `data` through CBOR and back, with `attached` as the bytes after the CBOR.
    fn through_cbor(data: &ChunkData, attached: &[u8]) -> Result<ChunkData, AttachError> {
        let (head, _) = ChunksOut::split(data);
        let mut cbor = Vec::new();
        ciborium::into_writer(&head, &mut cbor).unwrap();
        let back: ChunksIn = ciborium::from_reader(&cbor[..]).unwrap();
        back.join(attached)
    }

    #[test]
    fn split_and_join_round_trip() {
        let data = data();
        let (_, attached) = ChunksOut::split(&data);
        assert_eq!(
            attached,
            vec![&[1u8; 300][..], &b"second"[..], &b"file"[..]]
        );
        let bytes = attached.concat();
        let back = through_cbor(&data, &bytes).unwrap();
        assert_eq!(back.folder, data.folder);
        assert_eq!(back.chunks, data.chunks);
        assert_eq!(back.failed, data.failed);
        assert_eq!(back.files, data.files);
    }

    #[test]
    fn attached_bytes_must_match_what_the_chunks_name() {
        let data = data();
        let bytes = ChunksOut::split(&data).1.concat();
        assert_eq!(
            through_cbor(&data, &bytes[..bytes.len() - 1]).unwrap_err(),
            AttachError::Short {
                named: 310,
                attached: 309
            }
        );
        let mut more = bytes.clone();
        more.extend_from_slice(b"xyz");
        assert_eq!(
            through_cbor(&data, &more).unwrap_err(),
            AttachError::Extra(3)
        );
    }

    #[test]
    fn lengths_that_overflow_are_short_not_a_panic() {
        let head = ChunksIn {
            folder: FolderId::new("docs").unwrap(),
            chunks: (0..3)
                .map(|i| PayloadIn {
                    id: ChunkId::of(&[i]),
                    body: WireBody::Attached(u32::MAX),
                })
                .collect(),
            failed: vec![],
            files: vec![],
        };
        assert!(matches!(
            head.join(&[0; 16]),
            Err(AttachError::Short { named, attached: 16 }) if named == 3 * u64::from(u32::MAX)
        ));
    }
}
