//! `bench_remote`: the initial copy of the benchmark tree to a remote target on loopback,
//! `ferry sync` to `ferry serve` versus `rsync -a --delete` to an rsync daemon, both behind
//! `byteproxy.py` (wall time of the client, payload bytes on the wire both ways, and the CPU
//! time of client, server and proxy: on a machine with few cores a copy that keeps them all
//! busy is as fast as the CPU time it needs allows).
//!
//! The tree is generated once (the same deterministic tree as `bench_sync`, see
//! [`ferry_examples::workload`]) and read once so the page cache is warm. Then, after one
//! untimed, verified warm-up of each tool, every round measures:
//!
//! 1. ferry: `ferry serve --no-fsync` on 127.0.0.1:0 receiving into a new empty directory
//!    `dst-ferry/round-N` (started, and listening, before the clock starts) with
//!    `byteproxy.py` in front; then the timed
//!    `ferry sync --json --no-fsync SRC ferry://ID@127.0.0.1:PROXY/bench`; wire bytes are
//!    the proxy's payload counts in both directions once the connection has closed;
//! 2. rsync: an `rsync --daemon` on loopback (module `bench` = `dst-rsync`) behind its own
//!    proxy; the timed `rsync -a --delete SRC/ rsync://127.0.0.1:PROXY/bench/round-N/` into
//!    a new directory.
//!
//! Both targets are verified identical to SRC after every run. rsync does not fsync, hence
//! `--no-fsync` for ferry unless `--fsync`.
//!
//! No target is deleted between timed runs, only at the end: on a file system mounted with
//! online `discard` (this machine's ext4 is), creating files in the seconds after a large
//! deletion is several times slower for any tool (measured: `rsync -a` of the tree 0.9 s
//! into a new directory, 2–7 s right after deleting the previous copy), which would swamp
//! the comparison. The warm-up runs absorb the after-effects of deleting the previous
//! invocation's leftovers.
//!
//! On tmpfs it is the other way round: each copy takes memory, and a copy that lands in
//! memory the VM never touched before is written 1.5–2× slower by either tool (measured:
//! both tools' 4th and 5th rounds of a 5-round run, after the tmpfs was emptied). Kept
//! copies then mix the two states in the medians. There (tmpfs has no discard) each copy
//! is removed once verified, untimed, so every run writes into memory the previous ones
//! freed.
//!
//! Run by hand (never in CI):
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node -p ferry-examples
//! /work/target-bench/release/bench_remote [--runs N] [--scale full|small] [--json] …
//! ```

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ferry_examples::benchkit::{
    self, fresh_dir, median, ratio, setup, verdict, verify, ArgParser, Failure, Result,
};
use ferry_examples::procfs;
use ferry_examples::services::{
    node_id, timed_client, ByteProxy, FerryServer, RsyncService, ServeSpec, Transfer,
};
use ferry_examples::tools::{
    file_tail, find_rsync, first_line, locate_ferry, modified, python3, script,
};
use ferry_examples::workload::{gen_incompressible_file, Scale, TreePlan, TreeStats, MIB};
use serde_json::{json, Value};

/// Target: ferry's median wall time ≤ this × rsync's.
const TARGET_WALL_RATIO: f64 = 1.0;
/// Target: ferry's wire bytes (both directions) ≤ this × the tree's size.
const TARGET_FERRY_BYTES_RATIO: f64 = 1.05;

/// Default directory of `byteproxy.py`.
const DEFAULT_TOOLS: &str = "/work/shared/bench";
/// The file `--bigfile` copies.
const BIG_FILE: &str = "bigfile";
/// The ferry folder's name and the rsync module's.
const FOLDER: &str = "bench";
/// Default `--deadline`, in seconds.
const DEFAULT_DEADLINE_SECS: u64 = 600;

const USAGE: &str = "\
bench_remote: initial copy of the benchmark tree to a remote target on loopback:
`ferry sync` to `ferry serve` versus rsync to its daemon, both behind byteproxy.py
(wall time, bytes on the wire, CPU time)

USAGE:
    CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node -p ferry-examples
    /work/target-bench/release/bench_remote [OPTIONS]

OPTIONS:
    --scale full|small   workload size: full = 10,000 files / 500 dirs / ~270 MiB (default),
                         small = 1,000 files / 50 dirs / ~27 MiB (the bench_sync tree)
    --bigfile            copy one incompressible file instead of the tree (1 GiB; 128 MiB
                         with --scale small): the cost per byte rather than per file. The
                         issue's targets are for the tree; here they are shown as information
    --seed N             workload seed (default 1)
    --runs N             timed rounds per tool; medians are reported (default 3)
    --workdir DIR        where src, dst-ferry, dst-rsync, the two ferry homes, the rsync
                         daemon's files and the logs go (created if missing; those are
                         replaced; nothing is deleted at the end). Default: a fresh temporary
                         directory under /tmp, removed at the end. Every run writes a new copy
                         (dst-*/round-N): plan on (runs + 1) × 2 × the tree's size
                         (on tmpfs each copy is removed once verified, see the source)
                         On a disk whose file creation is slow or erratic (this machine's
                         ext4 with online discard), --workdir /dev/shm/NAME (tmpfs) compares
                         the tools rather than the disk
    --tools DIR          where byteproxy.py lives (default /work/shared/bench)
    --ferry PATH         ferry binary (default: `ferry` next to this binary, else
                         <workspace>/target/release/ferry)
    --fsync              let ferry fsync (drop --no-fsync from `ferry serve` and `ferry sync`;
                         rsync never fsyncs, so the default is --no-fsync)
    --no-warmup          skip the untimed warm-up run of each tool
    --deadline SECS      kill a client run that takes longer (default 600)
    --json               print one machine-readable JSON object on stdout instead of tables
    --keep               keep the default temporary directory
    -h, --help           show this help

Exit status: 0 when all runs completed and every result was verified (missed targets are
reported as MISS but do not change the status), 1 on usage/setup errors (rsync included),
3 when ferry failed or produced a target that differs from SRC.
";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    scale: Scale,
    /// One large file instead of the tree.
    bigfile: bool,
    seed: u64,
    runs: usize,
    workdir: Option<PathBuf>,
    tools: PathBuf,
    ferry: Option<PathBuf>,
    fsync: bool,
    warmup: bool,
    deadline: Duration,
    json: bool,
    keep: bool,
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        scale: Scale::Full,
        bigfile: false,
        seed: 1,
        runs: 3,
        workdir: None,
        tools: PathBuf::from(DEFAULT_TOOLS),
        ferry: None,
        fsync: false,
        warmup: true,
        deadline: Duration::from_secs(DEFAULT_DEADLINE_SECS),
        json: false,
        keep: false,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--scale" => args.scale = p.text("--scale")?.parse()?,
            "--bigfile" => args.bigfile = true,
            "--seed" => args.seed = p.number("--seed")?,
            "--runs" => args.runs = p.positive("--runs")?,
            "--workdir" => args.workdir = Some(PathBuf::from(p.value("--workdir")?)),
            "--tools" => args.tools = PathBuf::from(p.value("--tools")?),
            "--ferry" => args.ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--fsync" => args.fsync = true,
            "--no-warmup" => args.warmup = false,
            "--deadline" => {
                args.deadline = Duration::from_secs(p.positive("--deadline")? as u64);
            }
            "--json" => args.json = true,
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------------
// Tools and layout
// ---------------------------------------------------------------------------------------------

/// The external programs the benchmark runs.
struct Tools {
    python: PathBuf,
    byteproxy: PathBuf,
    ferry: PathBuf,
    ferry_version: String,
    rsync: PathBuf,
    rsync_version: String,
}

fn find_tools(args: &Args) -> Result<Tools> {
    let python = python3()?;
    let byteproxy = script(&args.tools, "byteproxy.py")?;
    let (rsync, rsync_version) = find_rsync("")?;
    let ferry = locate_ferry(args.ferry.as_deref(), "--ferry PATH")?;
    let ferry_version = first_line(&ferry, "--version");
    Ok(Tools {
        python,
        byteproxy,
        ferry,
        ferry_version,
        rsync,
        rsync_version,
    })
}

/// Where everything lives in the working directory.
struct Layout {
    src: PathBuf,
    dst_f: PathBuf,
    dst_r: PathBuf,
    client_home: PathBuf,
    server_home: PathBuf,
    rsyncd: PathBuf,
    serve_log: PathBuf,
    ferry_proxy_stats: PathBuf,
}

impl Layout {
    fn new(workdir: &Path) -> Self {
        Layout {
            src: workdir.join("src"),
            dst_f: workdir.join("dst-ferry"),
            dst_r: workdir.join("dst-rsync"),
            client_home: workdir.join("home-client"),
            server_home: workdir.join("home-server"),
            rsyncd: workdir.join("rsyncd"),
            serve_log: workdir.join("ferry-serve.log"),
            ferry_proxy_stats: workdir.join("ferry-proxy.json"),
        }
    }
}

/// Reads every regular file under `root` once (the untimed page-cache warm-up) and returns
/// their number and total size in bytes.
fn read_tree(root: &Path) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let t = entry.file_type()?;
            if t.is_dir() {
                stack.push(entry.path());
            } else if t.is_file() {
                files += 1;
                let mut f = fs::File::open(entry.path())?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                }
            }
        }
    }
    Ok((files, bytes))
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// Counters of ferry's `--json` summary this benchmark reports.
const FERRY_COUNTERS: [&str; 5] = [
    "wire_bytes_out",
    "wire_bytes_in",
    "bytes_sent",
    "bytes_metadata",
    "created",
];

/// CPU seconds (user + system) of one run's three processes.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// The client, from spawn to exit.
    client: Option<f64>,
    /// The server while the client ran (rsync: the daemon's process for the connection).
    server: Option<f64>,
    /// The byte proxy while the client ran.
    proxy: Option<f64>,
}

impl Cpu {
    fn total(&self) -> Option<f64> {
        Some(self.client? + self.server? + self.proxy?)
    }

    /// The share of all CPUs' time the three used over `wall`.
    fn busy(&self, wall: f64) -> Option<f64> {
        Some(self.total()? / (wall * procfs::cpus() as f64))
    }

    fn json(&self, wall: f64) -> Value {
        json!({ "client": self.client, "server": self.server, "proxy": self.proxy,
                "total": self.total(), "busy": self.busy(wall) })
    }
}

/// The medians of the runs' CPU figures, and of their share of the CPUs.
fn median_cpu(runs: &[(f64, Cpu)]) -> (Cpu, Option<f64>) {
    let of = |f: &dyn Fn(&Cpu) -> Option<f64>| {
        let v: Option<Vec<f64>> = runs.iter().map(|(_, c)| f(c)).collect();
        v.and_then(|v| median(&v))
    };
    let busy: Option<Vec<f64>> = runs.iter().map(|(w, c)| c.busy(*w)).collect();
    (
        Cpu {
            client: of(&|c| c.client),
            server: of(&|c| c.server),
            proxy: of(&|c| c.proxy),
        },
        busy.and_then(|v| median(&v)),
    )
}

/// One timed `ferry sync` to `ferry serve`.
#[derive(Clone, Debug)]
struct FerryRun {
    wall: f64,
    c2s: u64,
    s2c: u64,
    cpu: Cpu,
    /// The [`FERRY_COUNTERS`], in order (`None` if the summary lacks one).
    counters: [Option<u64>; 5],
}

impl FerryRun {
    fn bytes(&self) -> u64 {
        self.c2s + self.s2c
    }

    fn counter(&self, name: &str) -> Option<u64> {
        let i = FERRY_COUNTERS.iter().position(|c| *c == name)?;
        self.counters[i]
    }

    /// Wire bytes as ferry itself counts them (out + in), for comparison with the proxy.
    fn own_bytes(&self) -> Option<u64> {
        Some(self.counter("wire_bytes_out")? + self.counter("wire_bytes_in")?)
    }
}

/// One timed rsync push to the daemon.
#[derive(Clone, Copy, Debug)]
struct RsyncRun {
    wall: f64,
    c2s: u64,
    s2c: u64,
    cpu: Cpu,
}

impl RsyncRun {
    fn bytes(&self) -> u64 {
        self.c2s + self.s2c
    }
}

/// Everything a round needs.
struct Context<'a> {
    args: &'a Args,
    tools: &'a Tools,
    layout: &'a Layout,
    client_id: String,
    server_id: String,
    /// Remove each copy once verified (the workdir is on tmpfs, see the module doc).
    remove_copies: bool,
    /// Clock ticks per second, the unit of the CPU times read from /proc.
    ticks: Option<u64>,
}

impl Context<'_> {
    /// `ticks` in seconds.
    fn secs(&self, ticks: Option<procfs::CpuTicks>) -> Option<f64> {
        Some(ticks?.total() as f64 / self.ticks? as f64)
    }

    /// Removes a verified copy when the workdir is on tmpfs (see the module doc).
    fn done_with(&self, dst: &Path) -> Result<()> {
        if self.remove_copies {
            fs::remove_dir_all(dst)
                .map_err(|e| Failure::Setup(format!("remove {}: {e}", dst.display())))?;
        }
        Ok(())
    }

    /// The `ferry sync` flags besides SRC and the URL.
    fn sync_flags(&self) -> Vec<&OsStr> {
        let mut v: Vec<&OsStr> = vec![
            OsStr::new("sync"),
            OsStr::new("--home"),
            self.layout.client_home.as_os_str(),
            OsStr::new("--json"),
        ];
        if !self.args.fsync {
            v.push(OsStr::new("--no-fsync"));
        }
        v
    }
}

/// Parses ferry's `--json` stdout (one JSON object) into the [`FERRY_COUNTERS`].
fn ferry_counters(what: &str, t: &Transfer) -> Result<[Option<u64>; 5]> {
    let text = String::from_utf8_lossy(&t.output.stdout);
    let summary: Value = serde_json::from_str(text.trim()).map_err(|e| {
        Failure::Wrong(format!(
            "{what}: stdout is not the one JSON object `--json` promises ({e}): {:?}",
            text.chars().take(300).collect::<String>()
        ))
    })?;
    let counters = FERRY_COUNTERS.map(|c| summary.get(c).and_then(Value::as_u64));
    for (name, v) in FERRY_COUNTERS.iter().zip(&counters) {
        if v.is_none() {
            eprintln!("WARNING: {what}: ferry's JSON summary has no counter {name:?}");
        }
    }
    Ok(counters)
}

/// A new empty directory `tag` under `parent`.
fn new_dir(parent: &Path, tag: &str) -> Result<PathBuf> {
    let d = parent.join(tag);
    fs::create_dir(&d).map_err(setup(format!("creating {}", d.display())))?;
    Ok(d)
}

/// One ferry run into a new empty directory `dst-ferry/TAG`: server up, then the timed
/// client, then checks.
fn run_ferry(ctx: &Context<'_>, what: &str, tag: &str) -> Result<FerryRun> {
    let (args, tools, layout) = (ctx.args, ctx.tools, ctx.layout);
    let dst = new_dir(&layout.dst_f, tag)?;
    let mut server = FerryServer::start(&ServeSpec {
        ferry: &tools.ferry,
        home: &layout.server_home,
        listen: "127.0.0.1:0",
        folder: FOLDER,
        path: &dst,
        peer: &ctx.client_id,
        no_fsync: !args.fsync,
        log: &layout.serve_log,
    })?;
    if server.node() != ctx.server_id {
        return Err(Failure::Wrong(format!(
            "{what}: ferry serve announced node {} but `ferry id` of its home says {}",
            server.node(),
            ctx.server_id
        )));
    }
    let mut proxy = ByteProxy::start(
        &tools.python,
        &tools.byteproxy,
        server.addr().port(),
        layout.ferry_proxy_stats.clone(),
    )?;
    let url = format!(
        "ferry://{}@127.0.0.1:{}/{FOLDER}",
        ctx.server_id,
        proxy.port()
    );
    let mut argv = ctx.sync_flags();
    argv.push(layout.src.as_os_str());
    argv.push(OsStr::new(&url));
    // Earlier writeback must not leak into the timed run.
    rustix::fs::sync();
    let log = server.log().to_path_buf();
    let server_before = server.cpu();
    let t = timed_client(
        what,
        &mut proxy,
        &tools.ferry,
        &argv,
        args.deadline,
        true,
        || file_tail("ferry serve log", &log),
    )?;
    let server_cpu = server_before.zip(server.cpu()).map(|(b, a)| a.since(b));
    let counters = ferry_counters(what, &t)?;
    server.check()?;
    verify(what, &layout.src, &dst)?;
    server.stop()?;
    ctx.done_with(&dst)?;
    Ok(FerryRun {
        wall: t.wall.as_secs_f64(),
        c2s: t.c2s,
        s2c: t.s2c,
        cpu: Cpu {
            client: ctx.secs(t.cpu),
            server: ctx.secs(server_cpu),
            proxy: ctx.secs(t.proxy_cpu),
        },
        counters,
    })
}

/// One rsync run into a new directory `TAG` of the daemon's module (`dst-rsync/TAG`, made by
/// rsync).
fn run_rsync(
    ctx: &Context<'_>,
    service: &mut RsyncService,
    what: &str,
    tag: &str,
) -> Result<RsyncRun> {
    let layout = ctx.layout;
    let dst = layout.dst_r.join(tag);
    if dst.exists() {
        return Err(Failure::Setup(format!("{} already exists", dst.display())));
    }
    rustix::fs::sync();
    let served_before = service.served_cpu();
    let t = service.push(
        what,
        &ctx.tools.rsync,
        &[OsStr::new("-a"), OsStr::new("--delete")],
        &layout.src,
        Some(tag),
        ctx.args.deadline,
    )?;
    let served = served_before
        .zip(service.served_cpu())
        .map(|(b, a)| a.since(b));
    verify(what, &layout.src, &dst)?;
    ctx.done_with(&dst)?;
    Ok(RsyncRun {
        wall: t.wall.as_secs_f64(),
        c2s: t.c2s,
        s2c: t.s2c,
        cpu: Cpu {
            client: ctx.secs(t.cpu),
            server: ctx.secs(served),
            proxy: ctx.secs(t.proxy_cpu),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// The machine around the measurement: where the targets live and how busy it was.
struct Environment {
    /// "ext4 on /dev/vda at /", from `/proc/self/mountinfo`.
    workdir_fs: String,
    /// The 1-minute load average before the warm-up and after the last run.
    load: [Option<f64>; 2],
}

fn load1() -> Option<f64> {
    procfs::load_average().ok().map(|l| l[0])
}

fn describe_fs(dir: &Path) -> String {
    procfs::mount_of(dir).map_or_else(
        || "unknown file system".to_string(),
        |m| {
            format!(
                "{} on {} at {}",
                m.fs_type,
                m.source,
                m.mount_point.display()
            )
        },
    )
}

/// The tree as generated and as read back.
struct Tree {
    stats: TreeStats,
    /// Total bytes of the regular files in SRC (the denominator of the byte ratios).
    bytes: u64,
    gen_secs: f64,
}

struct Results {
    ferry: Vec<FerryRun>,
    rsync: Vec<RsyncRun>,
}

/// The headline numbers from medians.
struct Headline {
    ferry_wall: Option<f64>,
    rsync_wall: Option<f64>,
    ferry_bytes: Option<f64>,
    rsync_bytes: Option<f64>,
    wall_ratio: Option<f64>,
    ferry_bytes_ratio: Option<f64>,
    rsync_bytes_ratio: Option<f64>,
}

/// The median CPU figures as JSON.
fn cpu_json((cpu, busy): &(Cpu, Option<f64>)) -> Value {
    json!({ "client": cpu.client, "server": cpu.server, "proxy": cpu.proxy,
            "total": cpu.total(), "busy": busy })
}

impl Results {
    fn ferry_cpu(&self) -> (Cpu, Option<f64>) {
        median_cpu(
            &self
                .ferry
                .iter()
                .map(|r| (r.wall, r.cpu))
                .collect::<Vec<_>>(),
        )
    }

    fn rsync_cpu(&self) -> (Cpu, Option<f64>) {
        median_cpu(
            &self
                .rsync
                .iter()
                .map(|r| (r.wall, r.cpu))
                .collect::<Vec<_>>(),
        )
    }

    fn headline(&self, tree_bytes: u64) -> Headline {
        let tree = Some(tree_bytes as f64);
        let ferry_wall = median(&self.ferry.iter().map(|r| r.wall).collect::<Vec<_>>());
        let rsync_wall = median(&self.rsync.iter().map(|r| r.wall).collect::<Vec<_>>());
        let ferry_bytes = median(
            &self
                .ferry
                .iter()
                .map(|r| r.bytes() as f64)
                .collect::<Vec<_>>(),
        );
        let rsync_bytes = median(
            &self
                .rsync
                .iter()
                .map(|r| r.bytes() as f64)
                .collect::<Vec<_>>(),
        );
        Headline {
            ferry_wall,
            rsync_wall,
            ferry_bytes,
            rsync_bytes,
            wall_ratio: ratio(ferry_wall, rsync_wall),
            ferry_bytes_ratio: ratio(ferry_bytes, tree),
            rsync_bytes_ratio: ratio(rsync_bytes, tree),
        }
    }
}

/// A byte count in MiB.
fn mib(b: Option<f64>) -> String {
    b.map_or("-".into(), |b| format!("{:.2} MiB", b / MIB as f64))
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.3} s"))
}

fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}×"))
}

const WALL_METHOD: &str = "std::time::Instant from spawn to exit of the client process \
                           (ferry sync / rsync); the server is already listening";
const BYTES_METHOD: &str = "byteproxy.py payload bytes, both directions, client <-> server \
                            (TCP payload: TLS records for ferry; no TCP/IP headers)";
const CPU_METHOD: &str = "user + system seconds from /proc (10 ms ticks): the client once it \
                          has exited (before it is reaped); ferry serve, the proxy and the \
                          rsync daemon with the connection processes it reaped, from just \
                          before the client starts until its connection has closed; busy = \
                          the three's total / (wall × CPUs)";
const CACHE_METHOD: &str = "warm: SRC generated once and read once untimed; `sync` (untimed) \
                            before every timed run; every run into a new empty directory; \
                            on tmpfs each copy removed (untimed) once verified, elsewhere \
                            nothing deleted between timed runs";

fn ferry_command(ctx: &Context<'_>) -> (String, String) {
    let nf = if ctx.args.fsync { "" } else { " --no-fsync" };
    (
        format!(
            "ferry serve --home HOME_S --listen 127.0.0.1:0 --folder {FOLDER}=DST_F/TAG \
             --peer CLIENT_ID{nf}"
        ),
        format!(
            "ferry sync --home HOME_C --json{nf} SRC ferry://SERVER_ID@127.0.0.1:PROXY/{FOLDER}"
        ),
    )
}

/// The rsync command, as reported.
fn rsync_command() -> String {
    format!("rsync -a --delete SRC/ rsync://127.0.0.1:PROXY/{FOLDER}/TAG/")
}

fn results_json(
    ctx: &Context<'_>,
    workdir: &Path,
    env: &Environment,
    tree: &Tree,
    r: &Results,
) -> Value {
    let h = r.headline(tree.bytes);
    let (serve_cmd, sync_cmd) = ferry_command(ctx);
    let per_run_ratio: Vec<Option<f64>> = r
        .ferry
        .iter()
        .zip(&r.rsync)
        .map(|(f, s)| ratio(Some(f.wall), Some(s.wall)))
        .collect();
    json!({
        "benchmark": "bench_remote",
        "ok": true,
        "scale": ctx.args.scale.as_str(),
        "bigfile": ctx.args.bigfile,
        "seed": ctx.args.seed,
        "runs": ctx.args.runs,
        "warmup": ctx.args.warmup,
        "fsync": ctx.args.fsync,
        "workdir": workdir,
        "workdir_fs": env.workdir_fs,
        "load_average_1m": { "before": env.load[0], "after": env.load[1] },
        "workload": {
            "files": tree.stats.files,
            "dirs": tree.stats.dirs,
            "bytes": tree.bytes,
            "generate_s": tree.gen_secs,
        },
        "tools": {
            "ferry": ctx.tools.ferry,
            "ferry_version": ctx.tools.ferry_version,
            "ferry_serve_command": serve_cmd,
            "ferry_sync_command": sync_cmd,
            "rsync": ctx.tools.rsync,
            "rsync_version": ctx.tools.rsync_version,
            "rsync_command": rsync_command(),
        },
        "method": { "wall": WALL_METHOD, "bytes": BYTES_METHOD, "cache": CACHE_METHOD,
                    "cpu": CPU_METHOD,
                    "statistic": "median over runs" },
        "ferry": {
            "median_wall_s": h.ferry_wall,
            "median_bytes": h.ferry_bytes,
            "median_cpu_s": cpu_json(&r.ferry_cpu()),
            "runs": r.ferry.iter().map(|x| {
                let mut m = serde_json::Map::new();
                m.insert("wall_s".into(), json!(x.wall));
                m.insert("c2s".into(), json!(x.c2s));
                m.insert("s2c".into(), json!(x.s2c));
                m.insert("bytes".into(), json!(x.bytes()));
                m.insert("cpu_s".into(), x.cpu.json(x.wall));
                for (c, v) in FERRY_COUNTERS.iter().zip(&x.counters) {
                    m.insert((*c).into(), json!(v));
                }
                Value::Object(m)
            }).collect::<Vec<_>>(),
        },
        "rsync": {
            "median_wall_s": h.rsync_wall,
            "median_bytes": h.rsync_bytes,
            "median_cpu_s": cpu_json(&r.rsync_cpu()),
            "runs": r.rsync.iter().map(|x| json!({
                "wall_s": x.wall, "c2s": x.c2s, "s2c": x.s2c, "bytes": x.bytes(),
                "cpu_s": x.cpu.json(x.wall),
            })).collect::<Vec<_>>(),
        },
        "ratios": {
            "wall_ferry_vs_rsync": h.wall_ratio,
            "wall_ferry_vs_rsync_per_run": per_run_ratio,
            "ferry_bytes_vs_tree": h.ferry_bytes_ratio,
            "rsync_bytes_vs_tree": h.rsync_bytes_ratio,
        },
        "targets": [
            { "name": "wall_ratio", "value": h.wall_ratio, "limit": TARGET_WALL_RATIO,
              "result": judged(ctx, h.wall_ratio, TARGET_WALL_RATIO) },
            { "name": "ferry_bytes_ratio", "value": h.ferry_bytes_ratio,
              "limit": TARGET_FERRY_BYTES_RATIO,
              "result": judged(ctx, h.ferry_bytes_ratio, TARGET_FERRY_BYTES_RATIO) },
        ],
        "verified": true,
    })
}

/// CPU seconds per run and tool, with the medians.
fn print_cpu(r: &Results) {
    let s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0));
    let row = |label: &str, f: &Cpu, fb: Option<f64>, g: &Cpu, gb: Option<f64>| {
        println!(
            "{label:<7} {:>7} {:>7} {:>7} {:>7} {:>6}   {:>7} {:>7} {:>7} {:>7} {:>6}",
            s(f.client),
            s(f.server),
            s(f.proxy),
            s(f.total()),
            pct(fb),
            s(g.client),
            s(g.server),
            s(g.proxy),
            s(g.total()),
            pct(gb),
        );
    };
    println!();
    println!("{:<7} {:^38}   {:^38}", "cpu (s)", "ferry", "rsync");
    let names = ["client", "server", "proxy", "total", "busy"];
    println!(
        "{:<7} {:>7} {:>7} {:>7} {:>7} {:>6}   {:>7} {:>7} {:>7} {:>7} {:>6}",
        "run",
        names[0],
        names[1],
        names[2],
        names[3],
        names[4],
        names[0],
        names[1],
        names[2],
        names[3],
        names[4],
    );
    for (i, (f, g)) in r.ferry.iter().zip(&r.rsync).enumerate() {
        row(
            &(i + 1).to_string(),
            &f.cpu,
            f.cpu.busy(f.wall),
            &g.cpu,
            g.cpu.busy(g.wall),
        );
    }
    let ((f, fb), (g, gb)) = (r.ferry_cpu(), r.rsync_cpu());
    row("median", &f, fb, &g, gb);
}

/// The verdict on a target, or "(info)" for `--bigfile` (the issue's targets are for the tree).
fn judged(ctx: &Context<'_>, value: Option<f64>, limit: f64) -> &'static str {
    if ctx.args.bigfile {
        "(info)"
    } else {
        verdict(value, limit)
    }
}

fn print_tables(ctx: &Context<'_>, workdir: &Path, env: &Environment, tree: &Tree, r: &Results) {
    let a = ctx.args;
    let h = r.headline(tree.bytes);
    let (serve_cmd, sync_cmd) = ferry_command(ctx);
    println!();
    println!(
        "bench_remote — initial copy to a remote target on loopback; scale={}{} seed={} runs={}: \
         {} files, {} dirs, {:.1} MiB (generated in {:.2} s)",
        a.scale,
        if a.bigfile { " bigfile" } else { "" },
        a.seed,
        a.runs,
        tree.stats.files,
        tree.stats.dirs,
        tree.bytes as f64 / MIB as f64,
        tree.gen_secs
    );
    println!("workdir:  {} ({})", workdir.display(), env.workdir_fs);
    let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    println!(
        "load:     1-minute load average {} before the warm-up, {} after the last run ({} CPUs)",
        load(env.load[0]),
        load(env.load[1]),
        procfs::cpus()
    );
    println!(
        "ferry:    {}  ({}; {})",
        ctx.tools.ferry.display(),
        ctx.tools.ferry_version,
        modified(&ctx.tools.ferry)
    );
    println!("          {serve_cmd}");
    println!("          {sync_cmd}");
    println!(
        "rsync:    {}  ({}; daemon module {FOLDER} = DST_R)\n          {}",
        ctx.tools.rsync.display(),
        ctx.tools.rsync_version,
        rsync_command()
    );
    println!("cache:    {CACHE_METHOD}");
    println!("wall:     {WALL_METHOD}");
    println!("bytes:    {BYTES_METHOD}");
    println!("cpu:      {CPU_METHOD}");
    println!();
    println!(
        "{:<7} {:>10} {:>12} {:>12} {:>12} {:>8} {:>14} {:>10} {:>12} {:>8} {:>10}",
        "run",
        "ferry",
        "wire",
        "c→s",
        "s→c",
        "÷tree",
        "ferry's count",
        "rsync",
        "wire",
        "÷tree",
        "wall f/r"
    );
    let tree_b = Some(tree.bytes as f64);
    for (i, (f, s)) in r.ferry.iter().zip(&r.rsync).enumerate() {
        println!(
            "{:<7} {:>10} {:>12} {:>12} {:>12} {:>8} {:>14} {:>10} {:>12} {:>8} {:>10}",
            i + 1,
            secs(Some(f.wall)),
            mib(Some(f.bytes() as f64)),
            mib(Some(f.c2s as f64)),
            mib(Some(f.s2c as f64)),
            times(ratio(Some(f.bytes() as f64), tree_b)),
            mib(f.own_bytes().map(|b| b as f64)),
            secs(Some(s.wall)),
            mib(Some(s.bytes() as f64)),
            times(ratio(Some(s.bytes() as f64), tree_b)),
            times(ratio(Some(f.wall), Some(s.wall))),
        );
    }
    println!(
        "{:<7} {:>10} {:>12} {:>12} {:>12} {:>8} {:>14} {:>10} {:>12} {:>8} {:>10}",
        "median",
        secs(h.ferry_wall),
        mib(h.ferry_bytes),
        "",
        "",
        times(h.ferry_bytes_ratio),
        "",
        secs(h.rsync_wall),
        mib(h.rsync_bytes),
        times(h.rsync_bytes_ratio),
        times(h.wall_ratio),
    );
    println!(
        "(wire = proxy payload bytes both ways; ÷tree = wire / {} bytes of regular files in \
         SRC;\n \
         ferry's count = wire_bytes_out + wire_bytes_in of its --json summary; wall f/r = ferry \
         / rsync)",
        tree.bytes
    );
    print_cpu(r);
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "target", "value", "limit", "result"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "wall: ferry / rsync (medians)",
        times(h.wall_ratio),
        format!("≤ {TARGET_WALL_RATIO:.2}×"),
        judged(ctx, h.wall_ratio, TARGET_WALL_RATIO)
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "wire bytes: ferry / tree size",
        times(h.ferry_bytes_ratio),
        format!("≤ {TARGET_FERRY_BYTES_RATIO:.2}×"),
        judged(ctx, h.ferry_bytes_ratio, TARGET_FERRY_BYTES_RATIO)
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "wire bytes: rsync / tree size",
        times(h.rsync_bytes_ratio),
        "-",
        "(info)"
    );
    println!(
        "\nevery result ({} ferry, {} rsync{}) was verified identical to SRC (names, kinds, sizes, \
         contents)",
        r.ferry.len(),
        r.rsync.len(),
        if a.warmup { ", plus the warm-ups" } else { "" }
    );
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn run(args: Args) -> Result<()> {
    let tools = find_tools(&args)?;
    eprintln!(
        "bench_remote: ferry {} ({}; {})",
        tools.ferry.display(),
        tools.ferry_version,
        modified(&tools.ferry)
    );
    let (workdir, keep, json) = (args.workdir.clone(), args.keep, args.json);
    benchkit::in_workdir(
        "bench_remote",
        workdir.as_deref(),
        "ferry-bench-remote-",
        keep,
        json,
        |workdir| bench(&args, &tools, &workdir),
    )
}

fn bench(args: &Args, tools: &Tools, workdir: &Path) -> Result<()> {
    let layout = Layout::new(workdir);
    eprintln!("bench_remote: workdir {}", workdir.display());

    fresh_dir(&layout.src)?;
    let t = Instant::now();
    let stats = if args.bigfile {
        let size = args.scale.big_file_size();
        gen_incompressible_file(&layout.src.join(BIG_FILE), size, args.seed)
            .map_err(setup(format!("generating SRC/{BIG_FILE}")))?;
        TreeStats {
            files: 1,
            dirs: 0,
            bytes: size,
        }
    } else {
        TreePlan::new(args.scale, args.seed)
            .write(&layout.src, 0)
            .map_err(setup(format!("generating SRC in {}", layout.src.display())))?
    };
    let gen_secs = t.elapsed().as_secs_f64();
    rustix::fs::sync();
    let (files, bytes) = read_tree(&layout.src).map_err(setup("warm-up read of SRC"))?;
    if files != stats.files as u64 || bytes != stats.bytes {
        return Err(Failure::Setup(format!(
            "SRC holds {files} files / {bytes} bytes, but the plan made {} / {}",
            stats.files, stats.bytes
        )));
    }
    eprintln!(
        "bench_remote: generated {files} files / {} dirs / {:.1} MiB (scale {}, seed {}) in \
         {gen_secs:.2} s, read once (untimed)",
        stats.dirs,
        bytes as f64 / MIB as f64,
        args.scale,
        args.seed,
    );
    let tree = Tree {
        stats,
        bytes,
        gen_secs,
    };

    let ctx = Context {
        args,
        tools,
        layout: &layout,
        client_id: node_id(&tools.ferry, &layout.client_home)?,
        server_id: node_id(&tools.ferry, &layout.server_home)?,
        remove_copies: procfs::mount_of(workdir).is_some_and(|m| m.fs_type == "tmpfs"),
        ticks: procfs::clock_ticks_per_second().ok(),
    };
    eprintln!(
        "bench_remote: client node {}, server node {}",
        ctx.client_id, ctx.server_id
    );

    // The module's directory must exist before the daemon serves it. Leftovers of an earlier
    // invocation go now, before the warm-up (see the module doc on deletions).
    fresh_dir(&layout.dst_f)?;
    fresh_dir(&layout.dst_r)?;
    fresh_dir(&layout.rsyncd)?;
    let mut service = RsyncService::start(
        &tools.rsync,
        &tools.python,
        &tools.byteproxy,
        &layout.rsyncd,
        FOLDER,
        &layout.dst_r,
        "bench_remote",
    )?;

    let log_ferry = |tag: &str, f: &FerryRun| {
        eprintln!(
            "  {tag:<10} ferry {:>8.3} s  {:>12} (c→s {}, s→c {}; ferry's count {})  \
             [verified]",
            f.wall,
            mib(Some(f.bytes() as f64)),
            mib(Some(f.c2s as f64)),
            mib(Some(f.s2c as f64)),
            mib(f.own_bytes().map(|b| b as f64)),
        );
    };
    let log_rsync = |tag: &str, s: &RsyncRun| {
        eprintln!(
            "  {tag:<10} rsync {:>8.3} s  {:>12} (c→s {}, s→c {})  [verified]",
            s.wall,
            mib(Some(s.bytes() as f64)),
            mib(Some(s.c2s as f64)),
            mib(Some(s.s2c as f64)),
        );
    };
    let load_before = load1();
    if args.warmup {
        eprintln!("bench_remote: warm-up (untimed)");
        log_ferry("warm-up", &run_ferry(&ctx, "warm-up ferry", "warm-up")?);
        log_rsync(
            "warm-up",
            &run_rsync(&ctx, &mut service, "warm-up rsync", "warm-up")?,
        );
    }
    let mut results = Results {
        ferry: Vec::new(),
        rsync: Vec::new(),
    };
    for round in 1..=args.runs {
        eprintln!("bench_remote: round {round}/{}", args.runs);
        let tag = format!("round-{round}");
        let f = run_ferry(&ctx, &format!("round {round} ferry"), &tag)?;
        log_ferry(&format!("round {round}"), &f);
        results.ferry.push(f);
        let s = run_rsync(&ctx, &mut service, &format!("round {round} rsync"), &tag)?;
        log_rsync(&format!("round {round}"), &s);
        results.rsync.push(s);
    }
    drop(service);
    let env = Environment {
        workdir_fs: describe_fs(workdir),
        load: [load_before, load1()],
    };

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results_json(&ctx, workdir, &env, &tree, &results))
                .unwrap_or_default()
        );
    } else {
        print_tables(&ctx, workdir, &env, &tree, &results);
    }
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        "bench_remote",
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
            (a.scale, a.seed, a.runs, a.fsync, a.warmup, a.json),
            (Scale::Full, 1, 3, false, true, false)
        );
        assert_eq!(a.deadline, Duration::from_secs(DEFAULT_DEADLINE_SECS));
        assert!(!a.bigfile);
        let a = parse(&[
            "--scale=small",
            "--bigfile",
            "--seed",
            "4",
            "--runs",
            "5",
            "--fsync",
            "--no-warmup",
            "--deadline",
            "30",
            "--json",
            "--ferry",
            "/x",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.scale, a.seed, a.runs, a.fsync, a.warmup, a.json),
            (Scale::Small, 4, 5, true, false, true)
        );
        assert_eq!(a.deadline, Duration::from_secs(30));
        assert_eq!(a.ferry.as_deref(), Some(Path::new("/x")));
        assert!(a.bigfile);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--deadline", "0"]).is_err());
        assert!(parse(&["--scale", "huge"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn medians_and_ratios() {
        let f = |wall, c2s| FerryRun {
            wall,
            c2s,
            s2c: 10,
            cpu: Cpu::default(),
            counters: [Some(1), Some(2), None, None, None],
        };
        let s = |wall, c2s| RsyncRun {
            wall,
            c2s,
            s2c: 0,
            cpu: Cpu::default(),
        };
        let r = Results {
            ferry: vec![f(2.0, 990), f(1.0, 1090), f(3.0, 1040)],
            rsync: vec![s(2.0, 1000), s(4.0, 1000), s(3.0, 1000)],
        };
        let h = r.headline(1000);
        assert_eq!(h.ferry_wall, Some(2.0));
        assert_eq!(h.wall_ratio, Some(2.0 / 3.0));
        assert_eq!(h.ferry_bytes_ratio, Some(1.05));
        assert_eq!(h.rsync_bytes_ratio, Some(1.0));
        assert_eq!(r.ferry[0].own_bytes(), Some(3));
        assert_eq!(f(1.0, 1).counter("bytes_sent"), None);
    }

    #[test]
    fn cpu_medians_are_per_process_and_a_run_missing_one_leaves_it_unknown() {
        let cpu = |client, server, proxy| Cpu {
            client: Some(client),
            server: Some(server),
            proxy: Some(proxy),
        };
        let cpus = procfs::cpus() as f64;
        let runs = [
            (1.0, cpu(0.5, 0.7, 0.1)),
            (2.0, cpu(0.3, 0.9, 0.2)),
            (1.0, cpu(0.4, 0.8, 0.3)),
        ];
        let (m, busy) = median_cpu(&runs);
        assert_eq!(
            (m.client, m.server, m.proxy),
            (Some(0.4), Some(0.8), Some(0.2))
        );
        // Busy per run: 1.3, 0.7 and 1.5 CPU-seconds over 1, 2 and 1 s.
        assert_eq!(busy, Some(1.3 / cpus));
        assert_eq!(runs[1].1.busy(2.0), Some(1.4 / (2.0 * cpus)));

        let mut partial = runs;
        partial[2].1.server = None;
        let (m, busy) = median_cpu(&partial);
        assert_eq!((m.client, m.server), (Some(0.4), None));
        assert_eq!((m.total(), busy), (None, None));
    }
}
