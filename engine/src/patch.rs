//! Patches: the change from one chunk list to the next as ranges replaced, for a file the
//! receiver already holds at the previous version (a large file edited in place costs a few
//! chunk refs, not its whole list again).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, ChunkParams, ChunkRef, Content, ContentId};

/// Replace `remove` chunks of the base, starting at chunk index `at`, with `insert`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splice {
    /// Index in the base list.
    pub at: u32,
    /// Chunks of the base replaced.
    pub remove: u32,
    /// The chunks put in their place.
    pub insert: Vec<ChunkRef>,
}

/// A chunk list expressed against a base list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPatch {
    /// The content the splices apply to.
    pub base: ContentId,
    /// The splices, in increasing, non-overlapping base order.
    pub splices: Vec<Splice>,
}

/// Why a patch does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The receiver's list is not the patch's base.
    #[error("the patch is for another base version")]
    WrongBase,
    /// Splices out of order or out of bounds.
    #[error("the patch's splices are out of order or out of bounds")]
    Malformed,
}

/// The patch that turns `old` into `new`: common head and tail are kept, and inside, each
/// differing run is replaced up to the next chunk both lists share.
pub fn between(old: &Content, new: &Content) -> ContentPatch {
    let (a, b) = (&old.chunks, &new.chunks);
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_end, b_end) = (a.len() - tail, b.len() - tail);
    let mut positions: HashMap<ChunkId, Vec<usize>> = HashMap::new();
    for (i, c) in a.iter().enumerate().take(a_end).skip(head) {
        positions.entry(c.id).or_default().push(i);
    }
    let next_in_old = |id: &ChunkId, from: usize| -> Option<usize> {
        let v = positions.get(id)?;
        v.get(v.partition_point(|&p| p < from)).copied()
    };
    let mut splices = Vec::new();
    let (mut i, mut j) = (head, head);
    while i < a_end || j < b_end {
        if i < a_end && j < b_end && a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        // A differing run starts here; it ends where the lists share a chunk again.
        let (ii, jj) = (j..b_end)
            .find_map(|jj| next_in_old(&b[jj].id, i).map(|ii| (ii, jj)))
            .unwrap_or((a_end, b_end));
        splices.push(Splice {
            at: i as u32,
            remove: (ii - i) as u32,
            insert: b[j..jj].to_vec(),
        });
        i = ii;
        j = jj;
        if i < a_end && j < b_end && a[i] != b[j] {
            // Same id, different length: a corrupt list; let the rest be one splice.
            splices.push(Splice {
                at: i as u32,
                remove: (a_end - i) as u32,
                insert: b[j..b_end].to_vec(),
            });
            break;
        }
    }
    ContentPatch {
        base: old.id,
        splices,
    }
}

/// Applies `patch` to `base`. The caller checks the result against the announced id.
pub fn apply(
    params: &ChunkParams,
    base: &Content,
    patch: &ContentPatch,
) -> Result<Content, PatchError> {
    if base.id != patch.base {
        return Err(PatchError::WrongBase);
    }
    let mut out = Vec::with_capacity(base.chunks.len());
    let mut pos = 0usize;
    for s in &patch.splices {
        let at = s.at as usize;
        let end = at
            .checked_add(s.remove as usize)
            .ok_or(PatchError::Malformed)?;
        if at < pos || end > base.chunks.len() {
            return Err(PatchError::Malformed);
        }
        out.extend_from_slice(&base.chunks[pos..at]);
        out.extend_from_slice(&s.insert);
        pos = end;
    }
    out.extend_from_slice(&base.chunks[pos..]);
    Ok(Content::from_chunks(params, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(n: u8) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&[n]),
            len: 100 + u32::from(n),
        }
    }

    fn content(ids: &[u8]) -> Content {
        Content::from_chunks(&ChunkParams::default(), ids.iter().map(|&n| r(n)).collect())
    }

    #[test]
    fn an_edit_in_the_middle_is_one_small_splice() {
        let old = content(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let new = content(&[1, 2, 3, 40, 41, 6, 7, 8]);
        let p = between(&old, &new);
        assert_eq!(
            p.splices,
            vec![Splice {
                at: 3,
                remove: 2,
                insert: vec![r(40), r(41)]
            }]
        );
        assert_eq!(apply(&ChunkParams::default(), &old, &p), Ok(new.clone()));
        assert_eq!(
            apply(&ChunkParams::default(), &new, &p),
            Err(PatchError::WrongBase)
        );
    }

    proptest! {
        #[test]
        fn applying_the_patch_between_two_lists_gives_the_second(
            a in proptest::collection::vec(0u8..20, 0..60),
            b in proptest::collection::vec(0u8..20, 0..60),
        ) {
            let (old, new) = (content(&a), content(&b));
            let p = between(&old, &new);
            prop_assert_eq!(apply(&ChunkParams::default(), &old, &p), Ok(new));
            let inserted: usize = p.splices.iter().map(|s| s.insert.len()).sum();
            prop_assert!(inserted <= b.len());
        }
    }
}
