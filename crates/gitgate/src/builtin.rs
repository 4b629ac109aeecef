//! The real secret scanner behind the hook's [`PushScanner`] seam: the scan crate's
//! built-in rules, with inline allow comments ignored. No repository configuration is ever
//! read, so pushed content cannot weaken its own scan.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::scanner::{GateFinding, PushScanner, ScanFailure};

/// The built-in rule set, inline allows off.
#[derive(Debug)]
pub struct BuiltinScanner {
    inner: scan::Scanner,
}

impl BuiltinScanner {
    /// Compiles the built-in rules; `git_timeout` bounds the `git log` the scan runs.
    pub fn new(git_timeout: Duration) -> Result<Self, ScanFailure> {
        let inner = scan::Scanner::builtin()
            .map_err(|e| ScanFailure(e.to_string()))?
            .with_options(scan::ScanOptions {
                honor_inline_allow: false,
                git_timeout,
                ..scan::ScanOptions::default()
            });
        Ok(BuiltinScanner { inner })
    }
}

impl PushScanner for BuiltinScanner {
    fn scan(
        &self,
        repo: &Path,
        rev_args: &[String],
        env: &[(OsString, OsString)],
    ) -> Result<Vec<GateFinding>, ScanFailure> {
        let req = scan::GitScanRequest {
            repo: repo.to_path_buf(),
            rev_args: rev_args.to_vec(),
            env: env.to_vec(),
        };
        let findings = self
            .inner
            .scan_git(&req)
            .map_err(|e| ScanFailure(e.to_string()))?;
        Ok(findings
            .into_iter()
            .map(|f| GateFinding {
                rule_id: f.rule_id,
                file: f.file,
                line: u64::from(f.line),
                commit: f.commit.unwrap_or_default(),
                fingerprint: f.fingerprint,
            })
            .collect())
    }
}
