//! Outbound DLP through a real TLS upstream that records what arrived: a planted key in a
//! JSON body, split across chunks, in a gzip body, in a header, in a query string, and the
//! injected credential echoed by the agent; each blocked, redacted or logged as the route
//! says. The upstream never sees the secret and no log line holds it.

use std::io::Write;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pretty_assertions::assert_eq;
use test_support::client::{self, Collected};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::{Harness, TOKEN, start};

/// A key the scanner's `aws-access-key-id` rule finds.
pub(super) const KEY: &str = "AKIAZ3MSJV4WWNKWW5FG";
const MARKER: &str = egress::DLP_MARKER;

/// `api.test` blocks (the default) and holds the credential; `other.test` redacts;
/// `a.wild.test` only logs; `b.wild.test` blocks but allows the key's rule.
const ROUTES: &str = r#"
routes:
  - host: api.test
    connect_to: UPSTREAM
    auth_scheme: Bearer
    token_env: TEST_TOKEN
  - host: other.test
    connect_to: UPSTREAM
    dlp: redact
  - host: a.wild.test
    connect_to: UPSTREAM
    dlp: log
  - host: b.wild.test
    connect_to: UPSTREAM
    dlp_allow: [aws-access-key-id]
"#;

pub(super) async fn post(
    h: &Harness,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Collected {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let tls = client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    let mut send = client::http1(tls).await;
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(
        &mut send,
        req.body(Full::new(Bytes::copy_from_slice(body))).unwrap(),
    )
    .await
    .unwrap()
}

/// What the upstream received, as text (bodies and headers), for "never arrived" checks.
fn arrived(h: &Harness) -> String {
    h.upstream
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}\n{:?}\n{}\n",
                r.method,
                r.path,
                r.headers,
                String::from_utf8_lossy(&r.body)
            )
        })
        .collect()
}

/// The log lines that report a DLP finding: (rule, place, action).
fn dlp_lines(h: &Harness) -> Vec<(String, String, String)> {
    let text = h.log_text();
    assert!(!text.contains(KEY), "a log line holds the key: {text}");
    assert!(!text.contains(TOKEN), "a log line holds the token: {text}");
    h.log_lines()
        .into_iter()
        .filter_map(|l| {
            let d = l.get("dlp")?;
            Some((
                d["rule"].as_str().unwrap().to_string(),
                d["place"].as_str().unwrap().to_string(),
                d["action"].as_str().unwrap().to_string(),
            ))
        })
        .collect()
}

fn assert_dlp_refusal(r: &Collected, rule: &str) {
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.header("x-bot-bottle-blocked"),
        Some(format!("dlp {rule}").as_str())
    );
    assert!(r.body.contains(&format!("rule {rule}")), "{}", r.body);
    assert!(r.body.contains("dlp-allow"), "{}", r.body);
    assert!(
        !r.body.contains(KEY) && !r.body.contains(TOKEN),
        "{}",
        r.body
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn a_key_in_a_json_body_is_blocked_or_redacted_as_the_route_says() {
    let h = start(ROUTES).await;
    let body = format!(r#"{{"note":"deploy","aws_key":"{KEY}"}}"#);
    let r = post(
        &h,
        "api.test",
        "/v1/x",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_dlp_refusal(&r, "aws-access-key-id");
    assert_eq!(
        h.upstream.requests().len(),
        0,
        "a blocked request reached the upstream"
    );

    let r = post(
        &h,
        "other.test",
        "/v1/x",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = h.upstream.take();
    let expected = format!(r#"{{"note":"deploy","aws_key":"{MARKER}"}}"#);
    assert_eq!(String::from_utf8_lossy(&reqs[0].body), expected);
    assert_eq!(
        reqs[0].header("content-length"),
        vec![expected.len().to_string().as_str()]
    );

    let r = post(&h, "a.wild.test", "/v1/x", &[], body.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&h.upstream.take()[0].body), body);

    let r = post(&h, "b.wild.test", "/v1/x", &[], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(String::from_utf8_lossy(&h.upstream.take()[0].body), body);

    assert_eq!(
        dlp_lines(&h),
        vec![
            ("aws-access-key-id".into(), "body".into(), "blocked".into()),
            ("aws-access-key-id".into(), "body".into(), "redacted".into()),
            ("aws-access-key-id".into(), "body".into(), "logged".into()),
        ]
    );
}

/// On one line, as a JSON body is to the scanner: a value an allowlist leaves alone (a public
/// token) does not hide the secret next to it, and a key sent base64-encoded is redacted where
/// it is written (found once, as written, not again from its decoded copy, which is not in
/// the body and could not be redacted).
#[tokio::test]
async fn a_secret_next_to_an_allowed_value_and_an_encoded_key_are_redacted_in_a_json_body() {
    use base64::Engine as _;
    let h = start(ROUTES).await;
    let public = "Wf3kQ9zLm2Xv7Rt4Np8Ys1Bd6Hc5Jg0";
    let secret = ["Hq4vNz8Lk2", "Wr7Xp3Ty9Mc5Bd"].concat();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&secret);
    for (body, expected) in [
        (
            format!(r#"{{"publicToken":"{public}","client_secret":"{secret}"}}"#),
            format!(r#"{{"publicToken":"{public}","client_secret":"{MARKER}"}}"#),
        ),
        (
            format!(r#"{{"note":"deploy","api_key":"{encoded}"}}"#),
            format!(r#"{{"note":"deploy","api_key":"{MARKER}"}}"#),
        ),
    ] {
        let r = post(
            &h,
            "other.test",
            "/v1/x",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let reqs = h.upstream.take();
        assert_eq!(String::from_utf8_lossy(&reqs[0].body), expected);
    }
    let text = h.log_text();
    assert!(
        !text.contains(&secret) && !text.contains(&encoded),
        "{text}"
    );
    assert_eq!(
        dlp_lines(&h),
        vec![
            ("generic-secret".into(), "body".into(), "redacted".into()),
            ("generic-secret".into(), "body".into(), "redacted".into()),
        ]
    );
}

#[tokio::test]
async fn a_key_in_a_header_or_the_query_is_blocked_or_redacted() {
    let h = start(ROUTES).await;
    let r = post(&h, "api.test", "/v1/x", &[("x-note", KEY)], b"{}").await;
    assert_dlp_refusal(&r, "aws-access-key-id");
    let r = post(&h, "api.test", &format!("/v1/x?key={KEY}&a=1"), &[], b"{}").await;
    assert_dlp_refusal(&r, "aws-access-key-id");
    assert_eq!(h.upstream.requests().len(), 0);

    let r = post(
        &h,
        "other.test",
        &format!("/v1/x?key={KEY}&a=1"),
        &[("x-note", KEY)],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = h.upstream.take();
    assert_eq!(reqs[0].path, format!("/v1/x?key={MARKER}&a=1"));
    assert_eq!(reqs[0].header("x-note"), vec![MARKER]);
    assert!(!arrived(&h).contains(KEY));
    assert_eq!(
        dlp_lines(&h),
        vec![
            (
                "aws-access-key-id".into(),
                "header x-note".into(),
                "blocked".into()
            ),
            (
                "aws-access-key-id".into(),
                "request-line".into(),
                "blocked".into()
            ),
            (
                "aws-access-key-id".into(),
                "request-line".into(),
                "redacted".into()
            ),
            (
                "aws-access-key-id".into(),
                "header x-note".into(),
                "redacted".into()
            ),
        ]
    );
}

#[tokio::test]
async fn the_injected_credential_echoed_by_the_agent_is_a_finding() {
    let h = start(ROUTES).await;
    // toward its own host, but in the body: not the header egress injects it into
    let r = post(
        &h,
        "api.test",
        "/v1/x",
        &[],
        format!("token={TOKEN}").as_bytes(),
    )
    .await;
    assert_dlp_refusal(&r, "credential");
    // toward another host, in a header and the body
    let r = post(
        &h,
        "other.test",
        "/v1/x",
        &[("x-forward", TOKEN)],
        format!("t={TOKEN}").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = h.upstream.take();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("x-forward"), vec![MARKER]);
    assert_eq!(
        String::from_utf8_lossy(&reqs[0].body),
        format!("t={MARKER}")
    );
    // the credential egress injects itself still goes, to its own host only
    let r = post(
        &h,
        "api.test",
        "/v1/x",
        &[("authorization", "Bearer placeholder")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reqs = h.upstream.take();
    assert_eq!(
        reqs[0].header("authorization"),
        vec![format!("Bearer {TOKEN}").as_str()]
    );
    assert_eq!(
        dlp_lines(&h),
        vec![
            ("credential".into(), "body".into(), "blocked".into()),
            (
                "credential".into(),
                "header x-forward".into(),
                "redacted".into()
            ),
            ("credential".into(), "body".into(), "redacted".into()),
        ]
    );
}

#[tokio::test]
async fn a_gzip_body_is_decoded_scanned_and_forwarded_decoded() {
    let h = start(ROUTES).await;
    let body = format!(r#"{{"aws_key":"{KEY}"}}"#);
    let gz = gzip(body.as_bytes());
    let r = post(
        &h,
        "api.test",
        "/v1/x",
        &[("content-encoding", "gzip")],
        &gz,
    )
    .await;
    assert_dlp_refusal(&r, "aws-access-key-id");
    assert_eq!(h.upstream.requests().len(), 0);
    let r = post(
        &h,
        "other.test",
        "/v1/x",
        &[("content-encoding", "gzip")],
        &gz,
    )
    .await;
    assert_eq!(r.status, 200);
    let reqs = h.upstream.take();
    assert_eq!(
        String::from_utf8_lossy(&reqs[0].body),
        format!(r#"{{"aws_key":"{MARKER}"}}"#)
    );
    assert_eq!(reqs[0].header("content-encoding"), Vec::<&str>::new());
    // a coding egress cannot read is refused, not passed; so are two codings, in one field
    // or in two (the first alone would say nothing is compressed)
    for codings in [
        &[("content-encoding", "compress")][..],
        &[("content-encoding", "identity, gzip")],
        &[
            ("content-encoding", "identity"),
            ("content-encoding", "gzip"),
        ],
    ] {
        let r = post(&h, "other.test", "/v1/x", codings, &gz).await;
        assert_eq!(r.status, 403, "{codings:?}");
        assert_eq!(r.header("x-bot-bottle-blocked"), Some("dlp unscannable"));
    }
    assert_eq!(h.upstream.requests().len(), 0);
}

#[tokio::test]
async fn a_zstd_body_is_decoded_and_an_unscannable_one_passes_only_where_the_route_says() {
    let routes = format!(
        "{ROUTES}  - host: \"127.0.0.1\"\n    connect_to: UPSTREAM\n    dangerously_dlp_pass_unscannable: true\n"
    );
    let h = start(&routes).await;
    let body = format!(r#"{{"aws_key":"{KEY}"}}"#);
    let z = ruzstd::encoding::compress_to_vec(
        body.as_bytes(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let r = post(&h, "api.test", "/v1/x", &[("content-encoding", "zstd")], &z).await;
    assert_dlp_refusal(&r, "aws-access-key-id");
    let r = post(
        &h,
        "other.test",
        "/v1/x",
        &[("content-encoding", "zstd")],
        &z,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&h.upstream.take()[0].body),
        format!(r#"{{"aws_key":"{MARKER}"}}"#)
    );
    // a coding egress cannot read: refused on other routes, passed as it is on this one
    let r = post(
        &h,
        "127.0.0.1",
        "/v1/x",
        &[("content-encoding", "compress")],
        b"opaque",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reqs = h.upstream.take();
    assert_eq!(reqs[0].body, b"opaque");
    assert_eq!(reqs[0].header("content-encoding"), vec!["compress"]);
    assert_eq!(
        dlp_lines(&h),
        vec![
            ("aws-access-key-id".into(), "body".into(), "blocked".into()),
            ("aws-access-key-id".into(), "body".into(), "redacted".into()),
            ("unscannable".into(), "body".into(), "logged".into()),
        ]
    );
}

/// Sends a chunked POST over a raw TLS stream, one write (and flush) per chunk, and reads
/// the status line of the answer.
async fn post_chunks(h: &Harness, host: &str, chunks: &[&[u8]]) -> String {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let mut tls = client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/up HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // a refusal may close the connection before the whole body is written
    let mut open = true;
    for c in chunks {
        let mut frame = format!("{:x}\r\n", c.len()).into_bytes();
        frame.extend_from_slice(c);
        frame.extend_from_slice(b"\r\n");
        if tls.write_all(&frame).await.is_err() || tls.flush().await.is_err() {
            open = false;
            break;
        }
        // let the proxy read this chunk as a frame of its own
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if open {
        let _ = tls.write_all(b"0\r\n\r\n").await;
        let _ = tls.flush().await;
    }
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_key_split_across_two_chunks_is_caught() {
    let h = start(ROUTES).await;
    let body = format!(r#"{{"aws_key":"{KEY}"}}"#);
    let cut = body.find(KEY).unwrap() + 9;
    let (a, b) = body.as_bytes().split_at(cut);
    let status = post_chunks(&h, "api.test", &[a, b]).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert_eq!(h.upstream.requests().len(), 0);
    let status = post_chunks(&h, "other.test", &[a, b]).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        String::from_utf8_lossy(&h.upstream.take()[0].body),
        format!(r#"{{"aws_key":"{MARKER}"}}"#)
    );

    // a large body streams through; the key far into it, split, never arrives
    let filler = "x".repeat(30_000); // the upstream records 64 KiB of a body
    let big = format!("{filler} aws_key={KEY} {filler}");
    let cut = big.find(KEY).unwrap() + 5;
    let (a, b) = big.as_bytes().split_at(cut);
    let status = post_chunks(&h, "other.test", &[a, b]).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let reqs = h.upstream.take();
    let got = String::from_utf8_lossy(&reqs[0].body).into_owned();
    let want = big.replace(KEY, MARKER);
    let first_diff = got.bytes().zip(want.bytes()).position(|(x, y)| x != y);
    assert_eq!(
        (got.len(), first_diff),
        (want.len(), None),
        "around: {:?}",
        first_diff.map(|d| &got[d.saturating_sub(40)..(d + 60).min(got.len())])
    );
    let status = post_chunks(&h, "api.test", &[a, b]).await;
    assert_ne!(status, "HTTP/1.1 200 OK");
    assert!(!arrived(&h).contains(KEY));

    // past the first window the request is already on its way: DLP stops the body before
    // the key, the upstream sees an aborted request, the agent a 403
    let filler = "x".repeat(400_000);
    let big = format!("{filler} aws_key={KEY} {filler}");
    let at = big.find(KEY).unwrap() as u64;
    let chunks: Vec<&[u8]> = big.as_bytes().chunks(64 * 1024).collect();
    let status = post_chunks(&h, "api.test", &chunks).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    for r in h.upstream.take() {
        assert!(
            r.body_len < at,
            "{} bytes arrived, the key starts at {at}",
            r.body_len
        );
    }
}

#[tokio::test]
async fn an_http2_request_is_scanned_too() {
    let h = start(ROUTES).await;
    for (host, status) in [("api.test", 403), ("other.test", 200)] {
        let config = test_support::client_config_with_alpn(&h.ca_pem, &[b"h2", b"http/1.1"]);
        let tls = client::tls_through_proxy(h.proxy, host, 443, host, config)
            .await
            .unwrap();
        let mut send = client::http2(tls).await;
        let req = Request::post(format!("https://{host}/v1/x?k={KEY}"))
            .header("x-note", KEY)
            .body(Full::new(Bytes::from(format!("k={KEY}"))))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{host}");
    }
    let reqs = h.upstream.take();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, format!("/v1/x?k={MARKER}"));
    assert_eq!(
        String::from_utf8_lossy(&reqs[0].body),
        format!("k={MARKER}")
    );
    assert!(!arrived(&h).contains(KEY));
}

#[tokio::test]
async fn a_key_in_the_host_name_of_a_wildcard_route_is_refused_even_when_redacting() {
    // (no upstream: the refusal comes before any connection)
    let routes = "routes:\n  - host: \"*.wild.test\"\n    dlp: redact\n";
    let h = start(routes).await;
    let host = format!("{}.wild.test", KEY.to_ascii_lowercase());
    let tcp = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let mut send = client::http1(tcp).await;
    let req = Request::get(format!("http://{host}/v1/x"))
        .header("host", host.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client::send(&mut send, req).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.header("x-bot-bottle-blocked"),
        Some("dlp aws-access-key-id")
    );
    assert!(r.body.contains("host name"), "{}", r.body);
    assert_eq!(h.upstream.requests().len(), 0);
}

#[tokio::test]
async fn a_plain_http_route_is_scanned_too() {
    let plain = test_support::Upstream::start_plain().await;
    let routes = format!(
        "routes:\n  - host: api.test\n    port: 80\n    connect_to: {}\n",
        plain.addr()
    );
    let h = start(&routes).await;
    let tcp = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let mut send = client::http1(tcp).await;
    let req = Request::post("http://api.test/v1/x")
        .header("host", "api.test")
        .body(Full::new(Bytes::from(format!("k={KEY}"))))
        .unwrap();
    let r = client::send(&mut send, req).await.unwrap();
    assert_dlp_refusal(&r, "aws-access-key-id");
    assert_eq!(plain.requests().len(), 0);
}

#[tokio::test]
async fn without_dlp_a_request_goes_as_it_is_also_after_a_reload() {
    // `dangerously_skip_dlp` (a benchmark's baseline): no generation of routes holds a DLP
    // engine then (its rules are not compiled, so the baseline's memory is the proxy's
    // alone); a request with a key in its body and a header still goes unchanged, before
    // and after the routes are reloaded, and nothing is logged as a finding.
    let h = super::common::start_with(ROUTES, |c, _| c.dangerously_skip_dlp = true).await;
    let body = format!(r#"{{"aws_key":"{KEY}"}}"#);
    for round in 0..2 {
        let r = post(
            &h,
            "other.test",
            "/v1/x",
            &[("x-key", KEY)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "round {round}: {}", r.body);
        let reqs = h.upstream.take();
        assert_eq!(
            String::from_utf8_lossy(&reqs[0].body),
            body,
            "round {round}"
        );
        assert_eq!(reqs[0].header("x-key"), vec![KEY], "round {round}");
        let config = h.routes.config();
        h.routes.replace(config).unwrap();
    }
    assert_eq!(dlp_lines(&h), Vec::<(String, String, String)>::new());
}
