//! `escape-probe`: runs inside a bottle as the agent and tries to get out.
//!
//! Usage: `escape-probe '<json config>'` (see the harness, `tests/suite/harness.rs`). Prints one
//! line per case: `CASE <name> blocked|ESCAPED|n/a <detail>`, then `PROBE-DONE`.
//! Every network attempt goes to loopback or to the test namespaces' addresses named in the
//! config, with short timeouts; resource cases are bounded.

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "escape-probe/egress_classes.rs"]
mod egress_classes;
#[path = "escape-probe/git_objects.rs"]
mod git_objects;
#[path = "escape-probe/gvisor.rs"]
mod gvisor;
#[path = "escape-probe/limits.rs"]
mod limits;
#[path = "escape-probe/supervise_effect.rs"]
mod supervise_effect;

const T: Duration = Duration::from_secs(2);
const PROXY: &str = "127.0.0.1:3128";
const GATE: &str = "127.0.0.1:3129";
const SUPERVISE: &str = "127.0.0.1:3130";

/// Set when any case printed ESCAPED (the probe then exits 1, which keeps the bottle's state
/// for inspection).
static ANY_ESCAPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn case(name: &str, verdict: &str, detail: impl AsRef<str>) {
    if verdict == "ESCAPED" {
        ANY_ESCAPED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let d = detail.as_ref().replace('\n', " ");
    let d: String = d.chars().take(300).collect();
    println!("CASE {name} {verdict} {d}");
}

fn blocked(name: &str, detail: impl AsRef<str>) {
    case(name, "blocked", detail)
}
fn escaped(name: &str, detail: impl AsRef<str>) {
    case(name, "ESCAPED", detail)
}
fn na(name: &str, detail: impl AsRef<str>) {
    case(name, "n/a", detail)
}

/// Several attempts: ESCAPED if any got through, else blocked with every reason.
struct Tally {
    name: &'static str,
    ok: Vec<String>,
    bad: Vec<String>,
}

impl Tally {
    fn new(name: &'static str) -> Tally {
        Tally {
            name,
            ok: Vec::new(),
            bad: Vec::new(),
        }
    }
    fn blocked(&mut self, what: impl AsRef<str>) {
        self.ok.push(what.as_ref().to_string());
    }
    fn escaped(&mut self, what: impl AsRef<str>) {
        self.bad.push(what.as_ref().to_string());
    }
    fn done(self) {
        eprintln!("escape-probe: {} done", self.name);
        if self.bad.is_empty() {
            blocked(self.name, self.ok.join("; "));
        } else {
            escaped(self.name, self.bad.join("; "));
        }
    }
}

struct Cfg(Value);

/// A named group of cases.
type Section = (&'static str, fn(&Cfg));

impl Cfg {
    fn s(&self, k: &str) -> String {
        self.0
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
    fn n(&self, k: &str) -> u16 {
        self.0
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(0)
    }
    /// A list of strings, `{id}` replaced by this bottle's identity.
    fn list(&self, k: &str) -> Vec<String> {
        let id = std::env::var("BOT_BOTTLE_IDENTITY").unwrap_or_else(|_| "unknown".into());
        self.0
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(|s| s.replace("{id}", &id)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn main() {
    let raw = std::env::args().nth(1).unwrap_or_default();
    let cfg = match serde_json::from_str::<Value>(&raw) {
        Ok(v) => Cfg(v),
        Err(e) => {
            eprintln!("escape-probe: bad config: {e}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !wait_for_harness(&cfg) {
        println!("PROBE-DONE");
        std::process::exit(1);
    }
    let sections: [Section; 9] = [
        ("network", network),
        ("dns", dns),
        ("egress", egress),
        ("credentials", credentials),
        ("filesystem", filesystem),
        ("kernel", kernel),
        ("git", git),
        ("supervise", supervise),
        ("resources", resources),
    ];
    // `sections` (optional) restricts the run: the harness's control run uses it.
    let only = cfg.list("sections");
    for (name, f) in sections {
        if only.is_empty() || only.iter().any(|o| o == name) {
            section(name, &cfg, f);
        }
    }
    println!("PROBE-DONE");
    let _ = std::io::stdout().flush();
    if ANY_ESCAPED.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- helpers

/// `wait_for` (optional): a file the harness writes once everything outside the bottle is
/// ready (docker: the sidecar's resolver points at the DNS canary). `go` releases the probe;
/// anything else, or nothing within 10 minutes, is reported and ends it.
fn wait_for_harness(c: &Cfg) -> bool {
    let path = c.s("wait_for");
    if path.is_empty() {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.is_empty()
        {
            if text.trim() == "go" {
                return true;
            }
            escaped(
                "probe-gate",
                format!("the harness did not release the probe: {text}"),
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    escaped("probe-gate", format!("{path} never appeared"));
    false
}

/// The host as the bottle could meet it on its own networks: the gateway and the first
/// address of every non-loopback route (`/proc/net/route`; Docker gives a network's bridge
/// its first address), plus the host addresses the harness names (`host_addrs`).
fn host_addresses(c: &Cfg) -> Vec<IpAddr> {
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

/// How long one section may take before it is killed.
const SECTION_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs one section in a forked child with a deadline, so a hang (a proxy that never
/// answers) cannot stop the other sections; a killed section is reported, never passed.
fn section(name: &str, cfg: &Cfg, f: fn(&Cfg)) {
    let _ = std::io::stdout().flush();
    eprintln!("escape-probe: section {name}");
    // SAFETY: the probe is single-threaded here (sections run in children).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        f(cfg);
        let _ = std::io::stdout().flush();
        let code = if ANY_ESCAPED.load(std::sync::atomic::Ordering::SeqCst) {
            3
        } else {
            0
        };
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        escaped(
            &format!("section-{name}"),
            format!("cannot fork: {}", errno()),
        );
        return;
    }
    let deadline = Instant::now() + SECTION_TIMEOUT;
    loop {
        let mut status = 0;
        // SAFETY: polling our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3 {
                ANY_ESCAPED.store(true, std::sync::atomic::Ordering::SeqCst);
            } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                escaped(
                    &format!("section-{name}"),
                    format!("the section died (status {status}); its remaining cases are unjudged"),
                );
            }
            return;
        }
        if Instant::now() > deadline {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaping it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            escaped(
                &format!("section-{name}"),
                format!(
                    "hung for {SECTION_TIMEOUT:?} and was killed; its remaining cases are unjudged"
                ),
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tcp(addr: &str) -> std::io::Result<TcpStream> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let s = TcpStream::connect_timeout(&sa, T)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Connects to a canary and reads its banner: `Ok(banner)` means the canary was reached.
fn reach_canary(addr: &str) -> Result<String, String> {
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

fn udp_send(addr: &str) -> Result<String, String> {
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
fn has_route(ip: IpAddr) -> bool {
    let bind = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    UdpSocket::bind(bind)
        .and_then(|s| s.connect(SocketAddr::new(ip, 53)))
        .is_ok()
}

struct Resp {
    status: u16,
    head: String,
    #[allow(dead_code)]
    body: Vec<u8>,
}

fn read_resp<R: Read>(r: &mut R) -> std::io::Result<Resp> {
    read_resp_inner(r, false)
}

/// Reads a response head and (unless `head_only`, as for a `CONNECT` answer) its body.
fn read_resp_inner<R: Read>(r: &mut R, head_only: bool) -> std::io::Result<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
        if head.len() > 256 * 1024 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_only && status == 200 {
        return Ok(Resp { status, head, body });
    }
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.resize(len.min(1 << 20), 0);
        r.read_exact(&mut body)?;
    } else if lower.contains("transfer-encoding: chunked") {
        let mut br = std::io::BufReader::new(r);
        loop {
            let mut line = String::new();
            br.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            br.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 101 && !(100..200).contains(&status) && status != 204 {
        let _ = r.take(1 << 20).read_to_end(&mut body);
    }
    Ok(Resp { status, head, body })
}

fn plain_proxy(req: &str) -> Result<Resp, String> {
    let mut s = tcp(PROXY).map_err(|e| format!("proxy: {e}"))?;
    s.write_all(req.as_bytes()).map_err(|e| format!("{e}"))?;
    read_resp(&mut s).map_err(|e| format!("{e}"))
}

fn connect(target: &str) -> Result<(u16, TcpStream), String> {
    let mut s = tcp(PROXY).map_err(|e| format!("proxy: {e}"))?;
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").map_err(|e| format!("{e}"))?;
    let r = read_resp_inner(&mut s, true).map_err(|e| format!("{e}"))?;
    Ok((r.status, s))
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    let mut c = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

fn tunnel(target: &str, sni: &str) -> Result<Tls, String> {
    let (status, s) = connect(target)?;
    if status != 200 {
        return Err(format!("CONNECT {target}: {status}"));
    }
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| format!("{e}"))?;
    let conn = rustls::ClientConnection::new(tls_config()?, name).map_err(|e| format!("{e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("tls {sni}: {e}"))?;
    }
    Ok(tls)
}

fn https(target: &str, sni: &str, req: &[u8]) -> Result<Resp, String> {
    let mut t = tunnel(target, sni)?;
    t.write_all(req).map_err(|e| format!("{e}"))?;
    t.flush().map_err(|e| format!("{e}"))?;
    read_resp(&mut t).map_err(|e| format!("{e}"))
}

/// Refused: an error status, or the connection closed without any response.
fn is_block(r: &Resp) -> bool {
    r.status >= 400 || r.status == 0
}

fn desc(r: &Result<Resp, String>) -> String {
    match r {
        Ok(r) => {
            let reason = r
                .head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("x-bot-bottle-blocked:")
                        .map(|v| v.trim().to_string())
                })
                .map(|v| format!(" ({v})"))
                .unwrap_or_default();
            format!("{}{reason}", r.status)
        }
        Err(e) => e.clone(),
    }
}

// ---------------------------------------------------------------- network

fn network(c: &Cfg) {
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

// ---------------------------------------------------------------- dns

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

fn dns(c: &Cfg) {
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

// ---------------------------------------------------------------- egress policy

fn expect_block(t: &mut Tally, what: &str, r: Result<Resp, String>) {
    match &r {
        Ok(resp) if !is_block(resp) => t.escaped(format!("{what}: {}", resp.status)),
        _ => t.blocked(format!("{what}: {}", desc(&r))),
    }
}

/// Like [`expect_block`], but only a refusal by the proxy's policy (403 with the
/// `x-bot-bottle-blocked` reason) counts as blocked.
fn expect_policy_block(t: &mut Tally, what: &str, r: Result<Resp, String>) {
    match &r {
        Ok(resp)
            if resp.status == 403
                && resp
                    .head
                    .to_ascii_lowercase()
                    .contains("x-bot-bottle-blocked:") =>
        {
            t.blocked(format!("{what}: {}", desc(&r)))
        }
        Ok(resp) => t.escaped(
            format!(
                "{what}: {} is not the proxy's refusal (it tried to connect)",
                desc(&r).trim_end_matches(char::is_whitespace)
            ) + if resp.status == 0 {
                " [no response]"
            } else {
                ""
            },
        ),
        Err(e) => t.blocked(format!("{what}: {e}")),
    }
}

fn egress(c: &Cfg) {
    let api = c.s("api_host");
    let target = format!("{api}:443");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n");

    // Sanity: the allowed request works (otherwise every block below proves nothing).
    match https(&target, &api, get("/v1/allowed").as_bytes()) {
        Ok(r) if r.status == 200 => blocked(
            "egress-allowed-route-works",
            "200 on the allowed route (sanity)",
        ),
        r => escaped(
            "egress-allowed-route-works",
            format!(
                "the allowed request failed: {} — the suite cannot judge the proxy",
                desc(&r)
            ),
        ),
    }

    let mut t = Tally::new("egress-no-route");
    expect_block(
        &mut t,
        "http absolute form",
        plain_proxy(&format!(
            "GET http://no-route.{}/ HTTP/1.1\r\nHost: no-route.{}\r\n\r\n",
            c.s("zone"),
            c.s("zone")
        )),
    );
    expect_block(
        &mut t,
        "CONNECT",
        connect(&format!("no-route.{}:443", c.s("zone"))).map(|(s, _)| Resp {
            status: s,
            head: String::new(),
            body: Vec::new(),
        }),
    );
    t.done();

    let mut t = Tally::new("egress-path-method");
    expect_block(
        &mut t,
        "GET /admin",
        https(&target, &api, get("/admin").as_bytes()),
    );
    expect_block(
        &mut t,
        "GET /v1/../admin",
        https(&target, &api, get("/v1/../admin").as_bytes()),
    );
    expect_block(
        &mut t,
        "GET /v1/%2e%2e/admin",
        https(&target, &api, get("/v1/%2e%2e/admin").as_bytes()),
    );
    expect_block(
        &mut t,
        "DELETE /v1/x",
        https(
            &target,
            &api,
            format!("DELETE /v1/x HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes(),
        ),
    );
    t.done();

    let mut t = Tally::new("egress-domain-fronting");
    expect_block(
        &mut t,
        "Host: other",
        https(
            &target,
            &api,
            format!(
                "GET /v1/front HTTP/1.1\r\nHost: no-route.{}\r\n\r\n",
                c.s("zone")
            )
            .as_bytes(),
        ),
    );
    expect_block(
        &mut t,
        "absolute-form other host in tunnel",
        https(
            &target,
            &api,
            format!(
                "GET https://no-route.{z}/v1/front HTTP/1.1\r\nHost: no-route.{z}\r\n\r\n",
                z = c.s("zone")
            )
            .as_bytes(),
        ),
    );
    match tunnel(&target, &format!("no-route.{}", c.s("zone"))) {
        Ok(mut tls) => {
            let _ = tls.write_all(get("/v1/sni").as_bytes());
            expect_block(
                &mut t,
                "SNI other",
                read_resp(&mut tls).map_err(|e| format!("{e}")),
            );
        }
        Err(e) => t.blocked(format!("SNI other: {e}")),
    }
    t.done();

    let mut t = Tally::new("egress-ip-literal");
    let up = c.s("upstream_addr");
    let hp = c.n("host_canary_port");
    expect_block(
        &mut t,
        "CONNECT inet ip",
        connect(&format!("{}:443", c.s("inet4"))).map(|(s, _)| Resp {
            status: s,
            head: String::new(),
            body: Vec::new(),
        }),
    );
    expect_block(
        &mut t,
        &format!("CONNECT upstream {up}"),
        connect(&up).map(|(s, _)| Resp {
            status: s,
            head: String::new(),
            body: Vec::new(),
        }),
    );
    expect_block(
        &mut t,
        "http lan ip",
        plain_proxy(&format!(
            "GET http://{}:{}/ HTTP/1.1\r\nHost: {}\r\n\r\n",
            c.s("lan4"),
            c.n("canary_tcp_port"),
            c.s("lan4")
        )),
    );
    expect_block(
        &mut t,
        "http host loopback",
        plain_proxy(&format!(
            "GET http://127.0.0.1:{hp}/ HTTP/1.1\r\nHost: 127.0.0.1:{hp}\r\n\r\n"
        )),
    );
    expect_block(
        &mut t,
        "http [::1]",
        plain_proxy(&format!(
            "GET http://[::1]:{hp}/ HTTP/1.1\r\nHost: [::1]:{hp}\r\n\r\n"
        )),
    );
    t.done();

    // Routes the operator allowed whose names resolve to private / loopback addresses.
    // Only the proxy's own refusal counts: an error from the destination (a 502 because
    // nothing listened there) means the proxy tried to connect.
    let mut t = Tally::new("egress-route-resolves-private");
    for host in c.list("private_routes") {
        expect_policy_block(
            &mut t,
            &host,
            plain_proxy(&format!(
                "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
            )),
        );
    }
    t.done();

    let mut t = Tally::new("egress-smuggling");
    expect_block(&mut t, "CL+TE", https(&target, &api, format!("POST /v1/smuggle HTTP/1.1\r\nHost: {api}\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin-smuggled HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes()));
    expect_block(&mut t, "CL+CL", https(&target, &api, format!("POST /v1/smuggle2 HTTP/1.1\r\nHost: {api}\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /admin-smuggled2 HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes()));
    t.done();

    let mut t = Tally::new("egress-connect-port");
    expect_block(
        &mut t,
        "CONNECT :8443",
        connect(&format!("{api}:8443")).map(|(s, _)| Resp {
            status: s,
            head: String::new(),
            body: Vec::new(),
        }),
    );
    expect_block(
        &mut t,
        "CONNECT :22",
        connect(&format!("{api}:22")).map(|(s, _)| Resp {
            status: s,
            head: String::new(),
            body: Vec::new(),
        }),
    );
    t.done();

    let mut t = Tally::new("egress-websocket-path");
    expect_block(&mut t, "upgrade /ws", https(&target, &api, format!("GET /ws HTTP/1.1\r\nHost: {api}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes()));
    t.done();

    let mut t = Tally::new("egress-oversized-headers");
    let big = "a".repeat(256 * 1024);
    expect_block(
        &mut t,
        "256 KiB header",
        https(
            &target,
            &api,
            format!("GET /v1/big HTTP/1.1\r\nHost: {api}\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        ),
    );
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_block(
        &mut t,
        "2000 headers",
        https(
            &target,
            &api,
            format!("GET /v1/many HTTP/1.1\r\nHost: {api}\r\n{many}\r\n").as_bytes(),
        ),
    );
    t.done();

    // A relay inside the bottle: one tunnel through the allowed host carrying an allowed
    // request and then disallowed ones on the same connection — each must be checked.
    let mut t = Tally::new("egress-relay-tunnel-each-request-checked");
    match tunnel(&target, &api) {
        Ok(mut tls) => {
            let mut step = |req: String, want_ok: bool, what: &str| {
                let r = tls
                    .write_all(req.as_bytes())
                    .and_then(|_| tls.flush())
                    .map_err(|e| format!("{e}"))
                    .and_then(|_| read_resp(&mut tls).map_err(|e| format!("{e}")));
                match (&r, want_ok) {
                    (Ok(resp), false) if !is_block(resp) => {
                        t.escaped(format!("{what}: {}", resp.status))
                    }
                    (_, false) => t.blocked(format!("{what}: {}", desc(&r))),
                    (Ok(resp), true) if resp.status == 200 => {}
                    (_, true) => t.blocked(format!("{what} (allowed) did not pass: {}", desc(&r))),
                }
                r.map(|resp| resp.head.to_ascii_lowercase().contains("connection: close"))
                    .unwrap_or(true)
            };
            let closed = step(get("/v1/relay-ok"), true, "first allowed");
            if !closed {
                let _ = step(get("/admin-relay"), false, "second request /admin-relay");
            }
        }
        Err(e) => t.blocked(format!("tunnel: {e}")),
    }
    // The same through a relay process listening inside the bottle.
    match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => {
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            let h = std::thread::spawn(move || {
                if let Ok((mut a, _)) = l.accept()
                    && let Ok(mut b) = TcpStream::connect(PROXY)
                {
                    let (mut a2, mut b2) = match (a.try_clone(), b.try_clone()) {
                        (Ok(x), Ok(y)) => (x, y),
                        _ => return,
                    };
                    let j = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut b2, &mut a2);
                        let _ = a2.shutdown(Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(Shutdown::Write);
                    let _ = j.join();
                }
            });
            let r = (|| -> Result<Resp, String> {
                let mut s = tcp(&format!("127.0.0.1:{port}")).map_err(|e| format!("{e}"))?;
                write!(s, "GET http://no-route.{z}/relay HTTP/1.1\r\nHost: no-route.{z}\r\nConnection: close\r\n\r\n", z = c.s("zone")).map_err(|e| format!("{e}"))?;
                read_resp(&mut s).map_err(|e| format!("{e}"))
            })();
            expect_block(&mut t, "via in-bottle relay", r);
            drop(h);
        }
        Err(e) => t.blocked(format!("relay bind: {e}")),
    }
    t.done();

    egress_classes::run(c);
}

// ---------------------------------------------------------------- credentials

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn scan_tree(
    root: &Path,
    needle: &[u8],
    found: &mut Vec<String>,
    budget: &mut usize,
    deadline: Instant,
) {
    if Instant::now() > deadline || *budget == 0 {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    if meta.is_dir() {
        let Ok(rd) = std::fs::read_dir(root) else {
            return;
        };
        for e in rd.flatten() {
            scan_tree(&e.path(), needle, found, budget, deadline);
        }
    } else if meta.is_file() && meta.len() < 4 << 20 {
        *budget = budget.saturating_sub(1);
        if let Ok(data) = std::fs::read(root)
            && contains(&data, needle)
        {
            found.push(root.display().to_string());
        }
    }
}

fn is_private_key_pem(data: &[u8]) -> bool {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(data).is_ok()
}

fn credentials(c: &Cfg) {
    // Passed reversed, so that the probe's own command line does not hold the token.
    let token: String = c.s("token_fragment_rev").chars().rev().collect();
    let needle = token.as_bytes();
    let mut t = Tally::new("cred-environment");
    for (k, v) in std::env::vars_os() {
        if contains(v.as_encoded_bytes(), needle) || contains(k.as_encoded_bytes(), needle) {
            t.escaped(format!("env {k:?}"));
        }
    }
    t.blocked("own environment clean");
    t.done();

    let mut t = Tally::new("cred-proc");
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|ch| ch.is_ascii_digit())
            {
                continue;
            }
            n += 1;
            for f in ["environ", "cmdline"] {
                if let Ok(data) = std::fs::read(e.path().join(f))
                    && contains(&data, needle)
                {
                    t.escaped(format!("{}/{f}", e.path().display()));
                }
            }
        }
    }
    t.blocked(format!("{n} processes visible, none holds the token"));
    t.done();

    let mut t = Tally::new("cred-files");
    let mut found = Vec::new();
    let mut budget = 50_000usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut roots: Vec<PathBuf> = [
        "/etc", "/home", "/root", "/run", "/tmp", "/var", "/opt", "/srv", "/mnt", "/media",
        "/dev/shm",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    for extra in c.list("host_secret_dirs") {
        roots.push(PathBuf::from(extra));
    }
    for r in &roots {
        scan_tree(r, needle, &mut found, &mut budget, deadline);
    }
    for f in found {
        t.escaped(format!("token in {f}"));
    }
    t.blocked(format!(
        "scanned {} files under {} (/usr and other read-only system trees skipped)",
        50_000 - budget,
        roots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    t.done();

    let mut t = Tally::new("cred-ca-key-bundle-config-deploy-key");
    for p in c.list("host_secret_files") {
        match std::fs::read(&p) {
            Ok(_) => t.escaped(format!("read {p}")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    for p in ["/run/bot-bottle", "/etc/ssl/private"] {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                // A PEM private key that parses: executables mounted here (the docker init)
                // hold the label text too.
                if let Ok(data) = std::fs::read(e.path())
                    && contains(&data, b"PRIVATE KEY")
                    && is_private_key_pem(&data)
                {
                    t.escaped(format!("private key at {}", e.path().display()));
                }
            }
        }
    }
    t.done();
}

// ---------------------------------------------------------------- filesystem

fn filesystem(c: &Cfg) {
    let nonce = c.s("nonce");
    let mut t = Tally::new("fs-write-outside-workspace");
    let mut wrote = Vec::new();
    for d in c.list("write_targets") {
        let p = Path::new(&d).join(format!("escape-marker-{nonce}"));
        match std::fs::write(&p, &nonce) {
            Ok(()) => wrote.push(d.clone()),
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
    }
    if !wrote.is_empty() {
        // Writable private tmpfs dirs are fine; the harness checks the host for the marker.
        t.blocked(format!(
            "wrote in {wrote:?} (private to the bottle unless the host shows the marker)"
        ));
    }
    t.done();

    let mut t = Tally::new("fs-read-host-secrets");
    for p in c.list("host_read_targets") {
        match std::fs::read_to_string(&p) {
            Ok(s) if s.contains(&nonce) => t.escaped(format!("read {p}")),
            Ok(_) => t.blocked(format!("{p}: readable but not the host's file")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    let host_names = c.list("host_canary_names");
    for d in c.list("host_list_targets") {
        match std::fs::read_dir(&d) {
            Ok(rd) => {
                let names: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                if names.is_empty() {
                    t.blocked(format!("{d}: empty"));
                } else if let Some(n) = names.iter().find(|n| host_names.iter().any(|h| h == *n)) {
                    t.escaped(format!("{d} lists the host's {n}"));
                } else {
                    t.blocked(format!(
                        "{d}: {} entries, none of the host's canaries",
                        names.len()
                    ));
                }
            }
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("fs-modify-ca-and-gitconfig");
    for p in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/run/bot-bottle/ca.pem",
    ] {
        match std::fs::OpenOptions::new().append(true).open(p) {
            Ok(mut f) => {
                if f.write_all(b"\n").is_ok() {
                    t.escaped(format!("appended to {p}"));
                } else {
                    t.blocked(format!("{p}: opened but not written"));
                }
            }
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    // The gitconfig is the agent's own file: changing it must not open a way around the gate
    // (checked by git-insteadof-bypass); here only report that it is the agent's.
    t.blocked("~/.gitconfig is the agent's own (bypass attempts in git-insteadof-bypass)");
    t.done();

    let mut t = Tally::new("fs-symlink-dotdot");
    for p in c.list("link_targets") {
        match std::fs::read_to_string(&p) {
            Ok(s) if s.contains(&nonce) => t.escaped(format!("read the host secret via {p}")),
            Ok(_) => t.blocked(format!("{p}: not the host file")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("fs-proc-root-and-fd");
    for pid in ["1", "self", "thread-self"] {
        for target in c.list("host_read_targets") {
            let p = format!("/proc/{pid}/root{target}");
            match std::fs::read_to_string(&p) {
                Ok(s) if s.contains(&nonce) => t.escaped(format!("read {p}")),
                _ => {}
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.flatten() {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            let fd = e.file_name().to_string_lossy().to_string();
            if link.is_dir() || link.to_string_lossy().starts_with('/') {
                for target in c.list("host_read_targets") {
                    if let Some(name) = Path::new(&target).file_name() {
                        let p = format!("/proc/self/fd/{fd}/../{}", name.to_string_lossy());
                        if let Ok(s) = std::fs::read_to_string(&p)
                            && s.contains(&nonce)
                        {
                            t.escaped(format!("read via {p} ({})", link.display()));
                        }
                    }
                }
            }
        }
    }
    t.blocked("no host file through /proc/*/root or inherited descriptors");
    t.done();

    let mut t = Tally::new("fs-device-nodes");
    for d in [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/kmsg",
        "/dev/sda",
        "/dev/vda",
        "/dev/nvme0n1",
        "/dev/fuse",
        "/dev/net/tun",
        "/dev/kvm",
    ] {
        match std::fs::File::open(d) {
            Ok(_) => gvisor::device_opened(&mut t, d),
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
    }
    let p = std::ffi::CString::new("/tmp/escape-null").unwrap_or_default();
    // SAFETY: mknod with a valid C string; a success only creates a node in the private /tmp.
    let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if r == 0 {
        gvisor::mknod_succeeded(&mut t, &p);
    } else {
        t.blocked(format!("mknod: {}", std::io::Error::last_os_error()));
    }
    t.done();
}

// ---------------------------------------------------------------- process / kernel

/// Runs `f` in a forked child (so namespace or credential changes cannot affect the probe)
/// and returns its exit code: 0 means the attack worked.
fn in_child(f: impl FnOnce() -> bool) -> i32 {
    // SAFETY: fork in a single-threaded moment of the probe? Not guaranteed (no threads are
    // left running between cases); the child only makes syscalls and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = f();
        // SAFETY: leave the child without running destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    if pid < 0 {
        return -1;
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -2
    }
}

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

fn kernel(c: &Cfg) {
    gvisor::case(c);
    let mut t = Tally::new("proc-unshare-setns-mount");
    for (what, flag) in [
        ("unshare user", libc::CLONE_NEWUSER),
        ("unshare mount", libc::CLONE_NEWNS),
        ("unshare net", libc::CLONE_NEWNET),
    ] {
        // SAFETY: in a child; no memory is touched.
        let code = in_child(|| unsafe { libc::unshare(flag) } == 0);
        if code == 0 {
            gvisor::unshare_succeeded(c, &mut t, what, flag);
        } else {
            t.blocked(format!("{what} refused"));
        }
    }
    let src = std::ffi::CString::new("none").unwrap_or_default();
    let dst = std::ffi::CString::new("/tmp").unwrap_or_default();
    let fs = std::ffi::CString::new("tmpfs").unwrap_or_default();
    // SAFETY: valid C strings; a success would only mount a tmpfs in the bottle.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        t.escaped("mount tmpfs succeeded")
    } else {
        t.blocked(format!("mount: {}", errno()))
    }
    let root = std::ffi::CString::new("/").unwrap_or_default();
    // SAFETY: as above; a remount read-write of the view.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r == 0 {
        t.escaped("remount / succeeded")
    } else {
        t.blocked(format!("remount /: {}", errno()))
    }
    for ns in ["net", "mnt", "pid", "user"] {
        let p = format!("/proc/1/ns/{ns}");
        match std::fs::File::open(&p) {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                let fd = f.as_raw_fd();
                // SAFETY: in a child; setns on an open descriptor.
                let code = in_child(|| unsafe { libc::setns(fd, 0) } == 0);
                // Entering pid 1's namespace is harmless when it is the bottle's own.
                let theirs = std::fs::read_link(&p).ok();
                let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
                if code == 0 && theirs != ours {
                    t.escaped(format!("setns {ns}"));
                } else {
                    t.blocked(format!(
                        "setns {ns}: {}",
                        if code == 0 {
                            "own namespace only"
                        } else {
                            "refused"
                        }
                    ));
                }
            }
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("proc-ptrace-kill-host");
    let me = std::process::id();
    let mut visible = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            visible += 1;
            if u32::try_from(pid).ok() == Some(me) {
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.contains("bot-bottle") || comm.contains("sidecar") {
                // SAFETY: a ptrace attach attempt; detached right away when it works.
                let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
                if r == 0 {
                    // SAFETY: detach what we attached.
                    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
                    t.escaped(format!("ptrace attach to {pid} ({})", comm.trim()));
                } else {
                    t.blocked(format!("ptrace {pid} ({}): {}", comm.trim(), errno()));
                }
            }
        }
    }
    t.blocked(format!("{visible} processes visible"));
    for (what, key, comm_want) in [
        ("victim", "victim_pid", "sleep"),
        ("other bundle", "other_pid", "bot-bottle"),
    ] {
        let pid =
            c.0.get(key)
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0);
        if pid == 0 {
            continue;
        }
        // SAFETY: probing with signal 0; in a PID namespace the number names nothing of the host.
        let r = unsafe { libc::kill(pid, 0) };
        if r == 0 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == comm_want {
                // SAFETY: as above; the harness checks whether the host process survived.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                t.escaped(format!("signalled the host's {what} ({pid})"));
            } else {
                t.blocked(format!("pid {pid} inside is not the host's {what}"));
            }
        } else {
            t.blocked(format!("{what} pid {pid}: {}", errno()));
        }
    }
    t.done();

    // The container runtime's API: whoever reaches it starts a privileged container.
    let mut t = Tally::new("proc-container-runtime-socket");
    for p in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/crio/crio.sock",
    ] {
        match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => t.escaped(format!("connected to {p}")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("kernel-keyring-bpf-modules");
    let ty = std::ffi::CString::new("user").unwrap_or_default();
    let desc_ = std::ffi::CString::new("escape").unwrap_or_default();
    // SAFETY: add_key with valid strings and a 1-byte payload.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc_.as_ptr(),
            b"x".as_ptr(),
            1usize,
            -2i32,
        )
    };
    if r >= 0 {
        t.escaped("add_key succeeded")
    } else {
        t.blocked(format!("add_key: {}", errno()))
    }
    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, session, 0).
    let r = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i32, 0) };
    if r >= 0 {
        t.escaped("keyctl succeeded")
    } else {
        t.blocked(format!("keyctl: {}", errno()))
    }
    let mut attr = [0u8; 128];
    // SAFETY: bpf(BPF_MAP_CREATE) with a zeroed attr (invalid but reaches the permission check).
    let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), attr.len()) };
    let e = errno();
    if r >= 0 {
        t.escaped("bpf succeeded")
    } else {
        t.blocked(format!("bpf: {e}"))
    }
    let empty = std::ffi::CString::new("").unwrap_or_default();
    // SAFETY: finit_module on fd -1 (fails before loading anything).
    let r = unsafe { libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0) };
    let e = std::io::Error::last_os_error();
    if r == 0 || e.raw_os_error() == Some(libc::EBADF) {
        t.escaped(format!("finit_module passed the permission check ({e})"));
    } else {
        t.blocked(format!("finit_module: {e}"));
    }
    t.done();

    let mut t = Tally::new("proc-setuid-binaries");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    match gvisor::no_new_privs(&status) {
        (true, detail) => t.blocked(detail),
        (false, detail) => t.escaped(detail),
    }
    for k in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        let v = field(k);
        if v.chars().all(|ch| ch == '0') {
            t.blocked(format!("{k} 0"))
        } else {
            t.escaped(format!("{k} {v}"))
        }
    }
    for bin in ["/usr/bin/sudo", "/usr/bin/su", "/bin/su"] {
        if Path::new(bin).exists() {
            let out = std::process::Command::new(bin)
                .args(if bin.ends_with("sudo") {
                    vec!["-n", "id", "-u"]
                } else {
                    vec!["-c", "id -u", "root"]
                })
                .stdin(std::process::Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0" => {
                    t.escaped(format!("{bin} gave uid 0"))
                }
                Ok(o) => t.blocked(format!("{bin}: exit {:?}", o.status.code())),
                Err(e) => t.blocked(format!("{bin}: {e}")),
            }
        }
    }
    t.done();
}

// ---------------------------------------------------------------- git

/// A git command, killed after 60 s (a push the gate never answers is refused in effect; the
/// harness checks the upstream either way).
fn run_git(dir: &Path, args: &[&str]) -> (bool, String) {
    match std::process::Command::new("timeout")
        .args(["-k", "5", "60", "git"])
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                if o.status.code() == Some(124) {
                    "\ngit timed out after 60 s"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => (false, format!("{e}")),
    }
}

/// [`run_git`] for the steps that must work for the suite to judge the gate at all (the
/// first clone, the clean push): a timed-out attempt is tried once more, and the output says
/// so. A gate that answers neither time still fails the suite. (A rare hang of one request
/// through the native forwarder and the gate is known and not yet explained; see the gate's
/// notes.)
/// `before_retry` undoes what the first attempt left (a half-made clone).
fn run_git_needed(dir: &Path, args: &[&str], before_retry: impl Fn()) -> (bool, String) {
    let (ok, out) = run_git(dir, args);
    if ok || !out.ends_with("git timed out after 60 s") {
        return (ok, out);
    }
    before_retry();
    let (ok, again) = run_git(dir, args);
    (
        ok,
        format!("{again} (after a first attempt that timed out)"),
    )
}

/// The gate's own words from a refused push (its `remote:` lines), else git's last line.
fn why(out: &str) -> String {
    let remote: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("remote:").map(str::trim))
        .filter(|l| !l.is_empty())
        .collect();
    if out.ends_with("git timed out after 60 s") || remote.is_empty() {
        out.lines().last().unwrap_or("").to_string()
    } else {
        remote.join(" / ")
    }
}

fn git(c: &Cfg) {
    let url = c.s("git_url");
    let base = PathBuf::from("/tmp/escape-git");
    let _ = std::fs::remove_dir_all(&base);
    if std::fs::create_dir_all(&base).is_err() {
        na("git-clone", "cannot create /tmp/escape-git");
        return;
    }
    let (ok, out) = run_git_needed(&base, &["clone", "-q", &url, "app"], || {
        let _ = std::fs::remove_dir_all(base.join("app"));
    });
    if !ok {
        escaped(
            "git-gate-works",
            format!("clone through the gate failed: {out} — the suite cannot judge the gate"),
        );
        return;
    }
    let app = base.join("app");
    let g = |args: &[&str]| run_git(&app, args);
    let _ = std::fs::write(app.join("clean.txt"), "clean\n");
    g(&["add", "."]);
    g(&["commit", "-qm", "clean change"]);
    let (ok, out) = run_git_needed(&app, &["push", "-q", "origin", "HEAD:agent/ok"], || {});
    if ok {
        blocked("git-gate-works", "clean push to agent/ok accepted (sanity)")
    } else {
        escaped(
            "git-gate-works",
            format!("clean push refused: {out} — the suite cannot judge the gate"),
        )
    }

    let mut t = Tally::new("git-push-secret");
    let key = format!("{}{}", "AKIA", "Q3EGRKPL7WZ5N2XB");
    let _ = std::fs::write(
        app.join("creds.txt"),
        format!("aws_access_key_id = {key}\n"),
    );
    g(&["add", "."]);
    g(&["commit", "-qm", "oops"]);
    let (ok, out) = g(&["push", "origin", "HEAD:agent/ok"]);
    if ok {
        t.escaped("secret push accepted")
    } else {
        t.blocked(format!(
            "refused: {}",
            out.lines()
                .find(|l| l.contains("creds.txt"))
                .unwrap_or("refused")
        ))
    }
    t.done();
    g(&["reset", "-q", "--hard", "HEAD~1"]);
    git_objects::push_hidden(&app);

    let (ok, out) = g(&["push", "origin", "HEAD:main"]);
    if ok {
        escaped(
            "git-push-branch-outside-push_branches",
            "push to main accepted",
        )
    } else {
        blocked("git-push-branch-outside-push_branches", why(&out))
    }

    g(&["commit", "-q", "--amend", "-m", "rewritten"]);
    let (ok, out) = g(&["push", "-f", "origin", "HEAD:agent/ok"]);
    if ok {
        escaped("git-force-push", "non-fast-forward accepted")
    } else {
        blocked("git-force-push", why(&out))
    }

    let (ok, out) = g(&["push", "origin", ":agent/ok"]);
    if ok {
        escaped("git-delete-branch", "deletion accepted")
    } else {
        blocked("git-delete-branch", why(&out))
    }

    let mut t = Tally::new("git-unconfigured-repo");
    for u in [
        format!("http://{GATE}/other.git"),
        format!("http://{GATE}/../up.git"),
        format!("http://{GATE}/app.git/../other.git"),
    ] {
        let (ok, out) = g(&["push", &u, "HEAD:agent/x"]);
        if ok {
            t.escaped(format!("push to {u} accepted"))
        } else {
            t.blocked(format!("{u}: {}", why(&out)))
        }
    }
    t.done();

    let mut t = Tally::new("git-insteadof-bypass");
    let direct = c.s("git_direct");
    let file_url = format!("file://{direct}");
    if Path::new(&direct).exists() {
        t.escaped(format!("{direct} is visible in the bottle"));
    } else {
        t.blocked(format!("{direct} absent"));
    }
    for u in [direct.clone(), file_url.clone()] {
        // Without the agent's gitconfig, so no `insteadOf` sends it to the gate.
        let out = std::process::Command::new("git")
            .args(["ls-remote", &u])
            .current_dir(&base)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .output();
        let (ok, out) = match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            ),
            Err(e) => (false, e.to_string()),
        };
        if ok {
            t.escaped(format!(
                "ls-remote {u} worked: the upstream is reachable directly"
            ))
        } else {
            t.blocked(format!("{u}: {}", why(&out)))
        }
    }
    // Rewrite the agent's own gitconfig to drop the rewrite, then push.
    let home = std::env::var("HOME").unwrap_or_default();
    let _ = std::fs::write(
        Path::new(&home).join(".gitconfig"),
        "[user]\n\tname = x\n\temail = x@x\n",
    );
    let (ok, out) = g(&["push", &file_url, "HEAD:main"]);
    if ok {
        t.escaped("push without the rewrite reached upstream")
    } else {
        t.blocked(format!("gitconfig rewritten, direct push: {}", why(&out)))
    }
    t.done();
}

// ---------------------------------------------------------------- supervise

fn mcp(body: &str, timeout: Duration) -> Result<String, String> {
    let mut s = tcp(SUPERVISE).map_err(|e| format!("supervise: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    write!(s, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:3130\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).map_err(|e| format!("{e}"))?;
    let mut out = String::new();
    match s.read_to_string(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if !out.is_empty() => Ok(format!("{out} (then {e})")),
        Err(e) => Err(format!("{e}")),
    }
}

fn supervise(c: &Cfg) {
    let api = c.s("api_host");
    // Changing `log` through a proposal is refused at once.
    let routes = format!("log: all\nroutes:\n  - host: {api}\n");
    let call = serde_json::json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"egress-allow","arguments":{"routes_yaml": routes, "justification":"escape suite"}}}).to_string();
    match mcp(&call, Duration::from_secs(10)) {
        Ok(r) if r.contains("\"isError\":true") || r.contains("\"error\"") => {
            blocked("supervise-change-log", "refused by validation")
        }
        Ok(r) => escaped(
            "supervise-change-log",
            format!("accepted: {}", r.chars().take(200).collect::<String>()),
        ),
        Err(e) => blocked("supervise-change-log", format!("no supervise server: {e}")),
    }

    // A real proposal (left pending: the call times out on our side), then try to approve it.
    let routes = format!(
        "routes:\n  - host: {api}\n  - host: self-approved.{}\n",
        c.s("zone")
    );
    let call = serde_json::json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"egress-allow","arguments":{"routes_yaml": routes, "justification":"escape suite self-approval"}}}).to_string();
    let _ = mcp(&call, Duration::from_secs(2));
    let mut t = Tally::new("supervise-self-approve");
    for d in c.list("queue_dirs") {
        match std::fs::read_dir(&d) {
            Ok(_) => t.escaped(format!("queue {d} visible")),
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
        // Only an existing queue counts (creating the path would make a private copy).
        let resp = Path::new(&d).join("responses");
        match std::fs::write(resp.join("escape.json"), "{\"decision\":\"approved\"}") {
            Ok(()) => t.escaped(format!("wrote a response under {d}")),
            Err(e) => t.blocked(format!("write response: {e}")),
        }
    }
    // Is the self-proposed route live now? (No answer at all is not a way out either; the
    // harness's DNS canary would also see the proxy resolve the name.)
    let r = plain_proxy(&format!(
        "GET http://self-approved.{z}/ HTTP/1.1\r\nHost: self-approved.{z}\r\n\r\n",
        z = c.s("zone")
    ));
    expect_block(&mut t, "self-proposed route", r);
    t.done();
    supervise_effect::cases(c);
}

// ---------------------------------------------------------------- resources

fn resources(c: &Cfg) {
    limits::resources(c);
}
