//! `ferry run`: a node from its config file. Send folders replicate to their peers and local
//! targets, receive folders are served to their peers, the dashboard shows it all, and
//! SIGHUP reloads the file: folders added, removed or changed start and stop without
//! disturbing the others, and folders with a replication that gave up start afresh.

mod error;
mod hub;
mod send;
pub mod state;
mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_actors::persist::SourceStore;
use ferry_actors::{FolderId, Stats};
use ferry_engine::store::StateDb;
use ferry_engine::IgnoreRules;
use tokio::signal::unix::{signal, SignalKind};

pub use error::RunError;
pub use hub::Hub;
pub use targets::{TargetKind, TargetName};

use crate::config::{self, Config, Role};
use crate::dashboard::{self, Dashboard};
use crate::remote::client::LinkOptions;
use crate::remote::identity::Identity;
use crate::remote::server::{ServeConfig, ServedFolder, Server};
use crate::status::StatusSource;
use crate::stopping::{unless_signalled_again, StopSignals, Stopped};
use send::{SendFolder, SendPlan};
use state::replication_stores;

/// The file of the state database inside the state directory.
pub const STATE_FILE: &str = "state.redb";

/// What a node prints on stdout once it is up, for people and scripts.
pub trait Announce {
    /// One line.
    fn line(&self, line: &str);
}

impl<F: Fn(&str)> Announce for F {
    fn line(&self, line: &str) {
        self(line)
    }
}

/// The signals a node answers: SIGINT and SIGTERM stop it, SIGHUP reloads its config.
struct Signals {
    stop: StopSignals,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening (from here on none of them kills the process).
    fn new() -> Result<Self, RunError> {
        Ok(Signals {
            stop: StopSignals::listen().map_err(RunError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(RunError::Signals)?,
        })
    }
}

/// A running node.
struct Node {
    config: Config,
    identity: Option<Identity>,
    db: Arc<StateDb>,
    hub: Arc<Hub>,
    server: Option<Arc<Server>>,
    send: BTreeMap<FolderId, SendFolder>,
}

/// Runs the node configured in `path` until SIGINT or SIGTERM. Must run inside an actix
/// system. `home` (`--home`) takes the place of the file's `home` (see
/// [`config::load_with_home`]), at start and at every reload.
/// `reopen_logs` is called on SIGHUP, before the config is reloaded, so a log file
/// renamed away for rotation is replaced by a new one.
pub async fn run(
    path: &Path,
    home: Option<&Path>,
    announce: &dyn Announce,
    reopen_logs: &dyn Fn(),
) -> Result<(), RunError> {
    let config = config::load_with_home(path, home)?;
    // Listened for before anything is announced: a SIGTERM sent on `ready` (or earlier) stops
    // the node gracefully instead of killing it.
    let mut signals = Signals::new()?;
    let identity = if config.needs_identity() {
        let home = config.node.home.clone();
        let (identity, created) =
            Identity::load_or_create(&home).map_err(|error| RunError::Identity {
                home: home.clone(),
                error,
            })?;
        if created {
            tracing::warn!(home = %home.display(), node = %identity.id(), "created a new node identity");
        }
        Some(identity)
    } else {
        None
    };
    let db = open_state(&config.node.state_dir)?;
    let hub = Hub::new(
        config.node.name.clone(),
        identity.as_ref().map(|i| i.id().to_string()),
    );
    let mut node = Node {
        config,
        identity,
        db,
        hub,
        server: None,
        send: BTreeMap::new(),
    };
    node.start_server(announce).await?;
    let plans = node.send_plans();
    for plan in plans {
        node.start_or_report(plan);
    }
    let dashboard = match node.config.node.dashboard {
        Some(addr) => Some(start_dashboard(addr, node.hub.clone(), announce).await?),
        None => None,
    };
    tracing::info!(node = %node.config.node.name, folders = node.config.folders.len(), "node running");
    announce.line("ready");
    let result = node
        .serve_signals(&mut signals, path, home, reopen_logs)
        .await;
    if unless_signalled_again(&mut signals.stop, node.stop_all()).await == Stopped::Cut {
        return result.and(Err(RunError::Cut));
    }
    if let Some(d) = dashboard {
        d.stop().await;
    }
    result
}

/// Opens the state database in `dir`, setting a corrupt or foreign one aside to rebuild
/// from disk.
pub fn open_state(dir: &Path) -> Result<Arc<StateDb>, RunError> {
    let path = dir.join(STATE_FILE);
    let (db, rebuilt) = StateDb::open_or_rebuild(&path)?;
    if let Some(why) = rebuilt {
        tracing::warn!(path = %path.display(), "{why}; every folder is rescanned from disk");
    }
    Ok(Arc::new(db))
}

async fn start_dashboard(
    addr: SocketAddr,
    hub: Arc<Hub>,
    announce: &dyn Announce,
) -> Result<Dashboard, RunError> {
    let sampler = Arc::downgrade(&hub);
    actix::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match sampler.upgrade() {
                Some(hub) => hub.sample(),
                None => return,
            }
        }
    });
    let d = dashboard::start(addr, hub as Arc<dyn StatusSource>)
        .await
        .map_err(|error| RunError::Dashboard { addr, error })?;
    tracing::info!(addr = %d.local_addr, "dashboard listening");
    announce.line(&format!("dashboard http://{}/", d.local_addr));
    Ok(d)
}

impl Node {
    /// The send folders of the config, with the peers they send to.
    fn send_plans(&self) -> Vec<SendPlan> {
        self.config
            .folders
            .iter()
            .filter(|f| f.role == Role::Send)
            .map(|f| SendPlan::of(&self.config, f))
            .collect()
    }

    /// The receive folders, as the server serves them.
    fn served(&self) -> (BTreeSet<crate::remote::nodeid::NodeId>, Vec<ServedFolder>) {
        let peers = self.config.peers.iter().map(|p| p.id).collect();
        let folders = self
            .config
            .folders
            .iter()
            .filter(|f| f.role == Role::Receive)
            .map(|f| ServedFolder {
                name: f.id.clone(),
                path: f.path.clone(),
                peers: Some(
                    f.peers
                        .iter()
                        .filter_map(|n| self.config.peer(n.as_str()).map(|p| p.id))
                        .collect(),
                ),
            })
            .collect();
        (peers, folders)
    }

    fn publish_receiving(&self) {
        let receiving = self
            .config
            .folders
            .iter()
            .filter(|f| f.role == Role::Receive)
            .map(|f| (f.id.to_string(), f.path.display().to_string()))
            .collect();
        self.hub.set_receiving(receiving, self.server.clone());
        self.hub.set_peer_names(
            self.config
                .peers
                .iter()
                .map(|p| (p.id.to_string(), p.name.to_string()))
                .collect(),
        );
    }

    /// Listens for peers when the config says where.
    async fn start_server(&mut self, announce: &dyn Announce) -> Result<(), RunError> {
        self.publish_receiving();
        let (Some(addr), Some(identity)) = (self.config.node.listen, self.identity.clone()) else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| RunError::Listen { addr, error })?;
        let local = listener
            .local_addr()
            .map_err(|error| RunError::Listen { addr, error })?;
        let (peers, folders) = self.served();
        for f in &folders {
            tracing::info!(folder = %f.name, path = %f.path.display(), "serving folder");
        }
        let node_id = identity.id();
        let server = Server::new(
            ServeConfig {
                identity,
                peers,
                folders,
                durable: self.config.node.fsync,
                link: LinkOptions::default(),
            },
            Arc::new(Stats::default()),
        )?;
        server.keep_state(self.db.clone());
        let hub = Arc::downgrade(&self.hub);
        server.set_observer(Arc::new(move |folder, peer, stats| {
            if let Some(hub) = hub.upgrade() {
                hub.follow_session(folder.as_str(), &peer.to_string(), stats);
            }
        }));
        actix::spawn(server.clone().run(listener));
        tracing::info!(node = %node_id, addr = %local, "listening");
        announce.line(&format!("listening {local} node {node_id}"));
        self.server = Some(server);
        self.publish_receiving();
        Ok(())
    }

    /// Starts a send folder; one that cannot start is logged and shown failed on the
    /// dashboard, and the others go on.
    fn start_or_report(&mut self, plan: SendPlan) {
        let (id, path) = (plan.folder.id.clone(), plan.folder.path.clone());
        if let Err(e) = self.start_send(plan) {
            tracing::error!(folder = %id, "cannot start: {e}");
            self.hub
                .failed_to_start(id.as_str(), &path.display().to_string(), e.to_string());
        }
    }

    /// Starts the replications of one send folder.
    fn start_send(&mut self, plan: SendPlan) -> Result<(), RunError> {
        let id = plan.folder.id.clone();
        let ignore =
            IgnoreRules::with_file(&plan.folder.ignore, &plan.folder.path).map_err(|e| {
                RunError::Folder {
                    folder: id.to_string(),
                    reason: format!("invalid ignore rules: {e}"),
                }
            })?;
        let db = self.db.clone();
        let folder_key = id.to_string();
        let store_for = move |name: &TargetName| {
            let (store, epoch, target) = replication_stores(&db, &name.state_key(&folder_key))?;
            Ok(Some(send::Kept {
                source: Arc::new(store) as Arc<dyn SourceStore>,
                epoch,
                target: Arc::new(target),
            }))
        };
        let folder = SendFolder::start(plan, self.identity.as_ref(), &ignore, &store_for)?;
        self.hub.forget(id.as_str());
        for t in &folder.targets {
            self.hub.follow(
                id.as_str(),
                &folder.plan.folder.path.display().to_string(),
                t.name.to_string(),
                t.name.kind_word(),
                t.stats.clone(),
            );
        }
        self.send.insert(id, folder);
        Ok(())
    }

    /// Stops the send folders `ids`, all at once: one waiting for its target does not hold
    /// up the others.
    async fn stop_sends(&mut self, ids: &[FolderId]) {
        let mut stops = Vec::new();
        for id in ids {
            if let Some(folder) = self.send.remove(id) {
                self.hub.forget(id.as_str());
                stops.push(folder.stop());
            }
        }
        futures_util::future::join_all(stops).await;
    }

    /// Waits for signals: SIGHUP reloads, SIGINT and SIGTERM stop.
    async fn serve_signals(
        &mut self,
        signals: &mut Signals,
        path: &Path,
        home: Option<&Path>,
        reopen_logs: &dyn Fn(),
    ) -> Result<(), RunError> {
        loop {
            tokio::select! {
                () = signals.stop.recv() => break,
                _ = signals.hup.recv() => {
                    reopen_logs();
                    self.reload(path, home).await;
                }
            }
        }
        tracing::info!(
            "signal received: finishing the changes in flight (a second signal stops at once)"
        );
        Ok(())
    }

    /// Reads the config again and applies what changed; a config that does not validate
    /// is reported and the node goes on as it was.
    async fn reload(&mut self, path: &Path, home: Option<&Path>) {
        tracing::info!(file = %path.display(), "reloading the config (SIGHUP)");
        let new = match config::load_with_home(path, home) {
            Ok(c) => c,
            Err(e) => {
                // One event per line: the text log escapes newlines inside an event.
                tracing::error!("config not reloaded, the node goes on unchanged:");
                for line in e.to_string().lines() {
                    tracing::error!("{line}");
                }
                return;
            }
        };
        for (what, changed) in [
            ("listen", new.node.listen != self.config.node.listen),
            (
                "dashboard",
                new.node.dashboard != self.config.node.dashboard,
            ),
            (
                "state_dir",
                new.node.state_dir != self.config.node.state_dir,
            ),
            ("home", new.node.home != self.config.node.home),
        ] {
            if changed {
                tracing::warn!(
                    key = what,
                    "[node] {what} changed: takes effect after a restart"
                );
            }
        }
        if new.needs_identity() && self.identity.is_none() {
            tracing::error!("config not reloaded: it now needs this node's identity, which is loaded at start; restart the node");
            return;
        }
        let old_plans: BTreeMap<FolderId, SendPlan> = self
            .send
            .iter()
            .map(|(id, f)| (id.clone(), f.plan.clone()))
            .collect();
        let old_config = std::mem::replace(&mut self.config, new);
        let new_plans: BTreeMap<FolderId, SendPlan> = self
            .send_plans()
            .into_iter()
            .map(|p| (p.folder.id.clone(), p))
            .collect();
        let mut gone = Vec::new();
        for (id, old) in &old_plans {
            if new_plans.get(id) != Some(old) {
                tracing::info!(folder = %id, "folder removed or changed: stopping it");
                gone.push(id.clone());
                continue;
            }
            // A replication that gave up is given a fresh start (a reload is how an operator
            // says the cause is fixed), with the rest of its folder.
            let failed = match self.send.get(id) {
                Some(f) => f.failed().await,
                None => Vec::new(),
            };
            if !failed.is_empty() {
                let names: Vec<String> = failed.iter().map(ToString::to_string).collect();
                tracing::info!(folder = %id, targets = %names.join(", "), "replication failed before: restarting the folder");
                gone.push(id.clone());
            }
        }
        self.stop_sends(&gone).await;
        let keep: Vec<String> = new_plans.keys().map(|id| id.to_string()).collect();
        self.hub.retain(&keep);
        for (id, plan) in new_plans {
            if !self.send.contains_key(&id) {
                tracing::info!(folder = %id, "folder added or changed: starting it");
                self.start_or_report(plan);
            }
        }
        if let Some(server) = &self.server {
            let (peers, folders) = self.served();
            server.reconfigure(peers, folders).await;
        } else if self.config.folders.iter().any(|f| f.role == Role::Receive)
            && old_config.node.listen.is_none()
        {
            tracing::warn!(
                "receive folders need [node] listen, which takes effect after a restart"
            );
        }
        self.publish_receiving();
        tracing::info!("config reloaded");
    }

    async fn stop_all(&mut self) {
        if let Some(server) = &self.server {
            // Sessions end first, each leaving its resume point for the next run.
            server.shutdown(send::STOP_DEADLINE).await;
        }
        let ids: Vec<FolderId> = self.send.keys().cloned().collect();
        let stops = ids.iter().map(|id| {
            let folder = self.send.remove(id);
            async move {
                if let Some(f) = folder {
                    f.stop().await;
                }
            }
        });
        futures_util::future::join_all(stops.collect::<Vec<_>>()).await;
    }
}

/// The state directory's database file, for messages and tests.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}
