//! The last steps of the bottle's init before and in the agent: every capability dropped, signals
//! reset, the terminal taken, Landlock applied, and the `execve` of the agent's program (looked up
//! the way `execvp` would) with exactly the spec's environment.

use super::*;

/// No capability left, none can come back.
pub(super) fn drop_privileges() -> std::io::Result<()> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; unknown numbers return EINVAL.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    clear_capabilities()?;
    nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)
}

fn clear_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads a v3 header and two data structs, both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn reset_signals() -> Result<(), Failure> {
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    }
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(fail("signal mask"))
}

fn take_terminal() -> nix::Result<()> {
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    // Changing the foreground group from a background group raises SIGTTOU unless blocked.
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
    let result = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpgrp());
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    result
}

fn apply_landlock(writable: &[PathBuf]) -> Result<String, Failure> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
        path_beneath_rules,
    };
    let abi = ABI::V6;
    let terminals: Vec<String> = (0..3)
        .filter(|fd| {
            // SAFETY: fds 0-2 are borrowed only for the isatty(3) call (a closed one is
            // reported as an error, i.e. not a terminal).
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            nix::unistd::isatty(borrowed).unwrap_or(false)
        })
        .map(|fd| format!("/proc/self/fd/{fd}"))
        .collect();
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(writable, AccessFs::from_all(abi))))
        // A terminal inherited from the launcher lives on the host's devpts, outside the
        // bottle's tree: without this rule `/dev/stdout` (→ /proc/self/fd/1) would be denied.
        .and_then(|r| r.add_rules(path_beneath_rules(terminals, AccessFs::from_file(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(fail("landlock"))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        RulesetStatus::NotEnforced => "not available",
    }
    .to_owned())
}

fn cstring(bytes: &[u8], what: &'static str) -> Result<CString, Failure> {
    CString::new(bytes).map_err(|_| Failure {
        stage: "command",
        message: format!("{what} contains a NUL byte"),
    })
}

/// The agent: final restrictions, then `execve` with exactly the spec's environment.
pub(super) fn agent(
    req: &HelperRequest,
    status: &mut File,
    programs: &[seccompiler::BpfProgram],
) -> Result<std::convert::Infallible, Failure> {
    // Also arms the parent-death signal; init's death takes the whole PID namespace anyway.
    become_agent_user(req)?;
    reset_signals()?;
    if req.spec.interactive {
        take_terminal().map_err(|e| Failure {
            stage: "terminal",
            message: format!("{e}: an interactive bottle needs a terminal on stdin"),
        })?;
    } else {
        nix::unistd::setsid().map_err(fail("session"))?;
    }
    nix::unistd::chdir(&req.spec.workspace.inside).map_err(fail("workspace"))?;

    let command = req
        .spec
        .argv
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let path = req.spec.env.get("PATH").map(String::as_str);
    let program = resolve_program(command, path, &is_executable).ok_or_else(|| Failure {
        stage: "command",
        message: format!(
            "`{command}` not found in the bottle (PATH={})",
            path.unwrap_or("")
        ),
    })?;
    let program_c = cstring(program.as_os_str().as_bytes(), "the command")?;
    let argv: Vec<CString> = req
        .spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = req
        .spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "an environment variable"))
        .collect::<Result<_, _>>()?;
    drop_privileges().map_err(fail("drop privileges"))?;
    let landlock = apply_landlock(&req.writable)?;
    seccomp::install(programs).map_err(fail("seccomp"))?;
    report(status, &HelperStatus::Started { landlock });
    let err = nix::unistd::execve(&program_c, &argv, &env).err();
    Err(Failure {
        stage: "exec",
        message: format!(
            "{}: {}",
            program.display(),
            err.map(|e| e.desc()).unwrap_or("exec failed")
        ),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `command` the way `execvp` would, in `path` (a `PATH` value).
pub fn resolve_program(
    command: &str,
    path: Option<&str>,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    path?
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(command))
        .find(|candidate| exists(candidate))
}
