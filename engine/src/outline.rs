//! Outlines: a file's chunk list cut into content-defined groups (a two-level hash tree), so
//! two sides can find the differing ranges of a long list without either sending all of it.
//!
//! A group ends after a chunk whose id satisfies a fixed bit pattern (one chunk in
//! [`GROUP_AVG`]), or at [`GROUP_MAX`] chunks. As with the chunker itself, an insertion or
//! deletion changes only the groups around it; the others keep their ids, so the receiver
//! recognises them in a version it already holds and asks only for the rest.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkParams, ChunkRef, Content, ContentId};

/// Chunks per group on average.
pub const GROUP_AVG: u32 = 64;
/// Chunks per group at most.
pub const GROUP_MAX: usize = 4 * GROUP_AVG as usize;
/// Lists with fewer chunks than this travel whole: an outline would save little.
pub const OUTLINE_MIN_CHUNKS: usize = 2 * GROUP_AVG as usize;

/// A group's identity: the first 16 bytes of blake3 over its chunk refs. Short ids are safe
/// because a list rebuilt from groups is checked against the file's [`ContentId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupId(#[serde(with = "serde_bytes")] [u8; 16]);

/// One group of an outline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's id.
    pub id: GroupId,
    /// How many chunks it holds.
    pub chunks: u32,
}

impl Group {
    /// True when `chunks` are this group's: as many as it holds, with its id.
    pub fn holds(&self, chunks: &[ChunkRef]) -> bool {
        chunks.len() == self.chunks as usize && group_id(chunks) == self.id
    }
}

/// A chunk list as its groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outline {
    /// The groups in file order.
    pub groups: Vec<Group>,
}

impl Outline {
    /// The number of chunks the groups claim together.
    pub fn chunk_count(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.chunks)).sum()
    }

    /// True when every group holds between 1 and [`GROUP_MAX`] chunks, as [`outline`] cuts
    /// them; an outline received that is not is malformed.
    pub fn is_well_formed(&self) -> bool {
        self.groups
            .iter()
            .all(|g| (1..=GROUP_MAX).contains(&(g.chunks as usize)))
    }
}

fn group_id(chunks: &[ChunkRef]) -> GroupId {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(c.id.as_bytes());
        h.update(&c.len.to_le_bytes());
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    GroupId(id)
}

fn ends_group(c: &ChunkRef) -> bool {
    let b = c.id.as_bytes();
    u32::from_le_bytes([b[28], b[29], b[30], b[31]]).is_multiple_of(GROUP_AVG)
}

/// The groups of `chunks`: each range of chunk indexes with its id.
pub fn groups(chunks: &[ChunkRef]) -> Vec<(Range<usize>, GroupId)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in chunks.iter().enumerate() {
        if ends_group(c) || i + 1 - start == GROUP_MAX || i + 1 == chunks.len() {
            out.push((start..i + 1, group_id(&chunks[start..=i])));
            start = i + 1;
        }
    }
    out
}

/// The outline of `content`.
pub fn outline(content: &Content) -> Outline {
    Outline {
        groups: groups(&content.chunks)
            .into_iter()
            .map(|(r, id)| Group {
                id,
                chunks: r.len() as u32,
            })
            .collect(),
    }
}

/// The chunk lists of every group of `contents`, by id.
pub fn known_groups<'a>(
    contents: impl IntoIterator<Item = &'a Content>,
) -> HashMap<GroupId, &'a [ChunkRef]> {
    let mut out = HashMap::new();
    for c in contents {
        for (r, id) in groups(&c.chunks) {
            out.insert(id, &c.chunks[r]);
        }
    }
    out
}

/// Why an outline could not be turned back into a chunk list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// These groups are not known locally: ask the sender for them.
    Missing(Vec<GroupId>),
    /// The groups were all known but the list they make is not the announced content
    /// (a group list of the wrong length, or a sender that lies).
    Mismatch,
}

/// Rebuilds the content `id` from its outline, taking each group from `known`.
pub fn resolve(
    params: &ChunkParams,
    id: ContentId,
    outline: &Outline,
    known: &HashMap<GroupId, &[ChunkRef]>,
) -> Result<Content, Unresolved> {
    // Each missing group once, though the outline may name it again and again.
    let mut seen = std::collections::HashSet::new();
    let missing: Vec<GroupId> = outline
        .groups
        .iter()
        .filter(|g| !known.contains_key(&g.id) && seen.insert(g.id))
        .map(|g| g.id)
        .collect();
    if !missing.is_empty() {
        return Err(Unresolved::Missing(missing));
    }
    let mut chunks = Vec::new();
    for g in &outline.groups {
        let list = known[&g.id];
        if list.len() != g.chunks as usize {
            return Err(Unresolved::Mismatch);
        }
        chunks.extend_from_slice(list);
    }
    let content = Content::from_chunks(params, chunks);
    if content.id == id {
        Ok(content)
    } else {
        Err(Unresolved::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkId;

    fn refs(n: usize, seed: u64) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                id: ChunkId::of(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat()),
                len: 1000 + i as u32,
            })
            .collect()
    }

    #[test]
    fn groups_check_their_chunks_and_outlines_their_shape() {
        let p = ChunkParams::default();
        let content = Content::from_chunks(&p, refs(1000, 3));
        let o = outline(&content);
        assert!(o.is_well_formed());
        assert_eq!(o.chunk_count(), 1000);
        let (first, _) = &groups(&content.chunks)[0];
        let g = o.groups[0];
        assert!(g.holds(&content.chunks[first.clone()]));
        // One chunk too few, or other chunks of the same count, are not the group.
        assert!(!g.holds(&content.chunks[first.start..first.end - 1]));
        let other = refs(first.len(), 4);
        assert!(!g.holds(&other));
        let mut empty = o.clone();
        empty.groups[0].chunks = 0;
        assert!(!empty.is_well_formed());
        let mut huge = o;
        huge.groups[0].chunks = GROUP_MAX as u32 + 1;
        assert!(!huge.is_well_formed());
    }

    #[test]
    fn an_insertion_changes_only_the_groups_around_it() {
        let p = ChunkParams::default();
        let old = Content::from_chunks(&p, refs(5000, 1));
        let mut chunks = old.chunks.clone();
        chunks.insert(2500, refs(1, 99)[0]);
        let new = Content::from_chunks(&p, chunks);
        let o = outline(&new);
        let avg = new.chunks.len() / o.groups.len();
        assert!(
            (GROUP_AVG as usize / 2..GROUP_AVG as usize * 2).contains(&avg),
            "{avg}"
        );
        let known = known_groups([&old]);
        match resolve(&p, new.id, &o, &known) {
            Err(Unresolved::Missing(m)) => assert!(m.len() <= 2, "{} groups missing", m.len()),
            other => panic!("expected missing groups, got {other:?}"),
        }
        // Once the missing groups are known, the list is rebuilt exactly.
        let all = known_groups([&old, &new]);
        assert_eq!(resolve(&p, new.id, &o, &all), Ok(new.clone()));
        // A wrong announced id is caught.
        assert_eq!(resolve(&p, old.id, &o, &all), Err(Unresolved::Mismatch));
    }

    #[test]
    fn groups_cover_the_list_and_respect_the_maximum() {
        for n in [0, 1, 2, 127, 128, 1000] {
            let chunks = refs(n, 7);
            let g = groups(&chunks);
            assert_eq!(g.iter().map(|(r, _)| r.len()).sum::<usize>(), n);
            assert!(g.iter().all(|(r, _)| r.len() <= GROUP_MAX));
        }
    }
}
