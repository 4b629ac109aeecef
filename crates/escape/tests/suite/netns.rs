//! Network namespaces the harness creates: each is joined to the host by a veth pair whose
//! addresses (a test range) exist only on that pair, and a canary thread binds inside it.

use std::os::fd::AsRawFd;
use std::process::Command;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace `name`, reached from the host over `host_if` (`host4`/`host6`) and holding
/// `inside4`/`inside6`. Removed on drop.
pub struct Netns {
    pub name: String,
    host_if: String,
}

impl Netns {
    pub fn create(
        tag: &str,
        host4: &str,
        inside4: &str,
        host6: Option<&str>,
        inside6: Option<&str>,
    ) -> Result<Netns, String> {
        let pid = std::process::id() % 100_000;
        let name = format!("bbesc-{tag}-{pid}");
        let host_if = format!("bbe{tag}{pid}");
        let peer = format!("{host_if}p");
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &name])?;
        ip(&["addr", "add", &format!("{host4}/30"), "dev", &host_if])?;
        if let Some(h6) = host6 {
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{h6}/64"),
                "dev",
                &host_if,
                "nodad",
            ])?;
        }
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{inside4}/30"),
            "dev",
            &peer,
        ])?;
        if let Some(i6) = inside6 {
            ip(&[
                "-n",
                &name,
                "-6",
                "addr",
                "add",
                &format!("{i6}/64"),
                "dev",
                &peer,
                "nodad",
            ])?;
        }
        ip(&["-n", &name, "link", "set", &peer, "up"])?;
        ip(&["-n", &name, "route", "add", "default", "via", host4])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it creates live there.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: setns on an open namespace descriptor, for this thread only.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
