//! `soak`: a writer mutating a 10k-file tree continuously for N minutes while `ferry watch`
//! replicates it to a `ferry serve` on loopback.
//!
//! 1. SRC gets `--files` small files (0.5–8 KiB) in `--dirs` directories plus a few 1–4 MiB
//!    files; `ferry serve` (127.0.0.1, DST) and `ferry watch SRC ferry://…` start (identities
//!    from `ferry id --home`), and the initial sync is awaited (DST equal to SRC, then a probe
//!    file round trip).
//! 2. A writer thread mutates SRC at `--rate` operations per second for `--minutes`:
//!    rewrites, appends, creates, deletes, renames (files and, rarely, whole directories) and
//!    in-place writes into the big files.
//! 3. Every `--sample-secs` the watch's and the server's RSS (VmRSS), open fds, CPU and the
//!    watch's inotify watch count are sampled and printed.
//! 4. The writer stops; DST must mirror SRC (paths, kinds, sizes, contents) within
//!    `--deadline` seconds. The summary reports the operations, the final comparison and the
//!    resource use at start / middle / end, flagging growth. Exit 3 if DST never matches
//!    (a lost change) or ferry dies, 1 on a setup problem.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferry_examples::benchkit::{self, loud, setup, verify, ArgParser, Failure, Result};
use ferry_examples::compare::compare_trees;
use ferry_examples::procfs;
use ferry_examples::services::{node_id, FerryServer, ServeSpec};
use ferry_examples::tools::{file_tail, locate_ferry};
use ferry_examples::workload::Rng;

const NAME: &str = "soak";
const FOLDER: &str = "soak";
/// Waiting for the initial sync (10k files) at most this long.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `ferry watch` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many extra directories created by the writer exist at once.
const MAX_EXTRA_DIRS: usize = 20;

const USAGE: &str = "\
soak: a writer mutating ~10k files continuously while `ferry watch` replicates them to a
`ferry serve` on loopback; samples memory, fds and inotify watches, then checks that no
change was lost.

usage: soak [options]
    --minutes M          how long the writer runs (default 10; fractions allowed)
    --rate N             writer operations per second (default 200)
    --files N            small files generated (default 10000)
    --dirs N             directories they are spread over (default 100)
    --big N              1-4 MiB files generated (default 4)
    --sample-secs S      seconds between resource samples (default 10)
    --deadline S         seconds DST may take to match SRC after the writer stops (default 120)
    --fsync              let ferry fsync (default: --no-fsync for watch and serve)
    --seed N             random seed (default 1)
    --ferry PATH         ferry binary (default: next to this binary, else target/release)
    --workdir DIR        work here (kept) instead of a temporary directory
    --keep               keep the temporary directory
    -h, --help           this help

exit status: 0 DST matched SRC, 3 a lost change / ferry failed, 1 setup problem
";

#[derive(Debug, Clone)]
struct Args {
    minutes: f64,
    rate: f64,
    files: usize,
    dirs: usize,
    big: usize,
    sample: Duration,
    deadline: Duration,
    fsync: bool,
    seed: u64,
    ferry: Option<PathBuf>,
    workdir: Option<PathBuf>,
    keep: bool,
}

fn positive_f64(
    p: &mut ArgParser<impl Iterator<Item = OsString>>,
    flag: &str,
) -> std::result::Result<f64, String> {
    let v: f64 = p.number(flag)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{flag} must be a positive number"))
    }
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut a = Args {
        minutes: 10.0,
        rate: 200.0,
        files: 10_000,
        dirs: 100,
        big: 4,
        sample: Duration::from_secs(10),
        deadline: Duration::from_secs(120),
        fsync: false,
        seed: 1,
        ferry: None,
        workdir: None,
        keep: false,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--minutes" => a.minutes = positive_f64(&mut p, "--minutes")?,
            "--rate" => a.rate = positive_f64(&mut p, "--rate")?,
            "--files" => a.files = p.positive("--files")?,
            "--dirs" => a.dirs = p.positive("--dirs")?,
            "--big" => a.big = p.number("--big")?,
            "--sample-secs" => {
                a.sample = Duration::from_secs_f64(positive_f64(&mut p, "--sample-secs")?)
            }
            "--deadline" => {
                a.deadline = Duration::from_secs_f64(positive_f64(&mut p, "--deadline")?)
            }
            "--fsync" => a.fsync = true,
            "--seed" => a.seed = p.number("--seed")?,
            "--ferry" => a.ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--workdir" => a.workdir = Some(PathBuf::from(p.value("--workdir")?)),
            "--keep" => a.keep = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(a))
}

// ---------------------------------------------------------------------------------------------
// /proc observations
// ---------------------------------------------------------------------------------------------

/// Open fds of `pid` (entries of /proc/PID/fd).
fn fd_count(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// inotify watches of `pid`: `inotify wd:` lines in the fdinfo of its inotify fds.
fn inotify_watches(pid: u32) -> Option<u64> {
    let mut n = 0;
    for e in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:inotify" {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
        if let Ok(text) = fs::read_to_string(info) {
            n += text
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count() as u64;
        }
    }
    Some(n)
}

/// Our child process running `ferry serve` (FerryServer does not expose its pid).
fn find_server_pid(exclude: u32) -> Option<u32> {
    let me = std::process::id();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == exclude {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).any(|a| a == b"serve") {
            return Some(pid);
        }
    }
    None
}

#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    rss_kib: u64,
    fds: u64,
    watches: Option<u64>,
    cpu_ticks: u64,
}

fn proc_sample(pid: u32, watches: bool) -> ProcSample {
    ProcSample {
        rss_kib: procfs::status_kib(pid, "VmRSS").unwrap_or(0),
        fds: fd_count(pid).unwrap_or(0),
        watches: if watches { inotify_watches(pid) } else { None },
        cpu_ticks: procfs::cpu_ticks(pid).map_or(0, |t| t.total()),
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Seconds since the writer started (negative: before).
    t: f64,
    ops: u64,
    src_dirs: u64,
    watch: ProcSample,
    server: ProcSample,
    /// CPU % since the previous sample (watch, server).
    cpu: (f64, f64),
}

struct Sampler {
    watch_pid: u32,
    server_pid: u32,
    tick: f64,
    last: Option<(Instant, u64, u64)>,
    samples: Vec<Sample>,
}

impl Sampler {
    fn take(&mut self, t: f64, ops: u64, src: &Path, label: &str) -> Sample {
        let now = Instant::now();
        let w = proc_sample(self.watch_pid, true);
        let s = proc_sample(self.server_pid, false);
        let cpu = match self.last {
            Some((at, wt, st)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 / self.tick / secs * 100.0;
                (pct(w.cpu_ticks, wt), pct(s.cpu_ticks, st))
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, w.cpu_ticks, s.cpu_ticks));
        let sample = Sample {
            t,
            ops,
            src_dirs: count_dirs(src),
            watch: w,
            server: s,
            cpu,
        };
        println!(
            "sample {label:<6} t={:>7.1}s ops={:>7} | watch rss={:>7} KiB fds={:>4} watches={:>4} \
             cpu={:>5.1}% | serve rss={:>7} KiB fds={:>4} cpu={:>5.1}% | src dirs={}",
            t,
            ops,
            w.rss_kib,
            w.fds,
            w.watches.map_or("?".into(), |n| n.to_string()),
            cpu.0,
            s.rss_kib,
            s.fds,
            cpu.1,
            sample.src_dirs
        );
        self.samples.push(sample);
        sample
    }
}

/// Directories in `root`, itself included.
fn count_dirs(root: &Path) -> u64 {
    let mut n = 1;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += 1;
                stack.push(e.path());
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// The tree and the writer
// ---------------------------------------------------------------------------------------------

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn small_size(rng: &mut Rng) -> usize {
    rng.range(512, 8193) as usize
}

/// Generates the tree; returns (small files, big files) as paths relative to `src`.
fn generate(args: &Args, src: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let mut rng = Rng::derive(args.seed, 1);
    for d in 0..args.dirs {
        let p = src.join(format!("d{d:03}"));
        fs::create_dir_all(&p).map_err(setup(format!("creating {}", p.display())))?;
    }
    let mut files = Vec::with_capacity(args.files);
    for i in 0..args.files {
        let rel = format!("d{:03}/f{i:05}.dat", i % args.dirs);
        let len = small_size(&mut rng);
        let data = random_bytes(&mut rng, len);
        fs::write(src.join(&rel), data).map_err(setup(format!("writing {rel}")))?;
        files.push(rel);
    }
    let mut big = Vec::new();
    for i in 0..args.big {
        let rel = format!("d{:03}/big{i}.bin", (i * 37) % args.dirs);
        let len = rng.range(1 << 20, (4 << 20) + 1) as usize;
        fs::write(src.join(&rel), random_bytes(&mut rng, len))
            .map_err(setup(format!("writing {rel}")))?;
        big.push(rel);
    }
    Ok((files, big))
}

#[derive(Debug, Default, Clone, Copy)]
struct OpCounts {
    rewrite: u64,
    append: u64,
    create: u64,
    delete: u64,
    rename: u64,
    big_write: u64,
    mkdir: u64,
    rmdir: u64,
    dir_rename: u64,
}

impl OpCounts {
    fn total(&self) -> u64 {
        self.rewrite
            + self.append
            + self.create
            + self.delete
            + self.rename
            + self.big_write
            + self.mkdir
            + self.rmdir
            + self.dir_rename
    }
}

struct Writer {
    src: PathBuf,
    rng: Rng,
    files: Vec<String>,
    big: Vec<String>,
    dirs: usize,
    extra_dirs: Vec<String>,
    next: u64,
    ops: OpCounts,
}

impl Writer {
    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{:07}.dat", self.next)
    }

    /// A directory (relative) for a new file: a base dir, or sometimes an extra one.
    fn some_dir(&mut self) -> String {
        if !self.extra_dirs.is_empty() && self.rng.below(10) == 0 {
            let i = self.rng.index(self.extra_dirs.len());
            self.extra_dirs[i].clone()
        } else {
            format!("d{:03}", self.rng.below(self.dirs as u64))
        }
    }

    fn op(&mut self) -> std::io::Result<()> {
        let roll = self.rng.below(1000);
        let p = |s: &Self, rel: &str| s.src.join(rel);
        match roll {
            // Directory operations (rare): create with files, remove, rename.
            0..=2 if self.extra_dirs.len() < MAX_EXTRA_DIRS => {
                self.next += 1;
                let dir = format!("x{:07}", self.next);
                fs::create_dir(p(self, &dir))?;
                for _ in 0..3 {
                    let rel = format!("{dir}/{}", self.name("f"));
                    let len = small_size(&mut self.rng);
                    let data = random_bytes(&mut self.rng, len);
                    fs::write(p(self, &rel), data)?;
                    self.files.push(rel);
                }
                self.extra_dirs.push(dir);
                self.ops.mkdir += 1;
            }
            3..=4 if !self.extra_dirs.is_empty() => {
                let i = self.rng.index(self.extra_dirs.len());
                let dir = self.extra_dirs.swap_remove(i);
                fs::remove_dir_all(p(self, &dir))?;
                let prefix = format!("{dir}/");
                self.files.retain(|f| !f.starts_with(&prefix));
                self.ops.rmdir += 1;
            }
            5 if !self.extra_dirs.is_empty() => {
                let i = self.rng.index(self.extra_dirs.len());
                self.next += 1;
                let new = format!("x{:07}", self.next);
                let old = std::mem::replace(&mut self.extra_dirs[i], new.clone());
                fs::rename(p(self, &old), p(self, &new))?;
                let prefix = format!("{old}/");
                for f in &mut self.files {
                    if let Some(rest) = f.strip_prefix(&prefix) {
                        *f = format!("{new}/{rest}");
                    }
                }
                self.ops.dir_rename += 1;
            }
            // In-place 64 KiB write into a big file.
            6..=10 if !self.big.is_empty() => {
                let rel = self.big[self.rng.index(self.big.len())].clone();
                let mut f = OpenOptions::new().write(true).open(p(self, &rel))?;
                let len = f.metadata()?.len();
                let chunk = 64 * 1024;
                let off = self.rng.below(len.saturating_sub(chunk).max(1));
                f.seek(SeekFrom::Start(off))?;
                let data = random_bytes(&mut self.rng, chunk as usize);
                f.write_all(&data)?;
                self.ops.big_write += 1;
            }
            // Rewrite (truncate + write, not atomic).
            11..=400 if !self.files.is_empty() => {
                let rel = self.files[self.rng.index(self.files.len())].clone();
                let len = small_size(&mut self.rng);
                let data = random_bytes(&mut self.rng, len);
                fs::write(p(self, &rel), data)?;
                self.ops.rewrite += 1;
            }
            // Append (files kept below 64 KiB: a big one is rewritten small instead).
            401..=600 if !self.files.is_empty() => {
                let rel = self.files[self.rng.index(self.files.len())].clone();
                let path = p(self, &rel);
                if fs::metadata(&path)?.len() > 64 * 1024 {
                    let len = small_size(&mut self.rng);
                    let data = random_bytes(&mut self.rng, len);
                    fs::write(&path, data)?;
                    self.ops.rewrite += 1;
                } else {
                    let n = self.rng.range(100, 2001) as usize;
                    let data = random_bytes(&mut self.rng, n);
                    OpenOptions::new()
                        .append(true)
                        .open(&path)?
                        .write_all(&data)?;
                    self.ops.append += 1;
                }
            }
            // Create.
            601..=740 => {
                let dir = self.some_dir();
                let rel = format!("{dir}/{}", self.name("n"));
                let len = small_size(&mut self.rng);
                let data = random_bytes(&mut self.rng, len);
                fs::write(p(self, &rel), data)?;
                self.files.push(rel);
                self.ops.create += 1;
            }
            // Delete.
            741..=870 if !self.files.is_empty() => {
                let i = self.rng.index(self.files.len());
                let rel = self.files.swap_remove(i);
                fs::remove_file(p(self, &rel))?;
                self.ops.delete += 1;
            }
            // Rename (within or across directories).
            _ if !self.files.is_empty() => {
                let i = self.rng.index(self.files.len());
                let dir = self.some_dir();
                let new = format!("{dir}/{}", self.name("r"));
                let old = std::mem::replace(&mut self.files[i], new.clone());
                fs::rename(p(self, &old), p(self, &new))?;
                self.ops.rename += 1;
            }
            _ => {
                // Nothing applicable (e.g. all files gone): create one.
                let rel = format!("d000/{}", self.name("n"));
                fs::write(p(self, &rel), b"x")?;
                self.files.push(rel);
                self.ops.create += 1;
            }
        }
        Ok(())
    }
}

struct WriterResult {
    ops: OpCounts,
    secs: f64,
    error: Option<String>,
    files: usize,
}

fn run_writer(
    mut w: Writer,
    rate: f64,
    duration: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> WriterResult {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut due = start;
    let mut error = None;
    while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else if now - due > Duration::from_secs(1) {
            // Fell far behind (slow disk, busy CPU): do not burst to catch up.
            due = now;
        }
        if let Err(e) = w.op() {
            error = Some(format!("writer operation failed: {e}"));
            break;
        }
        done.fetch_add(1, Ordering::Relaxed);
        due += interval;
    }
    WriterResult {
        ops: w.ops,
        secs: start.elapsed().as_secs_f64(),
        error,
        files: w.files.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// ferry processes
// ---------------------------------------------------------------------------------------------

/// A running `ferry watch`; killed if dropped without [`Watch::stop`].
struct Watch {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Watch {
    fn start(ferry: &Path, args: &[&OsStr], log: &Path) -> Result<Self> {
        let out = File::create(log).map_err(setup(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(setup("duplicating the log"))?;
        let child = Command::new(ferry)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(setup(format!("spawning {}", ferry.display())))?;
        Ok(Watch {
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn check(&mut self) -> Result<()> {
        let Some(c) = self.child.as_mut() else {
            return Err(Failure::Wrong("ferry watch already stopped".into()));
        };
        match c.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(Failure::Wrong(format!(
                    "{}{}",
                    loud(&format!("ferry watch exited unexpectedly ({status})")),
                    file_tail("ferry watch log", &self.log)
                )))
            }
            Err(e) => Err(Failure::Setup(format!("waiting for ferry watch: {e}"))),
        }
    }

    /// SIGTERM; returns the exit description.
    fn stop(&mut self) -> String {
        let Some(mut c) = self.child.take() else {
            return "already stopped".into();
        };
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&c),
            rustix::process::Signal::TERM,
        );
        let start = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(s)) => {
                    return format!("{s} after {:.0} ms", start.elapsed().as_secs_f64() * 1e3)
                }
                Ok(None) if start.elapsed() < STOP_TIMEOUT => {
                    thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM, killed");
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for DST to equal SRC, then for a probe file to round-trip.
fn wait_ready(watch: &mut Watch, server: &mut FerryServer, src: &Path, dst: &Path) -> Result<f64> {
    let start = Instant::now();
    loop {
        watch.check()?;
        server.check()?;
        if compare_trees(src, dst).is_ok_and(|r| r.is_equal()) {
            break;
        }
        if start.elapsed() > READY_TIMEOUT {
            verify("initial sync", src, dst)?;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let synced = start.elapsed().as_secs_f64();
    let probe = "soak-ready-probe";
    fs::write(src.join(probe), b"probe").map_err(setup("writing the probe"))?;
    let t = Instant::now();
    while !dst.join(probe).is_file() {
        watch.check()?;
        if t.elapsed() > Duration::from_secs(60) {
            return Err(Failure::Wrong(format!(
                "{}{}",
                loud("a probe file written into SRC never reached DST"),
                file_tail("ferry watch log", &watch.log)
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    fs::remove_file(src.join(probe)).map_err(setup("removing the probe"))?;
    let t = Instant::now();
    while dst.join(probe).exists() {
        watch.check()?;
        if t.elapsed() > Duration::from_secs(60) {
            return Err(Failure::Wrong(loud(
                "a probe file removed from SRC was never removed from DST",
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(synced)
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn bench(args: &Args, work: PathBuf, ferry: PathBuf) -> Result<()> {
    let src = work.join("src");
    let dst = work.join("dst");
    let home_c = work.join("home-client");
    let home_s = work.join("home-server");
    for d in [&src, &dst] {
        benchkit::fresh_dir(d)?;
    }
    let client_id = node_id(&ferry, &home_c)?;
    let server_id = node_id(&ferry, &home_s)?;

    let gen_start = Instant::now();
    let (files, big) = generate(args, &src)?;
    println!(
        "soak: generated {} small files in {} dirs + {} big files in {:.1} s ({})",
        files.len(),
        args.dirs,
        big.len(),
        gen_start.elapsed().as_secs_f64(),
        src.display()
    );

    let serve_log = work.join("serve.log");
    let mut server = FerryServer::start(&ServeSpec {
        ferry: &ferry,
        home: &home_s,
        listen: "127.0.0.1:0",
        folder: FOLDER,
        path: &dst,
        peer: &client_id,
        no_fsync: !args.fsync,
        log: &serve_log,
    })?;
    if server.node() != server_id {
        return Err(Failure::Wrong(format!(
            "ferry serve announced node {} but `ferry id` says {server_id}",
            server.node()
        )));
    }
    let url = format!("ferry://{server_id}@{}/{FOLDER}", server.addr());
    let mut wargs: Vec<&OsStr> = vec![
        OsStr::new("watch"),
        OsStr::new("--home"),
        home_c.as_os_str(),
    ];
    if !args.fsync {
        wargs.push(OsStr::new("--no-fsync"));
    }
    wargs.push(src.as_os_str());
    wargs.push(OsStr::new(&url));
    let command = std::iter::once(ferry.as_os_str())
        .chain(wargs.iter().copied())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let watch_log = work.join("watch.log");
    let mut watch = Watch::start(&ferry, &wargs, &watch_log)?;
    println!(
        "soak: ferry serve at {} (log {})",
        server.addr(),
        serve_log.display()
    );
    println!("soak: started pid {}: {command}", watch.pid);
    let server_pid = find_server_pid(watch.pid)
        .ok_or_else(|| Failure::Setup("cannot find the ferry serve process".into()))?;

    let synced = wait_ready(&mut watch, &mut server, &src, &dst)?;
    println!("soak: initial sync done in {synced:.1} s; DST equals SRC, probe round-tripped");

    let mut sampler = Sampler {
        watch_pid: watch.pid,
        server_pid,
        tick: procfs::clock_ticks_per_second().unwrap_or(100) as f64,
        last: None,
        samples: Vec::new(),
    };
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let start_sample = sampler.take(0.0, 0, &src, "start");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        src: src.clone(),
        rng: Rng::derive(args.seed, 2),
        files,
        big,
        dirs: args.dirs,
        extra_dirs: Vec::new(),
        next: 0,
        ops: OpCounts::default(),
    };
    let (rate, stop2, done2) = (args.rate, stop.clone(), done.clone());
    let handle = thread::spawn(move || run_writer(writer, rate, duration, stop2, done2));
    let wstart = Instant::now();
    println!(
        "soak: writer started: {:.0} ops/s for {:.1} min",
        args.rate, args.minutes
    );

    // Sample while the writer runs.
    let mut failure: Option<Failure> = None;
    let mut next_sample = wstart + args.sample;
    while !handle.is_finished() {
        if let Err(f) = watch.check().and_then(|()| server.check()) {
            stop.store(true, Ordering::Relaxed);
            failure = Some(f);
            break;
        }
        if Instant::now() >= next_sample {
            sampler.take(
                wstart.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed),
                &src,
                "run",
            );
            next_sample += args.sample;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let wres = handle
        .join()
        .map_err(|_| Failure::Setup("the writer thread panicked".into()))?;
    let end_sample = sampler.take(
        wstart.elapsed().as_secs_f64(),
        wres.ops.total(),
        &src,
        "end",
    );
    if let Some(f) = failure {
        return Err(f);
    }
    if let Some(e) = &wres.error {
        return Err(Failure::Setup(e.clone()));
    }

    // Convergence.
    let conv_start = Instant::now();
    let mut last_report;
    let mut compares = 0u32;
    let converged = loop {
        watch.check()?;
        server.check()?;
        let r = compare_trees(&src, &dst).map_err(setup("comparing DST with SRC"))?;
        compares += 1;
        let eq = r.is_equal();
        last_report = Some(r);
        if eq {
            break Some(conv_start.elapsed().as_secs_f64());
        }
        if conv_start.elapsed() > args.deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(500));
    };
    let settled_sample = sampler.take(
        wstart.elapsed().as_secs_f64(),
        wres.ops.total(),
        &src,
        "settled",
    );

    // Middle: the running sample closest to half the writer's time.
    let half = wres.secs / 2.0;
    let mid_sample = sampler
        .samples
        .iter()
        .min_by(|a, b| {
            (a.t - half)
                .abs()
                .partial_cmp(&(b.t - half).abs())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .copied()
        .unwrap_or(start_sample);
    let peak_watch = sampler
        .samples
        .iter()
        .map(|s| s.watch.rss_kib)
        .max()
        .unwrap_or(0);
    let peak_server = sampler
        .samples
        .iter()
        .map(|s| s.server.rss_kib)
        .max()
        .unwrap_or(0);
    let max_watches = sampler
        .samples
        .iter()
        .filter_map(|s| s.watch.watches)
        .max()
        .unwrap_or(0);
    let mean_cpu = |f: fn(&Sample) -> f64| {
        let n = sampler.samples.len();
        let run: Vec<f64> = sampler.samples[..n.saturating_sub(1)]
            .iter()
            .skip(1)
            .map(f)
            .collect();
        if run.is_empty() {
            0.0
        } else {
            run.iter().sum::<f64>() / run.len() as f64
        }
    };
    let cpu_w = mean_cpu(|s| s.cpu.0);
    let cpu_s = mean_cpu(|s| s.cpu.1);

    let watch_exit = watch.stop();
    let server_stop = server.stop();

    // Summary.
    let o = wres.ops;
    let mut flags: Vec<String> = Vec::new();
    println!();
    println!("================================ soak summary ================================");
    println!("command:   {command}");
    println!(
        "config:    {} small files in {} dirs + {} big files; rate {:.0} ops/s; {:.1} min; fsync {}; seed {}",
        args.files, args.dirs, args.big, args.rate, args.minutes, if args.fsync { "on" } else { "off" }, args.seed
    );
    println!("initial sync: {synced:.1} s");
    println!(
        "writer:    {} ops in {:.1} s ({:.1} ops/s): rewrite {} append {} create {} delete {} \
         rename {} big-write {} mkdir {} rmdir {} dir-rename {}; {} small files at the end",
        o.total(),
        wres.secs,
        o.total() as f64 / wres.secs.max(1e-9),
        o.rewrite,
        o.append,
        o.create,
        o.delete,
        o.rename,
        o.big_write,
        o.mkdir,
        o.rmdir,
        o.dir_rename,
        wres.files
    );
    let report = last_report.expect("compared at least once");
    match converged {
        Some(s) => println!(
            "final compare: EQUAL after {s:.1} s ({compares} comparisons): {} files, {} dirs, {} bytes — no lost change",
            report.files, report.dirs, report.bytes
        ),
        None => {
            println!(
                "final compare: DIFFERENT after {:.0} s deadline: {} differences",
                args.deadline.as_secs_f64(),
                report.differences.len()
            );
            for d in report.differences.iter().take(30) {
                println!("  {d}");
            }
            if report.differences.len() > 30 {
                println!("  … and {} more", report.differences.len() - 30);
            }
        }
    }
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "", "start", "middle", "end", "settled", "peak"
    );
    let row = |name: &str, f: &dyn Fn(&Sample) -> String, peak: String| {
        println!(
            "{name:<22} {:>12} {:>12} {:>12} {:>12} {:>12}",
            f(&start_sample),
            f(&mid_sample),
            f(&end_sample),
            f(&settled_sample),
            peak
        );
    };
    row("t (s)", &|s| format!("{:.0}", s.t), String::new());
    row("writer ops", &|s| s.ops.to_string(), String::new());
    row("watch RSS", &|s| mib(s.watch.rss_kib), mib(peak_watch));
    row("serve RSS", &|s| mib(s.server.rss_kib), mib(peak_server));
    row("watch fds", &|s| s.watch.fds.to_string(), String::new());
    row("serve fds", &|s| s.server.fds.to_string(), String::new());
    row(
        "watch inotify watches",
        &|s| s.watch.watches.map_or("?".into(), |n| n.to_string()),
        max_watches.to_string(),
    );
    row(
        "SRC dirs (incl. root)",
        &|s| s.src_dirs.to_string(),
        String::new(),
    );
    println!("mean CPU while writing: watch {cpu_w:.1}%, serve {cpu_s:.1}% (of one core)");
    println!("ferry watch exit: {watch_exit}");
    println!(
        "ferry serve stop: {}",
        match &server_stop {
            Ok(()) => "exit 0".to_string(),
            Err(f) => f.message().to_string(),
        }
    );

    // Growth checks.
    for (who, m, e) in [
        ("watch", mid_sample.watch.rss_kib, end_sample.watch.rss_kib),
        (
            "serve",
            mid_sample.server.rss_kib,
            end_sample.server.rss_kib,
        ),
    ] {
        if m > 0 && e as f64 > 1.5 * m as f64 {
            flags.push(format!(
                "{who} RSS grew: end {} > 1.5 × middle {}",
                mib(e),
                mib(m)
            ));
        }
    }
    let dirs_bound = args.dirs as u64 + 1 + MAX_EXTRA_DIRS as u64;
    for (who, s, e) in [
        (
            "watch",
            start_sample.watch.fds,
            end_sample.watch.fds.max(settled_sample.watch.fds),
        ),
        (
            "serve",
            start_sample.server.fds,
            end_sample.server.fds.max(settled_sample.server.fds),
        ),
    ] {
        if e > s + args.dirs as u64 {
            flags.push(format!(
                "{who} fds grew from {s} to {e} (more than the {} directories)",
                args.dirs
            ));
        }
    }
    // ferry watch holds watches besides SRC's directories (its private barrier directory
    // under $TMPDIR, one); the excess seen at the start, before any change, is the baseline
    // and only watches beyond it count as leaked.
    let base_extra = start_sample
        .watch
        .watches
        .map_or(0, |w| w.saturating_sub(start_sample.src_dirs));
    for s in [&settled_sample] {
        if let Some(w) = s.watch.watches {
            if w > s.src_dirs + base_extra {
                flags.push(format!(
                    "inotify watches {w} > directories in SRC {} + {base_extra} (baseline) at t={:.0}s (leaked watches)",
                    s.src_dirs, s.t
                ));
            }
        }
    }
    if max_watches > dirs_bound + base_extra {
        flags.push(format!(
            "inotify watches peaked at {max_watches}, above the at most {dirs_bound} directories SRC ever had (+{base_extra} baseline)"
        ));
    }
    if server_stop.is_err() || !watch_exit.starts_with("exit status: 0") {
        flags.push("a ferry process did not exit cleanly".into());
    }
    if flags.is_empty() {
        println!(
            "growth:    none flagged (RSS end ≤ 1.5× middle, fds/watches bounded by directories)"
        );
    } else {
        for f in &flags {
            println!("FLAG:      {f}");
        }
    }
    println!(
        "logs:      {} / {}",
        watch_log.display(),
        serve_log.display()
    );
    println!("==============================================================================");

    if converged.is_none() {
        return Err(Failure::Wrong(format!(
            "{}{}{}",
            loud("LOST CHANGE: DST does not mirror SRC after the writer stopped"),
            file_tail("ferry watch log", &watch_log),
            file_tail("ferry serve log", &serve_log)
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        NAME,
        USAGE,
        parse_args(std::env::args_os().skip(1)),
        |_| false,
        |args| {
            let ferry = locate_ferry(args.ferry.as_deref(), "--ferry PATH")?;
            benchkit::in_workdir(
                NAME,
                args.workdir.as_deref(),
                "ferry-soak-",
                args.keep,
                false,
                |w| bench(&args, w, ferry),
            )
        },
    )
}
