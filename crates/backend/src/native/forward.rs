//! The bottle's only way out: loopback TCP ports relayed to the sidecars' host Unix sockets.
//!
//! Runs inside the bottle's init (see `sandbox`). Each host socket is held as an `O_PATH`
//! descriptor opened before `pivot_root` and connected through `/proc/self/fd/<n>`, so no host
//! socket path exists in the bottle. Every listener and connection is served by one event loop
//! on init's own thread ([`relay_until`]): relaying never needs a thread that the bottle's
//! `pids` limit could refuse.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Opens a sidecar's socket without connecting: an `O_PATH` handle usable after the host tree
/// is gone.
pub fn open_socket(path: &Path) -> io::Result<Arc<OwnedFd>> {
    let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", path.display()),
        )
    })?;
    let st = fstat(&fd).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a Unix socket", path.display()),
        ));
    }
    Ok(Arc::new(fd))
}

/// Brings the network namespace's loopback interface up (it starts down).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket used only for interface ioctls; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifreq` is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the `ifreq` we own; the union member
    // used is `ifru_flags`, the one these requests define.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: `sock` is the descriptor opened above.
    unsafe {
        libc::close(sock);
    }
    result
}

/// Relays every listener's connections until `until` completes, on the calling thread alone,
/// and returns what `until` returned.
///
/// One event loop (a single-threaded tokio runtime, which starts no thread of its own for
/// sockets, signals and timers) carries every connection: the forwarder never needs a new
/// thread, so a bottle whose processes have used up its `pids` limit — the forwarder runs in
/// the bottle's init, inside that limit — cannot starve it, and a connection is relayed both
/// ways or not at all. When the loop cannot be set up the listeners are closed before the
/// error returns, so clients are refused instead of waiting in the accept queue.
pub fn relay_until<T>(
    listeners: Vec<(TcpListener, Arc<OwnedFd>)>,
    until: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        for (listener, socket) in listeners {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(accept_loop(listener, socket));
        }
        until.await
    })
}

/// Runs the forwarder on one thread of its own, for ever (for tests and tools that are not a
/// bottle's init, which calls [`relay_until`] itself).
pub fn serve(listeners: Vec<(TcpListener, Arc<OwnedFd>)>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("forwarder".into())
        .spawn(move || {
            let _ = relay_until(listeners, std::future::pending::<io::Result<()>>());
        })
        .map(drop)
}

/// How long a connection waits for a sidecar whose accept queue is full before it is closed.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

async fn accept_loop(listener: tokio::net::TcpListener, socket: Arc<OwnedFd>) {
    let target = PathBuf::from(format!("/proc/self/fd/{}", socket.as_raw_fd()));
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(relay(tcp, target.clone()));
            }
            // Out of descriptors or memory: the connection stays queued; try again shortly
            // rather than spinning on a listener that stays readable.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Connects to the sidecar and copies both ways until both directions have ended; each end of
/// stream is passed on as a half-close. Any failure drops both sockets, so the client sees the
/// connection close rather than wait. The copy reads each socket until the kernel says it
/// would block (`crate::socket_copy`, shared with the in-bottle relay), so an end of stream
/// that came with the last data is passed on also where epoll reports no `EPOLLRDHUP`.
async fn relay(tcp: tokio::net::TcpStream, target: PathBuf) {
    let Some(unix) = connect(&target).await else {
        // The sidecar is gone or refuses.
        return;
    };
    let _ = crate::socket_copy::copy_both_ways(&tcp, &unix).await;
}

/// A non-blocking connect answers `EAGAIN` while the sidecar's accept queue is full; retried
/// for [`CONNECT_PATIENCE`] so a burst does not turn into refused connections.
async fn connect(target: &Path) -> Option<tokio::net::UnixStream> {
    let give_up = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match tokio::net::UnixStream::connect(target).await {
            Ok(unix) => return Some(unix),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::os::unix::net::UnixListener;

    /// A forwarder (on its own thread, as in a bottle's init) from a fresh loopback port to
    /// `sock`; the port.
    fn forwarder_to(sock: &Path) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        serve(vec![(listener, open_socket(sock).unwrap())]).unwrap();
        port
    }

    fn client(port: u16) -> TcpStream {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A bounded read: the test fails instead of hanging.
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    fn read_all(s: &mut impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_relay_carries_both_directions_and_each_end_of_stream() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sidecar.sock");
        let sidecar = UnixListener::bind(&sock).unwrap();
        let port = forwarder_to(&sock);
        let mut c = client(port);
        let (mut s, _) = sidecar.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"request").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        // The client's end of stream reaches the sidecar, whose answer still comes back.
        assert_eq!(read_all(&mut s), b"request");
        s.write_all(b"answer").unwrap();
        drop(s);
        assert_eq!(read_all(&mut c), b"answer");
    }

    /// Each end of stream sent right behind the last data (so both reach the forwarder
    /// together) is passed on, round after round: the agent's request and half-close reach the
    /// sidecar, the sidecar's answer and close reach the agent. Under gVisor, whose epoll
    /// reports no `EPOLLRDHUP` for TCP, tokio's `copy_bidirectional` never saw these ends.
    #[test]
    fn each_end_of_stream_that_comes_with_the_last_data_is_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sidecar.sock");
        let sidecar = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for conn in sidecar.incoming() {
                let Ok(mut conn) = conn else { return };
                conn.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut request = Vec::new();
                let _ = conn.read_to_end(&mut request);
                let _ = conn.write_all(&[b"answer to ".as_slice(), &request].concat());
            }
        });
        let port = forwarder_to(&sock);
        // The rounds on a thread of their own, waited for with a limit: a lost end of stream
        // fails the test, whether or not the kernel honours the sockets' read timeouts.
        let (done, rounds) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for round in 0..20 {
                let mut c = client(port);
                let mut answer = Vec::new();
                let got = c
                    .write_all(b"request")
                    .and_then(|()| c.shutdown(Shutdown::Write))
                    .and_then(|()| c.read_to_end(&mut answer));
                if got.is_err() || answer != b"answer to request" {
                    let _ = done.send(Err(format!("round {round}: {got:?}, {answer:?}")));
                    return;
                }
            }
            let _ = done.send(Ok(()));
        });
        match rounds.recv_timeout(Duration::from_secs(60)) {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("an end of stream was not passed on within 60 s"),
        }
    }

    #[test]
    fn many_connections_at_once_are_all_relayed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sidecar.sock");
        let sidecar = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for conn in sidecar.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut byte = [0u8; 1];
                if conn.read_exact(&mut byte).is_ok() {
                    let _ = conn.write_all(&[byte[0], b'!']);
                }
            }
        });
        let port = forwarder_to(&sock);
        // All open before any is answered: one event loop holds them all.
        let mut clients: Vec<TcpStream> = (0..64).map(|_| client(port)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(&[b'a' + (i % 26) as u8]).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(read_all(c), [b'a' + (i % 26) as u8, b'!']);
        }
    }

    #[test]
    fn a_connection_to_a_sidecar_that_is_gone_is_closed_not_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sidecar.sock");
        let sidecar = UnixListener::bind(&sock).unwrap();
        let port = forwarder_to(&sock);
        drop(sidecar);
        let mut c = client(port);
        let _ = c.write_all(b"request");
        let mut buf = Vec::new();
        // Closed (end of stream or reset), never a read timeout.
        match c.read_to_end(&mut buf) {
            Ok(_) => assert_eq!(buf, b""),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    #[test]
    fn relay_until_returns_what_until_returned_and_closes_the_ports() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sidecar.sock");
        let _sidecar = UnixListener::bind(&sock).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = relay_until(vec![(listener, open_socket(&sock).unwrap())], async {
            Ok::<_, io::Error>(7)
        })
        .unwrap();
        assert_eq!(got, 7);
        assert_eq!(
            TcpStream::connect(("127.0.0.1", port)).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }
}
