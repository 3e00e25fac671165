//! The target's symlinks are never followed: nothing outside DST is read, written or removed.

use std::path::Path;

use crate::util::*;

/// A directory outside DST holding a file, and its snapshot.
fn outside_dir() -> (tempfile::TempDir, Snapshot) {
    let outside = tempdir();
    write_file(
        &outside.path().join("victim/precious.txt"),
        "do not touch\n",
        0o644,
        time_n(70),
    );
    write_file(
        &outside.path().join("victim/file"),
        "SRC has the same name\n",
        0o644,
        time_n(71),
    );
    write_file(
        &outside.path().join("lone.txt"),
        "lonely\n",
        0o644,
        time_n(72),
    );
    let snap = snapshot(outside.path());
    (outside, snap)
}

#[test]
fn dst_symlink_to_outside_dir_is_replaced_by_real_dir() {
    let (outside, outside_before) = outside_dir();
    let src = tempdir();
    write_file(
        &src.path().join("sub/file"),
        "from source\n",
        0o644,
        time_n(1),
    );
    write_file(
        &src.path().join("sub/deeper/more"),
        "more\n",
        0o600,
        time_n(2),
    );
    let dst = tempdir();
    symlink(outside.path().join("victim"), &dst.path().join("sub"));

    sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    let md = std::fs::symlink_metadata(dst.path().join("sub")).unwrap();
    assert!(
        md.is_dir() && !md.file_type().is_symlink(),
        "DST/sub should be a real directory"
    );
    assert_untouched(
        &outside_before,
        &snapshot(outside.path()),
        "the directory the DST symlink pointed to",
    );
}

#[test]
fn dst_symlink_to_outside_dir_is_replaced_with_checksum_too() {
    let (outside, outside_before) = outside_dir();
    let src = tempdir();
    // Same name, size and mtime as the outside file: a follower would think it is up to date.
    write_file(
        &src.path().join("sub/file"),
        "SRC has the same name\n",
        0o644,
        time_n(71),
    );
    let dst = tempdir();
    symlink(outside.path().join("victim"), &dst.path().join("sub"));

    sync_ok(src.path(), dst.path(), &["--checksum"]);

    assert_mirror(src.path(), dst.path());
    assert_untouched(
        &outside_before,
        &snapshot(outside.path()),
        "the directory the DST symlink pointed to",
    );
}

#[test]
fn dst_symlink_where_src_has_file_is_replaced_by_the_file() {
    let (outside, outside_before) = outside_dir();
    let src = tempdir();
    write_file(
        &src.path().join("lone.txt"),
        "the real content\n",
        0o644,
        time_n(1),
    );
    let dst = tempdir();
    symlink(
        outside.path().join("lone.txt"),
        &dst.path().join("lone.txt"),
    );

    sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    let md = std::fs::symlink_metadata(dst.path().join("lone.txt")).unwrap();
    assert!(md.is_file(), "DST/lone.txt should be a regular file");
    assert_untouched(
        &outside_before,
        &snapshot(outside.path()),
        "the file the DST symlink pointed to",
    );
}

#[test]
fn dst_symlink_to_outside_dir_not_in_src_is_removed_alone() {
    let (outside, outside_before) = outside_dir();
    let src = tempdir();
    write_file(&src.path().join("keep.txt"), "keep\n", 0o644, time_n(1));
    let dst = tempdir();
    symlink(outside.path().join("victim"), &dst.path().join("gone"));
    symlink(outside.path(), &dst.path().join("nested/gone-too"));

    let report = sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    assert!(!exists(&dst.path().join("gone")));
    assert!(report.removed >= 2, "{}", report.raw);
    assert_untouched(
        &outside_before,
        &snapshot(outside.path()),
        "the directory the removed symlinks pointed to",
    );
}

#[test]
fn dst_that_is_a_symlink_to_a_dir_is_synced_into_that_dir() {
    // DST given on the command line may itself be a symlink: the user named it, so it is used.
    let src = tempdir();
    write_file(&src.path().join("f"), "f\n", 0o644, time_n(1));
    let real = tempdir();
    let parent = tempdir();
    let link = parent.path().join("link");
    symlink(real.path(), &link);

    sync_ok(src.path(), &link, &[]);

    assert_mirror(src.path(), real.path());
    assert_eq!(std::fs::read_link(&link).unwrap(), real.path());
    assert!(Path::new(&link).is_dir());
}
