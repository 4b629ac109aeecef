//! The bottle as the backend launches it: the agent's home written from the contract, the
//! read-only CA files, the forwarded sidecar ports, the agent's command and its limits.

use std::collections::BTreeMap;
use std::path::Path;

use ::bundle::{Listen, SidecarConfig};
use backend::{Forward, LaunchSpec, ReadOnlyFile};
use state::Identity;

use crate::error::Context;
use crate::{BottlePaths, Launch, LaunchError, Options, Report, create_private_dir, provider};

/// Where the agent's home is inside every bottle.
const AGENT_HOME: &str = "/home/agent";
/// The combined CA bundle replaces the system one inside the bottle.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The bottle CA certificate alone (for `NODE_EXTRA_CA_CERTS`).
const BOTTLE_CA_INSIDE: &str = "/run/bot-bottle/ca.pem";
/// The bundle's path inside when the host has no system bundle to replace.
const BUNDLE_FALLBACK_INSIDE: &str = "/run/bot-bottle/ca-bundle.crt";

/// The host variables holding the forge API tokens of the gate's repositories.
pub(crate) fn forge_token_envs<'a>(
    repos: &'a BTreeMap<String, manifest::raw::RepoSpec>,
    env: &'a crate::HostEnv,
) -> impl Iterator<Item = String> + 'a {
    repos.values().filter_map(|r| match &r.key {
        Some(manifest::raw::KeySpec::Gitea {
            forge_token_env, ..
        }) if env.is_set(forge_token_env) => Some(forge_token_env.clone()),
        _ => None,
    })
}

/// Writes the agent's home from the contract (for `pending` to make durable) and describes
/// the bottle to launch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn agent_spec(
    identity: &Identity,
    paths: &BottlePaths,
    launch: &Launch,
    fresh: bool,
    config: &SidecarConfig,
    ca_pem: &str,
    pending: &mut state::PendingSync,
    options: &Options,
) -> Result<LaunchSpec, LaunchError> {
    let bottle = &launch.agent.bottle;
    let has_repos = config.gate.is_some();
    let raw_gate = gate_spec(&bottle.git_gate);
    // The agent's contract.
    let endpoints = contract::Endpoints::DEFAULT;
    let gitconfig = if has_repos {
        gitgate::render_agent_gitconfig(&endpoints.gate_url(), &raw_gate)
            .context("cannot write the agent's gitconfig")?
    } else {
        render_user_only_gitconfig(&bottle.git_gate.user)
    };
    let system_roots = std::fs::read_to_string(SYSTEM_BUNDLE).unwrap_or_default();
    // A pod's workspace is the gate's clones at a fixed path (the operator's directory is
    // not on the cluster), and its image has the system bundle to replace.
    let in_pod = launch.backend == backend::BackendKind::Kubernetes;
    let bundle_inside = if in_pod || Path::new(SYSTEM_BUNDLE).is_file() {
        SYSTEM_BUNDLE
    } else {
        BUNDLE_FALLBACK_INSIDE
    };
    let workspace_inside = if in_pod {
        std::path::PathBuf::from(crate::pod::POD_WORKSPACE)
    } else {
        launch.cwd.clone()
    };
    let provider = provider::of(bottle.agent_provider.kind());
    let routes = provider::routes_for(bottle, launch.codex_auth(), &options.env);
    let contract = contract::build(
        &contract::Input {
            provider,
            identity: identity.to_string(),
            endpoints,
            home: AGENT_HOME.into(),
            workspace: workspace_inside.clone(),
            ca_bundle: bundle_inside.into(),
            bottle_ca: BOTTLE_CA_INSIDE.into(),
            gitconfig,
            bottle_env: bottle.env.clone(),
            // Provider template (clients): placeholder kind and skills index.
            claude_auth: provider::claude_auth(&routes),
            codex_auth: launch.codex_auth(),
            opencode_auth: provider::opencode_auth(|k| options.env.is_set(k)),
            generic: bottle
                .agent_provider
                .generic()
                .map(provider::generic_client),
            instructions: provider::instructions(
                provider,
                &launch.agent.skills,
                Path::new(AGENT_HOME),
                bottle.supervise,
            )?,
        },
        |k| options.env.var(k),
    )?;
    for file in &contract.home_files {
        let path = paths.agent_home().join(&file.path);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        // On resume, keep what the agent changed in its own config (e.g. Claude's state).
        if !fresh && path.exists() && file.path != Path::new(".gitconfig") {
            continue;
        }
        // Made durable with the rest of the bottle's state before the agent runs.
        pending
            .write(&path, file.contents.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    provider::install_skills(
        provider,
        &launch.agent.skills,
        &paths.agent_home(),
        options.report.as_ref(),
    )?;
    let bundle_host = paths.files().join("ca-bundle.crt");
    let ca_host = paths.files().join("ca.pem");
    // Copies of the CA for the bottle, rebuilt on every start and resume from the CA and
    // the host's roots: no fsync on the start path.
    state::atomic_write_unsynced(
        &bundle_host,
        contract::ca_bundle(&system_roots, ca_pem).as_bytes(),
        0o644,
    )
    .with_context(|| format!("cannot write {}", bundle_host.display()))?;
    state::atomic_write_unsynced(&ca_host, ca_pem.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", ca_host.display()))?;

    // The bottle's loopback ports, each to its sidecar (docker relays to the same port of
    // the sidecar container and has no socket to name).
    let forward = |inside_port: u16, listen: &Listen| Forward {
        inside_port,
        host_unix_socket: listen.unix_socket().cloned().unwrap_or_default(),
    };
    let mut forwards = vec![forward(endpoints.egress, &config.egress.listen)];
    if let Some(g) = &config.gate {
        forwards.push(forward(endpoints.gate, &g.listen));
    }
    if let Some(s) = &config.supervise {
        forwards.push(forward(endpoints.supervise, &s.listen));
    }
    let argv = if launch.command.is_empty() {
        match bottle.agent_provider.generic() {
            // A generic agent: its command as the manifest writes it, with the prompt.
            Some(g) => {
                let mut argv = g.command.clone();
                if fresh
                    && let Some(p) = launch
                        .agent
                        .prompt
                        .as_deref()
                        .filter(|p| !p.trim().is_empty())
                {
                    argv.push(p.to_string());
                }
                argv
            }
            None => agent_command(provider, launch.agent.prompt.as_deref(), !fresh),
        }
    } else {
        launch.command.clone()
    };
    let interactive = options.interactive;
    let spec = LaunchSpec {
        identity: identity.to_string(),
        argv,
        env: contract.env.clone(),
        workspace: backend::Workspace {
            host: launch.cwd.clone(),
            inside: workspace_inside,
            mode: if launch.copy_cwd {
                backend::WorkspaceMode::Copy {
                    into: paths.workspace_copy(),
                }
            } else {
                backend::WorkspaceMode::Mount
            },
        },
        home: backend::Home {
            host: paths.agent_home(),
            inside: AGENT_HOME.into(),
        },
        files: vec![
            ReadOnlyFile {
                host: bundle_host,
                inside: bundle_inside.into(),
            },
            ReadOnlyFile {
                host: ca_host,
                inside: BOTTLE_CA_INSIDE.into(),
            },
        ],
        forwards,
        interactive,
        resources: resources(&bottle.resources),
        dangerously_run_as_host_root: bottle.dangerously_run_as_host_root,
    };
    Ok(spec)
}

/// The manifest's limits as the backends take them.
pub(crate) fn resources(r: &manifest::ResolvedResources) -> backend::Resources {
    backend::Resources {
        millicpus: r.millicpus,
        memory_bytes: r.memory_bytes,
        pids: r.pids,
        allow_unenforced: r.dangerously_allow_unenforced,
    }
}

/// Routes whose credential variable is not set on the host lose the credential (with a
/// warning): their requests go out unauthenticated rather than the bottle not starting.
/// Nothing is weakened — the agent holds only placeholders either way.
pub(crate) fn without_missing_tokens(
    routes: &[policy::Route],
    is_set: impl Fn(&str) -> bool,
    report: &dyn Report,
) -> Vec<policy::Route> {
    routes
        .iter()
        .map(|r| match &r.token_env {
            Some(var) if !is_set(var) => {
                report.line(&format!(
                    "warning: {var} is not set, so requests to {} go out without credentials; export it before `start` (the agent never sees it)",
                    r.host
                ));
                policy::Route {
                    token_env: None,
                    auth_scheme: None,
                    auth_header: None,
                    ..r.clone()
                }
            }
            _ => r.clone(),
        })
        .collect()
}

pub(crate) fn render_user_only_gitconfig(user: &manifest::raw::GitUser) -> String {
    let mut out = String::new();
    if user.name.is_some() || user.email.is_some() {
        out.push_str("[user]\n");
        if let Some(n) = &user.name {
            out.push_str(&format!("\tname = {n}\n"));
        }
        if let Some(e) = &user.email {
            out.push_str(&format!("\temail = {e}\n"));
        }
    }
    out
}

/// The provider's own agent command, with the manifest's prompt.
/// A resumed bottle continues the agent's last conversation instead of the prompt.
pub(crate) fn agent_command(
    provider: contract::Provider,
    prompt: Option<&str>,
    resume: bool,
) -> Vec<String> {
    let mut argv: Vec<String> = match (provider, resume) {
        (contract::Provider::Claude, false) => {
            vec!["claude".into(), "--dangerously-skip-permissions".into()]
        }
        (contract::Provider::Claude, true) => vec![
            "claude".into(),
            "--dangerously-skip-permissions".into(),
            "--continue".into(),
        ],
        (contract::Provider::Codex, false) => vec![
            "codex".into(),
            "--dangerously-bypass-approvals-and-sandbox".into(),
        ],
        (contract::Provider::Codex, true) => vec![
            "codex".into(),
            "--dangerously-bypass-approvals-and-sandbox".into(),
            "resume".into(),
            "--last".into(),
        ],
        // `--yolo`: no confirmation prompts inside the bottle (the bottle is the boundary);
        // `-i` keeps the session interactive after the prompt.
        (contract::Provider::Gemini, false) => {
            let mut argv: Vec<String> = vec!["gemini".into(), "--yolo".into()];
            if let Some(p) = prompt.filter(|p| !p.trim().is_empty()) {
                argv.push("-i".into());
                argv.push(p.to_string());
            }
            return argv;
        }
        (contract::Provider::Gemini, true) => {
            vec![
                "gemini".into(),
                "--yolo".into(),
                "--resume".into(),
                "latest".into(),
            ]
        }
        (contract::Provider::OpenCode, false) => {
            let mut argv: Vec<String> = vec!["opencode".into()];
            if let Some(p) = prompt.filter(|p| !p.trim().is_empty()) {
                argv.push("--prompt".into());
                argv.push(p.to_string());
            }
            return argv;
        }
        (contract::Provider::OpenCode, true) => vec!["opencode".into(), "--continue".into()],
        // Built from the manifest by the caller.
        (contract::Provider::Generic, _) => Vec::new(),
    };
    if resume {
        return argv;
    }
    if let Some(p) = prompt.filter(|p| !p.trim().is_empty()) {
        argv.push(p.to_string());
    }
    argv
}

/// The manifest's `git-gate:` block as the gate's own input ([`gitgate::GateSpec`]): the
/// gate knows no manifest, so the launcher maps one onto the other, field by field.
pub(crate) fn gate_spec(gate: &manifest::ResolvedGitGate) -> gitgate::GateSpec {
    let repo = |r: &manifest::raw::RepoSpec| gitgate::RepoSpec {
        url: r.url.clone(),
        key: r.key.as_ref().map(|k| match k {
            manifest::raw::KeySpec::Static { path } => {
                gitgate::KeySpec::Static { path: path.clone() }
            }
            manifest::raw::KeySpec::Gitea {
                forge_token_env,
                api_url,
            } => gitgate::KeySpec::Gitea {
                forge_token_env: forge_token_env.clone(),
                api_url: api_url.clone(),
            },
        }),
        host_key: r.host_key.clone(),
        push_branches: r.push_branches.clone(),
        allow_force_push: r.allow_force_push,
        dangerously_push_unscannable: r.dangerously_push_unscannable,
    };
    gitgate::GateSpec {
        user: Some(gitgate::UserSpec {
            name: gate.user.name.clone(),
            email: gate.user.email.clone(),
        }),
        repos: Some(
            gate.repos
                .iter()
                .map(|(n, r)| (n.clone(), repo(r)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_spec_carries_every_key_of_the_manifest_block() {
        let yaml = "user:\n  name: agent\n  email: a@example.org\nrepos:\n  app:\n    url: git@example.org:team/app.git\n    key:\n      provider: gitea\n      forge_token_env: FORGE\n      api_url: https://example.org/api/v1\n    host_key: ssh-ed25519 AAAA\n    push_branches:\n    - agent/*\n    allow_force_push: true\n    dangerously_push_unscannable: true\n  lib:\n    url: /srv/lib.git\n    key:\n      provider: static\n      path: ~/.ssh/deploy\n";
        let raw: manifest::raw::GitGate = serde_saphyr::from_str(yaml).unwrap();
        let resolved = manifest::ResolvedGitGate {
            user: raw.user.clone().unwrap_or_default(),
            repos: raw.repos.clone().unwrap_or_default(),
        };
        let spec = crate::spec::gate_spec(&resolved);
        assert_eq!(
            serde_saphyr::to_string(&spec).unwrap(),
            serde_saphyr::to_string(&raw).unwrap()
        );
    }

    fn route(host: &str, token: Option<&str>) -> policy::Route {
        policy::Route {
            host: host.into(),
            websocket: None,
            dangerously_raw_paths: None,
            expires: None,
            uses: None,
            grant: None,
            dlp: None,
            dlp_allow: None,
            dlp_allow_grants: None,
            after_grant: None,
            dangerously_dlp_pass_unscannable: None,
            port: None,
            auth_scheme: token.map(|_| "Bearer".into()),
            token_env: token.map(Into::into),
            auth_header: None,
            connect_to: None,
            matches: None,
        }
    }

    #[test]
    fn routes_lose_only_the_credentials_that_are_not_set() {
        let routes = vec![
            route("a.test", Some("SET")),
            route("b.test", Some("UNSET")),
            route("c.test", None),
        ];
        let report = crate::Recorded::default();
        let out = without_missing_tokens(&routes, |k| k == "SET", &report);
        assert_eq!(
            out,
            vec![
                route("a.test", Some("SET")),
                route("b.test", None),
                route("c.test", None)
            ]
        );
        assert_eq!(
            report.lines(),
            vec![
                "warning: UNSET is not set, so requests to b.test go out without credentials; export it before `start` (the agent never sees it)"
            ]
        );
    }

    #[test]
    fn the_manifests_resource_defaults_are_the_backends() {
        assert_eq!(
            resources(&manifest::ResolvedResources::default()),
            backend::Resources::default()
        );
        assert_eq!(
            resources(&manifest::ResolvedResources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                dangerously_allow_unenforced: true,
            }),
            backend::Resources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                allow_unenforced: true,
            }
        );
    }

    #[test]
    fn resume_continues_the_conversation() {
        assert_eq!(
            agent_command(contract::Provider::Claude, Some("fix it"), false),
            vec!["claude", "--dangerously-skip-permissions", "fix it"]
        );
        assert_eq!(
            agent_command(contract::Provider::Claude, Some("fix it"), true),
            vec!["claude", "--dangerously-skip-permissions", "--continue"]
        );
        assert_eq!(
            agent_command(contract::Provider::Codex, None, false),
            vec!["codex", "--dangerously-bypass-approvals-and-sandbox"]
        );
    }
}
