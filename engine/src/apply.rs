//! `apply`: carries a `Plan` out on a `TargetDir`, re-checking each action's precondition first.

use crate::assemble::{chunk_tasks, copy_local_chunks, write_verified, ChunkTask};
use crate::entry::{EntryKind, FileEntry};
use crate::error::{Error, Result};
use crate::plan::{Action, Plan};
use crate::relpath::RelPath;
use crate::target::TargetDir;

/// What applying one action did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// True when the action changed anything on disk.
    pub wrote: bool,
    /// File content bytes written.
    pub bytes_written: u64,
    /// Bytes copied from the target's own old versions instead of fetched.
    pub bytes_reused: u64,
    /// Bytes fetched from the source.
    pub bytes_fetched: u64,
}

/// Applies every action of `plan` except [`Action::WriteFile`], which needs chunk data
/// (see [`write_file`]). Checks first that the target is still as the plan expects.
pub fn apply_action(target: &TargetDir, action: &Action) -> Result<Effect> {
    let wrote = Effect {
        wrote: true,
        ..Effect::default()
    };
    match action {
        Action::Clear { path, .. } => {
            if target.stat(path)?.is_some() {
                target.remove_tree(path)?;
                return Ok(wrote);
            }
            Ok(Effect::default())
        }
        Action::MakeDir { path } => {
            target.make_dir(path)?;
            Ok(wrote)
        }
        Action::Rename { from, entry } => {
            expect_kind(target, from, EntryKind::File)?;
            target.rename(from, &entry.path)?;
            target.set_meta(&entry.path, EntryKind::File, entry.mode, entry.mtime)?;
            Ok(wrote)
        }
        Action::Symlink { entry, .. } => {
            let link = entry.symlink_target.as_deref().ok_or_else(|| Error::Precondition {
                path: entry.path.clone(),
                reason: "symlink entry without a target".into(),
            })?;
            target.symlink(&entry.path, link)?;
            target.set_meta(&entry.path, EntryKind::Symlink, entry.mode, entry.mtime)?;
            Ok(wrote)
        }
        Action::SetMeta { entry } => {
            target.set_meta(&entry.path, entry.kind, entry.mode, entry.mtime)?;
            Ok(wrote)
        }
        Action::Remove { path, kind } => {
            target.remove(path, *kind)?;
            Ok(wrote)
        }
        Action::SetDirMeta {
            path, mode, mtime, ..
        } => {
            let st = expect_kind(target, path, EntryKind::Dir)?;
            if st.mode == *mode && st.mtime == *mtime {
                return Ok(Effect::default());
            }
            target.set_meta(path, EntryKind::Dir, *mode, *mtime)?;
            Ok(wrote)
        }
        Action::WriteFile { entry, .. } => Err(Error::Precondition {
            path: entry.path.clone(),
            reason: "file content is written by write_file, not apply_action".into(),
        }),
    }
}

fn expect_kind(target: &TargetDir, path: &RelPath, kind: EntryKind) -> Result<crate::target::TargetStat> {
    match target.stat(path)? {
        Some(st) if st.kind == Some(kind) => Ok(st),
        other => Err(Error::Precondition {
            path: path.clone(),
            reason: format!("expected a {kind:?}, found {:?}", other.and_then(|s| s.kind)),
        }),
    }
}

/// Writes `entry`'s content: chunks from the old version at the same path are copied
/// locally, the others come from `fetch`; every chunk is verified, then the temp file is
/// committed over the final name. Nothing partial ever appears under the final name.
pub fn write_file(
    target: &TargetDir,
    entry: &FileEntry,
    base: Option<&crate::chunk::Content>,
    durable: bool,
    fetch: &mut dyn FnMut(&ChunkTask) -> Result<Vec<u8>>,
) -> Result<Effect> {
    let content = entry.content.as_ref().ok_or_else(|| Error::Precondition {
        path: entry.path.clone(),
        reason: "file entry without a chunk list".into(),
    })?;
    let tasks = chunk_tasks(content, base);
    let temp = target.create_temp(&entry.path)?;
    let (remote, reused) = copy_local_chunks(target, &entry.path, &temp, &tasks)?;
    let mut fetched = 0;
    for t in &remote {
        let bytes = fetch(t)?;
        write_verified(&temp, t, &bytes)?;
        fetched += bytes.len() as u64;
    }
    temp.set_len(content.len())?;
    temp.commit(entry.mode, entry.mtime, durable)?;
    Ok(Effect {
        wrote: true,
        bytes_written: content.len(),
        bytes_reused: reused,
        bytes_fetched: fetched,
    })
}

/// Applies a whole plan in order, fetching chunk data through `fetch`. Stops at the first
/// error; re-running diff and apply afterwards converges.
pub fn apply_plan(
    target: &TargetDir,
    plan: &Plan,
    durable: bool,
    fetch: &mut dyn FnMut(&ChunkTask) -> Result<Vec<u8>>,
) -> Result<Effect> {
    let mut total = Effect::default();
    for a in &plan.actions {
        let e = match a {
            Action::WriteFile { entry, base, .. } => write_file(target, entry, base.as_ref(), durable, fetch)?,
            other => apply_action(target, other)?,
        };
        total.wrote |= e.wrote;
        total.bytes_written += e.bytes_written;
        total.bytes_reused += e.bytes_reused;
        total.bytes_fetched += e.bytes_fetched;
    }
    Ok(total)
}
