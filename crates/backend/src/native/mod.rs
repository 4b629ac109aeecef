//! The native Linux backend: a bottle made of kernel namespaces, with no daemon and no root.
//!
//! Guarantees (each checked by `tests/suite/native.rs` with real namespaces):
//! * user, mount, PID, network, UTS and IPC namespaces; the agent runs as an unprivileged uid
//!   inside (`inside_uid`, default 1000) with no capabilities — also when `start` runs as root;
//! * a filesystem built from nothing (see [`plan`]): read-only system directories with
//!   non-world-readable entries and sockets masked, private `/tmp`, `/var/tmp`, `/run`, own
//!   `/proc` (read-only), minimal read-only `/dev`, the home and workspace writable; host homes,
//!   `/root`, `/var`, `$BOT_BOTTLE_HOME`, `~/.ssh`, the Docker socket and every host socket
//!   directory (`/run`, `/var/run`, `/tmp`, …) absent, sockets under `/etc` and `/opt` masked
//!   (`/usr` is not scanned: packages do not put sockets there); generated `/etc/passwd`,
//!   `/etc/group` and `/etc/hosts` name the agent's user and the bottle's hostname;
//! * a network namespace with only `lo`, on which each [`crate::Forward`] is a loopback port
//!   (`127.0.0.1` and `[::1]`) relayed to its host Unix socket (no route, no DNS, no other
//!   address);
//! * `no_new_privs`, an empty capability bounding set, Landlock (where the kernel has it:
//!   read-only everywhere but home, workspace, `/tmp`, `/var/tmp`, `/dev`; signals and abstract
//!   sockets scoped) and a seccomp deny list (see [`seccomp`]);
//! * the agent's environment is exactly [`LaunchSpec::env`];
//! * the bottle dies with its launcher, even on `kill -9` (PDEATHSIG chain + PID namespace).
//!
//! Any setup step that fails aborts the launch with the stage and reason: the agent never runs
//! less isolated.
//!
//! Why our own code instead of `bwrap` or `hakoniwa`: the forwarder has to run inside the
//! network namespace *after* the mount namespace is built but *before* privileges are dropped,
//! holding `O_PATH` descriptors of sockets that never appear in the bottle's tree. bwrap drops
//! privileges before any code of ours runs inside, so the sockets would have to be bound into
//! the bottle, and it offers no hook to seal its own init; the libraries bring libseccomp (C)
//! or hide the process tree we need for the PDEATHSIG chain, synchronous teardown and exit
//! codes. The price is start-up time: ~30 ms warm against ~15 ms for a minimal raw bwrap
//! (`bench/start`, on a loaded 2-core VM), spent on about 40 mounts, one more process and the
//! scan of `/etc` (~4 ms). The syscalls go through `nix`, the filters through `seccompiler`
//! and `landlock`.
//!
//! The agent is never host root: started by root, the agent's uid inside maps to the workspace's
//! owner or, for a root-owned workspace, to the dedicated unprivileged host uid
//! [`owner::BOTTLE_HOST_ID`], with host uid 0 unmapped; what it must write is handed to that
//! uid first (see [`owner`]). `dangerously_run_as_host_root` keeps the old mapping to host
//! uid 0. Every bottle runs in its own cgroups with the spec's CPU, memory and process limits
//! (see [`cgroup`]), or does not start.

mod bottle;
pub mod cgroup;
pub mod forward;
pub mod os;
pub mod owner;
pub mod plan;
pub mod program;
pub mod seccomp;
mod validate;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::inbottle::native_helper;
pub use crate::inbottle::native_helper::HELPER_SUBCOMMAND;
pub use bottle::NativeBottle;
use bottle::{give_back_terminal, lend_terminal, restore_foreground};
pub use plan::{Secrets, default_system_dirs};

use crate::preflight::{self, BackendStatus};
use crate::spec::{BottleStdio, LaunchSpec, StdioMode, WorkspaceMode};
use crate::{Backend, BackendError, BackendKind, BottleInfo, CleanupAction, RunningBottle};

pub use crate::helper_command::HelperCommand;

/// Configuration of the native backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeConfig {
    /// The helper executable.
    pub helper: HelperCommand,
    /// Where per-bottle runtime records and root mount points live (host), e.g.
    /// `$BOT_BOTTLE_HOME/run/native`.
    pub runtime_dir: PathBuf,
    /// Host directories shown read-only.
    pub system_dirs: Vec<PathBuf>,
    /// What must never be visible.
    pub secrets: Secrets,
    /// The agent's uid and gid inside the bottle.
    pub inside_uid: u32,
    pub inside_gid: u32,
    /// Host device nodes bound writable into the bottle's `/dev` besides the standard ones
    /// (only [`plan::EXTRA_DEVICES`]: the qemu backend's jail gets `/dev/kvm` under KVM).
    pub devices: Vec<PathBuf>,
    /// Where an ended bottle's runtime directory is moved (`$BOT_BOTTLE_HOME/trash`, emptied
    /// in the background: see `state::trash`) instead of being removed file by file while
    /// `start` waits; `None` removes it in place (a runtime directory outside the home).
    pub trash: Option<PathBuf>,
}

impl NativeConfig {
    /// The defaults for a user whose state lives in `bot_bottle_home`: runtime records under
    /// `<bot_bottle_home>/run/native`; the real home (from `$HOME` and the password database),
    /// `/root`, `$BOT_BOTTLE_HOME`, the usual credential directories, the Docker socket and
    /// `/run` never visible.
    pub fn new(helper: HelperCommand, bot_bottle_home: &Path) -> NativeConfig {
        let mut homes: Vec<PathBuf> = Vec::new();
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            homes.push(PathBuf::from(home));
        }
        if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
            homes.push(user.dir);
        }
        homes.push(PathBuf::from("/root"));
        homes.sort();
        homes.dedup();
        let mut never_visible = homes.clone();
        let mut private = vec![bot_bottle_home.to_path_buf()];
        for home in &homes {
            for dir in [
                ".ssh", ".aws", ".config", ".gnupg", ".docker", ".kube", ".netrc",
            ] {
                private.push(home.join(dir));
            }
        }
        never_visible.extend(private.iter().cloned());
        never_visible.extend(
            ["/var/run/docker.sock", "/run/docker.sock", "/run"]
                .into_iter()
                .map(PathBuf::from),
        );
        NativeConfig {
            helper,
            runtime_dir: state::Home::new(bot_bottle_home).runtime_dir("native"),
            system_dirs: default_system_dirs(),
            secrets: Secrets {
                never_visible,
                no_workspace_inside: private,
            },
            inside_uid: 1000,
            inside_gid: 1000,
            devices: Vec::new(),
            trash: Some(state::Home::new(bot_bottle_home).trash_dir()),
        }
    }
}

/// The native backend.
#[derive(Debug, Clone)]
pub struct NativeBackend {
    config: NativeConfig,
    /// The scan of `/etc` and `/opt` that [`Backend::start_host_scan`] starts and the next
    /// [`Backend::launch`] joins ([`os::Prefetched`]); clones share it.
    scan: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<os::Prefetched>>>>,
}

/// What `launch` records about a running bottle (`<runtime_dir>/<identity>/bottle.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    identity: String,
    launcher_pid: i32,
    launcher_start: u64,
    helper_pid: i32,
    helper_start: u64,
    created: u64,
    /// The bottle's cgroups, removed by `cleanup` if the launcher could not.
    #[serde(default)]
    cgroups: Vec<PathBuf>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackendError {
    let path = path.to_path_buf();
    move |source| BackendError::Io {
        action,
        path,
        source,
    }
}

/// The start time (clock ticks since boot) of a live process, to tell it from a reused PID;
/// `None` for a process that is gone or a zombie.
fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // Fields after the command: state is field 3; starttime is field 22.
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn alive(pid: i32, start: u64) -> bool {
    process_start(pid) == Some(start)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn valid_identity(identity: &str) -> bool {
    !identity.is_empty()
        && identity.len() <= 63
        && identity
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !identity.starts_with('-')
}

impl NativeBackend {
    pub fn new(config: NativeConfig) -> NativeBackend {
        NativeBackend {
            config,
            scan: Default::default(),
        }
    }

    /// Starts the scan of the system directories for entries to mask on a thread of its own;
    /// the next [`NativeBackend::scanned_host`] joins it.
    fn start_scan(&self) {
        let started = os::Prefetched::start(&self.config.system_dirs);
        if let Ok(mut scan) = self.scan.lock() {
            *scan = Some(started);
        }
    }

    /// The host the applied plan is made on: [`os::RealHost`] with the scan
    /// [`NativeBackend::start_scan`] started (joined here), or scanned now without one.
    fn scanned_host(&self) -> os::Prefetched {
        os::Prefetched::join(self.scan.lock().ok().and_then(|mut scan| scan.take()))
    }

    pub fn config(&self) -> &NativeConfig {
        &self.config
    }

    fn bottle_dir(&self, identity: &str) -> PathBuf {
        self.config.runtime_dir.join(identity)
    }

    fn read_record(&self, identity: &str) -> Option<Record> {
        let text = std::fs::read_to_string(self.bottle_dir(identity).join("bottle.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn records(&self) -> Result<Vec<Record>, BackendError> {
        let entries = match std::fs::read_dir(&self.config.runtime_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.config.runtime_dir)(e)),
        };
        let mut records: Vec<Record> = entries
            .flatten()
            .filter_map(|e| self.read_record(&e.file_name().to_string_lossy()))
            .collect();
        records.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(records)
    }

    /// Validates, copies the workspace if asked (once), and computes the mount plan on
    /// `host` ([`os::RealHost`] for the plan `launch` applies).
    fn prepare_plan(
        &self,
        spec: &LaunchSpec,
        host: &dyn plan::HostView,
    ) -> Result<Vec<plan::MountOp>, BackendError> {
        self.validate(spec)?;
        if let WorkspaceMode::Copy { into } = &spec.workspace.mode {
            Self::copy_workspace(spec, into)?;
        }
        self.plan_on(spec, host)
    }

    /// The mount plan this backend would apply for `spec`.
    /// Host paths are resolved (symlinks followed) before the secret checks, so a symlinked
    /// workspace cannot smuggle in a directory the checks would refuse.
    pub fn plan(&self, spec: &LaunchSpec) -> Result<Vec<plan::MountOp>, BackendError> {
        self.plan_on(spec, &os::RealHost)
    }

    fn plan_on(
        &self,
        spec: &LaunchSpec,
        host: &dyn plan::HostView,
    ) -> Result<Vec<plan::MountOp>, BackendError> {
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let mut spec = spec.clone();
        spec.workspace.host = real(&spec.workspace.host);
        spec.home.host = real(&spec.home.host);
        for file in &mut spec.files {
            file.host = real(&file.host);
        }
        let mut secrets = self.config.secrets.clone();
        for list in [&mut secrets.never_visible, &mut secrets.no_workspace_inside] {
            let resolved: Vec<PathBuf> = list.iter().map(|p| real(p)).collect();
            list.extend(resolved);
            list.sort();
            list.dedup();
        }
        plan::build(
            &spec,
            &real(&self.workspace_source(&spec)),
            &self.config.system_dirs,
            &secrets,
            host,
        )
        .and_then(|built| plan::with_devices(built, &self.config.devices, host))
        .map_err(|e| BackendError::InvalidSpec(e.to_string()))
    }

    fn copy_workspace(spec: &LaunchSpec, into: &Path) -> Result<(), BackendError> {
        crate::workspace_copy::copy_workspace(&spec.workspace.host, into)
    }

    /// The host ids the agent runs as ([`owner::host_ids`]); when root starts the bottle,
    /// what the agent must write is handed to them first: the home, the workspace copy, a
    /// mounted workspace's root-owned entries, and the sidecar sockets init connects to.
    fn hand_over(&self, spec: &LaunchSpec) -> Result<owner::HostIds, BackendError> {
        use std::os::unix::fs::MetadataExt;
        let launcher = owner::HostIds {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        let meta = std::fs::metadata(&spec.workspace.host)
            .map_err(io_err("read", &spec.workspace.host))?;
        let host = owner::host_ids(
            launcher,
            owner::HostIds {
                uid: meta.uid(),
                gid: meta.gid(),
            },
            spec.dangerously_run_as_host_root,
        );
        if host == launcher {
            return Ok(host);
        }
        let setup = |what: &Path, e: std::io::Error| BackendError::Setup {
            stage: "hand over to the agent's uid".into(),
            message: format!(
                "cannot give {} to host uid {}: {e}; start from a workspace you own, use a workspace copy, or set `dangerously_run_as_host_root: true` in the bottle",
                what.display(),
                host.uid
            ),
        };
        owner::hand_over(&spec.home.host, host, owner::Which::All)
            .map_err(|e| setup(&spec.home.host, e))?;
        match &spec.workspace.mode {
            WorkspaceMode::Copy { into } => {
                owner::hand_over(into, host, owner::Which::All).map_err(|e| setup(into, e))?
            }
            // A user's project: the agent is that user and gets exactly what they have.
            WorkspaceMode::Mount if meta.uid() != 0 => {}
            WorkspaceMode::Mount => {
                owner::hand_over(&spec.workspace.host, host, owner::Which::OwnedByRoot)
                    .map_err(|e| setup(&spec.workspace.host, e))?
            }
        }
        for fwd in &spec.forwards {
            let socket = &fwd.host_unix_socket;
            std::os::unix::fs::lchown(socket, Some(host.uid), Some(host.gid))
                .map_err(|e| setup(socket, e))?;
        }
        Ok(host)
    }

    /// The bottle's cgroups, created with the limits written (`None`: the host cannot enforce
    /// them and the bottle allows that, with a warning).
    fn limits(&self, spec: &LaunchSpec) -> Result<Option<cgroup::CgroupPlan>, BackendError> {
        let facts = cgroup::CgroupFacts::gather();
        match cgroup::plan(&facts, &spec.identity, &spec.resources, &os::RealOs) {
            Ok(plan) => {
                cgroup::apply(&plan, &mut os::RealOs).map_err(|e| BackendError::Setup {
                    stage: "resources".into(),
                    message: format!(
                        "{e}; check that {} is writable",
                        plan.dirs
                            .first()
                            .and_then(|d| d.parent())
                            .unwrap_or(Path::new("/sys/fs/cgroup"))
                            .display()
                    ),
                })?;
                tracing::debug!(identity = %spec.identity, limits = %plan.describe(), "bottle limits");
                Ok(Some(plan))
            }
            Err(e) if spec.resources.allow_unenforced => {
                eprintln!(
                    "bot-bottle: warning: bottle {} runs WITHOUT cpu, memory and pids limits (dangerously_allow_unenforced): {}; {}",
                    spec.identity, e.found, e.fix
                );
                Ok(None)
            }
            Err(e) => Err(BackendError::Setup {
                stage: "resources".into(),
                message: e.to_string(),
            }),
        }
    }

    fn spawn_helper(
        &self,
        req: &native_helper::HelperRequest,
        stdio: BottleStdio,
        limits: Option<&cgroup::CgroupPlan>,
    ) -> Result<(Child, std::fs::File), BackendError> {
        let (req_r, req_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
            BackendError::Process {
                action: "create a pipe",
                source: e.into(),
            }
        })?;
        let (status_r, status_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
                BackendError::Process {
                    action: "create a pipe",
                    source: e.into(),
                }
            })?;
        let to_stdio = |mode: StdioMode| match mode {
            StdioMode::Inherit => Stdio::inherit(),
            StdioMode::Null => Stdio::null(),
            StdioMode::Piped => Stdio::piped(),
        };
        let mut cmd = Command::new(&self.config.helper.exe);
        cmd.args(&self.config.helper.args)
            .env_clear()
            .stdin(to_stdio(stdio.stdin))
            .stdout(to_stdio(stdio.stdout))
            .stderr(to_stdio(stdio.stderr));
        let (r, w) = (req_r.as_raw_fd(), status_w.as_raw_fd());
        // SAFETY: `child_setup` only makes async-signal-safe syscalls; both fds stay open in
        // the parent until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || native_helper::child_setup(r, w));
        }
        let mut child = cmd.spawn().map_err(|source| BackendError::Io {
            action: "start the bottle helper",
            path: self.config.helper.exe.clone(),
            source,
        })?;
        drop(req_r);
        drop(status_w);
        // The helper waits for its request: it joins the cgroups before it starts anything.
        if let Some(plan) = limits
            && let Err(e) = cgroup::attach(plan, child.id(), &mut os::RealOs)
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BackendError::Setup {
                stage: "resources".into(),
                message: format!("cannot move the bottle into its cgroup: {e}"),
            });
        }
        let json = serde_json::to_vec(req).map_err(|e| BackendError::Process {
            action: "encode the bottle request",
            source: std::io::Error::other(e),
        })?;
        let mut req_w = std::fs::File::from(req_w);
        // The helper may have died already; its status tells why.
        let _ = req_w.write_all(&json);
        drop(req_w);
        Ok((child, std::fs::File::from(status_r)))
    }
}

/// Reads the helper's status lines until every copy of the pipe is closed.
fn read_status(status: std::fs::File) -> Vec<native_helper::HelperStatus> {
    BufReader::new(status)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(native_helper::SETUP_FAILED)
}

/// The native backend with the options' executable as its helper ([`crate::open`]).
pub fn open(options: &crate::OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(NativeBackend::new(NativeConfig::new(
        options.native_helper(),
        &options.home,
    ))))
}

impl Backend for NativeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn launch_preflight(&self) -> BackendStatus {
        preflight::native(None)
    }

    fn preflight(&self) -> BackendStatus {
        preflight::native(Some(self))
    }

    /// The scan of `/etc` and `/opt` for entries to mask (2-4 ms warm, ~20 ms cold), which
    /// refuses nothing: started by `start` while the sidecar bundle gets ready, joined by the
    /// next `launch` ([`os::Prefetched`]).
    fn start_host_scan(&self) {
        self.start_scan();
    }

    /// Every check of [`Backend::launch`] that can refuse the spec, and the workspace copy.
    /// The plan made here is thrown away: `launch` makes the one it applies, with the scan of
    /// `/etc` and `/opt` for entries to mask ([`os::ChecksOnly`]), so that scan runs once per
    /// start ([`Backend::start_host_scan`], else in `launch`).
    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        self.prepare_plan(spec, &os::ChecksOnly).map(drop)
    }

    /// Starts the bottle. The helper gets `PR_SET_PDEATHSIG`, which the kernel ties to the
    /// *thread* that spawned it: call `launch` from a thread that lives as long as the bottle
    /// (e.g. `start`'s main thread, not a short-lived blocking-pool thread), or the bottle is
    /// killed when that thread ends.
    fn launch(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        self.validate(spec)?;
        if spec.interactive && !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
            return Err(BackendError::InvalidSpec(
                "an interactive bottle needs a terminal on stdin".into(),
            ));
        }

        let dir = self.bottle_dir(&spec.identity);
        if let Some(record) = self.read_record(&spec.identity)
            && alive(record.helper_pid, record.helper_start)
        {
            return Err(BackendError::InvalidSpec(format!(
                "bottle {} is already running; stop it first",
                spec.identity
            )));
        }
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).map_err(io_err("create", &root))?;
        let planned = self.identity_files(spec, &dir).and_then(|files| {
            let mut full = spec.clone();
            full.files.extend(files);
            self.prepare_plan(&full, &self.scanned_host())
                .map(|plan| (full, plan))
        });
        let (spec, plan) = match planned {
            Ok(planned) => planned,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let spec = &spec;
        let host = match self.hand_over(spec) {
            Ok(host) => host,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };

        let launcher_pid = std::process::id() as i32;
        let mut writable = vec![
            spec.home.inside.clone(),
            spec.workspace.inside.clone(),
            PathBuf::from("/tmp"),
            PathBuf::from("/var/tmp"),
            PathBuf::from("/dev"),
        ];
        writable.dedup();
        let req = native_helper::HelperRequest {
            spec: spec.clone(),
            plan,
            root,
            launcher_pid,
            inside_uid: self.config.inside_uid,
            inside_gid: self.config.inside_gid,
            host,
            writable,
        };
        let limits = match self.limits(spec) {
            Ok(limits) => limits,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let foreground = if spec.interactive {
            nix::unistd::tcgetpgrp(std::io::stdin()).ok()
        } else {
            None
        };
        // The agent reopens its terminal (`/dev/stdout`, `/proc/self/fd/0`) as its own uid:
        // an interactive bottle that root maps to another uid gets the terminal while it runs
        // (as `login` does) and root gets it back at the end.
        let terminal = (spec.interactive && host.uid != nix::unistd::geteuid().as_raw())
            .then(|| lend_terminal(host))
            .flatten();
        let (mut child, status) = match self.spawn_helper(&req, stdio, limits.as_ref()) {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Some(plan) = &limits {
                    cgroup::remove(plan, &mut os::RealOs);
                }
                give_back_terminal(terminal);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };

        let record = Record {
            identity: spec.identity.clone(),
            launcher_pid,
            launcher_start: process_start(launcher_pid).unwrap_or(0),
            helper_pid: child.id() as i32,
            helper_start: process_start(child.id() as i32).unwrap_or(0),
            created: now(),
            cgroups: limits.iter().flat_map(|p| p.dirs.clone()).collect(),
        };
        let record_path = dir.join("bottle.json");
        if let Ok(json) = serde_json::to_vec_pretty(&record) {
            let tmp = dir.join("bottle.json.tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &record_path);
            }
        }

        let lines = read_status(status);
        let started = lines.iter().find_map(|l| match l {
            native_helper::HelperStatus::Started { landlock } => Some(landlock.clone()),
            native_helper::HelperStatus::Failed { .. } => None,
        });
        let failed = lines.into_iter().find_map(|l| match l {
            native_helper::HelperStatus::Failed { stage, message } => Some((stage, message)),
            native_helper::HelperStatus::Started { .. } => None,
        });
        if failed.is_some() || started.is_none() {
            // Synchronous teardown if the outer helper still runs; it may be gone already.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, native_helper::TEARDOWN_SIGNAL);
            let code = child
                .wait()
                .map(exit_code)
                .unwrap_or(native_helper::SETUP_FAILED);
            if let Some(plan) = &limits {
                cgroup::remove(plan, &mut os::RealOs);
            }
            give_back_terminal(terminal);
            let _ = std::fs::remove_dir_all(&dir);
            restore_foreground(foreground);
            let (stage, message) = failed.unwrap_or_else(|| {
                (
                    "start".to_owned(),
                    format!("the bottle helper exited ({code}) before the agent started"),
                )
            });
            return Err(BackendError::Setup { stage, message });
        }
        tracing::debug!(identity = %spec.identity, landlock = ?started, "bottle started");
        Ok(Box::new(NativeBottle {
            identity: spec.identity.clone(),
            child,
            dir,
            foreground,
            landlock: started.unwrap_or_default(),
            limits,
            terminal,
            trash: self.config.trash.clone(),
            done: false,
        }))
    }

    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the native backend runs the agent on the terminal of the `start` that launched it; there is no separate console to attach to bottle {identity}"
        )))
    }

    fn stop(&self, identity: &str, grace: Duration) -> Result<bool, BackendError> {
        let Some(record) = self.read_record(identity) else {
            return Ok(false);
        };
        if !alive(record.helper_pid, record.helper_start) {
            return Ok(false);
        }
        let pid = nix::unistd::Pid::from_raw(record.helper_pid);
        let signal = |sig| {
            nix::sys::signal::kill(pid, sig).map_err(|e| BackendError::Process {
                action: "signal the bottle",
                source: e.into(),
            })
        };
        let gone_within = |limit: Duration| {
            let deadline = std::time::Instant::now() + limit;
            loop {
                if !alive(record.helper_pid, record.helper_start) {
                    return true;
                }
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        signal(nix::sys::signal::Signal::SIGTERM)?;
        if gone_within(grace) {
            return Ok(true);
        }
        signal(native_helper::TEARDOWN_SIGNAL)?;
        if !gone_within(Duration::from_secs(2)) {
            signal(nix::sys::signal::Signal::SIGKILL)?;
        }
        Ok(true)
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| {
                let running = alive(r.helper_pid, r.helper_start);
                BottleInfo {
                    identity: r.identity,
                    backend: BackendKind::Native,
                    running,
                    orphaned: running && !alive(r.launcher_pid, r.launcher_start),
                    created: r.created,
                }
            })
            .collect())
    }

    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        let mut actions = Vec::new();
        for info in self.list()? {
            let dir = self.bottle_dir(&info.identity);
            if info.orphaned {
                if !dry_run {
                    self.stop(&info.identity, Duration::from_secs(2))?;
                }
                actions.push(CleanupAction::KilledOrphan {
                    identity: info.identity.clone(),
                });
            } else if info.running {
                continue;
            }
            if !dry_run {
                if let Some(record) = self.read_record(&info.identity) {
                    cgroup::remove_dirs(&record.cgroups, &mut os::RealOs);
                }
                // The root mount point is an empty directory on the host (the mounts live only
                // in the bottle's namespace).
                std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            }
            actions.push(CleanupAction::RemovedRuntimeDir {
                identity: info.identity,
                path: dir,
            });
        }
        Ok(actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_hostname_safe() {
        assert!(valid_identity("claude-1a2b3"));
        assert!(!valid_identity("Claude"));
        assert!(!valid_identity("a/b"));
        assert!(!valid_identity(""));
        assert!(!valid_identity("-x"));
    }

    #[test]
    fn start_time_of_this_process_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_start(pid).is_some());
        assert!(alive(pid, process_start(pid).unwrap()));
        assert!(!alive(pid, process_start(pid).unwrap() + 1));
    }

    /// Issue 22: `start` scans `/etc` and `/opt` while the sidecar bundle starts
    /// ([`Backend::start_host_scan`]); the plan `launch` applies must be the plan made with
    /// the scan where it was before, masks and all.
    #[test]
    fn the_plan_made_with_the_scan_started_early_is_the_plan_made_without() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("bot-bottle-home");
        let workspace = dir.path().join("project");
        let home = state.join("state").join("home");
        for d in [&state, &workspace, &home] {
            std::fs::create_dir_all(d).unwrap();
        }
        let helper = HelperCommand {
            exe: "/x".into(),
            args: vec![],
        };
        let backend = NativeBackend::new(NativeConfig::new(helper, &state));
        let spec = LaunchSpec {
            identity: "demo-1a2b3".into(),
            argv: vec!["true".into()],
            env: Default::default(),
            workspace: crate::Workspace {
                host: workspace,
                inside: "/workspace".into(),
                mode: WorkspaceMode::Mount,
            },
            home: crate::Home {
                host: home,
                inside: "/home/agent".into(),
            },
            files: vec![],
            forwards: vec![],
            interactive: false,
            resources: crate::Resources::default(),
            dangerously_run_as_host_root: false,
        };

        let without = backend.plan_on(&spec, &os::RealHost).unwrap();
        backend.start_host_scan();
        let with = backend.plan_on(&spec, &backend.scanned_host()).unwrap();
        assert_eq!(with, without);
        // Joined once: a later launch without a new scan scans for itself, not from this one.
        assert!(backend.scan.lock().unwrap().is_none());
        assert_eq!(
            backend.plan_on(&spec, &backend.scanned_host()).unwrap(),
            without
        );

        // Not equal by being empty: the masks are the host's unshareable entries (as root in
        // a container, at least `/etc/shadow`).
        let masks: Vec<PathBuf> = with
            .iter()
            .filter_map(|op| match op {
                plan::MountOp::MaskFile { target } | plan::MountOp::MaskDir { target } => {
                    Some(target.clone())
                }
                _ => None,
            })
            .collect();
        let mut expected: Vec<PathBuf> = ["/etc", "/opt"]
            .into_iter()
            .filter(|d| Path::new(d).is_dir() && !Path::new(d).is_symlink())
            .flat_map(|d| plan::HostView::unshareable_entries(&os::RealHost, Path::new(d)))
            .map(|(path, _)| path)
            .collect();
        expected.sort();
        let mut sorted = masks.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
        println!("{} masks in the plan", masks.len());
    }

    #[test]
    fn default_config_hides_home_state_and_credentials() {
        let cfg = NativeConfig::new(
            HelperCommand {
                exe: "/x".into(),
                args: vec![],
            },
            Path::new("/h/.bot-bottle"),
        );
        assert_eq!(cfg.runtime_dir, PathBuf::from("/h/.bot-bottle/run/native"));
        for p in ["/root", "/h/.bot-bottle", "/run", "/var/run/docker.sock"] {
            assert!(
                cfg.secrets.never_visible.contains(&PathBuf::from(p)),
                "{p} missing"
            );
        }
        assert!(
            cfg.secrets
                .no_workspace_inside
                .contains(&PathBuf::from("/root/.ssh"))
        );
    }
}
