//! `RelPath`: a validated folder-relative path, the only way to name an entry inside a folder.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A folder-relative path: `/`-separated UTF-8 components, none empty, `.` or `..`,
/// no NUL, not absolute. Every path read from disk or the wire is parsed into one or rejected.
///
/// Ordering is component-wise (`a/b` sorts before `a-b`), so a directory's subtree is a
/// contiguous range and a parent always sorts before its children.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct RelPath(String);

/// Written as the string it holds (`into = "String"` would copy it for every write).
impl Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl RelPath {
    /// Parses and validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        let reason = if s.is_empty() {
            Some("empty path")
        } else if s.starts_with('/') {
            Some("absolute path")
        } else if s.contains('\0') {
            Some("contains NUL")
        } else if s.len() > 4096 {
            Some("longer than 4096 bytes")
        } else {
            s.split('/').find_map(check_component)
        };
        match reason {
            Some(reason) => Err(Error::InvalidPath { path: s, reason }),
            None => Ok(RelPath(s)),
        }
    }

    /// This path with one more component appended; `name` must be a single valid component.
    pub fn join(&self, name: &str) -> Result<Self> {
        if let Some(reason) = check_component(name).or_else(|| {
            name.contains('/')
                .then_some("a single name may not contain '/'")
        }) {
            return Err(Error::InvalidPath {
                path: name.to_owned(),
                reason,
            });
        }
        Ok(RelPath(format!("{}/{}", self.0, name)))
    }

    /// A path made of one component.
    pub fn from_name(name: &str) -> Result<Self> {
        if name.contains('/') {
            return Err(Error::InvalidPath {
                path: name.to_owned(),
                reason: "a single name may not contain '/'",
            });
        }
        RelPath::new(name)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_owned()))
    }

    /// The last component.
    pub fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Number of components (1 for a top-level entry).
    pub fn depth(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count() + 1
    }

    /// True if `self` is `ancestor` or lies inside it.
    pub fn is_within(&self, ancestor: &RelPath) -> bool {
        self.0 == ancestor.0
            || (self.0.len() > ancestor.0.len()
                && self.0.starts_with(&ancestor.0)
                && self.0.as_bytes()[ancestor.0.len()] == b'/')
    }

    /// This path under `root` on the local file system.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

fn check_component(c: &str) -> Option<&'static str> {
    match c {
        "" => Some("empty component"),
        "." => Some("'.' component"),
        ".." => Some("'..' component"),
        _ if c.len() > 255 => Some("component longer than 255 bytes"),
        _ => None,
    }
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        // Byte order, except that '/' sorts below every other byte: component-wise order.
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let key = |b: u8| if b == b'/' { 0 } else { b };
        match mismatch(a, b) {
            Some(i) => key(a[i]).cmp(&key(b[i])),
            None => a.len().cmp(&b.len()),
        }
    }
}

/// The first index where `a` and `b` differ, within the shorter of the two. Paths in one
/// directory share long prefixes, and every index lookup compares many of them: the
/// prefix is skipped eight bytes at a time.
fn mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_ne_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            break;
        }
        i += 8;
    }
    (i..n).find(|&j| a[j] != b[j])
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl TryFrom<String> for RelPath {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        RelPath::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_paths() {
        for bad in ["", "/a", "a//b", "a/./b", "../a", "a/..", "a\0b", "a/", "."] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RelPath::new("a/b/c.txt").is_ok());
        assert!(RelPath::new("..a/b..").is_ok());
    }

    #[test]
    fn join_validates_the_name() {
        let p = RelPath::new("a").unwrap();
        assert_eq!(p.join("b").unwrap().as_str(), "a/b");
        assert!(p.join("..").is_err());
        assert!(p.join("b/c").is_err());
        assert!(p.join("").is_err());
    }

    #[test]
    fn order_is_component_wise() {
        let mut v: Vec<RelPath> = ["a-b", "a/b", "a", "a/b/c", "b"]
            .iter()
            .map(|s| RelPath::new(*s).unwrap())
            .collect();
        v.sort();
        let s: Vec<&str> = v.iter().map(RelPath::as_str).collect();
        assert_eq!(s, ["a", "a/b", "a/b/c", "a-b", "b"]);
    }

    #[test]
    fn order_matches_comparing_components_for_paths_around_word_boundaries() {
        // Paths from a small alphabet that makes '/' and its neighbours differ at every
        // offset, shorter and longer than the eight bytes compared at once.
        let alphabet = [b'a', b'-', b'/', b'.', b'z', b'0'];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut paths = Vec::new();
        while paths.len() < 400 {
            let len = 1 + (next() % 20) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(p) = RelPath::new(String::from_utf8(bytes).unwrap()) {
                paths.push(p);
            }
        }
        for a in &paths {
            for b in &paths {
                let components = a.as_str().split('/').cmp(b.as_str().split('/'));
                assert_eq!(a.cmp(b), components, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn parent_name_within() {
        let p = RelPath::new("x/y/z").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "x/y");
        assert_eq!(p.name(), "z");
        assert_eq!(p.depth(), 3);
        assert!(p.is_within(&RelPath::new("x").unwrap()));
        assert!(!p.is_within(&RelPath::new("x/y/z2").unwrap()));
        assert!(!RelPath::new("xy")
            .unwrap()
            .is_within(&RelPath::new("x").unwrap()));
    }

    #[test]
    fn deserialize_validates() {
        let mut buf = Vec::new();
        ciborium::into_writer(&"a/../etc".to_owned(), &mut buf).unwrap();
        assert!(ciborium::from_reader::<RelPath, _>(&buf[..]).is_err());
        buf.clear();
        ciborium::into_writer(&RelPath::new("a/b").unwrap(), &mut buf).unwrap();
        let back: RelPath = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(back.as_str(), "a/b");
    }
}
