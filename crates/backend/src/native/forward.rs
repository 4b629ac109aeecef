//! The bottle's only way out: loopback TCP ports relayed to the sidecars' host Unix sockets.
//!
//! Runs inside the bottle's init (see `sandbox`). Each host socket is held as an `O_PATH`
//! descriptor opened before `pivot_root` and connected through `/proc/self/fd/<n>`, so no host
//! socket path exists in the bottle. One thread accepts per listener; each connection gets
//! two copying threads (bottles make few, long-lived connections through a proxy).

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

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

/// Starts one accept thread per listener and returns.
pub fn serve(listeners: Vec<(TcpListener, Arc<OwnedFd>)>) {
    for (listener, socket) in listeners {
        // Without its accept thread a port simply stays closed; nothing else depends on it.
        let _ = spawn(move || accept_loop(&listener, &socket));
    }
}

/// `thread::spawn` without the panic when the bottle has exhausted its threads.
fn spawn(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .map(drop)
}

fn accept_loop(listener: &TcpListener, socket: &OwnedFd) {
    let target = format!("/proc/self/fd/{}", socket.as_raw_fd());
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        match UnixStream::connect(&target) {
            Ok(unix) => relay(tcp, unix),
            // The sidecar is gone or refuses: the client sees the connection close.
            Err(_) => drop(tcp),
        }
    }
}

fn relay(tcp: TcpStream, unix: UnixStream) {
    relay_with(tcp, unix, spawn);
}

/// Starts the two copying threads of one connection with `spawn`. Each direction ends by
/// half-closing its destination, so an end of stream travels on and both threads finish.
/// If either thread cannot start, the whole connection is shut down: with only the upward
/// copy running the client's request would reach the sidecar but the answer never come
/// back, and the client would wait for ever.
fn relay_with(
    tcp: TcpStream,
    unix: UnixStream,
    spawn: impl Fn(Box<dyn FnOnce() + Send>) -> io::Result<()>,
) {
    let (Ok(tcp2), Ok(unix2), Ok(tcp_ctl), Ok(unix_ctl)) = (
        tcp.try_clone(),
        unix.try_clone(),
        tcp.try_clone(),
        unix.try_clone(),
    ) else {
        return;
    };
    let up = spawn(Box::new(move || {
        let (mut from, mut to) = (tcp, unix);
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    }));
    let down = up.and_then(|()| {
        spawn(Box::new(move || {
            let (mut from, mut to) = (unix2, tcp2);
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        }))
    });
    if down.is_err() {
        // Wakes a running copy (its read sees the end) and tells the client.
        let _ = tcp_ctl.shutdown(Shutdown::Both);
        let _ = unix_ctl.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// A bounded read: the test fails instead of hanging.
    fn read_to_end_bounded(s: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn a_relay_whose_second_thread_cannot_start_closes_the_connection() {
        let (mut client, tcp) = pair();
        let (unix, mut sidecar) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        sidecar
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let started = AtomicUsize::new(0);
        relay_with(tcp, unix, |f| {
            if started.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::spawn(f);
                Ok(())
            } else {
                Err(io::Error::other("no more threads"))
            }
        });
        client.write_all(b"request").unwrap();
        // The client sees the connection end instead of waiting for an answer for ever,
        // and so does the sidecar (whatever of the request got through first).
        assert_eq!(read_to_end_bounded(&mut client).unwrap(), b"");
        let got = read_to_end_bounded(&mut sidecar).unwrap();
        assert!(b"request".starts_with(&got), "{got:?}");
    }

    #[test]
    fn a_relay_carries_both_directions_and_each_end_of_stream() {
        let (mut client, tcp) = pair();
        let (unix, mut sidecar) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        sidecar
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        relay_with(tcp, unix, spawn);
        client.write_all(b"request").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end_bounded(&mut sidecar).unwrap(), b"request");
        sidecar.write_all(b"answer").unwrap();
        drop(sidecar);
        assert_eq!(read_to_end_bounded(&mut client).unwrap(), b"answer");
    }
}
