//! The answer to a refused request, made so that the agent reads why and what to do where
//! its client shows it. A client shows a response body, rarely the headers of a refused
//! `CONNECT` (`curl: (56) CONNECT tunnel failed, response 403` and nothing more), so:
//!
//! * every refusal carries the reason three ways: the body (why, then who must act and how),
//!   `Proxy-Status` (RFC 9209, which clients and tools parse), and `X-Bot-Bottle-Reason`
//!   (the same one line, for a client that prints headers only);
//! * a `CONNECT` to a host without a route on port 443 is not refused at the `CONNECT`: the
//!   tunnel is completed with a certificate of the bottle's own CA and every request inside
//!   it is answered here with the 403 and its advice. Nothing is ever forwarded from such a
//!   tunnel — its service cannot reach [`super::forward`] — and it closes after the answer.
//!   Other ports keep the refusal at the `CONNECT` (what follows there may not be TLS).
//!
//! Who must act depends on the refusal: the agent can ask the operator for a route with the
//! `egress-allow` MCP tool, but a destination on a private address needs a `connect_to` pin,
//! which only the operator sets in the manifest; a request the proxy cannot judge (framing,
//! an ambiguous path) is the agent's to fix.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use policy::LogMode;

use super::forward::Exchange;
use super::{Scheme, Shared, accept_tls, plain, serve_http1};
use crate::body::RespBody;
use crate::idle::{Tracked, until_idle};

/// The port on which a blocked `CONNECT` is answered inside a completed tunnel.
pub(super) const ANSWERED_IN_TUNNEL_PORT: u16 = 443;

/// Who can lift a refusal, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Advice {
    /// A route can be proposed: the agent asks the operator with `egress-allow`.
    AskOperator,
    /// The host resolves to an address the bottle may not reach: only the operator can pin
    /// it (`connect_to`), in the manifest; a proposal cannot.
    OperatorPins,
    /// The request itself is the problem (framing, an ambiguous path): the agent fixes it.
    FixRequest,
}

impl Advice {
    /// The advice for a refusal reason (as in `x-bot-bottle-blocked` and the request log).
    pub(super) fn for_reason(reason: &str) -> Advice {
        match reason {
            "host-not-allowed"
            | "path-not-allowed"
            | "method-not-allowed"
            | "header-not-allowed"
            | "upgrade-not-allowed" => Advice::AskOperator,
            "destination-not-allowed" => Advice::OperatorPins,
            _ => Advice::FixRequest,
        }
    }

    /// The sentence the agent reads.
    fn text(self, host: &str) -> String {
        match self {
            Advice::AskOperator => {
                "To ask the operator for access, use the egress-allow MCP tool.".to_owned()
            }
            Advice::OperatorPins => format!(
                "Only the operator can allow this: they pin the address with `connect_to: ADDR:PORT` on the route for {host} in the bottle's manifest. A proposal cannot set connect_to, so egress-allow will not help; tell the operator."
            ),
            Advice::FixRequest => {
                "The request was not sent; change it as said above and send it again.".to_owned()
            }
        }
    }

    /// The RFC 9209 error type.
    fn proxy_status_error(self) -> &'static str {
        match self {
            Advice::OperatorPins => "destination_ip_prohibited",
            Advice::AskOperator | Advice::FixRequest => "http_request_denied",
        }
    }
}

/// What a refusal says, as its parts.
pub(super) struct Refusal<'a> {
    pub(super) method: &'a str,
    pub(super) scheme: Scheme,
    pub(super) host: &'a str,
    pub(super) port: u16,
    pub(super) path: &'a str,
    /// Stable short reason (`host-not-allowed`, ...).
    pub(super) reason: &'a str,
    /// Why, in words.
    pub(super) why: &'a str,
}

impl Refusal<'_> {
    /// The 403: the body, `x-bot-bottle-blocked`, `Proxy-Status`, `X-Bot-Bottle-Reason`;
    /// `close` ends the connection after it.
    pub(super) fn response(&self, close: bool) -> Response<RespBody> {
        let advice = Advice::for_reason(self.reason);
        let host = self.host;
        let host_in = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let advice_text = advice.text(host);
        let text = format!(
            "bot-bottle egress blocked {} {}://{host_in}:{}{}: {}.\n{advice_text}\n",
            self.method,
            self.scheme.as_str(),
            self.port,
            self.path,
            self.why,
        );
        let mut resp = plain(StatusCode::FORBIDDEN, &text);
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(self.reason) {
            headers.insert("x-bot-bottle-blocked", v);
        }
        let one_line = header_text(&format!("{}. {advice_text}", self.why));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bot-bottle-egress; error={}; details=\"{}\"",
            advice.proxy_status_error(),
            one_line.replace('\\', "\\\\").replace('"', "\\\"")
        )) {
            headers.insert("proxy-status", v);
        }
        if let Ok(v) = HeaderValue::from_str(&one_line) {
            headers.insert("x-bot-bottle-reason", v);
        }
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Text safe in a header value: printable ASCII, anything else as `?`.
fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Whether a blocked `CONNECT` is answered inside a completed tunnel: on port 443, when the
/// bottle's CA can present a certificate for the host.
pub(super) fn answers_in_tunnel(shared: &Shared, host: &str, port: u16) -> bool {
    port == ANSWERED_IN_TUNNEL_PORT && shared.ca.server_config(host).is_ok()
}

/// The completed tunnel of a blocked `CONNECT`: TLS with the bottle's CA, then every request
/// is answered with the 403 of `why` and the connection closes. The refusal was logged at
/// the `CONNECT`; nothing here connects anywhere.
pub(super) async fn answer_in_tunnel(
    shared: Arc<Shared>,
    upgraded: hyper::upgrade::Upgraded,
    host: String,
    port: u16,
    why: String,
) {
    let Some(tls) = accept_tls(&shared, upgraded, &host).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let s = shared.clone();
    let handler = move |req: Request<Incoming>| {
        let s = s.clone();
        let (host, why) = (host.clone(), why.clone());
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let ex = Exchange {
                shared: &s,
                log: LogMode::Off,
                method: req.method(),
                scheme: Scheme::Https,
                host: &host,
                port,
                path: &path,
                started: Instant::now(),
            };
            Ok::<_, Infallible>(ex.blocked("host-not-allowed", &why, true))
        }
    };
    if h2 {
        let (tls, last) = Tracked::new(tls);
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(shared.limits.head).unwrap_or(u32::MAX))
            .keep_alive_interval(None)
            .serve_connection(TokioIo::new(tls), service_fn(handler));
        let _ = until_idle(conn, last, shared.timeouts.idle).await;
    } else {
        serve_http1(&shared, tls, handler).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn each_reason_says_who_must_act() {
        let cases = [
            ("host-not-allowed", Advice::AskOperator),
            ("path-not-allowed", Advice::AskOperator),
            ("method-not-allowed", Advice::AskOperator),
            ("header-not-allowed", Advice::AskOperator),
            ("upgrade-not-allowed", Advice::AskOperator),
            ("destination-not-allowed", Advice::OperatorPins),
            ("ambiguous-path", Advice::FixRequest),
            ("uri-too-long", Advice::FixRequest),
            ("host-mismatch", Advice::FixRequest),
        ];
        for (reason, advice) in cases {
            assert_eq!(Advice::for_reason(reason), advice, "{reason}");
        }
    }

    #[test]
    fn header_text_is_printable_ascii() {
        assert_eq!(header_text("a\tb\nc é \"q\""), "a?b?c ? \"q\"");
    }
}
