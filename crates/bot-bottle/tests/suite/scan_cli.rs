//! `bot-bottle scan` end to end: exit codes, formats, redaction, errors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

fn token() -> String {
    ["gh", "p_", "Zq8Lr2Xv5Nw1Tb7Kd4Hs9Mf3Pc6Gy0Ja2Ue5"].concat()
}

fn bb(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("scan")
        .args(args)
        .current_dir(dir)
        .env_remove("BOT_BOTTLE_LOG")
        .env_remove("GITLEAKS_CONFIG")
        .env_remove("GITLEAKS_CONFIG_TOML")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clean.txt"), "nothing here\n").unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        format!("NAME=demo\nGITHUB_TOKEN={}\n", token()),
    )
    .unwrap();
    dir
}

#[test]
fn clean_scan_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
    let o = bb(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    assert_eq!(
        stderr(&o),
        "no secrets found (1 file(s), 6 byte(s), 0 skipped)\n"
    );
}

#[test]
fn findings_as_json_are_redacted_and_exit_one() {
    let dir = project();
    let o = bb(dir.path(), &["--format", "json", "."]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v,
        json!([{
            "rule_id": "github-pat",
            "description": "GitHub personal access token (classic)",
            "file": "app.env",
            "line": 2,
            "column": 14,
            "commit": null,
            "secret": "REDACTED",
            "entropy": v[0]["entropy"],
            "fingerprint": "app.env:github-pat:2"
        }])
    );
    assert!(v[0]["entropy"].as_f64().unwrap() > 4.0);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&token()));

    let o = bb(dir.path(), &["--format", "json", "--no-redact", "."]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["secret"], json!(token()));
}

#[test]
fn text_format() {
    let dir = project();
    let o = bb(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "app.env:2:14: github-pat: GitHub personal access token (classic) secret REDACTED fingerprint app.env:github-pat:2\n"
    );
    assert_eq!(
        stderr(&o),
        "found 1 secret(s) (2 file(s), 77 byte(s), 0 skipped)\n"
    );
}

#[test]
fn sarif_format() {
    let dir = project();
    let o = bb(dir.path(), &["--format", "sarif"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "github-pat");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&token()));
}

#[test]
fn stdin_is_scanned() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["scan", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("x\ny\n{}\n", token()).as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["fingerprint"], "-:github-pat:3");
}

#[test]
fn baseline_and_inline_allow() {
    let dir = project();
    std::fs::write(
        dir.path().join("approved.txt"),
        "# ok\napp.env:github-pat:2\n",
    )
    .unwrap();
    let o = bb(dir.path(), &["--baseline", "approved.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    std::fs::write(
        dir.path().join("app.env"),
        format!("T={} # gitleaks:allow\n", token()),
    )
    .unwrap();
    assert_eq!(bb(dir.path(), &[]).status.code(), Some(0));
    assert_eq!(
        bb(dir.path(), &["--no-inline-allow"]).status.code(),
        Some(1)
    );
}

#[test]
fn gitleaks_files_are_read_where_gitleaks_reads_them() {
    let dir = project();
    // A .gitleaksignore in the scanned directory is read without being asked for.
    std::fs::write(dir.path().join(".gitleaksignore"), "app.env:github-pat:2\n").unwrap();
    let o = bb(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::remove_file(dir.path().join(".gitleaksignore")).unwrap();

    // A .gitleaks.toml in the scanned directory that extends the defaults, allowlists rules by
    // gitleaks' ids and overrides a gitleaks default rule no built-in rule covers (a warning);
    // -v says where the rules came from.
    let sub = dir.path().join("repo");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("app.env"), format!("GITHUB_TOKEN={}\n", token())).unwrap();
    std::fs::write(
        sub.join(".gitleaks.toml"),
        r#"[extend]
useDefault = true
[[allowlists]]
targetRules = ["github-pat", "generic-api-key"]
paths = ['''app\.env''']
[[rules]]
id = "hashicorp-tf-password"
[[rules.allowlists]]
regexes = ['''x''']
"#,
    )
    .unwrap();
    let o = bb(dir.path(), &["-v", "repo"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(".gitleaks.toml in the scanned directory"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("`hashicorp-tf-password`"),
        "{}",
        stderr(&o)
    );
    // GITLEAKS_CONFIG comes first.
    std::fs::write(
        dir.path().join("strict.toml"),
        "[extend]\nuseDefault = true\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["scan", "repo"])
        .current_dir(dir.path())
        .env("GITLEAKS_CONFIG", dir.path().join("strict.toml"))
        .env_remove("BOT_BOTTLE_LOG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn gitleaks_report_format_and_decode_depth() {
    let dir = tempfile::tempdir().unwrap();
    let pct: String = token().bytes().map(|b| format!("%{b:02x}")).collect();
    std::fs::write(
        dir.path().join("enc.txt"),
        format!("x\nurl: https://h/?t={pct}\n"),
    )
    .unwrap();
    let o = bb(dir.path(), &["-f", "gitleaks", "."]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["RuleID"], json!("github-pat"));
    assert_eq!(v[0]["StartLine"], json!(2));
    assert_eq!(v[0]["Secret"], json!("REDACTED"));
    assert_eq!(v[0]["Fingerprint"], json!("enc.txt:github-pat:2"));
    let o = bb(dir.path(), &["--max-decode-depth", "0", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bad_inputs_exit_two_with_clear_errors() {
    let dir = project();
    let d = dir.path();
    std::fs::write(d.join("broken.toml"), "[[rules]\n").unwrap();
    std::fs::write(
        d.join("badre.toml"),
        "[[rules]]\nid = \"my-rule\"\nregex = '''(oops'''\n",
    )
    .unwrap();
    std::fs::write(
        d.join("unknown.toml"),
        "[[rules]]\nid = \"x\"\nregx = 'a'\n",
    )
    .unwrap();

    let o = bb(d, &["--config", "broken.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: cannot load the rules: invalid rule file broken.toml: "),
        "{}",
        stderr(&o)
    );

    let o = bb(d, &["--config", "badre.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(
            "error: cannot load the rules: rule `my-rule` in badre.toml: invalid regex: "
        ),
        "{}",
        stderr(&o)
    );

    // An unknown key is dropped with a warning, as gitleaks ignores it; here that leaves the
    // rule without a regex, which is the error, and the warning says which key was meant.
    let o = bb(d, &["--config", "unknown.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("unknown key `regx` in rule `x` is ignored")
            && e.contains("did you mean `regex`?"),
        "{e}"
    );
    assert!(
        e.contains("rule `x` in unknown.toml: needs a regex or a path"),
        "{e}"
    );

    let o = bb(d, &["missing-dir"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: cannot read missing-dir: "),
        "{}",
        stderr(&o)
    );

    let o = bb(d, &["--format", "xml"]);
    assert_eq!(o.status.code(), Some(2));
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
}

#[test]
fn git_range_scan_and_bad_range() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipping: git is not installed");
        return;
    }
    let dir = project();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "one"]);
    let o = bb(d, &["--git", "HEAD", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let commit = v[0]["commit"].as_str().unwrap().to_string();
    assert_eq!(commit.len(), 40);
    assert_eq!(
        v[0]["fingerprint"],
        json!(format!("{commit}:app.env:github-pat:2"))
    );

    let o = bb(d, &["--git", "nope..HEAD"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: cannot scan git range `nope..HEAD` in .: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_rule_file_and_the_baseline_are_not_scanned_as_in_gitleaks() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipping: git is not installed");
        return;
    }
    let dir = project();
    let d = dir.path();
    // A rule file that quotes a token (an allowlisted example), found where gitleaks finds it.
    std::fs::write(
        d.join(".gitleaks.toml"),
        format!(
            "# the example token of our docs: {}\n[extend]\nuseDefault = true\n",
            token()
        ),
    )
    .unwrap();
    // A gitleaks report with its secrets, kept as the baseline.
    let o = bb(d, &["-f", "gitleaks", "--no-redact", "."]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let files: Vec<&str> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["File"].as_str().unwrap())
        .collect();
    assert_eq!(files, vec!["app.env"], "the rule file in use is left out");
    std::fs::write(d.join("baseline.json"), &o.stdout).unwrap();
    let o = bb(d, &["-v", "--baseline", "baseline.json", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped baseline.json: the baseline (gitleaks skips it too)"),
        "{}",
        stderr(&o)
    );
    // Named another way (-c with an absolute path), the rule file is still itself.
    let abs = d.join(".gitleaks.toml");
    let o = bb(
        d,
        &["-c", abs.to_str().unwrap(), "--baseline", "baseline.json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Without being the rule file in use, it is scanned like any file.
    std::fs::write(d.join("other.toml"), "[extend]\nuseDefault = true\n").unwrap();
    let o = bb(
        d,
        &[
            "-f",
            "json",
            "-c",
            "other.toml",
            "--baseline",
            "baseline.json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["file"], json!(".gitleaks.toml"));

    // In git mode the rule file's path is left out of the history (as gitleaks compares it).
    git(d, &["init", "-q", "-b", "main"]);
    git(d, &["add", "app.env", ".gitleaks.toml"]);
    git(d, &["commit", "-q", "-m", "one"]);
    let o = bb(d, &["-f", "json", "--git", "HEAD"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let files: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, vec!["app.env"]);
    let o = bb(d, &["-f", "json", "-c", "other.toml", "--git", "HEAD"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
}
