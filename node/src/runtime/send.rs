//! A send folder of a running node: one supervised replication per peer and per local
//! target, each with its own Differ, Sender and counters, so that an offline or slow target
//! never holds the others back.

use std::sync::Arc;
use std::time::Duration;

use ferry_actors::persist::{SourceStore, TargetStore};
use ferry_actors::{FolderState, Replication, Stats, TargetSpec, WatchOptions};
use ferry_engine::{ChunkParams, IgnoreRules};

use super::error::RunError;
use super::targets::{TargetKind, TargetName};
use crate::config::{Config, FolderConfig, Peer};
use crate::remote::client::{LinkOptions, RemoteSpec, Retry};
use crate::remote::identity::Identity;
use crate::remote::tls;
use crate::remote::url::RemoteUrl;

/// How long stopping a folder waits for the change in flight to reach each target.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Everything a send folder's replications are built from: the folder and the peers it
/// sends to. When this changes on reload, the folder is restarted.
#[derive(Clone, Debug, PartialEq)]
pub struct SendPlan {
    /// The folder's settings.
    pub folder: FolderConfig,
    /// The peers it sends to, resolved from the config.
    pub peers: Vec<Peer>,
    /// fsync on local targets.
    pub fsync: bool,
}

impl SendPlan {
    /// The plan for `folder` under `config`.
    pub fn of(config: &Config, folder: &FolderConfig) -> Self {
        SendPlan {
            folder: folder.clone(),
            peers: folder
                .peers
                .iter()
                .filter_map(|n| config.peer(n.as_str()).cloned())
                .collect(),
            fsync: config.node.fsync,
        }
    }
}

/// One running replication of a send folder.
pub struct TargetRun {
    /// Which target.
    pub name: TargetName,
    /// Its counters and events.
    pub stats: Arc<Stats>,
    replication: Replication,
}

/// A running send folder.
pub struct SendFolder {
    /// What it was started from.
    pub plan: SendPlan,
    /// Its replications.
    pub targets: Vec<TargetRun>,
}

/// Where one replication keeps its state between runs.
pub struct Kept {
    /// The source index.
    pub source: Arc<dyn SourceStore>,
    /// The epoch naming it.
    pub epoch: u64,
    /// The chunk lists of a local target.
    pub target: Arc<dyn TargetStore>,
}

/// Makes the stores of one replication.
pub type StoreFor<'a> = &'a dyn Fn(&TargetName) -> Result<Option<Kept>, RunError>;

impl SendFolder {
    /// Starts a replication to every peer and local target of `plan`.
    pub fn start(
        plan: SendPlan,
        identity: Option<&Identity>,
        ignore: &IgnoreRules,
        store_for: StoreFor<'_>,
    ) -> Result<SendFolder, RunError> {
        let f = &plan.folder;
        let mut targets = Vec::new();
        let mut wanted: Vec<(TargetName, Option<&Peer>)> = f
            .targets
            .iter()
            .map(|t| (TargetName::local(t), None))
            .collect();
        wanted.extend(
            plan.peers
                .iter()
                .map(|p| (TargetName::peer(&p.name), Some(p))),
        );
        for (name, peer) in wanted {
            match Self::start_one(&plan, &name, peer, identity, ignore, store_for) {
                Ok(run) => targets.push(run),
                Err(e) => {
                    // The replications already started must not run on unseen.
                    let started = SendFolder {
                        plan: plan.clone(),
                        targets,
                    };
                    actix::spawn(started.stop());
                    return Err(e);
                }
            }
        }
        Ok(SendFolder { plan, targets })
    }

    /// Starts the replication of `plan`'s folder to one target.
    fn start_one(
        plan: &SendPlan,
        name: &TargetName,
        peer: Option<&Peer>,
        identity: Option<&Identity>,
        ignore: &IgnoreRules,
        store_for: StoreFor<'_>,
    ) -> Result<TargetRun, RunError> {
        let f = &plan.folder;
        let failed = |reason: String| RunError::Folder {
            folder: f.id.to_string(),
            reason,
        };
        let stats = Arc::new(Stats::default());
        let kept = store_for(name)?;
        let mut builder = Replication::builder(f.id.clone(), &f.path)
            .checksum(f.checksum)
            .durable(plan.fsync)
            .watch(watch_options(f))
            .ignore(ignore.clone())
            .stats(stats.clone());
        let epoch = kept.as_ref().map(|k| k.epoch);
        if let Some(kept) = kept {
            builder = builder.source_store(kept.source);
            if matches!(name.kind, TargetKind::Local(_)) {
                builder = builder.target_store(kept.target);
            }
        }
        builder = match (peer, &name.kind) {
            (Some(peer), _) => {
                let identity = identity.ok_or_else(|| RunError::NoIdentity {
                    folder: f.id.to_string(),
                })?;
                let mut spec = remote_spec(f, peer, identity, stats.clone(), epoch)?;
                // The target leaves alone what the source ignores.
                spec.ignore = ignore.clone();
                builder.to_target(name.to_string(), TargetSpec::Linked(spec.connector()))
            }
            (None, TargetKind::Local(dir)) => builder.to_dir(dir.clone()),
            (None, TargetKind::Peer(p)) => {
                return Err(failed(format!("peer {p} is not configured")))
            }
        };
        let replication = builder.start().map_err(|e| failed(e.to_string()))?;
        tracing::info!(folder = %f.id, target = %name, "replication started");
        Ok(TargetRun {
            name: name.clone(),
            stats,
            replication,
        })
    }

    /// The targets whose replication has given up (past its restart budget).
    pub async fn failed(&self) -> Vec<TargetName> {
        let mut failed = Vec::new();
        for t in &self.targets {
            if matches!(t.replication.state().await, FolderState::Failed(_)) {
                failed.push(t.name.clone());
            }
        }
        failed
    }

    /// Finishes the change in flight on every target, then stops them all.
    pub async fn stop(self) {
        let folder = self.plan.folder.id.clone();
        let stops = self.targets.into_iter().map(|t| {
            let folder = folder.clone();
            async move {
                t.replication.stop(STOP_DEADLINE).await;
                tracing::info!(folder = %folder, target = %t.name, "replication stopped");
            }
        });
        futures_util::future::join_all(stops).await;
    }
}

/// How `folder` is watched: inotify with periodic safety rescans, or scans only.
fn watch_options(f: &FolderConfig) -> WatchOptions {
    let every = (!f.rescan_interval.is_zero()).then_some(f.rescan_interval);
    WatchOptions {
        debounce: f.debounce,
        max_delay: crate::duration::batch_deadline(f.debounce),
        rescan_every: if f.watch { every } else { None },
        poll: if f.watch { None } else { every },
        ..WatchOptions::default()
    }
}

/// The link to `peer`'s copy of `folder`, authenticated as this node, retried forever.
fn remote_spec(
    f: &FolderConfig,
    peer: &Peer,
    identity: &Identity,
    stats: Arc<Stats>,
    epoch: Option<u64>,
) -> Result<RemoteSpec, RunError> {
    let address = peer.address.as_ref().ok_or_else(|| RunError::Folder {
        folder: f.id.to_string(),
        reason: format!("peer {} has no address", peer.name),
    })?;
    let tls = tls::client_config(identity, peer.id).map_err(|e| RunError::Folder {
        folder: f.id.to_string(),
        reason: format!("cannot set up TLS for peer {}: {e}", peer.name),
    })?;
    Ok(RemoteSpec {
        url: RemoteUrl {
            node: peer.id,
            host: address.host.clone(),
            port: address.port,
            folder: f.id.clone(),
        },
        tls,
        params: ChunkParams::default(),
        checksum: f.checksum,
        dry_run: false,
        link: LinkOptions::default(),
        retry: Retry {
            first: true,
            max_failures: None,
        },
        stats,
        epoch,
        ignore: IgnoreRules::default(),
    })
}
