//! `bench_sync`: wall time and peak RSS of `ferry sync` versus `rsync -a --delete`.
//!
//! Generates a deterministic source tree (see [`ferry_examples::workload`]), then for each
//! round measures, in this order:
//!
//! 1. ferry initial: `ferry sync SRC DST_F --json --stats` into an empty `DST_F`;
//! 2. rsync initial: `rsync -a --delete SRC/ DST_R/` into an empty `DST_R`;
//! 3. ferry no-op: the same ferry command again on the now-synced `DST_F`;
//! 4. rsync no-op: the same rsync command again.
//!
//! Every ferry result is verified against SRC (names, kinds, sizes, contents); a wrong
//! result aborts the benchmark with a loud message and a non-zero exit status.
//!
//! Run by hand (never in CI):
//!
//! ```text
//! cargo build --release -p ferry-node
//! cargo run --release -p ferry-examples --bin bench_sync -- [--scale full|small] [--seed N]
//!     [--workdir DIR] [--ferry PATH] [--runs N] [--json] [--skip-ferry] [--keep]
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_examples::benchkit::{
    self, fresh_dir, median, ratio, setup, verdict, verify, ArgParser, Failure, Result,
};
use ferry_examples::workload::{Scale, TreePlan, TreeStats, MIB};
use serde_json::{json, Value};

/// GNU time, used to obtain the children's peak RSS (`wait4` `ru_maxrss`) without `unsafe`.
const TIME_BIN: &str = "/usr/bin/time";

/// Target: ferry initial sync wall time ≤ this × rsync.
const TARGET_INITIAL_RATIO: f64 = 1.0;
/// Target: ferry no-op sync wall time ≤ this × rsync.
const TARGET_NOOP_RATIO: f64 = 0.5;
/// Target: ferry peak RSS ≤ this many MiB.
const TARGET_RSS_MIB: f64 = 100.0;

const USAGE: &str = "\
bench_sync: compare `ferry sync` with `rsync -a --delete` (wall time, peak RSS)

USAGE:
    cargo run --release -p ferry-examples --bin bench_sync -- [OPTIONS]

OPTIONS:
    --scale full|small   workload size: full = 10,000 files / 500 dirs / ~270 MiB (default),
                         small = 1,000 files / 50 dirs / ~27 MiB
    --seed N             workload seed (default 1)
    --workdir DIR        where SRC, DST_F and DST_R are created (as DIR/src, DIR/dst-ferry,
                         DIR/dst-rsync; those three are replaced, the rest of DIR is left
                         alone, and nothing is deleted at the end).
                         Default: a fresh temporary directory under /tmp, removed at the end.
    --ferry PATH         ferry binary (default: <workspace>/target/release/ferry)
    --runs N             rounds to run; medians are reported (default 3)
    --json               print one machine-readable JSON object on stdout instead of the table
    --skip-ferry         measure rsync only (useful while ferry is not built)
    --keep               keep the default temporary directory
    -h, --help           show this help

Exit status: 0 when all runs completed and every ferry result was verified (targets that are
missed are reported as MISS but do not change the status), 1 on usage/setup errors,
3 when a ferry run failed or produced a destination that differs from SRC.
";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    scale: Scale,
    seed: u64,
    workdir: Option<PathBuf>,
    ferry: Option<PathBuf>,
    runs: usize,
    json: bool,
    skip_ferry: bool,
    keep: bool,
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        scale: Scale::Full,
        seed: 1,
        workdir: None,
        ferry: None,
        runs: 3,
        json: false,
        skip_ferry: false,
        keep: false,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--scale" => args.scale = p.text("--scale")?.parse()?,
            "--seed" => args.seed = p.number("--seed")?,
            "--workdir" => args.workdir = Some(PathBuf::from(p.value("--workdir")?)),
            "--ferry" => args.ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--runs" => args.runs = p.positive("--runs")?,
            "--json" => args.json = true,
            "--skip-ferry" => args.skip_ferry = true,
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

fn find_rsync() -> Result<(PathBuf, String)> {
    let rsync = benchkit::which(OsStr::new("rsync")).ok_or_else(|| {
        Failure::Setup("rsync not found on PATH; install it with `apt-get install -y rsync`".into())
    })?;
    let out = Command::new(&rsync)
        .arg("--version")
        .output()
        .map_err(setup(format!("running {} --version", rsync.display())))?;
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let version = version.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((rsync, version))
}

fn check_time() -> Result<()> {
    if Path::new(TIME_BIN).is_file() {
        Ok(())
    } else {
        Err(Failure::Setup(format!(
            "{TIME_BIN} not found (needed to measure the children's peak RSS without unsafe code); \
             install it with `apt-get install -y time`"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// One timed child run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    peak_rss_kib: u64,
}

/// Runs `program args…` under `/usr/bin/time -f %M`, returning its wall time, peak RSS and
/// captured output. Dirty pages are flushed (`sync`, untimed) before the child starts.
fn measure(
    what: &str,
    time_out: &Path,
    program: &Path,
    args: &[&OsStr],
) -> Result<(Sample, Output)> {
    rustix::fs::sync();
    let _ = fs::remove_file(time_out);
    let mut cmd = Command::new(TIME_BIN);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(time_out)
        .arg(program)
        .args(args);
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd.output().map_err(setup(format!(
        "{what}: spawning {TIME_BIN} {}",
        program.display()
    )))?;
    let wall = start.elapsed();
    if !out.status.success() {
        let mut msg = format!(
            "{what} FAILED ({}): {} {}",
            out.status,
            program.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let s = String::from_utf8_lossy(stream);
            let s = s.trim();
            if !s.is_empty() {
                let tail: String = s
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let _ = write!(msg, "\n--- {name} (tail) ---\n{tail}");
            }
        }
        return Err(Failure::Wrong(msg));
    }
    let report = fs::read_to_string(time_out)
        .map_err(setup(format!("{what}: reading {}", time_out.display())))?;
    let peak_rss_kib = report
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            Failure::Setup(format!("{what}: cannot parse {TIME_BIN} output {report:?}"))
        })?;
    Ok((Sample { wall, peak_rss_kib }, out))
}

/// Reads every file under `root` once (untimed page-cache warm-up); returns bytes read.
fn warm_up(root: &Path) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let t = entry.file_type()?;
            if t.is_dir() {
                stack.push(entry.path());
            } else if t.is_file() {
                let mut f = fs::File::open(entry.path())?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
            }
        }
    }
    Ok(total)
}

/// Parses ferry's `--json` stdout (one JSON object); `None` (with a warning) if it is not.
fn parse_summary(what: &str, out: &Output) -> Option<Value> {
    let s = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(s.trim()) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) | Err(_) => {
            eprintln!("WARNING: {what}: stdout is not one JSON object as the `--json` contract says: {:?}", truncate(&s, 300));
            None
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and reporting
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    FerryInitial,
    RsyncInitial,
    FerryNoop,
    RsyncNoop,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::FerryInitial,
        Kind::RsyncInitial,
        Kind::FerryNoop,
        Kind::RsyncNoop,
    ];

    fn key(self) -> &'static str {
        match self {
            Kind::FerryInitial => "ferry_initial",
            Kind::RsyncInitial => "rsync_initial",
            Kind::FerryNoop => "ferry_noop",
            Kind::RsyncNoop => "rsync_noop",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::FerryInitial => "ferry initial",
            Kind::RsyncInitial => "rsync initial",
            Kind::FerryNoop => "ferry no-op",
            Kind::RsyncNoop => "rsync no-op",
        }
    }
}

#[derive(Default)]
struct Samples {
    by_kind: [Vec<Sample>; 4],
}

impl Samples {
    fn push(&mut self, kind: Kind, s: Sample) {
        self.by_kind[kind as usize].push(s);
    }

    fn get(&self, kind: Kind) -> &[Sample] {
        &self.by_kind[kind as usize]
    }

    fn median_secs(&self, kind: Kind) -> Option<f64> {
        let v: Vec<f64> = self
            .get(kind)
            .iter()
            .map(|s| s.wall.as_secs_f64())
            .collect();
        median(&v)
    }

    fn peak_rss_kib(&self, kind: Kind) -> Option<u64> {
        self.get(kind).iter().map(|s| s.peak_rss_kib).max()
    }

    /// The headline numbers: the initial and the no-op ferry / rsync ratios of the median
    /// wall times, and ferry's peak RSS in MiB.
    fn headline(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let initial = ratio(
            self.median_secs(Kind::FerryInitial),
            self.median_secs(Kind::RsyncInitial),
        );
        let noop = ratio(
            self.median_secs(Kind::FerryNoop),
            self.median_secs(Kind::RsyncNoop),
        );
        let ferry_rss = self
            .peak_rss_kib(Kind::FerryInitial)
            .max(self.peak_rss_kib(Kind::FerryNoop))
            .map(mib);
        (initial, noop, ferry_rss)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

const RSS_METHOD: &str =
    "/usr/bin/time -f %M (wait4 ru_maxrss of the child: the largest single process \
                          in its tree, not the sum; rsync runs as several processes)";
const WALL_METHOD: &str =
    "std::time::Instant around spawn..exit of `/usr/bin/time <tool> …` (includes ~1 ms \
                           of /usr/bin/time exec overhead, same for both tools)";
const CACHE_METHOD: &str = "warm page cache: SRC generated then read once untimed; nothing dropped; \
                            `sync` (untimed) before every timed run so earlier writeback does not leak in";

struct Context {
    args: Args,
    workdir: PathBuf,
    stats: TreeStats,
    gen_secs: f64,
    ferry: Option<PathBuf>,
    rsync: PathBuf,
    rsync_version: String,
    summaries: [Option<Value>; 2],
}

fn results_json(ctx: &Context, samples: &Samples) -> Value {
    let mut meas = serde_json::Map::new();
    for k in Kind::ALL {
        let v = samples.get(k);
        if v.is_empty() {
            meas.insert(k.key().into(), Value::Null);
            continue;
        }
        let secs: Vec<f64> = v.iter().map(|s| s.wall.as_secs_f64()).collect();
        meas.insert(
            k.key().into(),
            json!({
                "median_s": samples.median_secs(k),
                "min_s": secs.iter().copied().fold(f64::INFINITY, f64::min),
                "max_s": secs.iter().copied().fold(0.0, f64::max),
                "samples_s": secs,
                "peak_rss_kib": samples.peak_rss_kib(k),
                "peak_rss_samples_kib": v.iter().map(|s| s.peak_rss_kib).collect::<Vec<_>>(),
            }),
        );
    }
    let (initial, noop, ferry_rss) = samples.headline();
    json!({
        "benchmark": "bench_sync",
        "ok": true,
        "scale": ctx.args.scale.as_str(),
        "seed": ctx.args.seed,
        "runs": ctx.args.runs,
        "workdir": ctx.workdir,
        "workload": {
            "files": ctx.stats.files,
            "dirs": ctx.stats.dirs,
            "bytes": ctx.stats.bytes,
            "generate_s": ctx.gen_secs,
        },
        "tools": {
            "ferry": ctx.ferry,
            "ferry_command": "ferry sync SRC DST_F --json --stats",
            "rsync": ctx.rsync,
            "rsync_version": ctx.rsync_version,
            "rsync_command": "rsync -a --delete SRC/ DST_R/",
        },
        "method": { "wall": WALL_METHOD, "peak_rss": RSS_METHOD, "cache": CACHE_METHOD,
                    "statistic": "median over runs for wall time, max over runs for peak RSS" },
        "measurements": meas,
        "ratios": { "initial": initial, "noop": noop },
        "targets": [
            { "name": "initial_ratio", "value": initial, "limit": TARGET_INITIAL_RATIO,
              "result": verdict(initial, TARGET_INITIAL_RATIO) },
            { "name": "noop_ratio", "value": noop, "limit": TARGET_NOOP_RATIO,
              "result": verdict(noop, TARGET_NOOP_RATIO) },
            { "name": "ferry_peak_rss_mib", "value": ferry_rss, "limit": TARGET_RSS_MIB,
              "result": verdict(ferry_rss, TARGET_RSS_MIB) },
        ],
        "verified": !ctx.args.skip_ferry,
        "ferry_summary_initial": ctx.summaries[0],
        "ferry_summary_noop": ctx.summaries[1],
    })
}

fn print_table(ctx: &Context, samples: &Samples) {
    let a = &ctx.args;
    println!();
    println!(
        "bench_sync — scale={} seed={} runs={}: {} files, {} dirs, {:.1} MiB (generated in {:.2} s)",
        a.scale,
        a.seed,
        a.runs,
        ctx.stats.files,
        ctx.stats.dirs,
        ctx.stats.bytes as f64 / MIB as f64,
        ctx.gen_secs
    );
    println!("workdir:  {}", ctx.workdir.display());
    match &ctx.ferry {
        Some(f) => println!("ferry:    {} sync SRC DST_F --json --stats", f.display()),
        None => println!("ferry:    skipped (--skip-ferry)"),
    }
    println!(
        "rsync:    {} -a --delete SRC/ DST_R/  ({})",
        ctx.rsync.display(),
        ctx.rsync_version
    );
    println!("cache:    {CACHE_METHOD}");
    println!("wall:     {WALL_METHOD}");
    println!("peak RSS: {RSS_METHOD}");
    println!();
    println!(
        "{:<16}{:>12}{:>12}{:>12}{:>14}",
        "measurement", "median", "min", "max", "peak RSS"
    );
    for k in Kind::ALL {
        let v = samples.get(k);
        if v.is_empty() {
            println!(
                "{:<16}{:>12}{:>12}{:>12}{:>14}",
                k.label(),
                "-",
                "-",
                "-",
                "-"
            );
            continue;
        }
        let secs: Vec<f64> = v.iter().map(|s| s.wall.as_secs_f64()).collect();
        let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = secs.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<16}{:>10.3} s{:>10.3} s{:>10.3} s{:>10.1} MiB",
            k.label(),
            samples.median_secs(k).unwrap_or(f64::NAN),
            min,
            max,
            mib(samples.peak_rss_kib(k).unwrap_or(0))
        );
    }
    let (initial, noop, rss) = samples.headline();
    let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}×"));
    println!();
    println!(
        "{:<28}{:>12}{:>12}{:>8}",
        "target", "value", "limit", "result"
    );
    println!(
        "{:<28}{:>12}{:>12}{:>8}",
        "initial: ferry / rsync",
        fmt_ratio(initial),
        format!("≤ {TARGET_INITIAL_RATIO:.2}×"),
        verdict(initial, TARGET_INITIAL_RATIO)
    );
    println!(
        "{:<28}{:>12}{:>12}{:>8}",
        "no-op: ferry / rsync",
        fmt_ratio(noop),
        format!("≤ {TARGET_NOOP_RATIO:.2}×"),
        verdict(noop, TARGET_NOOP_RATIO)
    );
    println!(
        "{:<28}{:>12}{:>12}{:>8}",
        "ferry peak RSS",
        rss.map_or("-".to_string(), |r| format!("{r:.1} MiB")),
        format!("≤ {TARGET_RSS_MIB:.0} MiB"),
        verdict(rss, TARGET_RSS_MIB)
    );
    if ctx.ferry.is_some() {
        println!(
            "\nall {} ferry results verified identical to SRC (names, kinds, sizes, contents)",
            2 * a.runs
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn run(args: Args) -> Result<()> {
    check_time()?;
    let (rsync, rsync_version) = find_rsync()?;
    let ferry = if args.skip_ferry {
        None
    } else {
        Some(benchkit::find_ferry(
            args.ferry.as_deref(),
            "--ferry PATH, or --skip-ferry to measure rsync only",
        )?)
    };
    let (workdir, keep, json) = (args.workdir.clone(), args.keep, args.json);
    benchkit::in_workdir(
        "bench_sync",
        workdir.as_deref(),
        "ferry-bench-",
        keep,
        json,
        |workdir| bench(args, workdir, ferry, rsync, rsync_version),
    )
}

fn bench(
    args: Args,
    workdir: PathBuf,
    ferry: Option<PathBuf>,
    rsync: PathBuf,
    rsync_version: String,
) -> Result<()> {
    let src = workdir.join("src");
    let dst_f = workdir.join("dst-ferry");
    let dst_r = workdir.join("dst-rsync");
    let time_out = workdir.join("time.out");

    eprintln!("bench_sync: workdir {}", workdir.display());
    fresh_dir(&src)?;
    let t = Instant::now();
    let plan = TreePlan::new(args.scale, args.seed);
    let stats = plan
        .write(&src, 0)
        .map_err(setup(format!("generating SRC in {}", src.display())))?;
    let gen_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bench_sync: generated {} files / {} dirs / {:.1} MiB (scale {}, seed {}) in {:.2} s",
        stats.files,
        stats.dirs,
        stats.bytes as f64 / MIB as f64,
        args.scale,
        args.seed,
        gen_secs
    );
    rustix::fs::sync();
    let t = Instant::now();
    let warmed = warm_up(&src).map_err(setup("warm-up read of SRC"))?;
    eprintln!(
        "bench_sync: warm-up read {:.1} MiB in {:.2} s (untimed)",
        warmed as f64 / MIB as f64,
        t.elapsed().as_secs_f64()
    );

    let mut src_slash = src.clone().into_os_string();
    src_slash.push("/");
    let mut dst_r_slash = dst_r.clone().into_os_string();
    dst_r_slash.push("/");
    let rsync_args: [&OsStr; 4] = [
        OsStr::new("-a"),
        OsStr::new("--delete"),
        &src_slash,
        &dst_r_slash,
    ];
    let ferry_args: [&OsStr; 5] = [
        OsStr::new("sync"),
        src.as_os_str(),
        dst_f.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--stats"),
    ];

    let mut samples = Samples::default();
    let mut summaries: [Option<Value>; 2] = [None, None];
    let log = |what: &str, s: &Sample, note: &str| {
        eprintln!(
            "  {what:<14} {:>8.3} s  {:>7.1} MiB peak RSS{note}",
            s.wall.as_secs_f64(),
            mib(s.peak_rss_kib)
        );
    };
    for round in 1..=args.runs {
        eprintln!("bench_sync: round {round}/{}", args.runs);
        fresh_dir(&dst_f)?;
        fresh_dir(&dst_r)?;
        for kind in Kind::ALL {
            let is_ferry = matches!(kind, Kind::FerryInitial | Kind::FerryNoop);
            let what = format!("round {round} {}", kind.label());
            if is_ferry {
                let Some(ferry) = &ferry else { continue };
                let (s, out) = measure(&what, &time_out, ferry, &ferry_args)?;
                let summary = parse_summary(&what, &out);
                summaries[usize::from(kind == Kind::FerryNoop)] = summary;
                verify(&what, &src, &dst_f)?;
                log(kind.label(), &s, "  [verified]");
                samples.push(kind, s);
            } else {
                let (s, _) = measure(&what, &time_out, &rsync, &rsync_args)?;
                // Sanity-check the comparer against rsync once.
                let note = if round == 1 && kind == Kind::RsyncInitial {
                    verify(&what, &src, &dst_r)?;
                    "  [verified]"
                } else {
                    ""
                };
                log(kind.label(), &s, note);
                samples.push(kind, s);
            }
        }
    }
    let _ = fs::remove_file(&time_out);

    let ctx = Context {
        args,
        workdir,
        stats,
        gen_secs,
        ferry,
        rsync,
        rsync_version,
        summaries,
    };
    if ctx.args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results_json(&ctx, &samples)).unwrap_or_default()
        );
    } else {
        print_table(&ctx, &samples);
    }
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        "bench_sync",
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
            (a.scale, a.seed, a.runs, a.json, a.skip_ferry),
            (Scale::Full, 1, 3, false, false)
        );
        let a = parse(&[
            "--scale",
            "small",
            "--seed=9",
            "--runs",
            "5",
            "--json",
            "--skip-ferry",
            "--ferry",
            "/x",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.scale, a.seed, a.runs, a.json, a.skip_ferry),
            (Scale::Small, 9, 5, true, true)
        );
        assert_eq!(a.ferry.as_deref(), Some(Path::new("/x")));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--scale", "huge"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--seed"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
