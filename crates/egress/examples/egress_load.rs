//! A small load generator for `bench/egress/run` that speaks HTTPS directly or through a
//! forward proxy (CONNECT). Prints one JSON object with the results.
//!
//! `egress_load --target 127.0.0.1:8443 --host localhost --ca ca.pem [--proxy ADDR]
//!  --mode keepalive|newconn|download|upload|tunnels [-c N] [--secs S] [--path P] [--tunnels N]
//!  [--body-bytes N] [--upload-mb M]`
//!
//! `--body-bytes` makes keep-alive requests POSTs of a JSON body of about N bytes (a model
//! API call's shape); `upload` POSTs M MiB of text once per try and reports the best rate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Opts {
    target: SocketAddr,
    host: String,
    port: u16,
    proxy: Option<SocketAddr>,
    tls: Arc<rustls::ClientConfig>,
    mode: String,
    conns: usize,
    secs: u64,
    path: String,
    tunnels: usize,
    body: Bytes,
    upload_mb: usize,
}

/// A JSON body of about `n` bytes, shaped like a model API request.
fn json_body(n: usize) -> Bytes {
    if n == 0 {
        return Bytes::new();
    }
    let text = "the quick brown fox jumps over the lazy dog; ".repeat(n / 45 + 1);
    Bytes::from(format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        &text[..n.saturating_sub(60).max(1)]
    ))
}

/// `mb` MiB of source-code-like text (what an agent uploads), not zeros.
fn upload_body(mb: usize) -> Bytes {
    let line = b"    let value = compute(input, &config).unwrap_or_default(); // step 42 of the pipeline\n";
    let mut v = Vec::with_capacity(mb << 20);
    while v.len() < mb << 20 {
        v.extend_from_slice(line);
    }
    v.truncate(mb << 20);
    Bytes::from(v)
}

fn parse() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .map(|i| args[i + 1].clone())
    };
    let target: SocketAddr = get("--target").expect("--target").parse().unwrap();
    let ca = std::fs::read_to_string(get("--ca").expect("--ca")).unwrap();
    Opts {
        target,
        host: get("--host").unwrap_or_else(|| "localhost".into()),
        port: target.port(),
        proxy: get("--proxy").map(|p| p.parse().unwrap()),
        tls: test_support::client_config_for_pem(&ca),
        mode: get("--mode").unwrap_or_else(|| "keepalive".into()),
        conns: get("-c").map(|c| c.parse().unwrap()).unwrap_or(1),
        secs: get("--secs").map(|c| c.parse().unwrap()).unwrap_or(5),
        path: get("--path").unwrap_or_else(|| "/".into()),
        tunnels: get("--tunnels").map(|c| c.parse().unwrap()).unwrap_or(1000),
        body: json_body(get("--body-bytes").map(|c| c.parse().unwrap()).unwrap_or(0)),
        upload_mb: get("--upload-mb")
            .map(|c| c.parse().unwrap())
            .unwrap_or(100),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn open(o: &Opts) -> Sender {
    let name = rustls::pki_types::ServerName::try_from(o.host.clone()).unwrap();
    let tcp = match o.proxy {
        Some(proxy) => {
            let (tcp, head) = test_support::client::connect_tunnel(proxy, &o.host, o.port)
                .await
                .unwrap();
            assert!(
                head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
                "{head}"
            );
            tcp
        }
        None => {
            let t = TcpStream::connect(o.target).await.unwrap();
            t.set_nodelay(true).unwrap();
            t
        }
    };
    let tls = tokio_rustls::TlsConnector::from(o.tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    test_support::client::http1(tls).await
}

async fn one(o: &Opts, s: &mut Sender, path: &str) -> u64 {
    send(o, s, path, o.body.clone()).await
}

async fn send(o: &Opts, s: &mut Sender, path: &str, body: Bytes) -> u64 {
    let authority = if o.port == 443 {
        o.host.clone()
    } else {
        format!("{}:{}", o.host, o.port)
    };
    let method = if body.is_empty() { "GET" } else { "POST" };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    s.ready().await.unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert!(resp.status().is_success(), "status {}", resp.status());
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len() as u64;
        }
    }
    n
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let o = parse();
    match o.mode.as_str() {
        "keepalive" | "newconn" => {
            let deadline = Instant::now() + Duration::from_secs(o.secs);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..o.conns {
                let o = o.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut s = if o.mode == "keepalive" {
                        Some(open(&o).await)
                    } else {
                        None
                    };
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match s.as_mut() {
                            Some(s) => {
                                one(&o, s, &o.path).await;
                            }
                            None => {
                                let mut fresh = open(&o).await;
                                one(&o, &mut fresh, &o.path).await;
                            }
                        }
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            let elapsed = started.elapsed().as_secs_f64();
            all.sort_unstable();
            println!(
                "{{\"requests\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
                all.len(),
                all.len() as f64 / elapsed,
                pct(&all, 0.5),
                pct(&all, 0.99)
            );
        }
        "download" => {
            // best of three: a single run on a shared machine is mostly noise
            let mut s = open(&o).await;
            let mut best = 0f64;
            let mut n = 0;
            for _ in 0..3 {
                let t = Instant::now();
                n = one(&o, &mut s, &o.path).await;
                best = best.max(n as f64 / t.elapsed().as_secs_f64() / 1e6);
            }
            println!("{{\"bytes\":{n},\"mb_per_s\":{best:.1}}}");
        }
        "upload" => {
            // best of three, as for downloads
            let data = upload_body(o.upload_mb);
            let mut s = open(&o).await;
            let mut best = 0f64;
            for _ in 0..3 {
                let t = Instant::now();
                send(&o, &mut s, &o.path, data.clone()).await;
                best = best.max(data.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
            }
            println!("{{\"bytes\":{},\"mb_per_s\":{best:.1}}}", data.len());
        }
        "tunnels" => {
            let mut held = Vec::new();
            for _ in 0..o.tunnels {
                let mut s = open(&o).await;
                one(&o, &mut s, &o.path).await;
                held.push(s);
            }
            println!("{{\"tunnels\":{}}}", held.len());
            tokio::time::sleep(Duration::from_secs(o.secs)).await;
            drop(held);
        }
        "sse-upstream" => {
            // a TLS upstream that sends timed server-sent events, for the SSE timing row
            let ca = test_support::TestCa::new("bench sse CA");
            let upstream = test_support::Upstream::start_tls(&ca, &["localhost"]).await;
            let args: Vec<String> = std::env::args().collect();
            let out = args
                .iter()
                .position(|a| a == "--ca-out")
                .map(|i| args[i + 1].clone())
                .expect("--ca-out");
            ca.write_pem(std::path::Path::new(&out));
            println!("{}", upstream.addr());
            tokio::time::sleep(Duration::from_secs(o.secs)).await;
        }
        "sse" => {
            // events are sent `gap` ms apart; how far does each arrive from that schedule?
            let mut s = open(&o).await;
            let authority = if o.port == 443 {
                o.host.clone()
            } else {
                format!("{}:{}", o.host, o.port)
            };
            let req = http::Request::get(&o.path)
                .header("host", authority)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = s.send_request(req).await.unwrap();
            let gap: f64 = o
                .path
                .split("gap_ms=")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(50.0);
            let mut body = resp.into_body();
            let mut first = None;
            let mut late = Vec::new();
            let mut i = 0f64;
            while let Some(f) = body.frame().await {
                if f.unwrap().into_data().is_ok() {
                    let now = Instant::now();
                    let t0 = *first.get_or_insert(now);
                    let off = now.duration_since(t0).as_secs_f64() * 1000.0 - i * gap;
                    late.push((off * 1000.0).abs() as u64);
                    i += 1.0;
                }
            }
            late.sort_unstable();
            println!(
                "{{\"events\":{},\"p50_ms\":{:.3},\"max_ms\":{:.3}}}",
                late.len(),
                pct(&late, 0.5),
                late.last().copied().unwrap_or(0) as f64 / 1000.0
            );
        }
        other => panic!("unknown mode {other}"),
    }
}
