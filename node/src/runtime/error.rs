//! Why a node could not start or go on.

use std::path::PathBuf;

/// A node's fatal errors (a folder that fails at run time is reported, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config file is missing or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node's key and certificate could not be loaded or created.
    #[error("cannot load this node's identity from {home}: {source}")]
    Identity {
        /// The identity directory.
        home: PathBuf,
        /// Why.
        #[source]
        source: crate::remote::identity::IdentityError,
    },
    /// A folder with peers, but no identity was loaded.
    #[error("folder {folder} has peers but this node has no identity")]
    NoIdentity {
        /// The folder.
        folder: String,
    },
    /// The state database could not be opened.
    #[error("cannot open the state database: {0}")]
    State(#[from] ferry_engine::store::StoreError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dashboard could not be started.
    #[error("cannot start the dashboard on {addr}: {source}")]
    Dashboard {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] crate::remote::tls::TlsError),
    /// A folder could not be started.
    #[error("folder {folder}: {reason}")]
    Folder {
        /// The folder.
        folder: String,
        /// Why.
        reason: String,
    },
    /// Signals could not be set up.
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    /// A second signal stopped the node before the changes in flight were finished.
    #[error("second signal: stopped at once; files being written are finished by the next run")]
    Cut,
}
