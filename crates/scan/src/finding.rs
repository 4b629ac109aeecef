//! A finding and its secret, which never prints itself by accident.

use std::fmt;

use serde::Serialize;

/// What a redacted secret prints as.
pub const REDACTED: &str = "REDACTED";

/// A secret value. `Debug` and `Display` print [`REDACTED`]; only [`Secret::expose`] shows it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret (invalid UTF-8 is replaced, the secret is for humans to see).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The secret itself: only for `--no-redact` output and allowlist decisions.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// One secret found by one rule at one place.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The rule that matched.
    pub rule_id: String,
    /// The rule's description.
    pub description: String,
    /// File path (relative as given or as in the repository; `-` for stdin).
    pub file: String,
    /// 1-based line of the secret (in git mode: in the file as of `commit`).
    pub line: u32,
    /// 1-based byte column of the secret in its line.
    pub column: u32,
    /// The commit that added the line, in git mode.
    pub commit: Option<String>,
    /// The secret (redacted when printed).
    pub secret: Secret,
    /// Shannon entropy of the secret, bits per byte.
    pub entropy: f64,
    /// `commit:file:rule_id:line`, or `file:rule_id:line` outside git: the key allowlists use.
    pub fingerprint: String,
    /// Where the whole match is (for gitleaks' report): its first column, last line and last
    /// column (1-based, inclusive; on line `line` unless the match spans lines).
    pub span: MatchSpan,
    /// The whole match (redacted when printed), as gitleaks' report has it.
    pub matched: Secret,
    /// The rule's tags.
    pub tags: Vec<String>,
}

/// Where a whole match starts and ends (a secret is usually part of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchSpan {
    /// 1-based column of the match's first byte.
    pub start_column: u32,
    /// Line of the match's last byte.
    pub end_line: u32,
    /// 1-based column of the match's last byte.
    pub end_column: u32,
}

impl Finding {
    /// Builds a finding and its fingerprint.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rule_id: &str,
        description: &str,
        file: &str,
        line: u32,
        column: u32,
        commit: Option<&str>,
        secret: Secret,
        entropy: f64,
    ) -> Self {
        Self {
            rule_id: rule_id.to_string(),
            description: description.to_string(),
            file: file.to_string(),
            line,
            column,
            commit: commit.map(str::to_string),
            secret,
            entropy,
            fingerprint: fingerprint(commit, file, rule_id, line),
            span: MatchSpan {
                start_column: column,
                end_line: line,
                end_column: column,
            },
            matched: Secret::default(),
            tags: Vec::new(),
        }
    }

    /// The same finding with where its whole match is, what it is, and its rule's tags.
    pub fn with_match(mut self, span: MatchSpan, matched: Secret, tags: &[String]) -> Self {
        self.span = span;
        self.matched = matched;
        self.tags = tags.to_vec();
        self
    }

    /// `commit:file:rule_id:line`, or `file:rule_id:line` outside git.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The fingerprint without its commit part (`file:rule_id:line`).
    pub fn file_fingerprint(&self) -> String {
        fingerprint(None, &self.file, &self.rule_id, self.line)
    }

    /// The JSON form (`--format json`); the secret is redacted unless `redact` is false.
    pub fn to_json(&self, redact: bool) -> FindingJson<'_> {
        FindingJson {
            rule_id: &self.rule_id,
            description: &self.description,
            file: &self.file,
            line: self.line,
            column: self.column,
            commit: self.commit.as_deref(),
            secret: if redact {
                REDACTED
            } else {
                self.secret.expose()
            },
            entropy: (self.entropy * 1000.0).round() / 1000.0,
            fingerprint: &self.fingerprint,
        }
    }
}

/// Builds a fingerprint.
pub fn fingerprint(commit: Option<&str>, file: &str, rule_id: &str, line: u32) -> String {
    match commit {
        Some(c) => format!("{c}:{file}:{rule_id}:{line}"),
        None => format!("{file}:{rule_id}:{line}"),
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} ({}) secret {}",
            self.file, self.line, self.column, self.rule_id, self.description, self.secret
        )?;
        if let Some(c) = &self.commit {
            write!(f, " in commit {c}")?;
        }
        Ok(())
    }
}

/// Serialized finding (the JSON report's element).
#[derive(Debug, Serialize)]
pub struct FindingJson<'a> {
    /// Rule id.
    pub rule_id: &'a str,
    /// Rule description.
    pub description: &'a str,
    /// File.
    pub file: &'a str,
    /// Line.
    pub line: u32,
    /// Column.
    pub column: u32,
    /// Commit or null.
    pub commit: Option<&'a str>,
    /// Secret or `REDACTED`.
    pub secret: &'a str,
    /// Entropy.
    pub entropy: f64,
    /// Fingerprint.
    pub fingerprint: &'a str,
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn secret_is_redacted_in_debug_and_display() {
        let f = Finding::new(
            "github-pat",
            "GitHub",
            "a.txt",
            3,
            7,
            None,
            Secret::from_bytes(b"hunter2-very-secret"),
            3.2,
        );
        let shown = format!("{f} {f:?} {:?} {}", f.secret, f.secret);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(REDACTED));
        assert_eq!(f.secret.expose(), "hunter2-very-secret");
        assert_eq!(f.fingerprint(), "a.txt:github-pat:3");
        let json = serde_json::to_string(&f.to_json(true)).unwrap();
        assert!(!json.contains("hunter2"));
        let json = serde_json::to_string(&f.to_json(false)).unwrap();
        assert!(json.contains("hunter2-very-secret"));
    }

    #[test]
    fn fingerprint_with_commit() {
        assert_eq!(
            fingerprint(Some("abc123"), "src/a.rs", "jwt", 9),
            "abc123:src/a.rs:jwt:9"
        );
    }

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert_eq!(shannon_entropy(b"abab"), 1.0);
        assert_eq!(shannon_entropy(b"abcd"), 2.0);
    }
}
