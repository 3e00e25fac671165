//! Chunk-level delta on edits: after a small edit to a large file already mirrored, only the
//! chunks around the edit travel, and the chunk lists stay kilobytes instead of growing with
//! the file.
//!
//! Each one-shot test mirrors a 64 MiB incompressible file, edits it in SRC (with a new mtime,
//! so the quick check notices), syncs again and reads the counters of the second run. The last
//! tests make the same edits under live replication and read the counters' growth.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use tempfile::TempDir;

use crate::util::live::{get, LiveFolder};
use crate::util::*;

/// The size of the edited file.
const LEN: u64 = 64 * MIB;

/// What a second run may spend on chunk lists and requests. A full list for 64 MiB at the
/// default 64 KiB average is ~1,000 ids, ~46 KB encoded: a delta must stay well below it.
const METADATA_BOUND: u64 = 24 * KIB;

/// The file's name in both trees.
const NAME: &str = "big.bin";

/// SRC holding one 64 MiB pseudo-random file, and DST already mirroring it.
fn mirrored_big_file() -> (TempDir, TempDir, Vec<u8>) {
    let src = tempdir();
    let dst = tempdir();
    let content = pseudo_random(LEN as usize, 64);
    write_file(&src.path().join(NAME), &content, 0o644, time_n(1));
    let first = sync_ok(src.path(), dst.path(), &["--no-fsync"]);
    assert_mirror(src.path(), dst.path());
    assert_eq!(
        first.created, 1,
        "the initial sync creates the file: {}",
        first.raw
    );
    (src, dst, content)
}

/// Replaces SRC's file with `content` under a later mtime, syncs, checks the mirror and
/// returns the second run's report.
fn edit_and_sync(src: &Path, dst: &Path, content: &[u8]) -> Report {
    write_file(&src.join(NAME), content, 0o644, time_n(2));
    let report = sync_ok(src, dst, &["--no-fsync"]);
    assert_mirror(src, dst);
    assert_eq!(
        report.updated, 1,
        "the edited file is updated: {}",
        report.raw
    );
    report
}

/// Panics unless the run sent between `min` and `max` bytes of chunk data.
#[track_caller]
fn assert_sent_between(report: &Report, min: u64, max: u64, edit: &str) {
    assert!(
        (min..=max).contains(&report.bytes_sent),
        "{edit} sent {} bytes of chunk data; it should cost between {min} and {max}: {}",
        report.bytes_sent,
        report.raw
    );
}

/// Panics unless the run spent some, but at most [`METADATA_BOUND`], bytes on metadata.
#[track_caller]
fn assert_metadata_small(report: &Report, edit: &str) {
    assert!(
        report.bytes_metadata > 0,
        "{edit}: bytes_metadata is 0, so the metadata meter did not count the chunk lists and \
         requests that must have been exchanged: {}",
        report.raw
    );
    assert!(
        report.bytes_metadata <= METADATA_BOUND,
        "{edit} cost {} bytes of metadata; chunk lists of a 64 MiB file should travel as a \
         patch of at most {METADATA_BOUND}: {}",
        report.bytes_metadata,
        report.raw
    );
}

/// `content` with 1 KiB of pseudo-random bytes (from `seed`) inserted at `at`.
fn with_1k_inserted(content: &[u8], at: usize, seed: u64) -> Vec<u8> {
    let mut edited = Vec::with_capacity(content.len() + 1024);
    edited.extend_from_slice(&content[..at]);
    edited.extend_from_slice(&pseudo_random(1024, seed));
    edited.extend_from_slice(&content[at..]);
    edited
}

/// Panics unless, since the counters read `sent` and `reused`, the live folder sent between
/// `min` bytes and two chunks of chunk data and copied all but a MiB from DST's old version.
#[track_caller]
fn assert_live_delta(f: &LiveFolder, sent: u64, reused: u64, min: u64, edit: &str) {
    let sent = get(&f.stats.bytes_sent) - sent;
    let reused = get(&f.stats.bytes_reused) - reused;
    assert!(
        (min..=2 * MAX_CHUNK).contains(&sent),
        "{edit} live sent {sent} bytes of chunk data; it should cost between {min} bytes and \
         two chunks ({})",
        2 * MAX_CHUNK
    );
    assert!(
        reused >= 63 * MIB,
        "{edit} live copied only {reused} bytes from DST's old version"
    );
}

#[test]
fn overwriting_4k_in_the_middle_sends_one_or_two_chunks() {
    let (src, dst, mut content) = mirrored_big_file();
    let at = (LEN / 2 + 12_345) as usize;
    content[at..at + 4096].copy_from_slice(&pseudo_random(4096, 1_000));

    let report = edit_and_sync(src.path(), dst.path(), &content);

    assert_sent_between(&report, 4 * KIB, 2 * MAX_CHUNK, "overwriting 4 KiB");
    assert!(
        report.bytes_reused >= 63 * MIB,
        "only {} bytes were copied from DST's old version; nearly all 64 MiB are unchanged: {}",
        report.bytes_reused,
        report.raw
    );
    assert_metadata_small(&report, "overwriting 4 KiB");
}

#[test]
fn inserting_1k_near_the_start_sends_one_or_two_chunks() {
    let (src, dst, content) = mirrored_big_file();
    let edited = with_1k_inserted(&content, 100 * KIB as usize, 1_001);

    let report = edit_and_sync(src.path(), dst.path(), &edited);

    // Content-defined boundaries realign after the insertion, so everything behind it is
    // found again at shifted offsets.
    assert_sent_between(&report, KIB, 2 * MAX_CHUNK, "inserting 1 KiB");
    assert!(
        report.bytes_reused >= 63 * MIB,
        "only {} bytes were copied from DST's old version; the insertion shifts but keeps \
         the rest: {}",
        report.bytes_reused,
        report.raw
    );
    assert_metadata_small(&report, "inserting 1 KiB");
}

#[test]
fn appending_1m_sends_the_new_tail_only() {
    let (src, dst, mut content) = mirrored_big_file();
    content.extend_from_slice(&pseudo_random(MIB as usize, 1_002));

    let report = edit_and_sync(src.path(), dst.path(), &content);

    // The old last chunk was cut by the end of the file; with the new tail it may end
    // elsewhere, so up to two chunks beyond the appended MiB may travel.
    assert_sent_between(&report, MIB, MIB + 2 * MAX_CHUNK, "appending 1 MiB");
    assert!(
        report.bytes_reused >= 63 * MIB,
        "only {} bytes were copied from DST's old version: {}",
        report.bytes_reused,
        report.raw
    );
    assert_metadata_small(&report, "appending 1 MiB");
}

#[actix_rt::test]
async fn overwriting_4k_live_sends_one_or_two_chunks() {
    let f = LiveFolder::start(|src| {
        write_file(
            &src.join(NAME),
            pseudo_random(LEN as usize, 64),
            0o644,
            time_n(1),
        );
    })
    .await;
    let sent = get(&f.stats.bytes_sent);
    let reused = get(&f.stats.bytes_reused);

    // An in-place write, as an editor saving a block or a database page would do: one
    // modify event, no moment where the file is truncated.
    let file = OpenOptions::new()
        .write(true)
        .open(f.s(NAME))
        .unwrap_or_else(|e| panic!("open {NAME} for writing: {e}"));
    file.write_all_at(&pseudo_random(4096, 1_000), LEN / 2 + 12_345)
        .unwrap_or_else(|e| panic!("overwrite 4 KiB of {NAME}: {e}"));
    drop(file);
    set_mtime(&f.s(NAME), time_n(2));
    f.wait_mirror("overwriting 4 KiB in the middle of a 64 MiB file")
        .await;

    assert_live_delta(&f, sent, reused, 4 * KIB, "overwriting 4 KiB");
    f.shutdown().await;
}

#[actix_rt::test]
async fn inserting_1k_live_sends_one_or_two_chunks() {
    let content = pseudo_random(LEN as usize, 64);
    let f = LiveFolder::start(|src| write_file(&src.join(NAME), &content, 0o644, time_n(1))).await;
    let sent = get(&f.stats.bytes_sent);
    let reused = get(&f.stats.bytes_reused);

    // Saved as most editors save: a new file beside it, renamed over it. Everything behind
    // the insertion moves by 1 KiB, and the Differ's rehash (which takes the cuts of the
    // chunk list it has where they still hold) must catch up with the move.
    let edited = with_1k_inserted(&content, LEN as usize / 3, 1_002);
    let scratch = f.s(".big.bin.new");
    write_file(&scratch, &edited, 0o644, time_n(2));
    std::fs::rename(&scratch, f.s(NAME))
        .unwrap_or_else(|e| panic!("rename the new version over {NAME}: {e}"));
    f.wait_mirror("inserting 1 KiB in a 64 MiB file").await;

    assert_live_delta(&f, sent, reused, KIB, "inserting 1 KiB");
    f.shutdown().await;
}
