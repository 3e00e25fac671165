//! The Applier's view of the source, driven message by message: tombstones are not kept, a
//! content reply that crossed a removal does not bring the file back, and a resend that
//! arrives after newer live deltas (a reconnect) is applied in full.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ferry_actors::applier::{Applier, ApplierOptions, SenderLink};
use ferry_actors::messages::{
    Applied, ApplyFailed, IndexDelta, NeedChunks, NeedContent, NeedGroups, Start,
};
use ferry_actors::{FolderId, Stats};
use ferry_engine::{EntryKind, EntryState, FileEntry, MtimeNs, RelPath, Seq, TargetDir};

use crate::util::live::wait_for;
use crate::util::*;

/// Stands in for the Sender: records acknowledgements and failures, asks for nothing.
#[derive(Default)]
struct FakeSender {
    applied: Arc<Mutex<Vec<u64>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Actor for FakeSender {
    type Context = Context<Self>;
}

impl Handler<Applied> for FakeSender {
    type Result = ();
    fn handle(&mut self, msg: Applied, _: &mut Self::Context) {
        self.applied.lock().unwrap().push(msg.seq.0);
    }
}

impl Handler<ApplyFailed> for FakeSender {
    type Result = ();
    fn handle(&mut self, msg: ApplyFailed, _: &mut Self::Context) {
        self.failed.lock().unwrap().push(msg.reason);
    }
}

impl Handler<NeedContent> for FakeSender {
    type Result = ();
    fn handle(&mut self, _: NeedContent, _: &mut Self::Context) {}
}

impl Handler<NeedChunks> for FakeSender {
    type Result = ();
    fn handle(&mut self, _: NeedChunks, _: &mut Self::Context) {}
}

impl Handler<NeedGroups> for FakeSender {
    type Result = ();
    fn handle(&mut self, _: NeedGroups, _: &mut Self::Context) {}
}

/// A directory entry: applying one needs no content from the Sender.
fn dir(path: &str, seq: u64, state: EntryState) -> FileEntry {
    FileEntry {
        state,
        mtime: MtimeNs(1_700_000_000_000_000_000),
        mode: 0o755,
        seq: Seq(seq),
        ..FileEntry::new(RelPath::new(path).unwrap(), EntryKind::Dir)
    }
}

fn delta(entries: Vec<FileEntry>, upto: u64, snapshot: bool) -> IndexDelta {
    IndexDelta {
        folder: FolderId::new("view").unwrap(),
        snapshot,
        content_reply: false,
        entries,
        lists: Vec::new(),
        upto: Seq(upto),
    }
}

/// Waits until the Applier acknowledged `seq` `times` times (once per plan).
async fn wait_applied(
    applied: &Arc<Mutex<Vec<u64>>>,
    failed: &Arc<Mutex<Vec<String>>>,
    seq: u64,
    times: usize,
) {
    let (applied, failed) = (applied.clone(), failed.clone());
    wait_for(
        Duration::from_secs(20),
        &format!("the Applier acknowledges {seq} ({times}×)"),
        move || {
            let (applied, failed) = (applied.clone(), failed.clone());
            async move {
                if let Some(f) = failed.lock().unwrap().first() {
                    return Err(format!("the Applier failed: {f}"));
                }
                let seen = applied.lock().unwrap().clone();
                if seen.iter().filter(|&&s| s == seq).count() >= times {
                    Ok(())
                } else {
                    Err(format!("acknowledged so far: {seen:?}"))
                }
            }
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_resend_after_newer_live_removals_is_applied_in_full() {
    let dst = tempdir();
    let fake = FakeSender::default();
    let (applied, failed) = (fake.applied.clone(), fake.failed.clone());
    let fake = fake.start();
    let link = SenderLink {
        need_content: fake.clone().recipient(),
        need_chunks: fake.clone().recipient(),
        need_groups: fake.clone().recipient(),
        applied: fake.clone().recipient(),
        failed: fake.recipient(),
    };
    let opts = ApplierOptions {
        checksum: false,
        dry_run: false,
        durable: false,
        params: Default::default(),
        untrusted_sender: true,
        remote: false,
        ignore: Default::default(),
    };
    let target = TargetDir::open(dst.path()).unwrap();
    let folder = FolderId::new("view").unwrap();
    let applier = Applier::new(folder, target, opts, link, Arc::new(Stats::default())).start();
    applier.do_send(Start);

    // The target holds `old` and `kept`.
    let snapshot = vec![
        dir("kept", 40, EntryState::Present),
        dir("old", 50, EntryState::Present),
    ];
    applier.do_send(delta(snapshot, 50, true));
    wait_applied(&applied, &failed, 50, 1).await;
    assert!(dst.path().join("old").is_dir());

    // A reconnect: a live removal of `old` (seq 105) overtakes the resend of what the link
    // missed, which holds `new` (seq 60, created while the link was down).
    applier.do_send(delta(
        vec![dir("old", 105, EntryState::Deleted)],
        105,
        false,
    ));
    applier.do_send(delta(
        vec![
            dir("new", 60, EntryState::Present),
            dir("old", 105, EntryState::Deleted),
        ],
        105,
        false,
    ));
    // One plan for each message (the second arrives while the first plan runs).
    wait_applied(&applied, &failed, 105, 2).await;
    assert!(!dst.path().join("old").exists(), "the removal was applied");
    assert!(
        dst.path().join("new").is_dir(),
        "the resent creation was dropped as if it were stale"
    );
    assert!(dst.path().join("kept").is_dir());
}
