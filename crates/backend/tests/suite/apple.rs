//! The apple backend against a fake `container` CLI that behaves like Apple's (its argument
//! parsing, its networks and containers, `inspect`'s JSON, macOS versions without networks,
//! a stopped API server, the faults a version could have). No Mac is available to the
//! project, so these tests are what proves the driver.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backend::apple::fake::{Bug, FakeContainer};
use backend::apple::{AppleBackend, AppleConfig, ContainerCli};
use backend::docker::{ImageSource, SidecarMount, SidecarSpec};
use backend::{Backend, BackendError, BottleStdio, CleanupAction, LaunchSpec};

use super::smolmachines::spec as contract_spec;

pub struct Apple {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub fake: FakeContainer,
    pub backend: AppleBackend,
}

pub const TOKEN: &str = "sk-ant-oat01-never-on-a-command-line";

impl Apple {
    pub fn new() -> Apple {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for d in ["home", "project", "agent-home", "state/ca", "linux"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(
            root.join("state/ca/bundle.pem"),
            "-----BEGIN CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(root.join("linux/bot-bottle"), "#!/bin/false\n").unwrap();
        let fake = FakeContainer::new();
        let mut config = AppleConfig::new(root.join("home"));
        config.init_exe = Some(root.join("linux/bot-bottle"));
        config.agent_image = Some("bot-bottle/agent-claude:0123456789ab".into());
        config.ready_timeout = Duration::from_millis(300);
        let backend = AppleBackend::new(config, Arc::new(fake.clone()));
        Apple {
            _dir: dir,
            root,
            fake,
            backend,
        }
    }

    pub fn spec(&self) -> LaunchSpec {
        let mut spec = contract_spec(&self.root);
        // Docker-like placement: the sidecar listens on its container's side of the network.
        spec.forwards[0].host_unix_socket = PathBuf::from("/unused");
        spec
    }

    pub fn sidecar(&self) -> SidecarSpec {
        SidecarSpec {
            image: "bot-bottle/sidecar:0123456789ab".into(),
            argv: vec![
                "/usr/local/bin/bot-bottle".into(),
                "sidecar".into(),
                "--config".into(),
                "/bb/state/sidecar.json".into(),
            ],
            env: [("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN".to_owned(), TOKEN.to_owned())].into(),
            mounts: vec![SidecarMount {
                host: self.root.join("home"),
                inside: self.root.join("home"),
                read_only: false,
            }],
            user: "501:20".into(),
            ready_line: Some("ready".into()),
            health: None,
        }
    }
}

fn words(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            let w: Vec<&str> = c.split_whitespace().collect();
            match w.as_slice() {
                ["network" | "system", sub, ..] => format!("{} {sub}", w[0]),
                [sub, ..] => (*sub).to_owned(),
                [] => String::new(),
            }
        })
        .collect()
}

#[test]
fn the_agent_reaches_only_its_sidecar_and_everything_is_deleted_after() {
    let a = Apple::new();
    a.fake.with(|f| f.exit_code = 3);
    let mut bottle = a
        .backend
        .launch_with(&a.spec(), &a.sidecar(), BottleStdio::piped())
        .unwrap();
    let inspect = a
        .fake
        .run(
            &["network", "inspect", "bb-demo-1a2b3-agent"].map(String::from),
            &[],
        )
        .unwrap();
    assert!(
        inspect.stdout.contains("\"hostOnly\""),
        "{}",
        inspect.stdout
    );
    let agent = a
        .fake
        .run(&["inspect", "bb-demo-1a2b3-agent"].map(String::from), &[])
        .unwrap();
    let agent: serde_json::Value = serde_json::from_str(&agent.stdout).unwrap();
    assert_eq!(
        agent[0]["configuration"]["networks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let sidecar = a
        .fake
        .run(&["inspect", "bb-demo-1a2b3-sidecar"].map(String::from), &[])
        .unwrap();
    let sidecar: serde_json::Value = serde_json::from_str(&sidecar.stdout).unwrap();
    assert_eq!(
        sidecar[0]["configuration"]["networks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(bottle.wait().unwrap().code, 3);
    assert_eq!(
        words(&a.fake.calls()),
        [
            "system status",
            "network create",
            "network create",
            "network inspect",
            "run",
            "logs",
            "inspect",
            "create",
            "inspect",
            "start",
            "inspect",
            "kill",
            // (the test's own inspects)
            "network inspect",
            "inspect",
            "inspect",
            "delete",
            "network delete"
        ]
    );
    assert_eq!(
        a.fake.with(|f| f.released.clone()),
        ["bb-demo-1a2b3-agent SIGUSR1"]
    );
    // The token reached the sidecar through the environment only.
    assert!(
        a.fake
            .with(|f| f.env_given.contains("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN"))
    );
    for call in a.fake.calls() {
        assert!(!call.contains(TOKEN), "a token on a command line: {call}");
    }
    let (networks, containers) = a.fake.resources();
    assert!(
        networks.is_empty() && containers.is_empty(),
        "{networks:?} {containers:?}"
    );
}

#[test]
fn any_doubt_about_the_isolation_refuses_before_the_agent_is_released() {
    let cases = [
        (Bug::InternalIgnored, "not hostOnly"),
        (Bug::AddsDefaultNetwork, "alone"),
        (Bug::DropsReadOnly, "mounts"),
        (Bug::SidecarNeverReady, "did not print `ready`"),
    ];
    for (bug, expect) in cases {
        let a = Apple::new();
        a.fake.with(|f| f.bugs.push(bug.clone()));
        let err = a
            .backend
            .launch_with(&a.spec(), &a.sidecar(), BottleStdio::piped())
            .err()
            .unwrap_or_else(|| panic!("{bug:?} launched"));
        assert!(err.to_string().contains(expect), "{bug:?}: {err}");
        let calls = words(&a.fake.calls());
        assert!(!calls.contains(&"start".to_owned()), "{bug:?}: {calls:?}");
        assert!(a.fake.with(|f| f.released.is_empty()), "{bug:?}");
        let (networks, containers) = a.fake.resources();
        assert!(
            networks.is_empty() && containers.is_empty(),
            "{bug:?}: {networks:?} {containers:?}"
        );
    }
}

/// The teardown steps (`delete`, `network delete`) among the calls, whole.
fn deletes(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.starts_with("delete ") || c.starts_with("network delete "))
        .cloned()
        .collect()
}

#[test]
fn a_failed_set_up_deletes_only_what_it_created() {
    // A delete of an object set-up never made fails (`not found`), and its warning would be
    // printed before the error that stopped set-up: teardown names only what was created.
    // A create command that failed may still have left its object (`run` creates, then
    // starts): that one is deleted too, quietly.
    let networks = "network delete bb-demo-1a2b3-agent bb-demo-1a2b3-egress";
    type Fault = Box<dyn Fn(&FakeContainer)>;
    let cases: Vec<(&str, Fault, Vec<&str>)> = vec![
        (
            "the first network create fails",
            Box::new(|f| {
                f.with(|s| s.fail.insert("network create".into(), "boom".into()));
            }),
            vec!["network delete bb-demo-1a2b3-agent"],
        ),
        (
            "the agent network is not host-only",
            Box::new(|f| f.with(|s| s.bugs.push(Bug::InternalIgnored))),
            vec![networks],
        ),
        (
            "the sidecar's run fails",
            Box::new(|f| {
                f.with(|s| s.fail.insert("run".into(), "boom".into()));
            }),
            vec!["delete --force bb-demo-1a2b3-sidecar", networks],
        ),
        (
            "the sidecar never gets ready",
            Box::new(|f| f.with(|s| s.bugs.push(Bug::SidecarNeverReady))),
            vec!["delete --force bb-demo-1a2b3-sidecar", networks],
        ),
        (
            "the agent's mounts are not read-only",
            Box::new(|f| f.with(|s| s.bugs.push(Bug::DropsReadOnly))),
            vec![
                "delete --force bb-demo-1a2b3-agent bb-demo-1a2b3-sidecar",
                networks,
            ],
        ),
    ];
    for (case, fault, expect) in cases {
        let a = Apple::new();
        fault(&a.fake);
        assert!(
            a.backend
                .launch_with(&a.spec(), &a.sidecar(), BottleStdio::piped())
                .is_err(),
            "{case}: launched"
        );
        assert_eq!(deletes(&a.fake.calls()), expect, "{case}");
        a.fake.with(|s| s.fail.clear());
        let (networks, containers) = a.fake.resources();
        assert!(
            networks.is_empty() && containers.is_empty(),
            "{case}: {networks:?} {containers:?}"
        );
    }
}

#[test]
fn an_old_macos_or_a_stopped_api_server_refuses_with_the_fix() {
    let a = Apple::new();
    a.fake.with(|f| f.macos = 15);
    let err = a
        .backend
        .launch_with(&a.spec(), &a.sidecar(), BottleStdio::piped())
        .err()
        .unwrap();
    assert!(err.to_string().contains("require macOS 26"), "{err}");
    assert!(a.fake.resources().1.is_empty());

    let a = Apple::new();
    a.fake.with(|f| f.api_server_running = false);
    let err = a
        .backend
        .launch_with(&a.spec(), &a.sidecar(), BottleStdio::piped())
        .err()
        .unwrap();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("container system start"), "{err}");
    assert_eq!(words(&a.fake.calls()), ["system status"]);
}

#[test]
fn images_are_built_from_the_docker_backend_s_dockerfiles_once() {
    let a = Apple::new();
    let source = ImageSource::provider("claude", None).unwrap();
    let tag = a.backend.build_image(&source).unwrap();
    assert!(tag.starts_with("bot-bottle/"), "{tag}");
    let again = a.backend.build_image(&source).unwrap();
    assert_eq!(tag, again);
    let builds = words(&a.fake.calls())
        .iter()
        .filter(|c| *c == "build")
        .count();
    assert_eq!(builds, 1, "{:?}", a.fake.calls());
    let build = a
        .fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("build"))
        .unwrap();
    assert!(
        build.contains("--file") && build.contains(&format!("--tag {tag}")),
        "{build}"
    );
}

#[test]
fn start_hands_the_sidecar_and_image_through_the_backend_trait() {
    let a = Apple::new();
    let backend: &dyn Backend = &a.backend;
    assert_eq!(
        backend.sidecar_placement(),
        backend::SidecarPlacement::BackendContainer
    );
    // Without a sidecar there is nothing to start.
    let err = backend
        .launch(&a.spec(), BottleStdio::piped())
        .err()
        .unwrap();
    assert!(matches!(err, BackendError::Unsupported(_)), "{err}");
    assert!(a.fake.calls().is_empty());
    // `start`'s path: the image it built, the sidecar it specified.
    let mut bottle = backend
        .launch_beside(
            &a.spec(),
            "bot-bottle/agent-built:feedface0001",
            &a.sidecar(),
            BottleStdio::piped(),
        )
        .unwrap();
    assert_eq!(bottle.wait().unwrap().code, 0);
    let create = a
        .fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("create "))
        .unwrap();
    assert!(
        create.contains(" bot-bottle/agent-built:feedface0001 "),
        "{create}"
    );
}

#[test]
fn cleanup_removes_what_a_dead_launcher_left_networks_included_and_spares_the_rest() {
    let a = Apple::new();
    // A bottle whose launcher died: nothing of it was torn down.
    let dead = a
        .backend
        .launch_with(&a.spec(), &a.sidecar(), BottleStdio::piped())
        .unwrap();
    std::mem::forget(dead);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let dir = a.root.join("home/run/apple/demo-1a2b3");
    std::fs::write(dir.join("launcher.pid"), gone.to_string()).unwrap();
    // A bottle whose launcher (this process) is alive, and a network of the user's that only
    // looks like one of bot-bottle's.
    let mut live_spec = a.spec();
    live_spec.identity = "live-4c5d6".into();
    let mut live = a
        .backend
        .launch_with(&live_spec, &a.sidecar(), BottleStdio::piped())
        .unwrap();
    a.fake
        .run(
            &["network", "create", "bb-mine-agent"].map(String::from),
            &[],
        )
        .unwrap();
    // And a stopped container of the user's named like one of bot-bottle's, without its label:
    // cleanup judges by the label it gave (as for networks), never by a name alone.
    a.fake
        .run(
            &["create", "--name", "bb-mine-sidecar", "alpine", "true"].map(String::from),
            &[],
        )
        .unwrap();

    let listed = a.backend.list().unwrap();
    let orphaned: Vec<(&str, bool)> = listed
        .iter()
        .map(|b| (b.identity.as_str(), b.orphaned))
        .collect();
    assert_eq!(orphaned, [("demo-1a2b3", true), ("live-4c5d6", false)]);

    let dry = a.backend.cleanup(true).unwrap();
    assert_eq!(a.fake.resources().0.len(), 5, "a dry run removes nothing");
    assert_eq!(a.fake.resources().1.len(), 5, "a dry run removes nothing");
    let actions = a.backend.cleanup(false).unwrap();
    assert_eq!(dry, actions);
    assert_eq!(
        actions,
        [
            CleanupAction::KilledOrphan {
                identity: "demo-1a2b3".into()
            },
            CleanupAction::RemovedNetwork {
                name: "bb-demo-1a2b3-agent".into()
            },
            CleanupAction::RemovedNetwork {
                name: "bb-demo-1a2b3-egress".into()
            },
            CleanupAction::RemovedRuntimeDir {
                identity: "demo-1a2b3".into(),
                path: dir.clone()
            },
        ]
    );
    assert!(!dir.exists());
    let (networks, containers) = a.fake.resources();
    assert_eq!(
        networks,
        [
            "bb-live-4c5d6-agent",
            "bb-live-4c5d6-egress",
            "bb-mine-agent"
        ]
    );
    assert_eq!(
        containers,
        [
            "bb-live-4c5d6-agent",
            "bb-live-4c5d6-sidecar",
            "bb-mine-sidecar"
        ]
    );
    // The live bottle still ends cleanly, and takes its networks with it.
    assert_eq!(live.wait().unwrap().code, 0);
    assert_eq!(
        a.fake.resources(),
        (
            vec!["bb-mine-agent".to_owned()],
            vec!["bb-mine-sidecar".to_owned()]
        )
    );
    assert!(a.backend.cleanup(false).unwrap().is_empty());
}
