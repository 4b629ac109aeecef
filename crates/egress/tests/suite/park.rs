//! Parking: an HTTP/1 connection at rest gives up hyper's buffers until its next request
//! (`egress::park`). Each case runs twice, parked after 20 ms and never parked (hyper alone,
//! as before parking existed), and must come out the same: the requests after a park, the
//! framing check, the head limit and the request-head deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pretty_assertions::assert_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::common::{Harness, start_with};

const ROUTES: &str = r#"
routes:
  - host: api.test
    connect_to: UPSTREAM
"#;

/// Parked after 20 ms; or never (an hour).
const MODES: [(&str, Duration); 2] = [
    ("parked", Duration::from_millis(20)),
    ("hyper alone", Duration::from_secs(3600)),
];

/// Long enough for a park at 20 ms, even on a loaded machine.
const PAUSE: Duration = Duration::from_millis(300);

async fn proxy(park: Duration, request_head: Duration, head_limit: usize) -> Harness {
    start_with(ROUTES, move |c, _| {
        c.timeouts.park = park;
        c.timeouts.request_head = request_head;
        c.limits.head = head_limit;
    })
    .await
}

async fn tunnel(h: &Harness) -> TlsStream<TcpStream> {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    test_support::client::tls_through_proxy(h.proxy, "api.test", 443, "api.test", config)
        .await
        .unwrap()
}

/// Reads until `needle` has arrived (panics after 20 s or at the end of the stream).
async fn read_until(tls: &mut TlsStream<TcpStream>, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
            .await
            .expect("no answer in 20 s")
            .unwrap();
        assert!(
            n > 0,
            "the connection ended before {needle:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Everything until the proxy closes the connection (or 20 s).
async fn read_rest(tls: &mut TlsStream<TcpStream>) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n";

#[tokio::test]
async fn a_parked_tunnel_serves_its_next_requests_large_slow_and_streamed() {
    for (mode, park) in MODES {
        let h = proxy(park, Duration::from_secs(30), 64 * 1024).await;
        let parked_before = egress::fuzzing::parked_connections();
        let mut send = test_support::client::http1(tunnel(&h).await).await;
        let get = |path: &str| {
            http::Request::get(path)
                .header("host", "api.test")
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let resp = test_support::client::send(&mut send, get("/"))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{mode}");
        tokio::time::sleep(PAUSE).await;
        // a 1 MiB upload after the pause, on the same connection
        let body = vec![b'a'; 1024 * 1024];
        let req = http::Request::post("/echo")
            .header("host", "api.test")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = test_support::client::send(&mut send, req).await.unwrap();
        assert_eq!(resp.status, 200, "{mode}");
        assert_eq!(resp.body.len(), 65536, "{mode}: the upstream echoes 64 KiB");
        tokio::time::sleep(PAUSE).await;
        // a stream whose events are further apart than the park delay is not cut
        let resp = send.send_request(get("/sse?n=3&gap_ms=150")).await.unwrap();
        let mut body = resp.into_body();
        let mut events = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                events.push(String::from_utf8(data.to_vec()).unwrap());
            }
        }
        assert_eq!(
            events,
            vec!["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"],
            "{mode}"
        );
        tokio::time::sleep(PAUSE).await;
        // an upstream slower than the park delay
        let resp = test_support::client::send(&mut send, get("/delay?ms=200"))
            .await
            .unwrap();
        assert_eq!(resp.body, "late", "{mode}");
        let resp = test_support::client::send(&mut send, get("/last"))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{mode}");
        let recorded = h.upstream.requests();
        assert_eq!(recorded.len(), 5, "{mode}");
        assert_eq!(recorded[1].body_len, 1024 * 1024, "{mode}");
        let parked = egress::fuzzing::parked_connections() - parked_before;
        if mode == "parked" {
            // at least after the first request, the upload and the stream
            assert!(parked >= 3, "{mode}: parked {parked} times");
        }
    }
}

#[tokio::test]
async fn a_parked_tunnel_still_refuses_smuggling_shapes_and_heads_over_the_limit() {
    let shapes: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.test\r\n\r\n",
        b"GET / HTTP/1.1\nHost: api.test\n\n",
        b"\nGET / HTTP/1.1\r\nHost: api.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\n\r\n",
    ];
    let big = format!(
        "GET / HTTP/1.1\r\nHost: api.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    for (mode, park) in MODES {
        let h = proxy(park, Duration::from_secs(30), 4096).await;
        for shape in shapes.iter().copied().chain([big.as_bytes()]) {
            let mut tls = tunnel(&h).await;
            tls.write_all(GET).await.unwrap();
            let first = read_until(&mut tls, "\r\n\r\nok").await;
            assert!(first.starts_with("HTTP/1.1 200 OK"), "{mode}: {first}");
            tokio::time::sleep(PAUSE).await;
            let _ = tls.write_all(shape).await;
            let (reply, closed) = read_rest(&mut tls).await;
            assert!(
                !reply.contains("200 OK"),
                "{mode}: {}\n->\n{reply}",
                String::from_utf8_lossy(shape)
            );
            assert!(
                closed,
                "{mode}: the connection stayed open after a refused head"
            );
        }
        // only the first request of each connection went upstream
        let paths: Vec<String> = h.upstream.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, vec!["/"; shapes.len() + 1], "{mode}");
    }
}

#[tokio::test]
async fn the_head_deadline_counts_from_the_end_of_the_last_response_across_a_park() {
    for (mode, park) in MODES {
        let h = proxy(park, Duration::from_millis(1500), 64 * 1024).await;
        // a head begun within the deadline and finished after it is not served
        let mut tls = tunnel(&h).await;
        tls.write_all(GET).await.unwrap();
        read_until(&mut tls, "\r\n\r\nok").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let _ = tls.write_all(b"G").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let _ = tls.write_all(&GET[1..]).await;
        let (reply, closed) = read_rest(&mut tls).await;
        assert!(!reply.contains("200 OK"), "{mode}: {reply}");
        assert!(closed, "{mode}");
        // a silent keep-alive connection is closed by the same deadline (the idle timeout
        // is 300 s)
        let mut tls = tunnel(&h).await;
        tls.write_all(GET).await.unwrap();
        read_until(&mut tls, "\r\n\r\nok").await;
        let (reply, closed) = read_rest(&mut tls).await;
        assert!(closed, "{mode}: still open after 20 s");
        assert_eq!(reply, "", "{mode}");
        assert_eq!(h.upstream.requests().len(), 2, "{mode}");
    }
}
