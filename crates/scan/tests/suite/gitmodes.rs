//! gitleaks' git modes (issue 23 item 4) and the in-process object reading of the history
//! scan: blank added lines and line numbers, several ranges and `--all`, the staged scan, and
//! a quarantine's object directory given by the environment.

use pretty_assertions::assert_eq;
use scan::{GitScanRequest, Scanner};

use super::git::Repo;
use super::{aws_key, github_token};

type Place = (Option<String>, String, u32, String);

fn req(r: &Repo, rev_args: &[&str]) -> GitScanRequest {
    GitScanRequest {
        repo: r.path().to_path_buf(),
        rev_args: rev_args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
    }
}

fn places(found: &[scan::Finding]) -> Vec<Place> {
    found
        .iter()
        .map(|f| (f.commit.clone(), f.file.clone(), f.line, f.rule_id.clone()))
        .collect()
}

/// The scan of `rev_args`, checked to be what one `git log -p` over them reports.
fn scan(r: &Repo, rev_args: &[&str]) -> Vec<Place> {
    let s = Scanner::builtin().unwrap();
    let req = req(r, rev_args);
    let found = s.scan_git(&req).unwrap();
    assert_eq!(
        found,
        s.scan_git_split(&req, usize::MAX).unwrap(),
        "{rev_args:?}"
    );
    places(&found)
}

/// A file as committed, byte for byte (leading blank lines kept).
fn show(r: &Repo, commit: &str, path: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(r.path())
        .args(["show", &format!("{commit}:{path}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The 1-based lines of `path` as committed in `commit` that hold `needle` (where a finding
/// there must be, whatever the diff looked like).
fn lines_with(r: &Repo, commit: &str, path: &str, needle: &str) -> Vec<u32> {
    show(r, commit, path)
        .split('\n')
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| u32::try_from(i + 1).unwrap())
        .collect()
}

/// Issue 23: "when a diff hunk starts with a blank added line, later lines of the hunk are
/// reported one line too low". Three commits; each hunk with a secret starts with one or more
/// blank added lines (at the file's start, in its middle, in a second hunk of the same file,
/// with a blank line with spaces, with CRLF line ends); every finding is on the secret's line
/// in the committed file.
#[test]
fn hunks_that_start_with_blank_added_lines_keep_their_line_numbers() {
    let Some(r) = Repo::new() else { return };
    let gh = github_token();
    let aws = aws_key();
    r.write("a.cfg", "one\ntwo\nthree\n");
    r.write("b.cfg", "alpha\n");
    let c1 = r.commit("base");
    // A hunk in the middle that starts with a blank line, one at the start of a new file.
    r.write("a.cfg", &format!("one\ntwo\n\ngh = {gh}\nthree\n"));
    r.write("c.cfg", &format!("\n\n\nkey = {aws}\n"));
    let c2 = r.commit("blank lines then secrets");
    // Two hunks in one file, each starting blank; a blank line of spaces; CRLF.
    r.write(
        "a.cfg",
        &format!("\nkey = {aws}\none\ntwo\n\ngh = {gh}\nthree\n\n   \nnext = {aws}\n"),
    );
    r.write("b.cfg", &format!("alpha\r\n\r\n\r\ngh = {gh}\r\n"));
    let c3 = r.commit("more blank hunks");
    let found = scan(&r, &["HEAD"]);
    // Every finding is on a line of the committed file that holds its secret.
    for (commit, file, line, rule) in &found {
        let commit = commit.as_deref().unwrap();
        let needle = if rule == "github-pat" { &gh } else { &aws };
        let lines = lines_with(&r, commit, file, needle);
        assert!(
            lines.contains(line),
            "{commit} {file}:{line} {rule}: the secret is on line(s) {lines:?}"
        );
    }
    let at = |c: &str, f: &str, l: u32, rule: &str| {
        (Some(c.to_string()), f.to_string(), l, rule.to_string())
    };
    let mut want = vec![
        at(&c2, "a.cfg", 4, "github-pat"),
        at(&c2, "c.cfg", 4, "aws-access-key-id"),
        at(&c3, "a.cfg", 2, "aws-access-key-id"),
        at(&c3, "a.cfg", 10, "aws-access-key-id"),
        // c3 keeps c2's `gh =` line of a.cfg (not added by c3: not c3's).
        at(&c3, "b.cfg", 4, "github-pat"),
    ];
    want.sort();
    let mut got = found;
    got.sort();
    assert_eq!(got, want);
    assert_eq!(lines_with(&r, &c3, "a.cfg", "next = "), vec![10]);
    assert!(show(&r, &c1, "a.cfg").starts_with("one"));
}

/// gitleaks' `--log-opts`: several ranges, `--all`, `--not`; each means what it means to
/// `git log`, and the history scan (objects read in process) reports what one `git log -p`
/// with the same arguments reports.
#[test]
fn log_opts_with_several_ranges_and_all_mean_what_they_mean_to_git_log() {
    let Some(r) = Repo::new() else { return };
    let gh = github_token();
    r.write("a.txt", "base\n");
    let base = r.commit("base");
    r.write("a.txt", &format!("base\ngh = {gh}\n"));
    let on_main = r.commit("main secret");
    r.git(&["checkout", "-q", "-b", "side", &base]);
    r.write("s.txt", &format!("\nk = {}\n", aws_key()));
    let on_side = r.commit("side secret");
    r.git(&["checkout", "-q", "main"]);
    let main_hit = (
        Some(on_main.clone()),
        "a.txt".to_string(),
        2,
        "github-pat".to_string(),
    );
    let side_hit = (
        Some(on_side.clone()),
        "s.txt".to_string(),
        2,
        "aws-access-key-id".to_string(),
    );
    assert_eq!(scan(&r, &["HEAD"]), vec![main_hit.clone()]);
    let mut all = scan(&r, &["--all"]);
    all.sort();
    let mut both = vec![main_hit.clone(), side_hit.clone()];
    both.sort();
    assert_eq!(all, both);
    let mut two = scan(&r, &[&format!("{base}..main"), &format!("{base}..side")]);
    two.sort();
    assert_eq!(two, both);
    assert_eq!(scan(&r, &["--all", "--not", "main"]), vec![side_hit]);
    assert_eq!(scan(&r, &["--branches=mai*"]), vec![main_hit]);
}

/// What a pre-commit hook scans: the staged lines only (not the work tree's, not the
/// committed ones), with their line numbers in the staged file and no commit; before the
/// first commit too.
#[test]
fn the_staged_scan_reads_the_index_against_head() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    let gh = github_token();
    let aws = aws_key();
    // No commit yet: everything staged is new.
    r.write("first.cfg", &format!("\n\ngh = {gh}\n"));
    r.git(&["add", "first.cfg"]);
    let found = s.scan_staged(r.path()).unwrap();
    assert_eq!(
        places(&found),
        vec![(None, "first.cfg".to_string(), 3, "github-pat".to_string())]
    );
    assert_eq!(found[0].fingerprint, "first.cfg:github-pat:3");
    r.commit("first");
    assert_eq!(s.scan_staged(r.path()).unwrap(), vec![]);
    // Staged: a new line in a committed file, a new file; unstaged: another secret.
    r.write(
        "first.cfg",
        &format!("\n\ngh = {gh}\nname = x\n\nkey = {aws}\n"),
    );
    r.git(&["add", "first.cfg"]);
    r.write("new.cfg", &format!("\nk = {aws}\n"));
    r.git(&["add", "new.cfg"]);
    r.write("new.cfg", &format!("\nk = {aws}\nlater = {gh}\n"));
    r.write("untracked.cfg", &format!("gh = {gh}\n"));
    let mut got = places(&s.scan_staged(r.path()).unwrap());
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                None,
                "first.cfg".to_string(),
                6,
                "aws-access-key-id".to_string()
            ),
            (
                None,
                "new.cfg".to_string(),
                2,
                "aws-access-key-id".to_string()
            ),
        ]
    );
    // Not a repository: git's error, naming the scan.
    let elsewhere = tempfile::tempdir().unwrap();
    let err = s.scan_staged(elsewhere.path()).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot scan git range `--staged` in "),
        "{err}"
    );
}

/// A receive quarantine: the new objects are in a directory of their own
/// (`GIT_OBJECT_DIRECTORY`), the repository's in `GIT_ALTERNATE_OBJECT_DIRECTORIES`. The
/// objects read in process are found in both, as git finds them.
#[test]
fn objects_in_a_quarantine_directory_are_read_through_the_environment() {
    let Some(r) = Repo::new() else { return };
    let gh = github_token();
    r.write("a.txt", "base\n");
    let base = r.commit("base");
    let quarantine = tempfile::tempdir().unwrap();
    let q = quarantine.path().join("incoming");
    std::fs::create_dir_all(q.join("pack")).unwrap();
    let objects = r.path().join(".git/objects");
    // Write the new commit's objects into the quarantine only.
    r.write("a.txt", &format!("base\ngh = {gh}\n"));
    let env = [
        ("GIT_OBJECT_DIRECTORY", q.as_os_str()),
        ("GIT_ALTERNATE_OBJECT_DIRECTORIES", objects.as_os_str()),
    ];
    let git_q = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(r.path())
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(args)
            .envs(env)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", r.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git_q(&["add", "a.txt"]);
    let tree = git_q(&["write-tree"]);
    let new = git_q(&["commit-tree", &tree, "-p", &base, "-m", "secret"]);
    // Without the quarantine the new commit is not there.
    let s = Scanner::builtin().unwrap();
    let plain = GitScanRequest::range(r.path(), &new);
    assert!(s.scan_git(&plain).is_err());
    let quarantined = GitScanRequest {
        repo: r.path().to_path_buf(),
        rev_args: vec![new.clone(), "--not".into(), base.clone()],
        env: env
            .iter()
            .map(|(k, v)| (k.into(), v.to_os_string()))
            .collect(),
    };
    let (found, counts) = s.scan_git_counted(&quarantined).unwrap();
    assert_eq!(
        places(&found),
        vec![(
            Some(new.clone()),
            "a.txt".to_string(),
            2,
            "github-pat".to_string()
        )]
    );
    let counts = counts.unwrap();
    assert_eq!((counts.commits, counts.blobs, counts.patched), (1, 1, 1));
    // The whole history: the base commit's objects come from the alternate.
    let whole = GitScanRequest {
        rev_args: vec![new.clone()],
        ..quarantined
    };
    let (found, counts) = s.scan_git_counted(&whole).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(counts.unwrap().commits, 2);
}
