//! Inside a smolmachines bottle: the init `smolvm machine exec` runs (as root in the machine)
//! before the agent.
//!
//! The machine has no network device (see [`crate::smolvm::plan`]); each sidecar endpoint
//! arrives as a Unix socket smolvm bridges in from the host over vsock. This init binds the
//! read-only files onto their places (virtiofs shares directories only, so each file comes in
//! its own read-only directory), listens on `127.0.0.1:<port>` (and `[::1]`) for each sidecar
//! and relays to its socket, then runs the agent confined as the qemu guest's agent is (uid 1000,
//! no capabilities, `RLIMIT_NPROC`, `no_new_privs`, native's seccomp deny list) with exactly the
//! spec's environment, in the workspace; its exit code is the agent's (`128 + n` for a signal).
//! It stays root only to keep the relays; it holds nothing the agent could not have.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The hidden subcommand (`bot-bottle __smolvm-init <guest spec JSON>`).
pub const INIT_SUBCOMMAND: &str = "__smolvm-init";
/// Exit code when the bottle could not be set up (nothing of the agent ran).
pub const SETUP_FAILED: i32 = 125;

/// What the init is told, as its last argument. Nothing in it is secret (the agent's
/// environment holds placeholders only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The process limit of the agent's uid (`RLIMIT_NPROC`).
    pub pids: u32,
    /// Loopback port → the bridged sidecar socket in the guest.
    pub forwards: Vec<GuestForward>,
    /// Read-only files: `source` (in a read-only mount) bound onto `inside`.
    pub files: Vec<GuestFile>,
    /// Whether the agent has the exec's terminal.
    pub interactive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestForward {
    pub port: u16,
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestFile {
    pub source: PathBuf,
    pub inside: PathBuf,
}

/// Dispatches the hidden subcommand; returns when `arg` is not it.
pub fn dispatch(arg: Option<&std::ffi::OsStr>) {
    if arg == Some(std::ffi::OsStr::new(INIT_SUBCOMMAND)) {
        init_main();
    }
}

/// Entry point: reads the [`GuestSpec`] from the last argument and never returns.
pub fn init_main() -> ! {
    let code = match std::env::args()
        .next_back()
        .map(|arg| serde_json::from_str::<GuestSpec>(&arg))
    {
        Some(Ok(spec)) => run(&spec),
        Some(Err(err)) => fail(&format!("bad guest spec: {err}")),
        None => fail("missing guest spec"),
    };
    std::process::exit(code)
}

fn fail(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "bot-bottle: {message}");
    SETUP_FAILED
}

fn run(spec: &GuestSpec) -> i32 {
    if !nix::unistd::geteuid().is_root() {
        return fail(
            "the smolmachines init must start as root in the machine (the image must not set USER); nothing ran",
        );
    }
    for file in &spec.files {
        if let Err(message) = bind_read_only(&file.source, &file.inside) {
            return fail(&message);
        }
    }
    for forward in &spec.forwards {
        if let Err(message) = super::relay::listen_loopback_unix(forward.port, &forward.socket) {
            return fail(&message);
        }
    }
    let Some((program, args)) = spec.argv.split_first() else {
        return fail("empty command");
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd);
    if let Err(message) = super::agent_exec::confine(
        &mut command,
        spec.uid,
        spec.gid,
        spec.pids,
        spec.interactive,
    ) {
        return fail(&message);
    }
    let status = match command.status() {
        Ok(status) => status,
        Err(err) => return fail(&format!("cannot run {program}: {err}")),
    };
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => SETUP_FAILED,
    }
}

/// Binds `source` onto `inside` (creating the mount point and its parents) and makes it
/// read-only.
fn bind_read_only(source: &Path, inside: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let is_dir = source.is_dir();
    if let Some(parent) = inside.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if !inside.exists() {
        let made = if is_dir {
            std::fs::create_dir(inside)
        } else {
            std::fs::File::create(inside).map(drop)
        };
        made.map_err(|e| format!("cannot create {}: {e}", inside.display()))?;
    }
    mount(
        Some(source),
        inside,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot bind {} on {}: {e}",
            source.display(),
            inside.display()
        )
    })?;
    mount(
        None::<&str>,
        inside,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make {} read-only: {e}", inside.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_spec_refuses_unknown_fields() {
        let spec = GuestSpec {
            argv: vec!["true".into()],
            env: BTreeMap::new(),
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            pids: 64,
            forwards: vec![GuestForward {
                port: 3128,
                socket: "/run/bot-bottle/sidecars/3128.sock".into(),
            }],
            files: vec![],
            interactive: false,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<GuestSpec>(&json).unwrap(), spec);
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["privileged"] = serde_json::json!(true);
        assert!(serde_json::from_value::<GuestSpec>(value).is_err());
    }
}
