//! Preflight of the smolmachines backend (libkrun micro-VMs through `smolvm`).

use std::path::{Path, PathBuf};

use super::{BackendStatus, Check, find_in_path};
use crate::BackendKind;
use crate::smolvm::plan::{MIN_VERSION, parse_version, version_supported};

/// What the smolmachines backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmolFacts {
    pub is_linux: bool,
    pub is_macos: bool,
    pub smolvm: Option<PathBuf>,
    /// What `smolvm --version` printed (`None`: it could not be run).
    pub version: Option<String>,
    /// `None`: no `/dev/kvm`; `Some(false)`: present but not read-writable by us.
    pub kvm: Option<bool>,
    /// macOS: `sysctl kern.hv_support` (Hypervisor.framework available).
    pub hv_support: Option<bool>,
    /// The `sqlite3` shell, which reads smolvm's state database.
    pub sqlite3: Option<PathBuf>,
    /// A Linux build of bot-bottle for the guest is known.
    pub guest_exe: bool,
    /// A machine image is configured (`$BOT_BOTTLE_SMOLVM_IMAGE`).
    pub image: bool,
}

fn command_stdout(program: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
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
        let smolvm = find_in_path("smolvm");
        let version = smolvm
            .as_deref()
            .and_then(|p| command_stdout(p, &["--version"]));
        let is_macos = cfg!(target_os = "macos");
        let hv_support = is_macos
            .then(|| command_stdout(Path::new("/usr/sbin/sysctl"), &["-n", "kern.hv_support"]))
            .flatten()
            .map(|v| v.trim() == "1");
        let env_set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        SmolFacts {
            is_linux: cfg!(target_os = "linux"),
            is_macos,
            smolvm,
            version,
            kvm,
            hv_support,
            sqlite3: find_in_path("sqlite3"),
            guest_exe: cfg!(target_os = "linux") || env_set(crate::smolvm::GUEST_EXE_ENV),
            image: env_set(crate::smolvm::IMAGE_ENV),
        }
    }
}

pub fn diagnose_smolmachines(f: &SmolFacts) -> BackendStatus {
    let (a, b, c) = MIN_VERSION;
    let install = "curl -sSL https://smolmachines.com/install.sh | sh";
    let mut checks = vec![match &f.smolvm {
        Some(p) => Check::pass("smolvm", format!("smolvm at {}", p.display())),
        None => Check::fail(
            "smolvm",
            "smolvm not found on PATH",
            format!(
                "install smolvm {a}.{b}.{c} or later ({install}) and make sure `smolvm` is on PATH"
            ),
        ),
    }];
    if f.smolvm.is_some() {
        checks.push(match f.version.as_deref().map(|v| (v, parse_version(v))) {
            Some((_, Some(v))) if version_supported(v) => {
                Check::pass("smolvm version", format!("smolvm {}.{}.{}", v.0, v.1, v.2))
            }
            Some((_, Some(v))) => Check::fail(
                "smolvm version",
                format!(
                    "smolvm {}.{}.{} is too old (no --mount-socket)",
                    v.0, v.1, v.2
                ),
                format!("upgrade to smolvm {a}.{b}.{c} or later: {install}"),
            ),
            Some((text, None)) => Check::fail(
                "smolvm version",
                format!(
                    "`smolvm --version` printed {:?}, not a version",
                    text.trim()
                ),
                format!("reinstall smolvm {a}.{b}.{c} or later: {install}"),
            ),
            None => Check::fail(
                "smolvm version",
                "`smolvm --version` failed",
                format!("reinstall smolvm {a}.{b}.{c} or later: {install}"),
            ),
        });
    }
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
                "enable hardware virtualization (VT-x/AMD-V, or nested virtualization in a VM) and load kvm_intel or kvm_amd (sudo modprobe kvm_intel, or kvm_amd)",
            ),
        });
    }
    if f.is_macos {
        checks.push(match f.hv_support {
            Some(true) => Check::pass("hypervisor", "Hypervisor.framework available"),
            _ => Check::fail(
                "hypervisor",
                "Hypervisor.framework is not available (sysctl kern.hv_support is not 1)",
                "run on Apple silicon or a Mac with VT-x, outside a VM without nested virtualization",
            ),
        });
    }
    checks.push(match &f.sqlite3 {
        Some(p) => Check::pass("sqlite3", format!("sqlite3 at {}", p.display())),
        None => Check::fail(
            "sqlite3",
            "sqlite3 not found on PATH (bot-bottle reads smolvm's state database with it to confirm each machine's isolation)",
            "install it (sudo apt-get install sqlite3, or sudo dnf install sqlite)",
        ),
    });
    if !f.guest_exe {
        checks.push(Check::fail(
            "guest executable",
            "the machine needs a Linux build of bot-bottle as its init",
            format!(
                "set {} to a Linux bot-bottle binary",
                crate::smolvm::GUEST_EXE_ENV
            ),
        ));
    }
    if !f.image {
        checks.push(Check::fail(
            "machine image",
            "no machine image is configured",
            format!(
                "build the agent image with the docker backend's Dockerfile and set {} to it (e.g. docker save <image> -o agent.tar; {}=$PWD/agent.tar)",
                crate::smolvm::IMAGE_ENV,
                crate::smolvm::IMAGE_ENV
            ),
        ));
    }
    checks.push(Check::warn(
        "verified",
        "implemented and proven against fakes only (an in-process fake smolvm, and a stand-in smolvm that `bot-bottle start` runs end to end in the project's tests); not yet run on a real smolvm host by this project",
        "check it on yours: smolvm --version && bot-bottle start <agent> --backend smolmachines -- true",
    ));
    BackendStatus::from_checks(BackendKind::Smolmachines, checks)
}
