//! Idle timeout of client connections: every byte read or written marks the connection
//! active; a connection with no traffic at all for the idle timeout is closed. A long
//! stream that keeps talking (SSE) is never idle, a silent keep-alive connection is.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A stream that records when it last moved a byte.
pub(crate) struct Tracked<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T) -> (Tracked<T>, Arc<AtomicU64>) {
        let last = Arc::new(AtomicU64::new(now_ms()));
        (
            Tracked {
                inner,
                last: last.clone(),
            },
            last,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// Runs a future (a connection) until it ends, or drops it (closing the connection)
    /// once the activity mark has not moved for the idle timeout. A plain struct rather
    /// than an `async fn`, so the connection's `Send` is proved structurally.
    pub(crate) struct UntilIdle<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: tokio::time::Sleep,
        last: Arc<AtomicU64>,
        seen: u64,
        idle: Duration,
    }
}

/// See [`UntilIdle`].
pub(crate) fn until_idle<F: Future>(fut: F, last: Arc<AtomicU64>, idle: Duration) -> UntilIdle<F> {
    let seen = last.load(Ordering::Relaxed);
    UntilIdle {
        fut,
        sleep: tokio::time::sleep_until(epoch() + Duration::from_millis(seen) + idle),
        last,
        seen,
        idle,
    }
}

impl<F: Future> Future for UntilIdle<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        loop {
            match this.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let now = this.last.load(Ordering::Relaxed);
                    if now == *this.seen {
                        return Poll::Ready(None);
                    }
                    *this.seen = now;
                    let deadline = epoch() + Duration::from_millis(now) + *this.idle;
                    this.sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}
