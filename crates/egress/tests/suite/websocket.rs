//! Outbound DLP on WebSocket messages after an upgrade, through a real TLS WebSocket upstream
//! on loopback (tokio-tungstenite) that records every message that arrived and echoes text
//! and binary ones: a planted key in a text message, a binary message, split across two
//! fragments, in a ping, base64-encoded, the injected credential echoed; blocked, redacted or
//! logged as the route says. The upstream never sees the secret and no log line holds it.
//! Compression offers are taken out of the upgrade, and an upstream that answers with one
//! anyway is refused; frames a client may not send end the connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use pretty_assertions::assert_eq;
use test_support::TestCa;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

use super::common::{Harness, TOKEN, start_with};
use super::dlp::KEY;

const MARKER: &str = egress::DLP_MARKER;

/// `api.test` blocks (the default) and injects the credential; `other.test` redacts;
/// `a.wild.test` only logs; `b.wild.test` blocks but passes what it cannot scan;
/// `c.wild.test` blocks but allows the key's rule.
const ROUTES: &str = r#"
routes:
  - host: api.test
    connect_to: WS
    websocket: true
    auth_scheme: Bearer
    token_env: TEST_TOKEN
  - host: other.test
    connect_to: WS
    websocket: true
    dlp: redact
  - host: a.wild.test
    connect_to: WS
    websocket: true
    dlp: log
  - host: b.wild.test
    connect_to: WS
    websocket: true
    dangerously_dlp_pass_unscannable: true
  - host: c.wild.test
    connect_to: WS
    websocket: true
    dlp_allow: [aws-access-key-id]
"#;

/// A TLS WebSocket server on loopback that records what arrived.
struct WsUpstream {
    addr: SocketAddr,
    /// Every message the server read, in order (pings and closes too).
    arrived: Arc<Mutex<Vec<Message>>>,
    /// The `Sec-WebSocket-Extensions` header of each upgrade, as it arrived.
    offers: Arc<Mutex<Vec<Option<String>>>>,
    ca_file: PathBuf,
    _ca: TestCa,
    _dir: tempfile::TempDir,
}

impl WsUpstream {
    /// `answer_extension`: the `101` names `permessage-deflate` whatever was offered.
    async fn start(answer_extension: bool) -> WsUpstream {
        Self::start_with(answer_extension, true).await
    }

    /// A plain (`ws://`) upstream when `!tls`.
    async fn start_with(answer_extension: bool, tls: bool) -> WsUpstream {
        let ca = TestCa::new("websocket upstream CA");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ws-ca.pem");
        ca.write_pem(&ca_file);
        let acceptor = tls.then(|| {
            tokio_rustls::TlsAcceptor::from(ca.server_config(&[
                "api.test",
                "other.test",
                "a.wild.test",
                "b.wild.test",
                "c.wild.test",
            ]))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let offers = Arc::new(Mutex::new(Vec::new()));
        let (rec, offered) = (arrived.clone(), offers.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, rec, offered) = (acceptor.clone(), rec.clone(), offered.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            serve_ws(tls, answer_extension, rec, offered).await;
                        }
                        None => serve_ws(tcp, answer_extension, rec, offered).await,
                    }
                });
            }
        });
        WsUpstream {
            addr,
            arrived,
            offers,
            ca_file,
            _ca: ca,
            _dir: dir,
        }
    }

    /// Everything that arrived, as text (for "never arrived" checks).
    fn arrived_text(&self) -> String {
        self.arrived
            .lock()
            .unwrap()
            .iter()
            .map(|m| format!("{}\n", String::from_utf8_lossy(&m.clone().into_data())))
            .collect()
    }
}

/// One WebSocket connection of the upstream: records every message, echoes text and binary.
async fn serve_ws<S>(
    stream: S,
    answer_extension: bool,
    rec: Arc<Mutex<Vec<Message>>>,
    offered: Arc<Mutex<Vec<Option<String>>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // tungstenite's handshake callback type: its error is a whole response
    #[allow(clippy::result_large_err)]
    let callback = move |req: &WsRequest, mut resp: WsResponse| {
        offered.lock().unwrap().push(
            req.headers()
                .get("sec-websocket-extensions")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
        if answer_extension {
            resp.headers_mut().insert(
                "sec-websocket-extensions",
                http::HeaderValue::from_static("permessage-deflate"),
            );
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        rec.lock().unwrap().push(m.clone());
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            break;
        }
    }
}

async fn start(ws: &WsUpstream) -> Harness {
    let ca_file = ws.ca_file.clone();
    start_with(&ROUTES.replace("WS", &ws.addr.to_string()), move |c, _| {
        c.upstream_ca.push(ca_file);
    })
    .await
}

type Agent = WebSocketStream<TlsStream<TcpStream>>;

/// The agent's WebSocket connection to `host` through the proxy, with extra upgrade headers.
async fn connect(
    h: &Harness,
    host: &str,
    headers: &[(&'static str, &'static str)],
) -> Result<Agent, tungstenite::Error> {
    let config = test_support::client_config_for_pem(&h.ca_pem);
    let tls = test_support::client::tls_through_proxy(h.proxy, host, 443, host, config)
        .await
        .unwrap();
    let mut req = format!("wss://{host}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, http::HeaderValue::from_static(v));
    }
    tokio_tungstenite::client_async(req, tls)
        .await
        .map(|(ws, _)| ws)
}

async fn agent(h: &Harness, host: &str) -> Agent {
    connect(h, host, &[]).await.unwrap()
}

/// A message in one short line: its kind, length and first bytes.
fn summary(m: &Message) -> String {
    let kind = match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "frame",
    };
    let data = m.clone().into_data();
    let head = String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
    format!("{kind} {} {head:?}", data.len())
}

/// Sends a message and returns the upstream's echo of it.
async fn round_trip(ws: &mut Agent, m: Message) -> Message {
    ws.send(m).await.unwrap();
    next_data(ws).await
}

/// The next text, binary or close message (pongs skipped). Waits at most a minute, so a
/// proxy that forwards what it should have stopped fails the test instead of hanging it.
async fn next_data(ws: &mut Agent) -> Message {
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .expect("no message from the proxy within a minute");
        match next {
            Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(m)) => return m,
            other => panic!("the connection ended without a message: {other:?}"),
        }
    }
}

/// The close frame the proxy sent the agent: (code, reason); the connection ends after it.
async fn closed(ws: &mut Agent) -> (CloseCode, String) {
    let m = next_data(ws).await;
    let Message::Close(Some(frame)) = m else {
        panic!("expected a close frame, got {m:?}");
    };
    assert!(
        !matches!(
            ws.next().await,
            Some(Ok(Message::Text(_) | Message::Binary(_)))
        ),
        "the connection went on after the close"
    );
    (frame.code, frame.reason.to_string())
}

fn assert_dlp_close(close: &(CloseCode, String), rule: &str) {
    assert_eq!(close.0, CloseCode::Policy, "{close:?}");
    assert!(close.1.contains(rule), "{close:?}");
    assert!(close.1.contains("dlp-allow"), "{close:?}");
}

/// The log lines that report a DLP finding: (rule, place, action).
fn dlp_lines(h: &Harness) -> Vec<(String, String, String)> {
    h.log_lines()
        .iter()
        .filter_map(|l| {
            let d = l.get("dlp")?;
            Some((
                d["rule"].as_str()?.to_string(),
                d["place"].as_str()?.to_string(),
                d["action"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn finding(rule: &str, place: &str, action: &str) -> Vec<(String, String, String)> {
    vec![(rule.to_string(), place.to_string(), action.to_string())]
}

/// A message that is refused on `api.test` (block mode): the agent gets a 1008 close naming
/// the rule and `dlp-allow`, the upstream never sees the message, the log has the finding
/// and not the secret. A clean message before it still arrives.
async fn assert_blocked(send: Vec<Message>, secret: &str, rule: &str, place: &str) {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let mut ws = agent(&h, "api.test").await;
    assert_eq!(
        round_trip(&mut ws, Message::text("hello")).await,
        Message::text("hello")
    );
    for m in send {
        ws.send(m).await.unwrap();
    }
    let close = closed(&mut ws).await;
    assert_dlp_close(&close, rule);
    assert!(close.1.len() <= 123, "{close:?}");
    assert!(
        !ws_up.arrived_text().contains(secret),
        "{}",
        ws_up.arrived_text()
    );
    assert_eq!(ws_up.arrived.lock().unwrap()[0], Message::text("hello"));
    assert_eq!(dlp_lines(&h), finding(rule, place, "blocked"));
    // the line gives what the agent was sent: the upgrade's 101, then the close (not a 403)
    let statuses: Vec<u64> = h
        .log_lines()
        .iter()
        .filter(|l| l.get("dlp").is_some())
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [101], "{}", h.log_text());
    assert!(!h.log_text().contains(secret), "{}", h.log_text());
}

#[tokio::test]
async fn a_key_in_a_text_message_is_blocked() {
    assert_blocked(
        vec![Message::text(format!("{{\"aws\":\"{KEY}\"}}"))],
        KEY,
        "aws-access-key-id",
        "websocket message",
    )
    .await;
}

#[tokio::test]
async fn a_key_in_a_binary_message_is_blocked() {
    assert_blocked(
        vec![Message::binary(format!("key {KEY} end").into_bytes())],
        KEY,
        "aws-access-key-id",
        "websocket message",
    )
    .await;
}

#[tokio::test]
async fn a_key_split_across_two_fragments_is_blocked() {
    let (first, second) = KEY.split_at(9);
    assert_blocked(
        vec![
            Message::Frame(Frame::message(
                format!("aws key: {first}").into_bytes(),
                OpCode::Data(Data::Text),
                false,
            )),
            Message::Frame(Frame::message(
                format!("{second} done").into_bytes(),
                OpCode::Data(Data::Continue),
                true,
            )),
        ],
        KEY,
        "aws-access-key-id",
        "websocket message",
    )
    .await;
}

#[tokio::test]
async fn a_key_in_a_ping_payload_is_blocked() {
    assert_blocked(
        vec![Message::Ping(Bytes::from(format!("ping {KEY}")))],
        KEY,
        "aws-access-key-id",
        "websocket ping",
    )
    .await;
}

#[tokio::test]
async fn a_base64_encoded_key_is_blocked() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("key={KEY}"));
    assert_blocked(
        vec![Message::text(format!("{{\"data\":\"{encoded}\"}}"))],
        &encoded,
        "aws-access-key-id",
        "websocket message",
    )
    .await;
}

#[tokio::test]
async fn the_injected_credential_echoed_in_a_message_is_blocked() {
    assert_blocked(
        vec![Message::text(format!("my token is {TOKEN}"))],
        TOKEN,
        "credential",
        "websocket message",
    )
    .await;
}

#[tokio::test]
async fn redact_mode_forwards_the_message_with_the_marker_in_place_of_the_key() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let mut ws = agent(&h, "other.test").await;
    let echo = round_trip(&mut ws, Message::text(format!("a {KEY} b"))).await;
    assert_eq!(echo, Message::text(format!("a {MARKER} b")));
    // fragments are judged as one message and re-framed as one
    let (first, second) = KEY.split_at(5);
    ws.send(Message::Frame(Frame::message(
        format!("x {first}").into_bytes(),
        OpCode::Data(Data::Binary),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        format!("{second} y").into_bytes(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::binary(format!("x {MARKER} y").into_bytes())
    );
    // the connection goes on
    assert_eq!(
        round_trip(&mut ws, Message::text("after")).await,
        Message::text("after")
    );
    assert!(
        !ws_up.arrived_text().contains(KEY),
        "{}",
        ws_up.arrived_text()
    );
    assert_eq!(
        dlp_lines(&h),
        [
            finding("aws-access-key-id", "websocket message", "redacted"),
            finding("aws-access-key-id", "websocket message", "redacted"),
        ]
        .concat()
    );
    assert!(!h.log_text().contains(KEY), "{}", h.log_text());
}

#[tokio::test]
async fn log_mode_forwards_the_message_unchanged_and_logs_the_finding() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let mut ws = agent(&h, "a.wild.test").await;
    let m = Message::text(format!("a {KEY} b"));
    assert_eq!(round_trip(&mut ws, m.clone()).await, m);
    assert_eq!(ws_up.arrived.lock().unwrap().clone(), vec![m]);
    assert_eq!(
        dlp_lines(&h),
        finding("aws-access-key-id", "websocket message", "logged")
    );
    assert!(!h.log_text().contains(KEY), "{}", h.log_text());
}

#[tokio::test]
async fn an_ordinary_conversation_passes_unchanged_both_ways() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let mut ws = agent(&h, "api.test").await;
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let m = if i % 2 == 0 {
            Message::text(format!("{{\"seq\":{i},\"say\":\"hello über ✓\"}}"))
        } else {
            Message::binary(i.to_be_bytes().repeat(i as usize % 7 + 1))
        };
        assert_eq!(round_trip(&mut ws, m.clone()).await, m);
        sent.push(m);
    }
    // a message of 200 KiB (larger than one read) and a ping answered by the upstream
    let big = Message::binary(vec![b'z'; 200 * 1024]);
    let echo = round_trip(&mut ws, big.clone()).await;
    assert!(
        echo == big,
        "the large message came back as {}",
        summary(&echo)
    );
    sent.push(big);
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    ws.close(None).await.unwrap();
    let arrived: Vec<Message> = ws_up
        .arrived
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.is_text() || m.is_binary())
        .cloned()
        .collect();
    assert_eq!(
        arrived.iter().map(summary).collect::<Vec<_>>(),
        sent.iter().map(summary).collect::<Vec<_>>()
    );
    assert!(
        arrived == sent,
        "the upstream got other bytes than were sent"
    );
    assert_eq!(dlp_lines(&h), vec![]);
}

#[tokio::test]
async fn a_compression_offer_is_taken_out_of_the_upgrade() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let mut ws = connect(
        &h,
        "api.test",
        &[(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        round_trip(&mut ws, Message::text("plain")).await,
        Message::text("plain")
    );
    assert_eq!(ws_up.offers.lock().unwrap().clone(), vec![None]);
    // and what goes is still judged
    ws.send(Message::text(KEY)).await.unwrap();
    assert_dlp_close(&closed(&mut ws).await, "aws-access-key-id");
}

#[tokio::test]
async fn an_upstream_that_answers_with_an_extension_anyway_is_refused() {
    let ws_up = WsUpstream::start(true).await;
    let h = start(&ws_up).await;
    let err = connect(&h, "api.test", &[]).await.err();
    let Some(tungstenite::Error::Http(resp)) = err else {
        panic!("the upgrade went through: {err:?}");
    };
    assert_eq!(resp.status(), 502);
    let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("extension"), "{body}");
}

/// Writes raw bytes into the agent's connection (frames tungstenite would not send).
async fn send_raw(ws: &mut Agent, bytes: &[u8]) {
    ws.get_mut().write_all(bytes).await.unwrap();
    ws.get_mut().flush().await.unwrap();
}

#[tokio::test]
async fn frames_a_client_may_not_send_end_the_connection() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let unmasked = [&[0x81u8, 5][..], b"hello"].concat();
    // a masked frame with RSV1 (no extension was negotiated), mask 0
    let rsv1 = [&[0xC1u8, 0x85, 0, 0, 0, 0][..], b"hello"].concat();
    // opcode 3 is reserved
    let reserved = [&[0x83u8, 0x85, 0, 0, 0, 0][..], b"hello"].concat();
    // a continuation with no message begun
    let orphan = [&[0x80u8, 0x85, 0, 0, 0, 0][..], b"hello"].concat();
    for bad in [unmasked, rsv1, reserved, orphan] {
        let mut ws = agent(&h, "api.test").await;
        send_raw(&mut ws, &bad).await;
        let (code, reason) = closed(&mut ws).await;
        assert_eq!(code, CloseCode::Protocol, "{bad:?}: {reason}");
    }
    assert_eq!(ws_up.arrived_text(), "");
    // each is a blocked line of the request log (written as the connection ends)
    let refused = || {
        h.log_lines()
            .iter()
            .filter(|l| {
                l["reason"] == "websocket-frame" && l["decision"] == "blocked" && l["status"] == 101
            })
            .count()
    };
    for _ in 0..600 {
        if refused() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(refused(), 4, "{}", h.log_text());
}

#[tokio::test]
async fn a_message_larger_than_the_bound_is_unscannable() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let big = Message::binary(vec![b'q'; egress::WEBSOCKET_MESSAGE_LIMIT + 1]);
    let mut ws = agent(&h, "api.test").await;
    ws.send(big.clone()).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Size, "{reason}");
    assert!(reason.contains("unscannable"), "{reason}");
    assert_eq!(
        dlp_lines(&h),
        finding("unscannable", "websocket message", "blocked")
    );
    // a route that passes what it cannot scan lets it through, and judges the next message
    let mut ws = agent(&h, "b.wild.test").await;
    let echo = round_trip(&mut ws, big.clone()).await;
    assert!(
        echo == big,
        "the large message came back as {}",
        summary(&echo)
    );
    ws.send(Message::text(KEY)).await.unwrap();
    assert_dlp_close(&closed(&mut ws).await, "aws-access-key-id");
    assert!(!ws_up.arrived_text().contains(KEY));
}

#[tokio::test]
async fn a_rule_the_route_allows_goes_in_a_message_and_other_rules_do_not() {
    let ws_up = WsUpstream::start(false).await;
    let h = start(&ws_up).await;
    let mut ws = agent(&h, "c.wild.test").await;
    let m = Message::text(format!("a {KEY} b"));
    assert_eq!(round_trip(&mut ws, m.clone()).await, m);
    assert_eq!(dlp_lines(&h), vec![]);
    // the injected credential of another route is not what the route allows
    ws.send(Message::text(format!("token {TOKEN}")))
        .await
        .unwrap();
    assert_dlp_close(&closed(&mut ws).await, "credential");
    assert!(!ws_up.arrived_text().contains(TOKEN));
}

#[tokio::test]
async fn a_plain_ws_route_is_judged_too() {
    use tokio::io::AsyncReadExt;
    let ws_up = WsUpstream::start_with(false, false).await;
    let routes = format!(
        "routes:\n  - host: api.test\n    port: 80\n    connect_to: {}\n    websocket: true\n",
        ws_up.addr
    );
    let h = start_with(&routes, |_, _| {}).await;
    let mut tcp = TcpStream::connect(h.proxy).await.unwrap();
    tcp.write_all(
        b"GET http://api.test/ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws =
        WebSocketStream::from_raw_socket(tcp, tungstenite::protocol::Role::Client, None).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::text(format!("k {KEY}"))).await.unwrap();
    let Some(Ok(Message::Close(Some(close)))) = ws.next().await else {
        panic!("no close frame");
    };
    assert_dlp_close(&(close.code, close.reason.to_string()), "aws-access-key-id");
    assert_eq!(ws_up.offers.lock().unwrap().clone(), vec![None]);
    assert!(!ws_up.arrived_text().contains(KEY));
    assert_eq!(
        dlp_lines(&h),
        finding("aws-access-key-id", "websocket message", "blocked")
    );
}

#[tokio::test]
async fn a_dlp_allow_granted_once_lets_one_message_through() {
    let ws_up = WsUpstream::start(false).await;
    let routes = format!(
        "routes:\n  - host: api.test\n    connect_to: {}\n    websocket: true\n    dlp_allow_grants:\n      - rule: aws-access-key-id\n        uses: 1\n        grant: 00000000000000e5\n",
        ws_up.addr
    );
    let ca_file = ws_up.ca_file.clone();
    let h = start_with(&routes, move |c, _| c.upstream_ca.push(ca_file)).await;
    let mut ws = agent(&h, "api.test").await;
    let m = Message::text(format!("a {KEY} b"));
    assert_eq!(round_trip(&mut ws, m.clone()).await, m);
    // the grant's one use is spent: the next message with the key is stopped
    ws.send(m).await.unwrap();
    assert_dlp_close(&closed(&mut ws).await, "aws-access-key-id");
    assert_eq!(ws_up.arrived.lock().unwrap().len(), 1);
}
