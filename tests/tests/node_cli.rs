//! What the node's commands refuse at start, and how they say it: `ferry serve` with its home
//! inside a served folder (or the other way round), and similar mistakes caught before
//! anything runs.

use std::path::Path;
use std::time::Duration;

use crate::util::node::ferry_exits_within;
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
