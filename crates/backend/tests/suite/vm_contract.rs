//! The agent's contract on the CLI-driven backends: the same `LaunchSpec` gives the agent the
//! same command, environment, working directory, sidecar addresses (`127.0.0.1:<port>`),
//! read-only files and writable directories (workspace and home) on smolmachines and apple as
//! on docker (and native, which takes the spec as is), checked on the commands the drivers run
//! (the guest init's spec in `smolvm machine exec` and the `--volume`s of `machine create`;
//! the container init's configuration and the `--mount`s in `container create`; docker's
//! container body).

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
    /// Where the agent can write, sorted.
    writable: Vec<PathBuf>,
}

fn of_spec(spec: &LaunchSpec) -> Contract {
    Contract {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.workspace.inside.clone(),
        loopback_ports: spec.forwards.iter().map(|f| f.inside_port).collect(),
        files: spec.files.iter().map(|f| f.inside.clone()).collect(),
        writable: sorted(vec![
            spec.workspace.inside.clone(),
            spec.home.inside.clone(),
        ]),
    }
}

fn sorted(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths
}

/// The values of every `flag` in a command line.
fn values<'a>(call: &'a str, flag: &str) -> Vec<&'a str> {
    let words: Vec<&str> = call.split(' ').collect();
    words
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1])
        .collect()
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

    // docker: its init's configuration and its container's binds (`host:inside:rw|ro`).
    let docker: InitConfig =
        backend::docker::spec::init_config(&spec, &backend::docker::spec::InternalSubnet::nth(0));
    let settings = backend::docker::spec::AgentSettings {
        image: "bot-bottle/agent-claude:0123456789ab".into(),
        user: "1000:1000".into(),
        init_exe: "/usr/local/bin/bot-bottle".into(),
        init_args: vec!["__docker-init".into()],
        runtime: None,
        gvisor: false,
        read_only_root: true,
        launcher: "boot:1:1".into(),
        workspace_host: spec.workspace.host.clone(),
    };
    let body = backend::docker::spec::agent_container(&spec, &settings, &docker, false).unwrap();
    let binds = body.host_config.unwrap().binds.unwrap();
    let bound = |mode: &str| -> Vec<PathBuf> {
        binds
            .iter()
            .filter_map(|b| b.strip_suffix(mode))
            .filter_map(|b| b.split_once(':'))
            .map(|(_, inside)| PathBuf::from(inside))
            .filter(|inside| !inside.starts_with("/run/bot-bottle"))
            .collect()
    };
    let docker = Contract {
        argv: docker.argv,
        env: docker.env,
        cwd: docker.cwd,
        loopback_ports: docker.forwards.iter().map(|f| f.port).collect(),
        files: bound(":ro"),
        writable: sorted(bound(":rw")),
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
    let create = s
        .fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("machine create"))
        .unwrap();
    let volumes: Vec<PathBuf> = values(&create, "--volume")
        .into_iter()
        .filter(|v| !v.ends_with(":ro"))
        .filter_map(|v| v.split_once(':'))
        .map(|(_, guest)| PathBuf::from(guest))
        .collect();
    assert_eq!((guest.uid, guest.gid), (1000, 1000));
    assert_eq!(guest.pids, spec.resources.pids);
    let smol = Contract {
        argv: guest.argv,
        env: guest.env,
        cwd: guest.cwd,
        loopback_ports: guest.forwards.iter().map(|f| f.port).collect(),
        files: guest.files.iter().map(|f| f.inside.clone()).collect(),
        writable: sorted(volumes),
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
    let mounts = values(&create, "--mount");
    let target = |m: &str| -> Option<PathBuf> {
        m.split(',')
            .find_map(|p| p.strip_prefix("target="))
            .map(PathBuf::from)
            .filter(|t| !t.starts_with("/run/bot-bottle"))
    };
    let files: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.ends_with(",readonly"))
        .filter_map(|m| target(m))
        .collect();
    let writable: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| !m.ends_with(",readonly"))
        .filter_map(|m| target(m))
        .collect();
    assert!(create.contains("--uid 1000 --gid 1000"), "{create}");
    let apple = Contract {
        argv: init.argv,
        env: init.env,
        cwd: init.cwd,
        loopback_ports: init.forwards.iter().map(|f| f.port).collect(),
        files,
        writable: sorted(writable),
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
