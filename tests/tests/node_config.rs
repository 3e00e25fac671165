//! `ferry check` and `ferry init`: invalid config files exit 1 naming file:line and the key,
//! valid ones exit 0 with a summary, and the file `ferry init` writes passes `ferry check`.

use std::path::Path;

use crate::util::remote::node_id;
use crate::util::*;

/// `[node]` with a name and an identity home next to the file.
const NODE: &str = "[node]\nname = \"laptop\"\nhome = \"home\"\n";

/// Writes `text` as `ferry.toml` in `dir` and runs `ferry check` there.
fn check(dir: &Path, text: &str) -> Output {
    write(&dir.join("ferry.toml"), text);
    ferry_in(dir, ["check", "--config", "ferry.toml"])
}

/// Asserts a refused check whose stderr names `ferry.toml:LINE:` and each of `needles`.
#[track_caller]
fn assert_invalid(out: &Output, line: usize, needles: &[&str]) {
    out.assert_code(1);
    out.assert_stderr_contains(&format!("ferry.toml:{line}:"));
    out.assert_stderr_contains("hint: ");
    for needle in needles {
        out.assert_stderr_contains(needle);
    }
    assert!(
        out.stdout.is_empty(),
        "a refused check printed a summary\n{out}"
    );
}

#[test]
fn invalid_configs_are_refused_with_their_line_and_key() {
    let dir = tempdir();
    mkdir(&dir.path().join("photos"));
    let folder = "\n[[folder]]\nid = \"photos\"\npath = \"photos\"\nrole = \"send\"\n";
    let cases: Vec<(String, usize, Vec<&str>)> = vec![
        (format!("{NODE}name = \"twice\"\n"), 4, vec!["not valid TOML"]),
        (
            format!("{NODE}{folder}targets = [\"m\"]\nrescan = \"1h\"\n"),
            10,
            vec!["unknown key `rescan`", "`rescan_interval`"],
        ),
        (
            format!("{NODE}{folder}targets = [\"m\"]\nrescan_interval = \"5 parsecs\"\n"),
            10,
            vec!["`rescan_interval` = \"5 parsecs\" is not a duration", "500ms"],
        ),
        (
            format!("{NODE}\n[[folder]]\nid = \"photos\"\npath = \"nope\"\nrole = \"send\"\ntargets = [\"m\"]\n"),
            7,
            vec!["`path` = \"nope\" does not exist", "mkdir -p"],
        ),
        (
            format!("{NODE}{folder}targets = [\"photos/mirror\"]\n"),
            9,
            vec!["`targets` entry", "is inside its own `path`"],
        ),
        (
            format!("{NODE}{folder}peers = [\"nas\"]\n"),
            9,
            vec!["`peers` names \"nas\", but no [[peer]] has that name", "[[peer]]"],
        ),
        (
            format!("{NODE}listen = \"everywhere\"\n"),
            4,
            vec!["`listen` = \"everywhere\"", "0.0.0.0:7700"],
        ),
        (
            format!("{NODE}\n[[peer]]\nname = \"nas\"\nid = \"NOT-AN-ID\"\n"),
            7,
            vec!["peer \"nas\": `id`", "ferry id"],
        ),
        (
            format!("{NODE}{folder}targets = [\"m\"]\ndebounce = \"99999999999999d\"\n"),
            10,
            vec!["`debounce` = \"99999999999999d\" is longer", "at most 1h"],
        ),
        (
            format!("{NODE}{folder}"),
            8,
            vec!["no `peers` and no `targets`", "targets = "],
        ),
    ];
    for (text, line, needles) in &cases {
        let out = check(dir.path(), text);
        assert_invalid(&out, *line, needles);
    }
}

#[test]
fn node_directories_and_symlinked_targets_are_checked_for_overlaps() {
    let dir = tempdir();
    mkdir(&dir.path().join("photos"));
    mkdir(&dir.path().join("docs"));
    // A target that is a symlink to another folder's source: a mirror of photos would
    // delete docs' files there.
    std::os::unix::fs::symlink("docs", dir.path().join("backup")).unwrap();
    let folder = |id: &str, targets: &str| {
        format!("\n[[folder]]\nid = \"{id}\"\npath = \"{id}\"\nrole = \"send\"\ntargets = [\"{targets}\"]\n")
    };
    let text = format!(
        "{NODE}{}{}",
        folder("docs", "m2"),
        folder("photos", "backup")
    );
    assert_invalid(
        &check(dir.path(), &text),
        15,
        &[
            "`targets` entry",
            "is the same directory as folder \"docs\"'s `path`",
        ],
    );
    // The node's state inside a target (deleted there as an extra), and its home inside a
    // folder (replicated, keys and all).
    let text = format!(
        "[node]\nname = \"laptop\"\nhome = \"home\"\nstate_dir = \"m/.state\"\n{}",
        folder("photos", "m")
    );
    assert_invalid(
        &check(dir.path(), &text),
        10,
        &["`targets` entry", "contains [node]'s `state_dir`"],
    );
    let text = format!(
        "[node]\nname = \"laptop\"\nhome = \"photos/.ferry\"\n{}",
        folder("photos", "m")
    );
    assert_invalid(
        &check(dir.path(), &text),
        7,
        &["`path`", "contains [node]'s `home`"],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempdir();
    let text = format!(
        "{NODE}listen = \"nowhere\"\n\n[[folder]]\nid = \"bad id\"\npath = \"missing\"\nrole = \"send\"\ntargets = [\"m\"]\n"
    );
    let out = check(dir.path(), &text);
    assert_invalid(&out, 4, &["ferry.toml:7:", "ferry.toml:8:", "3 problems"]);
}

#[test]
fn unknown_keys_are_reported_with_every_other_problem() {
    let dir = tempdir();
    mkdir(&dir.path().join("a"));
    let text = format!(
        "bogus = 1\n{NODE}nmae = \"x\"\n\n[[folder]]\nid = \"a\"\npath = \"missing\"\nrole = \"send\"\ntargets = [\"m\"]\nrescan_interval = \"5 parsecs\"\nwacth = true\n"
    );
    let out = check(dir.path(), &text);
    assert_invalid(
        &out,
        1,
        &[
            "ferry.toml:1:1: unknown key `bogus` in the top level",
            "ferry.toml:5:1: unknown key `nmae` in [node]",
            "did you mean `name`?",
            "ferry.toml:9:",
            "does not exist",
            "ferry.toml:12:",
            "is not a duration",
            "ferry.toml:13:1: unknown key `wacth` in [[folder]]",
            "5 problems",
        ],
    );
}

#[test]
fn a_valid_config_is_summarised() {
    let dir = tempdir();
    mkdir(&dir.path().join("photos"));
    mkdir(&dir.path().join("inbox"));
    let nas = node_id(&dir.path().join("nas-home"));
    let text = format!(
        "{NODE}listen = \"127.0.0.1:7700\"\n\n[[peer]]\nname = \"nas\"\naddress = \"nas.local:7700\"\nid = \"{nas}\"\n\n\
         [[folder]]\nid = \"photos\"\npath = \"photos\"\nrole = \"send\"\npeers = [\"nas\"]\ntargets = [\"photos-mirror\"]\n\n\
         [[folder]]\nid = \"inbox\"\npath = \"inbox\"\nrole = \"receive\"\npeers = [\"nas\"]\n"
    );
    let out = check(dir.path(), &text);
    out.assert_success();
    for needle in [
        "folder photos (send)",
        "to peers: nas",
        "photos-mirror",
        "folder inbox (receive)",
        "from peers: nas",
        &format!("peer nas: nas.local:7700, id {nas}"),
        "OK (2 folders, 1 peer)",
    ] {
        assert!(
            out.stdout.contains(needle),
            "stdout lacks {needle:?}\n{out}"
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error() {
    let dir = tempdir();
    let out = ferry_in(dir.path(), ["check", "--config", "absent.toml"]);
    out.assert_code(1);
    out.assert_stderr_contains("absent.toml");
}

#[test]
fn init_writes_a_config_that_check_accepts() {
    let dir = tempdir();
    let home = dir.path().join("home");
    let config = dir.path().join("ferry.toml");
    let home_arg = home.to_str().unwrap();
    let config_arg = config.to_str().unwrap();

    let out = ferry(["--home", home_arg, "init", "--config", config_arg]);
    out.assert_success();
    let id = node_id(&home);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&id),
        "the starter config lacks the node id {id}\n{text}"
    );
    assert!(out.stdout.contains(&id), "{out}");

    // The example folder does not exist yet: check says so, naming the line.
    let out = ferry(["check", "--config", config_arg]);
    out.assert_code(1);
    out.assert_stderr_contains("documents");
    out.assert_stderr_contains("does not exist");

    mkdir(&dir.path().join("documents"));
    let out = ferry(["check", "--config", config_arg]);
    out.assert_success();
    assert!(out.stdout.contains("folder documents (send)"), "{out}");

    // An existing file is kept unless --force.
    write(&config, "# mine\n");
    let out = ferry(["--home", home_arg, "init", "--config", config_arg]);
    out.assert_code(1);
    out.assert_stderr_contains("--force");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    let out = ferry([
        "--home", home_arg, "init", "--config", config_arg, "--force",
    ]);
    out.assert_success();
    ferry(["check", "--config", config_arg]).assert_success();
}
