//! Manifest errors as the user sees them: `path:line:col: message`.
//!
//! Every problem found in a manifest becomes one [`Diagnostic`] that names the file and,
//! where known, the line and column. Messages from the YAML library are reworded here so
//! that no Rust type name ever reaches the user.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, MessageFormatter, UserMessageFormatter};

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    /// The manifest file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// What is wrong and, where possible, what is expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Where a piece of YAML came from: a file, and how many lines precede the YAML in it (the
/// opening `---` of front matter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub line_offset: u32,
}

/// A position in a [`Source`], already shifted to file lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl Source {
    pub fn new(path: &Path, line_offset: u32) -> Self {
        Source {
            path: path.to_path_buf(),
            line_offset,
        }
    }

    /// Converts a YAML library location (line 0 means unknown) to a file position.
    pub fn pos(&self, loc: &Location) -> Pos {
        if loc.line() == 0 {
            return Pos::default();
        }
        let line = u32::try_from(loc.line()).unwrap_or(u32::MAX);
        let column = u32::try_from(loc.column()).ok().filter(|c| *c > 0);
        Pos {
            line: Some(line.saturating_add(self.line_offset)),
            column,
        }
    }

    pub fn diag(&self, pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.path.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// A diagnostic for a YAML syntax or shape error.
    pub fn yaml_error(&self, err: &serde_saphyr::Error) -> Diagnostic {
        let inner = err.without_snippet();
        let pos = inner
            .location()
            .map(|loc| self.pos(&loc))
            .unwrap_or_default();
        let raw = UserMessageFormatter.format_message(inner);
        self.diag(pos, humanize(&raw.escape_debug().to_string()))
    }
}

/// Rewords YAML library and serde messages: says what is expected in manifest words and
/// drops Rust type names.
pub(crate) fn humanize(msg: &str) -> String {
    // Whole-message rewrites of terse parser messages.
    let exact: &[(&str, &str)] = &[
        ("invalid boolean", "expected `true` or `false`"),
        ("invalid u16", "expected a port number (1-65535)"),
        ("invalid u32", "expected a whole number"),
        ("invalid u64", "expected a whole number"),
        ("invalid i64", "expected a whole number"),
        (
            "expected mapping start",
            "expected a mapping (`key: value` entries) here",
        ),
        (
            "expected sequence start",
            "expected a list (`- item` entries or `[a, b]`) here",
        ),
        (
            "cannot deserialize null into string",
            "expected a string, found an empty value",
        ),
    ];
    for (from, to) in exact {
        if msg == *from {
            return (*to).to_owned();
        }
    }
    let mut out = msg.to_owned();
    if out.contains("did not find expected key")
        || out.contains("mapping values are not allowed")
        || out.contains("did not find expected '-'")
    {
        out.push_str("; check the indentation of this line and the one above");
    }
    // serde's default `expecting` texts name Rust types: `struct Route`, `enum LogMode`,
    // `u16`, `a span-aware newtype wrapper`. Replace the ones our schema can produce.
    let types: &[(&str, &str)] = &[
        (
            "struct EgressConfig",
            "an egress block (`log`, `upstream_ca`, `routes`)",
        ),
        ("struct Route", "a route (a mapping with at least `host`)"),
        (
            "struct RouteMatch",
            "a match (`paths`, `methods`, `headers`)",
        ),
        (
            "struct PathMatch",
            "a path condition `{type: exact|prefix, value: /path}`",
        ),
        (
            "struct HeaderMatch",
            "a header condition `{name: NAME, value: VALUE}`",
        ),
        ("struct GitGate", "a git-gate block (`user`, `repos`)"),
        ("struct GitUser", "a git user `{name: NAME, email: EMAIL}`"),
        (
            "struct RepoSpec",
            "a repository (`url`, `key`, `host_key`, ...)",
        ),
        (
            "enum KeySpec",
            "a key `{provider: static, path: PATH}` or `{provider: gitea, forge_token_env: VAR}`",
        ),
        (
            "internally tagged enum KeySpec",
            "a key `{provider: static, path: PATH}` or `{provider: gitea, forge_token_env: VAR}`",
        ),
        ("enum LogMode", "one of `off`, `blocks`, `all`"),
        ("enum PathMatchKind", "one of `exact`, `prefix`"),
        ("a span-aware newtype wrapper", "a value"),
        ("u16", "a port number (1-65535)"),
    ];
    for (from, to) in types {
        out = out.replace(from, to);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn display_with_and_without_position() {
        let d = Diagnostic {
            file: PathBuf::from("m.yaml"),
            line: Some(3),
            column: Some(5),
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "m.yaml:3:5: bad");
        let d = Diagnostic { column: None, ..d };
        assert_eq!(d.to_string(), "m.yaml:3: bad");
        let d = Diagnostic { line: None, ..d };
        assert_eq!(d.to_string(), "m.yaml: bad");
    }

    #[test]
    fn humanize_drops_type_names() {
        assert_eq!(
            humanize("invalid type: string \"x\", expected struct Route"),
            "invalid type: string \"x\", expected a route (a mapping with at least `host`)"
        );
        assert_eq!(humanize("invalid u16"), "expected a port number (1-65535)");
    }
}
