//! Entries the source places inside a symlink or a file: refused, as applying them would
//! write through a link or into something that is not a directory.

use ferry_engine::{EntryKind, FileEntry, Index, RelPath};

/// An entry of `entries` that `source` places inside a symlink or a file, or a symlink or
/// file of `entries` with entries still inside it: a source index never holds one, and a
/// target writing it would have to go through that link.
pub(super) fn nested_in_non_dir<'a>(
    source: &Index,
    entries: impl Iterator<Item = &'a FileEntry>,
) -> Option<String> {
    for e in entries.filter(|e| e.is_present()) {
        if e.kind != EntryKind::Dir {
            if let Some(inner) = source.subtree(&e.path).skip(1).find(|c| c.is_present()) {
                return Some(format!(
                    "{} lies inside {}, which is not a directory",
                    inner.path, e.path
                ));
            }
        }
        let mut at = e.path.parent();
        while let Some(p) = at {
            if let Some(a) = source.get(&p).filter(|a| a.is_present()) {
                if a.kind != EntryKind::Dir {
                    return Some(format!(
                        "{} lies inside {}, which is not a directory",
                        e.path, a.path
                    ));
                }
            }
            at = p.parent();
        }
    }
    None
}

/// [`nested_in_non_dir`] over the whole of `source`, in one pass: in component-wise order a
/// subtree follows its root at once, so an entry inside a file or symlink comes right after
/// it (tombstones aside) or after another entry inside it.
pub(super) fn nested_in_non_dir_anywhere(source: &Index) -> Option<String> {
    let mut non_dir: Option<&RelPath> = None;
    for e in source.iter().filter(|e| e.is_present()) {
        if let Some(outer) = non_dir.filter(|outer| e.path.is_within(outer)) {
            return Some(format!(
                "{} lies inside {}, which is not a directory",
                e.path, outer
            ));
        }
        non_dir = (e.kind != EntryKind::Dir).then_some(&e.path);
    }
    None
}

#[cfg(test)]
mod tests {
    use ferry_engine::{ChunkParams, EntryState};
    use proptest::prelude::*;

    use super::*;

    /// An index of `entries` (path, kind, present).
    fn index(entries: &[(String, EntryKind, bool)]) -> Index {
        let mut index = Index::new(ChunkParams::default());
        for (path, kind, present) in entries {
            let mut e = FileEntry::new(RelPath::new(path).unwrap(), *kind);
            if !present {
                e.state = EntryState::Deleted;
            }
            index.insert(e, None);
        }
        index
    }

    /// Paths over names that sort around '/' ('-' and '.' below it in byte order, '0' above).
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "a-b", "a.b", "a0", "b"]),
            1..4,
        )
        .prop_map(|parts| parts.join("/"))
    }

    fn kind() -> impl Strategy<Value = EntryKind> {
        prop::sample::select(vec![EntryKind::Dir, EntryKind::File, EntryKind::Symlink])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn one_pass_over_an_index_agrees_with_the_check_of_each_entry(
            entries in prop::collection::vec((path(), kind(), any::<bool>()), 0..24)
        ) {
            let index = index(&entries);
            prop_assert_eq!(
                nested_in_non_dir_anywhere(&index),
                nested_in_non_dir(&index, index.iter())
            );
        }
    }

    #[test]
    fn an_entry_inside_a_file_is_found_past_names_that_sort_between() {
        let entries = [
            ("a".to_owned(), EntryKind::File, true),
            ("a/x".to_owned(), EntryKind::File, false),
            ("a/y".to_owned(), EntryKind::Dir, true),
            ("a-b".to_owned(), EntryKind::Dir, true),
        ];
        assert_eq!(
            nested_in_non_dir_anywhere(&index(&entries)).as_deref(),
            Some("a/y lies inside a, which is not a directory")
        );
        let fine = [
            ("a".to_owned(), EntryKind::File, true),
            ("a-b".to_owned(), EntryKind::Dir, true),
            ("a-b/c".to_owned(), EntryKind::File, true),
        ];
        assert_eq!(nested_in_non_dir_anywhere(&index(&fine)), None);
    }
}
