//! The sidecar bundle as a child process of the launcher (native backend): `bot-bottle
//! sidecar --config FILE` with a minimal environment plus the tokens its routes name, ready
//! once it prints `ready`, shut down once it prints `stopped`.
//!
//! `stopped` is the bundle's last act in user space: its sidecars have drained, the gate has
//! revoked its deploy keys, the last audit and log lines are written and its async runtime is
//! gone (every listener closed). What is left is the kernel's end of the process, which can
//! take longer than the whole shutdown: closing the supervise queue's inotify descriptor waits
//! for an SRCU grace period (`fsnotify_destroy_group`), 6-28 ms on the development VM. So
//! `start` goes on at `stopped` ([`Sidecar::stop_after_shutdown`]) and the process is reaped
//! beside the rest of the teardown (and by init once `start` has exited); a bundle that ends
//! without saying `stopped` (a crash, a kill, an older bundle) is waited for as before.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::Context;
use crate::{BottlePaths, LaunchError, Options};

/// How long the sidecar bundle may take to become ready (the gate's first upstream sync).
const SIDECAR_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the bundle gets to finish after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The line the bundle prints once its shutdown is done (`bot-bottle sidecar`).
pub(crate) const STOPPED: &str = "stopped";

/// The last lines of the bundle's log (where a crash says why).
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The sidecar bundle as a child process of `start`: stopped with SIGTERM when the agent
/// exits, and when `start` dies (its parent-death signal), so that it always runs its
/// shutdown.
pub(crate) struct Sidecar {
    child: Child,
    /// What the bundle said after `ready`: `true` for its `stopped` line, `false` when its
    /// stdout closed without it.
    said: mpsc::Receiver<bool>,
}

/// A sidecar bundle spawned but not yet known to be ready: the launcher writes the agent's
/// home meanwhile and then waits ([`Starting::ready`]). Dropped without that wait, the
/// bundle is stopped.
pub(crate) struct Starting {
    sidecar: Option<Sidecar>,
    ready: mpsc::Receiver<bool>,
    log_path: std::path::PathBuf,
}

impl Starting {
    /// Waits for the bundle's `ready` line; a bundle that exits first or stays silent is
    /// stopped and its log's last lines returned in the error.
    pub(crate) fn ready(mut self) -> Result<Sidecar, LaunchError> {
        let outcome = self.ready.recv_timeout(SIDECAR_READY_TIMEOUT);
        let Some(mut sidecar) = self.sidecar.take() else {
            return Err(LaunchError::Invalid(
                "the sidecar bundle was stopped".into(),
            ));
        };
        match outcome {
            Ok(true) => Ok(sidecar),
            outcome => {
                sidecar.stop();
                let why = if outcome.is_err() {
                    "did not become ready in time"
                } else {
                    "exited before it was ready"
                };
                Err(LaunchError::SidecarNotReady {
                    why,
                    tail: log_tail(&self.log_path),
                    log: self.log_path.clone(),
                })
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut sidecar) = self.sidecar.take() {
            sidecar.stop();
        }
    }
}

impl Sidecar {
    /// Starts the bundle; [`Starting::ready`] waits for its readiness line.
    pub(crate) fn spawn(
        paths: &BottlePaths,
        tokens: &[String],
        options: &Options,
    ) -> Result<Starting, LaunchError> {
        let log_path = paths.sidecar_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = Command::new(&options.exe);
        cmd.arg("sidecar")
            .arg("--config")
            .arg(paths.sidecar_config())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // A minimal environment plus the tokens the routes name: nothing else of the host's.
        let mut env: BTreeMap<&str, String> = BTreeMap::new();
        for k in [
            "PATH",
            "HOME",
            "USER",
            "LANG",
            "TZ",
            "BOT_BOTTLE_LOG",
            "RUST_LOG",
        ] {
            if let Some(v) = options.env.var(k) {
                env.insert(k, v);
            }
        }
        for t in tokens {
            if let Some(v) = options.env.var(t) {
                env.insert(t, v);
            }
        }
        cmd.envs(env);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent; it only makes the kernel signal the bundle if `start` dies.
        //
        // SIGTERM, not SIGKILL: a `start` that dies (killed, its terminal closed) must not
        // take the bundle's shutdown with it, which is where the git gate revokes the forge
        // deploy keys it made; nothing revokes them later. The agent goes at once (its
        // helpers' own parent-death signal is SIGKILL); the bundle's shutdown is bounded by
        // its own time limits, and its stderr is a file, so it writes to no pipe of `start`.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().context("cannot start the sidecar bundle")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LaunchError::Invalid("the sidecar bundle has no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        let (said_tx, said) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let ready = matches!(lines.next(), Some(Ok(l)) if l.trim() == "ready");
            let _ = tx.send(ready);
            // Keep draining so the bundle never blocks on a full pipe; `stopped` is its end.
            let mut stopped = false;
            for line in lines.map_while(Result::ok) {
                if line.trim() == STOPPED {
                    stopped = true;
                    let _ = said_tx.send(true);
                }
            }
            if !stopped {
                let _ = said_tx.send(false);
            }
        });
        Ok(Starting {
            sidecar: Some(Sidecar { child, said }),
            ready: rx,
            log_path,
        })
    }

    pub(crate) fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0))
    }

    /// SIGTERM, then SIGKILL after 5 s; reaps it. Does nothing once it has been reaped (its
    /// pid may belong to another process by then).
    pub(crate) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Watched before the signal, so its end cannot be missed.
        let exit = crate::watch::ExitWatch::new(self.pid());
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.reap(&exit, STOP_TIMEOUT);
    }

    /// Waits up to `limit` for the process to end, then kills it; reaps it.
    fn reap(&mut self, exit: &crate::watch::ExitWatch, limit: Duration) {
        if exit.wait(limit, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.wait();
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// [`stop`](Sidecar::stop), returning as soon as the bundle said `stopped` (its shutdown
    /// done, see the module doc) rather than when its process is gone: the process is then
    /// reaped on a thread of its own, given the rest of the 5 s and killed after them, and
    /// `then` runs on that thread once it has been reaped. A bundle that does not say
    /// `stopped` is stopped as by `stop` (and `then` runs before this returns).
    pub(crate) fn stop_after_shutdown(mut self, then: impl FnOnce() + Send + 'static) {
        if let Ok(Some(_)) = self.child.try_wait() {
            then();
            return;
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        let exit = crate::watch::ExitWatch::new(self.pid());
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let said = self.said.recv_timeout(STOP_TIMEOUT);
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if said == Ok(true) && !matches!(self.child.try_wait(), Ok(Some(_))) {
            // The thread gets the bundle once it exists; without one it is reaped here.
            let (hand, handed) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
            if std::thread::Builder::new()
                .name("bundle-reaper".into())
                .spawn(move || {
                    if let Ok(finish) = handed.recv() {
                        finish();
                    }
                })
                .is_ok()
            {
                let _ = hand.send(Box::new(move || {
                    self.reap(&exit, left);
                    then();
                }));
                return;
            }
        }
        self.reap(&exit, left);
        then();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::exited_now;
    use nix::unistd::Pid;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    /// A stand-in for `bot-bottle sidecar`: ready at once; on SIGTERM runs `on_term` (shell).
    fn fake_bundle(dir: &Path, on_term: &str) -> (BottlePaths, Options) {
        let exe = dir.join("fake-bundle");
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh\ntrap '{on_term}' TERM\necho ready\nsleep 60 >/dev/null &\nwait $!\nexit 9\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = state::Home::new(dir.join("home"));
        let paths = home.bottle("demo-1a2b3");
        std::fs::create_dir_all(paths.logs()).unwrap();
        let options = Options {
            exe,
            interactive: false,
            env: crate::HostEnv::map([("PATH", "/usr/bin:/bin")]),
            report: Arc::new(crate::Recorded::default()),
            #[cfg(feature = "kubernetes")]
            cluster: None,
        };
        (paths, options)
    }

    fn started(paths: &BottlePaths, options: &Options) -> Sidecar {
        Sidecar::spawn(paths, &[], options)
            .unwrap()
            .ready()
            .unwrap()
    }

    /// Whether `pid` is a child of this process not yet reaped (running or exited).
    fn unreaped(pid: Pid) -> bool {
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(pid),
            nix::sys::wait::WaitPidFlag::WEXITED
                | nix::sys::wait::WaitPidFlag::WNOWAIT
                | nix::sys::wait::WaitPidFlag::WNOHANG,
        )
        .is_ok()
    }

    #[test]
    fn a_bundle_that_said_stopped_is_not_waited_for_then_reaped_beside() {
        let dir = tempfile::tempdir().unwrap();
        // Says `stopped`, then does not end before the test lets it (as the kernel's end of a
        // real bundle, which can take longer than its shutdown).
        let go = dir.path().join("go");
        let (paths, options) = fake_bundle(
            dir.path(),
            &format!(
                "echo stopped; while [ ! -e {} ]; do sleep 0.05; done; exit 0",
                go.display()
            ),
        );
        let sidecar = started(&paths, &options);
        let pid = sidecar.pid();
        let (done_tx, done) = mpsc::channel();
        sidecar.stop_after_shutdown(move || {
            let _ = done_tx.send(());
        });
        // Returned at `stopped`, while the process still runs...
        assert_eq!(
            exited_now(pid),
            None,
            "the bundle ended before `stopped` returned"
        );
        assert!(
            done.try_recv().is_err(),
            "`then` ran before the bundle was reaped"
        );
        // ...which is then reaped on its own thread once it ends, `then` after it.
        std::fs::write(&go, "").unwrap();
        done.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(!unreaped(pid), "the bundle was not reaped");
    }

    #[test]
    fn a_bundle_that_ends_without_saying_stopped_is_waited_for_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, options) = fake_bundle(dir.path(), "sleep 1; exit 0");
        let sidecar = started(&paths, &options);
        let pid = sidecar.pid();
        let (done_tx, done) = mpsc::channel();
        sidecar.stop_after_shutdown(move || {
            let _ = done_tx.send(());
        });
        assert!(!unreaped(pid), "returned before the bundle was reaped");
        assert!(
            done.try_recv().is_ok(),
            "`then` did not run before the return"
        );
    }

    #[test]
    fn a_bundle_that_ignores_sigterm_is_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores SIGTERM, says nothing: killed after the 5 s.
        let (paths, options) = fake_bundle(dir.path(), "");
        let sidecar = started(&paths, &options);
        let pid = sidecar.pid();
        sidecar.stop_after_shutdown(|| {});
        assert!(!unreaped(pid), "returned before the bundle was reaped");
    }
}
