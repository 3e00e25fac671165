//! `ferry watch SRC ferry://NODE@HOST:PORT/NAME` as a process against a `ferry serve`
//! process on 127.0.0.1: live changes replicate, and a server killed mid-transfer and started
//! again is reconnected to and caught up with, leaving no torn file behind.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::live::{mirror_diff, WatchProcess};
use crate::util::remote::{dir_arg, node_id, ServeProcess};
use crate::util::*;

/// How long a live step may take to reach the target.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// How long catching up after a server restart may take.
const RESTART_DEADLINE: Duration = Duration::from_secs(120);

/// How long the first bytes of the big file may take to reach the target.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

/// How long `ferry watch` may take to exit after SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(10);

/// Size of the file the server is killed in the middle of.
const HUGE_MIB: usize = 200;

/// A `ferry serve` receiving folder `f` from one client, and a `ferry watch` replicating
/// SRC to it.
struct Link {
    src: PathBuf,
    dst: PathBuf,
    watch: WatchProcess,
    server: ServeProcess,
    /// Holds SRC, DST, both homes and the logs; dropped last, after both processes are gone.
    _base: TempDir,
}

impl Link {
    /// Fills SRC with `fill`, starts the server (without fsync) and the watcher.
    fn start(fill: impl FnOnce(&Path)) -> Link {
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
        let url = server.url("f");
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
        Link {
            src,
            dst,
            watch,
            server,
            _base: base,
        }
    }

    /// Path `rel` under SRC.
    fn s(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }

    /// Both logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- watch log ---\n{}\n--- server log ---\n{}",
            self.watch.stderr(),
            self.server.stderr()
        )
    }

    /// Polls `check` until it returns `Ok`, failing with both logs after `deadline` or as
    /// soon as either process exits.
    fn wait(
        &mut self,
        deadline: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<(), String>,
    ) {
        let start = Instant::now();
        loop {
            self.watch.assert_running();
            self.server.assert_running();
            let why = match check(self) {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until {what}\nlast seen: {why}\n{}",
                self.logs()
            );
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// Waits until DST mirrors SRC; `step` names what was just done.
    fn wait_mirror(&mut self, deadline: Duration, step: &str) {
        self.wait(deadline, &format!("DST mirrors SRC after {step}"), |l| {
            mirror_diff(&l.src, &l.dst)
        });
    }
}

/// Whether `path` names one of the Applier's temp files.
fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".ferry-tmp-"))
}

/// The Applier's temp files anywhere under `root`, with their sizes, found from metadata
/// alone (reading a 200 MiB file at every poll would slow the transfer being watched). An
/// entry that vanishes during the walk is left out.
fn temp_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                stack.push(path);
            } else if is_temp(&path) {
                out.push((path, md.len()));
            }
        }
    }
    out
}

/// Writes `mib` MiB of pseudo-random data to `path`, every MiB from its own seed, so that no
/// chunk repeats and the whole file has to travel.
fn write_huge(path: &Path, mib: usize) {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = BufWriter::new(f);
    for i in 0..mib {
        w.write_all(&pseudo_random(MIB as usize, 1_000 + i as u64))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    w.flush()
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mtime(path, time_n(1));
}

#[test]
fn remote_live_changes_replicate_through_serve() {
    let mut l = Link::start(|src| {
        write_file(&src.join("seed.txt"), "seed\n", 0o644, time_n(1));
        write_file(&src.join("dir/inner.txt"), "inner\n", 0o600, time_n(2));
        write_file(
            &src.join("dir/blob.bin"),
            pseudo_random(300 * KIB as usize, 5),
            0o644,
            time_n(3),
        );
        symlink("dir/inner.txt", &src.join("link"));
    });
    l.wait_mirror(STEP_DEADLINE, "the initial sync");

    write(&l.s("new/deep/one.txt"), "one\n");
    write(&l.s("two.txt"), "two\n");
    mkdir(&l.s("empty"));
    l.wait_mirror(STEP_DEADLINE, "creating files and directories");

    write(&l.s("seed.txt"), "seed, modified and longer\n");
    set_mode(&l.s("dir/inner.txt"), 0o640);
    l.wait_mirror(STEP_DEADLINE, "modifying a file and a mode");

    std::fs::remove_file(l.s("two.txt")).expect("remove two.txt");
    std::fs::remove_dir_all(l.s("new")).expect("remove new/");
    l.wait_mirror(STEP_DEADLINE, "deleting a file and a directory tree");

    std::fs::rename(l.s("seed.txt"), l.s("renamed.txt")).expect("rename seed.txt");
    l.wait_mirror(STEP_DEADLINE, "renaming a file");

    std::fs::rename(l.s("dir"), l.s("moved")).expect("rename dir/");
    l.wait_mirror(STEP_DEADLINE, "renaming a directory");

    l.watch.terminate();
    let (status, stderr) = l.watch.wait_exit(EXIT_DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "ferry watch should exit 0 on SIGTERM ({status})\n{stderr}"
    );
}

#[test]
fn remote_live_server_killed_mid_transfer_is_caught_up_after_restart() {
    let mut l = Link::start(|src| {
        write_huge(&src.join("huge.bin"), HUGE_MIB);
        write_file(&src.join("small/a.txt"), "a\n", 0o644, time_n(2));
        write_file(&src.join("small/b.txt"), "b\n", 0o600, time_n(3));
        write_file(&src.join("top.txt"), "top\n", 0o644, time_n(4));
    });

    // The transfer is under way once the Applier's temp file for the big file has data.
    l.wait(
        TRANSFER_DEADLINE,
        "a temp file with data exists in DST",
        |l| {
            let temps = temp_files(&l.dst);
            if temps.iter().any(|(_, len)| *len > 0) {
                Ok(())
            } else {
                Err(format!("temp files in DST: {temps:?}"))
            }
        },
    );
    l.server.kill();

    let src_snap = snapshot(&l.src);
    let dst_snap = snapshot(&l.dst);
    assert!(
        !dst_snap.contains_key(Path::new("huge.bin")),
        "the big file was complete before the kill: the test did not cut a transfer"
    );
    for (path, node) in dst_snap.iter().filter(|(p, _)| !is_temp(p)) {
        let Some(want) = src_snap.get(path) else {
            panic!("{} is in DST but not in SRC\n{}", path.display(), l.logs());
        };
        assert!(
            want.kind == node.kind && want.content == node.content,
            "{} in DST differs from SRC after the kill (torn?): DST has {:?} {}, SRC {:?} {}",
            path.display(),
            node.kind,
            node.content_summary(),
            want.kind,
            want.content_summary()
        );
    }

    l.server.restart();
    let huge_len = (HUGE_MIB * MIB as usize) as u64;
    l.wait(
        RESTART_DEADLINE,
        "DST mirrors SRC after the server restarted",
        |l| {
            // Cheap checks first: comparing the trees reads 400 MiB.
            let temps = temp_files(&l.dst);
            if !temps.is_empty() {
                return Err(format!("temp files in DST: {temps:?}"));
            }
            match std::fs::metadata(l.dst.join("huge.bin")) {
                Ok(md) if md.len() == huge_len => mirror_diff(&l.src, &l.dst),
                Ok(md) => Err(format!("DST/huge.bin has {} bytes", md.len())),
                Err(e) => Err(format!("DST/huge.bin: {e}")),
            }
        },
    );

    let watch_log = l.watch.stderr();
    let server_log = l.server.stderr();
    assert!(
        watch_log.contains("retrying"),
        "the watcher did not log the lost link (`retrying`)\n{}",
        l.logs()
    );
    assert!(
        watch_log.matches("link up").count() >= 2,
        "the watcher did not log a second `link up`\n{}",
        l.logs()
    );
    assert!(
        server_log.matches("folder opened").count() >= 2,
        "the server log shows no second `folder opened`\n{}",
        l.logs()
    );
    let leftovers: Vec<PathBuf> = snapshot(&l.dst)
        .into_keys()
        .filter(|p| is_temp(p))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left in DST: {leftovers:?}"
    );
}
