//! A push's objects read by walking the received pack in delta-tree order (each delta applied
//! once to its base) give exactly what reading every object one by one gives
//! ([`Scanner::scan_push_one_by_one`], the reader before the walk): the same findings in the
//! same order, the same unreadable blobs, the same counts; on packs whose objects are delta
//! chains dozens long, received the way the gate receives them (a thin pack completed by
//! `git index-pack --fix-thin`).

use std::process::Command;

use pretty_assertions::assert_eq;
use scan::{GitScanRequest, ObjectScanOptions, ScanOptions, Scanner};

use super::git::Repo;
use super::{aws_key, github_token};

/// A source-like file of about 24 KB whose line `i` reads `v{version}` in some places.
fn source(edits: &[(usize, String)]) -> String {
    let mut lines: Vec<String> = (0..600)
        .map(|i| format!("    let value_{i} = config.get(\"key_{i}\").unwrap_or_default();"))
        .collect();
    for (at, line) in edits {
        lines[*at % 600] = line.clone();
    }
    lines.join("\n") + "\n"
}

/// The longest delta chain `git verify-pack` reports for the packs of `repo`'s object
/// directory (0 when nothing is a delta).
fn longest_chain(repo: &std::path::Path) -> usize {
    let objects = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--git-path", "objects"])
        .output()
        .unwrap();
    let objects = repo.join(String::from_utf8(objects.stdout).unwrap().trim());
    let mut longest = 0;
    for e in std::fs::read_dir(objects.join("pack")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            let out = Command::new("git")
                .args(["verify-pack", "-v"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(out.status.success());
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // "chain length = 12: 3 objects"
                if let Some(n) = line
                    .strip_prefix("chain length = ")
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    longest = longest.max(n);
                }
            }
        }
    }
    longest
}

/// A history of many small edits to a few files (long delta chains once packed), with
/// secrets in lines, in a commit message, in a tag message, behind a tag at a blob, an
/// archive, a blob over the size limit edited many times, a rename and one blob at two paths.
/// Returns (base, new) commits.
fn chained_history(r: &Repo) -> (String, String) {
    r.write("lib.rs", &source(&[]));
    r.write("notes.txt", "notes\n");
    let base = r.commit("base");
    let mut edits: Vec<(usize, String)> = Vec::new();
    for i in 0..70 {
        edits.push((i * 37, format!("    // edit {i}")));
        if i == 10 {
            edits.push((5, format!("    let token = \"{}\";", github_token())));
        }
        if i == 15 {
            edits.retain(|(at, _)| *at != 5);
        }
        r.write("lib.rs", &source(&edits));
        // A large generated file edited each time (a chain of blobs over the small limit).
        r.write("big.txt", &source(&[(i, format!("big {i}"))]).repeat(2));
        match i {
            30 => {
                let env = format!("AWS_ACCESS_KEY_ID={}\n", aws_key());
                r.git(&["mv", "notes.txt", "docs.txt"]);
                r.write("app.env", &env);
                r.write("copy.env", &env);
            }
            45 => std::fs::write(
                r.path().join("backup.gz"),
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03secret-ish",
            )
            .unwrap(),
            _ => {}
        }
        let msg = if i == 40 {
            format!("edit {i}\n\nthe key is {}\n", aws_key())
        } else {
            format!("edit {i}")
        };
        r.commit(&msg);
    }
    r.write("tagged.txt", &format!("gh = {}\n", github_token()));
    let tagged = r.git(&["hash-object", "-w", "tagged.txt"]);
    std::fs::remove_file(r.path().join("tagged.txt")).unwrap();
    r.git(&["tag", "blob-tag", &tagged]);
    r.git(&[
        "tag",
        "-a",
        "v1",
        "-m",
        &format!("release\n\nkey {}\n", aws_key()),
    ]);
    let new = r.git(&["rev-parse", "HEAD"]);
    (base, new)
}

fn scanner() -> Scanner {
    Scanner::builtin().unwrap().with_options(ScanOptions {
        honor_inline_allow: false,
        ..ScanOptions::default()
    })
}

/// Both readers over `rev_args`; returns the walk's scan after checking it equals the other.
fn both(s: &Scanner, repo: &std::path::Path, rev_args: &[&str]) -> scan::ObjectScan {
    let req = GitScanRequest {
        repo: repo.to_path_buf(),
        rev_args: rev_args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
    };
    let small = ObjectScanOptions {
        max_blob_size: 32 * 1024,
    };
    let walked = s.scan_push(&req, &small).unwrap();
    let one_by_one = s.scan_push_one_by_one(&req, &small).unwrap();
    assert_eq!(walked.findings, one_by_one.findings, "{rev_args:?}");
    assert_eq!(walked.unreadable, one_by_one.unreadable, "{rev_args:?}");
    assert_eq!(walked.objects, one_by_one.objects, "{rev_args:?}");
    assert_eq!(one_by_one.walked, 0, "{rev_args:?}");
    walked
}

#[test]
fn a_received_pack_walked_in_delta_order_gives_what_reading_each_object_gives() {
    let Some(src) = Repo::new() else { return };
    let (base, new) = chained_history(&src);
    // Long chains on the sending side: the push reuses them.
    src.git(&["repack", "-adq", "-f", "--depth=100", "--window=250"]);
    assert!(longest_chain(src.path()) >= 20, "the source's chains");

    // The upstream receives the push as a pack (not loose objects), as the gate's mirror
    // does for a push of more than 100 objects.
    let Some(up) = Repo::new() else { return };
    up.git(&["config", "receive.unpackLimit", "1"]);
    let to = up.path().to_str().unwrap().to_string();
    src.git(&["push", "-q", &to, &format!("{base}:refs/heads/base")]);
    src.git(&[
        "push",
        "-q",
        &to,
        &format!("{new}:refs/heads/new"),
        "refs/tags/blob-tag",
        "refs/tags/v1",
    ]);
    let chain = longest_chain(up.path());
    assert!(chain >= 20, "the received pack's chains: {chain}");

    let s = scanner();
    let push = both(&s, up.path(), &[&new, "blob-tag", "v1", "--not", &base]);
    assert_eq!(
        push.walked, push.objects,
        "every pushed object is in the received pack"
    );
    let files: std::collections::BTreeSet<&str> =
        push.findings.iter().map(|f| f.file.as_str()).collect();
    for want in [
        "lib.rs", "app.env", "copy.env", "<commit>", "<tag>", "<blob>",
    ] {
        assert!(files.contains(want), "{want} in {files:?}");
    }
    let reasons: Vec<&str> = push.unreadable.iter().map(|u| u.reason.as_str()).collect();
    assert!(reasons.contains(&"gzip-compressed"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .filter(|r| r.starts_with("larger than"))
            .count()
            >= 2,
        "{reasons:?}"
    );

    // Diff options keep the one `git log -p`: the object scan beside it walks the same way.
    both(&s, up.path(), &[&new, "-w", "--not", &base]);
    // Nothing new: nothing read.
    let none = both(&s, up.path(), &[&new, "--not", "--all"]);
    assert_eq!((none.objects, none.findings.len()), (0, 0));
}

#[test]
fn a_repository_packed_whole_is_walked_and_a_small_range_in_it_is_read_one_by_one() {
    let Some(r) = Repo::new() else { return };
    let (base, new) = chained_history(&r);
    r.git(&["repack", "-adq", "-f", "--depth=100", "--window=250"]);
    let s = scanner();
    // All of history: most of the one pack is wanted, so it is walked.
    let all = both(&s, r.path(), &["--all"]);
    assert!(
        all.walked > 0 && all.walked == all.objects,
        "{}",
        all.walked
    );
    assert!(!all.findings.is_empty());
    // The last commit only: a few objects of a large pack are read one by one.
    let last = both(&s, r.path(), &[&new, "--not", &format!("{new}~1")]);
    assert_eq!(last.walked, 0);
    assert!(last.objects > 0);
    // Everything after the base, as a push of it would be.
    both(&s, r.path(), &[&new, "--not", &base]);
}

/// `git` in `repo` with `input` on stdin; its stdout.
fn git_with_input(repo: &std::path::Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "git {args:?}");
    out.stdout
}

/// What is new is git's answer: a blob the receiving repository already holds, unreachable
/// from its refs (left by a rejected push, a deleted branch, a fetch since rewound), and that
/// the push therefore does not carry in its pack, is still listed by `git rev-list --objects`
/// and scanned (read one by one next to the walked pack), with the same findings as reading
/// everything one by one. And a pack most of whose objects the listing does not name is not
/// walked: the few new objects in it are read one by one.
#[test]
fn an_object_the_repository_already_holds_unreachable_is_still_scanned() {
    let Some(src) = Repo::new() else { return };
    let (base, new) = chained_history(&src);
    src.write("again.env", &format!("AWS_ACCESS_KEY_ID={}\n", aws_key()));
    src.write("later.rs", &source(&[(7, "    // later".into())]));
    let new = {
        let _ = new;
        src.commit("bring back a secret the upstream holds unreachable")
    };
    let held = src.git(&["rev-parse", "HEAD:again.env"]);

    let Some(up) = Repo::new() else { return };
    let to = up.path().to_str().unwrap().to_string();
    src.git(&["push", "-q", &to, &format!("{base}:refs/heads/base")]);
    // The upstream holds the blob, loose and unreachable.
    std::fs::write(
        up.path().join("held.env"),
        format!("AWS_ACCESS_KEY_ID={}\n", aws_key()),
    )
    .unwrap();
    assert_eq!(up.git(&["hash-object", "-w", "held.env"]), held);
    std::fs::remove_file(up.path().join("held.env")).unwrap();
    // The push's pack carries everything new but that blob (as a pack-objects that knew the
    // upstream has it would make it), indexed into the upstream as receive-pack does.
    let listed = src.git(&[
        "rev-list",
        "--objects",
        "--no-object-names",
        &new,
        "--not",
        &base,
    ]);
    let carried: String = listed
        .lines()
        .filter(|id| *id != held)
        .map(|id| format!("{id}\n"))
        .collect();
    assert_eq!(carried.lines().count() + 1, listed.lines().count());
    let pack = git_with_input(
        src.path(),
        &["pack-objects", "-q", "--stdout"],
        carried.as_bytes(),
    );
    git_with_input(up.path(), &["index-pack", "--stdin"], &pack);

    let s = scanner();
    let push = both(&s, up.path(), &[&new, "--not", &base]);
    assert_eq!(push.objects as usize, listed.lines().count());
    assert_eq!(
        push.walked + 1,
        push.objects,
        "the pack walked, the blob it does not carry read one by one"
    );
    let fingerprints: Vec<&str> = push
        .findings
        .iter()
        .map(|f| f.fingerprint.as_str())
        .collect();
    assert!(
        fingerprints
            .iter()
            .any(|f| f.ends_with(":again.env:aws-access-key-id:1")),
        "{fingerprints:?}"
    );

    // The same pack, the range of its last commit only: most of the pack is not new, so it
    // is not walked, and the few new objects are read one by one.
    let last = both(&s, up.path(), &[&new, "--not", &format!("{new}~1")]);
    assert_eq!(last.walked, 0);
    assert!(last.objects > 0);
    assert!(
        last.findings
            .iter()
            .any(|f| f.fingerprint.ends_with(":again.env:aws-access-key-id:1")),
        "{:?}",
        last.findings
    );
}
