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

/// A time step in ns, as people write it: `100 ns`, `1 µs`, `1 ms`, `2 s`.
pub fn show_step(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 && n % 1_000_000_000 == 0 => format!("{} s", n / 1_000_000_000),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{} ms", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{} µs", n / 1_000),
        n => format!("{n} ns"),
    }
}

impl MtimeNs {
    /// True when `kept` is this time as a file system keeping times in steps of `step` ns
    /// stores it: equal, or this time cut down to its step (0: exact). A target that keeps
    /// file times coarser than a nanosecond (one second on ext4 with small inodes, two on
    /// FAT) stores the source's mtime so, and that copy is not a change; any other time,
    /// even one step away, is.
    pub fn kept_as(self, kept: MtimeNs, step: u64) -> bool {
        self == kept
            || i64::try_from(step)
                .ok()
                .filter(|&s| s > 0)
                .and_then(|s| self.0.checked_sub(self.0.rem_euclid(s)))
                .is_some_and(|cut| kept.0 == cut)
    }
}

/// Everything a folder knows about one path. Serialised as named fields in JSON and as a
/// compact array in CBOR (`entry_form`).
#[derive(Clone, Debug, PartialEq, Eq)]
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

    /// True when size and mtime agree (`other`'s mtime is this one as kept in steps of
    /// `step` ns, see [`MtimeNs::kept_as`]): rsync's quick check for "unchanged".
    pub fn quick_equal(&self, other: &FileEntry, step: u64) -> bool {
        self.size == other.size && self.mtime.kept_as(other.mtime, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_kept_as_itself_or_cut_down_to_the_step_only() {
        const SEC: i64 = 1_000_000_000;
        let t = MtimeNs(10 * SEC + 900_000_000);
        assert!(t.kept_as(t, 0) && t.kept_as(t, SEC as u64));
        assert!(!t.kept_as(MtimeNs(10 * SEC), 0), "no step: exact");
        assert!(t.kept_as(MtimeNs(10 * SEC), SEC as u64));
        // Not the step above, nor the one below, nor anything between.
        assert!(!t.kept_as(MtimeNs(11 * SEC), SEC as u64));
        assert!(!t.kept_as(MtimeNs(9 * SEC), SEC as u64));
        assert!(!t.kept_as(MtimeNs(10 * SEC + 1), SEC as u64));
        // FAT's two seconds; and times before 1970 cut down too.
        assert!(t.kept_as(MtimeNs(10 * SEC), 2 * SEC as u64));
        assert!(MtimeNs(11 * SEC).kept_as(MtimeNs(10 * SEC), 2 * SEC as u64));
        assert!(MtimeNs(-SEC / 2).kept_as(MtimeNs(-SEC), SEC as u64));
        // At the bounds of the type, and a step too large for it.
        assert!(MtimeNs(i64::MIN).kept_as(MtimeNs(i64::MIN), 5));
        assert!(
            !MtimeNs(i64::MIN + 1).kept_as(MtimeNs(0), 10),
            "no overflow below"
        );
        assert!(MtimeNs(i64::MAX).kept_as(MtimeNs(i64::MAX - 7), 10));
        assert!(!MtimeNs(5).kept_as(MtimeNs(0), u64::MAX));
    }

    #[test]
    fn steps_are_shown_in_their_unit() {
        let shown = [100, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000].map(show_step);
        assert_eq!(shown, ["100 ns", "1 µs", "1 ms", "1 s", "2 s"]);
    }
}
