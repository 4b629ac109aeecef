//! Inside the qemu backend's guest and its jail: stage 2 of the guest's boot (its PID 1) and
//! the relay QEMU spawns for each guest connection to a sidecar.
//!
//! Both run in the guest executable, `bot-bottle-guest` (a binary of its own beside
//! `bot-bottle`, a few MB: the guest reads it over 9p before the agent can start, and QEMU's
//! jail spawns it per connection). Stage 2 ([`init_main`], subcommand [`INIT_SUBCOMMAND`]) is
//! seen by the guest through the read-only 9p root: stage 1 (the initramfs script) switches to
//! that root and execs it. It mounts `/proc`, `/sys`, `/dev`, private `/tmp`; the home and the
//! workspace over 9p read-write; brings up `lo` and `eth0` (10.0.2.15/24, no default route:
//! QEMU's user network with `restrict=on` answers only the sidecar endpoints at 10.0.2.100);
//! listens on `127.0.0.1:<port>` and `[::1]:<port>` for each sidecar and relays to
//! `10.0.2.100:<port>`, so the agent's contract is the same as on native; then runs the agent as
//! uid 1000 with exactly the spec's environment, and reports its exit code to the host over the
//! virtio-serial control port before powering off. Under TCG the kernel boots with one vCPU
//! (`maxcpus=1`, see [`crate::qemu::cmdline`]); stage 2 brings the others online in the
//! background once the agent runs.
//!
//! The relay ([`relay_main`], [`RELAY_SUBCOMMAND`]) runs in the native jail around QEMU, as
//! the `cmd:` of a `guestfwd`: its stdin/stdout are one guest connection, which it carries to
//! `127.0.0.1:<port>` in the jail (the native backend's forward to the sidecar's socket), each
//! direction's end of stream passed on as a half-close.
//!
//! Nothing secret is in the guest spec; it reaches the guest as a file in the 9p root, never on
//! the kernel command line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The subcommand of stage 2 (`bot-bottle-guest __qemu-init <guest.json>`).
pub const INIT_SUBCOMMAND: &str = "__qemu-init";
/// The subcommand of the guestfwd relay (`bot-bottle-guest __qemu-relay <port>`).
pub const RELAY_SUBCOMMAND: &str = "__qemu-relay";

/// The guest's address of the sidecar endpoints (QEMU's `guestfwd`).
pub const SIDECAR_ADDR: &str = "10.0.2.100";
/// The virtio-serial port names.
pub const CONTROL_PORT: &str = "bot-bottle.control";
pub const STDOUT_PORT: &str = "bot-bottle.stdout";
pub const STDERR_PORT: &str = "bot-bottle.stderr";
/// The 9p mount tags.
pub const HOME_TAG: &str = "home";
pub const WORKSPACE_TAG: &str = "workspace";

/// What stage 2 needs: the agent's command and environment and where things go. Written by
/// the host into the jail's `/run/bot-bottle/qemu/guest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// The bottle identity, also the guest's hostname.
    pub identity: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Where the workspace is mounted (tag [`WORKSPACE_TAG`]); the agent starts there.
    pub workspace: PathBuf,
    /// Where the home is mounted (tag [`HOME_TAG`]).
    pub home: PathBuf,
    /// Loopback ports relayed to the sidecar endpoints (same port at [`SIDECAR_ADDR`]).
    pub ports: Vec<u16>,
    /// The agent gets the console (`/dev/hvc0`) as its terminal.
    pub interactive: bool,
    pub uid: u32,
    pub gid: u32,
    /// The bottle's process limit: `RLIMIT_NPROC` of the agent's uid, which nothing else in
    /// the guest runs as (threads count, as in a pids cgroup).
    pub pids: u32,
    /// The caller's terminal size (rows, columns) at launch, set on the console before the
    /// agent starts (later changes come over the control port as `winsize`).
    #[serde(default)]
    pub winsize: Option<(u16, u16)>,
}

/// Runs [`init_main`] or [`relay_main`] when `subcommand` names one; returns otherwise.
pub fn dispatch(subcommand: Option<&std::ffi::OsStr>) {
    match subcommand.and_then(|s| s.to_str()) {
        Some(INIT_SUBCOMMAND) => init_main(),
        Some(RELAY_SUBCOMMAND) => relay_main(),
        _ => {}
    }
}

/// Entry point of the relay: `__qemu-relay <port>`; never returns.
pub fn relay_main() -> ! {
    let port: Option<u16> = std::env::args().nth(2).and_then(|p| p.parse().ok());
    let Some(port) = port else {
        eprintln!("error: `{RELAY_SUBCOMMAND}` is internal to the qemu backend");
        std::process::exit(2);
    };
    // The sidecar's forward is gone: the guest's connection closes (stdout is the guest's
    // connection, so nothing is printed into it).
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        std::process::exit(1);
    };
    let Ok(mut upstream_read) = stream.try_clone() else {
        std::process::exit(1);
    };
    let mut upstream_write = stream;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match upstream_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    drop(out);
    // SAFETY: closing our stdout tells QEMU (and through it the guest) that this direction
    // ended; nothing in this process writes to fd 1 afterwards.
    unsafe {
        libc::close(1);
    }
    let _ = up.join();
    std::process::exit(0)
}

/// Entry point of stage 2, the guest's PID 1: `__qemu-init <guest.json>`; never returns.
pub fn init_main() -> ! {
    if std::process::id() != 1 {
        eprintln!(
            "error: `{INIT_SUBCOMMAND}` is the qemu backend's guest init and runs only as its PID 1"
        );
        std::process::exit(2);
    }
    let path = std::env::args().nth(2).unwrap_or_default();
    let mut control: Option<std::fs::File> = None;
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    let code = match boot(Path::new(&path), &mut control, ack_tx) {
        Ok(code) => code,
        Err(message) => {
            console(&format!("bot-bottle stage 2: {message}"));
            if let Some(c) = control.as_mut() {
                let _ = writeln!(c, "error {}", message.replace('\n', " "));
            }
            None
        }
    };
    if let (Some(code), Some(c)) = (code, control.as_mut()) {
        let _ = writeln!(c, "exit {code}");
        let _ = c.flush();
        // Bounded: the host confirms it read the exit code, so powering off cannot lose the
        // last bytes of the port.
        let _ = ack_rx.recv_timeout(Duration::from_secs(5));
    }
    power_off()
}

/// A line on the kernel's console (stage 1 hands over the console as stdio).
fn console(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn power_off() -> ! {
    // SAFETY: sync(2) and reboot(2) take no pointers; as PID 1 this ends the guest.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1)
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    nix::mount::mount(
        Some(source),
        target,
        Some(fstype),
        nix::mount::MsFlags::from_bits_truncate(flags),
        Some(data),
    )
    .map_err(|e| format!("cannot mount {fstype} `{source}` on {target}: {e}"))
}

/// Where stage 2 mounts sysfs while it looks for the ports.
const SYSFS: &str = "/dev/.sys";

/// Whether the spec at `path` asks for a terminal (read before the spec is parsed in full,
/// which needs the ports already found).
fn spec_interactive(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<GuestSpec>(&t).ok())
        .is_some_and(|s| s.interactive)
}

/// The device node of the virtio-serial port named `name`.
fn port_device(name: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir(Path::new(SYSFS).join("class/virtio-ports")).ok()?;
    for entry in dir.flatten() {
        let n = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

fn open_port(name: &str) -> Result<std::fs::File, String> {
    // The ports appear once the virtio-console driver probed them.
    for _ in 0..200 {
        if let Some(dev) = port_device(name) {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&dev)
                .map_err(|e| format!("cannot open the port {name} ({}): {e}", dev.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("the virtio-serial port {name} never appeared"))
}

fn boot(
    spec_path: &Path,
    control: &mut Option<std::fs::File>,
    ack: Sender<()>,
) -> Result<Option<i32>, String> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID};
    mount(
        "proc",
        "/proc",
        "proc",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        "",
    )?;
    mount(
        "dev",
        "/dev",
        "devtmpfs",
        MS_NOSUID | MS_NOEXEC,
        "mode=0755",
    )?;
    // sysfs only to find the ports and open the offline vCPUs' `online` files (hence not
    // read-only: a read-only sysfs refuses to open them for writing); detached before the
    // agent runs, which sees no /sys (as on native, whose root has none).
    mount(
        "sysfs",
        SYSFS,
        "sysfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        "",
    )?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        "mode=1777",
    )?;
    let port = open_port(CONTROL_PORT)?;
    // The port's only reader, from now on: a second one would take lines meant for this one
    // (the host's `ack` was once eaten that way, and every bottle waited 5 s to power off).
    let reader = port.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || commands(reader, ack));
    *control = Some(port);
    let ports = if spec_interactive(spec_path) {
        None
    } else {
        Some((open_port(STDOUT_PORT)?, open_port(STDERR_PORT)?))
    };
    // Opened while sysfs is mounted; written once the agent runs (the detached mount stays
    // reachable through the open files only).
    let offline = offline_cpus(Path::new(SYSFS));
    let _ = nix::mount::umount2(SYSFS, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(SYSFS);
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| format!("cannot read the guest spec {}: {e}", spec_path.display()))?;
    let spec: GuestSpec =
        serde_json::from_str(&text).map_err(|e| format!("the guest spec is not valid: {e}"))?;
    for dir in ["/tmp", "/var/tmp"] {
        mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")?;
    }
    // Parents before children: a workspace inside the home is mounted over it.
    let mut shares = [(HOME_TAG, &spec.home), (WORKSPACE_TAG, &spec.workspace)];
    shares.sort_by_key(|(_, p)| p.components().count());
    for (tag, target) in shares {
        mount(
            tag,
            &target.to_string_lossy(),
            "9p",
            MS_NOSUID | MS_NODEV,
            "trans=virtio,version=9p2000.L,cache=mmap,msize=262144",
        )?;
    }
    let _ = nix::unistd::sethostname(&spec.identity);
    network(&spec.ports)?;
    // Where a failure to start the agent is told: the agent's own stderr.
    let err_keep = match &ports {
        Some((_, err)) => err.try_clone().ok(),
        None => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/hvc0")
            .ok(),
    };
    let (stdin, stdout, stderr) = agent_stdio(&spec, ports)?;
    let ctl = control.as_ref().ok_or("no control port")?;
    let mut command = Command::new(spec.argv.first().ok_or("the agent's command is empty")?);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.workspace)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    super::agent_exec::confine(
        &mut command,
        spec.uid,
        spec.gid,
        spec.pids,
        spec.interactive,
    )?;
    let mut ctl_w = ctl.try_clone().map_err(|e| e.to_string())?;
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let program = &spec.argv[0];
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            if let Some(mut err) = err_keep {
                let _ = writeln!(err, "bot-bottle: cannot run `{program}`: {e}");
            }
            let _ = writeln!(ctl_w, "ready");
            return Ok(Some(code));
        }
    };
    let agent = child.id() as i32;
    AGENT.store(agent, Ordering::SeqCst);
    if TERM_ASKED.load(Ordering::SeqCst) {
        term_agent();
    }
    let _ = writeln!(ctl_w, "ready");
    bring_online(offline);
    Ok(Some(reap(agent)))
}

/// The `online` files of the vCPUs the kernel left offline (`maxcpus=1` under TCG, see
/// [`crate::qemu::cmdline`]), opened for writing.
fn offline_cpus(sysfs: &Path) -> Vec<(String, std::fs::File)> {
    let Ok(dir) = std::fs::read_dir(sysfs.join("devices/system/cpu")) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let online = entry.path().join("online");
        if is_cpu && std::fs::read_to_string(&online).is_ok_and(|v| v.trim() == "0") {
            match std::fs::OpenOptions::new().write(true).open(&online) {
                Ok(file) => files.push((name, file)),
                Err(e) => console(&format!(
                    "bot-bottle stage 2: cannot bring {name} online: {}: {e}",
                    online.display()
                )),
            }
        }
    }
    files
}

/// Brings the offline vCPUs online in the background: the agent already runs, and each
/// bring-up takes a few hundred milliseconds of emulated time under TCG.
fn bring_online(offline: Vec<(String, std::fs::File)>) {
    if offline.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for (name, mut file) in offline {
            if let Err(e) = file.write_all(b"1") {
                console(&format!(
                    "bot-bottle stage 2: cannot bring {name} online: {e}"
                ));
            }
        }
    });
}

/// The agent's pid once it runs (0 before).
static AGENT: AtomicI32 = AtomicI32::new(0);
/// The host asked to stop the agent (kept for an agent not started yet).
static TERM_ASKED: AtomicBool = AtomicBool::new(false);

fn term_agent() {
    let agent = AGENT.load(Ordering::SeqCst);
    if agent > 0 {
        // SAFETY: kill(2) on the agent's process group (it is a session leader).
        unsafe {
            libc::kill(-agent, libc::SIGTERM);
        }
    }
}

/// Lines from the host: `term` (SIGTERM to the agent), `winsize <rows> <cols>`, and `ack`
/// (it read the exit code; passed to `ack`).
fn commands(control: std::fs::File, ack: Sender<()>) {
    for line in BufReader::new(control).lines() {
        let Ok(line) = line else { return };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ack") => {
                let _ = ack.send(());
            }
            Some("term") => {
                TERM_ASKED.store(true, Ordering::SeqCst);
                term_agent();
            }
            Some("winsize") => {
                let rows: u16 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let cols: u16 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                set_winsize(rows, cols);
            }
            _ => {}
        }
    }
}

/// Sets the console's size; the kernel sends SIGWINCH to its foreground process group.
fn set_winsize(rows: u16, cols: u16) {
    if let Ok(tty) = std::fs::OpenOptions::new().write(true).open("/dev/hvc0") {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the `winsize` we own.
        unsafe {
            libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&tty), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Reaps every child until the agent exits; its code, shell-style for a signal.
fn reap(agent: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes the status int we own.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return 1;
        }
        if pid == agent {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            // What the agent left running ends with it.
            // SAFETY: kill(2) with -1 signals every process but PID 1.
            unsafe {
                libc::kill(-1, libc::SIGKILL);
            }
            return code;
        }
    }
}

fn agent_stdio(
    spec: &GuestSpec,
    ports: Option<(std::fs::File, std::fs::File)>,
) -> Result<
    (
        std::process::Stdio,
        std::process::Stdio,
        std::process::Stdio,
    ),
    String,
> {
    if spec.interactive {
        if let Some((rows, cols)) = spec.winsize {
            set_winsize(rows, cols);
        }
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/hvc0")
                .map_err(|e| format!("cannot open the console /dev/hvc0: {e}"))
        };
        return Ok((open()?.into(), open()?.into(), open()?.into()));
    }
    let null =
        std::fs::File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let (out, err) = ports.ok_or("the stdout and stderr ports are not open")?;
    Ok((null.into(), out.into(), err.into()))
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().chain(std::iter::once(0)))
    {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr(ip: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` have the same size; the kernel reads it by family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    sock: i32,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
    what: &str,
) -> Result<(), String> {
    // SAFETY: the interface ioctls read and write the `ifreq` we own.
    if unsafe { libc::ioctl(sock, request, req as *mut libc::ifreq) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `lo` up; `eth0` 10.0.2.15/24 up (the on-link route is the only one); the relays.
fn network(ports: &[u16]) -> Result<(), String> {
    // SAFETY: a plain datagram socket used only for interface ioctls; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!(
            "cannot open a socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    let result = (|| -> Result<(), String> {
        for name in ["lo", "eth0"] {
            if name == "eth0" {
                let mut req = ifreq(name);
                req.ifr_ifru.ifru_addr = sockaddr([10, 0, 2, 15]);
                ioctl(
                    sock,
                    libc::SIOCSIFADDR,
                    &mut req,
                    "cannot set eth0's address",
                )?;
                let mut req = ifreq(name);
                req.ifr_ifru.ifru_netmask = sockaddr([255, 255, 255, 0]);
                ioctl(
                    sock,
                    libc::SIOCSIFNETMASK,
                    &mut req,
                    "cannot set eth0's netmask",
                )?;
            }
            let mut req = ifreq(name);
            ioctl(
                sock,
                libc::SIOCGIFFLAGS,
                &mut req,
                "cannot read the interface flags",
            )?;
            // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member.
            unsafe {
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            }
            ioctl(
                sock,
                libc::SIOCSIFFLAGS,
                &mut req,
                &format!("cannot bring {name} up"),
            )?;
        }
        Ok(())
    })();
    // SAFETY: `sock` is the descriptor opened above.
    unsafe {
        libc::close(sock);
    }
    result?;
    // One event loop on a thread of its own, started before the agent: relaying a connection
    // never needs another thread.
    let mut relays = super::relay::Relays::new();
    for &port in ports {
        let target: SocketAddr = format!("{SIDECAR_ADDR}:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        relays.listen_loopback(port, super::relay::Target::Tcp(target))?;
    }
    relays.run_on_thread()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn only_offline_vcpus_are_brought_online() {
        let sys = tempfile::tempdir().unwrap();
        let cpus = sys.path().join("devices/system/cpu");
        for (dir, online) in [
            ("cpu0", None),
            ("cpu1", Some("0\n")),
            ("cpu2", Some("1\n")),
            ("cpu10", Some("0\n")),
            ("cpufreq", Some("0\n")),
            ("cpuidle", None),
        ] {
            std::fs::create_dir_all(cpus.join(dir)).unwrap();
            if let Some(v) = online {
                std::fs::write(cpus.join(dir).join("online"), v).unwrap();
            }
        }
        let mut names: Vec<String> = offline_cpus(sys.path())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(names, ["cpu1", "cpu10"]);
        assert!(offline_cpus(&sys.path().join("absent")).is_empty());
    }

    #[test]
    fn the_guest_spec_round_trips_and_refuses_unknown_fields() {
        let spec = GuestSpec {
            identity: "claude-1a2b3".into(),
            argv: vec!["claude".into(), "--print".into()],
            env: [("HOME".to_owned(), "/home/agent".to_owned())].into(),
            workspace: "/work/proj".into(),
            home: "/home/agent".into(),
            ports: vec![3128, 3129, 3130],
            interactive: true,
            uid: 1000,
            gid: 1000,
            pids: 512,
            winsize: Some((33, 101)),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<GuestSpec>(&json).unwrap(), spec);
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["token"] = "x".into();
        assert!(serde_json::from_value::<GuestSpec>(value).is_err());
    }
}
