//! Where a bottle's files live inside `state/<identity>/` ([`Home::bottle`]).
//!
//! Everything here is outside the bottle's reach: the agent sees only its home, its
//! workspace and the read-only files `start` places (the CA certificate and bundle).
//!
//! [`Home::bottle`]: crate::Home::bottle

use std::path::PathBuf;

/// The longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Paths inside one bottle's state directory.
#[derive(Debug, Clone)]
pub struct BottlePaths {
    root: PathBuf,
}

impl BottlePaths {
    /// The layout under `state/<identity>/`.
    pub fn new(state_dir: PathBuf) -> Self {
        Self { root: state_dir }
    }

    /// The bottle CA (`ca.pem`, `ca-key.pem`): only the sidecar reads the key.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// Live configuration changed by supervise: `routes.yaml`.
    pub fn live_config(&self) -> PathBuf {
        self.root.join("live-config")
    }

    /// The live routes the egress proxy loads.
    pub fn routes_file(&self) -> PathBuf {
        self.live_config().join("routes.yaml")
    }

    /// The allowed findings supervise records for a bottle without a git gate of its own
    /// (the bundle's git gate keeps them in its state directory).
    pub fn allowed_findings(&self) -> PathBuf {
        self.live_config().join("allowed-findings")
    }

    /// The name [`BottlePaths::allowed_findings`] had before it was renamed: read once (and
    /// moved) when a bottle from before the rename is resumed.
    pub fn allowed_findings_before_rename(&self) -> PathBuf {
        self.live_config().join("allowlist")
    }

    /// The bottle's `git-gate:` block, as the gate reads it.
    pub fn gate_config(&self) -> PathBuf {
        self.root.join("git-gate.yaml")
    }

    /// The git gate's mirrors, keys and allowed findings.
    pub fn gate_dir(&self) -> PathBuf {
        self.root.join("git-gate")
    }

    /// The sidecars' Unix sockets, which the backend forwards into the bottle.
    pub fn sockets(&self) -> PathBuf {
        self.root.join("sockets")
    }

    /// The agent's home directory on the host side.
    pub fn agent_home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// Read-only files placed into the bottle (CA certificate, CA bundle).
    pub fn files(&self) -> PathBuf {
        self.root.join("files")
    }

    /// The copy of the working directory for `--copy-cwd`.
    pub fn workspace_copy(&self) -> PathBuf {
        self.root.join("workspace")
    }

    /// Logs: the egress request log, the sidecar's own log.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The sidecar bundle's own log (its stderr), where a crash says why.
    pub fn sidecar_log(&self) -> PathBuf {
        self.logs().join("sidecar.log")
    }

    /// The egress request log (JSON lines).
    pub fn egress_log(&self) -> PathBuf {
        self.logs().join("egress.jsonl")
    }

    /// A per-bottle replacement of the agent image's Dockerfile (docker backend).
    pub fn dockerfile_override(&self) -> PathBuf {
        self.root.join("Dockerfile")
    }

    /// Present while the agent runs: written by `start` once the backend launched it, so
    /// `stop` knows a signal will reach the agent and not a bottle still being set up.
    pub fn agent_started(&self) -> PathBuf {
        self.root.join("agent-started")
    }

    /// Written by `bot-bottle stop` before it signals the agent: the end that follows was
    /// asked for, not a failure. Holds `keep` when the operator asked to keep the state.
    pub fn stop_requested(&self) -> PathBuf {
        self.root.join("stop-requested")
    }

    /// The sidecar bundle's config file.
    pub fn sidecar_config(&self) -> PathBuf {
        self.root.join("sidecar.json")
    }

    /// A sidecar socket path, checked against the kernel's length limit.
    pub fn socket(&self, name: &str) -> Result<PathBuf, SocketPathTooLong> {
        let path = self.sockets().join(format!("{name}.sock"));
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SocketPathTooLong {
                path,
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        Ok(path)
    }
}

/// A sidecar socket path the kernel would refuse.
#[derive(Debug, thiserror::Error)]
#[error(
    "the socket path {} is {len} bytes, longer than the {max} a Unix socket allows; set BOT_BOTTLE_HOME to a shorter directory",
    path.display()
)]
pub struct SocketPathTooLong {
    /// The socket path.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: usize,
    /// The most the kernel accepts.
    pub max: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn socket_paths_longer_than_the_kernel_allows_are_refused_with_a_fix() {
        let short = BottlePaths::new("/home/u/.bot-bottle/state/demo-3fa9c".into());
        assert_eq!(
            short.socket("egress").unwrap(),
            Path::new("/home/u/.bot-bottle/state/demo-3fa9c/sockets/egress.sock")
        );
        let long = BottlePaths::new(PathBuf::from("/").join("x".repeat(100)));
        let err = long.socket("supervise").unwrap_err().to_string();
        assert!(
            err.ends_with("set BOT_BOTTLE_HOME to a shorter directory"),
            "{err}"
        );
    }
}
