//! Wiring: builds one folder's Differ → Sender → Applier (and, live, a Watcher) in this process.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::{ChunkParams, ScanOptions, SourceDir, TargetDir};

use crate::applier::{Applier, ApplierOptions, SenderLink};
use crate::differ::Differ;
use crate::error::{Error, Result};
use crate::messages::{Applied, Failed, FlushNow, FolderId, Start, Stop};
use crate::sender::{Connect, Sender, TargetLink};
use crate::stats::Stats;
use crate::watcher::{WatchOptions, Watcher};

/// One folder replicated to one local target.
#[derive(Clone, Debug)]
pub struct FolderJob {
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

/// Interposers on the links between Sender and Applier: each receives the recipients the
/// pipeline would use and returns the ones to use instead (a remote link, a meter, or in
/// tests a fault injector that forwards to the originals).
#[derive(Default)]
pub struct LinkTaps {
    /// Wraps what the Sender sends to the Applier.
    pub to_target: Option<Box<dyn FnOnce(TargetLink) -> TargetLink>>,
    /// Wraps what the Applier sends to the Sender.
    pub to_sender: Option<Box<dyn FnOnce(SenderLink) -> SenderLink>>,
}

/// The actors of one running pipeline.
pub struct Pipeline {
    /// The Watcher, in live mode.
    pub watcher: Option<Addr<Watcher>>,
    /// The Differ.
    pub differ: Addr<Differ>,
    /// The Sender.
    pub sender: Addr<Sender>,
    /// The Applier.
    pub applier: Addr<Applier>,
}

impl Pipeline {
    /// Starts the actors of `job`; with `watch`, a Watcher too. Failures go to `monitor`,
    /// acknowledgements to `on_applied`. The initial sync begins once every watch is in
    /// place, so nothing changed during the initial scan is missed.
    pub async fn start(
        job: &FolderJob,
        watch: Option<WatchOptions>,
        stats: Arc<Stats>,
        monitor: Recipient<Failed>,
        on_applied: Recipient<Applied>,
    ) -> Result<Pipeline> {
        Self::start_with(job, watch, stats, monitor, on_applied, LinkTaps::default()).await
    }

    /// [`Pipeline::start`], with the Sender ↔ Applier links passed through `taps`.
    pub async fn start_with(
        job: &FolderJob,
        watch: Option<WatchOptions>,
        stats: Arc<Stats>,
        monitor: Recipient<Failed>,
        on_applied: Recipient<Applied>,
        taps: LinkTaps,
    ) -> Result<Pipeline> {
        let target_dir = TargetDir::open(&job.target)?;
        let source = SourceDir::new(job.source.clone(), job.params);
        let sender = Sender::new(
            job.folder.clone(),
            source.clone(),
            on_applied,
            monitor.clone(),
            stats.clone(),
        )
        .start();
        let differ = Differ::new(
            job.folder.clone(),
            source,
            ScanOptions {
                params: job.params,
                skip_temp_files: true,
            },
            sender.clone().recipient(),
            monitor.clone(),
            stats.clone(),
        )
        .start();
        let link = SenderLink {
            need_content: sender.clone().recipient(),
            need_chunks: sender.clone().recipient(),
            need_groups: sender.clone().recipient(),
            applied: sender.clone().recipient(),
            failed: sender.clone().recipient(),
        };
        let link = match taps.to_sender {
            Some(tap) => tap(link),
            None => link,
        };
        let opts = ApplierOptions {
            checksum: job.checksum,
            dry_run: job.dry_run,
            durable: job.durable,
            params: job.params,
        };
        let applier =
            Applier::new(job.folder.clone(), target_dir, opts, link, stats.clone()).start();
        let mailbox = |actor| move |source| Error::Mailbox { actor, source };
        let target = TargetLink {
            index: applier.clone().recipient(),
            chunks: applier.clone().recipient(),
            groups: applier.clone().recipient(),
        };
        let target = match taps.to_target {
            Some(tap) => tap(target),
            None => target,
        };
        sender
            .send(Connect {
                differ: differ.clone(),
                target,
            })
            .await
            .map_err(mailbox("sender"))?;
        let watcher = match watch {
            Some(w) => {
                let addr = Watcher::new(
                    job.folder.clone(),
                    job.source.clone(),
                    w,
                    differ.clone().recipient(),
                    differ.clone().recipient(),
                    monitor,
                    stats,
                )
                .start();
                // Answered only after `started` has placed every watch.
                addr.send(FlushNow).await.map_err(mailbox("watcher"))?;
                Some(addr)
            }
            None => None,
        };
        applier.send(Start).await.map_err(mailbox("applier"))?;
        differ.send(Start).await.map_err(mailbox("differ"))?;
        Ok(Pipeline {
            watcher,
            differ,
            sender,
            applier,
        })
    }

    /// Asks every actor to stop.
    pub fn stop(&self) {
        if let Some(w) = &self.watcher {
            w.do_send(Stop);
        }
        self.differ.do_send(Stop);
        self.sender.do_send(Stop);
        self.applier.do_send(Stop);
    }
}
