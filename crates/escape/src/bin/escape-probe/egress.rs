//! The `egress` section: the proxy's policy (routes, paths and methods, domain fronting, IP
//! literals, names resolving to private addresses, request smuggling, `CONNECT` ports,
//! upgrades, oversized heads, a relay inside the bottle). The classes of "judge what is
//! forwarded" are in [`crate::egress_classes`].

use std::io::Write;
use std::net::{Shutdown, TcpStream};

use crate::PROXY;
use crate::config::Cfg;
use crate::egress_classes;
use crate::http::{
    Resp, connect_status, desc, expect_block, expect_policy_block, https, is_block, plain_proxy,
    read_resp, tunnel,
};
use crate::sockets::tcp;
use crate::verdict::{Tally, blocked, escaped};

/// The `egress` section.
pub(crate) fn cases(c: &Cfg) {
    let api = c.s("api_host");
    let target = format!("{api}:443");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n");

    // Sanity: the allowed request works (otherwise every block below proves nothing).
    match https(&target, &api, get("/v1/allowed").as_bytes()) {
        Ok(r) if r.status == 200 => blocked(
            "egress-allowed-route-works",
            "200 on the allowed route (sanity)",
        ),
        r => escaped(
            "egress-allowed-route-works",
            format!(
                "the allowed request failed: {} — the suite cannot judge the proxy",
                desc(&r)
            ),
        ),
    }

    let mut t = Tally::new("egress-no-route");
    expect_block(
        &mut t,
        "http absolute form",
        plain_proxy(&format!(
            "GET http://no-route.{}/ HTTP/1.1\r\nHost: no-route.{}\r\n\r\n",
            c.s("zone"),
            c.s("zone")
        )),
    );
    // Answered inside the completed tunnel (`blocked_tunnel`): only the proxy's refusal counts.
    expect_policy_block(
        &mut t,
        "CONNECT",
        crate::blocked_tunnel::connect_then(
            &format!("no-route.{}:443", c.s("zone")),
            &format!("no-route.{}", c.s("zone")),
            format!("GET / HTTP/1.1\r\nHost: no-route.{}\r\n\r\n", c.s("zone")).as_bytes(),
        ),
    );
    t.done();

    let mut t = Tally::new("egress-path-method");
    expect_block(
        &mut t,
        "GET /admin",
        https(&target, &api, get("/admin").as_bytes()),
    );
    expect_block(
        &mut t,
        "GET /v1/../admin",
        https(&target, &api, get("/v1/../admin").as_bytes()),
    );
    expect_block(
        &mut t,
        "GET /v1/%2e%2e/admin",
        https(&target, &api, get("/v1/%2e%2e/admin").as_bytes()),
    );
    expect_block(
        &mut t,
        "DELETE /v1/x",
        https(
            &target,
            &api,
            format!("DELETE /v1/x HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes(),
        ),
    );
    t.done();

    let mut t = Tally::new("egress-domain-fronting");
    expect_block(
        &mut t,
        "Host: other",
        https(
            &target,
            &api,
            format!(
                "GET /v1/front HTTP/1.1\r\nHost: no-route.{}\r\n\r\n",
                c.s("zone")
            )
            .as_bytes(),
        ),
    );
    expect_block(
        &mut t,
        "absolute-form other host in tunnel",
        https(
            &target,
            &api,
            format!(
                "GET https://no-route.{z}/v1/front HTTP/1.1\r\nHost: no-route.{z}\r\n\r\n",
                z = c.s("zone")
            )
            .as_bytes(),
        ),
    );
    match tunnel(&target, &format!("no-route.{}", c.s("zone"))) {
        Ok(mut tls) => {
            let _ = tls.write_all(get("/v1/sni").as_bytes());
            expect_block(
                &mut t,
                "SNI other",
                read_resp(&mut tls).map_err(|e| format!("{e}")),
            );
        }
        Err(e) => t.blocked(format!("SNI other: {e}")),
    }
    t.done();

    let mut t = Tally::new("egress-ip-literal");
    let up = c.s("upstream_addr");
    let hp = c.n("host_canary_port");
    expect_policy_block(
        &mut t,
        "CONNECT inet ip",
        crate::blocked_tunnel::connect_then(
            &format!("{}:443", c.s("inet4")),
            c.s("inet4").as_str(),
            format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", c.s("inet4")).as_bytes(),
        ),
    );
    expect_block(
        &mut t,
        &format!("CONNECT upstream {up}"),
        connect_status(&up),
    );
    expect_block(
        &mut t,
        "http lan ip",
        plain_proxy(&format!(
            "GET http://{}:{}/ HTTP/1.1\r\nHost: {}\r\n\r\n",
            c.s("lan4"),
            c.n("canary_tcp_port"),
            c.s("lan4")
        )),
    );
    expect_block(
        &mut t,
        "http host loopback",
        plain_proxy(&format!(
            "GET http://127.0.0.1:{hp}/ HTTP/1.1\r\nHost: 127.0.0.1:{hp}\r\n\r\n"
        )),
    );
    expect_block(
        &mut t,
        "http [::1]",
        plain_proxy(&format!(
            "GET http://[::1]:{hp}/ HTTP/1.1\r\nHost: [::1]:{hp}\r\n\r\n"
        )),
    );
    t.done();

    // Routes the operator allowed whose names resolve to private / loopback addresses.
    // Only the proxy's own refusal counts: an error from the destination (a 502 because
    // nothing listened there) means the proxy tried to connect.
    let mut t = Tally::new("egress-route-resolves-private");
    for host in c.list("private_routes") {
        expect_policy_block(
            &mut t,
            &host,
            plain_proxy(&format!(
                "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
            )),
        );
    }
    t.done();

    let mut t = Tally::new("egress-smuggling");
    expect_block(&mut t, "CL+TE", https(&target, &api, format!("POST /v1/smuggle HTTP/1.1\r\nHost: {api}\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin-smuggled HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes()));
    expect_block(&mut t, "CL+CL", https(&target, &api, format!("POST /v1/smuggle2 HTTP/1.1\r\nHost: {api}\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /admin-smuggled2 HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes()));
    t.done();

    let mut t = Tally::new("egress-connect-port");
    expect_block(
        &mut t,
        "CONNECT :8443",
        connect_status(&format!("{api}:8443")),
    );
    expect_block(&mut t, "CONNECT :22", connect_status(&format!("{api}:22")));
    t.done();

    let mut t = Tally::new("egress-websocket-path");
    expect_block(&mut t, "upgrade /ws", https(&target, &api, format!("GET /ws HTTP/1.1\r\nHost: {api}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes()));
    t.done();

    let mut t = Tally::new("egress-oversized-headers");
    let big = "a".repeat(256 * 1024);
    expect_block(
        &mut t,
        "256 KiB header",
        https(
            &target,
            &api,
            format!("GET /v1/big HTTP/1.1\r\nHost: {api}\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        ),
    );
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_block(
        &mut t,
        "2000 headers",
        https(
            &target,
            &api,
            format!("GET /v1/many HTTP/1.1\r\nHost: {api}\r\n{many}\r\n").as_bytes(),
        ),
    );
    t.done();

    // A relay inside the bottle: one tunnel through the allowed host carrying an allowed
    // request and then disallowed ones on the same connection — each must be checked.
    let mut t = Tally::new("egress-relay-tunnel-each-request-checked");
    match tunnel(&target, &api) {
        Ok(mut tls) => {
            let mut step = |req: String, want_ok: bool, what: &str| {
                let r = tls
                    .write_all(req.as_bytes())
                    .and_then(|_| tls.flush())
                    .map_err(|e| format!("{e}"))
                    .and_then(|_| read_resp(&mut tls).map_err(|e| format!("{e}")));
                match (&r, want_ok) {
                    (Ok(resp), false) if !is_block(resp) => {
                        t.escaped(format!("{what}: {}", resp.status))
                    }
                    (_, false) => t.blocked(format!("{what}: {}", desc(&r))),
                    (Ok(resp), true) if resp.status == 200 => {}
                    (_, true) => t.blocked(format!("{what} (allowed) did not pass: {}", desc(&r))),
                }
                r.map(|resp| resp.head.to_ascii_lowercase().contains("connection: close"))
                    .unwrap_or(true)
            };
            let closed = step(get("/v1/relay-ok"), true, "first allowed");
            if !closed {
                let _ = step(get("/admin-relay"), false, "second request /admin-relay");
            }
        }
        Err(e) => t.blocked(format!("tunnel: {e}")),
    }
    // The same through a relay process listening inside the bottle.
    match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => {
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            let h = std::thread::spawn(move || {
                if let Ok((mut a, _)) = l.accept()
                    && let Ok(mut b) = TcpStream::connect(PROXY)
                {
                    let (mut a2, mut b2) = match (a.try_clone(), b.try_clone()) {
                        (Ok(x), Ok(y)) => (x, y),
                        _ => return,
                    };
                    let j = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut b2, &mut a2);
                        let _ = a2.shutdown(Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(Shutdown::Write);
                    let _ = j.join();
                }
            });
            let r = (|| -> Result<Resp, String> {
                let mut s = tcp(&format!("127.0.0.1:{port}")).map_err(|e| format!("{e}"))?;
                write!(s, "GET http://no-route.{z}/relay HTTP/1.1\r\nHost: no-route.{z}\r\nConnection: close\r\n\r\n", z = c.s("zone")).map_err(|e| format!("{e}"))?;
                read_resp(&mut s).map_err(|e| format!("{e}"))
            })();
            expect_block(&mut t, "via in-bottle relay", r);
            drop(h);
        }
        Err(e) => t.blocked(format!("relay bind: {e}")),
    }
    t.done();

    egress_classes::run(c);
    crate::blocked_tunnel::cases(c);
}
