//! Bodies stream through without buffering; upgrades pass when the route allows them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pretty_assertions::assert_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::start;

const ROUTES: &str = r#"
routes:
  - host: api.test
    connect_to: UPSTREAM
    websocket: true
  - host: other.test
    connect_to: UPSTREAM
    matches:
      - paths: [{type: exact, value: /nows}]
"#;

async fn sender(
    h: &super::common::Harness,
    host: &str,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let tls = test_support::client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    test_support::client::http1(tls).await
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let h = start(ROUTES).await;
    let mut send = sender(&h, "api.test").await;
    let req = http::Request::get("/sse?n=4&gap_ms=150")
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(String::from_utf8(data.to_vec()).unwrap());
        }
    }
    // each event was delivered as its own frame, as the upstream sent it
    assert_eq!(
        frames,
        vec!["data: 0\n\n", "data: 1\n\n", "data: 2\n\n", "data: 3\n\n"]
    );
}

#[tokio::test]
async fn a_large_download_streams_through() {
    let h = start(ROUTES).await;
    let mut send = sender(&h, "api.test").await;
    let n: u64 = 64 * 1024 * 1024;
    let req = http::Request::get(format!("/bytes?n={n}"))
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    assert_eq!(total, n);
}

#[tokio::test]
async fn an_upload_streams_through() {
    let h = start(ROUTES).await;
    let mut send = sender(&h, "api.test").await;
    let payload = vec![b'u'; 3 * 1024 * 1024];
    let req = http::Request::post("/upload")
        .header("host", "api.test")
        .body(Full::new(Bytes::from(payload)))
        .unwrap();
    let r = test_support::client::send(&mut send, req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(h.upstream.requests()[0].body_len, 3 * 1024 * 1024);
}

pub(super) async fn websocket(
    h: &super::common::Harness,
    host: &str,
    path: &str,
) -> (u16, Option<String>) {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let mut tls = test_support::client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        return (status, None);
    }
    // one masked binary WebSocket frame (the agent's messages are read as frames); the
    // upstream echoes its bytes as they are
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82, 0x80 | 24];
    frame.extend_from_slice(&mask);
    frame.extend(
        b"hello through the tunnel"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    tls.write_all(&frame).await.unwrap();
    let mut echo = vec![0u8; frame.len()];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(echo[..6], frame[..6]);
    let text: Vec<u8> = echo[6..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    (status, Some(String::from_utf8(text).unwrap()))
}

#[tokio::test]
async fn websocket_upgrade_passes_when_the_route_allows_it() {
    let h = start(ROUTES).await;
    assert_eq!(
        websocket(&h, "api.test", "/ws").await,
        (101, Some("hello through the tunnel".into()))
    );
    assert_eq!(websocket(&h, "other.test", "/ws").await, (403, None));
}

async fn sse_frames(h: &super::common::Harness, path: &str) -> (Vec<String>, bool) {
    let mut send = sender(h, "api.test").await;
    let req = http::Request::get(path)
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    frames.push(String::from_utf8(data.to_vec()).unwrap());
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (frames, failed)
}

#[tokio::test]
async fn the_idle_timeout_resets_on_traffic() {
    let h = super::common::start_with(ROUTES, |c, _| {
        c.timeouts.idle = std::time::Duration::from_millis(3000);
    })
    .await;
    // 10 events 500 ms apart: 4.5 s in total, longer than the idle timeout, never idle
    let (frames, failed) = sse_frames(&h, "/sse?n=10&gap_ms=500").await;
    assert_eq!((frames.len(), failed), (10, false), "{frames:?}");
    // a stream that goes quiet for longer than the idle timeout is cut
    let (frames, failed) = sse_frames(&h, "/sse?n=3&gap_ms=10000").await;
    assert_eq!((frames, failed), (vec!["data: 0\n\n".to_string()], true));
}

#[tokio::test]
async fn a_silent_client_connection_is_closed_after_the_idle_timeout() {
    let h = super::common::start_with(ROUTES, |c, _| {
        c.timeouts.idle = std::time::Duration::from_millis(1000);
    })
    .await;
    let mut send = sender(&h, "api.test").await;
    let req = || {
        http::Request::get("/")
            .header("host", "api.test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = test_support::client::send(&mut send, req()).await.unwrap();
    assert_eq!(r.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    assert!(test_support::client::send(&mut send, req()).await.is_err());
    assert_eq!(h.upstream.requests().len(), 1);
}
