//! The git gate: the bottle's only way to reach its git upstreams.
//!
//! The agent talks git smart HTTP to the gate (`http://<gate>/<name>.git`); the gate runs
//! `git http-backend` against a bare mirror of each upstream. Fetches first sync the mirror
//! from the upstream (and fail rather than serve stale data). Pushes land in quarantine and
//! the mirror's pre-receive hook — our own binary — checks branch rules, scans the new
//! commits for secrets (only operator-approved fingerprints pass) and forwards the update
//! upstream atomically with the exact old values; the mirror's refs move only if the
//! upstream accepted. Upstreams are reached with a per-repository deploy key and a pinned
//! host key.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = gitgate::GateConfig::load("repos.yaml".as_ref())?;
//! let options = gitgate::GateOptions::new("my-bottle")?;
//! let gate = gitgate::Gate::new(config, "/var/lib/bb/gate".as_ref(), options).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9418").await?;
//! gate.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod allowed_findings;
mod builtin;
mod cgi;
mod config;
mod gitconfig;
pub mod gitea;
mod glob;
pub mod hook;
mod keys;
mod mirror;
mod process;
mod scanner;
mod server;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use allowed_findings::{
    ALLOWED_FINDINGS_FILE, AllowedFinding, AllowedFindingsError, add_allowed,
    allowed_findings_path, allowed_now, parse_allowed_findings, parse_entries,
    read_allowed_findings, remove_ended, spend_uses,
};
pub use builtin::BuiltinScanner;
pub use config::{ConfigError, GateConfig, KeySource, RepoConfig, Upstream};
pub use gitconfig::{render_agent_gitconfig, render_from_config};
pub use keys::{SshSetup, known_hosts_line, ssh_command};
pub use mirror::{RUNTIME_FILE, RepoRuntime, Runtime, hook_script};
pub use scanner::{
    GateFinding, PushScan, PushScanner, SCAN_GIT_TIMEOUT, ScanFailure, Unavailable, push_scanner,
};
pub use spec::{GateSpec, KeySpec, RepoSpec, UserSpec};

use crate::cgi::CgiSettings;
use crate::mirror::RepoHandle;
use crate::server::Shared;

/// Setting up the gate failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The state directory could not be prepared.
    #[error("cannot prepare the git gate's state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path of our own executable (for the hook) is unknown.
    #[error("cannot find the bot-bottle executable for the pre-receive hook: {0}")]
    Exe(std::io::Error),
    /// A deploy key or known_hosts file could not be set up.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// Revoking forge deploy keys at teardown failed.
    #[error(transparent)]
    Teardown(gitea::GiteaError),
    /// The Gitea provider failed.
    #[error("repo `{repo}`: {source}")]
    Gitea {
        /// Repository.
        repo: String,
        /// Why.
        source: gitea::GiteaError,
    },
    /// The runtime file for the hook could not be written.
    #[error(transparent)]
    Runtime(mirror::MirrorError),
    /// A mirror could not be created or configured.
    #[error("repo `{repo}`: {source}")]
    Mirror {
        /// Repository.
        repo: String,
        /// Why.
        source: mirror::MirrorError,
    },
}

/// Tunables of a gate; [`GateOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// Executable the pre-receive hook runs as `<exe> gate hook pre-receive …`.
    pub hook_exe: PathBuf,
    /// Bottle name, used in deploy key titles (`bot-bottle-<bottle>-<repo>`).
    pub bottle: String,
    /// Limit for one upstream git operation (fetch, push).
    pub git_timeout: Duration,
    /// SSH connect timeout.
    pub connect_timeout: Duration,
    /// Limit for one HTTP request to the gate, including its git run.
    pub request_timeout: Duration,
    /// Largest request body accepted (a push's pack).
    pub max_request_bytes: u64,
    /// Limit for each forge API call and key generation.
    pub api_timeout: Duration,
    /// The CGI program serving git smart HTTP, with its arguments (`git http-backend`).
    pub http_backend: Vec<std::ffi::OsString>,
}

impl GateOptions {
    /// Defaults, with the hook running the current executable.
    pub fn new(bottle: &str) -> Result<Self, GateError> {
        Ok(GateOptions {
            hook_exe: std::env::current_exe().map_err(GateError::Exe)?,
            bottle: bottle.to_string(),
            git_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(1800),
            max_request_bytes: 2 * 1024 * 1024 * 1024,
            api_timeout: Duration::from_secs(20),
            http_backend: vec!["git".into(), "http-backend".into()],
        })
    }
}

/// A running gate's configuration, mirrors and keys.
pub struct Gate {
    shared: Arc<Shared>,
    state_dir: PathBuf,
    options: GateOptions,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("state_dir", &self.state_dir)
            .field("repos", &self.shared.repos.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> GateError + '_ {
    move |source| GateError::StateDir {
        path: path.to_path_buf(),
        source,
    }
}

impl Gate {
    /// Prepares the state directory: deploy keys and known_hosts, one bare mirror per repo
    /// with the pre-receive hook, the runtime file the hook reads; then tries a first sync
    /// (a failure is logged; every later fetch retries and reports it to the client).
    pub async fn new(
        config: GateConfig,
        state_dir: &Path,
        options: GateOptions,
    ) -> Result<Self, GateError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(state_dir).map_err(state_err(state_dir))?;
        let state_dir = std::fs::canonicalize(state_dir).map_err(state_err(state_dir))?;
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(state_err(&state_dir))?;
        let mirrors = state_dir.join("mirrors");
        std::fs::create_dir_all(&mirrors).map_err(state_err(&mirrors))?;

        let mut runtimes = BTreeMap::new();
        for repo in config.repos.values() {
            let ssh = match &repo.key {
                None => None,
                Some(source) => {
                    let key_path = match source {
                        KeySource::Static { path } => {
                            keys::install_static_key(&state_dir, &repo.name, path)?
                        }
                        KeySource::Gitea {
                            forge_token_env,
                            api_url,
                        } => {
                            let path = match &repo.upstream {
                                Upstream::Ssh { path, .. } => path.clone(),
                                Upstream::Local => String::new(),
                            };
                            let title = format!("bot-bottle-{}-{}", options.bottle, repo.name);
                            let gitea_err = |source| GateError::Gitea {
                                repo: repo.name.clone(),
                                source,
                            };
                            let client = gitea::GiteaClient::from_env(
                                api_url,
                                forge_token_env,
                                options.api_timeout,
                            )
                            .map_err(gitea_err)?;
                            let req = gitea::KeyRequest {
                                repo_name: &repo.name,
                                upstream_url: &repo.url,
                                upstream_path: &path,
                                forge_token_env,
                                title: &title,
                            };
                            gitea::provision(&state_dir, &client, &req)
                                .await
                                .map_err(gitea_err)?
                        }
                    };
                    let known_hosts_path = keys::write_known_hosts(&state_dir, repo)?
                        .unwrap_or_else(|| PathBuf::from("/dev/null"));
                    Some(SshSetup {
                        key_path,
                        known_hosts_path,
                    })
                }
            };
            runtimes.insert(
                repo.name.clone(),
                RepoRuntime {
                    name: repo.name.clone(),
                    url: repo.url.clone(),
                    mirror: mirrors.join(format!("{}.git", repo.name)),
                    push_branches: repo.push_branches.clone(),
                    allow_force_push: repo.allow_force_push,
                    dangerously_push_unscannable: repo.dangerously_push_unscannable,
                    ssh,
                },
            );
        }
        let runtime = Runtime {
            repos: runtimes,
            git_timeout_ms: u64::try_from(options.git_timeout.as_millis()).unwrap_or(u64::MAX),
            connect_timeout_ms: u64::try_from(options.connect_timeout.as_millis())
                .unwrap_or(u64::MAX),
        };
        runtime
            .save(&state_dir)
            .map_err(|source| GateError::Mirror {
                repo: String::new(),
                source,
            })?;

        let mut repos = BTreeMap::new();
        for (name, rt) in &runtime.repos {
            let hook = hook_script(&options.hook_exe, &state_dir, name);
            mirror::prepare_mirror(rt, &hook, options.git_timeout)
                .await
                .map_err(|source| GateError::Mirror {
                    repo: name.clone(),
                    source,
                })?;
            let handle = RepoHandle::new(rt.clone());
            if let Err(e) = handle
                .sync(options.git_timeout, options.connect_timeout)
                .await
            {
                tracing::warn!(repo = %name, error = %e, "first upstream sync failed; fetches will retry");
            }
            repos.insert(name.clone(), handle);
        }
        let shared = Arc::new(Shared {
            cgi: CgiSettings {
                project_root: mirrors.clone(),
                safe_directories: runtime.repos.values().map(|r| r.mirror.clone()).collect(),
                remote_user: "agent".into(),
                max_request_bytes: options.max_request_bytes,
                timeout: options.request_timeout,
                home: state_dir.clone(),
                program: options.http_backend.clone(),
            },
            repos,
            git_timeout: options.git_timeout,
            connect_timeout: options.connect_timeout,
        });
        Ok(Gate {
            shared,
            state_dir,
            options,
        })
    }

    /// Serves git smart HTTP on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        server::serve(self.shared.clone(), listener, shutdown).await
    }

    /// Serves git smart HTTP on a Unix socket until `shutdown` resolves (the sidecar
    /// bundle; the backend forwards the bottle's gate port to it).
    pub async fn serve_unix(
        &self,
        listener: tokio::net::UnixListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        server::serve_unix(self.shared.clone(), listener, shutdown).await
    }

    /// The state directory (canonical).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The allowed findings this gate reads on every push.
    pub fn allowed_findings_path(&self) -> PathBuf {
        allowed_findings_path(&self.state_dir)
    }

    /// The bare mirror of a repository.
    pub fn mirror_path(&self, repo: &str) -> Option<PathBuf> {
        self.shared
            .repos
            .get(repo)
            .map(|r| r.runtime.mirror.clone())
    }

    /// Teardown: revokes the deploy keys this gate created through a forge API.
    pub async fn teardown(&self) -> Result<usize, GateError> {
        let token_for = |var: &str| std::env::var(var).ok();
        gitea::revoke_all(&self.state_dir, self.options.api_timeout, &token_for)
            .await
            .map_err(GateError::Teardown)
    }
}

/// What the fuzz targets (`fuzz/`) call: how the git gate reads a request path and the CGI
/// head of `git http-backend`, without sockets. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// The repository and endpoint a request asks for: (repository, `info/refs` |
    /// `git-upload-pack` | `git-receive-pack`).
    pub fn route<'a>(method: &http::Method, path: &'a str) -> Option<(&'a str, &'static str)> {
        use crate::server::Route;
        crate::server::route(method, path).map(|r| match r {
            Route::InfoRefs(repo) => (repo, "info/refs"),
            Route::UploadPack(repo) => (repo, "git-upload-pack"),
            Route::ReceivePack(repo) => (repo, "git-receive-pack"),
        })
    }

    /// The CGI header lines of `git http-backend`: the status and the headers passed on.
    pub fn cgi_headers(lines: &[Vec<u8>]) -> Result<(u16, usize), String> {
        crate::cgi::parse_headers(lines).map(|h| (h.status.as_u16(), h.headers.len()))
    }
}
