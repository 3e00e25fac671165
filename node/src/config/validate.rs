//! Raw → checked: turns the [`raw`] structs into [`Config`](super::Config)'s
//! types, collecting every problem (with its position, key and hint) instead of stopping at
//! the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ferry_actors::FolderId;
use ferry_engine::IgnoreRules;
use toml::Spanned;

use super::error::{Problem, ProblemKind};
use super::raw::{self, RawConfig, RawFolder, RawNode, RawPeer};
use super::{
    FolderConfig, NodeSettings, Peer, PeerAddress, PeerName, Role, DEFAULT_DASHBOARD,
    DEFAULT_DEBOUNCE, DEFAULT_RESCAN_INTERVAL,
};
use crate::remote::identity::default_home;
use crate::remote::nodeid::NodeId;

/// The hint for a bad `rescan_interval`.
const RESCAN_HINT: &str = "use a number and a unit: 500ms, 30s, 10m, 1h, 2d (0 turns rescans off)";

/// The hint for a bad `debounce`.
const DEBOUNCE_HINT: &str =
    "use a number and a unit: 2ms, 20ms, 500ms, 1s (a short quiet time that closes a burst of changes; at most 1h)";

/// Turns a byte offset into a 1-based line and column (in characters).
struct Locator<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Locator { text, line_starts }
    }

    fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

/// Reads `text` into the raw structs, with a problem for every unknown key (the raw structs
/// ignore them, so checking goes on). A TOML syntax error, a top-level table of the wrong
/// shape, or a value of the wrong type stops here: it is reported with the unknown keys.
pub(super) fn read_raw(text: &str) -> Result<(RawConfig, Vec<Problem>), Vec<Problem>> {
    let locator = Locator::new(text);
    let table = match toml::de::DeTable::parse(text) {
        Ok(table) => table,
        Err(e) => {
            let (line, column) = locator.at(e.span().map_or(0, |s| s.start));
            let message = e.message().trim().replace('\n', "; ");
            return Err(vec![Problem {
                kind: ProblemKind::Syntax,
                line,
                column,
                key: String::new(),
                message: format!("this is not valid TOML: {message}"),
                hint: "write key = value with strings in quotes (name = \"laptop\"), tables as \
                   [node] and repeated tables as [[folder]]"
                    .to_owned(),
            }]);
        }
    };
    if let Some(p) = shape_problem(&table, &locator) {
        return Err(vec![p]);
    }
    let mut unknown = unknown_keys(&table, &locator);
    match toml::from_str(text) {
        Ok(raw) => Ok((raw, unknown)),
        Err(e) => {
            unknown.push(serde_problem(&e, &locator));
            unknown.sort_by_key(|p| (p.line, p.column));
            Err(unknown)
        }
    }
}

/// A problem for every key no table of the format has (`[node]`, each `[[peer]]` and
/// `[[folder]]`, and the top level), in file order.
fn unknown_keys(table: &Spanned<toml::de::DeTable<'_>>, locator: &Locator<'_>) -> Vec<Problem> {
    use toml::de::DeValue;
    let mut problems = Vec::new();
    let mut check = |section: &str, table: &toml::de::DeTable<'_>| {
        for key in table.keys() {
            if !raw::keys_of(section).contains(&key.get_ref().as_ref()) {
                let (line, column) = locator.at(key.span().start);
                problems.push(unknown_key(section, key.get_ref(), line, column));
            }
        }
    };
    check("", table.get_ref());
    for section in ["node", "peer", "folder"] {
        let tables: Vec<&toml::de::DeTable<'_>> =
            match table.get_ref().get(section).map(Spanned::get_ref) {
                Some(DeValue::Table(t)) => vec![t],
                Some(DeValue::Array(items)) => items
                    .iter()
                    .filter_map(|v| match v.get_ref() {
                        DeValue::Table(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
        for t in tables {
            check(section, t);
        }
    }
    problems
}

/// The problem for key `named`, which `section` (`""`: the top level) does not have, with
/// the closest valid key as a suggestion.
fn unknown_key(section: &str, named: &str, line: usize, column: usize) -> Problem {
    let valid = raw::keys_of(section);
    let close = valid
        .iter()
        .filter(|k| edit_distance(k, named) <= 2)
        .min_by_key(|k| edit_distance(k, named));
    let list = valid.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>();
    let hint = match close {
        Some(k) => format!("did you mean `{k}`? valid keys here: {}", list.join(", ")),
        None => format!("valid keys here: {}", list.join(", ")),
    };
    let key = if section.is_empty() {
        named.to_owned()
    } else {
        format!("{section}.{named}")
    };
    Problem {
        kind: ProblemKind::UnknownKey,
        line,
        column,
        key,
        message: format!("unknown key `{named}` in {}", table_name(section)),
        hint,
    }
}

/// A top-level table written the wrong way (`[[node]]`, `[folder]`, `node = "x"`), said
/// plainly: serde's message for it names the first field it tried, not the shape.
fn shape_problem(table: &Spanned<toml::de::DeTable<'_>>, locator: &Locator<'_>) -> Option<Problem> {
    use toml::de::DeValue;
    for (name, single) in [("node", true), ("peer", false), ("folder", false)] {
        let Some(value) = table.get_ref().get(name) else {
            continue;
        };
        let (message, hint) = match (value.get_ref(), single) {
            (DeValue::Table(_), true) | (DeValue::Array(_), false) => continue,
            (DeValue::Array(_), true) => (
                "`node` must be one table, written [node], not an array of tables [[node]]"
                    .to_owned(),
                "write [node] (single brackets) once; [[...]] is for [[peer]] and [[folder]]"
                    .to_owned(),
            ),
            (_, true) => (
                "`node` must be a table, written [node]".to_owned(),
                "write [node] on its own line, then its keys (name = \"laptop\", ...)".to_owned(),
            ),
            (DeValue::Table(_), false) => (
                format!("`{name}` must be an array of tables, written [[{name}]], not [{name}]"),
                format!("write [[{name}]] (double brackets) before each {name}"),
            ),
            (_, false) => (
                format!("`{name}` must be an array of tables, written [[{name}]]"),
                format!("write [[{name}]] (double brackets) before each {name}, then its keys"),
            ),
        };
        let (line, column) = locator.at(value.span().start);
        return Some(Problem {
            kind: ProblemKind::WrongType,
            line,
            column,
            key: name.to_owned(),
            message,
            hint,
        });
    }
    None
}

/// The keys leading to a deserialisation error (`["folder", "peers"]`), read from its
/// input-less rendering, which is the only place toml exposes them.
fn error_keys(e: &toml::de::Error) -> Vec<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    shown
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("in `"))
        .and_then(|l| l.strip_suffix('`'))
        .map(|k| {
            k.split('.')
                .filter(|p| !p.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The text between the first pair of backticks in `s`.
fn backticked(s: &str) -> Option<&str> {
    let rest = &s[s.find('`')? + 1..];
    Some(&rest[..rest.find('`')?])
}

/// How a table is written, for messages.
fn table_name(section: &str) -> String {
    match section {
        "" => "the top level".to_owned(),
        "node" => "[node]".to_owned(),
        other => format!("[[{other}]]"),
    }
}

/// The classic edit distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Turns a serde error (unknown key, missing key, wrong type) into a problem.
fn serde_problem(e: &toml::de::Error, locator: &Locator<'_>) -> Problem {
    let (line, column) = locator.at(e.span().map_or(0, |s| s.start));
    let keys = error_keys(e);
    let msg = e.message().trim();
    let named = backticked(msg).unwrap_or("").to_owned();
    let problem = |kind, key: String, message: String, hint: String| Problem {
        kind,
        line,
        column,
        key,
        message,
        hint,
    };
    if msg.starts_with("missing field") {
        let section = keys.first().map_or("", String::as_str);
        let key = if section.is_empty() {
            named.clone()
        } else {
            format!("{section}.{named}")
        };
        let (message, example) = if section.is_empty() {
            (
                format!("the file has no {}", table_name(&named)),
                raw::example("", &named),
            )
        } else {
            (
                format!(
                    "{} is missing the required key `{named}`",
                    table_name(section)
                ),
                raw::example(section, &named),
            )
        };
        let hint = format!("add {}", example.unwrap_or(named.as_str()));
        return problem(ProblemKind::MissingKey, key, message, hint);
    }
    let section = keys.first().map_or("", String::as_str);
    let last = keys.last().map_or("", String::as_str);
    let key = keys.join(".");
    let hint = match raw::example(section, last) {
        Some(example) => format!("write it like this: {example}"),
        None => format!("see the keys of {}", table_name(section)),
    };
    let what = msg.strip_prefix("invalid type: ").unwrap_or(msg);
    let message = if key.is_empty() {
        msg.to_owned()
    } else if section == last {
        format!("`{last}` has the wrong type: {what}")
    } else {
        format!(
            "{}: `{last}` has the wrong type: {what}",
            table_name(section)
        )
    };
    problem(ProblemKind::WrongType, key, message, hint)
}

/// Resolves a path from the file against `base` (lexically: `.` and `..` are folded).
fn resolve(base: &Path, text: &str) -> Result<PathBuf, &'static str> {
    if text.is_empty() {
        return Err("is empty");
    }
    if text == "~" || text.starts_with("~/") {
        return Err("starts with ~, which is not expanded here");
    }
    let mut out = PathBuf::new();
    for c in base.join(text).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Collects problems while checking one file.
struct Checker<'a> {
    locator: Locator<'a>,
    base: &'a Path,
    /// The node's home from the command line (`--home`, absolute): it replaces the file's.
    home: Option<&'a Path>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(
        &mut self,
        kind: ProblemKind,
        span: Range<usize>,
        key: &str,
        message: String,
        hint: impl Into<String>,
    ) {
        let (line, column) = self.locator.at(span.start);
        self.problems.push(Problem {
            kind,
            line,
            column,
            key: key.to_owned(),
            message,
            hint: hint.into(),
        });
    }

    /// A required key's value, or `None` after reporting it missing from the table at
    /// `table` (`section` as in `folder`, `key` as in `path`).
    fn required<'v>(
        &mut self,
        table: Range<usize>,
        section: &str,
        key: &str,
        value: &'v Option<Spanned<String>>,
    ) -> Option<&'v Spanned<String>> {
        if value.is_none() {
            let message = format!(
                "{} is missing the required key `{key}`",
                if section == "node" {
                    "[node]".to_owned()
                } else {
                    format!("[[{section}]]")
                }
            );
            let hint = format!("add {}", raw::example(section, key).unwrap_or(key));
            self.report(
                ProblemKind::MissingKey,
                table,
                &format!("{section}.{key}"),
                message,
                hint,
            );
        }
        value.as_ref()
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.locator.at(span.start).0
    }

    /// A path value resolved against the config file's directory.
    fn path(
        &mut self,
        ctx: &str,
        key: &str,
        name: &str,
        value: &Spanned<String>,
    ) -> Option<PathBuf> {
        match resolve(self.base, value.get_ref()) {
            Ok(p) => Some(p),
            Err(why) => {
                let message = format!("{ctx}: `{name}` = {:?} {why}", value.get_ref());
                let hint = format!(
                    "write an absolute path, or one relative to the config file's directory ({})",
                    self.base.display()
                );
                self.report(ProblemKind::BadPath, value.span(), key, message, hint);
                None
            }
        }
    }

    /// A duration value, or `default` when absent; `hint` says what a good one looks like.
    fn duration(
        &mut self,
        ctx: &str,
        (key, name, hint): (&str, &str, &str),
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match crate::duration::parse(value.get_ref()) {
            Ok(d) => d,
            Err(_) => {
                let message = format!("{ctx}: `{name}` = {:?} is not a duration", value.get_ref());
                self.report(ProblemKind::BadDuration, value.span(), key, message, hint);
                default
            }
        }
    }

    /// A socket address (`listen`, `dashboard`).
    fn socket_addr(
        &mut self,
        key: &str,
        name: &str,
        value: &Spanned<String>,
    ) -> Option<SocketAddr> {
        match value.get_ref().trim().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let message = format!(
                    "[node]: `{name}` = {:?} is not an IP address and port",
                    value.get_ref()
                );
                let mut hint = "write IP:PORT, e.g. 0.0.0.0:7700 (every interface), \
                                127.0.0.1:7700 or [::]:7700; host names are not accepted here"
                    .to_owned();
                if name == "dashboard" {
                    hint.push_str(", and \"off\" turns the dashboard off");
                }
                self.report(ProblemKind::BadAddress, value.span(), key, message, hint);
                None
            }
        }
    }

    fn node(&mut self, table: Option<&Spanned<RawNode>>) -> Option<NodeSettings> {
        let ctx = "[node]";
        let Some(table) = table else {
            self.report(
                ProblemKind::MissingKey,
                0..0,
                "node",
                "the file has no [node] table".to_owned(),
                format!("add {}", raw::example("", "node").unwrap_or("[node]")),
            );
            return None;
        };
        let raw = table.get_ref();
        let name_value = self.required(table.span(), "node", "name", &raw.name);
        let name = name_value.map_or("", |n| n.get_ref().as_str());
        let name_ok = !name.trim().is_empty() && !name.chars().any(char::is_control);
        if let (Some(value), false) = (name_value, name_ok) {
            let message = format!("{ctx}: `name` = {name:?} is not a usable name");
            self.report(
                ProblemKind::BadName,
                value.span(),
                "node.name",
                message,
                "give this node a short one-line name, e.g. name = \"laptop\"",
            );
        }
        // A bad address is reported; the node is then not built, but checking goes on.
        let mut addresses_ok = true;
        let listen = match &raw.listen {
            Some(v) => {
                let a = self.socket_addr("node.listen", "listen", v);
                addresses_ok &= a.is_some();
                a
            }
            None => None,
        };
        let dashboard = match &raw.dashboard {
            Some(v) if v.get_ref().trim() == "off" => None,
            Some(v) => {
                let a = self.socket_addr("node.dashboard", "dashboard", v);
                addresses_ok &= a.is_some();
                a
            }
            None => Some(DEFAULT_DASHBOARD),
        };
        let home = match (self.home, &raw.home) {
            (Some(flag), _) => Some(flag.to_owned()),
            (None, Some(v)) => self.path(ctx, "node.home", "home", v),
            (None, None) => match default_home() {
                Ok(h) => Some(h),
                Err(e) => {
                    self.report(
                        ProblemKind::NoHome,
                        table.span(),
                        "node.home",
                        format!("{ctx}: no `home` is set and {e}"),
                        "add home = \"/var/lib/ferry\" to [node] (where the node keeps its key)",
                    );
                    None
                }
            },
        };
        let state_dir = match &raw.state_dir {
            Some(v) => self.path(ctx, "node.state_dir", "state_dir", v),
            None => home.as_ref().map(|h| h.join("state")),
        };
        if !(name_ok && addresses_ok) {
            return None;
        }
        Some(NodeSettings {
            name: name.to_owned(),
            listen,
            state_dir: state_dir?,
            home: home?,
            dashboard,
            fsync: raw.fsync.unwrap_or(true),
        })
    }

    fn peer_address(&mut self, ctx: &str, value: &Spanned<String>) -> Option<PeerAddress> {
        let text = value.get_ref().trim();
        let parsed = parse_host_port(text);
        match parsed {
            Ok(a) => Some(a),
            Err(why) => {
                let message = format!("{ctx}: `address` = {text:?} {why}");
                self.report(
                    ProblemKind::BadAddress,
                    value.span(),
                    "peer.address",
                    message,
                    "write HOST:PORT, e.g. nas.local:7700, 192.168.1.20:7700 or [fe80::2]:7700",
                );
                None
            }
        }
    }

    fn peers(&mut self, raw: &[Spanned<RawPeer>]) -> (Vec<Peer>, HashMap<String, PeerInfo>) {
        let mut peers = Vec::new();
        let mut known: HashMap<String, PeerInfo> = HashMap::new();
        let mut ids: HashMap<NodeId, (String, usize)> = HashMap::new();
        for table in raw {
            let p = table.get_ref();
            let name_value = self.required(table.span(), "peer", "name", &p.name);
            let id_value = self.required(table.span(), "peer", "id", &p.id);
            let Some(name_value) = name_value else {
                continue;
            };
            let ctx = format!("peer {:?}", name_value.get_ref());
            let name = match PeerName::new(name_value.get_ref().clone()) {
                Ok(n) => Some(n),
                Err(why) => {
                    let message = format!("{ctx}: `name` is not a usable name: {why}");
                    self.report(
                        ProblemKind::BadName,
                        name_value.span(),
                        "peer.name",
                        message,
                        "give each peer a short one-line name, e.g. name = \"nas\"",
                    );
                    None
                }
            };
            let line = self.line(&name_value.span());
            if let Some(earlier) = known.get(name_value.get_ref()) {
                let message = format!(
                    "{ctx}: the name {:?} is already used by the [[peer]] at line {}",
                    name_value.get_ref(),
                    earlier.line
                );
                self.report(
                    ProblemKind::DuplicatePeer,
                    name_value.span(),
                    "peer.name",
                    message,
                    "give each [[peer]] a different name",
                );
            } else {
                known.insert(
                    name_value.get_ref().clone(),
                    PeerInfo {
                        line,
                        has_address: p.address.is_some(),
                    },
                );
            }
            let id = match id_value.map(|v| (v, v.get_ref().parse::<NodeId>())) {
                None => None,
                Some((_, Ok(id))) => Some(id),
                Some((value, Err(e))) => {
                    let message =
                        format!("{ctx}: `id` = {:?} is not a node id: {e}", value.get_ref());
                    self.report(
                        ProblemKind::BadNodeId,
                        id_value.map_or(0..0, Spanned::span),
                        "peer.id",
                        message,
                        "copy the id again from `ferry id` on that node (8 groups of 7 letters A-Z and digits 2-7)",
                    );
                    None
                }
            };
            if let Some(id) = id {
                if let Some((other, other_line)) = ids.get(&id) {
                    let message = format!(
                        "{ctx}: `id` is the same node as peer {other:?} at line {other_line}"
                    );
                    self.report(
                        ProblemKind::DuplicatePeerId,
                        id_value.map_or(0..0, Spanned::span),
                        "peer.id",
                        message,
                        "each [[peer]] is a different node: remove one, or fix the id",
                    );
                } else {
                    ids.insert(
                        id,
                        (
                            name_value.get_ref().clone(),
                            self.line(&id_value.map_or(0..0, Spanned::span)),
                        ),
                    );
                }
            }
            // `None` when the address is bad, `Some(None)` when there is none.
            let address = match &p.address {
                Some(a) => self.peer_address(&ctx, a).map(Some),
                None => Some(None),
            };
            if let (Some(name), Some(id), Some(address)) = (name, id, address) {
                peers.push(Peer { name, address, id });
            }
        }
        (peers, known)
    }

    fn folder(
        &mut self,
        table: &Spanned<RawFolder>,
        known_peers: &HashMap<String, PeerInfo>,
        listen: bool,
        seen: &mut HashMap<String, usize>,
        places: &mut Vec<Place>,
    ) -> Option<FolderConfig> {
        let f = table.get_ref();
        let id_value = self.required(table.span(), "folder", "id", &f.id);
        let path_value = self.required(table.span(), "folder", "path", &f.path);
        let role_value = self.required(table.span(), "folder", "role", &f.role);
        let (Some(id_value), Some(path_value), Some(role_value)) =
            (id_value, path_value, role_value)
        else {
            return None;
        };
        let ctx = format!("folder {:?}", id_value.get_ref());

        let id = match FolderId::new(id_value.get_ref().clone()) {
            Ok(id) => Some(id),
            Err(_) => {
                let message = format!(
                    "{ctx}: `id` = {:?} is not a valid folder id",
                    id_value.get_ref()
                );
                self.report(
                    ProblemKind::BadFolderId,
                    id_value.span(),
                    "folder.id",
                    message,
                    "use 1-64 characters of letters, digits, '.', '_' or '-', e.g. id = \"photos\"",
                );
                None
            }
        };
        if let Some(earlier) = seen.get(id_value.get_ref()) {
            let message = format!(
                "{ctx}: the id {:?} is already used by the [[folder]] at line {earlier}",
                id_value.get_ref()
            );
            self.report(
                ProblemKind::DuplicateFolder,
                id_value.span(),
                "folder.id",
                message,
                "give each [[folder]] a different id",
            );
        } else {
            let line = self.line(&id_value.span());
            seen.insert(id_value.get_ref().clone(), line);
        }

        let role = match role_value.get_ref().as_str() {
            "send" => Some(Role::Send),
            "receive" => Some(Role::Receive),
            other => {
                let message =
                    format!("{ctx}: `role` = {other:?} is neither \"send\" nor \"receive\"");
                self.report(ProblemKind::BadRole, role_value.span(), "folder.role", message, "use role = \"send\" (this folder is the source) or role = \"receive\" (peers send into it)");
                None
            }
        };

        let path = self.folder_path(&ctx, path_value);
        if let Some(path) = &path {
            places.push(Place {
                path: path.clone(),
                span: path_value.span(),
                key: "folder.path",
                noun: "`path`",
                ctx: ctx.clone(),
            });
        }

        let mut peers = Vec::new();
        for name in &f.peers {
            match known_peers.get(name.get_ref()) {
                None => {
                    let mut names: Vec<&str> = known_peers.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    let hint = if names.is_empty() {
                        format!("define it with a [[peer]] table: name = {:?}, id = \"NODE-ID\", address = \"HOST:PORT\"", name.get_ref())
                    } else {
                        format!(
                            "define it with a [[peer]] table, or use one of: {}",
                            names.join(", ")
                        )
                    };
                    let message = format!(
                        "{ctx}: `peers` names {:?}, but no [[peer]] has that name",
                        name.get_ref()
                    );
                    self.report(
                        ProblemKind::UnknownPeer,
                        name.span(),
                        "folder.peers",
                        message,
                        hint,
                    );
                }
                Some(info) => {
                    if role == Some(Role::Send) && !info.has_address {
                        let message = format!(
                            "{ctx}: `peers` names {:?}, which has no `address` to send to",
                            name.get_ref()
                        );
                        let hint = format!(
                            "add address = \"HOST:PORT\" to the [[peer]] at line {}",
                            info.line
                        );
                        self.report(
                            ProblemKind::PeerWithoutAddress,
                            name.span(),
                            "folder.peers",
                            message,
                            hint,
                        );
                    }
                    if let Ok(n) = PeerName::new(name.get_ref().clone()) {
                        if !peers.contains(&n) {
                            peers.push(n);
                        }
                    }
                }
            }
        }
        if role == Some(Role::Receive) && !f.peers.is_empty() && !listen {
            let message =
                format!("{ctx}: peers send into this folder, but [node] has no `listen` address");
            self.report(
                ProblemKind::ListenRequired,
                f.peers[0].span(),
                "folder.peers",
                message,
                "add listen = \"0.0.0.0:7700\" to [node] so peers can connect",
            );
        }

        let mut targets = Vec::new();
        if let Some(list) = &f.targets {
            if role == Some(Role::Receive) && !list.get_ref().is_empty() {
                let message = format!("{ctx}: a receive folder cannot have `targets`");
                self.report(ProblemKind::TargetsOnReceive, list.span(), "folder.targets", message, "mirror it from a send folder instead: give the local copy its own [[folder]] with role = \"send\" and targets, or remove `targets` here");
            }
            for t in list.get_ref() {
                if let Some(target) = self.target(&ctx, t) {
                    places.push(Place {
                        path: target.clone(),
                        span: t.span(),
                        key: "folder.targets",
                        noun: "`targets` entry",
                        ctx: ctx.clone(),
                    });
                    targets.push(target);
                }
            }
        }
        match role {
            Some(Role::Send)
                if f.peers.is_empty()
                    && targets.is_empty()
                    && f.targets.as_ref().is_none_or(|t| t.get_ref().is_empty()) =>
            {
                let message =
                    format!("{ctx}: a send folder with no `peers` and no `targets` goes nowhere");
                self.report(ProblemKind::NothingToSendTo, role_value.span(), "folder.peers", message, "add peers = [\"nas\"] to send to a peer, or targets = [\"/backup/photos\"] to mirror it locally");
            }
            Some(Role::Receive) if f.peers.is_empty() => {
                let message =
                    format!("{ctx}: a receive folder with no `peers` can receive nothing");
                self.report(
                    ProblemKind::NoSenders,
                    role_value.span(),
                    "folder.peers",
                    message,
                    "add peers = [\"laptop\"]: the peers allowed to send into this folder",
                );
            }
            _ => {}
        }

        let mut ignore = Vec::new();
        for pattern in &f.ignore {
            let p = pattern.get_ref();
            if p.trim().is_empty() || p.contains(['\n', '\r']) {
                let message = format!("{ctx}: `ignore` pattern {p:?} is empty or spans lines");
                self.report(ProblemKind::BadIgnore, pattern.span(), "folder.ignore", message, "write one gitignore pattern per string, e.g. ignore = [\"*.tmp\", \"/cache/\"]");
            } else if let Err(e) = IgnoreRules::new(std::slice::from_ref(p)) {
                // Compiled here too, so that `ferry check` and a reload refuse it instead of
                // the folder failing when it starts.
                let message = format!("{ctx}: {e}");
                self.report(ProblemKind::BadIgnore, pattern.span(), "folder.ignore", message, "write one gitignore pattern per string, e.g. ignore = [\"*.tmp\", \"/cache/\"]");
            } else {
                ignore.push(p.clone());
            }
        }

        let rescan_interval = self.duration(
            &ctx,
            ("folder.rescan_interval", "rescan_interval", RESCAN_HINT),
            f.rescan_interval.as_ref(),
            DEFAULT_RESCAN_INTERVAL,
        );
        let debounce = self.duration(
            &ctx,
            ("folder.debounce", "debounce", DEBOUNCE_HINT),
            f.debounce.as_ref(),
            DEFAULT_DEBOUNCE,
        );
        let debounce = match (crate::duration::check_debounce(debounce), &f.debounce) {
            (Err(e), Some(value)) => {
                let message = format!("{ctx}: `debounce` = {:?} {e}", value.get_ref());
                self.report(
                    ProblemKind::BadDuration,
                    value.span(),
                    "folder.debounce",
                    message,
                    DEBOUNCE_HINT,
                );
                DEFAULT_DEBOUNCE
            }
            _ => debounce,
        };
        let watch = f.watch.as_ref().is_none_or(|w| *w.get_ref());
        if let Some(w) = f
            .watch
            .as_ref()
            .filter(|_| !watch && rescan_interval.is_zero())
        {
            let message = format!(
                "{ctx}: `watch` = false and rescans are off, so changes would never be found"
            );
            self.report(
                ProblemKind::NeverScanned,
                w.span(),
                "folder.watch",
                message,
                "set rescan_interval to how often to scan (e.g. \"10m\"), or watch = true",
            );
        }

        Some(FolderConfig {
            id: id?,
            path: path?,
            role: role?,
            peers,
            targets,
            ignore,
            rescan_interval,
            watch,
            debounce,
            checksum: f.checksum.unwrap_or(false),
        })
    }

    /// A folder's path: it must exist and be a directory; returned canonical.
    fn folder_path(&mut self, ctx: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = self.path(ctx, "folder.path", "path", value)?;
        let shown = value.get_ref();
        let problem = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                return match path.canonicalize() {
                    Ok(p) => Some(p),
                    Err(e) => {
                        let message = format!("{ctx}: `path` = {shown:?} cannot be resolved: {e}");
                        self.report(
                            ProblemKind::PathMissing,
                            value.span(),
                            "folder.path",
                            message,
                            "check the directory's permissions",
                        );
                        None
                    }
                }
            }
            Ok(_) => (
                ProblemKind::NotADirectory,
                format!("{ctx}: `path` = {shown:?} is not a directory"),
                "point `path` at a directory".to_owned(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                ProblemKind::PathMissing,
                format!(
                    "{ctx}: `path` = {shown:?} does not exist ({})",
                    path.display()
                ),
                format!(
                    "create it (mkdir -p {}) or fix the path; relative paths are relative to {}",
                    path.display(),
                    self.base.display()
                ),
            ),
            Err(e) => (
                ProblemKind::PathMissing,
                format!("{ctx}: `path` = {shown:?} cannot be read: {e}"),
                "check the directory's permissions".to_owned(),
            ),
        };
        self.report(problem.0, value.span(), "folder.path", problem.1, problem.2);
        None
    }

    /// A target: its parent must be a directory, the target itself a directory or missing.
    /// Returned with its parent canonical.
    fn target(&mut self, ctx: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = self.path(ctx, "folder.targets", "targets", value)?;
        let shown = value.get_ref();
        let key = "folder.targets";
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            let message = format!("{ctx}: `targets` entry {shown:?} names no directory");
            self.report(
                ProblemKind::BadPath,
                value.span(),
                key,
                message,
                "name the directory to mirror into, e.g. \"/backup/photos\"",
            );
            return None;
        };
        let parent = match parent.canonicalize() {
            Ok(p) if p.is_dir() => p,
            Ok(_) => {
                let message = format!(
                    "{ctx}: `targets` entry {shown:?}: {} is not a directory",
                    parent.display()
                );
                self.report(
                    ProblemKind::NotADirectory,
                    value.span(),
                    key,
                    message,
                    "a target's parent must be a directory",
                );
                return None;
            }
            Err(_) => {
                let message = format!(
                    "{ctx}: `targets` entry {shown:?}: its parent {} does not exist",
                    parent.display()
                );
                let hint = format!(
                    "create it (mkdir -p {}); the target directory itself is created on first sync",
                    parent.display()
                );
                self.report(ProblemKind::PathMissing, value.span(), key, message, hint);
                return None;
            }
        };
        let mut target = parent.join(name);
        if let Ok(m) = std::fs::metadata(&target) {
            // An existing target is compared by where it really is: a symlink to another
            // folder's directory must not pass the overlap check.
            if let Ok(real) = target.canonicalize() {
                target = real;
            }
            if !m.is_dir() {
                let message =
                    format!("{ctx}: `targets` entry {shown:?} exists and is not a directory");
                self.report(
                    ProblemKind::NotADirectory,
                    value.span(),
                    key,
                    message,
                    "point the target at a directory (or a name that does not exist yet)",
                );
                return None;
            }
        }
        Some(target)
    }

    /// Reports every folder path or target inside (or equal to) an earlier one.
    fn overlaps(&mut self, places: &[Place]) {
        for (j, later) in places.iter().enumerate() {
            for earlier in &places[..j] {
                // The node's home may hold its state_dir (it does by default).
                if earlier.key.starts_with("node.") && later.key.starts_with("node.") {
                    continue;
                }
                let relation = if later.path == earlier.path {
                    "is the same directory as"
                } else if later.path.starts_with(&earlier.path) {
                    "is inside"
                } else if earlier.path.starts_with(&later.path) {
                    "contains"
                } else {
                    continue;
                };
                let owner = if earlier.ctx == later.ctx {
                    "its own".to_owned()
                } else {
                    format!("{}'s", earlier.ctx)
                };
                let message = format!(
                    "{}: {} {} {relation} {owner} {} {} (line {})",
                    later.ctx,
                    later.noun,
                    later.path.display(),
                    earlier.noun,
                    earlier.path.display(),
                    self.line(&earlier.span),
                );
                self.report(ProblemKind::Overlap, later.span.clone(), later.key, message, "folder paths, targets and the node's home and state_dir must not contain each other (a target inside a watched folder would copy itself forever; a state_dir inside a target would be deleted as an extra): pick separate directories (the node's: `home` and `state_dir` in [node], or FERRY_HOME)");
                break;
            }
        }
    }
}

/// What folders need to know about a peer, even one whose other keys are wrong.
struct PeerInfo {
    line: usize,
    has_address: bool,
}

/// The node's own directories, for the overlap check: a `home` or `state_dir` inside a
/// folder or target would be replicated (keys included) or deleted as an extra.
/// With `home_flag`, the home came from `--home`, not from the file.
fn node_places(
    raw: Option<&Spanned<RawNode>>,
    node: Option<&NodeSettings>,
    home_flag: bool,
) -> Vec<Place> {
    let (Some(raw), Some(node)) = (raw, node) else {
        return Vec::new();
    };
    let table = raw.get_ref();
    let (home_value, home_noun) = if home_flag {
        (&None, "`home` (--home)")
    } else {
        (&table.home, "`home`")
    };
    // At the key's value when the file sets it, else at the [node] table.
    let place = |path: &Path, value: &Option<Spanned<String>>, key, noun| Place {
        path: real_path(path),
        span: value.as_ref().map_or(raw.span(), |v| v.span()),
        key,
        noun,
        ctx: "[node]".into(),
    };
    vec![
        place(&node.home, home_value, "node.home", home_noun),
        place(
            &node.state_dir,
            &table.state_dir,
            "node.state_dir",
            "`state_dir`",
        ),
    ]
}

/// `path` with its deepest existing ancestor resolved (symlinks followed) and the rest, not
/// created yet, appended.
pub fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// A directory a folder owns (its path or a target), for the overlap check.
struct Place {
    path: PathBuf,
    span: Range<usize>,
    key: &'static str,
    /// `path` or `target`.
    noun: &'static str,
    /// The owning folder, as messages name it.
    ctx: String,
}

/// Parses `host:port` (IPv6 in brackets); the port is required.
fn parse_host_port(text: &str) -> Result<PeerAddress, &'static str> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has no closing ']'")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has something other than an IPv6 address in brackets");
        }
        (
            host,
            after
                .strip_prefix(':')
                .ok_or("has no :PORT after the address")?,
        )
    } else {
        let (host, port) = text.rsplit_once(':').ok_or("has no :PORT")?;
        if host.contains(':') {
            return Err("needs brackets around an IPv6 address");
        }
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && !host.starts_with(['.', '-']);
        if !valid {
            return Err("is not a host name or IP address and port");
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(PeerAddress {
            host: host.to_owned(),
            port: p,
        }),
        _ => Err("has a port that is not a number from 1 to 65535"),
    }
}

/// Validates the whole file, returning every problem sorted by position (`problems`
/// already found, unknown keys, among them).
pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    base: &Path,
    home: Option<&Path>,
    problems: Vec<Problem>,
) -> Result<(NodeSettings, Vec<Peer>, Vec<FolderConfig>), Vec<Problem>> {
    let mut c = Checker {
        locator: Locator::new(text),
        base,
        home,
        problems,
    };
    let node = c.node(raw.node.as_ref());
    let (peers, known) = c.peers(&raw.peer);
    let listen = raw
        .node
        .as_ref()
        .is_some_and(|n| n.get_ref().listen.is_some());
    let mut seen = HashMap::new();
    let mut places = node_places(raw.node.as_ref(), node.as_ref(), home.is_some());
    let folders: Vec<Option<FolderConfig>> = raw
        .folder
        .iter()
        .map(|f| c.folder(f, &known, listen, &mut seen, &mut places))
        .collect();
    c.overlaps(&places);
    if !c.problems.is_empty() {
        let mut problems = c.problems;
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    // Every part that is not built has reported a problem, so all are built here.
    match (node, folders.into_iter().collect::<Option<Vec<_>>>()) {
        (Some(node), Some(folders)) => Ok((node, peers, folders)),
        _ => unreachable!("a part of the config was dropped without a problem"),
    }
}
