//! The target side of the state database: the chunk lists of a replication's target files,
//! each valid while the file's `StatKey` is unchanged, so a restart need not rehash them.

use std::collections::HashSet;

use super::tables::{decode_target, encode_target, remove_rows, rows_of, At, TARGET_ENTRY};
use super::{StateDb, StoreError};
use crate::chunk::Content;
use crate::index::StatKey;
use crate::relpath::RelPath;

impl StateDb {
    /// Every saved target file of `key` with the stat it was hashed under and its chunk list,
    /// in the database's order (bytewise by path). A row that does not decode is a
    /// [`StoreError::Decode`]: clear the key with `write_target(key, &[], &[], true)`.
    pub fn load_target(&self, key: &str) -> Result<Vec<(RelPath, StatKey, Content)>, StoreError> {
        let path = self.path.as_path();
        self.read(|tx| {
            let t = tx.open_table(TARGET_ENTRY).at(path)?;
            let (from, to) = rows_of(key);
            let mut out = Vec::new();
            for row in t
                .range::<(&str, &str)>((from.as_str(), "")..(to.as_str(), ""))
                .at(path)?
            {
                let (k, v) = row.at(path)?;
                out.push(
                    decode_target(k.value().1, v.value())
                        .map_err(|e| StoreError::decode(path, key, e))?,
                );
            }
            Ok(out)
        })
    }

    /// Deletes `removed` and then upserts `upserts` (so a path in both ends up saved).
    /// With `full`, every row of `key` is deleted first, making `upserts` a snapshot.
    pub fn write_target(
        &self,
        key: &str,
        upserts: &[(RelPath, StatKey, Content)],
        removed: &[RelPath],
        full: bool,
    ) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            let mut t = tx.open_table(TARGET_ENTRY).at(path)?;
            if full {
                let fresh: HashSet<&str> = upserts.iter().map(|(p, _, _)| p.as_str()).collect();
                remove_rows(&mut t, key, |p| fresh.contains(p), path)?;
            }
            for p in removed {
                t.remove((key, p.as_str())).at(path)?;
            }
            let mut buf = Vec::new();
            for (p, stat, content) in upserts {
                encode_target(stat, content, &mut buf, path)?;
                t.insert((key, p.as_str()), buf.as_slice()).at(path)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::tests::{entry, stat};
    use super::*;

    fn row(path: &str, ino: u64) -> (RelPath, StatKey, Content) {
        let e = entry(path, ino);
        (e.path, stat(ino), e.content.unwrap())
    }

    #[test]
    fn target_rows_round_trip_upsert_remove_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.redb")).unwrap();
        assert!(db.load_target("k").unwrap().is_empty());
        let (a, b, c) = (row("a", 1), row("b/x", 2), row("c", 3));
        db.write_target("k", &[a.clone(), b.clone()], &[], true)
            .unwrap();
        db.write_target("other", std::slice::from_ref(&c), &[], true)
            .unwrap();
        assert_eq!(db.load_target("k").unwrap(), vec![a.clone(), b.clone()]);

        let a2 = row("a", 10);
        db.write_target(
            "k",
            &[a2.clone(), c.clone()],
            &[b.0.clone(), c.0.clone()],
            false,
        )
        .unwrap();
        assert_eq!(db.load_target("k").unwrap(), vec![a2, c.clone()]);

        db.write_target("k", std::slice::from_ref(&b), &[], true)
            .unwrap();
        assert_eq!(db.load_target("k").unwrap(), vec![b]);
        assert_eq!(db.load_target("other").unwrap(), vec![c]);

        db.write_target("k", &[], &[], true).unwrap();
        assert!(db.load_target("k").unwrap().is_empty());
    }

    #[test]
    fn a_garbage_target_row_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.redb")).unwrap();
        db.write(|tx| {
            let mut t = tx.open_table(TARGET_ENTRY).unwrap();
            t.insert(("k", "a"), &b"\x82\x01"[..]).unwrap();
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            db.load_target("k"),
            Err(StoreError::Decode { key, .. }) if key == "k"
        ));
        db.write_target("k", &[], &[], true).unwrap();
        assert!(db.load_target("k").unwrap().is_empty());
    }
}
