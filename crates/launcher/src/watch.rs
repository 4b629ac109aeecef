//! Watching the sidecar bundle while the agent runs.
//!
//! The bundle is the bottle's only way out. When it dies (a crash, the OOM killer, a stray
//! `kill -9`) nothing leaves the bottle any more — it fails closed — but without a watch the
//! agent would go on against dead sockets, `list` would say `running` and the operator would
//! learn nothing. So `start` watches it: on native the bundle is its child, waited for with
//! `waitid(WNOWAIT)` (seen exited but not reaped, so its pid cannot be reused while `start`
//! still signals it); on docker the backend races the sidecar container's end against the
//! agent's. When the bundle dies first, `start` says so on the operator's terminal, marks the
//! bottle `stopping` for `list`, stops the bottle (SIGTERM to the agent, SIGKILL after
//! [`STOP_GRACE`]) and keeps its state for `resume`.
//!
//! The bottle is stopped rather than the bundle restarted: the bundle died for a reason `start`
//! cannot know (a bug an agent can trigger again, memory pressure, someone killing it), and a
//! silent restart would hide that fault while the agent carries on. Stopping loses nothing: the
//! live routes, the queue and the audit log are files in `$BOT_BOTTLE_HOME`, kept with the
//! bottle's state, and `resume` starts it again with a new bundle once the operator has looked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use state::{Home, Identity};

use crate::Report;

/// How long the agent gets to exit after SIGTERM once its sidecar bundle is gone (as
/// `bot-bottle stop`'s default).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What is known about the sidecar bundle of one running bottle.
pub struct Watch {
    home: Home,
    identity: Identity,
    report: Arc<dyn Report>,
    state: Mutex<State>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// The agent runs; a bundle that ends now has died.
    Watching,
    /// The agent has ended; the bundle is being stopped by `start` itself.
    Ending,
    /// The bundle died while the agent ran (how it ended).
    Down(String),
}

impl Watch {
    pub fn new(home: &Home, identity: &Identity, report: Arc<dyn Report>) -> Watch {
        Watch {
            home: home.clone(),
            identity: identity.clone(),
            report,
            state: Mutex::new(State::Watching),
        }
    }

    /// The bundle was seen gone (`how`: "was killed by signal 9 (SIGKILL)"). Returns whether
    /// this is news, i.e. the agent still ran: then the operator has been told and the bottle
    /// marked `stopping`, and the caller stops the bottle.
    pub fn sidecar_down(&self, how: &str) -> bool {
        {
            let Ok(mut state) = self.state.lock() else {
                return false;
            };
            if *state != State::Watching {
                return false;
            }
            // `bot-bottle stop` stops the agent, then the bundle: a bundle that ends while a
            // stop is under way ends as asked (its end may be seen before the agent's), no
            // fault. The request is a file in the host's state directory, out of the agent's
            // reach.
            if self.home.bottle(&self.identity).stop_requested().exists() {
                *state = State::Ending;
                return false;
            }
            *state = State::Down(how.to_owned());
        }
        let _ = self.home.mark_sidecar_down(&self.identity, how);
        self.report.alert(&format!(
            "the sidecar bundle of {id} {how}; nothing can leave the bottle without it, so the bottle is being stopped and its state kept for `bot-bottle resume {id}`",
            id = self.identity
        ));
        true
    }

    /// The agent has ended. `gone` is how the bundle ended if it already had (it died just
    /// before the agent, perhaps why the agent ended); otherwise `start` stops it now, and
    /// that end is not a fault.
    pub fn agent_ended(&self, gone: Option<String>) {
        if let Some(how) = gone
            && self.sidecar_down(&how)
        {
            return;
        }
        if let Ok(mut state) = self.state.lock()
            && *state == State::Watching
        {
            *state = State::Ending;
        }
    }

    /// How the bundle died, if it died while the agent ran.
    pub fn down(&self) -> Option<String> {
        match &*self.state.lock().ok()? {
            State::Down(how) => Some(how.clone()),
            _ => None,
        }
    }
}

/// Blocks until the child `pid` has exited, without reaping it; how it ended. `None` when
/// it is no longer a child to wait for (already reaped by `start` stopping it).
pub fn wait_exited(pid: Pid) -> Option<String> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => return Some(describe(status)),
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// A notification of a child's end that can be waited for with a timeout: its pidfd, which
/// becomes readable when the process exits (Linux 5.3). Stopping the bundle waits on it
/// instead of polling, so teardown takes as long as the bundle's own shutdown, not the next
/// multiple of a sleep.
pub(crate) struct ExitWatch {
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl ExitWatch {
    /// Watches `pid` (a child not yet reaped, so the pid cannot name another process).
    pub(crate) fn new(pid: Pid) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; the
        // descriptor is owned by nothing else.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        let pidfd = i32::try_from(fd).ok().filter(|fd| *fd >= 0).map(|fd| {
            // SAFETY: `fd` was just returned by pidfd_open and is closed only by this owner.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        });
        ExitWatch { pidfd }
    }

    /// Waits up to `limit` for the process to end; `ended` says whether it has (checked
    /// after each wake-up, and every 10 ms where pidfds are missing). Whether it ended.
    pub(crate) fn wait(&self, limit: Duration, mut ended: impl FnMut() -> bool) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if ended() {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match &self.pidfd {
                Some(fd) => {
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(ms.max(1)));
                }
                None => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
    }
}

/// How the child `pid` ended if it already has (not reaped); `None` while it runs.
pub fn exited_now(pid: Pid) -> Option<String> {
    match waitid(
        Id::Pid(pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
    ) {
        Ok(WaitStatus::StillAlive) | Err(_) => None,
        Ok(status) => Some(describe(status)),
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => {
            format!(
                "was killed by signal {} ({})",
                signal as i32,
                signal.as_str()
            )
        }
        other => format!("ended ({other:?})"),
    }
}

/// The error `start` ends with when the bundle died under a running agent; the bottle is
/// then kept even on its first run.
#[derive(Debug)]
pub struct SidecarDown {
    pub identity: Identity,
    pub how: String,
    /// The bundle's own log and its last lines.
    pub log: std::path::PathBuf,
    pub tail: String,
}

impl std::fmt::Display for SidecarDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = &self.identity;
        write!(
            f,
            "the sidecar bundle of {id} {how} while the agent ran, so the bottle was stopped (nothing could leave it); its state is kept (live routes, decisions, the agent's home): `bot-bottle resume {id}` starts it again with a new sidecar bundle. The bundle's log is {log}",
            how = self.how,
            log = self.log.display()
        )?;
        if !self.tail.trim().is_empty() {
            write!(f, "; it ends with:\n{}", self.tail)?;
        }
        Ok(())
    }
}

impl std::error::Error for SidecarDown {}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn watch() -> (tempfile::TempDir, Watch) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let id = Identity::parse("demo-1a2b3").unwrap();
        std::fs::create_dir_all(home.state_dir(&id)).unwrap();
        let watch = Watch::new(&home, &id, Arc::new(crate::Recorded::default()));
        (dir, watch)
    }

    #[test]
    fn a_bundle_that_dies_under_the_agent_is_reported_once() {
        let (_dir, watch) = watch();
        assert!(watch.sidecar_down("was killed by signal 9 (SIGKILL)"));
        assert!(!watch.sidecar_down("exited with status 0"));
        watch.agent_ended(None);
        assert_eq!(
            watch.down().as_deref(),
            Some("was killed by signal 9 (SIGKILL)")
        );
    }

    #[test]
    fn a_bundle_that_ends_during_a_requested_stop_is_no_fault() {
        let (_dir, watch) = watch();
        let paths = watch.home.bottle(&watch.identity);
        std::fs::write(paths.stop_requested(), "\n").unwrap();
        // `bot-bottle stop` took the bundle down before `start` saw the agent's end.
        assert!(!watch.sidecar_down("exited with status 0"));
        watch.agent_ended(None);
        assert_eq!(watch.down(), None);
    }

    #[test]
    fn a_bundle_stopped_after_the_agent_ended_is_no_fault() {
        let (_dir, watch) = watch();
        watch.agent_ended(None);
        assert!(!watch.sidecar_down("exited with status 0"));
        assert_eq!(watch.down(), None);
    }

    #[test]
    fn a_bundle_found_dead_when_the_agent_ends_is_reported() {
        let (_dir, watch) = watch();
        watch.agent_ended(Some("exited with status 101".into()));
        assert_eq!(watch.down().as_deref(), Some("exited with status 101"));
    }

    #[test]
    fn an_exit_watch_wakes_when_the_child_ends_and_times_out_while_it_runs() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let watch = ExitWatch::new(pid);
        assert!(
            watch.pidfd.is_some(),
            "pidfd_open is missing (Linux < 5.3?)"
        );
        let ended = watch.wait(Duration::from_millis(50), || exited_now(pid).is_some());
        assert!(!ended, "a running child was seen ended");
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut checks_after = 0;
        assert!(watch.wait(Duration::from_secs(30), || {
            checks_after += 1;
            exited_now(pid).is_some()
        }));
        // Woken by the exit itself, not by rounds of polling.
        assert!(checks_after <= 3, "{checks_after} checks");
        assert!(child.wait().is_ok());
    }

    #[test]
    fn a_real_child_killed_with_sigkill_is_seen_without_being_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        assert_eq!(exited_now(pid), None);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let how = wait_exited(pid);
        assert_eq!(how.as_deref(), Some("was killed by signal 9 (SIGKILL)"));
        // Not reaped: still a zombie child of ours, seen again, then reaped by `wait`.
        assert_eq!(exited_now(pid), how);
        assert!(child.wait().is_ok());
        assert_eq!(wait_exited(pid), None);
    }
}
