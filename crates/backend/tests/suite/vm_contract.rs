//! The agent's contract on the CLI-driven backends: the same `LaunchSpec` gives the agent the
//! same environment, working directory, sidecar addresses (`127.0.0.1:<port>`) and read-only
//! files on smolmachines and apple as on docker (and native, which takes the spec as is),
//! checked on the commands the drivers run (the guest init's spec in `smolvm machine exec`,
//! the container init's configuration in `container create`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use backend::inbottle::docker_init::InitConfig;
use backend::inbottle::smolvm_guest::GuestSpec;
use backend::{Backend, BottleStdio, LaunchSpec};
use pretty_assertions::assert_eq;

use super::apple::Apple;
use super::smolmachines::Smol;

/// What the agent sees of its bottle.
#[derive(Debug, PartialEq, Eq)]
struct Contract {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    loopback_ports: Vec<u16>,
    files: Vec<PathBuf>,
}

fn of_spec(spec: &LaunchSpec) -> Contract {
    Contract {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.workspace.inside.clone(),
        loopback_ports: spec.forwards.iter().map(|f| f.inside_port).collect(),
        files: spec.files.iter().map(|f| f.inside.clone()).collect(),
    }
}

fn last_arg(call: &str) -> &str {
    call.rsplit(' ').next().unwrap()
}

#[test]
fn smolmachines_apple_and_docker_give_the_agent_the_same_contract() {
    let Some(s) = Smol::new((1, 9, 2)) else {
        return;
    };
    let spec = s.spec();
    let want = of_spec(&spec);

    // docker: its init's configuration (the files are bound at their `inside` paths).
    let docker: InitConfig = backend::docker::spec::init_config(&spec);
    let docker = Contract {
        argv: docker.argv,
        env: docker.env,
        cwd: docker.cwd,
        loopback_ports: docker.forwards.iter().map(|f| f.port).collect(),
        files: spec.files.iter().map(|f| f.inside.clone()).collect(),
    };
    assert_eq!(docker, want);

    // smolmachines: the guest spec on `smolvm machine exec`'s command line.
    let mut bottle = s.backend.launch(&spec, BottleStdio::piped()).unwrap();
    let exec = s
        .fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("machine exec"))
        .unwrap();
    let guest: GuestSpec = serde_json::from_str(last_arg(&exec)).unwrap();
    assert_eq!((guest.uid, guest.gid), (1000, 1000));
    assert_eq!(guest.pids, spec.resources.pids);
    let smol = Contract {
        argv: guest.argv,
        env: guest.env,
        cwd: guest.cwd,
        loopback_ports: guest.forwards.iter().map(|f| f.port).collect(),
        files: guest.files.iter().map(|f| f.inside.clone()).collect(),
    };
    assert_eq!(smol, want);
    bottle.wait().unwrap();

    // apple: the container init's configuration on `container create`, files as mounts.
    let a = Apple::new();
    let mut apple_spec = a.spec();
    apple_spec.workspace = spec.workspace.clone();
    apple_spec.workspace.host = a.root.join("project");
    let mut bottle = a
        .backend
        .launch_with(&apple_spec, &a.sidecar(), BottleStdio::piped())
        .unwrap();
    let create = a
        .fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("create "))
        .unwrap();
    let init: InitConfig = serde_json::from_str(last_arg(&create)).unwrap();
    let files: Vec<PathBuf> = apple_spec
        .files
        .iter()
        .filter(|f| create.contains(&format!("target={},readonly", f.inside.display())))
        .map(|f| f.inside.clone())
        .collect();
    assert!(create.contains("--uid 1000 --gid 1000"), "{create}");
    let apple = Contract {
        argv: init.argv,
        env: init.env,
        cwd: init.cwd,
        loopback_ports: init.forwards.iter().map(|f| f.port).collect(),
        files,
    };
    assert_eq!(apple, want);
    bottle.wait().unwrap();
}

#[test]
fn both_backends_are_selectable_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let options = backend::OpenOptions::new(dir.path(), "/usr/local/bin/bot-bottle");
    for name in ["smolmachines", "apple"] {
        let kind = backend::BackendKind::parse(name).unwrap();
        assert!(kind.is_built());
        let opened = backend::open(kind, &options).unwrap();
        assert_eq!(opened.kind(), kind);
        // On this Linux machine neither is usable, and each says why with a fix.
        let status = opened.preflight();
        assert!(!status.usable, "{}", status.line());
        assert!(status.line().contains("fix:"), "{}", status.line());
    }
}
