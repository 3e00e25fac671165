//! The engine's error type: every failure names the path involved and says whether a retry may help.

use std::io;
use std::path::PathBuf;

use crate::relpath::RelPath;

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What the engine was doing (`open`, `read`, `rename`, ...).
        op: &'static str,
        /// The path involved, as the user would recognise it.
        path: PathBuf,
        /// The operating system's error (in the message, so not also a `source`: a printer
        /// of the whole chain shows it once).
        error: io::Error,
    },
    /// A path received or built does not satisfy [`RelPath`]'s rules.
    #[error("invalid relative path {path:?}: {reason}")]
    InvalidPath {
        /// The offending text.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A chunk's bytes do not hash to the id they were sent or read under.
    #[error("chunk of {path} at offset {offset} does not match its id")]
    ChunkMismatch {
        /// The file the chunk belongs to.
        path: RelPath,
        /// Its offset in that file.
        offset: u64,
    },
    /// The file changed on disk between the scan and the read.
    #[error("{path} changed while it was being read")]
    Changed {
        /// The file that changed.
        path: RelPath,
    },
    /// The target no longer looks the way the plan expected: something else changed it.
    #[error("{path}: precondition failed: {reason}")]
    Precondition {
        /// The entry whose state differs.
        path: RelPath,
        /// What was expected.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            error: source,
        }
    }

    /// True when the file system (or the user's quota on it) was full: the operation may
    /// succeed once other writes in flight are done or something is removed.
    pub fn is_no_space(&self) -> bool {
        use rustix::io::Errno;
        matches!(self, Error::Io { error, .. }
        if error.kind() == io::ErrorKind::StorageFull
            || error.raw_os_error().is_some_and(|n| {
                n == Errno::NOSPC.raw_os_error() || n == Errno::DQUOT.raw_os_error()
            }))
    }

    /// True when the same operation may succeed if tried again later
    /// (a file changed under us, a disk that was full, a busy resource).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { error, .. } => matches!(
                error.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::StorageFull
                    | io::ErrorKind::ResourceBusy
                    | io::ErrorKind::NotFound
            ),
            Error::Changed { .. } | Error::Precondition { .. } | Error::ChunkMismatch { .. } => {
                true
            }
            Error::InvalidPath { .. } => false,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_quota_is_no_space_and_nothing_else_is() {
        let io_err = |n| Error::io("write", "/x", io::Error::from_raw_os_error(n));
        assert!(io_err(rustix::io::Errno::NOSPC.raw_os_error()).is_no_space());
        assert!(io_err(rustix::io::Errno::DQUOT.raw_os_error()).is_no_space());
        assert!(!io_err(rustix::io::Errno::IO.raw_os_error()).is_no_space());
        assert!(!io_err(rustix::io::Errno::ACCESS.raw_os_error()).is_no_space());
        let changed = Error::Changed {
            path: RelPath::new("a").unwrap(),
        };
        assert!(!changed.is_no_space());
    }

    #[test]
    fn an_io_error_says_its_cause_once_in_a_printed_chain() {
        let e = Error::io(
            "open",
            "/x/y",
            io::Error::new(io::ErrorKind::NotFound, "No such file"),
        );
        // A printer of the whole chain (anyhow's `{:#}`, a `source()` walk) adds each
        // source after the message: the cause is in the message, so there is none.
        assert_eq!(e.to_string(), "open /x/y: No such file");
        assert!(std::error::Error::source(&e).is_none());
    }
}
