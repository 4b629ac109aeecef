//! Egress cases for the classes of "judge what is forwarded" (issue 14 §1): a rule decided
//! on a request the upstream reads differently (hop-by-hop headers, ambiguous paths, method
//! overrides, odd Host values), strict framing switched off by an `Upgrade` header, upgrades
//! the route does not allow, HTTP/2 limits and the default port. The harness convicts too:
//! every path here carries a marker (`hopbyhop`, `ambig`, `override`, `hostform`,
//! `upgsmug`, `h2limit`) and the recording upstream must never see one.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::config::Cfg;
use crate::http::{
    Tls, connect_status, desc, expect_block, expect_policy_block, https, plain_proxy, read_resp,
    tls_config, tunnel, tunnel_with,
};
use crate::verdict::Tally;

/// Everything this module adds to the `egress` section.
pub(crate) fn run(c: &Cfg) {
    let api = c.s("api_host");
    let target = format!("{api}:443");
    hop_by_hop(&api, &target);
    ambiguous_paths(&api, &target);
    method_override(&api, &target);
    host_forms(&api, &target);
    upgrade_framing(&api, &target);
    http2_limits(&api, &target);
    default_port(&api);
}

fn hop_by_hop(api: &str, target: &str) {
    let mut t = Tally::new("egress-hop-by-hop-header-rule");
    for (what, extra) in [
        (
            "Connection: X-Scope",
            "X-Scope: read\r\nConnection: X-Scope\r\n",
        ),
        (
            "Connection: keep-alive, x-scope",
            "X-Scope: read\r\nConnection: keep-alive, x-scope\r\n",
        ),
        (
            "two Connection headers",
            "Connection: x-a\r\nConnection: X-SCOPE\r\nX-Scope: read\r\n",
        ),
    ] {
        let req = format!("GET /scoped/hopbyhop HTTP/1.1\r\nHost: {api}\r\n{extra}\r\n");
        expect_block(&mut t, what, https(target, api, req.as_bytes()));
    }
    t.done();
}

/// Spellings under the `/v1/` prefix rule that an upstream could read as `/admin-ambig`.
const AMBIGUOUS: [&str; 18] = [
    "/v1/..;/admin-ambig",
    "/v1/..;jsessionid=x/admin-ambig",
    "/v1/%2e%2e;/admin-ambig",
    "/v1/..%3b/admin-ambig",
    "/v1/%00/../admin-ambig",
    "/v1/x%00/admin-ambig",
    "/v1/%252e%252e/admin-ambig",
    "/v1/%252fadmin-ambig",
    "/v1/..%2fadmin-ambig",
    "/v1/..%2Fadmin-ambig",
    "/v1/..\\admin-ambig",
    "/v1/..%5cadmin-ambig",
    "/v1/%c0%ae%c0%ae/admin-ambig",
    "/v1/%ef%bc%8e%ef%bc%8e/admin-ambig",
    "/v1/%u002e%u002e/admin-ambig",
    "/v1/%2e%2e/admin-ambig",
    "/v1/./../admin-ambig",
    "/v1/.%2E/admin-ambig",
];

fn ambiguous_paths(api: &str, target: &str) {
    let mut t = Tally::new("egress-ambiguous-path");
    for path in AMBIGUOUS {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n");
        expect_block(&mut t, path, https(target, api, req.as_bytes()));
    }
    t.done();
}

fn method_override(api: &str, target: &str) {
    let mut t = Tally::new("egress-method-override");
    for (what, query, extra) in [
        (
            "X-HTTP-Method-Override: DELETE",
            "",
            "X-HTTP-Method-Override: DELETE\r\n",
        ),
        ("X-HTTP-Method: DELETE", "", "X-HTTP-Method: DELETE\r\n"),
        ("X-Method-Override: PUT", "", "X-Method-Override: PUT\r\n"),
        ("?_method=DELETE", "?_method=DELETE", ""),
    ] {
        let req = format!(
            "POST /v1/override{query} HTTP/1.1\r\nHost: {api}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        expect_block(&mut t, what, https(target, api, req.as_bytes()));
    }
    t.done();
}

fn host_forms(api: &str, target: &str) {
    let mut t = Tally::new("egress-host-canonical");
    for host in [
        format!("user@{api}"),
        format!("user:pw@{api}:443"),
        format!("{api}@no-route.escape.test"),
    ] {
        let req = format!("GET /v1/hostform HTTP/1.1\r\nHost: {host}\r\n\r\n");
        expect_block(
            &mut t,
            &format!("Host: {host}"),
            https(target, api, req.as_bytes()),
        );
    }
    let r = connect_status(&format!("user@{api}:443"));
    expect_block(&mut t, "CONNECT user@host", r);
    t.done();
}

/// Writes `first` and `second` on one tunnel; refused when the second never gets a success.
fn pipelined(t: &mut Tally, what: &str, api: &str, target: &str, first: &str, second: &str) {
    match tunnel(target, api) {
        Ok(mut tls) => {
            let sent = tls
                .write_all(format!("{first}{second}").as_bytes())
                .and_then(|_| tls.flush());
            if let Err(e) = sent {
                t.blocked(format!("{what}: {e}"));
                return;
            }
            let one = read_resp(&mut tls).map_err(|e| format!("{e}"));
            let two = read_resp(&mut tls).map_err(|e| format!("{e}"));
            match &two {
                Ok(r) if (200..400).contains(&r.status) => {
                    t.escaped(format!("{what}: the request after it got {}", r.status))
                }
                _ => t.blocked(format!("{what}: {} then {}", desc(&one), desc(&two))),
            }
        }
        Err(e) => t.blocked(format!("{what}: {e}")),
    }
}

fn upgrade_framing(api: &str, target: &str) {
    let mut t = Tally::new("egress-upgrade-framing");
    let fake = format!("GET /admin-upgsmug HTTP/1.1\r\nHost: {api}\r\nUpgrade: websocket\r\n\r\n");
    let real = format!(
        "GET /v1/upgsmug-ws HTTP/1.1\r\nHost: {api}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let smuggled = [
        (
            "bare LF",
            format!("GET /v1/upgsmug-lf HTTP/1.1\nHost: {api}\n\n"),
        ),
        (
            "CL+CL",
            format!(
                "POST /v1/upgsmug-cl HTTP/1.1\r\nHost: {api}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"
            ),
        ),
        (
            "CL+TE",
            format!(
                "POST /v1/upgsmug-te HTTP/1.1\r\nHost: {api}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
    ];
    let connect_in = format!("CONNECT {api}:443 HTTP/1.1\r\nHost: {api}\r\n\r\n");
    for (what, second) in &smuggled {
        pipelined(
            &mut t,
            &format!("CONNECT in the tunnel, then {what}"),
            api,
            target,
            &connect_in,
            second,
        );
        pipelined(
            &mut t,
            &format!("Upgrade alone, then {what}"),
            api,
            target,
            &fake,
            second,
        );
        pipelined(
            &mut t,
            &format!("refused upgrade, then {what}"),
            api,
            target,
            &real,
            second,
        );
    }
    // h2c would carry requests the proxy never sees; the route allows no upgrade at all
    let h2c = format!(
        "GET /v1/upgsmug-h2c HTTP/1.1\r\nHost: {api}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    );
    expect_block(&mut t, "Upgrade: h2c", https(target, api, h2c.as_bytes()));
    expect_block(
        &mut t,
        "Upgrade: websocket on a route without websocket",
        https(target, api, real.as_bytes()),
    );
    t.done();
}

// ---------------------------------------------------------------- a minimal HTTP/2 client

fn h2_tls(target: &str, sni: &str) -> Result<Tls, String> {
    let mut config = (*tls_config()?).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tunnel_with(target, sni, Arc::new(config))?;
    if tls.conn.alpn_protocol() != Some(b"h2") {
        return Err("the proxy did not negotiate h2".into());
    }
    Ok(tls)
}

/// HPACK integer with an `n`-bit prefix whose other bits are `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header without indexing: `name_index` of the static table, or a new name.
fn hpack_field(out: &mut Vec<u8>, name_index: usize, name: &str, value: &str) {
    hpack_int(out, 0x00, 4, name_index);
    if name_index == 0 {
        hpack_int(out, 0x00, 7, name.len());
        out.extend_from_slice(name.as_bytes());
    }
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// One GET over HTTP/2 with `extra` headers; says what came back: `200` (the indexed
/// `:status 200` in the response's HEADERS), another status, a reset or the end.
fn h2_get(
    target: &str,
    api: &str,
    path: &str,
    extra: &[(String, String)],
) -> Result<String, String> {
    let mut tls = h2_tls(target, api)?;
    let mut block = Vec::new();
    block.push(0x82); // :method GET
    block.push(0x87); // :scheme https
    hpack_field(&mut block, 4, "", path); // :path
    hpack_field(&mut block, 1, "", api); // :authority
    for (n, v) in extra {
        hpack_field(&mut block, 0, n, v);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS
    // HEADERS (END_STREAM) then CONTINUATION frames of at most 16 KiB
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let end_headers = if i + 1 == chunks.len() { 0x4 } else { 0 };
        if i == 0 {
            frame(&mut out, 0x1, 0x1 | end_headers, 1, chunk);
        } else {
            frame(&mut out, 0x9, end_headers, 1, chunk);
        }
    }
    tls.write_all(&out)
        .and_then(|_| tls.flush())
        .map_err(|e| format!("{e}"))?;
    loop {
        let mut head = [0u8; 9];
        if let Err(e) = tls.read_exact(&mut head) {
            return Ok(format!("connection ended ({e})"));
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).map_err(|e| format!("{e}"))?;
        match (kind, stream) {
            (0x4, 0) if flags & 0x1 == 0 => {
                let mut ack = Vec::new();
                frame(&mut ack, 0x4, 0x1, 0, &[]);
                let _ = tls.write_all(&ack);
                let _ = tls.flush();
            }
            (0x1, 1) => {
                let mut p = &payload[..];
                if flags & 0x8 != 0 {
                    p = p.get(1..).unwrap_or_default(); // pad length
                }
                if flags & 0x20 != 0 {
                    p = p.get(5..).unwrap_or_default(); // priority
                }
                return Ok(if p.first() == Some(&0x88) {
                    "200".into()
                } else {
                    "a non-200 status".into()
                });
            }
            (0x3, 1) => return Ok("stream reset".into()),
            (0x7, _) => return Ok("connection closed (GOAWAY)".into()),
            _ => {}
        }
    }
}

fn http2_limits(api: &str, target: &str) {
    let mut t = Tally::new("egress-http2-limits");
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let big = vec![("x-big".to_string(), "b".repeat(70 * 1024))];
    let long = format!("/v1/h2limit-{}", "a".repeat(9000));
    for (what, path, extra) in [
        ("150 headers", "/v1/h2limit-many", many),
        ("70 KiB header", "/v1/h2limit-big", big),
        ("9000-byte path", long.as_str(), Vec::new()),
    ] {
        match h2_get(target, api, path, &extra) {
            Ok(s) if s == "200" => t.escaped(format!("{what}: 200")),
            Ok(s) => t.blocked(format!("{what}: {s}")),
            Err(e) => t.blocked(format!("{what}: {e}")),
        }
    }
    t.done();
}

fn default_port(api: &str) {
    let mut t = Tally::new("egress-route-default-port");
    // the allowed route has no port: 443 through CONNECT, never 80
    let r = connect_status(&format!("{api}:80"));
    expect_block(&mut t, "CONNECT :80", r);
    let r = plain_proxy(&format!(
        "GET http://{api}:443/v1/h2limit-plain443 HTTP/1.1\r\nHost: {api}:443\r\n\r\n"
    ));
    expect_policy_block(&mut t, "http://host:443", r);
    t.done();
}
