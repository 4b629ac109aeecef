//! Every built-in rule against its positive and negative cases (`rules/builtin-cases.toml`).

use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use serde::Deserialize;

use crate::{RuleSet, Scanner};

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    rule: String,
    positive: Vec<String>,
    negative: Vec<String>,
    /// The cases are file paths (a rule that matches a path alone), scanned with content no
    /// rule matches.
    #[serde(default)]
    by_path: bool,
}

fn cases() -> Vec<Case> {
    let cases: Cases = toml::from_str(include_str!("../rules/builtin-cases.toml")).unwrap();
    cases.case
}

fn rule_ids_found(scanner: &Scanner, case: &Case, text: &str) -> BTreeSet<String> {
    let text = text.replace("<>", "");
    let (path, data) = if case.by_path {
        (text.as_str(), &b"\x30\x82\x0a\x3b\x02\x01\x03"[..])
    } else {
        ("case.txt", text.as_bytes())
    };
    scanner
        .scan_bytes(path, data)
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

#[test]
fn every_builtin_rule_has_positive_and_negative_cases() {
    let set = RuleSet::builtin().unwrap();
    let rules: BTreeSet<String> = set.rules.iter().map(|r| r.id.clone()).collect();
    let covered: BTreeSet<String> = cases()
        .iter()
        .filter(|c| !c.positive.is_empty() && !c.negative.is_empty())
        .map(|c| c.rule.clone())
        .collect();
    assert_eq!(rules, covered);
}

#[test]
fn builtin_positive_cases_are_found() {
    let scanner = Scanner::builtin().unwrap();
    let mut missed = Vec::new();
    for case in cases() {
        for p in &case.positive {
            if !rule_ids_found(&scanner, &case, p).contains(&case.rule) {
                missed.push(format!("{}: {p}", case.rule));
            }
        }
    }
    assert_eq!(missed, Vec::<String>::new());
}

#[test]
fn builtin_negative_cases_are_not_found() {
    let scanner = Scanner::builtin().unwrap();
    let mut flagged = Vec::new();
    for case in cases() {
        for n in &case.negative {
            if rule_ids_found(&scanner, &case, n).contains(&case.rule) {
                flagged.push(format!("{}: {n}", case.rule));
            }
        }
    }
    assert_eq!(flagged, Vec::<String>::new());
}

#[test]
fn builtin_regexes_compile_without_unicode() {
    // Unicode mode keeps the regex crate off its fast path; every built-in rule must do
    // without it.
    let set = RuleSet::builtin().unwrap();
    let mut unicode = Vec::new();
    for r in &set.rules {
        if let Some(re) = &r.regex {
            let ok = regex::bytes::RegexBuilder::new(re.as_str())
                .unicode(false)
                .build()
                .is_ok();
            if !ok {
                unicode.push(r.id.clone());
            }
        }
    }
    assert_eq!(unicode, Vec::<String>::new());
}

#[test]
fn builtin_regexes_are_compiled_on_first_use_and_each_compiles() {
    let scanner = Scanner::builtin().unwrap();
    let compiled = |s: &Scanner| -> BTreeSet<String> {
        s.rules()
            .iter()
            .filter(|r| r.regex.as_ref().is_some_and(|p| p.is_compiled()))
            .map(|r| r.id.clone())
            .collect()
    };
    // None at load (a rule's secretGroup is checked against its pattern's syntax).
    assert_eq!(compiled(&scanner).len(), 0, "{:?}", compiled(&scanner));
    let gh = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5");
    assert_eq!(scanner.scan_bytes("t", gh.as_bytes()).len(), 1);
    let after = compiled(&scanner);
    assert!(after.contains("github-pat"), "{after:?}");
    assert!(!after.contains("airtable-token"), "{after:?}");
    // Every deferred pattern compiles, the rules' and their allowlists' (what
    // `RulePattern::regex` relies on).
    let set = RuleSet::builtin().unwrap();
    let deferred: Vec<&crate::RulePattern> = set.patterns().collect();
    assert!(deferred.len() > set.rules.len(), "{}", deferred.len());
    for p in &deferred {
        assert!(!p.as_str().is_empty() && p.regex().captures_len() >= 1);
    }
    assert!(deferred.iter().all(|p| p.is_compiled()));
}

#[test]
fn a_rule_file_regex_is_compiled_at_load_and_a_bad_one_is_an_error_there() {
    let set = RuleSet::from_toml_str(
        "[[rules]]\nid = \"mine\"\nregex = '''acme_[a-z0-9]{32}'''\n",
        "mine.toml",
        None,
    )
    .unwrap();
    assert!(set.rules[0].regex.as_ref().is_some_and(|p| p.is_compiled()));
    let err = RuleSet::from_toml_str(
        "[[rules]]\nid = \"bad\"\nregex = '''acme_[a-z'''\n",
        "bad.toml",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.toml") && err.contains("`bad`"), "{err}");
}

#[test]
fn secret_is_the_capture_group() {
    let scanner = Scanner::builtin().unwrap();
    let token = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5");
    let found = scanner.scan_bytes("x.env", format!("X=1\nTOKEN=\"{token}\" # ci\n").as_bytes());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].secret.expose(), token);
    assert_eq!((found[0].line, found[0].column), (2, 8));
    assert_eq!(found[0].fingerprint, "x.env:github-pat:2");
}

#[test]
fn scanner_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let scanner = Scanner::builtin().unwrap();
    shareable(&scanner);
    let gh = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5");
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| scanner.scan_bytes("t", gh.as_bytes()).len()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(counts, vec![1, 1, 1, 1]);
}

#[test]
fn no_builtin_allowlist_judges_the_whole_line() {
    // An allowlist on the line (gitleaks' `regexTarget = "line"`) allows every finding of its
    // rule on that line: the context of one value would hide another value's secret next to
    // it (a JSON body is one line to DLP). The built-in rules judge the match or the secret.
    let set = RuleSet::builtin().unwrap();
    let on_line: Vec<String> = set
        .rules
        .iter()
        .filter(|r| {
            r.allowlists
                .iter()
                .any(|a| a.regex_target == crate::config::RegexTarget::Line)
        })
        .map(|r| r.id.clone())
        .chain(
            set.allowlists
                .iter()
                .filter(|a| a.regex_target == crate::config::RegexTarget::Line)
                .map(|_| "[[allowlists]]".to_string()),
        )
        .collect();
    assert_eq!(on_line, Vec::<String>::new());
}

/// Every rule's findings on `text` (a line of a YAML or source file): rule id and secret.
fn findings(scanner: &Scanner, text: &str) -> Vec<(String, String)> {
    scanner
        .scan_bytes("settings.yaml", text.replace("<>", "").as_bytes())
        .into_iter()
        .map(|f| (f.rule_id, f.secret.expose().to_string()))
        .collect()
}

#[test]
fn a_value_that_names_where_secrets_are_stored_is_not_a_secret() {
    // gitleaks' false positive (its generic.go, from an Azure operator's manifest): the value
    // of `keyVaultToStoreSecrets` is the name of a key vault. As a class: a name whose head is a
    // store of secrets (a vault, a secret store, a bucket), optionally followed by what it is
    // for (`ToStoreSecrets`, `ForKeys`), names a place, and its value is that place's name.
    let scanner = Scanner::builtin().unwrap();
    for line in [
        "  keyVaultToStoreSecrets: cmp2-qat-1208358310",
        "  keyVaultForSecrets: kv-prod-westeu-7731920",
        "  key_vault: kv-prod-westeu-7731920",
        "  secretsVault: acme-vault-9f8e7d6c5b",
        "  secret_store: acme-secrets-ps9x7w2k",
        "  SECRETS_BUCKET=acme-secrets-prod-4821",
        "  credentialStoreForTokens: acme-credstore-3k9x",
    ] {
        assert_eq!(findings(&scanner, line), Vec::new(), "{line}");
    }
    // What the store holds, or a credential to reach it, is still reported: the name's head
    // is then the secret (`…ClientSecret`, `…Token`, `…Key`, `…Password`).
    for (line, secret) in [
        (
            "  keyVaultClientSecret: Hq4<>vNz8Lk2Wr7Xp3Ty9Mc5Bd1Qe6",
            "Hq4vNz8Lk2Wr7Xp3Ty9Mc5Bd1Qe6",
        ),
        (
            "  keyVaultClientSecret = \"Rt6<>mKq2Zx9Lw4Vn7Yp3HsJ8dF\"",
            "Rt6mKq2Zx9Lw4Vn7Yp3HsJ8dF",
        ),
        (
            "  vault_token: Wf3kQ9z<>Lm2Xv7Rt4Np8Ys1Bd6Hc",
            "Wf3kQ9zLm2Xv7Rt4Np8Ys1Bd6Hc",
        ),
        (
            "  SECRET_STORE_PASSWORD=\"Tq7vLm2<>Xk9Rp4sWz8Hn3Yd\"",
            "Tq7vLm2Xk9Rp4sWz8Hn3Yd",
        ),
        (
            "  secretsBucketAccessKey: Zx9<>Lw4Vn7Yp3HsJ8dFq2Mk5",
            "Zx9Lw4Vn7Yp3HsJ8dFq2Mk5",
        ),
    ] {
        let found = findings(&scanner, line);
        assert!(found.iter().any(|(_, s)| s == secret), "{line}: {found:?}");
    }
}
