//! Judging the value a name is assigned (`password = …`, `"secret": …`, `?token=…`).
//!
//! A rule that matches a name and its value (tagged [`crate::config::ASSIGNMENT_TAG`]) sees
//! everything a program assigns to such a name: the secret, but also a hint or an error
//! message (`password_hint = "the name of your first pet"`), a reference to where the secret
//! really is (`${DB_PASSWORD}`, `%(password)s`, `{{ .Values.token }}`) and a placeholder
//! (`xxxxxxxx`, `<your token>`, `CHANGE_ME`). Entropy alone cannot tell them apart: a sentence
//! has more bits per character than many passwords. This module looks at the value's shape
//! instead and says why it is not a secret; rules' own allowlists still apply after it.

/// Words that make a value with spaces read as a sentence rather than a passphrase.
const FUNCTION_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "to",
    "of",
    "for",
    "in",
    "on",
    "at",
    "by",
    "with",
    "from",
    "your",
    "you",
    "this",
    "that",
    "it",
    "its",
    "must",
    "should",
    "will",
    "can",
    "cannot",
    "not",
    "and",
    "or",
    "if",
    "as",
    "has",
    "have",
    "do",
    "does",
    "please",
    "enter",
    "least",
    "characters",
    "contain",
    "here",
    "invalid",
    "incorrect",
    "wrong",
    "required",
    "my",
    "our",
    "we",
    "no",
    "none",
    "did",
    "match",
    "missing",
    "empty",
    "too",
    "short",
    "long",
];

/// References to a value kept elsewhere (shell, templates, format strings).
const REFERENCE_MARKS: &[&str] = &["${", "$(", "{{", "}}", "%(", "<%", "#{", "@{"];

/// The first bytes of [`REFERENCE_MARKS`].
static MARK_STARTS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < REFERENCE_MARKS.len() {
        t[REFERENCE_MARKS[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    t
};

/// Placeholder words; a value holding one is a stand-in for the secret.
const PLACEHOLDER_WORDS: &[&str] = &[
    "xxxx",
    "****",
    "....",
    "\u{2026}",
    "changeme",
    "change_me",
    "change-me",
    "replace_me",
    "replace-me",
    "replaceme",
    "placeholder",
    "your_",
    "your-",
    "yourpass",
    "yoursecret",
    "yourtoken",
    "insert_",
    "insert-",
    "redacted",
    "todo",
    "fixme",
    "dummy",
];

/// Why an assigned value is not a secret, or `None` when it may be one.
pub(crate) fn not_a_secret(value: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(value);
    let v = text.trim();
    if v.is_empty() {
        return Some("empty");
    }
    if is_prose(v) {
        return Some("prose");
    }
    if is_reference(v) {
        return Some("a reference");
    }
    if is_placeholder(v) {
        return Some("a placeholder");
    }
    if is_email(v) {
        return Some("an e-mail address");
    }
    if is_published_example(v) {
        return Some("an example published in a standard");
    }
    None
}

/// Passwords that standards print as their example, as the rules' allowlists hold the example
/// keys of AWS's and Google's documentation: a value copied from a public page is no secret.
/// Compared whole, case and the separator between words aside (`open_sesame`), never as a
/// part of a longer value (`open_sesame_7Gk2` is someone's password).
const PUBLISHED_EXAMPLES: &[&str] = &[
    // RFC 7617 (HTTP Basic authentication) §2: user-id "Aladdin", password "open sesame".
    "open sesame",
];

fn is_published_example(v: &str) -> bool {
    // (the comparison keeps every byte where it is, so only values of an example's length,
    // with or without its spaces, can be one: the others are not copied to be compared)
    if !PUBLISHED_EXAMPLES
        .iter()
        .any(|e| v.len() == e.len() || v.len() == e.len() - e.matches(' ').count())
    {
        return false;
    }
    spells_a_published_example(v)
}

/// Whether `v`, its words joined by `_`, `-`, a space or nothing and in any case, is one of
/// the [`PUBLISHED_EXAMPLES`] (the comparison itself, without the length check before it).
fn spells_a_published_example(v: &str) -> bool {
    let v: String = v
        .chars()
        .map(|c| match c {
            '_' | '-' | ' ' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    PUBLISHED_EXAMPLES
        .iter()
        .any(|e| v == *e || v == e.replace(' ', ""))
}

/// `name@domain.tld` or `name@`: what anonymous FTP and many login forms take as the password
/// (RFC 1635). A lower-case name and a dotted domain (or none), so that `p@ssword` and
/// `Summer2024@` stay secrets.
fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || matches!(b, b'.' | b'_' | b'-'))
        && (domain.is_empty()
            || domain.contains('.')
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')))
}

/// Words separated by spaces that read as a sentence: a function word, a sentence's end, or
/// many words. A few plain words (`correct horse battery`) may be a passphrase.
fn is_prose(v: &str) -> bool {
    // Most values are one word of ASCII: no whitespace byte in them, nor a byte of another
    // character (which may be Unicode whitespace), is one word at most.
    if !v
        .bytes()
        .any(|b| b >= 0x80 || matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' '))
    {
        return false;
    }
    // (counted up to 5 without collecting the words)
    let words = v.split_whitespace().take(5).count();
    if words < 2 {
        return false;
    }
    if words >= 5 || v.ends_with(['.', '!', '?', ':']) {
        return true;
    }
    v.split_whitespace().any(|w| {
        let w = w
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_ascii_lowercase();
        FUNCTION_WORDS.contains(&w.as_str())
    })
}

fn is_reference(v: &str) -> bool {
    // Each mark is two bytes: one look at each pair of bytes instead of a substring search
    // per mark (eight searches for every value judged).
    if v.as_bytes().windows(2).any(|pair| {
        MARK_STARTS[usize::from(pair[0])] && REFERENCE_MARKS.iter().any(|m| m.as_bytes() == pair)
    }) {
        return true;
    }
    if v.starts_with('$') || v.starts_with('%') && v.ends_with('%') {
        return true;
    }
    // `<password>`, `{token}`, `[secret]`
    matches!(
        (v.chars().next(), v.chars().last()),
        (Some('<'), Some('>')) | (Some('{'), Some('}')) | (Some('['), Some(']'))
    )
}

fn is_placeholder(v: &str) -> bool {
    let holds_word = match placeholder_words() {
        Some(words) => words.is_match(v),
        None => {
            let lower = v.to_ascii_lowercase();
            PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w))
        }
    };
    if holds_word {
        return true;
    }
    // One character for most of the value (`aaaaaaaa`, `00000000`, `--------`).
    if v.len() < 6 {
        return false;
    }
    let mut counts = [0usize; 256];
    let mut most = 0;
    for &b in v.as_bytes() {
        let c = &mut counts[usize::from(b)];
        *c += 1;
        most = most.max(*c);
    }
    most * 10 >= v.len() * 7
}

/// [`PLACEHOLDER_WORDS`] in one automaton, ASCII case folded (what comparing them with the
/// value lower-cased finds: the words are lower-case, and the non-ASCII one is compared as
/// it is either way), built on first use; `None` if it could not be built (the words are
/// then looked for one by one).
///
/// Why: a search per word, each over a lower-cased copy of the value, was a tenth of a scan
/// of files dense with assignments (most matches of the generic rules are judged here).
fn placeholder_words() -> Option<&'static aho_corasick::AhoCorasick> {
    static WORDS: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::OnceLock::new();
    WORDS
        .get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(PLACEHOLDER_WORDS)
                .ok()
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// [`not_a_secret`] as it was written before its searches were made cheaper: a substring
    /// search per mark and per word (over the value lower-cased), the words collected, every
    /// value copied to be compared with the published examples.
    fn not_a_secret_reference(value: &[u8]) -> Option<&'static str> {
        let text = String::from_utf8_lossy(value);
        let v = text.trim();
        let prose = |v: &str| {
            let words: Vec<&str> = v.split_whitespace().collect();
            if words.len() < 2 {
                return false;
            }
            if words.len() >= 5 || v.ends_with(['.', '!', '?', ':']) {
                return true;
            }
            words.iter().any(|w| {
                let w = w
                    .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                    .to_ascii_lowercase();
                FUNCTION_WORDS.contains(&w.as_str())
            })
        };
        let reference = |v: &str| {
            REFERENCE_MARKS.iter().any(|m| v.contains(m))
                || v.starts_with('$')
                || v.starts_with('%') && v.ends_with('%')
                || matches!(
                    (v.chars().next(), v.chars().last()),
                    (Some('<'), Some('>')) | (Some('{'), Some('}')) | (Some('['), Some(']'))
                )
        };
        let placeholder = |v: &str| {
            let lower = v.to_ascii_lowercase();
            if PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) {
                return true;
            }
            let mut counts = [0usize; 256];
            for &b in v.as_bytes() {
                counts[usize::from(b)] += 1;
            }
            let most = counts.iter().max().copied().unwrap_or(0);
            v.len() >= 6 && most * 10 >= v.len() * 7
        };
        // (every value compared: the length check before it is what is tested)
        let example = spells_a_published_example;
        if v.is_empty() {
            Some("empty")
        } else if prose(v) {
            Some("prose")
        } else if reference(v) {
            Some("a reference")
        } else if placeholder(v) {
            Some("a placeholder")
        } else if is_email(v) {
            Some("an e-mail address")
        } else if example(v) {
            Some("an example published in a standard")
        } else {
            None
        }
    }

    #[test]
    fn values_are_judged_as_the_searches_one_by_one_judge_them() {
        // Values built from pieces of every kind the judge looks for (marks, placeholder
        // words in any case, function words, the example, an ellipsis, runs of one byte)
        // and random bytes, joined by separators, spaces or nothing.
        let pieces: Vec<&[u8]> = vec![
            b"${",
            b"$(",
            b"{{",
            b"}}",
            b"%(",
            b"<%",
            b"#{",
            b"@{",
            b"$",
            b"%",
            b"<",
            b">",
            b"{",
            b"}",
            b"[",
            b"]",
            b"XxXx",
            b"xxxx",
            b"****",
            b"....",
            "\u{2026}".as_bytes(),
            "\u{a0}".as_bytes(),
            "\u{3000}".as_bytes(),
            b"\x0b",
            b"ChangeMe",
            b"CHANGE_ME",
            b"change-me",
            b"Replace_Me",
            b"PLACEHOLDER",
            b"Your_",
            b"YOUR-",
            b"yourPass",
            b"insert_",
            b"ReDacted",
            b"todo",
            b"FixMe",
            b"dummy",
            b"the",
            b"Is",
            b"please",
            b"open",
            b"sesame",
            b"Open_Sesame",
            b"OPENSESAME",
            b"a",
            b"aaaaaaa",
            b"0000",
            b"user@example.com",
            b"name@",
            b"p@ss",
            b"hunter2",
            b"8f2b1c9d7e6a5f4b",
            b".",
            b"!",
            b"?",
            b":",
            b"\\xff",
            b"\xff",
            b"\xc3\xa9",
        ];
        let seps: [&[u8]; 5] = [b"", b" ", b"_", b"-", b"\t"];
        let mut rng = crate::decode::tests::Rng(0x2545_f491_4f6c_dd1d);
        let mut disagree = Vec::new();
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let mut v = Vec::new();
            for _ in 0..rng.below(6) {
                if rng.below(5) == 0 {
                    for _ in 0..rng.below(8) {
                        v.push(rng.below(256) as u8);
                    }
                } else {
                    v.extend_from_slice(pieces[rng.below(pieces.len())]);
                }
                v.extend_from_slice(seps[rng.below(seps.len())]);
            }
            let (got, want) = (not_a_secret(&v), not_a_secret_reference(&v));
            kinds.insert(want);
            if got != want {
                disagree.push((String::from_utf8_lossy(&v).into_owned(), got, want));
            }
        }
        assert_eq!(disagree, Vec::new());
        // (every verdict was reached by some value)
        assert_eq!(kinds.len(), 7, "{kinds:?}");
    }

    #[test]
    fn prose_references_and_placeholders_are_not_secrets() {
        let judged: Vec<(&str, Option<&str>)> = [
            "The name of your first pet",
            "Password must be at least 8 characters",
            "Invalid username or password.",
            "Enter the new password",
            "please try again",
            "${DB_PASSWORD}",
            "$DB_PASSWORD",
            "%(password)s",
            "{{ .Values.token }}",
            "<your api key>",
            "{token}",
            "%PASSWORD%",
            "xxxxxxxxxxxxxxxx",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "****************",
            "CHANGE_ME_PLEASE",
            "your-secret-here",
            "anonymous@example.com",
            "busybox@",
            "   ",
        ]
        .iter()
        .map(|v| (*v, not_a_secret(v.as_bytes())))
        .collect();
        let want = vec![
            ("The name of your first pet", Some("prose")),
            ("Password must be at least 8 characters", Some("prose")),
            ("Invalid username or password.", Some("prose")),
            ("Enter the new password", Some("prose")),
            ("please try again", Some("prose")),
            ("${DB_PASSWORD}", Some("a reference")),
            ("$DB_PASSWORD", Some("a reference")),
            ("%(password)s", Some("a reference")),
            ("{{ .Values.token }}", Some("a reference")),
            ("<your api key>", Some("prose")),
            ("{token}", Some("a reference")),
            ("%PASSWORD%", Some("a reference")),
            ("xxxxxxxxxxxxxxxx", Some("a placeholder")),
            (
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Some("a placeholder"),
            ),
            ("****************", Some("a placeholder")),
            ("CHANGE_ME_PLEASE", Some("a placeholder")),
            ("your-secret-here", Some("a placeholder")),
            ("anonymous@example.com", Some("an e-mail address")),
            ("busybox@", Some("an e-mail address")),
            ("   ", Some("empty")),
        ];
        assert_eq!(judged, want);
    }

    #[test]
    fn a_standards_example_password_is_not_a_secret_but_one_built_on_it_is() {
        for v in [
            "open sesame",
            "Open Sesame",
            "open_sesame",
            "open-sesame",
            "opensesame",
        ] {
            assert_eq!(
                not_a_secret(v.as_bytes()),
                Some("an example published in a standard"),
                "{v}"
            );
        }
        for v in [
            "open_sesame_7Gk2",
            "0pen sesame",
            "open sesame 42",
            "sesame open",
        ] {
            assert_eq!(not_a_secret(v.as_bytes()), None, "{v}");
        }
    }

    #[test]
    fn secret_looking_values_pass() {
        for v in [
            "super$ecret",
            "hunter2!",
            "correct horse battery",
            "Tr0ub4dor&3",
            "8f2b1c9d7e6a5f4b3c2d1e0f9a8b7c6d",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYz3kqP0Lm1N",
            "p@ss w0rd 42",
            "123P4ssW0rd@@",
            "p@ssword",
            "Summer2024@",
        ] {
            assert_eq!(not_a_secret(v.as_bytes()), None, "{v}");
        }
    }
}
