//! Rule files in gitleaks' TOML format, and the built-in rule set.
//!
//! Two layers: the raw serde types mirror the file (unknown fields are errors, so a typo never
//! silently disables a rule) and [`RuleSet`] holds compiled, validated rules. `[extend]` layering
//! happens on the raw layer, before compiling, so every error still names the file the rule came
//! from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;
use serde::Deserialize;

mod pattern;

pub(crate) use pattern::compile_bytes_regex;

/// The rule set shipped with bot-bottle (written for this project).
pub const BUILTIN_RULES: &str = include_str!("../../rules/builtin.toml");

/// Name used in errors for the built-in rule set.
const BUILTIN_NAME: &str = "built-in rules";

/// How deep `[extend] path = ...` chains may go before we assume a cycle.
const MAX_EXTEND_DEPTH: usize = 8;

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
    /// The file is not valid TOML, or has an unknown or mistyped field.
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
    /// `[extend] path` chains too deep (most likely a cycle).
    #[error("{path}: [extend] chain deeper than {MAX_EXTEND_DEPTH} files; check for a cycle")]
    ExtendTooDeep {
        /// The file where we gave up.
        path: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Raw layer: exactly what a gitleaks TOML file may contain.

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
    /// Layer this file on another rule file (relative to this one).
    path: Option<String>,
    /// Not supported: we never fetch rules from the network.
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
    /// Composite rules (gitleaks 8.28): not supported.
    required: Option<toml::Value>,
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
    /// Regexes.
    pub regexes: Vec<Regex>,
    /// Lower-cased stopwords.
    pub stopwords: Vec<String>,
    /// Global allowlists: the rule ids they apply to (empty: all).
    pub target_rules: Vec<String>,
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
            let secret = c.secret.to_ascii_lowercase();
            results[3] = Some(
                self.stopwords
                    .iter()
                    .any(|w| contains(&secret, w.as_bytes())),
            );
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

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
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
    /// The regex (None for path-only rules).
    pub regex: Option<Regex>,
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
}

/// A compiled rule set: rules plus global allowlists.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The rules, in file order (base rules first).
    pub rules: Vec<Rule>,
    /// Global allowlists.
    pub allowlists: Vec<Allowlist>,
}

impl RuleSet {
    /// The built-in rule set.
    pub fn builtin() -> Result<Self, ConfigError> {
        let raw = parse(BUILTIN_RULES, BUILTIN_NAME)?;
        compile(resolve_layers(raw, BUILTIN_NAME, None, 0)?)
    }

    /// Reads a gitleaks-format rule file; `[extend] useDefault = true` layers it on the
    /// built-in set, `[extend] path` on another file, otherwise it replaces the built-in set.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = state::read::read_limited_to_string(path, state::read::CONFIG_LIMIT).map_err(
            |source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Self::from_toml_str(&text, &path.display().to_string(), path.parent())
    }

    /// Like [`RuleSet::from_file`] from a string; `name` is used in errors, `base_dir` resolves
    /// `[extend] path`.
    pub fn from_toml_str(
        text: &str,
        name: &str,
        base_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let raw = parse(text, name)?;
        compile(resolve_layers(raw, name, base_dir, 0)?)
    }
}

fn parse(text: &str, name: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: name.to_string(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })
}

/// A raw rule tagged with the file it came from.
struct Sourced<T> {
    source: String,
    item: T,
}

struct Layered {
    rules: Vec<Sourced<RawRule>>,
    allowlists: Vec<Sourced<RawAllowlist>>,
}

fn resolve_layers(
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
    let mut base = Layered {
        rules: Vec::new(),
        allowlists: Vec::new(),
    };
    let mut disabled: Vec<String> = Vec::new();
    if let Some(ext) = raw.extend {
        if ext.url.is_some() {
            return Err(ConfigError::Unsupported {
                path: name.to_string(),
                feature: "[extend] url (rules are never fetched from the network)".into(),
            });
        }
        if ext.use_default == Some(true) && ext.path.is_some() {
            return Err(ConfigError::Toml {
                path: name.to_string(),
                message: "[extend] takes either useDefault or path, not both".into(),
            });
        }
        if ext.use_default == Some(true) {
            let b = parse(BUILTIN_RULES, BUILTIN_NAME)?;
            base = resolve_layers(b, BUILTIN_NAME, None, depth + 1)?;
        } else if let Some(p) = ext.path {
            let p = PathBuf::from(p);
            let full = match base_dir {
                Some(dir) if p.is_relative() => dir.join(&p),
                _ => p,
            };
            let text = state::read::read_limited_to_string(&full, state::read::CONFIG_LIMIT)
                .map_err(|source| ConfigError::Read {
                    path: full.clone(),
                    source,
                })?;
            let child_name = full.display().to_string();
            let b = parse(&text, &child_name)?;
            base = resolve_layers(b, &child_name, full.parent(), depth + 1)?;
        }
        disabled = ext.disabled_rules;
    }
    base.rules
        .retain(|r| !disabled.iter().any(|d| Some(d) == r.item.id.as_ref()));

    // Rules of this file override base rules with the same id, field by field.
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, r) in base.rules.iter().enumerate() {
        if let Some(id) = &r.item.id {
            index.insert(id.clone(), i);
        }
    }
    let mut local: std::collections::HashSet<String> = std::collections::HashSet::new();
    for rule in raw.rules {
        if let Some(id) = &rule.id
            && !local.insert(id.clone())
        {
            return Err(ConfigError::Rule {
                path: name.to_string(),
                rule_id: id.clone(),
                message: "duplicate rule id; rule ids must be unique within a file".into(),
            });
        }
        match rule.id.as_ref().and_then(|id| index.get(id)).copied() {
            Some(i) => {
                let merged = merge_rule(&base.rules[i].item, rule);
                base.rules[i] = Sourced {
                    source: name.to_string(),
                    item: merged,
                };
            }
            None => {
                if let Some(id) = &rule.id {
                    index.insert(id.clone(), base.rules.len());
                }
                base.rules.push(Sourced {
                    source: name.to_string(),
                    item: rule,
                });
            }
        }
    }
    for a in raw.allowlist.into_iter().chain(raw.allowlists) {
        base.allowlists.push(Sourced {
            source: name.to_string(),
            item: a,
        });
    }
    Ok(base)
}

/// A rule redefined by an extending file: its fields win, missing ones come from the base,
/// and allowlists add up.
fn merge_rule(base: &RawRule, over: RawRule) -> RawRule {
    let mut allowlists: Vec<RawAllowlist> = base
        .allowlist
        .iter()
        .cloned()
        .chain(base.allowlists.clone().unwrap_or_default())
        .collect();
    allowlists.extend(over.allowlist);
    allowlists.extend(over.allowlists.unwrap_or_default());
    RawRule {
        id: over.id,
        description: over.description.or_else(|| base.description.clone()),
        regex: over.regex.or_else(|| base.regex.clone()),
        secret_group: over.secret_group.or(base.secret_group),
        entropy: over.entropy.or(base.entropy),
        keywords: over.keywords.or_else(|| base.keywords.clone()),
        path: over.path.or_else(|| base.path.clone()),
        tags: over.tags.or_else(|| base.tags.clone()),
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
    let compile_list = |list: &[String], field: &'static str| {
        list.iter()
            .map(|p| {
                compile_bytes_regex(p).map_err(|e| match rule_id {
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
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    if rule_id.is_some() && !raw.target_rules.is_empty() {
        return Err(err(
            "targetRules is only allowed in global allowlists".into()
        ));
    }
    Ok(Allowlist {
        require_all,
        commits: raw.commits.clone(),
        paths: compile_list(&raw.paths, "allowlist path")?,
        regex_target,
        regexes: compile_list(&raw.regexes, "allowlist regex")?,
        stopwords: raw.stopwords.iter().map(|s| s.to_lowercase()).collect(),
        target_rules: raw.target_rules.clone(),
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

fn compile(layered: Layered) -> Result<RuleSet, ConfigError> {
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
        if raw.required.is_some() {
            return Err(ConfigError::Unsupported {
                path: source.clone(),
                feature: format!("composite rule `{id}` ([[rules.required]])"),
            });
        }
        if raw.regex.is_none() && raw.path.is_none() {
            return Err(rule_err("needs a regex or a path".into()));
        }
        let regex = match &raw.regex {
            Some(p) => Some(compile_bytes_regex(p).map_err(|e| ConfigError::Regex {
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
            return Err(rule_err(format!("entropy {e} must be between 0 and 8")));
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
            .map(|a| compile_allowlist(a, &source, Some(&id)))
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
        });
    }
    let allowlists = layered
        .allowlists
        .iter()
        .map(|a| compile_allowlist(&a.item, &a.source, None))
        .collect::<Result<Vec<_>, _>>()?;
    for a in &allowlists {
        for t in &a.target_rules {
            if !rules.iter().any(|r| &r.id == t) {
                return Err(ConfigError::Allowlist {
                    path: layered
                        .allowlists
                        .first()
                        .map(|s| s.source.clone())
                        .unwrap_or_default(),
                    message: format!("targetRules names unknown rule `{t}`"),
                });
            }
        }
    }
    Ok(RuleSet { rules, allowlists })
}
