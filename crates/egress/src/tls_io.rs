//! Fewer, larger reads around rustls on the proxy's two TLS sessions (issue 22: where the
//! proxy's CPU goes, bench/README.md "egress: where the proxy's CPU goes").
//!
//! Two shapes cost the proxy syscalls and task hops per byte moved, not per request:
//!
//! * rustls reads its transport into its record buffer, at most about one record (16 KiB)
//!   per `read` (measured: 64.5 `recvfrom` per MiB of a download). [`ReadAhead`], under
//!   rustls, reads up to 64 KiB at once while bytes keep coming and hands them to rustls
//!   from memory (16 per MiB); while reads come back short (a request, a response of a few
//!   bytes) it reads straight into rustls' buffer, as without it, and holds no memory.
//! * tokio-rustls answers a read with at most one record's plaintext (16 KiB), so hyper's
//!   client turns a download into one body frame per record, each a hop from the upstream
//!   connection's task to the client's and one `write` of one record to the client.
//!   [`ReadMore`], above rustls, keeps reading records that are already at hand (decrypted
//!   or in [`ReadAhead`]'s memory) into the same read, up to 64 KiB: a frame then carries
//!   up to four records, which go to the client in one `writev`.
//!
//! Neither looks at or changes a byte: the TLS records, their checks and every check above
//! them (framing, DLP, limits, timeouts) see the same bytes in the same order. An error met
//! after some bytes were read is kept and returned by the next read, so it is never lost.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much [`ReadAhead`] reads at once, and [`ReadMore`] gathers into one read: four full
/// TLS records.
const CHUNK: usize = 64 * 1024;

/// A transport under rustls that reads ahead while data keeps coming (see the module docs).
pub(crate) struct ReadAhead<T> {
    inner: T,
    /// Bytes read and not yet handed out are `buf[pos..]`; empty (no allocation) when none.
    buf: Vec<u8>,
    pos: usize,
    /// The last read filled what was asked: more is likely waiting, so read ahead.
    streaming: bool,
}

impl<T> ReadAhead<T> {
    pub(crate) fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            buf: Vec::new(),
            pos: 0,
            streaming: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.buf.len() {
            let n = out.remaining().min(this.buf.len() - this.pos);
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.buf.len() {
                // drained: the memory goes back until the next burst
                this.buf = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let asked = out.remaining();
        if !this.streaming || asked >= CHUNK {
            let before = out.filled().len();
            let r = Pin::new(&mut this.inner).poll_read(cx, out);
            if let Poll::Ready(Ok(())) = r {
                this.streaming = asked > 0 && out.filled().len() - before == asked;
            }
            return r;
        }
        let mut buf = Vec::with_capacity(CHUNK);
        let mut read = ReadBuf::uninit(buf.spare_capacity_mut());
        let r = Pin::new(&mut this.inner).poll_read(cx, &mut read);
        let n = read.filled().len();
        match r {
            Poll::Ready(Ok(())) => {
                // SAFETY: `ReadBuf` guarantees its filled part (the first `n` bytes of the
                // spare capacity it was made from) has been initialized, and `n <= CHUNK`,
                // the capacity.
                unsafe { buf.set_len(n) };
                this.streaming = n == CHUNK;
                let give = out.remaining().min(n);
                out.put_slice(&buf[..give]);
                if give < n {
                    this.buf = buf;
                    this.pos = give;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.streaming = false;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
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
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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

/// A TLS stream whose reads gather the records already at hand, up to [`CHUNK`] (see the
/// module docs).
pub(crate) struct ReadMore<T> {
    inner: T,
    /// An error met after a read had already returned bytes: the next read returns it.
    error: Option<io::Error>,
}

impl<T> ReadMore<T> {
    pub(crate) fn new(inner: T) -> ReadMore<T> {
        ReadMore { inner, error: None }
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadMore<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        let start = out.filled().len();
        let limit = start + out.remaining().min(CHUNK);
        loop {
            let before = out.filled().len();
            let room = limit - before;
            let mut part = out.take(room);
            let r = Pin::new(&mut this.inner).poll_read(cx, &mut part);
            let n = part.filled().len();
            // SAFETY: `part` was made from the start of `out`'s unfilled memory, and `ReadBuf`
            // guarantees the `n` bytes it reports filled were initialized by the inner read.
            unsafe { out.assume_init(n) };
            out.advance(n);
            let got = out.filled().len() - start;
            match r {
                Poll::Ready(Ok(())) if n > 0 && out.filled().len() < limit => continue,
                // the end, a full read, or nothing more at hand: what was read so far
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                Poll::Pending if got > 0 => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) if got > 0 => {
                    this.error = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadMore<T> {
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
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::collections::VecDeque;
    use tokio::io::AsyncReadExt;

    /// A transport that answers each read with at most `per_read` bytes of the next burst,
    /// `Pending` (woken at once) between bursts, then an end or an error; it counts reads.
    struct Script {
        bursts: VecDeque<Vec<u8>>,
        per_read: usize,
        /// `Pending` between bursts (else the bursts run together).
        gaps: bool,
        gap: bool,
        error_at_end: bool,
        reads: usize,
    }

    impl Script {
        fn new(bursts: Vec<Vec<u8>>, per_read: usize) -> Script {
            Script {
                bursts: bursts.into(),
                per_read,
                gaps: true,
                gap: false,
                error_at_end: false,
                reads: 0,
            }
        }
    }

    impl AsyncRead for Script {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            if this.gap {
                this.gap = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let Some(front) = this.bursts.front_mut() else {
                return if this.error_at_end {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut")))
                } else {
                    Poll::Ready(Ok(()))
                };
            };
            let n = front.len().min(buf.remaining()).min(this.per_read);
            buf.put_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                this.bursts.pop_front();
                this.gap = this.gaps;
            }
            Poll::Ready(Ok(()))
        }
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Reads everything in pieces of at most `ask` bytes (rustls asks for 4 KiB).
    async fn drain<R: AsyncRead + Unpin>(r: &mut R, ask: usize) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut piece = vec![0u8; ask];
        loop {
            let n = r.read(&mut piece).await?;
            if n == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&piece[..n]);
        }
    }

    #[tokio::test]
    async fn read_ahead_passes_every_byte_in_order_with_fewer_reads_while_streaming() {
        let bursts = vec![pattern(300_000, 1), pattern(70_000, 2), pattern(5, 3)];
        let want: Vec<u8> = bursts.concat();
        let mut plain = Script::new(bursts.clone(), usize::MAX);
        assert_eq!(drain(&mut plain, 4096).await.unwrap(), want);
        let mut ahead = ReadAhead::new(Script::new(bursts, usize::MAX));
        assert_eq!(drain(&mut ahead, 4096).await.unwrap(), want);
        // 4 KiB asks: ~92 reads plain; read ahead, 64 KiB at once once the reads come back full
        assert!(
            ahead.inner.reads * 4 < plain.reads,
            "{} reads ahead, {} plain",
            ahead.inner.reads,
            plain.reads
        );
        assert!(ahead.buf.capacity() == 0, "memory kept after the end");
    }

    #[tokio::test]
    async fn read_ahead_reads_short_messages_straight_and_keeps_no_memory() {
        let bursts: Vec<Vec<u8>> = (0..50).map(|i| pattern(120, i)).collect();
        let want: Vec<u8> = bursts.concat();
        let mut ahead = ReadAhead::new(Script::new(bursts, usize::MAX));
        let mut piece = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            let n = ahead.read(&mut piece).await.unwrap();
            assert!(ahead.buf.capacity() == 0, "a short message was read ahead");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn read_ahead_hands_out_what_it_holds_before_an_error() {
        let mut script = Script::new(vec![pattern(200_000, 7)], usize::MAX);
        script.error_at_end = true;
        let mut ahead = ReadAhead::new(script);
        let err = drain(&mut ahead, 4096).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // every byte came out before the error: read it again byte-counted
        let mut script = Script::new(vec![pattern(200_000, 7)], usize::MAX);
        script.error_at_end = true;
        let mut ahead = ReadAhead::new(script);
        let mut piece = vec![0u8; 4096];
        let mut n = 0;
        while let Ok(k) = ahead.read(&mut piece).await {
            assert!(k > 0, "an end instead of the error");
            n += k;
        }
        assert_eq!(n, 200_000);
    }

    #[tokio::test]
    async fn read_more_gathers_records_at_hand_up_to_64_kib() {
        // a TLS stream gives one record (16 KiB) per read
        let data = pattern(1_000_000, 9);
        let mut more = ReadMore::new(Script::new(vec![data.clone()], 16 * 1024));
        let mut first = vec![0u8; 400 * 1024];
        let n = more.read(&mut first).await.unwrap();
        assert_eq!(n, CHUNK);
        assert_eq!(&first[..n], &data[..n]);
        let rest = drain(&mut more, 400 * 1024).await.unwrap();
        assert_eq!([&first[..n], &rest[..]].concat(), data);
    }

    #[tokio::test]
    async fn read_more_returns_what_it_has_when_nothing_more_is_at_hand() {
        let mut more = ReadMore::new(Script::new(
            vec![pattern(20_000, 1), pattern(10, 2)],
            16 * 1024,
        ));
        let mut buf = vec![0u8; 400 * 1024];
        // 16 KiB, then the rest of the burst; the gap (`Pending`) ends the read
        assert_eq!(more.read(&mut buf).await.unwrap(), 20_000);
        assert_eq!(more.read(&mut buf).await.unwrap(), 10);
        assert_eq!(more.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn read_more_keeps_an_error_met_after_bytes_for_the_next_read() {
        let mut script = Script::new(vec![pattern(20_000, 1)], 16 * 1024);
        script.error_at_end = true;
        // no gap after the last burst: the error comes within the read that has its bytes
        script.gaps = false;
        let mut more = ReadMore::new(script);
        let mut buf = vec![0u8; 400 * 1024];
        assert_eq!(more.read(&mut buf).await.unwrap(), 20_000);
        assert!(more.error.is_some());
        let mut total = 20_000;
        let err = loop {
            match more.read(&mut buf).await {
                Ok(0) => panic!("an end instead of the error"),
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(total, 20_000);
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
