//! `crash_bench`: crash consistency under SIGKILL (issue 7). `ferry watch` replicates a tree of
//! small and large files to `ferry serve` on loopback; at many random moments one process is
//! SIGKILLed — the receiving server, the sending watch, or a sending one-shot `ferry sync` —
//! then started again, and the harness checks:
//!
//! (a) right after the kill, every file under its final name in the target is a version the
//!     source had at that path (the harness is SRC's only writer and installs every version
//!     atomically, so it knows each one's blake3);
//! (b) after the restart, the target converges to an exact mirror (names, kinds, contents,
//!     modes, file mtimes) with no `.ferry-tmp-*` file left.
//!
//! Between kills the source changes: 20 small files rewritten, 5 deleted, 5 added, one large
//! file rewritten whole and 8 bytes of another edited in place. Each change set is prepared
//! (staged outside SRC) and then applied within milliseconds, so the kill falls in the
//! transfer. Kill moments: an unkilled round of each kind of sender is timed first; each kill
//! is then a uniform random delay over such a round, or (every other draw on average) over the
//! part of it where files were in transfer. A kill "lands mid-transfer" when the target holds
//! temp files at that moment.
//!
//! The tests' `fault_kill` runs a CI-sized version of the same harness. Run by hand:
//!
//! ```text
//! cargo run --release -p ferry-examples --bin crash_bench -- --kills 50
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_examples::benchkit::{self, in_workdir, setup, ArgParser, Failure, Result};
use ferry_examples::crashcheck::{converged, temp_files, torn_files, version, Version};
use ferry_examples::tools::{file_tail, locate_ferry, run_tool};
use ferry_examples::workload::{Rng, KIB, MIB};
use serde_json::json;

/// Directories holding the small files.
const DIRS: u64 = 12;
/// The largest small file.
const SMALL_MAX: u64 = 16 * KIB;
/// How long convergence after a restart may take.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(120);
/// How long `ferry serve` may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often convergence is checked.
const POLL: Duration = Duration::from_millis(2);
/// The shortest window a kill moment is drawn from.
const MIN_WINDOW: Duration = Duration::from_millis(20);

const USAGE: &str = "\
crash_bench: SIGKILL the receiving `ferry serve` and the sending `ferry watch` / `ferry sync`
at random moments of transfers; after each kill check that the target holds only whole
versions of source files, and after restarting that it converges with no temp file left

USAGE:
    cargo run --release -p ferry-examples --bin crash_bench -- [OPTIONS]

OPTIONS:
    --kills N        distinct kill points, half of the server, half of the sender (two
                     thirds `ferry watch`, one third `ferry sync`) (default 50)
    --seed N         seed of the tree, the changes and the kill moments (default: the clock)
    --small N        small files (0..16 KiB) in the tree (default 300)
    --big LIST       sizes of the large files in MiB, comma-separated (default 8,16,24)
    --fsync          let ferry fsync (default --no-fsync: a SIGKILL loses no page cache)
    --ferry PATH     ferry binary (default: `ferry` next to this binary, else
                     <workspace>/target/release/ferry)
    --workdir DIR    where src, dst, homes and logs go (default: a temporary directory)
    --keep           keep the temporary directory
    --json           print the summary as one JSON object on stdout
    -h, --help       show this help

Exit status: 0 when every kill point passed both checks, 1 on setup errors, 3 when a
violation was found or the target did not converge (the seed is printed).
";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    kills: usize,
    seed: u64,
    small: usize,
    big_mib: Vec<u64>,
    fsync: bool,
    ferry: Option<PathBuf>,
    workdir: Option<PathBuf>,
    keep: bool,
    json: bool,
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        kills: 50,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        small: 300,
        big_mib: vec![8, 16, 24],
        fsync: false,
        ferry: None,
        workdir: None,
        keep: false,
        json: false,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--kills" => args.kills = p.positive("--kills")?,
            "--seed" => args.seed = p.number("--seed")?,
            "--small" => args.small = p.positive("--small")?,
            "--big" => {
                let text = p.text("--big")?;
                args.big_mib = text
                    .split(',')
                    .map(|s| match s.trim().parse::<u64>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!("--big {text:?}: sizes are positive MiB counts")),
                    })
                    .collect::<std::result::Result<_, _>>()?;
                if args.big_mib.len() < 2 {
                    return Err("--big needs at least two sizes".into());
                }
            }
            "--fsync" => args.fsync = true,
            "--ferry" => args.ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--workdir" => args.workdir = Some(PathBuf::from(p.value("--workdir")?)),
            "--keep" => args.keep = true,
            "--json" => args.json = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------------
// The source and every version it had
// ---------------------------------------------------------------------------------------------

/// One change to SRC, ready to apply.
enum Change {
    Put {
        rel: PathBuf,
        staged: PathBuf,
        version: Version,
    },
    Remove {
        rel: PathBuf,
    },
    Edit {
        rel: PathBuf,
        at: u64,
        bytes: [u8; 8],
        version: Version,
    },
}

/// SRC, written only through this type, and every version each of its paths has had.
struct Source {
    root: PathBuf,
    stage: PathBuf,
    staged: u64,
    big_mib: Vec<u64>,
    history: BTreeMap<PathBuf, BTreeSet<Version>>,
    small: Vec<PathBuf>,
    added: u64,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Failure {
    setup(format!("{what} {}", path.display()))
}

impl Source {
    fn new(root: PathBuf, stage: PathBuf, big_mib: Vec<u64>) -> Result<Source> {
        benchkit::fresh_dir(&root)?;
        benchkit::fresh_dir(&stage)?;
        Ok(Source {
            root,
            stage,
            staged: 0,
            big_mib,
            history: BTreeMap::new(),
            small: Vec::new(),
            added: 0,
        })
    }

    fn stage(&mut self, rel: PathBuf, content: &[u8]) -> Result<Change> {
        self.staged += 1;
        let staged = self.stage.join(format!("v{}", self.staged));
        fs::write(&staged, content).map_err(io_err("writing", &staged))?;
        Ok(Change::Put {
            rel,
            staged,
            version: version(content),
        })
    }

    /// Applies `changes`, recording each new version before it can appear in SRC.
    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        for change in changes {
            match change {
                Change::Put {
                    rel,
                    staged,
                    version,
                } => {
                    self.record(&rel, version);
                    let path = self.root.join(&rel);
                    if let Some(parent) = path.parent() {
                        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
                    }
                    fs::rename(&staged, &path).map_err(io_err("renaming into", &path))?;
                    if !self.small.contains(&rel) && !rel.starts_with("big") {
                        self.small.push(rel);
                    }
                }
                Change::Remove { rel } => {
                    let path = self.root.join(&rel);
                    fs::remove_file(&path).map_err(io_err("removing", &path))?;
                    self.small.retain(|p| *p != rel);
                }
                Change::Edit {
                    rel,
                    at,
                    bytes,
                    version,
                } => {
                    self.record(&rel, version);
                    let path = self.root.join(&rel);
                    // Eight bytes at an aligned offset in one pwrite: a reader sees all or none.
                    File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.write_all_at(&bytes, at))
                        .map_err(io_err("editing", &path))?;
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, rel: &Path, v: Version) {
        self.history.entry(rel.to_owned()).or_default().insert(v);
    }

    fn small_content(rng: &mut Rng) -> Vec<u8> {
        let len = if rng.below(20) == 0 {
            0
        } else {
            rng.range(1, SMALL_MAX)
        };
        let mut buf = vec![0; len as usize];
        rng.fill_bytes(&mut buf);
        buf
    }

    fn big(i: usize) -> PathBuf {
        PathBuf::from(format!("big/b{i}.bin"))
    }

    fn big_content(&self, i: usize, rng: &mut Rng) -> Vec<u8> {
        let mut buf = vec![0; (self.big_mib[i] * MIB) as usize];
        rng.fill_bytes(&mut buf);
        buf
    }

    fn fill(&mut self, small: usize, rng: &mut Rng) -> Result<()> {
        let mut list = Vec::new();
        for i in 0..small {
            let rel = PathBuf::from(format!("d{}/f{i}.dat", i as u64 % DIRS));
            list.push(self.stage(rel, &Self::small_content(rng))?);
        }
        for i in 0..self.big_mib.len() {
            let content = self.big_content(i, rng);
            list.push(self.stage(Self::big(i), &content)?);
        }
        self.apply(list)
    }

    /// One round of changes, staged; returns them and a description.
    fn prepare(&mut self, rng: &mut Rng) -> Result<(Vec<Change>, String)> {
        let mut list = Vec::new();
        let mut small = self.small.clone();
        for _ in 0..20 {
            let rel = rng.choose(&small).clone();
            list.push(self.stage(rel, &Self::small_content(rng))?);
        }
        for _ in 0..5.min(small.len().saturating_sub(1)) {
            let rel = small.swap_remove(rng.index(small.len()));
            list.push(Change::Remove { rel });
        }
        for _ in 0..5 {
            self.added += 1;
            let rel = PathBuf::from(format!("d{}/new{}.dat", rng.below(DIRS), self.added));
            list.push(self.stage(rel, &Self::small_content(rng))?);
        }
        let n = self.big_mib.len();
        let whole = rng.index(n);
        let edited = (whole + 1 + rng.index(n - 1)) % n;
        let content = self.big_content(whole, rng);
        list.push(self.stage(Self::big(whole), &content)?);
        let rel = Self::big(edited);
        let path = self.root.join(&rel);
        let mut now = fs::read(&path).map_err(io_err("reading", &path))?;
        let at = rng.below(now.len() as u64 / 8) * 8;
        let bytes = rng.next_u64().to_le_bytes();
        now[at as usize..at as usize + 8].copy_from_slice(&bytes);
        list.push(Change::Edit {
            rel,
            at,
            bytes,
            version: version(&now),
        });
        let what = format!("b{whole} rewritten, b{edited} edited");
        Ok((list, what))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks on the target
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process with its stderr appended to a log; SIGKILLed on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(ferry: &Path, args: &[&OsStr], log: &Path, stdout: bool) -> Result<Proc> {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err("opening", log))?;
        let child = Command::new(ferry)
            .args(args)
            .env_remove("FERRY_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(stderr)
            .spawn()
            .map_err(setup(format!("spawning {}", ferry.display())))?;
        Ok(Proc { child })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM (a clean stop, not one of the kill points), SIGKILL
    /// after [`START_DEADLINE`].
    fn stop(mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        while self.exited().is_none() && start.elapsed() < START_DEADLINE {
            // A condition wait: the deadline bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// `Some(success)` once exited.
    fn exited(&mut self) -> Option<bool> {
        self.child.try_wait().ok().flatten().map(|s| s.success())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `ferry serve` and waits for its `listening ADDR node ID` line; `None` when it
/// exits without one (the port still held after a kill).
fn start_server(ferry: &Path, args: &[&OsStr], log: &Path) -> Result<Option<(Proc, String)>> {
    let mut p = Proc::spawn(ferry, args, log, true)?;
    let stdout = p.child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_DEADLINE).unwrap_or_default();
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["listening", addr, "node", _] => Ok(Some((p, (*addr).to_owned()))),
        _ => {
            p.kill();
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Server,
    Watch,
    Sync,
}

/// An unkilled round: its length, and when DST held temp files.
#[derive(Debug)]
struct Timeline {
    total: Duration,
    temps: Option<(Duration, Duration)>,
}

impl Timeline {
    fn draw(&self, rng: &mut Rng) -> Duration {
        let (from, to) = match self.temps {
            Some(t) if rng.below(2) == 0 => t,
            _ => (Duration::ZERO, self.total.max(MIN_WINDOW)),
        };
        from + (to - from).mul_f64(rng.next_f64())
    }
}

/// One kill point's outcome.
struct Kill {
    victim: Victim,
    delay: Duration,
    temps: usize,
    temp_bytes: u64,
    torn: Vec<String>,
    converge: Duration,
}

struct Harness {
    ferry: PathBuf,
    rng: Rng,
    source: Source,
    dst: PathBuf,
    client_home: PathBuf,
    client_log: PathBuf,
    serve_log: PathBuf,
    serve_args: Vec<OsString>,
    server: Proc,
    url: String,
    no_fsync: bool,
    watch: Option<Proc>,
}

impl Harness {
    fn client(&self, what: &str) -> Result<Proc> {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new(what),
            self.source.root.as_os_str(),
            OsStr::new(&self.url),
            OsStr::new("--home"),
            self.client_home.as_os_str(),
        ];
        if self.no_fsync {
            args.push(OsStr::new("--no-fsync"));
        }
        Proc::spawn(&self.ferry, &args, &self.client_log, false)
    }

    fn logs(&self) -> String {
        format!(
            "{}{}",
            file_tail("client log", &self.client_log),
            file_tail("server log", &self.serve_log)
        )
    }

    /// Starts the server again on its address, retrying while the port is still held.
    fn restart_server(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            let args: Vec<&OsStr> = self.serve_args.iter().map(OsString::as_os_str).collect();
            if let Some((p, _)) = start_server(&self.ferry, &args, &self.serve_log)? {
                self.server = p;
                return Ok(());
            }
            if start.elapsed() > START_DEADLINE {
                return Err(Failure::Wrong(format!(
                    "ferry serve did not start again{}",
                    self.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until DST mirrors SRC with no temp file left, failing if a process dies.
    fn converge(&mut self, step: &str, mut sync: Option<&mut Proc>) -> Result<Timeline> {
        let start = Instant::now();
        let mut temps: Option<(Duration, Duration)> = None;
        loop {
            let dead = if self.server.exited().is_some() {
                Some("ferry serve exited")
            } else if self.watch.as_mut().and_then(Proc::exited).is_some() {
                Some("ferry watch exited")
            } else if sync.as_mut().and_then(|s| s.exited()) == Some(false) {
                Some("ferry sync failed")
            } else {
                None
            };
            if let Some(dead) = dead {
                return Err(Failure::Wrong(format!(
                    "{dead} during {step}{}",
                    self.logs()
                )));
            }
            let at = start.elapsed();
            let why = if temp_files(&self.dst).is_empty() {
                match converged(&self.source.root, &self.dst) {
                    Ok(()) => return Ok(Timeline { total: at, temps }),
                    Err(why) => why,
                }
            } else {
                temps = Some((temps.map_or(at, |t| t.0), at));
                "temp files in DST".to_owned()
            };
            if at > CONVERGE_DEADLINE {
                return Err(Failure::Wrong(format!(
                    "DST did not converge within {CONVERGE_DEADLINE:?} after {step}: {why}{}",
                    self.logs()
                )));
            }
            // A condition wait: the deadline bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    fn calibrate(&mut self, victim: Victim) -> Result<Timeline> {
        if victim == Victim::Sync {
            // A one-shot sync replaces the watch for this round.
            if let Some(w) = self.watch.take() {
                w.stop();
            }
        }
        let (changes, _) = self.source.prepare(&mut self.rng)?;
        self.source.apply(changes)?;
        let mut sync = match victim {
            Victim::Sync => Some(self.client("sync")?),
            _ => None,
        };
        let t = self.converge(&format!("an unkilled {victim:?} round"), sync.as_mut())?;
        if victim == Victim::Sync {
            self.watch = Some(self.client("watch")?);
        }
        Ok(t)
    }

    fn round(&mut self, n: usize, victim: Victim, timeline: &Timeline) -> Result<Kill> {
        if victim == Victim::Sync {
            // A one-shot sync replaces the watch for this round.
            if let Some(w) = self.watch.take() {
                w.stop();
            }
        }
        let (changes, what) = self.source.prepare(&mut self.rng)?;
        self.source.apply(changes)?;
        let mut sync = match victim {
            Victim::Sync => Some(self.client("sync")?),
            _ => None,
        };
        let delay = timeline.draw(&mut self.rng);
        // The fault itself: a random moment, not a synchronisation.
        std::thread::sleep(delay);
        match victim {
            Victim::Server => self.server.kill(),
            Victim::Watch => {
                if let Some(w) = self.watch.as_mut() {
                    w.kill();
                }
            }
            Victim::Sync => {
                if let Some(s) = sync.as_mut() {
                    s.kill();
                }
            }
        }
        let found = temp_files(&self.dst);
        let (temps, temp_bytes) = (found.len(), found.iter().map(|(_, n)| n).sum::<u64>());
        let torn = torn_files(&self.dst, &self.source.history);
        let step = format!("kill {n} ({victim:?} after {delay:?}; {what})");
        let start = Instant::now();
        match victim {
            Victim::Server => self.restart_server()?,
            Victim::Watch => self.watch = Some(self.client("watch")?),
            Victim::Sync => {
                let mut again = self.client("sync")?;
                self.converge(&step, Some(&mut again))?;
                self.watch = Some(self.client("watch")?);
            }
        }
        self.converge(&step, None)?;
        Ok(Kill {
            victim,
            delay,
            temps,
            temp_bytes,
            torn,
            converge: start.elapsed(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

fn run(args: Args) -> Result<()> {
    let ferry = locate_ferry(args.ferry.as_deref(), "--ferry PATH")?;
    let json = args.json;
    in_workdir(
        "crash_bench",
        args.workdir.as_deref(),
        "crash-bench-",
        args.keep,
        json,
        |dir| bench(&args, &ferry, &dir),
    )
}

fn bench(args: &Args, ferry: &Path, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let seed = args.seed;
    eprintln!("crash_bench: seed {seed} (replay the same kill points with --seed {seed})");
    let mut rng = Rng::new(seed);
    let mut source = Source::new(dir.join("src"), dir.join("stage"), args.big_mib.clone())?;
    source.fill(args.small, &mut rng)?;
    let dst = dir.join("dst");
    benchkit::fresh_dir(&dst)?;
    let client_home = dir.join("home-client");
    let server_home = dir.join("home-server");
    let out = run_tool(
        "ferry id",
        ferry,
        &[
            OsStr::new("id"),
            OsStr::new("--home"),
            client_home.as_os_str(),
        ],
    )?;
    let client_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let serve_log = dir.join("serve.log");
    let client_log = dir.join("client.log");
    for log in [&serve_log, &client_log] {
        let _ = fs::remove_file(log);
    }
    let mut serve_args: Vec<OsString> = vec![
        "serve".into(),
        "--home".into(),
        server_home.clone().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--folder".into(),
        {
            let mut f = OsString::from("f=");
            f.push(&dst);
            f
        },
        "--peer".into(),
        client_id.into(),
    ];
    if !args.fsync {
        serve_args.push("--no-fsync".into());
    }
    let argv: Vec<&OsStr> = serve_args.iter().map(OsString::as_os_str).collect();
    let (server, addr) = start_server(ferry, &argv, &serve_log)?.ok_or_else(|| {
        Failure::Setup(format!(
            "ferry serve did not start{}",
            file_tail("server log", &serve_log)
        ))
    })?;
    let at = serve_args
        .iter()
        .position(|a| a == "--listen")
        .expect("--listen")
        + 1;
    serve_args[at] = addr.clone().into();
    let server_node = String::from_utf8_lossy(
        &run_tool(
            "ferry id",
            ferry,
            &[
                OsStr::new("id"),
                OsStr::new("--home"),
                server_home.as_os_str(),
            ],
        )?
        .stdout,
    )
    .trim()
    .to_owned();
    let mut h = Harness {
        ferry: ferry.to_owned(),
        rng,
        source,
        dst,
        client_home,
        client_log,
        serve_log,
        serve_args,
        server,
        url: format!("ferry://{server_node}@{addr}/f"),
        no_fsync: !args.fsync,
        watch: None,
    };
    h.watch = Some(h.client("watch")?);
    let initial = h.converge("the initial sync", None)?;
    let watched = h.calibrate(Victim::Watch)?;
    let synced = h.calibrate(Victim::Sync)?;
    eprintln!(
        "crash_bench: initial sync {:.2?}; an unkilled round: watch {:.2?} (temp files {:.2?}), \
         sync {:.2?} (temp files {:.2?})",
        initial.total, watched.total, watched.temps, synced.total, synced.temps
    );

    let receivers = args.kills / 2;
    let senders = args.kills - receivers;
    let mut victims: Vec<Victim> = std::iter::repeat_n(Victim::Server, receivers)
        .chain((0..senders).map(|i| {
            if i % 3 == 2 {
                Victim::Sync
            } else {
                Victim::Watch
            }
        }))
        .collect();
    for i in (1..victims.len()).rev() {
        let j = h.rng.index(i + 1);
        victims.swap(i, j);
    }
    let mut kills = Vec::new();
    for (n, victim) in victims.into_iter().enumerate() {
        let timeline = if victim == Victim::Sync {
            &synced
        } else {
            &watched
        };
        let k = h.round(n + 1, victim, timeline).map_err(|f| match f {
            Failure::Wrong(m) => Failure::Wrong(format!("seed {seed}: {m}")),
            other => other,
        })?;
        eprintln!(
            "kill {:>3} {:<6} after {:>8.1?}: {:>2} temp file(s) ({:>5.1} MiB), {} violation(s), \
             converged in {:.2?}",
            n + 1,
            format!("{:?}", k.victim),
            k.delay,
            k.temps,
            k.temp_bytes as f64 / MIB as f64,
            k.torn.len(),
            k.converge
        );
        for t in &k.torn {
            eprintln!("    VIOLATION: {t}");
        }
        kills.push(k);
    }
    let reused = fs::read_to_string(&h.serve_log)
        .unwrap_or_default()
        .matches("reusing the chunks of a leftover temp file")
        .count();
    report(args, &kills, reused, started.elapsed())
}

fn report(args: &Args, kills: &[Kill], reused: usize, elapsed: Duration) -> Result<()> {
    let by = |v: Victim| kills.iter().filter(move |k| k.victim == v);
    let mid = |v: Victim| by(v).filter(|k| k.temps > 0).count();
    let violations: usize = kills.iter().map(|k| k.torn.len()).sum();
    let slowest = kills.iter().map(|k| k.converge).max().unwrap_or_default();
    let mut text = String::new();
    let _ = writeln!(text, "\ncrash_bench summary (seed {})", args.seed);
    let _ = writeln!(
        text,
        "  tree: {} small files, large files of {:?} MiB; fsync {}",
        args.small,
        args.big_mib,
        if args.fsync { "on" } else { "off" }
    );
    for v in [Victim::Server, Victim::Watch, Victim::Sync] {
        let _ = writeln!(
            text,
            "  {:<28} {:>3} kill points, {:>3} mid-transfer (temp files present at the kill)",
            match v {
                Victim::Server => "receiver (ferry serve):",
                Victim::Watch => "sender (ferry watch):",
                Victim::Sync => "sender (ferry sync):",
            },
            by(v).count(),
            mid(v)
        );
    }
    let mid_all = kills.iter().filter(|k| k.temps > 0).count();
    let _ = writeln!(
        text,
        "  total: {} kill points, {mid_all} mid-transfer; leftover temp files reused by a \
         restarted receiver: {reused} time(s)",
        kills.len()
    );
    let _ = writeln!(
        text,
        "  violations (a) file under its final name not a source version: {violations}"
    );
    let _ = writeln!(
        text,
        "  (b) every kill point converged to an exact mirror with no temp file left \
         (slowest {slowest:.2?})"
    );
    let _ = writeln!(text, "  time: {elapsed:.1?}");
    if args.json {
        println!(
            "{}",
            json!({
                "benchmark": "crash_bench",
                "ok": violations == 0,
                "seed": args.seed,
                "kills": kills.len(),
                "mid_transfer": mid_all,
                "receiver_kills": by(Victim::Server).count(),
                "sender_kills": kills.len() - by(Victim::Server).count(),
                "violations": violations,
                "leftovers_reused": reused,
                "seconds": elapsed.as_secs_f64(),
            })
        );
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if violations > 0 {
        return Err(Failure::Wrong(format!(
            "{violations} violation(s) of (a) with seed {}",
            args.seed
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        "crash_bench",
        USAGE,
        parse_args(std::env::args_os().skip(1)),
        |a| a.json,
        run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        let parse = |v: &[&str]| parse_args(v.iter().map(OsString::from));
        let a = parse(&["--kills", "8", "--seed", "3", "--big", "1,2"])
            .unwrap()
            .unwrap();
        assert_eq!((a.kills, a.seed, a.big_mib), (8, 3, vec![1, 2]));
        assert!(parse(&["--big", "4"]).is_err());
        assert!(parse(&["--kills", "0"]).is_err());
        assert!(parse(&["-h"]).unwrap().is_none());
    }
}
