//! Shared helpers for the black-box tests: running `ferry`, building trees, snapshotting and comparing them.
//!
//! Every helper panics with a readable message instead of returning errors: a failed set-up
//! step is a broken test, and the message should say which path and which step.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, FileTimes, Permissions};
use std::hash::{DefaultHasher, Hasher as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

pub mod chromium;
pub mod faultproxy;
pub mod hosted;
pub mod http;
pub mod live;
pub mod node;
pub mod remote;
pub mod stores;

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// The `ferry` binary next to this test executable (`target/<profile>/ferry`).
///
/// Cargo does not build another crate's binary for an integration test, so the binary is found
/// from the test executable (`target/<profile>/deps/tests-<hash>`) instead.
pub fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("ferry");
    assert!(
        bin.is_file(),
        "the ferry binary was not found at {}: run `cargo build -p ferry-node` first \
         (`cargo test --workspace` and `cargo nextest run --workspace` build it too)",
        bin.display()
    );
    bin
}

/// What one run of `ferry` printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// The command line, for failure messages.
    pub command: String,
}

impl Output {
    /// Panics, showing the whole run, unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// Panics unless the run exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Panics unless stderr mentions `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr does not mention {needle:?}\n{self}"
        );
        self
    }

    /// The `--json` report printed on stdout.
    #[track_caller]
    pub fn report(&self) -> Report {
        Report::parse(&self.stdout).unwrap_or_else(|e| panic!("bad --json report: {e}\n{self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// Runs a prepared command and captures its outcome.
fn capture(mut cmd: Command) -> Output {
    // A developer's FERRY_LOG would change what stderr shows; colours would garble the matching.
    cmd.env_remove("FERRY_LOG").env("NO_COLOR", "1");
    let command = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    }
}

/// Runs `ferry ARGS…` in the current directory.
pub fn ferry<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args);
    capture(cmd)
}

/// Runs `ferry ARGS…` with `cwd` as the working directory.
pub fn ferry_in<I, S>(cwd: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(ferry_bin());
    cmd.current_dir(cwd).args(args);
    capture(cmd)
}

/// Runs `ferry sync SRC DST EXTRA…`.
pub fn sync(src: &Path, dst: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sync"), src.as_os_str(), dst.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    ferry(args)
}

/// Runs `ferry sync SRC DST --json EXTRA…`, asserts exit code 0 with nothing left unapplied,
/// and returns the report.
#[track_caller]
pub fn sync_ok(src: &Path, dst: &Path, extra: &[&str]) -> Report {
    let mut flags = vec!["--json"];
    flags.extend_from_slice(extra);
    let out = sync(src, dst, &flags);
    out.assert_success();
    let report = out.report();
    assert!(
        report.not_applied.is_empty(),
        "a complete run (exit 0) reported actions not applied: {:?}\n{out}",
        report.not_applied
    );
    report
}

/// Whether this process runs with effective uid 0 (root ignores permission bits).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Where `setpriv` (util-linux) is, if installed.
fn setpriv() -> Option<PathBuf> {
    [
        "/usr/bin/setpriv",
        "/bin/setpriv",
        "/usr/sbin/setpriv",
        "/sbin/setpriv",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Whether [`ferry_unprivileged`] can run; when not, says why on stderr so a skip is visible.
pub fn can_drop_privileges(test: &str) -> bool {
    if is_root() && setpriv().is_none() {
        eprintln!(
            "SKIPPED {test}: running as root, which ignores permission bits, and `setpriv` \
             (util-linux) is not installed to run ferry as nobody"
        );
        return false;
    }
    true
}

/// Whether every ancestor of `path` lets other users search it.
pub fn reachable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// A fresh temporary directory for a test that runs ferry unprivileged: `None` (saying why on
/// stderr) when privileges cannot be dropped here or the directory is out of reach of other
/// users.
pub fn unprivileged_base(test: &str) -> Option<tempfile::TempDir> {
    if !can_drop_privileges(test) {
        return None;
    }
    let base = tempdir();
    if !reachable_by_others(base.path()) {
        eprintln!(
            "SKIPPED {test}: {} is not reachable by other users (set TMPDIR to a world-searchable directory)",
            base.path().display()
        );
        return None;
    }
    Some(base)
}

/// Runs `ferry ARGS…` as a user that permission bits apply to: as nobody (uid/gid 65534, no
/// supplementary groups) through `setpriv` when the tests run as root, directly otherwise.
///
/// Call [`can_drop_privileges`] first. Paths given to ferry must be reachable by nobody
/// (see [`make_world_accessible`]).
pub fn ferry_unprivileged<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = if is_root() {
        let mut cmd =
            Command::new(setpriv().expect("setpriv is installed (see can_drop_privileges)"));
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(ferry_bin());
        cmd
    } else {
        Command::new(ferry_bin())
    };
    cmd.args(args);
    capture(cmd)
}

/// Runs `ferry sync SRC DST EXTRA…` through [`ferry_unprivileged`].
pub fn sync_unprivileged(src: &Path, dst: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sync"), src.as_os_str(), dst.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    ferry_unprivileged(args)
}

// ---------------------------------------------------------------------------------------------
// The --json report
// ---------------------------------------------------------------------------------------------

/// One `change` line of a dry run: what would happen to which path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// `created`, `updated`, `metadata`, `removed` or `renamed`.
    pub change: String,
    /// The path relative to the folder root.
    pub path: String,
    /// A renamed file's old path (the key is there for renames only).
    pub from: Option<String>,
}

/// The object `ferry sync --json` prints; every documented key must be present.
#[derive(Clone, Debug)]
pub struct Report {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Entries looked at in SRC.
    pub entries_scanned: u64,
    /// Entries created in DST.
    pub created: u64,
    /// Files whose content was rewritten.
    pub updated: u64,
    /// Entries that only got a metadata update.
    pub metadata_only: u64,
    /// Entries removed from DST.
    pub removed: u64,
    /// Files moved within DST instead of being copied again.
    pub renamed: u64,
    /// Entries skipped (unreadable, special, non-UTF-8).
    pub skipped: u64,
    /// Bytes written into DST files.
    pub bytes_written: u64,
    /// Bytes passed from the source side to the target side.
    pub bytes_sent: u64,
    /// Bytes taken from data DST already held.
    pub bytes_reused: u64,
    /// Chunks passed from the source side to the target side.
    pub chunks_sent: u64,
    /// Encoded bytes of every other message between source and target side (index entries,
    /// chunk lists, requests, acknowledgements), both directions.
    pub bytes_metadata: u64,
    /// Chunks taken from data DST already held.
    pub chunks_reused: u64,
    /// Bytes of all-zero chunks, sent as a length only.
    pub bytes_zero: u64,
    /// Actions not applied, as (path, reason).
    pub not_applied: Vec<(String, String)>,
    /// With --dry-run, the itemized changes, sorted.
    pub changes: Option<Vec<Change>>,
    /// The raw object.
    pub raw: Value,
}

impl Report {
    /// Parses stdout holding exactly one JSON object.
    pub fn parse(stdout: &str) -> Result<Report, String> {
        let raw: Value =
            serde_json::from_str(stdout.trim()).map_err(|e| format!("not one JSON object: {e}"))?;
        let obj = raw.as_object().ok_or("the report is not a JSON object")?;
        let num = |k: &str| -> Result<u64, String> {
            obj.get(k)
                .ok_or_else(|| format!("key {k:?} is missing"))?
                .as_u64()
                .ok_or_else(|| format!("key {k:?} is not a non-negative integer"))
        };
        let text = |v: &Value, k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("an item lacks the string key {k:?}: {v}"))
        };
        let not_applied = obj
            .get("not_applied")
            .and_then(Value::as_array)
            .ok_or("key \"not_applied\" is missing or not a list")?
            .iter()
            .map(|v| Ok((text(v, "path")?, text(v, "reason")?)))
            .collect::<Result<Vec<_>, String>>()?;
        let changes = match obj.get("changes") {
            None => None,
            Some(v) => {
                let mut list = v
                    .as_array()
                    .ok_or("key \"changes\" is not a list")?
                    .iter()
                    .map(|v| {
                        let from = match v.get("from") {
                            None => None,
                            Some(_) => Some(text(v, "from")?),
                        };
                        Ok(Change {
                            change: text(v, "change")?,
                            path: text(v, "path")?,
                            from,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                list.sort();
                Some(list)
            }
        };
        Ok(Report {
            dry_run: obj
                .get("dry_run")
                .and_then(Value::as_bool)
                .ok_or("key \"dry_run\" is missing or not a bool")?,
            entries_scanned: num("entries_scanned")?,
            created: num("created")?,
            updated: num("updated")?,
            metadata_only: num("metadata_only")?,
            removed: num("removed")?,
            renamed: num("renamed")?,
            skipped: num("skipped")?,
            bytes_written: num("bytes_written")?,
            bytes_sent: num("bytes_sent")?,
            bytes_reused: num("bytes_reused")?,
            chunks_sent: num("chunks_sent")?,
            bytes_metadata: num("bytes_metadata")?,
            chunks_reused: num("chunks_reused")?,
            bytes_zero: num("bytes_zero")?,
            not_applied,
            changes,
            raw,
        })
    }

    /// Panics unless the run changed nothing at all in DST.
    #[track_caller]
    pub fn assert_nothing_changed(&self) {
        assert_eq!(
            (self.created, self.updated, self.metadata_only, self.removed, self.renamed, self.bytes_written),
            (0, 0, 0, 0, 0, 0),
            "(created, updated, metadata_only, removed, renamed, bytes_written) should all be 0: {}",
            self.raw
        );
    }
}

/// Builds a sorted change list from `(change, path)` pairs, to compare with [`Report::changes`].
pub fn changes(items: &[(&str, &str)]) -> Vec<Change> {
    let mut v: Vec<Change> = items
        .iter()
        .map(|(c, p)| Change {
            change: (*c).to_owned(),
            path: (*p).to_owned(),
            from: None,
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Building trees
// ---------------------------------------------------------------------------------------------

/// One kibibyte.
pub const KIB: u64 = 1024;

/// One mebibyte.
pub const MIB: u64 = 1024 * KIB;

/// The largest chunk with the default chunker sizes (`--chunk-sizes 8K,32K,128K`): an edit
/// should cost about one or two of these.
pub const MAX_CHUNK: u64 = 128 * KIB;

/// A fresh temporary directory.
/// An in-process one-shot job mirroring `src` into `dst` as folder `folder`, with the
/// default options and no fsyncs.
pub fn one_shot_job(folder: &str, src: &Path, dst: &Path) -> ferry_actors::SyncJob {
    ferry_actors::SyncJob {
        folder: ferry_actors::FolderId::new(folder).unwrap(),
        source: src.to_owned(),
        target: dst.to_owned(),
        checksum: false,
        dry_run: false,
        durable: false,
        params: Default::default(),
        ignore: Default::default(),
        remote: false,
    }
}

pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// A point in time `secs` seconds and `nanos` nanoseconds after the Unix epoch.
pub fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// A fixed, ns-precise time to give files; `n` picks one of many distinct values.
pub fn time_n(n: u64) -> SystemTime {
    at(
        1_600_000_000 + n * 1_000,
        123_456_789 - (n as u32 % 1_000) * 1_000,
    )
}

/// Creates the parent directories of `path`.
fn make_parents(path: &Path) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create_dir_all {}: {e}", parent.display()));
    }
}

/// Writes `content` to `path` (creating parents), leaving mode and mtime as they come.
pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    make_parents(path);
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes `content` to `path` (creating parents), then sets its mode and mtime.
pub fn write_file(path: &Path, content: impl AsRef<[u8]>, mode: u32, mtime: SystemTime) {
    write(path, content);
    set_mtime(path, mtime);
    set_mode(path, mode);
}

/// Creates `path` and its parents as directories.
pub fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("create_dir_all {}: {e}", path.display()));
}

/// Creates a symlink at `path` (creating parents) pointing to `target`.
pub fn symlink(target: impl AsRef<Path>, path: &Path) {
    make_parents(path);
    std::os::unix::fs::symlink(target.as_ref(), path).unwrap_or_else(|e| {
        panic!(
            "symlink {} -> {}: {e}",
            path.display(),
            target.as_ref().display()
        )
    });
}

/// Sets the permission bits of a file or directory (this follows symlinks; never call it on one).
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// Sets the modification time of a file or directory.
pub fn set_mtime(path: &Path, mtime: SystemTime) {
    // Opening read-only is enough for futimens, and works for directories too.
    let f = File::open(path)
        .unwrap_or_else(|e| panic!("open {} to set its mtime: {e}", path.display()));
    f.set_times(FileTimes::new().set_modified(mtime))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// `len` deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Creates a named pipe at `path`.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// Gives every permission to everyone on `path` (used so that nobody can reach test trees).
pub fn make_world_accessible(path: &Path) {
    set_mode(path, 0o777);
}

/// Recursively makes `root` usable by an unprivileged user: directories 0777, files 0644.
pub fn open_up_tree(root: &Path) {
    make_world_accessible(root);
    for (rel, node) in snapshot(root) {
        let p = root.join(&rel);
        match node.kind {
            Kind::Dir => set_mode(&p, 0o777),
            // chmod leaves mtimes alone, so the tree keeps the times it was given.
            Kind::File => set_mode(&p, 0o644),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots and comparisons
// ---------------------------------------------------------------------------------------------

/// The type of a directory entry, as `lstat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else: fifo, socket, device.
    Special,
}

/// One entry of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// The bytes of a regular file (empty otherwise).
    pub content: Vec<u8>,
    /// The target of a symlink.
    pub target: Option<PathBuf>,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub ino: u64,
}

impl Node {
    /// A short description of the content for messages: length and a hash.
    pub fn content_summary(&self) -> String {
        let mut h = DefaultHasher::new();
        h.write(&self.content);
        let head: String = String::from_utf8_lossy(&self.content[..self.content.len().min(24)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        format!(
            "{} bytes, hash {:016x}, starts {:?}",
            self.content.len(),
            h.finish(),
            head
        )
    }
}

/// A whole tree: path relative to its root → entry. The root itself is not included.
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Walks `root` without following symlinks and records every entry below it.
pub fn snapshot(root: &Path) -> Snapshot {
    try_snapshot(root).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`snapshot`], but says what failed instead of panicking: a tree that a live mirror is
/// still changing may lose an entry between listing and reading it.
pub fn try_snapshot(root: &Path) -> Result<Snapshot, String> {
    let mut out = Snapshot::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Snapshot) -> Result<(), String> {
    let dir = root.join(rel);
    let rd = fs::read_dir(&dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
    for entry in rd {
        let entry = entry.map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
        let rel_child = rel.join(entry.file_name());
        let path = root.join(&rel_child);
        let md =
            fs::symlink_metadata(&path).map_err(|e| format!("lstat {}: {e}", path.display()))?;
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Special
        };
        let content = if kind == Kind::File {
            fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?
        } else {
            Vec::new()
        };
        let target = if kind == Kind::Symlink {
            Some(fs::read_link(&path).map_err(|e| format!("readlink {}: {e}", path.display()))?)
        } else {
            None
        };
        out.insert(
            rel_child.clone(),
            Node {
                kind,
                content,
                target,
                mode: md.mode() & 0o7777,
                mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
                ino: md.ino(),
            },
        );
        if kind == Kind::Dir {
            walk(root, &rel_child, out)?;
        }
    }
    Ok(())
}

/// Which properties a comparison of two snapshots looks at.
#[derive(Clone, Copy, Debug)]
pub struct Compare {
    /// Permission bits of files and directories (symlinks always have 0777 on Linux).
    pub mode: bool,
    /// Modification time of regular files.
    pub file_mtime: bool,
    /// Modification time of directories and symlinks.
    pub other_mtime: bool,
    /// Inode numbers (the same entry, not a copy).
    pub ino: bool,
}

impl Compare {
    /// What a mirror must match: names, kinds, content, symlink targets, modes, file mtimes.
    pub const MIRROR: Compare = Compare {
        mode: true,
        file_mtime: true,
        other_mtime: false,
        ino: false,
    };
    /// A mirror that also matches the mtimes of directories and symlinks.
    pub const MIRROR_ALL_MTIMES: Compare = Compare {
        mode: true,
        file_mtime: true,
        other_mtime: true,
        ino: false,
    };
    /// Everything: the tree was not touched at all.
    pub const IDENTICAL: Compare = Compare {
        mode: true,
        file_mtime: true,
        other_mtime: true,
        ino: true,
    };
}

fn fmt_ns(ns: i128) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

/// Lists the differences between two snapshots, one line each; empty when they agree.
pub fn diff_snapshots(
    left: &Snapshot,
    right: &Snapshot,
    how: Compare,
    names: (&str, &str),
) -> Vec<String> {
    let (l, r) = names;
    let mut out = Vec::new();
    for (path, a) in left {
        let p = path.display();
        let Some(b) = right.get(path) else {
            out.push(format!("{p}: only in {l} ({:?})", a.kind));
            continue;
        };
        if a.kind != b.kind {
            out.push(format!("{p}: {:?} in {l}, {:?} in {r}", a.kind, b.kind));
            continue;
        }
        if a.content != b.content {
            out.push(format!(
                "{p}: content differs: {l} has {}, {r} has {}",
                a.content_summary(),
                b.content_summary()
            ));
        }
        if a.target != b.target {
            out.push(format!(
                "{p}: symlink target differs: {l} {:?}, {r} {:?}",
                a.target, b.target
            ));
        }
        if how.mode && a.kind != Kind::Symlink && a.mode != b.mode {
            out.push(format!(
                "{p}: mode differs: {l} {:04o}, {r} {:04o}",
                a.mode, b.mode
            ));
        }
        let mtime_counts = if a.kind == Kind::File {
            how.file_mtime
        } else {
            how.other_mtime
        };
        if mtime_counts && a.mtime_ns != b.mtime_ns {
            out.push(format!(
                "{p}: mtime differs: {l} {}, {r} {}",
                fmt_ns(a.mtime_ns),
                fmt_ns(b.mtime_ns)
            ));
        }
        if how.ino && a.ino != b.ino {
            out.push(format!("{p}: inode differs: {l} {}, {r} {}", a.ino, b.ino));
        }
    }
    for (path, b) in right {
        if !left.contains_key(path) {
            out.push(format!("{}: only in {r} ({:?})", path.display(), b.kind));
        }
    }
    out
}

/// Drops `paths` and everything below them from a snapshot.
pub fn without(mut snap: Snapshot, paths: &[&str]) -> Snapshot {
    snap.retain(|p, _| !paths.iter().any(|x| p.starts_with(x)));
    snap
}

#[track_caller]
fn fail_if_any(diffs: &[String], what: &str) {
    if !diffs.is_empty() {
        let mut msg = format!("{what}: {} difference(s)\n", diffs.len());
        for d in diffs {
            let _ = writeln!(msg, "  {d}");
        }
        panic!("{msg}");
    }
}

/// Panics, listing every difference, unless `dst` mirrors `src`: same names and kinds, same
/// file content, symlink targets, permission bits and file mtimes (to the nanosecond).
#[track_caller]
pub fn assert_mirror(src: &Path, dst: &Path) {
    assert_mirror_except(src, dst, &[]);
}

/// Like [`assert_mirror`], but ignores `skip` (relative paths) and everything below them.
#[track_caller]
pub fn assert_mirror_except(src: &Path, dst: &Path, skip: &[&str]) {
    let s = without(snapshot(src), skip);
    let d = without(snapshot(dst), skip);
    let diffs = diff_snapshots(&s, &d, Compare::MIRROR, ("SRC", "DST"));
    fail_if_any(
        &diffs,
        &format!("{} is not a mirror of {}", dst.display(), src.display()),
    );
}

/// Panics, listing every difference, unless `after` equals `before` in every recorded property
/// (names, kinds, content, targets, modes, mtimes of all entries, inodes).
#[track_caller]
pub fn assert_untouched(before: &Snapshot, after: &Snapshot, what: &str) {
    let diffs = diff_snapshots(before, after, Compare::IDENTICAL, ("before", "after"));
    fail_if_any(&diffs, &format!("{what} was modified"));
}

/// The inode of `path` (not following a final symlink).
pub fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .ino()
}

/// Whether anything (even a dangling symlink) exists at `path`.
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The total size of the regular files in a snapshot.
pub fn file_bytes(snap: &Snapshot) -> u64 {
    snap.values()
        .filter(|n| n.kind == Kind::File)
        .map(|n| n.content.len() as u64)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// A representative tree
// ---------------------------------------------------------------------------------------------

/// Size of the large file in [`rich_tree`]: a few MiB and not a multiple of any chunk size.
pub const BIG_LEN: usize = 3 * 1024 * 1024 + 17;

/// Fills `root` with a tree exercising every kind of entry Ferry replicates: nested
/// directories, an empty file, a multi-MiB file, files with modes 0600 and 0755, a 0700
/// directory, an empty directory, relative, absolute, dangling and directory symlinks, and
/// explicit ns-precise mtimes on every file and directory.
///
/// `outside` is a directory elsewhere; the absolute symlink points at a file in it.
pub fn rich_tree(root: &Path, outside: &Path) {
    write_file(
        &root.join("a/b/c/deep.txt"),
        "deep down\n",
        0o644,
        time_n(1),
    );
    write_file(
        &root.join("a/b/sibling.txt"),
        "next to c\n",
        0o644,
        time_n(2),
    );
    write_file(&root.join("a/empty"), "", 0o600, time_n(3));
    write_file(
        &root.join("big.bin"),
        pseudo_random(BIG_LEN, 7),
        0o644,
        time_n(4),
    );
    write_file(
        &root.join("bin/tool.sh"),
        "#!/bin/sh\necho tool\n",
        0o755,
        time_n(5),
    );
    write_file(&root.join("secret.key"), "hunter2\n", 0o600, time_n(6));
    write_file(
        &root.join("private/notes.md"),
        "# notes\n",
        0o644,
        time_n(7),
    );
    write_file(&root.join("top.txt"), "top level\n", 0o644, time_n(8));
    mkdir(&root.join("empty_dir"));
    write(&outside.join("target.txt"), "outside\n");
    symlink("../a/b/c/deep.txt", &root.join("links/rel"));
    symlink(outside.join("target.txt"), &root.join("links/abs"));
    symlink("does/not/exist", &root.join("links/dangling"));
    symlink("../a", &root.join("links/dir"));
    // Directory modes and times last, deepest first, since creating entries changes them.
    set_mode(&root.join("private"), 0o700);
    for (i, d) in ["a/b/c", "a/b", "a", "bin", "private", "empty_dir", "links"]
        .iter()
        .enumerate()
    {
        set_mtime(&root.join(d), time_n(20 + i as u64));
    }
}

/// Twelve cases from `seed` keep CI fast and repeatable; `PROPTEST_RNG_SEED` and
/// `PROPTEST_CASES` explore further.
pub fn proptest_config(seed: u64) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let default = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            12
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            default.rng_seed
        } else {
            RngSeed::Fixed(seed)
        },
        failure_persistence: None,
        ..default
    }
}
