//! `SourceDir`: read-only access to a source folder: hashing files into chunk lists and
//! reading chunks back, re-verified, for sending.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::chunk::{chunk_stream, ChunkId, ChunkParams, Content};
use crate::error::{Error, Result};
use crate::index::StatKey;
use crate::rehash::chunk_file_again;
use crate::relpath::RelPath;
use crate::split::chunk_file;

/// A source folder opened for reading.
#[derive(Clone, Debug)]
pub struct SourceDir {
    root: PathBuf,
    params: ChunkParams,
}

impl SourceDir {
    /// The source folder at `root`, chunked with `params`.
    pub fn new(root: impl Into<PathBuf>, params: ChunkParams) -> Self {
        SourceDir {
            root: root.into(),
            params,
        }
    }

    /// The chunker parameters files are cut with.
    pub fn params(&self) -> &ChunkParams {
        &self.params
    }

    /// The folder's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the regular file at `path`, refusing to follow a symlink.
    pub fn open(&self, path: &RelPath) -> Result<SourceFile> {
        let full = path.under(&self.root);
        let file = open_nofollow(&full).map_err(|e| Error::io("open", &full, e))?;
        Ok(SourceFile {
            file,
            path: path.clone(),
            full,
        })
    }

    /// Chunks the file at `path`. Fails with [`Error::Changed`] if it was modified while read,
    /// so a chunk list never describes a mix of two versions.
    pub fn hash_file(&self, path: &RelPath) -> Result<(Content, StatKey)> {
        self.hash_file_keeping(path, 0, None)
            .map(|(content, stat, _)| (content, stat))
    }

    /// [`Self::hash_file`], also returning the bytes of each chunk, in order, when the
    /// file is at most `keep` bytes long (read once for both; none for a longer file). The
    /// bytes are those the chunk list was computed from: the file did not change while read.
    /// With `previous`, the file's chunk list when it was last hashed, a longer file is
    /// chunked again taking the cuts of the chunks still in place (see [`crate::rehash`]).
    pub fn hash_file_keeping(
        &self,
        path: &RelPath,
        keep: u64,
        previous: Option<&Content>,
    ) -> Result<(Content, StatKey, Vec<Vec<u8>>)> {
        let f = self.open(path)?;
        let before = f.stat()?;
        let mut bytes = Vec::new();
        let content = if before.size <= keep {
            chunk_stream(&f.file, &self.params, |_, b, _| {
                bytes.push(b.to_vec());
                Ok(())
            })
        } else if let Some(previous) = previous {
            chunk_file_again(&f.file, before.size, &self.params, previous)
        } else {
            chunk_file(&f.file, before.size, &self.params)
        }
        .map_err(|e| Error::io("read", &f.full, e))?;
        let after = f.stat()?;
        if before != after || content.len() != after.size {
            return Err(Error::Changed { path: path.clone() });
        }
        Ok((content, after, bytes))
    }
}

/// Opens `path` read-only without following a final symlink.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
}

/// An open source file.
#[derive(Debug)]
pub struct SourceFile {
    file: File,
    path: RelPath,
    full: PathBuf,
}

impl SourceFile {
    /// The inode's current identity and times.
    pub fn stat(&self) -> Result<StatKey> {
        let md = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &self.full, e))?;
        Ok(StatKey::of(&md))
    }

    /// Reads the chunk `id` of `len` bytes at `offset`, verifying that the bytes still hash
    /// to `id`; a mismatch means the file changed since it was scanned.
    pub fn read_chunk(&self, offset: u64, len: u32, id: &ChunkId) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::Changed {
                    path: self.path.clone(),
                }
            } else {
                Error::io("read", &self.full, e)
            }
        })?;
        if !id.matches(&buf) {
            return Err(Error::Changed {
                path: self.path.clone(),
            });
        }
        Ok(buf)
    }
}
