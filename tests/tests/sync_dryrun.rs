//! `ferry sync --dry-run`: itemizes exactly what a real run would change, and writes nothing.

use crate::util::*;

/// SRC and DST synced once, then SRC and DST changed so that every kind of change is due.
/// Returns the changes a sync should now make.
fn stale_pair() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    tempfile::TempDir,
    Vec<Change>,
) {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    sync_ok(src.path(), dst.path(), &[]);
    assert_mirror(src.path(), dst.path());

    let s = src.path();
    write_file(&s.join("new.txt"), "new\n", 0o644, time_n(200));
    write_file(&s.join("newdir/x"), "x\n", 0o644, time_n(201));
    set_mtime(&s.join("newdir"), time_n(202));
    write_file(
        &s.join("top.txt"),
        "top level, changed\n",
        0o644,
        time_n(203),
    );
    set_mode(&s.join("secret.key"), 0o640);
    std::fs::rename(s.join("big.bin"), s.join("moved.bin")).unwrap();
    std::fs::remove_file(s.join("a/b/sibling.txt")).unwrap();
    std::fs::remove_dir_all(s.join("bin")).unwrap();
    // Removing an entry changes its directory's mtime; put it back so a/b itself is unchanged.
    set_mtime(&s.join("a/b"), time_n(21));
    write_file(
        &dst.path().join("dst-only/junk"),
        "junk\n",
        0o644,
        time_n(204),
    );

    let mut expected = changes(&[
        ("created", "new.txt"),
        ("created", "newdir"),
        ("created", "newdir/x"),
        ("updated", "top.txt"),
        ("metadata", "secret.key"),
        ("renamed", "moved.bin"),
        ("removed", "a/b/sibling.txt"),
        ("removed", "bin/tool.sh"),
        ("removed", "bin"),
        ("removed", "dst-only/junk"),
        ("removed", "dst-only"),
    ]);
    for c in &mut expected {
        if c.change == "renamed" {
            c.from = Some("big.bin".into());
        }
    }
    (src, dst, outside, expected)
}

fn count(changes: &[Change], kind: &str) -> u64 {
    changes.iter().filter(|c| c.change == kind).count() as u64
}

/// Panics unless the run's created/updated/metadata/renamed/removed counts are those of
/// `listed`.
#[track_caller]
fn assert_counts(report: &Report, listed: &[Change], what: &str) {
    let counted = [
        report.created,
        report.updated,
        report.metadata_only,
        report.renamed,
        report.removed,
    ];
    let listed = ["created", "updated", "metadata", "renamed", "removed"].map(|k| count(listed, k));
    assert_eq!(
        counted, listed,
        "created/updated/metadata/renamed/removed {what}: {}",
        report.raw
    );
}

#[test]
fn dry_run_lists_changes_and_writes_nothing() {
    let (src, dst, _outside, expected) = stale_pair();
    let src_before = snapshot(src.path());
    let dst_before = snapshot(dst.path());

    let out = sync(src.path(), dst.path(), &["--dry-run", "--json"]);

    out.assert_success();
    let report = out.report();
    assert!(report.dry_run, "{}", report.raw);
    assert_eq!(
        report.changes.as_deref(),
        Some(expected.as_slice()),
        "{}",
        report.raw
    );
    assert_untouched(&dst_before, &snapshot(dst.path()), "DST after a dry run");
    assert_untouched(&src_before, &snapshot(src.path()), "SRC after a dry run");
}

#[test]
fn real_run_after_dry_run_does_what_it_listed() {
    let (src, dst, _outside, expected) = stale_pair();
    let out = sync(src.path(), dst.path(), &["-n", "--json"]);
    out.assert_success();
    assert_eq!(out.report().changes.as_deref(), Some(expected.as_slice()));

    let report = sync_ok(src.path(), dst.path(), &[]);

    assert_mirror(src.path(), dst.path());
    assert!(
        report.changes.is_none(),
        "a real run has no `changes`: {}",
        report.raw
    );
    assert!(!report.dry_run);
    assert_counts(&report, &expected, "done vs listed by the dry run");
}

#[test]
fn dry_run_without_json_itemizes_on_stdout() {
    let (src, dst, _outside, expected) = stale_pair();
    let dst_before = snapshot(dst.path());

    let out = sync(src.path(), dst.path(), &["-n"]);

    out.assert_success();
    for c in &expected {
        // A rename names where the file comes from: `renamed   NEW (from OLD)`.
        let mut line = vec![c.change.clone(), c.path.clone()];
        if let Some(from) = &c.from {
            line.extend(["(from".to_owned(), format!("{from})")]);
        }
        let listed = out
            .stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == line);
        assert!(listed, "`{}` is not listed\n{out}", line.join(" "));
    }
    assert_untouched(&dst_before, &snapshot(dst.path()), "DST after a dry run");
}

#[test]
fn dry_run_on_up_to_date_dst_lists_nothing() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let dst = tempdir();
    sync_ok(src.path(), dst.path(), &[]);

    let report = sync_ok(src.path(), dst.path(), &["--dry-run"]);

    assert_eq!(report.changes.as_deref(), Some(&[][..]), "{}", report.raw);
}

#[test]
fn dry_run_into_missing_dst_does_not_create_it() {
    let src = tempdir();
    let outside = tempdir();
    rich_tree(src.path(), outside.path());
    let parent = tempdir();
    let dst = parent.path().join("not-yet");
    let parent_before = snapshot(parent.path());

    let report = sync_ok(src.path(), &dst, &["--dry-run"]);

    assert!(!exists(&dst), "a dry run created DST");
    assert_untouched(
        &parent_before,
        &snapshot(parent.path()),
        "the parent of DST",
    );
    // Everything in SRC would be created.
    let src_snap = snapshot(src.path());
    let all_created: Vec<(&str, &str)> = src_snap
        .keys()
        .map(|p| ("created", p.to_str().unwrap()))
        .collect();
    assert_eq!(
        report.changes.as_deref(),
        Some(changes(&all_created).as_slice()),
        "{}",
        report.raw
    );
    assert!(report.dry_run);
}

#[test]
fn dry_run_reports_the_same_checks_as_a_real_run() {
    // The quick-check blind spot (same size and mtime) shows up in a dry run only with --checksum.
    let src = tempdir();
    let dst = tempdir();
    write_file(&src.path().join("f"), "AAAA", 0o644, time_n(1));
    write_file(&dst.path().join("f"), "BBBB", 0o644, time_n(1));

    let quick = sync_ok(src.path(), dst.path(), &["-n"]);
    let thorough = sync_ok(src.path(), dst.path(), &["-n", "--checksum"]);

    assert_eq!(quick.changes.as_deref(), Some(&[][..]), "{}", quick.raw);
    assert_eq!(
        thorough.changes.as_deref(),
        Some(changes(&[("updated", "f")]).as_slice()),
        "{}",
        thorough.raw
    );
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"BBBB");
}

#[test]
fn dry_run_counts_what_it_lists() {
    let (src, dst, _outside, expected) = stale_pair();

    let report = sync_ok(src.path(), dst.path(), &["-n"]);

    assert_counts(&report, &expected, "of a dry run vs what it lists");
}

/// A file name holding a newline cannot forge a line of the listing or of the log, nor a
/// C1 control (CSI) reach the terminal.
#[test]
fn a_newline_in_a_name_is_shown_escaped_in_the_listing_and_the_log() {
    let src = tempdir();
    let dst = tempdir();
    let forged = "2026-01-01T00:00:00Z  INFO removed folder=sync path=important";
    write_file(
        &src.path().join(format!("evil\u{9b}2J\n{forged}")),
        "x",
        0o644,
        time_n(1),
    );

    let listing = sync(src.path(), dst.path(), &["-n"]);
    listing.assert_success();
    let run = sync(src.path(), dst.path(), &["-v"]);
    run.assert_success();

    assert_mirror(src.path(), dst.path());
    for (what, text) in [("listing", &listing.stdout), ("log", &run.stderr)] {
        assert!(
            !text.lines().any(|l| l.starts_with(forged)),
            "a name forged a line of the {what}:\n{text}"
        );
        assert!(
            text.contains(&format!("evil\\u{{9b}}2J\\n{forged}")),
            "the {what} does not show the name escaped:\n{text}"
        );
    }
}

/// `ferry sync -n | head -1`: the reader going away ends the listing quietly.
#[test]
fn a_closed_pipe_ends_the_listing_without_a_panic() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let src = tempdir();
    let dst = tempdir();
    for i in 0..8_000 {
        std::fs::write(src.path().join(format!("f{i}")), "x").unwrap();
    }
    let mut child = Command::new(ferry_bin())
        .arg("sync")
        .arg("-n")
        .arg(src.path())
        .arg(dst.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, as `head` exits after its first line.
    let out = child.wait_with_output().unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("created"), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
