//! `ferry run` on one machine: invalid config files refused as `ferry check` refuses them, a
//! local-only node mirroring one folder into two targets (metrics, log file, JSON logs), its
//! dashboard page in a headless Chromium, a corrupt state database set aside, log rotation
//! by SIGHUP, and a SIGHUP reload that restarts only the folders it changed.

use std::fs;
use std::path::{Path, PathBuf};

use prometheus_parse::{Scrape, Value as Metric};
use serde_json::Value;

use crate::util::chromium::Chromium;
use crate::util::node::{
    all_in_sync, ferry_exits_within, wait_mirror, NodeProcess, DEADLINE, START_DEADLINE,
};
use crate::util::*;

/// `[node]` with a name and an identity home next to the file.
const NODE: &str = "[node]\nname = \"laptop\"\nhome = \"home\"\n";

/// The problem lines (`FILE:LINE:COL: message`) `ferry check` prints for a refused config.
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("ferry.toml:"))
        .collect()
}

/// Invalid configs, each with the line of its one problem and what its message must say.
fn invalid_cases(dir: &Path) -> Vec<(String, usize, Vec<&'static str>)> {
    mkdir(&dir.join("photos/inner"));
    mkdir(&dir.join("music"));
    let folder = "\n[[folder]]\nid = \"photos\"\npath = \"photos\"\nrole = \"send\"\n";
    vec![
        (
            format!("{NODE}{folder}targets = [\"m\"]\nrescan = \"1h\"\n"),
            10,
            vec!["unknown key `rescan`"],
        ),
        (
            format!("{NODE}{folder}targets = [\"m\"]\n\n[[folder]]\nid = \"photos\"\npath = \"music\"\nrole = \"send\"\ntargets = [\"n\"]\n"),
            12,
            vec!["the id \"photos\" is already used by the [[folder]] at line 6"],
        ),
        (
            format!("{NODE}\n[[folder]]\nid = \"photos\"\npath = \"nope\"\nrole = \"send\"\ntargets = [\"m\"]\n"),
            7,
            vec!["`path` = \"nope\" does not exist"],
        ),
        (
            format!("{NODE}{folder}targets = [\"m\"]\n\n[[folder]]\nid = \"inner\"\npath = \"photos/inner\"\nrole = \"send\"\ntargets = [\"n\"]\n"),
            13,
            vec!["folder \"inner\": `path`", "is inside folder \"photos\"'s `path`"],
        ),
        (
            format!("{NODE}{folder}peers = [\"nas\"]\n"),
            9,
            vec!["`peers` names \"nas\", but no [[peer]] has that name"],
        ),
        (
            format!("{NODE}{folder}targets = [\"m\"]\ndebounce = \"soon\"\n"),
            10,
            vec!["`debounce` = \"soon\" is not a duration"],
        ),
    ]
}

/// Writes `text` as `dir/ferry.toml`, then runs `ferry check` and `ferry run` on it; both
/// must exit 1 (`run` within [`START_DEADLINE`]). Returns their outputs and a description.
fn check_and_run(dir: &Path, text: &str) -> (Output, Output, String) {
    write(&dir.join("ferry.toml"), text);
    let check = ferry_in(dir, ["check", "--config", "ferry.toml"]);
    let run = ferry_exits_within(dir, &["run", "--config", "ferry.toml"], START_DEADLINE);
    let context = format!("config:\n{text}\n--- check ---\n{check}\n--- run ---\n{run}");
    assert_eq!(check.code, 1, "check did not refuse the config\n{context}");
    assert_eq!(run.code, 1, "run did not exit 1\n{context}");
    (check, run, context)
}

#[test]
fn run_refuses_invalid_configs_as_check_does() {
    let dir = tempdir();
    for (text, line, needles) in invalid_cases(dir.path()) {
        let (check, run, context) = check_and_run(dir.path(), &text);
        let expected = problem_lines(&check.stderr);
        assert!(
            expected.len() == 1 && expected[0].starts_with(&format!("ferry.toml:{line}:")),
            "check does not report one problem on line {line}\n{context}"
        );
        // The same problem, file:line:column, message and hint, as check prints it.
        let hint = check
            .stderr
            .lines()
            .find(|l| l.trim_start().starts_with("hint: "))
            .unwrap_or_else(|| panic!("check printed no hint\n{context}"));
        for needle in expected.iter().chain([&hint]).chain(&needles) {
            assert!(
                run.stderr.contains(needle),
                "run's stderr lacks {needle:?}\n{context}"
            );
        }
        assert!(
            !run.stdout.contains("ready"),
            "a refused node said it was ready\n{context}"
        );
    }
}

#[test]
fn run_reports_each_config_problem_once() {
    let dir = tempdir();
    for (text, _, _) in invalid_cases(dir.path()) {
        let (check, run, context) = check_and_run(dir.path(), &text);
        for problem in problem_lines(&check.stderr) {
            let times = run.stderr.matches(problem).count();
            assert_eq!(
                times, 1,
                "run reports {problem:?} {times} times (the config error is printed both as \
                 the error and again as its own source)\n{context}"
            );
        }
    }
}

/// A local-only node's directories: SRC, two targets, an identity home and a state dir.
struct Local {
    _base: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    targets: [PathBuf; 2],
    home: PathBuf,
    state: PathBuf,
}

impl Local {
    fn new() -> Local {
        let base = tempdir();
        let root = base.path().canonicalize().expect("canonical temp dir");
        let src = root.join("src");
        mkdir(&src);
        for i in 0..10u64 {
            write_file(
                &src.join(format!("dir{}/file{i}.txt", i % 3)),
                format!("file {i}\n"),
                0o644,
                time_n(i),
            );
        }
        Local {
            _base: base,
            targets: [root.join("mirror-1"), root.join("mirror-2")],
            home: root.join("home"),
            state: root.join("state"),
            src,
            root,
        }
    }

    /// The config: folder `docs` sent to both targets, the dashboard on a free port.
    fn config(&self) -> String {
        let s = |p: &Path| p.to_str().expect("UTF-8 temp path").to_owned();
        format!(
            "[node]\nname = \"solo\"\nhome = \"{}\"\nstate_dir = \"{}\"\ndashboard = \"127.0.0.1:0\"\nfsync = false\n\n\
             [[folder]]\nid = \"docs\"\npath = \"{}\"\nrole = \"send\"\ntargets = [\"{}\", \"{}\"]\n",
            s(&self.home),
            s(&self.state),
            s(&self.src),
            s(&self.targets[0]),
            s(&self.targets[1]),
        )
    }

    fn start(&self, flags: &[&str]) -> NodeProcess {
        NodeProcess::start(&self.root.join("conf"), "solo", &self.config(), flags)
    }

    /// Waits until both targets mirror SRC and the node says both are in sync.
    fn wait_converged(&self, node: &mut NodeProcess, what: &str) {
        for t in &self.targets {
            wait_mirror(&mut [&mut *node], &self.src, t, what);
        }
        node.wait_status(
            DEADLINE,
            &format!("both targets are in sync after {what}"),
            |s| all_in_sync(s, "send"),
        );
    }
}

/// The value of `ferry_files_total{folder, target, action}` in a scrape of `/metrics`.
fn files_total(body: &str, folder: &str, target: &str, action: &str) -> f64 {
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{body}"));
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "ferry_files_total"
                && s.labels.get("folder") == Some(folder)
                && s.labels.get("target") == Some(target)
                && s.labels.get("action") == Some(action)
        })
        .map(|s| match s.value {
            Metric::Counter(v) | Metric::Untyped(v) | Metric::Gauge(v) => v,
            _ => panic!("ferry_files_total is not a number in\n{body}"),
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "ferry_files_total{{folder={folder:?},target={target:?},action={action:?}}} in\n{body}"
    );
    found[0]
}

#[test]
fn local_node_mirrors_to_two_targets_with_metrics_and_json_logs() {
    let local = Local::new();
    let log_file = local.root.join("node.log.json");
    let log_arg = log_file.to_str().unwrap();
    let mut node = local.start(&["--log-format", "json", "--log-file", log_arg]);
    local.wait_converged(&mut node, "the initial sync");

    write(&local.src.join("dir1/live.txt"), "a live change\n");
    local.wait_converged(&mut node, "a live change");

    let status = node.status();
    assert_eq!(status["node"], "solo", "{status}");
    assert_eq!(
        status["node_id"],
        Value::Null,
        "a local-only node has no identity: {status}"
    );
    let metrics = node.get("/metrics");
    for t in &local.targets {
        let created = files_total(&metrics, "docs", t.to_str().unwrap(), "created");
        assert!(
            created > 0.0,
            "no created files counted for {}\n{metrics}",
            t.display()
        );
    }
    node.stop();

    // The node never needed an identity, so it made none.
    for file in ["node.key", "node.crt"] {
        assert!(
            !exists(&local.home.join(file)),
            "a local-only node created {file} in its home"
        );
    }

    let log = std::fs::read_to_string(&log_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", log_file.display()));
    let lines: Vec<Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("a log-file line is not a JSON object: {l:?}\n{log}"))
        })
        .collect();
    let created = lines.iter().any(|l| {
        let fields = &l["fields"];
        fields["folder"] == "docs"
            && fields["path"] == "dir1/live.txt"
            && fields["message"]
                .as_str()
                .is_some_and(|m| m.contains("created"))
    });
    assert!(
        created,
        "no log-file line says dir1/live.txt was created in folder docs\n{log}"
    );
}

#[test]
fn dashboard_page_follows_a_real_node() {
    let local = Local::new();
    let mut node = local.start(&[]);
    local.wait_converged(&mut node, "the initial sync");
    let mut browser = Chromium::launch();
    browser.navigate(&format!("http://{}/", node.dashboard()));
    browser.wait_for(
        r#"document.querySelector('[data-folder="docs"]') !== null
           && document.querySelectorAll('[data-folder="docs"] [data-target]').length === 2
           && document.body.dataset.events === "open""#,
        "the page shows folder docs with its two targets and the event stream is open",
    );
    // A reload would lose this marker.
    browser.eval("window.notReloaded = true").unwrap();
    write(&local.src.join("dir2/seen-live.txt"), "for the page\n");
    browser.wait_for(
        r#"window.notReloaded === true
           && document.querySelector('#events li[data-path="dir2/seen-live.txt"]') !== null"#,
        "the page lists the new file's event without a reload",
    );
    local.wait_converged(&mut node, "a change seen by the page");
    node.stop();
}

#[test]
fn corrupt_state_database_is_set_aside_and_rebuilt() {
    let local = Local::new();
    let log_file = local.root.join("node.log");
    let log_arg = log_file.to_str().unwrap();
    let mut node = local.start(&["--log-file", log_arg]);
    local.wait_converged(&mut node, "the initial sync");
    node.stop();

    let db = local.state.join("state.redb");
    assert!(exists(&db), "no state database at {}", db.display());
    write(&db, pseudo_random(64 * 1024, 42));
    write(
        &local.src.join("dir0/after-corruption.txt"),
        "still mirrored\n",
    );
    node.restart(None);
    local.wait_converged(&mut node, "a restart on a corrupt state database");

    let aside: Vec<String> = std::fs::read_dir(&local.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.redb.bad-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "expected one state.redb.bad-* file, found {aside:?}"
    );
    let stderr = node.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&aside[0]))
        .unwrap_or_else(|| {
            panic!(
                "no warning names the file set aside ({})\n{}",
                aside[0],
                node.describe()
            )
        });
    assert!(warning.contains("state.redb"), "{warning}");
    node.stop();

    // The text log file holds the change, with its folder and path.
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.lines().any(|l| l.contains("docs")
            && l.contains("dir0/after-corruption.txt")
            && l.contains("created")),
        "no log-file line for the created file\n{log}"
    );
}

/// The log file can be rotated by renaming it and sending SIGHUP: the node reopens the
/// file by name and goes on appending there, and the renamed file keeps what it had.
#[test]
fn log_file_is_reopened_on_sighup_for_rotation() {
    let local = Local::new();
    let log_file = local.root.join("node.log");
    let rotated = local.root.join("node.log.1");
    let mut node = local.start(&["--log-file", log_file.to_str().unwrap()]);
    local.wait_converged(&mut node, "the initial sync");
    std::fs::rename(&log_file, &rotated).unwrap();
    node.sighup();
    write(&local.src.join("dir1/after-rotation.txt"), "rotated\n");
    local.wait_converged(&mut node, "a change after the rotation");
    let has = |p: &Path, needle: &str| {
        std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l.contains(needle)))
    };
    crate::util::live::wait_until_blocking(DEADLINE, "the reopened log has the change", || {
        if has(&log_file, "dir1/after-rotation.txt") {
            Ok(())
        } else {
            Err(node.describe())
        }
    });
    assert!(
        has(&rotated, "dir0/file0.txt"),
        "the rotated file lost the initial sync's lines"
    );
    assert!(
        !has(&rotated, "dir1/after-rotation.txt"),
        "the node went on writing to the renamed file"
    );
    node.stop();
}

/// A SIGHUP that removes one folder and changes another restarts just those two: the
/// unchanged folder's actors are not restarted, the removed one leaves the status, and the
/// changed one starts again under its new settings.
#[test]
fn sighup_restarts_only_the_folders_that_changed() {
    let base = tempdir();
    let root = base.path().canonicalize().expect("canonical temp dir");
    let s = |p: &Path| p.to_str().expect("UTF-8 temp path").to_owned();
    for name in ["keep", "change", "drop"] {
        write_file(
            &root.join(name).join("a.txt"),
            format!("{name}\n"),
            0o644,
            time_n(1),
        );
        write_file(
            &root.join(name).join("b.tmp"),
            "scratch\n",
            0o644,
            time_n(2),
        );
    }
    let folder = |name: &str, extra: &str| {
        format!(
            "[[folder]]\nid = \"{name}\"\npath = \"{}\"\nrole = \"send\"\ntargets = [\"{}\"]\n{extra}\n",
            s(&root.join(name)),
            s(&root.join(format!("{name}-mirror"))),
        )
    };
    let head = format!(
        "[node]\nname = \"reload\"\nhome = \"{}\"\nstate_dir = \"{}\"\ndashboard = \"127.0.0.1:0\"\nfsync = false\n\n",
        s(&root.join("home")),
        s(&root.join("state")),
    );
    let before = format!(
        "{head}{}{}{}",
        folder("keep", ""),
        folder("change", ""),
        folder("drop", "")
    );
    let conf = root.join("conf");
    let mut node = NodeProcess::start(&conf, "reload", &before, &[]);
    node.wait_status(DEADLINE, "every folder in sync", |st| {
        all_in_sync(st, "send")?;
        let n = st["folders"].as_array().map_or(0, |f| f.len());
        (n == 3).then_some(()).ok_or(format!("{n} folders"))
    });
    assert!(exists(&root.join("change-mirror/b.tmp")));
    let started = |st: &Value, folder: &str| -> usize {
        st["events"]
            .as_array()
            .map(|ev| {
                ev.iter()
                    .filter(|e| e["folder"] == folder && e["kind"] == "actor-started")
                    .count()
            })
            .unwrap_or(0)
    };
    let snapshot = node.wait_status(DEADLINE, "status", |_| Ok(()));
    let keep_started = started(&snapshot, "keep");
    assert!(keep_started > 0, "no actor-started events for keep");

    // `change` now ignores *.tmp; `drop` is gone.
    let after = format!(
        "{head}{}{}",
        folder("keep", ""),
        folder("change", "ignore = [\"*.tmp\"]")
    );
    crate::util::node::write_config(&node.config.clone(), &after);
    node.sighup();
    node.wait_status(DEADLINE, "the reload applied", |st| {
        let ids: Vec<&str> = st["folders"]
            .as_array()
            .map(|f| f.iter().filter_map(|f| f["id"].as_str()).collect())
            .unwrap_or_default();
        if ids.contains(&"drop") {
            return Err(format!("drop still shown: {ids:?}"));
        }
        if started(st, "change") < 8 {
            return Err("change not restarted yet".into());
        }
        all_in_sync(st, "send")
    });
    // The unchanged folder's actors were not started again.
    let status = node.wait_status(DEADLINE, "status", |_| Ok(()));
    assert_eq!(
        started(&status, "keep"),
        keep_started,
        "keep was restarted by a reload that did not change it"
    );
    // A change in a kept folder still replicates; the changed folder follows its new rules.
    write(&root.join("keep/new.txt"), "new\n");
    write(&root.join("change/c.tmp"), "ignored now\n");
    write(&root.join("change/c.txt"), "copied\n");
    crate::util::live::wait_until_blocking(DEADLINE, "the changes replicate", || {
        let ok =
            exists(&root.join("keep-mirror/new.txt")) && exists(&root.join("change-mirror/c.txt"));
        ok.then_some(()).ok_or_else(|| node.describe())
    });
    assert!(
        !exists(&root.join("change-mirror/c.tmp")),
        "an ignored file was replicated after the reload"
    );
    node.stop();
}

#[test]
fn sighup_restarts_a_replication_that_gave_up() {
    let base = tempdir();
    let root = base.path().canonicalize().expect("canonical temp dir");
    let s = |p: &Path| p.to_str().expect("UTF-8 temp path").to_owned();
    let (src, away, mirror) = (root.join("s"), root.join("s.away"), root.join("s-mirror"));
    write(&src.join("a.txt"), "a\n");
    let text = format!(
        "[node]\nname = \"gaveup\"\nhome = \"{}\"\nstate_dir = \"{}\"\ndashboard = \"127.0.0.1:0\"\nfsync = false\n\n\
         [[folder]]\nid = \"s\"\npath = \"{}\"\nrole = \"send\"\ntargets = [\"{}\"]\n",
        s(&root.join("home")),
        s(&root.join("state")),
        s(&src),
        s(&mirror),
    );
    let mut node = NodeProcess::start(&root.join("conf"), "gaveup", &text, &[]);
    node.wait_status(DEADLINE, "the folder in sync", |st| all_in_sync(st, "send"));
    let target_state = |st: &Value| -> Result<String, String> {
        let t = crate::util::node::target(st, "s", &s(&mirror))?;
        Ok(crate::util::node::state_of(t).to_owned())
    };

    // The source gone for longer than the restart budget lasts: the replication gives up.
    fs::rename(&src, &away).expect("move the source away");
    node.wait_status(DEADLINE, "the replication gave up", |st| {
        let state = target_state(st)?;
        (state == "failed").then_some(()).ok_or(state)
    });
    fs::rename(&away, &src).expect("move the source back");
    write(&src.join("b.txt"), "b\n");
    let status = node.wait_status(DEADLINE, "status", |_| Ok(()));
    assert_eq!(
        target_state(&status).as_deref(),
        Ok("failed"),
        "a replication that gave up came back by itself"
    );

    node.sighup();
    wait_mirror(
        &mut [&mut node],
        &src,
        &mirror,
        "SIGHUP after the source came back",
    );
    node.wait_status(DEADLINE, "the folder in sync again", |st| {
        all_in_sync(st, "send")
    });
    node.stop();
}
