//! What to run in a bottle: the backend-neutral launch specification.
//!
//! The caller (`bot-bottle start`) builds it from the manifest and the state directory. All host
//! paths must be absolute; all `inside` paths are absolute paths as the agent sees them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a backend needs to start one bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Bottle identity (`<agent>-<5 hex>`); also the bottle's hostname.
    pub identity: String,
    /// The agent's command line. A first element without `/` is looked up in `env["PATH"]`
    /// inside the bottle.
    pub argv: Vec<String>,
    /// The agent's environment, exactly: nothing of the launcher's environment is inherited.
    /// The caller sets `HOME`, `PATH`, `TERM`, the proxy variables, …
    pub env: BTreeMap<String, String>,
    /// The project directory, writable inside. The agent starts in `workspace.inside`.
    pub workspace: Workspace,
    /// The agent's home directory (prepared by the caller), writable inside.
    pub home: Home,
    /// Host files or directories placed read-only inside (CA bundle, gitconfig, …).
    pub files: Vec<ReadOnlyFile>,
    /// Sidecar endpoints reachable inside as `127.0.0.1:<inside_port>` (and `[::1]`).
    pub forwards: Vec<Forward>,
    /// Whether the agent gets the caller's terminal (stdin, stdout and stderr must then be a
    /// TTY, inherited): the agent becomes the terminal's foreground process group so Ctrl-C,
    /// Ctrl-\ and window resizes reach it, and the caller gets the terminal back when the
    /// bottle ends. Non-interactive agents run in a session of their own, with no terminal.
    pub interactive: bool,
    /// CPU, memory and process limits of the whole bottle (every backend enforces them, or
    /// refuses to start unless [`Resources::allow_unenforced`]).
    #[serde(default)]
    pub resources: Resources,
    /// `dangerously_run_as_host_root`: on native, started as root, the agent keeps host uid 0
    /// (the behaviour before bottles got an unprivileged host uid). Off by default.
    #[serde(default)]
    pub dangerously_run_as_host_root: bool,
}

/// Limits for one bottle, the same keys for every backend (`resources:` in the manifest):
/// cgroups on native, the engine's `HostConfig` on docker, the VM's size on VM backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU time, in thousandths of a CPU (`cpus: 1.5` is 1500).
    pub millicpus: u32,
    /// Memory in bytes (RAM; no swap on top).
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u32,
    /// `dangerously_allow_unenforced`: start even where the backend cannot enforce the
    /// limits (native without usable cgroups), with a warning.
    #[serde(default)]
    pub allow_unenforced: bool,
}

impl Resources {
    /// Default CPU limit: 2 CPUs.
    pub const DEFAULT_MILLICPUS: u32 = 2000;
    /// Default memory limit: 4 GiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 4 << 30;
    /// Default process limit: 1024.
    pub const DEFAULT_PIDS: u32 = 1024;
}

impl Resources {
    /// The size of a VM bottle (qemu, smolmachines, apple): whole CPUs rounded up (at least
    /// one) and the memory in MiB (at least 128).
    pub fn vm_size(&self) -> (u32, u64) {
        (
            self.millicpus.div_ceil(1000).max(1),
            (self.memory_bytes >> 20).max(128),
        )
    }
}

impl Default for Resources {
    /// What protects a laptop: 2 CPUs, 4 GiB, 1024 processes (see the README).
    fn default() -> Self {
        Resources {
            millicpus: Self::DEFAULT_MILLICPUS,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            pids: Self::DEFAULT_PIDS,
            allow_unenforced: false,
        }
    }
}

/// The project directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// The host directory (the user's working directory).
    pub host: PathBuf,
    /// Where the agent sees it (usually the same path as on the host).
    pub inside: PathBuf,
    /// Mounted writable, or a copy.
    pub mode: WorkspaceMode,
}

/// How the workspace reaches the bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    /// The host directory itself, writable.
    Mount,
    /// A copy of the host directory made by `prepare` into `into` (a host directory the caller
    /// keeps, e.g. in the bottle's state directory; reused as is when it already exists, so a
    /// resumed bottle keeps its changes). The copy is what the bottle sees, writable.
    Copy { into: PathBuf },
}

/// The agent's home directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Home {
    /// A host directory prepared by the caller (`.gitconfig`, `.claude.json`, …).
    pub host: PathBuf,
    /// Where the agent sees it; the caller sets `HOME` to this in `env`.
    pub inside: PathBuf,
}

/// A host file or directory placed read-only inside the bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOnlyFile {
    /// The host path.
    pub host: PathBuf,
    /// Where the agent sees it. Under the read-only system view (e.g.
    /// `/etc/ssl/certs/ca-certificates.crt`) it must replace an existing host file; anywhere
    /// else (e.g. `/run/bot-bottle/ca.pem`, the home directory) parent directories are created.
    pub inside: PathBuf,
}

/// A sidecar endpoint: inside the bottle, `127.0.0.1:<inside_port>` (and `[::1]:<inside_port>`)
/// accepts TCP connections and relays each one to a new connection to `host_unix_socket`.
/// The socket itself is never visible inside the bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The loopback port inside the bottle.
    pub inside_port: u16,
    /// The sidecar's listening Unix socket on the host.
    pub host_unix_socket: PathBuf,
}

/// What a bottle's standard stream is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioMode {
    /// The caller's own stream (the terminal for interactive bottles).
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe, taken with `take_stdin` / `take_stdout` / `take_stderr`.
    Piped,
}

/// The bottle's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BottleStdio {
    pub stdin: StdioMode,
    pub stdout: StdioMode,
    pub stderr: StdioMode,
}

impl BottleStdio {
    /// All three streams inherited (interactive bottles, or `start` passing its own through).
    pub fn inherit() -> Self {
        BottleStdio {
            stdin: StdioMode::Inherit,
            stdout: StdioMode::Inherit,
            stderr: StdioMode::Inherit,
        }
    }

    /// All three streams piped (tests, scripts).
    pub fn piped() -> Self {
        BottleStdio {
            stdin: StdioMode::Piped,
            stdout: StdioMode::Piped,
            stderr: StdioMode::Piped,
        }
    }
}
