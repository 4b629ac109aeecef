//! The backend's decisions against the recording engine (`super::super::fake`): what launch
//! creates in which order, what a failed create or a dropped limit leads to, what teardown
//! removes, what a dead sidecar does, which runtime is chosen, what cleanup removes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerSummary, Runtime as RegisteredRuntime, SystemInfo};
use pretty_assertions::assert_eq;

use super::*;
use crate::docker::fake::RecordingEngine;
use crate::spec::{Forward, Home, ReadOnlyFile, Resources, Workspace, WorkspaceMode};

const ID: &str = "claude-1a2b3";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn spec() -> LaunchSpec {
    LaunchSpec {
        identity: ID.into(),
        argv: vec!["claude".into()],
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        workspace: Workspace {
            host: "/home/dev/project".into(),
            inside: "/home/dev/project".into(),
            mode: WorkspaceMode::Mount,
        },
        home: Home {
            host: "/home/dev/.bot-bottle/state/claude-1a2b3/home".into(),
            inside: "/home/agent".into(),
        },
        files: vec![ReadOnlyFile {
            host: "/home/dev/.bot-bottle/state/claude-1a2b3/ca/ca.pem".into(),
            inside: "/run/bot-bottle/ca.pem".into(),
        }],
        forwards: vec![Forward {
            inside_port: 3128,
            host_unix_socket: "/unused".into(),
        }],
        interactive: false,
        resources: Resources::default(),
        dangerously_run_as_host_root: false,
    }
}

fn settings() -> AgentSettings {
    AgentSettings {
        image: "bot-bottle/agent-claude:0123456789ab".into(),
        user: "1000:1000".into(),
        init_exe: "/usr/local/bin/bot-bottle".into(),
        init_args: vec!["__docker-init".into()],
        runtime: None,
        gvisor: false,
        read_only_root: true,
        launcher: "boot:4242:99".into(),
        workspace_host: "/home/dev/project".into(),
    }
}

fn sidecar(ready_line: Option<&str>) -> SidecarSpec {
    SidecarSpec {
        image: "bot-bottle/sidecar:0123456789ab".into(),
        argv: vec!["bot-bottle".into(), "sidecar".into()],
        env: BTreeMap::new(),
        mounts: vec![],
        user: "1000:1000".into(),
        ready_line: ready_line.map(str::to_owned),
        health: None,
    }
}

fn launch_with(engine: &RecordingEngine, ready: Option<&str>) -> Result<String, BackendError> {
    let stdio = BottleStdio {
        stdin: StdioMode::Null,
        stdout: StdioMode::Null,
        stderr: StdioMode::Null,
    };
    rt().block_on(launch(
        engine,
        &spec(),
        &sidecar(ready),
        &settings(),
        "bot-bottle/sidecar:0123456789ab",
        stdio,
    ))
    .map(|(id, _)| id)
}

fn lines(calls: &[&str]) -> Vec<String> {
    calls.iter().map(|c| c.replace("ID", ID)).collect()
}

const TEARDOWN: [&str; 7] = [
    "remove_container bot-bottle-firewall-ID",
    "remove_container bot-bottle-ID",
    "stop_container bot-bottle-sidecar-ID t=10",
    "remove_container bot-bottle-sidecar-ID",
    "remove_network bot-bottle-net-ID",
    "remove_network bot-bottle-egress-ID",
    "",
];

#[test]
fn launch_creates_networks_then_the_sidecar_beside_the_agent_and_its_firewall() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.exits.insert(format!("bot-bottle-firewall-{ID}"), 0);
        s.logs.insert(
            format!("bot-bottle-sidecar-{ID}"),
            vec!["booting".into(), "ready".into()],
        );
    });
    let agent = launch_with(&engine, Some("ready")).unwrap();
    assert_eq!(agent, format!("bot-bottle-{ID}"));
    assert_eq!(
        engine.calls(),
        lines(&[
            "host_routes",
            "create_network bot-bottle-net-ID",
            "create_network bot-bottle-egress-ID",
            "create_container bot-bottle-sidecar-ID",
            "connect_network bot-bottle-egress-ID bot-bottle-sidecar-ID",
            "start_container bot-bottle-sidecar-ID",
            "logs bot-bottle-sidecar-ID follow=true",
            "create_container bot-bottle-ID",
            "attach_container bot-bottle-ID",
            "start_container bot-bottle-ID",
            "create_container bot-bottle-firewall-ID",
            "start_container bot-bottle-firewall-ID",
            "wait_exit bot-bottle-firewall-ID",
        ])
    );
    // No inspection of the sidecar: its address is the subnet's, fixed before anything ran.
    let subnet = InternalSubnet::nth(InternalSubnet::first_for(ID));
    let sidecar_ip = subnet.sidecar().to_string();
    let (created, networks) = engine.with(|s| (s.created.clone(), s.created_networks.clone()));
    let ipam = networks[0].ipam.clone().unwrap().config.unwrap();
    assert_eq!(ipam[0].subnet.as_deref(), Some(subnet.cidr().as_str()));
    assert_eq!(
        ipam[0].ip_range.as_deref(),
        Some(subnet.dynamic_range().as_str())
    );
    let endpoint = |name: &str| {
        created[&name.replace("ID", ID)]
            .networking_config
            .clone()
            .unwrap()
            .endpoints_config
            .unwrap()
            .remove(&format!("bot-bottle-net-{ID}"))
            .unwrap()
    };
    assert_eq!(
        endpoint("bot-bottle-sidecar-ID")
            .ipam_config
            .unwrap()
            .ipv4_address,
        Some(sidecar_ip.clone())
    );
    // The agent's address is the daemon's pick from the dynamic range, never the sidecar's.
    assert_eq!(endpoint("bot-bottle-ID").ipam_config, None);
    // The firewall lets the agent reach the sidecar's address and nothing else, and the init
    // relays to that address (no name to resolve through Docker's DNS).
    let firewall = created[&format!("bot-bottle-firewall-{ID}")].clone();
    let script = firewall.cmd.unwrap_or_default().join(" ");
    assert!(
        script.contains(&format!("-d {sidecar_ip}/32 -p tcp --dport 3128 -j ACCEPT")),
        "{script}"
    );
    let agent_cmd = created[&format!("bot-bottle-{ID}")].cmd.clone().unwrap();
    let init: crate::inbottle::docker_init::InitConfig =
        serde_json::from_str(agent_cmd.last().unwrap()).unwrap();
    assert_eq!(init.sidecar_host, sidecar_ip);
}

/// A route table with these route lines (the kernel's format, little-endian hex).
fn table(routes: &str) -> HostRoutes {
    HostRoutes::parse(&format!("{}{routes}", crate::docker::fake::ROUTE_HEADER)).unwrap()
}

/// `a.b.c.d` as `/proc/net/route` prints it (host byte order, little-endian here).
fn le(a: std::net::Ipv4Addr) -> String {
    format!("{:08X}", u32::from_le_bytes(a.octets()))
}

/// A subnet the daemon refuses (another network has it: another bottle's, or anyone's) or
/// that a host route covers is skipped: the next one is asked for, and the sidecar's address,
/// the firewall and the init all follow the subnet that was created.
#[test]
fn the_internal_network_takes_the_next_subnet_that_is_free_on_the_daemon_and_the_host() {
    let first = InternalSubnet::first_for(ID);
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.taken_subnets = vec![InternalSubnet::nth(first).cidr()];
        s.exits.insert(format!("bot-bottle-firewall-{ID}"), 0);
    });
    // The host routes the one after it (little-endian hex, as /proc/net/route prints it).
    let routed = InternalSubnet::nth(first + 1);
    let routes = table(&format!(
        "eth1\t{}\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n",
        le(routed.gateway())
    ));
    let subnet = rt()
        .block_on(create_internal_network(
            &engine,
            ID,
            "boot:4242:99",
            &routes,
        ))
        .unwrap();
    assert_eq!(subnet, InternalSubnet::nth(first + 2));
    let asked: Vec<String> = engine.with(|s| {
        s.created_networks
            .iter()
            .map(|n| {
                n.ipam.clone().unwrap().config.unwrap()[0]
                    .subnet
                    .clone()
                    .unwrap()
            })
            .collect()
    });
    assert_eq!(asked, vec![subnet.cidr()]);
    assert_eq!(
        engine.calls(),
        lines(&[
            "create_network bot-bottle-net-ID",
            "create_network bot-bottle-net-ID"
        ])
    );

    // A host whose LAN or VPN is routed on 172.16.0.0/12: the second range.
    let lan = "tun0\t000010AC\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0\n";
    let elsewhere = RecordingEngine::new();
    let subnet = rt()
        .block_on(create_internal_network(
            &elsewhere,
            ID,
            "boot:4242:99",
            &table(lan),
        ))
        .unwrap();
    assert_eq!(subnet, InternalSubnet::nth(4096));
    assert_eq!(subnet.cidr(), "10.254.0.0/28");
    assert_eq!(elsewhere.calls().len(), 1);
    // Every subnet routed: said so, nothing asked of the daemon.
    let routed = format!("{lan}tun1\t0000FE0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
    let nowhere = RecordingEngine::new();
    let err = rt()
        .block_on(create_internal_network(
            &nowhere,
            ID,
            "boot:4242:99",
            &table(&routed),
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("every /28 of 172.16.0.0/16 and 10.254.0.0/16 overlaps a host route"),
        "{err}"
    );
    assert!(nowhere.calls().is_empty());

    // Every subnet refused: the daemon's own answer, named.
    let full = RecordingEngine::new();
    full.with(|s| {
        s.taken_subnets = (0..InternalSubnet::COUNT)
            .map(|n| InternalSubnet::nth(n).cidr())
            .collect();
    });
    let err = rt()
        .block_on(create_internal_network(
            &full,
            ID,
            "boot:4242:99",
            &HostRoutes::default(),
        ))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not set up the bottle (create the internal network): Pool overlaps with other one on this address space"
    );
    assert_eq!(full.calls().len(), SUBNET_TRIES as usize);
}

/// The routes `launch` avoids are the host's as the engine reads them (canned here, never
/// the test machine's): a route over the identity's first subnet moves the bottle to the next.
#[test]
fn launch_puts_the_internal_network_clear_of_the_hosts_routes() {
    let first = InternalSubnet::nth(InternalSubnet::first_for(ID));
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.exits.insert(format!("bot-bottle-firewall-{ID}"), 0);
        s.routes = Some(format!(
            "{}tun0\t{}\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n",
            crate::docker::fake::ROUTE_HEADER,
            le(first.gateway())
        ));
    });
    launch_with(&engine, None).unwrap();
    let next = InternalSubnet::nth(InternalSubnet::first_for(ID) + 1);
    let networks = engine.with(|s| s.created_networks.clone());
    let ipam = networks[0].ipam.clone().unwrap().config.unwrap();
    assert_eq!(ipam[0].subnet.as_deref(), Some(next.cidr().as_str()));
    let firewall = engine.with(|s| s.created[&format!("bot-bottle-firewall-{ID}")].clone());
    let script = firewall.cmd.unwrap_or_default().join(" ");
    assert!(
        script.contains(&format!("-d {}/32 -p tcp", next.sidecar())),
        "{script}"
    );
}

/// No subnet is picked without the host's routes: a table that cannot be read, that is not
/// the kernel's, or whose routes cover every candidate refuses the bottle before anything
/// is created (the failed launch's teardown by name finds nothing).
#[test]
fn launch_refuses_the_bottle_without_a_subnet_clear_of_the_hosts_routes() {
    let refused = |routes: Option<String>| {
        let engine = RecordingEngine::new();
        engine.with(|s| s.routes = routes);
        let err = launch_with(&engine, None).unwrap_err();
        let calls = engine.calls();
        assert!(
            !calls.iter().any(|c| c.starts_with("create_container")
                || c.starts_with("create_network bot-bottle-net-")),
            "no internal network, no container: {calls:?}"
        );
        assert_eq!(calls[0], "host_routes");
        assert_eq!(calls[calls.len() - 6..].to_vec(), lines(&TEARDOWN[..6]));
        (err.to_string(), calls.len())
    };
    // Unreadable or not the kernel's: refused before anything is asked of the daemon.
    let refused_first = |routes: Option<String>| {
        let (err, calls) = refused(routes);
        assert_eq!(calls, 1 + 6, "{err}");
        err
    };
    assert_eq!(
        refused_first(None),
        "could not set up the bottle (create the internal network): cannot read the host's routes from /proc/net/route: Permission denied; docker bottles put their internal network on a subnet no host route covers, so none is picked without them: run bot-bottle where /proc/net/route is the host's and readable (the docker daemon must be local)"
    );
    let empty = refused_first(Some(String::new()));
    assert!(
        empty.contains(
            "/proc/net/route: its first line is not the kernel's route table header: ``;"
        ),
        "{empty}"
    );
    let cut = refused_first(Some(format!(
        "{}eth0\t0002000A\t00000000\n",
        crate::docker::fake::ROUTE_HEADER
    )));
    assert!(
        cut.contains("/proc/net/route: line 2 is not a route: `eth0\t0002000A\t00000000`;"),
        "{cut}"
    );
    // Both ranges routed (a /12 over the first, a /16 over the second): the egress network,
    // asked for beside the internal one, is removed again.
    let (everywhere, _) = refused(Some(format!(
        "{}tun0\t000010AC\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0\n\
         tun1\t0000FE0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n",
        crate::docker::fake::ROUTE_HEADER
    )));
    assert_eq!(
        everywhere,
        "could not set up the bottle (create the internal network): every /28 of 172.16.0.0/16 and 10.254.0.0/16 overlaps a host route (/proc/net/route); docker bottles need a /28 there that no route covers for their internal network"
    );
}

#[test]
fn a_failed_create_removes_every_object_of_the_bottle() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.fail.insert(
            format!("create_container bot-bottle-{ID}"),
            "no such image".into(),
        );
    });
    let err = launch_with(&engine, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not set up the bottle (create the agent container): no such image"
    );
    let calls = engine.calls();
    let after = calls
        .iter()
        .position(|c| c == &format!("create_container bot-bottle-{ID}"))
        .unwrap();
    assert_eq!(calls[after + 1..].to_vec(), lines(&TEARDOWN[..6]));
}

#[test]
fn a_limit_the_daemon_drops_refuses_the_bottle_and_tears_it_down() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.warnings.insert(
            format!("bot-bottle-{ID}"),
            vec!["Your kernel does not support memory swappiness capabilities or the cgroup is not mounted. Memory swappiness discarded.".into(),
                 "Your kernel does not support pids limit capabilities or the cgroup is not mounted. PIDs limit discarded.".into()],
        );
    });
    let err = launch_with(&engine, None).unwrap_err();
    let BackendError::Setup { stage, message } = &err else {
        panic!("{err}")
    };
    assert_eq!(stage, "resources");
    assert!(
        message.contains("dangerously_allow_unenforced"),
        "{message}"
    );
    let calls = engine.calls();
    assert!(
        !calls.contains(&format!("start_container bot-bottle-{ID}")),
        "the agent never starts: {calls:?}"
    );
    assert_eq!(calls[calls.len() - 6..].to_vec(), lines(&TEARDOWN[..6]));
}

#[test]
fn a_sidecar_that_exits_before_its_ready_line_fails_the_launch_with_its_output() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.logs.insert(
            format!("bot-bottle-sidecar-{ID}"),
            vec!["error: upstream unreachable".into()],
        );
    });
    let err = launch_with(&engine, Some("ready")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not set up the bottle (start the sidecar container): the sidecar exited before it was ready; its output ends with:\nerror: upstream unreachable"
    );
}

#[test]
fn a_failed_firewall_refuses_the_bottle() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.exits.insert(format!("bot-bottle-firewall-{ID}"), 3);
        s.logs.insert(
            format!("bot-bottle-firewall-{ID}"),
            vec!["iptables: not found".into()],
        );
    });
    let err = launch_with(&engine, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not set up the bottle (close the bottle's network): the firewall container exited with 3: iptables: not found; the sidecar image needs iptables and a kernel with netfilter"
    );
    let calls = engine.calls();
    assert_eq!(calls[calls.len() - 6..].to_vec(), lines(&TEARDOWN[..6]));
}

#[test]
fn a_dead_sidecar_stops_the_agent_and_is_told() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.exits.insert(format!("bot-bottle-sidecar-{ID}"), 137);
    });
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let down: SidecarDown = {
        let told = told.clone();
        std::sync::Arc::new(move |how: &str| told.lock().unwrap().push(how.to_owned()))
    };
    let code = rt()
        .block_on(watch_sidecar(
            &engine,
            &format!("bot-bottle-{ID}"),
            &format!("bot-bottle-sidecar-{ID}"),
            Some(&down),
            Duration::from_secs(7),
        ))
        .unwrap();
    assert_eq!(code, 143);
    assert_eq!(
        *told.lock().unwrap(),
        vec!["was killed by signal 9 (SIGKILL)".to_owned()]
    );
    assert!(
        engine
            .calls()
            .contains(&format!("stop_container bot-bottle-{ID} t=7")),
        "{:?}",
        engine.calls()
    );
}

#[test]
fn an_agent_that_ends_first_is_not_stopped_and_a_live_sidecar_is_not_reported() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.exits.insert(format!("bot-bottle-{ID}"), 0);
    });
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let down: SidecarDown = {
        let told = told.clone();
        std::sync::Arc::new(move |how: &str| told.lock().unwrap().push(how.to_owned()))
    };
    let code = rt()
        .block_on(watch_sidecar(
            &engine,
            &format!("bot-bottle-{ID}"),
            &format!("bot-bottle-sidecar-{ID}"),
            Some(&down),
            Duration::from_secs(7),
        ))
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(*told.lock().unwrap(), Vec::<String>::new());
    assert!(
        !engine
            .calls()
            .iter()
            .any(|c| c.starts_with("stop_container")),
        "{:?}",
        engine.calls()
    );
}

#[test]
fn teardown_stops_the_sidecar_gracefully_and_removes_everything_by_name() {
    let engine = RecordingEngine::new();
    rt().block_on(teardown(&engine, &Names::new(ID)));
    assert_eq!(engine.calls(), lines(&TEARDOWN[..6]));
}

#[test]
fn the_trash_removal_names_every_object_it_could_not_remove_and_removes_the_rest() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.fail.insert(
            format!("remove_container bot-bottle-{ID}"),
            "device busy".into(),
        );
        s.fail.insert(
            format!("remove_network bot-bottle-egress-{ID}"),
            "has active endpoints".into(),
        );
    });
    let err = rt()
        .block_on(remove_objects(&engine, &Names::new(ID)))
        .unwrap_err();
    assert_eq!(
        err,
        format!(
            "cannot remove the container bot-bottle-{ID}: device busy; cannot remove the network bot-bottle-egress-{ID}: has active endpoints"
        )
    );
    // Everything else went, in the teardown's order.
    assert_eq!(engine.calls(), lines(&TEARDOWN[..6]));
    // Gone already (a second remover, or `cleanup`): not an error.
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.fail_not_found = true;
    });
    rt().block_on(remove_objects(&engine, &Names::new(ID)))
        .unwrap();
}

fn info(default: &str, runtimes: &[(&str, &str, &[&str])]) -> SystemInfo {
    SystemInfo {
        default_runtime: Some(default.to_owned()),
        runtimes: Some(
            runtimes
                .iter()
                .map(|(name, path, args)| {
                    (
                        (*name).to_owned(),
                        RegisteredRuntime {
                            path: Some((*path).to_owned()),
                            runtime_args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
                            ..Default::default()
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[test]
fn the_runtime_is_chosen_from_what_the_daemon_lists() {
    let choose = |info: SystemInfo, choice: RuntimeChoice| {
        let engine = RecordingEngine::new();
        engine.with(|s| s.info = info);
        rt().block_on(choose_runtime(&engine, &choice))
            .map(|c| (c.runtime, c.gvisor))
    };
    assert_eq!(
        choose(
            info(
                "runc",
                &[
                    ("runc", "runc", &[]),
                    ("runsc", "/usr/bin/runsc", &["--network=host"])
                ]
            ),
            RuntimeChoice::Auto
        )
        .unwrap(),
        (Some("runsc".to_owned()), true)
    );
    assert_eq!(
        choose(info("runc", &[("runc", "runc", &[])]), RuntimeChoice::Auto).unwrap(),
        (None, false)
    );
    let refused = choose(
        info("runc", &[("runc", "runc", &[])]),
        RuntimeChoice::Named("runsc".into()),
    )
    .unwrap_err();
    assert!(
        matches!(
            refused,
            BackendError::Unavailable {
                backend: BackendKind::Docker,
                ..
            }
        ),
        "{refused}"
    );
}

fn container(name: &str, role: &str, running: bool, launcher: Option<&str>) -> ContainerSummary {
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_IDENTITY.to_owned(), ID.to_owned()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ]);
    if let Some(l) = launcher {
        labels.insert(LABEL_LAUNCHER.to_owned(), l.to_owned());
    }
    ContainerSummary {
        id: Some(name.to_owned()),
        names: Some(vec![format!("/{name}")]),
        labels: Some(labels),
        state: Some(if running {
            ContainerSummaryStateEnum::RUNNING
        } else {
            ContainerSummaryStateEnum::EXITED
        }),
        ..Default::default()
    }
}

#[test]
fn cleanup_kills_orphans_of_dead_launchers_and_leaves_what_it_cannot_judge() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.containers = vec![
            // Its launcher ran on another boot: an orphan.
            container(
                "bot-bottle-claude-1a2b3",
                "agent",
                true,
                Some("another-boot:1:1"),
            ),
            // No launcher label and running: cleanup cannot judge it.
            container("bot-bottle-sidecar-claude-1a2b3", "sidecar", true, None),
        ];
    });
    let actions = rt().block_on(cleanup(&engine, false)).unwrap();
    assert_eq!(
        actions,
        vec![
            CleanupAction::KilledOrphan {
                identity: ID.to_owned()
            },
            CleanupAction::RemovedContainer {
                name: "bot-bottle-claude-1a2b3".to_owned()
            },
        ]
    );
    let removed: Vec<String> = engine
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("remove_"))
        .collect();
    assert_eq!(
        removed,
        vec!["remove_container bot-bottle-claude-1a2b3".to_owned()]
    );
}

/// A container run from one of our images by someone else inherits the image's labels
/// (managed, an image role, no identity), or may carry a bottle's labels under a name that is
/// not the bottle's: none of it is cleanup's to remove, running or not.
#[test]
fn cleanup_leaves_containers_it_did_not_create_alone() {
    let from_image = |name: &str, running: bool| {
        let mut c = container(name, "sidecar-image", running, None);
        c.labels.as_mut().unwrap().remove(LABEL_IDENTITY);
        c
    };
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.containers = vec![
            from_image("bbsi1x1-bb-demo-1a2b3-sidecar", false),
            from_image("bbsi1x1-bb-demo-1a2b3-agent", true),
            // A bottle's labels, not a bottle's name.
            container("not-a-bottle", "agent", false, Some("another-boot:1:1")),
        ];
    });
    let actions = rt().block_on(cleanup(&engine, false)).unwrap();
    assert_eq!(actions, vec![]);
    assert!(
        !engine.calls().iter().any(|c| c.starts_with("remove_")),
        "{:?}",
        engine.calls()
    );
}

#[test]
fn cleanup_dry_run_removes_nothing() {
    let engine = RecordingEngine::new();
    engine.with(|s| {
        s.containers = vec![container(
            "bot-bottle-claude-1a2b3",
            "agent",
            false,
            Some("another-boot:1:1"),
        )];
    });
    let actions = rt().block_on(cleanup(&engine, true)).unwrap();
    assert_eq!(
        actions,
        vec![CleanupAction::RemovedContainer {
            name: "bot-bottle-claude-1a2b3".to_owned()
        }]
    );
    assert!(
        !engine.calls().iter().any(|c| c.starts_with("remove_")),
        "{:?}",
        engine.calls()
    );
}

#[test]
fn stop_signals_agent_then_sidecar_and_says_when_nothing_ran() {
    let engine = RecordingEngine::new();
    assert!(
        rt().block_on(stop(&engine, ID, Duration::from_secs(5)))
            .unwrap()
    );
    assert_eq!(
        engine.calls(),
        lines(&[
            "inspect_container bot-bottle-ID",
            "stop_container bot-bottle-ID t=5",
            "stop_container bot-bottle-sidecar-ID t=5",
        ])
    );
    let gone = RecordingEngine::new();
    gone.with(|s| {
        s.exits.insert(format!("bot-bottle-{ID}"), 0);
    });
    assert!(
        !rt()
            .block_on(stop(&gone, ID, Duration::from_secs(5)))
            .unwrap()
    );
    let missing = RecordingEngine::new();
    missing.with(|s| s.fail_not_found = true);
    assert!(
        !rt()
            .block_on(stop(&missing, ID, Duration::from_secs(5)))
            .unwrap()
    );
    // A daemon that fails to answer is said, not taken for "nothing ran".
    let failing = RecordingEngine::new();
    failing.with(|s| {
        s.fail.insert(
            format!("inspect_container bot-bottle-{ID}"),
            "dockerd is shutting down".into(),
        );
    });
    let err = rt()
        .block_on(stop(&failing, ID, Duration::from_secs(5)))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not set up the bottle (stop the bottle): dockerd is shutting down"
    );
    assert_eq!(failing.calls(), lines(&["inspect_container bot-bottle-ID"]));
}

/// A launcher label is judged only when it is whole: this process's is alive, another
/// boot's is gone, and one with an empty boot id or start time (unreadable when it was
/// made) cannot be judged, so it counts as alive.
#[test]
fn a_launcher_label_with_an_empty_field_is_never_judged_gone() {
    let ours = launcher_label();
    let (boot, rest) = ours.split_once(':').unwrap();
    let (pid, start) = rest.split_once(':').unwrap();
    assert!(!boot.is_empty() && !start.is_empty(), "{ours}");
    assert!(!launcher_gone(Some(&ours)));
    assert!(launcher_gone(Some(&format!("not-this-boot:{pid}:{start}"))));
    assert!(!launcher_gone(Some(&format!("{boot}:{pid}:"))));
    assert!(!launcher_gone(Some(&format!(":{pid}:{start}"))));
    assert!(!launcher_gone(None));
    assert!(!launcher_gone(Some(&"garbage".to_owned())));
}

#[test]
fn a_sidecar_end_is_said_as_for_a_native_bundle() {
    assert_eq!(
        describe_exit(137, false),
        "was killed by signal 9 (SIGKILL)"
    );
    assert_eq!(
        describe_exit(143, false),
        "was killed by signal 15 (SIGTERM)"
    );
    assert_eq!(describe_exit(1, false), "exited with status 1");
    assert_eq!(describe_exit(0, false), "exited with status 0");
    assert_eq!(
        describe_exit(137, true),
        "was killed by the kernel's OOM killer (out of memory)"
    );
}

fn sidecar_source() -> (ImageSource, String) {
    let source = ImageSource::sidecar(Some("debian:bookworm-slim"));
    let tag = source.tag(&source.input_hash().unwrap());
    (source, tag)
}

#[test]
fn an_image_whose_inputs_are_built_already_is_not_built_again() {
    let engine = RecordingEngine::new();
    let (source, tag) = sidecar_source();
    let built = rt()
        .block_on(build_image(&engine, &source, "sidecar-image", None))
        .unwrap();
    assert_eq!(built, tag);
    assert_eq!(engine.calls(), vec![format!("image_exists {tag}")]);
}

#[test]
fn a_new_sidecar_build_removes_the_older_builds_of_its_repository() {
    let engine = RecordingEngine::new();
    let (source, tag) = sidecar_source();
    engine.with(|s| {
        s.fail
            .insert(format!("image_exists {tag}"), "no such image".into());
        s.images = vec![
            bollard::models::ImageSummary {
                repo_tags: vec![tag.clone()],
                ..Default::default()
            },
            bollard::models::ImageSummary {
                repo_tags: vec!["bot-bottle/sidecar:000000000000".into()],
                ..Default::default()
            },
        ];
    });
    rt().block_on(build_image(&engine, &source, "sidecar-image", None))
        .unwrap();
    assert_eq!(
        engine.calls(),
        vec![
            format!("image_exists {tag}"),
            format!("build_image {tag}"),
            "list_images".to_owned(),
            "remove_image bot-bottle/sidecar:000000000000".to_owned(),
        ]
    );
}

#[test]
fn a_failed_build_says_the_daemons_message_and_keeps_older_builds() {
    let engine = RecordingEngine::new();
    let (source, tag) = sidecar_source();
    engine.with(|s| {
        s.fail
            .insert(format!("image_exists {tag}"), "no such image".into());
        s.fail.insert(
            format!("build_image {tag}"),
            "failed to resolve base image".into(),
        );
    });
    let err = rt()
        .block_on(build_image(&engine, &source, "sidecar-image", None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "could not set up the bottle (build image {tag}): failed to resolve base image\nfull build log:\n"
        )
    );
    assert_eq!(
        engine.calls(),
        vec![format!("image_exists {tag}"), format!("build_image {tag}")]
    );
}
