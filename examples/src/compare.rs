//! Tree comparison used to verify that a sync produced an exact replica.
//!
//! [`compare_trees`] walks an *expected* tree (the sync source) and an *actual* tree (the
//! destination) side by side without following symlinks, and reports every difference in
//! names, entry kinds, file sizes, file contents and symlink targets. Metadata such as
//! permissions and mtimes is deliberately not compared.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Buffer size used when comparing file contents.
const CHUNK: usize = 256 * 1024;

/// Kind of a directory entry (symlinks are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

impl EntryKind {
    /// Kind of the entry described by `meta` (from `symlink_metadata`).
    pub fn of(meta: &Metadata) -> Self {
        let t = meta.file_type();
        if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_dir() {
            EntryKind::Dir
        } else if t.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "special file",
        })
    }
}

/// One difference between the expected and the actual tree. Paths are relative to the roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Present in the expected tree, absent from the actual one.
    Missing {
        /// Relative path.
        path: PathBuf,
        /// Kind in the expected tree.
        kind: EntryKind,
    },
    /// Present in the actual tree, absent from the expected one.
    Extra {
        /// Relative path.
        path: PathBuf,
        /// Kind in the actual tree.
        kind: EntryKind,
    },
    /// Present in both with different kinds.
    KindMismatch {
        /// Relative path.
        path: PathBuf,
        /// Kind in the expected tree.
        expected: EntryKind,
        /// Kind in the actual tree.
        actual: EntryKind,
    },
    /// Regular file with a different size.
    SizeMismatch {
        /// Relative path.
        path: PathBuf,
        /// Size in the expected tree.
        expected: u64,
        /// Size in the actual tree.
        actual: u64,
    },
    /// Regular file with the same size but different bytes.
    ContentMismatch {
        /// Relative path.
        path: PathBuf,
        /// Offset of the first differing byte.
        offset: u64,
    },
    /// Symlink with a different target.
    SymlinkMismatch {
        /// Relative path.
        path: PathBuf,
        /// Target in the expected tree.
        expected: PathBuf,
        /// Target in the actual tree.
        actual: PathBuf,
    },
}

impl Difference {
    /// The relative path the difference is about.
    pub fn path(&self) -> &Path {
        match self {
            Difference::Missing { path, .. }
            | Difference::Extra { path, .. }
            | Difference::KindMismatch { path, .. }
            | Difference::SizeMismatch { path, .. }
            | Difference::ContentMismatch { path, .. }
            | Difference::SymlinkMismatch { path, .. } => path,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing { path, kind } => write!(f, "missing {kind}: {}", path.display()),
            Difference::Extra { path, kind } => write!(f, "extra {kind}: {}", path.display()),
            Difference::KindMismatch {
                path,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "kind differs: {} (expected {expected}, found {actual})",
                    path.display()
                )
            }
            Difference::SizeMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "size differs: {} (expected {expected} bytes, found {actual})",
                path.display()
            ),
            Difference::ContentMismatch { path, offset } => {
                write!(
                    f,
                    "content differs: {} (first difference at byte {offset})",
                    path.display()
                )
            }
            Difference::SymlinkMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "symlink target differs: {} (expected {}, found {})",
                path.display(),
                expected.display(),
                actual.display()
            ),
        }
    }
}

/// Result of [`compare_trees`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompareReport {
    /// All differences found, in walk order (sorted by name within each directory).
    pub differences: Vec<Difference>,
    /// Regular files present in both trees and compared.
    pub files: u64,
    /// Directories present in both trees (including the roots).
    pub dirs: u64,
    /// Symlinks present in both trees.
    pub symlinks: u64,
    /// Bytes of file content compared (per side).
    pub bytes: u64,
}

impl CompareReport {
    /// `true` if the trees are identical (as far as this comparer looks).
    pub fn is_equal(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the tree at `actual` against the tree at `expected`.
///
/// Both roots must be directories. A missing `actual` root is reported as a single
/// [`Difference::Missing`] with an empty path rather than an error. Missing or extra
/// directories are reported once, without listing their contents.
pub fn compare_trees(expected: &Path, actual: &Path) -> io::Result<CompareReport> {
    let mut report = CompareReport::default();
    let em = fs::symlink_metadata(expected)?;
    if !em.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", expected.display()),
        ));
    }
    match fs::symlink_metadata(actual) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.differences.push(Difference::Missing {
                path: PathBuf::new(),
                kind: EntryKind::Dir,
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
        Ok(am) if !am.is_dir() => {
            report.differences.push(Difference::KindMismatch {
                path: PathBuf::new(),
                expected: EntryKind::Dir,
                actual: EntryKind::of(&am),
            });
            return Ok(report);
        }
        Ok(_) => {}
    }
    let mut bufs = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    compare_dir(expected, actual, Path::new(""), &mut report, &mut bufs)?;
    Ok(report)
}

fn list_dir(dir: &Path) -> io::Result<BTreeMap<OsString, Metadata>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        out.insert(entry.file_name(), meta);
    }
    Ok(out)
}

fn compare_dir(
    exp_root: &Path,
    act_root: &Path,
    rel: &Path,
    report: &mut CompareReport,
    bufs: &mut (Vec<u8>, Vec<u8>),
) -> io::Result<()> {
    report.dirs += 1;
    let exp = list_dir(&exp_root.join(rel))?;
    let act = list_dir(&act_root.join(rel))?;
    let mut ei = exp.into_iter().peekable();
    let mut ai = act.into_iter().peekable();
    loop {
        let order = match (ei.peek(), ai.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((en, _)), Some((an, _))) => en.cmp(an),
        };
        match order {
            Ordering::Less => {
                let (name, meta) = ei.next().expect("peeked");
                report.differences.push(Difference::Missing {
                    path: rel.join(name),
                    kind: EntryKind::of(&meta),
                });
            }
            Ordering::Greater => {
                let (name, meta) = ai.next().expect("peeked");
                report.differences.push(Difference::Extra {
                    path: rel.join(name),
                    kind: EntryKind::of(&meta),
                });
            }
            Ordering::Equal => {
                let (name, em) = ei.next().expect("peeked");
                let (_, am) = ai.next().expect("peeked");
                let path = rel.join(name);
                let (ek, ak) = (EntryKind::of(&em), EntryKind::of(&am));
                if ek != ak {
                    report.differences.push(Difference::KindMismatch {
                        path,
                        expected: ek,
                        actual: ak,
                    });
                    continue;
                }
                match ek {
                    EntryKind::Dir => compare_dir(exp_root, act_root, &path, report, bufs)?,
                    EntryKind::File => {
                        report.files += 1;
                        if em.len() != am.len() {
                            report.differences.push(Difference::SizeMismatch {
                                path,
                                expected: em.len(),
                                actual: am.len(),
                            });
                        } else {
                            report.bytes += em.len();
                            if let Some(offset) = first_difference(
                                &exp_root.join(&path),
                                &act_root.join(&path),
                                bufs,
                            )? {
                                report
                                    .differences
                                    .push(Difference::ContentMismatch { path, offset });
                            }
                        }
                    }
                    EntryKind::Symlink => {
                        report.symlinks += 1;
                        let et = fs::read_link(exp_root.join(&path))?;
                        let at = fs::read_link(act_root.join(&path))?;
                        if et != at {
                            report.differences.push(Difference::SymlinkMismatch {
                                path,
                                expected: et,
                                actual: at,
                            });
                        }
                    }
                    EntryKind::Other => {}
                }
            }
        }
    }
    Ok(())
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Offset of the first differing byte of two files, or `None` if they are identical.
/// (A length difference counts as a difference at the end of the shorter file.)
pub fn first_difference(
    a: &Path,
    b: &Path,
    bufs: &mut (Vec<u8>, Vec<u8>),
) -> io::Result<Option<u64>> {
    let mut fa = File::open(a)?;
    let mut fb = File::open(b)?;
    let (ba, bb) = bufs;
    if ba.is_empty() {
        ba.resize(CHUNK, 0);
    }
    if bb.len() != ba.len() {
        bb.resize(ba.len(), 0);
    }
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, ba)?;
        let nb = read_full(&mut fb, bb)?;
        let n = na.min(nb);
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .expect("slices differ");
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a small tree with a nested dir, two files and a symlink.
    fn make_tree(root: &Path) {
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("top.txt"), b"hello world").unwrap();
        fs::write(root.join("a/b/deep.bin"), vec![7u8; 300_000]).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        std::os::unix::fs::symlink("top.txt", root.join("link")).unwrap();
    }

    fn pair() -> (tempfile::TempDir, tempfile::TempDir) {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        make_tree(a.path());
        make_tree(b.path());
        (a, b)
    }

    #[test]
    fn identical_trees_are_equal() {
        let (a, b) = pair();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert!(r.is_equal(), "{:?}", r.differences);
        assert_eq!(r.files, 2);
        assert_eq!(r.dirs, 4);
        assert_eq!(r.symlinks, 1);
        assert_eq!(r.bytes, 300_011);
    }

    #[test]
    fn detects_content_difference() {
        let (a, b) = pair();
        let mut data = vec![7u8; 300_000];
        data[CHUNK + 5] = 8; // beyond the first buffer
        fs::write(b.path().join("a/b/deep.bin"), data).unwrap();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert_eq!(
            r.differences,
            vec![Difference::ContentMismatch {
                path: "a/b/deep.bin".into(),
                offset: CHUNK as u64 + 5
            }]
        );
    }

    #[test]
    fn detects_size_difference() {
        let (a, b) = pair();
        fs::write(b.path().join("top.txt"), b"hello").unwrap();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert_eq!(
            r.differences,
            vec![Difference::SizeMismatch {
                path: "top.txt".into(),
                expected: 11,
                actual: 5
            }]
        );
    }

    #[test]
    fn detects_missing_file() {
        let (a, b) = pair();
        fs::remove_file(b.path().join("a/b/deep.bin")).unwrap();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert_eq!(
            r.differences,
            vec![Difference::Missing {
                path: "a/b/deep.bin".into(),
                kind: EntryKind::File
            }]
        );
    }

    #[test]
    fn detects_extra_file_and_dir() {
        let (a, b) = pair();
        fs::write(b.path().join("a/extra.txt"), b"x").unwrap();
        fs::create_dir(b.path().join("zzz")).unwrap();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert_eq!(
            r.differences,
            vec![
                Difference::Extra {
                    path: "a/extra.txt".into(),
                    kind: EntryKind::File
                },
                Difference::Extra {
                    path: "zzz".into(),
                    kind: EntryKind::Dir
                },
            ]
        );
    }

    #[test]
    fn detects_kind_difference() {
        let (a, b) = pair();
        fs::remove_dir(b.path().join("empty")).unwrap();
        fs::write(b.path().join("empty"), b"").unwrap();
        fs::remove_file(b.path().join("link")).unwrap();
        fs::write(b.path().join("link"), b"hello world").unwrap();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert_eq!(
            r.differences,
            vec![
                Difference::KindMismatch {
                    path: "empty".into(),
                    expected: EntryKind::Dir,
                    actual: EntryKind::File
                },
                Difference::KindMismatch {
                    path: "link".into(),
                    expected: EntryKind::Symlink,
                    actual: EntryKind::File
                },
            ]
        );
    }

    #[test]
    fn detects_symlink_target_difference_and_missing_root() {
        let (a, b) = pair();
        fs::remove_file(b.path().join("link")).unwrap();
        std::os::unix::fs::symlink("a", b.path().join("link")).unwrap();
        let r = compare_trees(a.path(), b.path()).unwrap();
        assert_eq!(
            r.differences,
            vec![Difference::SymlinkMismatch {
                path: "link".into(),
                expected: "top.txt".into(),
                actual: "a".into()
            }]
        );
        let gone = b.path().join("does-not-exist");
        let r = compare_trees(a.path(), &gone).unwrap();
        assert_eq!(
            r.differences,
            vec![Difference::Missing {
                path: PathBuf::new(),
                kind: EntryKind::Dir
            }]
        );
    }
}
