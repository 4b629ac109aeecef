//! `start` on the docker backend: the agent image, the sidecar container and the launch.
//!
//! The sidecar bundle is the same `bot-bottle sidecar` as on native, run in its own
//! container instead of as a child process: the executable is mounted read-only into the
//! sidecar image (git, ssh, iptables), `$BOT_BOTTLE_HOME` is mounted at the same path so every
//! path in `sidecar.json` holds, and the tokens are in the container's environment only. The
//! agent container never gets any of it (see `backend::docker` for its isolation).
//!
//! Images are built here only when their inputs change (the backend tags them by content
//! hash), with the build output shown as it comes. `$BOT_BOTTLE_DOCKER_BASE` replaces the
//! base image of the shipped Dockerfiles (a mirror, or the local Debian base on machines
//! without a registry) and `$BOT_BOTTLE_DOCKER_AGENT_PACKAGE` the npm package of the agent
//! CLI (a pinned version; empty: the image has the tools but no agent CLI).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::docker::{
    AgentImage, DockerBackend, DockerConfig, ImageSource, SidecarMount, SidecarSpec,
};
use backend::native::HelperCommand;
use backend::{Backend, BottleStdio, LaunchSpec, WorkspaceMode};
use manifest::AgentProvider;
use state::Home;

use crate::error::{Context, chain};
use crate::{BottlePaths, Launch, LaunchError, Options, Report};

/// Where the sidecar container finds the bot-bottle executable.
pub(super) const SIDECAR_EXE: &str = "/usr/local/bin/bot-bottle";
/// What to try when an image does not build: the usual cause is a base image that cannot be
/// pulled.
const BUILD_HINT: &str = "if the base image cannot be pulled (no registry here), set BOT_BOTTLE_DOCKER_BASE to a local image (scripts/docker/build-base-image builds one)";
/// The agent's uid and gid when root starts the bottle (never root inside).
const ROOT_AGENT_ID: u32 = 1000;

/// Builds what is missing and starts the sidecar and agent containers; the running agent.
/// `durable` waits until the bottle's state is on disk: called once, before the agent is
/// released (its fsyncs overlap the start of the containers).
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    home: &Home,
    paths: &BottlePaths,
    launch: &Launch,
    sidecar_env: &[String],
    spec: &LaunchSpec,
    watch: Arc<super::watch::Watch>,
    durable: impl FnOnce() -> Result<(), LaunchError> + Send + 'static,
    options: &Options,
) -> Result<Box<dyn backend::RunningBottle>, LaunchError> {
    let exe = &options.exe;
    let helper = |subcommand: &str| HelperCommand {
        exe: exe.clone(),
        args: vec![subcommand.into()],
    };
    let base = env_value(&options.env, "BOT_BOTTLE_DOCKER_BASE");
    let mut config = DockerConfig::new(
        AgentImage::Build(agent_image(launch, paths, base.as_deref(), &options.env)?),
        helper(backend::inbottle::docker_init::INIT_SUBCOMMAND),
    );
    // A killed `start` takes its containers with it, as on native.
    config.reaper = Some(helper(backend::docker::reaper::REAPER_SUBCOMMAND));
    // The backend watches the sidecar container and stops the agent when it dies first;
    // `start` tells the operator and keeps the bottle.
    config.sidecar_down = Some(Arc::new(move |how: &str| {
        watch.sidecar_down(how);
    }));
    config.stop_grace = super::watch::STOP_GRACE;
    // Once the agent ended and its sidecar stopped, the containers and networks are removed
    // by the trash's detached remover, after `start` returned.
    config.trash = Some(home.trash_dir());
    // A resumed bottle whose last run's objects are still recorded there (its remover has
    // not finished, or was killed): they go first, or its names would be taken.
    if home.trash_holds(&spec.identity) {
        home.empty_trash(backend::TRASH_REMOVERS).map_err(|e| {
            LaunchError::Invalid(format!(
                "cannot remove what the last run of {} left: {e}",
                spec.identity
            ))
        })?;
    }
    let durable = std::sync::Mutex::new(Some(durable));
    config.before_release = Some(Arc::new(move || {
        let Some(durable) = durable.lock().ok().and_then(|mut d| d.take()) else {
            return Err("the bottle's state was already waited for".to_owned());
        };
        durable().map_err(|e| chain(&e))
    }));
    let sink = options.report.clone();
    config.progress = Some(Arc::new(move |line: &str| sink.build_output(line)));
    let backend = DockerBackend::new(config)?;
    let built = backend
        .ensure_image(&ImageSource::sidecar(base.as_deref()), "sidecar-image")
        .map_err(|e| with_hint("cannot build the sidecar image", e))
        .and_then(|image| {
            backend.prepare(spec).map_err(|e| {
                with_hint(
                    "cannot prepare the agent's container (its image or workspace)",
                    e,
                )
            })?;
            Ok(image)
        });
    options.report.build_finished();
    let sidecar = sidecar_spec(home, paths, launch, sidecar_env, options, built?)?;
    if nix::unistd::geteuid().is_root() {
        hand_to_agent_user(spec, options.report.as_ref())?;
    }
    let running = backend.launch_with(spec, &sidecar, BottleStdio::inherit())?;
    super::agent_started(paths, options.report.as_ref());
    Ok(running)
}

/// `what: error`, then the hint on a line of its own (after a build log, where it is seen).
fn with_hint(what: &str, error: backend::BackendError) -> LaunchError {
    LaunchError::Invalid(format!("{what}: {}\nhint: {BUILD_HINT}", chain(&error)))
}

fn env_value(env: &crate::HostEnv, name: &str) -> Option<String> {
    env.var(name).filter(|v| !v.trim().is_empty())
}

/// The agent image: the per-bottle override `state/<identity>/Dockerfile`, else the bottle's
/// own Dockerfile (its directory is the build context), else the provider's template.
pub(super) fn agent_image(
    launch: &Launch,
    paths: &BottlePaths,
    base: Option<&str>,
    env: &crate::HostEnv,
) -> Result<ImageSource, LaunchError> {
    let agent = &launch.agent.name;
    let override_file = paths.dockerfile_override();
    if override_file.is_file() {
        let text = state::read::read_limited_to_string(&override_file, state::read::CONFIG_LIMIT)
            .with_context(|| format!("cannot read {}", override_file.display()))?;
        // An empty context: the state directory holds the CA key and must not be sent.
        return Ok(ImageSource {
            repository: format!("bot-bottle/agent-{agent}"),
            dockerfile: text,
            context_dir: None,
            extra_files: vec![],
            build_args: Default::default(),
        });
    }
    provider_image(&launch.agent, base, env)
}

/// The agent image of `agent`'s provider: the bottle's own Dockerfile (its directory is the
/// build context) or the provider's template. `start --dry-run` names the same image.
pub fn provider_image(
    agent: &manifest::ResolvedAgent,
    base: Option<&str>,
    env: &crate::HostEnv,
) -> Result<ImageSource, LaunchError> {
    let name = &agent.name;
    match &agent.bottle.agent_provider {
        AgentProvider::Template { dockerfile, .. } => {
            ImageSource::bottle_dockerfile(name, dockerfile).with_context(|| {
                format!(
                    "cannot read the bottle's Dockerfile {}; fix `agent_provider.dockerfile` in the manifest",
                    dockerfile.display()
                )
            })
        }
        AgentProvider::Generic(g) => match &g.dockerfile {
            Some(dockerfile) => ImageSource::bottle_dockerfile(name, dockerfile).with_context(|| {
                format!(
                    "cannot read the generic provider's Dockerfile {}; fix `agent_provider.dockerfile` in the manifest",
                    dockerfile.display()
                )
            }),
            None => Err(LaunchError::Invalid(format!(
                "agent `{name}` runs a generic provider without `agent_provider.dockerfile`, so the docker backend has no image with `{}` in it; add `dockerfile: ./Dockerfile` (an image that installs the agent) to its `agent_provider`, or use --backend native",
                g.command.first().map(String::as_str).unwrap_or_default()
            ))),
        },
        AgentProvider::Stock(kind) => {
            let name = kind.as_str();
            let mut source = ImageSource::provider(name, base)
                .ok_or_else(|| {
                    LaunchError::Invalid(format!("no image template for the {name} provider"))
                })?;
            if let Some(package) = env.var("BOT_BOTTLE_DOCKER_AGENT_PACKAGE") {
                source
                    .build_args
                    .insert("AGENT_PACKAGE".into(), package.trim().to_owned());
            }
            Ok(source)
        }
    }
}

/// The sidecar container: `bot-bottle sidecar` with what its config names mounted at the
/// same paths, running as the launching user (who owns the state files).
pub(super) fn sidecar_spec(
    home: &Home,
    paths: &BottlePaths,
    launch: &Launch,
    sidecar_env: &[String],
    options: &Options,
    image: String,
) -> Result<SidecarSpec, LaunchError> {
    let mut mounts = vec![
        SidecarMount {
            host: options.exe.clone(),
            inside: SIDECAR_EXE.into(),
            read_only: true,
        },
        SidecarMount {
            host: home.root().to_path_buf(),
            inside: home.root().to_path_buf(),
            read_only: false,
        },
    ];
    let bottle = &launch.agent.bottle;
    for ca in &bottle.egress.upstream_ca {
        mounts.push(same_path(ca, true));
    }
    // The gate's own reading of its repositories: which upstreams are local, where the
    // static deploy keys are (with `~` expanded as the gate does).
    let spec = gitgate::GateSpec {
        user: None,
        ..crate::spec::gate_spec(&bottle.git_gate)
    };
    let gate = gitgate::GateConfig::from_spec(&spec)
        .context("the bottle's `git-gate` block is invalid")?;
    for (name, repo) in &gate.repos {
        if repo.upstream == gitgate::Upstream::Local
            && let Some(dir) = local_upstream(&repo.url)
        {
            // The gate pushes to a local upstream: writable.
            mounts.push(same_path(&dir, false));
        }
        if let Some(gitgate::KeySource::Static { path }) = &repo.key {
            if !path.is_file() {
                return Err(LaunchError::Invalid(format!(
                    "the deploy key {} of repository `{name}` does not exist; fix `git-gate.repos.{name}.key.path`",
                    path.display()
                )));
            }
            mounts.push(same_path(path, true));
        }
    }
    mounts.sort_by(|a, b| a.inside.cmp(&b.inside));
    mounts.dedup_by(|a, b| a.inside == b.inside);

    let mut env = std::collections::BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    );
    env.insert("HOME".to_owned(), "/tmp".to_owned());
    for name in ["BOT_BOTTLE_LOG", "RUST_LOG", "TZ", "LANG"]
        .into_iter()
        .map(str::to_owned)
        .chain(sidecar_env.iter().cloned())
    {
        if let Some(value) = options.env.var(&name) {
            env.insert(name, value);
        }
    }
    let log = paths.sidecar_log();
    // The bundle's own log goes to the state directory, as on native; stdout carries `ready`.
    let script = format!(
        "exec {SIDECAR_EXE} sidecar --config {} 2>>{}",
        shell_quote(&paths.sidecar_config()),
        shell_quote(&log)
    );
    Ok(SidecarSpec {
        image,
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        env,
        mounts,
        user: format!(
            "{}:{}",
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw()
        ),
        ready_line: Some("ready".into()),
        health: Some(vec![
            SIDECAR_EXE.into(),
            "sidecar".into(),
            "--config".into(),
            paths.sidecar_config().display().to_string(),
            "--check".into(),
        ]),
    })
}

fn same_path(path: &Path, read_only: bool) -> SidecarMount {
    SidecarMount {
        host: path.to_path_buf(),
        inside: path.to_path_buf(),
        read_only,
    }
}

/// The directory of a local (`/path` or `file:///path`) upstream; relative ones cannot be
/// mounted and are left to the gate's own error.
fn local_upstream(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    path.starts_with('/').then(|| PathBuf::from(path))
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Started by root, the agent runs as uid 1000: it gets its home (and a workspace copy);
/// a mounted workspace stays as it is, with a warning when the agent cannot write it.
pub(super) fn hand_to_agent_user(
    spec: &LaunchSpec,
    report: &dyn Report,
) -> Result<(), LaunchError> {
    chown_tree(&spec.home.host)?;
    match &spec.workspace.mode {
        WorkspaceMode::Copy { into } => chown_tree(into)?,
        WorkspaceMode::Mount => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&spec.workspace.host)
                .with_context(|| format!("cannot read {}", spec.workspace.host.display()))?;
            let writable = meta.uid() == ROOT_AGENT_ID || meta.mode() & 0o002 != 0;
            if !writable {
                report.line(&format!(
                    "warning: started as root, the agent runs as uid {ROOT_AGENT_ID} and cannot write {}; start as a normal user or with --copy-cwd",
                    spec.workspace.host.display()
                ));
            }
        }
    }
    Ok(())
}

fn chown_tree(root: &Path) -> Result<(), LaunchError> {
    let id = Some(ROOT_AGENT_ID);
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, id, id)
            .with_context(|| format!("cannot hand {} to the agent's user", path.display()))?;
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
            {
                stack.push(
                    entry
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .path(),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_upstreams_are_found_by_path_or_file_url() {
        assert_eq!(
            local_upstream("file:///srv/app.git"),
            Some(PathBuf::from("/srv/app.git"))
        );
        assert_eq!(
            local_upstream("/srv/app.git"),
            Some(PathBuf::from("/srv/app.git"))
        );
        assert_eq!(local_upstream("ssh://git@host/app.git"), None);
        assert_eq!(local_upstream("git@host:org/app.git"), None);
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
