//! `ferry watch SRC DST`: initial sync, then live replication until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use anyhow::{bail, Context as _, Result};
use ferry_actors::{
    FolderId, FolderJob, FolderSupervisor, RestartPolicy, Shutdown, Stats, WatchOptions,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::cli::WatchArgs;
use crate::sync_cmd::check_paths;

/// How long a shutdown waits for the change in flight to be applied.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `ferry watch` until a signal; exits 0 after finishing the change in flight.
pub fn run(args: &WatchArgs) -> Result<()> {
    let checked = check_paths(&args.src, &args.dst, false)?;
    if args.poll == Some(Duration::ZERO) {
        bail!("--poll needs an interval above zero");
    }
    let job = FolderJob {
        folder: FolderId::new("watch").map_err(anyhow::Error::msg)?,
        source: checked.src.clone(),
        target: checked.dst.clone(),
        checksum: args.checksum,
        dry_run: false,
        durable: !args.no_fsync,
        params: args.chunk_sizes,
    };
    let watch = WatchOptions {
        debounce: args.debounce,
        max_delay: (args.debounce * 10).max(Duration::from_millis(50)),
        rescan_every: (!args.rescan_interval.is_zero()).then_some(args.rescan_interval),
        poll: args.poll,
        ..WatchOptions::default()
    };
    let stats = Arc::new(Stats::default());
    let system = actix::System::new();
    system.block_on(async move {
        let (failed_tx, failed_rx) = oneshot::channel();
        let sup =
            FolderSupervisor::new(job, watch, RestartPolicy::default(), stats, Some(failed_tx))
                .start();
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tracing::info!(src = %checked.src.display(), dst = %checked.dst.display(), "watching");
        let failure = tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
            Ok(why) = failed_rx => Some(why),
        };
        if let Some(why) = failure {
            bail!("replication of {} stopped: {why}", checked.src.display());
        }
        tracing::info!("signal received: finishing the change in flight");
        sup.send(Shutdown {
            deadline: SHUTDOWN_DEADLINE,
        })
        .await
        .context("the folder supervisor is gone")?;
        Ok(())
    })
}
