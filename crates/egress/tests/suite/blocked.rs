//! What a refused request tells the agent, where its client shows it: the body (why, then who
//! must act and how), `Proxy-Status` (RFC 9209) and `X-Bot-Bottle-Reason`; a `CONNECT` to a
//! host without a route is answered inside the completed tunnel (HTTP/1.1 and HTTP/2, real
//! TLS to the bottle's CA), and nothing reaches an upstream.

use bytes::Bytes;
use http_body_util::Full;
use pretty_assertions::assert_eq;

use super::common::{Harness, start};

const ROUTES: &str = r#"
log: all
routes:
  - host: api.test
    connect_to: UPSTREAM
    matches:
      - paths: [{type: prefix, value: /v1/}]
  - host: private.localtest
"#;

const ASK: &str = "To ask the operator for access, use the egress-allow MCP tool.";

/// Status, the three places the reason is given, and the body.
fn said(r: &test_support::client::Collected) -> (u16, [Option<&str>; 3], &str) {
    (
        r.status,
        [
            r.header("x-bot-bottle-blocked"),
            r.header("proxy-status"),
            r.header("x-bot-bottle-reason"),
        ],
        r.body.as_str(),
    )
}

fn arrived(h: &Harness) -> usize {
    h.upstream.take().len()
}

#[tokio::test]
async fn a_connect_to_a_host_without_a_route_is_answered_inside_the_tunnel() {
    let h = start(ROUTES).await;
    let r = h.https("POST", "nothere.test", 443, "/v1/x?q=1", &[]).await;
    assert_eq!(
        said(&r),
        (
            403,
            [
                Some("host-not-allowed"),
                Some(
                    "bot-bottle-egress; error=http_request_denied; details=\"no route allows nothere.test:443. To ask the operator for access, use the egress-allow MCP tool.\""
                ),
                Some(
                    "no route allows nothere.test:443. To ask the operator for access, use the egress-allow MCP tool."
                ),
            ],
            format!(
                "bot-bottle egress blocked POST https://nothere.test:443/v1/x?q=1: no route allows nothere.test:443.\n{ASK}\n"
            )
            .as_str()
        )
    );
    assert_eq!(r.header("connection"), Some("close"));
    // logged once, at the CONNECT
    let log = h.log_lines();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["reason"], "host-not-allowed");
    assert_eq!(arrived(&h), 0);
}

#[tokio::test]
async fn the_answer_inside_the_tunnel_speaks_http2_too() {
    let h = start(ROUTES).await;
    let config = test_support::client_config_with_alpn(&h.ca_pem, &[b"h2"]);
    let tls = test_support::client::tls_through_proxy(
        h.proxy,
        "nothere.test",
        443,
        "nothere.test",
        config,
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = test_support::client::http2(tls).await;
    let req = http::Request::get("https://nothere.test/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let r = test_support::client::collect(resp).await;
    assert_eq!(
        (r.status, r.header("x-bot-bottle-blocked"), r.body.as_str()),
        (
            403,
            Some("host-not-allowed"),
            format!(
                "bot-bottle egress blocked GET https://nothere.test:443/models: no route allows nothere.test:443.\n{ASK}\n"
            )
            .as_str()
        )
    );
    assert_eq!(arrived(&h), 0);
}

#[tokio::test]
async fn a_tunnel_that_is_not_tls_is_closed_and_other_ports_are_refused_at_the_connect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(ROUTES).await;
    let (mut tcp, head) = test_support::client::connect_tunnel(h.proxy, "nothere.test", 443)
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: nothere.test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    // a TLS alert record (0x15), then the end: no HTTP answer, nothing forwarded
    assert_eq!(rest.first(), Some(&0x15), "{rest:?}");

    let (_, head) = test_support::client::connect_tunnel(h.proxy, "nothere.test", 8443)
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.contains(
            "proxy-status: bot-bottle-egress; error=http_request_denied; details=\"no route allows nothere.test:8443. To ask the operator for access, use the egress-allow MCP tool.\""
        ),
        "{head}"
    );
    assert!(
        head.contains("x-bot-bottle-reason: no route allows nothere.test:8443. To ask"),
        "{head}"
    );
    assert_eq!(arrived(&h), 0);
}

#[tokio::test]
async fn a_path_block_carries_the_advice_in_its_headers() {
    let h = start(ROUTES).await;
    let r = h.https("GET", "api.test", 443, "/v2/x", &[]).await;
    assert_eq!(
        said(&r),
        (
            403,
            [
                Some("path-not-allowed"),
                Some(
                    "bot-bottle-egress; error=http_request_denied; details=\"the route for api.test does not allow this request (path-not-allowed). To ask the operator for access, use the egress-allow MCP tool.\""
                ),
                Some(
                    "the route for api.test does not allow this request (path-not-allowed). To ask the operator for access, use the egress-allow MCP tool."
                ),
            ],
            format!(
                "bot-bottle egress blocked GET https://api.test:443/v2/x: the route for api.test does not allow this request (path-not-allowed).\n{ASK}\n"
            )
            .as_str()
        )
    );
    assert_eq!(arrived(&h), 0);
}

#[tokio::test]
async fn a_private_destination_says_only_the_operator_can_pin_it() {
    let h = start(ROUTES).await;
    let r = h.https("GET", "private.localtest", 443, "/", &[]).await;
    let advice = "Only the operator can allow this: they pin the address with `connect_to: ADDR:PORT` on the route for private.localtest in the bottle's manifest. A proposal cannot set connect_to, so egress-allow will not help; tell the operator.";
    let why = "private.localtest resolves to a private address (10.0.0.5), which the bottle may not reach";
    assert_eq!(
        said(&r),
        (
            403,
            [
                Some("destination-not-allowed"),
                Some(
                    format!(
                        "bot-bottle-egress; error=destination_ip_prohibited; details=\"{why}. {advice}\""
                    )
                    .as_str()
                ),
                Some(format!("{why}. {advice}").as_str()),
            ],
            format!(
                "bot-bottle egress blocked GET https://private.localtest:443/: {why}.\n{advice}\n"
            )
            .as_str()
        )
    );
    assert!(!r.body.contains("egress-allow MCP tool"));
}
