//! `Plan`: the ordered actions that turn a target into a mirror of a source, as plain data.

use serde::{Deserialize, Serialize};

use crate::chunk::Content;
use crate::entry::{EntryKind, FileEntry, MtimeNs};
use crate::relpath::RelPath;

/// One step of a plan. The order of a plan's actions is part of its meaning:
/// things in the way are cleared, directories created top-down, renames done, files written,
/// extraneous entries removed bottom-up, and directory metadata set last, bottom-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Remove what is at `path` (with its subtree if a directory) because the source needs
    /// another kind of entry there.
    Clear {
        /// The path to clear.
        path: RelPath,
        /// What the target holds there.
        found: EntryKind,
    },
    /// Create a directory (its metadata is set by a later [`Action::SetDirMeta`]).
    MakeDir {
        /// The directory to create.
        path: RelPath,
    },
    /// Move a target file whose content equals a new source file into place instead of
    /// sending it again, then give it the source's metadata.
    Rename {
        /// The target file that is no longer wanted under its old name.
        from: RelPath,
        /// The source entry it becomes.
        entry: FileEntry,
        /// The target file as the target index knows it: renamed only if it still is.
        seen: Seen,
    },
    /// Write a file's content under a temp name and rename it over the final name.
    WriteFile {
        /// The source entry, with its content.
        entry: FileEntry,
        /// The content the target holds at this path now, whose chunks can be reused.
        base: Option<Content>,
        /// True when something was at the path before.
        replaces: bool,
    },
    /// Create or replace a symlink.
    Symlink {
        /// The source entry, with its link target.
        entry: FileEntry,
        /// True when something was at the path before.
        replaces: bool,
    },
    /// Set mode and mtime of a file or symlink whose content already matches.
    SetMeta {
        /// The source entry.
        entry: FileEntry,
        /// For a file, the target file as the target index knows it: updated only if it
        /// still is (its content was judged equal by what the index knows).
        seen: Option<Seen>,
    },
    /// Remove an extraneous entry (a directory is empty by then: its children come first).
    Remove {
        /// The path to remove.
        path: RelPath,
        /// Its kind in the target.
        kind: EntryKind,
    },
    /// Set a directory's mode and mtime if they differ at apply time.
    SetDirMeta {
        /// The directory.
        path: RelPath,
        /// Permission bits.
        mode: u32,
        /// Modification time.
        mtime: MtimeNs,
        /// True when the metadata differed when the plan was made (as opposed to a directory
        /// revisited only because its children change).
        differs: bool,
    },
}

/// How an action shows up in `--dry-run` and the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A new entry.
    Created,
    /// New content (or a new kind) at an existing path.
    Updated,
    /// Only mode or mtime change.
    Metadata,
    /// An entry removed.
    Removed,
    /// An existing target file moved to a new name.
    Renamed,
}

impl ChangeKind {
    /// The word that names the change in listings and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Metadata => "metadata",
            ChangeKind::Removed => "removed",
            ChangeKind::Renamed => "renamed",
        }
    }
}

impl Plan {
    /// True when the plan removes nothing (no `Remove`, no `Clear`): it only adds, renames
    /// or updates, so it may run before the rest of the source is known, with no risk of
    /// deleting what a later part of the source still needs.
    pub fn is_additive(&self) -> bool {
        !self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. } | Action::Clear { .. }))
    }
}

impl Action {
    /// The path this action changes.
    pub fn path(&self) -> &RelPath {
        match self {
            Action::Clear { path, .. }
            | Action::MakeDir { path }
            | Action::Remove { path, .. }
            | Action::SetDirMeta { path, .. } => path,
            Action::Rename { entry, .. }
            | Action::WriteFile { entry, .. }
            | Action::Symlink { entry, .. }
            | Action::SetMeta { entry, .. } => &entry.path,
        }
    }

    /// Where a renamed file comes from (None for every other action).
    pub fn renamed_from(&self) -> Option<&RelPath> {
        match self {
            Action::Rename { from, .. } => Some(from),
            _ => None,
        }
    }

    /// How the action is itemised, or `None` for a step that is part of another change
    /// (clearing the way, revisiting a directory whose metadata already matches).
    pub fn change(&self) -> Option<ChangeKind> {
        match self {
            Action::Clear { .. } => None,
            Action::MakeDir { .. } => Some(ChangeKind::Created),
            Action::Rename { .. } => Some(ChangeKind::Renamed),
            Action::WriteFile { replaces, .. } | Action::Symlink { replaces, .. } => {
                Some(if *replaces {
                    ChangeKind::Updated
                } else {
                    ChangeKind::Created
                })
            }
            Action::SetMeta { .. } => Some(ChangeKind::Metadata),
            Action::Remove { .. } => Some(ChangeKind::Removed),
            Action::SetDirMeta { differs, .. } => differs.then_some(ChangeKind::Metadata),
        }
    }
}

/// A target file as the target index last saw it. An action that keeps a file's content (a
/// metadata update, a rename) checks it first: a file changed behind Ferry's back since is
/// read again, never stamped with the source's metadata as if it were a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: MtimeNs,
}

impl Seen {
    /// What `entry` (a target index's entry) says of its file.
    pub fn of(entry: &FileEntry) -> Seen {
        Seen {
            size: entry.size,
            mtime: entry.mtime,
        }
    }
}

/// A plan: the actions in the order they must be applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The actions, in order.
    pub actions: Vec<Action>,
}

impl Plan {
    /// True when the target already mirrors the source.
    pub fn is_noop(&self) -> bool {
        self.actions
            .iter()
            .all(|a| a.change().is_none() && !matches!(a, Action::Clear { .. }))
    }

    /// Each itemised change with its path, in plan order.
    pub fn itemize(&self) -> impl Iterator<Item = (ChangeKind, &RelPath)> {
        self.actions
            .iter()
            .filter_map(|a| a.change().map(|c| (c, a.path())))
    }
}
