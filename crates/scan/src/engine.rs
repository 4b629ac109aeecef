//! The matching engine: one Aho-Corasick pass over every rule's keywords picks the rules (and,
//! in large fragments, the regions) that meet their regexes; then entropy, allowlists and the
//! inline `gitleaks:allow` marker decide what is reported.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::config::{ASSIGNMENT_TAG, Allowlist, Candidate, Rule, RuleSet, contains};
use crate::decode;
use crate::finding::{Finding, Secret, shannon_entropy};
use crate::value;

/// The marker that allows a finding on its line (unless switched off).
pub const INLINE_ALLOW: &[u8] = b"gitleaks:allow";

/// Fragments at least this large are scanned only around keyword hits.
const WINDOW_MIN_FRAGMENT: usize = 64 * 1024;
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
    keywords: Option<AhoCorasick>,
    /// For each keyword pattern, the rules that list it.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords (always run).
    unconditional: Vec<usize>,
    honor_inline_allow: bool,
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
            // exactly, only their case folding is ASCII-only.
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&patterns)
                .or_else(|_| {
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .build(&patterns)
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
        Self {
            rules: set.rules,
            global: set.allowlists,
            keywords,
            keyword_rules,
            unconditional,
            honor_inline_allow,
        }
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
        self.scan_plain(frag, out, mode == Mode::Exact, mode);
        if let Some(text) = decode::utf16_text(frag.data) {
            let mut more = Vec::new();
            self.scan_plain(
                &Fragment {
                    data: &text,
                    ..*frag
                },
                &mut more,
                false,
                mode,
            );
            self.scan_encoded(frag, &text, 0, None, start, out, mode);
            push_new(out, start, more);
        }
        self.scan_encoded(frag, frag.data, 0, None, start, out, mode);
    }

    /// Decodes the encoded runs of `data` (the fragment's bytes, or decoded text at `at`) and
    /// scans what they hide, down to [`decode::MAX_DECODE_DEPTH`].
    #[allow(clippy::too_many_arguments)]
    fn scan_encoded(
        &self,
        frag: &Fragment<'_>,
        data: &[u8],
        depth: usize,
        at: Option<(u32, u32)>,
        start: usize,
        out: &mut Vec<Finding>,
        mode: Mode,
    ) {
        if depth >= decode::MAX_DECODE_DEPTH {
            return;
        }
        let runs = decode::encoded_runs(data);
        if runs.is_empty() {
            return;
        }
        let mut lines = LineIndex::default();
        for run in runs {
            let here = at.unwrap_or_else(|| {
                let (idx, col) = lines.locate(data, run.span.start);
                let line = match frag.line_map {
                    Some(map) => map.get(idx).copied().unwrap_or(0),
                    None => u32::try_from(idx + 1).unwrap_or(u32::MAX),
                };
                (line, u32::try_from(col + 1).unwrap_or(u32::MAX))
            });
            if at.is_none() && self.honor_inline_allow {
                let s = line_start(data, run.span.start);
                if contains(&data[s..line_end(data, run.span.end)], INLINE_ALLOW) {
                    continue;
                }
            }
            let sub = Fragment {
                path: frag.path,
                commit: frag.commit,
                data: &run.text,
                line_map: None,
            };
            let mut found = Vec::new();
            self.scan_plain(&sub, &mut found, false, mode);
            let found = found
                .into_iter()
                .map(|f| {
                    Finding::new(
                        &f.rule_id,
                        &f.description,
                        frag.path,
                        here.0,
                        here.1,
                        frag.commit,
                        f.secret,
                        f.entropy,
                    )
                })
                .collect();
            push_new(out, start, found);
            self.scan_encoded(frag, &run.text, depth + 1, Some(here), start, out, mode);
        }
    }

    /// The rules over the fragment's bytes as they are; `path_rules`: also the rules that
    /// match a path alone.
    fn scan_plain(
        &self,
        frag: &Fragment<'_>,
        out: &mut Vec<Finding>,
        path_rules: bool,
        mode: Mode,
    ) {
        let n = self.rules.len();
        // Regions per triggered rule (None: not triggered; empty vec: whole fragment).
        let mut regions: Vec<Option<Vec<Range<usize>>>> = vec![None; n];
        for &i in &self.unconditional {
            regions[i] = Some(Vec::new());
        }
        // Bytes judged for some unknown place are scanned whole: a window around a keyword
        // in a whole blob need not hold what the window in the lines a commit adds holds.
        let windowed = mode == Mode::Exact && frag.data.len() >= WINDOW_MIN_FRAGMENT;
        if let Some(ac) = &self.keywords {
            for m in ac.find_overlapping_iter(frag.data) {
                for &r in &self.keyword_rules[m.pattern().as_usize()] {
                    match &mut regions[r] {
                        Some(_) if !windowed => {}
                        slot => {
                            let v = slot.get_or_insert_with(Vec::new);
                            if windowed {
                                push_window(v, frag.data, m.start(), m.end());
                            }
                        }
                    }
                }
            }
        }
        let mut lines = LineIndex::default();
        let mut found: Vec<(Range<usize>, Finding)> = Vec::new();
        for (i, rule_regions) in regions.into_iter().enumerate() {
            let Some(mut rule_regions) = rule_regions else {
                continue;
            };
            let rule = &self.rules[i];
            if mode == Mode::Exact && !self.rule_applies(rule, frag) {
                continue;
            }
            let covered: usize = rule_regions.iter().map(|r| r.len()).sum();
            if rule_regions.is_empty() || covered * 2 >= frag.data.len() {
                rule_regions.clear();
                rule_regions.push(0..frag.data.len());
            }
            for region in rule_regions {
                self.scan_region(rule, frag, region, &mut lines, &mut found, mode);
            }
        }
        drop_generic_duplicates(&mut found);
        out.extend(found.into_iter().map(|(_, f)| f));
        if !path_rules {
            return;
        }
        // Path-only rules: the file itself is the finding.
        for rule in &self.rules {
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
                    first_line(frag.line_map),
                    1,
                    frag.commit,
                    Secret::default(),
                    0.0,
                ));
            }
        }
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
        lines: &mut LineIndex,
        out: &mut Vec<(Range<usize>, Finding)>,
        mode: Mode,
    ) {
        let Some(re) = &rule.regex else { return };
        let base = region.start;
        let hay = &frag.data[region];
        for caps in re.captures_iter(hay) {
            let Some(whole) = caps.get(0) else { continue };
            let secret = match rule.secret_group {
                Some(g) => caps.get(g),
                None if caps.len() > 1 => caps.iter().skip(1).flatten().find(|m| !m.is_empty()),
                None => None,
            }
            .unwrap_or(whole);
            let secret_bytes = secret.as_bytes();
            if secret_bytes.is_empty() {
                continue;
            }
            let entropy = shannon_entropy(secret_bytes);
            if rule.entropy.is_some_and(|min| entropy <= min) {
                continue;
            }
            if rule.tags.iter().any(|t| t == ASSIGNMENT_TAG)
                && value::not_a_secret(secret_bytes).is_some()
            {
                continue;
            }
            let (abs_start, abs_end) = (base + whole.start(), base + whole.end());
            let line_start = line_start(frag.data, abs_start);
            let line_end = line_end(frag.data, abs_end.max(abs_start));
            let line_text = &frag.data[line_start..line_end];
            if self.honor_inline_allow && contains(line_text, INLINE_ALLOW) {
                continue;
            }
            let cand = Candidate {
                path: frag.path,
                commit: frag.commit,
                secret: secret_bytes,
                matched: whole.as_bytes(),
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
                        && (a.target_rules.is_empty()
                            || a.target_rules.iter().any(|t| t == &rule.id))
                        && a.allows(&cand)
                })
            {
                continue;
            }
            if rule.skip_report {
                continue;
            }
            let secret_abs = base + secret.start();
            let (line_idx, col) = lines.locate(frag.data, secret_abs);
            let line = match frag.line_map {
                Some(map) => map.get(line_idx).copied().unwrap_or(0),
                None => u32::try_from(line_idx + 1).unwrap_or(u32::MAX),
            };
            let span = secret_abs..base + secret.end();
            out.push((
                span,
                Finding::new(
                    &rule.id,
                    &rule.description,
                    frag.path,
                    line,
                    u32::try_from(col + 1).unwrap_or(u32::MAX),
                    frag.commit,
                    Secret::from_bytes(secret_bytes),
                    entropy,
                ),
            ));
        }
    }
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

/// A secret found by a specific rule is not reported again by a generic rule (ids starting
/// with `generic`) whose secret overlaps it; of overlapping generic findings the first (in rule
/// order) is kept.
fn drop_generic_duplicates(found: &mut Vec<(Range<usize>, Finding)>) {
    if found.len() < 2 {
        return;
    }
    let is_generic = |f: &Finding| f.rule_id.starts_with("generic");
    let mut kept: Vec<Range<usize>> = found
        .iter()
        .filter(|(_, f)| !is_generic(f))
        .map(|(r, _)| r.clone())
        .collect();
    let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
    found.retain(|(r, f)| {
        if !is_generic(f) {
            return true;
        }
        if kept.iter().any(|k| overlaps(k, r)) {
            return false;
        }
        kept.push(r.clone());
        true
    });
}

fn first_line(map: Option<&[u32]>) -> u32 {
    map.and_then(|m| m.first().copied()).unwrap_or(1)
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

/// Start of the line containing `pos`.
fn line_start(data: &[u8], pos: usize) -> usize {
    let pos = pos.min(data.len());
    data[..pos]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1)
}

/// End of the line containing `pos` (index of its newline, or the data's end).
fn line_end(data: &[u8], pos: usize) -> usize {
    let pos = pos.min(data.len());
    data[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |p| pos + p)
}

/// Newline positions of a fragment, built on the first finding only.
#[derive(Default)]
struct LineIndex {
    newlines: Option<Vec<usize>>,
}

impl LineIndex {
    /// 0-based line index and 0-based column of a byte offset.
    fn locate(&mut self, data: &[u8], pos: usize) -> (usize, usize) {
        let nl = self.newlines.get_or_insert_with(|| {
            data.iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| i)
                .collect()
        });
        let idx = nl.partition_point(|&p| p < pos);
        let start = if idx == 0 { 0 } else { nl[idx - 1] + 1 };
        (idx, pos - start)
    }
}
