//! Helpers for live-replication tests: deadline-bound condition waits, a folder replicated
//! in-process under a `FolderSupervisor`, and a `ferry watch` child process.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition and fails after
//! [`DEADLINE`] with what the condition last saw (for a mirror, the tree difference).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use ferry_actors::supervisor::GetState;
use ferry_actors::{FolderState, FolderSupervisor, RestartPolicy, Shutdown, Stats, WatchOptions};
use tempfile::TempDir;

use super::{diff_snapshots, ferry_bin, tempdir, try_snapshot, Compare};

/// How long any live condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(10);

/// At most this many differences are listed in a failure message.
const MAX_LISTED: usize = 40;

// ---------------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------------

/// `Ok` when `dst` mirrors `src` (names, kinds, content, symlink targets, modes, file mtimes);
/// otherwise the differences. A tree changing under the walk counts as not mirrored yet.
pub fn mirror_diff(src: &Path, dst: &Path) -> Result<(), String> {
    let s = try_snapshot(src).map_err(|e| format!("SRC cannot be walked: {e}"))?;
    let d = try_snapshot(dst).map_err(|e| format!("DST cannot be walked (yet): {e}"))?;
    let diffs = diff_snapshots(&s, &d, Compare::MIRROR, ("SRC", "DST"));
    if diffs.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{} is not a mirror of {}: {} difference(s)\n",
        dst.display(),
        src.display(),
        diffs.len()
    );
    for d in diffs.iter().take(MAX_LISTED) {
        let _ = writeln!(msg, "  {d}");
    }
    if diffs.len() > MAX_LISTED {
        let _ = writeln!(msg, "  ... and {} more", diffs.len() - MAX_LISTED);
    }
    Err(msg)
}

/// The number of directories at and below `root`, `root` included (one inotify watch each).
pub fn count_dirs(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        n += 1;
        let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in rd {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let ft = entry
                .file_type()
                .unwrap_or_else(|e| panic!("lstat {}: {e}", entry.path().display()));
            if ft.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    n
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Waiting, in an async context
// ---------------------------------------------------------------------------------------------

/// Polls `check` until it returns `Ok`; after `deadline` panics with `what` and the last `Err`.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let why = match check().await {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}\nlast seen: {why}"
        );
        // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] with a synchronous, cheap `check` (counters, not trees).
pub async fn wait_until(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) {
    wait_for(deadline, what, || std::future::ready(check())).await;
}

/// Waits until `dst` mirrors `src`. The trees are walked on the blocking pool, so that the
/// actors sharing this thread keep running meanwhile.
pub async fn wait_mirror(src: &Path, dst: &Path, what: &str) {
    let (src, dst) = (src.to_owned(), dst.to_owned());
    wait_for(DEADLINE, &format!("DST mirrors SRC after {what}"), || {
        let (s, d) = (src.clone(), dst.clone());
        async move {
            tokio::task::spawn_blocking(move || mirror_diff(&s, &d))
                .await
                .unwrap_or_else(|e| Err(format!("the mirror check panicked: {e}")))
        }
    })
    .await;
}

/// `Ok` when `counter` holds `want`.
pub fn equals(counter: &AtomicU64, want: u64) -> Result<(), String> {
    let have = get(counter);
    if have == want {
        Ok(())
    } else {
        Err(format!("the counter is {have}, not {want}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting, on a plain thread
// ---------------------------------------------------------------------------------------------

/// Polls `check` until it returns `Ok`; after `deadline` panics with `what` and the last `Err`.
pub fn wait_until_blocking(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let start = Instant::now();
    loop {
        let why = match check() {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}\nlast seen: {why}"
        );
        // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// A folder replicated in this process
// ---------------------------------------------------------------------------------------------

/// SRC, DST and a sibling directory outside SRC (on the same file system, for moves in and
/// out), replicated live by a `FolderSupervisor`. Create and use it inside an actix system.
pub struct LiveFolder {
    /// Holds `src`, `dst` and `outside`; deleted on drop.
    _base: TempDir,
    /// The source folder.
    pub src: PathBuf,
    /// The target folder.
    pub dst: PathBuf,
    /// A directory beside SRC, not replicated.
    pub outside: PathBuf,
    /// The pipeline's counters.
    pub stats: Arc<Stats>,
    /// The supervisor.
    pub sup: Addr<FolderSupervisor>,
}

impl LiveFolder {
    /// Fills SRC with `fill`, starts replication (no fsync, no periodic rescans, 20 ms
    /// restart backoff) and waits until the initial sync is done and every directory watched.
    pub async fn start(fill: impl FnOnce(&Path)) -> LiveFolder {
        let base = tempdir();
        let src = base.path().join("src");
        let dst = base.path().join("dst");
        let outside = base.path().join("outside");
        for d in [&src, &dst, &outside] {
            fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        fill(&src);
        let stats = Arc::new(Stats::default());
        // Without fsyncs: durability is not what these tests look at, and fsyncs would
        // slow every step.
        let job = super::one_shot_job("t", &src, &dst);
        let watch = WatchOptions {
            // Periodic rescans would mask a missed event; the tests want to see it.
            rescan_every: None,
            ..WatchOptions::default()
        };
        let policy = RestartPolicy {
            backoff: Duration::from_millis(20),
            ..RestartPolicy::default()
        };
        let sup = FolderSupervisor::new(job, watch, policy, stats.clone(), None).start();
        let folder = LiveFolder {
            _base: base,
            src,
            dst,
            outside,
            stats,
            sup,
        };
        folder.wait_state(FolderState::Live).await;
        folder.wait_mirror("the initial sync").await;
        folder.wait_watches("the initial sync").await;
        folder
    }

    /// The supervisor's view of the folder.
    pub async fn state(&self) -> FolderState {
        self.sup
            .send(GetState)
            .await
            .expect("the supervisor answers GetState")
    }

    /// Waits until the supervisor reports `want`.
    pub async fn wait_state(&self, want: FolderState) {
        let what = format!("the folder is {want:?}");
        wait_for(DEADLINE, &what, || {
            let sup = self.sup.clone();
            let want = want.clone();
            async move {
                match sup.send(GetState).await {
                    Ok(s) if s == want => Ok(()),
                    Ok(s) => Err(format!("the folder is {s:?}")),
                    Err(e) => Err(format!("the supervisor is gone: {e}")),
                }
            }
        })
        .await;
    }

    /// Waits until DST mirrors SRC; `step` names what was just done, for the failure message.
    pub async fn wait_mirror(&self, step: &str) {
        wait_mirror(&self.src, &self.dst, step).await;
    }

    /// Waits until the Watcher holds exactly one watch per directory of SRC (SRC included),
    /// and returns that number.
    pub async fn wait_watches(&self, step: &str) -> u64 {
        let want = count_dirs(&self.src);
        let what = format!("one watch per SRC directory ({want}) after {step}");
        wait_until(DEADLINE, &what, || equals(&self.stats.watches, want)).await;
        want
    }

    /// Waits until DST mirrors SRC and every directory is watched; returns the watch count.
    pub async fn settle(&self, step: &str) -> u64 {
        self.wait_mirror(step).await;
        self.wait_watches(step).await
    }

    /// Path `rel` under SRC.
    pub fn s(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }

    /// Path `rel` under DST.
    pub fn d(&self, rel: &str) -> PathBuf {
        self.dst.join(rel)
    }

    /// Shuts the folder down and checks that the supervisor answers in time and stops.
    pub async fn shutdown(self) {
        let done = tokio::time::timeout(
            DEADLINE,
            self.sup.send(Shutdown {
                deadline: Duration::from_secs(10),
            }),
        )
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the supervisor is gone before answering Shutdown: {e}"),
            Err(_) => panic!("Shutdown did not return within {DEADLINE:?}"),
        }
        assert_eq!(self.state().await, FolderState::Stopped);
    }
}

// ---------------------------------------------------------------------------------------------
// A `ferry watch` process
// ---------------------------------------------------------------------------------------------

/// A running `ferry watch SRC DST`, its stderr going to a file. Killed on drop if still running.
pub struct WatchProcess {
    child: Child,
    stderr_path: PathBuf,
    command: String,
}

impl WatchProcess {
    /// Starts `ferry watch SRC DST EXTRA…`, logging at the default level to `stderr_path`.
    pub fn spawn(src: &Path, dst: &Path, extra: &[&str], stderr_path: &Path) -> WatchProcess {
        let stderr = File::create(stderr_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", stderr_path.display()));
        let mut cmd = Command::new(ferry_bin());
        cmd.arg("watch").arg(src).arg(dst).args(extra);
        // A developer's FERRY_LOG would change what stderr shows; colours would garble matching.
        cmd.env_remove("FERRY_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let command = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        WatchProcess {
            child,
            stderr_path: stderr_path.to_owned(),
            command,
        }
    }

    /// Everything the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "command: {}\n--- stderr ---\n{}",
            self.command,
            self.stderr()
        )
    }

    /// Panics, with the process's stderr, if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("ferry watch exited early ({status})\n{}", self.describe());
        }
    }

    /// Waits until DST mirrors SRC, failing early if the process exits.
    pub fn wait_mirror(&mut self, src: &Path, dst: &Path, step: &str) {
        let what = format!("DST mirrors SRC after {step}");
        let start = Instant::now();
        loop {
            self.assert_running();
            let why = match mirror_diff(src, dst) {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                start.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting until {what}\nlast seen: {why}\n{}",
                self.describe()
            );
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// How many inotify instances the process holds (file descriptors on `anon_inode:inotify`).
    pub fn inotify_instances(&self) -> usize {
        let dir = PathBuf::from(format!("/proc/{}/fd", self.child.id()));
        let fds = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        fds.flatten()
            .filter(|fd| {
                fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify")
            })
            .count()
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT)
            .unwrap_or_else(|e| panic!("kill -INT {pid:?}: {e}"));
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .unwrap_or_else(|e| panic!("kill -TERM {pid:?}: {e}"));
    }

    /// Waits for the process to exit and returns its status and stderr; panics after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> (ExitStatus, String) {
        let mut status = None;
        wait_until_blocking(deadline, "ferry watch exits", || {
            status = self.child.try_wait().expect("try_wait");
            match status {
                Some(_) => Ok(()),
                None => Err(format!("still running\n{}", self.describe())),
            }
        });
        (status.expect("set when the wait succeeded"), self.stderr())
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        // Only a failed test leaves the process running; do not leave it behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
