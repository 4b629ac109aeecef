//! Rule files in gitleaks' TOML format, and the built-in rule set.
//!
//! Two layers: the raw serde types mirror the file (keys are first read as gitleaks reads them,
//! in any case, unknown ones dropped with a warning that names them: see `keys.rs`) and
//! [`RuleSet`] holds compiled, validated rules. `[extend]` layering
//! happens on the raw layer, before compiling, so every error still names the file the rule came
//! from.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use regex::bytes::Regex;
use serde::Deserialize;

mod gitleaks_ids;
mod keys;
mod pattern;

pub use gitleaks_ids::{GITLEAKS_DEFAULT_IDS, gitleaks_default, gitleaks_ids_of};
pub use pattern::RulePattern;
pub(crate) use pattern::compile_bytes_regex;

/// The rule set shipped with bot-bottle (written for this project).
pub const BUILTIN_RULES: &str = include_str!("../../rules/builtin.toml");

/// Name used in errors for the built-in rule set.
const BUILTIN_NAME: &str = "built-in rules";

/// How deep `[extend] path = ...` chains may go before we assume a cycle.
const MAX_EXTEND_DEPTH: usize = 8;

/// gitleaks follows `[extend]` this many levels (the top file's and its base's) and ignores
/// it deeper down.
const GITLEAKS_EXTEND_DEPTH: usize = 2;

/// Errors loading or compiling a rule file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The rule file could not be read.
    #[error("cannot read rule file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a mistyped field.
    #[error("invalid rule file {path}: {message}")]
    Toml {
        /// The file (or `built-in rules`).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A rule's `regex` (or `path`) does not compile.
    #[error("rule `{rule_id}` in {path}: invalid {field}: {message}")]
    Regex {
        /// The file the rule came from.
        path: String,
        /// The rule id.
        rule_id: String,
        /// Which field: `regex`, `path`, `allowlist regex`, `allowlist path`.
        field: &'static str,
        /// The regex compiler's message.
        message: String,
    },
    /// A rule is structurally wrong (no regex and no path, a secretGroup beyond its groups, ...).
    #[error("rule `{rule_id}` in {path}: {message}")]
    Rule {
        /// The file the rule came from.
        path: String,
        /// The rule id (empty when the id itself is missing).
        rule_id: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A global allowlist is wrong.
    #[error("global allowlist in {path}: {message}")]
    Allowlist {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Something gitleaks supports that this scanner does not (said plainly, never ignored).
    #[error("{path}: {feature} is not supported; remove it from the rule file")]
    Unsupported {
        /// The file.
        path: String,
        /// The feature.
        feature: String,
    },
    /// Loading failed after it dropped unknown keys (or ignored other parts): the failure,
    /// with what was ignored, which is often its cause (a misspelt `regex`).
    #[error("{source}; note: {warnings}")]
    Warned {
        /// The failure.
        source: Box<ConfigError>,
        /// The warnings of the load so far, joined.
        warnings: String,
    },
    /// `[extend] path` chains too deep (most likely a cycle).
    #[error("{path}: [extend] chain deeper than {MAX_EXTEND_DEPTH} files; check for a cycle")]
    ExtendTooDeep {
        /// The file where we gave up.
        path: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Raw layer: exactly what a gitleaks TOML file may contain (unknown keys are dropped before, in
// `keys.rs`; `deny_unknown_fields` keeps the two lists in step).

/// A whole rule file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// Free text.
    #[allow(dead_code)]
    title: Option<String>,
    /// Free text.
    #[allow(dead_code)]
    description: Option<String>,
    /// The gitleaks version the file was written for (informational).
    #[allow(dead_code)]
    min_version: Option<String>,
    /// Layering on another rule set.
    extend: Option<RawExtend>,
    /// The rules.
    #[serde(default)]
    rules: Vec<RawRule>,
    /// Global allowlist (older single-table form).
    allowlist: Option<RawAllowlist>,
    /// Global allowlists (newer array form, may target rules).
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

/// `[extend]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExtend {
    /// Layer this file on the built-in rule set.
    use_default: Option<bool>,
    /// Layer this file on another rule file (relative to the working directory, as gitleaks
    /// reads it, or else to this file's directory).
    path: Option<String>,
    /// Ignored, as gitleaks ignores it: rules are never fetched from the network.
    url: Option<String>,
    /// Rule ids of the base set to drop.
    #[serde(default)]
    disabled_rules: Vec<String>,
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    /// Unique id, used in findings and fingerprints.
    id: Option<String>,
    /// What the rule finds.
    description: Option<String>,
    /// Regex (Go RE2 syntax, which the `regex` crate accepts nearly unchanged).
    regex: Option<String>,
    /// Which capture group is the secret.
    secret_group: Option<usize>,
    /// Minimum Shannon entropy of the secret.
    entropy: Option<f64>,
    /// Lower-cased substrings of which at least one must occur for the regex to run.
    keywords: Option<Vec<String>>,
    /// Regex on the file path; with no `regex`, a path match alone is a finding.
    path: Option<String>,
    /// Free labels.
    tags: Option<Vec<String>>,
    /// Older single allowlist form.
    allowlist: Option<RawAllowlist>,
    /// Allowlists.
    allowlists: Option<Vec<RawAllowlist>>,
    /// Composite-rule helper in gitleaks; such rules are not reported on their own.
    skip_report: Option<bool>,
    /// Composite rules (gitleaks 8.28): rules that must also match near this rule's match.
    required: Option<Vec<RawRequired>>,
}

/// One `[[rules.required]]` entry of a composite rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequired {
    /// The rule that must match too.
    id: Option<String>,
    /// At most this many lines apart (start lines).
    within_lines: Option<u32>,
    /// At most this many columns apart (start columns).
    within_columns: Option<u32>,
}

/// An allowlist, per rule or global.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAllowlist {
    /// Free text.
    #[allow(dead_code)]
    description: Option<String>,
    /// `OR` (default): any criterion allows; `AND`: all given criteria must hold.
    condition: Option<String>,
    /// Commit ids whose findings are allowed.
    #[serde(default)]
    commits: Vec<String>,
    /// Path regexes whose findings are allowed.
    #[serde(default)]
    paths: Vec<String>,
    /// What `regexes` match against: `secret` (default), `match` or `line`.
    regex_target: Option<String>,
    /// Regexes that allow a finding.
    #[serde(default)]
    regexes: Vec<String>,
    /// Substrings of the secret that allow a finding.
    #[serde(default)]
    stopwords: Vec<String>,
    /// Global allowlists only: limit to these rule ids.
    #[serde(default)]
    target_rules: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Resolved layer.

/// What an allowlist's `regexes` are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegexTarget {
    /// The secret (capture group).
    Secret,
    /// The whole regex match.
    Match,
    /// The line(s) of the match.
    Line,
}

/// A compiled allowlist.
#[derive(Debug, Clone)]
pub struct Allowlist {
    /// All given criteria must hold (instead of any).
    pub require_all: bool,
    /// Commit ids.
    pub commits: Vec<String>,
    /// Path regexes.
    pub paths: Vec<Regex>,
    /// What `regexes` apply to.
    pub regex_target: RegexTarget,
    /// Regexes (the built-in rules' are compiled on first use).
    pub regexes: Vec<RulePattern>,
    /// Lower-cased stopwords.
    pub stopwords: Vec<String>,
    /// Global allowlists: the rule ids they apply to (empty: all).
    pub target_rules: Vec<String>,
    /// `stopwords` as one search, built on first use.
    stopword_search: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

/// What an allowlist is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The file path (as reported).
    pub path: &'a str,
    /// The commit, in git mode.
    pub commit: Option<&'a str>,
    /// The secret.
    pub secret: &'a [u8],
    /// The whole match.
    pub matched: &'a [u8],
    /// The line(s) of the match.
    pub line: &'a [u8],
}

impl Allowlist {
    /// Whether this allowlist allows the candidate.
    pub fn allows(&self, c: &Candidate<'_>) -> bool {
        self.allows_by(c, |secret| match self.stopword_search() {
            // (the stopwords are lower-cased: the secret lower-cased holds one where the
            // secret holds one in any ASCII case)
            Some(words) => words.is_match(secret),
            None => self.stopword_in(secret),
        })
    }

    /// Whether a stopword is in `secret` lower-cased, looked for one by one.
    fn stopword_in(&self, secret: &[u8]) -> bool {
        let secret = secret.to_ascii_lowercase();
        self.stopwords
            .iter()
            .any(|w| contains(&secret, w.as_bytes()))
    }

    /// [`Allowlist::allows`] with `stopword` telling whether the secret holds a stopword.
    fn allows_by(&self, c: &Candidate<'_>, stopword: impl Fn(&[u8]) -> bool) -> bool {
        let mut results = [None; 4];
        if !self.commits.is_empty() {
            results[0] = Some(c.commit.is_some_and(|id| self.commit_listed(id)));
        }
        if !self.paths.is_empty() {
            results[1] = Some(self.path_listed(c.path));
        }
        if !self.regexes.is_empty() {
            let target = match self.regex_target {
                RegexTarget::Secret => c.secret,
                RegexTarget::Match => c.matched,
                RegexTarget::Line => c.line,
            };
            results[2] = Some(self.regexes.iter().any(|r| r.is_match(target)));
        }
        if !self.stopwords.is_empty() {
            results[3] = Some(stopword(c.secret));
        }
        let mut given = results.iter().flatten().peekable();
        if given.peek().is_none() {
            return false;
        }
        if self.require_all {
            given.all(|&b| b)
        } else {
            given.any(|&b| b)
        }
    }

    /// The stopwords in one automaton, ASCII case folded, built on first use; `None` if one
    /// of them is empty (found everywhere) or it could not be built: they are then looked
    /// for one by one in the secret lower-cased.
    ///
    /// Why: the generic rules' allowlists hold up to 24 stopwords, and most matches of those
    /// rules are judged by them; a copy of the secret lower-cased, searched once per
    /// stopword, was about a twentieth of the instructions of a scan of files dense with
    /// assignments.
    fn stopword_search(&self) -> Option<&aho_corasick::AhoCorasick> {
        self.stopword_search
            .get_or_init(|| {
                if self.stopwords.iter().any(String::is_empty) {
                    return None;
                }
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&self.stopwords)
                    .ok()
            })
            .as_ref()
    }

    /// Whether a commit is listed (full id or an abbreviation of at least 7 digits).
    pub fn commit_listed(&self, id: &str) -> bool {
        self.commits
            .iter()
            .any(|c| c == id || (c.len() >= 7 && id.starts_with(c.as_str())))
    }

    /// Whether a path matches one of the path regexes.
    pub fn path_listed(&self, path: &str) -> bool {
        self.paths.iter().any(|r| r.is_match(path.as_bytes()))
    }

    /// Whether this allowlist, on its own, allows everything in a path (so the file can be
    /// skipped before reading): only paths given, or OR with a matching path.
    pub fn skips_path(&self, path: &str) -> bool {
        if self.paths.is_empty() || !self.path_listed(path) {
            return false;
        }
        !self.require_all
            || (self.commits.is_empty() && self.regexes.is_empty() && self.stopwords.is_empty())
    }

    /// Whether this allowlist, on its own, allows everything in a commit.
    pub fn skips_commit(&self, id: &str) -> bool {
        if self.commits.is_empty() || !self.commit_listed(id) {
            return false;
        }
        !self.require_all
            || (self.paths.is_empty() && self.regexes.is_empty() && self.stopwords.is_empty())
    }
}

///
/// The needle's first byte is looked for with `memchr` and the rest compared only there:
/// comparing every window (a `memcmp` call per position) was 15% of the samples of a scan
/// of the synthetic corpus, where many matches are judged (the inline marker on each
/// match's line, the stopwords in each generic secret).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = haystack.len().checked_sub(needle.len()) else {
        return false;
    };
    let mut from = 0;
    while let Some(p) = memchr::memchr(first, &haystack[from..=last_start]) {
        let at = from + p;
        if &haystack[at + 1..at + needle.len()] == rest {
            return true;
        }
        from = at + 1;
        if from > last_start {
            break;
        }
    }
    false
}

#[cfg(test)]
mod contains_tests {
    #[test]
    fn contains_is_a_search_of_every_window() {
        let reference = |h: &[u8], n: &[u8]| n.is_empty() || h.windows(n.len()).any(|w| w == n);
        let hays: [&[u8]; 6] = [b"", b"a", b"abc", b"aab", b"xxgitleaks:allowxx", b"abab"];
        let needles: [&[u8]; 8] = [
            b"",
            b"a",
            b"b",
            b"ab",
            b"ba",
            b"abc",
            b"gitleaks:allow",
            b"bab",
        ];
        for h in hays {
            for n in needles {
                assert_eq!(super::contains(h, n), reference(h, n), "{h:?} {n:?}");
            }
        }
        let mut x: u64 = 7;
        for _ in 0..5000 {
            let mut byte = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"ab"[(x % 2) as usize]
            };
            let h: Vec<u8> = (0..12).map(|_| byte()).collect();
            let n: Vec<u8> = (0..4).map(|_| byte()).collect();
            assert_eq!(super::contains(&h, &n), reference(&h, &n), "{h:?} {n:?}");
        }
    }
}

/// The tag of rules that match a name and the value assigned to it (`password = …`): the
/// value is judged before it is reported (see `value.rs`).
pub const ASSIGNMENT_TAG: &str = "assignment";

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id.
    pub id: String,
    /// What it finds.
    pub description: String,
    /// The regex (None for path-only rules); a built-in rule's is compiled on first use.
    pub regex: Option<RulePattern>,
    /// Which group is the secret (None: the first non-empty group, or the whole match).
    pub secret_group: Option<usize>,
    /// Minimum entropy (the secret's must be greater).
    pub entropy: Option<f64>,
    /// Lower-cased keywords (empty: the regex always runs).
    pub keywords: Vec<String>,
    /// Path regex.
    pub path: Option<Regex>,
    /// Allowlists of this rule.
    pub allowlists: Vec<Allowlist>,
    /// Not reported (gitleaks' composite helper rules).
    pub skip_report: bool,
    /// Free labels; [`ASSIGNMENT_TAG`] makes the engine judge the value a rule matched as a
    /// value assigned to a name (prose, placeholders and references are not secrets).
    pub tags: Vec<String>,
    /// Where the rule came from (file path or `built-in rules`).
    pub source: String,
    /// Composite rules: other rules that must match near each match of this one for it to be
    /// reported (gitleaks' `[[rules.required]]`).
    pub required: Vec<Required>,
}

/// A rule a composite rule requires, and how near its match must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    /// The required rule's id.
    pub rule_id: String,
    /// At most this many lines between the two matches' first lines (None: anywhere in the
    /// same fragment).
    pub within_lines: Option<u32>,
    /// At most this many columns between the two matches' first columns.
    pub within_columns: Option<u32>,
}

/// A compiled rule set: rules plus global allowlists.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The rules, in file order (base rules first).
    pub rules: Vec<Rule>,
    /// Global allowlists.
    pub allowlists: Vec<Allowlist>,
    /// What loading decided that a user may want to know (`-v`): which file an `[extend]
    /// path` was read from, gitleaks rule ids read as ours.
    pub notes: Vec<String>,
    /// What loading ignored (printed always): overrides of rules that do not exist.
    pub warnings: Vec<String>,
}

impl RuleSet {
    /// Every content regex of the set: the rules' and their allowlists', then the global
    /// allowlists' (the tests' way to ask each one something).
    #[cfg(test)]
    pub(crate) fn patterns(&self) -> impl Iterator<Item = &RulePattern> {
        self.rules
            .iter()
            .flat_map(|r| {
                r.regex
                    .iter()
                    .chain(r.allowlists.iter().flat_map(|a| &a.regexes))
            })
            .chain(self.allowlists.iter().flat_map(|a| &a.regexes))
    }

    /// The built-in rule set.
    pub fn builtin() -> Result<Self, ConfigError> {
        let mut ctx = Loader::default();
        let raw = ctx.parse_builtin()?;
        let layered = ctx.resolve(raw, BUILTIN_NAME, None, 0)?;
        ctx.compile(layered)
    }

    /// Reads a gitleaks-format rule file; `[extend] useDefault = true` layers it on the
    /// built-in set, `[extend] path` on another file, otherwise it replaces the built-in set.
    /// A relative `[extend] path` is looked up from the working directory (as gitleaks does),
    /// then from the directory of the file that names it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_in(path, std::env::current_dir().ok().as_deref())
    }

    /// [`RuleSet::from_file`] with the working directory given (`None`: relative `[extend]
    /// path`s are looked up from the file's directory only).
    pub fn from_file_in(path: &Path, cwd: Option<&Path>) -> Result<Self, ConfigError> {
        let text = state::read::read_limited_to_string(path, state::read::CONFIG_LIMIT).map_err(
            |source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Self::from_toml_str_in(&text, &path.display().to_string(), path.parent(), cwd)
    }

    /// Like [`RuleSet::from_file`] from a string; `name` is used in errors, `base_dir` resolves
    /// `[extend] path` (the working directory is not consulted).
    pub fn from_toml_str(
        text: &str,
        name: &str,
        base_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_str_in(text, name, base_dir, None)
    }

    /// [`RuleSet::from_toml_str`] with the working directory that a relative `[extend] path`
    /// is looked up from first.
    pub fn from_toml_str_in(
        text: &str,
        name: &str,
        base_dir: Option<&Path>,
        cwd: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let mut ctx = Loader {
            cwd: cwd.map(Path::to_path_buf),
            ..Loader::default()
        };
        let layered = ctx
            .parse(text, name)
            .and_then(|raw| ctx.resolve(raw, name, base_dir, 0))
            .map_err(|e| warned(e, &ctx.warnings))?;
        let warnings = ctx.warnings.clone();
        ctx.compile(layered).map_err(|e| warned(e, &warnings))
    }

    /// The rule with this id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// A load's error with the load's warnings, when it has any.
fn warned(e: ConfigError, warnings: &[String]) -> ConfigError {
    if warnings.is_empty() {
        return e;
    }
    ConfigError::Warned {
        source: Box::new(e),
        warnings: warnings.join("; "),
    }
}

fn toml_error(name: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError::Toml {
        path: name.to_string(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    }
}

/// A raw rule tagged with the file it came from.
struct Sourced<T> {
    source: String,
    item: T,
}

struct Layered {
    rules: Vec<Sourced<RawRule>>,
    allowlists: Vec<Sourced<RawAllowlist>>,
    /// The built-in rules are among the layers: gitleaks' default rule ids mean ours.
    has_builtin: bool,
}

/// State of one load: where relative paths are looked up, and what is said about it.
#[derive(Default)]
struct Loader {
    cwd: Option<PathBuf>,
    notes: Vec<String>,
    warnings: Vec<String>,
    /// The built-in rules' regexes and allowlist regexes, when they were read: these are
    /// known to compile, so a rule or allowlist whose regex is one of them compiles it on first
    /// use (see [`RulePattern`]).
    builtin_patterns: HashSet<String>,
}

impl Loader {
    /// Reads the built-in rules, noting their regexes as known to compile.
    ///
    /// Read straight into the typed layer: the built-in file spells every key as the typed
    /// layer does, so the key walk of [`Loader::parse`] (a parse into a table first) would
    /// change nothing and say nothing (a test checks it). Why: that first parse was most of
    /// the cost of loading the rules (8.8 M of 13 M instructions).
    fn parse_builtin(&mut self) -> Result<RawConfig, ConfigError> {
        let raw: RawConfig =
            toml::from_str(BUILTIN_RULES).map_err(|e| toml_error(BUILTIN_NAME, &e))?;
        let allowlists = raw
            .rules
            .iter()
            .flat_map(|r| r.allowlist.iter().chain(r.allowlists.iter().flatten()))
            .chain(raw.allowlist.iter().chain(raw.allowlists.iter()));
        let patterns: Vec<String> = raw
            .rules
            .iter()
            .filter_map(|r| r.regex.clone())
            .chain(allowlists.flat_map(|a| a.regexes.iter().cloned()))
            .collect();
        self.builtin_patterns.extend(patterns);
        Ok(raw)
    }

    /// Reads a rule file's text as gitleaks reads it: keys in any case, unknown keys dropped
    /// (each a warning). Untouched files are read straight from the text, so type errors keep
    /// their line and column.
    fn parse(&mut self, text: &str, name: &str) -> Result<RawConfig, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e| toml_error(name, &e))?;
        let report = keys::normalise(&mut table, name);
        self.warnings.extend(report.warnings);
        self.notes.extend(report.notes);
        let raw = if report.changed {
            toml::Value::Table(table).try_into()
        } else {
            toml::from_str(text)
        };
        raw.map_err(|e| toml_error(name, &e))
    }

    /// Finds the file an `[extend] path` names: as gitleaks does (from the working directory),
    /// else from the directory of the file that names it.
    fn extend_path(&mut self, name: &str, p: &str, base_dir: Option<&Path>) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            return p;
        }
        let from_cwd = self.cwd.as_ref().map(|c| c.join(&p));
        if let Some(c) = from_cwd.as_ref().filter(|c| c.is_file()) {
            self.notes.push(format!(
                "{name}: [extend] path {} read from the working directory (as gitleaks does): {}",
                p.display(),
                c.display()
            ));
            return c.clone();
        }
        if let Some(d) = base_dir {
            let f = d.join(&p);
            if f.is_file() {
                self.notes.push(format!(
                    "{name}: [extend] path {} read from the rule file's directory: {}",
                    p.display(),
                    f.display()
                ));
                return f;
            }
            return f;
        }
        from_cwd.unwrap_or(p)
    }

    fn resolve(
        &mut self,
        raw: RawConfig,
        name: &str,
        base_dir: Option<&Path>,
        depth: usize,
    ) -> Result<Layered, ConfigError> {
        if depth > MAX_EXTEND_DEPTH {
            return Err(ConfigError::ExtendTooDeep {
                path: name.to_string(),
            });
        }
        check_allowlist_tables(&raw, name)?;
        let mut base = Layered {
            rules: Vec::new(),
            allowlists: Vec::new(),
            has_builtin: false,
        };
        let mut disabled: Vec<String> = Vec::new();
        let mut extend = raw.extend;
        if depth >= GITLEAKS_EXTEND_DEPTH
            && extend
                .as_ref()
                .is_some_and(|e| e.use_default == Some(true) || e.path.is_some())
            && name != BUILTIN_NAME
        {
            // gitleaks follows two levels of [extend] and ignores deeper ones; a file it loads
            // must load here with the same rules.
            self.warnings.push(format!(
                "{name}: [extend] is ignored: it is {GITLEAKS_EXTEND_DEPTH} levels deep, and \
                 gitleaks follows no deeper"
            ));
            extend = None;
        }
        if let Some(ext) = extend {
            if let Some(url) = &ext.url {
                self.warnings.push(format!(
                    "{name}: [extend] url {url} is ignored (gitleaks ignores it too; rules are \
                     never fetched from the network)"
                ));
            }
            if ext.use_default == Some(true) && ext.path.is_some() {
                return Err(ConfigError::Toml {
                    path: name.to_string(),
                    message: "[extend] takes either useDefault or path, not both".into(),
                });
            }
            if ext.use_default == Some(true) {
                let b = self.parse_builtin()?;
                base = self.resolve(b, BUILTIN_NAME, None, depth + 1)?;
                base.has_builtin = true;
            } else if let Some(p) = ext.path.as_deref().filter(|p| !p.is_empty()) {
                let full = self.extend_path(name, p, base_dir);
                let text = state::read::read_limited_to_string(&full, state::read::CONFIG_LIMIT)
                    .map_err(|source| ConfigError::Read {
                        path: full.clone(),
                        source,
                    })?;
                let child_name = full.display().to_string();
                let b = self.parse(&text, &child_name)?;
                base = self.resolve(b, &child_name, full.parent(), depth + 1)?;
            }
            disabled = ext.disabled_rules;
        }
        // gitleaks' default ids disable the rules of ours they map to.
        let mut disabled_ids: Vec<String> = Vec::new();
        for d in disabled {
            let known = base.rules.iter().any(|r| r.item.id.as_deref() == Some(&d));
            match gitleaks_default(&d) {
                Some(ours) if !known && base.has_builtin => {
                    if ours.is_empty() {
                        self.notes.push(format!(
                            "{name}: disabledRules names gitleaks' default rule `{d}`, which no \
                             built-in rule covers; nothing to disable"
                        ));
                    } else {
                        self.notes.push(format!(
                            "{name}: disabledRules `{d}` (a gitleaks default rule) disables {}",
                            ours.join(", ")
                        ));
                    }
                    disabled_ids.extend(ours.iter().map(|s| s.to_string()));
                }
                _ => disabled_ids.push(d),
            }
        }
        base.rules
            .retain(|r| !disabled_ids.iter().any(|d| Some(d) == r.item.id.as_ref()));

        // Rules of this file override base rules with the same id, field by field; within the
        // file, a later rule with an id already used replaces the earlier one (as in gitleaks).
        let mut local: Vec<RawRule> = Vec::new();
        for rule in raw.rules {
            match rule
                .id
                .as_ref()
                .and_then(|id| local.iter().position(|r| r.id.as_ref() == Some(id)))
            {
                Some(i) => {
                    self.notes.push(format!(
                        "{name}: rule `{}` is defined twice; the later definition wins",
                        rule.id.as_deref().unwrap_or_default()
                    ));
                    local[i] = rule;
                }
                None => local.push(rule),
            }
        }
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, r) in base.rules.iter().enumerate() {
            if let Some(id) = &r.item.id {
                index.insert(id.clone(), i);
            }
        }
        for rule in local {
            let defines = rule.regex.is_some() || rule.path.is_some();
            let id = rule.id.clone();
            if let Some(i) = id.as_ref().and_then(|id| index.get(id)).copied() {
                let merged = merge_rule(&base.rules[i].item, rule);
                base.rules[i] = Sourced {
                    source: name.to_string(),
                    item: merged,
                };
                continue;
            }
            let gitleaks = id
                .as_deref()
                .filter(|_| base.has_builtin)
                .and_then(|id| gitleaks_default(id).map(|ours| (id, ours)));
            match gitleaks {
                // A gitleaks default rule redefined with a pattern of its own: it stands for
                // the kind of secret the rules of ours it maps to find, which step aside.
                Some((gid, ours)) if defines && !ours.is_empty() => {
                    self.notes.push(format!(
                        "{name}: rule `{gid}` redefines gitleaks' default rule; it replaces the \
                         built-in {}",
                        ours.join(", ")
                    ));
                    base.rules
                        .retain(|r| !r.item.id.as_deref().is_some_and(|i| ours.contains(&i)));
                }
                // An override (allowlists, entropy, keywords...) of a gitleaks default rule:
                // applied to each rule of ours that finds that kind.
                Some((gid, ours)) if !defines && !ours.is_empty() => {
                    self.notes.push(format!(
                        "{name}: rule `{gid}` (a gitleaks default rule) applies to the built-in {}",
                        ours.join(", ")
                    ));
                    for o in ours {
                        if let Some(r) = base
                            .rules
                            .iter_mut()
                            .find(|r| r.item.id.as_deref() == Some(*o))
                        {
                            let mut over = rule.clone();
                            over.id = Some(o.to_string());
                            r.item = merge_rule(&r.item, over);
                            r.source = name.to_string();
                        }
                    }
                    continue;
                }
                Some((gid, _)) if !defines => {
                    self.warnings.push(format!(
                        "{name}: rule `{gid}` overrides gitleaks' default rule `{gid}`, which no \
                         built-in rule covers; the override is ignored (give it a regex to add \
                         it as a rule of its own)"
                    ));
                    continue;
                }
                _ => {}
            }
            if !defines
                && rule.required.is_none()
                && !base.rules.is_empty()
                && let Some(id) = &id
            {
                self.warnings.push(format!(
                    "{name}: rule `{id}` overrides a rule that the rules it extends do not \
                     have, and has no regex or path of its own; it is ignored"
                ));
                continue;
            }
            if let Some(id) = &id {
                index.insert(id.clone(), base.rules.len());
            }
            base.rules.push(Sourced {
                source: name.to_string(),
                item: rule,
            });
        }
        for a in raw.allowlist.into_iter().chain(raw.allowlists) {
            base.allowlists.push(Sourced {
                source: name.to_string(),
                item: a,
            });
        }
        Ok(base)
    }
}

/// Refuses the allowlist tables gitleaks 8.30 refuses, so that a file whose meaning is unclear
/// never loads: an empty allowlist (no commits, paths, regexes or stopwords: "allow nothing"
/// or "allow everything"?) and the older single `[allowlist]` / `[rules.allowlist]` next to the
/// newer `[[allowlists]]` / `[[rules.allowlists]]` of the same place.
fn check_allowlist_tables(raw: &RawConfig, name: &str) -> Result<(), ConfigError> {
    fn empty(a: &RawAllowlist) -> bool {
        a.commits.is_empty() && a.paths.is_empty() && a.regexes.is_empty() && a.stopwords.is_empty()
    }
    fn what_is_empty(table: &str) -> String {
        format!(
            "{table} is empty; give it at least one of commits, paths, regexes or stopwords, or \
             remove it (gitleaks refuses it too)"
        )
    }
    fn both(old: &str, new: &str, article: &str) -> String {
        format!(
            "both the older {old} table and {new} tables; move the entries of {old} into \
             {article} {new} table (gitleaks refuses the two together too)"
        )
    }
    let global = |message: String| ConfigError::Allowlist {
        path: name.to_string(),
        message,
    };
    if raw.allowlist.is_some() && !raw.allowlists.is_empty() {
        return Err(global(both("[allowlist]", "[[allowlists]]", "an")));
    }
    if raw.allowlist.as_ref().is_some_and(empty) {
        return Err(global(what_is_empty("[allowlist]")));
    }
    if let Some(i) = raw.allowlists.iter().position(empty) {
        return Err(global(what_is_empty(&format!("[[allowlists]] #{}", i + 1))));
    }
    for rule in &raw.rules {
        let rule_err = |message: String| ConfigError::Rule {
            path: name.to_string(),
            rule_id: rule.id.clone().unwrap_or_default(),
            message,
        };
        let many = rule.allowlists.as_deref().unwrap_or_default();
        if rule.allowlist.is_some() && !many.is_empty() {
            return Err(rule_err(both(
                "[rules.allowlist]",
                "[[rules.allowlists]]",
                "a",
            )));
        }
        if rule.allowlist.as_ref().is_some_and(empty) {
            return Err(rule_err(what_is_empty("[rules.allowlist]")));
        }
        if let Some(i) = many.iter().position(empty) {
            return Err(rule_err(what_is_empty(&format!(
                "[[rules.allowlists]] #{}",
                i + 1
            ))));
        }
    }
    Ok(())
}

/// A rule redefined by an extending file: its fields win, missing ones come from the base;
/// keywords, tags and allowlists add up (as in gitleaks).
fn merge_rule(base: &RawRule, over: RawRule) -> RawRule {
    let mut allowlists: Vec<RawAllowlist> = base
        .allowlist
        .iter()
        .cloned()
        .chain(base.allowlists.clone().unwrap_or_default())
        .collect();
    allowlists.extend(over.allowlist);
    allowlists.extend(over.allowlists.unwrap_or_default());
    let add = |a: &Option<Vec<String>>, b: Option<Vec<String>>| match (a, b) {
        (None, None) => None,
        (a, b) => {
            let mut v = a.clone().unwrap_or_default();
            for x in b.unwrap_or_default() {
                if !v.contains(&x) {
                    v.push(x);
                }
            }
            Some(v)
        }
    };
    RawRule {
        id: over.id,
        description: over.description.or_else(|| base.description.clone()),
        regex: over.regex.or_else(|| base.regex.clone()),
        secret_group: over.secret_group.or(base.secret_group),
        entropy: over.entropy.or(base.entropy),
        keywords: add(&base.keywords, over.keywords),
        path: over.path.or_else(|| base.path.clone()),
        tags: add(&base.tags, over.tags),
        allowlist: None,
        allowlists: Some(allowlists),
        skip_report: over.skip_report.or(base.skip_report),
        required: over.required.or_else(|| base.required.clone()),
    }
}

fn compile_allowlist(
    raw: &RawAllowlist,
    source: &str,
    rule_id: Option<&str>,
    known: &HashSet<String>,
) -> Result<Allowlist, ConfigError> {
    let err = |message: String| match rule_id {
        Some(id) => ConfigError::Rule {
            path: source.to_string(),
            rule_id: id.to_string(),
            message: format!("allowlist: {message}"),
        },
        None => ConfigError::Allowlist {
            path: source.to_string(),
            message,
        },
    };
    let require_all = match raw.condition.as_deref().map(str::to_ascii_uppercase) {
        None => false,
        Some(c) if c == "OR" => false,
        Some(c) if c == "AND" => true,
        Some(c) => return Err(err(format!("condition `{c}` must be OR or AND"))),
    };
    let regex_target = match raw.regex_target.as_deref() {
        None | Some("secret") => RegexTarget::Secret,
        Some("match") => RegexTarget::Match,
        Some("line") => RegexTarget::Line,
        Some(t) => {
            return Err(err(format!(
                "regexTarget `{t}` must be secret, match or line"
            )));
        }
    };
    let regex_err = |p: &str, field: &'static str, e: regex::Error| match rule_id {
        Some(id) => ConfigError::Regex {
            path: source.to_string(),
            rule_id: id.to_string(),
            field,
            message: first_line(&e.to_string()),
        },
        None => ConfigError::Allowlist {
            path: source.to_string(),
            message: format!("invalid {field} `{p}`: {}", first_line(&e.to_string())),
        },
    };
    let paths = raw
        .paths
        .iter()
        .map(|p| compile_bytes_regex(p).map_err(|e| regex_err(p, "allowlist path", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let regexes = raw
        .regexes
        .iter()
        .map(|p| {
            if known.contains(p) {
                Ok(RulePattern::deferred(p))
            } else {
                RulePattern::compiled(p).map_err(|e| regex_err(p, "allowlist regex", e))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if rule_id.is_some() && !raw.target_rules.is_empty() {
        return Err(err(
            "targetRules is only allowed in global allowlists".into()
        ));
    }
    Ok(Allowlist {
        require_all,
        commits: raw.commits.clone(),
        paths,
        regex_target,
        regexes,
        stopwords: raw.stopwords.iter().map(|s| s.to_lowercase()).collect(),
        target_rules: raw.target_rules.clone(),
        stopword_search: std::sync::OnceLock::new(),
    })
}

fn first_line(s: &str) -> String {
    // The regex crate's errors are multi-line with a caret diagram; keep them readable in one
    // error line.
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Loader {
    fn compile(self, layered: Layered) -> Result<RuleSet, ConfigError> {
        let Loader {
            mut notes,
            mut warnings,
            builtin_patterns,
            ..
        } = self;
        let mut rules = Vec::with_capacity(layered.rules.len());
        for Sourced { source, item: raw } in layered.rules {
            let Some(id) = raw.id.clone().filter(|s| !s.trim().is_empty()) else {
                return Err(ConfigError::Rule {
                    path: source,
                    rule_id: String::new(),
                    message: format!(
                        "a rule has no id (description: {:?}); give every [[rules]] an id",
                        raw.description.as_deref().unwrap_or("")
                    ),
                });
            };
            let rule_err = |message: String| ConfigError::Rule {
                path: source.clone(),
                rule_id: id.clone(),
                message,
            };
            let required = raw
                .required
                .iter()
                .flatten()
                .map(|r| match r.id.as_deref().map(str::trim) {
                    Some(rid) if !rid.is_empty() => Ok(Required {
                        rule_id: rid.to_string(),
                        within_lines: r.within_lines,
                        within_columns: r.within_columns,
                    }),
                    _ => Err(rule_err("[[rules.required]] needs an id".into())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if raw.regex.is_none() && raw.path.is_none() {
                return Err(rule_err("needs a regex or a path".into()));
            }
            let regex = match &raw.regex {
                Some(p) if builtin_patterns.contains(p) => Some(RulePattern::deferred(p)),
                Some(p) => Some(RulePattern::compiled(p).map_err(|e| ConfigError::Regex {
                    path: source.clone(),
                    rule_id: id.clone(),
                    field: "regex",
                    message: first_line(&e.to_string()),
                })?),
                None => None,
            };
            if let (Some(g), Some(re)) = (raw.secret_group, &regex)
                && g >= re.captures_len()
            {
                return Err(rule_err(format!(
                    "secretGroup {g} but the regex has only {} capture group(s)",
                    re.captures_len() - 1
                )));
            }
            if let Some(e) = raw.entropy
                && !(0.0..=8.0).contains(&e)
            {
                // gitleaks loads it (the rule then never, or always, passes the entropy test);
                // so do we, and say so.
                if e.is_nan() {
                    return Err(rule_err("entropy must be a number between 0 and 8".into()));
                }
                warnings.push(format!(
                    "rule `{id}` in {source}: entropy {e} is outside 0 to 8 (bits per byte), so \
                     {}",
                    if e > 8.0 {
                        "the rule never reports anything"
                    } else {
                        "it does not filter anything"
                    }
                ));
            }
            let path = match &raw.path {
                Some(p) => Some(compile_bytes_regex(p).map_err(|e| ConfigError::Regex {
                    path: source.clone(),
                    rule_id: id.clone(),
                    field: "path",
                    message: first_line(&e.to_string()),
                })?),
                None => None,
            };
            let mut keywords: Vec<String> = raw
                .keywords
                .unwrap_or_default()
                .iter()
                .map(|k| k.to_lowercase())
                .filter(|k| !k.is_empty())
                .collect();
            keywords.sort();
            keywords.dedup();
            let allowlists = raw
                .allowlist
                .iter()
                .chain(raw.allowlists.iter().flatten())
                .map(|a| compile_allowlist(a, &source, Some(&id), &builtin_patterns))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                description: raw.description.unwrap_or_else(|| id.clone()),
                id,
                regex,
                secret_group: raw.secret_group.filter(|&g| g > 0),
                entropy: raw.entropy.filter(|&e| e > 0.0),
                keywords,
                path,
                allowlists,
                skip_report: raw.skip_report.unwrap_or(false),
                tags: raw.tags.unwrap_or_default(),
                source,
                required,
            });
        }
        for r in &rules {
            for req in &r.required {
                if !rules.iter().any(|o| o.id == req.rule_id) {
                    return Err(ConfigError::Rule {
                        path: r.source.clone(),
                        rule_id: r.id.clone(),
                        message: format!(
                            "[[rules.required]] names rule `{}`, which does not exist",
                            req.rule_id
                        ),
                    });
                }
            }
        }
        let mut allowlists = Vec::with_capacity(layered.allowlists.len());
        for Sourced { source, item } in &layered.allowlists {
            let mut a = compile_allowlist(item, source, None, &builtin_patterns)?;
            if !a.target_rules.is_empty() {
                let mut targets = Vec::new();
                for t in std::mem::take(&mut a.target_rules) {
                    if rules.iter().any(|r| r.id == t) {
                        targets.push(t);
                        continue;
                    }
                    match gitleaks_default(&t).filter(|_| layered.has_builtin) {
                        Some(ours) => {
                            notes.push(format!(
                                "{source}: allowlist targetRules `{t}` (a gitleaks default rule) \
                             means the built-in {}",
                                if ours.is_empty() {
                                    "(none)".to_string()
                                } else {
                                    ours.join(", ")
                                }
                            ));
                            if ours.is_empty() {
                                warnings.push(format!(
                                    "{source}: allowlist targetRules `{t}` names gitleaks' default \
                                 rule, which no built-in rule covers; that target is ignored"
                                ));
                            }
                            targets.extend(ours.iter().map(|o| o.to_string()));
                        }
                        None => {
                            return Err(ConfigError::Allowlist {
                                path: source.clone(),
                                message: format!("targetRules names unknown rule `{t}`"),
                            });
                        }
                    }
                }
                if targets.is_empty() {
                    // Every target was a gitleaks rule we do not have: allow nothing rather than
                    // everything.
                    continue;
                }
                a.target_rules = targets;
            }
            allowlists.push(a);
        }
        Ok(RuleSet {
            rules,
            allowlists,
            notes,
            warnings,
        })
    }
}

#[cfg(test)]
mod builtin_parse_tests {
    use super::*;

    /// The built-in rules are read without the key walk: it would change nothing in them.
    #[test]
    fn the_key_walk_leaves_the_builtin_rules_as_they_are() {
        let mut table: toml::Table = BUILTIN_RULES.parse().unwrap();
        let report = keys::normalise(&mut table, BUILTIN_NAME);
        assert!(!report.changed);
        assert_eq!(report.warnings, Vec::<String>::new());
        assert_eq!(report.notes, Vec::<String>::new());
        let mut walked = Loader::default();
        let walked = walked.parse(BUILTIN_RULES, BUILTIN_NAME).unwrap();
        let direct = Loader::default().parse_builtin().unwrap();
        assert_eq!(format!("{walked:?}"), format!("{direct:?}"));
    }
}

#[cfg(test)]
mod allowlist_search_tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// [`Allowlist::allows`] as it was before its stopwords were searched in one automaton:
    /// each stopword looked for in the secret lower-cased.
    fn allows_one_by_one(a: &Allowlist, c: &Candidate<'_>) -> bool {
        a.allows_by(c, |secret| a.stopword_in(secret))
    }

    /// Candidates built of pieces of the allowlists' own stopwords and regexes' literals, in
    /// any ASCII case, and random bytes.
    fn candidates(words: &[String], n: usize) -> Vec<Vec<u8>> {
        let mut rng = crate::decode::tests::Rng(0x6a09_e667_f3bc_c909);
        (0..n)
            .map(|_| {
                let mut v = Vec::new();
                for _ in 0..rng.below(5) {
                    if words.is_empty() || rng.below(4) == 0 {
                        for _ in 0..rng.below(12) {
                            v.push(match rng.below(3) {
                                0 => rng.below(256) as u8,
                                _ => b"aA0_-.=/+xX \t\"'"[rng.below(15)],
                            });
                        }
                    } else {
                        let w = words[rng.below(words.len())].as_bytes();
                        let (s, e) = (rng.below(w.len() / 2 + 1), w.len() - rng.below(2));
                        for &b in &w[s..e.max(s)] {
                            v.push(match rng.below(3) {
                                0 => b.to_ascii_uppercase(),
                                _ => b,
                            });
                        }
                    }
                }
                v
            })
            .collect()
    }

    fn check(lists: &[&Allowlist], n: usize) -> usize {
        let mut allowed = 0;
        for a in lists {
            let mut words: Vec<String> = a.stopwords.clone();
            for r in &a.regexes {
                words.extend(
                    r.as_str()
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .filter(|w| w.len() >= 3)
                        .map(str::to_string),
                );
            }
            for v in candidates(&words, n) {
                let c = Candidate {
                    path: "a/b.txt",
                    commit: None,
                    secret: &v,
                    matched: &v,
                    line: &v,
                };
                let want = allows_one_by_one(a, &c);
                assert_eq!(a.allows(&c), want, "{:?}", String::from_utf8_lossy(&v));
                allowed += usize::from(want);
            }
        }
        allowed
    }

    #[test]
    fn the_builtin_allowlists_allow_what_their_searches_one_by_one_allow() {
        let set = RuleSet::builtin().unwrap();
        let lists: Vec<&Allowlist> = set
            .allowlists
            .iter()
            .chain(set.rules.iter().flat_map(|r| &r.allowlists))
            .filter(|a| !a.regexes.is_empty() || !a.stopwords.is_empty())
            .collect();
        assert!(lists.iter().any(|a| a.regexes.len() >= 10));
        assert!(lists.iter().any(|a| a.stopwords.len() >= 10));
        let allowed = check(&lists, 400);
        assert!(allowed > 1000, "{allowed}");
        // (every list with stopwords searched them in one automaton)
        assert!(
            lists
                .iter()
                .filter(|a| !a.stopwords.is_empty())
                .all(|a| a.stopword_search.get().is_some_and(Option::is_some))
        );
    }

    #[test]
    fn an_allowlist_with_odd_stopwords_allows_what_one_by_one_allows() {
        let set = RuleSet::from_toml_str(
            r#"
[[rules]]
id = "r"
regex = '''r_[a-z]{4}'''
[[rules.allowlists]]
regexes = ['''^aA''', '''(?i)xx[0-9]''', '''\pL+x''', '''\bfoo\b''', '''a{2''']
stopwords = ["Ab_", "ÉTÉ", "=/"]
[[rules.allowlists]]
condition = "AND"
regexes = ['''(?i)xx''', '''\pL''']
stopwords = ["0_"]
"#,
            "t.toml",
            None,
        )
        .unwrap();
        let lists: Vec<&Allowlist> = set.rules[0].allowlists.iter().collect();
        let allowed = check(&lists, 3000);
        assert!(allowed > 100, "{allowed}");
        assert!(lists[0].stopword_search.get().is_some_and(Option::is_some));
        // (Greek letters are among the pieces only through the stopwords' bytes; one more)
        let c = |v: &'static str| Candidate {
            path: "p",
            commit: None,
            secret: v.as_bytes(),
            matched: v.as_bytes(),
            line: v.as_bytes(),
        };
        assert!(lists[0].allows(&c("λλx")));
        assert!(lists[0].allows(&c("été")));
        assert!(!lists[0].allows(&c("qqq")));
        assert!(lists[1].allows(&c("xXλ0_")));
        assert!(!lists[1].allows(&c("xXλ")));
    }
}
