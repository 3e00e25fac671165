//! The server end of links: accepts authenticated peers, opens the folders shared with
//! each, and runs an Applier per open folder whose Sender is on the other node. A session
//! that ends keeps its Applier's view of the source, so the same source reconnecting
//! resumes from the last sequence applied instead of sending everything again.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix::prelude::*;
use ferry_actors::applier::{Applier, ApplierOptions, Retire, SenderLink, SourceView};
use ferry_actors::health::{LatencySnapshot, Role};
use ferry_actors::messages::{Applied, ApplyFailed, NeedChunks, NeedContent, NeedGroups, Start};
use ferry_actors::{FolderId, Stats, StatsSnapshot};
use ferry_engine::store::{ResumeHead, StateDb};
use ferry_engine::{ChunkParams, IgnoreRules, Seq, TargetDir};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::client::{write_loop, LinkOptions};
use super::codec::{read_frame, read_frame_reusing, FrameError};
use super::fit::fit_applied;
use super::identity::Identity;
use super::metered::{unless_silent, Metered};
use super::nodeid::NodeId;
use super::parts::{IndexJoiner, MAX_INDEX_ENTRIES};
use super::protocol::{
    Frame, Hello, Open, Opened, Refusal, MAX_FRAME, MAX_GREETING, MAX_OPEN, PROTOCOL_VERSION,
};
use super::tls;
use crate::runtime::state::DbTarget;

/// How much a connection reads from its socket at once.
const READ_BUFFER: usize = 256 << 10;

type Stream = TlsStream<BufReader<Metered<TcpStream>>>;

/// How long a reconnecting node waits for its earlier session to end.
const HANDOVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The largest index update (all its parts' frames) accepted, in bytes.
const MAX_INDEX_BYTES: u64 = 1 << 30;
/// The most an acknowledgement may take of a frame (see [`fit_applied`]), with room to spare.
const APPLIED_BUDGET: u64 = MAX_FRAME as u64 / 2;

/// A folder this node receives into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedFolder {
    /// The name peers open it by.
    pub name: FolderId,
    /// The target directory (must exist).
    pub path: PathBuf,
    /// The peers that may send to it; `None`: every peer of the node.
    pub peers: Option<BTreeSet<NodeId>>,
}

/// What `ferry serve` runs with.
pub struct ServeConfig {
    /// This node's key and certificate.
    pub identity: Identity,
    /// The nodes allowed to connect at all.
    pub peers: BTreeSet<NodeId>,
    /// The folders received into.
    pub folders: Vec<ServedFolder>,
    /// fsync before acknowledging.
    pub durable: bool,
    /// Keepalive and timeouts.
    pub link: LinkOptions,
}

/// Why a session ended early.
#[derive(Debug)]
struct Ended {
    reason: String,
    /// The peer misbehaved or the target failed: the Applier's view is not kept.
    tainted: bool,
}

impl Ended {
    fn closed(reason: impl Into<String>) -> Self {
        Ended {
            reason: reason.into(),
            tainted: false,
        }
    }

    fn protocol(reason: impl Into<String>) -> Self {
        Ended {
            reason: format!("protocol error: {}", reason.into()),
            tainted: true,
        }
    }
}

/// A running server: its folders and their sessions.
pub struct Server {
    config: ServeConfig,
    acceptor: TlsAcceptor,
    /// The nodes allowed to connect (read by the TLS verifier; changed by `reconfigure`).
    allowed: Arc<RwLock<BTreeSet<NodeId>>>,
    folders: RwLock<HashMap<FolderId, Arc<FolderSlot>>>,
    stats: Arc<Stats>,
    sessions: AtomicU64,
    observer: RwLock<Option<SessionObserver>>,
    /// Slots no longer served whose sessions may still be ending (waited for on shutdown).
    retired: Mutex<Vec<Arc<FolderSlot>>>,
    /// Where resume points are kept across restarts of this node.
    state: RwLock<Option<Arc<StateDb>>>,
    /// Set by [`Server::shutdown`]: no connection is accepted after it.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Told of every session that opens a folder, with the counters its Applier keeps.
pub type SessionObserver = Arc<dyn Fn(&FolderId, &NodeId, &Arc<Stats>) + Send + Sync>;

/// One served folder's state across sessions.
struct FolderSlot {
    folder: ServedFolder,
    /// The session sending to it now.
    active: tokio::sync::Mutex<Option<Active>>,
    /// What the last session left to resume from.
    resume: Mutex<Option<Resume>>,
    /// The session sending to it now, or the last one, as the dashboard shows it.
    seen: Mutex<Option<SessionView>>,
    /// The slot this one replaced on reconfiguration, whose session may still be ending:
    /// no session starts here until that one has let go of the target.
    predecessor: Mutex<Option<Arc<FolderSlot>>>,
    /// The node is stopping: no session starts here any more (read under `active`'s lock).
    closed: AtomicBool,
}

/// A session of a served folder as the dashboard shows it.
#[derive(Clone, Debug)]
pub struct SessionView {
    /// The sending node.
    pub peer: NodeId,
    /// Its Applier's counters.
    pub stats: Arc<Stats>,
    /// Whether it is still connected; why it ended, if not.
    pub ended: Option<String>,
    /// Whether its Applier has acknowledged a plan in this session.
    pub acknowledged: Arc<AtomicBool>,
    /// What the folder's earlier sessions counted, summed (see [`SessionView::totals`]).
    pub earlier: Totals,
}

impl SessionView {
    /// The folder's counts over every session it has had since it was first served: the
    /// earlier ones and this one. They only grow while the node runs, however often the
    /// sender reconnects.
    pub fn totals(&self) -> Totals {
        let mut totals = self.earlier.clone();
        totals.add(&Totals::of(&self.stats));
        totals
    }
}

/// Counters that only grow, read from one or more [`Stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// The counts.
    pub counts: StatsSnapshot,
    /// The change-to-applied latency histogram.
    pub latency: LatencySnapshot,
}

impl Totals {
    /// What `stats` has counted so far.
    pub fn of(stats: &Stats) -> Totals {
        Totals {
            counts: stats.snapshot(),
            latency: stats.latency.snapshot(),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Totals) {
        // Taken apart field by field so that a counter added to `StatsSnapshot` cannot be
        // left out of the sum unnoticed.
        let StatsSnapshot {
            entries_scanned,
            created,
            updated,
            metadata_only,
            removed,
            renamed,
            skipped,
            bytes_written,
            bytes_sent,
            chunks_sent,
            bytes_metadata,
            bytes_reused,
            chunks_reused,
            bytes_zero,
            wire_bytes_out,
            wire_bytes_in,
            reconnects,
            bytes_hashed,
            entries_sent,
        } = &other.counts;
        let c = &mut self.counts;
        c.entries_scanned += entries_scanned;
        c.created += created;
        c.updated += updated;
        c.metadata_only += metadata_only;
        c.removed += removed;
        c.renamed += renamed;
        c.skipped += skipped;
        c.bytes_written += bytes_written;
        c.bytes_sent += bytes_sent;
        c.chunks_sent += chunks_sent;
        c.bytes_metadata += bytes_metadata;
        c.bytes_reused += bytes_reused;
        c.chunks_reused += chunks_reused;
        c.bytes_zero += bytes_zero;
        c.wire_bytes_out += wire_bytes_out;
        c.wire_bytes_in += wire_bytes_in;
        c.reconnects += reconnects;
        c.bytes_hashed += bytes_hashed;
        c.entries_sent += entries_sent;
        // Every histogram has the same bounds; an empty (default) one takes them on.
        let l = &mut self.latency;
        if l.counts.len() < other.latency.counts.len() {
            l.bounds_ms.clone_from(&other.latency.bounds_ms);
            l.counts.resize(other.latency.counts.len(), 0);
        }
        for (mine, theirs) in l.counts.iter_mut().zip(&other.latency.counts) {
            *mine += theirs;
        }
        l.sum_ms += other.latency.sum_ms;
        l.count += other.latency.count;
    }
}

impl FolderSlot {
    fn new(folder: ServedFolder) -> Self {
        FolderSlot {
            folder,
            active: tokio::sync::Mutex::new(None),
            resume: Mutex::new(None),
            seen: Mutex::new(None),
            predecessor: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Waits (at most `deadline`) until no session of the slot this one replaced is left.
    async fn predecessor_gone(&self, deadline: std::time::Duration) -> bool {
        let previous = self
            .predecessor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(previous) = previous else {
            return true;
        };
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if previous.active.lock().await.is_none() {
                *self.predecessor.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<SessionView>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the session sending to this folder, if any, to end.
    async fn stop_session(&self, why: &str) {
        if let Some(a) = self.active.lock().await.as_ref() {
            let _ = a.stop.try_send(why.to_owned());
        }
    }
}

struct Active {
    id: u64,
    peer: NodeId,
    /// Asks the session to end.
    stop: mpsc::Sender<String>,
    /// Closed when the session has ended and its Applier no longer touches the target.
    done: tokio::sync::watch::Receiver<bool>,
}

struct Resume {
    peer: NodeId,
    epoch: u64,
    applied: Seq,
    view: SourceView,
}

impl Server {
    /// A server for `config`, counting wire bytes into `stats`.
    pub fn new(config: ServeConfig, stats: Arc<Stats>) -> Result<Arc<Server>, tls::TlsError> {
        let allowed = Arc::new(RwLock::new(config.peers.clone()));
        let check = allowed.clone();
        let tls = tls::server_config(
            &config.identity,
            Arc::new(move |id: &NodeId| {
                check.read().unwrap_or_else(|p| p.into_inner()).contains(id)
            }),
        )?;
        let folders = config
            .folders
            .iter()
            .map(|f| (f.name.clone(), Arc::new(FolderSlot::new(f.clone()))))
            .collect();
        Ok(Arc::new(Server {
            config,
            acceptor: TlsAcceptor::from(tls),
            allowed,
            folders: RwLock::new(folders),
            stats,
            sessions: AtomicU64::new(0),
            observer: RwLock::new(None),
            retired: Mutex::new(Vec::new()),
            state: RwLock::new(None),
            closing: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Serves `folders` to `peers` from now on. Sessions of folders removed, or whose path or
    /// peers changed, are ended; the others go on undisturbed.
    pub async fn reconfigure(&self, peers: BTreeSet<NodeId>, folders: Vec<ServedFolder>) {
        *self.allowed.write().unwrap_or_else(|p| p.into_inner()) = peers;
        let db = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        let ended: Vec<Arc<FolderSlot>> = {
            let mut map = self.folders.write().unwrap_or_else(|p| p.into_inner());
            let wanted: HashMap<FolderId, ServedFolder> =
                folders.into_iter().map(|f| (f.name.clone(), f)).collect();
            let mut ended = Vec::new();
            map.retain(|name, slot| {
                let keep = wanted.get(name) == Some(&slot.folder);
                if !keep {
                    tracing::info!(folder = %name, "no longer served as it was: ending its session");
                    ended.push(slot.clone());
                }
                keep
            });
            for (name, f) in wanted {
                if let std::collections::hash_map::Entry::Vacant(place) = map.entry(name) {
                    tracing::info!(folder = %place.key(), path = %f.path.display(), "serving folder");
                    let slot = FolderSlot::new(f);
                    // The session of the folder this replaces may still write to the same
                    // directory: the new slot waits for it to end.
                    *slot.predecessor.lock().unwrap_or_else(|p| p.into_inner()) = ended
                        .iter()
                        .find(|old| old.folder.name == *place.key())
                        .cloned();
                    if let Some(db) = &db {
                        take_back_resume(db, place.key(), &slot);
                    }
                    place.insert(Arc::new(slot));
                }
            }
            ended
        };
        for slot in &ended {
            slot.stop_session("the folder is no longer served as it was")
                .await;
        }
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        // A retired slot whose session has ended needs no waiting at shutdown: let it go,
        // or every reload that changes a folder would keep one more for the node's life.
        retired.retain(|slot| slot.active.try_lock().map_or(true, |a| a.is_some()));
        retired.extend(ended);
    }

    /// Keeps what sessions leave to resume from in `db`, and takes back what an earlier run
    /// of this node left there. A resume point that cannot be read is dropped (the sender
    /// then sends a snapshot), never trusted.
    pub fn keep_state(&self, db: Arc<StateDb>) {
        let folders = self.folders.read().unwrap_or_else(|p| p.into_inner());
        for (name, slot) in folders.iter() {
            take_back_resume(&db, name, slot);
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Some(db);
    }

    /// Stops accepting connections, ends every session (each leaves its resume point) and
    /// waits, at most `deadline`, until none touches its folder. A peer that reconnects
    /// meanwhile is refused for now (it retries, and finds the node gone or back).
    pub async fn shutdown(&self, deadline: std::time::Duration) {
        self.closing.send_replace(true);
        let mut slots: Vec<Arc<FolderSlot>> = self
            .folders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots.extend(
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        for slot in &slots {
            slot.closed.store(true, Ordering::SeqCst);
        }
        let end = tokio::time::Instant::now() + deadline;
        for slot in slots {
            loop {
                slot.stop_session("this node is stopping").await;
                let idle = slot.active.lock().await.is_none();
                if idle || tokio::time::Instant::now() >= end {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    /// Saves `resume` for `folder`, off the async threads.
    async fn save_resume(&self, folder: &FolderId, resume: &Resume, params: ChunkParams) {
        let db = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(db) = db else { return };
        let head = ResumeHead {
            peer: resume.peer.to_string(),
            epoch: resume.epoch,
            applied: resume.applied,
            params,
        };
        let view: Vec<_> = resume.view.index.iter().cloned().collect();
        let name = folder.to_string();
        let saved =
            tokio::task::spawn_blocking(move || db.write_resume(&name, &head, &view, true)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(folder = %folder, "cannot save the resume point: {e}"),
            Err(e) => tracing::warn!(folder = %folder, "cannot save the resume point: {e}"),
        }
    }

    /// Calls `observer` for every session that opens a folder from now on.
    pub fn set_observer(&self, observer: SessionObserver) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// Every served folder with its current or last session.
    pub fn sessions(&self) -> Vec<(ServedFolder, Option<SessionView>)> {
        let map = self.folders.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .values()
            .map(|slot| (slot.folder.clone(), slot.seen().clone()))
            .collect();
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }

    /// Accepts connections on `listener` until the task is dropped; every connection is
    /// served on its own task, and nothing one peer sends stops the others.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        let mut closing = self.closing.subscribe();
        loop {
            let accepted = tokio::select! {
                _ = closing.wait_for(|c| *c) => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, addr)) => {
                    let server = self.clone();
                    actix::spawn(async move { server.connection(tcp, addr).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on serving.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, addr: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let link = self.config.link;
        // TLS reads one record (at most ~16 KiB) per call; the buffer lets one system call
        // take whatever has arrived (a client sends up to 64 KiB of records at once).
        let tcp = BufReader::with_capacity(READ_BUFFER, Metered::new(tcp, self.stats.clone()));
        let stream = match tokio::time::timeout(link.connect_timeout, self.acceptor.accept(tcp))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::warn!(peer = %addr, "refused: TLS handshake failed: {e}"),
            Err(_) => {
                return tracing::warn!(peer = %addr, "refused: no TLS handshake within {:?}", link.connect_timeout)
            }
        };
        let Some(peer) = tls::peer_id(stream.get_ref().1) else {
            return tracing::warn!(peer = %addr, "refused: no client certificate");
        };
        tracing::info!(peer = %addr, node = %peer, "peer connected");
        match self.session(stream, peer).await {
            Ok(()) => tracing::info!(peer = %addr, node = %peer, "peer disconnected"),
            Err(e) => tracing::warn!(peer = %addr, node = %peer, "connection closed: {}", e.reason),
        }
    }

    /// Greets the peer, opens the folder it asks for and serves it until the link ends.
    async fn session(&self, stream: Stream, peer: NodeId) -> Result<(), Ended> {
        let link = self.config.link;
        let heard = stream.get_ref().0.get_ref().heard();
        let (mut r, w) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(16);
        let writer = actix::spawn(write_loop(w, rx, link));
        let refuse = |permanent: bool, reason: String| {
            let tx = tx.clone();
            async move {
                let _ = tx
                    .send(Frame::Refused(Refusal {
                        permanent,
                        reason: reason.clone(),
                    }))
                    .await;
                reason
            }
        };
        let greeting = tokio::time::timeout(link.connect_timeout, read_frame(&mut r, MAX_GREETING));
        match greeting.await {
            Ok(Ok(Some(Frame::Hello(h)))) if h.version == PROTOCOL_VERSION => {}
            Ok(Ok(Some(Frame::Hello(h)))) => {
                let why = format!(
                    "protocol version {} ({}) is not supported: this node speaks {PROTOCOL_VERSION}",
                    h.version, h.software
                );
                return Err(finish_refusal(writer, refuse(true, why).await).await);
            }
            other => {
                let why = describe(other, "Hello", link);
                return Err(finish_refusal(writer, refuse(true, why).await).await);
            }
        }
        let _ = tx.send(Frame::Hello(Hello::ours())).await;
        let open =
            match tokio::time::timeout(link.connect_timeout, read_frame(&mut r, MAX_OPEN)).await {
                Ok(Ok(Some(Frame::Open(o)))) => o,
                other => {
                    let why = describe(other, "Open", link);
                    return Err(finish_refusal(writer, refuse(true, why).await).await);
                }
            };
        let (slot, params) = match self.check_open(&open, &peer) {
            Ok(x) => x,
            Err(why) => return Err(finish_refusal(writer, refuse(true, why).await).await),
        };
        let ignore = match IgnoreRules::new(&open.ignore) {
            Ok(rules) => rules,
            Err(e) => {
                let why = e.to_string();
                return Err(finish_refusal(writer, refuse(true, why).await).await);
            }
        };
        let id = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop_tx, mut stop_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        if let Err(why) = claim(&slot, id, peer, stop_tx, done_rx).await {
            return Err(finish_refusal(writer, refuse(false, why).await).await);
        }
        let resume = {
            let mut saved = slot.resume.lock().unwrap_or_else(|p| p.into_inner());
            match saved.take() {
                // A view cut with other chunker parameters is not the peer's view now.
                Some(r)
                    if r.peer == peer
                        && r.epoch == open.epoch
                        && r.view.index.params() == &params =>
                {
                    Some(r)
                }
                _ => None,
            }
        };
        let target = match TargetDir::open(&slot.folder.path) {
            Ok(t) => t,
            Err(e) => {
                release(&slot, id, done_tx).await;
                let why = format!("target folder {} is unavailable: {e}", open.folder);
                tracing::error!(folder = %open.folder, "{why}");
                return Err(finish_refusal(writer, refuse(false, why).await).await);
            }
        };
        let applied = Arc::new(AtomicU64::new(resume.as_ref().map_or(0, |r| r.applied.0)));
        let (fatal_tx, mut fatal_rx) = mpsc::channel(1);
        let acknowledged = Arc::new(AtomicBool::new(false));
        let outbound = Outbound {
            tx: tx.clone(),
            applied: applied.clone(),
            acknowledged: acknowledged.clone(),
            fatal: fatal_tx,
        }
        .start();
        let sender = SenderLink::to(&outbound);
        let opts = ApplierOptions {
            checksum: open.checksum,
            dry_run: open.dry_run,
            durable: self.config.durable,
            params,
            untrusted_sender: true,
            remote: true,
            ignore,
        };
        // Per session: the counts each acknowledgement carries back are this session's.
        let session_stats = Arc::new(Stats::default());
        let observer = self
            .observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(observe) = observer {
            observe(&open.folder, &peer, &session_stats);
        }
        {
            let mut seen = slot.seen();
            // The session shown until now has ended and its Applier has retired (`claim`
            // waited for that), so its counts are final: they move into `earlier` in the
            // same step that replaces its view, and a reader counts them exactly once. A
            // folder removed by a reload and served again, or changed, has a new slot and
            // starts from zero, like a send folder's new pipeline: it is another replication.
            let earlier = seen.as_ref().map(SessionView::totals).unwrap_or_default();
            *seen = Some(SessionView {
                peer,
                stats: session_stats.clone(),
                ended: None,
                acknowledged,
                earlier,
            });
        }
        let board = session_stats.clone();
        let mut applier = Applier::new(open.folder.clone(), target, opts, sender, session_stats);
        let db = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(db) = db {
            let key = format!("target/receive/{}", open.folder);
            applier = applier.with_target_store(Arc::new(DbTarget::new(db, key)));
        }
        let resumed_from = resume.as_ref().map(|r| r.applied);
        if let Some(r) = resume {
            applier = applier.resume(r.view);
        }
        let applier = applier.start();
        let _ = applier.send(Start).await;
        let _ = tx
            .send(Frame::Opened(Opened {
                folder: open.folder.clone(),
                applied: resumed_from.unwrap_or_default(),
            }))
            .await;
        tracing::info!(folder = %open.folder, node = %peer, resume = resumed_from.map(|s| s.0), "folder opened");

        let mut joiner = IndexJoiner::new(MAX_INDEX_ENTRIES);
        let mut joined_bytes = 0u64;
        let mut writer = writer;
        let mut body = Vec::new();
        let ended = loop {
            let frame = tokio::select! {
                f = unless_silent(read_frame_reusing(&mut r, MAX_FRAME, &mut body), &heard, link.timeout) => f,
                why = stop_rx.recv() => break Ended::closed(why.unwrap_or_else(|| "asked to end".into())),
                Some(why) = fatal_rx.recv() => break Ended { reason: why, tainted: true },
                w = &mut writer => {
                    let why = w.map_or_else(|e| e.to_string(), |d| d.reason);
                    break Ended::closed(format!("cannot send to the peer: {why}"));
                }
            };
            let frame = match frame {
                Some(Ok(Some(f))) => f,
                Some(Ok(None)) => break Ended::closed("the peer closed the connection"),
                other => break ended_by(other, link),
            };
            let folder_ok = |f: &FolderId| f == &open.folder;
            let delivered = match frame {
                Frame::Index(part) if folder_ok(&part.delta.folder) => {
                    // The frame as received (an index frame is read whole into `body`):
                    // encoding the part again to measure it cost a pass over every entry.
                    joined_bytes += body.len() as u64;
                    if joined_bytes > MAX_INDEX_BYTES {
                        break Ended::protocol(format!(
                            "an index update of more than {MAX_INDEX_BYTES} bytes"
                        ));
                    }
                    if !part.more {
                        joined_bytes = 0;
                    }
                    match joiner.push(part) {
                        Ok(Some(delta)) => {
                            board.actors.queued(Role::Target);
                            applier.send(delta).await
                        }
                        Ok(None) => Ok(()),
                        Err(e) => break Ended::protocol(e.to_string()),
                    }
                }
                Frame::Chunks(d) if folder_ok(&d.folder) => {
                    board.actors.queued(Role::Target);
                    applier.send(d).await
                }
                Frame::Groups(g) if folder_ok(&g.folder) => {
                    board.actors.queued(Role::Target);
                    applier.send(g).await
                }
                Frame::Ping(n) => {
                    // A full queue is traffic enough: the peer hears from us anyway.
                    let _ = tx.try_send(Frame::Pong(n));
                    Ok(())
                }
                Frame::Pong(_) => Ok(()),
                Frame::Refused(r) => {
                    break Ended::closed(format!("the peer gave up: {}", r.reason))
                }
                Frame::Index(_) | Frame::Chunks(_) | Frame::Groups(_) => {
                    break Ended::protocol(format!(
                        "a message for another folder than {}",
                        open.folder
                    ))
                }
                other => {
                    break Ended::protocol(format!(
                        "unexpected {} after the folder was opened",
                        other.kind()
                    ))
                }
            };
            if let Err(e) = delivered {
                break Ended {
                    reason: format!("the applier is gone: {e}"),
                    tainted: true,
                };
            }
        };
        if ended.tainted {
            // The peer broke the protocol or the target failed: retrying the same cannot help.
            let _ = tx
                .send(Frame::Refused(Refusal {
                    permanent: true,
                    reason: ended.reason.clone(),
                }))
                .await;
        }
        drop(tx);
        // The Applier's work ends before the folder is free for the next session.
        let retired = applier.send(Retire).await;
        if !ended.tainted {
            if let Ok(Some(view)) = retired.map(|r| r.view) {
                let resume = Resume {
                    peer,
                    epoch: open.epoch,
                    applied: Seq(applied.load(Ordering::Relaxed)),
                    view,
                };
                self.save_resume(&open.folder, &resume, params).await;
                *slot.resume.lock().unwrap_or_else(|p| p.into_inner()) = Some(resume);
            }
        }
        if let Some(seen) = slot.seen().as_mut() {
            seen.ended = Some(ended.reason.clone());
        }
        release(&slot, id, done_tx).await;
        if ended.tainted && !writer.is_finished() {
            let _ = tokio::time::timeout(link.timeout, &mut writer).await;
        }
        writer.abort();
        tracing::info!(folder = %open.folder, node = %peer, "folder closed: {}", ended.reason);
        if ended.tainted {
            Err(ended)
        } else {
            Ok(())
        }
    }

    /// The folder `open` names if `peer` may send to it, with valid chunker parameters.
    fn check_open(
        &self,
        open: &Open,
        peer: &NodeId,
    ) -> Result<(Arc<FolderSlot>, ChunkParams), String> {
        let not_shared = || format!("folder {} is not shared with node {peer}", open.folder);
        let slot = self
            .folders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&open.folder)
            .cloned()
            .ok_or_else(not_shared)?;
        if slot
            .folder
            .peers
            .as_ref()
            .is_some_and(|p| !p.contains(peer))
        {
            return Err(not_shared());
        }
        let p = open.params;
        let params = ChunkParams::new(p.min, p.avg, p.max)
            .map_err(|e| format!("invalid chunker parameters: {e}"))?;
        Ok((slot, params))
    }
}

/// Takes back into `slot` the resume point an earlier run of this node saved for `name`.
fn take_back_resume(db: &StateDb, name: &FolderId, slot: &FolderSlot) {
    match db.load_resume(name.as_str()) {
        Ok(Some(saved)) => match saved.head.peer.parse::<NodeId>() {
            Ok(peer) => {
                let upto = saved.view.iter().map(|e| e.seq).max().unwrap_or_default();
                tracing::info!(folder = %name, node = %peer, applied = saved.head.applied.0, "resume point of the last run taken back");
                *slot.resume.lock().unwrap_or_else(|p| p.into_inner()) = Some(Resume {
                    peer,
                    epoch: saved.head.epoch,
                    applied: saved.head.applied,
                    view: SourceView {
                        index: saved.view,
                        upto,
                    },
                });
            }
            Err(e) => tracing::warn!(folder = %name, "saved resume point ignored: {e}"),
        },
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(folder = %name, "saved resume point cannot be read ({e}); the sender will send a snapshot");
            if let Err(e) = db.drop_resume(name.as_str()) {
                tracing::warn!(folder = %name, "cannot drop it: {e}");
            }
        }
    }
}

/// Makes session `id` of `peer` the one sending to `slot`'s folder. An earlier session of
/// the same peer (a link that dropped without either side noticing yet) is ended first;
/// another peer's is not: the folder is busy.
async fn claim(
    slot: &FolderSlot,
    id: u64,
    peer: NodeId,
    stop: mpsc::Sender<String>,
    done: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    if !slot.predecessor_gone(HANDOVER_DEADLINE).await {
        return Err(format!(
            "folder {} is busy: the session from before the reconfiguration has not ended within {HANDOVER_DEADLINE:?}",
            slot.folder.name
        ));
    }
    let previous = {
        let mut active = slot.active.lock().await;
        if slot.closed.load(Ordering::SeqCst) {
            return Err("this node is stopping".into());
        }
        match active.as_ref() {
            Some(a) if a.peer != peer => {
                return Err(format!(
                    "folder {} is busy: node {} is sending to it",
                    slot.folder.name, a.peer
                ))
            }
            // This session holds the folder from now on, also while the earlier one ends:
            // nobody else starts an Applier on it meanwhile.
            _ => active.replace(Active {
                id,
                peer,
                stop,
                done,
            }),
        }
    };
    if let Some(mut old) = previous {
        tracing::info!(folder = %slot.folder.name, node = %peer, "the node reconnected: ending its earlier session");
        let _ = old.stop.try_send("the same node connected again".into());
        let ended = tokio::time::timeout(HANDOVER_DEADLINE, old.done.wait_for(|d| *d))
            .await
            .is_ok();
        if !ended {
            let mut active = slot.active.lock().await;
            if active.as_ref().is_some_and(|a| a.id == id) {
                // Put the earlier session back: it still owns the target.
                *active = Some(old);
            }
            return Err(format!(
                "folder {} is busy: the node's earlier session has not ended within {HANDOVER_DEADLINE:?}",
                slot.folder.name
            ));
        }
    }
    Ok(())
}

/// Frees `slot` if session `id` still holds it, and tells whoever waits that it ended.
async fn release(slot: &FolderSlot, id: u64, done: tokio::sync::watch::Sender<bool>) {
    let mut active = slot.active.lock().await;
    if active.as_ref().is_some_and(|a| a.id == id) {
        *active = None;
    }
    let _ = done.send(true);
}

/// Lets the refusal reach the peer (the writer ends after it), then gives the reason.
async fn finish_refusal(
    writer: tokio::task::JoinHandle<super::client::LinkDown>,
    reason: String,
) -> Ended {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    Ended {
        reason,
        tainted: true,
    }
}

/// What came instead of the frame `wanted`, as a refusal reason.
fn describe(
    got: Result<Result<Option<Frame>, FrameError>, tokio::time::error::Elapsed>,
    wanted: &str,
    link: LinkOptions,
) -> String {
    match got {
        Err(_) => format!("no {wanted} within {:?}", link.connect_timeout),
        Ok(Ok(Some(f))) => format!("protocol error: expected {wanted}, got {}", f.kind()),
        Ok(Ok(None)) => format!("the peer closed the connection before {wanted}"),
        Ok(Err(e)) => format!("protocol error: {e}"),
    }
}

/// How a failed read ends a session.
fn ended_by(got: Option<Result<Option<Frame>, FrameError>>, link: LinkOptions) -> Ended {
    match got {
        None => Ended::closed(format!(
            "nothing heard from the peer for {:?}",
            link.timeout
        )),
        Some(Err(FrameError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ended::closed("the peer closed the connection without a TLS close")
        }
        Some(Err(FrameError::Io(e))) => Ended::closed(format!("connection lost: {e}")),
        Some(Err(e)) => Ended::protocol(e.to_string()),
        Some(Ok(_)) => Ended::closed("the peer closed the connection"),
    }
}

/// The Applier's Sender side of a session: turns its requests and acknowledgements into
/// frames.
struct Outbound {
    tx: mpsc::Sender<Frame>,
    applied: Arc<AtomicU64>,
    acknowledged: Arc<AtomicBool>,
    fatal: mpsc::Sender<String>,
}

impl Actor for Outbound {
    type Context = Context<Self>;
}

impl Outbound {
    fn queue(&self, frame: Frame) -> ResponseFuture<()> {
        let tx = self.tx.clone();
        Box::pin(async move {
            // A closed queue means the session is ending; the request is moot.
            let _ = tx.send(frame).await;
        })
    }
}

impl Handler<NeedContent> for Outbound {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: NeedContent, _: &mut Self::Context) -> Self::Result {
        self.queue(Frame::NeedContent(msg))
    }
}

impl Handler<NeedChunks> for Outbound {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: NeedChunks, _: &mut Self::Context) -> Self::Result {
        self.queue(Frame::NeedChunks(msg))
    }
}

impl Handler<NeedGroups> for Outbound {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: NeedGroups, _: &mut Self::Context) -> Self::Result {
        self.queue(Frame::NeedGroups(msg))
    }
}

impl Handler<Applied> for Outbound {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: Applied, _: &mut Self::Context) -> Self::Result {
        self.applied.fetch_max(msg.seq.0, Ordering::Relaxed);
        self.acknowledged.store(true, Ordering::Relaxed);
        self.queue(Frame::Applied(fit_applied(msg, APPLIED_BUDGET)))
    }
}

impl Handler<ApplyFailed> for Outbound {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: ApplyFailed, _: &mut Self::Context) -> Self::Result {
        // The failure reaches the peer before the session ends with a refusal.
        let (tx, fatal) = (self.tx.clone(), self.fatal.clone());
        Box::pin(async move {
            let reason = msg.reason.clone();
            let _ = tx.send(Frame::ApplyFailed(msg)).await;
            let _ = fatal.try_send(reason);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reloads_that_change_a_folder_do_not_pile_up_retired_slots() {
        let home = tempfile::tempdir().unwrap();
        let (identity, _) = super::super::identity::Identity::load_or_create(home.path()).unwrap();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let served = |k: usize| ServedFolder {
            name: FolderId::new("f").unwrap(),
            path: dirs[k % 2].path().to_owned(),
            peers: None,
        };
        let config = ServeConfig {
            identity,
            peers: BTreeSet::new(),
            folders: vec![served(0)],
            durable: false,
            link: LinkOptions::default(),
        };
        let server = Server::new(config, Arc::new(Stats::default())).unwrap();
        for k in 1..=6 {
            // Each reload moves the folder: its slot is ended and retired.
            server.reconfigure(BTreeSet::new(), vec![served(k)]).await;
        }
        let retired = server.retired.lock().unwrap().len();
        assert!(retired <= 1, "{retired} retired slots kept after 6 reloads");
    }

    fn counted(created: u64, bytes_written: u64) -> Arc<Stats> {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.created, created);
        Stats::add(&stats.bytes_written, bytes_written);
        stats
    }

    fn view(stats: Arc<Stats>, earlier: Totals) -> SessionView {
        SessionView {
            peer: NodeId::from_bytes([7; 32]),
            stats,
            ended: None,
            acknowledged: Arc::new(AtomicBool::new(false)),
            earlier,
        }
    }

    #[test]
    fn totals_add_the_earlier_sessions_to_the_current_one() {
        let first = view(counted(3, 100), Totals::default());
        let second = view(counted(1, 10), first.totals());
        let totals = second.totals();
        assert_eq!(totals.counts.created, 4);
        assert_eq!(totals.counts.bytes_written, 110);
        // The histogram keeps its buckets through sums that start from an empty one.
        assert_eq!(totals.latency, Totals::of(&Stats::default()).latency);
    }
}
