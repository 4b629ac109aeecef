//! Inside a smolmachines bottle: the init `smolvm machine exec` runs (as root in the machine)
//! before the agent.
//!
//! The machine has no network device (see [`crate::smolvm::plan`]); each sidecar endpoint
//! arrives as a Unix socket smolvm bridges in from the host over vsock. This init places the
//! read-only files (virtiofs shares directories only, so each file comes in its own read-only
//! directory) as root-owned copies the agent cannot change, listens on `127.0.0.1:<port>` (and `[::1]`) for each sidecar
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
    /// Read-only files: `source` (in a read-only mount) placed at `inside`, root-owned.
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
        if let Err(message) = place_read_only(&file.source, &file.inside) {
            return fail(&message);
        }
    }
    // One event loop on a thread of its own, started before the agent: relaying a connection
    // never needs another thread.
    let mut relays = super::relay::Relays::new();
    for forward in &spec.forwards {
        let target = super::relay::Target::Unix(forward.socket.clone());
        if let Err(message) = relays.listen_loopback(forward.port, target) {
            return fail(&message);
        }
    }
    if let Err(message) = relays.run_on_thread() {
        return fail(&message);
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
    // The guest is a Linux machine; a build for another OS has no confinement to give.
    #[cfg(target_os = "linux")]
    let confined = super::agent_exec::confine(
        &mut command,
        spec.uid,
        spec.gid,
        spec.pids,
        spec.interactive,
    );
    #[cfg(not(target_os = "linux"))]
    let confined: Result<(), String> = Err("the guest init runs only on Linux".to_owned());
    if let Err(message) = confined {
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

/// Places `source` (from its read-only mount) at `inside` as a root-owned copy the agent
/// cannot change (files 0444, directories 0555): no mount privilege is needed, so it works in
/// whatever container `smolvm machine exec` runs the image in.
fn place_read_only(source: &Path, inside: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err = |what: &str, path: &Path, e: std::io::Error| {
        format!("cannot {what} {}: {e}", path.display())
    };
    if let Some(parent) = inside.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err("create", parent, e))?;
    }
    let meta = std::fs::metadata(source).map_err(|e| err("read", source, e))?;
    if meta.is_dir() {
        std::fs::create_dir_all(inside).map_err(|e| err("create", inside, e))?;
        for entry in std::fs::read_dir(source).map_err(|e| err("read", source, e))? {
            let entry = entry.map_err(|e| err("read", source, e))?;
            place_read_only(&entry.path(), &inside.join(entry.file_name()))?;
        }
        std::fs::set_permissions(inside, std::fs::Permissions::from_mode(0o555))
            .map_err(|e| err("protect", inside, e))?;
    } else {
        // A file already there (the image's CA bundle) is replaced, not written through.
        let _ = std::fs::remove_file(inside);
        std::fs::copy(source, inside).map_err(|e| err("copy to", inside, e))?;
        std::fs::set_permissions(inside, std::fs::Permissions::from_mode(0o444))
            .map_err(|e| err("protect", inside, e))?;
    }
    std::os::unix::fs::chown(inside, Some(0), Some(0)).map_err(|e| err("hand to root", inside, e))
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

    #[test]
    fn read_only_files_become_root_owned_copies_the_agent_cannot_change() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipped: placing root-owned copies needs root (the guest init runs as root)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("mount/0");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("sub/skill.md"), "skill").unwrap();
        std::fs::write(dir.path().join("mount/bundle.pem"), "CA").unwrap();
        let target = dir.path().join("etc/ssl/certs/ca-certificates.crt");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "the image's own bundle").unwrap();
        place_read_only(&dir.path().join("mount/bundle.pem"), &target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "CA");
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o444));
        let skills = dir.path().join("home/agent/.claude/skills");
        place_read_only(&source, &skills).unwrap();
        assert_eq!(
            std::fs::read_to_string(skills.join("sub/skill.md")).unwrap(),
            "skill"
        );
        assert_eq!(
            std::fs::metadata(&skills).unwrap().permissions().mode() & 0o777,
            0o555
        );
    }
}
