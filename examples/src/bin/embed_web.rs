//! `embed_web`: Ferry embedded in an existing actix-web application.
//!
//! Demonstrates the embedding API ([`ferry_actors::Replication`]): one live replication per
//! `--mirror SRC=DST` pair, started inside the web app's own actix system, its status and
//! events served over HTTP, stopped on request or on Ctrl-C / SIGTERM, each finishing the
//! change in flight first. The app itself is [`ferry_examples::embed`]; this file adds the
//! command line and the signals.
//!
//! ```text
//! cargo run -p ferry-examples --bin embed_web -- --mirror /tmp/a=/tmp/b
//! curl http://127.0.0.1:8088/replications
//! curl -N http://127.0.0.1:8088/replications/a/events
//! curl -X POST http://127.0.0.1:8088/replications/a/stop
//! ```

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use clap::Parser;
use ferry_examples::embed::{self, Mirror};
use tokio::signal::unix::{signal, SignalKind};

/// Mirrors directories live and serves their status and events over HTTP.
#[derive(Parser)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// A directory to mirror and where to, as SRC=DST (repeatable).
    #[arg(long = "mirror", value_name = "SRC=DST", required = true)]
    mirrors: Vec<Mirror>,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_web: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen)?;
    // Listen for the signals before anything starts, so that none arrives unheard.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let served = embed::serve(listener, args.mirrors).await?;
    println!("serving on http://{}/ (Ctrl-C to stop)", served.addr());
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    println!("stopping: finishing the changes in flight");
    served.stop().await;
    Ok(())
}
