//! Preflight of the smolmachines backend (libkrun micro-VMs through `smolvm`).

use std::path::{Path, PathBuf};

use super::{BackendStatus, Check, find_in_path};
use crate::BackendKind;

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
