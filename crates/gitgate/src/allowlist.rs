//! The per-bottle allowlist of finding fingerprints the operator approved. Read afresh on
//! every push, so an approval (supervise appends a line) takes effect on the next push.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File name of the allowlist inside the gate's state directory.
pub const ALLOWLIST_FILE: &str = "gitleaks-allow.txt";

/// Where the allowlist of a gate with this state directory lives. One fingerprint per
/// line; `#` starts a comment; blank lines are ignored.
pub fn allowlist_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ALLOWLIST_FILE)
}

/// The allowlist could not be read (the push is refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the allowed findings {path}: {source}")]
pub struct AllowlistError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Reads the allowlist; a missing file is an empty allowlist.
pub fn read_allowlist(path: &Path) -> Result<BTreeSet<String>, AllowlistError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            return Err(AllowlistError {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(parse_allowlist(&text))
}

/// Parses allowlist text.
pub fn parse_allowlist(text: &str) -> BTreeSet<String> {
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
        let set =
            parse_allowlist("# approved by ops\nabc:f.txt:aws:3  # ticket 12\n\n  def:g:r:1\n");
        assert_eq!(
            set,
            BTreeSet::from(["abc:f.txt:aws:3".to_string(), "def:g:r:1".to_string()])
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_allowlist(&allowlist_path(dir.path())).unwrap(),
            BTreeSet::new()
        );
    }
}
