//! Shared plumbing of the benchmark binaries (`bench_sync`, `bench_watch`): failures and exit
//! statuses, command-line parsing, locating the ferry binary, the working directory, result
//! verification and small statistics.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use crate::compare::{compare_trees, CompareReport};

/// How many differences to print when verification fails.
const MAX_DIFFS_SHOWN: usize = 20;

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

/// The result type of a benchmark's steps.
pub type Result<T> = std::result::Result<T, Failure>;

/// Why the benchmark stopped.
#[derive(Debug)]
pub enum Failure {
    /// Bad command line, missing tool, I/O trouble of the benchmark itself: exit 1.
    Setup(String),
    /// ferry failed or produced a wrong result: exit 3.
    Wrong(String),
    /// A failure that has already been printed; carries the exit code.
    Reported(u8),
}

impl Failure {
    /// The message to print.
    pub fn message(&self) -> &str {
        match self {
            Failure::Setup(m) | Failure::Wrong(m) => m,
            Failure::Reported(_) => "(already reported)",
        }
    }

    /// The process exit status this failure calls for.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Setup(_) => 1,
            Failure::Wrong(_) => 3,
            Failure::Reported(code) => *code,
        }
    }

    /// Marks a failure as printed so that it is not printed twice.
    pub fn reported(self) -> Self {
        Failure::Reported(self.exit_code())
    }
}

/// `map_err` adapter: turns an error into [`Failure::Setup`] with `context` in front.
pub fn setup<E: std::fmt::Display>(context: impl std::fmt::Display) -> impl FnOnce(E) -> Failure {
    move |e| Failure::Setup(format!("{context}: {e}"))
}

/// Puts a loud banner around `msg` (used for wrong results).
pub fn loud(msg: &str) -> String {
    let bar = "!".repeat(77);
    format!("\n{bar}\n!!! {msg}\n{bar}")
}

/// Prints a failure of benchmark `name` (loudly, on stderr; and as JSON on stdout with
/// `json`).
pub fn report_failure(name: &str, f: &Failure, json: bool) {
    eprintln!("{name}: error: {}", f.message());
    if json {
        println!(
            "{}",
            json!({ "benchmark": name, "ok": false, "error": f.message().trim() })
        );
    }
}

/// The whole `main` of a benchmark binary named `name`: prints `usage` for `-h`/`--help`
/// (exit 0) or after a command-line error (exit 1); otherwise runs `run`, prints its failure
/// (unless already reported; as JSON too when `json(&args)`) and maps it to the exit status.
pub fn main<A>(
    name: &str,
    usage: &str,
    parsed: std::result::Result<Option<A>, String>,
    json: impl FnOnce(&A) -> bool,
    run: impl FnOnce(A) -> Result<()>,
) -> ExitCode {
    let args = match parsed {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {e}\n\n{usage}");
            return ExitCode::from(1);
        }
    };
    let json = json(&args);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !matches!(f, Failure::Reported(_)) {
                report_failure(name, &f, json);
            }
            ExitCode::from(f.exit_code())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// A command line being parsed flag by flag; accepts both `--flag value` and `--flag=value`.
pub struct ArgParser<I> {
    it: I,
    /// The `=value` part of the current flag, if it had one.
    inline: Option<OsString>,
}

impl<I: Iterator<Item = OsString>> ArgParser<I> {
    /// Parses the arguments `it` (without the program name).
    pub fn new(it: I) -> Self {
        ArgParser { it, inline: None }
    }

    /// The next flag (an inline `=value` of a `--flag` is split off for [`Self::value`]),
    /// or `None` at the end.
    pub fn next_flag(&mut self) -> std::result::Result<Option<String>, String> {
        let Some(arg) = self.it.next() else {
            return Ok(None);
        };
        let arg = text(arg, "argument")?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(OsString::from(v))),
            _ => (arg, None),
        };
        self.inline = inline;
        Ok(Some(flag))
    }

    /// The value of `flag`: its inline `=value`, or else the next argument.
    pub fn value(&mut self, flag: &str) -> std::result::Result<OsString, String> {
        match self.inline.take() {
            Some(v) => Ok(v),
            None => self
                .it
                .next()
                .ok_or_else(|| format!("{flag} needs a value")),
        }
    }

    /// The value of `flag` as UTF-8 text.
    pub fn text(&mut self, flag: &str) -> std::result::Result<String, String> {
        text(self.value(flag)?, flag)
    }

    /// The value of `flag` parsed as a number (or anything else `FromStr`).
    pub fn number<T: std::str::FromStr>(&mut self, flag: &str) -> std::result::Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let s = self.text(flag)?;
        s.parse().map_err(|e| format!("{flag} {s:?}: {e}"))
    }

    /// The value of `flag` as a count of at least 1.
    pub fn positive(&mut self, flag: &str) -> std::result::Result<usize, String> {
        match self.number(flag)? {
            0 => Err(format!("{flag} must be at least 1")),
            n => Ok(n),
        }
    }
}

fn text(v: OsString, flag: &str) -> std::result::Result<String, String> {
    v.into_string()
        .map_err(|v| format!("{flag}: not valid UTF-8: {v:?}"))
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// Resolves a program name through `$PATH` (names containing `/` are taken as paths).
pub fn which(name: &OsStr) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// `<workspace>/target/release/ferry`.
pub fn default_ferry_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("release")
        .join("ferry")
}

/// The ferry binary: `arg` (`--ferry PATH`, resolved through `$PATH`) or the default release
/// build. `alternatives` completes the hint of the error, "(or pass {alternatives})".
pub fn find_ferry(arg: Option<&Path>, alternatives: &str) -> Result<PathBuf> {
    let hint =
        format!("build it with `cargo build --release -p ferry-node` (or pass {alternatives})");
    match arg {
        Some(p) => which(p.as_os_str()).ok_or_else(|| {
            Failure::Setup(format!("ferry binary {} not found; {hint}", p.display()))
        }),
        None => {
            let p = default_ferry_path();
            if p.is_file() {
                Ok(p.canonicalize().unwrap_or(p))
            } else {
                Err(Failure::Setup(format!(
                    "ferry binary not found at {}; {hint}",
                    p.display()
                )))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Directories and verification
// ---------------------------------------------------------------------------------------------

/// Runs `bench` in its working directory and returns its result: `given` (`--workdir DIR`,
/// created if missing and left in place), or else a fresh temporary directory
/// `/tmp/<temp_prefix>…`, removed at the end unless `keep`. A failure in a temporary
/// directory is printed (as benchmark `name`, as JSON too with `json`) before the cleanup
/// note and comes back as [`Failure::Reported`].
pub fn in_workdir(
    name: &str,
    given: Option<&Path>,
    temp_prefix: &str,
    keep: bool,
    json: bool,
    bench: impl FnOnce(PathBuf) -> Result<()>,
) -> Result<()> {
    if let Some(d) = given {
        fs::create_dir_all(d).map_err(setup(format!("creating --workdir {}", d.display())))?;
        let workdir = d
            .canonicalize()
            .map_err(setup(format!("resolving --workdir {}", d.display())))?;
        return bench(workdir);
    }
    let temp = tempfile::Builder::new()
        .prefix(temp_prefix)
        .tempdir_in("/tmp")
        .map_err(setup("creating a temporary directory under /tmp"))?;
    let result = bench(temp.path().to_path_buf());
    if let Err(f) = &result {
        // Report before the cleanup note so the failure is not buried.
        report_failure(name, f, json);
    }
    if keep {
        eprintln!("{name}: kept {}", temp.keep().display());
    } else {
        eprintln!(
            "{name}: removing {}{}",
            temp.path().display(),
            if result.is_err() {
                " (use --keep or --workdir to inspect a failed run)"
            } else {
                ""
            }
        );
        drop(temp);
    }
    result.map_err(Failure::reported)
}

/// Removes `dir` (if present) and recreates it empty.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::Setup(format!("removing {}: {e}", dir.display()))),
    }
    fs::create_dir_all(dir).map_err(setup(format!("creating {}", dir.display())))
}

/// Compares `dst` with `src` (names, kinds, sizes, contents); any difference is a loud
/// [`Failure::Wrong`] listing the first few.
pub fn verify(what: &str, src: &Path, dst: &Path) -> Result<CompareReport> {
    let report = compare_trees(src, dst).map_err(setup(format!(
        "{what}: comparing {} with {}",
        dst.display(),
        src.display()
    )))?;
    if report.is_equal() {
        return Ok(report);
    }
    let mut msg = loud(&format!(
        "VERIFICATION FAILED: {what}: {} differs from SRC {} ({} differences)",
        dst.display(),
        src.display(),
        report.differences.len()
    ));
    for d in report.differences.iter().take(MAX_DIFFS_SHOWN) {
        let _ = write!(msg, "\n  {d}");
    }
    if report.differences.len() > MAX_DIFFS_SHOWN {
        let _ = write!(
            msg,
            "\n  … and {} more",
            report.differences.len() - MAX_DIFFS_SHOWN
        );
    }
    Err(Failure::Wrong(msg))
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Median (mean of the middle two for an even count); `None` if empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Largest value; `None` if empty.
pub fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// `a / b` when both are known and `b > 0`.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// `PASS` if `value ≤ limit`, `MISS` if above, `SKIP` if not measured.
pub fn verdict(value: Option<f64>, limit: f64) -> &'static str {
    match value {
        None => "SKIP",
        Some(v) if v <= limit => "PASS",
        Some(_) => "MISS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(v: &[&str]) -> ArgParser<impl Iterator<Item = OsString>> {
        ArgParser::new(v.iter().map(OsString::from).collect::<Vec<_>>().into_iter())
    }

    #[test]
    fn parses_flags_and_values() {
        let mut p = flags(&["--a", "1", "--b=2", "-c", "--d=x", "--n", "0"]);
        assert_eq!(p.next_flag().unwrap().as_deref(), Some("--a"));
        assert_eq!(p.number::<u64>("--a"), Ok(1));
        assert_eq!(p.next_flag().unwrap().as_deref(), Some("--b"));
        assert_eq!(p.text("--b").as_deref(), Ok("2"));
        assert_eq!(p.next_flag().unwrap().as_deref(), Some("-c"));
        // An inline value nobody asked for is dropped with its flag.
        assert_eq!(p.next_flag().unwrap().as_deref(), Some("--d"));
        assert_eq!(p.next_flag().unwrap().as_deref(), Some("--n"));
        assert_eq!(p.positive("--n"), Err("--n must be at least 1".into()));
        assert_eq!(p.next_flag(), Ok(None));
        assert_eq!(p.value("--z"), Err("--z needs a value".into()));
        let mut p = flags(&["--n=x"]);
        p.next_flag().unwrap();
        assert!(p
            .number::<u32>("--n")
            .unwrap_err()
            .starts_with("--n \"x\": "));
    }

    #[test]
    fn statistics_and_verdicts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(max(&[1.0, 5.0, 3.0]), Some(5.0));
        assert_eq!(max(&[]), None);
        assert_eq!(ratio(Some(1.0), Some(2.0)), Some(0.5));
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(verdict(Some(0.5), 0.5), "PASS");
        assert_eq!(verdict(Some(0.51), 0.5), "MISS");
        assert_eq!(verdict(None, 0.5), "SKIP");
    }

    #[test]
    fn failures_map_to_exit_codes() {
        assert_eq!(Failure::Setup("x".into()).exit_code(), 1);
        assert_eq!(Failure::Wrong("x".into()).exit_code(), 3);
        let r = Failure::Wrong("x".into()).reported();
        assert!(matches!(r, Failure::Reported(3)));
        assert_eq!(r.message(), "(already reported)");
        assert_eq!(loud("hi"), format!("\n{0}\n!!! hi\n{0}", "!".repeat(77)));
    }
}
