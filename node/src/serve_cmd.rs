//! `ferry serve`: receives the listed folders from the listed peers until SIGINT or SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ferry_actors::{FolderId, Stats};
use ferry_node::remote::client::LinkOptions;
use ferry_node::remote::nodeid::NodeId;
use ferry_node::remote::server::{ServeConfig, ServedFolder, Server};
use ferry_node::stopping::StopSignals;

use crate::cli::ServeArgs;

/// Parses `NAME=PATH`; the directory is created when its parent exists.
fn folder(arg: &str) -> Result<(FolderId, PathBuf)> {
    let (name, path) = arg
        .split_once('=')
        .with_context(|| format!("--folder {arg:?}: expected NAME=PATH"))?;
    let name = FolderId::new(name).map_err(|e| anyhow::anyhow!("--folder {arg:?}: {e}"))?;
    let path = Path::new(path);
    if !path.exists() {
        std::fs::create_dir(path)
            .with_context(|| format!("--folder {arg:?}: cannot create {}", path.display()))?;
    }
    let path = std::fs::canonicalize(path)
        .with_context(|| format!("--folder {arg:?}: cannot resolve {}", path.display()))?;
    if !path.is_dir() {
        bail!("--folder {arg:?}: {} is not a directory", path.display());
    }
    Ok((name, path))
}

/// Parses `NODE_ID` or `NODE_ID=NAME,NAME`.
fn peer(arg: &str) -> Result<(NodeId, Option<Vec<FolderId>>)> {
    let (id, names) = match arg.split_once('=') {
        Some((id, names)) => (id, Some(names)),
        None => (arg, None),
    };
    let id: NodeId = id
        .parse()
        .map_err(|e| anyhow::anyhow!("--peer {arg:?}: {e}"))?;
    let names = names
        .map(|n| {
            n.split(',')
                .map(|f| FolderId::new(f).map_err(|e| anyhow::anyhow!("--peer {arg:?}: {e}")))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok((id, names))
}

/// Refuses a served folder that contains the node's home or lies inside it: a peer's mirror
/// would delete the key and certificate there as extras (or replicate into them). Checked
/// before the identity is loaded, so nothing is created inside a folder.
fn refuse_home_overlap(home: &Path, folders: &[ServedFolder]) -> Result<()> {
    let absolute = std::path::absolute(home)
        .with_context(|| format!("cannot resolve the home directory {}", home.display()))?;
    let real = ferry_node::config::real_path(&absolute);
    for f in folders {
        let relation = if real.starts_with(&f.path) {
            "is inside"
        } else if f.path.starts_with(&real) {
            "contains"
        } else {
            continue;
        };
        bail!(
            "this node's home {} (its key and certificate) {relation} served folder {} ({}): \
             a peer's mirror would delete or overwrite them; pick separate directories \
             (--home or FERRY_HOME)",
            real.display(),
            f.name,
            f.path.display()
        );
    }
    Ok(())
}

/// Builds the server's configuration from the flags.
fn config(args: &ServeArgs, home: Option<&Path>) -> Result<ServeConfig> {
    let mut folders: BTreeMap<FolderId, PathBuf> = BTreeMap::new();
    for f in &args.folders {
        let (name, path) = folder(f)?;
        if let Some((other, _)) = folders
            .iter()
            .find(|(_, p)| p.starts_with(&path) || path.starts_with(p))
        {
            bail!("--folder {f:?}: {} overlaps folder {other}", path.display());
        }
        if folders.insert(name.clone(), path).is_some() {
            bail!("--folder {f:?}: folder {name} is listed twice");
        }
    }
    let mut peers = BTreeSet::new();
    let mut shares: BTreeMap<FolderId, BTreeSet<NodeId>> = BTreeMap::new();
    let mut everywhere = BTreeSet::new();
    for p in &args.peers {
        let (id, names) = peer(p)?;
        peers.insert(id);
        match names {
            None => {
                everywhere.insert(id);
            }
            Some(names) => {
                for n in names {
                    if !folders.contains_key(&n) {
                        bail!("--peer {p:?}: no --folder is named {n}");
                    }
                    shares.entry(n).or_default().insert(id);
                }
            }
        }
    }
    let folders: Vec<ServedFolder> = folders
        .into_iter()
        .map(|(name, path)| {
            let mut allowed = everywhere.clone();
            allowed.extend(shares.remove(&name).unwrap_or_default());
            ServedFolder {
                name,
                path,
                peers: Some(allowed),
            }
        })
        .collect();
    let home = crate::id_cmd::home(home)?;
    refuse_home_overlap(&home, &folders)?;
    let identity = crate::id_cmd::load(&home)?;
    Ok(ServeConfig {
        identity,
        peers,
        folders,
        durable: !args.no_fsync,
        link: LinkOptions::default(),
    })
}

/// Runs `ferry serve` until a signal.
pub fn run(args: &ServeArgs, home: Option<&Path>) -> Result<()> {
    let config = config(args, home)?;
    let node = config.identity.id();
    let system = actix::System::new();
    system.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        for f in &config.folders {
            tracing::info!(folder = %f.name, path = %f.path.display(), "serving folder");
        }
        let server =
            Server::new(config, Arc::new(Stats::default())).context("cannot set up TLS")?;
        // Listened for before `listening` is announced: a signal sent on it stops gracefully.
        let mut signals = StopSignals::listen().context("cannot listen for signals")?;
        tracing::info!(%node, %addr, "listening");
        // One line on stdout for scripts: the address actually bound (with port 0, the port).
        println!("listening {addr} node {node}");
        tokio::select! {
            _ = server.run(listener) => {}
            () = signals.recv() => {}
        }
        tracing::info!("signal received: stopping");
        Ok(())
    })
}
