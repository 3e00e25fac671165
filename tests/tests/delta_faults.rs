//! Faults on the Sender ↔ Applier links of an in-process one-shot sync: a chunk whose bytes do
//! not match its id is rejected and fetched again, and a source file rewritten while its
//! chunks are being sent ends in DST as its new version, whole.
//!
//! The faults are injected by actors interposed on the links through `LinkTaps`; they forward
//! with `send` and answer only when the next hop has, so the Sender's backpressure holds.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use ferry_actors::applier::SenderLink;
use ferry_actors::messages::{ChunkBody, ChunkData, NeedChunks};
use ferry_actors::sender::TargetLink;
use ferry_actors::{run_sync_with, LinkTaps, Stats, SyncReport};

use crate::util::*;

/// Runs the job with `taps`, panicking if the run fails.
async fn run(src: &Path, dst: &Path, taps: LinkTaps) -> SyncReport {
    let stats = Arc::new(Stats::default());
    run_sync_with(one_shot_job("faults", src, dst), stats, taps)
        .await
        .unwrap_or_else(|e| panic!("the sync of {} failed: {e}", src.display()))
}

// ---------------------------------------------------------------------------------------------
// A corrupted chunk
// ---------------------------------------------------------------------------------------------

/// Forwards chunk data to the Applier, damaging the first chunk with bytes it sees with
/// `fault` and leaving everything else as it is.
struct Corrupter {
    next: Recipient<ChunkData>,
    corrupted: Arc<AtomicU64>,
    fault: fn(&mut ChunkBody),
}

/// Flips one byte in the middle.
fn flip_a_byte(body: &mut ChunkBody) {
    if let ChunkBody::Bytes(data) = body {
        let mid = data.len() / 2;
        data[mid] ^= 0x5A;
    }
}

/// Claims the chunk is 4 GiB of zeros: a lie the Applier must reject before allocating.
fn claim_huge_zeros(body: &mut ChunkBody) {
    *body = ChunkBody::Zeros(u32::MAX);
}

impl Actor for Corrupter {
    type Context = Context<Self>;
}

impl Handler<ChunkData> for Corrupter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, mut msg: ChunkData, _ctx: &mut Self::Context) -> Self::Result {
        if self.corrupted.load(Ordering::SeqCst) == 0 {
            // A run of zeros travels as a length and has no bytes to flip.
            let bytes = msg
                .chunks
                .iter_mut()
                .map(|p| &mut p.body)
                .find(|b| matches!(b, ChunkBody::Bytes(d) if !d.is_empty()));
            if let Some(body) = bytes {
                (self.fault)(body);
                self.corrupted.fetch_add(1, Ordering::SeqCst);
            }
        }
        let next = self.next.clone();
        Box::pin(async move {
            if let Err(e) = next.send(msg).await {
                eprintln!("the corrupter could not forward chunk data: {e}");
            }
        })
    }
}

#[actix_rt::test]
async fn a_corrupted_chunk_is_rejected_and_fetched_again() {
    damaged_chunk_is_fetched_again(flip_a_byte).await;
}

#[actix_rt::test]
async fn a_chunk_claiming_a_huge_zero_run_is_rejected_and_fetched_again() {
    damaged_chunk_is_fetched_again(claim_huge_zeros).await;
}

/// Damages one chunk on its way to the Applier with `fault`; the sync must still mirror.
async fn damaged_chunk_is_fetched_again(fault: fn(&mut ChunkBody)) {
    let src = tempdir();
    let dst = tempdir();
    write_file(
        &src.path().join("big.bin"),
        pseudo_random(6 * MIB as usize + 3, 501),
        0o644,
        time_n(1),
    );
    write_file(
        &src.path().join("dir/medium.bin"),
        pseudo_random(300 * KIB as usize, 502),
        0o600,
        time_n(2),
    );
    write_file(&src.path().join("small.txt"), "small\n", 0o644, time_n(3));

    let corrupted = Arc::new(AtomicU64::new(0));
    let count = corrupted.clone();
    let taps = LinkTaps {
        to_target: Some(Box::new(move |link: TargetLink| {
            let corrupter = Corrupter {
                next: link.chunks.clone(),
                corrupted: count,
                fault,
            }
            .start();
            TargetLink {
                chunks: corrupter.recipient(),
                ..link
            }
        })),
        to_sender: None,
    };
    let report = run(src.path(), dst.path(), taps).await;

    assert_eq!(
        corrupted.load(Ordering::SeqCst),
        1,
        "the corrupter should have damaged exactly one chunk"
    );
    assert!(
        report.skipped.is_empty(),
        "a damaged chunk should be fetched again, not make its file skipped: {:?}",
        report.skipped
    );
    assert_mirror(src.path(), dst.path());
}

// ---------------------------------------------------------------------------------------------
// A source file rewritten while it is being sent
// ---------------------------------------------------------------------------------------------

/// Forwards chunk requests to the Sender; before the first one, rewrites the source file.
struct RewriteOnFirstRequest {
    next: Recipient<NeedChunks>,
    path: std::path::PathBuf,
    v2: Arc<Vec<u8>>,
    rewrites: Arc<AtomicU64>,
}

impl Actor for RewriteOnFirstRequest {
    type Context = Context<Self>;
}

impl Handler<NeedChunks> for RewriteOnFirstRequest {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: NeedChunks, _ctx: &mut Self::Context) -> Self::Result {
        if self.rewrites.load(Ordering::SeqCst) == 0 {
            // Done on the actor's thread on purpose: the request is forwarded only once the
            // file holds v2, so every chunk read for it finds the new bytes.
            write_file(&self.path, self.v2.as_slice(), 0o644, time_n(2));
            self.rewrites.fetch_add(1, Ordering::SeqCst);
        }
        let next = self.next.clone();
        Box::pin(async move {
            if let Err(e) = next.send(msg).await {
                eprintln!("the rewriter could not forward a chunk request: {e}");
            }
        })
    }
}

#[actix_rt::test]
async fn a_source_file_rewritten_during_the_transfer_lands_as_its_new_version() {
    let src = tempdir();
    let dst = tempdir();
    let len = 8 * MIB as usize;
    let path = src.path().join("moving.bin");
    let v1 = pseudo_random(len, 601);
    let v2 = Arc::new(pseudo_random(len, 602));
    write_file(&path, &v1, 0o644, time_n(1));
    write_file(
        &src.path().join("still.txt"),
        "unchanged\n",
        0o644,
        time_n(3),
    );

    let rewrites = Arc::new(AtomicU64::new(0));
    let (count, v2_for_tap, path_for_tap) = (rewrites.clone(), v2.clone(), path.clone());
    let taps = LinkTaps {
        to_target: None,
        to_sender: Some(Box::new(move |link: SenderLink| {
            let rewriter = RewriteOnFirstRequest {
                next: link.need_chunks.clone(),
                path: path_for_tap,
                v2: v2_for_tap,
                rewrites: count,
            }
            .start();
            SenderLink {
                need_chunks: rewriter.recipient(),
                ..link
            }
        })),
    };
    let report = run(src.path(), dst.path(), taps).await;

    assert_eq!(
        rewrites.load(Ordering::SeqCst),
        1,
        "the source file should have been rewritten once, before the first chunk request"
    );
    assert!(
        report.skipped.is_empty(),
        "a file rewritten during the transfer should be hashed again and sent, not skipped: {:?}",
        report.skipped
    );
    let landed = fs::read(dst.path().join("moving.bin")).expect("read DST/moving.bin");
    assert!(
        landed == *v2,
        "DST/moving.bin is not the new version: {} of its {} bytes match v2, {} match v1 \
         (a mix of versions, or the old one)",
        landed.iter().zip(v2.iter()).filter(|(a, b)| a == b).count(),
        landed.len(),
        landed.iter().zip(v1.iter()).filter(|(a, b)| a == b).count(),
    );
    assert_mirror(src.path(), dst.path());
}
