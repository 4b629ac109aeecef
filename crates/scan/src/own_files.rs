//! The scan's own input files (the rule file in use, the baseline), which a scan leaves out.
//!
//! Why: gitleaks skips the fragment whose path is its config file's or its baseline's (its
//! detector compares each file's path with them), so a `.gitleaks.toml` with example secrets
//! in its allowlists, or a baseline report full of the findings it approves, does not report
//! itself. A repository set up for gitleaks must scan the same way here.
//!
//! gitleaks compares path strings; here a file on disk is compared by what it is (its
//! canonical path, asked only of files with the same name), so `-c /abs/path` and a relative
//! walk still meet. In git mode a finding's path is relative to the repository's top, so the
//! file is named both as it was given (what gitleaks compares) and relative to the top.
//! `.gitleaksignore` is scanned, as gitleaks scans it.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// One file the scan leaves out.
#[derive(Debug, Clone)]
pub(crate) struct OwnFile {
    /// Why it is left out (`the rule file in use`).
    pub why: String,
    /// As given, cleaned (`./a/../b` → `b`).
    given: String,
    /// Its file name, to compare with walked files cheaply.
    name: Option<OsString>,
    /// Its canonical path, when it exists.
    canonical: Option<PathBuf>,
}

impl OwnFile {
    pub(crate) fn new(path: &Path, why: &str) -> Self {
        Self {
            why: why.to_string(),
            given: clean(path),
            name: path.file_name().map(OsString::from),
            canonical: std::fs::canonicalize(path).ok(),
        }
    }

    /// Whether the file at `path` (on disk) is this one.
    pub(crate) fn is(&self, path: &Path) -> bool {
        if self.name.as_deref() != path.file_name() {
            return false;
        }
        match &self.canonical {
            Some(c) => std::fs::canonicalize(path).is_ok_and(|p| &p == c),
            None => clean(path) == self.given,
        }
    }

    /// The paths a git scan of the repository whose top is `top` reports this file under.
    pub(crate) fn git_paths(&self, top: Option<&Path>) -> Vec<String> {
        let mut paths = vec![self.given.clone()];
        if let (Some(c), Some(top)) = (&self.canonical, top)
            && let Ok(rel) = c.strip_prefix(top)
        {
            let rel = clean(rel);
            if !paths.contains(&rel) {
                paths.push(rel);
            }
        }
        paths
    }
}

/// A path as a string, without `.` components and with `..` folded (as Go's
/// `filepath.Clean`, which gitleaks' paths go through), `/`-separated.
fn clean(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..".into());
                }
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_as_go_cleans_them() {
        assert_eq!(clean(Path::new("./.gitleaks.toml")), ".gitleaks.toml");
        assert_eq!(clean(Path::new("a/./b/../c.json")), "a/c.json");
        assert_eq!(clean(Path::new("/x/../y")), "/y");
        assert_eq!(clean(Path::new("../a")), "../a");
        assert_eq!(clean(Path::new(".")), ".");
    }

    #[test]
    fn a_file_is_itself_under_another_spelling_and_not_its_namesake() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let conf = dir.path().join(".gitleaks.toml");
        std::fs::write(&conf, "").unwrap();
        std::fs::write(dir.path().join("sub/.gitleaks.toml"), "").unwrap();
        let own = OwnFile::new(&conf, "the rule file in use");
        assert!(own.is(&dir.path().join("sub/../.gitleaks.toml")));
        assert!(!own.is(&dir.path().join("sub/.gitleaks.toml")));
        let top = std::fs::canonicalize(dir.path()).unwrap();
        let paths = own.git_paths(Some(&top));
        assert_eq!(paths.last().map(String::as_str), Some(".gitleaks.toml"));
    }
}
