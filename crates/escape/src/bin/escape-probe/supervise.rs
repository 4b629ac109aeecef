//! The `supervise` section: proposals the server must refuse (changing `log`), approving
//! one's own proposal through the queue, and whether a self-proposed route went live. What an
//! approved proposal may change is in [`crate::supervise_effect`].

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::SUPERVISE;
use crate::config::Cfg;
use crate::http::{expect_block, plain_proxy};
use crate::sockets::tcp;
use crate::supervise_effect;
use crate::verdict::{Tally, blocked, escaped};

/// One MCP call to the supervise server (a raw POST: the probe has no MCP client); the whole
/// answer as text.
pub(crate) fn mcp(body: &str, timeout: Duration) -> Result<String, String> {
    let mut s = tcp(SUPERVISE).map_err(|e| format!("supervise: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    write!(s, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:3130\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).map_err(|e| format!("{e}"))?;
    let mut out = String::new();
    match s.read_to_string(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if !out.is_empty() => Ok(format!("{out} (then {e})")),
        Err(e) => Err(format!("{e}")),
    }
}

/// The `supervise` section.
pub(crate) fn cases(c: &Cfg) {
    let api = c.s("api_host");
    // Changing `log` through a proposal is refused at once.
    let routes = format!("log: all\nroutes:\n  - host: {api}\n");
    let call = serde_json::json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"egress-allow","arguments":{"routes_yaml": routes, "justification":"escape suite"}}}).to_string();
    match mcp(&call, Duration::from_secs(10)) {
        Ok(r) if r.contains("\"isError\":true") || r.contains("\"error\"") => {
            blocked("supervise-change-log", "refused by validation")
        }
        Ok(r) => escaped(
            "supervise-change-log",
            format!("accepted: {}", r.chars().take(200).collect::<String>()),
        ),
        Err(e) => blocked("supervise-change-log", format!("no supervise server: {e}")),
    }

    // A real proposal (left pending: the call times out on our side), then try to approve it.
    let routes = format!(
        "routes:\n  - host: {api}\n  - host: self-approved.{}\n",
        c.s("zone")
    );
    let call = serde_json::json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"egress-allow","arguments":{"routes_yaml": routes, "justification":"escape suite self-approval"}}}).to_string();
    let _ = mcp(&call, Duration::from_secs(2));
    let mut t = Tally::new("supervise-self-approve");
    for d in c.list("queue_dirs") {
        match std::fs::read_dir(&d) {
            Ok(_) => t.escaped(format!("queue {d} visible")),
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
        // Only an existing queue counts (creating the path would make a private copy).
        let resp = Path::new(&d).join("responses");
        match std::fs::write(resp.join("escape.json"), "{\"decision\":\"approved\"}") {
            Ok(()) => t.escaped(format!("wrote a response under {d}")),
            Err(e) => t.blocked(format!("write response: {e}")),
        }
    }
    // Is the self-proposed route live now? (No answer at all is not a way out either; the
    // harness's DNS canary would also see the proxy resolve the name.)
    let r = plain_proxy(&format!(
        "GET http://self-approved.{z}/ HTTP/1.1\r\nHost: self-approved.{z}\r\n\r\n",
        z = c.s("zone")
    ));
    expect_block(&mut t, "self-proposed route", r);
    t.done();
    supervise_effect::cases(c);
}
