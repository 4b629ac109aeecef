//! The per-request path: a request that arrived in a tunnel (or as absolute-form `http://`)
//! is checked against the routes exactly as it will be forwarded, rewritten (hop-by-hop
//! headers out, credential in, one spelling of `Host`), sent upstream, and streamed back.
//!
//! What a refusal and a log line need about the request is one borrowed value,
//! [`Exchange`], built on the stack once per request: no allocation is added to the path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use policy::{LogMode, Reason};

use super::{Scheme, Shared, empty, plain};
use crate::body::{Metered, OnDrop, RespBody};
use crate::log::{LogEntry, now_rfc3339};
use crate::upstream::ConnectError;

/// One request as the proxy judges it: where it goes and what it asks. The refusals and log
/// lines of the request path take this instead of the same eight arguments each.
pub(super) struct Exchange<'a> {
    pub(super) shared: &'a Shared,
    /// The log mode of the routes the request is judged by.
    pub(super) log: LogMode,
    pub(super) method: &'a Method,
    pub(super) scheme: Scheme,
    pub(super) host: &'a str,
    pub(super) port: u16,
    pub(super) path: &'a str,
    pub(super) started: Instant,
}

impl Exchange<'_> {
    /// The 403 of a refused request (built in [`super::blocked`]: the reason, why, and who
    /// must act); `close` ends the connection after it.
    pub(super) fn blocked(&self, reason: &str, why: &str, close: bool) -> Response<RespBody> {
        super::blocked::Refusal {
            method: self.method.as_str(),
            scheme: self.scheme,
            host: self.host,
            port: self.port,
            path: self.path,
            reason,
            why,
        }
        .response(close)
    }

    /// Logs a refusal and answers it with `status` (the connection is closed after it).
    fn refuse(&self, status: StatusCode, reason: &'static str, why: &str) -> Response<RespBody> {
        self.log_blocked(reason, None, status.as_u16());
        let mut resp = self.blocked(reason, why, true);
        *resp.status_mut() = status;
        resp
    }

    /// The log line of a refused request (unless the log is off).
    pub(super) fn log_blocked(&self, reason: &'static str, rule: Option<usize>, status: u16) {
        if self.log == LogMode::Off {
            return;
        }
        self.write_log("blocked", reason, rule, status);
    }

    /// The log line of an allowed request answered without a streamed body (a timeout, an
    /// upstream error, a switch of protocols); only with `log: all`.
    fn log_allowed(&self, rule: Option<usize>, status: u16) {
        if self.log != LogMode::All {
            return;
        }
        self.write_log("allowed", "allowed", rule, status);
    }

    fn write_log(
        &self,
        decision: &'static str,
        reason: &'static str,
        rule: Option<usize>,
        status: u16,
    ) {
        self.shared.log.write(&LogEntry {
            time: now_rfc3339(),
            method: self.method.to_string(),
            host: self.host.to_string(),
            path: self.path.to_string(),
            decision,
            reason,
            rule,
            status,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            dlp: None,
        });
    }
}

/// Whether an authority (`host[:port]`) names the same place as `host:port`. User
/// information (`user@host`) is never the same place: upstreams read it differently.
pub(super) fn same_place(authority: &str, scheme: Scheme, host: &str, port: u16) -> bool {
    if authority.contains('@') {
        return false;
    }
    match authority.parse::<http::uri::Authority>() {
        Ok(a) => {
            policy::normalize_host(a.host()) == host
                && a.port_u16().unwrap_or(scheme.default_port()) == port
        }
        Err(_) => false,
    }
}

/// Why a request head is refused before any route is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    /// `Host` (or the absolute URI's authority) does not name the target (the CONNECT
    /// target, and so the SNI), or is given twice.
    HostMismatch,
    /// A `CONNECT` inside a tunnel or as a plain request.
    ConnectInTunnel,
    /// Both `Content-Length` and `Transfer-Encoding`.
    ConflictingLength,
    /// More header fields than the limit.
    TooManyHeaders,
    /// A longer path and query than the limit.
    UriTooLong,
}

/// The checks of a request head that come before the routes: the one place `forward`
/// decides them (and the fuzz target calls).
pub(crate) fn check_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    scheme: Scheme,
    host: &str,
    port: u16,
    limits: &crate::config::Limits,
) -> Result<(), HeadRefusal> {
    // Host / :authority must name the CONNECT target (and so the SNI).
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_ok = match (hosts.next(), hosts.next()) {
        (None, _) => true,
        (Some(h), None) => h.to_str().is_ok_and(|h| same_place(h, scheme, host, port)),
        (Some(_), Some(_)) => false,
    };
    let uri_ok = uri
        .authority()
        .is_none_or(|a| same_place(a.as_str(), scheme, host, port));
    if !host_ok || !uri_ok {
        return Err(HeadRefusal::HostMismatch);
    }
    if method == Method::CONNECT {
        return Err(HeadRefusal::ConnectInTunnel);
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(HeadRefusal::ConflictingLength);
    }
    // The same limits for HTTP/2 as the framing check applies to HTTP/1.1.
    if headers.len() > limits.headers {
        return Err(HeadRefusal::TooManyHeaders);
    }
    if uri.path_and_query().map_or(0, |p| p.as_str().len()) > limits.request_line {
        return Err(HeadRefusal::UriTooLong);
    }
    Ok(())
}

/// Judges one request and forwards it when a route allows it.
pub(super) async fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    scheme: Scheme,
    host: String,
    port: u16,
) -> Response<RespBody> {
    let started = Instant::now();
    // formatted only for the log line, which `log: all` alone writes
    let arrived = time::OffsetDateTime::now_utc();
    let loaded = shared.routes.current();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let ex = Exchange {
        shared: &shared,
        log: loaded.log,
        method: &method,
        scheme,
        host: &host,
        port,
        path: &path,
        started,
    };

    match check_head(
        &method,
        req.uri(),
        req.headers(),
        scheme,
        &host,
        port,
        &shared.limits,
    ) {
        Ok(()) => {}
        Err(HeadRefusal::HostMismatch) => {
            return ex.refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "host-mismatch",
                "the Host header does not match the proxy target",
            );
        }
        Err(HeadRefusal::ConnectInTunnel) => {
            return ex.refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "connect-in-tunnel",
                "CONNECT is not allowed inside a tunnel or as a plain request",
            );
        }
        Err(HeadRefusal::ConflictingLength) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress: conflicting Content-Length and Transfer-Encoding\n",
            );
        }
        Err(HeadRefusal::TooManyHeaders) => {
            return ex.refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too-many-headers",
                &format!("more than {} header fields", shared.limits.headers),
            );
        }
        Err(HeadRefusal::UriTooLong) => {
            return ex.refuse(
                StatusCode::URI_TOO_LONG,
                "uri-too-long",
                &format!(
                    "the path is longer than {} bytes",
                    shared.limits.request_line
                ),
            );
        }
    }

    // Judge the request exactly as it will be forwarded: hop-by-hop headers (and those
    // `Connection` names) go first.
    let upgrade = is_upgrade(req.headers());
    let mut req = req;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_proto = if upgrade {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(&mut parts.headers);
    // A route whose grant ended is judged as what it went back to (the access the host had
    // before a path, a method or a token was given once or for a while).
    let uses = &shared.routes.uses;
    let judged = loaded.policy.judge_live(
        &host,
        port,
        &policy::Ask {
            tls: scheme == Scheme::Https,
            method: method.as_str(),
            path: &path,
            query: parts.uri.query(),
            headers: &parts.headers,
            upgrade: upgrade_proto
                .as_ref()
                .map(|p| p.to_str().unwrap_or("not text")),
        },
        &|r| crate::grant::ended(uses, r),
    );
    let decision = judged.decision;
    let normalised = match judged.path {
        std::borrow::Cow::Owned(p) => Some(p),
        std::borrow::Cow::Borrowed(_) => None,
    };
    if !decision.allowed {
        let why = match decision.reason {
            Reason::HostNotAllowed => format!("no route allows {host}:{port}"),
            Reason::AmbiguousPath => format!(
                "the route for {host} judges paths, and this one has {}, which upstreams read differently; write the path plainly",
                decision
                    .path_problem
                    .map_or("an ambiguous spelling", |p| p.as_str())
            ),
            r => format!(
                "the route for {host} does not allow this request ({})",
                r.as_str()
            ),
        };
        ex.log_blocked(
            decision.reason.as_str(),
            decision.route,
            if decision.reason == Reason::AmbiguousPath {
                400
            } else {
                403
            },
        );
        let mut resp = ex.blocked(decision.reason.as_str(), &why, upgrade);
        if decision.reason == Reason::AmbiguousPath {
            *resp.status_mut() = StatusCode::BAD_REQUEST;
        }
        return resp;
    }
    // An approval once or for a while: ended routes allow nothing (a use is spent only
    // once DLP let the request go, below).
    if let Err(ended) = crate::grant::admit(&shared.routes.uses, &loaded.policy, decision.route) {
        ex.log_blocked(ended.reason(), decision.route, 403);
        let why = ended.why(decision.route.unwrap_or_default(), &host);
        return ex.blocked(ended.reason(), &why, upgrade);
    }

    if let (true, Some(proto)) = (upgrade, upgrade_proto) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
        // Outbound DLP reads every WebSocket message the agent sends: a compression
        // extension (`permessage-deflate`) would make them unreadable, so none is offered.
        if !shared.skip_dlp {
            parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        }
    }
    let mut injected = None;
    if let Some(Some((name, value))) = decision.route.and_then(|i| loaded.credentials.get(i)) {
        // Whatever the client put in the credential header never goes out, and the
        // token itself only travels inside TLS: plain http:// requests get neither.
        parts.headers.remove(name);
        if scheme == Scheme::Https {
            parts.headers.insert(name.clone(), value.clone());
            injected = Some(name);
        }
    }
    let host_in_uri = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    // One spelling of Host for the upstream: the target's (no user information, no
    // trailing dot, no default port).
    let default_port = port == scheme.default_port();
    let canonical = parts.headers.get(header::HOST).is_some_and(|v| {
        let rest = v.as_bytes().strip_prefix(host_in_uri.as_bytes());
        match (rest, default_port) {
            (Some(b""), true) => true,
            (Some(r), false) => r.strip_prefix(b":").is_some_and(|p| {
                !p.starts_with(b"0")
                    && std::str::from_utf8(p).is_ok_and(|p| p.parse::<u16>() == Ok(port))
            }),
            _ => false,
        }
    });
    if !canonical {
        let v = if default_port {
            HeaderValue::from_str(&host_in_uri)
        } else {
            HeaderValue::from_str(&format!("{host_in_uri}:{port}"))
        };
        if let Ok(v) = v {
            parts.headers.insert(header::HOST, v);
        }
    }
    let target = match (normalised, parts.uri.query()) {
        (Some(p), Some(q)) => format!("{}://{host_in_uri}:{port}{p}?{q}", scheme.as_str()),
        (Some(p), None) => format!("{}://{host_in_uri}:{port}{p}", scheme.as_str()),
        (None, _) => {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            format!("{}://{host_in_uri}:{port}{pq}", scheme.as_str())
        }
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: malformed request target\n",
        );
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    // Outbound DLP: the head and the first window of the body, before any upstream is
    // contacted; the rest of the body is scanned as it streams.
    let report = dlp_report(&shared, &method, &host, &path, decision.route, 403);
    let taken = Arc::new(crate::grant::Taken::new(shared.routes.uses.clone()));
    let checked = match crate::dlp::request::check_unless(
        shared.skip_dlp,
        &host,
        &loaded,
        decision.route,
        &mut parts,
        injected,
        body,
        shared.timeouts.idle,
        report,
        taken.clone(),
    )
    .await
    {
        Ok(c) => c,
        Err(refused) => {
            // Refused: neither the route's use nor a dlp grant's is spent.
            taken.refund();
            return dlp_refused(&ex, refused);
        }
    };
    // DLP let it go: now it spends the route's use (if requests that arrived meanwhile
    // spent the last one, it does not go).
    if let Err(ended) = crate::grant::spend(&shared.routes.uses, &loaded.policy, decision.route) {
        taken.refund();
        ex.log_blocked(ended.reason(), decision.route, 403);
        let why = ended.why(decision.route.unwrap_or_default(), &host);
        return ex.blocked(ended.reason(), &why, upgrade);
    }
    let verdict = checked.verdict;
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let body = Metered::new(checked.body, shared.timeouts.idle, up.clone(), None).boxed();
    let outgoing = Request::from_parts(parts, body);

    let client = if upgrade {
        &loaded.client_h1
    } else {
        &loaded.client
    };
    let result = tokio::time::timeout(shared.timeouts.first_byte, client.request(outgoing)).await;
    if let Some(stop) = verdict.get() {
        // DLP stopped the body mid-stream: the upstream saw it aborted. Its use stays
        // spent: the head and the first of the body did reach the upstream, and giving it
        // back would let a once route carry any number of such partial requests.
        return dlp_refused(&ex, crate::dlp::request::Refused::Dlp(stop.clone()));
    }
    let mut resp = match result {
        Err(_) => {
            ex.log_allowed(decision.route, 504);
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("bot-bottle egress: {host} sent no response in time\n"),
            );
        }
        Ok(Err(err)) => {
            let connect_err = find_connect_error(&err);
            return match connect_err {
                Some(e @ (ConnectError::Forbidden { .. } | ConnectError::Loop { .. })) => {
                    ex.log_blocked("destination-not-allowed", decision.route, 403);
                    ex.blocked("destination-not-allowed", &short_error(e), false)
                }
                other => {
                    ex.log_allowed(decision.route, 502);
                    let why = match other {
                        Some(e) => short_error(e),
                        None => format!("upstream {host} failed: {}", short_error(&err)),
                    };
                    plain(
                        StatusCode::BAD_GATEWAY,
                        &format!("bot-bottle egress: {why}\n"),
                    )
                }
            };
        }
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // an upstream may not switch protocols on a request that did not ask to
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("bot-bottle egress: {host} switched protocols unasked\n"),
            );
        };
        let judge = if shared.skip_dlp {
            None
        } else {
            if resp
                .headers()
                .contains_key(header::SEC_WEBSOCKET_EXTENSIONS)
            {
                // None was offered; the messages would be unreadable (compressed): the
                // upstream's connection is dropped with `resp`.
                ex.log_blocked("websocket-extension", decision.route, 502);
                let mut refused = plain(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "bot-bottle egress: {host} answered the WebSocket upgrade with an extension \
                         (Sec-WebSocket-Extensions) that was not offered; egress reads every \
                         message for secrets and cannot read compressed ones, so the connection \
                         is ended\n"
                    ),
                );
                refused
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return refused;
            }
            let Some(det) = loaded.dlp.clone() else {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "bot-bottle egress: outbound DLP is not loaded in this proxy\n",
                );
            };
            let (shared, method, host, path) =
                (shared.clone(), method.clone(), host.clone(), path.clone());
            let rule = decision.route;
            Some(crate::dlp::websocket::Judge {
                det,
                route: rule
                    .and_then(|i| loaded.dlp_routes.get(i))
                    .cloned()
                    .unwrap_or_default(),
                uses: shared.routes.uses.clone(),
                report: Box::new(move || {
                    dlp_report(&shared, &method, &host, &path, rule, UPGRADED)
                }),
            })
        };
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let idle = shared.timeouts.idle;
            let frame_refused = frame_refusal_log(&shared, &method, &host, &path, decision.route);
            let host = host.clone();
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    let Some(judge) = judge else {
                        let _ = crate::body::splice_with_idle(&mut c, &mut u, idle).await;
                        return;
                    };
                    let outbound = crate::dlp::websocket::Outbound::new(judge);
                    let relayed =
                        crate::dlp::websocket::relay(&mut c, &mut u, idle, outbound, &host).await;
                    if let Ok(Some(crate::dlp::websocket::Refusal::Protocol(why))) = relayed {
                        frame_refused(why);
                    }
                }
            });
        }
        ex.log_allowed(decision.route, 101);
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, empty());
    }

    let status = resp.status().as_u16();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let guard = (loaded.log == LogMode::All).then(|| {
        let shared = shared.clone();
        let time = crate::log::rfc3339(arrived);
        let rule = decision.route;
        let method = method.to_string();
        let down = down.clone();
        OnDrop::new(move || {
            shared.log.write(&LogEntry {
                time,
                method,
                host,
                path,
                decision: "allowed",
                reason: "allowed",
                rule,
                status,
                bytes_up: up.load(Ordering::Relaxed),
                bytes_down: down.load(Ordering::Relaxed),
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                dlp: None,
            })
        })
    });
    let body = Metered::new(body, shared.timeouts.idle, down, guard).boxed();
    Response::from_parts(parts, body)
}

/// The status a WebSocket connection's log lines give: what the client was sent, the `101`
/// of its upgrade. A message refused after it ends the connection with a close frame (`1008`
/// for DLP, `1002` for a frame a client may not send), not with an HTTP status.
const UPGRADED: u16 = 101;

/// The log lines of one request's DLP findings (at most `MAX_LOGGED_HITS`), written whatever
/// the log mode: a finding is always worth a line, and it never holds the secret. A blocked
/// finding's line gives `blocked_status`, what the client was sent: the `403` of a refused
/// request, or [`UPGRADED`] for a WebSocket message.
fn dlp_report(
    shared: &Arc<Shared>,
    method: &Method,
    host: &str,
    path: &str,
    rule: Option<usize>,
    blocked_status: u16,
) -> crate::dlp::Report {
    let shared = shared.clone();
    let method = method.to_string();
    let host = host.to_string();
    let path = path.to_string();
    let count = std::sync::atomic::AtomicUsize::new(0);
    Arc::new(move |finding: crate::dlp::DlpLog| {
        if count.fetch_add(1, Ordering::Relaxed) >= crate::dlp::MAX_LOGGED_HITS {
            return;
        }
        let decision = match finding.action {
            "blocked" => "blocked",
            _ => "allowed",
        };
        let time = now_rfc3339();
        // The path may be where the secret is: then neither record shows it.
        let shown_path = (finding.place != "request-line").then(|| path.clone());
        if let Some(sink) = &shared.dlp_hits {
            sink(crate::log::DlpHit {
                time: time.clone(),
                method: method.clone(),
                host: host.clone(),
                path: shown_path.clone(),
                rule: finding.rule.clone(),
                place: finding.place.clone(),
                action: finding.action,
            });
        }
        shared.log.write(&LogEntry {
            time,
            method: method.clone(),
            host: host.clone(),
            path: shown_path.unwrap_or_else(|| crate::log::WITHHELD_PATH.to_owned()),
            decision,
            reason: "dlp",
            rule,
            status: if decision == "blocked" {
                blocked_status
            } else {
                0
            },
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0.0,
            dlp: Some(finding),
        });
    })
}

/// The log line of a WebSocket connection ended for a frame a client may not send (not a
/// DLP finding: the frame was not read as a message).
fn frame_refusal_log(
    shared: &Arc<Shared>,
    method: &Method,
    host: &str,
    path: &str,
    rule: Option<usize>,
) -> impl FnOnce(&'static str) + Send + 'static {
    let (shared, method, host, path) = (
        shared.clone(),
        method.to_string(),
        host.to_string(),
        path.to_string(),
    );
    move |why| {
        tracing::debug!("websocket to {host} ended: {why}");
        if shared.routes.current().log == LogMode::Off {
            return;
        }
        shared.log.write(&LogEntry {
            time: now_rfc3339(),
            method,
            host,
            path,
            decision: "blocked",
            reason: "websocket-frame",
            rule,
            status: UPGRADED,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0.0,
            dlp: None,
        });
    }
}

/// The answer to a request DLP refused.
fn dlp_refused(ex: &Exchange<'_>, refused: crate::dlp::request::Refused) -> Response<RespBody> {
    match refused {
        crate::dlp::request::Refused::Dlp(stop) => {
            let host_in = if ex.host.contains(':') {
                format!("[{}]", ex.host)
            } else {
                ex.host.to_string()
            };
            let target = format!("{}://{host_in}:{}{}", ex.scheme.as_str(), ex.port, ex.path);
            crate::dlp::request::refusal(&stop, ex.method.as_str(), &target, ex.host)
        }
        crate::dlp::request::Refused::Body(why) => plain(
            StatusCode::BAD_REQUEST,
            &format!("bot-bottle egress: {why}\n"),
        ),
    }
}

fn find_connect_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

fn short_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}

pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Removes hop-by-hop headers (and any header the `Connection` header names) and every
/// `Proxy-*` header.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-") || k.as_str() == "keep-alive")
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}
