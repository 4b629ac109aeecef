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
//! network. So the agent container's PID 1 is [`init`]: the host's own executable, mounted
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
//! (the agent's init waits), installs the firewall, then releases the init with `SIGUSR1`.
//! `wait` returns the agent's exit code once the container stopped, copies
//! [`DockerConfig::transcript`] out (it must not live on a tmpfs, which dies with the
//! container; the home directory is a bind mount anyway) and removes every object of the
//! bottle. Unlike native bottles, containers survive a launcher killed with `SIGKILL`: `list`
//! reports them as orphaned (the launcher label names its boot id, PID and start time) and
//! `cleanup` kills and removes them. While the agent runs, `wait` also watches the sidecar
//! container: if it ends first, the agent is stopped (SIGTERM, SIGKILL after
//! [`DockerConfig::stop_grace`]) and [`DockerConfig::sidecar_down`] is told how it ended — a
//! bottle never runs on without its sidecar. An exit code of [`init::SETUP_FAILED`] (125) with a
//! `bot-bottle:` message on stderr means the init refused to start the agent.
//!
//! The docker daemon must be local: the workspace, the home directory and the init are bind
//! mounts of host paths.

pub mod image;
pub mod init;
pub mod reaper;
pub mod runtime;
pub mod spec;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    AttachContainerOptions, BuildImageOptions, CreateContainerOptions,
    DownloadFromContainerOptions, KillContainerOptions, ListContainersOptions, ListImagesOptions,
    ListNetworksOptions, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
    RemoveImageOptions, ResizeContainerTTYOptions, StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

pub use self::image::ImageSource;
pub use self::runtime::RuntimeChoice;
use self::spec::{
    AgentSettings, LABEL_IDENTITY, LABEL_LAUNCHER, LABEL_MANAGED, LABEL_ROLE, agent_container,
    firewall_container, init_config, sidecar_container, workspace_host,
};
pub use self::spec::{Names, SidecarMount, SidecarSpec};
use crate::native::HelperCommand;
use crate::preflight::{self, BackendStatus};
use crate::spec::{BottleStdio, LaunchSpec, StdioMode, WorkspaceMode};
use crate::{
    Backend, BackendError, BackendKind, BottleExit, BottleInfo, CleanupAction, RunningBottle,
};

/// Receives build output lines (progress) while an image is built.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Told how the sidecar container ended (e.g. "was killed by signal 9 (SIGKILL)") when it
/// ends while the agent runs; the backend then stops the agent itself.
pub type SidecarDown = Arc<dyn Fn(&str) + Send + Sync>;

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
        }
    }
}

/// The running executable with the hidden [`init::INIT_SUBCOMMAND`] (for `bot-bottle`, whose
/// `main` dispatches it to [`init::init_main`]). The executable is mounted read-only into agent
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
fn registered_runtimes(
    runtimes: Option<HashMap<String, bollard::models::Runtime>>,
) -> std::collections::BTreeMap<String, runtime::Registered> {
    runtimes
        .unwrap_or_default()
        .into_iter()
        .map(|(name, r)| {
            (
                name,
                runtime::Registered {
                    path: r.path.unwrap_or_default(),
                    args: r.runtime_args.unwrap_or_default(),
                },
            )
        })
        .collect()
}

fn setup(stage: &str) -> impl FnOnce(ApiError) -> BackendError + '_ {
    move |err| BackendError::Setup {
        stage: stage.to_owned(),
        message: api_message(&err),
    }
}

/// The daemon's own message when there is one (no Rust type names).
fn api_message(err: &ApiError) -> String {
    match err {
        ApiError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        other => other.to_string(),
    }
}

fn is_not_found(err: &ApiError) -> bool {
    matches!(
        err,
        ApiError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

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
        let docker = self.client()?;
        let info = self
            .rt
            .block_on(docker.info())
            .map_err(setup("docker info"))?;
        let default = info.default_runtime.unwrap_or_else(|| "runc".to_owned());
        let chosen = runtime::choose(
            &self.config.runtime,
            &registered_runtimes(info.runtimes),
            &default,
        )
        .map_err(|refused| self.unavailable(format!("{}; fix: {}", refused.reason, refused.fix)))?;
        Ok(self.runtime.get_or_init(|| chosen))
    }

    /// Builds `source` unless an image with its input hash exists; returns the tag.
    pub fn ensure_image(&self, source: &ImageSource, role: &str) -> Result<String, BackendError> {
        let docker = self.client()?;
        self.rt.block_on(build_image(
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
            launcher: launcher_label(),
            workspace_host: workspace_host(spec),
        };
        let firewall_image = self
            .config
            .firewall_image
            .clone()
            .unwrap_or_else(|| sidecar.image.clone());
        let names = Names::new(&spec.identity);
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
        let started = self.rt.block_on(start_bottle(
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
                self.rt.block_on(teardown(&docker, &names));
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
            names,
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
        };
        bottle.connect(attach, stdio, spec.interactive)?;
        // Released: the init checks the network itself and starts the agent.
        self.rt
            .block_on(bottle.docker.kill_container(
                &bottle.agent_id,
                Some(KillContainerOptions {
                    signal: "SIGUSR1".to_owned(),
                }),
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

/// `<boot id>:<pid>:<start time>` of this process, to recognise orphans later.
fn launcher_label() -> String {
    let pid = std::process::id();
    format!(
        "{}:{pid}:{}",
        boot_id(),
        start_time(pid).unwrap_or_default()
    )
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether the launcher named by a label value is gone (an unknown label counts as alive:
/// cleanup never kills what it cannot judge).
fn launcher_gone(label: Option<&String>) -> bool {
    let Some(label) = label else { return false };
    let mut parts = label.splitn(3, ':');
    let (Some(boot), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if boot != boot_id() {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).as_deref() != Some(start)
}

async fn build_image(
    docker: &Docker,
    source: &ImageSource,
    role: &str,
    progress: Option<&Progress>,
) -> Result<String, BackendError> {
    let io = |action: &'static str| {
        let path = source.context_dir.clone().unwrap_or_default();
        move |source| BackendError::Io {
            action,
            path,
            source,
        }
    };
    let hash = source
        .input_hash()
        .map_err(io("read the image build context"))?;
    let tag = source.tag(&hash);
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let context = source
        .context_tar()
        .map_err(io("pack the image build context"))?;
    let options = BuildImageOptions {
        dockerfile: ImageSource::dockerfile_name().to_owned(),
        t: Some(tag.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(source.build_args.clone().into_iter().collect()),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
            (spec::LABEL_INPUT_HASH.to_owned(), hash.clone()),
        ])),
        ..Default::default()
    };
    let mut log = String::new();
    let mut failure = None;
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream.as_deref().or(info.status.as_deref()) {
                    log.push_str(line);
                    if let Some(progress) = progress {
                        for l in line.lines().filter(|l| !l.trim().is_empty()) {
                            progress(l);
                        }
                    }
                }
                if let Some(detail) = info.error_detail {
                    failure = detail.message.or(Some("unknown build error".to_owned()));
                }
            }
            Err(err) => failure = Some(api_message(&err)),
        }
    }
    if let Some(message) = failure {
        return Err(BackendError::Setup {
            stage: format!("build image {tag}"),
            message: format!("{message}\nfull build log:\n{log}"),
        });
    }
    // Agent images are kept: bottles of one agent may use different Dockerfiles.
    if role == "sidecar-image" {
        remove_older_builds(docker, source, &tag).await;
    }
    Ok(tag)
}

/// Removes earlier builds of the same repository (other input hashes), so bot-bottle upgrades
/// do not pile up sidecar images. Images still used by a container stay (not forced).
async fn remove_older_builds(docker: &Docker, source: &ImageSource, tag: &str) {
    let mut filters = label_filter(&[]);
    filters.insert("reference".to_owned(), vec![source.repository.clone()]);
    let Ok(images) = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    for image in images {
        if image.repo_tags.iter().any(|t| t == tag) {
            continue;
        }
        for old in &image.repo_tags {
            let _ = docker
                .remove_image(old, None::<RemoveImageOptions>, None)
                .await;
        }
    }
}

/// Creates everything, starts the sidecar and the agent (whose init waits), installs the
/// firewall. On error the caller tears down by name.
async fn start_bottle(
    docker: &Docker,
    spec: &LaunchSpec,
    sidecar: &SidecarSpec,
    settings: &AgentSettings,
    firewall_image: &str,
    stdio: BottleStdio,
) -> Result<(String, bollard::container::AttachContainerResults), BackendError> {
    let identity = &spec.identity;
    let names = Names::new(identity);
    let (internal, egress) = tokio::join!(
        docker.create_network(spec::internal_network(identity, &settings.launcher)),
        docker.create_network(spec::egress_network(identity, &settings.launcher)),
    );
    internal.map_err(setup("create the internal network"))?;
    egress.map_err(setup("create the egress network"))?;

    // The sidecar and the agent start side by side: the init finds the sidecar by name
    // before it is released.
    let (sidecar_started, agent_started) = tokio::join!(
        start_sidecar(docker, identity, sidecar, settings),
        start_agent(docker, spec, settings, stdio),
    );
    sidecar_started?;
    let (agent_id, attach) = agent_started?;
    let sidecar_ip = container_ip(docker, &names.sidecar, &names.internal_network).await?;

    let ports: Vec<u16> = spec.forwards.iter().map(|f| f.inside_port).collect();
    run_firewall(
        docker,
        &names,
        firewall_container(
            identity,
            &settings.launcher,
            firewall_image,
            &agent_id,
            sidecar_ip,
            &ports,
        ),
    )
    .await?;
    Ok((agent_id, attach))
}

async fn start_sidecar(
    docker: &Docker,
    identity: &str,
    sidecar: &SidecarSpec,
    settings: &AgentSettings,
) -> Result<(), BackendError> {
    let names = Names::new(identity);
    create(
        docker,
        &names.sidecar,
        sidecar_container(identity, sidecar, &settings.launcher),
    )
    .await
    .map_err(setup("create the sidecar container"))?;
    docker
        .connect_network(
            &names.egress_network,
            bollard::models::NetworkConnectRequest {
                container: names.sidecar.clone(),
                endpoint_config: None,
            },
        )
        .await
        .map_err(setup("connect the sidecar to its egress network"))?;
    docker
        .start_container(&names.sidecar, None)
        .await
        .map_err(setup("start the sidecar container"))?;
    match &sidecar.ready_line {
        Some(line) => wait_ready(docker, &names.sidecar, line).await,
        None => Ok(()),
    }
}

/// How long a sidecar may take to print its ready line (its first upstream git sync).
const SIDECAR_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Follows the sidecar's stdout until `ready` appears; fails with what it printed when it
/// exits first or stays silent.
async fn wait_ready(docker: &Docker, container: &str, ready: &str) -> Result<(), BackendError> {
    let mut logs = docker.logs(
        container,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let mut seen = String::new();
    let found = tokio::time::timeout(SIDECAR_READY_TIMEOUT, async {
        while let Some(Ok(chunk)) = logs.next().await {
            if let bollard::container::LogOutput::StdOut { message } = &chunk
                && String::from_utf8_lossy(message)
                    .lines()
                    .any(|l| l.trim() == ready)
            {
                return true;
            }
            seen.push_str(&chunk.to_string());
        }
        false
    })
    .await;
    match found {
        Ok(true) => Ok(()),
        outcome => {
            let why = if outcome.is_err() {
                "did not become ready in time"
            } else {
                "exited before it was ready"
            };
            let tail: Vec<&str> = seen.lines().rev().take(8).collect();
            Err(BackendError::Setup {
                stage: "start the sidecar container".to_owned(),
                message: format!(
                    "the sidecar {why}; its output ends with:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            })
        }
    }
}

/// Creates, attaches and starts the agent container; its init then waits for the release.
async fn start_agent(
    docker: &Docker,
    spec: &LaunchSpec,
    settings: &AgentSettings,
    stdio: BottleStdio,
) -> Result<(String, bollard::container::AttachContainerResults), BackendError> {
    let names = Names::new(&spec.identity);
    let init = init_config(spec);
    let body =
        agent_container(spec, settings, &init, stdio.stdin != StdioMode::Null).map_err(|e| {
            BackendError::InvalidSpec(format!("cannot encode the init configuration: {e}"))
        })?;
    let created = create(docker, &names.agent, body)
        .await
        .map_err(setup("create the agent container"))?;
    // Docker creates the container even when the kernel cannot apply a limit; fail closed.
    let dropped = spec::dropped_limits(&created.warnings);
    if !dropped.is_empty() && !spec.resources.allow_unenforced {
        return Err(BackendError::Setup {
            stage: "resources".to_owned(),
            message: format!(
                "the Docker daemon cannot enforce the bottle's resources: {}; give dockerd the cpu, memory (with swap accounting) and pids cgroup controllers, or set `resources: {{dangerously_allow_unenforced: true}}` in the bottle to start without them",
                dropped.join("; ")
            ),
        });
    }
    let agent_id = created.id;
    let attach = docker
        .attach_container(
            &agent_id,
            Some(AttachContainerOptions {
                stdin: stdio.stdin != StdioMode::Null,
                stdout: true,
                stderr: true,
                stream: true,
                logs: true,
                detach_keys: None,
            }),
        )
        .await
        .map_err(setup("attach to the agent container"))?;
    docker
        .start_container(&agent_id, None)
        .await
        .map_err(|err| {
            let mut message = api_message(&err);
            if let Some(runtime) = settings.runtime.as_deref().filter(|r| *r != "runc") {
                message.push_str(&format!(
                    "; the {runtime} runtime is registered with dockerd but does not start containers here: fix it, or use the runc runtime"
                ));
            }
            BackendError::Setup {
                stage: "start the agent container".to_owned(),
                message,
            }
        })?;
    Ok((agent_id, attach))
}

async fn create(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<bollard::models::ContainerCreateResponse, ApiError> {
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                platform: String::new(),
            }),
            body,
        )
        .await
}

async fn container_ip(docker: &Docker, name: &str, network: &str) -> Result<IpAddr, BackendError> {
    let inspect = docker
        .inspect_container(name, None)
        .await
        .map_err(setup("inspect the sidecar container"))?;
    let ip = inspect
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .unwrap_or_default();
    ip.parse().map_err(|_| BackendError::Setup {
        stage: "inspect the sidecar container".to_owned(),
        message: format!("the sidecar has no address on {network} (is it running?)"),
    })
}

/// Runs the firewall container to completion; fails with its output unless it exited 0.
async fn run_firewall(
    docker: &Docker,
    names: &Names,
    body: ContainerCreateBody,
) -> Result<(), BackendError> {
    let stage = "close the bottle's network";
    create(docker, &names.firewall, body)
        .await
        .map_err(setup(stage))?;
    docker
        .start_container(&names.firewall, None)
        .await
        .map_err(setup(stage))?;
    let code = exit_code(docker, &names.firewall)
        .await
        .map_err(setup(stage))?;
    if code != 0 {
        let mut logs = docker.logs(
            &names.firewall,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut output = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            output.push_str(&chunk.to_string());
        }
        return Err(BackendError::Setup {
            stage: stage.to_owned(),
            message: format!(
                "the firewall container exited with {code}: {}; the sidecar image needs iptables and a kernel with netfilter",
                output.trim()
            ),
        });
    }
    remove(docker, &names.firewall).await;
    Ok(())
}

/// Waits until a container is not running; its exit code.
async fn exit_code(docker: &Docker, container: &str) -> Result<i64, ApiError> {
    let mut wait = docker.wait_container(
        container,
        Some(WaitContainerOptions {
            condition: "not-running".to_owned(),
        }),
    );
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(ApiError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(err)) => Err(err),
        None => Ok(-1),
    }
}

/// Waits for the agent's exit code while watching the sidecar container. If the sidecar
/// ends first, `down` is told how and the agent is stopped (SIGTERM, SIGKILL after `grace`);
/// if the agent ends first but the sidecar is found gone too (it died just before, perhaps
/// why the agent ended), `down` is told as well. Called before teardown stops the sidecar.
async fn watch_sidecar(
    docker: &Docker,
    agent: &str,
    sidecar: &str,
    down: Option<&SidecarDown>,
    grace: Duration,
) -> Result<i64, ApiError> {
    let tell = |how: &str| {
        if let Some(down) = down {
            down(how);
        }
    };
    let agent_exit = exit_code(docker, agent);
    tokio::pin!(agent_exit);
    let sidecar_exit = async {
        match exit_code(docker, sidecar).await {
            Ok(code) => sidecar_ended(docker, sidecar, code).await,
            // Not watchable (the daemon failed): the agent's own wait decides.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        code = &mut agent_exit => {
            if let Some(how) = sidecar_gone(docker, sidecar).await {
                tell(&how);
            }
            code
        }
        how = sidecar_exit => {
            tell(&how);
            let grace = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
            let _ = docker
                .stop_container(agent, Some(StopContainerOptions { t: Some(grace), signal: None }))
                .await;
            agent_exit.await
        }
    }
}

/// How the sidecar container ended, if it is not running.
async fn sidecar_gone(docker: &Docker, sidecar: &str) -> Option<String> {
    let state = docker.inspect_container(sidecar, None).await.ok()?.state?;
    if state.running == Some(true) {
        return None;
    }
    Some(describe_exit(
        state.exit_code.unwrap_or(-1),
        state.oom_killed == Some(true),
    ))
}

/// How a sidecar that ended with `code` ended (asking the daemon whether the OOM killer did it).
async fn sidecar_ended(docker: &Docker, sidecar: &str, code: i64) -> String {
    let oom = docker
        .inspect_container(sidecar, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.oom_killed)
        == Some(true);
    describe_exit(code, oom)
}

/// "exited with status 1", "was killed by signal 9 (SIGKILL)", as for a native bundle.
pub fn describe_exit(code: i64, oom_killed: bool) -> String {
    if oom_killed {
        return "was killed by the kernel's OOM killer (out of memory)".to_owned();
    }
    match code {
        129..=192 => {
            let n = (code - 128) as i32;
            match nix::sys::signal::Signal::try_from(n) {
                Ok(signal) => format!("was killed by signal {n} ({})", signal.as_str()),
                Err(_) => format!("was killed by signal {n}"),
            }
        }
        code => format!("exited with status {code}"),
    }
}

async fn remove(docker: &Docker, container: &str) {
    let _ = docker
        .remove_container(
            container,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await;
}

/// Removes every object of a bottle by name (missing ones are fine).
async fn teardown(docker: &Docker, names: &Names) {
    let sidecar = async {
        // SIGTERM first, as on native: the bundle finishes what is in flight and revokes
        // forge deploy keys on its way out; SIGKILL after 10 s.
        let _ = docker
            .stop_container(
                &names.sidecar,
                Some(StopContainerOptions {
                    t: Some(10),
                    signal: None,
                }),
            )
            .await;
        remove(docker, &names.sidecar).await;
    };
    tokio::join!(
        remove(docker, &names.firewall),
        remove(docker, &names.agent),
        sidecar,
    );
    let _ = tokio::join!(
        docker.remove_network(&names.internal_network),
        docker.remove_network(&names.egress_network),
    );
}

/// Restores the terminal mode on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid pointer we pass.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// A running docker bottle.
pub struct DockerBottle {
    rt: Arc<Runtime>,
    docker: Docker,
    identity: String,
    names: Names,
    agent_id: String,
    /// Whether this process launched it (and tears it down).
    owned: bool,
    done: bool,
    stdin: Option<Box<dyn Write + Send>>,
    stdout: Option<Box<dyn Read + Send>>,
    stderr: Option<Box<dyn Read + Send>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    terminal: Option<RawTerminal>,
    resize: Option<tokio::task::JoinHandle<()>>,
    transcript: Option<TranscriptCopy>,
    /// Removes the bottle if this process dies first; dismissed after teardown.
    reaper: Option<reaper::Reaper>,
    sidecar_down: Option<SidecarDown>,
    stop_grace: Duration,
}

enum Sink {
    Inherit(bool),
    Null,
    Pipe(std::io::PipeWriter),
}

impl Sink {
    fn write(&mut self, data: &[u8]) {
        let _ = match self {
            Sink::Inherit(false) => std::io::stdout()
                .write_all(data)
                .and_then(|_| std::io::stdout().flush()),
            Sink::Inherit(true) => std::io::stderr().write_all(data),
            Sink::Null => Ok(()),
            Sink::Pipe(pipe) => pipe.write_all(data),
        };
    }
}

impl DockerBottle {
    /// Wires the attach streams to the requested stdio.
    fn connect(
        &mut self,
        attach: bollard::container::AttachContainerResults,
        stdio: BottleStdio,
        interactive: bool,
    ) -> Result<(), BackendError> {
        let pipe = |action: &'static str| move |source| BackendError::Process { action, source };
        let mut out = match stdio.stdout {
            StdioMode::Inherit => Sink::Inherit(false),
            StdioMode::Null => Sink::Null,
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(pipe("create the stdout pipe"))?;
                self.stdout = Some(Box::new(r));
                Sink::Pipe(w)
            }
        };
        let mut err = match stdio.stderr {
            StdioMode::Inherit => Sink::Inherit(true),
            StdioMode::Null => Sink::Null,
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(pipe("create the stderr pipe"))?;
                self.stderr = Some(Box::new(r));
                Sink::Pipe(w)
            }
        };
        let bollard::container::AttachContainerResults {
            mut output,
            mut input,
        } = attach;
        let handle = self.rt.handle().clone();
        self.threads.push(std::thread::spawn(move || {
            handle.block_on(async {
                while let Some(Ok(chunk)) = output.next().await {
                    match chunk {
                        bollard::container::LogOutput::StdErr { message } => err.write(&message),
                        other => out.write(other.as_ref()),
                    }
                }
            });
        }));
        let source: Option<Box<dyn Read + Send>> = match stdio.stdin {
            StdioMode::Null => None,
            StdioMode::Inherit => Some(Box::new(std::io::stdin())),
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(pipe("create the stdin pipe"))?;
                self.stdin = Some(Box::new(w));
                Some(Box::new(r))
            }
        };
        if let Some(mut source) = source {
            let handle = self.rt.handle().clone();
            // Not joined: reading the caller's terminal may block past the bottle's end.
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match source.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if handle.block_on(input.write_all(&buf[..n])).is_err() {
                                return;
                            }
                            let _ = handle.block_on(input.flush());
                        }
                    }
                }
                let _ = handle.block_on(input.shutdown());
            });
        }
        if interactive {
            self.terminal = RawTerminal::enable();
            // The first size is set before the agent is released, so it starts with it.
            if let Some((h, w)) = terminal_size() {
                let _ = self.rt.block_on(self.docker.resize_container_tty(
                    &self.agent_id,
                    ResizeContainerTTYOptions {
                        h: i32::from(h),
                        w: i32::from(w),
                    },
                ));
            }
            let docker = self.docker.clone();
            let agent = self.agent_id.clone();
            self.resize = Some(self.rt.spawn(async move {
                let Ok(mut winch) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while winch.recv().await.is_some() {
                    if let Some((h, w)) = terminal_size() {
                        let _ = docker
                            .resize_container_tty(
                                &agent,
                                ResizeContainerTTYOptions {
                                    h: i32::from(h),
                                    w: i32::from(w),
                                },
                            )
                            .await;
                    }
                }
            }));
        }
        Ok(())
    }

    fn copy_transcript(&self) -> Result<(), BackendError> {
        let Some(copy) = &self.transcript else {
            return Ok(());
        };
        let docker = self.docker.clone();
        let path = copy.inside.display().to_string();
        let agent = self.agent_id.clone();
        let archive = self.rt.block_on(async move {
            let mut stream =
                docker.download_from_container(&agent, Some(DownloadFromContainerOptions { path }));
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(err) if is_not_found(&err) => return Ok(None),
                    Err(err) => return Err(err),
                }
            }
            Ok(Some(bytes))
        });
        let archive = archive.map_err(setup("copy the transcript out of the bottle"))?;
        let Some(archive) = archive else {
            return Ok(());
        };
        std::fs::create_dir_all(&copy.host).map_err(|source| BackendError::Io {
            action: "create the transcript directory",
            path: copy.host.clone(),
            source,
        })?;
        tar::Archive::new(archive.as_slice())
            .unpack(&copy.host)
            .map_err(|source| BackendError::Io {
                action: "unpack the transcript into",
                path: copy.host.clone(),
                source,
            })
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(resize) = self.resize.take() {
            resize.abort();
        }
        self.terminal = None;
        if self.owned {
            self.rt.block_on(teardown(&self.docker, &self.names));
        }
        if let Some(reaper) = self.reaper.take() {
            reaper.dismiss();
        }
    }
}

impl RunningBottle for DockerBottle {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.stdin.take()
    }

    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stdout.take()
    }

    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stderr.take()
    }

    fn wait(&mut self) -> Result<BottleExit, BackendError> {
        let code = if self.owned {
            self.rt.block_on(watch_sidecar(
                &self.docker,
                &self.agent_id,
                &self.names.sidecar,
                self.sidecar_down.as_ref(),
                self.stop_grace,
            ))
        } else {
            self.rt.block_on(exit_code(&self.docker, &self.agent_id))
        }
        .map_err(setup("wait for the agent"));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let copied = if code.is_ok() {
            self.copy_transcript()
        } else {
            Ok(())
        };
        self.finish();
        let code = code?;
        copied?;
        Ok(BottleExit {
            code: i32::try_from(code).unwrap_or(init::SETUP_FAILED),
        })
    }

    fn terminate(&mut self) -> Result<(), BackendError> {
        self.rt
            .block_on(self.docker.kill_container(
                &self.agent_id,
                Some(KillContainerOptions {
                    signal: "SIGTERM".to_owned(),
                }),
            ))
            .map_err(setup("signal the agent"))
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        self.rt
            .block_on(self.docker.kill_container(
                &self.agent_id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".to_owned(),
                }),
            ))
            .map_err(setup("kill the agent"))
    }
}

impl Drop for DockerBottle {
    fn drop(&mut self) {
        if !self.done && self.owned {
            self.finish();
        }
    }
}

fn label_filter(extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{LABEL_MANAGED}=true")];
    labels.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    HashMap::from([("label".to_owned(), labels)])
}

impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn preflight(&self) -> BackendStatus {
        preflight::diagnose_docker(&preflight::DockerFacts::gather())
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        validate(spec)?;
        if let WorkspaceMode::Copy { into } = &spec.workspace.mode
            && !into.exists()
        {
            copy_workspace(&spec.workspace.host, into)?;
        }
        self.agent_image()?;
        if let Some(sidecar) = &self.config.sidecar {
            let docker = self.client()?;
            self.rt
                .block_on(docker.inspect_image(&sidecar.image))
                .map_err(|_| BackendError::Setup {
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
            .block_on(docker.attach_container(
                &names.agent,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
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
        };
        let interactive = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
        bottle.connect(attach, BottleStdio::inherit(), interactive)?;
        Ok(Box::new(bottle))
    }

    fn stop(&self, identity: &str, grace: Duration) -> Result<bool, BackendError> {
        let docker = self.client()?;
        let names = Names::new(identity);
        let running = self
            .rt
            .block_on(docker.inspect_container(&names.agent, None))
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            return Ok(false);
        }
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        for container in [&names.agent, &names.sidecar] {
            match self.rt.block_on(docker.stop_container(
                container,
                Some(StopContainerOptions {
                    t: Some(secs),
                    signal: None,
                }),
            )) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(setup("stop the bottle")(e)),
            }
        }
        Ok(true)
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        let docker = self.client()?;
        let containers = self
            .rt
            .block_on(docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(&[(LABEL_ROLE, "agent")])),
                ..Default::default()
            })))
            .map_err(setup("list containers"))?;
        let mut bottles: Vec<BottleInfo> = containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let identity = labels.get(LABEL_IDENTITY)?.clone();
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                Some(BottleInfo {
                    identity,
                    backend: BackendKind::Docker,
                    running,
                    orphaned: running && launcher_gone(labels.get(LABEL_LAUNCHER)),
                    created: u64::try_from(c.created.unwrap_or(0)).unwrap_or(0),
                })
            })
            .collect();
        bottles.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(bottles)
    }

    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        let docker = self.client()?;
        self.rt.block_on(cleanup(&docker, dry_run))
    }
}

/// Removes what no live launcher owns: containers (running orphans are killed), then
/// networks and volumes, then dangling images of ours. Objects whose launcher is alive (a
/// bottle being started, running or torn down) are never touched; a running container without
/// a launcher label is left alone (cleanup never kills what it cannot judge).
async fn cleanup(docker: &Docker, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
    let mut actions = Vec::new();
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(&[])),
            ..Default::default()
        }))
        .await
        .map_err(setup("list containers"))?;
    let mut live = std::collections::BTreeSet::new();
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let identity = labels.get(LABEL_IDENTITY).cloned().unwrap_or_default();
        let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
        let launcher = labels.get(LABEL_LAUNCHER);
        let owned = launcher.is_some() && !launcher_gone(launcher);
        if owned || (running && launcher.is_none()) {
            live.insert(identity);
            continue;
        }
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        if running && labels.get(LABEL_ROLE).map(String::as_str) == Some("agent") {
            actions.push(CleanupAction::KilledOrphan {
                identity: identity.clone(),
            });
        }
        if !dry_run && let Some(id) = &c.id {
            remove(docker, id).await;
        }
        actions.push(CleanupAction::RemovedContainer { name });
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(&[])),
        }))
        .await
        .map_err(setup("list networks"))?;
    for n in networks {
        let identity = n
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_IDENTITY))
            .cloned()
            .unwrap_or_default();
        let launcher = n.labels.as_ref().and_then(|l| l.get(LABEL_LAUNCHER));
        if live.contains(&identity) || (launcher.is_some() && !launcher_gone(launcher)) {
            continue;
        }
        let name = n.name.unwrap_or_default();
        if !dry_run {
            docker
                .remove_network(&name)
                .await
                .map_err(setup("remove a network"))?;
        }
        actions.push(CleanupAction::RemovedNetwork { name });
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(label_filter(&[])),
        }))
        .await
        .map_err(setup("list volumes"))?;
    for v in volumes.volumes.unwrap_or_default() {
        if live.contains(
            v.labels
                .get(LABEL_IDENTITY)
                .map(String::as_str)
                .unwrap_or_default(),
        ) {
            continue;
        }
        if !dry_run {
            let _ = docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await;
        }
        actions.push(CleanupAction::RemovedVolume { name: v.name });
    }
    let mut filters = label_filter(&[]);
    filters.insert("dangling".to_owned(), vec!["true".to_owned()]);
    let images = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(setup("list images"))?;
    for image in images {
        if !dry_run {
            let _ = docker
                .remove_image(
                    &image.id,
                    Some(RemoveImageOptions {
                        force: false,
                        noprune: false,
                        ..Default::default()
                    }),
                    None,
                )
                .await;
        }
        actions.push(CleanupAction::RemovedImage { id: image.id });
    }
    Ok(actions)
}

/// Copies the workspace for [`WorkspaceMode::Copy`] (`cp -a`, preserving modes and links).
fn copy_workspace(from: &Path, into: &Path) -> Result<(), BackendError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BackendError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(into).map_err(io("create the workspace copy", into))?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(into)
        .status()
        .map_err(io("run cp to copy the workspace", from))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(into);
        return Err(BackendError::Setup {
            stage: "copy the workspace".to_owned(),
            message: format!(
                "cp -a {} {} failed ({status})",
                from.display(),
                into.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_sidecar_end_is_said_as_for_a_native_bundle() {
        assert_eq!(
            describe_exit(137, false),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(143, false),
            "was killed by signal 15 (SIGTERM)"
        );
        assert_eq!(describe_exit(1, false), "exited with status 1");
        assert_eq!(describe_exit(0, false), "exited with status 0");
        assert_eq!(
            describe_exit(137, true),
            "was killed by the kernel's OOM killer (out of memory)"
        );
    }
}
