//! The `network` section: TCP, UDP and IPv6 to the canaries (the "internet", the LAN, the
//! host's loopback and its addresses on the bottle's networks), the allowed upstream directly,
//! another bottle's sidecars, raw and packet sockets, and the bottle's interfaces and routes.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::config::Cfg;
use crate::sockets::{has_route, reach_canary, tcp, udp_send};
use crate::verdict::{Tally, blocked, escaped, na};

/// The host as the bottle could meet it on its own networks: the gateway and the first
/// The host as the bottle could meet it on its own networks: the gateway and the first
/// address of every non-loopback route (`/proc/net/route`; Docker gives a network's bridge
/// its first address), plus the host addresses the harness names (`host_addrs`).
pub(crate) fn host_addresses(c: &Cfg) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = c
        .list("host_addrs")
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let hex = |f: &str| u32::from_str_radix(f, 16).ok().map(|v| v.to_le_bytes());
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0] == "lo" {
            continue;
        }
        let (Some(dest), Some(gw), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else {
            continue;
        };
        if gw != [0; 4] {
            out.push(IpAddr::from(gw));
        }
        if dest != [0; 4] && mask != [255; 4] {
            let first = u32::from_be_bytes(dest).wrapping_add(1);
            out.push(IpAddr::from(first.to_be_bytes()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `network` section.
pub(crate) fn cases(c: &Cfg) {
    let inet4 = c.s("inet4");
    let inet6 = c.s("inet6");
    let lan4 = c.s("lan4");
    let tport = c.n("canary_tcp_port");
    let uport = c.n("canary_udp_port");
    let hport = c.n("host_canary_port");

    for (name, addr) in [
        ("net-tcp-internet", format!("{inet4}:{tport}")),
        ("net-tcp-lan", format!("{lan4}:{tport}")),
        ("net-tcp-host-loopback", format!("127.0.0.1:{hport}")),
        ("net-ipv6-internet", format!("[{inet6}]:{tport}")),
        ("net-ipv6-host-loopback", format!("[::1]:{hport}")),
    ] {
        match reach_canary(&addr) {
            Ok(b) => escaped(name, format!("reached {addr}: {b}")),
            Err(e) => blocked(name, e),
        }
    }
    for (name, addr) in [
        ("net-udp-internet", format!("{inet4}:{uport}")),
        ("net-udp-lan", format!("{lan4}:{uport}")),
        ("net-udp-host-loopback", format!("127.0.0.1:{uport}")),
    ] {
        match udp_send(&addr) {
            Ok(b) => escaped(name, format!("answer from {addr}: {b}")),
            Err(e) => blocked(name, format!("{e} (the canary's record decides)")),
        }
    }

    // The host on the bottle's networks (docker: the bridges), where a service listening on
    // every address would answer. The canary listens on every host address.
    let hosts = host_addresses(c);
    if hosts.is_empty() {
        na(
            "net-host-via-bridge",
            "the bottle has no interface but lo (the host's loopback is net-tcp-host-loopback)",
        );
    } else {
        let mut t = Tally::new("net-host-via-bridge");
        for ip in &hosts {
            let addr = SocketAddr::new(*ip, hport).to_string();
            match reach_canary(&addr) {
                Ok(b) => t.escaped(format!("reached {addr}: {b}")),
                Err(e) => t.blocked(e),
            }
            let addr = SocketAddr::new(*ip, uport).to_string();
            match udp_send(&addr) {
                Ok(b) => t.escaped(format!("answer from {addr}: {b}")),
                Err(e) => t.blocked(format!("{e} (the canary's record decides)")),
            }
        }
        t.done();
    }

    // The allowed upstream, directly instead of through the proxy.
    let up = c.s("upstream_addr");
    if !up.is_empty() {
        match tcp(&up) {
            Ok(_) => escaped("net-upstream-direct", format!("connected to {up}")),
            Err(e) => blocked("net-upstream-direct", format!("{up}: {e}")),
        }
    }

    // Another running bottle's sidecars: its Unix sockets (native), its sidecar container's
    // address (docker) and the fixed ports.
    let mut t = Tally::new("net-other-bottle-sidecars");
    for addr in c.list("other_sidecar_addrs") {
        match tcp(&addr) {
            Ok(_) => t.escaped(format!("connected to {addr}")),
            Err(e) => t.blocked(format!("{addr}: {e}")),
        }
    }
    for sock in c.list("other_sockets") {
        match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(_) => t.escaped(format!("connected to {sock}")),
            Err(e) => t.blocked(format!("{sock}: {e}")),
        }
    }
    for p in ["/proc/net/unix"] {
        if let Ok(text) = std::fs::read_to_string(p) {
            let other = c.s("other_identity");
            if !other.is_empty() && text.contains(&other) {
                t.escaped(format!("{p} lists the other bottle's sockets"));
            } else {
                t.blocked(format!("{p} names no other bottle"));
            }
        }
    }
    t.done();

    // Raw and packet sockets.
    let mut t = Tally::new("net-raw-packet-sockets");
    for (what, dom, ty, proto) in [
        (
            "raw icmp",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        ("raw tcp", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
        (
            "packet",
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(u16::to_be(0x0003)),
        ),
    ] {
        // SAFETY: plain syscall; the descriptor is closed right away.
        let fd = unsafe { libc::socket(dom, ty, proto) };
        if fd >= 0 {
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            t.escaped(format!("{what} socket created"));
        } else {
            t.blocked(format!("{what}: {}", std::io::Error::last_os_error()));
        }
    }
    t.done();

    // Interfaces and routes: the bottle should have only loopback.
    let mut t = Tally::new("net-interfaces");
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    let non_lo: Vec<&&str> = ifaces.iter().filter(|i| **i != "lo").collect();
    for ip in [&inet4, &lan4, &inet6] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            if !has_route(ip) {
                t.blocked(format!("no route to {ip}"));
                continue;
            }
            // A route (docker: every container has one): does a datagram leave? Only the
            // bottle's own packet filter refusing it (EPERM) counts as blocked.
            let to = SocketAddr::new(ip, uport);
            let bind = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            match UdpSocket::bind(bind).and_then(|s| s.send_to(b"escape-probe route", to)) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => t.blocked(format!(
                    "route to {ip}, but the bottle's packet filter refuses to send ({e})"
                )),
                Err(e) => t.escaped(format!("route to {ip} (send: {e})")),
                Ok(_) => t.escaped(format!("route to {ip}: a datagram to {to} left")),
            }
        }
    }
    if non_lo.is_empty() {
        t.blocked("only lo");
    } else {
        t.blocked(format!(
            "interfaces {non_lo:?} (reported; reachability is checked by the canaries)"
        ));
    }
    t.done();
}
