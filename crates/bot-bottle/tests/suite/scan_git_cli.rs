//! `bot-bottle scan` in git mode the way gitleaks users call it: `--log-opts` (several ranges,
//! `--all`) and `--staged` (what a pre-commit hook scans), end to end on real repositories.

use std::path::Path;
use std::process::{Command, Output};

use pretty_assertions::assert_eq;
use serde_json::Value;

fn token() -> String {
    ["gh", "p_", "Zq8Lr2Xv5Nw1Tb7Kd4Hs9Mf3Pc6Gy0Ja2Ue5"].concat()
}

fn bb(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("scan")
        .args(args)
        .current_dir(dir)
        .env_remove("BOT_BOTTLE_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// (commit, file, line) of each finding of a JSON report, sorted.
fn places(o: &Output) -> Vec<(String, String, u64)> {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["commit"].as_str().unwrap_or("").to_string(),
                f["file"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn repo_with_two_branches() -> Option<(tempfile::TempDir, String, String, String)> {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipping: git is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    std::fs::write(d.join("a.txt"), "base\n").unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "base"]);
    let base = git(d, &["rev-parse", "HEAD"]);
    std::fs::write(d.join("a.txt"), format!("base\ngh = {}\n", token())).unwrap();
    git(d, &["commit", "-q", "-am", "main secret"]);
    let main = git(d, &["rev-parse", "HEAD"]);
    git(d, &["checkout", "-q", "-b", "side", &base]);
    std::fs::write(d.join("s.txt"), format!("\n\nt = {}\n", token())).unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "side secret"]);
    let side = git(d, &["rev-parse", "HEAD"]);
    git(d, &["checkout", "-q", "main"]);
    Some((dir, base, main, side))
}

#[test]
fn log_opts_take_all_and_several_ranges_like_gitleaks() {
    let Some((dir, base, main, side)) = repo_with_two_branches() else {
        return;
    };
    let d = dir.path();
    let both = vec![
        (main.clone(), "a.txt".to_string(), 2),
        (side.clone(), "s.txt".to_string(), 3),
    ];
    let mut both = both;
    both.sort();
    // `--log-opts` alone implies git mode.
    let o = bb(d, &["--log-opts", "--all", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(places(&o), both);
    let o = bb(d, &["--log-opts=--all", "--format", "json"]);
    assert_eq!(places(&o), both);
    let ranges = format!("{base}..main {base}..side");
    let o = bb(d, &["--log-opts", &ranges, "--format", "json"]);
    assert_eq!(places(&o), both);
    // With --git, the options follow the range.
    let o = bb(
        d,
        &[
            "--git",
            "side",
            "--log-opts",
            "--not main",
            "--format",
            "json",
        ],
    );
    assert_eq!(places(&o), vec![(side, "s.txt".to_string(), 3)]);
    // What would change the output the scan reads, write a file or run a program is refused.
    for bad in ["--all --output=/tmp/x", "--oneline", "--ext-diff"] {
        let o = bb(d, &["--log-opts", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&o).starts_with("error: --log-opts: `"),
            "{}",
            stderr(&o)
        );
    }
    let o = bb(d, &["--log-opts", "nope..HEAD"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: cannot scan git range `nope..HEAD` in .: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn staged_scans_what_the_next_commit_would_add() {
    let Some((dir, _, _, _)) = repo_with_two_branches() else {
        return;
    };
    let d = dir.path();
    let o = bb(d, &["--staged"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "no secrets found (staged changes)\n");
    std::fs::write(d.join("new.env"), format!("X=1\n\nGH={}\n", token())).unwrap();
    // Not staged yet: nothing to scan.
    assert_eq!(bb(d, &["--staged"]).status.code(), Some(0));
    git(d, &["add", "new.env"]);
    let o = bb(d, &["--staged", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(places(&o), vec![(String::new(), "new.env".to_string(), 3)]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["fingerprint"], "new.env:github-pat:3");
    // The repository may be given as the PATH; --staged is not combined with a range.
    let o = bb(Path::new("/"), &["--staged", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = bb(d, &["--staged", "--git", "HEAD"]);
    assert_eq!(o.status.code(), Some(2));
}
