//! Link faults between `ferry watch` and `ferry serve` processes, injected by a proxy
//! ([`FaultProxy`]) the watcher reaches the server through: a slow link, a connection closed
//! or reset mid-transfer, and bytes corrupted either way. Each case must converge to an exact
//! mirror once the link comes back, with no file ever showing under its final name in the
//! target with content other than the source's, and corruption must be caught and logged.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_engine::target::TEMP_PREFIX;
use tempfile::TempDir;

use crate::util::faultproxy::{Direction, Fault, FaultProxy, Plan, Scope};
use crate::util::live::{mirror_diff, WatchProcess};
use crate::util::remote::{dir_arg, node_id, url, ServeProcess};
use crate::util::*;

/// How long a faulted link may take to converge before the test fails (they take seconds).
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

/// How long `ferry watch` may take to exit after SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// How often the target is looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

/// How many small files SRC holds, beside the big one.
const SMALL_FILES: u64 = 300;

/// Size of the big file: large enough that a fault a few MiB in lands mid-transfer, and not a
/// multiple of any chunk size.
const BIG_LEN: u64 = 20 * MIB + 4321;

/// Where client→server faults strike: well into the big file's data.
const MID_STREAM: u64 = 5 * MIB;

/// What a file under its final name in DST looked like when it was checked.
type StatKey = (u64, u64, i64, i64);

/// A `ferry serve` receiving folder `f` into DST, a fault proxy in front of it and a
/// `ferry watch` replicating SRC to it through the proxy.
struct Link {
    src: PathBuf,
    dst: PathBuf,
    /// Every regular file of SRC (which does not change during a test), relative path →
    /// content.
    want: BTreeMap<PathBuf, Vec<u8>>,
    /// Files of DST already found equal to SRC, with the stat key they had then: a file is
    /// read again only once it changed.
    checked: BTreeMap<PathBuf, StatKey>,
    watch: WatchProcess,
    proxy: FaultProxy,
    server: ServeProcess,
    /// Holds SRC, DST, both homes and the logs; dropped last, after both processes are gone.
    _base: TempDir,
}

impl Link {
    /// Fills SRC (a few hundred small files and a 20 MiB one), starts the server (without
    /// fsync), a proxy in front of it with `plan` in force, and the watcher, which reaches
    /// the server through the proxy.
    fn start(plan: Plan) -> Link {
        let base = tempdir();
        let src = base.path().join("src");
        let dst = base.path().join("dst");
        mkdir(&src);
        fill(&src);
        let client_home = base.path().join("client-home");
        let client = node_id(&client_home);
        let server = ServeProcess::spawn(
            &base.path().join("server-home"),
            "127.0.0.1:0",
            &[
                "--folder".to_owned(),
                format!("f={}", dir_arg(&dst)),
                "--peer".to_owned(),
                client,
                "--no-fsync".to_owned(),
            ],
            &base.path().join("serve.log"),
        );
        let upstream = server.addr.parse().unwrap_or_else(|e| {
            panic!("the server's address {:?} does not parse: {e}", server.addr)
        });
        let proxy = FaultProxy::start(upstream);
        proxy.set_plan(plan);
        // The URL names the server's node id but the proxy's address.
        let url = url(&server.node, &proxy.addr().to_string(), "f");
        let watch = WatchProcess::spawn(
            &src,
            Path::new(&url),
            &[
                "--home",
                client_home.to_str().expect("UTF-8 temp path"),
                "--no-fsync",
            ],
            &base.path().join("watch.log"),
        );
        let want = snapshot(&src)
            .into_iter()
            .filter(|(_, n)| n.kind == Kind::File)
            .map(|(p, n)| (p, n.content))
            .collect();
        Link {
            src,
            dst,
            want,
            checked: BTreeMap::new(),
            watch,
            proxy,
            server,
            _base: base,
        }
    }

    /// Both logs and the proxy's counters, for failure messages.
    fn logs(&self) -> String {
        format!(
            "{}\n--- watch log ---\n{}\n--- server log ---\n{}",
            self.proxy.summary(),
            self.watch.stderr(),
            self.server.stderr()
        )
    }

    /// Checks every file of DST under its final name that changed since it was last checked
    /// against its SRC version, and panics (with the logs) on the first one that differs or
    /// that SRC does not have: a torn or wrong file. Returns the temp files seen and the
    /// source files not (yet) in DST.
    fn check_final_files(&mut self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut temps = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel_dir) = stack.pop() {
            // The Applier creates and renames as we walk: what vanishes is simply not seen.
            let Ok(entries) = fs::read_dir(self.dst.join(&rel_dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let rel = rel_dir.join(entry.file_name());
                let Ok(md) = fs::symlink_metadata(self.dst.join(&rel)) else {
                    continue;
                };
                if md.is_dir() {
                    stack.push(rel);
                    continue;
                }
                if is_temp(&rel) {
                    temps.push(rel);
                    continue;
                }
                let key = (md.ino(), md.size(), md.mtime(), md.mtime_nsec());
                seen.insert(rel.clone());
                if self.checked.get(&rel) == Some(&key) {
                    continue;
                }
                let Some(want) = self.want.get(&rel) else {
                    panic!(
                        "DST/{} is not a file of SRC ({:?})\n{}",
                        rel.display(),
                        md.file_type(),
                        self.logs()
                    );
                };
                // Replaced since the stat: the new version is looked at on the next poll.
                let Ok(have) = fs::read(self.dst.join(&rel)) else {
                    continue;
                };
                assert!(
                    have == *want,
                    "DST/{} is under its final name with content SRC never had: {} bytes, \
                     SRC has {} (a torn or corrupted file)\n{}",
                    rel.display(),
                    have.len(),
                    want.len(),
                    self.logs()
                );
                self.checked.insert(rel, key);
            }
        }
        let missing = self
            .want
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect();
        (temps, missing)
    }

    /// Waits until DST mirrors SRC (names, kinds, content, modes, file mtimes), checking at
    /// every poll that no file under its final name is torn; fails with the logs after
    /// `deadline` or as soon as either process exits. Returns how long it took.
    fn wait_converged(&mut self, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            self.watch.assert_running();
            self.server.assert_running();
            let (temps, missing) = self.check_final_files();
            // The full comparison reads both trees: only once every file is there.
            let why = if !missing.is_empty() {
                format!(
                    "{} file(s) of SRC not in DST yet, e.g. {}",
                    missing.len(),
                    missing[0].display()
                )
            } else if !temps.is_empty() {
                format!("temp files in DST: {temps:?}")
            } else {
                match mirror_diff(&self.src, &self.dst) {
                    Ok(()) => return start.elapsed(),
                    Err(why) => why,
                }
            };
            assert!(
                start.elapsed() < CONVERGE_DEADLINE,
                "timed out after {CONVERGE_DEADLINE:?} waiting until DST mirrors SRC {what}\n\
                 last seen: {why}\n{}",
                self.logs()
            );
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// Stops the watcher with SIGTERM, expects exit code 0, and checks that DST still mirrors
    /// SRC with no temp file left.
    fn stop_and_check(mut self) {
        self.watch.terminate();
        let (status, stderr) = self.watch.wait_exit(EXIT_DEADLINE);
        assert_eq!(
            status.code(),
            Some(0),
            "ferry watch should exit 0 on SIGTERM ({status})\n{stderr}"
        );
        assert_mirror(&self.src, &self.dst);
        let temps: Vec<PathBuf> = snapshot(&self.dst)
            .into_keys()
            .filter(|p| is_temp(p))
            .collect();
        assert!(
            temps.is_empty(),
            "temp files left in DST after the watcher stopped: {temps:?}\n{}",
            self.logs()
        );
    }
}

/// Whether `path` names one of the Applier's temp files.
fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// What rustls says of a record that does not authenticate ("cannot decrypt peer's message":
/// its body or tag was altered) or whose header was altered ("received corrupt message of
/// type …", or "peer sent excess record size" for a length grown past the limit). A flipped
/// byte almost always lands in a body, but a header is possible.
const CORRUPT_RECORD: [&str; 3] = [
    "cannot decrypt peer's message",
    "received corrupt message",
    "peer sent excess record size",
];

/// The first line of `log` reporting a corrupted TLS record, if any.
fn corrupt_record_line(log: &str) -> Option<&str> {
    log.lines()
        .find(|line| CORRUPT_RECORD.iter().any(|sign| line.contains(sign)))
}

/// Panics unless the server opened the folder again after the fault: the link came back.
#[track_caller]
fn assert_reopened(l: &Link) {
    let opened = l.server.stderr().matches("folder opened").count();
    assert!(
        opened >= 2,
        "the server opened the folder {opened} time(s); a new session should follow the \
         fault\n{}",
        l.logs()
    );
}

/// Fills SRC: `SMALL_FILES` small files spread over ten directories, and `big.bin`.
fn fill(src: &Path) {
    for i in 0..SMALL_FILES {
        let mut content = format!("small file {i}\n").into_bytes();
        content.extend(pseudo_random(200 + (i as usize * 37) % 2000, 100 + i));
        write_file(
            &src.join(format!("d{}/f{i:03}.bin", i % 10)),
            content,
            0o644,
            time_n(i),
        );
    }
    write_file(
        &src.join("big.bin"),
        pseudo_random(BIG_LEN as usize, 7),
        0o644,
        time_n(1_000),
    );
}

#[test]
fn a_slow_link_converges() {
    let t0 = Instant::now();
    let delay = Fault::Delay(Duration::from_millis(20));
    let mut l = Link::start(Plan::always(delay, delay));
    let took = l.wait_converged("over a link delaying every chunk by 20 ms both ways");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    // A slow link is not a broken one: the first connection carries everything.
    assert_eq!(
        (l.proxy.accepted(), l.proxy.faulted()),
        (1, 1),
        "the delayed link should not have been dropped\n{}",
        l.logs()
    );
    assert!(
        l.proxy.bytes(Direction::ClientToServer) > BIG_LEN,
        "{}",
        l.logs()
    );
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn a_connection_closed_mid_transfer_converges() {
    let t0 = Instant::now();
    let cut = Fault::Truncate {
        after_bytes: MID_STREAM,
    };
    let mut l = Link::start(Plan::one_shot(cut, Fault::None));
    let took = l.wait_converged("after the first connection was closed 5 MiB in");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    assert_eq!(l.proxy.truncated(), 1, "{}", l.logs());
    assert!(l.proxy.accepted() >= 2, "{}", l.logs());
    assert!(
        l.watch.stderr().contains("retrying"),
        "the watcher did not log the lost link\n{}",
        l.logs()
    );
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn a_connection_reset_mid_transfer_converges() {
    let t0 = Instant::now();
    let reset = Fault::Reset {
        after_bytes: MID_STREAM,
    };
    let mut l = Link::start(Plan::one_shot(reset, Fault::None));
    let took = l.wait_converged("after the first connection was reset 5 MiB in");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    assert_eq!(l.proxy.reset(), 1, "{}", l.logs());
    assert!(l.proxy.accepted() >= 2, "{}", l.logs());
    assert!(
        l.watch.stderr().contains("retrying"),
        "the watcher did not log the lost link\n{}",
        l.logs()
    );
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn a_link_closed_six_times_in_a_row_converges() {
    let t0 = Instant::now();
    let cut = Fault::Truncate {
        after_bytes: 2 * MIB,
    };
    let mut l = Link::start(Plan {
        client_to_server: cut,
        server_to_client: Fault::None,
        scope: Scope::OneShot(6),
    });
    let took = l.wait_converged("after six connections in a row were closed 2 MiB in");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    assert_eq!(l.proxy.truncated(), 6, "{}", l.logs());
    assert!(l.proxy.accepted() >= 7, "{}", l.logs());
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn bytes_corrupted_towards_the_server_are_caught_and_the_link_recovers() {
    let t0 = Instant::now();
    let corrupt = Fault::Corrupt {
        after_bytes: MID_STREAM,
        every: MIB,
    };
    let mut l = Link::start(Plan::one_shot(corrupt, Fault::None));
    let took = l.wait_converged("after bytes towards the server were corrupted 5 MiB in");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    assert!(l.proxy.corrupted() >= 1, "{}", l.logs());
    assert!(l.proxy.accepted() >= 2, "{}", l.logs());
    // TLS authenticates every record: the server's rustls refuses the altered one.
    let server_log = l.server.stderr();
    let line = corrupt_record_line(&server_log).unwrap_or_else(|| {
        panic!(
            "the server did not log the corrupted record (one of {CORRUPT_RECORD:?})\n{}",
            l.logs()
        )
    });
    eprintln!("server: {line}");
    assert_reopened(&l);
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn bytes_corrupted_towards_the_client_are_caught_and_the_link_recovers() {
    let t0 = Instant::now();
    // Nearly all the server sends (about 45 KiB for this tree) is its requests for content,
    // right after the index arrives and as the data starts to flow; 16 KiB in lands there.
    let corrupt = Fault::Corrupt {
        after_bytes: 16 * KIB,
        every: 4 * KIB,
    };
    let mut l = Link::start(Plan::one_shot(Fault::None, corrupt));
    let took = l.wait_converged("after bytes towards the client were corrupted 16 KiB in");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    assert!(l.proxy.corrupted() >= 1, "{}", l.logs());
    assert!(l.proxy.accepted() >= 2, "{}", l.logs());
    let watch_log = l.watch.stderr();
    let line = corrupt_record_line(&watch_log).unwrap_or_else(|| {
        panic!(
            "the watcher did not log the corrupted record (one of {CORRUPT_RECORD:?})\n{}",
            l.logs()
        )
    });
    eprintln!("watcher: {line}");
    // What the server sees depends on timing (the client's `BadRecordMac` alert, or a
    // broken pipe when it writes first): it is the client that detects this corruption.
    assert_reopened(&l);
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}

/// Corruption is a fault of the link, not of the peer: six corrupted connections in a row
/// (more than the pipeline's restart budget) are retried like lost ones and converge,
/// without the watcher giving up.
#[test]
fn six_corrupted_connections_in_a_row_are_retried_and_converge() {
    let t0 = Instant::now();
    let corrupt = Fault::Corrupt {
        after_bytes: 16 * KIB,
        every: 4 * KIB,
    };
    let mut l = Link::start(Plan {
        client_to_server: Fault::None,
        server_to_client: corrupt,
        scope: Scope::OneShot(6),
    });
    let took = l.wait_converged("after six connections in a row were corrupted");
    eprintln!("converged in {took:?}; {}", l.proxy.summary());
    assert!(l.proxy.accepted() >= 7, "{}", l.logs());
    l.stop_and_check();
    eprintln!("test took {:?}", t0.elapsed());
}
