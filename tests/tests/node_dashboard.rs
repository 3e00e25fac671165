//! The node's dashboard served in-process from a fake status source: `/api/status`, `/metrics`
//! and `/api/events` read by hand-written HTTP, and the page read by a headless Chromium.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ferry_node::dashboard;
use ferry_node::status::{
    ActorStatus, Counters, EventRecord, FolderStatus, Histogram, NodeStatus, Sample, StatusSource,
    SyncState, TargetStatus,
};
use prometheus_parse::{Scrape, Value};
use tokio::sync::broadcast;

use crate::util::chromium::Chromium;
use crate::util::hosted::{Hosted, StopFuture};
use crate::util::http;
use crate::util::live::DEADLINE;

// ---------------------------------------------------------------------------------------------
// A fake node and a dashboard serving it
// ---------------------------------------------------------------------------------------------

/// A status the test changes at will, and an event channel it publishes to.
struct FakeSource {
    status: Mutex<NodeStatus>,
    events: broadcast::Sender<EventRecord>,
}

impl StatusSource for FakeSource {
    fn status(&self) -> NodeStatus {
        self.status.lock().unwrap().clone()
    }

    fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.events.subscribe()
    }
}

impl FakeSource {
    fn new() -> Arc<FakeSource> {
        Arc::new(FakeSource {
            status: Mutex::new(fake_status()),
            events: broadcast::channel(16).0,
        })
    }

    fn set_state(&self, folder: &str, target: &str, state: SyncState) {
        let mut status = self.status.lock().unwrap();
        let folder = status.folders.iter_mut().find(|f| f.id == folder).unwrap();
        let target = folder
            .targets
            .iter_mut()
            .find(|t| t.name == target)
            .unwrap();
        target.state = state;
    }

    fn publish(&self, event: EventRecord) {
        self.events
            .send(event)
            .expect("an events client is subscribed");
    }
}

fn target(name: &str, kind: &str, state: SyncState, seed: u64) -> TargetStatus {
    let actor = |name: &str, state: &str| ActorStatus {
        name: name.into(),
        state: state.into(),
        uptime_s: 60 * seed,
        mailbox: seed,
        restarts: seed - 1,
    };
    TargetStatus {
        name: name.into(),
        kind: kind.into(),
        state,
        actors: vec![actor("Scanner", "running"), actor("Applier", "restarting")],
        counters: Counters {
            files_created: 10 * seed,
            files_updated: 3,
            bytes_sent: 4096 * seed,
            wire_bytes_in: 17,
            ..Counters::default()
        },
        latency: Histogram {
            bounds_ms: vec![10.0, 100.0],
            counts: vec![4, 1, 1],
            sum_ms: 400.0,
            count: 6,
        },
        restarts: seed - 1,
        watches: 5 * seed,
        applied_seq: 100 * seed,
        source_seq: 100 * seed + 2,
    }
}

fn event(kind: &str, path: &str) -> EventRecord {
    EventRecord {
        unix_ms: 1_700_000_000_000,
        folder: "docs".into(),
        target: "/mnt/backup".into(),
        kind: kind.into(),
        path: Some(path.into()),
        detail: format!("{kind} {path}"),
    }
}

fn fake_status() -> NodeStatus {
    let syncing = SyncState::Syncing {
        files_remaining: 12,
        bytes_remaining: 3 << 20,
    };
    let offline = SyncState::Offline {
        reason: "connection refused".into(),
    };
    NodeStatus {
        node: "alpha".into(),
        node_id: Some("NODE-ID-1234".into()),
        version: "0.1.0".into(),
        uptime_s: 3725,
        folders: vec![
            FolderStatus {
                id: "docs".into(),
                path: "/srv/docs".into(),
                role: "send".into(),
                targets: vec![
                    target("/mnt/backup", "local", SyncState::InSync, 1),
                    target("beta", "peer", syncing, 2),
                ],
            },
            FolderStatus {
                id: "photos".into(),
                path: "/srv/photos".into(),
                role: "receive".into(),
                targets: vec![target("gamma", "incoming", offline, 3)],
            },
        ],
        history: (0..30)
            .map(|i| Sample {
                unix_ms: 1_700_000_000_000 + i * 1000,
                bytes_per_s: (i * i * 1000) as f64,
                files_per_s: i as f64,
                latency_ms: (i % 3 != 0).then_some(i as f64 * 2.0),
            })
            .collect(),
        events: vec![event("created", "hello.txt")],
    }
}

/// The dashboard of `source` on its own thread's actix system; dropping it stops both.
fn serve(source: Arc<FakeSource>) -> Hosted {
    Hosted::start(DEADLINE, move || async move {
        let any = "127.0.0.1:0".parse().unwrap();
        let served = dashboard::start(any, source)
            .await
            .expect("the dashboard starts");
        let addr = served.local_addr;
        let stop: StopFuture = Box::pin(async move { served.stop().await });
        (addr, stop)
    })
}

#[track_caller]
fn assert_header(head: &str, header: &str) {
    assert!(
        head.lines().any(|l| l == header),
        "missing {header:?} in\n{head}"
    );
}

/// The head (status line and headers, lower-cased) and body of `GET path`, which must be 200.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let r = http::call(addr, "GET", path, DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.head);
    (r.head, r.body)
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

#[test]
fn status_json_round_trips() {
    let source = FakeSource::new();
    let served = serve(source.clone());
    let (head, body) = get(served.addr, "/api/status");
    assert_header(&head, "content-type: application/json");
    assert_header(&head, "cache-control: no-store");
    let status: NodeStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(status, source.status());
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["folders"][0]["targets"][1]["state"]["state"], "syncing");
}

#[test]
fn metrics_parse_with_the_expected_values() {
    let source = FakeSource::new();
    let served = serve(source.clone());
    let (head, body) = get(served.addr, "/metrics");
    assert_header(
        &head,
        "content-type: text/plain; version=0.0.4; charset=utf-8",
    );
    assert_header(&head, "cache-control: no-store");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let find = |metric: &str, labels: &[(&str, &str)]| {
        let found: Vec<&Value> = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .map(|s| &s.value)
            .collect();
        assert_eq!(found.len(), 1, "{metric} {labels:?} in\n{body}");
        found[0].clone()
    };
    let beta = [("folder", "docs"), ("target", "beta")];
    assert_eq!(find("ferry_uptime_seconds", &[]), Value::Gauge(3725.0));
    assert_eq!(
        find(
            "ferry_files_total",
            &[beta[0], beta[1], ("action", "created")]
        ),
        Value::Counter(20.0)
    );
    assert_eq!(
        find("ferry_bytes_sent_total", &beta),
        Value::Counter(8192.0)
    );
    assert_eq!(find("ferry_watches", &beta), Value::Gauge(10.0));
    assert_eq!(find("ferry_applied_seq", &beta), Value::Gauge(200.0));
    let gamma = [("folder", "photos"), ("target", "gamma")];
    assert_eq!(
        find(
            "ferry_target_state",
            &[gamma[0], gamma[1], ("state", "offline")]
        ),
        Value::Gauge(1.0)
    );
    assert_eq!(
        find(
            "ferry_target_state",
            &[gamma[0], gamma[1], ("state", "in-sync")]
        ),
        Value::Gauge(0.0)
    );
    assert_eq!(
        find(
            "ferry_wire_bytes_total",
            &[gamma[0], gamma[1], ("direction", "in")]
        ),
        Value::Counter(17.0)
    );
    let Value::Histogram(buckets) = find("ferry_change_latency_seconds", &gamma) else {
        panic!("ferry_change_latency_seconds is not a histogram in\n{body}");
    };
    let buckets: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
    assert_eq!(buckets, [(0.01, 4.0), (0.1, 5.0), (f64::INFINITY, 6.0)]);
    assert_eq!(
        find("ferry_change_latency_seconds_sum", &gamma),
        Value::Untyped(0.4)
    );
}

#[test]
fn events_stream_delivers_a_published_event() {
    let source = FakeSource::new();
    let served = serve(source.clone());
    let mut stream = http::open(served.addr, "GET", "/api/events", "keep-alive");
    let mut seen = String::new();
    // The server subscribes before it answers, so once the headers are here nothing is missed.
    http::read_until(&mut stream, &mut seen, "\r\n\r\n", DEADLINE);
    assert_header(&seen.to_lowercase(), "content-type: text/event-stream");
    assert_header(&seen.to_lowercase(), "cache-control: no-store");
    let published = event("removed", "old/notes.md");
    source.publish(published.clone());
    let json = serde_json::to_string(&published).unwrap();
    http::read_until(
        &mut stream,
        &mut seen,
        &format!("event: change\ndata: {json}\n\n"),
        DEADLINE,
    );
}

#[test]
fn every_route_forbids_caching() {
    let served = serve(FakeSource::new());
    let (head, body) = get(served.addr, "/");
    assert_header(&head, "cache-control: no-store");
    assert_header(&head, "content-type: text/html; charset=utf-8");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "the page loads nothing external"
    );
}

// ---------------------------------------------------------------------------------------------
// The page, in a browser
// ---------------------------------------------------------------------------------------------

#[test]
fn page_shows_the_tree_and_updates_live() {
    let source = FakeSource::new();
    let served = serve(source.clone());
    let mut browser = Chromium::launch();
    browser.navigate(&format!("http://{}/", served.addr));

    browser.wait_for(
        r#"document.querySelectorAll("[data-folder]").length === 2
           && document.querySelector('[data-folder="docs"] [data-target="/mnt/backup"]')?.dataset.state === "in-sync"
           && document.querySelector('[data-folder="docs"] [data-target="beta"]')?.dataset.state === "syncing"
           && document.querySelector('[data-folder="photos"] [data-target="gamma"]')?.dataset.state === "offline"
           && document.getElementById("node").textContent.includes("alpha")
           && document.querySelectorAll('[data-target="beta"] [data-actor]').length === 2
           && document.querySelector('#events li[data-kind="created"][data-path="hello.txt"]') !== null
           && document.body.dataset.events === "open""#,
        "the page shows the fake node's folders, targets, actors and events",
    );
    let text = browser
        .eval(r#"document.querySelector('[data-target="gamma"]').textContent"#)
        .unwrap();
    assert!(
        text.as_str().unwrap().contains("connection refused"),
        "{text}"
    );
    // A reload would lose this marker.
    browser.eval("window.notReloaded = true").unwrap();

    source.set_state(
        "docs",
        "/mnt/backup",
        SyncState::Failed {
            reason: "disk full".into(),
        },
    );
    source.publish(event("error", "a/b.txt"));
    browser.wait_for(
        r#"window.notReloaded === true
           && document.querySelector('[data-target="/mnt/backup"]')?.dataset.state === "failed"
           && document.querySelector('[data-target="/mnt/backup"]').textContent.includes("disk full")
           && document.querySelector('#events li[data-kind="error"][data-path="a/b.txt"]') !== null"#,
        "the page shows the new state and the published event without a reload",
    );
}
