//! The docker backend against a real Docker daemon.
//!
//! Needs a daemon (`scripts/docker/start-dockerd`) and, to build the local base image without
//! a registry, root and `debootstrap` (`scripts/docker/build-base-image`). Without them every
//! test prints why it skips. The "internet" of these tests is a canary container (a DNS server
//! and a TCP server) on a network the test creates; nothing leaves the machine.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use backend::docker::{
    AgentImage, DockerBackend, DockerConfig, ImageSource, RuntimeChoice, SidecarSpec,
    TranscriptCopy,
};
use backend::native::HelperCommand;
use backend::{
    Backend, BottleStdio, CleanupAction, Forward, Home, LaunchSpec, ReadOnlyFile, Workspace,
    WorkspaceMode,
};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const PROBE: &str = include_str!("docker_probe.py");
const PORTS: [u16; 3] = [3128, 9418, 3130];
/// The uid:gid the agent runs as when the tests run as root.
const AGENT_UID: u32 = 1000;

/// Serves `sidecar <port>` on every port given as argument (the stand-in for the real bundle),
/// at once and then closes; on 3130 it first reads until the client's end of stream and says
/// what it read (a request answered once it is complete).
const SIDECAR_PY: &str = r#"
import socket, sys, threading
def serve(s, port):
    while True:
        c, _ = s.accept()
        got = b""
        while port == 3130:
            data = c.recv(4096)
            if not data:
                break
            got += data
        c.sendall(b"sidecar %d" % port + (b" read: " + got if got else b"") + b"\n")
        c.close()
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(p)))
    s.listen(64)
    threading.Thread(target=serve, args=(s, int(p))).start()
print("ready", flush=True)
"#;

/// The canary "internet": a DNS server answering every A query with 10.66.66.66 and a TCP
/// server on 8080 saying `canary`.
const CANARY_PY: &str = r#"
import socket, threading
def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080))
    s.listen(64)
    while True:
        c, _ = s.accept()
        c.sendall(b"canary\n")
        c.close()
threading.Thread(target=tcp).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 53))
while True:
    q, addr = u.recvfrom(512)
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    reply = q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question
    reply += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 66, 66, 66])
    u.sendto(reply, addr)
"#;

struct Images {
    base: String,
    sidecar: String,
}

/// The daemon and the images, or the reason to skip.
fn images() -> Result<&'static Images, String> {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            let probe = backend(RuntimeChoice::Named("runc".into()), None);
            probe
                .client()
                .map_err(|e| format!("no docker daemon: {e}"))?;
            let base = test_support::docker::base_image()?.to_owned();
            // From here on a failure is a bug, not a missing prerequisite.
            let sidecar = probe
                .ensure_image(&ImageSource::sidecar(Some(&base)), "sidecar-image")
                .unwrap_or_else(|e| panic!("the sidecar image could not be built: {e}"));
            Ok(Images { base, sidecar })
        })
        .as_ref()
        .map_err(Clone::clone)
}

macro_rules! need_docker {
    () => {
        match images() {
            Ok(images) => images,
            Err(reason) => {
                eprintln!("skipping: {reason}");
                return;
            }
        }
    };
}

fn init_exe() -> &'static str {
    env!("CARGO_BIN_EXE_docker-init-for-tests")
}

fn backend(runtime: RuntimeChoice, images: Option<&Images>) -> DockerBackend {
    let init = HelperCommand {
        exe: PathBuf::from(init_exe()),
        args: vec![],
    };
    let image = images.map(|i| i.base.clone()).unwrap_or_default();
    let mut config = DockerConfig::new(AgentImage::Image(image), init);
    config.runtime = runtime;
    if let Some(images) = images {
        config.sidecar = Some(stand_in_sidecar(images));
    }
    DockerBackend::new(config).unwrap()
}

fn stand_in_sidecar(images: &Images) -> SidecarSpec {
    let mut argv = vec!["python3".to_owned(), "-c".to_owned(), SIDECAR_PY.to_owned()];
    argv.extend(PORTS.iter().map(u16::to_string));
    SidecarSpec {
        image: images.sidecar.clone(),
        argv,
        env: BTreeMap::new(),
        mounts: vec![],
        user: "65534:65534".into(),
        ready_line: Some("ready".into()),
        health: None,
    }
}

struct Dirs {
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    home: PathBuf,
}

fn dirs() -> Dirs {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("project");
    let home = dir.path().join("home");
    for d in [dir.path(), &workspace, &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(workspace.join("probe.py"), PROBE).unwrap();
    if nix::unistd::geteuid().is_root() {
        for d in [&workspace, &home] {
            std::os::unix::fs::chown(d, Some(AGENT_UID), Some(AGENT_UID)).unwrap();
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Dirs {
        _dir: dir,
        workspace,
        home,
    }
}

fn identity() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "test-{:05x}",
        (nanos ^ std::process::id() ^ (n << 12)) & 0xfffff
    )
}

fn spec(dirs: &Dirs, argv: &[&str]) -> LaunchSpec {
    LaunchSpec {
        identity: identity(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/home/agent".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into()),
        ]),
        workspace: Workspace {
            host: dirs.workspace.clone(),
            inside: "/workspace".into(),
            mode: WorkspaceMode::Mount,
        },
        home: Home {
            host: dirs.home.clone(),
            inside: "/home/agent".into(),
        },
        files: vec![],
        forwards: PORTS
            .iter()
            .map(|&p| Forward {
                inside_port: p,
                host_unix_socket: PathBuf::from("/nonexistent"),
            })
            .collect(),
        interactive: false,
        resources: backend::Resources::default(),
        dangerously_run_as_host_root: false,
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(backend: &DockerBackend, spec: &LaunchSpec) -> Output {
    backend.prepare(spec).unwrap();
    let mut bottle = backend
        .launch(spec, BottleStdio::piped())
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
    drop(bottle.take_stdin());
    let mut out = bottle.take_stdout().unwrap();
    let mut err = bottle.take_stderr().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).unwrap();
    let exit = bottle.wait().unwrap();
    Output {
        code: exit.code,
        stdout,
        stderr: errs.join().unwrap(),
    }
}

fn probe(backend: &DockerBackend, spec_dirs: &Dirs, exit: i32, checks: &[String]) -> (i32, Value) {
    probe_with(backend, spec_dirs, exit, checks, vec![])
}

fn probe_with(
    backend: &DockerBackend,
    spec_dirs: &Dirs,
    exit: i32,
    checks: &[String],
    files: Vec<ReadOnlyFile>,
) -> (i32, Value) {
    let mut argv = vec![
        "python3".to_owned(),
        "/workspace/probe.py".to_owned(),
        exit.to_string(),
    ];
    argv.extend(checks.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut spec = spec(spec_dirs, &argv);
    spec.files = files;
    let out = run(backend, &spec);
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "probe output is not JSON ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    });
    (out.code, report)
}

// ---- direct Engine API helpers for canaries and control containers ----

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn docker() -> Docker {
    let docker =
        Docker::connect_with_socket("/var/run/docker.sock", 120, bollard::API_DEFAULT_VERSION)
            .unwrap();
    rt().block_on(docker.negotiate_version()).unwrap()
}

fn test_labels(identity: &str) -> HashMap<String, String> {
    HashMap::from([("org.bot-bottle.test".to_owned(), identity.to_owned())])
}

/// A canary network with the canary container on it; removed on drop.
struct Canary {
    docker: Docker,
    network: String,
    container: String,
    ip: String,
}

impl Canary {
    fn start(images: &Images) -> Canary {
        let docker = docker();
        let name = format!("bot-bottle-test-canary-{}", identity());
        let rt = rt();
        rt.block_on(docker.create_network(NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(test_labels(&name)),
            ..Default::default()
        }))
        .unwrap();
        let body = ContainerCreateBody {
            image: Some(images.base.clone()),
            cmd: Some(vec!["python3".into(), "-c".into(), CANARY_PY.into()]),
            labels: Some(test_labels(&name)),
            host_config: Some(HostConfig {
                network_mode: Some(name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        rt.block_on(docker.create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            body,
        ))
        .unwrap();
        rt.block_on(docker.start_container(&name, None)).unwrap();
        let inspect = rt.block_on(docker.inspect_container(&name, None)).unwrap();
        let ip = inspect.network_settings.unwrap().networks.unwrap()[&name]
            .ip_address
            .clone()
            .unwrap();
        Canary {
            docker,
            network: name.clone(),
            container: name,
            ip,
        }
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let rt = rt();
        let _ = rt.block_on(self.docker.remove_container(
            &self.container,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        ));
        let _ = rt.block_on(self.docker.remove_network(&self.network));
    }
}

/// Runs the probe in a plain (unbottled) container on `network`: the positive control.
fn control_probe(images: &Images, dirs: &Dirs, network: &str, checks: &[String]) -> Value {
    let docker = docker();
    let rt = rt();
    let name = format!("bot-bottle-test-control-{}", identity());
    let mut cmd = vec![
        "python3".to_owned(),
        "/workspace/probe.py".to_owned(),
        "0".to_owned(),
    ];
    cmd.extend(checks.iter().cloned());
    let body = ContainerCreateBody {
        image: Some(images.base.clone()),
        cmd: Some(cmd),
        user: Some(format!("{AGENT_UID}:{AGENT_UID}")),
        labels: Some(test_labels(&name)),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            binds: Some(vec![format!("{}:/workspace:ro", dirs.workspace.display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.block_on(docker.create_container(
        Some(CreateContainerOptions {
            name: Some(name.clone()),
            platform: String::new(),
        }),
        body,
    ))
    .unwrap();
    rt.block_on(docker.start_container(&name, None)).unwrap();
    let _ = rt.block_on(
        docker
            .wait_container(&name, None::<WaitContainerOptions>)
            .next(),
    );
    let mut logs = docker.logs(
        &name,
        Some(LogsOptions {
            stdout: true,
            ..Default::default()
        }),
    );
    let mut out = String::new();
    while let Some(Ok(chunk)) = rt.block_on(logs.next()) {
        out.push_str(&chunk.to_string());
    }
    let _ = rt.block_on(docker.remove_container(
        &name,
        Some(RemoveContainerOptions {
            force: true,
            ..Default::default()
        }),
    ));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("control probe: {e}: {out}"))
}

/// Labelled objects of one bottle that still exist: (containers, networks).
fn leftovers(identity: &str) -> (Vec<String>, Vec<String>) {
    let docker = docker();
    let rt = rt();
    let filter = HashMap::from([(
        "label".to_owned(),
        vec![format!("org.bot-bottle.identity={identity}")],
    )]);
    let containers = rt
        .block_on(docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filter.clone()),
            ..Default::default()
        })))
        .unwrap()
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect();
    let networks = rt
        .block_on(docker.list_networks(Some(ListNetworksOptions {
            filters: Some(filter),
        })))
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    (containers, networks)
}

// ---- tests ----

#[test]
fn docker_exit_code_env_user_caps_and_read_only_root() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    let ca = dirs.workspace.parent().unwrap().join("ca.pem");
    std::fs::write(&ca, "bottle ca\n").unwrap();
    // World-writable on the host: only the read-only mount stops the agent.
    std::fs::set_permissions(&ca, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let files = vec![
        ReadOnlyFile {
            host: ca.clone(),
            inside: "/run/bot-bottle/ca.pem".into(),
        },
        ReadOnlyFile {
            host: ca,
            inside: "/etc/ssl/certs/ca-certificates.crt".into(),
        },
    ];
    let checks = [
        "read:ca:/run/bot-bottle/ca.pem:-".to_owned(),
        "read:system_store:/etc/ssl/certs/ca-certificates.crt:-".to_owned(),
        "write:ca_write:/run/bot-bottle/ca.pem:-".to_owned(),
        "write:home:/home/agent/.bashrc:-".to_owned(),
    ];
    let (code, report) = probe_with(&backend, &dirs, 7, &checks, files);
    assert_eq!(code, 7, "the agent's exit code is the bottle's");
    assert_eq!(
        report["checks"],
        json!({
            "ca": "bottle ca\n",
            "system_store": "bottle ca\n",
            "ca_write": "error: Read-only file system",
            "home": "writable",
        })
    );
    let env: BTreeMap<String, String> = serde_json::from_value(report["env"].clone()).unwrap();
    assert_eq!(
        env,
        BTreeMap::from([
            ("HOME".into(), "/home/agent".into()),
            ("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ]),
        "the environment is exactly the spec's"
    );
    let mut facts = report.clone();
    for key in ["env", "checks"] {
        facts.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(
        facts,
        json!({
            "uid": AGENT_UID,
            "gid": AGENT_UID,
            "cap_eff": "0000000000000000",
            "cap_bnd": "0000000000000000",
            "no_new_privs": "1",
            "cwd": "/workspace",
            "root_writable": false,
            "tmp_writable": true,
            "cwd_writable": true,
            "interfaces": ["eth0", "lo"],
            "pids_max": "1024",
            "memory_max": (4u64 << 30).to_string(),
        })
    );
}

#[test]
fn docker_exit_code_of_a_missing_command_and_a_signal() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    let out = run(&backend, &spec(&dirs, &["no-such-agent"]));
    assert_eq!(out.code, 127);
    assert!(
        out.stderr.contains("cannot run `no-such-agent`"),
        "{}",
        out.stderr
    );
    let out = run(
        &backend,
        &spec(&dirs, &["sh", "-c", "echo hi; kill -TERM $$"]),
    );
    assert_eq!((out.code, out.stdout.as_str()), (143, "hi\n"));
}

#[test]
fn docker_forwards_reach_the_sidecar_and_nothing_else_is_reachable() {
    let images = need_docker!();
    let canary = Canary::start(images);
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    // A host service on loopback (the test process itself).
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let checks = vec![
        "tcp:fwd_3128:127.0.0.1:3128".to_owned(),
        "tcp:fwd_9418:127.0.0.1:9418".to_owned(),
        format!("tcp:host_loopback:127.0.0.1:{host_port}"),
        format!("tcp:canary_tcp:{}:8080", canary.ip),
        format!("dns:canary_dns:{}:exfil.canary.test", canary.ip),
    ];
    let (code, report) = probe(&backend, &dirs, 0, &checks);
    assert_eq!(code, 0);
    assert_eq!(
        report["checks"],
        json!({
            "fwd_3128": "connected: sidecar 3128",
            "fwd_9418": "connected: sidecar 9418",
            "host_loopback": "refused",
            "canary_tcp": "refused",
            "canary_dns": "error: Operation not permitted",
        })
    );
    // Control: on the canary's network the same probes get through, so the canary works.
    let control = control_probe(images, &dirs, &canary.network, &checks[3..]);
    assert_eq!(
        control["checks"],
        json!({
            "canary_tcp": "connected: canary",
            "canary_dns": "answer: 10.66.66.66",
        })
    );
}

#[test]
fn docker_embedded_dns_and_the_host_gateway_are_closed_to_the_agent() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    // A host service on all addresses, so also on the bottle network's gateway (the host's
    // address on the bridge the bottle creates). Docker 20.10 drops such packets from internal
    // networks itself (a control container times out); the bottle's own firewall rejects them
    // at once ("refused"), so it does not depend on the daemon version.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in host.incoming() {
            let _ = std::io::Write::write_all(&mut conn.unwrap(), b"host\n");
        }
    });
    let mut spec = spec(&dirs, &["true"]);
    let sidecar_name = format!("bot-bottle-sidecar-{}", spec.identity);
    let checks = [
        format!("dns:sidecar_name:127.0.0.11:{sidecar_name}"),
        "dns:external_name:127.0.0.11:exfil.canary.test".to_owned(),
        "tcp:embedded_dns_tcp:127.0.0.11:53".to_owned(),
        format!("tcp:host_gateway:gateway:{host_port}"),
    ];
    let mut argv = vec![
        "python3".to_owned(),
        "/workspace/probe.py".to_owned(),
        "0".to_owned(),
    ];
    argv.extend(checks.iter().cloned());
    spec.argv = argv;
    // Start the bottle, then probe the same internal network from a control container while
    // the bottle's network and sidecar exist: what the agent cannot reach, the control can.
    backend.prepare(&spec).unwrap();
    let mut bottle = backend.launch(&spec, BottleStdio::piped()).unwrap();
    drop(bottle.take_stdin());
    let mut stdout = String::new();
    bottle
        .take_stdout()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let network = format!("bot-bottle-net-{}", spec.identity);
    let control = control_probe(images, &dirs, &network, &checks[..1]);
    // The address the probe tried is the network's gateway (an earlier probe computed it
    // wrong and tried an address in 0.0.0.0/8, which proved nothing about the gateway).
    let gateway = rt()
        .block_on(docker().inspect_network(&network, None))
        .unwrap()
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.gateway)
        .unwrap();
    assert_eq!(bottle.wait().unwrap().code, 0);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["gateway"], json!(gateway));
    assert_eq!(
        report["checks"],
        json!({
            "sidecar_name": "error: Operation not permitted",
            "external_name": "error: Operation not permitted",
            "embedded_dns_tcp": "refused",
            "host_gateway": "refused",
        })
    );
    let answer = control["checks"]["sidecar_name"].as_str().unwrap();
    assert!(
        answer.starts_with("answer: ") && answer != "answer: none (rcode 0)",
        "the embedded DNS answers an unfirewalled container on the same network: {answer}"
    );
}

#[test]
fn docker_bottle_is_listed_stopped_and_torn_down() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    let spec = spec(&dirs, &["sleep", "60"]);
    backend.prepare(&spec).unwrap();
    let mut bottle = backend
        .launch(
            &spec,
            BottleStdio {
                stdin: backend::StdioMode::Null,
                stdout: backend::StdioMode::Null,
                stderr: backend::StdioMode::Null,
            },
        )
        .unwrap();
    // The agent is on the internal network only; the sidecar on it and on its egress network.
    let docker = docker();
    let rt = rt();
    let networks_of = |name: &str| -> Vec<String> {
        let inspect = rt.block_on(docker.inspect_container(name, None)).unwrap();
        let mut names: Vec<String> = inspect
            .network_settings
            .unwrap()
            .networks
            .unwrap()
            .into_keys()
            .collect();
        names.sort();
        names
    };
    let id = &spec.identity;
    assert_eq!(
        networks_of(&format!("bot-bottle-{id}")),
        vec![format!("bot-bottle-net-{id}")]
    );
    assert_eq!(
        networks_of(&format!("bot-bottle-sidecar-{id}")),
        vec![
            format!("bot-bottle-egress-{id}"),
            format!("bot-bottle-net-{id}")
        ]
    );
    let listed = backend.list().unwrap();
    let mine: Vec<_> = listed
        .iter()
        .filter(|b| b.identity == spec.identity)
        .map(|b| (b.running, b.orphaned))
        .collect();
    assert_eq!(mine, vec![(true, false)]);
    assert!(
        backend
            .stop(&spec.identity, Duration::from_secs(5))
            .unwrap()
    );
    assert_eq!(bottle.wait().unwrap().code, 143, "sleep got SIGTERM");
    assert_eq!(leftovers(&spec.identity), (vec![], vec![]));
    assert!(
        !backend
            .stop(&spec.identity, Duration::from_secs(1))
            .unwrap()
    );
}

#[test]
fn docker_cleanup_removes_leftovers_but_not_live_bottles() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    // A live bottle of this process.
    let live = spec(&dirs, &["sleep", "60"]);
    backend.prepare(&live).unwrap();
    let mut bottle = backend
        .launch(
            &live,
            BottleStdio {
                stdin: backend::StdioMode::Null,
                stdout: backend::StdioMode::Null,
                stderr: backend::StdioMode::Null,
            },
        )
        .unwrap();
    // Leftovers of a dead launcher: a network, a never-started sidecar container and a running
    // agent container (an orphan), labelled.
    let dead = identity();
    let docker = docker();
    let rt = rt();
    let labels = |role: &str| {
        HashMap::from([
            ("org.bot-bottle.managed".to_owned(), "true".to_owned()),
            ("org.bot-bottle.identity".to_owned(), dead.clone()),
            ("org.bot-bottle.role".to_owned(), role.to_owned()),
            ("org.bot-bottle.launcher".to_owned(), "gone:1:1".to_owned()),
        ])
    };
    rt.block_on(docker.create_network(NetworkCreateRequest {
        name: format!("bot-bottle-net-{dead}"),
        internal: Some(true),
        labels: Some(labels("internal-network")),
        ..Default::default()
    }))
    .unwrap();
    for (name, role, cmd) in [
        (format!("bot-bottle-sidecar-{dead}"), "sidecar", "true"),
        (format!("bot-bottle-{dead}"), "agent", "sleep 300"),
    ] {
        rt.block_on(docker.create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            ContainerCreateBody {
                image: Some(images.base.clone()),
                cmd: Some(cmd.split(' ').map(str::to_owned).collect()),
                labels: Some(labels(role)),
                host_config: Some(HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .unwrap();
        if role == "agent" {
            rt.block_on(docker.start_container(&name, None)).unwrap();
        }
    }

    let dry = backend.cleanup(true).unwrap();
    assert!(dry.contains(&CleanupAction::RemovedNetwork {
        name: format!("bot-bottle-net-{dead}")
    }));
    assert_eq!(leftovers(&dead).1.len(), 1, "a dry run removes nothing");

    let actions = backend.cleanup(false).unwrap();
    let mine: std::collections::BTreeSet<String> = actions
        .iter()
        .filter(|a| match a {
            CleanupAction::RemovedContainer { name } | CleanupAction::RemovedNetwork { name } => {
                name.ends_with(&dead) || name.ends_with(&live.identity)
            }
            CleanupAction::KilledOrphan { identity } => {
                identity == &dead || identity == &live.identity
            }
            _ => false,
        })
        .map(|a| format!("{a:?}"))
        .collect();
    assert_eq!(
        mine,
        [
            format!("KilledOrphan {{ identity: \"{dead}\" }}"),
            format!("RemovedContainer {{ name: \"bot-bottle-{dead}\" }}"),
            format!("RemovedContainer {{ name: \"bot-bottle-sidecar-{dead}\" }}"),
            format!("RemovedNetwork {{ name: \"bot-bottle-net-{dead}\" }}"),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(leftovers(&dead), (vec![], vec![]));
    // The live bottle is untouched: its agent, its sidecar and its exited firewall container
    // (kept until teardown), and its two networks.
    let (mut containers, networks) = leftovers(&live.identity);
    containers.sort();
    let id = &live.identity;
    let mut expected = [
        format!("/bot-bottle-{id}"),
        format!("/bot-bottle-firewall-{id}"),
        format!("/bot-bottle-sidecar-{id}"),
    ];
    expected.sort();
    assert_eq!(containers, expected);
    assert_eq!(networks.len(), 2);
    bottle.kill().unwrap();
    bottle.wait().unwrap();
    assert_eq!(leftovers(&live.identity), (vec![], vec![]));
}

/// Containers run from bot-bottle's images by anyone else (the apple and smolmachines
/// stand-ins, a user's `docker run`) inherit the images' labels, `org.bot-bottle.managed`
/// among them. `cleanup` must judge only the containers the backend created itself: one such
/// container, created and not yet started (so without a launcher to ask about), was removed
/// by a `cleanup` run at that moment (the start_apple flake: another test's sidecar killed
/// right after its start).
#[test]
fn docker_cleanup_leaves_containers_it_did_not_create_alone() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let docker = docker();
    let rt = rt();
    // The sidecar image was built by the backend: it carries the managed label.
    let image = rt.block_on(docker.inspect_image(&images.sidecar)).unwrap();
    let image_labels = image.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        image_labels
            .get("org.bot-bottle.managed")
            .map(String::as_str),
        Some("true"),
        "{image_labels:?}"
    );
    let id = identity();
    let names = [
        format!("bot-bottle-test-foreign-created-{id}"),
        format!("bot-bottle-test-foreign-exited-{id}"),
    ];
    for name in &names {
        rt.block_on(docker.create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            ContainerCreateBody {
                image: Some(images.sidecar.clone()),
                entrypoint: Some(vec!["true".into()]),
                cmd: Some(vec![]),
                labels: Some(test_labels(&id)),
                host_config: Some(HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .unwrap();
    }
    rt.block_on(docker.start_container(&names[1], None))
        .unwrap();
    let _ = rt
        .block_on(
            docker
                .wait_container(&names[1], None::<WaitContainerOptions>)
                .collect::<Vec<_>>(),
        )
        .len();

    let actions = backend.cleanup(false).unwrap();
    let existing = |name: &str| rt.block_on(docker.inspect_container(name, None)).is_ok();
    let still: Vec<bool> = names.iter().map(|n| existing(n)).collect();
    for name in &names {
        let _ = rt.block_on(docker.remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        ));
    }
    let touched: Vec<&CleanupAction> = actions
        .iter()
        .filter(|a| matches!(a, CleanupAction::RemovedContainer { name } if name.ends_with(&id)))
        .collect();
    assert_eq!(
        (still, touched),
        (vec![true, true], vec![]),
        "cleanup removed containers the docker backend never created"
    );
}

#[test]
fn docker_transcript_is_copied_out_on_exit() {
    let images = need_docker!();
    let dirs = dirs();
    let out_dir = tempfile::tempdir().unwrap();
    let init = HelperCommand {
        exe: PathBuf::from(init_exe()),
        args: vec![],
    };
    let mut config = DockerConfig::new(AgentImage::Image(images.base.clone()), init);
    config.runtime = RuntimeChoice::Named("runc".into());
    config.sidecar = Some(stand_in_sidecar(images));
    config.transcript = Some(TranscriptCopy {
        // Not on a tmpfs: those are gone once the container stops.
        inside: "/home/agent/transcript".into(),
        host: out_dir.path().to_path_buf(),
    });
    let backend = DockerBackend::new(config).unwrap();
    let out = run(
        &backend,
        &spec(
            &dirs,
            &[
                "sh",
                "-c",
                "mkdir ~/transcript && echo said > ~/transcript/log.jsonl; exit 3",
            ],
        ),
    );
    assert_eq!(out.code, 3);
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("transcript/log.jsonl")).unwrap(),
        "said\n"
    );
}

#[test]
fn docker_provider_dockerfile_builds_from_the_local_base_once() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let mut source = ImageSource::provider("claude", Some(&images.base)).unwrap();
    // The agent CLI comes from npm, which tests may not reach: build the tool image alone.
    source
        .build_args
        .insert("AGENT_PACKAGE".into(), String::new());
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let first = backend.ensure_image(&source, "agent-image").unwrap();
    let second = backend.ensure_image(&source, "agent-image").unwrap();
    assert_eq!(first, second);
    assert!(first.starts_with("bot-bottle/agent-claude:"), "{first}");
    // Built only once: a backend with a progress sink sees no build output the second time.
    let init = HelperCommand {
        exe: PathBuf::from(init_exe()),
        args: vec![],
    };
    let mut config = DockerConfig::new(AgentImage::Build(source.clone()), init);
    let sink = lines.clone();
    config.progress = Some(std::sync::Arc::new(move |l: &str| {
        sink.lock().unwrap().push(l.to_owned())
    }));
    let again = DockerBackend::new(config).unwrap();
    assert_eq!(again.ensure_image(&source, "agent-image").unwrap(), first);
    assert_eq!(
        lines.lock().unwrap().len(),
        0,
        "no rebuild when nothing changed"
    );
    // The agent runs in it.
    let mut config = backend.config().clone();
    config.agent_image = AgentImage::Image(first);
    let on_provider = DockerBackend::new(config).unwrap();
    let dirs = dirs();
    let out = run(
        &on_provider,
        &spec(
            &dirs,
            &[
                "sh",
                "-c",
                "for t in git rg curl python3 node; do command -v $t; done",
            ],
        ),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 5, "{}", out.stdout);
}

#[test]
fn docker_with_runsc_when_the_daemon_lists_it() {
    let images = need_docker!();
    let auto = backend(RuntimeChoice::Auto, Some(images));
    match auto.agent_runtime().unwrap() {
        Some(runtime) if runtime == "runsc" => {}
        other => {
            eprintln!("skipping: dockerd does not list runsc (runtime: {other:?})");
            return;
        }
    }
    let dirs = dirs();
    let (code, report) = probe(
        &auto,
        &dirs,
        5,
        &[
            "tcp:fwd_3128:127.0.0.1:3128".to_owned(),
            "dns:external_name:127.0.0.11:exfil.canary.test".to_owned(),
        ],
    );
    assert_eq!(code, 5);
    assert_eq!(report["uid"], json!(AGENT_UID));
    assert_eq!(
        report["checks"]["fwd_3128"],
        json!("connected: sidecar 3128")
    );
    assert!(
        !report["checks"]["external_name"]
            .as_str()
            .unwrap()
            .starts_with("answer"),
        "{report}"
    );
}

/// Every end of stream crosses the relay, in both directions: the sidecar's close right after
/// its answer (an error answer with `Connection: close`) reaches the agent, and the agent's
/// half-close after its request reaches the sidecar, whose answer then comes back. 20 times
/// each, so that the answer and the end arrive together at least once.
fn ends_of_stream_cross_the_relay(backend: &DockerBackend) {
    let dirs = dirs();
    let checks = [
        "end:sidecar_closes:127.0.0.1:3128".to_owned(),
        "half_close:agent_closes:127.0.0.1:3130".to_owned(),
    ];
    let (code, report) = probe(backend, &dirs, 0, &checks);
    assert_eq!(code, 0);
    assert_eq!(
        report["checks"],
        json!({
            "sidecar_closes": "answer then end: sidecar 3128",
            "agent_closes": "answer then end: sidecar 3130 read: request",
        })
    );
}

#[test]
fn docker_relay_passes_each_end_of_stream_on() {
    let images = need_docker!();
    ends_of_stream_cross_the_relay(&backend(RuntimeChoice::Named("runc".into()), Some(images)));
}

/// gVisor's netstack reports no `EPOLLRDHUP`: a relay that took a short read for "drained"
/// waited forever for an end it had already been given (the escape suite's docker+runsc
/// column hung in its `egress` and `supervise` sections).
#[test]
fn docker_relay_passes_each_end_of_stream_on_under_runsc() {
    let images = need_docker!();
    let auto = backend(RuntimeChoice::Auto, Some(images));
    match auto.agent_runtime().unwrap() {
        Some(runtime) if runtime == "runsc" => {}
        other => {
            eprintln!("skipping: dockerd does not list runsc (runtime: {other:?})");
            return;
        }
    }
    ends_of_stream_cross_the_relay(&backend(RuntimeChoice::Named("runsc".into()), Some(images)));
}

/// Runs the stand-in launcher on a fresh pseudo-terminal of `rows`x`cols` (its controlling
/// terminal), feeds `input` after the bottle printed `ready`, and returns (exit code, output).
fn run_on_terminal(
    images: &Images,
    dirs: &Dirs,
    script: &str,
    input: &[u8],
) -> (Option<i32>, String) {
    use std::io::Write;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let mut spec = spec(dirs, &["bash", "-c", script]);
    spec.interactive = true;
    spec.env.insert("TERM".into(), "dumb".into());
    let scratch = tempfile::tempdir().unwrap();
    let spec_path = scratch.path().join("spec.json");
    let sidecar_path = scratch.path().join("sidecar.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    std::fs::write(
        &sidecar_path,
        serde_json::to_vec(&stand_in_sidecar(images)).unwrap(),
    )
    .unwrap();
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let slave: OwnedFd = pty.slave;
    let slave_fd = slave.as_raw_fd();
    let mut cmd = std::process::Command::new(init_exe());
    cmd.arg("launch")
        .arg(&spec_path)
        .arg(&images.base)
        .arg(&sidecar_path);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0
                || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0
                || libc::dup2(slave_fd, 0) < 0
                || libc::dup2(slave_fd, 1) < 0
                || libc::dup2(slave_fd, 2) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once every slave descriptor is closed
            Ok(n) => output.extend_from_slice(&buf[..n]),
        }
        if !sent && String::from_utf8_lossy(&output).contains("ready") {
            master.write_all(input).unwrap();
            sent = true;
        }
    }
    let code = child.wait().unwrap().code();
    (code, String::from_utf8_lossy(&output).replace('\r', ""))
}

#[test]
fn docker_interactive_bottle_gets_the_terminal_its_size_and_ctrl_c() {
    let images = need_docker!();
    let dirs = dirs();
    let (code, out) = run_on_terminal(
        images,
        &dirs,
        "[ -t 0 ] && [ -t 1 ] && echo tty; stty size; \
         trap 'echo got-interrupt; exit 4' INT; echo ready; while true; do sleep 0.05; done",
        b"\x03",
    );
    assert_eq!(
        (code, out.as_str()),
        (Some(4), "tty\n33 101\nready\n^Cgot-interrupt\n")
    );
}

#[test]
fn docker_copy_mode_works_on_a_copy_of_the_workspace() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    std::fs::write(dirs.workspace.join("file.txt"), "original\n").unwrap();
    let copy = dirs.workspace.parent().unwrap().join("copy");
    let mut spec = spec(
        &dirs,
        &["sh", "-c", "cat file.txt; echo changed > file.txt"],
    );
    spec.workspace.mode = WorkspaceMode::Copy { into: copy.clone() };
    // `prepare` copies as root here: hand the copy to the agent's user like the original.
    backend.prepare(&spec).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&copy, Some(AGENT_UID), Some(AGENT_UID)).unwrap();
        std::os::unix::fs::chown(copy.join("file.txt"), Some(AGENT_UID), Some(AGENT_UID)).unwrap();
    }
    let out = run(&backend, &spec);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "original\n"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("file.txt")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(dirs.workspace.join("file.txt")).unwrap(),
        "original\n",
        "the host workspace is untouched"
    );
}

#[test]
fn docker_launch_fails_closed_and_leaves_nothing_when_the_firewall_cannot_run() {
    let images = need_docker!();
    let mut config = backend(RuntimeChoice::Named("runc".into()), Some(images))
        .config()
        .clone();
    config.firewall_image = Some("bot-bottle/no-such-firewall:0".into());
    let backend = DockerBackend::new(config).unwrap();
    let dirs = dirs();
    let marker = dirs.workspace.join("agent-ran");
    let spec = spec(&dirs, &["touch", "/workspace/agent-ran"]);
    let err = match backend.launch(&spec, BottleStdio::piped()) {
        Ok(_) => panic!("a bottle without its firewall must not start"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.starts_with("could not set up the bottle (close the bottle's network): "),
        "{err}"
    );
    assert_eq!(leftovers(&spec.identity), (vec![], vec![]));
    assert!(!marker.exists(), "the agent never ran");
}

/// The launcher waits for its state to be durable right before the release (`before_release`):
/// called once, after everything else is up, and a refusal there leaves nothing and runs no
/// agent.
#[test]
fn docker_before_release_runs_once_before_the_agent_and_a_refusal_leaves_nothing() {
    let images = need_docker!();
    let dirs = dirs();
    let marker = dirs.workspace.join("agent-ran");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let with_gate = |answer: Result<(), String>| {
        let mut config = backend(RuntimeChoice::Named("runc".into()), Some(images))
            .config()
            .clone();
        let (calls, marker) = (calls.clone(), marker.clone());
        config.before_release = Some(std::sync::Arc::new(move || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(!marker.exists(), "the agent ran before the release");
            answer.clone()
        }));
        DockerBackend::new(config).unwrap()
    };

    let refused = with_gate(Err("the state is not durable".into()));
    let spec = spec(&dirs, &["touch", "/workspace/agent-ran"]);
    let err = match refused.launch(&spec, BottleStdio::piped()) {
        Ok(_) => panic!("a refused release must not start the agent"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("release the bottle") && err.contains("the state is not durable"),
        "{err}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(leftovers(&spec.identity), (vec![], vec![]));
    assert!(!marker.exists(), "the agent never ran");

    let allowed = with_gate(Ok(()));
    let spec = self::spec(&dirs, &["touch", "/workspace/agent-ran"]);
    let mut bottle = allowed.launch(&spec, BottleStdio::piped()).unwrap();
    assert_eq!(bottle.wait().unwrap().code, 0);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(marker.exists(), "the agent ran once released");
    drop(bottle);
    assert_eq!(leftovers(&spec.identity), (vec![], vec![]));
}

#[test]
fn docker_image_build_streams_progress_and_reports_the_full_log_on_failure() {
    let images = need_docker!();
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        format!(
            "FROM {}\nRUN echo step-one-output\nRUN echo step-two-output && false\n",
            images.base
        ),
    )
    .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let mut config = backend(RuntimeChoice::Named("runc".into()), Some(images))
        .config()
        .clone();
    config.progress = Some(std::sync::Arc::new(move |l: &str| {
        sink.lock().unwrap().push(l.to_owned())
    }));
    let backend = DockerBackend::new(config).unwrap();
    let source = ImageSource::bottle_dockerfile("broken", &dockerfile).unwrap();
    let err = backend
        .ensure_image(&source, "agent-image")
        .unwrap_err()
        .to_string();
    assert!(err.contains("returned a non-zero code: 1"), "{err}");
    assert!(err.contains("full build log:"), "{err}");
    assert!(
        err.contains("step-one-output") && err.contains("step-two-output"),
        "{err}"
    );
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("step-two-output")),
        "build output is streamed as progress"
    );
}

#[test]
fn docker_a_sidecar_that_dies_stops_the_agent_and_says_how() {
    let images = need_docker!();
    let mut config = backend(RuntimeChoice::Named("runc".into()), Some(images))
        .config()
        .clone();
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = told.clone();
    config.sidecar_down = Some(std::sync::Arc::new(move |how: &str| {
        sink.lock().unwrap().push(how.to_owned())
    }));
    config.stop_grace = Duration::from_secs(1);
    let backend = DockerBackend::new(config).unwrap();
    let dirs = dirs();
    // An agent that ignores SIGTERM: it ends only by the SIGKILL after the grace.
    let spec = spec(
        &dirs,
        &[
            "sh",
            "-c",
            "trap '' TERM; echo up; while :; do sleep 1; done",
        ],
    );
    backend.prepare(&spec).unwrap();
    let mut bottle = backend.launch(&spec, BottleStdio::piped()).unwrap();
    drop(bottle.take_stdin());
    let mut out = std::io::BufReader::new(bottle.take_stdout().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "up\n");
    let names = backend::docker::Names::new(&spec.identity);
    let kill = std::process::Command::new("docker")
        .args(["kill", "--signal", "KILL", &names.sidecar])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    let exit = bottle.wait().unwrap();
    assert_eq!(exit.code, 137, "the agent was killed after the grace");
    assert_eq!(
        *told.lock().unwrap(),
        vec!["was killed by signal 9 (SIGKILL)".to_owned()]
    );
    assert_eq!(leftovers(&spec.identity), (vec![], vec![]));
}

/// The limits are the bottle's, and the init (PID 1, inside the `pids` limit) relays on one
/// event loop: an agent that has forked up to the limit still has every connection to its
/// sidecar answered, never refused for want of a thread (as native's forwarder).
#[test]
fn docker_limits_come_from_the_bottles_resources() {
    let images = need_docker!();
    let backend = backend(RuntimeChoice::Named("runc".into()), Some(images));
    let dirs = dirs();
    let mut spec = spec(
        &dirs,
        &[
            "python3",
            "-c",
            "import os\n\
             def first(*paths):\n\
             \x20   for p in paths:\n\
             \x20       try:\n\
             \x20           return open(p).read().split()[0]\n\
             \x20       except OSError:\n\
             \x20           pass\n\
             print(first('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us'),\n\
             \x20     first('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'),\n\
             \x20     first('/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/pids/pids.max'))\n\
             kids, err = [], ''\n\
             for i in range(200):\n\
             \x20   try:\n\
             \x20       pid = os.fork()\n\
             \x20   except OSError as e:\n\
             \x20       err = e.strerror\n\
             \x20       break\n\
             \x20   if pid == 0:\n\
             \x20       import signal\n\
             \x20       signal.pause()\n\
             \x20   kids.append(pid)\n\
             print(len(kids) < 64, err)\n\
             import socket\n\
             def conn():\n\
             \x20   try:\n\
             \x20       return socket.create_connection(('127.0.0.1', 3128), timeout=30)\n\
             \x20   except OSError:\n\
             \x20       return None\n\
             def answer(s):\n\
             \x20   if s is None:\n\
             \x20       return 'refused'\n\
             \x20   try:\n\
             \x20       got = s.recv(100).decode().strip()\n\
             \x20       return got.replace(' ', '-') or 'closed'\n\
             \x20   except socket.timeout:\n\
             \x20       return 'hung'\n\
             \x20   except OSError:\n\
             \x20       return 'closed'\n\
             for i in range(5):\n\
             \x20   print(answer(conn()))\n\
             many = [conn() for i in range(20)]\n\
             print(' '.join(answer(s) for s in many))\n\
             for k in kids: os.kill(k, 9)\n\
             for k in kids: os.waitpid(k, 0)\n",
        ],
    );
    spec.resources = backend::Resources {
        millicpus: 1500,
        memory_bytes: 256 << 20,
        pids: 64,
        allow_unenforced: false,
    };
    let out = run(&backend, &spec);
    // At the limit (the init inside it too), every connection to a sidecar endpoint is still
    // answered: five one after another, then twenty held open at once.
    let one = "sidecar-3128";
    let many = vec![one; 20].join(" ");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            0,
            format!(
                "150000 268435456 64\nTrue Resource temporarily unavailable\n{}{many}\n",
                format!("{one}\n").repeat(5)
            )
            .as_str()
        ),
        "{}",
        out.stderr
    );
}
