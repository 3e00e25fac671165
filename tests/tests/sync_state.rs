//! `ferry sync --state DIR`: a repeat sync of the same SRC and DST rehashes only what
//! changed and reads no target file left as it was, and stale or broken state never makes
//! the mirror wrong.

use std::fs;
use std::path::Path;

use crate::util::*;

/// The `bytes_hashed` counter of a run's JSON summary.
fn hashed(report: &Report) -> u64 {
    report.raw["bytes_hashed"]
        .as_u64()
        .unwrap_or_else(|| panic!("no bytes_hashed in {}", report.raw))
}

/// `sync_ok` with `--state state` and `-v` (so the Applier's reuse of saved chunk lists
/// shows in the log), returning the report and stderr.
fn sync_kept(src: &Path, dst: &Path, state: &Path, extra: &[&str]) -> (Report, String) {
    let state = state.to_str().unwrap();
    let mut flags = vec!["--json", "-v", "--state", state];
    flags.extend_from_slice(extra);
    let out = sync(src, dst, &flags);
    out.assert_success();
    let report = out.report();
    assert!(report.not_applied.is_empty(), "{out}");
    (report, out.stderr.clone())
}

/// A tree of a few files, one of them large enough to be chunked many times over.
fn tree(src: &Path) -> u64 {
    write(&src.join("big.bin"), pseudo_random(3 << 20, 1));
    write(&src.join("a/small.txt"), "small\n");
    write(&src.join("a/b/other.txt"), pseudo_random(70_000, 2));
    (3 << 20) + 6 + 70_000
}

#[test]
fn a_repeat_sync_rehashes_only_what_changed() {
    let (src, dst, state) = (tempdir(), tempdir(), tempdir());
    let total = tree(src.path());

    let (first, _) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_eq!(hashed(&first), total, "{}", first.raw);
    assert!(state.path().join("state.redb").is_file());
    assert_mirror(src.path(), dst.path());

    let before = snapshot(dst.path());
    let (second, _) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_eq!(hashed(&second), 0, "nothing changed: {}", second.raw);
    second.assert_nothing_changed();
    assert_untouched(&before, &snapshot(dst.path()), "DST after a no-op run");

    // One file changes: only it is hashed again, and only its new chunk travels.
    let mut other = fs::read(src.path().join("a/b/other.txt")).unwrap();
    other.extend_from_slice(b"appended");
    write(&src.path().join("a/b/other.txt"), &other);
    let (third, _) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_eq!(hashed(&third), other.len() as u64, "{}", third.raw);
    assert_eq!(third.updated, 1, "{}", third.raw);
    assert_mirror(src.path(), dst.path());
}

#[test]
fn an_edit_reuses_the_saved_target_chunk_lists() {
    let (src, dst, state) = (tempdir(), tempdir(), tempdir());
    tree(src.path());
    sync_kept(src.path(), dst.path(), state.path(), &[]);

    // 4 KiB overwritten in the middle of the large file, in place.
    let path = src.path().join("big.bin");
    let mut big = fs::read(&path).unwrap();
    big[1 << 20..(1 << 20) + 4096].copy_from_slice(&pseudo_random(4096, 9));
    write(&path, &big);
    let (report, log) = sync_kept(src.path(), dst.path(), state.path(), &[]);

    assert!(
        log.contains("target chunk lists reused from the store") && log.contains("reused=3"),
        "the target's files were read again instead of their saved lists used:\n{log}"
    );
    let max_chunk = 128 << 10;
    assert!(
        report.bytes_sent <= 2 * max_chunk,
        "sent {} bytes for a 4 KiB edit: {}",
        report.bytes_sent,
        report.raw
    );
    assert_eq!(report.updated, 1, "{}", report.raw);
    assert_mirror(src.path(), dst.path());
}

#[test]
fn a_rename_over_a_file_of_the_same_size_and_mtime_is_mirrored() {
    // The saved chunk lists of both sides differ where size and mtime agree: they decide.
    let (src, dst, state) = (tempdir(), tempdir(), tempdir());
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    for (name, text) in [("a", "AAAA\n"), ("b", "BBBB\n")] {
        write(&src.path().join(name), text);
        set_mtime(&src.path().join(name), mtime);
    }
    sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_mirror(src.path(), dst.path());

    fs::rename(src.path().join("b"), src.path().join("a")).unwrap();
    let (report, _) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_eq!(report.updated, 1, "{}", report.raw);
    assert_eq!(fs::read(dst.path().join("a")).unwrap(), b"BBBB\n");
    assert_mirror(src.path(), dst.path());
}

#[test]
fn a_target_file_changed_behind_the_state_is_read_again() {
    let (src, dst, state) = (tempdir(), tempdir(), tempdir());
    tree(src.path());
    sync_kept(src.path(), dst.path(), state.path(), &[]);

    // Someone rewrites the target's copy (same size and mtime, other bytes), then the
    // source's file is edited: the saved chunk list no longer describes the target file
    // and must not be trusted to copy chunks from it.
    let target = dst.path().join("big.bin");
    let mtime = fs::metadata(&target).unwrap().modified().unwrap();
    write(&target, pseudo_random(3 << 20, 77));
    set_mtime(&target, mtime);
    let path = src.path().join("big.bin");
    let mut big = fs::read(&path).unwrap();
    big[..4096].copy_from_slice(&pseudo_random(4096, 10));
    write(&path, &big);

    let (report, log) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert!(log.contains("reused=2"), "{log}");
    assert_eq!(report.updated, 1, "{}", report.raw);
    assert_mirror(src.path(), dst.path());
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_sync_runs() {
    let (src, dst, state) = (tempdir(), tempdir(), tempdir());
    let total = tree(src.path());
    write(&state.path().join("state.redb"), b"this is not a database");

    let (report, log) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_eq!(hashed(&report), total, "{}", report.raw);
    assert_mirror(src.path(), dst.path());
    assert!(log.contains("fresh state database"), "{log}");
    let aside: Vec<_> = fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.redb.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");

    // And the new state serves the next run.
    let (again, _) = sync_kept(src.path(), dst.path(), state.path(), &[]);
    assert_eq!(hashed(&again), 0, "{}", again.raw);
}

#[test]
fn a_dry_run_neither_reads_nor_writes_the_state() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    tree(src.path());
    let state = scratch.path().join("state");
    let out = sync(
        src.path(),
        dst.path(),
        &["--json", "--dry-run", "--state", state.to_str().unwrap()],
    );
    out.assert_success();
    assert!(!state.exists(), "a dry run created {}", state.display());
}

#[test]
fn a_state_path_that_is_a_file_is_a_clear_error() {
    let (src, dst, scratch) = (tempdir(), tempdir(), tempdir());
    tree(src.path());
    let state = scratch.path().join("not-a-dir");
    write(&state, "x");
    let out = sync(
        src.path(),
        dst.path(),
        &["--state", state.to_str().unwrap()],
    );
    out.assert_code(1)
        .assert_stderr_contains("cannot create the state directory")
        .assert_stderr_contains("not a directory");
    assert_eq!(std::fs::read(&state).unwrap(), b"x", "the file was changed");
}
