//! Pushes that hide a key where `git log -p` never looks, or in content a line scan skips:
//! tags (to a blob, a tree, a commit, a tag), tag and commit messages, identities, path
//! names, files with a zero byte, UTF-16, base64 / hex / percent-encoded runs; and content no
//! scanner can read (gzip, zip), which the gate must refuse too. Each push must be refused;
//! the harness also checks that the upstream holds nothing but the allowed refs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::git::{run_git, why};
use crate::verdict::Tally;

/// Runs git with `input` on stdin; its trimmed stdout, or `None`.
fn git_in(app: &Path, args: &[&str], input: &[u8]) -> Option<String> {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(app)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn out(app: &Path, args: &[&str]) -> String {
    run_git(app, args).1.trim().to_string()
}

/// Commits `content` as `file` on top of `base`; the refspec pushing that commit (by id:
/// the next spelling moves HEAD) to a new branch.
fn commit(
    app: &Path,
    base: &str,
    file: &str,
    content: &[u8],
    msg: &str,
    n: usize,
) -> Option<String> {
    run_git(app, &["reset", "-q", "--hard", base]);
    std::fs::write(app.join(file), content).ok()?;
    run_git(app, &["add", "--", file]).0.then_some(())?;
    run_git(app, &["commit", "-q", "-m", msg]).0.then_some(())?;
    Some(format!(
        "{}:refs/heads/agent/hidden-{n}",
        out(app, &["rev-parse", "HEAD"])
    ))
}

/// An empty commit on top of `base` with these `git commit` arguments, as [`commit`].
fn empty_commit(app: &Path, base: &str, args: &[&str], n: usize) -> Option<String> {
    run_git(app, &["reset", "-q", "--hard", base]);
    let mut a = vec!["commit", "-q", "--allow-empty"];
    a.extend_from_slice(args);
    run_git(app, &a).0.then_some(())?;
    Some(format!(
        "{}:refs/heads/agent/hidden-{n}",
        out(app, &["rev-parse", "HEAD"])
    ))
}

/// Each spelling: a name and the refspec that pushes it (`None`: could not be built).
fn spellings(app: &Path, base: &str, key: &str) -> Vec<(&'static str, Option<String>)> {
    let mut v: Vec<(&'static str, Option<String>)> = Vec::new();
    let blob = git_in(
        app,
        &["hash-object", "-w", "--stdin"],
        format!("aws = {key}\n").as_bytes(),
    );
    let tree = blob.as_ref().and_then(|b| {
        git_in(
            app,
            &["mktree"],
            format!("100644 blob {b}\tcreds.env\n").as_bytes(),
        )
    });
    v.push((
        "lightweight tag to a blob",
        blob.as_ref().map(|b| format!("{b}:refs/tags/hidden-blob")),
    ));
    v.push((
        "lightweight tag to a tree",
        tree.as_ref().map(|t| format!("{t}:refs/tags/hidden-tree")),
    ));
    for (name, target, tag) in [
        ("annotated tag to a blob", blob.clone(), "hidden-at-blob"),
        ("annotated tag to a tree", tree.clone(), "hidden-at-tree"),
    ] {
        let r = target.and_then(|t| {
            run_git(app, &["tag", "-a", "-m", "data", tag, &t])
                .0
                .then(|| format!("refs/tags/{tag}"))
        });
        v.push((name, r));
    }
    let msg = format!("release\n\nkey {key}\n");
    let ok = run_git(app, &["tag", "-a", "-m", &msg, "hidden-msg", base]).0;
    v.push((
        "annotated tag message",
        ok.then(|| "refs/tags/hidden-msg".to_string()),
    ));
    let ok = run_git(
        app,
        &["tag", "-a", "-m", "outer", "hidden-outer", "hidden-msg"],
    )
    .0;
    v.push((
        "tag of a tag",
        ok.then(|| "refs/tags/hidden-outer".to_string()),
    ));

    let msg = format!("fix\n\n{key}");
    v.push((
        "commit message",
        empty_commit(app, base, &["-m", &msg], v.len()),
    ));
    let author = format!("Dev {key} <dev@example.org>");
    v.push((
        "author identity",
        empty_commit(app, base, &["-m", "x", "--author", &author], v.len()),
    ));
    let files: Vec<(&'static str, String, Vec<u8>)> = vec![
        (
            "path name",
            format!("notes-{key}.txt"),
            b"nothing\n".to_vec(),
        ),
        (
            "one zero byte in a text file",
            "config.txt".into(),
            format!("header\0\nkey = {key}\n").into_bytes(),
        ),
        (
            "UTF-16 file",
            "notes.txt".into(),
            [0xff, 0xfe]
                .into_iter()
                .chain(
                    format!("first\r\nkey = {key}\r\n")
                        .encode_utf16()
                        .flat_map(u16::to_le_bytes),
                )
                .collect(),
        ),
        (
            "base64 run",
            "enc.yaml".into(),
            format!(
                "blob: {}\n",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("aws_access_key_id = {key}"))
            )
            .into_bytes(),
        ),
        (
            "hex run",
            "enc.txt".into(),
            format!(
                "id {}\n",
                key.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "percent-encoded run",
            "url.txt".into(),
            format!(
                "https://h/?k={}\n",
                key.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "gzip file (unreadable)",
            "backup.tar.gz".into(),
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03data".to_vec(),
        ),
        (
            "zip file (unreadable)",
            "backup.zip".into(),
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00data".to_vec(),
        ),
    ];
    for (name, file, content) in files {
        let r = commit(app, base, &file, &content, name, v.len());
        v.push((name, r));
    }
    run_git(app, &["reset", "-q", "--hard", base]);
    v
}

/// The cases, run from the clone `app` whose HEAD is already on the upstream; HEAD is put
/// back where it was.
pub fn push_hidden(app: &Path) {
    let base = out(app, &["rev-parse", "HEAD"]);
    let key = format!("{}{}", "AKIA", "IDQJ6PTGDFFWYX7A");
    // Tags are refused by `push_branches` in the suite's world before any scan; the gate's
    // own tests push them to a repository without it.
    let mut tags = Tally::new("git-push-secret-in-tags");
    let mut t = Tally::new("git-push-hidden-secret");
    let mut u = Tally::new("git-push-unscannable");
    for (name, refspec) in spellings(app, &base, &key) {
        let tally = if name.ends_with("(unreadable)") {
            &mut u
        } else if name.contains("tag") {
            &mut tags
        } else {
            &mut t
        };
        let Some(refspec) = refspec else {
            tally.blocked(format!("{name}: could not be built here"));
            continue;
        };
        let (ok, text) = run_git(app, &["push", "origin", &refspec]);
        if ok {
            tally.escaped(format!("{name}: push accepted"));
        } else {
            tally.blocked(format!("{name}: {}", short(&why(&text))));
        }
    }
    tags.done();
    t.done();
    u.done();
    for tag in out(app, &["tag", "--list", "hidden-*"]).lines() {
        run_git(app, &["tag", "-d", tag.trim()]);
    }
    run_git(app, &["reset", "-q", "--hard", &base]);
}

/// The gist of the gate's answer (the case line is bounded).
fn short(s: &str) -> String {
    if s.contains("possible secret") {
        "secret found".into()
    } else if s.contains("cannot be scanned") {
        "cannot be scanned".into()
    } else if s.contains("tags cannot be pushed") {
        "tags refused (push_branches)".into()
    } else {
        s.chars().take(40).collect()
    }
}
