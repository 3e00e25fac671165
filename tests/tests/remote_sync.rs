//! `ferry sync SRC ferry://NODE@HOST:PORT/NAME` against a `ferry serve` process on 127.0.0.1:
//! initial and repeated mirrors, what crosses the wire, who is let in, and dry runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::util::live::mirror_diff;
use crate::util::remote::{dir_arg, node_id, url, ServeProcess};
use crate::util::*;

/// How long a server may take to log what it refused.
const LOG_DEADLINE: Duration = Duration::from_secs(20);

/// Size of the large random file: not a multiple of any chunk size.
const BIG: usize = 5 * 1024 * 1024 + 3;

/// A base directory holding the client's and the server's identities, SRC and DST.
struct Nodes {
    base: TempDir,
    /// The client's `--home`.
    client: PathBuf,
    /// The server's `--home`.
    server: PathBuf,
    /// The source folder (created empty).
    src: PathBuf,
    /// The directory served as folder `f` (created empty).
    dst: PathBuf,
}

impl Nodes {
    fn new() -> Nodes {
        let base = tempdir();
        let nodes = Nodes {
            client: base.path().join("client-home"),
            server: base.path().join("server-home"),
            src: base.path().join("src"),
            dst: base.path().join("dst"),
            base,
        };
        mkdir(&nodes.src);
        mkdir(&nodes.dst);
        nodes
    }

    /// The client's node id.
    fn client_id(&self) -> String {
        node_id(&self.client)
    }

    /// Starts `ferry serve` with folder `f` = DST and `extra` flags (`--peer`, more
    /// `--folder`s), logging to `serve.log`.
    fn serve(&self, extra: &[String]) -> ServeProcess {
        let mut args = vec!["--folder".to_owned(), format!("f={}", dir_arg(&self.dst))];
        args.extend_from_slice(extra);
        ServeProcess::spawn(
            &self.server,
            "127.0.0.1:0",
            &args,
            &self.base.path().join("serve.log"),
        )
    }
}

/// `--peer ID` (every folder) or `--peer ID=NAMES`.
fn peer(id: &str, folders: Option<&str>) -> Vec<String> {
    let value = match folders {
        Some(names) => format!("{id}={names}"),
        None => id.to_owned(),
    };
    vec!["--peer".to_owned(), value]
}

/// Runs `ferry sync --home HOME SRC URL EXTRA…`.
fn remote_sync(home: &Path, src: &Path, url: &str, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("sync"),
        OsStr::new("--home"),
        home.as_os_str(),
        src.as_os_str(),
        OsStr::new(url),
    ];
    args.extend(extra.iter().map(OsStr::new));
    ferry(args)
}

/// Panics, with the run and the server log, unless DST mirrors SRC.
#[track_caller]
fn assert_remote_mirror(src: &Path, dst: &Path, run: &Output, server: &ServeProcess) {
    if let Err(diff) = mirror_diff(src, dst) {
        panic!(
            "{diff}\n--- the sync ---\n{run}\n--- server log ---\n{}",
            server.stderr()
        );
    }
}

/// The `wire bytes out / in: OUT / IN` line of `--stats`.
#[track_caller]
fn wire_bytes(run: &Output) -> (u64, u64) {
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("wire bytes out / in:"))
        .unwrap_or_else(|| panic!("--stats printed no `wire bytes out / in:` line\n{run}"));
    let nums: Vec<u64> = line
        .split('/')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|e| panic!("bad wire byte count {n:?}: {e}\n{run}"))
        })
        .collect();
    match nums.as_slice() {
        [out, inn] => (*out, *inn),
        _ => panic!("expected `OUT / IN`, got {line:?}\n{run}"),
    }
}

/// The byte count of the `chunk data sent:     N (K chunks)` line of `--stats`.
#[track_caller]
fn chunk_data_sent(run: &Output) -> u64 {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("chunk data sent:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("--stats printed no `chunk data sent:` count\n{run}"))
}

/// Panics unless `dir` is an existing, empty directory.
#[track_caller]
fn assert_empty(dir: &Path, what: &str) {
    let snap = snapshot(dir);
    assert!(
        snap.is_empty(),
        "{what}: {} should be empty, holds {:?}",
        dir.display(),
        snap.keys().collect::<Vec<_>>()
    );
}

/// The tree of the stale-target test: a big file in a directory that gets renamed later.
fn stale_src(src: &Path) {
    write_file(
        &src.join("data/big.bin"),
        pseudo_random(BIG, 21),
        0o644,
        time_n(1),
    );
    write_file(&src.join("data/notes.txt"), "notes\n", 0o644, time_n(2));
    write_file(&src.join("docs/a.txt"), "a from src\n", 0o644, time_n(3));
    write_file(&src.join("docs/b.txt"), "b\n", 0o600, time_n(4));
    write_file(&src.join("docs/sub/c.txt"), "c\n", 0o644, time_n(5));
    write_file(&src.join("keep.txt"), "keep\n", 0o644, time_n(6));
}

/// A target holding extras, a file with other content and a directory where SRC has a file.
fn stale_dst(dst: &Path) {
    write_file(&dst.join("extra.txt"), "not in src\n", 0o644, time_n(50));
    write_file(
        &dst.join("extra_dir/x/y.txt"),
        "deep extra\n",
        0o644,
        time_n(51),
    );
    mkdir(&dst.join("empty_extra"));
    write_file(
        &dst.join("docs/a.txt"),
        "a, an older and longer version\n",
        0o600,
        time_n(52),
    );
    write_file(
        &dst.join("data/notes.txt/inside.txt"),
        "a directory where SRC has a file\n",
        0o644,
        time_n(53),
    );
}

#[test]
fn remote_initial_sync_into_empty_target_makes_exact_mirror() {
    let n = Nodes::new();
    let outside = tempdir();
    rich_tree(&n.src, outside.path());
    write_file(
        &n.src.join("blob/random.bin"),
        pseudo_random(BIG, 11),
        0o640,
        time_n(40),
    );
    set_mtime(&n.src.join("blob"), time_n(41));
    let server = n.serve(&peer(&n.client_id(), None));

    let run = remote_sync(&n.client, &n.src, &server.url("f"), &[]);
    run.assert_success();

    assert_remote_mirror(&n.src, &n.dst, &run, &server);
    let diffs = diff_snapshots(
        &snapshot(&n.src),
        &snapshot(&n.dst),
        Compare::MIRROR_ALL_MTIMES,
        ("SRC", "DST"),
    );
    assert!(
        diffs.is_empty(),
        "directory and symlink mtimes are not mirrored: {diffs:#?}"
    );
}

/// A directory named like one of Ferry's temp files is an ordinary directory: a remote
/// target takes it (only files so named are refused, as no source sends them).
#[test]
fn a_directory_named_like_a_temp_file_reaches_a_remote_target() {
    let n = Nodes::new();
    write(&n.src.join("x/.ferry-tmp-1-0badc0de-0/kept"), "kept\n");
    write(&n.src.join("f"), "f\n");
    let server = n.serve(&peer(&n.client_id(), None));

    let run = remote_sync(&n.client, &n.src, &server.url("f"), &["--no-fsync"]);
    run.assert_success();

    assert_remote_mirror(&n.src, &n.dst, &run, &server);
}

/// Several files whose chunk lists travel as outlines, in one remote run: each list is
/// rebuilt as its groups arrive (the server once failed the session as a protocol error).
#[test]
fn several_outlined_files_reach_a_remote_target_in_one_run() {
    let n = Nodes::new();
    for i in 0..6u64 {
        write_file(
            &n.src.join(format!("big{i}.bin")),
            pseudo_random(6 * MIB as usize + 1000 * i as usize, 300 + i),
            0o644,
            time_n(i),
        );
    }
    let server = n.serve(&peer(&n.client_id(), None));

    let run = remote_sync(&n.client, &n.src, &server.url("f"), &["--no-fsync"]);
    run.assert_success();

    assert_remote_mirror(&n.src, &n.dst, &run, &server);
}

#[test]
fn a_finished_one_shot_run_closes_its_tls_session_cleanly() {
    let n = Nodes::new();
    write_file(&n.src.join("a.txt"), b"hello", 0o644, time_n(1));
    let server = n.serve(&peer(&n.client_id(), None));

    let run = remote_sync(&n.client, &n.src, &server.url("f"), &[]);
    run.assert_success();

    // The session's end is logged with how the connection ended.
    server.wait_log("folder closed", LOG_DEADLINE);
    let log = server.stderr();
    assert!(
        !log.contains("without a TLS close"),
        "the client cut the connection instead of closing its TLS session:\n{log}"
    );
}

#[test]
fn remote_stale_target_converges_and_second_run_sends_only_the_change() {
    let n = Nodes::new();
    stale_src(&n.src);
    stale_dst(&n.dst);
    let server = n.serve(&peer(&n.client_id(), None));
    let url = server.url("f");

    let first = remote_sync(&n.client, &n.src, &url, &["--stats"]);
    first.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &first, &server);
    let (out1, in1) = wire_bytes(&first);
    let sent1 = chunk_data_sent(&first);
    assert!(
        sent1 >= BIG as u64,
        "the big file is new to the target, so at least its {BIG} bytes are chunk data\n{first}"
    );
    assert!(
        out1 >= sent1,
        "{out1} wire bytes out cannot carry {sent1} bytes of chunk data\n{first}"
    );
    assert!(in1 > 0, "the target answered nothing\n{first}");

    // A small edit, a removal and a directory rename that carries the big file along.
    write_file(&n.src.join("docs/b.txt"), "b, edited\n", 0o600, time_n(60));
    std::fs::remove_file(n.src.join("docs/sub/c.txt")).expect("remove docs/sub/c.txt");
    std::fs::rename(n.src.join("data"), n.src.join("archive")).expect("rename data -> archive");

    let second = remote_sync(&n.client, &n.src, &url, &["--stats"]);
    second.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &second, &server);
    let (out2, _) = wire_bytes(&second);
    assert!(
        out2 < BIG as u64 / 4,
        "renaming a directory must not resend the {BIG}-byte file in it: \
         {out2} wire bytes out\n{second}"
    );
}

#[test]
fn remote_unauthorised_client_is_refused_and_the_server_keeps_serving() {
    let n = Nodes::new();
    write_file(&n.src.join("dir/file.txt"), "content\n", 0o644, time_n(1));
    let intruder = n.base.path().join("intruder-home");
    let intruder_id = node_id(&intruder);
    let server = n.serve(&peer(&n.client_id(), None));
    let url = server.url("f");

    let refused = remote_sync(&intruder, &n.src, &url, &[]);
    refused
        .assert_code(1)
        .assert_stderr_contains("refused this node's certificate");
    server.wait_log(&format!("unknown peer {intruder_id}"), LOG_DEADLINE);
    assert_empty(&n.dst, "after a refused client");

    let run = remote_sync(&n.client, &n.src, &url, &[]);
    run.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &run, &server);
}

#[test]
fn remote_server_with_another_node_id_is_not_trusted() {
    let n = Nodes::new();
    write_file(&n.src.join("file.txt"), "content\n", 0o644, time_n(1));
    let third = node_id(&n.base.path().join("third-home"));
    let server = n.serve(&peer(&n.client_id(), None));
    assert_ne!(third, server.node);

    let pinned_wrong = remote_sync(&n.client, &n.src, &url(&third, &server.addr, "f"), &[]);
    pinned_wrong
        .assert_code(1)
        .assert_stderr_contains("not the node pinned")
        .assert_stderr_contains(&format!("server is node {}", server.node))
        .assert_stderr_contains(&format!("expected {third}"));
    assert_empty(&n.dst, "after a sync to a server with another id");

    let run = remote_sync(&n.client, &n.src, &server.url("f"), &[]);
    run.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &run, &server);
}

#[test]
fn remote_folder_not_shared_with_the_client_is_refused() {
    let n = Nodes::new();
    write_file(&n.src.join("file.txt"), "content\n", 0o644, time_n(1));
    let other = n.base.path().join("other");
    let mut flags = vec!["--folder".to_owned(), format!("other={}", dir_arg(&other))];
    flags.extend(peer(&n.client_id(), Some("other")));
    let server = n.serve(&flags);

    let refused = remote_sync(&n.client, &n.src, &server.url("f"), &[]);
    refused.assert_code(1).assert_stderr_contains("not shared");
    server.wait_log("folder f is not shared", LOG_DEADLINE);
    assert_empty(&n.dst, "the folder not shared");
    assert_empty(&other, "the folder not asked for");

    // The folder that is shared still works.
    let run = remote_sync(&n.client, &n.src, &server.url("other"), &[]);
    run.assert_success();
    assert_remote_mirror(&n.src, &other, &run, &server);
}

#[test]
fn remote_dry_run_lists_changes_and_writes_nothing() {
    let n = Nodes::new();
    stale_src(&n.src);
    let server = n.serve(&peer(&n.client_id(), None));
    let url = server.url("f");

    // Into an empty target: everything would be created.
    let into_empty = remote_sync(&n.client, &n.src, &url, &["-n", "--json"]);
    into_empty.assert_success();
    let report = into_empty.report();
    assert!(report.dry_run, "{}", report.raw);
    let all = snapshot(&n.src);
    let mut want: Vec<(&str, String)> = all
        .keys()
        .map(|p| ("created", p.to_str().expect("UTF-8 path").to_owned()))
        .collect();
    want.sort();
    let want: Vec<(&str, &str)> = want.iter().map(|(c, p)| (*c, p.as_str())).collect();
    assert_eq!(
        report.changes.as_deref(),
        Some(changes(&want).as_slice()),
        "{into_empty}"
    );
    assert_empty(&n.dst, "after a dry run into an empty target");

    // Into a target that is a mirror, after SRC changed.
    remote_sync(&n.client, &n.src, &url, &[]).assert_success();
    write_file(&n.src.join("new.txt"), "new\n", 0o644, time_n(70));
    write_file(
        &n.src.join("docs/a.txt"),
        "a, rewritten\n",
        0o644,
        time_n(71),
    );
    std::fs::remove_file(n.src.join("keep.txt")).expect("remove keep.txt");
    let before = snapshot(&n.dst);

    let dry = remote_sync(&n.client, &n.src, &url, &["--dry-run"]);
    dry.assert_success();
    let mut lines: Vec<Vec<&str>> = dry
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            vec!["created", "new.txt"],
            vec!["removed", "keep.txt"],
            vec!["updated", "docs/a.txt"],
        ],
        "{dry}"
    );
    assert_untouched(&before, &snapshot(&n.dst), "DST after a remote dry run");
}

#[test]
fn a_repeat_sync_with_kept_state_sends_only_the_change() {
    let n = Nodes::new();
    // The server states what it holds as soon as the link is up, often before the second
    // run's scan is done: a run that took that for its end would leave the change behind
    // (`oneshot`'s unit tests hold the rule without the race).
    for i in 0..20 {
        write(
            &n.src.join(format!("d{}/f{i}.txt", i % 5)),
            format!("file {i}\n"),
        );
    }
    let server = n.serve(&peer(&n.client_id(), None));
    let url = server.url("f");
    let state = n.base.path().join("state");
    let state = state.to_str().unwrap();
    let entries_sent = |run: &Output| run.report().raw["entries_sent"].as_u64().unwrap();

    let first = remote_sync(&n.client, &n.src, &url, &["--json", "--state", state]);
    first.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &first, &server);

    // The kept index names the same epoch and sequences: the server, which remembers
    // what it applied, gets only the change.
    write(&n.src.join("d3/f3.txt"), "changed\n");
    let second = remote_sync(&n.client, &n.src, &url, &["--json", "--state", state]);
    second.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &second, &server);
    assert!(
        entries_sent(&second) <= 2,
        "a kept index's repeat sent more than the changed file's entry: {second}"
    );

    // Nothing changed since: the run still ends (at the server's statement), sending nothing.
    let idle = remote_sync(&n.client, &n.src, &url, &["--json", "--state", state]);
    idle.assert_success();
    assert_eq!(entries_sent(&idle), 0, "{idle}");

    // Without the state the run is a new epoch: a full snapshot of the index.
    write(&n.src.join("d4/f4.txt"), "changed too\n");
    let third = remote_sync(&n.client, &n.src, &url, &["--json"]);
    third.assert_success();
    assert_remote_mirror(&n.src, &n.dst, &third, &server);
    let scanned = third.report().entries_scanned;
    assert!(entries_sent(&third) >= scanned, "{third}");
}

#[test]
fn a_remote_peer_never_sets_setuid_or_setgid_bits_on_the_server() {
    // A peer may write into a shared folder, not plant a program that runs as the
    // server's user (root, often): those two bits are dropped; the rest of the mode stays.
    use std::os::unix::fs::PermissionsExt as _;
    let n = Nodes::new();
    write_file(&n.src.join("tool"), "#!/bin/sh\n", 0o755, time_n(1));
    set_mode(&n.src.join("tool"), 0o6755);
    write_file(&n.src.join("plain"), "x\n", 0o640, time_n(2));
    let server = n.serve(&peer(&n.client_id(), None));

    for run in 1..=2 {
        let out = remote_sync(&n.client, &n.src, &server.url("f"), &["--json"]);
        out.assert_success();
        let mode = |p: &str| {
            std::fs::metadata(n.dst.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("tool"), 0o755, "run {run}");
        assert_eq!(mode("plain"), 0o640, "run {run}");
        if run == 2 {
            // Nothing planned again for the bits it will never set.
            out.report().assert_nothing_changed();
        }
    }
}

#[test]
fn a_file_with_long_runs_of_zeros_syncs_to_a_remote_target() {
    // 100 MiB of zeros between two 1 MiB blocks: the outline names one group of zero
    // chunks three times over (each group is asked for once and sent once).
    let n = Nodes::new();
    let path = n.src.join("disk.img");
    let mut bytes = pseudo_random(MIB as usize, 31);
    bytes.resize((101 * MIB) as usize, 0);
    bytes.extend(pseudo_random(MIB as usize, 32));
    write_file(&path, &bytes, 0o644, time_n(1));
    let server = n.serve(&peer(&n.client_id(), None));

    let run = remote_sync(&n.client, &n.src, &server.url("f"), &[]);
    if run.code != 0 {
        panic!(
            "the sync failed\n{run}\n--- server log ---\n{}",
            server.stderr()
        );
    }
    assert_remote_mirror(&n.src, &n.dst, &run, &server);
}

/// The signals process `pid` catches (its `SigCgt`): bit n-1 for signal n.
fn caught_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .expect("a SigCgt line");
    u64::from_str_radix(hex.trim(), 16).expect("a hex mask")
}

#[test]
fn a_server_listens_for_its_stop_signals_before_it_says_listening() {
    use std::io::Write;
    let n = Nodes::new();
    // Its stdout a full pipe: the `listening` line blocks until read, so what the server
    // had not done before printing it stays undone while the test looks.
    let (_out, stdout) = std::io::pipe().expect("a pipe");
    let size = rustix::pipe::fcntl_getpipe_size(&stdout).expect("the pipe's size");
    stdout
        .try_clone()
        .expect("the pipe's write end")
        .write_all(&vec![b'.'; size])
        .expect("fill the pipe");
    let log = n.base.path().join("serve.log");
    let mut args = vec![
        "serve".to_owned(),
        "--home".to_owned(),
        n.server.to_str().expect("UTF-8 temp path").to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--folder".to_owned(),
        format!("f={}", dir_arg(&n.dst)),
    ];
    args.extend(peer(&n.client_id(), None));
    let mut child = std::process::Command::new(ferry_bin())
        .args(&args)
        .env_remove("FERRY_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::fs::File::create(&log).expect("the server's log"))
        .spawn()
        .expect("ferry serve starts");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    // Logged just before the line on stdout.
    crate::util::live::wait_until_blocking(LOG_DEADLINE, "the server logs listening", || {
        let text = logged();
        text.contains("listening").then_some(()).ok_or(text)
    });
    let caught = caught_signals(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let (int, term) = (1u64 << (2 - 1), 1u64 << (15 - 1));
    assert_eq!(
        caught & (int | term),
        int | term,
        "SIGINT and SIGTERM are not caught yet (SigCgt {caught:x}): one sent on `listening` \
         would kill the server\n{}",
        logged()
    );
}
