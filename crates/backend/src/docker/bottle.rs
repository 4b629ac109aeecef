//! A running docker bottle: the agent container attached to the caller's stdio (raw terminal
//! and window size when interactive), watched until it ends, then torn down.
//!
//! Generic over the [`Engine`] so that what `wait`, `terminate`, `kill` and the teardown on drop
//! ask of the daemon is unit-tested against the recording fake.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

use super::client::{Engine, is_not_found, setup};
use super::lifecycle::{exit_code, stop_sidecar, teardown, watch_sidecar};
use super::spec::Names;
use super::{SidecarDown, TranscriptCopy, reaper};
use crate::inbottle::docker_init as init;
use crate::spec::{BottleStdio, StdioMode};
use crate::{BackendError, BottleExit, RunningBottle};

/// Restores the terminal mode on drop.
pub(crate) struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    pub(crate) fn enable() -> Option<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// The caller's terminal size (rows, columns), when stdout is one.
pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid pointer we pass.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// A running docker bottle.
pub struct DockerBottle<E: Engine = Docker> {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) docker: E,
    pub(crate) identity: String,
    pub(crate) names: Names,
    pub(crate) agent_id: String,
    /// Whether this process launched it (and tears it down).
    pub(crate) owned: bool,
    pub(crate) done: bool,
    pub(crate) stdin: Option<Box<dyn Write + Send>>,
    pub(crate) stdout: Option<Box<dyn Read + Send>>,
    pub(crate) stderr: Option<Box<dyn Read + Send>>,
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
    pub(crate) terminal: Option<RawTerminal>,
    pub(crate) resize: Option<tokio::task::JoinHandle<()>>,
    pub(crate) transcript: Option<TranscriptCopy>,
    /// Removes the bottle if this process dies first; dismissed after teardown.
    pub(crate) reaper: Option<reaper::Reaper>,
    pub(crate) sidecar_down: Option<SidecarDown>,
    pub(crate) stop_grace: Duration,
    /// The home's trash and the daemon's socket: where the ended bottle's objects are
    /// recorded for the detached remover ([`super::DockerConfig::trash`]).
    pub(crate) trash: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

enum Sink {
    Inherit(bool),
    Null,
    Pipe(std::io::PipeWriter),
}

impl Sink {
    fn write(&mut self, data: &[u8]) {
        let _ = match self {
            Sink::Inherit(false) => std::io::stdout()
                .write_all(data)
                .and_then(|_| std::io::stdout().flush()),
            Sink::Inherit(true) => std::io::stderr().write_all(data),
            Sink::Null => Ok(()),
            Sink::Pipe(pipe) => pipe.write_all(data),
        };
    }
}

impl<E: Engine> DockerBottle<E> {
    /// Wires the attach streams to the requested stdio.
    pub(crate) fn connect(
        &mut self,
        attach: bollard::container::AttachContainerResults,
        stdio: BottleStdio,
        interactive: bool,
    ) -> Result<(), BackendError> {
        let pipe = |action: &'static str| move |source| BackendError::Process { action, source };
        let mut out = match stdio.stdout {
            StdioMode::Inherit => Sink::Inherit(false),
            StdioMode::Null => Sink::Null,
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(pipe("create the stdout pipe"))?;
                self.stdout = Some(Box::new(r));
                Sink::Pipe(w)
            }
        };
        let mut err = match stdio.stderr {
            StdioMode::Inherit => Sink::Inherit(true),
            StdioMode::Null => Sink::Null,
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(pipe("create the stderr pipe"))?;
                self.stderr = Some(Box::new(r));
                Sink::Pipe(w)
            }
        };
        let bollard::container::AttachContainerResults {
            mut output,
            mut input,
        } = attach;
        let handle = self.rt.handle().clone();
        self.threads.push(std::thread::spawn(move || {
            handle.block_on(async {
                while let Some(Ok(chunk)) = output.next().await {
                    match chunk {
                        bollard::container::LogOutput::StdErr { message } => err.write(&message),
                        other => out.write(other.as_ref()),
                    }
                }
            });
        }));
        let source: Option<Box<dyn Read + Send>> = match stdio.stdin {
            StdioMode::Null => None,
            StdioMode::Inherit => Some(Box::new(std::io::stdin())),
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(pipe("create the stdin pipe"))?;
                self.stdin = Some(Box::new(w));
                Some(Box::new(r))
            }
        };
        if let Some(mut source) = source {
            let handle = self.rt.handle().clone();
            // Not joined: reading the caller's terminal may block past the bottle's end.
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match source.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if handle.block_on(input.write_all(&buf[..n])).is_err() {
                                return;
                            }
                            let _ = handle.block_on(input.flush());
                        }
                    }
                }
                let _ = handle.block_on(input.shutdown());
            });
        }
        if interactive {
            self.terminal = RawTerminal::enable();
            // The first size is set before the agent is released, so it starts with it.
            if let Some((h, w)) = terminal_size() {
                let _ = self
                    .rt
                    .block_on(self.docker.resize_tty(&self.agent_id, h, w));
            }
            let docker = self.docker.clone();
            let agent = self.agent_id.clone();
            self.resize = Some(self.rt.spawn(async move {
                let Ok(mut winch) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while winch.recv().await.is_some() {
                    if let Some((h, w)) = terminal_size() {
                        let _ = docker.resize_tty(&agent, h, w).await;
                    }
                }
            }));
        }
        Ok(())
    }

    fn copy_transcript(&self) -> Result<(), BackendError> {
        let Some(copy) = &self.transcript else {
            return Ok(());
        };
        let docker = self.docker.clone();
        let path = copy.inside.display().to_string();
        let agent = self.agent_id.clone();
        let archive = self.rt.block_on(async move {
            let mut stream = docker.download(&agent, &path);
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(err) if is_not_found(&err) => return Ok(None),
                    Err(err) => return Err(err),
                }
            }
            Ok(Some(bytes))
        });
        let archive = archive.map_err(setup("copy the transcript out of the bottle"))?;
        let Some(archive) = archive else {
            return Ok(());
        };
        std::fs::create_dir_all(&copy.host).map_err(|source| BackendError::Io {
            action: "create the transcript directory",
            path: copy.host.clone(),
            source,
        })?;
        tar::Archive::new(archive.as_slice())
            .unpack(&copy.host)
            .map_err(|source| BackendError::Io {
                action: "unpack the transcript into",
                path: copy.host.clone(),
                source,
            })
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(resize) = self.resize.take() {
            resize.abort();
        }
        self.terminal = None;
        if self.owned && !self.hand_to_trash() {
            self.rt.block_on(teardown(&self.docker, &self.names));
        }
        // Dismissed only now: a `start` killed before the bottle was removed or recorded
        // still has its reaper remove it.
        if let Some(reaper) = self.reaper.take() {
            reaper.dismiss();
        }
    }

    /// What must happen before the caller goes on, done here: the sidecar stopped (its last
    /// log and queue writes made, nothing leaves the bottle any more). The removal of the
    /// containers and networks is then recorded in the trash, for its detached remover
    /// ([`super::remove_recorded`]). `false`: not recorded (no trash configured, the sidecar
    /// did not stop, or the record could not be written); the caller removes them itself.
    fn hand_to_trash(&self) -> bool {
        let Some((trash, socket)) = &self.trash else {
            return false;
        };
        if self
            .rt
            .block_on(stop_sidecar(&self.docker, &self.names))
            .is_err()
        {
            return false;
        }
        let record = super::reaper::Record {
            identity: self.identity.clone(),
            socket: socket.clone(),
        };
        let Ok(contents) = serde_json::to_vec(&record) else {
            return false;
        };
        state::trash::record_in_trash(trash, &self.identity, super::TRASH_RECORD_KIND, &contents)
            .is_ok()
    }
}

impl<E: Engine> RunningBottle for DockerBottle<E> {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.stdin.take()
    }

    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stdout.take()
    }

    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stderr.take()
    }

    fn wait(&mut self) -> Result<BottleExit, BackendError> {
        let code = if self.owned {
            self.rt.block_on(watch_sidecar(
                &self.docker,
                &self.agent_id,
                &self.names.sidecar,
                self.sidecar_down.as_ref(),
                self.stop_grace,
            ))
        } else {
            self.rt.block_on(exit_code(&self.docker, &self.agent_id))
        }
        .map_err(setup("wait for the agent"));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let copied = if code.is_ok() {
            self.copy_transcript()
        } else {
            Ok(())
        };
        self.finish();
        let code = code?;
        copied?;
        Ok(BottleExit {
            code: i32::try_from(code).unwrap_or(init::SETUP_FAILED),
        })
    }

    fn terminate(&mut self) -> Result<(), BackendError> {
        self.rt
            .block_on(self.docker.kill_container(&self.agent_id, "SIGTERM"))
            .map_err(setup("signal the agent"))
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        self.rt
            .block_on(self.docker.kill_container(&self.agent_id, "SIGKILL"))
            .map_err(setup("kill the agent"))
    }
}

impl<E: Engine> Drop for DockerBottle<E> {
    fn drop(&mut self) {
        if !self.done && self.owned {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::docker::fake::RecordingEngine;

    const ID: &str = "claude-1a2b3";

    fn bottle(engine: &RecordingEngine, owned: bool) -> DockerBottle<RecordingEngine> {
        let names = Names::new(ID);
        DockerBottle {
            rt: Arc::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
            docker: engine.clone(),
            identity: ID.to_owned(),
            agent_id: names.agent.clone(),
            names,
            owned,
            done: false,
            stdin: None,
            stdout: None,
            stderr: None,
            threads: Vec::new(),
            terminal: None,
            resize: None,
            transcript: Some(TranscriptCopy {
                inside: "/home/agent/.claude/projects".into(),
                host: std::env::temp_dir().join("bb-unused-transcript"),
            }),
            reaper: None,
            sidecar_down: None,
            stop_grace: Duration::from_secs(3),
            trash: None,
        }
    }

    fn lines(calls: &[&str]) -> Vec<String> {
        calls.iter().map(|c| c.replace("ID", ID)).collect()
    }

    #[test]
    fn wait_removes_the_bottle_even_when_the_transcript_copy_fails() {
        let engine = RecordingEngine::new();
        engine.with(|s| {
            s.exits.insert(format!("bot-bottle-{ID}"), 3);
            // The daemon fails the copy (a 500, not "not found", which would mean no transcript).
            s.fail.insert(
                format!("download bot-bottle-{ID} /home/agent/.claude/projects"),
                "missing".into(),
            );
        });
        let exit = bottle(&engine, true).wait();
        // A failed copy (other than "not found") fails the wait, after the teardown.
        assert_eq!(
            exit.unwrap_err().to_string(),
            "could not set up the bottle (copy the transcript out of the bottle): missing"
        );
        let calls = engine.calls();
        assert_eq!(
            calls[calls.len() - 6..].to_vec(),
            lines(&[
                "remove_container bot-bottle-firewall-ID",
                "remove_container bot-bottle-ID",
                "stop_container bot-bottle-sidecar-ID t=10",
                "remove_container bot-bottle-sidecar-ID",
                "remove_network bot-bottle-net-ID",
                "remove_network bot-bottle-egress-ID",
            ])
        );
    }

    #[test]
    fn with_a_trash_the_sidecar_is_stopped_and_the_removal_recorded_for_later() {
        let engine = RecordingEngine::new();
        engine.with(|s| {
            s.exits.insert(format!("bot-bottle-{ID}"), 0);
        });
        let trash = tempfile::tempdir().unwrap();
        let mut running = bottle(&engine, true);
        running.transcript = None;
        running.trash = Some((trash.path().to_owned(), "/run/docker.sock".into()));
        assert_eq!(running.wait().unwrap(), BottleExit { code: 0 });
        drop(running);
        // The agent's exit, the sidecar's SIGTERM; no removal while the caller waits.
        let calls = engine.calls();
        assert_eq!(
            calls[calls.len() - 1..].to_vec(),
            lines(&["stop_container bot-bottle-sidecar-ID t=10"])
        );
        assert!(!calls.iter().any(|c| c.starts_with("remove_")), "{calls:?}");
        // What the trash's remover removes, recorded under the bottle's identity.
        let records: Vec<_> = std::fs::read_dir(trash.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(records.len(), 1, "{records:?}");
        let name = records[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(&format!("{ID}.docker.")), "{name}");
        assert!(name.ends_with(".record"), "{name}");
        let record: reaper::Record =
            serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
        assert_eq!(record.identity, ID);
        assert_eq!(record.socket, std::path::Path::new("/run/docker.sock"));
    }

    #[test]
    fn with_a_trash_a_sidecar_that_does_not_stop_is_removed_before_wait_returns() {
        let engine = RecordingEngine::new();
        engine.with(|s| {
            s.exits.insert(format!("bot-bottle-{ID}"), 0);
            s.fail.insert(
                format!("stop_container bot-bottle-sidecar-{ID} t=10"),
                "stuck".into(),
            );
        });
        let trash = tempfile::tempdir().unwrap();
        let mut running = bottle(&engine, true);
        running.transcript = None;
        running.trash = Some((trash.path().to_owned(), "/run/docker.sock".into()));
        running.wait().unwrap();
        let calls = engine.calls();
        assert!(
            calls.contains(&format!("remove_network bot-bottle-egress-{ID}")),
            "{calls:?}"
        );
        assert_eq!(std::fs::read_dir(trash.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_attached_bottle_is_neither_watched_nor_torn_down_by_its_terminal() {
        let engine = RecordingEngine::new();
        engine.with(|s| {
            s.exits.insert(format!("bot-bottle-{ID}"), 0);
        });
        let mut attached = bottle(&engine, false);
        attached.transcript = None;
        assert_eq!(attached.wait().unwrap(), BottleExit { code: 0 });
        drop(attached);
        assert_eq!(engine.calls(), lines(&["wait_exit bot-bottle-ID"]));
    }

    #[test]
    fn terminate_and_kill_signal_the_agent_container() {
        let engine = RecordingEngine::new();
        let mut running = bottle(&engine, false);
        running.terminate().unwrap();
        running.kill().unwrap();
        assert_eq!(
            engine.calls(),
            lines(&[
                "kill_container bot-bottle-ID SIGTERM",
                "kill_container bot-bottle-ID SIGKILL",
            ])
        );
    }
}
