//! Patterns as gitleaks writes them, compiled by the `regex` crate: the RE2 spellings Go
//! accepts and `regex` does not (a literal `{`) are escaped first, and Unicode mode is kept
//! off where the pattern allows it (the fast path).

use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use regex::bytes::{Regex, RegexBuilder};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::pool::Pool;
use regex_automata::util::prefilter::Prefilter;
use regex_automata::{Input, MatchKind};
use regex_syntax::hir::Hir;

/// A rule's content regex, compiled when it is first used, or at load.
///
/// Why: building the ~190 built-in regexes is most of what `bot-bottle scan` spends before
/// its first file (the Thompson NFA, literal prefilters and one-pass DFA of each), and most
/// rules never run on a given input: a rule's regex runs only where one of its keywords
/// occurs. So the patterns of the built-in rules, which are known to compile (every one is
/// compiled by the crate's tests), are compiled the first time a keyword calls for them;
/// every other pattern (from a rule file) is compiled at load, where an error names the file
/// and the rule.
///
/// Even then most of the built-in rules whose keywords occur in a tree never match in it
/// (a scan of 40 crates of the cargo registry compiled 63 regexes, about a quarter of its
/// instructions; with the check below, 5 are compiled). Until a built-in pattern's regex
/// is compiled, whether it matches at all is asked of a forward lazy DFA built from the same
/// syntax tree, relaxed (`ForwardCheck`: one NFA without captures, wide repetitions
/// unbounded, and a small prefilter of its prefix literals; no reverse NFA, inner literals
/// or one-pass DFA: 0.34 M instructions a rule on that scan, against 2.2 M for a whole
/// regex); the regex is compiled only where that says it may match, and its searches then
/// run as they always did. An allowlist's regexes are only asked whether they match, so
/// theirs are never compiled (their checks, exact and without a prefilter, cost about a
/// third of their regexes). The price: a rule that does match pays its check and its regex
/// (the Nosey Parker examples, where most rules match, took 0.5% more instructions).
#[derive(Debug, Clone)]
pub struct RulePattern {
    pattern: String,
    /// The regex, and whether it needed Unicode mode.
    compiled: OnceLock<(Regex, bool)>,
    /// The syntax tree with Unicode mode off, parsed once (`None`: the pattern needs it).
    syntax: OnceLock<Option<Hir>>,
    /// The forward check of a pattern not compiled yet, built on first use (`None`: none
    /// could be built; the regex is then compiled and asked).
    check: OnceLock<Option<Arc<ForwardCheck>>>,
}

impl RulePattern {
    /// A pattern compiled now.
    pub(crate) fn compiled(pattern: &str) -> Result<Self, regex::Error> {
        let compiled = compile_bytes_regex_mode(pattern)?;
        Ok(Self {
            pattern: pattern.to_string(),
            compiled: OnceLock::from(compiled),
            syntax: OnceLock::new(),
            check: OnceLock::new(),
        })
    }

    /// A pattern of the built-in rules, compiled on first use.
    pub(crate) fn deferred(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_string(),
            compiled: OnceLock::new(),
            syntax: OnceLock::new(),
            check: OnceLock::new(),
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

    /// `false` only where the regex has no match in `haystack` at or after `start` (found
    /// as [`Regex::find_at`] searches: the bytes before `start` are seen by assertions such
    /// as `\b`); `true` where it may have one. Once the regex is compiled this is always
    /// `true` (its own search tells, at no extra cost); before, the forward check answers,
    /// exactly, and the regex is compiled only when it says yes.
    pub(crate) fn may_match_at(&self, haystack: &[u8], start: usize) -> bool {
        if self.compiled.get().is_some() {
            return true;
        }
        self.check(Use::Search)
            .and_then(|check| check.matches_at(haystack, start))
            .unwrap_or(true)
    }

    /// Whether the regex matches somewhere in `haystack` ([`Regex::is_match`]), answered by
    /// the forward check while the regex is not compiled (an allowlist's regexes are only
    /// asked this, so theirs are compiled only where the check cannot answer).
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        if let Some((re, _)) = self.compiled.get() {
            return re.is_match(haystack);
        }
        let check = self.check(Use::IsMatch);
        match check.and_then(|c| c.matches_at(haystack, 0)) {
            Some(false) => false,
            // (a relaxed check's yes is only a maybe)
            Some(true) if check.is_some_and(|c| c.exact) => true,
            _ => self.regex().is_match(haystack),
        }
    }

    /// The forward check, if one could be built (`first`: what it is built for, if this is
    /// its first use).
    fn check(&self, first: Use) -> Option<&ForwardCheck> {
        self.check
            .get_or_init(|| {
                // The generic rules' regexes run only where their prechecks leave a place,
                // and nearly every such line holds a match: their checks would only delay
                // the compilation, and add to it.
                if first == Use::Search && crate::precheck::for_pattern(&self.pattern).is_some() {
                    return None;
                }
                ForwardCheck::new(self.ascii_syntax()?, first).map(Arc::new)
            })
            .as_deref()
    }
}

/// What a pattern's forward check is first asked for, which decides how it is built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A rule's search of some lines or a fragment: relaxed (see [`relaxed`]; where it
    /// says yes, the regex is compiled and searches), with the prefix literals' prefilter
    /// (what lets a search skip to where a match may start, as the regex's does).
    Search,
    /// Whether an allowlist's regex matches a secret, a match or a line: exact (not
    /// relaxed: its yes is the answer), and short, so no prefilter (which cost as much to
    /// build as the rest of the check).
    IsMatch,
}

/// A forward lazy DFA of a regex, without captures: whether it may match, and nothing about
/// where.
///
/// Built from the syntax tree the regex is compiled from (with Unicode mode off: `\b` is
/// ASCII, which a lazy DFA follows on any bytes), relaxed for a rule's search (see
/// [`relaxed`]: every match of the regex is one of the check's, so where the check finds
/// none the regex has none; a yes is a maybe), exact for an allowlist's question, with
/// the `regex` crate's settings for it (leftmost-first, the NFA size limit, the lazy DFA's
/// cache size, and giving up, as the crate does, when its cache is cleared too often: the
/// regex is then asked instead).
struct ForwardCheck {
    dfa: DFA,
    caches: Pool<Cache, CacheFn>,
    /// How many bytes it has searched: past [`CHECK_BUDGET`], it stops answering and the
    /// regex is compiled (see [`CHECK_BUDGET`]).
    searched: AtomicUsize,
    /// Built from the regex as it is: its yes means the regex matches (otherwise only
    /// that it may).
    exact: bool,
}

/// How many bytes a pattern's forward check searches before its regex is compiled anyway.
///
/// Why: the check searches a line more slowly than the regex does (it has the regex's
/// prefix literals, not the literals inside that the regex's own strategies look for), so
/// on a large tree a rule whose keywords are common pays the regex's compilation once
/// rather than the check's slower search on every keyword line; on a small tree most rules
/// never reach it and are never compiled. (Instructions of a scan of 40 registry crates,
/// measured before checks were relaxed: 587 M with 64 KiB, 575 M with 1 MiB, 577 M with
/// 4 MiB; 701 M when it answered its first search only.)
const CHECK_BUDGET: usize = 1 << 20;

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

impl ForwardCheck {
    fn new(syntax: &Hir, first: Use) -> Option<Self> {
        let exact = first == Use::IsMatch;
        let relaxed = if exact { None } else { Some(relaxed(syntax)) };
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .utf8(false)
                    .shrink(false)
                    .which_captures(WhichCaptures::None)
                    .nfa_size_limit(Some(NFA_SIZE_LIMIT)),
            )
            .build_from_hir(relaxed.as_ref().unwrap_or(syntax))
            .ok()?;
        // The literals every match of the regex starts with, searched for first (as the
        // regex does): the relaxed regex's matches may start elsewhere, but it is asked only
        // whether the regex may match, and each of its matches is one of the relaxed one's.
        let prefilter = match first {
            Use::Search => prefix_prefilter(syntax),
            Use::IsMatch => None,
        };
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::LeftmostFirst)
                    .specialize_start_states(prefilter.is_some())
                    .prefilter(prefilter)
                    .unicode_word_boundary(true)
                    .cache_capacity(DFA_SIZE_LIMIT)
                    .minimum_cache_clear_count(Some(3))
                    .minimum_bytes_per_state(Some(10)),
            )
            .build_from_nfa(nfa)
            .ok()?;
        let for_caches = dfa.clone();
        let create: CacheFn = Box::new(move || for_caches.create_cache());
        Some(Self {
            dfa,
            caches: Pool::new(create),
            searched: AtomicUsize::new(0),
            exact,
        })
    }

    /// Whether the regex matches in `haystack` at or after `start`; `None` when the lazy
    /// DFA gave up (or met a byte it cannot judge), or the check's budget is spent.
    fn matches_at(&self, haystack: &[u8], start: usize) -> Option<bool> {
        let len = haystack.len().saturating_sub(start);
        if self.searched.fetch_add(len, Ordering::Relaxed) > CHECK_BUDGET {
            return None;
        }
        let input = Input::new(haystack).range(start..).earliest(true);
        let mut cache = self.caches.get();
        self.dfa
            .try_search_fwd(&mut cache, &input)
            .ok()
            .map(|m| m.is_some())
    }
}

/// A prefilter of the literals every match of `syntax` starts with: at most 16 of them, of
/// at most 3 bytes (the regex crate takes up to 250 of up to 100 bytes).
///
/// Why: built as the regex crate builds its own, a check's prefilter (the extraction of every
/// case of `(?i)` keywords, then a Teddy or Aho-Corasick searcher of them) was two thirds of
/// building a check; short and few, it costs a fraction, and the keyword lines a check
/// searches are short. (Instructions: reg40 545 M → 530 M, labelled fixtures 608 M → 586 M,
/// with 32 literals of 2 or 3 bytes about the same.)
fn prefix_prefilter(syntax: &Hir) -> Option<Prefilter> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let mut extractor = Extractor::new();
    extractor
        .kind(ExtractKind::Prefix)
        .limit_total(16)
        .limit_literal_len(3);
    let mut prefixes = extractor.extract(syntax);
    // (as the regex crate orders them for leftmost-first matching)
    prefixes.optimize_for_prefix_by_preference();
    prefixes
        .literals()
        .and_then(|literals| Prefilter::new(MatchKind::LeftmostFirst, literals))
}

/// A bounded repetition whose bounds are at least this far apart loses its upper bound in
/// a forward check ([`relaxed`]).
const RELAXED_SPAN: u32 = 16;

/// `syntax` with its wide bounded repetitions unbounded above (`x{12,150}` read as
/// `x{12,}`, `x{0,300}?` as `x*?`): a regex whose matches include every match of the
/// original (same assertions, same groups; a repetition's upper bound only ever rules
/// matches out), with a much smaller NFA.
///
/// Why: the Thompson NFA holds one copy of the repeated expression per count up to the upper
/// bound; the curl rules' `[^\r\n]{0,300}?` and `{8,1024}`, the generic rules' `{10,128}`
/// made most of the cost of building their checks. Where the relaxed regex matches and the
/// original does not (a run longer than its bound), the regex is compiled and asked, as it
/// is wherever the check says yes.
fn relaxed(syntax: &Hir) -> Hir {
    use regex_syntax::hir::{Capture, HirKind, Repetition};
    match syntax.kind() {
        HirKind::Repetition(rep) => {
            let max = rep
                .max
                .filter(|&max| max.saturating_sub(rep.min) < RELAXED_SPAN);
            Hir::repetition(Repetition {
                min: rep.min,
                max,
                greedy: rep.greedy,
                sub: Box::new(relaxed(&rep.sub)),
            })
        }
        HirKind::Capture(cap) => Hir::capture(Capture {
            index: cap.index,
            name: cap.name.clone(),
            sub: Box::new(relaxed(&cap.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(relaxed).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(relaxed).collect()),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => {
            syntax.clone()
        }
    }
}

impl std::fmt::Debug for ForwardCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardCheck").finish_non_exhaustive()
    }
}

impl RulePattern {
    /// The pattern's syntax tree as [`compile_bytes_regex`] reads it when Unicode mode is off
    /// (`\w`, `\s`, `\b` and case folding ASCII-only); `None` when the pattern needs
    /// Unicode mode (its regex is then compiled with it, which this tree would not describe).
    ///
    /// A deferred pattern is not compiled for this: its regex is compiled without Unicode
    /// mode exactly when this parse succeeds (a pattern that parses so compiles so unless
    /// it outgrows the size limit, and the crate's tests check that every built-in pattern,
    /// the only deferred ones, compiles without it). Why: the engine asks for this tree for
    /// each rule whose keyword occurs, before it knows whether the rule's regex will search
    /// anything (a rule whose path does not match, or whose precheck finds no place, never
    /// searches). Parsed once, and shared with the forward check.
    pub(crate) fn ascii_syntax(&self) -> Option<&Hir> {
        if self.compiled.get().is_some_and(|(_, unicode)| *unicode) {
            return None;
        }
        self.syntax
            .get_or_init(|| parse_ascii(&escape_literal_braces(&self.pattern)))
            .as_ref()
    }

    /// How many capture groups the regex has, the whole match's included (what
    /// [`Regex::captures_len`] says), read from the pattern's syntax when it is not compiled
    /// yet (so the load's check of a rule's `secretGroup` compiles nothing).
    pub fn captures_len(&self) -> usize {
        if let Some((re, _)) = self.compiled.get() {
            return re.captures_len();
        }
        if let Some(hir) = self.ascii_syntax() {
            return hir.properties().explicit_captures_len() + 1;
        }
        match parse(&escape_literal_braces(&self.pattern), true) {
            Some(hir) => hir.properties().explicit_captures_len() + 1,
            None => self.regex().captures_len(),
        }
    }
}

/// The syntax tree of an (escaped) pattern as the `regex` crate reads it with Unicode mode
/// off; `None` where it needs Unicode mode.
fn parse_ascii(pattern: &str) -> Option<Hir> {
    parse(pattern, false)
}

/// The syntax tree of an (escaped) pattern as the `regex` crate reads it, Unicode mode on or
/// off; `None` where it does not parse so.
fn parse(pattern: &str, unicode: bool) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(unicode)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()
}

impl std::ops::Deref for RulePattern {
    type Target = Regex;

    fn deref(&self) -> &Regex {
        self.regex()
    }
}

/// The size limit of a content regex's NFA (the `regex` crate's `size_limit`).
const NFA_SIZE_LIMIT: usize = 64 << 20;

/// The size limit of a content regex's lazy DFA cache (the `regex` crate's `dfa_size_limit`).
const DFA_SIZE_LIMIT: usize = 32 << 20;

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
            .size_limit(NFA_SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
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

    /// What a deferred pattern answers before it is compiled (its syntax tree, its groups)
    /// is what its compiled regex says: every built-in pattern is compiled in the mode its
    /// ASCII parse tells, with the groups its syntax counts.
    #[test]
    fn a_deferred_pattern_answers_as_its_compiled_regex() {
        let set = crate::config::RuleSet::builtin().unwrap();
        let deferred: Vec<&RulePattern> = set.patterns().collect();
        assert!(deferred.len() > 190, "{}", deferred.len());
        for p in deferred {
            assert!(!p.is_compiled(), "{}", p.as_str());
            let (ascii, groups) = (p.ascii_syntax().is_some(), p.captures_len());
            assert!(!p.is_compiled(), "{}", p.as_str());
            let (re, unicode) = p.compiled_mode();
            assert_eq!(ascii, !unicode, "{}", p.as_str());
            assert_eq!(groups, re.captures_len(), "{}", p.as_str());
            assert_eq!(p.ascii_syntax().is_some(), ascii, "{}", p.as_str());
        }
        // and for patterns that need Unicode mode, compiled or not
        for text in [r"\pL{3}(x)", r"(a)\p{Greek}(?:b)(c)"] {
            let deferred = RulePattern::deferred(text);
            assert!(deferred.ascii_syntax().is_none());
            assert_eq!(deferred.captures_len(), deferred.regex().captures_len());
            assert!(deferred.ascii_syntax().is_none());
            let compiled = RulePattern::compiled(text).unwrap();
            assert!(compiled.ascii_syntax().is_none());
            assert_eq!(compiled.captures_len(), deferred.captures_len());
        }
    }

    /// The forward check never says no where the regex matches: every built-in rule's
    /// pattern (relaxed in its check) on the positive and negative cases of every rule and
    /// the lines of the rule file, and on runs past the relaxed repetitions' bounds.
    #[test]
    fn the_forward_check_says_no_only_where_the_regex_does_not_match() {
        let cases = include_str!("../../rules/builtin-cases.toml");
        let mut hays: Vec<Vec<u8>> = cases
            .lines()
            .chain(crate::config::BUILTIN_RULES.lines())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        hays.extend(cases.split("\n\n").map(|c| c.as_bytes().to_vec()));
        for n in [15, 16, 17, 129, 151, 257, 301, 1025, 1100] {
            for c in ["a", "Z9", "=", "-", " "] {
                hays.push(format!("token = \"{}\"", c.repeat(n)).into_bytes());
                hays.push(format!("curl -u x:{}", c.repeat(n)).into_bytes());
            }
        }
        let set = crate::config::RuleSet::builtin().unwrap();
        let (mut said_no, mut matched) = (0, 0);
        for rule in &set.rules {
            let Some(p) = &rule.regex else { continue };
            let check = ForwardCheck::new(p.ascii_syntax().unwrap(), Use::Search).unwrap();
            let re = compile_bytes_regex(p.as_str()).unwrap();
            for hay in &hays {
                for start in [0, hay.len() / 3] {
                    let found = re.find_at(hay, start).is_some();
                    let may = check.matches_at(hay, start).unwrap_or(true);
                    assert!(
                        may || !found,
                        "{}: {:?}",
                        rule.id,
                        String::from_utf8_lossy(hay)
                    );
                    said_no += usize::from(!may);
                    matched += usize::from(found);
                }
            }
        }
        assert!(said_no > 10_000 && matched > 200, "{said_no} {matched}");
    }

    /// An allowlist's question, answered by a check before the regex is compiled, gets the
    /// regex's answer: every built-in pattern, rules' and allowlists', on the lines of the
    /// cases and rule files; and a pattern searched by its (relaxed) check first still
    /// answers it as the regex does.
    #[test]
    fn is_match_answers_as_the_regex() {
        let hays: Vec<&[u8]> = include_str!("../../rules/builtin-cases.toml")
            .lines()
            .chain(crate::config::BUILTIN_RULES.lines())
            .chain(["token = \"Ab3dEf5hIj7lMn9pQr1tUv3x\""; 1])
            .map(str::as_bytes)
            .collect();
        let set = crate::config::RuleSet::builtin().unwrap();
        let patterns: Vec<&str> = set.patterns().map(|p| p.as_str()).collect();
        let mut matched = 0;
        for text in patterns {
            let re = compile_bytes_regex(text).unwrap();
            let asked = RulePattern::deferred(text);
            let searched = RulePattern::deferred(text);
            searched.may_match_at(b"", 0);
            for hay in &hays {
                let want = re.is_match(hay);
                assert_eq!(
                    asked.is_match(hay),
                    want,
                    "{text}: {:?}",
                    String::from_utf8_lossy(hay)
                );
                assert_eq!(searched.is_match(hay), want, "{text}");
                matched += usize::from(want);
            }
        }
        assert!(matched > 1000, "{matched}");
    }

    #[test]
    fn wide_repetitions_are_relaxed_and_the_rest_kept() {
        let parse = |p: &str| parse_ascii(p).unwrap();
        assert_eq!(relaxed(&parse(r"a{12,150}b")), parse(r"a{12,}b"));
        assert_eq!(
            relaxed(&parse(r"(x[^\n]{0,300}?){0,5}")),
            parse(r"(x[^\n]*?){0,5}")
        );
        assert_eq!(
            relaxed(&parse(r"(?i)\b(k{2,18}|v{3,5})$")),
            parse(r"(?i)\b(k{2,}|v{3,5})$")
        );
        assert_eq!(relaxed(&parse(r"[a-f0-9]{32}")), parse(r"[a-f0-9]{32}"));
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
