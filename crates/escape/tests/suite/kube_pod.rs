//! The kubernetes backend's pod topology, run on Docker: containers joined to one network
//! namespace (`--network container:`) as a pod's containers are, with no cluster.
//!
//! * a holder container owns the namespace (a pod's sandbox), on a docker network of the
//!   test's own whose host side stands in for "the internet";
//! * the `network` init step: root with `NET_ADMIN` only, runs `nft -f` on the rules the
//!   backend puts in the pod's ConfigMap (`backend::kubernetes::nft::ruleset`). The base image
//!   has no `nft`, so the host's binary and the libraries it needs are mounted read-only;
//! * the sidecar as uid 1001, listening on the contract's ports on loopback;
//! * the agent as uid 1000, no capability, running `escape-probe`'s network section.
//!
//! Judged by the probe and by canaries on the test network's host side: nothing of the
//! agent's may arrive, while the sidecar's uid (the control) must reach them.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use escape::{Verdict, parse_cases};

use super::canary::{self, Events};
use super::docker::{TestNetwork, base_image, docker};

pub(super) const AGENT: u32 = 1000;
pub(super) const SIDECAR: u32 = 1001;
pub(super) const PORTS: [u16; 3] = [3128, 3129, 3130];

/// Why the test cannot run here, if it cannot.
pub(super) fn missing() -> Option<String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Some("needs root (docker, and reading the host's nft)".into());
    }
    if docker(&["info"]).is_err() {
        return Some("no Docker daemon answers (scripts/docker/start-dockerd)".into());
    }
    if !Path::new("/usr/sbin/nft").is_file() {
        return Some(
            "the host has no /usr/sbin/nft (scripts/install-test-deps installs nftables)".into(),
        );
    }
    None
}

/// The host's `nft` and every library it loads but libc's own, as read-only mounts under
/// `/opt/nft` (the base image and the host are the same Debian release).
pub(super) fn nft_mounts() -> Vec<String> {
    let out = Command::new("ldd").arg("/usr/sbin/nft").output().unwrap();
    let mut mounts = vec!["-v".to_owned(), "/usr/sbin/nft:/opt/nft/nft:ro".to_owned()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        let path = rest.split_whitespace().next().unwrap_or_default();
        if name.starts_with("libc.so") || !path.starts_with('/') {
            continue;
        }
        mounts.push("-v".to_owned());
        mounts.push(format!("{path}:/opt/nft/lib/{name}:ro"));
    }
    mounts
}

/// Containers of this test, removed on drop.
pub(super) struct Pod {
    pub(super) names: Vec<String>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = docker(&["rm", "-f", n]);
        }
    }
}

pub(super) fn run_in_pod(holder: &str, user: &str, base: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", &format!("container:{holder}")])
        .args(["--user", user, "--cap-drop", "ALL"])
        .args([
            "--security-opt",
            "no-new-privileges:true",
            "--label",
            "org.bot-bottle.test=true",
        ])
        .args([base, "python3", "-c", script])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub(super) fn connect_script(host: &str, port: u16) -> String {
    format!(
        "import socket; socket.create_connection(('{host}', {port}), timeout=3); print('connected')"
    )
}

/// The `network` init container of the pod whose namespace `holder` owns: root with
/// `NET_ADMIN` only, `nft -f` on the rules the backend puts in the pod's ConfigMap.
pub(super) fn apply_ruleset(holder: &str, base: &str) {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = backend::kubernetes::nft::ruleset(AGENT, SIDECAR, &PORTS).unwrap();
    std::fs::write(rules_dir.path().join("rules.nft"), rules).unwrap();
    let mut init = vec![
        "run".to_owned(),
        "--rm".into(),
        "--network".into(),
        format!("container:{holder}"),
        "--user".into(),
        "0:0".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--cap-add".into(),
        "NET_ADMIN".into(),
        "--security-opt".into(),
        "no-new-privileges:true".into(),
        "--label".into(),
        "org.bot-bottle.test=true".into(),
        "-e".into(),
        "LD_LIBRARY_PATH=/opt/nft/lib".into(),
        "-v".into(),
        format!("{}:/run/bot-bottle/network:ro", rules_dir.path().display()),
    ];
    init.extend(nft_mounts());
    init.extend([
        base.to_owned(),
        "/opt/nft/nft".into(),
        "-f".into(),
        "/run/bot-bottle/network/rules.nft".into(),
    ]);
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    docker(&init).unwrap();
}

#[test]
fn the_pod_topology_on_docker_confines_the_agent_to_its_sidecar() {
    if let Some(why) = missing() {
        eprintln!("skipping the kubernetes pod-topology test: {why}");
        return;
    }
    let base = match base_image() {
        Ok(b) => b.to_owned(),
        Err(e) => {
            eprintln!("skipping the kubernetes pod-topology test: {e}");
            return;
        }
    };
    let net = TestNetwork::create("bbk-pod").unwrap();
    let gw: IpAddr = net.gateway;
    let events = Events::default();
    let tcp = TcpListener::bind((gw, 0)).unwrap();
    let tport = tcp.local_addr().unwrap().port();
    canary::tcp(tcp, "inet-tcp", &events);
    let udp = UdpSocket::bind((gw, 0)).unwrap();
    let uport = udp.local_addr().unwrap().port();
    canary::udp(udp, "inet-udp", &events);
    let host = TcpListener::bind((gw, 0)).unwrap();
    let hport = host.local_addr().unwrap().port();
    canary::tcp(host, "host-tcp", &events);

    let id = std::process::id();
    let holder = format!("bbk-pod-holder-{id}");
    let sidecar = format!("bbk-pod-sidecar-{id}");
    let pod = Pod {
        names: vec![holder.clone(), sidecar.clone()],
    };
    docker(&[
        "run",
        "-d",
        "--name",
        &holder,
        "--network",
        &net.name,
        "--label",
        "org.bot-bottle.test=true",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        "sleep",
        &base,
        "900",
    ])
    .unwrap();

    // Before the rules, the agent's uid reaches the "internet" (the control for "blocked").
    let (ok, text) = run_in_pod(
        &holder,
        "1000:1000",
        &base,
        &connect_script(&gw.to_string(), tport),
    );
    assert!(
        ok,
        "control: the agent's uid cannot reach the canary without the rules: {text}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        events.all().iter().any(|e| e.starts_with("inet-tcp")),
        "{:?}",
        events.all()
    );
    events.clear();

    // The `network` init container.
    apply_ruleset(&holder, &base);

    // The sidecar: uid 1001 on the contract's ports.
    let listen = format!(
        "import socket, threading\n\
         def serve(p):\n    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    s.bind(('127.0.0.1', p)); s.listen()\n    while True:\n        c, _ = s.accept(); c.sendall(b'SIDECAR\\n'); c.close()\n\
         for p in {PORTS:?}:\n    threading.Thread(target=serve, args=(p,)).start()\n"
    );
    docker(&[
        "run",
        "-d",
        "--name",
        &sidecar,
        "--network",
        &format!("container:{holder}"),
        "--user",
        "1001:1001",
        "--cap-drop",
        "ALL",
        "--label",
        "org.bot-bottle.test=true",
        &base,
        "python3",
        "-c",
        &listen,
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // The agent reaches its sidecar on loopback, and the sidecar's uid goes out.
    let (ok, text) = run_in_pod(
        &holder,
        "1000:1000",
        &base,
        &connect_script("127.0.0.1", 3128),
    );
    assert!(ok, "the agent cannot reach its sidecar: {text}");
    let (ok, text) = run_in_pod(
        &holder,
        "1001:1001",
        &base,
        &connect_script(&gw.to_string(), tport),
    );
    assert!(ok, "the sidecar's uid cannot go out: {text}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        events.all().iter().any(|e| e.starts_with("inet-tcp")),
        "{:?}",
        events.all()
    );
    events.clear();
    // Docker's embedded DNS (127.0.0.11): the agent's datagram is refused before it leaves.
    let (ok, text) = run_in_pod(
        &holder,
        "1000:1000",
        &base,
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'probe', ('127.0.0.11', 53))",
    );
    assert!(
        !ok && text.contains("Operation not permitted"),
        "embedded DNS: {text}"
    );

    // The escape probe's network section as the agent.
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_escape-probe"));
    let cfg = serde_json::json!({
        "sections": ["network"],
        "inet4": gw.to_string(), "lan4": gw.to_string(), "inet6": "::1",
        "canary_tcp_port": tport, "canary_udp_port": uport, "host_canary_port": hport,
        "host_addrs": [gw.to_string()],
    });
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", &format!("container:{holder}")])
        .args(["--user", "1000:1000", "--cap-drop", "ALL"])
        .args([
            "--security-opt",
            "no-new-privileges:true",
            "--label",
            "org.bot-bottle.test=true",
        ])
        .args(["-v", &format!("{}:/escape-probe:ro", probe.display())])
        .args(["--entrypoint", "/escape-probe", &base, &cfg.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let cases = parse_cases(&stdout);
    eprintln!("{stdout}");
    assert!(
        cases.iter().any(|c| c.name == "net-tcp-internet"),
        "the probe did not run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let escaped: Vec<_> = cases
        .iter()
        .filter(|c| c.verdict == Verdict::Escaped)
        .collect();
    assert!(escaped.is_empty(), "the agent escaped its pod: {escaped:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        events.all(),
        Vec::<String>::new(),
        "the canaries heard from the agent"
    );
    drop(pod);
}
