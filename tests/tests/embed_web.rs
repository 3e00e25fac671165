//! The `embed_web` example's app ([`ferry_examples::embed`]) served in-process on its own
//! actix system: a mirror reaches DST, `/replications` reports it live, its event stream
//! carries a live change, and `POST .../stop` stops and forgets it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_examples::embed::{self, Mirror};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::util::live::{wait_until_blocking, DEADLINE};
use crate::util::tempdir;

/// The app on its own thread's actix system; dropping it stops the app and the system.
struct App {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl App {
    fn start(mirrors: Vec<Mirror>) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let served = embed::serve(listener, mirrors)
                    .await
                    .expect("the app starts");
                ready_tx.send(served.addr()).unwrap();
                let _ = stopped.await;
                served.stop().await;
            });
        });
        let addr = ready_rx
            .recv_timeout(DEADLINE)
            .expect("the app reports its address");
        App {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let thread = self.thread.take().unwrap();
        // Joining a panicked app thread while unwinding would abort; its panic is reported.
        if !std::thread::panicking() {
            thread.join().expect("the app thread ends cleanly");
        }
    }
}

#[test]
fn serves_status_events_and_stop() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("photos"), tmp.path().join("backup"));
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello").unwrap();
    let app = App::start(vec![Mirror {
        source: src.clone(),
        target: dst.clone(),
    }]);

    wait_until_blocking(DEADLINE, "DST has hello.txt", || {
        file_is(&dst.join("hello.txt"), b"hello")
    });
    wait_until_blocking(DEADLINE, "/replications shows photos live", || {
        let (status, body) = call(app.addr, "GET", "/replications");
        let list: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match list.as_array().map(Vec::as_slice) {
            Some([r]) if status == 200 && r["folder"] == "photos" && r["state"] == "live" => Ok(()),
            _ => Err(format!("{status} {body}")),
        }
    });
    let (_, body) = call(app.addr, "GET", "/replications");
    let list: Value = serde_json::from_str(&body).unwrap();
    let r = &list[0];
    assert_eq!(r["target"], dst.to_str().unwrap(), "{r}");
    assert!(r["counters"]["created"].as_u64() >= Some(1), "{r}");
    assert!(
        r["actors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "applier" && a["running"] == true),
        "{r}"
    );

    // The stream answers only once subscribed, so the change below cannot be missed.
    let mut events = open(app.addr, "GET", "/replications/photos/events");
    let mut seen = String::new();
    read_until(&mut events, &mut seen, ": subscribed");
    assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen}");
    assert!(seen.to_lowercase().contains("text/event-stream"), "{seen}");
    std::fs::write(src.join("new.txt"), b"new").unwrap();
    read_until(&mut events, &mut seen, "new.txt");
    let line = seen
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("new.txt"))
        .unwrap();
    let event: Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
    assert_eq!(event["folder"], "photos", "{event}");
    assert_eq!(event["kind"], "created", "{event}");
    assert_eq!(event["text"], "created new.txt", "{event}");
    assert!(event["at_ms"].as_u64() > Some(0), "{event}");

    let (status, body) = call(app.addr, "POST", "/replications/photos/stop");
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(app.addr, "GET", "/replications");
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, body) = call(app.addr, "POST", "/replications/photos/stop");
    assert_eq!(status, 404, "{body}");
    let (status, _) = call(app.addr, "GET", "/replications/photos/events");
    assert_eq!(status, 404);
}

#[test]
fn mirror_flags_are_checked() {
    for bad in ["no-equals-sign", "=/dst", "/src="] {
        let err = bad.parse::<Mirror>().unwrap_err();
        assert!(err.contains("SRC=DST"), "{bad}: {err}");
    }
}

/// `Ok` when `path` holds exactly `want`.
fn file_is(path: &Path, want: &[u8]) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => Err(format!("{} holds {have:?}", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// Sends `method path` with an empty body; the response is read from the returned stream.
fn open(addr: SocketAddr, method: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    // Short reads, so that `read_until` checks its deadline between them.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream
}

/// The status code and body of `method path`.
fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = open(addr, method, path);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// Reads from `stream` into `seen` until it contains `needle`; panics after [`DEADLINE`].
fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {needle:?}; received:\n{seen}"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("the stream ended before {needle:?}; received:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
    }
}
