//! The embedding API: start a supervised live replication of one folder from inside any
//! actix (or actix-web) application, follow its events and status, and stop it.
//!
//! ```
//! use std::time::Duration;
//! use ferry_actors::{EventKind, FolderId, Replication};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let (source, target) = (dir.path().join("photos"), dir.path().join("backup"));
//! # std::fs::create_dir(&source).unwrap();
//! # std::fs::write(source.join("a.jpg"), b"...").unwrap();
//! actix::System::new().block_on(async move {
//!     // Inside an actix system (an actix-web handler, `#[actix::main]`, ...).
//!     let replication = Replication::builder(FolderId::new("photos").unwrap(), &source)
//!         .to_dir(&target)
//!         .start()
//!         .unwrap();
//!     let mut events = replication.subscribe();
//!     // The initial sync creates a.jpg; every later change arrives the same way.
//!     while let Ok(event) = events.recv().await {
//!         if let EventKind::Change { path, .. } = &event.kind {
//!             println!("{}: {}", event.folder, event.kind);
//!             if path.as_str() == "a.jpg" {
//!                 break;
//!             }
//!         }
//!     }
//!     replication.stop(Duration::from_secs(10)).await;
//! });
//! # assert_eq!(std::fs::read(dir.path().join("backup/a.jpg")).unwrap(), b"...");
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ferry_engine::{ChunkParams, IgnoreRules};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::health::{ActorView, LatencySnapshot};
use crate::messages::FolderId;
use crate::persist::{SourceStore, TargetStore};
use crate::pipeline::{FolderJob, TargetSpec};
use crate::stats::{Stats, StatsSnapshot};
use crate::supervisor::{FolderState, FolderSupervisor, GetState, RestartPolicy, Shutdown};
use crate::watcher::WatchOptions;

/// Builds a [`Replication`]; see [`Replication::builder`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct ReplicationBuilder {
    folder: FolderId,
    source: PathBuf,
    target: Option<(PathBuf, TargetSpec)>,
    checksum: bool,
    durable: bool,
    params: ChunkParams,
    watch: WatchOptions,
    policy: RestartPolicy,
    stats: Option<Arc<Stats>>,
    store: Option<Arc<dyn SourceStore>>,
    target_store: Option<Arc<dyn TargetStore>>,
    ignore: IgnoreRules,
}

/// A running, supervised replication of one folder to one target.
pub struct Replication {
    folder: FolderId,
    supervisor: Addr<FolderSupervisor>,
    stats: Arc<Stats>,
}

/// A point-in-time view of a replication.
#[derive(Clone, Debug)]
pub struct ReplicationStatus {
    /// The folder.
    pub folder: FolderId,
    /// Where it stands.
    pub state: FolderState,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// Its actors.
    pub actors: Vec<ActorView>,
    /// Change-to-applied latency.
    pub latency: LatencySnapshot,
    /// Files and bytes the current plan still has to write.
    pub remaining: (u64, u64),
    /// The highest sequence the target acknowledged.
    pub applied_seq: u64,
}

impl Replication {
    /// Starts describing a replication of `source` (a directory that must exist).
    pub fn builder(folder: FolderId, source: impl Into<PathBuf>) -> ReplicationBuilder {
        ReplicationBuilder {
            folder,
            source: source.into(),
            target: None,
            checksum: false,
            durable: true,
            params: ChunkParams::default(),
            watch: WatchOptions::default(),
            policy: RestartPolicy::default(),
            stats: None,
            store: None,
            target_store: None,
            ignore: IgnoreRules::default(),
        }
    }

    /// The folder replicated.
    pub fn folder(&self) -> &FolderId {
        &self.folder
    }

    /// Every event from now on: changes applied, actors started and stopped, restarts,
    /// state changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.stats.events.subscribe()
    }

    /// The live counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Where the replication stands (`Stopped` once it is gone).
    pub async fn state(&self) -> FolderState {
        self.supervisor
            .send(GetState)
            .await
            .unwrap_or(FolderState::Stopped)
    }

    /// State, counters, actors and latency, read now.
    pub async fn status(&self) -> ReplicationStatus {
        let state = self.state().await;
        let (done, planned, written, bytes_planned) = self.stats.progress();
        ReplicationStatus {
            folder: self.folder.clone(),
            state,
            stats: self.stats.snapshot(),
            actors: self.stats.actors.view(),
            latency: self.stats.latency.snapshot(),
            remaining: (
                planned.saturating_sub(done),
                bytes_planned.saturating_sub(written),
            ),
            applied_seq: self.stats.applied_seq.load(Ordering::Relaxed),
        }
    }

    /// Finishes the change in flight (waiting at most `deadline` for the target), then
    /// stops every actor of the replication.
    pub async fn stop(self, deadline: Duration) {
        let _ = self.supervisor.send(Shutdown { deadline }).await;
        self.supervisor.do_send(StopSupervisor);
    }
}

impl ReplicationBuilder {
    /// Mirrors into the local directory `target` (created if its parent exists).
    pub fn to_dir(mut self, target: impl Into<PathBuf>) -> Self {
        self.target = Some((target.into(), TargetSpec::Local));
        self
    }

    /// Mirrors into a target reached through `spec` (e.g. a remote node's connector);
    /// `name` says which, in logs and errors.
    pub fn to_target(mut self, name: impl Into<PathBuf>, spec: TargetSpec) -> Self {
        self.target = Some((name.into(), spec));
        self
    }

    /// Compares content even when size and mtime agree.
    pub fn checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self
    }

    /// fsyncs data and directories before acknowledging (on by default).
    pub fn durable(mut self, on: bool) -> Self {
        self.durable = on;
        self
    }

    /// Chunker parameters (both sides must agree).
    pub fn chunk_params(mut self, params: ChunkParams) -> Self {
        self.params = params;
        self
    }

    /// How changes are watched, debounced and rescanned.
    pub fn watch(mut self, watch: WatchOptions) -> Self {
        self.watch = watch;
        self
    }

    /// How failures are retried.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Counts into `stats` instead of a fresh set (to share them with a dashboard).
    pub fn stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Leaves out what `rules` ignore, on both sides: never sent, never deleted.
    pub fn ignore(mut self, rules: IgnoreRules) -> Self {
        self.ignore = rules;
        self
    }

    /// Keeps the source index in `store`, so a restart rescans without rehashing and a
    /// remote target resumes where it left off.
    pub fn source_store(mut self, store: Arc<dyn SourceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps a local target's chunk lists in `store`, so a restarted replication reuses
    /// the target's chunks without reading its files again.
    pub fn target_store(mut self, store: Arc<dyn TargetStore>) -> Self {
        self.target_store = Some(store);
        self
    }

    /// Checks the description and starts the replication. Must be called inside a running
    /// actix system (an error, not a panic, otherwise).
    pub fn start(self) -> Result<Replication> {
        let invalid =
            |why: String| Error::Stopped(format!("replication of {}: {why}", self.folder));
        // Starting an actor outside a running system panics inside actix: say so instead.
        if actix::System::try_current().is_none() || tokio::runtime::Handle::try_current().is_err()
        {
            return Err(invalid(
                "`start` was called outside a running actix system: call it inside \
                 `actix::System::new().block_on(..)` or an `#[actix::main]` function"
                    .into(),
            ));
        }
        let Some((target, spec)) = self.target else {
            return Err(invalid(
                "no target: call `to_dir` or `to_target` before `start`".into(),
            ));
        };
        if !self.source.is_dir() {
            return Err(invalid(format!(
                "the source {} is not a directory",
                self.source.display()
            )));
        }
        if matches!(spec, TargetSpec::Local) {
            prepare_dir(&target).map_err(invalid)?;
            let (src, dst) = (canonical(&self.source), canonical(&target));
            if src.starts_with(&dst) || dst.starts_with(&src) {
                return Err(invalid(format!(
                    "{} and {} overlap: a folder cannot mirror into itself",
                    self.source.display(),
                    target.display()
                )));
            }
        }
        let stats = self.stats.unwrap_or_default();
        let job = FolderJob {
            folder: self.folder.clone(),
            source: self.source,
            target,
            checksum: self.checksum,
            dry_run: false,
            durable: self.durable,
            params: self.params,
            ignore: self.ignore,
            remote: false,
        };
        let mut supervisor =
            FolderSupervisor::new(job, self.watch, self.policy, stats.clone(), None)
                .to_target(spec);
        if let Some(store) = self.store {
            supervisor = supervisor.with_store(store);
        }
        if let Some(store) = self.target_store {
            supervisor = supervisor.with_target_store(store);
        }
        let supervisor = supervisor.start();
        Ok(Replication {
            folder: self.folder,
            supervisor,
            stats,
        })
    }
}

/// Creates `dir` if it is missing and its parent exists; it must end up a directory.
fn prepare_dir(dir: &Path) -> std::result::Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(format!("cannot use {} as the target: {e}", dir.display())),
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Stops the supervisor actor itself once its pipeline is shut down.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopSupervisor;

impl Handler<StopSupervisor> for FolderSupervisor {
    type Result = ();

    fn handle(&mut self, _: StopSupervisor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use std::time::Instant;

    /// Polls `probe` until it holds or `deadline` passes, yielding to the actors between tries.
    async fn within(deadline: Duration, mut probe: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + deadline;
        while !probe() {
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[test]
    fn starting_outside_an_actix_system_is_an_error_not_a_panic() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let start = || {
            Replication::builder(FolderId::new("f").unwrap(), src.path())
                .to_dir(dst.path())
                .start()
        };
        // No runtime at all, then a system made but not running.
        let err = start().err().expect("no system: an error");
        assert!(
            err.to_string().contains("outside a running actix system"),
            "{err}"
        );
        let _system = actix::System::new();
        let err = start().err().expect("a system not running: an error");
        assert!(
            err.to_string().contains("outside a running actix system"),
            "{err}"
        );
    }

    #[actix_rt::test]
    async fn a_live_change_carries_its_directory_mtime() {
        use std::time::SystemTime;
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/a"), b"a").unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        std::fs::File::open(src.join("d"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let r = Replication::builder(FolderId::new("f").unwrap(), &src)
            .to_dir(&dst)
            .durable(false)
            .start()
            .unwrap();
        let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let synced = within(Duration::from_secs(20), || {
            mtime(&dst.join("d")) == Some(old)
        })
        .await;
        assert!(synced, "initial sync did not set d's mtime");
        // Creating an entry changes the directory's own mtime: the mirror must follow.
        std::fs::write(src.join("d/new"), b"n").unwrap();
        let want = mtime(&src.join("d"));
        assert_ne!(want, Some(old));
        let followed = within(Duration::from_secs(20), || {
            dst.join("d/new").exists() && mtime(&dst.join("d")) == want
        })
        .await;
        assert!(
            followed,
            "d's mtime not replicated: source {want:?}, target {:?}",
            mtime(&dst.join("d"))
        );
        r.stop(Duration::from_secs(10)).await;
    }

    #[actix_rt::test]
    async fn builder_refuses_a_missing_target_or_source() {
        let tmp = tempfile::tempdir().unwrap();
        let id = FolderId::new("f").unwrap();
        let err = Replication::builder(id.clone(), tmp.path())
            .start()
            .err()
            .unwrap();
        assert!(err.to_string().contains("no target"), "{err}");
        let err = Replication::builder(id.clone(), tmp.path().join("missing"))
            .to_dir(tmp.path().join("dst"))
            .start()
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = Replication::builder(id, tmp.path())
            .to_dir(tmp.path().join("inside"))
            .start()
            .err()
            .unwrap();
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[actix_rt::test]
    async fn replicates_publishes_events_and_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        let r = Replication::builder(FolderId::new("f").unwrap(), &src)
            .to_dir(&dst)
            .durable(false)
            .start()
            .unwrap();
        let mut events = r.subscribe();
        let deadline = Instant::now() + Duration::from_secs(20);
        // The initial sync creates a.txt; then a live change creates b.txt.
        let mut seen_a = false;
        let mut seen_b = false;
        while !(seen_a && seen_b) {
            assert!(Instant::now() < deadline, "events did not arrive");
            let next = tokio::time::timeout(Duration::from_secs(20), events.recv()).await;
            let e = next
                .expect("an event in time")
                .expect("the channel is open");
            if let EventKind::Change { path, .. } = &e.kind {
                if path.as_str() == "a.txt" {
                    seen_a = true;
                    std::fs::write(src.join("b.txt"), b"world").unwrap();
                }
                seen_b |= path.as_str() == "b.txt";
            }
        }
        assert_eq!(std::fs::read(dst.join("b.txt")).unwrap(), b"world");
        let status = r.status().await;
        assert_eq!(status.state, FolderState::Live);
        assert!(status
            .actors
            .iter()
            .any(|a| a.name == "applier" && a.running));
        assert!(status.stats.created >= 2);
        let stats = r.stats().clone();
        r.stop(Duration::from_secs(10)).await;
        let stopped = within(Duration::from_secs(10), || {
            stats.actors.view().iter().all(|a| !a.running)
        })
        .await;
        assert!(stopped, "actors still running: {:?}", stats.actors.view());
    }
}
