//! The `git-gate:` block of a bottle. `bot-bottle gate serve --repos FILE` reads the same
//! shape on its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A bottle's `git-gate:` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a `git-gate` block (`user`, `repos`)"
)]
pub struct GitGate {
    /// Identity written into the agent's `~/.gitconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<GitUser>,
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
pub struct GitUser {
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
    /// Let pushes through that add content the secret scanner cannot read (compressed
    /// archives, encrypted files, blobs over the size limit), unscanned (default false: such
    /// pushes are refused).
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
