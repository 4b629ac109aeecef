//! gitleaks TOML compatibility and rule-file errors.

use pretty_assertions::assert_eq;
use scan::{RuleSet, Scanner};

use super::{github_token, tok};

const CUSTOM: &str = r#"
title = "acme rules"
minVersion = "v8.25.0"

[extend]
useDefault = true
disabledRules = ["jwt"]

[[rules]]
id = "acme-token"
description = "ACME internal token"
regex = '''\b(acme_(?:live|test))_([a-z0-9]{24})\b'''
secretGroup = 2
entropy = 3.0
keywords = ["acme_"]
tags = ["internal"]
[[rules.allowlists]]
description = "fixtures"
regexTarget = "line"
regexes = ['''fixture''']
[[rules.allowlists]]
condition = "AND"
paths = ['''^legacy/''']
stopwords = ["0000"]

[[rules]]
id = "github-pat"
[rules.allowlist]
paths = ['''^docs/''']

[allowlist]
description = "global"
paths = ['''(^|/)testdata/''']
regexes = ['''IGNOREME''']
"#;

fn ids(scanner: &Scanner, path: &str, text: &str) -> Vec<String> {
    scanner
        .scan_bytes(path, text.as_bytes())
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

fn custom() -> Scanner {
    Scanner::from_rules(RuleSet::from_toml_str(CUSTOM, "acme.toml", None).unwrap())
}

#[test]
fn extend_use_default_layers_on_builtin_rules() {
    let set = RuleSet::from_toml_str(CUSTOM, "acme.toml", None).unwrap();
    let builtin = RuleSet::builtin().unwrap();
    // jwt disabled, acme-token added, github-pat redefined in place.
    assert_eq!(set.rules.len(), builtin.rules.len());
    assert!(set.rules.iter().any(|r| r.id == "acme-token"));
    assert!(!set.rules.iter().any(|r| r.id == "jwt"));
    let gh = set.rules.iter().find(|r| r.id == "github-pat").unwrap();
    assert!(gh.regex.is_some(), "regex kept from the built-in rule");
    assert_eq!(gh.source, "acme.toml");
}

#[test]
fn secret_group_and_entropy() {
    let s = custom();
    let found = s.scan_bytes("a.txt", b"key = acme_live_k3j9x0q2m5n8b1v4c7z6l2p9\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].secret.expose(), "k3j9x0q2m5n8b1v4c7z6l2p9");
    assert_eq!(found[0].column, 17);
    // Low entropy: below the rule's threshold.
    assert_eq!(
        ids(&s, "a.txt", "acme_live_aaaaaaaaaaaaaaaaaaaaaaaa"),
        Vec::<String>::new()
    );
}

#[test]
fn rule_allowlists_line_target_and_condition() {
    let s = custom();
    let line = "acme_live_k3j9x0q2m5n8b1v4c7z6l2p9";
    assert_eq!(
        ids(&s, "a.txt", &format!("{line} # fixture")),
        Vec::<String>::new()
    );
    // AND: the path alone does not allow it...
    assert_eq!(
        ids(&s, "legacy/a.txt", line),
        vec!["acme-token".to_string()]
    );
    // ...the path and the stopword together do.
    assert_eq!(
        ids(&s, "legacy/a.txt", "acme_live_k3j9x0q2m5n8b1v4c7z60000"),
        Vec::<String>::new()
    );
}

#[test]
fn older_single_allowlist_form_and_global_allowlist() {
    let s = custom();
    let gh = github_token();
    assert_eq!(ids(&s, "src/a.txt", &gh), vec!["github-pat".to_string()]);
    assert_eq!(ids(&s, "docs/a.md", &gh), Vec::<String>::new());
    assert_eq!(ids(&s, "x/testdata/a.txt", &gh), Vec::<String>::new());
    assert_eq!(
        ids(&s, "a.txt", "acme_live_k3j9x0q2m5n8b1v4c7z6l2p9 IGNOREME"),
        vec!["acme-token".to_string()],
        "global regexes match the secret, not the line"
    );
    assert_eq!(
        ids(
            &s,
            "a.txt",
            &tok(&["gh", "p_", "IGNOREMEq8Lr2Xv5Nw1Tb7Kd4Hs9Mf3Pc6Gy0"])
        ),
        Vec::<String>::new()
    );
}

#[test]
fn without_extend_the_file_replaces_builtin_rules() {
    let text = "[[rules]]\nid = \"only\"\nregex = '''only_[0-9]{6}'''\n";
    let s = Scanner::from_rules(RuleSet::from_toml_str(text, "only.toml", None).unwrap());
    assert_eq!(s.rules().len(), 1);
    assert_eq!(ids(&s, "a", &github_token()), Vec::<String>::new());
    assert_eq!(ids(&s, "a", "only_123456"), vec!["only".to_string()]);
}

#[test]
fn extend_path_is_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        "[[rules]]\nid = \"base\"\nregex = '''base_[0-9]{6}'''\nkeywords = [\"base_\"]\n",
    )
    .unwrap();
    let child = dir.path().join("child.toml");
    std::fs::write(
        &child,
        "[extend]\npath = \"base.toml\"\n[[rules]]\nid = \"child\"\nregex = '''child_[0-9]{6}'''\n",
    )
    .unwrap();
    let s = Scanner::from_config_file(&child).unwrap();
    assert_eq!(
        ids(&s, "a", "base_123456 child_654321"),
        vec!["base".to_string(), "child".to_string()]
    );
}

#[test]
fn path_only_rule_reports_the_file() {
    let text =
        "[[rules]]\nid = \"keystore\"\ndescription = \"Java keystore\"\npath = '''\\.jks$'''\n";
    let s = Scanner::from_rules(RuleSet::from_toml_str(text, "p.toml", None).unwrap());
    assert_eq!(
        ids(&s, "a/store.jks", "whatever"),
        vec!["keystore".to_string()]
    );
    assert_eq!(ids(&s, "a/store.txt", "whatever"), Vec::<String>::new());
}

fn err(text: &str) -> String {
    RuleSet::from_toml_str(text, "bad.toml", None)
        .unwrap_err()
        .to_string()
}

#[test]
fn invalid_regex_names_the_rule_and_file() {
    let e = err("[[rules]]\nid = \"broken\"\nregex = '''(unclosed'''\n");
    assert!(
        e.starts_with("rule `broken` in bad.toml: invalid regex: "),
        "{e}"
    );
}

#[test]
fn invalid_toml_names_the_file_and_line() {
    let e = err("[[rules]\nid = 1\n");
    assert!(e.starts_with("invalid rule file bad.toml: "), "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn an_unknown_key_is_a_warning_naming_it_and_the_file() {
    // gitleaks ignores keys it does not know; a file it loads loads here, and the typo is
    // still said (with the known key it is closest to).
    let text = "[[rules]]\nid = \"x\"\nregex = '''x_([0-9]{4})'''\nregexx = '''a'''\n\
                secretgroup = 1\nseverity = \"high\"\n";
    let set = RuleSet::from_toml_str(text, "bad.toml", None).unwrap();
    assert_eq!(
        set.warnings,
        vec![
            "bad.toml: unknown key `regexx` in rule `x` is ignored (gitleaks ignores it too); \
             did you mean `regex`?",
            "bad.toml: unknown key `severity` in rule `x` is ignored (gitleaks ignores it too)",
        ]
    );
    // `secretgroup` is gitleaks' `secretGroup` (viper reads keys in any case).
    assert_eq!(set.rule("x").unwrap().secret_group, Some(1));
    assert!(
        set.notes.iter().any(|n| n.contains("`secretgroup`")),
        "{:?}",
        set.notes
    );
    let s = Scanner::from_rules(set);
    assert_eq!(ids(&s, "a", "x_1234"), vec!["x".to_string()]);
    // A mistyped value is still an error, with its line.
    let e = err("[[rules]]\nid = \"x\"\nregex = 'a'\nentropy = \"high\"\n");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn structural_errors() {
    assert_eq!(
        err("[[rules]]\nid = \"x\"\ndescription = \"d\"\n"),
        "rule `x` in bad.toml: needs a regex or a path"
    );
    assert_eq!(
        err("[[rules]]\nid = \"x\"\nregex = '''a(b)'''\nsecretGroup = 2\n"),
        "rule `x` in bad.toml: secretGroup 2 but the regex has only 1 capture group(s)"
    );
    // A duplicate id is not an error: the later rule wins, as in gitleaks (see gitleaks.rs).
    assert_eq!(
        err(
            "[[rules]]\nid = \"x\"\nregex = 'a'\n[[rules.allowlists]]\ncondition = \"XOR\"\nregexes = ['b']\n"
        ),
        "rule `x` in bad.toml: allowlist: condition `XOR` must be OR or AND"
    );
    // `[extend] url` is ignored with a warning, as gitleaks ignores it (see gitleaks.rs).
}

#[test]
fn missing_file_is_named() {
    let e = Scanner::from_config_file(std::path::Path::new("/nonexistent/rules.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read rule file /nonexistent/rules.toml: "),
        "{e}"
    );
}

#[test]
fn global_allowlists_with_target_rules_and_match_target() {
    let text = r#"
[[rules]]
id = "alpha"
regex = '''alpha_([0-9a-f]{12})'''
keywords = ["alpha_"]

[[rules]]
id = "beta"
regex = '''beta_([0-9a-f]{12})'''
keywords = ["beta_"]

[[allowlists]]
description = "only for alpha, on the whole match"
targetRules = ["alpha"]
regexTarget = "match"
regexes = ['''^alpha_0{4}''']
"#;
    let s = Scanner::from_rules(RuleSet::from_toml_str(text, "t.toml", None).unwrap());
    assert_eq!(ids(&s, "a", "alpha_0000a1b2c3d4"), Vec::<String>::new());
    assert_eq!(
        ids(&s, "a", "alpha_1000a1b2c3d4"),
        vec!["alpha".to_string()]
    );
    // The allowlist does not apply to beta, even with the same shape.
    assert_eq!(ids(&s, "a", "beta_0000a1b2c3d4"), vec!["beta".to_string()]);
    let e = RuleSet::from_toml_str(
        "[[rules]]\nid = \"a\"\nregex = 'a'\n[[allowlists]]\ntargetRules = [\"nope\"]\nregexes = ['x']\n",
        "t.toml",
        None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "global allowlist in t.toml: targetRules names unknown rule `nope`"
    );
}

#[test]
fn values_gitleaks_converts_load_with_the_same_meaning() {
    // gitleaks decodes rule files weakly typed: numbers written as strings, one keyword for a
    // list. Such a file loads here too, meaning the same.
    let text = "[[rules]]\nid = \"x\"\nregex = '''x_([0-9a-z]{12})'''\nsecretGroup = \"1\"\n\
                entropy = \"2.5\"\nkeywords = \"x_\"\n";
    let set = RuleSet::from_toml_str(text, "weak.toml", None).unwrap();
    let rule = set.rule("x").unwrap();
    assert_eq!(rule.secret_group, Some(1));
    assert_eq!(rule.entropy, Some(2.5));
    assert_eq!(rule.keywords, vec!["x_".to_string()]);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let s = Scanner::from_rules(set);
    assert_eq!(ids(&s, "a", "x_k3j9x0q2m5n8"), vec!["x".to_string()]);
    assert_eq!(ids(&s, "a", "x_aaaaaaaaaaaa"), Vec::<String>::new());
}

/// gitleaks 8.30 refuses a rule file whose allowlist tables are ambiguous (its
/// `testdata/config/invalid/allowlist_*_empty.toml` and `*_old_and_new.toml`): an empty
/// allowlist (no commits, paths, regexes or stopwords: did its author mean "allow nothing" or
/// "allow everything"?) and the older single `[allowlist]` next to the newer `[[allowlists]]`.
/// A file whose meaning is unclear does not load here either: the error names the file, the
/// table and what to do.
#[test]
fn ambiguous_allowlist_tables_are_refused_as_gitleaks_refuses_them() {
    assert_eq!(
        err("[[rules]]\nid = \"x\"\nregex = 'x[0-9]+'\n\n[[allowlists]]\n"),
        "global allowlist in bad.toml: [[allowlists]] #1 is empty; give it at least one of \
         commits, paths, regexes or stopwords, or remove it (gitleaks refuses it too)"
    );
    assert_eq!(
        err("[[rules]]\nid = \"x\"\nregex = 'x[0-9]+'\n\n[allowlist]\ndescription = \"d\"\n"),
        "global allowlist in bad.toml: [allowlist] is empty; give it at least one of commits, \
         paths, regexes or stopwords, or remove it (gitleaks refuses it too)"
    );
    assert_eq!(
        err(
            "[[rules]]\nid = \"example\"\nregex = 'example[0-9]+'\n[[rules.allowlists]]\n\
             regexes = ['1']\n[[rules.allowlists]]\ncondition = \"AND\"\n"
        ),
        "rule `example` in bad.toml: [[rules.allowlists]] #2 is empty; give it at least one of \
         commits, paths, regexes or stopwords, or remove it (gitleaks refuses it too)"
    );
    assert_eq!(
        err(
            "[[rules]]\nid = \"x\"\nregex = 'x[0-9]+'\n[allowlist]\nregexes = ['123']\n\
             [[allowlists]]\nregexes = ['456']\n"
        ),
        "global allowlist in bad.toml: both the older [allowlist] table and [[allowlists]] \
         tables; move the entries of [allowlist] into an [[allowlists]] table (gitleaks \
         refuses the two together too)"
    );
    assert_eq!(
        err(
            "[[rules]]\nid = \"example\"\nregex = 'example[0-9]+'\n[rules.allowlist]\n\
             regexes = ['123']\n[[rules.allowlists]]\nregexes = ['456']\n"
        ),
        "rule `example` in bad.toml: both the older [rules.allowlist] table and \
         [[rules.allowlists]] tables; move the entries of [rules.allowlist] into a \
         [[rules.allowlists]] table (gitleaks refuses the two together too)"
    );
    // An override of a default rule is checked the same way.
    let e = err(
        "[extend]\nuseDefault = true\n[[rules]]\nid = \"generic-api-key\"\n\
                 [[rules.allowlists]]\ndescription = \"nothing\"\n",
    );
    assert!(
        e.starts_with("rule `generic-api-key` in bad.toml: [[rules.allowlists]] #1 is empty"),
        "{e}"
    );
    // Each form alone, with something in it, still loads (see the tests above).
    RuleSet::from_toml_str(
        "[[rules]]\nid = \"x\"\nregex = 'x[0-9]+'\n[rules.allowlist]\nstopwords = ['x1']\n\
         [allowlist]\ncommits = ['abc']\n",
        "ok.toml",
        None,
    )
    .unwrap();
}
