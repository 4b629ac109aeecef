//! Parking an idle HTTP/1 connection: what an open, silent keep-alive connection (above all
//! a tunnel's, once its request is answered) holds between requests.
//!
//! hyper's HTTP/1 server keeps, for a connection's whole life, an 8 KiB read buffer (reserved
//! before every read, also while it waits), an 8 KiB buffer for response heads and a box for
//! the in-flight exchange (~2.9 KB here): 19 of the ~31 KB an idle tunnel held (bench/README.md,
//! "sidecar memory" and "egress10"). None of it can be made smaller through hyper's API. So
//! a connection with nothing in flight, no byte of a next request read and no byte moved
//! for [`crate::config::Timeouts::park`] is *parked*: hyper is asked to finish
//! (`graceful_shutdown`, which on an idle connection ends it at once without writing a
//! byte), its I/O is taken back (`into_parts`; the shutdown it then asks for is not passed
//! on), and hyper with its buffers is dropped. The proxy then waits for the next request's
//! first byte itself (through the same framing check), under the same deadlines hyper would
//! have applied — the request-head timeout counted from when the wait began, and the idle
//! timeout — and hands the connection, that byte first, to a new hyper connection whose
//! head timeout is what is left of the first.
//!
//! What is parked is only ever a connection at rest: the framing check has seen every
//! request end and nothing of a next one ([`StrictIo::at_rest`]), every response body has
//! been dropped by hyper (it wrote it to the end, or gave up), and nothing moved for the park
//! delay (hyper's last write was flushed). A connection that upgraded, answered with
//! `Connection: close` or failed ends as before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::{BoxError, RespBody};
use crate::idle::Tracked;
use crate::strict::StrictIo;

/// Connections parked since the process started (all proxies in it): what the tests read
/// to know that parking really happened.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// Counts one parked connection.
pub(crate) fn count_parked() {
    PARKED.fetch_add(1, Ordering::Relaxed);
}

/// See [`PARKED`].
pub fn parked() -> u64 {
    PARKED.load(Ordering::Relaxed)
}

/// How long after a park the freed memory is handed back, so that the connections parked
/// together (a burst of tunnels going quiet) cost one trim.
const TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands the pages that parked connections freed back to the kernel, once, [`TRIM_AFTER`]
/// from now. Freed, hyper's buffers stay in the allocator's free lists between the
/// allocations that live on (the tunnels' TLS state), so the resident memory would not fall
/// (measured: 13.0 KB of heap per idle tunnel but 26.3 KB of RSS, as before parking). The
/// trim runs on a blocking thread; with glibc only (other allocators: nothing).
pub(crate) fn trim_soon() {
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(TRIM_AFTER).await;
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: `malloc_trim` takes no pointer and only returns free memory of glibc's
    // allocator to the kernel, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// What the connection loop needs to know about a hyper connection it cannot look into.
#[derive(Debug, Default)]
pub(crate) struct Rest {
    /// Exchanges whose response body hyper still holds.
    in_flight: AtomicUsize,
    /// The framing check is between requests and hyper has read every byte it was given.
    at_rest: AtomicBool,
    /// Set once hyper was asked to finish for parking: its shutdown of the I/O is not
    /// passed on.
    parking: AtomicBool,
}

impl Rest {
    /// Whether the connection may be parked now (given that nothing moved for a while).
    pub fn parkable(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.at_rest.load(Ordering::Acquire)
    }

    pub fn set_parking(&self, on: bool) {
        self.parking.store(on, Ordering::Release);
    }

    pub fn parking(&self) -> bool {
        self.parking.load(Ordering::Acquire)
    }

    /// Counts an exchange from its request until hyper drops its response body.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

/// One exchange in flight (see [`Rest::busy`]).
pub(crate) struct Busy(Arc<Rest>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its exchange counted until hyper drops it.
struct Counted {
    inner: RespBody,
    _busy: Busy,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, counted as in flight until it is dropped.
pub(crate) fn counted(body: RespBody, busy: Busy) -> RespBody {
    Counted {
        inner: body,
        _busy: busy,
    }
    .boxed()
}

/// The I/O hyper is given: the framing-checked stream, bytes read before hyper existed
/// first, the rest signals kept, and no shutdown while parking.
pub(crate) struct Parkable<T> {
    inner: StrictIo<Tracked<T>>,
    prefix: Bytes,
    rest: Arc<Rest>,
}

impl<T> Parkable<T> {
    pub fn new(inner: StrictIo<Tracked<T>>, prefix: Bytes, rest: Arc<Rest>) -> Parkable<T> {
        rest.at_rest.store(false, Ordering::Release);
        Parkable {
            inner,
            prefix,
            rest,
        }
    }

    /// The stream back, with what hyper was given and did not read.
    pub fn into_inner(self) -> (StrictIo<Tracked<T>>, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Parkable<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // the framing check has seen these bytes already: hyper now has all it saw
                this.rest
                    .at_rest
                    .store(this.inner.at_rest(), Ordering::Release);
            }
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.rest
                .at_rest
                .store(this.inner.at_rest(), Ordering::Release);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Parkable<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rest.parking() {
            // hyper ends because it was asked to for parking: the connection goes on.
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
