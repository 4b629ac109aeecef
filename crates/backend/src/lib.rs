//! Backends: how a bottle is isolated and connected to its sidecars.
//!
//! A [`Backend`] turns a [`LaunchSpec`] (what the agent runs, with which environment, which
//! directories and which sidecar endpoints) into a running bottle. Every backend gives the agent
//! the same contract; they differ only in the isolation mechanism. This crate knows nothing about
//! manifests, egress, the git gate or supervise: the caller (`bot-bottle start`) prepares the
//! home directory, the files and the sidecar sockets and hands over their paths.
//!
//! Implemented here: [`native`] (Linux namespaces + seccomp + Landlock, no daemon),
//! [`docker`] (Docker Engine API), [`qemu`], [`smolvm`] (smolmachines: libkrun micro-VMs through
//! the `smolvm` CLI) and [`apple`] (Apple's `container` CLI); the last two are proven against
//! fakes of their CLIs only.
//! Those modules are the host side (the launcher); what runs inside a bottle is in [`inbottle`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use backend::native::{HelperCommand, NativeBackend, NativeConfig};
//! use backend::{Backend, BottleStdio, Forward, Home, LaunchSpec, ReadOnlyFile, Workspace, WorkspaceMode};
//!
//! // `bot-bottle` dispatches `__bottle-init` to `backend::inbottle::native_helper::helper_main()`.
//! let bot_bottle_home = std::path::PathBuf::from("/home/alice/.bot-bottle");
//! let native = NativeBackend::new(NativeConfig::new(HelperCommand::current_exe()?, &bot_bottle_home));
//! let spec = LaunchSpec {
//!     identity: "claude-1a2b3".into(),
//!     argv: vec!["claude".into()],
//!     env: [("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/home/alice"),
//!           ("HTTPS_PROXY", "http://127.0.0.1:4001")]
//!         .into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
//!     workspace: Workspace { host: "/home/alice/proj".into(), inside: "/home/alice/proj".into(),
//!                            mode: WorkspaceMode::Mount },
//!     home: Home { host: bot_bottle_home.join("state/claude-1a2b3/home"), inside: "/home/alice".into() },
//!     files: vec![ReadOnlyFile { host: bot_bottle_home.join("state/claude-1a2b3/ca/bundle.pem"),
//!                                inside: "/etc/ssl/certs/ca-certificates.crt".into() }],
//!     forwards: vec![Forward { inside_port: 4001,
//!                              host_unix_socket: bot_bottle_home.join("state/claude-1a2b3/egress.sock") }],
//!     interactive: true,
//!     resources: backend::Resources::default(),
//!     dangerously_run_as_host_root: false,
//! };
//! let mut bottle = native.launch(&spec, BottleStdio::inherit())?; // agent is running
//! let exit = bottle.wait()?; // bottle fully gone
//! std::process::exit(exit.code);
//! # }
//! ```

pub mod apple;
pub mod docker;
mod helper_command;
pub mod inbottle;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod launcher_pid;
// The native bottle (namespaces, seccomp, Landlock) and qemu (jailed in a native bottle) are
// Linux-only; every other backend's host side builds on macOS too.
#[cfg(target_os = "linux")]
pub mod native;
pub mod preflight;
#[cfg(target_os = "linux")]
pub mod qemu;
pub mod smolvm;
mod socket_copy;
mod spec;
mod workspace_copy;

pub use helper_command::{HELPER_EXE_NAME, HELPER_SUBCOMMAND, HelperCommand};

/// The removers of what backends record in the home's trash (`state::trash`): the docker
/// backend's ended bottles ([`docker::remove_recorded`]). Whoever empties the trash passes
/// these.
pub const TRASH_REMOVERS: &[state::trash::RecordRemover] = &[state::trash::RecordRemover {
    kind: docker::TRASH_RECORD_KIND,
    remove: docker::remove_recorded,
}];

use std::io::{Read, Write};

pub use preflight::{BackendStatus, Check};
pub use spec::{
    BottleStdio, Forward, Home, LaunchSpec, ReadOnlyFile, Resources, StdioMode, Workspace,
    WorkspaceMode,
};

/// The isolation backends bot-bottle knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Linux namespaces, seccomp and Landlock (this crate's [`native`] module).
    Native,
    /// Docker Engine, optionally with gVisor.
    Docker,
    /// libkrun micro-VMs through `smolvm`.
    Smolmachines,
    /// Apple's `container` CLI on macOS.
    Apple,
    /// A QEMU micro-VM jailed in a native bottle (this crate's [`qemu`] module).
    Qemu,
    /// One pod per bottle on a Kubernetes cluster (the `kubernetes` module, behind the
    /// crate's `kubernetes` feature).
    Kubernetes,
}

impl BackendKind {
    /// Every backend, in the order `doctor` reports them.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Native,
        BackendKind::Docker,
        BackendKind::Smolmachines,
        BackendKind::Apple,
        BackendKind::Qemu,
        BackendKind::Kubernetes,
    ];

    /// Whether this build has the backend ([`open`] can give it). Backends that are only
    /// planned are named but not offered by `doctor`.
    pub fn is_built(self) -> bool {
        if self == BackendKind::Kubernetes {
            return cfg!(feature = "kubernetes");
        }
        true
    }

    /// The name used on the command line and in `$BOT_BOTTLE_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::Docker => "docker",
            BackendKind::Smolmachines => "smolmachines",
            BackendKind::Apple => "apple",
            BackendKind::Qemu => "qemu",
            BackendKind::Kubernetes => "kubernetes",
        }
    }

    /// Parses a backend name as given to `--backend`.
    pub fn parse(name: &str) -> Result<BackendKind, BackendError> {
        BackendKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| BackendError::UnknownBackend(name.to_owned()))
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend used when neither `--backend` nor `$BOT_BOTTLE_BACKEND` names one: `native` on
/// Linux, `apple` on macOS when Apple's `container` CLI is installed, else `docker`.
pub fn default_backend() -> BackendKind {
    if cfg!(target_os = "linux") {
        BackendKind::Native
    } else if cfg!(target_os = "macos") && preflight::find_in_path("container").is_some() {
        BackendKind::Apple
    } else {
        BackendKind::Docker
    }
}

/// What every backend is opened with: the same two facts for all, so that no backend is
/// special-cased by its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// `$BOT_BOTTLE_HOME`: runtime records and the paths a bottle must never see derive
    /// from it.
    pub home: std::path::PathBuf,
    /// The `bot-bottle` executable: it serves the backends' hidden helpers (the native
    /// in-bottle helper, the docker init and reaper), given as a subcommand.
    pub exe: std::path::PathBuf,
}

impl OpenOptions {
    /// A home and the executable that serves the helpers.
    pub fn new(home: impl Into<std::path::PathBuf>, exe: impl Into<std::path::PathBuf>) -> Self {
        OpenOptions {
            home: home.into(),
            exe: exe.into(),
        }
    }

    /// A home, with the running executable serving the helpers (the `bot-bottle` binary).
    pub fn current_exe(home: impl Into<std::path::PathBuf>) -> Result<Self, BackendError> {
        let exe = std::env::current_exe().map_err(|source| BackendError::Io {
            action: "find the bot-bottle executable",
            path: std::path::PathBuf::from("/proc/self/exe"),
            source,
        })?;
        Ok(OpenOptions::new(home, exe))
    }

    /// The native backend's in-bottle helper: the small `bot-bottle-helper` beside the
    /// executable ([`HELPER_EXE_NAME`], built and installed with it), else the executable's
    /// own hidden subcommand, which runs the same code. Every native bottle starts by
    /// executing it, and the small one maps and relocates a few MB instead of all of
    /// `bot-bottle`.
    pub fn native_helper(&self) -> HelperCommand {
        let small = self.exe.with_file_name(HELPER_EXE_NAME);
        if small != self.exe && small.is_file() {
            return HelperCommand {
                exe: small,
                args: vec![HELPER_SUBCOMMAND.into()],
            };
        }
        self.helper(HELPER_SUBCOMMAND)
    }

    /// The executable with one hidden subcommand.
    pub fn helper(&self, subcommand: &str) -> HelperCommand {
        HelperCommand {
            exe: self.exe.clone(),
            args: vec![subcommand.into()],
        }
    }
}

/// Where a backend's bottles reach their sidecar bundle; the launcher asks
/// [`Backend::sidecar_placement`] instead of matching on the backend's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarPlacement {
    /// The launcher runs the bundle as a host process listening on Unix sockets in the
    /// bottle's state directory; the backend forwards the bottle's loopback ports to them
    /// ([`LaunchSpec::forwards`]). Native (and any backend that can forward to host sockets).
    HostProcess,
    /// The bundle runs in a container beside the bottle and listens on TCP ports of the
    /// bottle's internal network, which only the agent shares. Docker.
    Container,
    /// As `Container`, with the sidecar container started by the backend itself from the
    /// launcher's [`docker::SidecarSpec`] and images built by the backend
    /// ([`Backend::build_image`], [`Backend::launch_beside`]). Apple.
    BackendContainer,
}

/// The backend of that kind, ready to use. Backends not in this build answer
/// [`BackendError::Unavailable`] with what to use instead.
///
/// This is the one place that maps a kind to its implementation: a new backend is a new module
/// directory (its host side; anything that runs inside its bottles goes under [`inbottle`])
/// with an `open(&OpenOptions)` function, plus one arm here. Its name is a [`BackendKind`]
/// variant, its machine checks are in [`preflight`], and it says where its sidecars listen
/// with [`Backend::sidecar_placement`].
pub fn open(kind: BackendKind, options: &OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::Native => native::open(options),
        BackendKind::Docker => docker::open(options),
        #[cfg(target_os = "linux")]
        BackendKind::Qemu => qemu::open(options),
        #[cfg(not(target_os = "linux"))]
        BackendKind::Native | BackendKind::Qemu => Err(BackendError::Unavailable {
            backend: kind,
            reason: "it needs Linux (namespaces, seccomp, Landlock); use --backend apple or docker"
                .to_owned(),
        }),
        BackendKind::Smolmachines => smolvm::open(options),
        BackendKind::Apple => apple::open(options),
        #[cfg(feature = "kubernetes")]
        BackendKind::Kubernetes => kubernetes::open(options),
        #[cfg(not(feature = "kubernetes"))]
        BackendKind::Kubernetes => Err(BackendError::Unavailable {
            backend: BackendKind::Kubernetes,
            reason: "this build of bot-bottle has no kubernetes backend (built without the crate's `kubernetes` feature)"
                .to_owned(),
        }),
    }
}

/// How a bottle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BottleExit {
    /// The agent's exit code; `128 + n` when it was killed by signal `n` (as shells report it).
    pub code: i32,
}

/// A bottle known to a backend (running, or left behind by a launcher that died).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BottleInfo {
    /// The bottle identity (`<agent>-<5 hex>`).
    pub identity: String,
    /// The backend that runs it.
    pub backend: BackendKind,
    /// Whether the bottle's processes are alive.
    pub running: bool,
    /// Whether the process that launched it (`bot-bottle start`) is gone while the bottle is
    /// not: `cleanup` kills such bottles.
    pub orphaned: bool,
    /// Seconds since the Unix epoch at launch.
    pub created: u64,
}

/// Something `cleanup` removed (or would remove with `dry_run`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum CleanupAction {
    /// An orphaned bottle whose launcher died was killed.
    KilledOrphan { identity: String },
    /// The runtime directory of a bottle that is no longer running was removed.
    RemovedRuntimeDir {
        identity: String,
        path: std::path::PathBuf,
    },
    /// A leftover container (docker) was removed.
    RemovedContainer { name: String },
    /// A leftover network (docker) was removed.
    RemovedNetwork { name: String },
    /// A leftover volume (docker) was removed.
    RemovedVolume { name: String },
    /// A dangling image built by bot-bottle (docker) was removed.
    RemovedImage { id: String },
    /// A leftover agent-sandbox `Sandbox` (kubernetes) was removed, its pod with it.
    RemovedSandbox { name: String },
}

/// A started bottle. Dropping it without [`RunningBottle::wait`] kills the bottle: a bottle never
/// outlives the value that represents it.
pub trait RunningBottle: Send {
    /// The bottle identity.
    fn identity(&self) -> &str;
    /// The agent's standard input when launched with [`StdioMode::Piped`].
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>>;
    /// The agent's standard output when launched with [`StdioMode::Piped`].
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>>;
    /// The agent's standard error when launched with [`StdioMode::Piped`].
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>>;
    /// Waits for the agent to exit; the whole bottle is gone when this returns.
    fn wait(&mut self) -> Result<BottleExit, BackendError>;
    /// [`RunningBottle::wait`], calling `exited` as soon as the agent's processes are gone and
    /// beside the backend's own teardown of the bottle (native: its cgroups and runtime
    /// directory), so that the caller's teardown (stopping the sidecar bundle) does not wait
    /// for it. The whole bottle is gone, and `exited` has returned, when this returns. The
    /// default runs `exited` after [`RunningBottle::wait`].
    fn wait_then(&mut self, exited: &mut dyn FnMut()) -> Result<BottleExit, BackendError> {
        let waited = self.wait();
        exited();
        waited
    }
    /// Asks the agent to stop (SIGTERM to the agent), without waiting.
    fn terminate(&mut self) -> Result<(), BackendError>;
    /// Kills the whole bottle at once, without waiting.
    fn kill(&mut self) -> Result<(), BackendError>;
}

/// An isolation backend. All methods are synchronous; `launch` returns once the agent's command
/// is executing inside a fully set-up bottle (or with the reason it could not be set up).
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Where this backend's bottles reach their sidecar bundle: a host process the launcher
    /// starts (the default), or a container the backend runs beside the bottle.
    fn sidecar_placement(&self) -> SidecarPlacement {
        SidecarPlacement::HostProcess
    }

    /// Whether this machine can run this backend, with the fix for anything missing.
    fn preflight(&self) -> BackendStatus;

    /// The check `start` runs before each launch: [`Backend::preflight`] unless that is slow
    /// (native's runs a probe bottle; before a launch the kernel's facts are enough, since the
    /// launch itself fails closed on anything they miss).
    fn launch_preflight(&self) -> BackendStatus {
        self.preflight()
    }

    /// What the operator should know before a launch, one line each (starting `warning: `),
    /// given to the launcher's report like its own warnings (qemu: software emulation).
    fn launch_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Starts work the next [`Backend::launch`] needs that depends on the host alone, on a
    /// thread of its own, so that it runs while the launcher waits for something else (native:
    /// the scan of `/etc` and `/opt` for entries to mask, while the sidecar bundle starts).
    /// Refuses nothing and changes nothing; a launch without it does the work itself.
    fn start_host_scan(&self) {}

    /// Validates the spec and does the slow, reusable work before a launch (native: copies the
    /// workspace for [`WorkspaceMode::Copy`] unless the copy exists; docker: builds the image).
    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError>;

    /// Starts the bottle and the agent in it. Fails — and leaves nothing running — when any
    /// part of the isolation cannot be set up: a bottle never runs less isolated than promised.
    fn launch(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError>;

    /// Builds (or finds) the image of a Dockerfile source; the image's reference. Only
    /// backends whose placement is [`SidecarPlacement::BackendContainer`] build images so.
    fn build_image(&self, _source: &docker::ImageSource) -> Result<String, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the {} backend does not build images for `start`",
            self.kind()
        )))
    }

    /// Starts the bottle from `agent_image` (built by [`Backend::build_image`]) beside its
    /// sidecar bundle's container ([`SidecarPlacement::BackendContainer`]).
    fn launch_beside(
        &self,
        spec: &LaunchSpec,
        agent_image: &str,
        sidecar: &docker::SidecarSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        let _ = (spec, agent_image, sidecar, stdio);
        Err(BackendError::Unsupported(format!(
            "the {} backend does not run its sidecar bundle in a container of its own",
            self.kind()
        )))
    }

    /// Reconnects the caller's terminal to a bottle started by another process.
    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError>;

    /// Stops a bottle started by any process: SIGTERM to the agent, SIGKILL to the whole bottle
    /// after `grace`. Returns `false` when no such bottle was running.
    fn stop(&self, identity: &str, grace: std::time::Duration) -> Result<bool, BackendError>;

    /// The bottles this backend knows about.
    fn list(&self) -> Result<Vec<BottleInfo>, BackendError>;

    /// Kills orphaned bottles and removes runtime leftovers of dead ones.
    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError>;

    /// Removes what a bottle keeps outside its state directory for `resume` (the
    /// kubernetes backend's home claim), once its state is gone: the bottle ended cleanly,
    /// was discarded or cleaned up. Refuses while the bottle runs. Nothing for most backends.
    fn discard(&self, _identity: &str) -> Result<Vec<CleanupAction>, BackendError> {
        Ok(Vec::new())
    }
}

/// Errors of the backends. Messages are lowercase and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--backend` named something that does not exist.
    #[error(
        "unknown backend `{0}`; use one of: native, docker, smolmachines, apple, qemu, kubernetes"
    )]
    UnknownBackend(String),
    /// The spec asks for something unsafe or impossible (the message says what and why).
    #[error("invalid bottle spec: {0}")]
    InvalidSpec(String),
    /// This backend cannot run on this machine; the message carries the fix.
    #[error("the {backend} backend is not usable here: {reason}")]
    Unavailable {
        backend: BackendKind,
        reason: String,
    },
    /// The operation is not supported by this backend.
    #[error("{0}")]
    Unsupported(String),
    /// Setting up the isolation failed; nothing of the agent ran.
    #[error("could not set up the bottle ({stage}): {message}")]
    Setup { stage: String, message: String },
    /// An I/O error on a host path.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Starting or signalling the bottle's processes failed.
    #[error("{action}: {source}")]
    Process {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn the_native_helper_is_the_small_executable_beside_bot_bottle_when_it_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("bot-bottle");
        std::fs::write(&exe, b"").unwrap();
        let options = OpenOptions::new(dir.path().join("home"), &exe);
        assert_eq!(
            options.native_helper(),
            HelperCommand {
                exe: exe.clone(),
                args: vec![HELPER_SUBCOMMAND.into()],
            },
            "without bot-bottle-helper: bot-bottle's own subcommand"
        );
        let small = dir.path().join(HELPER_EXE_NAME);
        std::fs::create_dir(&small).unwrap();
        assert_eq!(options.native_helper().exe, exe, "a directory is not it");
        std::fs::remove_dir(&small).unwrap();
        std::fs::write(&small, b"").unwrap();
        assert_eq!(
            options.native_helper(),
            HelperCommand {
                exe: small,
                args: vec![HELPER_SUBCOMMAND.into()],
            }
        );
    }

    #[test]
    fn every_backend_is_opened_with_the_same_options_and_says_where_its_sidecars_listen() {
        let options = OpenOptions::new("/h", "/usr/bin/bot-bottle");
        assert_eq!(
            options.helper("__docker-init"),
            native::HelperCommand {
                exe: "/usr/bin/bot-bottle".into(),
                args: vec!["__docker-init".into()],
            }
        );
        let placements: Vec<(BackendKind, SidecarPlacement)> = [
            BackendKind::Native,
            BackendKind::Docker,
            BackendKind::Smolmachines,
            BackendKind::Apple,
        ]
        .into_iter()
        .map(|kind| {
            let backend = open(kind, &options).unwrap();
            (backend.kind(), backend.sidecar_placement())
        })
        .collect();
        assert_eq!(
            placements,
            vec![
                (BackendKind::Native, SidecarPlacement::HostProcess),
                (BackendKind::Docker, SidecarPlacement::Container),
                (BackendKind::Smolmachines, SidecarPlacement::HostProcess),
                (BackendKind::Apple, SidecarPlacement::BackendContainer),
            ]
        );
    }
}
