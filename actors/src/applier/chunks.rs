//! The Applier receiving chunk data: verified writes, chunks asked for again when corrupt,
//! and files withdrawn when their source changed while they were sent.

use actix::prelude::*;
use ferry_engine::{ChunkId, ChunkParams, FileEntry, RelPath, Seq};

use crate::health::Role;
use crate::messages::{ChunkBody, ChunkData, ChunkRequest};
use crate::stats::Stats;
use crate::transfer::{fail_slots, withdraw_slots, write_chunks, Waiters};

use super::Applier;

/// A chunk that arrives corrupt is asked for again this many times before its files fail.
const CHUNK_RETRIES: u32 = 3;
/// A file whose source keeps changing while it is sent is tried this many times, then skipped.
const REFETCHES: u32 = 3;

impl Handler<ChunkData> for Applier {
    type Result = ();

    fn handle(&mut self, msg: ChunkData, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Target);
        if msg.inline {
            if !self.stash.expects_inline() {
                if self.opts.untrusted_sender {
                    return self.fail("protocol error: chunks sent inline unasked".into());
                }
                tracing::debug!(folder = %self.folder, "chunks sent inline unasked ignored");
                return;
            }
            let requested = |id: &ChunkId| {
                self.exec
                    .as_ref()
                    .is_some_and(|x| x.waiting.contains_key(id))
            };
            let max = self.opts.params.max;
            let dropped = self.stash.keep(msg.chunks, max, requested);
            if dropped > 0 {
                tracing::debug!(folder = %self.folder, "{dropped} bytes sent inline dropped: too much kept already");
            }
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
        self.write(batch, held, ctx);
        self.pump_files(ctx);
        self.check_done(ctx);
    }
}

impl Applier {
    /// Verifies and writes chunk data on the I/O pool; `held` bytes of it were counted in
    /// flight and are released once it is on disk.
    pub(super) fn write(
        &mut self,
        batch: Vec<(ChunkBody, ChunkId, Waiters)>,
        held: u64,
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
            let job = async move { pool.run("write chunks", move || write_chunks(batch)).await };
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
