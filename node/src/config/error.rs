//! What can be wrong with a config file: each [`Problem`] carries its line and column, the
//! key involved and a hint saying how to fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What kind of problem a [`Problem`] is, for callers (and tests) that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The file is not valid TOML.
    Syntax,
    /// A key the format does not have.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong TOML type.
    WrongType,
    /// A name (node or peer) is empty or spans lines.
    BadName,
    /// Two folders share an id.
    DuplicateFolder,
    /// Two peers share a name.
    DuplicatePeer,
    /// Two peers share a node id.
    DuplicatePeerId,
    /// A folder's path does not exist.
    PathMissing,
    /// A folder's path (or a target's parent) is not a directory.
    NotADirectory,
    /// A folder path or target is inside (or equal to) another.
    Overlap,
    /// `peers` names a peer no `[[peer]]` defines.
    UnknownPeer,
    /// Not a duration.
    BadDuration,
    /// Not a node id.
    BadNodeId,
    /// Not a folder id.
    BadFolderId,
    /// Not a socket address (or `host:port` for a peer).
    BadAddress,
    /// `role` is neither `send` nor `receive`.
    BadRole,
    /// A path that cannot be used (empty, or a target ending in `..`).
    BadPath,
    /// An ignore pattern that is empty or spans lines.
    BadIgnore,
    /// A receive folder lists `targets`.
    TargetsOnReceive,
    /// A send folder has neither peers nor targets.
    NothingToSendTo,
    /// A receive folder lists no peers, so nobody may send into it.
    NoSenders,
    /// A receive folder lists peers but `[node]` has no `listen`.
    ListenRequired,
    /// A send folder sends to a peer that has no `address`.
    PeerWithoutAddress,
    /// `watch = false` with rescans turned off: the folder would never be looked at.
    NeverScanned,
    /// No `home` in the file and none can be derived from the environment.
    NoHome,
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The line, counting from 1.
    pub line: usize,
    /// The column, counting characters from 1.
    pub column: usize,
    /// The key involved, dotted (`folder.rescan_interval`, `node.listen`); empty for a
    /// syntax error.
    pub key: String,
    /// What is wrong, e.g. ``folder "photos": `rescan_interval` = "5 parsecs" is not a duration``.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Every problem found in one config file, sorted by position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, as named in the messages.
    pub file: PathBuf,
    /// The problems, at least one, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    /// One block per problem: `FILE:LINE:COL: message` and an indented `hint:` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{}:{}:{}: {}\n  hint: {}",
                self.file.display(),
                p.line,
                p.column,
                p.message,
                p.hint
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why a config file could not be loaded. A cause is part of the message, not also a
/// `source`, so a printer of the whole chain shows it once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The file was read but is not a valid config. (Not a `#[source]`: the problems are
    /// this error's own text, and error-chain printers would show them twice.)
    #[error("{0}")]
    Invalid(ConfigErrors),
}

impl From<ConfigErrors> for ConfigError {
    fn from(e: ConfigErrors) -> Self {
        ConfigError::Invalid(e)
    }
}
