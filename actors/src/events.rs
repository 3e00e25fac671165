//! Events a replication publishes as it works (changes applied, actors started and stopped,
//! restarts, state changes), for dashboards, logs and embedding applications.

use std::fmt;
use std::time::{Duration, SystemTime};

use ferry_engine::{ChangeKind, RelPath};
use tokio::sync::broadcast;

use crate::messages::FolderId;

/// How many events a slow subscriber may fall behind before it skips ahead.
const CAPACITY: usize = 1024;

/// One thing that happened in a replication.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When it happened.
    pub at: SystemTime,
    /// The folder.
    pub folder: FolderId,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// An entry of the target was created, replaced, renamed, removed or given new metadata.
    Change {
        /// Which change.
        change: ChangeKind,
        /// The entry's path (its new path for a rename).
        path: RelPath,
        /// For a rename, the path it had before.
        from: Option<RelPath>,
    },
    /// An actor started.
    ActorStarted {
        /// The actor's role.
        actor: &'static str,
    },
    /// An actor stopped.
    ActorStopped {
        /// The actor's role.
        actor: &'static str,
    },
    /// The pipeline failed and is restarted after `delay`.
    Restarting {
        /// The actor that failed.
        actor: String,
        /// Restarts within the policy's window, this one included.
        attempt: u32,
        /// The backoff before the restart.
        delay: Duration,
        /// Why it failed.
        reason: String,
    },
    /// The replication's state changed (`starting`, `syncing`, `live`, `failed`, `stopped`).
    State {
        /// The new state, as [`crate::FolderState::word`] names it.
        state: String,
        /// Why, for a failed state.
        reason: Option<String>,
    },
    /// An error worth showing, not (yet) a failure of the replication.
    Error {
        /// The message.
        message: String,
    },
}

impl EventKind {
    /// A short word naming the kind: `created`, `replaced`, `renamed`, `removed`, `metadata`,
    /// `actor-started`, `actor-stopped`, `restart`, `state`, `error`.
    pub fn word(&self) -> &'static str {
        match self {
            EventKind::Change { change, .. } => match change {
                ChangeKind::Created => "created",
                ChangeKind::Updated => "replaced",
                ChangeKind::Metadata => "metadata",
                ChangeKind::Removed => "removed",
                ChangeKind::Renamed => "renamed",
            },
            EventKind::ActorStarted { .. } => "actor-started",
            EventKind::ActorStopped { .. } => "actor-stopped",
            EventKind::Restarting { .. } => "restart",
            EventKind::State { .. } => "state",
            EventKind::Error { .. } => "error",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Change {
                path,
                from: Some(from),
                ..
            } => write!(f, "renamed {from} → {path}"),
            EventKind::Change { path, .. } => write!(f, "{} {path}", self.word()),
            EventKind::ActorStarted { actor } => write!(f, "{actor} started"),
            EventKind::ActorStopped { actor } => write!(f, "{actor} stopped"),
            EventKind::Restarting {
                actor,
                attempt,
                delay,
                reason,
            } => write!(
                f,
                "{actor} failed ({reason}); restart {attempt} in {delay:?}"
            ),
            EventKind::State {
                state,
                reason: Some(why),
            } => write!(f, "now {state}: {why}"),
            EventKind::State { state, .. } => write!(f, "now {state}"),
            EventKind::Error { message } => f.write_str(message),
        }
    }
}

/// A replication's event channel: every subscriber sees every event published after it
/// subscribed; one that falls more than 1,024 events behind skips ahead.
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

impl Events {
    /// Publishes `kind` for `folder`, now. Cheap when nobody listens.
    pub fn publish(&self, folder: &FolderId, kind: EventKind) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(Event {
            at: SystemTime::now(),
            folder: folder.clone(),
            kind,
        });
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_later_events_in_order() {
        let events = Events::default();
        let folder = FolderId::new("f").unwrap();
        events.publish(&folder, EventKind::ActorStarted { actor: "differ" });
        let mut rx = events.subscribe();
        events.publish(&folder, EventKind::ActorStarted { actor: "sender" });
        events.publish(
            &folder,
            EventKind::Change {
                change: ChangeKind::Updated,
                path: RelPath::new("a/b").unwrap(),
                from: None,
            },
        );
        let first = rx.try_recv().unwrap();
        assert_eq!(first.kind, EventKind::ActorStarted { actor: "sender" });
        let second = rx.try_recv().unwrap();
        assert_eq!(second.kind.word(), "replaced");
        assert_eq!(second.kind.to_string(), "replaced a/b");
        assert!(rx.try_recv().is_err());
    }
}
