//! Copying a relayed connection both ways: the one copy of the in-bottle relay
//! (`inbottle::relay`) and the native forwarder (`native::forward`).
//!
//! Each read goes on until the kernel says it would block before the loop waits for the
//! socket again ([`read_some`]). tokio's own `read` (and so `copy_bidirectional`) takes a short
//! read as "the socket is drained" and waits for the next readiness edge, which never comes
//! when the peer's last data and its end of stream were queued together and the kernel reports
//! no `EPOLLRDHUP`: gVisor's network stack (runsc) reports none for TCP, so there the end of
//! stream was never read, and the agent (or, for a half-close, the sidecar) waited for ever.

use std::os::fd::{AsFd, AsRawFd};
use std::task::{Context, Poll};

use tokio::net::{TcpStream, UnixStream};

/// Bytes one direction of a relayed connection carries per read.
const COPY_BUFFER: usize = 16 * 1024;

/// One end of a relayed connection (a TCP or Unix stream), read and written only through
/// [`read_some`] and [`write_all`].
pub(crate) trait Conn: AsFd {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

macro_rules! conn {
    ($t:ty) => {
        impl Conn for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
                <$t>::try_write(self, buf)
            }
        }
    };
}
conn!(TcpStream);
conn!(UnixStream);

/// What `conn` has to read (`0`: its end of stream). Reads until the kernel says it would
/// block before waiting for the event loop (tokio clears a socket's readiness only then), so
/// an end of stream queued behind the last data is read without a readiness edge of its own.
pub(crate) async fn read_some(conn: &impl Conn, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match conn.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| conn.poll_read_ready(cx)).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            read => return read,
        }
    }
}

/// Writes all of `buf` to `conn`, waiting for the event loop only after the kernel said it
/// would block (as [`read_some`]).
async fn write_all(conn: &impl Conn, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match conn.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| conn.poll_write_ready(cx)).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies `from` to `to` until `from` ends, then passes the end on (`to`'s write side is shut
/// down, the other direction goes on).
async fn copy_one_way(from: &impl Conn, to: &impl Conn) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        match read_some(from, &mut buf).await? {
            0 => {
                nix::sys::socket::shutdown(
                    to.as_fd().as_raw_fd(),
                    nix::sys::socket::Shutdown::Write,
                )?;
                return Ok(());
            }
            n => write_all(to, &buf[..n]).await?,
        }
        // Neither `try_read` nor `try_write` counts against the task's budget (tokio's
        // `read` did): a peer that never makes us wait still lets the loop's other tasks run.
        tokio::task::coop::consume_budget().await;
    }
}

/// Copies both ways until both directions have ended, each end of stream passed on as a
/// half-close; the first error ends both.
pub(crate) async fn copy_both_ways(a: &impl Conn, b: &impl Conn) -> std::io::Result<()> {
    tokio::try_join!(copy_one_way(a, b), copy_one_way(b, a)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::time::Duration;

    /// Both ends of a fresh loopback TCP connection.
    fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let near = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (far, _) = listener.accept().unwrap();
        (near, far)
    }

    /// The sidecar's end of its connection with the relay, and the relay's.
    trait SidecarEnd: Read + Write + Send + 'static {
        type Relay: Conn;
        fn pair() -> (Self, Self::Relay)
        where
            Self: Sized;
        /// Reads time out: the test fails instead of hanging.
        fn bounded(&self) -> std::io::Result<()>;
    }

    impl SidecarEnd for std::net::TcpStream {
        type Relay = TcpStream;
        fn pair() -> (Self, TcpStream) {
            let (sidecar, relay) = tcp_pair();
            relay.set_nonblocking(true).unwrap();
            (sidecar, TcpStream::from_std(relay).unwrap())
        }
        fn bounded(&self) -> std::io::Result<()> {
            self.set_read_timeout(Some(Duration::from_secs(10)))
        }
    }

    impl SidecarEnd for std::os::unix::net::UnixStream {
        type Relay = UnixStream;
        fn pair() -> (Self, UnixStream) {
            let (sidecar, relay) = std::os::unix::net::UnixStream::pair().unwrap();
            relay.set_nonblocking(true).unwrap();
            (sidecar, UnixStream::from_std(relay).unwrap())
        }
        fn bounded(&self) -> std::io::Result<()> {
            self.set_read_timeout(Some(Duration::from_secs(10)))
        }
    }

    /// Rounds of one request and one answer through [`copy_both_ways`], each end of stream
    /// sent right behind its data (so both reach the relay together): the agent writes its
    /// request and half-closes, the sidecar reads it to its end, answers and closes; the
    /// agent reads the answer to its end. Under an epoll that reports no `EPOLLRDHUP` (gVisor)
    /// a copy that waits for readiness after a short read never sees either end.
    fn each_end_of_stream_crosses_the_copy<S: SidecarEnd>() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap();
        for round in 0..20 {
            let (mut agent, relay_in) = tcp_pair();
            let (mut sidecar, relay_out) = runtime.block_on(async { S::pair() });
            let peers = std::thread::spawn(move || {
                agent.set_read_timeout(Some(Duration::from_secs(10)))?;
                sidecar.bounded()?;
                agent.write_all(b"request")?;
                agent.shutdown(Shutdown::Write)?;
                let mut request = Vec::new();
                sidecar.read_to_end(&mut request)?;
                sidecar.write_all(b"answer")?;
                drop(sidecar);
                let mut answer = Vec::new();
                agent.read_to_end(&mut answer)?;
                Ok::<_, std::io::Error>((request, answer))
            });
            let copied = runtime.block_on(async {
                relay_in.set_nonblocking(true)?;
                let relay_in = TcpStream::from_std(relay_in)?;
                tokio::time::timeout(
                    Duration::from_secs(20),
                    copy_both_ways(&relay_in, &relay_out),
                )
                .await
                .map_err(|_| std::io::Error::other("an end of stream never crossed the copy"))?
            });
            assert!(copied.is_ok(), "round {round}: {copied:?}");
            let (request, answer) = peers.join().unwrap().unwrap();
            assert_eq!(request, b"request", "round {round}");
            assert_eq!(answer, b"answer", "round {round}");
        }
    }

    #[test]
    fn each_end_of_stream_crosses_a_copy_to_a_tcp_sidecar() {
        each_end_of_stream_crosses_the_copy::<std::net::TcpStream>();
    }

    #[test]
    fn each_end_of_stream_crosses_a_copy_to_a_unix_sidecar() {
        each_end_of_stream_crosses_the_copy::<std::os::unix::net::UnixStream>();
    }
}
