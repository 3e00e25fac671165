//! Assembling a file's new version: which chunks come from the old local version and which
//! must be fetched, and copying the local ones (verified) into the temp file.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use crate::chunk::{ChunkId, ChunkRef, Content};
use crate::error::{Error, Result};
use crate::relpath::RelPath;
use crate::target::{TargetDir, TempFile};

/// Where a chunk of the new version comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOrigin {
    /// From the version the target holds now, at this offset.
    Local {
        /// Offset of the chunk in the old file.
        at: u64,
    },
    /// From the sender.
    Remote,
}

/// One chunk of the new version and where to get it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkTask {
    /// Offset in the new file.
    pub offset: u64,
    /// The chunk.
    pub chunk: ChunkRef,
    /// Where its bytes come from.
    pub origin: ChunkOrigin,
}

/// Plans every chunk of `new`: reuse from `base` (the old version at the same path) where
/// it holds the same chunk, fetch otherwise.
pub fn chunk_tasks(new: &Content, base: Option<&Content>) -> Vec<ChunkTask> {
    let local: HashMap<ChunkId, u64> = base
        .map(|b| b.with_offsets().map(|(off, c)| (c.id, off)).collect())
        .unwrap_or_default();
    new.with_offsets()
        .map(|(offset, c)| ChunkTask {
            offset,
            chunk: *c,
            origin: local
                .get(&c.id)
                .map_or(ChunkOrigin::Remote, |&at| ChunkOrigin::Local { at }),
        })
        .collect()
}

/// Copies the local chunks of `tasks` from the file now at `from` into `temp`, verifying
/// each against its id. Returns the tasks that still need fetching: the remote ones, plus
/// any local chunk that could not be read or no longer matches (the old file changed).
pub fn copy_local_chunks(
    target: &TargetDir,
    from: &RelPath,
    temp: &TempFile,
    tasks: &[ChunkTask],
) -> Result<(Vec<ChunkTask>, u64)> {
    let mut remote = Vec::new();
    let mut reused = 0u64;
    let old = if tasks
        .iter()
        .any(|t| matches!(t.origin, ChunkOrigin::Local { .. }))
    {
        target.open_read(from).ok()
    } else {
        None
    };
    let mut buf = Vec::new();
    for t in tasks {
        let (ChunkOrigin::Local { at }, Some(old)) = (t.origin, &old) else {
            remote.push(ChunkTask {
                origin: ChunkOrigin::Remote,
                ..*t
            });
            continue;
        };
        buf.resize(t.chunk.len as usize, 0);
        if old.read_exact_at(&mut buf, at).is_ok() && t.chunk.id.matches(&buf) {
            temp.write_at(t.offset, &buf)?;
            reused += u64::from(t.chunk.len);
        } else {
            remote.push(ChunkTask {
                origin: ChunkOrigin::Remote,
                ..*t
            });
        }
    }
    Ok((remote, reused))
}

/// Writes a fetched chunk after checking that its bytes match its id.
pub fn write_verified(temp: &TempFile, task: &ChunkTask, bytes: &[u8]) -> Result<()> {
    if bytes.len() != task.chunk.len as usize || !task.chunk.id.matches(bytes) {
        return Err(Error::ChunkMismatch {
            path: temp.path().clone(),
            offset: task.offset,
        });
    }
    temp.write_at(task.offset, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkParams;

    fn content(parts: &[&[u8]]) -> Content {
        let chunks = parts
            .iter()
            .map(|p| ChunkRef {
                id: ChunkId::of(p),
                len: p.len() as u32,
            })
            .collect();
        Content::from_chunks(&ChunkParams::default(), chunks)
    }

    #[test]
    fn reuses_chunks_of_the_old_version_wherever_they_were() {
        let old = content(&[b"aaaa", b"bb", b"cccccc"]);
        let new = content(&[b"cccccc", b"xx", b"aaaa"]);
        let tasks = chunk_tasks(&new, Some(&old));
        assert_eq!(tasks[0].origin, ChunkOrigin::Local { at: 6 });
        assert_eq!(tasks[1].origin, ChunkOrigin::Remote);
        assert_eq!(tasks[2].origin, ChunkOrigin::Local { at: 0 });
        assert_eq!(tasks[2].offset, 8);
        assert!(chunk_tasks(&new, None)
            .iter()
            .all(|t| t.origin == ChunkOrigin::Remote));
    }
}
