//! WebSocket messages after an upgrade: what the agent sends is read frame by frame
//! (RFC 6455 headers parsed by `tungstenite`), unmasked, and each **message** (all its
//! fragments) and each control frame's payload is judged by the route's [`Detector`] before
//! any of it is forwarded. `block` ends both connections (the agent gets a `1008` close
//! naming the rule), `redact` re-frames the message with the marker in place of the secret,
//! `log` forwards the frames as they came. What the upstream sends is not judged (inbound);
//! it is only followed frame by frame so a close can be put between two of its frames.
//!
//! A message larger than [`MESSAGE_LIMIT`] cannot be held to be judged: it is refused
//! (`1009`) unless the route sets `dangerously_dlp_pass_unscannable`, then its frames stream
//! through unjudged. Frames a client may not send (unmasked, reserved bits without a
//! negotiated extension, reserved opcodes, fragmented or long control frames, a continuation
//! with no message begun) end both connections (`1002`). Compression extensions never get
//! negotiated: the upgrade request goes without its `Sec-WebSocket-Extensions` offer and a
//! `101` naming one is refused (`crate::proxy::forward`).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::{Detector, DlpLog, Report, RouteDlp, Stop, apply};
use crate::body::IdleTimeout;
use crate::grant::{Taken, Uses};

/// The largest message (all its fragments) held whole to be judged (twice: as it came and
/// unmasked, per connection).
pub const MESSAGE_LIMIT: usize = 1024 * 1024;

/// Control frames carry at most this much (RFC 6455 §5.5).
const CONTROL_LIMIT: u64 = 125;

/// Why the agent's side of a WebSocket connection was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// DLP stopped a message (a secret in `block` mode, or one it cannot hold).
    Dlp(Stop),
    /// A frame a client may not send.
    Protocol(&'static str),
}

impl Refusal {
    /// The close frame the agent gets (server to client: unmasked): a code and a reason of
    /// at most 123 bytes.
    pub(crate) fn close_frame(&self, host: &str) -> Vec<u8> {
        let (code, reason): (u16, String) = match self {
            Refusal::Dlp(Stop::Secret { rule, .. }) => (
                1008,
                format!(
                    "bot-bottle dlp {rule}: message not sent; ask with dlp-allow (rule {rule}, host {host})"
                ),
            ),
            Refusal::Dlp(Stop::Unscannable { .. }) => (
                1009,
                format!(
                    "bot-bottle dlp unscannable: message over {} KiB not sent",
                    MESSAGE_LIMIT / 1024
                ),
            ),
            Refusal::Protocol(why) => (1002, format!("bot-bottle egress: {why}")),
        };
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(cut(&reason, 123).as_bytes());
        frame(OpCode::Control(Control::Close), None, &payload)
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One whole final frame: header (masked with `mask` if given) and payload.
fn frame(opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask,
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    // writing into a Vec cannot fail
    let _ = header.format(payload.len() as u64, &mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
    out
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// What judges the messages of one connection.
pub(crate) struct Judge {
    pub det: Arc<Detector>,
    pub route: RouteDlp,
    pub uses: Arc<Uses>,
    /// A fresh report per message (each is counted as a request's findings are).
    pub report: Box<dyn Fn() -> Report + Send + Sync>,
}

impl Judge {
    /// Judges `payload`; `Ok(true)` when `redact` mode changed it.
    fn judge(&self, payload: &mut Vec<u8>, place: &str) -> Result<bool, Refusal> {
        let hits = self.det.find(payload);
        if hits.is_empty() {
            return Ok(false);
        }
        let taken = Arc::new(Taken::new(self.uses.clone()));
        let mut route = self.route.clone();
        route.taken = Some(taken.clone());
        let before = payload.clone();
        let report = (self.report)();
        match apply(&route, hits, payload, place, &report) {
            Ok(()) => Ok(*payload != before),
            Err(stop) => {
                taken.refund();
                Err(Refusal::Dlp(stop))
            }
        }
    }

    fn unscannable(&self) -> Result<(), Refusal> {
        let report = (self.report)();
        if self.route.pass_unscannable {
            report(DlpLog {
                rule: "unscannable".into(),
                place: "websocket message".into(),
                action: "logged",
            });
            return Ok(());
        }
        report(DlpLog {
            rule: "unscannable".into(),
            place: "websocket message".into(),
            action: "blocked",
        });
        Err(Refusal::Dlp(Stop::Unscannable {
            why: format!("a WebSocket message larger than {MESSAGE_LIMIT} bytes"),
        }))
    }
}

/// A data message being gathered.
struct Message {
    opcode: Data,
    /// Its frames as they arrived (forwarded as they are when nothing is cut).
    raw: Vec<u8>,
    /// Its unmasked payload.
    payload: Vec<u8>,
    /// Too large to judge, on a route that passes it: its frames stream through.
    passing: bool,
}

impl Message {
    fn new(opcode: Data) -> Message {
        Message {
            opcode,
            raw: Vec::new(),
            payload: Vec::new(),
            passing: false,
        }
    }
}

/// The agent-to-upstream direction: bytes in, judged frames out.
pub(crate) struct Outbound {
    judge: Judge,
    buf: Vec<u8>,
    message: Option<Message>,
    /// Payload bytes of a passing frame still to stream through as they come.
    raw_left: u64,
}

impl Outbound {
    pub(crate) fn new(judge: Judge) -> Outbound {
        Outbound {
            judge,
            buf: Vec::new(),
            message: None,
            raw_left: 0,
        }
    }

    /// Takes what the agent sent; appends to `out` what may go to the upstream now.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        let result = self.frames(&mut at, out);
        self.buf.drain(..at);
        result
    }

    fn frames(&mut self, at: &mut usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
        loop {
            if self.raw_left > 0 {
                let n = (self.buf.len() - *at)
                    .min(usize::try_from(self.raw_left).unwrap_or(usize::MAX));
                out.extend_from_slice(&self.buf[*at..*at + n]);
                *at += n;
                self.raw_left -= n as u64;
                if self.raw_left > 0 {
                    return Ok(());
                }
            }
            let mut cursor = Cursor::new(&self.buf[*at..]);
            let (head, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(_) => return Err(Refusal::Protocol("a frame with a reserved opcode")),
            };
            let head_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            let Some(mask) = head.mask else {
                return Err(Refusal::Protocol("a frame from the client is not masked"));
            };
            if head.rsv1 || head.rsv2 || head.rsv3 {
                return Err(Refusal::Protocol(
                    "reserved bits set with no extension negotiated",
                ));
            }
            let data = match head.opcode {
                OpCode::Control(c) => {
                    if !head.is_final || len > CONTROL_LIMIT {
                        return Err(Refusal::Protocol(
                            "a control frame fragmented or over 125 bytes",
                        ));
                    }
                    let end = *at + head_len + len as usize;
                    if self.buf.len() < end {
                        return Ok(());
                    }
                    let mut payload = self.buf[*at + head_len..end].to_vec();
                    apply_mask(&mut payload, mask);
                    let place = match c {
                        Control::Ping => "websocket ping",
                        Control::Pong => "websocket pong",
                        _ => "websocket close",
                    };
                    if self.judge.judge(&mut payload, place)? {
                        if payload.len() as u64 > CONTROL_LIMIT {
                            return Err(Refusal::Dlp(Stop::Secret {
                                rule: "redaction".into(),
                                place: "websocket control frame",
                            }));
                        }
                        out.extend_from_slice(&frame(head.opcode, Some(mask), &payload));
                    } else {
                        out.extend_from_slice(&self.buf[*at..end]);
                    }
                    *at = end;
                    continue;
                }
                OpCode::Data(d) => d,
            };
            match (data, self.message.is_some()) {
                (Data::Continue, false) => {
                    return Err(Refusal::Protocol(
                        "a continuation frame with no message begun",
                    ));
                }
                (Data::Text | Data::Binary, true) => {
                    return Err(Refusal::Protocol("a new message before the last one ended"));
                }
                _ => {}
            }
            let held = self.message.as_ref().map_or(0, |m| m.payload.len() as u64);
            let passing = self.message.as_ref().is_some_and(|m| m.passing);
            if !passing && held.saturating_add(len) > MESSAGE_LIMIT as u64 {
                self.judge.unscannable()?;
                // what was held of it goes as it came; the rest streams through
                let message = self.message.get_or_insert_with(|| Message::new(data));
                out.append(&mut message.raw);
                message.payload = Vec::new();
                message.passing = true;
            }
            if let Some(message) = self.message.as_mut().filter(|m| m.passing) {
                out.extend_from_slice(&self.buf[*at..*at + head_len]);
                *at += head_len;
                self.raw_left = len;
                if head.is_final {
                    self.message = None;
                } else {
                    message.raw.clear();
                }
                continue;
            }
            let end = *at + head_len + len as usize;
            if self.buf.len() < end {
                // the whole frame first (nothing changes until it is here)
                return Ok(());
            }
            let message = self.message.get_or_insert_with(|| Message::new(data));
            let start = message.payload.len();
            message
                .payload
                .extend_from_slice(&self.buf[*at + head_len..end]);
            apply_mask(&mut message.payload[start..], mask);
            message.raw.extend_from_slice(&self.buf[*at..end]);
            *at = end;
            if !head.is_final {
                continue;
            }
            let Some(mut message) = self.message.take() else {
                return Ok(());
            };
            if self
                .judge
                .judge(&mut message.payload, "websocket message")?
            {
                if message.opcode == Data::Text && std::str::from_utf8(&message.payload).is_err() {
                    return Err(Refusal::Dlp(Stop::Secret {
                        rule: "redaction".into(),
                        place: "websocket message",
                    }));
                }
                out.extend_from_slice(&frame(
                    OpCode::Data(message.opcode),
                    Some(rand::random()),
                    &message.payload,
                ));
            } else {
                out.append(&mut message.raw);
            }
        }
    }
}

/// The upstream-to-agent direction, followed (not judged) so a close frame goes to the
/// agent only between two of the upstream's frames.
#[derive(Default)]
struct Inbound {
    head: Vec<u8>,
    left: u64,
    lost: bool,
}

impl Inbound {
    fn follow(&mut self, mut data: &[u8]) {
        while !self.lost {
            let n = data
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            data = &data[n..];
            self.left -= n as u64;
            if data.is_empty() {
                return;
            }
            let had = self.head.len();
            let take = data.len().min(14 - had.min(14));
            self.head.extend_from_slice(&data[..take]);
            let mut cursor = Cursor::new(&self.head[..]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((_, len))) => {
                    let used = usize::try_from(cursor.position()).unwrap_or(usize::MAX) - had;
                    data = &data[used..];
                    self.head.clear();
                    self.left = len;
                }
                Ok(None) => data = &data[take..],
                Err(_) => self.lost = true,
            }
        }
    }

    fn between_frames(&self) -> bool {
        !self.lost && self.left == 0 && self.head.is_empty()
    }
}

/// Copies a WebSocket connection both ways, judging what the agent sends, until both sides
/// finish, a message is refused (the agent gets a close frame when the upstream's side is
/// between frames; both connections end), or nothing moves for `idle`.
pub(crate) async fn relay<A, B>(
    agent: &mut A,
    upstream: &mut B,
    idle: Duration,
    mut outbound: Outbound,
    host: &str,
) -> std::io::Result<Option<Refusal>>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    let mut inbound = Inbound::default();
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        tokio::select! {
            r = agent.read(&mut buf_a), if !a_done => {
                let n = r?;
                if n == 0 {
                    a_done = true;
                    let _ = upstream.shutdown().await;
                    continue;
                }
                out.clear();
                let judged = outbound.feed(&buf_a[..n], &mut out);
                if !out.is_empty() {
                    upstream.write_all(&out).await?;
                    upstream.flush().await?;
                }
                if let Err(refusal) = judged {
                    let _ = upstream.shutdown().await;
                    if inbound.between_frames() {
                        let _ = agent.write_all(&refusal.close_frame(host)).await;
                    }
                    let _ = agent.shutdown().await;
                    return Ok(Some(refusal));
                }
            }
            r = upstream.read(&mut buf_b), if !b_done => {
                let n = r?;
                if n == 0 {
                    b_done = true;
                    let _ = agent.shutdown().await;
                } else {
                    inbound.follow(&buf_b[..n]);
                    agent.write_all(&buf_b[..n]).await?;
                    agent.flush().await?;
                }
            }
            () = tokio::time::sleep(idle) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, IdleTimeout(idle)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use policy::DlpMode;
    use pretty_assertions::assert_eq;

    use super::super::{MARKER, scanner};
    use super::*;

    const AWS: &str = "AKIAZ3MSJV4WWNKWW5FG";

    fn outbound(mode: DlpMode, pass_unscannable: bool) -> (Outbound, Arc<Mutex<Vec<DlpLog>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let judge = Judge {
            det: Arc::new(Detector::new(scanner().unwrap(), &[]).unwrap()),
            route: RouteDlp {
                mode,
                pass_unscannable,
                ..RouteDlp::default()
            },
            uses: Arc::new(Uses::default()),
            report: Box::new(move || {
                let sink = sink.clone();
                Arc::new(move |l: DlpLog| sink.lock().unwrap().push(l))
            }),
        };
        (Outbound::new(judge), seen)
    }

    /// One masked frame from the agent.
    fn masked(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = frame(opcode, Some([1, 2, 3, 4]), payload);
        if !is_final {
            f[0] &= 0x7f;
        }
        f
    }

    /// The payloads of the frames in `data` (unmasked), with their first header byte.
    fn frames(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let mut c = Cursor::new(&data[at..]);
            let (h, len) = FrameHeader::parse(&mut c).unwrap().unwrap();
            let start = at + c.position() as usize;
            let mut p = data[start..start + len as usize].to_vec();
            if let Some(m) = h.mask {
                apply_mask(&mut p, m);
            }
            out.push((data[at], p));
            at = start + len as usize;
        }
        out
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_go_through_unchanged_and_whole() {
        let (mut ob, seen) = outbound(DlpMode::Block, false);
        let mut input = masked(OpCode::Data(Data::Text), true, b"hello");
        input.extend(masked(OpCode::Data(Data::Binary), false, &[0u8; 300]));
        input.extend(masked(OpCode::Control(Control::Ping), true, b"ping"));
        input.extend(masked(OpCode::Data(Data::Continue), true, &[7u8; 70_000]));
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        for b in &input {
            let before = out.len();
            ob.feed(std::slice::from_ref(b), &mut out).unwrap();
            if out.len() > before {
                sizes.push(out.len() - before);
            }
        }
        // the ping goes when it is whole, before the fragmented message it came inside;
        // the message goes as it came once its last fragment is here
        let ping = masked(OpCode::Control(Control::Ping), true, b"ping").len();
        let text = masked(OpCode::Data(Data::Text), true, b"hello").len();
        assert_eq!(sizes, vec![text, ping, input.len() - text - ping]);
        assert_eq!(out.len(), input.len());
        assert_eq!(
            frames(&out)
                .iter()
                .map(|(b, p)| (*b, p.len()))
                .collect::<Vec<_>>(),
            vec![(0x81, 5), (0x89, 4), (0x02, 300), (0x80, 70_000)]
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn a_key_split_across_fragments_with_a_ping_between_is_redacted_in_one_frame() {
        let (mut ob, seen) = outbound(DlpMode::Redact, false);
        let (a, b) = AWS.split_at(7);
        let mut input = masked(OpCode::Data(Data::Text), false, format!("k {a}").as_bytes());
        input.extend(masked(OpCode::Control(Control::Ping), true, b"x"));
        input.extend(masked(
            OpCode::Data(Data::Continue),
            true,
            format!("{b} .").as_bytes(),
        ));
        let mut out = Vec::new();
        ob.feed(&input, &mut out).unwrap();
        assert_eq!(
            frames(&out),
            vec![
                (0x89, b"x".to_vec()),
                (0x81, format!("k {MARKER} .").into_bytes())
            ]
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_key_in_a_pong_or_a_close_reason_is_stopped() {
        for (opcode, place) in [
            (OpCode::Control(Control::Pong), "websocket pong"),
            (OpCode::Control(Control::Close), "websocket close"),
        ] {
            let (mut ob, seen) = outbound(DlpMode::Block, false);
            let mut payload = 1000u16.to_be_bytes().to_vec();
            payload.extend_from_slice(format!("bye {AWS}").as_bytes());
            let mut out = Vec::new();
            let refused = ob.feed(&masked(opcode, true, &payload), &mut out);
            assert!(
                matches!(&refused, Err(Refusal::Dlp(Stop::Secret { rule, .. })) if rule == "aws-access-key-id"),
                "{place}: {refused:?}"
            );
            assert!(out.is_empty(), "{place}: something went: {out:?}");
            assert_eq!(seen.lock().unwrap()[0].place, place);
        }
    }

    #[test]
    fn an_unscannable_message_streams_through_on_a_route_that_passes_it() {
        let (mut ob, seen) = outbound(DlpMode::Block, true);
        let big = vec![b'a'; MESSAGE_LIMIT];
        let mut input = masked(OpCode::Data(Data::Binary), false, &big[..1000]);
        input.extend(masked(OpCode::Data(Data::Continue), true, &big));
        input.extend(masked(OpCode::Data(Data::Text), true, AWS.as_bytes()));
        let mut out = Vec::new();
        let mut refused = None;
        for chunk in input.chunks(16 * 1024) {
            if let Err(r) = ob.feed(chunk, &mut out) {
                refused = Some(r);
                break;
            }
        }
        // both fragments of the large one went, as they came; the next message is judged
        assert_eq!(out, input[..input.len() - 6 - AWS.len()]);
        assert!(matches!(refused, Some(Refusal::Dlp(Stop::Secret { .. }))));
        let actions: Vec<(String, &str)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|l| (l.rule.clone(), l.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("unscannable".to_string(), "logged"),
                ("aws-access-key-id".to_string(), "blocked")
            ]
        );
    }

    #[test]
    fn a_frame_claiming_the_largest_length_is_unscannable() {
        let (mut ob, _) = outbound(DlpMode::Block, false);
        let mut out = Vec::new();
        ob.feed(&masked(OpCode::Data(Data::Binary), false, b"abc"), &mut out)
            .unwrap();
        let mut huge = vec![0x80, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[1, 2, 3, 4, 9, 9]);
        let refused = ob.feed(&huge, &mut out);
        assert!(
            matches!(refused, Err(Refusal::Dlp(Stop::Unscannable { .. }))),
            "{refused:?}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn the_close_reason_fits_a_control_frame() {
        let long = "h".repeat(300);
        for r in [
            Refusal::Dlp(Stop::Secret {
                rule: "generic-password".into(),
                place: "websocket message",
            }),
            Refusal::Protocol("a frame from the client is not masked"),
        ] {
            let f = r.close_frame(&long);
            let got = frames(&f);
            assert_eq!(got.len(), 1);
            assert!(got[0].1.len() <= 125, "{}", got[0].1.len());
            assert!(std::str::from_utf8(&got[0].1[2..]).is_ok());
        }
    }
}
