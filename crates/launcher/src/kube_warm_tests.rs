//! A warm start end to end with the launcher's sender ([`crate::kube::warm_sender`]): the
//! in-memory cluster plays agent-sandbox's pool and claim controllers, and the port-forward
//! to the claimed pod's config port reaches a real `bundle::intake::receive` on loopback,
//! which writes the files as the pod's `bot-bottle intake` does.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use backend::kubernetes::fake::{self, FakeCluster};
use backend::kubernetes::pool::ExtKind;
use backend::kubernetes::{
    ClusterSettings, KubeSidecar, KubernetesBackend, KubernetesConfig, objects,
};
use backend::{
    BottleStdio, Forward, Home, LaunchSpec, ReadOnlyFile, Resources, RunningBottle, StdioMode,
    Workspace, WorkspaceMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "bot-bottle-claude-1a2b3";

fn spec(tmp: &std::path::Path) -> LaunchSpec {
    let home = tmp.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".gitconfig"), "[user]\n\tname = agent\n").unwrap();
    let ca = tmp.join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    LaunchSpec {
        identity: "claude-1a2b3".into(),
        argv: vec!["claude".into()],
        env: BTreeMap::from([("HOME".into(), "/home/agent".into())]),
        workspace: Workspace {
            host: "/nonexistent".into(),
            inside: "/workspace".into(),
            mode: WorkspaceMode::Mount,
        },
        home: Home {
            host: home,
            inside: "/home/agent".into(),
        },
        files: vec![ReadOnlyFile {
            host: ca,
            inside: "/run/bot-bottle/ca.pem".into(),
        }],
        forwards: [3128, 3129]
            .into_iter()
            .map(|inside_port| Forward {
                inside_port,
                host_unix_socket: "/unused".into(),
            })
            .collect(),
        interactive: false,
        resources: Resources::default(),
        dangerously_run_as_host_root: false,
    }
}

fn config() -> KubernetesConfig {
    let mut config = KubernetesConfig::new(
        ClusterSettings {
            namespace: Some("agents".into()),
            ..Default::default()
        },
        "bot-bottle/agent-claude:0123",
    );
    config.sidecar = Some(KubeSidecar {
        image: "bot-bottle/sidecar:0123".into(),
        argv: vec!["bot-bottle".into(), "sidecar".into()],
        env: BTreeMap::new(),
        ready_check: None,
        files: BTreeMap::from([
            ("sidecar.json".into(), b"{}".to_vec()),
            ("token-github".into(), b"ghp_not_a_real_token".to_vec()),
        ]),
        warm_script: Some("exec bot-bottle sidecar --config sidecar.json\n".into()),
    });
    config.warm_send = Some(backend::kubernetes::WarmSender(crate::kube::warm_sender()));
    config.ready_timeout = Duration::from_secs(20);
    config
}

#[test]
fn a_claimed_warm_pod_receives_the_config_through_the_real_intake_and_runs_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_warm_pools();
    cluster.on_create(fake::agent_running());
    let backend = KubernetesBackend::with_cluster(config(), cluster.clone()).unwrap();
    let pool = backend.apply_pool(&spec, 1).unwrap();
    let pod = cluster.pool_sandboxes(&pool).pop().unwrap();
    // The pod's intake: one config into an empty directory.
    let dir = tmp.path().join("sidecar");
    std::fs::create_dir(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    cluster.forward_port_to(objects::INTAKE_PORT, listener.local_addr().unwrap());
    let into = dir.clone();
    let intake = std::thread::spawn(move || bundle::intake::receive(listener, &into));
    let agent = {
        let cluster = cluster.clone();
        let pod = pod.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut ends = cluster
                    .attached(&pod, Duration::from_secs(20))
                    .await
                    .unwrap();
                let mut line = [0u8; 1];
                ends.stdin.read_exact(&mut line).await.unwrap();
                ends.stdout.write_all(b"warm\n").await.unwrap();
                drop(ends);
                cluster.set_status(&pod, fake::agent_ended(5));
            });
        })
    };
    let mut bottle = backend
        .launch_pod(
            &spec,
            BottleStdio {
                stdin: StdioMode::Null,
                stdout: StdioMode::Piped,
                stderr: StdioMode::Inherit,
            },
        )
        .unwrap();
    assert_eq!(bottle.pod_name(), pod);
    let written = intake.join().unwrap().unwrap();
    assert_eq!(written.len(), 5, "{written:?}");
    assert_eq!(
        std::fs::read(dir.join("token-github")).unwrap(),
        b"ghp_not_a_real_token"
    );
    assert_eq!(
        std::fs::read(dir.join("agent-file-0")).unwrap(),
        b"-----BEGIN CERTIFICATE-----\n"
    );
    let start = std::fs::read_to_string(dir.join(objects::START_SCRIPT)).unwrap();
    assert!(start.contains("sidecar --config"), "{start}");
    let plan = std::fs::read_to_string(dir.join("plan.sh")).unwrap();
    assert!(plan.contains("'claude'"), "{plan}");
    let mut out = String::new();
    bottle
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "warm\n");
    assert_eq!(bottle.wait().unwrap().code, 5);
    agent.join().unwrap();
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert_eq!(cluster.pod(&pod), None);
}

/// A pod whose intake took a config before the claim: the real intake closed its port, the
/// launcher's send fails, the start fails and the claim is deleted.
#[test]
fn a_config_planted_in_the_real_intake_fails_the_start_and_deletes_the_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_warm_pools();
    cluster.on_create(fake::agent_running());
    let backend = KubernetesBackend::with_cluster(config(), cluster.clone()).unwrap();
    backend.apply_pool(&spec, 1).unwrap();
    let dir = tmp.path().join("sidecar");
    std::fs::create_dir(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let into = dir.clone();
    let intake = std::thread::spawn(move || bundle::intake::receive(listener, &into));
    let planted = BTreeMap::from([("start.sh".to_owned(), b"exec evil".to_vec())]);
    bundle::intake::send(&mut std::net::TcpStream::connect(addr).unwrap(), &planted).unwrap();
    intake.join().unwrap().unwrap();
    let e = backend
        .launch_pod(&spec, BottleStdio::piped())
        .err()
        .expect("the start fails");
    assert!(
        e.to_string().contains("did not take the bottle's config"),
        "{e}"
    );
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    // The planted file is all there is: nothing of the bottle reached the pod.
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "the bottle's config was written"
    );
}

/// The backend's bounds of what a warm pod is sent are the intake's.
#[test]
fn the_warm_config_bounds_are_the_intakes() {
    assert_eq!(
        backend::kubernetes::pool::SEND_MAX_BYTES,
        bundle::intake::MAX_BYTES
    );
    assert_eq!(
        backend::kubernetes::pool::SEND_MAX_FILES,
        bundle::intake::MAX_FILES
    );
}
