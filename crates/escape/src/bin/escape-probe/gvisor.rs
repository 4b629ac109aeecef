//! gVisor's kernel inside the bottle (docker with `runsc`): recognising it and judging the
//! answers that differ from Linux's (`escape::gvisor` explains which and why). A namespace or
//! device node made inside gVisor's kernel is the sandbox's, not the host's: the detail says
//! so, and the probe then tries from there what would be an escape — the host's files and the
//! canaries from inside the new namespace, the host's devices through the new nodes.

use std::io::Read;
use std::net::SocketAddr;

use escape::gvisor::{HOST_DEVICES, Kernel, OWN_DEVICES};

use crate::config::Cfg;
use crate::fork::{errno, in_child};
use crate::network::host_addresses;
use crate::sockets::reach_canary;
use crate::verdict::{Tally, blocked, escaped, na};

/// The bottle's kernel as seen from inside (read fresh: cheap, and no global state).
pub fn kernel() -> Kernel {
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    escape::gvisor::kernel(&version, klog().as_deref(), &mountinfo)
}

/// The kernel log (`syslog(SYSLOG_ACTION_READ_ALL)`), `None` when the bottle may not read it.
fn klog() -> Option<String> {
    let mut buf = vec![0u8; 1 << 16];
    let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    // SAFETY: klogctl writes at most `len` bytes into the buffer.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), len) };
    let n = usize::try_from(n).ok()?;
    Some(String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned())
}

/// `kernel-gvisor`: whether the agent runs on the kernel the harness asked for
/// (`expect_kernel: "gvisor"` on docker+runsc). Asked for and absent is an escape from the
/// promised isolation; elsewhere the row only reports.
pub fn case(c: &Cfg) {
    let k = kernel();
    let signs = k.signs.join(", ");
    match (c.s("expect_kernel") == "gvisor", k.gvisor) {
        (true, true) => blocked(
            "kernel-gvisor",
            format!("the agent runs on gVisor's kernel: {signs}"),
        ),
        (true, false) => escaped(
            "kernel-gvisor",
            format!(
                "the bottle was to run under gVisor, but its kernel is not gVisor's (signs: [{signs}])"
            ),
        ),
        (false, true) => na(
            "kernel-gvisor",
            format!("not asked for, but the agent runs on gVisor's kernel: {signs}"),
        ),
        (false, false) => na("kernel-gvisor", not_gvisor(vm(c))),
    }
}

/// Whether the harness said the bottle is a VM (`expect_vm`, the qemu backend).
fn vm(c: &Cfg) -> bool {
    c.0.get("expect_vm").and_then(serde_json::Value::as_bool) == Some(true)
}

/// The `n/a` detail of `kernel-gvisor` on a backend without gVisor: a VM's agent runs on the
/// guest's own kernel (`vm-own-kernel` judges it), every other one on the host's.
fn not_gvisor(vm: bool) -> &'static str {
    if vm {
        "the agent runs on the VM's own kernel, not gVisor's (no gVisor on this backend; row vm-own-kernel judges the guest's kernel)"
    } else {
        "the agent shares the host's kernel (no gVisor on this backend)"
    }
}

/// `unshare(flag)` succeeded in a child. On a host kernel that is an escape; on gVisor it made
/// a namespace of the sandbox's kernel, so say so and try, from inside such a namespace, the
/// host's files and the canaries (which record any contact whatever the probe believes).
pub fn unshare_succeeded(c: &Cfg, t: &mut Tally, what: &str, flag: libc::c_int) {
    let k = kernel();
    if !k.gvisor {
        t.escaped(format!("{what} succeeded"));
        return;
    }
    let targets = c.list("host_read_targets");
    let nonce = c.s("nonce");
    let mut canaries = vec![
        format!("{}:{}", c.s("inet4"), c.n("canary_tcp_port")),
        format!("{}:{}", c.s("lan4"), c.n("canary_tcp_port")),
        format!("127.0.0.1:{}", c.n("host_canary_port")),
    ];
    for ip in host_addresses(c) {
        canaries.push(SocketAddr::new(ip, c.n("host_canary_port")).to_string());
    }
    let code = in_child(|| {
        // SAFETY: in a child; no memory is touched.
        if unsafe { libc::unshare(flag) } != 0 {
            return false;
        }
        let read_host = targets.iter().any(|p| {
            std::fs::read_to_string(p).is_ok_and(|s| !nonce.is_empty() && s.contains(&nonce))
        });
        let reached = canaries.iter().any(|a| reach_canary(a).is_ok());
        read_host || reached
    });
    if code == 0 {
        t.escaped(format!(
            "{what} succeeded on gVisor, and from inside the new namespace a host file or a canary was reached"
        ));
    } else {
        t.blocked(format!(
            "{what} succeeded inside gVisor's kernel (a namespace of the sandbox, not the host's); from inside it no host file or canary was reached"
        ));
    }
}

/// `mknod` of a character device succeeded. On a host kernel that is an escape (the bottle has
/// `CAP_MKNOD`); on gVisor the node belongs to the sandbox's own device emulation, so say so
/// and make nodes for the host's memory, ports and disks: none of them may open.
pub fn mknod_succeeded(t: &mut Tally, node: &std::ffi::CStr) {
    // SAFETY: unlink of a valid C string (the node the caller made in the private /tmp).
    unsafe { libc::unlink(node.as_ptr()) };
    if !kernel().gvisor {
        t.escaped("mknod of a character device succeeded");
        return;
    }
    first(
        t,
        "mknod of a character device succeeded inside gVisor's kernel (a node of the sandbox's own device emulation, not the host's)",
    );
    for (what, block, major, minor) in HOST_DEVICES {
        let path = format!("/tmp/escape-dev-{what}");
        let Ok(c_path) = std::ffi::CString::new(path.clone()) else {
            continue;
        };
        let kind = if *block { libc::S_IFBLK } else { libc::S_IFCHR };
        // SAFETY: mknod with a valid C string, in the bottle's private /tmp.
        let r =
            unsafe { libc::mknod(c_path.as_ptr(), kind | 0o600, libc::makedev(*major, *minor)) };
        if r != 0 {
            t.blocked(format!("mknod {what}: {}", errno()));
            continue;
        }
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                let mut buf = [0u8; 512];
                match f.read(&mut buf) {
                    Ok(n) => t.escaped(format!(
                        "a node {major}:{minor} ({what}) made with mknod opened and read {n} bytes"
                    )),
                    Err(e) => t.blocked(format!("{what} node opened, read: {e}")),
                }
            }
            Err(e) => t.blocked(format!("{what} node ({major}:{minor}): {e}")),
        }
        // SAFETY: as above.
        unsafe { libc::unlink(c_path.as_ptr()) };
    }
}

/// `path` (a device the bottle should not have) opened. An escape, unless the kernel is
/// gVisor's and the device one it emulates itself ([`OWN_DEVICES`]).
pub fn device_opened(t: &mut Tally, path: &str) {
    if OWN_DEVICES.contains(&path) && kernel().gvisor {
        first(
            t,
            &format!(
                "{path} opened: gVisor's own emulated device (served by the sandbox's kernel, not the host's)"
            ),
        );
    } else {
        t.escaped(format!("opened {path}"));
    }
}

/// A blocked attempt put first in the case's detail (which the table cuts at 300 characters),
/// so that what gVisor changed is read before the list of ordinary refusals.
fn first(t: &mut Tally, what: &str) {
    t.blocked_first(what);
}

/// `no_new_privs` as `prctl` says it, checked against `/proc/self/status` (which has no
/// `NoNewPrivs` line on gVisor): `(set, detail)`.
pub fn no_new_privs(status: &str) -> (bool, String) {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let prctl = if r < 0 { Err(errno()) } else { Ok(r) };
    escape::gvisor::no_new_privs(status, prctl)
}
