//! Preflight of the apple backend (Apple's `container` CLI on macOS).

use std::path::Path;

use super::{BackendStatus, Check};
use crate::BackendKind;

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
