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
    let (applier, applied, failed) = applier_for(dst.path());

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

/// What a [`FakeSender`] records: acknowledged sequences, or failure reasons.
type Log<T> = Arc<Mutex<Vec<T>>>;

/// An Applier on `dst`, started, with a [`FakeSender`] as its Sender, and what that records.
fn applier_for(dst: &std::path::Path) -> (Addr<Applier>, Log<u64>, Log<String>) {
    let fake = FakeSender::default();
    let (applied, failed) = (fake.applied.clone(), fake.failed.clone());
    let fake = fake.start();
    let link = SenderLink::to(&fake);
    let opts = ApplierOptions {
        checksum: false,
        dry_run: false,
        durable: false,
        params: Default::default(),
        untrusted_sender: true,
        remote: false,
        ignore: Default::default(),
    };
    let target = TargetDir::open(dst).unwrap();
    let folder = FolderId::new("view").unwrap();
    let applier = Applier::new(folder, target, opts, link, Arc::new(Stats::default())).start();
    applier.do_send(Start);
    (applier, applied, failed)
}

/// Only entries that appear or change kind are checked for nesting; one re-sent as it was
/// is not. Its parent turned symlink in the same message is still caught, through the
/// parent's own check, even though the child is sent unchanged in kind.
#[actix_rt::test]
async fn a_child_resent_unchanged_does_not_hide_its_parent_turning_symlink() {
    let dst = tempdir();
    let (applier, applied, failed) = applier_for(dst.path());

    applier.do_send(delta(
        vec![
            dir("d", 1, EntryState::Present),
            dir("d/e", 2, EntryState::Present),
        ],
        2,
        true,
    ));
    wait_applied(&applied, &failed, 2, 1).await;

    // `d/e` again, as a directory still (a new mode): taken, and applied.
    let mut e = dir("d/e", 3, EntryState::Present);
    e.mode = 0o700;
    applier.do_send(delta(vec![e], 3, false));
    wait_applied(&applied, &failed, 3, 1).await;

    // `d` turns into a symlink while `d/e` is re-sent unchanged in kind.
    let link = FileEntry {
        symlink_target: Some("elsewhere".into()),
        mtime: MtimeNs(1_700_000_000_000_000_000),
        seq: Seq(4),
        ..FileEntry::new(RelPath::new("d").unwrap(), EntryKind::Symlink)
    };
    let mut e = dir("d/e", 5, EntryState::Present);
    e.mode = 0o750;
    applier.do_send(delta(vec![link, e], 5, false));
    let failed_now = failed.clone();
    wait_for(
        Duration::from_secs(20),
        "the Applier refuses d/e inside the symlink d",
        move || {
            let failed = failed_now.clone();
            async move {
                match failed.lock().unwrap().first() {
                    Some(f) if f.contains("d/e lies inside d, which is not a directory") => Ok(()),
                    other => Err(format!("failures so far: {other:?}")),
                }
            }
        },
    )
    .await;
    assert!(
        dst.path().join("d").is_dir() && !dst.path().join("d").is_symlink(),
        "d was replaced by the symlink"
    );
    assert!(
        !applied.lock().unwrap().contains(&5),
        "the refused delta was acknowledged"
    );
}
