//! A headless Chromium driven over the DevTools protocol, for tests of web pages: launch it,
//! navigate, evaluate JavaScript, and wait (with a deadline) until an expression holds.
//!
//! The browser runs in its own process group, which `Drop` kills, so no renderer outlives the
//! test. A missing `chromium` binary fails the test: CI installs it (`.ci/run`), and a skipped
//! browser test would hide a broken page.

use std::env;
use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use serde_json::{json, Value};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};

use super::live::DEADLINE;

/// How often [`Chromium::wait_for`] re-evaluates its condition.
const POLL: Duration = Duration::from_millis(50);

/// A running headless browser with one page attached.
pub struct Chromium {
    child: Child,
    socket: WebSocket<TcpStream>,
    /// The page's flattened DevTools session.
    session: String,
    next_id: u64,
    /// Everything the browser printed on stderr, for failure messages.
    log: Arc<Mutex<String>>,
    _profile: TempDir,
}

/// The browser binary: `$FERRY_CHROMIUM`, else `chromium` on `PATH`; panics saying how to
/// install it when there is none.
fn binary() -> PathBuf {
    if let Some(path) = env::var_os("FERRY_CHROMIUM") {
        return PathBuf::from(path);
    }
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `chromium` binary is not on PATH, and the dashboard's browser test needs it: \
                 install it with `apt-get install -y chromium` (.ci/run installs it in CI), or \
                 point FERRY_CHROMIUM at a Chromium or Chrome binary"
            )
        })
}

impl Chromium {
    /// Starts a headless browser and opens a blank page in it.
    pub fn launch() -> Chromium {
        let profile = tempfile::tempdir().expect("a temporary browser profile");
        let mut child = Command::new(binary())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let url = devtools_url(child.stderr.take().expect("piped stderr"), &log);
        let url = match url {
            Some(url) => url,
            None => {
                kill(&mut child);
                panic!(
                    "chromium did not print its DevTools address within {DEADLINE:?}; stderr:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let mut browser = Chromium {
            child,
            socket: connect(&url),
            session: String::new(),
            next_id: 0,
            log,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].clone();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("attachToTarget returns a sessionId")
            .to_owned();
        browser
    }

    /// Starts loading `url` in the page (returns before it has loaded: wait for a condition).
    pub fn navigate(&mut self, url: &str) {
        let reply = self.call("Page.navigate", json!({"url": url}));
        assert!(
            reply.get("errorText").is_none(),
            "navigating to {url}: {reply}"
        );
    }

    /// Evaluates `expression` in the page and returns its value, or the exception it threw.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let reply = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(exception) = reply.get("exceptionDetails") {
            return Err(format!("{expression} threw {exception}"));
        }
        Ok(reply["result"]["value"].clone())
    }

    /// Polls `expression` until it evaluates to `true`; after [`DEADLINE`] panics with `what`,
    /// the last value and the page's HTML.
    #[track_caller]
    pub fn wait_for(&mut self, expression: &str, what: &str) {
        let start = Instant::now();
        loop {
            let last = match self.eval(expression) {
                Ok(Value::Bool(true)) => return,
                other => other,
            };
            if start.elapsed() > DEADLINE {
                let html = self
                    .eval("document.documentElement.outerHTML")
                    .map(|v| v.as_str().unwrap_or_default().chars().take(4000).collect())
                    .unwrap_or_else(|e| e);
                panic!(
                    "timed out after {DEADLINE:?} waiting until {what}\n\
                     condition: {expression}\nlast value: {last:?}\npage:\n{html}"
                );
            }
            // A condition wait: the deadline above bounds it, the sleep only spaces the checks.
            std::thread::sleep(POLL);
        }
    }

    /// Sends one DevTools command and returns its result, skipping the events in between.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            request["sessionId"] = json!(self.session);
        }
        let log = Arc::clone(&self.log);
        let fail = |what: String| -> ! {
            panic!(
                "DevTools {method}: {what}\nchromium stderr:\n{}",
                log.lock().unwrap()
            )
        };
        if let Err(e) = self.socket.send(Message::text(request.to_string())) {
            fail(format!("sending: {e}"));
        }
        loop {
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(e) => fail(format!("reading: {e}")),
            };
            let reply: Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| fail(format!("bad JSON {text}: {e}")));
            if reply["id"] != id {
                continue;
            }
            if let Some(error) = reply.get("error") {
                fail(format!("error {error}"));
            }
            return reply["result"].clone();
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Kills the browser's whole process group (renderers, zygotes) and reaps the browser.
fn kill(child: &mut Child) {
    let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    let _ = child.wait();
}

/// Reads stderr on a thread until the `DevTools listening on ws://…` line, and keeps draining
/// it into `log` afterwards so that the browser never blocks on a full pipe.
fn devtools_url(stderr: std::process::ChildStderr, log: &Arc<Mutex<String>>) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
            let mut log = log.lock().unwrap();
            if log.len() < 64 * 1024 {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    rx.recv_timeout(DEADLINE).ok()
}

/// Opens the browser-level DevTools WebSocket at `url` (`ws://127.0.0.1:PORT/devtools/…`).
fn connect(url: &str) -> WebSocket<TcpStream> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("unexpected DevTools address {url}"));
    let stream =
        TcpStream::connect(host).unwrap_or_else(|e| panic!("connecting to DevTools {host}: {e}"));
    // A browser that stops answering fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("setting a read timeout");
    let (socket, _) = tungstenite::client(url, stream)
        .unwrap_or_else(|e| panic!("DevTools WebSocket handshake with {url}: {e}"));
    socket
}
