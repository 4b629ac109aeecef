//! Can KVM run a qemu bottle here? A cached probe decides, because `/dev/kvm` existing proves
//! little: under nested paravirtualisation (PVM, as on some cloud sandboxes) `/dev/kvm` opens
//! fine and a stock kernel then hangs in early boot.
//!
//! The probe boots the prepared guest kernel with a tiny initramfs of our own (a static busybox
//! whose `/init` prints a marker and powers off) under `-accel kvm`, bounded by
//! [`PROBE_TIMEOUT`]; a guest that has not printed the marker by then is killed and KVM is
//! judged unusable with the reason. The verdict is cached under the cache root keyed by
//! (guest kernel, QEMU version, host kernel): a start does not pay for the probe again until
//! one of them changes (or `bot-bottle prepare qemu --reprobe`). The cheap facts (`/dev/kvm`
//! missing or not openable, no QEMU, no static busybox) are checked every time, never cached.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::assets::{self, Accel, GuestKernel};

/// How long a test guest may take to boot under KVM. A guest boots in well under a second with
/// working KVM, even on a loaded host; a hung one is killed at this bound.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the test guest's `/init` prints once it runs.
const MARKER: &str = "BOT-BOTTLE-KVM-PROBE-BOOTED";

/// Whether KVM can run a qemu bottle, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmStatus {
    /// A test guest booted under KVM.
    pub usable: bool,
    /// What was found, one line (`a test guest booted under KVM`, `/dev/kvm is missing`, ...).
    pub reason: String,
    /// What makes KVM usable, when it is not.
    pub fix: Option<String>,
    /// Whether the verdict came from the cache rather than a probe run now.
    pub cached: bool,
}

impl KvmStatus {
    fn unusable(reason: impl Into<String>, fix: impl Into<String>) -> KvmStatus {
        KvmStatus {
            usable: false,
            reason: reason.into(),
            fix: Some(fix.into()),
            cached: false,
        }
    }
}

/// What the cached verdict is valid for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeKey {
    /// The guest kernel's version.
    pub guest_kernel: String,
    /// `qemu-system-x86_64 --version`'s first line.
    pub qemu: String,
    /// The host kernel's release.
    pub host_kernel: String,
}

/// The outcome of one probe, as cached in `<cache>/qemu/kvm-probe.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub key: ProbeKey,
    /// Whether the test guest printed its marker.
    pub boots: bool,
    /// Why (not), one line.
    pub reason: String,
}

/// The state of `/dev/kvm` for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevKvm {
    Missing,
    /// It exists but opening it read-write failed (the error).
    Unopenable(String),
    Openable,
}

/// Looks at `/dev/kvm`.
pub fn dev_kvm() -> DevKvm {
    let path = Path::new("/dev/kvm");
    if !path.exists() {
        return DevKvm::Missing;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => DevKvm::Openable,
        Err(e) => DevKvm::Unopenable(e.to_string()),
    }
}

const FIX_NO_KVM: &str = "run on a host with hardware virtualisation (bare metal, or a VM with nested VT-x/AMD-V) and load kvm_intel or kvm_amd";

/// The fix when KVM is present but cannot boot a guest.
fn fix_cannot_boot(cache_root: &Path) -> String {
    format!(
        "{FIX_NO_KVM}, then `bot-bottle prepare qemu --reprobe` (the verdict is cached in {})",
        cache_file(cache_root).display()
    )
}

/// Where the verdict is cached.
pub fn cache_file(cache_root: &Path) -> PathBuf {
    assets::qemu_cache(cache_root).join("kvm-probe.json")
}

/// Whether KVM can run `kernel` here: the cheap facts first, then the cached verdict, probing
/// (at most [`PROBE_TIMEOUT`]) when there is none for this key or `refresh` asks for a new one.
pub fn status(cache_root: &Path, kernel: &GuestKernel, refresh: bool) -> KvmStatus {
    match dev_kvm() {
        DevKvm::Missing => {
            return KvmStatus::unusable("/dev/kvm is missing", FIX_NO_KVM);
        }
        DevKvm::Unopenable(error) => {
            return KvmStatus::unusable(
                format!("/dev/kvm exists but cannot be opened ({error})"),
                "sudo usermod -aG kvm $USER (then log in again)",
            );
        }
        DevKvm::Openable => {}
    }
    let qemu = match assets::find_qemu() {
        Ok(qemu) => qemu,
        Err(e) => {
            return KvmStatus::unusable(
                "cannot probe KVM: qemu-system-x86_64 is not installed",
                e.to_string()
                    .split_once("fix: ")
                    .map(|(_, fix)| fix.to_owned())
                    .unwrap_or_default(),
            );
        }
    };
    let busybox = match assets::find_static_busybox() {
        Ok(busybox) => busybox,
        Err(e) => {
            return KvmStatus::unusable(
                format!("cannot probe KVM: {e}"),
                "sudo apt-get install busybox-static",
            );
        }
    };
    let key = ProbeKey {
        guest_kernel: kernel.version.clone(),
        qemu: qemu_version(&qemu).unwrap_or_else(|| "unknown".into()),
        host_kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into()),
    };
    let file = cache_file(cache_root);
    if !refresh && let Some(verdict) = read_cached(&file, &key) {
        return from_verdict(&verdict, true, cache_root);
    }
    let verdict = probe(&Probe {
        qemu: &qemu,
        busybox: &busybox,
        kernel,
        key,
        scratch_parent: &assets::qemu_cache(cache_root),
        timeout: PROBE_TIMEOUT,
        accel: Accel::Kvm,
    });
    if let Ok(json) = serde_json::to_vec_pretty(&verdict) {
        // A verdict that cannot be cached is still the verdict; the next start probes again.
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = state::atomic_write(&file, &json) {
            tracing::warn!(file = %file.display(), error = %e, "could not cache the KVM probe's verdict");
        }
    }
    from_verdict(&verdict, false, cache_root)
}

fn from_verdict(verdict: &Verdict, cached: bool, cache_root: &Path) -> KvmStatus {
    KvmStatus {
        usable: verdict.boots,
        reason: verdict.reason.clone(),
        fix: (!verdict.boots).then(|| fix_cannot_boot(cache_root)),
        cached,
    }
}

/// The cached verdict when it is for `key`.
pub fn read_cached(file: &Path, key: &ProbeKey) -> Option<Verdict> {
    let bytes = std::fs::read(file).ok()?;
    let verdict: Verdict = serde_json::from_slice(&bytes).ok()?;
    (verdict.key == *key).then_some(verdict)
}

/// `qemu-system-x86_64 --version`'s first line, cached in `<cache>/qemu/qemu-version.json`
/// for the binary's path, size, inode and modification time: the probe runs QEMU (tens of
/// milliseconds, seconds on a loaded host) and `start` asks up to four times; a new QEMU (a
/// package upgrade replaces the file) is probed again.
pub fn qemu_version(qemu: &Path) -> Option<String> {
    qemu_version_cached(qemu, &assets::qemu_cache(&assets::cache_root()))
}

/// What identifies one build of QEMU on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct BinaryKey {
    path: PathBuf,
    size: u64,
    inode: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl BinaryKey {
    fn of(path: &Path) -> Option<BinaryKey> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(BinaryKey {
            path: path.to_path_buf(),
            size: meta.len(),
            inode: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CachedVersion {
    key: BinaryKey,
    version: String,
}

/// [`qemu_version`] with its cache directory given.
pub fn qemu_version_cached(qemu: &Path, cache_dir: &Path) -> Option<String> {
    let file = cache_dir.join("qemu-version.json");
    let key = BinaryKey::of(qemu);
    if let Some(key) = &key
        && let Ok(bytes) = std::fs::read(&file)
        && let Ok(cached) = serde_json::from_slice::<CachedVersion>(&bytes)
        && cached.key == *key
    {
        return Some(cached.version);
    }
    let version = run_qemu_version(qemu)?;
    if let Some(key) = key
        && let Ok(json) = serde_json::to_vec_pretty(&CachedVersion {
            key,
            version: version.clone(),
        })
    {
        // Not cached: the next start asks QEMU again.
        let _ = std::fs::create_dir_all(cache_dir);
        let _ = state::atomic_write(&file, &json);
    }
    Some(version)
}

/// Runs `qemu --version`.
fn run_qemu_version(qemu: &Path) -> Option<String> {
    let output = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next()?.trim();
    (output.status.success() && !line.is_empty()).then(|| line.to_owned())
}

/// One probe's inputs.
pub struct Probe<'a> {
    pub qemu: &'a Path,
    /// A statically linked busybox for the test guest's `/init`.
    pub busybox: &'a Path,
    pub kernel: &'a GuestKernel,
    pub key: ProbeKey,
    /// Where the probe's scratch directory (initramfs, console log) is made and removed.
    pub scratch_parent: &'a Path,
    pub timeout: Duration,
    /// [`Accel::Kvm`] to judge KVM; [`Accel::Tcg`] boots the same guest under emulation (the
    /// tests use it to prove the probe recognises a guest that boots).
    pub accel: Accel,
}

/// Boots a test guest under KVM and judges the outcome. Always returns within `timeout` plus
/// the time to build a 2 MB initramfs and kill QEMU.
pub fn probe(p: &Probe<'_>) -> Verdict {
    let (boots, reason) = match run_probe(p) {
        Ok(outcome) => outcome,
        Err(why) => (
            false,
            format!("KVM is present but could not be probed: {why}"),
        ),
    };
    Verdict {
        key: p.key.clone(),
        boots,
        reason,
    }
}

fn run_probe(p: &Probe<'_>) -> Result<(bool, String), String> {
    std::fs::create_dir_all(p.scratch_parent)
        .map_err(|e| format!("create {}: {e}", p.scratch_parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".kvm-probe-")
        .tempdir_in(p.scratch_parent)
        .map_err(|e| {
            format!(
                "create a scratch directory in {}: {e}",
                p.scratch_parent.display()
            )
        })?;
    let initramfs = scratch.path().join("probe.cpio");
    let console = scratch.path().join("console.log");
    let busybox =
        std::fs::read(p.busybox).map_err(|e| format!("read {}: {e}", p.busybox.display()))?;
    std::fs::write(&initramfs, probe_initramfs(&busybox))
        .map_err(|e| format!("write {}: {e}", initramfs.display()))?;

    let (cpu, append) = match p.accel {
        Accel::Kvm => ("host", "console=ttyS0 panic=-1 rdinit=/init".to_owned()),
        // Without the TSC's frequency an emulated guest calibrates it against the PIT, which
        // hangs under load.
        Accel::Tcg => (
            "max",
            match tsc_khz() {
                Some(khz) => format!("console=ttyS0 panic=-1 rdinit=/init tsc_early_khz={khz}"),
                None => "console=ttyS0 panic=-1 rdinit=/init".to_owned(),
            },
        ),
    };
    let mut command = Command::new(p.qemu);
    command
        .args(["-accel", p.accel.name(), "-cpu", cpu])
        .args(["-M", "microvm,pit=on,pic=on,rtc=on"])
        .args(["-m", "128", "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-net", "none", "-monitor", "none"])
        .arg("-chardev")
        .arg(format!(
            "file,id=console,path={}",
            option_value(&console.to_string_lossy())
        ))
        .args(["-serial", "chardev:console"])
        .arg("-kernel")
        .arg(&p.kernel.image)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("start {}: {e}", p.qemu.display()))?;
    // QEMU's stderr (where "KVM internal error" goes), bounded.
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(64 * 1024).read_to_string(&mut text);
        }
        text
    });
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= p.timeout => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("wait for {}: {e}", p.qemu.display()));
            }
        }
    };
    if exit.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = reader.join().unwrap_or_default();
    let console_text = std::fs::read(&console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(judge(
        p.accel,
        exit.map(|s| s.to_string()),
        &console_text,
        &stderr,
        Path::new("/sys/module/kvm_pvm").exists(),
        p.timeout,
    ))
}

/// The host's CPU frequency in kHz (`cpu MHz` of `/proc/cpuinfo`).
fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then_some((mhz * 1000.0) as u64)
}

/// A value inside one of QEMU's `key=value,...` options: a comma is written twice.
fn option_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// The verdict from what the test guest did: `exit` is QEMU's exit status (`None`: killed at
/// the timeout).
fn judge(
    accel: Accel,
    exit: Option<String>,
    console: &str,
    stderr: &str,
    pvm: bool,
    timeout: Duration,
) -> (bool, String) {
    if console.contains(MARKER) {
        let under = match accel {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        };
        return (true, format!("a test guest booted under {under}"));
    }
    let what = if let Some(line) = stderr.lines().find(|l| l.contains("KVM internal error")) {
        format!("QEMU reported `{}`", line.trim())
    } else if let Some(status) = exit {
        let detail = stderr.lines().map(str::trim).rfind(|l| !l.is_empty());
        match detail {
            Some(line) => format!("a test guest stopped ({status}) before userspace: {line}"),
            None => format!("a test guest stopped ({status}) before userspace"),
        }
    } else {
        format!(
            "a test guest did not reach userspace within {} s",
            timeout.as_secs()
        )
    };
    let host = if pvm {
        " (nested PVM: /sys/module/kvm_pvm is loaded)"
    } else {
        ""
    };
    (
        false,
        format!("KVM is present but cannot boot a guest{host}: {what}"),
    )
}

/// A cpio (newc) initramfs: `/bin/busybox`, `/dev/console` and an `/init` that prints the
/// marker and powers off.
fn probe_initramfs(busybox: &[u8]) -> Vec<u8> {
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n");
    let mut out = Vec::with_capacity(busybox.len() + 1024);
    let mut ino = 0;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        ino += 1;
        let name_size = name.len() + 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name_size as u32,
            0,
        ];
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    entry("bin", 0o040755, (0, 0), &[]);
    entry("dev", 0o040755, (0, 0), &[]);
    entry("dev/console", 0o020600, (5, 1), &[]);
    entry("bin/busybox", 0o100755, (0, 0), busybox);
    entry("init", 0o100755, (0, 0), init.as_bytes());
    entry("TRAILER!!!", 0, (0, 0), &[]);
    out
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn marker_means_usable() {
        let console = format!("[    0.9] Run /init\n{MARKER}\n[    1.0] reboot: Power down\n");
        assert_eq!(
            judge(
                Accel::Kvm,
                Some("exit status: 0".into()),
                &console,
                "",
                false,
                T
            ),
            (true, "a test guest booted under KVM".to_owned())
        );
    }

    #[test]
    fn a_hang_under_pvm_is_named() {
        assert_eq!(
            judge(Accel::Kvm, None, "Probing EDD (edd=off to disable)... ok\n", "", true, T),
            (
                false,
                "KVM is present but cannot boot a guest (nested PVM: /sys/module/kvm_pvm is loaded): a test guest did not reach userspace within 10 s".to_owned()
            )
        );
    }

    #[test]
    fn kvm_internal_error_is_quoted() {
        let stderr = "KVM internal error. Suberror: 1\nemulation failure\nRAX=0 ...\n";
        assert_eq!(
            judge(Accel::Kvm, None, "", stderr, false, T),
            (
                false,
                "KVM is present but cannot boot a guest: QEMU reported `KVM internal error. Suberror: 1`".to_owned()
            )
        );
        assert_eq!(
            judge(
                Accel::Kvm,
                Some("exit status: 1".into()),
                "",
                "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied\n",
                false,
                T
            ),
            (
                false,
                "KVM is present but cannot boot a guest: a test guest stopped (exit status: 1) before userspace: qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied".to_owned()
            )
        );
    }

    #[test]
    fn commas_in_option_values_are_doubled() {
        assert_eq!(
            option_value("/home/a,b/.cache/console.log"),
            "/home/a,,b/.cache/console.log"
        );
    }

    #[test]
    fn initramfs_is_newc_with_a_trailer() {
        let cpio = probe_initramfs(b"BUSYBOX");
        assert!(cpio.starts_with(b"070701"));
        assert_eq!(cpio.len() % 4, 0);
        let text = String::from_utf8_lossy(&cpio);
        for name in [
            "bin\0",
            "dev/console\0",
            "bin/busybox\0",
            "init\0",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(name), "{name:?} missing");
        }
        assert!(text.contains(&format!("/bin/busybox echo {MARKER}")));
    }

    #[test]
    fn the_qemu_version_is_asked_once_per_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let qemu = dir.path().join("qemu-system-x86_64");
        let calls = dir.path().join("calls");
        let write_qemu = |version: &str| {
            let script = format!(
                "#!/bin/sh\necho x >> '{}'\necho 'QEMU emulator version {version}'\n",
                calls.display()
            );
            // A new file, as a package upgrade makes: a new inode and modification time.
            let tmp = dir.path().join("new");
            std::fs::write(&tmp, script).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &qemu).unwrap();
        };
        let count = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        write_qemu("7.2.22");
        for _ in 0..3 {
            assert_eq!(
                qemu_version_cached(&qemu, &cache).as_deref(),
                Some("QEMU emulator version 7.2.22")
            );
        }
        assert_eq!(count(), 1);
        write_qemu("8.2.10");
        assert_eq!(
            qemu_version_cached(&qemu, &cache).as_deref(),
            Some("QEMU emulator version 8.2.10")
        );
        assert_eq!(count(), 2);
        // A QEMU that is gone is not answered from the cache.
        std::fs::remove_file(&qemu).unwrap();
        assert_eq!(qemu_version_cached(&qemu, &cache), None);
    }

    #[test]
    fn cached_verdict_is_used_only_for_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kvm-probe.json");
        let key = ProbeKey {
            guest_kernel: "6.1.0-57-amd64".into(),
            qemu: "QEMU emulator version 7.2.22".into(),
            host_kernel: "6.18.44".into(),
        };
        let verdict = Verdict {
            key: key.clone(),
            boots: false,
            reason: "KVM is present but cannot boot a guest".into(),
        };
        std::fs::write(&file, serde_json::to_vec(&verdict).unwrap()).unwrap();
        assert_eq!(read_cached(&file, &key), Some(verdict));
        let newer_qemu = ProbeKey {
            qemu: "QEMU emulator version 8.2.0".into(),
            ..key
        };
        assert_eq!(read_cached(&file, &newer_qemu), None);
    }
}
