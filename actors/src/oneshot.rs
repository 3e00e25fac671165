//! The one-shot pipeline: Differ → Sender → Applier in this process, finished when the
//! Applier acknowledges the last sequence.

use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::Plan;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::messages::{Applied, Failed, SkippedPath};
use crate::pipeline::{FolderJob, LinkTaps, Pipeline, TargetSpec};
use crate::stats::{Stats, StatsSnapshot};

/// What a one-shot sync should do.
pub type SyncJob = FolderJob;

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

/// Hears the end of the run: the Applier's acknowledgement of the snapshot, or a failure.
struct Completion {
    done: Option<oneshot::Sender<std::result::Result<Applied, String>>>,
}

impl Actor for Completion {
    type Context = Context<Self>;
}

impl Handler<Applied> for Completion {
    type Result = ();
    fn handle(&mut self, msg: Applied, ctx: &mut Self::Context) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Ok(msg));
        }
        ctx.stop();
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
    let completion = Completion { done: Some(tx) }.start();
    let pipeline = Pipeline::start_with(
        &job,
        None,
        stats.clone(),
        completion.clone().recipient(),
        completion.recipient(),
        taps,
    )
    .await?;
    finish(pipeline, rx, stats).await
}

/// [`run_sync`] towards the target `spec` names (`job.target` is used only when local).
pub async fn run_sync_to(job: SyncJob, spec: &TargetSpec, stats: Arc<Stats>) -> Result<SyncReport> {
    let (tx, rx) = oneshot::channel();
    let completion = Completion { done: Some(tx) }.start();
    let pipeline = Pipeline::start_to(
        &job,
        spec,
        None,
        stats.clone(),
        completion.clone().recipient(),
        completion.recipient(),
    )
    .await?;
    finish(pipeline, rx, stats).await
}

/// Waits for the run's end, stops its actors and reports.
async fn finish(
    pipeline: Pipeline,
    rx: oneshot::Receiver<std::result::Result<Applied, String>>,
    stats: Arc<Stats>,
) -> Result<SyncReport> {
    let outcome = rx
        .await
        .map_err(|_| Error::Stopped("the pipeline stopped without acknowledging".into()))?;
    pipeline.stop();
    match outcome {
        Ok(applied) => Ok(SyncReport {
            stats: stats.snapshot(),
            skipped: applied.skipped,
            plan: applied.dry_run_plan,
        }),
        Err(reason) => Err(Error::Stopped(reason)),
    }
}
