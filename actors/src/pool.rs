//! `Pool`: runs blocking engine work off the actors' threads, bounded, with panics turned into errors.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// A bound on concurrent blocking jobs (file I/O is latency-bound, so more jobs than cores
/// pay off: parallel fsyncs share journal commits).
#[derive(Clone, Debug)]
pub struct Pool {
    permits: Arc<Semaphore>,
    width: u32,
}

impl Pool {
    /// A pool running at most `width` jobs at once.
    pub fn new(width: usize) -> Self {
        let width = width.max(1);
        Pool {
            permits: Arc::new(Semaphore::new(width)),
            width: u32::try_from(width).unwrap_or(u32::MAX),
        }
    }

    /// Runs `f` on the blocking thread pool. A panic inside `f` becomes [`Error::Panicked`]
    /// instead of unwinding through the actor system. The job keeps its place in the pool
    /// until it returns, even when the caller stops waiting for it.
    pub async fn run<T, F>(&self, task: &'static str, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Panicked {
                task,
                message: "worker pool closed".into(),
            })?;
        tokio::task::spawn_blocking(move || {
            let _held = permit;
            f()
        })
        .await
        .map_err(|e| Error::Panicked {
            task,
            message: panic_message(e),
        })
    }
}

impl Pool {
    /// Waits until no job is running (jobs started meanwhile are waited for too).
    pub async fn drained(&self) {
        // Holding every permit at once means no job holds one; they are released at once.
        let _all = self.permits.acquire_many(self.width).await;
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "cancelled".into();
    }
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_panic_becomes_an_error() {
        let pool = Pool::new(2);
        let r: Result<()> = pool.run("boom", || panic!("chunker exploded")).await;
        match r {
            Err(Error::Panicked { task, message }) => {
                assert_eq!(task, "boom");
                assert!(message.contains("chunker exploded"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(pool.run("ok", || 7).await.unwrap(), 7);
    }

    #[actix_rt::test]
    async fn drained_waits_for_jobs_whose_caller_gave_up() {
        let pool = Pool::new(2);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let runner = pool.clone();
        let job = async move {
            runner
                .run("slow", move || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                })
                .await
        };
        // Start the job, then drop the future: the blocking work goes on.
        let handle = tokio::spawn(job);
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        handle.abort();
        let drained = pool.drained();
        release_tx.send(()).unwrap();
        drained.await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
