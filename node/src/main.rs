//! `ferry`: the command-line entry point; maps every outcome to an exit code.
//!
//! Exit codes: 0 success, 1 error (message on stderr), 2 usage error, 3 finished but some
//! entries were skipped (each named in a warning).

mod check_cmd;
mod cli;
mod id_cmd;
mod init_cmd;
mod logging;
mod progress;
mod remote_target;
mod run_cmd;
mod serve_cmd;
mod stdout;
mod sync_cmd;
mod watch_cmd;

use std::process::ExitCode;

use clap::Parser;

/// Raises the soft limit on open files to the hard one: the Applier keeps a temp file open
/// for every file it assembles or waits to install (hundreds at once), more than the
/// usual soft limit of 1,024 allows alongside everything else.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::debug!("cannot raise the open-file limit: {e}");
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A live mirror logs each replicated change by default; a one-shot sync only warnings.
    let base = u8::from(matches!(
        cli.command,
        cli::Command::Watch(_) | cli::Command::Serve(_) | cli::Command::Run(_)
    ));
    let log_file = match logging::init(
        cli.verbose.saturating_add(base),
        cli.quiet,
        cli.log_format,
        cli.log_file.as_deref(),
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            return ExitCode::from(1);
        }
    };
    raise_fd_limit();
    let result = match &cli.command {
        cli::Command::Sync(args) => sync_cmd::run(args, cli.home.as_deref(), cli.quiet),
        cli::Command::Watch(args) => {
            watch_cmd::run(args, cli.home.as_deref()).map(|()| sync_cmd::Outcome::Complete)
        }
        cli::Command::Id => id_cmd::run(cli.home.as_deref()).map(|()| sync_cmd::Outcome::Complete),
        cli::Command::Serve(args) => {
            serve_cmd::run(args, cli.home.as_deref()).map(|()| sync_cmd::Outcome::Complete)
        }
        cli::Command::Init(args) => {
            init_cmd::run(args, cli.home.as_deref()).map(|()| sync_cmd::Outcome::Complete)
        }
        cli::Command::Check(args) => {
            check_cmd::run(args, cli.home.as_deref()).map(|()| sync_cmd::Outcome::Complete)
        }
        cli::Command::Run(args) => {
            run_cmd::run(args, cli.home.as_deref(), log_file).map(|()| sync_cmd::Outcome::Complete)
        }
    };
    match result {
        Ok(sync_cmd::Outcome::Complete) => ExitCode::SUCCESS,
        Ok(sync_cmd::Outcome::Partial) => {
            let see = if cli.quiet {
                "run without -q to see which"
            } else {
                "see the warnings above"
            };
            eprintln!("ferry: finished, but some entries were skipped ({see})");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(1)
        }
    }
}
