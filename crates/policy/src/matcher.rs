//! The request matcher: host lookups are hash lookups (exact host, then each parent
//! domain for wildcards, longest first), so the cost per request does not grow with the
//! number of routes for the common case.
//!
//! A request is judged as the upstream will read it: the path in its one certain spelling
//! (see [`crate::path`]), a method override header or `_method` query judged like the method,
//! an upgrade only where the route allows WebSockets.

use std::borrow::Cow;
use std::collections::HashMap;

use http::HeaderMap;

use crate::path::{PathProblem, normalize};
use crate::raw::PathMatchKind;
use crate::validate::{MatchSpec, RouteHost, ValidatedRoute, ValidatedRoutes, normalize_host};

/// Why a request was allowed or blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A route allows it.
    Allowed,
    /// No route for this host and port.
    HostNotAllowed,
    /// The route exists but no alternative allows this path.
    PathNotAllowed,
    /// The route allows the path but not this method.
    MethodNotAllowed,
    /// Path and method fit, but a required header is missing or different.
    HeaderNotAllowed,
    /// The path could mean another path to the upstream (see [`Decision::path_problem`]).
    AmbiguousPath,
    /// An `Upgrade` the route does not allow (only WebSocket, only with `websocket: true`).
    UpgradeNotAllowed,
}

impl Reason {
    /// Stable short name used in the `x-bot-bottle-blocked` header and the request log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::HostNotAllowed => "host-not-allowed",
            Reason::PathNotAllowed => "path-not-allowed",
            Reason::MethodNotAllowed => "method-not-allowed",
            Reason::HeaderNotAllowed => "header-not-allowed",
            Reason::AmbiguousPath => "ambiguous-path",
            Reason::UpgradeNotAllowed => "upgrade-not-allowed",
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go out.
    pub allowed: bool,
    /// Index (in `routes`) of the route for the host, when there is one.
    pub route: Option<usize>,
    /// Why.
    pub reason: Reason,
    /// With [`Reason::AmbiguousPath`]: what is ambiguous.
    pub path_problem: Option<PathProblem>,
}

/// One request, as [`Policy::judge`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Whether it arrived through a TLS tunnel (a route without a port means 443 then,
    /// 80 otherwise).
    pub tls: bool,
    /// Method.
    pub method: &'a str,
    /// Path, without the query.
    pub path: &'a str,
    /// Query, without the `?`.
    pub query: Option<&'a str>,
    /// Headers, as they will be forwarded (hop-by-hop headers already removed).
    pub headers: &'a HeaderMap,
    /// The `Upgrade` protocol of a real upgrade request (`Connection: upgrade`).
    pub upgrade: Option<&'a str>,
}

/// The answer for one request and the path to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged<'a> {
    /// The decision.
    pub decision: Decision,
    /// The path to forward: borrowed when it is the request's own.
    pub path: Cow<'a, str>,
}

/// Headers through which frameworks let a request claim another method.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Compiled routes, ready to answer [`Policy::decide`].
#[derive(Debug, Clone)]
pub struct Policy {
    routes: ValidatedRoutes,
    exact: HashMap<String, Vec<usize>>,
    wildcard: HashMap<String, Vec<usize>>,
}

impl Policy {
    /// Compiles validated routes.
    pub fn new(routes: ValidatedRoutes) -> Policy {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        // A route another one goes back to is reached only through that one.
        for (pos, r) in routes.routes.iter().enumerate() {
            if r.layer_of.is_some() {
                continue;
            }
            match &r.host {
                RouteHost::Exact(h) => exact.entry(h.clone()).or_default().push(pos),
                RouteHost::Wildcard(s) => wildcard.entry(s.clone()).or_default().push(pos),
            }
        }
        Policy {
            routes,
            exact,
            wildcard,
        }
    }

    /// The validated routes this policy was built from.
    pub fn routes(&self) -> &ValidatedRoutes {
        &self.routes
    }

    /// The route with this index (as in [`Decision::route`]).
    pub fn route(&self, index: usize) -> Option<&ValidatedRoute> {
        self.routes.routes.iter().find(|r| r.index == index)
    }

    /// The route that covers `host:port`, if any (exact host before wildcards, longer
    /// wildcard suffix before shorter). A route without a port covers 443 when `tls` (a
    /// `CONNECT`) and 80 otherwise (plain `http://`).
    pub fn route_for(&self, host: &str, port: u16, tls: bool) -> Option<&ValidatedRoute> {
        self.route_for_live(host, port, tls, &|_| false)
    }

    /// The route that covers `host:port` now: as [`Policy::route_for`], then, while the
    /// route's grant has `ended` and it has an `after_grant`, the route it went back to.
    /// A route whose grant ended with nothing to go back to is returned as it is (its
    /// owner refuses it, saying why).
    pub fn route_for_live(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        ended: &dyn Fn(&ValidatedRoute) -> bool,
    ) -> Option<&ValidatedRoute> {
        let mut route = self.route_for_top(host, port, tls)?;
        while ended(route) {
            match route.after_grant.and_then(|i| self.route(i)) {
                Some(lower) => route = lower,
                None => break,
            }
        }
        Some(route)
    }

    fn route_for_top(&self, host: &str, port: u16, tls: bool) -> Option<&ValidatedRoute> {
        let host = normalize_host(host);
        // An empty label (`a..b`, a leading dot, a second trailing dot) is no name a
        // resolver or a certificate reads the same way: no route serves it.
        if host.is_empty() || host.starts_with('.') || host.ends_with('.') || host.contains("..") {
            return None;
        }
        let default = if tls { 443 } else { 80 };
        let port_ok = |r: &&ValidatedRoute| r.port.unwrap_or(default) == port;
        let pick = |list: Option<&Vec<usize>>| {
            list.into_iter()
                .flatten()
                .filter_map(|i| self.routes.routes.get(*i))
                .find(port_ok)
        };
        if let Some(r) = pick(self.exact.get(&host)) {
            return Some(r);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        for (i, b) in host.bytes().enumerate() {
            if b == b'.'
                && i > 0
                && let Some(r) = pick(self.wildcard.get(&host[i..]))
            {
                return Some(r);
            }
        }
        None
    }

    /// Decides one request (a test and benchmark shorthand for [`Policy::judge`] through
    /// TLS, no query, no upgrade).
    pub fn decide(
        &self,
        host: &str,
        port: u16,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Decision {
        self.judge(
            host,
            port,
            &Ask {
                tls: true,
                method,
                path,
                query: None,
                headers,
                upgrade: None,
            },
        )
        .decision
    }

    /// Judges one request and says which path to forward.
    pub fn judge<'a>(&self, host: &str, port: u16, ask: &Ask<'a>) -> Judged<'a> {
        self.judge_live(host, port, ask, &|_| false)
    }

    /// Judges one request by the route that covers it now (see [`Policy::route_for_live`]:
    /// a route whose grant `ended` is judged as what it went back to).
    pub fn judge_live<'a>(
        &self,
        host: &str,
        port: u16,
        ask: &Ask<'a>,
        ended: &dyn Fn(&ValidatedRoute) -> bool,
    ) -> Judged<'a> {
        let decision = |route, reason, path_problem| Decision {
            allowed: reason == Reason::Allowed,
            route,
            reason,
            path_problem,
        };
        let Some(route) = self.route_for_live(host, port, ask.tls, ended) else {
            return Judged {
                decision: decision(None, Reason::HostNotAllowed, None),
                path: Cow::Borrowed(ask.path),
            };
        };
        let at = Some(route.index);
        // Only a path condition needs the path's one spelling; a route that judges no path
        // (or opted into raw paths) forwards the path as the client wrote it.
        let path = if route.has_path_conditions && !route.dangerously_raw_paths {
            match normalize(ask.path) {
                Ok(p) => p,
                Err(problem) => {
                    return Judged {
                        decision: decision(at, Reason::AmbiguousPath, Some(problem)),
                        path: Cow::Borrowed(ask.path),
                    };
                }
            }
        } else {
            Cow::Borrowed(ask.path)
        };
        if let Some(proto) = ask.upgrade
            && !(route.websocket && proto.trim().eq_ignore_ascii_case("websocket"))
        {
            return Judged {
                decision: decision(at, Reason::UpgradeNotAllowed, None),
                path,
            };
        }
        let reason = if route.matches.is_empty() {
            Reason::Allowed
        } else {
            // The reason of the alternative that got furthest is the most useful one.
            let mut best = Reason::PathNotAllowed;
            let mut found = false;
            for m in &route.matches {
                match check(m, ask, &path) {
                    Reason::Allowed => {
                        found = true;
                        break;
                    }
                    r if rank(r) > rank(best) => best = r,
                    _ => {}
                }
            }
            if found { Reason::Allowed } else { best }
        };
        Judged {
            decision: decision(at, reason, None),
            path,
        }
    }
}

fn rank(r: Reason) -> u8 {
    match r {
        Reason::HostNotAllowed
        | Reason::PathNotAllowed
        | Reason::AmbiguousPath
        | Reason::UpgradeNotAllowed => 0,
        Reason::MethodNotAllowed => 1,
        Reason::HeaderNotAllowed => 2,
        Reason::Allowed => 3,
    }
}

fn check(m: &MatchSpec, ask: &Ask<'_>, path: &str) -> Reason {
    if let Some(paths) = &m.paths {
        let ok = paths.iter().any(|(kind, value)| match kind {
            PathMatchKind::Exact => path == value,
            PathMatchKind::Prefix => path.starts_with(value.as_str()),
        });
        if !ok {
            return Reason::PathNotAllowed;
        }
    }
    if let Some(methods) = &m.methods {
        let allowed = |x: &str| methods.iter().any(|m| m.eq_ignore_ascii_case(x.trim()));
        // The method and every method the request claims through an override must be allowed.
        if !allowed(ask.method) || !overrides_allowed(ask, allowed) {
            return Reason::MethodNotAllowed;
        }
    }
    for (name, value) in &m.headers {
        let mut values = ask.headers.get_all(name).iter();
        let ok = matches!((values.next(), values.next()), (Some(v), None) if v == value);
        if !ok {
            return Reason::HeaderNotAllowed;
        }
    }
    Reason::Allowed
}

/// Whether each method override (headers, `_method` query parameter) names an allowed method.
/// A value that is not text, or a `_method` spelled with escapes, is never allowed.
fn overrides_allowed(ask: &Ask<'_>, allowed: impl Fn(&str) -> bool) -> bool {
    for name in METHOD_OVERRIDE_HEADERS {
        for v in ask.headers.get_all(name) {
            if !v.to_str().is_ok_and(&allowed) {
                return false;
            }
        }
    }
    let Some(query) = ask.query else {
        return true;
    };
    for pair in query.split(['&', ';']) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key_is_method = key.eq_ignore_ascii_case("_method")
            || (key.contains('%') && decodes_to_method_key(key));
        if key_is_method && (value.contains(['%', '+']) || !allowed(value)) {
            return false;
        }
    }
    true
}

fn decodes_to_method_key(key: &str) -> bool {
    let mut out = Vec::with_capacity(key.len());
    let b = key.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = key
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out.eq_ignore_ascii_case(b"_method")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_routes, validate};
    use pretty_assertions::assert_eq;
    use std::path::Path;

    fn policy(yaml: &str) -> Policy {
        Policy::new(validate(&parse_routes(yaml, Path::new("r")).unwrap()).unwrap())
    }

    fn reason(
        p: &Policy,
        host: &str,
        port: u16,
        method: &str,
        path: &str,
    ) -> (Option<usize>, &'static str) {
        let d = p.decide(host, port, method, path, &HeaderMap::new());
        assert_eq!(d.allowed, d.reason == Reason::Allowed);
        (d.route, d.reason.as_str())
    }

    fn ask<'a>(method: &'a str, path: &'a str, headers: &'a HeaderMap) -> Ask<'a> {
        Ask {
            tls: true,
            method,
            path,
            query: None,
            headers,
            upgrade: None,
        }
    }

    const YAML: &str = r#"routes:
  - host: api.example.com
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET, POST]
      - paths: [{type: exact, value: /health}]
  - host: "*.example.org"
  - host: "*.deep.example.org"
    port: 8443
  - host: files.example.net
    port: 8443
  - host: h.example
    matches:
      - headers: [{name: X-Env, value: prod}]
"#;

    #[test]
    fn host_port_and_wildcards() {
        let p = policy(YAML);
        assert_eq!(
            reason(&p, "API.example.com.", 443, "GET", "/v1/x"),
            (Some(0), "allowed")
        );
        assert_eq!(
            reason(&p, "api.example.com", 8443, "GET", "/v1/x"),
            (None, "host-not-allowed")
        );
        // a route without a port: 443 through CONNECT, 80 for plain http, not both
        assert_eq!(
            reason(&p, "a.example.org", 80, "GET", "/"),
            (None, "host-not-allowed")
        );
        let plain = |host: &str, port: u16| {
            let d = p
                .judge(
                    host,
                    port,
                    &Ask {
                        tls: false,
                        ..ask("GET", "/", &HeaderMap::new())
                    },
                )
                .decision;
            (d.route, d.reason.as_str())
        };
        assert_eq!(plain("a.example.org", 80), (Some(1), "allowed"));
        assert_eq!(plain("a.example.org", 443), (None, "host-not-allowed"));
        assert_eq!(plain("files.example.net", 8443), (Some(3), "allowed"));
        assert_eq!(
            reason(&p, "a.b.example.org", 443, "GET", "/"),
            (Some(1), "allowed")
        );
        assert_eq!(
            reason(&p, "example.org", 443, "GET", "/"),
            (None, "host-not-allowed")
        );
        assert_eq!(
            reason(&p, "x.deep.example.org", 8443, "GET", "/"),
            (Some(2), "allowed")
        );
        assert_eq!(
            reason(&p, "x.deep.example.org", 443, "GET", "/"),
            (Some(1), "allowed")
        );
        assert_eq!(
            reason(&p, "evilexample.org", 443, "GET", "/"),
            (None, "host-not-allowed")
        );
        assert_eq!(
            reason(&p, "files.example.net", 8443, "GET", "/"),
            (Some(3), "allowed")
        );
        assert_eq!(
            reason(&p, "files.example.net", 443, "GET", "/"),
            (None, "host-not-allowed")
        );
    }

    /// Found by the `egress_head` fuzz target: a CONNECT to `....example.org..` was served
    /// by `*.example.org` (its first label a run of dots). A host with an empty label is no
    /// name any resolver or certificate reads the same way; no route serves it.
    #[test]
    fn hosts_with_empty_labels_get_no_route() {
        let p = policy(YAML);
        for host in [
            "....example.org",
            "....example.org.",
            "a..example.org",
            ".a.example.org",
            "a.example.org..",
            "api.example.com..",
            ".api.example.com",
            ".",
            "",
        ] {
            assert_eq!(
                reason(&p, host, 443, "GET", "/v1/x"),
                (None, "host-not-allowed"),
                "{host:?}"
            );
        }
        assert_eq!(
            reason(&p, "a.example.org.", 443, "GET", "/"),
            (Some(1), "allowed")
        );
    }

    /// Found by the `egress_head` fuzz target (CI, 2026-12-06): the proxy normalises the
    /// target before it asks for a route and the matcher normalises again, so
    /// `http://a.wild.test..` lost one trailing dot in each pass and was served by
    /// `*.wild.test` while the proxy went on with `a.wild.test.`. Normalising is
    /// idempotent now, and a host refused as it came is refused after any number of passes.
    #[test]
    fn hosts_normalised_first_get_the_same_answer() {
        let p = policy(YAML);
        for host in [
            "a.example.org..",
            "a.example.org...",
            "API.example.com..",
            "[[::1]]",
            "[::1].",
            "....example.org",
            "a.example.org.",
            "api.example.com",
            "[::1]",
        ] {
            let once = normalize_host(host);
            assert_eq!(normalize_host(&once), once, "{host:?} normalised twice");
            assert_eq!(
                reason(&p, &once, 443, "GET", "/v1/x"),
                reason(&p, host, 443, "GET", "/v1/x"),
                "{host:?} normalised first"
            );
        }
    }

    #[test]
    fn paths_methods_headers() {
        let p = policy(YAML);
        assert_eq!(
            reason(&p, "api.example.com", 443, "DELETE", "/v1/x"),
            (Some(0), "method-not-allowed")
        );
        assert_eq!(
            reason(&p, "api.example.com", 443, "GET", "/v2/x"),
            (Some(0), "path-not-allowed")
        );
        assert_eq!(
            reason(&p, "api.example.com", 443, "DELETE", "/health"),
            (Some(0), "allowed")
        );
        assert_eq!(
            reason(&p, "api.example.com", 443, "GET", "/health/x"),
            (Some(0), "path-not-allowed")
        );
        assert_eq!(
            reason(&p, "api.example.com", 443, "GET", "/v1/../admin"),
            (Some(0), "path-not-allowed")
        );
        assert_eq!(
            reason(&p, "api.example.com", 443, "GET", "/v1/%2e%2e/admin"),
            (Some(0), "path-not-allowed")
        );
        assert_eq!(
            reason(&p, "h.example", 443, "GET", "/"),
            (Some(4), "header-not-allowed")
        );
        let mut h = HeaderMap::new();
        h.insert("x-env", http::HeaderValue::from_static("prod"));
        assert!(p.decide("h.example", 443, "GET", "/", &h).allowed);
        h.append("x-env", http::HeaderValue::from_static("dev"));
        assert!(!p.decide("h.example", 443, "GET", "/", &h).allowed);
    }

    #[test]
    fn paths_are_judged_and_forwarded_in_their_one_spelling() {
        let p = policy(YAML);
        let none = HeaderMap::new();
        let judged = |path: &str| {
            let j = p.judge("api.example.com", 443, &ask("GET", path, &none));
            (
                j.decision.reason.as_str(),
                j.decision.path_problem,
                j.path.into_owned(),
            )
        };
        assert_eq!(judged("/v1/a/../b"), ("allowed", None, "/v1/b".to_string()));
        assert_eq!(
            judged("/v1/%2e%2e/admin"),
            ("path-not-allowed", None, "/admin".to_string())
        );
        assert_eq!(
            judged("/v1/..;/admin"),
            (
                "ambiguous-path",
                Some(PathProblem::DotSegmentWithParameters),
                "/v1/..;/admin".to_string()
            )
        );
        // a route without path conditions forwards the path as written
        let j = p.judge("x.example.org", 443, &ask("GET", "/a/%2f/..;/b", &none));
        assert_eq!(
            (j.decision.allowed, j.path.as_ref()),
            (true, "/a/%2f/..;/b")
        );
        // dangerously_raw_paths: judged and forwarded literally
        let raw = policy(
            "routes:\n  - host: raw.example\n    dangerously_raw_paths: true\n    matches:\n      - paths: [{type: prefix, value: /v1/}]\n",
        );
        let j = raw.judge("raw.example", 443, &ask("GET", "/v1/..;/admin", &none));
        assert_eq!(
            (j.decision.allowed, j.path.as_ref()),
            (true, "/v1/..;/admin")
        );
        let j = raw.judge("raw.example", 443, &ask("GET", "/admin", &none));
        assert_eq!(j.decision.reason, Reason::PathNotAllowed);
    }

    #[test]
    fn method_overrides_are_judged_like_the_method() {
        let p = policy(YAML);
        let judge = |method: &str, headers: &[(&str, &str)], query: Option<&str>| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            p.judge(
                "api.example.com",
                443,
                &Ask {
                    query,
                    ..ask(method, "/v1/x", &h)
                },
            )
            .decision
            .reason
            .as_str()
        };
        assert_eq!(judge("POST", &[], None), "allowed");
        assert_eq!(
            judge("POST", &[("x-http-method-override", "get")], None),
            "allowed"
        );
        for name in METHOD_OVERRIDE_HEADERS {
            assert_eq!(
                judge("POST", &[(name, "DELETE")], None),
                "method-not-allowed",
                "{name}"
            );
        }
        assert_eq!(
            judge(
                "POST",
                &[("x-http-method", "GET"), ("x-http-method", "DELETE")],
                None
            ),
            "method-not-allowed"
        );
        assert_eq!(
            judge("POST", &[], Some("a=1&_method=DELETE")),
            "method-not-allowed"
        );
        assert_eq!(
            judge("POST", &[], Some("_METHOD=delete")),
            "method-not-allowed"
        );
        assert_eq!(
            judge("POST", &[], Some("%5fmethod=DELETE")),
            "method-not-allowed"
        );
        assert_eq!(
            judge("POST", &[], Some("_method=%47ET")),
            "method-not-allowed"
        );
        assert_eq!(judge("POST", &[], Some("_method=GET&x=1")), "allowed");
        // no method condition: nothing to override
        let mut h = HeaderMap::new();
        h.insert(
            "x-http-method-override",
            http::HeaderValue::from_static("DELETE"),
        );
        assert!(p.decide("x.example.org", 443, "GET", "/", &h).allowed);
    }

    #[test]
    fn only_websocket_upgrades_and_only_where_the_route_allows_them() {
        let p = policy(
            "routes:\n  - host: ws.example\n    websocket: true\n    matches:\n      - paths: [{type: prefix, value: /ws}]\n  - host: plain.example\n",
        );
        let none = HeaderMap::new();
        let up = |host: &str, path: &str, proto: &str| {
            p.judge(
                host,
                443,
                &Ask {
                    upgrade: Some(proto),
                    ..ask("GET", path, &none)
                },
            )
            .decision
            .reason
            .as_str()
        };
        assert_eq!(up("ws.example", "/ws", "websocket"), "allowed");
        assert_eq!(up("ws.example", "/ws", "WebSocket"), "allowed");
        assert_eq!(up("ws.example", "/other", "websocket"), "path-not-allowed");
        assert_eq!(up("ws.example", "/ws", "h2c"), "upgrade-not-allowed");
        assert_eq!(
            up("plain.example", "/ws", "websocket"),
            "upgrade-not-allowed"
        );
    }
}
