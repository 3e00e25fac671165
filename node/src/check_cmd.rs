//! `ferry check`: validates a config file and prints a short summary of what it sets up.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use ferry_node::config::{self, Config, ConfigError, Role};

use crate::cli::CheckArgs;

/// A few lines saying what `config` sets up: the node, its peers and its folders.
fn summary(config: &Config) -> String {
    let mut out = String::new();
    let n = &config.node;
    let listen = n.listen.map_or_else(
        || "not listening".to_owned(),
        |a| format!("listening on {a}"),
    );
    let dashboard = n
        .dashboard
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    let _ = writeln!(
        out,
        "node {}: {listen}, dashboard {dashboard}, home {}, state in {}, fsync {}",
        n.name,
        n.home.display(),
        n.state_dir.display(),
        if n.fsync { "on" } else { "off" }
    );
    for p in &config.peers {
        let address = p
            .address
            .as_ref()
            .map_or_else(|| "no address".to_owned(), ToString::to_string);
        let _ = writeln!(out, "peer {}: {address}, id {}", p.name, p.id);
    }
    for f in &config.folders {
        let _ = writeln!(out, "folder {} ({}): {}", f.id, f.role, f.path.display());
        if !f.peers.is_empty() {
            let names: Vec<&str> = f.peers.iter().map(|p| p.as_str()).collect();
            let way = match f.role {
                Role::Send => "to peers",
                Role::Receive => "from peers",
            };
            let _ = writeln!(out, "  {way}: {}", names.join(", "));
        }
        for t in &f.targets {
            let _ = writeln!(out, "  to target: {}", t.display());
        }
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "{}: OK ({}, {})",
        config.file.display(),
        plural(config.folders.len(), "folder"),
        plural(config.peers.len(), "peer")
    );
    out
}

/// Runs `ferry check`: the summary on stdout, or every problem on stderr and an error.
/// `home` (`--home`) replaces the config's `home`, as for `ferry run`.
pub fn run(args: &CheckArgs, home: Option<&Path>) -> Result<()> {
    match config::load_with_home(&args.config, home) {
        Ok(config) => {
            crate::stdout::print(&summary(&config))?;
            Ok(())
        }
        Err(ConfigError::Invalid(errors)) => {
            eprintln!("{errors}");
            let n = errors.problems.len();
            bail!(
                "{} is not valid: {n} problem{}",
                args.config.display(),
                if n == 1 { "" } else { "s" }
            )
        }
        Err(e) => Err(e.into()),
    }
}
