//! The request matcher: host lookups are hash lookups (exact host, then each parent
//! domain for wildcards, longest first), so the cost per request does not grow with the
//! number of routes for the common case.

use std::collections::HashMap;

use http::HeaderMap;

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
}

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
        for (pos, r) in routes.routes.iter().enumerate() {
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
    /// wildcard suffix before shorter).
    pub fn route_for(&self, host: &str, port: u16) -> Option<&ValidatedRoute> {
        let host = normalize_host(host);
        let port_ok = |r: &&ValidatedRoute| match r.port {
            Some(p) => p == port,
            None => port == 443 || port == 80,
        };
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

    /// Decides one request. `path` is the request path without the query.
    pub fn decide(
        &self,
        host: &str,
        port: u16,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Decision {
        let Some(route) = self.route_for(host, port) else {
            return Decision {
                allowed: false,
                route: None,
                reason: Reason::HostNotAllowed,
            };
        };
        let reason = if route.matches.is_empty() {
            Reason::Allowed
        } else {
            // The reason of the alternative that got furthest is the most useful one.
            let mut best = Reason::PathNotAllowed;
            let mut found = false;
            for m in &route.matches {
                match check(m, method, path, headers) {
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
        Decision {
            allowed: reason == Reason::Allowed,
            route: Some(route.index),
            reason,
        }
    }
}

fn rank(r: Reason) -> u8 {
    match r {
        Reason::HostNotAllowed | Reason::PathNotAllowed => 0,
        Reason::MethodNotAllowed => 1,
        Reason::HeaderNotAllowed => 2,
        Reason::Allowed => 3,
    }
}

fn check(m: &MatchSpec, method: &str, path: &str, headers: &HeaderMap) -> Reason {
    if let Some(paths) = &m.paths {
        if has_dot_segment(path) {
            return Reason::PathNotAllowed;
        }
        let ok = paths.iter().any(|(kind, value)| match kind {
            PathMatchKind::Exact => path == value,
            PathMatchKind::Prefix => path.starts_with(value.as_str()),
        });
        if !ok {
            return Reason::PathNotAllowed;
        }
    }
    if let Some(methods) = &m.methods
        && !methods.iter().any(|x| x == method)
    {
        return Reason::MethodNotAllowed;
    }
    for (name, value) in &m.headers {
        let mut values = headers.get_all(name).iter();
        let ok = matches!((values.next(), values.next()), (Some(v), None) if v == value);
        if !ok {
            return Reason::HeaderNotAllowed;
        }
    }
    Reason::Allowed
}

/// Paths that an upstream may normalise into something else (`/v1/../admin`,
/// `%2e%2e`, encoded slashes, backslashes) never satisfy a path condition.
fn has_dot_segment(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
    {
        return true;
    }
    path.split('/').any(|seg| seg == "." || seg == "..")
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
        assert_eq!(
            reason(&p, "a.example.org", 80, "GET", "/"),
            (Some(1), "allowed")
        );
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
}
