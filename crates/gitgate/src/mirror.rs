//! Bare mirrors of the upstreams, the runtime description the hook reads, and upstream sync.
//!
//! The mirror is what `git http-backend` serves. Its refs follow the upstream: a sync
//! fetches (and prunes) every branch and tag; a push moves them only after the hook has
//! forwarded the update upstream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::keys::{SshSetup, upstream_env};
use crate::process::{RunError, run_async};

/// Name of the runtime file in the state directory, read by the pre-receive hook.
pub const RUNTIME_FILE: &str = "gate.json";

/// Refspecs a mirror fetches: every branch and tag, forced (the upstream is the truth).
pub(crate) const MIRROR_REFSPECS: [&str; 2] =
    ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// What the hook needs to know about one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRuntime {
    /// Name, served at `/<name>.git`.
    pub name: String,
    /// Upstream URL.
    pub url: String,
    /// The bare mirror.
    pub mirror: PathBuf,
    /// Branch globs; empty means any.
    pub push_branches: Vec<String>,
    /// Deletions and non-fast-forward updates allowed.
    pub allow_force_push: bool,
    /// Pushes adding content the scanner cannot read go through (unscanned).
    #[serde(default)]
    pub dangerously_push_unscannable: bool,
    /// Deploy key and known_hosts, for SSH upstreams.
    pub ssh: Option<SshSetup>,
}

/// The runtime file: everything the hook reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// Repositories by name.
    pub repos: BTreeMap<String, RepoRuntime>,
    /// Limit for one upstream git operation, in milliseconds.
    pub git_timeout_ms: u64,
    /// SSH connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
}

impl Runtime {
    /// Limit for one upstream git operation.
    pub fn git_timeout(&self) -> Duration {
        Duration::from_millis(self.git_timeout_ms)
    }

    /// SSH connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Reads the runtime file of a state directory.
    pub fn load(state_dir: &Path) -> Result<Self, MirrorError> {
        let path = state_dir.join(RUNTIME_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| MirrorError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| MirrorError::Runtime {
            path,
            message: e.to_string(),
        })
    }

    pub(crate) fn save(&self, state_dir: &Path) -> Result<(), MirrorError> {
        let path = state_dir.join(RUNTIME_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| MirrorError::Runtime {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = state_dir.join(format!("{RUNTIME_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(|source| MirrorError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| MirrorError::Io { path, source })
    }
}

/// Setting up or syncing a mirror failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// File system error.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime file is unreadable.
    #[error("invalid gate runtime file {path}: {message}; restart the gate")]
    Runtime {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// git could not be run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// git failed.
    #[error("`git {action}` failed for {mirror}: {stderr}")]
    Git {
        /// What was done.
        action: String,
        /// The mirror.
        mirror: PathBuf,
        /// git's message.
        stderr: String,
    },
}

fn git(mirror: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(mirror);
    cmd
}

async fn git_ok(
    mut cmd: tokio::process::Command,
    action: &str,
    mirror: &Path,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    timeout: Duration,
) -> Result<(), MirrorError> {
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_async(cmd, timeout).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MirrorError::Git {
            action: action.to_string(),
            mirror: mirror.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The pre-receive hook: one exec of our own binary, so the scan runs in that process.
pub fn hook_script(exe: &Path, state_dir: &Path, repo: &str) -> String {
    format!(
        "#!/bin/sh\nexec {} gate hook pre-receive --state-dir {} --repo {}\n",
        sh_quote(&exe.to_string_lossy()),
        sh_quote(&state_dir.to_string_lossy()),
        sh_quote(repo)
    )
}

/// Creates the bare mirror if needed and (re)writes its configuration and hook.
pub(crate) async fn prepare_mirror(
    repo: &RepoRuntime,
    hook: &str,
    timeout: Duration,
) -> Result<(), MirrorError> {
    let env = crate::process::hermetic_git_env();
    if !repo.mirror.join("HEAD").exists() {
        let parent = repo.mirror.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| MirrorError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(["init", "--quiet", "--bare", "--template="])
            .arg(&repo.mirror);
        git_ok(cmd, "init", &repo.mirror, &env, timeout).await?;
    }
    for (key, value) in [
        ("http.receivepack", "true"),
        ("http.uploadpack", "true"),
        ("http.getanyfile", "false"),
        ("receive.advertisePushOptions", "false"),
        ("core.logAllRefUpdates", "false"),
        ("gc.auto", "0"),
    ] {
        let mut cmd = git(&repo.mirror);
        cmd.args(["config", key, value]);
        git_ok(cmd, "config", &repo.mirror, &env, timeout).await?;
    }
    let hooks = repo.mirror.join("hooks");
    std::fs::create_dir_all(&hooks).map_err(|source| MirrorError::Io {
        path: hooks.clone(),
        source,
    })?;
    let path = hooks.join("pre-receive");
    write_executable(&path, hook)?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<(), MirrorError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    let err = |source| MirrorError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Fetches the upstream into the mirror (every branch and tag, pruned).
pub(crate) async fn fetch_upstream(
    repo: &RepoRuntime,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<(), MirrorError> {
    let mut cmd = git(&repo.mirror);
    cmd.args(["fetch", "--quiet", "--prune", "--no-write-fetch-head", "--"])
        .arg(&repo.url)
        .args(MIRROR_REFSPECS);
    let env = upstream_env(repo.ssh.as_ref(), connect_timeout);
    git_ok(cmd, "fetch", &repo.mirror, &env, timeout).await?;
    ensure_head(repo, &env, timeout).await
}

/// Points the mirror's HEAD at the upstream's default branch if it does not resolve yet
/// (a fresh mirror, or the branch it named was deleted), so clones check out what a clone
/// of the upstream would.
async fn ensure_head(
    repo: &RepoRuntime,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    timeout: Duration,
) -> Result<(), MirrorError> {
    let mut cmd = git(&repo.mirror);
    cmd.args(["rev-parse", "--verify", "-q", "HEAD"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if run_async(cmd, timeout).await?.status.success() {
        return Ok(());
    }
    let mut cmd = git(&repo.mirror);
    cmd.args(["ls-remote", "--symref", "--", &repo.url, "HEAD"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_async(cmd, timeout).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let upstream_head = text.lines().find_map(|l| {
        l.strip_prefix("ref: ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    });
    let mut cmd = git(&repo.mirror);
    cmd.args(["for-each-ref", "--format=%(refname)", "refs/heads/"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_async(cmd, timeout).await?;
    let branches: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let head = upstream_head
        .filter(|h| branches.contains(h))
        .or_else(|| {
            ["refs/heads/main", "refs/heads/master"]
                .iter()
                .map(|s| s.to_string())
                .find(|h| branches.contains(h))
        })
        .or_else(|| branches.first().cloned());
    if let Some(head) = head {
        let mut cmd = git(&repo.mirror);
        cmd.args(["symbolic-ref", "HEAD", &head]);
        git_ok(cmd, "symbolic-ref", &repo.mirror, env, timeout).await?;
    }
    Ok(())
}

/// A repository as the server holds it: runtime plus the lock that serialises every write
/// to the mirror (sync fetches and pushes) and lets concurrent syncs share one fetch.
#[derive(Debug)]
pub(crate) struct RepoHandle {
    pub(crate) runtime: RepoRuntime,
    pub(crate) lock: Arc<tokio::sync::Mutex<SyncRecord>>,
    /// Upstream fetches actually run (observability and tests).
    pub(crate) fetches: std::sync::atomic::AtomicU64,
}

/// The last sync: when it started and how it ended.
#[derive(Debug, Default)]
pub(crate) struct SyncRecord {
    last: Option<(Instant, Result<(), String>)>,
}

impl RepoHandle {
    pub(crate) fn new(runtime: RepoRuntime) -> Self {
        RepoHandle {
            runtime,
            lock: Arc::new(tokio::sync::Mutex::new(SyncRecord::default())),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Brings the mirror up to date with the upstream. Callers that arrive while a fetch is
    /// queued or running share the result of the first fetch that starts after they asked.
    pub(crate) async fn sync(
        &self,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<(), String> {
        let requested = Instant::now();
        let mut record = self.lock.lock().await;
        if let Some((started, result)) = &record.last
            && *started >= requested
        {
            return result.clone();
        }
        let started = Instant::now();
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = fetch_upstream(&self.runtime, timeout, connect_timeout)
            .await
            .map_err(|e| e.to_string());
        record.last = Some((started, result.clone()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_syncs_share_one_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("up.git");
        let st = std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&up)
            .status()
            .unwrap();
        assert!(st.success());
        let rt = RepoRuntime {
            name: "app".into(),
            url: up.to_string_lossy().into_owned(),
            mirror: dir.path().join("m/app.git"),
            push_branches: vec![],
            allow_force_push: false,
            dangerously_push_unscannable: false,
            ssh: None,
        };
        let t = Duration::from_secs(30);
        prepare_mirror(&rt, "#!/bin/sh\n", t).await.unwrap();
        let handle = Arc::new(RepoHandle::new(rt));
        // Hold the lock so that all syncs queue up behind it, then let them go.
        let guard = handle.lock.lock().await;
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let h = handle.clone();
                tokio::spawn(async move { h.sync(t, t).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(guard);
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        assert_eq!(handle.fetches.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A later request gets a fresh fetch.
        handle.sync(t, t).await.unwrap();
        assert_eq!(handle.fetches.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn hook_script_is_one_quoted_exec() {
        assert_eq!(
            hook_script(
                Path::new("/opt/bb/bot-bottle"),
                Path::new("/st ate/x'y"),
                "app"
            ),
            "#!/bin/sh\nexec '/opt/bb/bot-bottle' gate hook pre-receive --state-dir '/st ate/x'\\''y' --repo 'app'\n"
        );
    }
}
