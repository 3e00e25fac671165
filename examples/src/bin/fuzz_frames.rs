//! `fuzz_frames`: feeds random and damaged frames to the wire decoder and checks that none
//! makes it panic.
//!
//! The cases come from [`ferry_node::remote::fuzz::mutated_cases`], deterministic in
//! `--seed`: random bytes, hostile CBOR (deep nesting, huge announced lengths, endless
//! tags) and encodings of every frame kind with one to four mutations (bit flips, bytes
//! overwritten, truncation, insertion, deletion, duplication, length prefix changed). Each
//! case is given to `decode` (as a body, without its first four bytes) and to `read_frame`
//! (as a connection's bytes, read until the end or the first error). A panic prints the
//! case in hex and exits 1; otherwise a summary of the outcomes is printed.
//!
//! ```text
//! cargo run --release -p ferry-examples --bin fuzz_frames -- [--cases N] [--seed S]
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use ferry_examples::benchkit::{self, setup, ArgParser, Failure, Result};
use ferry_node::remote::codec::{decode, FrameError};
use ferry_node::remote::fuzz::{mutated_cases, read_all_frames};

const USAGE: &str = "\
fuzz_frames: random and damaged frames through the wire decoder, which must never panic

USAGE:
    cargo run --release -p ferry-examples --bin fuzz_frames -- [OPTIONS]

OPTIONS:
    --cases N    how many cases to run (default 200000)
    --seed S     the seed the cases are generated from (default 1)
    -h, --help   show this help

Exit status: 0 when no case panicked, 1 on a panic (the case is printed in hex) or a usage
error.
";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    cases: usize,
    seed: u64,
}

fn parse_args(it: impl Iterator<Item = OsString>) -> std::result::Result<Option<Args>, String> {
    let mut args = Args {
        cases: 200_000,
        seed: 1,
    };
    let mut p = ArgParser::new(it);
    while let Some(flag) = p.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--cases" => args.cases = p.positive("--cases")?,
            "--seed" => args.seed = p.number("--seed")?,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(args))
}

/// The name of an error's kind in the summary.
fn kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::Io(_) => "io",
        FrameError::TooLarge { .. } => "too-large",
        FrameError::Truncated { .. } => "truncated",
        FrameError::Malformed(_) => "malformed",
        FrameError::Trailing(_) => "trailing",
    }
}

/// How the cases ended, by outcome.
#[derive(Default)]
struct Tally {
    /// `decode`: an outcome per case.
    decode: BTreeMap<&'static str, usize>,
    /// `read_frame`: how each case's reading ended.
    read: BTreeMap<&'static str, usize>,
    /// Frames `read_frame` returned, over all cases.
    frames_read: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn line(counts: &BTreeMap<&'static str, usize>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(setup("cannot start a runtime"))?;
    let mut tally = Tally::default();
    let start = Instant::now();
    for (i, case) in mutated_cases(args.seed, args.cases).enumerate() {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let decoded = decode(case.get(4..).unwrap_or(&case));
            let read = rt.block_on(read_all_frames(&case));
            (decoded.map(|_| ()), read)
        }));
        let Ok((decoded, (frames, end))) = outcome else {
            eprintln!(
                "fuzz_frames: case {i} of seed {} panicked ({} bytes, given whole to \
                 read_frame and without its first 4 bytes to decode):\n{}",
                args.seed,
                case.len(),
                hex(&case)
            );
            return Err(Failure::Reported(1));
        };
        *tally
            .decode
            .entry(decoded.as_ref().map_or_else(kind, |()| "ok"))
            .or_default() += 1;
        tally.frames_read += frames.len();
        *tally
            .read
            .entry(end.as_ref().map_or("clean end", kind))
            .or_default() += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "fuzz_frames: {} cases from seed {} in {elapsed:.2} s ({:.0} cases/s), no panic",
        args.cases,
        args.seed,
        args.cases as f64 / elapsed.max(1e-9)
    );
    println!("  decode:     {}", line(&tally.decode));
    println!(
        "  read_frame: {} frames read; ended by {}",
        tally.frames_read,
        line(&tally.read)
    );
    Ok(())
}

fn main() -> ExitCode {
    benchkit::main(
        "fuzz_frames",
        USAGE,
        parse_args(std::env::args_os().skip(1)),
        |_| false,
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
        assert_eq!(
            parse(&[]).unwrap(),
            Some(Args {
                cases: 200_000,
                seed: 1
            })
        );
        assert_eq!(
            parse(&["--cases", "10", "--seed=7"]).unwrap(),
            Some(Args { cases: 10, seed: 7 })
        );
        assert_eq!(parse(&["-h"]).unwrap(), None);
        assert!(parse(&["--cases", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn a_short_run_passes() {
        assert!(run(Args {
            cases: 300,
            seed: 3
        })
        .is_ok());
    }
}
