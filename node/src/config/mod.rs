//! The node's config file (`ferry run --config FILE`, `ferry check`, `ferry init`): the
//! TOML is read into [`raw`] structs, then validated once into the checked types here.
//!
//! Every problem is reported with the file, line, column and key, and a hint; all the
//! problems a file has are reported together, not just the first, except that TOML that
//! does not parse, a top-level table of the wrong shape or a value of the wrong type is
//! reported (with any unknown keys) before the rest is checked.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("photos")).unwrap();
//! let text = r#"
//! [node]
//! name = "laptop"
//! home = "identity"
//!
//! [[folder]]
//! id = "photos"
//! path = "photos"
//! role = "send"
//! targets = ["photos-mirror"]
//! "#;
//! let config = ferry_node::config::parse(text, "ferry.toml".as_ref(), dir.path()).unwrap();
//! assert_eq!(config.folders[0].targets, [dir.path().canonicalize().unwrap().join("photos-mirror")]);
//! assert!(!config.needs_identity());
//! ```

mod error;
pub mod raw;
pub mod template;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_actors::FolderId;

use crate::remote::nodeid::NodeId;

pub use error::{ConfigError, ConfigErrors, Problem, ProblemKind};
pub use validate::real_path;

/// A validated config file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it was read from (absolute when loaded with [`load`]).
    pub file: PathBuf,
    /// `[node]`.
    pub node: NodeSettings,
    /// `[[peer]]` tables, in file order, names and ids unique.
    pub peers: Vec<Peer>,
    /// `[[folder]]` tables, in file order, ids unique, no two paths or targets nested.
    pub folders: Vec<FolderConfig>,
}

impl Config {
    /// The peer called `name`.
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name.as_str() == name)
    }

    /// The folder with id `id`.
    pub fn folder(&self, id: &FolderId) -> Option<&FolderConfig> {
        self.folders.iter().find(|f| &f.id == id)
    }

    /// True when the node needs its identity (key and certificate): some folder has peers
    /// or the node listens.
    pub fn needs_identity(&self) -> bool {
        self.node.listen.is_some() || self.folders.iter().any(|f| !f.peers.is_empty())
    }
}

/// `[node]`, with defaults filled in and paths absolute.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    /// The node's name, shown to people (non-empty, one line).
    pub name: String,
    /// The address to accept peers on; required when a receive folder lists peers.
    pub listen: Option<SocketAddr>,
    /// Where the node keeps its state (default `<home>/state`).
    pub state_dir: PathBuf,
    /// Where the node keeps its key and certificate (default as for `ferry id`).
    pub home: PathBuf,
    /// The dashboard's address; `None` when the file says `"off"`.
    pub dashboard: Option<SocketAddr>,
    /// Whether to fsync files and directories (default true).
    pub fsync: bool,
}

/// The dashboard's address when the file names none.
pub const DEFAULT_DASHBOARD: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7780);

/// The rescan interval when the file names none.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(3600);

/// The debounce window when the file names none.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(2);

/// A peer's name as folders refer to it: non-empty, one line, at most 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(String);

impl PeerName {
    /// Checks `s`, or says what a valid name looks like.
    pub fn new(s: impl Into<String>) -> Result<PeerName, String> {
        let s = s.into();
        if s.trim().is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
            return Err("a name is 1-64 characters on one line".to_owned());
        }
        Ok(PeerName(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where to reach a peer: a host name or IP address and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    /// A host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// The port, 1-65535.
    pub port: u16,
}

impl fmt::Display for PeerAddress {
    /// `host:port`, an IPv6 address in brackets, ready for `TcpStream::connect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One `[[peer]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// The name folders refer to it by.
    pub name: PeerName,
    /// Where to reach it; present for every peer a send folder sends to.
    pub address: Option<PeerAddress>,
    /// Who must answer there.
    pub id: NodeId,
}

/// Which way a folder's changes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The folder is the source: its changes go to its peers and targets.
    Send,
    /// The folder is a target its peers send into.
    Receive,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Send => "send",
            Role::Receive => "receive",
        })
    }
}

/// One `[[folder]]`, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderConfig {
    /// The folder's id, shared with its peers.
    pub id: FolderId,
    /// The directory (exists; canonical).
    pub path: PathBuf,
    /// Send or receive.
    pub role: Role,
    /// Send: the peers to send to (each has an address). Receive: the peers allowed to send
    /// into it. Each names a [`Peer`] of [`Config::peers`].
    pub peers: Vec<PeerName>,
    /// Send only: local directories mirrored in-process (absolute, parent canonical; the
    /// directory itself may not exist yet).
    pub targets: Vec<PathBuf>,
    /// Ignore patterns in gitignore syntax, each non-empty and one line (not compiled here).
    pub ignore: Vec<String>,
    /// How often to rescan the whole folder; zero turns rescans off.
    pub rescan_interval: Duration,
    /// Whether to watch for changes (inotify); when false only rescans find them.
    pub watch: bool,
    /// The quiet time that closes a burst of changes.
    pub debounce: Duration,
    /// Whether to compare contents even when size and mtime agree.
    pub checksum: bool,
}

impl FolderConfig {
    /// True when no peer is involved: a send folder mirrored only into local targets.
    pub fn is_local_only(&self) -> bool {
        self.peers.is_empty()
    }
}

/// Reads and validates the config file at `path`. Messages name `path` as given;
/// relative paths in the file are resolved against its directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_home(path, None)
}

/// [`load`], with the node's home given on the command line (`--home`): it takes the place
/// of `home` in `[node]` (and of the default), so `state_dir` defaults to `<it>/state` and
/// the overlap checks see it. A relative `home` is relative to the current directory.
pub fn load_with_home(path: &Path, home: Option<&Path>) -> Result<Config, ConfigError> {
    let read_error = |error| ConfigError::Read {
        path: path.to_owned(),
        error,
    };
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let absolute = std::path::absolute(path).map_err(read_error)?;
    let base = absolute.parent().unwrap_or(Path::new("/"));
    let mut config = parse_with_home(&text, path, base, home)?;
    config.file = absolute;
    Ok(config)
}

/// Validates config `text`. Messages name `path_for_messages` (also kept as
/// [`Config::file`]); relative paths in the text are resolved against `base_dir` (itself
/// made absolute against the current directory).
pub fn parse(
    text: &str,
    path_for_messages: &Path,
    base_dir: &Path,
) -> Result<Config, ConfigErrors> {
    parse_with_home(text, path_for_messages, base_dir, None)
}

/// [`parse`], with the node's home given on the command line (see [`load_with_home`]).
pub fn parse_with_home(
    text: &str,
    path_for_messages: &Path,
    base_dir: &Path,
    home: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let errors = |problems| ConfigErrors {
        file: path_for_messages.to_owned(),
        problems,
    };
    let base = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_owned());
    let (raw, unknown) = validate::read_raw(text).map_err(errors)?;
    let home = home.map(|h| std::path::absolute(h).unwrap_or_else(|_| h.to_owned()));
    let (node, peers, folders) =
        validate::validate(raw, text, &base, home.as_deref(), unknown).map_err(errors)?;
    Ok(Config {
        file: path_for_messages.to_owned(),
        node,
        peers,
        folders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use tempfile::TempDir;

    /// A directory with subdirectories `a`, `b` and `backup`, and a file `file.txt`.
    fn fixture() -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b", "backup"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("file.txt"), "x").unwrap();
        dir
    }

    /// `[node]` with a name and a home, so no test depends on the environment.
    const NODE: &str = "[node]\nname = \"laptop\"\nhome = \"home\"\n";

    fn node_id(seed: &str) -> String {
        NodeId::of_certificate(seed.as_bytes()).to_string()
    }

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
        parse(text, Path::new("ferry.toml"), dir)
    }

    /// The problems of `text`, which must not be valid.
    fn problems(text: &str) -> Vec<Problem> {
        let dir = fixture();
        match parse_in(dir.path(), text) {
            Ok(c) => panic!("accepted:\n{text}\n{c:#?}"),
            Err(e) => e.problems,
        }
    }

    /// The 1-based line of the first occurrence of `needle` in `text`.
    fn line_of(text: &str, needle: &str) -> usize {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {text}"));
        text[..at].matches('\n').count() + 1
    }

    /// Asserts `text` has exactly one problem, of `kind`, on the line of `needle`, naming
    /// `key`, with a hint mentioning `hint`; returns it.
    #[track_caller]
    fn one(text: &str, kind: ProblemKind, needle: &str, key: &str, hint: &str) -> Problem {
        let mut all = problems(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        let p = all.remove(0);
        assert_eq!(p.kind, kind, "{p:#?}");
        assert_eq!(p.line, line_of(text, needle), "{p:#?}");
        assert_eq!(p.key, key, "{p:#?}");
        assert!(
            p.message.contains(key.rsplit('.').next().unwrap()),
            "{p:#?}"
        );
        assert!(p.hint.contains(hint), "hint lacks {hint:?}: {p:#?}");
        p
    }

    fn local_folder(id: &str, path: &str, target: &str) -> String {
        format!("\n[[folder]]\nid = \"{id}\"\npath = \"{path}\"\nrole = \"send\"\ntargets = [\"{target}\"]\n")
    }

    #[test]
    fn full_config_round_trip() {
        let dir = fixture();
        let nas = node_id("nas");
        let phone = node_id("phone");
        let text = format!(
            r#"[node]
name = "laptop"
listen = "0.0.0.0:7700"
state_dir = "/var/lib/ferry/state"
home = "/var/lib/ferry"
dashboard = "127.0.0.1:7781"
fsync = false

[[peer]]
name = "nas"
address = "nas.local:7700"
id = "{nas}"

[[peer]]
name = "phone"
id = "{}"

[[folder]]
id = "photos"
path = "a"
role = "send"
peers = ["nas"]
targets = ["backup/photos"]
ignore = ["*.tmp", "/cache/"]
rescan_interval = "10m"
watch = false
debounce = "20ms"
checksum = true

[[folder]]
id = "inbox"
path = "b"
role = "receive"
peers = ["phone", "nas"]
"#,
            phone.to_lowercase().replace('-', "")
        );
        let config = parse_in(dir.path(), &text).unwrap();
        let root = dir.path().canonicalize().unwrap();
        let want = Config {
            file: PathBuf::from("ferry.toml"),
            node: NodeSettings {
                name: "laptop".into(),
                listen: Some("0.0.0.0:7700".parse().unwrap()),
                state_dir: "/var/lib/ferry/state".into(),
                home: "/var/lib/ferry".into(),
                dashboard: Some("127.0.0.1:7781".parse().unwrap()),
                fsync: false,
            },
            peers: vec![
                Peer {
                    name: PeerName::new("nas").unwrap(),
                    address: Some(PeerAddress {
                        host: "nas.local".into(),
                        port: 7700,
                    }),
                    id: nas.parse().unwrap(),
                },
                Peer {
                    name: PeerName::new("phone").unwrap(),
                    address: None,
                    id: phone.parse().unwrap(),
                },
            ],
            folders: vec![
                FolderConfig {
                    id: FolderId::new("photos").unwrap(),
                    path: root.join("a"),
                    role: Role::Send,
                    peers: vec![PeerName::new("nas").unwrap()],
                    targets: vec![root.join("backup/photos")],
                    ignore: vec!["*.tmp".into(), "/cache/".into()],
                    rescan_interval: Duration::from_secs(600),
                    watch: false,
                    debounce: Duration::from_millis(20),
                    checksum: true,
                },
                FolderConfig {
                    id: FolderId::new("inbox").unwrap(),
                    path: root.join("b"),
                    role: Role::Receive,
                    peers: vec![
                        PeerName::new("phone").unwrap(),
                        PeerName::new("nas").unwrap(),
                    ],
                    targets: vec![],
                    ignore: vec![],
                    rescan_interval: DEFAULT_RESCAN_INTERVAL,
                    watch: true,
                    debounce: DEFAULT_DEBOUNCE,
                    checksum: false,
                },
            ],
        };
        assert_eq!(config, want);
        assert_eq!(config.peer("nas"), Some(&want.peers[0]));
        assert_eq!(config.peer("nobody"), None);
        assert_eq!(
            config.folder(&FolderId::new("inbox").unwrap()),
            Some(&want.folders[1])
        );
        assert!(config.needs_identity());
        assert!(!config.folders[0].is_local_only());
        // The same text gives the same config: a reload can compare folder by folder.
        assert_eq!(parse_in(dir.path(), &text).unwrap(), config);
    }

    #[test]
    fn defaults_and_relative_paths() {
        let dir = fixture();
        let text = "[node]\nname = \"n\"\nhome = \"./id/../identity\"\ndashboard = \"off\"\n"
            .to_owned()
            + &local_folder("docs", "a/", "../b-mirror/./x");
        std::fs::create_dir(dir.path().join("b-mirror")).unwrap();
        let sub = dir.path().join("b");
        // The config sits in `b`, so `../b-mirror` is next to it.
        let config = parse_in(&sub, &text).unwrap_err();
        assert_eq!(
            config.problems[0].kind,
            ProblemKind::PathMissing,
            "{config}"
        );

        std::fs::create_dir(sub.join("a")).unwrap();
        let config = parse_in(&sub, &text).unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(config.node.home, dir.path().join("b/identity"));
        assert_eq!(config.node.state_dir, dir.path().join("b/identity/state"));
        assert_eq!(config.node.dashboard, None);
        assert_eq!(config.node.listen, None);
        assert!(config.node.fsync);
        let f = &config.folders[0];
        assert_eq!(f.path, root.join("b/a"));
        assert_eq!(f.targets, [root.join("b-mirror/x")]);
        assert_eq!(f.rescan_interval, DEFAULT_RESCAN_INTERVAL);
        assert_eq!(f.debounce, DEFAULT_DEBOUNCE);
        assert!(f.watch && !f.checksum);
        assert!(f.is_local_only());
        assert!(!config.needs_identity());

        let text = "[node]\nname = \"n\"\n";
        let config = parse_in(dir.path(), text).unwrap();
        assert_eq!(config.node.dashboard, Some(DEFAULT_DASHBOARD));
        assert!(config.folders.is_empty());
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_directory() {
        let dir = fixture();
        let file = dir.path().join("b/ferry.toml");
        std::fs::write(&file, format!("{NODE}{}", local_folder("x", "../a", "m"))).unwrap();
        let config = load(&file).unwrap();
        assert_eq!(config.file, file);
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(config.folders[0].path, root.join("a"));
        assert_eq!(config.folders[0].targets, [root.join("b/m")]);
        assert_eq!(config.node.home, dir.path().join("b/home"));

        let missing = load(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
    }

    #[test]
    fn message_format() {
        let text = format!(
            "{NODE}\n[[folder]]\nid = \"photos\"\npath = \"a\"\nrole = \"send\"\ntargets = [\"backup/p\"]\nrescan_interval = \"5 parsecs\"\n"
        );
        let dir = fixture();
        let err = parse_in(dir.path(), &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ferry.toml:10:19: folder \"photos\": `rescan_interval` = \"5 parsecs\" is not a duration\n  \
             hint: use a number and a unit: 500ms, 30s, 10m, 1h, 2d (0 turns rescans off)"
        );
    }

    #[test]
    fn syntax_error() {
        let text = "[node]\nname = laptop\n";
        let p = &problems(text)[0];
        assert_eq!(
            (p.kind, p.line, p.column),
            (ProblemKind::Syntax, 2, 8),
            "{p:#?}"
        );
        assert!(p.hint.contains("quotes"), "{p:#?}");
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let text = format!("{NODE}{}rescan = \"1h\"\n", local_folder("x", "a", "m"));
        let p = one(
            &text,
            ProblemKind::UnknownKey,
            "rescan =",
            "folder.rescan",
            "`rescan_interval`",
        );
        assert!(
            p.hint.contains("`checksum`") && p.hint.contains("`targets`"),
            "{p:#?}"
        );
        assert!(p.message.contains("[[folder]]"), "{p:#?}");

        let text = format!("{NODE}lisen = \"0.0.0.0:1\"\n");
        let p = one(
            &text,
            ProblemKind::UnknownKey,
            "lisen",
            "node.lisen",
            "did you mean `listen`?",
        );
        assert!(p.hint.contains("`dashboard`"), "{p:#?}");

        let text = format!("{NODE}\n[nodes]\nx = 1\n");
        one(
            &text,
            ProblemKind::UnknownKey,
            "[nodes]",
            "nodes",
            "`folder`",
        );
    }

    #[test]
    fn missing_keys() {
        let text = format!("{NODE}\n[[folder]]\nid = \"x\"\nrole = \"send\"\n");
        let p = &problems(&text)[0];
        assert_eq!(
            (p.kind, p.key.as_str()),
            (ProblemKind::MissingKey, "folder.path"),
            "{p:#?}"
        );
        assert!(p.line >= line_of(&text, "[[folder]]"), "{p:#?}");
        assert!(p.hint.contains("path = "), "{p:#?}");

        let p = &problems("[[folder]]\nid = \"x\"\n")[0];
        assert_eq!(
            (p.kind, p.key.as_str()),
            (ProblemKind::MissingKey, "node"),
            "{p:#?}"
        );
        assert!(p.hint.contains("[node]"), "{p:#?}");

        let p = &problems("[node]\nhome = \"h\"\n")[0];
        assert_eq!(
            (p.kind, p.key.as_str()),
            (ProblemKind::MissingKey, "node.name"),
            "{p:#?}"
        );
    }

    #[test]
    fn wrong_types() {
        let text = format!("{NODE}fsync = \"yes\"\n");
        one(
            &text,
            ProblemKind::WrongType,
            "fsync",
            "node.fsync",
            "fsync = true",
        );

        let text = format!("{NODE}{}peers = \"nas\"\n", local_folder("x", "a", "m"));
        one(
            &text,
            ProblemKind::WrongType,
            "peers = ",
            "folder.peers",
            "peers = [\"nas\"]",
        );
    }

    #[test]
    fn duplicate_folder_id() {
        let text = format!(
            "{NODE}{}{}",
            local_folder("x", "a", "m1"),
            local_folder("x", "b", "m2")
        );
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].kind, ProblemKind::DuplicateFolder);
        assert_eq!(p[0].line, 12);
        assert_eq!(p[0].key, "folder.id");
        assert!(p[0].message.contains("line 6"), "{p:#?}");
    }

    #[test]
    fn duplicate_peer_name_and_id() {
        let (one_id, other) = (node_id("1"), node_id("2"));
        let text = format!(
            "{NODE}\n[[peer]]\nname = \"nas\"\nid = \"{one_id}\"\n\n[[peer]]\nname = \"nas\"\nid = \"{other}\"\n\n[[peer]]\nname = \"nas2\"\nid = \"{one_id}\"\n"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(
            (p[0].kind, p[0].line, p[0].key.as_str()),
            (ProblemKind::DuplicatePeer, 10, "peer.name")
        );
        assert!(p[0].hint.contains("different name"));
        assert_eq!(
            (p[1].kind, p[1].line, p[1].key.as_str()),
            (ProblemKind::DuplicatePeerId, 15, "peer.id")
        );
    }

    #[test]
    fn folder_path_missing_or_not_a_directory() {
        let text = format!("{NODE}{}", local_folder("x", "nope", "m"));
        one(
            &text,
            ProblemKind::PathMissing,
            "nope",
            "folder.path",
            "mkdir -p",
        );
        let text = format!("{NODE}{}", local_folder("x", "file.txt", "m"));
        one(
            &text,
            ProblemKind::NotADirectory,
            "file.txt",
            "folder.path",
            "directory",
        );
        let text = format!("{NODE}{}", local_folder("x", "a", "nope/m"));
        one(
            &text,
            ProblemKind::PathMissing,
            "nope/m",
            "folder.targets",
            "mkdir -p",
        );
        let text = format!("{NODE}{}", local_folder("x", "a", "file.txt"));
        one(
            &text,
            ProblemKind::NotADirectory,
            "\"file.txt\"",
            "folder.targets",
            "directory",
        );
        let text = format!("{NODE}{}", local_folder("x", "~/a", "m"));
        one(
            &text,
            ProblemKind::BadPath,
            "~/a",
            "folder.path",
            "absolute path",
        );
    }

    #[test]
    fn nested_paths_and_targets() {
        // A folder inside another's path.
        let text = format!(
            "{NODE}{}{}",
            local_folder("x", "a", "m1"),
            local_folder("y", "a/../a/.", "m2")
        );
        let p = one(
            &text,
            ProblemKind::Overlap,
            "a/../a/.",
            "folder.path",
            "must not contain",
        );
        assert!(
            p.message
                .contains("is the same directory as folder \"x\"'s `path`"),
            "{p:#?}"
        );

        // A target inside its own source.
        let text = format!("{NODE}{}", local_folder("x", "a", "a/mirror"));
        let p = one(
            &text,
            ProblemKind::Overlap,
            "a/mirror",
            "folder.targets",
            "must not contain",
        );
        assert!(p.message.contains("is inside its own `path`"), "{p:#?}");

        // A folder containing another's target.
        let text = format!(
            "{NODE}{}{}",
            local_folder("x", "b", "backup/x"),
            local_folder("y", "backup", "m")
        );
        let p = one(
            &text,
            ProblemKind::Overlap,
            "\"backup\"",
            "folder.path",
            "must not contain",
        );
        assert!(
            p.message
                .contains("contains folder \"x\"'s `targets` entry"),
            "{p:#?}"
        );

        // Two folders mirroring into the same target.
        let text = format!(
            "{NODE}{}{}",
            local_folder("x", "a", "m"),
            local_folder("y", "b", "m")
        );
        let p = problems(&text);
        assert_eq!(
            (p.len(), p[0].kind, p[0].line),
            (1, ProblemKind::Overlap, 15),
            "{p:#?}"
        );
    }

    #[test]
    fn unknown_peer() {
        let text = format!(
            "{NODE}\n[[peer]]\nname = \"nas\"\naddress = \"nas:7700\"\nid = \"{}\"\n\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"send\"\npeers = [\"nas\", \"nsa\"]\n",
            node_id("nas")
        );
        let p = one(
            &text,
            ProblemKind::UnknownPeer,
            "peers =",
            "folder.peers",
            "one of: nas",
        );
        assert!(p.message.contains("\"nsa\""), "{p:#?}");
        assert_eq!(p.column, 17);
    }

    #[test]
    fn bad_durations() {
        let text = format!(
            "{NODE}{}rescan_interval = \"fast\"\n",
            local_folder("x", "a", "m")
        );
        one(
            &text,
            ProblemKind::BadDuration,
            "rescan_interval",
            "folder.rescan_interval",
            "500ms, 30s",
        );
    }

    #[test]
    fn a_bad_debounce_is_not_hinted_about_rescans() {
        let text = format!("{NODE}{}debounce = \"soon\"\n", local_folder("x", "a", "m"));
        let p = one(
            &text,
            ProblemKind::BadDuration,
            "debounce",
            "folder.debounce",
            "2ms",
        );
        assert!(!p.hint.contains("rescan"), "{p:#?}");
    }

    #[test]
    fn top_level_tables_written_the_wrong_way_are_named_as_such() {
        let node = one(
            "[[node]]\nname = \"laptop\"\n",
            ProblemKind::WrongType,
            "[[node]]",
            "node",
            "[node]",
        );
        assert!(
            node.message.contains(
                "`node` must be one table, written [node], not an array of tables [[node]]"
            ),
            "{node:#?}"
        );
        let not_table = one(
            "node = \"laptop\"\n",
            ProblemKind::WrongType,
            "node =",
            "node",
            "[node]",
        );
        assert!(
            not_table.message.contains("must be a table"),
            "{not_table:#?}"
        );
        let text = format!("{NODE}\n[folder]\nid = \"x\"\n");
        let folder = one(
            &text,
            ProblemKind::WrongType,
            "[folder]",
            "folder",
            "[[folder]]",
        );
        assert!(folder.message.contains("not [folder]"), "{folder:#?}");
    }

    #[test]
    fn a_debounce_over_an_hour_is_refused() {
        let text = format!(
            "{NODE}{}debounce = \"99999999999999d\"\n",
            local_folder("x", "a", "m")
        );
        let p = one(
            &text,
            ProblemKind::BadDuration,
            "debounce",
            "folder.debounce",
            "at most 1h",
        );
        assert!(p.message.contains("99999999999999d"), "{p:#?}");
        let text = format!("{NODE}{}debounce = \"1h\"\n", local_folder("x", "a", "m"));
        let config = parse_in(fixture().path(), &text).expect("an hour is allowed");
        assert_eq!(config.folders[0].debounce, Duration::from_secs(3600));
    }

    #[test]
    fn bad_node_id() {
        let mut id = node_id("nas");
        let typo = if id.starts_with('A') { "B" } else { "A" };
        id.replace_range(0..1, typo);
        let text = format!("{NODE}\n[[peer]]\nname = \"nas\"\nid = \"{id}\"\n");
        let p = one(
            &text,
            ProblemKind::BadNodeId,
            "id = ",
            "peer.id",
            "ferry id",
        );
        assert!(p.message.contains("mistyped"), "{p:#?}");
    }

    #[test]
    fn bad_folder_id() {
        let text = format!("{NODE}{}", local_folder("my photos", "a", "m"));
        one(
            &text,
            ProblemKind::BadFolderId,
            "my photos",
            "folder.id",
            "letters, digits",
        );
    }

    #[test]
    fn bad_addresses() {
        let text = format!("{NODE}listen = \"localhost:7700\"\n");
        one(
            &text,
            ProblemKind::BadAddress,
            "listen",
            "node.listen",
            "0.0.0.0:7700",
        );
        let text = format!("{NODE}dashboard = \"on\"\n");
        one(
            &text,
            ProblemKind::BadAddress,
            "dashboard",
            "node.dashboard",
            "\"off\"",
        );
        for address in ["nas.local", "nas:0", "::1:7700", "[::1]", "a b:1"] {
            let text = format!(
                "{NODE}\n[[peer]]\nname = \"nas\"\naddress = \"{address}\"\nid = \"{}\"\n",
                node_id("x")
            );
            one(
                &text,
                ProblemKind::BadAddress,
                "address",
                "peer.address",
                "HOST:PORT",
            );
        }
    }

    #[test]
    fn role_rules() {
        let peer = format!("\n[[peer]]\nname = \"nas\"\nid = \"{}\"\n", node_id("nas"));

        let text = format!("{NODE}listen = \"0.0.0.0:7700\"\n{peer}\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"receive\"\npeers = [\"nas\"]\ntargets = [\"m\"]\n");
        one(
            &text,
            ProblemKind::TargetsOnReceive,
            "targets",
            "folder.targets",
            "send",
        );

        let text = format!("{NODE}\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"send\"\n");
        one(
            &text,
            ProblemKind::NothingToSendTo,
            "role",
            "folder.peers",
            "targets = ",
        );

        let text = format!("{NODE}\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"receive\"\n");
        one(
            &text,
            ProblemKind::NoSenders,
            "role",
            "folder.peers",
            "peers = ",
        );

        let text = format!("{NODE}{peer}\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"receive\"\npeers = [\"nas\"]\n");
        one(
            &text,
            ProblemKind::ListenRequired,
            "peers",
            "folder.peers",
            "listen = ",
        );

        let text = format!("{NODE}{peer}\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"send\"\npeers = [\"nas\"]\n");
        one(
            &text,
            ProblemKind::PeerWithoutAddress,
            "peers",
            "folder.peers",
            "address = ",
        );

        let text = format!("{NODE}\n[[folder]]\nid = \"x\"\npath = \"a\"\nrole = \"mirror\"\n");
        one(
            &text,
            ProblemKind::BadRole,
            "mirror",
            "folder.role",
            "\"receive\"",
        );
    }

    #[test]
    fn never_scanned() {
        let text = format!(
            "{NODE}{}watch = false\nrescan_interval = \"0\"\n",
            local_folder("x", "a", "m")
        );
        one(
            &text,
            ProblemKind::NeverScanned,
            "watch",
            "folder.watch",
            "rescan_interval",
        );
        let text = format!("{NODE}{}watch = false\n", local_folder("x", "a", "m"));
        assert!(parse_in(fixture().path(), &text).is_ok());
    }

    #[test]
    fn bad_ignore_and_names() {
        let text = format!(
            "{NODE}{}ignore = [\"*.tmp\", \"\"]\n",
            local_folder("x", "a", "m")
        );
        one(
            &text,
            ProblemKind::BadIgnore,
            "ignore",
            "folder.ignore",
            "gitignore",
        );
        // A pattern gitignore cannot compile (a lone backslash) is refused here, not when
        // the folder starts.
        let text = format!(
            "{NODE}{}ignore = [\"*.tmp\", \"\\\\\"]\n",
            local_folder("x", "a", "m")
        );
        let p = one(
            &text,
            ProblemKind::BadIgnore,
            "ignore",
            "folder.ignore",
            "gitignore",
        );
        assert!(p.message.contains("invalid ignore pattern"), "{p:#?}");
        let text = "[node]\nname = \" \"\nhome = \"h\"\n";
        one(text, ProblemKind::BadName, "name", "node.name", "name = ");
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = format!(
            "[node]\nname = \"n\"\nhome = \"h\"\nlisten = \"nowhere\"\n\n[[peer]]\nname = \"nas\"\nid = \"bad\"\n{}{}debounce = \"soon\"\n",
            local_folder("x", "nope", "m"),
            local_folder("y y", "a", "m2"),
        );
        let p = problems(&text);
        let got: Vec<(ProblemKind, usize)> = p.iter().map(|p| (p.kind, p.line)).collect();
        assert_eq!(
            got,
            [
                (ProblemKind::BadAddress, 4),
                (ProblemKind::BadNodeId, 8),
                (ProblemKind::PathMissing, 12),
                (ProblemKind::BadFolderId, 17),
                (ProblemKind::BadDuration, 21),
            ],
            "{p:#?}"
        );
        let shown = ConfigErrors {
            file: "f.toml".into(),
            problems: p,
        }
        .to_string();
        assert_eq!(shown.lines().count(), 10, "{shown}");
        assert!(
            shown.starts_with("f.toml:4:10: [node]: `listen`"),
            "{shown}"
        );
    }

    #[test]
    fn the_starter_template_passes_once_its_folder_exists() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId::of_certificate(b"me");
        let home = dir.path().join("home \"quoted\"");
        let text = template::starter(&id, "my laptop", Some(&home), None);
        assert!(text.contains(&id.to_string()));
        let err = parse_in(dir.path(), &text).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].kind, ProblemKind::PathMissing, "{err}");

        std::fs::create_dir(dir.path().join("documents")).unwrap();
        let config = parse_in(dir.path(), &text).unwrap();
        assert_eq!(config.node.name, "my laptop");
        assert_eq!(config.node.home, home);
        assert_eq!(config.folders.len(), 1);
        assert!(config.folders[0].is_local_only());

        // Uncommenting the example peer and folder (with the peer's real id and an existing
        // path) gives a valid config too.
        std::fs::create_dir(dir.path().join("photos")).unwrap();
        let uncommented = text
            .replace("# [[peer]]", "[[peer]]")
            .replace("# name = \"nas\"", "name = \"nas\"")
            .replace("# address = ", "address = ")
            .replace(
                "# id = \"AAAAAAA-BBBBBBB-CCCCCCC-DDDDDDD-EEEEEEE-FFFFFFF-GGGGGGG-HHHHHHH\"",
                &format!("id = \"{}\"", node_id("nas")),
            )
            .replace("# [[folder]]", "[[folder]]")
            .replace("# id = \"photos\"", "id = \"photos\"")
            .replace("# path = \"/data/photos\"", "path = \"photos\"")
            .replace("# role = \"send\"", "role = \"send\"")
            .replace("# peers = [\"nas\"]", "peers = [\"nas\"]");
        let config = parse_in(dir.path(), &uncommented).unwrap();
        assert_eq!(config.folders.len(), 2);
        assert_eq!(config.peers.len(), 1);
    }
}
