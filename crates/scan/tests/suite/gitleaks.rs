//! Drop-in compatibility with gitleaks (issue 23): configs that name gitleaks' default rules,
//! `[extend] path` lookup, encoded secrets decoded in place, duplicate ids, composite rules,
//! line numbers and fingerprints, archives, gitleaks' JSON report. All test data is written
//! here (no file of gitleaks is copied).

use std::path::Path;

use base64::Engine as _;
use pretty_assertions::assert_eq;
use scan::{Baseline, Format, RuleSet, ScanOptions, Scanner};

use super::{aws_key, github_token, tok};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// (line, rule) of each finding.
fn lines(findings: &[scan::Finding]) -> Vec<(u32, String)> {
    findings
        .iter()
        .map(|f| (f.line, f.rule_id.clone()))
        .collect()
}

fn generic_secret_line() -> String {
    // Our generic-secret rule: a name that says secret and a random value.
    format!(
        "client_secret = \"{}\"\n",
        tok(&["q7Vx", "2LmP9", "rT4kWz8", "Nc3Yb6Hd"])
    )
}

// ------------------------------------------------------------------ 1. gitleaks' default ids

const EXTENDS_GITLEAKS_IDS: &str = r#"
[extend]
useDefault = true
disabledRules = ["slack-bot-token"]

# gitleaks issue #1844's pattern: an allowlist on a default rule, by gitleaks' id.
[[rules]]
id = "generic-api-key"
[[rules.allowlists]]
paths = ['''^fixtures/''']

# A default rule of gitleaks that no built-in rule covers (a client id, not a credential): a
# warning, not an error.
[[rules]]
id = "adobe-client-id"
[[rules.allowlists]]
regexes = ['''.*''']

# Not a rule anywhere: a warning too.
[[rules]]
id = "acme-internal"
[[rules.allowlists]]
regexes = ['''.*''']

[[allowlists]]
targetRules = ["github-pat"]
paths = ['''^vendor/''']
"#;

#[test]
fn overrides_of_gitleaks_default_ids_load_and_apply_to_our_rules() {
    let set = RuleSet::from_toml_str(EXTENDS_GITLEAKS_IDS, "g.toml", None).unwrap();
    assert!(
        set.rule("slack-bot-token").is_none(),
        "disabled by its gitleaks id"
    );
    assert!(set.rule("adobe-client-id").is_none());
    assert!(set.rule("acme-internal").is_none());
    assert_eq!(set.warnings.len(), 2, "{:?}", set.warnings);
    assert!(
        set.warnings[0].contains("`adobe-client-id`"),
        "{:?}",
        set.warnings
    );
    assert!(
        set.warnings[1].contains("`acme-internal`"),
        "{:?}",
        set.warnings
    );
    assert!(
        set.notes
            .iter()
            .any(|n| n.contains("generic-api-key") && n.contains("generic-secret")),
        "{:?}",
        set.notes
    );
    let s = Scanner::from_rules(set);
    let line = generic_secret_line();
    assert_eq!(
        lines(&s.scan_bytes("src/a.py", line.as_bytes())),
        vec![(1, "generic-secret".to_string())]
    );
    assert_eq!(
        lines(&s.scan_bytes("fixtures/a.py", line.as_bytes())),
        vec![]
    );
    let gh = github_token();
    assert_eq!(lines(&s.scan_bytes("vendor/x", gh.as_bytes())), vec![]);
    assert_eq!(lines(&s.scan_bytes("src/x", gh.as_bytes())).len(), 1);
}

#[test]
fn a_gitleaks_default_id_redefined_with_a_regex_replaces_our_rules_for_it() {
    let toml = r#"
[extend]
useDefault = true
[[rules]]
id = "github-pat"
regex = '''ghp_[A-Za-z0-9]{36}'''
keywords = ["ghp_"]
[[rules]]
id = "gitlab-ptt"
regex = '''glptt-[0-9a-f]{40}'''
"#;
    let set = RuleSet::from_toml_str(toml, "g.toml", None).unwrap();
    // github-pat is our id too: merged in place. gitlab-ptt maps to our gitlab-token, which
    // steps aside for the user's definition.
    assert!(set.rule("github-pat").is_some());
    assert!(set.rule("gitlab-ptt").is_some());
    assert!(set.rule("gitlab-token").is_none());
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn an_unknown_override_without_a_base_is_still_an_error() {
    let err = RuleSet::from_toml_str("[[rules]]\nid = \"x\"\n", "g.toml", None).unwrap_err();
    assert!(err.to_string().contains("needs a regex or a path"), "{err}");
}

// ------------------------------------------------------------------ 2. [extend] path

#[test]
fn extend_path_is_read_from_the_working_directory_then_the_files_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let conf = cwd.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let base = |id: &str| format!("[[rules]]\nid = \"{id}\"\nregex = '''{id}-[0-9]{{6}}'''\n");
    // Only beside the extending file.
    std::fs::write(conf.join("base.toml"), base("beside")).unwrap();
    std::fs::write(conf.join("top.toml"), "[extend]\npath = \"base.toml\"\n").unwrap();
    let set = RuleSet::from_file_in(&conf.join("top.toml"), Some(cwd.path())).unwrap();
    assert!(set.rule("beside").is_some());
    assert!(
        set.notes
            .iter()
            .any(|n| n.contains("rule file's directory")),
        "{:?}",
        set.notes
    );
    // In the working directory too (gitleaks' reading): that one wins.
    std::fs::write(cwd.path().join("base.toml"), base("fromcwd")).unwrap();
    let set = RuleSet::from_file_in(&conf.join("top.toml"), Some(cwd.path())).unwrap();
    assert!(set.rule("fromcwd").is_some());
    assert!(set.rule("beside").is_none());
    assert!(
        set.notes.iter().any(|n| n.contains("working directory")),
        "{:?}",
        set.notes
    );
    // gitleaks' own layout: a path relative to the working directory with directories in it.
    std::fs::write(
        conf.join("deep.toml"),
        "[extend]\npath = \"conf/base.toml\"\n",
    )
    .unwrap();
    let set = RuleSet::from_file_in(&conf.join("deep.toml"), Some(cwd.path())).unwrap();
    assert!(set.rule("beside").is_some());
    // Neither: the error names the file looked for.
    std::fs::write(conf.join("bad.toml"), "[extend]\npath = \"nope.toml\"\n").unwrap();
    let err = RuleSet::from_file_in(&conf.join("bad.toml"), Some(cwd.path())).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn extend_chains_stop_where_gitleaks_stops_and_odd_entropy_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rule = |id: &str| format!("[[rules]]\nid = \"{id}\"\nregex = '''{id}-[0-9]{{6}}'''\n");
    std::fs::write(
        d.join("top.toml"),
        format!("[extend]\npath = \"one.toml\"\n{}", rule("top")),
    )
    .unwrap();
    std::fs::write(
        d.join("one.toml"),
        format!("[extend]\npath = \"two.toml\"\n{}", rule("one")),
    )
    .unwrap();
    // two.toml's own [extend] names a file that does not exist: gitleaks never reads it.
    std::fs::write(
        d.join("two.toml"),
        format!("[extend]\npath = \"missing.toml\"\n{}", rule("two")),
    )
    .unwrap();
    let set = RuleSet::from_file_in(&d.join("top.toml"), None).unwrap();
    let mut ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["one", "top", "two"]);
    assert!(
        set.warnings[0].contains("[extend] is ignored"),
        "{:?}",
        set.warnings
    );

    let set = RuleSet::from_toml_str(
        "[[rules]]\nid = \"a\"\nregex = 'a-[0-9]{8}'\nentropy = 999\n",
        "g.toml",
        None,
    )
    .unwrap();
    assert!(
        set.warnings[0].contains("never reports"),
        "{:?}",
        set.warnings
    );
    assert_eq!(
        Scanner::from_rules(set).scan_bytes("a", b"a-12345678\n"),
        vec![]
    );
}

#[test]
fn extend_url_is_ignored_with_a_warning_as_gitleaks_ignores_it() {
    let set = RuleSet::from_toml_str(
        "[extend]\nurl = \"https://example.invalid/rules.toml\"\n[[rules]]\nid = \"a\"\nregex = 'a-[0-9]{8}'\n",
        "g.toml",
        None,
    )
    .unwrap();
    assert_eq!(set.rules.len(), 1);
    assert!(
        set.warnings[0].contains("[extend] url"),
        "{:?}",
        set.warnings
    );
}

// ------------------------------------------------------------------ 3. encoded secrets

const ENCODED_RULES: &str = r#"
[[rules]]
id = "small-secret"
regex = '''\bsmall-secret\b'''

[[rules]]
id = "overlapping"
regex = '''secret=(decoded-secret-value\w*)'''
secretGroup = 1

[[rules]]
id = "aws-key"
regex = '''\b((?:AKIA|ASIA)[A-Z0-9]{16})\b'''
keywords = ["akia", "asia"]

[[rules]]
id = "pem"
regex = '''-----BEGIN[ A-Z]{0,40}PRIVATE KEY-----[\s\S]*?-----END[ A-Z]{0,40}PRIVATE KEY-----'''
keywords = ["-----begin"]
"#;

fn hexs(s: &str) -> String {
    hex::encode(s)
}

fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn encoded_secrets_are_decoded_in_place_and_reported_where_they_sit() {
    let s = Scanner::from_rules(RuleSet::from_toml_str(ENCODED_RULES, "e.toml", None).unwrap());
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA\n-----END PRIVATE KEY-----\n";
    let text = [
        "# plain lines first".to_string(),
        // 2: a small secret, base64
        b64("small-secret"),
        // 3: the rule's context (`secret=`) is outside the encoded run
        format!("secret={}", b64("decoded-secret-value00")),
        // 4: the same, encoded twice
        b64(&format!("secret={}", b64("decoded-secret-value01"))),
        // 5: hex
        format!("secret={}", hexs("decoded-secret-valueHEX")),
        // 6: percent, partly encoded
        format!("secret=decoded-{}-valuev2", pct("secret")),
        // 7: a PEM key, base64 in a YAML value
        format!("private_key: '{}'", b64(pem)),
        // 8: an AWS key as \u escapes
        format!(
            "key = \"{}\"",
            aws_key()
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect::<String>()
        ),
        // 9: percent inside base64
        {
            let e = b64("secret=decoded-secret-valuev3");
            format!("{}%{:02X}{}", &e[..6], e.as_bytes()[6], &e[7..])
        },
        // 10: a base64 run cut in two by an escape waits until the escape is decoded (the
        // halves are not decoded on their own), then decodes whole, twice
        {
            let e = b64(&format!("secret={}", b64("decoded-secret-valuev4")));
            format!("{}%{:02X}{}", &e[..18], e.as_bytes()[18], &e[19..])
        },
        String::new(),
    ]
    .join("\n");
    let found = s.scan_bytes("enc.txt", text.as_bytes());
    assert_eq!(
        lines(&found),
        vec![
            (2, "small-secret".to_string()),
            (3, "overlapping".to_string()),
            (4, "overlapping".to_string()),
            (5, "overlapping".to_string()),
            (6, "overlapping".to_string()),
            (7, "pem".to_string()),
            (8, "aws-key".to_string()),
            (9, "overlapping".to_string()),
            (10, "overlapping".to_string()),
        ],
        "{:?}",
        lines(&found)
    );
    // The match starts before the encoded run on line 3 (`secret=` is plain text): it is
    // reported where the match starts, as gitleaks maps it back.
    assert_eq!(found[1].secret.expose(), "decoded-secret-value00");
    // Decoding switched off: nothing but the plain text.
    let off = Scanner::from_rules(RuleSet::from_toml_str(ENCODED_RULES, "e.toml", None).unwrap())
        .with_options(ScanOptions {
            max_decode_depth: 0,
            ..ScanOptions::default()
        });
    assert_eq!(lines(&off.scan_bytes("enc.txt", text.as_bytes())), vec![]);
    // One pass: the doubly encoded line needs two.
    let one = Scanner::from_rules(RuleSet::from_toml_str(ENCODED_RULES, "e.toml", None).unwrap())
        .with_options(ScanOptions {
            max_decode_depth: 1,
            ..ScanOptions::default()
        });
    let found = lines(&one.scan_bytes("enc.txt", text.as_bytes()));
    assert!(
        !found.contains(&(4, "overlapping".to_string())),
        "{found:?}"
    );
    assert!(found.contains(&(3, "overlapping".to_string())), "{found:?}");
}

/// One secret, one finding: a secret matched as written and again in its decoded copy (each
/// encoding, nested, a Basic credential decoded in place) is reported once, as written;
/// what only the decoded copy shows is still reported, two secrets decoded from one run are
/// two findings, and a specific rule's finding in the decoded copy of a generic one's secret
/// is kept (it says what the secret is).
#[test]
fn a_secret_found_as_written_is_not_reported_again_from_its_decoded_copy() {
    let s = Scanner::builtin().unwrap();
    let r = tok(&["Xq7v", "R2kLp9", "WzT4mB8nJc"]);
    let r2 = tok(&["Hd6s", "Pq1Lm8", "Vz3Kx7Wr"]);
    let unicode: String = r.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let text = [
        format!("api_key = \"{}\"", b64(&r)),
        format!("token = \"{}\"", hexs(&r)),
        format!("client_secret = \"{}\"", pct(&r)),
        format!("auth_token = \"{}\"", b64(&b64(&r))),
        format!("password = \"{unicode}\""),
        "curl -X POST https://api.example.net/v1/jobs \\".to_string(),
        format!(
            "  -H \"Authorization: Basic {}\"",
            b64(&tok(&["f00dfeed", "1234abcd:beefcafe", "5678dcba"]))
        ),
        format!(
            "blob: {}",
            b64(&format!("{{\"api_key\":\"{r}\",\"token\":\"{r2}\"}}"))
        ),
        format!("secret_key = \"{}\"", b64(&aws_key())),
        String::new(),
    ]
    .join("\n");
    let found: Vec<(u32, String, String)> = s
        .scan_bytes("enc.txt", text.as_bytes())
        .into_iter()
        .map(|f| (f.line, f.rule_id, f.secret.expose().to_string()))
        .collect();
    let row = |line: u32, rule: &str, secret: &str| (line, rule.to_string(), secret.to_string());
    assert_eq!(
        found,
        vec![
            row(1, "generic-secret", &b64(&r)),
            row(2, "generic-secret", &hexs(&r)),
            // (the written value, all escapes, is not random enough; its decoded copy is)
            row(3, "generic-secret", &r),
            row(4, "generic-secret", &b64(&b64(&r))),
            row(5, "generic-password", &r),
            row(
                6,
                "generic-curl-header-credential",
                &b64(&tok(&["f00dfeed", "1234abcd:beefcafe", "5678dcba"]))
            ),
            row(8, "generic-secret", &r),
            row(8, "generic-secret", &r2),
            row(9, "generic-secret", &b64(&aws_key())),
            row(9, "aws-access-key-id", &aws_key()),
        ],
        "{found:#?}"
    );
}

// ------------------------------------------------------------------ 6. duplicate ids, composite

#[test]
fn a_duplicate_rule_id_is_replaced_by_the_later_definition() {
    let toml = r#"
[[rules]]
id = "token"
regex = '''first-[0-9]{6}'''
[[rules]]
id = "token"
regex = '''second-[0-9]{6}'''
"#;
    let set = RuleSet::from_toml_str(toml, "d.toml", None).unwrap();
    assert_eq!(set.rules.len(), 1);
    assert!(set.notes[0].contains("defined twice"), "{:?}", set.notes);
    let s = Scanner::from_rules(set);
    assert_eq!(lines(&s.scan_bytes("a", b"first-123456\n")), vec![]);
    assert_eq!(
        lines(&s.scan_bytes("a", b"second-123456\n")),
        vec![(1, "token".to_string())]
    );
}

const COMPOSITE: &str = r#"
[[rules]]
id = "password"
regex = '''password\s*=\s*"([^"]+)"'''
[[rules.required]]
id = "username"
withinLines = 2
[[rules.required]]
id = "host"

[[rules]]
id = "username"
regex = '''username\s*=\s*"([^"]+)"'''
skipReport = true

[[rules]]
id = "host"
regex = '''host\s*=\s*"([^"]+)"'''
skipReport = true
"#;

#[test]
fn composite_rules_need_their_required_rules_nearby() {
    let s = Scanner::from_rules(RuleSet::from_toml_str(COMPOSITE, "c.toml", None).unwrap());
    let near = "host = \"db\"\n\n\n\n\nusername = \"admin\"\n\npassword = \"s3cr3t-v4lue\"\n";
    assert_eq!(
        lines(&s.scan_bytes("a", near.as_bytes())),
        vec![(8, "password".to_string())]
    );
    // The username is 4 lines away: too far.
    let far = "host = \"db\"\nusername = \"admin\"\n\n\n\npassword = \"s3cr3t-v4lue\"\n";
    assert_eq!(lines(&s.scan_bytes("a", far.as_bytes())), vec![]);
    // No host anywhere.
    let no_host = "username = \"admin\"\npassword = \"s3cr3t-v4lue\"\n";
    assert_eq!(lines(&s.scan_bytes("a", no_host.as_bytes())), vec![]);
    // withinColumns
    let cols = RuleSet::from_toml_str(
        &COMPOSITE.replace("withinLines = 2", "withinLines = 0\nwithinColumns = 3"),
        "c.toml",
        None,
    )
    .unwrap();
    let s = Scanner::from_rules(cols);
    let same_line = "host = \"h\"\nusername = \"a\"; password = \"s3cr3t-v4lue\"\n";
    assert_eq!(lines(&s.scan_bytes("a", same_line.as_bytes())), vec![]);
    let aligned = "host = \"h\"\nusername = \"a\"; password = \"s3cr3t-v4lue\"; username = \"b\"\n";
    assert_eq!(lines(&s.scan_bytes("a", aligned.as_bytes())), vec![]);
    let err = RuleSet::from_toml_str(
        "[[rules]]\nid = \"a\"\nregex = 'a'\n[[rules.required]]\nid = \"missing\"\n",
        "c.toml",
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("`missing`"), "{err}");
}

// ------------------------------------------------------------------ 7. lines, fingerprints

#[test]
fn multi_line_matches_are_on_their_first_line_and_path_rules_on_line_zero() {
    let toml = r#"
[[rules]]
id = "pem"
regex = '''-----BEGIN PRIVATE KEY-----\n([A-Za-z0-9+/=\n]{20,})-----END PRIVATE KEY-----'''
[[rules]]
id = "leading-newline"
regex = '''\n(token-[0-9]{6})'''
[[rules]]
id = "keystore"
path = '''\.jks$'''
"#;
    let s = Scanner::from_rules(RuleSet::from_toml_str(toml, "l.toml", None).unwrap());
    let text = "a\n-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASC\nAT4wggE6AgEAAkEA\n-----END PRIVATE KEY-----\nx\ntoken-123456\n";
    let found = s.scan_bytes("k.jks", text.as_bytes());
    let mut got: Vec<(u32, String, String)> = found
        .iter()
        .map(|f| (f.line, f.rule_id.clone(), f.fingerprint.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, "keystore".into(), "k.jks:keystore:0".into()),
            (2, "pem".into(), "k.jks:pem:2".into()),
            (
                7,
                "leading-newline".into(),
                "k.jks:leading-newline:7".into()
            ),
        ]
    );
    let pem = found.iter().find(|f| f.rule_id == "pem").unwrap();
    assert_eq!((pem.span.end_line, pem.span.start_column), (5, 1));
}

/// A curl command continued over lines with its credential header on a later line is reported
/// where `curl` starts, as gitleaks reports it (its match starts there), whatever the header's
/// scheme: so a gitleaks baseline or `.gitleaksignore` entry for it carries over. A token of a
/// kind with its own rule (a JWT, an OpenAI key) is reported by that rule on its own line (gitleaks
/// reports it there too, and the curl finding a second time; we report the secret once).
#[test]
fn a_curl_command_continued_over_lines_is_reported_where_curl_starts() {
    let s = Scanner::builtin().unwrap();
    let basic = b64(&tok(&["svc-deploy:", "Zq8vKp2Lm", "W3nR7tY5"]));
    let bearer = tok(&["Hx9Vq2", "LmP4rT7kWz", "8Nc3Yb6HdQ"]);
    let token = tok(&["c4e86f21", "9dd54a05", "8e3fc561"]);
    let cases: Vec<(String, u32)> = vec![
        (
            format!(
                "# create a user\ncurl -X POST -H \"Content-Type: application/json\" \\\n -H \"Authorization: Basic {basic}\" \\\n  https://api.example.net/v1/users\n"
            ),
            2,
        ),
        (
            format!(
                "curl https://api.example.net/v1/chat \\\n  -H 'Content-Type: application/json' \\\n  -H 'Authorization: Bearer {bearer}' \\\n  -d @body.json\n"
            ),
            1,
        ),
        (
            format!(
                "x = 1\n#curl -X POST \\\n#  https://api.example.net/v3/messages \\\n#  --header \"Authorization: Basic {basic}\" \\\n#  -F to=a@example.net\n"
            ),
            2,
        ),
        (
            format!(
                "curl -X GET \"https://api.example.net/client/v4/verify\" \\\n     -H \"Authorization: Token {token}\" \\\n     -H \"Content-Type:application/json\"\n"
            ),
            1,
        ),
        (
            format!(
                "curl -X GET https://api.example.net/ \\\n     -H \"X-Api-Key: {token}\" \\\n     -H \"Accept: application/json\"\n"
            ),
            1,
        ),
    ];
    for (text, line) in &cases {
        assert_eq!(
            lines(&s.scan_bytes("deploy.sh", text.as_bytes())),
            vec![(*line, "generic-curl-header-credential".to_string())],
            "{text}"
        );
    }
    // A JWT has its own rule, on the header's line.
    let jwt = tok(&[
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        ".eyJzdWIiOiJzdmMtZGVwbG95IiwiaWF0IjoxNzAwMDAwMDAwfQ",
        ".Zq8vKp2LmW3nR7tY5bC1dF3hJ5aB3dE5gH7jK9mN1pQ",
    ]);
    let text = format!("curl https://api.example.net/ \\\n  -H \"Authorization: Bearer {jwt}\"\n");
    assert_eq!(
        lines(&s.scan_bytes("deploy.sh", text.as_bytes())),
        vec![(2, "jwt".to_string())]
    );
}

#[test]
fn gitleaksignore_entries_with_gitleaks_ids_allow_our_findings() {
    let line = generic_secret_line();
    let s = Scanner::builtin()
        .unwrap()
        .with_baseline(Baseline::parse("# from gitleaks\nsrc/a.py:generic-api-key:1\n").unwrap());
    assert_eq!(lines(&s.scan_bytes("src/a.py", line.as_bytes())), vec![]);
    assert_eq!(lines(&s.scan_bytes("src/b.py", line.as_bytes())).len(), 1);
}

/// gitleaks reports a two-part `xoxb-` token as `slack-legacy-bot-token`; ours is
/// `slack-bot-token` (which takes both forms), so an ignore entry under gitleaks' id applies.
#[test]
fn a_gitleaksignore_entry_for_a_legacy_slack_bot_token_allows_ours() {
    let line = format!(
        "SLACK={}\n",
        tok(&["xo", "xb-263594206564-", "Qv8Lr2Xw5Nz1Tb7Kd4Hs9Mf3"])
    );
    let s = Scanner::builtin().unwrap();
    assert_eq!(
        lines(&s.scan_bytes("ci/notify.sh", line.as_bytes())),
        vec![(1, "slack-bot-token".to_string())]
    );
    let s = s.with_baseline(Baseline::parse("ci/notify.sh:slack-legacy-bot-token:1\n").unwrap());
    assert_eq!(
        lines(&s.scan_bytes("ci/notify.sh", line.as_bytes())),
        vec![]
    );
}

#[test]
fn a_pkcs12_key_store_is_reported_by_its_path_on_line_zero_in_files_archives_and_history() {
    // DER bytes as a .p12 starts (no rule matches the content); the path is the finding.
    let der: &[u8] = b"\x30\x82\x0a\x3b\x02\x01\x03\x30\x82\x0a\x01\x06\x09";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/client.p12"), der).unwrap();
    std::fs::write(dir.path().join("certs/IIS.PFX"), der).unwrap();
    std::fs::write(
        dir.path().join("certs/client.p12.md"),
        "how to export a .p12\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keys.zip"),
        zip(&[("release/app.pfx", der)]),
    )
    .unwrap();
    let found = |depth: usize| {
        let mut got: Vec<(String, u32, String)> = scan_dir(dir.path(), depth)
            .findings
            .into_iter()
            .map(|f| {
                let file = f
                    .file
                    .rsplit_once("certs/")
                    .map_or(f.file.clone(), |(_, n)| n.to_string());
                (file, f.line, f.rule_id)
            })
            .collect();
        got.sort();
        got
    };
    let p12 = |f: &str| (f.to_string(), 0, "pkcs12-file".to_string());
    assert_eq!(found(0), vec![p12("IIS.PFX"), p12("client.p12")]);
    let with_zip = found(1);
    assert_eq!(with_zip.len(), 3, "{with_zip:?}");
    assert!(
        with_zip
            .iter()
            .any(|f| f.0.ends_with("keys.zip!release/app.pfx") && f.1 == 0 && f.2 == "pkcs12-file"),
        "{with_zip:?}"
    );

    let Some(r) = super::git::Repo::new() else {
        return;
    };
    std::fs::write(r.path().join("client.p12"), der).unwrap();
    std::fs::write(r.path().join("readme.txt"), "the key store is client.p12\n").unwrap();
    let commit = r.commit("add a key store");
    let got: Vec<(Option<String>, String, u32, String)> = Scanner::builtin()
        .unwrap()
        .scan_git(&scan::GitScanRequest::range(r.path(), "HEAD"))
        .unwrap()
        .into_iter()
        .map(|f| (f.commit, f.file, f.line, f.rule_id))
        .collect();
    assert_eq!(
        got,
        vec![(
            Some(commit),
            "client.p12".to_string(),
            0,
            "pkcs12-file".to_string()
        )]
    );
}

// ------------------------------------------------------------------ 8. archives

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn xz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn bz2(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn lz4(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// A 7z archive (LZMA2, each entry its own block).
fn seven_z(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = sevenz_rust2::ArchiveWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    for (name, data) in entries {
        w.push_archive_entry(sevenz_rust2::ArchiveEntry::new_file(name), Some(*data))
            .unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn scan_dir(dir: &Path, depth: usize) -> scan::PathScan {
    Scanner::builtin()
        .unwrap()
        .with_options(ScanOptions {
            max_archive_depth: depth,
            ..ScanOptions::default()
        })
        .scan_paths(&[dir.to_path_buf()])
        .unwrap()
}

#[test]
fn archives_are_scanned_to_the_depth_asked_and_bombs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("GITHUB_TOKEN={}\n", github_token());
    let d = dir.path();
    std::fs::write(
        d.join("a.zip"),
        zip(&[
            ("docs/readme.txt", b"nothing\n"),
            ("conf/app.env", secret.as_bytes()),
        ]),
    )
    .unwrap();
    std::fs::write(
        d.join("b.tar.gz"),
        gz(&tar(&[("x/app.env", secret.as_bytes())])),
    )
    .unwrap();
    std::fs::write(d.join("c.env.xz"), xz(secret.as_bytes())).unwrap();
    // An uncompressed tar: its entries' text is in its own bytes.
    std::fs::write(d.join("f.tar"), tar(&[("y/app.env", secret.as_bytes())])).unwrap();
    std::fs::write(d.join("d.env.zst"), zst(secret.as_bytes())).unwrap();
    // A zip in a tar in a gzip: three levels.
    let inner = zip(&[("deep.env", secret.as_bytes())]);
    std::fs::write(d.join("e.tgz"), gz(&tar(&[("in/inner.zip", &inner)]))).unwrap();

    let names = |scan: &scan::PathScan| {
        let mut v: Vec<String> = scan
            .findings
            .iter()
            .map(|f| {
                f.file
                    .trim_start_matches(&format!("{}/", d.display()))
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    // Depth 0 (the default): archives are listed as skipped and not read as text (an
    // uncompressed tar was, and its entry's key reported), as gitleaks skips them.
    let none = scan_dir(d, 0);
    assert_eq!(names(&none), Vec::<String>::new());
    assert_eq!(none.skipped.len(), 6, "{:?}", none.skipped);
    assert!(
        none.skipped
            .iter()
            .all(|s| s.reason.contains("--max-archive-depth")),
        "{:?}",
        none.skipped
    );
    // Depth 1: one level; the zip inside e.tgz is listed as too deep.
    let one = scan_dir(d, 1);
    assert_eq!(
        names(&one),
        vec![
            "a.zip!conf/app.env",
            "b.tar.gz!x/app.env",
            "c.env.xz",
            "d.env.zst",
            "f.tar!y/app.env",
        ]
    );
    assert!(
        one.skipped
            .iter()
            .any(|s| s.path.ends_with("e.tgz!in/inner.zip") && s.reason.contains("deeper")),
        "{:?}",
        one.skipped
    );
    let two = scan_dir(d, 2);
    assert!(names(&two).contains(&"e.tgz!in/inner.zip!deep.env".to_string()));
    assert_eq!(two.findings[0].line, 1);

    // A bomb: 64 MiB of zeros in a small gzip.
    let bomb_dir = tempfile::tempdir().unwrap();
    std::fs::write(bomb_dir.path().join("bomb.gz"), gz(&vec![0u8; 64 << 20])).unwrap();
    std::fs::write(bomb_dir.path().join("ok.env"), secret.as_bytes()).unwrap();
    let scan = scan_dir(bomb_dir.path(), 3);
    assert_eq!(scan.findings.len(), 1);
    assert_eq!(scan.skipped.len(), 1);
    assert!(
        scan.skipped[0]
            .reason
            .starts_with("refused as an archive bomb"),
        "{:?}",
        scan.skipped
    );
}

/// bzip2 and LZ4 streams and 7z archives are opened like the other kinds (gitleaks opens
/// them too): a compressed tar is one level, a 7z's entries are named `a.7z!path`, nested
/// archives count levels, depth 0 lists them as skipped, and a bomb of each kind is refused as
/// a whole while the files beside it are still scanned.
#[test]
fn bzip2_lz4_and_7z_are_opened_to_the_depth_asked_and_their_bombs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("GITHUB_TOKEN={}\n", github_token());
    let d = dir.path();
    std::fs::write(d.join("a.env.bz2"), bz2(secret.as_bytes())).unwrap();
    std::fs::write(
        d.join("b.tar.bz2"),
        bz2(&tar(&[("x/app.env", secret.as_bytes())])),
    )
    .unwrap();
    std::fs::write(d.join("c.env.lz4"), lz4(secret.as_bytes())).unwrap();
    std::fs::write(
        d.join("d.tar.lz4"),
        lz4(&tar(&[("y/app.env", secret.as_bytes())])),
    )
    .unwrap();
    let inner = zip(&[("deep.env", secret.as_bytes())]);
    std::fs::write(
        d.join("e.7z"),
        seven_z(&[
            ("docs/readme.txt", b"nothing\n"),
            ("conf/app.env", secret.as_bytes()),
            ("in/inner.zip", &inner),
        ]),
    )
    .unwrap();
    let names = |scan: &scan::PathScan| {
        let mut v: Vec<String> = scan
            .findings
            .iter()
            .map(|f| {
                f.file
                    .trim_start_matches(&format!("{}/", d.display()))
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    let none = scan_dir(d, 0);
    assert_eq!(names(&none), Vec::<String>::new());
    assert_eq!(none.skipped.len(), 5, "{:?}", none.skipped);
    let one = scan_dir(d, 1);
    assert_eq!(
        names(&one),
        vec![
            "a.env.bz2",
            "b.tar.bz2!x/app.env",
            "c.env.lz4",
            "d.tar.lz4!y/app.env",
            "e.7z!conf/app.env",
        ]
    );
    assert!(
        one.skipped
            .iter()
            .any(|s| s.path.ends_with("e.7z!in/inner.zip") && s.reason.contains("deeper")),
        "{:?}",
        one.skipped
    );
    let two = scan_dir(d, 2);
    assert!(
        names(&two).contains(&"e.7z!in/inner.zip!deep.env".to_string()),
        "{:?}",
        names(&two)
    );
    assert!(two.findings.iter().all(|f| f.line == 1));

    // Bombs: 8 MiB of zeros in a file of a few KiB, of each kind, each refused as a whole
    // (past 1 MiB an expansion may be at most 100 times the file).
    let zeros = vec![0u8; 8 << 20];
    for (name, data) in [
        ("bomb.bz2", bz2(&zeros)),
        ("bomb.lz4", lz4(&zeros)),
        ("bomb.7z", seven_z(&[("zeros.bin", &zeros)])),
    ] {
        let bomb_dir = tempfile::tempdir().unwrap();
        std::fs::write(bomb_dir.path().join(name), &data).unwrap();
        std::fs::write(bomb_dir.path().join("ok.env"), secret.as_bytes()).unwrap();
        let scan = scan_dir(bomb_dir.path(), 3);
        assert_eq!(scan.findings.len(), 1, "{name}");
        assert_eq!(scan.skipped.len(), 1, "{name}: {:?}", scan.skipped);
        assert!(
            scan.skipped[0]
                .reason
                .starts_with("refused as an archive bomb"),
            "{name}: {:?}",
            scan.skipped
        );
    }
}

/// gitleaks opens archives in git mode too: an archive a commit adds or changes is read from
/// that commit and its entries are reported there; so does the staged scan. Bombs are refused.
#[test]
fn archives_in_git_history_and_in_the_index_are_opened_to_the_depth_asked() {
    let Some(r) = super::git::Repo::new() else {
        return;
    };
    let secret = format!("GITHUB_TOKEN={}\n", github_token());
    let d = r.path();
    // Stored, not deflated: the entry's text is in the zip's own bytes too.
    let stored = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file("conf/app.env", opts).unwrap();
        w.write_all(secret.as_bytes()).unwrap();
        w.finish().unwrap().into_inner()
    };
    std::fs::write(d.join("a.zip"), stored).unwrap();
    std::fs::write(d.join("c.tar"), tar(&[("x/app.env", secret.as_bytes())])).unwrap();
    std::fs::write(d.join("readme.txt"), "nothing\n").unwrap();
    let first = r.commit("one");
    // The archive changed (a second entry), renamed and nested in a tar.gz; and a bomb.
    std::fs::remove_file(d.join("a.zip")).unwrap();
    let inner = zip(&[
        ("conf/app.env", secret.as_bytes()),
        ("more/b.env", secret.as_bytes()),
    ]);
    std::fs::write(d.join("b.tgz"), gz(&tar(&[("in/b.zip", &inner)]))).unwrap();
    std::fs::write(d.join("bomb.gz"), gz(&vec![0u8; 64 << 20])).unwrap();
    let second = r.commit("two");

    let scan = |depth: usize| {
        let s = Scanner::builtin().unwrap().with_options(ScanOptions {
            max_archive_depth: depth,
            ..ScanOptions::default()
        });
        let req = scan::GitScanRequest::range(d, "HEAD");
        let mut got: Vec<(String, String)> = s
            .scan_git(&req)
            .unwrap()
            .into_iter()
            .map(|f| (f.commit.unwrap_or_default(), f.file))
            .collect();
        got.sort();
        got
    };
    // Depth 0: archives are not opened, and the findings of their patches (the stored zip's
    // and the tar's bytes hold the entry's text; the history scan reads binary files) are
    // not reported either: gitleaks skips archives at depth 0 in git mode too.
    assert_eq!(scan(0), vec![]);
    // Opened, the archive's own text finding gives way to its entry's.
    assert_eq!(
        scan(1),
        vec![
            (first.clone(), "a.zip!conf/app.env".to_string()),
            (first.clone(), "c.tar!x/app.env".to_string()),
        ],
        "depth 1 does not reach into the zip inside the tar.gz"
    );
    let mut want = vec![
        (first.clone(), "a.zip!conf/app.env".to_string()),
        (first.clone(), "c.tar!x/app.env".to_string()),
        (second.clone(), "b.tgz!in/b.zip!conf/app.env".to_string()),
        (second.clone(), "b.tgz!in/b.zip!more/b.env".to_string()),
    ];
    want.sort();
    assert_eq!(scan(2), want);

    // Staged: the index's archives, without a commit.
    std::fs::write(d.join("c.zip"), zip(&[("x.env", secret.as_bytes())])).unwrap();
    r.git(&["add", "c.zip"]);
    let s = Scanner::builtin().unwrap().with_options(ScanOptions {
        max_archive_depth: 1,
        ..ScanOptions::default()
    });
    let staged: Vec<(Option<String>, String, u32)> = s
        .scan_staged(d)
        .unwrap()
        .into_iter()
        .map(|f| (f.commit, f.file, f.line))
        .collect();
    assert_eq!(staged, vec![(None, "c.zip!x.env".to_string(), 1)]);
}

// ------------------------------------------------------------------ 9. gitleaks' report

#[test]
fn the_gitleaks_report_has_gitleaks_keys() {
    let s = Scanner::builtin().unwrap();
    let text = format!("NAME=x\nGITHUB_TOKEN={}\n", github_token());
    let found = s.scan_bytes("app.env", text.as_bytes());
    let out = scan::render(Format::Gitleaks, &found, &s.rule_infos(), true, "0");
    assert!(
        out.starts_with("[\n {\n  \"RuleID\": \"github-pat\","),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &v[0];
    assert_eq!(f["StartLine"], 2);
    assert_eq!(f["EndLine"], 2);
    assert_eq!(f["StartColumn"], 14);
    assert_eq!(f["Secret"], "REDACTED");
    assert_eq!(f["Match"], "REDACTED");
    assert_eq!(f["File"], "app.env");
    assert_eq!(f["Commit"], "");
    assert_eq!(f["Fingerprint"], "app.env:github-pat:2");
    let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "RuleID",
        "Description",
        "StartLine",
        "EndLine",
        "StartColumn",
        "EndColumn",
        "Match",
        "Secret",
        "File",
        "SymlinkFile",
        "Commit",
        "Entropy",
        "Author",
        "Email",
        "Date",
        "Message",
        "Tags",
        "Fingerprint",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert!(!out.contains(&github_token()));
    // gitleaks reads the report back as a baseline.
    let b = Baseline::parse(&out).unwrap();
    assert!(b.allows(&found[0]));
    assert_eq!(scan::render(Format::Gitleaks, &[], &[], true, "0"), "[]\n");
}

/// A MongoDB URL to a Unix socket has the socket's path percent-encoded as its host
/// (`@%2Ftmp%2Fmongodb-27017.sock`): the password is reported whole, as written, once (not
/// only from the percent-decoded copy, where an encoded `@` in it ends it early); so is a
/// password holding `%40` in a URL to a named host.
#[test]
fn a_database_url_to_a_percent_encoded_socket_reports_the_whole_password() {
    let s = Scanner::builtin().unwrap();
    let password = tok(&["Wq7%40Lm2", "Xk9Rp4sTz"]);
    for url in [
        format!("mongodb://svc:{password}@%2Ftmp%2Fmongodb-27017.sock"),
        format!(
            "MONGO_URL=mongodb://svc:{password}@%2Fvar%2Frun%2Fmongodb.sock/app?authSource=admin"
        ),
        format!("postgresql://app:{password}@%2Fvar%2Frun%2Fpostgresql/app"),
        format!("DATABASE_URL=postgres://app:{password}@db.internal:5432/app"),
        format!("redis://default:{password}@cache.internal:6379/0"),
    ] {
        let found: Vec<(String, String)> = s
            .scan_bytes("app.env", format!("{url}\n").as_bytes())
            .into_iter()
            .map(|f| (f.rule_id, f.secret.expose().to_string()))
            .collect();
        assert_eq!(
            found,
            vec![("database-url-password".to_string(), password.clone())],
            "{url}"
        );
    }
}

// ------------------------------------------------------------------ 10. allowlists on a line

/// What an allowlist allows on a line with two secrets, as gitleaks 8.30 has it (checked side
/// by side): `regexTarget = "line"` and `gitleaks:allow` allow every finding (of the rule, of
/// every rule) on the line; `match`, `secret` and stopwords allow only the finding they match,
/// and the other secret on the line is still reported.
#[test]
fn an_allowlist_for_one_secret_on_a_line_keeps_the_other_unless_it_judges_the_line() {
    let toml = r#"
[[rules]]
id = "tok"
regex = '''tok_[a-z0-9]{12}'''
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''fixture''']

[[rules]]
id = "key"
regex = '''key_[a-z0-9]{12}'''
[[rules.allowlists]]
regexTarget = "match"
regexes = ['''key_0000''']

[[rules]]
id = "sw"
regex = '''sw_([a-z0-9]{12})'''
[[rules.allowlists]]
stopwords = ["example"]

[[rules]]
id = "sec"
regex = '''sec_([a-z0-9]{12})'''
[[rules.allowlists]]
regexes = ['''^0000''']
"#;
    let s = Scanner::from_rules(RuleSet::from_toml_str(toml, "a.toml", None).unwrap());
    let text = "\
a tok_abc123def456 b tok_zzz999yyy888 fixture
a tok_abc123def456 b tok_zzz999yyy888
c key_0000aaaabbbb d key_9q8w7e6r5t4y
e sw_exampleab1234 f sw_k3j4h5g6f7d8
g sec_0000aaaabbbb h sec_q1w2e3r4t5y6
i tok_abc123def456 key_9q8w7e6r5t4y # gitleaks:allow
";
    let found: Vec<(u32, String, String)> = s
        .scan_bytes("a.txt", text.as_bytes())
        .into_iter()
        .map(|f| (f.line, f.rule_id, f.secret.expose().to_string()))
        .collect();
    let row = |line: u32, rule: &str, secret: &str| (line, rule.to_string(), secret.to_string());
    assert_eq!(
        found,
        vec![
            row(2, "tok", "tok_abc123def456"),
            row(2, "tok", "tok_zzz999yyy888"),
            row(3, "key", "key_9q8w7e6r5t4y"),
            row(4, "sw", "k3j4h5g6f7d8"),
            row(5, "sec", "q1w2e3r4t5y6"),
        ]
    );
}
