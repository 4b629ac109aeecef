//! Network namespaces the harness creates: each is joined to the host by a veth pair whose
//! addresses (a test range) exist only on that pair, and a canary thread binds inside it.
//!
//! Every run claims a [`Slot`] first: a number held by a lock file for as long as the run
//! lives, from which the namespaces' names, interface names and addresses (a /24 of each test
//! range, a loopback address for the DNS canary) are derived. Two escape suites running at
//! once therefore never share a namespace, an address or a canary, and a run that was killed
//! releases its slot with its lock (its namespaces are replaced by the next run claiming it).

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

/// The directory of the slots' lock files.
const SLOT_DIR: &str = "/run/bot-bottle-escape";
/// How many slots there are (one /24 of each range per slot).
const SLOTS: u32 = 250;

/// One run's share of the test ranges: `198.18.<n>.0/30` and `fd00:bb:<n>::/64` for the
/// "internet", `10.213.<n>.0/30` for the "LAN", `127.213.<n>.53` for the host DNS canary.
pub struct Slot {
    pub n: u32,
    pub inet4_host: String,
    pub inet4: String,
    pub inet6_host: String,
    pub inet6: String,
    pub lan4_host: String,
    pub lan4: String,
    /// The host DNS canary the sidecars resolve through (on host loopback, this run's own).
    pub dns4: String,
    /// Held (an exclusive `flock`) for as long as the run lives.
    _lock: std::fs::File,
}

impl Slot {
    /// Claims the first free slot, starting at one derived from the pid (so that parallel
    /// runs rarely even try the same lock).
    pub fn claim() -> Result<Slot, String> {
        std::fs::create_dir_all(SLOT_DIR).map_err(|e| format!("{SLOT_DIR}: {e}"))?;
        let start = std::process::id() % SLOTS;
        for i in 0..SLOTS {
            let n = (start + i) % SLOTS + 1;
            let path = format!("{SLOT_DIR}/slot-{n}.lock");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: flock on a descriptor this function owns; released when it is closed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Slot::numbered(n, file));
            }
        }
        Err(format!(
            "every escape-suite slot in {SLOT_DIR} is held: {SLOTS} runs at once?"
        ))
    }

    fn numbered(n: u32, lock: std::fs::File) -> Slot {
        Slot {
            n,
            inet4_host: format!("198.18.{n}.1"),
            inet4: format!("198.18.{n}.2"),
            inet6_host: format!("fd00:bb:{n:x}::1"),
            inet6: format!("fd00:bb:{n:x}::2"),
            lan4_host: format!("10.213.{n}.1"),
            lan4: format!("10.213.{n}.2"),
            dns4: format!("127.213.{n}.53"),
            _lock: lock,
        }
    }
}

/// A namespace `name`, reached from the host over `host_if` (`host4`/`host6`) and holding
/// `inside4`/`inside6`. Removed on drop.
pub struct Netns {
    pub name: String,
    host_if: String,
}

impl Netns {
    /// Creates the namespace `tag` of `slot`, replacing one a killed run of that slot left.
    pub fn create(
        slot: &Slot,
        tag: &str,
        host4: &str,
        inside4: &str,
        host6: Option<&str>,
        inside6: Option<&str>,
    ) -> Result<Netns, String> {
        let n = slot.n;
        let name = format!("bbesc-{tag}-{n}");
        let host_if = format!("bbe{tag}{n}");
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
