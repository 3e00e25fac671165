//! The Applier receiving chunk data: verified writes, chunks asked for again when corrupt,
//! files withdrawn when their source changed while they were sent, and files sent whole,
//! whose chunks it names itself.

use actix::prelude::*;
use ferry_engine::{ChunkId, ChunkParams, ChunkRef, Content, EntryKind, FileEntry, RelPath, Seq};

use crate::health::Role;
use crate::messages::{ChunkBody, ChunkData, ChunkRequest, InlineFile, InlinePiece};
use crate::stats::Stats;
use crate::transfer::{fail_slots, withdraw_slots, write_chunks, Check, Waiters};

use super::Applier;

/// A chunk that arrives corrupt is asked for again this many times before its files fail.
const CHUNK_RETRIES: u32 = 3;
/// A file whose source keeps changing while it is sent is tried this many times, then skipped.
const REFETCHES: u32 = 3;

impl Handler<ChunkData> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ChunkData, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Target);
        if !msg.files.is_empty() {
            self.receive_files(msg.files, ctx);
        }
        if msg.chunks.is_empty() && msg.failed.is_empty() {
            return;
        }
        let Some(x) = self.exec.as_mut() else {
            tracing::debug!(folder = %self.folder, "chunk data outside a transfer ignored");
            return;
        };
        let mut batch = Vec::new();
        // Received bytes stay counted as in flight until they are on disk, so a slow disk
        // holds back further requests instead of letting data pile up in memory.
        let mut held = 0u64;
        let mut wrong_length = Vec::new();
        for c in msg.chunks {
            let Some(waiters) = x.waiting.remove(&c.id) else {
                tracing::debug!(folder = %self.folder, "unrequested chunk {:?} ignored", c.id);
                continue;
            };
            // Checked before anything is allocated for it: the length is the sender's word.
            if c.body.len() != u64::from(waiters[0].1.chunk.len) {
                x.inflight = x.inflight.saturating_sub(u64::from(waiters[0].1.chunk.len));
                wrong_length.push((c.id, waiters));
                continue;
            }
            held += u64::from(waiters[0].1.chunk.len);
            batch.push((c.body, c.id, waiters));
        }
        let mut events = Vec::new();
        for f in msg.failed {
            if let Some(waiters) = x.waiting.remove(&f.id) {
                x.inflight = x.inflight.saturating_sub(u64::from(waiters[0].1.chunk.len));
                tracing::info!(folder = %self.folder, path = %f.path, "source changed while it was sent ({}); asking for it again", f.reason);
                // The files read from the failed path are withdrawn; others waiting for the
                // same chunk ask for it again from their own source file.
                let (failed, others): (Waiters, Waiters) = waiters
                    .into_iter()
                    .filter(|(slot, _)| !slot.is_finished())
                    .partition(|(slot, _)| slot.entry.path == f.path);
                events.extend(withdraw_slots(failed));
                if let Some((slot, task)) = others.first() {
                    x.requests.push_back(ChunkRequest {
                        id: f.id,
                        path: slot.entry.path.clone(),
                        offset: task.offset,
                        len: task.chunk.len,
                    });
                    x.waiting.insert(f.id, others);
                }
            }
        }
        self.on_events(events);
        for (id, waiters) in wrong_length {
            self.retry_chunk(id, waiters);
        }
        self.write(batch, held, Check::Verify, ctx);
        self.pump_files(ctx);
        self.check_done(ctx);
    }
}

impl Applier {
    /// Files sent whole ([`ChunkData::files`]): checked, their chunks named, kept for the
    /// plan while inline content is expected, and their entries taken as part of a content
    /// reply (whose end, which follows, must find them in).
    ///
    /// The naming runs here, on the actor's thread: a message holds about 4 MiB of them
    /// (about a millisecond of blake3; a frame at most 32 MiB). Named on the hashing pool
    /// with no other message handled meanwhile (`Context::wait`), the Applier sat idle
    /// while each job was handed over and back: the remote copy of the benchmark tree took
    /// 0.726 s instead of 0.693 s (medians of 10 alternating runs).
    fn receive_files(&mut self, files: Vec<InlineFile>, ctx: &mut Context<Self>) {
        let expected = self.stash.expects_inline();
        if !expected && self.opts.untrusted_sender {
            return self.fail("protocol error: files sent inline unasked".into());
        }
        if let Some(reason) = files.iter().find_map(|f| bad_inline(f, &self.opts.params)) {
            return self.fail(format!("protocol error: {reason}"));
        }
        let named = name_files(files, &self.opts.params);
        let (mut entries, bodies): (Vec<FileEntry>, Vec<_>) = named.into_iter().unzip();
        if let Err(reason) = self.check_entries(&mut entries) {
            return self.fail(format!("protocol error: {reason}"));
        }
        if expected {
            let exec = &self.exec;
            let requested =
                |id: &ChunkId| exec.as_ref().is_some_and(|x| x.waiting.contains_key(id));
            let dropped = self.stash.keep(bodies.into_iter().flatten(), requested);
            if dropped > 0 {
                tracing::debug!(folder = %self.folder, "{dropped} bytes sent inline dropped: too much kept already");
            }
        } else {
            tracing::debug!(folder = %self.folder, "chunks sent inline unasked not kept");
        }
        if let Err(reason) = self.take_entries(entries, true) {
            return self.fail(format!("protocol error: {reason}"));
        }
        self.dirty = true;
        self.try_plan(ctx);
    }
}

/// A file sent whole with its chunk list, and the bytes sent with their ids.
type NamedFile = (FileEntry, Vec<(ChunkId, ChunkBody)>);

/// Why a file sent whole cannot be right, if it cannot: it must be a present file with no
/// chunk list of its own, whose chunks are each within the chunker's bounds and add up to
/// its size.
fn bad_inline(f: &InlineFile, params: &ChunkParams) -> Option<String> {
    let e = &f.entry;
    if e.kind != EntryKind::File || !e.is_present() {
        return Some(format!(
            "{} is sent whole but is not a present file",
            e.path
        ));
    }
    if e.content.is_some() {
        return Some(format!("{} is sent whole with a chunk list", e.path));
    }
    if let Some(p) = f
        .pieces
        .iter()
        .find(|p| p.is_empty() || p.len() > u64::from(params.max))
    {
        return Some(format!("{}: a chunk of {} bytes", e.path, p.len()));
    }
    let total = f
        .pieces
        .iter()
        .fold(0u64, |sum, p| sum.saturating_add(p.len()));
    (total != e.size).then(|| {
        format!(
            "{}: chunks add up to {total} bytes, the entry says {}",
            e.path, e.size
        )
    })
}

/// Names the chunks of files sent whole (CPU work: blake3 over their bytes). Each entry gets its chunk list, and the
/// bytes sent come back with their ids (named here from the bytes themselves, so they
/// need no check when written).
fn name_files(files: Vec<InlineFile>, params: &ChunkParams) -> Vec<NamedFile> {
    files
        .into_iter()
        .map(|f| {
            let mut entry = f.entry;
            let mut chunks = Vec::with_capacity(f.pieces.len());
            let mut bodies = Vec::new();
            for piece in f.pieces {
                match piece {
                    InlinePiece::New(body) => {
                        let id = match &body {
                            ChunkBody::Bytes(data) => ChunkId::of(data),
                            ChunkBody::Zeros(n) => ChunkId::of(&vec![0u8; *n as usize]),
                        };
                        chunks.push(ChunkRef {
                            id,
                            len: body.len() as u32,
                        });
                        bodies.push((id, body));
                    }
                    InlinePiece::Sent(c) => chunks.push(c),
                }
            }
            entry.content = Some(Content::from_chunks(params, chunks));
            (entry, bodies)
        })
        .collect()
}

impl Applier {
    /// Verifies (as `check` says) and writes chunk data on the I/O pool; `held` bytes of it
    /// were counted in flight and are released once it is on disk.
    pub(super) fn write(
        &mut self,
        batch: Vec<(ChunkBody, ChunkId, Waiters)>,
        held: u64,
        check: Check,
        ctx: &mut Context<Self>,
    ) {
        if !batch.is_empty() {
            let Some(x) = self.exec.as_mut() else { return };
            x.jobs += 1;
            let ids: Vec<ChunkId> = batch.iter().map(|(_, id, _)| *id).collect();
            for id in &ids {
                *x.writing.entry(*id).or_default() += 1;
            }
            let pool = self.io.clone();
            let job = async move {
                pool.run("write chunks", move || write_chunks(batch, check))
                    .await
            };
            ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
                if let Some(x) = act.exec.as_mut() {
                    x.jobs -= 1;
                    x.inflight = x.inflight.saturating_sub(held);
                    for id in &ids {
                        if let Some(n) = x.writing.get_mut(id) {
                            *n -= 1;
                            if *n == 0 {
                                x.writing.remove(id);
                            }
                        }
                    }
                }
                match res {
                    Ok(outcome) => {
                        Stats::add(&act.stats.bytes_zero, outcome.zero_bytes);
                        for (id, body) in outcome.written {
                            act.written(id, body);
                        }
                        act.on_events(outcome.events);
                        for (id, mut waiters) in outcome.bad {
                            // Files parked on it wait for the same bytes: asked for together.
                            if let Some(x) = act.exec.as_mut() {
                                if x.parked.remove(&id) {
                                    waiters.extend(x.waiting.remove(&id).unwrap_or_default());
                                }
                            }
                            act.retry_chunk(id, waiters);
                        }
                        for id in &ids {
                            act.unpark(id);
                        }
                    }
                    Err(e) => act.fail(e.to_string()),
                }
                act.pump_files(ctx);
                act.check_done(ctx);
            }));
        }
    }

    /// A chunk was written: files parked on it get it next, else it is remembered.
    fn written(&mut self, id: ChunkId, body: ChunkBody) {
        if let Some(x) = self.exec.as_mut() {
            if x.parked.remove(&id) && x.waiting.contains_key(&id) {
                x.stashed.push((id, body));
                return;
            }
        }
        if self.opts.remote {
            self.stash.remember(id, body);
        }
    }

    /// Files parked on a chunk no job writes any more (none wrote it: the files it was
    /// for had ended) ask for it.
    fn unpark(&mut self, id: &ChunkId) {
        let Some(x) = self.exec.as_mut() else { return };
        if x.writing.contains_key(id) || !x.parked.remove(id) {
            return;
        }
        if let Some((slot, task)) = x.waiting.get(id).and_then(|w| w.first()) {
            x.requests.push_back(ChunkRequest {
                id: *id,
                path: slot.entry.path.clone(),
                offset: task.offset,
                len: task.chunk.len,
            });
        }
    }
}

impl Applier {
    /// A chunk arrived corrupt: ask again, up to a limit, then fail its files.
    pub(super) fn retry_chunk(&mut self, id: ChunkId, mut waiters: Waiters) {
        waiters.retain(|(slot, _)| !slot.is_finished());
        let Some(x) = self.exec.as_mut() else { return };
        if waiters.is_empty() {
            return;
        }
        if self.opts.untrusted_sender {
            return self.fail(format!(
                "protocol error: the data sent for chunk {id:?} of {} does not match its id",
                waiters[0].0.entry.path
            ));
        }
        let n = x.retries.entry(id).or_insert(0);
        *n += 1;
        tracing::warn!(folder = %self.folder, path = %waiters[0].0.entry.path, attempt = *n, "chunk failed verification, asking again");
        if *n > CHUNK_RETRIES {
            let events = fail_slots(waiters, "a chunk kept failing verification");
            return self.on_events(events);
        }
        let (slot, task) = &waiters[0];
        x.requests.push_back(ChunkRequest {
            id,
            path: slot.entry.path.clone(),
            offset: task.offset,
            len: task.chunk.len,
        });
        x.waiting.insert(id, waiters);
    }
}

impl Applier {
    /// Asks again for the content of a file whose source changed while it was sent, so the
    /// next plan fetches the version there now; after [`REFETCHES`] tries it is skipped.
    pub(super) fn refetch(&mut self, path: &RelPath, seq: Seq) {
        let n = self.refetches.entry(path.clone()).or_insert(0);
        *n += 1;
        if *n > REFETCHES {
            return self.skip(
                path,
                "the source file kept changing while it was sent".into(),
            );
        }
        // Only the version that failed is forgotten: a newer entry that arrived meanwhile
        // already carries the content to fetch.
        if let Some(e) = self.source.get_mut(path).filter(|e| e.seq == seq) {
            e.content = None;
        }
        self.asked.remove(path);
        self.dirty = true;
        self.changed_at(path);
        if let Some(x) = self.exec.as_mut() {
            x.withdrawn = true;
        }
    }
}

/// Why a received file entry's chunk list cannot be right, if it cannot: every chunk must
/// be within the chunker's maximum and the chunks must add up to the file's size.
pub(super) fn bad_content(e: &FileEntry, params: &ChunkParams) -> Option<String> {
    let c = e.content.as_ref()?;
    if let Some(bad) = c.chunks.iter().find(|c| c.len == 0 || c.len > params.max) {
        return Some(format!("{}: a chunk of {} bytes", e.path, bad.len));
    }
    (c.len() != e.size).then(|| {
        format!(
            "{}: chunks add up to {} bytes, the entry says {}",
            e.path,
            c.len(),
            e.size
        )
    })
}
