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
    /// Where this node keeps its key and certificate (default: $FERRY_HOME, else
    /// $XDG_DATA_HOME/ferry, else ~/.local/share/ferry). For `run` and `check` it takes the
    /// place of `home` in the config's `[node]` (and so of the default state_dir, DIR/state).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Log format, on the console and in --log-file.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Also append every log line to FILE (every change applied, every actor start, stop
    /// and restart), opened in append mode: safe to rotate with copytruncate, or by renaming
    /// the file and sending the node SIGHUP, which reopens it.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DST an exact mirror of SRC, once. DST is a directory or ferry://NODE_ID@HOST:PORT/NAME.
    Sync(SyncArgs),
    /// Mirror SRC into DST, then replicate every change until SIGINT or SIGTERM.
    Watch(WatchArgs),
    /// Print this node's id (creating its key and certificate on first use).
    Id,
    /// Receive folders from the listed peers until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Write a commented starter config file for this node.
    Init(InitArgs),
    /// Validate a config file and summarise it.
    Check(CheckArgs),
    /// Run a node from its config file until SIGINT or SIGTERM; SIGHUP reloads the file.
    Run(RunArgs),
}

/// Flags of `ferry run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file (see `ferry init`).
    #[arg(long, value_name = "FILE", default_value = "ferry.toml")]
    pub config: PathBuf,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `ferry init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The config file to write.
    #[arg(long, value_name = "FILE", default_value = "ferry.toml")]
    pub config: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `ferry check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file to validate.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Flags of `ferry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (e.g. 0.0.0.0:7700, 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// A folder to receive into, as NAME=PATH (repeatable).
    #[arg(long = "folder", value_name = "NAME=PATH", required = true)]
    pub folders: Vec<String>,
    /// A node allowed to connect, as NODE_ID (every folder) or NODE_ID=NAME,NAME (only
    /// those folders). Repeatable.
    #[arg(long = "peer", value_name = "NODE_ID[=NAMES]", required = true)]
    pub peers: Vec<String>,
    /// Do not fsync files and directories.
    #[arg(long)]
    pub no_fsync: bool,
}

/// Flags of `ferry watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The source directory.
    pub src: PathBuf,
    /// The target: a directory (created if its parent exists) or ferry://NODE_ID@HOST:PORT/NAME.
    pub dst: PathBuf,
    /// Compare file contents even when size and mtime agree (initial sync and rescans).
    #[arg(short, long)]
    pub checksum: bool,
    /// Do not fsync files and directories.
    #[arg(long)]
    pub no_fsync: bool,
    /// Quiet time that closes a burst of changes (e.g. 2ms, 20ms; at most 1h).
    #[arg(long, default_value = "2ms", value_parser = ferry_node::duration::parse_debounce)]
    pub debounce: std::time::Duration,
    /// Full rescan as a safety net every so often (e.g. 1h, 10m; 0 turns it off).
    #[arg(long, default_value = "1h", value_parser = ferry_node::duration::parse)]
    pub rescan_interval: std::time::Duration,
    /// No inotify: scan the whole folder at this interval instead (NFS, FUSE, interval replication).
    #[arg(long, value_parser = ferry_node::duration::parse)]
    pub poll: Option<std::time::Duration>,
    /// Chunker sizes MIN,AVG,MAX (advanced: both sides must agree; see ARCHITECTURE.md).
    #[arg(long, value_name = "MIN,AVG,MAX", default_value = "8K,32K,128K")]
    pub chunk_sizes: ferry_engine::ChunkParams,
    /// Leave out entries matching this gitignore pattern (repeatable; SRC/.ferryignore is
    /// read too): not copied, and not touched in the target.
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,
}

/// Flags of `ferry sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The source directory.
    pub src: PathBuf,
    /// The target: a directory (created if its parent exists) or ferry://NODE_ID@HOST:PORT/NAME.
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
    /// Leave out entries matching this gitignore pattern (repeatable; SRC/.ferryignore is
    /// read too): not copied, and not touched in the target.
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// Keep the source index and the target's chunk lists in DIR/state.redb between runs:
    /// a repeat sync of the same SRC and DST rehashes only files whose stat changed and
    /// reads no target file that is as it was left. DIR is created if missing; a dry run
    /// neither reads nor writes it.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}
