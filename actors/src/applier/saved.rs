//! The Applier's memory of the target between runs: chunk lists saved as they change, and
//! attached again to a scanned target whose files are as saved.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use ferry_engine::target::is_temp_name;
use ferry_engine::{Action, ChunkParams, EntryKind, Index, RelPath, TargetDir, TargetIndex};

use crate::persist::{TargetChange, TargetStore};
use crate::transfer::Slot;

use super::Applier;

impl Applier {
    /// Notes that the chunk list of `path` (and of any file below it) was learned or changed,
    /// to be saved with the next acknowledgement.
    pub(super) fn learn(&mut self, path: &RelPath) {
        if self.target_saver.is_none() {
            return;
        }
        self.learned.insert(path.clone());
        if let Some(index) = &self.target_index {
            let below = index.index().subtree(path).skip(1);
            self.learned.extend(below.map(|e| e.path.clone()));
        }
    }

    /// Queues what the target index now says of every learned path.
    pub(super) fn save_target_index(&mut self) {
        let (Some(saver), Some(index)) = (&self.target_saver, &self.target_index) else {
            return;
        };
        let changes = std::mem::take(&mut self.learned)
            .into_iter()
            .map(|p| {
                let change = match index.get(&p) {
                    Some(e) if e.kind == EntryKind::File && e.is_present() => match &e.content {
                        Some(c) => TargetChange::Known {
                            size: e.size,
                            mtime: e.mtime,
                            content: c.clone(),
                        },
                        None => TargetChange::Forgotten,
                    },
                    _ => TargetChange::Forgotten,
                };
                (p, change)
            })
            .collect();
        saver.save(changes, self.save_full);
        self.save_full = false;
    }

    /// Forgets the saved chunk lists of the paths a plan is about to touch, before it
    /// touches them: a save queued earlier, whose check of the file may run after the file
    /// is replaced, is then overridden.
    pub(super) fn forget_saved<'a>(
        &self,
        actions: impl Iterator<Item = &'a Action>,
        files: &VecDeque<Arc<Slot>>,
    ) {
        let (Some(saver), Some(index)) = (&self.target_saver, &self.target_index) else {
            return;
        };
        let mut paths: BTreeSet<RelPath> = BTreeSet::new();
        let touched = actions
            .flat_map(|a| match a {
                Action::Rename { from, entry, .. } => vec![from, &entry.path],
                _ => vec![a.path()],
            })
            .chain(files.iter().map(|s| &s.entry.path));
        for p in touched {
            paths.extend(
                index
                    .index()
                    .subtree(p)
                    .filter(|e| e.content.is_some())
                    .map(|e| e.path.clone()),
            );
        }
        let changes = paths
            .into_iter()
            .map(|p| (p, TargetChange::Forgotten))
            .collect();
        saver.save(changes, false);
    }
}

/// Attaches to `index` the chunk lists `store` saved for files whose stat is exactly what
/// the scan saw, whose length is the file's size and which were cut with `params` (a list
/// cut otherwise would make every file look changed); returns their paths. A store that
/// cannot be read costs only the reuse.
pub(super) fn attach_saved(
    index: &mut TargetIndex,
    store: &dyn TargetStore,
    params: &ChunkParams,
    folder: &str,
) -> Vec<RelPath> {
    let saved = match store.load() {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(folder = %folder, store = %store.describe(), "cannot load the target's saved chunk lists; reading files instead: {e}");
            return Vec::new();
        }
    };
    let total = saved.len();
    let mut reused = Vec::new();
    for (path, stat, content) in saved {
        let fits = index.get(&path).is_some_and(|e| {
            e.kind == EntryKind::File
                && e.is_present()
                && e.content.is_none()
                && e.size == content.len()
        }) && index.index().stat(&path) == Some(&stat)
            && ferry_engine::Content::from_chunks(params, content.chunks.clone()).id == content.id;
        if fits {
            index.set_content(&path, Some(content));
            reused.push(path);
        }
    }
    tracing::info!(folder = %folder, saved = total, reused = reused.len(), "target chunk lists reused from the store");
    reused
}

/// Takes the temp files a cut transfer left out of a scanned target `index` and chunks
/// them, so that what already arrived is copied instead of fetched again. A temp file that
/// cannot be read is left in the index, where the plan removes it as extraneous.
pub(super) fn take_leftovers(
    target: &TargetDir,
    index: &mut Index,
    params: &ChunkParams,
) -> Vec<(RelPath, ferry_engine::Content)> {
    let temps: Vec<RelPath> = index
        .iter()
        .filter(|e| e.kind == EntryKind::File && is_temp_name(e.path.name()))
        .map(|e| e.path.clone())
        .collect();
    let mut out = Vec::new();
    for p in temps {
        match target.hash_file(&p, params) {
            Ok(c) => {
                index.remove(&p);
                out.push((p, c));
            }
            Err(e) => tracing::debug!(path = %p, "leftover temp file not reused: {e}"),
        }
    }
    out
}
