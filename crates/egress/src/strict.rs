//! A strict HTTP/1 framing check in front of hyper.
//!
//! hyper is lenient where a proxy must not be: it accepts bare `LF` line endings and
//! duplicate `Host` headers, and leaves it to the application to care about conflicting
//! `Content-Length` / `Transfer-Encoding`. A front end and a back end that disagree on
//! such shapes is how request smuggling works, so this wrapper follows the message
//! framing of everything a client sends (heads, fixed-length bodies, chunked bodies) and
//! fails the connection on the first ambiguous byte, before hyper ever parses it. After a
//! `CONNECT` or a real upgrade request (`Upgrade` *and* `Connection: upgrade`) it steps
//! aside (the bytes are TLS or a WebSocket, checked elsewhere); the proxy then closes the
//! connection after its response unless the protocol really switched. An `Upgrade` header
//! alone is an ordinary request and changes nothing here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailer,
    Passthrough,
}

/// The stream wrapper.
pub(crate) struct StrictIo<T> {
    inner: T,
    state: State,
    line: Vec<u8>,
    head: Vec<u8>,
    lines: usize,
    limits: Limits,
}

impl<T> StrictIo<T> {
    pub fn new(inner: T, limits: Limits) -> StrictIo<T> {
        StrictIo {
            inner,
            state: State::Head,
            line: Vec::new(),
            head: Vec::new(),
            lines: 0,
            limits,
        }
    }

    /// Between requests: every message read so far ended, and nothing of a next one (not
    /// even an empty line) was read. The framing check is then in the state a new
    /// connection starts in, and a connection in it may be parked (see [`crate::park`]).
    pub fn at_rest(&self) -> bool {
        self.state == State::Head && self.lines == 0 && self.line.is_empty()
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), &'static str> {
        while !data.is_empty() {
            match self.state {
                State::Passthrough => return Ok(()),
                State::Body(n) | State::ChunkData(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkDataEnd(0),
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkDataEnd(k) => {
                    let want = if k == 0 { b'\r' } else { b'\n' };
                    if data[0] != want {
                        return Err("chunk data not followed by CRLF");
                    }
                    data = &data[1..];
                    self.state = if k == 0 {
                        State::ChunkDataEnd(1)
                    } else {
                        State::ChunkSize
                    };
                }
                State::Head | State::ChunkSize | State::Trailer => {
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' {
                        if self.line.last() != Some(&b'\r') {
                            return Err("bare LF line ending");
                        }
                        self.line.pop();
                        self.end_line()?;
                    } else {
                        if self.line.last() == Some(&b'\r') {
                            return Err("bare CR in a line");
                        }
                        self.line.push(b);
                        let max = match self.state {
                            State::Head if self.lines == 0 => self.limits.request_line,
                            State::Head => self.limits.head,
                            _ => 4096,
                        };
                        if self.line.len() > max
                            || self.head.len() + self.line.len() > self.limits.head
                        {
                            return Err(if self.lines == 0 && self.state == State::Head {
                                "request line too long"
                            } else {
                                "header section too large"
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), &'static str> {
        let line = std::mem::take(&mut self.line);
        match self.state {
            State::Head => {
                if line.is_empty() {
                    if self.lines == 0 {
                        return Ok(()); // tolerated empty line before a request
                    }
                    self.head.extend_from_slice(b"\r\n");
                    let next = analyse(&self.head, self.limits.headers)?;
                    // Freed, not cleared: a connection waits between requests (and a
                    // tunnel's outer connection for its whole life) without holding the
                    // capacity of its largest head.
                    self.head = Vec::new();
                    self.lines = 0;
                    self.state = next;
                } else {
                    self.lines += 1;
                    if self.lines > self.limits.headers + 1 {
                        return Err("too many header fields");
                    }
                    self.head.extend_from_slice(&line);
                    self.head.extend_from_slice(b"\r\n");
                }
            }
            State::ChunkSize => {
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
                    return Err("malformed chunk size");
                }
                let n = u64::from_str_radix(std::str::from_utf8(size).unwrap_or("x"), 16)
                    .map_err(|_| "malformed chunk size")?;
                self.state = if n == 0 {
                    State::Trailer
                } else {
                    State::ChunkData(n)
                };
            }
            State::Trailer if line.is_empty() => self.state = State::Head,
            _ => {}
        }
        Ok(())
    }
}

/// [`analyse`] without the framing it found: whether a complete head passes (for the fuzz
/// target).
pub(crate) fn check_head(head: &[u8], max_headers: usize) -> Result<(), &'static str> {
    analyse(head, max_headers).map(|_| ())
}

/// Checks a complete head and says how the message body is framed.
fn analyse(head: &[u8], max_headers: usize) -> Result<State, &'static str> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
        Err(_) => return Err("malformed request head"),
    }
    let mut hosts = 0;
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut te: Vec<&[u8]> = Vec::new();
    let mut upgrade = false;
    let mut connection_upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te.push(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        }
    }
    if hosts > 1 {
        return Err("duplicate Host header");
    }
    if !te.is_empty() && !lengths.is_empty() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if lengths.len() > 1 {
        return Err("more than one Content-Length");
    }
    if req.method == Some("CONNECT") || (upgrade && connection_upgrade) {
        return Ok(State::Passthrough);
    }
    if !te.is_empty() {
        if te.len() > 1 || !te[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err("unsupported Transfer-Encoding");
        }
        return Ok(State::ChunkSize);
    }
    if let Some(v) = lengths.first() {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
            return Err("malformed Content-Length");
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed Content-Length")?;
        return Ok(if n == 0 { State::Head } else { State::Body(n) });
    }
    Ok(State::Head)
}

impl<T: AsyncRead + Unpin> AsyncRead for StrictIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.state != State::Passthrough
                    && let Err(why) = this.feed(&buf.filled()[before..])
                {
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StrictIo<T> {
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

    fn check(input: &[u8]) -> Result<(), &'static str> {
        let mut s = StrictIo::new((), Limits::default());
        s.feed(input)
    }

    #[test]
    fn accepts_well_formed_pipelines() {
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nab\ncd\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(check(ok), Ok(()));
        // byte at a time gives the same answer
        let mut s = StrictIo::new((), Limits::default());
        for b in ok.iter() {
            assert_eq!(s.feed(std::slice::from_ref(b)), Ok(()));
        }
    }

    #[test]
    fn holds_no_head_between_requests() {
        // An idle keep-alive connection (and a tunnel's outer connection, which steps aside
        // after its CONNECT) keeps no copy of the last head, however large it was.
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n",
            "c".repeat(4000)
        );
        let mut s = StrictIo::new((), Limits::default());
        assert_eq!(s.feed(big.as_bytes()), Ok(()));
        assert_eq!((s.head.capacity(), s.line.capacity()), (0, 0));
        assert_eq!(
            s.feed(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Ok(())
        );
        assert_eq!(s.state, State::Passthrough);
        assert_eq!((s.head.capacity(), s.line.capacity()), (0, 0));
    }

    #[test]
    fn refuses_smuggling_shapes() {
        let cases: [(&[u8], &str); 9] = [
            (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF line ending"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate Host header"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "more than one Content-Length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", "malformed Content-Length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX", "chunk data not followed by CRLF"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n", "bare LF line ending"),
        ];
        for (input, want) in cases {
            assert_eq!(
                check(input),
                Err(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(check(long.as_bytes()), Err("request line too long"));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(120));
        assert_eq!(check(many.as_bytes()), Err("too many header fields"));
    }

    #[test]
    fn an_upgrade_header_alone_does_not_switch_the_check_off() {
        let smuggled: [(&[u8], &str); 3] = [
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "more than one Content-Length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"),
            (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF line ending"),
        ];
        for first in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: keep-alive\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            for (second, want) in smuggled {
                let input = [first, second].concat();
                assert_eq!(
                    check(&input),
                    Err(want),
                    "{}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        // a real upgrade steps aside
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello\n"),
            Ok(())
        );
    }
}
