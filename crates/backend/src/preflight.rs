//! Preflight: can this machine run a backend, and if not, what exactly fixes it.
//!
//! Facts are gathered from the running system ([`NativeFacts::gather`], …) and judged by pure
//! functions ([`diagnose_native`], …) so every diagnosis and its fix is unit-tested. For the
//! native backend the decisive fact is a real probe: a bottle running `true`.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use crate::BackendKind;
use crate::docker::runtime::{Registered, RuntimeChoice};
use crate::native::NativeBackend;

/// The verdict for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub backend: BackendKind,
    /// Whether `start --backend <this>` can work here.
    pub usable: bool,
    /// Every check made, in order.
    pub checks: Vec<Check>,
}

/// One check of a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `user namespaces`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// The exact fix, when it failed.
    pub fix: Option<String>,
    /// Whether a failure makes the backend unusable (otherwise it is a warning).
    pub required: bool,
}

impl Check {
    fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok: true,
            detail: detail.into(),
            fix: None,
            required: true,
        }
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            required: true,
        }
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            required: false,
            ..Check::fail(name, detail, fix)
        }
    }
}

impl BackendStatus {
    fn from_checks(backend: BackendKind, checks: Vec<Check>) -> BackendStatus {
        BackendStatus {
            backend,
            usable: checks.iter().all(|c| c.ok || !c.required),
            checks,
        }
    }

    /// One line for `doctor`: `native: usable (…)` or `native: not usable: … ; fix: …`.
    pub fn line(&self) -> String {
        let failed: Vec<&Check> = self.checks.iter().filter(|c| !c.ok && c.required).collect();
        let warnings: Vec<&Check> = self
            .checks
            .iter()
            .filter(|c| !c.ok && !c.required)
            .collect();
        let mut line = if self.usable {
            let passed: Vec<String> = self
                .checks
                .iter()
                .filter(|c| c.ok)
                .map(|c| c.detail.clone())
                .collect();
            format!("{}: usable ({})", self.backend, passed.join(", "))
        } else {
            let problems: Vec<String> = failed
                .iter()
                .map(|c| match &c.fix {
                    Some(fix) => format!("{}; fix: {fix}", c.detail),
                    None => c.detail.clone(),
                })
                .collect();
            format!("{}: not usable: {}", self.backend, problems.join("; "))
        };
        for w in warnings {
            line.push_str(&format!("; warning: {}", w.detail));
            if let Some(fix) = &w.fix {
                line.push_str(&format!(" (fix: {fix})"));
            }
        }
        line
    }
}

/// Finds an executable on `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What the native backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NativeFacts {
    pub is_linux: bool,
    pub is_root: bool,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<i64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+).
    pub apparmor_restrict_userns: Option<i64>,
    /// `kernel.unprivileged_userns_clone` (older Debian kernels).
    pub unprivileged_userns_clone: Option<i64>,
    /// Why we think this runs inside a container, if we do.
    pub container: Option<String>,
    pub seccomp: bool,
    /// Landlock ABI version; 0 or less when unavailable.
    pub landlock_abi: i64,
    /// The result of a real bottle running `true`, when one was attempted.
    pub probe: Option<Result<String, String>>,
    /// Where a bottle's resource limits would go (`cgroup v1: …`), or why they cannot be
    /// enforced here (with the fix); `None` when not looked at.
    pub cgroups: Option<Result<String, crate::native::cgroup::CgroupError>>,
}

impl NativeFacts {
    /// Reads the facts from this machine; runs a probe bottle when `backend` is given.
    pub fn gather(backend: Option<&NativeBackend>) -> NativeFacts {
        let mut facts = NativeFacts {
            is_linux: cfg!(target_os = "linux"),
            is_root: nix::unistd::geteuid().is_root(),
            max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict_userns: read_number(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
            unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone"),
            container: detect_container(),
            seccomp: std::fs::read_to_string("/proc/self/status")
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:"))),
            landlock_abi: landlock_abi(),
            probe: None,
            cgroups: Some(
                crate::native::cgroup::plan(
                    &crate::native::cgroup::CgroupFacts::gather(),
                    "doctor",
                    &crate::spec::Resources::default(),
                    &crate::native::os::RealOs,
                )
                .map(|plan| {
                    let mut line = plan.describe();
                    line = line.replace("bot-bottle-doctor", "bot-bottle-<bottle>");
                    line.replace("/doctor", "/<bottle>")
                }),
            ),
        };
        if let Some(backend) = backend {
            facts.probe = Some(probe(backend));
        }
        facts
    }
}

fn detect_container() -> Option<String> {
    if Path::new("/.dockerenv").exists() {
        return Some("/.dockerenv exists".into());
    }
    if Path::new("/run/.containerenv").exists() {
        return Some("/run/.containerenv exists".into());
    }
    if let Some(c) = std::env::var_os("container") {
        return Some(format!("$container={}", c.to_string_lossy()));
    }
    None
}

/// The kernel's Landlock ABI version (`landlock_create_ruleset` with the version flag).
pub fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the kernel only
    // returns a number; no memory is accessed.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

/// Runs `true` in a real bottle with scratch directories.
fn probe(backend: &NativeBackend) -> Result<String, String> {
    use crate::spec::{BottleStdio, Home, LaunchSpec, StdioMode, Workspace, WorkspaceMode};
    use crate::{Backend, RunningBottle};
    let scratch = std::env::temp_dir().join(format!("bot-bottle-doctor-{}", std::process::id()));
    let workspace = scratch.join("workspace");
    let home = scratch.join("home");
    let result = (|| {
        for dir in [&workspace, &home] {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let spec = LaunchSpec {
            identity: format!("doctor-{:x}", std::process::id()),
            argv: vec!["true".into()],
            env: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into(),
            workspace: Workspace {
                host: workspace.clone(),
                inside: "/workspace".into(),
                mode: WorkspaceMode::Mount,
            },
            home: Home {
                host: home.clone(),
                inside: "/home/agent".into(),
            },
            files: vec![],
            forwards: vec![],
            interactive: false,
            // The probe checks the namespaces; cgroups are their own check.
            resources: crate::spec::Resources {
                allow_unenforced: true,
                ..Default::default()
            },
            dangerously_run_as_host_root: false,
        };
        let stdio = BottleStdio {
            stdin: StdioMode::Null,
            stdout: StdioMode::Null,
            stderr: StdioMode::Null,
        };
        let mut bottle: Box<dyn RunningBottle> =
            backend.launch(&spec, stdio).map_err(|e| e.to_string())?;
        let exit = bottle.wait().map_err(|e| e.to_string())?;
        if exit.code == 0 {
            Ok("a test bottle ran".to_owned())
        } else {
            Err(format!(
                "a test bottle running `true` exited with {}",
                exit.code
            ))
        }
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Judges the native backend.
pub fn diagnose_native(f: &NativeFacts) -> BackendStatus {
    let kind = BackendKind::Native;
    if !f.is_linux {
        return BackendStatus::from_checks(
            kind,
            vec![Check::fail(
                "platform",
                "the native backend needs Linux",
                "use --backend docker (or apple on macOS)",
            )],
        );
    }
    let mut checks = Vec::new();
    let userns = if f.max_user_namespaces == Some(0) {
        Check::fail(
            "user namespaces",
            "user namespaces are disabled (user.max_user_namespaces=0)",
            "sudo sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/)",
        )
    } else if !f.is_root && f.unprivileged_userns_clone == Some(0) {
        Check::fail(
            "user namespaces",
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0)",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d/)",
        )
    } else if !f.is_root && f.apparmor_restrict_userns == Some(1) {
        Check::fail(
            "user namespaces",
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)",
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor profile granting `userns` to bot-bottle",
        )
    } else {
        Check::pass("user namespaces", "user namespaces")
    };
    checks.push(userns);
    checks.push(if f.seccomp {
        Check::pass("seccomp", "seccomp")
    } else {
        Check::fail(
            "seccomp",
            "the kernel has no seccomp filter support",
            "use a kernel built with CONFIG_SECCOMP_FILTER (every distribution kernel has it)",
        )
    });
    checks.push(if f.landlock_abi > 0 {
        Check::pass("landlock", format!("landlock ABI {}", f.landlock_abi))
    } else {
        Check::warn(
            "landlock",
            "Landlock is not available; bottles run without this extra layer",
            "boot a kernel >= 5.13 with `landlock` in the lsm= list (e.g. lsm=landlock,lockdown,yama,apparmor)",
        )
    });
    match &f.cgroups {
        Some(Ok(detail)) => checks.push(Check::pass("resource limits", detail.clone())),
        Some(Err(error)) => checks.push(Check::fail(
            "resource limits",
            format!(
                "bottles cannot get cpu, memory and pids limits here: {}",
                error.found
            ),
            format!(
                "{}, or set `resources: {{dangerously_allow_unenforced: true}}` in the bottle to start without limits",
                error.fix
            ),
        )),
        None => {}
    }
    match &f.probe {
        Some(Ok(detail)) => checks.push(Check::pass("probe", detail.clone())),
        Some(Err(error)) => {
            let fix = if let Some(why) = &f.container {
                format!(
                    "this looks like a container ({why}), which usually forbids nested namespaces; run bot-bottle on the host, or give the container `--security-opt seccomp=unconfined --security-opt apparmor=unconfined` and an unmasked /proc, or use --backend docker from the host"
                )
            } else {
                "see the error above; `unshare -Urmpnf --mount-proc true` shows whether the kernel allows these namespaces".to_owned()
            };
            checks.push(Check::fail(
                "probe",
                format!("a test bottle failed: {error}"),
                fix,
            ));
        }
        None => {}
    }
    BackendStatus::from_checks(kind, checks)
}

/// What the docker backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerFacts {
    pub cli: Option<PathBuf>,
    /// The daemon socket looked at (`$DOCKER_HOST` or `/var/run/docker.sock`).
    pub socket: PathBuf,
    /// Whether a daemon answered on its socket (`None`: no socket found).
    pub daemon: Option<bool>,
    /// Whether this build has the docker backend.
    pub built: bool,
    /// The OCI runtimes the daemon lists, with their arguments (`runsc` in host network mode
    /// means gVisor is used automatically: see [`crate::docker::runtime`]).
    pub runtimes: BTreeMap<String, Registered>,
    /// The daemon's default runtime (`DefaultRuntime`, `runc` unless configured).
    pub default_runtime: String,
    /// What `BOT_BOTTLE_DOCKER_RUNTIME` asks for.
    pub choice: RuntimeChoice,
}

impl DockerFacts {
    pub fn gather() -> DockerFacts {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let info = socket.exists().then(|| docker_info(&socket));
        DockerFacts {
            cli: find_in_path("docker"),
            socket: socket.clone(),
            daemon: info.as_ref().map(Option::is_some),
            built: true,
            runtimes: info
                .clone()
                .flatten()
                .and_then(|info| {
                    info.get("Runtimes").and_then(|r| r.as_object()).map(|r| {
                        r.iter()
                            .map(|(name, r)| (name.clone(), registered(r)))
                            .collect()
                    })
                })
                .unwrap_or_default(),
            default_runtime: info
                .as_ref()
                .and_then(|i| i.as_ref())
                .and_then(|i| i.get("DefaultRuntime"))
                .and_then(|r| r.as_str())
                .unwrap_or("runc")
                .to_owned(),
            choice: RuntimeChoice::from_env(),
        }
    }
}

/// One entry of `/info`'s `Runtimes` (`{"path": ..., "runtimeArgs": [...]}`).
fn registered(value: &serde_json::Value) -> Registered {
    Registered {
        path: value
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_owned(),
        args: value
            .get("runtimeArgs")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `GET /info` on the daemon socket (a plain HTTP/1.0 request: no client runtime needed for a
/// preflight); `None` when the daemon does not answer with JSON.
fn docker_info(socket: &Path) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let timeout = Some(std::time::Duration::from_secs(5));
    stream.set_read_timeout(timeout).ok()?;
    stream.set_write_timeout(timeout).ok()?;
    stream
        .write_all(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

pub fn diagnose_docker(f: &DockerFacts) -> BackendStatus {
    let mut checks = vec![
        match &f.cli {
            Some(p) => Check::pass("docker cli", format!("docker at {}", p.display())),
            None => Check::fail(
                "docker cli",
                "docker is not installed",
                "sudo apt-get install docker.io",
            ),
        },
        match f.daemon {
            Some(true) => Check::pass("dockerd", "dockerd running"),
            Some(false) => Check::fail(
                "dockerd",
                format!(
                    "the Docker socket {} exists but dockerd does not answer (or you may not use it)",
                    f.socket.display()
                ),
                "sudo systemctl start docker; and sudo usermod -aG docker $USER (then log in again)",
            ),
            None => Check::fail(
                "dockerd",
                format!(
                    "dockerd is not running (no socket at {})",
                    f.socket.display()
                ),
                "sudo systemctl start docker, or point DOCKER_HOST at its socket",
            ),
        },
    ];
    if f.daemon == Some(true) {
        match crate::docker::runtime::choose(&f.choice, &f.runtimes, &f.default_runtime) {
            Ok(chosen) => {
                checks.push(Check::pass("runtime", chosen.summary));
                if let Some((why, fix)) = chosen.warning {
                    checks.push(Check::warn("gvisor", why, fix));
                }
            }
            Err(refused) => checks.push(Check::fail("runtime", refused.reason, refused.fix)),
        }
    }
    if !f.built {
        checks.push(Check::fail(
            "backend",
            "this build of bot-bottle has no docker backend yet",
            "use --backend native",
        ));
    }
    BackendStatus::from_checks(BackendKind::Docker, checks)
}

/// What the smolmachines backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmolFacts {
    pub is_linux: bool,
    pub smolvm: Option<PathBuf>,
    /// `None`: no `/dev/kvm`; `Some(false)`: present but not read-writable by us.
    pub kvm: Option<bool>,
    pub built: bool,
}

impl SmolFacts {
    pub fn gather() -> SmolFacts {
        let kvm = Path::new("/dev/kvm").exists().then(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok()
        });
        SmolFacts {
            is_linux: cfg!(target_os = "linux"),
            smolvm: find_in_path("smolvm"),
            kvm,
            built: false,
        }
    }
}

pub fn diagnose_smolmachines(f: &SmolFacts) -> BackendStatus {
    let mut checks = vec![match &f.smolvm {
        Some(p) => Check::pass("smolvm", format!("smolvm at {}", p.display())),
        None => Check::fail(
            "smolvm",
            "smolvm not found on PATH",
            "install smolvm and make sure `smolvm` is on PATH",
        ),
    }];
    if f.is_linux {
        checks.push(match f.kvm {
            Some(true) => Check::pass("kvm", "/dev/kvm usable"),
            Some(false) => Check::fail(
                "kvm",
                "/dev/kvm exists but you cannot open it",
                "sudo usermod -aG kvm $USER (then log in again)",
            ),
            None => Check::fail(
                "kvm",
                "/dev/kvm is missing",
                "enable hardware virtualization (VT-x/AMD-V, or nested virtualization in a VM) and load kvm_intel or kvm_amd",
            ),
        });
    }
    if !f.built {
        checks.push(Check::fail(
            "backend",
            "this build of bot-bottle has no smolmachines backend yet",
            "use --backend native",
        ));
    }
    BackendStatus::from_checks(BackendKind::Smolmachines, checks)
}

pub fn diagnose_apple(is_macos: bool, container_cli: Option<&Path>) -> BackendStatus {
    let checks = if !is_macos {
        vec![Check::fail(
            "platform",
            "only available on macOS",
            "use --backend native on Linux",
        )]
    } else {
        vec![match container_cli {
            Some(p) => Check::pass("container cli", format!("container at {}", p.display())),
            None => Check::fail(
                "container cli",
                "Apple's `container` CLI is not installed",
                "install it from github.com/apple/container and run `container system start`",
            ),
        }]
    };
    BackendStatus::from_checks(BackendKind::Apple, checks)
}

/// The native backend's status on this machine (with a probe bottle when `backend` is given).
pub fn native(backend: Option<&NativeBackend>) -> BackendStatus {
    diagnose_native(&NativeFacts::gather(backend))
}

/// Every backend's status, in [`BackendKind::ALL`] order.
pub fn all(native_backend: Option<&NativeBackend>) -> Vec<BackendStatus> {
    vec![
        native(native_backend),
        diagnose_docker(&DockerFacts::gather()),
        diagnose_smolmachines(&SmolFacts::gather()),
        diagnose_apple(
            cfg!(target_os = "macos"),
            find_in_path("container").as_deref(),
        ),
        crate::qemu::preflight::status(),
    ]
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn good() -> NativeFacts {
        NativeFacts {
            is_linux: true,
            is_root: false,
            max_user_namespaces: Some(15000),
            apparmor_restrict_userns: None,
            unprivileged_userns_clone: None,
            container: None,
            seccomp: true,
            landlock_abi: 6,
            probe: Some(Ok("a test bottle ran".into())),
            cgroups: Some(Ok("cgroup v2: /sys/fs/cgroup/bot-bottle/<bottle>".into())),
        }
    }

    #[test]
    fn healthy_native_is_usable() {
        let status = diagnose_native(&good());
        assert!(status.usable);
        assert_eq!(
            status.line(),
            "native: usable (user namespaces, seccomp, landlock ABI 6, cgroup v2: /sys/fs/cgroup/bot-bottle/<bottle>, a test bottle ran)"
        );
    }

    #[test]
    fn apparmor_restriction_names_the_sysctl() {
        let f = NativeFacts {
            apparmor_restrict_userns: Some(1),
            probe: Some(Err(
                "could not set up the bottle (namespaces): unshare: EPERM".into(),
            )),
            ..good()
        };
        let status = diagnose_native(&f);
        assert!(!status.usable);
        assert_eq!(
            status.line(),
            "native: not usable: AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); fix: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor profile granting `userns` to bot-bottle; a test bottle failed: could not set up the bottle (namespaces): unshare: EPERM; fix: see the error above; `unshare -Urmpnf --mount-proc true` shows whether the kernel allows these namespaces"
        );
    }

    #[test]
    fn apparmor_restriction_does_not_apply_to_root() {
        let f = NativeFacts {
            is_root: true,
            apparmor_restrict_userns: Some(1),
            ..good()
        };
        assert!(diagnose_native(&f).usable);
    }

    #[test]
    fn zero_user_namespaces_is_fatal_even_for_root() {
        let f = NativeFacts {
            is_root: true,
            max_user_namespaces: Some(0),
            ..good()
        };
        let status = diagnose_native(&f);
        assert!(!status.usable);
        assert_eq!(
            status.checks[0].fix.as_deref(),
            Some("sudo sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/)")
        );
    }

    #[test]
    fn container_probe_failure_explains_nesting() {
        let f = NativeFacts {
            container: Some("/.dockerenv exists".into()),
            probe: Some(Err("mount proc: EPERM".into())),
            ..good()
        };
        let status = diagnose_native(&f);
        assert!(!status.usable);
        assert!(
            status
                .line()
                .contains("this looks like a container (/.dockerenv exists)")
        );
    }

    #[test]
    fn missing_landlock_is_a_warning() {
        let f = NativeFacts {
            landlock_abi: -1,
            ..good()
        };
        let status = diagnose_native(&f);
        assert!(status.usable);
        assert_eq!(
            status.line(),
            "native: usable (user namespaces, seccomp, cgroup v2: /sys/fs/cgroup/bot-bottle/<bottle>, a test bottle ran); warning: Landlock is not available; bottles run without this extra layer (fix: boot a kernel >= 5.13 with `landlock` in the lsm= list (e.g. lsm=landlock,lockdown,yama,apparmor))"
        );
    }

    #[test]
    fn unenforceable_limits_make_native_unusable_with_the_fix() {
        let f = NativeFacts {
            cgroups: Some(Err(crate::native::cgroup::CgroupError {
                found: "no cgroup v2 mount; no cgroup v1 hierarchy for pids".into(),
                fix: "mount them".into(),
            })),
            ..good()
        };
        let status = diagnose_native(&f);
        assert!(!status.usable);
        assert_eq!(
            status.checks.iter().find(|c| c.name == "resource limits"),
            Some(&Check {
                name: "resource limits".into(),
                ok: false,
                detail: "bottles cannot get cpu, memory and pids limits here: no cgroup v2 \
                         mount; no cgroup v1 hierarchy for pids"
                    .into(),
                fix: Some(
                    "mount them, or set `resources: {dangerously_allow_unenforced: true}` in \
                     the bottle to start without limits"
                        .into()
                ),
                required: true,
            })
        );
    }

    #[test]
    fn missing_seccomp_is_fatal() {
        let f = NativeFacts {
            seccomp: false,
            ..good()
        };
        assert!(!diagnose_native(&f).usable);
    }

    #[test]
    fn docker_lines() {
        let none = diagnose_docker(&DockerFacts {
            socket: "/var/run/docker.sock".into(),
            ..DockerFacts::default()
        });
        assert_eq!(
            none.line(),
            "docker: not usable: docker is not installed; fix: sudo apt-get install docker.io; dockerd is not running (no socket at /var/run/docker.sock); fix: sudo systemctl start docker, or point DOCKER_HOST at its socket; this build of bot-bottle has no docker backend yet; fix: use --backend native"
        );
        let facts = |runtimes: &[(&str, &[&str])], choice: RuntimeChoice| DockerFacts {
            cli: Some("/usr/bin/docker".into()),
            socket: "/var/run/docker.sock".into(),
            daemon: Some(true),
            built: true,
            runtimes: runtimes
                .iter()
                .map(|(name, args)| {
                    (
                        (*name).to_owned(),
                        Registered {
                            path: format!("/usr/bin/{name}"),
                            args: args.iter().map(|a| (*a).to_owned()).collect(),
                        },
                    )
                })
                .collect(),
            default_runtime: "runc".into(),
            choice,
        };
        let gvisor: &[(&str, &[&str])] = &[("runc", &[]), ("runsc", &["--network=host"])];
        assert_eq!(
            diagnose_docker(&facts(gvisor, RuntimeChoice::Auto)).line(),
            "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runsc (gVisor))"
        );
        assert_eq!(
            diagnose_docker(&facts(gvisor, RuntimeChoice::Named("runc".into()))).line(),
            "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runc (BOT_BOTTLE_DOCKER_RUNTIME=runc)); warning: gVisor (runsc) is registered but BOT_BOTTLE_DOCKER_RUNTIME=runc opts out of it: the agent shares the host's kernel (fix: unset BOT_BOTTLE_DOCKER_RUNTIME to run agents under gVisor)"
        );
        assert_eq!(
            diagnose_docker(&facts(&[("runc", &[])], RuntimeChoice::Auto)).line(),
            "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runc (the daemon's default)); warning: gVisor (runsc) is not registered with dockerd; bottles use the daemon's default runtime (fix: sudo apt-get install runsc, add {\"runtimes\": {\"runsc\": {\"path\": \"/usr/bin/runsc\", \"runtimeArgs\": [\"--network=host\"]}}} to /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)); scripts/docker/start-dockerd does both)"
        );
        assert_eq!(
            diagnose_docker(&facts(
                &[("runc", &[]), ("runsc", &[])],
                RuntimeChoice::Auto
            ))
            .line(),
            "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runc (the daemon's default)); warning: gVisor (runsc) is registered with --network=sandbox, where its own network stack would bypass the bottle's firewall; bottles use the daemon's default runtime (fix: add \"runtimeArgs\": [\"--network=host\"] to runsc in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)))"
        );
        // Asked for by name, a gVisor the firewall does not cover is refused (fail closed).
        assert_eq!(
            diagnose_docker(&facts(
                &[("runc", &[]), ("runsc", &[])],
                RuntimeChoice::Named("runsc".into())
            ))
            .line(),
            "docker: not usable: BOT_BOTTLE_DOCKER_RUNTIME names `runsc` (gVisor), registered with --network=sandbox: gVisor's own network stack would send the agent's packets past the bottle's firewall; fix: add \"runtimeArgs\": [\"--network=host\"] to `runsc` in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)), or set BOT_BOTTLE_DOCKER_RUNTIME=runc"
        );
    }

    #[test]
    fn smolmachines_and_apple_lines() {
        let smol = diagnose_smolmachines(&SmolFacts {
            is_linux: true,
            smolvm: None,
            kvm: None,
            built: true,
        });
        assert_eq!(
            smol.line(),
            "smolmachines: not usable: smolvm not found on PATH; fix: install smolvm and make sure `smolvm` is on PATH; /dev/kvm is missing; fix: enable hardware virtualization (VT-x/AMD-V, or nested virtualization in a VM) and load kvm_intel or kvm_amd"
        );
        assert_eq!(
            diagnose_apple(false, None).line(),
            "apple: not usable: only available on macOS; fix: use --backend native on Linux"
        );
    }
}
