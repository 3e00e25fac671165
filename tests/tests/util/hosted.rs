//! An in-process server on its own thread's actix system, for tests that talk to it over
//! HTTP: started by a closure that returns its address and how to stop it; dropping the
//! handle stops the server and joins the thread.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

/// How a hosted server is stopped, run on its own system.
pub type StopFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A server running on its own thread.
pub struct Hosted {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Hosted {
    /// Runs `start` in a new actix system on a new thread; waits (at most `deadline`) for
    /// the address it reports.
    pub fn start<F, Fut>(deadline: Duration, start: F) -> Hosted
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = (SocketAddr, StopFuture)>,
    {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let (addr, stop) = start().await;
                ready_tx.send(addr).unwrap();
                let _ = stopped.await;
                stop.await;
            });
        });
        let addr = ready_rx
            .recv_timeout(deadline)
            .expect("the hosted server reports its address");
        Hosted {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Joining a panicked server thread while unwinding would abort; its panic is reported.
        if !std::thread::panicking() {
            thread
                .join()
                .expect("the hosted server's thread ends cleanly");
        }
    }
}
