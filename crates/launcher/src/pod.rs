//! What a bottle on a cluster needs from the launcher without touching the host: the
//! agent's command, its contract (environment and home files) and the repositories the git
//! gate clones into its workspace. `start --backend kubernetes --dry-run` prints the pod made
//! from this; it writes nothing, creates no CA and reads no secret.

use std::path::Path;

use contract::Endpoints;
use state::Identity;

use crate::{HostEnv, Launch, LaunchError, provider, spec};

/// Where the workspace is inside a pod: the operator's directory is not on the cluster, so
/// the path is fixed, and the gate's clones land in it.
pub const POD_WORKSPACE: &str = "/workspace";
/// Where the combined CA bundle is inside the pod (the image's system bundle replaced).
pub const POD_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the bottle CA certificate alone is inside the pod.
pub const POD_BOTTLE_CA: &str = "/run/bot-bottle/ca.pem";

/// The agent's side of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContract {
    pub argv: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Paths relative to the home, and contents.
    pub home_files: Vec<(String, String)>,
    /// The agent's home inside the pod.
    pub home: String,
    /// The sidecar ports on the pod's loopback (egress, then gate and supervise if used).
    pub ports: Vec<u16>,
    /// (URL through the gate, directory in the workspace) per repository.
    pub clones: Vec<(String, String)>,
    pub resources: backend::Resources,
}

/// The pod contract of `launch` for `identity`.
pub fn pod_contract(
    launch: &Launch,
    identity: &Identity,
    env: &HostEnv,
) -> Result<PodContract, LaunchError> {
    let bottle = &launch.agent.bottle;
    let endpoints = Endpoints::DEFAULT;
    let has_repos = !bottle.git_gate.repos.is_empty();
    let gitconfig = if has_repos {
        gitgate::render_agent_gitconfig(&endpoints.gate_url(), &spec::gate_spec(&bottle.git_gate))
            .map_err(|e| LaunchError::Invalid(format!("cannot write the agent's gitconfig: {e}")))?
    } else {
        spec::render_user_only_gitconfig(&bottle.git_gate.user)
    };
    let kind = provider::of(bottle.agent_provider.kind());
    let home = "/home/agent";
    let contract = contract::build(
        &contract::Input {
            provider: kind,
            identity: identity.to_string(),
            endpoints,
            home: home.into(),
            workspace: POD_WORKSPACE.into(),
            ca_bundle: POD_CA_BUNDLE.into(),
            bottle_ca: POD_BOTTLE_CA.into(),
            gitconfig,
            bottle_env: bottle.env.clone(),
            claude_auth: provider::claude_auth(&provider::routes_for(
                bottle,
                launch.codex_auth(),
                env,
            )),
            codex_auth: launch.codex_auth(),
            opencode_auth: provider::opencode_auth(|k| env.is_set(k)),
            generic: bottle
                .agent_provider
                .generic()
                .map(provider::generic_client),
            instructions: provider::instructions(
                kind,
                &launch.agent.skills,
                Path::new(home),
                bottle.supervise,
            )?,
        },
        |k| env.var(k),
    )?;
    let argv = if launch.command.is_empty() {
        spec::agent_command(kind, launch.agent.prompt.as_deref(), false)
    } else {
        launch.command.clone()
    };
    let mut ports = vec![endpoints.egress];
    if has_repos {
        ports.push(endpoints.gate);
    }
    if bottle.supervise {
        ports.push(endpoints.supervise);
    }
    Ok(PodContract {
        argv,
        env: contract.env,
        home_files: contract
            .home_files
            .into_iter()
            .map(|f| (f.path.display().to_string(), f.contents))
            .collect(),
        home: home.to_owned(),
        ports,
        clones: clones(bottle),
        resources: spec::resources(&bottle.resources),
    })
}

/// (URL through the gate, directory in the workspace) per repository of `bottle`: what the
/// pod's `workspace` init container clones.
pub fn clones(bottle: &manifest::ResolvedBottle) -> Vec<(String, String)> {
    let gate = contract::Endpoints::DEFAULT.gate_url();
    bottle
        .git_gate
        .repos
        .keys()
        .map(|name| (format!("{gate}/{name}.git"), name.clone()))
        .collect()
}
