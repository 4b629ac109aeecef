mod bad_input;
mod edit;
mod examples;
mod extends_errors;
mod fold;
mod forms;
mod validation;

use std::collections::BTreeMap;
use std::path::Path;

use manifest::{Manifest, ResolvedBottle};

/// A file-form manifest read from `m.yaml`, with `~` = `/home/u`.
pub fn manifest(yaml: &str) -> Manifest {
    Manifest::from_yaml("m.yaml", yaml, Some(Path::new("/home/u")))
}

/// The resolved bottle `name`; panics with the manifest's errors if it has any.
pub fn bottle(yaml: &str, name: &str) -> ResolvedBottle {
    let m = manifest(yaml);
    match m.bottle(name) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// Every error of the manifest, rendered as `path:line:col: message`.
pub fn errors(yaml: &str) -> Vec<String> {
    manifest(yaml)
        .errors()
        .iter()
        .map(|d| d.to_string())
        .collect()
}

/// A bottle with every default and nothing else.
pub fn default_bottle(name: &str) -> ResolvedBottle {
    ResolvedBottle {
        name: name.to_owned(),
        agent_provider: manifest::AgentProvider::Stock(manifest::ProviderKind::Claude),
        supervise: true,
        env: BTreeMap::new(),
        git_gate: manifest::ResolvedGitGate::default(),
        egress: manifest::ResolvedEgress::default(),
        resources: manifest::ResolvedResources::default(),
        dangerously_run_as_host_root: false,
        kubernetes: manifest::ResolvedKubernetes::default(),
    }
}

pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn route(host: &str) -> policy::Route {
    policy::Route {
        host: host.to_owned(),
        websocket: None,
        dangerously_raw_paths: None,
        expires: None,
        uses: None,
        grant: None,
        after_grant: None,
        dlp: None,
        dlp_allow: None,
        dlp_allow_grants: None,
        dangerously_dlp_pass_unscannable: None,
        port: None,
        auth_scheme: None,
        token_env: None,
        auth_header: None,
        connect_to: None,
        matches: None,
    }
}
