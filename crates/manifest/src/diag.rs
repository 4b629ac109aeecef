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

    /// A diagnostic for a YAML syntax or shape error in `text` (the YAML this source holds).
    pub fn yaml_error(&self, err: &serde_saphyr::Error, text: &str) -> Diagnostic {
        let inner = err.without_snippet();
        let loc = inner.location();
        let pos = loc.map(|loc| self.pos(&loc)).unwrap_or_default();
        let raw = UserMessageFormatter.format_message(inner);
        let mut message = humanize(&escape_controls(&raw));
        // A wrong type names the key it is wrong for.
        if is_type_error(&message)
            && let Some(line) = loc.map(|l| l.line()).filter(|l| *l > 0)
            && let Some(key) = key_path_at(
                text,
                usize::try_from(line).unwrap_or(usize::MAX),
                loc.map_or(0, |l| usize::try_from(l.column()).unwrap_or(0)),
            )
        {
            message = format!("`{key}`: {message}");
        }
        if let Some(line) = loc.map(|l| l.line()).filter(|l| *l > 0)
            && continues_on_next_line(text, line)
        {
            message.push_str(
                "; the next line is indented deeper than this one, so YAML reads it as part \
                 of this value: check its indentation",
            );
        }
        self.diag(pos, message)
    }
}

/// Whether a (humanized) message says a value has the wrong type or form, as opposed to a
/// syntax error or an unknown field (which names itself).
pub(crate) fn is_type_error(message: &str) -> bool {
    message.starts_with("expected ")
        || message.starts_with("invalid type")
        || message.starts_with("invalid value")
}

/// Whether line `line` (1-based) holds `key: value` and the next line is a deeper-indented
/// `key: value` line: the usual shape of a mis-indented key.
fn continues_on_next_line(text: &str, line: u64) -> bool {
    let idx = usize::try_from(line)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    let mut lines = text.lines().skip(idx);
    let (Some(this), Some(next)) = (lines.next(), lines.next()) else {
        return false;
    };
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let key = |l: &str| {
        let t = l.trim();
        !t.starts_with('#') && (t.contains(": ") || t.ends_with(':'))
    };
    // `key:` alone opens a nested block, which is fine; `key: value` cannot have one.
    let with_value = |l: &str| {
        let t = l.trim();
        !t.starts_with('#')
            && t.split_once(": ")
                .is_some_and(|(_, v)| !v.trim().is_empty())
    };
    with_value(this) && key(next) && indent(next) > indent(this)
}

/// Escapes control characters (a message must stay one line and cannot move the cursor).
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Levenshtein distance, for "did you mean" hints on short field names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate closest to `name`, if close enough to be a typo of it.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .filter(|c| *c != name)
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The dotted path of keys leading to line `line` (1-based) of block-style YAML, e.g.
/// `bottles.dev.supervise`: the key on that line, then each key of a less indented line
/// above it (list items add no key), then the keys of the flow mappings (`{a: {b: ...}}`)
/// open at `column` (1-based; 0 for none) on that line. `None` when no key is found.
pub(crate) fn key_path_at(text: &str, line: usize, column: usize) -> Option<String> {
    let mut path: Vec<String> = block_key_path(text, line)?
        .split('.')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(this) = text.lines().nth(line.checked_sub(1)?) {
        path.extend(flow_keys(this, column));
    }
    (!path.is_empty()).then(|| path.join("."))
}

/// The keys of the flow mappings open before `column` (1-based) of `line`.
fn flow_keys(line: &str, column: usize) -> Vec<String> {
    let mut open: Vec<Option<String>> = Vec::new();
    let mut token = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars().take(column.saturating_sub(1)) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else {
                token.push(c);
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '{' | '[' => {
                open.push(None);
                token.clear();
            }
            '}' | ']' => {
                open.pop();
                token.clear();
            }
            ',' => {
                if let Some(top) = open.last_mut() {
                    *top = None;
                }
                token.clear();
            }
            ':' => {
                if let Some(top) = open.last_mut() {
                    *top = Some(token.trim().to_owned());
                }
                token.clear();
            }
            _ => token.push(c),
        }
    }
    open.into_iter()
        .flatten()
        .filter(|k| !k.is_empty())
        .collect()
}

fn block_key_path(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let idx = line.checked_sub(1)?;
    let this = lines.get(idx)?;
    let indent_of = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let key_of = |l: &str| -> Option<String> {
        let t = l.trim_start_matches(' ');
        if t.starts_with('#') {
            return None;
        }
        let t = t.strip_prefix("- ").unwrap_or(t);
        let (k, _) = t.split_once(':')?;
        let k = k.trim().trim_matches('"').trim_matches('\'');
        let plain = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*'));
        plain.then(|| k.to_owned())
    };
    let mut path = Vec::new();
    if let Some(k) = key_of(this) {
        path.push(k);
    }
    let mut indent = indent_of(this);
    for l in lines[..idx].iter().rev() {
        let t = l.trim_start_matches(' ');
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let i = indent_of(l);
        if i < indent {
            indent = i;
            if !t.starts_with("- ")
                && let Some(k) = key_of(l)
            {
                path.push(k);
            }
        }
        if indent == 0 {
            break;
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// For `unknown field `x`, expected one of a, b`: the closest known field, if close.
fn suggestion(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let list = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))?;
    list.split(", ")
        .map(|c| c.trim_matches('`'))
        .map(|c| (distance(field, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Rewords YAML library and serde messages: says what is expected in manifest words and
/// drops Rust type names.
pub(crate) fn humanize(msg: &str) -> String {
    // Whole-message rewrites of terse parser messages.
    let exact: &[(&str, &str)] = &[
        ("invalid boolean", "expected `true` or `false`"),
        (
            "invalid boolean (true or false expected)",
            "expected `true` or `false`",
        ),
        ("expected string scalar", "expected a string here"),
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
    if let Some(hint) = suggestion(msg) {
        out.push_str(&format!("; did you mean `{hint}`?"));
    }
    if out.starts_with("tabs disallowed") {
        out.push_str("; indent with spaces, not tabs");
    }
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
        ("struct GitGate", "a `git-gate` block (`user`, `repos`)"),
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

    #[test]
    fn key_path_walks_up_the_indentation() {
        let text = "bottles:\n  dev:\n    egress:\n      routes:\n        - host: a\n          port: x\n        - b\n    supervise: 3\n";
        assert_eq!(
            key_path_at(text, 6, 0).as_deref(),
            Some("bottles.dev.egress.routes.port")
        );
        assert_eq!(
            key_path_at(text, 5, 0).as_deref(),
            Some("bottles.dev.egress.routes.host")
        );
        assert_eq!(
            key_path_at(text, 7, 0).as_deref(),
            Some("bottles.dev.egress.routes")
        );
        assert_eq!(
            key_path_at(text, 8, 0).as_deref(),
            Some("bottles.dev.supervise")
        );
        assert_eq!(key_path_at(text, 99, 0), None);
        let flow = "bottles:\n  dev: {egress: {routes: [{host: a, port: x}]}}\n";
        assert_eq!(
            key_path_at(flow, 2, flow.lines().nth(1).unwrap().find('x').unwrap() + 1).as_deref(),
            Some("bottles.dev.egress.routes.port")
        );
    }

    #[test]
    fn closest_is_a_likely_typo_only() {
        let names = ["base", "dev", "other"];
        assert_eq!(closest("bsae", names.into_iter()), Some("base"));
        assert_eq!(closest("ghost", names.into_iter()), None);
        assert_eq!(closest("dev", names.into_iter()), None);
    }

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

    #[test]
    fn did_you_mean() {
        assert_eq!(
            humanize("unknown field `supervize`, expected one of extends, supervise, env"),
            "unknown field `supervize`, expected one of extends, supervise, env; did you mean \
             `supervise`?"
        );
        assert_eq!(
            humanize("unknown field `zzz`, expected one of extends, env"),
            "unknown field `zzz`, expected one of extends, env"
        );
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
