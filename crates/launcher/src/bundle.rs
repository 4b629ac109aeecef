//! The sidecar bundle as a child process of the launcher (native backend): `bot-bottle
//! sidecar --config FILE` with a minimal environment plus the tokens its routes name, ready
//! once it prints `ready`.

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
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let ready = matches!(lines.next(), Some(Ok(l)) if l.trim() == "ready");
            let _ = tx.send(ready);
            // Keep draining so the bundle never blocks on a full pipe.
            for _ in lines {}
        });
        Ok(Starting {
            sidecar: Some(Sidecar { child }),
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
        if exit.wait(STOP_TIMEOUT, || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.wait();
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
