//! The in-bottle half of a sidecar endpoint on backends whose sidecars are not on the
//! bottle's own loopback (docker: a sidecar container; qemu: the host beyond the guest's user
//! network): PID 1 listens on `127.0.0.1:<port>` (and `[::1]:<port>` where the bottle has IPv6)
//! and relays each connection to where the sidecar really is, so the agent's contract
//! (addresses, proxy variables) is the same on every backend.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Listens on the loopback `port` and relays every connection to `target`, each on its own
/// thread, half-closes kept. Fails only when the IPv4 loopback port cannot be bound.
pub(crate) fn listen_loopback(port: u16, target: SocketAddr) -> Result<(), String> {
    let v4 = TcpListener::bind(("127.0.0.1", port))
        .map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
    spawn_acceptor(v4, target);
    // IPv6 loopback only where the bottle has IPv6 at all.
    if let Ok(v6) = TcpListener::bind(("::1", port)) {
        spawn_acceptor(v6, target);
    }
    Ok(())
}

/// Listens on the loopback `port` and relays every connection to the Unix socket `target`
/// (smolmachines: the sidecar's host socket bridged into the guest).
pub(crate) fn listen_loopback_unix(port: u16, target: &Path) -> Result<(), String> {
    let v4 = TcpListener::bind(("127.0.0.1", port))
        .map_err(|err| format!("cannot listen on 127.0.0.1:{port}: {err}"))?;
    spawn_unix_acceptor(v4, target.to_path_buf());
    if let Ok(v6) = TcpListener::bind(("::1", port)) {
        spawn_unix_acceptor(v6, target.to_path_buf());
    }
    Ok(())
}

fn spawn_unix_acceptor(listener: TcpListener, target: PathBuf) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(inbound) = conn else { continue };
            let target = target.clone();
            std::thread::spawn(move || {
                let Ok(outbound) = UnixStream::connect(&target) else {
                    return;
                };
                let (Ok(mut in_read), Ok(mut out_read)) =
                    (inbound.try_clone(), outbound.try_clone())
                else {
                    return;
                };
                let (mut in_write, mut out_write) = (inbound, outbound);
                let upstream = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut in_read, &mut out_write);
                    let _ = out_write.shutdown(Shutdown::Write);
                });
                let _ = std::io::copy(&mut out_read, &mut in_write);
                let _ = in_write.shutdown(Shutdown::Write);
                let _ = upstream.join();
            });
        }
    });
}

fn spawn_acceptor(listener: TcpListener, target: SocketAddr) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(inbound) = conn else { continue };
            std::thread::spawn(move || relay(inbound, target));
        }
    });
}

fn relay(inbound: TcpStream, target: SocketAddr) {
    let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
        return;
    };
    let (Ok(mut in_read), Ok(mut out_read)) = (inbound.try_clone(), outbound.try_clone()) else {
        return;
    };
    let (mut in_write, mut out_write) = (inbound, outbound);
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut in_read, &mut out_write);
        let _ = out_write.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut out_read, &mut in_write);
    let _ = in_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_loopback_port_reaches_the_unix_socket_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(&[b"echo:".as_slice(), &got].concat())
                .unwrap();
        });
        // A free loopback port.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        super::listen_loopback_unix(port, &socket).unwrap();
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"CONNECT api.example:443").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "echo:CONNECT api.example:443");
    }
}
