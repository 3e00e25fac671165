//! Assembling a file's new version: which chunks come from files the target already holds
//! and which must be fetched, and copying the local ones (verified) into the temp file.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::chunk::{ChunkRef, Content};
use crate::chunkindex::ChunkIndex;
use crate::error::{Error, Result};
use crate::relpath::RelPath;
use crate::target::{TargetDir, TempFile};

/// Where a chunk of the new version comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOrigin {
    /// From a file in the target: `sources[source]` of the [`Assembly`], at this offset.
    Local {
        /// Which source file.
        source: usize,
        /// Offset of the chunk in it.
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

/// How a new version is put together: every chunk with its origin, and the target files
/// local chunks are copied from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assembly {
    /// The target files local chunks come from (shared by the parts of a split plan).
    pub sources: Arc<[RelPath]>,
    /// Every chunk of the new version, in file order.
    pub tasks: Vec<ChunkTask>,
}

impl Assembly {
    /// True when some chunk is copied from a local file.
    pub fn has_local(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| matches!(t.origin, ChunkOrigin::Local { .. }))
    }

    /// Cuts the plan into parts of about `bytes` each (at least one part), so a very large
    /// file is copied and verified by several jobs at once.
    pub fn split(self, bytes: u64) -> Vec<Assembly> {
        let mut parts = Vec::new();
        let mut cur = Vec::new();
        let mut size = 0u64;
        for t in self.tasks {
            size += u64::from(t.chunk.len);
            cur.push(t);
            if size >= bytes {
                parts.push(std::mem::take(&mut cur));
                size = 0;
            }
        }
        if !cur.is_empty() || parts.is_empty() {
            parts.push(cur);
        }
        parts
            .into_iter()
            .map(|tasks| Assembly {
                sources: self.sources.clone(),
                tasks,
            })
            .collect()
    }
}

/// Plans every chunk of `new` (the next version of `path`): copied from `base` (the version
/// the target holds at `path`) where it has the chunk, else from any other target file the
/// chunk index knows to hold it, else fetched.
pub fn chunk_tasks(
    path: &RelPath,
    new: &Content,
    base: Option<&Content>,
    index: &ChunkIndex,
) -> Assembly {
    let own: HashMap<_, u64> = base
        .map(|b| b.with_offsets().map(|(off, c)| (c.id, off)).collect())
        .unwrap_or_default();
    let mut sources: Vec<RelPath> = Vec::new();
    let mut numbers: HashMap<RelPath, usize> = HashMap::new();
    let mut source_of = |p: &RelPath| {
        *numbers.entry(p.clone()).or_insert_with(|| {
            sources.push(p.clone());
            sources.len() - 1
        })
    };
    let tasks = new
        .with_offsets()
        .map(|(offset, c)| {
            let origin = if let Some(&at) = own.get(&c.id) {
                ChunkOrigin::Local {
                    source: source_of(path),
                    at,
                }
            } else if let Some(loc) = index.locate(&c.id).iter().find(|l| l.path != *path) {
                ChunkOrigin::Local {
                    source: source_of(&loc.path),
                    at: loc.offset,
                }
            } else {
                ChunkOrigin::Remote
            };
            ChunkTask {
                offset,
                chunk: *c,
                origin,
            }
        })
        .collect();
    Assembly {
        sources: sources.into(),
        tasks,
    }
}

/// What copying the local chunks achieved.
#[derive(Debug, Default)]
pub struct LocalCopy {
    /// Tasks still to fetch: the remote ones, plus any local chunk that could not be read
    /// or no longer matches its id (its file changed).
    pub remote: Vec<ChunkTask>,
    /// Bytes copied.
    pub bytes: u64,
    /// Chunks copied.
    pub chunks: u64,
}

/// Source files held open at once while copying (a file assembled from thousands of others
/// must not run the process out of descriptors).
const MAX_OPEN: usize = 32;

/// Copies the local chunks of `plan` into `temp`, verifying each against its id.
pub fn copy_local_chunks(
    target: &TargetDir,
    temp: &TempFile,
    plan: &Assembly,
) -> Result<LocalCopy> {
    let mut out = LocalCopy::default();
    // Each source opened once, lazily; one that cannot be opened serves nothing.
    let mut open: HashMap<usize, Option<File>> = HashMap::new();
    let mut buf = Vec::new();
    for t in &plan.tasks {
        let ChunkOrigin::Local { source, at } = t.origin else {
            out.remote.push(*t);
            continue;
        };
        if open.len() >= MAX_OPEN && !open.contains_key(&source) {
            open.clear();
        }
        let file = open
            .entry(source)
            .or_insert_with(|| target.open_read(&plan.sources[source]).ok());
        buf.resize(t.chunk.len as usize, 0);
        let good = file
            .as_ref()
            .is_some_and(|f| f.read_exact_at(&mut buf, at).is_ok() && t.chunk.id.matches(&buf));
        if good {
            // The temp file is new: a run of zeros is left as a hole.
            if buf.iter().any(|&b| b != 0) {
                temp.write_at(t.offset, &buf)?;
            }
            out.bytes += u64::from(t.chunk.len);
            out.chunks += 1;
        } else {
            out.remote.push(ChunkTask {
                origin: ChunkOrigin::Remote,
                ..*t
            });
        }
    }
    Ok(out)
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
    use crate::chunk::{ChunkId, ChunkParams};

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
        let path = RelPath::new("f").unwrap();
        let other = RelPath::new("g").unwrap();
        let old = content(&[b"aaaa", b"bb", b"cccccc"]);
        let new = content(&[b"cccccc", b"xx", b"aaaa", b"yy"]);
        let mut index = ChunkIndex::new();
        index.add(&path, &old);
        index.add(&other, &content(&[b"zzz", b"yy", b"aaaa"]));
        let plan = chunk_tasks(&path, &new, Some(&old), &index);
        let t = &plan.tasks;
        assert_eq!(&plan.sources[..], &[path.clone(), other.clone()]);
        assert_eq!(t[0].origin, ChunkOrigin::Local { source: 0, at: 6 });
        assert_eq!(t[1].origin, ChunkOrigin::Remote);
        // The old version at the same path is preferred over another file holding the chunk.
        assert_eq!(t[2].origin, ChunkOrigin::Local { source: 0, at: 0 });
        assert_eq!(t[2].offset, 8);
        // A chunk only another file holds is copied from there.
        assert_eq!(t[3].origin, ChunkOrigin::Local { source: 1, at: 3 });
        let parts = plan.clone().split(7);
        assert_eq!(
            parts.iter().map(|p| p.tasks.len()).collect::<Vec<_>>(),
            vec![2, 2]
        );
        let joined: Vec<ChunkTask> = parts.iter().flat_map(|p| p.tasks.clone()).collect();
        assert_eq!(joined, plan.tasks);
        let fresh = chunk_tasks(&path, &new, None, &ChunkIndex::new());
        assert!(fresh.tasks.iter().all(|t| t.origin == ChunkOrigin::Remote));
        assert!(!fresh.has_local());
    }
}
