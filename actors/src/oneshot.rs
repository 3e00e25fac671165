//! The one-shot pipeline: Differ → Sender → Applier in this process, finished when the
//! Applier acknowledges the last sequence.

use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::{Plan, Seq};
use tokio::sync::oneshot;

use crate::applier::Retire;
use crate::differ::FinishSaving;
use crate::error::{Error, Result};
use crate::firstsync::FirstSync;
use crate::messages::{Applied, CurrentSeq, Failed, SkippedPath};
use crate::persist::{SourceStore, TargetStore};
use crate::pipeline::{FolderJob, LinkTaps, Pipeline, TargetSpec};
use crate::stats::{Stats, StatsSnapshot};

/// What a one-shot sync should do.
pub type SyncJob = FolderJob;

/// What a one-shot sync keeps between runs: the source index (the next run rehashes only
/// files whose stat changed) and a local target's chunk lists (it reads no target file
/// whose stat is as saved).
pub struct Kept {
    /// The source index's store.
    pub source: Arc<dyn SourceStore>,
    /// A local target's store of chunk lists (a remote target keeps its own).
    pub target: Option<Arc<dyn TargetStore>>,
}

/// The result of a one-shot sync.
#[derive(Clone, Debug)]
pub struct SyncReport {
    /// Counters at the end of the run.
    pub stats: StatsSnapshot,
    /// Paths the Applier left as they were, with reasons.
    pub skipped: Vec<SkippedPath>,
    /// With `dry_run`, the plan that would have been applied.
    pub plan: Option<Plan>,
}

/// How a run ended: the acknowledgement that completed it, or why it failed.
type Ending = std::result::Result<Applied, String>;

/// Hears the end of the run: the target's acknowledgement of everything the source's first
/// scan found ([`FirstSync`]), or a failure.
struct Completion {
    done: Option<oneshot::Sender<Ending>>,
    first: FirstSync,
    /// The newest acknowledgement so far.
    last: Option<Applied>,
}

impl Completion {
    fn new(done: oneshot::Sender<Ending>) -> Self {
        Completion {
            done: Some(done),
            first: FirstSync::default(),
            last: None,
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        if let (Some(tx), Some(last)) = (self.done.take(), self.last.take()) {
            let _ = tx.send(Ok(last));
        }
        ctx.stop();
    }
}

impl Actor for Completion {
    type Context = Context<Self>;
}

impl Handler<Applied> for Completion {
    type Result = ();
    fn handle(&mut self, msg: Applied, ctx: &mut Self::Context) {
        let seq = msg.seq;
        if self.last.as_ref().is_none_or(|l| seq >= l.seq) {
            self.last = Some(msg);
        }
        if self.first.applied(seq) {
            self.finish(ctx);
        }
    }
}

/// → Completion: the sequence the source reached with its first scan.
#[derive(Message)]
#[rtype(result = "()")]
struct Goal(Seq);

impl Handler<Goal> for Completion {
    type Result = ();
    fn handle(&mut self, msg: Goal, ctx: &mut Self::Context) {
        if self.first.goal(msg.0) {
            self.finish(ctx);
        }
    }
}

impl Handler<Failed> for Completion {
    type Result = ();
    fn handle(&mut self, msg: Failed, ctx: &mut Self::Context) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Err(format!(
                "{} of folder {}: {}",
                msg.actor, msg.folder, msg.reason
            )));
        }
        ctx.stop();
    }
}

/// Runs a one-shot mirror of `job.source` into `job.target` on the current actix system,
/// updating `stats` as it goes.
pub async fn run_sync(job: SyncJob, stats: Arc<Stats>) -> Result<SyncReport> {
    run_sync_with(job, stats, LinkTaps::default()).await
}

/// [`run_sync`] with the Sender ↔ Applier links passed through `taps`.
pub async fn run_sync_with(job: SyncJob, stats: Arc<Stats>, taps: LinkTaps) -> Result<SyncReport> {
    let (tx, rx) = oneshot::channel();
    let completion = Completion::new(tx).start();
    let pipeline = Pipeline::start_with(
        &job,
        None,
        stats.clone(),
        completion.clone().recipient(),
        completion.clone().recipient(),
        taps,
    )
    .await?;
    finish(pipeline, completion, rx, stats).await
}

/// [`run_sync`] towards the target `spec` names (`job.target` is used only when local).
pub async fn run_sync_to(job: SyncJob, spec: &TargetSpec, stats: Arc<Stats>) -> Result<SyncReport> {
    run_sync_kept(job, spec, stats, None).await
}

/// [`run_sync_to`], loading what `kept` holds and saving to it. A run that ends well
/// saves everything before it returns, and marks the saved index complete (a clean stop).
pub async fn run_sync_kept(
    job: SyncJob,
    spec: &TargetSpec,
    stats: Arc<Stats>,
    kept: Option<Kept>,
) -> Result<SyncReport> {
    let (tx, rx) = oneshot::channel();
    let completion = Completion::new(tx).start();
    let (store, target_store) = match kept {
        Some(k) => (Some(k.source), k.target),
        None => (None, None),
    };
    let keeps = store.is_some();
    let pipeline = Pipeline::start_kept_with_target(
        &job,
        spec,
        None,
        stats.clone(),
        completion.clone().recipient(),
        completion.clone().recipient(),
        store,
        target_store,
    )
    .await?;
    let outcome = outcome(&pipeline, completion, rx).await;
    if keeps && matches!(outcome, Ok(Ok(_))) {
        // Both answer once what they queued is on disk.
        let _ = pipeline.differ.send(FinishSaving).await;
        if let Some(applier) = &pipeline.applier {
            let _ = applier.send(Retire).await;
        }
    }
    report(pipeline, outcome, stats)
}

/// Waits for the run's end, stops its actors and reports.
async fn finish(
    pipeline: Pipeline,
    completion: Addr<Completion>,
    rx: oneshot::Receiver<Ending>,
    stats: Arc<Stats>,
) -> Result<SyncReport> {
    let outcome = outcome(&pipeline, completion, rx).await;
    report(pipeline, outcome, stats)
}

/// How the run ends. The Differ answers `CurrentSeq` only once its first scan is done (the
/// scan holds its mailbox), with the sequence that scan reached: the goal.
async fn outcome(
    pipeline: &Pipeline,
    completion: Addr<Completion>,
    rx: oneshot::Receiver<Ending>,
) -> std::result::Result<Ending, oneshot::error::RecvError> {
    let differ = pipeline.differ.clone();
    actix::spawn(async move {
        // A Differ that stops first reports why through `Failed`.
        if let Ok(seq) = differ.send(CurrentSeq).await {
            completion.do_send(Goal(seq));
        }
    });
    rx.await
}

/// Stops the actors and reports how the run ended.
fn report(
    pipeline: Pipeline,
    outcome: std::result::Result<Ending, oneshot::error::RecvError>,
    stats: Arc<Stats>,
) -> Result<SyncReport> {
    pipeline.stop();
    let outcome =
        outcome.map_err(|_| Error::Stopped("the pipeline stopped without acknowledging".into()))?;
    match outcome {
        Ok(applied) => Ok(SyncReport {
            stats: stats.snapshot(),
            skipped: applied.skipped,
            plan: applied.dry_run_plan,
        }),
        Err(reason) => Err(Error::Stopped(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::FolderId;

    fn applied(seq: u64) -> Applied {
        Applied {
            folder: FolderId::new("f").unwrap(),
            seq: Seq(seq),
            skipped: Vec::new(),
            dry_run_plan: None,
            counts: Default::default(),
        }
    }

    /// Feeds `steps` to a Completion; the sequence it ended with, if it did.
    fn ends_with(steps: Vec<Result<u64, u64>>) -> Option<u64> {
        actix::System::new().block_on(async move {
            let (tx, mut rx) = oneshot::channel();
            let c = Completion::new(tx).start();
            for step in steps {
                match step {
                    Ok(seq) => c.send(applied(seq)).await,
                    Err(goal) => c.send(Goal(Seq(goal))).await,
                }
                .ok();
            }
            rx.try_recv().ok().map(|r| r.unwrap().seq.0)
        })
    }

    #[test]
    fn an_acknowledgement_before_the_goal_is_known_does_not_end_the_run() {
        // A remote target states its resume point (21) before the scan found a change (22).
        assert_eq!(ends_with(vec![Ok(21), Err(22)]), None);
        assert_eq!(ends_with(vec![Ok(21), Err(22), Ok(22)]), Some(22));
        // Nothing new since the resume point: its statement is the end.
        assert_eq!(ends_with(vec![Ok(21), Err(21)]), Some(21));
    }

    #[test]
    fn the_run_ends_at_the_first_acknowledgement_that_reaches_the_goal() {
        assert_eq!(ends_with(vec![Err(5), Ok(3)]), None);
        assert_eq!(ends_with(vec![Err(5), Ok(3), Ok(6)]), Some(6));
        assert_eq!(ends_with(vec![Err(5), Ok(5), Ok(6)]), Some(5));
    }
}
