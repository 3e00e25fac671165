//! `ferry watch` as a process: live replication, shutdown on SIGTERM after finishing the
//! change in flight, polling mode, and bad input. Every test name says `live`.

use std::time::Duration;

use crate::util::live::{mirror_diff, wait_until_blocking, WatchProcess};
use crate::util::node::ferry_exits_within;
use crate::util::*;

/// How long a process may take to exit after SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// Whether some line of `stderr` logs `change` for `path` (`... created folder=… path=PATH`).
fn logs_change(stderr: &str, change: &str, path: &str) -> bool {
    let word = format!(" {change} ");
    let field = format!("path={path}");
    stderr
        .lines()
        .any(|l| l.contains(&word) && l.split_whitespace().any(|w| w == field))
}

#[test]
fn live_changes_replicate_and_sigterm_finishes_the_change_in_flight() {
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write(&src.join("seed.txt"), "seed\n");
    write(&src.join("dir/existing.txt"), "existing\n");
    let mut p = WatchProcess::spawn(&src, &dst, &[], &base.path().join("stderr.txt"));
    p.wait_mirror(&src, &dst, "the initial sync");
    assert_eq!(
        p.inotify_instances(),
        1,
        "ferry watch uses one inotify instance"
    );

    write(&src.join("one.txt"), "one\n");
    write(&src.join("dir/sub/two.txt"), "two\n");
    write(&src.join("seed.txt"), "seed, modified and longer\n");
    p.wait_mirror(&src, &dst, "creating and modifying files");

    // The last change is made just before the signal: shutting down must finish it.
    write(&src.join("last.txt"), "the change in flight\n");
    p.terminate();
    let (status, stderr) = p.wait_exit(EXIT_DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "ferry watch should exit 0 on SIGTERM ({status})\n{stderr}"
    );
    if let Err(diff) = mirror_diff(&src, &dst) {
        panic!(
            "ferry watch exited without finishing the change in flight at SIGTERM:\n{diff}\
             --- stderr ---\n{stderr}"
        );
    }

    for path in [
        "seed.txt",
        "dir/existing.txt",
        "one.txt",
        "dir/sub/two.txt",
        "last.txt",
    ] {
        assert!(
            logs_change(&stderr, "created", path),
            "stderr has no `created` line for {path}\n{stderr}"
        );
    }
}

/// Ctrl-C during a long initial sync, then Ctrl-C again: the second stops at once (exit 1,
/// saying so) instead of waiting for the whole initial copy; the next run converges.
#[test]
fn live_a_second_sigint_stops_at_once() {
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    for i in 0..8u64 {
        write_file(
            &src.join(format!("big{i}.bin")),
            pseudo_random(16 * MIB as usize, 400 + i),
            0o644,
            time_n(i),
        );
    }
    let mut p = WatchProcess::spawn(&src, &dst, &[], &base.path().join("stderr.txt"));
    let logged = |p: &WatchProcess, what: &str| {
        let text = p.stderr();
        if text.contains(what) {
            Ok(())
        } else {
            Err(format!("no {what:?} in the log yet:\n{text}"))
        }
    };
    wait_until_blocking(EXIT_DEADLINE, "ferry watch starts", || {
        logged(&p, "watching")
    });
    p.interrupt();
    wait_until_blocking(EXIT_DEADLINE, "the first SIGINT is taken", || {
        logged(&p, "signal received")
    });
    p.interrupt();
    let (status, stderr) = p.wait_exit(EXIT_DEADLINE);

    assert_eq!(
        status.code(),
        Some(1),
        "a second SIGINT should stop ferry watch at once, with exit 1 ({status})\n{stderr}"
    );
    assert!(stderr.contains("second signal"), "{stderr}");
    sync_ok(&src, &dst, &[]);
    assert_mirror(&src, &dst);
}

#[test]
fn live_polling_replicates_without_inotify() {
    let base = tempdir();
    let src = base.path().join("src");
    let dst = base.path().join("dst");
    write(&src.join("seed.txt"), "seed\n");
    let mut p = WatchProcess::spawn(
        &src,
        &dst,
        &["--poll", "200ms"],
        &base.path().join("stderr.txt"),
    );
    p.wait_mirror(&src, &dst, "the initial sync");
    assert_eq!(p.inotify_instances(), 0, "--poll should not use inotify");

    write(&src.join("polled/new.txt"), "found by a periodic scan\n");
    write(&src.join("seed.txt"), "seed, changed\n");
    p.wait_mirror(&src, &dst, "changes seen by polling");

    p.terminate();
    let (status, stderr) = p.wait_exit(EXIT_DEADLINE);
    assert_eq!(status.code(), Some(0), "exit status {status}\n{stderr}");
}

#[test]
fn live_watch_of_a_missing_src_exits_1() {
    let base = tempdir();
    ferry([
        "watch".as_ref(),
        base.path().join("missing").as_os_str(),
        base.path().join("dst").as_os_str(),
    ])
    .assert_code(1)
    .assert_stderr_contains("missing");
    assert!(
        !exists(&base.path().join("dst")),
        "no DST for a missing SRC"
    );
}

#[test]
fn live_watch_with_a_bad_debounce_exits_2() {
    let base = tempdir();
    let src = base.path().join("src");
    mkdir(&src);
    ferry([
        "watch".as_ref(),
        src.as_os_str(),
        base.path().join("dst").as_os_str(),
        "--debounce".as_ref(),
        "nonsense".as_ref(),
    ])
    .assert_code(2)
    .assert_stderr_contains("nonsense");
}

#[test]
fn live_watch_with_a_debounce_over_an_hour_exits_2() {
    let base = tempdir();
    mkdir(&base.path().join("src"));
    // Bounded: a watch that accepted it would run until killed.
    ferry_exits_within(
        base.path(),
        &["watch", "src", "dst", "--debounce", "99999999999999d"],
        EXIT_DEADLINE,
    )
    .assert_code(2)
    .assert_stderr_contains("99999999999999d")
    .assert_stderr_contains("1h");
    assert!(
        !exists(&base.path().join("dst")),
        "a refused watch creates no DST"
    );
}

/// How long `ferry watch` may take to exit on SIGTERM when its server is down: nothing is
/// in flight on a link that is not up, so well under the 60 s a target that is up gets.
const OFFLINE_EXIT_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn live_watch_to_an_unreachable_server_exits_promptly_on_sigterm() {
    let base = tempdir();
    let src = base.path().join("src");
    write(&src.join("a.txt"), "a\n");
    let home = base.path().join("home");
    let server = crate::util::remote::node_id(&base.path().join("server-home"));
    // A port nothing listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port();
    let url = crate::util::remote::url(&server, &format!("127.0.0.1:{port}"), "f");
    let mut p = WatchProcess::spawn(
        &src,
        url.as_ref(),
        &["--home", home.to_str().expect("UTF-8 temp path")],
        &base.path().join("stderr.txt"),
    );
    wait_until_blocking(EXIT_DEADLINE, "the pipeline has started", || {
        p.assert_running();
        let stderr = p.stderr();
        match stderr.contains("pipeline started") && stderr.contains("retrying in") {
            true => Ok(()),
            false => Err(format!("not yet\n{stderr}")),
        }
    });
    p.terminate();
    let (status, stderr) = p.wait_exit(OFFLINE_EXIT_DEADLINE);
    assert_eq!(status.code(), Some(0), "exit status {status}\n{stderr}");
}
