//! Line diff of the current file against the proposed one, for the detail pane and for
//! `bot-bottle proposals show`.

use similar::{ChangeTag, TextDiff};

/// What a diff line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In both files.
    Same,
    /// Only in the current file (removed by the proposal).
    Removed,
    /// Only in the proposed file (added by the proposal).
    Added,
}

/// One line of a diff, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Same, removed or added.
    pub kind: Kind,
    /// The text.
    pub text: String,
}

/// The full line diff of `current` against `proposed`.
pub fn lines(current: &str, proposed: &str) -> Vec<Line> {
    TextDiff::from_lines(current, proposed)
        .iter_all_changes()
        .map(|c| Line {
            kind: match c.tag() {
                ChangeTag::Equal => Kind::Same,
                ChangeTag::Delete => Kind::Removed,
                ChangeTag::Insert => Kind::Added,
            },
            text: c.value().trim_end_matches(['\n', '\r']).to_owned(),
        })
        .collect()
}

/// The diff as text with `+`, `-` and ` ` prefixes.
pub fn plain(current: &str, proposed: &str) -> String {
    let mut out = String::new();
    for l in lines(current, proposed) {
        out.push(match l.kind {
            Kind::Same => ' ',
            Kind::Removed => '-',
            Kind::Added => '+',
        });
        out.push_str(&l.text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn marks_added_and_removed_lines() {
        assert_eq!(
            plain(
                "routes:\n  - host: a\n  - host: b\n",
                "routes:\n  - host: a\n  - host: c\n"
            ),
            " routes:\n   - host: a\n-  - host: b\n+  - host: c\n"
        );
    }
}
