//! Canaries: servers that record every connection, datagram and DNS query they receive.
//! They listen on host loopback or inside network namespaces created by [`super::netns`].

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the canaries received, as `<label> <detail>` lines.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    pub fn push(&self, e: String) {
        self.0.lock().unwrap().push(e);
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// A TCP canary: records each connection and answers `CANARY <label>`.
pub fn tcp(listener: TcpListener, label: &str, events: &Events) {
    let label = label.to_string();
    let events = events.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            events.push(format!("{label} tcp connection from {peer}"));
            let _ = s.write_all(format!("CANARY {label}\n").as_bytes());
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    });
}

/// A UDP canary: records each datagram and answers `CANARY <label>`.
pub fn udp(sock: UdpSocket, label: &str, events: &Events) {
    let label = label.to_string();
    let events = events.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            events.push(format!("{label} udp datagram ({n} bytes) from {peer}"));
            let _ = sock.send_to(format!("CANARY {label}").as_bytes(), peer);
        }
    });
}

/// What the DNS canary answers for a name (always an A record).
pub fn answer_for(name: &str, zone: &str, private: Ipv4Addr, internet: Ipv4Addr) -> Ipv4Addr {
    if name == format!("private.{zone}") {
        private
    } else if name == format!("loop.{zone}") {
        Ipv4Addr::LOCALHOST
    } else {
        internet
    }
}

fn qname(msg: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_string());
        i += len;
    }
    Some((labels.join(".").to_ascii_lowercase(), i + 4))
}

fn reply(q: &[u8], end: usize, ip: Ipv4Addr) -> Vec<u8> {
    let mut r = q[..end].to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6] = 0;
    r[7] = 1;
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
    r.extend_from_slice(&ip.octets());
    r
}

pub type Answer = Arc<dyn Fn(&str) -> Ipv4Addr + Send + Sync>;

/// A DNS canary over UDP: records `<label> dns <name> from <peer>`, answers an A record.
pub fn dns_udp(sock: UdpSocket, label: &str, events: &Events, answer: Answer) {
    let label = label.to_string();
    let events = events.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Some((name, end)) = qname(&buf[..n]) else {
                continue;
            };
            events.push(format!("{label} dns {name} udp from {peer}"));
            if end <= n {
                let _ = sock.send_to(&reply(&buf[..n], end, answer(&name)), peer);
            }
        }
    });
}

/// A DNS canary over TCP.
pub fn dns_tcp(listener: TcpListener, label: &str, events: &Events, answer: Answer) {
    let label = label.to_string();
    let events = events.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                events.push(format!("{label} dns-tcp connection from {peer}"));
                continue;
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut msg).is_err() {
                continue;
            }
            let Some((name, end)) = qname(&msg) else {
                continue;
            };
            events.push(format!("{label} dns {name} tcp from {peer}"));
            if end <= msg.len() {
                let r = reply(&msg, end, answer(&name));
                let mut out = u16::try_from(r.len()).unwrap().to_be_bytes().to_vec();
                out.extend_from_slice(&r);
                let _ = s.write_all(&out);
            }
        }
    });
}
