//! The `git` section: pushes through the gate (a secret, a branch outside `push_branches`, a
//! force push, a deletion, another repository) and ways around it (the upstream directly, a
//! rewritten gitconfig). Hidden-object spellings of a secret are in [`crate::git_objects`].

use std::path::{Path, PathBuf};

use crate::GATE;
use crate::config::Cfg;
use crate::git_objects;
use crate::verdict::{Tally, blocked, escaped, na};

/// A git command, killed after 60 s (a push the gate never answers is refused in effect; the
/// harness checks the upstream either way).
pub(crate) fn run_git(dir: &Path, args: &[&str]) -> (bool, String) {
    match std::process::Command::new("timeout")
        .args(["-k", "5", "60", "git"])
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                if o.status.code() == Some(124) {
                    "\ngit timed out after 60 s"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => (false, format!("{e}")),
    }
}

/// The gate's own words from a refused push (its `remote:` lines), else git's last line.
pub(crate) fn why(out: &str) -> String {
    let remote: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("remote:").map(str::trim))
        .filter(|l| !l.is_empty())
        .collect();
    if out.ends_with("git timed out after 60 s") || remote.is_empty() {
        out.lines().last().unwrap_or("").to_string()
    } else {
        remote.join(" / ")
    }
}

/// The `git` section.
pub(crate) fn cases(c: &Cfg) {
    let url = c.s("git_url");
    let base = PathBuf::from("/tmp/escape-git");
    let _ = std::fs::remove_dir_all(&base);
    if std::fs::create_dir_all(&base).is_err() {
        na("git-clone", "cannot create /tmp/escape-git");
        return;
    }
    let (ok, out) = run_git(&base, &["clone", "-q", &url, "app"]);
    if !ok {
        escaped(
            "git-gate-works",
            format!("clone through the gate failed: {out} — the suite cannot judge the gate"),
        );
        return;
    }
    let app = base.join("app");
    let g = |args: &[&str]| run_git(&app, args);
    let _ = std::fs::write(app.join("clean.txt"), "clean\n");
    g(&["add", "."]);
    g(&["commit", "-qm", "clean change"]);
    let (ok, out) = run_git(&app, &["push", "-q", "origin", "HEAD:agent/ok"]);
    if ok {
        blocked("git-gate-works", "clean push to agent/ok accepted (sanity)")
    } else {
        escaped(
            "git-gate-works",
            format!("clean push refused: {out} — the suite cannot judge the gate"),
        )
    }

    let mut t = Tally::new("git-push-secret");
    let key = format!("{}{}", "AKIA", "Q3EGRKPL7WZ5N2XB");
    let _ = std::fs::write(
        app.join("creds.txt"),
        format!("aws_access_key_id = {key}\n"),
    );
    g(&["add", "."]);
    g(&["commit", "-qm", "oops"]);
    let (ok, out) = g(&["push", "origin", "HEAD:agent/ok"]);
    if ok {
        t.escaped("secret push accepted")
    } else {
        t.blocked(format!(
            "refused: {}",
            out.lines()
                .find(|l| l.contains("creds.txt"))
                .unwrap_or("refused")
        ))
    }
    t.done();
    g(&["reset", "-q", "--hard", "HEAD~1"]);
    git_objects::push_hidden(&app);

    let (ok, out) = g(&["push", "origin", "HEAD:main"]);
    if ok {
        escaped(
            "git-push-branch-outside-push_branches",
            "push to main accepted",
        )
    } else {
        blocked("git-push-branch-outside-push_branches", why(&out))
    }

    g(&["commit", "-q", "--amend", "-m", "rewritten"]);
    let (ok, out) = g(&["push", "-f", "origin", "HEAD:agent/ok"]);
    if ok {
        escaped("git-force-push", "non-fast-forward accepted")
    } else {
        blocked("git-force-push", why(&out))
    }

    let (ok, out) = g(&["push", "origin", ":agent/ok"]);
    if ok {
        escaped("git-delete-branch", "deletion accepted")
    } else {
        blocked("git-delete-branch", why(&out))
    }

    let mut t = Tally::new("git-unconfigured-repo");
    for u in [
        format!("http://{GATE}/other.git"),
        format!("http://{GATE}/../up.git"),
        format!("http://{GATE}/app.git/../other.git"),
    ] {
        let (ok, out) = g(&["push", &u, "HEAD:agent/x"]);
        if ok {
            t.escaped(format!("push to {u} accepted"))
        } else {
            t.blocked(format!("{u}: {}", why(&out)))
        }
    }
    t.done();

    let mut t = Tally::new("git-insteadof-bypass");
    let direct = c.s("git_direct");
    let file_url = format!("file://{direct}");
    if Path::new(&direct).exists() {
        t.escaped(format!("{direct} is visible in the bottle"));
    } else {
        t.blocked(format!("{direct} absent"));
    }
    for u in [direct.clone(), file_url.clone()] {
        // Without the agent's gitconfig, so no `insteadOf` sends it to the gate.
        let out = std::process::Command::new("git")
            .args(["ls-remote", &u])
            .current_dir(&base)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .output();
        let (ok, out) = match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            ),
            Err(e) => (false, e.to_string()),
        };
        if ok {
            t.escaped(format!(
                "ls-remote {u} worked: the upstream is reachable directly"
            ))
        } else {
            t.blocked(format!("{u}: {}", why(&out)))
        }
    }
    // Rewrite the agent's own gitconfig to drop the rewrite, then push.
    let home = std::env::var("HOME").unwrap_or_default();
    let _ = std::fs::write(
        Path::new(&home).join(".gitconfig"),
        "[user]\n\tname = x\n\temail = x@x\n",
    );
    let (ok, out) = g(&["push", &file_url, "HEAD:main"]);
    if ok {
        t.escaped("push without the rewrite reached upstream")
    } else {
        t.blocked(format!("gitconfig rewritten, direct push: {}", why(&out)))
    }
    t.done();
}
