//! The config file exactly as written: serde structs that keep the position of every value
//! a later check may need to point at. They ignore unknown keys, which `super::validate`
//! finds in the parsed TOML and reports alongside every other problem.
//!
//! Required keys are optional here too, so that a missing one is reported with the position
//! of its table. Nothing here is validated beyond TOML types; `super::validate` turns these into the
//! checked types the rest of the node uses.

use serde::Deserialize;
use toml::Spanned;

/// The keys of `[node]`, for the "unknown key" hint.
pub const NODE_KEYS: &[&str] = &["name", "listen", "state_dir", "home", "dashboard", "fsync"];

/// The keys of a `[[peer]]`, for the "unknown key" hint.
pub const PEER_KEYS: &[&str] = &["name", "address", "id"];

/// The keys of a `[[folder]]`, for the "unknown key" hint.
pub const FOLDER_KEYS: &[&str] = &[
    "id",
    "path",
    "role",
    "peers",
    "targets",
    "ignore",
    "rescan_interval",
    "watch",
    "debounce",
    "checksum",
];

/// The top-level tables, for the "unknown key" hint.
pub const TOP_KEYS: &[&str] = &["node", "peer", "folder"];

/// The whole file.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// `[node]`.
    pub node: Option<Spanned<RawNode>>,
    /// `[[peer]]` tables.
    #[serde(default)]
    pub peer: Vec<Spanned<RawPeer>>,
    /// `[[folder]]` tables.
    #[serde(default)]
    pub folder: Vec<Spanned<RawFolder>>,
}

/// `[node]`.
#[derive(Debug, Deserialize)]
pub struct RawNode {
    /// The node's name, shown to people (required).
    pub name: Option<Spanned<String>>,
    /// The address to accept peers on.
    pub listen: Option<Spanned<String>>,
    /// Where the node keeps its indexes.
    pub state_dir: Option<Spanned<String>>,
    /// Where the node keeps its identity.
    pub home: Option<Spanned<String>>,
    /// The dashboard's address, or `off`.
    pub dashboard: Option<Spanned<String>>,
    /// Whether to fsync files and directories.
    pub fsync: Option<bool>,
}

/// One `[[peer]]`.
#[derive(Debug, Deserialize)]
pub struct RawPeer {
    /// The name folders refer to it by (required).
    pub name: Option<Spanned<String>>,
    /// Where to reach it (`host:port`).
    pub address: Option<Spanned<String>>,
    /// Its node id (required).
    pub id: Option<Spanned<String>>,
}

/// One `[[folder]]`.
#[derive(Debug, Deserialize)]
pub struct RawFolder {
    /// The folder id (required).
    pub id: Option<Spanned<String>>,
    /// The directory (required).
    pub path: Option<Spanned<String>>,
    /// `send` or `receive` (required).
    pub role: Option<Spanned<String>>,
    /// Peer names.
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
    /// Local target directories (send only).
    pub targets: Option<Spanned<Vec<Spanned<String>>>>,
    /// Ignore patterns.
    #[serde(default)]
    pub ignore: Vec<Spanned<String>>,
    /// Full rescan interval.
    pub rescan_interval: Option<Spanned<String>>,
    /// Whether to watch with inotify.
    pub watch: Option<Spanned<bool>>,
    /// The debounce window.
    pub debounce: Option<Spanned<String>>,
    /// Whether to compare contents even when size and mtime agree.
    pub checksum: Option<bool>,
}

/// A line to copy for `key` (in `section`), for hints about a missing or mistyped key.
pub fn example(section: &str, key: &str) -> Option<&'static str> {
    Some(match (section, key) {
        ("", "node") => "[node] with at least name = \"laptop\"",
        ("", "peer") => "[[peer]] tables, each with name = \"nas\" and id = \"NODE-ID\"",
        ("", "folder") => "[[folder]] tables, each with id, path and role",
        ("node", "name") => "name = \"laptop\"",
        ("node", "listen") => "listen = \"0.0.0.0:7700\"",
        ("node", "state_dir") => "state_dir = \"state\"",
        ("node", "home") => "home = \"/var/lib/ferry\"",
        ("node", "dashboard") => "dashboard = \"127.0.0.1:7780\" (or \"off\")",
        ("node", "fsync") => "fsync = true",
        ("peer", "name") => "name = \"nas\"",
        ("peer", "address") => "address = \"nas.local:7700\"",
        ("peer", "id") => "id = \"NODE-ID\" (as `ferry id` prints it on that node)",
        ("folder", "id") => "id = \"photos\"",
        ("folder", "path") => "path = \"/data/photos\"",
        ("folder", "role") => "role = \"send\" (or \"receive\")",
        ("folder", "peers") => "peers = [\"nas\"]",
        ("folder", "targets") => "targets = [\"/backup/photos\"]",
        ("folder", "ignore") => "ignore = [\"*.tmp\", \"/cache/\"]",
        ("folder", "rescan_interval") => "rescan_interval = \"1h\"",
        ("folder", "watch") => "watch = true",
        ("folder", "debounce") => "debounce = \"2ms\"",
        ("folder", "checksum") => "checksum = false",
        _ => return None,
    })
}

/// The valid keys of `section` (`""` for the top level).
pub fn keys_of(section: &str) -> &'static [&'static str] {
    match section {
        "node" => NODE_KEYS,
        "peer" => PEER_KEYS,
        "folder" => FOLDER_KEYS,
        _ => TOP_KEYS,
    }
}
