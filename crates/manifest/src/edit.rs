//! Writing an approved route into the user's manifest without losing a comment.
//!
//! An operator may approve a proposal *into the manifest* (`proposals approve --persist`):
//! the routes it adds are appended to the `egress.routes` list of the agent's bottle, in
//! the file the user wrote — `bot-bottle.yaml` (file form) or `bottles/<name>.md` (the
//! front matter of the directory form). A YAML library would re-render the whole file and
//! drop comments and layout, so the edit is made on the text: the bottle's block is found
//! by indentation, and the new list items are inserted after the last one, indented like
//! their siblings. Everything else in the file stays byte for byte. What cannot be edited
//! that way (a flow mapping such as `egress: {log: all}`, anchors) is refused with the
//! line to rewrite, never guessed at. The caller shows the diff and re-checks the result.

use std::path::{Path, PathBuf};

use policy::Route;

/// Why the manifest could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// No block for the bottle.
    #[error("{path}: no bottle {bottle:?} to add the route to; add the route by hand")]
    NoBottle {
        /// The file.
        path: PathBuf,
        /// The bottle.
        bottle: String,
    },
    /// A key whose value is written inline, where a block is needed.
    #[error(
        "{path}:{line}: `{key}` is written inline; rewrite it as a block (one key per line) so a route can be added, or add the route by hand"
    )]
    Inline {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
    },
    /// The front matter of a directory-form file is not closed.
    #[error("{path}: no YAML front matter (`---` ... `---`) to add the route to")]
    NoFrontMatter {
        /// The file.
        path: PathBuf,
    },
    /// The route to change is not written in the bottle's own routes.
    #[error(
        "{path}: bottle {bottle:?} does not list the route for {host} itself (it comes from a parent bottle or the agent provider), so changing it there would change other bottles too; approve it for this bottle and edit the manifest by hand"
    )]
    NotInBottle {
        /// The file.
        path: PathBuf,
        /// The bottle.
        bottle: String,
        /// The route's host.
        host: String,
    },
    /// The route cannot be written as YAML.
    #[error("cannot write the route as YAML: {0}")]
    Render(String),
}

/// Where the bottle's mapping is: under `bottles: <name>:` in the file form, or the whole
/// front matter of `bottles/<name>.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place<'a> {
    /// `bot-bottle.yaml`: `bottles.<name>`.
    File(&'a str),
    /// `bottles/<name>.md`: the front matter.
    FrontMatter,
}

/// The file that holds bottle `bottle` of the manifest at `manifest` (a file or a
/// directory), and where in it.
pub fn bottle_file<'a>(manifest: &Path, bottle: &'a str) -> (PathBuf, Place<'a>) {
    if manifest.is_dir() {
        (
            manifest.join("bottles").join(format!("{bottle}.md")),
            Place::FrontMatter,
        )
    } else {
        (manifest.to_path_buf(), Place::File(bottle))
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line holds YAML content (not blank, not only a comment).
fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// The value written after `key:` on its line, without a trailing comment.
fn inline_value<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let rest = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    Some(if rest.starts_with('#') { "" } else { rest })
}

/// A block: the key's line and the lines `[start, end)` of its value.
struct Block {
    key_line: Option<usize>,
    start: usize,
    end: usize,
    /// Indentation of the block's own children (from its first content line).
    child_indent: Option<usize>,
}

fn block_of(
    lines: &[&str],
    key_line: Option<usize>,
    start: usize,
    end: usize,
    indent: Option<usize>,
) -> Block {
    // The value ends at the first content line indented no deeper than the key.
    let mut stop = end;
    if let Some(indent) = indent {
        for (i, l) in lines.iter().enumerate().take(end).skip(start) {
            if is_content(l) && indent_of(l) <= indent && !l.trim_start().starts_with("- ") {
                stop = i;
                break;
            }
            if is_content(l) && indent_of(l) < indent {
                stop = i;
                break;
            }
        }
    }
    // Trailing blank and comment lines belong to what follows.
    let mut last = stop;
    while last > start && !is_content(lines[last - 1]) {
        last -= 1;
    }
    let child_indent = lines[start..last]
        .iter()
        .find(|l| is_content(l))
        .map(|l| indent_of(l));
    Block {
        key_line,
        start,
        end: last,
        child_indent,
    }
}

/// Finds `key:` among the direct children of `parent`.
fn child(
    lines: &[&str],
    parent: &Block,
    key: &str,
    path: &Path,
) -> Result<Option<Block>, EditError> {
    let Some(ci) = parent.child_indent else {
        return Ok(None);
    };
    for i in parent.start..parent.end {
        let l = lines[i];
        if !is_content(l) || indent_of(l) != ci {
            continue;
        }
        let Some(value) = inline_value(l, key) else {
            continue;
        };
        if !value.is_empty() {
            return Err(EditError::Inline {
                path: path.to_owned(),
                line: i + 1,
                key: key.to_owned(),
            });
        }
        return Ok(Some(block_of(lines, Some(i), i + 1, parent.end, Some(ci))));
    }
    Ok(None)
}

/// Renders routes as list items indented by `indent`.
fn render(routes: &[Route], indent: usize) -> Result<String, EditError> {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for route in routes {
        let mut route = route.clone();
        // What persists holds for good: no end of a grant in the manifest.
        route.expires = None;
        route.uses = None;
        route.grant = None;
        let yaml = serde_saphyr::to_string(&route).map_err(|e| EditError::Render(e.to_string()))?;
        for (n, line) in yaml.lines().enumerate() {
            let lead = if n == 0 { "- " } else { "  " };
            out.push_str(&format!("{pad}{lead}{line}\n"));
        }
    }
    Ok(out)
}

/// Adds `routes` to the bottle's `egress.routes` in `text` (the whole file), keeping every
/// other byte. `path` is for messages.
pub fn add_routes(
    text: &str,
    place: &Place<'_>,
    routes: &[Route],
    path: &Path,
) -> Result<String, EditError> {
    let (head, body, tail) = match place {
        Place::File(_) => ("", text, ""),
        Place::FrontMatter => split_front_matter(text).ok_or_else(|| EditError::NoFrontMatter {
            path: path.to_owned(),
        })?,
    };
    let edited = match add_routes_yaml(body, place, routes, path) {
        // `egress: {log: all}`: written out as a block first, then edited.
        Err(EditError::Inline { line, ref key, .. }) if key == "egress" => {
            match expand_flow_line(body, line) {
                Some(expanded) => add_routes_yaml(&expanded, place, routes, path)?,
                None => add_routes_yaml(body, place, routes, path)?,
            }
        }
        other => other?,
    };
    Ok(format!("{head}{edited}{tail}"))
}

/// Rewrites line `line` (1-based), a key with a flat flow mapping of plain scalars
/// (`egress: {log: all}  # c`), as a block (`egress:  # c` and one line per entry).
/// `None` when the mapping is anything else (nested, quoted, anchored).
fn expand_flow_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let l = *lines.get(line.checked_sub(1)?)?;
    let indent = indent_of(l);
    let (key, rest) = l.trim_start().split_once(':')?;
    let rest = rest.trim_start();
    let inner_end = rest.find('}')?;
    let inner = rest.strip_prefix('{')?.get(..inner_end - 1)?;
    let after = rest[inner_end + 1..].trim();
    if !(after.is_empty() || after.starts_with('#'))
        || inner.contains(['{', '[', '"', '\'', '&', '*', '#', '}'])
    {
        return None;
    }
    let pad = " ".repeat(indent);
    let mut block = format!("{pad}{key}:");
    if !after.is_empty() {
        block.push_str(&format!(" {after}"));
    }
    block.push('\n');
    for entry in inner.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry.split_once(':')?;
        block.push_str(&format!("{pad}  {}: {}\n", k.trim(), v.trim()));
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i + 1 == line {
            out.push_str(&block);
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    Some(out)
}

/// (`---\n`, the front matter, the rest from the closing `---`).
fn split_front_matter(text: &str) -> Option<(&str, &str, &str)> {
    let rest = text.strip_prefix("---\n")?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&text[..4], &rest[..offset], &rest[offset..]));
        }
        offset += line.len();
    }
    None
}

/// Replaces the route for `host` (and `port`) in the bottle's own `egress.routes` of
/// `text` with `route`, or removes it (`None`), keeping every other byte: the comments
/// between items and around the list stay, the item itself is written anew. `path` is for
/// messages.
pub fn replace_route(
    text: &str,
    place: &Place<'_>,
    host: &str,
    port: Option<u16>,
    route: Option<&Route>,
    path: &Path,
) -> Result<String, EditError> {
    let (head, body, tail) = match place {
        Place::File(_) => ("", text, ""),
        Place::FrontMatter => split_front_matter(text).ok_or_else(|| EditError::NoFrontMatter {
            path: path.to_owned(),
        })?,
    };
    let lines: Vec<&str> = body.lines().collect();
    let bottle_name = match place {
        Place::File(name) => (*name).to_owned(),
        Place::FrontMatter => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let not_here = || EditError::NotInBottle {
        path: path.to_owned(),
        bottle: bottle_name.clone(),
        host: host.to_owned(),
    };
    let root = block_of(&lines, None, 0, lines.len(), None);
    let bottle = match place {
        Place::File(name) => {
            let no_bottle = || EditError::NoBottle {
                path: path.to_owned(),
                bottle: (*name).to_owned(),
            };
            let bottles = child(&lines, &root, "bottles", path)?.ok_or_else(no_bottle)?;
            child(&lines, &bottles, name, path)?.ok_or_else(no_bottle)?
        }
        Place::FrontMatter => root,
    };
    let egress = child(&lines, &bottle, "egress", path)?.ok_or_else(not_here)?;
    let list = child(&lines, &egress, "routes", path)?.ok_or_else(not_here)?;
    let item_indent = list.child_indent.ok_or_else(not_here)?;
    // The items: each from its `- ` line to the next one (or the end of the list).
    let starts: Vec<usize> = (list.start..list.end)
        .filter(|&i| {
            is_content(lines[i])
                && indent_of(lines[i]) == item_indent
                && lines[i].trim_start().starts_with('-')
        })
        .collect();
    let mut found = None;
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).copied().unwrap_or(list.end);
        // Comments and blank lines before the next item belong to it.
        while end > start + 1 && !is_content(lines[end - 1]) {
            end -= 1;
        }
        // The item as a YAML document of its own: the `- ` marker becomes indentation.
        let mut item = String::new();
        for (k, l) in lines[start..end].iter().enumerate() {
            let l = l.get(item_indent..).unwrap_or("");
            if k == 0 {
                item.push_str(&format!(
                    "  {}\n",
                    l.trim_start_matches('-').get(1..).unwrap_or("")
                ));
            } else {
                item.push_str(l);
                item.push('\n');
            }
        }
        if let Ok(r) = serde_saphyr::from_str::<Route>(&item)
            && r.host.eq_ignore_ascii_case(host)
            && r.port == port
        {
            found = Some((start, end));
            break;
        }
    }
    let (start, end) = found.ok_or_else(not_here)?;
    let insert = match route {
        Some(r) => render(std::slice::from_ref(r), item_indent)?,
        None => String::new(),
    };
    let mut out = String::new();
    for l in &lines[..start] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&insert);
    for l in &lines[end..] {
        out.push_str(l);
        out.push('\n');
    }
    if !body.ends_with('\n') && end < lines.len() {
        out.pop();
    }
    Ok(format!("{head}{out}{tail}"))
}

fn add_routes_yaml(
    text: &str,
    place: &Place<'_>,
    routes: &[Route],
    path: &Path,
) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let root = block_of(&lines, None, 0, lines.len(), None);
    let bottle = match place {
        Place::File(name) => {
            let no_bottle = || EditError::NoBottle {
                path: path.to_owned(),
                bottle: (*name).to_owned(),
            };
            let bottles = child(&lines, &root, "bottles", path)?.ok_or_else(no_bottle)?;
            child(&lines, &bottles, name, path)?.ok_or_else(no_bottle)?
        }
        Place::FrontMatter => root,
    };
    let bottle_indent = bottle.key_line.map(|k| indent_of(lines[k]));
    let ci = bottle
        .child_indent
        .unwrap_or_else(|| bottle_indent.map_or(0, |i| i + 2));
    let (at, insert) = match child(&lines, &bottle, "egress", path)? {
        None => {
            let items = render(routes, ci + 4)?;
            let pad = " ".repeat(ci);
            (bottle.end, format!("{pad}egress:\n{pad}  routes:\n{items}"))
        }
        Some(egress) => {
            let eci = egress.child_indent.unwrap_or(ci + 2);
            let egress = Block {
                child_indent: Some(eci),
                ..egress
            };
            match child(&lines, &egress, "routes", path)? {
                None => {
                    let pad = " ".repeat(eci);
                    (
                        egress.end,
                        format!("{pad}routes:\n{}", render(routes, eci + 2)?),
                    )
                }
                Some(list) => {
                    let item = list.child_indent.unwrap_or(eci + 2);
                    (list.end, render(routes, item)?)
                }
            }
        }
    };
    let mut out = String::new();
    for l in &lines[..at] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&insert);
    for l in &lines[at..] {
        out.push_str(l);
        out.push('\n');
    }
    if !text.ends_with('\n') && at < lines.len() {
        out.pop();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn route(host: &str) -> Route {
        serde_saphyr::from_str(&format!("host: {host}\nmatches:\n  - methods: [GET]\n")).unwrap()
    }

    #[test]
    fn a_route_is_added_after_its_siblings_keeping_comments() {
        let text = "# top\nbottles:\n  dev:\n    egress:\n      log: all # loud\n      routes:\n        - host: a.example # first\n          # note\n  other:\n    env: {A: b}\n";
        let got = add_routes(
            text,
            &Place::File("dev"),
            &[route("b.example")],
            Path::new("m.yaml"),
        )
        .unwrap();
        assert_eq!(
            got,
            "# top\nbottles:\n  dev:\n    egress:\n      log: all # loud\n      routes:\n        - host: a.example # first\n        - host: b.example\n          matches:\n          - methods:\n            - GET\n          # note\n  other:\n    env: {A: b}\n"
        );
    }

    #[test]
    fn egress_and_routes_are_created_when_missing() {
        let text = "bottles:\n  dev:\n    env: {A: b}\n\n# end\n";
        let got = add_routes(
            text,
            &Place::File("dev"),
            &[route("b.example")],
            Path::new("m.yaml"),
        )
        .unwrap();
        assert_eq!(
            got,
            "bottles:\n  dev:\n    env: {A: b}\n    egress:\n      routes:\n        - host: b.example\n          matches:\n          - methods:\n            - GET\n\n# end\n"
        );
    }

    #[test]
    fn a_flat_inline_egress_is_written_out_as_a_block() {
        let text = "bottles:\n  dev:\n    egress: {log: all}  # loud\n    env: {A: b}\n";
        let got = add_routes(
            text,
            &Place::File("dev"),
            &[route("b.example")],
            Path::new("m.yaml"),
        )
        .unwrap();
        assert_eq!(
            got,
            "bottles:\n  dev:\n    egress: # loud\n      log: all\n      routes:\n        - host: b.example\n          matches:\n          - methods:\n            - GET\n    env: {A: b}\n"
        );
    }

    #[test]
    fn inline_blocks_are_refused_with_their_line() {
        let text = "bottles:\n  dev:\n    egress: {routes: [{host: a}]}\n";
        assert_eq!(
            add_routes(
                text,
                &Place::File("dev"),
                &[route("b")],
                Path::new("m.yaml")
            ),
            Err(EditError::Inline {
                path: "m.yaml".into(),
                line: 3,
                key: "egress".into()
            })
        );
        assert!(matches!(
            add_routes(
                text,
                &Place::File("nope"),
                &[route("b")],
                Path::new("m.yaml")
            ),
            Err(EditError::NoBottle { .. })
        ));
    }

    #[test]
    fn a_route_is_replaced_or_removed_in_place_keeping_the_comments_around_it() {
        let text = "bottles:\n  dev:\n    egress:\n      routes:\n        # the registry\n        - host: a.example # first\n          matches:\n            - methods: [GET]\n        # next one\n        - {host: b.example, port: 8443}\n        - host: a.example\n          port: 8443\n  other:\n    egress:\n      routes:\n        - host: c.example\n";
        let wider: Route = serde_saphyr::from_str("host: a.example\ndlp_allow: [jwt]\n").unwrap();
        let got = replace_route(
            text,
            &Place::File("dev"),
            "A.example",
            None,
            Some(&wider),
            Path::new("m.yaml"),
        )
        .unwrap();
        assert_eq!(
            got,
            "bottles:\n  dev:\n    egress:\n      routes:\n        # the registry\n        - host: a.example\n          dlp_allow:\n          - jwt\n        # next one\n        - {host: b.example, port: 8443}\n        - host: a.example\n          port: 8443\n  other:\n    egress:\n      routes:\n        - host: c.example\n"
        );
        let removed = replace_route(
            text,
            &Place::File("dev"),
            "b.example",
            Some(8443),
            None,
            Path::new("m.yaml"),
        )
        .unwrap();
        assert_eq!(
            removed,
            "bottles:\n  dev:\n    egress:\n      routes:\n        # the registry\n        - host: a.example # first\n          matches:\n            - methods: [GET]\n        # next one\n        - host: a.example\n          port: 8443\n  other:\n    egress:\n      routes:\n        - host: c.example\n"
        );
        // another bottle's route (or one from a parent) is not this bottle's to change
        assert!(matches!(
            replace_route(
                text,
                &Place::File("dev"),
                "c.example",
                None,
                None,
                Path::new("m.yaml")
            ),
            Err(EditError::NotInBottle { .. })
        ));
    }

    #[test]
    fn front_matter_is_edited_and_the_body_kept() {
        let text = "---\nextends: base\negress:\n  routes:\n  - host: a.example\n---\nNotes about this bottle.\n";
        let got = add_routes(
            text,
            &Place::FrontMatter,
            &[route("b.example")],
            Path::new("bottles/dev.md"),
        )
        .unwrap();
        assert_eq!(
            got,
            "---\nextends: base\negress:\n  routes:\n  - host: a.example\n  - host: b.example\n    matches:\n    - methods:\n      - GET\n---\nNotes about this bottle.\n"
        );
    }
}
