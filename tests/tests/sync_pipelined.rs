//! An initial sync writes files while the rest of the source is still being hashed: the
//! Applier asks for chunk lists in batches and applies a plan that only adds as soon as a
//! batch is in. Here the second batch's answer is held back until a file of the first one
//! is in DST; without pipelining nothing is written meanwhile and the hold times out.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_actors::messages::IndexDelta;
use ferry_actors::sender::TargetLink;
use ferry_actors::{run_sync_with, LinkTaps, Stats};

use crate::util::*;

/// Files in the tree: more than one batch of content requests (1,024 files).
const FILES: usize = 1_500;
/// How long the second answer is held at most.
const HOLD: Duration = Duration::from_secs(30);

/// Passes index messages on; holds the second content reply until DST holds a file.
struct HoldSecondReply {
    next: Recipient<IndexDelta>,
    dst: PathBuf,
    replies: Arc<AtomicU64>,
    written_while_held: Arc<AtomicBool>,
}

impl Actor for HoldSecondReply {
    type Context = Context<Self>;
}

impl Handler<IndexDelta> for HoldSecondReply {
    type Result = ();

    /// Answers at once and forwards later: the Sender waits for each index message to be
    /// delivered, and must go on serving chunks while the reply is held.
    fn handle(&mut self, msg: IndexDelta, ctx: &mut Self::Context) {
        let next = self.next.clone();
        let hold = msg.content_reply && self.replies.fetch_add(1, Ordering::SeqCst) == 1;
        let (dst, seen) = (self.dst.clone(), self.written_while_held.clone());
        // `wait`: later index messages stay behind the held one, in order.
        ctx.wait(
            async move {
                if hold {
                    let start = Instant::now();
                    while start.elapsed() < HOLD {
                        if any_file(&dst) {
                            seen.store(true, Ordering::SeqCst);
                            break;
                        }
                        // A condition wait bounded by HOLD; the sleep only spaces the checks.
                        actix_rt::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                if let Err(e) = next.send(msg).await {
                    eprintln!("the tap could not forward an index message: {e}");
                }
            }
            .into_actor(self),
        );
    }
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
    let replies = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    let (r, s, d) = (replies.clone(), seen.clone(), dst.path().to_owned());
    let taps = LinkTaps {
        to_target: Some(Box::new(move |link: TargetLink| {
            let tap = HoldSecondReply {
                next: link.index.clone(),
                dst: d,
                replies: r,
                written_while_held: s,
            }
            .start();
            TargetLink {
                index: tap.recipient(),
                ..link
            }
        })),
        to_sender: None,
    };
    let job = one_shot_job("pipelined", src.path(), dst.path());
    let report = run_sync_with(job, Arc::new(Stats::default()), taps)
        .await
        .expect("the sync succeeds");
    assert!(
        replies.load(Ordering::SeqCst) >= 2,
        "the content was asked for in one batch"
    );
    assert!(
        seen.load(Ordering::SeqCst),
        "no file was written while the second batch of chunk lists was held back"
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_mirror(src.path(), dst.path());
}
