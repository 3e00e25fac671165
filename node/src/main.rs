//! `ferry`: the command-line entry point; maps every outcome to an exit code.
//!
//! Exit codes: 0 success, 1 error (message on stderr), 2 usage error, 3 finished but some
//! entries were skipped (each named in a warning).

mod cli;
mod duration;
mod logging;
mod progress;
mod sync_cmd;
mod watch_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A live mirror logs each replicated change by default; a one-shot sync only warnings.
    let base = u8::from(matches!(cli.command, cli::Command::Watch(_)));
    logging::init(cli.verbose.saturating_add(base), cli.quiet);
    let result = match &cli.command {
        cli::Command::Sync(args) => sync_cmd::run(args, cli.quiet),
        cli::Command::Watch(args) => watch_cmd::run(args).map(|()| sync_cmd::Outcome::Complete),
    };
    match result {
        Ok(sync_cmd::Outcome::Complete) => ExitCode::SUCCESS,
        Ok(sync_cmd::Outcome::Partial) => {
            eprintln!("ferry: finished, but some entries were skipped (see the warnings above)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(1)
        }
    }
}
