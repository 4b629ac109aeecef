//! The in-bottle helper: the process tree that builds a native bottle and runs the agent in it.
//!
//! ```text
//! launcher (`bot-bottle start`, the caller of `NativeBackend::launch`)
//!  └─ outer helper   re-executed binary (`helper_main`), host PID namespace; PDEATHSIG ← launcher
//!      │             (already in the bottle's cgroups: the launcher moves it there before
//!      │             sending the request); unshare(user, mount, pid, net, uts, ipc);
//!      │             uid/gid map (written by a short-lived mapper child left in the host's
//!      │             user namespace when root maps the agent to another host uid); hostname
//!      └─ init       PID 1 of the bottle; PDEATHSIG ← outer
//!          │         opens every host path it needs (sockets, bind sources) and mounts the
//!          │         root tmpfs with the launcher's host uid, then becomes the agent's
//!          │         unprivileged uid; mounts the plan through those descriptors, pivot_root,
//!          │         brings `lo` up, binds the forward ports, then drops every capability,
//!          │         sets no_new_privs + seccomp and becomes the forwarder and reaper (one
//!          │         event loop on its one thread); exits with the agent's exit code
//!          └─ agent  PDEATHSIG ← init; own session (or the terminal's foreground group);
//!                    bounding set dropped, no_new_privs, Landlock, seccomp, exact env; execve
//! ```
//!
//! Teardown: the launcher dies (even `kill -9`) → the outer helper gets SIGKILL → init gets
//! SIGKILL → the kernel kills every process of the PID namespace. The agent exits → init exits
//! with its code → the outer helper exits with it → the launcher sees it.
//!
//! Why re-execute instead of forking the launcher: the launcher may be multi-threaded (tokio),
//! where only async-signal-safe calls are allowed between `fork` and `exec`; the helper is a
//! fresh single-threaded process that can fork, mount and allocate freely.
//!
//! The forwarder: each sidecar's host Unix socket is opened as an `O_PATH` descriptor by init
//! *before* `pivot_root`, so the socket never appears in the bottle's mount tree; init accepts
//! on `127.0.0.1:<port>` in the bottle's network namespace and connects through
//! `/proc/self/fd/<n>`. Init is non-dumpable and holds no capability after setup, so the agent
//! (same uid, no capabilities, seccomp without `ptrace`) can neither read `/proc/1/fd` nor
//! signal or trace it (Landlock's signal scope, where available, forbids even the signals).
//!
//! Protocol with the launcher: fd 3 carries the JSON [`HelperRequest`]; fd 4 (close-on-exec)
//! receives JSON lines of [`HelperStatus`]. The launcher reads fd 4 to end-of-file, which
//! happens when the agent's `execve` closes the last copy: it then knows whether the agent
//! started, and if not, which stage failed.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::native::forward;
use crate::native::os::RealOs;
use crate::native::plan::{self, MountOp};
use crate::native::seccomp;
use crate::spec::LaunchSpec;

mod agent;
pub use agent::resolve_program;
use agent::{agent, drop_privileges};

/// File descriptor of the request pipe in the helper.
pub const REQUEST_FD: RawFd = 3;
/// File descriptor of the status pipe in the helper.
pub const STATUS_FD: RawFd = 4;
/// Exit code of the helper when the bottle could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// What the launcher sends the helper.
#[derive(Debug, Serialize, Deserialize)]
pub struct HelperRequest {
    pub spec: LaunchSpec,
    pub plan: Vec<MountOp>,
    /// The host directory the root tmpfs is mounted on.
    pub root: PathBuf,
    /// The launcher's PID: the helper refuses to run if it is already orphaned.
    pub launcher_pid: i32,
    pub inside_uid: u32,
    pub inside_gid: u32,
    /// The host ids `inside_uid`/`inside_gid` map to (see [`crate::native::owner`]). When they differ
    /// from the launcher's (root starting a bottle), a mapper process writes the maps from
    /// the host's user namespace and the bottle's processes switch to them once set up.
    pub host: crate::native::owner::HostIds,
    /// Paths (inside) the agent may write, for Landlock.
    pub writable: Vec<PathBuf>,
}

/// Lines the helper writes on the status pipe.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HelperStatus {
    /// The agent is about to `execve`; `landlock` says how far Landlock is enforced.
    Started { landlock: String },
    /// A setup stage failed; nothing of the agent ran.
    Failed { stage: String, message: String },
}

struct Failure {
    stage: &'static str,
    message: String,
}

fn fail<E: std::fmt::Display>(stage: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure {
        stage,
        message: e.to_string(),
    }
}

fn report(status: &mut File, line: &HelperStatus) {
    if let Ok(mut json) = serde_json::to_vec(line) {
        json.push(b'\n');
        let _ = status.write_all(&json);
    }
}

fn report_failure(status: &mut File, failure: Failure) {
    report(
        status,
        &HelperStatus::Failed {
            stage: failure.stage.to_owned(),
            message: failure.message,
        },
    );
}

/// Entry point of the helper. `bot-bottle` calls this for its hidden `__bottle-init`
/// subcommand (before anything else: no threads, no logging); never returns.
pub fn helper_main() -> ! {
    if !is_pipe(REQUEST_FD) || !is_pipe(STATUS_FD) {
        eprintln!(
            "error: `{HELPER_SUBCOMMAND}` is internal to the native backend and is started only by `bot-bottle start`"
        );
        std::process::exit(2);
    }
    // SAFETY: fd 4 is the status pipe handed over by the launcher (see `launch`); nothing else
    // in this fresh process owns it.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let code = match outer(&mut status) {
        Ok(code) => code,
        Err(failure) => {
            report_failure(&mut status, failure);
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn is_pipe(fd: RawFd) -> bool {
    // SAFETY: the descriptor is only borrowed for fstat(2); a closed one yields an error.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::sys::stat::fstat(borrowed).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFIFO
    })
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; `pid` is our direct child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

extern "C" fn kill_child(_sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; `pid` is our direct child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Sent to the outer helper to tear the bottle down synchronously.
pub const TEARDOWN_SIGNAL: Signal = Signal::SIGUSR1;

/// Termination signals are passed on to `pid`; [`TEARDOWN_SIGNAL`] kills it at once (for the
/// outer helper: the bottle's init, whose exit takes the whole PID namespace down before the
/// outer helper exits — so a launcher that waits for the outer helper knows all is gone).
fn forward_signals_to(pid: Pid) -> Result<(), Failure> {
    CHILD_PID.store(pid.as_raw(), Ordering::Relaxed);
    let action = signal::SigAction::new(
        SigHandler::Handler(forward_signal),
        signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only loads an atomic and calls kill(2).
        unsafe { signal::sigaction(sig, &action) }.map_err(fail("signal handlers"))?;
    }
    let teardown = signal::SigAction::new(
        SigHandler::Handler(kill_child),
        signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only loads an atomic and calls kill(2).
    unsafe { signal::sigaction(TEARDOWN_SIGNAL, &teardown) }.map_err(fail("signal handlers"))?;
    Ok(())
}

fn set_pdeathsig() -> Result<(), Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(fail("parent-death signal"))
}

fn read_request() -> Result<HelperRequest, Failure> {
    // SAFETY: fd 3 is the request pipe handed over by the launcher; we take ownership once.
    let mut pipe = unsafe { File::from_raw_fd(REQUEST_FD) };
    let mut buf = Vec::new();
    pipe.read_to_end(&mut buf).map_err(fail("read request"))?;
    serde_json::from_slice(&buf).map_err(fail("read request"))
}

fn outer(status: &mut File) -> Result<i32, Failure> {
    set_cloexec(status.as_raw_fd()).map_err(fail("status pipe"))?;
    let req = read_request()?;
    set_pdeathsig()?;
    if nix::unistd::getppid().as_raw() != req.launcher_pid {
        return Err(Failure {
            stage: "start",
            message: "the launcher exited before the bottle started".into(),
        });
    }

    let host_uid = nix::unistd::getuid();
    let host_gid = nix::unistd::getgid();
    if host_uid.is_root() {
        // Root's supplementary groups would stay effective inside; unprivileged users cannot
        // drop theirs, which is why the plan masks everything not world-readable.
        nix::unistd::setgroups(&[]).map_err(fail("drop supplementary groups"))?;
    }
    // Root maps the agent to another host uid: only a process in the host's user namespace
    // may write such a map, so a mapper forked now writes it once this process has unshared.
    let other_ids = req.host.uid != host_uid.as_raw() || req.host.gid != host_gid.as_raw();
    let mapper = if other_ids {
        Some(Mapper::spawn(&req, status)?)
    } else {
        None
    };
    nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| Failure {
        stage: "namespaces",
        message: format!(
            "unshare: {e} (user namespaces unavailable? run `bot-bottle doctor` for the fix)"
        ),
    })?;
    match mapper {
        Some(mapper) => mapper.finish()?,
        None => {
            std::fs::write("/proc/self/setgroups", "deny")
                .map_err(fail("user namespace: setgroups"))?;
            std::fs::write(
                "/proc/self/uid_map",
                format!("{} {} 1\n", req.inside_uid, host_uid.as_raw()),
            )
            .map_err(fail("user namespace: uid_map"))?;
            std::fs::write(
                "/proc/self/gid_map",
                format!("{} {} 1\n", req.inside_gid, host_gid.as_raw()),
            )
            .map_err(fail("user namespace: gid_map"))?;
        }
    }
    nix::unistd::sethostname(&req.spec.identity).map_err(fail("hostname"))?;
    // Only now: a non-dumpable process's /proc files belong to root, so an unprivileged
    // helper could not have written its own uid_map above. Init inherits this.
    nix::sys::prctl::set_dumpable(false).map_err(fail("make non-dumpable"))?;

    // A lifeline: init checks it after arming its parent-death signal, to catch an outer
    // helper that died in between (init's getppid() is 0 in its own PID namespace).
    let (life_r, life_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("lifeline pipe"))?;
    // SAFETY: the helper is single-threaded (a fresh process that started no thread).
    match unsafe { nix::unistd::fork() }.map_err(fail("fork init"))? {
        ForkResult::Child => {
            drop(life_w);
            let code = match set_pdeathsig().and_then(|()| parent_alive(&life_r)) {
                Err(failure) => {
                    report_failure(status, failure);
                    std::process::exit(SETUP_FAILED)
                }
                Ok(()) => match init(&req, status, &life_r) {
                    Ok(code) => code,
                    Err(failure) => {
                        report_failure(status, failure);
                        SETUP_FAILED
                    }
                },
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(life_r);
            // Held open until this process exits.
            std::mem::forget(life_w);
            // Handlers first: once the launcher sees end-of-file it may signal us.
            forward_signals_to(child)?;
            // Our copy of the status pipe must close so the launcher sees end-of-file.
            let _ = nix::unistd::close(STATUS_FD);
            Ok(wait_for(child))
        }
    }
}

/// Whether the write end of `lifeline` is still open somewhere (i.e. the parent lives).
fn parent_alive(lifeline: &std::os::fd::OwnedFd) -> Result<(), Failure> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::ZERO).map_err(fail("lifeline"))?;
    let hung_up = ready > 0
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLIN));
    if hung_up {
        return Err(Failure {
            stage: "start",
            message: "the bottle's launcher exited during setup".into(),
        });
    }
    Ok(())
}

/// Waits for `child` and maps its end to a shell-style exit code.
fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return SETUP_FAILED,
        }
    }
}

fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: the descriptor is open for the lifetime of this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

/// A child left in the host's user namespace (as root) that writes the outer helper's uid and
/// gid maps once the outer helper has unshared, then exits.
struct Mapper {
    pid: Pid,
    go: std::os::fd::OwnedFd,
}

impl Mapper {
    fn spawn(req: &HelperRequest, status: &mut File) -> Result<Mapper, Failure> {
        let (go_r, go_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("mapper pipe"))?;
        // SAFETY: the helper is single-threaded (a fresh process that started no thread).
        match unsafe { nix::unistd::fork() }.map_err(fail("fork mapper"))? {
            ForkResult::Child => {
                drop(go_w);
                // The outer helper's /proc directory, held open: should it die and its PID be
                // reused, the writes below fail instead of reaching another process.
                let outer = nix::unistd::getppid().as_raw();
                let Ok(proc_dir) = std::fs::File::open(format!("/proc/{outer}")) else {
                    std::process::exit(1);
                };
                let mut byte = [0u8; 1];
                let go = nix::unistd::read(&go_r, &mut byte).is_ok_and(|n| n == 1);
                if !go {
                    std::process::exit(1);
                }
                let write = |file: &str, text: String| {
                    nix::fcntl::openat(
                        &proc_dir,
                        file,
                        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .and_then(|fd| nix::unistd::write(&fd, text.as_bytes()))
                    .map(drop)
                    .map_err(|e| format!("{file}: {e}"))
                };
                let result = write("setgroups", "deny".into())
                    .and_then(|()| {
                        write(
                            "uid_map",
                            format!("{} {} 1\n", req.inside_uid, req.host.uid),
                        )
                    })
                    .and_then(|()| {
                        write(
                            "gid_map",
                            format!("{} {} 1\n", req.inside_gid, req.host.gid),
                        )
                    });
                match result {
                    Ok(()) => std::process::exit(0),
                    Err(message) => {
                        report_failure(
                            status,
                            Failure {
                                stage: "user namespace",
                                message,
                            },
                        );
                        std::process::exit(SETUP_FAILED)
                    }
                }
            }
            ForkResult::Parent { child } => {
                drop(go_r);
                Ok(Mapper {
                    pid: child,
                    go: go_w,
                })
            }
        }
    }

    /// Releases the mapper and waits until the maps are written.
    fn finish(self) -> Result<(), Failure> {
        nix::unistd::write(&self.go, &[1]).map_err(fail("mapper"))?;
        drop(self.go);
        match wait_for(self.pid) {
            0 => Ok(()),
            code => Err(Failure {
                stage: "user namespace",
                message: format!("the uid/gid mapper failed ({code})"),
            }),
        }
    }
}

/// The plan with every host source replaced by `/proc/self/fd/N` of a descriptor opened now
/// (kept open, returned, until the mounts are made).
fn open_sources(
    plan: &[MountOp],
    path_fd: &dyn Fn(&Path) -> Result<std::os::fd::OwnedFd, Failure>,
) -> Result<(Vec<MountOp>, Vec<std::os::fd::OwnedFd>), Failure> {
    let mut fds = Vec::new();
    let mut opened: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
    let mut redirect = |source: &PathBuf| -> Result<PathBuf, Failure> {
        if let Some(path) = opened.get(source) {
            return Ok(path.clone());
        }
        let fd = path_fd(source)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        fds.push(fd);
        opened.insert(source.clone(), path.clone());
        Ok(path)
    };
    let mut out = Vec::with_capacity(plan.len());
    for op in plan {
        out.push(match op {
            MountOp::BindReadOnly {
                source,
                target,
                kind,
            } => MountOp::BindReadOnly {
                source: redirect(source)?,
                target: target.clone(),
                kind: *kind,
            },
            MountOp::BindWritable {
                source,
                target,
                kind,
            } => MountOp::BindWritable {
                source: redirect(source)?,
                target: target.clone(),
                kind: *kind,
            },
            MountOp::BindDevice { source, target } => MountOp::BindDevice {
                source: redirect(source)?,
                target: target.clone(),
            },
            other => other.clone(),
        });
    }
    Ok((out, fds))
}

/// Switches to the agent's ids inside (the unprivileged host ids they map to), re-arming what
/// a credential change resets: the parent-death signal and non-dumpability.
fn become_agent_user(req: &HelperRequest) -> Result<(), Failure> {
    let gid = nix::unistd::Gid::from_raw(req.inside_gid);
    let uid = nix::unistd::Uid::from_raw(req.inside_uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(fail("switch to the agent's group"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(fail("switch to the agent's user"))?;
    set_pdeathsig()?;
    nix::sys::prctl::set_dumpable(false).map_err(fail("make non-dumpable"))
}

/// PID 1 of the bottle.
fn init(
    req: &HelperRequest,
    status: &mut File,
    lifeline: &std::os::fd::OwnedFd,
) -> Result<i32, Failure> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("make mounts private"))?;

    // The sidecar sockets, opened while the host tree is still visible.
    let mut sockets = Vec::new();
    for fwd in &req.spec.forwards {
        sockets.push(forward::open_socket(&fwd.host_unix_socket).map_err(fail("forward"))?);
    }

    // Everything of the host the plan needs is looked up now, while this process still has
    // the launcher's host uid (root may own the directories on the way); from here on it is
    // the agent's unprivileged uid and reaches them only through these descriptors.
    let root_data = format!("mode=755,uid={},gid={}", req.inside_uid, req.inside_gid);
    nix::mount::mount(
        Some("tmpfs"),
        &req.root,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(root_data.as_str()),
    )
    .map_err(fail("mount the root tmpfs"))?;
    let path_fd = |p: &Path| {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Failure {
            stage: "mounts",
            message: format!("open {}: {e}", p.display()),
        })
    };
    let root = path_fd(&req.root)?;
    let (plan, sources) = open_sources(&req.plan, &path_fd)?;
    let null = path_fd(Path::new("/dev/null"))?;
    become_agent_user(req)?;
    parent_alive(lifeline)?;
    nix::unistd::fchdir(&root).map_err(fail("enter the root tmpfs"))?;
    let null_path = PathBuf::from(format!("/proc/self/fd/{}", null.as_raw_fd()));
    plan::apply_below(&plan, Path::new("."), &null_path, &mut RealOs).map_err(fail("mounts"))?;
    drop((sources, null, root));
    enter_root(Path::new(".")).map_err(fail("pivot_root"))?;
    forward::loopback_up().map_err(fail("loopback"))?;

    let mut listeners = Vec::new();
    for (fwd, socket) in req.spec.forwards.iter().zip(sockets) {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, fwd.inside_port))
            .map_err(fail("forward: listen"))?;
        listeners.push((v4, socket.clone()));
        // IPv6 may be disabled in the kernel; `localhost` then means 127.0.0.1 only.
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, fwd.inside_port)) {
            listeners.push((v6, socket));
        }
    }

    // One filter for init and agent, compiled before the fork.
    let programs = seccomp::compile(&seccomp::policy()).map_err(fail("seccomp"))?;
    // SAFETY: init is single-threaded here, and stays so (the forwarder is an event loop on
    // init's own thread).
    match unsafe { nix::unistd::fork() }.map_err(fail("fork agent"))? {
        ForkResult::Child => {
            drop(listeners);
            let failure = match agent(req, status, &programs) {
                Ok(never) => match never {},
                Err(failure) => failure,
            };
            report_failure(status, failure);
            std::process::exit(127)
        }
        ForkResult::Parent { child } => {
            let _ = nix::unistd::close(STATUS_FD);
            drop_privileges().map_err(fail("drop privileges"))?;
            // Seccomp for init too: it only accepts, connects and copies from here on.
            seccomp::install(&programs).map_err(fail("seccomp"))?;
            forward_signals_to(child)?;
            // Forwarder and reaper share init's one thread: nothing here needs a new task
            // under the bottle's `pids` limit, which the agent may have used up.
            match forward::relay_until(listeners, reap_async(child)) {
                Ok(code) => Ok(code),
                // No event loop: the ports are closed by now (clients are refused, never
                // left waiting); the agent still has its reaper.
                Err(_) => Ok(reap(child)),
            }
        }
    }
}

/// Makes the prepared root the process's `/` and detaches the host tree.
fn enter_root(root: &Path) -> nix::Result<()> {
    nix::unistd::chdir(root)?;
    nix::unistd::pivot_root(".", ".")?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")
}

/// [`reap`] inside the forwarder's event loop: woken by `SIGCHLD` instead of blocking in
/// `waitpid`. Fails only if `SIGCHLD` cannot be watched.
async fn reap_async(agent: Pid) -> std::io::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    // Watched before the first sweep, so no exit between the two is missed.
    let mut sigchld = signal(SignalKind::child())?;
    loop {
        // Signals merge: every child that changed state since the last one.
        loop {
            let flags = WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG;
            match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(WaitStatus::Exited(pid, code)) if pid == agent => return Ok(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                    return Ok(128 + sig as i32);
                }
                Ok(WaitStatus::Stopped(pid, _)) if pid == agent => {
                    let _ = signal::kill(agent, Signal::SIGCONT);
                }
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(_) => return Ok(SETUP_FAILED),
            }
        }
        sigchld.recv().await;
    }
}

/// Reaps every process of the bottle until the agent ends; a stopped agent (Ctrl-Z, which has
/// no shell to resume it) is continued.
fn reap(agent: Pid) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => return 128 + sig as i32,
            Ok(WaitStatus::Stopped(pid, _)) if pid == agent => {
                let _ = signal::kill(agent, Signal::SIGCONT);
            }
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return SETUP_FAILED,
        }
    }
}

/// Used by the launcher to set the child up between `fork` and `exec`: moves the two pipe ends
/// to fds 3 and 4 and arms the parent-death signal. Async-signal-safe (raw libc calls only).
///
/// # Safety
/// Must only be called in the child of a `fork`, with `request` and `status` open.
pub unsafe fn child_setup(request: RawFd, status: RawFd) -> std::io::Result<()> {
    // SAFETY: plain fd syscalls on descriptors the caller guarantees are open. Duplicating
    // above 10 first avoids clobbering when a source already is 3 or 4.
    unsafe {
        let r = libc::fcntl(request, libc::F_DUPFD_CLOEXEC, 10);
        let s = libc::fcntl(status, libc::F_DUPFD_CLOEXEC, 10);
        if r < 0 || s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(r, REQUEST_FD) < 0 || libc::dup2(s, STATUS_FD) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Helper arguments for `bot-bottle`: the hidden subcommand that calls [`helper_main`].
pub use crate::helper_command::HELPER_SUBCOMMAND;
