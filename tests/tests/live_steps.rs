//! Live replication in-process, one change at a time: after each step DST must come to
//! mirror SRC, with one inotify watch per source directory and no needless copying.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use crate::util::live::{get, LiveFolder};
use crate::util::*;

/// Appends one line to `path`.
fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} to append: {e}", path.display()));
    writeln!(f, "{line}").unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Renames `from` to `to`.
fn rename(from: &Path, to: &Path) {
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", from.display(), to.display()));
}

/// Removes a directory and everything in it.
fn remove_tree(path: &Path) {
    fs::remove_dir_all(path).unwrap_or_else(|e| panic!("rm -r {}: {e}", path.display()));
}

/// Removes a file.
fn remove_file(path: &Path) {
    fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
}

/// `n` small files with distinct contents of a few hundred bytes under `dir`.
fn small_files(dir: &Path, n: usize, seed: u64) {
    for i in 0..n {
        let mut content = format!("file {i} of {}\n", dir.display()).into_bytes();
        content.extend(pseudo_random(200 + i % 200, seed + i as u64));
        write(&dir.join(format!("f{i:04}.bin")), content);
    }
}

#[actix_rt::test]
async fn files_and_dirs_are_created_changed_and_removed_step_by_step() {
    let f = LiveFolder::start(|src| {
        write(&src.join("keep.txt"), "kept across the steps\n");
        write(&src.join("log.txt"), "log start\n");
        write(&src.join("gone.txt"), "to be deleted\n");
        write(&src.join("doomed/x/y/z/deep.txt"), "deep\n");
        write(&src.join("doomed/x/side.txt"), "side\n");
        mkdir(&src.join("doomed/empty"));
        symlink("keep.txt", &src.join("link"));
    })
    .await;

    // A new file.
    write(&f.s("new.txt"), "a new file\n");
    f.wait_mirror("creating new.txt").await;

    // Nested directories and their files in one burst: the files land before the Watcher
    // can have placed watches on the new directories.
    mkdir(&f.s("a/b/c"));
    write(&f.s("a/b/c/f"), "written right after mkdir -p\n");
    write(&f.s("a/b/g"), "beside c\n");
    mkdir(&f.s("a/b/c/d/e"));
    write(&f.s("a/b/c/d/e/h"), "deeper still\n");
    f.settle("mkdir -p a/b/c and immediate writes").await;

    // A file growing by appends: checked midway and at the end.
    for i in 1..=20u32 {
        append(&f.s("log.txt"), &format!("line {i}"));
        if i.is_multiple_of(7) {
            f.wait_mirror(&format!("append {i} to log.txt")).await;
        }
    }
    f.wait_mirror("the last of 20 appends to log.txt").await;

    // A file replaced by a directory of the same name, and back.
    remove_file(&f.s("new.txt"));
    write(&f.s("new.txt/inner/file"), "now a directory\n");
    f.settle("replacing the file new.txt with a directory")
        .await;
    remove_tree(&f.s("new.txt"));
    write(&f.s("new.txt"), "a file again\n");
    f.settle("replacing the directory new.txt with a file")
        .await;

    // A symlink pointing elsewhere.
    remove_file(&f.s("link"));
    symlink("log.txt", &f.s("link"));
    f.wait_mirror("retargeting the symlink link").await;

    // A deleted file.
    remove_file(&f.s("gone.txt"));
    f.wait_mirror("deleting gone.txt").await;

    // A deleted subtree: its watches are released.
    let before = f.wait_watches("before deleting doomed/").await;
    remove_tree(&f.s("doomed"));
    let after = f.settle("deleting the subtree doomed/").await;
    assert_eq!(
        before - after,
        5,
        "deleting doomed/ (5 directories) should release 5 watches"
    );

    // A renamed file is moved in DST, not written again.
    let ino_before = ino(&f.d("keep.txt"));
    let renamed = get(&f.stats.renamed);
    rename(&f.s("keep.txt"), &f.s("kept.txt"));
    f.wait_mirror("renaming keep.txt to kept.txt").await;
    assert_eq!(
        ino(&f.d("kept.txt")),
        ino_before,
        "DST/kept.txt should be DST/keep.txt renamed, not a new copy"
    );
    assert_eq!(get(&f.stats.renamed), renamed + 1, "one file renamed");

    // A new mtime only: a metadata update in place.
    let ino_before = ino(&f.d("kept.txt"));
    set_mtime(&f.s("kept.txt"), time_n(42));
    f.wait_mirror("touching kept.txt").await;
    assert_eq!(
        ino(&f.d("kept.txt")),
        ino_before,
        "touch should update DST/kept.txt in place"
    );

    // New permission bits only: a metadata update in place too.
    set_mode(&f.s("kept.txt"), 0o600);
    f.wait_mirror("chmod 600 kept.txt").await;
    assert_eq!(
        ino(&f.d("kept.txt")),
        ino_before,
        "chmod should update DST/kept.txt in place"
    );

    f.shutdown().await;
}

/// Files of one size and one mtime renamed over each other and swapped: the quick check
/// (size and mtime) says nothing changed, the chunk lists both sides know say otherwise.
#[actix_rt::test]
async fn a_rename_over_a_file_of_the_same_size_and_mtime_is_mirrored() {
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    let f = LiveFolder::start(|src| {
        for (name, text) in [
            ("a", "AAAA\n"),
            ("b", "BBBB\n"),
            ("c", "CCCC\n"),
            ("d", "DDDD\n"),
        ] {
            write(&src.join(name), text);
            set_mtime(&src.join(name), mtime);
        }
    })
    .await;
    f.wait_mirror("the initial sync").await;

    rename(&f.s("b"), &f.s("a"));
    f.wait_mirror("b renamed over a").await;
    assert_eq!(fs::read(f.d("a")).unwrap(), b"BBBB\n");

    rename(&f.s("c"), &f.s("t"));
    rename(&f.s("d"), &f.s("c"));
    rename(&f.s("t"), &f.s("d"));
    f.wait_mirror("c and d swapped").await;
    assert_eq!(fs::read(f.d("c")).unwrap(), b"DDDD\n");
    assert_eq!(fs::read(f.d("d")).unwrap(), b"CCCC\n");

    f.shutdown().await;
}

/// A directory replaced by another under the same name, and one moved away and back, in
/// quick succession: changes written into it afterwards must still be seen (the watches
/// of the old path were dropped by notify while the name was a directory again).
#[actix_rt::test]
async fn a_directory_replaced_in_quick_succession_stays_watched() {
    let f = LiveFolder::start(|src| {
        write(&src.join("site/index.html"), "v0\n");
        write(&src.join("a/sub/f"), "f0\n");
    })
    .await;
    f.wait_mirror("the initial sync").await;
    for i in 1..=6 {
        write(&f.s("site.new/index.html"), format!("v{i}\n"));
        rename(&f.s("site"), &f.s("site.old"));
        rename(&f.s("site.new"), &f.s("site"));
        remove_tree(&f.s("site.old"));
        rename(&f.s("a"), &f.s("b"));
        rename(&f.s("b"), &f.s("a"));
        f.wait_mirror(&format!("round {i}: the swaps")).await;
        // Written after the swaps were replicated: only a watch on the new directory sees it.
        write(&f.s("site/index.html"), format!("v{i}, edited later\n"));
        write(&f.s("a/sub/f"), format!("f{i}, edited later\n"));
        f.wait_mirror(&format!("round {i}: writes into the swapped directories"))
            .await;
    }
    f.shutdown().await;
}

/// A write through one name of a file with two (a hard link): inotify reports it under
/// the name written only, but the other name holds the new bytes too.
#[actix_rt::test]
async fn a_write_through_one_hard_link_reaches_the_other_name() {
    let f = LiveFolder::start(|src| {
        write(&src.join("g"), "one\n");
        mkdir(&src.join("sub"));
        std::fs::hard_link(src.join("g"), src.join("sub/h")).unwrap();
    })
    .await;
    f.wait_mirror("the initial sync").await;
    append(&f.s("sub/h"), "two");
    f.wait_mirror("a write through the second name").await;
    assert_eq!(fs::read(f.d("g")).unwrap(), b"one\ntwo\n");
    f.shutdown().await;
}

#[actix_rt::test]
async fn a_renamed_dir_of_1000_files_is_moved_not_sent_again() {
    let f = LiveFolder::start(|src| {
        small_files(&src.join("big"), 990, 1);
        small_files(&src.join("big/nested/deeper"), 10, 5_000);
        write(&src.join("other.txt"), "unrelated\n");
    })
    .await;
    let watches = f.wait_watches("the initial sync").await;
    let sent = get(&f.stats.bytes_sent);
    let renamed = get(&f.stats.renamed);

    rename(&f.s("big"), &f.s("moved"));
    f.wait_mirror("renaming big/ to moved/").await;
    assert_eq!(
        f.wait_watches("renaming big/ to moved/").await,
        watches,
        "a renamed directory keeps its number of watches"
    );

    let renamed = get(&f.stats.renamed) - renamed;
    let sent = get(&f.stats.bytes_sent) - sent;
    assert!(
        sent < 64 * 1024,
        "renaming a directory of 1,000 files sent {sent} bytes of content; it should move them"
    );
    assert_eq!(
        renamed, 1000,
        "renaming a directory of 1,000 files should rename each file once in DST"
    );

    // The moved directory is watched: a change inside it replicates.
    write(&f.s("moved/nested/deeper/late.txt"), "after the move\n");
    f.wait_mirror("writing into the renamed directory").await;

    f.shutdown().await;
}

#[actix_rt::test]
async fn dirs_moved_out_of_and_into_src_disappear_and_appear() {
    let f = LiveFolder::start(|src| {
        write(&src.join("leaving/one.txt"), "one\n");
        write(&src.join("leaving/sub/two.txt"), "two\n");
        mkdir(&src.join("leaving/sub/empty"));
        write(&src.join("stays.txt"), "stays\n");
    })
    .await;
    let coming = f.outside.join("coming");
    write(&coming.join("three.txt"), "three\n");
    write(&coming.join("x/y/four.txt"), "four\n");
    symlink("../three.txt", &coming.join("x/link"));
    mkdir(&coming.join("x/empty"));

    // Out of SRC: gone from DST, its watches released.
    let before = f.wait_watches("the initial sync").await;
    let away = f.outside.join("leaving");
    rename(&f.s("leaving"), &away);
    let after = f.settle("moving leaving/ out of SRC").await;
    assert_eq!(before - after, 3, "leaving/ had 3 directories");
    assert!(!exists(&f.d("leaving")), "DST/leaving should be removed");

    // A change inside the directory that left is none of SRC's business.
    write(&away.join("sub/after-leaving.txt"), "not replicated\n");
    write(&f.s("marker.txt"), "a change SRC does see\n");
    f.wait_mirror("writing into the moved-out directory and into SRC")
        .await;

    // Into SRC: appears with all its content, its directories watched.
    rename(&coming, &f.s("coming"));
    let grown = f.settle("moving coming/ into SRC").await;
    assert_eq!(grown - after, 4, "coming/ has 4 directories");

    // The new watches work.
    write(&f.s("coming/x/y/five.txt"), "written after the move in\n");
    f.wait_mirror("writing into the moved-in directory").await;

    f.shutdown().await;
}
