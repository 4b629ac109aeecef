//! The outbound DLP hits of every bottle, for the operator: what egress found leaving (the
//! rule, where in the request, and what it did: blocked, redacted or logged), read from each
//! bottle's egress request log. Those lines never hold the secret, only the rule and the
//! place, so nothing shown here reveals it.
//!
//! Only the end of each log is read ([`TAIL`] bytes), so a bottle with a large log costs
//! the dashboard no more than one with a small one.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use proposals::Home;

/// How much of the end of each bottle's request log is read.
pub const TAIL: u64 = 256 * 1024;

/// How many hits the dashboard keeps (the newest).
pub const KEEP: usize = 200;

/// One DLP finding of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlpHit {
    /// When the request arrived (RFC 3339).
    pub time: String,
    /// The bottle.
    pub bottle: String,
    /// The request's method.
    pub method: String,
    /// Its host.
    pub host: String,
    /// Its path (never the query).
    pub path: String,
    /// The scanner rule, `credential` or `unscannable`.
    pub rule: String,
    /// Where: `request-line`, `header <name>`, `body`, ...
    pub place: String,
    /// `blocked`, `redacted` or `logged`.
    pub action: String,
}

/// The hits in the request-log `text` of `bottle`, oldest first. Lines that are not a DLP
/// finding (or not whole: the first line of a tail) are skipped.
pub fn parse(bottle: &str, text: &str) -> Vec<DlpHit> {
    text.lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let dlp = v.get("dlp")?;
            let s = |v: &serde_json::Value, k: &str| {
                v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned()
            };
            Some(DlpHit {
                time: s(&v, "time"),
                bottle: bottle.to_owned(),
                method: s(&v, "method"),
                host: s(&v, "host"),
                path: s(&v, "path"),
                rule: s(dlp, "rule"),
                place: s(dlp, "place"),
                action: s(dlp, "action"),
            })
        })
        .collect()
}

fn tail(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len > TAIL {
        f.seek(SeekFrom::Start(len - TAIL)).ok()?;
    }
    let mut buf = Vec::new();
    f.take(TAIL).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The newest hits of every bottle in `home` (newest first, at most [`KEEP`]).
pub fn read(home: &Home) -> Vec<DlpHit> {
    let mut hits = Vec::new();
    for entry in home.list().unwrap_or_default() {
        let id = entry.identity.as_str();
        if let Some(text) = tail(&home.bottle(id).egress_log()) {
            hits.extend(parse(id, &text));
        }
    }
    hits.sort_by(|a, b| b.time.cmp(&a.time));
    hits.truncate(KEEP);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dlp_lines_become_hits() {
        let text = concat!(
            "{\"time\":\"2026-05-25T12:00:01Z\",\"method\":\"GET\",\"host\":\"a.example\",\"path\":\"/\",\"decision\":\"allowed\"}\n",
            "{\"time\":\"2026-05-25T12:00:02Z\",\"method\":\"POST\",\"host\":\"api.example\",\"path\":\"/v1\",\"decision\":\"blocked\",\"dlp\":{\"rule\":\"aws-access-key-id\",\"place\":\"body\",\"action\":\"blocked\"}}\n",
            "not json\n",
        );
        let hits = parse("claude-1a2b3", text);
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (
                hits[0].rule.as_str(),
                hits[0].place.as_str(),
                hits[0].action.as_str()
            ),
            ("aws-access-key-id", "body", "blocked")
        );
    }
}
