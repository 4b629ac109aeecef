//! The agent container's streams wired to `start`'s own: the caller's terminal (raw mode and
//! window size when interactive), pipes for tests and scripts, or nothing.
//!
//! The agent's command waits for [`objects::START_LINE`] before it runs (see there), so this
//! sends it only once every output is being read: nothing the agent writes is lost to the
//! race between the container starting and the API server's attach connecting.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::cluster::Attached;
use super::objects;
use crate::BackendError;
use crate::docker::bottle::{RawTerminal, terminal_size};
use crate::spec::{BottleStdio, StdioMode};

/// Where one output of the agent goes.
enum Sink {
    Stdout,
    Stderr,
    Null,
    Pipe(std::io::PipeWriter),
}

impl Sink {
    fn new(
        mode: StdioMode,
        stderr: bool,
        taken: &mut Option<Box<dyn Read + Send>>,
    ) -> Result<Sink, BackendError> {
        Ok(match mode {
            StdioMode::Inherit if stderr => Sink::Stderr,
            StdioMode::Inherit => Sink::Stdout,
            StdioMode::Null => Sink::Null,
            StdioMode::Piped => {
                let (r, w) = std::io::pipe().map_err(|source| BackendError::Process {
                    action: "create a pipe for the agent's output",
                    source,
                })?;
                *taken = Some(Box::new(r));
                Sink::Pipe(w)
            }
        })
    }

    /// Writes `data`; `false` once nobody reads any more.
    fn write(&mut self, data: &[u8]) -> bool {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout();
                out.write_all(data).and_then(|()| out.flush()).is_ok()
            }
            Sink::Stderr => std::io::stderr().write_all(data).is_ok(),
            Sink::Null => true,
            Sink::Pipe(pipe) => pipe.write_all(data).is_ok(),
        }
    }
}

/// The caller's side of an attached agent.
#[derive(Default)]
pub(super) struct Wired {
    pub stdin: Option<Box<dyn Write + Send>>,
    pub stdout: Option<Box<dyn Read + Send>>,
    pub stderr: Option<Box<dyn Read + Send>>,
    /// One message per output pump when it has drained its stream.
    pub drained: Option<mpsc::Receiver<()>>,
    pub pumps: usize,
    pub terminal: Option<RawTerminal>,
    pub resize: Option<tokio::task::JoinHandle<()>>,
}

impl Wired {
    /// Waits until the outputs are drained (the API server closes them when the agent
    /// ends), at most `limit`: a connection that stays open does not hold `start` up.
    pub fn drain(&mut self, limit: Duration) {
        if let Some(drained) = self.drained.take() {
            let deadline = std::time::Instant::now() + limit;
            for _ in 0..self.pumps {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if drained.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
        if let Some(resize) = self.resize.take() {
            resize.abort();
        }
        // Restores the caller's terminal.
        self.terminal = None;
    }
}

/// Wires `attached` to `stdio`, then releases the agent (the start line).
pub(super) fn wire(
    runtime: &Runtime,
    attached: Attached,
    stdio: BottleStdio,
    interactive: bool,
) -> Result<Wired, BackendError> {
    let mut wired = Wired::default();
    let Attached {
        mut stdin,
        stdout,
        stderr,
        resize,
    } = attached;
    let (done, drained) = mpsc::channel();
    let pump = |mut from: Box<dyn tokio::io::AsyncRead + Unpin + Send>, mut to: Sink| {
        let done = done.clone();
        runtime.spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // A blocking write to the caller's stream, off the runtime's worker.
                        let chunk = buf[..n].to_vec();
                        let (sink, ok) = match tokio::task::spawn_blocking(move || {
                            let ok = to.write(&chunk);
                            (to, ok)
                        })
                        .await
                        {
                            Ok(pair) => pair,
                            Err(_) => break,
                        };
                        to = sink;
                        if !ok {
                            break;
                        }
                    }
                }
            }
            let _ = done.send(());
        });
    };
    let out = Sink::new(stdio.stdout, false, &mut wired.stdout)?;
    pump(stdout, out);
    wired.pumps = 1;
    if let Some(stderr) = stderr {
        let err = Sink::new(stdio.stderr, true, &mut wired.stderr)?;
        pump(stderr, err);
        wired.pumps = 2;
    }
    wired.drained = Some(drained);

    // The caller's terminal, when it is the agent's: raw mode and its size.
    if interactive && stdio.stdin == StdioMode::Inherit {
        wired.terminal = RawTerminal::enable();
        if let Some(resize) = resize {
            // The first size before the agent is released, so it starts with it.
            if let Some(size) = terminal_size() {
                let _ = resize.try_send(size);
            }
            wired.resize = Some(runtime.spawn(async move {
                let Ok(mut winch) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while winch.recv().await.is_some() {
                    if let Some(size) = terminal_size()
                        && resize.send(size).await.is_err()
                    {
                        return;
                    }
                }
            }));
        }
    }

    runtime
        .block_on(async {
            stdin.write_all(objects::START_LINE).await?;
            stdin.flush().await
        })
        .map_err(|source| BackendError::Process {
            action: "release the agent (its start line)",
            source,
        })?;

    let source: Option<Box<dyn Read + Send>> = match stdio.stdin {
        StdioMode::Null => None,
        StdioMode::Inherit => Some(Box::new(std::io::stdin())),
        StdioMode::Piped => {
            let (r, w) = std::io::pipe().map_err(|source| BackendError::Process {
                action: "create a pipe for the agent's input",
                source,
            })?;
            wired.stdin = Some(Box::new(w));
            Some(Box::new(r))
        }
    };
    match source {
        // No input: the agent's stdin is closed now (`stdinOnce`).
        None => {
            let _ = runtime.block_on(stdin.shutdown());
        }
        Some(mut source) => {
            let handle = runtime.handle().clone();
            // Not joined: reading the caller's terminal may block past the bottle's end.
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match source.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let sent = handle.block_on(async {
                                stdin.write_all(&buf[..n]).await?;
                                stdin.flush().await
                            });
                            if sent.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = handle.block_on(stdin.shutdown());
            });
        }
    }
    Ok(wired)
}
