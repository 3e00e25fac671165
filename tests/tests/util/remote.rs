//! Remote test support: node identities and a `ferry serve` process on 127.0.0.1.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::live::wait_until_blocking;
use super::{ferry, ferry_bin};

/// How long a server gets to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The node id of the identity under `home` (created on first use).
pub fn node_id(home: &Path) -> String {
    let home = home.to_str().expect("UTF-8 temp path");
    let out = ferry(["id", "--home", home]);
    out.assert_success();
    out.stdout.trim().to_owned()
}

/// `ferry://NODE@ADDR/FOLDER`.
pub fn url(node: &str, addr: &str, folder: &str) -> String {
    format!("ferry://{node}@{addr}/{folder}")
}

/// A running `ferry serve`, its stderr going to a file. Killed on drop.
pub struct ServeProcess {
    child: Child,
    /// The address it listens on (`127.0.0.1:PORT`).
    pub addr: String,
    /// Its node id.
    pub node: String,
    stderr_path: PathBuf,
    args: Vec<String>,
}

impl ServeProcess {
    /// Starts `ferry serve --home HOME --listen LISTEN ARGS…` (LISTEN `127.0.0.1:0` for a free
    /// port) and waits until it listens. `args` carries `--folder` and `--peer` flags.
    pub fn spawn(home: &Path, listen: &str, args: &[String], stderr_path: &Path) -> ServeProcess {
        let mut all = vec![
            "serve".to_owned(),
            "--home".to_owned(),
            home.to_str().expect("UTF-8 temp path").to_owned(),
            "--listen".to_owned(),
            listen.to_owned(),
        ];
        all.extend(args.iter().cloned());
        Self::start(all, stderr_path)
    }

    fn start(args: Vec<String>, stderr_path: &Path) -> ServeProcess {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", stderr_path.display()));
        let mut child = Command::new(ferry_bin())
            .args(&args)
            .env_remove("FERRY_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ferry {args:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        // The first stdout line is `listening ADDR node ID`; reading it blocks until then.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_DEADLINE).unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        let (addr, node) = match words.as_slice() {
            ["listening", addr, "node", node] => ((*addr).to_owned(), (*node).to_owned()),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ferry serve did not start (stdout {line:?})\n--- stderr ---\n{}",
                    fs::read_to_string(stderr_path).unwrap_or_default()
                )
            }
        };
        ServeProcess {
            child,
            addr,
            node,
            stderr_path: stderr_path.to_owned(),
            args,
        }
    }

    /// The `ferry://` URL of `folder` on this server.
    pub fn url(&self, folder: &str) -> String {
        url(&self.node, &self.addr, folder)
    }

    /// Everything the server has logged so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until the server's log contains `needle`.
    pub fn wait_log(&self, needle: &str, deadline: Duration) {
        wait_until_blocking(deadline, &format!("the server logs {needle:?}"), || {
            let log = self.stderr();
            if log.contains(needle) {
                Ok(())
            } else {
                Err(format!("--- server stderr ---\n{log}"))
            }
        });
    }

    /// Panics, with the log, if the server has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("ferry serve exited ({status})\n{}", self.stderr());
        }
    }

    /// SIGKILLs the server and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same server again on the same address (after [`ServeProcess::kill`]);
    /// retries while the port is still held, up to a deadline.
    pub fn restart(&mut self) {
        let mut args = self.args.clone();
        let at = args.iter().position(|a| a == "--listen").expect("--listen") + 1;
        args[at] = self.addr.clone();
        let start = Instant::now();
        loop {
            let log_len = self.stderr().len();
            let attempt = std::panic::catch_unwind(|| Self::start(args.clone(), &self.stderr_path));
            match attempt {
                Ok(p) => {
                    // Dropping the old value reaps the killed process.
                    *self = p;
                    return;
                }
                Err(_) if start.elapsed() < START_DEADLINE => {
                    let tail = self.stderr().get(log_len..).unwrap_or_default().to_owned();
                    assert!(tail.contains("cannot listen"), "restart failed:\n{tail}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `path` and returns it as a string (for `--folder NAME=PATH`).
pub fn dir_arg(path: &Path) -> String {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    path.to_str().expect("UTF-8 temp path").to_owned()
}
