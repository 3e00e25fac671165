//! Ferry's actors: Differ, Sender and Applier exchanging typed messages, and the pipelines
//! that wire them. Nothing here knows about TCP, TLS or configuration files: a target is
//! reached through `Recipient`s, local or remote.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ferry_actors::{run_sync, FolderId, Stats, SyncJob};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let job = SyncJob {
//!     folder: FolderId::new("photos")?,
//!     source: "/data/photos".into(),
//!     target: "/backup/photos".into(),
//!     checksum: false,
//!     dry_run: false,
//!     durable: true,
//!     params: Default::default(),
//!     ignore: Default::default(),
//!     remote: false,
//! };
//! let report = actix::System::new().block_on(run_sync(job, Arc::new(Stats::default())))?;
//! println!("{} files created", report.stats.created);
//! # Ok(())
//! # }
//! ```

pub mod applier;
mod changing;
pub mod differ;
pub mod error;
pub mod events;
mod firstsync;
pub mod health;
pub mod log_hold;
pub mod messages;
pub mod oneshot;
pub mod persist;
pub mod pipeline;
pub mod pool;
mod release;
pub mod replication;
pub mod sender;
mod stash;
pub mod stats;
pub mod supervisor;
mod transfer;
pub mod watcher;
pub mod wire;

pub use error::{Error, Result};
pub use events::{Event, EventKind, Events};
pub use messages::FolderId;
pub use oneshot::{run_sync, run_sync_kept, run_sync_to, run_sync_with, Kept, SyncJob, SyncReport};
pub use pipeline::{FolderJob, LinkTaps, Pipeline, SenderSide, TargetConnector, TargetSpec};
pub use replication::{Replication, ReplicationBuilder, ReplicationStatus};
pub use stats::{Stats, StatsSnapshot};
pub use supervisor::{FolderState, FolderSupervisor, RestartPolicy, Shutdown};
pub use watcher::WatchOptions;
