//! Judge what is forwarded: rules are decided on the request exactly as the upstream will
//! get it (after hop-by-hop stripping, in the path's one spelling, with any method
//! override), and what an upstream could read differently is refused. Each class over
//! HTTP/1.1 and HTTP/2; the recording upstream says what really arrived.

use bytes::Bytes;
use http_body_util::Full;
use pretty_assertions::assert_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::{Harness, TOKEN, start};

const ROUTES: &str = r#"
log: all
routes:
  - host: api.test
    connect_to: UPSTREAM
    auth_scheme: Bearer
    token_env: TEST_TOKEN
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET, POST]
      - paths: [{type: prefix, value: /scoped/}]
        headers: [{name: x-scope, value: read}]
      - paths: [{type: prefix, value: /te/}]
        headers: [{name: te, value: trailers}]
  - host: other.test
    connect_to: UPSTREAM
    dangerously_raw_paths: true
    matches:
      - paths: [{type: prefix, value: /v1/}]
"#;

/// Raw bytes inside a TLS tunnel to `host`; whatever comes back until the proxy closes.
async fn raw(h: &Harness, host: &str, bytes: &[u8]) -> String {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let mut tls = test_support::client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tls.read_to_end(&mut buf),
    )
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Status and `x-bot-bottle-blocked` of the first response in `reply`.
fn verdict(reply: &str) -> (u16, Option<String>) {
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let blocked = reply
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-bot-bottle-blocked: ")
                .map(str::to_string)
        });
    (status, blocked)
}

async fn get(h: &Harness, path: &str, extra: &str) -> (u16, Option<String>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}Connection: close\r\n\r\n");
    verdict(&raw(h, "api.test", req.as_bytes()).await)
}

/// An HTTP/2 connection to `host` through the proxy.
async fn h2(h: &Harness, host: &str) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let config = test_support::client_config_with_alpn(&h.ca_pem, &[b"h2"]);
    let tls = test_support::client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    test_support::client::http2(tls).await
}

async fn h2_send(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, Option<String>) {
    match send.send_request(req).await {
        Ok(resp) => (
            resp.status().as_u16(),
            resp.headers()
                .get("x-bot-bottle-blocked")
                .map(|v| v.to_str().unwrap().to_string()),
        ),
        Err(e) => (0, Some(format!("stream error: {e}"))),
    }
}

fn arrived(h: &Harness) -> Vec<String> {
    h.upstream
        .take()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn blocked(status: u16, reason: &str) -> (u16, Option<String>) {
    (status, Some(reason.to_string()))
}

#[tokio::test]
async fn header_rules_are_judged_after_hop_by_hop_stripping() {
    let h = start(ROUTES).await;
    assert_eq!(get(&h, "/scoped/a", "X-Scope: read\r\n").await, (200, None));
    let r = &h.upstream.take()[0];
    assert_eq!(
        (r.header("x-scope"), r.header("authorization")),
        (vec!["read"], vec![format!("Bearer {TOKEN}").as_str()])
    );
    // the header the rule needs is named by Connection, so it would not be forwarded
    for extra in [
        "X-Scope: read\r\nConnection: X-Scope\r\n",
        "X-Scope: read\r\nConnection: keep-alive, x-scope\r\n",
        "Connection: x-other\r\nConnection: X-SCOPE\r\nX-Scope: read\r\n",
    ] {
        assert_eq!(
            get(&h, "/scoped/b", extra).await,
            blocked(403, "header-not-allowed"),
            "{extra}"
        );
    }
    // a standard hop-by-hop header never reaches the upstream, so it never satisfies a rule
    assert_eq!(
        get(&h, "/te/a", "TE: trailers\r\n").await,
        blocked(403, "header-not-allowed")
    );
    let mut send = h2(&h, "api.test").await;
    let req = http::Request::get("https://api.test/te/h2")
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        h2_send(&mut send, req).await,
        blocked(403, "header-not-allowed")
    );
    let req = http::Request::get("https://api.test/scoped/h2")
        .header("x-scope", "read")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2_send(&mut send, req).await, (200, None));
    assert_eq!(arrived(&h), vec!["GET /scoped/h2"]);
}

/// Spellings an upstream could read as a path outside `/v1/`.
pub const AMBIGUOUS: [&str; 17] = [
    "/v1/..;/admin",
    "/v1/..;jsessionid=x/admin",
    "/v1/.;/x",
    "/v1/%2e%2e;/admin",
    "/v1/..%3b/admin",
    "/v1/%00/admin",
    "/v1/x%00.json",
    "/v1/%252e%252e/admin",
    "/v1/%252fadmin",
    "/v1/..%2fadmin",
    "/v1/..%2Fadmin",
    "/v1/..\\admin",
    "/v1/..%5cadmin",
    "/v1/%c0%ae%c0%ae/admin",
    "/v1/%ef%bc%8e%ef%bc%8e/admin",
    "/v1/%u002e%u002e/admin",
    "/v1/%e0%80%ae./admin",
];

#[tokio::test]
async fn paths_an_upstream_could_read_differently_are_refused() {
    let h = start(ROUTES).await;
    for path in AMBIGUOUS {
        let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
        let reply = raw(&h, "api.test", req.as_bytes()).await;
        assert_eq!(verdict(&reply), blocked(400, "ambiguous-path"), "{path}");
        assert!(reply.contains("write the path plainly"), "{path}: {reply}");
    }
    // the same over HTTP/2 (spellings the http crate accepts as a URI)
    let mut send = h2(&h, "api.test").await;
    for path in AMBIGUOUS.iter().filter(|p| !p.contains('\\')) {
        let req = http::Request::get(format!("https://api.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(
            h2_send(&mut send, req).await,
            blocked(400, "ambiguous-path"),
            "{path}"
        );
    }
    assert_eq!(arrived(&h), Vec::<String>::new());
    let log = h.log_lines();
    assert_eq!(log[0]["reason"], "ambiguous-path");
    assert_eq!(log[0]["status"], 400);
}

#[tokio::test]
async fn certain_spellings_are_normalised_and_forwarded_so() {
    let h = start(ROUTES).await;
    for (path, want) in [
        ("/v1/a/../b", (200, None)),
        ("/v1/./c", (200, None)),
        ("/v1/%64?q=%2f..;", (200, None)),
        ("/v1/x;jsessionid=1", (200, None)),
        ("/v1/../admin", blocked(403, "path-not-allowed")),
        ("/v1/%2e%2e/admin", blocked(403, "path-not-allowed")),
        ("/v1/.%2E/admin", blocked(403, "path-not-allowed")),
    ] {
        assert_eq!(get(&h, path, "").await, want, "{path}");
    }
    assert_eq!(
        arrived(&h),
        vec![
            "GET /v1/b",
            "GET /v1/c",
            "GET /v1/d?q=%2f..;",
            "GET /v1/x;jsessionid=1"
        ]
    );
    // HTTP/2 alike
    let mut send = h2(&h, "api.test").await;
    let req = http::Request::get("https://api.test/v1/e/../%66")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2_send(&mut send, req).await, (200, None));
    assert_eq!(arrived(&h), vec!["GET /v1/f"]);
}

#[tokio::test]
async fn a_route_with_dangerously_raw_paths_forwards_them_as_written() {
    let h = start(ROUTES).await;
    let req = "GET /v1/..;/admin HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    assert_eq!(
        verdict(&raw(&h, "other.test", req.as_bytes()).await),
        (200, None)
    );
    assert_eq!(arrived(&h), vec!["GET /v1/..;/admin"]);
}

#[tokio::test]
async fn method_overrides_are_judged_like_the_method() {
    let h = start(ROUTES).await;
    let post = |extra: &str, query: &str| {
        format!(
            "POST /v1/x{query} HTTP/1.1\r\nHost: api.test\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    for (extra, query) in [
        ("X-HTTP-Method-Override: DELETE\r\n", ""),
        ("X-HTTP-Method: delete\r\n", ""),
        ("X-Method-Override: PUT\r\n", ""),
        (
            "X-HTTP-Method-Override: GET\r\nX-HTTP-Method-Override: DELETE\r\n",
            "",
        ),
        ("", "?_method=DELETE"),
        ("", "?a=1&%5Fmethod=DELETE"),
    ] {
        assert_eq!(
            verdict(&raw(&h, "api.test", post(extra, query).as_bytes()).await),
            blocked(403, "method-not-allowed"),
            "{extra}{query}"
        );
    }
    assert_eq!(
        verdict(
            &raw(
                &h,
                "api.test",
                post("X-HTTP-Method-Override: GET\r\n", "").as_bytes()
            )
            .await
        ),
        (200, None)
    );
    let mut send = h2(&h, "api.test").await;
    let req = http::Request::post("https://api.test/v1/h2")
        .header("x-http-method-override", "DELETE")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        h2_send(&mut send, req).await,
        blocked(403, "method-not-allowed")
    );
    assert_eq!(arrived(&h), vec!["POST /v1/x"]);
}

#[tokio::test]
async fn host_values_are_canonical_or_refused() {
    let h = start(ROUTES).await;
    for host in [
        "user@api.test",
        "user:pw@api.test:443",
        "api.test@other.test",
    ] {
        let req = format!("GET /v1/h HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(
            verdict(&raw(&h, "api.test", req.as_bytes()).await),
            blocked(421, "host-mismatch"),
            "{host}"
        );
    }
    for host in [
        "API.test.",
        "api.test:443",
        "api.test.:443",
        "Api.Test:0443",
    ] {
        let req = format!("GET /v1/h HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(
            verdict(&raw(&h, "api.test", req.as_bytes()).await),
            (200, None),
            "{host}"
        );
    }
    let hosts: Vec<String> = h
        .upstream
        .take()
        .iter()
        .map(|r| r.header("host").join(","))
        .collect();
    assert_eq!(hosts, vec!["api.test"; 4]);
    // CONNECT with user information is refused before any tunnel
    let (_, head) = test_support::client::connect_tunnel(h.proxy, "user@api.test", 443)
        .await
        .unwrap();
    assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_upgrade_header_alone_leaves_strict_framing_on() {
    let h = start(ROUTES).await;
    let fake = "GET /v1/first HTTP/1.1\r\nHost: api.test\r\nUpgrade: websocket\r\n\r\n";
    for second in [
        "GET /v1/smuggled-lf HTTP/1.1\nHost: api.test\n\n",
        "POST /v1/smuggled-cl HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
        "POST /v1/smuggled-te HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let reply = raw(&h, "api.test", format!("{fake}{second}").as_bytes()).await;
        assert!(
            reply.matches(" 200 OK").count() <= 1,
            "{second}\n->\n{reply}"
        );
        // the framing check may fail the whole read, the first request with it
        let got = arrived(&h);
        assert!(
            got.iter().all(|r| r == "GET /v1/first"),
            "{second}: {got:?}"
        );
    }
    // a real upgrade that is refused ends the connection: nothing after it is read
    let upgrade = "GET /v1/ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let reply = raw(
        &h,
        "api.test",
        format!("{upgrade}GET /v1/smuggled-after HTTP/1.1\nHost: api.test\n\n").as_bytes(),
    )
    .await;
    assert_eq!(verdict(&reply), blocked(403, "upgrade-not-allowed"));
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert_eq!(arrived(&h), Vec::<String>::new());
}

#[tokio::test]
async fn only_websocket_upgrades_pass_and_only_where_allowed() {
    let h = start(
        "routes:\n  - host: api.test\n    connect_to: UPSTREAM\n    websocket: true\n  - host: other.test\n    connect_to: UPSTREAM\n",
    )
    .await;
    let (status, echo) = super::streaming::websocket(&h, "api.test", "/ws").await;
    assert_eq!(
        (status, echo.as_deref()),
        (101, Some("hello through the tunnel"))
    );
    // h2c (or any other protocol) would carry requests the proxy never sees
    let h2c = "GET /ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    assert_eq!(
        verdict(&raw(&h, "api.test", h2c.as_bytes()).await),
        blocked(403, "upgrade-not-allowed")
    );
    // other.test has no `websocket: true`
    let (status, _) = super::streaming::websocket(&h, "other.test", "/ws").await;
    assert_eq!(status, 403);
    assert_eq!(arrived(&h), vec!["GET /ws"]);
    // an allowed upgrade the upstream does not switch: the connection ends with the answer
    let upgrade = "GET /no-switch HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let reply = raw(
        &h,
        "api.test",
        format!("{upgrade}GET /smuggled-after HTTP/1.1\nHost: api.test\n\n").as_bytes(),
    )
    .await;
    assert_eq!(verdict(&reply), (200, None));
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert_eq!(arrived(&h), vec!["GET /no-switch"]);
}

#[tokio::test]
async fn http2_gets_the_limits_of_http1() {
    let h = start(ROUTES).await;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long = format!("/v1/{}", "a".repeat(9000));
    // HTTP/1.1: the framing check refuses both
    for (path, extra) in [("/v1/many", many.as_str()), (long.as_str(), "")] {
        let reply = raw(
            &h,
            "api.test",
            format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(!reply.contains(" 200 OK"), "{reply}");
    }
    // HTTP/2: the same limits
    let mut send = h2(&h, "api.test").await;
    let mut req = http::Request::get("https://api.test/v1/many");
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        h2_send(&mut send, req.body(Full::new(Bytes::new())).unwrap()).await,
        blocked(431, "too-many-headers")
    );
    let mut send = h2(&h, "api.test").await;
    let req = http::Request::get(format!("https://api.test{long}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2_send(&mut send, req).await, blocked(414, "uri-too-long"));
    let mut send = h2(&h, "api.test").await;
    let req = http::Request::get("https://api.test/v1/big")
        .header("x-big", "b".repeat(70 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_ne!(h2_send(&mut send, req).await.0, 200);
    assert_eq!(arrived(&h), Vec::<String>::new());
}

#[tokio::test]
async fn a_route_without_a_port_means_443_for_tls_and_80_for_http() {
    let h = start("routes:\n  - host: api.test\n    connect_to: UPSTREAM\n").await;
    let (_, head) = test_support::client::connect_tunnel(h.proxy, "api.test", 80)
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.contains("x-bot-bottle-blocked: host-not-allowed"),
        "{head}"
    );
    let r = h.http_abs("GET", "http://api.test:443/").await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked")),
        (403, Some("host-not-allowed"))
    );
    let r = h.https("GET", "api.test", 443, "/fine", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(arrived(&h), vec!["GET /fine"]);
}

#[tokio::test]
async fn connect_inside_a_tunnel_is_refused_and_ends_the_connection() {
    let h = start(ROUTES).await;
    let reply = raw(
        &h,
        "api.test",
        b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test\r\n\r\nGET /v1/after-connect HTTP/1.1\nHost: api.test\n\n",
    )
    .await;
    assert_eq!(verdict(&reply), blocked(405, "connect-in-tunnel"));
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert_eq!(arrived(&h), Vec::<String>::new());
}

#[tokio::test]
async fn plain_http_paths_are_judged_alike() {
    let h = start(
        "routes:\n  - host: api.test\n    matches:\n      - paths: [{type: prefix, value: /v1/}]\n",
    )
    .await;
    let r = h.http_abs("GET", "http://api.test/v1/..;/admin").await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked")),
        (400, Some("ambiguous-path"))
    );
    let r = h.http_abs("GET", "http://api.test/v1/%2e%2e/admin").await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked")),
        (403, Some("path-not-allowed"))
    );
}
