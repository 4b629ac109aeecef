//! The smolmachines backend: the agent in a libkrun micro-VM run by `smolvm`.
//!
//! One machine per bottle, `bb-<identity>`, driven through the `smolvm` CLI ([`SmolvmCli`]):
//!
//! 1. `smolvm --version` must be [`plan::MIN_VERSION`] or later;
//! 2. the guest executable and the read-only files are staged under
//!    `$BOT_BOTTLE_HOME/run/smolvm/<identity>/` (virtiofs shares directories only);
//! 3. `smolvm machine create` with the bottle's CPUs and memory, the workspace and home
//!    read-write, the staged directories read-only, one `--mount-socket` per sidecar and **no
//!    network** ([`plan`] says why no smolvm network path can confine a bottle to its sidecars);
//! 4. the record smolvm persisted is read back from its state database and must be exactly
//!    that ([`plan::confirm_record`]); anything else deletes the machine and refuses;
//! 5. `smolvm machine start`, then `smolvm machine exec` runs the guest init
//!    ([`crate::inbottle::smolvm_guest`]) as root, which relays the sidecar ports on loopback
//!    and runs the agent as uid 1000;
//! 6. when the agent ends (or the bottle is dropped or stopped) the machine is stopped and
//!    deleted.
//!
//! The sidecar bundle is a host process beside the bottle, as on native and qemu
//! ([`crate::SidecarPlacement::HostProcess`]).
//!
//! What runs where: everything here is host side and platform-neutral (it only runs commands),
//! so it is tested on Linux against [`fake::FakeSmolvm`]. It has not been run against a real
//! smolvm on this project's machines (none can install it); `doctor` and the README say so.

pub mod cli;
pub mod fake;
pub mod plan;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use cli::{CliChild, CliOutput, RealSmolvm, SmolvmCli, StateDb};
pub use plan::{MachinePlan, SmolImage};

use crate::inbottle::smolvm_guest::{GuestFile, GuestForward, GuestSpec};
use crate::preflight::{BackendStatus, SmolFacts, diagnose_smolmachines};
use crate::{
    Backend, BackendError, BackendKind, BottleExit, BottleInfo, BottleStdio, CleanupAction,
    LaunchSpec, RunningBottle,
};

/// `$BOT_BOTTLE_SMOLVM_IMAGE`: the machine's root filesystem (a `docker save` archive of the
/// agent image, a rootfs directory, a registry reference or a `.smolmachine` pack).
pub const IMAGE_ENV: &str = "BOT_BOTTLE_SMOLVM_IMAGE";
/// `$BOT_BOTTLE_LINUX_EXE`: a Linux build of `bot-bottle` for inside a VM or container whose
/// init it is (smolmachines, apple); on Linux hosts the running executable when unset.
pub const GUEST_EXE_ENV: &str = "BOT_BOTTLE_LINUX_EXE";

/// How the backend is set up.
#[derive(Debug, Clone)]
pub struct SmolvmConfig {
    /// `$BOT_BOTTLE_HOME`.
    pub bot_bottle_home: PathBuf,
    /// The Linux `bot-bottle` executable the guest runs as its init.
    pub guest_exe: Option<PathBuf>,
    /// The machine's root filesystem.
    pub image: Option<SmolImage>,
}

impl SmolvmConfig {
    fn runtime_dir(&self) -> PathBuf {
        self.bot_bottle_home.join("run").join("smolvm")
    }
}

/// The smolmachines backend over a [`SmolvmCli`].
pub struct SmolvmBackend {
    config: SmolvmConfig,
    cli: Arc<dyn SmolvmCli>,
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The backend with the real `smolvm` on `PATH` and its state database ([`crate::open`]).
pub fn open(options: &crate::OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    let facts = SmolFacts::gather();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let db = cli::default_db_path(home.as_deref(), xdg.as_deref()).ok_or_else(|| {
        unavailable("$HOME is not set, so smolvm's state database cannot be found")
    })?;
    let cli = RealSmolvm {
        program: facts.smolvm.clone().unwrap_or_else(|| "smolvm".into()),
        db: StateDb::new(
            db,
            facts.sqlite3.clone().unwrap_or_else(|| "sqlite3".into()),
        ),
    };
    let guest_exe = non_empty_env(GUEST_EXE_ENV)
        .map(PathBuf::from)
        .or_else(|| cfg!(target_os = "linux").then(|| options.exe.clone()));
    Ok(Box::new(SmolvmBackend::new(
        SmolvmConfig {
            bot_bottle_home: options.home.clone(),
            guest_exe,
            image: non_empty_env(IMAGE_ENV).map(|v| SmolImage::parse(&v)),
        },
        Arc::new(cli),
    )))
}

fn unavailable(reason: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable {
        backend: BackendKind::Smolmachines,
        reason: reason.to_string(),
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackendError {
    let path = path.to_path_buf();
    move |source| BackendError::Io {
        action,
        path,
        source,
    }
}

/// The spec is one smolvm can carry: absolute paths without `:` (smolvm's `-v` separator), a
/// plain identity, a command, unique ports.
fn validate(spec: &LaunchSpec) -> Result<(), BackendError> {
    if spec.argv.is_empty() {
        return Err(BackendError::InvalidSpec("the command is empty".to_owned()));
    }
    let plain = !spec.identity.is_empty()
        && spec
            .identity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return Err(BackendError::InvalidSpec(format!(
            "bottle identity `{}` is not a valid smolvm machine name",
            spec.identity
        )));
    }
    let mut paths: Vec<(&str, &Path)> = vec![
        ("workspace", &spec.workspace.host),
        ("workspace inside", &spec.workspace.inside),
        ("home", &spec.home.host),
        ("home inside", &spec.home.inside),
    ];
    if let crate::WorkspaceMode::Copy { into } = &spec.workspace.mode {
        paths.push(("workspace copy", into));
    }
    for f in &spec.files {
        paths.push(("read-only file", &f.host));
        paths.push(("read-only file inside", &f.inside));
    }
    for f in &spec.forwards {
        paths.push(("sidecar socket", &f.host_unix_socket));
    }
    for (what, path) in paths {
        if !path.is_absolute() {
            return Err(BackendError::InvalidSpec(format!(
                "the {what} path {} is not absolute",
                path.display()
            )));
        }
        if path.to_string_lossy().contains(':') {
            return Err(BackendError::InvalidSpec(format!(
                "the {what} path {} contains `:`, which smolvm cannot mount; rename it",
                path.display()
            )));
        }
    }
    let mut ports: Vec<u16> = spec.forwards.iter().map(|f| f.inside_port).collect();
    ports.sort_unstable();
    if ports.windows(2).any(|w| w[0] == w[1]) {
        return Err(BackendError::InvalidSpec(
            "two sidecar forwards use the same port".to_owned(),
        ));
    }
    Ok(())
}

/// A failed `smolvm` command as an error (its stderr says why; it never holds a secret, since
/// nothing secret is ever on smolvm's command line).
fn cli_failed(stage: &str, out: &CliOutput) -> BackendError {
    BackendError::Setup {
        stage: stage.to_owned(),
        message: format!(
            "smolvm exited with {}: {}",
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

impl SmolvmBackend {
    pub fn new(config: SmolvmConfig, cli: Arc<dyn SmolvmCli>) -> SmolvmBackend {
        SmolvmBackend { config, cli }
    }

    pub fn config(&self) -> &SmolvmConfig {
        &self.config
    }

    fn bottle_dir(&self, identity: &str) -> PathBuf {
        self.config.runtime_dir().join(identity)
    }

    fn run(&self, args: Vec<String>) -> Result<CliOutput, BackendError> {
        self.cli.run(&args)
    }

    /// `smolvm --version` is one this backend drives.
    fn check_version(&self) -> Result<(), BackendError> {
        let out = self.run(vec!["--version".into()])?;
        let version = out.ok().then(|| plan::parse_version(&out.stdout)).flatten();
        match version {
            Some(v) if plan::version_supported(v) => Ok(()),
            Some((a, b, c)) => Err(unavailable(format!(
                "smolvm {a}.{b}.{c} is too old (bot-bottle needs {}.{}.{} or later for --mount-socket); \
                 upgrade it: curl -sSL https://smolmachines.com/install.sh | sh",
                plan::MIN_VERSION.0,
                plan::MIN_VERSION.1,
                plan::MIN_VERSION.2
            ))),
            None => Err(unavailable(format!(
                "`smolvm --version` did not answer a version ({}); reinstall smolvm",
                out.stdout.trim()
            ))),
        }
    }

    /// Stages the guest executable and the read-only files; the machine plan.
    fn stage(&self, spec: &LaunchSpec) -> Result<MachinePlan, BackendError> {
        let guest_exe = self.config.guest_exe.as_ref().ok_or_else(|| {
            unavailable(format!(
                "the guest needs a Linux build of bot-bottle; set {GUEST_EXE_ENV} to one"
            ))
        })?;
        let dir = self.bottle_dir(&spec.identity);
        let bin = dir.join("bin");
        let files = dir.join("files");
        for d in [&bin, &files] {
            std::fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        let staged_exe = bin.join("bot-bottle");
        let _ = std::fs::remove_file(&staged_exe);
        if std::fs::hard_link(guest_exe, &staged_exe).is_err() {
            std::fs::copy(guest_exe, &staged_exe).map_err(io_err("copy", guest_exe))?;
        }
        let plan = MachinePlan::new(spec, self.config.image.clone(), &bin, &files, Path::is_dir)?;
        for f in &plan.files {
            if f.stage == f.host {
                continue;
            }
            std::fs::create_dir_all(&f.stage).map_err(io_err("create", &f.stage))?;
            let name = f.source.file_name().unwrap_or_default();
            let to = f.stage.join(name);
            std::fs::copy(&f.host, &to).map_err(io_err("copy", &f.host))?;
        }
        Ok(plan)
    }

    /// Deletes the machine (best effort: used on every failure path and at the end). A failure
    /// is warned about only if the machine is `known` to exist; one a failed `create` may or
    /// may not have left (or whose row smolvm lost) is deleted quietly, so that no warning
    /// about a machine that never was comes before the error that stopped the launch.
    fn discard(&self, machine: &str, known: bool) {
        if let Ok(out) = self.run(plan::delete_args(machine))
            && !out.ok()
        {
            if known {
                tracing::warn!(machine, stderr = %out.stderr.trim(), "smolvm could not delete a machine");
            } else {
                tracing::debug!(machine, stderr = %out.stderr.trim(), "deleting what a failed create may have left");
            }
        }
    }

    /// Creates the machine and confirms what smolvm persisted; deletes it on any doubt.
    fn create_confirmed(&self, plan: &MachinePlan) -> Result<(), BackendError> {
        let out = self.run(plan.create_args())?;
        if !out.ok() {
            // A failed create can leave a row behind (smolvm reserves the name first).
            self.discard(&plan.name, false);
            return Err(cli_failed("smolvm machine create", &out));
        }
        let record = self.cli.machine_record(&plan.name);
        let known = matches!(record, Ok(Some(_)));
        let confirmed = match record {
            Ok(Some(record)) => plan::confirm_record(plan, &record),
            Ok(None) => Err(BackendError::Setup {
                stage: "confirm the machine smolvm persisted".into(),
                message: format!(
                    "smolvm's state database has no row for machine {} after `machine create`; \
                     refusing to start it (its isolation cannot be confirmed)",
                    plan.name
                ),
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = confirmed {
            self.discard(&plan.name, known);
            return Err(e);
        }
        Ok(())
    }

    fn guest_spec(spec: &LaunchSpec, plan: &MachinePlan) -> GuestSpec {
        GuestSpec {
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.workspace.inside.clone(),
            uid: plan::AGENT_ID,
            gid: plan::AGENT_ID,
            pids: spec.resources.pids,
            forwards: spec
                .forwards
                .iter()
                .map(|f| GuestForward {
                    port: f.inside_port,
                    socket: plan::guest_socket(f.inside_port),
                })
                .collect(),
            files: plan
                .files
                .iter()
                .map(|f| GuestFile {
                    source: f.source.clone(),
                    inside: f.inside.clone(),
                })
                .collect(),
            interactive: spec.interactive,
        }
    }

    /// Whether the process that launched a bottle is known and gone.
    fn launcher_gone(&self, identity: &str) -> bool {
        crate::launcher_pid::gone(&self.bottle_dir(identity))
    }

    /// bot-bottle's machines: named `bb-<identity>` and labelled `bot-bottle=<identity>` (the
    /// label `machine create` gave them, which smolvm stores and `ls --json` reports). A
    /// machine of the user's that only looks like one by its name is never listed, stopped
    /// or deleted.
    fn machines(&self) -> Result<Vec<serde_json::Value>, BackendError> {
        let out = self.run(plan::list_args())?;
        if !out.ok() {
            return Err(cli_failed("smolvm machine ls", &out));
        }
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&out.stdout).map_err(|e| BackendError::Setup {
                stage: "smolvm machine ls".into(),
                message: format!("its JSON cannot be read: {e}"),
            })?;
        Ok(list
            .into_iter()
            .filter(|m| {
                m["name"]
                    .as_str()
                    .and_then(plan::identity_of)
                    .is_some_and(|identity| m["labels"][plan::LABEL] == identity)
            })
            .collect())
    }
}

impl Backend for SmolvmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Smolmachines
    }

    fn preflight(&self) -> BackendStatus {
        let mut facts = SmolFacts::gather();
        facts.guest_exe = self.config.guest_exe.is_some();
        facts.image = self.config.image.is_some();
        diagnose_smolmachines(&facts)
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        validate(spec)?;
        crate::workspace_copy::prepare(spec)?;
        Ok(())
    }

    fn launch(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        validate(spec)?;
        if spec.dangerously_run_as_host_root {
            return Err(BackendError::InvalidSpec(
                "dangerously_run_as_host_root has no meaning in a smolmachines VM (the agent is uid 1000 in the guest); remove it".into(),
            ));
        }
        self.check_version()?;
        if self.config.image.is_none() {
            return Err(unavailable(format!(
                "no machine image: set {IMAGE_ENV} to the agent image (e.g. `docker save bot-bottle/agent-claude -o agent.tar`)"
            )));
        }
        let plan = self.stage(spec)?;
        // Who launched it: `cleanup` stops a running machine whose launcher is gone.
        crate::launcher_pid::write(&self.bottle_dir(&spec.identity))?;
        self.create_confirmed(&plan)?;
        let out = self.run(plan::start_args(&plan.name))?;
        if !out.ok() {
            self.discard(&plan.name, true);
            return Err(cli_failed("smolvm machine start", &out));
        }
        let guest = Self::guest_spec(spec, &plan);
        let json = serde_json::to_string(&guest).map_err(|e| BackendError::Process {
            action: "encode the guest spec",
            source: std::io::Error::other(e),
        })?;
        let child = match self
            .cli
            .spawn(&plan::exec_args(&plan.name, spec.interactive, &json), stdio)
        {
            Ok(child) => child,
            Err(e) => {
                self.discard(&plan.name, true);
                return Err(e);
            }
        };
        Ok(Box::new(SmolvmBottle {
            identity: spec.identity.clone(),
            machine: plan.name,
            child,
            cli: self.cli.clone(),
            dir: self.bottle_dir(&spec.identity),
            done: false,
        }))
    }

    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "a smolmachines bottle runs on the terminal of the `start` that launched it; bottle {identity} cannot be attached (stop it with `bot-bottle stop {identity}`)"
        )))
    }

    fn stop(&self, identity: &str, _grace: Duration) -> Result<bool, BackendError> {
        let machine = plan::machine_name(identity);
        let known = self
            .machines()?
            .iter()
            .any(|m| m["name"].as_str() == Some(machine.as_str()));
        if !known {
            return Ok(false);
        }
        // Stopping the machine ends the agent's exec; its launcher then deletes the machine.
        let out = self.run(plan::stop_args(&machine))?;
        if !out.ok() {
            return Err(cli_failed("smolvm machine stop", &out));
        }
        Ok(true)
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        Ok(self
            .machines()?
            .iter()
            .filter_map(|m| {
                let identity = plan::identity_of(m["name"].as_str()?)?.to_owned();
                let running = m["state"] == "running";
                Some(BottleInfo {
                    orphaned: running && self.launcher_gone(&identity),
                    identity,
                    backend: BackendKind::Smolmachines,
                    running,
                    created: m["created_at"].as_u64().unwrap_or(0),
                })
            })
            .collect())
    }

    /// Deletes machines of bot-bottle that are not running (a launcher that died between
    /// create and delete), stops and deletes running ones whose launcher is gone, and removes
    /// the runtime directories of bottles without a machine.
    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        let machines = self.machines()?;
        let mut actions = Vec::new();
        for m in &machines {
            let Some(name) = m["name"].as_str() else {
                continue;
            };
            let identity = plan::identity_of(name).unwrap_or(name);
            if m["state"] == "running" && self.launcher_gone(identity) {
                if !dry_run {
                    let _ = self.run(plan::stop_args(name));
                    self.discard(name, true);
                }
                actions.push(CleanupAction::KilledOrphan {
                    identity: identity.to_owned(),
                });
            } else if m["state"] != "running" {
                if !dry_run {
                    self.discard(name, true);
                }
                actions.push(CleanupAction::RemovedContainer {
                    name: name.to_owned(),
                });
            }
        }
        let live: Vec<String> = machines
            .iter()
            .filter(|m| m["state"] == "running")
            .filter(|m| {
                m["name"]
                    .as_str()
                    .and_then(plan::identity_of)
                    .is_some_and(|id| !self.launcher_gone(id))
            })
            .filter_map(|m| Some(plan::identity_of(m["name"].as_str()?)?.to_owned()))
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.config.runtime_dir()) {
            for e in entries.flatten() {
                let identity = e.file_name().to_string_lossy().into_owned();
                if !live.contains(&identity) {
                    if !dry_run {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                    actions.push(CleanupAction::RemovedRuntimeDir {
                        identity,
                        path: e.path(),
                    });
                }
            }
        }
        Ok(actions)
    }
}

/// A running smolmachines bottle: the agent's `smolvm machine exec`. Dropping it without
/// `wait` kills the exec and deletes the machine.
pub struct SmolvmBottle {
    identity: String,
    machine: String,
    child: Box<dyn CliChild>,
    cli: Arc<dyn SmolvmCli>,
    dir: PathBuf,
    done: bool,
}

impl SmolvmBottle {
    fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        for args in [
            plan::stop_args(&self.machine),
            plan::delete_args(&self.machine),
        ] {
            match self.cli.run(&args) {
                Ok(out) if !out.ok() => {
                    tracing::warn!(machine = %self.machine, stderr = %out.stderr.trim(), "smolvm teardown step failed");
                }
                Err(e) => {
                    tracing::warn!(machine = %self.machine, error = %e, "smolvm teardown step failed")
                }
                Ok(_) => {}
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RunningBottle for SmolvmBottle {
    fn identity(&self) -> &str {
        &self.identity
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
        let out = self.cli.run(&plan::stop_args(&self.machine))?;
        if !out.ok() {
            return Err(cli_failed("smolvm machine stop", &out));
        }
        Ok(())
    }
    fn kill(&mut self) -> Result<(), BackendError> {
        self.child.kill()?;
        self.terminate()
    }
}

impl Drop for SmolvmBottle {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            self.teardown();
        }
    }
}
