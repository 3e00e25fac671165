//! `bench_watch`: change-to-replica latency, burst throughput and idle cost of `ferry watch`.
//!
//! Spawns the real `ferry watch SRC DST` binary on fresh directories and measures, from the
//! outside (nothing but the file system and `/proc` is observed):
//!
//! 1. **single-file latency** — `--trials` times (100): a new 4 KiB file is written
//!    *directly* into SRC (`File::create` + one `write_all` + close, the realistic case; no
//!    temp name, no rename), then DST is polled (`stat` every ~50 µs, or `yield_now` with
//!    `--spin`) until the file is there at its full size. The clock starts right before
//!    `File::create` and stops when the `stat` sees the complete file. Ferry installs files
//!    atomically (temp file + fsync + rename), so a file under its final name is complete.
//!    One trial at a time: the next starts `--gap` (50 ms) after the previous one was seen.
//!    Run twice, on separate ferry instances: default (durable: fsync) and `--no-fsync`.
//! 2. **burst** — `--bursts` times (5): 1,000 files of 1–4 KiB are written as fast as
//!    possible into a *new* subdirectory of SRC (contents prepared before the clock starts;
//!    the clock starts right before the `mkdir`, the first write), then DST is polled until
//!    all 1,000 are present at full size. Median and max are reported. Before each burst
//!    the same files are written into an unwatched directory next to SRC (timed apart, not
//!    part of the target) to show what the file system alone costs.
//! 3. **idle CPU** — a 10,000-file tree (the workload generator's `full` tree, ≈270 MiB, or
//!    with `--idle-tree light` the same tree with every file capped at 4 KiB, ≈33 MiB) is
//!    generated, `ferry watch` started on it, and once the initial sync is done (DST equals
//!    SRC and a probe file round-trips) the process's CPU time (utime + stime of all its
//!    threads, `/proc/PID/stat`, in `getconf CLK_TCK` ticks) is taken over an idle window of
//!    `--idle-secs` (10 s), reported as % of one core, with its RSS (`VmRSS`) at that point.
//!
//! Every phase ends with SIGTERM to ferry, which must exit 0, and a full comparison of DST
//! with SRC (names, kinds, sizes, contents: [`ferry_examples::compare`]); a difference, a
//! crash, a non-zero exit or a timeout aborts the benchmark loudly (exit status 3).
//!
//! Targets (PASS/MISS; a MISS does not change the exit status): single file p50 ≤ 10 ms and
//! p99 ≤ 50 ms (durable fsync included); burst of 1,000 ≤ 1 s; idle CPU ≤ 1 % of a core.
//!
//! Run by hand (never in CI):
//!
//! ```text
//! cargo build --release -p ferry-node
//! cargo run --release -p ferry-examples --bin bench_watch -- [--quick] [--json]
//!     [--phases latency,burst,idle] [--trials N] [--bursts N] [--idle-secs S]
//!     [--idle-tree full|light] [--workdir DIR] [--ferry PATH] [--ferry-arg ARG]… [--keep]
//! ```

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_examples::benchkit::{
    self, fresh_dir, loud, max, median, percentile, setup, verdict, verify, ArgParser, Failure,
    Result,
};
use ferry_examples::compare::compare_trees;
use ferry_examples::procfs::{self, CpuTicks, SwitchDelta};
use ferry_examples::workload::{Rng, Scale, TreePlan, TreeStats, KIB, MIB};
use serde_json::{json, Value};

/// Target: single-file latency p50 ≤ this many ms.
const TARGET_P50_MS: f64 = 10.0;
/// Target: single-file latency p99 ≤ this many ms.
const TARGET_P99_MS: f64 = 50.0;
/// Target: a burst of 1,000 files replicated within this many seconds.
const TARGET_BURST_S: f64 = 1.0;
/// Target: idle CPU ≤ this % of one core.
const TARGET_IDLE_CPU_PCT: f64 = 1.0;

/// Size of the single-file latency probes.
const LATENCY_FILE_SIZE: usize = 4 * KIB as usize;
/// Burst file sizes are uniform in this range.
const BURST_SIZES: (u64, u64) = (KIB, 4 * KIB);
/// Cap on file sizes of the light idle tree.
const LIGHT_MAX_SIZE: u64 = 4 * KIB;
/// Sleep between two `stat`s of DST in the default polling mode.
const POLL_SLEEP: Duration = Duration::from_micros(50);
/// Give up on one latency trial after this long.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Give up on one burst after this long.
const BURST_TIMEOUT: Duration = Duration::from_secs(120);
/// Give up waiting for the initial sync after this long.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long ferry may take to exit after SIGTERM (its own shutdown deadline is 60 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause after each burst so the next one starts on a quiet pipeline.
const BURST_SETTLE: Duration = Duration::from_millis(500);
/// Pause between "initial sync done" and the start of the idle window.
const IDLE_SETTLE: Duration = Duration::from_millis(500);
/// What ferry logs (at its default level for `watch`) once the initial sync is applied.
const READY_MARKER: &str = "initial sync complete";

const USAGE: &str = "\
bench_watch: latency, burst throughput and idle cost of `ferry watch`

USAGE:
    cargo run --release -p ferry-examples --bin bench_watch -- [OPTIONS]

OPTIONS:
    --quick              smoke run: 20 trials, 2 bursts, 3 s idle window, light idle tree
                         (explicit options below still win)
    --phases LIST        comma-separated subset of latency,burst,idle (default: all three)
    --trials N           single-file trials per mode (default 100)
    --bursts N           bursts (default 5)
    --burst-files N      files per burst (default 1000)
    --idle-secs S        idle window in seconds (default 10)
    --idle-tree T        full = the workload generator's full tree (10,000 files, 500 dirs,
                         ~270 MiB; default), light = the same tree with files capped at 4 KiB
    --gap MS             pause between single-file trials, in ms (default 50)
    --spin               poll DST with std::thread::yield_now() instead of 50 µs sleeps
    --seed N             seed of the generated contents (default 1)
    --workdir DIR        where the phases' SRC/DST pairs and ferry logs are created (as
                         DIR/<phase>/{src,dst,ferry.log}; those are replaced, nothing is
                         deleted at the end). Default: a fresh directory under /tmp, removed
                         at the end
    --ferry PATH         ferry binary (default: <workspace>/target/release/ferry)
    --ferry-arg ARG      extra argument for every `ferry watch` (repeatable), e.g. -v,
                         --debounce=1ms
    --json               print one machine-readable JSON object on stdout instead of tables
    --keep               keep the default temporary directory (logs included)
    -h, --help           show this help

Exit status: 0 when every phase completed and was verified (missed targets are reported as
MISS but do not change the status), 1 on usage/setup errors, 3 when ferry crashed, timed
out, exited non-zero after SIGTERM or left a DST that differs from SRC.
";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Latency,
    Burst,
    Idle,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Latency, Phase::Burst, Phase::Idle];

    fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "latency" => Ok(Phase::Latency),
            "burst" => Ok(Phase::Burst),
            "idle" => Ok(Phase::Idle),
            other => Err(format!(
                "unknown phase {other:?} (expected latency, burst or idle)"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdleTree {
    Full,
    Light,
}

impl IdleTree {
    fn as_str(self) -> &'static str {
        match self {
            IdleTree::Full => "full",
            IdleTree::Light => "light",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            IdleTree::Full => "workload generator full tree (sizes log-normal 1 KiB..2 MiB)",
            IdleTree::Light => "workload generator full tree with every file capped at 4 KiB",
        }
    }
}

#[derive(Debug)]
struct Args {
    quick: bool,
    phases: BTreeSet<Phase>,
    trials: usize,
    bursts: usize,
    burst_files: usize,
    idle_secs: f64,
    idle_tree: IdleTree,
    gap: Duration,
    spin: bool,
    seed: u64,
    workdir: Option<PathBuf>,
    ferry: Option<PathBuf>,
    ferry_args: Vec<OsString>,
    json: bool,
    keep: bool,
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut quick = false;
    let mut phases: Option<BTreeSet<Phase>> = None;
    let mut trials: Option<usize> = None;
    let mut bursts: Option<usize> = None;
    let mut burst_files = 1000usize;
    let mut idle_secs: Option<f64> = None;
    let mut idle_tree: Option<IdleTree> = None;
    let mut gap_ms = 50u64;
    let mut spin = false;
    let mut seed = 1u64;
    let mut workdir = None;
    let mut ferry = None;
    let mut ferry_args = Vec::new();
    let mut json = false;
    let mut keep = false;

    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => quick = true,
            "--phases" => {
                let v = p.text("--phases")?;
                let set = v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| Phase::parse(s.trim()))
                    .collect::<std::result::Result<BTreeSet<_>, _>>()?;
                if set.is_empty() {
                    return Err("--phases needs at least one phase".into());
                }
                phases = Some(set);
            }
            "--trials" => trials = Some(p.positive("--trials")?),
            "--bursts" => bursts = Some(p.positive("--bursts")?),
            "--burst-files" => burst_files = p.positive("--burst-files")?,
            "--idle-secs" => {
                let s: f64 = p.number("--idle-secs")?;
                if !(s.is_finite() && s > 0.0) {
                    return Err("--idle-secs must be a positive number of seconds".into());
                }
                idle_secs = Some(s);
            }
            "--idle-tree" => {
                idle_tree = Some(match p.text("--idle-tree")?.as_str() {
                    "full" => IdleTree::Full,
                    "light" => IdleTree::Light,
                    other => {
                        return Err(format!(
                            "unknown --idle-tree {other:?} (expected full or light)"
                        ))
                    }
                });
            }
            "--gap" => gap_ms = p.number("--gap")?,
            "--spin" => spin = true,
            "--seed" => seed = p.number("--seed")?,
            "--workdir" => workdir = Some(PathBuf::from(p.value("--workdir")?)),
            "--ferry" => ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--ferry-arg" => ferry_args.push(p.value("--ferry-arg")?),
            "--json" => json = true,
            "--keep" => keep = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(Args {
        quick,
        phases: phases.unwrap_or_else(|| Phase::ALL.into_iter().collect()),
        trials: trials.unwrap_or(if quick { 20 } else { 100 }),
        bursts: bursts.unwrap_or(if quick { 2 } else { 5 }),
        burst_files,
        idle_secs: idle_secs.unwrap_or(if quick { 3.0 } else { 10.0 }),
        idle_tree: idle_tree.unwrap_or(if quick {
            IdleTree::Light
        } else {
            IdleTree::Full
        }),
        gap: Duration::from_millis(gap_ms),
        spin,
        seed,
        workdir,
        ferry,
        ferry_args,
        json,
        keep,
    }))
}

// ---------------------------------------------------------------------------------------------
// Tools and small helpers
// ---------------------------------------------------------------------------------------------

fn ferry_version(ferry: &Path) -> String {
    Command::new(ferry)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The last `n` characters of a file (for error messages), or a note why there are none.
fn file_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let s = s.trim_end();
            let count = s.chars().count();
            if count <= n {
                s.to_string()
            } else {
                format!("…{}", s.chars().skip(count - n).collect::<String>())
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Writes `data` to a new file at `path`: create, one `write_all`, close.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(setup(format!("creating {}", path.display())))?;
    f.write_all(data)
        .map_err(setup(format!("writing {}", path.display())))
}

/// `len` bytes of random content.
fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// How DST is polled.
#[derive(Clone, Copy, Debug)]
struct Poll {
    spin: bool,
}

impl Poll {
    fn pause(self) {
        if self.spin {
            std::thread::yield_now();
        } else {
            std::thread::sleep(POLL_SLEEP);
        }
    }

    fn describe(self) -> &'static str {
        if self.spin {
            "stat(DST/name) in a loop with std::thread::yield_now() between tries"
        } else {
            "stat(DST/name) in a loop with 50 µs sleeps between tries (~60-110 µs per round)"
        }
    }
}

/// `true` if `path` exists with exactly `size` bytes.
fn complete(path: &Path, size: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() == size)
}

// ---------------------------------------------------------------------------------------------
// The ferry process
// ---------------------------------------------------------------------------------------------

/// Follows a growing log file, looking for a marker in what was appended.
struct LogTail {
    path: PathBuf,
    offset: u64,
    carry: Vec<u8>,
}

impl LogTail {
    fn new(path: &Path) -> Self {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
            carry: Vec::new(),
        }
    }

    /// `true` once `needle` has appeared in the file (reads only what is new).
    fn seen(&mut self, needle: &str) -> bool {
        let Ok(mut f) = File::open(&self.path) else {
            return false;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut new = Vec::new();
        if f.read_to_end(&mut new).is_err() {
            return false;
        }
        self.offset += new.len() as u64;
        let mut hay = std::mem::take(&mut self.carry);
        hay.extend_from_slice(&new);
        let n = needle.as_bytes();
        if hay.windows(n.len()).any(|w| w == n) {
            return true;
        }
        let keep = hay.len().saturating_sub(n.len());
        self.carry = hay.split_off(keep);
        false
    }
}

/// A running `ferry watch`; killed (SIGKILL) if dropped without [`Watch::stop`].
struct Watch {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    what: String,
    command: String,
}

impl Watch {
    fn start(
        ferry: &Path,
        src: &Path,
        dst: &Path,
        flags: &[OsString],
        log: &Path,
        what: &str,
    ) -> Result<Self> {
        let out = File::create(log).map_err(setup(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(setup(format!("duplicating {}", log.display())))?;
        let mut cmd = Command::new(ferry);
        cmd.arg("watch").arg(src).arg(dst).args(flags);
        let command = std::iter::once(ferry.as_os_str())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(setup(format!("{what}: spawning {command}")))?;
        let pid = child.id();
        eprintln!("bench_watch: {what}: started pid {pid}: {command}");
        Ok(Watch {
            child: Some(child),
            pid,
            log: log.to_path_buf(),
            what: what.to_string(),
            command,
        })
    }

    /// A wrong result: `headline` in a loud banner, followed by the tail of ferry's log.
    fn wrong_with_log(&self, headline: &str) -> Failure {
        Failure::Wrong(format!(
            "{}\n--- {} (tail) ---\n{}",
            loud(headline),
            self.log.display(),
            file_tail(&self.log, 4000)
        ))
    }

    fn died(&self, status: ExitStatus, when: &str) -> Failure {
        self.wrong_with_log(&format!(
            "{}: ferry watch exited {when} ({status}): {}",
            self.what, self.command
        ))
    }

    /// Fails if ferry is no longer running.
    fn check(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(Failure::Wrong(format!(
                "{}: ferry already stopped",
                self.what
            )));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(self.died(status, "unexpectedly"))
            }
            Err(e) => Err(Failure::Setup(format!(
                "{}: waiting for ferry: {e}",
                self.what
            ))),
        }
    }

    fn timeout(&self, what: &str) -> Failure {
        self.wrong_with_log(&format!("{}: timed out: {what}", self.what))
    }

    /// SIGTERM, then waits for the exit, which must be status 0. Returns how long it took.
    fn stop(mut self) -> Result<Duration> {
        self.check()?;
        let child = self.child.as_mut().expect("checked");
        let start = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::TERM,
        )
        .map_err(setup(format!("{}: sending SIGTERM", self.what)))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let took = start.elapsed();
                    self.child = None;
                    if status.success() {
                        return Ok(took);
                    }
                    return Err(self.died(status, "with a failure after SIGTERM"));
                }
                Ok(None) if start.elapsed() > STOP_TIMEOUT => {
                    return Err(self.timeout(&format!(
                        "ferry did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed)"
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    return Err(Failure::Setup(format!(
                        "{}: waiting for ferry: {e}",
                        self.what
                    )))
                }
            }
        }
    }

    /// Waits until `path` exists with `size` bytes; returns the instant it was seen.
    fn wait_file(
        &mut self,
        path: &Path,
        size: u64,
        poll: Poll,
        limit: Duration,
    ) -> Result<Instant> {
        let start = Instant::now();
        let mut rounds = 0u32;
        loop {
            if complete(path, size) {
                return Ok(Instant::now());
            }
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(512) {
                self.check()?;
                if start.elapsed() > limit {
                    return Err(self.timeout(&format!(
                        "{} did not appear with {size} bytes within {limit:?}",
                        path.display()
                    )));
                }
            }
            poll.pause();
        }
    }

    /// Waits until every path is complete (each with its size); returns the instant the last
    /// one was seen. Files never disappear from DST in this benchmark, so each is checked
    /// until it is first seen complete, in order.
    fn wait_all(
        &mut self,
        files: &[(PathBuf, u64)],
        poll: Poll,
        limit: Duration,
    ) -> Result<Instant> {
        let start = Instant::now();
        let mut cursor = 0;
        let mut rounds = 0u32;
        while cursor < files.len() {
            let (path, size) = &files[cursor];
            if complete(path, *size) {
                cursor += 1;
                continue;
            }
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(512) {
                self.check()?;
                if start.elapsed() > limit {
                    return Err(self.timeout(&format!(
                        "only {cursor} of {} files complete in DST after {limit:?} (next missing: {})",
                        files.len(),
                        path.display()
                    )));
                }
            }
            poll.pause();
        }
        Ok(Instant::now())
    }

    /// Waits for the initial sync to finish: ferry's "initial sync complete" log line (or,
    /// failing that, DST equal to SRC), DST equal to SRC, and a probe file that round-trips
    /// (created in SRC until one shows up in DST, then removed until it is gone from DST).
    /// Returns the seconds from the call to DST being equal.
    fn wait_ready(&mut self, src: &Path, dst: &Path, poll: Poll) -> Result<f64> {
        let start = Instant::now();
        let mut tail = LogTail::new(&self.log);
        let mut last_compare = Instant::now();
        // 1. The log line, with a slow fallback to comparing (ferry run with -q logs nothing).
        loop {
            self.check()?;
            if tail.seen(READY_MARKER) {
                break;
            }
            if last_compare.elapsed() > Duration::from_secs(2) {
                last_compare = Instant::now();
                if compare_trees(src, dst).is_ok_and(|r| r.is_equal()) {
                    break;
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(self.timeout("waiting for the initial sync"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // 2. DST equals SRC.
        loop {
            self.check()?;
            let report = compare_trees(src, dst)
                .map_err(setup(format!("{}: comparing DST with SRC", self.what)));
            if report?.is_equal() {
                break;
            }
            if start.elapsed() > READY_TIMEOUT {
                verify(&self.what, src, dst)?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let synced = start.elapsed().as_secs_f64();
        // 3. A probe round trip proves the watcher is live.
        let mut rng = Rng::new(0x7072_6f62); // "prob"
        let data = random_bytes(&mut rng, 100);
        let mut probes = Vec::new();
        let probe_start = Instant::now();
        'outer: loop {
            let name = format!("bench-ready-probe-{}", probes.len());
            write_file(&src.join(&name), &data)?;
            probes.push(name);
            let round = Instant::now();
            while round.elapsed() < Duration::from_secs(1) {
                if probes
                    .iter()
                    .any(|p| complete(&dst.join(p), data.len() as u64))
                {
                    break 'outer;
                }
                self.check()?;
                poll.pause();
            }
            if probe_start.elapsed() > Duration::from_secs(60) {
                return Err(self.timeout("a probe file written into SRC never reached DST"));
            }
        }
        for p in &probes {
            fs::remove_file(src.join(p)).map_err(setup(format!("removing probe {p}")))?;
        }
        let gone = Instant::now();
        while probes.iter().any(|p| dst.join(p).exists()) {
            self.check()?;
            if gone.elapsed() > Duration::from_secs(60) {
                return Err(
                    self.timeout("a probe file removed from SRC was never removed from DST")
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(synced)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "bench_watch: {}: killing ferry (pid {}) after a failure",
                    self.what, self.pid
                );
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Stops ferry (SIGTERM, exit 0 required) and verifies DST both before and after.
fn finish_phase(watch: Watch, what: &str, src: &Path, dst: &Path) -> Result<(f64, u64)> {
    verify(&format!("{what} (live, before SIGTERM)"), src, dst)?;
    let stop = watch.stop()?;
    let files = verify(&format!("{what} (after exit)"), src, dst)?.files;
    eprintln!(
        "bench_watch: {what}: ferry exited 0 {:.0} ms after SIGTERM; DST verified equal to SRC ({files} files)",
        stop.as_secs_f64() * 1e3
    );
    Ok((stop.as_secs_f64(), files))
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Percentiles of one latency run, in ms.
#[derive(Clone, Copy, Debug, Default)]
struct Pcts {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    min: Option<f64>,
    mean: Option<f64>,
}

impl Pcts {
    fn of(ms: &[f64]) -> Self {
        let mut v = ms.to_vec();
        v.sort_by(f64::total_cmp);
        Pcts {
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied(),
            min: v.first().copied(),
            mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

struct Env<'a> {
    args: &'a Args,
    ferry: &'a Path,
    workdir: &'a Path,
    poll: Poll,
}

impl Env<'_> {
    /// Fresh `<workdir>/<name>/{src}` (DST is left to ferry to create) and the log path.
    fn phase_dirs(&self, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
        let base = self.workdir.join(name);
        fresh_dir(&base)?;
        let src = base.join("src");
        fs::create_dir(&src).map_err(setup(format!("creating {}", src.display())))?;
        Ok((src, base.join("dst"), base.join("ferry.log")))
    }

    fn flags(&self, no_fsync: bool) -> Vec<OsString> {
        let mut v = Vec::new();
        if no_fsync {
            v.push(OsString::from("--no-fsync"));
        }
        v.extend(self.args.ferry_args.iter().cloned());
        v
    }
}

/// One single-file latency run (one ferry instance).
struct LatencyRun {
    mode: &'static str,
    command: String,
    log: PathBuf,
    /// Latency of each trial, ms.
    ms: Vec<f64>,
    /// Time spent in create + write + close, µs, per trial.
    write_us: Vec<f64>,
    /// Wall-clock start of each trial (µs since the epoch), to line up with logs/strace.
    start_unix_us: Vec<u64>,
    stop_s: f64,
}

fn latency_run(env: &Env<'_>, no_fsync: bool) -> Result<LatencyRun> {
    let mode = if no_fsync { "no-fsync" } else { "durable" };
    let what = format!("latency ({mode})");
    let (src, dst, log) = env.phase_dirs(&format!("latency-{mode}"))?;
    let mut watch = Watch::start(env.ferry, &src, &dst, &env.flags(no_fsync), &log, &what)?;
    let command = watch.command.clone();
    watch.wait_ready(&src, &dst, env.poll)?;
    let mut rng = Rng::derive(env.args.seed, 0x006c_6174 + u64::from(no_fsync)); // "lat"
    let n = env.args.trials;
    let mut ms = Vec::with_capacity(n);
    let mut write_us = Vec::with_capacity(n);
    let mut start_unix_us = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("lat-{i:04}.dat");
        let data = random_bytes(&mut rng, LATENCY_FILE_SIZE);
        let (sp, dp) = (src.join(&name), dst.join(&name));
        let wall = SystemTime::now();
        let t0 = Instant::now();
        write_file(&sp, &data)?;
        let written = t0.elapsed();
        let seen = watch.wait_file(&dp, data.len() as u64, env.poll, TRIAL_TIMEOUT)?;
        let lat = seen.duration_since(t0).as_secs_f64() * 1e3;
        ms.push(lat);
        write_us.push(written.as_secs_f64() * 1e6);
        start_unix_us.push(unix_micros(wall));
        if (i + 1).is_multiple_of(25) || i + 1 == n {
            let p = Pcts::of(&ms);
            eprintln!(
                "  {mode:<9} trial {:>4}/{n}: last {lat:7.2} ms   so far p50 {:6.2} ms, max {:7.2} ms",
                i + 1,
                p.p50.unwrap_or(f64::NAN),
                p.max.unwrap_or(f64::NAN)
            );
        }
        std::thread::sleep(env.args.gap);
    }
    let (stop_s, _) = finish_phase(watch, &what, &src, &dst)?;
    Ok(LatencyRun {
        mode,
        command,
        log,
        ms,
        write_us,
        start_unix_us,
        stop_s,
    })
}

/// The burst phase.
struct BurstRun {
    command: String,
    log: PathBuf,
    files: usize,
    /// First write → all present in DST, seconds, per burst.
    total_s: Vec<f64>,
    /// Time to write all files into SRC, seconds, per burst.
    write_s: Vec<f64>,
    /// Time to write the same files into an unwatched directory next to SRC just before
    /// each burst, seconds: what the file system alone costs.
    baseline_s: Vec<f64>,
    bytes: Vec<u64>,
    start_unix_us: Vec<u64>,
    stop_s: f64,
}

fn burst_run(env: &Env<'_>) -> Result<BurstRun> {
    let what = "burst";
    let (src, dst, log) = env.phase_dirs("burst")?;
    let mut watch = Watch::start(env.ferry, &src, &dst, &env.flags(false), &log, what)?;
    let command = watch.command.clone();
    watch.wait_ready(&src, &dst, env.poll)?;
    let mut rng = Rng::derive(env.args.seed, 0x6275_7273); // "burs"
    let n = env.args.burst_files;
    let mut run = BurstRun {
        command,
        log,
        files: n,
        total_s: Vec::new(),
        write_s: Vec::new(),
        baseline_s: Vec::new(),
        bytes: Vec::new(),
        start_unix_us: Vec::new(),
        stop_s: 0.0,
    };
    for b in 0..env.args.bursts {
        let sub = format!("burst-{b:02}");
        // Everything but the writes is prepared before the clock starts.
        let contents: Vec<(String, Vec<u8>)> = (0..n)
            .map(|j| {
                let size = rng.range(BURST_SIZES.0, BURST_SIZES.1) as usize;
                (format!("f{j:05}.txt"), random_bytes(&mut rng, size))
            })
            .collect();
        let src_dir = src.join(&sub);
        let src_paths: Vec<PathBuf> = contents.iter().map(|(n, _)| src_dir.join(n)).collect();
        let expect: Vec<(PathBuf, u64)> = contents
            .iter()
            .map(|(name, d)| (dst.join(&sub).join(name), d.len() as u64))
            .collect();
        let bytes: u64 = expect.iter().map(|(_, s)| s).sum();
        // Baseline: the same writes into a directory ferry does not watch.
        let base_dir = src
            .parent()
            .unwrap_or(&src)
            .join(format!("unwatched-{b:02}"));
        let t0 = Instant::now();
        fs::create_dir(&base_dir).map_err(setup(format!("creating {}", base_dir.display())))?;
        for (name, d) in &contents {
            write_file(&base_dir.join(name), d)?;
        }
        let baseline = t0.elapsed();
        std::thread::sleep(BURST_SETTLE);
        let wall = SystemTime::now();
        let t0 = Instant::now();
        fs::create_dir(&src_dir).map_err(setup(format!("creating {}", src_dir.display())))?;
        for (p, (_, d)) in src_paths.iter().zip(&contents) {
            write_file(p, d)?;
        }
        let written = t0.elapsed();
        let seen = watch.wait_all(&expect, env.poll, BURST_TIMEOUT)?;
        let total = seen.duration_since(t0);
        eprintln!(
            "  burst {}/{}: {n} files ({:.1} MiB) written in {:6.1} ms (unwatched: {:6.1} ms), \
             all in DST after {:7.1} ms",
            b + 1,
            env.args.bursts,
            bytes as f64 / MIB as f64,
            written.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        run.total_s.push(total.as_secs_f64());
        run.write_s.push(written.as_secs_f64());
        run.baseline_s.push(baseline.as_secs_f64());
        run.bytes.push(bytes);
        run.start_unix_us.push(unix_micros(wall));
        std::thread::sleep(BURST_SETTLE);
    }
    run.stop_s = finish_phase(watch, what, &src, &dst)?.0;
    Ok(run)
}

/// The idle phase.
struct IdleRun {
    command: String,
    log: PathBuf,
    tree: IdleTree,
    stats: TreeStats,
    gen_s: f64,
    initial_sync_s: f64,
    window_s: f64,
    clk_tck: u64,
    ticks: CpuTicks,
    cpu_pct: f64,
    switches: SwitchDelta,
    rss_kib: u64,
    hwm_kib: u64,
    log_bytes_during_window: u64,
    stop_s: f64,
}

fn idle_run(env: &Env<'_>) -> Result<IdleRun> {
    let what = "idle";
    let clk_tck = procfs::clock_ticks_per_second().map_err(setup("getconf CLK_TCK"))?;
    let (src, dst, log) = env.phase_dirs("idle")?;
    let tree = env.args.idle_tree;
    let t = Instant::now();
    let mut plan = TreePlan::new(Scale::Full, env.args.seed);
    if tree == IdleTree::Light {
        plan = plan.with_max_file_size(LIGHT_MAX_SIZE);
    }
    let stats = plan.write(&src, 0).map_err(setup(format!(
        "generating the idle tree in {}",
        src.display()
    )))?;
    rustix::fs::sync();
    let gen_s = t.elapsed().as_secs_f64();
    eprintln!(
        "bench_watch: idle: generated {} files / {} dirs / {:.1} MiB ({} tree) in {gen_s:.2} s",
        stats.files,
        stats.dirs,
        stats.bytes as f64 / MIB as f64,
        tree.as_str()
    );
    let mut watch = Watch::start(env.ferry, &src, &dst, &env.flags(false), &log, what)?;
    let command = watch.command.clone();
    let initial_sync_s = watch.wait_ready(&src, &dst, env.poll)?;
    eprintln!(
        "bench_watch: idle: initial sync done (DST equal to SRC) {initial_sync_s:.2} s after start; \
         measuring an idle window of {} s",
        env.args.idle_secs
    );
    let pid = watch.pid;
    let proc_err = |e: io::Error| Failure::Setup(format!("idle: reading /proc/{pid}: {e}"));
    let log_len = || fs::metadata(&log).map_or(0, |m| m.len());
    // Let the last replicated change (the probe's removal) finish its logging and let
    // the process settle before the window opens.
    std::thread::sleep(IDLE_SETTLE);
    let (log0, sw0) = (log_len(), procfs::thread_switches(pid).map_err(proc_err)?);
    let c0 = procfs::cpu_ticks(pid).map_err(proc_err)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(env.args.idle_secs));
    let c1 = procfs::cpu_ticks(pid).map_err(proc_err)?;
    let window_s = t0.elapsed().as_secs_f64();
    let sw1 = procfs::thread_switches(pid).map_err(proc_err)?;
    let rss_kib = procfs::status_kib(pid, "VmRSS").map_err(proc_err)?;
    let hwm_kib = procfs::status_kib(pid, "VmHWM").map_err(proc_err)?;
    let log_bytes_during_window = log_len().saturating_sub(log0);
    watch.check()?;
    let ticks = c1.since(c0);
    let cpu_pct = ticks.total() as f64 / clk_tck as f64 / window_s * 100.0;
    let switches = SwitchDelta::between(&sw0, &sw1);
    eprintln!(
        "bench_watch: idle: {} ticks (user {}, system {}) in {window_s:.2} s = {cpu_pct:.2} % of a core; \
         threads {} -> {}, {} context switches; RSS {:.1} MiB",
        ticks.total(),
        ticks.user,
        ticks.system,
        switches.threads_before,
        switches.threads_after,
        switches.total(),
        rss_kib as f64 / 1024.0
    );
    let stop_s = finish_phase(watch, what, &src, &dst)?.0;
    Ok(IdleRun {
        command,
        log,
        tree,
        stats,
        gen_s,
        initial_sync_s,
        window_s,
        clk_tck,
        ticks,
        cpu_pct,
        switches,
        rss_kib,
        hwm_kib,
        log_bytes_during_window,
        stop_s,
    })
}

// ---------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------

struct Results {
    ferry: PathBuf,
    version: String,
    workdir: PathBuf,
    mount: Option<procfs::MountInfo>,
    load_before: Option<[f64; 3]>,
    load_after: Option<[f64; 3]>,
    cpus: usize,
    latency: Vec<LatencyRun>,
    burst: Option<BurstRun>,
    idle: Option<IdleRun>,
}

struct Target {
    name: &'static str,
    label: String,
    value: Option<f64>,
    unit: &'static str,
    limit: f64,
}

fn targets(r: &Results) -> Vec<Target> {
    let mut v = Vec::new();
    for run in &r.latency {
        let p = Pcts::of(&run.ms);
        let (n50, n99) = if run.mode == "durable" {
            ("latency_durable_p50_ms", "latency_durable_p99_ms")
        } else {
            ("latency_no_fsync_p50_ms", "latency_no_fsync_p99_ms")
        };
        v.push(Target {
            name: n50,
            label: format!("single file p50 ({})", run.mode),
            value: p.p50,
            unit: "ms",
            limit: TARGET_P50_MS,
        });
        v.push(Target {
            name: n99,
            label: format!("single file p99 ({})", run.mode),
            value: p.p99,
            unit: "ms",
            limit: TARGET_P99_MS,
        });
    }
    if let Some(b) = &r.burst {
        v.push(Target {
            name: "burst_median_s",
            label: format!("burst of {} median", b.files),
            value: median(&b.total_s),
            unit: "s",
            limit: TARGET_BURST_S,
        });
        v.push(Target {
            name: "burst_max_s",
            label: format!("burst of {} max", b.files),
            value: max(&b.total_s),
            unit: "s",
            limit: TARGET_BURST_S,
        });
    }
    if let Some(i) = &r.idle {
        v.push(Target {
            name: "idle_cpu_pct",
            label: "idle CPU (% of one core)".into(),
            value: Some(i.cpu_pct),
            unit: "%",
            limit: TARGET_IDLE_CPU_PCT,
        });
    }
    v
}

const LATENCY_METHOD: &str = "4 KiB file with a new name per trial, written directly into SRC \
    (File::create + one write_all + close); clock from right before File::create until stat() \
    sees DST/name at full size; next trial starts --gap after the previous one was seen; \
    nearest-rank percentiles";
const BURST_METHOD: &str = "files of 1-4 KiB (uniform) written back to back into a new \
    subdirectory of SRC (contents prepared beforehand); clock from right before the mkdir \
    until every file was seen at full size in DST";
const IDLE_METHOD: &str = "utime+stime of all ferry threads (/proc/PID/stat fields 14+15, \
    clock ticks) over the window, after the initial sync and a probe round trip; RSS = VmRSS \
    of /proc/PID/status at the end of the window; the window opens 0.5 s after the probe's \
    removal was seen in DST";

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

fn load_str(l: Option<[f64; 3]>) -> String {
    l.map_or("?".into(), |l| {
        format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
    })
}

fn results_json(args: &Args, r: &Results) -> Value {
    let latency: Vec<Value> = r
        .latency
        .iter()
        .map(|run| {
            let p = Pcts::of(&run.ms);
            json!({
                "mode": run.mode,
                "command": run.command,
                "log": run.log,
                "trials": run.ms.len(),
                "p50_ms": p.p50, "p95_ms": p.p95, "p99_ms": p.p99, "max_ms": p.max,
                "min_ms": p.min, "mean_ms": p.mean,
                "write_us_median": median(&run.write_us),
                "samples_ms": run.ms,
                "write_us": run.write_us,
                "start_unix_us": run.start_unix_us,
                "stop_after_sigterm_s": run.stop_s,
            })
        })
        .collect();
    let burst = r.burst.as_ref().map(|b| {
        json!({
            "command": b.command,
            "log": b.log,
            "files_per_burst": b.files,
            "bursts": b.total_s.len(),
            "median_s": median(&b.total_s),
            "max_s": max(&b.total_s),
            "samples_s": b.total_s,
            "write_samples_s": b.write_s,
            "unwatched_write_samples_s": b.baseline_s,
            "bytes": b.bytes,
            "start_unix_us": b.start_unix_us,
            "stop_after_sigterm_s": b.stop_s,
        })
    });
    let idle = r.idle.as_ref().map(|i| {
        json!({
            "command": i.command,
            "log": i.log,
            "tree": i.tree.as_str(),
            "tree_description": i.tree.describe(),
            "files": i.stats.files,
            "dirs": i.stats.dirs,
            "bytes": i.stats.bytes,
            "generate_s": i.gen_s,
            "initial_sync_s": i.initial_sync_s,
            "window_s": i.window_s,
            "clk_tck": i.clk_tck,
            "user_ticks": i.ticks.user,
            "system_ticks": i.ticks.system,
            "cpu_pct_of_one_core": i.cpu_pct,
            "threads_before": i.switches.threads_before,
            "threads_after": i.switches.threads_after,
            "threads_started": i.switches.started,
            "threads_exited": i.switches.exited,
            "voluntary_switches": i.switches.voluntary,
            "involuntary_switches": i.switches.involuntary,
            "rss_kib": i.rss_kib,
            "peak_rss_kib": i.hwm_kib,
            "log_bytes_during_window": i.log_bytes_during_window,
            "stop_after_sigterm_s": i.stop_s,
        })
    });
    let targets: Vec<Value> = targets(r)
        .iter()
        .map(|t| {
            json!({ "name": t.name, "value": t.value, "unit": t.unit, "limit": t.limit,
                    "result": verdict(t.value, t.limit) })
        })
        .collect();
    json!({
        "benchmark": "bench_watch",
        "ok": true,
        "quick": args.quick,
        "seed": args.seed,
        "ferry": r.ferry,
        "ferry_version": r.version,
        "ferry_extra_args": args.ferry_args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "workdir": r.workdir,
        "filesystem": r.mount.as_ref().map(|m| json!({
            "type": m.fs_type, "mount_point": m.mount_point, "source": m.source })),
        "cpus": r.cpus,
        "load_before": r.load_before,
        "load_after": r.load_after,
        "method": {
            "latency": LATENCY_METHOD,
            "burst": BURST_METHOD,
            "idle": IDLE_METHOD,
            "polling": poll_mode(args).describe(),
            "gap_ms": args.gap.as_secs_f64() * 1e3,
        },
        "latency": latency,
        "burst": burst,
        "idle": idle,
        "targets": targets,
        "verified": true,
    })
}

fn poll_mode(args: &Args) -> Poll {
    Poll { spin: args.spin }
}

fn print_tables(args: &Args, r: &Results) {
    println!();
    println!(
        "bench_watch{} — {} ({})",
        if args.quick { " (quick)" } else { "" },
        r.ferry.display(),
        r.version
    );
    println!(
        "workdir:  {} ({})",
        r.workdir.display(),
        r.mount
            .as_ref()
            .map_or("file system unknown".into(), |m| format!(
                "{} on {}, mounted at {}",
                m.fs_type,
                m.source,
                m.mount_point.display()
            ))
    );
    println!(
        "machine:  {} CPUs; load average before {} / after {}",
        r.cpus,
        load_str(r.load_before),
        load_str(r.load_after)
    );
    println!("polling:  {}", poll_mode(args).describe());
    if !r.latency.is_empty() {
        println!();
        println!(
            "single-file latency: {LATENCY_METHOD} (gap {} ms)",
            args.gap.as_millis()
        );
        println!(
            "{:<10}{:>7}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>12}",
            "mode", "trials", "min", "p50", "p95", "p99", "max", "mean", "write (µs)"
        );
        for run in &r.latency {
            let p = Pcts::of(&run.ms);
            println!(
                "{:<10}{:>7}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>12}   (ms)",
                run.mode,
                run.ms.len(),
                fmt_opt(p.min, 2),
                fmt_opt(p.p50, 2),
                fmt_opt(p.p95, 2),
                fmt_opt(p.p99, 2),
                fmt_opt(p.max, 2),
                fmt_opt(p.mean, 2),
                fmt_opt(median(&run.write_us), 0)
            );
        }
        for run in &r.latency {
            println!("  {}: {}", run.mode, run.command);
        }
    }
    if let Some(b) = &r.burst {
        println!();
        println!("burst: {} files per burst; {BURST_METHOD}", b.files);
        let list = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{:.0}", s * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  {} bursts: median {} ms, max {} ms   (all: {} ms)",
            b.total_s.len(),
            fmt_opt(median(&b.total_s).map(|s| s * 1e3), 1),
            fmt_opt(max(&b.total_s).map(|s| s * 1e3), 1),
            list(&b.total_s)
        );
        println!(
            "  writing the files into SRC alone: median {} ms   (all: {} ms)",
            fmt_opt(median(&b.write_s).map(|s| s * 1e3), 1),
            list(&b.write_s)
        );
        println!(
            "  the same writes into an unwatched directory (file-system floor): median {} ms   (all: {} ms)",
            fmt_opt(median(&b.baseline_s).map(|s| s * 1e3), 1),
            list(&b.baseline_s)
        );
        println!("  {}", b.command);
    }
    if let Some(i) = &r.idle {
        println!();
        println!("idle: {IDLE_METHOD}");
        println!(
            "  tree: {} — {} files, {} dirs, {:.1} MiB; initial sync done {:.2} s after start",
            i.tree.describe(),
            i.stats.files,
            i.stats.dirs,
            i.stats.bytes as f64 / MIB as f64,
            i.initial_sync_s
        );
        println!(
            "  window {:.2} s: {} ticks (user {}, system {}) at {} ticks/s = {:.2} % of one core",
            i.window_s,
            i.ticks.total(),
            i.ticks.user,
            i.ticks.system,
            i.clk_tck,
            i.cpu_pct
        );
        println!(
            "  threads {} at the start, {} at the end ({} started, {} exited); {} voluntary + {} \
             involuntary context switches of the threads seen ({:.1}/s); {} log bytes",
            i.switches.threads_before,
            i.switches.threads_after,
            i.switches.started,
            i.switches.exited,
            i.switches.voluntary,
            i.switches.involuntary,
            i.switches.total() as f64 / i.window_s,
            i.log_bytes_during_window
        );
        println!(
            "  RSS {:.1} MiB (VmRSS at the end of the window; peak VmHWM {:.1} MiB)",
            i.rss_kib as f64 / 1024.0,
            i.hwm_kib as f64 / 1024.0
        );
        println!("  {}", i.command);
    }
    println!();
    println!(
        "{:<30}{:>12}{:>12}{:>8}",
        "target", "value", "limit", "result"
    );
    for t in targets(r) {
        let value = t.value.map_or("-".into(), |v| match t.unit {
            "s" => format!("{:.3} s", v),
            "%" => format!("{:.2} %", v),
            _ => format!("{:.2} ms", v),
        });
        let limit = match t.unit {
            "s" => format!("≤ {:.0} s", t.limit),
            "%" => format!("≤ {:.0} %", t.limit),
            _ => format!("≤ {:.0} ms", t.limit),
        };
        println!(
            "{:<30}{:>12}{:>12}{:>8}",
            t.label,
            value,
            limit,
            verdict(t.value, t.limit)
        );
    }
    println!("\nevery phase: ferry exited 0 after SIGTERM and DST was verified equal to SRC");
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn run(args: Args) -> Result<()> {
    let ferry = benchkit::find_ferry(args.ferry.as_deref(), "--ferry PATH")?;
    benchkit::in_workdir(
        "bench_watch",
        args.workdir.as_deref(),
        "ferry-bench-watch-",
        args.keep,
        args.json,
        |workdir| bench(&args, workdir, ferry),
    )
}

fn bench(args: &Args, workdir: PathBuf, ferry: PathBuf) -> Result<()> {
    let load_before = procfs::load_average().ok();
    let version = ferry_version(&ferry);
    eprintln!(
        "bench_watch: workdir {}; ferry {} ({version}); load average {}",
        workdir.display(),
        ferry.display(),
        load_str(load_before)
    );
    let env = Env {
        args,
        ferry: &ferry,
        workdir: &workdir,
        poll: poll_mode(args),
    };
    let mut latency = Vec::new();
    let mut burst = None;
    let mut idle = None;
    for phase in &args.phases {
        match phase {
            Phase::Latency => {
                for no_fsync in [false, true] {
                    latency.push(latency_run(&env, no_fsync)?);
                }
            }
            Phase::Burst => burst = Some(burst_run(&env)?),
            Phase::Idle => idle = Some(idle_run(&env)?),
        }
    }
    let results = Results {
        mount: procfs::mount_of(&workdir),
        ferry,
        version,
        workdir,
        load_before,
        load_after: procfs::load_average().ok(),
        cpus: procfs::cpus(),
        latency,
        burst,
        idle,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results_json(args, &results)).unwrap_or_default()
        );
    } else {
        print_tables(args, &results);
    }
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        "bench_watch",
        USAGE,
        parse_args(std::env::args_os().skip(1)),
        |a| a.json,
        run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> std::result::Result<Option<Args>, String> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn parses_arguments() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!(
            (a.trials, a.bursts, a.burst_files, a.idle_secs, a.idle_tree),
            (100, 5, 1000, 10.0, IdleTree::Full)
        );
        assert_eq!(a.phases.len(), 3);
        let q = parse(&["--quick", "--trials=7"]).unwrap().unwrap();
        assert_eq!(
            (q.trials, q.bursts, q.idle_secs, q.idle_tree),
            (7, 2, 3.0, IdleTree::Light)
        );
        let a = parse(&[
            "--phases",
            "idle,latency",
            "--ferry-arg",
            "-v",
            "--ferry-arg=--debounce=1ms",
            "--idle-tree",
            "full",
            "--gap",
            "10",
            "--spin",
            "--json",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            a.phases.iter().copied().collect::<Vec<_>>(),
            vec![Phase::Latency, Phase::Idle]
        );
        assert_eq!(
            a.ferry_args,
            vec![OsString::from("-v"), "--debounce=1ms".into()]
        );
        assert_eq!(a.gap, Duration::from_millis(10));
        assert!(a.spin && a.json);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--trials", "0"]).is_err());
        assert!(parse(&["--phases", "nope"]).is_err());
        assert!(parse(&["--idle-secs", "-1"]).is_err());
        assert!(parse(&["--idle-tree", "huge"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn latency_percentiles() {
        let p = Pcts::of(&[5.0, 1.0, 3.0]);
        assert_eq!((p.p50, p.max, p.min), (Some(3.0), Some(5.0), Some(1.0)));
        assert_eq!(p.mean, Some(3.0));
        assert_eq!(Pcts::of(&[]).p99, None);
    }

    #[test]
    fn log_tail_finds_markers_across_reads() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        let mut t = LogTail::new(&p);
        assert!(!t.seen("initial sync complete"));
        fs::write(&p, "a\nb initial sync com").unwrap();
        assert!(!t.seen("initial sync complete"));
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"plete; following changes\n").unwrap();
        assert!(t.seen("initial sync complete"));
    }
}
