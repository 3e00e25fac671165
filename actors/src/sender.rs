//! The Sender: forwards a source index to one target and serves the chunks that target asks for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::outline::{groups, outline, GroupId, OUTLINE_MIN_CHUNKS};
use ferry_engine::patch::ContentPatch;
use ferry_engine::prints::{ChunkPrint, PRINT_MIN};
use ferry_engine::{
    patch, ChunkId, ChunkRef, Content, ContentId, FileEntry, PrintedChunk, RelPath, Seq, SourceDir,
    SourceFile,
};

use crate::differ::Differ;
use crate::health::Role;
use crate::messages::{
    Applied, ApplyFailed, ChunkBody, ChunkData, ChunkFailure, ChunkList, ChunkPayload,
    ChunkRequest, Failed, FolderId, GetContent, GroupData, GroupList, HashFiles, IndexDelta,
    InlineFile, InlinePiece, ListForm, NeedChunks, NeedContent, NeedGroups, Resend, SourceUpdate,
};
use crate::pool::Pool;
use crate::stats::Stats;
use crate::wire::encoded_len;

/// Chunk reads served at once (each is a batch of requests).
const READ_JOBS: usize = 4;
/// A `ChunkData` message carries at most this many bytes.
const MAX_DATA_MESSAGE: usize = 4 << 20;
/// Files of at most this many bytes have their chunks sent with their entries when the
/// Applier asks for content inline ([`NeedContent::inline`]).
pub const INLINE_MAX: u64 = 1 << 20;
/// Inline content requests whose files' bytes are kept at once, at most.
const INLINE_BUSY: usize = 3;

/// The recipients through which a Sender reaches its target's Applier, whether it lives in
/// this process or behind a network link.
#[derive(Clone)]
pub struct TargetLink {
    /// Index entries.
    pub index: Recipient<IndexDelta>,
    /// Chunk data.
    pub chunks: Recipient<ChunkData>,
    /// Groups of outlined chunk lists.
    pub groups: Recipient<GroupData>,
}

/// Sends one source folder to one target.
pub struct Sender {
    folder: FolderId,
    source: SourceDir,
    differ: Option<Addr<Differ>>,
    target: Option<TargetLink>,
    on_applied: Recipient<Applied>,
    monitor: Recipient<Failed>,
    pool: Pool,
    stats: Arc<Stats>,
    /// For large files, the content the target's view of the source holds (with the
    /// sequence of that entry): what a patch may be made against.
    sent: HashMap<RelPath, (Seq, ContentId)>,
    /// The prints of the chunks sent inline to this target (each is sent inline once).
    inlined: HashSet<ChunkPrint>,
    /// Inline content requests being hashed.
    inline_busy: usize,
    /// The groups of the list last asked for by groups, for the next part of the same
    /// request (one list is held until another file's groups are asked for).
    group_cache: Arc<std::sync::Mutex<Option<Arc<GroupCache>>>>,
}

/// One file version's chunk list cut into its outline's groups, kept between the parts of
/// a group request (the Applier asks for a large list's groups a few hundred at a time):
/// each part is then served in proportion to its size, not to the file's.
struct GroupCache {
    path: RelPath,
    id: ContentId,
    chunks: Vec<ChunkRef>,
    /// Where each group lies in `chunks` (a group named many times: its first place).
    ranges: HashMap<GroupId, std::ops::Range<usize>>,
}

impl GroupCache {
    fn new(path: RelPath, content: Content) -> Self {
        let mut ranges = HashMap::new();
        for (r, id) in groups(&content.chunks) {
            ranges.entry(id).or_insert(r);
        }
        GroupCache {
            path,
            id: content.id,
            chunks: content.chunks,
            ranges,
        }
    }
}

/// Wires a Sender to its Differ and target once all three exist.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The Differ owning the source index.
    pub differ: Addr<Differ>,
    /// The target.
    pub target: TargetLink,
}

impl Sender {
    /// A Sender for `source`; `on_applied` hears every acknowledgement, `monitor` failures.
    pub fn new(
        folder: FolderId,
        source: SourceDir,
        on_applied: Recipient<Applied>,
        monitor: Recipient<Failed>,
        stats: Arc<Stats>,
    ) -> Self {
        Sender {
            folder,
            source,
            differ: None,
            target: None,
            on_applied,
            monitor,
            pool: Pool::new(READ_JOBS),
            stats,
            sent: HashMap::new(),
            inlined: HashSet::new(),
            inline_busy: 0,
            group_cache: Arc::default(),
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(actor = "sender", folder = %self.folder, "{reason}");
        self.monitor.do_send(Failed {
            actor: "sender",
            folder: self.folder.clone(),
            reason,
        });
    }

    /// Takes large files' chunk lists out of their entries and sends each as a patch against
    /// the version the target was last sent, or as an outline; records what the target's
    /// view now holds.
    fn compact(
        &mut self,
        entries: &mut [FileEntry],
        previous: &HashMap<RelPath, Content>,
    ) -> Vec<ChunkList> {
        let mut lists = Vec::new();
        for e in entries.iter_mut() {
            // The Applier keeps the newer of two entries for a path; so does this mirror of it.
            if self.sent.get(&e.path).is_some_and(|(seq, _)| *seq > e.seq) {
                continue;
            }
            let Some(c) = e
                .content
                .as_ref()
                .filter(|c| c.chunks.len() >= OUTLINE_MIN_CHUNKS)
            else {
                self.sent.remove(&e.path);
                continue;
            };
            let base = previous
                .get(&e.path)
                .filter(|p| self.sent.get(&e.path).is_some_and(|(_, id)| *id == p.id));
            let form = match base {
                Some(base) => smaller(patch::between(base, c), c),
                None => ListForm::Outline(outline(c)),
            };
            tracing::debug!(folder = %self.folder, path = %e.path, chunks = c.chunks.len(), patch = matches!(form, ListForm::Patch(_)), "chunk list sent compact");
            self.sent.insert(e.path.clone(), (e.seq, c.id));
            lists.push(ChunkList {
                path: e.path.clone(),
                id: c.id,
                form,
            });
            e.content = None;
        }
        lists
    }

    fn forward_index(
        &mut self,
        mut delta: IndexDelta,
        previous: &HashMap<RelPath, Content>,
        ctx: &mut Context<Self>,
    ) {
        let Some(target) = self.target.clone() else {
            return self.fail("index update before the target was connected".into());
        };
        if delta.snapshot {
            self.sent.clear();
        }
        delta.lists = self.compact(&mut delta.entries, previous);
        Stats::add(&self.stats.bytes_metadata, encoded_len(&delta));
        Stats::add(&self.stats.entries_sent, delta.entries.len() as u64);
        self.stats.actors.queued(Role::Target);
        // `wait` keeps index messages in order: nothing else is handled until this one is delivered.
        ctx.wait(
            async move { target.index.send(delta).await }
                .into_actor(self)
                .map(|r, act, _| {
                    if let Err(e) = r {
                        act.fail(format!("target is gone: {e}"));
                    }
                }),
        );
    }
}

impl Actor for Sender {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.stats.actor_started(&self.folder, "sender");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.actor_stopped(&self.folder, "sender");
    }
}

impl Handler<Connect> for Sender {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.differ = Some(msg.differ);
        self.target = Some(msg.target);
    }
}

impl Handler<SourceUpdate> for Sender {
    type Result = ();

    fn handle(&mut self, msg: SourceUpdate, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Sender);
        let delta = IndexDelta {
            folder: self.folder.clone(),
            snapshot: msg.snapshot,
            content_reply: false,
            entries: msg.entries,
            lists: Vec::new(),
            upto: msg.upto,
        };
        self.forward_index(delta, &msg.previous, ctx);
    }
}

impl Handler<Resend> for Sender {
    type Result = ();

    fn handle(&mut self, msg: Resend, _: &mut Self::Context) {
        let Some(differ) = self.differ.clone() else {
            return self.fail("resend request before the differ was connected".into());
        };
        // A reconnected target's Applier no longer holds what patches were made against,
        // nor the chunks sent inline.
        self.sent.clear();
        self.inlined.clear();
        differ.do_send(msg);
    }
}

impl Handler<NeedContent> for Sender {
    type Result = ();

    fn handle(&mut self, msg: NeedContent, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Sender);
        let Some(differ) = self.differ.clone() else {
            return self.fail("content request before the differ was connected".into());
        };
        let Some(target) = self.target.clone() else {
            return self.fail("content request before the target was connected".into());
        };
        // The bytes of a request's files are held until its reply is sent: a few requests
        // at once keep them (an honest Applier has no more out), the rest get chunk lists.
        let keep = if msg.inline && self.inline_busy < INLINE_BUSY {
            self.inline_busy += 1;
            INLINE_MAX
        } else {
            0
        };
        let hashed = differ.send(HashFiles {
            paths: msg.paths,
            keep,
        });
        // `spawn`, not `wait`: the Differ may itself be waiting to hand this Sender an
        // update, and the Applier keeps the newer of two entries for a path whatever the order.
        ctx.spawn(hashed.into_actor(self).map(move |res, act, ctx| {
            if keep > 0 {
                act.inline_busy -= 1;
            }
            let hashed = match res {
                Ok(Ok(hashed)) => hashed,
                Ok(Err(e)) => return act.fail(format!("hashing failed: {e}")),
                Err(e) => return act.fail(format!("differ is gone: {e}")),
            };
            // The reply's sequence covers the files sent whole too.
            let upto = hashed
                .entries
                .iter()
                .chain(hashed.kept.iter().map(|(e, _)| e))
                .map(|e| e.seq)
                .max()
                .unwrap_or_default();
            let files = act.inline_files(hashed.kept);
            let carried_by = |f: &InlineFile| {
                let pieces = f.pieces.iter();
                pieces
                    .map(|p| match p {
                        InlinePiece::New(body) => carried(body),
                        InlinePiece::Sent(_) => 0,
                    })
                    .sum()
            };
            let messages = in_messages(&act.folder, files, carried_by, |m, f| m.files.push(f));
            let (target, stats) = (target.clone(), act.stats.clone());
            // The files sent whole go before the reply's other entries, which end it: the
            // Applier has every file of the request once the reply ends.
            let sent = async move {
                for batch in messages {
                    deliver(&target, batch, &stats).await?;
                }
                Ok::<_, crate::Error>(())
            };
            let entries = hashed.entries;
            ctx.spawn(sent.into_actor(act).map(move |res, act, ctx| {
                if let Err(e) = res {
                    return act.fail(e.to_string());
                }
                let delta = IndexDelta {
                    folder: act.folder.clone(),
                    snapshot: false,
                    content_reply: true,
                    upto,
                    entries,
                    lists: Vec::new(),
                };
                act.forward_index(delta, &HashMap::new(), ctx);
            }));
        }));
    }
}

/// A patch encoded larger than this travels as an outline instead, when that is smaller.
/// A patch carries every chunk it inserts: one that rewrites gigabytes of a file would make
/// an index message too large for a frame, while an outline's groups are asked for in parts.
/// Below it the patch is kept, as it saves the round trip for groups.
const PATCH_MAX_BYTES: u64 = 4 << 20;

/// The patch, unless it is over [`PATCH_MAX_BYTES`] and the outline of `content` is smaller.
fn smaller(patch: ContentPatch, content: &Content) -> ListForm {
    let size = encoded_len(&patch);
    if size <= PATCH_MAX_BYTES {
        return ListForm::Patch(patch);
    }
    let outline = outline(content);
    if size <= encoded_len(&outline) {
        ListForm::Patch(patch)
    } else {
        ListForm::Outline(outline)
    }
}

impl Handler<NeedGroups> for Sender {
    type Result = ();

    fn handle(&mut self, msg: NeedGroups, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Sender);
        let (Some(differ), Some(target)) = (self.differ.clone(), self.target.clone()) else {
            return self.fail("group request before the pipeline was connected".into());
        };
        let folder = self.folder.clone();
        let stats = self.stats.clone();
        let cache = self.group_cache.clone();
        let work = async move {
            let cached = cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|c| c.path == msg.path && c.id == msg.id);
            let found = match cached {
                // The groups of that version, whether or not it is still current: they are
                // what the list with this id holds.
                Some(c) => Some(c),
                None => {
                    let current = differ
                        .send(GetContent {
                            path: msg.path.clone(),
                        })
                        .await
                        .map_err(|source| crate::Error::Mailbox {
                            actor: "differ",
                            error: source,
                        })?;
                    current.filter(|c| c.id == msg.id).map(|c| {
                        let c = Arc::new(GroupCache::new(msg.path.clone(), c));
                        *cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                        c
                    })
                }
            };
            let reply = match found {
                Some(c) => {
                    // Each once, though the list may hold it many times (runs of zeros).
                    let mut seen = HashSet::new();
                    GroupData {
                        folder,
                        path: msg.path,
                        id: msg.id,
                        groups: msg
                            .groups
                            .iter()
                            .filter(|id| seen.insert(**id))
                            .filter_map(|id| {
                                c.ranges.get(id).map(|r| GroupList {
                                    id: *id,
                                    chunks: c.chunks[r.clone()].to_vec(),
                                })
                            })
                            .collect(),
                        stale: false,
                    }
                }
                None => GroupData {
                    folder,
                    path: msg.path,
                    id: msg.id,
                    groups: Vec::new(),
                    stale: true,
                },
            };
            Stats::add(&stats.bytes_metadata, encoded_len(&reply));
            stats.actors.queued(Role::Target);
            target
                .groups
                .send(reply)
                .await
                .map_err(|source| crate::Error::Mailbox {
                    actor: "applier",
                    error: source,
                })
        };
        ctx.spawn(work.into_actor(self).map(|res, act, _| {
            if let Err(e) = res {
                act.fail(e.to_string());
            }
        }));
    }
}

impl Handler<NeedChunks> for Sender {
    type Result = ();

    fn handle(&mut self, msg: NeedChunks, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Sender);
        let Some(target) = self.target.clone() else {
            return self.fail("chunk request before the target was connected".into());
        };
        let source = self.source.clone();
        let pool = self.pool.clone();
        let folder = self.folder.clone();
        let stats = self.stats.clone();
        let work = async move {
            let batches = pool
                .run("read chunks", move || {
                    read_chunks(&source, &folder, msg.chunks)
                })
                .await?;
            for batch in batches {
                deliver(&target, batch, &stats).await?;
            }
            Ok::<_, crate::Error>(())
        };
        ctx.spawn(work.into_actor(self).map(|res, act, _| {
            if let Err(e) = res {
                act.fail(e.to_string());
            }
        }));
    }
}

/// Hands one message of chunk data to the target, counting what it carries.
async fn deliver(target: &TargetLink, batch: ChunkData, stats: &Stats) -> crate::Result<()> {
    let (mut data, mut chunks) = (0u64, 0u64);
    let pieces = batch.files.iter().flat_map(|f| &f.pieces);
    let bodies = batch
        .chunks
        .iter()
        .map(|c| &c.body)
        .chain(pieces.filter_map(|p| match p {
            InlinePiece::New(body) => Some(body),
            InlinePiece::Sent(_) => None,
        }));
    for body in bodies {
        if let ChunkBody::Bytes(d) = body {
            data += d.len() as u64;
            chunks += 1;
        }
    }
    let metadata = encoded_len(&batch).saturating_sub(data);
    // Files sent whole carry their entries.
    let files = batch.files.len() as u64;
    stats.actors.queued(Role::Target);
    target
        .chunks
        .send(batch)
        .await
        .map_err(|source| crate::Error::Mailbox {
            actor: "applier",
            error: source,
        })?;
    Stats::add(&stats.bytes_sent, data);
    Stats::add(&stats.chunks_sent, chunks);
    Stats::add(&stats.bytes_metadata, metadata);
    Stats::add(&stats.entries_sent, files);
    Ok(())
}

impl Sender {
    /// The files kept by a hash, each chunk's bytes sent once per session: a chunk whose
    /// print matches one sent inline before goes by its id, named now from its own bytes
    /// (the target then holds it, or asks for it; two chunks sharing a print by chance
    /// cost a request, never a wrong byte). What the target's view held for those paths
    /// is replaced by what it names.
    fn inline_files(&mut self, kept: Vec<(FileEntry, Vec<PrintedChunk>)>) -> Vec<InlineFile> {
        kept.into_iter()
            .map(|(entry, chunks)| {
                if self
                    .sent
                    .get(&entry.path)
                    .is_none_or(|(seq, _)| *seq <= entry.seq)
                {
                    self.sent.remove(&entry.path);
                }
                let pieces = chunks
                    .into_iter()
                    .map(|(print, bytes)| {
                        if self.inlined.insert(print) {
                            InlinePiece::New(ChunkBody::of(bytes))
                        } else {
                            InlinePiece::Sent(ChunkRef {
                                id: ChunkId::of(&bytes),
                                len: bytes.len() as u32,
                            })
                        }
                    })
                    .collect();
                InlineFile { entry, pieces }
            })
            .collect()
    }
}

/// `items` (chunks, or files sent whole, never split) in messages of at most about
/// [`MAX_DATA_MESSAGE`] bytes of data each: `bytes` says how many an item carries, `add`
/// puts it in a message.
fn in_messages<T>(
    folder: &FolderId,
    items: Vec<T>,
    bytes: impl Fn(&T) -> u64,
    add: impl Fn(&mut ChunkData, T),
) -> Vec<ChunkData> {
    let empty = || ChunkData {
        folder: folder.clone(),
        chunks: Vec::new(),
        failed: Vec::new(),
        files: Vec::new(),
    };
    let mut out = Vec::new();
    let (mut cur, mut held, mut any) = (empty(), 0u64, false);
    for item in items {
        held += bytes(&item);
        add(&mut cur, item);
        any = true;
        if held >= MAX_DATA_MESSAGE as u64 {
            out.push(std::mem::replace(&mut cur, empty()));
            (held, any) = (0, false);
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The bytes a chunk's body carries (none for a run of zeros).
fn carried(body: &ChunkBody) -> u64 {
    match body {
        ChunkBody::Bytes(d) => d.len() as u64,
        ChunkBody::Zeros(_) => 0,
    }
}

/// Reads the requested chunks, each checked to still be the chunk asked for (by its print
/// when one is kept, else by its id), into messages of bounded size.
fn read_chunks(
    source: &SourceDir,
    folder: &FolderId,
    requests: Vec<ChunkRequest>,
) -> Vec<ChunkData> {
    let mut open: HashMap<RelPath, Result<SourceFile, String>> = HashMap::new();
    let (mut chunks, mut failed) = (Vec::new(), Vec::new());
    for r in requests {
        let file = open
            .entry(r.path.clone())
            .or_insert_with(|| source.open(&r.path).map_err(|e| e.to_string()));
        let read = match file {
            // A request for more than a chunk can hold is not read (a remote Applier is
            // another node: its requests are input like any other).
            _ if r.len > source.params().max => Err(format!(
                "a chunk of {} bytes was asked for; chunks are at most {}",
                r.len,
                source.params().max
            )),
            // A large file's chunk is checked by the print made when it was hashed (if the
            // prints kept for the file have this chunk there) instead of being hashed again.
            Ok(f) => {
                let print = (r.len as usize >= PRINT_MIN)
                    .then(|| source.print_at(&r.path, r.offset, r.len, &r.id))
                    .flatten();
                f.read_chunk_printed(r.offset, r.len, &r.id, print)
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.clone()),
        };
        match read {
            Ok(data) => chunks.push(ChunkPayload {
                id: r.id,
                body: ChunkBody::of(data),
            }),
            Err(reason) => failed.push(ChunkFailure {
                id: r.id,
                path: r.path,
                reason,
            }),
        }
    }
    let mut out = in_messages(
        folder,
        chunks,
        |c| carried(&c.body),
        |m, c| m.chunks.push(c),
    );
    if !failed.is_empty() {
        match out.last_mut() {
            Some(last) => last.failed = failed,
            None => out.push(ChunkData {
                folder: folder.clone(),
                chunks: Vec::new(),
                failed,
                files: Vec::new(),
            }),
        }
    }
    out
}

impl Handler<Applied> for Sender {
    type Result = ();

    fn handle(&mut self, msg: Applied, _: &mut Self::Context) {
        self.stats.actors.handled(Role::Sender);
        tracing::debug!(actor = "sender", folder = %self.folder, seq = msg.seq.0, "target acknowledged");
        // A full plan was applied: the target holds content now and asks for no more chunks
        // inline. What was sent inline need not be remembered (its memory is freed).
        if !self.inlined.is_empty() {
            self.inlined = HashSet::new();
        }
        self.on_applied.do_send(msg);
    }
}

impl Handler<ApplyFailed> for Sender {
    type Result = ();

    fn handle(&mut self, msg: ApplyFailed, _: &mut Self::Context) {
        self.monitor.do_send(Failed {
            actor: "applier",
            folder: msg.folder,
            reason: msg.reason,
        });
    }
}

impl Handler<crate::messages::Stop> for Sender {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use ferry_engine::ChunkParams;

    use super::*;

    /// `n` distinct chunks of 32 KiB, numbered from `from`.
    fn content(from: u64, n: u64) -> Content {
        let chunks = (from..from + n)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                len: 32 << 10,
            })
            .collect();
        Content::from_chunks(&ChunkParams::default(), chunks)
    }

    #[test]
    fn a_small_edit_travels_as_a_patch_and_a_rewrite_as_an_outline() {
        let old = content(0, 200_000);
        // One chunk replaced in the middle: a patch of one chunk.
        let mut edited = old.chunks.clone();
        edited[100_000] = content(1 << 40, 1).chunks[0];
        let edited = Content::from_chunks(&ChunkParams::default(), edited);
        assert!(matches!(
            smaller(patch::between(&old, &edited), &edited),
            ListForm::Patch(_)
        ));
        // Every chunk new (~6 GiB rewritten): the patch would be ~9 MB, the outline ~0.1 MB.
        let rewritten = content(1 << 41, 200_000);
        let patch = patch::between(&old, &rewritten);
        assert!(encoded_len(&patch) > PATCH_MAX_BYTES);
        assert!(matches!(smaller(patch, &rewritten), ListForm::Outline(_)));
    }
}
