//! Recognising gVisor from inside a bottle, and the answers that differ there.
//!
//! Under docker with `runsc` the agent's system calls are served by gVisor's user-space kernel
//! (the Sentry), not the host's. Some of its answers differ from Linux's without being
//! escapes: `unshare` of user and mount namespaces and `mknod` of a character device can
//! succeed (the namespace or node belongs to the sandbox's kernel; its devices are its own
//! emulation), and `/proc/self/status` has no `NoNewPrivs` line. The probe must neither call
//! those escapes nor stop looking: it says what happened in the detail and then tries what
//! *would* be an escape from there (host files, host devices, the canaries).
//!
//! Recognition needs two independent signs, so a host kernel is never taken for gVisor (which
//! would excuse a real escape): gVisor's fixed `/proc/version` and either its boot messages in
//! the kernel log or its `dentry_cache_limit` mount option in `/proc/self/mountinfo`. The
//! harness also checks from outside that the agent container ran with the runtime it asked for.

/// gVisor's `/proc/version`: the same fixed text in every release (it imitates Linux 4.4).
pub const PROC_VERSION: &str = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016";

/// What the bottle's kernel looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Whether it is gVisor's (two independent signs).
    pub gvisor: bool,
    /// The signs seen, for the case details.
    pub signs: Vec<String>,
}

/// Judges the kernel from `/proc/version`, the kernel log (`None`: not readable) and
/// `/proc/self/mountinfo`.
pub fn kernel(proc_version: &str, kmsg: Option<&str>, mountinfo: &str) -> Kernel {
    let version = proc_version.trim() == PROC_VERSION;
    let boot = kmsg.is_some_and(|k| k.contains("Starting gVisor"));
    let mounts = mountinfo.contains("dentry_cache_limit=");
    let mut signs = Vec::new();
    if version {
        signs.push("/proc/version is gVisor's".to_owned());
    }
    if boot {
        signs.push("the kernel log says \"Starting gVisor...\"".to_owned());
    }
    if mounts {
        signs.push("its mounts carry gVisor's dentry_cache_limit".to_owned());
    }
    Kernel {
        gvisor: version && (boot || mounts),
        signs,
    }
}

/// `no_new_privs` from `prctl(PR_GET_NO_NEW_PRIVS)` (authoritative on every kernel) and the
/// `NoNewPrivs:` line of `/proc/self/status` (absent on gVisor). Set only when prctl says 1
/// and the status line, where there is one, agrees. Returns the verdict and the detail.
pub fn no_new_privs(status: &str, prctl: Result<i32, String>) -> (bool, String) {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .map(str::trim);
    match (prctl, line) {
        (Ok(1), Some("1")) => (true, "NoNewPrivs 1".to_owned()),
        (Ok(1), None) => (
            true,
            "NoNewPrivs 1 (prctl; /proc/self/status has no NoNewPrivs line, as on gVisor)"
                .to_owned(),
        ),
        (Ok(p), line) => (
            false,
            format!("NoNewPrivs is not set (prctl {p}, status {line:?})"),
        ),
        (Err(e), line) => (
            false,
            format!("NoNewPrivs unknown: prctl failed ({e}), status {line:?}"),
        ),
    }
}

/// Devices every gVisor sandbox has in its `/dev`, emulated by its own kernel (FUSE served by
/// the Sentry, TUN on its network stack): opening them reaches nothing of the host's.
pub const OWN_DEVICES: &[&str] = &["/dev/fuse", "/dev/net/tun"];

/// Device nodes whose opening would reach the host's hardware or kernel, as
/// `(what, block device?, major, minor)`: made with `mknod` where gVisor allows it, they must
/// not open.
pub const HOST_DEVICES: &[(&str, bool, u32, u32)] = &[
    ("mem", false, 1, 1),
    ("kmem", false, 1, 2),
    ("port", false, 1, 4),
    ("kmsg", false, 1, 11),
    ("tun", false, 10, 200),
    ("kvm", false, 10, 232),
    ("sda", true, 8, 0),
    ("vda", true, 253, 0),
    ("nvme0n1", true, 259, 0),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gvisor_needs_its_version_and_one_more_sign() {
        let mounts = "13 10 0:12 / /proc rw  - proc none rw,dentry_cache_limit=1000\n";
        let log = "[    0.000000] Starting gVisor...\n";
        assert_eq!(
            kernel(&format!("{PROC_VERSION}\n"), Some(log), mounts),
            Kernel {
                gvisor: true,
                signs: vec![
                    "/proc/version is gVisor's".into(),
                    "the kernel log says \"Starting gVisor...\"".into(),
                    "its mounts carry gVisor's dentry_cache_limit".into(),
                ],
            }
        );
        assert!(kernel(PROC_VERSION, None, mounts).gvisor);
        assert!(kernel(PROC_VERSION, Some(log), "").gvisor);
        // One sign alone is not enough; a host kernel is never taken for gVisor.
        assert!(!kernel(PROC_VERSION, None, "").gvisor);
        assert!(!kernel("Linux version 6.1.0-13-amd64 (debian)", Some(log), mounts).gvisor);
        assert_eq!(
            kernel(
                "Linux version 6.18.44 #1 SMP",
                None,
                "22 1 0:21 / / ro - ext4 /dev/vda rw\n"
            ),
            Kernel {
                gvisor: false,
                signs: vec![],
            }
        );
    }

    #[test]
    fn no_new_privs_is_what_prctl_says_unless_the_status_line_disagrees() {
        let linux = "Name:\tprobe\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        assert_eq!(no_new_privs(linux, Ok(1)), (true, "NoNewPrivs 1".into()));
        assert_eq!(
            no_new_privs("Name:\tprobe\nSeccomp:\t0\n", Ok(1)),
            (
                true,
                "NoNewPrivs 1 (prctl; /proc/self/status has no NoNewPrivs line, as on gVisor)"
                    .into()
            )
        );
        assert_eq!(
            no_new_privs("NoNewPrivs:\t0\n", Ok(1)),
            (
                false,
                "NoNewPrivs is not set (prctl 1, status Some(\"0\"))".into()
            )
        );
        assert_eq!(
            no_new_privs("Name:\tprobe\n", Ok(0)),
            (false, "NoNewPrivs is not set (prctl 0, status None)".into())
        );
        assert_eq!(
            no_new_privs(linux, Err("Invalid argument".into())),
            (
                false,
                "NoNewPrivs unknown: prctl failed (Invalid argument), status Some(\"1\")".into()
            )
        );
    }
}
