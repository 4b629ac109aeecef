//! Shared helpers: a server on loopback, an operator that answers through the queue API,
//! and a minimal HTTP client.

use std::sync::Arc;
use std::time::Duration;

use supervise::{Applier, Decision, Home, RecordingApplier, SuperviseConfig, queue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ROUTES: &str = "log: blocks\nroutes:\n  - host: api.example.com\n";

pub struct Running {
    pub addr: std::net::SocketAddr,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), supervise::ServeError>>,
}

pub async fn start(
    home: &Home,
    identity: &str,
    applier: Arc<dyn Applier>,
    wait: Duration,
) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = SuperviseConfig::new(home.clone(), identity, applier);
    cfg.max_wait = wait;
    cfg.max_body_bytes = 64 * 1024;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(supervise::serve(listener, cfg, async move {
        let _ = rx.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

pub fn recording() -> RecordingApplier {
    RecordingApplier::with_routes(ROUTES)
}

/// Waits until bottle `identity` has `n` pending proposals; returns them by arrival.
pub async fn wait_pending(home: &Home, identity: Option<&str>, n: usize) -> Vec<supervise::Entry> {
    for _ in 0..500 {
        let (entries, _) = queue::pending_all(home, identity).unwrap();
        let waiting: Vec<_> = entries
            .into_iter()
            .filter(|e| e.status == supervise::Status::Pending)
            .collect();
        if waiting.len() >= n {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} pending proposals");
}

pub fn approve(home: &Home, id: &str) {
    queue::answer(home, id, Decision::Approved, None, None, "tester").unwrap();
}

/// POSTs a JSON-RPC body to `/mcp`; returns status and body.
pub async fn post(addr: std::net::SocketAddr, host: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, dechunk(&body))
}

fn dechunk(body: &str) -> String {
    // Good enough for tests: strip chunk-size lines if the body is chunked.
    let lines: Vec<&str> = body.split("\r\n").collect();
    if lines.len() > 1 && lines[0].chars().all(|c| c.is_ascii_hexdigit()) && !lines[0].is_empty() {
        lines
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, l)| *l)
            .collect()
    } else {
        body.to_owned()
    }
}

pub fn rpc(id: u64, method: &str, params: serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn call(id: u64, tool: &str, args: serde_json::Value) -> String {
    rpc(
        id,
        "tools/call",
        serde_json::json!({"name": tool, "arguments": args}),
    )
}

/// One plain-HTTP request through an egress proxy (absolute form, `extra` header lines ending
/// in CRLF); returns the status line.
pub async fn through_proxy(
    proxy: std::net::SocketAddr,
    method: &str,
    url: &str,
    host: &str,
    extra: &str,
) -> String {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let req =
        format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// A bottle as the sidecar bundle runs it, on loopback: an egress proxy whose hosts are
/// pinned to a test upstream, supervise with the file applier that loads approved routes
/// into that proxy first (and reads its counts of requests spent), and the live routes file.
pub struct LiveBottle {
    pub _dir: tempfile::TempDir,
    pub home: Home,
    pub identity: &'static str,
    /// The egress proxy.
    pub proxy: std::net::SocketAddr,
    /// Supervise's MCP server.
    pub supervise: std::net::SocketAddr,
    /// The proxy's live routes.
    pub routes: egress::RoutesHandle,
    /// The proxy's CA (what a client inside the bottle trusts).
    pub ca_pem: String,
}

impl LiveBottle {
    /// `state/<identity>/live-config/routes.yaml`.
    pub fn routes_file(&self) -> std::path::PathBuf {
        self.home.live_config_dir(self.identity).join("routes.yaml")
    }
}

/// Starts a [`LiveBottle`] with `routes` live, `hosts` reached at `upstream` (plain HTTP on
/// port 80), `tweak` applied to the proxy's configuration (its environment, say), and
/// supervise's tool calls waiting up to `wait` for the operator.
pub async fn live_bottle(
    upstream: &test_support::Upstream,
    identity: &'static str,
    routes: &str,
    hosts: &[&str],
    tweak: impl FnOnce(&mut egress::ProxyConfig),
    wait: Duration,
) -> LiveBottle {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let mut pc = egress::ProxyConfig::new(dir.path().join("ca"));
    let port = upstream.addr().port();
    pc.connect_to = hosts
        .iter()
        .map(|h| egress::ConnectTo::parse(&format!("{h}:80:127.0.0.1:{port}")).unwrap())
        .collect();
    tweak(&mut pc);
    let proxy = egress::Proxy::new(pc, supervise::validate::parse_routes(routes).unwrap()).unwrap();
    let ca_pem = proxy.ca_pem().to_owned();
    let handle = proxy.routes();
    let plistener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = plistener.local_addr().unwrap();
    tokio::spawn(proxy.serve(plistener, std::future::pending()));
    let (live, counts) = (handle.clone(), handle.clone());
    let applier = supervise::FileApplier::new(home.clone())
        .with_reload(Arc::new(move |_bottle, cfg| {
            live.replace(cfg.clone()).map_err(|e| e.to_string())
        }))
        .with_uses(Arc::new(move |_bottle| counts.used()));
    std::fs::create_dir_all(home.live_config_dir(identity)).unwrap();
    std::fs::write(home.live_config_dir(identity).join("routes.yaml"), routes).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let saddr = listener.local_addr().unwrap();
    let mut cfg = SuperviseConfig::new(home.clone(), identity, Arc::new(applier));
    cfg.max_wait = wait;
    tokio::spawn(supervise::serve(listener, cfg, std::future::pending()));
    LiveBottle {
        _dir: dir,
        home,
        identity,
        proxy: paddr,
        supervise: saddr,
        routes: handle,
        ca_pem,
    }
}

/// The token the proxy of [`live_bottle_tls`] holds in `TEST_TOKEN`.
pub const TOKEN: &str = "sk-test-grant-0123456789";

/// A [`LiveBottle`] whose `hosts` are reached at a TLS `upstream` (port 443, certificates
/// of `upstream_ca`), with `TEST_TOKEN` set to [`TOKEN`] in the proxy's environment: the
/// way to see a credential injected (egress injects one only inside TLS).
pub async fn live_bottle_tls(
    upstream: &test_support::Upstream,
    upstream_ca: &test_support::TestCa,
    identity: &'static str,
    routes: &str,
    hosts: &[&str],
    wait: Duration,
) -> LiveBottle {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("upstream-ca.pem");
    upstream_ca.write_pem(&ca_file);
    let port = upstream.addr().port();
    let pins: Vec<egress::ConnectTo> = hosts
        .iter()
        .map(|h| egress::ConnectTo::parse(&format!("{h}:443:127.0.0.1:{port}")).unwrap())
        .collect();
    let b = live_bottle(
        upstream,
        identity,
        routes,
        &[],
        move |pc| {
            pc.upstream_ca = vec![ca_file];
            pc.connect_to = pins;
            pc.env = Arc::new(|k| (k == "TEST_TOKEN").then(|| TOKEN.to_owned()));
        },
        wait,
    )
    .await;
    // The CA file is read when the proxy starts; keep its directory as long as the bottle.
    std::mem::forget(ca_dir);
    b
}

/// One HTTPS `GET path` to `host` through the proxy (CONNECT, then TLS trusting the
/// proxy's CA); returns the status line, or the refusal of the tunnel.
pub async fn https_through_proxy(b: &LiveBottle, host: &str, path: &str) -> String {
    let config = test_support::client_config_for_pem(&b.ca_pem);
    let mut tls =
        match test_support::client::tls_through_proxy(b.proxy, host, 443, host, config).await {
            Ok(t) => t,
            Err(e) => return e.to_string(),
        };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The `structuredContent` of a tool call's JSON-RPC answer.
pub fn result_of(body: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["result"]["structuredContent"].clone()
}

/// Polls `f` (bounded, 20 s) until it holds: tests wait on effects, not on timers.
pub async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}
