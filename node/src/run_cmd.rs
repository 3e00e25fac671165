//! `ferry run --config FILE`: a node from its config file, until SIGINT or SIGTERM.

use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use ferry_node::runtime;

use crate::cli::RunArgs;
use crate::logging::LogFile;

/// Runs the node; lines for scripts (`listening …`, `dashboard …`, `ready`) go to stdout.
/// `home` (`--home`) replaces the config's `home`.
pub fn run(args: &RunArgs, home: Option<&Path>, log_file: Option<LogFile>) -> Result<()> {
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
        runtime::run(&args.config, home, &announce, &reopen).await?;
        Ok(())
    })
}
