//! Index updates too large for one frame: split into [`IndexPart`]s by the sender, joined
//! back into one [`IndexDelta`] by the receiver.
//!
//! A chunk list sent apart from its entry travels in the same part as that entry, so a
//! receiver that sees a part sees each of its entries whole.

use std::collections::HashMap;

use ferry_actors::messages::{ChunkData, ChunkList, IndexDelta};
use ferry_actors::wire::encoded_len;
use ferry_engine::RelPath;

use super::protocol::{Frame, IndexPart};

/// The most entries and lists together one joined index update may hold: about a folder of
/// ten million files, far above what one source holds, low enough to bound what a peer
/// can make a receiver accumulate.
pub const MAX_INDEX_ENTRIES: usize = 10_000_000;

/// Why index parts could not be joined. Either is a protocol violation by the sender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// A part's folder, flags or sequence differ from the first part's.
    #[error("index parts disagree on {field}")]
    Disagree {
        /// The field (`folder`, `snapshot`, `content_reply` or `upto`).
        field: &'static str,
    },
    /// The update grew past the receiver's limit.
    #[error("index update of more than {max} entries")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// The bytes of a CBOR head announcing `n` items (ciborium writes definite lengths for
/// every `Vec`).
fn head_len(n: usize) -> u64 {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// What travels together: an entry with the lists of its path, or a list with no entry.
struct Unit {
    /// The entry's index, if the unit has one.
    entry: Option<usize>,
    /// The lists' indexes.
    lists: Vec<usize>,
    /// The encoded size of the entry and the lists.
    bytes: u64,
}

/// Splits `delta` into parts whose `Frame::Index` encodings are at most `budget` bytes
/// each, in order: entries keep their order, each list travels with the first entry of its
/// path, and lists without an entry travel last. An entry (with its lists) larger than the
/// budget travels alone, over budget. All parts but the last have `more` set.
///
/// Parts are filled greedily rather than halved: that gives the fewest parts an
/// order-keeping split can have, each but the last close to the budget.
pub fn split_index(delta: IndexDelta, budget: usize) -> Vec<IndexPart> {
    let budget = budget as u64;
    let IndexDelta {
        folder,
        snapshot,
        content_reply,
        entries,
        lists,
        upto,
    } = delta;
    let shell = |entries, lists, more| IndexPart {
        delta: IndexDelta {
            folder: folder.clone(),
            snapshot,
            content_reply,
            entries,
            lists,
            upto,
        },
        more,
    };

    // A part's size is its empty frame's, with the two empty array heads replaced by the
    // real ones, plus its items' encodings: exact, without encoding any part twice.
    let empty = encoded_len(&Frame::<ChunkData>::Index(shell(
        Vec::new(),
        Vec::new(),
        true,
    )));
    let part_len = |entries: usize, lists: usize, items: u64| {
        empty.saturating_sub(2) + head_len(entries) + head_len(lists) + items
    };

    let units = units(&entries, &lists);
    let mut plan: Vec<Vec<&Unit>> = Vec::new();
    let mut current: Vec<&Unit> = Vec::new();
    let (mut n_entries, mut n_lists, mut items) = (0, 0, 0);
    for unit in &units {
        let (e, l) = (usize::from(unit.entry.is_some()), unit.lists.len());
        let grown = part_len(n_entries + e, n_lists + l, items + unit.bytes);
        if grown > budget && !current.is_empty() {
            plan.push(std::mem::take(&mut current));
            (n_entries, n_lists, items) = (0, 0, 0);
        }
        current.push(unit);
        (n_entries, n_lists, items) = (n_entries + e, n_lists + l, items + unit.bytes);
    }
    plan.push(current);

    // Entries leave in order (units hold them in order); lists are taken by index.
    let mut entries = entries.into_iter();
    let mut lists: Vec<Option<ChunkList>> = lists.into_iter().map(Some).collect();
    let last = plan.len() - 1;
    plan.iter()
        .enumerate()
        .map(|(i, part)| {
            let n = part.iter().filter(|u| u.entry.is_some()).count();
            let part_entries = entries.by_ref().take(n).collect();
            let part_lists = part
                .iter()
                .flat_map(|u| &u.lists)
                .filter_map(|&l| lists[l].take())
                .collect();
            shell(part_entries, part_lists, i != last)
        })
        .collect()
}

/// The units of an update: each entry with the lists of its path (a path's lists go to its
/// first entry), then each list whose path has no entry, with their encoded sizes.
fn units(entries: &[ferry_engine::FileEntry], lists: &[ChunkList]) -> Vec<Unit> {
    let mut first: HashMap<&RelPath, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        first.entry(&e.path).or_insert(i);
    }
    let mut units: Vec<Unit> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| Unit {
            entry: Some(i),
            lists: Vec::new(),
            bytes: encoded_len(e),
        })
        .collect();
    let mut orphans = Vec::new();
    for (l, list) in lists.iter().enumerate() {
        let bytes = encoded_len(list);
        match first.get(&list.path) {
            Some(&i) => {
                units[i].lists.push(l);
                units[i].bytes += bytes;
            }
            None => orphans.push(Unit {
                entry: None,
                lists: vec![l],
                bytes,
            }),
        }
    }
    units.extend(orphans);
    units
}

/// Joins index parts back into the update they were split from.
#[derive(Debug)]
pub struct IndexJoiner {
    /// The most entries and lists an update may hold.
    max_entries: usize,
    /// The parts joined so far.
    pending: Option<IndexDelta>,
}

impl IndexJoiner {
    /// A joiner accepting updates of at most `max_entries` entries and lists together
    /// (usually [`MAX_INDEX_ENTRIES`]).
    pub fn new(max_entries: usize) -> Self {
        IndexJoiner {
            max_entries,
            pending: None,
        }
    }

    /// True when no update is half-joined.
    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Adds a part; returns the whole update after its last part. On an error the parts
    /// joined so far are dropped.
    pub fn push(&mut self, part: IndexPart) -> Result<Option<IndexDelta>, PartError> {
        let IndexPart { delta, more } = part;
        let held = self.pending.take();
        if let Some(field) = held.as_ref().and_then(|acc| disagreement(acc, &delta)) {
            return Err(PartError::Disagree { field });
        }
        // Counted before anything moves, so that a part over the limit is never copied.
        let size = |d: &IndexDelta| d.entries.len().saturating_add(d.lists.len());
        if held.as_ref().map_or(0, size).saturating_add(size(&delta)) > self.max_entries {
            return Err(PartError::TooMany {
                max: self.max_entries,
            });
        }
        let joined = match held {
            None => delta,
            Some(mut acc) => {
                acc.entries.extend(delta.entries);
                acc.lists.extend(delta.lists);
                acc
            }
        };
        if more {
            self.pending = Some(joined);
            Ok(None)
        } else {
            Ok(Some(joined))
        }
    }
}

/// The first field of the update's header on which `part` differs from `acc`, if any.
fn disagreement(acc: &IndexDelta, part: &IndexDelta) -> Option<&'static str> {
    if acc.folder != part.folder {
        Some("folder")
    } else if acc.snapshot != part.snapshot {
        Some("snapshot")
    } else if acc.content_reply != part.content_reply {
        Some("content_reply")
    } else if acc.upto != part.upto {
        Some("upto")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use ferry_actors::messages::ListForm;
    use ferry_actors::FolderId;
    use ferry_engine::outline::outline;
    use ferry_engine::{
        ChunkId, ChunkParams, ChunkRef, Content, EntryKind, EntryState, FileEntry, MtimeNs, Seq,
        VersionVector,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::remote::protocol::INDEX_PART_BYTES;

    fn path(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn entry(name: &str, chunks: u32) -> FileEntry {
        let refs = (0..chunks)
            .map(|i| ChunkRef {
                id: ChunkId::of(format!("{name}{i}").as_bytes()),
                len: 4096,
            })
            .collect();
        let content = Content::from_chunks(&ChunkParams::default(), refs);
        FileEntry {
            path: path(name),
            kind: EntryKind::File,
            state: EntryState::Present,
            size: content.len(),
            mtime: MtimeNs(1),
            mode: 0o644,
            content: (chunks > 0).then_some(content),
            symlink_target: None,
            seq: Seq(3),
            version: VersionVector::default(),
        }
    }

    fn list(name: &str, chunks: u32) -> ChunkList {
        let content = entry(name, chunks).content.unwrap();
        ChunkList {
            path: path(name),
            id: content.id,
            form: ListForm::Outline(outline(&content)),
        }
    }

    fn delta(entries: Vec<FileEntry>, lists: Vec<ChunkList>) -> IndexDelta {
        IndexDelta {
            folder: FolderId::new("docs").unwrap(),
            snapshot: true,
            content_reply: false,
            entries,
            lists,
            upto: Seq(9),
        }
    }

    fn frame_len(part: &IndexPart) -> u64 {
        encoded_len(&Frame::<ChunkData>::Index(part.clone()))
    }

    fn join(parts: Vec<IndexPart>) -> IndexDelta {
        let mut j = IndexJoiner::new(MAX_INDEX_ENTRIES);
        let n = parts.len();
        for (i, p) in parts.into_iter().enumerate() {
            match j.push(p).unwrap() {
                Some(d) => {
                    assert_eq!(i, n - 1);
                    assert!(j.is_empty());
                    return d;
                }
                None => assert!(!j.is_empty()),
            }
        }
        panic!("no part ended the update");
    }

    fn paths(entries: &[FileEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn a_small_update_is_one_part() {
        let d = delta(vec![entry("a", 2), entry("b", 0)], vec![list("a", 3)]);
        let parts = split_index(d, INDEX_PART_BYTES);
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].more);
        assert_eq!(paths(&parts[0].delta.entries), ["a", "b"]);
        assert_eq!(parts[0].delta.lists.len(), 1);
    }

    #[test]
    fn an_empty_update_is_one_part() {
        let parts = split_index(delta(vec![], vec![]), 1);
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].more);
        assert_eq!(join(parts).upto, Seq(9));
    }

    #[test]
    fn parts_fit_the_budget_and_sizes_are_exact() {
        let entries: Vec<_> = (0..300).map(|i| entry(&format!("f{i}"), i % 7)).collect();
        let lists = (0..300)
            .step_by(10)
            .map(|i| list(&format!("f{i}"), 20))
            .collect();
        let budget = 8 << 10;
        let parts = split_index(delta(entries, lists), budget);
        assert!(parts.len() > 5, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.more, i + 1 < parts.len());
            assert!(frame_len(p) <= budget as u64, "part {i}: {}", frame_len(p));
            // Each list travels with its entry.
            for l in &p.delta.lists {
                assert!(p.delta.entries.iter().any(|e| e.path == l.path));
            }
        }
        // Greedy filling: no two neighbours would have fitted together.
        for w in parts.windows(2) {
            let mut both = w[0].clone();
            both.delta.entries.extend(w[1].delta.entries.clone());
            both.delta.lists.extend(w[1].delta.lists.clone());
            assert!(frame_len(&both) > budget as u64);
        }
    }

    #[test]
    fn the_size_formula_matches_the_encoding_across_head_sizes() {
        // 24, 256 and 65 536 items change the size of an array's head.
        for n in [0usize, 1, 23, 24, 255, 256, 300] {
            let entries: Vec<_> = (0..n).map(|i| entry(&format!("e{i}"), 0)).collect();
            let lists = (0..n).map(|i| list(&format!("e{i}"), 1)).collect();
            let d = delta(entries, lists);
            let whole = frame_len(&IndexPart {
                delta: d.clone(),
                more: false,
            });
            // Exactly the whole size fits in one part; one byte less does not.
            assert_eq!(split_index(d.clone(), whole as usize).len(), 1, "{n}");
            if n > 1 {
                assert!(split_index(d, whole as usize - 1).len() > 1, "{n}");
            }
        }
    }

    #[test]
    fn an_entry_over_budget_travels_alone() {
        let d = delta(
            vec![entry("small", 1), entry("huge", 500), entry("after", 1)],
            vec![],
        );
        let parts = split_index(d, 2000);
        let split: Vec<_> = parts.iter().map(|p| paths(&p.delta.entries)).collect();
        assert_eq!(split, [vec!["small"], vec!["huge"], vec!["after"]]);
    }

    #[test]
    fn lists_without_an_entry_travel_last() {
        let entries: Vec<_> = (0..50).map(|i| entry(&format!("f{i}"), 3)).collect();
        let d = delta(entries, vec![list("orphan", 5), list("f0", 5)]);
        let parts = split_index(d, 3000);
        assert!(parts.len() > 2);
        assert_eq!(parts[0].delta.lists[0].path.as_str(), "f0");
        let last = parts.last().unwrap();
        assert!(last.delta.lists.iter().any(|l| l.path.as_str() == "orphan"));
    }

    #[test]
    fn joining_refuses_parts_that_disagree() {
        let base = delta(vec![entry("a", 1)], vec![]);
        let first = IndexPart {
            delta: base.clone(),
            more: true,
        };
        type Change = fn(&mut IndexDelta);
        let cases: [(&str, Change); 4] = [
            ("folder", |d| d.folder = FolderId::new("other").unwrap()),
            ("snapshot", |d| d.snapshot = false),
            ("content_reply", |d| d.content_reply = true),
            ("upto", |d| d.upto = Seq(10)),
        ];
        for (field, change) in cases {
            let mut j = IndexJoiner::new(100);
            assert!(j.push(first.clone()).unwrap().is_none());
            let mut second = base.clone();
            change(&mut second);
            let err = j
                .push(IndexPart {
                    delta: second,
                    more: false,
                })
                .unwrap_err();
            assert_eq!(err, PartError::Disagree { field });
            assert_eq!(err.to_string(), format!("index parts disagree on {field}"));
            assert!(j.is_empty());
        }
    }

    #[test]
    fn joining_refuses_too_many_entries() {
        let part = |n: usize, more| IndexPart {
            delta: delta(
                (0..n).map(|i| entry(&format!("f{i}"), 0)).collect(),
                vec![list("f0", 1)],
            ),
            more,
        };
        let mut j = IndexJoiner::new(10);
        assert!(j.push(part(4, true)).unwrap().is_none());
        assert!(j.push(part(4, true)).unwrap().is_none());
        let err = j.push(part(1, false)).unwrap_err();
        assert_eq!(err.to_string(), "index update of more than 10 entries");
        assert!(j.is_empty());
        // A single part over the limit is refused too.
        assert_eq!(
            IndexJoiner::new(3).push(part(3, false)).unwrap_err(),
            PartError::TooMany { max: 3 }
        );
    }

    fn arb_delta() -> impl Strategy<Value = IndexDelta> {
        (
            prop::collection::vec((0u32..40, 0u32..6), 0..40),
            prop::collection::vec((0u32..50, 1u32..30), 0..10),
        )
            .prop_map(|(entries, lists)| {
                delta(
                    entries
                        .iter()
                        .map(|&(name, chunks)| entry(&format!("p{name}"), chunks))
                        .collect(),
                    // Names up to 49 for lists: some match no entry.
                    lists
                        .iter()
                        .map(|&(name, chunks)| list(&format!("p{name}"), chunks))
                        .collect(),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn split_then_join_gives_the_update_back(d in arb_delta(), budget in 1usize..6000) {
            let parts = split_index(d.clone(), budget);
            prop_assert!(!parts.is_empty());
            for p in &parts {
                // Only a part of at most one unit (an entry with its lists, or a list
                // without an entry; none for an empty update) may be over budget.
                let e = &p.delta.entries;
                let orphans = p.delta.lists.iter().filter(|l| !e.iter().any(|x| x.path == l.path));
                let units = e.len() + orphans.count();
                prop_assert!(frame_len(p) <= budget as u64 || units <= 1);
            }
            let back = join(parts);
            prop_assert_eq!(&back.entries, &d.entries);
            let mut want = d.lists.clone();
            let mut got = back.lists.clone();
            let key = |l: &ChunkList| format!("{l:?}");
            want.sort_by_key(key);
            got.sort_by_key(key);
            prop_assert_eq!(got, want);
            prop_assert_eq!(back.folder, d.folder);
            prop_assert_eq!((back.snapshot, back.content_reply, back.upto), (d.snapshot, d.content_reply, d.upto));
        }
    }
}
