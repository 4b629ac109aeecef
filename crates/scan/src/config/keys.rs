//! The keys a rule file may hold, read the way gitleaks reads them.
//!
//! Why: gitleaks reads its TOML through viper, which matches keys in any case
//! (`secretgroup`, `SecretGroup` and `secretGroup` are one key) and ignores keys it does not
//! know. A file gitleaks loads must load here with the same meaning, so a key in another case
//! is read as the key it spells, and an unknown key is dropped with a warning that names the
//! file, where the key is, and the known key it most likely misspells, so a typo that
//! silently disables part of a rule is still seen.
//!
//! The walk works on the parsed [`toml::Table`], before the typed layer in `mod.rs` reads it.

use toml::{Table, Value};

/// What a key holds. Values are converted as gitleaks' decoder (mapstructure, weakly typed)
/// converts them: a number or boolean where a string is wanted is its text, a string where a
/// number or boolean is wanted is parsed, one value where a list is wanted is a list of one.
/// What does not convert is left for the typed layer to report.
#[derive(Clone, Copy)]
enum Shape {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// A boolean.
    Bool,
    /// A list of strings.
    List,
    /// A table with these keys.
    Table(&'static [Key]),
    /// An array of tables with these keys.
    Tables(&'static [Key]),
}

type Key = (&'static str, Shape);

const ALLOWLIST_KEYS: [Key; 7] = [
    ("description", Shape::Str),
    ("condition", Shape::Str),
    ("commits", Shape::List),
    ("paths", Shape::List),
    ("regexTarget", Shape::Str),
    ("regexes", Shape::List),
    ("stopwords", Shape::List),
];

/// A rule's allowlist: gitleaks has no `targetRules` there (it ignores one).
static RULE_ALLOWLIST: &[Key] = &ALLOWLIST_KEYS;

static GLOBAL_ALLOWLIST: &[Key] = &[
    ALLOWLIST_KEYS[0],
    ALLOWLIST_KEYS[1],
    ALLOWLIST_KEYS[2],
    ALLOWLIST_KEYS[3],
    ALLOWLIST_KEYS[4],
    ALLOWLIST_KEYS[5],
    ALLOWLIST_KEYS[6],
    ("targetRules", Shape::List),
];

static REQUIRED: &[Key] = &[
    ("id", Shape::Str),
    ("withinLines", Shape::Int),
    ("withinColumns", Shape::Int),
];

static RULE: &[Key] = &[
    ("id", Shape::Str),
    ("description", Shape::Str),
    ("regex", Shape::Str),
    ("secretGroup", Shape::Int),
    ("entropy", Shape::Float),
    ("keywords", Shape::List),
    ("path", Shape::Str),
    ("tags", Shape::List),
    ("allowlist", Shape::Table(RULE_ALLOWLIST)),
    ("allowlists", Shape::Tables(RULE_ALLOWLIST)),
    ("skipReport", Shape::Bool),
    ("required", Shape::Tables(REQUIRED)),
];

static EXTEND: &[Key] = &[
    ("useDefault", Shape::Bool),
    ("path", Shape::Str),
    ("url", Shape::Str),
    ("disabledRules", Shape::List),
];

static TOP: &[Key] = &[
    ("title", Shape::Str),
    ("description", Shape::Str),
    ("minVersion", Shape::Str),
    ("extend", Shape::Table(EXTEND)),
    ("rules", Shape::Tables(RULE)),
    ("allowlist", Shape::Table(GLOBAL_ALLOWLIST)),
    ("allowlists", Shape::Tables(GLOBAL_ALLOWLIST)),
];

/// What the walk changed and what it has to say.
#[derive(Debug, Default)]
pub(super) struct KeyReport {
    /// Unknown keys, dropped (printed always).
    pub warnings: Vec<String>,
    /// Keys read in another case (for `-v`).
    pub notes: Vec<String>,
    /// Whether the table was changed (a key renamed or dropped).
    pub changed: bool,
}

/// Renames keys written in another case to the spelling the typed layer reads, and drops
/// unknown keys, saying so; `name` is the file, for the messages.
pub(super) fn normalise(table: &mut Table, name: &str) -> KeyReport {
    let mut report = KeyReport::default();
    walk(table, TOP, "at the top level", name, &mut report);
    report
}

fn walk(table: &mut Table, keys: &[Key], place: &str, name: &str, report: &mut KeyReport) {
    let present: Vec<String> = table.keys().cloned().collect();
    for key in present {
        let known = keys
            .iter()
            .find(|(k, _)| *k == key)
            .or_else(|| keys.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)));
        let Some(&(spelled, shape)) = known else {
            table.remove(&key);
            report.changed = true;
            let hint = closest(&key, keys)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            report.warnings.push(format!(
                "{name}: unknown key `{key}` {place} is ignored (gitleaks ignores it too){hint}"
            ));
            continue;
        };
        if spelled != key {
            let value = table.remove(&key).unwrap_or(Value::Boolean(false));
            report.changed = true;
            if table.contains_key(spelled) {
                report.warnings.push(format!(
                    "{name}: key `{key}` {place} is ignored: `{spelled}` is given too (gitleaks \
                     reads keys in any case, so they are one key)"
                ));
                continue;
            }
            report.notes.push(format!(
                "{name}: key `{key}` {place} read as `{spelled}` (gitleaks reads keys in any case)"
            ));
            table.insert(spelled.to_string(), value);
        }
        let Some(value) = table.get_mut(spelled) else {
            continue;
        };
        descend(value, spelled, shape, place, name, report);
    }
}

fn descend(
    value: &mut Value,
    key: &str,
    shape: Shape,
    place: &str,
    name: &str,
    report: &mut KeyReport,
) {
    match (shape, value) {
        (Shape::Table(keys), Value::Table(t)) => {
            let inner = inner_place(key, None, place, t);
            walk(t, keys, &inner, name, report);
        }
        (Shape::Tables(keys), Value::Array(items)) => {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Table(t) = item {
                    let inner = inner_place(key, Some(i), place, t);
                    walk(t, keys, &inner, name, report);
                }
            }
        }
        (Shape::Table(_) | Shape::Tables(_), _) => {}
        (shape, value) => {
            if let Some(v) = weak(shape, value) {
                report.changed = true;
                report.notes.push(format!(
                    "{name}: `{key}` {place} read as {} (gitleaks converts it too)",
                    v.to_string().trim()
                ));
                *value = v;
            }
        }
    }
}

/// The value gitleaks' weakly typed decoding makes of `value` for `shape`, when it differs.
fn weak(shape: Shape, value: &Value) -> Option<Value> {
    let text = |v: &Value| match v {
        Value::Integer(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Boolean(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    };
    match (shape, value) {
        (Shape::Str, v) => text(v).map(Value::String),
        (Shape::Int, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::Integer),
        (Shape::Int, Value::Boolean(b)) => Some(Value::Integer(i64::from(*b))),
        (Shape::Float, Value::Integer(i)) => Some(Value::Float(*i as f64)),
        (Shape::Float, Value::String(s)) => s.trim().parse::<f64>().ok().map(Value::Float),
        (Shape::Float, Value::Boolean(b)) => Some(Value::Float(if *b { 1.0 } else { 0.0 })),
        (Shape::Bool, Value::String(s)) => match s.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(Value::Boolean(true)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Some(Value::Boolean(false)),
            _ => None,
        },
        (Shape::Bool, Value::Integer(i)) => Some(Value::Boolean(*i != 0)),
        (Shape::List, Value::Array(items)) => {
            let converted: Vec<Option<Value>> =
                items.iter().map(|i| text(i).map(Value::String)).collect();
            if converted.iter().all(Option::is_none) {
                return None;
            }
            Some(Value::Array(
                items
                    .iter()
                    .zip(converted)
                    .map(|(i, c)| c.unwrap_or_else(|| i.clone()))
                    .collect(),
            ))
        }
        (Shape::List, Value::String(_)) => Some(Value::Array(vec![value.clone()])),
        (Shape::List, v) => text(v).map(|t| Value::Array(vec![Value::String(t)])),
        _ => None,
    }
}

/// Where a nested table is, in words: `in rule `aws-key``, `in an allowlist of rule `x``.
fn inner_place(key: &str, index: Option<usize>, outer: &str, table: &Table) -> String {
    let owner = outer.strip_prefix("in ").unwrap_or(outer);
    match key {
        "rules" => match table.get("id").and_then(Value::as_str) {
            Some(id) => format!("in rule `{id}`"),
            None => format!("in [[rules]] number {}", index.unwrap_or(0) + 1),
        },
        "extend" => "in [extend]".to_string(),
        "allowlist" | "allowlists" if outer == "at the top level" => {
            "in a global allowlist".to_string()
        }
        "allowlist" | "allowlists" => format!("in an allowlist of {owner}"),
        "required" => format!("in a [[rules.required]] of {owner}"),
        _ => format!("in `{key}` of {owner}"),
    }
}

/// The known key `key` most likely misspells, if any is close.
fn closest(key: &str, keys: &[Key]) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    keys.iter()
        .map(|(k, _)| {
            (
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Table, KeyReport) {
        let mut t: Table = text.parse().unwrap();
        let r = normalise(&mut t, "f.toml");
        (t, r)
    }

    #[test]
    fn known_keys_are_left_alone() {
        let (_, r) = run(
            "title = 'x'\n[extend]\nuseDefault = true\n[[rules]]\nid = 'a'\nregex = 'b'\n\
             [[rules.allowlists]]\nstopwords = ['c']\n[[rules.required]]\nid = 'd'\n\
             withinLines = 1\n[[allowlists]]\ntargetRules = ['a']\n",
        );
        assert!(!r.changed);
        assert!(r.warnings.is_empty() && r.notes.is_empty(), "{r:?}");
    }

    #[test]
    fn unknown_keys_are_dropped_with_a_hint() {
        let (t, r) = run("[[rules]]\nid = 'a'\nregex = 'b'\nsecretGrup = 1\ncolour = 'red'\n");
        assert!(r.changed);
        let rule = t["rules"].as_array().unwrap()[0].as_table().unwrap();
        assert!(!rule.contains_key("secretGrup"));
        assert_eq!(
            r.warnings,
            vec![
                "f.toml: unknown key `colour` in rule `a` is ignored (gitleaks ignores it too)",
                "f.toml: unknown key `secretGrup` in rule `a` is ignored (gitleaks ignores it \
                 too); did you mean `secretGroup`?",
            ]
        );
    }

    #[test]
    fn keys_in_another_case_are_read_as_the_known_key() {
        let (t, r) = run("[EXTEND]\nusedefault = true\n[[rules]]\nID = 'a'\nRegex = 'b'\n");
        assert!(r.warnings.is_empty(), "{r:?}");
        assert_eq!(t["extend"]["useDefault"].as_bool(), Some(true));
        assert_eq!(t["rules"][0]["regex"].as_str(), Some("b"));
        assert_eq!(r.notes.len(), 4);
    }

    #[test]
    fn values_are_converted_as_gitleaks_converts_them() {
        let (t, r) = run(
            "[extend]\nuseDefault = \"true\"\n[[rules]]\nid = 7\nregex = 'b'\nentropy = \"3.5\"\n\
             secretGroup = \"1\"\nkeywords = \"acme_\"\nskipReport = 0\n",
        );
        assert!(r.changed && r.warnings.is_empty(), "{r:?}");
        assert_eq!(t["extend"]["useDefault"].as_bool(), Some(true));
        let rule = &t["rules"][0];
        assert_eq!(rule["id"].as_str(), Some("7"));
        assert_eq!(rule["entropy"].as_float(), Some(3.5));
        assert_eq!(rule["secretGroup"].as_integer(), Some(1));
        assert_eq!(rule["keywords"][0].as_str(), Some("acme_"));
        assert_eq!(rule["skipReport"].as_bool(), Some(false));
        // What does not convert is left as it is, for the typed layer's error.
        let (t, _) = run("[[rules]]\nid = 'a'\nentropy = \"high\"\n");
        assert_eq!(t["rules"][0]["entropy"].as_str(), Some("high"));
    }

    #[test]
    fn target_rules_in_a_rules_allowlist_is_unknown_as_in_gitleaks() {
        let (_, r) =
            run("[[rules]]\nid = 'a'\nregex = 'b'\n[[rules.allowlists]]\ntargetRules = ['a']\n");
        assert_eq!(
            r.warnings,
            vec![
                "f.toml: unknown key `targetRules` in an allowlist of rule `a` is ignored \
                 (gitleaks ignores it too)"
            ]
        );
    }
}
