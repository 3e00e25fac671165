//! `TargetDir`: the one seam through which the engine writes a folder, never leaving its root
//! and never following a symlink (every step is an `*at` call with `O_NOFOLLOW`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};

use crate::beneath;
use crate::entry::{EntryKind, MtimeNs};
use crate::error::{Error, Result};
use crate::ignore::IgnoreRules;
use crate::plan::Seen;
use crate::relpath::RelPath;

/// Prefix of the temp files the Applier assembles content in (see [`is_temp_name`]).
pub const TEMP_PREFIX: &str = ".ferry-tmp-";

/// True for the name of one of Ferry's temp files, `.ferry-tmp-PID-TAG-N` (PID and N
/// decimal, TAG eight lowercase hex digits, as Ferry writes them): never a final name, so
/// scans leave such files out and leftovers are removed. Other names with the prefix
/// (`.ferry-tmp-notes`), and directories (Ferry makes none), are ordinary entries.
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let decimal = |s: &str| (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = rest.split('-');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(pid), Some(tag), Some(n), None) => {
            decimal(pid)
                && tag.len() == 8
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && decimal(n)
        }
        _ => false,
    }
}

/// True for an entry that is one of Ferry's temp files: named so, and not a directory
/// (Ferry makes none; a directory so named is an ordinary entry).
pub fn is_temp_entry(name: &str, is_dir: bool) -> bool {
    !is_dir && is_temp_name(name)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The process's current (soft) limit on open files; `u64::MAX` when unlimited. The
/// Applier sizes how many temp files it keeps open at once from it.
pub fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// What is at a path in the target, as seen without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetStat {
    /// File, dir or symlink; `None` for a special file.
    pub kind: Option<EntryKind>,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: MtimeNs,
    /// Inode number.
    pub ino: u64,
}

/// A target folder opened for writing.
#[derive(Debug)]
pub struct TargetDir {
    root: PathBuf,
    /// Shared with the temp files created in the root.
    root_fd: Arc<OwnedFd>,
    /// Entries [`TargetDir::remove_tree`] leaves in place: the ignored ones.
    keep: IgnoreRules,
    /// The step the file system keeps file times in, in ns (0: exact or not probed); see
    /// [`TargetDir::probe_mtime_step`].
    mtime_step: AtomicU64,
}

/// The mtime [`TargetDir::probe_mtime_step`] sets: an odd second and an odd nanosecond,
/// so that any step coarser than a nanosecond (even FAT's two seconds) moves it.
const PROBE_MTIME: MtimeNs = MtimeNs(1_600_000_001_123_456_789);

/// The steps file systems keep times in that the probe recognises (ns), finest first:
/// NTFS's 100 ns, a microsecond, a millisecond, exFAT's 10 ms, a second (ext4 with 128-byte
/// inodes, HFS+, many network shares) and FAT's two seconds.
const MTIME_STEPS: [u64; 6] = [
    100,
    1_000,
    1_000_000,
    10_000_000,
    1_000_000_000,
    2_000_000_000,
];

enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(fd) => *fd,
            DirFd::Owned(fd) => fd.as_fd(),
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl TargetDir {
    /// Opens the folder at `root`, which must be an existing directory.
    pub fn open(root: &Path) -> Result<Self> {
        let root_fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open target folder", root, e.into()))?;
        Ok(TargetDir {
            root: root.to_owned(),
            root_fd: Arc::new(root_fd),
            keep: IgnoreRules::default(),
            mtime_step: AtomicU64::new(0),
        })
    }

    /// Finds the step this file system keeps file times in, by setting a temp file's mtime
    /// and reading it back, and from then on takes a time cut down to that step as equal to
    /// the time (see [`MtimeNs::kept_as`]). Returns the step (0: exact). Without this, every
    /// file copied to a target that cuts times (FAT, ext4 with small inodes, some network
    /// shares) would look changed at every run and be read again, like rsync without
    /// `--modify-window`. A time read back that is not the one set cut down to a known step
    /// (a file system that rounds, or does not keep the time at all) is an error, and times
    /// stay compared exactly.
    pub fn probe_mtime_step(&self) -> Result<u64> {
        let probe = self.create_temp(&RelPath::new(".ferry-probe").expect("a valid name"))?;
        rfs::futimens(&probe.file, &timestamps(PROBE_MTIME))
            .map_err(|e| Error::io("set mtime of", &probe.full, e.into()))?;
        let st = rfs::fstat(&probe.file).map_err(|e| Error::io("stat", &probe.full, e.into()))?;
        let kept = to_stat(&st).mtime;
        let step = if kept == PROBE_MTIME {
            Some(0)
        } else {
            MTIME_STEPS
                .into_iter()
                .find(|&step| PROBE_MTIME.kept_as(kept, step))
        };
        let Some(step) = step else {
            return Err(Error::Precondition {
                path: probe.path.clone(),
                reason: format!(
                    "the file time {} ns was kept as {} ns, not cut down to a step Ferry knows",
                    PROBE_MTIME.0, kept.0
                ),
            });
        };
        self.mtime_step.store(step, Ordering::Relaxed);
        Ok(step)
    }

    /// The step file times are compared with (see [`TargetDir::probe_mtime_step`]).
    pub fn mtime_step(&self) -> u64 {
        self.mtime_step.load(Ordering::Relaxed)
    }

    /// This folder, whose entries `ignore` matches are never deleted, not even with the
    /// directory holding them (see [`TargetDir::remove_tree`]).
    pub fn keeping(self, ignore: IgnoreRules) -> Self {
        TargetDir {
            keep: ignore,
            ..self
        }
    }

    /// The room left on the target's file system.
    pub fn free_space(&self) -> Result<crate::space::FreeSpace> {
        crate::space::FreeSpace::of(&self.root_fd)
            .map_err(|e| Error::io("measure the free space of", &self.root, e))
    }

    /// The folder's root on the local file system.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn err(&self, op: &'static str, path: &RelPath, e: impl Into<io::Error>) -> Error {
        Error::io(op, path.under(&self.root), e.into())
    }

    /// Opens the directory holding `path`, refusing any component that is not a real directory.
    fn parent(&self, path: &RelPath) -> Result<DirFd<'_>> {
        let Some((dir, _)) = path.as_str().rsplit_once('/') else {
            return Ok(DirFd::Root(self.root_fd.as_fd()));
        };
        match beneath::open_dir(&self.root_fd, dir, dir_flags()) {
            Some(fd) => Ok(DirFd::Owned(fd)),
            // Not there, not a directory, or no `openat2`: the walk says which component.
            None => self.walk_to_parent(path),
        }
    }

    /// [`Self::parent`] one component at a time, naming the component that fails.
    fn walk_to_parent(&self, path: &RelPath) -> Result<DirFd<'_>> {
        let mut cur = DirFd::Root(self.root_fd.as_fd());
        let comps: Vec<&str> = path.components().collect();
        for c in &comps[..comps.len() - 1] {
            let next = rfs::openat(&cur, *c, dir_flags(), Mode::empty()).map_err(|e| {
                if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                    Error::Precondition {
                        path: path.clone(),
                        reason: format!("a parent component ({c}) is not a directory"),
                    }
                } else {
                    self.err("open parent of", path, e)
                }
            })?;
            cur = DirFd::Owned(next);
        }
        Ok(cur)
    }

    /// What is at `path` now, without following a symlink; `None` when nothing is there.
    pub fn stat(&self, path: &RelPath) -> Result<Option<TargetStat>> {
        let dir = match self.parent(path) {
            Ok(d) => d,
            Err(Error::Precondition { .. }) => return Ok(None),
            Err(Error::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match rfs::statat(&dir, path.name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(to_stat(&st))),
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    /// Creates directory `path` (owner-only until its final mode is set, so that it stays
    /// writable while it is filled).
    pub fn make_dir(&self, path: &RelPath) -> Result<()> {
        let dir = self.parent(path)?;
        match loosening(&[&dir], || {
            rfs::mkdirat(&dir, path.name(), Mode::from_raw_mode(0o700))
        }) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::EXIST => {
                let st = rfs::statat(&dir, path.name(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.err("stat", path, e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    Ok(())
                } else {
                    Err(Error::Precondition {
                        path: path.clone(),
                        reason: "something other than a directory is in the way".into(),
                    })
                }
            }
            Err(e) => Err(self.err("create directory", path, e)),
        }
    }

    /// Opens a new temp file beside `path`, where its content is assembled.
    pub fn create_temp(&self, path: &RelPath) -> Result<TempFile> {
        self.create_temp_in(&mut ParentDirs::default(), path)
    }

    /// [`TargetDir::create_temp`], opening `path`'s directory only if `parents` does not
    /// hold it yet (and keeping it there).
    pub fn create_temp_in(&self, parents: &mut ParentDirs, path: &RelPath) -> Result<TempFile> {
        let dir = match path.as_str().rsplit_once('/') {
            None => self.root_fd.clone(),
            Some((dir, _)) => {
                if parents.root.as_deref() != Some(self.root.as_path()) {
                    // Opened under another target: none of them serves this one.
                    parents.open.clear();
                    parents.root = Some(self.root.clone());
                }
                match parents.open.get(dir) {
                    Some(fd) => fd.clone(),
                    None => {
                        let fd = match self.parent(path)? {
                            DirFd::Owned(fd) => Arc::new(fd),
                            DirFd::Root(_) => self.root_fd.clone(),
                        };
                        parents.open.insert(dir.to_owned(), fd.clone());
                        fd
                    }
                }
            }
        };
        let tmp_name = temp_name();
        let fd = loosening(&[&dir], || {
            rfs::openat(
                &dir,
                tmp_name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })
        .map_err(|e| self.err("create temp file for", path, e))?;
        Ok(TempFile {
            dir,
            tmp_name,
            path: path.clone(),
            full: path.under(&self.root),
            file: File::from(fd),
            committed: false,
            kept: std::sync::atomic::AtomicBool::new(false),
            len: AtomicU64::new(0),
        })
    }

    /// Creates or replaces `path` with a symlink to `link_target`, atomically.
    pub fn symlink(&self, path: &RelPath, link_target: &str) -> Result<()> {
        let dir = self.parent(path)?;
        let tmp = temp_name();
        loosening(&[&dir], || rfs::symlinkat(link_target, &dir, tmp.as_str()))
            .map_err(|e| self.err("create symlink", path, e))?;
        loosening(&[&dir], || {
            rfs::renameat(&dir, tmp.as_str(), &dir, path.name())
        })
        .map_err(|e| {
            let _ = loosening(&[&dir], || {
                rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty())
            });
            self.err("install symlink", path, e)
        })
    }

    /// Moves `from` to `to`; refuses to replace anything already at `to`.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> Result<()> {
        let a = self.parent(from)?;
        let b = self.parent(to)?;
        loosening(&[&a, &b], || {
            rfs::renameat_with(&a, from.name(), &b, to.name(), RenameFlags::NOREPLACE)
        })
        .map_err(|e| self.err("rename", from, e))
    }

    /// Removes the entry at `path`, which must be of `kind` (a directory must be empty).
    pub fn remove(&self, path: &RelPath, kind: EntryKind) -> Result<()> {
        let dir = self.parent(path)?;
        let st = match rfs::statat(&dir, path.name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if e == rustix::io::Errno::NOENT => return Ok(()),
            Err(e) => return Err(self.err("stat", path, e)),
        };
        let found = kind_of(FileType::from_raw_mode(st.st_mode));
        if found != Some(kind) {
            return Err(Error::Precondition {
                path: path.clone(),
                reason: format!("expected a {kind:?} to remove, found {found:?}"),
            });
        }
        let flags = if kind == EntryKind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match loosening(&[&dir], || rfs::unlinkat(&dir, path.name(), flags)) {
            // Scans hide the temp files a crash may leave behind, so no plan removes them;
            // they must not keep their directory alive forever.
            Err(e)
                if kind == EntryKind::Dir
                    && (e == rustix::io::Errno::NOTEMPTY || e == rustix::io::Errno::EXIST) =>
            {
                remove_leftover_temps(&dir, path.name())
                    .and_then(|()| rfs::unlinkat(&dir, path.name(), flags))
            }
            other => other,
        }
        .map_err(|e| self.err("remove", path, e))
    }

    /// Removes whatever is at `path`, with everything below it if it is a directory.
    /// Symlinks inside are removed as links; nothing outside the root is touched. Ignored
    /// entries below `path` (see [`TargetDir::keeping`]) are not removed: the rest is, and
    /// then the directory still holding them is an error naming one.
    pub fn remove_tree(&self, path: &RelPath) -> Result<()> {
        let dir = self.parent(path)?;
        let name = std::ffi::OsStr::new(path.name());
        if self.keep.is_empty() {
            return remove_tree_at(&dir, name).map_err(|e| self.err("remove tree", path, e));
        }
        match remove_tree_keeping(&dir, name, path, &self.keep) {
            Ok(None) => Ok(()),
            Ok(Some(kept)) => Err(Error::Precondition {
                path: path.clone(),
                reason: format!(
                    "it cannot be replaced: it holds {kept}, which is ignored and never deleted"
                ),
            }),
            Err(e) => Err(self.err("remove tree", path, e)),
        }
    }

    /// Removes the entry at `full` (as a scan of this folder reported it: under the root, its
    /// directories valid relative paths, its own name possibly not), with everything below it
    /// if it is a directory: for a special file, which no source entry can ever be.
    pub fn remove_unmirrorable(&self, full: &Path) -> Result<()> {
        let outside = || {
            Error::io(
                "remove",
                full,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an entry of the target folder",
                ),
            )
        };
        let rel = full.strip_prefix(&self.root).map_err(|_| outside())?;
        let name = rel.file_name().ok_or_else(outside)?;
        let dir = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => DirFd::Root(self.root_fd.as_fd()),
            Some(p) => {
                // The directory itself, opened as the parent of an entry inside it.
                let inside = p
                    .to_str()
                    .and_then(|p| RelPath::new(format!("{p}/x")).ok())
                    .ok_or_else(outside)?;
                self.parent(&inside)?
            }
        };
        remove_tree_at(&dir, name).map_err(|e| Error::io("remove", full, e.into()))
    }

    /// Sets permission bits and mtime of `path`, which must be of `kind`.
    pub fn set_meta(
        &self,
        path: &RelPath,
        kind: EntryKind,
        mode: u32,
        mtime: MtimeNs,
    ) -> Result<()> {
        self.update_meta(path, kind, mode, mtime, None)
    }

    /// [`TargetDir::set_meta`], for a file only if it is still as `seen` (else
    /// [`Error::Precondition`]: it changed behind Ferry's back, and is to be read again).
    pub fn update_meta(
        &self,
        path: &RelPath,
        kind: EntryKind,
        mode: u32,
        mtime: MtimeNs,
        seen: Option<Seen>,
    ) -> Result<()> {
        let dir = self.parent(path)?;
        let wrong_kind = || Error::Precondition {
            path: path.clone(),
            reason: format!("expected a {kind:?} to update"),
        };
        if kind == EntryKind::Symlink {
            let st = rfs::statat(&dir, path.name(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.err("stat", path, e))?;
            if kind_of(FileType::from_raw_mode(st.st_mode)) != Some(kind) {
                return Err(wrong_kind());
            }
            return rfs::utimensat(
                &dir,
                path.name(),
                &timestamps(mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.err("set mtime of", path, e));
        }
        // The entry itself, pinned: checked and changed through the same descriptor, so a
        // symlink swapped in after the check is never followed (chmod has no no-follow flag).
        let pinned = rfs::openat(
            &dir,
            path.name(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err("open", path, e))?;
        let st = rfs::fstat(&pinned).map_err(|e| self.err("stat", path, e))?;
        if kind_of(FileType::from_raw_mode(st.st_mode)) != Some(kind) {
            return Err(wrong_kind());
        }
        if let Some(seen) = seen {
            check_seen(path, &to_stat(&st), seen, self.mtime_step())?;
        }
        let mode = Mode::from_raw_mode(mode & 0o7777);
        match set_meta_pinned(&pinned, mode, mtime) {
            // No /proc: the entry opened for real, if it is still the one checked.
            Err(rustix::io::Errno::NOENT) => {
                let flags = match kind {
                    EntryKind::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
                    _ => OFlags::RDONLY | OFlags::NONBLOCK,
                };
                let fd = rfs::openat(
                    &dir,
                    path.name(),
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.err("open", path, e))?;
                let now = rfs::fstat(&fd).map_err(|e| self.err("stat", path, e))?;
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(wrong_kind());
                }
                rfs::fchmod(&fd, mode).map_err(|e| self.err("chmod", path, e))?;
                rfs::futimens(&fd, &timestamps(mtime))
                    .map_err(|e| self.err("set mtime of", path, e))
            }
            other => other.map_err(|e| self.err("set metadata of", path, e)),
        }
    }

    /// Opens the regular file at `path` for reading, refusing a symlink.
    pub fn open_read(&self, path: &RelPath) -> Result<File> {
        let dir = self.parent(path)?;
        let fd = rfs::openat(
            &dir,
            path.name(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| self.err("open", path, e))?;
        Ok(File::from(fd))
    }

    /// Chunks the file now at `path` (to reuse its chunks, or to compare it with a source
    /// file), failing with [`Error::Changed`] if it changes while read.
    pub fn hash_file(
        &self,
        path: &RelPath,
        params: &crate::chunk::ChunkParams,
    ) -> Result<crate::chunk::Content> {
        let f = self.open_read(path)?;
        let before = f.metadata().map_err(|e| self.err("stat", path, e))?;
        let content = crate::split::chunk_file(&f, before.len(), params)
            .map_err(|e| self.err("read", path, e))?;
        let after = f.metadata().map_err(|e| self.err("stat", path, e))?;
        if content.len() != after.len() || before.modified().ok() != after.modified().ok() {
            return Err(Error::Changed { path: path.clone() });
        }
        Ok(content)
    }

    /// Flushes every file system write in progress on the target's file system: one call
    /// that makes a whole batch of temp files durable at once, far cheaper than one
    /// fsync each.
    pub fn sync_all(&self) -> Result<()> {
        rfs::syncfs(&self.root_fd)
            .map_err(|e| Error::io("sync file system of", &self.root, e.into()))
    }

    /// Flushes directory `path` (the root when `None`) so that renames in it are durable.
    /// A directory no longer there (removed after its entries changed, or replaced by a
    /// file) has nothing to flush: its removal is made durable by flushing its parent.
    pub fn sync_dir(&self, path: Option<&RelPath>) -> Result<()> {
        let res = match path {
            None => rfs::fsync(&self.root_fd),
            Some(p) => {
                let dir = match self.parent(p) {
                    Ok(dir) => dir,
                    Err(Error::Precondition { .. }) => return Ok(()),
                    Err(Error::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                };
                match rfs::openat(&dir, p.name(), dir_flags(), Mode::empty()) {
                    Err(
                        rustix::io::Errno::NOENT
                        | rustix::io::Errno::NOTDIR
                        | rustix::io::Errno::LOOP,
                    ) => return Ok(()),
                    opened => opened.and_then(rfs::fsync),
                }
            }
        };
        res.map_err(|e| {
            Error::io(
                "sync directory",
                path.map_or(self.root.clone(), |p| p.under(&self.root)),
                e.into(),
            )
        })
    }
}

/// Sets the mode and mtime of the entry `pinned` (an `O_PATH` descriptor of a file or
/// directory) through its `/proc/self/fd` link, which names that inode whatever happens to
/// its path meanwhile. `NOENT` when `/proc` is not mounted.
fn set_meta_pinned(pinned: &OwnedFd, mode: Mode, mtime: MtimeNs) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    rfs::chmod(link.as_str(), mode)?;
    rfs::utimensat(
        rfs::CWD,
        link.as_str(),
        &timestamps(mtime),
        AtFlags::empty(),
    )
}

fn remove_tree_at(dir: &impl AsFd, name: &std::ffi::OsStr) -> rustix::io::Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return loosening(&[dir], || rfs::unlinkat(dir, name, AtFlags::empty()));
    }
    let (sub, names) = open_listed(dir, name)?;
    for n in names {
        remove_tree_at(&sub, n.as_os_str())?;
    }
    loosening(&[dir], || rfs::unlinkat(dir, name, AtFlags::REMOVEDIR))
}

/// The directory `name` in `dir`, opened, with the names of its entries.
fn open_listed(
    dir: &impl AsFd,
    name: &std::ffi::OsStr,
) -> rustix::io::Result<(OwnedFd, Vec<std::ffi::OsString>)> {
    let sub = loosening(&[dir], || {
        rfs::openat(dir, name, dir_flags(), Mode::empty())
    })?;
    let mut names = Vec::new();
    for ent in rfs::Dir::read_from(&sub)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n).to_owned());
        }
    }
    Ok((sub, names))
}

/// Runs `op`, a change to the entries of `dirs`; when it is refused for want of permission
/// and one of them is ours without owner write and search bits, adds those, runs it again,
/// and sets the modes back. A read-only source directory is mirrored read-only, so its next
/// change would otherwise fail for every user but root (rsync does the same).
fn loosening<T>(
    dirs: &[&dyn AsFd],
    mut op: impl FnMut() -> rustix::io::Result<T>,
) -> rustix::io::Result<T> {
    match op() {
        Err(rustix::io::Errno::ACCESS) => {
            let mut loosened = Vec::new();
            let mut failed = None;
            for d in dirs {
                match make_writable(d) {
                    Ok(Some(mode)) => loosened.push((d, mode)),
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let r = match failed {
                Some(e) => Err(e),
                None if loosened.is_empty() => Err(rustix::io::Errno::ACCESS),
                None => op(),
            };
            for (d, mode) in loosened {
                let _ = rfs::fchmod(d, Mode::from_raw_mode(mode));
            }
            r
        }
        other => other,
    }
}

/// Adds owner write and search to directory `dir` when it is ours and lacks them; returns
/// the mode it had.
fn make_writable(dir: &impl AsFd) -> rustix::io::Result<Option<u32>> {
    let st = rfs::fstat(dir)?;
    let mode = st.st_mode & 0o7777;
    if st.st_uid != rustix::process::geteuid().as_raw() || mode & 0o300 == 0o300 {
        return Ok(None);
    }
    rfs::fchmod(dir, Mode::from_raw_mode(mode | 0o300))?;
    Ok(Some(mode))
}

/// [`remove_tree_at`] of the entry `name` at `rel`, leaving what `keep` ignores: returns
/// the first entry left (and so every directory above it), or `None` when all is gone.
fn remove_tree_keeping(
    dir: &impl AsFd,
    name: &std::ffi::OsStr,
    rel: &RelPath,
    keep: &IgnoreRules,
) -> rustix::io::Result<Option<RelPath>> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    if keep.is_ignored(rel, is_dir) {
        return Ok(Some(rel.clone()));
    }
    if !is_dir {
        return loosening(&[dir], || rfs::unlinkat(dir, name, AtFlags::empty())).map(|()| None);
    }
    let (sub, names) = open_listed(dir, name)?;
    let mut kept = None;
    for n in names {
        // A name that is no valid relative path (not UTF-8) matches no rule: it goes.
        let left = match n.to_str().and_then(|s| rel.join(s).ok()) {
            Some(child) => remove_tree_keeping(&sub, &n, &child, keep)?,
            None => remove_tree_at(&sub, &n).map(|()| None)?,
        };
        kept = kept.or(left);
    }
    match kept {
        Some(k) => Ok(Some(k)),
        None => loosening(&[dir], || rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)).map(|()| None),
    }
}

/// Removes the temp files (never directories) that a crashed run left in directory `name`.
fn remove_leftover_temps(dir: &impl AsFd, name: &str) -> rustix::io::Result<()> {
    let sub = rfs::openat(dir, name, dir_flags(), Mode::empty())?;
    let mut temps = Vec::new();
    for ent in rfs::Dir::read_from(&sub)? {
        let ent = ent?;
        if ent.file_name().to_str().is_ok_and(is_temp_name) {
            temps.push(ent.file_name().to_owned());
        }
    }
    for t in temps {
        match loosening(&[&sub], || {
            rfs::unlinkat(&sub, t.as_c_str(), AtFlags::empty())
        }) {
            // A directory with a temp-like name is not ours: leave it, and let the caller fail.
            Ok(()) | Err(rustix::io::Errno::NOENT | rustix::io::Errno::ISDIR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What every temp name of this process starts with: the pid and a random tag (temp files
/// are kept across runs, to reuse what arrived, and a new process may get the pid of the
/// one that left them). Made once: the pid is a system call.
static TEMP_STEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn temp_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let stem = TEMP_STEM.get_or_init(|| {
        let pid = std::process::id();
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(pid);
        let tag = h.finish() as u32;
        format!("{TEMP_PREFIX}{pid}-{tag:08x}-")
    });
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{stem}{n}")
}

/// Fails unless the target file `st` (at `path`) is still as the target index `seen` it
/// (its mtime as kept in steps of `step` ns, see [`TargetDir::probe_mtime_step`]).
pub(crate) fn check_seen(path: &RelPath, st: &TargetStat, seen: Seen, step: u64) -> Result<()> {
    if st.size == seen.size && seen.mtime.kept_as(st.mtime, step) {
        return Ok(());
    }
    Err(Error::Precondition {
        path: path.clone(),
        reason: format!(
            "changed in the target since Ferry last saw it ({} bytes, mtime {} instead of \
             {} bytes, mtime {}): it is read again",
            st.size, st.mtime.0, seen.size, seen.mtime.0
        ),
    })
}

fn kind_of(t: FileType) -> Option<EntryKind> {
    match t {
        FileType::RegularFile => Some(EntryKind::File),
        FileType::Directory => Some(EntryKind::Dir),
        FileType::Symlink => Some(EntryKind::Symlink),
        _ => None,
    }
}

fn to_stat(st: &rfs::Stat) -> TargetStat {
    TargetStat {
        kind: kind_of(FileType::from_raw_mode(st.st_mode)),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        mtime: MtimeNs(st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64),
        ino: st.st_ino,
    }
}

fn timestamps(mtime: MtimeNs) -> Timestamps {
    let ts = Timespec {
        tv_sec: mtime.0.div_euclid(1_000_000_000),
        tv_nsec: mtime.0.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: ts,
    }
}

/// Directories opened for temp files, each shared by the files then created in it (one
/// `openat2` for a directory's files, not one each). Meant for one batch of writes: like
/// a temp file holding its directory until it is installed, a batch writes through the
/// descriptor it opened, so its window for a directory moved meanwhile is as short.
#[derive(Debug, Default)]
pub struct ParentDirs {
    /// The root of the target they were opened under.
    root: Option<PathBuf>,
    /// By the directory's path relative to that root.
    open: HashMap<String, Arc<OwnedFd>>,
}

/// A file being assembled under a temp name beside its final path. Dropped without
/// [`TempFile::commit`], it is removed, so no partial content ever has a final name.
#[derive(Debug)]
pub struct TempFile {
    dir: Arc<OwnedFd>,
    tmp_name: String,
    path: RelPath,
    full: PathBuf,
    file: File,
    committed: bool,
    /// Left in place when dropped, for the next Applier to reuse.
    kept: std::sync::atomic::AtomicBool,
    /// The file's length as far as this handle made it: the end of the furthest write.
    len: AtomicU64,
}

impl TempFile {
    /// Leaves the file in place when dropped: the next Applier on this target reuses the
    /// chunks already in it, then removes it.
    pub fn keep(&self) {
        self.kept.store(true, Ordering::Relaxed);
    }

    /// The final path this file will be installed at.
    pub fn path(&self) -> &RelPath {
        &self.path
    }

    /// Writes `bytes` at `offset`.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.write_parts_at(offset, &[bytes])
    }

    /// Writes `parts` back to back from `offset`, as few calls as the kernel allows (one
    /// where it takes them whole), so the page cache sees one large write rather than many
    /// small ones at arbitrary offsets (see [`crate::aligned`]).
    pub fn write_parts_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        /// The most slices one `pwritev` takes (Linux's `IOV_MAX`).
        const MAX_SLICES: usize = 1024;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0usize;
        // The first part not yet fully written, and how much of it was.
        let (mut part, mut within) = (0usize, 0usize);
        while done < total {
            while parts[part].len() == within {
                part += 1;
                within = 0;
            }
            let slices: Vec<IoSlice<'_>> = std::iter::once(&parts[part][within..])
                .chain(parts[part + 1..].iter().copied())
                .take(MAX_SLICES)
                .map(IoSlice::new)
                .collect();
            match rustix::io::pwritev(&self.file, &slices, offset + done as u64) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "wrote nothing");
                    return Err(Error::io("write", &self.full, e));
                }
                Ok(mut n) => {
                    done += n;
                    while n > 0 {
                        let left = parts[part].len() - within;
                        if n < left {
                            within += n;
                            n = 0;
                        } else {
                            n -= left;
                            part += 1;
                            within = 0;
                        }
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io("write", &self.full, e.into())),
            }
        }
        if total > 0 {
            self.len.fetch_max(offset + total as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Starts writing `len` bytes at `offset` back to disk without waiting for it. For a
    /// file that will replace another: ext4 writes a file back when it is renamed over an
    /// existing one (so a crash does not leave it empty), and the rename waits for that;
    /// started as each region is written, the disk works while the rest is assembled. It
    /// is only advice, so its failure is not an error.
    pub fn start_writeback(&self, offset: u64, len: u64) {
        let _ = rfs::fadvise(
            &self.file,
            offset,
            NonZeroU64::new(len),
            rfs::Advice::DontNeed,
        );
    }

    /// Reserves the blocks of the first `len` bytes up front (their content reads as zeros
    /// until written). For a large file written in many pieces this is cheaper than the
    /// file system reserving each page as it is first written, under the file's lock (a
    /// 1 GiB local copy: ~15% less time on ext4). Leaves no holes, so not for content with
    /// runs of zeros. Only for a file fsynced before it is installed: reserved blocks read
    /// as zeros until their data is on disk, and a power loss before then would leave the
    /// new name holding zeros. Only advice: where it fails (no support, no space) the writes
    /// reserve as usual and report a full disk themselves.
    pub fn preallocate(&self, len: u64) {
        if rfs::fallocate(&self.file, rfs::FallocateFlags::empty(), 0, len).is_ok() {
            self.len.fetch_max(len, Ordering::Relaxed);
        }
    }

    /// Sets the length, leaving a hole where nothing was written (sparse regions of zeros).
    /// A file already that long (its last bytes were written) is left alone: a truncate
    /// costs a journalled inode update on ext4, per file.
    pub fn set_len(&self, len: u64) -> Result<()> {
        if self.len.load(Ordering::Relaxed) == len {
            return Ok(());
        }
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.full, e))?;
        self.len.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// Sets mode and mtime, flushes the data to disk when `durable`, and renames the temp
    /// file over the final name (replacing a file or symlink there atomically).
    pub fn commit(self, mode: u32, mtime: MtimeNs, durable: bool) -> Result<()> {
        self.seal(mode, mtime, durable)?;
        if durable {
            self.sync()?;
        }
        self.install()
    }

    /// Gives the complete content its final mode and mtime and, with `writeback` (for a
    /// file to be made durable), starts writing it back to disk now, so that a later
    /// [`TempFile::sync`] or [`TargetDir::sync_all`] finds little left to do. (Without
    /// durability nothing waits for the disk, and starting writeback of a large file here
    /// would: the kernel writes it back in its own time.)
    pub fn seal(&self, mode: u32, mtime: MtimeNs, writeback: bool) -> Result<()> {
        rfs::fchmod(&self.file, Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod", &self.full, e.into()))?;
        rfs::futimens(&self.file, &timestamps(mtime))
            .map_err(|e| Error::io("set mtime of", &self.full, e.into()))?;
        // DONTNEED starts writeback of the dirty pages now (and drops clean ones, which
        // nothing here reads again); it is only advice, so its failure is not an error.
        if writeback {
            let _ = rfs::fadvise(&self.file, 0, None, rfs::Advice::DontNeed);
        }
        Ok(())
    }

    /// Flushes this file's data to disk.
    pub fn sync(&self) -> Result<()> {
        rfs::fdatasync(&self.file).map_err(|e| Error::io("fsync", &self.full, e.into()))
    }

    /// Renames the temp file over the final name (replacing a file or symlink there
    /// atomically). Durability of the data is the caller's: [`TempFile::sync`] or
    /// [`TargetDir::sync_all`] first.
    pub fn install(self) -> Result<()> {
        self.rename_into_place()
    }

    /// [`TempFile::install`], returning the file it replaced (if any) held open. Freeing a
    /// replaced file's cached pages takes a while for a large one (a tenth of a second per
    /// GiB), and happens when its last reference goes: dropping the returned descriptor
    /// off the hot path keeps that out of the rename. Only on local file systems: network
    /// and FUSE ones keep a removed file that is still open under a hidden name beside it
    /// (`.nfsXXXX`, `.fuse_hiddenXXXX`), which a scan of the target would then see; there
    /// the rename is plain and `None` is returned.
    pub fn install_holding_old(self) -> Result<Option<OwnedFd>> {
        let old = if frees_removed_files_quietly(&self.dir) {
            rfs::openat(
                &self.dir,
                self.path.name(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
        } else {
            None
        };
        self.rename_into_place()?;
        Ok(old)
    }

    /// The rename of [`TempFile::install`].
    fn rename_into_place(mut self) -> Result<()> {
        loosening(&[&self.dir], || {
            rfs::renameat(
                &self.dir,
                self.tmp_name.as_str(),
                &self.dir,
                self.path.name(),
            )
        })
        .map_err(|e| Error::io("rename into place", &self.full, e.into()))?;
        self.committed = true;
        Ok(())
    }
}

/// True on file systems where a removed file that is still open simply has no name (the
/// common local ones, by their `statfs` magic number).
fn frees_removed_files_quietly(dir: &OwnedFd) -> bool {
    const LOCAL: [u64; 7] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0x2FC1_2FC1, // zfs
        0xCA45_1A4E, // bcachefs
    ];
    rfs::fstatfs(dir).is_ok_and(|s| LOCAL.contains(&(s.f_type as u64)))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed && !self.kept.load(Ordering::Relaxed) {
            let _ = loosening(&[&self.dir], || {
                rfs::unlinkat(&self.dir, self.tmp_name.as_str(), AtFlags::empty())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn a_file_system_keeping_nanoseconds_gets_no_step_and_the_probe_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        assert_eq!(target.probe_mtime_step().unwrap(), 0);
        assert_eq!(target.mtime_step(), 0);
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            0,
            "the probe is gone"
        );
    }

    #[test]
    fn a_target_file_holding_the_seen_time_cut_to_the_step_is_still_as_seen() {
        let st = TargetStat {
            kind: Some(EntryKind::File),
            size: 4,
            mode: 0o644,
            mtime: MtimeNs(7_000_000_000),
            ino: 1,
        };
        let seen = Seen {
            size: 4,
            mtime: MtimeNs(7_400_000_000),
        };
        assert!(check_seen(&p("f"), &st, seen, 1_000_000_000).is_ok());
        assert!(check_seen(&p("f"), &st, seen, 0).is_err());
        let grown = Seen { size: 5, ..seen };
        assert!(check_seen(&p("f"), &st, grown, 1_000_000_000).is_err());
        // Touched behind Ferry's back to the next second: not the time it saw, cut.
        let touched = TargetStat {
            mtime: MtimeNs(8_000_000_000),
            ..st
        };
        assert!(check_seen(&p("f"), &touched, seen, 1_000_000_000).is_err());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_names_are_only_those_ferry_makes() {
        assert!(is_temp_name(&temp_name()));
        assert!(is_temp_name(".ferry-tmp-123-0badc0de-7"));
        for other in [
            ".ferry-tmp-project",
            ".ferry-tmp-",
            ".ferry-tmp-1-0badc0de",
            ".ferry-tmp-1-0badc0de-0-more",
            ".ferry-tmp--0badc0de-0",
            ".ferry-tmp-1-0badc0dx-0",
            ".ferry-tmp-1-badc0de-0",
            ".ferry-tmp-1-0badc0de-",
            "ferry-tmp-1-0badc0de-0",
            ".ferry-tmp-1-0BADC0DE-0",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn metadata_is_set_only_on_a_file_still_as_it_was_seen() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        let f = root.path().join("f");
        fs::write(&f, "as written").unwrap();
        let st = target.stat(&p("f")).unwrap().unwrap();
        let seen = Seen {
            size: st.size,
            mtime: st.mtime,
        };
        let later = MtimeNs(st.mtime.0 + 1_000_000_000);
        // Changed behind our back, same size: refused, nothing changed.
        fs::write(&f, "AS WRITTEN").unwrap();
        let moved = fs::File::options().write(true).open(&f).unwrap();
        moved
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        drop(moved);
        let err = target
            .update_meta(&p("f"), EntryKind::File, 0o600, later, Some(seen))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Precondition { reason, .. } if reason.contains("changed in the target")),
            "{err}"
        );
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        assert_ne!(mode, 0o600, "the mode was changed anyway");
        // As seen now: set.
        let st = target.stat(&p("f")).unwrap().unwrap();
        let seen = Seen {
            size: st.size,
            mtime: st.mtime,
        };
        target
            .update_meta(&p("f"), EntryKind::File, 0o600, later, Some(seen))
            .unwrap();
        let now = target.stat(&p("f")).unwrap().unwrap();
        assert_eq!((now.mode, now.mtime), (0o600, later));
    }

    #[test]
    fn metadata_set_through_a_pinned_entry_never_reaches_a_symlink_swapped_in() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        fs::write(&secret, "x").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        fs::write(root.path().join("f"), "mine").unwrap();
        let pinned = rfs::openat(
            &target.root_fd,
            "f",
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        // Between the check and the change, f becomes a symlink out of the root.
        fs::rename(root.path().join("f"), root.path().join("g")).unwrap();
        symlink(&secret, root.path().join("f")).unwrap();
        set_meta_pinned(&pinned, Mode::from_raw_mode(0o644), MtimeNs(1_000_000_000)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&secret), 0o600, "the symlink was followed");
        assert_eq!(
            mode(&root.path().join("g")),
            0o644,
            "the pinned file was not changed"
        );
        // And through the public call: a symlink where a file is expected is refused.
        let err = target
            .set_meta(&p("f"), EntryKind::File, 0o644, MtimeNs(0))
            .unwrap_err();
        assert!(matches!(err, Error::Precondition { .. }), "{err}");
        assert_eq!(mode(&secret), 0o600);
        target
            .set_meta(&p("g"), EntryKind::File, 0o640, MtimeNs(2_000_000_000))
            .unwrap();
        assert_eq!(mode(&root.path().join("g")), 0o640);
        let dir = root.path().join("d");
        fs::create_dir(&dir).unwrap();
        target
            .set_meta(&p("d"), EntryKind::Dir, 0o750, MtimeNs(3_000_000_000))
            .unwrap();
        assert_eq!(mode(&dir), 0o750);
        let mtime = fs::metadata(&dir).unwrap().modified().unwrap();
        assert_eq!(
            mtime,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(3)
        );
    }

    #[test]
    fn parts_written_together_land_back_to_back_even_more_than_one_call_takes() {
        let root = tempfile::tempdir().unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        let temp = target.create_temp(&p("f")).unwrap();
        // 3,000 parts (over the 1,024 one call takes), some empty, of varied lengths.
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 7 * 3) as usize])
            .collect();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        temp.write_parts_at(5, &slices).unwrap();
        temp.write_parts_at(0, &[b"ab", b"", b"cde"]).unwrap();
        temp.install().unwrap();
        let mut expected = b"abcde".to_vec();
        expected.extend(parts.concat());
        assert_eq!(fs::read(root.path().join("f")).unwrap(), expected);
    }

    #[test]
    fn installing_over_a_file_hands_back_the_replaced_file_still_readable() {
        let root = tempfile::tempdir().unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        let temp = target.create_temp(&p("f")).unwrap();
        temp.write_at(0, b"first").unwrap();
        assert!(temp.install_holding_old().unwrap().is_none());
        // A descriptor opened before the replacement (as the copy jobs hold) still reads
        // the old data while the held one keeps it alive.
        let reader = target.open_read(&p("f")).unwrap();
        let temp = target.create_temp(&p("f")).unwrap();
        temp.write_at(0, b"second").unwrap();
        let old = temp.install_holding_old().unwrap().expect("f was replaced");
        assert_eq!(fs::read(root.path().join("f")).unwrap(), b"second");
        assert_eq!(names(root.path()), ["f"]);
        let held = rfs::fstat(&old).unwrap();
        assert_eq!(held.st_ino, rfs::fstat(&reader).unwrap().st_ino);
        assert_eq!(held.st_nlink, 0, "the replaced file has no name left");
    }

    #[test]
    fn temp_files_created_through_parent_dirs_share_one_opened_directory_each() {
        let root = tempfile::tempdir().unwrap();
        for d in ["a", "a/b", "c"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        let target = TargetDir::open(root.path()).unwrap();
        let mut parents = ParentDirs::default();
        let paths = ["a/1", "a/b/2", "a/3", "c/4", "5", "a/b/6"];
        let temps: Vec<TempFile> = paths
            .iter()
            .map(|path| {
                let temp = target.create_temp_in(&mut parents, &p(path)).unwrap();
                temp.write_at(0, path.as_bytes()).unwrap();
                temp
            })
            .collect();
        // One descriptor per directory below the root (the root's own is the target's).
        let mut opened: Vec<_> = parents.open.keys().cloned().collect();
        opened.sort();
        let under = |d: &str| root.path().join(d);
        assert_eq!(opened, ["a", "a/b", "c"]);
        assert!(Arc::ptr_eq(&temps[0].dir, &temps[2].dir));
        assert!(Arc::ptr_eq(&temps[1].dir, &temps[5].dir));
        assert!(Arc::ptr_eq(&temps[4].dir, &target.root_fd));
        drop(parents);
        for temp in temps {
            temp.install().unwrap();
        }
        for path in paths {
            assert_eq!(fs::read(root.path().join(path)).unwrap(), path.as_bytes());
        }
        assert_eq!(names(&under("a")), ["1", "3", "b"]);
        assert_eq!(names(&under("a/b")), ["2", "6"]);
        assert_eq!(names(&under("c")), ["4"]);
    }

    #[test]
    fn parent_dirs_moved_to_another_target_open_its_directories_afresh() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut parents = ParentDirs::default();
        for (root, what) in [(&one, b"one"), (&two, b"two")] {
            fs::create_dir(root.path().join("a")).unwrap();
            let target = TargetDir::open(root.path()).unwrap();
            let temp = target.create_temp_in(&mut parents, &p("a/f")).unwrap();
            temp.write_at(0, what).unwrap();
            temp.install().unwrap();
        }
        assert_eq!(fs::read(one.path().join("a/f")).unwrap(), b"one");
        assert_eq!(fs::read(two.path().join("a/f")).unwrap(), b"two");
    }

    #[test]
    fn parent_dirs_refuse_a_directory_turned_symlink_they_have_not_opened() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("a")).unwrap();
        symlink(outside.path(), root.path().join("s")).unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        let mut parents = ParentDirs::default();
        target.create_temp_in(&mut parents, &p("a/1")).unwrap();
        let err = target.create_temp_in(&mut parents, &p("s/2")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(names(outside.path()).is_empty());
        assert_eq!(parents.open.len(), 1, "a refused directory is not kept");
    }

    #[test]
    fn a_temp_file_dropped_without_commit_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("sub")).unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        for path in ["f", "sub/f"] {
            let temp = target.create_temp(&p(path)).unwrap();
            temp.write_at(0, b"partial").unwrap();
            temp.set_len(100).unwrap();
            drop(temp);
        }
        assert_eq!(names(root.path()), ["sub"]);
        assert!(names(&root.path().join("sub")).is_empty());
    }

    #[test]
    fn a_temp_file_gets_its_length_whether_its_tail_was_written_or_left_a_hole() {
        let root = tempfile::tempdir().unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        // (writes at offsets, the length set)
        type Case<'a> = (&'a [(u64, &'a [u8])], u64);
        let cases: [Case<'_>; 5] = [
            // A tail of zeros never written: a hole up to the length.
            (&[(0, b"head")], 4096),
            // Written to the end, out of order: already that long.
            (&[(4, b"tail"), (0, b"head")], 8),
            // Nothing written at all, or only an empty write past the end.
            (&[], 10),
            (&[(0, b"head"), (64, b"")], 64),
            (&[], 0),
        ];
        for (i, (writes, len)) in cases.into_iter().enumerate() {
            let name = format!("f{i}");
            let temp = target.create_temp(&p(&name)).unwrap();
            for (at, bytes) in writes {
                temp.write_at(*at, bytes).unwrap();
            }
            temp.set_len(len).unwrap();
            temp.commit(0o644, MtimeNs(1_000_000_000), false).unwrap();
            let got = fs::read(root.path().join(&name)).unwrap();
            assert_eq!(got.len() as u64, len, "{name}");
            for (at, bytes) in writes {
                assert_eq!(&got[*at as usize..*at as usize + bytes.len()], *bytes);
            }
        }
    }

    #[test]
    fn a_committed_temp_file_appears_under_its_final_name_only() {
        let root = tempfile::tempdir().unwrap();
        let target = TargetDir::open(root.path()).unwrap();
        let temp = target.create_temp(&p("f")).unwrap();
        temp.write_at(0, b"whole").unwrap();
        temp.commit(0o640, MtimeNs(1_234_567_890_123_456_789), false)
            .unwrap();
        assert_eq!(names(root.path()), ["f"]);
        let st = target.stat(&p("f")).unwrap().unwrap();
        assert_eq!(
            (st.kind, st.size, st.mode, st.mtime),
            (
                Some(EntryKind::File),
                5,
                0o640,
                MtimeNs(1_234_567_890_123_456_789)
            )
        );
    }

    #[test]
    fn remove_tree_removes_links_not_what_they_point_at() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep me").unwrap();
        fs::create_dir_all(root.path().join("t/sub")).unwrap();
        fs::write(root.path().join("t/sub/f"), b"f").unwrap();
        symlink(outside.path(), root.path().join("t/link")).unwrap();
        symlink(outside.path(), root.path().join("t/sub/link")).unwrap();
        symlink(outside.path(), root.path().join("top-link")).unwrap();

        let target = TargetDir::open(root.path()).unwrap();
        target.remove_tree(&p("t")).unwrap();
        target.remove_tree(&p("top-link")).unwrap();
        assert!(names(root.path()).is_empty());
        assert_eq!(names(outside.path()), ["precious"]);
        assert_eq!(
            fs::read(outside.path().join("precious")).unwrap(),
            b"keep me"
        );
    }

    #[test]
    fn nothing_is_created_through_a_symlinked_or_non_dir_parent() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        symlink(outside.path(), root.path().join("link")).unwrap();
        symlink(outside.path(), root.path().join("real/link")).unwrap();
        fs::write(root.path().join("file"), b"").unwrap();

        let target = TargetDir::open(root.path()).unwrap();
        for path in ["link/f", "real/link/f", "link/deeper/f", "file/f"] {
            match target.create_temp(&p(path)) {
                Err(Error::Precondition { path: got, .. }) => assert_eq!(got, p(path)),
                other => panic!("create_temp({path}) gave {other:?}"),
            }
            assert!(
                matches!(target.make_dir(&p(path)), Err(Error::Precondition { .. })),
                "{path}"
            );
            assert!(
                matches!(
                    target.symlink(&p(path), "x"),
                    Err(Error::Precondition { .. })
                ),
                "{path}"
            );
        }
        assert!(names(outside.path()).is_empty());
        assert_eq!(names(root.path()), ["file", "link", "real"]);
        assert_eq!(names(&root.path().join("real")), ["link"]);
    }
}
