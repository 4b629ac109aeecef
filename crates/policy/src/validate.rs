//! Validation of a raw [`EgressConfig`]: every problem is reported (not just the first),
//! each naming the route by index and host, so a user fixes a file in one pass.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use http::{HeaderName, HeaderValue};

use crate::raw::{EgressConfig, PathMatchKind, Route};

/// One problem found in a routes configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The host is not a valid host name, IP address or leftmost `*.` wildcard.
    #[error("{at}: host {host:?} is invalid: {why}")]
    InvalidHost {
        /// Which route.
        at: RouteAt,
        /// The host as written.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Port 0 was given.
    #[error("{at}: port 0 is invalid; use 1-65535 or leave it out for 443/80")]
    InvalidPort {
        /// Which route.
        at: RouteAt,
    },
    /// Two routes for the same host and port.
    #[error(
        "{at}: duplicate host {host:?} (already routes[{first}]); merge the two routes into one"
    )]
    DuplicateHost {
        /// The later route.
        at: RouteAt,
        /// The host.
        host: String,
        /// Index of the first route with it.
        first: usize,
    },
    /// A method is not an upper-case HTTP method token.
    #[error("{at}: method {method:?} is invalid; write methods in upper case, e.g. GET")]
    InvalidMethod {
        /// Which route.
        at: RouteAt,
        /// The method as written.
        method: String,
    },
    /// A path does not start with `/` or contains whitespace.
    #[error("{at}: path {path:?} is invalid; paths start with / and contain no spaces")]
    InvalidPath {
        /// Which route.
        at: RouteAt,
        /// The path as written.
        path: String,
    },
    /// A header condition has an invalid name or value.
    #[error("{at}: header {name:?} is invalid: {why}")]
    InvalidHeader {
        /// Which route.
        at: RouteAt,
        /// The header name as written.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An empty list where a list would then match nothing.
    #[error(
        "{at}: `{field}` is an empty list, which would match nothing; remove it or add entries"
    )]
    EmptyList {
        /// Which route.
        at: RouteAt,
        /// The field.
        field: &'static str,
    },
    /// `auth_scheme`, `auth_header` and `token_env` do not fit together.
    #[error("{at}: {why}")]
    Credential {
        /// Which route.
        at: RouteAt,
        /// What is wrong.
        why: String,
    },
    /// `connect_to` is not `ADDR:PORT`.
    #[error("{at}: connect_to {value:?} is invalid; write ADDR:PORT, e.g. 127.0.0.1:8443")]
    InvalidConnectTo {
        /// Which route.
        at: RouteAt,
        /// The value as written.
        value: String,
    },
    /// `expires` is not an RFC 3339 time.
    #[error(
        "{at}: expires {value:?} is not a time; write RFC 3339 in UTC, e.g. 2026-05-25T12:10:00Z, or remove it"
    )]
    InvalidExpires {
        /// Which route.
        at: RouteAt,
        /// The value as written.
        value: String,
    },
    /// `uses: 0`.
    #[error("{at}: uses 0 would allow nothing; give 1 or more, or remove the route")]
    ZeroUses {
        /// Which route.
        at: RouteAt,
    },
    /// An `after_grant` that cannot be what the route goes back to.
    #[error("{at}: after_grant {why}")]
    AfterGrant {
        /// Which route.
        at: RouteAt,
        /// What is wrong, and the fix.
        why: &'static str,
    },
    /// An `upstream_ca` entry is empty.
    #[error("upstream_ca[{index}] is empty; give the path of a PEM file")]
    EmptyUpstreamCa {
        /// Index in the list.
        index: usize,
    },
}

/// Where in the configuration a problem is: `routes[INDEX] (HOST)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAt {
    /// Index of the route in `routes`.
    pub index: usize,
    /// The route's host as written.
    pub host: String,
}

impl fmt::Display for RouteAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "routes[{}] ({})", self.index, self.host)
    }
}

/// The host part of a validated route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteHost {
    /// Exactly this host (lower case, no trailing dot, IPv6 without brackets).
    Exact(String),
    /// Any subdomain of this suffix (the part after `*.`), at any depth; not the suffix itself.
    Wildcard(String),
}

impl RouteHost {
    /// Whether the (normalised) host is covered.
    pub fn covers(&self, host: &str) -> bool {
        match self {
            RouteHost::Exact(h) => h == host,
            RouteHost::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }
}

/// A pinned destination: where a host is really reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectTarget {
    /// Address or host name to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
}

impl ConnectTarget {
    /// Parses `ADDR:PORT` (`[v6]:PORT` for IPv6).
    pub fn parse(value: &str) -> Option<ConnectTarget> {
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (h, p) = rest.split_once("]:")?;
            h.parse::<std::net::Ipv6Addr>().ok()?;
            (h.to_string(), p)
        } else {
            let (h, p) = value.rsplit_once(':')?;
            if h.contains(':') || h.is_empty() {
                return None;
            }
            if h.parse::<IpAddr>().is_err() && !valid_dns_name(h) {
                return None;
            }
            (h.to_ascii_lowercase(), p)
        };
        let port = p_port(port)?;
        Some(ConnectTarget { host, port })
    }
}

fn p_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// How a token is attached to requests of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    /// Header that carries it (lower case), `authorization` by default.
    pub header: HeaderName,
    /// Scheme before the token (`Bearer`); `None` or empty means the bare token.
    pub scheme: Option<String>,
    /// Environment variable holding the token.
    pub token_env: String,
}

/// One compiled `matches` alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchSpec {
    /// Path conditions (any one); `None` means any path.
    pub paths: Option<Vec<(PathMatchKind, String)>>,
    /// Methods (any one); `None` means any method.
    pub methods: Option<Vec<String>>,
    /// Header conditions (all must hold), names lower case.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRoute {
    /// Index in the configuration's `routes`.
    pub index: usize,
    /// The host as written (for messages and introspection).
    pub host_text: String,
    /// The host condition.
    pub host: RouteHost,
    /// Port; `None` means 443 through `CONNECT` and 80 for plain `http://`.
    pub port: Option<u16>,
    /// Pinned destination.
    pub connect_to: Option<ConnectTarget>,
    /// Credential to inject.
    pub credential: Option<CredentialSpec>,
    /// Alternatives; empty means the whole host.
    pub matches: Vec<MatchSpec>,
    /// Whether any alternative has a path condition (then paths are normalised or refused).
    pub has_path_conditions: bool,
    /// WebSocket upgrades allowed.
    pub websocket: bool,
    /// Paths judged and forwarded as written.
    pub dangerously_raw_paths: bool,
    /// When the route stops allowing anything (an approval for a duration).
    pub expires: Option<time::OffsetDateTime>,
    /// How many requests it allows in all (an approval once).
    pub uses: Option<u32>,
    /// The proposal whose time-limited approval added it.
    pub grant: Option<String>,
    /// The index (in [`ValidatedRoutes::routes`]) of the route it goes back to when its
    /// grant ends (`after_grant`); `None`: it allows nothing then.
    pub after_grant: Option<usize>,
    /// For a route that is another route's `after_grant`: the index of the route it lies
    /// under in the configuration's `routes` (it is judged only once that one's grant
    /// ended). `None` for the configuration's own routes.
    pub layer_of: Option<usize>,
    /// What egress does with a secret in a request on this route.
    pub dlp: crate::raw::DlpMode,
    /// Rule ids allowed to leave on this route.
    pub dlp_allow: Vec<String>,
    /// Rule ids allowed to leave on this route until their grant ends.
    pub dlp_allow_grants: Vec<DlpGrant>,
    /// Bodies that cannot be scanned are forwarded instead of refused.
    pub dangerously_dlp_pass_unscannable: bool,
}

/// A rule let through until its grant ends (`dlp_allow_grants`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlpGrant {
    /// The rule id.
    pub rule: String,
    /// When it ends.
    pub expires: Option<time::OffsetDateTime>,
    /// How many requests it lets the rule through in.
    pub uses: Option<u32>,
    /// The proposal that granted it.
    pub grant: Option<String>,
}

/// A configuration that passed validation, ready for [`crate::Policy::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRoutes {
    /// The configuration as given (never holds a token, only variable names).
    pub config: EgressConfig,
    /// The routes, in order, then the routes they go back to when their grants end (each
    /// with [`ValidatedRoute::layer_of`] set; their `index` counts on after the last route).
    pub routes: Vec<ValidatedRoute>,
}

/// Validates a configuration; returns every problem found.
pub fn validate(config: &EgressConfig) -> Result<ValidatedRoutes, Vec<PolicyError>> {
    let mut errors = Vec::new();
    for (index, ca) in config.upstream_ca.iter().flatten().enumerate() {
        if ca.trim().is_empty() {
            errors.push(PolicyError::EmptyUpstreamCa { index });
        }
    }
    let mut routes = Vec::new();
    // (host, port) -> first route index; port None is stored as 443 and 80.
    let mut seen: HashMap<(RouteHost, u16), usize> = HashMap::new();
    for (index, route) in config.routes.iter().flatten().enumerate() {
        let at = RouteAt {
            index,
            host: route.host.clone(),
        };
        let before = errors.len();
        let validated = validate_route(index, route, &at, &mut errors);
        if errors.len() != before {
            continue;
        }
        let Some(validated) = validated else { continue };
        let ports: Vec<u16> = match validated.port {
            Some(p) => vec![p],
            None => vec![443, 80],
        };
        let mut duplicate = None;
        for p in &ports {
            if let Some(first) = seen.get(&(validated.host.clone(), *p)) {
                duplicate = Some(*first);
                break;
            }
        }
        if let Some(first) = duplicate {
            errors.push(PolicyError::DuplicateHost {
                at,
                host: route.host.clone(),
                first,
            });
            continue;
        }
        for p in ports {
            seen.insert((validated.host.clone(), p), index);
        }
        routes.push(validated);
    }
    validate_layers(config, &mut routes, &mut errors);
    if errors.is_empty() {
        Ok(ValidatedRoutes {
            config: config.clone(),
            routes,
        })
    } else {
        Err(errors)
    }
}

/// Validates each route's `after_grant` chain and appends its links to `routes` (indexes
/// counting on after the configuration's routes), each linked from the route above it.
fn validate_layers(
    config: &EgressConfig,
    routes: &mut Vec<ValidatedRoute>,
    errors: &mut Vec<PolicyError>,
) {
    let mut next = config.routes.as_ref().map_or(0, Vec::len);
    for (index, route) in config.routes.iter().flatten().enumerate() {
        let mut above = routes.iter().position(|r| r.index == index);
        let mut upper = route;
        while let Some(lower) = upper.after_grant.as_deref() {
            let at = RouteAt {
                index,
                host: format!("{} after its grant", route.host),
            };
            if upper.expires.is_none() && upper.uses.is_none() {
                errors.push(PolicyError::AfterGrant {
                    at: at.clone(),
                    why: "is only for a route approved once or for a while (with `uses` or `expires`); remove it",
                });
            }
            if !lower.host.eq_ignore_ascii_case(&upper.host) || lower.port != upper.port {
                errors.push(PolicyError::AfterGrant {
                    at: at.clone(),
                    why: "names another host or port than its route; a route can only go back to itself",
                });
            }
            let before = errors.len();
            let validated = validate_route(next, lower, &at, errors);
            let layer = match (validated, errors.len() == before) {
                (Some(mut v), true) => {
                    v.layer_of = Some(index);
                    v
                }
                _ => break,
            };
            if let Some(i) = above {
                routes[i].after_grant = Some(next);
            }
            routes.push(layer);
            above = Some(routes.len() - 1);
            next += 1;
            upper = lower;
        }
    }
}

fn validate_route(
    index: usize,
    route: &Route,
    at: &RouteAt,
    errors: &mut Vec<PolicyError>,
) -> Option<ValidatedRoute> {
    let host = match parse_route_host(&route.host) {
        Ok(h) => Some(h),
        Err(why) => {
            errors.push(PolicyError::InvalidHost {
                at: at.clone(),
                host: route.host.clone(),
                why,
            });
            None
        }
    };
    if route.port == Some(0) {
        errors.push(PolicyError::InvalidPort { at: at.clone() });
    }
    let connect_to = match &route.connect_to {
        None => None,
        Some(value) => match ConnectTarget::parse(value) {
            Some(t) => Some(t),
            None => {
                errors.push(PolicyError::InvalidConnectTo {
                    at: at.clone(),
                    value: value.clone(),
                });
                None
            }
        },
    };
    if connect_to.is_some() && matches!(host, Some(RouteHost::Wildcard(_))) {
        errors.push(PolicyError::InvalidConnectTo {
            at: at.clone(),
            value: route.connect_to.clone().unwrap_or_default(),
        });
    }
    let credential = validate_credential(route, at, errors);
    let expires = route.expires.as_ref().and_then(|value| {
        let t =
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok();
        if t.is_none() {
            errors.push(PolicyError::InvalidExpires {
                at: at.clone(),
                value: value.clone(),
            });
        }
        t
    });
    if route.uses == Some(0) {
        errors.push(PolicyError::ZeroUses { at: at.clone() });
    }
    let mut dlp_allow_grants = Vec::new();
    for g in route.dlp_allow_grants.iter().flatten() {
        let expires = g.expires.as_ref().and_then(|value| {
            let t =
                time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                    .ok();
            if t.is_none() {
                errors.push(PolicyError::InvalidExpires {
                    at: at.clone(),
                    value: value.clone(),
                });
            }
            t
        });
        if g.uses == Some(0) {
            errors.push(PolicyError::ZeroUses { at: at.clone() });
        }
        dlp_allow_grants.push(DlpGrant {
            rule: g.rule.clone(),
            expires,
            uses: g.uses,
            grant: g.grant.clone(),
        });
    }
    let mut matches = Vec::new();
    if let Some(list) = &route.matches {
        if list.is_empty() {
            errors.push(PolicyError::EmptyList {
                at: at.clone(),
                field: "matches",
            });
        }
        for m in list {
            let paths = m.paths.as_ref().map(|paths| {
                if paths.is_empty() {
                    errors.push(PolicyError::EmptyList {
                        at: at.clone(),
                        field: "paths",
                    });
                }
                paths
                    .iter()
                    .filter_map(|p| {
                        if !p.value.starts_with('/')
                            || p.value.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            errors.push(PolicyError::InvalidPath {
                                at: at.clone(),
                                path: p.value.clone(),
                            });
                            None
                        } else {
                            Some((p.kind, p.value.clone()))
                        }
                    })
                    .collect::<Vec<_>>()
            });
            let methods = m.methods.as_ref().map(|methods| {
                if methods.is_empty() {
                    errors.push(PolicyError::EmptyList {
                        at: at.clone(),
                        field: "methods",
                    });
                }
                methods
                    .iter()
                    .filter_map(|method| {
                        let ok = !method.is_empty()
                            && method
                                .bytes()
                                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
                        if ok {
                            Some(method.clone())
                        } else {
                            errors.push(PolicyError::InvalidMethod {
                                at: at.clone(),
                                method: method.clone(),
                            });
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            });
            let mut headers = Vec::new();
            for h in m.headers.iter().flatten() {
                let name = match HeaderName::from_bytes(h.name.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        errors.push(PolicyError::InvalidHeader {
                            at: at.clone(),
                            name: h.name.clone(),
                            why: "not a valid header name",
                        });
                        continue;
                    }
                };
                match HeaderValue::from_str(&h.value) {
                    Ok(v) => headers.push((name, v)),
                    Err(_) => errors.push(PolicyError::InvalidHeader {
                        at: at.clone(),
                        name: h.name.clone(),
                        why: "value has characters not allowed in a header",
                    }),
                }
            }
            matches.push(MatchSpec {
                paths,
                methods,
                headers,
            });
        }
    }
    Some(ValidatedRoute {
        index,
        host_text: route.host.clone(),
        host: host?,
        port: route.port,
        connect_to,
        credential,
        has_path_conditions: matches.iter().any(|m| m.paths.is_some()),
        matches,
        websocket: route.websocket.unwrap_or(false),
        dangerously_raw_paths: route.dangerously_raw_paths.unwrap_or(false),
        expires,
        uses: route.uses,
        grant: route.grant.clone(),
        after_grant: None,
        layer_of: None,
        dlp: route.dlp.unwrap_or_default(),
        dlp_allow: route.dlp_allow.clone().unwrap_or_default(),
        dlp_allow_grants,
        dangerously_dlp_pass_unscannable: route.dangerously_dlp_pass_unscannable.unwrap_or(false),
    })
}

fn validate_credential(
    route: &Route,
    at: &RouteAt,
    errors: &mut Vec<PolicyError>,
) -> Option<CredentialSpec> {
    let mut fail = |why: String| {
        errors.push(PolicyError::Credential {
            at: at.clone(),
            why,
        });
        None
    };
    match (&route.auth_scheme, &route.token_env, &route.auth_header) {
        (None, None, None) => None,
        (_, None, _) => fail(
            "auth_scheme/auth_header need token_env naming the variable that holds the token"
                .into(),
        ),
        (None, Some(_), None) => {
            fail("token_env needs auth_scheme (e.g. Bearer) or auth_header (e.g. x-api-key)".into())
        }
        (scheme, Some(env), header) => {
            if env.is_empty()
                || env.starts_with(|c: char| c.is_ascii_digit())
                || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return fail(format!(
                    "token_env {env:?} is not a valid environment variable name"
                ));
            }
            let name = match header {
                None => http::header::AUTHORIZATION,
                Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => return fail(format!("auth_header {h:?} is not a valid header name")),
                },
            };
            if let Some(s) = scheme {
                if s.is_empty() && header.is_none() {
                    return fail("auth_scheme is empty; give a scheme such as Bearer, or set auth_header for a bare token".into());
                }
                if !s.bytes().all(|b| b.is_ascii_graphic()) {
                    return fail(format!("auth_scheme {s:?} must be one word without spaces"));
                }
            }
            Some(CredentialSpec {
                header: name,
                scheme: scheme.clone().filter(|s| !s.is_empty()),
                token_env: env.clone(),
            })
        }
    }
}

/// Normalises a request host: lower case, no trailing dot, IPv6 without brackets.
///
/// Idempotent: the proxy normalises the target once and the matcher again, so a second
/// pass must not change what the first gave. One pair of brackets comes off only around
/// text with no other bracket and no trailing dot; one trailing dot comes off only a host
/// without brackets whose rest does not end in another dot. Anything else stays as it came
/// (lower case), and no route serves it.
pub fn normalize_host(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    if h.contains(['[', ']']) {
        return match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) if !inner.contains(['[', ']']) && !inner.ends_with('.') => inner.to_owned(),
            _ => h,
        };
    }
    match h.strip_suffix('.') {
        Some(rest) if !rest.ends_with('.') => rest.to_owned(),
        _ => h,
    }
}

fn parse_route_host(host: &str) -> Result<RouteHost, &'static str> {
    if host.is_empty() {
        return Err("it is empty");
    }
    if host.contains("://") || host.contains('/') {
        return Err("write only the host name, without scheme or path");
    }
    let n = normalize_host(host);
    if n.parse::<IpAddr>().is_ok() {
        return Ok(RouteHost::Exact(n));
    }
    if let Some(suffix) = n.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err("`*.` is allowed only once, as the leftmost label");
        }
        if !valid_dns_name(suffix) {
            return Err("not a valid host name after `*.`");
        }
        if !suffix.contains('.') {
            return Err(
                "a wildcard must cover a domain with at least two labels, e.g. *.example.com",
            );
        }
        return Ok(RouteHost::Wildcard(format!(".{suffix}")));
    }
    if n.contains('*') {
        return Err("`*` is allowed only as a leftmost `*.` label");
    }
    if n.contains(':') {
        return Err("put the port in `port`, not in the host");
    }
    if !valid_dns_name(&n) {
        return Err("not a valid host name (letters, digits, `-` and `.` only)");
    }
    Ok(RouteHost::Exact(n))
}

/// Whether `name` is a syntactically valid DNS host name.
pub fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_routes;
    use pretty_assertions::assert_eq;
    use std::path::Path;

    /// Every string over the characters that matter to it, up to six long: a second pass
    /// changes nothing.
    #[test]
    fn normalize_host_is_idempotent() {
        let alphabet = ['a', 'B', '.', '[', ']', ':'];
        let mut hosts = vec![String::new()];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::with_capacity(hosts.len() * alphabet.len());
            for h in &hosts {
                for c in alphabet {
                    let mut n = h.clone();
                    n.push(c);
                    let once = normalize_host(&n);
                    assert_eq!(normalize_host(&once), once, "{n:?}");
                    checked += 1;
                    longer.push(n);
                }
            }
            hosts = longer;
        }
        assert_eq!(checked, (1..=6).map(|k| 6usize.pow(k)).sum::<usize>());
        assert_eq!(normalize_host("API.Example.com."), "api.example.com");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("a.example.com.."), "a.example.com..");
        assert_eq!(normalize_host("[::1]."), "[::1].");
    }

    fn errors(yaml: &str) -> Vec<String> {
        let config = parse_routes(yaml, Path::new("r.yaml")).unwrap();
        match validate(&config) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn accepts_a_good_file() {
        let yaml = "routes:\n  - host: api.example.com\n    auth_scheme: Bearer\n    token_env: T\n  - host: '*.example.org'\n    port: 8443\n  - host: x.example\n    auth_header: x-api-key\n    auth_scheme: ''\n    token_env: K\n    connect_to: 127.0.0.1:9\n";
        assert_eq!(errors(yaml), Vec::<String>::new());
    }

    #[test]
    fn grant_fields_are_checked() {
        let good = "routes:\n  - host: a.example\n    expires: 2026-05-25T12:10:00Z\n    uses: 1\n    grant: 00aa\n";
        assert_eq!(errors(good), Vec::<String>::new());
        let config = parse_routes(good, Path::new("r.yaml")).unwrap();
        let v = validate(&config).unwrap();
        assert_eq!(
            (v.routes[0].expires, v.routes[0].uses),
            (
                Some(time::macros::datetime!(2026-05-25 12:10:00 UTC)),
                Some(1)
            )
        );
        assert_eq!(
            errors("routes:\n  - host: a.example\n    expires: in ten minutes\n    uses: 0\n"),
            vec![
                "routes[0] (a.example): expires \"in ten minutes\" is not a time; write RFC 3339 in UTC, e.g. 2026-05-25T12:10:00Z, or remove it".to_owned(),
                "routes[0] (a.example): uses 0 would allow nothing; give 1 or more, or remove the route".to_owned(),
            ]
        );
    }

    #[test]
    fn a_route_granted_for_a_while_goes_back_to_its_after_grant_only_when_ended() {
        let yaml = "routes:\n  - host: a.example\n    matches:\n      - methods: [GET, POST]\n    uses: 1\n    grant: 00aa\n    after_grant:\n      host: a.example\n      matches:\n        - methods: [GET]\n  - host: b.example\n";
        let v = validate(&parse_routes(yaml, Path::new("r.yaml")).unwrap()).unwrap();
        // the layer counts on after the configuration's routes and lies under routes[0]
        let shape: Vec<(usize, Option<usize>, Option<usize>)> = v
            .routes
            .iter()
            .map(|r| (r.index, r.after_grant, r.layer_of))
            .collect();
        assert_eq!(
            shape,
            vec![(0, Some(2), None), (1, None, None), (2, None, Some(0))]
        );
        let p = crate::Policy::new(v);
        let h = http::HeaderMap::new();
        let ask = |method| crate::Ask {
            tls: true,
            method,
            path: "/",
            query: None,
            headers: &h,
            upgrade: None,
        };
        let judge = |method, ended: bool| {
            let d = p
                .judge_live("a.example", 443, &ask(method), &|r| {
                    ended && r.uses.is_some()
                })
                .decision;
            (d.allowed, d.route)
        };
        assert_eq!(
            [
                judge("POST", false),
                judge("POST", true),
                judge("GET", true)
            ],
            [(true, Some(0)), (false, Some(2)), (true, Some(2))]
        );
        // an ended grant with nothing under it stays the route judged (its owner refuses it)
        assert_eq!(
            p.route_for_live("b.example", 443, true, &|_| true)
                .map(|r| r.index),
            Some(1)
        );
        assert_eq!(
            errors(
                "routes:\n  - host: a.example\n    after_grant:\n      host: b.example\n      port: 8443\n"
            ),
            vec![
                "routes[0] (a.example after its grant): after_grant is only for a route approved once or for a while (with `uses` or `expires`); remove it".to_owned(),
                "routes[0] (a.example after its grant): after_grant names another host or port than its route; a route can only go back to itself".to_owned(),
            ]
        );
    }

    #[test]
    fn reports_every_problem() {
        let yaml = r#"routes:
  - host: "a.*.example.com"
  - host: "*.com"
  - host: "https://x.example/"
  - host: ok.example
    matches:
      - methods: [get]
        paths: [{type: prefix, value: "v1"}]
        headers: [{name: "bad name", value: x}]
  - host: ok.example
  - host: t.example
    token_env: T
  - host: c.example
    connect_to: "nope"
  - host: s.example
    auth_scheme: Bearer
"#;
        assert_eq!(
            errors(yaml),
            vec![
                "routes[0] (a.*.example.com): host \"a.*.example.com\" is invalid: `*` is allowed only as a leftmost `*.` label",
                "routes[1] (*.com): host \"*.com\" is invalid: a wildcard must cover a domain with at least two labels, e.g. *.example.com",
                "routes[2] (https://x.example/): host \"https://x.example/\" is invalid: write only the host name, without scheme or path",
                "routes[3] (ok.example): path \"v1\" is invalid; paths start with / and contain no spaces",
                "routes[3] (ok.example): method \"get\" is invalid; write methods in upper case, e.g. GET",
                "routes[3] (ok.example): header \"bad name\" is invalid: not a valid header name",
                "routes[5] (t.example): token_env needs auth_scheme (e.g. Bearer) or auth_header (e.g. x-api-key)",
                "routes[6] (c.example): connect_to \"nope\" is invalid; write ADDR:PORT, e.g. 127.0.0.1:8443",
                "routes[7] (s.example): auth_scheme/auth_header need token_env naming the variable that holds the token",
            ]
        );
    }

    #[test]
    fn duplicate_hosts_by_port() {
        let dup = "routes:\n  - host: A.example\n  - host: a.example.\n";
        assert_eq!(
            errors(dup),
            vec![
                "routes[1] (a.example.): duplicate host \"a.example.\" (already routes[0]); merge the two routes into one"
            ]
        );
        let default_vs_443 = "routes:\n  - host: a.example\n  - host: a.example\n    port: 443\n";
        assert_eq!(errors(default_vs_443).len(), 1);
        let distinct =
            "routes:\n  - host: a.example\n    port: 8443\n  - host: a.example\n    port: 9443\n";
        assert_eq!(errors(distinct), Vec::<String>::new());
    }

    #[test]
    fn connect_target_forms() {
        assert_eq!(
            ConnectTarget::parse("[::1]:443"),
            Some(ConnectTarget {
                host: "::1".into(),
                port: 443
            })
        );
        assert_eq!(ConnectTarget::parse("::1:443"), None);
        assert_eq!(ConnectTarget::parse("127.0.0.1:0"), None);
        assert_eq!(ConnectTarget::parse("127.0.0.1"), None);
        assert_eq!(
            ConnectTarget::parse("Upstream.internal:8443"),
            Some(ConnectTarget {
                host: "upstream.internal".into(),
                port: 8443
            })
        );
    }
}
