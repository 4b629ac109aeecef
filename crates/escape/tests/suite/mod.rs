//! The escape suite: for every backend in [`escape::BACKENDS`], build canaries, start a real
//! bottle running `escape-probe` as the agent, and judge each case from the probe's report
//! **and** from what the canaries received. Prints the table (and writes it to
//! `$ESCAPE_TABLE` when set, for `SECURITY.md`); any ESCAPED fails.
//!
//! Network rule: traffic only to loopback and to the namespaces created here
//! (`198.18.<n>.0/30` + `fd00:bb:<n>::/64` "internet", `10.213.<n>.0/30` "LAN", where `n` is
//! the run's slot: see `netns::Slot`), plus, on docker, the docker networks the run creates
//! (the test's own, the bottles'). Namespaces, addresses, the host DNS canary's address and
//! the UDP canaries' port are the run's own, so two suites may run at once.
//!
//! Where docker's world differs (see `docker.rs`): the allowed upstream listens on the host
//! side of a docker network the test creates (the sidecar container's loopback is its own);
//! the host canary listens on every host address, since a container meets the host on its
//! network's bridge; the workspace belongs to uid 1000 (the agent's user when root starts
//! it); the sidecar containers' resolver is pointed at a DNS canary before the probe is
//! released; and a second control runs the network section in a plain container.

mod canary;
mod docker;
mod kube_pod;
mod kube_pod_warm;
mod netns;

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use escape::{CaseLine, Verdict, parse_cases};
use test_support::{TestCa, Upstream};

use canary::Events;
use netns::{Netns, Slot};

const ZONE: &str = "escape.test";
const API: &str = "api.example.test";
/// A route with `websocket: true` (and no token), to a WebSocket upstream of its own.
const WS: &str = "ws.example.test";
const TCP_PORT: u16 = 80;
/// The probe bottle's `resources:` (the probe's fork bomb and memory hog are bounded just
/// above them): enough for git, TLS and the sections' children, far below what hurts CI.
const RESOURCE_PIDS: u32 = 128;
const RESOURCE_MEMORY_MIB: u32 = 384;
const PRIVATE_ROUTE_PORT: u16 = 8080;
const IP_ROUTE_PORT: u16 = 8081;

fn bot_bottle() -> PathBuf {
    if let Some(p) = std::env::var_os("BOT_BOTTLE_BIN") {
        return PathBuf::from(p);
    }
    // tests run from <target>/debug/deps/; the binary is <target>/debug/bot-bottle.
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("bot-bottle");
    assert!(
        p.is_file(),
        "{} is missing: build it first (`cargo build -p bot-bottle`) or set BOT_BOTTLE_BIN",
        p.display()
    );
    p
}

/// What a column of the table runs: `bot-bottle start --backend` and the docker runtime
/// (`BOT_BOTTLE_DOCKER_RUNTIME`). The docker column is pinned to runc, so that each column means
/// what its name says whatever the daemon has; `docker+runsc` is the docker backend under
/// gVisor.
fn column(backend: &str) -> (&str, Option<&str>) {
    match backend.split_once('+') {
        Some((cli, runtime)) => (cli, Some(runtime)),
        None if backend == "docker" => ("docker", Some("runc")),
        None => (backend, None),
    }
}

/// `None` when usable, else why not (from `bot-bottle doctor`, asked with the column's
/// runtime: it refuses a runtime the daemon does not list, or a gVisor the bottle's firewall
/// would not cover).
fn backend_unusable(backend: &str) -> Option<String> {
    let (cli, runtime) = column(backend);
    let mut doctor = Command::new(bot_bottle());
    doctor.arg("doctor");
    if let Some(runtime) = runtime {
        doctor.env("BOT_BOTTLE_DOCKER_RUNTIME", runtime);
    }
    let out = doctor.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // `native (default): usable ...`, `docker: ...`
    let line = text.lines().find(|l| {
        l.strip_prefix(cli)
            .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(" ("))
    });
    match line {
        Some(l) if l.contains(": usable") => None,
        Some(l) => Some(l.trim().to_string()),
        None => Some(format!(
            "`bot-bottle doctor` does not know the {backend} backend"
        )),
    }
}

use test_support::git::{git, seeded_upstream};

/// Everything the canaries and the harness-side checks need.
struct World {
    tmp: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
    upstream_git: PathBuf,
    resolv: PathBuf,
    nonce: String,
    token: String,
    seed: String,
    /// What `start` needs on this backend (docker: the local base image, no agent CLI).
    env: Vec<(String, String)>,
}

/// `docker_base`: the local base image when the backend is docker; `runtime`: the docker
/// runtime of the column.
fn world(
    upstream: &Upstream,
    ws_upstream: &Upstream,
    ca: &TestCa,
    slot: &Slot,
    host_port: u16,
    docker_base: Option<&str>,
    runtime: Option<&str>,
) -> World {
    let tmp = tempfile::Builder::new()
        .prefix("bbe")
        .tempdir_in("/tmp")
        .unwrap();
    let nonce = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_007
    );
    let home = tmp.path().join("h");
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    let (upstream_git, seed) = seeded_upstream(tmp.path());
    let ca_path = tmp.path().join("upstream-ca.pem");
    ca.write_pem(&ca_path);
    // Host-side secrets the bottle must not read.
    std::fs::write(tmp.path().join("outside-secret.txt"), &nonce).unwrap();
    std::fs::write(tmp.path().join("deploy_key"), &nonce).unwrap();
    std::os::unix::fs::symlink(
        tmp.path().join("outside-secret.txt"),
        workspace.join("link-out"),
    )
    .unwrap();
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\n", slot.dns4)).unwrap();
    let manifest = format!(
        r#"bottles:
  dev:
    git-gate:
      user: {{name: Probe, email: probe@example.com}}
      repos:
        app:
          url: {up}
          push_branches: ["agent/*"]
    egress:
      upstream_ca: [{ca}]
      routes:
        - host: {API}
          connect_to: "{addr}"
          auth_scheme: Bearer
          token_env: ESCAPE_TOKEN
          matches:
            - paths: [{{type: prefix, value: /v1/}}]
              methods: [GET, POST]
            - paths: [{{type: prefix, value: /scoped/}}]
              headers: [{{name: x-scope, value: read}}]
        - host: {WS}
          connect_to: "{ws_addr}"
          websocket: true
        - host: private.{ZONE}
          port: {PRIVATE_ROUTE_PORT}
        - host: loop.{ZONE}
          port: {host_port}
        - host: "{lan4}"
          port: {IP_ROUTE_PORT}
    resources: {{cpus: 1, memory: {RESOURCE_MEMORY_MIB}MiB, pids: {RESOURCE_PIDS}}}
agents:
  demo:
    bottle: dev
"#,
        up = upstream_git.display(),
        ca = ca_path.display(),
        addr = upstream.addr(),
        ws_addr = ws_upstream.addr(),
        lan4 = slot.lan4,
    );
    std::fs::write(workspace.join("bot-bottle.yaml"), manifest).unwrap();
    let mut env = Vec::new();
    if let Some(base) = docker_base {
        env.extend([
            ("BOT_BOTTLE_DOCKER_BASE".to_string(), base.to_string()),
            // The local base has the tools; the agent CLI would come from npm.
            ("BOT_BOTTLE_DOCKER_AGENT_PACKAGE".to_string(), String::new()),
            (
                "BOT_BOTTLE_DOCKER_RUNTIME".to_string(),
                runtime.unwrap_or_default().to_string(),
            ),
        ]);
        // Started by root, the agent runs as uid 1000 and writes its workspace.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&workspace, Some(1000), Some(1000)).unwrap();
        }
    }
    World {
        env,
        token: format!("tok-escape-REALSECRET-{nonce}"),
        tmp,
        home,
        workspace,
        upstream_git,
        resolv,
        nonce,
        seed,
    }
}

/// `bot-bottle start demo --backend B -- argv`, in a private mount namespace whose
/// `/etc/resolv.conf` points at this run's DNS canary on host loopback (so the sidecars
/// resolve test names there and nothing asks a real resolver).
fn start_cmd(w: &World, backend: &str, argv: &[String]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
        .arg(&w.resolv)
        .arg(bot_bottle())
        .args(["start", "demo", "--backend", column(backend).0, "--"])
        .args(argv)
        .current_dir(&w.workspace)
        .env("BOT_BOTTLE_HOME", &w.home)
        .env("ESCAPE_TOKEN", &w.token)
        .envs(w.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}

/// A second bottle that stays up while the probe runs (its sidecars are a target).
struct Other {
    child: std::process::Child,
    identity: String,
}

impl Drop for Other {
    /// `SIGTERM` first: the launcher then removes what it made (docker: containers and
    /// networks, which a killed launcher would leave for `bot-bottle cleanup`).
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The marker the second bottle's agent writes in the shared workspace once it runs.
const OTHER_UP: &str = ".escape-other-up";

fn start_other(w: &World, backend: &str) -> Result<Other, String> {
    let marker = w.workspace.join(OTHER_UP);
    let _ = std::fs::remove_file(&marker);
    let script = format!("echo \"$BOT_BOTTLE_IDENTITY\" > {OTHER_UP} && exec sleep 3600");
    let mut child = start_cmd(w, backend, &["sh".into(), "-c".into(), script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let err = child.stderr.take();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    // Long enough for a first build of the docker images.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            let stderr = err.join().unwrap_or_default();
            return Err(format!(
                "the second bottle ended ({st}) before its agent ran: {}",
                stderr.trim()
            ));
        }
        let identity = std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .trim()
            .to_string();
        let native_ready = backend != "native"
            || w.home
                .join("state")
                .join(&identity)
                .join("sockets/egress.sock")
                .exists();
        if !identity.is_empty() && native_ready {
            return Ok(Other { child, identity });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "the second bottle never came up: {}",
        err.join().unwrap_or_default().trim()
    ))
}

/// A host process the bottle must not be able to signal; killed when the run ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Canaries {
    events: Events,
    /// What the DNS canaries answer.
    answer: canary::Answer,
    host_port: u16,
    route_port: u16,
    /// The port of every UDP canary (the host's, the "internet"'s, the "LAN"'s): this run's own.
    udp_port: u16,
    notes: Vec<String>,
    _nets: Vec<Netns>,
    /// This run's namespaces and addresses (dropped after the namespaces).
    slot: Slot,
}

fn canaries() -> Result<Canaries, String> {
    let events = Events::default();
    let mut notes = Vec::new();
    let slot = Slot::claim()?;
    let (inet4, inet6, lan4) = (slot.inet4.clone(), slot.inet6.clone(), slot.lan4.clone());
    // The host UDP canary on every address, on a port of this run's own; the namespaces'
    // UDP canaries take the same port.
    let host_udp = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| format!("host UDP canary: {e}"))?;
    let udp_port = host_udp.local_addr().map_err(|e| e.to_string())?.port();
    canary::udp(host_udp, "host-udp", &events);
    let inet = Netns::create(
        &slot,
        "i",
        &slot.inet4_host,
        &inet4,
        Some(&slot.inet6_host),
        Some(&inet6),
    )?;
    let lan = Netns::create(&slot, "l", &slot.lan4_host, &lan4, None, None)?;
    let answer: canary::Answer = {
        let (private, internet) = (lan4.parse().unwrap(), inet4.parse().unwrap());
        Arc::new(move |name: &str| canary::answer_for(name, ZONE, private, internet))
    };
    {
        let (e, a) = (events.clone(), answer.clone());
        let (inet4, inet6) = (inet4.clone(), inet6.clone());
        inet.run(move || {
            canary::tcp(
                TcpListener::bind((inet4.as_str(), TCP_PORT)).unwrap(),
                "inet-tcp",
                &e,
            );
            canary::tcp(
                TcpListener::bind(format!("[{inet6}]:{TCP_PORT}")).unwrap(),
                "inet6-tcp",
                &e,
            );
            canary::udp(
                UdpSocket::bind((inet4.as_str(), udp_port)).unwrap(),
                "inet-udp",
                &e,
            );
            canary::dns_udp(
                UdpSocket::bind((inet4.as_str(), 53)).unwrap(),
                "inet-dns",
                &e,
                a.clone(),
            );
            canary::dns_tcp(
                TcpListener::bind((inet4.as_str(), 53)).unwrap(),
                "inet-dns",
                &e,
                a,
            );
        })?;
        let e = events.clone();
        let lan4 = lan4.clone();
        lan.run(move || {
            let lan4 = lan4.as_str();
            canary::tcp(TcpListener::bind((lan4, TCP_PORT)).unwrap(), "lan-tcp", &e);
            canary::tcp(
                TcpListener::bind((lan4, PRIVATE_ROUTE_PORT)).unwrap(),
                "lan-route",
                &e,
            );
            canary::tcp(
                TcpListener::bind((lan4, IP_ROUTE_PORT)).unwrap(),
                "lan-iproute",
                &e,
            );
            canary::udp(UdpSocket::bind((lan4, udp_port)).unwrap(), "lan-udp", &e);
        })?;
    }
    // The host: on every address (loopback for native bottles; a docker bottle would meet the
    // host on its networks' bridges).
    let host = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let host_port = host.local_addr().unwrap().port();
    canary::tcp(host, "host-tcp", &events);
    match TcpListener::bind(format!("[::1]:{host_port}")) {
        Ok(l) => canary::tcp(l, "host6-tcp", &events),
        Err(e) => notes.push(format!("no [::1] canary: {e}")),
    }
    let route = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let route_port = route.local_addr().unwrap().port();
    canary::tcp(route, "host-route", &events);
    // The DNS canary `start` resolves through is this run's own loopback address; the
    // well-known resolver addresses get one too when no other run holds them.
    let dns4 = slot.dns4.clone();
    canary::dns_udp(
        UdpSocket::bind((dns4.as_str(), 53)).map_err(|e| format!("DNS canary {dns4}: {e}"))?,
        "host-dns",
        &events,
        answer.clone(),
    );
    canary::dns_tcp(
        TcpListener::bind((dns4.as_str(), 53)).map_err(|e| format!("DNS canary {dns4}: {e}"))?,
        "host-dns",
        &events,
        answer.clone(),
    );
    for ip in ["127.0.0.1", "127.0.0.53", "127.0.0.11"] {
        match UdpSocket::bind((ip, 53)) {
            Ok(s) => canary::dns_udp(s, "host-dns", &events, answer.clone()),
            Err(e) => notes.push(format!("no DNS canary on {ip}:53/udp: {e}")),
        }
        match TcpListener::bind((ip, 53)) {
            Ok(l) => canary::dns_tcp(l, "host-dns", &events, answer.clone()),
            Err(e) => notes.push(format!("no DNS canary on {ip}:53/tcp: {e}")),
        }
    }
    // Sanity: the canaries answer from the host (the only traffic the harness sends).
    for addr in [format!("{inet4}:{TCP_PORT}"), format!("{lan4}:{TCP_PORT}")] {
        let mut s =
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
                .map_err(|e| format!("canary {addr} unreachable from the host: {e}"))?;
        let mut b = [0u8; 16];
        std::io::Read::read(&mut s, &mut b).map_err(|e| e.to_string())?;
    }
    // ... and record what they get: a UDP datagram and a DNS query each way too.
    let probe = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let _ = probe.send_to(b"sanity", (inet4.as_str(), udp_port));
    let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x06sanity\x06escape\x04test\x00\x00\x01\x00\x01";
    let _ = probe.send_to(q, (dns4.as_str(), 53));
    let _ = probe.send_to(q, (inet4.as_str(), 53));
    let want = [
        "inet-tcp",
        "lan-tcp",
        "inet-udp",
        "host-dns dns sanity",
        "inet-dns dns sanity",
    ];
    for _ in 0..40 {
        let got = events.all();
        if want.iter().all(|w| got.iter().any(|e| e.starts_with(w))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = events.all();
    if let Some(w) = want.iter().find(|w| !got.iter().any(|e| e.starts_with(*w))) {
        return Err(format!(
            "the canaries do not record ({w} missing from {got:?})"
        ));
    }
    events.clear();
    Ok(Canaries {
        events,
        answer,
        host_port,
        route_port,
        udp_port,
        notes,
        _nets: vec![inet, lan],
        slot,
    })
}

/// Which case a canary record convicts.
fn case_for_event(e: &str) -> &'static str {
    let label = e.split_whitespace().next().unwrap_or("");
    match label {
        "inet-tcp" => "net-tcp-internet",
        "inet6-tcp" => "net-ipv6-internet",
        "inet-udp" => "net-udp-internet",
        "lan-tcp" => "net-tcp-lan",
        "lan-udp" => "net-udp-lan",
        // The host canaries listen on every address: from outside loopback the bottle came
        // over a bridge.
        "host-tcp" | "host-udp" if !e.contains(" from 127.") => "net-host-via-bridge",
        "host-tcp" => "net-tcp-host-loopback",
        "host6-tcp" => "net-ipv6-host-loopback",
        "host-udp" => "net-udp-host-loopback",
        "lan-route" | "host-route" => "egress-route-resolves-private",
        "lan-iproute" => "egress-route-resolves-private",
        _ if e.contains(" dns leak-udp.") => "dns-udp",
        _ if e.contains(" dns leak-tcp.") => "dns-tcp",
        _ if e.contains(" dns leak-libc.") => "dns-system-resolver",
        _ if e.contains(" dns leak-doh.") => "dns-doh-through-proxy",
        _ if e.contains(" dns no-route.") => "egress-no-route",
        _ if e.contains(" dns self-approved.") => "supervise-self-approve",
        _ => "canary-unexpected-traffic",
    }
}

/// The sidecars legitimately resolve the names of routes (on the host, through the DNS
/// canary): those queries are not escapes.
fn is_expected_event(e: &str) -> bool {
    (e.starts_with("host-dns dns private.") || e.starts_with("host-dns dns loop."))
        && e.contains(" from 127.")
}

fn case_for_path(path: &str) -> &'static str {
    match path {
        p if p.contains("dlp-echo") => "dlp-credential-echo",
        p if p.contains("dlp") => "dlp-planted-secret",
        p if p.contains("hopbyhop") => "egress-hop-by-hop-header-rule",
        p if p.contains("ambig") => "egress-ambiguous-path",
        p if p.contains("override") => "egress-method-override",
        p if p.contains("hostform") => "egress-host-canonical",
        p if p.contains("upgsmug") => "egress-upgrade-framing",
        p if p.contains("h2limit") => "egress-http2-limits",
        p if p.contains("smuggl") => "egress-smuggling",
        p if p.contains("relay") => "egress-relay-tunnel-each-request-checked",
        p if p.contains("front") || p.contains("sni") => "egress-domain-fronting",
        p if p.starts_with("/ws") => "egress-websocket-path",
        p if p.contains("big") || p.contains("many") => "egress-oversized-headers",
        p if p.contains("dns-query") => "dns-doh-through-proxy",
        _ => "egress-path-method",
    }
}

struct Run {
    cases: Vec<CaseLine>,
}

fn escaped(cases: &mut Vec<CaseLine>, name: &str, detail: String) {
    if let Some(c) = cases.iter_mut().find(|c| c.name == name) {
        if c.verdict != Verdict::Escaped {
            c.detail = String::new();
        } else {
            c.detail.push_str("; ");
        }
        c.verdict = Verdict::Escaped;
        c.detail.push_str(&detail);
    } else {
        cases.push(CaseLine {
            name: name.into(),
            verdict: Verdict::Escaped,
            detail,
        });
    }
}

fn harness_case(cases: &mut Vec<CaseLine>, name: &str, problems: Vec<String>, ok: &str) {
    if problems.is_empty() {
        cases.push(CaseLine {
            name: name.into(),
            verdict: Verdict::Blocked,
            detail: ok.into(),
        });
    } else {
        escaped(cases, name, problems.join("; "));
    }
}

const WRITE_TARGETS: &[&str] = &[
    "/",
    "/etc",
    "/usr",
    "/usr/local/bin",
    "/opt",
    "/root",
    "/home",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/run",
    "/work",
    "/var",
];

/// What a docker run needs beyond native: the local base image and the test's own network
/// (the allowed upstream listens on the host side of its bridge; the control runs on it).
struct DockerSetup {
    base: String,
    net: docker::TestNetwork,
}

/// The file the probe waits for on docker (the harness writes `go` once the sidecar's
/// resolver points at the DNS canary, or `fail <why>`).
const GO_FILE: &str = ".escape-go";

async fn run_backend(
    backend: &str,
    cans: &Canaries,
    dk: Option<&DockerSetup>,
) -> Result<Run, String> {
    test_support::install_crypto_provider();
    cans.events.clear();
    let ca = TestCa::new("escape upstream CA");
    let (upstream, ws_upstream) = match dk {
        Some(d) => (
            Upstream::start_tls_on(d.net.gateway, &ca, &[API]).await,
            Upstream::start_tls_on(d.net.gateway, &ca, &[WS]).await,
        ),
        None => (
            Upstream::start_tls(&ca, &[API]).await,
            Upstream::start_tls(&ca, &[WS]).await,
        ),
    };
    let runtime = column(backend).1;
    let w = world(
        &upstream,
        &ws_upstream,
        &ca,
        &cans.slot,
        cans.route_port,
        dk.map(|d| d.base.as_str()),
        runtime,
    );
    // The probe travels in the workspace, which every backend gives the agent.
    let probe = w.workspace.join(".escape-probe");
    std::fs::copy(env!("CARGO_BIN_EXE_escape-probe"), &probe).unwrap();

    // Host things to attack.
    let mut victim = KillOnDrop(Command::new("sleep").arg("3600").spawn().unwrap());
    let host_home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let home_canary = host_home.join(format!(".escape-canary-{}", w.nonce));
    let home_canary_written = std::fs::write(&home_canary, &w.nonce).is_ok();
    let ca_bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let other = start_other(&w, backend)?;
    let other_state = w.home.join("state").join(&other.identity);
    let other_sockets: Vec<String> = std::fs::read_dir(other_state.join("sockets"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let other_pid = find_sidecar_pid(&other_state);
    // Docker: the other bottle's sidecar listens on its own internal network (no sockets).
    let mut other_sidecar_addrs = Vec::new();
    if dk.is_some() {
        let c = docker::container(&other.identity, "sidecar")
            .ok_or("the other bottle has no running sidecar container")?;
        docker::redirect_dns(&c, &cans.events, cans.answer.clone())?;
        for ip in &c.ips {
            for port in [3128, 3129, 3130] {
                other_sidecar_addrs.push(std::net::SocketAddr::new(*ip, port).to_string());
            }
        }
    }
    let go = w.workspace.join(GO_FILE);

    let t = w.tmp.path().display().to_string();
    let h = w.home.display().to_string();
    let token_rev: String = format!("REALSECRET-{}", w.nonce).chars().rev().collect();
    let mut write_targets: Vec<String> = WRITE_TARGETS.iter().map(|s| s.to_string()).collect();
    write_targets.push(t.clone());
    write_targets.push(h.clone());
    write_targets.push(host_home.display().to_string());
    if let Some(dir) = Path::new(env!("CARGO_BIN_EXE_escape-probe")).parent() {
        write_targets.push(dir.display().to_string());
    }
    let cfg = serde_json::json!({
        "nonce": w.nonce,
        "zone": ZONE,
        "api_host": API,
        "ws_host": WS,
        "pids_limit": RESOURCE_PIDS,
        "memory_limit_mib": RESOURCE_MEMORY_MIB,
        "inet4": cans.slot.inet4, "inet6": cans.slot.inet6, "lan4": cans.slot.lan4,
        "canary_tcp_port": TCP_PORT, "canary_udp_port": cans.udp_port,
        "host_canary_port": cans.host_port,
        "private_routes": [
            format!("private.{ZONE}:{PRIVATE_ROUTE_PORT}"),
            format!("loop.{ZONE}:{}", cans.route_port),
            format!("{}:{IP_ROUTE_PORT}", cans.slot.lan4),
        ],
        "token_fragment_rev": token_rev,
        "other_sockets": other_sockets,
        "other_identity": other.identity,
        "other_pid": other_pid,
        "victim_pid": victim.0.id(),
        "victim_comm": "sleep",
        "write_targets": write_targets,
        "host_read_targets": [
            format!("{t}/outside-secret.txt"),
            format!("{t}/deploy_key"),
            home_canary.display().to_string(),
        ],
        "host_canary_names": ["outside-secret.txt", "deploy_key", "up.git", "seed", format!(".escape-canary-{}", w.nonce), other.identity.clone()],
        "host_list_targets": ["/root", "/home", h.clone(), format!("{h}/state"), format!("{h}/queue"), t.clone(), host_home.display().to_string()],
        "host_secret_files": [
            format!("{h}/state/{{id}}/ca/ca-key.pem"),
            format!("{h}/state/{{id}}/sidecar.json"),
            format!("{h}/state/{{id}}/live-config/routes.yaml"),
            format!("{}/ca/ca-key.pem", other_state.display()),
            format!("{}/sidecar.json", other_state.display()),
            format!("{t}/deploy_key"),
        ],
        "host_secret_dirs": [h.clone(), t.clone()],
        "link_targets": [
            format!("{}/link-out", w.workspace.display()),
            format!("{}/../outside-secret.txt", w.workspace.display()),
            "/proc/self/cwd/../outside-secret.txt".to_string(),
        ],
        "queue_dirs": [format!("{h}/queue/{{id}}"), format!("{h}/queue/{}", other.identity)],
        "git_url": format!("file://{}", w.upstream_git.display()),
        "git_direct": w.upstream_git.display().to_string(),
        "upstream_addr": upstream.addr().to_string(),
        "host_addrs": dk.map(|d| vec![d.net.gateway.to_string()]).unwrap_or_default(),
        "other_sidecar_addrs": other_sidecar_addrs,
        "wait_for": if dk.is_some() { go.display().to_string() } else { String::new() },
        "expect_kernel": if runtime == Some("runsc") { "gvisor" } else { "" },
        "expect_vm": backend == "qemu",
        "host_kernel": std::fs::read_to_string("/proc/version").unwrap_or_default(),
    });
    let argv = vec![probe.display().to_string(), cfg.to_string()];
    let cmd = start_cmd(&w, backend, &argv);
    let probe_run = tokio::task::spawn_blocking(move || run_probe(cmd));
    let mut probe_identity = None;
    if dk.is_some() {
        let r = release_docker_probe(&w, &other.identity, cans);
        let word = match &r {
            Ok(id) => {
                probe_identity = Some(id.clone());
                "go".to_string()
            }
            Err(e) => format!("fail {e}"),
        };
        std::fs::write(&go, word).unwrap();
    }
    // From outside: the agent container runs with the column's runtime.
    let agent_runtime = match (&probe_identity, runtime) {
        (Some(id), Some(want)) => Some((want, docker::agent_runtime(id))),
        _ => None,
    };
    let (status, stdout, stderr) = probe_run.await.unwrap()?;
    eprintln!("--- probe on {backend}: {status} ---\n--- stderr ---\n{stderr}");
    let mut cases = parse_cases(&stdout);
    if let Some((want, seen)) = agent_runtime {
        match seen {
            Ok(seen) if seen == want => {
                if let Some(c) = cases.iter_mut().find(|c| c.name == "kernel-gvisor") {
                    c.detail
                        .push_str(&format!("; the agent container's runtime is {seen}"));
                }
            }
            Ok(seen) => escaped(
                &mut cases,
                "kernel-gvisor",
                format!("the agent container ran with the runtime {seen}, not {want}"),
            ),
            Err(e) => escaped(
                &mut cases,
                "kernel-gvisor",
                format!("the agent container's runtime could not be read: {e}"),
            ),
        }
    }
    if !stdout.contains("PROBE-DONE") {
        escaped(
            &mut cases,
            "probe-completed",
            format!("the probe did not finish ({status}); a missing case counts as an escape"),
        );
    }

    // What the canaries received.
    std::thread::sleep(Duration::from_millis(300));
    for e in cans.events.all() {
        eprintln!("canary: {e}");
        if !is_expected_event(&e) {
            escaped(
                &mut cases,
                case_for_event(&e),
                format!("canary received: {e}"),
            );
        }
    }
    // The private-range check must have been met after a real resolution (through the DNS
    // canary), not only a refusal before it: say which in the case's detail.
    let resolved: Vec<String> = cans
        .events
        .all()
        .into_iter()
        .filter(|e| is_expected_event(e))
        .filter_map(|e| e.split_whitespace().nth(2).map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(c) = cases
        .iter_mut()
        .find(|c| c.name == "egress-route-resolves-private")
    {
        c.detail.push_str(&format!(
            "; the sidecar resolved {resolved:?} through the DNS canary before refusing"
        ));
    }
    // What the allowed upstream received: exactly the allowed requests, each with the token.
    let allowed = [
        "/v1/allowed",
        "/v1/relay-ok",
        "/v1/after-fork",
        "/v1/after-memory",
    ];
    let mut got = Vec::new();
    for r in upstream.requests() {
        if !allowed.contains(&r.path.as_str()) || r.method != "GET" {
            escaped(
                &mut cases,
                case_for_path(&r.path),
                format!("upstream received {} {}", r.method, r.path),
            );
        }
        got.push(r.path.clone());
        if r.header("authorization") != vec![format!("Bearer {}", w.token)] {
            escaped(
                &mut cases,
                "cred-token-only-on-allowed-route",
                format!("{} arrived without the injected token", r.path),
            );
        }
    }
    let mut missing: Vec<String> = allowed
        .iter()
        .filter(|p| !got.iter().any(|g| g == *p))
        .map(|p| format!("allowed request {p} never arrived (the suite cannot judge egress)"))
        .collect();
    if !cases
        .iter()
        .any(|c| c.name == "cred-token-only-on-allowed-route")
    {
        missing.retain(|_| true);
        harness_case(
            &mut cases,
            "egress-upstream-got-exactly-allowed",
            std::mem::take(&mut missing),
            "the recording upstream got only the allowed requests, each with the real token",
        );
    }
    // What crossed to the WebSocket upstream after its `101`s: the innocent message (so the
    // path works and the suite can judge it), never the planted key (the probe sends its
    // frames with an all-zero mask, so the payload crosses as written unless egress stops it).
    let crossed = String::from_utf8_lossy(&ws_upstream.upgraded()).into_owned();
    let mut problems = Vec::new();
    if crossed.contains("AKIA") {
        problems.push("the WebSocket upstream received the planted key".to_string());
    }
    if !crossed.contains(&format!("hello {}", w.nonce)) {
        problems.push(
            "the innocent WebSocket message never reached the upstream (the suite cannot judge \
             WebSocket DLP)"
                .to_string(),
        );
    }
    for r in ws_upstream.requests() {
        if r.path != "/ws" {
            problems.push(format!(
                "the WebSocket upstream received {} {}",
                r.method, r.path
            ));
        }
    }
    for p in problems {
        escaped(&mut cases, "dlp-websocket-message", p);
    }
    // Host filesystem: markers, the CA bundle, the home canary.
    let mut problems = Vec::new();
    for d in cfg["write_targets"].as_array().unwrap() {
        let p = Path::new(d.as_str().unwrap()).join(format!("escape-marker-{}", w.nonce));
        if p.exists() {
            problems.push(format!("{} appeared on the host", p.display()));
            let _ = std::fs::remove_file(&p);
        }
    }
    if std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default() != ca_bundle {
        problems.push("the host's CA bundle changed".into());
    }
    for p in problems {
        escaped(&mut cases, "fs-write-outside-workspace", p);
    }
    if home_canary_written {
        let _ = std::fs::remove_file(&home_canary);
    }
    // Host processes and the other bottle survived.
    let mut problems = Vec::new();
    if victim.0.try_wait().unwrap().is_some() {
        problems.push("the host victim process was killed".into());
    }
    let mut other = other;
    if other.child.try_wait().unwrap().is_some() {
        problems.push("the other bottle died".into());
    }
    if let Some(pid) = other_pid
        && !Path::new(&format!("/proc/{pid}")).exists()
    {
        problems.push("the other bottle's sidecar bundle died".into());
    }
    for p in problems {
        escaped(&mut cases, "proc-ptrace-kill-host", p);
    }
    let _ = Command::new(bot_bottle())
        .args(["stop", &other.identity, "--grace", "1"])
        .env("BOT_BOTTLE_HOME", &w.home)
        .output();
    // Its launcher cleans up (docker: containers and networks) before it exits.
    for _ in 0..300 {
        if other.child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = other.child.kill();
    let _ = other.child.wait();
    if dk.is_some() {
        let mut ids = vec![other.identity.clone()];
        ids.extend(probe_identity);
        let left = docker::leftovers(&ids);
        if !left.is_empty() {
            eprintln!("note: the bottles left docker objects behind, removed now: {left:?}");
            docker::remove(&left);
        }
    }
    // Git upstream: main untouched, agent/ok has the clean commit, no secret anywhere.
    let mut problems = Vec::new();
    let refs = git(
        &w.upstream_git,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    let refs: BTreeMap<&str, &str> = refs.lines().filter_map(|l| l.split_once(' ')).collect();
    if refs.get("refs/heads/main") != Some(&w.seed.as_str()) {
        problems.push(format!("upstream main moved: {refs:?}"));
    }
    let names: Vec<&&str> = refs.keys().collect();
    if names != vec![&"refs/heads/agent/ok", &"refs/heads/main"] {
        problems.push(format!("upstream refs are {names:?}"));
    }
    let all = git(&w.upstream_git, &["log", "--all", "--format=%s"]);
    if all.contains("oops") || all.contains("rewritten") {
        problems.push(format!("upstream history: {all:?}"));
    }
    harness_case(
        &mut cases,
        "git-upstream-unchanged-but-for-allowed",
        problems,
        "upstream holds seed on main and the clean commit on agent/ok only",
    );
    // The queue on the host: no response written by the agent.
    for q in [w.home.join("queue")] {
        if let Ok(rd) = std::fs::read_dir(&q) {
            for e in rd.flatten() {
                if e.path().join("responses/escape.json").exists() {
                    escaped(
                        &mut cases,
                        "supervise-self-approve",
                        format!("{} got the agent's response", e.path().display()),
                    );
                }
            }
        }
    }
    if std::env::var_os("ESCAPE_KEEP").is_some() {
        eprintln!("keeping {}", w.tmp.path().display());
        std::mem::forget(w.tmp);
    }
    for n in &cans.notes {
        eprintln!("note: {n}");
    }
    Ok(Run { cases })
}

/// Docker: waits for the probe bottle's sidecar container and points its resolver at a DNS
/// canary (see `docker.rs`); returns the probe bottle's identity.
fn release_docker_probe(w: &World, other: &str, cans: &Canaries) -> Result<String, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::time::Instant::now() < deadline {
        let ours = docker::sidecar_identities()
            .into_iter()
            .find(|id| id != other && w.home.join("state").join(id).is_dir());
        if let Some(id) = ours
            && let Some(c) = docker::container(&id, "sidecar")
        {
            docker::redirect_dns(&c, &cans.events, cans.answer.clone())?;
            return Ok(id);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the probe bottle's sidecar container never ran".into())
}

/// How long the probe may run before it is killed (it normally takes well under a minute).
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the probe's `start`, echoing its lines as they come; kills it after [`PROBE_TIMEOUT`].
fn run_probe(mut cmd: Command) -> Result<(String, String, String), String> {
    use std::io::{BufRead, Read};
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("probe: {line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break format!("{st}");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break format!("killed after {PROBE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((status, reader.join().unwrap(), err_reader.join().unwrap()))
}

fn find_sidecar_pid(state: &Path) -> Option<u32> {
    let needle = state.join("sidecar.json").display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains(&needle)
            .then_some(pid)
    })
}

fn render(results: &[(String, Result<Run, String>)]) -> String {
    let mut order: Vec<String> = Vec::new();
    for (_, r) in results {
        if let Ok(run) = r {
            for c in &run.cases {
                if !order.contains(&c.name) {
                    order.push(c.name.clone());
                }
            }
        }
    }
    let mut out = String::from("| attack |");
    for (b, _) in results {
        out.push_str(&format!(" {b} |"));
    }
    out.push_str("\n|---|");
    for _ in results {
        out.push_str("---|");
    }
    out.push('\n');
    for name in &order {
        out.push_str(&format!("| {name} |"));
        for (_, r) in results {
            let cell = match r {
                Err(_) => "skipped (see below)".into(),
                Ok(run) => match run.cases.iter().find(|c| &c.name == name) {
                    None => "missing (counts as ESCAPED)".into(),
                    Some(c) => match c.verdict {
                        Verdict::Blocked => "blocked".into(),
                        v => format!("{}: {}", v.as_str(), c.detail),
                    },
                },
            };
            out.push_str(&format!(" {} |", cell.replace('|', "/")));
        }
        out.push('\n');
    }
    for (b, r) in results {
        if let Err(why) = r {
            out.push_str(&format!("\n{b} skipped: {why}\n"));
        }
    }
    out
}

fn details(results: &[(String, Result<Run, String>)]) -> String {
    let mut out = String::new();
    for (b, r) in results {
        if let Ok(run) = r {
            out.push_str(&format!("\n{b}:\n"));
            for c in &run.cases {
                out.push_str(&format!(
                    "  {} {} {}\n",
                    c.name,
                    c.verdict.as_str(),
                    c.detail
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_a_bottle_except_through_its_sidecars() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipping the escape suite: it creates network namespaces and needs root (CI runs it as root)"
        );
        return;
    }
    if Command::new("ip").arg("-V").output().is_err()
        || Command::new("unshare").arg("--version").output().is_err()
    {
        eprintln!(
            "skipping the escape suite: `ip` (iproute2) and `unshare` (util-linux) are needed"
        );
        return;
    }
    // One set of canaries for every backend (their listeners live as long as the test).
    let cans = canaries().unwrap_or_else(|e| panic!("cannot set up the canaries: {e}"));
    let mut results: Vec<(String, Result<Run, String>)> = Vec::new();
    let mut docker_setups = Vec::new();
    // `ESCAPE_BACKENDS=native,docker` (optional) runs only those columns, for a quick local
    // run; the others are reported as not run.
    let only = std::env::var("ESCAPE_BACKENDS").unwrap_or_default();
    for backend in escape::BACKENDS {
        let chosen = only.is_empty() || only.split(',').any(|b| b.trim() == *backend);
        let setup = match backend_unusable(backend) {
            _ if !chosen => Err(format!("not run (ESCAPE_BACKENDS={only})")),
            Some(why) => Err(why),
            None if backend.starts_with("docker") => docker::base_image().and_then(|base| {
                Ok(Some(DockerSetup {
                    base: base.to_owned(),
                    net: docker::TestNetwork::create("bot-bottle-test-esc")
                        .map_err(|e| format!("harness error: {e}"))?,
                }))
            }),
            None => Ok(None),
        };
        let r = match setup {
            Err(why) => Err(why),
            Ok(dk) => {
                let r = run_backend(backend, &cans, dk.as_ref())
                    .await
                    .map_err(|e| format!("harness error: {e}"));
                if let Some(d) = dk {
                    docker_setups.push((column(backend).1.unwrap_or("runc").to_string(), d));
                }
                r
            }
        };
        if let Err(e) = &r {
            assert!(!e.starts_with("harness error"), "{backend}: {e}");
        }
        results.push((backend.to_string(), r));
    }
    control_run_without_a_bottle_is_caught(&cans);
    for (runtime, d) in &docker_setups {
        control_run_in_a_plain_container_is_caught(&cans, d, runtime);
    }
    let table = render(&results);
    println!("{table}");
    eprintln!("{table}\n{}", details(&results));
    if let Some(path) = std::env::var_os("ESCAPE_TABLE") {
        std::fs::write(path, format!("{table}\n<details><summary>every case's detail</summary>\n\n```text{}```\n</details>\n", details(&results))).unwrap();
    }
    let bad: Vec<String> = results
        .iter()
        .filter_map(|(b, r)| r.as_ref().ok().map(|run| (b, run)))
        .flat_map(|(b, run)| {
            run.cases
                .iter()
                .filter(|c| c.verdict == Verdict::Escaped)
                .map(move |c| format!("{b}: {} — {}", c.name, c.detail))
        })
        .collect();
    assert!(bad.is_empty(), "ESCAPED:\n{}", bad.join("\n"));
}

#[test]
fn each_column_names_its_backend_and_docker_runtime() {
    assert_eq!(column("native"), ("native", None));
    assert_eq!(column("docker"), ("docker", Some("runc")));
    assert_eq!(column("docker+runsc"), ("docker", Some("runsc")));
    assert!(escape::BACKENDS.contains(&"docker+runsc"));
}

#[test]
fn a_canary_record_convicts_the_case_it_belongs_to() {
    assert_eq!(
        case_for_event("inet-tcp tcp connection from 198.18.77.1:5555"),
        "net-tcp-internet"
    );
    assert_eq!(
        case_for_event("lan-route tcp connection from 10.213.77.1:4444"),
        "egress-route-resolves-private"
    );
    assert_eq!(
        case_for_event("host-dns dns leak-udp.escape.test udp from 127.0.0.1:1"),
        "dns-udp"
    );
    assert_eq!(
        case_for_event("host-dns dns no-route.escape.test udp from 127.0.0.1:1"),
        "egress-no-route"
    );
    assert_eq!(
        case_for_event("host-tcp tcp connection from 127.0.0.1:5555"),
        "net-tcp-host-loopback"
    );
    assert_eq!(
        case_for_event("host-udp udp datagram (12 bytes) from 172.18.0.2:5555"),
        "net-host-via-bridge"
    );
    assert_eq!(case_for_event("odd thing"), "canary-unexpected-traffic");
    // The sidecars resolving their own routes on the host is expected; anything else is not.
    assert!(is_expected_event(
        "host-dns dns private.escape.test udp from 127.0.0.1:9"
    ));
    assert!(!is_expected_event(
        "inet-dns dns private.escape.test udp from 198.18.77.1:9"
    ));
    assert_eq!(case_for_path("/admin-smuggled"), "egress-smuggling");
    assert_eq!(case_for_path("/admin"), "egress-path-method");
}

#[test]
fn a_canary_overrides_a_probe_that_believed_it_was_blocked() {
    let mut cases = parse_cases("CASE net-tcp-internet blocked unreachable\n");
    escaped(
        &mut cases,
        "net-tcp-internet",
        "canary received: inet-tcp ...".into(),
    );
    escaped(&mut cases, "dns-udp", "canary received: x".into());
    assert_eq!(
        cases,
        vec![
            CaseLine {
                name: "net-tcp-internet".into(),
                verdict: Verdict::Escaped,
                detail: "canary received: inet-tcp ...".into()
            },
            CaseLine {
                name: "dns-udp".into(),
                verdict: Verdict::Escaped,
                detail: "canary received: x".into()
            },
        ]
    );
    let table = render(&[
        ("native".into(), Ok(Run { cases })),
        ("docker".into(), Err("docker: not usable: no daemon".into())),
    ]);
    assert_eq!(
        table,
        "| attack | native | docker |\n|---|---|---|\n\
         | net-tcp-internet | ESCAPED: canary received: inet-tcp ... | skipped (see below) |\n\
         | dns-udp | ESCAPED: canary received: x | skipped (see below) |\n\
         \ndocker skipped: docker: not usable: no daemon\n"
    );
}

/// The control: the probe's network section run on the host, outside any bottle, must be
/// reported as escaping, by the probe and by the canaries — otherwise a "blocked" above could
/// mean the suite sees nothing. (Only the network section: it talks to the canaries alone.)
fn control_run_without_a_bottle_is_caught(cans: &Canaries) {
    cans.events.clear();
    let cfg = serde_json::json!({
        "sections": ["network"],
        "inet4": cans.slot.inet4, "inet6": cans.slot.inet6, "lan4": cans.slot.lan4,
        "canary_tcp_port": TCP_PORT, "canary_udp_port": cans.udp_port,
        "host_canary_port": cans.host_port,
    });
    let out = Command::new(env!("CARGO_BIN_EXE_escape-probe"))
        .arg(cfg.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let cases = parse_cases(&String::from_utf8_lossy(&out.stdout));
    let verdict = |n: &str| cases.iter().find(|c| c.name == n).map(|c| c.verdict);
    for n in [
        "net-tcp-internet",
        "net-tcp-lan",
        "net-tcp-host-loopback",
        "net-udp-internet",
        "net-interfaces",
    ] {
        assert_eq!(
            verdict(n),
            Some(Verdict::Escaped),
            "control: {n} in {cases:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let got = cans.events.all();
    for label in ["inet-tcp", "lan-tcp", "host-tcp", "inet-udp"] {
        assert!(
            got.iter().any(|e| e.starts_with(label)),
            "control: the {label} canary saw nothing: {got:?}"
        );
    }
    cans.events.clear();
}

/// The control for docker: the same network section in a plain container on the test's own
/// docker network (what a container that is not a bottle can do from where docker bottles
/// send their packets) must reach the "internet" and "LAN" canaries through the host and the
/// host canary on the bridge — otherwise a docker "blocked" could mean the canaries are out
/// of a container's reach. Run with each docker column's runtime (under gVisor too, whose
/// packets leave through its own sockets).
fn control_run_in_a_plain_container_is_caught(cans: &Canaries, d: &DockerSetup, runtime: &str) {
    cans.events.clear();
    let cfg = serde_json::json!({
        "sections": ["network"],
        "inet4": cans.slot.inet4, "inet6": cans.slot.inet6, "lan4": cans.slot.lan4,
        "canary_tcp_port": TCP_PORT, "canary_udp_port": cans.udp_port,
        "host_canary_port": cans.host_port,
        "host_addrs": [d.net.gateway.to_string()],
    });
    let probe = Path::new(env!("CARGO_BIN_EXE_escape-probe"));
    let out = docker::control_container(&d.net, &d.base, runtime, probe, &cfg.to_string())
        .unwrap_or_else(|e| e);
    let cases = parse_cases(&out);
    let verdict = |n: &str| cases.iter().find(|c| c.name == n).map(|c| c.verdict);
    for n in [
        "net-tcp-internet",
        "net-tcp-lan",
        "net-udp-internet",
        "net-host-via-bridge",
        "net-interfaces",
    ] {
        assert_eq!(
            verdict(n),
            Some(Verdict::Escaped),
            "docker control ({runtime}): {n} in {out}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let got = cans.events.all();
    for label in ["inet-tcp", "lan-tcp", "inet-udp", "host-tcp", "host-udp"] {
        assert!(
            got.iter().any(|e| e.starts_with(label)),
            "docker control ({runtime}): the {label} canary saw nothing: {got:?}"
        );
    }
    assert!(
        got.iter()
            .any(|e| e.starts_with("host-tcp") && !e.contains(" from 127.")),
        "docker control ({runtime}): the host canary was not reached over the bridge: {got:?}"
    );
    cans.events.clear();
}
