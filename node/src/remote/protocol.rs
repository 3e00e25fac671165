//! The wire protocol: every frame two nodes exchange, versioned, carrying the same typed
//! messages the in-process pipeline uses.
//!
//! A connection serves one folder. After the TLS handshake the client sends
//! [`Frame::Hello`], the server answers with its own; the client then sends
//! [`Frame::Open`], the server answers [`Frame::Opened`] (or [`Frame::Refused`] and closes).
//! From there the client carries the Sender's messages and the server the Applier's.

use ferry_actors::messages::{
    Applied, ApplyFailed, ChunkData, GroupData, IndexDelta, NeedChunks, NeedContent, NeedGroups,
};
use ferry_actors::FolderId;
use ferry_engine::{ChunkParams, Seq};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; a peer speaking another is refused.
/// Version 2 added `Open::ignore`: a version-1 server would ignore the field and delete the
/// target's ignored entries as extraneous. Version 3 moved chunk bytes out of the CBOR of a
/// `Chunks` frame to after it (see [`super::attached`]). Version 4 cuts fewer than `max`
/// bytes left in a file as one chunk ([`ferry_engine::chunk::cut_at`]): to a version-3 peer
/// the chunk lists of files of 8 KiB to 128 KiB, and the ends of longer ones, would differ.
/// Version 5 sends the small files of an inline content request whole, their chunks named
/// by the receiver (`ChunkData::files`), instead of as named chunks with a chunk list: a
/// version-4 server would take them for chunks sent unasked. Version 6 writes each entry
/// as an array, not a map of named fields (`ferry_engine::FileEntry`'s CBOR form).
pub const PROTOCOL_VERSION: u32 = 6;

/// The largest frame either side sends or accepts, in bytes of CBOR (a chunk batch is at
/// most 4 MiB plus one chunk of at most 16 MiB; index updates are split to stay below).
pub const MAX_FRAME: usize = 32 << 20;

/// The largest `Hello` either side accepts.
pub const MAX_GREETING: usize = 64 << 10;

/// The largest `Open` a server accepts (it carries the folder's ignore patterns).
pub const MAX_OPEN: usize = 1 << 20;

/// Index updates are split into parts of about this many bytes.
pub const INDEX_PART_BYTES: usize = 4 << 20;

/// The first frame each side sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL_VERSION`] of the sender's build.
    pub version: u32,
    /// The software and its version, for logs (e.g. `ferry 0.1.0`).
    pub software: String,
}

impl Hello {
    /// This build's greeting.
    pub fn ours() -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            software: format!("ferry {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Client → server: open a folder to replicate into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The folder name the server shares.
    pub folder: FolderId,
    /// Identifies the client's source index (a new one per process): sequence numbers
    /// from one epoch mean nothing in another.
    pub epoch: u64,
    /// The chunker parameters of the source (the target chunks its files the same way).
    pub params: ChunkParams,
    /// Compare content even when size and mtime agree.
    pub checksum: bool,
    /// Plan only: the target reports what would change and writes nothing.
    pub dry_run: bool,
    /// The folder's ignore rules, as gitignore lines (`IgnoreRules::patterns`): the target
    /// leaves the entries they match alone.
    pub ignore: Vec<String>,
}

/// Server → client: the folder is open; the target holds every change up to `applied` of
/// the client's epoch (zero: send a full snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    /// The folder.
    pub folder: FolderId,
    /// The last sequence of this epoch the target applied.
    pub applied: Seq,
}

/// One part of an index update too large for one frame; parts are joined until `more`
/// is false, then delivered as one [`IndexDelta`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexPart {
    /// This part's entries and lists (flags and `upto` as in the whole update).
    pub delta: IndexDelta,
    /// Further parts follow.
    pub more: bool,
}

/// Why a side refuses to go on; the connection closes after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Whether retrying the same request can succeed (a busy folder) or not (a folder not
    /// shared, a version mismatch).
    pub permanent: bool,
    /// What went wrong, for the other side's log.
    pub reason: String,
}

/// Every frame. `C` is how a `Chunks` frame's content is held: [`ChunkData`] everywhere
/// but inside the codec, which sends and reads it in its wire form
/// ([`super::attached`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Frame<C = ChunkData> {
    /// Both ways, first.
    Hello(Hello),
    /// Client → server, second.
    Open(Open),
    /// Server → client, the answer to `Open`.
    Opened(Opened),
    /// Client → server: (part of) an index update.
    Index(IndexPart),
    /// Client → server: chunk data.
    Chunks(C),
    /// Client → server: groups of an outlined chunk list.
    Groups(GroupData),
    /// Server → client: chunk lists wanted.
    NeedContent(NeedContent),
    /// Server → client: chunks wanted.
    NeedChunks(NeedChunks),
    /// Server → client: outline groups wanted.
    NeedGroups(NeedGroups),
    /// Server → client: the target mirrors the source up to a sequence.
    Applied(Applied),
    /// Server → client: the target cannot go on.
    ApplyFailed(ApplyFailed),
    /// Either way: are you there? Answered with `Pong` carrying the same number.
    Ping(u64),
    /// The answer to `Ping`.
    Pong(u64),
    /// Either way: a refusal, then the connection closes.
    Refused(Refusal),
}

impl<C> Frame<C> {
    /// The same frame with a `Chunks` frame's content replaced by `f`'s result.
    pub fn try_map_chunks<D, E>(self, f: impl FnOnce(C) -> Result<D, E>) -> Result<Frame<D>, E> {
        Ok(match self {
            Frame::Chunks(c) => Frame::Chunks(f(c)?),
            Frame::Hello(m) => Frame::Hello(m),
            Frame::Open(m) => Frame::Open(m),
            Frame::Opened(m) => Frame::Opened(m),
            Frame::Index(m) => Frame::Index(m),
            Frame::Groups(m) => Frame::Groups(m),
            Frame::NeedContent(m) => Frame::NeedContent(m),
            Frame::NeedChunks(m) => Frame::NeedChunks(m),
            Frame::NeedGroups(m) => Frame::NeedGroups(m),
            Frame::Applied(m) => Frame::Applied(m),
            Frame::ApplyFailed(m) => Frame::ApplyFailed(m),
            Frame::Ping(n) => Frame::Ping(n),
            Frame::Pong(n) => Frame::Pong(n),
            Frame::Refused(m) => Frame::Refused(m),
        })
    }

    /// The frame's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Open(_) => "Open",
            Frame::Opened(_) => "Opened",
            Frame::Index(_) => "Index",
            Frame::Chunks(_) => "Chunks",
            Frame::Groups(_) => "Groups",
            Frame::NeedContent(_) => "NeedContent",
            Frame::NeedChunks(_) => "NeedChunks",
            Frame::NeedGroups(_) => "NeedGroups",
            Frame::Applied(_) => "Applied",
            Frame::ApplyFailed(_) => "ApplyFailed",
            Frame::Ping(_) => "Ping",
            Frame::Pong(_) => "Pong",
            Frame::Refused(_) => "Refused",
        }
    }
}
