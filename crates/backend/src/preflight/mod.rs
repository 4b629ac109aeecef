//! Preflight: can this machine run a backend, and if not, what exactly fixes it.
//!
//! Facts are gathered from the running system ([`NativeFacts::gather`], …) and judged by pure
//! functions ([`diagnose_native`], …) so every diagnosis and its fix is unit-tested. For the
//! native backend the decisive fact is a real probe: a bottle running `true`.
//!
//! One module per backend (`native`, `docker`, `smolmachines`, `apple`): its facts, how they
//! are gathered and how they are judged. This module holds the verdict types and [`all`],
//! which `doctor` reports in [`BackendKind::ALL`] order; a new backend adds its module and
//! one line there.

use std::path::{Path, PathBuf};

use crate::BackendKind;
#[cfg(target_os = "linux")]
use crate::native::NativeBackend;

/// Off Linux there is no native backend, so no bottle to probe ([`all`] keeps its signature).
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub enum NativeBackend {}

mod apple;
mod docker;
#[cfg(target_os = "linux")]
mod native;
mod smolmachines;

pub use apple::{
    AppleFacts, CLI_ENV as APPLE_CLI_ENV, cli_override as apple_cli_override, diagnose_apple,
};
pub(crate) use docker::take_runtimes as take_docker_runtimes;
pub use docker::{DockerFacts, diagnose_docker};
#[cfg(target_os = "linux")]
pub use native::{NativeFacts, diagnose_native, landlock_abi};
pub use smolmachines::{SmolFacts, diagnose_smolmachines};

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

#[cfg(target_os = "linux")]
fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The native backend's status on this machine (with a probe bottle when `backend` is given).
pub fn native(backend: Option<&NativeBackend>) -> BackendStatus {
    #[cfg(target_os = "linux")]
    return diagnose_native(&NativeFacts::gather(backend));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = backend;
        linux_only(BackendKind::Native)
    }
}

/// The status of a Linux-only backend on another OS.
#[cfg(not(target_os = "linux"))]
fn linux_only(backend: BackendKind) -> BackendStatus {
    BackendStatus::from_checks(
        backend,
        vec![Check::fail(
            "platform",
            "only available on Linux",
            "use --backend apple (macOS 26) or docker",
        )],
    )
}

/// Every backend's status, in [`BackendKind::ALL`] order.
pub fn all(native_backend: Option<&NativeBackend>) -> Vec<BackendStatus> {
    vec![
        native(native_backend),
        diagnose_docker(&DockerFacts::gather()),
        diagnose_smolmachines(&SmolFacts::gather()),
        diagnose_apple(&AppleFacts::gather()),
        #[cfg(target_os = "linux")]
        crate::qemu::status(
            &std::env::current_exe()
                .unwrap_or_default()
                .with_file_name(crate::qemu::GUEST_EXE_NAME),
        ),
        #[cfg(not(target_os = "linux"))]
        linux_only(BackendKind::Qemu),
        kubernetes(),
    ]
}

/// The kubernetes backend's status: its kubeconfig (offline), or that this build has none.
fn kubernetes() -> BackendStatus {
    #[cfg(feature = "kubernetes")]
    return crate::kubernetes::preflight(&|k| std::env::var_os(k));
    #[cfg(not(feature = "kubernetes"))]
    BackendStatus {
        backend: BackendKind::Kubernetes,
        usable: false,
        checks: vec![Check::fail(
            "kubernetes backend",
            "this build has no kubernetes backend",
            "build bot-bottle with the backend crate's `kubernetes` feature (the default for the bot-bottle binary)",
        )],
    }
}

#[cfg(test)]
mod tests;
