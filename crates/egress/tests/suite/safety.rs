//! Address checks, Host/SNI agreement, smuggling shapes, no opaque tunnels, loops.

use pretty_assertions::assert_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::{Harness, start};

const ROUTES: &str = r#"
log: all
routes:
  - host: api.test
    connect_to: UPSTREAM
  - host: other.test
    connect_to: UPSTREAM
  - host: evil.localtest
  - host: private.localtest
  - host: metadata.localtest
  - host: mapped.localtest
  - host: localhost
  - host: "2130706433"
  - host: "127.1"
"#;

#[tokio::test]
async fn dns_resolved_internal_addresses_are_refused() {
    let h = start(ROUTES).await;
    for (host, class) in [
        ("evil.localtest", "loopback"),
        ("private.localtest", "private"),
        ("metadata.localtest", "link-local"),
        ("mapped.localtest", "loopback"),
        ("localhost", "loopback"),
    ] {
        let r = h.https("GET", host, 443, "/", &[]).await;
        assert_eq!(
            (r.status, r.header("x-bot-bottle-blocked")),
            (403, Some("destination-not-allowed")),
            "{host}"
        );
        assert!(
            r.body.contains(&format!("a {class} address")),
            "{host}: {}",
            r.body
        );
        let r = h.http_abs("GET", &format!("http://{host}/")).await;
        assert_eq!(
            r.header("x-bot-bottle-blocked"),
            Some("destination-not-allowed"),
            "{host}"
        );
    }
    // odd spellings of 127.0.0.1 are judged by the address they mean
    for host in ["2130706433", "127.1"] {
        let r = h.http_abs("GET", &format!("http://{host}/")).await;
        assert_eq!(
            (r.status, r.header("x-bot-bottle-blocked")),
            (403, Some("destination-not-allowed")),
            "{host}"
        );
    }
    assert_eq!(h.upstream.requests(), vec![]);
}

#[tokio::test]
async fn a_destination_pointing_back_at_the_proxy_is_refused() {
    let h = start(ROUTES).await;
    let mut config = h.routes.config();
    config.routes.as_mut().unwrap().push(policy::Route {
        host: "loop.test".into(),
        websocket: None,
        dangerously_raw_paths: None,
        expires: None,
        uses: None,
        grant: None,
        after_grant: None,
        dlp: None,
        dlp_allow: None,
        dlp_allow_grants: None,
        dangerously_dlp_pass_unscannable: None,
        port: None,
        auth_scheme: None,
        token_env: None,
        auth_header: None,
        connect_to: Some(h.proxy.to_string()),
        matches: None,
    });
    h.routes.replace(config).unwrap();
    let r = h.http_abs("GET", "http://loop.test/").await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked")),
        (403, Some("destination-not-allowed"))
    );
    assert!(
        r.body.contains("points back at the egress proxy"),
        "{}",
        r.body
    );
}

/// Found by the `egress_head` fuzz target: the proxy normalised `api.test..` to
/// `api.test.` and the matcher normalised that again to `api.test`, so a host no resolver
/// or certificate reads as `api.test` was served by its route.
#[tokio::test]
async fn a_host_with_a_second_trailing_dot_gets_no_route() {
    let h = start(ROUTES).await;
    for url in [
        "http://api.test../",
        "http://API.test../",
        "http://api.test...:80/",
    ] {
        let r = h.http_abs("GET", url).await;
        assert_eq!(
            (r.status, r.header("x-bot-bottle-blocked")),
            (403, Some("host-not-allowed")),
            "{url}"
        );
    }
    assert_eq!(h.upstream.requests(), vec![]);
    // One trailing dot is the same name: its route serves it.
    let r = h.http_abs("GET", "http://api.test./").await;
    assert_eq!(r.header("x-bot-bottle-blocked"), None, "{}", r.body);
}

#[tokio::test]
async fn host_header_must_match_the_tunnel() {
    let h = start(ROUTES).await;
    for host in ["other.test", "api.test:8443"] {
        let config = test_support::client_config_for_pem(&h.ca_pem);
        let tls =
            test_support::client::tls_through_proxy(h.proxy, "api.test", 443, "api.test", config)
                .await
                .unwrap();
        let mut send = test_support::client::http1(tls).await;
        let req = http::Request::get("/")
            .header("host", host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = test_support::client::send(&mut send, req).await.unwrap();
        assert_eq!(
            (r.status, r.header("x-bot-bottle-blocked")),
            (421, Some("host-mismatch")),
            "{host}"
        );
    }
    assert_eq!(h.upstream.requests(), vec![]);
}

#[tokio::test]
async fn sni_must_match_the_connect_target() {
    let h = start(ROUTES).await;
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let result =
        test_support::client::tls_through_proxy(h.proxy, "api.test", 443, "other.test", config)
            .await;
    assert!(
        result.is_err(),
        "handshake with a mismatching SNI must fail"
    );
    assert_eq!(h.upstream.requests(), vec![]);
}

#[tokio::test]
async fn after_connect_only_tls_is_accepted() {
    let h = start(ROUTES).await;
    let (mut tcp, head) = test_support::client::connect_tunnel(h.proxy, "api.test", 443)
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "{buf:?}"
    );
    assert_eq!(h.upstream.requests(), vec![]);
}

/// Sends raw bytes inside a TLS tunnel and returns whatever comes back.
async fn raw_in_tunnel(h: &Harness, bytes: &[u8]) -> String {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let mut tls =
        test_support::client::tls_through_proxy(h.proxy, "api.test", 443, "api.test", config)
            .await
            .unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tls.read_to_end(&mut buf),
    )
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn smuggling_shapes_are_refused() {
    let h = start(ROUTES).await;
    let shapes: [&[u8]; 6] = [
        b"POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.test\r\n\r\n",
        b"GET / HTTP/1.1\nHost: api.test\n\n",
        b"GET / HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 1\r\nContent-Length: 30\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\nGET /second HTTP/1.1\r\nHost: api.test\r\nX: a\nY: b\r\n\r\n",
    ];
    for shape in shapes {
        let reply = raw_in_tunnel(&h, shape).await;
        assert!(
            !reply.contains("200 OK"),
            "{}\n->\n{reply}",
            String::from_utf8_lossy(shape)
        );
    }
    assert_eq!(h.upstream.requests(), vec![]);
    // a well-formed request on the same path works
    let reply = raw_in_tunnel(
        &h,
        b"GET /fine HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
}

#[tokio::test]
async fn hop_by_hop_and_proxy_headers_are_stripped() {
    let h = start(ROUTES).await;
    let r = h
        .https(
            "GET",
            "api.test",
            443,
            "/h",
            &[
                ("connection", "x-private"),
                ("x-private", "1"),
                ("proxy-authorization", "Basic eA=="),
                ("proxy-foo", "1"),
                ("te", "trailers"),
                ("x-kept", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let req = &h.upstream.requests()[0];
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["host", "x-kept"]);
}

/// A resolver that never answers.
struct Silent;

impl egress::Resolve for Silent {
    fn resolve(&self, _host: &str, _port: u16) -> egress::ResolveFuture {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn slow_dns_and_a_slow_first_byte_time_out() {
    let h = super::common::start_with(ROUTES, |c, _| {
        c.resolver = std::sync::Arc::new(Silent);
        c.timeouts.dns = std::time::Duration::from_millis(200);
        c.timeouts.first_byte = std::time::Duration::from_millis(1500);
    })
    .await;
    let r = h.http_abs("GET", "http://evil.localtest/").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.body,
        "bot-bottle egress: dns lookup to evil.localtest timed out\n"
    );
    let r = h.https("GET", "api.test", 443, "/delay?ms=6000", &[]).await;
    assert_eq!(r.status, 504);
    let r = h.https("GET", "api.test", 443, "/delay?ms=10", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "late"));
}
