//! The `kernel` section: namespaces and mounts, ptrace and signals to the host's processes,
//! the container runtime's socket, keyrings / BPF / modules, and privilege (capabilities,
//! `no_new_privs`, setuid binaries).

use std::path::Path;

use serde_json::Value;

use crate::config::Cfg;
use crate::fork::{errno, in_child};
use crate::gvisor;
use crate::verdict::Tally;

/// The `kernel` section.
pub(crate) fn cases(c: &Cfg) {
    gvisor::case(c);
    let mut t = Tally::new("proc-unshare-setns-mount");
    for (what, flag) in [
        ("unshare user", libc::CLONE_NEWUSER),
        ("unshare mount", libc::CLONE_NEWNS),
        ("unshare net", libc::CLONE_NEWNET),
    ] {
        // SAFETY: in a child; no memory is touched.
        let code = in_child(|| unsafe { libc::unshare(flag) } == 0);
        if code == 0 {
            gvisor::unshare_succeeded(c, &mut t, what, flag);
        } else {
            t.blocked(format!("{what} refused"));
        }
    }
    let src = std::ffi::CString::new("none").unwrap_or_default();
    let dst = std::ffi::CString::new("/tmp").unwrap_or_default();
    let fs = std::ffi::CString::new("tmpfs").unwrap_or_default();
    // SAFETY: valid C strings; a success would only mount a tmpfs in the bottle.
    let r = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if r == 0 {
        t.escaped("mount tmpfs succeeded")
    } else {
        t.blocked(format!("mount: {}", errno()))
    }
    let root = std::ffi::CString::new("/").unwrap_or_default();
    // SAFETY: as above; a remount read-write of the view.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r == 0 {
        t.escaped("remount / succeeded")
    } else {
        t.blocked(format!("remount /: {}", errno()))
    }
    for ns in ["net", "mnt", "pid", "user"] {
        let p = format!("/proc/1/ns/{ns}");
        match std::fs::File::open(&p) {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                let fd = f.as_raw_fd();
                // SAFETY: in a child; setns on an open descriptor.
                let code = in_child(|| unsafe { libc::setns(fd, 0) } == 0);
                // Entering pid 1's namespace is harmless when it is the bottle's own.
                let theirs = std::fs::read_link(&p).ok();
                let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
                if code == 0 && theirs != ours {
                    t.escaped(format!("setns {ns}"));
                } else {
                    t.blocked(format!(
                        "setns {ns}: {}",
                        if code == 0 {
                            "own namespace only"
                        } else {
                            "refused"
                        }
                    ));
                }
            }
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("proc-ptrace-kill-host");
    let me = std::process::id();
    let mut visible = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            visible += 1;
            if u32::try_from(pid).ok() == Some(me) {
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.contains("bot-bottle") || comm.contains("sidecar") {
                // SAFETY: a ptrace attach attempt; detached right away when it works.
                let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
                if r == 0 {
                    // SAFETY: detach what we attached.
                    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
                    t.escaped(format!("ptrace attach to {pid} ({})", comm.trim()));
                } else {
                    t.blocked(format!("ptrace {pid} ({}): {}", comm.trim(), errno()));
                }
            }
        }
    }
    t.blocked(format!("{visible} processes visible"));
    for (what, key, comm_want) in [
        ("victim", "victim_pid", "sleep"),
        ("other bundle", "other_pid", "bot-bottle"),
    ] {
        let pid =
            c.0.get(key)
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0);
        if pid == 0 {
            continue;
        }
        // SAFETY: probing with signal 0; in a PID namespace the number names nothing of the host.
        let r = unsafe { libc::kill(pid, 0) };
        if r == 0 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == comm_want {
                // SAFETY: as above; the harness checks whether the host process survived.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                t.escaped(format!("signalled the host's {what} ({pid})"));
            } else {
                t.blocked(format!("pid {pid} inside is not the host's {what}"));
            }
        } else {
            t.blocked(format!("{what} pid {pid}: {}", errno()));
        }
    }
    t.done();

    // The container runtime's API: whoever reaches it starts a privileged container.
    let mut t = Tally::new("proc-container-runtime-socket");
    for p in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/crio/crio.sock",
    ] {
        match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => t.escaped(format!("connected to {p}")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("kernel-keyring-bpf-modules");
    let ty = std::ffi::CString::new("user").unwrap_or_default();
    let desc_ = std::ffi::CString::new("escape").unwrap_or_default();
    // SAFETY: add_key with valid strings and a 1-byte payload.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc_.as_ptr(),
            b"x".as_ptr(),
            1usize,
            -2i32,
        )
    };
    if r >= 0 {
        t.escaped("add_key succeeded")
    } else {
        t.blocked(format!("add_key: {}", errno()))
    }
    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, session, 0).
    let r = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i32, 0) };
    if r >= 0 {
        t.escaped("keyctl succeeded")
    } else {
        t.blocked(format!("keyctl: {}", errno()))
    }
    let mut attr = [0u8; 128];
    // SAFETY: bpf(BPF_MAP_CREATE) with a zeroed attr (invalid but reaches the permission check).
    let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), attr.len()) };
    let e = errno();
    if r >= 0 {
        t.escaped("bpf succeeded")
    } else {
        t.blocked(format!("bpf: {e}"))
    }
    let empty = std::ffi::CString::new("").unwrap_or_default();
    // SAFETY: finit_module on fd -1 (fails before loading anything).
    let r = unsafe { libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0) };
    let e = std::io::Error::last_os_error();
    if r == 0 || e.raw_os_error() == Some(libc::EBADF) {
        t.escaped(format!("finit_module passed the permission check ({e})"));
    } else {
        t.blocked(format!("finit_module: {e}"));
    }
    t.done();

    let mut t = Tally::new("proc-setuid-binaries");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    match gvisor::no_new_privs(&status) {
        (true, detail) => t.blocked(detail),
        (false, detail) => t.escaped(detail),
    }
    for k in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        let v = field(k);
        if v.chars().all(|ch| ch == '0') {
            t.blocked(format!("{k} 0"))
        } else {
            t.escaped(format!("{k} {v}"))
        }
    }
    for bin in ["/usr/bin/sudo", "/usr/bin/su", "/bin/su"] {
        if Path::new(bin).exists() {
            let out = std::process::Command::new(bin)
                .args(if bin.ends_with("sudo") {
                    vec!["-n", "id", "-u"]
                } else {
                    vec!["-c", "id -u", "root"]
                })
                .stdin(std::process::Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0" => {
                    t.escaped(format!("{bin} gave uid 0"))
                }
                Ok(o) => t.blocked(format!("{bin}: exit {:?}", o.status.code())),
                Err(e) => t.blocked(format!("{bin}: {e}")),
            }
        }
    }
    t.done();
}
