//! `StateDb`: Ferry's persistent state (source indexes, target chunk lists, peer
//! acknowledgements, resume points) in one embedded redb database file.
//!
//! Why redb: it is pure Rust (no C toolchain to build or cross-compile), ACID with
//! copy-on-write B-trees and checksummed pages, so a crash or power loss leaves either the
//! old or the new state and never a torn one; it keeps everything in a single file, takes an
//! exclusive file lock so a second process cannot open the same database; and it is made for
//! exactly this embedded key-value job, without the schema machinery of an SQL engine.
//!
//! Every write method is one redb write transaction, committed with redb's default
//! `Durability::Immediate`: when it returns, the state is on disk (fsync'd). Callers batch
//! changes into few calls rather than one per file.
//!
//! Rows are keyed by `(key, path)`, where a key names one replication (for example
//! `photos→/backup/photos`) or a served folder, so keys never see each other's rows.
//!
//! ```
//! use ferry_engine::store::{SourceHead, StateDb};
//! use ferry_engine::{ChunkParams, Seq};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = StateDb::open(&dir.path().join("state.redb")).unwrap();
//! let head = SourceHead { params: ChunkParams::default(), seq: Seq(7), history_from: Seq(1), complete: true };
//! db.write_source("photos→/backup/photos", &head, &[], &[], true).unwrap();
//! let saved = db.load_source("photos→/backup/photos").unwrap().unwrap();
//! assert_eq!(saved.head, head);
//! ```

mod error;
mod resume;
mod source;
mod tables;
mod target;

use std::fs::{File, OpenOptions};
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadTransaction, ReadableTableMetadata, TableError, WriteTransaction};

pub use error::StoreError;
pub use resume::{ResumeHead, SavedResume};
pub use source::{SavedSource, SourceHead};

use tables::{ensure_tables, At, META};

/// The layout version of the tables and rows; a database with another version is rebuilt.
/// Version 3: chunk lists saved by version 2 were cut by an older rule (see
/// [`crate::chunk::cut_at`]), so their content ids no longer match what a scan finds.
pub const SCHEMA_VERSION: u32 = 3;

/// The value of the `magic` row of the `meta` table.
const MAGIC: &[u8] = b"ferry-state";

/// The first bytes of every redb file (redb 2's on-disk format), used to tell a damaged
/// redb file from a file that never was one.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Ferry's state database. `Send + Sync`: share it in an `Arc`; redb serialises writers.
pub struct StateDb {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish()
    }
}

impl StateDb {
    /// Opens the database at `path`, creating it (and its parent directories) when missing
    /// with file mode 0600, and checks its `meta` table: magic `ferry-state` and schema
    /// version [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<StateDb, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(path, e))?;
        }
        let (file, created) = open_file(path)?;
        // Lock before judging the file, so that a node never calls a file that another node
        // is creating "empty" or "foreign" and moves it aside. redb takes the same lock again
        // on the same open file, which succeeds.
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StoreError::InUse {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(StoreError::io(path, e.into())),
        }
        let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if !created && len == 0 {
            // redb would quietly make a database in it, but Ferry never leaves an empty file
            // behind except by crashing between creating and initialising it.
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                detail: "the file is empty".into(),
            });
        }
        let sniff = file.try_clone().map_err(|e| StoreError::io(path, e))?;
        // redb 2 panics on some damage (a truncated file fails an assertion) instead of
        // returning `Corrupted`; such a file is corrupt all the same, and must not take the
        // node down when `open_or_rebuild` could set it aside.
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let db = redb::Builder::new()
                .create_file(file)
                .map_err(|e| open_error(path, &sniff, e))?;
            let db = StateDb {
                db,
                path: path.to_owned(),
            };
            db.validate()?;
            // redb verifies its page checksums only when it repairs a file that was not
            // closed cleanly: damage to one that was would surface later, as a panic in the
            // middle of a read. Checked here (once the file is known to be Ferry's, so that
            // one of another program is set aside untouched), such a file is set aside like
            // any corrupt one. A repair redb had to make counts as damage too.
            let StateDb { mut db, path: p } = db;
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(StoreError::Corrupt {
                        path: path.to_owned(),
                        detail: "its pages failed redb's integrity check".into(),
                    })
                }
                Err(e) => return Err(open_error(path, &sniff, e)),
            }
            Ok(StateDb { db, path: p })
        }));
        opened.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!("redb failed reading it: {what}"),
            })
        })
    }

    /// [`open`](Self::open), but a corrupt file, a foreign file (not redb, or redb without
    /// Ferry's magic) or one of another schema version is renamed aside to
    /// `<file name>.bad-<unix seconds>` (never deleted) and a fresh database is created in its
    /// place. Returns, for the log, why that happened as a sentence naming both paths.
    /// `InUse` and I/O errors are returned as they are: rebuilding would not help.
    pub fn open_or_rebuild(path: &Path) -> Result<(StateDb, Option<String>), StoreError> {
        let why = match StateDb::open(path) {
            Ok(db) => return Ok((db, None)),
            Err(
                e @ (StoreError::Corrupt { .. }
                | StoreError::Foreign { .. }
                | StoreError::Schema { .. }),
            ) => e,
            Err(e) => return Err(e),
        };
        let aside = set_aside(path)?;
        let db = StateDb::open(path)?;
        let reason = format!(
            "{why}; moved it to {} and started a fresh state database at {}",
            aside.display(),
            path.display()
        );
        Ok((db, Some(reason)))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the `meta` table (writing it into a database with no tables at all) and makes
    /// sure every table exists with its expected types.
    fn validate(&self) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let fresh = {
            let tx = self.db.begin_read().at(path)?;
            match tx.open_table(META) {
                Ok(meta) => {
                    self.check_meta(&meta)?;
                    false
                }
                Err(TableError::TableDoesNotExist(_)) => {
                    let tables = tx.list_tables().at(path)?.count()
                        + tx.list_multimap_tables().at(path)?.count();
                    if tables > 0 {
                        return Err(StoreError::Foreign {
                            path: path.to_owned(),
                            detail: format!(
                                "a redb database with {tables} tables but no ferry meta table"
                            ),
                        });
                    }
                    true
                }
                Err(e) => return Err(StoreError::redb(path, e)),
            }
        };
        self.write(|tx| {
            if fresh {
                let mut meta = tx.open_table(META).at(path)?;
                meta.insert("magic", MAGIC).at(path)?;
                meta.insert("schema", &SCHEMA_VERSION.to_le_bytes()[..])
                    .at(path)?;
            }
            ensure_tables(tx, path)
        })
    }

    fn check_meta(&self, meta: &redb::ReadOnlyTable<&str, &[u8]>) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let magic = meta.get("magic").at(path)?;
        if magic.as_ref().map(|m| m.value()) != Some(MAGIC) {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                detail: format!(
                    "a redb database whose meta table ({} rows) lacks ferry's magic",
                    meta.len().at(path)?
                ),
            });
        }
        let schema = meta.get("schema").at(path)?;
        let found = schema
            .as_ref()
            .and_then(|s| <[u8; 4]>::try_from(s.value()).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                detail: "the meta table has no readable schema version".into(),
            })?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Runs `f` in one write transaction, committed when `f` succeeds and aborted otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().at(&self.path)?;
        match f(&tx) {
            Ok(out) => {
                tx.commit().at(&self.path)?;
                Ok(out)
            }
            Err(e) => {
                // The error that matters is `e`; a failed abort leaves nothing committed either.
                let _ = tx.abort();
                Err(e)
            }
        }
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_read().at(&self.path)?;
        f(&tx)
    }
}

/// Opens `path` for reading and writing, creating it with mode 0600 when missing; says
/// whether it was created.
fn open_file(path: &Path) -> Result<(File, bool), StoreError> {
    let mut new = OpenOptions::new();
    new.read(true).write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut new, 0o600);
    match new.open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(|f| (f, false))
            .map_err(|e| StoreError::io(path, e)),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Maps an error of redb's open. redb reports a file without its magic number as
/// `InvalidData`; the first bytes then tell a foreign file from a damaged redb file.
fn open_error(path: &Path, file: &File, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == io::ErrorKind::InvalidData =>
        {
            let mut head = [0u8; REDB_MAGIC.len()];
            let read = std::os::unix::fs::FileExt::read_exact_at(file, &mut head, 0);
            match read {
                Ok(()) if head == REDB_MAGIC => StoreError::Corrupt {
                    path: path.to_owned(),
                    detail: io.to_string(),
                },
                Ok(()) | Err(_) => StoreError::Foreign {
                    path: path.to_owned(),
                    detail: "not a redb database".into(),
                },
            }
        }
        e => StoreError::redb(path, e),
    }
}

/// Renames `path` to `<file name>.bad-<unix seconds>` (with `.N` appended when that exists)
/// and returns the new path.
fn set_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let base = path.with_file_name(format!("{name}.bad-{secs}"));
    let mut aside = base.clone();
    let mut n = 0u32;
    while aside.symlink_metadata().is_ok() {
        n += 1;
        aside = PathBuf::from(format!("{}.{n}", base.display()));
    }
    std::fs::rename(path, &aside).map_err(|e| StoreError::io(path, e))?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    fn bad_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".bad-"))
            .collect()
    }

    /// Runs `open_or_rebuild` on a file prepared by `prepare`, and checks that it was set
    /// aside with its bytes intact and that the fresh database works.
    fn rebuilds(prepare: impl FnOnce(&Path), expect: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        prepare(&path);
        let before = std::fs::read(&path).unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(err.is_rebuildable(), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
        let (db, reason) = StateDb::open_or_rebuild(&path).unwrap();
        let reason = reason.unwrap();
        let bad = bad_files(dir.path());
        assert_eq!(bad.len(), 1);
        assert!(reason.contains(&bad[0].display().to_string()), "{reason}");
        assert!(reason.contains(&path.display().to_string()), "{reason}");
        assert!(reason.contains(expect), "{reason}");
        assert_eq!(std::fs::read(&bad[0]).unwrap(), before);
        assert_eq!(db.epoch("k").unwrap(), db.epoch("k").unwrap());
        drop(db);
        let (_db, again) = StateDb::open_or_rebuild(&path).unwrap();
        assert_eq!(again, None);
    }

    #[test]
    fn a_file_of_random_bytes_is_set_aside() {
        rebuilds(
            |p| {
                let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
                std::fs::write(p, bytes).unwrap()
            },
            "not a ferry state database",
        );
    }

    #[test]
    fn an_empty_file_is_set_aside() {
        rebuilds(|p| std::fs::write(p, b"").unwrap(), "empty");
    }

    #[test]
    fn an_sqlite_file_is_set_aside() {
        rebuilds(
            |p| {
                let mut b = b"SQLite format 3\0".to_vec();
                b.extend(std::iter::repeat_n(0x5a, 4096));
                std::fs::write(p, b).unwrap()
            },
            "not a redb database",
        );
    }

    #[test]
    fn a_redb_database_of_another_program_is_set_aside() {
        rebuilds(
            |p| {
                let db = Database::create(p).unwrap();
                let tx = db.begin_write().unwrap();
                {
                    let def: redb::TableDefinition<&str, u64> =
                        redb::TableDefinition::new("counters");
                    tx.open_table(def).unwrap().insert("x", 1).unwrap();
                }
                tx.commit().unwrap();
            },
            "no ferry meta table",
        );
        // A meta table of the right type but without the magic.
        rebuilds(
            |p| {
                let db = Database::create(p).unwrap();
                let tx = db.begin_write().unwrap();
                tx.open_table(META)
                    .unwrap()
                    .insert("magic", &b"other"[..])
                    .unwrap();
                tx.commit().unwrap();
            },
            "lacks ferry's magic",
        );
    }

    #[test]
    fn another_schema_version_is_set_aside() {
        rebuilds(
            |p| {
                drop(StateDb::open(p).unwrap());
                let db = Database::create(p).unwrap();
                let tx = db.begin_write().unwrap();
                tx.open_table(META)
                    .unwrap()
                    .insert("schema", &999u32.to_le_bytes()[..])
                    .unwrap();
                tx.commit().unwrap();
            },
            "schema version 999",
        );
    }

    #[test]
    fn a_damaged_redb_file_is_set_aside() {
        rebuilds(
            |p| {
                let mut b = REDB_MAGIC.to_vec();
                b.extend((0..20_000u32).map(|i| (i * 31 % 253) as u8));
                std::fs::write(p, b).unwrap()
            },
            "corrupt",
        );
    }

    #[test]
    fn a_truncated_database_is_set_aside() {
        // redb 2 asserts (panics) on a file shorter than its header says; open turns that
        // into `Corrupt`.
        rebuilds(
            |p| {
                let db = StateDb::open(p).unwrap();
                let rows: Vec<_> = (0..3000u64)
                    .map(|i| (source::tests::entry(&format!("f{i}"), i), None))
                    .collect();
                let head = SourceHead {
                    params: crate::ChunkParams::default(),
                    seq: crate::Seq(1),
                    history_from: crate::Seq(1),
                    complete: true,
                };
                db.write_source("k", &head, &rows, &[], true).unwrap();
                drop(db);
                let b = std::fs::read(p).unwrap();
                std::fs::write(p, &b[..b.len() / 2]).unwrap();
            },
            "corrupt",
        );
    }

    #[test]
    fn damaged_pages_of_a_cleanly_closed_database_are_found_at_open() {
        // redb checks page checksums only when it repairs an uncleanly closed file: without
        // the check at open, this file opened fine and a later read panicked.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let db = StateDb::open(&path).unwrap();
        let rows: Vec<_> = (0..3000u64)
            .map(|i| (source::tests::entry(&format!("f{i}"), i), None))
            .collect();
        let head = SourceHead {
            params: crate::ChunkParams::new(1024, 4096, 16384).unwrap(),
            seq: crate::Seq(1),
            history_from: crate::Seq(1),
            complete: true,
        };
        db.write_source("k", &head, &rows, &[], true).unwrap();
        drop(db);
        let mut b = std::fs::read(&path).unwrap();
        // One bit in the middle of every page past the header's.
        for page in (4096..b.len()).step_by(4096) {
            b[page + 2048] ^= 0x10;
        }
        std::fs::write(&path, &b).unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(err.is_rebuildable(), "{err}");
        let (db, reason) = StateDb::open_or_rebuild(&path).unwrap();
        let reason = reason.expect("the damaged file is set aside");
        assert_eq!(bad_files(dir.path()).len(), 1, "{reason}");
        assert!(db.load_source("k").unwrap().is_none());
    }

    #[test]
    fn a_missing_file_and_its_directories_are_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.redb");
        let (db, reason) = StateDb::open_or_rebuild(&path).unwrap();
        assert_eq!(reason, None);
        assert_eq!(db.path(), path);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_open_in_this_process_is_in_use_and_not_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let db = StateDb::open(&path).unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("another ferry node"), "{err}");
        assert!(!err.is_rebuildable());
        let err = StateDb::open_or_rebuild(&path).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(bad_files(dir.path()).is_empty());
        drop(db);
        StateDb::open(&path).unwrap();
    }

    /// The child side of [`a_database_held_by_another_process_is_in_use`]: opens the database
    /// named by `FERRY_STORE_HOLD`, says so, and holds it until its stdin closes.
    #[test]
    #[ignore = "run by a_database_held_by_another_process_is_in_use as a child process"]
    fn hold_database_for_parent() {
        let Some(path) = std::env::var_os("FERRY_STORE_HOLD") else {
            return;
        };
        let _db = StateDb::open(Path::new(&path)).unwrap();
        println!("FERRY-HELD");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }

    #[test]
    fn a_database_held_by_another_process_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::hold_database_for_parent",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FERRY_STORE_HOLD", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("FERRY-HELD") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        }
        let err = StateDb::open_or_rebuild(&path).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        StateDb::open(&path).unwrap();
    }

    #[test]
    fn state_db_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<StateDb>();
    }
}
