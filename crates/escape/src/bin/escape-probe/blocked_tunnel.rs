//! A `CONNECT` to a host without a route on port 443 is completed by the proxy, which then
//! answers every request inside the tunnel itself with its 403 (so the agent reads why).
//! Judged: whatever is sent inside such a tunnel — a GET, a POST with a body, a second
//! request on the same connection — gets the proxy's refusal, never an upstream's answer.

use std::io::Write;

use crate::config::Cfg;
use crate::http::{Resp, connect_status, expect_policy_block, read_resp, tunnel};
use crate::verdict::Tally;

/// `CONNECT target`: when refused there, that refusal; when completed, `req` sent over TLS
/// to `sni` inside the tunnel and the answer read back.
pub(crate) fn connect_then(target: &str, sni: &str, req: &[u8]) -> Result<Resp, String> {
    let refused = connect_status(target)?;
    if refused.status != 200 {
        return Ok(refused);
    }
    let mut t = tunnel(target, sni)?;
    t.write_all(req).map_err(|e| format!("{e}"))?;
    t.flush().map_err(|e| format!("{e}"))?;
    read_resp(&mut t).map_err(|e| format!("{e}"))
}

/// The `egress-blocked-tunnel` cases (run from the `egress` section).
pub(crate) fn cases(c: &Cfg) {
    let host = format!("no-route.{}", c.s("zone"));
    let target = format!("{host}:443");
    let mut t = Tally::new("egress-blocked-tunnel");
    expect_policy_block(
        &mut t,
        "GET inside",
        connect_then(
            &target,
            &host,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        ),
    );
    expect_policy_block(
        &mut t,
        "POST with a body inside",
        connect_then(
            &target,
            &host,
            format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello")
                .as_bytes(),
        ),
    );
    // Two requests pipelined: the first is answered and the connection closes.
    let two =
        format!("GET /a HTTP/1.1\r\nHost: {host}\r\n\r\nGET /b HTTP/1.1\r\nHost: {host}\r\n\r\n");
    match tunnel(&target, &host) {
        Ok(mut tls) => {
            let _ = tls.write_all(two.as_bytes());
            let _ = tls.flush();
            expect_policy_block(
                &mut t,
                "first of two",
                read_resp(&mut tls).map_err(|e| format!("{e}")),
            );
            match read_resp(&mut tls) {
                Ok(r) if r.status != 0 => t.escaped(format!(
                    "second of two: answered {} after the refusal (the tunnel stayed open)",
                    r.status
                )),
                _ => t.blocked("second of two: connection closed after the refusal"),
            }
        }
        Err(e) => t.blocked(format!("tunnel: {e}")),
    }
    t.done();
}
