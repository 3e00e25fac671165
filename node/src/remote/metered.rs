//! `Metered`: a byte stream that counts what crosses it into a pipeline's wire counters.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_actors::Stats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// Tokio's clock (the system's monotonic one, but one tests can pause and advance).
use tokio::time::Instant;

/// A stream whose reads and writes are counted (below TLS: these are the bytes on the wire),
/// and which stamps the time of every read that brings bytes ([`Metered::heard`]).
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    stats: Arc<Stats>,
    heard: Stamp,
}

impl<S> Metered<S> {
    /// Wraps `inner`, counting into `stats` (`wire_bytes_in` and `wire_bytes_out`).
    pub fn new(inner: S, stats: Arc<Stats>) -> Self {
        Metered {
            inner,
            stats,
            heard: Stamp::new(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// When bytes last arrived: what tells a slow peer (a large frame taking a minute to
    /// arrive, a byte at a time) from a silent one.
    pub fn heard(&self) -> Stamp {
        self.heard.clone()
    }
}

/// When a stream last made progress.
#[derive(Clone, Debug)]
pub struct Stamp(Arc<Mutex<Instant>>);

impl Stamp {
    /// A stamp of now.
    pub fn new() -> Self {
        Stamp(Arc::new(Mutex::new(Instant::now())))
    }

    /// Records progress now.
    pub fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long since the last progress.
    pub fn idle(&self) -> Duration {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Stamp::new()
    }
}

/// Runs `read` to its end, or gives up (`None`) once `heard` saw no bytes for `timeout`
/// while it waited: a frame may take as long as it needs while bytes keep coming. The
/// wait starts now, so the time spent away from the reader (frames buffered ahead, a busy
/// consumer) does not count as silence.
pub async fn unless_silent<F: Future>(
    read: F,
    heard: &Stamp,
    timeout: Duration,
) -> Option<F::Output> {
    heard.touch();
    tokio::pin!(read);
    let tick = (timeout / 4).max(Duration::from_millis(1));
    loop {
        tokio::select! {
            r = &mut read => return Some(r),
            _ = tokio::time::sleep(tick) => {
                if heard.idle() > timeout {
                    return None;
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.heard.touch();
        }
        self.stats
            .wire_bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats
                .wire_bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    // TLS hands over all its pending records at once: forwarded, they leave in one system
    // call (and fewer TCP segments) instead of one call per record.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats
                .wire_bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that sends `n` bytes, one every `gap`, then stays silent and open.
    fn dribble(n: usize, gap: Duration) -> tokio::io::DuplexStream {
        let (a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::time::sleep(gap).await;
                if b.write_all(b"x").await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        a
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_read_lives_while_bytes_come_and_a_silent_one_ends() {
        let timeout = Duration::from_secs(20);
        // 60 bytes, one every 5 s: the read takes 300 s, far past the timeout, but the
        // peer is never silent for long.
        let mut m = Metered::new(dribble(60, Duration::from_secs(5)), Arc::default());
        let heard = m.heard();
        let mut buf = [0u8; 60];
        let started = tokio::time::Instant::now();
        let read = unless_silent(m.read_exact(&mut buf), &heard, timeout).await;
        assert!(matches!(read, Some(Ok(60))), "{read:?}");
        assert!(started.elapsed() >= Duration::from_secs(300));
        // Then nothing more comes: given up once 20 s pass without a byte.
        let started = tokio::time::Instant::now();
        let mut more = [0u8; 1];
        assert!(unless_silent(m.read_exact(&mut more), &heard, timeout)
            .await
            .is_none());
        let waited = started.elapsed();
        assert!(
            waited > timeout && waited <= timeout + timeout / 4 + Duration::from_secs(1),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_away_from_the_reader_is_not_silence() {
        // The last byte came long ago, while the reader was busy elsewhere: the wait
        // starts when it reads again.
        let (a, mut b) = tokio::io::duplex(1024);
        let mut m = Metered::new(a, Arc::default());
        let heard = m.heard();
        tokio::time::sleep(Duration::from_secs(60)).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            b.write_all(b"y").await.unwrap();
            std::future::pending::<()>().await;
        });
        let mut buf = [0u8; 1];
        let read = unless_silent(m.read_exact(&mut buf), &heard, Duration::from_secs(20)).await;
        assert!(matches!(read, Some(Ok(1))), "{read:?}");
    }

    #[tokio::test]
    async fn counts_both_directions() {
        let (a, mut b) = tokio::io::duplex(1024);
        let stats = Arc::new(Stats::default());
        let mut m = Metered::new(a, stats.clone());
        m.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        m.read_exact(&mut buf).await.unwrap();
        assert_eq!(stats.wire_bytes_out.load(Ordering::Relaxed), 5);
        assert_eq!(stats.wire_bytes_in.load(Ordering::Relaxed), 3);
    }
}
