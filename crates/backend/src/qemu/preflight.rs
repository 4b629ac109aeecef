//! `doctor`'s checks for the qemu backend: QEMU and its version, the guest kernel, whether KVM
//! can boot a guest (the cached probe of [`super::kvm`]) or software emulation is allowed, a
//! static busybox for the initramfs, the guest executable (`bot-bottle-guest`), and virtiofsd. Facts are gathered by [`QemuFacts::gather`]
//! and judged by the pure [`diagnose_qemu`], so each diagnosis and its fix is unit-tested.

use std::path::{Path, PathBuf};

use super::assets::{self, AssetsError, GuestKernel};
use super::kvm::{self, KvmStatus};
use crate::BackendKind;
use crate::preflight::{BackendStatus, Check};

/// Where Debian puts virtiofsd (`qemu-system-common` in bookworm, its own package later).
const VIRTIOFSD_PATHS: [&str; 3] = [
    "/usr/lib/qemu/virtiofsd",
    "/usr/libexec/virtiofsd",
    "/usr/libexec/qemu/virtiofsd",
];

/// What the qemu backend depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuFacts {
    /// `qemu-system-x86_64` and its `--version` line.
    pub qemu: Option<(PathBuf, String)>,
    /// The guest kernel, or why there is none (the error's message, with its fix).
    pub kernel: Result<GuestKernel, String>,
    /// Whether KVM can boot a guest; `None` when there is no kernel to probe with.
    pub kvm: Option<KvmStatus>,
    /// The value of `BOT_BOTTLE_QEMU_ACCEL`.
    pub accel_env: Option<String>,
    /// The static busybox, or what is wrong with the one found.
    pub busybox: Result<PathBuf, String>,
    /// The guest executable (stage 2 and the relay), or the path where it is missing.
    pub guest: Result<PathBuf, PathBuf>,
    pub virtiofsd: Option<PathBuf>,
}

impl QemuFacts {
    /// Reads the facts from this machine, with `guest` the guest executable. Probes KVM (at
    /// most [`kvm::PROBE_TIMEOUT`]) when there is a kernel and no cached verdict for it.
    pub fn gather(guest: &Path) -> QemuFacts {
        let qemu = assets::find_qemu().ok().map(|path| {
            let version = kvm::qemu_version(&path).unwrap_or_else(|| "version unknown".into());
            (path, version)
        });
        let kernel = assets::guest_kernel().map_err(|e| e.to_string());
        let kvm = kernel
            .as_ref()
            .ok()
            .map(|k| kvm::status(&assets::cache_root(), k, false));
        QemuFacts {
            qemu,
            kernel,
            kvm,
            accel_env: std::env::var(assets::ACCEL_ENV).ok(),
            busybox: assets::find_static_busybox().map_err(|e| match e {
                AssetsError::BusyboxMissing { problem } => problem,
                other => other.to_string(),
            }),
            guest: if guest.is_file() {
                Ok(guest.to_path_buf())
            } else {
                Err(guest.to_path_buf())
            },
            virtiofsd: VIRTIOFSD_PATHS
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .map(Path::to_path_buf)
                .or_else(|| crate::preflight::find_in_path("virtiofsd")),
        }
    }
}

fn check(name: &str, ok: bool, detail: String, fix: Option<String>, required: bool) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        detail,
        fix,
        required,
    }
}

/// Judges the qemu backend.
pub fn diagnose_qemu(f: &QemuFacts) -> BackendStatus {
    let mut checks = Vec::new();
    checks.push(match &f.qemu {
        Some((path, version)) => check(
            "qemu",
            true,
            format!("{version} at {}", path.display()),
            None,
            true,
        ),
        None => check(
            "qemu",
            false,
            "qemu-system-x86_64 not found on PATH".into(),
            Some("sudo apt-get install qemu-system-x86".into()),
            true,
        ),
    });
    checks.push(match &f.kernel {
        Ok(kernel) => check(
            "guest kernel",
            true,
            format!(
                "guest kernel {} ({})",
                kernel.version,
                kernel.image.display()
            ),
            None,
            true,
        ),
        Err(message) => {
            // The error's message already says what to do; split it for the fix column.
            let (detail, fix) = match message.split_once("; ") {
                Some((detail, fix)) => (detail.to_owned(), fix.to_owned()),
                None => (message.clone(), "run `bot-bottle prepare qemu`".to_owned()),
            };
            check("guest kernel", false, detail, Some(fix), true)
        }
    });
    let accel = match assets::decide_accel(
        f.kvm.as_ref().unwrap_or(&KvmStatus {
            usable: false,
            reason: "not probed: no guest kernel to boot".into(),
            fix: Some("run `bot-bottle prepare qemu`".into()),
            cached: false,
        }),
        f.accel_env.as_deref(),
    ) {
        Ok(assets::Accel::Kvm) => {
            let kvm = f.kvm.as_ref().map(|k| k.reason.as_str()).unwrap_or("");
            check("accelerator", true, format!("KVM ({kvm})"), None, true)
        }
        Ok(assets::Accel::Tcg) => check(
            "accelerator",
            false,
            format!(
                "software emulation (TCG, allowed by BOT_BOTTLE_QEMU_ACCEL=tcg): slow, and upstream QEMU does not treat TCG as a security boundary, the jail around QEMU still holds; used because {}",
                f.kvm
                    .as_ref()
                    .map(|k| k.reason.as_str())
                    .unwrap_or("not probed")
            ),
            f.kvm.as_ref().and_then(|k| k.fix.clone()),
            false,
        ),
        Err(AssetsError::KvmUnusable { reason, fix }) => check(
            "accelerator",
            false,
            reason,
            Some(format!(
                "{fix}; or allow software emulation with BOT_BOTTLE_QEMU_ACCEL=tcg (slow, not a security boundary upstream; the jail still holds)"
            )),
            true,
        ),
        Err(other) => check(
            "accelerator",
            false,
            other.to_string(),
            Some("unset BOT_BOTTLE_QEMU_ACCEL or set it to tcg".into()),
            true,
        ),
    };
    // Without a kernel the accelerator cannot be judged; the kernel check says what to do.
    if f.kernel.is_ok() {
        checks.push(accel);
    }
    checks.push(match &f.busybox {
        Ok(path) => check(
            "busybox",
            true,
            format!("static busybox at {}", path.display()),
            None,
            true,
        ),
        Err(problem) => check(
            "busybox",
            false,
            problem.clone(),
            Some("sudo apt-get install busybox-static".into()),
            true,
        ),
    });
    checks.push(match &f.guest {
        Ok(path) => check(
            "guest executable",
            true,
            format!("guest executable at {}", path.display()),
            None,
            true,
        ),
        Err(path) => check(
            "guest executable",
            false,
            format!(
                "the guest executable {} is missing (the guest's init and its sidecar relay)",
                path.display()
            ),
            Some(GUEST_EXE_FIX.to_owned()),
            true,
        ),
    });
    checks.push(match &f.virtiofsd {
        Some(path) => check(
            "virtiofsd",
            true,
            format!("virtiofsd at {}", path.display()),
            None,
            false,
        ),
        None => check(
            "virtiofsd",
            false,
            "virtiofsd not found (the workspace is shared over 9p without it)".into(),
            Some("sudo apt-get install qemu-system-common".into()),
            false,
        ),
    });
    BackendStatus {
        backend: BackendKind::Qemu,
        usable: checks.iter().all(|c| c.ok || !c.required),
        checks,
    }
}

/// How to get the guest executable where it is missing.
pub const GUEST_EXE_FIX: &str = "it is built and installed beside bot-bottle: `cargo build -p bot-bottle`, or `cargo install --locked --path crates/bot-bottle`";

/// The qemu backend's status on this machine, with `guest` the guest executable.
pub fn status(guest: &Path) -> BackendStatus {
    diagnose_qemu(&QemuFacts::gather(guest))
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn kernel() -> GuestKernel {
        GuestKernel {
            image: "/c/qemu/kernel/6.1.0-57-amd64/vmlinux".into(),
            modules: "/c/qemu/kernel/6.1.0-57-amd64/modules/lib/modules/6.1.0-57-amd64".into(),
            version: "6.1.0-57-amd64".into(),
        }
    }

    fn good() -> QemuFacts {
        QemuFacts {
            qemu: Some((
                "/usr/bin/qemu-system-x86_64".into(),
                "QEMU emulator version 7.2.22".into(),
            )),
            kernel: Ok(kernel()),
            kvm: Some(KvmStatus {
                usable: true,
                reason: "a test guest booted under KVM".into(),
                fix: None,
                cached: true,
            }),
            accel_env: None,
            busybox: Ok("/bin/busybox".into()),
            guest: Ok("/usr/local/bin/bot-bottle-guest".into()),
            virtiofsd: Some("/usr/lib/qemu/virtiofsd".into()),
        }
    }

    fn pvm() -> Option<KvmStatus> {
        Some(KvmStatus {
            usable: false,
            reason: "KVM is present but cannot boot a guest (nested PVM: /sys/module/kvm_pvm is loaded): a test guest did not reach userspace within 10 s".into(),
            fix: Some("run on a host with hardware virtualisation, then `bot-bottle prepare qemu --reprobe`".into()),
            cached: true,
        })
    }

    #[test]
    fn healthy_qemu_with_kvm_is_usable() {
        assert_eq!(
            diagnose_qemu(&good()).line(),
            "qemu: usable (QEMU emulator version 7.2.22 at /usr/bin/qemu-system-x86_64, guest kernel 6.1.0-57-amd64 (/c/qemu/kernel/6.1.0-57-amd64/vmlinux), KVM (a test guest booted under KVM), static busybox at /bin/busybox, guest executable at /usr/local/bin/bot-bottle-guest, virtiofsd at /usr/lib/qemu/virtiofsd)"
        );
    }

    #[test]
    fn kvm_that_cannot_boot_refuses_unless_tcg_is_allowed() {
        let refused = diagnose_qemu(&QemuFacts {
            kvm: pvm(),
            ..good()
        });
        assert!(!refused.usable);
        assert_eq!(
            refused.line(),
            "qemu: not usable: KVM is present but cannot boot a guest (nested PVM: /sys/module/kvm_pvm is loaded): a test guest did not reach userspace within 10 s; fix: run on a host with hardware virtualisation, then `bot-bottle prepare qemu --reprobe`; or allow software emulation with BOT_BOTTLE_QEMU_ACCEL=tcg (slow, not a security boundary upstream; the jail still holds)"
        );
        let tcg = diagnose_qemu(&QemuFacts {
            kvm: pvm(),
            accel_env: Some("tcg".into()),
            ..good()
        });
        assert!(tcg.usable);
        assert_eq!(
            tcg.line(),
            "qemu: usable (QEMU emulator version 7.2.22 at /usr/bin/qemu-system-x86_64, guest kernel 6.1.0-57-amd64 (/c/qemu/kernel/6.1.0-57-amd64/vmlinux), static busybox at /bin/busybox, guest executable at /usr/local/bin/bot-bottle-guest, virtiofsd at /usr/lib/qemu/virtiofsd); warning: software emulation (TCG, allowed by BOT_BOTTLE_QEMU_ACCEL=tcg): slow, and upstream QEMU does not treat TCG as a security boundary, the jail around QEMU still holds; used because KVM is present but cannot boot a guest (nested PVM: /sys/module/kvm_pvm is loaded): a test guest did not reach userspace within 10 s (fix: run on a host with hardware virtualisation, then `bot-bottle prepare qemu --reprobe`)"
        );
    }

    #[test]
    fn missing_pieces_each_carry_their_fix() {
        let status = diagnose_qemu(&QemuFacts {
            qemu: None,
            kernel: Err(AssetsError::NotPrepared {
                cache: "/home/a/.cache/bot-bottle/qemu/kernel".into(),
            }
            .to_string()),
            kvm: None,
            accel_env: None,
            busybox: Err("/bin/busybox is dynamically linked (the `busybox` package), the guest needs `busybox-static`".into()),
            guest: Err("/home/a/.cargo/bin/bot-bottle-guest".into()),
            virtiofsd: None,
        });
        assert!(!status.usable);
        assert_eq!(
            status.line(),
            "qemu: not usable: qemu-system-x86_64 not found on PATH; fix: sudo apt-get install qemu-system-x86; no guest kernel for the qemu backend in /home/a/.cache/bot-bottle/qemu/kernel; fix: run `bot-bottle prepare qemu`, or set BOT_BOTTLE_QEMU_KERNEL and BOT_BOTTLE_QEMU_MODULES to a kernel of your own; /bin/busybox is dynamically linked (the `busybox` package), the guest needs `busybox-static`; fix: sudo apt-get install busybox-static; the guest executable /home/a/.cargo/bin/bot-bottle-guest is missing (the guest's init and its sidecar relay); fix: it is built and installed beside bot-bottle: `cargo build -p bot-bottle`, or `cargo install --locked --path crates/bot-bottle`; warning: virtiofsd not found (the workspace is shared over 9p without it) (fix: sudo apt-get install qemu-system-common)"
        );
    }

    #[test]
    fn a_bad_accel_value_is_refused() {
        let status = diagnose_qemu(&QemuFacts {
            accel_env: Some("software".into()),
            ..good()
        });
        assert!(!status.usable);
        assert_eq!(
            status.line(),
            "qemu: not usable: BOT_BOTTLE_QEMU_ACCEL=software is not understood; set it to `tcg` (allow software emulation where KVM cannot boot a guest) or `kvm` (the default: KVM or nothing), or unset it; fix: unset BOT_BOTTLE_QEMU_ACCEL or set it to tcg"
        );
    }
}
