//! Source faults during live replication, in-process: a file rewritten while it is read, a file
//! still being written, an edit whose read a change without an event spoils, files deleted
//! between the scan and the transfer, a directory replaced by a file during the
//! initial sync, and a burst of 10,000 new files during the initial sync. Each converges to an
//! exact mirror, and no file ever appears in the target with content the source never had.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_actors::{FolderId, Replication};

use crate::util::live::{wait_for, wait_mirror};
use crate::util::*;

/// A burst of many files takes longer than one step to settle.
const BURST_DEADLINE: Duration = Duration::from_secs(90);

/// SRC and DST in a temporary directory.
struct Trees {
    _base: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

impl Trees {
    fn new() -> Trees {
        let base = tempdir();
        let src = base.path().join("src");
        let dst = base.path().join("dst");
        mkdir(&src);
        Trees {
            _base: base,
            src,
            dst,
        }
    }

    /// Starts a live replication of SRC into DST (no fsync: durability is not looked at).
    fn start(&self) -> Replication {
        Replication::builder(FolderId::new("t").unwrap(), &self.src)
            .to_dir(&self.dst)
            .durable(false)
            .start()
            .expect("the replication starts")
    }
}

/// `n` files of a few KiB under `dir`, spread over subdirectories.
fn files(dir: &Path, n: usize, seed: u64) {
    for i in 0..n {
        let path = dir.join(format!("s{}/f{i}.bin", i % 20));
        write(
            &path,
            pseudo_random(1024 + (i * 37) % 8192, seed + i as u64),
        );
    }
}

/// Collects the replication's reports of actions the target refused because what is there
/// is not what the Applier's index said ("precondition failed").
fn refused_actions(r: &Replication) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = r.subscribe();
    let out = seen.clone();
    actix_rt::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let ferry_actors::EventKind::Error { message } = e.kind {
                        if message.contains("precondition failed") {
                            out.lock().unwrap().push(message);
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    seen
}

/// Waits until DST mirrors SRC within `deadline`.
async fn wait_mirrored(t: &Trees, deadline: Duration, what: &str) {
    let (src, dst) = (t.src.clone(), t.dst.clone());
    wait_for(deadline, &format!("DST mirrors SRC after {what}"), || {
        let (s, d) = (src.clone(), dst.clone());
        async move {
            tokio::task::spawn_blocking(move || crate::util::live::mirror_diff(&s, &d))
                .await
                .unwrap_or_else(|e| Err(format!("the mirror check panicked: {e}")))
        }
    })
    .await;
}

#[actix_rt::test]
async fn a_file_rewritten_while_it_is_read_lands_only_as_whole_versions() {
    let t = Trees::new();
    let big = t.src.join("big.bin");
    const SIZE: usize = 8 << 20;
    let first = pseudo_random(SIZE, 1);
    let versions = Arc::new(Mutex::new(HashSet::from([blake3::hash(&first)])));
    write(&big, &first);
    let r = t.start();
    // A writer overwrites the file in place, whole versions of the same size, while the
    // replication reads it; versions are spaced so that each has its own mtime.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (big, versions, done) = (big.clone(), versions.clone(), done.clone());
        std::thread::spawn(move || {
            for v in 2..40u64 {
                let content = pseudo_random(SIZE, v);
                versions.lock().unwrap().insert(blake3::hash(&content));
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&big)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &content))
                    .expect("rewrite in place");
                // Spacing the versions, not synchronisation: each gets its own mtime.
                std::thread::sleep(Duration::from_millis(15));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let target = t.dst.join("big.bin");
    let (v, d) = (versions.clone(), done.clone());
    wait_for(BURST_DEADLINE, "the writer finishes", || {
        let (v, d, target) = (v.clone(), d.clone(), target.clone());
        async move {
            // Whenever the target holds the file, it is one whole version.
            let read = tokio::task::spawn_blocking(move || std::fs::read(&target).ok());
            if let Some(bytes) = read.await.unwrap() {
                let h = blake3::hash(&bytes);
                assert!(
                    v.lock().unwrap().contains(&h),
                    "the target holds content the source never had ({} bytes)",
                    bytes.len()
                );
            }
            if d.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("still writing".into())
            }
        }
    })
    .await;
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    wait_mirror(&t.src, &t.dst, "the last rewrite").await;
    r.stop(Duration::from_secs(10)).await;
}

#[actix_rt::test]
async fn a_file_still_being_written_is_waited_for_not_reported_skipped() {
    let t = Trees::new();
    write(&t.src.join("a.txt"), "before");
    let r = t.start();
    wait_mirrored(&t, BURST_DEADLINE, "the start").await;
    // A writer appends to a new file piece by piece; hashing it meets it growing.
    let big = t.src.join("growing.bin");
    let writer = {
        let big = big.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&big).expect("create the file");
            for i in 0..48u64 {
                std::io::Write::write_all(&mut f, &pseudo_random(1 << 20, i))
                    .expect("append a piece");
                // Spacing the pieces, not synchronisation: each batch of events is hashed
                // while the file is still growing.
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    wait_mirrored(&t, BURST_DEADLINE, "the writer finished").await;
    assert_eq!(
        r.stats().skipped.load(Ordering::SeqCst),
        0,
        "a file still being written is not reported skipped"
    );
    r.stop(Duration::from_secs(10)).await;
}

#[actix_rt::test]
async fn an_edit_whose_hash_is_spoiled_by_a_change_without_an_event_is_still_mirrored() {
    let t = Trees::new();
    let big = t.src.join("big.bin");
    write(&big, pseudo_random(32 << 20, 1));
    let r = t.start();
    wait_mirrored(&t, BURST_DEADLINE, "the start").await;
    let elsewhere = tempdir();
    let link = elsewhere.path().join("link");
    let (b, l) = (big.clone(), link.clone());
    let linker = std::thread::spawn(move || {
        // An edit in place: the event that has the file hashed again.
        let mut f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(16 << 20)).unwrap();
        std::io::Write::write_all(&mut f, &pseudo_random(4096, 2)).unwrap();
        drop(f);
        // Hard links made and removed outside the tree move only the file's ctime, which
        // spoils the hash of the edit, and raise no event for the file: nothing but the
        // Differ itself brings it up again. Spacing, not synchronisation: for a second,
        // whenever the edit is hashed, a link comes and goes under the read.
        for _ in 0..200 {
            std::fs::hard_link(&b, &l).unwrap();
            std::fs::remove_file(&l).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    tokio::task::spawn_blocking(move || linker.join().unwrap())
        .await
        .unwrap();
    wait_mirrored(&t, BURST_DEADLINE, "the edit").await;
    r.stop(Duration::from_secs(10)).await;
}

#[actix_rt::test]
async fn files_deleted_between_scan_and_transfer_converge() {
    let t = Trees::new();
    files(&t.src, 3000, 10);
    let r = t.start();
    // Half the files go while the initial sync is scanning, hashing and sending them.
    let src = t.src.clone();
    // On the blocking pool, so that the replication runs meanwhile on this thread.
    tokio::task::spawn_blocking(move || {
        for i in (0..3000).step_by(2) {
            let _ = std::fs::remove_file(src.join(format!("s{}/f{i}.bin", i % 20)));
        }
    })
    .await
    .unwrap();
    wait_mirrored(
        &t,
        BURST_DEADLINE,
        "deleting half the files during the initial sync",
    )
    .await;
    r.stop(Duration::from_secs(10)).await;
}

#[actix_rt::test]
async fn a_directory_replaced_by_a_file_during_the_initial_sync_converges() {
    let t = Trees::new();
    files(&t.src.join("d"), 2000, 20);
    files(&t.src.join("other"), 200, 30);
    let r = t.start();
    let refused = refused_actions(&r);
    let d = t.src.join("d");
    tokio::task::spawn_blocking(move || {
        std::fs::remove_dir_all(&d).expect("remove the directory");
        std::fs::write(&d, b"now a file\n").expect("write a file in its place");
    })
    .await
    .unwrap();
    wait_mirrored(&t, BURST_DEADLINE, "replacing a directory by a file").await;
    assert!(t.dst.join("d").is_file());
    r.stop(Duration::from_secs(10)).await;
    // Converging is not all: no action may have been refused by the disk because the
    // Applier's index of the target said something else was there (that heals on a retry,
    // but means the index was wrong).
    let refused = refused.lock().unwrap();
    assert!(refused.is_empty(), "{refused:#?}");
}

#[actix_rt::test]
async fn a_burst_of_ten_thousand_files_during_the_initial_sync_converges() {
    let t = Trees::new();
    files(&t.src.join("before"), 3000, 40);
    let r = t.start();
    let burst = t.src.join("burst");
    tokio::task::spawn_blocking(move || files(&burst, 10_000, 50))
        .await
        .unwrap();
    wait_mirrored(&t, BURST_DEADLINE, "a burst of 10,000 files").await;
    r.stop(Duration::from_secs(10)).await;
}
