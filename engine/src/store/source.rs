//! The source side of the state database: each replication's index with its stat cache,
//! the epoch naming that index, and what each peer acknowledged.

use std::collections::HashSet;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::tables::{
    decode, decode_entry, encode, encode_entry, remove_rows, rows_of, At, ACK, SOURCE_ENTRY,
    SOURCE_EPOCH, SOURCE_HEAD,
};
use super::{StateDb, StoreError};
use crate::chunk::{ChunkParams, Content};
use crate::entry::{FileEntry, Seq};
use crate::index::{Index, StatKey};
use crate::relpath::RelPath;

/// What a source index needs besides its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHead {
    /// The chunker parameters of every `Content` in the index.
    pub params: ChunkParams,
    /// The index's current sequence number.
    pub seq: Seq,
    /// The oldest sequence from which changes (tombstones included) are still recorded.
    pub history_from: Seq,
    /// Every entry the last run recorded was saved (it stopped cleanly). When false, some
    /// may be missing (a crash), so no delta is to be trusted from before the next run.
    #[serde(default)]
    pub complete: bool,
}

/// A source index as it was last written.
#[derive(Clone, Debug)]
pub struct SavedSource {
    /// Its head.
    pub head: SourceHead,
    /// Its entries with their stats, built with `head.params`.
    pub index: Index,
}

/// Why a saved entry's chunk list cannot be the file's, if it cannot: it must hash to its
/// content id (the id covers the chunk ids and lengths) and add up to the file's size. A
/// damaged row that still decodes would otherwise be sent as the file's content.
fn untrustworthy(e: &FileEntry, params: &ChunkParams) -> Option<String> {
    let c = e.content.as_ref()?;
    if Content::id_of(params, &c.chunks) != c.id {
        return Some(format!(
            "entry {:?}: its chunk list does not match its content id",
            e.path.as_str()
        ));
    }
    (c.len() != e.size).then(|| {
        format!(
            "entry {:?}: its chunk list holds {} bytes, its size is {}",
            e.path.as_str(),
            c.len(),
            e.size
        )
    })
}

impl StateDb {
    /// The saved index of replication `key`, or `None` if none was written (or it was dropped).
    /// A row that does not decode is a [`StoreError::Decode`]: drop the key and rebuild.
    pub fn load_source(&self, key: &str) -> Result<Option<SavedSource>, StoreError> {
        let path = self.path.as_path();
        self.read(|tx| {
            let heads = tx.open_table(SOURCE_HEAD).at(path)?;
            let Some(head) = heads.get(key).at(path)? else {
                return Ok(None);
            };
            let head: SourceHead = decode(head.value())
                .map_err(|e| StoreError::decode(path, key, format!("source head: {e}")))?;
            let rows = tx.open_table(SOURCE_ENTRY).at(path)?;
            let (from, to) = rows_of(key);
            let mut entries = Vec::new();
            for row in rows
                .range::<(&str, &str)>((from.as_str(), "")..(to.as_str(), ""))
                .at(path)?
            {
                let (k, v) = row.at(path)?;
                let entry = decode_entry(k.value().1, v.value())
                    .map_err(|e| StoreError::decode(path, key, e))?;
                if let Some(why) = untrustworthy(&entry.0, &head.params) {
                    return Err(StoreError::decode(path, key, why));
                }
                entries.push(entry);
            }
            Ok(Some(SavedSource {
                index: Index::from_sorted(head.params, entries),
                head,
            }))
        })
    }

    /// Writes `key`'s head, deletes the rows of `removed` (tombstones compacted away), then
    /// upserts `entries` (an entry's path names its row; tombstones are ordinary entries).
    /// With `full`, every other entry row of `key` is deleted first, making `entries` a
    /// snapshot.
    pub fn write_source(
        &self,
        key: &str,
        head: &SourceHead,
        entries: &[(FileEntry, Option<StatKey>)],
        removed: &[RelPath],
        full: bool,
    ) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            let mut buf = Vec::new();
            encode(head, &mut buf, path)?;
            tx.open_table(SOURCE_HEAD)
                .at(path)?
                .insert(key, buf.as_slice())
                .at(path)?;
            let mut rows = tx.open_table(SOURCE_ENTRY).at(path)?;
            if full {
                // Rows that the snapshot overwrites anyway are not deleted first.
                let fresh: HashSet<&str> = entries.iter().map(|(e, _)| e.path.as_str()).collect();
                remove_rows(&mut rows, key, |p| fresh.contains(p), path)?;
            }
            for p in removed {
                rows.remove((key, p.as_str())).at(path)?;
            }
            for (entry, stat) in entries {
                encode_entry(entry, stat.as_ref(), &mut buf, path)?;
                rows.insert((key, entry.path.as_str()), buf.as_slice())
                    .at(path)?;
            }
            Ok(())
        })
    }

    /// Forgets everything about replication `key` on the source side: head, entries, epoch
    /// (the next [`epoch`](Self::epoch) makes a new one) and acknowledgements (they count
    /// sequences of the forgotten index).
    pub fn drop_source(&self, key: &str) -> Result<(), StoreError> {
        self.write(|tx| self.drop_source_in(tx, key))
    }

    fn drop_source_in(&self, tx: &WriteTransaction, key: &str) -> Result<(), StoreError> {
        let path = self.path.as_path();
        tx.open_table(SOURCE_HEAD).at(path)?.remove(key).at(path)?;
        tx.open_table(SOURCE_EPOCH).at(path)?.remove(key).at(path)?;
        remove_rows(
            &mut tx.open_table(SOURCE_ENTRY).at(path)?,
            key,
            |_| false,
            path,
        )?;
        remove_rows(&mut tx.open_table(ACK).at(path)?, key, |_| false, path)?;
        Ok(())
    }

    /// The epoch of `key`'s index: a random odd (so non-zero) number that a remote peer
    /// quotes to resume from it. Created and stored on the first call, stable until
    /// [`drop_source`](Self::drop_source).
    pub fn epoch(&self, key: &str) -> Result<u64, StoreError> {
        let path = self.path.as_path();
        let check = |e: u64| {
            if e & 1 == 1 {
                Ok(e)
            } else {
                Err(StoreError::decode(
                    path,
                    key,
                    format!("epoch {e:#x} is even"),
                ))
            }
        };
        let stored = self.read(|tx| {
            let t = tx.open_table(SOURCE_EPOCH).at(path)?;
            let e = t.get(key).at(path)?.map(|g| g.value());
            Ok(e)
        })?;
        if let Some(e) = stored {
            return check(e);
        }
        self.write(|tx| {
            let mut t = tx.open_table(SOURCE_EPOCH).at(path)?;
            // Another thread may have made it between the read and this write.
            let raced = t.get(key).at(path)?.map(|g| g.value());
            if let Some(e) = raced {
                return check(e);
            }
            let e = rand::random::<u64>() | 1;
            t.insert(key, e).at(path)?;
            Ok(e)
        })
    }

    /// Records that `peer` acknowledged (applied) `key`'s changes up to `seq`.
    pub fn set_ack(&self, key: &str, peer: &str, seq: Seq) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            tx.open_table(ACK)
                .at(path)?
                .insert((key, peer), seq.0)
                .at(path)?;
            Ok(())
        })
    }

    /// Every peer's acknowledged sequence for `key`, ordered by peer.
    pub fn acks(&self, key: &str) -> Result<Vec<(String, Seq)>, StoreError> {
        let path = self.path.as_path();
        self.read(|tx| {
            let t = tx.open_table(ACK).at(path)?;
            let (from, to) = rows_of(key);
            let mut out = Vec::new();
            for row in t
                .range::<(&str, &str)>((from.as_str(), "")..(to.as_str(), ""))
                .at(path)?
            {
                let (k, v) = row.at(path)?;
                out.push((k.value().1.to_owned(), Seq(v.value())));
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::chunk::{ChunkId, ChunkRef, Content};
    use crate::entry::{EntryKind, EntryState, MtimeNs, VersionVector};
    use std::path::Path;

    /// The chunker parameters of the saved indexes in these tests.
    fn params() -> ChunkParams {
        ChunkParams::new(1024, 4096, 16384).unwrap()
    }

    pub(in crate::store) fn entry(path: &str, seq: u64) -> FileEntry {
        let params = params();
        let chunks = (0..3u32)
            .map(|i| ChunkRef {
                id: ChunkId::of(format!("{path}{i}").as_bytes()),
                len: 100 + i,
            })
            .collect();
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            state: EntryState::Present,
            size: 303,
            mtime: MtimeNs(1_700_000_000_000_000_000 + seq as i64),
            mode: 0o644,
            content: Some(Content::from_chunks(&params, chunks)),
            symlink_target: None,
            seq: Seq(seq),
            version: VersionVector::default(),
        }
    }

    fn tombstone(path: &str, seq: u64) -> FileEntry {
        FileEntry {
            state: EntryState::Deleted,
            content: None,
            size: 0,
            ..entry(path, seq)
        }
    }

    fn dir_entry(path: &str, seq: u64) -> FileEntry {
        FileEntry {
            kind: EntryKind::Dir,
            content: None,
            size: 0,
            mode: 0o755,
            ..entry(path, seq)
        }
    }

    pub(in crate::store) fn stat(ino: u64) -> StatKey {
        StatKey {
            dev: 9,
            ino,
            size: 303,
            mtime_ns: 1,
            ctime_ns: 2,
            btime_ns: 3,
        }
    }

    fn head(seq: u64) -> SourceHead {
        SourceHead {
            params: params(),
            seq: Seq(seq),
            history_from: Seq(1),
            complete: true,
        }
    }

    fn entries_of(saved: SavedSource) -> Vec<(FileEntry, Option<StatKey>)> {
        saved.index.into_entries()
    }

    fn open() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn a_source_index_round_trips_with_tombstones_stats_and_content() {
        let (_dir, db) = open();
        assert!(db.load_source("k").unwrap().is_none());
        let rows = vec![
            (dir_entry("a", 1), None),
            (entry("a/b", 2), Some(stat(2))),
            (tombstone("a/c", 3), None),
            (entry("a-b", 4), Some(stat(4))),
            (entry("é/ü", 5), None),
        ];
        db.write_source("k", &head(5), &rows, &[], true).unwrap();
        let saved = db.load_source("k").unwrap().unwrap();
        assert_eq!(saved.head, head(5));
        assert_eq!(saved.index.params(), &head(5).params);
        let mut expect = rows.clone();
        expect.sort_by(|x, y| x.0.path.cmp(&y.0.path));
        assert_eq!(entries_of(saved), expect);
    }

    #[test]
    fn upserts_are_incremental_and_full_replaces() {
        let (_dir, db) = open();
        let a = (entry("a", 1), Some(stat(1)));
        let b = (entry("b", 2), None);
        db.write_source("k", &head(2), &[a.clone(), b.clone()], &[], true)
            .unwrap();
        let b2 = (tombstone("b", 3), None);
        let c = (entry("c", 4), Some(stat(4)));
        db.write_source("k", &head(4), &[b2.clone(), c.clone()], &[], false)
            .unwrap();
        let saved = db.load_source("k").unwrap().unwrap();
        assert_eq!(saved.head, head(4));
        assert_eq!(entries_of(saved), vec![a, b2.clone(), c]);
        let d = (entry("d", 5), None);
        db.write_source("k", &head(5), &[b2.clone(), d.clone()], &[], true)
            .unwrap();
        assert_eq!(
            entries_of(db.load_source("k").unwrap().unwrap()),
            vec![b2, d]
        );
    }

    #[test]
    fn removed_rows_go_before_upserts_of_the_same_write() {
        let (_dir, db) = open();
        let a = (entry("a", 1), None);
        let b = (tombstone("b", 2), None);
        let c = (tombstone("c", 3), None);
        db.write_source("k", &head(3), &[a.clone(), b.clone(), c], &[], true)
            .unwrap();
        // Compaction forgets both tombstones; "c" is created again in the same write.
        let c2 = (entry("c", 4), Some(stat(4)));
        let gone = [b.0.path.clone(), RelPath::new("c").unwrap()];
        db.write_source("k", &head(4), std::slice::from_ref(&c2), &gone, false)
            .unwrap();
        assert_eq!(
            entries_of(db.load_source("k").unwrap().unwrap()),
            vec![a, c2]
        );
    }

    #[test]
    fn keys_are_isolated_from_each_other() {
        let (_dir, db) = open();
        // Keys that are prefixes of each other, and one holding the range's bound character.
        let keys = ["k", "k\0", "k2", "kk", "photos→/backup/photos", ""];
        for (i, k) in keys.iter().enumerate() {
            let e = (entry(&format!("f{i}"), i as u64), None);
            db.write_source(k, &head(i as u64), &[e], &[], true)
                .unwrap();
            db.set_ack(k, "peer", Seq(i as u64)).unwrap();
        }
        db.write_source("k", &head(9), &[], &[], true).unwrap();
        db.drop_source("k2").unwrap();
        for (i, k) in keys.iter().enumerate() {
            let saved = db.load_source(k).unwrap();
            match *k {
                "k" => assert!(saved.unwrap().index.is_empty()),
                "k2" => assert!(saved.is_none()),
                _ => {
                    let rows = entries_of(saved.unwrap());
                    assert_eq!(rows.len(), 1, "{k:?}");
                    assert_eq!(rows[0].0.path.as_str(), format!("f{i}"));
                }
            }
            let acks = db.acks(k).unwrap();
            if *k == "k2" {
                assert!(acks.is_empty());
            } else {
                assert_eq!(acks, vec![("peer".to_owned(), Seq(i as u64))], "{k:?}");
            }
        }
    }

    #[test]
    fn acks_are_per_peer_and_overwritten() {
        let (_dir, db) = open();
        db.set_ack("k", "b", Seq(3)).unwrap();
        db.set_ack("k", "a", Seq(1)).unwrap();
        db.set_ack("k", "a", Seq(2)).unwrap();
        db.set_ack("other", "a", Seq(7)).unwrap();
        assert_eq!(
            db.acks("k").unwrap(),
            vec![("a".to_owned(), Seq(2)), ("b".to_owned(), Seq(3))]
        );
        assert!(db.acks("none").unwrap().is_empty());
    }

    #[test]
    fn the_epoch_is_stable_across_reopen_and_forgotten_by_drop_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let db = StateDb::open(&path).unwrap();
        let e = db.epoch("k").unwrap();
        assert_eq!(e & 1, 1);
        assert_eq!(db.epoch("k").unwrap(), e);
        let other = db.epoch("j").unwrap();
        drop(db);
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.epoch("k").unwrap(), e);
        db.write_source("k", &head(1), &[(entry("a", 1), None)], &[], true)
            .unwrap();
        db.drop_source("k").unwrap();
        assert!(db.load_source("k").unwrap().is_none());
        let e2 = db.epoch("k").unwrap();
        assert_ne!(e2, e);
        assert_eq!(e2 & 1, 1);
        assert_eq!(db.epoch("j").unwrap(), other);
    }

    #[test]
    fn a_chunk_list_that_no_longer_matches_its_entry_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let db = StateDb::open(&path).unwrap();
        db.write_source("k", &head(1), &[(entry("a", 1), None)], &[], true)
            .unwrap();
        assert!(db.load_source("k").unwrap().is_some());
        // Damage that still decodes: a chunk's length, then (id fixed up) the size.
        let mut bent = entry("a", 1);
        bent.content.as_mut().unwrap().chunks[1].len += 1;
        let mut short = entry("a", 1);
        short.size -= 1;
        for (damaged, says) in [(bent, "content id"), (short, "its size is")] {
            let mut buf = Vec::new();
            encode_entry(&damaged, None, &mut buf, &path).unwrap();
            db.write(|tx| {
                let mut t = tx.open_table(SOURCE_ENTRY).unwrap();
                t.insert(("k", "a"), buf.as_slice()).unwrap();
                Ok(())
            })
            .unwrap();
            let err = db.load_source("k").unwrap_err();
            assert!(
                matches!(&err, StoreError::Decode { detail, .. } if detail.contains(says)),
                "{err}"
            );
        }
    }

    #[test]
    fn a_garbage_row_is_a_decode_error_for_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let db = StateDb::open(&path).unwrap();
        db.write_source("k", &head(1), &[(entry("a", 1), None)], &[], true)
            .unwrap();
        db.write_source("j", &head(1), &[(entry("a", 1), None)], &[], true)
            .unwrap();
        db.write(|tx| {
            let mut t = tx.open_table(SOURCE_ENTRY).unwrap();
            t.insert(("k", "b"), &b"\xa1\xff garbage"[..]).unwrap();
            Ok(())
        })
        .unwrap();
        let err = db.load_source("k").unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { key, detail, .. } if key == "k" && detail.contains("\"b\"")),
            "{err}"
        );
        assert!(err.is_rebuildable());
        assert_eq!(err.path(), Path::new(&path));
        assert!(db.load_source("j").unwrap().is_some());
        // A bad head, and a row whose path is not a valid RelPath, are caught too.
        db.write(|tx| {
            let mut t = tx.open_table(SOURCE_HEAD).unwrap();
            t.insert("j", &b"\x00"[..]).unwrap();
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            db.load_source("j"),
            Err(StoreError::Decode { .. })
        ));
        db.drop_source("k").unwrap();
        let mut buf = Vec::new();
        encode_entry(&entry("a", 1), None, &mut buf, &path).unwrap();
        db.write_source("k", &head(1), &[], &[], true).unwrap();
        db.write(|tx| {
            let mut t = tx.open_table(SOURCE_ENTRY).unwrap();
            t.insert(("k", "../x"), buf.as_slice()).unwrap();
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            db.load_source("k"),
            Err(StoreError::Decode { .. })
        ));
        // Dropping the key is the remedy.
        db.drop_source("k").unwrap();
        assert!(db.load_source("k").unwrap().is_none());
    }

    #[test]
    fn twenty_thousand_entries_round_trip_in_one_transaction() {
        let (_dir, db) = open();
        let rows: Vec<_> = (0..20_000u64)
            .map(|i| {
                let e = entry(&format!("d{}/file-{i:06}.jpg", i % 97), i);
                (e, Some(stat(i)))
            })
            .collect();
        db.write_source("big", &head(20_000), &rows, &[], true)
            .unwrap();
        let saved = db.load_source("big").unwrap().unwrap();
        assert_eq!(saved.index.len(), rows.len());
        let mut expect = rows;
        expect.sort_by(|x, y| x.0.path.cmp(&y.0.path));
        assert_eq!(entries_of(saved), expect);
        // A full rewrite with fewer rows leaves only those.
        db.write_source("big", &head(1), &expect[..10], &[], true)
            .unwrap();
        assert_eq!(db.load_source("big").unwrap().unwrap().index.len(), 10);
    }

    /// The performance check of the module doc: `cargo test -p ferry-engine --release --
    /// --ignored hundred_thousand --nocapture` prints the times (no assertion on them).
    #[test]
    #[ignore = "a timing report, run by hand in release"]
    fn hundred_thousand_entries_write_and_load() {
        let (_dir, db) = open();
        let rows: Vec<_> = (0..100_000u64)
            .map(|i| {
                let e = entry(&format!("d{}/file-{i:06}.jpg", i % 997), i);
                (e, Some(stat(i)))
            })
            .collect();
        let t = std::time::Instant::now();
        db.write_source("big", &head(100_000), &rows, &[], true)
            .unwrap();
        let write = t.elapsed();
        let first_size = std::fs::metadata(db.path()).unwrap().len();
        let t = std::time::Instant::now();
        let saved = db.load_source("big").unwrap().unwrap();
        let load = t.elapsed();
        assert_eq!(saved.index.len(), rows.len());
        let t = std::time::Instant::now();
        db.write_source("big", &head(100_001), &rows, &[], true)
            .unwrap();
        let rewrite = t.elapsed();
        let size = std::fs::metadata(db.path()).unwrap().len();
        let t = std::time::Instant::now();
        db.drop_source("big").unwrap();
        let dropped = t.elapsed();
        eprintln!(
            "100k entries: write {write:?} ({} MiB), load {load:?}, full rewrite {rewrite:?} \
             ({} MiB), drop {dropped:?}",
            first_size >> 20,
            size >> 20
        );
    }
}
