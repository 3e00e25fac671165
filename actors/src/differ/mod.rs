//! The Differ: owns a source folder's index, scans it, and hashes files on request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::Content;
use ferry_engine::{EntryState, FileEntry, Index, RelPath, ScanOptions, Seq, SourceDir, StatKey};

use crate::changing::StillChanging;
use crate::health::Role;
use crate::messages::{CurrentSeq, Failed, FolderId, GetContent, Resend, SourceUpdate, Start};
use crate::persist::{IndexWrite, Persister, SavedIndex, SourceStore, SEQ_BLOCK};
use crate::pool::Pool;
use crate::stats::Stats;

mod hashing;
mod rescan;

use rescan::{Changing, Rescanned};

/// Tombstones always kept (see [`Differ::compact`]): a target away for fewer removals than
/// this is sent only what changed when it comes back.
const TOMBSTONES_KEPT: usize = 4096;

/// What the Differ sends once its first scan is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstSend {
    /// A snapshot of the whole index (a target that starts from nothing: a local Applier).
    Snapshot,
    /// Nothing until the target states what it holds with a `Resend` (a remote target that
    /// may resume).
    OnResend,
}

/// Owns the source index of one folder.
pub struct Differ {
    folder: FolderId,
    source: SourceDir,
    scan: ScanOptions,
    index: Option<Index>,
    seq: Seq,
    /// The last sequence this run may use (see [`crate::persist`]).
    reserved: Seq,
    /// A target that acknowledged less than this is sent a snapshot, not a delta.
    history_from: Seq,
    /// Tombstones in the index (see [`Differ::compact`]).
    tombstones: usize,
    first: FirstSend,
    /// A resend asked for before the first scan was done.
    early_resend: Option<Seq>,
    store: Option<Arc<dyn SourceStore>>,
    persister: Option<Persister>,
    /// The saved index was completed for a clean stop: nothing more is recorded.
    finished: bool,
    /// Files live rescans left alone because they changed while hashed.
    still_changing: StillChanging,
    /// Those to look at again once [`RECHECK_AFTER`](rescan::RECHECK_AFTER) has passed, each
    /// with whether it is read again whatever its stat says (a recheck is pending while
    /// this is `Some`).
    recheck: Option<BTreeMap<RelPath, bool>>,
    sender: Recipient<SourceUpdate>,
    monitor: Recipient<Failed>,
    /// Hashing requested by the Sender (run alongside other messages).
    pool: Pool,
    /// Scans and rescans, which the Differ waits for with its mailbox paused: a pool of their
    /// own, because a hashing job queued on `pool` holds its permit until this actor polls it
    /// again, which it does not do while it waits, so sharing one pool can deadlock.
    scan_pool: Pool,
    stats: Arc<Stats>,
}

/// What the first scan found: a fresh index, or changes to the saved one.
enum FirstScan {
    Fresh(ferry_engine::ScanOutcome),
    Resumed {
        index: Index,
        history_from: Seq,
        found: Rescanned,
    },
}

impl Differ {
    /// A Differ for `source`, reporting to `sender` and failures to `monitor`.
    pub fn new(
        folder: FolderId,
        source: SourceDir,
        scan: ScanOptions,
        sender: Recipient<SourceUpdate>,
        monitor: Recipient<Failed>,
        stats: Arc<Stats>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Differ {
            folder,
            source,
            scan,
            index: None,
            seq: Seq::default(),
            reserved: Seq(u64::MAX),
            history_from: Seq(1),
            tombstones: 0,
            first: FirstSend::Snapshot,
            early_resend: None,
            store: None,
            persister: None,
            finished: false,
            still_changing: StillChanging::default(),
            recheck: None,
            sender,
            monitor,
            pool: Pool::new(cores),
            scan_pool: Pool::new(1),
            stats,
        }
    }

    /// Sends nothing until a `Resend` says what the target holds.
    pub fn first_send(mut self, first: FirstSend) -> Self {
        self.first = first;
        self
    }

    /// Keeps the index in `store` between runs.
    pub fn store(mut self, store: Arc<dyn SourceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The next sequence number, within this run's reserved block.
    fn next_seq(&mut self) -> Seq {
        if self.seq >= self.reserved {
            // Four billion changes in one run: the block is used up. A restart reserves anew.
            self.fail("sequence block used up; restarting to reserve another".into());
            return self.seq;
        }
        self.seq = self.seq.next();
        self.seq
    }

    /// Queues entries to be saved, if the index is kept.
    fn save(&self, upserts: Vec<(FileEntry, Option<StatKey>)>, full: bool) {
        if let Some(p) = &self.persister {
            p.save(IndexWrite {
                upserts,
                full,
                ..IndexWrite::default()
            });
        }
    }

    /// Every entry but tombstones: a snapshot needs none, as a target removes whatever it
    /// does not list. (Unreadable entries are listed: they keep the target's copy.)
    fn snapshot(&self) -> Vec<FileEntry> {
        self.index
            .iter()
            .flat_map(|i| i.iter().filter(|e| e.state != EntryState::Deleted).cloned())
            .collect()
    }

    /// Forgets the oldest tombstones once they outnumber what is kept, so an index under
    /// endless churn stays the size of the folder: memory and the saved index stay flat.
    ///
    /// The newest `max(TOMBSTONES_KEPT, present / 4)` are kept; compaction runs when there
    /// are twice that (so its cost, one pass over the index, is paid once per that many
    /// removals). `history_from` moves past the forgotten ones: a target that acknowledged
    /// less is sent a snapshot (metadata only; nothing it holds is sent again).
    fn compact(&mut self) {
        let Some(index) = self.index.as_mut() else {
            return;
        };
        let keep = TOMBSTONES_KEPT.max(index.len().saturating_sub(self.tombstones) / 4);
        if self.tombstones <= 2 * keep {
            return;
        }
        let Some((cut, doomed)) = index.forget_tombstones(keep) else {
            // Fewer than counted (a tombstone replaced in a way not seen here): recount.
            self.tombstones = index
                .iter()
                .filter(|e| e.state == EntryState::Deleted)
                .count();
            return;
        };
        self.tombstones = keep;
        self.history_from = self.history_from.max(cut.next());
        tracing::info!(folder = %self.folder, forgotten = doomed.len(), kept = self.tombstones, history_from = self.history_from.0, "oldest removals forgotten; a target that acknowledged less is sent a full index");
        if let Some(p) = &self.persister {
            p.save(IndexWrite {
                removed: doomed,
                history_from: Some(self.history_from),
                ..IndexWrite::default()
            });
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(actor = "differ", folder = %self.folder, "{reason}");
        self.monitor.do_send(Failed {
            actor: "differ",
            folder: self.folder.clone(),
            reason,
        });
    }
}

impl Actor for Differ {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.stats.actor_started(&self.folder, "differ");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.actor_stopped(&self.folder, "differ");
    }
}

impl Handler<Start> for Differ {
    type Result = ();

    fn handle(&mut self, _: Start, ctx: &mut Self::Context) {
        let source = self.source.clone();
        let opts = self.scan.clone();
        let pool = self.scan_pool.clone();
        let store = self.store.clone();
        let folder = self.folder.clone();
        let scan = async move {
            pool.run("scan source", move || {
                first_scan(&source, opts, store.as_deref(), &folder)
            })
            .await
        };
        ctx.wait(scan.into_actor(self).map(|res, act, ctx| {
            let (first, reserved) = match res {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => return act.fail(format!("cannot scan source: {e}")),
                Err(e) => return act.fail(e.to_string()),
            };
            act.seq = reserved;
            act.reserved = Seq(reserved.0.saturating_add(SEQ_BLOCK));
            if let Some(store) = &act.store {
                match Persister::new(store.clone(), act.folder.to_string()) {
                    Ok(p) => act.persister = Some(p),
                    Err(e) => return act.fail(format!("cannot start the index writer: {e}")),
                }
            }
            match first {
                FirstScan::Fresh(outcome) => act.first_fresh(outcome),
                FirstScan::Resumed {
                    index,
                    history_from,
                    found,
                } => act.first_resumed(index, history_from, found),
            }
            if act.first == FirstSend::Snapshot {
                let entries = act.snapshot();
                act.send_update(true, entries, HashMap::new(), ctx);
            }
            if let Some(after) = act.early_resend.take() {
                act.resend(after, ctx);
            }
        }));
    }
}

/// Blocking: the first scan. With a saved index (of the same chunker parameters), rescans
/// against it so unchanged files keep their content and sequence; otherwise scans afresh.
/// Then reserves this run's block of sequences. Returns the scan and where the block starts.
fn first_scan(
    source: &SourceDir,
    opts: ScanOptions,
    store: Option<&dyn SourceStore>,
    folder: &FolderId,
) -> ferry_engine::Result<(FirstScan, Seq)> {
    let store_err = |what: &str, e: String| {
        ferry_engine::Error::io(
            "use the saved index",
            source.root(),
            std::io::Error::other(format!("{what}: {e}")),
        )
    };
    let params = opts.params;
    let saved = match store {
        Some(store) => store
            .load(&params)
            .map_err(|e| store_err("cannot read it", e))?,
        None => SavedIndex::default(),
    };
    let reserved = saved.reserved;
    let (first, history_from) = match saved.index {
        Some((index, history_from)) => {
            tracing::info!(folder = %folder, entries = index.len(), "resuming from the saved index");
            let found = rescan::rescan(
                source,
                opts.clone(),
                &index,
                None,
                &BTreeSet::new(),
                Changing::Retry,
            )?;
            (
                FirstScan::Resumed {
                    index,
                    history_from,
                    found,
                },
                history_from,
            )
        }
        None => (
            FirstScan::Fresh(ferry_engine::scan(source.root(), opts)?),
            Seq(reserved.0 + 1),
        ),
    };
    if let Some(store) = store {
        store
            .reserve(
                &params,
                Seq(reserved.0.saturating_add(SEQ_BLOCK)),
                history_from,
            )
            .map_err(|e| store_err("cannot reserve sequence numbers", e))?;
    }
    Ok((first, reserved))
}

impl Differ {
    /// Numbers a fresh scan's entries and keeps it as the index.
    fn first_fresh(&mut self, outcome: ferry_engine::ScanOutcome) {
        for s in &outcome.skipped {
            tracing::warn!(folder = %self.folder, path = %s.path.display(), "skipped: {}", s.reason);
        }
        let gaps = outcome.skipped.iter().filter(|s| s.kind.is_gap()).count();
        Stats::add(&self.stats.skipped, gaps as u64);
        Stats::add(&self.stats.entries_scanned, outcome.index.len() as u64);
        self.history_from = self.seq.next();
        let mut index = outcome.index;
        for e in index.iter_mut() {
            self.seq = self.seq.next();
            e.seq = self.seq;
        }
        if self.persister.is_some() {
            let all: Vec<_> = index
                .iter()
                .map(|e| (e.clone(), index.stat(&e.path).copied()))
                .collect();
            self.save(all, true);
        }
        self.index = Some(index);
    }

    /// Takes the saved index back and records what changed while this folder was not watched.
    fn first_resumed(&mut self, index: Index, history_from: Seq, found: Rescanned) {
        for s in &found.skipped {
            tracing::warn!(folder = %self.folder, path = %s.path.display(), "skipped: {}", s.reason);
        }
        for (p, why) in &found.unreadable {
            tracing::warn!(folder = %self.folder, path = %p, "skipped: {why}");
        }
        Stats::add(&self.stats.skipped, found.unreadable.len() as u64);
        Stats::add(&self.stats.bytes_hashed, found.hashed);
        Stats::add(&self.stats.entries_scanned, index.len() as u64);
        self.history_from = history_from;
        self.tombstones = index
            .iter()
            .filter(|e| e.state == EntryState::Deleted)
            .count();
        self.index = Some(index);
        let changed = found.changes.len();
        // The previous contents are of no use to a target that is yet to say what it holds.
        let _ = self.record_changes(found.changes);
        tracing::info!(folder = %self.folder, changed, "saved index brought up to date");
    }

    /// Hands an update to the Sender, in order with everything sent before.
    fn send_update(
        &mut self,
        snapshot: bool,
        entries: Vec<FileEntry>,
        previous: HashMap<RelPath, Content>,
        ctx: &mut Context<Self>,
    ) {
        let update = SourceUpdate {
            snapshot,
            entries,
            previous,
            upto: self.seq,
        };
        self.stats
            .source_seq
            .fetch_max(self.seq.0, std::sync::atomic::Ordering::Relaxed);
        self.stats.actors.queued(Role::Sender);
        let sender = self.sender.clone();
        ctx.wait(
            async move { sender.send(update).await }
                .into_actor(self)
                .map(|r, act, _| {
                    if let Err(e) = r {
                        act.fail(format!("sender is gone: {e}"));
                    }
                }),
        );
    }
}

impl Handler<GetContent> for Differ {
    type Result = Option<Content>;

    fn handle(&mut self, msg: GetContent, _: &mut Self::Context) -> Self::Result {
        let e = self.index.as_ref()?.get(&msg.path)?;
        e.content.clone().filter(|_| e.is_present())
    }
}

impl Handler<Resend> for Differ {
    type Result = ();

    /// Sends the target every entry newer than what it holds: after a reconnect, the link
    /// may have lost any update sent since.
    fn handle(&mut self, msg: Resend, ctx: &mut Self::Context) {
        if self.index.is_none() {
            // Still in the first scan: answered when it is done.
            self.early_resend = Some(msg.after);
            return;
        }
        self.resend(msg.after, ctx);
    }
}

impl Differ {
    /// Sends the entries newer than `after`, or a snapshot when the index's history does
    /// not reach back to `after` (a target that knows nothing, or knew an older run's index).
    fn resend(&mut self, after: Seq, ctx: &mut Context<Self>) {
        let Some(index) = &self.index else { return };
        let snapshot = after < self.history_from || after > self.seq;
        let entries: Vec<FileEntry> = if snapshot {
            self.snapshot()
        } else {
            index.iter().filter(|e| e.seq > after).cloned().collect()
        };
        tracing::info!(folder = %self.folder, after = after.0, entries = entries.len(), snapshot, "sending what the target lacks");
        self.send_update(snapshot, entries, HashMap::new(), ctx);
    }
}

/// → Differ: save everything recorded and mark the saved index complete (a clean stop);
/// answered once it is on disk. Nothing is recorded after it.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct FinishSaving;

impl Handler<FinishSaving> for Differ {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FinishSaving, _: &mut Self::Context) -> Self::Result {
        self.finished = true;
        let Some(persister) = self.persister.take() else {
            return Box::pin(actix::fut::ready(()));
        };
        let pool = self.pool.clone();
        let folder = self.folder.clone();
        Box::pin(
            async move {
                match pool.run("save the index", move || persister.finish()).await {
                    Ok(Ok(())) => tracing::debug!(folder = %folder, "index saved"),
                    Ok(Err(e)) => {
                        tracing::warn!(folder = %folder, "index not saved completely: {e}")
                    }
                    Err(e) => tracing::warn!(folder = %folder, "index not saved completely: {e}"),
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<CurrentSeq> for Differ {
    type Result = MessageResult<CurrentSeq>;

    fn handle(&mut self, _: CurrentSeq, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.seq)
    }
}

impl Handler<crate::messages::Stop> for Differ {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Test support: runs hashing work that panics, as a corrupt chunker might; the panic must
/// come back as an error and reach the supervisor as a failure of this actor.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct PanicInPool;

impl Handler<PanicInPool> for Differ {
    type Result = ();

    fn handle(&mut self, _: PanicInPool, ctx: &mut Self::Context) {
        let pool = self.pool.clone();
        let job = async move {
            pool.run("hash source files", || {
                panic!("injected panic in the hashing pool")
            })
            .await
        };
        ctx.spawn(
            job.into_actor(self)
                .map(|res: crate::Result<()>, act, ctx| {
                    if let Err(e) = res {
                        act.fail(e.to_string());
                        ctx.stop();
                    }
                }),
        );
    }
}
