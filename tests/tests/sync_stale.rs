//! `ferry sync` onto a target that already holds an older or unrelated tree.

use std::path::Path;

use crate::util::*;

/// Builds a DST that disagrees with `rich_tree` in every way a tree can.
fn stale_dst(dst: &Path, outside: &Path) {
    // Changed content, different size and mtime.
    write_file(
        &dst.join("a/b/c/deep.txt"),
        "an older, longer version\n",
        0o644,
        time_n(60),
    );
    // Changed content, same size, different mtime.
    write_file(&dst.join("top.txt"), "TOP LEVEL\n", 0o644, time_n(61));
    // Truncated copy of the big file.
    write_file(
        &dst.join("big.bin"),
        &pseudo_random(BIG_LEN, 7)[..1_000_000],
        0o644,
        time_n(4),
    );
    // Extra files and nested directories.
    write_file(&dst.join("extra.txt"), "not in source\n", 0o644, time_n(62));
    write_file(
        &dst.join("old/deeper/deepest/file"),
        "old\n",
        0o600,
        time_n(63),
    );
    mkdir(&dst.join("old/empty"));
    write_file(
        &dst.join("a/b/c/extra-in-kept-dir"),
        "x\n",
        0o644,
        time_n(64),
    );
    // A directory where SRC has a file, and a file where SRC has a directory.
    write_file(
        &dst.join("secret.key/inner/file"),
        "dir here\n",
        0o644,
        time_n(65),
    );
    write_file(&dst.join("private"), "file here\n", 0o644, time_n(66));
    // A symlink where SRC has a directory, and one where SRC has a file.
    symlink("a", &dst.join("bin"));
    symlink(outside.join("target.txt"), &dst.join("a/empty"));
    // A file where SRC has a symlink, and a symlink with another target.
    write_file(&dst.join("links/rel"), "not a link\n", 0o644, time_n(67));
    symlink("elsewhere", &dst.join("links/dangling"));
    // A directory where SRC has a symlink.
    write_file(
        &dst.join("links/dir/file"),
        "dir, not link\n",
        0o644,
        time_n(68),
    );
    // Wrong modes.
    set_mode(&dst.join("a/b/c/deep.txt"), 0o600);
}

#[test]
fn stale_dst_becomes_exact_mirror() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    stale_dst(dst.path(), outside.path());
    let outside_before = snapshot(outside.path());

    let report = sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    assert_untouched(
        &outside_before,
        &snapshot(outside.path()),
        "the directory outside DST",
    );
    assert!(
        report.removed > 0,
        "extra entries were removed: {}",
        report.raw
    );
    assert!(
        report.updated > 0,
        "stale files were updated: {}",
        report.raw
    );
}

#[test]
fn stale_dst_is_mirrored_with_checksum_too() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    stale_dst(dst.path(), outside.path());

    sync_ok(src.path(), dst.path(), &["--checksum"]);

    assert_mirror(src.path(), dst.path());
}

#[test]
fn same_size_same_mtime_change_is_only_caught_with_checksum() {
    let src = tempdir();
    let dst = tempdir();
    write_file(
        &src.path().join("same.txt"),
        "content A\n",
        0o644,
        time_n(1),
    );
    write_file(&src.path().join("other.txt"), "other\n", 0o644, time_n(2));
    write_file(
        &dst.path().join("same.txt"),
        "content B\n",
        0o644,
        time_n(1),
    );
    write_file(&dst.path().join("other.txt"), "other\n", 0o644, time_n(2));
    let before = snapshot(dst.path());

    // Size and mtime agree, so the quick check trusts the target copy.
    let quick = sync_ok(src.path(), dst.path(), &[]);

    quick.assert_nothing_changed();
    assert_untouched(
        &before,
        &snapshot(dst.path()),
        "DST after a quick-check sync",
    );
    assert_eq!(
        std::fs::read(dst.path().join("same.txt")).unwrap(),
        b"content B\n"
    );

    // Comparing contents finds and fixes it.
    let thorough = sync_ok(src.path(), dst.path(), &["--checksum"]);

    assert_mirror(src.path(), dst.path());
    assert_eq!(thorough.updated, 1, "{}", thorough.raw);
    assert_eq!(
        (thorough.created, thorough.removed),
        (0, 0),
        "{}",
        thorough.raw
    );
    assert_eq!(
        ino(&dst.path().join("other.txt")),
        before[Path::new("other.txt")].ino
    );
}

#[test]
fn short_flag_c_is_checksum() {
    let src = tempdir();
    let dst = tempdir();
    write_file(&src.path().join("f"), "AAAA", 0o644, time_n(1));
    write_file(&dst.path().join("f"), "BBBB", 0o644, time_n(1));

    sync_ok(src.path(), dst.path(), &["-c"]);

    assert_mirror(src.path(), dst.path());
}

#[test]
fn stale_dst_with_everything_removed_from_src_ends_empty() {
    let src = tempdir();
    let outside = tempdir();
    let dst = tempdir();
    rich_tree(dst.path(), outside.path());

    let report = sync_ok(src.path(), dst.path(), &[]);

    assert!(
        snapshot(dst.path()).is_empty(),
        "{:?}",
        snapshot(dst.path()).keys()
    );
    assert!(report.removed > 0, "{}", report.raw);
    assert!(outside.path().join("target.txt").is_file());
}

#[test]
fn a_leftover_temp_file_is_removed_without_moving_its_directorys_mtime() {
    // A crashed run left a temp file in sub/. The next run removes it once the plan is
    // applied, after it set sub/'s mtime: that mtime must still be the source's.
    let (src, dst) = (tempdir(), tempdir());
    write_file(&src.path().join("sub/f.txt"), "f\n", 0o644, time_n(1));
    set_mtime(&src.path().join("sub"), time_n(2));
    sync_ok(src.path(), dst.path(), &[]);
    write_file(
        &dst.path().join("sub/.ferry-tmp-999-deadbeef-0"),
        pseudo_random(10_000, 5),
        0o600,
        time_n(3),
    );
    set_mtime(&dst.path().join("sub"), time_n(2));
    write_file(&src.path().join("sub/new.txt"), "new\n", 0o644, time_n(4));
    set_mtime(&src.path().join("sub"), time_n(5));

    sync_ok(src.path(), dst.path(), &[]);
    assert!(!exists(&dst.path().join("sub/.ferry-tmp-999-deadbeef-0")));
    let mtime = |root: &Path| {
        std::fs::metadata(root.join("sub"))
            .unwrap()
            .modified()
            .unwrap()
    };
    assert_eq!(mtime(dst.path()), mtime(src.path()), "sub/'s mtime");
    assert_mirror(src.path(), dst.path());
    // And a second run finds nothing to do.
    sync_ok(src.path(), dst.path(), &[]).assert_nothing_changed();
}

#[test]
fn names_like_ferrys_temp_files_are_ordinary_entries_unless_they_are_one() {
    // Only `.ferry-tmp-PID-TAG-N` is Ferry's: a user's `.ferry-tmp-notes` is replicated
    // (it was left out without a word), a target's own one is an extra like any other.
    let (src, dst) = (tempdir(), tempdir());
    write_file(
        &src.path().join(".ferry-tmp-notes"),
        "mine\n",
        0o644,
        time_n(1),
    );
    write_file(
        &src.path().join(".ferry-tmp-project/a.txt"),
        "a\n",
        0o644,
        time_n(2),
    );
    write_file(
        &dst.path().join(".ferry-tmp-extra"),
        "extra\n",
        0o644,
        time_n(3),
    );
    // A temp file of a Ferry writing into SRC (a chained replica) is not replicated.
    write_file(
        &src.path().join(".ferry-tmp-5-0badc0de-1"),
        "part",
        0o600,
        time_n(4),
    );

    sync_ok(src.path(), dst.path(), &[]);
    assert_eq!(
        std::fs::read(dst.path().join(".ferry-tmp-notes")).unwrap(),
        b"mine\n"
    );
    assert!(exists(&dst.path().join(".ferry-tmp-project/a.txt")));
    assert!(
        !exists(&dst.path().join(".ferry-tmp-extra")),
        "an extra survived"
    );
    assert!(!exists(&dst.path().join(".ferry-tmp-5-0badc0de-1")));
    assert_mirror_except(src.path(), dst.path(), &[".ferry-tmp-5-0badc0de-1"]);
}

/// Directories removed or renamed in SRC are removed in DST without a word: their removal is
/// made durable through their parent, not by flushing the directory that is gone.
#[test]
fn removing_and_renaming_directories_warns_about_nothing() {
    let src = tempdir();
    let dst = tempdir();
    write_file(&src.path().join("x/f"), "1\n", 0o644, time_n(1));
    write_file(&src.path().join("y/sub/g"), "2\n", 0o644, time_n(2));
    sync_ok(src.path(), dst.path(), &[]);

    std::fs::remove_dir_all(src.path().join("x")).unwrap();
    std::fs::rename(src.path().join("y"), src.path().join("z")).unwrap();
    let run = sync(src.path(), dst.path(), &[]);

    run.assert_success();
    assert_mirror(src.path(), dst.path());
    assert!(
        !run.stderr.contains("WARN"),
        "a warning for a directory removed on purpose:\n{}",
        run.stderr
    );
}
