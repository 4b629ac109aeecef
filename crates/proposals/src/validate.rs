//! Checks on what an agent proposes and what an operator approves, before anything is
//! queued or applied. Every message says what was wrong and what to send instead: the
//! agent reads them as JSON-RPC `-32602` errors, the operator as CLI / dashboard errors.

use policy::EgressConfig;
use serde::{Deserialize, Serialize};

use crate::proposal::Tool;

/// Largest proposed file accepted (routes files are a few KB).
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Largest justification accepted.
pub const MAX_JUSTIFICATION_BYTES: usize = 8 * 1024;

/// Why a proposal or an operator's file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// No justification, or only whitespace.
    #[error(
        "'justification' is required: say in a sentence or two why you need this, the operator reads it"
    )]
    MissingJustification,
    /// A field that must not be empty is empty.
    #[error("'{0}' is empty: pass the full content")]
    Empty(&'static str),
    /// A field is longer than allowed.
    #[error("'{field}' is too long ({len} bytes, at most {max})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The routes file does not parse.
    #[error(
        "the proposed routes.yaml does not parse: {0}; call list-egress-routes for the current file and send it back whole with your change"
    )]
    RoutesSyntax(String),
    /// A route is malformed.
    #[error("the proposed routes.yaml is not valid: {0}")]
    RoutesInvalid(String),
    /// The routes proposal changes the request log mode.
    #[error(
        "the proposed routes.yaml changes 'log' (from {from} to {to}); the request log is not yours to change, keep 'log' as it is"
    )]
    LogChanged {
        /// Current mode.
        from: String,
        /// Proposed mode.
        to: String,
    },
    /// The routes proposal adds or changes an operator-only setting.
    #[error(
        "the proposed routes.yaml {0}; only the operator sets that, leave it as it is in list-egress-routes"
    )]
    OperatorOnly(String),
    /// The routes proposal changes nothing.
    #[error("the proposed routes.yaml is the same as the live routes; nothing to ask for")]
    Unchanged,
    /// The proposal changes nothing any request would notice (only order or spelling).
    #[error(
        "the proposal changes no access: every request is allowed or blocked as before, with the same credentials; nothing to ask for"
    )]
    NoEffect,
    /// What the proposal does contradicts its tool (an `egress-block` that widens).
    #[error("{tool} {rule}, and this proposal does: {changes}; {fix}")]
    Contradicts {
        /// The tool.
        tool: &'static str,
        /// What the tool may do.
        rule: &'static str,
        /// The changes it may not make.
        changes: String,
        /// What to send instead.
        fix: &'static str,
    },
    /// An `egress-allow` leaves out a live route (most often the model API route its
    /// provider adds, which the agent's file never wrote): that would remove it.
    #[error(
        "the proposed routes.yaml leaves out the route for {0}, and egress-allow only adds or widens routes (a route left out would be removed, such as the model API route the provider adds); start from list-egress-routes and keep every route in it, or send egress-block to remove one"
    )]
    Omitted(String),
    /// A token proposal is malformed.
    #[error("{0}")]
    Token(String),
    /// A finding proposal is malformed.
    #[error("{0}")]
    Finding(String),
    /// A `dlp-allow` proposal is malformed.
    #[error("{0}")]
    DlpAllow(String),
}

/// A token attachment: which host's route gets which named secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The route's host.
    pub host: String,
    /// The name of the host secret (an environment variable of the sidecar bundle).
    pub token_name: String,
}

/// What an approved file means, per tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A full routes file.
    Routes(EgressConfig),
    /// A token attachment.
    Token(TokenRequest),
    /// One allowlist line (a finding fingerprint).
    Finding(String),
    /// One outbound DLP rule allowed on one host's routes.
    DlpAllow(crate::dlp::DlpAllowRequest),
}

/// Checks the justification.
pub fn check_justification(text: &str) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::MissingJustification);
    }
    check_len("justification", text, MAX_JUSTIFICATION_BYTES)
}

fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), ValidationError> {
    if text.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// Parses a routes file and checks each route.
pub fn parse_routes(text: &str) -> Result<EgressConfig, ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::Empty("routes_yaml"));
    }
    check_len("routes_yaml", text, MAX_FILE_BYTES)?;
    let config: EgressConfig = serde_saphyr::from_str(text)
        .map_err(|e| ValidationError::RoutesSyntax(one_line(&e.to_string())))?;
    for (i, route) in config.routes.iter().flatten().enumerate() {
        let n = i + 1;
        let host = route.host.trim();
        let host_ok = !host.is_empty()
            && host == route.host
            && host
                .trim_start_matches("*.")
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !host_ok {
            return Err(ValidationError::RoutesInvalid(format!(
                "route {n}: host {:?} is not a host name (exact, or '*.example.com')",
                route.host
            )));
        }
        if route.port == Some(0) {
            return Err(ValidationError::RoutesInvalid(format!(
                "route {n} ({host}): port 0 is not a port"
            )));
        }
        for m in route.matches.iter().flatten() {
            for p in m.paths.iter().flatten() {
                if !p.value.starts_with('/') {
                    return Err(ValidationError::RoutesInvalid(format!(
                        "route {n} ({host}): path {:?} must start with '/'",
                        p.value
                    )));
                }
            }
            for method in m.methods.iter().flatten() {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(ValidationError::RoutesInvalid(format!(
                        "route {n} ({host}): method {method:?} must be an upper-case HTTP method"
                    )));
                }
            }
        }
    }
    // The same rules the egress proxy applies when it loads routes.
    policy::validate(&config).map_err(|errs| {
        ValidationError::RoutesInvalid(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(config)
}

/// Checks an agent's routes proposal against the live routes: `log` unchanged and
/// something actually changes.
pub fn check_routes_proposal(
    current: &EgressConfig,
    proposed: &EgressConfig,
) -> Result<(), ValidationError> {
    let from = current.log.unwrap_or_default();
    let to = proposed.log.unwrap_or_default();
    if from != to {
        return Err(ValidationError::LogChanged {
            from: format!("{from:?}").to_lowercase(),
            to: format!("{to:?}").to_lowercase(),
        });
    }
    if current.upstream_ca != proposed.upstream_ca {
        return Err(ValidationError::OperatorOnly(
            "changes 'upstream_ca' (trusted upstream roots)".to_owned(),
        ));
    }
    // `connect_to` pins skip the private-range check: an agent may keep the pins it has,
    // never add or move one.
    for route in proposed.routes.iter().flatten() {
        if let Some(pin) = &route.connect_to {
            let kept = current.routes.iter().flatten().any(|c| {
                c.host == route.host && c.port == route.port && c.connect_to.as_ref() == Some(pin)
            });
            if !kept {
                return Err(ValidationError::OperatorOnly(format!(
                    "sets 'connect_to' on route {}",
                    route.host
                )));
            }
        }
    }
    // `dangerously_raw_paths` lets paths an upstream reads differently pass path conditions:
    // like a pin, only the operator turns it on.
    for route in proposed.routes.iter().flatten() {
        if route.dangerously_raw_paths == Some(true) {
            let kept = current.routes.iter().flatten().any(|c| {
                c.host == route.host
                    && c.port == route.port
                    && c.dangerously_raw_paths == Some(true)
            });
            if !kept {
                return Err(ValidationError::OperatorOnly(format!(
                    "sets 'dangerously_raw_paths' on route {}",
                    route.host
                )));
            }
        }
    }
    check_dlp_unchanged(current, proposed)?;
    check_after_grant_unchanged(current, proposed)?;
    if current == proposed {
        return Err(ValidationError::Unchanged);
    }
    Ok(())
}

/// An agent's routes proposal keeps every route's outbound DLP as it is: a new route gets
/// the default (`block`, nothing allowed), and only the operator (or an approved
/// `dlp-allow`) changes `dlp`, `dlp_allow` or `dangerously_dlp_pass_unscannable`.
fn check_dlp_unchanged(
    current: &EgressConfig,
    proposed: &EgressConfig,
) -> Result<(), ValidationError> {
    for route in proposed.routes.iter().flatten() {
        let before = current
            .routes
            .iter()
            .flatten()
            .find(|c| c.host.eq_ignore_ascii_case(&route.host) && c.port == route.port);
        let same = match before {
            Some(c) => {
                c.dlp == route.dlp
                    && c.dlp_allow == route.dlp_allow
                    && c.dlp_allow_grants == route.dlp_allow_grants
                    && c.dangerously_dlp_pass_unscannable == route.dangerously_dlp_pass_unscannable
            }
            None => {
                matches!(route.dlp, None | Some(policy::DlpMode::Block))
                    && route.dlp_allow.as_ref().is_none_or(Vec::is_empty)
                    && route.dlp_allow_grants.as_ref().is_none_or(Vec::is_empty)
                    && route.dangerously_dlp_pass_unscannable != Some(true)
            }
        };
        if !same {
            return Err(ValidationError::OperatorOnly(format!(
                "changes the outbound dlp of route {} ('dlp', 'dlp_allow', 'dlp_allow_grants' or 'dangerously_dlp_pass_unscannable'); use the dlp-allow tool for one rule",
                route.host
            )));
        }
    }
    Ok(())
}

/// An agent's routes proposal keeps every route's `after_grant` (what a route granted once
/// or for a while goes back to) as it is, and a new route has none: the operator's effect
/// shows the route, not what it would turn into later, so only supervise writes it.
fn check_after_grant_unchanged(
    current: &EgressConfig,
    proposed: &EgressConfig,
) -> Result<(), ValidationError> {
    for route in proposed.routes.iter().flatten() {
        let before = current
            .routes
            .iter()
            .flatten()
            .find(|c| c.host.eq_ignore_ascii_case(&route.host) && c.port == route.port)
            .and_then(|c| c.after_grant.as_ref());
        if route.after_grant.as_ref() != before {
            return Err(ValidationError::OperatorOnly(format!(
                "changes 'after_grant' of route {} (what a route approved once or for a while goes back to, which only supervise writes); keep it as list-egress-routes shows it",
                route.host
            )));
        }
    }
    Ok(())
}

/// For `egress-allow`: every live route is still in the proposal (same host and port), so
/// that no route — above all an implicit one, like the provider's model API route, which the
/// agent never wrote — is dropped by omission.
pub fn check_nothing_omitted(
    current: &EgressConfig,
    proposed: &EgressConfig,
) -> Result<(), ValidationError> {
    let mut omitted: Vec<String> = Vec::new();
    for c in current.routes.iter().flatten() {
        let kept = proposed
            .routes
            .iter()
            .flatten()
            .any(|p| p.host.eq_ignore_ascii_case(&c.host) && p.port == c.port);
        if !kept {
            let name = match c.port {
                Some(port) => format!("{}:{port}", c.host),
                None => c.host.clone(),
            };
            if !omitted.contains(&name) {
                omitted.push(name);
            }
        }
    }
    if omitted.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::Omitted(omitted.join(", ")))
    }
}

fn env_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 128
}

/// Checks a token request.
pub fn check_token(req: &TokenRequest) -> Result<(), ValidationError> {
    if req.host.trim().is_empty() {
        return Err(ValidationError::Empty("host"));
    }
    if req.token_name.trim().is_empty() {
        return Err(ValidationError::Empty("token_name"));
    }
    if req.host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ValidationError::Token(format!(
            "'host' {:?} must be a bare host name as in the routes, without scheme or path",
            req.host
        )));
    }
    if !env_name_ok(&req.token_name) {
        return Err(ValidationError::Token(format!(
            "'token_name' {:?} must name a host secret: upper-case letters, digits and '_'",
            req.token_name
        )));
    }
    Ok(())
}

/// The text form of a token request (what the operator sees and may edit).
pub fn token_file(req: &TokenRequest) -> String {
    format!("host: {}\ntoken_name: {}\n", req.host, req.token_name)
}

/// Checks an allowlist entry (one fingerprint line).
pub fn check_finding(entry: &str) -> Result<String, ValidationError> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err(ValidationError::Empty("fingerprint"));
    }
    if entry.contains(['\n', '\r']) {
        return Err(ValidationError::Finding(
            "'fingerprint' must be one line: one finding per proposal".into(),
        ));
    }
    if entry.starts_with('#') {
        return Err(ValidationError::Finding(
            "'fingerprint' must not start with '#'".into(),
        ));
    }
    if !entry.contains(':') {
        return Err(ValidationError::Finding(format!(
            "'fingerprint' {entry:?} is not a finding fingerprint: copy it from the push rejection (commit:file:rule_id:line)"
        )));
    }
    check_len("fingerprint", entry, 4096)?;
    Ok(entry.to_owned())
}

/// Parses a final (operator) or proposed file for `tool` into what will be applied.
pub fn parse_payload(tool: Tool, text: &str) -> Result<Payload, ValidationError> {
    match tool {
        Tool::EgressAllow | Tool::EgressBlock => parse_routes(text).map(Payload::Routes),
        Tool::EgressTokenAllow => {
            if text.trim().is_empty() {
                return Err(ValidationError::Empty("token file"));
            }
            let req: TokenRequest = serde_saphyr::from_str(text).map_err(|e| {
                ValidationError::Token(format!(
                    "the token file must be 'host: ...' and 'token_name: ...': {}",
                    one_line(&e.to_string())
                ))
            })?;
            check_token(&req)?;
            Ok(Payload::Token(req))
        }
        Tool::GitleaksAllow => check_finding(text).map(Payload::Finding),
        Tool::DlpAllow => crate::dlp::parse_dlp_allow(text).map(Payload::DlpAllow),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {

    #[test]
    fn egress_allow_cannot_drop_a_route_by_omission() {
        let live = parse_routes(
            "routes:\n  - host: api.anthropic.com\n    auth_scheme: Bearer\n    token_env: BOT_BOTTLE_CLAUDE_OAUTH_TOKEN\n  - host: crates.io\n",
        )
        .unwrap();
        let dropped = parse_routes("routes:\n  - host: crates.io\n  - host: pypi.org\n").unwrap();
        assert_eq!(
            check_nothing_omitted(&live, &dropped)
                .unwrap_err()
                .to_string(),
            "the proposed routes.yaml leaves out the route for api.anthropic.com, and egress-allow only adds or widens routes (a route left out would be removed, such as the model API route the provider adds); start from list-egress-routes and keep every route in it, or send egress-block to remove one"
        );
        let kept = parse_routes(
            "routes:\n  - host: api.anthropic.com\n    auth_scheme: Bearer\n    token_env: BOT_BOTTLE_CLAUDE_OAUTH_TOKEN\n  - host: crates.io\n  - host: pypi.org\n",
        )
        .unwrap();
        assert_eq!(check_nothing_omitted(&live, &kept), Ok(()));
    }

    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn routes_are_parsed_and_checked() {
        let ok = parse_routes("routes:\n  - host: api.example.com\n").unwrap();
        assert_eq!(ok.routes.unwrap()[0].host, "api.example.com");
        assert!(matches!(
            parse_routes("  \n"),
            Err(ValidationError::Empty("routes_yaml"))
        ));
        assert!(matches!(
            parse_routes("routes: [oops"),
            Err(ValidationError::RoutesSyntax(_))
        ));
        assert!(matches!(
            parse_routes("routes:\n  - hots: x\n"),
            Err(ValidationError::RoutesSyntax(_))
        ));
        assert!(matches!(
            parse_routes("routes:\n  - host: 'a b'\n"),
            Err(ValidationError::RoutesInvalid(_))
        ));
    }

    #[test]
    fn log_changes_and_no_ops_are_refused() {
        let cur = parse_routes("log: blocks\nroutes:\n  - host: a.example\n").unwrap();
        let same_log_default = parse_routes("routes:\n  - host: b.example\n").unwrap();
        assert_eq!(check_routes_proposal(&cur, &same_log_default), Ok(()));
        let all = parse_routes("log: all\nroutes:\n  - host: b.example\n").unwrap();
        assert_eq!(
            check_routes_proposal(&cur, &all).unwrap_err().to_string(),
            "the proposed routes.yaml changes 'log' (from blocks to all); the request log is not yours to change, keep 'log' as it is"
        );
        assert_eq!(
            check_routes_proposal(&cur, &cur.clone()),
            Err(ValidationError::Unchanged)
        );
    }

    #[test]
    fn operator_only_settings_are_refused() {
        let cur =
            parse_routes("routes:\n  - host: a.example\n    connect_to: 10.0.0.1:443\n").unwrap();
        let keeps = parse_routes(
            "routes:\n  - host: a.example\n    connect_to: 10.0.0.1:443\n  - host: b.example\n",
        )
        .unwrap();
        assert_eq!(check_routes_proposal(&cur, &keeps), Ok(()));
        let adds =
            parse_routes("routes:\n  - host: b.example\n    connect_to: 127.0.0.1:22\n").unwrap();
        assert_eq!(
            check_routes_proposal(&cur, &adds).unwrap_err().to_string(),
            "the proposed routes.yaml sets 'connect_to' on route b.example; only the operator sets that, leave it as it is in list-egress-routes"
        );
        let raw = parse_routes(
            "routes:\n  - host: a.example\n    connect_to: 10.0.0.1:443\n    dangerously_raw_paths: true\n",
        )
        .unwrap();
        assert_eq!(
            check_routes_proposal(&cur, &raw).unwrap_err().to_string(),
            "the proposed routes.yaml sets 'dangerously_raw_paths' on route a.example; only the operator sets that, leave it as it is in list-egress-routes"
        );
        let ca = parse_routes("upstream_ca: [/etc/evil.pem]\nroutes: []\n").unwrap();
        assert!(matches!(
            check_routes_proposal(&cur, &ca),
            Err(ValidationError::OperatorOnly(_))
        ));
    }

    #[test]
    fn token_and_finding_payloads() {
        assert_eq!(
            parse_payload(
                Tool::EgressTokenAllow,
                "host: api.x\ntoken_name: API_TOKEN\n"
            )
            .unwrap(),
            Payload::Token(TokenRequest {
                host: "api.x".into(),
                token_name: "API_TOKEN".into()
            })
        );
        assert!(parse_payload(Tool::EgressTokenAllow, "host: api.x\ntoken_name: lower\n").is_err());
        assert_eq!(
            parse_payload(Tool::GitleaksAllow, " abc:src/a.rs:aws-key:3 \n").unwrap(),
            Payload::Finding("abc:src/a.rs:aws-key:3".into())
        );
        assert!(parse_payload(Tool::GitleaksAllow, "a:b\nc:d").is_err());
        assert!(parse_payload(Tool::GitleaksAllow, "nofields").is_err());
    }
}
