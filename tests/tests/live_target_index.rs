//! The Applier's target chunk index kept across restarts: a restarted Applier reuses the
//! saved chunk lists of target files whose stat did not change, instead of reading them.

use std::fs::{self, File, FileTimes};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;

use actix::prelude::*;
use ferry_actors::applier::Retire;
use ferry_actors::messages::{Applied, Failed};
use ferry_actors::persist::TargetStore;
use ferry_actors::{FolderId, FolderJob, Pipeline, Stats, TargetSpec};
use ferry_engine::{ChunkParams, IgnoreRules};
use tokio::sync::oneshot;

use crate::util::live::{get, mirror_diff, DEADLINE};
use crate::util::stores::MemStore;
use crate::util::*;

const MIB: u64 = 1 << 20;

/// Hears the Applier's first acknowledgement (of the snapshot) or a failure.
struct Completion {
    done: Option<oneshot::Sender<Result<(), String>>>,
}

impl Actor for Completion {
    type Context = Context<Self>;
}

impl Handler<Applied> for Completion {
    type Result = ();
    fn handle(&mut self, msg: Applied, _: &mut Self::Context) {
        if let Some(tx) = self.done.take() {
            let r = if msg.skipped.is_empty() {
                Ok(())
            } else {
                Err(format!("paths skipped: {:?}", msg.skipped))
            };
            let _ = tx.send(r);
        }
    }
}

impl Handler<Failed> for Completion {
    type Result = ();
    fn handle(&mut self, msg: Failed, _: &mut Self::Context) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Err(format!("{}: {}", msg.actor, msg.reason)));
        }
    }
}

/// Mirrors `src` into `dst` once with an Applier keeping its chunk lists in `store`, then
/// retires the Applier (which answers once what it queued is saved) and stops the rest.
async fn sync_with_store(src: &Path, dst: &Path, store: &Arc<MemStore>) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let job = FolderJob {
        folder: FolderId::try_from("tindex".to_owned()).expect("a valid folder id"),
        source: src.to_owned(),
        target: dst.to_owned(),
        checksum: false,
        dry_run: false,
        durable: false,
        params: ChunkParams::default(),
        ignore: IgnoreRules::default(),
        remote: false,
    };
    let (tx, rx) = oneshot::channel();
    let done = Completion { done: Some(tx) }.start();
    let target_store: Arc<dyn TargetStore> = store.clone();
    let pipeline = Pipeline::start_kept_with_target(
        &job,
        &TargetSpec::Local,
        None,
        stats.clone(),
        done.clone().recipient(),
        done.recipient(),
        None,
        Some(target_store),
    )
    .await
    .expect("the pipeline starts");
    let outcome = tokio::time::timeout(DEADLINE, rx)
        .await
        .unwrap_or_else(|_| panic!("no acknowledgement within {DEADLINE:?}"))
        .expect("the pipeline acknowledges or fails");
    if let Err(e) = outcome {
        panic!("the sync failed: {e}");
    }
    let applier = pipeline
        .applier
        .clone()
        .expect("a local target has an Applier");
    applier.send(Retire).await.expect("the Applier retires");
    pipeline.stop();
    stats
}

/// SRC with a 4 MiB file and a small one, mirrored into an empty DST with `store`.
async fn first_sync(
    base: &Path,
    store: &Arc<MemStore>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (base.join("src"), base.join("dst"));
    write(&src.join("big.bin"), pseudo_random(4 * MIB as usize, 7));
    write(&src.join("small.txt"), "small\n");
    mkdir(&dst);
    sync_with_store(&src, &dst, store).await;
    mirror_diff(&src, &dst).unwrap_or_else(|e| panic!("after the first sync: {e}"));
    assert!(
        store.row("big.bin").is_some() && store.row("small.txt").is_some(),
        "the first sync saves the chunk lists of the files it wrote"
    );
    (src, dst)
}

#[actix_rt::test]
async fn a_restarted_applier_copies_from_saved_chunk_lists_without_reading_the_target() {
    let base = tempdir();
    let store = Arc::new(MemStore::default());
    let (src, dst) = first_sync(base.path(), &store).await;

    // The source gains a copy of the big file under a new name.
    fs::copy(src.join("big.bin"), src.join("copy.bin")).expect("copy big.bin");
    let stats = sync_with_store(&src, &dst, &store).await;

    mirror_diff(&src, &dst).unwrap_or_else(|e| panic!("after the second sync: {e}"));
    assert_eq!(get(&store.loads), 2, "each Applier loads the store once");
    let loaded = store.loaded.lock().expect("store lock").clone();
    assert!(
        loaded.iter().any(|p| p.as_str() == "big.bin"),
        "the second Applier was offered big.bin's chunk list: {loaded:?}"
    );
    assert!(
        get(&stats.bytes_reused) >= 4 * MIB,
        "copy.bin is built from big.bin's chunks: {} bytes reused",
        get(&stats.bytes_reused)
    );
    assert!(
        get(&stats.bytes_sent) < 64 << 10,
        "almost no chunk data travels: {} bytes sent",
        get(&stats.bytes_sent)
    );
    assert_eq!(
        get(&stats.target_bytes_hashed),
        0,
        "no target file is read to learn its chunks"
    );
    let (_, copy) = store
        .row("copy.bin")
        .expect("copy.bin's chunk list is saved");
    let (_, big) = store
        .row("big.bin")
        .expect("big.bin's chunk list is still saved");
    assert_eq!(copy.id, big.id, "the copy has the original's content");
}

#[actix_rt::test]
async fn a_saved_chunk_list_whose_file_changed_is_not_used() {
    let base = tempdir();
    let store = Arc::new(MemStore::default());
    let (src, dst) = first_sync(base.path(), &store).await;
    let (saved_stat, saved) = store.row("big.bin").expect("big.bin is saved");

    // The target file is rewritten in place behind the Applier's back, keeping its size and
    // mtime: only its ctime tells.
    let target = dst.join("big.bin");
    let mtime = fs::metadata(&target)
        .expect("stat big.bin")
        .modified()
        .expect("mtime");
    let mut f = File::options()
        .write(true)
        .open(&target)
        .expect("open big.bin in DST");
    f.write_all(&pseudo_random(4 * MIB as usize, 8))
        .expect("rewrite big.bin in DST");
    f.set_times(FileTimes::new().set_modified(mtime))
        .expect("restore big.bin's mtime");
    drop(f);
    let md = fs::metadata(&target).expect("stat big.bin");
    assert_eq!(md.len(), 4 * MIB);
    assert_ne!(
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        saved_stat.ctime_ns,
        "the rewrite changed big.bin's ctime"
    );

    fs::copy(src.join("big.bin"), src.join("copy.bin")).expect("copy big.bin");
    let stats = sync_with_store(&src, &dst, &store).await;

    assert!(
        get(&stats.target_bytes_hashed) >= 4 * MIB,
        "the stale chunk list is not trusted: big.bin is read again ({} target bytes hashed)",
        get(&stats.target_bytes_hashed)
    );
    assert_eq!(
        fs::read(dst.join("copy.bin")).expect("read DST/copy.bin"),
        fs::read(src.join("copy.bin")).expect("read SRC/copy.bin"),
        "copy.bin arrives intact"
    );
    let (stat, now) = store.row("big.bin").expect("big.bin is saved again");
    assert_ne!(
        now.id, saved.id,
        "what is saved now is the rewritten content"
    );
    assert_ne!(stat, saved_stat, "under the rewritten file's stat");
}
