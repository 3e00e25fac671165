//! `ferry`: the command-line entry point; maps every outcome to an exit code.
//!
//! Exit codes: 0 success, 1 error (message on stderr), 2 usage error, 3 finished but some
//! entries were skipped (each named in a warning).

mod cli;
mod logging;
mod progress;
mod sync_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let result = match &cli.command {
        cli::Command::Sync(args) => sync_cmd::run(args, cli.quiet),
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
