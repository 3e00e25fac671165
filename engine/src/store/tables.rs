//! The state database's tables and the compact CBOR encoding of their rows.
//!
//! Row keys are `(key, path)` tuples, so every replication key's rows form one contiguous
//! range that no other key's rows can fall into. Rows are CBOR arrays rather than maps:
//! a field name per row would double the size of an index of small files. An entry's path
//! is its row key and is not repeated in the value.

use std::path::Path;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::chunk::{ChunkId, ChunkRef, Content, ContentId};
use crate::entry::{EntryKind, EntryState, FileEntry, MtimeNs, Seq, VersionVector};
use crate::index::StatKey;
use crate::relpath::RelPath;

/// `"magic"` → `b"ferry-state"`, `"schema"` → the schema version as 4 little-endian bytes.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Replication key → CBOR `SourceHead`.
pub(super) const SOURCE_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("source_head");
/// (replication key, path) → entry row with its stat.
pub(super) const SOURCE_ENTRY: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("source_entry");
/// Replication key → the random epoch naming its index.
pub(super) const SOURCE_EPOCH: TableDefinition<&str, u64> = TableDefinition::new("source_epoch");
/// (replication key, peer) → the last sequence that peer acknowledged.
pub(super) const ACK: TableDefinition<(&str, &str), u64> = TableDefinition::new("ack");
/// (replication key, path) → target row (stat and chunk list).
pub(super) const TARGET_ENTRY: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("target_entry");
/// Served folder → CBOR `ResumeHead`.
pub(super) const RESUME_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("resume_head");
/// (served folder, path) → entry row without stat.
pub(super) const RESUME_ENTRY: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("resume_entry");

/// Opens (creating when missing) every table except `META`, so that later read
/// transactions find them all and a table of the wrong type is caught at open.
pub(super) fn ensure_tables(tx: &WriteTransaction, path: &Path) -> Result<(), StoreError> {
    tx.open_table(SOURCE_HEAD).at(path)?;
    tx.open_table(SOURCE_ENTRY).at(path)?;
    tx.open_table(SOURCE_EPOCH).at(path)?;
    tx.open_table(ACK).at(path)?;
    tx.open_table(TARGET_ENTRY).at(path)?;
    tx.open_table(RESUME_HEAD).at(path)?;
    tx.open_table(RESUME_ENTRY).at(path)?;
    Ok(())
}

/// The bounds of every `(key, _)` row: from `(key, "")` up to, excluding, `(key + "\0", "")`,
/// the smallest tuple whose first string sorts after `key`.
pub(super) fn rows_of(key: &str) -> (String, String) {
    (key.to_owned(), format!("{key}\0"))
}

/// Removes the rows of `key` whose path `keep` rejects.
///
/// The paths are collected first and then removed one by one: redb 2's `retain_in` copies a
/// B-tree path for every deletion (it may not modify the tree it iterates), which made a
/// snapshot of 100,000 rows take seconds and grow the file by gigabytes.
pub(super) fn remove_rows<V: redb::Value + 'static>(
    table: &mut redb::Table<(&'static str, &'static str), V>,
    key: &str,
    keep: impl Fn(&str) -> bool,
    path: &Path,
) -> Result<(), StoreError> {
    let (from, to) = rows_of(key);
    let mut doomed = Vec::new();
    for row in table
        .range::<(&str, &str)>((from.as_str(), "")..(to.as_str(), ""))
        .at(path)?
    {
        let (k, _) = row.at(path)?;
        let p = k.value().1;
        if !keep(p) {
            doomed.push(p.to_owned());
        }
    }
    for p in &doomed {
        table.remove((key, p.as_str())).at(path)?;
    }
    Ok(())
}

/// Attaches the database path to a redb error.
pub(super) trait At<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> At<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::redb(path, e))
    }
}

/// CBOR of `value` into `buf` (cleared first).
pub(super) fn encode<T: Serialize>(
    value: &T,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<(), StoreError> {
    buf.clear();
    ciborium::into_writer(value, &mut *buf).map_err(|e| StoreError::Db {
        path: path.to_owned(),
        detail: format!("encoding a row: {e}"),
    })
}

/// Decodes a CBOR value, describing a failure in words.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

/// A row path back into a `RelPath`.
pub(super) fn row_path(s: &str) -> Result<RelPath, String> {
    RelPath::new(s).map_err(|e| e.to_string())
}

type StatRow = (u64, u64, u64, i64, i64, i64);

fn stat_row(s: &StatKey) -> StatRow {
    (s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns, s.btime_ns)
}

fn stat_of((dev, ino, size, mtime_ns, ctime_ns, btime_ns): StatRow) -> StatKey {
    StatKey {
        dev,
        ino,
        size,
        mtime_ns,
        ctime_ns,
        btime_ns,
    }
}

/// A chunk list as `[content id, [[chunk id, len], ...]]`, serialized without copying.
struct ContentOut<'a>(&'a Content);

impl Serialize for ContentOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0.id)?;
        t.serialize_element(&ChunksOut(&self.0.chunks))?;
        t.end()
    }
}

struct ChunksOut<'a>(&'a [ChunkRef]);

impl Serialize for ChunksOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| (c.id, c.len)))
    }
}

#[derive(Deserialize)]
struct ContentIn(ContentId, Vec<(ChunkId, u32)>);

impl From<ContentIn> for Content {
    fn from(ContentIn(id, chunks): ContentIn) -> Content {
        Content {
            id,
            chunks: chunks
                .into_iter()
                .map(|(id, len)| ChunkRef { id, len })
                .collect(),
        }
    }
}

/// An entry row: every `FileEntry` field but the path, then the stat.
struct EntryOut<'a>(&'a FileEntry, Option<&'a StatKey>);

impl Serialize for EntryOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Destructured in full so that a new field cannot be forgotten here.
        let FileEntry {
            path: _,
            kind,
            state,
            size,
            mtime,
            mode,
            content,
            symlink_target,
            seq,
            version,
        } = self.0;
        let mut t = s.serialize_tuple(10)?;
        t.serialize_element(kind)?;
        t.serialize_element(state)?;
        t.serialize_element(size)?;
        t.serialize_element(&mtime.0)?;
        t.serialize_element(mode)?;
        t.serialize_element(&content.as_ref().map(ContentOut))?;
        t.serialize_element(symlink_target)?;
        t.serialize_element(&seq.0)?;
        t.serialize_element(version)?;
        t.serialize_element(&self.1.map(stat_row))?;
        t.end()
    }
}

#[derive(Deserialize)]
struct EntryIn(
    EntryKind,
    EntryState,
    u64,
    i64,
    u32,
    Option<ContentIn>,
    Option<String>,
    u64,
    VersionVector,
    Option<StatRow>,
);

/// Encodes an entry row into `buf`.
pub(super) fn encode_entry(
    entry: &FileEntry,
    stat: Option<&StatKey>,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<(), StoreError> {
    encode(&EntryOut(entry, stat), buf, path)
}

/// Decodes the entry row stored under `row_path`.
pub(super) fn decode_entry(
    row_path_str: &str,
    bytes: &[u8],
) -> Result<(FileEntry, Option<StatKey>), String> {
    let path = row_path(row_path_str)?;
    let EntryIn(kind, state, size, mtime, mode, content, symlink_target, seq, version, stat) =
        decode(bytes).map_err(|e| format!("entry {row_path_str:?}: {e}"))?;
    let entry = FileEntry {
        path,
        kind,
        state,
        size,
        mtime: MtimeNs(mtime),
        mode,
        content: content.map(Content::from),
        symlink_target,
        seq: Seq(seq),
        version,
    };
    Ok((entry, stat.map(stat_of)))
}

/// Encodes a target row (stat and chunk list) into `buf`.
pub(super) fn encode_target(
    stat: &StatKey,
    content: &Content,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<(), StoreError> {
    encode(&(stat_row(stat), ContentOut(content)), buf, path)
}

/// Decodes the target row stored under `row_path`.
pub(super) fn decode_target(
    row_path_str: &str,
    bytes: &[u8],
) -> Result<(RelPath, StatKey, Content), String> {
    let path = row_path(row_path_str)?;
    let (stat, content): (StatRow, ContentIn) =
        decode(bytes).map_err(|e| format!("target row {row_path_str:?}: {e}"))?;
    Ok((path, stat_of(stat), content.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkParams;

    fn file(path: &str) -> FileEntry {
        let p = ChunkParams::default();
        let chunks = vec![
            ChunkRef {
                id: ChunkId::of(b"a"),
                len: 1,
            },
            ChunkRef {
                id: ChunkId::of(b"bc"),
                len: 2,
            },
        ];
        let mut version = VersionVector::default();
        version.0.insert("node-a".into(), 3);
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            state: EntryState::Present,
            size: 3,
            mtime: MtimeNs(-5),
            mode: 0o644,
            content: Some(Content::from_chunks(&p, chunks)),
            symlink_target: Some("x".into()),
            seq: Seq(u64::MAX),
            version,
        }
    }

    #[test]
    fn entry_rows_round_trip_and_omit_the_path() {
        let e = file("dir/some-long-file-name.txt");
        let stat = StatKey {
            dev: 1,
            ino: u64::MAX,
            size: 3,
            mtime_ns: -1,
            ctime_ns: i64::MAX,
            btime_ns: i64::MIN,
        };
        let mut buf = Vec::new();
        for s in [None, Some(&stat)] {
            encode_entry(&e, s, &mut buf, Path::new("db")).unwrap();
            assert!(!buf
                .windows(e.path.as_str().len())
                .any(|w| w == e.path.as_str().as_bytes()));
            let (back, back_stat) = decode_entry(e.path.as_str(), &buf).unwrap();
            assert_eq!(back, e);
            assert_eq!(back_stat.as_ref(), s);
        }
    }

    #[test]
    fn target_rows_round_trip() {
        let e = file("t");
        let content = e.content.unwrap();
        let stat = StatKey {
            dev: 2,
            ino: 3,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
            btime_ns: 6,
        };
        let mut buf = Vec::new();
        encode_target(&stat, &content, &mut buf, Path::new("db")).unwrap();
        assert_eq!(
            decode_target("t", &buf).unwrap(),
            (RelPath::new("t").unwrap(), stat, content)
        );
    }

    #[test]
    fn bad_rows_and_bad_paths_are_errors() {
        assert!(decode_entry("a", b"\xff\x00garbage").is_err());
        assert!(decode_entry("a", b"").is_err());
        let mut buf = Vec::new();
        encode_entry(&file("a"), None, &mut buf, Path::new("db")).unwrap();
        assert!(decode_entry("../a", &buf).is_err());
        assert!(decode_target("a", &buf).is_err());
    }
}
