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
}
