//! The watchdog that makes a docker bottle end with its launcher, as a native bottle does.
//!
//! Containers are children of dockerd, not of `bot-bottle start`: a launcher killed with
//! `SIGKILL` (or crashing) would leave the agent running with nobody to tear it down. So
//! before it creates anything, the launcher starts this reaper — the same executable with
//! [`REAPER_SUBCOMMAND`], in a session of its own so a Ctrl-C to the terminal's process
//! group does not reach it — and keeps the write end of a pipe to its standard input. A
//! launcher that tears its bottle down itself writes `done` and closes the pipe; if the pipe
//! closes without it, the launcher is gone and the reaper removes the bottle's objects by
//! name (the sidecar gets `SIGTERM` first so it revokes forge deploy keys). The reaper has
//! no other input and touches only objects named after its identity.

use std::io::Read;
use std::process::{Child, ChildStdin, Command, Stdio};

use super::spec::Names;
use crate::BackendError;
use crate::helper_command::HelperCommand;

/// The hidden subcommand `bot-bottle` dispatches to [`reaper_main`].
pub const REAPER_SUBCOMMAND: &str = "__docker-reaper";

/// What the launcher writes when it tore the bottle down itself.
const DONE: &[u8] = b"done\n";

/// A started reaper; [`Reaper::dismiss`] once the bottle is gone.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Reaper {
    /// Starts `command <identity> <socket>` with a pipe on its standard input.
    pub fn spawn(
        command: &HelperCommand,
        identity: &str,
        socket: &std::path::Path,
    ) -> Result<Reaper, BackendError> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&command.exe);
        cmd.args(&command.args)
            .arg(identity)
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid() is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|source| BackendError::Process {
            action: "start the docker bottle's reaper",
            source,
        })?;
        let pipe = child.stdin.take();
        Ok(Reaper { child, pipe })
    }

    /// The launcher removed the bottle itself: the reaper exits without doing anything.
    pub fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = std::io::Write::write_all(&mut pipe, DONE);
        }
        let _ = self.child.wait();
    }
}

/// Entry point of the reaper (`<exe> __docker-reaper <identity> <socket>`); never returns.
pub fn reaper_main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    let (Some(identity), Some(socket)) = (args.get(2), args.get(3)) else {
        std::process::exit(2);
    };
    let mut input = Vec::new();
    // Blocks until the launcher closes its end: by `dismiss`, or by dying.
    let _ = std::io::stdin().read_to_end(&mut input);
    if input.ends_with(DONE) {
        std::process::exit(0);
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        std::process::exit(1);
    };
    let Ok(docker) = bollard::Docker::connect_with_socket(socket, 60, bollard::API_DEFAULT_VERSION)
    else {
        std::process::exit(1);
    };
    rt.block_on(super::lifecycle::teardown(&docker, &Names::new(identity)));
    std::process::exit(0)
}
