//! What a replication's dashboard shows besides counters: each actor's lifecycle and mailbox
//! depth, and the change-to-applied latency histogram.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_engine::Seq;

/// Upper bounds of the latency buckets, in milliseconds (one more bucket holds the rest).
pub const LATENCY_BOUNDS_MS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 60000.0,
];

/// Live changes waiting for an acknowledgement are remembered up to this many; older ones are
/// forgotten (a target offline for long) rather than grow without bound.
const MAX_PENDING: usize = 4096;

/// Change-to-applied latency: from the first filesystem event of a batch to the target's
/// acknowledgement of the sequence that carried it.
#[derive(Debug, Default)]
pub struct Latency {
    inner: Mutex<LatencyInner>,
}

#[derive(Debug, Default)]
struct LatencyInner {
    pending: VecDeque<(Seq, Instant)>,
    counts: [u64; LATENCY_BOUNDS_MS.len() + 1],
    sum_ms: f64,
    count: u64,
}

/// A copy of the latency histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Bucket upper bounds, ms.
    pub bounds_ms: Vec<f64>,
    /// Observations per bucket (not cumulative); the last bucket is everything above.
    pub counts: Vec<u64>,
    /// Sum of all observations, ms.
    pub sum_ms: f64,
    /// Number of observations.
    pub count: u64,
}

impl Latency {
    /// A live change seen at `since` is carried by sequences up to `upto`.
    pub fn changed(&self, upto: Seq, since: Instant) {
        let mut g = self.lock();
        if g.pending.len() >= MAX_PENDING {
            g.pending.pop_front();
        }
        g.pending.push_back((upto, since));
    }

    /// The target acknowledged `seq`: every change carried by it is applied now.
    pub fn applied(&self, seq: Seq) {
        let now = Instant::now();
        let mut g = self.lock();
        while g.pending.front().is_some_and(|(s, _)| *s <= seq) {
            let Some((_, since)) = g.pending.pop_front() else {
                break;
            };
            g.observe(now.saturating_duration_since(since));
        }
    }

    /// Forgets changes still waiting: a restarted pipeline starts from a full sync.
    pub fn reset_pending(&self) {
        self.lock().pending.clear();
    }

    /// The histogram so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        let g = self.lock();
        LatencySnapshot {
            bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            counts: g.counts.to_vec(),
            sum_ms: g.sum_ms,
            count: g.count,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LatencyInner> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LatencyInner {
    fn observe(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }
}

/// Whether the link to a remote target is up; why not, when it is down.
#[derive(Debug, Default)]
pub struct LinkState {
    down: Mutex<Option<String>>,
}

impl LinkState {
    /// The link is up.
    pub fn up(&self) {
        *self.lock() = None;
    }

    /// The link is down (or not yet up), because of `why`.
    pub fn down(&self, why: impl Into<String>) {
        *self.lock() = Some(why.into());
    }

    /// Why the link is down; `None` when it is up or the target is local.
    pub fn down_reason(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The roles whose mailboxes are gauged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The Watcher.
    Watcher,
    /// The Differ.
    Differ,
    /// The Sender.
    Sender,
    /// The Applier, or the link actor standing in for a remote one.
    Target,
}

impl Role {
    /// The role's name, as actors log it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Watcher => "watcher",
            Role::Differ => "differ",
            Role::Sender => "sender",
            Role::Target => "applier",
        }
    }
}

/// Each actor's lifecycle and mailbox depth within one replication.
#[derive(Debug, Default)]
pub struct ActorBoard {
    records: Mutex<BTreeMap<&'static str, ActorRecord>>,
    mailbox: [AtomicU64; 4],
}

/// One actor's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActorRecord {
    /// When it (last) started.
    pub since: Instant,
    /// Whether it is running.
    pub running: bool,
    /// How many times an actor in this role was started.
    pub starts: u64,
}

/// One actor as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorView {
    /// Its role.
    pub name: &'static str,
    /// Running or stopped.
    pub running: bool,
    /// Time since it (last) started.
    pub uptime: Duration,
    /// Messages sent to it and not yet handled.
    pub mailbox: u64,
    /// Starts after the first.
    pub restarts: u64,
}

impl ActorBoard {
    /// An actor in `role` started.
    pub fn started(&self, role: &'static str) {
        let mut g = self.lock();
        let r = g.entry(role).or_insert(ActorRecord {
            since: Instant::now(),
            running: false,
            starts: 0,
        });
        r.since = Instant::now();
        r.running = true;
        r.starts += 1;
    }

    /// An actor in `role` stopped.
    pub fn stopped(&self, role: &'static str) {
        if let Some(r) = self.lock().get_mut(role) {
            r.running = false;
            r.since = Instant::now();
        }
        // Whatever was queued for it is gone with it.
        if let Some(i) = Self::slot_of(role) {
            self.mailbox[i].store(0, Ordering::Relaxed);
        }
    }

    /// A message was queued for `role`.
    pub fn queued(&self, role: Role) {
        self.mailbox[role as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A message queued for `role` is being handled.
    pub fn handled(&self, role: Role) {
        let _ =
            self.mailbox[role as usize].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Every actor seen so far, in name order.
    pub fn view(&self) -> Vec<ActorView> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(name, r)| ActorView {
                name,
                running: r.running,
                uptime: if r.running {
                    now.saturating_duration_since(r.since)
                } else {
                    Duration::ZERO
                },
                mailbox: Self::slot_of(name).map_or(0, |i| self.mailbox[i].load(Ordering::Relaxed)),
                restarts: r.starts.saturating_sub(1),
            })
            .collect()
    }

    fn slot_of(name: &str) -> Option<usize> {
        // The link actor standing in for a remote Applier has the Applier's mailbox slot.
        match name {
            "link" => Some(Role::Target as usize),
            _ => [Role::Watcher, Role::Differ, Role::Sender, Role::Target]
                .into_iter()
                .find(|r| r.name() == name)
                .map(|r| r as usize),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, ActorRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_each_change_once_when_acknowledged() {
        let l = Latency::default();
        let t0 = Instant::now();
        l.changed(Seq(3), t0);
        l.changed(Seq(5), t0);
        l.applied(Seq(4));
        assert_eq!(l.snapshot().count, 1);
        l.applied(Seq(4));
        assert_eq!(l.snapshot().count, 1);
        l.applied(Seq(9));
        let s = l.snapshot();
        assert_eq!(s.count, 2);
        assert_eq!(s.counts.iter().sum::<u64>(), 2);
        assert_eq!(s.counts.len(), s.bounds_ms.len() + 1);
    }

    #[test]
    fn board_tracks_restarts_and_mailboxes() {
        let b = ActorBoard::default();
        b.started("differ");
        b.queued(Role::Differ);
        b.queued(Role::Differ);
        b.handled(Role::Differ);
        let v = b.view();
        assert_eq!(v[0].mailbox, 1);
        assert_eq!(v[0].restarts, 0);
        b.stopped("differ");
        b.handled(Role::Differ);
        b.started("differ");
        let v = b.view();
        assert_eq!((v[0].mailbox, v[0].restarts, v[0].running), (0, 1, true));
    }
}
