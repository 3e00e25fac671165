//! `TargetName`: how a node names each target of a send folder, in logs, the dashboard and
//! the keys of its state store.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::PeerName;

/// Where a send folder's replication goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    /// A directory mirrored in this process.
    Local(PathBuf),
    /// A remote node, by its name in the config.
    Peer(String),
}

/// A target of a send folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetName {
    /// What it is.
    pub kind: TargetKind,
}

impl TargetName {
    /// The local directory `dir`.
    pub fn local(dir: &Path) -> Self {
        TargetName {
            kind: TargetKind::Local(dir.to_owned()),
        }
    }

    /// The peer called `name`.
    pub fn peer(name: &PeerName) -> Self {
        TargetName {
            kind: TargetKind::Peer(name.as_str().to_owned()),
        }
    }

    /// `local` or `peer`, as the dashboard shows it.
    pub fn kind_word(&self) -> &'static str {
        match self.kind {
            TargetKind::Local(_) => "local",
            TargetKind::Peer(_) => "peer",
        }
    }

    /// The key of this target's state for `folder` in the node's state store.
    pub fn state_key(&self, folder: &str) -> String {
        format!("send/{folder}/{self}")
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TargetKind::Local(dir) => write!(f, "{}", dir.display()),
            TargetKind::Peer(name) => write!(f, "peer:{name}"),
        }
    }
}
