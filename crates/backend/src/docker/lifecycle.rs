//! What the docker backend asks the engine to do, and in which order: the decisions of
//! `launch`, `wait`, teardown, `stop`, `list` and `cleanup`, written against the [`Engine`]
//! trait so that each one is unit-tested against the recording fake (`lifecycle/tests.rs`).
//!
//! [`super::DockerBackend`] owns the configuration, the tokio runtime and the connected client
//! and calls these functions; [`super::spec`] builds the request bodies they send;
//! [`super::bottle`] wires a started agent container to the caller's stdio.
//!
//! Invariants kept here: a bottle whose setup fails leaves nothing behind ([`launch`] tears
//! down by name before it returns the error); a limit the daemon drops refuses the bottle
//! unless the bottle opted out with `dangerously_allow_unenforced`; a sidecar that ends while
//! the agent runs stops the agent ([`watch_sidecar`]); cleanup never touches objects whose
//! launcher is alive, nor a running container it cannot judge.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::container::AttachContainerResults;
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum};
use bollard::query_parameters::{AttachContainerOptions, BuildImageOptions};
use futures_util::StreamExt;

use super::client::{Engine, Filters, api_message, is_not_found, setup};
use super::image::ImageSource;
use super::runtime::{self, RuntimeChoice};
use super::spec::{
    self, AgentSettings, HostRoutes, InternalSubnet, LABEL_IDENTITY, LABEL_LAUNCHER, LABEL_MANAGED,
    LABEL_ROLE, Names, ROUTE_TABLE, SidecarSpec, agent_container, firewall_container, init_config,
    sidecar_container,
};
use super::{Progress, SidecarDown};
use crate::spec::{BottleStdio, LaunchSpec, StdioMode};
use crate::{BackendError, BackendKind, BottleInfo, CleanupAction};

/// The runtime the agent runs with, from the daemon's registered runtimes (see [`runtime`]).
pub(crate) async fn choose_runtime<E: Engine>(
    docker: &E,
    choice: &RuntimeChoice,
) -> Result<runtime::Chosen, BackendError> {
    let info = docker.info().await.map_err(setup("docker info"))?;
    let default = info.default_runtime.unwrap_or_else(|| "runc".to_owned());
    choose_from(choice, &registered_runtimes(info.runtimes), &default)
}

/// [`runtime::choose`], refused as the backend being unavailable.
pub(crate) fn choose_from(
    choice: &RuntimeChoice,
    runtimes: &std::collections::BTreeMap<String, runtime::Registered>,
    default: &str,
) -> Result<runtime::Chosen, BackendError> {
    runtime::choose(choice, runtimes, default).map_err(|refused| BackendError::Unavailable {
        backend: BackendKind::Docker,
        reason: format!("{}; fix: {}", refused.reason, refused.fix),
    })
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

/// `<boot id>:<pid>:<start time>` of this process, to recognise orphans later.
pub(crate) fn launcher_label() -> String {
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
/// cleanup never kills what it cannot judge). A label whose boot id or start time was not
/// read when it was made, or a boot id not readable now, cannot be judged either: an empty
/// field would otherwise differ from the live launcher's and pass it for gone.
pub(crate) fn launcher_gone(label: Option<&String>) -> bool {
    let Some(label) = label else { return false };
    let mut parts = label.splitn(3, ':');
    let (Some(boot), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let here = boot_id();
    if boot.is_empty() || start.is_empty() || here.is_empty() {
        return false;
    }
    if boot != here {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).as_deref() != Some(start)
}

pub(crate) async fn build_image<E: Engine>(
    docker: &E,
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
    if docker.image_exists(&tag).await {
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
    let mut stream = docker.build_image(options, context);
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
async fn remove_older_builds<E: Engine>(docker: &E, source: &ImageSource, tag: &str) {
    let mut filters = label_filter(&[]);
    filters.insert("reference".to_owned(), vec![source.repository.clone()]);
    let Ok(images) = docker.list_images(filters).await else {
        return;
    };
    for image in images {
        if image.repo_tags.iter().any(|t| t == tag) {
            continue;
        }
        for old in &image.repo_tags {
            let _ = docker.remove_image(old).await;
        }
    }
}

/// Creates everything, starts the sidecar and the agent (whose init waits), installs the
/// firewall; on error removes every object of the bottle by name before returning it. The
/// agent's id and its attached stdio come back; the caller releases the init.
pub(crate) async fn launch<E: Engine>(
    docker: &E,
    spec: &LaunchSpec,
    sidecar: &SidecarSpec,
    settings: &AgentSettings,
    firewall_image: &str,
    stdio: BottleStdio,
) -> Result<(String, AttachContainerResults), BackendError> {
    let started = start_bottle(docker, spec, sidecar, settings, firewall_image, stdio).await;
    if started.is_err() {
        teardown(docker, &Names::new(&spec.identity)).await;
    }
    started
}

async fn start_bottle<E: Engine>(
    docker: &E,
    spec: &LaunchSpec,
    sidecar: &SidecarSpec,
    settings: &AgentSettings,
    firewall_image: &str,
    stdio: BottleStdio,
) -> Result<(String, AttachContainerResults), BackendError> {
    let identity = &spec.identity;
    let names = Names::new(identity);
    // Before anything exists: without the host's routes no subnet is known to be clear of
    // them, and the bottle is refused.
    let routes = host_routes(docker).await?;
    let (internal, egress) = tokio::join!(
        create_internal_network(docker, identity, &settings.launcher, &routes),
        docker.create_network(spec::egress_network(identity, &settings.launcher)),
    );
    let subnet = internal?;
    egress.map_err(setup("create the egress network"))?;

    // The sidecar's address is fixed by the subnet, so the agent's side does not wait for
    // the sidecar: its container starts, its init binds the loopback ports (relaying to that
    // address), and the firewall goes in, while the sidecar container starts and gets ready.
    // The agent's init waits for the release, sent only after both sides succeeded.
    let ports: Vec<u16> = spec.forwards.iter().map(|f| f.inside_port).collect();
    let sidecar_side = async {
        start_sidecar(docker, identity, sidecar, settings, &subnet).await?;
        match &sidecar.ready_line {
            Some(line) => wait_ready(docker, &names.sidecar, line).await,
            None => Ok(()),
        }
    };
    let agent_side = async {
        let agent_id = create_agent(docker, spec, settings, &subnet, stdio).await?;
        // The firewall container can be created once the agent's exists (it names it); it is
        // started once the agent's runs (it joins its network namespace).
        let firewall = firewall_container(
            identity,
            &settings.launcher,
            firewall_image,
            &agent_id,
            IpAddr::V4(subnet.sidecar()),
            &ports,
        );
        let (attach, firewall_created) = tokio::join!(
            run_agent(docker, &agent_id, settings, stdio),
            create(docker, &names.firewall, firewall),
        );
        let attach = attach?;
        firewall_created.map_err(setup(FIREWALL_STAGE))?;
        run_firewall(docker, &names).await?;
        Ok((agent_id, attach))
    };
    // The first failure ends both (the caller tears the bottle down).
    let ((), agent) = tokio::try_join!(sidecar_side, agent_side)?;
    Ok(agent)
}

/// The stage a subnet failure is reported under.
const SUBNET_STAGE: &str = "create the internal network";

/// The host's routes ([`Engine::host_routes`]), read whole. A table that cannot be read, or
/// not as the kernel's, refuses the bottle: an empty table in its place could put the
/// internal network on a subnet a host route (a LAN, a VPN) covers, shadowing it for the
/// host and handing its addresses to the bottle's network.
async fn host_routes<E: Engine>(docker: &E) -> Result<HostRoutes, BackendError> {
    let refused = |why: String| BackendError::Setup {
        stage: SUBNET_STAGE.to_owned(),
        message: format!(
            "cannot read the host's routes from {ROUTE_TABLE}: {why}; docker bottles put their internal network on a subnet no host route covers, so none is picked without them: run bot-bottle where {ROUTE_TABLE} is the host's and readable (the docker daemon must be local)"
        ),
    };
    let table = docker
        .host_routes()
        .await
        .map_err(|e| refused(e.to_string()))?;
    HostRoutes::parse(&table).map_err(|e| refused(e.to_string()))
}

/// How many subnets a bottle tries for its internal network before it gives up.
const SUBNET_TRIES: u32 = 64;

/// Creates the internal network on the first [`InternalSubnet`] (from the one the identity
/// hashes to) that overlaps no host route in `routes` and that the daemon accepts (it refuses
/// one that overlaps another of its networks, e.g. another bottle's).
async fn create_internal_network<E: Engine>(
    docker: &E,
    identity: &str,
    launcher: &str,
    routes: &HostRoutes,
) -> Result<InternalSubnet, BackendError> {
    let first = InternalSubnet::first_for(identity);
    let mut refused = 0;
    for n in 0..InternalSubnet::COUNT {
        let subnet = InternalSubnet::nth(first + n);
        if subnet.overlaps_a_route(routes) {
            continue;
        }
        match docker
            .create_network(spec::internal_network(identity, launcher, &subnet))
            .await
        {
            Ok(()) => return Ok(subnet),
            Err(e) if pool_overlaps(&e) && refused + 1 < SUBNET_TRIES => refused += 1,
            Err(e) => return Err(setup(SUBNET_STAGE)(e)),
        }
    }
    let ranges: Vec<String> = InternalSubnet::RANGES
        .iter()
        .map(|r| format!("{r}/16"))
        .collect();
    Err(BackendError::Setup {
        stage: SUBNET_STAGE.to_owned(),
        message: format!(
            "every /28 of {} overlaps a host route ({ROUTE_TABLE}); docker bottles need a /28 there that no route covers for their internal network",
            ranges.join(" and ")
        ),
    })
}

/// The daemon's answer to a network whose subnet overlaps one it has.
fn pool_overlaps(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::DockerResponseServerError { message, .. } if message.contains("overlaps")
    )
}

/// Creates and starts the sidecar container (its readiness is waited for by the caller).
async fn start_sidecar<E: Engine>(
    docker: &E,
    identity: &str,
    sidecar: &SidecarSpec,
    settings: &AgentSettings,
    subnet: &InternalSubnet,
) -> Result<(), BackendError> {
    let names = Names::new(identity);
    create(
        docker,
        &names.sidecar,
        sidecar_container(identity, sidecar, &settings.launcher, subnet),
    )
    .await
    .map_err(setup("create the sidecar container"))?;
    docker
        .connect_network(&names.egress_network, &names.sidecar)
        .await
        .map_err(setup("connect the sidecar to its egress network"))?;
    docker
        .start_container(&names.sidecar)
        .await
        .map_err(setup("start the sidecar container"))
}

/// How long a sidecar may take to print its ready line (its first upstream git sync).
const SIDECAR_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Follows the sidecar's stdout until `ready` appears; fails with what it printed when it
/// exits first or stays silent.
async fn wait_ready<E: Engine>(
    docker: &E,
    container: &str,
    ready: &str,
) -> Result<(), BackendError> {
    let mut logs = docker.logs(container, true);
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

/// Creates the agent container (refused when the daemon drops one of its limits); its id.
async fn create_agent<E: Engine>(
    docker: &E,
    spec: &LaunchSpec,
    settings: &AgentSettings,
    subnet: &InternalSubnet,
    stdio: BottleStdio,
) -> Result<String, BackendError> {
    let names = Names::new(&spec.identity);
    let init = init_config(spec, subnet);
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
    Ok(created.id)
}

/// Attaches to and starts the created agent container; its init then waits for the release.
async fn run_agent<E: Engine>(
    docker: &E,
    agent_id: &str,
    settings: &AgentSettings,
    stdio: BottleStdio,
) -> Result<AttachContainerResults, BackendError> {
    let attach = docker
        .attach_container(
            agent_id,
            AttachContainerOptions {
                stdin: stdio.stdin != StdioMode::Null,
                stdout: true,
                stderr: true,
                stream: true,
                logs: true,
                detach_keys: None,
            },
        )
        .await
        .map_err(setup("attach to the agent container"))?;
    docker
        .start_container(agent_id)
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
    Ok(attach)
}

async fn create<E: Engine>(
    docker: &E,
    name: &str,
    body: ContainerCreateBody,
) -> Result<bollard::models::ContainerCreateResponse, ApiError> {
    docker.create_container(name, body).await
}

/// The stage a firewall failure is reported under.
const FIREWALL_STAGE: &str = "close the bottle's network";

/// Runs the created firewall container to completion; fails with its output unless it exited
/// 0. The exited container stays until the bottle's teardown.
async fn run_firewall<E: Engine>(docker: &E, names: &Names) -> Result<(), BackendError> {
    let stage = FIREWALL_STAGE;
    docker
        .start_container(&names.firewall)
        .await
        .map_err(setup(stage))?;
    let code = exit_code(docker, &names.firewall)
        .await
        .map_err(setup(stage))?;
    if code != 0 {
        let mut logs = docker.logs(&names.firewall, false);
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
    // The exited container is removed with the bottle (`teardown`, by name): a removal here
    // would keep the agent waiting for one more round trip to the daemon.
    Ok(())
}

/// Waits until a container is not running; its exit code.
pub(crate) async fn exit_code<E: Engine>(docker: &E, container: &str) -> Result<i64, ApiError> {
    docker.wait_exit(container).await
}

/// Waits for the agent's exit code while watching the sidecar container. If the sidecar
/// ends first, `down` is told how and the agent is stopped (SIGTERM, SIGKILL after `grace`);
/// if the agent ends first but the sidecar is found gone too (it died just before, perhaps
/// why the agent ended), `down` is told as well. Called before teardown stops the sidecar.
pub(crate) async fn watch_sidecar<E: Engine>(
    docker: &E,
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
            let _ = docker.stop_container(agent, grace).await;
            agent_exit.await
        }
    }
}

/// How the sidecar container ended, if it is not running.
async fn sidecar_gone<E: Engine>(docker: &E, sidecar: &str) -> Option<String> {
    let state = docker.inspect_container(sidecar).await.ok()?.state?;
    if state.running == Some(true) {
        return None;
    }
    Some(describe_exit(
        state.exit_code.unwrap_or(-1),
        state.oom_killed == Some(true),
    ))
}

/// How a sidecar that ended with `code` ended (asking the daemon whether the OOM killer did it).
async fn sidecar_ended<E: Engine>(docker: &E, sidecar: &str, code: i64) -> String {
    let oom = docker
        .inspect_container(sidecar)
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

async fn remove<E: Engine>(docker: &E, container: &str) {
    let _ = docker.remove_container(container).await;
}

/// Removes every object of a bottle by name (missing ones are fine), errors ignored: the
/// reaper's and a failed launch's teardown.
pub(crate) async fn teardown<E: Engine>(docker: &E, names: &Names) {
    let _ = remove_objects(docker, names).await;
}

/// Stops the sidecar container: SIGTERM first, as on native, so that the bundle finishes
/// what is in flight (its last log and queue writes) and revokes forge deploy keys on its
/// way out; SIGKILL after 10 s. A sidecar already stopped or gone is fine.
pub(crate) async fn stop_sidecar<E: Engine>(docker: &E, names: &Names) -> Result<(), ApiError> {
    match docker.stop_container(&names.sidecar, 10).await {
        Err(e) if !is_not_found(&e) && !not_modified(&e) => Err(e),
        _ => Ok(()),
    }
}

/// The daemon's "already stopped" answer (304) to a stop.
fn not_modified(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// Removes every object of a bottle by name: the sidecar stopped first ([`stop_sidecar`]),
/// the three containers, then the two networks. Objects already gone are fine; every other
/// failure is named in the error (the rest is still removed).
pub(crate) async fn remove_objects<E: Engine>(docker: &E, names: &Names) -> Result<(), String> {
    let failed = |what: &str, name: &str, e: ApiError| -> Option<String> {
        (!is_not_found(&e)).then(|| format!("cannot remove the {what} {name}: {}", api_message(&e)))
    };
    let container = |name: &str| {
        let name = name.to_owned();
        async move {
            docker
                .remove_container(&name)
                .await
                .err()
                .and_then(|e| failed("container", &name, e))
        }
    };
    let sidecar = async {
        let stopped = stop_sidecar(docker, names).await;
        let removed = container(&names.sidecar).await;
        removed.or_else(|| {
            stopped.err().map(|e| {
                format!(
                    "cannot stop the container {}: {}",
                    names.sidecar,
                    api_message(&e)
                )
            })
        })
    };
    let (firewall, agent, sidecar) =
        tokio::join!(container(&names.firewall), container(&names.agent), sidecar);
    let network = |name: &str| {
        let name = name.to_owned();
        async move {
            docker
                .remove_network(&name)
                .await
                .err()
                .and_then(|e| failed("network", &name, e))
        }
    };
    let (internal, egress) = tokio::join!(
        network(&names.internal_network),
        network(&names.egress_network),
    );
    let errors: Vec<String> = [firewall, agent, sidecar, internal, egress]
        .into_iter()
        .flatten()
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn label_filter(extra: &[(&str, &str)]) -> Filters {
    let mut labels = vec![format!("{LABEL_MANAGED}=true")];
    labels.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    HashMap::from([("label".to_owned(), labels)])
}

/// The identity and role of a container this backend created: its labels name a bottle and
/// one of a bottle's container roles, and its name is the one [`Names`] gives that role.
/// Labels alone do not tell: a container inherits the labels of its image, and bot-bottle's
/// images carry [`LABEL_MANAGED`] (so a container anyone runs from them does too).
fn created_by_us<'a>(
    labels: &'a HashMap<String, String>,
    name: &str,
) -> Option<(&'a str, &'a str)> {
    let identity = labels.get(LABEL_IDENTITY)?;
    let role = labels.get(LABEL_ROLE)?;
    if identity.is_empty() {
        return None;
    }
    let names = Names::new(identity);
    let expected = match role.as_str() {
        "agent" => names.agent,
        "sidecar" => names.sidecar,
        "firewall" => names.firewall,
        _ => return None,
    };
    (name == expected).then_some((identity.as_str(), role.as_str()))
}

/// Removes what no live launcher owns: containers (running orphans are killed), then
/// networks and volumes, then dangling images of ours. Objects whose launcher is alive (a
/// bottle being started, running or torn down) are never touched; a running container without
/// a launcher label is left alone (cleanup never kills what it cannot judge), and so is every
/// container this backend did not create ([`created_by_us`]).
pub(crate) async fn cleanup<E: Engine>(
    docker: &E,
    dry_run: bool,
) -> Result<Vec<CleanupAction>, BackendError> {
    let mut actions = Vec::new();
    let containers = docker
        .list_containers(label_filter(&[]))
        .await
        .map_err(setup("list containers"))?;
    let mut live = std::collections::BTreeSet::new();
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        // A container run from one of our images inherits the image's managed label: only
        // what this backend created (a bottle's identity, role and name) is judged here.
        let Some((identity, role)) = created_by_us(&labels, &name) else {
            continue;
        };
        let identity = identity.to_owned();
        let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
        let launcher = labels.get(LABEL_LAUNCHER);
        let owned = launcher.is_some() && !launcher_gone(launcher);
        if owned || (running && launcher.is_none()) {
            live.insert(identity);
            continue;
        }
        if running && role == "agent" {
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
        .list_networks(label_filter(&[]))
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
            match docker.remove_network(&name).await {
                // Removed meanwhile (by the trash remover of an ended bottle).
                Err(e) if is_not_found(&e) => continue,
                other => other.map_err(setup("remove a network"))?,
            }
        }
        actions.push(CleanupAction::RemovedNetwork { name });
    }
    let volumes = docker
        .list_volumes(label_filter(&[]))
        .await
        .map_err(setup("list volumes"))?;
    for v in volumes {
        if live.contains(
            v.labels
                .get(LABEL_IDENTITY)
                .map(String::as_str)
                .unwrap_or_default(),
        ) {
            continue;
        }
        if !dry_run {
            let _ = docker.remove_volume(&v.name).await;
        }
        actions.push(CleanupAction::RemovedVolume { name: v.name });
    }
    let mut filters = label_filter(&[]);
    filters.insert("dangling".to_owned(), vec!["true".to_owned()]);
    let images = docker
        .list_images(filters)
        .await
        .map_err(setup("list images"))?;
    for image in images {
        if !dry_run {
            let _ = docker.remove_image(&image.id).await;
        }
        actions.push(CleanupAction::RemovedImage { id: image.id });
    }
    Ok(actions)
}

/// Stops a bottle started by any process: the agent, then the sidecar, each with `grace`
/// before SIGKILL. `false` when its agent is not running.
pub(crate) async fn stop<E: Engine>(
    docker: &E,
    identity: &str,
    grace: Duration,
) -> Result<bool, BackendError> {
    let names = Names::new(identity);
    // A daemon that does not answer is not "nothing ran": the bottle may run on.
    let running = match docker.inspect_container(&names.agent).await {
        Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
        Err(e) if is_not_found(&e) => false,
        Err(e) => return Err(setup("stop the bottle")(e)),
    };
    if !running {
        return Ok(false);
    }
    let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
    for container in [&names.agent, &names.sidecar] {
        match docker.stop_container(container, secs).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(setup("stop the bottle")(e)),
        }
    }
    Ok(true)
}

/// The bottles whose agent container exists, sorted by identity.
pub(crate) async fn list<E: Engine>(docker: &E) -> Result<Vec<BottleInfo>, BackendError> {
    let containers = docker
        .list_containers(label_filter(&[(LABEL_ROLE, "agent")]))
        .await
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

#[cfg(test)]
mod tests;
