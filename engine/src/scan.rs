//! The scanner: one `lstat` per entry under a root, building an `Index` of files, dirs and
//! symlinks; special files, unreadable entries and non-UTF-8 names are skipped with a reason.
//! Entries matching the folder's [`IgnoreRules`] are left out silently, and ignored
//! directories are not descended into. A full scan walks subtrees on several threads
//! (the directories near the root are listed first, in order; each one below them is a
//! job), and puts the pieces together in the order one thread would have found them.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::chunk::ChunkParams;
use crate::entry::{EntryKind, EntryState, FileEntry, MtimeNs, Seq, VersionVector};
use crate::error::{Error, Result};
use crate::ignore::IgnoreRules;
use crate::index::{Index, StatKey};
use crate::relpath::RelPath;
use crate::target::is_temp_entry;

/// Why an entry was passed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipKind {
    /// A fifo, socket or device: by design not replicated.
    Special,
    /// Could not be read or listed: data that is not mirrored.
    Unreadable,
    /// A name or symlink target that is no valid relative path or string (not UTF-8):
    /// data that is not mirrored, and that no source entry can ever be.
    Unrepresentable,
}

impl SkipKind {
    /// True for what leaves a gap in the mirror (not a special file, skipped by design).
    pub fn is_gap(self) -> bool {
        self != SkipKind::Special
    }
}

/// An entry the scan passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The path as the user would recognise it (lossy for non-UTF-8 names).
    pub path: PathBuf,
    /// Special (expected) or unreadable (a gap in the mirror).
    pub kind: SkipKind,
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
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Chunker parameters recorded in the index.
    pub params: ChunkParams,
    /// Leave out the Applier's temp files (scanning a target folder).
    pub skip_temp_files: bool,
    /// Entries left out (and directories not descended into), never reported as skipped.
    pub ignore: IgnoreRules,
}

/// Threads a full scan walks with, at most: listing and `lstat` are system calls that run
/// in parallel (more help on a network file system, little on a local disk's cache).
const SCAN_THREADS: usize = 4;
/// Directories this many levels below the root are each walked by one job; those above
/// them are listed (and their entries looked at) before the jobs start.
const SPLIT_DEPTH: usize = 2;

/// Scans the tree under `root` (which must be a directory) without reading file contents.
/// Directories are listed in name order, depth first, so entries come out already in
/// [`RelPath`] order and the index is built in one pass.
pub fn scan(root: &Path, opts: ScanOptions) -> Result<ScanOutcome> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    scan_with(root, opts, threads.min(SCAN_THREADS))
}

/// [`scan`] on at most `threads` threads (one: no thread is started).
fn scan_with(root: &Path, opts: ScanOptions, threads: usize) -> Result<ScanOutcome> {
    let meta = fs::metadata(root).map_err(|e| Error::io("stat folder", root, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "scan",
            root,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let params = opts.params;
    let mut w = Walk {
        root,
        opts,
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    // Listing the root itself must work; failures below it are per-entry skips.
    let top = w
        .list(None)
        .map_err(|e| Error::io("list folder", root, e))?;
    if threads > 1 {
        w.walk_parallel(top, threads);
    } else {
        w.walk(None, top);
    }
    let index = Index::from_sorted(params, w.entries);
    Ok(ScanOutcome {
        index,
        skipped: w.skipped,
    })
}

/// Scans `path` and everything below it: what a watcher's dirty path now holds. The result
/// is empty when nothing is there, when a parent component is not a real directory
/// (a symlink is never walked through), or when the path or an ancestor is ignored.
pub fn scan_subtree(root: &Path, path: &RelPath, opts: ScanOptions) -> Result<ScanOutcome> {
    let params = opts.params;
    let nothing = || ScanOutcome {
        index: Index::new(params),
        skipped: Vec::new(),
    };
    if path
        .parent()
        .is_some_and(|p| opts.ignore.is_ignored(&p, true))
    {
        return Ok(nothing());
    }
    let mut w = Walk {
        root,
        opts,
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    let mut ancestor = path.parent();
    while let Some(a) = ancestor {
        match fs::symlink_metadata(a.under(root)) {
            Ok(m) if m.is_dir() => {}
            // Gone or not a directory: nothing there. Anything else (a path too long, no
            // permission) is said, as a full scan would.
            Err(e)
                if e.kind() != io::ErrorKind::NotFound
                    && e.kind() != io::ErrorKind::NotADirectory =>
            {
                w.skip(
                    a.under(root),
                    SkipKind::Unreadable,
                    format!("cannot stat: {e}"),
                );
                return Ok(ScanOutcome {
                    index: Index::new(params),
                    skipped: w.skipped,
                });
            }
            _ => return Ok(nothing()),
        }
        ancestor = a.parent();
    }
    match fs::symlink_metadata(path.under(root)) {
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => {}
        Err(e) => w.skip(
            path.under(root),
            SkipKind::Unreadable,
            format!("cannot stat: {e}"),
        ),
        Ok(md) => {
            if w.opts.skip_temp_files && is_temp_entry(path.name(), md.is_dir()) {
                // The Applier's own temp files are never entries.
            } else if w
                .opts
                .ignore
                .matches_entry(Path::new(path.as_str()), md.is_dir())
            {
                // Ignored: not an entry, and nothing below it is either.
            } else {
                match entry_from_metadata(root, path, &md) {
                    Ok((entry, stat)) => {
                        let is_dir = entry.kind == EntryKind::Dir;
                        w.entries.push((entry, Some(stat)));
                        if is_dir {
                            let mut stack = Vec::new();
                            let mut dirs = Vec::new();
                            w.descend(path.clone(), &mut stack, &mut dirs);
                            if let (Some(items), Some(start)) = (stack.pop(), dirs.pop()) {
                                w.walk(start, items.collect());
                            }
                        }
                    }
                    Err((kind, reason)) => w.skip(path.under(root), kind, reason),
                }
            }
        }
    }
    Ok(ScanOutcome {
        index: Index::from_sorted(params, w.entries),
        skipped: w.skipped,
    })
}

/// A directory's listing entry, with its name.
type Item = (OsString, fs::DirEntry);

/// Entries found, with what was skipped.
type Found = (Vec<(FileEntry, Option<StatKey>)>, Vec<Skipped>);

/// A stretch of a parallel scan's result, in order.
enum Part {
    /// Found while splitting.
    Here(Found),
    /// What the next job found.
    Job,
}

/// A directory below [`SPLIT_DEPTH`], walked by one job: its parent and its listing entry.
type Job = (Option<RelPath>, Item);

struct Walk<'a> {
    root: &'a Path,
    opts: ScanOptions,
    entries: Vec<(FileEntry, Option<StatKey>)>,
    skipped: Vec<Skipped>,
}

impl Walk<'_> {
    /// Depth first from the listing `items` of directory `start`, in path order.
    fn walk(&mut self, start: Option<RelPath>, items: Vec<(OsString, fs::DirEntry)>) {
        let mut stack: Vec<std::vec::IntoIter<(OsString, fs::DirEntry)>> = vec![items.into_iter()];
        let mut dirs: Vec<Option<RelPath>> = vec![start];
        while let Some(iter) = stack.last_mut() {
            let Some(item) = iter.next() else {
                stack.pop();
                dirs.pop();
                continue;
            };
            let parent = dirs.last().cloned().flatten();
            if let Some(dir) = self.visit(parent.as_ref(), &item) {
                self.descend(dir, &mut stack, &mut dirs);
            }
        }
    }

    fn descend(
        &mut self,
        dir: RelPath,
        stack: &mut Vec<std::vec::IntoIter<(OsString, fs::DirEntry)>>,
        dirs: &mut Vec<Option<RelPath>>,
    ) {
        match self.list(Some(&dir)) {
            Ok(children) => {
                stack.push(children.into_iter());
                dirs.push(Some(dir));
            }
            // Gone (or replaced by a file) since it was seen: it is not there to mirror, and
            // a live Watcher reports the change. Its entry goes rather than being kept as
            // unreadable, which would protect a stale copy at the target.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                if self.entries.last().is_some_and(|(e, _)| e.path == dir) {
                    self.entries.pop();
                }
            }
            Err(e) => {
                self.skip(
                    dir.under(self.root),
                    SkipKind::Unreadable,
                    format!("cannot list directory: {e}"),
                );
                if let Some((e, _)) = self.entries.last_mut() {
                    e.state = EntryState::Unreadable;
                }
            }
        }
    }

    fn skip(&mut self, path: PathBuf, kind: SkipKind, reason: String) {
        self.skipped.push(Skipped { path, kind, reason });
    }

    /// [`Walk::walk`] from the root's listing `top`, with the subtrees below
    /// [`SPLIT_DEPTH`] walked by `threads` threads.
    fn walk_parallel(&mut self, top: Vec<Item>, threads: usize) {
        let mut parts = Vec::new();
        let mut jobs = Vec::new();
        self.split(None, top, 1, &mut parts, &mut jobs);
        self.flush_into(&mut parts);
        let mut done = self.run_jobs(jobs, threads).into_iter();
        for part in parts {
            let (entries, skipped) = match part {
                Part::Here(found) => found,
                Part::Job => done.next().expect("one result per job"),
            };
            self.entries.extend(entries);
            self.skipped.extend(skipped);
        }
    }

    /// Looks at `items` (the listing of `dir`, `depth` levels below the root) in order:
    /// directories above [`SPLIT_DEPTH`] are listed and split in turn, those at it become
    /// jobs (a job looks at the directory itself too, as [`Walk::walk`] does). `parts`
    /// says where each job's entries go among those found here.
    fn split(
        &mut self,
        dir: Option<RelPath>,
        items: Vec<Item>,
        depth: usize,
        parts: &mut Vec<Part>,
        jobs: &mut Vec<Job>,
    ) {
        for item in items {
            if depth >= SPLIT_DEPTH && item.1.file_type().is_ok_and(|t| t.is_dir()) {
                self.flush_into(parts);
                parts.push(Part::Job);
                jobs.push((dir.clone(), item));
                continue;
            }
            let Some(sub) = self.visit(dir.as_ref(), &item) else {
                continue;
            };
            let mut stack = Vec::new();
            let mut dirs = Vec::new();
            self.descend(sub, &mut stack, &mut dirs);
            if let (Some(children), Some(sub)) = (stack.pop(), dirs.pop()) {
                if depth >= SPLIT_DEPTH {
                    // Listed as something else, a directory by the time it was looked at.
                    self.walk(sub, children.collect());
                } else {
                    self.split(sub, children.collect(), depth + 1, parts, jobs);
                }
            }
        }
    }

    /// Moves what was found here so far into a part of its own.
    fn flush_into(&mut self, parts: &mut Vec<Part>) {
        if !self.entries.is_empty() || !self.skipped.is_empty() {
            parts.push(Part::Here((
                std::mem::take(&mut self.entries),
                std::mem::take(&mut self.skipped),
            )));
        }
    }

    /// Walks each of `jobs` on one of `threads` threads, each on a walk of its own; what
    /// they found, in the jobs' order.
    fn run_jobs(&self, jobs: Vec<Job>, threads: usize) -> Vec<Found> {
        let workers = threads.min(jobs.len());
        let done = Mutex::new(Vec::with_capacity(jobs.len()));
        let queue = Mutex::new(jobs.into_iter().enumerate());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, (parent, item))) = next else {
                        break;
                    };
                    let mut w = Walk {
                        root: self.root,
                        opts: self.opts.clone(),
                        entries: Vec::new(),
                        skipped: Vec::new(),
                    };
                    w.walk(parent, vec![item]);
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, (w.entries, w.skipped)));
                });
            }
        });
        let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
        done.sort_unstable_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, found)| found).collect()
    }

    /// The directory's entries in name order.
    fn list(&mut self, dir: Option<&RelPath>) -> io::Result<Vec<(OsString, fs::DirEntry)>> {
        let path = dir.map_or(self.root.to_owned(), |d| d.under(self.root));
        let mut items = Vec::new();
        for item in fs::read_dir(&path)? {
            match item {
                Ok(i) => items.push((i.file_name(), i)),
                Err(e) => self.skip(
                    path.clone(),
                    SkipKind::Unreadable,
                    format!("listing failed part way: {e}"),
                ),
            }
        }
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(items)
    }

    /// Records one directory entry; returns its path when it is a directory to descend into.
    fn visit(
        &mut self,
        dir: Option<&RelPath>,
        (name, item): &(OsString, fs::DirEntry),
    ) -> Option<RelPath> {
        if !self.opts.ignore.is_empty() {
            // Checked on the raw name, so an ignored entry whose name is not UTF-8 is not
            // reported either; the file type usually comes with the listing, without a stat.
            let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
            let relative = match dir {
                None => PathBuf::from(name),
                Some(d) => Path::new(d.as_str()).join(name),
            };
            if self.opts.ignore.matches_entry(&relative, is_dir) {
                return None;
            }
        }
        let Some(name) = name.to_str() else {
            self.skip(
                item.path(),
                SkipKind::Unrepresentable,
                "name is not valid UTF-8".into(),
            );
            return None;
        };
        let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
        if self.opts.skip_temp_files && is_temp_entry(name, is_dir) {
            return None;
        }
        let path = match dir {
            None => RelPath::from_name(name),
            Some(d) => d.join(name),
        };
        let path = match path {
            Ok(p) => p,
            Err(e) => {
                self.skip(item.path(), SkipKind::Unrepresentable, e.to_string());
                return None;
            }
        };
        let md = match item.metadata() {
            Ok(m) => m,
            // Deleted since it was listed: it simply is not there any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.skip(
                    item.path(),
                    SkipKind::Unreadable,
                    format!("cannot stat: {e}"),
                );
                return None;
            }
        };
        match entry_from_metadata(self.root, &path, &md) {
            Ok((entry, stat)) => {
                let is_dir = entry.kind == EntryKind::Dir;
                self.entries.push((entry, Some(stat)));
                is_dir.then_some(path)
            }
            Err((kind, reason)) => {
                self.skip(path.under(self.root), kind, reason);
                None
            }
        }
    }
}

/// Builds the entry for `path` from its `lstat` metadata, or says why it cannot be one.
pub fn entry_from_metadata(
    root: &Path,
    path: &RelPath,
    md: &fs::Metadata,
) -> std::result::Result<(FileEntry, StatKey), (SkipKind, String)> {
    let ft = md.file_type();
    let (kind, symlink_target) = if ft.is_file() {
        (EntryKind::File, None)
    } else if ft.is_dir() {
        (EntryKind::Dir, None)
    } else if ft.is_symlink() {
        let t = fs::read_link(path.under(root))
            .map_err(|e| (SkipKind::Unreadable, format!("cannot read link: {e}")))?;
        let t = t.into_os_string().into_string().map_err(|_| {
            (
                SkipKind::Unrepresentable,
                "symlink target is not valid UTF-8".to_owned(),
            )
        })?;
        (EntryKind::Symlink, Some(t))
    } else {
        return Err((
            SkipKind::Special,
            "special file (fifo, socket or device) is not replicated".into(),
        ));
    };
    let mtime = MtimeNs(md.mtime() * 1_000_000_000 + md.mtime_nsec());
    let stat = StatKey::of(md);
    let entry = FileEntry {
        path: path.clone(),
        kind,
        state: EntryState::Present,
        size: if kind == EntryKind::File {
            md.size()
        } else {
            0
        },
        mtime,
        mode: md.mode() & 0o7777,
        content: None,
        symlink_target,
        seq: Seq::default(),
        version: VersionVector::default(),
    };
    Ok((entry, stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_whose_path_cannot_be_looked_at_is_reported_not_passed_over() {
        // Under a root whose own path is long, a relative path of 4,000 bytes is longer
        // than PATH_MAX: no stat of it can succeed, and a live rescan said nothing.
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("r".repeat(200));
        fs::create_dir(&root).unwrap();
        let deep = vec!["d".repeat(250); 16].join("/");
        let path = RelPath::new(format!("{deep}/f")).unwrap();
        let opts = ScanOptions {
            params: ChunkParams::default(),
            skip_temp_files: true,
            ignore: IgnoreRules::default(),
        };
        let out = scan_subtree(&root, &path, opts.clone()).unwrap();
        assert_eq!(out.index.len(), 0);
        assert_eq!(out.skipped.len(), 1, "{:?}", out.skipped);
        assert_eq!(out.skipped[0].kind, SkipKind::Unreadable);
        assert!(
            out.skipped[0].reason.contains("cannot stat"),
            "{:?}",
            out.skipped
        );
        // A path that simply is not there is nothing, and no warning.
        let gone = scan_subtree(&root, &RelPath::new("a/b").unwrap(), opts).unwrap();
        assert!(gone.skipped.is_empty() && gone.index.is_empty());
    }

    #[test]
    fn only_files_named_like_ferrys_temp_files_are_left_out() {
        let root = tempfile::tempdir().unwrap();
        let temp = ".ferry-tmp-5-0badc0de-5";
        fs::write(root.path().join(temp), "half a transfer").unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        fs::create_dir(root.path().join(format!("d/{temp}"))).unwrap();
        fs::write(root.path().join(format!("d/{temp}/kept")), "x").unwrap();
        let opts = ScanOptions {
            skip_temp_files: true,
            ..ScanOptions::default()
        };
        let names = |index: &Index| -> Vec<String> {
            index.iter().map(|e| e.path.as_str().to_owned()).collect()
        };
        let want = vec![
            "d".to_owned(),
            format!("d/{temp}"),
            format!("d/{temp}/kept"),
        ];
        assert_eq!(names(&scan(root.path(), opts.clone()).unwrap().index), want);
        // A live rescan of the very paths finds the same.
        for (p, found) in [(temp.to_owned(), 0), (format!("d/{temp}"), 2)] {
            let out = scan_subtree(root.path(), &RelPath::new(&p).unwrap(), opts.clone()).unwrap();
            assert_eq!(out.index.len(), found, "{p}: {:?}", names(&out.index));
        }
    }

    /// Builds a tree from `spec`: each item is (directory index, kind, name number); the
    /// directories are made as they are named, below any earlier one.
    fn build(root: &Path, spec: &[(usize, u8, u16)]) {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let mut dirs = vec![root.to_owned()];
        for (i, &(parent, kind, name)) in spec.iter().enumerate() {
            let parent = dirs[parent % dirs.len()].clone();
            let path = parent.join(format!("n{name:03}_{i}"));
            match kind % 6 {
                0 | 1 => {
                    fs::create_dir(&path).unwrap();
                    dirs.push(path);
                }
                2 | 3 => fs::write(&path, vec![b'x'; usize::from(name)]).unwrap(),
                4 => std::os::unix::fs::symlink(format!("../t{name}"), &path).unwrap(),
                // Skipped entries: a fifo, a name that is not UTF-8.
                _ if name % 2 == 0 => {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &path,
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o644),
                        0,
                    )
                    .unwrap();
                }
                _ => {
                    let mut raw = parent.into_os_string().into_vec();
                    raw.extend_from_slice(b"/bad\xff");
                    raw.extend_from_slice(format!("{i}").as_bytes());
                    fs::write(std::ffi::OsStr::from_bytes(&raw), "x").unwrap();
                }
            }
        }
    }

    fn summary(out: &ScanOutcome) -> (Vec<String>, Vec<String>) {
        let entries = out
            .index
            .iter()
            .map(|e| format!("{} {:?} {} {:?}", e.path, e.kind, e.size, e.state))
            .collect();
        let skipped = out
            .skipped
            .iter()
            .map(|s| format!("{} {:?} {}", s.path.display(), s.kind, s.reason))
            .collect();
        (entries, skipped)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]
        #[test]
        fn a_scan_on_several_threads_finds_what_one_thread_finds(
            spec in proptest::collection::vec((0usize..64, 0u8..6, 0u16..40), 0..160),
            threads in 2usize..5,
        ) {
            let root = tempfile::tempdir().unwrap();
            build(root.path(), &spec);
            let opts = ScanOptions::default();
            let one = scan_with(root.path(), opts.clone(), 1).unwrap();
            let many = scan_with(root.path(), opts, threads).unwrap();
            proptest::prop_assert_eq!(summary(&one), summary(&many));
        }
    }

    #[test]
    fn a_deep_tree_scanned_on_several_threads_is_in_path_order_with_its_skips() {
        let root = tempfile::tempdir().unwrap();
        // Jobs start two levels down: put entries above, at and below that level.
        for d in ["a", "a/b", "a/b/c", "a/b/c/d", "b", "b/a", "c"] {
            fs::create_dir(root.path().join(d)).unwrap();
            fs::write(root.path().join(d).join("f"), d).unwrap();
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.path().join("a/b/c/p"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let out = scan_with(root.path(), ScanOptions::default(), 3).unwrap();
        let paths: Vec<&str> = out.index.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/d",
                "a/b/c/d/f",
                "a/b/c/f",
                "a/b/f",
                "a/f",
                "b",
                "b/a",
                "b/a/f",
                "b/f",
                "c",
                "c/f"
            ]
        );
        assert_eq!(out.skipped.len(), 1, "{:?}", out.skipped);
        assert_eq!(out.skipped[0].kind, SkipKind::Special);
        assert_eq!(
            summary(&out),
            summary(&scan_with(root.path(), ScanOptions::default(), 1).unwrap())
        );
    }
}
