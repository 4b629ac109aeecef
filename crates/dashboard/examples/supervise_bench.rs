//! Benchmark of the two operator-facing latencies of supervise (run by
//! `bench/supervise/run`):
//!
//! 1. the operator approves -> the agent's pending `egress-allow` call returns over HTTP
//!    (response file -> file event -> apply -> audit -> archive -> answer), against a
//!    baseline of an immediate tool call (`list-egress-routes`) over the same connection
//!    code;
//! 2. a proposal arrives in a queue -> it is in the dashboard's model (file event ->
//!    snapshot of every queue -> model), against a baseline of the bare file event.
//!
//! Only loopback traffic. Prints a table with p50 / p99 and the ratio to the baseline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proposals::queue::{self, NewProposal, Queue};
use supervise::{Decision, Home, RecordingApplier, SuperviseConfig, Tool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE: &str = "log: blocks\nroutes:\n  - host: api.example.com\n";

async fn post(addr: std::net::SocketAddr, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn call(tool: &str, args: serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn approve_round_trip(n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let applier = RecordingApplier::with_routes(BASE);
    let cfg = SuperviseConfig::new(home.clone(), "bench-00001", Arc::new(applier));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(supervise::serve(listener, cfg, async move {
        let _ = rx.await;
    }));
    let q = Queue::new(home.clone(), "bench-00001").unwrap();
    let mut measured = Vec::with_capacity(n);
    let mut baseline = Vec::with_capacity(n);
    let mut live = BASE.to_owned();
    for i in 0..n {
        // baseline: an immediate tool call over the same client code
        let t = Instant::now();
        let r = post(addr, &call("list-egress-routes", serde_json::json!({}))).await;
        baseline.push(t.elapsed());
        assert!(r.contains("api.example.com"));

        // Each proposal adds one route to the live ones (an egress-allow may only widen).
        live.push_str(&format!("  - host: h{i}.example\n"));
        let routes = live.clone();
        let body = call(
            "egress-allow",
            serde_json::json!({"routes_yaml": routes, "justification": "bench"}),
        );
        let pending = tokio::spawn(async move { post(addr, &body).await });
        let id = loop {
            if let Some(e) = q.pending().unwrap().0.into_iter().next() {
                break e.proposal.id;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let t = Instant::now();
        queue::answer(&home, &id, Decision::Approved, None, None, "bench").unwrap();
        let r = pending.await.unwrap();
        measured.push(t.elapsed());
        assert!(
            r.contains("\\\"status\\\":\\\"approved\\\"") || r.contains("\"status\":\"approved\""),
            "{r}"
        );
    }
    // The server's graceful stop waits for its open connections; a benchmark need not.
    let _ = stop.send(());
    server.abort();
    (measured, baseline)
}

fn arrival_to_model(n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let (tx, rx) = mpsc::channel();
    let _w = dashboard::watch_queues(&home, tx).unwrap();
    let mut app = dashboard::App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());
    // a few bottles with some pending proposals, as on a real operator's machine
    for b in 0..4 {
        let q = Queue::new(home.clone(), &format!("other-{b:05}")).unwrap();
        for i in 0..5 {
            q.submit(NewProposal {
                tool: Tool::EgressAllow,
                proposed_file: format!("{BASE}  - host: o{i}.example\n"),
                justification: "background".into(),
                current_file: Some(BASE.into()),
                args: None,
            })
            .unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    while rx.try_recv().is_ok() {}
    let q = Queue::new(home.clone(), "bench-00001").unwrap();
    let mut measured = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (p, _) = q
            .submit(NewProposal {
                tool: Tool::EgressAllow,
                proposed_file: format!("{BASE}  - host: n{i}.example\n"),
                justification: "bench".into(),
                current_file: Some(BASE.into()),
                args: None,
            })
            .unwrap();
        loop {
            rx.recv().unwrap();
            while rx.try_recv().is_ok() {}
            app.load(dashboard::snapshot(&home).unwrap());
            if app.visible().iter().any(|e| e.proposal.id == p.id) {
                break;
            }
        }
        measured.push(t.elapsed());
        // handled proposals leave the queue, so the queue size stays steady
        std::fs::remove_file(q.dir().join(format!("{}.json", p.id))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        while rx.try_recv().is_ok() {}
    }
    // baseline: the bare file event for a plain file write in a watched directory
    let mut baseline = Vec::with_capacity(n);
    let plain = q.dir().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    while rx.try_recv().is_ok() {}
    for i in 0..n {
        let t = Instant::now();
        std::fs::write(plain.join(format!("{i}.txt")), b"x").unwrap();
        rx.recv().unwrap();
        baseline.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
        while rx.try_recv().is_ok() {}
    }
    (measured, baseline)
}

/// The floor under every durable step: a small file written, fsynced and renamed into
/// place (with the directory synced), as the queue and the audit log do.
fn durable_write(n: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    (0..n)
        .map(|i| {
            let t = Instant::now();
            state::atomic_write_mode(&dir.path().join(format!("{i}.json")), b"{}", 0o666).unwrap();
            t.elapsed()
        })
        .collect()
}

fn row(name: &str, mut m: Vec<Duration>, mut b: Vec<Duration>) {
    let (m50, m99) = (pct(&mut m, 0.5), pct(&mut m, 0.99));
    let (b50, b99) = (pct(&mut b, 0.5), pct(&mut b, 0.99));
    println!(
        "| {name} | {} | {} | {} | {} | {} | {:.1}x |",
        m.len(),
        ms(m50),
        ms(m99),
        ms(b50),
        ms(b99),
        m50.as_secs_f64() / b50.as_secs_f64()
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (m1, b1) = rt.block_on(approve_round_trip(n));
    // `SUPERVISE_BENCH_ONLY=approve` (bench/supervise/busy): the approve path alone.
    let only_approve = std::env::var("SUPERVISE_BENCH_ONLY").is_ok_and(|v| v == "approve");
    let arrival = (!only_approve).then(|| arrival_to_model(n));
    let mut w = durable_write(n);
    println!("| measurement | n | p50 | p99 | baseline p50 | baseline p99 | p50 / baseline |");
    println!("|---|---|---|---|---|---|---|");
    row(
        "operator approves -> agent's tool result (baseline: immediate tool call)",
        m1,
        b1,
    );
    if let Some((m2, b2)) = arrival {
        row(
            "proposal arrives -> in dashboard model, 4 other bottles x 5 pending (baseline: bare file event)",
            m2,
            b2,
        );
    }
    println!(
        "\nfor scale: one durable write (temp file, fsync, rename, directory fsync): p50 {} p99 {}; the agent's answer waits for two groups of fsyncs in a row (the operator's audit line, head and response; the engine's audit line, head and outcome), the operator's command for one directory sync more",
        ms(pct(&mut w, 0.5)),
        ms(pct(&mut w, 0.99))
    );
}
