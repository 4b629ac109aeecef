//! The allowed findings: the per-bottle list of finding fingerprints the operator approved.
//! Read afresh on every push, so an approval (supervise appends a line) takes effect on the
//! next push. The file keeps its name (`gitleaks-allow.txt`, after the MCP tool that asks
//! for it), so a resumed bottle's gate reads what was approved before.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File name of the allowed findings inside the gate's state directory.
pub const ALLOWED_FINDINGS_FILE: &str = "gitleaks-allow.txt";

/// Where the allowed findings of a gate with this state directory live. One fingerprint per
/// line; `#` starts a comment; blank lines are ignored.
pub fn allowed_findings_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ALLOWED_FINDINGS_FILE)
}

/// The allowed findings could not be read (the push is refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the allowed findings {path}: {source}")]
pub struct AllowedFindingsError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Reads the allowed findings; a missing file allows none.
pub fn read_allowed_findings(path: &Path) -> Result<BTreeSet<String>, AllowedFindingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            return Err(AllowedFindingsError {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(parse_allowed_findings(&text))
}

/// Parses the allowed findings' text.
pub fn parse_allowed_findings(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(before, _)| before).trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn comments_and_blanks_are_ignored() {
        let set = parse_allowed_findings(
            "# approved by ops\nabc:f.txt:aws:3  # ticket 12\n\n  def:g:r:1\n",
        );
        assert_eq!(
            set,
            BTreeSet::from(["abc:f.txt:aws:3".to_string(), "def:g:r:1".to_string()])
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_allowed_findings(&allowed_findings_path(dir.path())).unwrap(),
            BTreeSet::new()
        );
    }
}
