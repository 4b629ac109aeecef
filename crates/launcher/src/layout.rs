//! Where a bottle's files live inside `state/<identity>/`, and the sidecar bundle's config.
//!
//! Everything here is outside the bottle's reach: the agent sees only its home, its
//! workspace and the read-only files `start` places (the CA certificate and bundle).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

    /// The bottle's `git-gate:` block, as the gate reads it.
    pub fn gate_config(&self) -> PathBuf {
        self.root.join("git-gate.yaml")
    }

    /// The gate's mirrors, keys and allowlist.
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
    pub fn socket(&self, name: &str) -> Result<PathBuf, crate::LaunchError> {
        let path = self.sockets().join(format!("{name}.sock"));
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(crate::LaunchError::SocketPathTooLong {
                path,
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        Ok(path)
    }
}

/// What `bot-bottle sidecar --config FILE` runs. Written by `start`, read by the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The bottle's identity.
    pub identity: String,
    /// `$BOT_BOTTLE_HOME` (queue and audit log for supervise).
    pub home: PathBuf,
    /// The egress proxy.
    pub egress: EgressSidecar,
    /// The git gate, when the bottle has repositories.
    #[serde(default)]
    pub gate: Option<GateSidecar>,
    /// The supervise MCP server, unless the bottle turned it off.
    #[serde(default)]
    pub supervise: Option<SuperviseSidecar>,
    /// Names of the host secrets handed to the bundle (never their values).
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// Where one sidecar of the bundle listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Listen {
    /// A Unix socket in the bottle's state directory (native: the backend forwards the
    /// bottle's loopback port to it).
    Unix(PathBuf),
    /// A TCP address (docker: the sidecar container listens on its internal network, which
    /// only the agent container shares).
    Tcp(SocketAddr),
}

impl Listen {
    /// The Unix socket path, for backends that forward to one.
    pub fn unix_socket(&self) -> Option<&PathBuf> {
        match self {
            Listen::Unix(path) => Some(path),
            Listen::Tcp(_) => None,
        }
    }
}

/// The egress part of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSidecar {
    /// Where to listen.
    pub listen: Listen,
    /// The live routes file.
    pub routes: PathBuf,
    /// The bottle CA directory.
    pub ca_dir: PathBuf,
    /// Extra roots for upstream TLS.
    #[serde(default)]
    pub upstream_ca: Vec<PathBuf>,
    /// The request log (JSON lines).
    pub log: PathBuf,
}

/// The git gate part of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSidecar {
    /// Where to listen.
    pub listen: Listen,
    /// The `git-gate:` block file.
    pub repos: PathBuf,
    /// Mirrors, keys, allowlist.
    pub state_dir: PathBuf,
}

/// The supervise part of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseSidecar {
    /// Where to listen.
    pub listen: Listen,
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
