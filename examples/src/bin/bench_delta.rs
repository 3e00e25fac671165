//! `bench_delta`: bytes exchanged and wall time for a small change to a 1 GiB file,
//! `ferry sync` versus rsync over its daemon on loopback.
//!
//! For each mutator (`edit-mid`: 4 KiB overwritten in place in the middle; `insert`: 1 KiB
//! inserted at 100 MiB, shifting the rest) and each round:
//!
//! 1. SRC, DST_F (ferry's target) and DST_R (rsync's target) each get a copy of the pristine
//!    1 GiB `bigfile` with the same mtime (generated once by `gen_tree.py bigfile` and cached
//!    under `--work`);
//! 2. the mutator is applied to SRC's file;
//! 3. ferry: `ferry sync SRC DST_F --json` (durable, the headline) and again with `--no-fsync`,
//!    each into a freshly restored DST_F; bytes are `bytes_sent + bytes_metadata` of ferry's
//!    JSON summary;
//! 4. live (`ferry watch`, durable and `--no-fsync`): SRC restored to the pristine file, DST_F
//!    empty; `ferry watch SRC DST_F` writes the file in its initial sync (so it knows its
//!    chunk list, as a watch that has been running does); then the mutator edits SRC's file
//!    and the clock runs from the end of the edit until DST_F's file is a new inode (a new
//!    version is installed by rename, complete). No bytes are counted here;
//! 5. kept (`ferry sync --state`, durable and `--no-fsync`): SRC restored to the pristine
//!    file, DST_F empty, a fresh state directory `--work`/state; untimed,
//!    `ferry sync --state STATE SRC DST_F --json` copies the file and saves the source index
//!    and DST_F's chunk lists; then the mutator edits SRC's file, the page cache is prepared
//!    as for the other one-shot runs, and the same command is timed (it rehashes only the
//!    edited file, with its previous chunk list as a hint, and reads nothing of DST_F's
//!    unchanged file). Bytes are counted as in 3;
//! 6. rsync: `rsync -a --delete --stats SRC/ rsync://127.0.0.1:PORT/dst/` (plain: no fsync)
//!    and the same with `--fsync` (rsync ≥ 3.2.4: the daemon's receiver fsyncs each file
//!    before renaming it into place), each into a freshly restored DST_R, through
//!    `byteproxy.py` in front of an `rsync --daemon` whose module is DST_R; bytes are the
//!    proxy's payload counts in both directions (`--rsync-variants` chooses the baselines).
//!
//! Wall times are compared like for like: durable ferry (`sync`, `sync --state` and `watch`)
//! with `rsync --fsync`, `--no-fsync` ferry with plain rsync, each held to the wall-time
//! target. Durable ferry against plain rsync, the only pairing before the `--fsync`
//! baseline, is still shown, for information. Bytes are compared with plain rsync's
//! (`--fsync` adds only its own name to the daemon's handshake), and only the durable
//! one-shot run without `--state` is held to the bytes target: its Sender, like rsync's,
//! knows nothing of the target beforehand. The kept runs' bytes (their Sender starts from
//! the saved chunk lists) are shown for information.
//!
//! Before every timed run dirty pages are flushed, the page cache is dropped (when
//! permitted) and SRC's and the target's file are read once (warm, the default), or the page
//! cache is only dropped (`--cache cold`). Every result is
//! verified against SRC. `--sweep` measures ferry alone for a list of chunker parameter sets.
//!
//! Run by hand (never in CI):
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node -p ferry-examples
//! /work/target-bench/release/bench_delta [--runs N] [--chunk-sizes MIN,AVG,MAX] [--sweep] …
//! ```

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ferry_examples::benchkit::{
    self, fresh_dir, loud, median, ratio, setup, verdict, verify, ArgParser, Failure, Result,
};
use ferry_examples::services::{self, RsyncService};
use ferry_examples::tools::{
    failed_message, find_rsync, first_line, locate_ferry, modified, python3, run_tool, script,
};
use ferry_examples::workload::{Scale, MIB};
use serde_json::{json, Value};

/// Target: ferry's bytes exchanged ≤ this × rsync's.
const TARGET_BYTES_RATIO: f64 = 0.25;
/// Target: ferry's wall time ≤ this × rsync's (like for like, see [`Variant::rsync_peer`]).
const TARGET_WALL_RATIO: f64 = 0.5;

/// Default working directory (the pristine file is cached there between invocations).
const DEFAULT_WORK: &str = "/tmp/ferry-bench-delta";
/// Default directory of `gen_tree.py` and `byteproxy.py`.
const DEFAULT_TOOLS: &str = "/work/shared/bench";
/// Chunker parameter sets of `--sweep` when no `--chunk-sizes` is given.
const DEFAULT_SWEEP: [&str; 4] = ["4K,16K,64K", "8K,32K,128K", "16K,64K,256K", "32K,128K,512K"];
/// The name of the big file inside SRC, DST_F and DST_R.
const FILE_NAME: &str = "bigfile";
/// rsync "Literal data" above this fraction of the file means it did not use its delta
/// algorithm (a whole-file transfer), which would make the comparison meaningless.
const RSYNC_MAX_LITERAL_FRACTION: f64 = 0.01;
/// An rsync client run longer than this is killed and reported as a failure.
const CLIENT_DEADLINE: Duration = Duration::from_secs(1800);
/// The kernel knob that drops the page cache.
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

const USAGE: &str = "\
bench_delta: a small change to a 1 GiB file: `ferry sync` versus rsync over its daemon
(bytes exchanged in both directions, wall time)

USAGE:
    CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node -p ferry-examples
    /work/target-bench/release/bench_delta [OPTIONS]

OPTIONS:
    --work DIR           working directory (default /tmp/ferry-bench-delta): the pristine file is
                         generated once into DIR/cache and reused; DIR/src, DIR/dst-ferry,
                         DIR/dst-rsync, DIR/rsyncd and DIR/state are replaced, and removed at
                         the end unless --keep or a run failed
    --tools DIR          where gen_tree.py and byteproxy.py live (default /work/shared/bench)
    --ferry PATH         ferry binary (default: `ferry` next to this binary, else
                         <workspace>/target/release/ferry)
    --runs N             rounds per mutator; medians are reported (default 3)
    --mutators LIST      comma-separated, of edit-mid and insert (default both)
    --chunk-sizes S      MIN,AVG,MAX passed to `ferry sync --chunk-sizes` (default: ferry's own);
                         with --sweep it may be repeated to give the list of sets to try
    --sweep              ferry only, once per chunk-size set (default sets 4K,16K,64K
                         8K,32K,128K 16K,64K,256K 32K,128K,512K): bytes, time, chunk counts
    --variants LIST      ferry variants, comma-separated, of durable, no-fsync (`ferry sync`),
                         live and live-no-fsync (`ferry watch`, timed from the end of the
                         edit until DST's file is replaced), kept and kept-no-fsync
                         (`ferry sync --state DIR`, timed on the sync after the edit; the
                         first sync, into an empty DST, is untimed and saves the state)
                         (default: all six; with --sweep: durable)
    --rsync-variants LIST
                         rsync baselines, comma-separated, of plain (no fsync) and fsync
                         (`--fsync`: the daemon fsyncs each file before renaming it into
                         place) (default: both). Wall times are judged like for like:
                         durable, live and kept against fsync, the --no-fsync variants
                         against plain; durable ferry against plain rsync is shown as (info)
    --cache warm|cold    warm (default): `sync`, then read SRC's and the target's file once
                         before every timed run (as the reference figures in
                         /work/shared/bench/README.md; stable to ~2 %);
                         cold: `sync` and drop the page cache before every timed run (needs
                         root; both tools then wait on the disk, and timings are noisier)
    --scale full|small   size of the big file: 1 GiB (default) or 128 MiB (quick checks)
    --seed N             gen_tree.py seed for the file and the mutators (default 1)
    --skip-ferry         measure rsync only
    --skip-rsync         measure ferry only
    --json               print one machine-readable JSON object on stdout instead of tables
    --keep               keep DIR/src, DIR/dst-*, DIR/rsyncd and DIR/state at the end
    -h, --help           show this help

Exit status: 0 when all runs completed and every result was verified (missed targets are
reported as MISS but do not change the status), 1 on usage/setup errors, 3 when a ferry run
failed or produced a target that differs from SRC.
";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// A change applied to SRC's big file by `gen_tree.py`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutator {
    /// 4 KiB overwritten in place in the middle.
    EditMid,
    /// 1 KiB inserted at 100 MiB (half the file if smaller), shifting the rest.
    Insert,
}

impl Mutator {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        [Mutator::EditMid, Mutator::Insert]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mutator {s:?} (expected edit-mid or insert)"))
    }

    /// The `gen_tree.py` sub-command.
    fn as_str(self) -> &'static str {
        match self {
            Mutator::EditMid => "edit-mid",
            Mutator::Insert => "insert",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mutator::EditMid => "4 KiB overwritten in place in the middle",
            Mutator::Insert => "1 KiB inserted, shifting the rest",
        }
    }
}

/// How the page cache is prepared before every timed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cache {
    /// `sync`, then drop the page cache.
    Cold,
    /// `sync`, then read SRC's and the target's file once.
    Warm,
}

impl Cache {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cold" => Ok(Cache::Cold),
            "warm" => Ok(Cache::Warm),
            other => Err(format!("unknown --cache {other:?} (expected cold or warm)")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Cache::Cold => "cold",
            Cache::Warm => "warm",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Cache::Cold => {
                "cold: `sync; echo 3 > /proc/sys/vm/drop_caches` (untimed) before every timed run"
            }
            Cache::Warm => {
                "warm: `sync`, then SRC's and the target's file read once (untimed) before \
                 every timed run"
            }
        }
    }
}

/// How ferry is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Default: files and directories fsynced (the headline).
    Durable,
    /// `--no-fsync`, as plain rsync does not fsync either.
    NoFsync,
    /// `ferry watch` (durable) that wrote DST_F in its initial sync, timed from the end of
    /// the edit until DST_F's file is replaced.
    Live,
    /// [`Variant::Live`] with `--no-fsync`.
    LiveNoFsync,
    /// `ferry sync --state DIR` (durable) whose untimed first run wrote DST_F and saved the
    /// state, timed on the run after the edit.
    Kept,
    /// [`Variant::Kept`] with `--no-fsync`.
    KeptNoFsync,
}

impl Variant {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "durable" => Ok(Variant::Durable),
            "no-fsync" => Ok(Variant::NoFsync),
            "live" => Ok(Variant::Live),
            "live-no-fsync" => Ok(Variant::LiveNoFsync),
            "kept" => Ok(Variant::Kept),
            "kept-no-fsync" => Ok(Variant::KeptNoFsync),
            other => Err(format!(
                "unknown variant {other:?} (expected durable, no-fsync, live, live-no-fsync, \
                 kept or kept-no-fsync)"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Variant::Durable => "durable",
            Variant::NoFsync => "no-fsync",
            Variant::Live => "live",
            Variant::LiveNoFsync => "live-no-fsync",
            Variant::Kept => "kept",
            Variant::KeptNoFsync => "kept-no-fsync",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Durable => "ferry",
            Variant::NoFsync => "ferry --no-fsync",
            Variant::Live => "watch",
            Variant::LiveNoFsync => "watch --no-fsync",
            Variant::Kept => "ferry --state",
            Variant::KeptNoFsync => "ferry --state --no-fsync",
        }
    }

    fn fsync(self) -> bool {
        matches!(self, Variant::Durable | Variant::Live | Variant::Kept)
    }

    fn live(self) -> bool {
        matches!(self, Variant::Live | Variant::LiveNoFsync)
    }

    /// Run with `--state`: an untimed first sync saves the state the timed one uses.
    fn kept(self) -> bool {
        matches!(self, Variant::Kept | Variant::KeptNoFsync)
    }

    /// Whether its bytes are held to the target: only the one-shot run whose Sender, like
    /// rsync's, starts knowing nothing of the target (a kept run starts from the saved chunk
    /// lists; a live run counts no bytes).
    fn bytes_judged(self) -> bool {
        self == Variant::Durable
    }

    /// The rsync baseline that makes the same durability promise, whose wall time this
    /// variant is held to.
    fn rsync_peer(self) -> RsyncVariant {
        if self.fsync() {
            RsyncVariant::Fsync
        } else {
            RsyncVariant::Plain
        }
    }
}

/// How rsync is run (the baselines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RsyncVariant {
    /// `rsync -a --delete --stats`: files are renamed into place unsynced.
    Plain,
    /// The same with `--fsync`: the daemon's receiver fsyncs each file before renaming it
    /// into place (it does not fsync directories).
    Fsync,
}

impl RsyncVariant {
    const ALL: [RsyncVariant; 2] = [RsyncVariant::Plain, RsyncVariant::Fsync];

    fn parse(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown rsync variant {s:?} (expected plain or fsync)"))
    }

    fn as_str(self) -> &'static str {
        match self {
            RsyncVariant::Plain => "plain",
            RsyncVariant::Fsync => "fsync",
        }
    }

    fn label(self) -> &'static str {
        match self {
            RsyncVariant::Plain => "rsync",
            RsyncVariant::Fsync => "rsync --fsync",
        }
    }

    /// The client's options (before SRC/ and the URL).
    fn args(self) -> &'static [&'static str] {
        match self {
            RsyncVariant::Plain => &["-a", "--delete", "--stats"],
            RsyncVariant::Fsync => &["-a", "--delete", "--stats", "--fsync"],
        }
    }

    /// The client's command line, for the report.
    fn command(self) -> String {
        format!(
            "rsync {} SRC/ rsync://127.0.0.1:PROXY/dst/",
            self.args().join(" ")
        )
    }
}

#[derive(Debug)]
struct Args {
    work: PathBuf,
    tools: PathBuf,
    ferry: Option<PathBuf>,
    runs: usize,
    mutators: Vec<Mutator>,
    chunk_sizes: Vec<String>,
    sweep: bool,
    variants: Option<Vec<Variant>>,
    rsync_variants: Vec<RsyncVariant>,
    cache: Option<Cache>,
    scale: Scale,
    seed: u64,
    skip_ferry: bool,
    skip_rsync: bool,
    json: bool,
    keep: bool,
}

impl Args {
    /// The chunk-size sets to run ferry with; `None` is ferry's default (no flag).
    fn param_sets(&self) -> Vec<Option<String>> {
        if self.sweep && self.chunk_sizes.is_empty() {
            DEFAULT_SWEEP.iter().map(|s| Some(s.to_string())).collect()
        } else if self.chunk_sizes.is_empty() {
            vec![None]
        } else {
            self.chunk_sizes.iter().cloned().map(Some).collect()
        }
    }

    fn variants(&self) -> Vec<Variant> {
        match &self.variants {
            Some(v) => v.clone(),
            None if self.sweep => vec![Variant::Durable],
            None => vec![
                Variant::Durable,
                Variant::NoFsync,
                Variant::Live,
                Variant::LiveNoFsync,
                Variant::Kept,
                Variant::KeptNoFsync,
            ],
        }
    }

    fn rsync(&self) -> bool {
        !self.sweep && !self.skip_rsync
    }

    fn ferry(&self) -> bool {
        !self.skip_ferry
    }
}

fn list<T>(
    s: &str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<T>, String> {
    let v = s
        .split(',')
        .map(|x| parse(x.trim()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if v.is_empty() {
        return Err(format!("empty list {s:?}"));
    }
    Ok(v)
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        work: PathBuf::from(DEFAULT_WORK),
        tools: PathBuf::from(DEFAULT_TOOLS),
        ferry: None,
        runs: 3,
        mutators: vec![Mutator::EditMid, Mutator::Insert],
        chunk_sizes: Vec::new(),
        sweep: false,
        variants: None,
        rsync_variants: RsyncVariant::ALL.to_vec(),
        cache: None,
        scale: Scale::Full,
        seed: 1,
        skip_ferry: false,
        skip_rsync: false,
        json: false,
        keep: false,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--work" => args.work = PathBuf::from(p.value("--work")?),
            "--tools" => args.tools = PathBuf::from(p.value("--tools")?),
            "--ferry" => args.ferry = Some(PathBuf::from(p.value("--ferry")?)),
            "--runs" => args.runs = p.positive("--runs")?,
            "--mutators" => args.mutators = list(&p.text("--mutators")?, Mutator::parse)?,
            "--chunk-sizes" => {
                let s = p.text("--chunk-sizes")?;
                if s.split(',').count() != 3 {
                    return Err(format!(
                        "--chunk-sizes expects MIN,AVG,MAX (e.g. 16K,64K,256K), got {s:?}"
                    ));
                }
                args.chunk_sizes.push(s);
            }
            "--sweep" => args.sweep = true,
            "--variants" => args.variants = Some(list(&p.text("--variants")?, Variant::parse)?),
            "--rsync-variants" => {
                let v = list(&p.text("--rsync-variants")?, RsyncVariant::parse)?;
                if let Some(twice) = v.iter().find(|x| v.iter().filter(|y| y == x).count() > 1) {
                    return Err(format!("--rsync-variants lists {} twice", twice.as_str()));
                }
                args.rsync_variants = v;
            }
            "--cache" => args.cache = Some(Cache::parse(&p.text("--cache")?)?),
            "--scale" => args.scale = p.text("--scale")?.parse()?,
            "--seed" => args.seed = p.number("--seed")?,
            "--skip-ferry" => args.skip_ferry = true,
            "--skip-rsync" => args.skip_rsync = true,
            "--json" => args.json = true,
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if args.chunk_sizes.len() > 1 && !args.sweep {
        return Err("--chunk-sizes may be repeated only with --sweep".into());
    }
    if args.sweep && args.skip_ferry {
        return Err("--sweep measures ferry only; it cannot be combined with --skip-ferry".into());
    }
    if args.skip_ferry && args.skip_rsync {
        return Err("--skip-ferry and --skip-rsync leave nothing to measure".into());
    }
    Ok(Some(args))
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// The external programs the benchmark runs.
struct Tools {
    python: PathBuf,
    gen_tree: PathBuf,
    byteproxy: PathBuf,
    rsync: Option<(PathBuf, String)>,
    ferry: Option<(PathBuf, String)>,
}

fn find_tools(args: &Args) -> Result<Tools> {
    let python = python3()?;
    let gen_tree = script(&args.tools, "gen_tree.py")?;
    let byteproxy = script(&args.tools, "byteproxy.py")?;
    let rsync = if args.rsync() {
        let rsync = find_rsync("or pass --skip-rsync")?;
        if args.rsync_variants.contains(&RsyncVariant::Fsync) {
            // An rsync older than 3.2.4 rejects the option: better said now than after the
            // first ferry runs.
            run_tool(
                "checking that rsync knows --fsync (3.2.4 or later; else pass \
                 --rsync-variants plain)",
                &rsync.0,
                &[OsStr::new("--fsync"), OsStr::new("--version")],
            )?;
        }
        Some(rsync)
    } else {
        None
    };
    let ferry = if args.ferry() {
        let ferry = locate_ferry(args.ferry.as_deref(), "--ferry PATH, or --skip-ferry")?;
        let version = first_line(&ferry, "--version");
        Some((ferry, version))
    } else {
        None
    };
    Ok(Tools {
        python,
        gen_tree,
        byteproxy,
        rsync,
        ferry,
    })
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Where everything lives under `--work`.
struct Layout {
    cache_dir: PathBuf,
    pristine: PathBuf,
    src: PathBuf,
    dst_f: PathBuf,
    dst_r: PathBuf,
    rsyncd: PathBuf,
    /// The `--state` directory of the kept runs, fresh for each.
    state: PathBuf,
}

impl Layout {
    fn new(work: &Path, scale: Scale, seed: u64) -> Self {
        let cache_dir = work.join("cache");
        let pristine = cache_dir.join(format!("{FILE_NAME}-{scale}-seed{seed}"));
        Layout {
            cache_dir,
            pristine,
            src: work.join("src"),
            dst_f: work.join("dst-ferry"),
            dst_r: work.join("dst-rsync"),
            rsyncd: work.join("rsyncd"),
            state: work.join("state"),
        }
    }

    /// The directories replaced by every invocation (removed at the end unless `--keep`).
    fn scratch(&self) -> [&Path; 5] {
        [
            &self.src,
            &self.dst_f,
            &self.dst_r,
            &self.rsyncd,
            &self.state,
        ]
    }
}

/// Makes sure the pristine file is cached (generating it if needed); returns its mtime.
fn ensure_pristine(args: &Args, tools: &Tools, layout: &Layout) -> Result<SystemTime> {
    let want = args.scale.big_file_size();
    if let Ok(m) = fs::metadata(&layout.pristine) {
        if m.is_file() && m.len() == want {
            eprintln!(
                "bench_delta: using cached {} ({:.0} MiB)",
                layout.pristine.display(),
                want as f64 / MIB as f64
            );
            return m
                .modified()
                .map_err(setup(format!("mtime of {}", layout.pristine.display())));
        }
    }
    fs::create_dir_all(&layout.cache_dir)
        .map_err(setup(format!("creating {}", layout.cache_dir.display())))?;
    let tmp = layout.pristine.with_extension("tmp");
    eprintln!(
        "bench_delta: generating {} ({:.0} MiB, once)…",
        layout.pristine.display(),
        want as f64 / MIB as f64
    );
    let t = Instant::now();
    let scale = args.scale.as_str();
    let seed = args.seed.to_string();
    run_tool(
        "generating the big file",
        &tools.python,
        &[
            tools.gen_tree.as_os_str(),
            OsStr::new("bigfile"),
            tmp.as_os_str(),
            OsStr::new("--scale"),
            OsStr::new(scale),
            OsStr::new("--seed"),
            OsStr::new(&seed),
        ],
    )?;
    let len = fs::metadata(&tmp)
        .map_err(setup(format!("examining {}", tmp.display())))?
        .len();
    if len != want {
        return Err(Failure::Setup(format!(
            "gen_tree.py made {} with {len} bytes, expected {want}",
            tmp.display()
        )));
    }
    fs::rename(&tmp, &layout.pristine).map_err(setup(format!(
        "renaming {} to {}",
        tmp.display(),
        layout.pristine.display()
    )))?;
    eprintln!(
        "bench_delta: generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    fs::metadata(&layout.pristine)
        .and_then(|m| m.modified())
        .map_err(setup(format!("mtime of {}", layout.pristine.display())))
}

/// Replaces `dir` by a directory holding only a copy of the pristine file, with its mtime.
fn restore(pristine: &Path, mtime: SystemTime, dir: &Path) -> Result<()> {
    fresh_dir(dir)?;
    let file = dir.join(FILE_NAME);
    fs::copy(pristine, &file).map_err(setup(format!(
        "copying {} to {}",
        pristine.display(),
        file.display()
    )))?;
    File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(mtime))
        .map_err(setup(format!("setting the mtime of {}", file.display())))
}

/// Applies `mutator` to `file`; returns `gen_tree.py`'s report (offset and size).
fn mutate(args: &Args, tools: &Tools, mutator: Mutator, file: &Path) -> Result<Value> {
    let seed = args.seed.to_string();
    let out = run_tool(
        &format!("applying {}", mutator.as_str()),
        &tools.python,
        &[
            tools.gen_tree.as_os_str(),
            OsStr::new(mutator.as_str()),
            file.as_os_str(),
            OsStr::new("--seed"),
            OsStr::new(&seed),
        ],
    )?;
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// Reads `path` once (page-cache warm-up).
fn read_through(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Drops the page cache (after `sync`).
fn drop_caches() -> io::Result<()> {
    rustix::fs::sync();
    fs::write(DROP_CACHES, "3")
}

/// Prepares the page cache before a timed run that reads `src` and `dst`'s big file.
fn settle(cache: Cache, src: &Path, dst: &Path) -> Result<()> {
    match cache {
        Cache::Cold => drop_caches().map_err(setup(format!("writing {DROP_CACHES}"))),
        Cache::Warm => {
            // Dropped first when permitted: copies left by earlier runs otherwise fill the
            // cache, and every page a run allocates then costs a reclaim (seen to slow
            // both tools by up to a third, varying from run to run).
            if drop_caches().is_err() {
                rustix::fs::sync();
            }
            for dir in [src, dst] {
                let f = dir.join(FILE_NAME);
                read_through(&f).map_err(setup(format!("reading {}", f.display())))?;
            }
            Ok(())
        }
    }
}

/// The cache mode to use: `--cache` (default warm); cold is checked to work up front.
fn choose_cache(args: &Args) -> Result<Cache> {
    match args.cache {
        None | Some(Cache::Warm) => Ok(Cache::Warm),
        Some(Cache::Cold) => {
            drop_caches().map_err(setup(format!("--cache cold: writing {DROP_CACHES}")))?;
            Ok(Cache::Cold)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ferry
// ---------------------------------------------------------------------------------------------

/// The counters of ferry's `--json` summary this benchmark reports.
const FERRY_COUNTERS: [&str; 7] = [
    "bytes_sent",
    "bytes_metadata",
    "bytes_reused",
    "bytes_zero",
    "chunks_sent",
    "chunks_reused",
    "bytes_written",
];

/// One timed `ferry sync`.
#[derive(Clone, Debug)]
struct FerryRun {
    wall: f64,
    /// The [`FERRY_COUNTERS`], in order (`None` if the summary lacks one).
    counters: [Option<u64>; 7],
}

impl FerryRun {
    fn counter(&self, name: &str) -> Option<u64> {
        let i = FERRY_COUNTERS.iter().position(|c| *c == name)?;
        self.counters[i]
    }

    /// Bytes exchanged between Sender and Applier: chunk data plus metadata.
    fn bytes(&self) -> Option<u64> {
        Some(self.counter("bytes_sent")? + self.counter("bytes_metadata")?)
    }

    /// Chunks of the new file that ferry handled (sent or reused locally).
    fn chunks(&self) -> Option<u64> {
        Some(self.counter("chunks_sent")? + self.counter("chunks_reused")?)
    }
}

/// Times `ferry sync SRC DST --json`, with `--no-fsync` unless `variant` fsyncs, and
/// `--chunk-sizes params` and `--state state` when given.
fn run_ferry(
    what: &str,
    ferry: &Path,
    src: &Path,
    dst: &Path,
    variant: Variant,
    params: Option<&str>,
    state: Option<&Path>,
) -> Result<FerryRun> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sync")];
    if let Some(dir) = state {
        args.push(OsStr::new("--state"));
        args.push(dir.as_os_str());
    }
    args.extend([src.as_os_str(), dst.as_os_str(), OsStr::new("--json")]);
    if !variant.fsync() {
        args.push(OsStr::new("--no-fsync"));
    }
    if let Some(p) = params {
        args.push(OsStr::new("--chunk-sizes"));
        args.push(OsStr::new(p));
    }
    let mut cmd = Command::new(ferry);
    cmd.args(&args).stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(setup(format!("{what}: spawning {}", ferry.display())))?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Failure::Wrong(failed_message(what, ferry, &args, &out)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
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
    Ok(FerryRun { wall, counters })
}

/// A ferry run that writes DST_F itself from the pristine file before the edit it is timed
/// on: a watch's initial sync (see [`run_live`]) or a kept run's first sync (see
/// [`run_kept`]).
struct Primed<'a> {
    ferry: &'a Path,
    variant: Variant,
    params: Option<&'a str>,
    mutator: Mutator,
    cache: Cache,
    mtime: SystemTime,
}

/// The scratch file `gen_tree.py insert` writes beside the file (`PATH.ins.tmp`).
const MUTATOR_SCRATCH: &str = "*.ins.tmp";
/// The line `ferry watch` logs when its initial sync is done.
const INITIAL_SYNC_DONE: &str = "initial sync complete";
/// How long the initial sync of a live run (a full copy of the big file) may take.
const LIVE_INITIAL_DEADLINE: Duration = Duration::from_secs(600);
/// How long the edit may take to reach DST_F in a live run.
const LIVE_EDIT_DEADLINE: Duration = Duration::from_secs(600);
/// How often DST_F's file is looked at while waiting for the edit.
const LIVE_POLL: Duration = Duration::from_micros(200);

/// One `ferry watch SRC DST_F` run: SRC holds the pristine file and DST_F starts empty, so
/// the watch writes the file in its initial sync (and knows its chunk list, as a watch
/// that has been running does). Once DST_F's file is there at full size and the page cache
/// is settled, the mutator edits SRC's file; the clock runs from the end of the edit until
/// DST_F's file is a new inode (ferry installs a new version by rename, so that is the new
/// version, complete). Bytes are not counted (`ferry watch` prints no summary): the
/// one-shot runs report them. The watch must exit 0 on SIGTERM and DST_F must equal SRC.
fn run_live(ctx: &Context<'_>, what: &str, live: &Primed<'_>) -> Result<FerryRun> {
    let (args, layout) = (ctx.args, ctx.layout);
    restore(&layout.pristine, live.mtime, &layout.src)?;
    fresh_dir(&layout.dst_f)?;
    let mut cmd = Command::new(live.ferry);
    cmd.arg("watch").arg(&layout.src).arg(&layout.dst_f);
    if !live.variant.fsync() {
        cmd.arg("--no-fsync");
    }
    if let Some(p) = live.params {
        cmd.arg("--chunk-sizes").arg(p);
    }
    // The insert mutator writes its result beside the file and renames it over it: a
    // scratch file rsync, run after the edit, never sees, so the watch leaves it out too.
    cmd.arg("--ignore").arg(MUTATOR_SCRATCH);
    let log_path = args.work.join("watch.log");
    let log = File::create(&log_path).map_err(setup(format!("creating {}", log_path.display())))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(setup(format!("{what}: spawning {}", live.ferry.display())))?;
    let outcome = time_live_edit(ctx, what, live, &log_path, &mut child);
    let status = services::terminate(&mut child);
    let wall = outcome?;
    if !status.is_some_and(|s| s.success()) {
        return Err(Failure::Wrong(format!(
            "{what}: ferry watch did not exit cleanly on SIGTERM ({status:?}); its log: {}",
            log_path.display()
        )));
    }
    verify(what, &layout.src, &layout.dst_f)?;
    Ok(FerryRun {
        wall,
        counters: [None; 7],
    })
}

/// The timed part of [`run_live`]: waits for the initial sync (the watch's log says it is
/// complete), edits, waits for the new version (a new inode with SRC's new size and mtime),
/// then, untimed, for DST_F to hold no more names than SRC. Fails if the watch exits or a
/// deadline passes.
fn time_live_edit(
    ctx: &Context<'_>,
    what: &str,
    live: &Primed<'_>,
    log: &Path,
    child: &mut std::process::Child,
) -> Result<f64> {
    use std::os::unix::fs::MetadataExt as _;
    let (args, tools, layout) = (ctx.args, ctx.tools, ctx.layout);
    let target = layout.dst_f.join(FILE_NAME);
    let size = args.scale.big_file_size();
    let alive = |child: &mut std::process::Child| match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(Failure::Wrong(format!(
            "{what}: ferry watch exited ({status})"
        ))),
        Err(e) => Err(Failure::Wrong(format!(
            "{what}: waiting on ferry watch: {e}"
        ))),
    };
    let start = Instant::now();
    let synced = || {
        fs::read_to_string(log).is_ok_and(|l| l.contains(INITIAL_SYNC_DONE))
            && fs::symlink_metadata(&target).is_ok_and(|m| m.len() == size)
    };
    let inode = loop {
        match fs::symlink_metadata(&target) {
            Ok(m) if synced() => break m.ino(),
            _ if start.elapsed() > LIVE_INITIAL_DEADLINE => {
                return Err(Failure::Wrong(format!(
                    "{what}: the initial sync did not write {} within {LIVE_INITIAL_DEADLINE:?}",
                    target.display()
                )))
            }
            _ => {
                alive(child)?;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    settle(live.cache, &layout.src, &layout.dst_f)?;
    let source = layout.src.join(FILE_NAME);
    mutate(args, tools, live.mutator, &source)?;
    let edited = Instant::now();
    let new = fs::symlink_metadata(&source)
        .map_err(setup(format!("{what}: stat of {}", source.display())))?;
    let mut polls = 0u64;
    let wall = loop {
        if fs::symlink_metadata(&target).is_ok_and(|m| {
            m.ino() != inode && m.len() == new.len() && m.modified().ok() == new.modified().ok()
        }) {
            break edited.elapsed().as_secs_f64();
        }
        if edited.elapsed() > LIVE_EDIT_DEADLINE {
            return Err(Failure::Wrong(format!(
                "{what}: the edit did not reach {} within {LIVE_EDIT_DEADLINE:?}",
                target.display()
            )));
        }
        polls += 1;
        if polls.is_multiple_of(1000) {
            alive(child)?;
        }
        std::thread::sleep(LIVE_POLL);
    };
    // Whatever else the edit left to do (nothing here: the scratch file is ignored) is
    // done before the watch is stopped and DST_F compared.
    let names = |dir: &Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    while names(&layout.dst_f) != names(&layout.src) {
        if edited.elapsed() > LIVE_EDIT_DEADLINE {
            return Err(Failure::Wrong(format!(
                "{what}: {} still differs from SRC in its names",
                layout.dst_f.display()
            )));
        }
        alive(child)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(wall)
}

/// One `ferry sync --state STATE SRC DST_F --json` run timed on an edit: SRC holds the
/// pristine file, DST_F starts empty and STATE (`--work`/state) is fresh, so an untimed
/// first sync copies the file and saves the source index and DST_F's chunk lists. Then the
/// mutator edits SRC's file, the page cache is settled as for the other one-shot runs, and
/// the same command is timed: it rehashes only the edited file (its previous chunk list
/// the hint) and trusts DST_F's saved chunk lists instead of reading its file. Bytes are
/// those of the timed run's summary; DST_F must equal SRC.
fn run_kept(ctx: &Context<'_>, what: &str, kept: &Primed<'_>) -> Result<FerryRun> {
    let (args, tools, layout) = (ctx.args, ctx.tools, ctx.layout);
    restore(&layout.pristine, kept.mtime, &layout.src)?;
    fresh_dir(&layout.dst_f)?;
    fresh_dir(&layout.state)?;
    // The same command both times: the first saves the state the second is timed with.
    let sync = |what: &str| {
        let run = run_ferry(
            what,
            kept.ferry,
            &layout.src,
            &layout.dst_f,
            kept.variant,
            kept.params,
            Some(&layout.state),
        )?;
        verify(what, &layout.src, &layout.dst_f)?;
        Ok(run)
    };
    sync(&format!("{what} (first sync, untimed)"))?;
    mutate(args, tools, kept.mutator, &layout.src.join(FILE_NAME))?;
    settle(kept.cache, &layout.src, &layout.dst_f)?;
    sync(what)
}

/// Prints one one-shot run's line of progress (wall time and bytes) on stderr.
fn report_one_shot(variant: Variant, params: Option<&str>, run: &FerryRun) {
    eprintln!(
        "  {:<24} {:<14} {:>8.3} s  {:>12} (data {}, metadata {}, reused {}, chunks sent {})  \
         [verified]",
        variant.label(),
        params.unwrap_or("default"),
        run.wall,
        kib(run.bytes().map(|b| b as f64)),
        kib(run.counter("bytes_sent").map(|b| b as f64)),
        kib(run.counter("bytes_metadata").map(|b| b as f64)),
        kib(run.counter("bytes_reused").map(|b| b as f64)),
        count(run.counter("chunks_sent").map(|c| c as f64)),
    );
}

// ---------------------------------------------------------------------------------------------
// rsync daemon behind the byte-counting proxy
// ---------------------------------------------------------------------------------------------

/// One timed rsync client run.
#[derive(Clone, Copy, Debug)]
struct RsyncRun {
    wall: f64,
    /// Payload bytes client → daemon, as counted by the proxy.
    c2s: u64,
    /// Payload bytes daemon → client.
    s2c: u64,
    /// `--stats` "Literal data" (bytes rsync sent as data rather than block references).
    literal: Option<u64>,
    /// `--stats` "Matched data".
    matched: Option<u64>,
}

impl RsyncRun {
    fn bytes(&self) -> u64 {
        self.c2s + self.s2c
    }
}

/// The number after `label` in rsync's `--stats` output ("Literal data: 32,768 bytes").
fn stats_number(stats: &str, label: &str) -> Option<u64> {
    let rest = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))?
        .trim_start_matches(':')
        .trim();
    let digits: String = rest
        .split_whitespace()
        .next()?
        .chars()
        .filter(|c| *c != ',' && *c != '.')
        .collect();
    digits.parse().ok()
}

fn run_rsync(
    what: &str,
    rsync: &Path,
    service: &mut RsyncService,
    variant: RsyncVariant,
    src: &Path,
    file_size: u64,
) -> Result<RsyncRun> {
    let args: Vec<&OsStr> = variant.args().iter().map(OsStr::new).collect();
    let t = service.push(what, rsync, &args, src, None, CLIENT_DEADLINE)?;
    let stats = String::from_utf8_lossy(&t.output.stdout);
    let run = RsyncRun {
        wall: t.wall.as_secs_f64(),
        c2s: t.c2s,
        s2c: t.s2c,
        literal: stats_number(&stats, "Literal data"),
        matched: stats_number(&stats, "Matched data"),
    };
    match run.literal {
        Some(l) if l as f64 > RSYNC_MAX_LITERAL_FRACTION * file_size as f64 => {
            eprintln!(
                "{}",
                loud(&format!(
                    "{what}: rsync sent {l} bytes of literal data: it did NOT use its delta \
                     algorithm, the comparison is meaningless"
                ))
            );
        }
        Some(_) => {}
        None => eprintln!("WARNING: {what}: no \"Literal data\" in rsync's --stats output"),
    }
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// The median of `f` over the runs that have a value for it.
fn median_by<R>(runs: &[R], f: impl Fn(&R) -> Option<u64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(|r| f(r).map(|x| x as f64)).collect();
    median(&v)
}

/// The runs of one ferry configuration on one mutator.
struct FerrySeries {
    mutator: Mutator,
    params: Option<String>,
    variant: Variant,
    runs: Vec<FerryRun>,
}

impl FerrySeries {
    fn median_wall(&self) -> Option<f64> {
        median(&self.runs.iter().map(|r| r.wall).collect::<Vec<_>>())
    }

    fn median_of(&self, f: impl Fn(&FerryRun) -> Option<u64>) -> Option<f64> {
        median_by(&self.runs, f)
    }

    fn median_bytes(&self) -> Option<f64> {
        self.median_of(FerryRun::bytes)
    }

    fn params_label(&self) -> &str {
        self.params.as_deref().unwrap_or("default")
    }
}

/// The runs of one rsync baseline on one mutator.
struct RsyncSeries {
    mutator: Mutator,
    variant: RsyncVariant,
    runs: Vec<RsyncRun>,
}

impl RsyncSeries {
    fn median_wall(&self) -> Option<f64> {
        median(&self.runs.iter().map(|r| r.wall).collect::<Vec<_>>())
    }

    fn median_of(&self, f: impl Fn(&RsyncRun) -> Option<u64>) -> Option<f64> {
        median_by(&self.runs, f)
    }

    fn median_bytes(&self) -> Option<f64> {
        self.median_of(|r| Some(r.bytes()))
    }
}

struct Results {
    cache: Cache,
    file_size: u64,
    /// `gen_tree.py`'s report of each mutator (offset, size), from the first round.
    mutations: Vec<(Mutator, Value)>,
    ferry: Vec<FerrySeries>,
    rsync: Vec<RsyncSeries>,
}

impl Results {
    fn ferry_mut(
        &mut self,
        mutator: Mutator,
        params: &Option<String>,
        variant: Variant,
    ) -> &mut FerrySeries {
        let i = match self
            .ferry
            .iter()
            .position(|s| s.mutator == mutator && &s.params == params && s.variant == variant)
        {
            Some(i) => i,
            None => {
                self.ferry.push(FerrySeries {
                    mutator,
                    params: params.clone(),
                    variant,
                    runs: Vec::new(),
                });
                self.ferry.len() - 1
            }
        };
        &mut self.ferry[i]
    }

    fn rsync_mut(&mut self, mutator: Mutator, variant: RsyncVariant) -> &mut RsyncSeries {
        let i = match self
            .rsync
            .iter()
            .position(|s| s.mutator == mutator && s.variant == variant)
        {
            Some(i) => i,
            None => {
                self.rsync.push(RsyncSeries {
                    mutator,
                    variant,
                    runs: Vec::new(),
                });
                self.rsync.len() - 1
            }
        };
        &mut self.rsync[i]
    }

    fn rsync_of(&self, mutator: Mutator, variant: RsyncVariant) -> Option<&RsyncSeries> {
        self.rsync
            .iter()
            .find(|s| s.mutator == mutator && s.variant == variant)
    }

    /// Ferry's median over rsync's for `measure`, `None` unless both were measured.
    fn ratio(&self, s: &FerrySeries, rsync: RsyncVariant, measure: Measure) -> Option<f64> {
        let r = self.rsync_of(s.mutator, rsync)?;
        match measure {
            Measure::Bytes => ratio(s.median_bytes(), r.median_bytes()),
            Measure::Wall => ratio(s.median_wall(), r.median_wall()),
        }
    }

    /// The ferry / rsync ratios the report shows, in the order of the ferry series. Per
    /// series: bytes (one-shot runs only: a live run counts none) against plain rsync, or
    /// `--fsync` if plain did not run (a few bytes more: the option itself), held to the
    /// target for the durable run without `--state` only, whose Sender knows nothing of the
    /// target (see [`Variant::bytes_judged`]); wall time against the
    /// rsync that makes the same durability promise, held to the target; and for durable
    /// variants, wall time against plain rsync for information (the pairing before the
    /// `--fsync` baseline, kept in view so the change of baseline is plain to see).
    fn comparisons(&self) -> Vec<Comparison<'_>> {
        let mut out = Vec::new();
        for s in &self.ferry {
            let mut add = |rsync: RsyncVariant, measure: Measure, judged: bool| {
                if self.rsync_of(s.mutator, rsync).is_some() {
                    out.push(Comparison {
                        ferry: s,
                        rsync,
                        measure,
                        value: self.ratio(s, rsync, measure),
                        judged,
                    });
                }
            };
            if !s.variant.live() {
                let plain = self.rsync_of(s.mutator, RsyncVariant::Plain).is_some();
                let baseline = if plain {
                    RsyncVariant::Plain
                } else {
                    RsyncVariant::Fsync
                };
                add(baseline, Measure::Bytes, s.variant.bytes_judged());
            }
            add(s.variant.rsync_peer(), Measure::Wall, true);
            if s.variant.rsync_peer() != RsyncVariant::Plain {
                add(RsyncVariant::Plain, Measure::Wall, false);
            }
        }
        out
    }
}

/// What a ferry / rsync ratio compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// Bytes exchanged.
    Bytes,
    /// Wall time.
    Wall,
}

impl Measure {
    fn label(self) -> &'static str {
        match self {
            Measure::Bytes => "bytes",
            Measure::Wall => "wall time",
        }
    }

    /// The name of the ratio in the JSON output.
    fn key(self) -> &'static str {
        match self {
            Measure::Bytes => "bytes_ratio",
            Measure::Wall => "wall_ratio",
        }
    }

    fn limit(self) -> f64 {
        match self {
            Measure::Bytes => TARGET_BYTES_RATIO,
            Measure::Wall => TARGET_WALL_RATIO,
        }
    }
}

/// One ferry / rsync ratio of the report (see [`Results::comparisons`]).
struct Comparison<'a> {
    ferry: &'a FerrySeries,
    rsync: RsyncVariant,
    measure: Measure,
    value: Option<f64>,
    /// Held to the target, or shown for information.
    judged: bool,
}

impl Comparison<'_> {
    /// PASS / MISS / SKIP when judged, else "(info)".
    fn result(&self) -> &'static str {
        if self.judged {
            verdict(self.value, self.measure.limit())
        } else {
            "(info)"
        }
    }

    fn json(&self) -> Value {
        json!({
            "mutator": self.ferry.mutator.as_str(),
            "chunk_sizes": self.ferry.params,
            "variant": self.ferry.variant.as_str(),
            "rsync_variant": self.rsync.as_str(),
            "name": self.measure.key(),
            "value": self.value,
            "limit": self.measure.limit(),
            "judged": self.judged,
            "result": self.result(),
        })
    }
}

/// A byte count in KiB, or in MiB from 10 MiB up.
fn kib(b: Option<f64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b >= 10.0 * MIB as f64 => format!("{:.1} MiB", b / MIB as f64),
        Some(b) => format!("{:.1} KiB", b / 1024.0),
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.3} s"))
}

fn count(c: Option<f64>) -> String {
    c.map_or("-".into(), |c| format!("{c:.0}"))
}

fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}×"))
}

struct Context<'a> {
    args: &'a Args,
    tools: &'a Tools,
    layout: &'a Layout,
}

fn results_json(ctx: &Context<'_>, r: &Results) -> Value {
    let a = ctx.args;
    let ferry: Vec<Value> = r
        .ferry
        .iter()
        .map(|s| {
            let mut medians = serde_json::Map::new();
            for c in FERRY_COUNTERS {
                medians.insert(c.into(), json!(s.median_of(|x| x.counter(c))));
            }
            json!({
                "mutator": s.mutator.as_str(),
                "chunk_sizes": s.params,
                "variant": s.variant.as_str(),
                "median_wall_s": s.median_wall(),
                "median_bytes": s.median_bytes(),
                "median_chunks": s.median_of(FerryRun::chunks),
                "median_counters": medians,
                "rsync_peer": s.variant.rsync_peer().as_str(),
                "ratio_bytes_vs_rsync_plain": r.ratio(s, RsyncVariant::Plain, Measure::Bytes),
                "ratio_bytes_vs_rsync_fsync": r.ratio(s, RsyncVariant::Fsync, Measure::Bytes),
                "ratio_wall_vs_rsync_plain": r.ratio(s, RsyncVariant::Plain, Measure::Wall),
                "ratio_wall_vs_rsync_fsync": r.ratio(s, RsyncVariant::Fsync, Measure::Wall),
                "runs": s.runs.iter().map(|x| {
                    let mut m = serde_json::Map::new();
                    m.insert("wall_s".into(), json!(x.wall));
                    m.insert("bytes".into(), json!(x.bytes()));
                    for (c, v) in FERRY_COUNTERS.iter().zip(&x.counters) {
                        m.insert((*c).into(), json!(v));
                    }
                    Value::Object(m)
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let rsync: Vec<Value> = r
        .rsync
        .iter()
        .map(|s| {
            json!({
                "mutator": s.mutator.as_str(),
                "variant": s.variant.as_str(),
                "command": s.variant.command(),
                "median_wall_s": s.median_wall(),
                "median_bytes": s.median_bytes(),
                "median_c2s": s.median_of(|x| Some(x.c2s)),
                "median_s2c": s.median_of(|x| Some(x.s2c)),
                "median_literal": s.median_of(|x| x.literal),
                "runs": s.runs.iter().map(|x| json!({
                    "wall_s": x.wall, "c2s": x.c2s, "s2c": x.s2c, "bytes": x.bytes(),
                    "literal": x.literal, "matched": x.matched,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let comparisons = r.comparisons();
    let (targets, info): (Vec<_>, Vec<_>) = comparisons.iter().partition(|c| c.judged);
    json!({
        "benchmark": "bench_delta",
        "ok": true,
        "mode": if a.sweep { "sweep" } else { "compare" },
        "scale": a.scale.as_str(),
        "file_size": r.file_size,
        "seed": a.seed,
        "runs": a.runs,
        "cache": r.cache.as_str(),
        "work": a.work,
        "pristine": ctx.layout.pristine,
        "mutations": r.mutations.iter().map(|(m, v)| json!({ "mutator": m.as_str(), "report": v }))
            .collect::<Vec<_>>(),
        "tools": {
            "ferry": ctx.tools.ferry.as_ref().map(|f| &f.0),
            "ferry_version": ctx.tools.ferry.as_ref().map(|f| &f.1),
            "ferry_command": "ferry sync [--state DIR] SRC DST_F --json [--no-fsync] \
                              [--chunk-sizes S]",
            "rsync": ctx.tools.rsync.as_ref().map(|r| &r.0),
            "rsync_version": ctx.tools.rsync.as_ref().map(|r| &r.1),
            "rsync_commands": a.rsync_variants.iter()
                .map(|v| json!({ "variant": v.as_str(), "command": v.command() }))
                .collect::<Vec<_>>(),
        },
        "method": {
            "wall": "std::time::Instant around spawn..exit of the ferry / rsync client process",
            "ferry_bytes": "bytes_sent + bytes_metadata of ferry's --json summary",
            "rsync_bytes": "byteproxy.py payload bytes, both directions, client <-> rsync daemon",
            "cache": r.cache.describe(),
            "statistic": "median over runs",
            "kept": "kept and kept-no-fsync: ferry sync --state DIR with a fresh DIR into \
                     an empty DST_F (untimed; saves the state), then SRC edited and the same \
                     command timed",
            "pairing": "targets: wall_ratio like for like (durable, live and kept against \
                        rsync --fsync, no-fsync, live-no-fsync and kept-no-fsync against plain \
                        rsync: rsync_peer), bytes_ratio of durable against plain rsync (fsync \
                        if plain did not run). info: wall_ratio of durable, live and kept \
                        against plain rsync, bytes_ratio of no-fsync, kept and kept-no-fsync",
        },
        "ferry": ferry,
        "rsync": rsync,
        "targets": targets.iter().map(|c| c.json()).collect::<Vec<_>>(),
        "info": info.iter().map(|c| c.json()).collect::<Vec<_>>(),
        "verified": true,
    })
}

fn print_tables(ctx: &Context<'_>, r: &Results) {
    let a = ctx.args;
    println!();
    println!(
        "bench_delta — {} mode, scale={} ({:.0} MiB file), seed={}, runs={}",
        if a.sweep { "sweep" } else { "compare" },
        a.scale,
        r.file_size as f64 / MIB as f64,
        a.seed,
        a.runs
    );
    println!("work:     {}", a.work.display());
    if let Some((f, v)) = &ctx.tools.ferry {
        println!(
            "ferry:    {} sync [--state DIR] SRC DST_F --json [--no-fsync] [--chunk-sizes S]  \
             ({v}; {})",
            f.display(),
            modified(f)
        );
    }
    if let Some((p, v)) = &ctx.tools.rsync {
        for (i, rv) in a.rsync_variants.iter().enumerate() {
            println!(
                "{:<10}{} {} SRC/ rsync://127.0.0.1:PROXY/dst/",
                if i == 0 { "rsync:" } else { "" },
                p.display(),
                rv.args().join(" ")
            );
        }
        println!("          ({v}; daemon behind byteproxy.py)");
    }
    println!("cache:    {}", r.cache.describe());
    println!("wall:     Instant around spawn..exit of the ferry / rsync client process");
    println!(
        "bytes:    ferry: bytes_sent + bytes_metadata (--json); rsync: proxy payload, both ways"
    );
    for (m, v) in &r.mutations {
        println!("mutator:  {:<9} {}: {v}", m.as_str(), m.describe());
    }

    println!();
    println!(
        "{:<9} {:<24} {:<14} {:>10} {:>13} {:>13} {:>13} {:>13} {:>9} {:>9}",
        "mutator",
        "tool",
        "chunk sizes",
        "wall",
        "bytes",
        "data",
        "metadata",
        "reused",
        "chunks→",
        "chunks"
    );
    for m in &a.mutators {
        for s in r.ferry.iter().filter(|s| s.mutator == *m) {
            println!(
                "{:<9} {:<24} {:<14} {:>10} {:>13} {:>13} {:>13} {:>13} {:>9} {:>9}",
                m.as_str(),
                s.variant.label(),
                s.params_label(),
                secs(s.median_wall()),
                kib(s.median_bytes()),
                kib(s.median_of(|x| x.counter("bytes_sent"))),
                kib(s.median_of(|x| x.counter("bytes_metadata"))),
                kib(s.median_of(|x| x.counter("bytes_reused"))),
                count(s.median_of(|x| x.counter("chunks_sent"))),
                count(s.median_of(FerryRun::chunks)),
            );
        }
        for s in r.rsync.iter().filter(|s| s.mutator == *m) {
            println!(
                "{:<9} {:<24} {:<14} {:>10} {:>13} {:>13} {:>13} {:>13}",
                m.as_str(),
                s.variant.label(),
                "-",
                secs(s.median_wall()),
                kib(s.median_bytes()),
                format!("{} lit", kib(s.median_of(|x| x.literal))),
                format!("{} c→s", kib(s.median_of(|x| Some(x.c2s)))),
                format!("{} s→c", kib(s.median_of(|x| Some(x.s2c)))),
            );
        }
    }
    println!(
        "(medians; ferry: data = bytes_sent, metadata = bytes_metadata, chunks→ = chunks_sent, \
         chunks = chunks_sent + chunks_reused;\n rsync: data = \"Literal data\" of --stats, \
         c→s / s→c = proxy bytes client→daemon / daemon→client)"
    );
    if r.ferry.iter().any(|s| s.runs.len() > 1) || r.rsync.iter().any(|s| s.runs.len() > 1) {
        println!();
        println!("per-run wall / bytes:");
        for s in &r.ferry {
            let runs: Vec<String> = s
                .runs
                .iter()
                .map(|x| format!("{:.3} s / {}", x.wall, kib(x.bytes().map(|b| b as f64))))
                .collect();
            println!(
                "  {:<9} {:<24} {:<14} {}",
                s.mutator.as_str(),
                s.variant.label(),
                s.params_label(),
                runs.join(", ")
            );
        }
        for s in &r.rsync {
            let runs: Vec<String> = s
                .runs
                .iter()
                .map(|x| format!("{:.3} s / {}", x.wall, kib(Some(x.bytes() as f64))))
                .collect();
            println!(
                "  {:<9} {:<24} {:<14} {}",
                s.mutator.as_str(),
                s.variant.label(),
                "-",
                runs.join(", ")
            );
        }
    }
    let comparisons = r.comparisons();
    if comparisons.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<9} {:<24} {:<14} {:<14} {:<10} {:>10} {:>10} {:>8}",
        "mutator", "ferry", "chunk sizes", "/ rsync", "ratio", "value", "limit", "result"
    );
    for c in &comparisons {
        println!(
            "{:<9} {:<24} {:<14} {:<14} {:<10} {:>10} {:>10} {:>8}",
            c.ferry.mutator.as_str(),
            c.ferry.variant.label(),
            c.ferry.params_label(),
            c.rsync.label(),
            c.measure.label(),
            times(c.value),
            format!("≤ {:.2}×", c.measure.limit()),
            c.result()
        );
    }
    println!(
        "(wall time is judged like for like: durable ferry, ferry --state and watch against \
         rsync --fsync (its\n daemon fsyncs each file before renaming it), --no-fsync against \
         plain rsync; durable against plain\n rsync, the comparison made before there was an \
         --fsync baseline, is (info). Bytes are compared with\n plain rsync's (--fsync adds \
         only its name to the handshake) and judged for the durable one-shot run\n without \
         --state only (ferry --state starts from the chunk lists it saved: (info)))"
    );
    if ctx.tools.ferry.is_some() {
        println!("\nevery result was verified identical to SRC (names, kinds, sizes, contents)");
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn run(args: Args) -> Result<()> {
    let tools = find_tools(&args)?;
    let layout = Layout::new(&args.work, args.scale, args.seed);
    fs::create_dir_all(&args.work)
        .map_err(setup(format!("creating --work {}", args.work.display())))?;
    if let Some((f, v)) = &tools.ferry {
        eprintln!("bench_delta: ferry {} ({v}; {})", f.display(), modified(f));
    }
    let ctx = Context {
        args: &args,
        tools: &tools,
        layout: &layout,
    };
    let result = bench(&ctx);
    if result.is_ok() && !args.keep {
        for d in layout.scratch() {
            if let Err(e) = fs::remove_dir_all(d) {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!("bench_delta: removing {}: {e}", d.display());
                }
            }
        }
    } else if result.is_err() {
        eprintln!(
            "bench_delta: left {}, {}, {}, {} in place for inspection",
            layout.src.display(),
            layout.dst_f.display(),
            layout.dst_r.display(),
            layout.state.display()
        );
    }
    result
}

fn bench(ctx: &Context<'_>) -> Result<()> {
    let (args, tools, layout) = (ctx.args, ctx.tools, ctx.layout);
    let mtime = ensure_pristine(args, tools, layout)?;
    let cache = choose_cache(args)?;
    eprintln!("bench_delta: cache {}", cache.describe());
    let mut service = match &tools.rsync {
        Some((rsync, _)) => {
            // The module's directory must exist before the daemon serves it.
            restore(&layout.pristine, mtime, &layout.dst_r)?;
            fresh_dir(&layout.rsyncd)?;
            Some(RsyncService::start(
                rsync,
                &tools.python,
                &tools.byteproxy,
                &layout.rsyncd,
                "dst",
                &layout.dst_r,
                "bench_delta",
            )?)
        }
        None => None,
    };
    let src_file = layout.src.join(FILE_NAME);
    let param_sets = args.param_sets();
    let variants = args.variants();
    let mut results = Results {
        cache,
        file_size: args.scale.big_file_size(),
        mutations: Vec::new(),
        ferry: Vec::new(),
        rsync: Vec::new(),
    };
    for &mutator in &args.mutators {
        for round in 1..=args.runs {
            let tag = format!("{} round {round}/{}", mutator.as_str(), args.runs);
            if let Some((ferry, _)) = &tools.ferry {
                for params in &param_sets {
                    let what = |variant: Variant| {
                        format!(
                            "{tag} {} chunk sizes {}",
                            variant.label(),
                            params.as_deref().unwrap_or("default")
                        )
                    };
                    let primed = |variant| Primed {
                        ferry,
                        variant,
                        params: params.as_deref(),
                        mutator,
                        cache,
                        mtime,
                    };
                    for &variant in variants.iter().filter(|v| v.live()) {
                        let run = run_live(ctx, &what(variant), &primed(variant))?;
                        eprintln!(
                            "  {:<24} {:<14} {:>8.3} s  from the end of the edit to DST \
                             replaced  [verified]",
                            variant.label(),
                            params.as_deref().unwrap_or("default"),
                            run.wall,
                        );
                        results.ferry_mut(mutator, params, variant).runs.push(run);
                    }
                    for &variant in variants.iter().filter(|v| v.kept()) {
                        let run = run_kept(ctx, &what(variant), &primed(variant))?;
                        report_one_shot(variant, params.as_deref(), &run);
                        results.ferry_mut(mutator, params, variant).runs.push(run);
                    }
                }
            }
            // The live and kept runs above leave SRC edited from a pristine copy of their
            // own; the runs below share this one.
            eprintln!("bench_delta: {tag}: preparing SRC");
            restore(&layout.pristine, mtime, &layout.src)?;
            let report = mutate(args, tools, mutator, &src_file)?;
            if round == 1 {
                results.mutations.push((mutator, report));
            }
            if let Some((ferry, _)) = &tools.ferry {
                for params in &param_sets {
                    for &variant in variants.iter().filter(|v| !v.live() && !v.kept()) {
                        let what = format!(
                            "{tag} {} chunk sizes {}",
                            variant.label(),
                            params.as_deref().unwrap_or("default")
                        );
                        restore(&layout.pristine, mtime, &layout.dst_f)?;
                        settle(cache, &layout.src, &layout.dst_f)?;
                        let run = run_ferry(
                            &what,
                            ferry,
                            &layout.src,
                            &layout.dst_f,
                            variant,
                            params.as_deref(),
                            None,
                        )?;
                        verify(&what, &layout.src, &layout.dst_f)?;
                        report_one_shot(variant, params.as_deref(), &run);
                        results.ferry_mut(mutator, params, variant).runs.push(run);
                    }
                }
            }
            if let (Some((rsync, _)), Some(service)) = (&tools.rsync, service.as_mut()) {
                for &variant in &args.rsync_variants {
                    let what = format!("{tag} {}", variant.label());
                    restore(&layout.pristine, mtime, &layout.dst_r)?;
                    settle(cache, &layout.src, &layout.dst_r)?;
                    let run = run_rsync(
                        &what,
                        rsync,
                        service,
                        variant,
                        &layout.src,
                        results.file_size,
                    )?;
                    verify(&what, &layout.src, &layout.dst_r)?;
                    eprintln!(
                        "  {:<24} {:<14} {:>8.3} s  {:>12} (c→s {}, s→c {}, literal {})  \
                         [verified]",
                        variant.label(),
                        "-",
                        run.wall,
                        kib(Some(run.bytes() as f64)),
                        kib(Some(run.c2s as f64)),
                        kib(Some(run.s2c as f64)),
                        kib(run.literal.map(|l| l as f64)),
                    );
                    results.rsync_mut(mutator, variant).runs.push(run);
                }
            }
        }
    }
    drop(service);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results_json(ctx, &results)).unwrap_or_default()
        );
    } else {
        print_tables(ctx, &results);
    }
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        "bench_delta",
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
        assert_eq!(a.runs, 3);
        assert_eq!(a.mutators, vec![Mutator::EditMid, Mutator::Insert]);
        assert_eq!(a.param_sets(), vec![None]);
        assert_eq!(
            a.variants(),
            vec![
                Variant::Durable,
                Variant::NoFsync,
                Variant::Live,
                Variant::LiveNoFsync,
                Variant::Kept,
                Variant::KeptNoFsync
            ]
        );
        assert!(a.rsync() && a.ferry());
        assert_eq!(
            a.rsync_variants,
            vec![RsyncVariant::Plain, RsyncVariant::Fsync]
        );
        let a = parse(&[
            "--rsync-variants",
            "fsync",
            "--variants",
            "durable,live-no-fsync",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.rsync_variants, vec![RsyncVariant::Fsync]);
        assert_eq!(
            a.variants()
                .into_iter()
                .map(Variant::rsync_peer)
                .collect::<Vec<_>>(),
            vec![RsyncVariant::Fsync, RsyncVariant::Plain]
        );
        let a = parse(&["--variants", "kept-no-fsync, kept"])
            .unwrap()
            .unwrap();
        assert_eq!(a.variants(), vec![Variant::KeptNoFsync, Variant::Kept]);
        assert!(a.variants().iter().all(|v| v.kept() && !v.live()));
        assert_eq!(
            a.variants()
                .into_iter()
                .map(|v| (v.fsync(), v.rsync_peer()))
                .collect::<Vec<_>>(),
            vec![(false, RsyncVariant::Plain), (true, RsyncVariant::Fsync)]
        );
        let a = parse(&[
            "--runs=1",
            "--mutators",
            "insert",
            "--chunk-sizes",
            "8K,32K,128K",
            "--cache",
            "warm",
            "--scale",
            "small",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.mutators, vec![Mutator::Insert]);
        assert_eq!(a.param_sets(), vec![Some("8K,32K,128K".to_string())]);
        assert_eq!((a.cache, a.scale), (Some(Cache::Warm), Scale::Small));
        let a = parse(&["--sweep"]).unwrap().unwrap();
        assert_eq!(a.param_sets().len(), DEFAULT_SWEEP.len());
        assert_eq!(a.variants(), vec![Variant::Durable]);
        assert!(!a.rsync());
        let a = parse(&[
            "--sweep",
            "--chunk-sizes",
            "4K,8K,16K",
            "--chunk-sizes=1K,2K,4K",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.param_sets().len(), 2);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--chunk-sizes", "4K,8K,16K", "--chunk-sizes", "1K,2K,4K"]).is_err());
        assert!(parse(&["--chunk-sizes", "4K,8K"]).is_err());
        assert!(parse(&["--mutators", "append"]).is_err());
        assert!(parse(&["--variants", "fast"]).is_err());
        assert!(parse(&["--variants", "kept-fsync"]).is_err());
        assert!(parse(&["--rsync-variants", "sync"]).is_err());
        assert!(parse(&["--rsync-variants", "plain,plain"]).is_err());
        assert!(parse(&["--sweep", "--skip-ferry"]).is_err());
        assert!(parse(&["--skip-ferry", "--skip-rsync"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn pairs_ferry_with_rsync_like_for_like() {
        use Measure::{Bytes, Wall};
        use RsyncVariant::{Fsync, Plain};
        let ferry_run = |wall| FerryRun {
            wall,
            counters: [Some(100), Some(10), None, None, None, None, None],
        };
        let rsync_run = |wall| RsyncRun {
            wall,
            c2s: 300,
            s2c: 140,
            literal: None,
            matched: None,
        };
        let mut r = Results {
            cache: Cache::Warm,
            file_size: 0,
            mutations: Vec::new(),
            ferry: Vec::new(),
            rsync: Vec::new(),
        };
        let m = Mutator::EditMid;
        for (v, wall) in [
            (Variant::Live, 1.0),
            (Variant::LiveNoFsync, 0.5),
            (Variant::Durable, 2.0),
            (Variant::NoFsync, 1.0),
            (Variant::Kept, 0.8),
            (Variant::KeptNoFsync, 0.4),
        ] {
            r.ferry_mut(m, &None, v).runs.push(ferry_run(wall));
        }
        r.rsync_mut(m, Plain).runs.push(rsync_run(2.0));
        r.rsync_mut(m, Fsync).runs.push(rsync_run(8.0));
        let got: Vec<_> = r
            .comparisons()
            .iter()
            .map(|c| (c.ferry.variant, c.rsync, c.measure, c.value, c.result()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Variant::Live, Fsync, Wall, Some(0.125), "PASS"),
                (Variant::Live, Plain, Wall, Some(0.5), "(info)"),
                (Variant::LiveNoFsync, Plain, Wall, Some(0.25), "PASS"),
                (Variant::Durable, Plain, Bytes, Some(0.25), "PASS"),
                (Variant::Durable, Fsync, Wall, Some(0.25), "PASS"),
                (Variant::Durable, Plain, Wall, Some(1.0), "(info)"),
                (Variant::NoFsync, Plain, Bytes, Some(0.25), "(info)"),
                (Variant::NoFsync, Plain, Wall, Some(0.5), "PASS"),
                (Variant::Kept, Plain, Bytes, Some(0.25), "(info)"),
                (Variant::Kept, Fsync, Wall, Some(0.1), "PASS"),
                (Variant::Kept, Plain, Wall, Some(0.4), "(info)"),
                (Variant::KeptNoFsync, Plain, Bytes, Some(0.25), "(info)"),
                (Variant::KeptNoFsync, Plain, Wall, Some(0.2), "PASS"),
            ]
        );

        // Without plain rsync, bytes fall back to --fsync's and the (info) pairing is gone.
        r.rsync.retain(|s| s.variant == Fsync);
        let got: Vec<_> = r
            .comparisons()
            .iter()
            .map(|c| (c.ferry.variant, c.rsync, c.measure))
            .collect();
        assert_eq!(
            got,
            vec![
                (Variant::Live, Fsync, Wall),
                (Variant::Durable, Fsync, Bytes),
                (Variant::Durable, Fsync, Wall),
                (Variant::NoFsync, Fsync, Bytes),
                (Variant::Kept, Fsync, Bytes),
                (Variant::Kept, Fsync, Wall),
                (Variant::KeptNoFsync, Fsync, Bytes),
            ]
        );
    }

    #[test]
    fn reads_rsync_stats() {
        let s = "Number of files: 2 (reg: 1, dir: 1)\nLiteral data: 32,768 bytes\n\
                 Matched data: 1,073,709,056 bytes\nTotal bytes sent: 163,980\n";
        assert_eq!(stats_number(s, "Literal data"), Some(32_768));
        assert_eq!(stats_number(s, "Matched data"), Some(1_073_709_056));
        assert_eq!(stats_number(s, "Total bytes sent"), Some(163_980));
        assert_eq!(stats_number(s, "Total bytes received"), None);
        assert_eq!(
            stats_number("Literal data: 1024 bytes", "Literal data"),
            Some(1024)
        );
    }
}
