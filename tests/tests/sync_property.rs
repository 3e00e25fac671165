//! Property: whatever SRC looks like and however it changes between runs, each sync leaves
//! DST an exact mirror of SRC.
//!
//! A case builds a random tree, syncs, then applies two rounds of random mutations (edit,
//! append, truncate, delete, add, rename file, rename dir, file ↔ dir swap, chmod, mtime change,
//! new symlink), syncing and checking the mirror after each round. Every content change gets a
//! fresh, never reused mtime, as a real clock would give, so the quick check (size + mtime) is
//! entitled to trust whatever it does not see change.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::util::*;

const NAMES: [&str; 6] = ["a", "b", "c", "d.txt", "e.bin", "f f"];
const FILE_MODES: [u32; 5] = [0o644, 0o600, 0o755, 0o640, 0o444];
const DIR_MODES: [u32; 4] = [0o755, 0o700, 0o750, 0o775];
const LINK_TARGETS: [&str; 5] = ["a", "../b", "/nonexistent/absolute", "c/d.txt", "."];

/// File content: a few literal bytes, or a larger pseudo-random block (seeds repeat on
/// purpose, so identical content appears under different names).
#[derive(Clone, Debug)]
enum Content {
    Small(Vec<u8>),
    Big { seed: u64, len: usize },
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Small(v) => v.clone(),
            Content::Big { seed, len } => pseudo_random(*len, *seed),
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Content::Small),
        1 => (0u64..4, 1usize..400_000).prop_map(|(seed, len)| Content::Big { seed, len }),
    ]
}

/// One change to SRC. Indexes pick among the entries that exist when the op is applied
/// (modulo their number), so any sequence of ops is valid.
#[derive(Clone, Debug)]
enum Op {
    AddFile {
        dir: usize,
        name: usize,
        content: Content,
        mode: usize,
    },
    AddDir {
        dir: usize,
        name: usize,
    },
    AddSymlink {
        dir: usize,
        name: usize,
        target: usize,
    },
    Edit {
        file: usize,
        at: usize,
        bytes: Vec<u8>,
    },
    Append {
        file: usize,
        bytes: Vec<u8>,
    },
    Truncate {
        file: usize,
        keep_percent: u8,
    },
    Delete {
        entry: usize,
    },
    RenameFile {
        file: usize,
        dir: usize,
        name: usize,
    },
    RenameDir {
        from: usize,
        to: usize,
        name: usize,
    },
    Swap {
        entry: usize,
        content: Content,
    },
    Chmod {
        entry: usize,
        mode: usize,
    },
    Touch {
        entry: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ix = || 0usize..64;
    let name = || 0..NAMES.len();
    prop_oneof![
        3 => (ix(), name(), content(), 0..FILE_MODES.len())
            .prop_map(|(dir, name, content, mode)| Op::AddFile { dir, name, content, mode }),
        1 => (ix(), name()).prop_map(|(dir, name)| Op::AddDir { dir, name }),
        1 => (ix(), name(), 0..LINK_TARGETS.len())
            .prop_map(|(dir, name, target)| Op::AddSymlink { dir, name, target }),
        2 => (ix(), any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(file, at, bytes)| Op::Edit { file, at, bytes }),
        1 => (ix(), prop::collection::vec(any::<u8>(), 1..5000))
            .prop_map(|(file, bytes)| Op::Append { file, bytes }),
        1 => (ix(), 0u8..100).prop_map(|(file, keep_percent)| Op::Truncate { file, keep_percent }),
        1 => ix().prop_map(|entry| Op::Delete { entry }),
        2 => (ix(), ix(), name()).prop_map(|(file, dir, name)| Op::RenameFile { file, dir, name }),
        1 => (ix(), ix(), name()).prop_map(|(from, to, name)| Op::RenameDir { from, to, name }),
        1 => (ix(), content()).prop_map(|(entry, content)| Op::Swap { entry, content }),
        1 => (ix(), 0..FILE_MODES.len()).prop_map(|(entry, mode)| Op::Chmod { entry, mode }),
        1 => ix().prop_map(|entry| Op::Touch { entry }),
    ]
}

/// The ops that grow a tree, to build the starting point.
fn add_op() -> impl Strategy<Value = Op> {
    let ix = || 0usize..64;
    let name = || 0..NAMES.len();
    prop_oneof![
        4 => (ix(), name(), content(), 0..FILE_MODES.len())
            .prop_map(|(dir, name, content, mode)| Op::AddFile { dir, name, content, mode }),
        2 => (ix(), name()).prop_map(|(dir, name)| Op::AddDir { dir, name }),
        1 => (ix(), name(), 0..LINK_TARGETS.len())
            .prop_map(|(dir, name, target)| Op::AddSymlink { dir, name, target }),
    ]
}

/// Applies ops to a tree, handing out fresh mtimes.
struct Mutator<'a> {
    root: &'a Path,
    clock: u64,
}

impl Mutator<'_> {
    fn fresh_time(&mut self) -> std::time::SystemTime {
        self.clock += 1;
        time_n(self.clock)
    }

    fn entries(&self, kind: Option<Kind>) -> Vec<PathBuf> {
        snapshot(self.root)
            .into_iter()
            .filter(|(_, n)| kind.is_none_or(|k| n.kind == k))
            .map(|(p, _)| p)
            .collect()
    }

    /// Directories an entry can be added to, the root first.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut v = vec![PathBuf::new()];
        v.extend(self.entries(Some(Kind::Dir)));
        v
    }

    fn pick(list: &[PathBuf], i: usize) -> Option<&PathBuf> {
        (!list.is_empty()).then(|| &list[i % list.len()])
    }

    /// Rewrites a file's content (even a read-only one), then gives it a fresh mtime.
    fn rewrite(&mut self, rel: &Path, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
        let p = self.root.join(rel);
        let mode = fs::symlink_metadata(&p).unwrap().mode_bits();
        set_mode(&p, 0o644);
        let new = f(fs::read(&p).unwrap());
        fs::write(&p, new).unwrap();
        let t = self.fresh_time();
        set_mtime(&p, t);
        set_mode(&p, mode);
    }

    fn apply(&mut self, op: &Op) {
        let root = self.root;
        match op {
            Op::AddFile {
                dir,
                name,
                content,
                mode,
            } => {
                let dirs = self.dirs();
                let p = root
                    .join(Self::pick(&dirs, *dir).unwrap())
                    .join(NAMES[*name]);
                if !exists(&p) {
                    let t = self.fresh_time();
                    write_file(&p, content.bytes(), FILE_MODES[*mode], t);
                }
            }
            Op::AddDir { dir, name } => {
                let dirs = self.dirs();
                let p = root
                    .join(Self::pick(&dirs, *dir).unwrap())
                    .join(NAMES[*name]);
                if !exists(&p) {
                    fs::create_dir(&p).unwrap();
                }
            }
            Op::AddSymlink { dir, name, target } => {
                let dirs = self.dirs();
                let p = root
                    .join(Self::pick(&dirs, *dir).unwrap())
                    .join(NAMES[*name]);
                if !exists(&p) {
                    symlink(LINK_TARGETS[*target], &p);
                }
            }
            Op::Edit { file, at, bytes } => {
                let files = self.entries(Some(Kind::File));
                if let Some(f) = Self::pick(&files, *file).cloned() {
                    // Same size where possible: only the mtime tells the quick check.
                    self.rewrite(&f, |mut c| {
                        if c.is_empty() {
                            return bytes.clone();
                        }
                        let start = at % c.len();
                        for (i, b) in bytes.iter().enumerate() {
                            if let Some(slot) = c.get_mut(start + i) {
                                *slot = b.wrapping_add(1).wrapping_add(*slot);
                            }
                        }
                        c
                    });
                }
            }
            Op::Append { file, bytes } => {
                let files = self.entries(Some(Kind::File));
                if let Some(f) = Self::pick(&files, *file).cloned() {
                    self.rewrite(&f, |mut c| {
                        c.extend_from_slice(bytes);
                        c
                    });
                }
            }
            Op::Truncate { file, keep_percent } => {
                let files = self.entries(Some(Kind::File));
                if let Some(f) = Self::pick(&files, *file).cloned() {
                    self.rewrite(&f, |mut c| {
                        c.truncate(c.len() * usize::from(*keep_percent) / 100);
                        c
                    });
                }
            }
            Op::Delete { entry } => {
                let all = self.entries(None);
                if let Some(e) = Self::pick(&all, *entry) {
                    let p = root.join(e);
                    if fs::symlink_metadata(&p).unwrap().is_dir() {
                        fs::remove_dir_all(&p).unwrap();
                    } else {
                        fs::remove_file(&p).unwrap();
                    }
                }
            }
            Op::RenameFile { file, dir, name } => {
                let files = self.entries(Some(Kind::File));
                let dirs = self.dirs();
                if let Some(f) = Self::pick(&files, *file) {
                    let to = root
                        .join(Self::pick(&dirs, *dir).unwrap())
                        .join(NAMES[*name]);
                    if !exists(&to) {
                        fs::rename(root.join(f), to).unwrap();
                    }
                }
            }
            Op::RenameDir { from, to, name } => {
                let dirs = self.entries(Some(Kind::Dir));
                let parents = self.dirs();
                if let Some(d) = Self::pick(&dirs, *from) {
                    let parent = Self::pick(&parents, *to).unwrap();
                    let dest = root.join(parent).join(NAMES[*name]);
                    // A directory cannot move into itself.
                    if !parent.starts_with(d) && !exists(&dest) {
                        fs::rename(root.join(d), dest).unwrap();
                    }
                }
            }
            Op::Swap { entry, content } => {
                let all = self.entries(None);
                if let Some(e) = Self::pick(&all, *entry) {
                    let p = root.join(e);
                    let md = fs::symlink_metadata(&p).unwrap();
                    let t = self.fresh_time();
                    if md.is_dir() {
                        fs::remove_dir_all(&p).unwrap();
                        write_file(&p, content.bytes(), 0o644, t);
                    } else {
                        fs::remove_file(&p).unwrap();
                        write_file(&p.join("was-a-file"), content.bytes(), 0o644, t);
                    }
                }
            }
            Op::Chmod { entry, mode } => {
                let all = self.entries(None);
                if let Some(e) = Self::pick(&all, *entry) {
                    let p = root.join(e);
                    let md = fs::symlink_metadata(&p).unwrap();
                    if md.is_dir() {
                        set_mode(&p, DIR_MODES[*mode % DIR_MODES.len()]);
                    } else if md.is_file() {
                        set_mode(&p, FILE_MODES[*mode]);
                    }
                }
            }
            Op::Touch { entry } => {
                let all = self.entries(None);
                if let Some(e) = Self::pick(&all, *entry) {
                    let p = root.join(e);
                    if !fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
                        let t = self.fresh_time();
                        set_mtime(&p, t);
                    }
                }
            }
        }
    }
}

/// Reads permission bits without following symlinks.
trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for fs::Metadata {
    fn mode_bits(&self) -> u32 {
        use std::os::unix::fs::MetadataExt as _;
        self.mode() & 0o7777
    }
}

/// Runs one sync and checks the mirror, as a proptest failure rather than a panic.
fn sync_and_check(
    src: &Path,
    dst: &Path,
    checksum: bool,
    round: &str,
) -> Result<(), TestCaseError> {
    let flags: &[&str] = if checksum {
        &["--checksum", "--no-fsync"]
    } else {
        &["--no-fsync"]
    };
    let out = sync(src, dst, flags);
    prop_assert_eq!(out.code, 0, "{} sync failed\n{}", round, out);
    let diffs = diff_snapshots(
        &snapshot(src),
        &snapshot(dst),
        Compare::MIRROR,
        ("SRC", "DST"),
    );
    prop_assert!(
        diffs.is_empty(),
        "after the {} sync DST is not a mirror:\n  {}",
        round,
        diffs.join("\n  ")
    );
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(0xF322_5EED))]

    #[test]
    fn every_sync_leaves_an_exact_mirror(
        build in prop::collection::vec(add_op(), 8..40),
        round1 in prop::collection::vec(op(), 1..16),
        round2 in prop::collection::vec(op(), 1..16),
        checksum in prop::array::uniform3(any::<bool>()),
    ) {
        let src = tempdir();
        let parent = tempdir();
        let dst = parent.path().join("dst");
        let mut m = Mutator { root: src.path(), clock: 0 };
        for op in &build {
            m.apply(op);
        }
        sync_and_check(src.path(), &dst, checksum[0], "initial")?;
        for op in &round1 {
            m.apply(op);
        }
        sync_and_check(src.path(), &dst, checksum[1], "second")?;
        for op in &round2 {
            m.apply(op);
        }
        sync_and_check(src.path(), &dst, checksum[2], "third")?;
    }
}
