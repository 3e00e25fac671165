//! `ferry sync SRC DST`: checks the arguments, runs the one-shot pipeline and reports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ferry_actors::persist::{SourceStore, TargetStore};
use ferry_actors::{run_sync_kept, FolderId, Kept, Stats, SyncJob, SyncReport, TargetSpec};
use ferry_engine::{IgnoreRules, RelPath};
use ferry_node::remote::client::Retry;
use ferry_node::runtime::state::replication_stores;
use serde::Serialize;

use crate::cli::SyncArgs;
use crate::progress::Progress;
use crate::stdout;

/// How a finished sync ended, mapped to the exit code.
pub enum Outcome {
    /// Everything was mirrored.
    Complete,
    /// Some entries were skipped (named in warnings and in the summary).
    Partial,
}

/// Source and target after validation: both absolute, neither inside the other.
pub struct Checked {
    /// The source directory.
    pub src: PathBuf,
    /// The target directory (a scratch stand-in for a dry run into a missing target).
    pub dst: PathBuf,
    /// Keeps a stand-in empty target alive for a dry run into a target that does not exist.
    _scratch: Option<tempfile::TempDir>,
}

fn check(args: &SyncArgs) -> Result<Checked> {
    check_paths(&args.src, &args.dst, args.dry_run)
}

/// Validates SRC and DST (creating DST when its parent exists, unless `dry_run`).
pub fn check_paths(src_arg: &Path, dst_arg: &Path, dry_run: bool) -> Result<Checked> {
    let src = check_source(src_arg)?;
    let mut missing = false;
    let dst = match std::fs::symlink_metadata(dst_arg) {
        Ok(_) => {
            let dst = std::fs::canonicalize(dst_arg)
                .with_context(|| format!("cannot resolve target {}", dst_arg.display()))?;
            if !dst.is_dir() {
                bail!("target {} exists and is not a directory", dst_arg.display());
            }
            dst
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = parent_of(dst_arg);
            let parent = std::fs::canonicalize(&parent).with_context(|| {
                format!(
                    "the parent {} of target {} does not exist",
                    parent.display(),
                    dst_arg.display()
                )
            })?;
            let name = dst_arg
                .file_name()
                .with_context(|| format!("target {} has no final name", dst_arg.display()))?;
            let dst = parent.join(name);
            missing = true;
            dst
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot reach target {}", dst_arg.display()))
        }
    };
    if dst == src {
        bail!(
            "source and target are the same directory ({})",
            src.display()
        );
    }
    if dst.starts_with(&src) {
        bail!(
            "target {} is inside source {}: it would copy itself",
            dst.display(),
            src.display()
        );
    }
    if src.starts_with(&dst) {
        bail!(
            "source {} is inside target {}: mirroring would delete it",
            src.display(),
            dst.display()
        );
    }
    let mut scratch = None;
    if missing && dry_run {
        scratch =
            Some(tempfile::tempdir().context("cannot create a scratch directory for the dry run")?);
    } else if missing {
        std::fs::create_dir(&dst)
            .with_context(|| format!("cannot create target {}", dst.display()))?;
    }
    if !dry_run {
        check_writable(&dst)?;
    }
    let dst = scratch.as_ref().map_or(dst, |s| s.path().to_owned());
    Ok(Checked {
        src,
        dst,
        _scratch: scratch,
    })
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Fails early, with the reason, when the target directory cannot be written. Asks the
/// kernel rather than writing a probe file, so a run that changes nothing writes nothing.
fn check_writable(dst: &Path) -> Result<()> {
    use rustix::fs::{access, statvfs, Access, StatVfsMountFlags};
    let vfs = statvfs(dst).with_context(|| format!("cannot examine target {}", dst.display()))?;
    if vfs.f_flag.contains(StatVfsMountFlags::RDONLY) {
        bail!(
            "target {} is not writable: its file system is mounted read-only",
            dst.display()
        );
    }
    access(dst, Access::WRITE_OK | Access::EXEC_OK)
        .map_err(std::io::Error::from)
        .with_context(|| format!("target {} is not writable", dst.display()))
}

/// Validates SRC: an existing directory this process can list (alone when the target is on
/// another node).
pub fn check_source(src_arg: &Path) -> Result<PathBuf> {
    let src = std::fs::canonicalize(src_arg).with_context(|| {
        format!(
            "source {} does not exist or cannot be reached",
            src_arg.display()
        )
    })?;
    if !src.is_dir() {
        bail!("source {} is not a directory", src_arg.display());
    }
    // Before anything is created: a source that cannot be listed mirrors nothing.
    std::fs::read_dir(&src).with_context(|| format!("cannot read source {}", src_arg.display()))?;
    Ok(src)
}

/// Runs `ferry sync`.
/// How long a finished run waits for its link to a remote target to close cleanly.
const LINK_CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

pub fn run(args: &SyncArgs, home: Option<&Path>, quiet: bool) -> Result<Outcome> {
    let remote = crate::remote_target::parse(&args.dst)?;
    let (src, dst, _checked) = match &remote {
        Some(_) => (check_source(&args.src)?, PathBuf::new(), None),
        None => {
            let checked = check(args)?;
            (checked.src.clone(), checked.dst.clone(), Some(checked))
        }
    };
    let folder = match &remote {
        Some(url) => url.folder.clone(),
        None => FolderId::new("sync")?,
    };
    let ignore = IgnoreRules::with_file(&args.ignore, &src).context("invalid ignore rules")?;
    let target_name = match &remote {
        Some(url) => url.to_string(),
        None => dst.display().to_string(),
    };
    let job = SyncJob {
        folder,
        source: src,
        target: dst,
        checksum: args.checksum,
        dry_run: args.dry_run,
        durable: !args.no_fsync,
        params: args.chunk_sizes,
        ignore: ignore.clone(),
        remote: false,
    };
    // A dry run writes nothing, state included.
    let (kept, epoch) = match args.state.as_deref().filter(|_| !args.dry_run) {
        Some(dir) => {
            let (kept, epoch) = open_kept(dir, &job.source, &target_name, remote.is_none())?;
            (Some(kept), Some(epoch))
        }
        None => (None, None),
    };
    let stats = Arc::new(Stats::default());
    let is_remote = remote.is_some();
    let spec = match remote {
        Some(url) => {
            let wanted = crate::remote_target::Wanted {
                params: args.chunk_sizes,
                checksum: args.checksum,
                dry_run: args.dry_run,
                ignore,
                retry: Retry {
                    first: false,
                    max_failures: Some(8),
                },
                epoch,
            };
            crate::remote_target::spec(url, home, wanted, stats.clone())?
        }
        None => TargetSpec::Local,
    };
    let progress = Progress::start(stats.clone(), !quiet && !args.json && !args.dry_run);
    let system = actix::System::new();
    let report = system.block_on(run_sync_kept(job, &spec, stats, kept));
    // A remote target's link closes its TLS session as its pipeline winds down; let it,
    // so the server sees a clean end (bounded: a dead peer does not hold the exit up).
    system.block_on(ferry_node::remote::client::links_closed(
        LINK_CLOSE_DEADLINE,
    ));
    drop(progress);
    let report = report.with_context(|| {
        format!(
            "sync of {} to {} failed",
            args.src.display(),
            args.dst.display()
        )
    })?;
    if is_remote && !args.json {
        // A local Applier logs each as it happens; a remote one logs on its own node.
        for s in &report.skipped {
            tracing::warn!(path = %s.path, "not applied at the target: {}", s.reason);
        }
    }
    print_report(args, &report)?;
    Ok(if report.skipped.is_empty() && report.stats.skipped == 0 {
        Outcome::Complete
    } else {
        Outcome::Partial
    })
}

/// The stores of `--state DIR` for the sync of `src` to `target` (a local directory when
/// `local`), and the kept source index's epoch.
fn open_kept(dir: &Path, src: &Path, target: &str, local: bool) -> Result<(Kept, u64)> {
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        bail!(
            "cannot create the state directory {}: a file is there, not a directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    // The error's message already names its cause; chaining it would print it twice.
    let db = ferry_node::runtime::open_state(dir)
        .map_err(|e| anyhow::anyhow!("cannot open the state in {}: {e}", dir.display()))?;
    let key = format!("sync/{}/{target}", src.display());
    let (source, epoch, target) = replication_stores(&db, &key)
        .with_context(|| format!("cannot read the state in {}", dir.display()))?;
    let kept = Kept {
        source: Arc::new(source) as Arc<dyn SourceStore>,
        target: local.then(|| Arc::new(target) as Arc<dyn TargetStore>),
    };
    Ok((kept, epoch))
}

#[derive(Serialize)]
struct Change<'a> {
    change: &'static str,
    path: &'a str,
    /// A renamed file's old path.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    dry_run: bool,
    #[serde(flatten)]
    stats: &'a ferry_actors::StatsSnapshot,
    not_applied: &'a [ferry_actors::messages::SkippedPath],
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<Vec<Change<'a>>>,
}

fn print_report(args: &SyncArgs, report: &SyncReport) -> Result<()> {
    let changes: Option<Vec<Change<'_>>> = report.plan.as_ref().map(|plan| {
        plan.actions
            .iter()
            .filter_map(|a| {
                a.change().map(|c| Change {
                    change: c.as_str(),
                    path: a.path().as_str(),
                    from: a.renamed_from().map(RelPath::as_str),
                })
            })
            .collect()
    });
    // A dry run applies nothing: its counts are those of the changes it lists.
    let mut stats = report.stats.clone();
    if let (true, Some(changes)) = (args.dry_run, &changes) {
        let count = |kind: &str| changes.iter().filter(|c| c.change == kind).count() as u64;
        stats.created = count("created");
        stats.updated = count("updated");
        stats.metadata_only = count("metadata");
        stats.renamed = count("renamed");
        stats.removed = count("removed");
    }
    let mut out = String::new();
    if args.json {
        let j = JsonReport {
            dry_run: args.dry_run,
            stats: &stats,
            not_applied: &report.skipped,
            changes,
        };
        writeln!(out, "{}", serde_json::to_string(&j)?)?;
        stdout::print(&out)?;
        return Ok(());
    }
    if let Some(changes) = &changes {
        for c in changes {
            match c.from {
                Some(from) => writeln!(
                    out,
                    "{:<9} {} (from {})",
                    c.change,
                    stdout::shown(c.path),
                    stdout::shown(from)
                )?,
                None => writeln!(out, "{:<9} {}", c.change, stdout::shown(c.path))?,
            }
        }
    }
    if args.stats {
        let s = &stats;
        writeln!(out, "entries scanned:     {}", s.entries_scanned)?;
        writeln!(out, "created:             {}", s.created)?;
        writeln!(out, "updated:             {}", s.updated)?;
        writeln!(out, "metadata only:       {}", s.metadata_only)?;
        writeln!(out, "renamed:             {}", s.renamed)?;
        writeln!(out, "removed:             {}", s.removed)?;
        writeln!(out, "skipped:             {}", s.skipped)?;
        writeln!(out, "bytes written:       {}", s.bytes_written)?;
        writeln!(
            out,
            "chunk data sent:     {} ({} chunks)",
            s.bytes_sent, s.chunks_sent
        )?;
        writeln!(out, "metadata sent:       {}", s.bytes_metadata)?;
        writeln!(
            out,
            "bytes reused:        {} ({} chunks)",
            s.bytes_reused, s.chunks_reused
        )?;
        writeln!(out, "zero runs (not sent): {}", s.bytes_zero)?;
        if s.wire_bytes_out + s.wire_bytes_in > 0 {
            writeln!(
                out,
                "wire bytes out / in: {} / {}",
                s.wire_bytes_out, s.wire_bytes_in
            )?;
            writeln!(out, "reconnects:          {}", s.reconnects)?;
        }
    }
    stdout::print(&out)?;
    Ok(())
}
