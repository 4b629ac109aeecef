//! Resolved, validated bottles and agents: what the rest of bot-bottle works with.
//!
//! A [`ResolvedBottle`] has every `extends` folded in, every default filled in and every
//! value checked. It serializes to the manifest's own shape (`agent_provider`, `supervise`,
//! `env`, `git-gate`, `egress`), which is what `bot-bottle manifest show` prints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::raw::{GitUser, ProviderKind, RepoSpec};
use policy::raw::{LogMode, Route};

/// The agent program a bottle runs, with its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProvider {
    /// The provider's stock image and setup.
    Stock(ProviderKind),
    /// The provider's setup on an image built from `dockerfile`.
    Template {
        /// Which provider's agent command and configuration to use.
        template: ProviderKind,
        /// Absolute path of the Dockerfile.
        dockerfile: PathBuf,
    },
}

impl AgentProvider {
    /// The provider whose agent command and configuration are used.
    pub fn kind(&self) -> ProviderKind {
        match self {
            AgentProvider::Stock(kind) => *kind,
            AgentProvider::Template { template, .. } => *template,
        }
    }
}

impl Default for AgentProvider {
    fn default() -> Self {
        AgentProvider::Stock(ProviderKind::Claude)
    }
}

impl Serialize for AgentProvider {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AgentProvider::Stock(kind) => s.serialize_str(kind.as_str()),
            AgentProvider::Template {
                template,
                dockerfile,
            } => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("template", template.as_str())?;
                map.serialize_entry("dockerfile", &dockerfile.to_string_lossy())?;
                map.end()
            }
        }
    }
}

/// A bottle with `extends` folded in and defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedBottle {
    /// The bottle's name (not part of the serialized shape: it is the key).
    #[serde(skip)]
    pub name: String,
    /// The agent program; default `claude`.
    pub agent_provider: AgentProvider,
    /// Whether the supervise sidecar runs; default `true`.
    pub supervise: bool,
    /// Plain environment for the agent.
    pub env: BTreeMap<String, String>,
    /// Git identity and repositories.
    #[serde(rename = "git-gate")]
    pub git_gate: ResolvedGitGate,
    /// Egress log mode, upstream roots and routes.
    pub egress: ResolvedEgress,
}

/// A resolved `git-gate:` block. Every repository has a `url`; SSH upstreams also have a
/// `key` and a `host_key`; every string is free of control characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResolvedGitGate {
    /// Identity for the agent's `~/.gitconfig` (fields may be absent).
    pub user: GitUser,
    /// Repositories by name.
    pub repos: BTreeMap<String, RepoSpec>,
}

/// A resolved `egress:` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResolvedEgress {
    /// Request log mode; default `blocks`.
    pub log: LogMode,
    /// Extra roots for upstream TLS, absolute paths, parents' first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_ca: Vec<PathBuf>,
    /// The allowlist in resolved order: parents' routes (left to right), then the bottle's own.
    pub routes: Vec<Route>,
}

/// An agent with its resolved bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedAgent {
    /// The agent's name.
    pub name: String,
    /// The name of its bottle.
    pub bottle_name: String,
    /// Its bottle, resolved.
    pub bottle: ResolvedBottle,
    /// The prompt (`prompt:` or, in the directory form, the Markdown body), if any.
    pub prompt: Option<String>,
    /// Skill directories to copy into the agent's skills dir, absolute.
    pub skills: Vec<PathBuf>,
}

impl ResolvedBottle {
    /// The bottle in the manifest's YAML shape, as `manifest show` prints it.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }
}
