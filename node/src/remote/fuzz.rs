//! Inputs for fuzzing the frame decoder: small realistic frames of every kind, mutations of
//! their encodings, and a deterministic stream of cases shared by the codec's property
//! tests and the `fuzz_frames` binary.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use ferry_actors::messages::{
    Applied, ApplyFailed, ChunkBody, ChunkData, ChunkFailure, ChunkList, ChunkPayload,
    ChunkRequest, GroupData, GroupList, IndexDelta, InlineFile, InlinePiece, ListForm, NeedChunks,
    NeedContent, NeedGroups, SkippedPath,
};
use ferry_actors::FolderId;
use ferry_engine::outline::outline;
use ferry_engine::patch::{ContentPatch, Splice};
use ferry_engine::{
    Action, ChunkId, ChunkParams, ChunkRef, Content, EntryKind, EntryState, FileEntry, MtimeNs,
    Plan, RelPath, Seq, VersionVector,
};

use super::codec::{encode, read_frame, FrameError};
use super::protocol::{Frame, Hello, IndexPart, Open, Opened, Refusal, MAX_FRAME};

/// One change to an encoded frame. Positions are taken modulo the input's length, so any
/// value applies to any input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Flip one bit.
    FlipBit {
        /// The byte.
        at: usize,
        /// The bit (0-7).
        bit: u8,
    },
    /// Overwrite one byte.
    SetByte {
        /// The byte.
        at: usize,
        /// Its new value.
        byte: u8,
    },
    /// Cut the input short.
    Truncate {
        /// The new length.
        at: usize,
    },
    /// Insert bytes.
    Insert {
        /// Where.
        at: usize,
        /// What.
        bytes: Vec<u8>,
    },
    /// Remove a range.
    Delete {
        /// Its start.
        at: usize,
        /// Its length (cut at the end of the input).
        len: usize,
    },
    /// Repeat a range right after itself.
    Duplicate {
        /// Its start.
        at: usize,
        /// Its length (cut at the end of the input).
        len: usize,
    },
    /// Replace the length prefix.
    SetPrefix {
        /// The announced length.
        len: u32,
    },
    /// Add to the length prefix (wrapping).
    ShiftPrefix {
        /// How much.
        by: i64,
    },
}

impl Mutation {
    /// Applies the change to `bytes` (a change that needs bytes does nothing to an empty
    /// input).
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let n = bytes.len();
        match self {
            Mutation::FlipBit { at, bit } if n > 0 => bytes[at % n] ^= 1 << (bit % 8),
            Mutation::SetByte { at, byte } if n > 0 => bytes[at % n] = *byte,
            Mutation::Truncate { at } => bytes.truncate(at % (n + 1)),
            Mutation::Insert { at, bytes: new } => {
                let at = at % (n + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, len } if n > 0 => {
                let at = at % n;
                bytes.drain(at..at.saturating_add(*len).min(n));
            }
            Mutation::Duplicate { at, len } if n > 0 => {
                let at = at % n;
                let end = at.saturating_add(*len).min(n);
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::SetPrefix { len } => set_prefix(bytes, *len),
            Mutation::ShiftPrefix { by } => {
                let old = prefix(bytes);
                // Wrapping to 32 bits is the point: it reaches lengths near 0 and 2^32.
                set_prefix(bytes, (i64::from(old) + by) as u32);
            }
            _ => {}
        }
    }

    /// A random mutation.
    fn random(rng: &mut StdRng) -> Self {
        let at = rng.random::<u32>() as usize;
        match rng.random_range(0..8) {
            0 => Mutation::FlipBit {
                at,
                bit: rng.random_range(0..8),
            },
            1 => Mutation::SetByte {
                at,
                byte: if rng.random_bool(0.5) {
                    // Bytes that change CBOR structure: lengths that follow in 1-8 bytes,
                    // indefinite lengths, breaks, tags, arrays, maps.
                    const STRUCTURAL: [u8; 12] = [
                        0x00, 0x18, 0x1b, 0x5b, 0x5f, 0x7b, 0x7f, 0x9b, 0x9f, 0xbf, 0xc6, 0xff,
                    ];
                    STRUCTURAL[rng.random_range(0..STRUCTURAL.len())]
                } else {
                    rng.random()
                },
            },
            2 => Mutation::Truncate { at },
            3 => {
                let len = rng.random_range(1..16);
                Mutation::Insert {
                    at,
                    bytes: (0..len).map(|_| rng.random()).collect(),
                }
            }
            4 => Mutation::Delete {
                at,
                len: rng.random_range(1..32),
            },
            5 => Mutation::Duplicate {
                at,
                len: rng.random_range(1..32),
            },
            6 => Mutation::SetPrefix {
                len: match rng.random_range(0..4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => MAX_FRAME as u32 + 1,
                    _ => rng.random(),
                },
            },
            _ => Mutation::ShiftPrefix {
                by: rng.random_range(-8..8),
            },
        }
    }
}

/// The length prefix of `bytes` (missing bytes read as zero).
fn prefix(bytes: &[u8]) -> u32 {
    let mut p = [0u8; 4];
    for (d, s) in p.iter_mut().zip(bytes) {
        *d = *s;
    }
    u32::from_be_bytes(p)
}

/// Sets the length prefix of `bytes`, growing a shorter input to four bytes.
fn set_prefix(bytes: &mut Vec<u8>, len: u32) {
    if bytes.len() < 4 {
        bytes.resize(4, 0);
    }
    bytes[..4].copy_from_slice(&len.to_be_bytes());
}

/// A small, realistic frame of every kind (some kinds more than once).
pub fn sample_frames() -> Vec<Frame> {
    // Every name below is a valid constant, so building them cannot fail.
    let folder = FolderId::new("docs").expect("a valid folder id");
    let path = |s: &str| RelPath::new(s).expect("a valid constant path");
    let params = ChunkParams::default();
    let refs: Vec<ChunkRef> = (0u32..3)
        .map(|i| ChunkRef {
            id: ChunkId::of(&i.to_le_bytes()),
            len: 8192 + i,
        })
        .collect();
    let content = Content::from_chunks(&params, refs.clone());
    let file = FileEntry {
        path: path("src/main.rs"),
        kind: EntryKind::File,
        state: EntryState::Present,
        size: content.len(),
        mtime: MtimeNs(1_700_000_000_123_456_789),
        mode: 0o644,
        content: Some(content.clone()),
        symlink_target: None,
        seq: Seq(41),
        version: VersionVector::default(),
    };
    let entries = vec![
        FileEntry {
            path: path("src"),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            content: None,
            ..file.clone()
        },
        file.clone(),
        FileEntry {
            path: path("big.bin"),
            content: None,
            ..file.clone()
        },
        FileEntry {
            path: path("link"),
            kind: EntryKind::Symlink,
            size: 0,
            content: None,
            symlink_target: Some("src/main.rs".into()),
            ..file.clone()
        },
        FileEntry {
            path: path("gone.txt"),
            state: EntryState::Deleted,
            content: None,
            seq: Seq(42),
            ..file.clone()
        },
    ];
    let lists = vec![
        ChunkList {
            path: path("big.bin"),
            id: content.id,
            form: ListForm::Patch(ContentPatch {
                base: content.id,
                splices: vec![Splice {
                    at: 1,
                    remove: 1,
                    insert: refs[..1].to_vec(),
                }],
            }),
        },
        ChunkList {
            path: path("big.bin"),
            id: content.id,
            form: ListForm::Outline(outline(&content)),
        },
    ];
    let group = outline(&content).groups.first().map(|g| g.id);
    let delta = IndexDelta {
        folder: folder.clone(),
        snapshot: true,
        content_reply: false,
        entries,
        lists,
        upto: Seq(42),
    };
    vec![
        Frame::Hello(Hello::ours()),
        Frame::Open(Open {
            folder: folder.clone(),
            epoch: 0x1234_5678_9abc_def0,
            params,
            checksum: false,
            dry_run: true,
            ignore: vec!["*.tmp".into(), "!keep.tmp".into(), "/build/".into()],
        }),
        Frame::Opened(Opened {
            folder: folder.clone(),
            applied: Seq(40),
        }),
        Frame::Index(IndexPart {
            delta: delta.clone(),
            more: true,
        }),
        Frame::Index(IndexPart {
            delta: IndexDelta {
                entries: vec![],
                lists: vec![],
                ..delta
            },
            more: false,
        }),
        Frame::Chunks(ChunkData {
            folder: folder.clone(),
            chunks: vec![
                ChunkPayload {
                    id: ChunkId::of(b"hello, world\n"),
                    body: ChunkBody::Bytes(b"hello, world\n".to_vec()),
                },
                ChunkPayload {
                    id: ChunkId::of(&[0; 4096]),
                    body: ChunkBody::Zeros(4096),
                },
            ],
            failed: vec![ChunkFailure {
                id: refs[2].id,
                path: path("src/main.rs"),
                reason: "the file changed while it was read".into(),
            }],
            files: vec![],
        }),
        Frame::Chunks(ChunkData {
            folder: folder.clone(),
            chunks: vec![],
            failed: vec![],
            files: vec![InlineFile {
                entry: FileEntry {
                    path: path("small.txt"),
                    size: 6 + 4096 + 13,
                    content: None,
                    ..file.clone()
                },
                pieces: vec![
                    InlinePiece::New(ChunkBody::Bytes(b"small\n".to_vec())),
                    InlinePiece::New(ChunkBody::Zeros(4096)),
                    InlinePiece::Sent(ChunkRef {
                        id: ChunkId::of(b"hello, world\n"),
                        len: 13,
                    }),
                ],
            }],
        }),
        // Larger than the part of a frame read before its head is decoded: its chunks are
        // read after the head, straight from the connection.
        Frame::Chunks(ChunkData {
            folder: folder.clone(),
            chunks: [70_000usize, 20_000]
                .into_iter()
                .map(|len| {
                    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    ChunkPayload {
                        id: ChunkId::of(&bytes),
                        body: ChunkBody::Bytes(bytes),
                    }
                })
                .collect(),
            failed: vec![],
            files: vec![],
        }),
        Frame::Groups(GroupData {
            folder: folder.clone(),
            path: path("big.bin"),
            id: content.id,
            groups: group
                .map(|id| GroupList {
                    id,
                    chunks: refs.clone(),
                })
                .into_iter()
                .collect(),
            stale: false,
        }),
        Frame::NeedContent(NeedContent {
            folder: folder.clone(),
            paths: vec![path("src/main.rs"), path("big.bin")],
            inline: true,
        }),
        Frame::NeedChunks(NeedChunks {
            folder: folder.clone(),
            chunks: vec![ChunkRequest {
                id: refs[1].id,
                path: path("src/main.rs"),
                offset: 8192,
                len: 8193,
            }],
        }),
        Frame::NeedGroups(NeedGroups {
            folder: folder.clone(),
            path: path("big.bin"),
            id: content.id,
            groups: group.into_iter().collect(),
        }),
        Frame::Applied(Applied {
            counts: Default::default(),
            folder: folder.clone(),
            seq: Seq(42),
            skipped: vec![SkippedPath {
                path: "locked.db".into(),
                reason: "permission denied".into(),
            }],
            dry_run_plan: Some(Plan {
                actions: vec![
                    Action::MakeDir { path: path("src") },
                    Action::WriteFile {
                        entry: file.clone(),
                        base: Some(content),
                        replaces: true,
                    },
                    Action::Remove {
                        path: path("old"),
                        kind: EntryKind::File,
                    },
                ],
            }),
        }),
        Frame::Applied(Applied {
            counts: Default::default(),
            folder: folder.clone(),
            seq: Seq(43),
            skipped: vec![],
            dry_run_plan: None,
        }),
        Frame::ApplyFailed(ApplyFailed {
            folder,
            reason: "the target folder is gone".into(),
        }),
        Frame::Ping(7),
        Frame::Pong(7),
        Frame::Refused(Refusal {
            permanent: true,
            reason: "folder \"docs\" is not shared".into(),
        }),
    ]
}

/// The body of a `Hello` frame with an extra field nested `depth + 1` arrays deep: the field
/// is unknown, so serde skips it by following its structure, however deep.
pub fn deeply_nested(depth: usize) -> Vec<u8> {
    let mut body = vec![0xa1, 0x65];
    body.extend_from_slice(b"Hello");
    body.push(0xa3);
    body.push(0x67);
    body.extend_from_slice(b"version");
    body.push(0x01);
    body.push(0x68);
    body.extend_from_slice(b"software");
    body.push(0x61);
    body.push(b'x');
    body.push(0x64);
    body.extend_from_slice(b"junk");
    body.extend(std::iter::repeat_n(0x81, depth));
    body.push(0x80);
    body
}

/// `n` inputs as a peer might send them, deterministic in `seed`: random bytes (some behind
/// a matching length prefix), hostile CBOR (deep nesting, huge announced lengths) and
/// encodings of [`sample_frames`] with one to four [`Mutation`]s.
pub fn mutated_cases(seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let valid: Vec<Vec<u8>> = sample_frames()
        .iter()
        .filter_map(|f| encode(f).ok())
        .collect();
    (0..n).map(move |_| {
        let pick = rng.random_range(0..100);
        if pick < 15 || valid.is_empty() {
            let len: usize = rng.random_range(0..300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) {
                set_prefix(&mut bytes, len.saturating_sub(4) as u32);
            }
            bytes
        } else if pick < 20 {
            hostile(&mut rng)
        } else {
            let mut bytes = valid[rng.random_range(0..valid.len())].clone();
            if rng.random_bool(0.2) {
                // Two frames back to back, so that damage can cross a frame boundary.
                bytes.extend_from_slice(&valid[rng.random_range(0..valid.len())]);
            }
            for _ in 0..rng.random_range(1..=4) {
                Mutation::random(&mut rng).apply(&mut bytes);
            }
            bytes
        }
    })
}

/// CBOR crafted to make a naive decoder allocate or recurse without bound, behind a
/// matching length prefix.
fn hostile(rng: &mut StdRng) -> Vec<u8> {
    let body = match rng.random_range(0..5) {
        0 => deeply_nested(rng.random_range(0..2000)),
        // A map whose key is a byte string claiming 2^64 - 1 bytes.
        1 => vec![0xa1, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        // {"NeedContent": {"folder": "d", "paths": <array of 2^32 - 1 items>}}
        2 => {
            let mut b = vec![0xa1, 0x6b];
            b.extend_from_slice(b"NeedContent");
            b.extend_from_slice(&[0xa2, 0x66]);
            b.extend_from_slice(b"folder");
            b.extend_from_slice(&[0x61, b'd', 0x65]);
            b.extend_from_slice(b"paths");
            b.extend_from_slice(&[0x9a, 0xff, 0xff, 0xff, 0xff, 0x61, b'a']);
            b
        }
        // Indefinite-length arrays and maps opened and never closed.
        3 => (0..rng.random_range(1..500))
            .map(|_| if rng.random_bool(0.5) { 0x9f } else { 0xbf })
            .collect(),
        // A long run of tags before a value.
        _ => {
            let mut b = vec![0xc6; rng.random_range(1..5000)];
            b.push(0x01);
            b
        }
    };
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// Reads frames from `bytes` until the end or the first error, as a connection would; the
/// frames read, then how the reading ended (`None`: a clean end).
pub async fn read_all_frames(bytes: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    let mut r = bytes;
    let mut frames = Vec::new();
    loop {
        match read_frame(&mut r, MAX_FRAME).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_deterministic_in_the_seed() {
        let a: Vec<_> = mutated_cases(5, 200).collect();
        let b: Vec<_> = mutated_cases(5, 200).collect();
        let c: Vec<_> = mutated_cases(6, 200).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn mutations_apply_to_any_input() {
        let all = [
            Mutation::FlipBit { at: 9, bit: 3 },
            Mutation::SetByte { at: 9, byte: 0xff },
            Mutation::Truncate { at: 9 },
            Mutation::Insert {
                at: 9,
                bytes: vec![1, 2],
            },
            Mutation::Delete { at: 9, len: 9 },
            Mutation::Duplicate { at: 9, len: 9 },
            Mutation::SetPrefix { len: 9 },
            Mutation::ShiftPrefix { by: -9 },
        ];
        for m in &all {
            for len in 0..6 {
                let mut bytes = vec![0xaa; len];
                m.apply(&mut bytes);
            }
        }
        let mut b = vec![0, 0, 0, 5];
        Mutation::ShiftPrefix { by: -6 }.apply(&mut b);
        assert_eq!(b, u32::MAX.to_be_bytes());
    }
}
