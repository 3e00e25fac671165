//! Background services the network benchmarks run on loopback: `byteproxy.py` (counts the
//! payload bytes of every connection through it), an rsync daemon behind such a proxy, and
//! `ferry serve`. Each is stopped when dropped.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::benchkit::{setup, Failure, Result};
use crate::procfs::{self, CpuTicks};
use crate::tools::{failed_message, file_tail, run_timed, run_tool};

/// How long to wait for a service to come up, for the proxy to account a finished
/// connection, and for a service to stop after SIGTERM.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(setup("finding a free loopback port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(setup("finding a free loopback port"))
}

/// Polls `ready` every 10 ms until it holds; fails after [`SERVICE_TIMEOUT`].
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > SERVICE_TIMEOUT {
            return Err(Failure::Setup(format!(
                "{what} did not happen within {SERVICE_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Fails if `child` (the service called `name`) has exited.
fn check_alive(name: &str, child: &mut Child) -> Result<()> {
    match child.try_wait() {
        Ok(Some(status)) => Err(Failure::Setup(format!("the {name} exited ({status})"))),
        Ok(None) => Ok(()),
        Err(e) => Err(Failure::Setup(format!("checking on the {name}: {e}"))),
    }
}

/// Sends SIGTERM to `child` and waits for it (SIGKILL after [`SERVICE_TIMEOUT`]); returns its
/// exit status, or `None` if it had to be killed or could not be waited for.
pub fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // The child may exit between the check and the signal; then the signal fails harmlessly.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    );
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() <= SERVICE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The byte-counting proxy
// ---------------------------------------------------------------------------------------------

/// The proxy's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Payload bytes client → server, all connections so far.
    pub c2s: u64,
    /// Payload bytes server → client.
    pub s2c: u64,
    /// Connections accepted so far.
    pub connections: u64,
    /// Connections still open.
    pub active: u64,
    /// Incremented on every write of the stats file.
    pub seq: u64,
}

impl ProxyCounts {
    /// Parses the proxy's stats file.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let g = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(ProxyCounts {
            c2s: g("c2s")?,
            s2c: g("s2c")?,
            connections: g("connections")?,
            active: g("active")?,
            seq: g("seq")?,
        })
    }

    /// The bytes that crossed the proxy between `before` and `self`: (c2s, s2c).
    pub fn since(&self, before: &ProxyCounts) -> (u64, u64) {
        (
            self.c2s.saturating_sub(before.c2s),
            self.s2c.saturating_sub(before.s2c),
        )
    }
}

/// `byteproxy.py` listening on a free loopback port, forwarding to `127.0.0.1:target`.
pub struct ByteProxy {
    child: Child,
    port: u16,
    stats: PathBuf,
}

impl ByteProxy {
    /// Starts `python script` in front of `127.0.0.1:target`, writing its counters to
    /// `stats` (replaced), and waits until it listens.
    pub fn start(python: &Path, script: &Path, target: u16, stats: PathBuf) -> Result<Self> {
        match fs::remove_file(&stats) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::Setup(format!("removing {}: {e}", stats.display()))),
        }
        let port = free_port()?;
        let child = Command::new(python)
            .arg(script)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--target")
            .arg(format!("127.0.0.1:{target}"))
            .arg("--out")
            .arg(&stats)
            .arg("--interval")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(setup(format!("spawning {}", script.display())))?;
        let mut proxy = ByteProxy { child, port, stats };
        // The proxy writes its stats file right after it starts listening.
        let mut exited = None;
        wait_until("the byte proxy listening", || {
            if let Err(f) = check_alive("byte proxy", &mut proxy.child) {
                exited = Some(f);
                return true;
            }
            proxy.stats.is_file()
        })?;
        match exited {
            Some(f) => Err(f),
            None => Ok(proxy),
        }
    }

    /// The port the proxy listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fails if the proxy has exited.
    pub fn check(&mut self) -> Result<()> {
        check_alive("byte proxy", &mut self.child)
    }

    /// The CPU time the proxy has used so far (`None` if it cannot be read).
    pub fn cpu(&self) -> Option<CpuTicks> {
        procfs::cpu_ticks(self.child.id()).ok()
    }

    fn read_stats(&self) -> Option<ProxyCounts> {
        ProxyCounts::parse(&fs::read(&self.stats).ok()?)
    }

    /// A fresh snapshot of the counters (SIGUSR1, then wait for the new write).
    pub fn snapshot(&mut self) -> Result<ProxyCounts> {
        self.check()?;
        let before = self.read_stats().map_or(0, |c| c.seq);
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::USR1,
        )
        .map_err(setup("signalling the byte proxy"))?;
        let mut got = None;
        wait_until("the byte proxy writing a snapshot", || {
            got = self.read_stats().filter(|c| c.seq > before);
            got.is_some()
        })?;
        got.ok_or_else(|| Failure::Setup("no proxy snapshot".into()))
    }

    /// Waits until the proxy has seen at least `connections` connections and none is open,
    /// and returns the counters then.
    pub fn settled(&mut self, connections: u64) -> Result<ProxyCounts> {
        let start = Instant::now();
        loop {
            let c = self.snapshot()?;
            if c.connections >= connections && c.active == 0 {
                return Ok(c);
            }
            if start.elapsed() > SERVICE_TIMEOUT {
                return Err(Failure::Setup(format!(
                    "the byte proxy still has {} active connection(s) of {} (expected \
                     {connections} closed) after {SERVICE_TIMEOUT:?}",
                    c.active, c.connections
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ByteProxy {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// One client run measured through a [`ByteProxy`].
#[derive(Debug)]
pub struct Transfer {
    /// Wall time of the client process, spawn to exit.
    pub wall: Duration,
    /// Payload bytes client → server.
    pub c2s: u64,
    /// Payload bytes server → client.
    pub s2c: u64,
    /// The client's exit status and output.
    pub output: Output,
    /// The CPU time the client used (see [`crate::tools::Timed::cpu`]).
    pub cpu: Option<CpuTicks>,
    /// The CPU time the proxy used from just before the client started until the client's
    /// connections were all closed.
    pub proxy_cpu: Option<CpuTicks>,
}

impl Transfer {
    /// Payload bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.c2s + self.s2c
    }
}

/// Runs `program args…` as a client of the service behind `proxy` (which must have no open
/// connection), timed from spawn to exit and killed after `deadline`; returns its wall time
/// and the bytes it exchanged once all its connections are closed. A client that fails
/// (or overruns) is a [`Failure::Wrong`] when `wrong`, else a [`Failure::Setup`], with
/// `context` (e.g. a server log tail) appended to the message.
pub fn timed_client(
    what: &str,
    proxy: &mut ByteProxy,
    program: &Path,
    args: &[&OsStr],
    deadline: Duration,
    wrong: bool,
    context: impl FnOnce() -> String,
) -> Result<Transfer> {
    let before = proxy.settled(0)?;
    let proxy_before = proxy.cpu();
    let mut cmd = Command::new(program);
    cmd.args(args);
    let t = run_timed(&mut cmd, deadline)
        .map_err(setup(format!("{what}: running {}", program.display())))?;
    if t.timed_out || !t.output.status.success() {
        let mut msg = failed_message(what, program, args, &t.output);
        if t.timed_out {
            let _ = write!(msg, "\n(killed after {deadline:?})");
        }
        msg.push_str(&context());
        return Err(if wrong {
            Failure::Wrong(msg)
        } else {
            Failure::Setup(msg)
        });
    }
    let after = proxy.settled(before.connections + 1)?;
    let (c2s, s2c) = after.since(&before);
    let proxy_cpu = proxy_before.zip(proxy.cpu()).map(|(b, a)| a.since(b));
    Ok(Transfer {
        wall: t.wall,
        c2s,
        s2c,
        output: t.output,
        cpu: t.cpu,
        proxy_cpu,
    })
}

// ---------------------------------------------------------------------------------------------
// rsync daemon behind the proxy
// ---------------------------------------------------------------------------------------------

/// `rsync --daemon` serving one writable module on loopback, with a [`ByteProxy`] in front.
/// Both are stopped when dropped.
pub struct RsyncService {
    daemon: Child,
    proxy: ByteProxy,
    module: String,
    log: PathBuf,
}

impl RsyncService {
    /// Starts `rsync --daemon` serving `module` = `path` (which should exist), with its
    /// configuration, log and the proxy's stats in `dir` (created if missing); `by` names
    /// the benchmark in the generated configuration.
    pub fn start(
        rsync: &Path,
        python: &Path,
        byteproxy: &Path,
        dir: &Path,
        module: &str,
        path: &Path,
        by: &str,
    ) -> Result<Self> {
        fs::create_dir_all(dir).map_err(setup(format!("creating {}", dir.display())))?;
        let conf = dir.join("rsyncd.conf");
        let log = dir.join("rsyncd.log");
        let ids = if rustix::process::geteuid().is_root() {
            "    uid = root\n    gid = root\n"
        } else {
            ""
        };
        let text = format!(
            "# generated by {by}\nlog file = {}\n\n[{module}]\n    path = {}\n    \
             use chroot = no\n    read only = no\n{ids}",
            log.display(),
            path.display()
        );
        fs::write(&conf, text).map_err(setup(format!("writing {}", conf.display())))?;

        let daemon_port = free_port()?;
        let mut conf_arg = OsString::from("--config=");
        conf_arg.push(&conf);
        let mut daemon = Command::new(rsync)
            .arg("--daemon")
            .arg("--no-detach")
            .arg(conf_arg)
            .arg("--address=127.0.0.1")
            .arg(format!("--port={daemon_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(setup(format!("spawning {} --daemon", rsync.display())))?;
        let started = ByteProxy::start(python, byteproxy, daemon_port, dir.join("proxy.json"))
            .and_then(|proxy| {
                let mut exited = None;
                wait_until("the rsync daemon accepting connections", || {
                    if let Err(f) = check_alive("rsync daemon", &mut daemon) {
                        exited = Some(f);
                        return true;
                    }
                    TcpStream::connect(("127.0.0.1", daemon_port)).is_ok()
                })?;
                match exited {
                    Some(f) => Err(f),
                    None => Ok(proxy),
                }
            });
        match started {
            Ok(proxy) => Ok(RsyncService {
                daemon,
                proxy,
                module: module.to_string(),
                log,
            }),
            Err(f) => {
                terminate(&mut daemon);
                Err(Failure::Setup(format!(
                    "{}{}",
                    f.message(),
                    file_tail("rsync daemon log", &log)
                )))
            }
        }
    }

    /// `rsync://127.0.0.1:PROXY/MODULE/`.
    pub fn url(&self) -> String {
        format!("rsync://127.0.0.1:{}/{}/", self.proxy.port(), self.module)
    }

    /// The daemon's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails if the daemon or the proxy has exited.
    pub fn check(&mut self) -> Result<()> {
        check_alive("rsync daemon", &mut self.daemon)?;
        self.proxy.check()
    }

    /// The CPU time the daemon has used so far with the connections it served: it forks a
    /// process per connection and reaps it when it ends, so this waits (bounded) until it
    /// has no child left. `None` if it cannot be read or a child outlives the wait.
    pub fn served_cpu(&self) -> Option<CpuTicks> {
        let pid = self.daemon.id();
        let start = Instant::now();
        while !procfs::child_pids(pid).ok()?.is_empty() {
            if start.elapsed() > SERVICE_TIMEOUT {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        procfs::cpu_ticks_with_children(pid).ok()
    }

    /// Runs `rsync ARGS… SRC/ URL[SUBDIR/]` as the client (see [`timed_client`]): into the
    /// module's directory, or into its subdirectory `subdir` (rsync creates it). A failure
    /// is a [`Failure::Setup`] (rsync is the reference, not the subject).
    pub fn push(
        &mut self,
        what: &str,
        rsync: &Path,
        args: &[&OsStr],
        src: &Path,
        subdir: Option<&str>,
        deadline: Duration,
    ) -> Result<Transfer> {
        self.check()?;
        let mut src_slash = src.as_os_str().to_os_string();
        src_slash.push("/");
        let mut url = self.url();
        if let Some(d) = subdir {
            url.push_str(d);
            url.push('/');
        }
        let mut all: Vec<&OsStr> = args.to_vec();
        all.push(&src_slash);
        all.push(OsStr::new(&url));
        let log = self.log.clone();
        timed_client(what, &mut self.proxy, rsync, &all, deadline, false, || {
            file_tail("rsync daemon log", &log)
        })
    }
}

impl Drop for RsyncService {
    fn drop(&mut self) {
        terminate(&mut self.daemon);
    }
}

// ---------------------------------------------------------------------------------------------
// ferry serve
// ---------------------------------------------------------------------------------------------

/// What `ferry serve` is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct ServeSpec<'a> {
    /// The ferry binary.
    pub ferry: &'a Path,
    /// The server's `--home`.
    pub home: &'a Path,
    /// `--listen` (e.g. 127.0.0.1:0).
    pub listen: &'a str,
    /// The folder's name in the URL.
    pub folder: &'a str,
    /// Where the folder is received into.
    pub path: &'a Path,
    /// The client's node id (`--peer`).
    pub peer: &'a str,
    /// `--no-fsync`.
    pub no_fsync: bool,
    /// Where its stderr (the log) goes (replaced).
    pub log: &'a Path,
}

/// A running `ferry serve`, stopped (SIGTERM) when dropped.
pub struct FerryServer {
    child: Child,
    addr: SocketAddr,
    node: String,
    log: PathBuf,
}

/// Parses `ferry serve`'s first stdout line, `listening ADDR node ID`.
pub fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    let mut w = line.split_whitespace();
    if w.next()? != "listening" {
        return None;
    }
    let addr = w.next()?.parse().ok()?;
    if w.next()? != "node" {
        return None;
    }
    let id = w.next()?.to_string();
    w.next().is_none().then_some((addr, id))
}

impl FerryServer {
    /// Starts `ferry serve` and waits (up to [`SERVICE_TIMEOUT`]) for its `listening` line.
    pub fn start(spec: &ServeSpec<'_>) -> Result<Self> {
        let log_file = fs::File::create(spec.log)
            .map_err(setup(format!("creating {}", spec.log.display())))?;
        let mut folder = OsString::from(spec.folder);
        folder.push("=");
        folder.push(spec.path);
        let mut cmd = Command::new(spec.ferry);
        cmd.arg("serve")
            .arg("--home")
            .arg(spec.home)
            .arg("--listen")
            .arg(spec.listen)
            .arg("--folder")
            .arg(folder)
            .arg("--peer")
            .arg(spec.peer);
        if spec.no_fsync {
            cmd.arg("--no-fsync");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(setup(format!("spawning {} serve", spec.ferry.display())))?;
        let Some(stdout) = child.stdout.take() else {
            terminate(&mut child);
            return Err(Failure::Setup("ferry serve: no stdout pipe".into()));
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let first = r.read_line(&mut line).map(|_| line);
            // The receiver may have given up waiting; then nobody needs the line.
            let _ = tx.send(first);
            // Keep draining so that later output can never block the server on a full pipe.
            let _ = io::copy(&mut r, &mut io::sink());
        });
        let fail = |child: &mut Child, why: String| {
            let status = terminate(child).map_or_else(|| "killed".to_string(), |s| s.to_string());
            Failure::Wrong(format!(
                "ferry serve did not start ({why}; {status}){}",
                file_tail("ferry serve log", spec.log)
            ))
        };
        let line = match rx.recv_timeout(SERVICE_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(fail(&mut child, format!("reading its stdout: {e}"))),
            Err(_) => {
                return Err(fail(
                    &mut child,
                    format!("no `listening` line within {SERVICE_TIMEOUT:?}"),
                ))
            }
        };
        let Some((addr, node)) = parse_listening(&line) else {
            let why = if line.is_empty() {
                "it closed stdout without a `listening ADDR node ID` line".to_string()
            } else {
                format!("its first stdout line {line:?} is not `listening ADDR node ID`")
            };
            return Err(fail(&mut child, why));
        };
        Ok(FerryServer {
            child,
            addr,
            node,
            log: spec.log.to_path_buf(),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node id it announced.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its log file (stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The CPU time the server has used so far (`None` if it cannot be read).
    pub fn cpu(&self) -> Option<CpuTicks> {
        procfs::cpu_ticks(self.child.id()).ok()
    }

    /// Fails (as a wrong result of ferry) if the server has exited.
    pub fn check(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Failure::Wrong(format!(
                "ferry serve exited unexpectedly ({status}){}",
                file_tail("ferry serve log", &self.log)
            ))),
            Err(e) => Err(Failure::Setup(format!("checking on ferry serve: {e}"))),
        }
    }

    /// Stops the server with SIGTERM; a non-zero exit (or a hang) is a [`Failure::Wrong`].
    pub fn stop(mut self) -> Result<()> {
        match terminate(&mut self.child) {
            Some(s) if s.success() => Ok(()),
            other => Err(Failure::Wrong(format!(
                "ferry serve did not stop cleanly on SIGTERM ({}){}",
                other.map_or_else(
                    || format!("still running after {SERVICE_TIMEOUT:?}, killed"),
                    |s| s.to_string()
                ),
                file_tail("ferry serve log", &self.log)
            ))),
        }
    }
}

impl Drop for FerryServer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// `ferry id --home HOME`: the node id (created on first use).
pub fn node_id(ferry: &Path, home: &Path) -> Result<String> {
    let what = format!("ferry id --home {}", home.display());
    let out = run_tool(
        &what,
        ferry,
        &[OsStr::new("id"), OsStr::new("--home"), home.as_os_str()],
    )
    .map_err(|f| Failure::Wrong(f.message().to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(id), None) => Ok(id.to_string()),
        _ => Err(Failure::Wrong(format!(
            "{what}: expected one node id on stdout, got {:?}",
            text.trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let (addr, id) = parse_listening("listening 127.0.0.1:4321 node ABC-DEF\n").unwrap();
        assert_eq!(addr, "127.0.0.1:4321".parse::<SocketAddr>().unwrap());
        assert_eq!(id, "ABC-DEF");
        assert!(parse_listening("").is_none());
        assert!(parse_listening("listening 127.0.0.1:4321").is_none());
        assert!(parse_listening("listening nowhere node X").is_none());
        assert!(parse_listening("listening 127.0.0.1:1 node X extra").is_none());
        assert!(parse_listening("hello 127.0.0.1:1 node X").is_none());
    }

    #[test]
    fn parses_proxy_stats() {
        let c = ProxyCounts::parse(
            br#"{"c2s": 10, "s2c": 20, "connections": 2, "active": 0, "seq": 7, "started": 1.5}"#,
        )
        .unwrap();
        assert_eq!(
            (c.c2s, c.s2c, c.connections, c.active, c.seq),
            (10, 20, 2, 0, 7)
        );
        let before = ProxyCounts {
            c2s: 4,
            s2c: 5,
            ..c
        };
        assert_eq!(c.since(&before), (6, 15));
        assert!(ProxyCounts::parse(br#"{"c2s": 1}"#).is_none());
        assert!(ProxyCounts::parse(b"nope").is_none());
    }
}
