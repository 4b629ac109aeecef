//! The mirror's pre-receive hook: branch rules, secret scan of the new commits, then the
//! atomic forward to the upstream. It runs while the pushed objects are still in
//! quarantine, so a refused push leaves nothing behind and the mirror's refs only move
//! (after the hook succeeds) once the upstream has accepted exactly these updates.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::allowed_findings::{allowed_findings_path, read_allowed_findings};
use crate::glob::Glob;
use crate::keys::upstream_env;
use crate::mirror::{MIRROR_REFSPECS, RepoRuntime, Runtime};
use crate::process::{hermetic_git_env, run_blocking};
use crate::scanner::{GateFinding, PushScanner, UnscannedBlob};

/// One line of the hook's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Old value (all zeros for a new ref).
    pub old: String,
    /// New value (all zeros for a deletion).
    pub new: String,
    /// Full ref name.
    pub name: String,
}

impl RefUpdate {
    fn is_create(&self) -> bool {
        is_zero(&self.old)
    }
    fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }
}

fn is_zero(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

/// Parses `old new ref` lines.
pub fn parse_updates(input: &str) -> Result<Vec<RefUpdate>, String> {
    input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(old), Some(new), Some(name), None) => Ok(RefUpdate {
                    old: old.to_string(),
                    new: new.to_string(),
                    name: name.to_string(),
                }),
                _ => Err(format!("unexpected hook input line `{l}`")),
            }
        })
        .collect()
}

/// Checks the branch rules; returns one message per refused update.
pub fn check_rules(
    updates: &[RefUpdate],
    repo: &RepoRuntime,
    is_fast_forward: &mut dyn FnMut(&RefUpdate) -> Result<bool, String>,
) -> Vec<String> {
    let globs: Vec<Glob> = repo
        .push_branches
        .iter()
        .filter_map(|g| Glob::new(g).ok())
        .collect();
    let mut refused = Vec::new();
    for u in updates {
        if let Some(branch) = u.name.strip_prefix("refs/heads/") {
            if !globs.is_empty() && !globs.iter().any(|g| g.matches(branch)) {
                refused.push(format!(
                    "{}: branch `{branch}` is not in push_branches ({}); push to a matching branch",
                    u.name,
                    repo.push_branches.join(", ")
                ));
                continue;
            }
        } else if u.name.starts_with("refs/tags/") {
            if !globs.is_empty() {
                refused.push(format!(
                    "{}: tags cannot be pushed when push_branches is set",
                    u.name
                ));
                continue;
            }
        } else {
            refused.push(format!(
                "{}: only branches (refs/heads/) and tags (refs/tags/) can be pushed",
                u.name
            ));
            continue;
        }
        if repo.allow_force_push || u.is_create() {
            continue;
        }
        if u.is_delete() {
            refused.push(format!(
                "{}: deleting is not allowed for this repo (allow_force_push is off)",
                u.name
            ));
        } else if u.name.starts_with("refs/tags/") {
            refused.push(format!(
                "{}: moving an existing tag is not allowed (allow_force_push is off)",
                u.name
            ));
        } else {
            match is_fast_forward(u) {
                Ok(true) => {}
                Ok(false) => refused.push(format!(
                    "{}: non-fast-forward update refused (allow_force_push is off); fetch, rebase or merge, and push again",
                    u.name
                )),
                Err(e) => refused.push(format!("{}: {e}", u.name)),
            }
        }
    }
    refused
}

/// The revision arguments naming the commits a push adds: every new tip, minus everything
/// the mirror (= the upstream as last synced) already has.
pub fn scan_rev_args(updates: &[RefUpdate]) -> Vec<String> {
    let mut args: Vec<String> = updates
        .iter()
        .filter(|u| !u.is_delete())
        .map(|u| u.new.clone())
        .collect();
    if args.is_empty() {
        return args;
    }
    args.push("--not".into());
    args.push("--all".into());
    args
}

/// Renders the rejection for findings that are not allowed.
pub fn findings_message(findings: &[GateFinding]) -> String {
    let mut msg = format!(
        "push rejected by the git gate: {} possible secret{} in the pushed commits or tags\n",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    for f in findings {
        msg.push_str(&format!(
            "  rule {}  file {}  line {}  commit {}\n    fingerprint {}\n",
            f.rule_id, f.file, f.line, f.commit, f.fingerprint
        ));
    }
    if findings.iter().any(|f| f.file.starts_with('<')) {
        msg.push_str(
            "  (file <commit>: the commit's message or identities; <tag>: the tag's message or \
             tagger; <tree>: a file name in that tree; <blob>: a file only a tag reaches; the \
             line is the line of `git cat-file -p` on the id given as commit)\n",
        );
    }
    msg.push_str(
        "remove the secret from the commits or tags (rewrite them) and push again, or, if it is not a \
         secret, request an exception with the `gitleaks-allow` tool, giving the fingerprint; \
         inline allow comments are ignored. nothing was pushed upstream\n",
    );
    msg
}

/// Renders the rejection for blobs the scanner could not read.
pub fn unscanned_message(unscanned: &[UnscannedBlob]) -> String {
    let mut msg = format!(
        "push rejected by the git gate: {} pushed file{} cannot be scanned for secrets\n",
        unscanned.len(),
        if unscanned.len() == 1 { "" } else { "s" }
    );
    for u in unscanned {
        msg.push_str(&format!(
            "  blob {}  file {}: {}\n",
            u.object, u.path, u.reason
        ));
    }
    msg.push_str(&format!(
        "push such content uncompressed and unencrypted, in files of at most {} bytes, or ask \
         the operator to set `dangerously_push_unscannable: true` for this repository in the \
         manifest. nothing was pushed upstream\n",
        scan::DEFAULT_MAX_BLOB_SIZE
    ));
    msg
}

/// Everything the hook does, with its output going to `out` (which git relays to the
/// client). Returns whether the push may proceed.
pub fn pre_receive(
    state_dir: &Path,
    repo_name: &str,
    input: &str,
    scanner: &dyn PushScanner,
    out: &mut dyn Write,
) -> bool {
    match pre_receive_inner(state_dir, repo_name, input, scanner, out) {
        Ok(ok) => ok,
        Err(msg) => {
            let _ = writeln!(out, "push rejected by the git gate: {msg}");
            false
        }
    }
}

fn pre_receive_inner(
    state_dir: &Path,
    repo_name: &str,
    input: &str,
    scanner: &dyn PushScanner,
    out: &mut dyn Write,
) -> Result<bool, String> {
    let runtime = Runtime::load(state_dir).map_err(|e| e.to_string())?;
    let repo = runtime
        .repos
        .get(repo_name)
        .ok_or_else(|| format!("repo `{repo_name}` is not configured in this git gate"))?;
    let updates = parse_updates(input)?;
    if updates.is_empty() {
        return Ok(true);
    }
    let git_timeout = runtime.git_timeout();
    let mirror = repo.mirror.clone();

    // (b) branch rules
    let mut ff = |u: &RefUpdate| -> Result<bool, String> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&mirror)
            .args(["merge-base", "--is-ancestor", &u.old, &u.new])
            .envs(hermetic_git_env());
        let out = run_blocking(cmd, None, git_timeout).map_err(|e| e.to_string())?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(format!(
                "cannot tell whether the update is a fast-forward: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    };
    let refused = check_rules(&updates, repo, &mut ff);
    if !refused.is_empty() {
        let _ = writeln!(out, "push rejected by the git gate (branch rules):");
        for r in &refused {
            let _ = writeln!(out, "  {r}");
        }
        let _ = writeln!(out, "nothing was pushed upstream");
        return Ok(false);
    }

    // (a) secret scan of every object the push adds
    let rev_args = scan_rev_args(&updates);
    // The allowed findings this push needed: limited ones are spent once it went through.
    let mut used = std::collections::BTreeSet::new();
    if !rev_args.is_empty() {
        let scan = scanner
            .scan(&mirror, &rev_args, &hermetic_git_env())
            .map_err(|e| format!("the secret scan failed: {e}; nothing was pushed upstream"))?;
        let allowed =
            read_allowed_findings(&allowed_findings_path(state_dir)).map_err(|e| e.to_string())?;
        let blocking: Vec<GateFinding> = scan
            .findings
            .into_iter()
            .filter(|f| match allowed_by(&allowed, f) {
                Some(line) => {
                    used.insert(line);
                    false
                }
                None => true,
            })
            .collect();
        let refuse_unscanned = !scan.unscanned.is_empty() && !repo.dangerously_push_unscannable;
        if !blocking.is_empty() {
            let _ = write!(out, "{}", findings_message(&blocking));
        }
        if refuse_unscanned {
            let _ = write!(out, "{}", unscanned_message(&scan.unscanned));
        }
        if !blocking.is_empty() || refuse_unscanned {
            return Ok(false);
        }
        for u in &scan.unscanned {
            let _ = writeln!(
                out,
                "git gate: blob {}  file {}: {}; not scanned (dangerously_push_unscannable is on)",
                u.object, u.path, u.reason
            );
        }
    }

    // (c) forward upstream, atomically, with the exact old values
    let pushed = forward_upstream(repo, &runtime, &updates, out)?;
    if pushed && !used.is_empty() {
        // An allowed finding approved once has let its one push through.
        match crate::allowed_findings::spend_uses(&allowed_findings_path(state_dir), &used) {
            Ok(gone) => {
                for a in gone {
                    let _ = writeln!(
                        out,
                        "git gate: the approval of finding {} was for one push; it is used",
                        a.finding
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "git gate: {e}");
            }
        }
    }
    Ok(pushed)
}

/// `git push --atomic` with a lease on every ref's exact old value.
pub fn push_args(url: &str, updates: &[RefUpdate]) -> Vec<String> {
    let mut args = vec![
        "push".to_string(),
        "--atomic".into(),
        "--porcelain".into(),
        "--no-verify".into(),
    ];
    for u in updates {
        let expect = if u.is_create() { "" } else { u.old.as_str() };
        args.push(format!("--force-with-lease={}:{expect}", u.name));
    }
    args.push("--".into());
    args.push(url.to_string());
    for u in updates {
        if u.is_delete() {
            args.push(format!(":{}", u.name));
        } else {
            args.push(format!("{}:{}", u.new, u.name));
        }
    }
    args
}

fn env_without(names: &[&str]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| !names.iter().any(|n| OsStr::new(n) == k))
        .collect()
}

fn forward_upstream(
    repo: &RepoRuntime,
    runtime: &Runtime,
    updates: &[RefUpdate],
    out: &mut dyn Write,
) -> Result<bool, String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(&repo.mirror);
    cmd.args(push_args(&repo.url, updates));
    cmd.env_clear();
    // The push must read the quarantined objects (GIT_OBJECT_DIRECTORY stays) but the
    // upstream side must not think it is in our quarantine.
    cmd.envs(env_without(&["GIT_QUARANTINE_PATH"]));
    cmd.envs(upstream_env(repo.ssh.as_ref(), runtime.connect_timeout()));
    let result = run_blocking(cmd, None, runtime.git_timeout());
    let failure = match result {
        Ok(o) if o.status.success() => {
            let _ = writeln!(out, "git gate: pushed to upstream");
            return Ok(true);
        }
        Ok(o) => {
            let mut msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
            let porcelain = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !porcelain.is_empty() {
                msg.push('\n');
                msg.push_str(&porcelain);
            }
            msg
        }
        Err(e) => e.to_string(),
    };
    let _ = writeln!(out, "push rejected: the upstream refused it:");
    for line in failure.lines() {
        let _ = writeln!(out, "  {line}");
    }
    match reset_mirror(repo, runtime) {
        Ok(()) => {
            let _ = writeln!(
                out,
                "the gate's mirror now matches the upstream; fetch, then push again"
            );
        }
        Err(e) => {
            let _ = writeln!(out, "the git gate could not re-sync with the upstream: {e}");
        }
    }
    Ok(false)
}

/// Fetches the upstream's refs into the mirror, outside the quarantine.
fn reset_mirror(repo: &RepoRuntime, runtime: &Runtime) -> Result<(), String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(&repo.mirror);
    cmd.args(["fetch", "--quiet", "--prune", "--no-write-fetch-head", "--"])
        .arg(&repo.url)
        .args(MIRROR_REFSPECS);
    cmd.env_clear();
    cmd.envs(env_without(&[
        "GIT_QUARANTINE_PATH",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    ]));
    cmd.envs(upstream_env(repo.ssh.as_ref(), runtime.connect_timeout()));
    let out = run_blocking(cmd, None, runtime.git_timeout()).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Entry point for `… gate hook pre-receive --state-dir DIR --repo NAME`: reads stdin,
/// writes the verdict to stderr, returns the exit code.
pub fn run_cli(args: &[String], scanner: &dyn PushScanner) -> i32 {
    let mut state_dir: Option<PathBuf> = None;
    let mut repo: Option<String> = None;
    let mut it = args.iter();
    let mut kind = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--state-dir" => state_dir = it.next().map(PathBuf::from),
            "--repo" => repo = it.next().cloned(),
            other if kind.is_none() => kind = Some(other.to_string()),
            _ => {}
        }
    }
    let mut err = std::io::stderr();
    let (Some("pre-receive"), Some(state_dir), Some(repo)) = (kind.as_deref(), state_dir, repo)
    else {
        let _ = writeln!(
            err,
            "usage: gate hook pre-receive --state-dir DIR --repo NAME"
        );
        return 2;
    };
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        let _ = writeln!(
            err,
            "push rejected by the git gate: cannot read hook input: {e}"
        );
        return 1;
    }
    if pre_receive(&state_dir, &repo, &input, scanner, &mut err) {
        0
    } else {
        1
    }
}

/// An operator-approved exception names a finding by its fingerprint, or by `file:line`
/// (what supervise's `gitleaks-allow` records when the agent gave a file and line). A finding
/// in a commit, tag or tree object (`<commit>`, `<tag>`, `<tree>`, `<blob>`) is excepted by
/// its fingerprint only: `<commit>:8` would except line 8 of every commit message.
#[cfg(test)]
fn is_allowed(allowed: &std::collections::BTreeSet<String>, f: &GateFinding) -> bool {
    allowed_by(allowed, f).is_some()
}

/// The allowlist entry that allows `f`, if any.
fn allowed_by(allowed: &std::collections::BTreeSet<String>, f: &GateFinding) -> Option<String> {
    if allowed.contains(&f.fingerprint) {
        return Some(f.fingerprint.clone());
    }
    let at = format!("{}:{}", f.file, f.line);
    (!f.file.starts_with('<') && allowed.contains(&at)).then_some(at)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exceptions_match_by_fingerprint_or_file_and_line() {
        let f = super::GateFinding {
            rule_id: "aws-access-token".into(),
            file: "config/prod.env".into(),
            line: 3,
            commit: "abc123".into(),
            fingerprint: "abc123:config/prod.env:aws-access-token:3".into(),
        };
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        assert!(super::is_allowed(
            &set(&["abc123:config/prod.env:aws-access-token:3"]),
            &f
        ));
        assert!(super::is_allowed(&set(&["config/prod.env:3"]), &f));
        assert!(!super::is_allowed(&set(&["config/prod.env:4"]), &f));
        assert!(!super::is_allowed(
            &set(&["other:config/prod.env:aws-access-token:3"]),
            &f
        ));
        let message = super::GateFinding {
            file: "<commit>".into(),
            line: 8,
            fingerprint: "abc123:<commit>:aws-access-token:8".into(),
            ..f
        };
        assert!(!super::is_allowed(&set(&["<commit>:8"]), &message));
        assert!(super::is_allowed(
            &set(&["abc123:<commit>:aws-access-token:8"]),
            &message
        ));
    }

    use super::*;
    use pretty_assertions::assert_eq;

    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn repo(push_branches: &[&str], force: bool) -> RepoRuntime {
        RepoRuntime {
            name: "app".into(),
            url: "/up".into(),
            mirror: "/m".into(),
            push_branches: push_branches.iter().map(|s| s.to_string()).collect(),
            allow_force_push: force,
            dangerously_push_unscannable: false,
            ssh: None,
        }
    }

    fn upd(old: &str, new: &str, name: &str) -> RefUpdate {
        RefUpdate {
            old: old.into(),
            new: new.into(),
            name: name.into(),
        }
    }

    #[test]
    fn rules_refuse_outside_globs_deletions_and_force() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let updates = vec![
            upd(ZERO, &a, "refs/heads/agent/x"),
            upd(ZERO, &a, "refs/heads/main"),
            upd(&a, ZERO, "refs/heads/agent/gone"),
            upd(&a, &b, "refs/heads/agent/rewrite"),
            upd(&a, &b, "refs/heads/agent/ff"),
            upd(ZERO, &a, "refs/notes/x"),
        ];
        let mut ff = |u: &RefUpdate| Ok(u.name.ends_with("/ff"));
        let refused = check_rules(&updates, &repo(&["agent/*"], false), &mut ff);
        assert_eq!(
            refused,
            vec![
                "refs/heads/main: branch `main` is not in push_branches (agent/*); push to a matching branch".to_string(),
                "refs/heads/agent/gone: deleting is not allowed for this repo (allow_force_push is off)".into(),
                "refs/heads/agent/rewrite: non-fast-forward update refused (allow_force_push is off); fetch, rebase or merge, and push again".into(),
                "refs/notes/x: only branches (refs/heads/) and tags (refs/tags/) can be pushed".into(),
            ]
        );
        let mut ff = |_: &RefUpdate| Ok(false);
        assert_eq!(
            check_rules(&updates[2..5], &repo(&[], true), &mut ff),
            Vec::<String>::new()
        );
    }

    #[test]
    fn push_args_lease_exact_old_values() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let args = push_args(
            "/up",
            &[
                upd(ZERO, &a, "refs/heads/new"),
                upd(&a, &b, "refs/heads/main"),
                upd(&a, ZERO, "refs/heads/old"),
            ],
        );
        assert_eq!(
            args,
            vec![
                "push".to_string(),
                "--atomic".into(),
                "--porcelain".into(),
                "--no-verify".into(),
                "--force-with-lease=refs/heads/new:".into(),
                format!("--force-with-lease=refs/heads/main:{a}"),
                format!("--force-with-lease=refs/heads/old:{a}"),
                "--".into(),
                "/up".into(),
                format!("{a}:refs/heads/new"),
                format!("{b}:refs/heads/main"),
                ":refs/heads/old".into(),
            ]
        );
    }

    #[test]
    fn scan_range_is_new_tips_not_all() {
        let a = "a".repeat(40);
        assert_eq!(
            scan_rev_args(&[upd(ZERO, &a, "refs/heads/x"), upd(&a, ZERO, "refs/heads/y")]),
            vec![a.clone(), "--not".into(), "--all".into()]
        );
        assert_eq!(
            scan_rev_args(&[upd(&a, ZERO, "refs/heads/y")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unscanned_message_names_every_blob_and_the_way_out() {
        let msg = unscanned_message(&[
            UnscannedBlob {
                object: "a".repeat(40),
                path: "backup.tar.gz".into(),
                reason: "gzip-compressed".into(),
            },
            UnscannedBlob {
                object: "b".repeat(40),
                path: "<blob>".into(),
                reason: "larger than 10485760 bytes".into(),
            },
        ]);
        insta::assert_snapshot!(msg);
    }

    #[test]
    fn findings_message_explains_findings_in_objects() {
        let msg = findings_message(&[GateFinding {
            rule_id: "aws-access-token".into(),
            file: "<tag>".into(),
            line: 8,
            commit: "d287bf477c6d2cc8f31b426fdc64578822149484".into(),
            fingerprint: "d287bf477c6d2cc8f31b426fdc64578822149484:<tag>:aws-access-token:8".into(),
        }]);
        insta::assert_snapshot!(msg);
    }

    #[test]
    fn findings_message_names_everything() {
        let msg = findings_message(&[GateFinding {
            rule_id: "aws-access-token".into(),
            file: "config/prod.env".into(),
            line: 3,
            commit: "abc123".into(),
            fingerprint: "abc123:config/prod.env:aws-access-token:3".into(),
        }]);
        insta::assert_snapshot!(msg);
    }
}
