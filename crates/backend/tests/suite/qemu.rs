//! The qemu backend with a real QEMU (TCG here: `BOT_BOTTLE_QEMU_ACCEL=tcg`), a real guest
//! kernel and the native jail. Skips, saying why, when QEMU, busybox or a guest kernel is
//! missing (`BOT_BOTTLE_QEMU_KERNEL` / `BOT_BOTTLE_QEMU_MODULES`).

use std::io::Read;
use std::path::{Path, PathBuf};

use backend::native::HelperCommand;
use backend::qemu::{QemuBackend, QemuConfig};
use backend::{Backend, BottleStdio, LaunchSpec, Resources};

use super::support::{Fixture, Output};

fn qemu_fixture() -> Option<(Fixture, QemuBackend)> {
    let kernel = std::env::var_os("BOT_BOTTLE_QEMU_KERNEL");
    if kernel.is_none() {
        eprintln!(
            "skipped: no guest kernel (set BOT_BOTTLE_QEMU_KERNEL and BOT_BOTTLE_QEMU_MODULES)"
        );
        return None;
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").is_file() {
        eprintln!("skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return None;
    }
    if !Path::new("/bin/busybox").is_file() {
        eprintln!("skipped: busybox is not installed (apt-get install busybox-static)");
        return None;
    }
    // SAFETY (test-only): every qemu test sets the same value.
    unsafe { std::env::set_var("BOT_BOTTLE_QEMU_ACCEL", "tcg") };
    let f = Fixture::new();
    let helper = HelperCommand {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_bottle-helper-for-tests")),
        args: vec![],
    };
    let mut config = QemuConfig::new(helper, &f.state);
    config.qemu = "/usr/bin/qemu-system-x86_64".into();
    config.busybox = "/bin/busybox".into();
    Some((f, QemuBackend::new(config)))
}

fn small(mut spec: LaunchSpec) -> LaunchSpec {
    spec.resources = Resources {
        millicpus: 1000,
        memory_bytes: 512 << 20,
        ..Resources::default()
    };
    spec
}

fn run(backend: &QemuBackend, spec: &LaunchSpec) -> Output {
    let mut stdio = BottleStdio::piped();
    if std::env::var_os("QEMU_TEST_DEBUG").is_some() {
        stdio.stderr = backend::StdioMode::Inherit;
    }
    let mut bottle = backend
        .launch(spec, stdio)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
    drop(bottle.take_stdin());
    let mut out = bottle.take_stdout().unwrap();
    let mut err = bottle.take_stderr().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).unwrap();
    let stderr = t.join().unwrap();
    let code = bottle.wait().unwrap().code;
    Output {
        code,
        stdout,
        stderr,
    }
}

fn sh(f: &Fixture, backend: &QemuBackend, script: &str) -> Output {
    run(backend, &small(f.spec(&["/bin/sh", "-c", script])))
}

#[test]
fn qemu_runs_a_command_in_its_own_kernel_and_returns_its_exit_code() {
    let Some((f, backend)) = qemu_fixture() else {
        return;
    };
    let out = sh(&f, &backend, "uname -r; id -u; echo to-stderr >&2; exit 7");
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(out.code, 7, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_ne!(lines[0], host.trim(), "the guest runs the host's kernel");
    assert_eq!(lines[1], "1000");
    assert_eq!(out.stderr, "to-stderr\n");
}
