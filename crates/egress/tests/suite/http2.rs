//! HTTP/2 towards the client and towards the upstream, negotiated by ALPN.

use bytes::Bytes;
use http_body_util::Full;
use pretty_assertions::assert_eq;
use test_support::{TestCa, Upstream};

use super::common::{TOKEN, start};

const ROUTES: &str = r#"
routes:
  - host: api.test
    connect_to: UPSTREAM
    auth_scheme: Bearer
    token_env: TEST_TOKEN
    matches:
      - paths: [{type: prefix, value: /v1/}]
"#;

#[tokio::test]
async fn an_http2_client_is_checked_per_request() {
    let h = start(ROUTES).await;
    let config = test_support::client_config_with_alpn(&h.ca_pem, &[b"h2", b"http/1.1"]);
    let tls = test_support::client::tls_through_proxy(h.proxy, "api.test", 443, "api.test", config)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = test_support::client::http2(tls).await;
    let mut statuses = Vec::new();
    for path in ["/v1/a", "/v2/b", "/v1/c"] {
        let req = http::Request::get(format!("https://api.test{path}"))
            .header("authorization", "Bearer placeholder")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let blocked = resp
            .headers()
            .get("x-bot-bottle-blocked")
            .map(|v| v.to_str().unwrap().to_string());
        statuses.push((resp.status().as_u16(), blocked));
    }
    assert_eq!(
        statuses,
        vec![
            (200, None),
            (403, Some("path-not-allowed".to_string())),
            (200, None)
        ]
    );
    // an :authority naming another host is refused
    let req = http::Request::get("https://other.test/v1/a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 421);
    let reqs = h.upstream.requests();
    let seen: Vec<(String, String, Vec<&str>)> = reqs
        .iter()
        .map(|r| (r.version.clone(), r.path.clone(), r.header("authorization")))
        .collect();
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        seen,
        vec![
            (
                "HTTP/1.1".to_string(),
                "/v1/a".to_string(),
                vec![bearer.as_str()]
            ),
            (
                "HTTP/1.1".to_string(),
                "/v1/c".to_string(),
                vec![bearer.as_str()]
            ),
        ]
    );
}

#[tokio::test]
async fn http2_is_used_upstream_when_offered_and_upgrades_still_use_http1() {
    let upstream_ca = TestCa::new("h2 upstream CA");
    let upstream = Upstream::start_tls_h2(&upstream_ca, &["api.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("h2-ca.pem");
    upstream_ca.write_pem(&ca_file);
    let addr = upstream.addr().to_string();
    let h = super::common::start_with(
        "routes:\n  - host: api.test\n    auth_scheme: Bearer\n    token_env: TEST_TOKEN\n    websocket: true\n",
        |c, _| {
            c.upstream_ca.push(ca_file.clone());
            c.connect_to = vec![egress::ConnectTo::parse(&format!("api.test:443:{addr}")).unwrap()];
        },
    )
    .await;
    let r = h.https("GET", "api.test", 443, "/v1/x", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let reqs = upstream.requests();
    assert_eq!(reqs[0].version, "HTTP/2.0");
    assert_eq!(
        reqs[0].header("authorization"),
        vec![format!("Bearer {TOKEN}").as_str()]
    );
    // a WebSocket upgrade goes over a separate HTTP/1.1 connection
    let (status, echo) = super::streaming::websocket(&h, "api.test", "/ws").await;
    assert_eq!(
        (status, echo.as_deref()),
        (101, Some("hello through the tunnel"))
    );
}
