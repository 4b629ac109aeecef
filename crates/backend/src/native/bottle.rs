//! A running native bottle: the launcher's handle on the outer helper, and the terminal it lends
//! to the agent's host ids while the bottle runs (given back, with the foreground process group,
//! when the bottle ends).

use std::io::Write;
use std::path::PathBuf;
use std::process::Child;

use super::{cgroup, exit_code, os, owner};
use crate::inbottle::native_helper;
use crate::{BackendError, BottleExit, RunningBottle};

/// Gives the terminal on stdin to the agent's host ids; returns its owner to restore.
pub(super) fn lend_terminal(host: owner::HostIds) -> Option<(u32, u32)> {
    let st = nix::sys::stat::fstat(std::io::stdin()).ok()?;
    nix::unistd::fchown(
        std::io::stdin(),
        Some(nix::unistd::Uid::from_raw(host.uid)),
        Some(nix::unistd::Gid::from_raw(host.gid)),
    )
    .ok()?;
    Some((st.st_uid, st.st_gid))
}

pub(super) fn give_back_terminal(owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        let _ = nix::unistd::fchown(
            std::io::stdin(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
    }
}

pub(super) fn restore_foreground(pgrp: Option<nix::unistd::Pid>) {
    let Some(pgrp) = pgrp else { return };
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok() {
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), pgrp);
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// A running native bottle (the launcher's handle on the outer helper).
#[derive(Debug)]
pub struct NativeBottle {
    pub(super) identity: String,
    pub(super) child: Child,
    pub(super) dir: PathBuf,
    pub(super) foreground: Option<nix::unistd::Pid>,
    pub(super) landlock: String,
    /// The bottle's cgroups (`None` when `dangerously_allow_unenforced` let it start without).
    pub(super) limits: Option<cgroup::CgroupPlan>,
    /// The terminal's owner before it was lent to the agent's uid.
    pub(super) terminal: Option<(u32, u32)>,
    /// Where `dir` goes once the bottle ended ([`super::NativeConfig::trash`]).
    pub(super) trash: Option<PathBuf>,
    pub(super) done: bool,
}

impl NativeBottle {
    /// How far Landlock is enforced in this bottle (`fully enforced`, `partially enforced`,
    /// `not available`).
    pub fn landlock(&self) -> &str {
        &self.landlock
    }

    /// Where the bottle's limits are enforced (`cgroup v1: …`), or `None` when it runs
    /// without (`dangerously_allow_unenforced` on a host without usable cgroups).
    pub fn limits(&self) -> Option<String> {
        self.limits.as_ref().map(cgroup::CgroupPlan::describe)
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            restore_foreground(self.foreground);
            if let Some(plan) = &self.limits {
                cgroup::remove(plan, &mut os::RealOs);
            }
            give_back_terminal(self.terminal.take());
            // Every process of the bottle is gone, and with them the mounts on `root/`
            // (they lived in the bottle's mount namespace only): what is left is plain files,
            // moved aside in one rename and removed after `start` returned.
            let moved = self
                .trash
                .as_deref()
                .is_some_and(|trash| state::move_to_trash(trash, &self.dir, "run").is_ok());
            if !moved {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

impl RunningBottle for NativeBottle {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn Write + Send>)
    }

    fn take_stdout(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)
    }

    fn take_stderr(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)
    }

    fn wait(&mut self) -> Result<BottleExit, BackendError> {
        self.wait_then(&mut || {})
    }

    /// The helper's exit means every process of the bottle is gone (its PID namespace died
    /// with the helper's child); what is left, the cgroups and the runtime directory, is
    /// removed (the directory: moved into the trash) on another thread while `exited` runs.
    fn wait_then(&mut self, exited: &mut dyn FnMut()) -> Result<BottleExit, BackendError> {
        let status = self.child.wait().map_err(|source| BackendError::Process {
            action: "wait for the bottle",
            source,
        });
        if status.is_err() {
            // Not known to have ended: torn down by `finish` on drop after a kill.
            exited();
        } else {
            std::thread::scope(|scope| {
                let finishing = scope.spawn(|| self.finish());
                exited();
                let _ = finishing.join();
            });
        }
        Ok(BottleExit {
            code: exit_code(status?),
        })
    }

    fn terminate(&mut self) -> Result<(), BackendError> {
        if self.done {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| {
            BackendError::Process {
                action: "signal the bottle",
                source: e.into(),
            }
        })
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        if self.done || matches!(self.child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, native_helper::TEARDOWN_SIGNAL).map_err(|e| {
            BackendError::Process {
                action: "kill the bottle",
                source: e.into(),
            }
        })
    }
}

impl Drop for NativeBottle {
    /// Kills the bottle and waits until every process of it is gone.
    fn drop(&mut self) {
        if !self.done {
            if self.kill().is_err() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
            self.finish();
        }
    }
}
