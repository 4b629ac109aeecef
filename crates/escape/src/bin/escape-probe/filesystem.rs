//! The `filesystem` section: writes outside the workspace, reads of host files (directly,
//! through symlinks and `..`, `/proc/*/root` and inherited descriptors), changes to the trust
//! store, and device nodes.

use std::io::Write;
use std::path::Path;

use crate::config::Cfg;
use crate::gvisor;
use crate::verdict::Tally;

/// The `filesystem` section.
pub(crate) fn cases(c: &Cfg) {
    let nonce = c.s("nonce");
    let mut t = Tally::new("fs-write-outside-workspace");
    let mut wrote = Vec::new();
    for d in c.list("write_targets") {
        let p = Path::new(&d).join(format!("escape-marker-{nonce}"));
        match std::fs::write(&p, &nonce) {
            Ok(()) => wrote.push(d.clone()),
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
    }
    if !wrote.is_empty() {
        // Writable private tmpfs dirs are fine; the harness checks the host for the marker.
        t.blocked(format!(
            "wrote in {wrote:?} (private to the bottle unless the host shows the marker)"
        ));
    }
    t.done();

    let mut t = Tally::new("fs-read-host-secrets");
    for p in c.list("host_read_targets") {
        match std::fs::read_to_string(&p) {
            Ok(s) if s.contains(&nonce) => t.escaped(format!("read {p}")),
            Ok(_) => t.blocked(format!("{p}: readable but not the host's file")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    let host_names = c.list("host_canary_names");
    for d in c.list("host_list_targets") {
        match std::fs::read_dir(&d) {
            Ok(rd) => {
                let names: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                if names.is_empty() {
                    t.blocked(format!("{d}: empty"));
                } else if let Some(n) = names.iter().find(|n| host_names.iter().any(|h| h == *n)) {
                    t.escaped(format!("{d} lists the host's {n}"));
                } else {
                    t.blocked(format!(
                        "{d}: {} entries, none of the host's canaries",
                        names.len()
                    ));
                }
            }
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("fs-modify-ca-and-gitconfig");
    for p in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/run/bot-bottle/ca.pem",
    ] {
        match std::fs::OpenOptions::new().append(true).open(p) {
            Ok(mut f) => {
                if f.write_all(b"\n").is_ok() {
                    t.escaped(format!("appended to {p}"));
                } else {
                    t.blocked(format!("{p}: opened but not written"));
                }
            }
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    // The gitconfig is the agent's own file: changing it must not open a way around the gate
    // (checked by git-insteadof-bypass); here only report that it is the agent's.
    t.blocked("~/.gitconfig is the agent's own (bypass attempts in git-insteadof-bypass)");
    t.done();

    let mut t = Tally::new("fs-symlink-dotdot");
    for p in c.list("link_targets") {
        match std::fs::read_to_string(&p) {
            Ok(s) if s.contains(&nonce) => t.escaped(format!("read the host secret via {p}")),
            Ok(_) => t.blocked(format!("{p}: not the host file")),
            Err(e) => t.blocked(format!("{p}: {e}")),
        }
    }
    t.done();

    let mut t = Tally::new("fs-proc-root-and-fd");
    for pid in ["1", "self", "thread-self"] {
        for target in c.list("host_read_targets") {
            let p = format!("/proc/{pid}/root{target}");
            match std::fs::read_to_string(&p) {
                Ok(s) if s.contains(&nonce) => t.escaped(format!("read {p}")),
                _ => {}
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.flatten() {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            let fd = e.file_name().to_string_lossy().to_string();
            if link.is_dir() || link.to_string_lossy().starts_with('/') {
                for target in c.list("host_read_targets") {
                    if let Some(name) = Path::new(&target).file_name() {
                        let p = format!("/proc/self/fd/{fd}/../{}", name.to_string_lossy());
                        if let Ok(s) = std::fs::read_to_string(&p)
                            && s.contains(&nonce)
                        {
                            t.escaped(format!("read via {p} ({})", link.display()));
                        }
                    }
                }
            }
        }
    }
    t.blocked("no host file through /proc/*/root or inherited descriptors");
    t.done();

    let mut t = Tally::new("fs-device-nodes");
    for d in [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/kmsg",
        "/dev/sda",
        "/dev/vda",
        "/dev/nvme0n1",
        "/dev/fuse",
        "/dev/net/tun",
        "/dev/kvm",
    ] {
        match std::fs::File::open(d) {
            Ok(_) => gvisor::device_opened(&mut t, d),
            Err(e) => t.blocked(format!("{d}: {e}")),
        }
    }
    let p = std::ffi::CString::new("/tmp/escape-null").unwrap_or_default();
    // SAFETY: mknod with a valid C string; a success only creates a node in the private /tmp.
    let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if r == 0 {
        gvisor::mknod_succeeded(&mut t, &p);
    } else {
        t.blocked(format!("mknod: {}", std::io::Error::last_os_error()));
    }
    t.done();
}
