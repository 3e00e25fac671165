//! `SourceDir`: read-only access to a source folder: hashing files into chunk lists and
//! reading chunks back, re-verified, for sending.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;

use rustix::buffer::spare_capacity;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chunk::{cut_owned, ChunkId, ChunkParams, Content};
use crate::error::{Error, Result};
use crate::index::StatKey;
use crate::prints::{ChunkPrint, PrintCache, Prints, KEPT_PRINTS, PRINT_MIN};
use crate::rehash::{chunk_file_again, chunk_file_again_printed, WALK_MIN};
use crate::relpath::RelPath;
use crate::split::{chunk_file, chunk_file_printed};

/// A source folder opened for reading.
#[derive(Clone, Debug)]
pub struct SourceDir {
    root: PathBuf,
    params: ChunkParams,
    /// The prints of the large files hashed last, when kept (see [`Self::keeping_prints`]).
    prints: Option<Arc<PrintCache>>,
}

impl SourceDir {
    /// The source folder at `root`, chunked with `params`.
    pub fn new(root: impl Into<PathBuf>, params: ChunkParams) -> Self {
        SourceDir {
            root: root.into(),
            params,
            prints: None,
        }
    }

    /// The same folder, keeping the prints of the large files it hashes (shared by its
    /// clones), so that one hashed again after an edit has its unchanged chunks found by
    /// their prints ([`crate::prints`]), and so that the chunks of one read again to be
    /// sent are checked by their prints instead of hashed a second time. It costs 56 bytes
    /// per chunk of those files, up to 56 MiB.
    pub fn keeping_prints(mut self) -> Self {
        self.prints = Some(Arc::default());
        self
    }

    /// The print this source made of the chunk `id` of `len` bytes at `offset` of the file
    /// at `path`, when it keeps prints and the prints it keeps for that file have that
    /// chunk there ([`SourceFile::read_chunk_printed`]).
    pub fn print_at(
        &self,
        path: &RelPath,
        offset: u64,
        len: u32,
        id: &ChunkId,
    ) -> Option<ChunkPrint> {
        self.prints.as_ref()?.print_at(path, offset, len, id)
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
        self.hash_file_again(path, None)
    }

    /// [`Self::hash_file`] given `previous`, the file's chunk list when it was last hashed:
    /// a longer file is chunked again taking the cuts of the chunks still in place (see
    /// [`crate::rehash`]).
    pub fn hash_file_again(
        &self,
        path: &RelPath,
        previous: Option<&Content>,
    ) -> Result<(Content, StatKey)> {
        let f = self.open(path)?;
        let before = f.stat()?;
        let (content, printed) = self.list(&f, before.size, path, previous)?;
        settled(&f, before, content.len(), path)?;
        self.keep_prints(path, printed);
        Ok((content, before))
    }

    /// The content of the file at `path` to be sent: when it is at most `keep` bytes long,
    /// its chunks' bytes and prints, cut as its chunk list is but not named (read once, into
    /// a buffer of its own cut in place: a file of one chunk is kept as read, with no copy);
    /// else its chunk list. Either describes one version of the file, as [`Self::hash_file`]'s.
    pub fn read_for_sending(&self, path: &RelPath, keep: u64) -> Result<(SourceContent, StatKey)> {
        let f = self.open(path)?;
        let before = f.stat()?;
        if before.size > keep {
            let (content, printed) = self.list(&f, before.size, path, None)?;
            settled(&f, before, content.len(), path)?;
            self.keep_prints(path, printed);
            return Ok((SourceContent::Listed(content), before));
        }
        let whole = usize::try_from(before.size)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))
            .and_then(|size| read_at(&f.file, 0, size))
            .map_err(|e| Error::io("read", &f.full, e))?;
        settled(&f, before, whole.len() as u64, path)?;
        // Printed now, while the bytes are still in the CPU's cache.
        let pieces = cut_owned(whole, &self.params)
            .into_iter()
            .map(|bytes| (ChunkPrint::of(&bytes), bytes))
            .collect();
        Ok((SourceContent::Cut(pieces), before))
    }

    /// The chunk list of the open file `f` of `size` bytes (by its stat before the read),
    /// with its prints when they are to be kept ([`Self::keep_prints`], once the read is
    /// known to be of one version).
    fn list(
        &self,
        f: &SourceFile,
        size: u64,
        path: &RelPath,
        previous: Option<&Content>,
    ) -> Result<(Content, Option<Prints>)> {
        // The prints of a large file, when kept: those of `previous` to check its chunks
        // with, and the new ones to keep.
        // Not for a file expected to have more chunks than are ever kept: its prints would
        // only be gathered to be dropped.
        let chunks = size / u64::from(self.params.avg);
        let cache = self
            .prints
            .as_ref()
            .filter(|_| size >= WALK_MIN && chunks <= KEPT_PRINTS as u64);
        let listed = if let Some(cache) = cache {
            let result = match previous {
                Some(p) => {
                    let known = cache.get(path, p);
                    chunk_file_again_printed(&f.file, size, &self.params, p, known.as_ref())
                }
                None => chunk_file_printed(&f.file, size, &self.params),
            };
            result.map(|(content, prints)| {
                let printed = Prints::new(&content, prints);
                (content, printed)
            })
        } else if let Some(previous) = previous {
            chunk_file_again(&f.file, size, &self.params, previous).map(|c| (c, None))
        } else {
            chunk_file(&f.file, size, &self.params).map(|c| (c, None))
        };
        listed.map_err(|e| Error::io("read", &f.full, e))
    }

    /// Keeps the prints of a file just hashed, if any were made.
    fn keep_prints(&self, path: &RelPath, printed: Option<Prints>) {
        if let (Some(cache), Some(printed)) = (&self.prints, printed) {
            cache.put(path, printed);
        }
    }
}

/// What a file read to be sent gave ([`SourceDir::read_for_sending`]).
#[derive(Debug)]
pub enum SourceContent {
    /// Its chunk list.
    Listed(Content),
    /// The bytes of each of its chunks, in order, with their prints (to know a chunk met
    /// again by), not named: whoever receives them names them.
    Cut(Vec<PrintedChunk>),
}

/// A chunk's print and bytes.
pub type PrintedChunk = (ChunkPrint, Vec<u8>);

/// Fails with [`Error::Changed`] unless the file `f`, whose stat was `before` when its
/// `len` bytes were read, still has that stat and length: the bytes are of one version.
fn settled(f: &SourceFile, before: StatKey, len: u64, path: &RelPath) -> Result<()> {
    let after = f.stat()?;
    if before != after || len != after.size {
        return Err(Error::Changed { path: path.clone() });
    }
    Ok(())
}

/// Reads `len` bytes of `file` at `offset` into a new buffer, or fewer where the file ends
/// first, and no further: a whole file read to the size seen spares a last read only to
/// meet its end (a file that grew since is caught by a second look at its stat). The bytes
/// go into the buffer's spare capacity: zeroing it first cost as much as the copy, and its
/// fresh pages a fault each.
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The capacity may exceed `len`, and the reads fill all of it.
    buf.truncate(len);
    Ok(buf)
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
        self.read_chunk_printed(offset, len, id, None)
    }

    /// [`SourceFile::read_chunk`], taking the bytes on `print` when it matches them: the
    /// print this process made of the bytes it hashed to `id` ([`SourceDir::print_at`]), so
    /// they are those bytes, checked at memory speed instead of hashed again. A print that
    /// does not match (or a chunk too short to be taken on its print) leaves the check to
    /// the id.
    pub fn read_chunk_printed(
        &self,
        offset: u64,
        len: u32,
        id: &ChunkId,
        print: Option<ChunkPrint>,
    ) -> Result<Vec<u8>> {
        let buf = read_at(&self.file, offset, len as usize)
            .map_err(|e| Error::io("read", &self.full, e))?;
        if buf.len() < len as usize {
            return Err(Error::Changed {
                path: self.path.clone(),
            });
        }
        let printed = print.is_some_and(|p| buf.len() >= PRINT_MIN && ChunkPrint::of(&buf) == p);
        if !printed && !id.matches(&buf) {
            return Err(Error::Changed {
                path: self.path.clone(),
            });
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::pseudo_random as noise;

    #[test]
    fn a_source_keeping_prints_hashes_edited_files_as_one_that_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let path = RelPath::new("big").unwrap();
        let full = dir.path().join("big");
        let mut bytes = noise((WALK_MIN + (3 << 20)) as usize, 21);
        std::fs::write(&full, &bytes).unwrap();
        let kept = SourceDir::new(dir.path(), params).keeping_prints();
        let plain = SourceDir::new(dir.path(), params);
        let cache = kept.prints.clone().unwrap();

        let (mut previous, _) = kept.hash_file(&path).unwrap();
        assert!(
            cache.get(&path, &previous).is_some(),
            "the first hash keeps prints"
        );
        // An overwrite in the middle, an insertion near the start, a cut at the end.
        for edit in ["overwrite", "insert", "truncate"] {
            match edit {
                "overwrite" => bytes[4 << 20..(4 << 20) + 4096].fill(3),
                "insert" => drop(bytes.splice(1 << 20..1 << 20, noise(1024, 22))),
                _ => bytes.truncate(bytes.len() - 70_000),
            }
            std::fs::write(&full, &bytes).unwrap();
            let (again, _) = kept.hash_file_again(&path, Some(&previous)).unwrap();
            let (fresh, _) = plain.hash_file(&path).unwrap();
            assert_eq!(again, fresh);
            assert!(
                cache.get(&path, &again).is_some(),
                "each hash keeps its prints"
            );
            previous = again;
        }
        // A small file keeps none.
        let small = RelPath::new("small").unwrap();
        std::fs::write(dir.path().join("small"), noise(100_000, 23)).unwrap();
        let (content, _) = kept.hash_file(&small).unwrap();
        assert!(cache.get(&small, &content).is_none());
    }

    #[test]
    fn files_read_for_sending_give_every_byte_cut_as_their_chunk_list_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let source = SourceDir::new(dir.path(), params);
        let min = params.min as usize;
        let keep = 1 << 20;
        for (i, size) in [0, 1, min - 1, min, min + 1, 300_000, keep, keep + 1]
            .into_iter()
            .enumerate()
        {
            let path = RelPath::new(format!("f{i}")).unwrap();
            let bytes = noise(size, 30 + i as u64);
            std::fs::write(dir.path().join(path.as_str()), &bytes).unwrap();
            let (listed, _) = source.hash_file(&path).unwrap();
            let (read, stat) = source.read_for_sending(&path, keep as u64).unwrap();
            assert_eq!(stat.size, size as u64);
            match read {
                SourceContent::Cut(pieces) => {
                    assert!(size <= keep, "{size} bytes cut, over the limit");
                    let cut: Vec<_> = pieces
                        .iter()
                        .map(|(print, p)| {
                            assert_eq!(*print, ChunkPrint::of(p));
                            (ChunkId::of(p), p.len() as u32)
                        })
                        .collect();
                    let whole: Vec<u8> = pieces.into_iter().flat_map(|(_, p)| p).collect();
                    assert_eq!(whole, bytes, "{size} bytes");
                    let want: Vec<_> = listed.chunks.iter().map(|c| (c.id, c.len)).collect();
                    assert_eq!(cut, want, "{size} bytes");
                }
                SourceContent::Listed(content) => {
                    assert!(size > keep, "{size} bytes listed, under the limit");
                    assert_eq!(content, listed);
                }
            }
        }
    }

    #[test]
    fn a_chunk_read_to_be_sent_is_taken_on_its_print_and_else_on_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let source = SourceDir::new(dir.path(), params).keeping_prints();
        let path = RelPath::new("big").unwrap();
        let full = dir.path().join("big");
        let mut bytes = noise((WALK_MIN + (1 << 20)) as usize, 50);
        std::fs::write(&full, &bytes).unwrap();
        let (content, _) = source.hash_file(&path).unwrap();
        let (offset, chunk) = content.with_offsets().nth(3).unwrap();
        let print = source.print_at(&path, offset, chunk.len, &chunk.id);
        assert!(print.is_some(), "a large file's prints are kept");
        assert_eq!(
            source.print_at(&path, offset + 1, chunk.len, &chunk.id),
            None
        );
        assert_eq!(
            source.print_at(&path, offset, chunk.len - 1, &chunk.id),
            None
        );
        let at = offset as usize..offset as usize + chunk.len as usize;
        let file = source.open(&path).unwrap();

        // The print matches: the bytes are taken (a wrong id shows the id was not checked).
        let other = ChunkId::of(b"another chunk");
        let got = file
            .read_chunk_printed(offset, chunk.len, &other, print)
            .unwrap();
        assert_eq!(got, bytes[at.clone()]);
        // A print that does not match leaves the check to the id.
        let wrong = Some(ChunkPrint::of(b"other bytes"));
        let got = file
            .read_chunk_printed(offset, chunk.len, &chunk.id, wrong)
            .unwrap();
        assert_eq!(got, bytes[at.clone()]);
        let err = file
            .read_chunk_printed(offset, chunk.len, &other, wrong)
            .unwrap_err();
        assert!(matches!(err, Error::Changed { .. }), "{err}");

        // The chunk changed since it was hashed: neither its print nor its id matches.
        bytes[at.start + 10] ^= 1;
        std::fs::write(&full, &bytes).unwrap();
        let err = file
            .read_chunk_printed(offset, chunk.len, &chunk.id, print)
            .unwrap_err();
        assert!(matches!(err, Error::Changed { .. }), "{err}");
    }

    /// A chunk id of the given bytes (ids are otherwise only made by hashing).
    fn id_from(bytes: [u8; 32]) -> ChunkId {
        let mut cbor = Vec::new();
        ciborium::into_writer(&serde_bytes::Bytes::new(&bytes), &mut cbor).unwrap();
        ciborium::from_reader(&cbor[..]).unwrap()
    }

    #[test]
    fn a_print_kept_for_another_id_at_that_offset_does_not_vouch_for_the_id_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let source = SourceDir::new(dir.path(), params).keeping_prints();
        let path = RelPath::new("f").unwrap();
        // Version 1 had `old` at offset 0, sent under `asked`; the peer asks for it after
        // the file was rewritten to `new` and hashed again (its prints replaced).
        let (old, new) = (noise(1000, 60), noise(1000, 64));
        std::fs::write(dir.path().join("f"), &new).unwrap();
        let asked = ChunkId::of(&old);
        // The new chunk's id as it would be if it shared all but its last byte with the
        // one asked for (a partial collision a writer of the file could craft).
        let mut near = *asked.as_bytes();
        near[31] ^= 1;
        let chunks = vec![crate::chunk::ChunkRef {
            id: id_from(near),
            len: 1000,
        }];
        let v2 = Content::from_chunks(&params, chunks);
        let prints = Prints::new(&v2, vec![ChunkPrint::of(&new)]).unwrap();
        source.prints.as_ref().unwrap().put(&path, prints);
        assert_eq!(source.print_at(&path, 0, 1000, &asked), None);
        assert!(source.print_at(&path, 0, 1000, &id_from(near)).is_some());
        let got = source
            .open(&path)
            .unwrap()
            .read_chunk_printed(0, 1000, &asked, None);
        assert!(
            got.is_err(),
            "sent bytes that do not hash to the id asked for"
        );
    }

    #[test]
    fn a_chunk_under_print_min_or_outside_the_file_is_never_taken_on_its_print() {
        let dir = tempfile::tempdir().unwrap();
        let source = SourceDir::new(dir.path(), ChunkParams::default());
        let bytes = noise(PRINT_MIN - 1, 66);
        std::fs::write(dir.path().join("f"), &bytes).unwrap();
        let file = source.open(&RelPath::new("f").unwrap()).unwrap();
        let other = ChunkId::of(b"another chunk");
        let print = Some(ChunkPrint::of(&bytes));
        let len = bytes.len() as u32;
        assert!(file.read_chunk_printed(0, len, &other, print).is_err());
        assert_eq!(
            file.read_chunk_printed(0, len, &ChunkId::of(&bytes), print)
                .unwrap(),
            bytes
        );
        // Length 0, longer than the file, past any offset a file can have: refused.
        assert!(file.read_chunk_printed(0, 0, &other, print).is_err());
        assert!(file
            .read_chunk_printed(0, len + 1, &ChunkId::of(&bytes), print)
            .is_err());
        assert!(file
            .read_chunk_printed(u64::MAX, len, &other, print)
            .is_err());
    }

    #[test]
    fn a_chunk_is_read_whole_and_a_changed_or_shortened_file_is_reported_as_changed() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChunkParams::default();
        let source = SourceDir::new(dir.path(), params);
        let path = RelPath::new("f").unwrap();
        let full = dir.path().join("f");
        let mut bytes = noise(400_000, 40);
        std::fs::write(&full, &bytes).unwrap();
        let (content, _) = source.hash_file(&path).unwrap();
        assert!(content.chunks.len() > 2, "the test needs several chunks");
        let (offset, last) = content.with_offsets().last().unwrap();
        let file = source.open(&path).unwrap();
        let got = file.read_chunk(offset, last.len, &last.id).unwrap();
        assert_eq!(got, bytes[offset as usize..]);

        // Same length, other bytes: the id no longer matches.
        bytes[offset as usize] ^= 1;
        std::fs::write(&full, &bytes).unwrap();
        let err = file.read_chunk(offset, last.len, &last.id).unwrap_err();
        assert!(matches!(err, Error::Changed { .. }), "{err}");

        // Cut short: the chunk runs past the end.
        bytes.truncate(offset as usize + 10);
        std::fs::write(&full, &bytes).unwrap();
        let err = file.read_chunk(offset, last.len, &last.id).unwrap_err();
        assert!(matches!(err, Error::Changed { .. }), "{err}");
    }
}
