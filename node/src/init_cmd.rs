//! `ferry init`: writes a commented starter config for this node, creating its identity if
//! needed so the file can name the node id.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use ferry_node::config::template;
use ferry_node::remote::identity::default_home;

use crate::cli::InitArgs;

/// This machine's host name, or a placeholder when it has none.
fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_owned();
    if name.is_empty() || name.chars().any(char::is_control) {
        "ferry-node".to_owned()
    } else {
        name
    }
}

/// Runs `ferry init`.
pub fn run(args: &InitArgs, home_arg: Option<&Path>) -> Result<()> {
    let path = &args.config;
    if !args.force && path.symlink_metadata().is_ok() {
        bail!(
            "{} already exists: edit it, or pass --force to overwrite it",
            path.display()
        );
    }
    let home = crate::id_cmd::home(home_arg)?;
    let identity = crate::id_cmd::load(&home)?;
    // A home chosen with --home is written into the file, so that running from the config
    // uses the identity whose id the file names.
    let explicit = home_arg
        .map(std::path::absolute)
        .transpose()
        .context("cannot resolve --home")?;
    let default = default_home().ok();
    let name = hostname();
    let text = template::starter(
        &identity.id(),
        &name,
        explicit.as_deref(),
        default.as_deref(),
    );

    let mut options = OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // Refuses a file created since the check above.
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {} for node {name} ({})\nnext: create the example folder `documents` next to it \
         (or edit the folders), then run `ferry check --config {}`",
        path.display(),
        identity.id(),
        path.display()
    );
    Ok(())
}
