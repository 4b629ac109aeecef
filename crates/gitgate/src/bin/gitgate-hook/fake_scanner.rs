//! A stand-in secret scanner used until the real scanner crate is wired in: finds AWS
//! access key ids (`AKIA` + 16 upper-case letters or digits) in added lines.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use gitgate::{GateFinding, PushScanner, ScanFailure};

/// Finds `AKIA…` access key ids in the lines the commits add.
pub struct AwsKeyScanner;

fn is_key(s: &[u8]) -> bool {
    s.len() >= 20
        && s.starts_with(b"AKIA")
        && s[4..20]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl PushScanner for AwsKeyScanner {
    fn scan(
        &self,
        repo: &Path,
        rev_args: &[String],
        env: &[(OsString, OsString)],
    ) -> Result<Vec<GateFinding>, ScanFailure> {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args([
                "log",
                "-p",
                "-U0",
                "--no-color",
                "--no-renames",
                "--format=commit %H",
            ])
            .args(rev_args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|e| ScanFailure(e.to_string()))?;
        if !out.status.success() {
            return Err(ScanFailure(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut commit, mut file, mut line) = (String::new(), String::new(), 0u64);
        let mut findings = Vec::new();
        for l in text.lines() {
            if let Some(c) = l.strip_prefix("commit ") {
                commit = c.to_string();
            } else if let Some(f) = l.strip_prefix("+++ b/") {
                file = f.to_string();
            } else if let Some(h) = l.strip_prefix("@@ ") {
                let plus = h.split_whitespace().nth(1).unwrap_or("+0");
                let start = plus
                    .trim_start_matches('+')
                    .split(',')
                    .next()
                    .unwrap_or("0");
                line = start.parse().unwrap_or(0);
            } else if let Some(added) = l.strip_prefix('+')
                && !l.starts_with("+++")
            {
                let b = added.as_bytes();
                if (0..b.len()).any(|i| is_key(&b[i..])) {
                    findings.push(GateFinding {
                        rule_id: "aws-access-token".into(),
                        file: file.clone(),
                        line,
                        commit: commit.clone(),
                        fingerprint: format!("{commit}:{file}:aws-access-token:{line}"),
                    });
                }
                line += 1;
            }
        }
        Ok(findings)
    }
}
