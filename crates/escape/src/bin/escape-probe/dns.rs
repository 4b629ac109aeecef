//! The `dns` section: queries over UDP and TCP to every resolver the bottle knows of (only
//! loopback and the test's addresses are asked: the network rule), the system resolver, and
//! DNS over HTTPS through the proxy.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::config::Cfg;
use crate::http::{desc, https, is_block};
use crate::sockets::{T, has_route};
use crate::verdict::{Tally, blocked, escaped};

fn dns_query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(0));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn dns_udp(server: SocketAddr, name: &str) -> Result<usize, String> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("{e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    s.connect(server).map_err(|e| format!("{server}: {e}"))?;
    s.send(&dns_query(name, 0x4242))
        .map_err(|e| format!("{server}: {e}"))?;
    let mut buf = [0u8; 512];
    match s.recv(&mut buf) {
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{server}: no answer ({e})")),
    }
}

fn dns_tcp(server: SocketAddr, name: &str) -> Result<usize, String> {
    let mut s = TcpStream::connect_timeout(&server, T).map_err(|e| format!("{server}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let q = dns_query(name, 0x4343);
    let mut msg = u16::try_from(q.len()).unwrap_or(0).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    s.write_all(&msg).map_err(|e| format!("{e}"))?;
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("{server}: closed")),
        Err(e) => Err(format!("{server}: {e}")),
    }
}

/// The `dns` section.
pub(crate) fn cases(c: &Cfg) {
    let zone = c.s("zone");
    let mut servers: Vec<IpAddr> = Vec::new();
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for l in resolv.lines() {
        if let Some(ip) = l
            .strip_prefix("nameserver")
            .and_then(|r| r.trim().parse().ok())
        {
            servers.push(ip);
        }
    }
    for s in ["127.0.0.11", "127.0.0.53", "127.0.0.1", "::1"] {
        if let Ok(ip) = s.parse() {
            servers.push(ip);
        }
    }
    if let Ok(ip) = c.s("inet4").parse() {
        servers.push(ip);
    }
    servers.dedup();
    let mut tu = Tally::new("dns-udp");
    let mut tt = Tally::new("dns-tcp");
    for ip in servers {
        let loopback_or_test = ip.is_loopback() || ip.to_string() == c.s("inet4");
        if !loopback_or_test && has_route(ip) {
            // The network rule: never send to an address outside the test's namespaces.
            tu.escaped(format!("route to resolver {ip} exists (not queried)"));
            continue;
        }
        let sa = SocketAddr::new(ip, 53);
        match dns_udp(sa, &format!("leak-udp.{zone}")) {
            Ok(n) => tu.escaped(format!("{sa} answered ({n} bytes)")),
            Err(e) => tu.blocked(e),
        }
        match dns_tcp(sa, &format!("leak-tcp.{zone}")) {
            Ok(n) => tt.escaped(format!("{sa} answered ({n} bytes)")),
            Err(e) => tt.blocked(e),
        }
    }
    tu.done();
    tt.done();

    // The system resolver (getaddrinfo), only when nothing outside the test could get it.
    use std::net::ToSocketAddrs;
    let reachable_real: Vec<IpAddr> = resolv
        .lines()
        .filter_map(|l| {
            l.strip_prefix("nameserver")
                .and_then(|r| r.trim().parse().ok())
        })
        .filter(|ip: &IpAddr| !ip.is_loopback() && has_route(*ip))
        .collect();
    if !reachable_real.is_empty() {
        escaped(
            "dns-system-resolver",
            format!(
                "not run (network rule): the bottle has a route to the resolvers {reachable_real:?}"
            ),
        );
        return dns_doh(c, &zone);
    }
    match format!("leak-libc.{zone}:80").to_socket_addrs() {
        Ok(addrs) => {
            let a: Vec<_> = addrs.collect();
            escaped("dns-system-resolver", format!("resolved to {a:?}"))
        }
        Err(e) => blocked("dns-system-resolver", format!("{e}")),
    }

    dns_doh(c, &zone);
}

/// DNS over HTTPS through the proxy: to a host without a route, and to the allowed host on a
/// path outside its route.
fn dns_doh(c: &Cfg, zone: &str) {
    let mut t = Tally::new("dns-doh-through-proxy");
    let r = https(
        &format!("leak-doh.{zone}:443"),
        &format!("leak-doh.{zone}"),
        b"GET /dns-query?dns=AAABAAABAAAAAAAAA2ZvbwR0ZXN0AAABAAE HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    match &r {
        Ok(resp) if !is_block(resp) => t.escaped(format!("doh host answered {}", resp.status)),
        _ => t.blocked(format!("no-route doh host: {}", desc(&r))),
    }
    let api = c.s("api_host");
    let r = https(
        &format!("{api}:443"),
        &api,
        format!(
            "GET /dns-query?dns=AAABAAABAAAAAAAAA2ZvbwR0ZXN0AAABAAE HTTP/1.1\r\nHost: {api}\r\n\r\n"
        )
        .as_bytes(),
    );
    match &r {
        Ok(resp) if !is_block(resp) => t.escaped(format!("/dns-query answered {}", resp.status)),
        _ => t.blocked(format!("allowed host, /dns-query: {}", desc(&r))),
    }
    t.done();
}
