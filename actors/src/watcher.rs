//! The Watcher: inotify (through notify) on every directory of a source folder, one watch
//! each, turning bursts of events into coalesced `Dirty` batches for the Differ.
//! Directories the folder's ignore rules exclude are not watched.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_engine::target::is_temp_name;
use ferry_engine::{IgnoreRules, RelPath};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot};

use crate::health::Role;
use crate::messages::{Dirty, Failed, FlushNow, FolderId, Rescan};
use crate::stats::Stats;

/// How long the first half of a rename (the name it left) holds its batch back for the
/// second (the name it took). The kernel queues both at once, but notify's thread hands
/// them over one by one and may be descheduled between the two: sent in two batches, the
/// rename would be replicated as a removal and a new copy. A file moved out of the folder
/// has no second half; its removal is sent this much later.
const RENAME_WAIT: Duration = Duration::from_millis(50);

/// Rename halves awaited beyond which the expired ones are dropped as the next arrives.
const UNPAIRED_SWEEP: usize = 1024;

/// Events buffered between notify's thread and the Watcher; when full, notify's thread
/// waits and the kernel queue absorbs the rest (and overflows into a rescan if it must).
const EVENT_LIMIT: usize = 1 << 18;

/// How the Watcher watches.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Quiet time after the last event before a batch is sent.
    pub debounce: Duration,
    /// A batch is sent at the latest this long after its first event, however busy (up to
    /// 50 ms later while the second half of a rename is awaited).
    pub max_delay: Duration,
    /// Full rescans as a safety net (`None` = off).
    pub rescan_every: Option<Duration>,
    /// Periodic scans only, no inotify (`Some(interval)`), for NFS, FUSE and the like.
    pub poll: Option<Duration>,
    /// Rescan interval used when inotify cannot watch everything (watch limit reached).
    pub fallback_poll: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(2),
            max_delay: Duration::from_millis(50),
            rescan_every: Some(Duration::from_secs(3600)),
            poll: None,
            fallback_poll: Duration::from_secs(10),
        }
    }
}

/// Watches one source folder.
pub struct Watcher {
    folder: FolderId,
    root: PathBuf,
    opts: WatchOptions,
    differ: Recipient<Dirty>,
    rescan: Recipient<Rescan>,
    monitor: Recipient<Failed>,
    stats: Arc<Stats>,
    ignore: IgnoreRules,
    notify: Option<RecommendedWatcher>,
    /// Watched directories below the root (the root's own watch is counted separately).
    watched: BTreeSet<RelPath>,
    root_watched: bool,
    /// Set when inotify could not watch everything: periodic rescans cover the gap.
    degraded: bool,
    /// The periodic rescans of a degraded watch are running.
    polling: bool,
    pending: BTreeSet<RelPath>,
    /// Directories whose own metadata changed (an entry in them was created, removed or renamed).
    touched: BTreeSet<RelPath>,
    /// Files written to since the last flush (see [`Dirty::written`]).
    written: BTreeSet<RelPath>,
    full_rescan: Option<String>,
    first_event: Option<Instant>,
    last_event: Instant,
    /// The first halves of renames (by notify's tracker, the inotify cookie) whose second
    /// half has not arrived yet, and when they did.
    unpaired: HashMap<usize, Instant>,
    /// How long a rename's first half holds its batch back for the second.
    rename_wait: Duration,
    timer: Option<SpawnHandle>,
    sending: bool,
    /// A private directory in the same inotify instance: a file created there on
    /// `FlushNow` comes back as an event after every event queued before it.
    barrier: Option<PathBuf>,
    barrier_seq: u64,
    /// The watch count this Watcher last added to the folder's counter.
    published: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    queue: Arc<EventQueue>,
}

/// Removes the barrier directories of processes that no longer run (a Watcher removes its
/// own when it stops, but a killed process cannot).
fn remove_stale_barriers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".ferry-barrier-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// One notify callback result carried into the actor, or word that some were dropped.
enum Notified {
    /// An event (or a watcher error).
    Event(notify::Result<Event>),
    /// Events were dropped because too many were queued.
    Dropped,
}

/// Events handed from notify's thread to the actor and not yet handled.
#[derive(Default)]
struct EventQueue {
    queued: std::sync::atomic::AtomicUsize,
    dropping: std::sync::atomic::AtomicBool,
}

impl Watcher {
    /// A Watcher for the folder at `root`, sending batches to the Differ.
    pub fn new(
        folder: FolderId,
        root: PathBuf,
        opts: WatchOptions,
        differ: Recipient<Dirty>,
        rescan: Recipient<Rescan>,
        monitor: Recipient<Failed>,
        stats: Arc<Stats>,
    ) -> Self {
        Watcher {
            folder,
            root,
            opts,
            differ,
            rescan,
            monitor,
            stats,
            ignore: IgnoreRules::default(),
            notify: None,
            watched: BTreeSet::new(),
            root_watched: false,
            degraded: false,
            polling: false,
            pending: BTreeSet::new(),
            touched: BTreeSet::new(),
            written: BTreeSet::new(),
            full_rescan: None,
            first_event: None,
            last_event: Instant::now(),
            unpaired: HashMap::new(),
            rename_wait: RENAME_WAIT,
            timer: None,
            sending: false,
            barrier: None,
            barrier_seq: 0,
            published: 0,
            flush_waiters: Vec::new(),
            queue: Arc::default(),
        }
    }

    /// Places no watches in the directories `ignore` excludes (events there would only
    /// lead to rescans that find nothing).
    pub fn with_ignore(mut self, ignore: IgnoreRules) -> Self {
        self.ignore = ignore;
        self
    }

    /// Adds this Watcher's change in watch count to the folder's counter (a replacement
    /// Watcher may already be counting while this one stops).
    fn publish_watches(&mut self) {
        let n = self.watched.len() as u64 + u64::from(self.root_watched);
        self.stats
            .watches
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .watches
            .fetch_sub(self.published, std::sync::atomic::Ordering::Relaxed);
        self.published = n;
    }

    /// Adds a watch on `dir` (`None` = the root). Returns false when inotify refused.
    fn watch(&mut self, dir: Option<&RelPath>) -> bool {
        if self.degraded {
            return false;
        }
        let Some(w) = self.notify.as_mut() else {
            return false;
        };
        let path = dir.map_or(self.root.clone(), |d| d.under(&self.root));
        match w.watch(&path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                match dir {
                    Some(d) => {
                        self.watched.insert(d.clone());
                    }
                    None => self.root_watched = true,
                }
                true
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                tracing::error!(
                    folder = %self.folder,
                    path = %path.display(),
                    "inotify watch limit reached: raise fs.inotify.max_user_watches \
                     (e.g. sysctl fs.inotify.max_user_watches=1048576); until then folder {} \
                     is rescanned every {:?} instead of watched",
                    self.folder,
                    self.opts.fallback_poll
                );
                self.degraded = true;
                false
            }
            Err(e) => {
                // The directory vanished or cannot be read: the scan of it reports why.
                tracing::debug!(folder = %self.folder, path = %path.display(), "not watched: {e}");
                true
            }
        }
    }

    /// Watches `dir` and every directory below it that is not watched yet.
    fn watch_tree(&mut self, dir: &RelPath) {
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            if self.ignore.is_ignored(&d, true) {
                continue;
            }
            if !self.watched.contains(&d) && !self.watch(Some(&d)) {
                return;
            }
            let Ok(items) = std::fs::read_dir(d.under(&self.root)) else {
                continue;
            };
            for item in items.flatten() {
                let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
                if let (true, Some(name)) = (is_dir, item.file_name().to_str()) {
                    if let Ok(child) = d.join(name) {
                        stack.push(child);
                    }
                }
            }
        }
    }

    /// Releases the watches on `dir` and everything below it.
    fn unwatch_tree(&mut self, dir: &RelPath) {
        let gone: Vec<RelPath> = self
            .watched
            .range(dir.clone()..)
            .take_while(|p| p.is_within(dir))
            .cloned()
            .collect();
        for d in gone {
            if let Some(w) = self.notify.as_mut() {
                // The kernel drops the watch of a deleted directory by itself; for a moved
                // one this releases it. Either way it is no longer ours.
                let _ = w.unwatch(&d.under(&self.root));
            }
            self.watched.remove(&d);
        }
    }

    /// Watches the root and every directory below it not watched yet.
    fn watch_all(&mut self) {
        if self.watch(None) {
            let top: Vec<RelPath> = std::fs::read_dir(&self.root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|i| i.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|i| RelPath::from_name(i.file_name().to_str()?).ok())
                .collect();
            for d in top {
                self.watch_tree(&d);
            }
        }
        self.publish_watches();
    }

    /// After events were lost: releases the watches of directories that are gone, then
    /// watches every directory there is, so that none created (or moved in, or replaced)
    /// meanwhile stays unwatched. Gone ones go first: a directory moved within the folder
    /// keeps its inode, and releasing its old path afterwards would drop the new watch.
    fn rewatch_all(&mut self) {
        if self.degraded || self.notify.is_none() {
            return;
        }
        let gone: Vec<RelPath> = self
            .watched
            .iter()
            .filter(|d| !std::fs::symlink_metadata(d.under(&self.root)).is_ok_and(|m| m.is_dir()))
            .cloned()
            .collect();
        for d in &gone {
            self.unwatch_tree(d);
        }
        // Watching a watched directory again is harmless (the same watch), and re-arms one
        // deleted and created again under the same name.
        self.watched.clear();
        self.watch_all();
    }

    fn relative(&self, path: &Path) -> Option<Option<RelPath>> {
        let rel = path.strip_prefix(&self.root).ok()?;
        if rel.as_os_str().is_empty() {
            return Some(None);
        }
        RelPath::new(rel.to_str()?).ok().map(Some)
    }

    fn on_event(&mut self, ev: notify::Result<Event>, ctx: &mut Context<Self>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => return self.need_rescan(format!("watcher error: {e}"), ctx),
        };
        if ev.need_rescan() {
            return self.need_rescan("the kernel's event queue overflowed".into(), ctx);
        }
        // Reads (our own scans and hashing among them) change nothing; a write is seen
        // through its modify events and, at the end, its close.
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return,
            _ => {}
        }
        self.pair_renames(&ev, ctx);
        for (i, path) in ev.paths.iter().enumerate() {
            // notify drops the watches of a path (and below) by itself when it reads that it
            // was deleted or moved away, even when a directory is back under that name by
            // the time the event is handled (`mv a b; mv b a`, a directory replaced by
            // another of the same name): then it must be watched afresh.
            let left = match ev.kind {
                EventKind::Remove(_) => true,
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => i == 0,
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => false,
                EventKind::Modify(ModifyKind::Name(_)) => true,
                _ => false,
            };
            if self.barrier.as_ref().is_some_and(|b| path.starts_with(b)) {
                self.on_barrier(path, ctx);
                continue;
            }
            let rel = match self.relative(path) {
                Some(Some(r)) => r,
                // The root's own metadata is not replicated; its removal or replacement is
                // seen by a full rescan.
                Some(None) => {
                    if matches!(
                        ev.kind,
                        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                    ) {
                        return self
                            .need_rescan("the folder root was removed or moved".into(), ctx);
                    }
                    continue;
                }
                None => {
                    tracing::warn!(folder = %self.folder, path = %path.display(), "event for a path that cannot be replicated");
                    continue;
                }
            };
            // Ferry's temp files (a Ferry writing into SRC) are never entries; a directory
            // so named is not one of them, nor is a name gone by now (a directory so named,
            // removed or renamed away: its rescan finds the removal, or nothing).
            // (The stat only for such a name: most events need none.)
            if is_temp_name(rel.name())
                && std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir())
            {
                continue;
            }
            if matches!(
                ev.kind,
                EventKind::Modify(ModifyKind::Data(_))
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
            ) {
                self.written.insert(rel.clone());
            }
            // Only a create, a removal or a rename can make a directory appear or vanish;
            // a write to a file (most events) needs no look at the disk here.
            let may_move_dirs = matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_))
            );
            if !may_move_dirs && !self.watched.contains(&rel) {
                self.pending.insert(rel);
                continue;
            }
            // The directory an entry appeared in or left has a new mtime of its own.
            if let Some(parent) = rel.parent() {
                self.touched.insert(parent);
            }
            // Watch a new directory before it is scanned, so nothing written into it is missed.
            match std::fs::symlink_metadata(path) {
                Ok(md) if md.is_dir() => {
                    if left {
                        self.unwatch_tree(&rel);
                    }
                    if !self.watched.contains(&rel) {
                        self.watch_tree(&rel);
                    }
                }
                _ => self.unwatch_tree(&rel),
            }
            self.pending.insert(rel);
        }
        self.poll_if_degraded(ctx);
        self.publish_watches();
        // Events that added nothing (temp names, barriers, the root's own metadata) start
        // no batch: its latency is measured from its first real change.
        if !self.pending.is_empty() {
            self.arm(ctx);
        }
    }

    /// Notes the first half of a rename, or its second: once no rename waits for its
    /// second half, the batch goes after the usual quiet time.
    fn pair_renames(&mut self, ev: &Event, ctx: &mut Context<Self>) {
        let Some(tracker) = ev.attrs.tracker() else {
            return;
        };
        let paired = match ev.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                let now = Instant::now();
                // Expired halves go at the next timer; one that moves only names that send
                // nothing (temp files) arms none, so they are dropped here as well.
                if self.unpaired.len() >= UNPAIRED_SWEEP {
                    let wait = self.rename_wait;
                    self.unpaired.retain(|_, at| now < *at + wait);
                }
                self.unpaired.insert(tracker, now);
                false
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                self.unpaired.remove(&tracker).is_some()
            }
            _ => false,
        };
        if paired && self.unpaired.is_empty() {
            // The timer may be set for the end of the wait: set again on `arm`.
            if let Some(t) = self.timer.take() {
                ctx.cancel_future(t);
            }
        }
    }

    fn need_rescan(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(folder = %self.folder, "full rescan: {reason}");
        self.rewatch_all();
        self.full_rescan = Some(reason);
        self.arm(ctx);
    }

    /// Schedules a flush `debounce` after the last event, at most `max_delay` after the first.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.last_event = now;
        let first = *self.first_event.get_or_insert(now);
        if self.timer.is_none() {
            let at = (now + self.opts.debounce).min(first + self.opts.max_delay);
            self.timer = Some(ctx.run_later(at - now, |act, ctx| act.on_timer(ctx)));
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let now = Instant::now();
        let first = self.first_event.unwrap_or(now);
        let quiet_at = self.last_event + self.opts.debounce;
        let deadline = first + self.opts.max_delay;
        if now < quiet_at && now < deadline {
            let at = quiet_at.min(deadline);
            self.timer = Some(ctx.run_later(at - now, |act, ctx| act.on_timer(ctx)));
            return;
        }
        // A rename half seen waits for its other half until `rename_wait` has passed (then
        // it was a move out of the folder), past the deadline by that much at most: a
        // stream of moves out of the folder must not hold its batch back for good.
        let wait = self.rename_wait;
        self.unpaired.retain(|_, at| now < *at + wait);
        let hold_until = self
            .unpaired
            .values()
            .min()
            .map(|at| (*at + wait).min(deadline + wait));
        if let Some(at) = hold_until.filter(|at| now < *at) {
            self.timer = Some(ctx.run_later(at - now, |act, ctx| act.on_timer(ctx)));
            return;
        }
        self.flush(ctx);
    }

    /// Sends what is pending to the Differ, one batch at a time.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_inner(false, ctx);
    }

    /// With `force`, sends even while an earlier batch is still being delivered (a
    /// shutdown must not leave anything pending behind it).
    fn flush_inner(&mut self, force: bool, ctx: &mut Context<Self>) {
        if self.pending.is_empty() && self.full_rescan.is_none() {
            // Nothing to send: the next batch's `since` is its own first event, not this one's.
            self.first_event = None;
            return;
        }
        if self.sending && !force {
            return;
        }
        let since = self.first_event.take().unwrap_or_else(Instant::now);
        self.sending = true;
        if let Some(reason) = self.full_rescan.take() {
            self.pending.clear();
            self.touched.clear();
            self.written.clear();
            // `send` queues the message now, so anything sent to the Differ after this
            // flush (a shutdown's `CurrentSeq`) is handled after it.
            self.stats.actors.queued(Role::Differ);
            let request = self.rescan.send(Rescan { reason });
            ctx.spawn(request.into_actor(self).map(|r, act, ctx| act.sent(r, ctx)));
            return;
        }
        let mut paths: Vec<RelPath> = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            // Sorted order puts a directory before its contents: keep only outermost paths.
            if paths.last().is_some_and(|last| p.is_within(last)) {
                continue;
            }
            paths.push(p);
        }
        // A directory rescanned as a whole needs no separate look at its metadata.
        let touched: Vec<RelPath> = std::mem::take(&mut self.touched)
            .into_iter()
            .filter(|d| !paths.iter().any(|p| d.is_within(p)))
            .collect();
        let written = std::mem::take(&mut self.written).into_iter().collect();
        self.stats.actors.queued(Role::Differ);
        let request = self.differ.send(Dirty {
            paths,
            touched,
            written,
            since,
        });
        ctx.spawn(request.into_actor(self).map(|r, act, ctx| act.sent(r, ctx)));
    }

    fn sent(&mut self, r: Result<(), MailboxError>, ctx: &mut Context<Self>) {
        self.sending = false;
        if let Err(e) = r {
            self.monitor.do_send(Failed {
                actor: "watcher",
                folder: self.folder.clone(),
                reason: format!("differ is gone: {e}"),
            });
            return ctx.stop();
        }
        if !self.pending.is_empty() || self.full_rescan.is_some() {
            self.flush(ctx);
        }
    }

    fn start_inotify(&mut self, ctx: &mut Context<Self>) {
        // The handler never blocks: this actor asks notify's thread to place watches and
        // waits for it, so a handler waiting for this actor to drain a full queue would wait
        // forever. Past EVENT_LIMIT queued events, events are dropped and a full rescan
        // stands in for them, as for an overflow of the kernel's queue.
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = self.queue.clone();
        let handler = move |ev: notify::Result<Event>| {
            use std::sync::atomic::Ordering::Relaxed;
            if queue.queued.load(Relaxed) >= EVENT_LIMIT {
                if !queue.dropping.swap(true, Relaxed) {
                    let _ = tx.send(Notified::Dropped);
                }
                return;
            }
            queue.queued.fetch_add(1, Relaxed);
            let _ = tx.send(Notified::Event(ev));
        };
        match notify::recommended_watcher(handler) {
            Ok(w) => self.notify = Some(w),
            Err(e) => {
                tracing::error!(folder = %self.folder, "cannot start inotify: {e}; rescanning every {:?} instead", self.opts.fallback_poll);
                self.degraded = true;
            }
        }
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
            );
        ctx.add_stream(stream);
        self.barrier = self.make_barrier();
        self.watch_all();
        self.poll_if_degraded(ctx);
    }

    /// Starts the periodic rescans the log promises once inotify cannot watch everything,
    /// whenever that happens (at start, or when a new directory hits the watch limit).
    fn poll_if_degraded(&mut self, ctx: &mut Context<Self>) {
        if self.degraded && !self.polling {
            self.polling = true;
            self.poll_every(
                self.opts.fallback_poll,
                "inotify cannot watch the whole folder",
                ctx,
            );
        }
    }

    /// Creates and watches the private barrier directory (outside the folder).
    fn make_barrier(&mut self) -> Option<PathBuf> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        remove_stale_barriers();
        let dir = std::env::temp_dir().join(format!(".ferry-barrier-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        match self
            .notify
            .as_mut()?
            .watch(&dir, RecursiveMode::NonRecursive)
        {
            Ok(()) => Some(dir),
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    /// An event in the barrier directory: every event before it has been handled, so the
    /// flushes waiting for it can go.
    fn on_barrier(&mut self, path: &Path, ctx: &mut Context<Self>) {
        let Some(n) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(m, _)| *m <= n);
        self.flush_waiters = waiting;
        if ready.is_empty() {
            return;
        }
        let _ = std::fs::remove_file(path);
        self.flush_inner(true, ctx);
        for (_, tx) in ready {
            let _ = tx.send(());
        }
    }

    fn poll_every(&mut self, every: Duration, why: &'static str, ctx: &mut Context<Self>) {
        ctx.run_interval(every, move |act, ctx| {
            if act.full_rescan.is_none() {
                act.full_rescan = Some(why.into());
            }
            act.flush(ctx);
        });
    }
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.actor_started(&self.folder, "watcher");
        match self.opts.poll {
            Some(every) => self.poll_every(every, "periodic scan (--poll)", ctx),
            None => self.start_inotify(ctx),
        }
        if let Some(every) = self.opts.rescan_every {
            ctx.run_interval(every, |act, ctx| {
                act.full_rescan
                    .get_or_insert_with(|| "periodic safety rescan".into());
                act.flush(ctx);
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notify = None;
        if let Some(b) = self.barrier.take() {
            let _ = std::fs::remove_dir_all(b);
        }
        self.stats
            .watches
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.stats.actor_stopped(&self.folder, "watcher");
    }
}

impl StreamHandler<Notified> for Watcher {
    fn handle(&mut self, item: Notified, ctx: &mut Self::Context) {
        use std::sync::atomic::Ordering::Relaxed;
        match item {
            Notified::Event(ev) => {
                self.queue.queued.fetch_sub(1, Relaxed);
                self.on_event(ev, ctx);
            }
            Notified::Dropped => {
                self.queue.dropping.store(false, Relaxed);
                self.need_rescan("too many events were queued; some were dropped".into(), ctx);
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// How long a flush waits for its barrier event before flushing what it has.
const BARRIER_WAIT: Duration = Duration::from_secs(2);

impl Handler<FlushNow> for Watcher {
    type Result = ResponseActFuture<Self, ()>;

    /// Answers once every change the kernel reported before this message is with the
    /// Differ: events still in the kernel's or notify's queue are drained first.
    fn handle(&mut self, _: FlushNow, ctx: &mut Self::Context) -> Self::Result {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let Some(barrier) = self.barrier.clone() else {
            self.flush_inner(true, ctx);
            return Box::pin(actix::fut::ready(()));
        };
        self.barrier_seq += 1;
        let n = self.barrier_seq;
        if std::fs::File::create(barrier.join(n.to_string())).is_err() {
            self.flush_inner(true, ctx);
            return Box::pin(actix::fut::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push((n, tx));
        Box::pin(
            async move { tokio::time::timeout(BARRIER_WAIT, rx).await.is_ok() }
                .into_actor(self)
                .map(|arrived, act, ctx| {
                    if !arrived {
                        tracing::warn!(folder = %act.folder, "flush barrier did not come back; flushing what has arrived");
                        act.flush_inner(true, ctx);
                    }
                }),
        )
    }
}

/// Test support: pretend the kernel's event queue overflowed.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct SimulateOverflow;

impl Handler<SimulateOverflow> for Watcher {
    type Result = ();

    fn handle(&mut self, _: SimulateOverflow, ctx: &mut Self::Context) {
        self.need_rescan("simulated event queue overflow".into(), ctx);
    }
}

impl Handler<crate::messages::Stop> for Watcher {
    type Result = ();

    fn handle(&mut self, _: crate::messages::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers_of_dead_processes_are_removed_and_live_ones_kept() {
        let tmp = std::env::temp_dir();
        // Above the kernel's largest pid: no such process can run.
        let dead = tmp.join(".ferry-barrier-999999999-0");
        let alive = tmp.join(format!(".ferry-barrier-{}-999999", std::process::id()));
        for d in [&dead, &alive] {
            std::fs::create_dir_all(d).unwrap();
        }
        remove_stale_barriers();
        assert!(!dead.exists(), "a dead process's barrier is left");
        assert!(alive.exists(), "a live process's barrier was removed");
        std::fs::remove_dir_all(&alive).unwrap();
    }

    /// Stands in for the Differ: hands every `Dirty` batch to the test.
    struct Collector(mpsc::UnboundedSender<Dirty>);

    impl Actor for Collector {
        type Context = Context<Self>;
    }

    impl Handler<Dirty> for Collector {
        type Result = ();
        fn handle(&mut self, d: Dirty, _: &mut Self::Context) {
            let _ = self.0.send(d);
        }
    }

    impl Handler<Rescan> for Collector {
        type Result = ();
        fn handle(&mut self, _: Rescan, _: &mut Self::Context) {}
    }

    impl Handler<Failed> for Collector {
        type Result = ();
        fn handle(&mut self, f: Failed, _: &mut Self::Context) {
            panic!("the watcher failed: {}", f.reason);
        }
    }

    /// How long a batch may take to reach the Differ.
    const BATCH_DEADLINE: Duration = Duration::from_secs(20);

    /// An event as notify's thread hands it over.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Inject(Event);

    impl Handler<Inject> for Watcher {
        type Result = ();
        fn handle(&mut self, Inject(ev): Inject, ctx: &mut Self::Context) {
            self.on_event(Ok(ev), ctx);
        }
    }

    /// A Watcher of an empty folder whose renames wait `rename_wait` for their second
    /// half, with its watches placed, and the batches it sends.
    async fn watching(
        src: &Path,
        rename_wait: Duration,
    ) -> (Addr<Watcher>, mpsc::UnboundedReceiver<Dirty>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let collector = Collector(tx).start();
        let mut watcher = Watcher::new(
            FolderId::new("f").unwrap(),
            src.to_owned(),
            WatchOptions::default(),
            collector.clone().recipient(),
            collector.clone().recipient(),
            collector.recipient(),
            Arc::default(),
        );
        watcher.rename_wait = rename_wait;
        let watcher = watcher.start();
        watcher.send(FlushNow).await.unwrap();
        (watcher, rx)
    }

    /// notify's event for one half of the rename `tracker`.
    fn rename_half(mode: RenameMode, tracker: usize, paths: &[&Path]) -> Inject {
        let mut ev = Event::new(EventKind::Modify(ModifyKind::Name(mode))).set_tracker(tracker);
        for p in paths {
            ev = ev.add_path(p.to_path_buf());
        }
        Inject(ev)
    }

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// The next batch the Watcher sends, which must come within [`BATCH_DEADLINE`].
    async fn next_batch(rx: &mut mpsc::UnboundedReceiver<Dirty>, what: &str) -> Dirty {
        tokio::time::timeout(BATCH_DEADLINE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no batch within the deadline"))
            .expect("the collector is running")
    }

    #[actix_rt::test]
    async fn a_rename_whose_halves_come_apart_is_sent_in_one_batch() {
        let src = tempfile::tempdir().unwrap();
        let (watcher, mut rx) = watching(src.path(), BATCH_DEADLINE).await;
        let (from, to) = (src.path().join("keep.txt"), src.path().join("kept.txt"));
        watcher
            .send(rename_half(RenameMode::From, 7, &[&from]))
            .await
            .unwrap();
        // notify's thread descheduled between the two halves for many debounce spells
        // (the condition under test, not a wait for anything).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "the first half was sent alone");
        watcher
            .send(rename_half(RenameMode::To, 7, &[&to]))
            .await
            .unwrap();
        watcher
            .send(rename_half(RenameMode::Both, 7, &[&from, &to]))
            .await
            .unwrap();
        let batch = next_batch(&mut rx, "the rename made whole").await;
        assert_eq!(batch.paths, vec![rel("keep.txt"), rel("kept.txt")]);
    }

    #[actix_rt::test]
    async fn a_stream_of_moves_out_of_the_folder_does_not_hold_its_batch_back_for_good() {
        let src = tempfile::tempdir().unwrap();
        let (watcher, mut rx) = watching(src.path(), Duration::from_millis(30)).await;
        // A move out of the folder every 5 ms, each waiting 30 ms for a second half that
        // never comes, for up to 10 s: the batch goes at the deadline (50 ms) plus one
        // wait, while they still come.
        let mut batch = None;
        for i in 0..2000 {
            let gone = src.path().join(format!("gone{i}"));
            watcher
                .send(rename_half(RenameMode::From, i, &[&gone]))
                .await
                .unwrap();
            if let Ok(b) = rx.try_recv() {
                batch = Some(b);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let batch = batch.expect("no batch while the moves kept coming");
        assert!(batch.paths.contains(&rel("gone0")), "{:?}", batch.paths);
    }

    #[actix_rt::test]
    async fn rename_halves_that_send_nothing_are_not_kept_past_their_wait() {
        let src = tempfile::tempdir().unwrap();
        let tmp = |i: usize| src.path().join(format!(".ferry-tmp-1-0123abcd-{i}"));
        // Ferry's temp files, which are never entries (so long as they are files).
        for i in 0..3 * UNPAIRED_SWEEP {
            std::fs::write(tmp(i), "x").unwrap();
        }
        let (watcher, _rx) = watching(src.path(), Duration::from_millis(1)).await;
        // Moved out of the folder: nothing to send, so no timer sweeps their halves.
        for i in 0..3 * UNPAIRED_SWEEP {
            let tmp = tmp(i);
            watcher
                .send(rename_half(RenameMode::From, i, &[&tmp]))
                .await
                .unwrap();
            if i % UNPAIRED_SWEEP == 0 {
                // Longer than the wait (the condition under test, not a wait for anything).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let kept = watcher.send(Unpaired).await.unwrap();
        assert!(kept <= 2 * UNPAIRED_SWEEP, "{kept} rename halves kept");
    }

    /// How many rename halves the Watcher awaits.
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Unpaired;

    impl Handler<Unpaired> for Watcher {
        type Result = usize;
        fn handle(&mut self, _: Unpaired, _: &mut Self::Context) -> usize {
            self.unpaired.len()
        }
    }

    #[actix_rt::test]
    async fn a_move_out_of_the_folder_is_sent_once_the_wait_for_its_other_half_is_over() {
        let src = tempfile::tempdir().unwrap();
        let (watcher, mut rx) = watching(src.path(), Duration::from_millis(30)).await;
        let gone = src.path().join("gone.txt");
        let before = Instant::now();
        watcher
            .send(rename_half(RenameMode::From, 9, &[&gone]))
            .await
            .unwrap();
        let batch = next_batch(&mut rx, "a removal without a second half").await;
        assert_eq!(batch.paths, vec![rel("gone.txt")]);
        assert!(
            before.elapsed() >= Duration::from_millis(30),
            "sent before the wait for the second half was over"
        );
    }

    #[actix_rt::test]
    async fn a_batch_is_timed_from_its_own_first_change_not_from_earlier_events_that_sent_nothing()
    {
        let src = tempfile::tempdir().unwrap();
        // Its watches placed (by a flush, whose barrier events send nothing).
        let (watcher, mut rx) = watching(src.path(), RENAME_WAIT).await;
        // An event that sends nothing (one of the Applier's temp names), handled by the time
        // the flush answers.
        std::fs::write(src.path().join(".ferry-tmp-1-0123abcd-1"), "x").unwrap();
        watcher.send(FlushNow).await.unwrap();
        // An idle spell (the condition under test, not a wait for anything).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = Instant::now();
        std::fs::write(src.path().join("real"), "y").unwrap();
        let batch = next_batch(&mut rx, "a write after an idle spell").await;
        assert_eq!(batch.paths, vec![rel("real")]);
        assert!(
            batch.since >= before,
            "the batch is timed from {:?} before its first change",
            before - batch.since
        );
    }
}
