//! The node's web dashboard: an HTTP server (actix-web) on the node's actix system that serves
//! a self-contained HTML page, `/api/status` (JSON), `/api/events` (Server-Sent Events) and
//! `/metrics` (Prometheus), all read from a [`StatusSource`].
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn run(source: Arc<dyn ferry_node::status::StatusSource>) -> std::io::Result<()> {
//! // Inside the node's actix system (`actix_rt::System`):
//! let dashboard = ferry_node::dashboard::start("127.0.0.1:8384".parse().unwrap(), source).await?;
//! println!("dashboard on http://{}/", dashboard.local_addr);
//! // …and when the node shuts down:
//! dashboard.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Architecture invariant: the dashboard only reads. It holds no state of its own beyond
//! open event streams, and nothing in it can change what the node replicates.

pub mod metrics;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{middleware, web, App, HttpResponse, HttpServer, Responder};

use crate::status::StatusSource;

/// The page, with its CSS and JavaScript inline: it loads nothing else.
const PAGE: &str = include_str!("page.html");

/// How long a stopping server waits for open requests; event streams never finish on their own.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// A running dashboard server.
#[derive(Debug)]
pub struct Dashboard {
    /// The address it listens on (with the actual port when started on port 0).
    pub local_addr: SocketAddr,
    handle: ServerHandle,
}

impl Dashboard {
    /// Stops accepting connections, closes the open ones (event streams included) and waits
    /// until the server has stopped.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Binds `addr` (port 0 picks a free port) and serves the dashboard from `source`, with one
/// worker, until [`Dashboard::stop`].
///
/// Must be called inside an actix system (the node's `actix_rt::System`): the server's
/// accept loop is spawned on it. Signals are left to the node.
pub async fn start(addr: SocketAddr, source: Arc<dyn StatusSource>) -> std::io::Result<Dashboard> {
    let data = web::Data::from(source);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(
                middleware::DefaultHeaders::new().add(CacheControl(vec![CacheDirective::NoStore])),
            )
            .route("/", web::get().to(page))
            .route("/api/status", web::get().to(status))
            .route("/api/events", web::get().to(sse::events))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
    .bind(addr)?;
    let local_addr = *server
        .addrs()
        .first()
        .ok_or_else(|| std::io::Error::other(format!("binding {addr} gave no address")))?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Dashboard { local_addr, handle })
}

async fn page() -> impl Responder {
    HttpResponse::Ok()
        .content_type(header::ContentType::html())
        .body(PAGE)
}

async fn status(source: web::Data<dyn StatusSource>) -> impl Responder {
    HttpResponse::Ok().json(source.status())
}

async fn metrics(source: web::Data<dyn StatusSource>) -> impl Responder {
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(metrics::render(&source.status()))
}
