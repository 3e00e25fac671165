//! Inline content: a target that holds no file content asks for small files' chunks along
//! with their chunk lists, so the Sender reads each small file once and the Applier asks
//! for no chunk of it; each chunk still travels once, and a target that holds content is
//! never sent a chunk it did not ask for.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use ferry_actors::applier::SenderLink;
use ferry_actors::messages::{ChunkData, InlinePiece, NeedChunks, NeedContent};
use ferry_actors::sender::TargetLink;
use ferry_actors::{run_sync_with, LinkTaps, Stats};

use crate::util::*;

/// Files in the trees: more than one batch of content requests (1,024 files).
const FILES: usize = 1_500;

/// Sees each message on its way, then forwards it in order.
struct Tap<M: Message<Result = ()> + Send> {
    next: Recipient<M>,
    see: Box<dyn Fn(&M)>,
}

impl<M: Message<Result = ()> + Send + 'static> Actor for Tap<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for Tap<M> {
    type Result = ();

    fn handle(&mut self, msg: M, ctx: &mut Self::Context) {
        (self.see)(&msg);
        let next = self.next.clone();
        // `wait`: messages stay in order.
        ctx.wait(
            async move {
                if let Err(e) = next.send(msg).await {
                    eprintln!("the tap could not forward a message: {e}");
                }
            }
            .into_actor(self),
        );
    }
}

fn tap<M: Message<Result = ()> + Send + 'static>(
    next: Recipient<M>,
    see: impl Fn(&M) + 'static,
) -> Recipient<M> {
    Tap {
        next,
        see: Box::new(see),
    }
    .start()
    .recipient()
}

/// What crossed the links in one sync.
#[derive(Default)]
struct Seen {
    /// `inline` of every content request.
    content_inline: Mutex<Vec<bool>>,
    /// The path of every chunk asked for.
    chunk_paths: Mutex<Vec<String>>,
    /// Messages of files sent whole, unasked.
    inline_messages: AtomicU64,
    /// Chunks of files sent whole that went by their ids (sent before).
    inline_refs: AtomicU64,
}

/// Syncs `src` to `dst` in-process with inline content asked for as a remote target does,
/// recording what crossed the links.
async fn run(src: &std::path::Path, dst: &std::path::Path) -> (Arc<Seen>, Arc<Stats>) {
    run_with(src, dst, true).await
}

async fn run_with(
    src: &std::path::Path,
    dst: &std::path::Path,
    inline: bool,
) -> (Arc<Seen>, Arc<Stats>) {
    let seen = Arc::new(Seen::default());
    let (s1, s2) = (seen.clone(), seen.clone());
    let taps = LinkTaps {
        to_sender: Some(Box::new(move |link: SenderLink| {
            let (a, b) = (s1.clone(), s1);
            SenderLink {
                need_content: tap(link.need_content.clone(), move |m: &NeedContent| {
                    a.content_inline.lock().unwrap().push(m.inline);
                }),
                need_chunks: tap(link.need_chunks.clone(), move |m: &NeedChunks| {
                    let mut paths = b.chunk_paths.lock().unwrap();
                    paths.extend(m.chunks.iter().map(|c| c.path.to_string()));
                }),
                ..link
            }
        })),
        to_target: Some(Box::new(move |link: TargetLink| TargetLink {
            chunks: tap(link.chunks.clone(), move |m: &ChunkData| {
                if !m.files.is_empty() {
                    s2.inline_messages.fetch_add(1, Ordering::SeqCst);
                }
                let refs = m.files.iter().flat_map(|f| &f.pieces);
                let refs = refs.filter(|p| matches!(p, InlinePiece::Sent(_))).count();
                s2.inline_refs.fetch_add(refs as u64, Ordering::SeqCst);
            }),
            ..link
        })),
    };
    let stats = Arc::new(Stats::default());
    let job = ferry_actors::SyncJob {
        remote: inline,
        ..one_shot_job("inline", src, dst)
    };
    let report = run_sync_with(job, stats.clone(), taps)
        .await
        .expect("the sync succeeds");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    (seen, stats)
}

#[actix_rt::test]
async fn an_initial_sync_into_an_empty_target_asks_for_no_chunk_of_a_small_file() {
    let src = tempdir();
    let dst = tempdir();
    let mut total = 0u64;
    for i in 0..FILES {
        let body = pseudo_random(100 + i * 7, i as u64);
        total += body.len() as u64;
        write(&src.path().join(format!("d{}/f{i}.bin", i % 10)), body);
    }
    // Above the inline limit (1 MiB): asked for chunk by chunk as usual.
    let big = pseudo_random(3 << 20, 9_999);
    total += big.len() as u64;
    write(&src.path().join("big.bin"), big);

    let (seen, stats) = run(src.path(), dst.path()).await;

    assert_mirror(src.path(), dst.path());
    let inline = seen.content_inline.lock().unwrap();
    assert!(inline.len() >= 2, "one content request for {FILES} files");
    assert!(
        inline.iter().all(|&i| i),
        "content asked for without chunks: {inline:?}"
    );
    assert!(seen.inline_messages.load(Ordering::SeqCst) > 0);
    let asked: HashSet<String> = seen.chunk_paths.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        asked,
        HashSet::from(["big.bin".to_string()]),
        "only the large file's chunks are asked for"
    );
    assert_eq!(
        stats.bytes_sent.load(Ordering::SeqCst),
        total,
        "every byte sent once"
    );
    // Each file's entry went twice: in the snapshot, and with its content (sent whole).
    let entries = stats.entries_sent.load(Ordering::SeqCst);
    assert!(entries >= 2 * FILES as u64, "{entries} entries counted");
}

#[actix_rt::test]
async fn a_chunk_in_many_small_files_travels_once() {
    let src = tempdir();
    let dst = tempdir();
    // Files i and i + 700 are the same: the copies fall in later batches than the first.
    let mut unique = 0u64;
    for i in 0..FILES {
        let body = pseudo_random(2_000 + (i % 700) * 3, (i % 700) as u64);
        if i < 700 {
            unique += body.len() as u64;
        }
        write(&src.path().join(format!("f{i:04}.bin")), body);
    }

    let (seen, stats) = run(src.path(), dst.path()).await;

    assert_mirror(src.path(), dst.path());
    assert_eq!(
        stats.bytes_sent.load(Ordering::SeqCst),
        unique,
        "a chunk was sent more than once"
    );
    let refs = seen.inline_refs.load(Ordering::SeqCst);
    assert!(
        refs > 0,
        "no copy went by its id: the files were all asked for, none sent whole"
    );
}

#[actix_rt::test]
async fn a_target_holding_content_is_sent_no_chunk_unasked() {
    let src = tempdir();
    let dst = tempdir();
    for i in 0..50 {
        write(
            &src.path().join(format!("f{i}.txt")),
            format!("source file {i}\n"),
        );
    }
    // Empty files too: a file of no bytes is at most any size kept, yet not asked for whole.
    for i in 0..5 {
        write(&src.path().join(format!("empty{i}")), "");
    }
    write(
        &dst.path().join("old.txt"),
        "stale content the source lacks\n",
    );

    let (seen, _) = run(src.path(), dst.path()).await;

    assert_mirror(src.path(), dst.path());
    let inline = seen.content_inline.lock().unwrap();
    assert!(!inline.is_empty());
    assert!(
        inline.iter().all(|&i| !i),
        "asked for chunks inline: {inline:?}"
    );
    assert_eq!(seen.inline_messages.load(Ordering::SeqCst), 0);
    assert_eq!(seen.chunk_paths.lock().unwrap().len(), 50);
}

#[actix_rt::test]
async fn an_initial_sync_into_a_target_holding_only_a_stray_directory_finishes() {
    // More than the stash keeps before it asks for no more chunks inline (16 MiB), and a
    // target entry the source lacks: partial plans would remove it, so none runs before
    // all content is in, and the chunks kept must not hold the remaining content back.
    let src = tempdir();
    let dst = tempdir();
    // Four batches of content requests (1,024 files each): three are out at once, and
    // their chunks (24 MiB each) pass the 16 MiB mark before the fourth may go.
    for i in 0..3_300 {
        write(
            &src.path().join(format!("d{}/f{i}.bin", i % 16)),
            pseudo_random(24 << 10, 50_000 + i as u64),
        );
    }
    mkdir(&dst.path().join("stray"));

    let sync = run(src.path(), dst.path());
    let (seen, _) = actix_rt::time::timeout(std::time::Duration::from_secs(60), sync)
        .await
        .expect("the sync finishes");

    assert_mirror(src.path(), dst.path());
    assert!(!dst.path().join("stray").exists());
    let inline = seen.content_inline.lock().unwrap();
    assert!(inline.iter().any(|&i| i), "content was asked for inline");
}

#[actix_rt::test]
async fn a_local_target_is_not_asked_for_inline_content() {
    // Reading a local file twice is cheap; the memory inline content takes is not.
    let src = tempdir();
    let dst = tempdir();
    for i in 0..20 {
        write(&src.path().join(format!("f{i}.txt")), format!("file {i}\n"));
    }

    let (seen, _) = run_with(src.path(), dst.path(), false).await;

    assert_mirror(src.path(), dst.path());
    let inline = seen.content_inline.lock().unwrap();
    assert!(
        !inline.is_empty() && inline.iter().all(|&i| !i),
        "{inline:?}"
    );
    assert_eq!(seen.inline_messages.load(Ordering::SeqCst), 0);
    assert_eq!(seen.chunk_paths.lock().unwrap().len(), 20);
}
