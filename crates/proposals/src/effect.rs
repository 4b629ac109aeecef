//! What a proposal *does*, computed from the live routes and the proposed ones: routes
//! added, widened, narrowed or removed, credentials given to a host, pins and trusted roots
//! changed. A proposal is judged by this effect, never by its tool name or its
//! justification: an `egress-block` that widens anything is refused when it arrives, the
//! operator sees the effect first (most dangerous change first), and every audit line
//! records it.
//!
//! The comparison asks the same question the egress proxy asks for every request —
//! [`policy::Policy::route_for`] picks the route that serves a host and port — for every
//! host pattern and port named in either file. So removing a narrow exact route that sits
//! under a wide wildcard shows as *widening* that host, as it is in effect. Within one
//! route, a set of `matches` alternatives is compared by subsumption: each proposed
//! (path, method, headers) cell must be allowed by some live alternative, or the route
//! is widened. The check errs towards "widened" when a file is too large to split into
//! cells, never towards "narrowed".

use std::collections::BTreeSet;

use policy::{
    CredentialSpec, EgressConfig, MatchSpec, PathMatchKind, Policy, ValidatedRoute, ValidatedRoutes,
};
use serde::Serialize;

use crate::proposal::{Proposal, Tool};
use crate::validate::{self, Payload, ValidationError};

/// Most (path, method) cells one alternative is split into before the comparison falls
/// back to "widened" (a conservative answer for absurdly large files).
const MAX_CELLS: usize = 4096;

/// One consequence of a proposal. The variants are declared most dangerous first, so the
/// derived order sorts an effect for the operator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    /// Requests to `target` carry a credential they did not carry before.
    CredentialGiven {
        /// Host pattern (and port when not the default).
        target: String,
        /// The host secret's name.
        token: String,
        /// The credential it replaces, if any.
        replaces: Option<String>,
    },
    /// The same credential is sent to `target` in another header or with another scheme.
    CredentialResent {
        /// Host pattern.
        target: String,
        /// The host secret's name.
        token: String,
        /// `header: scheme` as it will be sent.
        how: String,
    },
    /// A host (and port) that had no route gets one.
    RouteAdded {
        /// Host pattern.
        target: String,
        /// What it allows.
        access: String,
    },
    /// Upstream TLS trusts more roots.
    TrustAdded {
        /// The PEM files added.
        roots: Vec<String>,
    },
    /// Where a host is really reached changes (a pin skips the private-range check).
    PinChanged {
        /// Host pattern.
        target: String,
        /// The pin before (`None`: resolved through DNS).
        before: Option<String>,
        /// The pin after.
        after: Option<String>,
    },
    /// More requests to `target` are allowed than before.
    Widened {
        /// Host pattern.
        target: String,
        /// What was allowed.
        before: String,
        /// What is allowed.
        after: String,
    },
    /// Fewer requests to `target` are allowed than before.
    Narrowed {
        /// Host pattern.
        target: String,
        /// What was allowed.
        before: String,
        /// What is allowed.
        after: String,
    },
    /// Requests to `target` no longer carry a credential.
    CredentialRemoved {
        /// Host pattern.
        target: String,
        /// The host secret's name.
        token: String,
    },
    /// Upstream TLS trusts fewer roots.
    TrustRemoved {
        /// The PEM files removed.
        roots: Vec<String>,
    },
    /// A host (and port) loses its route.
    RouteRemoved {
        /// Host pattern.
        target: String,
        /// What it allowed.
        access: String,
    },
    /// A secret-scan finding is allowed in this bottle's pushes.
    FindingAllowed {
        /// Its fingerprint.
        fingerprint: String,
    },
    /// An outbound DLP rule lets requests to `target` through.
    DlpAllowed {
        /// Host pattern.
        target: String,
        /// The rule id.
        rule: String,
    },
    /// A route's outbound DLP mode changes.
    DlpChanged {
        /// Host pattern.
        target: String,
        /// What it was.
        before: String,
        /// What it becomes.
        after: String,
        /// Whether more secrets can leave than before.
        weaker: bool,
    },
}

impl Change {
    /// Whether the change gives the bottle more than it had: more requests out, a
    /// credential to a host, another destination, another trusted root, a finding allowed.
    pub fn widens(&self) -> bool {
        !matches!(
            self,
            Change::Narrowed { .. }
                | Change::CredentialRemoved { .. }
                | Change::TrustRemoved { .. }
                | Change::RouteRemoved { .. }
                | Change::DlpChanged { weaker: false, .. }
        )
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::CredentialGiven {
                target,
                token,
                replaces,
            } => {
                write!(f, "gives host {target} the credential {token}")?;
                if let Some(old) = replaces {
                    write!(f, " (instead of {old})")?;
                }
                Ok(())
            }
            Change::CredentialResent { target, token, how } => {
                write!(f, "sends the credential {token} to host {target} as {how}")
            }
            Change::RouteAdded { target, access } => {
                write!(f, "adds host {target}: {access}")
            }
            Change::TrustAdded { roots } => {
                write!(f, "trusts more upstream roots: {}", roots.join(", "))
            }
            Change::PinChanged {
                target,
                before,
                after,
            } => {
                let at =
                    |p: &Option<String>| p.clone().unwrap_or_else(|| "its DNS address".to_owned());
                write!(
                    f,
                    "connects host {target} to {} instead of {}",
                    at(after),
                    at(before)
                )
            }
            Change::Widened {
                target,
                before,
                after,
            } => write!(f, "widens host {target}: {after} (was {before})"),
            Change::Narrowed {
                target,
                before,
                after,
            } => write!(f, "narrows host {target}: {after} (was {before})"),
            Change::CredentialRemoved { target, token } => {
                write!(f, "stops giving host {target} the credential {token}")
            }
            Change::TrustRemoved { roots } => {
                write!(f, "trusts fewer upstream roots: {}", roots.join(", "))
            }
            Change::RouteRemoved { target, access } => {
                write!(f, "removes host {target} (was {access})")
            }
            Change::FindingAllowed { fingerprint } => write!(
                f,
                "allows the secret-scan finding {fingerprint} in this bottle's pushes"
            ),
            Change::DlpAllowed { target, rule } => write!(
                f,
                "lets requests to host {target} carry secrets of the dlp rule {rule}"
            ),
            Change::DlpChanged {
                target,
                before,
                after,
                ..
            } => write!(f, "changes host {target}'s outbound {after} (was {before})"),
        }
    }
}

/// Everything a proposal does, most dangerous change first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Effect {
    /// The changes, sorted.
    pub changes: Vec<Change>,
}

impl Effect {
    fn new(changes: impl IntoIterator<Item = Change>) -> Self {
        let set: BTreeSet<Change> = changes.into_iter().collect();
        Self {
            changes: set.into_iter().collect(),
        }
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any change gives the bottle more than it had.
    pub fn widens(&self) -> bool {
        self.changes.iter().any(Change::widens)
    }

    /// One line per change, most dangerous first.
    pub fn lines(&self) -> Vec<String> {
        self.changes.iter().map(ToString::to_string).collect()
    }

    /// The first line and how many follow, for one-line listings.
    pub fn headline(&self) -> String {
        match self.changes.split_first() {
            None => "no change".to_owned(),
            Some((first, [])) => first.to_string(),
            Some((first, rest)) => format!("{first} (+{} more)", rest.len()),
        }
    }
}

/// Why an effect could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    /// The live routes do not validate.
    #[error("the live routes are not valid ({0}); fix the bottle's routes.yaml first")]
    Live(String),
    /// The proposed file does not validate.
    #[error("{0}")]
    Proposed(ValidationError),
    /// The token request names a host without a route.
    #[error("there is no route for host {0}")]
    NoRoute(String),
}

fn validated(config: &EgressConfig) -> Result<ValidatedRoutes, String> {
    policy::validate(config).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Parses a routes file as stored (empty text: no routes).
pub fn parse_live(text: &str) -> Result<EgressConfig, EffectError> {
    if text.trim().is_empty() {
        return Ok(EgressConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|e| EffectError::Live(e.to_string()))
}

/// The host pattern a route covers, as the proxy matches it: `*.suffix` or the host.
fn pattern(r: &ValidatedRoute) -> String {
    match &r.host {
        policy::RouteHost::Exact(h) => h.clone(),
        policy::RouteHost::Wildcard(suffix) => format!("*{suffix}"),
    }
}

fn target(host: &str, ports: &BTreeSet<u16>, default_ports: &BTreeSet<u16>) -> String {
    if ports == default_ports {
        host.to_owned()
    } else {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!("{host}:{}", list.join(","))
    }
}

fn path_text((kind, value): &(PathMatchKind, String)) -> String {
    match kind {
        PathMatchKind::Exact => value.clone(),
        PathMatchKind::Prefix => format!("{value}*"),
    }
}

/// What a route allows, in a few words: its `matches`, then the route-level switches that
/// let more through (WebSocket upgrades, paths forwarded as written).
fn route_access(r: &ValidatedRoute) -> String {
    let mut s = access(&r.matches);
    if r.websocket {
        s.push_str(", websocket upgrades");
    }
    if r.dangerously_raw_paths {
        s.push_str(", paths forwarded as written (dangerously_raw_paths)");
    }
    match r.uses {
        Some(1) => s.push_str(", one request in all"),
        Some(n) => s.push_str(&format!(", {n} requests in all")),
        None => {}
    }
    if let Some(at) = r.expires
        && let Ok(t) = at.format(&time::format_description::well_known::Rfc3339)
    {
        s.push_str(&format!(", until {t}"));
    }
    s
}

/// Whether route `sup` allows at least what route `sub` allows.
fn route_covered(sup: &ValidatedRoute, sub: &ValidatedRoute) -> bool {
    covered(&sup.matches, &sub.matches)
        && (sup.websocket || !sub.websocket)
        && (sup.dangerously_raw_paths || !sub.dangerously_raw_paths)
        && grant_covered(sup, sub)
}

/// Whether the end of `sup`'s approval comes no sooner than `sub`'s: no end at all, or a
/// later `expires`; no count, or the same count of the same grant with at least as many
/// requests (the egress proxy counts a route's requests by its host and grant, so another
/// grant starts from zero again). Dropping `expires` or `uses` from a live route widens it.
fn grant_covered(sup: &ValidatedRoute, sub: &ValidatedRoute) -> bool {
    let time_ok = match (sup.expires, sub.expires) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b <= a,
    };
    let uses_ok = match (sup.uses, sub.uses) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b <= a && sup.grant == sub.grant,
    };
    time_ok && uses_ok
}

/// What a route's `matches` allow, in a few words.
fn access(matches: &[MatchSpec]) -> String {
    if matches.is_empty() {
        return "any request".to_owned();
    }
    matches
        .iter()
        .map(|m| {
            let methods = m
                .methods
                .as_ref()
                .map(|ms| ms.join(","))
                .unwrap_or_else(|| "any method".to_owned());
            let paths = m
                .paths
                .as_ref()
                .map(|ps| ps.iter().map(path_text).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "any path".to_owned());
            let mut s = format!("{methods} {paths}");
            if !m.headers.is_empty() {
                let hs: Vec<String> = m
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        format!("{}: {}", n.as_str(), String::from_utf8_lossy(v.as_bytes()))
                    })
                    .collect();
                s.push_str(&format!(" with {}", hs.join(", ")));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn path_covers(sup: &(PathMatchKind, String), sub: &(PathMatchKind, String)) -> bool {
    match (sup.0, sub.0) {
        (PathMatchKind::Exact, PathMatchKind::Exact) => sup.1 == sub.1,
        (PathMatchKind::Exact, PathMatchKind::Prefix) => false,
        (PathMatchKind::Prefix, _) => sub.1.starts_with(sup.1.as_str()),
    }
}

/// Whether alternative `sup` allows every request of the cell (path, method, headers).
fn cell_covered(
    sup: &MatchSpec,
    path: Option<&(PathMatchKind, String)>,
    method: Option<&String>,
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> bool {
    let path_ok = match (&sup.paths, path) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(list), Some(p)) => list.iter().any(|s| path_covers(s, p)),
    };
    let method_ok = match (&sup.methods, method) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(list), Some(m)) => list.contains(m),
    };
    path_ok && method_ok && sup.headers.iter().all(|h| headers.contains(h))
}

/// Whether the single alternative `sup` allows everything alternative `sub` allows:
/// every path of `sub`, every method of `sub`, and no header `sub` does not require.
fn alt_covered(sup: &MatchSpec, sub: &MatchSpec) -> bool {
    let paths_ok = match (&sup.paths, &sub.paths) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(sp), Some(bp)) => bp.iter().all(|b| sp.iter().any(|s| path_covers(s, b))),
    };
    let methods_ok = match (&sup.methods, &sub.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(sm), Some(bm)) => bm.iter().all(|m| sm.contains(m)),
    };
    paths_ok && methods_ok && sup.headers.iter().all(|h| sub.headers.contains(h))
}

/// Whether the alternatives `sup` allow every request the alternatives `sub` allow.
/// Empty means the whole host.
fn covered(sup: &[MatchSpec], sub: &[MatchSpec]) -> bool {
    let any = MatchSpec {
        paths: None,
        methods: None,
        headers: Vec::new(),
    };
    let sup: Vec<&MatchSpec> = if sup.is_empty() {
        vec![&any]
    } else {
        sup.iter().collect()
    };
    let sub: Vec<&MatchSpec> = if sub.is_empty() {
        vec![&any]
    } else {
        sub.iter().collect()
    };
    sub.iter().all(|alt| {
        if sup.iter().any(|s| alt_covered(s, alt)) {
            return true;
        }
        // Split into cells: several live alternatives together may cover it.
        let n_paths = alt.paths.as_ref().map_or(1, Vec::len);
        let n_methods = alt.methods.as_ref().map_or(1, Vec::len);
        if n_paths.saturating_mul(n_methods) > MAX_CELLS {
            return false;
        }
        let paths: Vec<Option<&(PathMatchKind, String)>> = match &alt.paths {
            None => vec![None],
            Some(ps) => ps.iter().map(Some).collect(),
        };
        let methods: Vec<Option<&String>> = match &alt.methods {
            None => vec![None],
            Some(ms) => ms.iter().map(Some).collect(),
        };
        paths.iter().all(|p| {
            methods
                .iter()
                .all(|m| sup.iter().any(|s| cell_covered(s, *p, *m, &alt.headers)))
        })
    })
}

fn how(c: &CredentialSpec) -> String {
    match c.scheme.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => format!("{}: {s} <token>", c.header),
        None => format!("{}: <token>", c.header),
    }
}

fn compare(
    target: String,
    live: Option<&ValidatedRoute>,
    proposed: Option<&ValidatedRoute>,
    out: &mut Vec<Change>,
) {
    match (live, proposed) {
        (None, None) => {}
        (None, Some(p)) => {
            out.push(Change::RouteAdded {
                target: target.clone(),
                access: route_access(p),
            });
            if let Some(c) = &p.credential {
                out.push(Change::CredentialGiven {
                    target: target.clone(),
                    token: c.token_env.clone(),
                    replaces: None,
                });
            }
            if let Some(pin) = &p.connect_to {
                out.push(Change::PinChanged {
                    target,
                    before: None,
                    after: Some(format!("{}:{}", pin.host, pin.port)),
                });
            }
        }
        (Some(l), None) => out.push(Change::RouteRemoved {
            target,
            access: route_access(l),
        }),
        (Some(l), Some(p)) => {
            let before = route_access(l);
            let after = route_access(p);
            if !route_covered(l, p) {
                out.push(Change::Widened {
                    target: target.clone(),
                    before: before.clone(),
                    after: after.clone(),
                });
            }
            if !route_covered(p, l) {
                out.push(Change::Narrowed {
                    target: target.clone(),
                    before,
                    after,
                });
            }
            match (&l.credential, &p.credential) {
                (None, Some(c)) => out.push(Change::CredentialGiven {
                    target: target.clone(),
                    token: c.token_env.clone(),
                    replaces: None,
                }),
                (Some(a), Some(b)) if a.token_env != b.token_env => {
                    out.push(Change::CredentialGiven {
                        target: target.clone(),
                        token: b.token_env.clone(),
                        replaces: Some(a.token_env.clone()),
                    })
                }
                (Some(a), Some(b)) if a != b => out.push(Change::CredentialResent {
                    target: target.clone(),
                    token: b.token_env.clone(),
                    how: how(b),
                }),
                (Some(a), None) => out.push(Change::CredentialRemoved {
                    target: target.clone(),
                    token: a.token_env.clone(),
                }),
                _ => {}
            }
            if l.connect_to != p.connect_to {
                let pin = |r: &ValidatedRoute| {
                    r.connect_to
                        .as_ref()
                        .map(|t| format!("{}:{}", t.host, t.port))
                };
                out.push(Change::PinChanged {
                    target,
                    before: pin(l),
                    after: pin(p),
                });
            }
        }
    }
}

/// The effect of replacing the live routes with the proposed ones.
pub fn routes_effect(live: &EgressConfig, proposed: &EgressConfig) -> Result<Effect, EffectError> {
    let live_v = validated(live).map_err(EffectError::Live)?;
    let prop_v = validated(proposed)
        .map_err(|e| EffectError::Proposed(ValidationError::RoutesInvalid(e)))?;
    let live_p = Policy::new(live_v.clone());
    let prop_p = Policy::new(prop_v.clone());
    let default_ports: BTreeSet<u16> = [80, 443].into();
    let mut ports = default_ports.clone();
    let mut hosts = BTreeSet::new();
    for r in live_v.routes.iter().chain(&prop_v.routes) {
        hosts.insert(pattern(r));
        ports.extend(r.port);
    }
    let mut changes = Vec::new();
    for host in &hosts {
        // Ports where the same pair of routes serves the host are reported together.
        let mut groups: Vec<(Option<usize>, Option<usize>, BTreeSet<u16>)> = Vec::new();
        // Both ways in: through `CONNECT` (TLS) and as plain `http://` (a route without a
        // port is 443 for the one and 80 for the other).
        for (port, tls) in ports.iter().flat_map(|p| [(*p, true), (*p, false)]) {
            let l = live_p.route_for(host, port, tls).map(|r| r.index);
            let p = prop_p.route_for(host, port, tls).map(|r| r.index);
            if l.is_none() && p.is_none() {
                continue;
            }
            match groups.iter_mut().find(|(gl, gp, _)| (*gl, *gp) == (l, p)) {
                Some(g) => {
                    g.2.insert(port);
                }
                None => groups.push((l, p, [port].into())),
            }
        }
        for (l, p, group_ports) in groups {
            let l = l.and_then(|i| live_p.route(i));
            let p = p.and_then(|i| prop_p.route(i));
            compare(
                target(host, &group_ports, &default_ports),
                l,
                p,
                &mut changes,
            );
        }
    }
    let roots = |c: &EgressConfig| -> BTreeSet<String> {
        c.upstream_ca.iter().flatten().cloned().collect()
    };
    let (before, after) = (roots(live), roots(proposed));
    let added: Vec<String> = after.difference(&before).cloned().collect();
    let removed: Vec<String> = before.difference(&after).cloned().collect();
    if !added.is_empty() {
        changes.push(Change::TrustAdded { roots: added });
    }
    if !removed.is_empty() {
        changes.push(Change::TrustRemoved { roots: removed });
    }
    changes.extend(crate::dlp::dlp_changes(live, proposed));
    Ok(Effect::new(changes))
}

/// The live routes with the host secret `token_name` attached to every route of `host`
/// (what approving an `egress-token-allow` does; the applier uses the same function).
pub fn attach_token(
    config: &EgressConfig,
    host: &str,
    token_name: &str,
) -> Result<EgressConfig, EffectError> {
    let mut config = config.clone();
    let mut found = false;
    for route in config.routes.iter_mut().flatten() {
        if route.host == host {
            found = true;
            // Also under a running grant of the route: the credential outlasts it (a
            // token given once or for a while is stamped on afterwards, and only the
            // route it gives then goes back to this one).
            route.for_each_layer_mut(|route| {
                route.token_env = Some(token_name.to_owned());
                if route.auth_scheme.is_none() && route.auth_header.is_none() {
                    route.auth_scheme = Some("Bearer".to_owned());
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

/// The effect of applying `file` (the proposed file, or the operator's edit of it) for a
/// proposal of `tool` to the live routes `live`.
pub fn file_effect(tool: Tool, live: &str, file: &str) -> Result<Effect, EffectError> {
    match validate::parse_payload(tool, file).map_err(EffectError::Proposed)? {
        Payload::Routes(proposed) => routes_effect(&parse_live(live)?, &proposed),
        Payload::Token(t) => {
            let live = parse_live(live)?;
            let after = attach_token(&live, &t.host, &t.token_name)?;
            routes_effect(&live, &after)
        }
        Payload::Finding(fingerprint) => Ok(Effect::new([Change::FindingAllowed { fingerprint }])),
        Payload::DlpAllow(r) => {
            let live = parse_live(live)?;
            let after = crate::dlp::allow_dlp_rule(&live, &r.host, &r.rule)?;
            routes_effect(&live, &after)
        }
    }
}

/// The effect of a queued proposal against the routes it was proposed against.
pub fn proposal_effect(p: &Proposal) -> Result<Effect, EffectError> {
    file_effect(
        p.tool,
        p.current_file.as_deref().unwrap_or(""),
        &p.proposed_file,
    )
}

/// Refuses an effect that contradicts the tool: `egress-block` may only narrow or remove
/// (a block that widens anything is not a block); `egress-allow` may widen and narrow
/// (the operator sees both, the widening first); `egress-token-allow` may only give a
/// credential. A proposal that changes nothing is refused for every tool.
pub fn check_kind(tool: Tool, effect: &Effect) -> Result<(), ValidationError> {
    if effect.is_empty() {
        return Err(ValidationError::NoEffect);
    }
    let wrong: Vec<String> = match tool {
        Tool::EgressBlock => effect
            .changes
            .iter()
            .filter(|c| c.widens())
            .map(ToString::to_string)
            .collect(),
        Tool::EgressTokenAllow => effect
            .changes
            .iter()
            .filter(|c| {
                !matches!(
                    c,
                    Change::CredentialGiven { .. } | Change::CredentialResent { .. }
                )
            })
            .map(ToString::to_string)
            .collect(),
        Tool::DlpAllow => effect
            .changes
            .iter()
            .filter(|c| !matches!(c, Change::DlpAllowed { .. }))
            .map(ToString::to_string)
            .collect(),
        Tool::EgressAllow | Tool::GitleaksAllow => Vec::new(),
    };
    if wrong.is_empty() {
        Ok(())
    } else {
        let (rule, fix) = match tool {
            Tool::EgressBlock => (
                "cannot widen access",
                "send egress-allow to ask for more, or keep every route at least as strict as list-egress-routes shows",
            ),
            Tool::DlpAllow => (
                "can only let one dlp rule through to one host",
                "ask for routes with egress-allow",
            ),
            _ => (
                "can only give a host a credential",
                "ask for routes with egress-allow",
            ),
        };
        Err(ValidationError::Contradicts {
            tool: tool.as_str(),
            rule,
            changes: wrong.join("; "),
            fix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn effect(live: &str, proposed: &str) -> Vec<String> {
        routes_effect(
            &parse_live(live).unwrap(),
            &validate::parse_routes(proposed).unwrap(),
        )
        .unwrap()
        .lines()
    }

    const ADMIN_LIVE: &str = "routes:
  - host: api.example.com
    auth_scheme: Bearer
    token_env: SEC_TOKEN_A
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET]
";

    #[test]
    fn dropping_or_extending_the_end_of_a_grant_widens() {
        let live = "routes:\n  - host: a.example\n    uses: 1\n    grant: 00aa\n  - host: b.example\n    expires: 2026-05-25T12:10:00Z\n";
        let cases = [
            // the same routes: nothing
            (live.to_owned(), vec![]),
            // a once-route made permanent, a timed one made permanent
            (
                "routes:\n  - host: a.example\n  - host: b.example\n".to_owned(),
                vec![
                    "widens host a.example: any request (was any request, one request in all)",
                    "widens host b.example: any request (was any request, until 2026-05-25T12:10:00Z)",
                ],
            ),
            // another grant counts from zero again; a later expiry
            (
                "routes:\n  - host: a.example\n    uses: 1\n    grant: 00bb\n  - host: b.example\n    expires: 2026-05-25T13:00:00Z\n".to_owned(),
                vec![
                    "widens host a.example: any request, one request in all (was any request, one request in all)",
                    "widens host b.example: any request, until 2026-05-25T13:00:00Z (was any request, until 2026-05-25T12:10:00Z)",
                    "narrows host a.example: any request, one request in all (was any request, one request in all)",
                ],
            ),
        ];
        for (proposed, want) in cases {
            assert_eq!(effect(live, &proposed), want, "{proposed}");
        }
    }

    #[test]
    fn a_block_that_removes_path_and_method_limits_widens() {
        let proposed = "routes:
  - host: api.example.com
    auth_scheme: Bearer
    token_env: SEC_TOKEN_A
";
        assert_eq!(
            effect(ADMIN_LIVE, proposed),
            vec!["widens host api.example.com: any request (was GET /v1/*)"]
        );
        let e = file_effect(Tool::EgressBlock, ADMIN_LIVE, proposed).unwrap();
        assert_eq!(
            check_kind(Tool::EgressBlock, &e).unwrap_err().to_string(),
            "egress-block cannot widen access, and this proposal does: widens host api.example.com: any request (was GET /v1/*); send egress-allow to ask for more, or keep every route at least as strict as list-egress-routes shows"
        );
        assert_eq!(check_kind(Tool::EgressAllow, &e), Ok(()));
    }

    #[test]
    fn route_switches_that_let_more_through_widen() {
        let live = "routes:
  - host: ws.example.com
    matches:
      - paths: [{type: prefix, value: /ws}]
";
        let websocket = "routes:
  - host: ws.example.com
    websocket: true
    matches:
      - paths: [{type: prefix, value: /ws}]
";
        assert_eq!(
            effect(live, websocket),
            vec![
                "widens host ws.example.com: any method /ws*, websocket upgrades (was any method /ws*)"
            ]
        );
        let e = file_effect(Tool::EgressBlock, live, websocket).unwrap();
        assert!(check_kind(Tool::EgressBlock, &e).is_err());
        // Taking the switch away again narrows.
        assert_eq!(
            effect(websocket, live),
            vec![
                "narrows host ws.example.com: any method /ws* (was any method /ws*, websocket upgrades)"
            ]
        );
        let raw = "routes:
  - host: ws.example.com
    dangerously_raw_paths: true
    matches:
      - paths: [{type: prefix, value: /ws}]
";
        let e = file_effect(Tool::EgressBlock, live, raw).unwrap();
        assert!(e.widens());
        assert!(check_kind(Tool::EgressBlock, &e).is_err());
    }

    #[test]
    fn a_real_block_narrows_or_removes() {
        let live = "routes:
  - host: api.example.com
  - host: pypi.org
";
        let proposed = "routes:
  - host: api.example.com
    matches:
      - methods: [GET]
";
        let e = file_effect(Tool::EgressBlock, live, proposed).unwrap();
        assert_eq!(
            e.lines(),
            vec![
                "narrows host api.example.com: GET any path (was any request)",
                "removes host pypi.org (was any request)"
            ]
        );
        assert_eq!(check_kind(Tool::EgressBlock, &e), Ok(()));
    }

    #[test]
    fn sibling_widenings_are_each_seen() {
        let live = "routes:
  - host: api.example.com
    port: 8443
    matches:
      - paths: [{type: exact, value: /v1/a}]
        methods: [GET]
        headers: [{name: X-Scope, value: read}]
  - host: a.example.org
    matches:
      - methods: [GET]
  - host: '*.example.org'
    auth_scheme: Bearer
    token_env: ORG_TOKEN
";
        // header limit dropped
        assert_eq!(
            effect(
                live,
                &live.replace("        headers: [{name: X-Scope, value: read}]\n", "")
            ),
            vec!["widens host api.example.com:8443: GET /v1/a (was GET /v1/a with x-scope: read)"]
        );
        // exact path loosened to a prefix
        assert_eq!(
            effect(
                live,
                &live.replace("type: exact, value: /v1/a", "type: prefix, value: /v1/")
            ),
            vec![
                "widens host api.example.com:8443: GET /v1/* with x-scope: read (was GET /v1/a with x-scope: read)"
            ]
        );
        // another method
        assert_eq!(
            effect(
                live,
                &live.replace(
                    "methods: [GET]\n        headers",
                    "methods: [GET, DELETE]\n        headers"
                )
            ),
            vec![
                "widens host api.example.com:8443: GET,DELETE /v1/a with x-scope: read (was GET /v1/a with x-scope: read)"
            ]
        );
        // port left to the defaults: another host and port pair
        assert_eq!(
            effect(live, &live.replace("    port: 8443\n", "")),
            vec![
                "adds host api.example.com: GET /v1/a with x-scope: read",
                "removes host api.example.com:8443 (was GET /v1/a with x-scope: read)"
            ]
        );
        // removing the narrow exact route under the wide wildcard widens that host and
        // hands it the wildcard's credential
        assert_eq!(
            effect(
                live,
                &live.replace(
                    "  - host: a.example.org\n    matches:\n      - methods: [GET]\n",
                    ""
                )
            ),
            vec![
                "gives host a.example.org the credential ORG_TOKEN",
                "widens host a.example.org: any request (was GET any path)"
            ]
        );
        // the wildcard broadened
        let eu = "routes:\n  - host: '*.eu.example.org'\n    auth_scheme: Bearer\n    token_env: ORG_TOKEN\n";
        assert_eq!(
            effect(eu, &eu.replace("'*.eu.example.org'", "'*.example.org'")),
            vec![
                "gives host *.example.org the credential ORG_TOKEN",
                "adds host *.example.org: any request"
            ]
        );
        // the credential moved to another host
        let moved = "routes:
  - host: api.example.com
    port: 8443
    matches:
      - paths: [{type: exact, value: /v1/a}]
        methods: [GET]
        headers: [{name: X-Scope, value: read}]
  - host: a.example.org
    auth_scheme: Bearer
    token_env: ORG_TOKEN
    matches:
      - methods: [GET]
  - host: '*.example.org'
";
        assert_eq!(
            effect(live, moved),
            vec![
                "gives host a.example.org the credential ORG_TOKEN",
                "stops giving host *.example.org the credential ORG_TOKEN"
            ]
        );
        // sent in another header
        assert_eq!(
            effect(
                live,
                &live.replace("    auth_scheme: Bearer\n", "    auth_header: x-leak\n")
            ),
            vec!["sends the credential ORG_TOKEN to host *.example.org as x-leak: <token>"]
        );
    }

    #[test]
    fn split_alternatives_still_cover_and_reordering_changes_nothing() {
        let live = "routes:
  - host: a.example
    matches:
      - methods: [GET]
      - methods: [POST]
  - host: b.example
";
        let joined = "routes:
  - host: b.example
  - host: a.example
    matches:
      - methods: [POST, GET]
";
        assert_eq!(effect(live, joined), Vec::<String>::new());
        assert_eq!(
            check_kind(Tool::EgressBlock, &Effect::default()),
            Err(ValidationError::NoEffect)
        );
    }

    #[test]
    fn token_requests_give_a_credential_and_findings_are_allowed() {
        let live = "routes:\n  - host: api.github.com\n";
        let e = file_effect(
            Tool::EgressTokenAllow,
            live,
            "host: api.github.com\ntoken_name: GITHUB_TOKEN\n",
        )
        .unwrap();
        assert_eq!(
            e.lines(),
            vec!["gives host api.github.com the credential GITHUB_TOKEN"]
        );
        assert_eq!(check_kind(Tool::EgressTokenAllow, &e), Ok(()));
        assert_eq!(
            file_effect(
                Tool::EgressTokenAllow,
                live,
                "host: other.example\ntoken_name: GITHUB_TOKEN\n"
            ),
            Err(EffectError::NoRoute("other.example".into()))
        );
        let f = file_effect(Tool::GitleaksAllow, "", "c1:a.rs:rule:3\n").unwrap();
        assert_eq!(
            f.lines(),
            vec!["allows the secret-scan finding c1:a.rs:rule:3 in this bottle's pushes"]
        );
    }

    #[test]
    fn the_most_dangerous_change_comes_first() {
        let live = "routes:\n  - host: a.example\n  - host: b.example\n    matches:\n      - methods: [GET]\n";
        let proposed = "routes:
  - host: b.example
  - host: c.example
    auth_scheme: Bearer
    token_env: SEC_TOKEN_A
";
        assert_eq!(
            effect(live, proposed),
            vec![
                "gives host c.example the credential SEC_TOKEN_A",
                "adds host c.example: any request",
                "widens host b.example: any request (was GET any path)",
                "removes host a.example (was any request)"
            ]
        );
    }
}
