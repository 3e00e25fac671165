//! `ferry watch SRC DST`: initial sync, then live replication until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use anyhow::{bail, Context as _, Result};
use ferry_actors::{
    FolderId, FolderJob, FolderSupervisor, RestartPolicy, Shutdown, Stats, TargetSpec, WatchOptions,
};
use ferry_engine::IgnoreRules;
use ferry_node::remote::client::Retry;
use ferry_node::stopping::{unless_signalled_again, StopSignals, Stopped};
use tokio::sync::oneshot;

use crate::cli::WatchArgs;
use crate::sync_cmd::{check_paths, check_source};

/// How long a shutdown waits for the change in flight to be applied.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `ferry watch` until a signal; exits 0 after finishing the change in flight.
pub fn run(args: &WatchArgs, home: Option<&Path>) -> Result<()> {
    if args.poll == Some(Duration::ZERO) {
        bail!("--poll needs an interval above zero");
    }
    let remote = crate::remote_target::parse(&args.dst)?;
    let (src, dst) = match &remote {
        Some(_) => (check_source(&args.src)?, PathBuf::new()),
        None => {
            let checked = check_paths(&args.src, &args.dst, false)?;
            (checked.src.clone(), checked.dst.clone())
        }
    };
    let folder = match &remote {
        Some(url) => url.folder.clone(),
        None => FolderId::new("watch")?,
    };
    let shown_dst = match &remote {
        Some(url) => url.to_string(),
        None => dst.display().to_string(),
    };
    let ignore = IgnoreRules::with_file(&args.ignore, &src).context("invalid ignore rules")?;
    let job = FolderJob {
        folder,
        source: src.clone(),
        target: dst,
        checksum: args.checksum,
        dry_run: false,
        durable: !args.no_fsync,
        params: args.chunk_sizes,
        ignore: ignore.clone(),
        remote: false,
    };
    let watch = WatchOptions {
        debounce: args.debounce,
        max_delay: ferry_node::duration::batch_deadline(args.debounce),
        rescan_every: (!args.rescan_interval.is_zero()).then_some(args.rescan_interval),
        poll: args.poll,
        ..WatchOptions::default()
    };
    let stats = Arc::new(Stats::default());
    let spec = match remote {
        Some(url) => {
            let wanted = crate::remote_target::Wanted {
                params: args.chunk_sizes,
                checksum: args.checksum,
                dry_run: false,
                ignore,
                retry: Retry {
                    first: true,
                    max_failures: None,
                },
                epoch: None,
            };
            crate::remote_target::spec(url, home, wanted, stats.clone())?
        }
        None => TargetSpec::Local,
    };
    let system = actix::System::new();
    system.block_on(async move {
        let (failed_tx, failed_rx) = oneshot::channel();
        let sup =
            FolderSupervisor::new(job, watch, RestartPolicy::default(), stats, Some(failed_tx))
                .to_target(spec)
                .start();
        // Listened for before `watching` is logged: a signal sent on it stops gracefully.
        let mut signals = StopSignals::listen().context("cannot listen for signals")?;
        tracing::info!(src = %src.display(), dst = %shown_dst, "watching");
        let failure = tokio::select! {
            () = signals.recv() => None,
            Ok(why) = failed_rx => Some(why),
        };
        if let Some(why) = failure {
            bail!("replication of {} stopped: {why}", src.display());
        }
        tracing::info!(
            "signal received: finishing the change in flight (a second signal stops at once)"
        );
        let shutdown = sup.send(Shutdown {
            deadline: SHUTDOWN_DEADLINE,
        });
        let mut gone = None;
        let finish = async { gone = shutdown.await.err() };
        match unless_signalled_again(&mut signals, finish).await {
            Stopped::Finished => match gone {
                Some(e) => Err(e).context("the folder supervisor is gone"),
                None => Ok(()),
            },
            Stopped::Cut => bail!(
                "second signal: stopped at once; files being written are finished by the next run"
            ),
        }
    })
}
