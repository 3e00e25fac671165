//! The checks of the crash tests (`tests/tests/fault_kill.rs`) and of `crash_bench`, in one
//! place so the test and the benchmark judge a kill point the same way: (a) every file under
//! its final name in the target is a version the source had at that path; (b) after a
//! restart the target mirrors the source with no temp file left.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Ferry's temp files start with this (see `ferry_engine::target`).
const TEMP_PREFIX: &str = ".ferry-tmp-";

/// The version of a file's content: the blake3 of its bytes.
pub type Version = [u8; 32];

/// The version of `bytes`.
pub fn version(bytes: &[u8]) -> Version {
    *blake3::hash(bytes).as_bytes()
}

/// The first six bytes of a version, in hex, for messages.
pub fn short(v: &Version) -> String {
    v[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// True for one of Ferry's temp files.
pub fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// Every entry under `root` with its `lstat` (entries vanishing during the walk left out).
pub fn lstat_tree(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let child = rel.join(entry.file_name());
            let Ok(md) = fs::symlink_metadata(root.join(&child)) else {
                continue;
            };
            if md.is_dir() {
                stack.push(child.clone());
            }
            out.insert(child, md);
        }
    }
    out
}

/// The temp files under `root`, with their sizes.
pub fn temp_files(root: &Path) -> Vec<(PathBuf, u64)> {
    lstat_tree(root)
        .into_iter()
        .filter(|(p, _)| is_temp(p))
        .map(|(p, md)| (p, md.len()))
        .collect()
}

/// Check (a): every entry of `dst` under its final name is a directory, or a file whose
/// content is a version `history` records at that path. Returns the violations, one line each.
pub fn torn_files(dst: &Path, history: &BTreeMap<PathBuf, BTreeSet<Version>>) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, md) in lstat_tree(dst) {
        if md.is_dir() || is_temp(&rel) {
            continue;
        }
        if !md.is_file() {
            out.push(format!(
                "{}: a {:?} the source never had",
                rel.display(),
                md.file_type()
            ));
            continue;
        }
        let content = match fs::read(dst.join(&rel)) {
            Ok(c) => c,
            // Replaced or removed since the listing: what is there now is checked next time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.push(format!("{}: unreadable: {e}", rel.display()));
                continue;
            }
        };
        let v = version(&content);
        let known = history.get(&rel);
        if !known.is_some_and(|k| k.contains(&v)) {
            out.push(format!(
                "{}: {} bytes, blake3 {}, is none of the {} version(s) the source had there",
                rel.display(),
                content.len(),
                short(&v),
                known.map_or(0, BTreeSet::len)
            ));
        }
    }
    out
}

/// Check (b): no temp file in `dst`, and `dst` mirrors `src`. Names, kinds, sizes, modes and
/// file mtimes are compared first from metadata; contents only once those agree.
pub fn converged(src: &Path, dst: &Path) -> Result<(), String> {
    let temps = temp_files(dst);
    if !temps.is_empty() {
        return Err(format!("temp files in DST: {temps:?}"));
    }
    let key = |md: &fs::Metadata| {
        let file = md.is_file();
        let mtime = if file {
            i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec())
        } else {
            0
        };
        (
            md.is_dir(),
            if file { md.len() } else { 0 },
            md.mode(),
            mtime,
        )
    };
    let s = lstat_tree(src);
    let d = lstat_tree(dst);
    let sk: BTreeMap<_, _> = s.iter().map(|(p, m)| (p, key(m))).collect();
    let dk: BTreeMap<_, _> = d.iter().map(|(p, m)| (p, key(m))).collect();
    if sk != dk {
        let differing: Vec<_> = sk
            .iter()
            .filter(|(p, k)| dk.get(*p) != Some(k))
            .map(|(p, _)| *p)
            .chain(dk.keys().filter(|p| !sk.contains_key(*p)).copied())
            .take(10)
            .collect();
        return Err(format!("metadata differs, e.g. at {differing:?}"));
    }
    for (rel, md) in &s {
        if md.is_file() {
            let a = fs::read(src.join(rel)).map_err(|e| format!("{}: {e}", rel.display()))?;
            let b = fs::read(dst.join(rel)).map_err(|e| format!("{}: {e}", rel.display()))?;
            if a != b {
                return Err(format!("{}: content differs", rel.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_blake3() {
        assert_eq!(short(&version(b"")), "af1349b9f5f9");
    }

    #[test]
    fn a_file_with_unknown_content_is_torn_and_a_temp_file_is_not_converged() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(dst.join("a"), b"new").unwrap();
        let history = BTreeMap::from([(PathBuf::from("a"), BTreeSet::from([version(b"old")]))]);
        assert_eq!(torn_files(&dst, &history).len(), 1);
        let history = BTreeMap::from([(PathBuf::from("a"), BTreeSet::from([version(b"new")]))]);
        assert!(torn_files(&dst, &history).is_empty());
        fs::write(dst.join(".ferry-tmp-1-0-0"), b"x").unwrap();
        assert!(converged(&src, &dst).is_err());
    }
}
