//! Body wrappers: streaming pass-through that counts bytes and enforces an *idle*
//! timeout (reset by every frame, so a long SSE stream that keeps talking never times
//! out), plus a guard that runs once when the body is finished or dropped (the request
//! log line).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Error type of bodies passing through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type sent upstream.
pub type ReqBody = BoxBody<Bytes, BoxError>;
/// Body type sent to the client.
pub type RespBody = BoxBody<Bytes, BoxError>;

/// The body went quiet for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}; closing the idle stream")]
pub struct IdleTimeout(pub Duration);

/// Runs its closure once, when dropped.
pub(crate) struct OnDrop(Option<Box<dyn FnOnce() + Send + Sync>>);

impl OnDrop {
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> OnDrop {
        OnDrop(Some(Box::new(f)))
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

pin_project_lite::pin_project! {
    /// Counts bytes and times out when idle.
    pub(crate) struct Metered<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: Sleep,
        idle_for: Duration,
        count: Arc<AtomicU64>,
        guard: Option<OnDrop>,
    }
}

impl<B> Metered<B> {
    pub fn new(inner: B, idle_for: Duration, count: Arc<AtomicU64>, guard: Option<OnDrop>) -> Self {
        Metered {
            inner,
            idle: tokio::time::sleep(idle_for),
            idle_for,
            count,
            guard,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                let deadline = Instant::now() + *this.idle_for;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                // finished: run the guard now rather than when hyper drops the body
                this.guard.take();
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.idle_for))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Copies both ways between two upgraded streams until both sides finish, or until
/// nothing moves in either direction for `idle` (the timer restarts on every read).
pub(crate) async fn splice_with_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
) -> std::io::Result<()>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        tokio::select! {
            r = a.read(&mut buf_a), if !a_done => {
                let n = r?;
                if n == 0 {
                    a_done = true;
                    let _ = b.shutdown().await;
                } else {
                    b.write_all(&buf_a[..n]).await?;
                    b.flush().await?;
                }
            }
            r = b.read(&mut buf_b), if !b_done => {
                let n = r?;
                if n == 0 {
                    b_done = true;
                    let _ = a.shutdown().await;
                } else {
                    a.write_all(&buf_b[..n]).await?;
                    a.flush().await?;
                }
            }
            () = tokio::time::sleep(idle) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, IdleTimeout(idle)));
            }
        }
    }
    Ok(())
}
