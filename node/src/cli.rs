//! The command line as parsed by clap: raw flags, validated later into the types the rest uses.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Ferry keeps target folders an exact, up-to-date mirror of source folders.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// More output: -v logs every change, -vv adds debugging detail.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on the console.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DST an exact mirror of SRC, once.
    Sync(SyncArgs),
    /// Mirror SRC into DST, then replicate every change until SIGINT or SIGTERM.
    Watch(WatchArgs),
}

/// Flags of `ferry watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The source directory.
    pub src: PathBuf,
    /// The target directory (created if its parent exists).
    pub dst: PathBuf,
    /// Compare file contents even when size and mtime agree (initial sync and rescans).
    #[arg(short, long)]
    pub checksum: bool,
    /// Do not fsync files and directories.
    #[arg(long)]
    pub no_fsync: bool,
    /// Quiet time that closes a burst of changes (e.g. 2ms, 20ms).
    #[arg(long, default_value = "2ms", value_parser = crate::duration::parse)]
    pub debounce: std::time::Duration,
    /// Full rescan as a safety net every so often (e.g. 1h, 10m; 0 turns it off).
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse)]
    pub rescan_interval: std::time::Duration,
    /// No inotify: scan the whole folder at this interval instead (NFS, FUSE, interval replication).
    #[arg(long, value_parser = crate::duration::parse)]
    pub poll: Option<std::time::Duration>,
    /// Chunker sizes MIN,AVG,MAX (advanced: both sides must agree; see ARCHITECTURE.md).
    #[arg(long, value_name = "MIN,AVG,MAX", default_value = "8K,32K,128K")]
    pub chunk_sizes: ferry_engine::ChunkParams,
}

/// Flags of `ferry sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The source directory.
    pub src: PathBuf,
    /// The target directory (created if its parent exists).
    pub dst: PathBuf,
    /// Compare file contents even when size and mtime agree.
    #[arg(short, long)]
    pub checksum: bool,
    /// Print what would change (created / updated / metadata / removed) and write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print a summary of what was done.
    #[arg(long)]
    pub stats: bool,
    /// Print the summary (and with --dry-run the changes) as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not fsync files and directories (faster; a crash may lose the latest writes).
    #[arg(long)]
    pub no_fsync: bool,
    /// Chunker sizes MIN,AVG,MAX (advanced: both sides must agree; see ARCHITECTURE.md).
    #[arg(long, value_name = "MIN,AVG,MAX", default_value = "8K,32K,128K")]
    pub chunk_sizes: ferry_engine::ChunkParams,
}
