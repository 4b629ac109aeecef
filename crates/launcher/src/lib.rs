//! The launcher: running one bottle, shared by `start` and `resume`.
//!
//! The order matters and each step fails closed:
//! 1. the backend's preflight must pass (never run the agent less isolated than promised);
//! 2. the state directory holds the CA, the live routes and the gate config;
//! 3. the sidecar bundle starts as a child process holding the tokens and the CA key, and
//!    `start` waits for its readiness line (a bundle that dies or stays silent aborts);
//! 4. the agent's home is written from the contract, and the backend launches the agent with
//!    the sidecar sockets forwarded to fixed loopback ports inside the bottle;
//! 5. while the agent runs the bundle is watched ([`watch`]): if it dies, the operator is
//!    told, the bottle is stopped and its state kept (fail closed, nothing silently restarted);
//! 6. on exit the bundle is stopped; a non-zero exit keeps the state (`.preserve`) for
//!    `resume`, a clean exit removes it.
//!
//! Steps 1 to 4 are [`launch`] (or [`resume`]), which returns a [`RunningBottle`]; 5 and 6 are
//! [`RunningBottle::wait`].
//!
//! The `bot-bottle` binary is one front end: it parses the command line, calls [`launch`] or
//! [`resume`] and prints. A test (or another front end) calls the same functions with its own
//! [`Options`]: the executable that serves the sidecar bundle and the backends' in-bottle
//! helpers, and a [`Report`] that receives what the operator would be told.

mod bundle;
mod docker;
mod error;
pub mod layout;
pub mod provider;
mod report;
mod spec;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendKind, BottleStdio, LaunchSpec};
use manifest::ResolvedAgent;
use state::{Home, Identity, Metadata, RunLock};

use error::Context;
pub use error::LaunchError;
pub use layout::{
    BottlePaths, EgressSidecar, GateSidecar, Listen, SidecarConfig, SuperviseSidecar,
};
pub use report::{Recorded, Report};

/// What to run, decided by `start` (from the manifest) or `resume` (from metadata).
#[derive(Debug)]
pub struct Launch {
    /// The resolved agent and its bottle.
    pub agent: ResolvedAgent,
    /// The backend to use.
    pub backend: BackendKind,
    /// The working directory to give the bottle.
    pub cwd: PathBuf,
    /// Copy the working directory instead of mounting it.
    pub copy_cwd: bool,
    /// Replaces the provider's agent command when not empty.
    pub command: Vec<String>,
    /// The manifest the agent came from.
    pub manifest: Option<PathBuf>,
    /// The host's Codex login to copy into the bottle (`--forward-codex-auth`), already
    /// checked by the command.
    pub codex_login: Option<PathBuf>,
}

impl Launch {
    /// How Codex authenticates in this bottle.
    fn codex_auth(&self) -> contract::CodexAuth {
        if self.codex_login.is_some() {
            contract::CodexAuth::ChatGptLogin
        } else {
            contract::CodexAuth::ApiKey
        }
    }
}

/// How the launcher runs, as its front end decides.
#[derive(Clone)]
pub struct Options {
    /// The `bot-bottle` executable: it serves the sidecar bundle (`sidecar --config`) and the
    /// backends' hidden helpers (the native in-bottle helper, the docker init and reaper).
    pub exe: PathBuf,
    /// Whether the agent gets a terminal (the front end's stdin, stdout and stderr are one).
    pub interactive: bool,
    /// Where the operator's messages go.
    pub report: Arc<dyn Report>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("exe", &self.exe)
            .field("interactive", &self.interactive)
            .finish_non_exhaustive()
    }
}

/// Creates a new bottle and starts it: the sidecar bundle is ready and the agent runs when
/// this returns. [`RunningBottle::wait`] waits for the agent and tears the bottle down.
pub fn launch(
    home: &Home,
    launch: Launch,
    options: &Options,
) -> Result<RunningBottle, LaunchError> {
    let backend = open_backend(home, launch.backend, options)?;
    let meta = Metadata {
        agent: launch.agent.name.clone(),
        cwd: launch.cwd.clone(),
        copy_cwd: launch.copy_cwd,
        backend: launch.backend.name().to_string(),
        created: now_rfc3339(),
        manifest: launch.manifest.clone(),
        command: launch.command.clone(),
        forward_codex_auth: launch.codex_login.is_some(),
    };
    let (identity, lock) = home
        .create_bottle(&meta)
        .context("cannot create the bottle's state")?;
    RunningBottle::start(home, backend, identity, lock, launch, options, true)
}

/// Starts an existing (preserved) bottle again; `lock` is its run lock, taken by the caller
/// before it read the bottle's metadata.
pub fn resume(
    home: &Home,
    identity: &Identity,
    lock: RunLock,
    launch: Launch,
    options: &Options,
) -> Result<RunningBottle, LaunchError> {
    let backend = open_backend(home, launch.backend, options)?;
    RunningBottle::start(
        home,
        backend,
        identity.clone(),
        lock,
        launch,
        options,
        false,
    )
}

fn open_backend(
    home: &Home,
    kind: BackendKind,
    options: &Options,
) -> Result<Arc<dyn Backend>, LaunchError> {
    let backend: Arc<dyn Backend> = match kind {
        // The in-bottle helper is the front end's executable, not necessarily this process.
        BackendKind::Native => Arc::new(backend::native::NativeBackend::new(
            backend::native::NativeConfig::new(
                backend::native::HelperCommand {
                    exe: options.exe.clone(),
                    args: vec![backend::native::HELPER_SUBCOMMAND.into()],
                },
                home.root(),
            ),
        )),
        // Like native from here: QEMU runs in a native jail whose helper is the front end.
        BackendKind::Qemu => Arc::new(backend::qemu::QemuBackend::new(
            backend::qemu::QemuConfig::new(
                backend::native::HelperCommand {
                    exe: options.exe.clone(),
                    args: vec![backend::native::HELPER_SUBCOMMAND.into()],
                },
                home.root(),
            ),
        )),
        _ => Arc::from(backend::open(kind, home.root())?),
    };
    // Native: the kernel's facts only (`doctor` also runs a test bottle, which would double
    // the start-up time here, and the launch itself fails closed on anything the facts miss).
    let status = backend.launch_preflight();
    if !status.usable {
        let mut msg = format!(
            "the {kind} backend cannot isolate a bottle on this machine, so nothing was started"
        );
        for check in status.checks.iter().filter(|c| c.required && !c.ok) {
            msg.push_str(&format!("\n  {}: {}", check.name, check.detail));
            if let Some(fix) = &check.fix {
                msg.push_str(&format!("\n    fix: {fix}"));
            }
        }
        msg.push_str("\n(`bot-bottle doctor` shows every backend)");
        return Err(LaunchError::BackendUnusable(msg));
    }
    Ok(backend)
}

/// A bottle whose agent runs. [`wait`](RunningBottle::wait) waits for the agent to end and
/// then stops the sidecar bundle and keeps (after a failure) or removes the bottle's state;
/// [`stop`](RunningBottle::stop) asks the agent to end. Dropped without `wait`, the bottle is
/// stopped and torn down the same way.
pub struct RunningBottle {
    home: Home,
    identity: Identity,
    paths: BottlePaths,
    lock: Option<RunLock>,
    fresh: bool,
    backend: Arc<dyn Backend>,
    watch: Arc<watch::Watch>,
    report: Arc<dyn Report>,
    /// Taken by the first `wait` (or the drop).
    agent: Option<Agent>,
}

impl std::fmt::Debug for RunningBottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBottle")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// The agent of a running bottle and, on native, its sidecar bundle and the bundle's watcher.
enum Agent {
    Native {
        running: Box<dyn backend::RunningBottle>,
        sidecar: bundle::Sidecar,
        watcher: std::thread::JoinHandle<()>,
    },
    Docker {
        running: Box<dyn backend::RunningBottle>,
    },
}

impl RunningBottle {
    fn start(
        home: &Home,
        backend: Arc<dyn Backend>,
        identity: Identity,
        lock: RunLock,
        launch: Launch,
        options: &Options,
        fresh: bool,
    ) -> Result<RunningBottle, LaunchError> {
        let paths = BottlePaths::new(home.state_dir(&identity));
        // Markers left by a `start` that was killed belong to a bottle long gone.
        let _ = std::fs::remove_file(paths.agent_started());
        let _ = home.clear_sidecar_down(&identity);
        let watch = Arc::new(watch::Watch::new(home, &identity, options.report.clone()));
        let mut bottle = RunningBottle {
            home: home.clone(),
            identity,
            paths,
            lock: Some(lock),
            fresh,
            backend,
            watch,
            report: options.report.clone(),
            agent: None,
        };
        match bottle.set_up(&launch, options) {
            Ok(agent) => {
                bottle.agent = Some(agent);
                Ok(bottle)
            }
            Err(e) => {
                let e = bottle.sidecar_down_or(e);
                bottle.finish(Err(&e));
                Err(e)
            }
        }
    }

    /// The bottle's identity (`<agent>-<5 hex>`).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The bottle's state directory layout.
    pub fn paths(&self) -> &BottlePaths {
        &self.paths
    }

    /// Asks the agent to end (SIGTERM, then SIGKILL after `grace`); `wait` then returns its
    /// exit code. Returns whether there was an agent to stop.
    pub fn stop(&self, grace: Duration) -> Result<bool, LaunchError> {
        Ok(self.backend.stop(self.identity.as_str(), grace)?)
    }

    /// Waits for the agent to end, stops the sidecar bundle and keeps or removes the bottle's
    /// state; the agent's exit code (`128 + n` when killed by signal `n`). A non-zero exit
    /// keeps the state for [`resume`]; a clean exit removes it.
    pub fn wait(mut self) -> Result<i32, LaunchError> {
        self.end()
    }

    fn end(&mut self) -> Result<i32, LaunchError> {
        let Some(agent) = self.agent.take() else {
            return Ok(0);
        };
        let result = self.wait_agent(agent);
        let result = match result {
            Err(e) => Err(self.sidecar_down_or(e)),
            Ok(code) => match self.sidecar_down() {
                Some(down) => Err(down),
                None => Ok(code),
            },
        };
        self.finish(result.as_ref().copied());
        result
    }

    fn wait_agent(&self, agent: Agent) -> Result<i32, LaunchError> {
        match agent {
            Agent::Native {
                mut running,
                mut sidecar,
                watcher,
            } => {
                let waited = running.wait();
                self.watch.agent_ended(watch::exited_now(sidecar.pid()));
                // Ends the watcher's wait.
                sidecar.stop();
                let _ = watcher.join();
                Ok(waited?.code)
            }
            Agent::Docker { mut running } => Ok(running.wait()?.code),
        }
    }

    /// The error to end with when the bundle died under the agent.
    fn sidecar_down(&self) -> Option<LaunchError> {
        let how = self.watch.down()?;
        let log = self.paths.logs().join("sidecar.log");
        Some(
            watch::SidecarDown {
                identity: self.identity.clone(),
                how,
                tail: bundle::log_tail(&log),
                log,
            }
            .into(),
        )
    }

    fn sidecar_down_or(&self, e: LaunchError) -> LaunchError {
        self.sidecar_down().unwrap_or(e)
    }

    /// Keeps (after a failure) or removes the bottle's state once it has ended.
    fn finish(&mut self, outcome: Result<i32, &LaunchError>) {
        let _ = std::fs::remove_file(self.paths.agent_started());
        let preserve = match outcome {
            Ok(code) => code != 0,
            // A bottle whose sidecar bundle died is kept even on its first run.
            Err(e) => !self.fresh || e.is_sidecar_down(),
        };
        drop(self.lock.take());
        let identity = &self.identity;
        if preserve {
            if let Err(e) = self.home.mark_preserved(identity) {
                self.report
                    .line(&format!("cannot mark {identity} preserved: {e}"));
            } else if outcome.is_ok() {
                self.report.line(&format!(
                    "the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle list` shows it"
                ));
            }
        } else {
            let _ = self.home.clear_preserved(identity);
            if let Err(e) = self.home.remove_bottle(identity) {
                self.report
                    .line(&format!("cannot remove the state of {identity}: {e}"));
            }
        }
    }

    /// Everything up to the agent running: the state, the sidecar bundle, the bottle.
    fn set_up(&self, launch: &Launch, options: &Options) -> Result<Agent, LaunchError> {
        let (home, identity, paths) = (&self.home, &self.identity, &self.paths);
        let bottle = &launch.agent.bottle;
        for dir in [
            paths.live_config(),
            paths.sockets(),
            paths.agent_home(),
            paths.files(),
            paths.logs(),
        ] {
            create_private_dir(&dir)?;
        }

        // The CA: created once per bottle, kept for resume.
        let ca = egress::ca::CertificateAuthority::load_or_create(&paths.ca_dir())
            .context("cannot create the bottle CA")?;
        let ca_pem = ca.cert_pem().to_string();

        // Live routes: from the manifest on a fresh start; a resumed bottle keeps what the
        // operator approved since.
        // Provider template (clients): the client's default routes go before the bottle's own.
        let all_routes = provider::routes_for(bottle, launch.codex_auth());
        if self.fresh || !paths.routes_file().exists() {
            let routes = policy::EgressConfig {
                log: Some(bottle.egress.log),
                upstream_ca: None,
                routes: Some(spec::without_missing_tokens(
                    &all_routes,
                    |k| std::env::var_os(k).is_some_and(|v| !v.is_empty()),
                    options.report.as_ref(),
                )),
            };
            let text = serde_saphyr::to_string(&routes).context("cannot encode the routes")?;
            state::atomic_write(&paths.routes_file(), text.as_bytes())
                .with_context(|| format!("cannot write {}", paths.routes_file().display()))?;
        }
        let has_repos = !bottle.git_gate.repos.is_empty();
        if has_repos {
            let text = serde_saphyr::to_string(&spec::gate_spec(&bottle.git_gate))
                .context("cannot encode the `git-gate` block")?;
            state::atomic_write(&paths.gate_config(), text.as_bytes())
                .with_context(|| format!("cannot write {}", paths.gate_config().display()))?;
        }

        // The sidecar bundle: it gets the route tokens and the forge tokens of the gate,
        // nothing else of the host's environment.
        let tokens: Vec<String> = all_routes
            .iter()
            .filter_map(|r| r.token_env.clone())
            .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut sidecar_env = tokens.clone();
        sidecar_env.extend(spec::forge_token_envs(&bottle.git_gate.repos));
        sidecar_env.sort();
        sidecar_env.dedup();
        let endpoints = contract::Endpoints::DEFAULT;
        let docker = launch.backend == BackendKind::Docker;
        // Native: Unix sockets in the state directory, forwarded into the bottle. Docker: TCP
        // on the sidecar container's side of the bottle's internal network.
        let listen = |name: &str, port: u16| -> Result<Listen, LaunchError> {
            if docker {
                Ok(Listen::Tcp(std::net::SocketAddr::from((
                    [0, 0, 0, 0],
                    port,
                ))))
            } else {
                Ok(Listen::Unix(paths.socket(name)?))
            }
        };
        let config = SidecarConfig {
            identity: identity.to_string(),
            home: home.root().to_path_buf(),
            egress: EgressSidecar {
                listen: listen("egress", endpoints.egress)?,
                routes: paths.routes_file(),
                ca_dir: paths.ca_dir(),
                upstream_ca: bottle.egress.upstream_ca.clone(),
                log: paths.logs().join("egress.jsonl"),
            },
            gate: has_repos
                .then(|| -> Result<GateSidecar, LaunchError> {
                    Ok(GateSidecar {
                        listen: listen("gate", endpoints.gate)?,
                        repos: paths.gate_config(),
                        state_dir: paths.gate_dir(),
                    })
                })
                .transpose()?,
            supervise: bottle
                .supervise
                .then(|| -> Result<SuperviseSidecar, LaunchError> {
                    Ok(SuperviseSidecar {
                        listen: listen("supervise", endpoints.supervise)?,
                    })
                })
                .transpose()?,
            tokens,
        };
        let json =
            serde_json::to_vec_pretty(&config).context("cannot encode the sidecar config")?;
        state::atomic_write(&paths.sidecar_config(), &json)
            .with_context(|| format!("cannot write {}", paths.sidecar_config().display()))?;
        let spec = spec::agent_spec(
            identity, paths, launch, self.fresh, &config, &ca_pem, options,
        )?;
        if docker {
            let running = docker::launch(
                home,
                paths,
                launch,
                &sidecar_env,
                &spec,
                self.watch.clone(),
                options,
            )?;
            return Ok(Agent::Docker { running });
        }
        self.launch_native(&sidecar_env, &spec, options)
    }

    /// The native bottle beside its bundle, a child of this process: a watcher thread waits
    /// for the bundle to exit (without reaping it) and stops the bottle if it does while the
    /// agent runs.
    fn launch_native(
        &self,
        sidecar_env: &[String],
        spec: &LaunchSpec,
        options: &Options,
    ) -> Result<Agent, LaunchError> {
        let mut sidecar = bundle::Sidecar::start(&self.paths, sidecar_env, &options.exe)?;
        let started = self
            .backend
            .prepare(spec)
            .and_then(|()| self.backend.launch(spec, BottleStdio::inherit()));
        let running = match started {
            Ok(running) => running,
            Err(e) => {
                sidecar.stop();
                return Err(e.into());
            }
        };
        agent_started(&self.paths, self.report.as_ref());
        let pid = sidecar.pid();
        let (backend, watch, identity, report) = (
            self.backend.clone(),
            self.watch.clone(),
            self.identity.clone(),
            self.report.clone(),
        );
        let watcher = std::thread::spawn(move || {
            if let Some(how) = watch::wait_exited(pid)
                && watch.sidecar_down(&how)
                && let Err(e) = backend.stop(identity.as_str(), watch::STOP_GRACE)
            {
                report.line(&format!("cannot stop {identity}: {e}"));
            }
        });
        Ok(Agent::Native {
            running,
            sidecar,
            watcher,
        })
    }
}

impl Drop for RunningBottle {
    /// A bottle dropped while its agent runs is stopped and torn down as if it had ended.
    fn drop(&mut self) {
        if self.agent.is_some() {
            let _ = self.stop(watch::STOP_GRACE);
            let _ = self.end();
        }
    }
}

/// Marks the agent as running for `stop` (removed when the bottle ends). Not fatal when it
/// cannot be written: `stop` then keeps waiting, as for a bottle still being set up.
fn agent_started(paths: &BottlePaths, report: &dyn Report) {
    if let Err(e) = state::atomic_write(&paths.agent_started(), b"") {
        report.line(&format!("cannot mark the agent as started: {e}"));
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), LaunchError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
