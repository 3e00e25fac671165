//! Ferry's engine: the pure, synchronous logic of replicating a folder.
//!
//! It knows nothing of actors, sockets or configuration. Everything expensive (walking,
//! chunking, hashing, file I/O) lives here and is called from actors off their async threads.
//!
//! ```
//! use ferry_engine::{diff, scan, DiffOptions, DiffOutcome, ScanOptions};
//! # let src = tempfile::tempdir().unwrap();
//! # let dst = tempfile::tempdir().unwrap();
//! # std::fs::write(src.path().join("a.txt"), b"hello").unwrap();
//! let source = scan(src.path(), ScanOptions::default()).unwrap().index;
//! let target = scan(dst.path(), ScanOptions::default()).unwrap().index;
//! // New files need their chunk lists before a plan can say how to write them.
//! assert!(matches!(diff(&source, &target, DiffOptions::default()), DiffOutcome::NeedContent(_)));
//! ```

pub mod aligned;
pub mod apply;
pub mod assemble;
mod beneath;
pub mod chunk;
pub mod chunkindex;
pub mod diff;
pub mod entry;
mod entry_form;
pub mod error;
pub mod ignore;
pub mod index;
pub mod outline;
pub mod patch;
pub mod plan;
pub mod prints;
pub mod reconcile;
pub mod rehash;
pub mod relpath;
pub mod scan;
pub mod source;
pub mod space;
pub mod split;
pub mod store;
pub mod target;
pub mod targetindex;

pub use apply::{apply_action, apply_plan, write_file, Effect};
pub use chunk::{chunk_reader, chunk_stream, ChunkId, ChunkParams, ChunkRef, Content, ContentId};
pub use chunkindex::{ChunkIndex, ChunkLoc};
pub use diff::{diff, diff_within, ContentNeeds, DiffOptions, DiffOutcome};
pub use entry::{EntryKind, EntryState, FileEntry, MtimeNs, Seq, VersionVector};
pub use error::{Error, Result};
pub use ignore::{IgnoreError, IgnoreRules, IGNORE_FILE};
pub use index::{Index, StatKey};
pub use plan::{Action, ChangeKind, Plan, Seen};
pub use reconcile::{reconcile, Change};
pub use relpath::RelPath;
pub use scan::{scan, scan_subtree, ScanOptions, ScanOutcome, SkipKind, Skipped};
pub use source::{PrintedChunk, SourceContent, SourceDir, SourceFile};
pub use space::FreeSpace;
pub use store::{ResumeHead, SavedResume, SavedSource, SourceHead, StateDb, StoreError};
pub use target::{ParentDirs, TargetDir, TempFile};
pub use targetindex::TargetIndex;
