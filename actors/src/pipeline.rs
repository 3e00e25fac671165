//! Wiring: builds one folder's Differ → Sender → Applier (and, live, a Watcher) in this process.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use ferry_engine::{ChunkParams, IgnoreRules, ScanOptions, SourceDir, TargetDir};

use crate::applier::{Applier, ApplierOptions, SenderLink};
use crate::differ::{Differ, FirstSend};
use crate::error::{Error, Result};
use crate::messages::{Applied, Failed, FlushNow, FolderId, Resend, Start, Stop};
use crate::persist::{SourceStore, TargetStore};
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
    /// Entries neither sent from the source nor touched in the target (empty = none).
    pub ignore: IgnoreRules,
    /// Tune the (local) Applier as for a target across a network ([`ApplierOptions::remote`]):
    /// off for local targets, where a chunk costs no round trip and memory is better saved;
    /// tests turn it on to drive a remote Applier's behaviour in-process.
    pub remote: bool,
}

/// Interposers on the links between Sender and Applier: each receives the recipients the
/// pipeline would use and returns the ones to use instead (a meter, or in tests a fault
/// injector that forwards to the originals).
#[derive(Default)]
pub struct LinkTaps {
    /// Wraps what the Sender sends to the Applier.
    pub to_target: Option<Box<dyn FnOnce(TargetLink) -> TargetLink>>,
    /// Wraps what the Applier sends to the Sender.
    pub to_sender: Option<Box<dyn FnOnce(SenderLink) -> SenderLink>>,
}

/// What a target that is not an Applier of this process is given to answer through: the
/// Sender's side of the links.
#[derive(Clone)]
pub struct SenderSide {
    /// Where the target's requests and acknowledgements go.
    pub link: SenderLink,
    /// Where a reconnected target's resume point goes.
    pub resend: Recipient<Resend>,
}

/// Builds the links to a target reached some other way than an in-process Applier (a
/// remote node): called once each time the pipeline starts, in the actix system.
pub type TargetConnector = Arc<dyn Fn(SenderSide) -> TargetLink + Send + Sync>;

/// Where a pipeline's target lives.
#[derive(Clone)]
pub enum TargetSpec {
    /// The directory `FolderJob::target`, applied by an Applier in this process.
    Local,
    /// Links built by a connector; `FolderJob::target` is not used.
    Linked(TargetConnector),
}

/// What the source side of a pipeline is started with.
struct SourceSide {
    watch: Option<WatchOptions>,
    stats: Arc<Stats>,
    monitor: Recipient<Failed>,
    on_applied: Recipient<Applied>,
    store: Option<Arc<dyn SourceStore>>,
}

/// The actors of one running pipeline.
pub struct Pipeline {
    /// The Watcher, in live mode.
    pub watcher: Option<Addr<Watcher>>,
    /// The Differ.
    pub differ: Addr<Differ>,
    /// The Sender.
    pub sender: Addr<Sender>,
    /// The Applier, for a local target.
    pub applier: Option<Addr<Applier>>,
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

    /// [`Pipeline::start`] towards the target `spec` names.
    pub async fn start_to(
        job: &FolderJob,
        spec: &TargetSpec,
        watch: Option<WatchOptions>,
        stats: Arc<Stats>,
        monitor: Recipient<Failed>,
        on_applied: Recipient<Applied>,
    ) -> Result<Pipeline> {
        Self::start_kept(job, spec, watch, stats, monitor, on_applied, None).await
    }

    /// [`Pipeline::start_to`], keeping the source index in `store` between runs.
    pub async fn start_kept(
        job: &FolderJob,
        spec: &TargetSpec,
        watch: Option<WatchOptions>,
        stats: Arc<Stats>,
        monitor: Recipient<Failed>,
        on_applied: Recipient<Applied>,
        store: Option<Arc<dyn SourceStore>>,
    ) -> Result<Pipeline> {
        Self::start_kept_with_target(job, spec, watch, stats, monitor, on_applied, store, None)
            .await
    }

    /// [`Pipeline::start_kept`], keeping a local target's chunk lists in `target_store`
    /// between runs (a remote target keeps its own).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_kept_with_target(
        job: &FolderJob,
        spec: &TargetSpec,
        watch: Option<WatchOptions>,
        stats: Arc<Stats>,
        monitor: Recipient<Failed>,
        on_applied: Recipient<Applied>,
        store: Option<Arc<dyn SourceStore>>,
        target_store: Option<Arc<dyn TargetStore>>,
    ) -> Result<Pipeline> {
        let source = SourceSide {
            watch,
            stats,
            monitor,
            on_applied,
            store,
        };
        match spec {
            TargetSpec::Local => {
                let target =
                    Self::local_target(job, &source.stats, LinkTaps::default(), target_store);
                Self::start_parts(job, source, FirstSend::Snapshot, target).await
            }
            TargetSpec::Linked(connect) => {
                let connect = connect.clone();
                let target = move |side: SenderSide| Ok((connect(side), None));
                // A remote target says what it holds first; it may need only a delta.
                Self::start_parts(job, source, FirstSend::OnResend, target).await
            }
        }
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
        let target = Self::local_target(job, &stats, taps, None);
        let source = SourceSide {
            watch,
            stats,
            monitor,
            on_applied,
            store: None,
        };
        Self::start_parts(job, source, FirstSend::Snapshot, target).await
    }

    /// Builds an in-process Applier for `job.target`, its links passed through `taps`, its
    /// chunk lists kept in `target_store` if given.
    fn local_target(
        job: &FolderJob,
        stats: &Arc<Stats>,
        taps: LinkTaps,
        target_store: Option<Arc<dyn TargetStore>>,
    ) -> impl FnOnce(SenderSide) -> Result<(TargetLink, Option<Addr<Applier>>)> {
        let opts = ApplierOptions {
            checksum: job.checksum,
            dry_run: job.dry_run,
            durable: job.durable,
            params: job.params,
            untrusted_sender: false,
            ignore: job.ignore.clone(),
            remote: job.remote,
        };
        let target_root = job.target.clone();
        let folder = job.folder.clone();
        let applier_stats = stats.clone();
        move |side: SenderSide| {
            let target_dir = TargetDir::open(&target_root)?;
            let link = match taps.to_sender {
                Some(tap) => tap(side.link),
                None => side.link,
            };
            let applier = Applier::new(folder, target_dir, opts, link, applier_stats);
            let applier = match target_store {
                Some(store) => applier.with_target_store(store),
                None => applier,
            }
            .start();
            let target = TargetLink {
                index: applier.clone().recipient(),
                chunks: applier.clone().recipient(),
                groups: applier.clone().recipient(),
            };
            let target = match taps.to_target {
                Some(tap) => tap(target),
                None => target,
            };
            Ok((target, Some(applier)))
        }
    }

    /// Starts the source side, wires it to the target `build` returns, and starts the scans.
    async fn start_parts(
        job: &FolderJob,
        side_of_source: SourceSide,
        first: FirstSend,
        build: impl FnOnce(SenderSide) -> Result<(TargetLink, Option<Addr<Applier>>)>,
    ) -> Result<Pipeline> {
        let SourceSide {
            watch,
            stats,
            monitor,
            on_applied,
            store,
        } = side_of_source;
        // The prints of large files' chunks: a live source hashes the same large files again
        // and again, and any source reads a large file's chunks again to send them; prints
        // check both at memory speed.
        let source = SourceDir::new(job.source.clone(), job.params).keeping_prints();
        let sender = Sender::new(
            job.folder.clone(),
            source.clone(),
            on_applied,
            monitor.clone(),
            stats.clone(),
        )
        .start();
        let side = SenderSide {
            link: SenderLink::to(&sender),
            resend: sender.clone().recipient(),
        };
        let (target, applier) = match build(side) {
            Ok(built) => built,
            Err(e) => {
                sender.do_send(Stop);
                return Err(e);
            }
        };
        let differ = Differ::new(
            job.folder.clone(),
            source,
            ScanOptions {
                params: job.params,
                skip_temp_files: true,
                ignore: job.ignore.clone(),
            },
            sender.clone().recipient(),
            monitor.clone(),
            stats.clone(),
        )
        .first_send(first);
        let differ = match store {
            Some(store) => differ.store(store),
            None => differ,
        }
        .start();
        let mailbox = |actor| move |error| Error::Mailbox { actor, error };
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
                .with_ignore(job.ignore.clone())
                .start();
                // Answered only after `started` has placed every watch.
                addr.send(FlushNow).await.map_err(mailbox("watcher"))?;
                Some(addr)
            }
            None => None,
        };
        if let Some(applier) = &applier {
            applier.send(Start).await.map_err(mailbox("applier"))?;
        }
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
        if let Some(a) = &self.applier {
            a.do_send(Stop);
        }
    }
}
