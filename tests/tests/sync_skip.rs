//! Entries Ferry cannot or does not replicate are skipped with a warning; the rest still syncs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::util::*;

/// A small tree of ordinary files that must sync whatever else is skipped.
fn ordinary_files(root: &Path) {
    write_file(&root.join("one.txt"), "one\n", 0o644, time_n(1));
    write_file(&root.join("sub/two.txt"), "two\n", 0o600, time_n(2));
    write_file(
        &root.join("sub/deeper/three.bin"),
        pseudo_random(200_000, 3),
        0o644,
        time_n(3),
    );
}

#[test]
fn fifo_in_src_is_skipped_with_warning_and_exit_0() {
    let src = tempdir();
    ordinary_files(src.path());
    mkfifo(&src.path().join("sub/pipe.fifo"));
    let dst = tempdir();

    let out = sync(src.path(), dst.path(), &[]);

    // A special file is not an error: the run is complete (exit 0), with a warning naming it.
    out.assert_success().assert_stderr_contains("pipe.fifo");
    assert!(
        !exists(&dst.path().join("sub/pipe.fifo")),
        "the fifo was replicated"
    );
    assert_mirror_except(src.path(), dst.path(), &["sub/pipe.fifo"]);
}

#[test]
fn socket_in_src_is_skipped_with_warning_and_exit_0() {
    let src = tempdir();
    ordinary_files(src.path());
    let listener = std::os::unix::net::UnixListener::bind(src.path().join("sub/app.sock")).unwrap();
    let dst = tempdir();

    let out = sync(src.path(), dst.path(), &[]);
    drop(listener);

    out.assert_success().assert_stderr_contains("app.sock");
    assert!(
        !exists(&dst.path().join("sub/app.sock")),
        "the socket was replicated"
    );
    assert_mirror_except(src.path(), dst.path(), &["sub/app.sock"]);
}

#[test]
fn non_utf8_name_is_skipped_with_warning_and_exit_3() {
    let src = tempdir();
    ordinary_files(src.path());
    let bad = PathBuf::from(OsStr::from_bytes(b"sub/bad-\xff-name.txt"));
    write_file(&src.path().join(&bad), "unnamable\n", 0o644, time_n(4));
    let dst = tempdir();

    let out = sync(src.path(), dst.path(), &[]);

    out.assert_code(3).assert_stderr_contains("bad-");
    assert!(
        !exists(&dst.path().join(&bad)),
        "the non-UTF-8 name was replicated"
    );
    let mut s = snapshot(src.path());
    s.remove(&bad);
    let d = snapshot(dst.path());
    let diffs = diff_snapshots(&s, &d, Compare::MIRROR, ("SRC", "DST"));
    assert!(diffs.is_empty(), "the rest did not sync: {diffs:#?}");
}

#[test]
fn special_files_in_dst_are_removed_as_extras_and_stand_in_no_ones_way() {
    // The source never replicates special files, so DST's are extras: removed, and not in
    // the way of what the source has at their paths. (They were left forever: a directory
    // holding one was "kept", and a fifo where SRC has a directory failed every run.)
    let src = tempdir();
    ordinary_files(src.path());
    write_file(&src.path().join("was-fifo/f.txt"), "f\n", 0o644, time_n(5));
    let dst = tempdir();
    mkdir(&dst.path().join("gone"));
    mkfifo(&dst.path().join("gone/pipe.fifo"));
    mkfifo(&dst.path().join("was-fifo"));
    mkdir(&dst.path().join("sub"));
    mkfifo(&dst.path().join("sub/pipe.fifo"));
    // A name that is not UTF-8 is left (SRC may hold it, skipped there), with a warning.
    let bad = PathBuf::from(OsStr::from_bytes(b"odd-\xff-name.txt"));
    write_file(&dst.path().join(&bad), "theirs\n", 0o644, time_n(6));

    let out = sync(src.path(), dst.path(), &[]);
    out.assert_success().assert_stderr_contains("odd-");
    for gone in ["gone", "sub/pipe.fifo"] {
        assert!(!exists(&dst.path().join(gone)), "{gone} survived\n{out}");
    }
    assert!(
        exists(&dst.path().join(&bad)),
        "a non-UTF-8 name was deleted"
    );
    std::fs::remove_file(dst.path().join(&bad)).unwrap();
    assert_mirror(src.path(), dst.path());
}

/// A world-accessible base directory holding `src/` (synced once, as the unprivileged user,
/// into `dst/`), or `None` when the test cannot run here.
fn unprivileged_setup(
    test: &str,
    fill: impl FnOnce(&Path),
) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let base = unprivileged_base(test)?;
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    fill(&src);
    open_up_tree(base.path());
    let out = sync_unprivileged(&src, &dst, &[]);
    out.assert_success();
    assert_mirror(&src, &dst);
    Some((base, src, dst))
}

#[test]
fn unreadable_source_file_is_skipped_and_its_dst_copy_kept() {
    let Some((_base, src, dst)) = unprivileged_setup(
        "unreadable_source_file_is_skipped_and_its_dst_copy_kept",
        |src| {
            ordinary_files(src);
            write_file(&src.join("sub/secret.txt"), "version 1\n", 0o644, time_n(5));
        },
    ) else {
        return;
    };
    let before = snapshot(&dst);
    // The secret changes (so it must be read to be synced) and becomes unreadable; a new
    // unreadable file appears; an ordinary file changes too.
    write_file(
        &src.join("sub/secret.txt"),
        "version 2, longer\n",
        0o000,
        time_n(6),
    );
    write_file(
        &src.join("fresh-secret.txt"),
        "never readable\n",
        0o000,
        time_n(7),
    );
    write_file(&src.join("one.txt"), "one, edited\n", 0o644, time_n(8));

    let out = sync_unprivileged(&src, &dst, &[]);
    // Let the checks below (and TempDir's clean-up when not root) read everything again.
    set_mode(&src.join("sub/secret.txt"), 0o644);
    set_mode(&src.join("fresh-secret.txt"), 0o644);

    out.assert_code(3)
        .assert_stderr_contains("secret.txt")
        .assert_stderr_contains("fresh-secret.txt");
    let after = snapshot(&dst);
    let secret = Path::new("sub/secret.txt");
    assert_eq!(
        after.get(secret),
        before.get(secret),
        "the DST copy of the unreadable file must be left as it was"
    );
    assert!(
        !exists(&dst.join("fresh-secret.txt")),
        "an unreadable file appeared in DST"
    );
    assert_mirror_except(&src, &dst, &["sub/secret.txt", "fresh-secret.txt"]);
}

#[test]
fn unreadable_source_dir_is_skipped_and_its_dst_copy_kept() {
    let Some((_base, src, dst)) = unprivileged_setup(
        "unreadable_source_dir_is_skipped_and_its_dst_copy_kept",
        |src| {
            ordinary_files(src);
            write_file(&src.join("locked/inside.txt"), "inside\n", 0o644, time_n(5));
            write_file(
                &src.join("locked/nested/deep.txt"),
                "deep\n",
                0o644,
                time_n(6),
            );
        },
    ) else {
        return;
    };
    let before = snapshot(&dst);
    // 0644: when root, the unprivileged run must still be able to read it.
    write_file(&src.join("sub/two.txt"), "two, edited\n", 0o644, time_n(8));
    set_mode(&src.join("locked"), 0o000);

    let out = sync_unprivileged(&src, &dst, &[]);
    set_mode(&src.join("locked"), 0o777);

    out.assert_code(3).assert_stderr_contains("locked");
    // The directory could not be listed, so nothing below it in DST may be removed.
    let after = snapshot(&dst);
    for (path, node) in before.iter().filter(|(p, _)| p.starts_with("locked")) {
        if node.kind == Kind::File {
            assert_eq!(
                after.get(path),
                Some(node),
                "{} changed in DST",
                path.display()
            );
        } else {
            assert!(
                after.contains_key(path),
                "{} was removed from DST",
                path.display()
            );
        }
    }
    assert_mirror_except(&src, &dst, &["locked"]);
}

#[test]
fn unreadable_unchanged_file_with_checksum_is_skipped_and_its_dst_copy_kept() {
    let Some((_base, src, dst)) = unprivileged_setup(
        "unreadable_unchanged_file_with_checksum_is_skipped_and_its_dst_copy_kept",
        |src| {
            ordinary_files(src);
            write_file(
                &src.join("sub/secret.txt"),
                "same content\n",
                0o644,
                time_n(5),
            );
        },
    ) else {
        return;
    };
    // The DST copy is made to differ in content only, so only reading SRC could tell.
    write_file(
        &dst.join("sub/secret.txt"),
        "SAME CONTENT\n",
        0o644,
        time_n(5),
    );
    let before = snapshot(&dst);
    set_mode(&src.join("sub/secret.txt"), 0o000);

    let out = sync_unprivileged(&src, &dst, &["--checksum"]);
    set_mode(&src.join("sub/secret.txt"), 0o644);

    out.assert_code(3).assert_stderr_contains("secret.txt");
    let secret = Path::new("sub/secret.txt");
    assert_eq!(
        snapshot(&dst).get(secret),
        before.get(secret),
        "the DST copy must be left as it was"
    );
    assert_mirror_except(&src, &dst, &["sub/secret.txt"]);
}
