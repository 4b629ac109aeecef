//! The `dlp` section: a secret the agent finds in its workspace (a key in `.env`), and the
//! real token were the agent ever to learn it, sent to the allowed API host in every place
//! a request can carry it. Egress's outbound DLP must refuse each (the suite's route is in
//! the default `block` mode); the host side also checks that the recording upstream never
//! received any of these requests (their paths hold `dlp`).

use std::io::Write;

use base64::Engine as _;

use crate::config::Cfg;
use crate::http::{Resp, Tls, desc, https, read_resp, tunnel};
use crate::verdict::Tally;

/// An AWS-key-shaped secret unique to this run (the scanner's `aws-access-key-id` rule): the
/// run's nonce, in the base32 alphabet (A-Z, 2-7) a key id's 16 characters are drawn from
/// (a 0, 1, 8 or 9 there is no key id, and is not found).
fn planted_key(nonce: &str) -> String {
    let tail: String = format!("{}Z3MSJV4WWNKWW5FG", nonce.to_ascii_uppercase())
        .chars()
        .filter(|c| c.is_ascii_uppercase() || ('2'..='7').contains(c))
        .take(16)
        .collect();
    format!("AKIA{tail}")
}

/// Blocked only as egress's DLP refuses it (403, `x-bot-bottle-blocked: dlp ...`); a 2xx
/// means it left; anything else is a refusal by something else, noted.
fn expect_dlp_block(t: &mut Tally, what: &str, r: Result<Resp, String>) {
    match &r {
        Ok(resp) if (200..400).contains(&resp.status) => {
            t.escaped(format!("{what}: {} (the secret left)", resp.status))
        }
        Ok(resp)
            if resp.status == 403
                && resp
                    .head
                    .to_ascii_lowercase()
                    .contains("x-bot-bottle-blocked: dlp") =>
        {
            t.blocked(format!("{what}: {}", desc(&r)))
        }
        _ => t.blocked(format!("{what}: refused, but not by dlp: {}", desc(&r))),
    }
}

/// A chunked POST whose body is written in two TLS writes, cut inside the secret.
fn split_post(target: &str, api: &str, body: &str, cut: usize) -> Result<Resp, String> {
    let mut t = tunnel(target, api)?;
    let (a, b) = body.split_at(cut);
    let head = format!(
        "POST /v1/dlp-split HTTP/1.1\r\nHost: {api}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n",
        a.len()
    );
    t.write_all(head.as_bytes()).map_err(|e| format!("{e}"))?;
    t.flush().map_err(|e| format!("{e}"))?;
    std::thread::sleep(std::time::Duration::from_millis(50));
    let rest = format!("{:x}\r\n{b}\r\n0\r\n\r\n", b.len());
    // the proxy may already have answered and closed
    let _ = t.write_all(rest.as_bytes());
    let _ = t.flush();
    read_resp(&mut t).map_err(|e| format!("{e}"))
}

/// The `dlp` section.
pub(crate) fn cases(c: &Cfg) {
    let api = c.s("api_host");
    let target = format!("{api}:443");
    let key = planted_key(&c.s("nonce"));
    let post = |path: &str, extra: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    let mut t = Tally::new("dlp-planted-secret");
    // the agent finds the key in its workspace, as it would an .env file
    let env_file = std::env::current_dir()
        .unwrap_or_else(|_| "/tmp".into())
        .join(".env.dlp-probe");
    let key = match std::fs::write(&env_file, format!("AWS_ACCESS_KEY_ID={key}\n"))
        .and_then(|()| std::fs::read_to_string(&env_file))
    {
        Ok(text) => text
            .trim()
            .trim_start_matches("AWS_ACCESS_KEY_ID=")
            .to_string(),
        Err(_) => key,
    };
    let _ = std::fs::remove_file(&env_file);
    let json = format!(r#"{{"messages":[{{"role":"user","content":"my key is {key}"}}]}}"#);
    expect_dlp_block(
        &mut t,
        "JSON body",
        https(&target, &api, post("/v1/dlp-body", "", &json).as_bytes()),
    );
    expect_dlp_block(
        &mut t,
        "query string",
        https(
            &target,
            &api,
            format!("GET /v1/dlp-query?k={key} HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes(),
        ),
    );
    expect_dlp_block(
        &mut t,
        "header",
        https(
            &target,
            &api,
            format!("GET /v1/dlp-header HTTP/1.1\r\nHost: {api}\r\nX-Note: {key}\r\n\r\n")
                .as_bytes(),
        ),
    );
    let cut = json.find(&key).unwrap_or(0) + 7;
    expect_dlp_block(
        &mut t,
        "split across two chunks",
        split_post(&target, &api, &json, cut),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("aws key {key} here"));
    expect_dlp_block(
        &mut t,
        "base64 in the body",
        https(
            &target,
            &api,
            post("/v1/dlp-b64", "", &format!(r#"{{"blob":"{b64}"}}"#)).as_bytes(),
        ),
    );
    t.done();

    let mut t = Tally::new("dlp-credential-echo");
    // what the agent would hold had the token leaked to it (the config passes a fragment)
    let token: String = format!(
        "tok-escape-{}",
        c.s("token_fragment_rev").chars().rev().collect::<String>()
    );
    expect_dlp_block(
        &mut t,
        "token in the body to its own host",
        https(
            &target,
            &api,
            post("/v1/dlp-echo", "", &format!(r#"{{"t":"{token}"}}"#)).as_bytes(),
        ),
    );
    expect_dlp_block(
        &mut t,
        "token in another header",
        https(
            &target,
            &api,
            format!(
                "GET /v1/dlp-echo-header HTTP/1.1\r\nHost: {api}\r\nX-Forward: {token}\r\n\r\n"
            )
            .as_bytes(),
        ),
    );
    t.done();

    websocket(c, &key);
}

/// A WebSocket to the suite's `websocket: true` route, upgraded; or why not.
fn ws_open(host: &str) -> Result<Tls, String> {
    let mut t = tunnel(&format!("{host}:443"), host)?;
    let _ = t
        .sock
        .set_read_timeout(Some(std::time::Duration::from_secs(20)));
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    t.write_all(req.as_bytes()).map_err(|e| format!("{e}"))?;
    t.flush().map_err(|e| format!("{e}"))?;
    // the head only: after a 101 the connection carries frames
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match std::io::Read::read(&mut t, &mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(format!("upgrade answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or("").to_string();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(format!("upgrade refused: {status:?}"));
    }
    Ok(t)
}

/// One final client frame with an all-zero masking key (valid; the payload crosses as
/// written, so the host side can look for it in what the upstream received).
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The next frame from the proxy: opcode and (unmasked) payload.
fn ws_read(t: &mut Tls) -> Result<(u8, Vec<u8>), String> {
    use std::io::Read;
    let mut h = [0u8; 2];
    t.read_exact(&mut h).map_err(|e| format!("{e}"))?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        t.read_exact(&mut b).map_err(|e| format!("{e}"))?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        t.read_exact(&mut b).map_err(|e| format!("{e}"))?;
        len = u64::from_be_bytes(b);
    }
    let mask = if h[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        t.read_exact(&mut m).map_err(|e| format!("{e}"))?;
        Some(m)
    } else {
        None
    };
    if len > 1 << 20 {
        return Err(format!("a frame of {len} bytes"));
    }
    let mut payload = vec![0u8; len as usize];
    t.read_exact(&mut payload).map_err(|e| format!("{e}"))?;
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i & 3];
        }
    }
    Ok((h[0] & 0x0f, payload))
}

/// Sends one frame on a fresh WebSocket and judges what comes back: the proxy's `1008`
/// close naming dlp is the block; the frame echoed (the upstream echoes what reaches it)
/// is the secret leaving.
fn ws_send(t: &mut Tally, host: &str, what: &str, opcode: u8, payload: &[u8]) {
    let mut ws = match ws_open(host) {
        Ok(ws) => ws,
        Err(e) => return t.blocked(format!("{what}: refused, but not by dlp: {e}")),
    };
    if let Err(e) = ws
        .write_all(&ws_frame(opcode, payload))
        .and_then(|()| ws.flush())
    {
        return t.blocked(format!("{what}: refused, but not by dlp: send: {e}"));
    }
    match ws_read(&mut ws) {
        Ok((8, body)) if body.len() >= 2 && u16::from_be_bytes([body[0], body[1]]) == 1008 => {
            let reason = String::from_utf8_lossy(&body[2..]).into_owned();
            if reason.contains("dlp") {
                t.blocked(format!("{what}: close 1008 ({reason})"))
            } else {
                t.blocked(format!("{what}: close 1008, but not by dlp ({reason})"))
            }
        }
        Ok((op, body)) if op == opcode || (opcode == 9 && op == 10) => t.escaped(format!(
            "{what}: the frame came back ({} bytes): it reached the upstream",
            body.len()
        )),
        Ok((op, body)) => t.blocked(format!(
            "{what}: refused, but not by dlp: frame {op} ({})",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => t.blocked(format!("{what}: refused, but not by dlp: {e}")),
    }
}

/// WebSocket messages on a route with `websocket: true`: an innocent one first (the host
/// side checks it reached the upstream, so the path works), then the key in a text
/// message, base64 in a binary message and in a ping, each on a connection of its own.
fn websocket(c: &Cfg, key: &str) {
    let host = c.s("ws_host");
    let mut t = Tally::new("dlp-websocket-message");
    match ws_open(&host) {
        Ok(mut ws) => {
            let hello = format!("hello {}", c.s("nonce"));
            let _ = ws
                .write_all(&ws_frame(1, hello.as_bytes()))
                .and_then(|()| ws.flush());
            // the echo (if the proxy passes it back) is read so the message is not cut short
            let _ = ws_read(&mut ws);
        }
        Err(e) => t.blocked(format!("innocent message: the upgrade failed: {e}")),
    }
    let json = format!(r#"{{"content":"my key is {key}"}}"#);
    ws_send(&mut t, &host, "key in a text message", 1, json.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("aws key {key} here"));
    ws_send(
        &mut t,
        &host,
        "base64 key in a binary message",
        2,
        b64.as_bytes(),
    );
    ws_send(&mut t, &host, "key in a ping", 9, key.as_bytes());
    t.done();
}
