//! The docker backend: the agent in a container, reachable only through its sidecar container.
//!
//! Talks to the Docker Engine API over the local Unix socket with `bollard` (no CLI parsing).
//! Per bottle it creates the objects listed in [`spec`]: an internal network shared by the
//! agent and the sidecar, an egress network for the sidecar alone, the two containers, and a
//! one-shot firewall container.
//!
//! # How the agent reaches the sidecar: an in-container forwarder
//!
//! The agent's contract (DESIGN.md §6) is identical on every backend: the sidecar endpoints
//! are `127.0.0.1:<port>`. Rewriting the contract's addresses to the sidecar's IP would make
//! docker bottles differ from native ones (and leak the internal addressing into the agent's
//! configuration), and sharing the sidecar's network namespace would hand the agent the egress
//! network. So the agent container's PID 1 is [`init`] (`crate::inbottle::docker_init`): the host's own executable, mounted
//! read-only, running as the agent's user, which listens on those loopback ports and relays each
//! connection to the same port of the sidecar container on the internal network. It holds no
//! privilege: the agent could reach the sidecar's address directly anyway.
//!
//! # Closing Docker's embedded DNS (and everything else)
//!
//! Containers on user-defined networks get Docker's embedded DNS server at `127.0.0.11`, which
//! forwards names it does not know to the host's resolvers — an exfiltration path even from an
//! `internal: true` network (CVE-2024-29018; Debian's Docker 20.10 has no fix). `dns: []` does
//! not help (it only changes the server's upstreams) and neither does replacing
//! `/etc/resolv.conf` (the agent can still send packets to `127.0.0.11`). The internal
//! network's gateway is also the host itself, so host services listening on all addresses
//! would be reachable. Hence, before the agent runs, a one-shot container joins the agent's
//! network namespace with `NET_ADMIN` only and installs [`spec::firewall_script`]: loopback
//! (except `127.0.0.11`) and the sidecar's forwarded TCP ports are the only destinations,
//! everything else is rejected. The agent has no capabilities, so it cannot undo the rules.
//! The init waits for the launcher's `SIGUSR1` (sent once the firewall container succeeded)
//! and then checks for itself that the embedded DNS does not answer before starting the agent.
//!
//! # The sidecar's fixed address
//!
//! The launcher picks the internal network's subnet itself ([`spec::InternalSubnet`]: a `/28`
//! of `172.16.0.0/16`, or of `10.254.0.0/16` where host routes cover the first, that overlaps
//! no host route and that the daemon accepts, i.e. no other network's) and gives the sidecar
//! its `.2`; every other container on the network (the
//! agent) gets an address from `.8/29` only, so nothing can take the sidecar's address first.
//! So the firewall's rules and the init's relay target are known before any container runs:
//! the agent's side (its container, then the firewall) and the sidecar's side (its container,
//! then its ready line) proceed side by side, and neither the firewall nor the init waits for
//! the sidecar or for Docker's DNS (the init used to resolve the sidecar's name through it, so
//! the rules could only go in after the sidecar had started). Nothing is opened by this: the
//! rules are the same, naming the same one address and ports, and a subnet that the daemon or
//! the host already uses is never taken (the daemon refuses the overlap; host routes are read
//! from `/proc/net/route`, the daemon being local, through [`client::Engine::host_routes`];
//! a table that cannot be read whole refuses the bottle). Each bottle still has its own two
//! networks: a network shared between bottles would let one bottle's agent reach another's
//! sidecar, and its firewall would have to name every sidecar on it.
//!
//! # Hardening of the agent container
//!
//! Non-root (`uid:gid` of the launching user, `1000:1000` when that is root), all capabilities
//! dropped, `no-new-privileges`, read-only root filesystem with private `/tmp` and `/var/tmp`,
//! memory and PID limits, private IPC, and gVisor (`runsc`) whenever the daemon lists it in the
//! network mode the firewall covers ([`runtime`] says why; `BOT_BOTTLE_DOCKER_RUNTIME=runc` opts out).
//!
//! # Lifecycle
//!
//! `launch` creates the networks, starts the sidecar and the agent container side by side
//! (the agent's init waits) and installs the firewall as soon as the agent's container runs,
//! then, once the sidecar is ready too, releases the init with `SIGUSR1`.
//! `wait` returns the agent's exit code once the container stopped, copies
//! [`DockerConfig::transcript`] out (it must not live on a tmpfs, which dies with the
//! container; the home directory is a bind mount anyway), stops the sidecar (SIGTERM: its
//! last writes done, deploy keys revoked) and removes every object of the bottle — or, with
//! [`DockerConfig::trash`], records them in the home's trash for its detached remover
//! ([`remove_recorded`]): the daemon's removals (~0.5 s, serialised in dockerd) then happen
//! after `start` returned. Unlike native bottles, containers survive a launcher killed with `SIGKILL`: `list`
//! reports them as orphaned (the launcher label names its boot id, PID and start time) and
//! `cleanup` kills and removes them. While the agent runs, `wait` also watches the sidecar
//! container: if it ends first, the agent is stopped (SIGTERM, SIGKILL after
//! [`DockerConfig::stop_grace`]) and [`DockerConfig::sidecar_down`] is told how it ended — a
//! bottle never runs on without its sidecar. An exit code of [`init::SETUP_FAILED`] (125) with a
//! `bot-bottle:` message on stderr means the init refused to start the agent.
//!
//! The docker daemon must be local: the workspace, the home directory and the init are bind
//! mounts of host paths.

pub(crate) mod bottle;
pub mod client;
#[cfg(test)]
mod fake;
pub mod image;
mod lifecycle;
pub mod reaper;
pub mod runtime;
pub mod spec;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::AttachContainerOptions;
use tokio::runtime::Runtime;

pub use self::bottle::DockerBottle;
use self::client::{Engine, api_message, is_not_found, setup};
pub use self::image::ImageSource;
pub use self::lifecycle::describe_exit;
/// The launcher label of this process and its liveness test, shared with the kubernetes
/// backend's launcher annotation.
#[cfg(feature = "kubernetes")]
pub(crate) use self::lifecycle::{
    launcher_gone as launcher_gone_label, launcher_label as launcher_label_value,
};
pub use self::reaper::{TRASH_RECORD_KIND, remove_recorded};
pub use self::runtime::RuntimeChoice;
use self::spec::{AgentSettings, workspace_host};
pub use self::spec::{Names, SidecarMount, SidecarSpec};
use crate::helper_command::HelperCommand;
use crate::inbottle::docker_init as init;
use crate::preflight::{self, BackendStatus};
use crate::spec::{BottleStdio, LaunchSpec, StdioMode};
use crate::{Backend, BackendError, BackendKind, BottleInfo, CleanupAction, RunningBottle};

/// Receives build output lines (progress) while an image is built.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Told how the sidecar container ended (e.g. "was killed by signal 9 (SIGKILL)") when it
/// ends while the agent runs; the backend then stops the agent itself.
pub type SidecarDown = Arc<dyn Fn(&str) + Send + Sync>;

/// Called once before the agent is released (its container runs, its init waits for the
/// release): an error refuses the launch and the bottle is torn down. The launcher waits here
/// until the bottle's state is durable, so that its fsyncs overlap the containers' start.
pub type BeforeRelease = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Where the agent image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentImage {
    /// An image that already exists (used as is).
    Image(String),
    /// Built from a provider template or a bottle Dockerfile, only when its inputs changed.
    Build(ImageSource),
}

/// A directory copied out of the agent container when the bottle ends (e.g. the transcript).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptCopy {
    /// The path inside the container.
    pub inside: PathBuf,
    /// The host directory it is unpacked into.
    pub host: PathBuf,
}

/// Configuration of the docker backend.
#[derive(Clone)]
pub struct DockerConfig {
    /// The daemon's Unix socket (`$DOCKER_HOST` when it is `unix://…`, else
    /// `/var/run/docker.sock`).
    pub socket: PathBuf,
    pub agent_image: AgentImage,
    /// The sidecar container; `launch` fails without one.
    pub sidecar: Option<SidecarSpec>,
    /// The image of the firewall container (needs `iptables` and `/bin/sh`); by default the
    /// sidecar's image.
    pub firewall_image: Option<String>,
    /// The init executable (for `bot-bottle`: itself with its docker init subcommand).
    pub init: HelperCommand,
    /// The [`reaper`] (for `bot-bottle`: itself with its reaper subcommand): removes the
    /// bottle when the launcher dies without doing so. `None`: a killed launcher leaves its
    /// containers for `cleanup`.
    pub reaper: Option<HelperCommand>,
    pub runtime: RuntimeChoice,
    /// Read-only root filesystem for the agent (providers that write outside home, `/tmp` and
    /// the workspace need `false`).
    pub read_only_root: bool,
    /// The agent's `uid:gid`; `None`: the launching user's, or `1000:1000` for root.
    pub user: Option<(u32, u32)>,
    pub transcript: Option<TranscriptCopy>,
    pub progress: Option<Progress>,
    /// Called when the sidecar container ends while the agent runs. Whether or not it is
    /// set, the agent is then stopped (SIGTERM, SIGKILL after [`DockerConfig::stop_grace`]):
    /// a bottle never runs on without its sidecar.
    pub sidecar_down: Option<SidecarDown>,
    /// How long the agent gets after SIGTERM when its sidecar is gone.
    pub stop_grace: Duration,
    /// Called right before the agent is released ([`BeforeRelease`]).
    pub before_release: Option<BeforeRelease>,
    /// The home's trash (`$BOT_BOTTLE_HOME/trash`, see `state::trash`): once the agent
    /// ended and its sidecar stopped, the bottle's containers and networks are recorded
    /// there and removed by the trash's detached remover ([`remove_recorded`]) instead of
    /// while `start` waits. `None`: removed before `wait` returns.
    pub trash: Option<PathBuf>,
}

impl DockerConfig {
    /// Defaults: local socket, the runtime `BOT_BOTTLE_DOCKER_RUNTIME` chooses (automatic when
    /// unset: see [`runtime`]), read-only root (the limits come from each bottle's
    /// [`crate::Resources`]).
    pub fn new(agent_image: AgentImage, init: HelperCommand) -> DockerConfig {
        DockerConfig {
            socket: default_socket(),
            agent_image,
            sidecar: None,
            firewall_image: None,
            init,
            reaper: None,
            runtime: RuntimeChoice::from_env(),
            read_only_root: true,
            user: None,
            transcript: None,
            progress: None,
            sidecar_down: None,
            stop_grace: Duration::from_secs(10),
            before_release: None,
            trash: None,
        }
    }
}

/// The running executable with the hidden [`crate::inbottle::docker_init::INIT_SUBCOMMAND`] (for `bot-bottle`, whose
/// `main` dispatches it to [`crate::inbottle::docker_init::init_main`]). The executable is mounted read-only into agent
/// containers, so it must run on the image's libc (glibc ≥ the build machine's, e.g. Debian
/// bookworm images for a bookworm build) — or be statically linked.
pub fn init_command() -> Result<HelperCommand, BackendError> {
    let mut command = HelperCommand::current_exe()?;
    command.args = vec![init::INIT_SUBCOMMAND.into()];
    Ok(command)
}

/// The running executable with the hidden [`reaper::REAPER_SUBCOMMAND`] (for `bot-bottle`,
/// whose `main` dispatches it to [`reaper::reaper_main`]).
pub fn reaper_command() -> Result<HelperCommand, BackendError> {
    let mut command = HelperCommand::current_exe()?;
    command.args = vec![reaper::REAPER_SUBCOMMAND.into()];
    Ok(command)
}

/// The daemon socket named by `$DOCKER_HOST` (`unix://` only), else the default one.
pub fn default_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// The docker backend.
pub struct DockerBackend {
    config: DockerConfig,
    rt: Arc<Runtime>,
    client: OnceLock<Docker>,
    /// The agent image once `prepare` built or found it.
    agent_tag: Mutex<Option<String>>,
    runtime: OnceLock<runtime::Chosen>,
}

/// The daemon's runtimes as [`runtime::choose`] reads them.
impl DockerBackend {
    pub fn new(config: DockerConfig) -> Result<DockerBackend, BackendError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bot-bottle-docker")
            .enable_all()
            .build()
            .map_err(|source| BackendError::Process {
                action: "start the docker client runtime",
                source,
            })?;
        Ok(DockerBackend {
            config,
            rt: Arc::new(rt),
            client: OnceLock::new(),
            agent_tag: Mutex::new(None),
            runtime: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    fn unavailable(&self, reason: String) -> BackendError {
        BackendError::Unavailable {
            backend: BackendKind::Docker,
            reason,
        }
    }

    /// The connected client (API version negotiated with the daemon).
    pub fn client(&self) -> Result<Docker, BackendError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let socket = self.config.socket.display().to_string();
        let docker = Docker::connect_with_socket(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| self.unavailable(format!("cannot use {socket}: {}", api_message(&e))))?;
        let docker = self
            .rt
            .block_on(docker.negotiate_version())
            .map_err(|e| {
                self.unavailable(format!(
                    "dockerd does not answer on {socket} ({}); start it (scripts/docker/start-dockerd or `sudo systemctl start docker`)",
                    api_message(&e)
                ))
            })?;
        Ok(self.client.get_or_init(|| docker).clone())
    }

    /// The runtime the agent runs with (see [`runtime`]): `Some("runsc")` when chosen
    /// automatically and the daemon lists it in host network mode, the configured one once
    /// the daemon is seen to list it, or `None` for the daemon's default.
    pub fn agent_runtime(&self) -> Result<Option<String>, BackendError> {
        Ok(self.chosen_runtime()?.runtime.clone())
    }

    fn chosen_runtime(&self) -> Result<&runtime::Chosen, BackendError> {
        if let Some(chosen) = self.runtime.get() {
            return Ok(chosen);
        }
        // The preflight that `start` ran just before read `/info` already: one call per run.
        let chosen = match preflight::take_docker_runtimes(&self.config.socket) {
            Some(seen) => {
                lifecycle::choose_from(&self.config.runtime, &seen.runtimes, &seen.default_runtime)?
            }
            None => {
                let docker = self.client()?;
                self.rt
                    .block_on(lifecycle::choose_runtime(&docker, &self.config.runtime))?
            }
        };
        Ok(self.runtime.get_or_init(|| chosen))
    }

    /// Builds `source` unless an image with its input hash exists; returns the tag.
    pub fn ensure_image(&self, source: &ImageSource, role: &str) -> Result<String, BackendError> {
        let docker = self.client()?;
        self.rt.block_on(lifecycle::build_image(
            &docker,
            source,
            role,
            self.config.progress.as_ref(),
        ))
    }

    fn agent_image(&self) -> Result<String, BackendError> {
        if let Some(tag) = self.agent_tag.lock().ok().and_then(|t| t.clone()) {
            return Ok(tag);
        }
        let tag = match &self.config.agent_image {
            AgentImage::Image(tag) if tag.is_empty() => {
                return Err(BackendError::InvalidSpec(
                    "no agent image configured for the docker backend".to_owned(),
                ));
            }
            AgentImage::Image(tag) => tag.clone(),
            AgentImage::Build(source) => self.ensure_image(source, "agent-image")?,
        };
        if let Ok(mut slot) = self.agent_tag.lock() {
            *slot = Some(tag.clone());
        }
        Ok(tag)
    }

    fn agent_user(&self) -> String {
        let (uid, gid) = self.config.user.unwrap_or_else(|| {
            let (uid, gid) = (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            );
            if uid == 0 { (1000, 1000) } else { (uid, gid) }
        });
        format!("{uid}:{gid}")
    }

    /// Starts a bottle with an explicit sidecar (the trait's `launch` uses the configured one).
    pub fn launch_with(
        &self,
        spec: &LaunchSpec,
        sidecar: &SidecarSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        validate(spec)?;
        if spec.interactive && [stdio.stdin, stdio.stdout, stdio.stderr] != [StdioMode::Inherit; 3]
        {
            return Err(BackendError::InvalidSpec(
                "an interactive bottle needs the caller's terminal on stdin, stdout and stderr"
                    .to_owned(),
            ));
        }
        let docker = self.client()?;
        let image = self.agent_image()?;
        let chosen = self.chosen_runtime()?;
        let runtime = chosen.runtime.clone();
        let settings = AgentSettings {
            image,
            user: self.agent_user(),
            init_exe: self.config.init.exe.clone(),
            init_args: self
                .config
                .init
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            runtime,
            read_only_root: self.config.read_only_root,
            gvisor: chosen.gvisor,
            launcher: lifecycle::launcher_label(),
            workspace_host: workspace_host(spec),
        };
        let firewall_image = self
            .config
            .firewall_image
            .clone()
            .unwrap_or_else(|| sidecar.image.clone());
        // Before anything exists: whatever happens to this process from here on, the
        // bottle's objects do not outlive it.
        let reaper = match &self.config.reaper {
            Some(command) => Some(reaper::Reaper::spawn(
                command,
                &spec.identity,
                &self.config.socket,
            )?),
            None => None,
        };
        let started = self.rt.block_on(lifecycle::launch(
            &docker,
            spec,
            sidecar,
            &settings,
            &firewall_image,
            stdio,
        ));
        let (agent_id, attach) = match started {
            Ok(ok) => ok,
            Err(err) => {
                if let Some(reaper) = reaper {
                    reaper.dismiss();
                }
                return Err(err);
            }
        };
        let mut bottle = DockerBottle {
            rt: self.rt.clone(),
            docker,
            identity: spec.identity.clone(),
            names: Names::new(&spec.identity),
            agent_id,
            owned: true,
            done: false,
            stdin: None,
            stdout: None,
            stderr: None,
            threads: Vec::new(),
            terminal: None,
            resize: None,
            transcript: self.config.transcript.clone(),
            reaper,
            sidecar_down: self.config.sidecar_down.clone(),
            stop_grace: self.config.stop_grace,
            trash: self
                .config
                .trash
                .clone()
                .map(|trash| (trash, self.config.socket.clone())),
        };
        bottle.connect(attach, stdio, spec.interactive)?;
        // Refused here, the bottle is torn down when dropped; its agent never ran.
        if let Some(before_release) = &self.config.before_release {
            before_release().map_err(|message| BackendError::Setup {
                stage: "release the bottle".to_owned(),
                message,
            })?;
        }
        // Released: the init checks the network itself and starts the agent.
        self.rt
            .block_on(Engine::kill_container(
                &bottle.docker,
                &bottle.agent_id,
                "SIGUSR1",
            ))
            .map_err(setup("release the bottle"))?;
        Ok(Box::new(bottle))
    }
}

fn validate(spec: &LaunchSpec) -> Result<(), BackendError> {
    if spec.argv.is_empty() {
        return Err(BackendError::InvalidSpec("the command is empty".to_owned()));
    }
    let ident_ok = !spec.identity.is_empty()
        && spec
            .identity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ident_ok {
        return Err(BackendError::InvalidSpec(format!(
            "bottle identity `{}` is not a valid container name",
            spec.identity
        )));
    }
    for (what, path) in [
        ("workspace", &spec.workspace.host),
        ("workspace inside", &spec.workspace.inside),
        ("home", &spec.home.host),
        ("home inside", &spec.home.inside),
    ] {
        if !path.is_absolute() {
            return Err(BackendError::InvalidSpec(format!(
                "the {what} path {} is not absolute",
                path.display()
            )));
        }
        if path.to_string_lossy().contains(':') {
            return Err(BackendError::InvalidSpec(format!(
                "the {what} path {} contains `:`, which docker cannot mount",
                path.display()
            )));
        }
    }
    for file in &spec.files {
        if !file.host.is_absolute() || !file.inside.is_absolute() {
            return Err(BackendError::InvalidSpec(format!(
                "read-only file {} -> {} must use absolute paths",
                file.host.display(),
                file.inside.display()
            )));
        }
    }
    Ok(())
}

/// The docker backend as [`crate::open`] gives it: enough for list, stop, cleanup and attach;
/// `start` configures the agent image and the sidecar itself ([`DockerConfig`]). The daemon
/// socket comes from `$DOCKER_HOST`, not from the home directory.
pub fn open(options: &crate::OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(DockerBackend::new(DockerConfig::new(
        AgentImage::Image(String::new()),
        options.helper(init::INIT_SUBCOMMAND),
    ))?))
}

impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn sidecar_placement(&self) -> crate::SidecarPlacement {
        crate::SidecarPlacement::Container
    }

    fn preflight(&self) -> BackendStatus {
        preflight::diagnose_docker(&preflight::DockerFacts::gather())
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        validate(spec)?;
        crate::workspace_copy::prepare(spec)?;
        self.agent_image()?;
        if let Some(sidecar) = &self.config.sidecar {
            let docker = self.client()?;
            self.rt
                .block_on(Engine::image_exists(&docker, &sidecar.image))
                .then_some(())
                .ok_or_else(|| BackendError::Setup {
                    stage: "sidecar image".to_owned(),
                    message: format!(
                        "the sidecar image {} does not exist; build it first",
                        sidecar.image
                    ),
                })?;
        }
        Ok(())
    }

    fn launch(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        let sidecar = self.config.sidecar.clone().ok_or_else(|| {
            BackendError::InvalidSpec(
                "the docker backend needs a sidecar container; configure DockerConfig::sidecar"
                    .to_owned(),
            )
        })?;
        self.launch_with(spec, &sidecar, stdio)
    }

    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError> {
        let docker = self.client()?;
        let names = Names::new(identity);
        let attach = self
            .rt
            .block_on(Engine::attach_container(
                &docker,
                &names.agent,
                AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                },
            ))
            .map_err(|e| {
                if is_not_found(&e) {
                    BackendError::InvalidSpec(format!("no docker bottle `{identity}` is running"))
                } else {
                    setup("attach to the agent container")(e)
                }
            })?;
        let mut bottle = DockerBottle {
            rt: self.rt.clone(),
            docker,
            identity: identity.to_owned(),
            agent_id: names.agent.clone(),
            names,
            owned: false,
            done: false,
            stdin: None,
            stdout: None,
            stderr: None,
            threads: Vec::new(),
            terminal: None,
            resize: None,
            transcript: None,
            reaper: None,
            // Watched by the `start` that owns it, not by an attached terminal.
            sidecar_down: None,
            stop_grace: self.config.stop_grace,
            trash: None,
        };
        let interactive = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
        bottle.connect(attach, BottleStdio::inherit(), interactive)?;
        Ok(Box::new(bottle))
    }

    fn stop(&self, identity: &str, grace: Duration) -> Result<bool, BackendError> {
        let docker = self.client()?;
        self.rt.block_on(lifecycle::stop(&docker, identity, grace))
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        let docker = self.client()?;
        self.rt.block_on(lifecycle::list(&docker))
    }

    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        let docker = self.client()?;
        self.rt.block_on(lifecycle::cleanup(&docker, dry_run))
    }
}
