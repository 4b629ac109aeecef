//! Outbound DLP: every request the agent sends (request line, the headers egress does not
//! set itself, the body) is looked at for secrets before it leaves, with the scanner's rules
//! and for exact copies of the credentials the routes hold. A credential may leave only in
//! the header egress injects it into; the agent echoing it anywhere else is a finding.
//!
//! The route decides what a finding does (`dlp: block | redact | log`): `block` refuses the
//! request with a 403 naming the rule (the agent can ask for a `dlp-allow` through
//! supervise), `redact` replaces the secret with [`MARKER`] and forwards the rest, `log`
//! forwards it unchanged. Every finding is a line of the request log, without the secret.
//!
//! Bodies are never buffered whole: they stream through a window ([`window::Window`]) that
//! holds back the last bytes until what follows them is seen, so a secret split across
//! chunks is caught before any byte of it goes out. `gzip`, `deflate`, `br` and `zstd`
//! bodies are decoded (up to [`DECODE_LIMIT`]) and forwarded decoded; a body that cannot be
//! scanned is refused unless the route says `dangerously_dlp_pass_unscannable`.
//!
//! After a WebSocket upgrade, every message the agent sends (and every control frame) is
//! judged the same way before any of it goes ([`websocket`]).

pub(crate) mod body;
pub(crate) mod decode;
pub(crate) mod head;
pub(crate) mod request;
pub(crate) mod websocket;
pub(crate) mod window;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use policy::DlpMode;

/// What a redacted secret is replaced with: safe in a URI, a header and a JSON string.
pub const MARKER: &str = "BOT_BOTTLE_REDACTED";

/// The rule id of a copy of a route's credential.
pub const CREDENTIAL_RULE: &str = "credential";

/// Decoded request bodies larger than this cannot be scanned (a compression bomb would
/// otherwise be forwarded at its decoded size).
pub const DECODE_LIMIT: u64 = 64 * 1024 * 1024;

/// Tokens shorter than this are not looked for: they would match ordinary text.
const MIN_CREDENTIAL_LEN: usize = 8;

/// At most this many findings of one request are logged.
pub(crate) const MAX_LOGGED_HITS: usize = 16;

/// The DLP settings of one route.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteDlp {
    pub mode: DlpMode,
    pub allow: Vec<String>,
    pub pass_unscannable: bool,
    /// The route's host as written (what its grants are counted under).
    pub host: String,
    /// Rules let through until their grant ends.
    pub grants: Vec<policy::DlpGrant>,
    /// The grants the request being judged used (set per request; none: grants let
    /// nothing through).
    pub taken: Option<Arc<crate::grant::Taken>>,
}

impl RouteDlp {
    pub(crate) fn of(route: &policy::ValidatedRoute) -> RouteDlp {
        RouteDlp {
            mode: route.dlp,
            allow: route.dlp_allow.clone(),
            pass_unscannable: route.dangerously_dlp_pass_unscannable,
            host: route.host_text.clone(),
            grants: route.dlp_allow_grants.clone(),
            taken: None,
        }
    }

    fn allows(&self, rule: &str) -> bool {
        self.allow.iter().any(|a| a == rule)
            || self
                .taken
                .as_ref()
                .is_some_and(|t| t.allows(&self.host, &self.grants, rule))
    }
}

/// One secret found in some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The scanner rule id, or [`CREDENTIAL_RULE`].
    pub rule: String,
    /// Where the secret is in the bytes scanned. For a secret found only after decoding an
    /// encoded run, the run's start and one byte: it cannot be cut out exactly.
    pub span: Range<usize>,
    /// Whether `span` is exactly the secret's bytes (then it can be redacted).
    pub exact: bool,
}

/// Why a request was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A secret, on a route in `block` mode (or one that cannot be redacted).
    Secret { rule: String, place: &'static str },
    /// A body egress cannot read.
    Unscannable { why: String },
}

impl Stop {
    pub(crate) fn rule(&self) -> &str {
        match self {
            Stop::Secret { rule, .. } => rule,
            Stop::Unscannable { .. } => "unscannable",
        }
    }
}

/// The error a request body ends with when DLP stops it (the upstream sees an aborted body).
#[derive(Debug, thiserror::Error)]
#[error("bot-bottle egress dlp stopped the request body ({rule})")]
pub struct DlpStopped {
    /// The rule.
    pub rule: String,
}

/// Built-in rules DLP leaves to the file scanner and the git gate.
///
/// `generic-keyed-secret` takes any random-looking value after a name holding `key`, `api`,
/// `access`, `auth` or `token` (gitleaks' `generic-api-key`): in files a finding is a line for
/// a human to judge, but a request is stopped (`block` is the default) and every HTTP header
/// is such a pair. The agents' own clients send `x-goog-api-client: google-genai-sdk/1.30.0 …`
/// on every model call, so the rule stopped the Gemini CLI's first request. What it would add
/// here is covered without it: real credentials by the exact match, known key formats by
/// their own rules, `password` / `secret` / `token` assignments by the narrower generic rules.
pub(crate) const RULES_LEFT_OUT: &[&str] = &["generic-keyed-secret"];

/// The built-in scanner without [`RULES_LEFT_OUT`], compiled once per process.
pub(crate) fn scanner() -> Result<Arc<scan::Scanner>, String> {
    static SCANNER: OnceLock<Result<Arc<scan::Scanner>, String>> = OnceLock::new();
    SCANNER
        .get_or_init(|| {
            let mut rules = scan::RuleSet::builtin().map_err(|e| e.to_string())?;
            rules
                .rules
                .retain(|r| !RULES_LEFT_OUT.contains(&r.id.as_str()));
            Ok(Arc::new(scan::Scanner::from_rules(rules).with_options(
                scan::ScanOptions {
                    honor_inline_allow: false,
                    // a body's batches are judged on a thread of their own already
                    // (`body`): no rayon worker spinning beside the proxy for each
                    decode_beside: false,
                    ..scan::ScanOptions::default()
                },
            )))
        })
        .clone()
}

/// What a generation of routes looks for: the scanner's rules and its credentials.
pub(crate) struct Detector {
    scanner: Arc<scan::Scanner>,
    credentials: Option<Credentials>,
}

/// The credentials' spellings, searched twice over: whether any occurs at all ([`Any`]:
/// leftmost semantics, which let the crate's SIMD search serve a few patterns), and only then
/// every occurrence, overlapping ones included (so that redaction covers the union of
/// them). Any occurrence of any pattern is a match under either semantics, so the first
/// search answers "none" exactly when the second would find nothing; on a body without a
/// credential (nearly every body) the overlapping search, which walks its automaton a byte
/// at a time wherever the prefilter's candidate bytes are common, never runs.
struct Credentials {
    any: Any,
    every: AhoCorasick,
}

/// Whether any spelling occurs: Teddy (the crate's SIMD search for a few literals) where the
/// processor and the patterns allow it, else an automaton with leftmost semantics (whose
/// prefilter, two "rare" bytes, finds candidates at every hex digit of a JSON body).
enum Any {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Any {
    fn is_match(&self, data: &[u8]) -> bool {
        match self {
            Any::Packed(s) => s.find(data).is_some(),
            Any::Automaton(ac) => ac.is_match(data),
        }
    }
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector for these tokens: each looked for as written, base64-encoded and in hex.
    pub(crate) fn new(scanner: Arc<scan::Scanner>, tokens: &[&str]) -> Result<Detector, String> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for t in tokens.iter().filter(|t| t.len() >= MIN_CREDENTIAL_LEN) {
            let b = t.as_bytes();
            patterns.push(b.to_vec());
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(b);
            patterns.push(b64.into_bytes());
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            patterns.push(url.into_bytes());
            patterns.push(hex_lower(b).into_bytes());
        }
        patterns.sort();
        patterns.dedup();
        let credentials = if patterns.is_empty() {
            None
        } else {
            let built = |kind| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(false)
                    .match_kind(kind)
                    .build(&patterns)
                    .map_err(|e| format!("cannot build the credential matcher: {e}"))
            };
            let any = match aho_corasick::packed::Searcher::new(&patterns) {
                Some(packed) => Any::Packed(packed),
                None => Any::Automaton(built(MatchKind::LeftmostFirst)?),
            };
            Some(Credentials {
                any,
                every: built(MatchKind::Standard)?,
            })
        };
        Ok(Detector {
            scanner,
            credentials,
        })
    }

    /// Every secret in `data`, in order of position.
    pub(crate) fn find(&self, data: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        if let Some(c) = self.credentials.as_ref().filter(|c| c.any.is_match(data)) {
            for m in c.every.find_overlapping_iter(data) {
                hits.push(Hit {
                    rule: CREDENTIAL_RULE.to_string(),
                    span: m.start()..m.end(),
                    exact: true,
                });
            }
        }
        let findings = self.scanner.scan_bytes("egress-request", data);
        if !findings.is_empty() {
            let starts = line_starts(data);
            for f in findings {
                let line = (f.line as usize).saturating_sub(1);
                let at = starts
                    .get(line)
                    .map_or(0, |s| s + (f.column as usize).saturating_sub(1))
                    .min(data.len());
                let secret = f.secret.expose().as_bytes();
                let exact = !secret.is_empty() && data[at..].starts_with(secret);
                let span = if exact {
                    at..at + secret.len()
                } else if let Some(p) = find_bytes(data, secret) {
                    p..p + secret.len()
                } else {
                    at..(at + 1).min(data.len().max(at))
                };
                let exact = exact || find_bytes(data, secret).is_some_and(|p| p == span.start);
                hits.push(Hit {
                    rule: f.rule_id,
                    span,
                    exact,
                });
            }
        }
        hits.sort_by_key(|h| (h.span.start, h.span.end));
        hits
    }
}

fn line_starts(data: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(memchr::memchr_iter(b'\n', data).map(|i| i + 1));
    starts
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

fn hex_lower(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// One finding, as the request log shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DlpLog {
    /// The scanner rule id, `credential`, or `unscannable`.
    pub rule: String,
    /// Where: `request-line`, `header <name>`, `body`, `trailer <name>`, `websocket message`,
    /// `websocket ping` / `pong` / `close`.
    pub place: String,
    /// `blocked`, `redacted` or `logged`.
    pub action: &'static str,
}

/// Receives the findings of one request (to be logged).
pub(crate) type Report = Arc<dyn Fn(DlpLog) + Send + Sync>;

/// What the mode does with the hits of one piece of a request, in place: the hits that are
/// not allowed are reported and, in `redact` mode, cut out of `data`. Returns the stop in
/// `block` mode (or for a hit that cannot be redacted).
pub(crate) fn apply(
    route: &RouteDlp,
    hits: Vec<Hit>,
    data: &mut Vec<u8>,
    place: &str,
    report: &Report,
) -> Result<(), Stop> {
    let hits: Vec<Hit> = hits
        .into_iter()
        .filter(|h| !route.allows(&h.rule))
        .collect();
    if hits.is_empty() {
        return Ok(());
    }
    let stop = |rule: &str| Stop::Secret {
        rule: rule.to_string(),
        place: static_place(place),
    };
    match route.mode {
        DlpMode::Log => {
            for h in &hits {
                report(DlpLog {
                    rule: h.rule.clone(),
                    place: place.to_string(),
                    action: "logged",
                });
            }
            Ok(())
        }
        DlpMode::Block => {
            report(DlpLog {
                rule: hits[0].rule.clone(),
                place: place.to_string(),
                action: "blocked",
            });
            Err(stop(&hits[0].rule))
        }
        DlpMode::Redact => {
            if let Some(h) = hits.iter().find(|h| !h.exact) {
                report(DlpLog {
                    rule: h.rule.clone(),
                    place: place.to_string(),
                    action: "blocked",
                });
                return Err(stop(&h.rule));
            }
            redact(data, &hits);
            for h in &hits {
                report(DlpLog {
                    rule: h.rule.clone(),
                    place: place.to_string(),
                    action: "redacted",
                });
            }
            Ok(())
        }
    }
}

/// Replaces each hit's span (merged where they overlap) with [`MARKER`].
pub(crate) fn redact(data: &mut Vec<u8>, hits: &[Hit]) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = hits.iter().map(|h| h.span.clone()).collect();
    spans.sort_by_key(|s| s.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    let mut placed = Vec::new();
    for s in &merged {
        out.extend_from_slice(&data[at..s.start]);
        placed.push(out.len()..out.len() + MARKER.len());
        out.extend_from_slice(MARKER.as_bytes());
        at = s.end;
    }
    out.extend_from_slice(&data[at..]);
    *data = out;
    placed
}

fn static_place(place: &str) -> &'static str {
    if place == "body" {
        "body"
    } else if place == "host" {
        "host name"
    } else if place == "request-line" {
        "request line"
    } else if place.starts_with("trailer") {
        "trailers"
    } else if place.starts_with("websocket") {
        "websocket message"
    } else {
        "headers"
    }
}

/// The text of a DLP refusal: what was found, where, and how to ask for it.
pub(crate) fn refusal_text(stop: &Stop, method: &str, target: &str, host: &str) -> String {
    match stop {
        Stop::Secret { rule, place } => format!(
            "bot-bottle egress blocked {method} {target}: the request's {place} carries a secret \
             (rule {rule}); it was not sent.\n\
             If it must go, ask the operator with the dlp-allow MCP tool (rule: {rule}, host: {host}), \
             then send the request again.\n"
        ),
        Stop::Unscannable { why } => format!(
            "bot-bottle egress blocked {method} {target}: the request body cannot be scanned for \
             secrets ({why}); send it uncompressed or with gzip, deflate, br or zstd.\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const AWS: &str = "AKIAZ3MSJV4WWNKWW5FG";

    fn detector(tokens: &[&str]) -> Detector {
        Detector::new(scanner().unwrap(), tokens).unwrap()
    }

    #[test]
    fn the_rules_left_out_are_built_in_rules_and_only_they_are_missing() {
        let all = scan::RuleSet::builtin().unwrap();
        let dlp = scanner().unwrap();
        for id in RULES_LEFT_OUT {
            assert!(all.rule(id).is_some(), "{id} is not a built-in rule");
            assert!(dlp.rules().iter().all(|r| r.id != *id), "{id} is in DLP");
        }
        assert_eq!(dlp.rules().len() + RULES_LEFT_OUT.len(), all.rules.len());
    }

    #[test]
    fn finds_a_scanner_rule_and_a_credential_with_exact_spans() {
        let d = detector(&["tok-0123456789abcdef"]);
        let data = format!("{{\"k\":\"{AWS}\",\"t\":\"tok-0123456789abcdef\"}}");
        let hits = d.find(data.as_bytes());
        let got: Vec<(String, &str, bool)> = hits
            .iter()
            .map(|h| (h.rule.clone(), &data[h.span.clone()], h.exact))
            .collect();
        assert_eq!(
            got,
            vec![
                ("aws-access-key-id".to_string(), AWS, true),
                (CREDENTIAL_RULE.to_string(), "tok-0123456789abcdef", true),
            ]
        );
    }

    /// Overlapping copies of credentials are each found (the quick "any at all" search
    /// decides only whether the overlapping search runs), and a body with a near miss of
    /// every spelling has no credential hit.
    #[test]
    fn overlapping_credentials_are_each_found_and_near_misses_are_not() {
        let d = detector(&["abcdefghijklmnop", "ijklmnopqrstuvwx"]);
        let data = "x abcdefghijklmnopqrstuvwx y";
        let spans: Vec<&str> = d
            .find(data.as_bytes())
            .iter()
            .filter(|h| h.rule == CREDENTIAL_RULE)
            .map(|h| &data[h.span.clone()])
            .collect();
        assert_eq!(spans, vec!["abcdefghijklmnop", "ijklmnopqrstuvwx"]);
        let token = "tok-0123456789abcdef";
        let d = detector(&[token]);
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(token);
        let hex = hex_lower(token.as_bytes());
        for spelling in [token.to_string(), b64, hex] {
            let cut = &spelling[..spelling.len() - 1];
            let near = format!("{cut} {cut}");
            assert!(
                d.find(near.as_bytes())
                    .iter()
                    .all(|h| h.rule != CREDENTIAL_RULE),
                "{near}"
            );
            let whole = format!("{near}{}", &spelling[spelling.len() - 1..]);
            assert_eq!(
                d.find(whole.as_bytes())
                    .iter()
                    .filter(|h| h.rule == CREDENTIAL_RULE)
                    .count(),
                1,
                "{whole}"
            );
        }
    }

    #[test]
    fn keys_on_the_borders_of_the_keyword_search_lanes_are_found() {
        // A window of a large body is searched for keywords in four lanes (`scan` engine,
        // `lane_hits`): a key whose keyword sits across a lane's border, at every offset,
        // and a base64-encoded one there (the decoding pass's candidate search), are found
        // with their exact place.
        let d = detector(&[]);
        let n = 150_000;
        let filler: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("key={AWS}"));
        for border in [n / 4, n / 2, 3 * n / 4] {
            for back in 0..AWS.len() + 2 {
                let mut data = filler.clone();
                let at = border - back;
                data[at - 1] = b' ';
                data[at..at + AWS.len()].copy_from_slice(AWS.as_bytes());
                data[at + AWS.len()] = b' ';
                let hits = d.find(&data);
                assert!(
                    hits.iter().any(|h| h.rule == "aws-access-key-id"
                        && h.exact
                        && h.span == (at..at + AWS.len())),
                    "key at {at} ({back} before the border {border}): {hits:?}"
                );
                let mut data = filler.clone();
                data[at - 1] = b' ';
                data[at..at + encoded.len()].copy_from_slice(encoded.as_bytes());
                data[at + encoded.len()] = b' ';
                let hits = d.find(&data);
                assert!(
                    hits.iter().any(|h| h.rule == "aws-access-key-id"),
                    "encoded key at {at} ({back} before the border {border}): {hits:?}"
                );
            }
        }
    }

    #[test]
    fn a_credential_in_base64_or_hex_is_found() {
        let d = detector(&["tok-0123456789abcdef"]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("tok-0123456789abcdef");
        let hex = hex_lower(b"tok-0123456789abcdef");
        for data in [b64, hex] {
            let rules: Vec<String> = d
                .find(data.as_bytes())
                .into_iter()
                .map(|h| h.rule)
                .collect();
            assert!(
                rules.contains(&CREDENTIAL_RULE.to_string()),
                "{data}: {rules:?}"
            );
        }
    }

    #[test]
    fn redact_replaces_merged_spans() {
        let mut data = b"a SECRET1 b SECRET2SECRET3 c".to_vec();
        let hit = |r: Range<usize>| Hit {
            rule: "x".into(),
            span: r,
            exact: true,
        };
        redact(&mut data, &[hit(2..9), hit(12..19), hit(19..26)]);
        assert_eq!(
            String::from_utf8(data).unwrap(),
            format!("a {MARKER} b {MARKER} c")
        );
    }
}
