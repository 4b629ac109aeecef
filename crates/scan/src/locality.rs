//! Which rules need to read only the lines their keywords are on.
//!
//! Why: a rule's keywords decide whether its regex runs on a fragment at all (as gitleaks
//! does), and then it runs over the whole fragment. For the generic assignment rules, whose
//! keywords (`key`, `api`, `token`, `secret`...) are in nearly every source file, that is a
//! regex over nearly every byte scanned: with `generic-keyed-secret` (added after the
//! 2026-11-27 bench table) it was about a third of a file scan's CPU and halved its
//! throughput. Those rules' regexes spell their keywords inside the match and cannot cross a
//! line, so every match lies on the line of one of the keyword occurrences the keyword search
//! already found; reading those lines alone finds exactly the same matches.
//!
//! The proof is made on the regex's syntax tree, for any rule (built-in or from a rule file),
//! and is conservative: a rule it cannot prove keeps the whole fragment.
//!
//! * **The match holds a keyword.** Some part every match must go through (an element of the
//!   top-level concatenation, recursively; every branch of an alternation) can only start with
//!   strings that each contain one of the rule's keywords, ASCII case folded as the keyword
//!   search folds them. Those strings are enumerated (literals, small classes, optional parts)
//!   up to a bound; anything else stops the enumeration there.
//! * **The match stays on that line.** No part of the regex can match a line feed, except a
//!   single character class that ends the match (the `\s` that closes an assignment). With
//!   Unicode mode on (a rule that needs it) nothing is proved: case folding could then reach a
//!   keyword through a non-ASCII letter the keyword search does not fold.
//!
//! The region searched is the keyword's line and its line feed, inside the whole fragment:
//! the search starts at the line's start with the bytes before it in view, and ends after the
//! line feed. Every assertion (`^`, `\b`, `$`, `\z`) is judged where it is judged over the
//! whole fragment: before the region's end the bytes are the same, and the region's end (after
//! the line feed) is reached only by the final class taking that line feed, after which the
//! regex asserts nothing.
//!
//! **Runs in binary data.** Binary files are scanned too, and their line feeds are few: a
//! keyword's line there is often most of the file, and every rule it wakes read all of it.
//! A rule whose regex cannot match a *break* byte ([`is_break`]: the C0 controls other than
//! the whitespace ones, and DEL), except as its last byte as above, has every match inside
//! the run of non-break bytes around its keyword (and that run's closing break byte); the
//! engine cuts such a rule's lines at the breaks around each keyword occurrence
//! ([`stays_in_run`]). The region then starts just after a break byte or at a line start, and
//! ends just after a break byte or a line feed: the same argument holds with the break byte
//! in the line feed's place.

use regex_syntax::hir::{Class, Hir, HirKind};

/// How many strings the enumeration of a part's possible starts keeps before giving up on it.
const MAX_STARTS: usize = 256;

/// The most line feeds a match may hold for its rule to be read around its keywords' lines.
///
/// 32 (16 before 2026-12-07): most service rules frame their secret as gitleaks writes them,
/// `[\w.-]{0,20}?(?:key|token|...)[\w.-]{0,10}["']?\s{0,10}(?::=|=>|:|=)\s{0,10}["']?(...)`
/// and a class that may end on the line feed, so up to 21 line feeds: at 16 those 52 rules
/// read the whole fragment wherever their keyword occurs (`linear`, `drone`, `ado`...);
/// now 43 lines around each occurrence, and the whole fragment when those cover half of it.
const MAX_LINES_AROUND: usize = 32;

/// Where a rule's matches lie, seen from the keyword occurrences they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Anywhere in the fragment.
    Fragment,
    /// On the keyword's line, with its line feed.
    Line,
    /// Within this many lines before and after the keyword's line (the last one with its
    /// line feed): a match holds at most this many line feeds.
    Lines(usize),
}

/// Where every match of the regex `hir` (parsed with Unicode mode off) lies, if it contains
/// one of `keywords` (lower-cased).
pub(crate) fn reach(hir: &Hir, keywords: &[String]) -> Reach {
    if keywords.is_empty() || keywords.iter().any(|k| k.is_empty()) || !holds_keyword(hir, keywords)
    {
        return Reach::Fragment;
    }
    if line_feed_only_last(hir) {
        return Reach::Line;
    }
    match max_line_feeds(hir) {
        Some(n) if n <= MAX_LINES_AROUND => Reach::Lines(n),
        _ => Reach::Fragment,
    }
}

/// Whether every match of `hir` contains one of `keywords` and no line feed except as its
/// last byte.
#[cfg(test)]
fn matches_on_keyword_line(hir: &Hir, keywords: &[String]) -> bool {
    reach(hir, keywords) == Reach::Line
}

/// The most line feeds a match of `hir` can hold (`None`: no bound).
fn max_line_feeds(hir: &Hir) -> Option<usize> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(lit) => Some(lit.0.iter().filter(|&&b| b == b'\n').count()),
        HirKind::Class(_) => Some(usize::from(can_match_line_feed(hir))),
        HirKind::Repetition(r) => {
            let per = max_line_feeds(&r.sub)?;
            match r.max {
                _ if per == 0 => Some(0),
                Some(max) => per.checked_mul(max as usize),
                None => None,
            }
        }
        HirKind::Capture(c) => max_line_feeds(&c.sub),
        HirKind::Concat(hs) => hs
            .iter()
            .try_fold(0usize, |n, h| n.checked_add(max_line_feeds(h)?)),
        HirKind::Alternation(hs) => hs
            .iter()
            .try_fold(0usize, |n, h| Some(n.max(max_line_feeds(h)?))),
    }
}

/// Whether `hir` can match a line feed anywhere.
fn can_match_line_feed(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(lit) => lit.0.contains(&b'\n'),
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Repetition(r) => r.max != Some(0) && can_match_line_feed(&r.sub),
        HirKind::Capture(c) => can_match_line_feed(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(can_match_line_feed),
    }
}

/// Whether a match of `hir` holds a line feed only as its last byte: nothing can match one
/// but a single character class with nothing after it.
fn line_feed_only_last(hir: &Hir) -> bool {
    only_last(hir, &can_match_line_feed)
}

/// Whether a match of `hir` holds a byte `can_match` stands for only as its last byte:
/// nothing can match one but a single character class with nothing after it.
fn only_last(hir: &Hir, can_match: &dyn Fn(&Hir) -> bool) -> bool {
    match hir.kind() {
        HirKind::Class(_) => true,
        HirKind::Capture(c) => only_last(&c.sub, can_match),
        HirKind::Alternation(hs) => hs.iter().all(|h| only_last(h, can_match)),
        HirKind::Concat(hs) => match hs.split_last() {
            Some((last, init)) => !init.iter().any(can_match) && only_last(last, can_match),
            None => true,
        },
        _ => !can_match(hir),
    }
}

/// A byte that breaks a run of text in binary data: a C0 control other than tab, line feed,
/// vertical tab, form feed and carriage return (which text holds, and `\s` matches), or DEL.
pub(crate) fn is_break(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0e..=0x1f | 0x7f)
}

/// Whether every match of `hir` (parsed with Unicode mode off) holds a break byte
/// ([`is_break`]) only as its last byte: its match lies in the run of non-break bytes around
/// any of its bytes, and that run's closing break byte.
pub(crate) fn stays_in_run(hir: &Hir) -> bool {
    only_last(hir, &can_match_break)
}

/// Whether `hir` can match a break byte anywhere.
fn can_match_break(hir: &Hir) -> bool {
    let ranges = |lo: u32, hi: u32| {
        [(0x00, 0x08), (0x0e, 0x1f), (0x7f, 0x7f)]
            .iter()
            .any(|&(a, b)| lo <= b && a <= hi)
    };
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(lit) => lit.0.iter().any(|&b| is_break(b)),
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| ranges(u32::from(r.start()), u32::from(r.end()))),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .any(|r| ranges(u32::from(r.start()), u32::from(r.end()))),
        HirKind::Repetition(r) => r.max != Some(0) && can_match_break(&r.sub),
        HirKind::Capture(c) => can_match_break(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(can_match_break),
    }
}

/// Whether every match of `hir` contains one of `keywords`.
fn holds_keyword(hir: &Hir, keywords: &[String]) -> bool {
    let all_hold = |ss: Vec<Start>| {
        ss.iter()
            .all(|s| keywords.iter().any(|k| contains(&s.bytes, k.as_bytes())))
    };
    starts(hir).is_some_and(all_hold)
        || match hir.kind() {
            HirKind::Capture(c) => holds_keyword(&c.sub, keywords),
            HirKind::Repetition(r) if r.min >= 1 => holds_keyword(&r.sub, keywords),
            // a part that starts at any element (`[?&]` then `token=`: the keyword `token=`
            // spans two elements)
            HirKind::Concat(hs) => {
                (1..hs.len()).any(|i| starts_of_concat(&hs[i..]).is_some_and(all_hold))
                    || hs.iter().any(|h| holds_keyword(h, keywords))
            }
            HirKind::Alternation(hs) => hs.iter().all(|h| holds_keyword(h, keywords)),
            _ => false,
        }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A string a match of a part starts with (lower-cased); `exact`: the match is that string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Start {
    bytes: Vec<u8>,
    exact: bool,
}

impl Start {
    fn exact(bytes: Vec<u8>) -> Self {
        Self { bytes, exact: true }
    }
}

/// Strings one of which every match of `hir` starts with (ASCII lower-cased), or `None`
/// when they cannot be listed within [`MAX_STARTS`].
fn starts(hir: &Hir) -> Option<Vec<Start>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![Start::exact(Vec::new())]),
        HirKind::Literal(lit) => Some(vec![Start::exact(lit.0.to_ascii_lowercase())]),
        HirKind::Class(class) => {
            let mut bytes: Vec<u8> = Vec::new();
            match class {
                Class::Bytes(c) => {
                    for r in c.ranges() {
                        for b in r.start()..=r.end() {
                            bytes.push(b.to_ascii_lowercase());
                            if bytes.len() > MAX_STARTS {
                                return None;
                            }
                        }
                    }
                }
                Class::Unicode(c) => {
                    for r in c.ranges() {
                        for ch in r.start()..=r.end() {
                            // A non-ASCII member is several bytes; not worth listing.
                            let b = u8::try_from(ch).ok().filter(u8::is_ascii)?;
                            bytes.push(b.to_ascii_lowercase());
                            if bytes.len() > MAX_STARTS {
                                return None;
                            }
                        }
                    }
                }
            }
            bytes.sort_unstable();
            bytes.dedup();
            Some(bytes.into_iter().map(|b| Start::exact(vec![b])).collect())
        }
        HirKind::Capture(c) => starts(&c.sub),
        HirKind::Repetition(r) => match (r.min, r.max) {
            (1, Some(1)) => starts(&r.sub),
            (0, Some(1)) => {
                let mut ss = starts(&r.sub)?;
                ss.push(Start::exact(Vec::new()));
                Some(ss)
            }
            (0, _) => Some(vec![Start {
                bytes: Vec::new(),
                exact: false,
            }]),
            _ => Some(
                starts(&r.sub)?
                    .into_iter()
                    .map(|s| Start {
                        bytes: s.bytes,
                        exact: false,
                    })
                    .collect(),
            ),
        },
        HirKind::Alternation(hs) => {
            let mut all = Vec::new();
            for h in hs {
                all.extend(starts(h)?);
                if all.len() > MAX_STARTS {
                    return None;
                }
            }
            Some(all)
        }
        HirKind::Concat(hs) => starts_of_concat(hs),
    }
}

/// [`starts`] of the concatenation of `hs`.
fn starts_of_concat(hs: &[Hir]) -> Option<Vec<Start>> {
    let mut acc = vec![Start::exact(Vec::new())];
    for h in hs {
        if acc.iter().all(|s| !s.exact) {
            break;
        }
        let next = starts(h);
        let Some(next) = next.filter(|n| n.len() * acc.len() <= MAX_STARTS) else {
            // What follows cannot be listed: what was read so far is only a start.
            for s in &mut acc {
                s.exact = false;
            }
            break;
        };
        let mut grown = Vec::with_capacity(acc.len() * next.len());
        for s in acc {
            if !s.exact {
                grown.push(s);
                continue;
            }
            for n in &next {
                let mut bytes = s.bytes.clone();
                bytes.extend_from_slice(&n.bytes);
                grown.push(Start {
                    bytes,
                    exact: n.exact,
                });
            }
        }
        acc = grown;
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(pattern: &str, keywords: &[&str]) -> bool {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(pattern)
            .unwrap();
        let kws: Vec<String> = keywords.iter().map(|k| k.to_string()).collect();
        matches_on_keyword_line(&hir, &kws)
    }

    #[test]
    fn keyword_spelled_in_the_match_on_one_line_is_local() {
        assert!(!local(
            r"(?i)[\w.-]*(?:key|token)[\w.-]*\s*=\s*(\w+)",
            &["key", "token"]
        ));
        assert!(local(
            r"(?i)[\w.-]*(?:key|token)[\w.-]*[ \t]*=[ \t]*(\w+)",
            &["key", "token"]
        ));
        // optional parts are listed: api_key, api-key, apikey all hold a keyword
        assert!(local(
            r"(?i)(?:token|api[_-]?key)[ \t]*=[ \t]*(\w+)",
            &["token", "apikey", "api_key", "api-key"]
        ));
        // a trailing class that may take the line feed is allowed
        assert!(local(r"(?im)secret=(\w{8,})(?:[\s;]|$)", &["secret"]));
        // end of text, asserted before the line feed
        assert!(local(r"(?i)token=([0-9a-f]{8})(?:[^0-9a-f]|$)", &["token"]));
        // case folding through a prefix the regex factors out
        assert!(local(r"(?i)pass(?:word|wd)=(\S+)", &["passw"]));
    }

    fn in_run(pattern: &str) -> bool {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(pattern)
            .unwrap();
        stays_in_run(&hir)
    }

    #[test]
    fn matches_that_cannot_hold_a_break_byte_stay_in_runs() {
        assert!(in_run(r"(?i)[\w.-]*(?:key|token)[\w.-]*[ \t]*=[ \t]*(\w+)"));
        // whitespace, line feeds included, is not a break
        assert!(in_run(r"token\s{0,10}=\s{0,10}(\w+)"));
        // a final class may take one, as it may take the line feed
        assert!(in_run(r"(?i)token=([0-9a-f]{8})(?:[^0-9a-f]|$)"));
        // `.` and negated classes can match a zero byte, DEL or ESC
        assert!(!in_run(r"token.{0,40}=(\w+)"));
        assert!(!in_run(r"token=[^;]+;"));
        assert!(!in_run(r"token=\x00(\w+)"));
        assert!(!in_run(r"token=[\x7f]?(\w+)"));
        assert!(!in_run(r"token=[\x1b]?(\w+)"));
        // a class that may take one, then more
        assert!(!in_run(r"token=([^a]\w+)"));
        assert!(is_break(0) && is_break(0x08) && is_break(0x0e) && is_break(0x1f));
        assert!(is_break(0x7f));
        assert!(!(0x09..=0x0d).any(is_break) && !(0x20..0x7f).any(is_break));
        assert!(!(0x80..=0xff).any(is_break));
    }

    #[test]
    fn anything_unproved_keeps_the_whole_fragment() {
        // the keyword is not in the match
        assert!(!local(r"ghp_[A-Za-z0-9]{36}", &["github"]));
        // one branch without the keyword
        assert!(!local(r"(?:token|bearer)=(\w+)", &["token"]));
        // api alone does not hold apikey
        assert!(!local(r"(?i)api[_-]?(?:key)?=(\w+)", &["apikey"]));
        // the match may cross lines
        assert!(!local(r"(?s)token.{0,40}=(\w+)", &["token"]));
        assert!(!local(r"token=[^;]+;", &["token"]));
        assert!(!local(r"token[ \t\r\n]*=(\w+)", &["token"]));
        // a line feed class that is not last
        assert!(!local(r"token=\s\w+", &["token"]));
        // a class that may take the line feed, then an assertion
        assert!(!local(r"token=(\w+)\s\b", &["token"]));
        // optional keyword
        assert!(!local(r"(?:token)?=(\w+)", &["token"]));
        // no keywords: the rule always runs
        assert!(!local(r"token=(\w+)", &[]));
        // Unicode classes beyond ASCII
        assert!(!local(r"(?u)(?i)key=(\w+)", &["key"]));
    }
}
