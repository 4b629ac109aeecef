//! Raw serde layer of the route model: exactly what a user writes, every field optional
//! where the design allows it, unknown fields rejected. Validation and matching live in
//! other modules and work on these values.

use serde::{Deserialize, Serialize};

/// What the egress proxy writes to its request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    /// No request log.
    Off,
    /// One line per blocked request (the default).
    #[default]
    Blocks,
    /// One line per request.
    All,
}

/// A bottle's `egress:` block; also the whole content of a `routes.yaml` file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Request log mode: `off`, `blocks` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogMode>,
    /// Extra PEM files trusted as roots for upstream TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<Vec<String>>,
    /// The allowlist, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
}

/// One allowed destination host, with optional request conditions and credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host name, or `*.example.com` for any subdomain.
    pub host: String,
    /// Port; default 443 for HTTPS and 80 for plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Scheme put before the token, e.g. `Bearer`; may be empty with `auth_header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    /// Name of the environment variable (on the host / in the bundle) holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Header that carries the token; default `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Operator pin `ADDR:PORT` for where the host is reached (skips the private-range check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_to: Option<String>,
    /// Alternatives; a request passes if any one matches. Absent means the whole host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<RouteMatch>>,
    /// WebSocket upgrades (requests that also pass `matches`) may leave HTTP; default false.
    /// No other upgrade ever does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<bool>,
    /// Judge and forward paths exactly as the client wrote them, even spellings an upstream
    /// may read as another path (`..;`, `%2F`, `%252e`, `\`); default false. Weakens path
    /// conditions, so only for an upstream known to read paths literally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangerously_raw_paths: Option<bool>,
    /// When the route stops allowing anything (RFC 3339, e.g. `2026-05-25T12:10:00Z`): an
    /// operator's approval `for` a duration. The egress proxy checks it on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// How many requests the route allows in all (an approval `once` is 1); the egress
    /// proxy counts them, and the route allows nothing more after the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// The proposal whose time-limited approval added the route (for the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The route as it was before a time-limited approval (`expires` / `uses`) changed it:
    /// what the route goes back to when that grant ends (a path, a method or a token given
    /// once or for a while ends; the access the host had before stays). Same host and port;
    /// written by supervise, never by an agent's proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_grant: Option<Box<Route>>,
    /// What egress does when a request on this route carries a secret (a scanner rule's
    /// finding or a copy of a credential the bottle's routes hold): `block` (the default),
    /// `redact` or `log`. The model API's routes, added by the provider, use `redact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<DlpMode>,
    /// Scanner rule ids (or `credential`) that may leave on this route: what an approved
    /// `dlp-allow` proposal adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp_allow: Option<Vec<String>>,
    /// Rules let through for a while or for a number of requests: what a `dlp-allow`
    /// approved once or for a duration adds. Each ends on its own, in the egress proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp_allow_grants: Option<Vec<DlpAllowGrant>>,
    /// Forward request bodies egress cannot scan (an unknown `Content-Encoding`, a decoded
    /// body over the decode bound) instead of refusing them; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangerously_dlp_pass_unscannable: Option<bool>,
}

impl Route {
    /// Calls `f` on the route and on every route under it (its `after_grant`, and theirs):
    /// a change meant to outlast a running grant is made on each.
    pub fn for_each_layer_mut(&mut self, mut f: impl FnMut(&mut Route)) {
        let mut route = Some(self);
        while let Some(r) = route {
            f(r);
            route = r.after_grant.as_deref_mut();
        }
    }
}

/// One rule of outbound DLP let through on a route until its grant ends (an operator's
/// `dlp-allow` approved once or for a duration).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpAllowGrant {
    /// The scanner rule id, or `credential`.
    pub rule: String,
    /// When it stops letting the rule through (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// How many requests it lets the rule through in (an approval `once` is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// The `dlp-allow` proposal that granted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

impl DlpAllowGrant {
    /// The name its requests are counted under in the egress proxy (with its `grant`): one
    /// count per route host and rule.
    pub fn count_key(host: &str, rule: &str) -> String {
        format!("{host} dlp {rule}")
    }
}

/// What egress does with a request that carries a secret (outbound DLP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DlpMode {
    /// Refuse it with a 403 naming the rule (the default).
    #[default]
    Block,
    /// Replace the secret with a fixed marker and forward the rest.
    Redact,
    /// Forward it unchanged, with a log line.
    Log,
}

impl DlpMode {
    /// The mode as written in a routes file.
    pub fn as_str(self) -> &'static str {
        match self {
            DlpMode::Block => "block",
            DlpMode::Redact => "redact",
            DlpMode::Log => "log",
        }
    }
}

/// One alternative of a route: every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Any one of these paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<PathMatch>>,
    /// Any one of these methods (upper case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// All of these headers, with these exact values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// `exact` or `prefix`.
    #[serde(rename = "type")]
    pub kind: PathMatchKind,
    /// The path, starting with `/`.
    pub value: String,
}

/// How a path condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatchKind {
    /// The request path equals the value.
    Exact,
    /// The request path starts with the value.
    Prefix,
}

/// A header condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value.
    pub value: String,
}
