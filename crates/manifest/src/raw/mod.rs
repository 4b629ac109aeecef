//! Raw serde layer: what a user writes, every field optional, unknown fields rejected.
//!
//! Nothing here is validated beyond its YAML shape; [`crate::Manifest`] turns these values
//! into resolved bottles and agents. Names, `extends` entries and a few blocks carry their
//! source location ([`Spanned`]) so that later errors can point at the right line.

pub mod git_gate;

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
pub use serde_saphyr::Spanned;

pub use git_gate::{GitGate, GitUser, KeySpec, RepoSpec};
pub use policy::raw::EgressConfig;

/// Parses YAML with the manifest's settings. Only `true` and `false` are booleans, so a
/// bottle named `y`, `no` or `off` stays a name (YAML 1.1 would read it as a boolean).
/// `bot-bottle gate serve --repos FILE` parses its file through this too.
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
}

/// The single-file form: `bot-bottle.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a manifest: a mapping with `bottles:` and `agents:`"
)]
pub struct RawManifest {
    /// Bottles by name: what an agent runs in.
    #[serde(default)]
    pub bottles: Option<Entries<RawBottle>>,
    /// Agents by name: a bottle plus a prompt and skills.
    #[serde(default)]
    pub agents: Option<Entries<RawAgent>>,
}

/// One bottle as written (`bottles.<name>` or the front matter of `bottles/<name>.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a bottle: a mapping of bottle fields"
)]
pub struct RawBottle {
    /// Parent bottle(s): a name or a list of names, folded left to right.
    #[serde(default)]
    pub extends: Option<Spanned<Extends>>,
    /// `claude`, `codex`, `gemini`, `opencode`, `{template: NAME, dockerfile: PATH}` or a
    /// generic provider `{command: [...], model_api: [...], mcp: {...}}`; default `claude`.
    #[serde(default)]
    pub agent_provider: Option<Spanned<AgentProviderSpec>>,
    /// Run the supervise sidecar; default `true`.
    #[serde(default)]
    pub supervise: Option<bool>,
    /// Plain environment variables for the agent (never secrets).
    #[serde(default)]
    pub env: Option<Entries<String>>,
    /// Git identity and repositories served through the git gate.
    #[serde(default, rename = "git-gate")]
    pub git_gate: Option<Spanned<GitGateBlock>>,
    /// Egress log mode, extra upstream roots and the route allowlist.
    #[serde(default)]
    pub egress: Option<Spanned<EgressConfig>>,
    /// CPU, memory and process limits (`{cpus: 1.5, memory: 2GiB, pids: 512}`, each
    /// optional; defaults protect a laptop).
    #[serde(default)]
    pub resources: Option<Spanned<RawResources>>,
    /// Native backend started as root: keep the agent at host uid 0 instead of an
    /// unprivileged host uid. Default `false`.
    #[serde(default)]
    pub dangerously_run_as_host_root: Option<Spanned<bool>>,
    /// Where the bottle runs with `--backend kubernetes` (each field optional).
    #[serde(default)]
    pub kubernetes: Option<Spanned<RawKubernetes>>,
}

/// A bottle's `kubernetes:` block as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a kubernetes block (`namespace`, `runtime_class`, `registry`, `home_size`, `storage_class`, `sandbox`)"
)]
pub struct RawKubernetes {
    /// The namespace; the kubeconfig context's when absent.
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    /// The pod's RuntimeClass (`gvisor`, `kata`); the cluster's default when absent.
    #[serde(default)]
    pub runtime_class: Option<Spanned<String>>,
    /// The registry the bottle's images are pushed to and pulled from.
    #[serde(default)]
    pub registry: Option<Spanned<String>>,
    /// Keep the agent's home in a PersistentVolumeClaim of this size (`10Gi`) for `resume`;
    /// the home goes with the pod when absent.
    #[serde(default)]
    pub home_size: Option<Spanned<String>>,
    /// The StorageClass of that claim; the cluster's default when absent.
    #[serde(default)]
    pub storage_class: Option<Spanned<String>>,
    /// Run the bottle as an agent-sandbox `Sandbox` (`true`: required, `false`: a plain
    /// pod); absent: a `Sandbox` when the cluster serves that API, a pod otherwise.
    #[serde(default)]
    pub sandbox: Option<Spanned<bool>>,
}

/// A bottle's `resources:` block as written. Values are kept as found (a number, a string,
/// ...) so that every mistake is reported with its line by the resolver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a resources block (`cpus`, `memory`, `pids`)"
)]
pub struct RawResources {
    /// CPUs, fractions allowed: `1.5`.
    #[serde(default)]
    pub cpus: Option<Spanned<Scalar>>,
    /// Memory: `2GiB`, `512MiB`, `2G` (binary units) or a number of bytes.
    #[serde(default)]
    pub memory: Option<Spanned<Scalar>>,
    /// Processes and threads.
    #[serde(default)]
    pub pids: Option<Spanned<Scalar>>,
    /// Start even where the backend cannot enforce the limits (native without usable
    /// cgroups). Default `false`.
    #[serde(default)]
    pub dangerously_allow_unenforced: Option<bool>,
}

/// One YAML scalar as found, for values the resolver checks itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A whole number.
    Int(i128),
    /// A number with a fraction.
    Float(f64),
    /// A string.
    Str(String),
    /// Anything else; holds what was found (`a boolean`, `a list`, ...).
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Ok(i128::try_from(v).map_or(Scalar::Other("a huge number"), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other("an empty value"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other("an empty value"))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                Ok(Scalar::Other("binary data"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a mapping"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a list"))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A bottle's `git-gate:` block as the manifest reads it: the shape of [`GitGate`], with
/// locations kept for error messages. [`GitGateBlock::to_git_gate`] drops them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a `git-gate` block (`user`, `repos`)"
)]
pub struct GitGateBlock {
    /// Identity written into the agent's `~/.gitconfig`.
    #[serde(default)]
    pub user: Option<Spanned<GitUser>>,
    /// Repositories the agent may fetch and push, by name (served at `/<name>.git`).
    #[serde(default)]
    pub repos: Option<Entries<RepoSpec>>,
}

impl GitGateBlock {
    /// The block as the gate's [`GitGate`] type.
    pub fn to_git_gate(&self) -> GitGate {
        GitGate {
            user: self.user.as_ref().map(|u| u.value.clone()),
            repos: self.repos.as_ref().map(|r| {
                r.0.iter()
                    .map(|(name, spec)| (name.value.clone(), spec.clone()))
                    .collect()
            }),
        }
    }
}

/// One agent as written (`agents.<name>` or the front matter of `agents/<name>.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an agent: a mapping of agent fields")]
pub struct RawAgent {
    /// The bottle the agent runs in (required).
    #[serde(default)]
    pub bottle: Option<Spanned<String>>,
    /// Skill directories copied into the agent's skills dir. A relative path is relative to
    /// the directory holding `bot-bottle.yaml` (file form) or to the manifest directory
    /// (directory form); `~/` is the home directory.
    #[serde(default)]
    pub skills: Option<Vec<Spanned<String>>>,
    /// The agent's prompt (in the directory form: the Markdown body instead).
    #[serde(default)]
    pub prompt: Option<Spanned<String>>,
}

/// A mapping of names to values, in document order, each name with its location.
#[derive(Debug, Clone, Default)]
pub struct Entries<T>(pub Vec<(Spanned<String>, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for EntriesVisitor<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<T>()?;
                    out.push((key, value));
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

/// `extends:` as written. Wrong shapes are kept (not rejected by serde) so that every
/// `extends` mistake in a manifest is reported together, with the bottle's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extends {
    /// `extends: base`.
    One(String),
    /// `extends: [base, net]`; entries keep their location.
    Many(Vec<Spanned<ExtendsEntry>>),
    /// Neither a string nor a list; holds what was found (`a number`, `a mapping`, ...).
    Invalid(&'static str),
}

/// One entry of an `extends:` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendsEntry {
    /// A bottle name.
    Name(String),
    /// Not a string; holds what was found.
    Invalid(&'static str),
}

/// Consumes any YAML value and says what kind it was; strings are returned.
struct KindVisitor {
    allow_seq: bool,
}

enum Kind {
    Str(String),
    Seq(Vec<Spanned<ExtendsEntry>>),
    Other(&'static str),
}

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bottle name or a list of bottle names")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Kind::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Kind::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Kind::Other("a number"))
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Ok(Kind::Other("a number"))
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Ok(Kind::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Kind::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Kind::Other("an empty value"))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Kind::Other("an empty value"))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Ok(Kind::Other("binary data"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Kind::Other("a mapping"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.allow_seq {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Kind::Other("a list"));
        }
        let mut out = Vec::new();
        while let Some(entry) = seq.next_element::<Spanned<ExtendsEntry>>()? {
            out.push(entry);
        }
        Ok(Kind::Seq(out))
    }
}

impl<'de> Deserialize<'de> for Extends {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match deserializer.deserialize_any(KindVisitor { allow_seq: true })? {
                Kind::Str(s) => Extends::One(s),
                Kind::Seq(v) => Extends::Many(v),
                Kind::Other(kind) => Extends::Invalid(kind),
            },
        )
    }
}

impl<'de> Deserialize<'de> for ExtendsEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match deserializer.deserialize_any(KindVisitor { allow_seq: false })? {
                Kind::Str(s) => ExtendsEntry::Name(s),
                Kind::Seq(_) => ExtendsEntry::Invalid("a list"),
                Kind::Other(kind) => ExtendsEntry::Invalid(kind),
            },
        )
    }
}

/// The agent program a bottle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(
    rename_all = "lowercase",
    expecting = "`claude`, `codex`, `gemini` or `opencode`"
)]
pub enum ProviderKind {
    /// Claude Code.
    Claude,
    /// OpenAI Codex CLI.
    Codex,
    /// Google Gemini CLI.
    Gemini,
    /// OpenCode (sst/opencode).
    OpenCode,
    /// Any other terminal agent, described in the manifest (`agent_provider: {command:
    /// ...}`); never a template.
    #[serde(skip_deserializing)]
    Generic,
}

impl ProviderKind {
    /// The name as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Claude => "claude",
            ProviderKind::Codex => "codex",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenCode => "opencode",
            ProviderKind::Generic => "generic",
        }
    }

    /// The client's name for people (errors, warnings).
    pub fn display_name(self) -> &'static str {
        match self {
            ProviderKind::Claude => "Claude Code",
            ProviderKind::Codex => "Codex",
            ProviderKind::Gemini => "Gemini CLI",
            ProviderKind::OpenCode => "OpenCode",
            ProviderKind::Generic => "a generic agent",
        }
    }
}

/// `agent_provider:` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProviderSpec {
    /// `claude`, `codex`, `gemini` or `opencode`: the provider's stock image.
    Stock(ProviderKind),
    /// `{template: claude|codex|gemini|opencode, dockerfile: PATH}`: the provider's setup on
    /// a custom image.
    Template {
        /// Which provider's agent command and configuration to use.
        template: ProviderKind,
        /// Dockerfile of the image; relative paths as for `skills`.
        dockerfile: String,
    },
    /// `{command: [...], model_api: [...], mcp: {...}}`: any other terminal agent.
    Generic(GenericSpec),
}

/// A generic provider as written: the agent's command, the model API hosts with the
/// credential egress injects for each, and where the client reads its MCP servers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenericSpec {
    /// The agent command (program and arguments), run in the workspace.
    pub command: Vec<String>,
    /// The model API hosts the agent talks to, each with its credential.
    pub model_api: Vec<ModelApiSpec>,
    /// Where to register the supervise MCP server; none when absent.
    pub mcp: Option<McpFileSpec>,
    /// Where the client reads standing instructions (a file under the agent's home).
    pub instructions: Option<String>,
    /// Dockerfile of the agent's image (docker backend); relative paths as for `skills`.
    pub dockerfile: Option<String>,
}

/// One model API host of a generic provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a model API entry: `{host: HOST, token_env: VAR, auth_header: NAME, auth_scheme: SCHEME, env: VAR}`"
)]
pub struct ModelApiSpec {
    /// The API host (exact), e.g. `api.mistral.ai`.
    pub host: String,
    /// The HOST variable holding the real credential; egress injects it, the bottle never
    /// sees it.
    pub token_env: String,
    /// The header egress sets (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// The scheme before the token (`Bearer`); none sends the bare token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    /// The variable the agent reads its key from; it holds a placeholder in the bottle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// Where a generic client reads its MCP servers: a JSON or TOML file under the agent's
/// home, the dotted key of the servers table in it, and one entry's shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an MCP registration: `{file: PATH, key: DOTTED.KEY, entry: {...}}`"
)]
pub struct McpFileSpec {
    /// The file, relative to the agent's home; `.json` or `.toml`.
    pub file: String,
    /// The dotted key of the table of servers (`mcpServers`, `mcp.servers`).
    pub key: String,
    /// The server's entry; every string `{url}` in it becomes the supervise URL. Default
    /// `{url: "{url}"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<serde_json::Value>,
}

/// The mapping form of `agent_provider`: a template or a generic provider.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "`{template: claude|codex|gemini|opencode, dockerfile: PATH}` or `{command: [PROGRAM, ARGS...], model_api: [...], mcp: {...}}`"
)]
struct ProviderMap {
    template: Option<ProviderKind>,
    dockerfile: Option<String>,
    command: Option<Vec<String>>,
    model_api: Option<Vec<ModelApiSpec>>,
    mcp: Option<McpFileSpec>,
    instructions: Option<String>,
}

const PROVIDER_EXPECTED: &str = "`claude`, `codex`, `gemini`, `opencode`, `{template: claude|codex|gemini|opencode, dockerfile: PATH}` or a generic provider `{command: [PROGRAM, ARGS...], model_api: [...], mcp: {...}}`";

impl<'de> Deserialize<'de> for AgentProviderSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProviderVisitor;
        impl<'de> Visitor<'de> for ProviderVisitor {
            type Value = AgentProviderSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PROVIDER_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "claude" => Ok(AgentProviderSpec::Stock(ProviderKind::Claude)),
                    "codex" => Ok(AgentProviderSpec::Stock(ProviderKind::Codex)),
                    "gemini" => Ok(AgentProviderSpec::Stock(ProviderKind::Gemini)),
                    "opencode" => Ok(AgentProviderSpec::Stock(ProviderKind::OpenCode)),
                    "generic" => Err(E::custom(
                        "agent_provider `generic` needs its description: write \
                         `{command: [PROGRAM, ARGS...], model_api: [...], mcp: {...}}` instead",
                    )),
                    other => Err(E::custom(format_args!(
                        "unknown agent_provider `{other}`, expected {PROVIDER_EXPECTED}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let m = ProviderMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (m.template, m.command) {
                    (Some(_), Some(_)) => Err(de::Error::custom(
                        "agent_provider has both `template` and `command`; a template names a \
                         stock provider's setup, `command` describes a generic one: keep one",
                    )),
                    (Some(template), None) => {
                        if m.model_api.is_some() || m.mcp.is_some() || m.instructions.is_some() {
                            return Err(de::Error::custom(
                                "agent_provider `{template: ...}` takes only `template` and \
                                 `dockerfile`; `model_api`, `mcp` and `instructions` belong to a \
                                 generic provider (`{command: ...}`)",
                            ));
                        }
                        let Some(dockerfile) = m.dockerfile else {
                            return Err(de::Error::missing_field("dockerfile"));
                        };
                        Ok(AgentProviderSpec::Template {
                            template,
                            dockerfile,
                        })
                    }
                    (None, Some(command)) => Ok(AgentProviderSpec::Generic(GenericSpec {
                        command,
                        model_api: m.model_api.unwrap_or_default(),
                        mcp: m.mcp,
                        instructions: m.instructions,
                        dockerfile: m.dockerfile,
                    })),
                    (None, None) => Err(de::Error::custom(format_args!(
                        "agent_provider mapping needs `template` or `command`; expected {PROVIDER_EXPECTED}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(ProviderVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn git_gate_block_reads_like_the_gates_type() {
        let yaml = "user: {name: Bot, email: bot@example.com}\nrepos:\n  app:\n    url: ssh://git@h/org/app.git\n    key: {provider: gitea, forge_token_env: TOKEN}\n    host_key: ssh-ed25519 AAAA\n    push_branches: [\"bot/*\"]\n    allow_force_push: false\n  lib: {url: /srv/lib.git}\n";
        let block: GitGateBlock = from_yaml(yaml).unwrap();
        let gate: GitGate = from_yaml(yaml).unwrap();
        assert_eq!(block.to_git_gate(), gate);
        for bad in ["users: {}\n", "repos: {app: {uri: x}}\n"] {
            assert!(from_yaml::<GitGateBlock>(bad).is_err(), "{bad}");
            assert!(from_yaml::<GitGate>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extends_shapes() {
        let one: Extends = from_yaml("base").unwrap();
        assert_eq!(one, Extends::One("base".into()));
        let bad: Extends = from_yaml("{a: 1}").unwrap();
        assert_eq!(bad, Extends::Invalid("a mapping"));
        let many: Extends = from_yaml("[a, 1, no]").unwrap();
        let Extends::Many(entries) = many else {
            panic!("not a list")
        };
        let values: Vec<ExtendsEntry> = entries.into_iter().map(|e| e.value).collect();
        assert_eq!(
            values,
            vec![
                ExtendsEntry::Name("a".into()),
                ExtendsEntry::Invalid("a number"),
                ExtendsEntry::Name("no".into()),
            ]
        );
    }

    #[test]
    fn agent_provider_shapes() {
        let p: AgentProviderSpec = from_yaml("codex").unwrap();
        assert_eq!(p, AgentProviderSpec::Stock(ProviderKind::Codex));
        let p: AgentProviderSpec = from_yaml("{template: claude, dockerfile: ./D}").unwrap();
        assert_eq!(
            p,
            AgentProviderSpec::Template {
                template: ProviderKind::Claude,
                dockerfile: "./D".into()
            }
        );
        assert!(from_yaml::<AgentProviderSpec>("{template: claude, dockerfile: D, x: 1}").is_err());
        for (name, kind) in [
            ("gemini", ProviderKind::Gemini),
            ("opencode", ProviderKind::OpenCode),
        ] {
            let p: AgentProviderSpec = from_yaml(name).unwrap();
            assert_eq!(p, AgentProviderSpec::Stock(kind));
            assert_eq!(kind.as_str(), name);
        }
        assert!(from_yaml::<AgentProviderSpec>("{template: generic, dockerfile: D}").is_err());
    }

    #[test]
    fn a_generic_provider_reads_whole() {
        let p: AgentProviderSpec = from_yaml(
            "command: [aider, --yes]\nmodel_api:\n  - {host: api.mistral.ai, token_env: MISTRAL_KEY, env: MISTRAL_API_KEY}\n  - {host: api.x.test, token_env: X, auth_header: x-api-key}\nmcp: {file: .aider/mcp.json, key: mcpServers, entry: {type: http, url: \"{url}\"}}\ninstructions: .aider/CONVENTIONS.md\ndockerfile: ./Dockerfile\n",
        )
        .unwrap();
        assert_eq!(
            p,
            AgentProviderSpec::Generic(GenericSpec {
                command: vec!["aider".into(), "--yes".into()],
                model_api: vec![
                    ModelApiSpec {
                        host: "api.mistral.ai".into(),
                        token_env: "MISTRAL_KEY".into(),
                        auth_header: None,
                        auth_scheme: None,
                        env: Some("MISTRAL_API_KEY".into()),
                    },
                    ModelApiSpec {
                        host: "api.x.test".into(),
                        token_env: "X".into(),
                        auth_header: Some("x-api-key".into()),
                        auth_scheme: None,
                        env: None,
                    },
                ],
                mcp: Some(McpFileSpec {
                    file: ".aider/mcp.json".into(),
                    key: "mcpServers".into(),
                    entry: Some(serde_json::json!({"type": "http", "url": "{url}"})),
                }),
                instructions: Some(".aider/CONVENTIONS.md".into()),
                dockerfile: Some("./Dockerfile".into()),
            })
        );
        let problems = crate::validate::generic_provider_problems(&match p {
            AgentProviderSpec::Generic(g) => g,
            _ => unreachable!(),
        });
        assert_eq!(problems, Vec::<String>::new());
    }
}
