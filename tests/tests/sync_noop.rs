//! Syncing a target that is already (or mostly) up to date writes nothing it does not have to.

use crate::util::*;

#[test]
fn second_run_on_unchanged_tree_writes_nothing() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    sync_ok(src.path(), dst.path(), &[]);
    let before = snapshot(dst.path());

    let report = sync_ok(src.path(), dst.path(), &[]);

    // Same inode and same mtime for every file, directory and symlink: nothing was rewritten.
    assert_untouched(&before, &snapshot(dst.path()), "DST after a no-op sync");
    report.assert_nothing_changed();
    assert_eq!(
        report.entries_scanned,
        before.len() as u64,
        "{}",
        report.raw
    );
    assert_eq!(
        (report.bytes_sent, report.skipped),
        (0, 0),
        "{}",
        report.raw
    );
    assert_mirror(src.path(), dst.path());
}

#[test]
fn second_run_with_checksum_on_unchanged_tree_writes_nothing() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    sync_ok(src.path(), dst.path(), &[]);
    let before = snapshot(dst.path());

    let report = sync_ok(src.path(), dst.path(), &["--checksum"]);

    assert_untouched(
        &before,
        &snapshot(dst.path()),
        "DST after a no-op --checksum sync",
    );
    report.assert_nothing_changed();
    assert_eq!(report.bytes_sent, 0, "{}", report.raw);
}

#[test]
fn stale_files_are_rewritten_and_only_them() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    sync_ok(src.path(), dst.path(), &[]);
    let before = snapshot(dst.path());

    // Two files change in SRC: one in place (different size), one in a nested directory (same
    // size, different mtime). Rewriting an existing file does not change its directory's mtime.
    let stale = ["top.txt", "a/b/c/deep.txt"];
    write_file(
        &src.path().join("top.txt"),
        "top level, revised\n",
        0o644,
        time_n(100),
    );
    write_file(
        &src.path().join("a/b/c/deep.txt"),
        "DEEP DOWN\n",
        0o644,
        time_n(101),
    );
    let new_bytes: u64 = stale
        .iter()
        .map(|p| std::fs::metadata(src.path().join(p)).unwrap().len())
        .sum();

    let report = sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    assert_eq!(report.updated, stale.len() as u64, "{}", report.raw);
    assert_eq!(
        (
            report.created,
            report.metadata_only,
            report.removed,
            report.renamed
        ),
        (0, 0, 0, 0),
        "{}",
        report.raw
    );
    assert_eq!(
        report.bytes_written, new_bytes,
        "only the stale files are written: {}",
        report.raw
    );
    // Everything else is the very same entry, untouched.
    assert_untouched(
        &without(before, &stale),
        &without(snapshot(dst.path()), &stale),
        "the up-to-date part of DST",
    );
}

#[test]
fn small_edit_in_big_file_reuses_the_rest() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    sync_ok(src.path(), dst.path(), &[]);

    let mut big = pseudo_random(BIG_LEN, 7);
    big[BIG_LEN / 2..BIG_LEN / 2 + 5].copy_from_slice(b"EDIT!");
    write_file(&src.path().join("big.bin"), &big, 0o644, time_n(100));

    let report = sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    assert_eq!(report.updated, 1, "{}", report.raw);
    assert!(
        report.bytes_sent < BIG_LEN as u64 / 2,
        "a 5-byte edit should not resend most of a {BIG_LEN}-byte file: {}",
        report.raw
    );
    assert!(report.bytes_reused > 0, "{}", report.raw);
}
