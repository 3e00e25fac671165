//! The Differ hashing files on request: chunk lists (or the bytes of small files, cut but
//! not named) for the target, retried while a writer is still at work.

use std::collections::HashMap;

use actix::prelude::*;
use ferry_engine::{
    Content, EntryKind, EntryState, FileEntry, RelPath, Seq, SourceContent, StatKey,
};
use futures_util::future::join_all;

use crate::error::Result;
use crate::health::Role;
use crate::messages::{HashFiles, Hashed};
use crate::stats::Stats;

use super::Differ;

/// How often hashing a file that keeps changing under us is retried before it is skipped.
pub(super) const HASH_ATTEMPTS: usize = 3;

/// Files handed to one hashing job (jobs run in parallel, one per core).
const FILES_PER_JOB: usize = 32;

/// The most bytes of files' content one `HashFiles` keeps (by their scanned sizes; a file
/// that grew since is kept only up to the request's own limit per file).
const KEEP_BYTES: u64 = 8 << 20;

/// `read` (a hash of a source file), tried again while the file changes under it (a
/// writer still at work), up to [`HASH_ATTEMPTS`] times.
pub(super) fn settled<T>(
    mut read: impl FnMut() -> std::result::Result<T, ferry_engine::Error>,
) -> std::result::Result<T, ferry_engine::Error> {
    let mut last = read();
    for _ in 1..HASH_ATTEMPTS {
        match &last {
            Err(ferry_engine::Error::Changed { .. }) => last = read(),
            _ => break,
        }
    }
    last
}

type HashResult = (
    RelPath,
    std::result::Result<(SourceContent, StatKey), ferry_engine::Error>,
);

impl Handler<HashFiles> for Differ {
    type Result = ResponseActFuture<Self, Result<Hashed>>;

    fn handle(&mut self, msg: HashFiles, _: &mut Self::Context) -> Self::Result {
        self.stats.actors.handled(Role::Differ);
        // Each file with the sequence of the entry being hashed: a result for an entry
        // that a rescan has replaced meanwhile must not overwrite the newer one.
        let mut asked: HashMap<RelPath, Seq> = HashMap::new();
        // The bytes of at most KEEP_BYTES (by the scanned sizes) are kept per request.
        let mut budget = KEEP_BYTES;
        let files: Vec<(RelPath, u64)> = match &self.index {
            Some(index) => msg
                .paths
                .into_iter()
                .filter_map(|p| match index.get(&p) {
                    Some(e) if e.kind == EntryKind::File && e.is_present() => {
                        asked.insert(p.clone(), e.seq);
                        let keep = if e.size <= msg.keep && e.size <= budget {
                            budget -= e.size;
                            msg.keep
                        } else {
                            0
                        };
                        Some((p, keep))
                    }
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let jobs = files.chunks(FILES_PER_JOB).map(|group| {
            let group = group.to_vec();
            let source = self.source.clone();
            let pool = self.pool.clone();
            async move {
                pool.run("hash source files", move || {
                    group
                        .into_iter()
                        .map(|(p, keep)| {
                            // Not even an empty file is sent whole unless asked for so.
                            let read = if keep > 0 {
                                settled(|| source.read_for_sending(&p, keep))
                            } else {
                                settled(|| source.hash_file(&p))
                                    .map(|(c, stat)| (SourceContent::Listed(c), stat))
                            };
                            (p, read)
                        })
                        .collect::<Vec<HashResult>>()
                })
                .await
            }
        });
        let all = join_all(jobs.collect::<Vec<_>>());
        Box::pin(all.into_actor(self).map(move |results, act, _| {
            let mut out = Hashed::default();
            for batch in results {
                for (path, res) in batch? {
                    let current = act.index.as_ref().and_then(|i| i.get(&path));
                    match current {
                        // Replaced since it was asked for: the newer entry (already sent,
                        // with its content) stands.
                        Some(e) if Some(&e.seq) != asked.get(&path) => {
                            out.entries.push(e.clone());
                        }
                        _ => {
                            let (res, pieces) = match res {
                                Ok((SourceContent::Listed(c), stat)) => (Ok((Some(c), stat)), None),
                                Ok((SourceContent::Cut(pieces), stat)) => {
                                    (Ok((None, stat)), Some(pieces))
                                }
                                Err(e) => (Err(e), None),
                            };
                            let Some(entry) = act.record_hash(&path, res) else {
                                continue;
                            };
                            match pieces {
                                Some(pieces) => out.kept.push((entry, pieces)),
                                None => out.entries.push(entry),
                            }
                        }
                    }
                }
            }
            Ok(out)
        }))
    }
}

impl Differ {
    /// Stores a hashing result in the index and returns the entry to send. A file read to
    /// be sent whole comes with no content: its receiver names its chunks, and the index
    /// leaves it without a chunk list (it is hashed when one is asked for).
    fn record_hash(
        &mut self,
        path: &RelPath,
        res: std::result::Result<(Option<Content>, StatKey), ferry_engine::Error>,
    ) -> Option<FileEntry> {
        let mut entry = self.index.as_ref()?.get(path)?.clone();
        let stat = match res {
            Ok((content, stat)) => {
                Stats::add(&self.stats.bytes_hashed, stat.size);
                if stat.size != entry.size || stat.mtime_ns != entry.mtime.0 {
                    // The file changed since the scan: what we hashed is its newer state.
                    entry.size = stat.size;
                    entry.mtime = ferry_engine::MtimeNs(stat.mtime_ns);
                    entry.seq = self.next_seq();
                }
                entry.content = content;
                Some(stat)
            }
            // Gone since the scan (or its directory replaced by a file): the file is not
            // there to mirror, so it is removed, not kept as unreadable (which would protect
            // a stale copy at the target).
            Err(ferry_engine::Error::Io { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound
                    || error.kind() == std::io::ErrorKind::NotADirectory =>
            {
                tracing::debug!(folder = %self.folder, path = %path, "gone before it was hashed");
                if entry.state != EntryState::Deleted {
                    self.tombstones += 1;
                }
                entry.state = EntryState::Deleted;
                entry.content = None;
                entry.seq = self.next_seq();
                None
            }
            Err(e) => {
                tracing::warn!(folder = %self.folder, path = %path, "skipped: {e}");
                Stats::add(&self.stats.skipped, 1);
                entry.state = EntryState::Unreadable;
                entry.content = None;
                None
            }
        };
        if self.persister.is_some() {
            self.save(vec![(entry.clone(), stat)], false);
        }
        self.index.as_mut()?.insert(entry.clone(), stat);
        Some(entry)
    }
}
