//! Preflight of the apple backend (Apple's `container` CLI on macOS).

use std::path::{Path, PathBuf};

use super::{BackendStatus, Check, find_in_path};
use crate::BackendKind;

/// `$BOT_BOTTLE_APPLE_CLI`: the `container` executable to drive instead of the one on `PATH`.
/// Off macOS it is the only way to use the backend: a stand-in that behaves like Apple's CLI
/// (the project's tests run `start` against one), never a real Apple runtime.
pub const CLI_ENV: &str = "BOT_BOTTLE_APPLE_CLI";

/// What the apple backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppleFacts {
    pub is_macos: bool,
    /// `sw_vers -productVersion`'s major number.
    pub macos_major: Option<u32>,
    /// `$BOT_BOTTLE_APPLE_CLI` as set.
    pub cli_override: Option<PathBuf>,
    pub container_cli: Option<PathBuf>,
    /// `container system status` succeeded (`None`: not asked, no CLI).
    pub system_running: Option<bool>,
    /// A Linux build of bot-bottle for the containers' init is known.
    pub init_exe: bool,
}

/// The `container` executable: `$BOT_BOTTLE_APPLE_CLI` when set (and executable), else
/// `container` on `PATH` on macOS.
pub fn container_cli(is_macos: bool, cli_override: Option<&Path>) -> Option<PathBuf> {
    match cli_override {
        Some(p) => super::is_executable(p).then(|| p.to_path_buf()),
        None => find_in_path("container").filter(|_| is_macos),
    }
}

/// `$BOT_BOTTLE_APPLE_CLI`, when set and not blank.
pub fn cli_override() -> Option<PathBuf> {
    std::env::var_os(CLI_ENV)
        .filter(|v| !v.to_string_lossy().trim().is_empty())
        .map(PathBuf::from)
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
        let cli_override = cli_override();
        let container_cli = container_cli(is_macos, cli_override.as_deref());
        let env_set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        AppleFacts {
            cli_override,
            is_macos,
            macos_major: is_macos
                .then(|| succeeds(Path::new("/usr/bin/sw_vers"), &["-productVersion"]))
                .flatten()
                .and_then(|v| v.trim().split('.').next()?.parse().ok()),
            system_running: container_cli
                .as_deref()
                .map(|p| succeeds(p, &["system", "status"]).is_some()),
            container_cli,
            // On a Linux host the running executable is the containers' init (`apple::open`).
            init_exe: cfg!(target_os = "linux") || env_set(crate::smolvm::GUEST_EXE_ENV),
        }
    }
}

pub fn diagnose_apple(f: &AppleFacts) -> BackendStatus {
    let mut checks = Vec::new();
    if !f.is_macos {
        let Some(stand_in) = &f.cli_override else {
            return BackendStatus::from_checks(
                BackendKind::Apple,
                vec![Check::fail(
                    "platform",
                    "only available on macOS",
                    "use --backend native on Linux",
                )],
            );
        };
        checks.push(Check::warn(
            "platform",
            format!(
                "not macOS: {} ({CLI_ENV}) stands in for Apple's container CLI; the bottle is only as isolated as that stand-in makes it",
                stand_in.display()
            ),
            format!("unset {CLI_ENV} unless it names a test stand-in"),
        ));
    } else {
        checks.push(match f.macos_major {
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
        });
    }
    checks.push(match (&f.container_cli, &f.cli_override) {
        (Some(p), _) => Check::pass("container cli", format!("container at {}", p.display())),
        (None, Some(p)) => Check::fail(
            "container cli",
            format!("{CLI_ENV} names {}, which is not an executable file", p.display()),
            format!("point {CLI_ENV} at Apple's container CLI, or unset it"),
        ),
        (None, None) => Check::fail(
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
    checks.push(Check::warn(
        "verified",
        "implemented and proven against fakes only (an in-process fake `container` CLI, and a stand-in that `bot-bottle start` runs end to end in the project's tests); not yet run on a Mac by this project",
        "check it on yours: container system status && container network create --internal bb-check && container network inspect bb-check (its mode must be hostOnly) && container network delete bb-check && bot-bottle start <agent> --backend apple -- true",
    ));
    BackendStatus::from_checks(BackendKind::Apple, checks)
}
