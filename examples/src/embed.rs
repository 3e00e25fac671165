//! The app behind the `embed_web` example: an actix-web server that owns a set of
//! [`Replication`]s and exposes them over HTTP, to show Ferry's embedding API from inside an
//! existing web application.
//!
//! - `GET /` — a tiny HTML page linking the rest;
//! - `GET /replications` — every replication's status, as JSON;
//! - `GET /replications/{folder}/events` — its [`Event`]s, as Server-Sent Events;
//! - `POST /replications/{folder}/stop` — stops it gracefully and forgets it.
//!
//! It lives in the library rather than in the binary so that the integration tests can run
//! it in-process; `src/bin/embed_web.rs` only adds the command line and the signals.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};
use ferry_actors::{Event, FolderId, Replication};
use futures_util::{Stream, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Mutex};

/// How long a stopping replication may take to finish the change in flight.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A folder id leaves room for a `-NNN` suffix within `FolderId`'s 64 characters.
const MAX_BASE_LEN: usize = 56;

/// One `--mirror SRC=DST` pair, checked: both sides are present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// The directory replicated.
    pub source: PathBuf,
    /// The directory it is mirrored into.
    pub target: PathBuf,
}

impl FromStr for Mirror {
    type Err = String;

    /// Parses `SRC=DST`, splitting at the first `=` (so DST may contain one, SRC may not).
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((source, target)) = s.split_once('=') else {
            return Err(format!("expected SRC=DST, got {s:?}"));
        };
        if source.is_empty() || target.is_empty() {
            let missing = if source.is_empty() { "SRC" } else { "DST" };
            return Err(format!("expected SRC=DST, got {s:?}: {missing} is empty"));
        }
        Ok(Mirror {
            source: source.into(),
            target: target.into(),
        })
    }
}

/// A folder id per mirror, from its source directory's name: characters outside
/// `[A-Za-z0-9._-]` become `_`, and a name already taken gets `-2`, `-3`, ...
pub fn folder_ids(mirrors: &[Mirror]) -> Vec<FolderId> {
    let mut taken = HashSet::new();
    mirrors
        .iter()
        .map(|m| {
            let base = sanitised_name(&m.source);
            let id = (1..)
                .map(|n| match n {
                    1 => base.clone(),
                    n => format!("{base}-{n}"),
                })
                .find(|id| !taken.contains(id))
                .expect("an unbounded range always has a free suffix");
            taken.insert(id.clone());
            FolderId::new(id).expect("a sanitised name is a valid folder id")
        })
        .collect()
}

/// The last component of `source` (resolved, for paths like `.`), reduced to
/// `[A-Za-z0-9._-]`; `folder` when nothing is left.
fn sanitised_name(source: &Path) -> String {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            let canonical = source.canonicalize().ok()?;
            Some(canonical.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let clean: String = name
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .take(MAX_BASE_LEN)
        .collect();
    if clean.is_empty() {
        "folder".into()
    } else {
        clean
    }
}

/// One replication the app runs, with where it goes (for the status page).
struct Entry {
    source: PathBuf,
    target: PathBuf,
    replication: Replication,
}

/// Every running replication, in `--mirror` order. An async mutex: `status` awaits each
/// replication's supervisor while holding it.
#[derive(Default)]
struct Registry {
    entries: Mutex<Vec<Entry>>,
}

impl Registry {
    /// Takes `folder` out of the registry, to stop it.
    async fn take(&self, folder: &str) -> Option<Entry> {
        let mut entries = self.entries.lock().await;
        let i = entries
            .iter()
            .position(|e| e.replication.folder().as_str() == folder)?;
        Some(entries.remove(i))
    }
}

/// The running app: the web server and the replications it serves.
pub struct Served {
    addr: SocketAddr,
    server: ServerHandle,
    registry: web::Data<Registry>,
}

impl Served {
    /// The address the server listens on (the actual port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the web server (closing open event streams), then every replication, each
    /// finishing its change in flight within [`STOP_DEADLINE`].
    pub async fn stop(self) {
        self.server.stop(true).await;
        let entries = std::mem::take(&mut *self.registry.entries.lock().await);
        let stops = entries
            .into_iter()
            .map(|e| e.replication.stop(STOP_DEADLINE));
        futures_util::future::join_all(stops).await;
    }
}

/// Starts one replication per mirror and serves them on `listener` until [`Served::stop`].
///
/// Must be called inside a running actix system (`#[actix_web::main]`, `actix_rt::System`):
/// the replications' actors and the server's accept loop run on it. Signals are left to the
/// caller. Fails, stopping what it started, if any replication cannot start.
pub async fn serve(listener: TcpListener, mirrors: Vec<Mirror>) -> io::Result<Served> {
    let registry = web::Data::new(Registry::default());
    for (id, mirror) in folder_ids(&mirrors).into_iter().zip(mirrors) {
        let started = Replication::builder(id, &mirror.source)
            .to_dir(&mirror.target)
            .start();
        let replication = match started {
            Ok(r) => r,
            Err(e) => {
                for started in std::mem::take(&mut *registry.entries.lock().await) {
                    started.replication.stop(STOP_DEADLINE).await;
                }
                return Err(io::Error::other(e));
            }
        };
        registry.entries.lock().await.push(Entry {
            source: mirror.source,
            target: mirror.target,
            replication,
        });
    }
    let addr = listener.local_addr()?;
    let data = registry.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/", web::get().to(index))
            .route("/replications", web::get().to(list))
            .route("/replications/{folder}/events", web::get().to(events))
            .route("/replications/{folder}/stop", web::post().to(stop))
    })
    .workers(1)
    .disable_signals()
    // Event streams never end on their own: give open requests one second, not thirty.
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Served {
        addr,
        server: handle,
        registry,
    })
}

/// `GET /`: links to every replication's events and to the status list.
async fn index(registry: web::Data<Registry>) -> HttpResponse {
    let mut page = String::from(
        "<!doctype html><title>Ferry replications</title><h1>Ferry replications</h1>\
         <p><a href=\"/replications\">status (JSON)</a></p><ul>",
    );
    for e in registry.entries.lock().await.iter() {
        // Folder ids are `[A-Za-z0-9._-]`: nothing to escape.
        let folder = e.replication.folder();
        let _ = write!(
            page,
            "<li>{folder}: <a href=\"/replications/{folder}/events\">events</a> \
             <form method=\"post\" action=\"/replications/{folder}/stop\" style=\"display:inline\">\
             <button>stop</button></form></li>"
        );
    }
    page.push_str("</ul>");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

/// `GET /replications`: every replication's status.
async fn list(registry: web::Data<Registry>) -> HttpResponse {
    let entries = registry.entries.lock().await;
    let mut all = Vec::with_capacity(entries.len());
    for e in entries.iter() {
        all.push(status_json(e).await);
    }
    HttpResponse::Ok().json(all)
}

async fn status_json(e: &Entry) -> Value {
    let s = e.replication.status().await;
    let actors: Vec<Value> = s
        .actors
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "running": a.running,
                "uptime_s": a.uptime.as_secs(),
                "mailbox": a.mailbox,
                "restarts": a.restarts,
            })
        })
        .collect();
    json!({
        "folder": s.folder.as_str(),
        "source": e.source,
        "target": e.target,
        "state": s.state.word(),
        "counters": s.stats,
        "actors": actors,
        "latency": { "count": s.latency.count, "sum_ms": s.latency.sum_ms },
        "remaining": { "files": s.remaining.0, "bytes": s.remaining.1 },
    })
}

/// `GET /replications/{folder}/events`: subscribes before answering, so that nothing
/// published after the client sees the response is missed.
async fn events(registry: web::Data<Registry>, folder: web::Path<String>) -> HttpResponse {
    let entries = registry.entries.lock().await;
    let Some(e) = entries
        .iter()
        .find(|e| e.replication.folder().as_str() == folder.as_str())
    else {
        return not_found(&folder);
    };
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(sse(e.replication.subscribe()))
}

/// One `data:` message per event; the stream ends when the replication is gone. A client
/// too slow for the channel's buffer is told how many it missed and goes on.
fn sse(events: broadcast::Receiver<Event>) -> impl Stream<Item = Result<Bytes, Infallible>> {
    // A first comment flushes the headers, so the client knows it is subscribed.
    let hello = futures_util::stream::once(std::future::ready(Ok(Bytes::from_static(
        b": subscribed\n\n",
    ))));
    let rest = futures_util::stream::unfold(events, |mut events| async move {
        let message = match events.recv().await {
            Ok(event) => format!("data: {}\n\n", event_json(&event)),
            Err(RecvError::Lagged(n)) => format!(": skipped {n} events\n\n"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(Bytes::from(message)), events))
    });
    hello.chain(rest)
}

/// An event as one line of JSON (`Display` output has no line breaks, and JSON escapes any).
fn event_json(event: &Event) -> Value {
    let at_ms = event
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    json!({
        "at_ms": at_ms,
        "folder": event.folder.as_str(),
        "kind": event.kind.word(),
        "text": event.kind.to_string(),
    })
}

/// `POST /replications/{folder}/stop`: finishes the change in flight, then forgets it.
async fn stop(registry: web::Data<Registry>, folder: web::Path<String>) -> HttpResponse {
    let Some(e) = registry.take(&folder).await else {
        return not_found(&folder);
    };
    e.replication.stop(STOP_DEADLINE).await;
    HttpResponse::Ok().json(json!({ "stopped": folder.as_str() }))
}

fn not_found(folder: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": format!("no replication {folder:?}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_needs_both_sides() {
        let m: Mirror = "/a=/b=c".parse().unwrap();
        assert_eq!(
            (m.source, m.target),
            (PathBuf::from("/a"), PathBuf::from("/b=c"))
        );
        for bad in ["/a", "=/b", "/a=", "="] {
            let err = bad.parse::<Mirror>().unwrap_err();
            assert!(err.contains("expected SRC=DST"), "{bad}: {err}");
        }
    }

    #[test]
    fn folder_ids_are_sanitised_and_unique() {
        let mirror = |src: &str| Mirror {
            source: src.into(),
            target: "/unused".into(),
        };
        let ids = folder_ids(&[
            mirror("/x/photos"),
            mirror("/y/photos/"),
            mirror("/z/my photos (2024)"),
            mirror("/w/photos"),
            mirror("/"),
        ]);
        let ids: Vec<&str> = ids.iter().map(FolderId::as_str).collect();
        assert_eq!(
            ids,
            [
                "photos",
                "photos-2",
                "my_photos__2024_",
                "photos-3",
                "folder"
            ]
        );
        let long = folder_ids(&[mirror(&"é".repeat(100)), mirror(&"é".repeat(100))]);
        assert_eq!(long[1].as_str().len(), MAX_BASE_LEN + 2);
    }
}
