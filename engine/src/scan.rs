//! The scanner: one `lstat` per entry under a root, building an `Index` of files, dirs and
//! symlinks; special files, unreadable entries and non-UTF-8 names are skipped with a reason.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::chunk::ChunkParams;
use crate::entry::{EntryKind, EntryState, FileEntry, MtimeNs, Seq, VersionVector};
use crate::error::{Error, Result};
use crate::index::{Index, StatKey};
use crate::relpath::RelPath;
use crate::target::TEMP_PREFIX;

/// An entry the scan passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The path as the user would recognise it (lossy for non-UTF-8 names).
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// What a scan found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// The entries, with `Unreadable` ones for directories that could not be listed.
    pub index: Index,
    /// Entries passed over, each worth a warning.
    pub skipped: Vec<Skipped>,
}

/// Options for [`scan`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOptions {
    /// Chunker parameters recorded in the index.
    pub params: ChunkParams,
    /// Leave out the Applier's temp files (scanning a target folder).
    pub skip_temp_files: bool,
}

/// Scans the tree under `root` (which must be a directory) without reading file contents.
pub fn scan(root: &Path, opts: ScanOptions) -> Result<ScanOutcome> {
    let meta = fs::metadata(root).map_err(|e| Error::io("stat folder", root, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "scan",
            root,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut out = ScanOutcome {
        index: Index::new(opts.params),
        skipped: Vec::new(),
    };
    // Reading the root itself must work; failures below it are per-entry skips.
    let top = fs::read_dir(root).map_err(|e| Error::io("list folder", root, e))?;
    let mut stack: Vec<(Option<RelPath>, fs::ReadDir)> = vec![(None, top)];
    while let Some((dir, entries)) = stack.pop() {
        for item in entries {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    out.skipped.push(Skipped {
                        path: dir.as_ref().map_or(root.to_owned(), |d| d.under(root)),
                        reason: format!("listing failed part way: {e}"),
                    });
                    continue;
                }
            };
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                out.skipped.push(Skipped {
                    path: item.path(),
                    reason: "name is not valid UTF-8".into(),
                });
                continue;
            };
            if opts.skip_temp_files && name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = match &dir {
                None => RelPath::from_name(name),
                Some(d) => d.join(name),
            };
            let path = match path {
                Ok(p) => p,
                Err(e) => {
                    out.skipped.push(Skipped {
                        path: item.path(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let md = match item.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.skipped.push(Skipped {
                        path: item.path(),
                        reason: format!("cannot stat: {e}"),
                    });
                    continue;
                }
            };
            match entry_from_metadata(root, &path, &md) {
                Ok((entry, stat)) => {
                    if entry.kind == EntryKind::Dir {
                        match fs::read_dir(path.under(root)) {
                            Ok(rd) => stack.push((Some(path.clone()), rd)),
                            Err(e) => {
                                out.skipped.push(Skipped {
                                    path: path.under(root),
                                    reason: format!("cannot list directory: {e}"),
                                });
                                let mut e = entry;
                                e.state = EntryState::Unreadable;
                                out.index.insert(e, None);
                                continue;
                            }
                        }
                    }
                    out.index.insert(entry, Some(stat));
                }
                Err(reason) => out.skipped.push(Skipped {
                    path: path.under(root),
                    reason,
                }),
            }
        }
    }
    Ok(out)
}

/// Builds the entry for `path` from its `lstat` metadata, or says why it cannot be one.
pub fn entry_from_metadata(
    root: &Path,
    path: &RelPath,
    md: &fs::Metadata,
) -> std::result::Result<(FileEntry, StatKey), String> {
    let ft = md.file_type();
    let (kind, symlink_target) = if ft.is_file() {
        (EntryKind::File, None)
    } else if ft.is_dir() {
        (EntryKind::Dir, None)
    } else if ft.is_symlink() {
        let t = fs::read_link(path.under(root)).map_err(|e| format!("cannot read link: {e}"))?;
        let t = t
            .into_os_string()
            .into_string()
            .map_err(|_| "symlink target is not valid UTF-8".to_owned())?;
        (EntryKind::Symlink, Some(t))
    } else {
        return Err("special file (fifo, socket or device) is not replicated".into());
    };
    let mtime = MtimeNs(md.mtime() * 1_000_000_000 + md.mtime_nsec());
    let stat = StatKey {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: mtime.0,
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
    };
    let entry = FileEntry {
        path: path.clone(),
        kind,
        state: EntryState::Present,
        size: if kind == EntryKind::File { md.size() } else { 0 },
        mtime,
        mode: md.mode() & 0o7777,
        content: None,
        symlink_target,
        seq: Seq::default(),
        version: VersionVector::default(),
    };
    Ok((entry, stat))
}
