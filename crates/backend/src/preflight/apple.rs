//! Preflight of the apple backend (Apple's `container` CLI on macOS).

use std::path::{Path, PathBuf};

use super::{BackendStatus, Check, find_in_path};
use crate::BackendKind;

/// What the apple backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppleFacts {
    pub is_macos: bool,
    /// `sw_vers -productVersion`'s major number.
    pub macos_major: Option<u32>,
    pub container_cli: Option<PathBuf>,
    /// `container system status` succeeded (`None`: not asked, no CLI).
    pub system_running: Option<bool>,
    /// A Linux build of bot-bottle for the containers' init is known.
    pub init_exe: bool,
    /// An agent image is configured (`$BOT_BOTTLE_APPLE_IMAGE`).
    pub image: bool,
}

fn succeeds(program: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl AppleFacts {
    pub fn gather() -> AppleFacts {
        let is_macos = cfg!(target_os = "macos");
        let container_cli = find_in_path("container").filter(|_| is_macos);
        let env_set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        AppleFacts {
            is_macos,
            macos_major: is_macos
                .then(|| succeeds(Path::new("/usr/bin/sw_vers"), &["-productVersion"]))
                .flatten()
                .and_then(|v| v.trim().split('.').next()?.parse().ok()),
            system_running: container_cli
                .as_deref()
                .map(|p| succeeds(p, &["system", "status"]).is_some()),
            container_cli,
            init_exe: env_set(crate::smolvm::GUEST_EXE_ENV),
            image: env_set(crate::apple::IMAGE_ENV),
        }
    }
}

pub fn diagnose_apple(f: &AppleFacts) -> BackendStatus {
    if !f.is_macos {
        return BackendStatus::from_checks(
            BackendKind::Apple,
            vec![Check::fail(
                "platform",
                "only available on macOS",
                "use --backend native on Linux",
            )],
        );
    }
    let mut checks = vec![match f.macos_major {
        Some(v) if v >= 26 => Check::pass("macos", format!("macOS {v}")),
        Some(v) => Check::fail(
            "macos",
            format!(
                "macOS {v} has no user-defined container networks (the agent's host-only network needs them)"
            ),
            "upgrade to macOS 26 or later, or use --backend docker",
        ),
        None => Check::fail(
            "macos",
            "the macOS version cannot be read (sw_vers -productVersion failed)",
            "run on macOS 26 or later",
        ),
    }];
    checks.push(match &f.container_cli {
        Some(p) => Check::pass("container cli", format!("container at {}", p.display())),
        None => Check::fail(
            "container cli",
            "Apple's `container` CLI is not installed",
            "install it from github.com/apple/container (the signed installer package) and run `container system start`",
        ),
    });
    if f.container_cli.is_some() {
        checks.push(match f.system_running {
            Some(true) => Check::pass("container system", "container system status: running"),
            _ => Check::fail(
                "container system",
                "the container API server is not running",
                "container system start",
            ),
        });
    }
    if !f.init_exe {
        checks.push(Check::fail(
            "init executable",
            "the containers need a Linux build of bot-bottle as their init",
            format!(
                "set {} to a Linux bot-bottle binary",
                crate::smolvm::GUEST_EXE_ENV
            ),
        ));
    }
    if !f.image {
        checks.push(Check::fail(
            "agent image",
            "no agent image is configured",
            format!(
                "container build -f images/Dockerfile.claude -t bot-bottle/agent-claude images && export {}=bot-bottle/agent-claude",
                crate::apple::IMAGE_ENV
            ),
        ));
    }
    checks.push(Check::warn(
        "verified",
        "implemented and proven against a fake `container` CLI only; not yet run on a Mac by this project",
        "check the pieces on yours: container system status && container network create --internal bb-check && container network inspect bb-check && container network delete bb-check",
    ));
    BackendStatus::from_checks(BackendKind::Apple, checks)
}
