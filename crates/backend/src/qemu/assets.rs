//! The guest kernel and the accelerator: where they come from (placeholder).
//!
//! `bot-bottle prepare qemu` (kernel download, extraction and cache) and the KVM probe live in
//! the full version of this module; this one implements only the user's own kernel
//! (`BOT_BOTTLE_QEMU_KERNEL` + `BOT_BOTTLE_QEMU_MODULES`) and `BOT_BOTTLE_QEMU_ACCEL=tcg`, with
//! the same items, so the backend builds against the same interface.

use std::path::PathBuf;

/// Where the guest kernel image path comes from when the user brings their own.
pub const KERNEL_ENV: &str = "BOT_BOTTLE_QEMU_KERNEL";
/// Where the guest kernel's modules directory comes from when the user brings their own.
pub const MODULES_ENV: &str = "BOT_BOTTLE_QEMU_MODULES";
/// `tcg` allows software emulation when KVM cannot boot a guest.
pub const ACCEL_ENV: &str = "BOT_BOTTLE_QEMU_ACCEL";

/// A guest kernel and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// Bootable with `-kernel` (a bzImage `vmlinuz-*`, or an uncompressed PVH `vmlinux`).
    pub image: PathBuf,
    /// The `lib/modules/<version>` directory holding the `kernel/...` `.ko` files.
    pub modules: PathBuf,
    /// The kernel release, e.g. `6.1.0-50-amd64`.
    pub version: String,
}

/// Why no guest kernel or accelerator could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// Nothing prepared and no kernel of the user's own.
    #[error(
        "no guest kernel is prepared for the qemu backend; run `bot-bottle prepare qemu`, or set {KERNEL_ENV} and {MODULES_ENV} to a kernel image and its lib/modules/<version> directory"
    )]
    NotPrepared,
    /// Only one of the two variables is set.
    #[error(
        "{set} is set but {missing} is not; set both (the kernel image and its lib/modules/<version> directory) or neither"
    )]
    HalfConfigured {
        set: &'static str,
        missing: &'static str,
    },
    /// A path the user gave does not exist.
    #[error("{what} {path} (from {var}) does not exist; point {var} at an existing path")]
    Missing {
        what: &'static str,
        path: PathBuf,
        var: &'static str,
    },
    /// No accelerator may be used.
    #[error(
        "KVM cannot boot a guest here ({kvm}) and software emulation is not allowed; set {ACCEL_ENV}=tcg to run the guest under TCG (slow, and not a security boundary upstream QEMU stands behind: the native jail around QEMU still holds), or use a host where KVM works"
    )]
    NoAccel { kvm: String },
    /// `BOT_BOTTLE_QEMU_ACCEL` holds something else.
    #[error("{ACCEL_ENV}={value} is not understood; use `tcg` or unset it")]
    BadAccel { value: String },
}

/// The guest kernel: `BOT_BOTTLE_QEMU_KERNEL` + `BOT_BOTTLE_QEMU_MODULES` (both, or an
/// error), else what `bot-bottle prepare qemu` cached (not in this placeholder).
pub fn guest_kernel() -> Result<GuestKernel, AssetsError> {
    let kernel = std::env::var_os(KERNEL_ENV).filter(|v| !v.is_empty());
    let modules = std::env::var_os(MODULES_ENV).filter(|v| !v.is_empty());
    match (kernel, modules) {
        (Some(image), Some(modules)) => {
            let image = PathBuf::from(image);
            let modules = PathBuf::from(modules);
            if !image.is_file() {
                return Err(AssetsError::Missing {
                    what: "the guest kernel image",
                    path: image,
                    var: KERNEL_ENV,
                });
            }
            if !modules.is_dir() {
                return Err(AssetsError::Missing {
                    what: "the guest kernel's modules directory",
                    path: modules,
                    var: MODULES_ENV,
                });
            }
            let version = modules
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(GuestKernel {
                image,
                modules,
                version,
            })
        }
        (Some(_), None) => Err(AssetsError::HalfConfigured {
            set: KERNEL_ENV,
            missing: MODULES_ENV,
        }),
        (None, Some(_)) => Err(AssetsError::HalfConfigured {
            set: MODULES_ENV,
            missing: KERNEL_ENV,
        }),
        (None, None) => Err(AssetsError::NotPrepared),
    }
}

/// `$XDG_CACHE_HOME/bot-bottle`, default `~/.cache/bot-bottle`: shared by every
/// `$BOT_BOTTLE_HOME`.
pub fn cache_root() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("bot-bottle");
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".cache").join("bot-bottle")
}

/// The accelerator the guest runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// KVM when the cached probe says it boots (not in this placeholder); else TCG only if
/// `BOT_BOTTLE_QEMU_ACCEL=tcg` (with a warning), else an error naming both facts and the fix.
pub fn choose_accel() -> Result<Accel, AssetsError> {
    match std::env::var(ACCEL_ENV) {
        Ok(v) if v == "tcg" => {
            tracing::warn!(
                "the qemu backend runs the guest under TCG software emulation ({ACCEL_ENV}=tcg): slow, and upstream QEMU does not treat TCG as a security boundary (the native jail around QEMU still holds)"
            );
            Ok(Accel::Tcg)
        }
        Ok(v) if !v.is_empty() => Err(AssetsError::BadAccel { value: v }),
        _ => Err(AssetsError::NoAccel {
            kvm: "this build has no KVM probe".into(),
        }),
    }
}
