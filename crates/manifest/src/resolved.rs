//! Resolved, validated bottles and agents: what the rest of bot-bottle works with.
//!
//! A [`ResolvedBottle`] has every `extends` folded in, every default filled in and every
//! value checked. It serializes to the manifest's own shape (`agent_provider`, `supervise`,
//! `env`, `git-gate`, `egress`, `resources`), which is what `bot-bottle manifest show` prints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::raw::{GitUser, McpFileSpec, ModelApiSpec, ProviderKind, RepoSpec};
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
    /// Any other terminal agent, as the manifest describes it.
    Generic(GenericProvider),
}

/// A validated generic provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenericProvider {
    /// The agent command: program and arguments (never empty).
    pub command: Vec<String>,
    /// The model API hosts, each with the credential egress injects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_api: Vec<ModelApiSpec>,
    /// Where the supervise MCP server is registered; none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpFileSpec>,
    /// The client's instructions file, relative to the agent's home.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Absolute path of the agent image's Dockerfile (docker backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<PathBuf>,
}

impl AgentProvider {
    /// The provider whose agent command and configuration are used.
    pub fn kind(&self) -> ProviderKind {
        match self {
            AgentProvider::Stock(kind) => *kind,
            AgentProvider::Template { template, .. } => *template,
            AgentProvider::Generic(_) => ProviderKind::Generic,
        }
    }

    /// The generic provider's description, for a generic provider.
    pub fn generic(&self) -> Option<&GenericProvider> {
        match self {
            AgentProvider::Generic(g) => Some(g),
            _ => None,
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
            AgentProvider::Generic(g) => g.serialize(s),
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
    /// CPU, memory and process limits, defaults filled in.
    pub resources: ResolvedResources,
    /// Native backend started as root: the agent keeps host uid 0. Shown only when set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dangerously_run_as_host_root: bool,
    /// Where the bottle runs with `--backend kubernetes`. Shown only when set.
    #[serde(skip_serializing_if = "ResolvedKubernetes::is_empty")]
    pub kubernetes: ResolvedKubernetes,
}

/// A resolved `kubernetes:` block: each field validated, absent ones left to the kubeconfig
/// (namespace) or the cluster (runtime class); no registry means local image names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResolvedKubernetes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The size of the home's PersistentVolumeClaim (`resume` finds the home there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Whether the bottle is an agent-sandbox `Sandbox` (`true`) or a plain pod (`false`);
    /// `None`: a `Sandbox` where the cluster serves the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
}

impl ResolvedKubernetes {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        *self == ResolvedKubernetes::default()
    }
}

/// A resolved `resources:` block: every limit set (the defaults where the bottle and its
/// parents set none). Serializes as the manifest writes it (`cpus: 1.5`, `memory: 2GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedResources {
    /// CPU time in thousandths of a CPU (`cpus: 1.5` is 1500).
    pub millicpus: u32,
    /// Memory in bytes, no swap on top.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u32,
    /// Start even where the backend cannot enforce the limits.
    pub dangerously_allow_unenforced: bool,
}

impl ResolvedResources {
    /// Default `cpus`: 2.
    pub const DEFAULT_MILLICPUS: u32 = 2000;
    /// Default `memory`: 4GiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 4 << 30;
    /// Default `pids`: 1024.
    pub const DEFAULT_PIDS: u32 = 1024;
}

impl Default for ResolvedResources {
    /// Limits that keep a laptop usable while a bottle builds and tests: 2 CPUs, 4GiB,
    /// 1024 processes.
    fn default() -> Self {
        ResolvedResources {
            millicpus: Self::DEFAULT_MILLICPUS,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            pids: Self::DEFAULT_PIDS,
            dangerously_allow_unenforced: false,
        }
    }
}

impl Serialize for ResolvedResources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if self.millicpus.is_multiple_of(1000) {
            map.serialize_entry("cpus", &(self.millicpus / 1000))?;
        } else {
            map.serialize_entry("cpus", &(f64::from(self.millicpus) / 1000.0))?;
        }
        map.serialize_entry("memory", &crate::validate::format_memory(self.memory_bytes))?;
        map.serialize_entry("pids", &self.pids)?;
        if self.dangerously_allow_unenforced {
            map.serialize_entry("dangerously_allow_unenforced", &true)?;
        }
        map.end()
    }
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
