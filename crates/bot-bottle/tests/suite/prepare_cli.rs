//! `bot-bottle prepare qemu` through the real binary, from a local kernel package built here
//! with `dpkg-deb -b` (tests never download).

use std::path::Path;
use std::process::{Command, Output};

use pretty_assertions::assert_eq;

/// A `linux-image-<version>` package whose kernel is a stand-in (not bootable).
fn kernel_deb(version: &str, dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: linux-image-{version}\nVersion: 1\nArchitecture: amd64\nMaintainer: tests <tests@invalid>\nDescription: a stand-in kernel package\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(tree.join(format!("boot/vmlinuz-{version}")), "a kernel").unwrap();
    std::fs::write(
        tree.join(format!("boot/config-{version}")),
        "CONFIG_VIRTIO_MMIO=y\nCONFIG_9P_FS=m\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_VIRTIO_CONSOLE=y\nCONFIG_VIRTIO_NET=m\n",
    )
    .unwrap();
    std::fs::create_dir_all(tree.join(format!("lib/modules/{version}/kernel/fs/9p"))).unwrap();
    let deb = dir.join("kernel.deb");
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
    deb
}

fn prepare(cache: &Path, deb: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["prepare", "qemu", "--deb"])
        .arg(deb)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("BOT_BOTTLE_QEMU_KERNEL")
        .env_remove("BOT_BOTTLE_QEMU_MODULES")
        .env_remove("BOT_BOTTLE_QEMU_ACCEL")
        .output()
        .unwrap()
}

#[test]
fn prepare_qemu_caches_the_kernel_then_says_it_is_ready() {
    if backend::preflight::find_in_path("dpkg-deb").is_none() {
        eprintln!("skipping: needs dpkg-deb (Debian's package tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let version = "6.1.0-998-amd64";
    let deb = kernel_deb(version, dir.path());
    let cache = dir.path().join("cache");
    let qemu = cache.join("bot-bottle/qemu");
    let entry = qemu.join("kernel").join(version);

    let first = prepare(&cache, &deb);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..5],
        [
            format!("preparing the qemu backend in {}", qemu.display()),
            format!("unpacking {} with dpkg-deb -x", deb.display()),
            "uncompressing the kernel for direct (PVH) boot".to_owned(),
            "note: booting the compressed image (the image's payload is not xz-compressed)"
                .to_owned(),
            format!(
                "guest kernel {version} ready: {}",
                entry.join("vmlinuz").display()
            ),
        ]
    );
    assert_eq!(
        lines[5],
        "checking KVM (a test guest boots under -accel kvm; at most 10 s)"
    );
    // Then the verdict on this machine's KVM and which accelerator bottles would use.
    assert!(lines.len() >= 7, "{stdout}");
    assert_eq!(
        std::fs::read_to_string(qemu.join("kernel/current")).unwrap(),
        format!("{version}\n")
    );

    let second = prepare(&cache, &deb);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(
        stdout.lines().nth(1).unwrap(),
        format!(
            "guest kernel {version} is ready: {}",
            entry.join("vmlinuz").display()
        )
    );
}

#[test]
fn prepare_qemu_names_a_missing_package_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepare(dir.path(), &dir.path().join("nope.deb"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: --deb {}: cannot read the package: ",
            dir.path().join("nope.deb").display()
        )),
        "{stderr}"
    );
}
