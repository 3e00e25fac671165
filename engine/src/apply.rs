//! `apply`: carries a `Plan` out on a `TargetDir`, re-checking each action's precondition first.

use crate::assemble::{chunk_tasks, copy_local_chunks, write_verified, ChunkTask};
use crate::entry::{EntryKind, FileEntry};
use crate::error::{Error, Result};
use crate::plan::{Action, Plan};
use crate::relpath::RelPath;
use crate::target::{check_seen, TargetDir};

/// What applying one action did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// True when the action changed anything on disk.
    pub wrote: bool,
    /// File content bytes written.
    pub bytes_written: u64,
    /// Bytes copied from the target's own old versions instead of fetched.
    pub bytes_reused: u64,
    /// Bytes fetched from the source.
    pub bytes_fetched: u64,
}

/// Applies every action of `plan` except [`Action::WriteFile`], which needs chunk data
/// (see [`write_file`]). Checks first that the target is still as the plan expects.
pub fn apply_action(target: &TargetDir, action: &Action) -> Result<Effect> {
    let wrote = Effect {
        wrote: true,
        ..Effect::default()
    };
    match action {
        Action::Clear { path, .. } => {
            if target.stat(path)?.is_some() {
                target.remove_tree(path)?;
                return Ok(wrote);
            }
            Ok(Effect::default())
        }
        Action::MakeDir { path } => {
            target.make_dir(path)?;
            Ok(wrote)
        }
        Action::Rename { from, entry, seen } => {
            let st = expect_kind(target, from, EntryKind::File)?;
            check_seen(from, &st, *seen, target.mtime_step())?;
            target.rename(from, &entry.path)?;
            target.set_meta(&entry.path, EntryKind::File, entry.mode, entry.mtime)?;
            Ok(wrote)
        }
        Action::Symlink { entry, .. } => {
            let link = entry
                .symlink_target
                .as_deref()
                .ok_or_else(|| Error::Precondition {
                    path: entry.path.clone(),
                    reason: "symlink entry without a target".into(),
                })?;
            target.symlink(&entry.path, link)?;
            target.set_meta(&entry.path, EntryKind::Symlink, entry.mode, entry.mtime)?;
            Ok(wrote)
        }
        Action::SetMeta { entry, seen } => {
            target.update_meta(&entry.path, entry.kind, entry.mode, entry.mtime, *seen)?;
            Ok(wrote)
        }
        Action::Remove { path, kind } => match target.remove(path, *kind) {
            // Entries the target index never held (ignored ones) keep their directory: it
            // is left in place rather than their being deleted or the plan failing.
            Err(Error::Io { error, .. })
                if *kind == EntryKind::Dir
                    && error.kind() == std::io::ErrorKind::DirectoryNotEmpty =>
            {
                tracing::debug!(path = %path, "directory kept: it holds entries not replicated");
                Ok(Effect::default())
            }
            other => other.map(|()| wrote),
        },
        Action::SetDirMeta {
            path, mode, mtime, ..
        } => {
            let st = expect_kind(target, path, EntryKind::Dir)?;
            if st.mode == *mode && mtime.kept_as(st.mtime, target.mtime_step()) {
                return Ok(Effect::default());
            }
            target.set_meta(path, EntryKind::Dir, *mode, *mtime)?;
            Ok(wrote)
        }
        Action::WriteFile { entry, .. } => Err(Error::Precondition {
            path: entry.path.clone(),
            reason: "file content is written by write_file, not apply_action".into(),
        }),
    }
}

fn expect_kind(
    target: &TargetDir,
    path: &RelPath,
    kind: EntryKind,
) -> Result<crate::target::TargetStat> {
    match target.stat(path)? {
        Some(st) if st.kind == Some(kind) => Ok(st),
        other => Err(Error::Precondition {
            path: path.clone(),
            reason: format!(
                "expected a {kind:?}, found {:?}",
                other.and_then(|s| s.kind)
            ),
        }),
    }
}

/// Writes `entry`'s content: chunks from the old version at the same path are copied
/// locally, the others come from `fetch`; every chunk is verified, then the temp file is
/// committed over the final name. Nothing partial ever appears under the final name.
pub fn write_file(
    target: &TargetDir,
    entry: &FileEntry,
    base: Option<&crate::chunk::Content>,
    durable: bool,
    fetch: &mut dyn FnMut(&ChunkTask) -> Result<Vec<u8>>,
) -> Result<Effect> {
    let content = entry.content.as_ref().ok_or_else(|| Error::Precondition {
        path: entry.path.clone(),
        reason: "file entry without a chunk list".into(),
    })?;
    let plan = chunk_tasks(&entry.path, content, base, &crate::ChunkIndex::new());
    let temp = target.create_temp(&entry.path)?;
    let local = copy_local_chunks(target, &temp, &plan, false)?;
    let reused = local.bytes;
    let mut fetched = 0;
    for t in &local.remote {
        let bytes = fetch(t)?;
        write_verified(&temp, t, &bytes)?;
        fetched += bytes.len() as u64;
    }
    temp.set_len(content.len())?;
    temp.commit(entry.mode, entry.mtime, durable)?;
    Ok(Effect {
        wrote: true,
        bytes_written: content.len(),
        bytes_reused: reused,
        bytes_fetched: fetched,
    })
}

/// Applies a whole plan in order, fetching chunk data through `fetch`. Stops at the first
/// error; re-running diff and apply afterwards converges.
pub fn apply_plan(
    target: &TargetDir,
    plan: &Plan,
    durable: bool,
    fetch: &mut dyn FnMut(&ChunkTask) -> Result<Vec<u8>>,
) -> Result<Effect> {
    let mut total = Effect::default();
    for a in &plan.actions {
        let e = match a {
            Action::WriteFile { entry, base, .. } => {
                write_file(target, entry, base.as_ref(), durable, fetch)?
            }
            other => apply_action(target, other)?,
        };
        total.wrote |= e.wrote;
        total.bytes_written += e.bytes_written;
        total.bytes_reused += e.bytes_reused;
        total.bytes_fetched += e.bytes_fetched;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    //! Applying plans to real directories: the property that one diff + apply makes any target
    //! a mirror of any source, and that a second run finds nothing to do.

    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::fmt;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;
    use proptest::sample::Index as Pick;
    use rustix::fs::{utimensat, Timespec, Timestamps, CWD, UTIME_OMIT};

    use crate::chunk::{ChunkId, ChunkParams};
    use crate::diff::{diff, DiffOptions, DiffOutcome};
    use crate::index::Index;
    use crate::scan::{scan, ScanOptions};
    use crate::source::SourceDir;

    /// Small chunks, so that files of a few tens of KiB already have many of them.
    const PARAMS: ChunkParams = ChunkParams {
        min: 1024,
        avg: 4096,
        max: 16384,
    };
    const FILE_MODES: [u32; 3] = [0o644, 0o600, 0o755];
    /// Directory modes stay searchable by their owner, as a user's tree would.
    const DIR_MODES: [u32; 3] = [0o755, 0o700, 0o750];
    const NAMES: u8 = 8;

    /// What a test expects at one path.
    #[derive(Clone, PartialEq, Eq)]
    enum Node {
        Dir {
            mode: u32,
            mtime: i64,
        },
        File {
            data: Vec<u8>,
            mode: u32,
            mtime: i64,
        },
        Link {
            to: String,
            mtime: i64,
        },
    }

    impl Node {
        fn mtime(&self) -> i64 {
            match self {
                Node::Dir { mtime, .. } | Node::File { mtime, .. } | Node::Link { mtime, .. } => {
                    *mtime
                }
            }
        }
    }

    impl fmt::Debug for Node {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Node::Dir { mode, mtime } => write!(f, "dir {mode:o} @{mtime}"),
                Node::File { data, mode, mtime } => {
                    write!(
                        f,
                        "file {} bytes {:?} {mode:o} @{mtime}",
                        data.len(),
                        ChunkId::of(data)
                    )
                }
                Node::Link { to, mtime } => write!(f, "link -> {to} @{mtime}"),
            }
        }
    }

    /// A tree in path order: parents before children.
    type Tree = BTreeMap<RelPath, Node>;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// Names whose byte order and component order disagree unless paths are compared
    /// component-wise ("a/x" < "a b" < "a-b" < "a.b").
    fn name(n: u8) -> String {
        ["a", "a.b", "a-b", "a b", "ab", "b", "é", "Z"][usize::from(n)].to_owned()
    }

    fn child(parent: Option<&RelPath>, name: &str) -> RelPath {
        match parent {
            Some(d) => d.join(name).unwrap(),
            None => RelPath::from_name(name).unwrap(),
        }
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Hands out modification times that no other node uses, so that a changed file never
    /// passes the size + mtime quick check by accident (that blind spot is rsync's, by design).
    struct Clock(i64);

    impl Clock {
        fn fresh(&mut self, nanos: u32) -> i64 {
            self.0 += 1;
            1_500_000_000_000_000_000 + self.0 * 1_000_000_000_000 + i64::from(nanos)
        }
    }

    /// The kind of a generated entry.
    #[derive(Clone, Debug)]
    enum Kind {
        File {
            len: usize,
            seed: u64,
        },
        /// A file with the same bytes as an existing one.
        Copy {
            of: Pick,
        },
        Dir,
        Link {
            up: u8,
            name: u8,
        },
    }

    /// One generated entry, placed under a directory picked among those that exist by then.
    #[derive(Clone, Debug)]
    struct Spec {
        parent: Pick,
        name: u8,
        kind: Kind,
        mode: Pick,
        nanos: u32,
    }

    /// A change that turns the source tree into a plausible stale target.
    #[derive(Clone, Debug)]
    enum Mutation {
        Overwrite {
            file: Pick,
            at: Pick,
            seed: u64,
        },
        /// Changes bytes but neither size nor mtime.
        Sneaky {
            file: Pick,
            at: Pick,
            seed: u64,
        },
        Insert {
            file: Pick,
            at: Pick,
            len: usize,
            seed: u64,
        },
        Truncate {
            file: Pick,
            at: Pick,
        },
        Delete {
            entry: Pick,
        },
        Move {
            entry: Pick,
            parent: Pick,
            name: u8,
        },
        Retype {
            entry: Pick,
            to: Pick,
            kind: Spec,
        },
        Add(Spec),
        Touch {
            entry: Pick,
            nanos: u32,
        },
        Chmod {
            entry: Pick,
            mode: Pick,
        },
    }

    fn data_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            1 => Just(0usize),
            6 => 1usize..2_000,
            3 => 2_000usize..40_000,
            1 => 40_000usize..300_000,
        ]
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            5 => (data_len(), any::<u64>()).prop_map(|(len, seed)| Kind::File { len, seed }),
            1 => any::<Pick>().prop_map(|of| Kind::Copy { of }),
            3 => Just(Kind::Dir),
            2 => (0u8..3, 0..NAMES).prop_map(|(up, name)| Kind::Link { up, name }),
        ]
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            any::<Pick>(),
            0..NAMES,
            kind(),
            any::<Pick>(),
            0u32..1_000_000_000,
        )
            .prop_map(|(parent, name, kind, mode, nanos)| Spec {
                parent,
                name,
                kind,
                mode,
                nanos,
            })
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            1 => (any::<Pick>(), any::<Pick>(), any::<u64>()).prop_map(|(file, at, seed)| Mutation::Overwrite { file, at, seed }),
            1 => (any::<Pick>(), any::<Pick>(), any::<u64>()).prop_map(|(file, at, seed)| Mutation::Sneaky { file, at, seed }),
            1 => (any::<Pick>(), any::<Pick>(), 1usize..20_000, any::<u64>())
                .prop_map(|(file, at, len, seed)| Mutation::Insert { file, at, len, seed }),
            1 => (any::<Pick>(), any::<Pick>()).prop_map(|(file, at)| Mutation::Truncate { file, at }),
            1 => any::<Pick>().prop_map(|entry| Mutation::Delete { entry }),
            3 => (any::<Pick>(), any::<Pick>(), 0..NAMES).prop_map(|(entry, parent, name)| Mutation::Move { entry, parent, name }),
            2 => (any::<Pick>(), any::<Pick>(), spec()).prop_map(|(entry, to, kind)| Mutation::Retype { entry, to, kind }),
            2 => spec().prop_map(Mutation::Add),
            1 => (any::<Pick>(), 0u32..1_000_000_000).prop_map(|(entry, nanos)| Mutation::Touch { entry, nanos }),
            1 => (any::<Pick>(), any::<Pick>()).prop_map(|(entry, mode)| Mutation::Chmod { entry, mode }),
        ]
    }

    fn dirs(tree: &Tree) -> Vec<Option<RelPath>> {
        std::iter::once(None)
            .chain(
                tree.iter()
                    .filter(|(_, n)| matches!(n, Node::Dir { .. }))
                    .map(|(p, _)| Some(p.clone())),
            )
            .collect()
    }

    fn paths_where(tree: &Tree, keep: impl Fn(&Node) -> bool) -> Vec<RelPath> {
        tree.iter()
            .filter(|(_, n)| keep(n))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The node `spec` describes, or `None` when it copies a file and there is none.
    fn node(tree: &Tree, spec: &Spec, clock: &mut Clock) -> Option<Node> {
        let mtime = clock.fresh(spec.nanos);
        Some(match &spec.kind {
            Kind::File { len, seed } => Node::File {
                data: bytes(*len, *seed),
                mode: *spec.mode.get(&FILE_MODES),
                mtime,
            },
            Kind::Copy { of } => {
                let files: Vec<&Vec<u8>> = tree
                    .values()
                    .filter_map(|n| match n {
                        Node::File { data, .. } => Some(data),
                        _ => None,
                    })
                    .collect();
                if files.is_empty() {
                    return None;
                }
                Node::File {
                    data: of.get(&files).to_vec(),
                    mode: *spec.mode.get(&FILE_MODES),
                    mtime,
                }
            }
            Kind::Dir => Node::Dir {
                mode: *spec.mode.get(&DIR_MODES),
                mtime,
            },
            Kind::Link { up, name: n } => Node::Link {
                to: format!("{}{}", "../".repeat(usize::from(*up)), name(*n)),
                mtime,
            },
        })
    }

    fn add(tree: &mut Tree, spec: &Spec, clock: &mut Clock) {
        let parent = spec.parent.get(&dirs(tree)).clone();
        let path = child(parent.as_ref(), &name(spec.name));
        if tree.contains_key(&path) {
            return;
        }
        if let Some(n) = node(tree, spec, clock) {
            tree.insert(path, n);
        }
    }

    fn build(specs: &[Spec]) -> Tree {
        let mut tree = Tree::new();
        let mut clock = Clock(0);
        for s in specs {
            add(&mut tree, s, &mut clock);
        }
        tree
    }

    fn remove_subtree(tree: &mut Tree, root: &RelPath) {
        tree.retain(|p, _| !p.is_within(root));
    }

    /// Applies `muts` to `tree`; edits that keep size and mtime happen only when the sync
    /// will compare content (`checksum`), since a quick check cannot see them by design.
    fn mutate(mut tree: Tree, muts: &[Mutation], checksum: bool) -> Tree {
        let mut clock = Clock(1_000_000);
        let is_file = |n: &Node| matches!(n, Node::File { .. });
        for m in muts {
            let files = paths_where(&tree, is_file);
            let all = paths_where(&tree, |_| true);
            match m {
                Mutation::Overwrite { file, at, seed } if !files.is_empty() => {
                    let mtime = clock.fresh(0);
                    if let Some(Node::File { data, mtime: t, .. }) = tree.get_mut(file.get(&files))
                    {
                        if data.is_empty() {
                            data.push(1);
                        }
                        let start = at.index(data.len());
                        let end = (start + 64).min(data.len());
                        for (b, x) in data[start..end].iter_mut().zip(bytes(64, *seed)) {
                            *b ^= x | 1;
                        }
                        *t = mtime;
                    }
                }
                Mutation::Sneaky { file, at, seed } if checksum && !files.is_empty() => {
                    if let Some(Node::File { data, .. }) = tree.get_mut(file.get(&files)) {
                        if !data.is_empty() {
                            let at = at.index(data.len());
                            data[at] ^= (*seed as u8) | 1;
                        }
                    }
                }
                Mutation::Insert {
                    file,
                    at,
                    len,
                    seed,
                } if !files.is_empty() => {
                    let mtime = clock.fresh(0);
                    if let Some(Node::File { data, mtime: t, .. }) = tree.get_mut(file.get(&files))
                    {
                        let at = at.index(data.len() + 1);
                        data.splice(at..at, bytes(*len, *seed));
                        *t = mtime;
                    }
                }
                Mutation::Truncate { file, at } if !files.is_empty() => {
                    let mtime = clock.fresh(0);
                    if let Some(Node::File { data, mtime: t, .. }) = tree.get_mut(file.get(&files))
                    {
                        let at = at.index(data.len() + 1);
                        data.truncate(at);
                        *t = mtime;
                    }
                }
                Mutation::Delete { entry } if !all.is_empty() => {
                    remove_subtree(&mut tree, entry.get(&all));
                }
                Mutation::Move {
                    entry,
                    parent,
                    name: n,
                } if !all.is_empty() => {
                    let from = entry.get(&all).clone();
                    let parent = parent.get(&dirs(&tree)).clone();
                    let to = child(parent.as_ref(), &name(*n));
                    if tree.contains_key(&to) || to.is_within(&from) {
                        continue;
                    }
                    let moved: Vec<(RelPath, Node)> = tree
                        .iter()
                        .filter(|(p, _)| p.is_within(&from))
                        .map(|(p, n)| {
                            let rest = &p.as_str()[from.as_str().len()..];
                            (RelPath::new(format!("{to}{rest}")).unwrap(), n.clone())
                        })
                        .collect();
                    remove_subtree(&mut tree, &from);
                    tree.extend(moved);
                }
                Mutation::Retype { entry, to, kind } if !all.is_empty() => {
                    let path = entry.get(&all).clone();
                    let old = tree[&path].clone();
                    let kinds: Vec<Kind> = [
                        Kind::File { len: 0, seed: 0 },
                        Kind::Dir,
                        Kind::Link { up: 0, name: 0 },
                    ]
                    .into_iter()
                    .filter(|k| {
                        !matches!(
                            (k, &old),
                            (Kind::File { .. }, Node::File { .. })
                                | (Kind::Dir, Node::Dir { .. })
                                | (Kind::Link { .. }, Node::Link { .. })
                        )
                    })
                    .collect();
                    // Keep the generated details of `kind` when it already has the wanted type.
                    let wanted = to.get(&kinds);
                    let spec = match (wanted, &kind.kind) {
                        (Kind::File { .. }, Kind::File { .. } | Kind::Copy { .. })
                        | (Kind::Dir, Kind::Dir)
                        | (Kind::Link { .. }, Kind::Link { .. }) => kind.clone(),
                        _ => Spec {
                            kind: wanted.clone(),
                            ..kind.clone()
                        },
                    };
                    remove_subtree(&mut tree, &path);
                    match node(&tree, &spec, &mut clock) {
                        Some(n) => tree.insert(path, n),
                        None => tree.insert(path, old),
                    };
                }
                Mutation::Add(spec) => add(&mut tree, spec, &mut clock),
                Mutation::Touch { entry, nanos } if !all.is_empty() => {
                    let fresh = clock.fresh(*nanos);
                    match tree.get_mut(entry.get(&all)) {
                        Some(
                            Node::Dir { mtime, .. }
                            | Node::File { mtime, .. }
                            | Node::Link { mtime, .. },
                        ) => {
                            *mtime = fresh;
                        }
                        None => unreachable!(),
                    }
                }
                Mutation::Chmod { entry, mode } if !all.is_empty() => {
                    match tree.get_mut(entry.get(&all)) {
                        Some(Node::File { mode: m, .. }) => *m = *mode.get(&FILE_MODES),
                        Some(Node::Dir { mode: m, .. }) => *m = *mode.get(&DIR_MODES),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        tree
    }

    fn set_mtime(path: &Path, mtime: i64) {
        let ts = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: mtime.div_euclid(1_000_000_000),
                tv_nsec: mtime.rem_euclid(1_000_000_000) as _,
            },
        };
        utimensat(CWD, path, &ts, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    fn materialize(root: &Path, tree: &Tree) {
        fs::create_dir_all(root).unwrap();
        for (path, node) in tree {
            let full = path.under(root);
            match node {
                Node::Dir { .. } => fs::create_dir(&full).unwrap(),
                Node::File { data, .. } => fs::write(&full, data).unwrap(),
                Node::Link { to, .. } => symlink(to, &full).unwrap(),
            }
        }
        // Children first: setting a child's metadata leaves its parent's mtime alone.
        for (path, node) in tree.iter().rev() {
            let full = path.under(root);
            if let Node::Dir { mode, .. } | Node::File { mode, .. } = node {
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
            }
            set_mtime(&full, node.mtime());
        }
    }

    /// What is on disk under `root`, read without following symlinks.
    fn read_tree(root: &Path) -> Tree {
        fn walk(root: &Path, dir: Option<&RelPath>, out: &mut Tree) {
            let full = dir.map_or_else(|| root.to_owned(), |d| d.under(root));
            for item in fs::read_dir(full).unwrap() {
                let item = item.unwrap();
                let path = child(dir, item.file_name().to_str().unwrap());
                let full = path.under(root);
                let md = fs::symlink_metadata(&full).unwrap();
                let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
                let mode = md.mode() & 0o7777;
                let node = if md.is_dir() {
                    Node::Dir { mode, mtime }
                } else if md.is_file() {
                    Node::File {
                        data: fs::read(&full).unwrap(),
                        mode,
                        mtime,
                    }
                } else {
                    Node::Link {
                        to: fs::read_link(&full)
                            .unwrap()
                            .into_os_string()
                            .into_string()
                            .unwrap(),
                        mtime,
                    }
                };
                let is_dir = md.is_dir();
                out.insert(path.clone(), node);
                if is_dir {
                    walk(root, Some(&path), out);
                }
            }
        }
        let mut out = Tree::new();
        walk(root, None, &mut out);
        out
    }

    /// Every path where `got` differs from `want`, described.
    fn mismatches(want: &Tree, got: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        for (path, w) in want {
            match got.get(path) {
                None => out.push(format!("{path}: missing, want {w:?}")),
                Some(g) if g != w => out.push(format!("{path}: got {g:?}, want {w:?}")),
                Some(_) => {}
            }
        }
        for (path, g) in got {
            if !want.contains_key(path) {
                out.push(format!("{path}: extra {g:?}"));
            }
        }
        out
    }

    /// Scans both sides and diffs them, hashing whatever the diff asks for, until it gives a
    /// plan; returns the plan and the source index with the contents that were hashed.
    fn make_plan(src: &Path, dst: &Path, opts: DiffOptions) -> (Plan, Index) {
        let scanned = scan(
            src,
            ScanOptions {
                params: PARAMS,
                skip_temp_files: false,
                ..ScanOptions::default()
            },
        )
        .unwrap();
        assert!(scanned.skipped.is_empty(), "{:?}", scanned.skipped);
        let mut source = scanned.index;
        let scanned = scan(
            dst,
            ScanOptions {
                params: PARAMS,
                skip_temp_files: true,
                ..ScanOptions::default()
            },
        )
        .unwrap();
        assert!(scanned.skipped.is_empty(), "{:?}", scanned.skipped);
        let mut target = scanned.index;
        let source_dir = SourceDir::new(src, PARAMS);
        let target_dir = TargetDir::open(dst).unwrap();
        for _round in 0..3 {
            match diff(&source, &target, opts) {
                DiffOutcome::Ready(plan) => return (plan, source),
                DiffOutcome::NeedContent(needs) => {
                    assert!(!needs.is_empty());
                    for path in &needs.source {
                        let (content, _) = source_dir.hash_file(path).unwrap();
                        source.get_mut(path).unwrap().content = Some(content);
                    }
                    for path in &needs.target {
                        let content = target_dir.hash_file(path, &PARAMS).unwrap();
                        target.get_mut(path).unwrap().content = Some(content);
                    }
                }
            }
        }
        panic!("diff still needs content after three rounds of hashing");
    }

    /// One full run: plan, then apply it, fetching chunks from the source by id.
    fn sync(src: &Path, dst: &Path) -> (Plan, Effect) {
        sync_with(src, dst, DiffOptions::default())
    }

    fn sync_with(src: &Path, dst: &Path, opts: DiffOptions) -> (Plan, Effect) {
        let (plan, result) = sync_failing_after(src, dst, opts, usize::MAX);
        let effect = result.unwrap_or_else(|e| {
            panic!(
                "apply failed: {e}\nplan: {:#?}",
                plan.itemize().collect::<Vec<_>>()
            )
        });
        (plan, effect)
    }

    /// A run in which fetching fails after `fetches` chunks, as when the sender goes away.
    fn sync_failing_after(
        src: &Path,
        dst: &Path,
        opts: DiffOptions,
        fetches: usize,
    ) -> (Plan, Result<Effect>) {
        let (plan, source) = make_plan(src, dst, opts);
        let mut holders: HashMap<ChunkId, (RelPath, u64)> = HashMap::new();
        for e in source.iter() {
            for (off, c) in e.content.iter().flat_map(|c| c.with_offsets()) {
                holders.entry(c.id).or_insert_with(|| (e.path.clone(), off));
            }
        }
        let source_dir = SourceDir::new(src, PARAMS);
        let mut left = fetches;
        let mut fetch = |t: &ChunkTask| -> Result<Vec<u8>> {
            if left == 0 {
                return Err(Error::io(
                    "fetch",
                    src,
                    std::io::ErrorKind::ConnectionReset.into(),
                ));
            }
            left -= 1;
            let (path, off) = holders.get(&t.chunk.id).unwrap_or_else(|| {
                panic!("chunk {:?} is held by no hashed source file", t.chunk.id)
            });
            source_dir
                .open(path)?
                .read_chunk(*off, t.chunk.len, &t.chunk.id)
        };
        let target = TargetDir::open(dst).unwrap();
        let result = apply_plan(&target, &plan, false, &mut fetch);
        (plan, result)
    }

    fn dirs_for_a_run() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        (tmp, src, dst)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn sync_makes_any_target_a_mirror_and_a_second_run_writes_nothing(
            a in prop::collection::vec(spec(), 0..40),
            muts in prop::option::weighted(0.8, prop::collection::vec(mutation(), 1..16)),
            interrupt in prop::option::weighted(0.25, 0usize..6),
            checksum: bool,
        ) {
            let opts = DiffOptions {
                checksum,
                ..DiffOptions::default()
            };
            let source_tree = build(&a);
            let target_tree = muts.as_deref().map_or_else(Tree::new, |m| mutate(source_tree.clone(), m, checksum));
            let (_tmp, src, dst) = dirs_for_a_run();
            materialize(&src, &source_tree);
            materialize(&dst, &target_tree);
            // The test's own materialization is right, or nothing below means anything.
            let m = mismatches(&source_tree, &read_tree(&src));
            prop_assert!(m.is_empty(), "source not materialized: {m:#?}");
            let m = mismatches(&target_tree, &read_tree(&dst));
            prop_assert!(m.is_empty(), "target not materialized: {m:#?}");

            if let Some(n) = interrupt {
                // A run that dies part way (here: the n-th chunk cannot be fetched) must
                // leave a target that the next run still converges from.
                let _ = sync_failing_after(&src, &dst, opts, n);
            }
            let (_, effect) = sync_with(&src, &dst, opts);
            let m = mismatches(&source_tree, &read_tree(&dst));
            prop_assert!(m.is_empty(), "target differs from source after sync: {m:#?}");
            let m = mismatches(&source_tree, &read_tree(&src));
            prop_assert!(m.is_empty(), "sync changed the source: {m:#?}");
            prop_assert_eq!(effect.bytes_written, effect.bytes_reused + effect.bytes_fetched);

            let (plan, effect) = sync(&src, &dst);
            prop_assert!(plan.is_noop(), "second plan: {:#?}", plan);
            prop_assert!(!effect.wrote, "second run wrote: {:#?}", plan);
            let m = mismatches(&source_tree, &read_tree(&dst));
            prop_assert!(m.is_empty(), "{m:#?}");
        }
    }

    #[test]
    fn a_symlink_out_of_the_target_is_replaced_not_followed() {
        let (tmp, src, dst) = dirs_for_a_run();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("dir")).unwrap();
        fs::write(outside.join("dir/f"), b"precious").unwrap();
        fs::write(outside.join("file"), b"also precious").unwrap();
        let before = read_tree(&outside);

        let mut source_tree = build(&[]);
        source_tree.insert(
            p("d"),
            Node::Dir {
                mode: 0o755,
                mtime: 1_600_000_000_000_000_001,
            },
        );
        for name in ["f", "g"] {
            source_tree.insert(
                p("d").join(name).unwrap(),
                Node::File {
                    data: format!("new {name}").into_bytes(),
                    mode: 0o644,
                    mtime: 1_600_000_000_000_000_002,
                },
            );
        }
        source_tree.insert(
            p("e"),
            Node::File {
                data: b"new e".to_vec(),
                mode: 0o600,
                mtime: 1_600_000_000_000_000_003,
            },
        );
        materialize(&src, &source_tree);
        fs::create_dir(&dst).unwrap();
        symlink(outside.join("dir"), dst.join("d")).unwrap();
        symlink(outside.join("file"), dst.join("e")).unwrap();

        sync(&src, &dst);
        assert_eq!(
            mismatches(&before, &read_tree(&outside)),
            Vec::<String>::new()
        );
        assert!(fs::symlink_metadata(dst.join("d")).unwrap().is_dir());
        assert!(fs::symlink_metadata(dst.join("e")).unwrap().is_file());
        assert_eq!(
            mismatches(&source_tree, &read_tree(&dst)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_edited_file_fetches_only_the_chunks_around_the_edit() {
        let (_tmp, src, dst) = dirs_for_a_run();
        let old = bytes(200_000, 3);
        let mut new = old.clone();
        new.splice(100_000..100_000, bytes(100, 9));
        let file = |data: Vec<u8>, mtime| Node::File {
            data,
            mode: 0o644,
            mtime,
        };
        let source_tree = Tree::from([(p("f"), file(new, 2_000_000_000_000_000_000))]);
        materialize(&src, &source_tree);
        materialize(
            &dst,
            &Tree::from([(p("f"), file(old, 1_000_000_000_000_000_000))]),
        );

        let (plan, effect) = sync(&src, &dst);
        assert!(
            matches!(&plan.actions[..], [Action::WriteFile { base: Some(_), .. }]),
            "{plan:#?}"
        );
        assert_eq!(effect.bytes_written, 200_100);
        assert!(
            effect.bytes_fetched <= 2 * u64::from(PARAMS.max),
            "{effect:?}"
        );
        assert_eq!(effect.bytes_reused + effect.bytes_fetched, 200_100);
        assert_eq!(
            mismatches(&source_tree, &read_tree(&dst)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_moved_file_is_renamed_not_fetched() {
        let (_tmp, src, dst) = dirs_for_a_run();
        let data = bytes(50_000, 5);
        let source_tree = Tree::from([
            (
                p("d"),
                Node::Dir {
                    mode: 0o755,
                    mtime: 3_000,
                },
            ),
            (
                p("d/new"),
                Node::File {
                    data: data.clone(),
                    mode: 0o600,
                    mtime: 2_000,
                },
            ),
        ]);
        materialize(&src, &source_tree);
        materialize(
            &dst,
            &Tree::from([(
                p("old"),
                Node::File {
                    data,
                    mode: 0o644,
                    mtime: 1_000,
                },
            )]),
        );

        let (plan, effect) = sync(&src, &dst);
        assert!(
            plan.actions
                .iter()
                .any(|a| matches!(a, Action::Rename { from, .. } if *from == p("old"))),
            "{plan:#?}"
        );
        assert_eq!(effect.bytes_fetched, 0);
        assert_eq!(
            mismatches(&source_tree, &read_tree(&dst)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_file_changed_since_the_plan_is_not_renamed_as_a_copy_of_the_source() {
        let (_tmp, src, dst) = dirs_for_a_run();
        let data = bytes(50_000, 6);
        let file = |data: Vec<u8>, mtime| Node::File {
            data,
            mode: 0o644,
            mtime,
        };
        materialize(&src, &Tree::from([(p("new"), file(data.clone(), 2_000))]));
        materialize(&dst, &Tree::from([(p("old"), file(data, 1_000))]));
        let (plan, _) = make_plan(&src, &dst, DiffOptions::default());
        let rename = plan
            .actions
            .iter()
            .find(|a| matches!(a, Action::Rename { .. }))
            .unwrap_or_else(|| panic!("no rename planned: {plan:#?}"));
        // Rewritten behind our back after the plan was made: same size, another mtime.
        materialize(
            &dst,
            &Tree::from([(p("old"), file(bytes(50_000, 7), 1_500))]),
        );
        let target = TargetDir::open(&dst).unwrap();
        let err = apply_action(&target, rename).unwrap_err();
        assert!(
            matches!(&err, Error::Precondition { path, .. } if *path == p("old")),
            "{err}"
        );
        assert!(dst.join("old").exists() && !dst.join("new").exists());
    }

    #[test]
    fn a_temp_file_left_by_a_crash_does_not_block_removing_its_dir() {
        let (_tmp, src, dst) = dirs_for_a_run();
        materialize(&src, &Tree::new());
        materialize(
            &dst,
            &Tree::from([(
                p("gone"),
                Node::Dir {
                    mode: 0o755,
                    mtime: 1_000,
                },
            )]),
        );
        // What a crash between creating a temp file and committing it leaves behind.
        fs::write(
            dst.join("gone")
                .join(format!("{}1-0badc0de-0", crate::target::TEMP_PREFIX)),
            b"torn",
        )
        .unwrap();

        sync(&src, &dst);
        assert_eq!(
            mismatches(&Tree::new(), &read_tree(&dst)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn mtimes_before_the_epoch_and_odd_nanoseconds_round_trip() {
        let (_tmp, src, dst) = dirs_for_a_run();
        let source_tree = Tree::from([
            (
                p("d"),
                Node::Dir {
                    mode: 0o700,
                    mtime: -86_400_000_000_001,
                },
            ),
            (
                p("d/f"),
                Node::File {
                    data: b"old".to_vec(),
                    mode: 0o600,
                    mtime: -1_500_000_000,
                },
            ),
            (
                p("d/l"),
                Node::Link {
                    to: "f".into(),
                    mtime: -1,
                },
            ),
            (
                p("g"),
                Node::File {
                    data: vec![],
                    mode: 0o755,
                    mtime: 999_999_999,
                },
            ),
        ]);
        materialize(&src, &source_tree);
        materialize(&dst, &Tree::new());
        sync(&src, &dst);
        assert_eq!(
            mismatches(&source_tree, &read_tree(&dst)),
            Vec::<String>::new()
        );
        let (plan, effect) = sync(&src, &dst);
        assert!(plan.actions.is_empty() && !effect.wrote, "{plan:#?}");
    }
}
