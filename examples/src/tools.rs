//! The external programs the benchmarks run: finding them (ferry, rsync, python3 and the
//! scripts of `/work/shared/bench`), running them to completion — plainly, or timed with a
//! deadline — and describing their failures.
//!
//! Long-running helpers (the byte proxy, an rsync daemon, `ferry serve`) live in
//! [`crate::services`].

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{WaitId, WaitIdOptions};

use crate::benchkit::{self, setup, Failure, Result};
use crate::procfs::{self, CpuTicks};

/// How much of a failed program's stdout and stderr to show, in characters.
const TAIL_CHARS: usize = 4000;

// ---------------------------------------------------------------------------------------------
// Finding programs
// ---------------------------------------------------------------------------------------------

/// `ferry` in the directory of the running benchmark binary (the same cargo target
/// directory), if built.
pub fn sibling_ferry() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("ferry");
    p.is_file().then_some(p)
}

/// The ferry binary to measure: `arg` (`--ferry PATH`) if given, else `ferry` next to this
/// binary, else the default release build; `alternatives` completes the error's hint.
pub fn locate_ferry(arg: Option<&Path>, alternatives: &str) -> Result<PathBuf> {
    match arg {
        Some(p) => benchkit::find_ferry(Some(p), alternatives),
        None => match sibling_ferry() {
            Some(p) => Ok(p),
            None => benchkit::find_ferry(None, alternatives),
        },
    }
}

/// `python3` from `$PATH`.
pub fn python3() -> Result<PathBuf> {
    benchkit::which(OsStr::new("python3"))
        .ok_or_else(|| Failure::Setup("python3 not found on PATH".into()))
}

/// The script `name` in the tools directory `dir` (given by `--tools DIR`).
pub fn script(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Failure::Setup(format!(
            "{} not found (pass --tools DIR)",
            p.display()
        )))
    }
}

/// rsync from `$PATH` and its version line; `alternative` completes the error's hint
/// (e.g. "or pass --skip-rsync"; may be empty).
pub fn find_rsync(alternative: &str) -> Result<(PathBuf, String)> {
    let rsync = benchkit::which(OsStr::new("rsync")).ok_or_else(|| {
        let or = if alternative.is_empty() {
            String::new()
        } else {
            format!(" ({alternative})")
        };
        Failure::Setup(format!(
            "rsync not found on PATH; install it with `apt-get install -y rsync`{or}"
        ))
    })?;
    let version = first_line(&rsync, "--version");
    Ok((rsync, version))
}

/// The first line of `program arg`'s stdout, whitespace normalised ("" if it cannot run).
pub fn first_line(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}

/// When `path` was last modified, as text (to tell which ferry build was measured).
pub fn modified(path: &Path) -> String {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or_else(String::new, |d| format!("mtime {} (unix)", d.as_secs()))
}

// ---------------------------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------------------------

/// Runs `program args…` to completion; a failure is [`Failure::Setup`] with its output.
pub fn run_tool(what: &str, program: &Path, args: &[&OsStr]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(setup(format!("{what}: spawning {}", program.display())))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Failure::Setup(failed_message(what, program, args, &out)))
    }
}

/// "`what` FAILED (status): command" followed by the tails of stdout and stderr.
pub fn failed_message(what: &str, program: &Path, args: &[&OsStr], out: &Output) -> String {
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
        let _ = write!(msg, "{}", tail_section(name, &s));
    }
    msg
}

/// "\n--- `name` (tail) ---\n…" with the last few thousand characters of `text`, or "" if
/// `text` is blank.
pub fn tail_section(name: &str, text: &str) -> String {
    let s = text.trim();
    if s.is_empty() {
        return String::new();
    }
    let skip = s.chars().count().saturating_sub(TAIL_CHARS);
    let tail: String = s.chars().skip(skip).collect();
    format!("\n--- {name} (tail) ---\n{tail}")
}

/// The tail of the file at `path` as a [`tail_section`] (e.g. a server's log), or a note
/// saying why it could not be read.
pub fn file_tail(name: &str, path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => tail_section(
            &format!("{name} {}", path.display()),
            &String::from_utf8_lossy(&b),
        ),
        Err(e) => format!("\n--- {name} {}: unreadable: {e} ---", path.display()),
    }
}

/// A program run to completion by [`run_timed`].
#[derive(Debug)]
pub struct Timed {
    /// From just before the spawn to the moment `wait` returned.
    pub wall: Duration,
    /// Its exit status and what it printed.
    pub output: Output,
    /// Whether it was killed for overrunning its deadline.
    pub timed_out: bool,
    /// The CPU time it used (all its threads, and the children it waited for), read once it
    /// had exited and before it was reaped (10 ms ticks); `None` where that could not be read.
    pub cpu: Option<CpuTicks>,
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured) and measures its wall time
/// from spawn to exit; a run longer than `deadline` is killed (SIGKILL) and reported as
/// [`Timed::timed_out`].
pub fn run_timed(cmd: &mut Command, deadline: Duration) -> io::Result<Timed> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = rustix::process::Pid::from_child(&child);
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // A read error only truncates what is shown of the output.
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let (tx, rx) = mpsc::channel::<(io::Result<ExitStatus>, Instant, Option<CpuTicks>)>();
    std::thread::spawn(move || {
        // Exited but not yet reaped, the process still shows its CPU time in /proc.
        let exited = loop {
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
            match rustix::process::waitid(WaitId::Pid(pid), options) {
                Err(rustix::io::Errno::INTR) => {}
                other => break other.is_ok(),
            }
        };
        let end = Instant::now();
        let cpu = exited
            .then(|| {
                procfs::cpu_ticks_with_children(pid.as_raw_nonzero().get().unsigned_abs()).ok()
            })
            .flatten();
        let status = child.wait();
        // The receiver outlives this thread unless run_timed itself panicked.
        let _ = tx.send((status, end, cpu));
    });
    let (waited, timed_out) = match rx.recv_timeout(deadline) {
        Ok(w) => (w, false),
        Err(_) => {
            // The child may have exited just now; then the kill fails harmlessly.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let w = rx
                .recv()
                .map_err(|_| io::Error::other("the waiter thread vanished"))?;
            (w, true)
        }
    };
    let (status, end, cpu) = waited;
    let status = status?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Timed {
        wall: end.duration_since(start),
        output: Output {
            status,
            stdout,
            stderr,
        },
        timed_out,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_run_captures_output_and_status() {
        let t = run_timed(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(!t.timed_out);
        assert_eq!(t.output.status.code(), Some(3));
        assert_eq!(t.output.stdout, b"out\n");
        assert_eq!(t.output.stderr, b"err\n");
        assert!(t.cpu.is_some(), "an exited child's CPU time is read");
    }

    #[test]
    fn timed_run_counts_the_cpu_of_the_program_and_of_its_children() {
        // The loop runs in a child of the outer shell: only the waited-for child's time
        // makes the total non-zero.
        let burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done";
        let t = run_timed(
            Command::new("sh").args(["-c", &format!("sh -c '{burn}'; exit 0")]),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(t.output.status.success());
        let cpu = t.cpu.expect("read before reaping");
        assert!(cpu.total() > 0, "{cpu:?}");
    }

    #[test]
    fn timed_run_kills_an_overrun() {
        let t = run_timed(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            Duration::from_millis(100),
        )
        .unwrap();
        assert!(t.timed_out);
        assert!(!t.output.status.success());
        assert!(t.wall < Duration::from_secs(10));
    }

    #[test]
    fn tails_keep_the_end() {
        assert_eq!(tail_section("x", "  \n"), "");
        let long = "a".repeat(TAIL_CHARS) + "END";
        let s = tail_section("x", &long);
        let body = s.strip_prefix("\n--- x (tail) ---\n").unwrap();
        assert!(body.ends_with("END"));
        assert_eq!(body.chars().count(), TAIL_CHARS);
    }
}
