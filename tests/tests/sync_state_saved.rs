//! A one-shot sync that keeps state returns only once that state is saved: the source
//! index (marked complete) and a local target's chunk lists. The stores here are slow on
//! purpose, so a run that returned before their writes ended would be seen doing so.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_actors::persist::{IndexWrite, SavedIndex, SourceStore};
use ferry_actors::{run_sync_kept, Kept, Stats, TargetSpec};
use ferry_engine::{ChunkParams, RelPath, Seq};

use crate::util::stores::MemStore;
use crate::util::*;

/// How long each write to a slow store takes: far longer than a run needs to stop its
/// actors.
const SLOW_WRITE: Duration = Duration::from_millis(300);

/// A source index store in memory, each write taking `delay`.
#[derive(Default)]
struct SlowSource {
    delay: Duration,
    saved: Mutex<BTreeSet<RelPath>>,
    complete: AtomicBool,
}

impl SourceStore for SlowSource {
    fn load(&self, _: &ChunkParams) -> Result<SavedIndex, String> {
        Ok(SavedIndex::default())
    }

    fn reserve(&self, _: &ChunkParams, _: Seq, _: Seq) -> Result<(), String> {
        Ok(())
    }

    fn write(&self, write: &IndexWrite) -> Result<(), String> {
        std::thread::sleep(self.delay);
        let mut saved = self.saved.lock().expect("store lock");
        if write.full {
            saved.clear();
        }
        for p in &write.removed {
            saved.remove(p);
        }
        saved.extend(write.upserts.iter().map(|(e, _)| e.path.clone()));
        Ok(())
    }

    fn drop_entries(&self) -> Result<(), String> {
        self.saved.lock().expect("store lock").clear();
        Ok(())
    }

    fn complete(&self) -> Result<(), String> {
        std::thread::sleep(self.delay);
        self.complete.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn describe(&self) -> String {
        "slow memory".into()
    }
}

fn paths(names: &[&str]) -> BTreeSet<RelPath> {
    names
        .iter()
        .map(|n| RelPath::new(*n).expect("a valid relative path"))
        .collect()
}

const FILES: [&str; 3] = ["a.txt", "d/b.bin", "d/e/c.bin"];

/// Runs a kept sync of three files into an empty target with the two stores, checking the
/// mirror as soon as the run returns.
async fn kept_sync(source: &Arc<SlowSource>, target: &Arc<MemStore>) {
    let src = tempdir();
    let dst = tempdir();
    write(&src.path().join(FILES[0]), "alpha");
    write(&src.path().join(FILES[1]), pseudo_random(300_000, 1));
    write(&src.path().join(FILES[2]), pseudo_random(40_000, 2));
    let kept = Kept {
        source: source.clone(),
        target: Some(target.clone()),
    };
    let report = run_sync_kept(
        one_shot_job("saved", src.path(), dst.path()),
        &TargetSpec::Local,
        Arc::new(Stats::default()),
        Some(kept),
    )
    .await
    .expect("the sync succeeds");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_mirror(src.path(), dst.path());
}

#[actix_rt::test]
async fn a_kept_sync_returns_once_its_source_index_is_saved_and_marked_complete() {
    let source = Arc::new(SlowSource {
        delay: SLOW_WRITE,
        ..SlowSource::default()
    });
    let target = Arc::new(MemStore::default());

    kept_sync(&source, &target).await;

    // Checked at once: nothing is waited for after the run returned.
    assert!(
        source.complete.load(Ordering::SeqCst),
        "the saved source index is marked complete before the run returns"
    );
    let saved = source.saved.lock().expect("store lock").clone();
    assert!(
        paths(&FILES).is_subset(&saved),
        "the source index saved {saved:?}, not every file"
    );
    assert!(saved.contains(&RelPath::new("d/e").expect("a valid relative path")));
}

#[actix_rt::test]
async fn a_kept_sync_returns_once_the_targets_chunk_lists_are_saved() {
    let source = Arc::new(SlowSource::default());
    let target = Arc::new(MemStore {
        delay: SLOW_WRITE,
        ..MemStore::default()
    });

    kept_sync(&source, &target).await;

    assert!(source.complete.load(Ordering::SeqCst));
    let chunk_lists: BTreeSet<RelPath> = target.paths().into_iter().collect();
    assert_eq!(
        chunk_lists,
        paths(&FILES),
        "the chunk lists of every written file are saved before the run returns"
    );
}
