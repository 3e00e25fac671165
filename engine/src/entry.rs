//! `FileEntry`: what a folder knows about one path (kind, metadata, content, sequence, deletion).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chunk::Content;
use crate::relpath::RelPath;

/// A per-folder, monotonically increasing change counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl Seq {
    /// The next sequence number.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// What kind of entry a path names. Special files (fifos, sockets, devices) are never entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, replicated as a link and never followed.
    Symlink,
}

/// Whether the entry exists, was deleted, or could not be read at the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryState {
    /// The entry exists.
    Present,
    /// A tombstone: the entry was deleted (deletions travel as data).
    Deleted,
    /// The source could not read it; targets leave whatever they hold at this path alone.
    Unreadable,
}

/// A version vector (node id → counter), carried so that two-way sync can come later
/// without a format break. One-way replication leaves it empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<String, u64>);

/// Modification time in nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MtimeNs(pub i64);

/// Everything a folder knows about one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where the entry lives in its folder.
    pub path: RelPath,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Present, deleted or unreadable.
    pub state: EntryState,
    /// Size in bytes (files); 0 for other kinds.
    pub size: u64,
    /// Modification time.
    pub mtime: MtimeNs,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// For files, the chunk list once the file has been hashed; `None` until then.
    pub content: Option<Content>,
    /// For symlinks, the link target.
    pub symlink_target: Option<String>,
    /// The folder sequence number at which this state was recorded.
    pub seq: Seq,
    /// Causality for future two-way sync.
    pub version: VersionVector,
}

impl FileEntry {
    /// A present entry of `kind` at `path` with nothing else known yet: empty, mode 0, mtime
    /// 0, no content or link target, sequence 0. Fill in what is known with struct update
    /// syntax.
    pub fn new(path: RelPath, kind: EntryKind) -> FileEntry {
        FileEntry {
            path,
            kind,
            state: EntryState::Present,
            size: 0,
            mtime: MtimeNs(0),
            mode: 0,
            content: None,
            symlink_target: None,
            seq: Seq::default(),
            version: VersionVector::default(),
        }
    }

    /// True for an entry that exists at the source.
    pub fn is_present(&self) -> bool {
        self.state == EntryState::Present
    }

    /// True when size and mtime agree: rsync's quick check for "unchanged".
    pub fn quick_equal(&self, other: &FileEntry) -> bool {
        self.size == other.size && self.mtime == other.mtime
    }
}
