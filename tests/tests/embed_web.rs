//! The `embed_web` example's app ([`ferry_examples::embed`]) served in-process on its own
//! actix system: a mirror reaches DST, `/replications` reports it live, its event stream
//! carries a live change, and `POST .../stop` stops and forgets it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use ferry_examples::embed::{self, Mirror};
use serde_json::Value;

use crate::util::hosted::{Hosted, StopFuture};
use crate::util::http;
use crate::util::live::{wait_until_blocking, DEADLINE};
use crate::util::tempdir;

/// The app on its own thread's actix system; dropping it stops the app and the system.
fn start_app(mirrors: Vec<Mirror>) -> Hosted {
    Hosted::start(DEADLINE, move || async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let served = embed::serve(listener, mirrors)
            .await
            .expect("the app starts");
        let addr = served.addr();
        let stop: StopFuture = Box::pin(async move { served.stop().await });
        (addr, stop)
    })
}

#[test]
fn serves_status_events_and_stop() {
    let tmp = tempdir();
    let (src, dst) = (tmp.path().join("photos"), tmp.path().join("backup"));
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello").unwrap();
    let app = start_app(vec![Mirror {
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
    let mut events = http::open(app.addr, "GET", "/replications/photos/events", "close");
    let mut seen = String::new();
    http::read_until(&mut events, &mut seen, ": subscribed", DEADLINE);
    assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen}");
    assert!(seen.to_lowercase().contains("text/event-stream"), "{seen}");
    std::fs::write(src.join("new.txt"), b"new").unwrap();
    http::read_until(&mut events, &mut seen, "new.txt", DEADLINE);
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

/// The status code and body of `method path`.
fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let r = http::call(addr, method, path, DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    (r.status, r.body)
}
