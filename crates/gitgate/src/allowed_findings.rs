//! The per-bottle allowed findings: the finding fingerprints the operator approved. Read afresh on
//! every push, so an approval (supervise appends a line) takes effect on the next push.
//!
//! A line is a fingerprint (or `file:line`), optionally followed by tab-separated grant
//! attributes: `expires=<RFC 3339>` (an approval for a while: the line allows nothing from
//! then on), `uses=<N>` (pushes it may still let through: an approval once is `uses=1`;
//! the gate spends one after each push it let through and removes the line at zero) and
//! `grant=<proposal id>`. A line with an attribute the gate does not know allows nothing:
//! an end it cannot read is never taken for "forever".

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the allowed findings inside the gate's state directory.
pub const ALLOWED_FINDINGS_FILE: &str = "gitleaks-allow.txt";

/// Where the allowed findings of a gate with this state directory lives. One fingerprint per
/// line; `#` starts a comment; blank lines are ignored.
pub fn allowed_findings_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ALLOWED_FINDINGS_FILE)
}

/// The allowed findings could not be read or written (the push is refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the allowed findings {path}: {source}")]
pub struct AllowedFindingsError {
    /// What was being done.
    pub action: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// One allowed finding with its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedFinding {
    /// The fingerprint or `file:line`.
    pub finding: String,
    /// When it stops allowing (RFC 3339 as written).
    pub expires: Option<String>,
    /// Pushes it may still let through (0: used up, waiting to be swept).
    pub uses: Option<u32>,
    /// The proposal that granted it.
    pub grant: Option<String>,
}

impl AllowedFinding {
    /// A line for the allowed-findings file (without the newline).
    pub fn line(&self) -> String {
        let mut s = self.finding.clone();
        if let Some(e) = &self.expires {
            s.push_str(&format!("\texpires={e}"));
        }
        if let Some(u) = self.uses {
            s.push_str(&format!("\tuses={u}"));
        }
        if let Some(g) = &self.grant {
            s.push_str(&format!("\tgrant={g}"));
        }
        s
    }

    /// Whether it allows anything at `now`.
    pub fn in_force(&self, now: time::OffsetDateTime) -> bool {
        let expired = self.expires.as_deref().is_some_and(|e| {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                .map_or(true, |at| now >= at)
        });
        !expired && self.uses != Some(0)
    }
}

/// Parses one line (comment and blanks already removed); `None` for a line whose grant
/// cannot be read, which then allows nothing.
fn parse_line(line: &str) -> Option<AllowedFinding> {
    let mut parts = line.split('\t');
    let finding = parts.next()?.trim();
    if finding.is_empty() {
        return None;
    }
    let mut a = AllowedFinding {
        finding: finding.to_owned(),
        expires: None,
        uses: None,
        grant: None,
    };
    for attr in parts {
        let attr = attr.trim();
        if attr.is_empty() {
            continue;
        }
        match attr.split_once('=')? {
            ("expires", v) => a.expires = Some(v.to_owned()),
            ("uses", v) => a.uses = Some(v.parse().ok()?),
            ("grant", v) => a.grant = Some(v.to_owned()),
            _ => return None,
        }
    }
    Some(a)
}

/// Every line of allowed-findings text that parses, in order.
pub fn parse_entries(text: &str) -> Vec<AllowedFinding> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(before, _)| before).trim())
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

fn read_text(path: &Path) -> Result<String, AllowedFindingsError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(AllowedFindingsError {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads the allowed findings: those allowed now. A missing file allows none.
pub fn read_allowed_findings(path: &Path) -> Result<BTreeSet<String>, AllowedFindingsError> {
    Ok(allowed_now(
        &read_text(path)?,
        time::OffsetDateTime::now_utc(),
    ))
}

/// The findings of allowed-findings text allowed at `now`.
pub fn allowed_now(text: &str, now: time::OffsetDateTime) -> BTreeSet<String> {
    parse_entries(text)
        .into_iter()
        .filter(|a| a.in_force(now))
        .map(|a| a.finding)
        .collect()
}

/// Parses allowed-findings text, ignoring grants (every finding named, in force or not).
pub fn parse_allowed_findings(text: &str) -> BTreeSet<String> {
    parse_entries(text).into_iter().map(|a| a.finding).collect()
}

/// Holds the allowed findings' lock (a `.lock` file beside it) while `f` reads and rewrites it:
/// supervise appending an approval and the gate spending a use never lose each other's line.
fn locked<T>(
    path: &Path,
    f: impl FnOnce(&str) -> Result<(Option<String>, T), AllowedFindingsError>,
) -> Result<T, AllowedFindingsError> {
    let err = |action, source| AllowedFindingsError {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err("lock", e))?;
    lock.lock().map_err(|e| err("lock", e))?;
    let text = read_text(path)?;
    let (new, out) = f(&text)?;
    if let Some(new) = new {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp).map_err(|e| err("write", e))?;
        file.write_all(new.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| err("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| err("write", e))?;
    }
    Ok(out)
}

/// Adds an allowed finding (replacing the line of the same finding, so a new approval
/// sets a new end).
pub fn add_allowed(path: &Path, entry: &AllowedFinding) -> Result<(), AllowedFindingsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| AllowedFindingsError {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    locked(path, |text| {
        let mut out = String::new();
        for line in text.lines() {
            let body = line.split_once('#').map_or(line, |(b, _)| b).trim();
            if parse_line(body).is_some_and(|a| a.finding == entry.finding) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&entry.line());
        out.push('\n');
        Ok((Some(out), ()))
    })
}

/// After a push went through: spends one use of every limited line that allowed one of
/// `used` (findings as named in the file). A line with no use left stays as `uses=0`
/// (allowing nothing) until supervise's sweep removes it and records the end in the audit
/// log. Returns the lines used up.
pub fn spend_uses(
    path: &Path,
    used: &BTreeSet<String>,
) -> Result<Vec<AllowedFinding>, AllowedFindingsError> {
    locked(path, |text| {
        let mut out = String::new();
        let mut gone = Vec::new();
        let mut changed = false;
        for line in text.lines() {
            let body = line.split_once('#').map_or(line, |(b, _)| b).trim();
            match parse_line(body) {
                Some(mut a) if a.uses.is_some() && used.contains(&a.finding) => {
                    changed = true;
                    let left = a.uses.unwrap_or(1).saturating_sub(1);
                    a.uses = Some(left);
                    out.push_str(&a.line());
                    out.push('\n');
                    if left == 0 {
                        gone.push(a);
                    }
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Ok((changed.then_some(out), gone))
    })
}

/// Removes the lines whose time has passed (and lines without uses left); returns them.
/// `before_write` is given them first, while the file still holds them (supervise audits
/// their ends there, so that no crash between the two loses the lines).
pub fn remove_ended(
    path: &Path,
    now: time::OffsetDateTime,
    before_write: impl FnOnce(&[AllowedFinding]),
) -> Result<Vec<AllowedFinding>, AllowedFindingsError> {
    locked(path, |text| {
        let mut out = String::new();
        let mut gone = Vec::new();
        for line in text.lines() {
            let body = line.split_once('#').map_or(line, |(b, _)| b).trim();
            match parse_line(body) {
                Some(a) if !a.in_force(now) => gone.push(a),
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        let changed = !gone.is_empty();
        if changed {
            before_write(&gone);
        }
        Ok((changed.then_some(out), gone))
    })
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

    #[test]
    fn grants_end_and_unknown_ones_allow_nothing() {
        let text = "a:1\nb:2\texpires=2026-05-25T12:00:00Z\nc:3\tuses=1\tgrant=00aa\nd:4\tuses=0\ne:5\tforever=yes\nf:6\texpires=soon\n";
        let before = time::macros::datetime!(2026-05-25 11:59:59 UTC);
        let after = time::macros::datetime!(2026-05-25 12:00:00 UTC);
        assert_eq!(
            allowed_now(text, before),
            BTreeSet::from(["a:1", "b:2", "c:3"].map(String::from))
        );
        assert_eq!(
            allowed_now(text, after),
            BTreeSet::from(["a:1", "c:3"].map(String::from))
        );
    }

    #[test]
    fn a_use_is_spent_and_the_line_goes_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = allowed_findings_path(dir.path());
        std::fs::write(&path, "# kept\na:1\n").unwrap();
        let once = |f: &str, uses| AllowedFinding {
            finding: f.into(),
            expires: None,
            uses: Some(uses),
            grant: Some("00aa".into()),
        };
        add_allowed(&path, &once("b:2", 1)).unwrap();
        add_allowed(&path, &once("c:3", 2)).unwrap();
        let used = BTreeSet::from(["a:1", "b:2", "c:3"].map(String::from));
        let gone = spend_uses(&path, &used).unwrap();
        assert_eq!(gone, vec![once("b:2", 0)]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# kept\na:1\nb:2\tuses=0\tgrant=00aa\nc:3\tuses=1\tgrant=00aa\n"
        );
        let now = time::OffsetDateTime::now_utc();
        // The lines to remove are handed over while the file still holds them.
        let mut seen = None;
        let gone = remove_ended(&path, now, |gone| {
            seen = Some((gone.to_vec(), std::fs::read_to_string(&path).unwrap()));
        })
        .unwrap();
        assert_eq!(gone, vec![once("b:2", 0)]);
        assert_eq!(
            seen,
            Some((
                vec![once("b:2", 0)],
                "# kept\na:1\nb:2\tuses=0\tgrant=00aa\nc:3\tuses=1\tgrant=00aa\n".to_owned()
            ))
        );
        // Nothing ended: not called.
        remove_ended(&path, now, |_| panic!("nothing ended")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# kept\na:1\nc:3\tuses=1\tgrant=00aa\n"
        );
    }
}
