//! How a VM guest's init turns itself into the agent (qemu and smolmachines guests): a new
//! session (and the terminal when interactive), every capability out of the bounding and
//! ambient sets, `RLIMIT_NPROC`, the agent's uid and gid with no supplementary groups,
//! `no_new_privs` and native's seccomp deny list. Moved here from the qemu guest so both guests
//! share it.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `command` start as the confined agent (applied between fork and exec).
pub(crate) fn confine(
    command: &mut Command,
    uid: u32,
    gid: u32,
    pids: u32,
    interactive: bool,
) -> Result<(), String> {
    let nproc = libc::rlimit {
        rlim_cur: libc::rlim_t::from(pids),
        rlim_max: libc::rlim_t::from(pids),
    };
    // The same seccomp deny list as a native bottle's agent, in the guest too: the guest's
    // kernel is the boundary, the filter keeps its attack surface as small as native's.
    let filter = crate::native::seccomp::compile(&crate::native::seccomp::policy())
        .map_err(|e| format!("cannot build the agent's seccomp filter: {e}"))?;
    // SAFETY: setsid(2), ioctl(2), prctl(2), setgroups(2), setgid(2), setuid(2) and the
    // seccomp installation (no allocation: the programs were compiled before the fork) are
    // async-signal-safe. As root still: the session and terminal, every capability out of the
    // bounding set; then the agent's ids (which clears the rest), then the filter.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setsid())?;
            if interactive {
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            check(libc::setrlimit(libc::RLIMIT_NPROC, &nproc))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            crate::native::seccomp::install(&filter).map_err(std::io::Error::other)
        });
    }
    Ok(())
}
