//! `ferry run --config FILE`: a node from its config file, until SIGINT or SIGTERM.

use std::io::Write as _;

use anyhow::Result;
use ferry_node::runtime;

use crate::cli::RunArgs;
use crate::logging::LogFile;

/// Runs the node; lines for scripts (`listening …`, `dashboard …`, `ready`) go to stdout.
pub fn run(args: &RunArgs, log_file: Option<LogFile>) -> Result<()> {
    let system = actix::System::new();
    system.block_on(async move {
        let announce = |line: &str| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        let reopen = move || {
            if let Some(f) = &log_file {
                f.reopen();
            }
        };
        runtime::run(&args.config, &announce, &reopen).await?;
        Ok(())
    })
}
