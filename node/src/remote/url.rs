//! [`RemoteUrl`]: where a remote folder lives, written
//! `ferry://NODE_ID@HOST[:PORT]/FOLDER`.
//!
//! The node id says who must answer (the connection is refused otherwise), the host and
//! port where to find it, and the folder which of its folders to write into.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use ferry_actors::FolderId;

use super::nodeid::{NodeId, NodeIdError};

/// The scheme prefix of every remote URL.
const SCHEME: &str = "ferry://";

/// The port a node listens on when the URL names none.
pub const DEFAULT_PORT: u16 = 7700;

/// A remote folder: the node that holds it, where to reach that node, and the folder's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteUrl {
    /// The node that must answer.
    pub node: NodeId,
    /// Its host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The folder on that node.
    pub folder: FolderId,
}

/// True when `s` looks like a remote URL (starts with `ferry://`) rather than a local path.
pub fn is_remote(s: &str) -> bool {
    s.get(..SCHEME.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(SCHEME))
}

/// Why a text is not a remote URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The text does not start with `ferry://`.
    #[error("{url:?} is not a remote URL: it must start with ferry:// (ferry://NODE_ID@HOST:PORT/FOLDER)")]
    MissingScheme {
        /// The text given.
        url: String,
    },
    /// No `NODE_ID@` before the host.
    #[error("{url:?} names no node: write ferry://NODE_ID@HOST:PORT/FOLDER")]
    MissingNode {
        /// The text given.
        url: String,
    },
    /// The node id does not parse.
    #[error("bad node id in {url:?}")]
    BadNodeId {
        /// The text given.
        url: String,
        /// Why the node id is wrong.
        #[source]
        source: NodeIdError,
    },
    /// Nothing between `@` and the port or folder.
    #[error("{url:?} names no host: write ferry://NODE_ID@HOST:PORT/FOLDER")]
    MissingHost {
        /// The text given.
        url: String,
    },
    /// The host is not a host name or IP address.
    #[error("invalid host {host:?} in {url:?}{hint}")]
    InvalidHost {
        /// The text given.
        url: String,
        /// The host part.
        host: String,
        /// A suggestion, or empty.
        hint: &'static str,
    },
    /// A `:` with no port after it.
    #[error("{url:?} has ':' but no port after it (leave both out for port {DEFAULT_PORT})")]
    MissingPort {
        /// The text given.
        url: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("invalid port {port:?} in {url:?}: use a number from 1 to 65535")]
    InvalidPort {
        /// The text given.
        url: String,
        /// The port part.
        port: String,
    },
    /// No `/FOLDER` after the host and port.
    #[error("{url:?} names no folder: write ferry://NODE_ID@HOST:PORT/FOLDER")]
    MissingFolder {
        /// The text given.
        url: String,
    },
    /// The folder part is not a valid [`FolderId`].
    #[error("bad folder in {url:?}: {reason}")]
    InvalidFolder {
        /// The text given.
        url: String,
        /// What [`FolderId::new`] said.
        reason: String,
    },
}

impl FromStr for RemoteUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let owned = || url.to_string();
        if !is_remote(url) {
            return Err(UrlError::MissingScheme { url: owned() });
        }
        let rest = &url[SCHEME.len()..];
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };

        let (node, host_port) = authority
            .split_once('@')
            .ok_or_else(|| UrlError::MissingNode { url: owned() })?;
        if node.trim().is_empty() {
            return Err(UrlError::MissingNode { url: owned() });
        }
        let node: NodeId = node.parse().map_err(|source| UrlError::BadNodeId {
            url: owned(),
            source,
        })?;

        let (host, port) = split_host_port(url, host_port)?;
        let port = match port {
            None => DEFAULT_PORT,
            Some("") => return Err(UrlError::MissingPort { url: owned() }),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(UrlError::InvalidPort {
                        url: owned(),
                        port: p.to_string(),
                    })
                }
            },
        };

        let path = path.ok_or_else(|| UrlError::MissingFolder { url: owned() })?;
        // One trailing slash is tolerated, as shells' completion adds it.
        let name = path.strip_suffix('/').unwrap_or(path);
        if name.is_empty() {
            return Err(UrlError::MissingFolder { url: owned() });
        }
        let folder = FolderId::new(name).map_err(|e| UrlError::InvalidFolder {
            url: owned(),
            reason: e.to_string(),
        })?;

        Ok(RemoteUrl {
            node,
            host,
            port,
            folder,
        })
    }
}

/// Splits `HOST[:PORT]` or `[IPV6][:PORT]`; the port is `None` when absent.
fn split_host_port<'a>(url: &str, s: &'a str) -> Result<(String, Option<&'a str>), UrlError> {
    let invalid = |host: &str, hint: &'static str| UrlError::InvalidHost {
        url: url.to_string(),
        host: host.to_string(),
        hint,
    };
    if let Some(bracketed) = s.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid(s, ": an IPv6 address needs its closing ']'"))?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(invalid(inside, ": not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid(s, ": expected ':PORT' after ']'"))?,
            ),
        };
        return Ok((inside.to_string(), port));
    }

    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    if port.is_some_and(|p| p.contains(':')) {
        return Err(invalid(
            s,
            ": write an IPv6 address in brackets, e.g. [::1]:7700",
        ));
    }
    if host.is_empty() {
        return Err(UrlError::MissingHost {
            url: url.to_string(),
        });
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid || host.starts_with('.') || host.starts_with('-') {
        return Err(invalid(
            host,
            ": use a host name or an IP address (letters, digits, '.' and '-')",
        ));
    }
    Ok((host.to_string(), port))
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}@", self.node)?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}/{}", self.port, self.folder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::of_certificate(b"url test node")
    }

    fn parse(s: &str) -> Result<RemoteUrl, UrlError> {
        s.parse()
    }

    #[test]
    fn full_url_parses_and_prints_back() {
        let text = format!("ferry://{}@backup.example.org:7711/photos", node());
        let url = parse(&text).unwrap();
        assert_eq!(url.node, node());
        assert_eq!(url.host, "backup.example.org");
        assert_eq!(url.port, 7711);
        assert_eq!(url.folder.as_str(), "photos");
        assert_eq!(url.to_string(), text);
        assert_eq!(parse(&url.to_string()).unwrap(), url);
    }

    #[test]
    fn port_defaults() {
        let url = parse(&format!("ferry://{}@10.0.0.2/docs", node())).unwrap();
        assert_eq!(url.host, "10.0.0.2");
        assert_eq!(url.port, DEFAULT_PORT);
        assert_eq!(
            url.to_string(),
            format!("ferry://{}@10.0.0.2:7700/docs", node())
        );
    }

    #[test]
    fn ipv6_in_brackets() {
        let url = parse(&format!("ferry://{}@[::1]:7701/a", node())).unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.port, 7701);
        assert_eq!(url.to_string(), format!("ferry://{}@[::1]:7701/a", node()));

        let url = parse(&format!("ferry://{}@[fe80::2]/a", node())).unwrap();
        assert_eq!(url.host, "fe80::2");
        assert_eq!(url.port, DEFAULT_PORT);
        assert_eq!(parse(&url.to_string()).unwrap(), url);
    }

    #[test]
    fn node_id_forms_are_accepted() {
        let compact = node().to_string().replace('-', "").to_lowercase();
        let url = parse(&format!("ferry://{compact}@h/f")).unwrap();
        assert_eq!(url.node, node());
        assert!(url.to_string().contains(&node().to_string()));
    }

    #[test]
    fn one_trailing_slash_is_trimmed() {
        let url = parse(&format!("ferry://{}@h:1/music/", node())).unwrap();
        assert_eq!(url.folder.as_str(), "music");
        let err = parse(&format!("ferry://{}@h:1/music//", node())).unwrap_err();
        assert!(matches!(err, UrlError::InvalidFolder { .. }), "{err}");
    }

    #[test]
    fn is_remote_looks_at_the_scheme() {
        assert!(is_remote("ferry://x"));
        assert!(is_remote("FERRY://x"));
        assert!(!is_remote("/home/me/ferry://x"));
        assert!(!is_remote("ferry:/x"));
        assert!(!is_remote(""));
        assert!(!is_remote("é"));
    }

    #[test]
    fn missing_scheme() {
        for text in ["backup:/x", "http://a@b/c", "ferry:/x@y/z"] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, UrlError::MissingScheme { .. }), "{err}");
            assert!(err.to_string().contains("ferry://"), "{err}");
        }
    }

    #[test]
    fn missing_node() {
        for text in ["ferry://host:7700/f", "ferry://@host/f"] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, UrlError::MissingNode { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn bad_node_id_carries_the_reason() {
        // The reason is the error's source, shown once in a chain (`{:#}` of anyhow).
        let reason = |err: &UrlError| {
            std::error::Error::source(err).map_or_else(String::new, ToString::to_string)
        };
        let err = parse("ferry://ABC@host/f").unwrap_err();
        assert!(matches!(err, UrlError::BadNodeId { .. }), "{err}");
        assert!(reason(&err).contains("56 characters"), "{err}");

        let mut id = node().to_string();
        let typo = if id.starts_with('A') { "B" } else { "A" };
        id.replace_range(0..1, typo);
        let err = parse(&format!("ferry://{id}@host/f")).unwrap_err();
        assert!(reason(&err).contains("mistyped"), "{err}");
        assert!(
            !err.to_string().contains("mistyped"),
            "said twice in a chain: {err}"
        );
    }

    #[test]
    fn missing_host() {
        for rest in ["/f", ":7700/f", ""] {
            let err = parse(&format!("ferry://{}@{rest}", node())).unwrap_err();
            assert!(matches!(err, UrlError::MissingHost { .. }), "{rest}: {err}");
        }
    }

    #[test]
    fn invalid_host() {
        for host in ["a b", "::1", "[::1", "[nope]", "[::1]7700", "-x", "a/b@c"] {
            let err = parse(&format!("ferry://{}@{host}/f", node())).unwrap_err();
            assert!(
                matches!(
                    err,
                    UrlError::InvalidHost { .. } | UrlError::InvalidFolder { .. }
                ),
                "{host}: {err}"
            );
        }
        let err = parse(&format!("ferry://{}@::1/f", node())).unwrap_err();
        assert!(err.to_string().contains("brackets"), "{err}");
    }

    #[test]
    fn missing_port() {
        for host in ["h:", "[::1]:"] {
            let err = parse(&format!("ferry://{}@{host}/f", node())).unwrap_err();
            assert!(matches!(err, UrlError::MissingPort { .. }), "{host}: {err}");
        }
    }

    #[test]
    fn invalid_port() {
        for port in ["0", "65536", "x", "+1", "-1", "7700x"] {
            let err = parse(&format!("ferry://{}@h:{port}/f", node())).unwrap_err();
            assert!(
                matches!(err, UrlError::InvalidPort { ref port, .. } if !port.is_empty()),
                "{port}: {err}"
            );
        }
    }

    #[test]
    fn missing_folder() {
        for rest in ["h:1", "h:1/", "h"] {
            let err = parse(&format!("ferry://{}@{rest}", node())).unwrap_err();
            assert!(
                matches!(err, UrlError::MissingFolder { .. }),
                "{rest}: {err}"
            );
        }
    }

    #[test]
    fn invalid_folder() {
        for folder in ["a b", "a/b", "x?y", &"n".repeat(65)] {
            let err = parse(&format!("ferry://{}@h/{folder}", node())).unwrap_err();
            assert!(
                matches!(err, UrlError::InvalidFolder { .. }),
                "{folder}: {err}"
            );
            assert!(err.to_string().contains("invalid folder id"), "{err}");
        }
    }
}
