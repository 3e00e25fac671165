//! The receiving node's side of the state database: per served folder, what a session
//! leaves behind for the next one to resume from (the sender's epoch, the applied
//! sequence and the view of the sender's index).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::tables::{
    decode, decode_entry, encode, encode_entry, remove_rows, rows_of, At, RESUME_ENTRY, RESUME_HEAD,
};
use super::{StateDb, StoreError};
use crate::chunk::ChunkParams;
use crate::entry::{FileEntry, Seq};
use crate::index::Index;

/// Where a served folder's last session stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeHead {
    /// The sending peer.
    pub peer: String,
    /// The epoch of the sender's index that `applied` and the view refer to.
    pub epoch: u64,
    /// The last sender sequence applied here.
    pub applied: Seq,
    /// The chunker parameters of the view's contents.
    pub params: ChunkParams,
}

/// A served folder's resume point as it was last written.
#[derive(Clone, Debug)]
pub struct SavedResume {
    /// Its head.
    pub head: ResumeHead,
    /// The view of the sender's index, built with `head.params` (no stats).
    pub view: Index,
}

impl StateDb {
    /// The resume point of `folder`, or `None`. A row that does not decode is a
    /// [`StoreError::Decode`]: drop the folder's resume point and start over.
    pub fn load_resume(&self, folder: &str) -> Result<Option<SavedResume>, StoreError> {
        let path = self.path.as_path();
        self.read(|tx| {
            let heads = tx.open_table(RESUME_HEAD).at(path)?;
            let Some(head) = heads.get(folder).at(path)? else {
                return Ok(None);
            };
            let head: ResumeHead = decode(head.value())
                .map_err(|e| StoreError::decode(path, folder, format!("resume head: {e}")))?;
            let rows = tx.open_table(RESUME_ENTRY).at(path)?;
            let (from, to) = rows_of(folder);
            let mut view = Vec::new();
            for row in rows
                .range::<(&str, &str)>((from.as_str(), "")..(to.as_str(), ""))
                .at(path)?
            {
                let (k, v) = row.at(path)?;
                let (entry, _) = decode_entry(k.value().1, v.value())
                    .map_err(|e| StoreError::decode(path, folder, e))?;
                view.push((entry, None));
            }
            Ok(Some(SavedResume {
                view: Index::from_sorted(head.params, view),
                head,
            }))
        })
    }

    /// Writes `folder`'s head and upserts `view`'s entries; with `full`, they replace the
    /// whole saved view.
    pub fn write_resume(
        &self,
        folder: &str,
        resume_head: &ResumeHead,
        view: &[FileEntry],
        full: bool,
    ) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            let mut buf = Vec::new();
            encode(resume_head, &mut buf, path)?;
            tx.open_table(RESUME_HEAD)
                .at(path)?
                .insert(folder, buf.as_slice())
                .at(path)?;
            let mut rows = tx.open_table(RESUME_ENTRY).at(path)?;
            if full {
                let fresh: HashSet<&str> = view.iter().map(|e| e.path.as_str()).collect();
                remove_rows(&mut rows, folder, |p| fresh.contains(p), path)?;
            }
            for entry in view {
                encode_entry(entry, None, &mut buf, path)?;
                rows.insert((folder, entry.path.as_str()), buf.as_slice())
                    .at(path)?;
            }
            Ok(())
        })
    }

    /// Forgets `folder`'s resume point.
    pub fn drop_resume(&self, folder: &str) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            tx.open_table(RESUME_HEAD)
                .at(path)?
                .remove(folder)
                .at(path)?;
            remove_rows(
                &mut tx.open_table(RESUME_ENTRY).at(path)?,
                folder,
                |_| false,
                path,
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::tests::entry;
    use super::*;

    fn head(applied: u64) -> ResumeHead {
        ResumeHead {
            peer: "node-a".into(),
            epoch: 0xdead_beef_0000_0001,
            applied: Seq(applied),
            params: ChunkParams::default(),
        }
    }

    fn view_of(saved: SavedResume) -> Vec<FileEntry> {
        saved.view.iter().cloned().collect()
    }

    #[test]
    fn a_resume_point_round_trips_upserts_and_is_replaced_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let db = StateDb::open(&path).unwrap();
        assert!(db.load_resume("f").unwrap().is_none());
        let (a, b, c) = (entry("a", 1), entry("b", 2), entry("c", 3));
        db.write_resume("f", &head(2), &[a.clone(), b.clone()], true)
            .unwrap();
        db.write_resume("g", &head(9), std::slice::from_ref(&c), true)
            .unwrap();
        let b2 = entry("b", 3);
        db.write_resume("f", &head(3), &[b2.clone(), c.clone()], false)
            .unwrap();
        drop(db);
        let db = StateDb::open(&path).unwrap();
        let saved = db.load_resume("f").unwrap().unwrap();
        assert_eq!(saved.head, head(3));
        assert_eq!(view_of(saved), vec![a, b2, c.clone()]);

        db.write_resume("f", &head(4), &[entry("d", 4)], true)
            .unwrap();
        assert_eq!(
            view_of(db.load_resume("f").unwrap().unwrap()),
            vec![entry("d", 4)]
        );
        db.drop_resume("f").unwrap();
        assert!(db.load_resume("f").unwrap().is_none());
        assert_eq!(view_of(db.load_resume("g").unwrap().unwrap()), vec![c]);
    }

    #[test]
    fn a_garbage_resume_head_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("s.redb")).unwrap();
        db.write(|tx| {
            let mut t = tx.open_table(RESUME_HEAD).unwrap();
            t.insert("f", &b"\xff"[..]).unwrap();
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            db.load_resume("f"),
            Err(StoreError::Decode { key, .. }) if key == "f"
        ));
        db.drop_resume("f").unwrap();
        assert!(db.load_resume("f").unwrap().is_none());
    }
}
