//! `Metered`: a byte stream that counts what crosses it into a pipeline's wire counters.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_actors::Stats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose reads and writes are counted (below TLS: these are the bytes on the wire).
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    stats: Arc<Stats>,
}

impl<S> Metered<S> {
    /// Wraps `inner`, counting into `stats` (`wire_bytes_in` and `wire_bytes_out`).
    pub fn new(inner: S, stats: Arc<Stats>) -> Self {
        Metered { inner, stats }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
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
