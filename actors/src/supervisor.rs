//! The folder supervisor: runs one folder's live pipeline, restarts it with exponential
//! backoff when an actor fails, gives up past a restart budget (the folder is marked
//! failed, the process goes on), and shuts it down gracefully.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_engine::Seq;
use tokio::sync::oneshot;

use crate::differ::FinishSaving;
use crate::events::EventKind;
use crate::firstsync::FirstSync;
use crate::messages::{Applied, CurrentSeq, Failed, FlushNow};
use crate::persist::{SourceStore, TargetStore};
use crate::pipeline::{FolderJob, Pipeline, TargetSpec};
use crate::stats::Stats;
use crate::watcher::{SimulateOverflow, WatchOptions};

/// How failures are retried.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    /// Restarts allowed within `window` before the folder is marked failed.
    pub max_restarts: usize,
    /// The window restarts are counted in.
    pub window: Duration,
    /// Delay before the first restart; doubled for each further one in the window.
    pub backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
    /// After giving up, start afresh (with a new restart budget) this long later, in case
    /// the cause went away; `None`: stay failed.
    pub retry_failed_after: Option<Duration>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            retry_failed_after: Some(Duration::from_secs(600)),
        }
    }
}

/// Where a folder stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FolderState {
    /// Starting, or restarting after a failure.
    Starting,
    /// The initial sync is running.
    Syncing,
    /// Mirrored and following changes.
    Live,
    /// Given up after too many failures; the reason of the last.
    Failed(String),
    /// Shut down.
    Stopped,
}

impl FolderState {
    /// One word for the state: `starting`, `syncing`, `live`, `failed`, `stopped`.
    pub fn word(&self) -> &'static str {
        match self {
            FolderState::Starting => "starting",
            FolderState::Syncing => "syncing",
            FolderState::Live => "live",
            FolderState::Failed(_) => "failed",
            FolderState::Stopped => "stopped",
        }
    }
}

/// Supervises one folder.
pub struct FolderSupervisor {
    job: FolderJob,
    target: TargetSpec,
    watch: WatchOptions,
    policy: RestartPolicy,
    stats: Arc<Stats>,
    store: Option<Arc<dyn SourceStore>>,
    target_store: Option<Arc<dyn TargetStore>>,
    pipeline: Option<Pipeline>,
    generation: u64,
    /// The last generation whose failure was handled: one failing pipeline is one restart,
    /// however many of its actors or files report a failure before it is stopped.
    failed: Option<u64>,
    restarts: VecDeque<Instant>,
    state: FolderState,
    /// The current pipeline's first sync: `Syncing` turns `Live` when it is done.
    first: FirstSync,
    waiters: Vec<(Seq, oneshot::Sender<()>)>,
    on_failed: Option<oneshot::Sender<String>>,
}

/// A failure report tagged with the pipeline generation it came from, so that late
/// reports from a pipeline already replaced are not mistaken for new failures.
#[derive(Message)]
#[rtype(result = "()")]
struct Tagged {
    generation: u64,
    failed: Failed,
}

/// Forwards one pipeline generation's failures to the supervisor.
struct Monitor {
    generation: u64,
    to: Addr<FolderSupervisor>,
}

impl Actor for Monitor {
    type Context = Context<Self>;
}

impl Handler<Failed> for Monitor {
    type Result = ();
    fn handle(&mut self, failed: Failed, _: &mut Self::Context) {
        self.to.do_send(Tagged {
            generation: self.generation,
            failed,
        });
    }
}

impl FolderSupervisor {
    /// Moves to `state`, publishing the change.
    fn set_state(&mut self, state: FolderState) {
        if self.state != state {
            self.stats.events.publish(
                &self.job.folder,
                EventKind::State {
                    state: state.word().to_owned(),
                    reason: match &state {
                        FolderState::Failed(why) => Some(why.clone()),
                        _ => None,
                    },
                },
            );
        }
        self.state = state;
    }

    /// A supervisor for `job`, watching with `watch` and restarting under `policy`.
    /// `on_failed` hears the reason if the folder is given up on.
    pub fn new(
        job: FolderJob,
        watch: WatchOptions,
        policy: RestartPolicy,
        stats: Arc<Stats>,
        on_failed: Option<oneshot::Sender<String>>,
    ) -> Self {
        FolderSupervisor {
            job,
            target: TargetSpec::Local,
            watch,
            policy,
            stats,
            store: None,
            target_store: None,
            pipeline: None,
            generation: 0,
            failed: None,
            restarts: VecDeque::new(),
            state: FolderState::Starting,
            first: FirstSync::default(),
            waiters: Vec::new(),
            on_failed,
        }
    }

    /// Replicates to `target` instead of the local directory `job.target`.
    pub fn to_target(mut self, target: TargetSpec) -> Self {
        self.target = target;
        self
    }

    /// Keeps the source index in `store` between runs (and pipeline restarts).
    pub fn with_store(mut self, store: Arc<dyn SourceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps a local target's chunk lists in `store` between runs.
    pub fn with_target_store(mut self, store: Arc<dyn TargetStore>) -> Self {
        self.target_store = Some(store);
        self
    }

    fn launch(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let monitor = Monitor {
            generation,
            to: ctx.address(),
        }
        .start();
        let job = self.job.clone();
        let spec = self.target.clone();
        let watch = self.watch;
        let stats = self.stats.clone();
        let store = self.store.clone();
        let target_store = self.target_store.clone();
        let applied = ctx.address().recipient();
        self.first = FirstSync::default();
        self.set_state(FolderState::Starting);
        let start = async move {
            Pipeline::start_kept_with_target(
                &job,
                &spec,
                Some(watch),
                stats,
                monitor.recipient(),
                applied,
                store,
                target_store,
            )
            .await
        };
        ctx.wait(start.into_actor(self).map(move |res, act, ctx| match res {
            Ok(p) => {
                tracing::info!(folder = %act.job.folder, generation, "pipeline started: watcher, differ, sender, applier");
                // The Differ answers once its first scan is done, with the sequence it reached.
                let differ = p.differ.clone();
                let goal = async move { differ.send(CurrentSeq).await.ok() };
                ctx.spawn(goal.into_actor(act).map(move |seq, act, _| {
                    if let Some(seq) = seq.filter(|_| act.generation == generation) {
                        if act.first.goal(seq) {
                            act.first_sync_done();
                        }
                    }
                }));
                act.pipeline = Some(p);
                act.set_state(FolderState::Syncing);
            }
            Err(e) => act.on_failure("pipeline", e.to_string(), ctx),
        }));
    }

    /// The target holds what the first scan found: from now on the folder follows changes.
    fn first_sync_done(&mut self) {
        if self.state == FolderState::Syncing {
            tracing::info!(folder = %self.job.folder, "initial sync complete; following changes");
            self.set_state(FolderState::Live);
        }
    }

    /// Schedules a fresh start of a folder given up on, after `retry_failed_after`; a
    /// shutdown or another start in the meantime cancels it.
    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.policy.retry_failed_after else {
            return;
        };
        tracing::warn!(folder = %self.job.folder, "trying this folder again in {after:?}");
        let generation = self.generation;
        ctx.run_later(after, move |act, ctx| {
            if act.generation == generation && matches!(act.state, FolderState::Failed(_)) {
                tracing::info!(folder = %act.job.folder, "trying again after giving up");
                act.restarts.clear();
                act.launch(ctx);
            }
        });
    }

    fn on_failure(&mut self, actor: &str, reason: String, ctx: &mut Context<Self>) {
        if matches!(self.state, FolderState::Failed(_) | FolderState::Stopped) {
            return;
        }
        if self.failed == Some(self.generation) {
            tracing::info!(folder = %self.job.folder, actor, "also failed, restart already under way: {reason}");
            return;
        }
        self.failed = Some(self.generation);
        tracing::error!(folder = %self.job.folder, actor, "failed: {reason}");
        if let Some(p) = self.pipeline.take() {
            p.stop();
            tracing::info!(folder = %self.job.folder, "pipeline stopped");
        }
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.policy.max_restarts {
            let why = format!(
                "{actor} failed {} times within {:?}; giving up on this folder: {reason}",
                self.restarts.len() + 1,
                self.policy.window
            );
            tracing::error!(folder = %self.job.folder, "{why}");
            self.set_state(FolderState::Failed(why.clone()));
            if let Some(tx) = self.on_failed.take() {
                let _ = tx.send(why);
            }
            self.retry_later(ctx);
            return;
        }
        let n = self.restarts.len() as u32;
        let delay = self
            .policy
            .backoff
            .saturating_mul(2u32.saturating_pow(n))
            .min(self.policy.max_backoff);
        self.restarts.push_back(now);
        Stats::add(&self.stats.restarts, 1);
        self.stats.latency.reset_pending();
        self.stats.events.publish(
            &self.job.folder,
            EventKind::Restarting {
                actor: actor.to_owned(),
                attempt: n + 1,
                delay,
                reason: reason.clone(),
            },
        );
        self.set_state(FolderState::Starting);
        tracing::warn!(folder = %self.job.folder, actor, attempt = n + 1, "restarting the pipeline in {delay:?}");
        ctx.run_later(delay, |act, ctx| {
            if act.state == FolderState::Starting {
                act.launch(ctx);
            }
        });
    }
}

impl Actor for FolderSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.launch(ctx);
    }
}

impl Handler<Tagged> for FolderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Tagged, ctx: &mut Self::Context) {
        if msg.generation == self.generation {
            self.on_failure(msg.failed.actor, msg.failed.reason, ctx);
        }
    }
}

impl Handler<Applied> for FolderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Applied, _: &mut Self::Context) {
        self.stats
            .applied_seq
            .fetch_max(msg.seq.0, Ordering::Relaxed);
        self.stats.latency.applied(msg.seq);
        if self.first.applied(msg.seq) {
            self.first_sync_done();
        }
        let seq = msg.seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(s, _)| *s <= seq);
        self.waiters = waiting;
        for (_, tx) in ready {
            let _ = tx.send(());
        }
    }
}

/// The folder's state.
#[derive(Message)]
#[rtype(result = "FolderState")]
pub struct GetState;

impl Handler<GetState> for FolderSupervisor {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.clone())
    }
}

/// How often a shutdown waiting for the target's acknowledgement looks whether its link
/// went down (then nothing in flight can be acknowledged).
const LINK_CHECK: Duration = Duration::from_millis(50);

/// Resolves once the link to a remote target is down (at once if it is down now); never
/// for a local target, whose link is never down.
async fn link_down(stats: Arc<Stats>) {
    while stats.link.down_reason().is_none() {
        tokio::time::sleep(LINK_CHECK).await;
    }
}

/// Finishes the change in flight (everything the watcher has seen is applied), then stops
/// the pipeline. Answers once done, after `deadline`, or as soon as the link to a remote
/// target is down: an offline target has nothing in flight to wait for.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// Give up waiting for the target after this long.
    pub deadline: Duration,
}

impl Handler<Shutdown> for FolderSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> Self::Result {
        let Some(p) = &self.pipeline else {
            self.set_state(FolderState::Stopped);
            return Box::pin(actix::fut::ready(()));
        };
        let watcher = p.watcher.clone();
        let differ = p.differ.clone();
        let (tx, rx) = oneshot::channel();
        let folder = self.job.folder.clone();
        let flushed = async move {
            if let Some(w) = watcher {
                let _ = w.send(FlushNow).await;
            }
            differ.send(CurrentSeq).await.ok()
        };
        Box::pin(flushed.into_actor(self).then(move |seq, act, _| {
            match seq {
                Some(seq) if act.stats.applied_seq.load(Ordering::Relaxed) < seq.0 => act.waiters.push((seq, tx)),
                _ => {
                    let _ = tx.send(());
                }
            }
            let stats = act.stats.clone();
            async move {
                tokio::select! {
                    acked = tokio::time::timeout(msg.deadline, rx) => if acked.is_err() {
                        tracing::warn!(folder = %folder, "shutdown: the target did not acknowledge in time");
                    },
                    () = link_down(stats.clone()) => {
                        let why = stats.link.down_reason().unwrap_or_default();
                        tracing::info!(folder = %folder, "shutdown: the target is offline ({why}); not waiting for it");
                    }
                }
            }
            .into_actor(act)
            .then(|_, act, _| {
                // The source index is saved in full before the actors go, so the next run
                // can trust it for deltas.
                let differ = act.pipeline.as_ref().map(|p| p.differ.clone());
                async move {
                    if let Some(d) = differ {
                        let _ = d.send(FinishSaving).await;
                    }
                }
                .into_actor(act)
            })
            .map(|_, act, _| {
                if let Some(p) = act.pipeline.take() {
                    p.stop();
                }
                act.set_state(FolderState::Stopped);
                tracing::info!(folder = %act.job.folder, "stopped");
            })
        }))
    }
}

/// Test support: makes the Differ's hashing pool panic; the panic becomes an error, the
/// Differ reports it and the supervisor restarts the pipeline.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

impl Handler<InjectPanic> for FolderSupervisor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        if let Some(p) = &self.pipeline {
            p.differ.do_send(crate::differ::PanicInPool);
        }
    }
}

/// Test support: makes the Watcher behave as if the kernel's event queue overflowed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectOverflow;

impl Handler<InjectOverflow> for FolderSupervisor {
    type Result = ();

    fn handle(&mut self, _: InjectOverflow, _: &mut Self::Context) {
        if let Some(w) = self.pipeline.as_ref().and_then(|p| p.watcher.clone()) {
            w.do_send(SimulateOverflow);
        }
    }
}

/// Test support: the current pipeline reports `count` failures at once, as an Applier does
/// when several files fail in one pass.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectFailures {
    /// How many failures the pipeline reports.
    pub count: u32,
}

impl Handler<InjectFailures> for FolderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: InjectFailures, ctx: &mut Self::Context) {
        for i in 0..msg.count {
            ctx.address().do_send(Tagged {
                generation: self.generation,
                failed: Failed {
                    actor: "applier",
                    folder: self.job.folder.clone(),
                    reason: format!("injected failure {}", i + 1),
                },
            });
        }
    }
}
