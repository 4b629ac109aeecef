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
//!    `resume`, a clean exit removes it: moved into the home's trash at once and deleted by
//!    a detached `bot-bottle` after the exit code is returned (`state::trash`).
//!
//! Steps 1 to 4 are [`launch`] (or [`resume`]), which returns a [`RunningBottle`]; 5 and 6 are
//! [`RunningBottle::wait`].
//!
//! The `bot-bottle` binary is one front end: it parses the command line, calls [`launch`] or
//! [`resume`] and prints. A test (or another front end) calls the same functions with its own
//! [`Options`]: the executable that serves the sidecar bundle and the backends' in-bottle
//! helpers, and a [`Report`] that receives what the operator would be told.

mod bundle;
pub mod codex_login;
mod docker;
mod env;
mod error;
#[cfg(feature = "kubernetes")]
pub mod kube;
#[cfg(feature = "kubernetes")]
pub mod kube_relay;
#[cfg(test)]
#[cfg(feature = "kubernetes")]
mod kube_warm_tests;
pub mod pod;
pub mod provider;
mod report;
mod sidecar_container;
mod spec;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendKind, BottleStdio, LaunchSpec, SidecarPlacement};
use manifest::ResolvedAgent;
use state::{Home, Identity, Metadata, RunLock};

use ::bundle::{EgressSidecar, GateSidecar, Listen, SidecarConfig, SuperviseSidecar};
pub use docker::provider_image;
pub use env::HostEnv;
use error::Context;
pub use error::LaunchError;
pub use report::{Recorded, Report};
pub use state::BottlePaths;

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
    /// The host environment: which tokens exist and their values for the sidecar bundle.
    pub env: HostEnv,
    /// Where the operator's messages go.
    pub report: Arc<dyn Report>,
    /// The cluster kubernetes bottles run on instead of the kubeconfig's (tests: the
    /// in-memory one, `backend::kubernetes::fake`).
    #[cfg(feature = "kubernetes")]
    pub cluster: Option<Arc<dyn backend::kubernetes::Cluster>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("exe", &self.exe)
            .field("interactive", &self.interactive)
            .field("env", &"..")
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
    let backend = open_backend(home, &launch, options)?;
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
    // Made durable with the rest of the new bottle's state, before the agent runs.
    let mut pending = state::PendingSync::new();
    let (identity, lock) = home
        .create_bottle_pending(&meta, &mut pending)
        .context("cannot create the bottle's state")?;
    RunningBottle::start(
        home, backend, identity, lock, launch, options, true, pending,
    )
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
    let backend = open_backend(home, &launch, options)?;
    RunningBottle::start(
        home,
        backend,
        identity.clone(),
        lock,
        launch,
        options,
        false,
        state::PendingSync::new(),
    )
}

fn open_backend(
    home: &Home,
    launch: &Launch,
    options: &Options,
) -> Result<Arc<dyn Backend>, LaunchError> {
    let kind = launch.backend;
    // The kubernetes backend's bundle runs in the pod, not in a docker container beside the
    // agent: it must never fall into the docker path. A test's cluster needs no kubeconfig.
    #[cfg(feature = "kubernetes")]
    if kind == BackendKind::Kubernetes && options.cluster.is_some() {
        return kube::open(home, launch, options);
    }
    #[cfg(not(feature = "kubernetes"))]
    if kind == BackendKind::Kubernetes {
        return Err(LaunchError::Invalid(
            "this build of bot-bottle has no kubernetes backend (the launcher was built without its `kubernetes` feature)".into(),
        ));
    }
    // The helpers are the front end's executable, not necessarily this process.
    let backend: Arc<dyn Backend> = Arc::from(backend::open(
        kind,
        &backend::OpenOptions::new(home.root(), &options.exe),
    )?);
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
    for warning in backend.launch_warnings() {
        options.report.line(&warning);
    }
    #[cfg(feature = "kubernetes")]
    if kind == BackendKind::Kubernetes {
        // The preflight above found the kubeconfig; the bottle's namespace is the manifest's.
        return kube::open(home, launch, options);
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
    /// The host's Codex login forwarded into this run, written back when it ends.
    codex_login: Option<codex_login::ForwardedLogin>,
    /// The `bot-bottle` executable, which empties the trash once this run ended.
    exe: PathBuf,
}

impl std::fmt::Debug for RunningBottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBottle")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// The agent of a running bottle and, when the bundle is a host process, the bundle and its
/// watcher (a bundle in a container is watched by the backend).
enum Agent {
    HostBundle {
        running: Box<dyn backend::RunningBottle>,
        sidecar: bundle::Sidecar,
        watcher: std::thread::JoinHandle<()>,
    },
    ContainerBundle {
        running: Box<dyn backend::RunningBottle>,
    },
}

impl RunningBottle {
    /// `pending`: what `launch` wrote of the bottle's state and has not made durable yet.
    #[allow(clippy::too_many_arguments)]
    fn start(
        home: &Home,
        backend: Arc<dyn Backend>,
        identity: Identity,
        lock: RunLock,
        launch: Launch,
        options: &Options,
        fresh: bool,
        pending: state::PendingSync,
    ) -> Result<RunningBottle, LaunchError> {
        let paths = home.bottle(&identity);
        // Markers left by a `start` that was killed belong to a bottle long gone.
        let _ = std::fs::remove_file(paths.agent_started());
        let _ = home.clear_sidecar_down(&identity);
        // What an emptying of the trash could not remove: said on every start until it is
        // gone (named, with what to do).
        for failure in home.trash_failures() {
            options.report.line(&failure);
        }
        // What an earlier run moved into the trash and no remover is at work on (its remover
        // was killed): removed beside this run.
        if home.trash_needs_emptying() {
            empty_trash_later(home, &options.exe, options.report.as_ref());
        }
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
            codex_login: None,
            exe: options.exe.clone(),
        };
        let mut forwarded = None;
        match bottle.set_up(&launch, options, pending, &mut forwarded) {
            Ok(agent) => {
                bottle.agent = Some(agent);
                bottle.codex_login = forwarded;
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
        // The agent has ended and can no longer change its login: write it back before the
        // state (and the bottle's copy with it) may be removed.
        if let Some(forwarded) = self.codex_login.take() {
            codex_login::write_back_and_report(
                &forwarded,
                &provider::codex_login_in_home(&self.paths.agent_home()),
                self.identity.as_str(),
                self.report.as_ref(),
            );
        }
        let result = match result {
            Err(e) => Err(self.sidecar_down_or(e)),
            Ok(code) => match self.sidecar_down() {
                Some(down) => Err(down),
                None => Ok(code),
            },
        };
        let requested = self.paths.stop_requested().exists();
        self.finish(result.as_ref().copied());
        // A stop the operator asked for is the bottle's normal end.
        match result {
            Ok(code) if requested => {
                if code != 0 {
                    self.report.line(&format!(
                        "{} stopped by `bot-bottle stop` (the agent ended with {code})",
                        self.identity
                    ));
                }
                Ok(0)
            }
            other => other,
        }
    }

    /// The request `bot-bottle stop` left, removed once read.
    fn take_stop_request(&self) -> Option<StopRequest> {
        let path = self.paths.stop_requested();
        let text = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        Some(StopRequest {
            keep: text.trim() == "keep",
        })
    }

    fn wait_agent(&self, agent: Agent) -> Result<i32, LaunchError> {
        match agent {
            Agent::HostBundle {
                mut running,
                sidecar,
                watcher,
            } => {
                // The bundle is stopped as soon as the agent is gone, while the backend
                // removes what is left of the bottle (native: its cgroups and directories).
                // `start` goes on once the bundle's shutdown is done; its process is reaped
                // beside the rest of the teardown, which ends the watcher's wait.
                let mut bundle = Some((sidecar, watcher));
                let mut stop = || {
                    if let Some((sidecar, watcher)) = bundle.take() {
                        self.watch.agent_ended(watch::exited_now(sidecar.pid()));
                        sidecar.stop_after_shutdown(move || {
                            let _ = watcher.join();
                        });
                    }
                };
                let waited = running.wait_then(&mut stop);
                stop();
                Ok(waited?.code)
            }
            Agent::ContainerBundle { mut running } => Ok(running.wait()?.code),
        }
    }

    /// The error to end with when the bundle died under the agent.
    fn sidecar_down(&self) -> Option<LaunchError> {
        let how = self.watch.down()?;
        let log = self.paths.sidecar_log();
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

    /// Keeps (after a failure, or a stop that asked to keep it) or removes the bottle's state
    /// once it has ended.
    fn finish(&mut self, outcome: Result<i32, &LaunchError>) {
        let _ = std::fs::remove_file(self.paths.agent_started());
        let requested = self.take_stop_request();
        let preserve = match (outcome, requested) {
            // Ended by `bot-bottle stop`: whatever the agent's code (a shell that ignores
            // SIGTERM is killed, 137), not a failure; kept only if the operator asked.
            (Ok(_), Some(StopRequest { keep })) => keep,
            (Ok(code), None) => code != 0,
            // A bottle whose sidecar bundle died is kept even on its first run.
            (Err(e), _) => !self.fresh || e.is_sidecar_down(),
        };
        drop(self.lock.take());
        let identity = &self.identity;
        if preserve {
            if let Err(e) = self.home.mark_preserved(identity) {
                self.report
                    .line(&format!("cannot mark {identity} preserved: {e}"));
            } else if requested.is_some() {
                self.report.line(&format!(
                    "stopped as asked; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle discard {identity}` removes it"
                ));
            } else if outcome.is_ok() {
                self.report.line(&format!(
                    "the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle discard {identity}` removes it"
                ));
            }
        } else {
            let _ = self.home.clear_preserved(identity);
            // The request log outlives the bottle, where `bot-bottle logs` finds it.
            if let Err(e) = self.home.keep_logs(identity, &self.paths.logs()) {
                self.report
                    .line(&format!("cannot keep the logs of {identity}: {e}"));
            }
            // What the backend kept for a `resume` that can no longer come (the kubernetes
            // home claim), while the state still says where it is. If that fails the state
            // stays: it is what tells `cleanup` where the claim is. Otherwise the state is
            // moved into the trash: gone for `list` and `cleanup` at once, its files removed
            // after this process has returned the agent's exit code.
            if let Err(e) = self.backend.discard(identity.as_str()) {
                self.report.line(&format!(
                    "cannot remove what the {} backend kept for {identity}: {e}; its state is kept so that `bot-bottle cleanup` (or `bot-bottle discard {identity}`) removes both once that works",
                    self.backend.kind()
                ));
            } else if let Err(e) = self.home.retire_bottle(identity) {
                self.report
                    .line(&format!("cannot remove the state of {identity}: {e}"));
            }
        }
        // The state and queue (above) and the native runtime directory (the backend's
        // teardown) are in the trash now.
        if !self.home.trash_is_empty() {
            empty_trash_later(&self.home, &self.exe, self.report.as_ref());
        }
    }

    /// Everything up to the agent running: the state, the sidecar bundle, the bottle.
    /// `forwarded` receives the host's Codex login once it is in the bottle's home (so that
    /// a failure after that point still knows it was handed over).
    ///
    /// Durability: the state a later `resume` or `cleanup` needs (the metadata, the live
    /// routes, the gate config, the agent's home) is written for readers at once and made
    /// durable together, in the background, while the sidecar bundle starts
    /// ([`state::PendingSync`]); every launch waits for that sync before the agent runs. A
    /// machine crash before it loses at most a bottle whose agent never ran; after it, the
    /// state is as durable as with one synced write after another. Files rebuilt on every
    /// start and resume (`sidecar.json`, the CA copies, the `agent-started` marker) are not
    /// synced at all.
    fn set_up(
        &self,
        launch: &Launch,
        options: &Options,
        mut pending: state::PendingSync,
        forwarded: &mut Option<codex_login::ForwardedLogin>,
    ) -> Result<Agent, LaunchError> {
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
        let all_routes = provider::routes_for(bottle, launch.codex_auth(), &options.env);
        if self.fresh || !paths.routes_file().exists() {
            let routes = policy::EgressConfig {
                log: Some(bottle.egress.log),
                upstream_ca: None,
                routes: Some(spec::without_missing_tokens(
                    &all_routes,
                    |k| options.env.is_set(k),
                    options.report.as_ref(),
                )),
            };
            let text = serde_saphyr::to_string(&routes).context("cannot encode the routes")?;
            pending
                .write(&paths.routes_file(), text.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", paths.routes_file().display()))?;
        }
        let has_repos = !bottle.git_gate.repos.is_empty();
        if has_repos {
            let text = serde_saphyr::to_string(&spec::gate_spec(&bottle.git_gate))
                .context("cannot encode the `git-gate` block")?;
            pending
                .write(&paths.gate_config(), text.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", paths.gate_config().display()))?;
        }

        // The sidecar bundle: it gets the route tokens and the forge tokens of the gate,
        // nothing else of the host's environment.
        let tokens: Vec<String> = all_routes
            .iter()
            .filter_map(|r| r.token_env.clone())
            .filter(|k| options.env.is_set(k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut sidecar_env = tokens.clone();
        sidecar_env.extend(spec::forge_token_envs(&bottle.git_gate.repos, &options.env));
        sidecar_env.sort();
        sidecar_env.dedup();
        let endpoints = contract::Endpoints::DEFAULT;
        let placement = self.backend.sidecar_placement();
        // A host process: Unix sockets in the state directory, forwarded into the bottle. A
        // container: TCP on the sidecar container's side of the bottle's internal network.
        let listen = |name: &str, port: u16| -> Result<Listen, LaunchError> {
            match placement {
                SidecarPlacement::Container | SidecarPlacement::BackendContainer => Ok(
                    Listen::Tcp(std::net::SocketAddr::from(([0, 0, 0, 0], port))),
                ),
                SidecarPlacement::HostProcess => Ok(Listen::Unix(paths.socket(name)?)),
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
                log: paths.egress_log(),
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
            // A pod's bundle gets one (`kube`): its queue is not on this machine.
            operator: None,
        };
        let json =
            serde_json::to_vec_pretty(&config).context("cannot encode the sidecar config")?;
        // Rebuilt on every start and resume: no fsync on the start path.
        state::atomic_write_unsynced(&paths.sidecar_config(), &json, 0o600)
            .with_context(|| format!("cannot write {}", paths.sidecar_config().display()))?;
        // A host bundle starts now and gets ready while the agent's home is written; the
        // bottle is launched only once it said so (`launch_beside_host_bundle`).
        let starting = match placement {
            SidecarPlacement::HostProcess => {
                let starting = bundle::Sidecar::spawn(&self.paths, &sidecar_env, options)?;
                // Native: the scan of `/etc` and `/opt` for the mount plan, beside the
                // bundle's start-up instead of after its `ready`.
                self.backend.start_host_scan();
                Some(starting)
            }
            SidecarPlacement::Container | SidecarPlacement::BackendContainer => None,
        };
        let spec = spec::agent_spec(
            identity,
            paths,
            launch,
            self.fresh,
            &config,
            &ca_pem,
            &mut pending,
            options,
        )?;
        // Every launch below waits for this before its agent runs.
        let synced = pending.sync_in_background();
        let durable = move || {
            synced
                .wait()
                .context("cannot make the bottle's state durable (fsync failed); check the disk holding $BOT_BOTTLE_HOME")
        };
        // The pod's sidecar bundle: its files shipped in the bottle's Secret (`kube`).
        #[cfg(feature = "kubernetes")]
        if launch.backend == BackendKind::Kubernetes {
            durable()?;
            let running = kube::launch(home, paths, launch, &sidecar_env, &config, &spec, options)?;
            return Ok(Agent::ContainerBundle { running });
        }
        if let Some(login) = &launch.codex_login {
            *forwarded = Some(provider::forward_codex_login(login, &paths.agent_home())?);
        }
        match placement {
            // The sidecar container (docker, the one backend that runs its bundle so).
            SidecarPlacement::Container => {
                let running = docker::launch(
                    home,
                    paths,
                    launch,
                    &sidecar_env,
                    &spec,
                    self.watch.clone(),
                    durable,
                    options,
                )?;
                Ok(Agent::ContainerBundle { running })
            }
            // A sidecar container the backend starts itself (apple).
            SidecarPlacement::BackendContainer => {
                durable()?;
                let running = sidecar_container::launch(
                    self.backend.as_ref(),
                    home,
                    paths,
                    launch,
                    &sidecar_env,
                    &spec,
                    options,
                )?;
                Ok(Agent::ContainerBundle { running })
            }
            SidecarPlacement::HostProcess => match starting {
                Some(starting) => self.launch_beside_host_bundle(starting, &spec, durable),
                None => Err(LaunchError::Invalid(
                    "the sidecar bundle was not started".into(),
                )),
            },
        }
    }

    /// The bottle beside its bundle, a child of this process: a watcher thread waits for the
    /// bundle to exit (without reaping it) and stops the bottle if it does while the agent
    /// runs.
    /// `durable` waits until the bottle's state is on disk; it is called before the agent
    /// is launched.
    fn launch_beside_host_bundle(
        &self,
        starting: bundle::Starting,
        spec: &LaunchSpec,
        durable: impl FnOnce() -> Result<(), LaunchError>,
    ) -> Result<Agent, LaunchError> {
        let mut sidecar = starting.ready()?;
        let started = self
            .backend
            .prepare(spec)
            .map_err(LaunchError::from)
            .and_then(|()| durable())
            .and_then(|()| {
                self.backend
                    .launch(spec, BottleStdio::inherit())
                    .map_err(LaunchError::from)
            });
        let running = match started {
            Ok(running) => running,
            Err(e) => {
                sidecar.stop();
                return Err(e);
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
        Ok(Agent::HostBundle {
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
/// What `bot-bottle stop` asked for.
#[derive(Debug, Clone, Copy)]
struct StopRequest {
    /// Keep the state (`stop --keep`) instead of removing it.
    keep: bool,
}

/// Records that the operator asked `identity` to stop (so its end is not a failure), with
/// `keep` to keep its state for `resume`. Written before the agent is signalled.
pub fn request_stop(paths: &BottlePaths, keep: bool) -> std::io::Result<()> {
    std::fs::write(paths.stop_requested(), if keep { "keep\n" } else { "\n" })
}

fn agent_started(paths: &BottlePaths, report: &dyn Report) {
    // A request left by a `stop` of an earlier run is not this run's.
    let _ = std::fs::remove_file(paths.stop_requested());
    // A marker of this run only (removed at its end and at the next start): not synced.
    if let Err(e) = state::atomic_write_unsynced(&paths.agent_started(), b"", 0o600) {
        report.line(&format!("cannot mark the agent as started: {e}"));
    }
}

/// Has a detached `bot-bottle` empty the trash (see `state::trash`); if it cannot be
/// started, the trash is emptied here and now, so that nothing is left behind.
fn empty_trash_later(home: &Home, exe: &Path, report: &dyn Report) {
    if home.spawn_emptying_trash(exe).is_err()
        && let Err(e) = home.empty_trash(backend::TRASH_REMOVERS)
    {
        report.line(&format!("{e}"));
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
