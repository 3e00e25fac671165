//! An initial sync writes files while the rest of the source is still being hashed: the
//! Applier asks for chunk lists in batches and applies a plan that only adds as soon as a
//! batch is in. Here the second batch's answer is held back until a file of the first one
//! is in DST; without pipelining nothing is written meanwhile and the hold times out.
//! And a batch that comes in while such a plan waits for chunks joins it: here the first
//! chunks sent are held back until a file of the second batch is in DST. The directories
//! are made while the first batch is hashed: here its answer is held until they exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_actors::messages::{ChunkData, IndexDelta};
use ferry_actors::sender::TargetLink;
use ferry_actors::{run_sync_with, FolderId, LinkTaps, Stats};
use ferry_engine::{EntryState, FileEntry, Seq};
use tempfile::TempDir;

use crate::util::*;

/// Files in the tree: more than one batch of content requests (1,024 files).
const FILES: usize = 1_500;
/// How long the second answer is held at most.
const HOLD: Duration = Duration::from_secs(30);

/// What a held content reply waits for in DST.
type Until = Box<dyn Fn(&Path) -> bool>;

/// Passes index messages on; holds the content reply numbered `nth` (from 0) until `until`
/// holds in DST (or [`HOLD`] passed).
struct HoldReply {
    next: Recipient<IndexDelta>,
    dst: PathBuf,
    nth: u64,
    until: Rc<Until>,
    replies: Arc<AtomicU64>,
    met_while_held: Arc<AtomicBool>,
}

impl Actor for HoldReply {
    type Context = Context<Self>;
}

impl Handler<IndexDelta> for HoldReply {
    type Result = ();

    /// Answers at once and forwards later: the Sender waits for each index message to be
    /// delivered, and must go on serving chunks while the reply is held.
    fn handle(&mut self, msg: IndexDelta, ctx: &mut Self::Context) {
        let next = self.next.clone();
        let hold = msg.content_reply && self.replies.fetch_add(1, Ordering::SeqCst) == self.nth;
        let (dst, until, met) = (
            self.dst.clone(),
            self.until.clone(),
            self.met_while_held.clone(),
        );
        // `wait`: later index messages stay behind the held one, in order.
        ctx.wait(
            async move {
                if hold && held_until(|| until(&dst)).await {
                    met.store(true, Ordering::SeqCst);
                }
                if let Err(e) = next.send(msg).await {
                    eprintln!("the tap could not forward an index message: {e}");
                }
            }
            .into_actor(self),
        );
    }
}

/// Waits until `done` holds, for [`HOLD`] at most; whether it held.
async fn held_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < HOLD {
        if done() {
            return true;
        }
        // A condition wait bounded by HOLD; the sleep only spaces the checks.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Syncs `src` to `dst` holding content reply `nth` until `until` holds in DST; the report,
/// the content replies seen and whether `until` held while the reply was held back.
async fn sync_holding_reply(
    name: &str,
    src: &Path,
    dst: &Path,
    nth: u64,
    until: Until,
) -> (ferry_actors::SyncReport, u64, bool) {
    let replies = Arc::new(AtomicU64::new(0));
    let met = Arc::new(AtomicBool::new(false));
    let (r, m, d) = (replies.clone(), met.clone(), dst.to_owned());
    let until = Rc::new(until);
    let taps = LinkTaps {
        to_target: Some(Box::new(move |link: TargetLink| {
            let tap = HoldReply {
                next: link.index.clone(),
                dst: d,
                nth,
                until,
                replies: r,
                met_while_held: m,
            }
            .start();
            TargetLink {
                index: tap.recipient(),
                ..link
            }
        })),
        to_sender: None,
    };
    let job = one_shot_job(name, src, dst);
    let report = run_sync_with(job, Arc::new(Stats::default()), taps)
        .await
        .expect("the sync succeeds");
    (
        report,
        replies.load(Ordering::SeqCst),
        met.load(Ordering::SeqCst),
    )
}

/// Whether some regular file exists under `dir`.
fn any_file(dir: &Path) -> bool {
    walkdir(dir).any(|p| p.is_file())
}

fn walkdir(dir: &Path) -> Box<dyn Iterator<Item = PathBuf>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Box::new(std::iter::empty());
    };
    Box::new(rd.flatten().flat_map(|e| {
        let p = e.path();
        if p.is_dir() {
            walkdir(&p)
        } else {
            Box::new(std::iter::once(p))
        }
    }))
}

#[actix_rt::test]
async fn files_are_written_before_the_whole_source_is_hashed() {
    let src = tempdir();
    let dst = tempdir();
    for i in 0..FILES {
        write(
            &src.path().join(format!("d{}/f{i}.txt", i % 10)),
            format!("file {i}\n"),
        );
    }
    let (report, replies, seen) =
        sync_holding_reply("pipelined", src.path(), dst.path(), 1, Box::new(any_file)).await;
    assert!(replies >= 2, "the content was asked for in one batch");
    assert!(
        seen,
        "no file was written while the second batch of chunk lists was held back"
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_mirror(src.path(), dst.path());
}

#[actix_rt::test]
async fn directories_are_made_while_the_first_content_is_hashed() {
    let src = tempdir();
    let dst = tempdir();
    let dirs: Vec<String> = (0..10).map(|i| format!("d{i}/e{i}")).collect();
    for (i, d) in dirs.iter().enumerate() {
        write(
            &src.path().join(format!("{d}/f{i}.txt")),
            format!("file {i}\n"),
        );
    }
    let made = move |dst: &Path| dirs.iter().all(|d| dst.join(d).is_dir());
    let (report, replies, seen) =
        sync_holding_reply("dirs-first", src.path(), dst.path(), 0, Box::new(made)).await;
    assert!(replies >= 1);
    assert!(
        seen,
        "the directories were not made until the first chunk lists came in"
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_mirror(src.path(), dst.path());
}

/// The joining test's large file: its chunks are the ones held back. Its path sorts first,
/// so it is in the first batch of content requests, with small files.
const BIG: &str = "a/big.bin";
/// Its size: a plain chunk list (not an outline), and more than one chunk.
const BIG_SIZE: usize = 1 << 20;
/// A chunk larger than this is the large file's (the small files are a few bytes each).
const SMALL_MAX: usize = 64;

/// Passes index and chunk messages on, the content reply holding [`BIG`] first (a reply
/// for other files that comes before it waits for it: the Differ hashes batches in
/// parallel). Notes the paths of the other replies ("the second batch"), and holds the
/// large file's first chunks until one of those files is in DST. With `remove_big`, a
/// removal of the large file (as a live delta brings one: the source deleted it after its
/// chunks were read) goes just before the second batch, while the file is being written.
struct HoldBigChunks {
    index: Recipient<IndexDelta>,
    chunks: Recipient<ChunkData>,
    dst: PathBuf,
    big: Option<FileEntry>,
    early: Vec<IndexDelta>,
    remove_big: bool,
    second: Arc<std::sync::Mutex<BTreeSet<String>>>,
    held: bool,
    written_while_held: Arc<AtomicBool>,
}

impl Actor for HoldBigChunks {
    type Context = Context<Self>;
}

impl HoldBigChunks {
    /// Starts one passing messages on to `link`'s index and chunk recipients.
    fn start_on(
        link: &TargetLink,
        dst: PathBuf,
        remove_big: bool,
        second: Arc<std::sync::Mutex<BTreeSet<String>>>,
        written_while_held: Arc<AtomicBool>,
    ) -> Addr<Self> {
        HoldBigChunks {
            index: link.index.clone(),
            chunks: link.chunks.clone(),
            dst,
            big: None,
            early: Vec::new(),
            remove_big,
            second,
            held: false,
            written_while_held,
        }
        .start()
    }

    /// The removal of `big` the source would send next.
    fn removal(folder: &FolderId, big: &FileEntry) -> IndexDelta {
        let seq = Seq(big.seq.0 + 1);
        IndexDelta {
            folder: folder.clone(),
            snapshot: false,
            content_reply: false,
            entries: vec![FileEntry {
                state: EntryState::Deleted,
                content: None,
                size: 0,
                seq,
                ..big.clone()
            }],
            lists: Vec::new(),
            upto: seq,
        }
    }
}

/// The joining tests' source: [`BIG`] and [`FILES`] small files in ten directories.
fn big_and_small_files(src: &Path) {
    write(&src.join(BIG), pseudo_random(BIG_SIZE, 7));
    for i in 0..FILES {
        write(
            &src.join(format!("d{}/f{i}.txt", i % 10)),
            format!("file {i}\n"),
        );
    }
}

impl Handler<IndexDelta> for HoldBigChunks {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: IndexDelta, _: &mut Self::Context) -> Self::Result {
        let holds_big = |m: &IndexDelta| m.entries.iter().any(|e| e.path.as_str() == BIG);
        let mut out = Vec::new();
        if msg.content_reply && holds_big(&msg) {
            self.big = msg.entries.iter().find(|e| e.path.as_str() == BIG).cloned();
            out.push(msg);
            out.append(&mut self.early);
        } else if msg.content_reply && self.big.is_none() {
            self.early.push(msg);
        } else {
            out.push(msg);
        }
        let mut sends = Vec::new();
        for m in out {
            if m.content_reply && !holds_big(&m) {
                let mut second = self.second.lock().unwrap();
                if second.is_empty() && self.remove_big {
                    if let Some(big) = &self.big {
                        sends.push(Self::removal(&m.folder, big));
                    }
                }
                second.extend(m.entries.iter().map(|e| e.path.as_str().to_owned()));
            }
            sends.push(m);
        }
        let next = self.index.clone();
        Box::pin(async move {
            for m in sends {
                if let Err(e) = next.send(m).await {
                    eprintln!("the tap could not forward an index message: {e}");
                }
            }
        })
    }
}

impl Handler<ChunkData> for HoldBigChunks {
    type Result = ResponseFuture<()>;

    /// Forwards at once, but for the large file's chunks in the first message holding any:
    /// those follow once a file of the second batch is in DST (or after [`HOLD`]).
    fn handle(&mut self, mut msg: ChunkData, ctx: &mut Self::Context) -> Self::Result {
        let next = self.chunks.clone();
        if !self.held && msg.chunks.iter().any(|c| c.body.len() > SMALL_MAX as u64) {
            self.held = true;
            let (big, small): (Vec<_>, Vec<_>) = msg
                .chunks
                .drain(..)
                .partition(|c| c.body.len() > SMALL_MAX as u64);
            msg.chunks = small;
            let held = ChunkData {
                folder: msg.folder.clone(),
                chunks: big,
                failed: Vec::new(),
                files: Vec::new(),
            };
            let (dst, second, seen) = (
                self.dst.clone(),
                self.second.clone(),
                self.written_while_held.clone(),
            );
            let later = next.clone();
            ctx.spawn(
                async move {
                    let written = || second.lock().unwrap().iter().any(|p| dst.join(p).is_file());
                    if held_until(written).await {
                        seen.store(true, Ordering::SeqCst);
                    }
                    if let Err(e) = later.send(held).await {
                        eprintln!("the tap could not forward chunks: {e}");
                    }
                }
                .into_actor(self),
            );
        }
        Box::pin(async move {
            if let Err(e) = next.send(msg).await {
                eprintln!("the tap could not forward chunks: {e}");
            }
        })
    }
}

/// What a sync through [`HoldBigChunks`] did.
struct HeldRun {
    src: TempDir,
    dst: TempDir,
    report: ferry_actors::SyncReport,
    /// The paths of the second batch.
    second: BTreeSet<String>,
    /// A file of the second batch was installed while the large file's chunks were held.
    seen: bool,
}

/// Syncs [`big_and_small_files`] through [`HoldBigChunks`].
async fn held_run(name: &str, remove_big: bool) -> HeldRun {
    let (src, dst) = (tempdir(), tempdir());
    big_and_small_files(src.path());
    let second = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen = Arc::new(AtomicBool::new(false));
    let (sec, s, d) = (second.clone(), seen.clone(), dst.path().to_owned());
    let taps = LinkTaps {
        to_target: Some(Box::new(move |link: TargetLink| {
            let tap = HoldBigChunks::start_on(&link, d, remove_big, sec, s);
            TargetLink {
                index: tap.clone().recipient(),
                chunks: tap.recipient(),
                ..link
            }
        })),
        to_sender: None,
    };
    let job = one_shot_job(name, src.path(), dst.path());
    let report = run_sync_with(job, Arc::new(Stats::default()), taps)
        .await
        .expect("the sync succeeds");
    let second = std::mem::take(&mut *second.lock().unwrap());
    HeldRun {
        src,
        dst,
        report,
        second,
        seen: seen.load(Ordering::SeqCst),
    }
}

#[actix_rt::test]
async fn files_whose_lists_arrive_while_a_plan_waits_for_chunks_are_written_meanwhile() {
    let run = held_run("joined", false).await;
    assert!(
        !run.second.is_empty(),
        "the content was asked for in one batch"
    );
    assert!(
        run.seen,
        "no file of the second batch was installed while the first plan waited for chunks"
    );
    assert!(run.report.skipped.is_empty(), "{:?}", run.report.skipped);
    assert_mirror(run.src.path(), run.dst.path());
}

#[actix_rt::test]
async fn a_file_removed_while_a_plan_writes_it_is_removed_though_that_plan_was_joined() {
    let run = held_run("joined-removal", true).await;
    assert!(run.seen, "the second batch joined");
    assert!(run.report.skipped.is_empty(), "{:?}", run.report.skipped);
    assert_mirror_except(run.src.path(), run.dst.path(), &[BIG]);
    assert!(
        !run.dst.path().join(BIG).exists(),
        "the Applier acknowledged the removal of {BIG} but DST still holds it"
    );
}
