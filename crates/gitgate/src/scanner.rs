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

/// A scanner that refuses every push: what a build without a secret scanner must do.
#[derive(Debug, Default)]
pub struct Unavailable;

impl PushScanner for Unavailable {
    fn scan(
        &self,
        _repo: &Path,
        _rev_args: &[String],
        _env: &[(OsString, OsString)],
    ) -> Result<Vec<GateFinding>, ScanFailure> {
        Err(ScanFailure(
            "the secret scanner is not available in this build, so no push can be checked".into(),
        ))
    }
}
