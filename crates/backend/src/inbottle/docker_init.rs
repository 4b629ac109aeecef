//! The init process of a docker bottle (PID 1 of the agent container).
//!
//! It is the host's own executable, bind-mounted read-only into the container, and it runs as
//! the agent's unprivileged user with no capabilities: it holds nothing the agent could not
//! have. It exists for three reasons:
//!
//! * **forwards**: the agent's contract says the sidecar endpoints are `127.0.0.1:<port>` on
//!   every backend, so the init listens on those loopback ports and relays each connection to
//!   the same port of the sidecar container on the bottle's internal network. The sidecar's
//!   address is fixed by the launcher (`crate::docker::spec::InternalSubnet`) and given here,
//!   so the ports are bound at once, whether or not the sidecar runs yet. Once the agent
//!   runs, the relay watches the sidecar: when the sidecar container dies, the loopback
//!   endpoints are closed, so the agent's connections are refused at once instead of waiting
//!   on the dead container's address. The relays are one event loop on this process's own
//!   thread, which also supervises the agent (the `inbottle::relay` module): the container's `pids`
//!   limit counts the init too, and an agent that used it up still has every connection
//!   answered;
//! * **release gate**: the agent's command must not run before the launcher has closed the
//!   network (the per-bottle firewall, see [`crate::docker::spec::firewall_script`]), so the init waits
//!   for `SIGUSR1` from the launcher (sent through the Engine API) and then *checks* the result
//!   itself: Docker's embedded DNS (`127.0.0.11:53`) must not answer, every sidecar endpoint
//!   must accept a connection. Anything else aborts with exit code [`SETUP_FAILED`];
//! * **PID 1 duties**: it forwards `SIGTERM`/`SIGHUP`/`SIGQUIT` (and `SIGINT` when there is no
//!   terminal) to the agent, reaps zombies and exits with the agent's exit code (`128 + n`
//!   for a signal), with exactly the spec's environment (Docker adds the image's `ENV`,
//!   `HOSTNAME` and `HOME` to PID 1; the init clears them).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::relay::{Relays, Target};

/// The hidden `bot-bottle` subcommand that runs [`init_main`] (dispatched in `main` before the
/// command line is parsed, like the native helper's).
pub const INIT_SUBCOMMAND: &str = "__docker-init";

/// Exit code of the init when the bottle could not be set up (nothing of the agent ran).
pub const SETUP_FAILED: i32 = 125;

/// What the init is told, as one JSON argument (its last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// The agent's command line (first element looked up in `env["PATH"]`).
    pub argv: Vec<String>,
    /// The agent's environment, exactly.
    pub env: BTreeMap<String, String>,
    /// The agent's working directory.
    pub cwd: PathBuf,
    /// The sidecar container's address on the internal network (the docker backend gives its
    /// fixed address; a name would be resolved through Docker's embedded DNS before the
    /// release, and that DNS server is closed by the firewall).
    pub sidecar_host: String,
    /// Loopback ports relayed to the same ports of the sidecar.
    pub forwards: Vec<InitForward>,
    /// Whether the agent has the container's terminal.
    pub interactive: bool,
    /// How long to wait for the launcher's release signal, in seconds.
    pub release_timeout_secs: u64,
}

/// One relayed port: `127.0.0.1:<port>` (and `[::1]:<port>`) → `<sidecar>:<sidecar_port>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitForward {
    pub port: u16,
    pub sidecar_port: u16,
}

/// Docker's embedded DNS server address inside containers on user-defined networks.
pub const EMBEDDED_DNS: &str = "127.0.0.11:53";

/// Entry point: reads the [`InitConfig`] from the last argument and never returns.
pub fn init_main() -> ! {
    let code = match std::env::args()
        .next_back()
        .map(|arg| serde_json::from_str::<InitConfig>(&arg))
    {
        Some(Ok(config)) => run(&config),
        Some(Err(err)) => fail(&format!("bad init configuration: {err}")),
        None => fail("missing init configuration"),
    };
    std::process::exit(code)
}

fn fail(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "bot-bottle: {message}");
    SETUP_FAILED
}

fn run(config: &InitConfig) -> i32 {
    let mut signals = SigSet::empty();
    for sig in [
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        signals.add(sig);
    }
    // Blocked before any thread starts, so every thread inherits the mask and signals are
    // only taken by `sigtimedwait` below (the child's mask is reset by `Command`).
    if let Err(err) = signals.thread_block() {
        return fail(&format!("cannot block signals: {err}"));
    }
    let sidecar = if config.forwards.is_empty() {
        None
    } else {
        match resolve_sidecar(&config.sidecar_host) {
            Ok(ip) => Some(ip),
            Err(message) => return fail(&message),
        }
    };
    // Bound now, served once the agent runs (a connection before then waits in the queue).
    let mut relays = Relays::new();
    let mut targets = Vec::new();
    for forward in &config.forwards {
        let Some(ip) = sidecar else { break };
        let target = SocketAddr::new(ip, forward.sidecar_port);
        if let Err(message) = relays.listen_loopback(forward.port, Target::Tcp(target)) {
            return fail(&message);
        }
        targets.push((forward.port, target));
    }
    match wait_for_release(&signals, Duration::from_secs(config.release_timeout_secs)) {
        Release::Released => {}
        Release::Signalled(sig) => return 128 + sig,
        Release::TimedOut => {
            return fail("the bottle was never released by its launcher; nothing ran");
        }
    }
    if let Err(message) = check_network(&targets) {
        return fail(&message);
    }
    // From now on a sidecar that stops answering closes the endpoints (refused at once)
    // instead of leaving the agent's connections waiting on a dead address.
    if let Some((_, target)) = targets.first() {
        relays.watch(*target);
    }
    let Some((program, args)) = config.argv.split_first() else {
        return fail("empty command");
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(&config.env)
        .current_dir(&config.cwd);
    // SAFETY: the closure only calls `sigprocmask`, which is async-signal-safe, on a sigset
    // built before the fork.
    unsafe {
        command.pre_exec(|| {
            let empty = SigSet::empty();
            // The agent starts with no signal blocked (the init blocks them for `sigtimedwait`).
            if libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "bot-bottle: cannot run `{program}`: {err}"
            );
            return if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let agent = Pid::from_raw(child.id() as i32);
    // The relays and the supervision share init's one thread: nothing here needs a new task
    // under the container's `pids` limit, which the agent may have used up.
    match relays.run_until(supervise_async(&signals, agent, config.interactive)) {
        Ok(Ok(code)) => code,
        // No event loop or no signalfd: the ports are closed by now (clients are refused,
        // never left waiting); the agent still has its supervisor.
        Ok(Err(_)) | Err(_) => supervise(&signals, agent, config.interactive),
    }
}

/// The sidecar's address, retried while the sidecar container is still starting.
fn resolve_sidecar(host: &str) -> Result<IpAddr, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.find(SocketAddr::is_ipv4));
        match found {
            Some(addr) => return Ok(addr.ip()),
            None if Instant::now() >= deadline => {
                return Err(format!(
                    "the sidecar `{host}` never appeared on the bottle network"
                ));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

enum Release {
    Released,
    Signalled(i32),
    TimedOut,
}

fn wait_for_release(signals: &SigSet, timeout: Duration) -> Release {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Release::TimedOut;
        }
        match timed_wait(signals, left) {
            Some(sig) if sig == Signal::SIGUSR1 as i32 => return Release::Released,
            Some(sig) if sig == Signal::SIGCHLD as i32 => {}
            Some(sig) => return Release::Signalled(sig),
            None => {}
        }
    }
}

/// `sigtimedwait` on the blocked set: the signal number, or `None` on timeout or interruption.
fn timed_wait(signals: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `signals` is a valid initialised sigset, `ts` a valid timespec, and a null
    // siginfo pointer is allowed.
    #[cfg(target_os = "linux")]
    let sig = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
    // The init runs only in Linux containers; elsewhere nothing is ever released (the bottle
    // times out, closed).
    #[cfg(not(target_os = "linux"))]
    let sig = {
        let _ = (signals, ts);
        -1
    };
    (sig > 0).then_some(sig)
}

/// Fails unless the network is closed as promised: the embedded DNS does not answer and every
/// sidecar endpoint is reachable.
fn check_network(targets: &[(u16, SocketAddr)]) -> Result<(), String> {
    if embedded_dns_answers() {
        return Err(
            "docker's embedded DNS answers inside the bottle; refusing to start the agent (the bottle firewall is missing)"
                .to_owned(),
        );
    }
    for (port, target) in targets {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect_timeout(target, Duration::from_secs(1)) {
                Ok(_) => break,
                Err(err) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the sidecar endpoint {target} for port {port} does not answer: {err}"
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}

/// Sends one DNS query (for the root zone's NS) to the embedded server and reports whether
/// any answer came back within half a second.
pub fn embedded_dns_answers() -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    if socket.connect(EMBEDDED_DNS).is_err() {
        return false;
    }
    let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
    // id 0x6262, recursion desired, one question: `.` NS IN.
    let query = [
        0x62, 0x62, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x00, 0x01,
    ];
    if socket.send(&query).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv(&mut buf), Ok(n) if n >= 2 && buf[..2] == [0x62, 0x62])
}

fn supervise(signals: &SigSet, agent: Pid, interactive: bool) -> i32 {
    loop {
        let Some(sig) = timed_wait(signals, Duration::from_secs(3600)) else {
            continue;
        };
        if let Some(code) = take_signal(sig, agent, interactive) {
            return code;
        }
    }
}

/// [`supervise`] as a task of the relays' event loop: the blocked signals are read from a
/// signalfd instead of `sigtimedwait`. Fails only when the signalfd cannot be made.
#[cfg(target_os = "linux")]
async fn supervise_async(signals: &SigSet, agent: Pid, interactive: bool) -> std::io::Result<i32> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use tokio::io::unix::AsyncFd;
    let fd = SignalFd::with_flags(signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    // SAFETY: the SignalFd owns its descriptor and neither replaces nor closes it while the
    // AsyncFd holds it.
    let fd = unsafe { AsyncFd::register(fd)? };
    // A child that exited before the signalfd existed left its SIGCHLD pending: it is read
    // below like any other.
    loop {
        let mut ready = fd.readable().await?;
        loop {
            match ready.get_inner().read_signal() {
                Ok(Some(info)) => {
                    if let Some(code) = take_signal(info.ssi_signo as i32, agent, interactive) {
                        return Ok(code);
                    }
                }
                Ok(None) => {
                    ready.clear_ready();
                    break;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn supervise_async(
    _signals: &SigSet,
    _agent: Pid,
    _interactive: bool,
) -> std::io::Result<i32> {
    Err(std::io::Error::other(
        "the init runs only in Linux containers",
    ))
}

/// What the supervisor does with `sig`: the agent's exit code once it has exited (after
/// `SIGCHLD`), else `None` (a signal passed on to the agent, or ignored).
fn take_signal(sig: i32, agent: Pid, interactive: bool) -> Option<i32> {
    if sig == Signal::SIGCHLD as i32 {
        return reap(agent);
    }
    // With a terminal, Ctrl-C already reached the agent (same foreground process group).
    // A late release signal means nothing once the agent runs.
    if (sig == Signal::SIGINT as i32 && interactive) || sig == Signal::SIGUSR1 as i32 {
        return None;
    }
    if let Ok(signal) = Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(agent, signal);
    }
    None
}

/// Reaps every exited child; the agent's exit code once it is among them.
fn reap(agent: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                result = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}
