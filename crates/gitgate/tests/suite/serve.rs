//! Real git clients against the gate, with real upstream repositories.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;

use super::support::*;

const AWS_KEY: &str = "AKIAZ7QWERTYUIOPASDF";

fn local_yaml(name: &str, upstream: &std::path::Path, extra: &str) -> String {
    format!(
        "repos:\n  {name}:\n    url: {}\n{extra}",
        upstream.display()
    )
}

/// Clones the gate's `app` repository into `<root>/work`.
async fn clone_app(gate: &TestGate, root: &std::path::Path) -> PathBuf {
    let work = root.join("work");
    let (url, w, r) = (gate.url("app"), work.clone(), root.to_path_buf());
    blocking(move || git(&r, &["clone", "-q", &url, w.to_str().unwrap()])).await;
    work
}

/// Installs `script` as the upstream's own pre-receive hook; its path.
fn upstream_hook(up: &std::path::Path, script: &str) -> PathBuf {
    let hook = up.join("hooks/pre-receive");
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    hook
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_and_fetch_see_upstream_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "hello\n"
    );

    // Someone pushes to the upstream directly; the next fetch through the gate sees it.
    let other = root.join("other");
    git(
        &root,
        &["clone", "-q", up.to_str().unwrap(), other.to_str().unwrap()],
    );
    let new = commit_file(&other, "b.txt", "b\n", "upstream change");
    git(&other, &["push", "-q", "origin", "main"]);
    let w = work.clone();
    blocking(move || git(&w, &["pull", "-q", "--ff-only"])).await;
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), new);

    // And a branch deleted upstream disappears from the gate too (pruned mirror).
    git(&other, &["push", "-q", "origin", "main:tmp"]);
    let w = work.clone();
    blocking(move || git(&w, &["fetch", "-q", "--prune"])).await;
    assert!(git(&work, &["branch", "-r"]).contains("origin/tmp"));
    git(&other, &["push", "-q", "origin", ":tmp"]);
    let w = work.clone();
    blocking(move || git(&w, &["fetch", "-q", "--prune"])).await;
    assert!(!git(&work, &["branch", "-r"]).contains("origin/tmp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_push_reaches_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let head = commit_file(&work, "src/lib.rs", "pub fn f() {}\n", "add lib");
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("git gate: pushed to upstream"),
        "{}",
        stderr(&out)
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), head);
    let mirror = gate.gate.mirror_path("app").unwrap();
    assert_eq!(git(&mirror, &["rev-parse", "main"]), head);

    // A new branch too.
    git(&work, &["checkout", "-q", "-b", "feature"]);
    let feat = commit_file(&work, "f.txt", "f\n", "feature");
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "feature"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(git(&up, &["rev-parse", "feature"]), feat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_push_is_refused_until_allowlisted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let before = git(&up, &["rev-parse", "main"]);
    // Inline allow comments in the pushed content do not count.
    let commit = commit_file(
        &work,
        "config/prod.env",
        &format!("REGION=eu\nAWS_KEY={AWS_KEY} # gitleaks:allow\n"),
        "add config",
    );
    std::fs::write(
        work.join(".gitleaks.toml"),
        "[allowlist]\npaths = ['''.*''']\n",
    )
    .unwrap();
    git(&work, &["add", ".gitleaks.toml"]);
    git(&work, &["commit", "-q", "-m", "try to allow everything"]);
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    let msg = stderr(&out);
    assert!(!out.status.success(), "{msg}");
    let fingerprint = format!("{commit}:config/prod.env:aws-access-key-id:2");
    for needle in [
        "push rejected by the git gate: 1 possible secret",
        "rule aws-access-key-id",
        "file config/prod.env",
        "line 2",
        &format!("commit {commit}"),
        &format!("fingerprint {fingerprint}"),
        "`gitleaks-allow` tool",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
    assert_eq!(git(&up, &["rev-parse", "main"]), before);
    let mirror = gate.gate.mirror_path("app").unwrap();
    assert_eq!(git(&mirror, &["rev-parse", "main"]), before);

    // The operator approves the fingerprint: the same push now passes.
    std::fs::write(
        gate.gate.allowed_findings_path(),
        format!("# approved in review\n{fingerprint}\n"),
    )
    .unwrap();
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        git(&up, &["rev-parse", "main"]),
        git(&work, &["rev-parse", "HEAD"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_allowed_once_lets_one_push_through_and_an_expired_one_none() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let work = clone_app(&gate, &root).await;
    let push = |work: &std::path::Path| {
        let w = work.to_path_buf();
        blocking(move || git_out(&w, &["push", "origin", "main"]))
    };
    // Allowed once, by file and line: the first push with a secret there goes through...
    std::fs::write(
        gate.gate.allowed_findings_path(),
        "config/prod.env:2\tuses=1\tgrant=00000000000000aa\n",
    )
    .unwrap();
    commit_file(
        &work,
        "config/prod.env",
        &format!("REGION=eu\nAWS_KEY={AWS_KEY}\n"),
        "one",
    );
    let out = push(&work).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("the approval of finding config/prod.env:2 was for one push; it is used"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(gate.gate.allowed_findings_path()).unwrap(),
        "config/prod.env:2\tuses=0\tgrant=00000000000000aa\n"
    );
    // ...and the next one with a secret at the same place does not.
    let before = git(&up, &["rev-parse", "main"]);
    commit_file(
        &work,
        "config/prod.env",
        "REGION=eu\nAWS_KEY=AKIAZ7QWERTYUIOPASDG\n",
        "two",
    );
    let out = push(&work).await;
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 possible secret"),
        "{}",
        stderr(&out)
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), before);
    // Allowed for a while that has passed: refused, with nobody but the gate running.
    std::fs::write(
        gate.gate.allowed_findings_path(),
        "config/prod.env:2\texpires=2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    let out = push(&work).await;
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(git(&up, &["rev-parse", "main"]), before);
    // The same finding allowed until a time still ahead: it goes through.
    std::fs::write(
        gate.gate.allowed_findings_path(),
        "config/prod.env:2\texpires=2999-01-01T00:00:00Z\n",
    )
    .unwrap();
    let out = push(&work).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_rules_refuse_other_branches_deletions_and_force_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let yaml = local_yaml("app", &up, "    push_branches: [\"agent/*\"]\n");
    let gate = start_gate(&root, &yaml, options()).await;
    let work = clone_app(&gate, &root).await;
    let main_before = git(&up, &["rev-parse", "main"]);

    commit_file(&work, "a.txt", "a\n", "a");
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("branch `main` is not in push_branches (agent/*)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), main_before);

    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "HEAD:agent/one"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let pushed = git(&work, &["rev-parse", "HEAD"]);
    assert_eq!(git(&up, &["rev-parse", "agent/one"]), pushed);

    // Deletion refused.
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", ":agent/one"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("deleting is not allowed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(git(&up, &["rev-parse", "agent/one"]), pushed);

    // Force push refused.
    git(&work, &["commit", "-q", "--amend", "-m", "rewritten"]);
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "-f", "origin", "HEAD:agent/one"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("non-fast-forward update refused"),
        "{}",
        stderr(&out)
    );
    assert_eq!(git(&up, &["rev-parse", "agent/one"]), pushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_force_push_permits_rewrites_and_deletions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let yaml = local_yaml("app", &up, "    allow_force_push: true\n");
    let gate = start_gate(&root, &yaml, options()).await;
    let work = clone_app(&gate, &root).await;
    commit_file(&work, "a.txt", "a\n", "a");
    git(&work, &["push", "-q", "origin", "HEAD:topic"]);
    git(&work, &["commit", "-q", "--amend", "-m", "rewritten"]);
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "-f", "origin", "HEAD:topic"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        git(&up, &["rev-parse", "topic"]),
        git(&work, &["rev-parse", "HEAD"])
    );
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", ":topic"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !git_out(&up, &["rev-parse", "--verify", "-q", "topic"])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusal_surfaces_its_message_and_resets_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let work = clone_app(&gate, &root).await;

    let hook = upstream_hook(
        &up,
        "#!/bin/sh\necho 'upstream policy: signed commits only' >&2\nexit 1\n",
    );

    let before = git(&up, &["rev-parse", "main"]);
    commit_file(&work, "a.txt", "a\n", "a");
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    let msg = stderr(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("the upstream refused it"), "{msg}");
    assert!(
        msg.contains("upstream policy: signed commits only"),
        "{msg}"
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), before);
    let mirror = gate.gate.mirror_path("app").unwrap();
    assert_eq!(git(&mirror, &["rev-parse", "main"]), before);
    std::fs::remove_file(&hook).unwrap();

    // The upstream moves behind the gate's back: the gate syncs before advertising refs,
    // so the client sees the new upstream state and its push is refused as behind.
    let other = root.join("other");
    git(
        &root,
        &["clone", "-q", up.to_str().unwrap(), other.to_str().unwrap()],
    );
    let theirs = commit_file(&other, "theirs.txt", "t\n", "theirs");
    git(&other, &["push", "-q", "origin", "main"]);
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(
        !out.status.success(),
        "non-fast-forward against the new upstream must fail"
    );
    assert_eq!(git(&mirror, &["rev-parse", "main"]), theirs);
    assert_eq!(git(&up, &["rev-parse", "main"]), theirs);

    // The upstream moves after the gate advertised its refs but before the forward (the
    // client's pre-push hook pushes a racing commit): the lease on the exact old value makes
    // the upstream refuse, the agent sees why, and the mirror is reset to the upstream.
    let w = work.clone();
    blocking(move || {
        git(&w, &["fetch", "-q", "origin"]);
        git(&w, &["reset", "-q", "--hard", "origin/main"]);
    })
    .await;
    commit_file(&work, "mine.txt", "m\n", "mine");
    let racer_dir = root.join("racer");
    git(
        &root,
        &[
            "clone",
            "-q",
            up.to_str().unwrap(),
            racer_dir.to_str().unwrap(),
        ],
    );
    let racer = commit_file(&racer_dir, "racer.txt", "r\n", "racer");
    let pre_push = work.join(".git/hooks/pre-push");
    std::fs::write(
        &pre_push,
        format!(
            "#!/bin/sh\nunset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE\ngit -C '{}' push -q origin main\n",
            racer_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &pre_push,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    let msg = stderr(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("the upstream refused it"), "{msg}");
    assert!(msg.contains("stale info"), "{msg}");
    assert!(
        msg.contains("the gate's mirror now matches the upstream"),
        "{msg}"
    );
    assert_eq!(git(&up, &["rev-parse", "main"]), racer);
    assert_eq!(git(&mirror, &["rev-parse", "main"]), racer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_repository_is_a_clear_404() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let url = gate.url("nope");
    let r = root.clone();
    let out = blocking(move || git_out(&r, &["clone", &url, "x"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown repository `nope`: this gate serves app"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_fails_the_fetch_instead_of_serving_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let moved = root.join("moved.git");
    std::fs::rename(&up, &moved).unwrap();
    let url = gate.url("app");
    let r = root.clone();
    let out = blocking(move || git_out(&r, &["clone", &url, "x"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("cannot sync `app` with its upstream, so it will not serve stale data"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_push_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let mut o = options();
    o.max_request_bytes = 64 * 1024;
    let gate = start_gate(&root, &local_yaml("app", &up, ""), o).await;
    let work = clone_app(&gate, &root).await;
    let noise: String = (0..40_000u32)
        .map(|i| format!("{:08x}", i.wrapping_mul(2_654_435_761)))
        .collect();
    commit_file(&work, "big.txt", &noise, "big");
    let before = git(&up, &["rev-parse", "main"]);
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(!out.status.success());
    assert_eq!(git(&up, &["rev-parse", "main"]), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaves_no_process_and_the_next_push_works() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let work = clone_app(&gate, &root).await;

    // The upstream's hook hangs, so the push is stuck mid-way inside the gate's hook.
    let marker = root.join("hook-started");
    let hook = upstream_hook(
        &up,
        &format!("#!/bin/sh\ntouch '{}'\nsleep 120\n", marker.display()),
    );
    commit_file(&work, "a.txt", "a\n", "a");
    // The client and its `git-remote-http` helper in a group of their own, killed together
    // like a terminal's Ctrl-C would.
    let mut client = std::process::Command::new("git")
        .process_group(0)
        .arg("-C")
        .arg(&work)
        .args(["push", "origin", "main"])
        .envs(git_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "upstream hook never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let needle = format!("GIT_PROJECT_ROOT={}", gate.state.join("mirrors").display());
    assert!(
        !processes_with_env(&needle).is_empty(),
        "the push should be in flight"
    );
    let pgid = i32::try_from(client.id()).unwrap();
    // SAFETY: sends a signal to the process group of the client we spawned.
    assert_eq!(unsafe { libc::killpg(pgid, libc::SIGKILL) }, 0);
    client.wait().unwrap();

    let start = Instant::now();
    loop {
        let left = processes_with_env(&needle);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "processes left behind after the client went away: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    std::fs::remove_file(&hook).unwrap();
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        git(&up, &["rev-parse", "main"]),
        git(&work, &["rev-parse", "HEAD"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_serialise() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let gate = start_gate(&root, &local_yaml("app", &up, ""), options()).await;
    let mut works: Vec<PathBuf> = Vec::new();
    for i in 0..4 {
        let w = root.join(format!("work{i}"));
        let g = gate.url("app");
        let w2 = w.clone();
        blocking(move || {
            git(
                w2.parent().unwrap(),
                &["clone", "-q", &g, w2.to_str().unwrap()],
            )
        })
        .await;
        works.push(w);
    }
    // Two clients push different branches and two race on main, all at once.
    let mut tips = Vec::new();
    for (i, w) in works.iter().enumerate() {
        tips.push(commit_file(
            w,
            &format!("f{i}.txt"),
            &format!("{i}\n"),
            &format!("c{i}"),
        ));
    }
    let targets = ["HEAD:branch-a", "HEAD:branch-b", "HEAD:main", "HEAD:main"];
    let handles: Vec<_> = works
        .iter()
        .zip(targets)
        .map(|(w, t)| {
            let w = w.clone();
            tokio::task::spawn_blocking(move || git_out(&w, &["push", "origin", t]))
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert!(results[0].status.success(), "{}", stderr(&results[0]));
    assert!(results[1].status.success(), "{}", stderr(&results[1]));
    assert_eq!(git(&up, &["rev-parse", "branch-a"]), tips[0]);
    assert_eq!(git(&up, &["rev-parse", "branch-b"]), tips[1]);
    let main_ok: Vec<bool> = results[2..].iter().map(|o| o.status.success()).collect();
    assert_eq!(
        main_ok.iter().filter(|ok| **ok).count(),
        1,
        "exactly one of the racing pushes to main wins: {:?}",
        results[2..].iter().map(stderr).collect::<Vec<_>>()
    );
    let winner = if main_ok[0] { &tips[2] } else { &tips[3] };
    assert_eq!(&git(&up, &["rev-parse", "main"]), winner);
    let mirror = gate.gate.mirror_path("app").unwrap();
    assert_eq!(&git(&mirror, &["rev-parse", "main"]), winner);
}

/// Sends one raw HTTP/1.1 request and returns the status code and body.
async fn raw_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, mut body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_ascii_lowercase(), b.to_string()))
        .unwrap_or_default();
    if head.contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        body = out;
    }
    (status, body)
}

fn cgi_script(root: &std::path::Path, name: &str, output: &str) -> std::ffi::OsString {
    let path = root.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\ncat >/dev/null\nprintf '{output}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.into_os_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cgi_output_is_a_500_and_cgi_status_is_passed_through() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let yaml = local_yaml("app", &up, "");

    let mut o = options();
    o.http_backend = vec![cgi_script(
        &root,
        "garbage.sh",
        "this is not a header\\n\\nbody",
    )];
    let dir = root.join("g1");
    std::fs::create_dir_all(&dir).unwrap();
    let gate = start_gate(&dir, &yaml, o).await;
    let (status, body) = raw_get(&gate.base, "/app.git/info/refs?service=git-upload-pack").await;
    assert_eq!(
        (status, body.as_str()),
        (
            500,
            "the git gate got a malformed response from git http-backend; see the gate's log\n"
        )
    );

    let mut o = options();
    o.http_backend = vec![cgi_script(
        &root,
        "forbidden.sh",
        "Status: 403 Forbidden\\r\\nContent-Type: text/plain\\r\\n\\r\\nno\\n",
    )];
    let dir = root.join("g2");
    std::fs::create_dir_all(&dir).unwrap();
    let gate = start_gate(&dir, &yaml, o).await;
    let (status, body) = raw_get(&gate.base, "/app.git/info/refs?service=git-upload-pack").await;
    assert_eq!((status, body.as_str()), (403, "no\n"));

    // Dumb-HTTP paths are never handed to the CGI.
    let (status, _) = raw_get(&gate.base, "/app.git/HEAD").await;
    assert_eq!(status, 404);
}

/// `git http-backend` behind a wrapper that first starts a background process inheriting its
/// stdout and stderr (as a hook's or helper's leftover job would); `setsid` puts that process
/// in a session of its own, out of reach of the gate's kill of the CGI group.
fn leaky_http_backend(root: &std::path::Path, setsid: bool) -> std::ffi::OsString {
    let path = root.join(if setsid {
        "leaky-setsid.sh"
    } else {
        "leaky.sh"
    });
    let start = if setsid {
        "setsid sleep 1000"
    } else {
        "sleep 1000"
    };
    std::fs::write(
        &path,
        format!("#!/bin/sh\n{start} &\nexec git http-backend\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.into_os_string()
}

/// Clones through a gate whose http-backend leaves a process holding its output; the clone
/// must finish, not wait for the leftover (the gate's deadline is 120 s; the guard 60 s).
async fn clone_through_leaky_gate(setsid: bool) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let up = upstream(&root, "app");
    let mut o = options();
    o.git_timeout = Duration::from_secs(120);
    o.http_backend = vec![leaky_http_backend(&root, setsid)];
    let gate = start_gate(&root, &local_yaml("app", &up, ""), o).await;
    let work = root.join("work");
    let (url, w, r) = (gate.url("app"), work.clone(), root.clone());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        blocking(move || git_out(&r, &["clone", "-q", &url, w.to_str().unwrap()])),
    )
    .await
    .expect("the clone waited for http-backend's leftover process");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "hello\n"
    );
    let needle = format!("GIT_PROJECT_ROOT={}", gate.state.join("mirrors").display());
    (tmp, needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_ends_when_http_backend_exits_though_a_leftover_holds_its_output() {
    let (_tmp, needle) = clone_through_leaky_gate(false).await;
    // The leftovers were in http-backend's group and are killed with it.
    let start = Instant::now();
    loop {
        let left = processes_with_env(&needle);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "http-backend's leftovers still run: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_ends_though_a_leftover_in_its_own_session_holds_the_output() {
    let (_tmp, needle) = clone_through_leaky_gate(true).await;
    // Out of the gate's reach by design (a session of its own); the test ends them.
    let left = processes_with_env(&needle);
    assert!(
        !left.is_empty(),
        "the test's premise: the setsid leftovers outlive http-backend"
    );
    for line in left {
        let pid: i32 = line.split(':').next().unwrap().parse().unwrap();
        // SAFETY: kill(2) on a leftover `sleep` this test's gate started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}
