//! The starter config `ferry init` writes: every key shown and explained, one local-only
//! folder ready to use, and a commented-out example of sending to a peer.

use std::fmt::Write as _;
use std::path::Path;

use crate::remote::nodeid::NodeId;

/// `s` as a TOML basic string, quotes included.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The starter config for the node `id` called `name`. `home` is written as the node's
/// identity home when given (it was chosen with `--home`); otherwise the default applies
/// and the line is left commented out, showing `default_home`.
///
/// The example folder is `documents` next to the config file, mirrored into
/// `documents-mirror`: once `documents` exists, the file passes `ferry check` as written.
pub fn starter(
    id: &NodeId,
    name: &str,
    home: Option<&Path>,
    default_home: Option<&Path>,
) -> String {
    let home_line = match (home, default_home) {
        (Some(h), _) => format!("home = {}", quoted(&h.to_string_lossy())),
        (None, Some(d)) => format!("# home = {}", quoted(&d.to_string_lossy())),
        (None, None) => "# home = \"/var/lib/ferry\"".to_owned(),
    };
    format!(
        r#"# Ferry node configuration.
#
# Check it with `ferry check --config FILE`. Relative paths are relative to this file's
# directory; durations are a number and a unit (500ms, 30s, 10m, 1h, 2d).
#
# This node's id, for the peers that send to it or receive from it:
#
#   {id}

[node]
name = {name}
# The address peers connect to; needed when a receive folder lists peers.
# listen = "0.0.0.0:7700"
# Where the node keeps its indexes (default: <home>/state).
# state_dir = "state"
# Where the node keeps its key and certificate (the node id above comes from them).
{home_line}
# The local dashboard; "off" turns it off.
# dashboard = "127.0.0.1:7780"
# fsync = true

# The other nodes. `id` is what `ferry id` prints there; `address` is needed to send to it.
#
# [[peer]]
# name = "nas"
# address = "nas.local:7700"
# id = "AAAAAAA-BBBBBBB-CCCCCCC-DDDDDDD-EEEEEEE-FFFFFFF-GGGGGGG-HHHHHHH"

# A folder sent to a peer (uncomment the [[peer]] above too). On the peer, the same id
# with role = "receive" and peers = ["<this node's name there>"] accepts it.
#
# [[folder]]
# id = "photos"
# path = "/data/photos"
# role = "send"
# peers = ["nas"]

# A folder mirrored into a local directory, with no network involved.
[[folder]]
id = "documents"
path = "documents"
role = "send"
targets = ["documents-mirror"]
# Gitignore patterns of paths not to replicate.
# ignore = ["*.tmp", "/cache/"]
# A full rescan as a safety net ("0" turns it off).
# rescan_interval = "1h"
# false: no inotify, only the periodic rescans find changes (NFS, FUSE).
# watch = true
# The quiet time that closes a burst of changes (at most 1h).
# debounce = "2ms"
# Compare contents even when size and mtime agree.
# checksum = false
"#,
        name = quoted(name),
    )
}
