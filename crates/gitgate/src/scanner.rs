//! The seam between the pre-receive hook and the secret scanner: the hook asks for the
//! findings in a commit range and does everything else (allowlist, message) itself.

use std::ffi::OsString;
use std::path::Path;

/// One secret found in pushed commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFinding {
    /// Rule that matched, e.g. `aws-access-token`.
    pub rule_id: String,
    /// File the line was added to.
    pub file: String,
    /// Line number in that file.
    pub line: u64,
    /// Commit that added it.
    pub commit: String,
    /// Allowlist key: `commit:file:rule_id:line`.
    pub fingerprint: String,
}

/// The scanner failed; the push is refused (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScanFailure(pub String);

/// Scans the lines added by the commits `git rev-list <rev_args>` lists in `repo`.
///
/// Implementations must ignore inline allow comments and the repository's own
/// `.gitleaks.toml`: only the gate's allowlist may let a finding through.
pub trait PushScanner: Send + Sync {
    /// Returns every finding; `env` is extra environment for the git the scanner runs.
    fn scan(
        &self,
        repo: &Path,
        rev_args: &[String],
        env: &[(OsString, OsString)],
    ) -> Result<Vec<GateFinding>, ScanFailure>;
}

/// A scanner that refuses every push, saying why: what the hook uses when the real scanner
/// cannot be set up (fail closed).
#[derive(Debug, Default)]
pub struct Unavailable(pub String);

impl PushScanner for Unavailable {
    fn scan(
        &self,
        _repo: &Path,
        _rev_args: &[String],
        _env: &[(OsString, OsString)],
    ) -> Result<Vec<GateFinding>, ScanFailure> {
        Err(ScanFailure(format!(
            "the secret scanner is not available ({}), so no push can be checked",
            self.0
        )))
    }
}

/// How long the scan's `git log` may run inside the hook.
pub const SCAN_GIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The scanner the pre-receive hook uses: the built-in rules with inline allows off, or,
/// if they cannot be loaded, one that refuses every push with the reason.
pub fn push_scanner() -> Box<dyn PushScanner> {
    match crate::builtin::BuiltinScanner::new(SCAN_GIT_TIMEOUT) {
        Ok(s) => Box::new(s),
        Err(e) => Box::new(Unavailable(e.0)),
    }
}
