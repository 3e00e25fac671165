//! Refused invocations: exit 1 with a message naming the offending path, exit 2 for bad usage,
//! and in every case nothing written anywhere.

use std::path::Path;

use crate::util::*;

/// Asserts a refused run: exit code 1, stderr naming `path`, and no stdout report.
#[track_caller]
fn assert_refused(out: &Output, path: &Path) {
    out.assert_code(1);
    // The message may name the path as given or its canonical form; either ends the same way.
    let name = path.file_name().unwrap().to_str().unwrap();
    out.assert_stderr_contains(name);
    assert!(
        out.stdout.trim().is_empty(),
        "a refused run printed a report\n{out}"
    );
}

fn small_tree(root: &Path) {
    write_file(&root.join("f.txt"), "f\n", 0o644, time_n(1));
    write_file(&root.join("d/g.txt"), "g\n", 0o644, time_n(2));
}

#[test]
fn missing_src_is_refused() {
    let base = tempdir();
    let src = base.path().join("no-such-source");
    let dst = base.path().join("dst");

    let out = sync(&src, &dst, &[]);

    assert_refused(&out, &src);
    assert!(!exists(&dst), "DST was created for a refused run");
}

#[test]
fn src_that_is_a_file_is_refused() {
    let base = tempdir();
    let src = base.path().join("source-file.txt");
    write(&src, "not a dir\n");
    let dst = base.path().join("dst");

    let out = sync(&src, &dst, &[]);

    assert_refused(&out, &src);
    out.assert_stderr_contains("not a directory");
    assert!(!exists(&dst), "DST was created for a refused run");
}

#[test]
fn dst_that_is_a_file_is_refused() {
    let base = tempdir();
    let src = base.path().join("src");
    small_tree(&src);
    let dst = base.path().join("target-file.txt");
    write_file(&dst, "precious\n", 0o644, time_n(9));
    let before = snapshot(base.path());

    let out = sync(&src, &dst, &[]);

    assert_refused(&out, &dst);
    out.assert_stderr_contains("not a directory");
    assert_untouched(&before, &snapshot(base.path()), "SRC and the DST file");
}

#[test]
fn dst_inside_src_is_refused() {
    let src = tempdir();
    small_tree(src.path());
    let dst = src.path().join("d/inner-target");
    mkdir(&dst);
    let before = snapshot(src.path());

    let out = sync(src.path(), &dst, &[]);

    assert_refused(&out, &dst);
    out.assert_stderr_contains("inside");
    assert_untouched(&before, &snapshot(src.path()), "SRC");
}

#[test]
fn dst_inside_src_that_does_not_exist_yet_is_refused_without_creating_it() {
    let src = tempdir();
    small_tree(src.path());
    let dst = src.path().join("d/new-target");
    let before = snapshot(src.path());

    let out = sync(src.path(), &dst, &[]);

    assert_refused(&out, &dst);
    // Refusing must come before any write: SRC is exactly as it was, no DST inside it.
    assert!(!exists(&dst), "the refused DST was created inside SRC");
    assert_untouched(&before, &snapshot(src.path()), "SRC");
}

#[test]
fn src_inside_dst_is_refused() {
    let dst = tempdir();
    write_file(
        &dst.path().join("old.txt"),
        "would be deleted\n",
        0o644,
        time_n(3),
    );
    let src = dst.path().join("inner-source");
    small_tree(&src);
    let before = snapshot(dst.path());

    let out = sync(&src, dst.path(), &[]);

    assert_refused(&out, &src);
    out.assert_stderr_contains("inside");
    assert_untouched(&before, &snapshot(dst.path()), "DST (which holds SRC)");
}

#[test]
fn same_dir_is_refused() {
    let src = tempdir();
    small_tree(src.path());
    let before = snapshot(src.path());

    let out = sync(src.path(), src.path(), &[]);

    assert_refused(&out, src.path());
    assert_untouched(&before, &snapshot(src.path()), "SRC");
}

#[test]
fn same_dir_through_a_symlink_is_refused() {
    let src = tempdir();
    small_tree(src.path());
    let other = tempdir();
    let alias = other.path().join("alias");
    symlink(src.path(), &alias);
    let before = snapshot(src.path());

    let out = sync(src.path(), &alias, &[]);

    out.assert_code(1);
    assert_untouched(&before, &snapshot(src.path()), "SRC");
}

#[test]
fn dst_with_missing_parent_is_refused() {
    let src = tempdir();
    small_tree(src.path());
    let base = tempdir();
    let missing_parent = base.path().join("missing-parent");
    let dst = missing_parent.join("dst");

    let out = sync(src.path(), &dst, &[]);

    out.assert_code(1).assert_stderr_contains("missing-parent");
    assert!(out.stdout.trim().is_empty(), "{out}");
    assert!(!exists(&missing_parent), "the missing parent was created");
}

#[test]
fn unwritable_dst_is_refused() {
    if !can_drop_privileges("unwritable_dst_is_refused") {
        return;
    }
    let base = tempdir();
    set_mode(base.path(), 0o755);
    if !reachable_by_others(base.path()) {
        eprintln!("SKIPPED unwritable_dst_is_refused: the temporary directory is not reachable by other users");
        return;
    }
    let src = base.path().join("src");
    small_tree(&src);
    open_up_tree(&src);
    let dst = base.path().join("read-only-target");
    mkdir(&dst);
    write_file(&dst.join("existing.txt"), "existing\n", 0o644, time_n(4));
    // Owned by root when root (so nobody cannot write it), read-only for its owner otherwise.
    set_mode(&dst, if is_root() { 0o755 } else { 0o555 });
    let before = snapshot(&dst);

    let out = sync_unprivileged(&src, &dst, &[]);
    set_mode(&dst, 0o755);

    assert_refused(&out, &dst);
    out.assert_stderr_contains("not writable");
    assert_untouched(&before, &snapshot(&dst), "the unwritable DST");
}

/// A source that cannot be listed is named as the problem, before DST is created.
#[test]
fn unreadable_src_is_refused_before_dst_is_created() {
    if !can_drop_privileges("unreadable_src_is_refused_before_dst_is_created") {
        return;
    }
    let base = tempdir();
    make_world_accessible(base.path());
    if !reachable_by_others(base.path()) {
        eprintln!("SKIPPED unreadable_src_is_refused_before_dst_is_created: the temporary directory is not reachable by other users");
        return;
    }
    let src = base.path().join("src");
    small_tree(&src);
    let dst = base.path().join("dst");
    // Owned by root when root (so nobody cannot list it), unlistable for its owner otherwise.
    set_mode(&src, if is_root() { 0o700 } else { 0o300 });

    let out = sync_unprivileged(&src, &dst, &[]);
    set_mode(&src, 0o755);

    out.assert_code(1)
        .assert_stderr_contains("cannot read source");
    assert!(
        !out.stderr.contains("ignore"),
        "the error blames the ignore rules:\n{out}"
    );
    assert!(
        !exists(&dst),
        "DST was created for a source that cannot be read"
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let src = tempdir();
    let base = tempdir();
    let dst = base.path().join("dst");

    let out = sync(src.path(), &dst, &["--no-such-flag"]);

    out.assert_code(2).assert_stderr_contains("--no-such-flag");
    assert!(!exists(&dst));
}

#[test]
fn missing_dst_argument_is_a_usage_error() {
    let src = tempdir();

    let out = ferry([std::ffi::OsStr::new("sync"), src.path().as_os_str()]);

    out.assert_code(2);
    assert!(!out.stderr.is_empty());
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    ferry(["frobnicate"]).assert_code(2);
}

#[test]
fn documented_flags_combine_without_usage_error() {
    // Combining the documented flags is not a usage error.
    let src = tempdir();
    small_tree(src.path());
    let base = tempdir();
    let dst = base.path().join("dst");

    let out = sync(
        src.path(),
        &dst,
        &["-n", "-q", "--json", "--stats", "--checksum", "--no-fsync"],
    );

    out.assert_success();
    assert!(out.report().dry_run);
    assert!(!exists(&dst));
}
