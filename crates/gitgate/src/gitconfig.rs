//! The agent's `~/.gitconfig`: its identity, and every manifest upstream URL rewritten to
//! the gate (`insteadOf`), so `git clone <upstream>` inside the bottle goes through the gate.
//! Every value is checked first: a newline, control character, quote or backslash in a
//! manifest value is an error, never an injected config line.

use crate::config::{ConfigError, GateConfig, Upstream, check_value};
use crate::spec::GateSpec;

/// Renders the agent's gitconfig for a gate reachable at `gate_base_url`
/// (e.g. `http://10.0.2.2:9418`).
pub fn render_agent_gitconfig(gate_base_url: &str, gate: &GateSpec) -> Result<String, ConfigError> {
    let config = GateConfig::from_spec(gate)?;
    render_from_config(gate_base_url, &config)
}

/// Same as [`render_agent_gitconfig`] for an already validated configuration.
pub fn render_from_config(gate_base_url: &str, config: &GateConfig) -> Result<String, ConfigError> {
    let base = gate_base_url.trim_end_matches('/');
    check_value("gate URL", base)?;
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.contains(' ') {
        return Err(ConfigError::Value {
            field: "gate URL".into(),
            message: format!("`{base}` must be an http:// URL without spaces"),
        });
    }
    let mut out = String::new();
    if config.user_name.is_some() || config.user_email.is_some() {
        out.push_str("[user]\n");
        if let Some(name) = &config.user_name {
            out.push_str(&format!("\tname = \"{name}\"\n"));
        }
        if let Some(email) = &config.user_email {
            out.push_str(&format!("\temail = \"{email}\"\n"));
        }
    }
    for repo in config.repos.values() {
        out.push_str(&format!("[url \"{base}/{}.git\"]\n", repo.name));
        for alias in url_aliases(&repo.url, &repo.upstream) {
            check_value(&format!("repos.{}.url", repo.name), &alias)?;
            out.push_str(&format!("\tinsteadOf = \"{alias}\"\n"));
        }
    }
    Ok(out)
}

/// The URL as written plus its other spelling (`ssh://user@host/path` ⇄ `user@host:path`
/// when no port is involved; a path ⇄ `file://` for local upstreams).
fn url_aliases(url: &str, upstream: &Upstream) -> Vec<String> {
    let mut v = vec![url.to_string()];
    match upstream {
        Upstream::Ssh {
            user,
            host,
            port: None,
            path,
            scp_like,
        } => {
            let userat = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
            if *scp_like {
                let p = path.trim_start_matches('/');
                v.push(format!("ssh://{userat}{host}/{p}"));
            } else {
                v.push(format!("{userat}{host}:{}", path.trim_start_matches('/')));
            }
        }
        Upstream::Ssh { .. } => {}
        Upstream::Local => {
            if let Some(p) = url.strip_prefix("file://") {
                v.push(p.to_string());
            } else if url.starts_with('/') {
                v.push(format!("file://{url}"));
            }
        }
    }
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(yaml: &str) -> GateSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn renders_identity_and_rewrites() {
        let g = gate(
            "user:\n  name: Agent Smith\n  email: agent@example.org\nrepos:\n  app:\n    url: git@git.example.org:team/app.git\n    key: {provider: static, path: /k}\n    host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n  lib:\n    url: ssh://git@git.example.org:2222/team/lib.git\n    key: {provider: static, path: /k}\n    host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n  tools:\n    url: ssh://git@git.example.org/team/tools.git\n    key: {provider: static, path: /k}\n    host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n  local:\n    url: /srv/git/local.git\n",
        );
        insta::assert_snapshot!(render_agent_gitconfig("http://10.0.2.2:9418/", &g).unwrap());
    }

    #[test]
    fn injection_in_values_is_an_error() {
        let g = gate("user:\n  email: \"a@b\\n[core]\\n\\tsshCommand = evil\"\n");
        let err = render_agent_gitconfig("http://gate:1", &g).unwrap_err();
        insta::assert_snapshot!(err.to_string());
        let g = gate("repos:\n  app:\n    url: \"/srv/a\\\"b\"\n");
        let err = render_agent_gitconfig("http://gate:1", &g).unwrap_err();
        insta::assert_snapshot!(err.to_string());
        let err = render_agent_gitconfig("http://gate:1\n[x]", &GateSpec::default()).unwrap_err();
        insta::assert_snapshot!(err.to_string());
    }
}
