//! `ferry sync` into an empty or missing target: the first sync makes an exact mirror.

use crate::util::*;

#[test]
fn initial_sync_into_empty_dst_makes_exact_mirror() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    // DST lives next to unrelated entries that must not be touched.
    let parent = tempdir();
    let dst = parent.path().join("dst");
    mkdir(&dst);
    write_file(
        &parent.path().join("sibling/keep.txt"),
        "keep me\n",
        0o644,
        time_n(90),
    );
    write_file(
        &parent.path().join("sibling.txt"),
        "me too\n",
        0o600,
        time_n(91),
    );
    symlink("sibling", &parent.path().join("sibling-link"));
    let siblings_before = without(snapshot(parent.path()), &["dst"]);
    let outside_before = snapshot(outside.path());

    let report = sync_ok(src.path(), &dst, &[]);

    assert_mirror(src.path(), &dst);
    assert_untouched(
        &siblings_before,
        &without(snapshot(parent.path()), &["dst"]),
        "the parent of DST",
    );
    assert_untouched(
        &outside_before,
        &snapshot(outside.path()),
        "the target of an absolute symlink",
    );
    let src_snap = snapshot(src.path());
    assert!(!report.dry_run);
    assert_eq!(
        report.entries_scanned,
        src_snap.len() as u64,
        "{}",
        report.raw
    );
    assert_eq!(
        report.created,
        src_snap.len() as u64,
        "every entry is new: {}",
        report.raw
    );
    assert_eq!(
        (
            report.updated,
            report.removed,
            report.renamed,
            report.skipped
        ),
        (0, 0, 0, 0),
        "{}",
        report.raw
    );
    assert_eq!(
        report.bytes_written,
        file_bytes(&src_snap),
        "{}",
        report.raw
    );
}

#[test]
fn initial_sync_copies_symlinks_as_links_without_following_them() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();

    sync_ok(src.path(), dst.path(), &[]);

    let d = snapshot(dst.path());
    for (link, target) in [
        ("links/rel", "../a/b/c/deep.txt".into()),
        ("links/abs", outside.path().join("target.txt")),
        ("links/dangling", "does/not/exist".into()),
        ("links/dir", "../a".into()),
    ] {
        let node = &d[std::path::Path::new(link)];
        assert_eq!(node.kind, Kind::Symlink, "{link} should stay a symlink");
        assert_eq!(node.target.as_deref(), Some(target.as_path()), "{link}");
    }
    // Nothing was copied through the directory symlink.
    let through_link: Vec<_> = d
        .keys()
        .filter(|p| p.starts_with("links/dir") && *p != std::path::Path::new("links/dir"))
        .collect();
    assert!(
        through_link.is_empty(),
        "copied through a symlink: {through_link:?}"
    );
}

#[test]
fn initial_sync_copies_dir_and_symlink_mtimes_too() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();

    sync_ok(src.path(), dst.path(), &[]);

    let diffs = diff_snapshots(
        &snapshot(src.path()),
        &snapshot(dst.path()),
        Compare::MIRROR_ALL_MTIMES,
        ("SRC", "DST"),
    );
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn initial_sync_creates_missing_dst() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let parent = tempdir();
    let dst = parent.path().join("new-target");
    assert!(!exists(&dst));

    let report = sync_ok(src.path(), &dst, &[]);

    assert!(dst.is_dir(), "DST was not created");
    assert_mirror(src.path(), &dst);
    assert_eq!(
        report.created,
        snapshot(src.path()).len() as u64,
        "{}",
        report.raw
    );
}

#[test]
fn initial_sync_accepts_relative_paths() {
    let work = tempdir();
    let outside = tempdir();
    rich_tree(&work.path().join("src"), outside.path());

    let out = ferry_in(work.path(), ["sync", "src", "dst"]);

    out.assert_success();
    assert_mirror(&work.path().join("src"), &work.path().join("dst"));
}

#[test]
fn initial_sync_of_empty_source_creates_empty_dst() {
    let src = tempdir();
    let parent = tempdir();
    let dst = parent.path().join("dst");

    let report = sync_ok(src.path(), &dst, &[]);

    assert!(dst.is_dir());
    assert!(snapshot(&dst).is_empty());
    assert_eq!(report.entries_scanned, 0, "{}", report.raw);
    report.assert_nothing_changed();
}

#[test]
fn initial_sync_without_fsync_makes_the_same_mirror() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();

    sync_ok(src.path(), dst.path(), &["--no-fsync"]);

    assert_mirror(src.path(), dst.path());
}

/// Several files large enough that their chunk lists travel as outlines (128 chunks or
/// more), in one run: the Applier asks for each list's groups and rebuilds each list as its
/// groups arrive, waiting for the others meanwhile (it once took a list whose groups were
/// still on their way for one that could not be rebuilt, and failed the run).
#[test]
fn several_outlined_files_in_one_run_are_all_rebuilt() {
    let src = tempdir();
    let dst = tempdir();
    for i in 0..6u64 {
        write_file(
            &src.path().join(format!("big{i}.bin")),
            pseudo_random(24 * MIB as usize + 1000 * i as usize, 200 + i),
            0o644,
            time_n(i),
        );
    }
    sync_ok(src.path(), dst.path(), &["--no-fsync"]);
    assert_mirror(src.path(), dst.path());
}
