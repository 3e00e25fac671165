//! The Applier's planning: diffing the source against the target, asking for the chunk
//! lists it lacks, and acknowledging what is reached.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use actix::prelude::*;
use ferry_engine::{
    diff_within, ChangeKind, DiffOptions, DiffOutcome, EntryKind, EntryState, MtimeNs, Plan,
    RelPath, Seq,
};

use crate::messages::{Applied, NeedContent};
use crate::stats::Stats;

use super::Applier;

/// Source files asked for in one `NeedContent`, at most...
const CONTENT_BATCH_FILES: usize = 1024;
/// ...or about this many bytes of them.
const CONTENT_BATCH_BYTES: u64 = 32 << 20;
/// ... or, when the chunks come along inline, this many bytes: the stash fills and drains
/// in smaller steps.
const INLINE_BATCH_BYTES: u64 = 4 << 20;

impl Applier {
    /// Diffs when everything needed is known; asks for content or starts applying.
    ///
    /// While source content is still being hashed, a plan leaving those files out runs if
    /// it only adds (`Plan::is_additive`): an initial sync writes files as their chunk lists
    /// arrive instead of after the whole tree is hashed. It acknowledges nothing; the plan
    /// made once all content is in does. Such a plan made while another is being applied
    /// joins it when it can (`Execution::can_join`), else waits for it to end.
    pub(super) fn try_plan(&mut self, ctx: &mut Context<Self>) {
        if !self.dirty || !self.have_snapshot || self.target_jobs > 0 {
            return;
        }
        let joining = self.exec.is_some();
        if joining {
            // Only a plan that may join the running one is made now (and never one that
            // waits for lists): the rest is made when the running plan moves on or ends.
            let partial = self.content_requests > 0;
            let takes = self.exec.as_ref().is_some_and(|x| x.takes_joins(partial));
            if !takes || !self.pending.is_empty() || self.opts.dry_run {
                return;
            }
        }
        if self.content_requests == 0 && !joining {
            // Paths a reply left out will not come: the next plan finds them still without
            // content and gives up on them.
            for p in std::mem::take(&mut self.in_flight) {
                self.changed_at(&p);
            }
        }
        let partial = self.content_requests > 0;
        if partial && (self.in_flight.is_empty() || self.opts.dry_run) {
            return;
        }
        if !self.pending.is_empty() && !self.rebuild_lists(ctx) {
            return;
        }
        let Some(target_index) = &self.target_index else {
            return;
        };
        let opts = DiffOptions {
            checksum: self.opts.checksum,
            mtime_step: self.target.mtime_step(),
        };
        if joining && !partial {
            // Every content request is answered: this is the one look the running plan
            // gets; what else comes waits for the plan made when it ends.
            if let Some(x) = self.exec.as_mut() {
                x.close_to_joins();
            }
        }
        // A plan joining a running one leaves that one's files out as well: they are not in
        // the target index until installed, so a removal of one would look like nothing to
        // do (they stay in `changed` for the plan made once they are in).
        let pending: Vec<&HashSet<RelPath>> = match &self.exec {
            Some(x) => vec![&self.in_flight, x.files()],
            None if partial => vec![&self.in_flight],
            None => Vec::new(),
        };
        // A partial plan leaves the files in flight out: it need not look at them at all
        // (they stay in `changed` for the plan made once they arrive).
        let arrived: Option<BTreeSet<RelPath>> = match &self.changed {
            Some(c) if partial => Some(
                c.iter()
                    .filter(|p| !self.in_flight.contains(*p))
                    .cloned()
                    .collect(),
            ),
            _ => None,
        };
        let scope = arrived.as_ref().or(self.changed.as_ref());
        match diff_within(&self.source, target_index, scope, &pending, opts) {
            // Asked for once the running plan is done (the next plan is made then).
            DiffOutcome::NeedContent(_) if joining => {}
            DiffOutcome::NeedContent(needs) => {
                self.resolve(needs, ctx);
                // What needs no content (directories first) is made while the content is
                // hashed, not after its first reply: an initial sync's first files then
                // find their directories made. Once: the plan made now is partial. Planned
                // on the runtime's next turn, once the requests have left: a remote link
                // writes them only when this handler has returned, and a diff of the whole
                // source (6 ms for 10,500 entries) would hold them back meanwhile.
                if !partial && self.target_jobs == 0 && !self.in_flight.is_empty() {
                    ctx.run_later(Duration::ZERO, |act, ctx| act.try_plan(ctx));
                }
            }
            // With every content request answered, the additive part of the last plan
            // still joins; the last plan itself (it removes, acknowledges) is made once the
            // running one is done: `dirty` stays set for it.
            DiffOutcome::Ready(plan) if partial || joining => {
                if joining
                    && !plan.actions.is_empty()
                    && self.exec.as_ref().is_some_and(|x| !x.can_join(&plan))
                {
                    // Made again once the running plan is done.
                    return;
                }
                if partial {
                    self.dirty = false;
                }
                if plan.actions.is_empty() || !plan.is_additive() {
                    // Nothing to do yet, or removals that must wait for the whole source.
                    return;
                }
                // Everything but the files in flight is planned: only they, and what
                // arrives from now on, are left to look at (each file in flight goes back
                // into `changed` when it leaves `in_flight`).
                self.changed
                    .get_or_insert_with(BTreeSet::new)
                    .retain(|p| pending.iter().any(|set| set.contains(p)));
                if joining {
                    self.join(plan, ctx);
                } else {
                    self.execute(plan, true, ctx);
                }
            }
            DiffOutcome::Ready(plan) => {
                self.asked.clear();
                self.dirty = false;
                // A dry run applies nothing: its next plan must look at everything again.
                if !self.opts.dry_run {
                    self.changed = Some(BTreeSet::new());
                }
                if self.opts.dry_run {
                    self.acknowledge(self.upto, Some(plan));
                } else {
                    self.execute(plan, false, ctx);
                }
            }
        }
    }

    fn resolve(&mut self, needs: ferry_engine::ContentNeeds, ctx: &mut Context<Self>) {
        // A path asked for once and still without content will not get any: leave it alone
        // rather than ask forever.
        let mut source = Vec::new();
        for p in needs.source {
            if self.asked.insert(p.clone()) {
                source.push(p);
            } else if let Some(e) = self.source.get_mut(&p) {
                e.state = EntryState::Unreadable;
                let reason = "the source did not provide its content".to_owned();
                self.skip(&p, reason);
            }
        }
        // In batches, so the first files can be planned while the rest are hashed.
        let inline = self.opts.remote && !self.opts.dry_run && self.target_holds_no_content();
        let batch_limit = if inline {
            INLINE_BATCH_BYTES
        } else {
            CONTENT_BATCH_BYTES
        };
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let count = source.len();
        for (i, p) in source.into_iter().enumerate() {
            batch_bytes += self.source.get(&p).map_or(0, |e| e.size);
            self.in_flight.insert(p.clone());
            batch.push(p);
            if batch.len() >= CONTENT_BATCH_FILES || batch_bytes >= batch_limit || i + 1 == count {
                self.content_requests += 1;
                self.stash.push_request(NeedContent {
                    folder: self.folder.clone(),
                    paths: std::mem::take(&mut batch),
                    inline,
                });
                batch_bytes = 0;
            }
        }
        self.pump_content(ctx);
        for group in needs.target.chunks(32) {
            let group = group.to_vec();
            let target = self.target.clone();
            let params = self.opts.params;
            let pool = self.hasher.clone();
            self.target_jobs += 1;
            let job = async move {
                pool.run("hash target files", move || {
                    group
                        .into_iter()
                        .map(|p| {
                            let r = target.hash_file(&p, &params);
                            (p, r)
                        })
                        .collect::<Vec<_>>()
                })
                .await
            };
            ctx.spawn(job.into_actor(self).map(|res, act, ctx| {
                act.target_jobs -= 1;
                match res {
                    Ok(results) => {
                        let index = act
                            .target_index
                            .as_mut()
                            .expect("target scanned before hashing");
                        for (p, r) in results {
                            if let Ok(c) = &r {
                                Stats::add(&act.stats.target_bytes_hashed, c.len());
                            }
                            index.set_content(&p, r.ok());
                            if act.target_saver.is_some() {
                                act.learned.insert(p);
                            }
                        }
                    }
                    Err(e) => return act.fail(e.to_string()),
                }
                act.try_plan(ctx);
            }));
        }
        if self.content_requests == 0 && self.target_jobs == 0 {
            self.try_plan(ctx);
        }
    }

    /// Sends the content requests the stash lets go now.
    pub(super) fn pump_content(&mut self, ctx: &mut Context<Self>) {
        while let Some(msg) = self.stash.next_request(self.exec.is_some()) {
            self.meter(&msg);
            let request = self.sender.need_content.send(msg);
            self.deliver_to_sender(request, ctx);
        }
    }

    /// True when the target holds no file content at all (nothing to reuse for any chunk):
    /// small files' chunks are then asked for inline, with their chunk lists.
    fn target_holds_no_content(&self) -> bool {
        self.target_index.as_ref().is_some_and(|t| {
            t.chunks().is_empty()
                && !t
                    .index()
                    .iter()
                    .any(|e| e.kind == EntryKind::File && e.is_present())
        })
    }

    /// Acknowledges `seq`: the sequence the applied plan was made from (deltas that arrived
    /// while it ran are newer and acknowledged by the next plan).
    pub(super) fn acknowledge(&mut self, seq: Seq, dry_run_plan: Option<Plan>) {
        // Nothing of this plan still touches the target: what it learned can be saved.
        self.save_target_index();
        self.reported.clear();
        let msg = Applied {
            folder: self.folder.clone(),
            seq,
            skipped: std::mem::take(&mut self.skipped),
            dry_run_plan,
            counts: self.stats.apply_counts(),
        };
        self.meter(&msg);
        self.sender.applied.do_send(msg);
    }

    /// Removes the temp files a cut transfer left, once a plan that could copy from them
    /// has been applied (before it is acknowledged, so a run that ends there leaves none),
    /// then `then`. Runs in this actor's context, so a retired Applier's removal never
    /// starts after its successor has scanned (and may be copying from) the same files.
    pub(super) fn remove_leftovers(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let doomed = match self.target_index.as_mut() {
            Some(index) => index.take_leftovers(),
            None => Vec::new(),
        };
        if doomed.is_empty() {
            return then(self, ctx);
        }
        // A removal moves its directory's mtime, which the plan already set to the
        // source's: it is set again after.
        let dirs: BTreeMap<RelPath, (u32, MtimeNs)> = doomed
            .iter()
            .filter_map(|p| p.parent())
            .filter_map(|d| {
                let e = self.source.get(&d)?;
                (e.kind == EntryKind::Dir && e.is_present()).then_some((d, (e.mode, e.mtime)))
            })
            .collect();
        let target = self.target.clone();
        let folder = self.folder.clone();
        let pool = self.io.clone();
        let job = async move {
            let r = pool
                .run("remove leftover temp files", move || {
                    for p in doomed {
                        match target.remove(&p, EntryKind::File) {
                            Ok(()) => tracing::debug!(folder = %folder, path = %p, "leftover temp file removed"),
                            Err(e) => tracing::warn!(folder = %folder, path = %p, "cannot remove leftover temp file: {e}"),
                        }
                    }
                    for (d, (mode, mtime)) in dirs {
                        if let Err(e) = target.set_meta(&d, EntryKind::Dir, mode, mtime) {
                            tracing::warn!(folder = %folder, path = %d, "cannot set the directory's metadata again after removing a leftover temp file: {e}");
                        }
                    }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!("{e}");
            }
        };
        ctx.spawn(job.into_actor(self).map(move |(), act, ctx| then(act, ctx)));
    }

    pub(super) fn count(&self, change: Option<ChangeKind>) {
        let s = &self.stats;
        match change {
            Some(ChangeKind::Created) => Stats::add(&s.created, 1),
            Some(ChangeKind::Updated) => Stats::add(&s.updated, 1),
            Some(ChangeKind::Metadata) => Stats::add(&s.metadata_only, 1),
            Some(ChangeKind::Removed) => Stats::add(&s.removed, 1),
            Some(ChangeKind::Renamed) => Stats::add(&s.renamed, 1),
            None => {}
        }
    }
}
