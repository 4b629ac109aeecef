//! `bot-bottle proposals` and a cluster bottle whose `start` is gone, run as the built
//! binary: it reaches a fake API server on loopback through a kubeconfig (the bottle's token
//! from its Secret, the real kube-rs port-forward to the real bundle operator port over the
//! pod's queue), lists the proposal waiting in the pod, and `approve --wait 0` has sent the
//! decision to the pod's queue when it exits. And `discard` of a cluster bottle whose home
//! claim the cluster cannot be asked to remove.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proposals::{NewProposal, Queue, Status, Tool};

fn bb(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(args)
        .env("BOT_BOTTLE_HOME", dir.join("bbhome"))
        .env("HOME", dir.join("home"))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("USER", "alice")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The metadata of a cluster bottle started from `cwd`.
fn cluster_bottle(cwd: &std::path::Path) -> state::Metadata {
    state::Metadata {
        agent: "coder".into(),
        cwd: cwd.to_path_buf(),
        copy_cwd: false,
        backend: "kubernetes".into(),
        created: "2026-12-06T12:00:00Z".into(),
        manifest: None,
        command: vec![],
        forward_codex_auth: false,
    }
}

#[test]
fn proposals_relays_a_cluster_bottle_whose_start_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let laptop = state::Home::new(tmp.path().join("bbhome"));
    let pod = state::Home::new(tmp.path().join("pod"));
    let (identity, lock) = laptop.create_bottle(&cluster_bottle(tmp.path())).unwrap();
    // Its `start` is gone.
    drop(lock);
    let id = identity.to_string();
    let name = backend::kubernetes::objects::object_name(&id);
    // Its record names the pod its launch checked: the relay reaches that one only.
    backend::kubernetes::PodRecord {
        pod_uid: Some(test_support::kube_api::pod_uid("agents", &name)),
        ..Default::default()
    }
    .write(&laptop.state_dir(&identity))
    .unwrap();
    let token = launcher::kube_relay::new_token();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The pod: the bundle's operator port over the pod's queue.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let operator_addr = listener.local_addr().unwrap();
    let port = bundle::operator::OperatorPort::new(pod.clone(), id.clone(), token.clone()).unwrap();
    let pod_ends = tokio_util::sync::CancellationToken::new();
    rt.spawn(bundle::operator::serve_tcp(
        listener,
        port,
        pod_ends.clone(),
    ));
    let api = rt.block_on(test_support::kube_api::FakeApiServer::start());
    api.serve_port(
        "agents",
        &name,
        backend::kubernetes::OPERATOR_PORT,
        operator_addr,
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some("agents".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            launcher::kube_relay::TOKEN_KEY.to_owned(),
            ByteString(token.clone().into_bytes()),
        )])),
        ..Default::default()
    };
    api.serve_secret("agents", &name, serde_json::to_value(&secret).unwrap());
    std::fs::write(
        tmp.path().join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    namespace: agents\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            api.url()
        ),
    )
    .unwrap();

    // The agent proposed in its pod.
    let pod_queue = Queue::new(pod.clone(), &id).unwrap();
    let (proposal, _) = pod_queue
        .submit(NewProposal {
            tool: Tool::EgressAllow,
            proposed_file: "routes:\n- host: a.example\n".into(),
            justification: "docs".into(),
            current_file: Some("routes: []\n".into()),
            args: None,
        })
        .unwrap();

    let out = bb(tmp.path(), &["proposals", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, vec![proposal.id.as_str()], "{listed}");

    let out = bb(
        tmp.path(),
        &["proposals", "approve", &proposal.id, "--wait", "0"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("recorded and sent to bottle {id}'s pod")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        pod_queue.status(&proposal.id).unwrap(),
        Some(Status::Answered)
    );
    // Everything went through the API server on loopback.
    assert!(
        api.calls()
            .iter()
            .any(|c| c == &format!("GET /api/v1/namespaces/agents/secrets/{name}?")),
        "{:?}",
        api.calls()
    );
    pod_ends.cancel();
    rt.shutdown_background();
}

/// `discard` of a cluster bottle whose home claim cannot be removed (the API server does not
/// answer): nothing is discarded, and the error names the claim, the bottle, the namespace
/// and what to do. A cluster bottle recorded without a claim is discarded without asking.
#[test]
fn discard_keeps_a_cluster_bottle_whose_home_claim_cannot_be_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let laptop = state::Home::new(tmp.path().join("bbhome"));
    let bottle = |claim: bool| {
        let (identity, lock) = laptop.create_bottle(&cluster_bottle(tmp.path())).unwrap();
        drop(lock);
        laptop.mark_preserved(&identity).unwrap();
        backend::kubernetes::PodRecord {
            context: None,
            namespace: Some("agents".into()),
            home_claim: claim
                .then(|| backend::kubernetes::objects::home_claim_name(identity.as_str())),
            ..Default::default()
        }
        .write(&laptop.state_dir(&identity))
        .unwrap();
        identity
    };
    // An API server address on loopback that nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        tmp.path().join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://{closed}\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    namespace: agents\n    user: gone\ncurrent-context: gone\nusers:\n- name: gone\n  user: {{}}\n"
        ),
    )
    .unwrap();

    let kept = bottle(true);
    let out = bb(tmp.path(), &["discard", kept.as_str(), "--yes"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for part in [
        format!("bottle {kept} is not discarded"),
        format!(
            "cannot remove the home claim `bot-bottle-{kept}-home` of cluster bottle {kept} in namespace `agents`"
        ),
        "its state is kept".to_owned(),
    ] {
        assert!(err.contains(&part), "{part} not in {err}");
    }
    assert!(laptop.state_dir(&kept).is_dir());

    let plain = bottle(false);
    let out = bb(tmp.path(), &["discard", plain.as_str(), "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!laptop.state_dir(&plain).exists());
}

/// `cleanup --dry-run` lists a stale cluster bottle's home claim (and that of a bottle of
/// this home whose state is gone) without touching them; `cleanup` removes both through
/// the API server (the real client, a fake API server on loopback) and the stale state.
#[test]
fn cleanup_lists_then_removes_the_home_claims_of_stale_and_gone_cluster_bottles() {
    let tmp = tempfile::tempdir().unwrap();
    let home_dir = tmp.path().join("bbhome");
    let laptop = state::Home::new(home_dir.clone());
    let owner = backend::kubernetes::home_annotation(Some(&home_dir));
    if owner.is_empty() {
        eprintln!("skipped: this machine has no /etc/machine-id, so no claim is judged");
        return;
    }
    let claim_of = |identity: &str| {
        let name = backend::kubernetes::objects::home_claim_name(identity);
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name, "namespace": "agents",
                "labels": {
                    "app.kubernetes.io/managed-by": "bot-bottle",
                    backend::kubernetes::objects::LABEL_IDENTITY: identity,
                },
                "annotations": {backend::kubernetes::objects::ANNOTATION_HOME: owner},
            },
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        });
        (name, value)
    };
    // Stale: its state is here (not preserved, its `start` gone), its record names the claim.
    let (stale, lock) = laptop.create_bottle(&cluster_bottle(tmp.path())).unwrap();
    drop(lock);
    backend::kubernetes::PodRecord {
        namespace: Some("agents".into()),
        home_claim: Some(backend::kubernetes::objects::home_claim_name(
            stale.as_str(),
        )),
        home_made: Some(true),
        ..Default::default()
    }
    .write(&laptop.state_dir(&stale))
    .unwrap();
    // Gone: its state was removed, its claim stayed (a clean end that could not reach the
    // cluster, in an older version).
    let (gone, lock) = laptop.create_bottle(&cluster_bottle(tmp.path())).unwrap();
    drop(lock);
    laptop.remove_bottle(&gone).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = rt.block_on(test_support::kube_api::FakeApiServer::start());
    let (stale_claim, value) = claim_of(stale.as_str());
    api.serve_claim("agents", &stale_claim, value);
    let (gone_claim, value) = claim_of(gone.as_str());
    api.serve_claim("agents", &gone_claim, value);
    std::fs::write(
        tmp.path().join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    namespace: agents\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            api.url()
        ),
    )
    .unwrap();
    let cleanup = |dry: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
        cmd.arg("cleanup");
        if dry {
            cmd.arg("--dry-run");
        }
        cmd.env("BOT_BOTTLE_HOME", &home_dir)
            .env("HOME", tmp.path().join("home"))
            .env("KUBECONFIG", tmp.path().join("kubeconfig"))
            // No docker daemon for this run: the machine's containers are not this test's.
            .env(
                "DOCKER_HOST",
                format!("unix://{}", tmp.path().join("no-docker.sock").display()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    };

    let out = cleanup(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for line in [
        format!("would remove volume {gone_claim}"),
        format!("would remove volume {stale_claim}"),
        format!("would remove state of {stale}"),
    ] {
        assert!(said.contains(&line), "no `{line}` in:\n{said}");
    }
    assert!(api.has_claim("agents", &stale_claim) && api.has_claim("agents", &gone_claim));
    assert!(
        laptop.state_dir(&stale).exists(),
        "a dry run removed the state"
    );

    let out = cleanup(false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for line in [
        format!("removed volume {gone_claim}"),
        format!("removed volume {stale_claim}"),
        format!("removed state of {stale}"),
    ] {
        assert!(said.contains(&line), "no `{line}` in:\n{said}");
    }
    assert!(!api.has_claim("agents", &stale_claim), "{:?}", api.calls());
    assert!(!api.has_claim("agents", &gone_claim), "{:?}", api.calls());
    assert!(!laptop.state_dir(&stale).exists());
    rt.shutdown_background();
}
