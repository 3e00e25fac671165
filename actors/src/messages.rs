//! Every message the pipeline's actors exchange, as plain data (the same types cross the
//! network later, so they are serde-serialisable and carry no handles).

use std::fmt;

use actix::Message;
use std::collections::HashMap;

use ferry_engine::outline::{GroupId, Outline};
use ferry_engine::patch::ContentPatch;
use ferry_engine::{
    ChunkId, ChunkRef, Content, ContentId, FileEntry, Plan, PrintedChunk, RelPath, Seq,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A folder's id, shared by its source and its targets (validated when decoded too).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct FolderId(String);

impl TryFrom<String> for FolderId {
    type Error = InvalidFolderId;

    fn try_from(s: String) -> Result<Self, InvalidFolderId> {
        FolderId::new(s)
    }
}

/// Why a text is not a [`FolderId`]; the message names it and says what an id may hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid folder id {id:?}: use 1-64 characters of letters, digits, '.', '_' or '-'")]
pub struct InvalidFolderId {
    /// The text given.
    pub id: String,
}

impl FolderId {
    /// A folder id: non-empty, at most 64 characters of `[A-Za-z0-9._-]`.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidFolderId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(FolderId(s))
        } else {
            Err(InvalidFolderId { id: s })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Watcher → Differ: these paths (and everything below them) may have changed.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Dirty {
    /// The paths, none inside another.
    pub paths: Vec<RelPath>,
    /// Directories an entry appeared in, vanished from or was renamed in: their own
    /// metadata (the mtime) changed, but not the rest of what they hold.
    pub touched: Vec<RelPath>,
    /// Files written to (a modify or close-after-write event): read again even where their
    /// stat says the bytes cannot have changed (a write whose mtime was set back, in the
    /// same batch as a chmod or a rename of the file).
    pub written: Vec<RelPath>,
    /// When the first of these changes was seen.
    pub since: std::time::Instant,
}

/// Watcher (or a timer) → Differ: compare the whole folder with the index.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Rescan {
    /// Why (logged).
    pub reason: String,
}

/// → Differ: the sequence number of the newest change it has emitted, after every change
/// already queued before this message was handled.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Seq")]
pub struct CurrentSeq;

/// → Watcher: hand every pending change to the Differ now (used before shutting down).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct FlushNow;

/// Differ → Sender → Applier: entries of the source index.
///
/// A snapshot lists every source entry (anything else at the target is extraneous);
/// an incremental delta lists only entries that changed, tombstones included.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct IndexDelta {
    /// The folder.
    pub folder: FolderId,
    /// True for a full snapshot.
    pub snapshot: bool,
    /// True when this delta answers a [`NeedContent`] request.
    pub content_reply: bool,
    /// The entries. A large file's chunk list may be left out of its entry and given in
    /// `lists` instead.
    pub entries: Vec<FileEntry>,
    /// Chunk lists sent in a compact form, for entries whose `content` is left out.
    pub lists: Vec<ChunkList>,
    /// The highest sequence number these entries bring the target to.
    pub upto: Seq,
}

/// A file's chunk list in compact form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
    /// The file.
    pub path: RelPath,
    /// The content the list describes (the rebuilt list must have this id).
    pub id: ContentId,
    /// How the list is expressed.
    pub form: ListForm,
}

/// The compact forms of a chunk list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListForm {
    /// Ranges replaced in the list the target was last sent for this path.
    Patch(ContentPatch),
    /// Group ids; the target takes the groups it knows from its own files and asks for the rest.
    Outline(Outline),
}

/// Applier → Sender: the chunk lists of these groups of a file's outline.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct NeedGroups {
    /// The folder.
    pub folder: FolderId,
    /// The file.
    pub path: RelPath,
    /// The content the outline described.
    pub id: ContentId,
    /// The groups the Applier does not know.
    pub groups: Vec<GroupId>,
}

/// One group's chunk list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    /// The group.
    pub id: GroupId,
    /// Its chunks.
    pub chunks: Vec<ChunkRef>,
}

/// Sender → Applier: the groups asked for, or `stale` when the file changed since.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct GroupData {
    /// The folder.
    pub folder: FolderId,
    /// The file.
    pub path: RelPath,
    /// The content the groups belong to.
    pub id: ContentId,
    /// The groups.
    pub groups: Vec<GroupList>,
    /// The source no longer has that content: ask for the file's content again.
    pub stale: bool,
}

/// Sender → Differ: the current chunk list of a file, if known.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Option<Content>")]
pub struct GetContent {
    /// The file.
    pub path: RelPath,
}

/// Applier → Sender: chunk lists are needed for these source files before a plan can be made.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct NeedContent {
    /// The folder.
    pub folder: FolderId,
    /// The files to hash.
    pub paths: Vec<RelPath>,
    /// Send the small files whole, unasked and unnamed ([`ChunkData::files`]): the target
    /// holds no file content at all, so it has nothing to reuse and would ask for every
    /// chunk. Saves the Sender reading each file twice, a round trip per file, and naming
    /// chunks that the Applier hashes anyway to check them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
}

/// One chunk the Applier asks for, with where the sender's index says it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The chunk's id.
    pub id: ChunkId,
    /// A source file holding it.
    pub path: RelPath,
    /// Its offset in that file.
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// Applier → Sender: send these chunks.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct NeedChunks {
    /// The folder.
    pub folder: FolderId,
    /// The chunks, in the order the Applier would like them.
    pub chunks: Vec<ChunkRequest>,
}

/// A chunk's bytes as they travel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkBody {
    /// The bytes themselves.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// This many zero bytes (a run of zeros travels as its length).
    Zeros(u32),
}

impl ChunkBody {
    /// The body of `data`: a length alone when every byte is zero.
    pub fn of(data: Vec<u8>) -> Self {
        if data.iter().all(|&b| b == 0) {
            ChunkBody::Zeros(data.len() as u32)
        } else {
            ChunkBody::Bytes(data)
        }
    }

    /// The chunk's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            ChunkBody::Bytes(d) => d.len() as u64,
            ChunkBody::Zeros(n) => u64::from(*n),
        }
    }

    /// True for an empty chunk (which never travels: empty files have no chunks).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPayload {
    /// The id the bytes must hash to.
    pub id: ChunkId,
    /// The bytes.
    pub body: ChunkBody,
}

/// A requested chunk the Sender could not supply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkFailure {
    /// The chunk.
    pub id: ChunkId,
    /// The file it was to be read from.
    pub path: RelPath,
    /// Why (the file changed, vanished, became unreadable).
    pub reason: String,
}

/// Sender → Applier: chunk data, and the requests that could not be served.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct ChunkData {
    /// The folder.
    pub folder: FolderId,
    /// Chunks served.
    pub chunks: Vec<ChunkPayload>,
    /// Chunks not served.
    pub failed: Vec<ChunkFailure>,
    /// Files of a [`NeedContent::inline`] request sent whole, before the reply's other
    /// entries: the Applier names their chunks, and keeps them (within a bound) for the
    /// files that need them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InlineFile>,
}

/// A file sent whole ([`ChunkData::files`]): its entry, without content, and its chunks in
/// order, the receiver to name those sent here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineFile {
    /// The file's entry; its content is what the pieces add up to.
    pub entry: FileEntry,
    /// Its chunks, in order.
    pub pieces: Vec<InlinePiece>,
}

/// A chunk of an [`InlineFile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InlinePiece {
    /// Its bytes, for the receiver to name.
    New(ChunkBody),
    /// A chunk sent earlier in the same session (the same bytes as an earlier `New` one),
    /// by its id.
    Sent(ChunkRef),
}

impl InlinePiece {
    /// The chunk's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            InlinePiece::New(body) => body.len(),
            InlinePiece::Sent(c) => u64::from(c.len),
        }
    }

    /// True for an empty chunk (which no file has).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A path the Applier left as it was, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPath {
    /// The path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Applier → Sender: the target now mirrors the source up to `seq`.
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Applied {
    /// The folder.
    pub folder: FolderId,
    /// The sequence applied.
    pub seq: Seq,
    /// Paths that could not be applied this time.
    pub skipped: Vec<SkippedPath>,
    /// With `--dry-run`, the plan that would have been applied.
    pub dry_run_plan: Option<Plan>,
    /// What this Applier has done so far (for a Sender whose Applier is on another node).
    pub counts: ApplyCounts,
}

/// An Applier's running totals, as carried by [`Applied`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyCounts {
    /// Entries created.
    pub created: u64,
    /// Entries whose content or kind was replaced.
    pub updated: u64,
    /// Metadata-only updates.
    pub metadata_only: u64,
    /// Entries removed.
    pub removed: u64,
    /// Files renamed instead of sent.
    pub renamed: u64,
    /// File content bytes written.
    pub bytes_written: u64,
    /// Bytes copied from the target's own files.
    pub bytes_reused: u64,
    /// Chunks copied from the target's own files.
    pub chunks_reused: u64,
    /// Bytes left as holes for zero runs.
    pub bytes_zero: u64,
}

/// Applier → Sender: the target cannot continue (its folder is gone, unwritable, ...).
#[derive(Clone, Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct ApplyFailed {
    /// The folder.
    pub folder: FolderId,
    /// What went wrong.
    pub reason: String,
}

/// Sender → Differ: hash these files and return their entries with chunk lists.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Hashed>")]
pub struct HashFiles {
    /// The files.
    pub paths: Vec<RelPath>,
    /// Files of at most this many bytes are not hashed but read and cut, to be sent whole.
    pub keep: u64,
}

/// Differ → Sender: the answer to [`HashFiles`].
#[derive(Debug, Default)]
pub struct Hashed {
    /// The entries, with their chunk lists (or none: gone, unreadable).
    pub entries: Vec<FileEntry>,
    /// The files small enough, with no content in their entries, and their chunks' bytes
    /// with their prints.
    pub kept: Vec<(FileEntry, Vec<PrintedChunk>)>,
}

/// Differ → Sender: the source index, or changes to it.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct SourceUpdate {
    /// True for a full snapshot.
    pub snapshot: bool,
    /// The entries.
    pub entries: Vec<FileEntry>,
    /// For large files whose content changed, the content they had before (a Sender that
    /// sent that version sends a patch against it).
    pub previous: HashMap<RelPath, Content>,
    /// The highest sequence in the index after this update.
    pub upto: Seq,
}

/// Starts a component's work (the Differ's initial scan, the Applier's target scan).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Start;

/// Any actor → its monitor: this actor cannot go on.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Failed {
    /// The actor's role (`differ`, `sender`, `applier`).
    pub actor: &'static str,
    /// The folder.
    pub folder: FolderId,
    /// What went wrong.
    pub reason: String,
}

/// → any pipeline actor: stop now (the folder is restarting or shutting down).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// → Sender → Differ: the target was reconnected and holds every change up to `after`;
/// send it everything newer (a full snapshot when `after` is zero).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Resend {
    /// The last sequence the target applied.
    pub after: Seq,
}
