//! Chunk reuse across files: content DST already holds under another name (a copy, a moved
//! directory, swapped files, pieces of two files) is copied locally instead of being sent,
//! and all-zero runs travel as a length and land as holes.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::util::live::{get, LiveFolder};
use crate::util::*;

/// Panics unless the run sent no chunk data at all.
#[track_caller]
fn assert_nothing_sent(report: &Report, what: &str) {
    assert_eq!(
        report.bytes_sent, 0,
        "{what} sent {} bytes of chunk data ({} chunks); DST already holds every byte: {}",
        report.bytes_sent, report.chunks_sent, report.raw
    );
}

/// Panics unless the run copied at least `min` bytes from files DST already held.
#[track_caller]
fn assert_reused_at_least(report: &Report, min: u64, what: &str) {
    assert!(
        report.bytes_reused >= min,
        "{what} copied only {} bytes from DST's own files, expected at least {min}: {}",
        report.bytes_reused,
        report.raw
    );
    // No chunk is larger than MAX_CHUNK, so the counts of bytes and chunks must agree.
    assert!(
        report.chunks_reused * MAX_CHUNK >= report.bytes_reused,
        "{what}: {} bytes reused in only {} chunks of at most {MAX_CHUNK} bytes: {}",
        report.bytes_reused,
        report.chunks_reused,
        report.raw
    );
}

#[test]
fn a_copied_file_is_assembled_from_the_original() {
    let src = tempdir();
    let dst = tempdir();
    let content = pseudo_random(16 * MIB as usize, 16);
    write_file(&src.path().join("orig.bin"), &content, 0o644, time_n(1));
    write_file(
        &src.path().join("small.txt"),
        "beside it\n",
        0o644,
        time_n(2),
    );
    sync_ok(src.path(), dst.path(), &["--no-fsync"]);
    assert_mirror(src.path(), dst.path());

    // DST's orig.bin passes the quick check, so only its size tells the Applier to look in it.
    write_file(&src.path().join("copy.bin"), &content, 0o600, time_n(3));
    let report = sync_ok(src.path(), dst.path(), &["--no-fsync"]);

    assert_mirror(src.path(), dst.path());
    assert_eq!(report.created, 1, "copy.bin is created: {}", report.raw);
    assert_nothing_sent(&report, "copying a 16 MiB file in SRC");
    assert_reused_at_least(&report, 16 * MIB, "copying a 16 MiB file in SRC");
}

#[test]
fn a_renamed_directory_is_moved_without_sending_data() {
    let src = tempdir();
    let dst = tempdir();
    // Large and small files: a small one is below the size at which unchanged target files
    // are hashed as copy candidates, but it is doomed at its old path, so it is hashed anyway.
    let sizes = [3 * MIB + 11, 2 * MIB, MIB + 1, 300 * KIB, 40 * KIB, 7];
    for (i, len) in sizes.iter().enumerate() {
        write_file(
            &src.path().join(format!("dir/f{i}.bin")),
            pseudo_random(*len as usize, 100 + i as u64),
            0o644,
            time_n(10 + i as u64),
        );
    }
    write_file(
        &src.path().join("dir/sub/nested.bin"),
        pseudo_random(MIB as usize + 5, 99),
        0o644,
        time_n(9),
    );
    sync_ok(src.path(), dst.path(), &["--no-fsync"]);
    assert_mirror(src.path(), dst.path());

    fs::rename(src.path().join("dir"), src.path().join("moved")).expect("rename dir to moved");
    let report = sync_ok(src.path(), dst.path(), &["--no-fsync"]);

    assert_mirror(src.path(), dst.path());
    assert_nothing_sent(&report, "renaming a directory of 7 files");
}

/// Mirrors two files, gives each the other's content under a new mtime, and syncs again.
fn swap_and_sync(len_a: usize, len_b: usize) -> Report {
    let src = tempdir();
    let dst = tempdir();
    let a = pseudo_random(len_a, 201);
    let b = pseudo_random(len_b, 202);
    write_file(&src.path().join("a.bin"), &a, 0o644, time_n(1));
    write_file(&src.path().join("b.bin"), &b, 0o644, time_n(2));
    sync_ok(src.path(), dst.path(), &["--no-fsync"]);
    assert_mirror(src.path(), dst.path());

    // New mtimes: with equal sizes they are all the quick check has to go on.
    write_file(&src.path().join("a.bin"), &b, 0o644, time_n(3));
    write_file(&src.path().join("b.bin"), &a, 0o644, time_n(4));
    let report = sync_ok(src.path(), dst.path(), &["--no-fsync"]);

    assert_mirror(src.path(), dst.path());
    report
}

#[test]
fn swapped_files_of_equal_size_are_copied_from_each_other() {
    let report = swap_and_sync(8 * MIB as usize, 8 * MIB as usize);

    assert_nothing_sent(&report, "swapping two 8 MiB files");
    assert_reused_at_least(&report, 16 * MIB, "swapping two 8 MiB files");
}

#[test]
fn swapped_files_of_different_sizes_are_copied_from_each_other() {
    let report = swap_and_sync(3 * MIB as usize + 777, 5 * MIB as usize);

    assert_nothing_sent(&report, "swapping a 3 MiB and a 5 MiB file");
    assert_reused_at_least(&report, 8 * MIB, "swapping a 3 MiB and a 5 MiB file");
}

#[test]
fn a_file_spliced_from_two_others_sends_only_the_join() {
    let src = tempdir();
    let dst = tempdir();
    let half = 4 * MIB as usize;
    let a = pseudo_random(2 * half, 301);
    let b = pseudo_random(2 * half, 302);
    write_file(&src.path().join("a.bin"), &a, 0o644, time_n(1));
    write_file(&src.path().join("b.bin"), &b, 0o644, time_n(2));
    sync_ok(src.path(), dst.path(), &["--no-fsync"]);
    assert_mirror(src.path(), dst.path());

    // The same size as a.bin and b.bin, which makes them copy candidates in a one-shot run.
    let mut spliced = a[..half].to_vec();
    spliced.extend_from_slice(&b[half..]);
    write_file(&src.path().join("ab.bin"), &spliced, 0o644, time_n(3));
    let report = sync_ok(src.path(), dst.path(), &["--no-fsync"]);

    assert_mirror(src.path(), dst.path());
    // The chunk of a.bin running into the join, and the chunk of b.bin from which the
    // boundaries realign, are new; a third covers an unlucky cut.
    assert!(
        report.bytes_sent <= 3 * MAX_CHUNK,
        "a file made of the first half of a.bin and the second half of b.bin sent {} bytes \
         of chunk data; only the chunks at the join (at most {}) are new: {}",
        report.bytes_sent,
        3 * MAX_CHUNK,
        report.raw
    );
    assert_reused_at_least(&report, 8 * MIB - 3 * MAX_CHUNK, "splicing two files");
}

/// Whether the file system under `dir` leaves holes in a file extended with `set_len`.
fn supports_holes(dir: &Path) -> bool {
    let probe = dir.join("sparse-probe");
    let len = 8 * MIB;
    let file = File::create(&probe).unwrap_or_else(|e| panic!("create {}: {e}", probe.display()));
    file.set_len(len)
        .unwrap_or_else(|e| panic!("extend {}: {e}", probe.display()));
    let allocated = file.metadata().expect("stat the probe").blocks() * 512;
    drop(file);
    fs::remove_file(&probe).unwrap_or_else(|e| panic!("rm {}: {e}", probe.display()));
    allocated < len
}

#[test]
fn a_run_of_zeros_travels_as_a_length_and_lands_as_a_hole() {
    let src = tempdir();
    let parent = tempdir();
    let dst = parent.path().join("dst");
    let data = 8 * MIB as usize;
    let zeros = 16 * MIB as usize;
    let mut content = pseudo_random(data, 401);
    content.resize(data + zeros, 0);
    content.extend_from_slice(&pseudo_random(data, 402));
    let len = content.len() as u64;
    write_file(&src.path().join("sparse.bin"), &content, 0o644, time_n(1));

    let report = sync_ok(src.path(), &dst, &["--no-fsync"]);

    assert_mirror(src.path(), &dst);
    assert!(
        report.bytes_zero >= 15 * MIB,
        "only {} bytes went as all-zero chunks; the file has a 16 MiB run of zeros: {}",
        report.bytes_zero,
        report.raw
    );
    assert!(
        report.bytes_sent <= 17 * MIB,
        "{} bytes of chunk data were sent for 16 MiB of data and 16 MiB of zeros; the \
         zeros should travel as lengths: {}",
        report.bytes_sent,
        report.raw
    );

    if supports_holes(parent.path()) {
        let allocated = fs::metadata(dst.join("sparse.bin"))
            .expect("stat DST/sparse.bin")
            .blocks()
            * 512;
        // Most of the zero run must be unallocated; boundary chunks mixing data and zeros,
        // and the file system's own granularity, may fill a little of it.
        assert!(
            allocated + 8 * MIB <= len,
            "DST/sparse.bin has {allocated} bytes allocated for {len} bytes of which 16 MiB \
             are zeros; the zero run should be left as a hole"
        );
    } else {
        eprintln!(
            "SKIPPED the hole check of a_run_of_zeros_travels_as_a_length_and_lands_as_a_hole: \
             the file system under {} allocates blocks for a file extended with set_len",
            parent.path().display()
        );
    }
}

#[actix_rt::test]
async fn a_copy_appearing_live_is_assembled_from_the_original() {
    let content = pseudo_random(16 * MIB as usize, 16);
    let f = LiveFolder::start(|src| {
        write_file(&src.join("orig.bin"), &content, 0o644, time_n(1));
    })
    .await;
    let sent = get(&f.stats.bytes_sent);
    let reused = get(&f.stats.bytes_reused);

    // The copy is made beside SRC and moved in, so that it appears whole: a copy written in
    // place may be seen half-written, and the tail chunk of a partial version is new data.
    let staged = f.outside.join("copy.bin");
    fs::copy(f.s("orig.bin"), &staged).expect("cp orig.bin outside SRC");
    set_mtime(&staged, time_n(2));
    fs::rename(&staged, f.s("copy.bin")).expect("mv the copy into SRC");
    f.wait_mirror("copying a 16 MiB file into SRC").await;

    let sent = get(&f.stats.bytes_sent) - sent;
    let reused = get(&f.stats.bytes_reused) - reused;
    assert_eq!(
        sent, 0,
        "a copy of a file DST already holds sent {sent} bytes of chunk data"
    );
    assert!(
        reused >= 16 * MIB,
        "a copy of a 16 MiB file DST already holds copied only {reused} bytes locally"
    );

    f.shutdown().await;
}
