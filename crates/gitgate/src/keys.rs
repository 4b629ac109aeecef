//! Upstream SSH access: the deploy key copied into the gate's state (mode 0600), the pinned
//! host key written as the only known host, and the `ssh` command line git uses — strict
//! host key checking, this identity only, no agent, no user or system ssh config.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{RepoConfig, Upstream};
use crate::process::hermetic_git_env;

/// A key or known-hosts file could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading the deploy key failed.
    #[error(
        "cannot read deploy key {path} for repo `{repo}`: {source}; check the `key.path` in the manifest"
    )]
    ReadKey {
        /// Repository.
        repo: String,
        /// Key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing into the state directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The files ssh needs for one repository's upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshSetup {
    /// Private key, mode 0600, inside the gate's state.
    pub key_path: PathBuf,
    /// known_hosts holding only the pinned host key.
    pub known_hosts_path: PathBuf,
}

/// Directory for keys inside the state directory (mode 0700).
pub fn keys_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("keys")
}

pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        KeyError::Write {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Writes `contents` to `path` readable only by the gate's user.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The known_hosts line for a pinned host key.
pub fn known_hosts_line(host: &str, port: Option<u16>, host_key: &str) -> String {
    let mut fields = host_key.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next().unwrap_or_default();
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p} {kind} {blob}\n"),
        _ => format!("{host} {kind} {blob}\n"),
    }
}

/// Writes the known_hosts file for a repo; the key file is written by the provider.
pub(crate) fn write_known_hosts(
    state_dir: &Path,
    repo: &RepoConfig,
) -> Result<Option<PathBuf>, KeyError> {
    let (Upstream::Ssh { host, port, .. }, Some(host_key)) = (&repo.upstream, &repo.host_key)
    else {
        return Ok(None);
    };
    let dir = keys_dir(state_dir);
    ensure_private_dir(&dir)?;
    let path = dir.join(format!("{}.known_hosts", repo.name));
    write_private(&path, known_hosts_line(host, *port, host_key).as_bytes())?;
    Ok(Some(path))
}

/// Copies a static deploy key into the state directory (0600) and returns its new path.
pub(crate) fn install_static_key(
    state_dir: &Path,
    repo: &str,
    source: &Path,
) -> Result<PathBuf, KeyError> {
    let key = state::read::read_limited(source, state::read::CONFIG_LIMIT).map_err(|e| {
        KeyError::ReadKey {
            repo: repo.to_string(),
            path: source.to_path_buf(),
            source: e,
        }
    })?;
    let dir = keys_dir(state_dir);
    ensure_private_dir(&dir)?;
    let path = dir.join(repo);
    write_private(&path, &key)?;
    Ok(path)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `GIT_SSH_COMMAND` for an upstream: strict host key checking against the pinned key,
/// only the deploy key, no agent, no ssh config files, bounded connect time.
pub fn ssh_command(ssh: &SshSetup, connect_timeout: Duration) -> String {
    format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} \
         -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityFile={} \
         -o IdentityAgent=none -o ForwardAgent=no -o ForwardX11=no -o ClearAllForwardings=yes \
         -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
         -o ConnectTimeout={} -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
        sh_quote(&ssh.known_hosts_path.to_string_lossy()),
        sh_quote(&ssh.key_path.to_string_lossy()),
        connect_timeout.as_secs().max(1)
    )
}

/// Environment for git commands that talk to an upstream.
pub fn upstream_env(
    ssh: Option<&SshSetup>,
    connect_timeout: Duration,
) -> Vec<(OsString, OsString)> {
    let mut env = hermetic_git_env();
    if let Some(ssh) = ssh {
        env.push((
            "GIT_SSH_COMMAND".into(),
            ssh_command(ssh, connect_timeout).into(),
        ));
        env.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn known_hosts_line_brackets_non_default_ports() {
        assert_eq!(
            known_hosts_line("127.0.0.1", Some(2222), "ssh-ed25519 AAAAC3Nz comment"),
            "[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nz\n"
        );
        assert_eq!(
            known_hosts_line("git.example", None, "ssh-ed25519 AAAAC3Nz"),
            "git.example ssh-ed25519 AAAAC3Nz\n"
        );
    }

    #[test]
    fn static_key_is_copied_private() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("id");
        std::fs::write(&src, "KEY").unwrap();
        let state = dir.path().join("state");
        let path = install_static_key(&state, "app", &src).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "KEY");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn ssh_command_quotes_paths() {
        let cmd = ssh_command(
            &SshSetup {
                key_path: "/s/it's/key".into(),
                known_hosts_path: "/s/kh".into(),
            },
            Duration::from_secs(5),
        );
        assert!(cmd.contains(r"IdentityFile='/s/it'\''s/key'"), "{cmd}");
        assert!(cmd.contains("StrictHostKeyChecking=yes"), "{cmd}");
        assert!(cmd.contains("ConnectTimeout=5"), "{cmd}");
    }
}
