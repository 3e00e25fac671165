//! Node test support: a `ferry run --config FILE` process with its config file, its stdout
//! announcements (`listening …`, `dashboard …`, `ready`), its `/api/status` read over
//! hand-written HTTP, signals, and deadline-bound waits whose failures show the node's log.

pub use crate::util::http::http_get;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;

use super::live::mirror_diff;
use super::{ferry_bin, Output};

/// How long a node gets to print `ready`, and to exit after SIGTERM.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long any condition on running nodes may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// How many lines of a node's stderr a failure message shows.
const TAIL_LINES: usize = 60;

/// A running `ferry run`, its stderr appended to a file. Killed on drop.
pub struct NodeProcess {
    /// A name for messages (`A`, `B`, …).
    pub name: String,
    /// The config file it runs from.
    pub config: PathBuf,
    /// The address it listens on for peers, from its `listening` line.
    pub listen: Option<SocketAddr>,
    /// Its node id, from its `listening` line.
    pub node_id: Option<String>,
    /// Its dashboard's address, from its `dashboard` line.
    pub dashboard: Option<SocketAddr>,
    /// Flags put before `run` (`--log-file`, `--log-format`, …).
    flags: Vec<String>,
    stderr_path: PathBuf,
    child: Option<Child>,
}

/// Writes `text` to `path`, creating its parent directory.
pub fn write_config(path: &Path, text: &str) {
    super::write(path, text);
}

impl NodeProcess {
    /// Writes `text` as `dir/NAME.toml`, starts `ferry FLAGS… run --config FILE` and waits
    /// (up to [`START_DEADLINE`]) until it prints `ready`. Its stderr goes to `dir/NAME.log`.
    pub fn start(dir: &Path, name: &str, text: &str, flags: &[&str]) -> NodeProcess {
        let config = dir.join(format!("{name}.toml"));
        write_config(&config, text);
        let mut node = NodeProcess {
            name: name.to_owned(),
            config,
            listen: None,
            node_id: None,
            dashboard: None,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            stderr_path: dir.join(format!("{name}.log")),
            child: None,
        };
        node.spawn();
        node
    }

    /// Starts the process and reads its announcements until `ready`.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is still running", self.name);
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.stderr_path.display()));
        let mut cmd = Command::new(ferry_bin());
        cmd.args(&self.flags)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            // A developer's FERRY_LOG would change what the log shows; colours would garble it.
            .env_remove("FERRY_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        // A thread reads the lines so that the wait for `ready` can have a deadline; it keeps
        // draining stdout afterwards so the node never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        self.child = Some(child);
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = START_DEADLINE.saturating_sub(start.elapsed());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let status = self.child_mut().try_wait().ok().flatten();
                    self.kill();
                    panic!(
                        "node {} did not print `ready` ({e:?}; exit status {status:?}); \
                         stdout so far: {seen:?}\n{}",
                        self.name,
                        self.describe()
                    );
                }
            };
            seen.push(line.clone());
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["listening", addr, "node", id] => {
                    self.listen = Some(addr.parse().unwrap_or_else(|e| {
                        panic!("node {}: bad listen address in {line:?}: {e}", self.name)
                    }));
                    self.node_id = Some((*id).to_owned());
                }
                ["dashboard", url] => {
                    let addr = url
                        .strip_prefix("http://")
                        .and_then(|u| u.strip_suffix('/'))
                        .and_then(|a| a.parse().ok());
                    self.dashboard = Some(addr.unwrap_or_else(|| {
                        panic!("node {}: bad dashboard line {line:?}", self.name)
                    }));
                }
                ["ready"] => return,
                _ => {}
            }
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is not running", self.name))
    }

    /// The process id, for signals.
    fn pid(&self) -> Pid {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.name));
        Pid::from_child(child)
    }

    /// Everything the node has logged on stderr so far (across restarts).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last lines of the node's stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let log = self.stderr();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(TAIL_LINES);
        lines[from..].join("\n")
    }

    /// The node's name, config file and stderr tail, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- node {} ({}), stderr tail ---\n{}",
            self.name,
            self.config.display(),
            self.stderr_tail()
        )
    }

    /// Panics, with the log, if the node has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
            panic!(
                "node {} exited unexpectedly ({status})\n{}",
                self.name,
                self.describe()
            );
        }
    }

    /// The dashboard's address; panics when the node has no dashboard.
    pub fn dashboard(&self) -> SocketAddr {
        self.dashboard
            .unwrap_or_else(|| panic!("node {} announced no dashboard", self.name))
    }

    /// `GET /api/status` on the node's dashboard, as JSON.
    pub fn status(&self) -> Value {
        let body = http_get(self.dashboard(), "/api/status").unwrap_or_else(|e| {
            panic!(
                "node {}: GET /api/status: {e}\n{}",
                self.name,
                self.describe()
            )
        });
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("node {}: /api/status is not JSON ({e}): {body}", self.name))
    }

    /// `GET path` on the node's dashboard: the body of a 200 response.
    pub fn get(&self, path: &str) -> String {
        http_get(self.dashboard(), path)
            .unwrap_or_else(|e| panic!("node {}: GET {path}: {e}\n{}", self.name, self.describe()))
    }

    /// Polls `/api/status` until `check` accepts it; after `deadline` panics with `what`, the
    /// last status and the node's stderr. Fails early if the node exits.
    #[track_caller]
    pub fn wait_status(
        &mut self,
        deadline: Duration,
        what: &str,
        mut check: impl FnMut(&Value) -> Result<(), String>,
    ) -> Value {
        let start = Instant::now();
        loop {
            self.assert_running();
            let why = match http_get(self.dashboard(), "/api/status") {
                Ok(body) => match serde_json::from_str::<Value>(&body) {
                    Ok(status) => match check(&status) {
                        Ok(()) => return status,
                        Err(why) => format!("{why}\nstatus: {}", brief_status(&status)),
                    },
                    Err(e) => format!("/api/status is not JSON ({e}): {body}"),
                },
                Err(e) => format!("GET /api/status: {e}"),
            };
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until {what} (node {})\nlast seen: {why}\n{}",
                self.name,
                self.describe()
            );
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the node's stderr contains `needle` at least `count` times.
    #[track_caller]
    pub fn wait_log_count(&mut self, needle: &str, count: usize, deadline: Duration) {
        let start = Instant::now();
        loop {
            self.assert_running();
            let have = self.stderr().matches(needle).count();
            if have >= count {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until node {} logs {needle:?} {count} \
                 time(s) (seen {have})\n{}",
                self.name,
                self.describe()
            );
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal)
            .unwrap_or_else(|e| panic!("kill -{signal:?} node {}: {e}", self.name));
    }

    /// Sends SIGHUP (reload the config, reopen the log file).
    pub fn sighup(&self) {
        self.signal(Signal::HUP);
    }

    /// Sends SIGTERM and waits (up to [`START_DEADLINE`]) for the node to exit; panics unless
    /// it exits with code 0.
    #[track_caller]
    pub fn stop(&mut self) {
        self.signal(Signal::TERM);
        let status = self.wait_exit(START_DEADLINE);
        assert_eq!(
            status.code(),
            Some(0),
            "node {} did not exit cleanly after SIGTERM ({status})\n{}",
            self.name,
            self.describe()
        );
    }

    /// Waits for the process to exit and reaps it; kills it and panics after `deadline`.
    #[track_caller]
    fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if start.elapsed() > deadline {
                self.kill();
                panic!(
                    "node {} did not exit within {deadline:?}\n{}",
                    self.name,
                    self.describe()
                );
            }
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILLs the node and reaps it (nothing when it is not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again from its config file, after [`NodeProcess::stop`] or
    /// [`NodeProcess::kill`]; `text`, when given, replaces the file first. A node that
    /// listens is started on the address it had (the config must say so); while that port is
    /// still held, starting is retried up to [`START_DEADLINE`].
    pub fn restart(&mut self, text: Option<&str>) {
        if let Some(text) = text {
            write_config(&self.config, text);
        }
        let start = Instant::now();
        loop {
            let log_len = self.stderr().len();
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            match attempt {
                Ok(()) => return,
                Err(e) => {
                    self.kill();
                    let tail = self.stderr().get(log_len..).unwrap_or_default().to_owned();
                    if !tail.contains("cannot listen") || start.elapsed() > START_DEADLINE {
                        std::panic::resume_unwind(e);
                    }
                    // A condition wait: the deadline above bounds it, the sleep only spaces
                    // the attempts.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (up to [`DEADLINE`]) until `dst` mirrors `src`; `what` names the step. Fails early
/// if one of `nodes` exits; a failure shows the differences and every node's stderr tail.
#[track_caller]
pub fn wait_mirror(nodes: &mut [&mut NodeProcess], src: &Path, dst: &Path, what: &str) {
    let start = Instant::now();
    loop {
        for node in nodes.iter_mut() {
            node.assert_running();
        }
        let why = match mirror_diff(src, dst) {
            Ok(()) => return,
            Err(why) => why,
        };
        if start.elapsed() > DEADLINE {
            let logs: Vec<String> = nodes.iter().map(|n| n.describe()).collect();
            panic!(
                "timed out after {DEADLINE:?} waiting until DST mirrors SRC after {what}\n\
                 last seen: {why}\n{}",
                logs.join("\n")
            );
        }
        // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
        std::thread::sleep(POLL);
    }
}

/// A compact view of a status for failure messages: each folder's targets with their state
/// and main counters.
pub fn brief_status(status: &Value) -> String {
    let mut out = String::new();
    for f in status["folders"].as_array().into_iter().flatten() {
        for t in f["targets"].as_array().into_iter().flatten() {
            let c = &t["counters"];
            out.push_str(&format!(
                "\n  {} → {} ({}): {} created {} hashed {} sent {} entries {} seq {}/{}",
                f["id"].as_str().unwrap_or("?"),
                t["name"].as_str().unwrap_or("?"),
                t["kind"].as_str().unwrap_or("?"),
                t["state"],
                c["files_created"],
                c["bytes_hashed"],
                c["bytes_sent"],
                c["entries_sent"],
                t["applied_seq"],
                t["source_seq"],
            ));
        }
    }
    out
}

/// The target `target` of folder `folder` in a status; `Err` says what the status holds.
pub fn target<'a>(status: &'a Value, folder: &str, target: &str) -> Result<&'a Value, String> {
    let folders = status["folders"]
        .as_array()
        .ok_or("the status has no folder list")?;
    let f = folders
        .iter()
        .find(|f| f["id"] == folder)
        .ok_or_else(|| format!("no folder {folder:?} in the status"))?;
    f["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == target)
        .ok_or_else(|| format!("folder {folder:?} has no target {target:?}"))
}

/// The state word (`in-sync`, `offline`, …) of a target in a status.
pub fn state_of(target: &Value) -> &str {
    target["state"]["state"].as_str().unwrap_or("?")
}

/// `Ok` when every target of every folder in `status` whose role is `role` is `in-sync`.
pub fn all_in_sync(status: &Value, role: &str) -> Result<(), String> {
    let mut seen = 0;
    for f in status["folders"].as_array().into_iter().flatten() {
        if f["role"] != role {
            continue;
        }
        for t in f["targets"].as_array().into_iter().flatten() {
            seen += 1;
            if state_of(t) != "in-sync" {
                return Err(format!(
                    "folder {} target {} is {}",
                    f["id"], t["name"], t["state"]
                ));
            }
        }
    }
    if seen == 0 {
        return Err(format!("no {role} targets in the status"));
    }
    Ok(())
}

/// Runs `ferry ARGS…` in `cwd` and waits up to `deadline` for it to exit; panics (after
/// killing it) if it is still running then. For commands expected to fail quickly, such as
/// `ferry run` with an invalid config.
pub fn ferry_exits_within(cwd: &Path, args: &[&str], deadline: Duration) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory for the output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let create =
        |p: &Path| File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    let mut cmd = Command::new(ferry_bin());
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("FERRY_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path));
    let command = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command} did not exit within {deadline:?}\n--- stderr ---\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
        std::thread::sleep(POLL);
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        command,
    }
}
