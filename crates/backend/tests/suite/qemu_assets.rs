//! The qemu backend's assets with the real tools: `dpkg-deb` unpacking a kernel package we
//! build (tests never download), `xz` uncompressing the kernel inside it, and the KVM probe
//! booting a real test guest under QEMU with the prepared kernel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use backend::qemu::assets::{self, DebianTools, GuestKernel, KernelSource};
use backend::qemu::kvm;
use pretty_assertions::assert_eq;

fn have(tool: &str) -> bool {
    backend::preflight::find_in_path(tool).is_some()
}

/// A minimal kernel ELF with the PVH entry note (`Xen`, type 18) and some text.
fn pvh_elf() -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&8u32.to_le_bytes());
    note.extend_from_slice(&18u32.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&0x1000000u64.to_le_bytes());
    let mut b = vec![0u8; 0x40 + 0x38];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    b[0x40..0x44].copy_from_slice(&4u32.to_le_bytes());
    let offset = b.len() as u64;
    b[0x48..0x50].copy_from_slice(&offset.to_le_bytes());
    b[0x60..0x68].copy_from_slice(&(note.len() as u64).to_le_bytes());
    b.extend_from_slice(&note);
    b.extend_from_slice(&b"kernel text ".repeat(1000));
    b
}

/// A bzImage (boot protocol 2.15) whose payload is `elf` compressed by the real `xz`.
fn bzimage(elf: &[u8], scratch: &Path) -> Vec<u8> {
    let raw = scratch.join("vmlinux.raw");
    std::fs::write(&raw, elf).unwrap();
    let out = Command::new("xz")
        .args(["--format=xz", "--check=crc32", "--stdout"])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success());
    let payload = out.stdout;
    let mut b = vec![0u8; 1024];
    b[0x1f1] = 1;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&payload);
    b.extend_from_slice(&(elf.len() as u32).to_le_bytes());
    b
}

/// Builds `linux-image-<version>` with `dpkg-deb -b`: a kernel, its config and one module.
fn kernel_deb(version: &str, dir: &Path) -> (PathBuf, Vec<u8>) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: linux-image-{version}\nVersion: 6.1.999-1\nArchitecture: amd64\nMaintainer: bot-bottle tests <tests@invalid>\nDescription: a fake kernel package for the tests\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    let elf = pvh_elf();
    std::fs::write(
        tree.join(format!("boot/vmlinuz-{version}")),
        bzimage(&elf, dir),
    )
    .unwrap();
    std::fs::write(
        tree.join(format!("boot/config-{version}")),
        "CONFIG_VIRTIO_MMIO=m\nCONFIG_9P_FS=m\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_VIRTIO_CONSOLE=m\nCONFIG_VIRTIO_NET=m\n",
    )
    .unwrap();
    let ko = tree.join(format!("lib/modules/{version}/kernel/fs/9p"));
    std::fs::create_dir_all(&ko).unwrap();
    std::fs::write(ko.join("9p.ko"), "a module").unwrap();
    let deb = dir.join(format!("linux-image-{version}_6.1.999-1_amd64.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (deb, elf)
}

#[test]
fn prepare_unpacks_a_kernel_package_with_dpkg_deb_and_uncompresses_it() {
    if !have("dpkg-deb") || !have("xz") {
        eprintln!("skipping: needs dpkg-deb and xz (apt-get install dpkg xz-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let version = "6.1.0-999-amd64";
    let (deb, elf) = kernel_deb(version, dir.path());
    let cache = dir.path().join("cache");
    let mut lines = Vec::new();
    let kernel = assets::prepare_with(
        &cache,
        &mut DebianTools,
        &KernelSource::Deb(deb.clone()),
        &mut |l| lines.push(l.to_owned()),
    )
    .unwrap();
    let entry = cache.join("qemu/kernel").join(version);
    assert_eq!(
        kernel,
        GuestKernel {
            image: entry.join("vmlinux"),
            modules: entry.join("modules/lib/modules").join(version),
            version: version.into(),
        }
    );
    assert_eq!(std::fs::read(&kernel.image).unwrap(), elf);
    assert_eq!(
        std::fs::read_to_string(kernel.modules.join("kernel/fs/9p/9p.ko")).unwrap(),
        "a module"
    );
    assert_eq!(
        lines,
        vec![
            format!("unpacking {} with dpkg-deb -x", deb.display()),
            "uncompressing the kernel for direct (PVH) boot".to_owned(),
            format!("guest kernel {version} ready: {}", kernel.image.display()),
        ]
    );
    // What `start` finds, and a second run that only reads the package's name.
    assert_eq!(
        assets::guest_kernel_from(None, None, &cache).unwrap(),
        kernel
    );
    let mut again = Vec::new();
    assets::prepare_with(
        &cache,
        &mut DebianTools,
        &KernelSource::Deb(deb),
        &mut |l| again.push(l.to_owned()),
    )
    .unwrap();
    assert_eq!(
        again,
        vec![format!(
            "guest kernel {version} is ready: {}",
            kernel.image.display()
        )]
    );
    let mut names: Vec<String> = std::fs::read_dir(cache.join("qemu/kernel"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![version.to_owned(), "current".into()]);
}

#[test]
fn a_file_that_is_not_a_package_is_refused_by_name() {
    if !have("dpkg-deb") {
        eprintln!("skipping: needs dpkg-deb");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("kernel.deb");
    std::fs::write(&deb, "not an ar archive").unwrap();
    let err = assets::prepare_with(
        &dir.path().join("cache"),
        &mut DebianTools,
        &KernelSource::Deb(deb.clone()),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "`dpkg-deb --field {} Package` failed",
            deb.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("check that the file is a Debian package (a linux-image .deb)"),
        "{err}"
    );
}

/// The guest kernel the probe boots: what the environment or `bot-bottle prepare qemu` gives.
fn kernel_for_probe() -> Option<GuestKernel> {
    match assets::guest_kernel() {
        Ok(kernel) => Some(kernel),
        Err(e) => {
            eprintln!("skipping: no guest kernel ({e})");
            None
        }
    }
}

#[test]
fn the_kvm_probe_ends_within_its_bound_with_a_reason_and_is_cached() {
    let Some(kernel) = kernel_for_probe() else {
        return;
    };
    if kvm::dev_kvm() != kvm::DevKvm::Openable {
        let status = kvm::status(Path::new("/nonexistent"), &kernel, false);
        eprintln!(
            "skipping the probe: /dev/kvm is not usable here ({})",
            status.reason
        );
        assert!(!status.usable && status.fix.is_some());
        return;
    }
    if assets::find_qemu().is_err() || assets::find_static_busybox().is_err() {
        eprintln!("skipping: needs qemu-system-x86 and busybox-static");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let first = kvm::status(cache.path(), &kernel, false);
    // Not a performance assertion: the probe must not hang (it kills QEMU at its bound).
    assert!(
        started.elapsed() < kvm::PROBE_TIMEOUT + Duration::from_secs(60),
        "the probe took {:?}",
        started.elapsed()
    );
    assert!(!first.cached);
    if first.usable {
        assert_eq!(first.reason, "a test guest booted under KVM");
        assert_eq!(first.fix, None);
    } else {
        assert!(
            first
                .reason
                .starts_with("KVM is present but cannot boot a guest"),
            "{}",
            first.reason
        );
        assert!(
            first.fix.as_deref().unwrap().ends_with(&format!(
                "then `bot-bottle prepare qemu --reprobe` (the verdict is cached in {})",
                kvm::cache_file(cache.path()).display()
            )),
            "{:?}",
            first.fix
        );
    }
    eprintln!("KVM probe verdict: {}", first.reason);
    // The verdict is cached for this (guest kernel, QEMU, host kernel) and reused.
    let file = kvm::cache_file(cache.path());
    let cached: kvm::Verdict = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (cached.boots, cached.reason.clone()),
        (first.usable, first.reason.clone())
    );
    assert_eq!(cached.key.guest_kernel, kernel.version);
    let second = kvm::status(cache.path(), &kernel, false);
    assert_eq!(
        second,
        kvm::KvmStatus {
            cached: true,
            ..first
        }
    );
    // The probe leaves no scratch directory behind.
    let left: Vec<String> = std::fs::read_dir(assets::qemu_cache(cache.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["kvm-probe.json".to_owned()]);
}

#[test]
fn the_probe_recognises_a_guest_that_boots() {
    // The same test guest (our initramfs, the marker, the power-off) under emulation, which
    // boots wherever QEMU runs: proves the probe's "usable" side on hosts without KVM too.
    let Some(kernel) = kernel_for_probe() else {
        return;
    };
    let (Ok(qemu), Ok(busybox)) = (assets::find_qemu(), assets::find_static_busybox()) else {
        eprintln!("skipping: needs qemu-system-x86 and busybox-static");
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let key = kvm::ProbeKey {
        guest_kernel: kernel.version.clone(),
        qemu: "test".into(),
        host_kernel: "test".into(),
    };
    let verdict = kvm::probe(&kvm::Probe {
        qemu: &qemu,
        busybox: &busybox,
        kernel: &kernel,
        key: key.clone(),
        scratch_parent: scratch.path(),
        // Emulation on a loaded 2-core machine: a generous bound, not a measurement.
        timeout: Duration::from_secs(300),
        accel: assets::Accel::Tcg,
    });
    assert_eq!(
        verdict,
        kvm::Verdict {
            key,
            boots: true,
            reason: "a test guest booted under TCG".into(),
        }
    );
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}
