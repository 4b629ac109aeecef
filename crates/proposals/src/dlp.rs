//! The `dlp-allow` proposal: the agent asks that one rule of egress's outbound DLP (a
//! scanner rule id, or `credential`) let requests to one host through, after a request was
//! refused with that rule. Approved, the rule joins the `dlp_allow` list of every route of
//! that host for this bottle, and the agent sends the request again.
//!
//! Also what any routes proposal changes in a route's DLP, so the operator sees it.

use policy::{DlpMode, EgressConfig};
use serde::{Deserialize, Serialize};

use crate::effect::{Change, EffectError};
use crate::validate::ValidationError;

/// What a `dlp-allow` proposal asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpAllowRequest {
    /// The route's host.
    pub host: String,
    /// The rule the refusal named.
    pub rule: String,
}

/// One outbound DLP hit of egress, as the bottle's audit chain records it (stage
/// `dlp-hit`): the rule, where in the request, the request's method, host and path, and
/// what egress did. It never holds the secret: egress gives no query, no header value, no
/// body, and no path when the secret was in the request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// When the request arrived (RFC 3339).
    pub time: String,
    /// The request's method.
    pub method: String,
    /// Its host.
    pub host: String,
    /// Its path without the query, when egress shows it.
    pub path: Option<String>,
    /// The scanner rule id, `credential`, or `unscannable`.
    pub rule: String,
    /// Where in the request: `request-line`, `header <name>`, `body`, `trailer <name>`.
    pub place: String,
    /// `blocked`, `redacted` or `logged`.
    pub action: String,
}

impl Hit {
    /// The stage of a hit's audit line.
    pub const STAGE: &'static str = "dlp-hit";

    /// The audit line of the hit in `bottle`'s egress chain (`decision` is what egress
    /// did; `effect` says it in one line).
    pub fn audit_entry(&self, bottle: &str) -> crate::audit::NewEntry {
        let target = match &self.path {
            Some(path) => format!("{} {}{path}", self.method, self.host),
            None => format!("{} {} (path withheld)", self.method, self.host),
        };
        crate::audit::NewEntry {
            component: "egress".to_owned(),
            bottle: bottle.to_owned(),
            proposal_id: String::new(),
            tool: "dlp".to_owned(),
            justification: String::new(),
            arrival_timestamp: self.time.clone(),
            decided_at: self.time.clone(),
            decision: self.action.clone(),
            operator: "bot-bottle egress".to_owned(),
            notes: None,
            before: None,
            after: None,
            error: None,
            effect: vec![format!(
                "dlp rule {} in the {} of {target}: {}",
                self.rule, self.place, self.action
            )],
            stage: Some(Self::STAGE.to_owned()),
            grant: None,
        }
    }
}

/// Checks a `dlp-allow` request's fields.
pub fn check_dlp_allow(req: &DlpAllowRequest) -> Result<(), ValidationError> {
    if req.host.trim().is_empty() {
        return Err(ValidationError::Empty("host"));
    }
    if req.rule.trim().is_empty() {
        return Err(ValidationError::Empty("rule"));
    }
    if req.host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ValidationError::DlpAllow(format!(
            "'host' {:?} must be a bare host name as in the routes, without scheme or path",
            req.host
        )));
    }
    if req.rule.len() > 100
        || !req
            .rule
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(ValidationError::DlpAllow(format!(
            "'rule' {:?} must be the rule id the refusal named (letters, digits, '-', '_', '.')",
            req.rule
        )));
    }
    Ok(())
}

/// The text form of a `dlp-allow` request (what the operator sees and may edit).
pub fn dlp_allow_file(req: &DlpAllowRequest) -> String {
    format!("host: {}\nrule: {}\n", req.host, req.rule)
}

/// Parses the text form.
pub fn parse_dlp_allow(text: &str) -> Result<DlpAllowRequest, ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::Empty("dlp-allow file"));
    }
    let req: DlpAllowRequest = serde_saphyr::from_str(text).map_err(|e| {
        ValidationError::DlpAllow(format!(
            "the dlp-allow file must be 'host: ...' and 'rule: ...': {}",
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ))
    })?;
    check_dlp_allow(&req)?;
    Ok(req)
}

/// The live routes with `rule` allowed on every route of `host` (what approving a
/// `dlp-allow` does).
pub fn allow_dlp_rule(
    config: &EgressConfig,
    host: &str,
    rule: &str,
) -> Result<EgressConfig, EffectError> {
    let mut config = config.clone();
    let mut found = false;
    for route in config.routes.iter_mut().flatten() {
        if route.host.eq_ignore_ascii_case(host) {
            found = true;
            // Also under a running grant: the rule outlasts it.
            route.for_each_layer_mut(|route| {
                let allow = route.dlp_allow.get_or_insert_with(Vec::new);
                if !allow.iter().any(|r| r == rule) {
                    allow.push(rule.to_owned());
                }
            });
        }
    }
    if found {
        Ok(config)
    } else {
        Err(EffectError::NoRoute(host.to_owned()))
    }
}

/// The live routes with `rule` let through on every route of `host` until `stamp` ends it
/// (what approving a `dlp-allow` once or for a duration does): a `dlp_allow_grants` entry,
/// which the egress proxy enforces and supervise's sweeper takes out when it ended. A rule
/// the route allows for good already stays as it is.
pub fn grant_dlp_rule(
    config: &EgressConfig,
    host: &str,
    rule: &str,
    stamp: &crate::grant::Stamp,
) -> Result<EgressConfig, EffectError> {
    let mut config = config.clone();
    let mut found = false;
    for route in config.routes.iter_mut().flatten() {
        if route.host.eq_ignore_ascii_case(host) {
            found = true;
            // Also under a running grant of the route: the rule's own end decides.
            route.for_each_layer_mut(|route| {
                if route.dlp_allow.iter().flatten().any(|r| r == rule) {
                    return;
                }
                let grants = route.dlp_allow_grants.get_or_insert_with(Vec::new);
                // A new approval of the same rule sets a new end.
                grants.retain(|g| g.rule != rule);
                grants.push(policy::DlpAllowGrant {
                    rule: rule.to_owned(),
                    expires: stamp.expires.clone(),
                    uses: stamp.uses,
                    grant: stamp.grant.clone(),
                });
            });
        }
    }
    if found {
        Ok(config)
    } else {
        Err(EffectError::NoRoute(host.to_owned()))
    }
}

/// How much a route's DLP lets through, for comparing: more is weaker.
fn strength(mode: Option<DlpMode>, pass: Option<bool>) -> (u8, bool) {
    let m = match mode.unwrap_or_default() {
        DlpMode::Block => 0,
        DlpMode::Redact => 1,
        DlpMode::Log => 2,
    };
    (m, pass.unwrap_or(false))
}

fn describe(mode: Option<DlpMode>, pass: Option<bool>) -> String {
    let mut s = format!("dlp {}", mode.unwrap_or_default().as_str());
    if pass == Some(true) {
        s.push_str(", unscannable bodies pass");
    }
    s
}

/// What changes in the routes' DLP between `live` and `proposed`, route by route (matched
/// by host and port; a route that is added or removed is reported by the routes effect).
pub fn dlp_changes(live: &EgressConfig, proposed: &EgressConfig) -> Vec<Change> {
    let mut out = Vec::new();
    for p in proposed.routes.iter().flatten() {
        let Some(l) = live
            .routes
            .iter()
            .flatten()
            .find(|l| l.host.eq_ignore_ascii_case(&p.host) && l.port == p.port)
        else {
            continue;
        };
        let target = match p.port {
            Some(port) => format!("{}:{port}", p.host),
            None => p.host.clone(),
        };
        let before: Vec<String> = l.dlp_allow.clone().unwrap_or_default();
        for rule in p.dlp_allow.iter().flatten() {
            if !before.contains(rule) {
                out.push(Change::DlpAllowed {
                    target: target.clone(),
                    rule: rule.clone(),
                });
            }
        }
        let (sl, sp) = (
            strength(l.dlp, l.dangerously_dlp_pass_unscannable),
            strength(p.dlp, p.dangerously_dlp_pass_unscannable),
        );
        let removed = before
            .iter()
            .any(|r| !p.dlp_allow.iter().flatten().any(|x| x == r));
        if sl != sp || removed {
            let weaker = sp.0 > sl.0 || (sp.1 && !sl.1);
            let mut after = describe(p.dlp, p.dangerously_dlp_pass_unscannable);
            if removed {
                after.push_str(", fewer rules allowed");
            }
            out.push(Change::DlpChanged {
                target,
                before: describe(l.dlp, l.dangerously_dlp_pass_unscannable),
                after,
                weaker,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn routes(text: &str) -> EgressConfig {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn allowing_a_rule_adds_it_to_every_route_of_the_host_once() {
        let live = routes("routes:\n  - host: api.example\n    dlp: redact\n  - host: b.example\n");
        let after = allow_dlp_rule(&live, "API.example", "aws-access-key-id").unwrap();
        let again = allow_dlp_rule(&after, "api.example", "aws-access-key-id").unwrap();
        assert_eq!(after, again);
        assert_eq!(
            dlp_changes(&live, &after),
            vec![Change::DlpAllowed {
                target: "api.example".into(),
                rule: "aws-access-key-id".into()
            }]
        );
        assert_eq!(
            allow_dlp_rule(&live, "c.example", "x"),
            Err(EffectError::NoRoute("c.example".into()))
        );
    }

    #[test]
    fn a_rule_granted_for_a_while_carries_its_end_and_a_new_grant_replaces_it() {
        let live =
            routes("routes:\n  - host: api.example\n  - host: b.example\n    dlp_allow: [jwt]\n");
        let now = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        let once = crate::grant::Stamp::new(crate::Grant::Once, "00e5", now);
        let ten = crate::grant::Stamp::new(crate::Grant::For { seconds: 600 }, "00e6", now);
        let a = grant_dlp_rule(&live, "api.example", "jwt", &once).unwrap();
        let b = grant_dlp_rule(&a, "api.example", "jwt", &ten).unwrap();
        assert_eq!(
            serde_saphyr::to_string(&b).unwrap(),
            "routes:\n- host: api.example\n  dlp_allow_grants:\n  - rule: jwt\n    expires: \"2026-05-25T12:10:00Z\"\n    grant: \"00e6\"\n- host: b.example\n  dlp_allow:\n  - jwt\n"
        );
        // for good already: nothing to add
        assert_eq!(
            grant_dlp_rule(&live, "b.example", "jwt", &once).unwrap(),
            live
        );
        assert_eq!(
            grant_dlp_rule(&live, "c.example", "jwt", &once),
            Err(EffectError::NoRoute("c.example".into()))
        );
    }

    #[test]
    fn a_weaker_mode_is_reported_as_weaker() {
        let live = routes("routes:\n  - host: a.example\n");
        let proposed = routes("routes:\n  - host: a.example\n    dlp: log\n");
        assert_eq!(
            dlp_changes(&live, &proposed),
            vec![Change::DlpChanged {
                target: "a.example".into(),
                before: "dlp block".into(),
                after: "dlp log".into(),
                weaker: true
            }]
        );
        assert_eq!(dlp_changes(&proposed, &live)[0].widens(), false);
    }

    #[test]
    fn requests_are_checked() {
        assert!(parse_dlp_allow("host: a.example\nrule: aws-access-key-id\n").is_ok());
        assert!(parse_dlp_allow("host: a.example\nrule: 'x y'\n").is_err());
        assert!(parse_dlp_allow("host: https://a\nrule: x\n").is_err());
        assert!(parse_dlp_allow("host: a\nrule: x\nextra: 1\n").is_err());
    }
}
