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
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    // If a copying thread cannot start, the connection is closed (both halves dropped).
    let up = spawn(move || {
        let (mut from, mut to) = (tcp, unix);
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    if up.is_ok() {
        let _ = spawn(move || {
            let (mut from, mut to) = (unix2, tcp2);
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    } else {
        let _ = tcp2.shutdown(Shutdown::Both);
    }
}
