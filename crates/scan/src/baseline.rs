//! Fingerprints an operator has approved: findings with these fingerprints are not reported.
//!
//! Accepted files: a JSON report (ours, or gitleaks' with `Fingerprint`), or text with one
//! fingerprint per line (`#` starts a comment). An entry without a commit
//! (`file:rule_id:line`) also allows the same finding in any commit. A `.gitleaksignore` is such
//! a list. Fingerprints written by gitleaks name its default rules: an entry naming a gitleaks
//! default rule id allows the finding of each built-in rule that id maps to (see
//! `config/gitleaks_ids.rs`), so a gitleaks baseline carries over.

use std::collections::HashSet;
use std::path::Path;

use crate::config::gitleaks_ids_of;
use crate::error::ScanError;
use crate::finding::{Finding, fingerprint};

/// A set of approved fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    fingerprints: HashSet<String>,
}

impl Baseline {
    /// An empty baseline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a baseline file (JSON report or text list).
    pub fn from_file(path: &Path) -> Result<Self, ScanError> {
        let text =
            state::read::read_limited_to_string(path, state::read::REPORT_LIMIT).map_err(|e| {
                ScanError::Baseline {
                    path: path.to_path_buf(),
                    message: format!("cannot read it: {e}"),
                }
            })?;
        Self::parse(&text).map_err(|message| ScanError::Baseline {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a baseline (JSON report or text list).
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_start();
        let mut set = HashSet::new();
        if trimmed.starts_with('[') {
            let value: serde_json::Value =
                serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON report: {e}"))?;
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let fp = item
                    .get("fingerprint")
                    .or_else(|| item.get("Fingerprint"))
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        format!("finding {} of the JSON report has no fingerprint", i + 1)
                    })?;
                set.insert(fp.to_string());
            }
        } else {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    set.insert(normalize(line));
                }
            }
        }
        Ok(Self { fingerprints: set })
    }

    /// Adds one fingerprint.
    pub fn insert(&mut self, fingerprint: impl Into<String>) {
        self.fingerprints.insert(normalize(&fingerprint.into()));
    }

    /// Adds every fingerprint of another baseline (a `.gitleaksignore` and `--baseline`).
    pub fn extend(&mut self, other: Baseline) {
        self.fingerprints.extend(other.fingerprints);
    }

    /// Number of fingerprints.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    /// Whether the finding is approved.
    pub fn allows(&self, f: &Finding) -> bool {
        if self.fingerprints.is_empty() {
            return false;
        }
        let listed = |rule_id: &str| {
            self.fingerprints
                .contains(&fingerprint(f.commit.as_deref(), &f.file, rule_id, f.line))
                || (f.commit.is_some()
                    && self
                        .fingerprints
                        .contains(&fingerprint(None, &f.file, rule_id, f.line)))
        };
        listed(&f.rule_id) || gitleaks_ids_of(&f.rule_id).any(listed)
    }
}

/// gitleaks normalises the path part of a `.gitleaksignore` entry to `/` separators (entries
/// written on Windows); so do we.
fn normalize(entry: &str) -> String {
    let parts: Vec<&str> = entry.split(':').collect();
    let at = match parts.len() {
        3 => 0,
        4 => 1,
        _ => return entry.to_string(),
    };
    if !parts[at].contains('\\') {
        return entry.to_string();
    }
    let mut parts: Vec<String> = parts.into_iter().map(str::to_string).collect();
    parts[at] = parts[at].replace('\\', "/");
    parts.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Secret;
    use pretty_assertions::assert_eq;

    fn finding(commit: Option<&str>) -> Finding {
        Finding::new("jwt", "d", "a/b.txt", 4, 1, commit, Secret::default(), 0.0)
    }

    #[test]
    fn text_list_with_comments() {
        let b = Baseline::parse("# approved\nabc:a/b.txt:jwt:4  # ok\n\nx:y:z:1\n").unwrap();
        assert_eq!(b.len(), 2);
        assert!(b.allows(&finding(Some("abc"))));
        assert!(!b.allows(&finding(Some("abd"))));
        assert!(!b.allows(&finding(None)));
    }

    #[test]
    fn gitleaks_rule_ids_and_windows_paths_carry_over() {
        let f = Finding::new(
            "generic-secret",
            "d",
            "a/b.txt",
            4,
            1,
            None,
            Secret::default(),
            0.0,
        );
        let b = Baseline::parse("a\\b.txt:generic-api-key:4\n").unwrap();
        assert!(b.allows(&f));
        assert!(
            !Baseline::parse("a/b.txt:github-pat:4\n")
                .unwrap()
                .allows(&f)
        );
    }

    #[test]
    fn commitless_entry_allows_any_commit() {
        let b = Baseline::parse("a/b.txt:jwt:4\n").unwrap();
        assert!(b.allows(&finding(Some("abc"))));
        assert!(b.allows(&finding(None)));
    }

    #[test]
    fn gitleaks_and_own_json_reports() {
        let b = Baseline::parse(r#"[{"Fingerprint":"a/b.txt:jwt:4"},{"fingerprint":"q:r:s:1"}]"#)
            .unwrap();
        assert_eq!(b.len(), 2);
        assert!(b.allows(&finding(None)));
        let err = Baseline::parse(r#"[{"RuleID":"x"}]"#).unwrap_err();
        assert_eq!(err, "finding 1 of the JSON report has no fingerprint");
    }
}
