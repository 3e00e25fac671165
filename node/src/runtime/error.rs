//! Why a node could not start or go on.

use std::path::PathBuf;

/// A node's fatal errors (a folder that fails at run time is reported, not fatal).
///
/// Each cause is part of the message and not also a `source`, so a printer of the whole
/// chain (`{:#}`) shows it once.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config file is missing or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node's key and certificate could not be loaded or created.
    #[error("cannot load this node's identity from {}: {error}", home.display())]
    Identity {
        /// The identity directory.
        home: PathBuf,
        /// Why.
        error: crate::remote::identity::IdentityError,
    },
    /// A folder with peers, but no identity was loaded.
    #[error("folder {folder} has peers but this node has no identity")]
    NoIdentity {
        /// The folder.
        folder: String,
    },
    /// The state database could not be opened.
    #[error("cannot open the state database: {0}")]
    State(ferry_engine::store::StoreError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The dashboard could not be started.
    #[error("cannot start the dashboard on {addr}: {error}")]
    Dashboard {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(crate::remote::tls::TlsError),
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
    Signals(std::io::Error),
    /// A second signal stopped the node before the changes in flight were finished.
    #[error("second signal: stopped at once; files being written are finished by the next run")]
    Cut,
}

impl From<ferry_engine::store::StoreError> for RunError {
    fn from(e: ferry_engine::store::StoreError) -> Self {
        RunError::State(e)
    }
}

impl From<crate::remote::tls::TlsError> for RunError {
    fn from(e: crate::remote::tls::TlsError) -> Self {
        RunError::Tls(e)
    }
}
