//! Stopping on a signal in two steps: the first SIGINT or SIGTERM finishes the changes in
//! flight, a second one while that goes on stops at once.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// How a graceful stop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Everything in flight was finished.
    Finished,
    /// A second signal cut it short: files being written stay behind as temp files, which
    /// the next run reuses or removes.
    Cut,
}

/// Runs `finish` (the graceful stop), unless a second SIGINT or SIGTERM arrives first.
pub async fn unless_signalled_again<F: Future<Output = ()>>(finish: F) -> io::Result<Stopped> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        () = finish => Ok(Stopped::Finished),
        r = tokio::signal::ctrl_c() => r.map(|()| Stopped::Cut),
        _ = term.recv() => Ok(Stopped::Cut),
    }
}
