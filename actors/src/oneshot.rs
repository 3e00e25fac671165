//! The one-shot pipeline: Differ → Sender → Applier in this process, finished when the
//! Applier acknowledges the last sequence.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::{ChunkParams, Plan, ScanOptions, SourceDir, TargetDir};
use tokio::sync::oneshot;

use crate::applier::{Applier, ApplierOptions, SenderLink};
use crate::differ::Differ;
use crate::error::{Error, Result};
use crate::messages::{Applied, Failed, FolderId, SkippedPath, Start};
use crate::sender::{Connect, Sender, TargetLink};
use crate::stats::{Stats, StatsSnapshot};

/// What a one-shot sync should do.
#[derive(Clone, Debug)]
pub struct SyncJob {
    /// The folder's id (used in logs).
    pub folder: FolderId,
    /// The source directory.
    pub source: PathBuf,
    /// The target directory (must exist).
    pub target: PathBuf,
    /// Compare content even when size and mtime agree.
    pub checksum: bool,
    /// Only report what would change.
    pub dry_run: bool,
    /// fsync data and directories (on by default).
    pub durable: bool,
    /// Chunker parameters.
    pub params: ChunkParams,
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
    let target_dir = TargetDir::open(&job.target)?;
    let (tx, rx) = oneshot::channel();
    let completion = Completion { done: Some(tx) }.start();
    let source = SourceDir::new(job.source.clone(), job.params);
    let sender = Sender::new(
        job.folder.clone(),
        source.clone(),
        completion.clone().recipient(),
        completion.clone().recipient(),
        stats.clone(),
    )
    .start();
    let differ = Differ::new(
        job.folder.clone(),
        source,
        ScanOptions {
            params: job.params,
            skip_temp_files: false,
        },
        sender.clone().recipient(),
        completion.clone().recipient(),
        stats.clone(),
    )
    .start();
    let link = SenderLink {
        need_content: sender.clone().recipient(),
        need_chunks: sender.clone().recipient(),
        applied: sender.clone().recipient(),
        failed: sender.clone().recipient(),
    };
    let opts = ApplierOptions {
        checksum: job.checksum,
        dry_run: job.dry_run,
        durable: job.durable,
        params: job.params,
    };
    let applier = Applier::new(job.folder.clone(), target_dir, opts, link, stats.clone()).start();
    let mailbox = |actor| move |source| Error::Mailbox { actor, source };
    sender
        .send(Connect {
            differ: differ.clone(),
            target: TargetLink {
                index: applier.clone().recipient(),
                chunks: applier.clone().recipient(),
            },
        })
        .await
        .map_err(mailbox("sender"))?;
    applier.send(Start).await.map_err(mailbox("applier"))?;
    differ.send(Start).await.map_err(mailbox("differ"))?;
    let outcome = rx.await.map_err(|_| Error::Protocol {
        path: None,
        reason: "the pipeline stopped without acknowledging".into(),
    })?;
    // Dropping the addresses lets the actors stop once their mailboxes drain.
    drop((sender, differ, applier));
    match outcome {
        Ok(applied) => Ok(SyncReport {
            stats: stats.snapshot(),
            skipped: applied.skipped,
            plan: applied.dry_run_plan,
        }),
        Err(reason) => Err(Error::Protocol { path: None, reason }),
    }
}
