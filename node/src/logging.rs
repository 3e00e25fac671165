//! Console logging: human-readable `tracing` output on stderr at the level -v/-q choose.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `FERRY_LOG` (an `EnvFilter` directive) overrides the level.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
