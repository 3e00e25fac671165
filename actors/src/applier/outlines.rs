//! The Applier rebuilding chunk lists that travelled apart from their entries: patches applied
//! to the list it holds, outlines filled from local groups or groups asked for in parts.

use std::collections::{HashMap, HashSet};

use actix::prelude::*;
use ferry_engine::outline::{self, Group, GroupId, Outline, Unresolved};
use ferry_engine::{patch, ChunkRef, ContentId, EntryKind, FileEntry, RelPath, Seq};

use crate::health::Role;
use crate::messages::{GroupData, ListForm, NeedGroups};

use super::chunks::bad_content;
use super::Applier;

/// Chunks the outlines a Sender across the network has pending may claim together (about
/// 5 GiB of chunk lists: 4 TiB of large files at the default average chunk size, in one
/// update). Rebuilding copies each group's chunks once per mention, so a few bytes of
/// outline could otherwise claim any amount of memory; an update outlining more than that
/// is refused, for now, as the price of the bound (a configured memory budget would be
/// the better one).
const MAX_REMOTE_OUTLINED_CHUNKS: u64 = 1 << 27;
/// Groups asked for in one `NeedGroups`: the reply holds at most this many groups of at
/// most 256 chunks (~12 KB each encoded), ~6 MB, well within a frame whatever the file's
/// size (a 1 TiB file at the default sizes has ~1,000 such requests).
const GROUPS_PER_REQUEST: usize = 512;

/// A source file whose chunk list arrived as an outline and is being rebuilt.
pub(super) struct PendingList {
    /// The sequence of the entry the outline belongs to.
    seq: Seq,
    id: ContentId,
    outline: Outline,
    /// Groups the Sender supplied.
    supplied: HashMap<GroupId, Vec<ChunkRef>>,
    /// The number of chunks of each group the outline names.
    sizes: HashMap<GroupId, u32>,
    /// Groups asked for and not supplied yet.
    awaited: HashSet<GroupId>,
    /// Group requests sent and not answered yet: when the last is answered and a group
    /// asked for is still missing, the Sender did not supply it.
    parts: u32,
}

impl Applier {
    /// Fills in the chunk lists that travelled apart from their entries: a patch is applied
    /// to the list this Applier holds for the path; an outline is parked until the groups it
    /// names are found locally or fetched. A patch that does not apply leaves the entry
    /// without content, so it is asked for again.
    pub(super) fn unpack_lists(
        &mut self,
        entries: &mut [FileEntry],
        lists: Vec<crate::messages::ChunkList>,
    ) -> Result<(), String> {
        if lists.is_empty() {
            return Ok(());
        }
        // Chunks the outlines pending claim, kept up to date as this update adds its own.
        let mut outlined: u64 = self.pending.values().map(|p| p.outline.chunk_count()).sum();
        let mut by_path: HashMap<RelPath, usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_path.insert(e.path.clone(), i);
        }
        for list in lists {
            let Some(&i) = by_path.get(&list.path) else {
                return Err(format!("a chunk list for {} without its entry", list.path));
            };
            let e = &mut entries[i];
            if e.kind != EntryKind::File || !e.is_present() || e.content.is_some() {
                return Err(format!(
                    "a chunk list for {}, which cannot take one",
                    e.path
                ));
            }
            match list.form {
                ListForm::Patch(p) => {
                    let base = self.source.get(&e.path).and_then(|s| s.content.as_ref());
                    let rebuilt = base.and_then(|b| patch::apply(&self.opts.params, b, &p).ok());
                    match rebuilt.filter(|c| c.id == list.id) {
                        Some(c) => e.content = Some(c),
                        None => {
                            tracing::debug!(folder = %self.folder, path = %e.path, "patch does not apply; asking for the whole list");
                            self.asked.remove(&e.path);
                        }
                    }
                }
                ListForm::Outline(outline) => {
                    self.check_outline(e, &outline, &mut outlined)?;
                    // The same list outlined again (a file touched while its groups were on
                    // their way): the groups asked for and those supplied still count.
                    let (supplied, awaited, parts) = match self.pending.remove(&e.path) {
                        Some(p) if p.id == list.id => (p.supplied, p.awaited, p.parts),
                        _ => Default::default(),
                    };
                    let sizes = outline.groups.iter().map(|g| (g.id, g.chunks)).collect();
                    self.pending.insert(
                        e.path.clone(),
                        PendingList {
                            seq: e.seq,
                            id: list.id,
                            outline,
                            sizes,
                            supplied,
                            awaited,
                            parts,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Refuses an outline that could not describe `e`: groups of impossible sizes, more
    /// chunks than its size allows, or, from a Sender across the network, more chunks in
    /// outlines being rebuilt than [`MAX_REMOTE_OUTLINED_CHUNKS`]. Checked before anything
    /// is built from it: a group named again and again costs nothing to send, and its
    /// chunks are copied out once per mention.
    fn check_outline(
        &self,
        e: &FileEntry,
        outline: &Outline,
        outlined: &mut u64,
    ) -> Result<(), String> {
        if !outline.is_well_formed() {
            return Err(format!(
                "the outline of {} has a group of impossible size",
                e.path
            ));
        }
        let claimed = outline.chunk_count();
        let most = e.size / u64::from(self.opts.params.min.max(1)) + 2;
        if claimed > most {
            return Err(format!(
                "the outline of {} claims {claimed} chunks for {} bytes",
                e.path, e.size
            ));
        }
        // It replaces the one pending for the same path, if any.
        let replaced = self
            .pending
            .get(&e.path)
            .map_or(0, |p| p.outline.chunk_count());
        let others = outlined.saturating_sub(replaced);
        if self.opts.untrusted_sender && others + claimed > MAX_REMOTE_OUTLINED_CHUNKS {
            return Err(format!(
                "the outline of {} claims {claimed} chunks, with {others} more being rebuilt: over the limit of {MAX_REMOTE_OUTLINED_CHUNKS}",
                e.path
            ));
        }
        *outlined = others + claimed;
        Ok(())
    }

    /// Rebuilds outlined chunk lists from the groups the target's own version of each file
    /// holds plus those the Sender supplied; asks for the missing groups. True when none is
    /// left pending.
    pub(super) fn rebuild_lists(&mut self, ctx: &mut Context<Self>) -> bool {
        let paths: Vec<RelPath> = self.pending.keys().cloned().collect();
        for path in paths {
            let Some(p) = self.pending.get(&path) else {
                continue;
            };
            // A newer entry for the path replaced the one this outline belongs to.
            if self.source.get(&path).is_none_or(|e| e.seq != p.seq) {
                self.pending.remove(&path);
                continue;
            }
            // Groups still on their way: rebuilt once the last request is answered, not at
            // every reply (each rebuild walks the whole list).
            if p.parts > 0 {
                continue;
            }
            let own = self
                .target_index
                .as_ref()
                .and_then(|t| t.get(&path))
                .and_then(|e| e.content.as_ref());
            let mut known = outline::known_groups(own);
            for (id, chunks) in &p.supplied {
                known.insert(*id, chunks.as_slice());
            }
            match outline::resolve(&self.opts.params, p.id, &p.outline, &known) {
                Ok(content) => {
                    self.pending.remove(&path);
                    if let Some(e) = self.source.get_mut(&path) {
                        e.content = Some(content);
                        if let Some(reason) = bad_content(e, &self.opts.params) {
                            self.fail(format!("protocol error: {reason}"));
                            return false;
                        }
                    }
                }
                Err(Unresolved::Missing(groups)) => {
                    // Groups already asked for are awaited, not asked for again: the list
                    // is rebuilt on every planning pass, also while other lists' groups
                    // arrive. A group not yet asked for (the first pass, or one the target's
                    // own version held when the others were asked for) is asked for now.
                    let groups: Vec<GroupId> = groups
                        .into_iter()
                        .filter(|g| !p.awaited.contains(g))
                        .collect();
                    if groups.is_empty() {
                        continue;
                    }
                    let id = p.id;
                    if let Some(p) = self.pending.get_mut(&path) {
                        p.awaited.extend(groups.iter().copied());
                        p.parts += groups.len().div_ceil(GROUPS_PER_REQUEST) as u32;
                    }
                    for part in groups.chunks(GROUPS_PER_REQUEST) {
                        let msg = NeedGroups {
                            folder: self.folder.clone(),
                            path: path.clone(),
                            id,
                            groups: part.to_vec(),
                        };
                        self.meter(&msg);
                        self.content_requests += 1;
                        let request = self.sender.need_groups.send(msg);
                        self.deliver_to_sender(request, ctx);
                    }
                }
                Err(_) => {
                    self.pending.remove(&path);
                    self.fail(format!(
                        "protocol error: the chunk list of {path} cannot be rebuilt from its outline"
                    ));
                    return false;
                }
            }
        }
        self.pending.is_empty()
    }
}

impl Handler<GroupData> for Applier {
    type Result = ();

    fn handle(&mut self, msg: GroupData, ctx: &mut Self::Context) {
        self.stats.actors.handled(Role::Target);
        self.content_requests = self.content_requests.saturating_sub(1);
        match self.pending.get_mut(&msg.path) {
            Some(p) if p.id == msg.id => {
                if msg.stale {
                    // The source changed since: its newer content is asked for afresh.
                    self.pending.remove(&msg.path);
                    self.asked.remove(&msg.path);
                } else {
                    p.parts = p.parts.saturating_sub(1);
                    // Only groups the outline names, each once, and each holding what its
                    // id says: what is kept stays within what the outline claims. A group
                    // the outline names more than once (runs of zeros) may come once per
                    // mention: the copies of one already taken are passed over.
                    let mut wrong = 0;
                    for g in msg.groups {
                        if p.supplied.contains_key(&g.id) {
                            continue;
                        }
                        let fits = p
                            .sizes
                            .get(&g.id)
                            .is_some_and(|&chunks| Group { id: g.id, chunks }.holds(&g.chunks));
                        if fits {
                            p.awaited.remove(&g.id);
                            p.supplied.insert(g.id, g.chunks);
                        } else {
                            wrong += 1;
                        }
                    }
                    if wrong > 0 {
                        if self.opts.untrusted_sender {
                            self.fail(format!(
                                "protocol error: {wrong} group(s) of {} not in its outline or not matching their ids",
                                msg.path
                            ));
                            return;
                        }
                        tracing::debug!(folder = %self.folder, path = %msg.path, wrong, "groups not in the outline or not matching their ids ignored");
                    }
                    if p.parts == 0 && !p.awaited.is_empty() {
                        // Every request answered, and still groups missing: rather than
                        // wait for them forever, the whole list is asked for again.
                        tracing::debug!(folder = %self.folder, path = %msg.path, missing = p.awaited.len(), "groups asked for were not supplied; asking for the list again");
                        self.pending.remove(&msg.path);
                        self.asked.remove(&msg.path);
                    }
                }
            }
            _ => {
                tracing::debug!(folder = %self.folder, path = %msg.path, "groups for a list no longer pending ignored")
            }
        }
        self.dirty = true;
        self.changed_at(&msg.path);
        self.try_plan(ctx);
    }
}
