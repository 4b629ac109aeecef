//! The gate's resolved configuration: its `git-gate:` block ([`crate::spec`]) checked once, so
//! the server and the pre-receive hook only ever see valid repository names, upstream URLs,
//! host keys and branch globs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::glob::Glob;
use crate::spec::{GateSpec, KeySpec, RepoSpec};

/// A problem in the `git-gate:` block.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the git gate's config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML did not match the `git-gate:` block.
    #[error("invalid `git-gate` block in {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A repository entry is invalid.
    #[error("git-gate repo `{repo}`: {message}")]
    Repo {
        /// Repository name as written.
        repo: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A value that would end up in a gitconfig contains characters that could inject
    /// configuration.
    #[error("git-gate {field}: {message}")]
    Value {
        /// Which field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The gate's configuration after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateConfig {
    /// `user.name` for the agent's gitconfig.
    pub user_name: Option<String>,
    /// `user.email` for the agent's gitconfig.
    pub user_email: Option<String>,
    /// Repositories by name.
    pub repos: BTreeMap<String, RepoConfig>,
}

/// One repository behind the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Name, served at `/<name>.git`.
    pub name: String,
    /// Upstream URL exactly as written in the manifest.
    pub url: String,
    /// How the upstream is reached.
    pub upstream: Upstream,
    /// Where the deploy key comes from (SSH upstreams only).
    pub key: Option<KeySource>,
    /// Pinned host key line `type base64` (SSH upstreams only).
    pub host_key: Option<String>,
    /// Branch globs the agent may push to; empty means any branch.
    pub push_branches: Vec<String>,
    /// Deletions and non-fast-forward updates allowed.
    pub allow_force_push: bool,
    /// Pushes adding content the scanner cannot read go through (unscanned).
    #[serde(default)]
    pub dangerously_push_unscannable: bool,
}

/// How an upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Upstream {
    /// A local path or `file://` URL (tests, local use): no key.
    Local,
    /// SSH, as `ssh://[user@]host[:port]/path` or scp-like `[user@]host:path`.
    Ssh {
        /// Login user, if given.
        user: Option<String>,
        /// Host name or address.
        host: String,
        /// Port, if not 22.
        port: Option<u16>,
        /// Repository path on the host (without a leading `/` for scp-like URLs).
        path: String,
        /// Written as scp-like `host:path` rather than `ssh://`.
        scp_like: bool,
    },
}

/// Where a deploy key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySource {
    /// A private key file on the host.
    Static {
        /// Path with `~` expanded.
        path: PathBuf,
    },
    /// Created per bottle through the Gitea API.
    Gitea {
        /// Environment variable holding the API token.
        forge_token_env: String,
        /// API base URL, e.g. `https://gitea.example/api/v1`.
        api_url: String,
    },
}

impl GateConfig {
    /// Reads a `git-gate:` block (or a YAML file whose only top-level key is `git-gate`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = state::read::read_limited_to_string(path, state::read::CONFIG_LIMIT).map_err(
            |source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Self::parse(&text, path)
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapped {
            #[serde(rename = "git-gate")]
            git_gate: GateSpec,
        }
        let raw = match serde_saphyr::from_str::<GateSpec>(text) {
            Ok(raw) => raw,
            Err(err) => match serde_saphyr::from_str::<Wrapped>(text) {
                Ok(w) => w.git_gate,
                Err(_) => {
                    return Err(ConfigError::Parse {
                        path: origin.to_path_buf(),
                        message: err.to_string(),
                    });
                }
            },
        };
        Self::from_spec(&raw)
    }

    /// Validates a block as written.
    pub fn from_spec(raw: &GateSpec) -> Result<Self, ConfigError> {
        let (user_name, user_email) = match &raw.user {
            Some(u) => (u.name.clone(), u.email.clone()),
            None => (None, None),
        };
        if let Some(name) = &user_name {
            check_value("user.name", name)?;
        }
        if let Some(email) = &user_email {
            check_value("user.email", email)?;
        }
        let mut repos = BTreeMap::new();
        for (name, spec) in raw.repos.iter().flatten() {
            repos.insert(name.clone(), resolve_repo(name, spec)?);
        }
        Ok(GateConfig {
            user_name,
            user_email,
            repos,
        })
    }
}

/// Checks a value that will be written into a gitconfig or a command line: no control
/// characters, quotes or backslashes.
pub(crate) fn check_value(field: &str, value: &str) -> Result<(), ConfigError> {
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || *c == '"' || *c == '\\')
    {
        return Err(ConfigError::Value {
            field: field.to_string(),
            message: format!(
                "contains {}; remove newlines, control characters, quotes and backslashes",
                describe_char(c)
            ),
        });
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '"' => "a double quote".into(),
        '\\' => "a backslash".into(),
        c => format!("the control character U+{:04X}", c as u32),
    }
}

/// A repository name is safe as a URL path segment and a directory name.
fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && !name.ends_with(".git")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn repo_err(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Repo {
        repo: name.to_string(),
        message: message.into(),
    }
}

fn resolve_repo(name: &str, spec: &RepoSpec) -> Result<RepoConfig, ConfigError> {
    if !valid_repo_name(name) {
        return Err(repo_err(
            name,
            "invalid name; use letters, digits, `-`, `_` and `.` (not leading, no `.git` suffix)",
        ));
    }
    let url = spec
        .url
        .clone()
        .ok_or_else(|| repo_err(name, "missing `url`"))?;
    check_value(&format!("repos.{name}.url"), &url)?;
    if url.trim() != url || url.is_empty() || url.contains(' ') {
        return Err(repo_err(name, "`url` must not contain spaces"));
    }
    let upstream = parse_upstream(&url).map_err(|m| repo_err(name, m))?;
    let (key, host_key) = match &upstream {
        Upstream::Local => (None, None),
        Upstream::Ssh { .. } => {
            let key = match &spec.key {
                None => {
                    return Err(repo_err(
                        name,
                        "an SSH upstream needs a deploy `key` (provider static or gitea)",
                    ));
                }
                Some(KeySpec::Static { path }) => {
                    check_value(&format!("repos.{name}.key.path"), path)?;
                    KeySource::Static {
                        path: expand_tilde(path),
                    }
                }
                Some(KeySpec::Gitea {
                    forge_token_env,
                    api_url,
                }) => {
                    let api_url = match api_url {
                        Some(u) => u.trim_end_matches('/').to_string(),
                        None => match &upstream {
                            Upstream::Ssh { host, .. } => format!("https://{host}/api/v1"),
                            Upstream::Local => String::new(),
                        },
                    };
                    check_value(&format!("repos.{name}.key.api_url"), &api_url)?;
                    KeySource::Gitea {
                        forge_token_env: forge_token_env.clone(),
                        api_url,
                    }
                }
            };
            let host_key = spec.host_key.clone().ok_or_else(|| {
                repo_err(
                    name,
                    "an SSH upstream needs a pinned `host_key` (e.g. `ssh-ed25519 AAAA…`, see `ssh-keyscan`)",
                )
            })?;
            check_host_key(&host_key).map_err(|m| repo_err(name, m))?;
            (Some(key), Some(host_key.trim().to_string()))
        }
    };
    let push_branches = spec.push_branches.clone().unwrap_or_default();
    for g in &push_branches {
        Glob::new(g).map_err(|m| repo_err(name, format!("push_branches `{g}`: {m}")))?;
    }
    Ok(RepoConfig {
        name: name.to_string(),
        url,
        upstream,
        key,
        host_key,
        push_branches,
        allow_force_push: spec.allow_force_push.unwrap_or(false),
        dangerously_push_unscannable: spec.dangerously_push_unscannable.unwrap_or(false),
    })
}

fn expand_tilde(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(path)
}

/// `type base64` with an optional comment; one line.
fn check_host_key(key: &str) -> Result<(), String> {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
    let base64 = !blob.is_empty()
        && blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if !known || !base64 {
        return Err("`host_key` must look like `ssh-ed25519 AAAA…` (key type, then base64)".into());
    }
    Ok(())
}

/// Classifies an upstream URL.
pub(crate) fn parse_upstream(url: &str) -> Result<Upstream, String> {
    if url.starts_with("file://") || url.starts_with('/') || url.starts_with("./") {
        return Ok(Upstream::Local);
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        let (authority, path) = rest
            .split_once('/')
            .ok_or("an ssh:// URL needs a path after the host")?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("invalid port `{p}` in upstream URL"))?;
                (h.to_string(), Some(port).filter(|p| *p != 22))
            }
            _ => (hostport.to_string(), None),
        };
        check_host(&host)?;
        if path.is_empty() {
            return Err("an ssh:// URL needs a repository path".into());
        }
        return Ok(Upstream::Ssh {
            user,
            host,
            port,
            path: format!("/{path}"),
            scp_like: false,
        });
    }
    if url.contains("://") {
        return Err(
            "unsupported upstream URL scheme; use ssh://, scp-like `git@host:path`, a local path or file://"
                .into(),
        );
    }
    if let Some((authority, path)) = url.split_once(':') {
        let (user, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h.to_string()),
            None => (None, authority.to_string()),
        };
        check_host(&host)?;
        if path.is_empty() {
            return Err("a scp-like URL needs a repository path after `:`".into());
        }
        return Ok(Upstream::Ssh {
            user,
            host,
            port: None,
            path: path.to_string(),
            scp_like: true,
        });
    }
    Err(
        "upstream URL is neither ssh://, scp-like `git@host:path`, an absolute path nor file://"
            .into(),
    )
}

fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid host `{host}` in upstream URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn parses_ssh_url_forms() {
        assert_eq!(
            parse_upstream("ssh://git@example.org:2222/team/app.git"),
            Ok(Upstream::Ssh {
                user: Some("git".into()),
                host: "example.org".into(),
                port: Some(2222),
                path: "/team/app.git".into(),
                scp_like: false
            })
        );
        assert_eq!(
            parse_upstream("git@example.org:team/app.git"),
            Ok(Upstream::Ssh {
                user: Some("git".into()),
                host: "example.org".into(),
                port: None,
                path: "team/app.git".into(),
                scp_like: true
            })
        );
        assert_eq!(parse_upstream("/srv/git/app.git"), Ok(Upstream::Local));
        assert_eq!(
            parse_upstream("file:///srv/git/app.git"),
            Ok(Upstream::Local)
        );
        assert!(parse_upstream("https://example.org/app.git").is_err());
        assert!(parse_upstream("ssh://-oProxyCommand=x/app").is_err());
    }

    #[test]
    fn ssh_upstream_requires_key_and_host_key() {
        let yaml = "repos:\n  app:\n    url: git@example.org:team/app.git\n";
        let err = GateConfig::parse(yaml, Path::new("g.yaml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "git-gate repo `app`: an SSH upstream needs a deploy `key` (provider static or gitea)"
        );
    }

    #[test]
    fn newline_in_user_name_is_rejected() {
        let yaml = "user:\n  name: \"a\\n[core]\"\nrepos: {}\n";
        let err = GateConfig::parse(yaml, Path::new("g.yaml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "git-gate user.name: contains a newline; remove newlines, control characters, quotes and backslashes"
        );
    }

    #[test]
    fn wrapped_block_is_accepted() {
        let yaml = "git-gate:\n  repos:\n    app:\n      url: /srv/app.git\n      push_branches: [\"agent/*\"]\n";
        let cfg = GateConfig::parse(yaml, Path::new("g.yaml")).unwrap();
        assert_eq!(cfg.repos["app"].push_branches, vec!["agent/*".to_string()]);
        assert_eq!(cfg.repos["app"].upstream, Upstream::Local);
    }

    #[test]
    fn bad_repo_names_are_rejected() {
        for name in ["", "../x", ".hidden", "a/b", "x.git", "a b"] {
            assert!(!valid_repo_name(name), "{name}");
        }
        assert!(valid_repo_name("my-app_1.2"));
    }
}
