//! The proxy's one call into DLP for a request that a route allowed: the request line and
//! headers are checked (and rewritten in `redact` mode), the body is wrapped, and its first
//! window is read before the upstream is contacted.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use policy::DlpMode;

use super::body::{DlpBody, Verdict};
use super::decode::{Coding, Decoder};
use super::{DlpLog, Report, Stop, head, refusal_text};
use crate::body::{BoxError, Metered, ReqBody, RespBody};
use crate::routes::Loaded;

/// Why a request does not go.
#[derive(Debug)]
pub(crate) enum Refused {
    /// DLP stopped it.
    Dlp(Stop),
    /// The client's body failed or went quiet before the first window was read.
    Body(String),
}

/// A request DLP let go: its body (scanned as it streams) and where a later stop is kept.
pub(crate) struct Checked {
    pub body: ReqBody,
    pub verdict: Verdict,
}

/// [`check`], unless `skip` (`dangerously_skip_dlp`): then the request goes as it is.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn check_unless(
    skip: bool,
    host: &str,
    loaded: &Loaded,
    route: Option<usize>,
    parts: &mut http::request::Parts,
    injected: Option<&HeaderName>,
    body: Incoming,
    idle: Duration,
    report: Report,
    taken: Arc<crate::grant::Taken>,
) -> Result<Checked, Refused> {
    if skip {
        return Ok(Checked {
            body: body.map_err(BoxError::from).boxed(),
            verdict: Arc::new(OnceLock::new()),
        });
    }
    check(
        host, loaded, route, parts, injected, body, idle, report, taken,
    )
    .await
}

/// Checks the head of a request, rewrites what `redact` mode cuts out, and wraps its body.
/// `injected` is the credential header egress set itself (not scanned).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn check(
    host: &str,
    loaded: &Loaded,
    route: Option<usize>,
    parts: &mut http::request::Parts,
    injected: Option<&HeaderName>,
    body: Incoming,
    idle: Duration,
    report: Report,
    taken: Arc<crate::grant::Taken>,
) -> Result<Checked, Refused> {
    let mut rd = route
        .and_then(|i| loaded.dlp_routes.get(i))
        .cloned()
        .unwrap_or_default();
    rd.taken = Some(taken);
    // Built for every generation unless DLP is skipped, when this is never called; should
    // it be missing, nothing goes unjudged.
    let Some(det) = loaded.dlp.clone() else {
        return Err(Refused::Dlp(Stop::Unscannable {
            why: "outbound DLP is not loaded in this proxy".into(),
        }));
    };
    let verdict: Verdict = Arc::new(OnceLock::new());
    // A wildcard route lets the agent choose the host name: a secret in it cannot be cut
    // out (the name is where the request goes), so it is refused in every mode but `log`.
    // Names are case-insensitive (and arrive lower-cased): upper-case keys are looked for
    // in the upper-cased name too.
    let mut host_hits = det.find(host.as_bytes());
    if host_hits.is_empty() {
        host_hits = det.find(host.to_ascii_uppercase().as_bytes());
    }
    let host_hits: Vec<_> = host_hits
        .into_iter()
        .map(|mut h| {
            h.exact = false;
            h
        })
        .collect();
    if !host_hits.is_empty() {
        let mut name = host.as_bytes().to_vec();
        super::apply(&rd, host_hits, &mut name, "host", &report).map_err(Refused::Dlp)?;
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(new) = head::check(&det, &rd, target, &mut parts.headers, injected, &report)
        .map_err(Refused::Dlp)?
    {
        let mut up = parts.uri.clone().into_parts();
        up.path_and_query = Some(
            new.parse()
                .map_err(|_| Refused::Body("the redacted request target is not valid".into()))?,
        );
        parts.uri = Uri::from_parts(up)
            .map_err(|_| Refused::Body("the redacted request target is not valid".into()))?;
    }
    if body.is_end_stream() {
        return Ok(Checked {
            body: body.map_err(BoxError::from).boxed(),
            verdict,
        });
    }
    // Several `Content-Encoding` fields are several codings, as one field listing them is:
    // egress decodes one coding only.
    let mut codings = parts.headers.get_all(header::CONTENT_ENCODING).iter();
    let coding = match (codings.next(), codings.next()) {
        (first, None) => Coding::of(first.map(HeaderValue::as_bytes)),
        (Some(_), Some(_)) => Err("Content-Encoding given more than once".to_string()),
        (None, Some(_)) => Ok(None),
    };
    let coding = match coding {
        Ok(c) => c,
        Err(what) if rd.pass_unscannable => {
            report(DlpLog {
                rule: "unscannable".into(),
                place: "body".into(),
                action: "logged",
            });
            tracing::debug!("dlp: {what} passed unscanned (dangerously_dlp_pass_unscannable)");
            return Ok(Checked {
                body: body.map_err(BoxError::from).boxed(),
                verdict,
            });
        }
        Err(what) => {
            report(DlpLog {
                rule: "unscannable".into(),
                place: "body".into(),
                action: "blocked",
            });
            return Err(Refused::Dlp(Stop::Unscannable {
                why: format!("{what} is not one egress can decode"),
            }));
        }
    };
    let mut length_changes = rd.mode == DlpMode::Redact;
    if coding.is_some() {
        // forwarded decoded: what was scanned is what goes
        parts.headers.remove(header::CONTENT_ENCODING);
        length_changes = true;
    }
    if length_changes {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    // The client's body times out when it goes quiet (not when it is slow): the first
    // window may take a slow uploader a while.
    let body = Box::pin(Metered::new(body, idle, Arc::new(AtomicU64::new(0)), None));
    let mut dlp = DlpBody::new(
        body,
        det,
        rd,
        report.clone(),
        coding.map(Decoder::new),
        verdict.clone(),
    );
    if let Err(e) = dlp.prime().await {
        return Err(match verdict.get() {
            Some(stop) => Refused::Dlp(stop.clone()),
            None => Refused::Body(format!("the request body failed: {e}")),
        });
    }
    if let Some(n) = dlp.complete_len() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(Checked {
        body: dlp.boxed(),
        verdict,
    })
}

/// The answer to a request DLP stopped: 403, the rule in `x-bot-bottle-blocked`, and what
/// the agent can do in the body. The connection is closed after it (the body may be unread).
pub(crate) fn refusal(stop: &Stop, method: &str, target: &str, host: &str) -> Response<RespBody> {
    let text = refusal_text(stop, method, target, host);
    let mut resp = Response::new(
        http_body_util::Full::new(bytes::Bytes::from(text))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("dlp {}", stop.rule())) {
        h.insert("x-bot-bottle-blocked", v);
    }
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
