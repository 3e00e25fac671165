//! Disk faults at the target: a file system that fills up (a small tmpfs mounted over DST,
//! for `ferry sync` and for `ferry watch`) and a target subdirectory ferry may not write.
//!
//! What must hold whatever fails: no file under a final name in DST is ever partial, no
//! `.ferry-tmp-*` file is left behind, the failure is named (path and reason), everything
//! else is synced, and once the fault is gone the next run (or the next change, live) mirrors.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_engine::target::TEMP_PREFIX;

use crate::util::live::{wait_until_blocking, WatchProcess, DEADLINE};
use crate::util::*;

/// How long `ferry watch` may take to exit after SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// The size of the file system mounted over DST, and of the file that does not fit in it.
const SMALL_FS: &str = "8m";
const BIG_FS: &str = "64m";
const TOO_BIG: usize = 12 * 1024 * 1024;

/// What a full disk makes a write fail with.
const NO_SPACE: &str = "No space left on device";

// ---------------------------------------------------------------------------------------------
// A tmpfs over DST
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted at a directory for one test; lazily unmounted on drop, so that a failing
/// test leaves no mount behind.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir` (created first), or says loudly on stderr why it
    /// cannot (not root, no `mount`, not permitted in this container) and returns `None`.
    fn mount(test: &str, dir: &Path, size: &str) -> Option<Tmpfs> {
        mkdir(dir);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_owned(),
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs at {} (mount {}): {}",
                    dir.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot run `mount` to make a small file system: {e}");
                None
            }
        }
    }

    /// Grows (or shrinks) the mounted file system to `size`, keeping its content.
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount -o remount");
        assert!(
            out.status.success(),
            "mount -o remount,size={size} {} failed ({}): {}",
            self.dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file in it must not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions on DST
// ---------------------------------------------------------------------------------------------

/// The temp files (`.ferry-tmp-*`) anywhere under `dst`.
fn temp_files(dst: &Path) -> Vec<PathBuf> {
    snapshot(dst).into_keys().filter(|p| is_temp(p)).collect()
}

/// True for a temp file's path (`.ferry-tmp-*`).
fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// Panics unless `dst` holds no temp file.
#[track_caller]
fn assert_no_temp_files(dst: &Path, when: &str) {
    let temps = temp_files(dst);
    assert!(temps.is_empty(), "temp files left in DST {when}: {temps:?}");
}

/// Panics unless every regular file in `dst` under a final name (not a `.ferry-tmp-*`
/// file, which a live mirror's retries may be filling at any moment; see
/// [`assert_no_temp_files`]) is byte-for-byte the file at the same path in `src` or in
/// `old` (a snapshot of DST before the run): nothing partial under a final name.
#[track_caller]
fn assert_no_torn_files(src: &Path, dst: &Path, old: &Snapshot) {
    let s = snapshot(src);
    for (path, node) in snapshot(dst) {
        if node.kind != Kind::File || is_temp(&path) {
            continue;
        }
        let matches = |snap: &Snapshot| {
            snap.get(&path)
                .is_some_and(|n| n.kind == Kind::File && n.content == node.content)
        };
        assert!(
            matches(&s) || matches(old),
            "{} in DST is neither its source version nor its previous version: {}",
            path.display(),
            node.content_summary()
        );
    }
}

/// `Ok` when `dst` mirrors `src` apart from `skip` (and everything below those paths).
fn mirror_except(src: &Path, dst: &Path, skip: &[&str]) -> Result<(), String> {
    let s = without(try_snapshot(src)?, skip);
    let d = without(try_snapshot(dst)?, skip);
    let diffs = diff_snapshots(&s, &d, Compare::MIRROR, ("SRC", "DST"));
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

/// The lines of `stderr` that mention `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

/// Small files around a file bigger than [`SMALL_FS`] (named to sort between them).
fn tree_with_a_file_too_big(src: &Path) {
    for (i, name) in ["a1.txt", "a2.txt", "dir/a3.txt"].iter().enumerate() {
        write_file(
            &src.join(name),
            format!("small file {name}\n"),
            0o644,
            time_n(i as u64),
        );
    }
    write_file(
        &src.join("m-big.bin"),
        pseudo_random(TOO_BIG, 11),
        0o644,
        time_n(5),
    );
    for (i, name) in ["z1.txt", "z2.txt", "zdir/z3.txt"].iter().enumerate() {
        write_file(
            &src.join(name),
            format!("after the big one: {name}\n"),
            0o640,
            time_n(10 + i as u64),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Disk full, one-shot
// ---------------------------------------------------------------------------------------------

#[test]
fn disk_full_skips_the_file_that_does_not_fit_and_a_rerun_with_space_mirrors() {
    let test = "disk_full_skips_the_file_that_does_not_fit_and_a_rerun_with_space_mirrors";
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    tree_with_a_file_too_big(&src);
    // Declared after `base`, so dropped (unmounted) before the directory is removed.
    let Some(fs) = Tmpfs::mount(test, &dst, SMALL_FS) else {
        return;
    };

    let out = sync(&src, &dst, &["--json"]);

    // The run finishes what fits and reports the rest: exit 3, "some entries were skipped".
    out.assert_code(3);
    let report = out.report();
    let big = report
        .not_applied
        .iter()
        .find(|(p, _)| p == "m-big.bin")
        .unwrap_or_else(|| panic!("m-big.bin is not among the actions not applied\n{out}"));
    assert!(
        big.1.contains(NO_SPACE),
        "the reason given for m-big.bin does not say the disk is full: {:?}\n{out}",
        big.1
    );
    // The warning names the file with its full DST path and says why.
    let warned = lines_with(&out.stderr, NO_SPACE);
    assert!(
        warned
            .iter()
            .any(|l| l.contains(&*dst.join("m-big.bin").to_string_lossy())),
        "no warning names {} as not written for lack of space\n{out}",
        dst.join("m-big.bin").display()
    );
    assert!(
        !exists(&dst.join("m-big.bin")),
        "the file that does not fit has a final name in DST"
    );
    assert_no_torn_files(&src, &dst, &Snapshot::new());
    assert_no_temp_files(&dst, "after the failed run");
    // Every file not named as failed was synced: a full disk costs only the files it hit.
    let failed: Vec<&str> = report.not_applied.iter().map(|(p, _)| p.as_str()).collect();
    mirror_except(&src, &dst, &failed).unwrap_or_else(|d| {
        panic!("files not reported as failed are missing or differ:\n{d}\n{out}")
    });

    fs.resize(BIG_FS);
    let again = sync_ok(&src, &dst, &[]);

    assert!(again.created >= 1, "nothing was created: {}", again.raw);
    assert_mirror(&src, &dst);
    assert_no_temp_files(&dst, "after the run with space");
}

#[test]
fn disk_full_while_replacing_a_file_keeps_the_old_version_whole() {
    let test = "disk_full_while_replacing_a_file_keeps_the_old_version_whole";
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    let five_mib = 5 * 1024 * 1024 + 3;
    write_file(&src.join("small.txt"), "small\n", 0o644, time_n(1));
    write_file(
        &src.join("data/big.bin"),
        pseudo_random(five_mib, 1),
        0o644,
        time_n(2),
    );
    let Some(fs) = Tmpfs::mount(test, &dst, SMALL_FS) else {
        return;
    };
    sync_ok(&src, &dst, &[]);
    assert_mirror(&src, &dst);
    let before = snapshot(&dst);
    // A new version with nothing in common with the old: the temp file needs another 5 MiB,
    // which does not fit beside the old version in 8 MiB.
    write_file(
        &src.join("data/big.bin"),
        pseudo_random(five_mib, 2),
        0o644,
        time_n(3),
    );
    write_file(&src.join("small.txt"), "small, edited\n", 0o644, time_n(4));

    let out = sync(&src, &dst, &[]);

    out.assert_code(3).assert_stderr_contains(NO_SPACE);
    assert!(
        lines_with(&out.stderr, NO_SPACE)
            .iter()
            .any(|l| l.contains("data/big.bin")),
        "no warning names data/big.bin\n{out}"
    );
    let big = Path::new("data/big.bin");
    assert_eq!(
        snapshot(&dst).get(big),
        before.get(big),
        "the old version of data/big.bin must stay exactly as it was (content, mode, mtime)"
    );
    assert_no_torn_files(&src, &dst, &before);
    assert_no_temp_files(&dst, "after the failed replacement");
    mirror_except(&src, &dst, &["data/big.bin"])
        .unwrap_or_else(|d| panic!("the rest was not synced:\n{d}\n{out}"));

    fs.resize(BIG_FS);
    sync_ok(&src, &dst, &[]);

    assert_mirror(&src, &dst);
    assert_no_temp_files(&dst, "after the run with space");
}

#[test]
fn a_disk_full_of_entries_the_run_removes_does_not_fail_the_files_that_fit_once_they_are_gone() {
    let test =
        "a_disk_full_of_entries_the_run_removes_does_not_fail_the_files_that_fit_once_they_are_gone";
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write_file(&src.join("a.txt"), "small\n", 0o644, time_n(1));
    write_file(
        &src.join("new/big.bin"),
        pseudo_random(4 * 1024 * 1024 + 5, 3),
        0o644,
        time_n(2),
    );
    let Some(_fs) = Tmpfs::mount(test, &dst, SMALL_FS) else {
        return;
    };
    // Stale content the source no longer has fills most of the disk: the new file fits only
    // once it is removed, and removals run after every file is written.
    write_file(
        &dst.join("old/stale.bin"),
        pseudo_random(6 * 1024 * 1024, 4),
        0o644,
        time_n(3),
    );

    // -v: the log says what was held back.
    let out = sync(&src, &dst, &["-v"]);

    out.assert_code(0);
    assert_mirror(&src, &dst);
    assert_no_temp_files(&dst, "after the run");
    assert!(
        lines_with(&out.stderr, "tried again")
            .iter()
            .any(|l| l.contains("new/big.bin")),
        "the log does not say new/big.bin was held back for lack of space\n{out}"
    );
}

#[test]
fn files_held_back_for_lack_of_space_are_tried_again_smallest_first_as_many_as_fit() {
    let test = "files_held_back_for_lack_of_space_are_tried_again_smallest_first_as_many_as_fit";
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    let mib = 1024 * 1024;
    write_file(
        &src.join("a.bin"),
        pseudo_random(3 * mib, 7),
        0o644,
        time_n(1),
    );
    write_file(
        &src.join("b.bin"),
        pseudo_random(6 * mib, 8),
        0o644,
        time_n(2),
    );
    let Some(_fs) = Tmpfs::mount(test, &dst, SMALL_FS) else {
        return;
    };
    // A stale file leaves half a MiB: both new files find the disk full and are held back.
    // Once it is removed, 8 MiB hold either of them but not both: tried together, either
    // could take the space the other needs; the smaller goes first, alone.
    write_file(
        &dst.join("stale.bin"),
        pseudo_random(15 * mib / 2, 9),
        0o644,
        time_n(3),
    );

    let out = sync(&src, &dst, &["--json", "-v"]);

    out.assert_code(3);
    let report = out.report();
    let failed: Vec<&str> = report.not_applied.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(failed, ["b.bin"], "only the larger file may fail\n{out}");
    assert!(report.not_applied[0].1.contains(NO_SPACE), "{out}");
    mirror_except(&src, &dst, &["b.bin"])
        .unwrap_or_else(|d| panic!("the smaller file was not synced:\n{d}\n{out}"));
    assert!(
        !exists(&dst.join("stale.bin")),
        "the stale file was not removed\n{out}"
    );
    assert_no_temp_files(&dst, "after the run");
    // The larger one is tried again only once the smaller is in place.
    let at = |what: &str, path: &str| {
        out.stderr
            .lines()
            .position(|l| l.contains(what) && l.contains(path))
            .unwrap_or_else(|| panic!("no line says {what} {path}\n{out}"))
    };
    assert!(
        at("created", "a.bin") < at("not applied", "b.bin"),
        "b.bin was tried again beside a.bin, not after it\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Disk full, live
// ---------------------------------------------------------------------------------------------

#[test]
fn live_disk_full_is_logged_the_watcher_keeps_running_and_converges_after_space_is_made() {
    let test =
        "live_disk_full_is_logged_the_watcher_keeps_running_and_converges_after_space_is_made";
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    let outside = base.path().join("outside");
    write_file(&src.join("seed.txt"), "seed\n", 0o644, time_n(1));
    write_file(&src.join("dir/seed2.txt"), "seed 2\n", 0o644, time_n(2));
    mkdir(&outside);
    let Some(fs) = Tmpfs::mount(test, &dst, SMALL_FS) else {
        return;
    };
    let mut p = WatchProcess::spawn(&src, &dst, &[], &base.path().join("stderr.txt"));
    p.wait_mirror(&src, &dst, "the initial sync");

    // The big file appears whole (renamed in from beside SRC), so no read of it races its
    // writing; a small file follows it.
    let staged = outside.join("big.bin");
    write_file(&staged, pseudo_random(TOO_BIG, 21), 0o644, time_n(3));
    std::fs::rename(&staged, src.join("big.bin")).expect("move big.bin into SRC");
    write_file(&src.join("dir/after.txt"), "after\n", 0o644, time_n(4));

    let started = Instant::now();
    wait_until_blocking(DEADLINE, "a disk-full error for big.bin is logged", || {
        p.assert_running();
        let stderr = p.stderr();
        let lines = lines_with(&stderr, NO_SPACE);
        if lines.is_empty() {
            return Err(format!("no {NO_SPACE:?} line yet\n{stderr}"));
        }
        // The line names the folder and the file.
        match lines
            .iter()
            .find(|l| l.contains("folder=") && l.contains("path=big.bin"))
        {
            Some(_) => Ok(()),
            None => Err(format!(
                "the {NO_SPACE:?} lines do not name the folder and big.bin: {lines:#?}"
            )),
        }
    });
    eprintln!(
        "disk-full error logged {:?} after the big file appeared",
        started.elapsed()
    );
    p.wait_until_mirrored_except(&src, &dst, &["big.bin"], "the disk filled up");
    wait_until_blocking(DEADLINE, "the failed temp file is removed", || {
        let temps = temp_files(&dst);
        if temps.is_empty() {
            Ok(())
        } else {
            Err(format!("temp files in DST: {temps:?}"))
        }
    });
    assert!(
        !exists(&dst.join("big.bin")),
        "the file that does not fit has a final name in DST"
    );
    assert_no_torn_files(&src, &dst, &Snapshot::new());
    p.assert_running();

    // A failed file is tried again by the Applier itself (after 1 s, doubling), with no
    // change at the source: making space is enough.
    fs.resize(BIG_FS);
    let started = Instant::now();
    p.wait_mirror(&src, &dst, "making space, with SRC unchanged");
    eprintln!("converged {:?} after space was made", started.elapsed());
    assert_no_temp_files(&dst, "after converging");

    p.terminate();
    let (status, stderr) = p.wait_exit(EXIT_DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "ferry watch should exit 0 on SIGTERM after a disk-full error ({status})\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Permission denied on a target subdirectory
// ---------------------------------------------------------------------------------------------

#[test]
fn unwritable_target_subdirectory_is_reported_and_everything_else_syncs() {
    let test = "unwritable_target_subdirectory_is_reported_and_everything_else_syncs";
    let Some(base) = unprivileged_base(test) else {
        return;
    };
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write_file(&src.join("top.txt"), "top\n", 0o644, time_n(1));
    write_file(&src.join("other/o.txt"), "other\n", 0o644, time_n(2));
    write_file(
        &src.join("locked/a.txt"),
        "a, version 1\n",
        0o644,
        time_n(3),
    );
    write_file(
        &src.join("locked/doomed.txt"),
        "to be removed\n",
        0o644,
        time_n(4),
    );
    write_file(
        &src.join("locked/big.bin"),
        pseudo_random(300_000, 5),
        0o644,
        time_n(5),
    );
    open_up_tree(base.path());
    // The first sync runs as the unprivileged user too, so that it owns DST.
    sync_unprivileged(&src, &dst, &[]).assert_success();
    assert_mirror(&src, &dst);

    // Changes inside locked/ (edit, new file, removal, a large edit) and outside it.
    write_file(
        &src.join("locked/a.txt"),
        "a, version 2, longer\n",
        0o644,
        time_n(6),
    );
    write_file(&src.join("locked/new.txt"), "new\n", 0o644, time_n(7));
    std::fs::remove_file(src.join("locked/doomed.txt")).expect("remove locked/doomed.txt");
    write_file(
        &src.join("locked/big.bin"),
        pseudo_random(300_000, 6),
        0o644,
        time_n(8),
    );
    write_file(&src.join("top.txt"), "top, edited\n", 0o644, time_n(9));
    write_file(&src.join("other/new.txt"), "other new\n", 0o644, time_n(10));
    write_file(&src.join("fresh/f.txt"), "fresh\n", 0o644, time_n(11));
    open_up_tree(&src);
    // Another user's directory: one of its own that lacks write permission Ferry makes
    // writable for the change (as rsync does), so this needs root to hand it to root.
    if !is_root() {
        eprintln!("SKIPPED {test}: only root can give a directory to another user");
        return;
    }
    let locked = dst.join("locked");
    let owner = std::fs::metadata(&locked).expect("stat locked/").uid();
    std::os::unix::fs::chown(&locked, Some(0), Some(0)).expect("chown locked/ to root");
    set_mode(&locked, 0o755);
    let before = snapshot(&dst);

    let out = sync_unprivileged(&src, &dst, &["--json"]);
    // Whatever the run did to its mode, give the directory back for the checks and clean-up.
    let locked_mode_after = snapshot(&dst)[Path::new("locked")].mode;
    std::os::unix::fs::chown(&locked, Some(owner), Some(owner)).expect("chown locked/ back");
    set_mode(&locked, 0o777);

    out.assert_code(3);
    let report = out.report();
    for path in ["locked/a.txt", "locked/new.txt", "locked/big.bin"] {
        let reason = report
            .not_applied
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, r)| r.as_str())
            .unwrap_or_else(|| panic!("{path} is not among the actions not applied\n{out}"));
        assert!(
            reason.contains("Permission denied"),
            "the reason for {path} does not say permission was denied: {reason:?}\n{out}"
        );
        out.assert_stderr_contains(path);
    }
    assert!(
        report
            .not_applied
            .iter()
            .all(|(p, _)| p == "locked" || p.starts_with("locked/")),
        "only locked/ (root's: its metadata cannot be set) and entries in it may fail: {:?}\n{out}",
        report.not_applied
    );
    // Nothing under locked/ is torn: each file is its old version or its new one, whole.
    assert_no_torn_files(&src, &dst, &before);
    assert_no_temp_files(&dst, "after the run with an unwritable directory");
    let after = snapshot(&dst);
    for old in ["locked/a.txt", "locked/big.bin", "locked/doomed.txt"] {
        assert_eq!(
            after.get(Path::new(old)),
            before.get(Path::new(old)),
            "{old} in the unwritable directory changed"
        );
    }
    assert!(!exists(&dst.join("locked/new.txt")));
    mirror_except(&src, &dst, &["locked"])
        .unwrap_or_else(|d| panic!("entries outside locked/ were not synced:\n{d}\n{out}"));
    eprintln!("locked/ had mode {locked_mode_after:04o} after the run (0755, root's, before it)");

    // Writable again, the next run finishes the job.
    let again = sync_unprivileged(&src, &dst, &[]);
    again.assert_success();
    assert_mirror(&src, &dst);
    assert_no_temp_files(&dst, "after the run with the directory writable");
}

// ---------------------------------------------------------------------------------------------
// Helpers on the watch process
// ---------------------------------------------------------------------------------------------

/// Waits on a [`WatchProcess`] for conditions this file needs beyond a full mirror.
trait WatchExt {
    /// Waits until DST mirrors SRC apart from `skip`, failing early if the process exits.
    fn wait_until_mirrored_except(&mut self, src: &Path, dst: &Path, skip: &[&str], step: &str);
}

impl WatchExt for WatchProcess {
    fn wait_until_mirrored_except(&mut self, src: &Path, dst: &Path, skip: &[&str], step: &str) {
        let what = format!("DST mirrors SRC except {skip:?} after {step}");
        wait_until_blocking(DEADLINE, &what, || {
            self.assert_running();
            mirror_except(src, dst, skip)
        });
    }
}

/// A directory the target will not let Ferry make is named once among the entries not
/// applied, with why it could not be made: not once per plan that tried it (the
/// directories-only plan made while content is hashed, then the plan made once it is in),
/// nor again for its metadata.
#[test]
fn a_directory_that_cannot_be_made_is_reported_once() {
    let test = "a_directory_that_cannot_be_made_is_reported_once";
    if !is_root() {
        eprintln!("SKIPPED {test}: only root can give a directory to another user");
        return;
    }
    let Some(base) = unprivileged_base(test) else {
        return;
    };
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write_file(&src.join("top.txt"), "top\n", 0o644, time_n(1));
    write_file(&src.join("locked/sub/f.txt"), "f\n", 0o644, time_n(2));
    std::fs::create_dir_all(dst.join("locked")).expect("mkdir dst/locked");
    open_up_tree(base.path());
    // DST's locked/ is root's (nobody cannot make sub/ in it), with SRC's metadata.
    for d in [
        src.join("locked/sub"),
        src.join("locked"),
        dst.join("locked"),
    ] {
        set_mode(&d, 0o755);
        set_mtime(&d, time_n(3));
    }
    let out = sync_unprivileged(&src, &dst, &["--json"]);
    out.assert_code(3);
    let report = out.report();
    assert!(
        report
            .not_applied
            .iter()
            .any(|(p, r)| p == "locked/sub" && r.contains("Permission denied")),
        "locked/sub is not reported: {:?}\n{out}",
        report.not_applied
    );
    let mut paths: Vec<_> = report.not_applied.iter().map(|(p, _)| p.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        paths.len(),
        report.not_applied.len(),
        "a path is reported more than once: {:?}\n{out}",
        report.not_applied
    );
    assert_eq!(
        std::fs::read(dst.join("top.txt")).ok(),
        Some(b"top\n".to_vec())
    );
}
