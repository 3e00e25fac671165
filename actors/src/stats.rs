//! `Stats`: counters a pipeline updates as it works, read by progress bars, summaries and dashboards.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::events::{EventKind, Events};
use crate::health::{ActorBoard, Latency, LinkState};
use crate::messages::FolderId;

/// Live counters of one replication (shared by its actors through an `Arc`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Source entries scanned.
    pub entries_scanned: AtomicU64,
    /// Entries created in the target (files, dirs, symlinks).
    pub created: AtomicU64,
    /// Entries whose content (or kind) was replaced.
    pub updated: AtomicU64,
    /// Entries that only got a metadata update.
    pub metadata_only: AtomicU64,
    /// Entries removed from the target.
    pub removed: AtomicU64,
    /// Files renamed in the target instead of being sent again.
    pub renamed: AtomicU64,
    /// Entries skipped (unreadable, special, changed during transfer, failed).
    pub skipped: AtomicU64,
    /// File content bytes written to the target.
    pub bytes_written: AtomicU64,
    /// Chunk data bytes passed from the Sender to the Applier.
    pub bytes_sent: AtomicU64,
    /// Chunks passed from the Sender to the Applier.
    pub chunks_sent: AtomicU64,
    /// Encoded bytes of every message between Sender and Applier (both directions) other
    /// than chunk data: index entries, chunk lists, requests, acknowledgements.
    pub bytes_metadata: AtomicU64,
    /// Bytes the Applier copied from files the target already holds instead of fetching them.
    pub bytes_reused: AtomicU64,
    /// Chunks copied locally.
    pub chunks_reused: AtomicU64,
    /// Bytes of the target filled by all-zero chunks, which travel as a length and are left as holes.
    pub bytes_zero: AtomicU64,
    /// Bytes written to the network link to a remote target (TLS records included).
    pub wire_bytes_out: AtomicU64,
    /// Bytes read from the network link to a remote target.
    pub wire_bytes_in: AtomicU64,
    /// Times the link to a remote target was re-established.
    pub reconnects: AtomicU64,
    /// Files the current plan writes.
    pub files_planned: AtomicU64,
    /// Of those, files finished.
    pub files_done: AtomicU64,
    /// Bytes the current plan writes.
    pub bytes_planned: AtomicU64,
    /// inotify watches held (one per watched directory, the root included).
    pub watches: AtomicU64,
    /// The highest sequence the target acknowledged.
    pub applied_seq: AtomicU64,
    /// The highest sequence the Differ handed to the Sender.
    pub source_seq: AtomicU64,
    /// Restarts of this folder's pipeline.
    pub restarts: AtomicU64,
    /// Source bytes read to hash files (zero for files whose stat did not change).
    pub bytes_hashed: AtomicU64,
    /// Target bytes the Applier read to hash files whose chunk list it did not know.
    pub target_bytes_hashed: AtomicU64,
    /// Index entries the Sender passed to the target.
    pub entries_sent: AtomicU64,
    /// What happened, for subscribers.
    pub events: Events,
    /// Change-to-applied latency.
    pub latency: Latency,
    /// Each actor's lifecycle and mailbox depth.
    pub actors: ActorBoard,
    /// The link to a remote target.
    pub link: LinkState,
}

impl Stats {
    /// Records that `actor` of `folder` started: logged, on the actor board, and published.
    pub(crate) fn actor_started(&self, folder: &FolderId, actor: &'static str) {
        tracing::info!(actor, folder = %folder, "started");
        self.actors.started(actor);
        self.events
            .publish(folder, EventKind::ActorStarted { actor });
    }

    /// Records that `actor` of `folder` stopped: logged, on the actor board, and published.
    pub(crate) fn actor_stopped(&self, folder: &FolderId, actor: &'static str) {
        tracing::info!(actor, folder = %folder, "stopped");
        self.actors.stopped(actor);
        self.events
            .publish(folder, EventKind::ActorStopped { actor });
    }

    /// The Applier's share of these counters.
    pub fn apply_counts(&self) -> crate::messages::ApplyCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::messages::ApplyCounts {
            created: g(&self.created),
            updated: g(&self.updated),
            metadata_only: g(&self.metadata_only),
            removed: g(&self.removed),
            renamed: g(&self.renamed),
            bytes_written: g(&self.bytes_written),
            bytes_reused: g(&self.bytes_reused),
            chunks_reused: g(&self.chunks_reused),
            bytes_zero: g(&self.bytes_zero),
        }
    }

    /// Adds what an Applier elsewhere did between its totals `before` and `now`.
    pub fn add_apply_counts(
        &self,
        before: &crate::messages::ApplyCounts,
        now: &crate::messages::ApplyCounts,
    ) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        Stats::add(&self.created, d(before.created, now.created));
        Stats::add(&self.updated, d(before.updated, now.updated));
        Stats::add(
            &self.metadata_only,
            d(before.metadata_only, now.metadata_only),
        );
        Stats::add(&self.removed, d(before.removed, now.removed));
        Stats::add(&self.renamed, d(before.renamed, now.renamed));
        Stats::add(
            &self.bytes_written,
            d(before.bytes_written, now.bytes_written),
        );
        Stats::add(&self.bytes_reused, d(before.bytes_reused, now.bytes_reused));
        Stats::add(
            &self.chunks_reused,
            d(before.chunks_reused, now.chunks_reused),
        );
        Stats::add(&self.bytes_zero, d(before.bytes_zero, now.bytes_zero));
    }
}

/// A point-in-time copy of [`Stats`], for printing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Source entries scanned.
    pub entries_scanned: u64,
    /// Entries created.
    pub created: u64,
    /// Entries updated.
    pub updated: u64,
    /// Metadata-only updates.
    pub metadata_only: u64,
    /// Entries removed.
    pub removed: u64,
    /// Files renamed.
    pub renamed: u64,
    /// Entries skipped.
    pub skipped: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Chunk data bytes passed from Sender to Applier.
    pub bytes_sent: u64,
    /// Chunks passed from Sender to Applier.
    pub chunks_sent: u64,
    /// Encoded bytes of all other messages between Sender and Applier, both directions.
    pub bytes_metadata: u64,
    /// Bytes copied from files the target already held.
    pub bytes_reused: u64,
    /// Chunks copied locally.
    pub chunks_reused: u64,
    /// Bytes of all-zero chunks sent as a length only.
    pub bytes_zero: u64,
    /// Bytes written to the network link.
    pub wire_bytes_out: u64,
    /// Bytes read from the network link.
    pub wire_bytes_in: u64,
    /// Link re-establishments.
    pub reconnects: u64,
    /// Source bytes read to hash files.
    pub bytes_hashed: u64,
    /// Index entries passed to the target.
    pub entries_sent: u64,
}

impl Stats {
    /// Adds `n` to counter `c`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            entries_scanned: g(&self.entries_scanned),
            created: g(&self.created),
            updated: g(&self.updated),
            metadata_only: g(&self.metadata_only),
            removed: g(&self.removed),
            renamed: g(&self.renamed),
            skipped: g(&self.skipped),
            bytes_written: g(&self.bytes_written),
            bytes_sent: g(&self.bytes_sent),
            chunks_sent: g(&self.chunks_sent),
            bytes_metadata: g(&self.bytes_metadata),
            bytes_reused: g(&self.bytes_reused),
            chunks_reused: g(&self.chunks_reused),
            bytes_zero: g(&self.bytes_zero),
            wire_bytes_out: g(&self.wire_bytes_out),
            wire_bytes_in: g(&self.wire_bytes_in),
            reconnects: g(&self.reconnects),
            bytes_hashed: g(&self.bytes_hashed),
            entries_sent: g(&self.entries_sent),
        }
    }

    /// Planned and finished files and bytes, for a progress bar.
    pub fn progress(&self) -> (u64, u64, u64, u64) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            g(&self.files_done),
            g(&self.files_planned),
            g(&self.bytes_written),
            g(&self.bytes_planned),
        )
    }
}
