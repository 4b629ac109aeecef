//! The history scan of a packed repository: every blob of the packs judged in pack order
//! (each delta applied once to its base) before any tree is diffed, the trees diffed from
//! memory. Findings must be exactly those of one `git log -p` over the range (checked against
//! [`Scanner::scan_git_split`]) and exactly those of the same repository before it was
//! packed, for every kind of place a secret can be brought in at.

use pretty_assertions::assert_eq;
use scan::{Finding, GitScanCounts, Scanner};

use super::git::Repo;
use super::history::scan_both;
use super::{aws_key, github_token};

/// Commits of the history below that the tests name.
struct Made {
    removed: String,
    copies: String,
    other: String,
}

/// A history with a secret added then removed, the same blob at many paths and commits, a
/// merge bringing in a branch's secret and adding one of its own, a rename (with a secret
/// added to the renamed file), a path-only rule's file, a large file edited many times
/// (delta chains in the pack) with a secret in one version, a branch unrelated to `main`
/// holding a secret, and a dangling blob holding one.
fn rich_history(r: &Repo) -> Made {
    let aws = format!("aws_access_key_id = {}\n", aws_key());
    let gh = format!("# config\nname = demo\ngh = {}\n", github_token());
    r.write("README.md", "demo\n");
    r.write("a.cfg", &aws);
    r.commit("a secret added");
    r.write("a.cfg", "aws_access_key_id = none\n");
    let removed = r.commit("and removed");
    std::fs::create_dir_all(r.path().join("sub/deeper")).unwrap();
    for p in ["x.cfg", "sub/y.cfg", "sub/deeper/z.cfg"] {
        r.write(p, &gh);
    }
    let copies = r.commit("three copies of one blob");
    // A large file edited in many commits: the pack stores its versions as deltas.
    let filler: String = (0..400)
        .map(|i| format!("line {i} of a file edited many times\n"))
        .collect();
    for i in 0..12 {
        let extra = if i == 7 { aws.clone() } else { String::new() };
        r.write("big.txt", &format!("{filler}edit {i}\n{extra}"));
        r.commit(&format!("big edit {i}"));
    }
    // A branch with a secret of its own, merged with a secret the merge itself adds.
    r.git(&["checkout", "-q", "-b", "side", &copies]);
    r.write("side.cfg", &gh);
    r.write("README.md", "demo, side\n");
    r.commit("a copy on a branch");
    r.git(&["checkout", "-q", "main"]);
    r.git(&["merge", "-q", "--no-ff", "--no-commit", "side"]);
    r.write("merged.txt", &format!("token = {}\n", github_token()));
    r.commit("merge side, adding a secret in the merge");
    // A rename, then a secret added to the renamed file.
    r.git(&["mv", "x.cfg", "renamed.cfg"]);
    r.commit("rename");
    r.write("renamed.cfg", &format!("{gh}second = {}\n", aws_key()));
    r.commit("edit the renamed file");
    // A path-only rule (`pkcs12-file`).
    r.write("cert.p12", "not really a key store\n");
    r.commit("a key store");
    // A branch unrelated to main.
    r.git(&["checkout", "-q", "--orphan", "other"]);
    r.git(&["rm", "-rq", "--cached", "."]);
    for p in [
        "README.md",
        "a.cfg",
        "renamed.cfg",
        "sub/y.cfg",
        "sub/deeper/z.cfg",
    ] {
        let _ = std::fs::remove_file(r.path().join(p));
    }
    r.write(
        "unrelated.cfg",
        &format!("key = {}\n", aws_key().replace("7A", "7B")),
    );
    let other = r.commit("unrelated history");
    r.git(&["checkout", "-q", "-f", "main"]);
    // A dangling blob: no commit reaches it.
    let dangling = r.path().join("dangling.txt");
    std::fs::write(
        &dangling,
        format!("gh = {}\n", github_token().replace('Z', "Y")),
    )
    .unwrap();
    r.git(&["hash-object", "-w", dangling.to_str().unwrap()]);
    std::fs::remove_file(dangling).unwrap();
    Made {
        removed,
        copies,
        other,
    }
}

/// The ranges the tests scan: whole histories, a range, and `--log-opts`-like filters.
fn ranges(m: &Made) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["HEAD"]),
        v(&["--all"]),
        v(&["main"]),
        v(&[&format!("{}..HEAD", m.removed)]),
        v(&["HEAD", "--not", &m.copies]),
        v(&["--no-merges", "HEAD"]),
        v(&["--merges", "HEAD"]),
        v(&["--max-count=5", "HEAD"]),
        v(&["--author=T", "--all"]),
        v(&["--since=2000-01-01", "HEAD"]),
        v(&["--reverse", "HEAD"]),
        v(&["--first-parent", "HEAD"]),
        v(&["other"]),
    ]
}

fn scan_all(s: &Scanner, r: &Repo, m: &Made) -> Vec<(Vec<Finding>, GitScanCounts)> {
    ranges(m)
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            scan_both(s, r, &a)
        })
        .collect()
}

#[test]
fn a_packed_history_gives_the_findings_of_the_same_history_loose() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    let m = rich_history(&r);
    let loose = scan_all(&s, &r, &m);
    assert!(loose.iter().all(|(_, c)| c.walked == 0), "no pack yet");
    // Everything into one pack, the unreachable blob too (delta chains for big.txt).
    r.git(&["repack", "-a", "-d", "-f", "--keep-unreachable", "-q"]);
    let packed = scan_all(&s, &r, &m);
    for ((range, (lf, lc)), (pf, pc)) in ranges(&m).iter().zip(&loose).zip(&packed) {
        assert_eq!(pf, lf, "{range:?}");
        assert_eq!(pc.commits, lc.commits, "{range:?}");
        assert_eq!(pc.patched, lc.patched, "{range:?}");
        // Packed, either the pack was walked and no blob was read one by one, or (a range
        // of a few commits against the whole pack) the pack was not walked.
        assert!(pc.walked == 0 || pc.blobs == 0, "{range:?}: {pc:?}");
    }
    // The whole histories walked the pack.
    assert!(packed[0].1.walked > 0 && packed[1].1.walked > 0);

    let (head, _) = &packed[0];
    let (all, _) = &packed[1];
    let at = |found: &[Finding], path: &str| found.iter().filter(|f| f.file == path).count();
    // Added then removed: reported where it was added; the same blob once per place; the
    // branch's and the merge's own secrets; the renamed file's new secret under its new
    // name; the edited file's version with the key; the key store by its path.
    for (path, n) in [
        ("a.cfg", 1),
        ("x.cfg", 1),
        ("sub/y.cfg", 1),
        ("sub/deeper/z.cfg", 1),
        ("side.cfg", 1),
        ("merged.txt", 1),
        ("renamed.cfg", 1),
        ("big.txt", 1),
        ("cert.p12", 1),
        ("unrelated.cfg", 0),
    ] {
        assert_eq!(at(head, path), n, "{path} in HEAD: {head:#?}");
    }
    // The unrelated branch is in `--all`, not in `HEAD`: `--all` is `HEAD`'s findings and
    // the unrelated commit's. The dangling blob is in neither.
    assert_eq!(at(all, "unrelated.cfg"), 1);
    let is_other = |f: &&Finding| f.commit.as_deref() == Some(m.other.as_str());
    assert!(!head.iter().any(|f| is_other(&f)));
    let mut rest: Vec<&Finding> = all.iter().filter(|f| !is_other(f)).collect();
    let mut head_sorted: Vec<&Finding> = head.iter().collect();
    rest.sort_by_key(|f| f.fingerprint.clone());
    head_sorted.sort_by_key(|f| f.fingerprint.clone());
    assert_eq!(rest, head_sorted);
    let dangling = github_token().replace('Z', "Y");
    assert!(
        head.iter()
            .chain(all.iter())
            .all(|f| !f.secret.expose().contains(&dangling))
    );
}

#[test]
fn loose_commits_on_top_of_a_pack_are_read_one_by_one() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    let m = rich_history(&r);
    r.git(&["repack", "-a", "-d", "-q"]);
    let (before, _) = scan_both(&s, &r, &["HEAD"]);
    r.write("late.cfg", &format!("gh = {}\n", github_token()));
    let late = r.commit("a loose commit after the repack");
    let (after, counts) = scan_both(&s, &r, &["HEAD"]);
    assert!(counts.walked > 0);
    // The one loose blob is read one by one.
    assert_eq!(counts.blobs, 1);
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[0].commit.as_deref(), Some(late.as_str()));
    assert_eq!(after[0].file, "late.cfg");
    let _ = m;
}

#[test]
fn a_short_range_in_a_large_pack_does_not_walk_the_pack() {
    let Some(r) = Repo::new() else { return };
    let s = Scanner::builtin().unwrap();
    let m = rich_history(&r);
    r.git(&["repack", "-a", "-d", "-q"]);
    // One commit against a pack of many more than 64 objects per commit: its blobs are read
    // one by one, the pack is not walked.
    let (found, counts) = scan_both(&s, &r, &["HEAD~1..HEAD"]);
    assert_eq!(counts.walked, 0);
    assert_eq!((counts.commits, counts.blobs), (1, 1));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].file, "cert.p12");
    let _ = m;
}
