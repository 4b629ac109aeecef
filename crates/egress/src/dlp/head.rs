//! The request line and headers: each scanned as a `name: value` line (so rules that key on
//! the name see it), the header egress injects itself left out. In `redact` mode the secret
//! in a value or in the path and query is replaced by the marker.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Detector, Report, RouteDlp, Stop, apply};

/// Scans and, in `redact` mode, rewrites the request target (`/path?query`) and the headers
/// (all but `skip`). Returns the rewritten target when it changed.
pub(crate) fn check(
    det: &Detector,
    route: &RouteDlp,
    target: &str,
    headers: &mut HeaderMap,
    skip: Option<&HeaderName>,
    report: &Report,
) -> Result<Option<String>, Stop> {
    // One scan of the whole head first: almost every request has nothing in it, and one
    // scanner call costs less than one per header. Only with a finding is each piece
    // scanned alone, to act on it where it is.
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(target.as_bytes());
    head.push(b'\n');
    for (name, value) in headers.iter() {
        if Some(name) == skip {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.push(b'\n');
    }
    if det.find(&head).is_empty() {
        return Ok(None);
    }
    let mut new_target = None;
    let hits = det.find(target.as_bytes());
    if !hits.is_empty() {
        let mut data = target.as_bytes().to_vec();
        apply(route, hits, &mut data, "request-line", report)?;
        if data != target.as_bytes() {
            new_target = Some(String::from_utf8_lossy(&data).into_owned());
        }
    }
    check_headers(det, route, headers, skip, "header", report)?;
    Ok(new_target)
}

/// Scans (and in `redact` mode rewrites) header fields; `kind` is `header` or `trailer`.
pub(crate) fn check_headers(
    det: &Detector,
    route: &RouteDlp,
    headers: &mut HeaderMap,
    skip: Option<&HeaderName>,
    kind: &str,
    report: &Report,
) -> Result<(), Stop> {
    let mut changes: Vec<(HeaderName, usize, HeaderValue)> = Vec::new();
    let mut line = Vec::new();
    for name in headers.keys() {
        if Some(name) == skip {
            continue;
        }
        for (i, value) in headers.get_all(name).iter().enumerate() {
            line.clear();
            line.extend_from_slice(name.as_str().as_bytes());
            line.extend_from_slice(b": ");
            let prefix = line.len();
            line.extend_from_slice(value.as_bytes());
            let hits = det.find(&line);
            if hits.is_empty() {
                continue;
            }
            // a secret reaching into the name is cut from the value's start
            let hits = hits
                .into_iter()
                .map(|mut h| {
                    h.span.start = h.span.start.max(prefix);
                    h.span.end = h.span.end.max(prefix);
                    h
                })
                .collect();
            let place = format!("{kind} {name}");
            apply(route, hits, &mut line, &place, report)?;
            if line[prefix..] != *value.as_bytes() {
                let mut v = HeaderValue::from_bytes(&line[prefix..]).map_err(|_| Stop::Secret {
                    rule: "redaction".into(),
                    place: "headers",
                })?;
                v.set_sensitive(value.is_sensitive());
                changes.push((name.clone(), i, v));
            }
        }
    }
    for (name, index, value) in changes {
        let values: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .enumerate()
            .map(|(i, v)| if i == index { value.clone() } else { v.clone() })
            .collect();
        headers.remove(&name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use policy::DlpMode;
    use pretty_assertions::assert_eq;

    use super::super::{DlpLog, MARKER, scanner};
    use super::*;

    const AWS: &str = "AKIAZ3MSJV4WWNKWW5FG";

    #[test]
    fn redacts_the_query_and_a_header_but_not_the_injected_one() {
        let det = Detector::new(scanner().unwrap(), &["tok-0123456789abcdef"]).unwrap();
        let route = RouteDlp {
            mode: DlpMode::Redact,
            ..RouteDlp::default()
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        let l = logs.clone();
        let report: Report = Arc::new(move |e| l.lock().unwrap().push(e));
        let mut headers = HeaderMap::new();
        headers.insert("x-note", HeaderValue::from_static("tok-0123456789abcdef"));
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer tok-0123456789abcdef"),
        );
        let target = format!("/v1/x?k={AWS}&b=1");
        let out = check(
            &det,
            &route,
            &target,
            &mut headers,
            Some(&http::header::AUTHORIZATION),
            &report,
        )
        .unwrap();
        assert_eq!(out, Some(format!("/v1/x?k={MARKER}&b=1")));
        assert_eq!(headers["x-note"], MARKER);
        assert_eq!(headers["authorization"], "Bearer tok-0123456789abcdef");
        assert_eq!(
            logs.lock().unwrap().clone(),
            vec![
                DlpLog {
                    rule: "aws-access-key-id".into(),
                    place: "request-line".into(),
                    action: "redacted"
                },
                DlpLog {
                    rule: "credential".into(),
                    place: "header x-note".into(),
                    action: "redacted"
                },
            ]
        );
    }

    /// Headers the agents' own clients send on every model call: their names hold words such
    /// as `api`, `key` or `access` and their values are versions and nonces, which the
    /// entropy-gated generic rule of the file scanner would take for secrets (the Gemini CLI
    /// was blocked on its first request by it).
    #[test]
    fn the_headers_agent_clients_send_on_every_call_are_not_secrets() {
        let det = Detector::new(scanner().unwrap(), &["tok-0123456789abcdef"]).unwrap();
        let route = RouteDlp::default();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let l = logs.clone();
        let report: Report = Arc::new(move |e| l.lock().unwrap().push(e));
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "x-goog-api-client",
                "google-genai-sdk/1.30.0 gl-node/v20.20.2",
            ),
            (
                "user-agent",
                "GeminiCLI/0.21.0/gemini-3.1-pro-preview (linux; x64) google-api-nodejs-client/9.15.1",
            ),
            ("x-stainless-package-version", "0.52.0"),
            ("x-stainless-runtime-version", "v20.20.2"),
            ("anthropic-version", "2023-06-01"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "access-control-request-headers",
                "authorization,content-type,x-goog-api-key",
            ),
            (
                "x-goog-api-key",
                "bot-bottle-placeholder-the-real-token-is-injected-by-egress",
            ),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let out = check(
            &det,
            &route,
            "/v1beta/models/gemini-3.5-flash-lite:generateContent?alt=sse",
            &mut headers,
            None,
            &report,
        );
        assert_eq!(out, Ok(None));
        assert_eq!(logs.lock().unwrap().clone(), vec![]);
    }
}
