//! `bench_restart`: a `ferry run` node restarted over a large, unchanged folder must come back
//! in sync from its stat cache alone, without reading any file content again.
//!
//! Generates a deterministic tree of many small files (default 100,000 files of a few hundred
//! bytes to a few KiB in ~1,000 directories), writes a local-only node config (one send
//! folder, one local target, no rescans) and measures, in this order:
//!
//! 1. ferry initial: spawn `ferry run --config …` until `/api/status` says the target is
//!    `in-sync` with `applied_seq >= source_seq`; then SIGTERM and wait for the exit;
//! 2. rsync initial: `rsync -a --delete SRC/ DST_R/` into an empty `DST_R`;
//! 3. for each of `--runs` rounds: ferry restart (spawn with the same config and state until
//!    in sync again, read the target's counters and the peak RSS, SIGTERM), then an rsync
//!    no-op (the same rsync command again: its quick check of size and mtime).
//!
//! A restart that hashed any bytes, or created or rewrote any file, is a wrong result: the
//! report is printed and the exit status is 3.
//!
//! Run by hand (never in CI):
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node -p ferry-examples
//! /work/target-bench/release/bench_restart [--files N] [--runs R] [--dir DIR] [--json]
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_examples::benchkit::{
    self, fresh_dir, median, ratio, setup, verify, ArgParser, Failure, Result,
};
use ferry_examples::procfs;
use ferry_examples::tools::{self, file_tail, run_timed};
use ferry_examples::workload::{FileSpec, Rng, Scale, TreePlan, TreeStats, KIB, MIB};
use serde_json::{json, Value};

/// The folder id in the generated config.
const FOLDER_ID: &str = "bench";
/// Smallest generated file.
const MIN_FILE: u64 = 256;
/// Largest generated file.
const MAX_FILE: u64 = 6 * KIB;
/// Median generated file size (log-normal).
const MEDIAN_FILE: f64 = 1024.0;
/// Sigma of the log-normal file size.
const SIGMA_FILE: f64 = 0.8;
/// Files per directory when `--dirs` is not given.
const FILES_PER_DIR: usize = 100;
/// Directory nesting below the root.
const MAX_DEPTH: usize = 3;
/// File name extensions; `.dat` and `.bin` files get incompressible pieces.
const EXTS: &[&str] = &["rs", "py", "txt", "json", "md", "toml", "dat", "bin"];
/// How often `/api/status` is polled while waiting for the target to be in sync.
const POLL: Duration = Duration::from_millis(25);
/// How long a node may take to print its dashboard address, and to exit after SIGTERM.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one rsync run may take.
const RSYNC_DEADLINE: Duration = Duration::from_secs(1800);

const USAGE: &str = "\
bench_restart: restart a `ferry run` node over an unchanged folder of many small files and
check that it reaches in-sync again without reading file content (bytes_hashed = 0);
`rsync -a --delete` initial and no-op runs are the baseline.

USAGE:
    bench_restart [OPTIONS]

OPTIONS:
    --files N        files in the tree (default 100000; 256 B ..= 6 KiB each, median 1 KiB)
    --dirs N         directories (default files / 100)
    --seed N         workload seed (default 1)
    --dir DIR        where src, dst-ferry, dst-rsync, state, home and ferry.toml are made
                     (those are replaced; nothing is removed at the end).
                     Default: a fresh temporary directory under /tmp, removed at the end.
    --ferry PATH     ferry binary (default: `ferry` next to this binary, else
                     <workspace>/target/release/ferry)
    --runs R         restart (and rsync no-op) rounds; medians are reported (default 3)
    --timeout SECS   how long one node may take to reach in-sync (default 900)
    --fsync          let the node fsync (default: fsync = false, as rsync does not either)
    --no-verify      skip comparing ferry's target with SRC after the initial sync
    --json           print one JSON object on stdout instead of the report
    --keep           keep the default temporary directory
    -h, --help       show this help

Exit status: 0 when every restart reached in-sync with no content hashed and no file created
or rewritten, 1 on usage or setup errors, 3 when ferry failed, produced a wrong target, or a
restart re-read content or rewrote files.
";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    files: usize,
    dirs: Option<usize>,
    seed: u64,
    dir: Option<PathBuf>,
    ferry: Option<PathBuf>,
    runs: usize,
    timeout: Duration,
    fsync: bool,
    verify: bool,
    json: bool,
    keep: bool,
}

impl Args {
    fn dirs(&self) -> usize {
        self.dirs.unwrap_or((self.files / FILES_PER_DIR).max(1))
    }
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        files: 100_000,
        dirs: None,
        seed: 1,
        dir: None,
        ferry: None,
        runs: 3,
        timeout: Duration::from_secs(900),
        fsync: false,
        verify: true,
        json: false,
        keep: false,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--files" => args.files = p.positive("--files")?,
            "--dirs" => args.dirs = Some(p.positive("--dirs")?),
            "--seed" => args.seed = p.number("--seed")?,
            "--dir" | "--workdir" => args.dir = Some(PathBuf::from(p.value(&flag)?)),
            "--ferry" => args.ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--runs" => args.runs = p.positive("--runs")?,
            "--timeout" => args.timeout = Duration::from_secs(p.positive("--timeout")? as u64),
            "--fsync" => args.fsync = true,
            "--no-verify" => args.verify = false,
            "--json" => args.json = true,
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------

/// Plans `files` small files in `dirs` directories nested up to [`MAX_DEPTH`] levels, all a
/// pure function of `seed`. Contents come from the shared workload generator, so every file
/// is distinct.
fn plan_tree(files: usize, dirs: usize, seed: u64) -> TreePlan {
    let mut rng = Rng::derive(seed, 0x7265_7374); // "rest"
    let mut dir_paths: Vec<PathBuf> = Vec::with_capacity(dirs);
    // depth[k] is the depth of candidate parent k; candidate 0 is the root.
    let mut depth = vec![0usize];
    for i in 0..dirs {
        let parent = loop {
            let k = rng.index(dir_paths.len() + 1);
            if depth[k] < MAX_DEPTH {
                break k;
            }
        };
        let name = format!("d{i:04}");
        let path = match parent {
            0 => PathBuf::from(name),
            k => dir_paths[k - 1].join(name),
        };
        dir_paths.push(path);
        depth.push(depth[parent] + 1);
    }
    let specs = (0..files)
        .map(|i| {
            let dir = &dir_paths[rng.index(dir_paths.len())];
            let ext = *rng.choose(EXTS);
            let size = (MEDIAN_FILE.ln() + SIGMA_FILE * rng.gauss()).exp() as u64;
            FileSpec {
                path: dir.join(format!("f{i:06}.{ext}")),
                size: size.clamp(MIN_FILE, MAX_FILE),
                mixed: matches!(ext, "dat" | "bin"),
                content_seed: rng.next_u64(),
            }
        })
        .collect();
    // `TreePlan::write` only reads the directories and files given here; the preset is not
    // consulted, so any value will do.
    TreePlan {
        scale: Scale::Small,
        seed,
        dirs: dir_paths,
        files: specs,
    }
}

// ---------------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------------

/// `text` as a TOML basic string (JSON's escapes are a subset of TOML's).
fn toml_string(text: &str) -> String {
    Value::from(text).to_string()
}

/// The path as UTF-8, for the config file.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Failure::Setup(format!("{} is not valid UTF-8", path.display())))
}

/// Writes the local-only node config: one send folder, one local target, no rescans.
fn write_config(
    file: &Path,
    home: &Path,
    state: &Path,
    src: &Path,
    dst: &Path,
    fsync: bool,
) -> Result<()> {
    let text = format!(
        "# generated by bench_restart\n\
         [node]\nname = \"bench-restart\"\nhome = {}\nstate_dir = {}\n\
         dashboard = \"127.0.0.1:0\"\nfsync = {fsync}\n\n\
         [[folder]]\nid = \"{FOLDER_ID}\"\npath = {}\nrole = \"send\"\ntargets = [{}]\n\
         rescan_interval = \"0\"\n",
        toml_string(utf8(home)?),
        toml_string(utf8(state)?),
        toml_string(utf8(src)?),
        toml_string(utf8(dst)?),
    );
    fs::write(file, text).map_err(setup(format!("writing {}", file.display())))
}

/// `GET path` on `addr` with `Connection: close`; the body of a `200 OK`.
fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of headers in the response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(io::Error::other(format!("GET {path}: {status}")));
    }
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if chunked {
        dechunk(body).ok_or_else(|| io::Error::other("malformed chunked body"))
    } else {
        Ok(body.to_owned())
    }
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// What one node run observed when its target was first seen in sync.
#[derive(Clone, Debug)]
struct Observation {
    /// Spawn to the `ready` line.
    ready: Duration,
    /// Spawn to the first status that said in sync.
    in_sync: Duration,
    /// The target's entry of `/api/status` at that moment.
    target: Value,
    /// `VmHWM` of the node at that moment.
    peak_rss_kib: Option<u64>,
    /// SIGTERM to exit.
    stop: Duration,
    /// How it exited.
    exit: String,
    /// `state.redb` after the exit.
    state_db_bytes: Option<u64>,
}

impl Observation {
    fn counter(&self, name: &str) -> u64 {
        self.target["counters"][name].as_u64().unwrap_or(0)
    }
}

/// A running `ferry run`, killed when dropped.
struct NodeProcess {
    child: Child,
    spawned: Instant,
    /// stdout lines with the moment each was read.
    lines: mpsc::Receiver<(Instant, String)>,
    log: PathBuf,
    ready: Option<Duration>,
}

impl NodeProcess {
    fn start(ferry: &Path, config: &Path, log: &Path) -> Result<Self> {
        let log_file =
            fs::File::create(log).map_err(setup(format!("creating {}", log.display())))?;
        let mut cmd = Command::new(ferry);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(setup(format!("spawning {} run", ferry.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Failure::Setup("ferry run: no stdout pipe".into()))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Reading to the end also keeps the pipe drained, so the node never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Ok(NodeProcess {
            child,
            spawned,
            lines,
            log: log.to_path_buf(),
            ready: None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn failed(&self, why: String) -> Failure {
        Failure::Wrong(format!("{why}{}", file_tail("ferry run log", &self.log)))
    }

    /// Fails if the node has exited.
    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failed(format!("ferry run exited early ({status})"))),
            Err(e) => Err(Failure::Setup(format!("checking on ferry run: {e}"))),
        }
    }

    /// Takes the stdout lines read so far, noting when `ready` came; returns the dashboard
    /// address if one of them announced it.
    fn drain_lines(&mut self) -> Option<SocketAddr> {
        let mut dashboard = None;
        while let Ok((at, line)) = self.lines.try_recv() {
            let line = line.trim();
            if line == "ready" {
                self.ready = Some(at - self.spawned);
            } else if let Some(url) = line.strip_prefix("dashboard ") {
                let addr = url
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                dashboard = addr.parse().ok();
            }
        }
        dashboard
    }

    /// Waits for the `dashboard http://ADDR/` line.
    fn wait_dashboard(&mut self) -> Result<SocketAddr> {
        loop {
            if let Some(addr) = self.drain_lines() {
                return Ok(addr);
            }
            self.check_alive()?;
            if self.spawned.elapsed() > PROCESS_TIMEOUT {
                return Err(self.failed(format!(
                    "ferry run printed no `dashboard http://ADDR/` line within {PROCESS_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls `/api/status` until the folder's target is `in-sync` and has applied every
    /// change the source has seen; returns the target's entry and when it was seen.
    fn wait_in_sync(&mut self, addr: SocketAddr, timeout: Duration) -> Result<(Duration, Value)> {
        let mut last = String::from("(no status read yet)");
        loop {
            self.check_alive()?;
            match http_get(addr, "/api/status") {
                Ok(body) => {
                    let seen = self.spawned.elapsed();
                    let status: Value = serde_json::from_str(&body).map_err(|e| {
                        self.failed(format!("/api/status is not JSON ({e}): {body:.300}"))
                    })?;
                    if let Some(target) = folder_target(&status) {
                        let state = target["state"]["state"].as_str().unwrap_or("?");
                        let applied = target["applied_seq"].as_u64().unwrap_or(0);
                        let source = target["source_seq"].as_u64().unwrap_or(u64::MAX);
                        if state == "in-sync" && applied >= source {
                            return Ok((seen, target.clone()));
                        }
                        if state == "failed" {
                            return Err(
                                self.failed(format!("the target failed: {}", target["state"]))
                            );
                        }
                        last = format!(
                            "state {} applied_seq {applied} source_seq {source}",
                            target["state"]
                        );
                    }
                }
                Err(e) => last = format!("GET /api/status: {e}"),
            }
            if self.spawned.elapsed() > timeout {
                return Err(self.failed(format!(
                    "the target was not in sync within {timeout:?}; last seen: {last}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took and the status
    /// (`None` if the node had to be killed).
    fn stop(mut self) -> (Duration, Option<ExitStatus>) {
        let start = Instant::now();
        // The node may already be gone; then the signal fails harmlessly.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return (start.elapsed(), Some(status)),
                Ok(None) if start.elapsed() <= PROCESS_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) | Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return (start.elapsed(), None);
                }
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first target of folder [`FOLDER_ID`] in an `/api/status` document.
fn folder_target(status: &Value) -> Option<&Value> {
    status["folders"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == FOLDER_ID)?["targets"]
        .get(0)
}

/// One node run: spawn, wait until in sync, read the peak RSS, stop, measure the state db.
fn run_node(
    what: &str,
    ferry: &Path,
    config: &Path,
    log: &Path,
    state_db: &Path,
    timeout: Duration,
) -> Result<Observation> {
    rustix::fs::sync();
    let mut node = NodeProcess::start(ferry, config, log)?;
    let addr = node.wait_dashboard()?;
    let (in_sync, target) = node
        .wait_in_sync(addr, timeout)
        .map_err(|f| Failure::Wrong(format!("{what}: {}", f.message())))?;
    let peak_rss_kib = procfs::status_kib(node.pid(), "VmHWM").ok();
    node.drain_lines();
    let ready = node.ready.unwrap_or(in_sync);
    let (stop, status) = node.stop();
    let exit = status.map_or_else(
        || format!("still running {PROCESS_TIMEOUT:?} after SIGTERM, killed"),
        |s| s.to_string(),
    );
    Ok(Observation {
        ready,
        in_sync,
        target,
        peak_rss_kib,
        stop,
        exit,
        state_db_bytes: fs::metadata(state_db).ok().map(|m| m.len()),
    })
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

struct Report {
    args: Args,
    workdir: PathBuf,
    stats: TreeStats,
    gen_secs: f64,
    ferry: PathBuf,
    rsync: PathBuf,
    rsync_version: String,
    initial: Observation,
    restarts: Vec<Observation>,
    rsync_initial: f64,
    rsync_noops: Vec<f64>,
    verified: bool,
}

impl Report {
    fn restart_secs(&self) -> Vec<f64> {
        self.restarts
            .iter()
            .map(|o| o.in_sync.as_secs_f64())
            .collect()
    }

    fn restart_median(&self) -> Option<f64> {
        median(&self.restart_secs())
    }

    /// The sum of a counter over every restart.
    fn restart_total(&self, counter: &str) -> u64 {
        self.restarts.iter().map(|o| o.counter(counter)).sum()
    }

    /// Why the restarts were wrong, if they were.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, o) in self.restarts.iter().enumerate() {
            let round = i + 1;
            let hashed = o.counter("bytes_hashed");
            if hashed != 0 {
                out.push(format!(
                    "restart {round}: bytes_hashed = {hashed} (content was read again)"
                ));
            }
            let rewritten = o.counter("files_created") + o.counter("files_updated");
            if rewritten != 0 {
                out.push(format!(
                    "restart {round}: files_created + files_updated = {rewritten} (files were \
                     rewritten on the target)"
                ));
            }
        }
        let stops = std::iter::once(("initial".to_string(), &self.initial)).chain(
            self.restarts
                .iter()
                .enumerate()
                .map(|(i, o)| (format!("restart {}", i + 1), o)),
        );
        for (what, o) in stops {
            if o.exit != "exit status: 0" {
                out.push(format!("{what}: the node did not stop cleanly: {}", o.exit));
            }
        }
        out
    }

    fn json(&self) -> Value {
        let obs = |o: &Observation| {
            json!({
                "ready_s": o.ready.as_secs_f64(),
                "in_sync_s": o.in_sync.as_secs_f64(),
                "stop_s": o.stop.as_secs_f64(),
                "exit": o.exit,
                "peak_rss_kib": o.peak_rss_kib,
                "state_db_bytes": o.state_db_bytes,
                "counters": o.target["counters"],
                "applied_seq": o.target["applied_seq"],
                "source_seq": o.target["source_seq"],
            })
        };
        let restart = self.restart_median();
        let problems = self.problems();
        json!({
            "benchmark": "bench_restart",
            "ok": problems.is_empty(),
            "problems": problems,
            "files": self.args.files,
            "dirs": self.args.dirs(),
            "seed": self.args.seed,
            "runs": self.args.runs,
            "fsync": self.args.fsync,
            "workdir": self.workdir,
            "workload": { "files": self.stats.files, "dirs": self.stats.dirs,
                          "bytes": self.stats.bytes, "generate_s": self.gen_secs },
            "tools": { "ferry": self.ferry, "ferry_build": tools::modified(&self.ferry),
                       "rsync": self.rsync, "rsync_version": self.rsync_version },
            "ferry_initial": obs(&self.initial),
            "ferry_restarts": self.restarts.iter().map(obs).collect::<Vec<_>>(),
            "ferry_restart_median_s": restart,
            "rsync_initial_s": self.rsync_initial,
            "rsync_noop_s": self.rsync_noops,
            "rsync_noop_median_s": median(&self.rsync_noops),
            "ratios": {
                "restart_over_initial": ratio(restart, Some(self.initial.in_sync.as_secs_f64())),
                "restart_over_rsync_noop": ratio(restart, median(&self.rsync_noops)),
            },
            "restart_bytes_hashed": self.restart_total("bytes_hashed"),
            "verified": self.verified,
        })
    }

    fn print(&self) {
        let a = &self.args;
        let mib = |b: u64| b as f64 / MIB as f64;
        let opt_mib =
            |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.3}×"));
        println!();
        println!(
            "bench_restart — {} files, {} dirs, {:.1} MiB (seed {}, generated in {:.1} s), runs={}",
            self.stats.files,
            self.stats.dirs,
            mib(self.stats.bytes),
            a.seed,
            self.gen_secs,
            a.runs
        );
        println!("workdir: {}", self.workdir.display());
        println!(
            "ferry:   {} run --config ferry.toml  (local target, rescan_interval = \"0\", \
             watch on, fsync = {})  [{}]",
            self.ferry.display(),
            a.fsync,
            tools::modified(&self.ferry)
        );
        println!(
            "rsync:   {} -a --delete SRC/ DST_R/  ({})",
            self.rsync.display(),
            self.rsync_version
        );
        println!(
            "method:  wall time from spawn to the first /api/status (polled every {} ms) with \
             the target in-sync and applied_seq >= source_seq; warm page cache (SRC just \
             written), `sync` before every timed run; peak RSS = VmHWM at that moment",
            POLL.as_millis()
        );
        println!();
        println!(
            "{:<18}{:>10}{:>12}{:>10}{:>12}{:>14}{:>14}{:>14}",
            "run",
            "ready",
            "in-sync",
            "stop",
            "peak RSS",
            "bytes_hashed",
            "created+upd",
            "state.redb"
        );
        let row = |name: &str, o: &Observation| {
            println!(
                "{:<18}{:>8.3} s{:>10.3} s{:>8.3} s{:>12}{:>14}{:>14}{:>14}",
                name,
                o.ready.as_secs_f64(),
                o.in_sync.as_secs_f64(),
                o.stop.as_secs_f64(),
                opt_mib(o.peak_rss_kib),
                o.counter("bytes_hashed"),
                o.counter("files_created") + o.counter("files_updated"),
                opt_mib(o.state_db_bytes.map(|b| b / 1024)),
            );
        };
        row("ferry initial", &self.initial);
        for (i, o) in self.restarts.iter().enumerate() {
            row(&format!("ferry restart {}", i + 1), o);
        }
        println!("{:<18}{:>20.3} s", "rsync initial", self.rsync_initial);
        for (i, s) in self.rsync_noops.iter().enumerate() {
            println!("{:<18}{:>20.3} s", format!("rsync no-op {}", i + 1), s);
        }
        let restart = self.restart_median();
        let noop = median(&self.rsync_noops);
        let initial = self.initial.in_sync.as_secs_f64();
        let last = self.restarts.last().unwrap_or(&self.initial);
        println!();
        println!("initial sync (ferry):          {initial:.3} s");
        println!(
            "restart to in-sync (median):   {}",
            restart.map_or("-".into(), |r| format!("{r:.3} s"))
        );
        println!(
            "rsync initial / no-op (median): {:.3} s / {}",
            self.rsync_initial,
            noop.map_or("-".into(), |r| format!("{r:.3} s"))
        );
        println!(
            "restart / initial:             {}",
            fmt_ratio(ratio(restart, Some(initial)))
        );
        println!(
            "restart / rsync no-op:         {}",
            fmt_ratio(ratio(restart, noop))
        );
        println!(
            "restart counters (last run):   bytes_hashed {}, files_created {}, files_updated {}, \
             entries_sent {}, bytes_written {}",
            last.counter("bytes_hashed"),
            last.counter("files_created"),
            last.counter("files_updated"),
            last.counter("entries_sent"),
            last.counter("bytes_written"),
        );
        println!(
            "initial counters:              bytes_hashed {:.1} MiB, files_created {}, \
             entries_sent {}",
            mib(self.initial.counter("bytes_hashed")),
            self.initial.counter("files_created"),
            self.initial.counter("entries_sent"),
        );
        println!(
            "state.redb:                    {} after the initial sync, {} after the last restart",
            opt_mib(self.initial.state_db_bytes.map(|b| b / 1024)),
            opt_mib(last.state_db_bytes.map(|b| b / 1024)),
        );
        println!(
            "peak RSS (VmHWM):              initial {}, restart {}",
            opt_mib(self.initial.peak_rss_kib),
            opt_mib(self.restarts.iter().filter_map(|o| o.peak_rss_kib).max()),
        );
        if let Ok([one, five, _]) = procfs::load_average() {
            println!(
                "load average at the end:       {one:.2} (1 min), {five:.2} (5 min) on {} CPUs",
                procfs::cpus()
            );
        }
        if self.verified {
            println!("ferry's target was verified identical to SRC after the initial sync");
        }
        let problems = self.problems();
        if problems.is_empty() {
            println!(
                "\nPASS: no content re-read (bytes_hashed = 0 and no file created or rewritten \
                 in {} restart(s))",
                self.restarts.len()
            );
        } else {
            println!("\nFAIL:");
            for p in &problems {
                println!("  {p}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn run(args: Args) -> Result<()> {
    let (rsync, rsync_version) = tools::find_rsync("")?;
    let ferry = tools::locate_ferry(args.ferry.as_deref(), "--ferry PATH")?;
    let (dir, keep, json) = (args.dir.clone(), args.keep, args.json);
    benchkit::in_workdir(
        "bench_restart",
        dir.as_deref(),
        "ferry-bench-restart-",
        keep,
        json,
        |workdir| bench(args, workdir, ferry, rsync, rsync_version),
    )
}

/// Runs `rsync -a --delete SRC/ DST/` once; returns its wall time in seconds.
fn rsync_once(what: &str, rsync: &Path, src: &Path, dst: &Path) -> Result<f64> {
    let slash = |p: &Path| {
        let mut s = p.as_os_str().to_os_string();
        s.push("/");
        s
    };
    let (src, dst) = (slash(src), slash(dst));
    let args: [&OsStr; 4] = [OsStr::new("-a"), OsStr::new("--delete"), &src, &dst];
    rustix::fs::sync();
    let mut cmd = Command::new(rsync);
    cmd.args(args);
    let t = run_timed(&mut cmd, RSYNC_DEADLINE).map_err(setup(format!("{what}: running rsync")))?;
    if t.timed_out || !t.output.status.success() {
        let mut msg = tools::failed_message(what, rsync, &args, &t.output);
        if t.timed_out {
            let _ = write!(msg, "\n(killed after {RSYNC_DEADLINE:?})");
        }
        return Err(Failure::Setup(msg));
    }
    Ok(t.wall.as_secs_f64())
}

fn bench(
    args: Args,
    workdir: PathBuf,
    ferry: PathBuf,
    rsync: PathBuf,
    rsync_version: String,
) -> Result<()> {
    let src = workdir.join("src");
    let dst_f = workdir.join("dst-ferry");
    let dst_r = workdir.join("dst-rsync");
    let state = workdir.join("state");
    let home = workdir.join("home");
    let config = workdir.join("ferry.toml");
    let state_db = state.join("state.redb");
    let say = |msg: String| eprintln!("bench_restart: {msg}");

    say(format!("workdir {}", workdir.display()));
    for d in [&src, &dst_f, &dst_r, &state, &home] {
        fresh_dir(d)?;
    }
    // The node creates its target itself, as a fresh mirror would.
    fs::remove_dir(&dst_f).map_err(setup(format!("removing {}", dst_f.display())))?;
    let t = Instant::now();
    let plan = plan_tree(args.files, args.dirs(), args.seed);
    let stats = plan
        .write(&src, 0)
        .map_err(setup(format!("generating SRC in {}", src.display())))?;
    let gen_secs = t.elapsed().as_secs_f64();
    say(format!(
        "generated {} files / {} dirs / {:.1} MiB in {gen_secs:.1} s",
        stats.files,
        stats.dirs,
        stats.bytes as f64 / MIB as f64
    ));
    write_config(&config, &home, &state, &src, &dst_f, args.fsync)?;

    say("ferry initial sync…".into());
    let initial = run_node(
        "ferry initial",
        &ferry,
        &config,
        &workdir.join("node-initial.log"),
        &state_db,
        args.timeout,
    )?;
    say(format!(
        "  in sync after {:.3} s (ready {:.3} s, stop {:.3} s, {})",
        initial.in_sync.as_secs_f64(),
        initial.ready.as_secs_f64(),
        initial.stop.as_secs_f64(),
        initial.exit
    ));
    if args.verify {
        let t = Instant::now();
        verify("ferry initial", &src, &dst_f)?;
        say(format!(
            "  target verified identical to SRC ({:.1} s, untimed)",
            t.elapsed().as_secs_f64()
        ));
    }

    say("rsync initial…".into());
    let rsync_initial = rsync_once("rsync initial", &rsync, &src, &dst_r)?;
    say(format!("  {rsync_initial:.3} s"));

    let mut restarts = Vec::new();
    let mut rsync_noops = Vec::new();
    for round in 1..=args.runs {
        let o = run_node(
            &format!("ferry restart {round}"),
            &ferry,
            &config,
            &workdir.join(format!("node-restart-{round}.log")),
            &state_db,
            args.timeout,
        )?;
        say(format!(
            "round {round}/{}: ferry restart in sync after {:.3} s (ready {:.3} s), \
             bytes_hashed {}, created {}, updated {}",
            args.runs,
            o.in_sync.as_secs_f64(),
            o.ready.as_secs_f64(),
            o.counter("bytes_hashed"),
            o.counter("files_created"),
            o.counter("files_updated"),
        ));
        restarts.push(o);
        let noop = rsync_once(&format!("rsync no-op {round}"), &rsync, &src, &dst_r)?;
        say(format!(
            "round {round}/{}: rsync no-op {noop:.3} s",
            args.runs
        ));
        rsync_noops.push(noop);
    }

    let report = Report {
        verified: args.verify,
        args,
        workdir,
        stats,
        gen_secs,
        ferry,
        rsync,
        rsync_version,
        initial,
        restarts,
        rsync_initial,
        rsync_noops,
    };
    if report.args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        );
    } else {
        report.print();
    }
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Wrong(benchkit::loud(&format!(
            "RESTART CHECK FAILED: {}",
            problems.join("; ")
        ))))
    }
}

fn main() -> ExitCode {
    benchkit::main(
        "bench_restart",
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
            (a.files, a.dirs(), a.runs, a.verify),
            (100_000, 1000, 3, true)
        );
        let a = parse(&["--files=500", "--runs", "5", "--dir", "/x", "--no-verify"])
            .unwrap()
            .unwrap();
        assert_eq!((a.files, a.dirs(), a.runs, a.verify), (500, 5, 5, false));
        assert_eq!(a.dir.as_deref(), Some(Path::new("/x")));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--files", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn plans_small_files_deterministically() {
        let a = plan_tree(2000, 20, 7);
        let b = plan_tree(2000, 20, 7);
        assert_eq!(a.files, b.files);
        assert_eq!(a.dirs.len(), 20);
        assert!(a
            .files
            .iter()
            .all(|f| (MIN_FILE..=MAX_FILE).contains(&f.size)));
        assert!(a.dirs.iter().all(|d| d.components().count() <= MAX_DEPTH));
    }

    #[test]
    fn decodes_chunked_bodies_and_finds_the_target() {
        assert_eq!(
            dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n").as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(dechunk("zz\r\n"), None);
        let status = json!({"folders": [{"id": "other", "targets": []},
            {"id": FOLDER_ID, "targets": [{"name": "t"}]}]});
        assert_eq!(folder_target(&status).unwrap()["name"], "t");
        assert_eq!(toml_string("a\"b\\c"), r#""a\"b\\c""#);
    }
}
