//! Ignore rules (`--ignore PATTERN` and SRC/.ferryignore, gitignore syntax): ignored
//! entries are not copied, and whatever the target holds at ignored paths is left exactly
//! as it is, by `ferry sync`, `ferry watch` and a remote `ferry serve` target alike.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::live::{wait_until_blocking, WatchProcess};
use crate::util::remote::{dir_arg, node_id, ServeProcess};
use crate::util::*;

/// How long a live change may take to arrive.
const DEADLINE: Duration = Duration::from_secs(20);

/// The flags of every test here; SRC/.ferryignore adds `secret/` and `!keep.tmp`.
const FLAGS: [&str; 4] = ["--ignore", "*.tmp", "--ignore", "/cache/"];

/// Paths (with everything below them) the rules ignore in the trees below.
const IGNORED: [&str; 6] = [
    "a.tmp",
    "cache",
    "secret",
    "sub/secret",
    "sub/x.tmp",
    "sub/gone",
];

/// A source holding ignored and replicated entries side by side.
fn source(src: &Path) {
    write_file(
        &src.join(".ferryignore"),
        "# not replicated\nsecret/\n!keep.tmp\n",
        0o644,
        time_n(1),
    );
    write_file(&src.join("plain.txt"), "plain\n", 0o644, time_n(2));
    write_file(&src.join("a.tmp"), "scratch from src\n", 0o644, time_n(3));
    write_file(
        &src.join("keep.tmp"),
        "re-included by !keep.tmp\n",
        0o644,
        time_n(4),
    );
    write_file(
        &src.join("cache/blob.bin"),
        pseudo_random(50_000, 1),
        0o644,
        time_n(5),
    );
    write_file(&src.join("secret/key"), "hush\n", 0o600, time_n(6));
    write_file(&src.join("sub/secret/key"), "hush too\n", 0o600, time_n(7));
    write_file(&src.join("sub/x.tmp"), "scratch\n", 0o644, time_n(8));
    // Only the top-level `cache` is anchored: this one is replicated.
    write_file(
        &src.join("sub/cache/c.txt"),
        "not anchored\n",
        0o644,
        time_n(9),
    );
}

/// A target holding its own versions of ignored paths, and an extra file that must go.
fn target(dst: &Path) {
    write_file(
        &dst.join("a.tmp"),
        "the target's own scratch\n",
        0o600,
        time_n(50),
    );
    write_file(&dst.join("cache/old.bin"), "old cache\n", 0o644, time_n(51));
    write_file(
        &dst.join("secret/mine"),
        "the target's secret\n",
        0o600,
        time_n(52),
    );
    write_file(&dst.join("extra.txt"), "not in src\n", 0o644, time_n(53));
    // A directory SRC lacks, holding only an ignored file: it stays, with the file.
    write_file(&dst.join("sub/gone/y.tmp"), "kept\n", 0o644, time_n(54));
}

/// The target's entries at ignored paths.
fn ignored_part(dst: &Path) -> Snapshot {
    let mut snap = snapshot(dst);
    snap.retain(|p, _| IGNORED.iter().any(|x| p.starts_with(x)));
    snap
}

/// `ferry sync FLAGS… EXTRA… SRC DST` (DST may be a `ferry://` URL).
fn sync_ignoring(src: &Path, dst: &OsStr, extra: &[&OsStr]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sync")];
    args.extend(FLAGS.iter().map(OsStr::new));
    args.extend_from_slice(extra);
    args.push(src.as_os_str());
    args.push(dst);
    ferry(args)
}

/// A client's home, SRC and DST (both created empty), for runs into `ferry serve`.
struct Remote {
    base: tempfile::TempDir,
    client: PathBuf,
    src: PathBuf,
    dst: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let base = tempdir();
        let r = Remote {
            client: base.path().join("client"),
            src: base.path().join("src"),
            dst: base.path().join("dst"),
            base,
        };
        mkdir(&r.src);
        mkdir(&r.dst);
        r
    }

    /// Starts `ferry serve` with DST as folder `f` for this client, runs
    /// `ferry sync FLAGS… SRC ferry://…/f` into it, and returns the run and the server.
    fn sync(&self) -> (Output, ServeProcess) {
        let args = [
            "--folder".to_owned(),
            format!("f={}", dir_arg(&self.dst)),
            "--peer".to_owned(),
            node_id(&self.client),
        ];
        let server = ServeProcess::spawn(
            &self.base.path().join("server"),
            "127.0.0.1:0",
            &args,
            &self.base.path().join("serve.log"),
        );
        let url = server.url("f");
        let run = sync_ignoring(
            &self.src,
            OsStr::new(&url),
            &["--home".as_ref(), self.client.as_os_str()],
        );
        (run, server)
    }
}

#[test]
fn sync_ignore_copies_nothing_ignored_and_leaves_the_targets_ignored_entries_alone() {
    let src = tempdir();
    let dst = tempdir();
    source(src.path());
    target(dst.path());
    let before = ignored_part(dst.path());

    sync_ignoring(src.path(), dst.path().as_os_str(), &[]).assert_success();

    assert_untouched(
        &before,
        &ignored_part(dst.path()),
        "the target's ignored entries",
    );
    assert!(
        !exists(&dst.path().join("extra.txt")),
        "a non-ignored extra survived"
    );
    assert!(
        !exists(&dst.path().join("cache/blob.bin")),
        "an ignored directory was copied"
    );
    assert!(
        !exists(&dst.path().join("secret/key")),
        ".ferryignore's secret/ was copied"
    );
    assert!(
        !exists(&dst.path().join("sub/secret")),
        "an unanchored dir rule missed"
    );
    assert!(!exists(&dst.path().join("sub/x.tmp")), "*.tmp was copied");
    assert_eq!(
        std::fs::read(dst.path().join("keep.tmp")).unwrap(),
        b"re-included by !keep.tmp\n",
        "a negated pattern was not re-included"
    );
    assert_mirror_except(src.path(), dst.path(), &IGNORED);

    // A second run finds the same and still touches nothing ignored.
    sync_ignoring(src.path(), dst.path().as_os_str(), &[]).assert_success();
    assert_untouched(
        &before,
        &ignored_part(dst.path()),
        "the ignored entries, run 2",
    );
    assert_mirror_except(src.path(), dst.path(), &IGNORED);
}

#[test]
fn a_dir_holding_ignored_entries_is_not_replaced_by_a_file() {
    // SRC turns two directories into a file and a symlink. DST's `pkg/` holds an ignored
    // file, which is never deleted: `pkg` stays a directory (its other entries go, as
    // extras) and the run says why. DST's `plain/` holds nothing ignored: it is replaced.
    let src = tempdir();
    let dst = tempdir();
    write_file(&src.path().join("pkg"), "now a file\n", 0o644, time_n(1));
    std::os::unix::fs::symlink("pkg", src.path().join("plain")).unwrap();
    write_file(&dst.path().join("pkg/lib.txt"), "extra\n", 0o644, time_n(2));
    write_file(
        &dst.path().join("pkg/deep/x.tmp"),
        "local only\n",
        0o644,
        time_n(3),
    );
    write_file(&dst.path().join("plain/a.txt"), "extra\n", 0o644, time_n(4));

    let out = sync_ignoring(src.path(), dst.path().as_os_str(), &[OsStr::new("--json")]);
    out.assert_code(3).assert_stderr_contains("pkg/deep/x.tmp");
    let report = out.report();
    assert_eq!(
        report
            .not_applied
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        ["pkg"],
        "{}",
        report.raw
    );
    assert_eq!(
        std::fs::read(dst.path().join("pkg/deep/x.tmp")).unwrap(),
        b"local only\n",
        "an ignored file was deleted to make way for a file"
    );
    assert!(
        !exists(&dst.path().join("pkg/lib.txt")),
        "an extra survived"
    );
    assert_eq!(
        std::fs::read_link(dst.path().join("plain")).unwrap(),
        Path::new("pkg"),
        "a directory holding nothing ignored was not replaced"
    );
}

#[test]
fn sync_with_an_invalid_ignore_pattern_exits_1_and_writes_nothing() {
    let src = tempdir();
    let dst = tempdir();
    write(&src.path().join("a.txt"), "a\n");
    ferry([
        "sync".as_ref(),
        "--ignore".as_ref(),
        "bad[z-a]".as_ref(),
        src.path().as_os_str(),
        dst.path().as_os_str(),
    ])
    .assert_code(1)
    .assert_stderr_contains("bad[z-a]");
    assert!(
        snapshot(dst.path()).is_empty(),
        "a run with bad rules wrote"
    );
}

#[test]
fn live_watch_replicates_a_new_file_but_not_a_new_ignored_one() {
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write(&src.join("seed.txt"), "seed\n");
    write(&src.join("cache/.keep"), "");
    let mut p = WatchProcess::spawn(&src, &dst, &FLAGS, &base.path().join("stderr.txt"));
    // The only ignored entry so far is below cache/.
    wait_until_blocking(DEADLINE, "the initial sync", || {
        p.assert_running();
        let s = without(snapshot(&src), &["cache"]);
        let d = try_snapshot(&dst)?;
        let diffs = diff_snapshots(&s, &d, Compare::MIRROR, ("SRC", "DST"));
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("{diffs:?}"))
        }
    });

    // Ignored changes first: once the normal file arrives, they were handled too.
    write(&src.join("scratch.tmp"), "ignored\n");
    write(&src.join("cache/new.bin"), "ignored too\n");
    write(&src.join("dir/later.tmp"), "ignored as well\n");
    write(&src.join("dir/normal.txt"), "replicated\n");
    let normal = dst.join("dir/normal.txt");
    wait_until_blocking(DEADLINE, "dir/normal.txt is replicated", || {
        p.assert_running();
        match std::fs::read(&normal) {
            Ok(b) if b == b"replicated\n" => Ok(()),
            other => Err(format!("{}: {other:?}", normal.display())),
        }
    });
    p.terminate();
    let (status, stderr) = p.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "exit status {status}\n{stderr}");
    for ignored in ["scratch.tmp", "cache", "dir/later.tmp"] {
        assert!(
            !exists(&dst.join(ignored)),
            "{ignored} was replicated\n{stderr}"
        );
    }
    assert_mirror_except(&src, &dst, &["scratch.tmp", "cache", "dir/later.tmp"]);
}

#[test]
fn remote_sync_ignore_keeps_the_servers_ignored_entries() {
    let r = Remote::new();
    let (src, dst) = (&r.src, &r.dst);
    source(src);
    target(dst);
    let before = ignored_part(dst);
    let (run, server) = r.sync();
    if run.code != 0 {
        panic!(
            "the remote sync failed\n{run}\n--- server log ---\n{}",
            server.stderr()
        );
    }

    assert_untouched(&before, &ignored_part(dst), "the server's ignored entries");
    assert!(
        !exists(&dst.join("extra.txt")),
        "a non-ignored extra survived"
    );
    assert_mirror_except(src, dst, &IGNORED);
}

#[test]
fn a_remote_dir_holding_ignored_entries_is_kept_and_the_client_says_why() {
    // As `a_dir_holding_ignored_entries_is_not_replaced_by_a_file`, into `ferry serve`: the
    // path not applied is logged on the server, and the client's run names it too.
    let r = Remote::new();
    let (src, dst) = (&r.src, &r.dst);
    write_file(&src.join("pkg"), "now a file\n", 0o644, time_n(1));
    write_file(
        &dst.join("pkg/deep/x.tmp"),
        "local only\n",
        0o644,
        time_n(3),
    );
    let (run, _server) = r.sync();
    run.assert_code(3)
        .assert_stderr_contains("not applied at the target")
        .assert_stderr_contains("pkg/deep/x.tmp");
    assert_eq!(
        std::fs::read(dst.join("pkg/deep/x.tmp")).unwrap(),
        b"local only\n",
        "an ignored file on the server was deleted to make way for a file"
    );
}
