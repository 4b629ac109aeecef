//! `bot-bottle manifest check|show`, run as the built binary on fixture manifests in both
//! forms. Exit codes: 0 valid, 1 invalid (every error listed), 2 unreadable / unknown.

use std::path::{Path, PathBuf};
use std::process::Command;

use pretty_assertions::assert_eq;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bot-bottle ARGS` in `cwd` with a clean environment: `HOME` is `home`, no
/// `BOT_BOTTLE_*` variables unless given in `env`.
fn run(cwd: &Path, home: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_HOME")
        .env_remove("BOT_BOTTLE_LOG")
        .env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn in_repo(args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    run(&repo_root(), home.path(), &[], args)
}

fn in_fixtures(args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    run(&fixtures(), home.path(), &[], args)
}

#[test]
fn check_valid_file_form() {
    let r = in_repo(&[
        "manifest",
        "check",
        "--manifest",
        "examples/bot-bottle.yaml",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "examples/bot-bottle.yaml: ok, 3 bottles, 1 agent\n", "")
    );
}

#[test]
fn check_valid_directory_form() {
    let r = in_repo(&["manifest", "check", "--manifest", "examples/dot-bot-bottle"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "examples/dot-bot-bottle: ok, 3 bottles, 1 agent\n", "")
    );
}

#[test]
fn check_invalid_file_lists_every_error() {
    let r = in_fixtures(&["manifest", "check", "--manifest", "invalid.yaml"]);
    assert_eq!((r.code, r.stdout.as_str()), (1, ""));
    insta::assert_snapshot!(r.stderr);
}

#[test]
fn check_invalid_directory_lists_every_error() {
    let r = in_fixtures(&["manifest", "check", "--manifest", "dir-invalid"]);
    assert_eq!((r.code, r.stdout.as_str()), (1, ""));
    insta::assert_snapshot!(r.stderr);
}

#[test]
fn check_typo_names_file_line_and_expected_fields() {
    let r = in_fixtures(&["manifest", "check", "--manifest", "typo.yaml"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            1,
            "typo.yaml:3:5: unknown field `supervize`, expected one of extends, agent_provider, \
             supervise, env, git-gate, egress, resources, dangerously_run_as_host_root, \
             kubernetes; did you mean `supervise`?\n\
             error: typo.yaml has 1 error; fix it and run `bot-bottle manifest check` again\n"
        )
    );
}

#[test]
fn check_missing_file_is_exit_2() {
    let r = in_fixtures(&["manifest", "check", "--manifest", "nope.yaml"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "error: manifest nope.yaml (from --manifest) does not exist; check the path\n"
        )
    );
}

#[test]
fn check_without_any_manifest_lists_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let r = run(&cwd, tmp.path(), &[], &["manifest", "check"]);
    let t = tmp.path().display().to_string();
    assert_eq!(
        (r.code, r.stderr.replace(&t, "<tmp>")),
        (
            2,
            "error: no manifest found; looked for <tmp>/work/bot-bottle.yaml, \
             <tmp>/work/.bot-bottle, <tmp>/.bot-bottle/manifest; create bot-bottle.yaml (see \
             examples/bot-bottle.yaml) or pass --manifest PATH\n"
                .to_owned()
        )
    );
}

#[test]
fn check_finds_manifests_in_search_order() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cwd = tmp.path().join("work");
    let bb_home = tmp.path().join("bbhome");
    let examples = repo_root().join("examples");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    // $BOT_BOTTLE_HOME/manifest/ (directory form)
    copy_dir(&examples.join("dot-bot-bottle"), &bb_home.join("manifest"));
    let bb: &[(&str, &Path)] = &[("BOT_BOTTLE_HOME", &bb_home)];
    let r = run(&cwd, &home, bb, &["manifest", "check"]);
    assert_eq!(
        (r.code, r.stdout),
        (
            0,
            format!(
                "{}: ok, 3 bottles, 1 agent\n",
                bb_home.join("manifest").display()
            )
        )
    );
    // ./.bot-bottle/ wins over it
    copy_dir(&examples.join("dot-bot-bottle"), &cwd.join(".bot-bottle"));
    let r = run(&cwd, &home, bb, &["manifest", "check"]);
    assert_eq!(
        r.stdout,
        format!(
            "{}: ok, 3 bottles, 1 agent\n",
            cwd.join(".bot-bottle").display()
        )
    );
    // ./bot-bottle.yaml wins over that (an invalid one, to tell them apart)
    std::fs::write(cwd.join("bot-bottle.yaml"), "bottles: {a: {extends: a}}\n").unwrap();
    let r = run(&cwd, &home, bb, &["manifest", "check"]);
    assert_eq!(r.code, 1);
    // $BOT_BOTTLE_MANIFEST wins over ./bot-bottle.yaml
    let m = fixtures().join("typo.yaml");
    let env: &[(&str, &Path)] = &[("BOT_BOTTLE_HOME", &bb_home), ("BOT_BOTTLE_MANIFEST", &m)];
    let r = run(&cwd, &home, env, &["manifest", "check"]);
    assert!(
        r.stderr
            .contains("typo.yaml:3:5: unknown field `supervize`"),
        "{}",
        r.stderr
    );
    // --manifest wins over everything
    let explicit = examples.join("bot-bottle.yaml");
    let r = run(
        &cwd,
        &home,
        env,
        &[
            "manifest",
            "check",
            "--manifest",
            explicit.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn show_yaml() {
    let r = in_repo(&[
        "manifest",
        "show",
        "dev",
        "--manifest",
        "examples/bot-bottle.yaml",
    ]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    insta::assert_snapshot!(r.stdout);
}

#[test]
fn show_json_uses_the_manifest_shape() {
    let r = in_repo(&[
        "manifest",
        "show",
        "dev",
        "--manifest",
        "examples/dot-bot-bottle",
        "--json",
    ]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "agent_provider",
            "egress",
            "env",
            "git-gate",
            "resources",
            "supervise"
        ]
    );
    let hosts: Vec<&str> = v["egress"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        vec![
            "api.anthropic.com",
            "crates.io",
            "*.crates.io",
            "static.rust-lang.org"
        ]
    );
    assert_eq!(
        v["git-gate"]["repos"]["app"]["url"],
        "ssh://git@github.com/org/app.git"
    );
    insta::assert_snapshot!(r.stdout);
}

#[test]
fn show_same_in_both_forms() {
    let file = in_repo(&[
        "manifest",
        "show",
        "dev",
        "--manifest",
        "examples/bot-bottle.yaml",
        "--json",
    ]);
    let dir = in_repo(&[
        "manifest",
        "show",
        "dev",
        "--manifest",
        "examples/dot-bot-bottle",
        "--json",
    ]);
    assert_eq!((file.code, dir.code), (0, 0));
    assert_eq!(file.stdout, dir.stdout);
}

#[test]
fn show_unknown_bottle_lists_available() {
    let r = in_repo(&[
        "manifest",
        "show",
        "prod",
        "--manifest",
        "examples/bot-bottle.yaml",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "error: no bottle `prod` in examples/bot-bottle.yaml; available bottles: base, dev, \
             net\n"
        )
    );
}

#[test]
fn show_invalid_bottle_lists_its_errors() {
    let r = in_fixtures(&["manifest", "show", "dev", "--manifest", "invalid.yaml"]);
    assert_eq!((r.code, r.stdout.as_str()), (1, ""));
    insta::assert_snapshot!(r.stderr);
}

#[test]
fn show_valid_bottle_of_an_invalid_manifest() {
    // `other` itself is fine: showing it works even though its neighbours are broken.
    let r = in_fixtures(&[
        "manifest",
        "show",
        "other",
        "--manifest",
        "invalid.yaml",
        "--json",
    ]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
}
