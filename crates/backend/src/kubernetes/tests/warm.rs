//! Warm pools against the in-memory cluster playing agent-sandbox's pool and claim
//! controllers: a start through a claim end to end, the checks of the pod it is given,
//! the config sent to a real listener on loopback, the fallbacks to a cold start (each
//! reason said), and `list`, `stop`, `cleanup` of a bottle whose pod is `<pool>-<suffix>`.

use std::net::{SocketAddr, TcpListener};

use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Volume};

use super::*;
use crate::kubernetes::pool::{self, ExtKind};
use pretty_assertions::assert_eq;

/// What a fake intake got: the files by name.
type Got = Arc<std::sync::Mutex<Option<BTreeMap<String, Vec<u8>>>>>;

/// The hash the test's sender gives the claim (the launcher's gives its token's SHA-256).
const INTAKE_SHA256: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// What the test's never-claimed error starts with.
const NEVER_CLAIMED: &str = "never claimed:";

/// The test's sender: the files as JSON, then the answer read back; `refused: not claimed
/// yet` is the intake's answer before the pod carries the claim's annotation (the
/// launcher's real sender, `bundle::intake` with its token, is tested end to end in the
/// launcher's tests).
fn json_sender(claim_wait: Duration) -> WarmSender {
    let send: Arc<WarmSend> = Arc::new(
        |mut stream: PortStream, files: BTreeMap<String, Vec<u8>>| -> WarmSending {
            Box::pin(async move {
                let failed = |e: std::io::Error| WarmSendError::Failed(e.to_string());
                let bytes = serde_json::to_vec(&files).unwrap();
                stream.write_all(&bytes).await.map_err(failed)?;
                stream.shutdown().await.map_err(failed)?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.map_err(failed)?;
                match answer.trim_end() {
                    "ok" => Ok(()),
                    "refused: not claimed yet" => Err(WarmSendError::NotClaimedYet),
                    "" => Err(WarmSendError::Failed(
                        "it closed the connection without an answer".into(),
                    )),
                    other => Err(WarmSendError::Failed(other.to_owned())),
                }
            })
        },
    );
    WarmSender {
        send,
        intake_sha256: INTAKE_SHA256.to_owned(),
        claim_wait,
        never_claimed: Arc::new(|pod: &str, waited: Duration| {
            format!("{NEVER_CLAIMED} pod {pod} after {} ms", waited.as_millis())
        }),
    }
}

/// A listener on loopback playing the intake: the first `refusals` connections are
/// answered `refused: not claimed yet` and closed (the pod's annotation not there yet),
/// the next one's config is taken, then the port is closed. Returns the configs' count of
/// connections too.
fn intake_after(refusals: usize) -> (SocketAddr, Got, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Got = Arc::default();
    let into = got.clone();
    let handle = std::thread::spawn(move || {
        let mut connections = 0;
        loop {
            let (mut stream, _) = listener.accept().unwrap();
            connections += 1;
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).unwrap();
            if connections <= refusals {
                stream.write_all(b"refused: not claimed yet\n").unwrap();
                continue;
            }
            *into.lock().unwrap() = serde_json::from_slice(&bytes).ok();
            stream.write_all(b"ok\n").unwrap();
            return connections;
        }
    });
    (addr, got, handle)
}

/// [`intake_after`] with the pod claimed from the start.
fn intake() -> (SocketAddr, Got, std::thread::JoinHandle<usize>) {
    intake_after(0)
}

fn warm_fixture() -> Fixture {
    let mut f = fixture();
    f.config.sidecar.as_mut().unwrap().warm_script =
        Some("exec bot-bottle sidecar --plan x --plan-dir y\n".into());
    f.config.warm_send = Some(json_sender(Duration::from_secs(30)));
    f
}

/// A cluster serving warm pools with a pool of `replicas` ready pods for `f`'s bottle.
fn pool_cluster(f: &Fixture, replicas: i32) -> (Arc<FakeCluster>, String) {
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_warm_pools();
    cluster.on_create(fake::agent_running());
    let pool = backend(f, &cluster).apply_pool(&f.spec, replicas).unwrap();
    assert_eq!(cluster.pool_sandboxes(&pool).len(), replicas as usize);
    (cluster, pool)
}

/// What the launch of `f`'s bottle on `cluster` fails with.
fn launch_error(f: &Fixture, cluster: &Arc<FakeCluster>) -> String {
    backend(f, cluster)
        .launch_pod(&f.spec, quiet())
        .err()
        .expect("the launch fails")
        .to_string()
}

#[test]
fn a_start_takes_a_pod_of_the_pool_checks_it_sends_the_config_and_runs_the_agent() {
    let f = warm_fixture();
    let (cluster, pool) = pool_cluster(&f, 2);
    let (addr, got, intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let first = cluster.pool_sandboxes(&pool).into_iter().min().unwrap();
    // Before the claim: a generic pod, nothing of the bottle.
    let before = cluster.pod(&first).unwrap();
    assert_eq!(identity_of(&before), None);
    let agent = fake::play_agent(cluster.clone(), first.clone(), b"warm agent\n", 3);
    let backend = backend(&f, &cluster);
    let mut bottle = backend.launch_pod(&f.spec, BottleStdio::piped()).unwrap();
    assert_eq!(bottle.pod_name(), first);
    assert_eq!(bottle.claim(), Some(NAME));
    assert!(
        bottle.start_note().starts_with("warm start"),
        "{}",
        bottle.start_note()
    );
    let mut out = String::new();
    bottle
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "warm agent\n");
    intake.join().unwrap();
    // The config: the bundle's files, the start script, the agent's file, the plan.
    let sent = got
        .lock()
        .unwrap()
        .clone()
        .expect("the intake got a config");
    let names: Vec<&String> = sent.keys().collect();
    assert_eq!(
        names,
        vec![
            "agent-file-0",
            "plan.sh",
            "sidecar.json",
            "start.sh",
            "token-github"
        ]
    );
    assert_eq!(sent["token-github"], b"ghp_not_a_real_token");
    let plan = String::from_utf8(sent["plan.sh"].clone()).unwrap();
    assert!(plan.contains("'fix the tests'"), "{plan}");
    assert!(plan.contains(".gitconfig"), "{plan}");
    // Adopted: the bottle's labels and annotations, the claim's controller, the spec as
    // the pool made it; no Secret, no ConfigMap anywhere.
    let pod = cluster.pod(&first).unwrap();
    assert_eq!(identity_of(&pod).as_deref(), Some("claude-1a2b3"));
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()[pool::ANNOTATION_CLAIM],
        NAME
    );
    // The claim gave the pod the sender's token hash, which its intake admits alone.
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()[objects::INTAKE_TOKEN_ANNOTATION],
        INTAKE_SHA256
    );
    assert_eq!(pod.spec, before.spec);
    assert_eq!(cluster.secret(NAME), None);
    assert_eq!(cluster.config_map(NAME), None);
    let calls = cluster.calls();
    let claim = calls
        .iter()
        .position(|c| c == &format!("create sandboxclaims {NAME}"))
        .unwrap();
    let forward = calls
        .iter()
        .position(|c| c == &format!("portforward {first} {}", objects::INTAKE_PORT))
        .unwrap();
    let attach = calls
        .iter()
        .position(|c| c.starts_with("attach pod"))
        .unwrap();
    assert!(claim < forward && forward < attach, "{calls:?}");
    // The end: the exit code, then the claim deleted and its Sandbox and pod with it.
    assert_eq!(bottle.wait().unwrap().code, 3);
    agent.join().unwrap().unwrap();
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert_eq!(cluster.pod(&first), None);
    assert_eq!(cluster.sandbox(&first), None);
    // The pool made another in its place (two unclaimed ones again).
    assert_eq!(cluster.pool_sandboxes(&pool).len(), 2);
}

#[test]
fn each_reason_for_a_cold_start_is_said_and_no_claim_is_made() {
    type Change = fn(&mut Fixture, &FakeCluster);
    let cases: Vec<(&str, Change)> = vec![
        ("no warm start script", |f, _| {
            f.config.sidecar.as_mut().unwrap().warm_script = None;
        }),
        ("no way to send", |f, _| f.config.warm_send = None),
        ("`kubernetes.sandbox: false`", |f, _| {
            f.config.settings.sandbox = Some(false);
        }),
        ("home_size", |f, _| {
            f.config.settings.home_size = Some("1Gi".into());
        }),
        ("has a ready pod", |f, _| f.spec.interactive = true),
        ("has a ready pod", |f, _| {
            f.config.agent_image.push_str("-new")
        }),
    ];
    for (reason, change) in cases {
        let mut f = warm_fixture();
        let (cluster, _) = pool_cluster(&f, 1);
        change(&mut f, &cluster);
        let bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
        assert!(
            bottle.start_note().starts_with("cold start") && bottle.start_note().contains(reason),
            "{reason}: {}",
            bottle.start_note()
        );
        assert_eq!(bottle.pod_name(), NAME);
        assert_eq!(bottle.claim(), None);
        assert!(
            !cluster
                .calls()
                .iter()
                .any(|c| c.starts_with("create sandboxclaims")),
            "{reason}"
        );
    }
    // No extensions API: cold, said.
    let f = warm_fixture();
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_sandboxes("v1beta1");
    cluster.on_create(fake::agent_running());
    let bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
    assert!(
        bottle.start_note().contains("extensions.agents.x-k8s.io"),
        "{}",
        bottle.start_note()
    );
}

/// A pool whose template was changed (by anyone who may edit templates in the namespace)
/// makes pods that are not the bottle's: each is refused, naming the field, before any of
/// the bottle's config is sent, and the claim is deleted.
#[test]
fn a_pod_of_a_tampered_template_is_refused_and_the_claim_deleted() {
    type Tamper = fn(&mut pool::SandboxTemplate);
    let cases: Vec<(&str, Tamper)> = vec![
        ("containers[agent].image", |t| {
            t.spec.pod_template.spec.containers[0].image = Some("evil/agent:latest".into());
        }),
        // The controller's default network policy rewrites the pod's resolvers.
        ("dnsConfig", |t| t.spec.network_policy_management = None),
        ("volumes", |t| {
            let s = &mut t.spec.pod_template.spec;
            s.volumes.get_or_insert_default().push(Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/".into(),
                    type_: None,
                }),
                ..Default::default()
            });
        }),
        ("containers", |t| {
            t.spec.pod_template.spec.containers.push(Container {
                name: "extra".into(),
                image: Some("evil/miner".into()),
                ..Default::default()
            });
        }),
        // The intake's annotations file from another field (one the template could fix).
        ("volumes[podinfo]", |t| {
            let s = &mut t.spec.pod_template.spec;
            let podinfo = s
                .volumes
                .iter_mut()
                .flatten()
                .find(|v| v.name == objects::PODINFO_VOLUME)
                .unwrap();
            let items = podinfo
                .downward_api
                .as_mut()
                .unwrap()
                .items
                .as_mut()
                .unwrap();
            items[0].field_ref.as_mut().unwrap().field_path = "metadata.labels".into();
        }),
        // The agent given the pod's annotations too.
        ("containers[agent].volumeMounts", |t| {
            let agent = &mut t.spec.pod_template.spec.containers[0];
            agent
                .volume_mounts
                .get_or_insert_default()
                .push(objects::podinfo_volume().1);
        }),
        ("initContainers[network].env", |t| {
            let network = &mut t.spec.pod_template.spec.init_containers.as_mut().unwrap()[0];
            let rules = &mut network.env.as_mut().unwrap()[0];
            rules.value = rules.value.as_ref().map(|v| v.replace("3128", "3128, 22"));
        }),
    ];
    for (field, tamper) in cases {
        let f = warm_fixture();
        let (cluster, pool) = pool_cluster(&f, 0);
        // The template as stored, changed; its label (the hash) kept.
        let mut template: pool::SandboxTemplate =
            serde_json::from_value(cluster.ext_object(ExtKind::Template, &pool).unwrap()).unwrap();
        tamper(&mut template);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            cluster
                .ext_apply(ExtKind::Template, &serde_json::to_value(&template).unwrap())
                .await
                .unwrap();
            let mut warm_pool = cluster.ext_object(ExtKind::WarmPool, &pool).unwrap();
            warm_pool["spec"]["replicas"] = 1.into();
            cluster
                .ext_apply(ExtKind::WarmPool, &warm_pool)
                .await
                .unwrap();
        });
        let (addr, got, _intake) = intake();
        cluster.forward_port_to(objects::INTAKE_PORT, addr);
        let message = launch_error(&f, &cluster);
        assert!(
            message.contains(&format!("`{field}`")),
            "{field}: {message}"
        );
        assert!(
            message.contains("is not the pod built for this bottle"),
            "{message}"
        );
        assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None, "{field}");
        assert!(got.lock().unwrap().is_none(), "{field}: a config was sent");
        assert!(
            !cluster.calls().iter().any(|c| c.starts_with("portforward")),
            "{field}"
        );
    }
}

/// The kubelet refreshes the sidecar's annotations file some time after the adoption: an
/// intake that answers `not claimed yet` is tried again, each time through a new
/// port-forward (it closes a refused connection), and the launch gets through.
#[test]
fn a_pod_not_claimed_yet_is_tried_again_through_a_new_port_forward() {
    let f = warm_fixture();
    let (cluster, pool) = pool_cluster(&f, 1);
    let (addr, got, intake) = intake_after(2);
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let pod = cluster.pool_sandboxes(&pool).pop().unwrap();
    let agent = fake::play_agent(cluster.clone(), pod.clone(), b"warm agent\n", 0);
    let mut bottle = backend(&f, &cluster)
        .launch_pod(&f.spec, BottleStdio::piped())
        .unwrap();
    assert_eq!(intake.join().unwrap(), 3, "the third connection was taken");
    assert!(got.lock().unwrap().is_some(), "the intake got no config");
    let forwards = cluster
        .calls()
        .iter()
        .filter(|c| **c == format!("portforward {pod} {}", objects::INTAKE_PORT))
        .count();
    assert_eq!(forwards, 3, "{:?}", cluster.calls());
    assert_eq!(bottle.wait().unwrap().code, 0);
    agent.join().unwrap().unwrap();
}

/// A pod that never carries the claim's annotation (controllers that do not copy it, a
/// kubelet that never refreshes the file) fails the launch once the wait is spent, with
/// the sender's never-claimed text, and the claim is deleted; nothing is attached.
#[test]
fn a_pod_never_claimed_fails_the_launch_within_the_wait_and_deletes_the_claim() {
    let mut f = warm_fixture();
    f.config.warm_send = Some(json_sender(Duration::from_millis(1500)));
    let (cluster, pool) = pool_cluster(&f, 1);
    let pod = cluster.pool_sandboxes(&pool).pop().unwrap();
    let (addr, got, _intake) = intake_after(usize::MAX);
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let message = launch_error(&f, &cluster);
    assert!(
        message.contains(&format!("{NEVER_CLAIMED} pod {pod}")),
        "{message}"
    );
    assert!(message.contains("the claim was deleted"), "{message}");
    assert!(got.lock().unwrap().is_none());
    // Tried again (each time through a new port-forward) before it gave up.
    let forwards = cluster
        .calls()
        .iter()
        .filter(|c| c.starts_with("portforward"))
        .count();
    assert!(forwards > 1, "{:?}", cluster.calls());
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert!(!cluster.calls().iter().any(|c| c.starts_with("attach")));
}

/// Any other refusal (a token that does not match, a config refused) fails at once.
#[test]
fn a_refusal_other_than_not_claimed_fails_at_once_and_deletes_the_claim() {
    let f = warm_fixture();
    let (cluster, _) = pool_cluster(&f, 1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let refuser = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        stream
            .write_all(b"refused: the token does not match\n")
            .unwrap();
    });
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let message = launch_error(&f, &cluster);
    refuser.join().unwrap();
    assert!(
        message.contains("did not take the bottle's config: refused: the token does not match"),
        "{message}"
    );
    let forwards = cluster
        .calls()
        .iter()
        .filter(|c| c.starts_with("portforward"))
        .count();
    assert_eq!(forwards, 1, "{:?}", cluster.calls());
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
}

#[test]
fn a_claim_refused_or_never_bound_fails_with_what_to_do_and_is_deleted() {
    let f = warm_fixture();
    let (cluster, _) = pool_cluster(&f, 1);
    cluster.refuse(
        "create sandboxclaims",
        "create sandboxclaims",
        403,
        "Forbidden",
        "sandboxclaims.extensions.agents.x-k8s.io is forbidden: User \"dev\" cannot create resource",
    );
    let message = launch_error(&f, &cluster);
    assert!(
        message.contains("refused to create sandboxclaims"),
        "{message}"
    );
    assert!(!cluster.calls().iter().any(|c| c.starts_with("create pod")));

    let mut f = warm_fixture();
    f.config.ready_timeout = Duration::from_millis(300);
    let (cluster, _) = pool_cluster(&f, 1);
    cluster.hold_claims();
    let message = launch_error(&f, &cluster);
    assert!(
        message.contains("was given no pod of warm pool"),
        "{message}"
    );
    assert!(message.contains("describe sandboxclaim"), "{message}");
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
}

/// `list`, `stop` and `cleanup` of a bottle in a pod named `<pool>-<suffix>`: found by its
/// labels, reached through its record, deleted through its claim.
#[test]
fn a_warm_bottle_is_listed_stopped_and_cleaned_up_through_its_claim() {
    let mut f = warm_fixture();
    // With supervise: the operator token is among the bundle's files.
    f.config.sidecar.as_mut().unwrap().files.insert(
        objects::OPERATOR_TOKEN_KEY.into(),
        b"operator-token-1".to_vec(),
    );
    let (cluster, pool) = pool_cluster(&f, 1);
    let (addr, _got, _intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state").join(&f.spec.identity);
    std::fs::create_dir_all(&state).unwrap();
    let connect = cluster.clone();
    let connector: Arc<Connector> = Arc::new(move |_, _| Ok(connect.clone() as Arc<dyn Cluster>));
    let backend = backend(&f, &cluster).with_records(home.path().to_path_buf(), connector);
    let mut bottle = backend.launch_pod(&f.spec, quiet()).unwrap();
    let pod = bottle.pod_name().to_owned();
    assert!(pod.starts_with(&format!("{pool}-")), "{pod}");
    PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some(bottle.pod_uid().to_owned()),
        pod_name: Some(pod.clone()),
        claim: bottle.claim().map(str::to_owned),
        ..Default::default()
    }
    .write(&state)
    .unwrap();
    let listed: Vec<(String, bool)> = backend
        .list()
        .unwrap()
        .into_iter()
        .map(|b| (b.identity, b.running))
        .collect();
    assert_eq!(listed, vec![("claude-1a2b3".to_owned(), true)]);
    // The relay's port-forward reaches the pod by its recorded name, with the operator
    // token the laptop reads from the bottle's Secret once `start` is gone: that key alone,
    // owned by the pod (so it goes with it), mounted nowhere.
    backend
        .port_forward(&f.spec.identity, OPERATOR_PORT)
        .unwrap();
    assert_eq!(
        backend
            .secret_value(&f.spec.identity, objects::OPERATOR_TOKEN_KEY)
            .unwrap()
            .as_deref(),
        Some(&b"operator-token-1"[..])
    );
    let secret = cluster.secret(NAME).expect("the bottle's operator Secret");
    assert_eq!(
        secret.data.unwrap().into_keys().collect::<Vec<_>>(),
        vec![objects::OPERATOR_TOKEN_KEY.to_owned()]
    );
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Pod", pod.as_str(), bottle.pod_uid())
    );
    let mounted = cluster
        .pod(&pod)
        .unwrap()
        .spec
        .unwrap()
        .volumes
        .unwrap_or_default();
    assert!(mounted.iter().all(|v| v.secret.is_none()), "{mounted:?}");
    assert!(backend.pod_exists(&f.spec.identity).unwrap());
    assert!(
        backend
            .stop(&f.spec.identity, Duration::from_secs(5))
            .unwrap()
    );
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert_eq!(cluster.pod(&pod), None);
    assert_eq!(cluster.secret(NAME), None);
    bottle.remove().unwrap();

    // An orphan (its launcher gone from this machine): `cleanup` deletes its claim.
    let (addr, _got, _intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let mut bottle = backend.launch_pod(&f.spec, quiet()).unwrap();
    let pod = bottle.pod_name().to_owned();
    let machine = machine_id();
    cluster.patch_pod(&pod, |p| {
        p.metadata.annotations.get_or_insert_default().insert(
            objects::ANNOTATION_LAUNCHER.into(),
            format!("{machine}/not-this-boot:4242:99"),
        );
    });
    let actions = backend.cleanup(false).unwrap();
    assert!(
        actions.contains(&CleanupAction::KilledOrphan {
            identity: f.spec.identity.clone()
        }),
        "{actions:?}"
    );
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert_eq!(cluster.pod(&pod), None);
    bottle.remove().unwrap();

    // A claim left by a launcher killed before its pod was adopted (never bound here):
    // `cleanup` deletes it; one of a live launcher stays.
    cluster.hold_claims();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (identity, launcher) in [
        ("claude-0dead", format!("{machine}/not-this-boot:4242:99")),
        ("claude-0live", launcher_annotation()),
    ] {
        let mut plan = objects::tests::plan();
        plan.identity = identity.into();
        plan.launcher = launcher;
        let claim = pool::claim(&plan, &pool, INTAKE_SHA256);
        rt.block_on(cluster.ext_create(ExtKind::Claim, &serde_json::to_value(&claim).unwrap()))
            .unwrap();
    }
    let actions = backend.cleanup(false).unwrap();
    assert_eq!(
        actions,
        vec![CleanupAction::RemovedSandbox {
            name: "bot-bottle-claude-0dead".into()
        }]
    );
    assert!(
        cluster
            .ext_object(ExtKind::Claim, "bot-bottle-claude-0live")
            .is_some()
    );
}

/// The claim `f`'s bottle would make on `pool`, made on `cluster` as someone else would
/// (another launcher of the same name); returns its uid.
fn claim_made_again(
    rt: &tokio::runtime::Runtime,
    cluster: &FakeCluster,
    f: &Fixture,
    pool: &str,
) -> Option<String> {
    let mut plan = objects::tests::plan();
    plan.identity = f.spec.identity.clone();
    plan.launcher = "elsewhere/x:1:2".into();
    let claim = pool::claim(&plan, pool, INTAKE_SHA256);
    let stored = rt
        .block_on(cluster.ext_create(ExtKind::Claim, &serde_json::to_value(&claim).unwrap()))
        .unwrap();
    stored["metadata"]["uid"].as_str().map(str::to_owned)
}

fn claim_uid(cluster: &FakeCluster) -> Option<String> {
    cluster
        .ext_object(ExtKind::Claim, NAME)
        .and_then(|c| c["metadata"]["uid"].as_str().map(str::to_owned))
}

/// A warm bottle's SandboxClaim and Sandbox deleted and made again under their names are
/// not the bottle's: the bottle's own end and `stop` from another terminal delete the
/// claim and Sandbox of the uids the launch saw (delete preconditions), leave the ones made
/// again, and end without an error.
#[test]
fn a_claim_and_sandbox_made_again_under_the_bottles_names_survive_its_teardown() {
    let f = warm_fixture();
    let (cluster, pool) = pool_cluster(&f, 1);
    let (addr, _got, _intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let mut bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
    let pod = bottle.pod_name().to_owned();
    let ours = claim_uid(&cluster);
    assert!(ours.is_some());
    assert_eq!(bottle.claim_uid(), ours.as_deref());
    let our_sandbox = cluster.sandbox(&pod).unwrap().metadata.uid;
    assert_eq!(bottle.sandbox_uid(), our_sandbox.as_deref());
    let launched = bottle.pod_uid().to_owned();

    // Someone deletes the claim (its Sandbox and pod go with it) and makes another claim
    // (left unbound) and another Sandbox of the same names.
    let rt = tokio::runtime::Runtime::new().unwrap();
    cluster.hold_claims();
    assert!(
        rt.block_on(cluster.ext_delete(ExtKind::Claim, NAME, None))
            .unwrap()
    );
    assert_eq!(cluster.sandbox(&pod), None);
    let again = claim_made_again(&rt, &cluster, &f, &pool);
    assert_ne!(again, ours);
    let mut sandbox = sandbox_of("claude-1a2b3", "elsewhere/x:1:2");
    sandbox.metadata.name = Some(pod.clone());
    cluster.insert_sandbox(sandbox);
    let sandbox_again = cluster.sandbox(&pod).unwrap().metadata.uid;

    bottle.remove().unwrap();
    assert_eq!(claim_uid(&cluster), again);
    assert_eq!(cluster.sandbox(&pod).unwrap().metadata.uid, sandbox_again);

    let record = PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some(launched),
        pod_name: Some(pod.clone()),
        claim: Some(NAME.into()),
        claim_uid: ours,
        sandbox_uid: our_sandbox,
        ..Default::default()
    };
    assert!(!stop_from_another_terminal(&f, &cluster, record));
    assert_eq!(claim_uid(&cluster), again);
    assert_eq!(cluster.sandbox(&pod).unwrap().metadata.uid, sandbox_again);
}

/// `stop` from a record of an older binary (the launched pod's uid, not the claim's nor the
/// Sandbox's) deletes the claim only when the pod its launch checked proves it (the claim
/// that controls that pod's Sandbox, both by uid; `a_warm_bottle_is_listed_stopped_...`).
/// Once the bottle's claim is gone and another made under its name (another launch of the
/// same name), nothing proves it the bottle's: `stop` deletes nothing, refuses, and says
/// what to look at and run by hand.
#[test]
fn stop_from_an_older_record_leaves_a_claim_made_again_under_the_bottles_name() {
    let f = warm_fixture();
    let (cluster, pool) = pool_cluster(&f, 1);
    let (addr, _got, _intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let mut bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
    let pod = bottle.pod_name().to_owned();
    let record = PodRecord {
        namespace: Some("agents".into()),
        pod_uid: Some(bottle.pod_uid().to_owned()),
        pod_name: Some(pod.clone()),
        claim: Some(NAME.into()),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    cluster.hold_claims();
    bottle.remove().unwrap();
    assert_eq!(claim_uid(&cluster), None);
    let again = claim_made_again(&rt, &cluster, &f, &pool);
    assert!(again.is_some());

    let before = cluster.calls().len();
    let e = try_stop_from_another_terminal(&f, &cluster, record).unwrap_err();
    assert!(
        e.contains("sandboxclaim `bot-bottle-claude-1a2b3` in namespace `agents` is not known to be this bottle's")
            && e.contains("the pod its launch checked is gone")
            && e.contains("`kubectl -n agents delete sandboxclaim bot-bottle-claude-1a2b3`"),
        "{e}"
    );
    assert_eq!(claim_uid(&cluster), again);
    assert_eq!(super::deletes_since(&cluster, before), Vec::<String>::new());
}

/// A SandboxClaim the API server answered without a uid fails the warm launch, naming it:
/// a bottle never records an empty identity, and the claim, which no uid pins, is left
/// (said, with the kubectl to run), never deleted by its name.
#[test]
fn a_claim_answered_without_a_uid_fails_the_warm_launch_naming_it() {
    let f = warm_fixture();
    let (cluster, _pool) = pool_cluster(&f, 1);
    let (addr, _got, _intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    cluster.without_uids(ObjectKind::Ext(ExtKind::Claim));
    let e = launch_error(&f, &cluster);
    super::assert_no_uid(&e, "sandboxclaim", NAME);
    assert!(cluster.ext_object(ExtKind::Claim, NAME).is_some());
    assert_eq!(super::deletes_since(&cluster, 0), Vec::<String>::new());
}

/// A warm launch that fails after its claim was deleted and made again under its name (by
/// someone else) deletes the claim it made and no other: the one made again stays, and
/// the launch's own error is the one said.
#[test]
fn a_failed_warm_launch_leaves_a_claim_made_again_under_its_name() {
    let mut f = warm_fixture();
    f.config.ready_timeout = Duration::from_secs(2);
    let (cluster, pool) = pool_cluster(&f, 1);
    cluster.hold_claims();
    let replacer = {
        let cluster = cluster.clone();
        let f = warm_fixture();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while claim_uid(&cluster).is_none() {
                assert!(std::time::Instant::now() < deadline, "no claim came");
                std::thread::sleep(Duration::from_millis(5));
            }
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(cluster.ext_delete(ExtKind::Claim, NAME, None))
                .unwrap();
            claim_made_again(&rt, &cluster, &f, &pool)
        })
    };
    let e = launch_error(&f, &cluster);
    let again = replacer.join().unwrap();
    assert!(
        e.contains("the claim was deleted while the bottle started")
            || e.contains("was given no pod of warm pool"),
        "{e}"
    );
    assert!(again.is_some());
    assert_eq!(claim_uid(&cluster), again);
}

/// `cleanup` of an orphaned warm bottle deletes the claim its pod's annotation names only
/// when that claim is the one that took the pod (the controller of the pod's Sandbox, by
/// uid): a claim made again under the name (the first deleted with its Sandbox left
/// behind, `--cascade=orphan`) is another launcher's and stays; the orphan's Sandbox and
/// pod go.
#[test]
fn cleanup_of_a_warm_orphan_leaves_a_claim_made_again_under_its_claims_name() {
    let machine = machine_id();
    if machine.is_empty() {
        eprintln!("skipping: this machine has no /etc/machine-id, so no pod is judged");
        return;
    }
    let f = warm_fixture();
    let (cluster, pool) = pool_cluster(&f, 1);
    let (addr, _got, _intake) = intake();
    cluster.forward_port_to(objects::INTAKE_PORT, addr);
    let mut bottle = backend(&f, &cluster).launch_pod(&f.spec, quiet()).unwrap();
    let pod = bottle.pod_name().to_owned();
    cluster.patch_pod(&pod, |p| {
        p.metadata.annotations.get_or_insert_default().insert(
            objects::ANNOTATION_LAUNCHER.into(),
            format!("{machine}/not-this-boot:4242:99"),
        );
    });
    cluster.hold_claims();
    assert!(cluster.orphan_ext(ExtKind::Claim, NAME));
    assert!(cluster.sandbox(&pod).is_some());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let again = claim_made_again(&rt, &cluster, &f, &pool);
    assert!(again.is_some());
    let actions = backend(&f, &cluster).cleanup(false).unwrap();
    assert!(
        actions.contains(&CleanupAction::KilledOrphan {
            identity: f.spec.identity.clone()
        }),
        "{actions:?}"
    );
    assert_eq!(claim_uid(&cluster), again, "the claim made again stays");
    assert_eq!(cluster.sandbox(&pod), None);
    assert_eq!(cluster.pod(&pod), None);
    bottle.remove().unwrap();
    assert_eq!(claim_uid(&cluster), again);
}
