//! The matching engine: one Aho-Corasick pass over every rule's keywords picks the rules (and,
//! in large fragments, the regions) that meet their regexes; then entropy, allowlists and the
//! inline `gitleaks:allow` marker decide what is reported.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::config::{ASSIGNMENT_TAG, Allowlist, Candidate, RegexTarget, Rule, RuleSet, contains};
use crate::decode;
use crate::finding::{Finding, MatchSpan, Secret, shannon_entropy};
use crate::locality::{self, Reach};
use crate::precheck::{self, Precheck};
use crate::value;

mod keyword_filter;

/// The marker that allows a finding on its line (unless switched off).
pub const INLINE_ALLOW: &[u8] = b"gitleaks:allow";

std::thread_local! {
    /// The per-rule slots of [`Engine::scan_plain`] (regions, lines), and the list of the
    /// rules whose slots a call filled, kept from call to call on a thread, all empty between
    /// calls: a call allocates and fills nothing for them.
    static RULE_SLOTS: std::cell::Cell<(RuleSlots, RuleSlots, Vec<usize>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One slot per rule: the regions or lines a rule is to be run over (`None`: not triggered).
type RuleSlots = Vec<Option<Vec<Range<usize>>>>;

/// Makes `slots` (all empty) at least `n` slots long. (Slots are empty between calls: a call that
/// finishes takes every slot of its rules, the only ones it fills, before putting them back,
/// and one that does not finish never puts them back.)
fn grow_slots(slots: &mut RuleSlots, n: usize) {
    debug_assert!(slots.iter().all(Option::is_none));
    if slots.len() < n {
        slots.resize(n, None);
    }
}

/// Fragments at least this large are scanned only around keyword hits.
const WINDOW_MIN_FRAGMENT: usize = 64 * 1024;
/// In fragments at least this large the first decoding pass's runs are found on another
/// thread while the rules run (smaller ones: handing the work over costs more than it saves).
const PARALLEL_MIN: usize = 64 * 1024;
/// Bytes before a keyword hit included in its region (then widened to a line start).
const WINDOW_BEFORE: usize = 4 * 1024;
/// Bytes after a keyword hit included in its region (then widened to a line end); large enough
/// for an RSA-4096 PEM block that starts at the hit.
const WINDOW_AFTER: usize = 8 * 1024;

/// Input to the engine: some bytes and where they came from.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    /// The file path as reported.
    pub path: &'a str,
    /// The commit, in git mode.
    pub commit: Option<&'a str>,
    /// The content.
    pub data: &'a [u8],
    /// In git mode, the file line number of each line of `data` (added lines only).
    pub line_map: Option<&'a [u32]>,
}

/// How much of a fragment's context the rules may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The fragment's path and commit are known: everything applies.
    Exact,
    /// They are not: only what holds at every path and commit (see [`Engine::may_find`]).
    AnyPath,
}

/// Compiled rules plus the keyword automaton.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    global: Vec<Allowlist>,
    keywords: Option<Keywords>,
    /// For each keyword pattern, the rules that list it.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords (always run).
    unconditional: Vec<usize>,
    /// Rules without a regex (those that match a path alone, if any).
    path_only: Vec<usize>,
    /// For each rule, where its matches lie around its keywords (decided on first use; see
    /// the `locality` module).
    /// (and whether its matches also stay in the run of text around a keyword occurrence in
    /// binary data: `locality::stays_in_run`)
    reach: Vec<std::sync::OnceLock<(Reach, bool)>>,
    /// For each rule, a cheap necessary condition for its regex to match in some bytes, run
    /// before the search (see the `precheck` module).
    prechecks: Vec<Option<Precheck>>,
    /// For each rule, whether one of its own allowlists allows every secret without an ASCII
    /// digit, wherever it is found (see [`allows_digitless_secrets`]).
    digitless_allowed: Vec<bool>,
    honor_inline_allow: bool,
    /// How many decoding passes run (0: none).
    max_decode_depth: usize,
    /// Whether the first decoding pass over a large fragment runs on another thread of the
    /// rayon pool while the rules run (see [`Engine::set_decode_beside`]).
    decode_beside: bool,
}

impl Engine {
    /// Builds the engine from a rule set.
    pub fn new(set: RuleSet, honor_inline_allow: bool) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut unconditional = Vec::new();
        for (i, rule) in set.rules.iter().enumerate() {
            if rule.regex.is_none() {
                continue;
            }
            if rule.keywords.is_empty() {
                unconditional.push(i);
            }
            for k in &rule.keywords {
                match patterns.iter().position(|p| p == k) {
                    Some(p) => keyword_rules[p].push(i),
                    None => {
                        patterns.push(k.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        let keywords = if patterns.is_empty() {
            None
        } else {
            // Keywords are lower-cased ASCII in practice; non-ASCII keywords still match
            // exactly, only their case folding is ASCII-only. One automaton: a DFA (no
            // prefilter: with this many case-folded keywords the crate has none to offer),
            // else the crate's smaller automaton.
            aho_corasick::dfa::DFA::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .start_kind(aho_corasick::StartKind::Unanchored)
                .prefilter(false)
                .build(&patterns)
                .ok()
                // (unanchored searches, the only kind run, start at this state)
                .filter(|dfa| {
                    use aho_corasick::automaton::Automaton;
                    dfa.start_state(aho_corasick::Anchored::No).is_ok()
                })
                .map(|dfa| {
                    let filter = keyword_filter::KeywordFilter::new(&patterns).map(Box::new);
                    Keywords::Dfa(Box::new(dfa), filter)
                })
                .ok_or(())
                .or_else(|()| {
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .build(&patterns)
                        .map(Keywords::Other)
                })
                .ok()
        };
        // If the automaton could not be built (it always can for sane sizes), every rule runs.
        if keywords.is_none() {
            unconditional = (0..set.rules.len())
                .filter(|&i| set.rules[i].regex.is_some())
                .collect();
            keyword_rules.clear();
        }
        let path_only = (0..set.rules.len())
            .filter(|&i| set.rules[i].regex.is_none())
            .collect();
        Self {
            reach: (0..set.rules.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            prechecks: set
                .rules
                .iter()
                .map(|r| {
                    r.regex
                        .as_ref()
                        .and_then(|p| precheck::for_pattern(p.as_str()))
                })
                .collect(),
            digitless_allowed: set
                .rules
                .iter()
                .map(|r| r.allowlists.iter().any(allows_digitless_secrets))
                .collect(),
            rules: set.rules,
            global: set.allowlists,
            keywords,
            keyword_rules,
            unconditional,
            path_only,
            honor_inline_allow,
            max_decode_depth: decode::DEFAULT_MAX_DECODE_DEPTH,
            decode_beside: true,
        }
    }

    /// Whether the first decoding pass over a fragment of at least 64 KiB runs on another
    /// thread of the rayon pool while the rules run on this one (the default), or after them
    /// on this thread. Same findings either way.
    pub fn set_decode_beside(&mut self, on: bool) {
        self.decode_beside = on;
    }

    /// How many times encoded text is decoded and scanned again (gitleaks'
    /// `--max-decode-depth`; 0 switches decoding off).
    pub fn set_max_decode_depth(&mut self, depth: usize) {
        self.max_decode_depth = depth;
    }

    /// Switches the inline `gitleaks:allow` marker on or off.
    pub fn set_honor_inline_allow(&mut self, on: bool) {
        self.honor_inline_allow = on;
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether a global allowlist skips this path entirely (so it need not be read).
    pub fn skips_path(&self, path: &str) -> bool {
        self.global
            .iter()
            .any(|a| a.target_rules.is_empty() && a.skips_path(path))
    }

    /// Whether a global allowlist skips this commit entirely.
    pub fn skips_commit(&self, commit: &str) -> bool {
        self.global
            .iter()
            .any(|a| a.target_rules.is_empty() && a.skips_commit(commit))
    }

    /// Scans one fragment, appending findings to `out` (in order of position per rule), then
    /// looks again at what it hides: its text as UTF-16, and its base64, hex and
    /// percent-encoded runs, decoded (findings in those are reported at the encoded run).
    pub fn scan(&self, frag: &Fragment<'_>, out: &mut Vec<Finding>) {
        if self.skips_path(frag.path) || frag.commit.is_some_and(|c| self.skips_commit(c)) {
            return;
        }
        self.scan_in(frag, out, Mode::Exact);
    }

    /// Whether bytes found at some unknown paths and commits may hold a finding: the rules
    /// run as [`Engine::scan`] runs them, except that whatever depends on the path or the
    /// commit is left out (rules' path conditions, allowlists naming paths or commits, rules
    /// that match a path alone). Never `false` where a scan of the same bytes at some path in
    /// some commit would report something; the git history scan reads each blob once and
    /// looks closer only at the commits that bring in a blob for which this is `true`.
    pub fn may_find(&self, data: &[u8]) -> bool {
        let mut out = Vec::new();
        self.scan_in(
            &Fragment {
                path: "",
                commit: None,
                data,
                line_map: None,
            },
            &mut out,
            Mode::AnyPath,
        );
        !out.is_empty()
    }

    /// Whether a rule that matches a path alone (no regex) matches this path.
    pub fn path_rule_matches(&self, path: &str) -> bool {
        self.rules.iter().any(|rule| {
            rule.regex.is_none()
                && !rule.skip_report
                && rule
                    .path
                    .as_ref()
                    .is_some_and(|p| p.is_match(path.as_bytes()))
        })
    }

    fn scan_in(&self, frag: &Fragment<'_>, out: &mut Vec<Finding>, mode: Mode) {
        let start = out.len();
        let mut place = Place::new(frag.data, frag.line_map);
        let mut reported = Vec::new();
        let mut plain = |out: &mut Vec<Finding>, reported: &mut Vec<Reported>| {
            self.scan_plain(
                frag,
                &mut place,
                out,
                mode == Mode::Exact,
                mode,
                Some(reported),
            );
        };
        // The first decoding pass's runs do not depend on the rules' findings: over large
        // fragments (a large blob or file) they are found on another thread of the rayon
        // pool, when one is free, while the rules run on this one (unless `decode_beside` is
        // off: outbound DLP judges its batches on a thread of their own already).
        let first_runs =
            if self.decode_beside && self.max_decode_depth > 0 && frag.data.len() >= PARALLEL_MIN {
                let (runs, ()) = rayon::join(
                    || decode::encoded_runs(frag.data),
                    || plain(out, &mut reported),
                );
                Some(runs)
            } else {
                plain(out, &mut reported);
                None
            };
        let plain = out.len();
        self.scan_hidden(frag, start, out, mode, first_runs, reported);
        if out.len() > plain {
            // Decoding passes find things out of line order; put them back in it.
            out[start..].sort_by_key(|f| f.line);
        }
    }

    /// The second looks: UTF-16 text, then the decoding passes (`first_runs`: the first
    /// pass's runs of `frag`, when they were found already; `reported`: where the secrets of
    /// `frag` as written were found).
    fn scan_hidden(
        &self,
        frag: &Fragment<'_>,
        start: usize,
        out: &mut Vec<Finding>,
        mode: Mode,
        first_runs: Option<Vec<decode::Decoded>>,
        reported: Vec<Reported>,
    ) {
        if let Some(text) = decode::utf16_text(frag.data) {
            let mut more = Vec::new();
            let mut more_reported = Vec::new();
            let sub = Fragment {
                data: &text,
                line_map: frag.line_map,
                ..*frag
            };
            let mut place = Place::new(&text, frag.line_map);
            self.scan_plain(
                &sub,
                &mut place,
                &mut more,
                false,
                mode,
                Some(&mut more_reported),
            );
            self.scan_decoded(&sub, start, out, mode, None, more_reported);
            push_new(out, start, more);
        }
        self.scan_decoded(frag, start, out, mode, first_runs, reported);
    }

    /// gitleaks' decoding passes: each pass replaces the encoded runs of the text with what
    /// they decode to, in place (so the text around a run, `password=`, still frames it), and
    /// the rules run again around the runs decoded in that pass; a match is reported where
    /// the encoded text it came from starts in the fragment. Up to `max_decode_depth` passes.
    /// `first_runs`: [`decode::encoded_runs`] of `frag.data`, when found already.
    ///
    /// One secret, one finding: a match in decoded text whose secret comes from inside the
    /// secret of a finding already made (as written, or in an earlier pass) by the same rule,
    /// or by any rule when its own rule is generic, is that secret again and is not reported
    /// (gitleaks reports it once more per pass whose text its rule matches, all under one
    /// fingerprint). `reported`: the secrets of `frag` as written, where they sit.
    fn scan_decoded(
        &self,
        frag: &Fragment<'_>,
        start: usize,
        out: &mut Vec<Finding>,
        mode: Mode,
        first_runs: Option<Vec<decode::Decoded>>,
        mut reported: Vec<Reported>,
    ) {
        if self.max_decode_depth == 0 {
            return;
        }
        let mut runs = first_runs.unwrap_or_else(|| decode::encoded_runs(frag.data));
        if runs.is_empty() {
            return;
        }
        let mut text: Vec<u8> = frag.data.to_vec();
        let mut pieces: Vec<Piece> = Vec::new();
        for pass in 0..self.max_decode_depth {
            if pass > 0 {
                runs = decode::encoded_runs(&text);
            }
            if runs.is_empty() {
                return;
            }
            let (next, next_pieces, fresh) = substitute(&text, &pieces, std::mem::take(&mut runs));
            text = next;
            pieces = next_pieces;
            // Scan windows around the fresh runs (merged), keeping matches that touch one.
            let mut windows: Vec<Range<usize>> = Vec::new();
            for f in &fresh {
                let s = line_start(&text, f.start.saturating_sub(WINDOW_BEFORE));
                let e = line_end(&text, (f.end + WINDOW_AFTER).min(text.len()));
                match windows.last_mut() {
                    Some(last) if s <= last.end => last.end = last.end.max(e),
                    _ => windows.push(s..e),
                }
            }
            let mut found = Vec::new();
            let mut spans = Vec::new();
            for w in windows {
                let sub = Fragment {
                    path: frag.path,
                    commit: frag.commit,
                    data: &text[w.clone()],
                    line_map: None,
                };
                let mut place = Place {
                    numbering: frag.data,
                    line_map: frag.line_map,
                    base: w.start,
                    decoded: Some((&pieces, &fresh)),
                    lines: LineIndex::default(),
                };
                self.scan_plain(&sub, &mut place, &mut found, false, mode, Some(&mut spans));
            }
            // Where each match's secret came from in the fragment; compared with the findings
            // of the passes before this one only (two secrets decoded from one run are two).
            let mut fresh_reported = Vec::new();
            let mut kept = Vec::with_capacity(found.len());
            for (f, r) in found.into_iter().zip(spans) {
                let orig =
                    to_orig(&pieces, r.span.start, false)..to_orig(&pieces, r.span.end, true);
                if reported.iter().any(|e| {
                    (r.generic || e.rule == r.rule)
                        && e.span.start <= orig.start
                        && orig.end <= e.span.end
                }) {
                    continue;
                }
                fresh_reported.push(Reported { span: orig, ..r });
                kept.push(f);
            }
            reported.extend(fresh_reported);
            push_new(out, start, kept);
        }
    }

    /// The rules over the fragment's bytes as they are; `path_rules`: also the rules that
    /// match a path alone. `place` says where a match in these bytes is reported.
    /// `reported`: where the secrets of the findings of the rules' matches (not of the path
    /// rules) sit, one entry per finding in the order they are appended to `out`.
    fn scan_plain(
        &self,
        frag: &Fragment<'_>,
        place: &mut Place<'_>,
        out: &mut Vec<Finding>,
        path_rules: bool,
        mode: Mode,
        reported: Option<&mut Vec<Reported>>,
    ) {
        let n = self.rules.len();
        // This thread's slots, all empty (taken out while in use, and put back empty).
        let (mut regions, mut lines, mut touched) = RULE_SLOTS.take();
        grow_slots(&mut regions, n);
        grow_slots(&mut lines, n);
        debug_assert!(touched.is_empty());
        // Regions per triggered rule (None: not triggered; empty vec: whole fragment).
        // `touched`: every rule whose slot is filled (some twice), so that only those slots
        // are read afterwards, not every rule's (two slots of each of ~220 rules for each
        // fragment and window).
        for &i in &self.unconditional {
            regions[i] = Some(Vec::new());
            touched.push(i);
        }
        // Rules whose matches lie on their keywords' lines: those lines, whatever the size
        // of the fragment and the mode (exact: no match lies elsewhere).
        // The fragment's line feeds, found once when a rule first needs its lines (so that a
        // long line with many keywords is not searched again for each of them).
        let mut newlines: Option<Vec<usize>> = None;
        // In binary data (a byte from zero to 8 in it, seen with the line feeds), the run of
        // text around the last keyword occurrence, for rules whose matches stay in it (found
        // once for the occurrences in one run: a long run may hold many).
        let mut binary = false;
        let mut run: Range<usize> = 0..0;
        // Where the last hit's end is among the line feeds (how many lie before it): hits
        // come in the order of their ends, so it moves forward (one binary search per hit
        // and rule was 8% of a registry scan's samples).
        let mut cursor = 0;
        let mut last_end = 0;
        // Bytes judged for some unknown place are scanned whole: a window around a keyword
        // in a whole blob need not hold what the window in the lines a commit adds holds.
        let windowed = mode == Mode::Exact && frag.data.len() >= WINDOW_MIN_FRAGMENT;
        if let Some(kw) = &self.keywords {
            for m in kw.hits(frag.data) {
                // The hit's lines, by the index of the line feeds, found for its first rule
                // that needs them.
                let mut hit_lines: Option<Range<usize>> = None;
                for &r in &self.keyword_rules[m.pattern().as_usize()] {
                    let (reach, runs) = self.locality(r);
                    let around = match reach {
                        Reach::Fragment => None,
                        Reach::Line => Some(0),
                        Reach::Lines(n) => Some(n),
                    };
                    if let Some(around) = around {
                        let nl = newlines.get_or_insert_with(|| {
                            let (nl, breaks) = line_feeds_and_binary(frag.data);
                            binary = breaks;
                            nl
                        });
                        let within = if runs && binary {
                            if !(run.start <= m.start() && m.end() <= run.end) {
                                run = run_around(frag.data, m.start()..m.end());
                            }
                            run.clone()
                        } else {
                            0..frag.data.len()
                        };
                        let at = hit_lines.get_or_insert_with(|| {
                            if m.end() < last_end {
                                cursor = nl.partition_point(|&p| p < m.end());
                            }
                            while nl.get(cursor).is_some_and(|&p| p < m.end()) {
                                cursor += 1;
                            }
                            last_end = m.end();
                            let mut first = cursor;
                            while first > 0 && nl[first - 1] >= m.start() {
                                first -= 1;
                            }
                            first..cursor
                        });
                        if lines[r].is_none() {
                            touched.push(r);
                        }
                        push_lines(
                            lines[r].get_or_insert_with(Vec::new),
                            frag.data.len(),
                            nl,
                            at.clone(),
                            around,
                            within,
                        );
                        continue;
                    }
                    match &mut regions[r] {
                        Some(_) if !windowed => {}
                        slot => {
                            if slot.is_none() {
                                touched.push(r);
                            }
                            let v = slot.get_or_insert_with(Vec::new);
                            if windowed {
                                push_window(v, frag.data, m.start(), m.end());
                            }
                        }
                    }
                }
            }
        }
        let mut found: Vec<Hit> = Vec::new();
        let mut place_lines: Vec<Range<usize>> = Vec::new();
        // The filled slots in rule order (each once).
        touched.sort_unstable();
        touched.dedup();
        for &i in &touched {
            let (rule_regions, rule_lines) = (regions[i].take(), lines[i].take());
            let (mut rule_regions, in_context) = match (rule_regions, rule_lines) {
                (Some(r), _) => (r, false),
                (None, Some(l)) => (merge_lines(l), true),
                (None, None) => continue,
            };
            let rule = &self.rules[i];
            if rule.skip_report || (mode == Mode::Exact && !self.rule_applies(rule, frag)) {
                continue;
            }
            let covered: usize = rule_regions.iter().map(|r| r.len()).sum();
            if rule_regions.is_empty() || covered * 2 >= frag.data.len() {
                rule_regions.clear();
                rule_regions.push(0..frag.data.len());
            }
            let mut hits = Vec::new();
            let mut locations = None;
            let precheck = self.prechecks[i];
            for region in rule_regions {
                if in_context && let Some(precheck) = precheck {
                    // Only the lines where a match may be anchored, touching ones joined; the
                    // walk stops at a line that reaches the region's end (it holds every
                    // later place: one long line, a JSON body, is walked to its first).
                    place_lines.clear();
                    (precheck.places)(&frag.data[region.clone()], &mut |p| {
                        let p = region.start + p;
                        if place_lines.last().is_some_and(|l| p < l.end) {
                            return true;
                        }
                        let s = line_start(frag.data, p).max(region.start);
                        let e = (line_end(frag.data, p) + 1).min(region.end);
                        match place_lines.last_mut() {
                            Some(last) if last.end == s => last.end = e,
                            _ => place_lines.push(s..e),
                        }
                        e < region.end
                    });
                    for line in place_lines.drain(..) {
                        let l = &mut locations;
                        let d = self.digitless_allowed[i];
                        self.scan_lines(rule, frag, line, place, &mut hits, mode, l, d);
                    }
                    continue;
                }
                if precheck.is_some_and(|c| !(c.may_match)(&frag.data[region.clone()])) {
                    continue;
                }
                if in_context {
                    let l = &mut locations;
                    let d = self.digitless_allowed[i];
                    self.scan_lines(rule, frag, region, place, &mut hits, mode, l, d);
                } else {
                    self.scan_region(rule, frag, region, place, &mut hits, mode);
                }
            }
            if !rule.required.is_empty() && !hits.is_empty() {
                self.keep_composite(rule, frag, place, &mut hits, mode);
            }
            found.extend(hits);
        }
        // Every slot is empty again (each filled one was taken): kept for the next call.
        touched.clear();
        RULE_SLOTS.set((regions, lines, touched));
        drop_generic_duplicates(&mut found);
        if let Some(reported) = reported {
            reported.extend(found.iter().map(|h| Reported {
                span: place.base + h.span.start..place.base + h.span.end,
                rule: h.finding.rule_id.clone(),
                generic: is_generic(&h.finding.rule_id),
            }));
        }
        out.extend(found.into_iter().map(|h| h.finding));
        if !path_rules {
            return;
        }
        // Path-only rules: the file itself is the finding, on line 0 (as gitleaks has it).
        for rule in self.path_only.iter().map(|&i| &self.rules[i]) {
            if rule.regex.is_none()
                && !rule.skip_report
                && rule
                    .path
                    .as_ref()
                    .is_some_and(|p| p.is_match(frag.path.as_bytes()))
                && !rule.allowlists.iter().any(|a| {
                    a.skips_path(frag.path) || frag.commit.is_some_and(|c| a.skips_commit(c))
                })
            {
                out.push(Finding::new(
                    &rule.id,
                    &rule.description,
                    frag.path,
                    0,
                    0,
                    frag.commit,
                    Secret::default(),
                    0.0,
                ));
            }
        }
    }

    /// A composite rule's matches are kept only where each rule it requires matches too, near
    /// enough (gitleaks' `[[rules.required]]`: within `withinLines` lines and `withinColumns`
    /// columns of the match's start, or anywhere in the fragment when neither is given). The
    /// required rules run whatever their keywords and `skipReport`.
    fn keep_composite(
        &self,
        rule: &Rule,
        frag: &Fragment<'_>,
        place: &mut Place<'_>,
        hits: &mut Vec<Hit>,
        mode: Mode,
    ) {
        let mut by_rule: Vec<(&crate::config::Required, Vec<Hit>)> = Vec::new();
        for req in &rule.required {
            let mut other = Vec::new();
            if let Some(r) = self.rules.iter().find(|r| r.id == req.rule_id)
                && (mode == Mode::AnyPath || self.rule_applies(r, frag))
            {
                let mut r = r.clone();
                r.skip_report = false;
                r.required.clear();
                self.scan_region(&r, frag, 0..frag.data.len(), place, &mut other, mode);
            }
            by_rule.push((req, other));
        }
        hits.retain(|h| {
            by_rule.iter().all(|(req, other)| {
                other.iter().any(|o| {
                    req.within_lines
                        .is_none_or(|n| h.at.0.abs_diff(o.at.0) <= n)
                        && req
                            .within_columns
                            .is_none_or(|n| h.at.1.abs_diff(o.at.1) <= n)
                })
            })
        });
    }

    /// Where rule `i`'s matches lie around its keyword occurrences.
    #[cfg(test)]
    fn reach(&self, i: usize) -> Reach {
        self.locality(i).0
    }

    /// [`Engine::reach`], and whether rule `i`'s matches also lie in the run of text around
    /// their keyword occurrence (see the `locality` module; keywords holding a break byte
    /// never do).
    fn locality(&self, i: usize) -> (Reach, bool) {
        *self.reach[i].get_or_init(|| {
            let rule = &self.rules[i];
            let Some(hir) = rule.regex.as_ref().and_then(|p| p.ascii_syntax()) else {
                return (Reach::Fragment, false);
            };
            let reach = locality::reach(hir, &rule.keywords);
            let runs = reach != Reach::Fragment
                && locality::stays_in_run(hir)
                && !rule
                    .keywords
                    .iter()
                    .any(|k| k.bytes().any(locality::is_break));
            (reach, runs)
        })
    }

    fn rule_applies(&self, rule: &Rule, frag: &Fragment<'_>) -> bool {
        if rule
            .path
            .as_ref()
            .is_some_and(|p| !p.is_match(frag.path.as_bytes()))
        {
            return false;
        }
        !rule
            .allowlists
            .iter()
            .any(|a| a.skips_path(frag.path) || frag.commit.is_some_and(|c| a.skips_commit(c)))
    }

    fn scan_region(
        &self,
        rule: &Rule,
        frag: &Fragment<'_>,
        region: Range<usize>,
        place: &mut Place<'_>,
        out: &mut Vec<Hit>,
        mode: Mode,
    ) {
        let Some(re) = &rule.regex else { return };
        let base = region.start;
        let hay = &frag.data[region];
        // (a built-in rule's regex is compiled only where it may match: see `RulePattern`)
        if !re.may_match_at(hay, 0) {
            return;
        }
        for caps in re.captures_iter(hay) {
            let groups = Groups::Captures(&caps);
            self.judge_match(rule, frag, base, &groups, place, out, mode);
        }
    }

    /// [`Engine::scan_region`] over lines of the fragment (whole lines, each with its line
    /// feed), searched inside the fragment: assertions at the region's start see the bytes
    /// before it, as a search of the whole fragment does. Only for a rule whose matches lie
    /// on such lines (see the `locality` module), where it finds what the whole fragment's
    /// search finds there.
    ///
    /// `digitless_allowed`: one of the rule's allowlists allows every secret without an
    /// ASCII digit; a match without one (its secret is part of it) is then passed over
    /// before its groups are found. Why: most matches of the generic rules are names
    /// assigned names (`api_key = config.api_key_from_env`), and finding a match's groups
    /// (the regex crate's backtracker over the match after its DFA found where it lies)
    /// cost about three times finding the match alone (session decwalk).
    #[allow(clippy::too_many_arguments)]
    fn scan_lines(
        &self,
        rule: &Rule,
        frag: &Fragment<'_>,
        region: Range<usize>,
        place: &mut Place<'_>,
        out: &mut Vec<Hit>,
        mode: Mode,
        locations: &mut Option<regex::bytes::CaptureLocations>,
        digitless_allowed: bool,
    ) {
        let Some(re) = &rule.regex else { return };
        let hay = &frag.data[..region.end];
        let mut at = region.start;
        // (a built-in rule's regex is compiled only where it may match: see `RulePattern`)
        if !re.may_match_at(hay, at) {
            return;
        }
        // One set of capture slots for the rule's searches of this fragment: a search per
        // keyword line, each allocating its captures (and counting a reference shared by
        // both threads' searches) cost more than many of the searches.
        let locations = locations.get_or_insert_with(|| re.capture_locations());
        while at <= hay.len() {
            let from = if digitless_allowed {
                let Some(m) = re.find_at(hay, at) else {
                    break;
                };
                if !m.as_bytes().iter().any(u8::is_ascii_digit) {
                    at = m.end() + usize::from(m.is_empty());
                    continue;
                }
                // No match starts between `at` and this one's start: the search from its
                // start finds it again, now with its groups.
                m.start()
            } else {
                at
            };
            let Some(whole) = re.captures_read_at(locations, hay, from) else {
                break;
            };
            // (such a rule's match holds a keyword, so it is never empty)
            at = whole.end() + usize::from(whole.is_empty());
            let groups = Groups::Locations(locations);
            self.judge_match(rule, frag, 0, &groups, place, out, mode);
        }
    }

    /// Judges one match of `rule`'s regex (`caps`, at `base` in the fragment's bytes):
    /// entropy, the value, the inline marker and allowlists; a kept one goes to `out`.
    #[allow(clippy::too_many_arguments)]
    fn judge_match(
        &self,
        rule: &Rule,
        frag: &Fragment<'_>,
        base: usize,
        groups: &Groups<'_>,
        place: &mut Place<'_>,
        out: &mut Vec<Hit>,
        mode: Mode,
    ) {
        let Some(whole) = groups.get(0) else { return };
        let secret = match rule.secret_group {
            Some(g) => groups.get(g),
            None if groups.len() > 1 => (1..groups.len())
                .filter_map(|i| groups.get(i))
                .find(|m| !m.is_empty()),
            None => None,
        }
        .unwrap_or(whole.clone());
        let secret_bytes = &frag.data[base + secret.start..base + secret.end];
        let whole_bytes = &frag.data[base + whole.start..base + whole.end];
        if secret_bytes.is_empty() {
            return;
        }
        let entropy = shannon_entropy(secret_bytes);
        if rule.entropy.is_some_and(|min| entropy <= min) {
            return;
        }
        if rule.tags.iter().any(|t| t == ASSIGNMENT_TAG)
            && value::not_a_secret(secret_bytes).is_some()
        {
            return;
        }
        let (abs_start, abs_end) = (base + whole.start, base + whole.end);
        let line_start = line_start(frag.data, abs_start);
        let line_end = line_end(frag.data, abs_end.max(abs_start));
        let line_text = &frag.data[line_start..line_end];
        if self.honor_inline_allow && contains(line_text, INLINE_ALLOW) {
            return;
        }
        let cand = Candidate {
            path: frag.path,
            commit: frag.commit,
            secret: secret_bytes,
            matched: whole_bytes,
            line: line_text,
        };
        // Without a path or commit, only allowlists that name neither can be asked.
        let askable =
            |a: &Allowlist| mode == Mode::Exact || (a.paths.is_empty() && a.commits.is_empty());
        if rule
            .allowlists
            .iter()
            .any(|a| askable(a) && a.allows(&cand))
            || self.global.iter().any(|a| {
                askable(a)
                    && (a.target_rules.is_empty() || a.target_rules.iter().any(|t| t == &rule.id))
                    && a.allows(&cand)
            })
        {
            return;
        }
        if rule.skip_report {
            return;
        }
        let secret_abs = base + secret.start;
        let Some(loc) = place.locate(frag.data, abs_start..abs_end, secret_abs) else {
            return;
        };
        out.push(Hit {
            span: secret_abs..base + secret.end,
            at: (loc.line, loc.span.start_column),
            finding: Finding::new(
                &rule.id,
                &rule.description,
                frag.path,
                loc.line,
                loc.column,
                frag.commit,
                Secret::from_bytes(secret_bytes),
                entropy,
            )
            .with_match(loc.span, Secret::from_bytes(whole_bytes), &rule.tags),
        });
    }
}

/// The groups of one match of a rule's regex, where they are in the haystack searched.
enum Groups<'a> {
    Captures(&'a regex::bytes::Captures<'a>),
    Locations(&'a regex::bytes::CaptureLocations),
}

impl Groups<'_> {
    fn get(&self, i: usize) -> Option<Range<usize>> {
        match self {
            Groups::Captures(c) => c.get(i).map(|m| m.range()),
            Groups::Locations(l) => l.get(i).map(|(s, e)| s..e),
        }
    }

    fn len(&self) -> usize {
        match self {
            Groups::Captures(c) => c.len(),
            Groups::Locations(l) => l.len(),
        }
    }
}

/// A match of one rule: the secret's span in the scanned bytes, the match's (line, column)
/// for composite rules' distances, and the finding.
struct Hit {
    span: Range<usize>,
    at: (u32, u32),
    finding: Finding,
}

/// A decoded run after a decoding pass: where its text is now, and what it stands for in the
/// fragment's own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    now: Range<usize>,
    orig: Range<usize>,
}

/// Where `pos` (in the text after decoding, whose decoded runs are `pieces`, sorted) sits in
/// the fragment: inside a decoded run, at the start (or, for an `end`, the end) of the encoded
/// text it came from; elsewhere, shifted by what the runs before it grew or shrank.
fn to_orig(pieces: &[Piece], pos: usize, end: bool) -> usize {
    let mut shift: isize = 0;
    for p in pieces {
        if pos >= p.now.end {
            shift += p.orig.len() as isize - p.now.len() as isize;
            continue;
        }
        if pos > p.now.start {
            return if end { p.orig.end } else { p.orig.start };
        }
        break;
    }
    pos.saturating_add_signed(shift)
}

/// One decoding pass: `runs` (found in `text`) replaced by what they decode to. Returns the
/// new text, its decoded pieces (older ones shifted, those a run swallowed merged into it)
/// and the spans of the runs decoded in this pass.
fn substitute(
    text: &[u8],
    pieces: &[Piece],
    runs: Vec<decode::Decoded>,
) -> (Vec<u8>, Vec<Piece>, Vec<Range<usize>>) {
    let mut out = Vec::with_capacity(text.len());
    let mut next: Vec<Piece> = Vec::new();
    let mut fresh = Vec::new();
    let mut copied = 0usize;
    // Older pieces, in the old text's coordinates; one a run cuts into keeps what is left.
    let mut old: Vec<Piece> = pieces.to_vec();
    let mut i = 0;
    // An older piece (or what is left of one) carried into the new text unchanged.
    let keep = |p: &Piece, out_len: usize, copied: usize| {
        let start = out_len + (p.now.start - copied);
        Piece {
            now: start..start + p.now.len(),
            orig: p.orig.clone(),
        }
    };
    for run in runs {
        while i < old.len() && old[i].now.end <= run.span.start {
            next.push(keep(&old[i], out.len(), copied));
            i += 1;
        }
        let orig = to_orig(pieces, run.span.start, false)..to_orig(pieces, run.span.end, true);
        // The part of an older piece before the run stays decoded text standing for nothing
        // more of the fragment (the run's piece starts where that piece did).
        if i < old.len() && old[i].now.start < run.span.start {
            let head = old[i].now.start..run.span.start;
            let start = out.len() + (head.start - copied);
            next.push(Piece {
                now: start..start + head.len(),
                orig: orig.start..orig.start,
            });
        }
        // Older pieces inside the run are swallowed by it; one that goes on past it keeps
        // its tail, standing for nothing more either (the run's piece ends where it did).
        while i < old.len() && old[i].now.start < run.span.end {
            if old[i].now.end > run.span.end {
                old[i].now.start = run.span.end;
                old[i].orig = orig.end..orig.end;
                break;
            }
            i += 1;
        }
        out.extend_from_slice(&text[copied..run.span.start]);
        let start = out.len();
        out.extend_from_slice(&run.text);
        next.push(Piece {
            now: start..out.len(),
            orig,
        });
        fresh.push(start..out.len());
        copied = run.span.end;
    }
    for p in &old[i..] {
        next.push(keep(p, out.len(), copied));
    }
    out.extend_from_slice(&text[copied..]);
    (out, next, fresh)
}

#[cfg(test)]
mod keyword_tests {
    use super::*;

    #[test]
    fn keyword_hits_are_every_overlapping_match() {
        // Keywords inside others, sharing prefixes and suffixes, of different lengths.
        let patterns = [
            "pass", "password", "sword", "wo", "key=", "token=", "ken", "k", "ssw",
        ];
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(patterns)
            .unwrap();
        let dfa = aho_corasick::dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(aho_corasick::StartKind::Unanchored)
            .prefilter(false)
            .build(patterns)
            .unwrap();
        let alphabet = b"paswordkeytn=PASWORDKEY \n";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for case in 0..20_000 {
            let len = if case % 10 == 0 { 200 } else { 24 };
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let all: Vec<_> = ac.find_overlapping_iter(&data[..]).collect();
            let got: Vec<_> = keyword_hits(&ac, &data).collect();
            assert_eq!(got, all, "{:?}", String::from_utf8_lossy(&data));
            // The bare DFA's plain-then-overlapping search (what small inputs get).
            assert_eq!(
                dfa_hits(&dfa, &data),
                all,
                "{:?}",
                String::from_utf8_lossy(&data)
            );
            // The lanes, on inputs long enough for each lane to hold a keyword or not,
            // keywords across the lanes' borders included.
            let lanes = lane_hits(&dfa, &data).unwrap();
            assert_eq!(lanes, all, "{:?}", String::from_utf8_lossy(&data));
            // The one walk (what small inputs get).
            let walked = walk_hits(&dfa, &data).unwrap();
            assert_eq!(walked, all, "{:?}", String::from_utf8_lossy(&data));
        }
    }

    #[test]
    fn line_feeds_are_where_memchr_finds_them() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in (0..300).chain([1000, 4096, 4097, 70_000]) {
            for density in [2, 7, 40, 1000] {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x.is_multiple_of(density) {
                            b'\n'
                        } else {
                            (x >> 8) as u8 | 1
                        }
                    })
                    .collect();
                let want: Vec<usize> = memchr::memchr_iter(b'\n', &data).collect();
                assert_eq!(line_feeds(&data), want, "{len} {density}");
                let binary = data.iter().any(|&b| b <= 0x08);
                assert_eq!(line_feeds_and_binary(&data), (want.clone(), binary));
                // (the SSE2 pass, where the processor runs AVX-512 and the pass above is
                // that one)
                assert_eq!(
                    line_feeds_and_binary_with(&data, line_feed_mask),
                    (want, binary)
                );
                // text without a control byte, then one of each kind at some place
                let text: Vec<u8> = data.iter().map(|&b| b' ' + b % 95).collect();
                let want: Vec<usize> = memchr::memchr_iter(b'\n', &text).collect();
                assert_eq!(line_feeds_and_binary(&text), (want.clone(), false));
                for (k, b) in [0u8, 0x01, 0x08, 0x09, 0x0e, 0x1f, 0x7f, 0x80]
                    .iter()
                    .enumerate()
                {
                    if text.is_empty() {
                        break;
                    }
                    let mut t = text.clone();
                    let at = (k * 37 + len / 2) % t.len();
                    t[at] = *b;
                    assert_eq!(
                        line_feeds_and_binary(&t).1,
                        *b <= 0x08,
                        "{len} {b:#x} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_builtin_keywords_in_lanes_are_the_overlapping_search() {
        let engine = Engine::new(crate::config::RuleSet::builtin().unwrap(), true);
        let kw = engine.keywords.as_ref().unwrap();
        let Keywords::Dfa(dfa, _) = kw else {
            panic!("the built-in keywords make a DFA")
        };
        // The reference: the crate's own searcher over the same keywords, as the engine
        // built it before it kept the DFA alone.
        let mut patterns: Vec<String> = Vec::new();
        for rule in engine.rules.iter().filter(|r| r.regex.is_some()) {
            for k in &rule.keywords {
                if !patterns.contains(k) {
                    patterns.push(k.clone());
                }
            }
        }
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&patterns)
            .unwrap();
        // Real text with keywords (the rules and their test cases), cut at many lengths so
        // that keywords fall on the lanes' borders.
        let text = [
            include_str!("../rules/builtin.toml"),
            include_str!("../rules/builtin-cases.toml"),
        ]
        .concat();
        let data = text.as_bytes();
        for len in (0..2000).chain((0..200).map(|i| data.len() - i * 37)) {
            let d = &data[..len.min(data.len())];
            let all: Vec<_> = ac.find_overlapping_iter(d).collect();
            assert_eq!(lane_hits(dfa, d).unwrap(), all, "{len}");
            assert_eq!(dfa_hits(dfa, d), all, "{len}");
            assert_eq!(walk_hits(dfa, d).unwrap(), all, "{len}");
            assert_eq!(kw.hits(d), all, "{len}");
        }
        assert!(kw.hits(data).len() > 1000);
    }
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use base64::Engine as _;

    /// [`Engine::scan_in`] as it ran before the first decoding pass's runs were found on
    /// another thread: everything on this one, one after another.
    fn in_line(engine: &Engine, frag: &Fragment<'_>, mode: Mode) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut place = Place::new(frag.data, frag.line_map);
        let mut reported = Vec::new();
        engine.scan_plain(
            frag,
            &mut place,
            &mut out,
            mode == Mode::Exact,
            mode,
            Some(&mut reported),
        );
        let plain = out.len();
        engine.scan_hidden(frag, 0, &mut out, mode, None, reported);
        if out.len() > plain {
            out.sort_by_key(|f| f.line);
        }
        out
    }

    #[test]
    fn large_fragments_find_what_scanning_in_line_finds() {
        let engine = Engine::new(crate::config::RuleSet::builtin().unwrap(), true);
        let aws = "AKIAZ3MSJV4WWNKWW5FG";
        let gh = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let planted = [
            format!("aws_access_key_id = {aws}\n"),
            format!("token: {gh}\n"),
            format!("blob = \"{}\"\n", b64(&format!("key={aws}"))),
            format!("auth={}\n", b64(&format!("Authorization: token {gh}"))),
            format!("hex {}\n", hex::encode(format!("secret {gh}"))),
            format!("q=%61%77%73%20{}\n", aws),
        ];
        let line = b"    let value = compute(input, &config).unwrap_or_default(); // step 42 of the pipeline\n";
        let prose = include_bytes!("../../../ARCHITECTURE.md");
        let mut scanned_findings = 0;
        for (case, size) in [64 * 1024, 64 * 1024 + 1, 150 * 1024, 300 * 1024]
            .into_iter()
            .enumerate()
        {
            let mut data = Vec::new();
            while data.len() < size {
                if case % 2 == 0 {
                    data.extend_from_slice(line);
                } else {
                    data.extend_from_slice(&prose[..prose.len().min(size - data.len())]);
                }
            }
            data.truncate(size);
            // secrets spread over the fragment, one of each at its start and near its end
            for (i, p) in planted.iter().enumerate() {
                for at in [i * 2000, size / 3 + i * 4099, size - 12_000 + i * 2000] {
                    let at = at.min(data.len());
                    data.splice(at..at, p.bytes());
                }
            }
            for mode in [Mode::Exact, Mode::AnyPath] {
                let frag = Fragment {
                    path: "upload.txt",
                    commit: None,
                    data: &data,
                    line_map: None,
                };
                let mut got = Vec::new();
                engine.scan_in(&frag, &mut got, mode);
                let want = in_line(&engine, &frag, mode);
                assert_eq!(got, want, "case {case} {mode:?}");
                scanned_findings += got.len();
                // the token in the base64 run is found (by decoding it: the line holds no
                // token in plain)
                let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
                let decoded = got.iter().filter(|f| {
                    let l = lines[(f.line as usize).saturating_sub(1)];
                    f.rule_id == "github-pat"
                        && l.windows(5).any(|w| w == b"auth=")
                        && !l.windows(4).any(|w| w == b"ghp_")
                });
                assert_eq!(decoded.count(), 3, "case {case} {mode:?}");
            }
        }
        // the plain secrets were found too
        assert!(scanned_findings >= 4 * 2 * 3 * 3, "{scanned_findings}");
    }
}

#[cfg(test)]
mod decoded_place_tests {
    use super::*;

    fn run(span: Range<usize>, text: &str) -> decode::Decoded {
        decode::Decoded {
            span,
            encoding: decode::Encoding::Base64,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn positions_after_a_run_that_cuts_into_an_older_piece_map_back_exactly() {
        // Pass 1: "AAAAAAAA" (0..8) decodes to "x=BBBB" and "CCCCCCCC" (9..17) to "yy".
        let text = b"AAAAAAAA CCCCCCCC tail";
        let (t1, p1, _) = substitute(text, &[], vec![run(0..8, "x=BBBB"), run(9..17, "yy")]);
        assert_eq!(t1, b"x=BBBB yy tail");
        // Pass 2: "BBBB=" would not be a run; "=BBBB y" stands in for a run that starts
        // inside the first piece and ends inside the second.
        let (t2, p2, _) = substitute(&t1, &p1, vec![run(1..8, "Q")]);
        assert_eq!(t2, b"xQy tail");
        // "tail" is at 18 in the fragment, at 4 now.
        assert_eq!(to_orig(&p2, 4, false), 18);
        // The tail of the second piece ("y", at 2) stands for the end of its encoded text.
        assert_eq!(to_orig(&p2, 2, false), 17);
        // The head of the first piece ("x", at 0) for its start.
        assert_eq!(to_orig(&p2, 0, false), 0);
    }
}

/// Where matches in the scanned bytes are reported: lines are those of `numbering` (the
/// fragment's bytes) or, in git mode, of the file (`line_map`).
struct Place<'a> {
    numbering: &'a [u8],
    line_map: Option<&'a [u32]>,
    /// Where the scanned bytes start in the (decoded) text.
    base: usize,
    /// After a decoding pass: the decoded pieces and the spans decoded in this pass (a match
    /// must touch one of them, or an earlier pass reported it).
    decoded: Option<(&'a [Piece], &'a [Range<usize>])>,
    lines: LineIndex,
}

impl<'a> Place<'a> {
    fn new(numbering: &'a [u8], line_map: Option<&'a [u32]>) -> Self {
        Self {
            numbering,
            line_map,
            base: 0,
            decoded: None,
            lines: LineIndex::default(),
        }
    }

    /// Where a match is reported, or `None` when it is not to be reported from these bytes.
    /// The line is the match's first line (a match that starts with a newline: the next one),
    /// as gitleaks counts it, so fingerprints agree; the column is the secret's.
    fn locate(&mut self, data: &[u8], matched: Range<usize>, secret: usize) -> Option<Loc> {
        let mut first = matched.start;
        if data.get(first) == Some(&b'\n') && first + 1 < matched.end {
            first += 1;
        }
        let last = matched.end.saturating_sub(1).max(first);
        let (first, last, secret) = match self.decoded {
            None => (self.base + first, self.base + last, self.base + secret),
            Some((pieces, fresh)) => {
                let (s, e) = (self.base + matched.start, self.base + matched.end);
                if !fresh.iter().any(|f| f.start < e && s < f.end) {
                    return None;
                }
                let o = to_orig(pieces, self.base + first, false);
                let l = to_orig(pieces, self.base + last + 1, true)
                    .saturating_sub(1)
                    .max(o);
                (o, l, o)
            }
        };
        let line_of = |idx: usize| match self.line_map {
            Some(map) => map.get(idx).copied().unwrap_or(0),
            None => u32::try_from(idx + 1).unwrap_or(u32::MAX),
        };
        let c = |c: usize| u32::try_from(c + 1).unwrap_or(u32::MAX);
        let (idx, match_col) = self.lines.locate(self.numbering, first);
        // The secret's column, when it is on the match's first line (else the match's).
        let (secret_idx, secret_col) = self.lines.locate(self.numbering, secret);
        let col = if secret_idx == idx {
            secret_col
        } else {
            match_col
        };
        let (end_idx, end_col) = self.lines.locate(self.numbering, last);
        let line = line_of(idx);
        Some(Loc {
            line,
            column: c(col),
            span: MatchSpan {
                start_column: c(match_col),
                end_line: line_of(end_idx),
                end_column: c(end_col),
            },
        })
    }
}

/// Where a finding is reported.
struct Loc {
    line: u32,
    column: u32,
    span: MatchSpan,
}

/// Appends the findings of a second look that the first look (from `start` on) did not
/// already report: same rule, line and secret.
fn push_new(out: &mut Vec<Finding>, start: usize, more: Vec<Finding>) {
    for f in more {
        if !out[start..]
            .iter()
            .any(|g| g.rule_id == f.rule_id && g.line == f.line && g.secret == f.secret)
        {
            out.push(f);
        }
    }
}

/// Where a finding's secret sits in the text scanned (after decoding: in the fragment as
/// written), and its rule, for the decoding passes to tell a secret found again.
struct Reported {
    span: Range<usize>,
    rule: String,
    generic: bool,
}

/// Whether `allowlist` allows every secret without an ASCII digit (0 to 9), in every mode,
/// whatever else is found: it names no path or commit (so it is asked without a path too),
/// its regexes are matched against the secret, one of them is `^[^0-9]*$` compiled with
/// Unicode mode off (any byte but a digit, from the secret's start to its end), and any one
/// of its criteria is enough (or all are required and the regexes are its only one).
fn allows_digitless_secrets(allowlist: &Allowlist) -> bool {
    allowlist.paths.is_empty()
        && allowlist.commits.is_empty()
        && matches!(allowlist.regex_target, RegexTarget::Secret)
        && (!allowlist.require_all || allowlist.stopwords.is_empty())
        && allowlist
            .regexes
            .iter()
            .any(|r| r.as_str() == "^[^0-9]*$" && r.ascii_syntax().is_some())
}

/// A generic rule (gitleaks' convention: the id says `generic`), which gives way to others.
fn is_generic(rule_id: &str) -> bool {
    rule_id.starts_with("generic")
}

/// A secret found by a specific rule is not reported again by a generic rule (ids starting
/// with `generic`) whose secret overlaps it; of overlapping generic findings the first (in rule
/// order) is kept.
fn drop_generic_duplicates(found: &mut Vec<Hit>) {
    if found.len() < 2 {
        return;
    }
    let is_generic = |f: &Finding| is_generic(&f.rule_id);
    let mut kept: Vec<Range<usize>> = found
        .iter()
        .filter(|h| !is_generic(&h.finding))
        .map(|h| h.span.clone())
        .collect();
    let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
    found.retain(|h| {
        if !is_generic(&h.finding) {
            return true;
        }
        if kept.iter().any(|k| overlaps(k, &h.span)) {
            return false;
        }
        kept.push(h.span.clone());
        true
    });
}

/// The rules' keywords: one automaton over all of them.
///
/// Why one: the search used to hold the same keywords twice, as the crate's searcher (a DFA
/// inside) and as a bare DFA for the lanes; each is about 0.8 MB, which every egress sidecar
/// kept for its life. The bare DFA does both searches.
#[derive(Debug)]
enum Keywords {
    /// A DFA, searched in [`LANES`] lanes at once over large inputs, or only around the
    /// candidates of its filter where the processor runs one.
    Dfa(
        Box<aho_corasick::dfa::DFA>,
        Option<Box<keyword_filter::KeywordFilter>>,
    ),
    /// The crate's own choice, where no DFA could be built.
    Other(AhoCorasick),
}

/// Lanes of the keyword search over large inputs.
const LANES: usize = 4;
/// Inputs shorter than this are searched in one lane (each lane reads the longest keyword's
/// length, 23 bytes for the built-in rules, before its part). 256 (16 KiB before
/// 2026-12-07): 84% of the cargo registry's files (22% of its bytes) are smaller than 16
/// KiB, and one lane waits for each state before it can read the next byte's (`walk_hits`
/// was 11% of a registry scan's samples with them; the lanes from 256 bytes took that scan
/// from 1.95 to 1.76 user s).
const LANES_MIN: usize = 256;
/// Inputs shorter than this are searched without the keyword filter.
const FILTER_MIN: usize = 256;

impl Keywords {
    /// Every keyword occurrence in `data` (overlapping ones included), in the order of the
    /// automaton's overlapping search.
    fn hits(&self, data: &[u8]) -> Vec<aho_corasick::Match> {
        match self {
            Keywords::Dfa(dfa, filter) => {
                let walked =
                    if let Some(filter) = filter.as_ref().filter(|_| data.len() >= FILTER_MIN) {
                        filter.hits(dfa, data)
                    } else if data.len() >= LANES_MIN {
                        lane_hits(dfa, data)
                    } else {
                        walk_hits(dfa, data)
                    };
                walked.unwrap_or_else(|| dfa_hits(dfa, data))
            }
            Keywords::Other(ac) => keyword_hits(ac, data).collect(),
        }
    }
}

/// [`keyword_hits`] with the bare DFA: its plain search, then its overlapping search from
/// the longest keyword's length before the first match's end (for an automaton
/// [`walk_hits`] does not handle, and the tests' reference).
fn dfa_hits(dfa: &aho_corasick::dfa::DFA, data: &[u8]) -> Vec<aho_corasick::Match> {
    use aho_corasick::automaton::{Automaton, OverlappingState};
    let mut out = Vec::new();
    let Ok(Some(first)) = dfa.try_find(&aho_corasick::Input::new(data)) else {
        return out;
    };
    let from = first.end().saturating_sub(dfa.max_pattern_len());
    let input = aho_corasick::Input::new(data).range(from..);
    let mut state = OverlappingState::start();
    // The searches fail only where an unanchored search has no start state, and
    // `Engine::new` keeps such a DFA out.
    while dfa.try_find_overlapping(&input, &mut state).is_ok() {
        match state.get_match() {
            Some(m) => out.push(m),
            None => break,
        }
    }
    out
}

/// [`Keywords::hits`] with the DFA walked once over `data`, one byte after another, every
/// state that holds a match reporting its keywords (those ending at that byte, in the
/// automaton's order): what the overlapping search reports, in one pass.
///
/// For inputs under [`LANES_MIN`] (the lanes above it). Why not [`dfa_hits`]: on most
/// source files a keyword (`key`, `sk`, `s.`) occurs in the first lines, so its
/// overlapping search read nearly every byte after the plain search; this is one pass (on
/// the registry's files under 16 KiB it cost about what the two searches cost, one
/// dependent load per byte either way: the lanes are what made those files cheaper).
/// `None` (the caller searches the usual way) for an automaton this walk does not handle:
/// an empty keyword, a dead state.
fn walk_hits(dfa: &aho_corasick::dfa::DFA, data: &[u8]) -> Option<Vec<aho_corasick::Match>> {
    use aho_corasick::Anchored;
    use aho_corasick::automaton::Automaton;
    let start = dfa.start_state(Anchored::No).ok()?;
    if dfa.min_pattern_len() == 0 || dfa.is_special(start) {
        return None;
    }
    let mut out = Vec::new();
    let mut sid = start;
    for (p, &b) in data.iter().enumerate() {
        sid = dfa.next_state(Anchored::No, sid, b);
        if dfa.is_special(sid) {
            if dfa.is_dead(sid) {
                return None;
            }
            push_matches(dfa, sid, p + 1, &mut out);
        }
    }
    Some(out)
}

/// The keywords a state of the DFA reached at `end` matches, in the automaton's order
/// (out of line: the walk's loop holds only the state's step).
#[inline(never)]
fn push_matches(
    dfa: &aho_corasick::dfa::DFA,
    sid: aho_corasick::automaton::StateID,
    end: usize,
    out: &mut Vec<aho_corasick::Match>,
) {
    use aho_corasick::automaton::Automaton;
    if !dfa.is_match(sid) {
        return;
    }
    for i in 0..dfa.match_len(sid) {
        let pid = dfa.match_pattern(sid, i);
        out.push(aho_corasick::Match::new(
            pid,
            end - dfa.pattern_len(pid)..end,
        ));
    }
}

/// [`Keywords::hits`] with the DFA walked over [`LANES`] parts of `data` in step.
///
/// Why: the automaton's own search reads a byte, looks its next state up, and only then can
/// read the next byte's: one chain of dependent loads, ~18 instructions and a memory
/// latency per byte, the largest part of a DLP upload's scan. Four independent chains in
/// one loop keep the processor busy during each other's loads.
///
/// Exact: lane `k` reports the matches ending in its part, and starts reading the longest
/// keyword's length minus one before it; from there on its state is the one a search from
/// the start has (the state stands for the longest suffix read that begins a keyword, never
/// longer than a keyword), so it reports the same matches in the same order. `None` (the
/// caller searches the usual way) for an automaton this walk does not handle: an empty
/// keyword, a dead state.
fn lane_hits(dfa: &aho_corasick::dfa::DFA, data: &[u8]) -> Option<Vec<aho_corasick::Match>> {
    use aho_corasick::Anchored;
    use aho_corasick::automaton::Automaton;
    let start = dfa.start_state(Anchored::No).ok()?;
    if dfa.min_pattern_len() == 0 || dfa.is_special(start) {
        return None;
    }
    let n = data.len();
    let warm = dfa.max_pattern_len().saturating_sub(1);
    let part = n / LANES;
    // Lane k judges the bytes bounds[k]..bounds[k + 1] (the matches ending at them) and
    // reads from from[k].
    let bounds: [usize; LANES + 1] = std::array::from_fn(|k| if k == LANES { n } else { k * part });
    let from: [usize; LANES] = std::array::from_fn(|k| bounds[k].saturating_sub(warm));
    let mut sid = [start; LANES];
    let mut out: [Vec<aho_corasick::Match>; LANES] = Default::default();
    // One state of lane k after reading data[p]: its matches, if it judges p.
    let mut seen = |k: usize, p: usize, s| -> Option<()> {
        if dfa.is_dead(s) {
            return None;
        }
        if dfa.is_match(s) && p >= bounds[k] {
            for i in 0..dfa.match_len(s) {
                let pid = dfa.match_pattern(s, i);
                let end = p + 1;
                out[k].push(aho_corasick::Match::new(
                    pid,
                    end - dfa.pattern_len(pid)..end,
                ));
            }
        }
        Some(())
    };
    let steps = (0..LANES)
        .map(|k| bounds[k + 1] - from[k])
        .min()
        .unwrap_or(0);
    // The common stretch: four slices of one length, read in step (no bounds checks; one
    // branch when no lane is in a special state).
    let [d0, d1, d2, d3] = from.map(|f| &data[f..f + steps]);
    for (j, (((&b0, &b1), &b2), &b3)) in d0.iter().zip(d1).zip(d2).zip(d3).enumerate() {
        sid[0] = dfa.next_state(Anchored::No, sid[0], b0);
        sid[1] = dfa.next_state(Anchored::No, sid[1], b1);
        sid[2] = dfa.next_state(Anchored::No, sid[2], b2);
        sid[3] = dfa.next_state(Anchored::No, sid[3], b3);
        if dfa.is_special(sid[0])
            | dfa.is_special(sid[1])
            | dfa.is_special(sid[2])
            | dfa.is_special(sid[3])
        {
            for k in 0..LANES {
                if dfa.is_special(sid[k]) {
                    seen(k, from[k] + j, sid[k])?;
                }
            }
        }
    }
    for k in 0..LANES {
        let rest = from[k] + steps..bounds[k + 1];
        for (p, &b) in rest.clone().zip(&data[rest]) {
            let s = dfa.next_state(Anchored::No, sid[k], b);
            sid[k] = s;
            if dfa.is_special(s) {
                seen(k, p, s)?;
            }
        }
    }
    let [first, rest @ ..] = out;
    let mut hits = first;
    for lane in rest {
        hits.extend(lane);
    }
    Some(hits)
}

/// Every keyword occurrence in `data` (overlapping ones included), in the order of the
/// automaton's overlapping search, with the automaton searching one byte after another.
///
/// Why not that search alone: it reports every match at every byte, which costs about three
/// times the automaton's plain search per byte, and most bytes (an upload, a blob) hold no
/// keyword at all. The plain search (`MatchKind::Standard`) stops at the match that ends first;
/// no occurrence ends before it, so none starts more than the longest keyword's length before
/// its end, and the overlapping search from there finds exactly what it finds from the start.
fn keyword_hits<'a>(
    ac: &'a AhoCorasick,
    data: &'a [u8],
) -> impl Iterator<Item = aho_corasick::Match> + 'a {
    let from = ac
        .find(data)
        .map(|first| first.end().saturating_sub(ac.max_pattern_len()));
    from.into_iter().flat_map(move |from| {
        ac.find_overlapping_iter(aho_corasick::Input::new(data).range(from..))
    })
}

/// Adds the window around a keyword hit, merging with the previous window when they touch.
fn push_window(v: &mut Vec<Range<usize>>, data: &[u8], start: usize, end: usize) {
    if let Some(last) = v.last_mut()
        && start.saturating_sub(WINDOW_BEFORE) <= last.end
    {
        if end + WINDOW_AFTER > last.end {
            last.end = line_end(data, (end + WINDOW_AFTER).min(data.len()));
        }
        return;
    }
    let s = line_start(data, start.saturating_sub(WINDOW_BEFORE));
    let e = line_end(data, (end + WINDOW_AFTER).min(data.len()));
    v.push(s..e);
}

/// Adds the lines holding a keyword hit, and `around` lines before and after them (the last
/// with its line feed), cut to `within`, to a rule's lines, joining them to the last ones
/// when they touch. `newlines`: the positions of the fragment's line feeds; `len`: its
/// length; `hit_lines`: how many line feeds lie before the hit's start, and before its end;
/// `within`: the whole fragment, or the run of text around the hit ([`run_around`]).
fn push_lines(
    v: &mut Vec<Range<usize>>,
    len: usize,
    newlines: &[usize],
    hit_lines: Range<usize>,
    around: usize,
    within: Range<usize>,
) {
    // the line holding the hit's start, `around` lines up
    let first = hit_lines.start.saturating_sub(around);
    let s = if first == 0 {
        0
    } else {
        newlines[first - 1] + 1
    };
    // the line feed ending the line of the hit's end, `around` lines down
    let last = hit_lines.end + around;
    let e = newlines.get(last).map_or(len, |&p| p + 1);
    let (s, e) = (s.max(within.start), e.min(within.end));
    match v.last_mut() {
        Some(last) if last.start <= s && s <= last.end => last.end = last.end.max(e),
        _ => v.push(s..e),
    }
}

/// The run of text around `hit` in binary data: from just after the last break byte before it
/// (or the start) to just after the first break byte after it (or the end), break bytes being
/// `locality::is_break`. A match of a rule that stays in runs, holding `hit`, lies in it (see
/// the `locality` module). `hit` holds no break byte (keywords that do never get here).
fn run_around(data: &[u8], hit: Range<usize>) -> Range<usize> {
    let start = last_break(&data[..hit.start]).map_or(0, |p| p + 1);
    let end = first_break(&data[hit.end..]).map_or(data.len(), |p| hit.end + p + 1);
    start..end
}

/// Where the first break byte (`locality::is_break`) of `data` is.
///
/// Why not a byte loop: runs of text in binary data are long (a binary's string tables), and
/// looking at each of their bytes around each keyword was a sixth of the engine's own time in
/// a scan of the cargo registry's sources; 16 bytes are looked at at once.
fn first_break(data: &[u8]) -> Option<usize> {
    let mut blocks = data.chunks_exact(16);
    for (k, block) in blocks.by_ref().enumerate() {
        let m = break_mask(block);
        if m != 0 {
            return Some(k * 16 + m.trailing_zeros() as usize);
        }
    }
    let base = data.len() - blocks.remainder().len();
    blocks
        .remainder()
        .iter()
        .position(|&b| locality::is_break(b))
        .map(|p| base + p)
}

/// Where the last break byte of `data` is ([`first_break`] from the end).
fn last_break(data: &[u8]) -> Option<usize> {
    let mut blocks = data.rchunks_exact(16);
    for (k, block) in blocks.by_ref().enumerate() {
        let m = break_mask(block);
        if m != 0 {
            let start = data.len() - (k + 1) * 16;
            return Some(start + (31 - m.leading_zeros() as usize));
        }
    }
    blocks
        .remainder()
        .iter()
        .rposition(|&b| locality::is_break(b))
}

/// Bit `j`: byte `j` of a block of 16 is a break byte (`locality::is_break`: 0 to 8, 0x0e to
/// 0x1f, 0x7f). SSE2 on x86-64, a byte loop elsewhere.
fn break_mask(block: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if let Ok(block) = <&[u8; 16]>::try_from(block) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8, _mm_sub_epi8,
        };
        // SAFETY: SSE2 is part of the x86-64 baseline; `block` is 16 readable bytes, and
        // `_mm_loadu_si128` reads 16 bytes at any alignment.
        let bits = unsafe {
            let x = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            // x <= 8, unsigned
            let low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x08)), x);
            // x - 0x0e <= 0x11, unsigned (wrapping): x from 0x0e to 0x1f
            let y = _mm_sub_epi8(x, _mm_set1_epi8(0x0e));
            let mid = _mm_cmpeq_epi8(_mm_min_epu8(y, _mm_set1_epi8(0x11)), y);
            let del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(low, mid), del))
        };
        return bits as u32 & 0xffff;
    }
    block
        .iter()
        .take(16)
        .enumerate()
        .fold(0, |m, (j, &b)| m | (u32::from(locality::is_break(b)) << j))
}

/// A rule's lines in order, touching ones joined.
fn merge_lines(mut v: Vec<Range<usize>>) -> Vec<Range<usize>> {
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The positions of `data`'s line feeds, in order.
///
/// Why not `memchr_iter`: lines of code are a few dozen bytes, and each of its calls costs
/// more to start than the bytes it reads (3% of a file scan's samples). Here each 64 bytes
/// become one bit mask (SSE2 on x86-64, a byte loop elsewhere) whose set bits are read off.
fn line_feeds(data: &[u8]) -> Vec<usize> {
    line_feeds_and_binary(data).0
}

/// [`line_feeds`], and whether `data` looks binary: it holds a byte from zero to 8 (the
/// control bytes binary data is full of, and text never holds; the other break bytes are not
/// looked for, which would cost more in this pass than they tell), found in the same pass.
fn line_feeds_and_binary(data: &[u8]) -> (Vec<usize>, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("bmi1")
    {
        // SAFETY: the processor runs AVX-512BW and BMI1 (detected above).
        return unsafe { line_feeds_avx512::line_feeds_and_binary(data) };
    }
    line_feeds_and_binary_with(data, line_feed_mask)
}

/// [`line_feeds_and_binary`] with the block masks of `mask` (inlined into each caller: in
/// [`line_feeds_avx512`] compiled for AVX-512).
#[inline(always)]
fn line_feeds_and_binary_with(
    data: &[u8],
    mask: impl Fn(&[u8]) -> (u64, bool),
) -> (Vec<usize>, bool) {
    let mut out = Vec::with_capacity(data.len() / 32);
    let mut breaks = false;
    let mut blocks = data.chunks_exact(64);
    for (k, block) in blocks.by_ref().enumerate() {
        let (mut m, b) = mask(block);
        breaks |= b;
        while m != 0 {
            out.push(k * 64 + m.trailing_zeros() as usize);
            m &= m - 1;
        }
    }
    let base = data.len() - blocks.remainder().len();
    for (j, &b) in blocks.remainder().iter().enumerate() {
        if b == b'\n' {
            out.push(base + j);
        }
        breaks |= b <= 0x08;
    }
    (out, breaks)
}

/// Bit `j`: byte `j` of a block of 64 is a line feed; and whether some byte of the block is
/// from zero to 8 ([`line_feeds_and_binary`]).
fn line_feed_mask(block: &[u8]) -> (u64, bool) {
    #[cfg(target_arch = "x86_64")]
    if let Ok(block) = <&[u8; 64]>::try_from(block) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
        };
        let mut m = 0u64;
        // SAFETY: SSE2 is part of the x86-64 baseline (no memory is touched).
        let mut brk = unsafe { _mm_setzero_si128() };
        for (k, part) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of the x86-64 baseline; `part` is 16 readable bytes
            // (`chunks_exact(16)`), and `_mm_loadu_si128` reads 16 bytes at any alignment.
            let bits = unsafe {
                let x = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
                // x <= 8, unsigned
                let low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x08)), x);
                brk = _mm_or_si128(brk, low);
                _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(b'\n' as i8)))
            };
            m |= u64::from(bits as u16) << (16 * k);
        }
        // SAFETY: SSE2 is part of the x86-64 baseline (no memory is touched).
        let any = unsafe { _mm_movemask_epi8(brk) } != 0;
        return (m, any);
    }
    block
        .iter()
        .take(64)
        .enumerate()
        .fold((0, false), |(m, b), (j, &x)| {
            (m | (u64::from(x == b'\n') << j), b || x <= 0x08)
        })
}

/// The line feed pass with AVX-512: a block of 64 bytes in one comparison for its line feeds
/// and one for its bytes from zero to 8, where SSE2 takes four of each and the bit masks'
/// assembly (a tenth of the engine's own time in a scan of the cargo registry's sources).
#[cfg(target_arch = "x86_64")]
mod line_feeds_avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_cmple_epu8_mask, _mm512_loadu_si512,
        _mm512_set1_epi8,
    };

    /// [`super::line_feeds_and_binary`]; the caller makes sure the processor runs AVX-512BW
    /// and BMI1.
    #[target_feature(enable = "avx512f,avx512bw,bmi1")]
    pub(super) fn line_feeds_and_binary(data: &[u8]) -> (Vec<usize>, bool) {
        super::line_feeds_and_binary_with(data, |block| match <&[u8; 64]>::try_from(block) {
            // (the closure has this function's target features, so `mask` is a safe call)
            Ok(block) => mask(block),
            Err(_) => super::line_feed_mask(block),
        })
    }

    /// Bit `j`: byte `j` is a line feed; and whether a byte is from zero to 8; the caller
    /// makes sure the processor runs AVX-512BW.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn mask(block: &[u8; 64]) -> (u64, bool) {
        // SAFETY: `block` is 64 readable bytes, and `_mm512_loadu_si512` reads 64 bytes at
        // any alignment.
        let x = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
        let nl = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(b'\n' as i8));
        let low = _mm512_cmple_epu8_mask(x, _mm512_set1_epi8(0x08));
        (nl, low != 0)
    }
}

/// Start of the line containing `pos`.
fn line_start(data: &[u8], pos: usize) -> usize {
    let pos = pos.min(data.len());
    memchr::memrchr(b'\n', &data[..pos]).map_or(0, |p| p + 1)
}

/// End of the line containing `pos` (index of its newline, or the data's end).
fn line_end(data: &[u8], pos: usize) -> usize {
    let pos = pos.min(data.len());
    memchr::memchr(b'\n', &data[pos..]).map_or(data.len(), |p| pos + p)
}

/// Newline positions of a fragment, built on the first finding only.
#[derive(Default)]
struct LineIndex {
    newlines: Option<Vec<usize>>,
}

impl LineIndex {
    /// 0-based line index and 0-based column of a byte offset.
    fn locate(&mut self, data: &[u8], pos: usize) -> (usize, usize) {
        let nl = self.newlines.get_or_insert_with(|| line_feeds(data));
        let idx = nl.partition_point(|&p| p < pos);
        let start = if idx == 0 { 0 } else { nl[idx - 1] + 1 };
        (idx, pos - start)
    }
}

#[cfg(test)]
mod keyword_line_tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// The built-in engine with every rule's lines judged, and the same with every rule
    /// reading the whole fragment (as before rules were read on their keywords' lines).
    fn engines() -> (Engine, Engine) {
        let lines = Engine::new(crate::config::RuleSet::builtin().unwrap(), true);
        let whole = Engine::new(crate::config::RuleSet::builtin().unwrap(), true);
        for cell in &whole.reach {
            cell.set((Reach::Fragment, false)).unwrap();
        }
        (lines, whole)
    }

    fn scan(engine: &Engine, data: &[u8], mode: Mode) -> Vec<Finding> {
        let mut out = Vec::new();
        let frag = Fragment {
            path: "src/config.txt",
            commit: None,
            data,
            line_map: None,
        };
        engine.scan_in(&frag, &mut out, mode);
        out
    }

    /// Every case string of `rules/builtin-cases.toml`, spliced back together.
    fn case_texts() -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Cases {
            case: Vec<Case>,
        }
        #[derive(serde::Deserialize)]
        struct Case {
            positive: Vec<String>,
            negative: Vec<String>,
        }
        let cases: Cases = toml::from_str(include_str!("../rules/builtin-cases.toml")).unwrap();
        cases
            .case
            .into_iter()
            .flat_map(|c| c.positive.into_iter().chain(c.negative))
            .map(|t| t.replace("<>", ""))
            .collect()
    }

    #[test]
    fn the_generic_assignment_rules_read_their_keywords_lines() {
        let (engine, _) = engines();
        let local: Vec<&str> = (0..engine.rules.len())
            .filter(|&i| engine.reach(i) != Reach::Fragment)
            .map(|i| engine.rules[i].id.as_str())
            .collect();
        for id in [
            "generic-keyed-secret",
            "generic-token-uuid",
            "generic-secret",
            "generic-password",
            "generic-url-query-token",
            "generic-connection-string-password",
        ] {
            assert!(local.contains(&id), "{id} not in {local:?}");
        }
        let reach = |id: &str| {
            let i = engine.rules.iter().position(|r| r.id == id).unwrap();
            engine.reach(i)
        };
        // curl's credential: its keyword, then at most five continued lines
        assert_eq!(reach("generic-cli-credentials"), Reach::Lines(7));
        // rules whose keywords need not be in their match keep the whole fragment
        assert!((0..engine.rules.len()).any(|i| engine.reach(i) == Reach::Fragment));
    }

    /// Each case in a small fragment among code lines (before, after, alone, twice on one
    /// line, at the very end without a line feed, and one far from a keyword line of the
    /// same rule), and all of them in one fragment: findings and their order are the same
    /// whether rules read their keywords' lines or the whole fragment.
    #[test]
    fn keyword_lines_find_what_the_whole_fragment_finds() {
        let (lines, whole) = engines();
        let code = "    let value = compute(input, &config).unwrap_or_default();\n";
        let keyed = "let api_key = load_key(&path)?; // the key from the token store\n";
        let mut all = String::new();
        let mut findings = 0;
        for text in case_texts() {
            let variants = [
                format!("{code}{text}\n{code}"),
                format!("{keyed}{code}{text}"),
                format!("{text}\n{text} {text}\n{keyed}"),
                format!("x = 1; {text}\r\n{code}{code}{keyed}"),
                format!("{keyed}{}{text}\n", code.repeat(50)),
            ];
            for v in &variants {
                for mode in [Mode::Exact, Mode::AnyPath] {
                    let got = scan(&lines, v.as_bytes(), mode);
                    assert_eq!(got, scan(&whole, v.as_bytes(), mode), "{v:?} {mode:?}");
                    findings += got.len();
                }
            }
            all.push_str(&variants[0]);
        }
        assert!(findings > 1000, "{findings}");
        let got = scan(&lines, all.as_bytes(), Mode::AnyPath);
        assert_eq!(got, scan(&whole, all.as_bytes(), Mode::AnyPath));
        assert!(got.len() > 200, "{}", got.len());
    }

    /// Binary data: each case among bytes of every value, with break bytes (zero and the
    /// other controls, DEL) before, after and inside it, and few line feeds: rules that stay
    /// in runs read the run around each keyword and find what the whole fragment's search
    /// finds, in the same order; the cases' own findings are still found between breaks.
    #[test]
    fn runs_in_binary_data_find_what_the_whole_fragment_finds() {
        let (lines, whole) = engines();
        let runs: Vec<&str> = (0..lines.rules.len())
            .filter(|&i| lines.locality(i).1)
            .map(|i| lines.rules[i].id.as_str())
            .collect();
        for id in [
            "generic-keyed-secret",
            "generic-secret",
            "generic-token-uuid",
        ] {
            assert!(runs.contains(&id), "{id} not in {runs:?}");
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut junk = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| match next() % 8 {
                    0 | 1 => 0,
                    2 => (next() % 32) as u8,
                    3 => 0x7f,
                    _ => (next() % 256) as u8,
                })
                .collect()
        };
        let mut findings = 0;
        let mut all = Vec::new();
        for (k, text) in case_texts().into_iter().enumerate() {
            let t = text.as_bytes();
            // a break byte inside the case, somewhere
            let cut = t.len() * (k % 7 + 1) / 8;
            let mut broken = t[..cut].to_vec();
            broken.push([0u8, 0x01, 0x1b, 0x7f][k % 4]);
            broken.extend_from_slice(&t[cut..]);
            let variants: Vec<Vec<u8>> = vec![
                [junk(40), t.to_vec(), junk(40)].concat(),
                [
                    junk(3),
                    t.to_vec(),
                    vec![0],
                    t.to_vec(),
                    vec![b'\n'],
                    junk(9),
                ]
                .concat(),
                [t.to_vec(), vec![0x08], junk(200), broken.clone()].concat(),
                [junk(64), broken, t.to_vec()].concat(),
            ];
            for v in &variants {
                for mode in [Mode::Exact, Mode::AnyPath] {
                    let got = scan(&lines, v, mode);
                    assert_eq!(
                        got,
                        scan(&whole, v, mode),
                        "{:?} {mode:?}",
                        String::from_utf8_lossy(v)
                    );
                    findings += got.len();
                }
            }
            all.extend_from_slice(&variants[k % 4]);
        }
        assert!(findings > 1000, "{findings}");
        for mode in [Mode::Exact, Mode::AnyPath] {
            let got = scan(&lines, &all, mode);
            assert_eq!(got, scan(&whole, &all, mode));
            assert!(got.len() > 200, "{}", got.len());
        }
    }

    /// Each case with its assignment spread over line feeds (9, 10 and 11 before and after
    /// the `=` or `:`; the service rules' two `\s{0,10}` reach 10), between 40 code lines
    /// before and after: findings that span 20 lines are found around the keyword's line as
    /// in the whole fragment, and at 11 both find the same (none of those rules).
    #[test]
    fn matches_over_many_lines_find_what_the_whole_fragment_finds() {
        let (lines, whole) = engines();
        let i = lines
            .rules
            .iter()
            .position(|r| r.id == "algolia-api-key")
            .unwrap();
        assert_eq!(lines.reach(i), Reach::Lines(21));
        let code = "    let value = compute(input, &config).unwrap_or_default();\n";
        let mut spread_found = 0;
        for gap in [9, 10, 11] {
            let feeds = "\n".repeat(gap);
            let mut all = String::new();
            for text in case_texts() {
                let spread = text
                    .replacen(" = ", &format!("{feeds}={feeds}"), 1)
                    .replacen(": ", &format!("{feeds}:{feeds}"), 1);
                let v = format!("{}{spread}\n{}", code.repeat(40), code.repeat(40));
                for mode in [Mode::Exact, Mode::AnyPath] {
                    let got = scan(&lines, v.as_bytes(), mode);
                    assert_eq!(got, scan(&whole, v.as_bytes(), mode), "{v:?} {mode:?}");
                    spread_found += got
                        .iter()
                        .filter(|f| f.rule_id == "algolia-api-key")
                        .count();
                }
                all.push_str(&v);
            }
            let got = scan(&lines, all.as_bytes(), Mode::Exact);
            assert_eq!(got, scan(&whole, all.as_bytes(), Mode::Exact), "{gap}");
        }
        // the positive case over 18 and 20 line feeds (not 22: `\s{0,10}` each side)
        assert!(spread_found >= 4, "{spread_found}");
    }

    /// One long line (a JSON body as DLP reads it) with a keyword every few bytes: each
    /// rule reads it once, and finds what the whole fragment's search finds.
    #[test]
    fn one_long_line_of_keywords_finds_what_the_whole_fragment_finds() {
        let (lines, whole) = engines();
        let mut data = String::new();
        for (i, text) in case_texts().into_iter().enumerate() {
            data.push_str(&format!(
                "{{\"key_{i}\": \"{}\", ",
                text.replace('\n', "\\n")
            ));
        }
        let data = data.repeat(2);
        assert!(data.len() >= WINDOW_MIN_FRAGMENT, "{}", data.len());
        for mode in [Mode::Exact, Mode::AnyPath] {
            let got = scan(&lines, data.as_bytes(), mode);
            assert_eq!(got, scan(&whole, data.as_bytes(), mode), "{mode:?}");
            assert!(got.len() > 50, "{}", got.len());
        }
    }

    /// Over a fragment large enough to be read in windows, a rule on its keywords' lines
    /// finds what it finds in the windows around them.
    #[test]
    fn keyword_lines_in_large_fragments_find_what_windows_find() {
        let (lines, whole) = engines();
        let code = "    let value = compute(input, &config).unwrap_or_default();\n";
        let mut data = String::new();
        for (i, text) in case_texts().into_iter().enumerate() {
            data.push_str(&text);
            data.push('\n');
            data.push_str(&code.repeat(i % 7));
        }
        assert!(data.len() >= WINDOW_MIN_FRAGMENT, "{}", data.len());
        let got = scan(&lines, data.as_bytes(), Mode::Exact);
        assert_eq!(got, scan(&whole, data.as_bytes(), Mode::Exact));
        assert!(got.len() > 200, "{}", got.len());
    }

    /// The generic rules' allowlists allow secrets without a digit (so their matches without
    /// one are passed over before their groups are found); an allowlist that names a path,
    /// targets the match, or requires a stopword too, does not.
    #[test]
    fn digitless_secrets_are_allowed_only_where_an_allowlist_says_so_everywhere() {
        let (engine, _) = engines();
        for id in [
            "generic-keyed-secret",
            "generic-secret",
            "generic-secret-punctuated",
        ] {
            let i = engine.rules.iter().position(|r| r.id == id).unwrap();
            assert!(engine.digitless_allowed[i], "{id}");
        }
        assert!(engine.digitless_allowed.iter().filter(|&&d| d).count() < 10);
        let allowlist = |extra: &str| {
            let set = RuleSet::from_toml_str(
                &format!(
                    r#"
[[rules]]
id = "k"
regex = '''kkk_([a-z0-9]{{8}})'''
keywords = ["kkk_"]
[[rules.allowlists]]
regexes = ['''^[^0-9]*$''']
{extra}
"#
                ),
                "digits.toml",
                None,
            )
            .unwrap();
            Engine::new(set, true).digitless_allowed[0]
        };
        assert!(allowlist(""));
        assert!(allowlist("condition = \"AND\""));
        assert!(!allowlist("paths = ['''x''']"));
        assert!(!allowlist("regexTarget = \"match\""));
        assert!(!allowlist("condition = \"AND\"\nstopwords = [\"abc\"]"));
        // What is found does not change: the same engine without the shortcut finds the
        // same on every case of the built-in rules and on this crate's sources.
        let (mut plain, _) = engines();
        plain.digitless_allowed.fill(false);
        let mut texts = case_texts();
        texts.push(case_texts().join("\n"));
        for dir in ["src", "src/config", "rules"] {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(root).unwrap().flatten() {
                if entry.path().is_file() {
                    let data = std::fs::read(entry.path()).unwrap();
                    texts.push(String::from_utf8_lossy(&data).into());
                }
            }
        }
        let mut found = 0;
        for text in &texts {
            for mode in [Mode::Exact, Mode::AnyPath] {
                let want = scan(&plain, text.as_bytes(), mode);
                found += want.len();
                assert_eq!(scan(&engine, text.as_bytes(), mode), want, "{text:?}");
            }
        }
        assert!(found > 100, "only {found} findings");
    }
}

#[cfg(test)]
mod break_tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn break_masks_hold_the_break_bytes() {
        for b in 0..=255u8 {
            let mut block = [b'a'; 16];
            for j in [0, 7, 15] {
                block[j] = b;
                let want = if locality::is_break(b) { 1 << j } else { 0 };
                assert_eq!(break_mask(&block), want, "byte {b:#04x} at {j}");
                block[j] = b'a';
            }
        }
    }

    #[test]
    fn the_first_and_last_breaks_are_where_a_byte_loop_finds_them() {
        let mut rng = crate::decode::tests::Rng(0x853c_49e6_748f_ea9b);
        for case in 0..3000 {
            let len = rng.below(100);
            // one break byte in `1 << k` on average (sometimes none at all)
            let k = case % 8;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(1 << k) == 0 {
                        [0u8, 8, 0x0e, 0x1f, 0x7f][rng.below(5)]
                    } else {
                        [b'a', b'\t', b'\n', b'\r', 0x0c, 0x20, 0x7e, 0x80, 0xff][rng.below(9)]
                    }
                })
                .collect();
            let first = data.iter().position(|&b| locality::is_break(b));
            let last = data.iter().rposition(|&b| locality::is_break(b));
            assert_eq!(
                (first_break(&data), last_break(&data)),
                (first, last),
                "{data:?}"
            );
        }
    }
}

#[cfg(test)]
mod rule_slot_tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn slots_are_grown_to_the_rules_and_left_empty() {
        let mut s: RuleSlots = Vec::new();
        grow_slots(&mut s, 4);
        assert_eq!(s, vec![None; 4]);
        grow_slots(&mut s, 6);
        assert_eq!(s, vec![None; 6]);
        // fewer rules than slots: the rest stay, empty
        grow_slots(&mut s, 3);
        assert_eq!(s, vec![None; 6]);
    }

    #[test]
    fn engines_of_different_sizes_on_one_thread_find_what_fresh_slots_find() {
        // The slots are kept per thread across engines: a small rule set after the built-in
        // one (and the built-in one again) finds what it finds on a thread of its own.
        let builtin = Engine::new(RuleSet::builtin().unwrap(), true);
        let small = Engine::new(
            RuleSet::from_toml_str(
                r#"
[[rules]]
id = "k"
regex = '''kkk_[a-z]{8}'''
keywords = ["kkk_"]
"#,
                "small.toml",
                None,
            )
            .unwrap(),
            true,
        );
        let data = b"aws = AKIAQYLPMN5HHHFPZAM2\nx kkk_abcdefgh y\n";
        let scan = |engine: &Engine| {
            let mut out = Vec::new();
            engine.scan(
                &Fragment {
                    path: "f",
                    commit: None,
                    data,
                    line_map: None,
                },
                &mut out,
            );
            out.iter()
                .map(|f| (f.rule_id.clone(), f.line))
                .collect::<Vec<_>>()
        };
        let alone = std::thread::scope(|s| {
            (
                s.spawn(|| scan(&builtin)).join().unwrap(),
                s.spawn(|| scan(&small)).join().unwrap(),
            )
        });
        assert_eq!(scan(&builtin), alone.0);
        assert_eq!(scan(&small), alone.1);
        assert_eq!(scan(&builtin), alone.0);
        assert_eq!(alone.1, vec![("k".to_string(), 2)]);
        assert!(!alone.0.is_empty());
    }
}
