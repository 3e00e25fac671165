//! `Pool`: runs blocking engine work off the actors' threads, bounded, with panics turned into errors.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// A bound on concurrent blocking jobs (file I/O is latency-bound, so more jobs than cores
/// pay off: parallel fsyncs share journal commits).
#[derive(Clone, Debug)]
pub struct Pool {
    permits: Arc<Semaphore>,
}

impl Pool {
    /// A pool running at most `width` jobs at once.
    pub fn new(width: usize) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(width.max(1))),
        }
    }

    /// Runs `f` on the blocking thread pool. A panic inside `f` becomes [`Error::Panicked`]
    /// instead of unwinding through the actor system.
    pub async fn run<T, F>(&self, task: &'static str, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Panicked {
                task,
                message: "worker pool closed".into(),
            })?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Panicked {
                task,
                message: panic_message(e),
            })
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
}
