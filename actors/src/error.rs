//! The actors' error type: engine failures, lost actors and panics turned into values.

use ferry_engine::RelPath;

/// What went wrong in a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed on a path.
    #[error(transparent)]
    Engine(#[from] ferry_engine::Error),
    /// An actor this one talks to has stopped (its mailbox is closed).
    #[error("{actor} is gone: {error}")]
    Mailbox {
        /// Which actor could not be reached.
        actor: &'static str,
        /// The mailbox error (in the message only, so a chain shows it once).
        error: actix::MailboxError,
    },
    /// CPU or I/O work panicked; the panic was caught and turned into this error.
    #[error("{task} panicked: {message}")]
    Panicked {
        /// What the work was.
        task: &'static str,
        /// The panic message.
        message: String,
    },
    /// An actor of the pipeline failed and the run could not finish.
    #[error("{0}")]
    Stopped(String),
    /// The peer broke the protocol (a chunk nobody asked for, an impossible entry).
    #[error("protocol error about {path:?}: {reason}")]
    Protocol {
        /// The path involved, if any.
        path: Option<RelPath>,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// True when retrying the same work later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Engine(e) => e.is_transient(),
            Error::Mailbox { .. } | Error::Stopped(_) => true,
            Error::Panicked { .. } | Error::Protocol { .. } => false,
        }
    }
}

/// The actors' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
