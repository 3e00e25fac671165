//! The node's status as plain data: what the dashboard shows, `/api/status` serves and
//! `/metrics` exposes, and the [`StatusSource`] seam through which the node provides it.
//!
//! The field names are the JSON API; renaming one is a breaking change for every client.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Everything the dashboard knows about one node at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's configured name.
    pub node: String,
    /// The node's identity (fingerprint of its certificate), when it has one.
    pub node_id: Option<String>,
    /// The `ferry` version running.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Every folder the node replicates, in configuration order.
    pub folders: Vec<FolderStatus>,
    /// Recent throughput and latency samples, oldest first.
    pub history: Vec<Sample>,
    /// Recent events, newest last.
    pub events: Vec<EventRecord>,
}

/// One replicated folder and the targets it sends to (or receives from).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FolderStatus {
    /// The folder's id.
    pub id: String,
    /// The folder's root on this node.
    pub path: String,
    /// `"send"` or `"receive"`.
    pub role: String,
    /// The targets replicated from (or into) this folder.
    pub targets: Vec<TargetStatus>,
}

/// One replication target of a folder: a local directory, a peer, or an incoming peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// The peer's name or the local directory.
    pub name: String,
    /// `"local"`, `"peer"` or `"incoming"`.
    pub kind: String,
    /// Where replication to this target stands.
    pub state: SyncState,
    /// The actors serving this target, under its supervisor.
    pub actors: Vec<ActorStatus>,
    /// What replication to this target has done so far.
    pub counters: Counters,
    /// Time from a change on the source to its application on the target.
    pub latency: Histogram,
    /// How often the target's supervisor restarted its pipeline.
    pub restarts: u64,
    /// Directories watched for changes.
    pub watches: u64,
    /// The last change sequence number applied on the target.
    pub applied_seq: u64,
    /// The last change sequence number seen on the source.
    pub source_seq: u64,
}

/// Where replication to one target stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SyncState {
    /// The initial scan has not finished yet.
    Starting,
    /// The target mirrors the source.
    InSync,
    /// Changes are on their way.
    Syncing {
        /// Files still to be applied.
        files_remaining: u64,
        /// Bytes still to be transferred.
        bytes_remaining: u64,
    },
    /// The target cannot be reached; replication resumes when it can.
    Offline {
        /// Why, for people.
        reason: String,
    },
    /// Replication gave up; it needs attention.
    Failed {
        /// Why, for people.
        reason: String,
    },
    /// Replication was stopped on purpose.
    Stopped,
}

impl SyncState {
    /// Every state's name, in the order `/metrics` lists them.
    pub const NAMES: [&'static str; 6] = [
        "starting", "in-sync", "syncing", "offline", "failed", "stopped",
    ];

    /// The state's name as the JSON `state` tag spells it (`"in-sync"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            SyncState::Starting => "starting",
            SyncState::InSync => "in-sync",
            SyncState::Syncing { .. } => "syncing",
            SyncState::Offline { .. } => "offline",
            SyncState::Failed { .. } => "failed",
            SyncState::Stopped => "stopped",
        }
    }
}

/// One actor in a target's supervision tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorStatus {
    /// The actor's role (`"Scanner"`, `"Applier"`, …).
    pub name: String,
    /// `"running"`, `"restarting"`, `"stopped"` or `"failed"`.
    pub state: String,
    /// Seconds since this incarnation of the actor started.
    pub uptime_s: u64,
    /// Messages waiting in its mailbox.
    pub mailbox: u64,
    /// How often it was restarted.
    pub restarts: u64,
}

/// Cumulative counters of one target, since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Entries created on the target.
    pub files_created: u64,
    /// Files whose content was rewritten.
    pub files_updated: u64,
    /// Entries removed from the target.
    pub files_removed: u64,
    /// Files moved within the target instead of copied again.
    pub files_renamed: u64,
    /// Entries that only got a metadata update.
    pub metadata_only: u64,
    /// Bytes written into target files.
    pub bytes_written: u64,
    /// File content passed from the source side to the target side.
    pub bytes_sent: u64,
    /// Encoded bytes of every other message between the sides.
    pub bytes_metadata: u64,
    /// Bytes taken from data the target already held.
    pub bytes_reused: u64,
    /// Chunks passed from the source side to the target side.
    pub chunks_sent: u64,
    /// Chunks taken from data the target already held.
    pub chunks_reused: u64,
    /// Bytes sent on the network connection (below TLS).
    pub wire_bytes_out: u64,
    /// Bytes received on the network connection (below TLS).
    pub wire_bytes_in: u64,
    /// How often the connection to a peer was re-established.
    pub reconnects: u64,
    /// Entries skipped (unreadable, special, non-UTF-8).
    pub skipped: u64,
    /// Bytes read and hashed on the source side.
    pub bytes_hashed: u64,
    /// Index entries sent to the target (a resumed target is sent only what it lacks).
    #[serde(default)]
    pub entries_sent: u64,
}

/// A latency histogram with fixed buckets, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending.
    pub bounds_ms: Vec<f64>,
    /// Observations per bucket (not cumulative); one more than `bounds_ms`, the last for
    /// everything above the largest bound.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum_ms: f64,
    /// Number of observations.
    pub count: u64,
}

/// Node-wide throughput and latency over one sampling interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the interval ended, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Bytes written per second, over all targets.
    pub bytes_per_s: f64,
    /// Entries changed per second, over all targets.
    pub files_per_s: f64,
    /// Mean change-to-applied latency of the interval; `None` when nothing was applied.
    pub latency_ms: Option<f64>,
}

/// Something that happened on a target, for the live event list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The folder's id.
    pub folder: String,
    /// The target's name.
    pub target: String,
    /// One of the [`kind`] constants.
    pub kind: String,
    /// The path relative to the folder root, when the event concerns one.
    pub path: Option<String>,
    /// A human-readable detail.
    pub detail: String,
}

/// The values of [`EventRecord::kind`].
pub mod kind {
    /// An entry was created on the target.
    pub const CREATED: &str = "created";
    /// A file's content was replaced.
    pub const REPLACED: &str = "replaced";
    /// An entry was removed.
    pub const REMOVED: &str = "removed";
    /// A file was moved instead of copied.
    pub const RENAMED: &str = "renamed";
    /// Only metadata changed.
    pub const METADATA: &str = "metadata";
    /// An actor started.
    pub const ACTOR_STARTED: &str = "actor-started";
    /// An actor stopped.
    pub const ACTOR_STOPPED: &str = "actor-stopped";
    /// A supervisor restarted a pipeline.
    pub const RESTART: &str = "restart";
    /// A target's [`SyncState`](super::SyncState) changed.
    pub const STATE: &str = "state";
    /// Something failed.
    pub const ERROR: &str = "error";
}

/// Where the dashboard gets its data: the node implements it over its supervisors and stats.
///
/// `status` is called for every `/api/status` and `/metrics` request, from the dashboard's
/// worker thread, so it should be a cheap snapshot, not a walk of the disk.
pub trait StatusSource: Send + Sync + 'static {
    /// A snapshot of the node's status.
    fn status(&self) -> NodeStatus;
    /// A new receiver of events from now on; each `/api/events` client holds one.
    fn subscribe(&self) -> broadcast::Receiver<EventRecord>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_state_json_is_tagged_and_kebab_case() {
        let s = SyncState::Syncing {
            files_remaining: 3,
            bytes_remaining: 40,
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "syncing", "files_remaining": 3, "bytes_remaining": 40})
        );
        let in_sync = serde_json::to_value(SyncState::InSync).unwrap();
        assert_eq!(in_sync, serde_json::json!({"state": "in-sync"}));
    }

    #[test]
    fn state_names_match_the_json_tags() {
        let all = [
            SyncState::Starting,
            SyncState::InSync,
            SyncState::Syncing {
                files_remaining: 0,
                bytes_remaining: 0,
            },
            SyncState::Offline { reason: "x".into() },
            SyncState::Failed { reason: "x".into() },
            SyncState::Stopped,
        ];
        for (state, name) in all.iter().zip(SyncState::NAMES) {
            assert_eq!(state.name(), name);
            assert_eq!(serde_json::to_value(state).unwrap()["state"], name);
        }
    }
}
