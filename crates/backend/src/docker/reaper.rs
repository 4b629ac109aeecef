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
//!
//! A bottle that ended normally is removed by neither: once its sidecar stopped, `wait`
//! records it in the home's trash (`Record`, kind [`TRASH_RECORD_KIND`]) and the trash's
//! detached remover (`bot-bottle __empty-trash`) removes its objects with
//! [`remove_recorded`] after `start` returned. A remover that is killed leaves the record:
//! the next `start` hands it to a new remover and `cleanup` removes it itself. While the
//! record is there the identity is not given to a new bottle, and a `resume` of it empties
//! the trash first, so the names it holds are never those of a live bottle.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use serde::{Deserialize, Serialize};

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

/// The kind of the docker backend's records in the home's trash (`state::trash`).
pub const TRASH_RECORD_KIND: &str = "docker";

/// What a record in the trash says of an ended docker bottle: its objects are those named
/// after `identity` ([`Names`]) on the daemon at `socket`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) identity: String,
    pub(crate) socket: PathBuf,
}

/// The trash's remover of docker records: removes the containers and networks of the ended
/// bottle a record names (the sidecar stopped first if it still runs; objects already gone
/// are fine). The error names the objects, the cause and what to do.
pub fn remove_recorded(record: &Path) -> Result<(), String> {
    let text = state::read::read_limited_to_string(record, 64 * 1024)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let record: Record =
        serde_json::from_str(&text).map_err(|e| format!("it is not a docker record: {e}"))?;
    // Names are made from the identity: one no bottle could have names nothing of ours.
    let valid = !record.identity.is_empty()
        && record
            .identity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(format!(
            "its identity `{}` is not a bottle's; remove the record by hand",
            record.identity
        ));
    }
    let socket = record.socket.display().to_string();
    let retry = format!(
        "`bot-bottle cleanup` tries again (or remove the containers and networks named bot-bottle-*{} with `docker rm -f` and `docker network rm`)",
        record.identity
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the docker client: {e}; {retry}"))?;
    let docker = bollard::Docker::connect_with_socket(&socket, 60, bollard::API_DEFAULT_VERSION)
        .map_err(|e| {
            format!(
                "cannot use the docker daemon at {socket}: {}; {retry}",
                super::client::api_message(&e)
            )
        })?;
    rt.block_on(super::lifecycle::remove_objects(
        &docker,
        &Names::new(&record.identity),
    ))
    .map_err(|e| format!("{e} (daemon at {socket}); {retry}"))
}
