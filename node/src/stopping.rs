//! Stopping on a signal in two steps: the first SIGINT or SIGTERM finishes the changes in
//! flight, a second one while that goes on stops at once.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// How a graceful stop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Everything in flight was finished.
    Finished,
    /// A second signal cut it short: files being written stay behind as temp files, which
    /// the next run reuses or removes.
    Cut,
}

/// SIGINT and SIGTERM, listened for: from [`StopSignals::listen`] on, neither kills the
/// process. Listen before announcing that the process is up (`watching`, `listening`,
/// `ready`), so a signal sent on the announcement stops it gracefully.
pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    /// Starts listening for SIGINT and SIGTERM.
    pub fn listen() -> io::Result<Self> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs `finish` (the graceful stop), unless a second SIGINT or SIGTERM arrives first.
pub async fn unless_signalled_again<F: Future<Output = ()>>(
    signals: &mut StopSignals,
    finish: F,
) -> Stopped {
    tokio::select! {
        () = finish => Stopped::Finished,
        () = signals.recv() => Stopped::Cut,
    }
}
