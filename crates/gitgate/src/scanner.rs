//! The seam between the pre-receive hook and the secret scanner: the hook asks for the
//! findings in everything a push adds (and what could not be read) and does everything else
//! (allowlist, unscannable policy, message) itself.

use std::ffi::OsString;
use std::path::Path;

/// One secret found in what a push adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFinding {
    /// Rule that matched, e.g. `aws-access-token`.
    pub rule_id: String,
    /// File the line was added to; `<commit>`, `<tag>` or `<tree>` for a secret in such an
    /// object (message, identity, path name), `<blob>` for a blob no new tree names.
    pub file: String,
    /// Line number in that file (for an object: in `git cat-file -p <commit>`).
    pub line: u64,
    /// Commit that added it; for a finding in another object, that object's id.
    pub commit: String,
    /// Allowlist key: `commit:file:rule_id:line`.
    pub fingerprint: String,
}

/// A pushed blob the scanner could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnscannedBlob {
    /// Its id.
    pub object: String,
    /// Its path in a pushed tree, or `<blob>`.
    pub path: String,
    /// Why it could not be read.
    pub reason: String,
}

/// What the scan of a push found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushScan {
    /// Possible secrets.
    pub findings: Vec<GateFinding>,
    /// Blobs that could not be scanned (refused unless the repo allows them).
    pub unscanned: Vec<UnscannedBlob>,
}

/// The scanner failed; the push is refused (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScanFailure(pub String);

/// Scans every object `git rev-list --objects <rev_args>` lists in `repo`: the lines the
/// commits add, commit and tag objects (messages, identities), tree entry names and blobs
/// whatever reaches them.
///
/// Implementations must ignore inline allow comments and the repository's own
/// `.gitleaks.toml`: only the gate's allowlist may let a finding through.
pub trait PushScanner: Send + Sync {
    /// Returns every finding and every blob it could not read; `env` is extra environment
    /// for the git the scanner runs.
    fn scan(
        &self,
        repo: &Path,
        rev_args: &[String],
        env: &[(OsString, OsString)],
    ) -> Result<PushScan, ScanFailure>;
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
    ) -> Result<PushScan, ScanFailure> {
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
