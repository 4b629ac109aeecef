//! Scanning git ranges in real repositories built with the real `git`.

use std::path::Path;
use std::process::Command;

use pretty_assertions::assert_eq;
use scan::{GitScanRequest, ScanOptions, Scanner};

use super::github_token;

/// A throwaway repository; `None` (with a note on stderr) when git is not installed.
pub(super) struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub(super) fn new() -> Option<Self> {
        if Command::new("git").arg("--version").output().is_err() {
            eprintln!("skipping: git is not installed");
            return None;
        }
        let repo = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        Some(repo)
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@example.invalid",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub(super) fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path().join(name), content).unwrap();
    }

    pub(super) fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// A 3,000-line `big.txt` committed, then a commit that puts a rule's keyword on its first
    /// line and the rule's secret on its last: far apart in the blob, next to each other in
    /// the lines the commit adds. Returns (the first commit, the second, a scanner whose one
    /// rule, `acme-key`, needs the keyword anywhere in the fragment).
    pub(super) fn keyword_far_from_its_secret(&self) -> (String, String, Scanner) {
        let filler: String = (0..3000)
            .map(|i| format!("filler line number {i} of a large file\n"))
            .collect();
        self.write("big.txt", &filler);
        let base = self.commit("big");
        let secret = super::tok(&["Zq8Lr2Xv5Nw1Tb7Kd4Hs9", "Mf3Pc6Gy0Ja2Ue5Rt1W"]);
        self.write("big.txt", &format!("acmecloud\n{filler}{secret}\n"));
        let added = self.commit("keyword at the top, secret at the bottom");
        let text = r#"
[[rules]]
id = "acme-key"
description = "ACME key (keyword anywhere in the fragment)"
regex = '''\b([A-Za-z0-9]{40})\b'''
keywords = ["acmecloud"]
"#;
        let rules = scan::RuleSet::from_toml_str(text, "t.toml", None).unwrap();
        (base, added, Scanner::from_rules(rules))
    }

    fn scan(&self, rev_args: &[&str]) -> Vec<(Option<String>, String, u32, String)> {
        self.scan_with(&Scanner::builtin().unwrap(), rev_args)
    }

    fn scan_with(
        &self,
        s: &Scanner,
        rev_args: &[&str],
    ) -> Vec<(Option<String>, String, u32, String)> {
        s.scan_git(&GitScanRequest {
            repo: self.path().to_path_buf(),
            rev_args: rev_args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
        })
        .unwrap()
        .into_iter()
        .map(|f| (f.commit, f.file, f.line, f.rule_id))
        .collect()
    }
}

#[test]
fn secret_added_then_removed_is_found_in_the_commit_that_added_it() {
    let Some(r) = Repo::new() else { return };
    r.write("app.cfg", "name = demo\n");
    let base = r.commit("base");
    r.write(
        "app.cfg",
        &format!("name = demo\ngh = {}\n", github_token()),
    );
    let added = r.commit("add secret");
    r.write("app.cfg", "name = demo\n");
    let removed = r.commit("remove secret");
    let expected = vec![(
        Some(added.clone()),
        "app.cfg".to_string(),
        2,
        "github-pat".to_string(),
    )];
    assert_eq!(r.scan(&["HEAD"]), expected);
    assert_eq!(r.scan(&[&format!("{base}..{removed}")]), expected);
    assert_eq!(r.scan(&[&format!("{added}..{removed}")]), vec![]);
    // The same finding's fingerprint carries the commit.
    let f = Scanner::builtin()
        .unwrap()
        .scan_git(&GitScanRequest::range(r.path(), "HEAD"))
        .unwrap();
    assert_eq!(f[0].fingerprint, format!("{added}:app.cfg:github-pat:2"));
}

#[test]
fn merges_report_only_what_the_merge_itself_adds() {
    let Some(r) = Repo::new() else { return };
    r.write("a.txt", "one\ntwo\nthree\n");
    r.commit("base");
    r.git(&["checkout", "-q", "-b", "side"]);
    r.write("side.txt", &format!("side = {}\n", github_token()));
    let side = r.commit("side adds a secret");
    r.git(&["checkout", "-q", "main"]);
    r.write("a.txt", "one\ntwo\nthree\nfour\n");
    r.commit("main work");
    // An "evil" merge: the merge commit itself adds a secret no parent has.
    r.git(&["merge", "-q", "--no-ff", "--no-commit", "side"]);
    let evil = format!("{}{}", "AKIA", "ZQ3MX7TB2WK5RN4J");
    r.write("a.txt", &format!("one\ntwo\nthree\nfour\nkey = {evil}\n"));
    let merge = r.commit("merge side");
    assert_eq!(
        r.scan(&["HEAD"]),
        vec![
            (
                Some(merge.clone()),
                "a.txt".to_string(),
                5,
                "aws-access-key-id".to_string()
            ),
            (
                Some(side.clone()),
                "side.txt".to_string(),
                1,
                "github-pat".to_string()
            ),
        ]
    );
    // A push of just the merge (its parents already accepted) reports only the merge's own line.
    assert_eq!(
        r.scan(&[
            &merge,
            "--not",
            &format!("{merge}^1"),
            &format!("{merge}^2")
        ]),
        vec![(
            Some(merge),
            "a.txt".to_string(),
            5,
            "aws-access-key-id".to_string()
        )]
    );
}

#[test]
fn renamed_files_are_reported_under_the_new_name_and_not_rescanned() {
    let Some(r) = Repo::new() else { return };
    let body: String = (0..20)
        .map(|i| format!("line {i} of a long enough file\n"))
        .collect();
    r.write("old.txt", &format!("{body}gh = {}\n", github_token()));
    let first = r.commit("add");
    r.git(&["mv", "old.txt", "new.txt"]);
    let renamed = r.commit("pure rename");
    assert_eq!(r.scan(&[&format!("{first}..{renamed}")]), vec![]);
    let second = format!("{}{}", "gl", "pat-Xq7Lm2Nv9Rb4Tc8Wd1Kz");
    r.write(
        "new.txt",
        &format!("{body}gh = {}\ngl = {second}\n", github_token()),
    );
    r.git(&["mv", "new.txt", "newer.txt"]);
    let edited = r.commit("rename with an edit");
    assert_eq!(
        r.scan(&[&format!("{first}..{edited}")]),
        vec![(
            Some(edited),
            "newer.txt".to_string(),
            22,
            "gitlab-pat".to_string()
        )]
    );
}

#[test]
fn inline_allow_can_be_switched_off_for_the_gate() {
    let Some(r) = Repo::new() else { return };
    r.write(
        "a.txt",
        &format!("x = {} # gitleaks:allow\n", github_token()),
    );
    let c = r.commit("marked");
    assert_eq!(r.scan(&["HEAD"]), vec![]);
    let gate = Scanner::builtin().unwrap().with_options(ScanOptions {
        honor_inline_allow: false,
        ..ScanOptions::default()
    });
    assert_eq!(
        r.scan_with(&gate, &["HEAD"]),
        vec![(Some(c), "a.txt".to_string(), 1, "github-pat".to_string())]
    );
}

#[test]
fn environment_is_passed_to_git() {
    let Some(r) = Repo::new() else { return };
    r.write("a.txt", &format!("x = {}\n", github_token()));
    r.commit("secret");
    let elsewhere = tempfile::tempdir().unwrap();
    let s = Scanner::builtin().unwrap();
    let found = s
        .scan_git(&GitScanRequest {
            repo: elsewhere.path().to_path_buf(),
            rev_args: vec!["HEAD".into()],
            env: vec![("GIT_DIR".into(), r.path().join(".git").into_os_string())],
        })
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[test]
fn bad_range_is_an_error_naming_it() {
    let Some(r) = Repo::new() else { return };
    r.write("a.txt", "x\n");
    r.commit("one");
    let err = Scanner::builtin()
        .unwrap()
        .scan_git(&GitScanRequest::range(r.path(), "nope..HEAD"))
        .unwrap_err()
        .to_string();
    let prefix = format!(
        "cannot scan git range `nope..HEAD` in {}: ",
        r.path().display()
    );
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.contains("nope..HEAD"), "{err}");
}

/// A history with merges (one with a conflict resolved by hand, one "evil"), renames, binary
/// files, deletions and secrets spread over many commits on two branches.
pub(super) fn busy_history() -> Option<Repo> {
    let r = Repo::new()?;
    // key ids are base32 (A-Z, 2-7): the number's digits as letters
    let aws = |i: usize| {
        let tail: String = format!("{i:04}")
            .bytes()
            .map(|d| char::from(b'A' + (d - b'0')))
            .collect();
        format!("{}{}{tail}", "AKIA", "ZQ3MX7TB2WK5")
    };
    let body: String = (0..30).map(|i| format!("filler line {i}\n")).collect();
    r.write("shared.txt", "one\ntwo\nthree\n");
    r.commit("base");
    for round in 0..6 {
        r.git(&["checkout", "-q", "-b", &format!("side{round}")]);
        for i in 0..6 {
            let n = round * 100 + i;
            r.write(
                &format!("side{round}_{i}.txt"),
                &format!("{body}key = {}\n", aws(n)),
            );
            std::fs::write(
                r.path().join(format!("blob{round}_{i}.bin")),
                [0u8, 1, 2, 255, 0, 7, n as u8],
            )
            .unwrap();
            if i == 3 {
                r.git(&[
                    "mv",
                    &format!("side{round}_0.txt"),
                    &format!("moved{round}.txt"),
                ]);
                // A rename with an edit: only the new line is the commit's own.
                r.write(
                    &format!("moved{round}.txt"),
                    &format!("{body}key = {}\nmore = {}\n", aws(round * 100), aws(n + 20)),
                );
            }
            r.commit(&format!("side {round} {i}"));
        }
        r.write("shared.txt", &format!("one\nside {round}\nthree\n"));
        r.commit(&format!("side {round} edits shared"));
        r.git(&["checkout", "-q", "main"]);
        for i in 0..5 {
            let n = round * 100 + 50 + i;
            r.write(
                &format!("main{round}_{i}.txt"),
                &format!("token = {}\n", aws(n)),
            );
            if i == 4 {
                r.git(&["rm", "-q", &format!("main{round}_0.txt")]);
            }
            r.commit(&format!("main {round} {i}"));
        }
        r.write("shared.txt", &format!("one\nmain {round}\nthree\n"));
        r.commit(&format!("main {round} edits shared"));
        // Conflicting merge resolved by hand, with a secret only the merge adds.
        let _ = Command::new("git")
            .arg("-C")
            .arg(r.path())
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args([
                "merge",
                "-q",
                "--no-ff",
                "--no-commit",
                &format!("side{round}"),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", r.path())
            .output()
            .unwrap();
        r.write(
            "shared.txt",
            &format!(
                "one\nresolved {round}\nthree\nmerge = {}\n",
                aws(round * 100 + 99)
            ),
        );
        r.commit(&format!("merge side {round}"));
    }
    Some(r)
}

#[test]
fn split_scan_reports_exactly_what_one_git_log_reports() {
    let Some(r) = busy_history() else { return };
    let s = Scanner::builtin().unwrap();
    let count: usize = r.git(&["rev-list", "--count", "HEAD"]).parse().unwrap();
    assert!(count > 80, "{count}");
    let mid = r.git(&["rev-parse", "HEAD~3"]);
    let ranges: Vec<Vec<String>> = vec![
        vec!["HEAD".into()],
        vec![format!("{mid}..HEAD")],
        vec!["HEAD".into(), "--not".into(), "side2".into()],
        vec!["--all".into()],
        vec!["HEAD".into(), "--topo-order".into()],
        vec!["HEAD".into(), "--reverse".into()],
        vec!["HEAD".into(), "--first-parent".into()],
        vec![
            "--branches".into(),
            "--max-count=50".into(),
            "--skip=3".into(),
        ],
        vec!["HEAD".into(), "--no-merges".into()],
        // Options that change the diffs keep the one `git log` (same results either way).
        vec!["HEAD".into(), "-w".into()],
    ];
    for rev_args in ranges {
        let req = GitScanRequest {
            repo: r.path().to_path_buf(),
            rev_args: rev_args.clone(),
            env: vec![],
        };
        let whole = s.scan_git_split(&req, usize::MAX).unwrap();
        assert!(!whole.is_empty(), "{rev_args:?}");
        for split_min in [0, 1, 7, 64] {
            let split = s.scan_git_split(&req, split_min).unwrap();
            assert_eq!(split, whole, "{rev_args:?} split above {split_min}");
        }
        assert_eq!(s.scan_git(&req).unwrap(), whole, "{rev_args:?}");
    }
    // Every kind of change is there: merges' own lines, renamed files, all the commits.
    let whole = s
        .scan_git_split(&GitScanRequest::range(r.path(), "HEAD"), usize::MAX)
        .unwrap();
    assert_eq!(whole.len(), 6 * 6 + 6 + 6 * 5 + 6);
    assert!(whole.iter().any(|f| f.file.starts_with("moved")));
    assert!(whole.iter().any(|f| f.file == "shared.txt"));
}

#[test]
fn split_scan_keeps_the_errors_of_one_git_log() {
    let Some(r) = busy_history() else { return };
    let s = Scanner::builtin().unwrap();
    for range in ["nope..HEAD", "HEAD..nope", "--bogus-option"] {
        let req = GitScanRequest::range(r.path(), range);
        let whole = s.scan_git_split(&req, usize::MAX).unwrap_err().to_string();
        let split = s.scan_git_split(&req, 0).unwrap_err().to_string();
        assert_eq!(split, whole, "{range}");
    }
    // A scan past its timeout stops every git process and says so, split or not.
    let hasty = Scanner::builtin().unwrap().with_options(ScanOptions {
        git_timeout: std::time::Duration::ZERO,
        ..ScanOptions::default()
    });
    let req = GitScanRequest::range(r.path(), "HEAD");
    let expected = format!(
        "cannot scan git range `HEAD` in {}: git log did not finish within 0 s and was stopped",
        r.path().display()
    );
    for split_min in [0, usize::MAX] {
        // A zero timeout fires as soon as the watchdog thread runs; on a very busy machine the
        // scan could finish before that, hence a few tries.
        let err = (0..5)
            .find_map(|_| hasty.scan_git_split(&req, split_min).err())
            .unwrap();
        assert_eq!(err.to_string(), expected);
    }
    let missing = tempfile::tempdir().unwrap();
    let req = GitScanRequest::range(missing.path(), "HEAD");
    assert_eq!(
        s.scan_git_split(&req, 0).unwrap_err().to_string(),
        s.scan_git_split(&req, usize::MAX).unwrap_err().to_string()
    );
}
