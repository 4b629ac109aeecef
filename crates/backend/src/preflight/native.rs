//! Preflight of the native backend: user namespaces, seccomp, Landlock, cgroups, and a real
//! probe bottle running `true`.

use std::path::Path;

use super::{BackendStatus, Check, read_number};
use crate::BackendKind;
use crate::native::NativeBackend;

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
