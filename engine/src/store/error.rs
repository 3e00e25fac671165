//! `StoreError`: what can go wrong with the state database, each failure naming the database file.

use std::io;
use std::path::{Path, PathBuf};

/// A failure of the state database. Every variant names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file or its directory failed.
    #[error("state database {}: {error}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error (in the message only, so a chain shows it once).
        error: io::Error,
    },
    /// Another process holds the database's lock.
    #[error(
        "state database {} is locked by another process (is another ferry node using this state dir?)",
        path.display()
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The file is a redb database whose pages or tables are damaged.
    #[error("state database {} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What redb or the validation found.
        detail: String,
    },
    /// The file is not a Ferry state database (not redb at all, or redb without Ferry's magic).
    #[error("{} is not a ferry state database: {detail}", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Why it was not recognised.
        detail: String,
    },
    /// The database was written by a Ferry with another schema version.
    #[error(
        "state database {} has schema version {found}, this ferry reads version {expected}",
        path.display()
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// A row of one replication key (or served folder) does not decode; the caller drops that
    /// key's rows and rebuilds them.
    #[error("state database {}: a row of {key:?} does not decode: {detail}", path.display())]
    Decode {
        /// The database file.
        path: PathBuf,
        /// The replication key or folder whose row is bad.
        key: String,
        /// Which row and why.
        detail: String,
    },
    /// Any other redb failure (a bug, or a resource limit such as an oversized value).
    #[error("state database {}: {detail}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// redb's message.
        detail: String,
    },
}

impl StoreError {
    /// True when throwing state away and rebuilding it is the remedy: the whole file for
    /// `Corrupt`, `Foreign` and `Schema` (see `StateDb::open_or_rebuild`), the key's rows for
    /// `Decode`. Never for `InUse`, `Io` or `Db`, where rebuilding would lose good state or
    /// fight another process.
    pub fn is_rebuildable(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Foreign { .. }
                | StoreError::Schema { .. }
                | StoreError::Decode { .. }
        )
    }

    /// The database file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Io { path, .. }
            | StoreError::InUse { path }
            | StoreError::Corrupt { path, .. }
            | StoreError::Foreign { path, .. }
            | StoreError::Schema { path, .. }
            | StoreError::Decode { path, .. }
            | StoreError::Db { path, .. } => path,
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            error: source,
        }
    }

    pub(crate) fn decode(path: &Path, key: &str, detail: impl Into<String>) -> Self {
        StoreError::Decode {
            path: path.to_owned(),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    /// Maps any redb error: a held lock is `InUse`, damage and mismatched table types are
    /// `Corrupt`, an old file format is `Foreign`, I/O stays `Io`, the rest is `Db`.
    pub(crate) fn redb(path: &Path, e: impl Into<redb::Error>) -> Self {
        let path = path.to_owned();
        match e.into() {
            redb::Error::DatabaseAlreadyOpen => StoreError::InUse { path },
            redb::Error::Io(error) => StoreError::Io { path, error },
            redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
            e @ (redb::Error::RepairAborted
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. }) => StoreError::Corrupt {
                path,
                detail: e.to_string(),
            },
            redb::Error::UpgradeRequired(v) => StoreError::Foreign {
                path,
                detail: format!("redb file format {v} is not the one this build reads"),
            },
            e => StoreError::Db {
                path,
                detail: e.to_string(),
            },
        }
    }
}
