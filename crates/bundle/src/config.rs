//! The bundle's config file (`sidecar.json`): what the launcher writes and the bundle reads.
//!
//! These types are the bundle's wiring — where each sidecar listens and which files of the
//! bottle's state directory it serves from — not the sidecars' own configuration (egress's
//! `ProxyConfig`, the git gate's `GateConfig`, supervise's `SuperviseConfig`), which the
//! bundle builds from them in [`crate::serve`]. Keeping the wiring in one file keeps the file
//! format in one place: the launcher (writer) and the bundle (reader) cannot drift apart, and
//! no sidecar crate needs to know the others exist.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::BundleError;

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
    /// The operator port ([`crate::operator`]): where the operator's machine reaches the
    /// queue and the audit log when it cannot read them (a pod on a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorSidecar>,
}

impl SidecarConfig {
    /// Reads and parses a bundle's config file (bounded, regular files only).
    pub fn load(path: &Path) -> Result<SidecarConfig, BundleError> {
        let text =
            state::read::read_limited(path, state::read::CONFIG_LIMIT).map_err(|source| {
                BundleError::ReadConfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        serde_json::from_slice(&text).map_err(|source| BundleError::InvalidConfig {
            path: path.to_path_buf(),
            source,
        })
    }
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

/// The operator port of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSidecar {
    /// Where to listen: never one of the sidecar ports the agent reaches.
    pub listen: Listen,
    /// The variable holding the operator token (its value is never in this file).
    pub token_env: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_config_round_trips_and_a_bad_one_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = SidecarConfig {
            identity: "demo-1a2b3".into(),
            home: "/h".into(),
            egress: EgressSidecar {
                listen: Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], 3128))),
                routes: "/h/state/demo-1a2b3/live-config/routes.yaml".into(),
                ca_dir: "/h/state/demo-1a2b3/ca".into(),
                upstream_ca: vec![],
                log: "/h/state/demo-1a2b3/logs/egress.jsonl".into(),
            },
            gate: Some(GateSidecar {
                listen: Listen::Unix("/h/state/demo-1a2b3/sockets/gate.sock".into()),
                repos: "/h/state/demo-1a2b3/git-gate.yaml".into(),
                state_dir: "/h/state/demo-1a2b3/git-gate".into(),
            }),
            supervise: None,
            tokens: vec!["API_TOKEN".into()],
            operator: None,
        };
        let path = dir.path().join("sidecar.json");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(SidecarConfig::load(&path).unwrap(), config);

        std::fs::write(&path, br#"{"identity": "x", "surprise": 1}"#).unwrap();
        let err = SidecarConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "the sidecar config {} is invalid: ",
                path.display()
            )),
            "{err}"
        );
    }
}
