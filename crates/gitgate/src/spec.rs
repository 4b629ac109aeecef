//! The gate's input: its `git-gate:` block as written, before [`crate::GateConfig`] checks it.
//!
//! The gate owns this shape so that it depends on no manifest: the launcher maps a bottle's
//! manifest block onto it, and an operator running `bot-bottle gate serve --repos FILE`
//! writes it by hand. Today it has the same keys as the manifest's `git-gate:` block; if
//! the two ever differ, only the launcher's mapping changes. Every field is optional here;
//! what is required is decided, with a message naming the fix, by [`crate::GateConfig`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A `git-gate:` block: the agent's git identity and the repositories behind the gate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a git-gate block (`user`, `repos`)")]
pub struct GateSpec {
    /// Identity written into the agent's `~/.gitconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    /// Repositories the agent may fetch and push, by name (served at `/<name>.git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<BTreeMap<String, RepoSpec>>,
}

/// `git-gate.user`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a git user `{name: NAME, email: EMAIL}`"
)]
pub struct UserSpec {
    /// `user.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user.email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One repository behind the gate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a repository (`url`, `key`, `host_key`, `push_branches`, `allow_force_push`, `dangerously_push_unscannable`)"
)]
pub struct RepoSpec {
    /// Upstream URL: `ssh://…`, scp-like `git@host:path`, a local path or `file://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Deploy key used for the upstream (required for SSH upstreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySpec>,
    /// Pinned upstream SSH host key, e.g. `ssh-ed25519 AAAA…` (required for SSH upstreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Branch globs the agent may push to; absent means any branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_branches: Option<Vec<String>>,
    /// Allow deletions and non-fast-forward updates (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_force_push: Option<bool>,
    /// Let pushes through that add content the secret scanner cannot read, unscanned
    /// (default false: such pushes are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangerously_push_unscannable: Option<bool>,
}

/// Where a repository's deploy key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "provider",
    rename_all = "lowercase",
    deny_unknown_fields,
    expecting = "a key `{provider: static, path: PATH}` or `{provider: gitea, forge_token_env: VAR}`"
)]
pub enum KeySpec {
    /// A private key file on the host.
    Static {
        /// Path to the private key (`~` is expanded).
        path: String,
    },
    /// A deploy key created per bottle through the Gitea API and revoked at teardown.
    Gitea {
        /// Host environment variable holding the Gitea API token.
        forge_token_env: String,
        /// API base URL; default `https://<host of url>/api/v1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_url: Option<String>,
    },
}
