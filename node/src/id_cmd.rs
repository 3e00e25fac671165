//! `ferry id`: prints this node's id, creating its key and certificate on first use.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use ferry_node::remote::identity::{default_home, Identity};

/// The identity directory: `--home`, else the default.
pub fn home(arg: Option<&Path>) -> Result<PathBuf> {
    match arg {
        Some(p) => Ok(p.to_owned()),
        None => default_home().context("cannot choose where to keep this node's identity"),
    }
}

/// Loads (or creates) the identity under `home`, saying so when it is new.
pub fn load(home: &Path) -> Result<Identity> {
    let (identity, created) = Identity::load_or_create(home)
        .with_context(|| format!("cannot load this node's identity from {}", home.display()))?;
    if created {
        tracing::warn!(home = %home.display(), node = %identity.id(), "created a new node identity");
    }
    Ok(identity)
}

/// Runs `ferry id`.
pub fn run(home_arg: Option<&Path>) -> Result<()> {
    let identity = load(&home(home_arg)?)?;
    println!("{}", identity.id());
    Ok(())
}
