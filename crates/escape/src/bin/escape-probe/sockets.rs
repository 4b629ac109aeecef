//! Plain sockets shared by the sections: TCP with short timeouts, the canary's banner, UDP,
//! and whether a route exists (asked without sending anything).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// The connect timeout of every TCP attempt.
pub(crate) const T: Duration = Duration::from_secs(2);

/// A TCP connection with the probe's timeouts.
pub(crate) fn tcp(addr: &str) -> std::io::Result<TcpStream> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let s = TcpStream::connect_timeout(&sa, T)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Connects to a canary and reads its banner: `Ok(banner)` means the canary was reached.
pub(crate) fn reach_canary(addr: &str) -> Result<String, String> {
    let mut s = tcp(addr).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.write_all(b"escape-probe\n");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| format!("{addr}: read: {e}"))?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    if text.starts_with("CANARY") {
        Ok(text.trim().to_string())
    } else {
        Err(format!(
            "{addr}: connected to something that is not the canary"
        ))
    }
}

/// A datagram to `addr`: `Ok(answer)` means something answered.
pub(crate) fn udp_send(addr: &str) -> Result<String, String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let bind = if sa.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    // Connected, so an ICMP "port unreachable" ends the wait at once.
    s.connect(sa).map_err(|e| format!("{addr}: {e}"))?;
    s.send(b"escape-probe")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = [0u8; 64];
    match s.recv(&mut buf) {
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).to_string()),
        Err(e) => Err(format!("{addr}: sent, no answer ({e})")),
    }
}

/// Whether the bottle has a route to `ip` (a UDP connect sends nothing).
pub(crate) fn has_route(ip: IpAddr) -> bool {
    let bind = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    UdpSocket::bind(bind)
        .and_then(|s| s.connect(SocketAddr::new(ip, 53)))
        .is_ok()
}
