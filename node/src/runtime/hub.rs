//! The node's status hub: follows every replication's events and counters and answers the
//! dashboard with a [`NodeStatus`] snapshot, the last 100 events and a history of throughput
//! and latency samples.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferry_actors::health::ActorView;
use ferry_actors::{Event, EventKind, Stats};
use tokio::sync::broadcast;

use crate::remote::server::{Server, Totals};
use crate::status::{
    ActorStatus, Counters, EventRecord, FolderStatus, Histogram, NodeStatus, Sample, StatusSource,
    SyncState, TargetStatus,
};

/// Events kept for a page that opens.
const RECENT_EVENTS: usize = 100;
/// Samples kept: ten minutes at one a second.
const HISTORY: usize = 600;

/// A replication's state word and, when failed, why; kept current from its events.
type SharedState = Arc<Mutex<(String, Option<String>)>>;

/// One replication the hub follows.
struct Followed {
    folder: String,
    path: String,
    target: String,
    kind: &'static str,
    stats: Arc<Stats>,
    state: SharedState,
}

/// Counter totals at the previous sample.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    bytes: u64,
    files: u64,
    latency_sum: f64,
    latency_count: u64,
}

/// What the node shows of itself.
pub struct Hub {
    node: String,
    node_id: Option<String>,
    started: Instant,
    followed: Mutex<Vec<Followed>>,
    receive: Mutex<Vec<(String, String)>>,
    server: Mutex<Option<Arc<Server>>>,
    peer_names: Mutex<Vec<(String, String)>>,
    recent: Mutex<VecDeque<EventRecord>>,
    history: Mutex<VecDeque<Sample>>,
    previous: Mutex<Previous>,
    tx: broadcast::Sender<EventRecord>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// A hub for the node called `node`.
    pub fn new(node: String, node_id: Option<String>) -> Arc<Hub> {
        Arc::new(Hub {
            node,
            node_id,
            started: Instant::now(),
            followed: Mutex::new(Vec::new()),
            receive: Mutex::new(Vec::new()),
            server: Mutex::new(None),
            peer_names: Mutex::new(Vec::new()),
            recent: Mutex::new(VecDeque::new()),
            history: Mutex::new(VecDeque::new()),
            previous: Mutex::new(Previous::default()),
            tx: broadcast::channel(1024).0,
        })
    }

    /// Follows a send folder's replication to `target`.
    pub fn follow(
        self: &Arc<Self>,
        folder: &str,
        path: &str,
        target: String,
        kind: &'static str,
        stats: Arc<Stats>,
    ) {
        let state = Arc::new(Mutex::new(("starting".to_owned(), None)));
        self.listen(folder, &target, &stats, Some(state.clone()));
        lock(&self.followed).push(Followed {
            folder: folder.to_owned(),
            path: path.to_owned(),
            target,
            kind,
            stats,
            state,
        });
    }

    /// Shows send folder `folder` as failed to start, with `reason`.
    pub fn failed_to_start(&self, folder: &str, path: &str, reason: String) {
        self.forget(folder);
        lock(&self.followed).push(Followed {
            folder: folder.to_owned(),
            path: path.to_owned(),
            target: "(not started)".into(),
            kind: "local",
            stats: Arc::new(Stats::default()),
            state: Arc::new(Mutex::new(("failed".into(), Some(reason)))),
        });
    }

    /// Stops following the send folders not in `keep`.
    pub fn retain(&self, keep: &[String]) {
        lock(&self.followed).retain(|f| keep.contains(&f.folder));
    }

    /// Stops following every replication of `folder`.
    pub fn forget(&self, folder: &str) {
        lock(&self.followed).retain(|f| f.folder != folder);
    }

    /// The receive folders (id, path) and the server receiving them.
    pub fn set_receiving(&self, folders: Vec<(String, String)>, server: Option<Arc<Server>>) {
        *lock(&self.receive) = folders;
        if server.is_some() {
            *lock(&self.server) = server;
        }
    }

    /// Node ids and the names the config gives them, for showing who sends.
    pub fn set_peer_names(&self, names: Vec<(String, String)>) {
        *lock(&self.peer_names) = names;
    }

    /// Follows the events of a session receiving `folder` from `peer`.
    pub fn follow_session(self: &Arc<Self>, folder: &str, peer: &str, stats: &Arc<Stats>) {
        let name = self.peer_name(peer);
        self.listen(folder, &name, stats, None);
    }

    fn peer_name(&self, id: &str) -> String {
        lock(&self.peer_names)
            .iter()
            .find(|(i, _)| i == id)
            .map_or_else(|| id.to_owned(), |(_, n)| n.clone())
    }

    /// Forwards `stats`' events to the page and the recent list, keeping `state` current.
    fn listen(
        self: &Arc<Self>,
        folder: &str,
        target: &str,
        stats: &Arc<Stats>,
        state: Option<SharedState>,
    ) {
        let mut rx = stats.events.subscribe();
        let hub = Arc::downgrade(self);
        let (folder, target) = (folder.to_owned(), target.to_owned());
        actix::spawn(async move {
            loop {
                let event = match rx.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(hub) = hub.upgrade() else { return };
                if let (
                    Some(state),
                    EventKind::State {
                        state: word,
                        reason,
                    },
                ) = (&state, &event.kind)
                {
                    *lock(state) = (word.clone(), reason.clone());
                }
                hub.publish(record(&folder, &target, &event));
            }
        });
    }

    /// Adds `r` to the recent events and sends it to open pages.
    pub fn publish(&self, r: EventRecord) {
        let mut recent = lock(&self.recent);
        if recent.len() >= RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(r.clone());
        let _ = self.tx.send(r);
    }

    /// Takes a throughput and latency sample; called once a second.
    pub fn sample(&self) {
        let (mut bytes, mut files, mut sum, mut count) = (0u64, 0u64, 0f64, 0u64);
        for t in self.all_totals() {
            let c = t.counts;
            bytes += c.bytes_written;
            files += c.created + c.updated + c.removed + c.renamed;
            sum += t.latency.sum_ms;
            count += t.latency.count;
        }
        let now = Instant::now();
        let mut prev = lock(&self.previous);
        if let Some(at) = prev.at {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            let latency = (count > prev.latency_count)
                .then(|| (sum - prev.latency_sum) / (count - prev.latency_count) as f64);
            let sample = Sample {
                unix_ms: unix_ms(SystemTime::now()),
                bytes_per_s: bytes.saturating_sub(prev.bytes) as f64 / secs,
                files_per_s: files.saturating_sub(prev.files) as f64 / secs,
                latency_ms: latency,
            };
            let mut history = lock(&self.history);
            if history.len() >= HISTORY {
                history.pop_front();
            }
            history.push_back(sample);
        }
        *prev = Previous {
            at: Some(now),
            bytes,
            files,
            latency_sum: sum,
            latency_count: count,
        };
    }

    /// Every replication's counts; a receive folder's over all its sessions, so that a
    /// sender reconnecting does not show as a drop.
    fn all_totals(&self) -> Vec<Totals> {
        let mut all: Vec<Totals> = lock(&self.followed)
            .iter()
            .map(|f| Totals::of(&f.stats))
            .collect();
        if let Some(server) = lock(&self.server).as_ref() {
            all.extend(
                server
                    .sessions()
                    .into_iter()
                    .filter_map(|(_, s)| s.map(|s| s.totals())),
            );
        }
        all
    }

    fn send_folders(&self) -> Vec<FolderStatus> {
        let mut folders: Vec<FolderStatus> = Vec::new();
        for f in lock(&self.followed).iter() {
            let (word, reason) = lock(&f.state).clone();
            let state = send_state(&word, reason, &f.stats);
            let target = target_status(&f.target, f.kind, state, &f.stats, Totals::of(&f.stats));
            match folders.iter_mut().find(|s| s.id == f.folder) {
                Some(s) => s.targets.push(target),
                None => folders.push(FolderStatus {
                    id: f.folder.clone(),
                    path: f.path.clone(),
                    role: "send".into(),
                    targets: vec![target],
                }),
            }
        }
        folders
    }

    fn receive_folders(&self) -> Vec<FolderStatus> {
        let sessions = lock(&self.server)
            .as_ref()
            .map(|s| s.sessions())
            .unwrap_or_default();
        lock(&self.receive)
            .iter()
            .map(|(id, path)| {
                let session = sessions
                    .iter()
                    .find(|(f, _)| f.name.as_str() == id)
                    .and_then(|(_, s)| s.clone());
                let targets = match session {
                    None => vec![TargetStatus {
                        state: SyncState::Offline {
                            reason: "no sender has connected yet".into(),
                        },
                        ..target_status(
                            "-",
                            "incoming",
                            SyncState::Stopped,
                            &Stats::default(),
                            Totals::default(),
                        )
                    }],
                    Some(s) => {
                        let state = match &s.ended {
                            Some(why) => SyncState::Offline {
                                reason: format!("disconnected: {why}"),
                            },
                            // Until its first plan is acknowledged the folder is not known
                            // to mirror its sender.
                            None if !s.acknowledged.load(Ordering::Relaxed) => {
                                progress_state(&s.stats).unwrap_or(SyncState::Syncing {
                                    files_remaining: 0,
                                    bytes_remaining: 0,
                                })
                            }
                            None => progress_state(&s.stats).unwrap_or(SyncState::InSync),
                        };
                        let name = self.peer_name(&s.peer.to_string());
                        // Counts over every session; state and progress are this one's.
                        vec![target_status(
                            &name,
                            "incoming",
                            state,
                            &s.stats,
                            s.totals(),
                        )]
                    }
                };
                FolderStatus {
                    id: id.clone(),
                    path: path.clone(),
                    role: "receive".into(),
                    targets,
                }
            })
            .collect()
    }
}

/// Syncing, with what is left, while a plan is being written.
fn progress_state(stats: &Stats) -> Option<SyncState> {
    let (done, planned, written, bytes_planned) = stats.progress();
    (done < planned).then(|| SyncState::Syncing {
        files_remaining: planned - done,
        bytes_remaining: bytes_planned.saturating_sub(written),
    })
}

/// A send target's state from its supervisor's state word, its link and its progress.
fn send_state(word: &str, reason: Option<String>, stats: &Stats) -> SyncState {
    match word {
        "failed" => SyncState::Failed {
            reason: reason.unwrap_or_else(|| "failed".into()),
        },
        "stopped" => SyncState::Stopped,
        _ => {
            if let Some(why) = stats.link.down_reason() {
                return SyncState::Offline { reason: why };
            }
            if word == "starting" {
                return SyncState::Starting;
            }
            let behind = stats.applied_seq.load(Ordering::Relaxed)
                < stats.source_seq.load(Ordering::Relaxed);
            match progress_state(stats) {
                Some(s) => s,
                None if behind || word == "syncing" => SyncState::Syncing {
                    files_remaining: 0,
                    bytes_remaining: 0,
                },
                None => SyncState::InSync,
            }
        }
    }
}

/// A target as the status shows it: its counters and latency from `totals`, the rest from
/// its current `stats`.
fn target_status(
    name: &str,
    kind: &str,
    state: SyncState,
    stats: &Stats,
    totals: Totals,
) -> TargetStatus {
    let (s, l) = (totals.counts, totals.latency);
    TargetStatus {
        name: name.to_owned(),
        kind: kind.to_owned(),
        state,
        actors: stats.actors.view().iter().map(actor_status).collect(),
        counters: Counters {
            files_created: s.created,
            files_updated: s.updated,
            files_removed: s.removed,
            files_renamed: s.renamed,
            metadata_only: s.metadata_only,
            bytes_written: s.bytes_written,
            bytes_sent: s.bytes_sent,
            bytes_metadata: s.bytes_metadata,
            bytes_reused: s.bytes_reused,
            chunks_sent: s.chunks_sent,
            chunks_reused: s.chunks_reused,
            wire_bytes_out: s.wire_bytes_out,
            wire_bytes_in: s.wire_bytes_in,
            reconnects: s.reconnects,
            skipped: s.skipped,
            bytes_hashed: s.bytes_hashed,
            entries_sent: s.entries_sent,
        },
        latency: Histogram {
            bounds_ms: l.bounds_ms,
            counts: l.counts,
            sum_ms: l.sum_ms,
            count: l.count,
        },
        restarts: stats.restarts.load(Ordering::Relaxed),
        watches: stats.watches.load(Ordering::Relaxed),
        applied_seq: stats.applied_seq.load(Ordering::Relaxed),
        source_seq: stats.source_seq.load(Ordering::Relaxed),
    }
}

fn actor_status(a: &ActorView) -> ActorStatus {
    ActorStatus {
        name: a.name.to_owned(),
        state: if a.running { "running" } else { "stopped" }.into(),
        uptime_s: a.uptime.as_secs(),
        mailbox: a.mailbox,
        restarts: a.restarts,
    }
}

fn record(folder: &str, target: &str, e: &Event) -> EventRecord {
    let path = match &e.kind {
        EventKind::Change { path, .. } => Some(path.to_string()),
        _ => None,
    };
    EventRecord {
        unix_ms: unix_ms(e.at),
        folder: folder.to_owned(),
        target: target.to_owned(),
        kind: e.kind.word().to_owned(),
        path,
        detail: e.kind.to_string(),
    }
}

impl StatusSource for Hub {
    fn status(&self) -> NodeStatus {
        let mut folders = self.send_folders();
        folders.extend(self.receive_folders());
        NodeStatus {
            node: self.node.clone(),
            node_id: self.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            folders,
            history: lock(&self.history).iter().cloned().collect(),
            events: lock(&self.recent).iter().cloned().collect(),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.tx.subscribe()
    }
}
