//! The real secret scanner behind the hook's [`PushScanner`] seam: the scan crate's
//! built-in rules, with inline allow comments ignored, over the lines the pushed commits add
//! and over every other pushed object, each new blob read once (see
//! `scan::Scanner::scan_push`). No repository configuration is ever read, so pushed content
//! cannot weaken its own scan.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::scanner::{GateFinding, PushScan, PushScanner, ScanFailure, UnscannedBlob};

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
    ) -> Result<PushScan, ScanFailure> {
        let req = scan::GitScanRequest {
            repo: repo.to_path_buf(),
            rev_args: rev_args.to_vec(),
            env: env.to_vec(),
        };
        // The lines the new commits add (attributed to commit, file and line), then every
        // other new object: tags, messages, identities, path names, blobs only tags reach,
        // and what cannot be read; each new blob is read once for both.
        let scan = self
            .inner
            .scan_push(&req, &scan::ObjectScanOptions::default())
            .map_err(|e| ScanFailure(e.to_string()))?;
        let (findings, unreadable) = (scan.findings, scan.unreadable);
        Ok(PushScan {
            findings: findings
                .into_iter()
                .map(|f| GateFinding {
                    rule_id: f.rule_id,
                    file: f.file,
                    line: u64::from(f.line),
                    commit: f.commit.unwrap_or_default(),
                    fingerprint: f.fingerprint,
                })
                .collect(),
            unscanned: unreadable
                .into_iter()
                .map(|u| UnscannedBlob {
                    object: u.object,
                    path: u.path,
                    reason: u.reason,
                })
                .collect(),
        })
    }
}
