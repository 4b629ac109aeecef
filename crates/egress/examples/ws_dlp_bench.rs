//! Small WebSocket messages through the proxy with outbound DLP on, against the same proxy
//! with `dangerously_skip_dlp` (the baseline) and against the upstream directly, side by
//! side in one run: c=1 round trips of a text message to a TLS echo upstream on loopback
//! (tokio-tungstenite), each mode once per round, alternating, medians of the rounds.
//!
//! ```text
//! ws_dlp_bench [MESSAGES] [ROUNDS] [BYTES]    defaults: 2000 messages, 3 rounds, 200 bytes
//! ```
//!
//! Prints a markdown table (p50 / p99 round trip, messages per second, and the DLP-on
//! column's difference from DLP-off). Run it as a release build; `bench/README.md` has runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use test_support::TestCa;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A TLS WebSocket upstream that echoes text and binary messages.
async fn echo_upstream(ca: &TestCa) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["api.test"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A proxy on loopback with one WebSocket route to the upstream; returns its address and CA.
async fn proxy(
    upstream: SocketAddr,
    ca_file: &Path,
    dir: &Path,
    skip_dlp: bool,
) -> (SocketAddr, String) {
    let yaml = format!(
        "routes:\n  - host: api.test\n    connect_to: {upstream}\n    websocket: true\nlog: off\n"
    );
    let routes = policy::parse_routes(&yaml, Path::new("routes.yaml")).unwrap();
    let mut config = egress::ProxyConfig::new(dir.join(if skip_dlp { "ca-off" } else { "ca-on" }));
    config.upstream_ca = vec![ca_file.to_path_buf()];
    config.dangerously_skip_dlp = skip_dlp;
    let proxy = egress::Proxy::new(config, routes).unwrap();
    let pem = proxy.ca_pem().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    (addr, pem)
}

/// Round trips of `n` messages (after 100 unmeasured), in milliseconds each.
async fn run<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str, n: usize) -> Vec<f64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let started = Instant::now();
        ws.send(Message::text(text)).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.len(), text.len()),
            other => panic!("no echo: {other:?}"),
        }
        if i >= 100 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times
}

struct Stats {
    p50: f64,
    p99: f64,
    rate: f64,
}

fn stats(mut times: Vec<f64>) -> Stats {
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        rate: times.len() as f64 / (total / 1000.0),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let messages: usize = args.get(1).map_or(2000, |a| a.parse().unwrap());
    let rounds: usize = args.get(2).map_or(3, |a| a.parse().unwrap());
    let bytes: usize = args.get(3).map_or(200, |a| a.parse().unwrap());
    test_support::install_crypto_provider();
    let ca = TestCa::new("ws bench upstream CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    ca.write_pem(&ca_file);
    let upstream = echo_upstream(&ca).await;
    let off = proxy(upstream, &ca_file, dir.path(), true).await;
    let on = proxy(upstream, &ca_file, dir.path(), false).await;
    let prose = "the quick brown fox jumps over the lazy dog; ".repeat(bytes / 45 + 1);
    let text = format!(
        "{{\"type\":\"input_text\",\"text\":\"{}\"}}",
        &prose[..bytes.saturating_sub(32).max(1)]
    );
    // per mode: p50s, p99s, rates of each round
    let mut results: Vec<[Vec<f64>; 3]> =
        vec![Default::default(), Default::default(), Default::default()];
    for _ in 0..rounds {
        for (mode, through) in [(0, None), (1, Some(&off)), (2, Some(&on))] {
            let s = match through {
                None => {
                    let tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
                    let tls = tokio_rustls::TlsConnector::from(ca.client_config())
                        .connect(name, tcp)
                        .await
                        .unwrap();
                    let (mut ws, _) = tokio_tungstenite::client_async("wss://api.test/ws", tls)
                        .await
                        .unwrap();
                    stats(run(&mut ws, &text, messages).await)
                }
                Some((addr, pem)) => {
                    let config = test_support::client_config_for_pem(pem);
                    let tls = test_support::client::tls_through_proxy(
                        *addr, "api.test", 443, "api.test", config,
                    )
                    .await
                    .unwrap();
                    let (mut ws, _) = tokio_tungstenite::client_async("wss://api.test/ws", tls)
                        .await
                        .unwrap();
                    stats(run(&mut ws, &text, messages).await)
                }
            };
            results[mode][0].push(s.p50);
            results[mode][1].push(s.p99);
            results[mode][2].push(s.rate);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = |mode: usize, k: usize| median(results[mode][k].clone());
    println!(
        "| {} B text messages, c=1 round trips ({messages} per round, median of {rounds} alternating rounds) | direct | DLP off (dangerously_skip_dlp) | DLP on | on - off |",
        text.len()
    );
    println!("|---|---|---|---|---|");
    for (k, name) in [(0, "p50 ms"), (1, "p99 ms")] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:+.3} ms |",
            m(0, k),
            m(1, k),
            m(2, k),
            m(2, k) - m(1, k)
        );
    }
    println!(
        "| messages/s | {:.0} | {:.0} | {:.0} | {:.2}x |",
        m(0, 2),
        m(1, 2),
        m(2, 2),
        m(2, 2) / m(1, 2)
    );
}
