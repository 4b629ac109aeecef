//! Patterns as gitleaks writes them, compiled by the `regex` crate: the RE2 spellings Go
//! accepts and `regex` does not (a literal `{`) are escaped first, and Unicode mode is kept
//! off where the pattern allows it (the fast path).

use std::sync::OnceLock;

use regex::bytes::{Regex, RegexBuilder};

/// A rule's content regex, compiled when it is first used, or at load.
///
/// Why: building the ~190 built-in regexes is most of what `bot-bottle scan` spends before
/// its first file (the Thompson NFA, literal prefilters and one-pass DFA of each), and most
/// rules never run on a given input: a rule's regex runs only where one of its keywords
/// occurs. So the patterns of the built-in rules, which are known to compile (every one is
/// compiled by the crate's tests), are compiled the first time a keyword calls for them;
/// every other pattern (from a rule file) is compiled at load, where an error names the file
/// and the rule.
#[derive(Debug, Clone)]
pub struct RulePattern {
    pattern: String,
    /// The regex, and whether it needed Unicode mode.
    compiled: OnceLock<(Regex, bool)>,
}

impl RulePattern {
    /// A pattern compiled now.
    pub(crate) fn compiled(pattern: &str) -> Result<Self, regex::Error> {
        let compiled = compile_bytes_regex_mode(pattern)?;
        Ok(Self {
            pattern: pattern.to_string(),
            compiled: OnceLock::from(compiled),
        })
    }

    /// A pattern of the built-in rules, compiled on first use.
    pub(crate) fn deferred(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_string(),
            compiled: OnceLock::new(),
        }
    }

    /// The pattern as written in the rule.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether it has been compiled (at load, or by a use since).
    pub fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }

    /// The compiled regex (compiled now if it was deferred).
    pub fn regex(&self) -> &Regex {
        &self.compiled_mode().0
    }

    fn compiled_mode(&self) -> &(Regex, bool) {
        self.compiled
            .get_or_init(|| match compile_bytes_regex_mode(&self.pattern) {
                Ok(compiled) => compiled,
                // Only the built-in rules' patterns are deferred, and the crate's tests
                // compile each of them (`builtin_tests`); a failure here is a build that
                // skipped its tests. Stop rather than scan without the rule.
                Err(e) => panic!(
                    "a built-in rule's regex does not compile (a bug; run the scan crate's \
                     tests): {}",
                    e
                ),
            })
    }
}

impl RulePattern {
    /// The pattern's syntax tree as [`compile_bytes_regex`] reads it when Unicode mode is off
    /// (`\w`, `\s`, `\b` and case folding ASCII-only); `None` when the pattern needs
    /// Unicode mode (its regex is then compiled with it, which this tree would not describe).
    pub(crate) fn ascii_syntax(&self) -> Option<regex_syntax::hir::Hir> {
        if self.compiled_mode().1 {
            return None;
        }
        regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&escape_literal_braces(&self.pattern))
            .ok()
    }
}

impl std::ops::Deref for RulePattern {
    type Target = Regex;

    fn deref(&self) -> &Regex {
        self.regex()
    }
}

/// Compiles a content regex: Unicode mode off when the pattern allows it (keeps the `regex`
/// crate on its fast path, `\b` and `\w` become ASCII), otherwise with Unicode.
pub(crate) fn compile_bytes_regex(pattern: &str) -> Result<Regex, regex::Error> {
    compile_bytes_regex_mode(pattern).map(|(re, _)| re)
}

/// [`compile_bytes_regex`], and whether the regex needed Unicode mode.
fn compile_bytes_regex_mode(pattern: &str) -> Result<(Regex, bool), regex::Error> {
    let pattern = &escape_literal_braces(pattern);
    let build = |unicode: bool| {
        RegexBuilder::new(pattern)
            .unicode(unicode)
            .size_limit(64 << 20)
            .dfa_size_limit(32 << 20)
            .build()
    };
    build(false)
        .map(|re| (re, false))
        .or_else(|_| build(true).map(|re| (re, true)))
}

/// Go's RE2 (gitleaks' engine) reads a `{` that does not start a repetition (`{{`, `${VAR}`) as
/// a literal; the `regex` crate rejects it. Escape such braces so gitleaks rule files load as
/// they are.
fn escape_literal_braces(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                out.push(c);
                if let Some(&n) = chars.get(i + 1) {
                    out.push(n);
                }
                i += 2;
                // `\p{Greek}`, `\P{L}`, `\x{41}`: the braces are the escape's own
                if matches!(chars.get(i - 1), Some('p' | 'P' | 'x'))
                    && chars.get(i) == Some(&'{')
                    && let Some(len) = chars[i..].iter().position(|&c| c == '}')
                {
                    out.extend(&chars[i..=i + len]);
                    i += len + 1;
                }
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` right after `[` or `[^` is a literal member of the class.
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    out.push(']');
                    i += 1;
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' if !in_class => {
                let rest: String = chars[i + 1..].iter().take(24).collect();
                match repetition_len(&rest) {
                    Some(len) => {
                        out.push('{');
                        out.extend(&chars[i + 1..i + 1 + len]);
                        i += 1 + len;
                        continue;
                    }
                    None => out.push_str("\\{"),
                }
            }
            '}' if !in_class => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Length of `n}`, `n,}` or `n,m}` at the start of `s` (a valid repetition body), if any.
fn repetition_len(s: &str) -> Option<usize> {
    let end = s.find('}')?;
    let body = &s[..end];
    let (a, b) = match body.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (body, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    let ok = digits(a) && b.is_none_or(|b| b.is_empty() || digits(b));
    ok.then_some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn go_literal_braces_are_escaped() {
        assert_eq!(
            escape_literal_braces(r"a{2,5}b{3}c{4,}"),
            r"a{2,5}b{3}c{4,}"
        );
        assert_eq!(escape_literal_braces(r"\$?{{[^}]+}}"), r"\$?\{\{[^}]+\}\}");
        assert_eq!(escape_literal_braces(r"\${VAR}"), r"\$\{VAR\}");
        assert_eq!(escape_literal_braces(r"[{}]\{x\}"), r"[{}]\{x\}");
        assert_eq!(escape_literal_braces(r"[]{]a{,3}"), r"[]{]a\{,3\}");
        assert!(compile_bytes_regex(r#"['"]?\$?{{[^}]+}}['"]?"#).is_ok());
    }

    #[test]
    fn the_braces_of_unicode_classes_and_hex_escapes_are_kept() {
        assert_eq!(escape_literal_braces(r"\p{Greek}+"), r"\p{Greek}+");
        assert_eq!(escape_literal_braces(r"\P{L}{2}\x{41}"), r"\P{L}{2}\x{41}");
        assert_eq!(escape_literal_braces(r"[\p{Lu}]{3}"), r"[\p{Lu}]{3}");
        // an escaped brace after them is still a literal
        assert_eq!(escape_literal_braces(r"\p\{x}"), r"\p\{x\}");
        let greek = compile_bytes_regex(r"key=\p{Greek}{3}\x{21}").unwrap();
        assert!(greek.is_match("key=αβγ!".as_bytes()));
        assert!(!greek.is_match(b"key=abc!"));
    }
}
