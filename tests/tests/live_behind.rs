//! Live replication of changes the stat alone does not show: a target file changed behind
//! Ferry's back, a write whose mtime was set back in the same batch as a chmod or a rename,
//! and a change made through one name of a file with several (hard links).

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::SystemTime;

use crate::util::live::LiveFolder;
use crate::util::*;

/// The modification time of `path`.
fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("mtime of {}: {e}", path.display()))
}

/// Sets the modification time of `path` to `t` (`touch -d`, `touch -r`).
fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(t)))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}

/// Overwrites the start of `path` with `bytes` in place (no truncation, no new inode).
fn overwrite_in_place(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} to write: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[actix_rt::test]
async fn a_target_file_changed_behind_ferry_is_rewritten_when_the_source_is_only_touched() {
    let f = LiveFolder::start(|src| {
        write(&src.join("same-size.txt"), "the source's bytes\n");
        write(&src.join("other-size.txt"), "the source's bytes\n");
    })
    .await;

    // Someone edits DST: same size (a new mtime), and another size.
    write(&f.d("same-size.txt"), "SOMEONE ELSE WROTE\n");
    write(&f.d("other-size.txt"), "someone else wrote more\n");
    // Then the source files get a new mtime only: the target index still holds the content
    // the Applier wrote, so the plan is a metadata update, which must not stamp the source's
    // mtime on bytes it never had.
    let later = SystemTime::now() + std::time::Duration::from_secs(3600);
    set_mtime(&f.s("same-size.txt"), later);
    set_mtime(&f.s("other-size.txt"), later);
    f.wait_mirror("touching source files whose copies were edited in DST")
        .await;
    f.shutdown().await;
}

#[actix_rt::test]
async fn a_target_file_changed_behind_ferry_is_not_renamed_as_a_copy_of_the_source() {
    let f = LiveFolder::start(|src| {
        write(&src.join("old-name.txt"), "the source's bytes\n");
    })
    .await;

    write(&f.d("old-name.txt"), "SOMEONE ELSE WROTE\n");
    fs::rename(f.s("old-name.txt"), f.s("new-name.txt")).expect("rename in SRC");
    f.wait_mirror("renaming a source file whose copy was edited in DST")
        .await;
    f.shutdown().await;
}

#[actix_rt::test]
async fn a_write_with_its_mtime_set_back_is_seen_beside_a_chmod_or_a_rename() {
    let f = LiveFolder::start(|src| {
        write(&src.join("chmodded.txt"), "version one\n");
        write(&src.join("renamed.txt"), "version one\n");
    })
    .await;

    // `touch -r`-style: the bytes change, the size and mtime do not; the same batch also
    // changes the mode (or the name), which moves the ctime as well.
    let t = mtime(&f.s("chmodded.txt"));
    chmod(&f.s("chmodded.txt"), 0o600);
    overwrite_in_place(&f.s("chmodded.txt"), b"VERSION TWO\n");
    set_mtime(&f.s("chmodded.txt"), t);

    let t = mtime(&f.s("renamed.txt"));
    fs::rename(f.s("renamed.txt"), f.s("renamed-2.txt")).expect("rename in SRC");
    overwrite_in_place(&f.s("renamed-2.txt"), b"VERSION TWO\n");
    set_mtime(&f.s("renamed-2.txt"), t);

    f.wait_mirror("rewriting files in place, mtime set back, with a chmod and a rename")
        .await;

    // The other order: written (mtime set back), then renamed; the write event names the
    // file as it was.
    let t = mtime(&f.s("chmodded.txt"));
    overwrite_in_place(&f.s("chmodded.txt"), b"VERSION 3!!\n");
    set_mtime(&f.s("chmodded.txt"), t);
    fs::rename(f.s("chmodded.txt"), f.s("renamed-3.txt")).expect("rename in SRC");
    f.wait_mirror("rewriting a file in place, mtime set back, then renaming it")
        .await;
    f.shutdown().await;
}

#[actix_rt::test]
async fn a_change_through_one_hard_link_reaches_the_files_other_names() {
    let f = LiveFolder::start(|src| {
        write(&src.join("a/f1"), "shared bytes\n");
        write(&src.join("a/f2"), "more shared bytes\n");
        mkdir(&src.join("b"));
    })
    .await;

    // A chmod through a second name: inotify reports only that name.
    fs::hard_link(f.s("a/f1"), f.s("b/link1")).expect("ln");
    f.wait_mirror("linking a/f1 as b/link1").await;
    chmod(&f.s("b/link1"), 0o700);
    f.wait_mirror("chmod through b/link1").await;

    // A new name written through at once, in the same batch as its creation.
    fs::hard_link(f.s("a/f2"), f.s("b/link2")).expect("ln");
    let mut w = OpenOptions::new()
        .append(true)
        .open(f.s("b/link2"))
        .expect("open b/link2");
    w.write_all(b"appended through the new name\n")
        .expect("append");
    drop(w);
    f.wait_mirror("linking a/f2 as b/link2 and appending through it")
        .await;

    // A write with its mtime set back and a chmod, through one name: the other name's stat
    // moved like a chmod's alone, but its bytes changed too.
    let t = mtime(&f.s("a/f1"));
    chmod(&f.s("a/f1"), 0o640);
    overwrite_in_place(&f.s("a/f1"), b"SHARED BYTES\n");
    set_mtime(&f.s("a/f1"), t);
    f.wait_mirror("a write with the mtime set back and a chmod through a/f1")
        .await;
    f.shutdown().await;
}

#[actix_rt::test]
async fn a_directory_named_like_a_temp_file_is_replicated_and_removed() {
    let f = LiveFolder::start(|src| {
        write(&src.join("keep.txt"), "kept\n");
    })
    .await;
    let dir = ".ferry-tmp-2-0badc0de-0";
    write(&f.s(&format!("{dir}/inside.txt")), "inside\n");
    f.settle("creating a directory named like a temp file")
        .await;
    fs::rename(f.s(dir), f.s("renamed")).expect("rename in SRC");
    f.settle("renaming it away").await;
    fs::rename(f.s("renamed"), f.s(dir)).expect("rename in SRC");
    f.settle("renaming it back").await;
    fs::remove_dir_all(f.s(dir)).expect("rm -r in SRC");
    f.settle("removing it").await;
    f.shutdown().await;
}
