//! `IgnoreRules`: which entries of a folder are left out of replication, in gitignore syntax.
//!
//! A folder's rules are the patterns from its configuration (or `--ignore` flags) followed
//! by the lines of the file [`IGNORE_FILE`] (`.ferryignore`) in the source folder's root,
//! when there is one; a later line wins over an earlier one, as in a `.gitignore`. The
//! syntax is git's: `#` starts a comment, `!` re-includes what an earlier pattern
//! excluded, a trailing `/` matches directories only, a leading (or inner) `/` anchors the
//! pattern to the folder root, and `**` matches any number of directories. Matching is done
//! by the `ignore` crate's gitignore matcher (the one ripgrep uses).
//!
//! An ignored entry is not replicated at all: the source side neither scans nor sends it,
//! and the target side neither indexes, reuses, overwrites nor deletes it. An ignored
//! directory is not descended into, so, as in git, nothing below it can be re-included by
//! a `!` pattern. `.ferryignore` itself is an ordinary file and is replicated. Rules are
//! read once when a pipeline starts; a change to them takes effect when the folder's
//! pipeline is restarted.
//!
//! ```
//! use ferry_engine::{IgnoreRules, RelPath};
//! let rules = IgnoreRules::new(&["*.tmp".into(), "!keep.tmp".into(), "/build/".into()]).unwrap();
//! let p = |s: &str| RelPath::new(s).unwrap();
//! assert!(rules.is_ignored(&p("a/b.tmp"), false));
//! assert!(!rules.is_ignored(&p("a/keep.tmp"), false));
//! assert!(rules.is_ignored(&p("build/out.o"), false));
//! assert!(!rules.is_ignored(&p("src/build"), true));
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::relpath::RelPath;

/// The name of the ignore file read from a source folder's root.
pub const IGNORE_FILE: &str = ".ferryignore";

/// Why a folder's ignore rules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern is not valid gitignore syntax.
    #[error("invalid ignore pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The offending line.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Every pattern is valid alone, but together they do not compile (too many or too
    /// complex for the matcher).
    #[error("the {count} ignore patterns do not compile together: {reason}")]
    TooMany {
        /// How many patterns there were.
        count: usize,
        /// What the matcher said.
        reason: String,
    },
    /// The ignore file exists but could not be read.
    #[error("cannot read ignore file {path}: {error}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error (in the message only, so a chain shows it once).
        error: io::Error,
    },
}

/// A folder's ignore rules: cheap to clone, empty (nothing ignored) by default.
#[derive(Clone, Default)]
pub struct IgnoreRules(Option<Arc<Rules>>);

struct Rules {
    /// The pattern lines the matcher was built from, comments and blank lines left out.
    lines: Vec<String>,
    matcher: Gitignore,
}

impl IgnoreRules {
    /// Builds the rules from gitignore pattern lines (blank lines and `#` comments allowed).
    pub fn new(patterns: &[String]) -> Result<IgnoreRules, IgnoreError> {
        Self::build(patterns.iter().map(String::as_str))
    }

    /// Builds the rules from `patterns` followed by the lines of `<root>/.ferryignore`, if
    /// that file exists.
    pub fn with_file(patterns: &[String], root: &Path) -> Result<IgnoreRules, IgnoreError> {
        let path = root.join(IGNORE_FILE);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(IgnoreError::ReadFile { path, error }),
        };
        Self::build(patterns.iter().map(String::as_str).chain(file.lines()))
    }

    fn build<'a>(lines: impl Iterator<Item = &'a str>) -> Result<IgnoreRules, IgnoreError> {
        // Paths are matched relative to the folder root; "." keeps the matcher from
        // stripping any prefix off them.
        let mut builder = GitignoreBuilder::new(".");
        let mut kept = Vec::new();
        for line in lines {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            builder
                .add_line(None, line)
                .map_err(|e| IgnoreError::InvalidPattern {
                    pattern: line.to_owned(),
                    reason: e.to_string(),
                })?;
            kept.push(line.to_owned());
        }
        if kept.is_empty() {
            return Ok(IgnoreRules::default());
        }
        let matcher = builder.build().map_err(|e| IgnoreError::TooMany {
            count: kept.len(),
            reason: e.to_string(),
        })?;
        Ok(IgnoreRules(Some(Arc::new(Rules {
            lines: kept,
            matcher,
        }))))
    }

    /// True when nothing is ignored.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The pattern lines, in order: `IgnoreRules::new(rules.patterns())` builds the same
    /// rules (this is what is sent to a remote target).
    pub fn patterns(&self) -> &[String] {
        self.0.as_ref().map_or(&[], |r| &r.lines)
    }

    /// True when `path` (a directory if `is_dir`) is ignored, itself or because one of its
    /// ancestor directories is.
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        let Some(rules) = &self.0 else { return false };
        // Top down, as a walk meets them: below an ignored directory nothing is re-included.
        let s = path.as_str();
        let ancestors = s.match_indices('/').map(|(i, _)| &s[..i]);
        ancestors
            .map(|a| (a, true))
            .chain(std::iter::once((s, is_dir)))
            .any(|(p, d)| rules.matcher.matched(Path::new(p), d).is_ignore())
    }

    /// True when the entry at `path` matches an ignoring rule by itself; its ancestors are
    /// taken to be not ignored (a walk does not descend into an ignored directory).
    pub(crate) fn matches_entry(&self, path: &Path, is_dir: bool) -> bool {
        self.0
            .as_ref()
            .is_some_and(|r| r.matcher.matched(path, is_dir).is_ignore())
    }
}

impl fmt::Debug for IgnoreRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IgnoreRules")
            .field(&self.patterns())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{scan, scan_subtree, ScanOptions};

    fn rules(lines: &[&str]) -> IgnoreRules {
        let lines: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
        IgnoreRules::new(&lines).unwrap()
    }

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn gitignore_patterns_match_as_git_does() {
        let r = rules(&[
            "# a comment",
            "",
            "*.tmp",
            "!keep.tmp",
            "/build/",
            "logs/**/*.log",
        ]);
        assert!(r.is_ignored(&p("x.tmp"), false));
        assert!(r.is_ignored(&p("deep/er/x.tmp"), false));
        assert!(!r.is_ignored(&p("keep.tmp"), false));
        assert!(!r.is_ignored(&p("d/keep.tmp"), false));
        assert!(r.is_ignored(&p("build"), true));
        // Dirs only: a file named `build` is replicated.
        assert!(!r.is_ignored(&p("build"), false));
        // Anchored: a `build` directory deeper down is not ignored.
        assert!(!r.is_ignored(&p("src/build"), true));
        assert!(r.is_ignored(&p("logs/a/b/c.log"), false));
        assert!(r.is_ignored(&p("logs/c.log"), false));
        assert!(!r.is_ignored(&p("logs/c.txt"), false));
        assert!(!r.is_ignored(&p("other/logs/c.log"), false));
        assert!(!r.is_ignored(&p("x.txt"), false));
        assert_eq!(
            r.patterns(),
            ["*.tmp", "!keep.tmp", "/build/", "logs/**/*.log"]
        );
    }

    #[test]
    fn everything_below_an_ignored_directory_is_ignored() {
        let r = rules(&["/cache/", "!keep.txt"]);
        assert!(r.is_ignored(&p("cache/a/b.txt"), false));
        assert!(r.is_ignored(&p("cache/sub"), true));
        // As in git, a directory's exclusion cannot be undone for what is inside it.
        assert!(r.is_ignored(&p("cache/keep.txt"), false));
        assert!(!r.is_ignored(&p("cachet/a"), false));
    }

    #[test]
    fn empty_rules_ignore_nothing_and_survive_a_round_trip() {
        let none = IgnoreRules::default();
        assert!(none.is_empty());
        assert!(!none.is_ignored(&p("a.tmp"), false));
        assert!(rules(&["# only a comment", "  "]).is_empty());
        let r = rules(&["*.tmp", "!keep.tmp", "/build/"]);
        let back = IgnoreRules::new(r.patterns()).unwrap();
        for (path, dir) in [("a.tmp", false), ("keep.tmp", false), ("build", true)] {
            assert_eq!(r.is_ignored(&p(path), dir), back.is_ignored(&p(path), dir));
        }
        assert_eq!(format!("{r:?}"), format!("{back:?}"));
    }

    #[test]
    fn an_invalid_pattern_is_named_in_the_error() {
        let err = IgnoreRules::new(&["ok".into(), "bad[z-a]".into()]).unwrap_err();
        match &err {
            IgnoreError::InvalidPattern { pattern, .. } => assert_eq!(pattern, "bad[z-a]"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("bad[z-a]"), "{err}");
    }

    #[test]
    fn the_ignore_file_is_read_after_the_configured_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let none = IgnoreRules::with_file(&["*.tmp".into()], dir.path()).unwrap();
        assert_eq!(none.patterns(), ["*.tmp"]);
        std::fs::write(
            dir.path().join(IGNORE_FILE),
            "# secrets\nsecret/\r\n!keep.tmp\n",
        )
        .unwrap();
        let r = IgnoreRules::with_file(&["*.tmp".into()], dir.path()).unwrap();
        assert_eq!(r.patterns(), ["*.tmp", "secret/", "!keep.tmp"]);
        assert!(r.is_ignored(&p("a/secret/x"), false));
        assert!(r.is_ignored(&p("x.tmp"), false));
        assert!(!r.is_ignored(&p("keep.tmp"), false));
        assert!(!r.is_ignored(&p(IGNORE_FILE), false));
    }

    #[test]
    fn an_unreadable_ignore_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in its place cannot be read as a file.
        std::fs::create_dir(dir.path().join(IGNORE_FILE)).unwrap();
        let err = IgnoreRules::with_file(&[], dir.path()).unwrap_err();
        assert!(matches!(err, IgnoreError::ReadFile { .. }), "{err:?}");
        assert!(err.to_string().contains(IGNORE_FILE), "{err}");
    }

    #[test]
    fn scans_leave_ignored_entries_out_and_do_not_descend() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["build/deep", "src", "logs/a"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "a.txt",
            "a.tmp",
            "keep.tmp",
            "build/out.o",
            "build/deep/x",
            "src/m.rs",
            "src/build",
            "logs/a/z.log",
        ] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let opts = ScanOptions {
            ignore: rules(&["*.tmp", "!keep.tmp", "/build/", "logs/**/*.log"]),
            ..ScanOptions::default()
        };
        let out = scan(root, opts.clone()).unwrap();
        let paths: Vec<&str> = out.index.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a.txt",
                "keep.tmp",
                "logs",
                "logs/a",
                "src",
                "src/build",
                "src/m.rs"
            ]
        );
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);

        let sub = |path: &str| {
            let out = scan_subtree(root, &p(path), opts.clone()).unwrap();
            out.index
                .iter()
                .map(|e| e.path.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(sub("build").is_empty());
        assert!(sub("build/deep/x").is_empty());
        assert!(sub("a.tmp").is_empty());
        assert_eq!(sub("keep.tmp"), ["keep.tmp"]);
        assert_eq!(sub("logs"), ["logs", "logs/a"]);
    }
}
