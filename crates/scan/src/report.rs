//! Rendering findings: text for people, JSON for scripts, SARIF 2.1.0 for code scanning.

use serde_json::{Value, json};

use crate::finding::{Finding, REDACTED};

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per finding.
    Text,
    /// A JSON array of findings.
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// gitleaks' JSON report (its key names), for tools that read gitleaks reports.
    Gitleaks,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            "sarif" => Ok(Self::Sarif),
            "gitleaks" => Ok(Self::Gitleaks),
            other => Err(format!(
                "unknown format `{other}`; use text, json, sarif or gitleaks"
            )),
        }
    }
}

/// A rule as described in a SARIF report.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    /// Rule id.
    pub id: String,
    /// Description.
    pub description: String,
}

/// Renders a report. `rules` are listed in SARIF's tool section; `version` is the tool version.
pub fn render(
    format: Format,
    findings: &[Finding],
    rules: &[RuleInfo],
    redact: bool,
    version: &str,
) -> String {
    match format {
        Format::Text => render_text(findings, redact),
        Format::Json => render_json(findings, redact),
        Format::Sarif => render_sarif(findings, rules, redact, version),
        Format::Gitleaks => render_gitleaks(findings, redact),
    }
}

/// gitleaks' JSON report: an array of objects with its key names (`RuleID`, `StartLine`,
/// `Secret`, `Fingerprint`, ...), indented as gitleaks indents it. Commit metadata gitleaks
/// reads from the log (author, email, date, message) is empty: the scanner does not read it.
/// Redacted: `Secret` is `REDACTED`, and so is the secret inside `Match`.
pub fn render_gitleaks(findings: &[Finding], redact: bool) -> String {
    let list: Vec<GitleaksFinding<'_>> = findings
        .iter()
        .map(|f| {
            let secret = if redact { REDACTED } else { f.secret.expose() };
            let matched = match (redact, f.matched.expose()) {
                _ if f.line == 0 && f.matched.expose().is_empty() => {
                    format!("file detected: {}", f.file)
                }
                (_, "") => secret.to_string(),
                (true, m) if !f.secret.expose().is_empty() => {
                    m.replace(f.secret.expose(), REDACTED)
                }
                (true, _) => REDACTED.to_string(),
                (false, m) => m.to_string(),
            };
            GitleaksFinding {
                rule_id: &f.rule_id,
                description: &f.description,
                start_line: f.line,
                end_line: f.span.end_line,
                start_column: f.span.start_column,
                end_column: f.span.end_column,
                matched,
                secret,
                file: &f.file,
                symlink_file: "",
                commit: f.commit.as_deref().unwrap_or(""),
                entropy: (f.entropy * 1000.0).round() / 1000.0,
                author: "",
                email: "",
                date: "",
                message: "",
                tags: &f.tags,
                fingerprint: &f.fingerprint,
            }
        })
        .collect();
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(&list, &mut ser).is_err() {
        return "[]\n".into();
    }
    let mut s = String::from_utf8(buf).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// One line per finding: `file:line:column: rule_id: description [commit c] secret S`.
pub fn render_text(findings: &[Finding], redact: bool) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}:{}:{}: {}: {}",
            f.file, f.line, f.column, f.rule_id, f.description
        ));
        if let Some(c) = &f.commit {
            out.push_str(&format!(" [commit {c}]"));
        }
        let secret = if redact { REDACTED } else { f.secret.expose() };
        out.push_str(&format!(" secret {secret} fingerprint {}\n", f.fingerprint));
    }
    out
}

/// A JSON array of findings (pretty-printed).
pub fn render_json(findings: &[Finding], redact: bool) -> String {
    let list: Vec<_> = findings.iter().map(|f| f.to_json(redact)).collect();
    let mut s = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

/// SARIF 2.1.0, as GitHub code scanning accepts it.
pub fn render_sarif(
    findings: &[Finding],
    rules: &[RuleInfo],
    redact: bool,
    version: &str,
) -> String {
    let rule_index = |id: &str| rules.iter().position(|r| r.id == id);
    let sarif_rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.description },
                "fullDescription": { "text": format!("{}: a secret that must not be committed", r.description) },
                "help": { "text": "Remove the secret from the file and from git history, and revoke it." },
                "defaultConfiguration": { "level": "error" },
                "properties": { "tags": ["security", "secret"], "precision": "high", "security-severity": "8.0" }
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut message = format!("{} found ({})", f.description, f.rule_id);
            if let Some(c) = &f.commit {
                message.push_str(&format!(" in commit {c}"));
            }
            let mut props = json!({
                "entropy": (f.entropy * 1000.0).round() / 1000.0,
                "fingerprint": f.fingerprint,
                "secret": if redact { REDACTED } else { f.secret.expose() },
            });
            if let Some(c) = &f.commit {
                props["commit"] = json!(c);
            }
            let mut result = json!({
                "ruleId": f.rule_id,
                "level": "error",
                "message": { "text": message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.file), "uriBaseId": "%SRCROOT%" },
                        "region": { "startLine": f.line.max(1), "startColumn": f.column.max(1) }
                    }
                }],
                "partialFingerprints": { "botBottleFingerprint/v1": f.fingerprint },
                "properties": props,
            });
            if let Some(i) = rule_index(&f.rule_id) {
                result["ruleIndex"] = json!(i);
            }
            result
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "bot-bottle-scan",
                    "semanticVersion": version,
                    "version": version,
                    "rules": sarif_rules,
                }
            },
            "results": results,
        }]
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// One finding of gitleaks' JSON report, its keys in its order.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct GitleaksFinding<'a> {
    #[serde(rename = "RuleID")]
    rule_id: &'a str,
    description: &'a str,
    start_line: u32,
    end_line: u32,
    start_column: u32,
    end_column: u32,
    #[serde(rename = "Match")]
    matched: String,
    secret: &'a str,
    file: &'a str,
    symlink_file: &'a str,
    commit: &'a str,
    entropy: f64,
    author: &'a str,
    email: &'a str,
    date: &'a str,
    message: &'a str,
    tags: &'a [String],
    fingerprint: &'a str,
}

/// A relative URI reference for a path: unreserved characters and `/` kept, the rest
/// percent-encoded; a leading `./` dropped.
fn uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn uri_encoding() {
        assert_eq!(uri("./src/a b#c.txt"), "src/a%20b%23c.txt");
        assert_eq!(uri("/abs/ok-1.rs"), "/abs/ok-1.rs");
    }

    #[test]
    fn format_parse() {
        assert_eq!("sarif".parse::<Format>(), Ok(Format::Sarif));
        assert_eq!(
            "xml".parse::<Format>(),
            Err("unknown format `xml`; use text, json, sarif or gitleaks".to_string())
        );
    }
}
