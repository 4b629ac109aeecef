//! Necessary conditions, checked before a rule's regex searches some bytes, that are much
//! cheaper than the search: where the bytes fail one, the regex cannot match in them and is
//! not run; where they pass, the regex runs exactly as it would have. So a precheck changes
//! no finding, only what judging costs.
//!
//! Why: `generic-keyed-secret` runs on every line holding `key`, `api`, `auth`, `access`,
//! `token`... which in source code is a large share of all lines (`let key = ...`,
//! `fn api(...)`), and its regex search there (the lazy DFA forward, then backward for the
//! start, then the captures) was about a sixth of a file scan's CPU (bench/README.md,
//! sessions scan7 and scan8). Nearly all of those lines have no value of 12 to 150 token
//! characters right after an assignment operator, ended where the rule's value ends, which a
//! byte walk from each `=`, `:` or `>` tells.
//!
//! The same holds, with prechecks of their own, for `generic-secret` and
//! `generic-secret-punctuated`: their searches of the lines holding `token`, `secret`,
//! `passw`... took about 0.2 s of the 2 CPU s of a scan of the cargo registry's sources (a
//! counting build, session decwalk), and most of those lines have no operator followed by
//! the quoted or bare value those rules want.
//!
//! A precheck is tied to the exact text of the regex it stands before: a rule file that
//! redefines the rule with another regex gets no precheck (the search runs on every line, as
//! it did), never a wrong one.

/// The built-in `generic-keyed-secret` rule's regex, as `rules/builtin.toml` writes it (a test
/// checks that they are the same text).
pub(crate) const GENERIC_KEYED_SECRET: &str = r#"(?im)[\w.-]*(?:key|api|auth|access|token|secret|credential|creds|passw(?:or)?d|pwd)[\w.-]*[ \t]{0,3}["']?[ \t]{0,3}(?:=|:=|::=|:|=>|\?=|\|\|=)[ \t]{0,5}[`'"]?([A-Za-z0-9_.~+/=-]{12,150})(?:[`'"\s;,)\]}]|\\[nrt]|$)"#;

/// The built-in `generic-secret` rule's regex, as `rules/builtin.toml` writes it (a test checks
/// that they are the same text).
pub(crate) const GENERIC_SECRET: &str = r##"(?im)[\w.-]*(?:secret|passw(?:or)?d|pwd|token|api[_.-]?key|access[_.-]?key|auth[_.-]?key|private[_.-]?key|credentials?)[\w.-]{0,24}["']?[ \t]{0,5}(?:===?|!==?|:=|=>|\|\|=|\?=|:|=)[ \t]{0,5}(?:"([A-Za-z0-9._~+/=@#%^*!?&-]{10,128})"|'([A-Za-z0-9._~+/=@#%^*!?&-]{10,128})'|`([A-Za-z0-9._~+/=@#%^*!?&-]{10,128})`|([A-Za-z0-9._~+/=@#%^*!?&-]{10,128});?[ \t]*(?:$|#|//))"##;

/// The built-in `generic-secret-punctuated` rule's regex, as `rules/builtin.toml` writes it (a
/// test checks that they are the same text).
pub(crate) const GENERIC_SECRET_PUNCTUATED: &str = r##"(?i)[\w.-]*(?:secret|passw(?:or)?d|pwd|token|api[_.-]?key|private[_.-]?key|signing[_.-]?key)[\w.-]{0,24}["']?[ \t]{0,5}(?:===?|:=|=>|:|=)[ \t]{0,5}(?:"([^"\s]{20,256})"|'([^'\s]{20,256})')"##;

/// A necessary condition for a regex to match in some bytes (searched alone: their end is the
/// haystack's end), and the places it leaves: every match of the regex in the bytes lies on a
/// line that holds one of them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Precheck {
    /// Whether the regex may match somewhere in the bytes.
    pub(crate) may_match: fn(&[u8]) -> bool,
    /// Calls `place` with each position in the bytes where a match may be anchored (for
    /// [`GENERIC_KEYED_SECRET`]: its operator's last byte), in ascending order, while it
    /// returns true. The line of each match of the regex holds one of them; where there is
    /// none, the regex matches nowhere.
    pub(crate) places: fn(&[u8], &mut dyn FnMut(usize) -> bool),
}

/// The precheck for a rule's regex, if there is one for exactly this text.
pub(crate) fn for_pattern(pattern: &str) -> Option<Precheck> {
    match pattern {
        GENERIC_KEYED_SECRET => Some(Precheck {
            may_match: keyed_value_may_match,
            places: keyed_value_places,
        }),
        GENERIC_SECRET => Some(Precheck {
            may_match: |hay| operator_walk(hay, secret_value_at, |_| false),
            places: |hay, place| {
                operator_walk(hay, secret_value_at, place);
            },
        }),
        GENERIC_SECRET_PUNCTUATED => Some(Precheck {
            may_match: |hay| operator_walk(hay, punctuated_value_at, |_| false),
            places: |hay, place| {
                operator_walk(hay, punctuated_value_at, place);
            },
        }),
        _ => None,
    }
}

/// The walk of the prechecks of [`GENERIC_SECRET`] and [`GENERIC_SECRET_PUNCTUATED`]: calls
/// `place` with each `=`, `:` or `>` (the last byte of each of their operators) after which,
/// past at most five spaces or tabs (`[ \t]{0,5}`: neither a quote nor a value byte is one,
/// so the value starts at the first other byte), `value_at` finds a value the regex may take;
/// in order, while `place` returns true. Returns whether it was stopped.
///
/// Both regexes are compiled with Unicode mode off (a test checks it): `\w`, `\s` and case
/// folding are ASCII, and every class below is one of bytes, so the walk reads the bytes as
/// the regex does. A match holds no line feed (none of the bytes between its key and its
/// value's end may be one), so its line holds its operator's last byte, a place.
fn operator_walk(
    hay: &[u8],
    value_at: fn(&[u8], usize) -> bool,
    mut place: impl FnMut(usize) -> bool,
) -> bool {
    let mut from = 0;
    while let Some(p) = memchr::memchr3(b'=', b':', b'>', &hay[from..]) {
        let op = from + p;
        from = op + 1;
        let mut s = op + 1;
        let mut spaces = 0;
        while spaces < 5 && matches!(hay.get(s), Some(b' ' | b'\t')) {
            s += 1;
            spaces += 1;
        }
        if value_at(hay, s) && !place(op) {
            return true;
        }
    }
    false
}

/// ASCII `\s` (Unicode mode off): tab, line feed, vertical tab, form feed, carriage return,
/// space (`u8::is_ascii_whitespace` leaves out the vertical tab).
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// [`GENERIC_SECRET_PUNCTUATED`]'s value at `s`: `"([^"\s]{20,256})"` or the same in single
/// quotes. The class holds neither its quote nor a space, so the value is the whole run of
/// the class after the quote: 20 to 256 bytes, then the same quote.
fn punctuated_value_at(hay: &[u8], s: usize) -> bool {
    let Some(&q) = hay.get(s).filter(|&&b| b == b'"' || b == b'\'') else {
        return false;
    };
    let from = s + 1;
    let limit = hay.len().min(from + 257);
    let mut e = from;
    while e < limit && hay[e] != q && !is_space(hay[e]) {
        e += 1;
    }
    (20..=256).contains(&(e - from)) && hay.get(e) == Some(&q)
}

/// The value class of [`GENERIC_SECRET`]: `[A-Za-z0-9._~+/=@#%^*!?&-]`.
fn is_secret_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'_'
                | b'~'
                | b'+'
                | b'/'
                | b'='
                | b'@'
                | b'#'
                | b'%'
                | b'^'
                | b'*'
                | b'!'
                | b'?'
                | b'&'
                | b'-'
        )
}

/// [`GENERIC_SECRET`]'s value at `s`: 10 to 128 bytes of its class, either between two like
/// quotes (`"`, `'` or a backtick; no quote is of the class, so the value is the whole run
/// after the quote) or bare and followed by `;?[ \t]*(?:$|#|//)` (multi-line `$`: a line
/// feed or the end). A bare value may stop inside its run only before a `#` or `//` (a byte
/// of the class is neither `;`, a space nor a line feed); at the run's end (128 bytes at
/// most), the ending above.
fn secret_value_at(hay: &[u8], s: usize) -> bool {
    let Some(&first) = hay.get(s) else {
        return false;
    };
    let run_end = |from: usize, max: usize| {
        let limit = hay.len().min(from + max);
        let mut e = from;
        while e < limit && is_secret_byte(hay[e]) {
            e += 1;
        }
        e
    };
    if matches!(first, b'"' | b'\'' | b'`') {
        let e = run_end(s + 1, 129);
        return (10..=128).contains(&(e - s - 1)) && hay.get(e) == Some(&first);
    }
    // The run, cut at 129 bytes (a value of 128 then stops inside it).
    let e = run_end(s, 129);
    let run = e - s;
    if run < 10 {
        return false;
    }
    let comment = |k: usize| hay[k] == b'#' || hay[k..].starts_with(b"//");
    (10..run.min(129)).any(|len| len <= 128 && comment(s + len))
        || (run <= 128 && bare_value_ends(hay, e))
}

/// Whether `;?[ \t]*(?:$|#|//)` matches at `k` (multi-line `$`: before a line feed, or at the
/// end).
fn bare_value_ends(hay: &[u8], mut k: usize) -> bool {
    if hay.get(k) == Some(&b';') {
        k += 1;
    }
    while matches!(hay.get(k), Some(b' ' | b'\t')) {
        k += 1;
    }
    match hay.get(k) {
        None | Some(b'\n' | b'#') => true,
        Some(b'/') => hay.get(k + 1) == Some(&b'/'),
        Some(_) => false,
    }
}

/// A byte of the value class `[A-Za-z0-9_.~+/=-]` (ASCII; under `(?i)` with Unicode mode on,
/// `k` and `s` also fold to the non-ASCII KELVIN SIGN and LONG S, which the caller leaves to
/// the regex).
fn is_value_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'+' | b'/' | b'=' | b'-')
}

/// Whether what follows a value may end it: `` [`'"\s;,)\]}] ``, `\\[nrt]` (any byte after
/// the backslash is let through: cheaper, and still a superset), `$` (a line feed, also
/// `\s`, or the end). A non-ASCII byte may be Unicode whitespace: let through.
fn may_end_value(hay: &[u8], e: usize) -> bool {
    match hay.get(e) {
        None => true,
        Some(&b) => {
            b >= 0x80
                || matches!(
                    b,
                    b'`' | b'\''
                        | b'"'
                        | b';'
                        | b','
                        | b')'
                        | b']'
                        | b'}'
                        | b'\\'
                        | b' '
                        | b'\t'
                        | b'\n'
                        | 0x0B
                        | 0x0C
                        | b'\r'
                )
        }
    }
}

/// [`GENERIC_KEYED_SECRET`]'s precheck. Its match ends with an operator whose last byte is
/// `=`, `:` or `>`, then `[ \t]{0,5}`, an optional quote, the value `[A-Za-z0-9_.~+/=-]{12,150}`
/// and a byte that ends it. Spaces and quotes are not value bytes, so after each operator byte
/// the value can start at one place only (past at most five spaces or tabs and at most one
/// quote); the value class's greedy run from there, cut at 150, must be 12 long at least and
/// end where a value may end (any shorter match would end on a value byte, which ends
/// nothing). Where the walk meets a non-ASCII byte it lets the regex decide.
pub(crate) fn keyed_value_may_match(hay: &[u8]) -> bool {
    keyed_value_walk(hay, |_| false)
}

/// [`keyed_value_may_match`]'s walk, every place kept: the position of each operator byte
/// whose value may match (or where the walk met a non-ASCII byte and lets the regex decide).
/// A match's operator is always one of them (the operators the walk passes over lie on the
/// same line as one it judged, and cannot end a match's operator, as said below), and a
/// match holds no line feed before its value's end: its line holds its operator.
pub(crate) fn keyed_value_places(hay: &[u8], place: &mut dyn FnMut(usize) -> bool) {
    keyed_value_walk(hay, place);
}

/// The walk of [`keyed_value_may_match`]: calls `place` with each operator byte whose value
/// may match, in order, and goes on while it returns true. Returns whether it was stopped.
fn keyed_value_walk(hay: &[u8], mut place: impl FnMut(usize) -> bool) -> bool {
    let mut from = 0;
    while let Some(p) = memchr::memchr3(b'=', b':', b'>', &hay[from..]) {
        let op = from + p;
        from = op + 1;
        let mut s = op + 1;
        let mut spaces = 0;
        while spaces < 5 && matches!(hay.get(s), Some(b' ' | b'\t')) {
            s += 1;
            spaces += 1;
        }
        if matches!(hay.get(s), Some(b'`' | b'\'' | b'"')) {
            s += 1;
        }
        let limit = hay.len().min(s + 151);
        let mut e = s;
        while e < limit && is_value_byte(hay[e]) {
            e += 1;
        }
        if hay.get(e).is_some_and(|&b| b >= 0x80) {
            if may_hold_key(hay, op) && !place(op) {
                return true;
            }
            continue;
        }
        let len = e - s;
        if (12..=150).contains(&len) && may_end_value(hay, e) {
            if may_hold_key(hay, op) && !place(op) {
                return true;
            }
            continue;
        }
        // An operator byte inside this run but not its last (only `=` is a value byte) starts
        // a value right after it, one that ends where this one ends, shorter: it fails as this
        // one did, unless this run was cut at 151. (After the run's last byte, spaces or a
        // quote may lead to another run.)
        if len <= 150 {
            from = from.max(e.saturating_sub(1));
        }
    }
    false
}

/// The regex's keywords, as its key part spells them (`passw(?:or)?d` holds `passw`).
const KEYED_KEYWORDS: [&[u8]; 10] = [
    b"key",
    b"api",
    b"auth",
    b"access",
    b"token",
    b"secret",
    b"credential",
    b"creds",
    b"passw",
    b"pwd",
];

/// Whether a match of [`GENERIC_KEYED_SECRET`] whose operator ends at `op` may have its key
/// part: before the operator (whichever of `=`, `:=`, `::=`, `:`, `=>`, `?=`, `||=` ends
/// there) and at most six spaces or tabs and one quote, a run of `[\w.-]` holding one of the
/// keywords, ASCII case folded. Lenient where the regex may see more: spaces, tabs and
/// quotes in any order up to seven bytes, and a non-ASCII byte in or before the run (under
/// Unicode `\w` and case folding, `K` and `ſ` spell `k` and `s`) lets it through.
///
/// Why: most lines with an operator followed by a long enough value are code whose name on
/// the left holds no keyword (`let path = format_args_for_the_logger;`), and each was a
/// regex search.
fn may_hold_key(hay: &[u8], op: usize) -> bool {
    // Where the operator may start: `op`, and one or two bytes before it for the longer ones.
    let mut starts = [Some(op), None, None];
    match hay[op] {
        b'=' => {
            if op >= 1 && matches!(hay[op - 1], b':' | b'?') {
                starts[1] = Some(op - 1);
            }
            if op >= 2 && matches!(&hay[op - 2..op], b"::" | b"||") {
                starts[2] = Some(op - 2);
            }
        }
        // `>` alone is no operator; `=>` is
        b'>' => {
            starts[0] = None;
            if op >= 1 && hay[op - 1] == b'=' {
                starts[1] = Some(op - 1);
            }
        }
        _ => {}
    }
    starts.into_iter().flatten().any(|s| key_before(hay, s))
}

/// Whether the `[\w.-]` run before `at` (past up to seven spaces, tabs and quotes) holds a
/// keyword of [`KEYED_KEYWORDS`], or a non-ASCII byte lets the regex decide.
fn key_before(hay: &[u8], at: usize) -> bool {
    let mut end = at;
    let mut skipped = 0;
    while end > 0 && skipped < 7 && matches!(hay[end - 1], b' ' | b'\t' | b'"' | b'\'') {
        end -= 1;
        skipped += 1;
    }
    let mut start = end;
    while start > 0 {
        let b = hay[start - 1];
        if b >= 0x80 {
            return true;
        }
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            break;
        }
        start -= 1;
    }
    let run = &hay[start..end];
    KEYED_KEYWORDS
        .iter()
        .any(|k| run.windows(k.len()).any(|w| w.eq_ignore_ascii_case(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleSet;

    /// The built-in rule `id`'s regex, checked to be `text` (the one its precheck was written
    /// for), and its precheck.
    fn builtin_rule(id: &str, text: &str) -> (regex::bytes::Regex, Precheck) {
        let set = RuleSet::builtin().expect("built-in rules load");
        let rule = set
            .rules
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("the built-in rules have {id}"));
        let pattern = rule.regex.as_ref().expect("it has a regex");
        assert_eq!(
            pattern.as_str(),
            text,
            "{id}'s regex changed: revise its precheck (precheck.rs) with it"
        );
        let check = for_pattern(text).unwrap_or_else(|| panic!("{id} has a precheck"));
        (pattern.regex().clone(), check)
    }

    /// `generic-keyed-secret`'s regex and precheck.
    fn generic_keyed_secret() -> (regex::bytes::Regex, Precheck) {
        builtin_rule("generic-keyed-secret", GENERIC_KEYED_SECRET)
    }

    /// The precheck never says no where the regex matches, and every match lies on a line
    /// holding a place ([`places_hold_every_match`]); returns how many of `hays` the regex
    /// matched and how many the precheck let through.
    fn never_misses(re: &regex::bytes::Regex, check: Precheck, hays: &[Vec<u8>]) -> (usize, usize) {
        let (mut matched, mut passed) = (0, 0);
        for hay in hays {
            let m = re.is_match(hay);
            let p = (check.may_match)(hay);
            assert!(
                p || !m,
                "the precheck rejected bytes the regex matches: {:?}",
                String::from_utf8_lossy(hay)
            );
            matched += usize::from(m);
            passed += usize::from(p);
        }
        places_hold_every_match(re, check, hays);
        (matched, passed)
    }

    /// Every match of the regex in each of `hays` (searched as the engine searches a rule's
    /// lines: one after another through the bytes) lies on a line holding a place; and
    /// runs of the hays joined by line feeds, so that places and matches fall on many lines.
    fn places_hold_every_match(re: &regex::bytes::Regex, check: Precheck, hays: &[Vec<u8>]) {
        let joined: Vec<Vec<u8>> = hays.chunks(5).map(|c| c.join(&b'\n')).collect();
        let mut places = Vec::new();
        for hay in hays.iter().chain(&joined) {
            places.clear();
            (check.places)(hay, &mut |p| {
                places.push(p);
                true
            });
            assert!(
                places.windows(2).all(|w| w[0] < w[1]),
                "places out of order"
            );
            assert_eq!(!places.is_empty(), (check.may_match)(hay));
            for m in re.find_iter(hay) {
                let line_start = hay[..m.start()]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let line_end = hay[m.start()..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(hay.len(), |p| m.start() + p);
                assert!(
                    places.iter().any(|&p| line_start <= p && p < line_end),
                    "no place on the line of {:?} in {:?}",
                    String::from_utf8_lossy(m.as_bytes()),
                    String::from_utf8_lossy(hay)
                );
            }
        }
    }

    /// The key side: a keyword in the name before the operator, as the regex wants it.
    #[test]
    fn a_value_after_a_name_without_a_keyword_is_turned_down() {
        let (re, _) = generic_keyed_secret();
        let value = "Zx8qLmN3pRt7vWy2";
        for (line, may) in [
            (format!("let path = {value};"), false),
            (format!("let api_key = {value};"), true),
            (format!("self.Token.value := {value}"), true),
            (format!("\"secret\"  :  \"{value}\""), true),
            (format!("'x' : '{value}'"), false),
            (format!("PASSWD ||= {value}"), true),
            (format!("name ?= {value}"), false),
            (format!("creds::= {value}"), true),
            (format!("access => '{value}'"), true),
            (format!("access > '{value}'"), false),
            (format!("pwd\t\t\t'\t\t\t= {value}"), true),
            (format!("\u{212a}ey = {value}"), true),
            (format!("path = key {value}"), false),
        ] {
            assert_eq!(keyed_value_may_match(line.as_bytes()), may, "{line:?}");
            // and never where the regex matches
            assert!(may || !re.is_match(line.as_bytes()), "{line:?}");
        }
    }

    #[test]
    fn the_precheck_is_for_the_builtin_regex_only() {
        generic_keyed_secret();
        assert!(for_pattern(GENERIC_KEYED_SECRET).is_some());
        assert!(for_pattern(&GENERIC_KEYED_SECRET.replace("{12,150}", "{8,150}")).is_none());
    }

    /// The pieces random lines are made of: what the prechecked regexes care about
    /// (operators, spaces, quotes, value bytes, comments, backslashes, case, non-ASCII letters
    /// and spaces that Unicode folding or `\s` would take).
    const PIECES: &[&str] = &[
        "#",
        "//",
        "!",
        "@",
        "credentials",
        "signing_key",
        "SECRET",
        "path",
        "x.y-z",
        "name_of",
        "?",
        "|",
        "key",
        "KEY",
        "api",
        "Token",
        "passwd",
        "pwd",
        "secret",
        "=",
        ":",
        ">",
        "=>",
        ":=",
        "::=",
        "?=",
        "||=",
        " ",
        "  ",
        "\t",
        "\"",
        "'",
        "`",
        "\\n",
        "\\N",
        "\\",
        "abc",
        "Q7x9",
        "0123456789",
        "aB3dE5gH7jK9",
        "_",
        ".",
        "-",
        "~",
        "+",
        "/",
        "==",
        ";",
        ",",
        ")",
        "]",
        "}",
        "(",
        "\n",
        "\r",
        "\u{212a}",
        "\u{17f}",
        "\u{a0}",
        "\u{2028}",
        "é",
        "x",
        "\u{0b}",
        "\u{0c}",
    ];

    /// `n` lines of 1 to 24 random [`PIECES`] (the same ones each time).
    fn random_lines(n: usize) -> Vec<Vec<u8>> {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut hays = Vec::new();
        for _ in 0..n {
            let k = 1 + (next() % 24) as usize;
            let mut line = String::new();
            for _ in 0..k {
                line.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            hays.push(line.into_bytes());
        }
        hays
    }

    /// Every line of this crate's sources and rule files (the rules' test cases hold many
    /// assignments of secrets), each alone and in runs of eight.
    fn real_lines() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [
            "src",
            "src/config",
            "src/git",
            "rules",
            "tests",
            "tests/suite",
            "examples",
        ] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    files.push(std::fs::read(entry.path()).expect("read a source file"));
                }
            }
        }
        assert!(files.len() > 20, "found only {} files", files.len());
        let mut hays = Vec::new();
        for data in &files {
            let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
            hays.extend(lines.iter().map(|l| l.to_vec()));
            hays.extend(lines.chunks(8).map(|c| c.concat()));
        }
        hays
    }

    /// Lines made of the pieces the regex cares about, one at a time and joined: every one
    /// the regex matches, the precheck lets through.
    #[test]
    fn random_lines_the_regex_matches_pass_the_precheck() {
        let (re, check) = generic_keyed_secret();
        let mut hays = random_lines(200_000);
        // Values at the edges of 12 and 150, and runs longer than 150 with operators inside.
        for len in [10, 11, 12, 13, 149, 150, 151, 152, 300] {
            for op in ["=", ": ", "=>  \"", ":= '", "=     ", "=      "] {
                for end in ["", "\"", ";", "(", "\\n", "x\u{212a}", " ", "\u{a0}"] {
                    let value: String = (0..len)
                        .map(|i| ['a', '7', 'Z', '=', '/', '-'][i % 6])
                        .collect();
                    hays.push(format!("api_key{op}{value}{end}").into_bytes());
                    hays.push(format!("token{op}{value}={value}{end}").into_bytes());
                }
            }
        }
        let (matched, passed) = never_misses(&re, check, &hays);
        // (the lines exercise both sides, or the test shows nothing)
        assert!(matched > 1000, "only {matched} lines matched");
        assert!(passed < hays.len(), "the precheck let every line through");
    }

    /// Real lines: every line of this crate's sources and rule files (the rules' test cases
    /// hold many assignments of secrets), each alone and in runs of eight.
    #[test]
    fn real_lines_the_regex_matches_pass_the_precheck() {
        let (re, check) = generic_keyed_secret();
        let hays = real_lines();
        let (matched, passed) = never_misses(&re, check, &hays);
        assert!(matched > 100, "only {matched} real lines matched");
        assert!(
            passed < hays.len() / 2,
            "the precheck let {passed} of {} lines through",
            hays.len()
        );
    }

    /// Lines of random pieces, values at the edges of the rules' lengths after each kind of
    /// operator, spaces and quote, and real lines: every one `generic-secret` or
    /// `generic-secret-punctuated` matches, its precheck lets through, and every match lies
    /// on a line holding a place.
    #[test]
    fn lines_the_generic_secret_rules_match_pass_their_prechecks() {
        let mut hays = random_lines(100_000);
        for len in [
            9, 10, 11, 19, 20, 21, 127, 128, 129, 130, 255, 256, 257, 300,
        ] {
            let value: String = (0..len)
                .map(|i| ['a', '7', 'Z', '=', '/', '-', '#', '!', '\''][i % 9])
                .collect();
            let plain: String = (0..len).map(|i| ['a', '7', 'Z', '.'][i % 4]).collect();
            for op in [
                "=", ": ", "=>  ", ":= ", "!==", "||=", "=     ", "=      ", ">",
            ] {
                for (open, close) in [("\"", "\""), ("'", "'"), ("`", "`"), ("", ""), ("\"", "'")] {
                    for end in ["", ";", "; // c", " #", "\n", "(", " x", "\r\n", "\t"] {
                        for v in [&value, &plain] {
                            let line = format!("api_key{op}{open}{v}{close}{end}");
                            hays.push(line.into_bytes());
                            let line = format!("my.Secret\"{op}{open}{v}//x{close}{end}");
                            hays.push(line.into_bytes());
                        }
                    }
                }
            }
        }
        let real = real_lines();
        for (id, text) in [
            ("generic-secret", GENERIC_SECRET),
            ("generic-secret-punctuated", GENERIC_SECRET_PUNCTUATED),
        ] {
            let (re, check) = builtin_rule(id, text);
            let (matched, passed) = never_misses(&re, check, &hays);
            assert!(matched > 1000, "{id}: only {matched} lines matched");
            assert!(
                passed < hays.len() / 2,
                "{id}: {passed} lines of {} passed",
                hays.len()
            );
            let (matched, passed) = never_misses(&re, check, &real);
            assert!(matched > 20, "{id}: only {matched} real lines matched");
            assert!(
                passed < real.len() / 4,
                "{id}: {passed} real lines of {} passed",
                real.len()
            );
        }
    }

    /// The walks read bytes as the regexes do with Unicode mode off: the rules' regexes must
    /// compile so (a regex that needed Unicode mode would read `\s` and `\w` otherwise).
    #[test]
    fn the_prechecked_regexes_are_compiled_without_unicode() {
        let set = RuleSet::builtin().expect("built-in rules load");
        for (id, text) in [
            ("generic-keyed-secret", GENERIC_KEYED_SECRET),
            ("generic-secret", GENERIC_SECRET),
            ("generic-secret-punctuated", GENERIC_SECRET_PUNCTUATED),
        ] {
            builtin_rule(id, text);
            let rule = set.rules.iter().find(|r| r.id == id).expect("the rule");
            let pattern = rule.regex.as_ref().expect("a regex");
            assert!(pattern.ascii_syntax().is_some(), "{id} needs Unicode mode");
        }
    }
}
