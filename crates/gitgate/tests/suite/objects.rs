//! Every object a push adds is scanned, whatever reaches it: pushes through a real gate to a
//! real upstream that hide a key where `git log -p` never looks (tags, messages, identities,
//! path names), in binary or UTF-16 files, or encoded; and content the scanner cannot read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use pretty_assertions::assert_eq;

use super::support::*;

/// A realistic AWS access key id (Nosey Parker's `np.aws.5` example), kept in two parts so
/// no well-formed key sits in the repository.
fn key() -> String {
    ["AKIA", "IDQJ6PTGDFFWYX7A"].concat()
}

const RULE: &str = "aws-access-key-id";

fn local_yaml(upstream: &Path, extra: &str) -> String {
    format!("repos:\n  app:\n    url: {}\n{extra}", upstream.display())
}

async fn clone_app(gate: &TestGate, root: &Path) -> PathBuf {
    let work = root.join("work");
    let (url, w, r) = (gate.url("app"), work.clone(), root.to_path_buf());
    blocking(move || git(&r, &["clone", "-q", &url, w.to_str().unwrap()])).await;
    work
}

/// Writes a blob into the work tree's object database; its id.
fn blob(work: &Path, content: &[u8]) -> String {
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(work)
        .args(["hash-object", "-w", "--stdin"])
        .envs(git_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(content).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A tree of one file.
fn tree(work: &Path, name: &str, blob: &str) -> String {
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(work)
        .arg("mktree")
        .envs(git_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("100644 blob {blob}\t{name}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn commit_bytes(work: &Path, file: &str, content: &[u8], msg: &str) -> String {
    let path = work.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    git(work, &["add", file]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["rev-parse", "HEAD"])
}

/// Runs git with the key in the committer's (and tagger's) name; its stdout.
fn git_as(work: &Path, args: &[&str]) -> String {
    let name = format!("Dev {}", key());
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(work)
        .args(args)
        .envs(git_env())
        .env("GIT_COMMITTER_NAME", &name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn utf16le(s: &str) -> Vec<u8> {
    let mut v = vec![0xff, 0xfe];
    v.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
    v
}

/// One way to push the key: prepares objects in `work`, returns the refspec to push and the
/// fingerprint the refusal must name.
struct Attack {
    name: &'static str,
    prepare: fn(&Path) -> (String, String),
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "lightweight tag to a blob",
            prepare: |w| {
                let b = blob(w, format!("aws = {}\n", key()).as_bytes());
                (
                    format!("{b}:refs/tags/lt-blob"),
                    format!("{b}:<blob>:{RULE}:1"),
                )
            },
        },
        Attack {
            name: "lightweight tag to a tree",
            prepare: |w| {
                let b = blob(w, format!("x\naws = {}\n", key()).as_bytes());
                let t = tree(w, "creds.env", &b);
                (
                    format!("{t}:refs/tags/lt-tree"),
                    format!("{b}:creds.env:{RULE}:2"),
                )
            },
        },
        Attack {
            name: "annotated tag to a blob",
            prepare: |w| {
                let b = blob(w, format!("aws = {}\n", key()).as_bytes());
                git(w, &["tag", "-a", "-m", "data", "at-blob", &b]);
                ("refs/tags/at-blob".into(), format!("{b}:<blob>:{RULE}:1"))
            },
        },
        Attack {
            name: "annotated tag to a tree",
            prepare: |w| {
                let b = blob(w, format!("aws = {}\n", key()).as_bytes());
                let t = tree(w, "creds.env", &b);
                git(w, &["tag", "-a", "-m", "data", "at-tree", &t]);
                (
                    "refs/tags/at-tree".into(),
                    format!("{b}:creds.env:{RULE}:1"),
                )
            },
        },
        Attack {
            name: "annotated tag to a commit on no branch",
            prepare: |w| {
                let c = commit_file(w, "creds.env", &format!("aws = {}\n", key()), "c");
                git(w, &["tag", "-a", "-m", "data", "at-commit", &c]);
                git(w, &["reset", "-q", "--hard", "HEAD~1"]);
                (
                    "refs/tags/at-commit".into(),
                    format!("{c}:creds.env:{RULE}:1"),
                )
            },
        },
        Attack {
            name: "annotated tag message",
            prepare: |w| {
                let msg = format!("release\n\nkey {}\n", key());
                git(w, &["tag", "-a", "-m", &msg, "msg"]);
                let t = git(w, &["rev-parse", "msg"]);
                ("refs/tags/msg".into(), format!("{t}:<tag>:{RULE}:8"))
            },
        },
        Attack {
            name: "tag of a tag",
            prepare: |w| {
                let msg = format!("release\n\nkey {}\n", key());
                git(w, &["tag", "-a", "-m", &msg, "inner"]);
                let inner = git(w, &["rev-parse", "inner"]);
                git(w, &["tag", "-a", "-m", "outer", "outer", "inner"]);
                ("refs/tags/outer".into(), format!("{inner}:<tag>:{RULE}:8"))
            },
        },
        Attack {
            name: "commit message",
            prepare: |w| {
                let msg = format!("fix\n\n{}\n", key());
                git(w, &["commit", "-q", "--allow-empty", "-m", &msg]);
                let c = git(w, &["rev-parse", "HEAD"]);
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:<commit>:{RULE}:8"),
                )
            },
        },
        Attack {
            name: "author identity",
            prepare: |w| {
                let author = format!("Dev {} <dev@example.org>", key());
                git(
                    w,
                    &[
                        "commit",
                        "-q",
                        "--allow-empty",
                        "-m",
                        "x",
                        "--author",
                        &author,
                    ],
                );
                let c = git(w, &["rev-parse", "HEAD"]);
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:<commit>:{RULE}:3"),
                )
            },
        },
        Attack {
            name: "committer identity",
            prepare: |w| {
                git_as(w, &["commit", "-q", "--allow-empty", "-m", "x"]);
                let c = git(w, &["rev-parse", "HEAD"]);
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:<commit>:{RULE}:4"),
                )
            },
        },
        Attack {
            name: "tagger identity",
            prepare: |w| {
                git_as(w, &["tag", "-a", "-m", "release", "tagger"]);
                let t = git(w, &["rev-parse", "tagger"]);
                ("refs/tags/tagger".into(), format!("{t}:<tag>:{RULE}:4"))
            },
        },
        Attack {
            name: "path name",
            prepare: |w| {
                commit_file(w, &format!("notes-{}.txt", key()), "nothing\n", "notes");
                let t = git(w, &["rev-parse", "HEAD^{tree}"]);
                // README.md is entry 1, the new file entry 2.
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{t}:<tree>:{RULE}:2"),
                )
            },
        },
        Attack {
            name: "one zero byte in a text file",
            prepare: |w| {
                let content = format!("header\0\nkey = {}\n", key());
                let c = commit_bytes(w, "config.txt", content.as_bytes(), "cfg");
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:config.txt:{RULE}:2"),
                )
            },
        },
        Attack {
            name: "UTF-16 file",
            prepare: |w| {
                let content = utf16le(&format!("first\r\nkey = {}\r\n", key()));
                let c = commit_bytes(w, "notes.txt", &content, "notes");
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:notes.txt:{RULE}:2"),
                )
            },
        },
        Attack {
            name: "base64 run",
            prepare: |w| {
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(format!("aws_access_key_id = {}", key()));
                let c = commit_file(w, "enc.yaml", &format!("a: 1\nblob: {enc}\n"), "enc");
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:enc.yaml:{RULE}:2"),
                )
            },
        },
        Attack {
            name: "base64 wrapped at 76 columns",
            prepare: |w| {
                // The key straddles the first line's end.
                let text = format!("{} {} and the rest\n", "x".repeat(49), key());
                let enc = base64::engine::general_purpose::STANDARD.encode(text);
                let lines: Vec<String> = enc
                    .as_bytes()
                    .chunks(76)
                    .map(|c| String::from_utf8(c.to_vec()).unwrap())
                    .collect();
                let c = commit_file(w, "creds.b64", &(lines.join("\n") + "\n"), "b64");
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:creds.b64:{RULE}:1"),
                )
            },
        },
        Attack {
            name: "hex run",
            prepare: |w| {
                let enc = hex::encode(key());
                let c = commit_file(w, "enc.txt", &format!("id {enc}\n"), "enc");
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:enc.txt:{RULE}:1"),
                )
            },
        },
        Attack {
            name: "percent-encoded run",
            prepare: |w| {
                let enc: String = key().bytes().map(|b| format!("%{b:02X}")).collect();
                let c = commit_file(w, "url.txt", &format!("\n\nhttps://h/?k={enc}\n"), "url");
                (
                    "HEAD:refs/heads/main".into(),
                    format!("{c}:url.txt:{RULE}:3"),
                )
            },
        },
    ]
}

/// Pushes `refspec` from `work`; the client's output and whether it succeeded.
async fn push(work: &Path, refspec: &str) -> (bool, String) {
    let (w, r) = (work.to_path_buf(), refspec.to_string());
    let out = blocking(move || git_out(&w, &["push", "origin", &r])).await;
    (out.status.success(), stderr(&out))
}

/// Every attack is refused with the finding named by its fingerprint, and the upstream
/// never changes; the operator's exception for one of the new kinds of finding lets it
/// through, and a clean tag still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_a_push_adds_is_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml(&up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let refs_before = git(&up, &["for-each-ref"]);
    let main_before = git(&up, &["rev-parse", "main"]);
    let mut escaped = Vec::new();
    for attack in attacks() {
        let (refspec, fingerprint) = (attack.prepare)(&work);
        let (ok, msg) = push(&work, &refspec).await;
        let refused = !ok
            && msg.contains("possible secret")
            && msg.contains(&format!("fingerprint {fingerprint}"))
            && !msg.contains("pushed to upstream");
        if !refused {
            escaped.push(format!("{}: expected {fingerprint}\n{msg}", attack.name));
        }
        if git(&up, &["for-each-ref"]) != refs_before {
            // It escaped: put the upstream and the gate's mirror back, to try the next one.
            escaped.push(format!("{}: reached the upstream", attack.name));
            for repo in [up.clone(), gate.gate.mirror_path("app").unwrap()] {
                git(&repo, &["update-ref", "refs/heads/main", &main_before]);
                for tag in git(&repo, &["tag"]).lines() {
                    git(&repo, &["update-ref", "-d", &format!("refs/tags/{tag}")]);
                }
            }
        }
        git(&work, &["reset", "-q", "--hard", "origin/main"]);
        for tag in git(&work, &["tag"]).lines() {
            git(&work, &["tag", "-d", tag]);
        }
    }
    assert_eq!(escaped, Vec::<String>::new());

    // The operator excepts the tag message's finding by its fingerprint: it goes through.
    let message = attacks()
        .into_iter()
        .find(|a| a.name == "annotated tag message")
        .unwrap();
    let (refspec, fingerprint) = (message.prepare)(&work);
    std::fs::write(
        gate.gate.allowed_findings_path(),
        format!("{fingerprint}\n"),
    )
    .unwrap();
    let (ok, msg) = push(&work, &refspec).await;
    assert!(ok && msg.contains("pushed to upstream"), "{msg}");
    assert_eq!(
        git(&up, &["rev-parse", "msg"]),
        git(&work, &["rev-parse", "msg"])
    );

    // A clean annotated tag of a clean blob is not refused.
    let b = blob(&work, b"just data\n");
    git(&work, &["tag", "-a", "-m", "a clean tag", "clean", &b]);
    let (ok, msg) = push(&work, "refs/tags/clean").await;
    assert!(ok && msg.contains("pushed to upstream"), "{msg}");
}

/// Compressed archives and over-size blobs are reported and refused, whatever reaches them,
/// unless the repository's `dangerously_push_unscannable` lets them through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_content_is_refused_unless_the_manifest_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml(&up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let before = git(&up, &["rev-parse", "main"]);

    let gz: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03secret inside";
    commit_bytes(&work, "backup.tar.gz", gz, "backup");
    let gz_blob = git(&work, &["rev-parse", "HEAD:backup.tar.gz"]);
    commit_bytes(
        &work,
        "docs/site.zip",
        b"PK\x03\x04\x14\x00\x00\x00rest",
        "site",
    );
    let zip_blob = git(&work, &["rev-parse", "HEAD:docs/site.zip"]);
    let (ok, msg) = push(&work, "HEAD:refs/heads/main").await;
    assert!(!ok, "{msg}");
    for needle in [
        "2 pushed files cannot be scanned",
        &format!("blob {gz_blob}  file backup.tar.gz: gzip-compressed"),
        &format!("blob {zip_blob}  file docs/site.zip: a zip archive"),
        "dangerously_push_unscannable",
        "nothing was pushed upstream",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
    assert_eq!(git(&up, &["rev-parse", "main"]), before);

    // Behind a lightweight tag, no commit reaching it.
    git(&work, &["reset", "-q", "--hard", "origin/main"]);
    let big = blob(&work, &vec![b'x'; 11 * 1024 * 1024]);
    let (ok, msg) = push(&work, &format!("{big}:refs/tags/big")).await;
    assert!(!ok, "{msg}");
    assert!(
        msg.contains(&format!(
            "blob {big}  file <blob>: larger than 10485760 bytes"
        )),
        "{msg}"
    );
    assert_eq!(git(&up, &["tag"]), "");
    drop(gate);

    // The same pushes, with the repository's option on: through, said in the answer.
    std::fs::create_dir_all(root.join("second")).unwrap();
    let gate = start_gate(
        &root.join("second"),
        &local_yaml(&up, "    dangerously_push_unscannable: true\n"),
        options(),
    )
    .await;
    git(&work, &["remote", "set-url", "origin", &gate.url("app")]);
    git(&work, &["fetch", "-q", "origin"]);
    commit_bytes(&work, "backup.tar.gz", gz, "backup");
    let (ok, msg) = push(&work, "HEAD:refs/heads/main").await;
    assert!(ok, "{msg}");
    assert!(msg.contains("pushed to upstream"), "{msg}");
    assert!(
        msg.contains("not scanned (dangerously_push_unscannable is on)"),
        "{msg}"
    );
    let (ok, msg) = push(&work, &format!("{big}:refs/tags/big")).await;
    assert!(ok, "{msg}");
}

/// A push of many commits reaches the mirror's quarantine as one pack whose objects are
/// delta chains (more than `receive.unpackLimit` objects: not unpacked), which the scan walks
/// in delta-tree order: a key deep in a chain of edits and one in a commit message are refused
/// with the places a small push names, and the same push without them goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_arrives_as_a_pack_of_delta_chains_is_scanned_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml(&up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let main_before = git(&up, &["rev-parse", "main"]);
    // 400 lines; edit `i` changes one of them; the key sits on line 201 in edits 60 to 64.
    let content = |i: usize, key_line: bool| -> String {
        (0..400)
            .map(|n| match n {
                200 if key_line => format!("aws = \"{}\"\n", key()),
                _ if n == (i * 7) % 400 => format!("// edit {i}\n"),
                _ => format!("let value_{n} = compute({n}).unwrap_or_default();\n"),
            })
            .collect()
    };
    let history = |with_keys: bool| -> (String, String) {
        let mut in_file = String::new();
        let mut in_message = String::new();
        for i in 0..150 {
            let key_line = with_keys && (60..65).contains(&i);
            let msg = if with_keys && i == 120 {
                format!("edit {i}\n\nthe key is {}", key())
            } else {
                format!("edit {i}")
            };
            let c = commit_bytes(&work, "src/conf.rs", content(i, key_line).as_bytes(), &msg);
            if with_keys && i == 60 {
                in_file = c;
            } else if with_keys && i == 120 {
                in_message = c;
            }
        }
        (in_file, in_message)
    };

    let (in_file, in_message) = history(true);
    let (ok, msg) = push(&work, "HEAD:main").await;
    assert!(!ok && !msg.contains("pushed to upstream"), "{msg}");
    assert!(
        msg.contains(&format!("fingerprint {in_file}:src/conf.rs:{RULE}:201")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("fingerprint {in_message}:<commit>:{RULE}:")),
        "{msg}"
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), main_before);

    // The same edits without the keys go through.
    git(&work, &["reset", "-q", "--hard", "origin/main"]);
    history(false);
    let (ok, msg) = push(&work, "HEAD:main").await;
    assert!(ok && msg.contains("pushed to upstream"), "{msg}");
    assert_eq!(
        git(&up, &["rev-parse", "main"]),
        git(&work, &["rev-parse", "HEAD"])
    );
}

/// A blob the gate's mirror already holds, unreachable from its refs (an earlier push the
/// gate refused, a branch deleted upstream), is new to the upstream all the same: a push that
/// brings it back is scanned and refused, whether the push arrives as loose objects (the
/// quarantine then does not even hold the blob: the mirror has it) or as a pack walked while
/// git lists the new objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_the_mirror_holds_unreachable_is_scanned_when_a_push_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml(&up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let main_before = git(&up, &["rev-parse", "main"]);
    let secret = format!("aws = \"{}\"\n", key());
    let mirror = gate.gate.mirror_path("app").unwrap();
    let held = blob(&mirror, secret.as_bytes());
    assert_eq!(git(&mirror, &["cat-file", "-t", &held]), "blob");

    // A small push (unpacked as loose objects into the quarantine).
    let small = commit_bytes(&work, "conf/held.env", secret.as_bytes(), "bring it back");
    assert_eq!(git(&work, &["rev-parse", "HEAD:conf/held.env"]), held);
    let (ok, msg) = push(&work, "HEAD:main").await;
    assert!(!ok && !msg.contains("pushed to upstream"), "{msg}");
    assert!(
        msg.contains(&format!("fingerprint {small}:conf/held.env:{RULE}:1")),
        "{msg}"
    );

    // A push of more than 100 objects (received as a pack).
    git(&work, &["reset", "-q", "--hard", "origin/main"]);
    for i in 0..60 {
        commit_bytes(
            &work,
            &format!("src/f{i}.rs"),
            format!("fn f{i}() {{}}\n").as_bytes(),
            &format!("file {i}"),
        );
    }
    let large = commit_bytes(&work, "conf/held.env", secret.as_bytes(), "bring it back");
    let (ok, msg) = push(&work, "HEAD:main").await;
    assert!(!ok && !msg.contains("pushed to upstream"), "{msg}");
    assert!(
        msg.contains(&format!("fingerprint {large}:conf/held.env:{RULE}:1")),
        "{msg}"
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), main_before);
}
