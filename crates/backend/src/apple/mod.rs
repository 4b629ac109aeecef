//! The apple backend: the agent and its sidecar bundle in Apple's `container` runtime (one
//! lightweight Linux VM per container, macOS 26 or later).
//!
//! Everything is driven through the `container` CLI ([`ContainerCli`]); [`plan`] holds the
//! commands and the checks. One bottle ([`AppleBackend::launch_with`]):
//!
//! 1. `container system status` must answer that the API server runs;
//! 2. two networks, `bb-<id>-agent` (`--internal`, host-only) and `bb-<id>-egress` (NAT); the
//!    agent network must inspect as `hostOnly`;
//! 3. the sidecar bundle's container on both networks (its tokens passed as `--env NAME`, the
//!    values in the environment of the `container` process only, never on a command line),
//!    then its ready line in `container logs`, then its address on the agent network;
//! 4. the agent container created on the agent network alone, `--no-dns`, uid 1000, the
//!    bottle's CPUs and memory, bot-bottle's container init as PID 1; `container inspect` must
//!    confirm all of it ([`plan::confirm_agent`]) before it starts;
//! 5. `container start --attach`, then `container kill --signal SIGUSR1` releases the init,
//!    which checks every sidecar endpoint answers and starts the agent;
//! 6. at the end (or on any failure) both containers and both networks are deleted.
//!
//! Images are built with `container build` from the same Dockerfiles and context as the docker
//! backend's ([`AppleBackend::build`]).
//!
//! Platform: the code only runs commands, so it builds and is tested everywhere against
//! [`fake::FakeContainer`], and `bot-bottle start` runs it end to end on Linux against a
//! stand-in CLI whose containers run in docker (`$BOT_BOTTLE_APPLE_CLI`, the project's
//! test support); it has not been run on a Mac by this project (`doctor` and the README say
//! so). `start` reaches it through [`crate::SidecarPlacement::BackendContainer`]:
//! the launcher hands it the sidecar spec ([`Backend::launch_beside`]); [`Backend::launch`]
//! alone, without a sidecar, refuses.

pub mod cli;
pub mod fake;
pub mod plan;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cli::{ContainerCli, RealContainer};
pub use plan::Names;

use crate::docker::{ImageSource, SidecarSpec};
use crate::preflight::{AppleFacts, BackendStatus, diagnose_apple};
use crate::smolvm::cli::{CliChild, CliOutput};
use crate::{
    Backend, BackendError, BackendKind, BottleExit, BottleInfo, BottleStdio, CleanupAction,
    LaunchSpec, RunningBottle,
};

/// `$BOT_BOTTLE_APPLE_IMAGE`: an agent image already built (`container build`).
pub const IMAGE_ENV: &str = "BOT_BOTTLE_APPLE_IMAGE";

/// How the backend is set up.
#[derive(Debug, Clone)]
pub struct AppleConfig {
    /// `$BOT_BOTTLE_HOME`.
    pub bot_bottle_home: PathBuf,
    /// A Linux build of bot-bottle: the agent container's init.
    pub init_exe: Option<PathBuf>,
    /// The agent image.
    pub agent_image: Option<String>,
    /// How long the sidecar may take to print its ready line.
    pub ready_timeout: Duration,
}

impl AppleConfig {
    pub fn new(bot_bottle_home: impl Into<PathBuf>) -> AppleConfig {
        AppleConfig {
            bot_bottle_home: bot_bottle_home.into(),
            init_exe: None,
            agent_image: None,
            ready_timeout: Duration::from_secs(60),
        }
    }

    fn runtime_dir(&self) -> PathBuf {
        self.bot_bottle_home.join("run").join("apple")
    }
}

/// The apple backend over a [`ContainerCli`].
pub struct AppleBackend {
    config: AppleConfig,
    cli: Arc<dyn ContainerCli>,
}

/// The backend with the real `container` on `PATH` ([`crate::open`]).
pub fn open(options: &crate::OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut config = AppleConfig::new(&options.home);
    config.init_exe = env(crate::smolvm::GUEST_EXE_ENV)
        .map(PathBuf::from)
        .or_else(|| cfg!(target_os = "linux").then(|| options.exe.clone()));
    config.agent_image = env(IMAGE_ENV);
    let program = crate::preflight::apple_cli_override()
        .or_else(|| crate::preflight::find_in_path("container"))
        .unwrap_or_else(|| "container".into());
    Ok(Box::new(AppleBackend::new(
        config,
        Arc::new(RealContainer { program }),
    )))
}

fn unavailable(reason: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable {
        backend: BackendKind::Apple,
        reason: reason.to_string(),
    }
}

fn cli_failed(stage: &str, out: &CliOutput) -> BackendError {
    BackendError::Setup {
        stage: stage.to_owned(),
        message: format!(
            "container exited with {}: {}",
            out.status,
            out.stderr
                .trim()
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    }
}

/// Absolute paths without `,` (the `--mount` separator) or `:`.
fn validate(spec: &LaunchSpec) -> Result<(), BackendError> {
    if spec.argv.is_empty() {
        return Err(BackendError::InvalidSpec("the command is empty".to_owned()));
    }
    Names::new(&spec.identity)?;
    let mut paths: Vec<(&str, &Path)> = vec![
        ("workspace", &spec.workspace.host),
        ("workspace inside", &spec.workspace.inside),
        ("home", &spec.home.host),
        ("home inside", &spec.home.inside),
    ];
    for f in &spec.files {
        paths.push(("read-only file", &f.host));
        paths.push(("read-only file inside", &f.inside));
    }
    for (what, path) in paths {
        let text = path.to_string_lossy();
        if !path.is_absolute() || text.contains(',') || text.contains(':') {
            return Err(BackendError::InvalidSpec(format!(
                "the {what} path {} must be absolute and free of `,` and `:` for `container --mount`",
                path.display()
            )));
        }
    }
    Ok(())
}

impl AppleBackend {
    pub fn new(config: AppleConfig, cli: Arc<dyn ContainerCli>) -> AppleBackend {
        AppleBackend { config, cli }
    }

    fn run(&self, args: Vec<String>) -> Result<CliOutput, BackendError> {
        self.cli.run(&args, &[])
    }

    fn must(&self, stage: &str, args: Vec<String>) -> Result<CliOutput, BackendError> {
        let out = self.run(args)?;
        if out.ok() {
            Ok(out)
        } else {
            Err(cli_failed(stage, &out))
        }
    }

    /// Builds `source` with `container build` unless its tag exists; the tag. The context is
    /// the docker backend's, unpacked into a build directory.
    pub fn build(&self, source: &ImageSource) -> Result<String, BackendError> {
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| BackendError::Io {
                action,
                path,
                source,
            }
        };
        let hash = source.input_hash().map_err(io(
            "hash the image inputs of",
            Path::new(&source.repository),
        ))?;
        let tag = source.tag(&hash);
        let exists = self.run(vec!["image".into(), "inspect".into(), tag.clone()])?;
        if exists.ok() {
            return Ok(tag);
        }
        let dir = self.config.runtime_dir().join("build").join(&hash[..12]);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let tar = source
            .context_tar()
            .map_err(io("pack the context of", &dir))?;
        tar::Archive::new(std::io::Cursor::new(tar))
            .unpack(&dir)
            .map_err(io("unpack the build context into", &dir))?;
        let mut args: Vec<String> = vec![
            "build".into(),
            "--file".into(),
            dir.join(ImageSource::dockerfile_name())
                .display()
                .to_string(),
            "--tag".into(),
            tag.clone(),
        ];
        for (k, v) in &source.build_args {
            args.extend(["--build-arg".into(), format!("{k}={v}")]);
        }
        args.push(dir.display().to_string());
        let built = self.must("container build", args);
        let _ = std::fs::remove_dir_all(&dir);
        built.map(|_| tag)
    }

    /// Stages the init executable (hard link, else copy) in the bottle's runtime directory.
    fn stage_init(&self, identity: &str) -> Result<PathBuf, BackendError> {
        let exe = self.config.init_exe.as_ref().ok_or_else(|| {
            unavailable(format!(
                "the containers need a Linux build of bot-bottle as their init; set {} to one",
                crate::smolvm::GUEST_EXE_ENV
            ))
        })?;
        let dir = self.config.runtime_dir().join(identity).join("bin");
        std::fs::create_dir_all(&dir).map_err(|source| BackendError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let staged = dir.join("bot-bottle");
        let _ = std::fs::remove_file(&staged);
        if std::fs::hard_link(exe, &staged).is_err() {
            std::fs::copy(exe, &staged).map_err(|source| BackendError::Io {
                action: "copy",
                path: exe.clone(),
                source,
            })?;
        }
        Ok(dir)
    }

    /// Waits for `line` in the sidecar's log.
    fn wait_ready(&self, names: &Names, line: &str) -> Result<(), BackendError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            let out = self.must("container logs", vec!["logs".into(), names.sidecar.clone()])?;
            if out.stdout.lines().any(|l| l.trim() == line) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BackendError::Setup {
                    stage: "start the sidecar bundle".into(),
                    message: format!(
                        "{} did not print `{line}` within {:?}; its log: {}",
                        names.sidecar,
                        self.config.ready_timeout,
                        out.stdout
                            .trim()
                            .lines()
                            .take(5)
                            .collect::<Vec<_>>()
                            .join(" / ")
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Deletes what `created` holds: containers first (a network with a container on it
    /// cannot go), then networks. A step that fails is warned about only if it named objects
    /// known to exist; one that may never have been made is deleted quietly.
    fn teardown(cli: &dyn ContainerCli, created: &Created) {
        for (args, known) in created.delete_steps() {
            match cli.run(&args, &[]) {
                Ok(out) if !out.ok() && known => {
                    tracing::warn!(stderr = %out.stderr.trim(), "container teardown step failed")
                }
                Ok(out) if !out.ok() => {
                    tracing::debug!(stderr = %out.stderr.trim(), "deleting what a failed create may have left")
                }
                Err(e) => tracing::warn!(error = %e, "container teardown step failed"),
                Ok(_) => {}
            }
        }
    }

    /// Creates the networks, the sidecar and the agent, recording each in `created` as it is
    /// made (for the teardown of a failure).
    fn set_up(
        &self,
        spec: &LaunchSpec,
        sidecar: &SidecarSpec,
        names: &Names,
        image: &str,
        init_dir: &Path,
        created: &mut Created,
    ) -> Result<(), BackendError> {
        for (args, name) in plan::network_create_args(names)
            .into_iter()
            .zip([&names.agent_network, &names.egress_network])
        {
            let made = self.must("container network create", args);
            created.networks.push((name.clone(), made.is_ok()));
            made?;
        }
        let inspect = self.must(
            "container network inspect",
            plan::network_inspect_args(&names.agent_network),
        )?;
        plan::confirm_network(names, &inspect.stdout)?;
        let env: Vec<(String, String)> = sidecar
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let out = self
            .cli
            .run(&plan::sidecar_run_args(names, sidecar), &env)?;
        // `run` creates, then starts: a failed one may leave its container.
        created.containers.push((names.sidecar.clone(), out.ok()));
        if !out.ok() {
            return Err(cli_failed("container run (sidecar)", &out));
        }
        if let Some(line) = &sidecar.ready_line {
            self.wait_ready(names, line)?;
        }
        let inspect = self.must("container inspect", plan::inspect_args(&names.sidecar))?;
        let ip = plan::sidecar_address(names, &inspect.stdout)?;
        let init = plan::init_config(spec, &ip);
        let json = serde_json::to_string(&init).map_err(|e| BackendError::Process {
            action: "encode the init config",
            source: std::io::Error::other(e),
        })?;
        let made = self.must(
            "container create (agent)",
            plan::agent_create_args(names, spec, image, init_dir, &json),
        );
        created.containers.push((names.agent.clone(), made.is_ok()));
        made?;
        let inspect = self.must("container inspect", plan::inspect_args(&names.agent))?;
        plan::confirm_agent(names, spec, init_dir, &inspect.stdout)
    }

    /// Starts the bottle: the sidecar bundle's container from `sidecar`, then the agent.
    pub fn launch_with(
        &self,
        spec: &LaunchSpec,
        sidecar: &SidecarSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        validate(spec)?;
        let names = Names::new(&spec.identity)?;
        let status = self.run(plan::system_status_args())?;
        if !status.ok() {
            return Err(unavailable(
                "the container API server is not running; start it with `container system start`",
            ));
        }
        let image = self.config.agent_image.clone().ok_or_else(|| {
            unavailable(format!(
                "no agent image: build it with `container build` and set {IMAGE_ENV}"
            ))
        })?;
        let init_dir = self.stage_init(&spec.identity)?;
        // Who launched it: `cleanup` kills a bottle whose launcher is gone.
        crate::launcher_pid::write(&self.bottle_dir(&spec.identity))?;
        let mut created = Created::default();
        let discard = |created: &Created| {
            Self::teardown(self.cli.as_ref(), created);
            let _ = std::fs::remove_dir_all(self.bottle_dir(&spec.identity));
        };
        if let Err(e) = self.set_up(spec, sidecar, &names, &image, &init_dir, &mut created) {
            discard(&created);
            return Err(e);
        }
        let child = match self
            .cli
            .spawn(&plan::start_args(&names, spec.interactive), stdio)
        {
            Ok(child) => child,
            Err(e) => {
                discard(&created);
                return Err(e);
            }
        };
        let mut bottle = AppleBottle {
            names: names.clone(),
            created,
            child,
            cli: self.cli.clone(),
            dir: self.bottle_dir(&spec.identity),
            done: false,
        };
        // Released only once the container runs (the init waits for SIGUSR1).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(plan::inspect_args(&names.agent))?;
            let running = out.ok()
                && serde_json::from_str::<serde_json::Value>(&out.stdout)
                    .ok()
                    .is_some_and(|v| v[0]["status"]["state"] == "running");
            if running {
                break;
            }
            if Instant::now() >= deadline {
                return Err(BackendError::Setup {
                    stage: "start the agent container".into(),
                    message: format!("{} never reached the running state", names.agent),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.run(plan::release_args(&names))?;
        if !out.ok() {
            bottle.teardown();
            return Err(cli_failed("container kill --signal SIGUSR1", &out));
        }
        Ok(Box::new(bottle))
    }

    fn list_json(
        &self,
        stage: &str,
        args: Vec<String>,
    ) -> Result<Vec<serde_json::Value>, BackendError> {
        let out = self.must(stage, args)?;
        serde_json::from_str(&out.stdout).map_err(|e| BackendError::Setup {
            stage: stage.to_owned(),
            message: format!("its JSON cannot be read: {e}"),
        })
    }

    /// bot-bottle's containers: named `bb-<id>-agent`/`bb-<id>-sidecar` and labelled with that
    /// identity (a container of the user's that only looks like one is left alone, as for
    /// networks).
    fn containers(&self) -> Result<Vec<serde_json::Value>, BackendError> {
        Ok(self
            .list_json("container list", plan::list_args())?
            .into_iter()
            .filter(|c| {
                c["id"]
                    .as_str()
                    .and_then(Names::of_container)
                    .is_some_and(|identity| c["configuration"]["labels"][plan::LABEL] == identity)
            })
            .collect())
    }

    /// bot-bottle's networks: named `bb-<id>-agent`/`bb-<id>-egress` and labelled with that
    /// identity (a network of the user's that only looks like one is left alone).
    fn networks(&self) -> Result<Vec<(String, String)>, BackendError> {
        Ok(self
            .list_json("container network list", plan::network_list_args())?
            .iter()
            .filter_map(|n| {
                let name = n["id"].as_str()?;
                let identity = Names::of_network(name)?;
                (n["configuration"]["labels"][plan::LABEL] == identity)
                    .then(|| (name.to_owned(), identity.to_owned()))
            })
            .collect())
    }

    fn bottle_dir(&self, identity: &str) -> PathBuf {
        self.config.runtime_dir().join(identity)
    }

    /// Whether the bottle is still someone's: its launcher is alive, or (no launcher known) its
    /// agent container runs.
    fn live(&self, identity: &str, containers: &[serde_json::Value]) -> bool {
        let dir = self.bottle_dir(identity);
        if crate::launcher_pid::alive(&dir) {
            return true;
        }
        let agent = format!("bb-{identity}-agent");
        !crate::launcher_pid::gone(&dir)
            && containers
                .iter()
                .any(|c| c["id"] == agent.as_str() && c["status"]["state"] == "running")
    }
}

impl Backend for AppleBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Apple
    }

    fn sidecar_placement(&self) -> crate::SidecarPlacement {
        crate::SidecarPlacement::BackendContainer
    }

    fn build_image(&self, source: &ImageSource) -> Result<String, BackendError> {
        self.build(source)
    }

    fn launch_beside(
        &self,
        spec: &LaunchSpec,
        agent_image: &str,
        sidecar: &SidecarSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        let mut config = self.config.clone();
        config.agent_image = Some(agent_image.to_owned());
        AppleBackend::new(config, self.cli.clone()).launch_with(spec, sidecar, stdio)
    }

    fn preflight(&self) -> BackendStatus {
        let mut facts = AppleFacts::gather();
        facts.init_exe = self.config.init_exe.is_some();
        diagnose_apple(&facts)
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        validate(spec)?;
        crate::workspace_copy::prepare(spec)?;
        Ok(())
    }

    fn launch(
        &self,
        spec: &LaunchSpec,
        _stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        validate(spec)?;
        Err(BackendError::Unsupported(
            "the apple backend runs its sidecar bundle in a container of its own: it is started by `bot-bottle start`, which hands it the sidecar (Backend::launch_beside)".into(),
        ))
    }

    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "an apple bottle runs on the terminal of the `start` that launched it; bottle {identity} cannot be attached"
        )))
    }

    fn stop(&self, identity: &str, grace: Duration) -> Result<bool, BackendError> {
        let names = Names::new(identity)?;
        let known = self
            .containers()?
            .iter()
            .any(|c| c["id"] == names.agent.as_str());
        if !known {
            return Ok(false);
        }
        let secs = grace.as_secs().max(1).to_string();
        self.must(
            "container stop",
            ["stop", "--time", &secs, &names.agent]
                .map(String::from)
                .to_vec(),
        )?;
        Ok(true)
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        Ok(self
            .containers()?
            .iter()
            .filter(|c| c["id"].as_str().is_some_and(|n| n.ends_with("-agent")))
            .filter_map(|c| {
                let identity = Names::of_container(c["id"].as_str()?)?.to_owned();
                let running = c["status"]["state"] == "running";
                Some(BottleInfo {
                    orphaned: running && crate::launcher_pid::gone(&self.bottle_dir(&identity)),
                    identity,
                    backend: BackendKind::Apple,
                    running,
                    created: 0,
                })
            })
            .collect())
    }

    /// Removes what no live bottle uses: the containers of bottles whose launcher is gone (a
    /// running agent is killed: an orphan), stopped containers no launcher owns, then the
    /// networks and runtime directories of bottles that are not live.
    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        let containers = self.containers()?;
        let mut actions = Vec::new();
        let mut orphans = std::collections::BTreeSet::new();
        for c in &containers {
            let Some(name) = c["id"].as_str() else {
                continue;
            };
            let Some(identity) = Names::of_container(name) else {
                continue;
            };
            if self.live(identity, &containers) {
                continue;
            }
            if !dry_run {
                self.must(
                    "container delete",
                    vec!["delete".into(), "--force".into(), name.to_owned()],
                )?;
            }
            if c["status"]["state"] == "running" {
                if orphans.insert(identity.to_owned()) {
                    actions.push(CleanupAction::KilledOrphan {
                        identity: identity.to_owned(),
                    });
                }
            } else {
                actions.push(CleanupAction::RemovedContainer {
                    name: name.to_owned(),
                });
            }
        }
        for (name, identity) in self.networks()? {
            if self.live(&identity, &containers) {
                continue;
            }
            if !dry_run {
                self.must(
                    "container network delete",
                    vec!["network".into(), "delete".into(), name.clone()],
                )?;
            }
            actions.push(CleanupAction::RemovedNetwork { name });
        }
        if let Ok(entries) = std::fs::read_dir(self.config.runtime_dir()) {
            for e in entries.flatten() {
                let identity = e.file_name().to_string_lossy().into_owned();
                // `build/` holds image contexts being built, not a bottle.
                if identity == "build" || self.live(&identity, &containers) {
                    continue;
                }
                if !dry_run {
                    let _ = std::fs::remove_dir_all(e.path());
                }
                actions.push(CleanupAction::RemovedRuntimeDir {
                    identity,
                    path: e.path(),
                });
            }
        }
        Ok(actions)
    }
}

/// What a launch has created, in order, each with whether it is known to exist (`false`: its
/// create command failed, which may still have left it). Teardown deletes exactly these.
#[derive(Debug, Default, Clone)]
struct Created {
    networks: Vec<(String, bool)>,
    containers: Vec<(String, bool)>,
}

impl Created {
    /// The delete commands, each with whether all it names is known to exist: containers
    /// (the agent before its sidecar) before networks.
    fn delete_steps(&self) -> Vec<(Vec<String>, bool)> {
        let mut steps = Vec::new();
        let containers: Vec<&(String, bool)> = self.containers.iter().rev().collect();
        let networks: Vec<&(String, bool)> = self.networks.iter().collect();
        for (args, objects) in [
            (
                plan::delete_args as fn(&[String]) -> Vec<String>,
                containers,
            ),
            (plan::network_delete_args, networks),
        ] {
            for known in [true, false] {
                let names: Vec<String> = objects
                    .iter()
                    .filter(|(_, k)| *k == known)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !names.is_empty() {
                    steps.push((args(&names), known));
                }
            }
        }
        steps
    }
}

/// A running apple bottle: the agent's `container start --attach`. Dropping it without `wait`
/// kills it and deletes the bottle's containers and networks.
pub struct AppleBottle {
    names: Names,
    created: Created,
    child: Box<dyn CliChild>,
    cli: Arc<dyn ContainerCli>,
    dir: PathBuf,
    done: bool,
}

impl AppleBottle {
    fn teardown(&mut self) {
        if !self.done {
            self.done = true;
            AppleBackend::teardown(self.cli.as_ref(), &self.created);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl RunningBottle for AppleBottle {
    fn identity(&self) -> &str {
        &self.names.identity
    }
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.child.take_stdin()
    }
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.child.take_stdout()
    }
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.child.take_stderr()
    }
    fn wait(&mut self) -> Result<BottleExit, BackendError> {
        let code = self.child.wait();
        self.teardown();
        Ok(BottleExit { code: code? })
    }
    fn terminate(&mut self) -> Result<(), BackendError> {
        let out = self
            .cli
            .run(&["stop".to_owned(), self.names.agent.clone()], &[])?;
        if !out.ok() {
            return Err(cli_failed("container stop", &out));
        }
        Ok(())
    }
    fn kill(&mut self) -> Result<(), BackendError> {
        self.child.kill()?;
        let out = self.cli.run(
            &[
                "kill".to_owned(),
                "--signal".to_owned(),
                "SIGKILL".to_owned(),
                self.names.agent.clone(),
            ],
            &[],
        )?;
        if !out.ok() {
            return Err(cli_failed("container kill", &out));
        }
        Ok(())
    }
}

impl Drop for AppleBottle {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            self.teardown();
        }
    }
}
