//! The micro-VM backend's own walls (`qemu`): the agent runs on the guest's kernel, not the
//! host's; it cannot open `/dev/kvm` or the guest's virtio-serial ports (the control port
//! would let it forge its exit code or the host's view of the boot); and QEMU's user network
//! answers nothing but the sidecar endpoints — not its gateway (10.0.2.2, the jail's
//! loopback), not its DNS (10.0.2.3), not another port of the sidecar address.
//!
//! The 10.0.2.x addresses exist only inside QEMU's user network, so they are tried only when
//! the harness says the bottle is a VM (`expect_vm`); elsewhere those rows are n/a.

use std::os::unix::fs::OpenOptionsExt;

use crate::config::Cfg;
use crate::sockets::{tcp, udp_send};
use crate::verdict::{Tally, blocked, escaped, na};

pub fn cases(c: &Cfg) {
    let vm = c.0.get("expect_vm").and_then(serde_json::Value::as_bool) == Some(true);
    own_kernel(c, vm);
    kvm();
    ports(vm);
    user_network(c, vm);
}

/// `vm-own-kernel`: the guest's kernel release and build differ from the host's.
fn own_kernel(c: &Cfg, vm: bool) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let host = c.s("host_kernel");
    if !vm {
        na(
            "vm-own-kernel",
            "not a VM backend: the agent shares the host's kernel",
        );
    } else if host.is_empty() {
        escaped("vm-own-kernel", "the harness did not say the host's kernel");
    } else if version.trim() == host.trim() {
        escaped(
            "vm-own-kernel",
            format!("the agent runs on the host's kernel: {}", release.trim()),
        );
    } else {
        blocked(
            "vm-own-kernel",
            format!(
                "the guest runs its own kernel {} (the host's is another build)",
                release.trim()
            ),
        );
    }
}

/// `vm-kvm-device`: `/dev/kvm` cannot be opened (a bottle with KVM could run its own VMs
/// against the host's hypervisor interface).
fn kvm() {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => escaped("vm-kvm-device", "/dev/kvm opened read-write"),
        Err(e) => blocked("vm-kvm-device", format!("/dev/kvm: {e}")),
    }
}

/// `vm-control-ports`: the virtio-serial ports (control, the agent's output ports) and the
/// raw console devices cannot be opened by the agent.
fn ports(vm: bool) {
    let mut t = Tally::new("vm-control-ports");
    let mut any = false;
    if let Ok(dir) = std::fs::read_dir("/dev") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("vport") || name == "ttyS0" || name == "console") {
                continue;
            }
            any = true;
            let path = e.path();
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(_) => t.escaped(format!("{} opened", path.display())),
                Err(err) => t.blocked(format!("{}: {err}", path.display())),
            }
        }
    }
    if !any && !vm {
        na(
            "vm-control-ports",
            "not a VM backend: no virtio-serial ports",
        );
        return;
    }
    if !any {
        t.blocked("no port or console device is visible");
    }
    t.done();
}

/// `vm-user-network`: QEMU's gateway, DNS and other ports of the sidecar address answer
/// nothing.
fn user_network(c: &Cfg, vm: bool) {
    if !vm {
        na("vm-user-network", "not a VM backend: no QEMU user network");
        return;
    }
    let mut t = Tally::new("vm-user-network");
    let host_port = c.n("host_canary_port");
    for addr in [
        format!("10.0.2.2:{host_port}"),
        "10.0.2.2:22".to_owned(),
        "10.0.2.2:3128".to_owned(),
        "10.0.2.3:53".to_owned(),
        "10.0.2.100:22".to_owned(),
        "10.0.2.100:80".to_owned(),
    ] {
        match tcp(&addr) {
            Ok(_) => t.escaped(format!("tcp {addr} connected")),
            Err(e) => t.blocked(format!("tcp {addr}: {e}")),
        }
    }
    for addr in ["10.0.2.3:53", "10.0.2.2:53"] {
        match udp_send(addr) {
            Ok(answer) => t.escaped(format!("udp {addr} answered {answer:?}")),
            Err(e) => t.blocked(format!("udp {e}")),
        }
    }
    t.done();
}
