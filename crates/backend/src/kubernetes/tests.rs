//! The lifecycle against the in-memory cluster: create, watch until ready, wait, stop, list,
//! cleanup of orphans and leftovers, and the errors an operator meets (forbidden, quota,
//! image pull, a failed packet filter), each with what to do.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pretty_assertions::assert_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fake::{self, FakeCluster};
use super::*;
use crate::spec::{Forward, Home, ReadOnlyFile, Resources, StdioMode, Workspace, WorkspaceMode};

struct Fixture {
    _tmp: tempfile::TempDir,
    spec: LaunchSpec,
    config: KubernetesConfig,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(home.join(".gitconfig"), "[user]\n\tname = agent\n").unwrap();
    std::fs::write(home.join(".claude/settings.json"), "{}").unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let spec = LaunchSpec {
        identity: "claude-1a2b3".into(),
        argv: vec!["claude".into(), "-p".into(), "fix the tests".into()],
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
            inside: "/etc/ssl/certs/ca-certificates.crt".into(),
        }],
        forwards: [3128, 3129, 3130]
            .into_iter()
            .map(|inside_port| Forward {
                inside_port,
                host_unix_socket: "/unused".into(),
            })
            .collect(),
        interactive: false,
        resources: Resources::default(),
        dangerously_run_as_host_root: false,
    };
    let mut config = KubernetesConfig::new(
        ClusterSettings {
            namespace: Some("agents".into()),
            runtime_class: Some("gvisor".into()),
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
        warm_script: None,
    });
    config.ready_timeout = Duration::from_secs(20);
    Fixture {
        _tmp: tmp,
        spec,
        config,
    }
}

const NAME: &str = "bot-bottle-claude-1a2b3";

fn backend(f: &Fixture, cluster: &Arc<FakeCluster>) -> KubernetesBackend {
    KubernetesBackend::with_cluster(f.config.clone(), cluster.clone()).unwrap()
}

fn quiet() -> BottleStdio {
    BottleStdio {
        stdin: StdioMode::Null,
        stdout: StdioMode::Inherit,
        stderr: StdioMode::Inherit,
    }
}

#[test]
fn launch_creates_the_pod_then_its_owned_secret_and_config_map_and_waits_for_the_agent() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let backend = backend(&f, &cluster);
    let mut bottle = backend.launch(&f.spec, quiet()).unwrap();
    assert_eq!(
        cluster.calls(),
        vec![
            "discover agents.x-k8s.io".to_owned(),
            format!("create pod {NAME}"),
            format!("create secret {NAME}"),
            format!("create configmap {NAME}"),
            format!("watch pod {NAME}"),
            // Still the pod checked, before and after the attach.
            format!("get pod {NAME}"),
            format!("attach pod {NAME} tty=false"),
            format!("get pod {NAME}"),
        ]
    );
    // The Secret holds the bundle's files and is owned by the pod; the agent's files and its
    // home's contents are in the ConfigMap, never in the Secret.
    let pod = cluster.pod(NAME).unwrap();
    let secret = cluster.secret(NAME).unwrap();
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.clone()),
        ("Pod", pod.metadata.uid.clone().unwrap())
    );
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, vec!["sidecar.json", "token-github"]);
    let cm = cluster.config_map(NAME).unwrap();
    let values: Vec<&String> = cm.data.as_ref().unwrap().values().collect();
    assert!(values.iter().any(|v| v.contains("[user]")));
    assert!(values.iter().all(|v| !v.contains("ghp_")));
    assert_eq!(
        pod.spec.as_ref().unwrap().runtime_class_name.as_deref(),
        Some("gvisor")
    );

    // The agent ends: `wait` returns its code and removes the pod (and what it owns).
    let cluster2 = cluster.clone();
    let mover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cluster2.set_status(NAME, fake::agent_ended(3));
    });
    assert_eq!(bottle.wait().unwrap().code, 3);
    mover.join().unwrap();
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
    assert_eq!(cluster.config_map(NAME), None);
}

#[test]
fn a_pod_that_is_still_starting_is_watched_until_the_agent_runs() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::starting());
    let backend = backend(&f, &cluster);
    let cluster2 = cluster.clone();
    let mover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cluster2.set_status(NAME, fake::agent_running());
    });
    let mut bottle = backend.launch(&f.spec, quiet()).unwrap();
    mover.join().unwrap();
    bottle.kill().unwrap();
    assert_eq!(cluster.pod(NAME), None);
}

#[test]
fn an_image_pull_failure_fails_the_launch_names_the_image_and_leaves_nothing() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::image_pull_failure());
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot pull image `bot-bottle/agent-claude:0123` (ImagePullBackOff"),
        "{e}"
    );
    assert!(e.contains("kubernetes.registry"), "{e}");
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
    assert_eq!(cluster.config_map(NAME), None);
}

#[test]
fn a_failed_packet_filter_fails_closed_before_the_agent_runs() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::network_init_failed());
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("the bottle's `network` container failed before the agent started: exit code 1: Error: Could not process rule"),
        "{e}"
    );
    assert_eq!(cluster.pod(NAME), None);
}

#[test]
fn forbidden_and_quota_refusals_say_what_to_ask_for_and_clean_up() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.fail(
        "create pod",
        ClusterError::from_status(
            "create pods",
            "agents",
            403,
            "Forbidden",
            "pods is forbidden: User \"dev\" cannot create resource \"pods\"",
        ),
    );
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("the cluster refused to create pods in namespace `agents`"),
        "{e}"
    );

    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    cluster.fail(
        "create secret",
        ClusterError::from_status(
            "create secrets",
            "agents",
            403,
            "Forbidden",
            "secrets \"bot-bottle-claude-1a2b3\" is forbidden: exceeded quota: objects, requested: count/secrets=1, used: count/secrets=10, limited: count/secrets=10",
        ),
    );
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("the namespace `agents` has no room for this bottle"),
        "{e}"
    );
    // The pod created before the refusal is gone again.
    assert_eq!(cluster.pod(NAME), None);
    assert!(
        cluster
            .calls()
            .contains(&format!("delete pod {NAME} grace=0"))
    );
}

/// Plays the agent container on the fake cluster: takes the attached ends, checks the start
/// line comes first, echoes stdin to stdout with a prefix, writes to stderr, then ends with
/// `code` (the kubelet's status).
fn play_agent(cluster: Arc<FakeCluster>, code: i32) -> std::thread::JoinHandle<(bool, Vec<u8>)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut ends = cluster
                .attached(NAME, Duration::from_secs(20))
                .await
                .expect("start attached to the agent");
            let mut first = [0u8; 1];
            ends.stdin.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, objects::START_LINE);
            let mut input = Vec::new();
            ends.stdin.read_to_end(&mut input).await.unwrap();
            ends.stdout.write_all(b"agent says: ").await.unwrap();
            ends.stdout.write_all(&input).await.unwrap();
            if let Some(stderr) = ends.stderr.as_mut() {
                stderr.write_all(b"agent complains\n").await.unwrap();
            }
            let tty = ends.tty;
            drop(ends);
            cluster.set_status(NAME, fake::agent_ended(code));
            (tty, input)
        })
    })
}

#[test]
fn launch_attaches_releases_the_agent_and_carries_its_streams_and_exit_code() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    // The kubelet's way there: initialising, the sidecar up, then the agent.
    cluster.kubelet(vec![
        fake::starting(),
        fake::sidecar_started(),
        fake::agent_running(),
    ]);
    let agent = play_agent(cluster.clone(), 7);
    let mut bottle = backend(&f, &cluster)
        .launch(&f.spec, BottleStdio::piped())
        .unwrap();
    let mut stdin = bottle.take_stdin().unwrap();
    stdin.write_all(b"hello from start\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    let mut err = String::new();
    bottle
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    bottle
        .take_stderr()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(bottle.wait().unwrap().code, 7);
    let (tty, input) = agent.join().unwrap();
    assert!(!tty);
    assert_eq!(input, b"hello from start\n");
    assert_eq!(out, "agent says: hello from start\n");
    assert_eq!(err, "agent complains\n");
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
    // The agent's command waits for the start line: nothing it writes precedes the attach.
    let calls = cluster.calls();
    let attach = calls
        .iter()
        .position(|c| c.starts_with("attach pod"))
        .unwrap();
    let watch = calls
        .iter()
        .position(|c| c.starts_with("watch pod"))
        .unwrap();
    assert!(watch < attach, "{calls:?}");
}

#[test]
fn an_interactive_launch_attaches_a_terminal_with_one_output() {
    let mut f = fixture();
    f.spec.interactive = true;
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let agent = play_agent(cluster.clone(), 0);
    let mut bottle = backend(&f, &cluster)
        .launch(&f.spec, BottleStdio::piped())
        .unwrap();
    drop(bottle.take_stdin());
    let mut out = String::new();
    bottle
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(bottle.take_stderr().is_none(), "a terminal has one output");
    assert_eq!(bottle.wait().unwrap().code, 0);
    let (tty, _) = agent.join().unwrap();
    assert!(tty);
    assert_eq!(out, "agent says: ");
    assert!(
        cluster
            .calls()
            .contains(&format!("attach pod {NAME} tty=true"))
    );
}

#[test]
fn a_refused_attach_fails_the_launch_and_removes_the_pod() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    cluster.refuse(
        "attach pod",
        "create pods/attach",
        403,
        "Forbidden",
        "pods \"bot-bottle-claude-1a2b3\" is forbidden: User \"dev\" cannot create resource \"pods/attach\" in API group \"\" in the namespace \"agents\"",
    );
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("the cluster refused to create pods/attach in namespace `agents`"),
        "{e}"
    );
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
}

#[test]
fn a_name_taken_or_an_invalid_object_is_refused_as_the_api_server_says_and_nothing_else_is_touched()
{
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    // Someone's pod has the name already (409): it stays, untouched.
    cluster.insert_pod(foreign_pod(
        "claude-1a2b3",
        "elsewhere/x:1:2",
        fake::agent_running(),
    ));
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a pod of that name exists already"), "{e}");
    assert!(cluster.pod(NAME).is_some());
    assert_eq!(deletes_since(&cluster, 0), Vec::<String>::new());

    // The API server finds the pod invalid (422): the message names the field.
    let cluster = Arc::new(FakeCluster::new());
    cluster.refuse(
        "create pod",
        "create pods",
        422,
        "Invalid",
        "Pod \"bot-bottle-claude-1a2b3\" is invalid: spec.runtimeClassName: Invalid value: \"gvisor\": RuntimeClass not found",
    );
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("rejected the bottle's pod as invalid: Pod \"bot-bottle-claude-1a2b3\" is invalid: spec.runtimeClassName"),
        "{e}"
    );
    assert!(e.contains("--dry-run"), "{e}");

    // The fake checks what the API server checks: a pod without an image is refused.
    let mut objects =
        bottle_objects(&backend(&f, &cluster).plan(&f.spec, "agents").unwrap()).unwrap();
    objects.pod.spec.as_mut().unwrap().containers[0].image = None;
    let cluster = FakeCluster::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(cluster.create_pod(&objects.pod)).unwrap_err();
    assert!(matches!(e, ClusterError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("image: Required value"), "{e}");
}

#[test]
fn an_unschedulable_pod_says_which_node_resources_are_missing() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.kubelet(vec![
        fake::starting(),
        fake::unschedulable("0/3 nodes are available: 3 Insufficient memory."),
    ]);
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no node can run this bottle: 0/3 nodes are available"),
        "{e}"
    );
    assert_eq!(cluster.pod(NAME), None);
}

#[test]
fn a_pod_that_never_gets_ready_times_out_with_how_to_see_why_and_is_removed() {
    let mut f = fixture();
    f.config.ready_timeout = Duration::from_millis(300);
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::starting());
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("did not get there"), "{e}");
    assert_eq!(cluster.pod(NAME), None);
}

fn foreign_pod(
    identity: &str,
    launcher: &str,
    status: k8s_openapi::api::core::v1::PodStatus,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(objects::object_name(identity)),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "bot-bottle".into()),
                (objects::LABEL_IDENTITY.into(), identity.into()),
            ])),
            annotations: Some(BTreeMap::from([(
                objects::ANNOTATION_LAUNCHER.into(),
                launcher.into(),
            )])),
            uid: Some(format!("uid-{identity}")),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

/// The metadata of bottle `identity`'s Secret or ConfigMap as its launch makes them (owned
/// by nothing: a leftover).
fn leftover_meta(identity: &str, launcher: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(objects::object_name(identity)),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/managed-by".into(), "bot-bottle".into()),
            (objects::LABEL_IDENTITY.into(), identity.into()),
        ])),
        annotations: Some(BTreeMap::from([(
            objects::ANNOTATION_LAUNCHER.into(),
            launcher.into(),
        )])),
        ..Default::default()
    }
}

/// A Secret and a ConfigMap no pod owns are deleted by `cleanup` only when they are a
/// bottle's (its labels, its name) whose launcher ran on this machine and is gone, and
/// only the object judged: a live launcher's, another machine's, an unlabelled one, one
/// still owned (a ConfigMap sharing a leftover Secret's name), or one made again under the
/// name after `cleanup` listed it (a delete precondition on its uid) stays.
#[test]
fn cleanup_deletes_only_the_leftover_secrets_and_config_maps_it_judged() {
    let machine = machine_id();
    if machine.is_empty() {
        eprintln!("skipping: this machine has no /etc/machine-id, so nothing is judged");
        return;
    }
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    let gone = format!("{machine}/not-this-boot:4242:99");
    let secret = |meta: ObjectMeta| Secret {
        metadata: meta,
        ..Default::default()
    };
    let config_map = |meta: ObjectMeta| k8s_openapi::api::core::v1::ConfigMap {
        metadata: meta,
        ..Default::default()
    };
    // A gone launcher's Secret and ConfigMap: both go.
    cluster.insert_secret(secret(leftover_meta("claude-00004", &gone)));
    cluster.insert_config_map(config_map(leftover_meta("claude-00004", &gone)));
    // A gone launcher's Secret beside a ConfigMap of its name that a pod owns.
    cluster.insert_secret(secret(leftover_meta("claude-00005", &gone)));
    let mut owned = leftover_meta("claude-00005", &launcher_annotation());
    owned.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: objects::object_name("claude-00005"),
            uid: "uid-of-a-running-pod".into(),
            ..Default::default()
        },
    ]);
    cluster.insert_config_map(config_map(owned));
    // A live launcher's (this process: a launch between its Secret and its pod), and
    // another machine's.
    cluster.insert_secret(secret(leftover_meta(
        "claude-00006",
        &launcher_annotation(),
    )));
    cluster.insert_config_map(config_map(leftover_meta(
        "claude-00007",
        "another-machine/b:1:1",
    )));
    // Not a bottle's: no labels, or labels naming another bottle than its name.
    cluster.insert_secret(secret(ObjectMeta {
        name: Some("bot-bottle-claude-00008".into()),
        annotations: leftover_meta("claude-00008", &gone).annotations,
        ..Default::default()
    }));
    let mut misnamed = leftover_meta("claude-00009", &gone);
    misnamed.name = Some("team-database-credentials".into());
    cluster.insert_secret(secret(misnamed));
    // A gone launcher's Secret (made again below by a new launch once `cleanup` listed it).
    cluster.insert_secret(secret(leftover_meta("claude-0000a", &gone)));
    let backend = backend(&f, &cluster);
    let removed = |names: &[&str]| -> Vec<CleanupAction> {
        names
            .iter()
            .map(|n| CleanupAction::RemovedContainer {
                name: format!("bot-bottle-claude-{n}"),
            })
            .collect()
    };
    assert_eq!(
        backend.cleanup(true).unwrap(),
        removed(&["00004", "00005", "0000a"]),
        "the dry run lists what it would judge now"
    );
    assert!(
        cluster.secret("bot-bottle-claude-00004").is_some(),
        "dry run deleted"
    );
    let listed = cluster
        .secret("bot-bottle-claude-0000a")
        .unwrap()
        .metadata
        .uid;
    cluster.remake_after_list(cluster::Leftover {
        kind: cluster::LeftoverKind::Secret,
        metadata: leftover_meta("claude-0000a", &launcher_annotation()),
    });
    assert_eq!(
        backend.cleanup(false).unwrap(),
        removed(&["00004", "00005"])
    );
    assert_eq!(cluster.secret("bot-bottle-claude-00004"), None);
    assert_eq!(cluster.config_map("bot-bottle-claude-00004"), None);
    assert_eq!(cluster.secret("bot-bottle-claude-00005"), None);
    assert!(cluster.config_map("bot-bottle-claude-00005").is_some());
    assert!(cluster.secret("bot-bottle-claude-00006").is_some());
    assert!(cluster.config_map("bot-bottle-claude-00007").is_some());
    assert!(cluster.secret("bot-bottle-claude-00008").is_some());
    assert!(cluster.secret("team-database-credentials").is_some());
    let again = cluster.secret("bot-bottle-claude-0000a").unwrap().metadata;
    assert!(again.uid.is_some() && again.uid != listed, "{again:?}");
    assert_eq!(
        again.annotations.unwrap()[objects::ANNOTATION_LAUNCHER],
        launcher_annotation()
    );
}

/// A record with a field this binary does not know (written by a newer one) is not read
/// in part: it is no record, so `stop` refuses to reach the pod by its name alone (the pod
/// stays) and the home claim's state is unknown (a `resume` without it refuses).
#[test]
fn a_record_with_a_field_this_binary_does_not_know_refuses_instead_of_guessing() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.insert_pod(foreign_pod(
        "claude-1a2b3",
        &launcher_annotation(),
        fake::agent_running(),
    ));
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state").join("claude-1a2b3");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join(RECORD),
        r#"{"namespace":"agents","pod_uid":"uid-claude-1a2b3","home_claim":"x","home_made":true,"pod_generation":2}"#,
    )
    .unwrap();
    assert_eq!(PodRecord::read(&state), None);
    assert_eq!(PodRecord::home_claim_state(&state), HomeClaimState::Unknown);
    let backend = backend(&f, &cluster).with_home(home.path().to_path_buf());
    let e = backend
        .stop("claude-1a2b3", Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not name the pod its launch checked"),
        "{e}"
    );
    assert!(cluster.pod(NAME).is_some());
    // The same record without the unknown field is read, and `stop` deletes the pod.
    std::fs::write(
        state.join(RECORD),
        r#"{"namespace":"agents","pod_uid":"uid-claude-1a2b3","home_claim":"x","home_made":true}"#,
    )
    .unwrap();
    assert_eq!(PodRecord::home_claim_state(&state), HomeClaimState::Made);
    assert!(
        backend
            .stop("claude-1a2b3", Duration::from_secs(1))
            .unwrap()
    );
    assert_eq!(cluster.pod(NAME), None);
}

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn list_stop_and_cleanup_judge_only_this_machines_launchers() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    let machine = machine_id();
    // Launched here by a process that is gone (pid 1's start time is not 0 here... use a
    // boot id that is not this boot's): an orphan.
    cluster.insert_pod(foreign_pod(
        "claude-00001",
        &format!("{machine}/not-this-boot:4242:99"),
        fake::agent_running(),
    ));
    // Launched by this very process: alive.
    cluster.insert_pod(foreign_pod(
        "claude-00002",
        &launcher_annotation(),
        fake::agent_running(),
    ));
    // Launched on another machine: never judged.
    cluster.insert_pod(foreign_pod(
        "claude-00003",
        "another-machine/boot:1:1",
        fake::agent_running(),
    ));
    // A leftover Secret of a launch that failed before its pod existed.
    cluster.insert_secret(Secret {
        metadata: leftover_meta("claude-00004", &format!("{machine}/not-this-boot:4242:99")),
        ..Default::default()
    });
    let backend = backend(&f, &cluster);
    let mut listed: Vec<(String, bool, bool)> = backend
        .list()
        .unwrap()
        .into_iter()
        .map(|b| (b.identity, b.running, b.orphaned))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("claude-00001".into(), true, !machine.is_empty()),
            ("claude-00002".into(), true, false),
            ("claude-00003".into(), true, false),
        ]
    );
    if machine.is_empty() {
        eprintln!(
            "skipping the orphan half: this machine has no /etc/machine-id, so no pod is judged"
        );
        return;
    }
    let dry = backend.cleanup(true).unwrap();
    assert_eq!(
        dry,
        vec![
            CleanupAction::KilledOrphan {
                identity: "claude-00001".into()
            },
            CleanupAction::RemovedContainer {
                name: "bot-bottle-claude-00004".into()
            },
        ]
    );
    assert!(
        cluster.pod("bot-bottle-claude-00001").is_some(),
        "dry run deleted"
    );
    assert_eq!(backend.cleanup(false).unwrap(), dry);
    assert_eq!(cluster.pod("bot-bottle-claude-00001"), None);
    assert!(cluster.pod("bot-bottle-claude-00003").is_some());
    assert_eq!(cluster.secret("bot-bottle-claude-00004"), None);

    // `stop` deletes the pod its start recorded.
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state").join("claude-00002");
    std::fs::create_dir_all(&state).unwrap();
    PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some("uid-claude-00002".into()),
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    let backend = backend.with_home(home.path().to_path_buf());
    assert!(
        backend
            .stop("claude-00002", Duration::from_secs(10))
            .unwrap()
    );
    assert!(
        cluster
            .calls()
            .contains(&"delete pod bot-bottle-claude-00002 grace=10".to_owned())
    );
    assert!(
        !backend
            .stop("claude-00002", Duration::from_secs(10))
            .unwrap()
    );
}

#[test]
fn supervise_is_reached_through_port_forward_from_the_laptop() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.insert_pod(foreign_pod(
        "claude-00002",
        &launcher_annotation(),
        fake::agent_running(),
    ));
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state").join("claude-00002");
    std::fs::create_dir_all(&state).unwrap();
    PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some("uid-claude-00002".into()),
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    let backend = backend(&f, &cluster).with_home(home.path().to_path_buf());
    let (runtime, mut stream) = backend.port_forward("claude-00002", 3130).unwrap();
    let echoed = runtime.block_on(async {
        stream.write_all(b"POST /mcp").await.unwrap();
        let mut buf = [0u8; 9];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    });
    assert_eq!(&echoed, b"POST /mcp");
    assert!(
        cluster
            .calls()
            .contains(&"portforward bot-bottle-claude-00002 3130".to_owned())
    );
    // A bottle whose pod is gone.
    let state = home.path().join("state").join("claude-00009");
    std::fs::create_dir_all(&state).unwrap();
    PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some("uid-claude-00009".into()),
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    let e = backend
        .port_forward("claude-00009", 3130)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("pod `bot-bottle-claude-00009` in namespace `agents` is gone"),
        "{e}"
    );
}

/// After the launch, the operator's side reaches the pod the launch checked and no other of
/// its name (issue 21). A record that names no launched pod (an older binary's, or one
/// naming it by an empty uid) is refused;
/// the launched pod is reached; once it is deleted and made again under the bottle's name,
/// the relay's next port-forward (as after a dropped one) and `stop` refuse it, naming pod,
/// namespace and both uids, open nothing to it and delete nothing, and the relay sees the
/// bottle's pod gone.
#[test]
fn the_relay_and_stop_reach_only_the_pod_the_launch_checked() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state").join("claude-1a2b3");
    std::fs::create_dir_all(&state).unwrap();
    let record = |uid: Option<&str>| {
        PodRecord {
            namespace: Some("agents".into()),
            pod_uid: uid.map(Into::into),
            ..Default::default()
        }
        .write(&state)
        .unwrap()
    };
    let cluster = Arc::new(FakeCluster::new());
    cluster.insert_pod(foreign_pod(
        "claude-1a2b3",
        &launcher_annotation(),
        fake::agent_running(),
    ));
    let mut backend = backend(&f, &cluster);
    backend.home = Some(tmp.path().to_path_buf());

    for uid in [None, Some("")] {
        record(uid);
        let older = [
            backend
                .port_forward("claude-1a2b3", OPERATOR_PORT)
                .err()
                .unwrap()
                .to_string(),
            backend
                .stop("claude-1a2b3", Duration::ZERO)
                .unwrap_err()
                .to_string(),
        ];
        for e in older {
            assert!(
                e.contains("bottle claude-1a2b3's record")
                    && e.contains("does not name the pod its launch checked")
                    && e.contains("pod `bot-bottle-claude-1a2b3` in namespace `agents`")
                    && e.contains("bot-bottle discard claude-1a2b3"),
                "{uid:?}: {e}"
            );
        }
        assert!(cluster.pod(NAME).is_some());
    }

    record(Some("uid-claude-1a2b3"));
    let (runtime, mut stream) = backend.port_forward("claude-1a2b3", OPERATOR_PORT).unwrap();
    let echoed = runtime.block_on(async {
        stream.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    });
    assert_eq!(&echoed, b"hello");
    assert!(backend.pod_exists("claude-1a2b3").unwrap());

    // Deleted and made again under the bottle's name.
    runtime
        .block_on(cluster.delete_pod(NAME, Duration::ZERO, None))
        .unwrap();
    let mut again = foreign_pod(
        "claude-1a2b3",
        &launcher_annotation(),
        fake::agent_running(),
    );
    again.metadata.uid = Some("uid-made-again".into());
    cluster.insert_pod(again);
    let before = cluster.calls().len();
    let replaced = [
        backend
            .port_forward("claude-1a2b3", OPERATOR_PORT)
            .err()
            .unwrap()
            .to_string(),
        backend
            .stop("claude-1a2b3", Duration::ZERO)
            .unwrap_err()
            .to_string(),
    ];
    for e in replaced {
        assert!(
            e.contains("pod `bot-bottle-claude-1a2b3` in namespace `agents` is not the pod this bottle was launched in: its uid is uid-made-again, the launch checked uid uid-claude-1a2b3")
                && e.contains("start the bottle again"),
            "{e}"
        );
    }
    let after: Vec<String> = cluster.calls()[before..].to_vec();
    assert!(
        after
            .iter()
            .all(|c| !c.starts_with("portforward") && !c.starts_with("delete")),
        "{after:?}"
    );
    assert_eq!(
        cluster.pod(NAME).unwrap().metadata.uid.as_deref(),
        Some("uid-made-again")
    );
    // The relay ends: the bottle's pod is gone.
    assert!(!backend.pod_exists("claude-1a2b3").unwrap());
}

/// A launched bottle knows its pod's uid (the launcher records it), attaches only to that
/// pod, and its own end (kill, terminate, the clean end) deletes only that pod: one made
/// again under its name is left alone, the fake cluster refusing the delete precondition as
/// the API server does.
#[test]
fn a_running_bottle_deletes_only_the_pod_it_was_launched_in() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let backend = backend(&f, &cluster);
    let mut bottle = backend.launch_pod(&f.spec, quiet()).unwrap();
    let launched = cluster.pod(NAME).unwrap().metadata.uid.unwrap();
    assert!(!launched.is_empty());
    assert_eq!(bottle.pod_uid(), launched);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(cluster.delete_pod(NAME, Duration::ZERO, None))
        .unwrap();
    let mut again = foreign_pod(
        "claude-1a2b3",
        &launcher_annotation(),
        fake::agent_running(),
    );
    again.metadata.uid = Some("uid-made-again".into());
    cluster.insert_pod(again);
    for e in [
        bottle.kill().unwrap_err().to_string(),
        bottle.terminate().unwrap_err().to_string(),
        bottle.remove().unwrap_err().to_string(),
    ] {
        assert!(
            e.contains(&format!(
                "its uid is uid-made-again, the launch checked uid {launched}"
            )),
            "{e}"
        );
    }
    assert_eq!(
        cluster.pod(NAME).unwrap().metadata.uid.as_deref(),
        Some("uid-made-again")
    );
    // The pod made again ends with 0: that is not the agent's exit, and waiting says so
    // instead of returning it (or, with a pod that never ends, waiting for it forever).
    cluster.set_status(NAME, fake::agent_ended(0));
    let e = bottle.wait_agent().unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "its uid is uid-made-again, the launch checked uid {launched}"
        )),
        "{e}"
    );
    drop(bottle);
    assert!(cluster.pod(NAME).is_some());
}

#[test]
fn preflight_finds_the_kubeconfig_offline_or_says_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config");
    let nohome = tmp.path().join("nohome");
    let env_with = |kubeconfig: Option<std::path::PathBuf>| {
        let nohome = nohome.clone();
        move |k: &str| match k {
            "KUBECONFIG" => kubeconfig.clone().map(Into::into),
            "HOME" => Some(nohome.clone().into()),
            _ => None,
        }
    };
    let status = preflight(&env_with(Some(path.clone())));
    assert!(!status.usable);
    assert!(
        status.checks[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("$KUBECONFIG")
    );
    std::fs::write(&path, "apiVersion: v1\n").unwrap();
    let status = preflight(&env_with(Some(path.clone())));
    assert!(status.usable, "{status:?}");
    assert!(!preflight(&env_with(None)).usable);
}

#[test]
fn stop_from_another_terminal_finds_the_pod_where_its_start_recorded_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state").join("claude-1a2b3");
    std::fs::create_dir_all(&state).unwrap();
    let record = PodRecord {
        context: None,
        namespace: Some("agents".into()),
        home_claim: None,
        pod_uid: Some("uid-claude-1a2b3".into()),
        ..Default::default()
    };
    record.write(&state).unwrap();
    assert_eq!(PodRecord::read(&state), Some(record));
    assert_eq!(PodRecord::read(tmp.path()), None);

    // The record names this backend's namespace: the pod is deleted there.
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.insert_pod(foreign_pod(
        "claude-1a2b3",
        &launcher_annotation(),
        fake::agent_running(),
    ));
    let mut backend = backend(&f, &cluster);
    backend.home = Some(tmp.path().to_path_buf());
    assert!(
        backend
            .stop("claude-1a2b3", Duration::from_secs(10))
            .unwrap()
    );
    assert_eq!(cluster.pod(NAME), None);
    assert!(
        cluster
            .calls()
            .contains(&format!("delete pod {NAME} grace=10"))
    );
    assert!(
        !backend
            .stop("claude-1a2b3", Duration::from_secs(10))
            .unwrap()
    );
}

#[test]
fn a_sidecar_port_on_the_operator_port_is_refused_before_anything_is_created() {
    let mut f = fixture();
    f.spec.forwards.push(Forward {
        inside_port: super::OPERATOR_PORT,
        host_unix_socket: "/unused".into(),
    });
    let cluster = Arc::new(FakeCluster::new());
    let e = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("port 3199 is the bundle's operator port, which the agent must not reach"),
        "{e}"
    );
    assert!(cluster.calls().is_empty(), "{:?}", cluster.calls());
}

#[test]
fn cleanup_also_looks_in_the_namespaces_this_homes_bottles_were_started_in() {
    let machine = machine_id();
    if machine.is_empty() {
        eprintln!("skipping: this machine has no /etc/machine-id, so no pod is judged an orphan");
        return;
    }
    let f = fixture();
    let home = tempfile::tempdir().unwrap();
    // The context's namespace, and the manifest's `team-b` where one bottle was started.
    let here = Arc::new(FakeCluster::new());
    let team_b = Arc::new(FakeCluster::new());
    let state = home.path().join("state/claude-00005");
    std::fs::create_dir_all(&state).unwrap();
    PodRecord {
        context: None,
        namespace: Some("team-b".into()),
        home_claim: None,
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    team_b.insert_pod(foreign_pod(
        "claude-00005",
        &format!("{machine}/not-this-boot:4242:99"),
        fake::agent_running(),
    ));
    here.insert_pod(foreign_pod(
        "claude-00006",
        &format!("{machine}/not-this-boot:4243:99"),
        fake::agent_running(),
    ));
    let reached: Arc<Mutex<Vec<String>>> = Arc::default();
    let connector = {
        let (team_b, reached) = (team_b.clone(), reached.clone());
        Arc::new(
            move |context: Option<&str>,
                  namespace: Option<&str>|
                  -> Result<Arc<dyn Cluster>, ClusterError> {
                reached
                    .lock()
                    .unwrap()
                    .push(format!("{context:?} {namespace:?}"));
                match namespace {
                    Some("team-b") => Ok(team_b.clone() as Arc<dyn Cluster>),
                    _ => Err(ClusterError::Connect("no such context".into())),
                }
            },
        )
    };
    let mut config = f.config.clone();
    config.settings.namespace = None;
    let backend = KubernetesBackend::with_cluster(config, here.clone())
        .unwrap()
        .with_records(home.path().to_path_buf(), connector);
    let orphans = vec![
        CleanupAction::KilledOrphan {
            identity: "claude-00006".into(),
        },
        CleanupAction::KilledOrphan {
            identity: "claude-00005".into(),
        },
    ];
    assert_eq!(backend.cleanup(true).unwrap(), orphans);
    assert!(
        team_b.pod("bot-bottle-claude-00005").is_some(),
        "dry run deleted"
    );
    assert_eq!(backend.cleanup(false).unwrap(), orphans);
    assert_eq!(team_b.pod("bot-bottle-claude-00005"), None);
    assert_eq!(here.pod("bot-bottle-claude-00006"), None);
    assert_eq!(
        *reached.lock().unwrap(),
        vec!["None Some(\"team-b\")", "None Some(\"team-b\")"]
    );
}

const CLAIM: &str = "bot-bottle-claude-1a2b3-home";

/// A fixture whose home is kept in a claim (`kubernetes.home_size`), with a bot-bottle home
/// (where `cleanup` looks for the bottles' states).
fn kept_home_fixture() -> (Fixture, PathBuf) {
    let mut f = fixture();
    f.config.settings.home_size = Some("5Gi".into());
    f.config.settings.storage_class = Some("fast".into());
    let home = f._tmp.path().join("bb-home");
    let state = home.join("state").join("claude-1a2b3");
    std::fs::create_dir_all(&state).unwrap();
    PodRecord {
        context: None,
        namespace: Some("agents".into()),
        home_claim: Some(CLAIM.into()),
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    (f, home)
}

fn kept_home_backend(f: &Fixture, home: &Path, cluster: &Arc<FakeCluster>) -> KubernetesBackend {
    backend(f, cluster).with_home(home.to_path_buf())
}

fn run_to_end(backend: &KubernetesBackend, f: &Fixture, cluster: &Arc<FakeCluster>, code: i32) {
    let agent = play_agent(cluster.clone(), code);
    let mut bottle = backend.launch(&f.spec, quiet()).unwrap();
    assert_eq!(bottle.wait().unwrap().code, code);
    agent.join().unwrap();
}

/// The home survives the pod: the first run creates the claim (labelled, annotated with
/// this home, not owned by the pod) and seeds it; `resume` finds the claim, mounts it again
/// and does not seed it over the agent's files; `discard` refuses while the bottle runs and
/// removes it once the pod is gone.
#[test]
fn the_home_claim_outlives_the_pod_resume_mounts_it_unseeded_and_discard_waits_for_the_pod() {
    let (f, home) = kept_home_fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let backend = kept_home_backend(&f, &home, &cluster);
    run_to_end(&backend, &f, &cluster, 3);
    let calls = cluster.calls();
    assert_eq!(
        calls[..3].to_vec(),
        vec![
            "discover agents.x-k8s.io".to_owned(),
            format!("get claim {CLAIM}"),
            format!("create claim {CLAIM}")
        ]
    );
    assert!(
        calls[3].starts_with(&format!("create pod {NAME}")),
        "{calls:?}"
    );
    let claim = cluster.claim(CLAIM).expect("the claim outlives the pod");
    assert_eq!(claim.metadata.owner_references, None);
    assert_eq!(
        claim.metadata.labels.as_ref().unwrap()[objects::LABEL_IDENTITY],
        "claude-1a2b3"
    );
    assert_eq!(
        claim.metadata.annotations.as_ref().unwrap()[objects::ANNOTATION_HOME],
        home_annotation(Some(&home))
    );
    let spec = claim.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "5Gi"
    );
    assert_eq!(cluster.pod(NAME), None);

    // `resume`: the same claim, mounted, no seeding init container, no home files shipped.
    let agent = play_agent(cluster.clone(), 0);
    let mut bottle = backend.launch(&f.spec, quiet()).unwrap();
    let pod = cluster.pod(NAME).unwrap();
    let pod_spec = pod.spec.unwrap();
    let volume = pod_spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "home")
        .unwrap();
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        CLAIM
    );
    let inits: Vec<&str> = pod_spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, vec!["network", "sidecar"]);
    let cm = cluster.config_map(NAME).unwrap();
    assert!(
        !cm.data.unwrap().keys().any(|k| k.starts_with("home-")),
        "the home's first contents are shipped again"
    );
    let creates = cluster
        .calls()
        .iter()
        .filter(|c| c.starts_with("create claim"))
        .count();
    assert_eq!(creates, 1);

    // Never while the bottle runs: the error names the bottle, the namespace, what to do.
    let e = backend.discard("claude-1a2b3").unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "bottle claude-1a2b3 still runs in namespace `agents` (pod {NAME}), so its home claim `{CLAIM}` stays; `bot-bottle stop claude-1a2b3` first"
        )),
        "{e}"
    );
    assert!(cluster.claim(CLAIM).is_some());
    assert_eq!(bottle.wait().unwrap().code, 0);
    agent.join().unwrap();
    assert_eq!(
        backend.discard("claude-1a2b3").unwrap(),
        vec![CleanupAction::RemovedVolume { name: CLAIM.into() }]
    );
    assert_eq!(cluster.claim(CLAIM), None);
    // Gone already: nothing to say.
    assert_eq!(backend.discard("claude-1a2b3").unwrap(), vec![]);
    // A bottle recorded without a claim: the cluster is not even asked.
    let state = home.join("state").join("claude-1a2b3");
    PodRecord {
        context: None,
        namespace: Some("agents".into()),
        home_claim: None,
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    let asked = cluster.calls().len();
    assert_eq!(backend.discard("claude-1a2b3").unwrap(), vec![]);
    assert_eq!(cluster.calls().len(), asked);
}

/// A claim of that name that bot-bottle did not make for this bottle is never the agent's
/// home, nor deleted as it by `discard`; a launch that fails removes the claim it made
/// (and only that one).
#[test]
fn a_foreign_claim_is_refused_and_a_failed_launch_removes_the_claim_it_made() {
    let (f, home) = kept_home_fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.insert_claim(k8s_openapi::api::core::v1::PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CLAIM.into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let backend = kept_home_backend(&f, &home, &cluster);
    let e = backend.launch(&f.spec, quiet()).err().unwrap().to_string();
    assert!(
        e.contains(&format!(
            "a PersistentVolumeClaim `{CLAIM}` exists in namespace `agents` that bot-bottle did not make for bottle claude-1a2b3"
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("kubectl -n agents delete pvc {CLAIM}")),
        "{e}"
    );
    assert!(!cluster.calls().iter().any(|c| c.starts_with("create")));
    // Nor is it deleted as the bottle's home: `discard` leaves it.
    assert_eq!(backend.discard(&f.spec.identity).unwrap(), vec![]);
    assert!(cluster.claim(CLAIM).is_some());
    assert_eq!(deletes_since(&cluster, 0), Vec::<String>::new());

    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::image_pull_failure());
    let backend = kept_home_backend(&f, &home, &cluster);
    assert!(backend.launch(&f.spec, quiet()).is_err());
    assert_eq!(cluster.claim(CLAIM), None);
    assert!(
        cluster.calls().contains(&format!("delete claim {CLAIM}")),
        "{:?}",
        cluster.calls()
    );
}

/// `cleanup` removes the home claims of this home's bottles whose state is gone and that no
/// pod mounts; a claim whose bottle's state is kept (for `resume`), one a pod mounts and
/// one of another home or machine stay.
#[test]
fn cleanup_removes_only_unused_claims_of_this_homes_gone_bottles() {
    if machine_id().is_empty() {
        eprintln!(
            "skipping: this machine has no /etc/machine-id, so no home claim is judged (as no pod is)"
        );
        return;
    }
    let (f, home) = kept_home_fixture();
    let cluster = Arc::new(FakeCluster::new());
    let claim = |identity: &str, owner: &str| k8s_openapi::api::core::v1::PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(objects::home_claim_name(identity)),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "bot-bottle".into()),
                (objects::LABEL_IDENTITY.into(), identity.into()),
            ])),
            annotations: Some(BTreeMap::from([(
                objects::ANNOTATION_HOME.into(),
                owner.into(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    let here = home_annotation(Some(&home));
    // State gone: removed.
    cluster.insert_claim(claim("claude-00001", &here));
    // State kept (`state/claude-1a2b3` exists): stays.
    cluster.insert_claim(claim("claude-1a2b3", &here));
    // State gone but a pod of ours mounts it (another process runs it): stays.
    cluster.insert_claim(claim("claude-00002", &here));
    let mut mounting = foreign_pod(
        "claude-00002",
        "another-machine/boot:1:1",
        fake::agent_running(),
    );
    mounting.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        volumes: Some(vec![k8s_openapi::api::core::v1::Volume {
            name: "home".into(),
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: objects::home_claim_name("claude-00002"),
                    read_only: None,
                },
            ),
            ..Default::default()
        }]),
        ..Default::default()
    });
    cluster.insert_pod(mounting);
    // Another home's (or machine's): never judged.
    cluster.insert_claim(claim("claude-00003", "another-machine/0123456789abcdef"));
    // Labelled with a path instead of an identity, or named otherwise: never judged.
    cluster.insert_claim(claim("../../etc", &here));
    let mut renamed = claim("claude-00004", &here);
    renamed.metadata.name = Some("data".into());
    cluster.insert_claim(renamed);
    let backend = kept_home_backend(&f, &home, &cluster);
    let removed = vec![CleanupAction::RemovedVolume {
        name: objects::home_claim_name("claude-00001"),
    }];
    assert_eq!(backend.cleanup(true).unwrap(), removed);
    assert!(
        cluster
            .claim(&objects::home_claim_name("claude-00001"))
            .is_some()
    );
    assert_eq!(backend.cleanup(false).unwrap(), removed);
    let left: Vec<String> = [
        "claude-00001",
        "claude-1a2b3",
        "claude-00002",
        "claude-00003",
    ]
    .iter()
    .filter(|i| cluster.claim(&objects::home_claim_name(i)).is_some())
    .map(|i| i.to_string())
    .collect();
    assert_eq!(left, vec!["claude-1a2b3", "claude-00002", "claude-00003"]);
    assert!(
        cluster
            .claim(&objects::home_claim_name("../../etc"))
            .is_some()
    );
    assert!(cluster.claim("data").is_some());
    // An operator whose Role has no claims (no `home_size`): the rest is still cleaned.
    cluster.refuse(
        "list claims",
        "list persistentvolumeclaims",
        403,
        "Forbidden",
        "persistentvolumeclaims is forbidden",
    );
    assert_eq!(backend.cleanup(false).unwrap(), vec![]);
}

/// The pod says how long the kubelet waits for the sidecar bundle after SIGTERM: the
/// configured grace, not the API server's default; `terminate` gives the bundle all of it.
#[test]
fn the_pod_sets_its_termination_grace_period_from_the_config_and_terminate_keeps_it() {
    let mut f = fixture();
    f.config.termination_grace = Duration::from_secs(52);
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let mut bottle = backend(&f, &cluster).launch(&f.spec, quiet()).unwrap();
    let pod = cluster.pod(NAME).unwrap();
    assert_eq!(pod.spec.unwrap().termination_grace_period_seconds, Some(52));
    bottle.terminate().unwrap();
    assert_eq!(
        cluster.calls().last().unwrap(),
        &format!("delete pod {NAME} grace=52")
    );
}

/// With agent-sandbox served, the bottle is a `Sandbox` whose pod template is exactly the
/// pod built without it (the same security contexts, init containers, Secret volume); its
/// controller makes the pod, which the launch watches and attaches to as before; the
/// Secret and ConfigMap are the Sandbox's, and the end deletes the Sandbox (its pod and
/// both go with it).
#[test]
fn with_agent_sandbox_served_the_bottle_is_a_sandbox_whose_pod_is_the_one_built_here() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    let backend = backend(&f, &cluster);
    let mut bottle = backend.launch(&f.spec, quiet()).unwrap();
    assert_eq!(
        cluster.calls(),
        vec![
            "discover agents.x-k8s.io".to_owned(),
            format!("create sandbox {NAME}"),
            format!("watch sandbox {NAME}"),
            format!("get pod {NAME}"),
            format!("create secret {NAME}"),
            format!("create configmap {NAME}"),
            format!("watch pod {NAME}"),
            // Still the pod checked, before and after the attach.
            format!("get pod {NAME}"),
            format!("attach pod {NAME} tty=false"),
            format!("get pod {NAME}"),
        ]
    );
    let sandbox = cluster.sandbox(NAME).unwrap();
    assert_eq!(sandbox.api_version, "agents.x-k8s.io/v1beta1");
    let plan = backend.plan(&f.spec, fake::NAMESPACE).unwrap();
    let built = bottle_objects(&plan).unwrap().pod;
    assert_eq!(
        Some(&sandbox.spec.pod_template.spec),
        built.spec.as_ref(),
        "the Sandbox's pod is not the pod built for the bottle"
    );
    assert_eq!(sandbox.pod_name().as_deref(), Some(NAME));
    // The controller's pod: that spec, our labels and launcher annotation (so `list` and
    // `cleanup` see it as any bottle's pod), controlled by the Sandbox.
    let pod = cluster.pod(NAME).unwrap();
    assert_eq!(pod.spec, built.spec);
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()[objects::LABEL_IDENTITY],
        "claude-1a2b3"
    );
    assert_eq!(
        pod.metadata.annotations, built.metadata.annotations,
        "the launcher annotation did not reach the pod"
    );
    let owner =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            let r = refs.unwrap().remove(0);
            (r.kind, r.name, r.uid)
        };
    let sandbox_owner = (
        "Sandbox".to_owned(),
        NAME.to_owned(),
        sandbox.metadata.uid.clone().unwrap(),
    );
    assert_eq!(owner(pod.metadata.owner_references), sandbox_owner);
    assert_eq!(
        owner(cluster.secret(NAME).unwrap().metadata.owner_references),
        sandbox_owner
    );
    assert_eq!(
        owner(cluster.config_map(NAME).unwrap().metadata.owner_references),
        sandbox_owner
    );
    assert_eq!(
        backend
            .list()
            .unwrap()
            .iter()
            .map(|b| (b.identity.clone(), b.running))
            .collect::<Vec<_>>(),
        vec![("claude-1a2b3".to_owned(), true)]
    );
    let agent = play_agent(cluster.clone(), 3);
    assert_eq!(bottle.wait().unwrap().code, 3);
    agent.join().unwrap();
    assert!(
        cluster
            .calls()
            .contains(&format!("delete sandbox {NAME} grace=0")),
        "{:?}",
        cluster.calls()
    );
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(
        cluster.pod(NAME),
        None,
        "the Sandbox's pod outlived the bottle"
    );
    assert_eq!(cluster.secret(NAME), None);
    assert_eq!(cluster.config_map(NAME), None);
}

/// `stop` of a Sandbox's bottle deletes the Sandbox: its controller makes a pod deleted
/// alone again, so deleting the pod would not stop the bottle.
#[test]
fn stop_deletes_a_sandbox_bottles_sandbox_not_only_the_pod_its_controller_would_remake() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    let backend = backend(&f, &cluster);
    let mut bottle = backend.launch(&f.spec, quiet()).unwrap();
    // What the fake's controller does with a pod deleted alone (the reason for the rest).
    cluster.set_status(NAME, fake::agent_running());
    let uid = cluster.pod(NAME).unwrap().metadata.uid;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        rt.block_on(cluster.delete_pod(NAME, Duration::ZERO, None))
            .unwrap()
    );
    let remade = cluster.pod(NAME).expect("the controller remakes the pod");
    assert_ne!(remade.metadata.uid, uid);

    // `stop` from another terminal: the record names the pod launched, which the
    // controller's remade one is not, and the Sandbox, the bottle's, which goes with it.
    // (A record without the Sandbox's uid, an older binary's, proves nothing here: refused,
    // `stop_from_an_older_record_deletes_no_sandbox_it_cannot_prove_the_bottles`.)
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state").join(&f.spec.identity);
    std::fs::create_dir_all(&state).unwrap();
    PodRecord {
        namespace: Some("agents".into()),
        pod_uid: uid.clone(),
        sandbox_uid: cluster.sandbox(NAME).unwrap().metadata.uid,
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    let other = KubernetesBackend::with_cluster(f.config.clone(), cluster.clone())
        .unwrap()
        .with_home(home.path().to_path_buf());
    assert!(
        other
            .stop(&f.spec.identity, Duration::from_secs(7))
            .unwrap()
    );
    assert!(
        cluster
            .calls()
            .contains(&format!("delete sandbox {NAME} grace=7")),
        "{:?}",
        cluster.calls()
    );
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(cluster.pod(NAME), None);
    // The bottle sees its pod deleted under it: killed.
    assert_eq!(bottle.wait().unwrap().code, 137);
}

/// `kubernetes.sandbox: false` runs a plain pod without asking the cluster; `true` fails
/// before anything exists where the cluster serves no Sandbox API, saying what to install
/// or set.
#[test]
fn the_sandbox_key_forces_a_plain_pod_or_requires_the_api() {
    let mut f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    f.config.settings.sandbox = Some(false);
    let mut bottle = backend(&f, &cluster).launch(&f.spec, quiet()).unwrap();
    assert_eq!(cluster.calls()[0], format!("create pod {NAME}"));
    assert_eq!(cluster.sandbox(NAME), None);
    bottle.kill().unwrap();

    let plain = Arc::new(FakeCluster::new());
    plain.on_create(fake::agent_running());
    f.config.settings.sandbox = Some(true);
    let err = backend(&f, &plain)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("kubernetes.sandbox: true")
            && err.contains("agents.x-k8s.io/Sandbox")
            && err.contains("`agents`")
            && err.contains("install agent-sandbox")
            && err.contains("sandbox: false"),
        "{err}"
    );
    assert_eq!(plain.calls(), vec!["discover agents.x-k8s.io".to_owned()]);

    // Unset: a plain pod where the API is not served.
    f.config.settings.sandbox = None;
    let mut bottle = backend(&f, &plain).launch(&f.spec, quiet()).unwrap();
    assert!(plain.calls().contains(&format!("create pod {NAME}")));
    bottle.kill().unwrap();
}

/// A launch that fails after the Sandbox exists (an image the nodes cannot pull) deletes
/// the Sandbox, and with it the pod, Secret and ConfigMap: nothing is left.
#[test]
fn a_failed_sandbox_launch_deletes_the_sandbox_and_leaves_nothing() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1alpha1");
    cluster.on_create(fake::image_pull_failure());
    let err = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot pull image"), "{err}");
    assert!(
        cluster
            .calls()
            .contains(&format!("delete sandbox {NAME} grace=0"))
    );
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
    assert_eq!(cluster.config_map(NAME), None);
}

/// The Sandbox of bottle `identity` launched by `launcher`, as its `start` would create it
/// (a minimal pod template), with no status yet.
fn sandbox_of(identity: &str, launcher: &str) -> objects::Sandbox {
    let pod = foreign_pod(identity, launcher, fake::agent_running());
    let mut objects = BottleObjects {
        pod,
        secret: Default::default(),
        config_map: Default::default(),
        home_claim: None,
        sandbox: None,
    };
    objects.pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "agent".into(),
            image: Some("bot-bottle/agent-claude:0123".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    objects.as_sandbox("v1beta1");
    objects.sandbox.unwrap()
}

/// `list` shows a bottle whose Sandbox has no pod (yet, or any more), with its state: one
/// its controller still works on is starting (`running`, and an orphan when its launcher
/// here is gone, as a starting pod is); one the controller reported it cannot make a pod
/// for, or one being deleted, is not running. A Sandbox with its pod is listed once.
#[test]
fn list_shows_a_sandbox_without_a_pod_with_its_state() {
    let f = fixture();
    let machine = machine_id();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    let gone = format!("{machine}/not-this-boot:4242:99");
    // Not acted on yet, its launcher here gone.
    cluster.insert_sandbox(sandbox_of("claude-00021", &gone));
    // Its controller cannot make the pod.
    let mut failed = sandbox_of("claude-00022", &launcher_annotation());
    failed.status = Some(objects::SandboxStatus {
        conditions: vec![objects::SandboxCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("ReconcilerError".into()),
            message: Some("Pod \"bot-bottle-claude-00022\" is invalid".into()),
        }],
    });
    cluster.insert_sandbox(failed);
    // Being deleted (a finalizer holds it).
    let mut deleting = sandbox_of("claude-00023", &launcher_annotation());
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-06T12:00:00Z".parse().unwrap(),
        ));
    cluster.insert_sandbox(deleting);
    // With its pod, made by the controller.
    cluster.on_create(fake::agent_running());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cluster.create_sandbox(&sandbox_of("claude-00024", &launcher_annotation())))
        .unwrap();
    assert!(cluster.pod("bot-bottle-claude-00024").is_some());

    let mut listed: Vec<(String, bool, bool)> = backend(&f, &cluster)
        .list()
        .unwrap()
        .into_iter()
        .map(|b| (b.identity, b.running, b.orphaned))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("claude-00021".into(), true, !machine.is_empty()),
            ("claude-00022".into(), false, false),
            ("claude-00023".into(), false, false),
            ("claude-00024".into(), true, false),
        ]
    );
}

/// A Sandbox whose pod is gone (or never came) and whose launcher ran here and is gone is
/// an orphan: `cleanup --dry-run` lists it, `cleanup` deletes it. One of a live launcher,
/// or of another machine, stays; an orphaned Sandbox's running pod is killed through it.
#[test]
fn cleanup_removes_an_orphaned_sandbox_and_kills_an_orphans_pod_through_its_sandbox() {
    let f = fixture();
    let machine = machine_id();
    if machine.is_empty() {
        eprintln!("skipped: this machine has no /etc/machine-id, so no Sandbox is judged");
        return;
    }
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    let gone = format!("{machine}/not-this-boot:4242:99");
    // Pod-less: of a gone launcher here, of this live process, of another machine.
    cluster.insert_sandbox(sandbox_of("claude-00011", &gone));
    cluster.insert_sandbox(sandbox_of("claude-00012", &launcher_annotation()));
    cluster.insert_sandbox(sandbox_of("claude-00013", "another-machine/boot:1:1"));
    // An orphan whose Sandbox's controller made its pod.
    cluster.on_create(fake::agent_running());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cluster.create_sandbox(&sandbox_of("claude-00014", &gone)))
        .unwrap();
    assert!(cluster.pod("bot-bottle-claude-00014").is_some());

    let backend = backend(&f, &cluster);
    let dry = backend.cleanup(true).unwrap();
    assert_eq!(
        dry,
        vec![
            CleanupAction::KilledOrphan {
                identity: "claude-00014".into()
            },
            CleanupAction::RemovedSandbox {
                name: "bot-bottle-claude-00011".into()
            },
        ]
    );
    assert!(
        cluster.sandbox("bot-bottle-claude-00011").is_some(),
        "dry run deleted"
    );
    assert_eq!(backend.cleanup(false).unwrap(), dry);
    assert_eq!(cluster.sandbox("bot-bottle-claude-00011"), None);
    assert_eq!(cluster.sandbox("bot-bottle-claude-00014"), None);
    assert_eq!(
        cluster.pod("bot-bottle-claude-00014"),
        None,
        "the orphan's pod came back: only the pod was deleted"
    );
    assert!(cluster.sandbox("bot-bottle-claude-00012").is_some());
    assert!(cluster.sandbox("bot-bottle-claude-00013").is_some());
}

/// `resume` of a bottle whose home claim was made but is gone refuses to start the agent on
/// an empty home, naming the bottle, the namespace, the claim and what to do; nothing is
/// created.
#[test]
fn resume_without_the_home_claim_it_made_refuses_instead_of_a_fresh_home() {
    let (mut f, home) = kept_home_fixture();
    f.config.kept_home = HomeClaimState::Made;
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let err = kept_home_backend(&f, &home, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("claude-1a2b3")
            && err.contains(&format!("`{CLAIM}`"))
            && err.contains("namespace `agents`")
            && err.contains("empty home")
            && err.contains("bot-bottle discard claude-1a2b3"),
        "{err}"
    );
    assert_eq!(
        cluster.calls(),
        vec![
            "discover agents.x-k8s.io".to_owned(),
            format!("get claim {CLAIM}")
        ],
        "something was created"
    );
}

/// A record written by an older binary (it names the claim, not whether it was made) and
/// one that cannot be read say nothing of the claim: `launch` then refuses to go on without
/// it, naming the bottle, the namespace and the claim; nothing is created. No record, one
/// naming no claim, or one saying none was made, let a missing claim be made.
#[test]
fn a_record_that_does_not_say_the_claim_was_made_refuses_a_launch_without_it() {
    let (mut f, home) = kept_home_fixture();
    let state = home.join("state").join("claude-1a2b3");
    let record = state.join(RECORD);
    let cases = [
        (
            r#"{"context":null,"namespace":"agents","home_claim":"bot-bottle-claude-1a2b3-home"}"#,
            HomeClaimState::Unknown,
        ),
        (r#"{"namespace":"agents""#, HomeClaimState::Unknown),
        (
            r#"{"namespace":"agents","home_claim":"bot-bottle-claude-1a2b3-home","home_made":true}"#,
            HomeClaimState::Made,
        ),
        (
            r#"{"namespace":"agents","home_claim":"bot-bottle-claude-1a2b3-home","home_made":false}"#,
            HomeClaimState::NotMade,
        ),
        (r#"{"namespace":"agents"}"#, HomeClaimState::NotMade),
    ];
    for (text, said) in cases {
        std::fs::write(&record, text).unwrap();
        assert_eq!(PodRecord::home_claim_state(&state), said, "{text}");
    }
    std::fs::remove_file(&record).unwrap();
    assert_eq!(PodRecord::home_claim_state(&state), HomeClaimState::NotMade);
    // What a launch writes says it, either way.
    for made in [false, true] {
        let r = PodRecord {
            home_claim: Some(CLAIM.into()),
            home_made: Some(made),
            ..Default::default()
        };
        r.write(&state).unwrap();
        assert_eq!(PodRecord::read(&state), Some(r));
    }

    f.config.kept_home = HomeClaimState::Unknown;
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    let err = kept_home_backend(&f, &home, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    for part in [
        "bottle claude-1a2b3's record",
        "does not say whether its home claim `bot-bottle-claude-1a2b3-home` was made",
        "namespace `agents` has no such claim",
        "empty home",
        "`bot-bottle discard claude-1a2b3`",
    ] {
        assert!(err.contains(part), "no `{part}` in: {err}");
    }
    assert_eq!(
        cluster.calls(),
        vec![
            "discover agents.x-k8s.io".to_owned(),
            format!("get claim {CLAIM}")
        ],
        "something was created"
    );
}

/// A pod template the controller cannot turn into a pod (here: a sidecar image that is
/// empty, which the API server refuses) leaves the Sandbox `Ready=False` with the
/// controller's reason: the launch fails with that word instead of waiting out its timeout,
/// and deletes the Sandbox, Secret and ConfigMap.
#[test]
fn a_pod_the_sandbox_controller_cannot_make_fails_the_launch_with_its_word() {
    let mut f = fixture();
    f.config.sidecar.as_mut().unwrap().image = String::new();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    let err = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the agent-sandbox controller could not make the bottle's pod")
            && err.contains("image: Required value"),
        "{err}"
    );
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
    assert_eq!(cluster.config_map(NAME), None);
}

/// The pod built for the fixture's bottle, as someone allowed to create pods in the
/// namespace could make it beforehand: unowned, labelled adoptable, already running.
fn premade_pod(f: &Fixture, cluster: &Arc<FakeCluster>, change: fn(&mut Pod)) -> Pod {
    let plan = backend(f, cluster).plan(&f.spec, fake::NAMESPACE).unwrap();
    let mut pod = bottle_objects(&plan).unwrap().pod;
    pod.metadata
        .labels
        .get_or_insert_default()
        .insert(fake::ADOPTABLE_LABEL.into(), "true".into());
    pod.status = Some(fake::agent_running());
    change(&mut pod);
    pod
}

/// agent-sandbox's controller adopts an unowned pod of the Sandbox's name labelled
/// `agents.x-k8s.io/adoptable: "true"` instead of making the one built for the bottle, and
/// keeps its spec: a launch into a pod made beforehand with another command, an extra
/// container, no runtime class, the node's root or a service-account token fails naming
/// the pod, its namespace and the field, sends it nothing of the bottle (no Secret, no
/// ConfigMap) and deletes the Sandbox (the adopted pod goes with it).
#[test]
fn a_premade_pod_the_sandbox_controller_adopts_is_checked_and_refused_unless_it_is_the_pod_built() {
    type Change = fn(&mut Pod);
    let cases: Vec<(&str, Change)> = vec![
        ("containers[agent].command", |p| {
            p.spec.as_mut().unwrap().containers[0].command =
                Some(vec!["/bin/sh".into(), "-c".into(), "cat /dev/tcp/x".into()]);
        }),
        ("containers", |p| {
            p.spec
                .as_mut()
                .unwrap()
                .containers
                .push(k8s_openapi::api::core::v1::Container {
                    name: "watcher".into(),
                    image: Some("evil/watcher:1".into()),
                    ..Default::default()
                });
        }),
        ("runtimeClassName", |p| {
            p.spec.as_mut().unwrap().runtime_class_name = None;
        }),
        ("initContainers", |p| {
            // No packet filter.
            p.spec
                .as_mut()
                .unwrap()
                .init_containers
                .as_mut()
                .unwrap()
                .remove(0);
        }),
        ("volumes[tmp]", |p| {
            let volumes = p.spec.as_mut().unwrap().volumes.as_mut().unwrap();
            let tmp = volumes.iter_mut().find(|v| v.name == "tmp").unwrap();
            *tmp = k8s_openapi::api::core::v1::Volume {
                name: "tmp".into(),
                host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                    path: "/".into(),
                    type_: None,
                }),
                ..Default::default()
            };
        }),
        ("automountServiceAccountToken", |p| {
            p.spec.as_mut().unwrap().automount_service_account_token = Some(true);
        }),
        ("shareProcessNamespace", |p| {
            p.spec.as_mut().unwrap().share_process_namespace = Some(true);
        }),
        ("containers[agent].securityContext", |p| {
            let sc = p.spec.as_mut().unwrap().containers[0]
                .security_context
                .as_mut()
                .unwrap();
            sc.run_as_user = Some(0);
            sc.run_as_non_root = Some(false);
        }),
        ("containers[agent].resources", |p| {
            p.spec.as_mut().unwrap().containers[0].resources = None;
        }),
    ];
    for (field, change) in cases {
        let f = fixture();
        let cluster = Arc::new(FakeCluster::new());
        cluster.serve_sandboxes("v1beta1");
        cluster.on_create(fake::agent_running());
        cluster.insert_pod(premade_pod(&f, &cluster, change));
        let err = backend(&f, &cluster)
            .launch(&f.spec, quiet())
            .err()
            .unwrap_or_else(|| panic!("a premade pod whose {field} differs was run"))
            .to_string();
        assert!(
            err.contains(&format!("pod `{NAME}` in namespace `agents`"))
                && err.contains(&format!("its `{field}` differs"))
                && err.contains("agents.x-k8s.io/adoptable"),
            "{field}: {err}"
        );
        let calls = cluster.calls();
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("create secret") || c.starts_with("create configmap")),
            "{field}: the bottle's Secret or files were sent to the pod made beforehand: {calls:?}"
        );
        assert!(
            calls.contains(&format!("delete sandbox {NAME} grace=0")),
            "{field}: {calls:?}"
        );
        assert_eq!(cluster.sandbox(NAME), None, "{field}");
        assert_eq!(cluster.pod(NAME), None, "{field}: the adopted pod stays");
        assert_eq!(cluster.secret(NAME), None, "{field}");
    }

    // The pod built, made beforehand and adopted, is the bottle's pod: it runs.
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    cluster.insert_pod(premade_pod(&f, &cluster, |_| {}));
    let mut bottle = backend(&f, &cluster).launch(&f.spec, quiet()).unwrap();
    assert!(cluster.secret(NAME).is_some());
    bottle.kill().unwrap();
}

/// A pod of the Sandbox's name that is not labelled adoptable is not adopted: the
/// controller says so and the launch fails with its word, deleting the Sandbox (the pod,
/// someone else's, stays).
#[test]
fn a_premade_pod_not_labelled_adoptable_fails_the_launch_with_the_controllers_word() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    cluster.insert_pod(premade_pod(&f, &cluster, |p| {
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(fake::ADOPTABLE_LABEL);
    }));
    let err = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("could not make the bottle's pod") && err.contains("cannot adopt unowned pod"),
        "{err}"
    );
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(cluster.secret(NAME), None);
    // The pod made beforehand was never the bottle's (the launch never saw it as its
    // Sandbox's): the failed launch deletes its Sandbox and leaves that pod.
    assert!(cluster.pod(NAME).is_some());
    assert!(
        !cluster
            .calls()
            .contains(&format!("delete pod {NAME} grace=0")),
        "{:?}",
        cluster.calls()
    );
}

/// A pod's images can be patched after it was created (by anyone allowed to patch pods):
/// the running pod is checked again, for a plain pod and a Sandbox's, and one whose agent
/// image changed after the first check is deleted and the launch fails naming the field.
#[test]
fn a_pod_patched_after_it_was_created_is_refused_when_it_runs() {
    for sandboxed in [false, true] {
        let f = fixture();
        let cluster = Arc::new(FakeCluster::new());
        if sandboxed {
            cluster.serve_sandboxes("v1beta1");
        }
        cluster.on_create(fake::starting());
        let patcher = {
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                // After the first check (the Secret follows it), before the agent runs.
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while cluster.secret(NAME).is_none() || cluster.config_map(NAME).is_none() {
                    assert!(std::time::Instant::now() < deadline, "no Secret came");
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert!(cluster.patch_pod(NAME, |p| {
                    p.spec.as_mut().unwrap().containers[0].image = Some("evil/agent:1".into());
                }));
                cluster.set_status(NAME, fake::agent_running());
            })
        };
        let err = backend(&f, &cluster)
            .launch(&f.spec, quiet())
            .err()
            .unwrap_or_else(|| panic!("sandboxed={sandboxed}: a patched pod was run"))
            .to_string();
        patcher.join().unwrap();
        assert!(
            err.contains(&format!("pod `{NAME}` in namespace `agents`"))
                && err.contains("its `containers[agent].image` differs"),
            "sandboxed={sandboxed}: {err}"
        );
        assert_eq!(cluster.pod(NAME), None, "sandboxed={sandboxed}");
        assert_eq!(cluster.secret(NAME), None, "sandboxed={sandboxed}");
        assert_eq!(cluster.sandbox(NAME), None, "sandboxed={sandboxed}");
        assert!(
            !cluster.calls().iter().any(|c| c.starts_with("attach")),
            "sandboxed={sandboxed}: attached to a patched pod"
        );
    }
}

/// A plain pod deleted and made again under its name between the check and the agent's
/// start (same spec, so the spec check passes) is not the pod checked: the launch fails
/// saying so and deletes it. A watch sees the deletion and fails the launch already; this
/// is the watch that started over (its version expired, 410) and missed it: the fake puts
/// the new pod in place with no `DELETED` event.
#[test]
fn a_pod_made_again_in_place_of_the_checked_one_is_refused() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::starting());
    let premade = premade_pod(&f, &cluster, |_| {});
    let replacer = {
        let cluster = cluster.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while cluster.config_map(NAME).is_none() {
                assert!(std::time::Instant::now() < deadline, "no ConfigMap came");
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut pod = premade;
            pod.metadata.uid = Some("uid-elsewhere".into());
            cluster.insert_pod(pod);
        })
    };
    let err = backend(&f, &cluster)
        .launch(&f.spec, quiet())
        .err()
        .expect("a pod made in place of the checked one was run")
        .to_string();
    replacer.join().unwrap();
    assert!(
        err.contains(&format!(
            "pod `{NAME}` in namespace `agents` was deleted and made again"
        )) && err.contains("uid-elsewhere"),
        "{err}"
    );
    // The pod made in its place is not the bottle's: the failed launch's teardown deletes
    // the pod it checked (its uid a delete precondition) and leaves that one.
    assert_eq!(
        cluster.pod(NAME).and_then(|p| p.metadata.uid).as_deref(),
        Some("uid-elsewhere")
    );
    assert!(!cluster.calls().iter().any(|c| c.starts_with("attach")));
}

/// The bottle's Sandbox deleted and made again under its name (another bottle's, one a
/// controller put in its place) is not the bottle's: the bottle's own end and `stop` from
/// another terminal delete the Sandbox of the uid the launch saw (a delete precondition),
/// leave the one made again, and end without an error.
#[test]
fn a_sandbox_made_again_under_the_bottles_name_survives_the_bottles_teardown() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    let mut bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
    let ours = cluster.sandbox(NAME).unwrap().metadata.uid;
    assert!(ours.is_some());
    assert_eq!(bottle.sandbox_uid(), ours.as_deref());
    let launched = bottle.pod_uid().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Someone deletes it (its pod goes with it) and makes another of its name.
    assert!(
        rt.block_on(cluster.delete_sandbox(NAME, Duration::ZERO, None))
            .unwrap()
    );
    cluster.insert_sandbox(sandbox_of("claude-1a2b3", "elsewhere/x:1:2"));
    let again = cluster.sandbox(NAME).unwrap().metadata.uid;
    assert_ne!(again, ours);

    bottle.remove().unwrap();
    assert_eq!(cluster.sandbox(NAME).unwrap().metadata.uid, again);

    let record = PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some(launched),
        sandbox_uid: ours,
        ..Default::default()
    };
    assert!(!stop_from_another_terminal(&f, &cluster, record));
    assert_eq!(cluster.sandbox(NAME).unwrap().metadata.uid, again);
}

/// `stop` of `f`'s bottle by a backend that reads `record` as the bottle's (another
/// terminal's): whether there was anything to delete.
fn stop_from_another_terminal(f: &Fixture, cluster: &Arc<FakeCluster>, record: PodRecord) -> bool {
    try_stop_from_another_terminal(f, cluster, record).unwrap()
}

/// As [`stop_from_another_terminal`], its error said as the operator reads it.
fn try_stop_from_another_terminal(
    f: &Fixture,
    cluster: &Arc<FakeCluster>,
    record: PodRecord,
) -> Result<bool, String> {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state").join(&f.spec.identity);
    std::fs::create_dir_all(&state).unwrap();
    record.write(&state).unwrap();
    let other = backend(f, cluster).with_home(home.path().to_path_buf());
    other
        .stop(&f.spec.identity, Duration::ZERO)
        .map_err(|e| e.to_string())
}

/// `stop` from a record of an older binary (it holds the launched pod's uid, not the
/// Sandbox's) deletes the bottle's Sandbox only when the pod its launch checked proves it
/// (that pod's controller, by uid). A Sandbox made again under the bottle's name, with no
/// pod or with a pod of its own, is not proven the bottle's: `stop` deletes nothing,
/// refuses, and says what to look at and run by hand.
#[test]
fn stop_from_an_older_record_deletes_no_sandbox_it_cannot_prove_the_bottles() {
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    let older = |uid: &str| PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some(uid.to_owned()),
        ..Default::default()
    };
    // Running: its pod's controller is the bottle's Sandbox.
    let mut bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
    let launched = bottle.pod_uid().to_owned();
    assert!(stop_from_another_terminal(&f, &cluster, older(&launched)));
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(cluster.pod(NAME), None);
    bottle.remove().unwrap();

    // Gone, and another Sandbox made under its name (another launch of the same name).
    let mut again = sandbox_of("claude-1a2b3", "elsewhere/x:1:2");
    again.metadata.uid = Some("uid-sandbox-again".into());
    cluster.insert_sandbox(again);
    let again = cluster.sandbox(NAME).unwrap().metadata.uid;
    let refused = |e: &str| {
        assert!(
            e.contains("sandbox `bot-bottle-claude-1a2b3` in namespace `agents` is not known to be this bottle's")
                && e.contains("does not hold its uid")
                && e.contains("`kubectl -n agents get sandbox bot-bottle-claude-1a2b3 -o yaml`")
                && e.contains("`kubectl -n agents delete sandbox bot-bottle-claude-1a2b3`"),
            "{e}"
        );
    };
    let before = cluster.calls().len();
    let e = try_stop_from_another_terminal(&f, &cluster, older(&launched)).unwrap_err();
    refused(&e);
    assert!(e.contains("the pod its launch checked is gone"), "{e}");
    assert_eq!(cluster.sandbox(NAME).unwrap().metadata.uid, again);

    // Its controller made its pod: not the launched one, so still not proven.
    let mut pod = foreign_pod("claude-1a2b3", "elsewhere/x:1:2", fake::agent_running());
    pod.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "agents.x-k8s.io/v1beta1".into(),
            kind: "Sandbox".into(),
            name: NAME.into(),
            uid: again.clone().unwrap(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    pod.metadata.uid = Some("uid-pod-again".into());
    cluster.insert_pod(pod);
    // (An empty uid, as a binary that turned a missing one into "" recorded it, is none.)
    let record = PodRecord {
        sandbox_uid: Some(String::new()),
        ..older(&launched)
    };
    let e = try_stop_from_another_terminal(&f, &cluster, record).unwrap_err();
    refused(&e);
    assert!(
        e.contains("the pod under the bottle's name is not the one its launch checked"),
        "{e}"
    );
    assert_eq!(cluster.sandbox(NAME).unwrap().metadata.uid, again);
    assert_eq!(
        cluster.pod(NAME).unwrap().metadata.uid.as_deref(),
        Some("uid-pod-again")
    );
    assert_eq!(deletes_since(&cluster, before), Vec::<String>::new());
}

/// A Secret of the bottle's name that is not the bottle's (made beforehand) fails the
/// launch (409) and stays: a failed launch deletes what it made, pinned by uid (the pod,
/// whose Secret and ConfigMap go with it), never a Secret or ConfigMap by name.
#[test]
fn a_secret_of_the_bottles_name_made_beforehand_fails_the_launch_and_stays() {
    for sandboxed in [false, true] {
        let f = fixture();
        let cluster = Arc::new(FakeCluster::new());
        if sandboxed {
            cluster.serve_sandboxes("v1beta1");
        }
        cluster.on_create(fake::agent_running());
        cluster.insert_secret(Secret {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                uid: Some("uid-someone-elses".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let e = backend(&f, &cluster)
            .launch(&f.spec, quiet())
            .err()
            .expect("the launch fails on the Secret's name")
            .to_string();
        assert!(e.contains("a secret of that name exists already"), "{e}");
        assert_eq!(
            cluster.secret(NAME).and_then(|s| s.metadata.uid).as_deref(),
            Some("uid-someone-elses"),
            "sandboxed: {sandboxed}"
        );
        assert_eq!(cluster.pod(NAME), None);
        assert_eq!(cluster.sandbox(NAME), None);
        assert_eq!(cluster.config_map(NAME), None);
    }
}

mod warm;

/// The in-memory cluster answers every kind of delete as the API server does, in the words
/// the real client reports it with (`client`'s `every_delete_pins_the_uid_...` test): a uid
/// precondition of another uid is refused (409) naming both uids and the kind as kubectl
/// names it, a pod's as [`ClusterError::Replaced`], and the object stays; the right uid
/// deletes it; a second delete finds none (`false`).
#[test]
fn the_fake_answers_every_delete_as_the_real_client_reports_the_api_server() {
    use super::cluster::LeftoverKind;
    use super::pool::ExtKind;
    let cluster = FakeCluster::new();
    cluster.serve_sandboxes("v1beta1");
    cluster.serve_warm_pools();
    cluster.hold_claims();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let meta = || ObjectMeta {
        name: Some(NAME.into()),
        ..Default::default()
    };
    cluster.insert_pod(Pod {
        metadata: meta(),
        ..Default::default()
    });
    cluster.insert_secret(Secret {
        metadata: meta(),
        ..Default::default()
    });
    cluster.insert_config_map(k8s_openapi::api::core::v1::ConfigMap {
        metadata: meta(),
        ..Default::default()
    });
    cluster.insert_claim(k8s_openapi::api::core::v1::PersistentVolumeClaim {
        metadata: ObjectMeta {
            uid: Some("uid-home".into()),
            ..meta()
        },
        ..Default::default()
    });
    cluster.insert_sandbox(sandbox_of("claude-1a2b3", "elsewhere/x:1:2"));
    for kind in [ExtKind::Template, ExtKind::Claim] {
        let object = serde_json::json!({
            "apiVersion": ExtKind::api_version(), "kind": kind.kind(),
            "metadata": {"name": NAME}, "spec": {},
        });
        rt.block_on(cluster.ext_create(kind, &object)).unwrap();
    }
    let uid_of = |kind: ObjectKind| match kind {
        ObjectKind::Pod => cluster.pod(NAME).and_then(|o| o.metadata.uid),
        ObjectKind::Leftover(LeftoverKind::Secret) => {
            cluster.secret(NAME).and_then(|o| o.metadata.uid)
        }
        ObjectKind::Leftover(LeftoverKind::ConfigMap) => {
            cluster.config_map(NAME).and_then(|o| o.metadata.uid)
        }
        ObjectKind::VolumeClaim => cluster.claim(NAME).and_then(|o| o.metadata.uid),
        ObjectKind::Sandbox => cluster.sandbox(NAME).and_then(|o| o.metadata.uid),
        ObjectKind::Ext(kind) => cluster
            .ext_object(kind, NAME)
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned)),
    };
    let delete = |kind: ObjectKind, uid: &str| {
        rt.block_on(async {
            match kind {
                ObjectKind::Pod => cluster.delete_pod(NAME, Duration::ZERO, Some(uid)).await,
                ObjectKind::Leftover(kind) => cluster.delete_leftover(kind, NAME, uid).await,
                ObjectKind::VolumeClaim => cluster.delete_claim(NAME, Some(uid)).await,
                ObjectKind::Sandbox => {
                    cluster
                        .delete_sandbox(NAME, Duration::ZERO, Some(uid))
                        .await
                }
                ObjectKind::Ext(kind) => cluster.ext_delete(kind, NAME, Some(uid)).await,
            }
        })
    };
    for (kind, noun) in [
        (ObjectKind::Pod, "pod"),
        (ObjectKind::Leftover(LeftoverKind::Secret), "secret"),
        (ObjectKind::Leftover(LeftoverKind::ConfigMap), "configmap"),
        (ObjectKind::VolumeClaim, "persistentvolumeclaim"),
        (ObjectKind::Sandbox, "sandbox"),
        (ObjectKind::Ext(ExtKind::Claim), "sandboxclaim"),
        (ObjectKind::Ext(ExtKind::Template), "sandboxtemplate"),
    ] {
        let found = uid_of(kind).expect("the object is there with a uid");
        let refused = match kind {
            ObjectKind::Pod => ClusterError::Replaced {
                pod: NAME.into(),
                namespace: "agents".into(),
                recorded: "uid-not-this".into(),
                found: found.clone(),
            },
            _ => ClusterError::ReplacedObject {
                kind: noun.into(),
                name: NAME.into(),
                namespace: "agents".into(),
                recorded: "uid-not-this".into(),
                found: found.clone(),
            },
        };
        assert_eq!(delete(kind, "uid-not-this"), Err(refused), "{kind:?}");
        assert_eq!(uid_of(kind).as_ref(), Some(&found), "{kind:?} stays");
        assert_eq!(delete(kind, &found), Ok(true), "{kind:?}");
        assert_eq!(uid_of(kind), None, "{kind:?}");
        assert_eq!(delete(kind, &found), Ok(false), "{kind:?}");
    }
}

/// The delete calls `cluster` got from its `from`th call on.
fn deletes_since(cluster: &FakeCluster, from: usize) -> Vec<String> {
    cluster.calls()[from..]
        .iter()
        .filter(|c| c.starts_with("delete"))
        .cloned()
        .collect()
}

/// What the operator reads when the API server answered with `kind` `name` without a uid.
fn assert_no_uid(e: &str, kind: &str, name: &str) {
    assert!(
        e.contains(&format!(
            "the Kubernetes API server answered with {kind} `{name}` in namespace `agents` without a uid"
        )) && e.contains("the bottle was not started")
            && e.contains(&format!("`kubectl -n agents delete {kind} {name}`")),
        "{e}"
    );
}

/// A launch never records an empty identity: an object it makes or takes that the API
/// server answered without a uid (the pod, the Sandbox, the pod a Sandbox's controller made,
/// the home claim) fails the launch, naming it, before anything of the bottle's (its Secret,
/// its files) is sent; what a uid pins is deleted, what none pins is left (said, with the
/// kubectl to run).
#[test]
fn an_object_the_api_server_answers_without_a_uid_fails_the_launch_naming_it() {
    let launch = |cluster: &Arc<FakeCluster>, f: &Fixture| {
        backend(f, cluster)
            .launch_pod(&f.spec, quiet())
            .err()
            .expect("the launch fails")
            .to_string()
    };
    let sent = |cluster: &FakeCluster| {
        cluster.secret(NAME).is_some() || cluster.config_map(NAME).is_some()
    };

    // A plain pod: refused at its creation, left (nothing pins it).
    let f = fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    cluster.without_uids(ObjectKind::Pod);
    assert_no_uid(&launch(&cluster, &f), "pod", NAME);
    assert!(!sent(&cluster));
    assert!(cluster.pod(NAME).is_some());
    assert_eq!(deletes_since(&cluster, 0), Vec::<String>::new());

    // A Sandbox: refused at its creation, left.
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    cluster.without_uids(ObjectKind::Sandbox);
    assert_no_uid(&launch(&cluster, &f), "sandbox", NAME);
    assert!(!sent(&cluster));
    assert!(cluster.sandbox(NAME).is_some());
    assert_eq!(deletes_since(&cluster, 0), Vec::<String>::new());

    // The pod a Sandbox's controller made: refused; the Sandbox (its uid pins it) goes,
    // and the pod with it.
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    cluster.without_uids(ObjectKind::Pod);
    assert_no_uid(&launch(&cluster, &f), "pod", NAME);
    assert!(!sent(&cluster));
    assert_eq!(cluster.sandbox(NAME), None);
    assert_eq!(cluster.pod(NAME), None);

    // The home claim a first run makes: refused before any pod, left.
    let (f, home) = kept_home_fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.on_create(fake::agent_running());
    cluster.without_uids(ObjectKind::VolumeClaim);
    let e = kept_home_backend(&f, &home, &cluster)
        .launch_pod(&f.spec, quiet())
        .err()
        .expect("the launch fails")
        .to_string();
    assert_no_uid(&e, "persistentvolumeclaim", CLAIM);
    assert!(cluster.claim(CLAIM).is_some());
    assert_eq!(cluster.pod(NAME), None);
    assert_eq!(deletes_since(&cluster, 0), Vec::<String>::new());
}

/// An object of a bottle that has no uid is never deleted by its name alone: `discard`
/// leaves a home claim without one, `cleanup` a Sandbox or home claim without one (each
/// judged the bottle's otherwise), as each deletes only what a uid pins.
#[test]
fn discard_and_cleanup_leave_an_object_without_a_uid() {
    if machine_id().is_empty() {
        eprintln!("skipping: this machine has no /etc/machine-id, so nothing is judged");
        return;
    }
    let (f, home) = kept_home_fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.without_uids(ObjectKind::VolumeClaim);
    cluster.without_uids(ObjectKind::Sandbox);
    let home_claim = |identity: &str| k8s_openapi::api::core::v1::PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(objects::home_claim_name(identity)),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "bot-bottle".into()),
                (objects::LABEL_IDENTITY.into(), identity.into()),
            ])),
            annotations: Some(BTreeMap::from([(
                objects::ANNOTATION_HOME.into(),
                home_annotation(Some(&home)),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    // The bottle's own home claim, as `discard` judges it: left.
    cluster.insert_claim(home_claim(&f.spec.identity));
    assert!(cluster.claim(CLAIM).unwrap().metadata.uid.is_none());
    let backend = kept_home_backend(&f, &home, &cluster);
    assert_eq!(backend.discard(&f.spec.identity).unwrap(), vec![]);
    assert!(cluster.claim(CLAIM).is_some());
    // A gone bottle's home claim and an orphaned Sandbox, as `cleanup` judges them: left.
    cluster.insert_claim(home_claim("claude-00001"));
    let machine = machine_id();
    let mut sandbox = sandbox_of("claude-00005", &format!("{machine}/not-this-boot:4242:99"));
    sandbox.metadata.name = Some("bot-bottle-claude-00005".into());
    cluster.insert_sandbox(sandbox);
    assert_eq!(backend.cleanup(false).unwrap(), vec![]);
    assert!(
        cluster
            .claim(&objects::home_claim_name("claude-00001"))
            .is_some()
    );
    assert!(cluster.sandbox("bot-bottle-claude-00005").is_some());
    assert_eq!(deletes_since(&cluster, 0), Vec::<String>::new());
}

/// A refusal names the object by its kind as kubectl does, from the API call's plural:
/// `sandboxes` is a sandbox (not a "sandboxe"), a subresource is its object's.
#[test]
fn a_refused_object_is_named_by_its_kind() {
    let exists =
        |action: &str| ClusterError::from_status(action, "agents", 409, "AlreadyExists", "x");
    for (action, kind) in [
        ("create pods", "pod"),
        ("create pods/attach", "pod"),
        ("create sandboxes", "sandbox"),
        ("delete sandboxes", "sandbox"),
        ("create sandboxclaims", "sandboxclaim"),
        ("create persistentvolumeclaims", "persistentvolumeclaim"),
        ("create configmaps", "configmap"),
    ] {
        assert_eq!(
            exists(action),
            ClusterError::Exists(format!("a {kind} of that name")),
            "{action}"
        );
    }
    assert_eq!(
        ClusterError::from_status("create sandboxes", "agents", 422, "Invalid", "bad"),
        ClusterError::Invalid {
            kind: "sandbox".into(),
            message: "bad".into()
        }
    );
}
