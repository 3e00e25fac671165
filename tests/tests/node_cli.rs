//! What the node's commands refuse at start, and how they say it: `ferry serve` with its home
//! inside a served folder (or the other way round), ports already in use, and similar
//! mistakes caught before anything runs; and `--home` as `ferry run` and `ferry check` take it.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use crate::util::node::{ferry_exits_within, NodeProcess};
use crate::util::remote::{dir_arg, node_id};
use crate::util::*;

/// How long a command that should refuse to start may take to exit; one that does not
/// refuse keeps running and is killed at this deadline.
const REFUSE_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `ferry serve --home HOME --listen 127.0.0.1:0 --folder f=FOLDER --peer PEER`, which
/// must refuse to start.
fn serve_refuses(base: &Path, home: &Path, folder: &Path) -> Output {
    let peer = node_id(&base.join("client-home"));
    let folder_arg = format!("f={}", dir_arg(folder));
    let out = ferry_exits_within(
        base,
        &[
            "serve",
            "--home",
            home.to_str().expect("UTF-8 temp path"),
            "--listen",
            "127.0.0.1:0",
            "--folder",
            &folder_arg,
            "--peer",
            &peer,
        ],
        REFUSE_DEADLINE,
    );
    out.assert_code(1);
    out
}

#[test]
fn serve_refuses_a_home_inside_a_served_folder() {
    let base = tempdir();
    let root = base.path().canonicalize().expect("canonical temp dir");
    let folder = root.join("served");
    mkdir(&folder);
    let home = folder.join(".ferry-home");
    let out = serve_refuses(&root, &home, &folder);
    out.assert_stderr_contains(&home.display().to_string())
        .assert_stderr_contains(&format!("({})", folder.display()))
        .assert_stderr_contains("is inside served folder f");
    assert!(
        !home.exists(),
        "no identity may be created inside the served folder\n{out}"
    );
}

#[test]
fn serve_refuses_a_served_folder_inside_its_home() {
    let base = tempdir();
    let root = base.path().canonicalize().expect("canonical temp dir");
    let home = root.join("home");
    let folder = home.join("served");
    mkdir(&home);
    mkdir(&folder);
    let out = serve_refuses(&root, &home, &folder);
    out.assert_stderr_contains(&home.display().to_string())
        .assert_stderr_contains(&format!("({})", folder.display()))
        .assert_stderr_contains("contains served folder f");
}

/// Asserts that stderr names `reason` exactly once (each cause is printed once).
#[track_caller]
fn assert_said_once(out: &Output, reason: &str) {
    let times = out.stderr.matches(reason).count();
    assert_eq!(times, 1, "{reason:?} is said {times} times\n{out}");
}

#[test]
fn run_says_once_why_its_listen_and_dashboard_ports_cannot_be_used() {
    let base = tempdir();
    let dir = base.path();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port on 127.0.0.1");
    let addr = taken.local_addr().expect("its address");
    let peer = node_id(&dir.join("peer-home"));
    mkdir(&dir.join("r"));
    mkdir(&dir.join("s"));
    let node = "[node]\nname = \"n\"\nhome = \"home\"\n";
    let cases = [
        (
            format!(
                "{node}dashboard = \"off\"\nlisten = \"{addr}\"\n\n[[peer]]\nname = \"p\"\nid = \"{peer}\"\n\n[[folder]]\nid = \"r\"\npath = \"r\"\nrole = \"receive\"\npeers = [\"p\"]\n"
            ),
            format!("cannot listen on {addr}: "),
        ),
        (
            format!(
                "{node}dashboard = \"{addr}\"\n\n[[folder]]\nid = \"s\"\npath = \"s\"\nrole = \"send\"\ntargets = [\"t\"]\n"
            ),
            format!("cannot start the dashboard on {addr}: "),
        ),
    ];
    for (text, what) in &cases {
        write(&dir.join("ferry.toml"), text);
        let out = ferry_exits_within(dir, &["run", "--config", "ferry.toml"], REFUSE_DEADLINE);
        out.assert_code(1).assert_stderr_contains(what);
        assert_said_once(&out, "Address already in use");
    }
}

#[test]
fn home_flag_takes_the_place_of_the_configs_home_in_check_and_run() {
    let base = tempdir();
    let dir = base.path().canonicalize().expect("canonical temp dir");
    let flag_home = dir.join("flag-home");
    let file_home = dir.join("file-home");
    let peer = node_id(&dir.join("peer-home"));
    mkdir(&dir.join("r"));
    let text = format!(
        "[node]\nname = \"n\"\nhome = \"file-home\"\ndashboard = \"off\"\nlisten = \"127.0.0.1:0\"\n\n[[peer]]\nname = \"p\"\nid = \"{peer}\"\n\n[[folder]]\nid = \"r\"\npath = \"r\"\nrole = \"receive\"\npeers = [\"p\"]\n"
    );
    write(&dir.join("ferry.toml"), &text);
    let flag = flag_home.to_str().expect("UTF-8 temp path");

    let check = ferry_in(&dir, ["--home", flag, "check", "--config", "ferry.toml"]);
    check.assert_success();
    let state = flag_home.join("state");
    assert!(
        check.stdout.contains(&format!("home {flag},"))
            && check
                .stdout
                .contains(&format!("state in {},", state.display())),
        "check does not use --home\n{check}"
    );

    let mut node = NodeProcess::start(&dir, "n", &text, &["--home", flag]);
    assert!(
        state.join("state.redb").is_file(),
        "run keeps no state under --home\n{}",
        node.describe()
    );
    node.stop();
    assert_eq!(
        node.node_id.as_deref(),
        Some(node_id(&flag_home).as_str()),
        "run does not use the identity under --home"
    );
    assert!(
        !file_home.exists(),
        "the config's home was used although --home was given"
    );
}

#[test]
fn home_flag_inside_a_folder_is_refused_by_check() {
    let base = tempdir();
    let dir = base.path().canonicalize().expect("canonical temp dir");
    mkdir(&dir.join("s"));
    let text = "[node]\nname = \"n\"\ndashboard = \"off\"\nstate_dir = \"st\"\n\n[[folder]]\nid = \"s\"\npath = \"s\"\nrole = \"send\"\ntargets = [\"t\"]\n";
    write(&dir.join("ferry.toml"), text);
    let home = dir.join("s/home");
    let out = ferry_in(
        &dir,
        [
            "--home",
            home.to_str().expect("UTF-8 temp path"),
            "check",
            "--config",
            "ferry.toml",
        ],
    );
    out.assert_code(1)
        .assert_stderr_contains("`home` (--home)")
        .assert_stderr_contains(&home.display().to_string());
}
