//! What a qemu bottle boots: the guest kernel and its modules, and which accelerator runs it.
//!
//! The guest kernel is the distribution's own (Debian's generic `linux-image-<abi>-amd64`: it
//! has 9p, virtio-mmio and virtio-console as modules; the `cloud` flavour lacks 9p), never one
//! we build: it is signed, maintained and updated by the distribution. `bot-bottle prepare
//! qemu` ([`prepare`]) downloads the package with the system's own tools (`apt-get download`),
//! unpacks it with `dpkg-deb -x` into a staging directory under the cache and moves the result
//! into place with one rename, so a kernel in the cache is always complete. The cache is
//! `$XDG_CACHE_HOME/bot-bottle` ([`cache_root`]), shared by every `$BOT_BOTTLE_HOME` of the
//! user: nothing in it is specific to a bottle.
//!
//! Layout under `<cache_root>/qemu/kernel/`:
//!
//! ```text
//! <version>/vmlinuz                          the image as shipped (bzImage)
//! <version>/vmlinux                          the same kernel uncompressed, when it has a PVH
//!                                            entry (boots directly, about twice as fast under TCG)
//! <version>/config                           the kernel's build configuration
//! <version>/modules/lib/modules/<version>/   kernel/**.ko, modules.order, ...
//! current                                    the version `prepare` made current
//! ```
//!
//! A user on another distribution (or with a kernel of their own) sets
//! `BOT_BOTTLE_QEMU_KERNEL` and `BOT_BOTTLE_QEMU_MODULES`, which win over the cache.
//!
//! The package tools are behind [`PackageTools`] so that `prepare`'s decisions (what to
//! download, when it is already ready, what a broken package is) are unit-tested against a
//! recording fake; [`DebianTools`] runs the real ones.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::process::Command;

use super::elf;
use super::kvm::{self, KvmStatus};
use super::package::metapackage;
#[cfg(test)]
use super::package::run_tool;
pub use super::package::{DebianTools, KernelSource, PackageTools, parse_depends};

/// A kernel image to boot instead of the prepared one (needs [`MODULES_ENV`] too).
pub const KERNEL_ENV: &str = "BOT_BOTTLE_QEMU_KERNEL";
/// The `lib/modules/<version>` directory of the kernel in [`KERNEL_ENV`].
pub const MODULES_ENV: &str = "BOT_BOTTLE_QEMU_MODULES";
/// `tcg` allows software emulation where KVM cannot boot a guest.
pub const ACCEL_ENV: &str = "BOT_BOTTLE_QEMU_ACCEL";

/// What the launcher reports before a launch under [`Accel::Tcg`] ([`crate::Backend::launch_warnings`]).
pub const TCG_WARNING: &str = "warning: the qemu bottle runs under software emulation (TCG, allowed by BOT_BOTTLE_QEMU_ACCEL=tcg): it is slow, and upstream QEMU does not treat TCG as a security boundary; the jail around QEMU (the native backend's namespaces, seccomp, an unprivileged uid, no network) still holds";

/// The Debian architecture whose kernel packages QEMU's x86_64 guest boots.
pub(super) const DEBIAN_ARCH: &str = "amd64";

/// Kernel options the guest cannot work without (built in or as a module).
const REQUIRED_CONFIG: [&str; 5] = [
    "CONFIG_VIRTIO_MMIO",
    "CONFIG_9P_FS",
    "CONFIG_NET_9P_VIRTIO",
    "CONFIG_VIRTIO_CONSOLE",
    "CONFIG_VIRTIO_NET",
];

/// A guest kernel ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// Bootable with `-kernel`: an uncompressed PVH `vmlinux` or a bzImage `vmlinuz`.
    pub image: PathBuf,
    /// The `lib/modules/<version>` directory holding `kernel/**.ko`.
    pub modules: PathBuf,
    /// The kernel release (`uname -r` in the guest), e.g. `6.1.0-57-amd64`.
    pub version: String,
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation (slow; not a security boundary upstream).
    Tcg,
}

impl Accel {
    /// The value of QEMU's `-accel`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Errors finding or preparing the guest kernel, or choosing the accelerator.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// Only one of the two variables naming the user's own kernel is set.
    #[error(
        "{set} is set but {missing} is not; set both (the kernel image and its lib/modules/<version> directory) or neither"
    )]
    HalfKernelEnv {
        set: &'static str,
        missing: &'static str,
    },
    /// A variable names something that is not the kernel image or modules directory.
    #[error("{var}={}: {problem}", path.display())]
    BadKernelEnv {
        var: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// No kernel was prepared and none is named.
    #[error(
        "no guest kernel for the qemu backend in {}; run `bot-bottle prepare qemu`, or set BOT_BOTTLE_QEMU_KERNEL and BOT_BOTTLE_QEMU_MODULES to a kernel of your own",
        cache.display()
    )]
    NotPrepared { cache: PathBuf },
    /// The cache names a kernel whose files are not all there.
    #[error("the prepared guest kernel in {} is incomplete ({problem}); run `bot-bottle prepare qemu` again", path.display())]
    BrokenCache { path: PathBuf, problem: String },
    /// A package tool is not installed.
    #[error(
        "`{tool}` not found: `bot-bottle prepare qemu` uses Debian's package tools (apt-cache, apt-get, dpkg-deb); on another distribution set BOT_BOTTLE_QEMU_KERNEL to a kernel image and BOT_BOTTLE_QEMU_MODULES to its lib/modules/<version> directory"
    )]
    ToolMissing { tool: String },
    /// A package tool failed.
    #[error("`{command}` failed ({status}): {stderr}; {fix}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
        fix: String,
    },
    /// The distribution offers no generic kernel package for this machine.
    #[error(
        "no kernel package found for `{metapackage}` ({detail}); run `sudo apt-get update` first, or on a distribution without Debian's kernel packages set BOT_BOTTLE_QEMU_KERNEL and BOT_BOTTLE_QEMU_MODULES"
    )]
    NoKernelPackage { metapackage: String, detail: String },
    /// The package is not a kernel the guest can boot.
    #[error("{}: {problem}", package.display())]
    BadPackage { package: PathBuf, problem: String },
    /// QEMU's guest is x86_64; this machine's packages are for another architecture.
    #[error(
        "the qemu backend boots x86_64 guests and this machine is {0}; set BOT_BOTTLE_QEMU_KERNEL and BOT_BOTTLE_QEMU_MODULES to an x86_64 kernel"
    )]
    UnsupportedArch(String),
    /// `qemu-system-x86_64` is not installed.
    #[error("qemu-system-x86_64 not found on PATH; fix: sudo apt-get install qemu-system-x86")]
    QemuMissing,
    /// No statically linked busybox (the guest's initramfs and the KVM probe need one).
    #[error("{problem}; fix: sudo apt-get install busybox-static")]
    BusyboxMissing { problem: String },
    /// `BOT_BOTTLE_QEMU_ACCEL` has a value we do not know.
    #[error(
        "BOT_BOTTLE_QEMU_ACCEL={0} is not understood; set it to `tcg` (allow software emulation where KVM cannot boot a guest) or `kvm` (the default: KVM or nothing), or unset it"
    )]
    BadAccelEnv(String),
    /// KVM cannot run the guest and software emulation was not allowed.
    #[error(
        "KVM cannot run a qemu bottle here: {reason}; fix: {fix}, or allow software emulation with BOT_BOTTLE_QEMU_ACCEL=tcg (slow, and upstream QEMU does not treat TCG as a security boundary; the jail around QEMU still holds)"
    )]
    KvmUnusable { reason: String, fix: String },
    /// An I/O error on a path in the cache.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AssetsError {
    let path = path.to_path_buf();
    move |source| AssetsError::Io {
        action,
        path,
        source,
    }
}

/// `$XDG_CACHE_HOME/bot-bottle`, default `~/.cache/bot-bottle`. Shared by every
/// `$BOT_BOTTLE_HOME` of the user.
pub fn cache_root() -> PathBuf {
    cache_root_from(
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
        || {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        },
    )
}

fn cache_root_from(
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
    passwd_home: impl FnOnce() -> Option<PathBuf>,
) -> PathBuf {
    // The XDG spec: a relative value is invalid and ignored.
    if let Some(xdg) = xdg_cache_home.map(PathBuf::from)
        && xdg.is_absolute()
    {
        return xdg.join("bot-bottle");
    }
    let home = home
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .or_else(passwd_home)
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/bot-bottle-{}", nix::unistd::getuid())));
    home.join(".cache").join("bot-bottle")
}

/// `<cache_root>/qemu`: everything the qemu backend caches.
pub fn qemu_cache(cache_root: &Path) -> PathBuf {
    cache_root.join("qemu")
}

fn kernels_dir(cache_root: &Path) -> PathBuf {
    qemu_cache(cache_root).join("kernel")
}

/// The guest kernel to boot: the user's own when [`KERNEL_ENV`] and [`MODULES_ENV`] name one,
/// else the one `bot-bottle prepare qemu` cached.
pub fn guest_kernel() -> Result<GuestKernel, AssetsError> {
    guest_kernel_from(
        std::env::var_os(KERNEL_ENV),
        std::env::var_os(MODULES_ENV),
        &cache_root(),
    )
}

/// [`guest_kernel`] with its inputs given.
pub fn guest_kernel_from(
    kernel_env: Option<OsString>,
    modules_env: Option<OsString>,
    cache_root: &Path,
) -> Result<GuestKernel, AssetsError> {
    let kernel_env = kernel_env.filter(|v| !v.is_empty()).map(PathBuf::from);
    let modules_env = modules_env.filter(|v| !v.is_empty()).map(PathBuf::from);
    match (kernel_env, modules_env) {
        (Some(image), Some(modules)) => user_kernel(image, modules),
        (Some(_), None) => Err(AssetsError::HalfKernelEnv {
            set: KERNEL_ENV,
            missing: MODULES_ENV,
        }),
        (None, Some(_)) => Err(AssetsError::HalfKernelEnv {
            set: MODULES_ENV,
            missing: KERNEL_ENV,
        }),
        (None, None) => prepared(cache_root)?.ok_or_else(|| AssetsError::NotPrepared {
            cache: kernels_dir(cache_root),
        }),
    }
}

fn user_kernel(image: PathBuf, modules: PathBuf) -> Result<GuestKernel, AssetsError> {
    let bad = |var, path: &Path, problem: &str| AssetsError::BadKernelEnv {
        var,
        path: path.to_path_buf(),
        problem: problem.to_owned(),
    };
    if !image.is_absolute() {
        return Err(bad(KERNEL_ENV, &image, "give an absolute path"));
    }
    if !modules.is_absolute() {
        return Err(bad(MODULES_ENV, &modules, "give an absolute path"));
    }
    match std::fs::metadata(&image) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        Ok(_) => {
            return Err(bad(
                KERNEL_ENV,
                &image,
                "not a kernel image (a non-empty file)",
            ));
        }
        Err(e) => return Err(bad(KERNEL_ENV, &image, &e.to_string())),
    }
    if !modules.is_dir() {
        return Err(bad(
            MODULES_ENV,
            &modules,
            "not a directory; name the kernel's lib/modules/<version> directory",
        ));
    }
    let version = modules
        .file_name()
        .and_then(|v| v.to_str())
        .filter(|v| valid_version(v))
        .ok_or_else(|| {
            bad(
                MODULES_ENV,
                &modules,
                "its last component must be the kernel version (lib/modules/<version>)",
            )
        })?
        .to_owned();
    Ok(GuestKernel {
        image,
        modules,
        version,
    })
}

/// A kernel release usable as a directory name: `6.1.0-57-amd64`.
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with('.')
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '~'))
}

/// The kernel the cache's `current` names, `None` when nothing was prepared.
pub fn prepared(cache_root: &Path) -> Result<Option<GuestKernel>, AssetsError> {
    let current = kernels_dir(cache_root).join("current");
    let version = match std::fs::read_to_string(&current) {
        Ok(v) => v.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &current)(e)),
    };
    if !valid_version(&version) {
        return Err(AssetsError::BrokenCache {
            path: current,
            problem: format!("`{version}` is not a kernel version"),
        });
    }
    let dir = kernels_dir(cache_root).join(&version);
    cached_kernel(&dir, &version)
        .map(Some)
        .map_err(|problem| AssetsError::BrokenCache { path: dir, problem })
}

/// The kernel in a cache directory, or what is missing.
fn cached_kernel(dir: &Path, version: &str) -> Result<GuestKernel, String> {
    let vmlinuz = dir.join("vmlinuz");
    let vmlinux = dir.join("vmlinux");
    let modules = dir.join("modules/lib/modules").join(version);
    if !vmlinuz.is_file() {
        return Err(format!("{} is missing", vmlinuz.display()));
    }
    if !modules.join("kernel").is_dir() {
        return Err(format!("{} is missing", modules.join("kernel").display()));
    }
    Ok(GuestKernel {
        image: if vmlinux.is_file() { vmlinux } else { vmlinuz },
        modules,
        version: version.to_owned(),
    })
}

/// `bot-bottle prepare qemu`: makes the distribution's current kernel the cached guest kernel,
/// downloading it only when the cache does not have it. Progress goes to `progress`, one line
/// per step.
pub fn prepare(progress: &mut dyn FnMut(&str)) -> Result<GuestKernel, AssetsError> {
    prepare_from(&KernelSource::Distribution, progress)
}

/// [`prepare`] from the given source, with Debian's tools, into [`cache_root`].
pub fn prepare_from(
    source: &KernelSource,
    progress: &mut dyn FnMut(&str),
) -> Result<GuestKernel, AssetsError> {
    prepare_with(&cache_root(), &mut DebianTools, source, progress)
}

/// [`prepare`] with the cache, the tools and the source given.
pub fn prepare_with(
    cache_root: &Path,
    tools: &mut dyn PackageTools,
    source: &KernelSource,
    progress: &mut dyn FnMut(&str),
) -> Result<GuestKernel, AssetsError> {
    let kernels = kernels_dir(cache_root);
    std::fs::create_dir_all(&kernels).map_err(io("create", &kernels))?;
    remove_stale_staging(&kernels);

    let meta = metapackage()?;
    let (package, deb) = match source {
        KernelSource::Distribution => {
            let package = tools.kernel_package(&meta)?;
            progress(&format!("kernel package: {package} (what {meta} names)"));
            (package, None)
        }
        KernelSource::Deb(deb) => (tools.package_name(deb)?, Some(deb.clone())),
    };
    let version = package
        .strip_prefix("linux-image-")
        .filter(|v| valid_version(v))
        .ok_or_else(|| match &deb {
            Some(deb) => AssetsError::BadPackage {
                package: deb.clone(),
                problem: format!(
                    "holds `{package}`, not a kernel image package (linux-image-<version>)"
                ),
            },
            None => AssetsError::NoKernelPackage {
                metapackage: meta.clone(),
                detail: format!("`{package}` is not a versioned linux-image package"),
            },
        })?
        .to_owned();
    if let Some(kernel) = already_ready(&kernels, &version)? {
        // A kernel cached before the trim existed gets it now.
        if kernel.image.file_name().is_some_and(|n| n == "vmlinux")
            && let Ok(image) = std::fs::read(&kernel.image)
            && trim_kernel(&kernel.image, image).map_err(io("trim", &kernel.image))?
        {
            progress("dropped the zeros that ended the uncompressed kernel (smaller to map)");
        }
        make_current(&kernels, &version)?;
        remove_others(&kernels, &version, progress);
        progress(&format!(
            "guest kernel {version} is ready: {}",
            kernel.image.display()
        ));
        return Ok(kernel);
    }
    let staging = Staging::new(&kernels)?;
    let deb = match deb {
        Some(deb) => deb,
        None => {
            let download = staging.path().join("download");
            std::fs::create_dir(&download).map_err(io("create", &download))?;
            progress(&format!(
                "downloading {package} with apt-get download (about 70 MB)"
            ));
            tools.download(&package, &download)?
        }
    };

    let root = staging.path().join("root");
    std::fs::create_dir(&root).map_err(io("create", &root))?;
    progress(&format!("unpacking {} with dpkg-deb -x", deb.display()));
    tools.extract(&deb, &root)?;
    let bad = |problem: String| AssetsError::BadPackage {
        package: deb.clone(),
        problem,
    };
    let unpacked = unpacked_version(&root).map_err(bad)?;
    if unpacked != version {
        return Err(bad(format!(
            "`{package}` holds boot/vmlinuz-{unpacked}, expected boot/vmlinuz-{version}"
        )));
    }
    check_config(&root.join(format!("boot/config-{version}"))).map_err(bad)?;

    // Assemble the cache entry beside the unpacked tree (same filesystem: renames only).
    let entry = staging.path().join("kernel");
    let modules_parent = entry.join("modules/lib/modules");
    std::fs::create_dir_all(&modules_parent).map_err(io("create", &modules_parent))?;
    let unpacked_modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&version))
        .find(|d| d.join("kernel").is_dir())
        .ok_or_else(|| bad(format!("has no lib/modules/{version}/kernel directory")))?;
    rename(&unpacked_modules, &modules_parent.join(&version))?;
    rename(
        &root.join(format!("boot/vmlinuz-{version}")),
        &entry.join("vmlinuz"),
    )?;
    rename(
        &root.join(format!("boot/config-{version}")),
        &entry.join("config"),
    )?;
    progress("uncompressing the kernel for direct (PVH) boot");
    match uncompress_pvh(tools, &entry.join("vmlinuz"), &entry.join("vmlinux")) {
        Ok(()) => {}
        Err(why) => {
            let _ = std::fs::remove_file(entry.join("vmlinux"));
            progress(&format!("note: booting the compressed image ({why})"));
        }
    }
    sync_filesystem(&entry)?;
    let target = kernels.join(&version);
    if let Err(e) = std::fs::rename(&entry, &target) {
        // Another `prepare` finished the same version first: keep a complete one.
        if cached_kernel(&target, &version).is_err() {
            return Err(io("move into place", &target)(e));
        }
    }
    make_current(&kernels, &version)?;
    remove_others(&kernels, &version, progress);
    drop(staging);
    let kernel = cached_kernel(&target, &version).map_err(|problem| AssetsError::BrokenCache {
        path: target.clone(),
        problem,
    })?;
    progress(&format!(
        "guest kernel {version} ready: {}",
        kernel.image.display()
    ));
    Ok(kernel)
}

fn already_ready(kernels: &Path, version: &str) -> Result<Option<GuestKernel>, AssetsError> {
    let dir = kernels.join(version);
    if !dir.exists() {
        return Ok(None);
    }
    match cached_kernel(&dir, version) {
        Ok(kernel) => Ok(Some(kernel)),
        Err(_) => {
            // Never written by us (entries appear by one rename): set it aside and redo it.
            std::fs::remove_dir_all(&dir).map_err(io("remove the incomplete", &dir))?;
            Ok(None)
        }
    }
}

fn make_current(kernels: &Path, version: &str) -> Result<(), AssetsError> {
    let current = kernels.join("current");
    state::atomic_write(&current, format!("{version}\n").as_bytes()).map_err(io("write", &current))
}

/// Removes the kernels that are no longer current (about 450 MB each). A bottle that is
/// running has its kernel in memory and its modules in its initramfs.
fn remove_others(kernels: &Path, current: &str, progress: &mut dyn FnMut(&str)) {
    let Ok(entries) = std::fs::read_dir(kernels) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == current || name == "current" || name.starts_with('.') {
            continue;
        }
        if entry.path().is_dir() && std::fs::remove_dir_all(entry.path()).is_ok() {
            progress(&format!("removed the previous guest kernel {name}"));
        }
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), AssetsError> {
    std::fs::rename(from, to).map_err(io("move", from))
}

/// Flushes the staged kernel to disk before it is renamed into place, so a crash never leaves a
/// cache entry with missing data (one `syncfs` instead of an fsync per module file).
fn sync_filesystem(dir: &Path) -> Result<(), AssetsError> {
    let handle = std::fs::File::open(dir).map_err(io("open", dir))?;
    nix::unistd::syncfs(&handle).map_err(|e| io("sync the filesystem of", dir)(e.into()))
}

/// The kernel release of an unpacked kernel package: its one `boot/vmlinuz-<version>`.
fn unpacked_version(root: &Path) -> Result<String, String> {
    let boot = root.join("boot");
    let entries = std::fs::read_dir(&boot)
        .map_err(|_| "has no boot/ directory: not a Linux kernel image package".to_owned())?;
    let versions: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    match versions.as_slice() {
        [v] if valid_version(v) => Ok(v.clone()),
        [v] => Err(format!("boot/vmlinuz-{v}: `{v}` is not a kernel version")),
        [] => Err("has no boot/vmlinuz-<version>: not a Linux kernel image package".into()),
        _ => Err(format!(
            "has {} kernel images in boot/, expected one",
            versions.len()
        )),
    }
}

/// Refuses a kernel without what the guest needs (the cloud flavour has no 9p).
fn check_config(config: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(config).map_err(|_| {
        format!(
            "has no {}: cannot check the kernel has 9p and virtio",
            config
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    })?;
    let missing: Vec<&str> = REQUIRED_CONFIG
        .iter()
        .copied()
        .filter(|option| {
            !text
                .lines()
                .any(|l| l == format!("{option}=y") || l == format!("{option}=m"))
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the kernel lacks {} (the guest shares files over 9p and talks over virtio); use the generic flavour (linux-image-<abi>-amd64), not -cloud",
            missing.join(", ")
        ))
    }
}

/// Writes the uncompressed kernel inside a bzImage to `output` when it is an ELF with a PVH
/// entry; says why not otherwise (only xz-compressed images are handled: Debian's are).
fn uncompress_pvh(
    tools: &mut dyn PackageTools,
    bzimage: &Path,
    output: &Path,
) -> Result<(), String> {
    let image = std::fs::read(bzimage).map_err(|e| e.to_string())?;
    let payload = elf::bzimage_xz_payload(&image)
        .ok_or("the image's payload is not xz-compressed".to_owned())?;
    let compressed = output.with_extension("xz");
    std::fs::write(&compressed, payload).map_err(|e| e.to_string())?;
    let result = tools.unxz(&compressed, output);
    let _ = std::fs::remove_file(&compressed);
    result.map_err(|e| match e {
        AssetsError::ToolMissing { tool } => {
            format!("`{tool}` not found; `sudo apt-get install xz-utils` makes guests boot faster")
        }
        other => other.to_string(),
    })?;
    let uncompressed = std::fs::read(output).map_err(|e| e.to_string())?;
    if elf::has_pvh_entry(&uncompressed) {
        trim_kernel(output, uncompressed).map_err(|e| e.to_string())?;
        Ok(())
    } else {
        Err("the uncompressed kernel has no PVH entry".into())
    }
}

/// Rewrites the uncompressed kernel at `path` without the zeros that end its last segment
/// ([`elf::trim_zero_tail`]): QEMU maps the file it boots for the bottle's whole life, so the
/// zeros were 23 MiB of every bottle's resident memory (bench/README.md, "start"). The code
/// and data are the distribution's, byte for byte.
fn trim_kernel(path: &Path, mut image: Vec<u8>) -> std::io::Result<bool> {
    if elf::trim_zero_tail(&mut image).is_none() {
        return Ok(false);
    }
    let tmp = path.with_extension("trim.tmp");
    std::fs::write(&tmp, &image)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// A staging directory under the cache, removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(kernels: &Path) -> Result<Staging, AssetsError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = kernels.join(format!(".staging-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io("create", &dir))?;
        Ok(Staging(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes staging directories of `prepare` runs that died (their process is gone).
fn remove_stale_staging(kernels: &Path) {
    let Ok(entries) = std::fs::read_dir(kernels) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".staging-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `qemu-system-x86_64` on `$PATH`.
pub fn find_qemu() -> Result<PathBuf, AssetsError> {
    crate::preflight::find_in_path("qemu-system-x86_64").ok_or(AssetsError::QemuMissing)
}

/// Where Debian's `busybox-static` installs busybox.
pub const BUSYBOX_PATHS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// A statically linked busybox (it runs in a guest with no libraries).
pub fn find_static_busybox() -> Result<PathBuf, AssetsError> {
    let mut problem = "no busybox at /bin/busybox".to_owned();
    for path in BUSYBOX_PATHS.map(Path::new) {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        match elf::is_static(&bytes) {
            Some(true) => return Ok(path.to_path_buf()),
            Some(false) => {
                problem = format!(
                    "{} is dynamically linked (the `busybox` package), the guest needs `busybox-static`",
                    path.display()
                );
            }
            None => problem = format!("{} is not an x86_64 executable", path.display()),
        }
    }
    Err(AssetsError::BusyboxMissing { problem })
}

/// The accelerator a qemu bottle uses on this machine: KVM when the (cached) probe booted a
/// guest with it; else TCG only when `BOT_BOTTLE_QEMU_ACCEL=tcg` allows it (print
/// [`TCG_WARNING`]); else an error naming why KVM is unusable and both fixes.
pub fn choose_accel() -> Result<Accel, AssetsError> {
    let accel_env = std::env::var(ACCEL_ENV).ok();
    // A bad value is refused before anything is probed.
    decide_accel_env(accel_env.as_deref())?;
    let kernel = guest_kernel()?;
    let status = kvm::status(&cache_root(), &kernel, false);
    decide_accel(&status, accel_env.as_deref())
}

/// Whether TCG is allowed by the value of [`ACCEL_ENV`].
fn decide_accel_env(value: Option<&str>) -> Result<bool, AssetsError> {
    match value.map(str::trim) {
        None | Some("") | Some("kvm") => Ok(false),
        Some("tcg") => Ok(true),
        Some(other) => Err(AssetsError::BadAccelEnv(other.to_owned())),
    }
}

/// The decision of [`choose_accel`] from its facts.
pub fn decide_accel(kvm: &KvmStatus, accel_env: Option<&str>) -> Result<Accel, AssetsError> {
    let tcg_allowed = decide_accel_env(accel_env)?;
    if kvm.usable {
        Ok(Accel::Kvm)
    } else if tcg_allowed {
        Ok(Accel::Tcg)
    } else {
        Err(AssetsError::KvmUnusable {
            reason: kvm.reason.clone(),
            fix: kvm
                .fix
                .clone()
                .unwrap_or_else(|| "run on a host where KVM works".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn cache_root_follows_xdg_then_home_then_passwd() {
        assert_eq!(
            cache_root_from(Some("/x/cache".into()), Some("/home/a".into()), || None),
            PathBuf::from("/x/cache/bot-bottle")
        );
        // A relative XDG_CACHE_HOME is invalid (XDG spec) and ignored.
        assert_eq!(
            cache_root_from(Some("rel".into()), Some("/home/a".into()), || None),
            PathBuf::from("/home/a/.cache/bot-bottle")
        );
        assert_eq!(
            cache_root_from(None, None, || Some("/home/p".into())),
            PathBuf::from("/home/p/.cache/bot-bottle")
        );
    }

    #[test]
    fn parse_depends_finds_the_versioned_package() {
        let out =
            "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n  Recommends: firmware\n";
        assert_eq!(
            parse_depends(out, "linux-image-amd64").as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let virtual_ = "linux-image-amd64\n  Depends: <linux-image-6.12.1-amd64>\n";
        assert_eq!(
            parse_depends(virtual_, "linux-image-amd64").as_deref(),
            Some("linux-image-6.12.1-amd64")
        );
        assert_eq!(
            parse_depends(
                "linux-image-amd64\n  Depends: linux-image-6.1.0-57-cloud-arm64\n",
                "linux-image-amd64"
            ),
            None
        );
    }

    #[test]
    fn a_missing_tool_says_how_to_do_without_it() {
        let err = run_tool(&mut Command::new("bot-bottle-no-such-dpkg-deb"), "unused").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`bot-bottle-no-such-dpkg-deb` not found: `bot-bottle prepare qemu` uses Debian's package tools (apt-cache, apt-get, dpkg-deb); on another distribution set BOT_BOTTLE_QEMU_KERNEL to a kernel image and BOT_BOTTLE_QEMU_MODULES to its lib/modules/<version> directory"
        );
        let err = run_tool(
            Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 100"]),
            "run `sudo apt-get update`",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo one >&2; echo two >&2; exit 100` failed (exit status: 100): one / two; run `sudo apt-get update`"
        );
    }

    #[test]
    fn static_and_dynamic_elf() {
        // A minimal ELF64 header with one program header of the given type.
        fn elf_with(kind: u32) -> Vec<u8> {
            let mut b = vec![0u8; 0x40 + 0x38];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2;
            b[5] = 1;
            b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
            b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
            b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            b[0x40..0x44].copy_from_slice(&kind.to_le_bytes());
            b
        }
        assert_eq!(elf::is_static(&elf_with(1)), Some(true));
        assert_eq!(elf::is_static(&elf_with(3)), Some(false));
        assert_eq!(elf::is_static(b"#!/bin/sh\n"), None);
    }

    /// A minimal kernel ELF with a PVH entry note (`Xen`, type 18).
    fn pvh_elf() -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes()); // namesz
        note.extend_from_slice(&8u32.to_le_bytes()); // descsz
        note.extend_from_slice(&18u32.to_le_bytes()); // type
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&0x1000000u64.to_le_bytes());
        let mut b = vec![0u8; 0x40 + 0x38];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[0x40..0x44].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        let offset = b.len() as u64;
        b[0x48..0x50].copy_from_slice(&offset.to_le_bytes());
        b[0x60..0x68].copy_from_slice(&(note.len() as u64).to_le_bytes());
        b.extend_from_slice(&note);
        b
    }

    /// A bzImage header around `payload` (boot protocol 2.15, one setup sector).
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        b.extend_from_slice(b"trailer");
        b
    }

    /// An ELF with two loadable segments, the last ending in zeros, and section headers after.
    fn elf_with_zero_tail() -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 2 * 0x38];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&0x200u64.to_le_bytes()); // e_shoff
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
        for (i, (offset, size)) in [(0x100u64, 0x40u64), (0x140, 0xc0)].into_iter().enumerate() {
            let at = 0x40 + i * 0x38;
            b[at..at + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            b[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            b[at + 0x20..at + 0x28].copy_from_slice(&size.to_le_bytes()); // filesz
            b[at + 0x28..at + 0x30].copy_from_slice(&size.to_le_bytes()); // memsz
        }
        b.resize(0x100, 0);
        b.extend_from_slice(&[0xAA; 0x40]);
        b.extend_from_slice(&[0xBB; 0x10]);
        b.extend_from_slice(&[0; 0xb0]);
        b.extend_from_slice(b"section headers");
        b
    }

    #[test]
    fn the_zeros_ending_the_last_segment_are_dropped_and_nothing_else() {
        let mut b = elf_with_zero_tail();
        let before = b.len();
        assert_eq!(elf::trim_zero_tail(&mut b), Some(before - 0x150));
        assert_eq!(b.len(), 0x150);
        assert!(b.ends_with(&[0xBB; 0x10]));
        // The last segment's file size is its data; its memory size is unchanged.
        let last = 0x40 + 0x38;
        assert_eq!(&b[last + 0x20..last + 0x28], &0x10u64.to_le_bytes());
        assert_eq!(&b[last + 0x28..last + 0x30], &0xc0u64.to_le_bytes());
        assert_eq!(&b[0x28..0x30], &[0; 8]);
        assert_eq!(&b[0x3c..0x40], &[0; 4]);
        // Once is enough; the first segment is untouched.
        assert_eq!(elf::trim_zero_tail(&mut b), None);
        assert_eq!(&b[0x40 + 0x20..0x40 + 0x28], &0x40u64.to_le_bytes());
        // A segment reaching past the last one's end: the layout is not trusted.
        let mut odd = elf_with_zero_tail();
        odd[0x40 + 0x20..0x40 + 0x28].copy_from_slice(&0x200u64.to_le_bytes());
        assert_eq!(elf::trim_zero_tail(&mut odd), None);
        assert_eq!(elf::trim_zero_tail(&mut b"#!/bin/sh\n".to_vec()), None);
    }

    #[test]
    fn pvh_note_is_found() {
        let mut b = pvh_elf();
        assert!(elf::has_pvh_entry(&b));
        let last = b.len() - 12;
        b[last - 4] = b'Y'; // name "Yen"
        assert!(!elf::has_pvh_entry(&b));
    }

    #[test]
    fn bzimage_payload_is_cut_by_the_header() {
        let payload = b"\xfd7zXZ\x00compressed";
        assert_eq!(
            elf::bzimage_xz_payload(&bzimage(payload)),
            Some(&payload[..])
        );
        assert_eq!(elf::bzimage_xz_payload(&bzimage(b"\x1f\x8bgzip")), None);
        assert_eq!(elf::bzimage_xz_payload(&pvh_elf()), None);
    }

    /// What the fake unpacks: a Debian kernel package's files.
    #[derive(Clone)]
    struct FakePackage {
        version: String,
        config: String,
        /// The payload of `boot/vmlinuz-<version>`'s bzImage.
        payload: Vec<u8>,
    }

    fn generic(version: &str) -> FakePackage {
        FakePackage {
            version: version.into(),
            config: REQUIRED_CONFIG.map(|o| format!("{o}=m\n")).concat(),
            payload: b"\xfd7zXZ\x00compressed".to_vec(),
        }
    }

    /// Records each call; the "repository" holds one package per version.
    struct FakeTools {
        calls: Vec<String>,
        current: String,
        packages: Vec<FakePackage>,
        download_fails: bool,
        /// What `unxz` writes (`None`: it fails).
        uncompressed: Option<Vec<u8>>,
    }

    impl FakeTools {
        fn new(packages: Vec<FakePackage>) -> FakeTools {
            FakeTools {
                calls: vec![],
                current: packages[0].version.clone(),
                packages,
                download_fails: false,
                uncompressed: Some(pvh_elf()),
            }
        }
    }

    impl PackageTools for FakeTools {
        fn kernel_package(&mut self, metapackage: &str) -> Result<String, AssetsError> {
            self.calls.push(format!("kernel_package {metapackage}"));
            Ok(format!("linux-image-{}", self.current))
        }
        fn download(&mut self, package: &str, dir: &Path) -> Result<PathBuf, AssetsError> {
            self.calls.push(format!("download {package}"));
            if self.download_fails {
                return Err(AssetsError::ToolFailed {
                    command: format!("apt-get download {package}"),
                    status: "exit status: 100".into(),
                    stderr: "E: Failed to fetch".into(),
                    fix: "check the network".into(),
                });
            }
            let deb = dir.join(format!("{package}_1_amd64.deb"));
            std::fs::write(&deb, package).unwrap();
            Ok(deb)
        }
        fn package_name(&mut self, deb: &Path) -> Result<String, AssetsError> {
            let name = deb.file_name().unwrap().to_string_lossy().into_owned();
            self.calls.push(format!("package_name {name}"));
            Ok(std::fs::read_to_string(deb).unwrap())
        }
        fn extract(&mut self, deb: &Path, dir: &Path) -> Result<(), AssetsError> {
            let name = deb.file_name().unwrap().to_string_lossy().into_owned();
            self.calls.push(format!("extract {name}"));
            let package = std::fs::read_to_string(deb).unwrap();
            let p = self
                .packages
                .iter()
                .find(|p| package == format!("linux-image-{}", p.version))
                .unwrap();
            let v = &p.version;
            std::fs::create_dir_all(dir.join("boot")).unwrap();
            std::fs::write(dir.join(format!("boot/vmlinuz-{v}")), bzimage(&p.payload)).unwrap();
            std::fs::write(dir.join(format!("boot/config-{v}")), &p.config).unwrap();
            let ko = dir.join(format!("lib/modules/{v}/kernel/fs/9p"));
            std::fs::create_dir_all(&ko).unwrap();
            std::fs::write(ko.join("9p.ko"), "ko").unwrap();
            std::fs::create_dir_all(dir.join("usr/share/doc")).unwrap();
            Ok(())
        }
        fn unxz(&mut self, _input: &Path, output: &Path) -> Result<(), AssetsError> {
            self.calls.push("unxz".into());
            match &self.uncompressed {
                Some(bytes) => {
                    std::fs::write(output, bytes).unwrap();
                    Ok(())
                }
                None => Err(AssetsError::ToolMissing { tool: "xz".into() }),
            }
        }
    }

    fn run_prepare(
        cache: &Path,
        tools: &mut FakeTools,
        source: &KernelSource,
    ) -> (Result<GuestKernel, AssetsError>, Vec<String>) {
        let mut lines = Vec::new();
        let result = prepare_with(cache, tools, source, &mut |l| lines.push(l.to_owned()));
        (result, lines)
    }

    /// The names in the kernels directory (no staging left behind).
    fn listing(cache: &Path) -> Vec<String> {
        super::super::names_in(&kernels_dir(cache))
    }

    #[test]
    fn prepare_downloads_unpacks_and_caches_then_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let v = "6.1.0-57-amd64";
        let mut tools = FakeTools::new(vec![generic(v)]);
        let (kernel, lines) = run_prepare(cache, &mut tools, &KernelSource::Distribution);
        let entry = cache.join("qemu/kernel").join(v);
        let expected = GuestKernel {
            image: entry.join("vmlinux"),
            modules: entry.join("modules/lib/modules").join(v),
            version: v.into(),
        };
        assert_eq!(kernel.unwrap(), expected);
        assert_eq!(
            tools.calls,
            vec![
                "kernel_package linux-image-amd64".to_owned(),
                format!("download linux-image-{v}"),
                format!("extract linux-image-{v}_1_amd64.deb"),
                "unxz".into(),
            ]
        );
        let staging = lines[2]
            .strip_prefix("unpacking ")
            .and_then(|l| l.strip_suffix(" with dpkg-deb -x"))
            .unwrap()
            .to_owned();
        assert_eq!(
            lines,
            vec![
                format!("kernel package: linux-image-{v} (what linux-image-amd64 names)"),
                format!("downloading linux-image-{v} with apt-get download (about 70 MB)"),
                format!("unpacking {staging} with dpkg-deb -x"),
                "uncompressing the kernel for direct (PVH) boot".into(),
                format!("guest kernel {v} ready: {}", expected.image.display()),
            ]
        );
        assert_eq!(listing(cache), vec![v.to_owned(), "current".into()]);
        assert_eq!(
            std::fs::read(&expected.image).unwrap(),
            pvh_elf(),
            "vmlinux is the uncompressed kernel"
        );
        assert!(expected.modules.join("kernel/fs/9p/9p.ko").is_file());
        assert_eq!(guest_kernel_from(None, None, cache).unwrap(), expected);

        // Second run: nothing downloaded, the same kernel.
        tools.calls.clear();
        let (again, lines) = run_prepare(cache, &mut tools, &KernelSource::Distribution);
        assert_eq!(again.unwrap(), expected);
        assert_eq!(tools.calls, vec!["kernel_package linux-image-amd64"]);
        assert_eq!(
            lines,
            vec![
                format!("kernel package: linux-image-{v} (what linux-image-amd64 names)"),
                format!("guest kernel {v} is ready: {}", expected.image.display()),
            ]
        );
    }

    #[test]
    fn a_newer_distribution_kernel_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let (old, new) = ("6.1.0-50-amd64", "6.1.0-57-amd64");
        let mut tools = FakeTools::new(vec![generic(old), generic(new)]);
        run_prepare(cache, &mut tools, &KernelSource::Distribution)
            .0
            .unwrap();
        tools.current = new.into();
        tools.calls.clear();
        let (kernel, lines) = run_prepare(cache, &mut tools, &KernelSource::Distribution);
        let kernel = kernel.unwrap();
        assert_eq!(kernel.version, new);
        assert_eq!(
            tools.calls,
            vec![
                "kernel_package linux-image-amd64".to_owned(),
                format!("download linux-image-{new}"),
                format!("extract linux-image-{new}_1_amd64.deb"),
                "unxz".into(),
            ]
        );
        assert_eq!(
            guest_kernel_from(None, None, cache).unwrap().version,
            new.to_owned()
        );
        assert_eq!(listing(cache), vec![new.to_owned(), "current".into()]);
        assert_eq!(
            lines[lines.len() - 2..],
            [
                format!("removed the previous guest kernel {old}"),
                format!(
                    "guest kernel {new} ready: {}",
                    cache
                        .join("qemu/kernel")
                        .join(new)
                        .join("vmlinux")
                        .display()
                ),
            ]
        );
    }

    #[test]
    fn a_kernel_without_9p_is_refused_and_nothing_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let v = "6.1.0-57-cloud-amd64";
        let cloud = FakePackage {
            config: "CONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_CONSOLE=m\nCONFIG_VIRTIO_NET=m\n".into(),
            ..generic(v)
        };
        let mut tools = FakeTools::new(vec![cloud]);
        let deb = dir.path().join(format!("linux-image-{v}.deb"));
        std::fs::write(&deb, format!("linux-image-{v}")).unwrap();
        let (result, _) = run_prepare(cache, &mut tools, &KernelSource::Deb(deb.clone()));
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "{}: the kernel lacks CONFIG_9P_FS, CONFIG_NET_9P_VIRTIO (the guest shares files over 9p and talks over virtio); use the generic flavour (linux-image-<abi>-amd64), not -cloud",
                deb.display()
            )
        );
        assert_eq!(
            tools.calls,
            vec![
                format!("package_name linux-image-{v}.deb"),
                format!("extract linux-image-{v}.deb")
            ]
        );
        assert_eq!(listing(cache), Vec::<String>::new());
        assert_eq!(
            guest_kernel_from(None, None, cache)
                .unwrap_err()
                .to_string(),
            format!(
                "no guest kernel for the qemu backend in {}; run `bot-bottle prepare qemu`, or set BOT_BOTTLE_QEMU_KERNEL and BOT_BOTTLE_QEMU_MODULES to a kernel of your own",
                cache.join("qemu/kernel").display()
            )
        );
    }

    #[test]
    fn a_local_deb_is_unpacked_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let v = "6.1.0-50-amd64";
        let mut tools = FakeTools::new(vec![generic(v)]);
        let deb = dir.path().join("k.deb");
        std::fs::write(&deb, format!("linux-image-{v}")).unwrap();
        let source = KernelSource::Deb(deb.clone());
        let first = run_prepare(&cache, &mut tools, &source).0.unwrap();
        assert_eq!(
            tools.calls,
            vec![
                "package_name k.deb".to_owned(),
                "extract k.deb".into(),
                "unxz".into()
            ]
        );
        tools.calls.clear();
        let (second, lines) = run_prepare(&cache, &mut tools, &source);
        assert_eq!(second.unwrap(), first);
        assert_eq!(tools.calls, vec!["package_name k.deb"]);
        assert_eq!(
            lines,
            vec![format!(
                "guest kernel {v} is ready: {}",
                first.image.display()
            )]
        );
        // A package that is not a kernel image is refused before anything is unpacked.
        std::fs::write(&deb, "linux-headers-6.1.0-50-amd64").unwrap();
        tools.calls.clear();
        assert_eq!(
            run_prepare(&cache, &mut tools, &source)
                .0
                .unwrap_err()
                .to_string(),
            format!(
                "{}: holds `linux-headers-6.1.0-50-amd64`, not a kernel image package (linux-image-<version>)",
                deb.display()
            )
        );
        assert_eq!(tools.calls, vec!["package_name k.deb"]);
    }

    #[test]
    fn a_failed_download_leaves_no_staging() {
        let dir = tempfile::tempdir().unwrap();
        let mut tools = FakeTools::new(vec![generic("6.1.0-57-amd64")]);
        tools.download_fails = true;
        let (result, _) = run_prepare(dir.path(), &mut tools, &KernelSource::Distribution);
        assert_eq!(
            result.unwrap_err().to_string(),
            "`apt-get download linux-image-6.1.0-57-amd64` failed (exit status: 100): E: Failed to fetch; check the network"
        );
        assert_eq!(listing(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn without_xz_the_compressed_image_is_booted() {
        let dir = tempfile::tempdir().unwrap();
        let v = "6.1.0-57-amd64";
        let mut tools = FakeTools::new(vec![generic(v)]);
        tools.uncompressed = None;
        let (kernel, lines) = run_prepare(dir.path(), &mut tools, &KernelSource::Distribution);
        let kernel = kernel.unwrap();
        assert_eq!(
            kernel.image,
            dir.path().join("qemu/kernel").join(v).join("vmlinuz")
        );
        assert!(
            lines.contains(
                &"note: booting the compressed image (`xz` not found; `sudo apt-get install xz-utils` makes guests boot faster)"
                    .to_owned()
            ),
            "{lines:#?}"
        );
        // An uncompressed kernel without a PVH entry is not used either.
        let dir = tempfile::tempdir().unwrap();
        let mut tools = FakeTools::new(vec![generic(v)]);
        tools.uncompressed = Some(b"\x7fELF not a kernel".to_vec());
        let kernel = run_prepare(dir.path(), &mut tools, &KernelSource::Distribution)
            .0
            .unwrap();
        assert_eq!(kernel.image.file_name().unwrap(), "vmlinuz");
        assert_eq!(listing(dir.path()), vec![v.to_owned(), "current".into()]);
    }

    #[test]
    fn a_cache_entry_missing_its_modules_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let v = "6.1.0-57-amd64";
        let mut tools = FakeTools::new(vec![generic(v)]);
        run_prepare(cache, &mut tools, &KernelSource::Distribution)
            .0
            .unwrap();
        let modules = cache.join("qemu/kernel").join(v).join("modules");
        std::fs::remove_dir_all(&modules).unwrap();
        assert_eq!(
            guest_kernel_from(None, None, cache)
                .unwrap_err()
                .to_string(),
            format!(
                "the prepared guest kernel in {} is incomplete ({} is missing); run `bot-bottle prepare qemu` again",
                cache.join("qemu/kernel").join(v).display(),
                modules.join("lib/modules").join(v).join("kernel").display()
            )
        );
        // prepare replaces the incomplete entry.
        let kernel = run_prepare(cache, &mut tools, &KernelSource::Distribution)
            .0
            .unwrap();
        assert!(kernel.modules.join("kernel/fs/9p/9p.ko").is_file());
    }

    #[test]
    fn the_users_kernel_wins_and_needs_both_variables() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("vmlinuz");
        std::fs::write(&image, "kernel").unwrap();
        let modules = dir.path().join("lib/modules/6.12.0-custom");
        std::fs::create_dir_all(&modules).unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(
            guest_kernel_from(
                Some(image.clone().into()),
                Some(modules.clone().into()),
                &cache
            )
            .unwrap(),
            GuestKernel {
                image: image.clone(),
                modules: modules.clone(),
                version: "6.12.0-custom".into(),
            }
        );
        assert_eq!(
            guest_kernel_from(Some(image.clone().into()), None, &cache)
                .unwrap_err()
                .to_string(),
            "BOT_BOTTLE_QEMU_KERNEL is set but BOT_BOTTLE_QEMU_MODULES is not; set both (the kernel image and its lib/modules/<version> directory) or neither"
        );
        assert_eq!(
            guest_kernel_from(None, Some(modules.clone().into()), &cache)
                .unwrap_err()
                .to_string(),
            "BOT_BOTTLE_QEMU_MODULES is set but BOT_BOTTLE_QEMU_KERNEL is not; set both (the kernel image and its lib/modules/<version> directory) or neither"
        );
        assert_eq!(
            guest_kernel_from(
                Some(modules.clone().into()),
                Some(modules.clone().into()),
                &cache
            )
            .unwrap_err()
            .to_string(),
            format!(
                "BOT_BOTTLE_QEMU_KERNEL={}: not a kernel image (a non-empty file)",
                modules.display()
            )
        );
        assert_eq!(
            guest_kernel_from(
                Some(image.clone().into()),
                Some(image.clone().into()),
                &cache
            )
            .unwrap_err()
            .to_string(),
            format!(
                "BOT_BOTTLE_QEMU_MODULES={}: not a directory; name the kernel's lib/modules/<version> directory",
                image.display()
            )
        );
    }

    fn kvm(usable: bool) -> KvmStatus {
        KvmStatus {
            usable,
            reason: if usable {
                "a test guest booted under KVM".into()
            } else {
                "KVM is present but cannot boot a guest: a test guest did not reach userspace within 10 s".into()
            },
            fix: (!usable).then(|| "run on a host with hardware virtualisation".into()),
            cached: true,
        }
    }

    #[test]
    fn accel_is_kvm_when_it_boots_else_tcg_only_when_allowed() {
        assert_eq!(decide_accel(&kvm(true), None).unwrap(), Accel::Kvm);
        // KVM, the stronger boundary, is used whenever it works, even with TCG allowed.
        assert_eq!(decide_accel(&kvm(true), Some("tcg")).unwrap(), Accel::Kvm);
        assert_eq!(decide_accel(&kvm(false), Some("tcg")).unwrap(), Accel::Tcg);
        assert_eq!(
            decide_accel(&kvm(false), None).unwrap_err().to_string(),
            "KVM cannot run a qemu bottle here: KVM is present but cannot boot a guest: a test guest did not reach userspace within 10 s; fix: run on a host with hardware virtualisation, or allow software emulation with BOT_BOTTLE_QEMU_ACCEL=tcg (slow, and upstream QEMU does not treat TCG as a security boundary; the jail around QEMU still holds)"
        );
        assert_eq!(
            decide_accel(&kvm(false), Some("kvm"))
                .unwrap_err()
                .to_string(),
            decide_accel(&kvm(false), None).unwrap_err().to_string()
        );
        assert_eq!(
            decide_accel(&kvm(true), Some("TCG"))
                .unwrap_err()
                .to_string(),
            "BOT_BOTTLE_QEMU_ACCEL=TCG is not understood; set it to `tcg` (allow software emulation where KVM cannot boot a guest) or `kvm` (the default: KVM or nothing), or unset it"
        );
    }

    #[test]
    fn required_config_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config-6.1.0-57-cloud-amd64");
        std::fs::write(
            &config,
            "CONFIG_VIRTIO_MMIO=m\n# CONFIG_9P_FS is not set\nCONFIG_VIRTIO_CONSOLE=y\nCONFIG_VIRTIO_NET=m\n",
        )
        .unwrap();
        assert_eq!(
            check_config(&config),
            Err("the kernel lacks CONFIG_9P_FS, CONFIG_NET_9P_VIRTIO (the guest shares files over 9p and talks over virtio); use the generic flavour (linux-image-<abi>-amd64), not -cloud".to_owned())
        );
    }
}
