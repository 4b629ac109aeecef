//! A warm start end to end with the launcher's sender ([`crate::kube::warm_sender`]): the
//! in-memory cluster plays agent-sandbox's pool and claim controllers, and the port-forward
//! to the claimed pod's config port reaches a real `bundle::intake::receive` on loopback,
//! which writes the files as the pod's `bot-bottle intake` does, admitting only the token
//! whose SHA-256 is in the pod's annotations file: the test plays the kubelet, writing that
//! file (its format) from the pod's annotations as the fake controllers set them from the
//! claim's `additionalPodMetadata`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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
    config.warm_send = Some(crate::kube::warm_sender());
    config.ready_timeout = Duration::from_secs(20);
    config
}

/// Writes the pod's annotations as the kubelet's downward API does: sorted `key="value"`
/// lines (Go-quoted; JSON quoting is the same for these ASCII values), no final newline,
/// swapped in by rename.
fn write_annotations(file: &Path, annotations: &BTreeMap<String, String>) {
    let text: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap()))
        .collect();
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, text.join("\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The pod's annotations once its adoption gave it the claim's intake token hash.
fn claimed_annotations(cluster: &FakeCluster, pod: &str) -> BTreeMap<String, String> {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let annotations = cluster
            .pod(pod)
            .and_then(|p| p.metadata.annotations)
            .unwrap_or_default();
        if annotations.contains_key(objects::INTAKE_TOKEN_ANNOTATION) {
            return annotations;
        }
        assert!(std::time::Instant::now() < until, "pod {pod} never claimed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The warm pod's sidecar here: an empty config directory, the annotations file as the
/// kubelet makes it before any claim (empty), and the real intake on loopback.
struct WarmPod {
    dir: PathBuf,
    annotations: PathBuf,
    addr: SocketAddr,
    intake: std::thread::JoinHandle<Result<Vec<PathBuf>, bundle::intake::IntakeError>>,
}

impl WarmPod {
    fn new(tmp: &Path) -> Self {
        let dir = tmp.join("sidecar");
        std::fs::create_dir(&dir).unwrap();
        let annotations = tmp.join("annotations");
        std::fs::write(&annotations, "").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (into, file) = (dir.clone(), annotations.clone());
        let intake = std::thread::spawn(move || bundle::intake::receive(listener, &into, &file));
        Self {
            dir,
            annotations,
            addr,
            intake,
        }
    }

    fn written(&self) -> usize {
        std::fs::read_dir(&self.dir).unwrap().count()
    }
}

/// The kubelet: once pod `pod` carries the claim's annotation, writes the file.
fn kubelet(cluster: Arc<FakeCluster>, pod: String, file: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || write_annotations(&file, &claimed_annotations(&cluster, &pod)))
}

/// A port-forward that lags as the kubelet does: connections are passed on to `to`; once
/// the first one is over (the intake refused it: the file had no annotation yet), the
/// pod's annotations are written. Returns its address.
fn lagging_kubelet(
    cluster: Arc<FakeCluster>,
    pod: String,
    file: PathBuf,
    to: SocketAddr,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let Ok(upstream) = TcpStream::connect(to) else {
                return;
            };
            let (mut c_in, mut u_out) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut u_out);
                let _ = u_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut u_in, mut c_out) = (upstream, client);
            let _ = std::io::copy(&mut u_in, &mut c_out);
            let _ = c_out.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
            if n == 0 {
                write_annotations(&file, &claimed_annotations(&cluster, &pod));
            }
        }
    });
    addr
}

/// A warm pool of one pod for `spec(tmp)` on an in-memory cluster whose pods start with the
/// agent running: the spec, the cluster, the backend over it and the pool's pod.
fn pool_of_one(
    tmp: &Path,
    config: KubernetesConfig,
) -> (LaunchSpec, Arc<FakeCluster>, KubernetesBackend, String) {
    let spec = spec(tmp);
    let cluster = Arc::new(FakeCluster::new());
    cluster.serve_warm_pools();
    cluster.on_create(fake::agent_running());
    let backend = KubernetesBackend::with_cluster(config, cluster.clone()).unwrap();
    let pool = backend.apply_pool(&spec, 1).unwrap();
    let pod = cluster.pool_sandboxes(&pool).pop().unwrap();
    (spec, cluster, backend, pod)
}

#[test]
fn a_claimed_warm_pod_receives_the_config_through_the_real_intake_and_runs_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, cluster, backend, pod) = pool_of_one(tmp.path(), config());
    // The pod's intake: one config into an empty directory, from the claimer alone.
    let warm = WarmPod::new(tmp.path());
    let dir = warm.dir.clone();
    cluster.forward_port_to(objects::INTAKE_PORT, warm.addr);
    let kubelet = kubelet(cluster.clone(), pod.clone(), warm.annotations.clone());
    let agent = fake::play_agent(cluster.clone(), pod.clone(), b"warm\n", 5);
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
    kubelet.join().unwrap();
    // The real intake admitted the sender's token against the hash the claim gave the pod.
    let written = warm.intake.join().unwrap().unwrap();
    let hash = &claimed_annotations(&cluster, &pod)[objects::INTAKE_TOKEN_ANNOTATION];
    assert_eq!(hash.len(), 64, "{hash}");
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
    agent.join().unwrap().unwrap();
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert_eq!(cluster.pod(&pod), None);
}

/// The hole of issue 21: whoever may port-forward to a pool's pod tries to plant a config
/// (a `start.sh` the sidecar would run) before the claim, and with another token after
/// it: the real intake refuses both and writes nothing; the launch's own send is taken.
#[test]
fn a_planted_config_is_refused_and_the_launch_gets_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, cluster, backend, pod) = pool_of_one(tmp.path(), config());
    let warm = WarmPod::new(tmp.path());
    let planted = BTreeMap::from([("start.sh".to_owned(), b"exec evil".to_vec())]);
    let planter = bundle::intake::IntakeToken::random();
    // Before the claim: the pod carries no token hash.
    let e = bundle::intake::send(
        &mut TcpStream::connect(warm.addr).unwrap(),
        &planter,
        &planted,
    )
    .unwrap_err();
    assert!(
        matches!(e, bundle::intake::IntakeError::NotClaimedYet),
        "{e}"
    );
    assert_eq!(warm.written(), 0, "the planted config was written");
    // The launch, and a planter racing it with its own token once the pod is claimed.
    cluster.forward_port_to(objects::INTAKE_PORT, warm.addr);
    let kubelet = kubelet(cluster.clone(), pod.clone(), warm.annotations.clone());
    let agent = fake::play_agent(cluster.clone(), pod.clone(), b"", 0);
    let racer = {
        let (cluster, pod, annotations) = (cluster.clone(), pod.clone(), warm.annotations.clone());
        let addr = warm.addr;
        std::thread::spawn(move || {
            claimed_annotations(&cluster, &pod);
            // The file is written: the intake now judges the token itself.
            while std::fs::read_to_string(&annotations).unwrap().is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
            // Refused for its token, or the port closed once the launch's send was taken.
            match TcpStream::connect(addr) {
                Ok(mut stream) => bundle::intake::send(&mut stream, &planter, &planted)
                    .err()
                    .map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            }
        })
    };
    let mut bottle = backend
        .launch_pod(&spec, BottleStdio::piped())
        .expect("the launch gets through");
    kubelet.join().unwrap();
    // Whichever came first, the planter is not taken: refused for its token, or its
    // connection refused or reset once the intake closed its port.
    let raced = racer.join().unwrap();
    assert!(raced.is_some(), "the planter's send was taken");
    let written = warm.intake.join().unwrap().unwrap();
    assert_eq!(written.len(), 5, "{written:?}");
    let start = std::fs::read_to_string(warm.dir.join(objects::START_SCRIPT)).unwrap();
    assert!(!start.contains("evil"), "{start}");
    assert!(start.contains("sidecar --config"), "{start}");
    assert_eq!(bottle.wait().unwrap().code, 0);
    agent.join().unwrap().unwrap();
}

/// The kubelet refreshes the sidecar's annotations file some time after the adoption: the
/// first attempt is refused `not claimed yet`, the launch tries again through a new
/// port-forward and gets through.
#[test]
fn a_launch_gets_through_once_the_kubelet_writes_the_annotation_late() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec, cluster, backend, pod) = pool_of_one(tmp.path(), config());
    let warm = WarmPod::new(tmp.path());
    let lagging = lagging_kubelet(
        cluster.clone(),
        pod.clone(),
        warm.annotations.clone(),
        warm.addr,
    );
    cluster.forward_port_to(objects::INTAKE_PORT, lagging);
    let agent = fake::play_agent(cluster.clone(), pod.clone(), b"", 0);
    let mut bottle = backend
        .launch_pod(&spec, BottleStdio::piped())
        .expect("the launch gets through after retrying");
    assert_eq!(warm.intake.join().unwrap().unwrap().len(), 5);
    let forwards = cluster
        .calls()
        .iter()
        .filter(|c| **c == format!("portforward {pod} {}", objects::INTAKE_PORT))
        .count();
    assert!(forwards >= 2, "{:?}", cluster.calls());
    assert_eq!(bottle.wait().unwrap().code, 0);
    agent.join().unwrap().unwrap();
}

/// A pod whose annotations file never gets the claim's hash: the launch fails once the
/// wait is spent, with `bundle::intake`'s never-claimed text (the pod, the annotation, what
/// to check), the claim is deleted and nothing is written.
#[test]
fn a_pod_never_claimed_fails_the_launch_within_the_wait_and_deletes_the_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config();
    let mut sender = crate::kube::warm_sender();
    assert_eq!(sender.claim_wait, bundle::intake::CLAIM_WAIT);
    sender.claim_wait = Duration::from_secs(2);
    config.warm_send = Some(sender);
    let (spec, cluster, backend, pod) = pool_of_one(tmp.path(), config);
    let warm = WarmPod::new(tmp.path());
    cluster.forward_port_to(objects::INTAKE_PORT, warm.addr);
    let e = backend
        .launch_pod(&spec, BottleStdio::piped())
        .err()
        .expect("the start fails");
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "the warm pod {pod}'s sidecar still answered `refused: not claimed yet`"
        )),
        "{message}"
    );
    assert!(
        message.contains(objects::INTAKE_TOKEN_ANNOTATION),
        "{message}"
    );
    assert!(message.contains("the claim was deleted"), "{message}");
    assert_eq!(cluster.ext_object(ExtKind::Claim, NAME), None);
    assert_eq!(warm.written(), 0, "a config was written");
    assert!(!warm.intake.is_finished(), "the intake stopped listening");
}

/// The backend's bounds of what a warm pod is sent, its retry pauses and its annotation
/// are the intake's.
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
    // The backend's pauses between attempts on a pod not claimed yet are the intake's
    // sender's (`ClaimRetry`): the first, then doubling up to the longest.
    let mut retry = bundle::intake::ClaimRetry::new(Duration::from_secs(600));
    let pauses: Vec<Duration> = (0..6).map(|_| retry.next_delay().unwrap()).collect();
    assert_eq!(pauses[0], backend::kubernetes::CLAIM_RETRY_FIRST);
    assert_eq!(pauses[5], backend::kubernetes::CLAIM_RETRY_MAX);
    // The annotation the claim sets is the one the intake reads.
    assert_eq!(
        objects::INTAKE_TOKEN_ANNOTATION,
        bundle::intake::TOKEN_ANNOTATION
    );
}
