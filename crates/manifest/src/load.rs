//! Reading a manifest from disk: the single-file form and the directory form.
//!
//! Parsing stops at the first YAML error *per file* (the parser cannot continue inside
//! broken YAML); every other problem is collected later by resolution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::LoadError;
use crate::diag::{Diagnostic, Pos, Source};
use crate::raw::{RawAgent, RawBottle, RawManifest, Spanned};

/// A bottle definition with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct BottleDef {
    pub name: String,
    pub source: Arc<Source>,
    pub pos: Pos,
    pub raw: RawBottle,
}

/// An agent definition with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct AgentDef {
    pub name: String,
    pub source: Arc<Source>,
    pub pos: Pos,
    pub raw: RawAgent,
    /// The Markdown body of `agents/<name>.md`, if not blank.
    pub body: Option<String>,
}

/// Everything read from a manifest, before resolution.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub bottles: Vec<BottleDef>,
    pub agents: Vec<AgentDef>,
    pub diagnostics: Vec<Diagnostic>,
    /// Bottles (directory form) whose file could not be read as a bottle, with the reason.
    pub broken_bottles: BTreeMap<String, Diagnostic>,
    /// Agents (directory form) whose file could not be read as an agent, with the reason.
    pub broken_agents: BTreeMap<String, Diagnostic>,
}

/// Reads one manifest file: a regular file of at most [`state::read::CONFIG_LIMIT`] (a FIFO,
/// a device or a directory where a file belongs is refused, naming what it is).
fn read(path: &Path) -> Result<String, LoadError> {
    state::read::read_limited_to_string(path, state::read::CONFIG_LIMIT).map_err(|source| {
        LoadError::Read {
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    })
}

/// Reads `path`: a directory is the directory form, anything else the file form.
pub(crate) fn parse_path(path: &Path) -> Result<Parsed, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source: Arc::new(source),
    })?;
    if meta.is_dir() {
        parse_dir(path)
    } else {
        Ok(parse_file_text(path, &read(path)?))
    }
}

/// The single-file form.
pub(crate) fn parse_file_text(path: &Path, text: &str) -> Parsed {
    let source = Arc::new(Source::new(path, 0));
    let mut parsed = Parsed::default();
    match crate::raw::from_yaml::<RawManifest>(text) {
        Ok(raw) => {
            for (name, raw) in raw.bottles.map(|e| e.0).unwrap_or_default() {
                let (name, pos) = named(&source, name);
                parsed.bottles.push(BottleDef {
                    name,
                    source: source.clone(),
                    pos,
                    raw,
                });
            }
            for (name, raw) in raw.agents.map(|e| e.0).unwrap_or_default() {
                let (name, pos) = named(&source, name);
                parsed.agents.push(AgentDef {
                    name,
                    source: source.clone(),
                    pos,
                    raw,
                    body: None,
                });
            }
        }
        Err(err) => {
            parsed.diagnostics =
                schema_errors::<RawManifest>(&source, text, source.yaml_error(&err, text), 0);
        }
    }
    parsed
}

/// The lines before the YAML of a front matter (its opening `---`).
const FRONT_MATTER_OFFSET: u32 = 1;

/// At most this many schema errors are reported for one file.
const MAX_SCHEMA_ERRORS: usize = 20;

/// Every schema error of the file, not only the first: after a wrong type or an unknown
/// field, the offending key (with what is nested under it) is blanked out and the text read
/// again, as long as each next error lies further down (an error above would be a
/// consequence of the blanking). A syntax error ends the search.
/// `line_offset`: the lines of the file before `text` (front matter's `---`).
fn schema_errors<T: serde::de::DeserializeOwned>(
    source: &Source,
    text: &str,
    first: Diagnostic,
    line_offset: u32,
) -> Vec<Diagnostic> {
    let is_schema =
        |d: &Diagnostic| d.message.starts_with('`') || d.message.starts_with("unknown field");
    let mut found = vec![first];
    let mut text = text.to_owned();
    while found.len() < MAX_SCHEMA_ERRORS {
        let Some(last) = found.last().filter(|d| is_schema(d)) else {
            break;
        };
        let Some(line) = last.line else { break };
        text = blank_subtree(&text, line.saturating_sub(line_offset) as usize);
        let Err(err) = crate::raw::from_yaml::<T>(&text) else {
            break;
        };
        let next = source.yaml_error(&err, &text);
        if !is_schema(&next) || next.line.is_none_or(|l| l <= line) {
            break;
        }
        found.push(next);
    }
    found
}

/// `text` with line `line` (1-based) and the more indented lines under it made empty (the
/// line count is kept, so later positions stay right).
fn blank_subtree(text: &str, line: usize) -> String {
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = line.checked_sub(1).filter(|i| *i < lines.len()) else {
        return text.to_owned();
    };
    let base = indent(lines[start]);
    let mut end = start + 1;
    while end < lines.len() && (lines[end].trim().is_empty() || indent(lines[end]) > base) {
        end += 1;
    }
    let mut out = String::with_capacity(text.len());
    for (i, l) in lines.iter().enumerate() {
        if !(start..end).contains(&i) {
            out.push_str(l);
        }
        out.push('\n');
    }
    out
}

fn named(source: &Source, name: Spanned<String>) -> (String, Pos) {
    (name.value, source.pos(&name.referenced))
}

/// The directory form: `bottles/<name>.md` and `agents/<name>.md`.
fn parse_dir(dir: &Path) -> Result<Parsed, LoadError> {
    let mut parsed = Parsed::default();
    let bottles_dir = dir.join("bottles");
    let agents_dir = dir.join("agents");
    if !bottles_dir.is_dir() && !agents_dir.is_dir() {
        parsed.diagnostics.push(Diagnostic {
            file: dir.to_path_buf(),
            line: None,
            column: None,
            message: "not a manifest directory: expected `bottles/<name>.md` and \
                      `agents/<name>.md` files inside"
                .into(),
        });
        return Ok(parsed);
    }
    for (name, path) in md_files(&bottles_dir)? {
        let text = read(&path)?;
        let Some((source, yaml, _body)) = front_matter(&path, &text, "bottle", &mut parsed) else {
            mark_broken(&mut parsed.broken_bottles, name, &parsed.diagnostics);
            continue;
        };
        match crate::raw::from_yaml::<RawBottle>(yaml) {
            Ok(raw) => parsed.bottles.push(BottleDef {
                name,
                pos: Pos {
                    line: Some(1),
                    column: None,
                },
                source,
                raw,
            }),
            Err(err) => {
                let first = source.yaml_error(&err, yaml);
                parsed.diagnostics.extend(schema_errors::<RawBottle>(
                    &source,
                    yaml,
                    first,
                    FRONT_MATTER_OFFSET,
                ));
                mark_broken(&mut parsed.broken_bottles, name, &parsed.diagnostics);
            }
        }
    }
    for (name, path) in md_files(&agents_dir)? {
        let text = read(&path)?;
        let Some((source, yaml, body)) = front_matter(&path, &text, "agent", &mut parsed) else {
            mark_broken(&mut parsed.broken_agents, name, &parsed.diagnostics);
            continue;
        };
        match crate::raw::from_yaml::<RawAgent>(yaml) {
            Ok(raw) => parsed.agents.push(AgentDef {
                name,
                pos: Pos {
                    line: Some(1),
                    column: None,
                },
                source,
                raw,
                body: Some(body.trim())
                    .filter(|b| !b.is_empty())
                    .map(str::to_owned),
            }),
            Err(err) => {
                let first = source.yaml_error(&err, yaml);
                parsed.diagnostics.extend(schema_errors::<RawAgent>(
                    &source,
                    yaml,
                    first,
                    FRONT_MATTER_OFFSET,
                ));
                mark_broken(&mut parsed.broken_agents, name, &parsed.diagnostics);
            }
        }
    }
    Ok(parsed)
}

/// Records that `name`'s file failed, with the diagnostic just added.
fn mark_broken(broken: &mut BTreeMap<String, Diagnostic>, name: String, diags: &[Diagnostic]) {
    if let Some(last) = diags.last() {
        broken.insert(name, last.clone());
    }
}

/// `*.md` entries of a directory, sorted by name; a missing directory has none. Entries
/// that are not regular files are kept, so that reading them says what they are instead of
/// the bottle or agent silently missing.
fn md_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LoadError::Read {
                path: dir.to_path_buf(),
                source: Arc::new(source),
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Read {
            path: dir.to_path_buf(),
            source: Arc::new(source),
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "md")
            && let Some(stem) = path.file_stem()
        {
            out.push((stem.to_string_lossy().into_owned(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// Splits a Markdown file into its YAML front matter and body. Reports a missing or
/// unclosed front matter block and returns `None`.
fn front_matter<'t>(
    path: &Path,
    text: &'t str,
    what: &str,
    parsed: &mut Parsed,
) -> Option<(Arc<Source>, &'t str, &'t str)> {
    let source = Arc::new(Source::new(path, FRONT_MATTER_OFFSET));
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let at_line_1 = Pos {
        line: Some(1),
        column: Some(1),
    };
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "---" {
        parsed.diagnostics.push(Diagnostic {
            file: path.to_path_buf(),
            line: at_line_1.line,
            column: at_line_1.column,
            message: format!(
                "no YAML front matter: start the file with a `---` line, then the \
                 {what}'s fields in YAML, then a closing `---` line"
            ),
        });
        return None;
    }
    let start = first.len();
    let mut offset = start;
    for line in lines {
        if matches!(line.trim_end(), "---" | "...") {
            return Some((source, &text[start..offset], &text[offset + line.len()..]));
        }
        offset += line.len();
    }
    parsed.diagnostics.push(Diagnostic {
        file: path.to_path_buf(),
        line: at_line_1.line,
        column: at_line_1.column,
        message: format!(
            "the front matter opened by `---` on line 1 is never closed: add a `---` line \
             after the {what}'s fields"
        ),
    });
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn split(text: &str) -> (Option<(String, String)>, Vec<String>) {
        let mut parsed = Parsed::default();
        let out = front_matter(Path::new("a.md"), text, "agent", &mut parsed)
            .map(|(_, y, b)| (y.to_owned(), b.to_owned()));
        (
            out,
            parsed.diagnostics.iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn front_matter_split() {
        assert_eq!(
            split("---\nbottle: dev\n---\nDo it.\n"),
            (Some(("bottle: dev\n".into(), "Do it.\n".into())), vec![])
        );
        assert_eq!(
            split("---\r\n---\r\n"),
            (Some((String::new(), String::new())), vec![])
        );
        assert_eq!(
            split("\u{feff}---\na: 1\n...\nbody"),
            (Some(("a: 1\n".into(), "body".into())), vec![])
        );
    }

    #[test]
    fn front_matter_missing_or_unclosed() {
        assert_eq!(
            split("# Just markdown\n"),
            (
                None,
                vec![
                    "a.md:1:1: no YAML front matter: start the file with a `---` line, \
                     then the agent's fields in YAML, then a closing `---` line"
                        .into()
                ]
            )
        );
        assert_eq!(
            split("---\nbottle: dev\n"),
            (
                None,
                vec![
                    "a.md:1:1: the front matter opened by `---` on line 1 is never closed: \
                     add a `---` line after the agent's fields"
                        .into()
                ]
            )
        );
    }
}
