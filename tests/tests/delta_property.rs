//! Property: after random small edits to mirrored files, a sync leaves DST an exact mirror
//! and sends no more chunk data than the edited bytes plus about two chunks per edit.
//!
//! Small chunks (`--chunk-sizes 1K,4K,16K`) keep the files small and the bound tight. Every
//! edited file gets a fresh mtime, so the quick check notices each one.

use std::path::Path;

use proptest::prelude::*;

use crate::util::*;

/// The chunker sizes of every sync in this module.
const CHUNK_SIZES: &str = "1K,4K,16K";

/// The largest chunk with [`CHUNK_SIZES`].
const MAX: u64 = 16 * KIB;

/// One edit of a file's bytes; `at` picks an offset modulo the current length (plus one).
#[derive(Clone, Debug)]
enum Edit {
    Insert { at: usize, len: usize, seed: u64 },
    Delete { at: usize, len: usize },
    Overwrite { at: usize, len: usize, seed: u64 },
}

impl Edit {
    /// Applies the edit to `content`, returning how many new bytes it brought in.
    fn apply(&self, content: &mut Vec<u8>) -> u64 {
        match *self {
            Edit::Insert { at, len, seed } => {
                let at = at % (content.len() + 1);
                content.splice(at..at, pseudo_random(len, seed));
                len as u64
            }
            Edit::Delete { at, len } => {
                let at = at % (content.len() + 1);
                let end = (at + len).min(content.len());
                content.drain(at..end);
                0
            }
            Edit::Overwrite { at, len, seed } => {
                let at = at % (content.len() + 1);
                let end = (at + len).min(content.len());
                content[at..end].copy_from_slice(&pseudo_random(end - at, seed));
                (end - at) as u64
            }
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let len = || 1usize..=2000;
    prop_oneof![
        (any::<usize>(), len(), any::<u64>()).prop_map(|(at, len, seed)| Edit::Insert {
            at,
            len,
            seed
        }),
        (any::<usize>(), len()).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), len(), any::<u64>()).prop_map(|(at, len, seed)| Edit::Overwrite {
            at,
            len,
            seed
        }),
    ]
}

/// A file: its initial length and content seed, and the edits made to it after the first sync.
#[derive(Clone, Debug)]
struct FilePlan {
    len: usize,
    seed: u64,
    edits: Vec<Edit>,
}

fn file_plan() -> impl Strategy<Value = FilePlan> {
    (
        32 * KIB as usize..=512 * KIB as usize,
        any::<u64>(),
        prop::collection::vec(edit(), 1..=4),
    )
        .prop_map(|(len, seed, edits)| FilePlan { len, seed, edits })
}

/// Runs `ferry sync --json` with the small chunk sizes; a failed run or a DST that does not
/// mirror SRC is a proptest failure rather than a panic.
fn sync_and_check(src: &Path, dst: &Path, round: &str) -> Result<Report, TestCaseError> {
    let out = sync(
        src,
        dst,
        &["--json", "--no-fsync", "--chunk-sizes", CHUNK_SIZES],
    );
    prop_assert_eq!(out.code, 0, "the {} sync failed\n{}", round, out);
    let report = Report::parse(&out.stdout)
        .map_err(|e| TestCaseError::fail(format!("bad --json report: {e}\n{out}")))?;
    let diffs = diff_snapshots(
        &snapshot(src),
        &snapshot(dst),
        Compare::MIRROR,
        ("SRC", "DST"),
    );
    prop_assert!(
        diffs.is_empty(),
        "after the {} sync DST is not a mirror:\n  {}",
        round,
        diffs.join("\n  ")
    );
    Ok(report)
}

proptest! {
    #![proptest_config(proptest_config(0xDE17_A5EE))]

    #[test]
    fn small_edits_send_little_more_than_the_edited_bytes(
        files in prop::collection::vec(file_plan(), 2..=5),
    ) {
        let src = tempdir();
        let dst = tempdir();
        let mut contents = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let content = pseudo_random(f.len, f.seed);
            write_file(&src.path().join(format!("f{i}.bin")), &content, 0o644, time_n(i as u64));
            contents.push(content);
        }
        sync_and_check(src.path(), dst.path(), "initial")?;

        let mut new_bytes = 0;
        let mut edits = 0;
        for (i, (f, content)) in files.iter().zip(&mut contents).enumerate() {
            for e in &f.edits {
                new_bytes += e.apply(content);
                edits += 1;
            }
            write_file(
                &src.path().join(format!("f{i}.bin")),
                &*content,
                0o644,
                time_n(100 + i as u64),
            );
        }
        let report = sync_and_check(src.path(), dst.path(), "second")?;

        let bound = new_bytes + 2 * MAX * edits;
        prop_assert!(
            report.bytes_sent <= bound,
            "{} edits bringing {} new bytes sent {} bytes of chunk data, more than {} \
             (the new bytes plus two {}-byte chunks per edit): {}",
            edits,
            new_bytes,
            report.bytes_sent,
            bound,
            MAX,
            report.raw
        );
    }
}
