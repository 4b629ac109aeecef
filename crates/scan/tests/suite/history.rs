//! The history scan that reads each blob once: the same findings as one `git log -p` over the
//! range (checked against [`Scanner::scan_git_split`], which is that), each blob read once, and
//! only the commits that bring in a blob that may hold a finding shown as patches.

use pretty_assertions::assert_eq;
use scan::{GitScanCounts, GitScanRequest, RuleSet, ScanOptions, Scanner};

use super::git::Repo;
use super::{aws_key, github_token};

type Place = (Option<String>, String, u32, String);

fn places(found: &[scan::Finding]) -> Vec<Place> {
    found
        .iter()
        .map(|f| (f.commit.clone(), f.file.clone(), f.line, f.rule_id.clone()))
        .collect()
}

pub(super) fn req(r: &Repo, rev_args: &[&str]) -> GitScanRequest {
    GitScanRequest {
        repo: r.path().to_path_buf(),
        rev_args: rev_args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
    }
}

/// The scan of `rev_args`, after checking it is exactly what one `git log -p` reports.
pub(super) fn scan_both(
    s: &Scanner,
    r: &Repo,
    rev_args: &[&str],
) -> (Vec<scan::Finding>, GitScanCounts) {
    let req = req(r, rev_args);
    let (found, counts) = s.scan_git_counted(&req).unwrap();
    let counts = counts.expect("commit selectors read each blob once");
    assert_eq!(
        found,
        s.scan_git_split(&req, usize::MAX).unwrap(),
        "{rev_args:?}"
    );
    (found, counts)
}

#[test]
fn the_same_blob_at_many_paths_and_commits_is_read_once_and_reported_once_per_place() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    let secret = format!("# config\nname = demo\ngh = {}\n", github_token());
    r.write("README.md", "demo\n");
    let base = r.commit("base");
    for p in ["a.cfg", "b.cfg", "c.cfg"] {
        r.write(p, &secret);
    }
    let first = r.commit("three copies");
    std::fs::create_dir(r.path().join("sub")).unwrap();
    r.write("sub/d.cfg", &secret);
    r.write("e.cfg", &secret);
    let second = r.commit("two more copies");
    // The same blob on another branch, by another commit.
    r.git(&["checkout", "-q", "-b", "side", &base]);
    r.write("side.cfg", &secret);
    let side = r.commit("a copy on a branch");
    r.git(&["checkout", "-q", "main"]);
    r.git(&["merge", "-q", "--no-ff", "-m", "merge side", "side"]);

    let (found, counts) = scan_both(&s, &r, &["HEAD"]);
    let at = |c: &str, p: &str| {
        (
            Some(c.to_string()),
            p.to_string(),
            3,
            "github-pat".to_string(),
        )
    };
    let mut got = places(&found);
    got.sort();
    let mut want = vec![
        at(&side, "side.cfg"),
        at(&second, "e.cfg"),
        at(&second, "sub/d.cfg"),
        at(&first, "a.cfg"),
        at(&first, "b.cfg"),
        at(&first, "c.cfg"),
    ];
    want.sort();
    assert_eq!(got, want);
    // Five commits; two blobs (README.md and the copied file), each read once; the merge
    // brings in nothing new to both parents, so only the three commits are shown as patches.
    assert_eq!(
        counts,
        GitScanCounts {
            commits: 5,
            blobs: 2,
            patched: 3,
            flagged: 1,
            walked: 0,
        }
    );
}

#[test]
fn a_clean_history_shows_no_patch() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    for i in 0..12 {
        r.write(&format!("f{}.txt", i % 4), &format!("line {i}\nmore {i}\n"));
        r.commit(&format!("c{i}"));
    }
    let (found, counts) = scan_both(&s, &r, &["HEAD"]);
    assert_eq!(found, vec![]);
    assert_eq!(
        counts,
        GitScanCounts {
            commits: 12,
            blobs: 12,
            patched: 0,
            flagged: 0,
            walked: 0,
        }
    );
}

#[test]
fn a_push_of_only_old_objects_reads_nothing() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    r.write("a.cfg", &format!("gh = {}\n", github_token()));
    let old = r.commit("accepted earlier");
    r.git(&["branch", "copy", &old]);
    // A new ref at a commit the upstream has: `<new> --not --all` names no commit.
    let (found, counts) = scan_both(&s, &r, &[&old, "--not", "--all"]);
    assert_eq!(found, vec![]);
    assert_eq!(counts, GitScanCounts::default());
    let objects = s
        .scan_git_objects(&req(&r, &[&old, "--not", "--all"]), &Default::default())
        .unwrap();
    assert_eq!((objects.findings, objects.objects), (vec![], 0));
}

#[test]
fn a_blob_brought_back_by_a_revert_is_reported_where_it_comes_back() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    let with = format!("key = {}\n", aws_key());
    r.write("k.txt", &with);
    let added = r.commit("add");
    r.write("k.txt", "key = none\n");
    let removed = r.commit("remove");
    r.write("k.txt", &with);
    let back = r.commit("back");
    let (found, _) = scan_both(&s, &r, &[&format!("{removed}..{back}")]);
    assert_eq!(
        places(&found),
        vec![(
            Some(back.clone()),
            "k.txt".to_string(),
            1,
            "aws-access-key-id".to_string()
        )]
    );
    let (found, counts) = scan_both(&s, &r, &["HEAD"]);
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].commit.as_deref(), Some(added.as_str()));
    // The blob holding the key is read once for both commits that bring it in.
    assert_eq!((counts.blobs, counts.patched), (2, 2));
}

#[test]
fn a_secret_only_in_lines_kept_from_the_parent_is_not_the_commits() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    r.write("a.txt", &format!("gh = {}\nother\n", github_token()));
    let first = r.commit("add");
    r.write("a.txt", &format!("gh = {}\nchanged\n", github_token()));
    let edit = r.commit("edit another line");
    // The edited blob holds the secret, so the commit is shown; its patch does not add it.
    let (found, counts) = scan_both(&s, &r, &[&format!("{first}..{edit}")]);
    assert_eq!(found, vec![]);
    assert_eq!((counts.blobs, counts.patched), (1, 1));
}

/// Path-only rules, rules limited to paths and allowlists naming paths or commits depend on
/// where a blob sits: the blob pass leaves them out and the patches decide.
#[test]
fn rules_and_allowlists_that_depend_on_the_path_give_the_same_findings() {
    let Some(r) = Repo::new() else { return };
    r.write("keep.txt", "nothing\n");
    let base = r.commit("base");
    r.write("id_rsa", "not a key really\n");
    r.write("deploy.pem", "also nothing\n");
    for d in ["vendor", "src"] {
        std::fs::create_dir(r.path().join(d)).unwrap();
    }
    r.write("vendor/lib.cfg", &format!("gh = {}\n", github_token()));
    r.write("src/app.cfg", &format!("gh = {}\n", github_token()));
    r.write("only-here.env", "ACMEID acme_8d3k2m9x7q1w5e4r\n");
    r.write("elsewhere.txt", "ACMEID acme_8d3k2m9x7q1w5e4r\n");
    let second = r.commit("path-dependent things");
    r.write("late.cfg", &format!("gh = {}\n", github_token()));
    let third = r.commit("allowlisted commit");
    let text = format!(
        r#"
[extend]
useDefault = true

[[rules]]
id = "ssh-key-file"
description = "an SSH private key file"
path = '''(?:^|/)id_rsa$'''

[[rules]]
id = "acme-token"
description = "ACME token, only in .env files"
regex = '''ACMEID (acme_[a-z0-9]{{16}})'''
path = '''\.env$'''
keywords = ["acme_"]

[[allowlists]]
description = "vendored code"
paths = ['''^vendor/''']

[[allowlists]]
description = "an accepted commit"
commits = ["{third}"]
"#
    );
    let s = Scanner::from_rules(RuleSet::from_toml_str(&text, "t.toml", None).unwrap());
    let (found, counts) = scan_both(&s, &r, &["HEAD"]);
    let at = |p: &str, line: u32, rule: &str| {
        (Some(second.clone()), p.to_string(), line, rule.to_string())
    };
    let mut got = places(&found);
    got.sort();
    assert_eq!(
        got,
        vec![
            at("id_rsa", 0, "ssh-key-file"),
            at("only-here.env", 1, "acme-token"),
            at("src/app.cfg", 1, "github-pat"),
        ]
    );
    assert_eq!(counts.patched, 1, "{base}");
}

#[test]
fn errors_are_those_of_one_git_log() {
    let Some(r) = Repo::new() else { return };
    r.write("a.txt", "x\n");
    r.commit("one");
    let s = Scanner::builtin().unwrap();
    for range in ["nope..HEAD", "HEAD..nope", "--bogus-option"] {
        let req = GitScanRequest::range(r.path(), range);
        assert_eq!(
            s.scan_git(&req).unwrap_err().to_string(),
            s.scan_git_split(&req, usize::MAX).unwrap_err().to_string(),
            "{range}"
        );
    }
    let missing = tempfile::tempdir().unwrap();
    let req = GitScanRequest::range(missing.path(), "HEAD");
    assert_eq!(
        s.scan_git(&req).unwrap_err().to_string(),
        s.scan_git_split(&req, usize::MAX).unwrap_err().to_string()
    );
    let hasty = Scanner::builtin().unwrap().with_options(ScanOptions {
        git_timeout: std::time::Duration::ZERO,
        ..ScanOptions::default()
    });
    let req = GitScanRequest::range(r.path(), "HEAD");
    let err = (0..5).find_map(|_| hasty.scan_git(&req).err()).unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot scan git range `HEAD` in {}: git log did not finish within 0 s and was stopped",
            r.path().display()
        )
    );
}

/// The push scan (each new blob read once, for both scans) reports exactly what the history
/// scan and the object scan report one after the other.
#[test]
fn the_push_scan_is_the_history_scan_then_the_object_scan() {
    let Some(r) = super::git::busy_history() else {
        return;
    };
    // A tag at a blob, a big blob and one brought back by a revert, on top of the history.
    r.write("tagged.txt", &format!("gh = {}\n", github_token()));
    let tagged = r.git(&["hash-object", "-w", "tagged.txt"]);
    std::fs::remove_file(r.path().join("tagged.txt")).unwrap();
    r.git(&["tag", "blob-tag", &tagged]);
    r.write("big.bin", &"x".repeat(64 * 1024));
    r.commit("big");
    let mid = r.git(&["rev-parse", "HEAD~5"]);
    let s = Scanner::builtin().unwrap().with_options(ScanOptions {
        honor_inline_allow: false,
        ..ScanOptions::default()
    });
    let small = scan::ObjectScanOptions {
        max_blob_size: 32 * 1024,
    };
    for rev_args in [
        vec!["HEAD".to_string(), "blob-tag".to_string()],
        vec!["HEAD".to_string(), "--not".to_string(), mid.clone()],
        vec!["HEAD".to_string(), "--not".to_string(), "side2".to_string()],
        vec!["--all".to_string()],
        vec!["HEAD".to_string(), "-w".to_string()],
    ] {
        let req = GitScanRequest {
            repo: r.path().to_path_buf(),
            rev_args: rev_args.clone(),
            env: vec![],
        };
        let push = s.scan_push(&req, &small).unwrap();
        let mut want = s.scan_git(&req).unwrap();
        let objects = s.scan_git_objects(&req, &small).unwrap();
        want.extend(objects.findings);
        assert!(!want.is_empty(), "{rev_args:?}");
        assert_eq!(push.findings, want, "{rev_args:?}");
        assert_eq!(push.unreadable, objects.unreadable, "{rev_args:?}");
        assert_eq!(push.objects, objects.objects, "{rev_args:?}");
    }
    // Nothing new: nothing read, nothing found.
    let head = r.git(&["rev-parse", "HEAD"]);
    let push = s
        .scan_push(
            &req(&r, &[&head, "--not", "--all"]),
            &scan::ObjectScanOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (push.findings, push.unreadable, push.objects),
        (vec![], vec![], 0)
    );
}

/// A rule whose keyword sits far from its secret: the lines a commit adds put them next to each
/// other, the whole blob does not, and the blob is still judged whole (not only around the
/// keyword), so the commit is shown and the finding is the same.
#[test]
fn a_keyword_far_from_its_secret_in_a_large_blob_is_still_found() {
    let Some(r) = Repo::new() else { return };
    let (_, added, s) = r.keyword_far_from_its_secret();
    let (found, counts) = scan_both(&s, &r, &["HEAD"]);
    assert_eq!(
        places(&found),
        vec![(
            Some(added),
            "big.txt".to_string(),
            3002,
            "acme-key".to_string()
        )]
    );
    assert_eq!(counts.patched, 1);
}
