//! The kubernetes backend's isolation, without a cluster: the `network` init container's
//! nftables rules (the same text the pod's ConfigMap carries) applied with the real `nft` in
//! a network namespace this test creates, then probed by processes running as the agent's
//! uid, the sidecar's uid and root. The "internet" is a second namespace of the test's, joined
//! by a veth pair; nothing leaves the namespaces this test made.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::kubernetes::nft;

const AGENT: u32 = 1000;
const SIDECAR: u32 = 1001;
const PORTS: [u16; 3] = [3128, 3129, 3130];
const INTERNET: &str = "10.99.0.1";

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    for tool in ["nft", "ip", "setpriv", "bash", "timeout"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Some(format!(
                "`{tool}` is not installed (scripts/install-test-deps installs nftables, iproute2, util-linux)"
            ));
        }
    }
    None
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces (`pod`, `net`) joined by a veth pair; deleted on drop.
struct Namespaces {
    pod: String,
    net: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let id = std::process::id();
        let ns = Namespaces {
            pod: format!("bbk-pod-{id}"),
            net: format!("bbk-net-{id}"),
        };
        let (va, vb) = (format!("bbkp{id}"), format!("bbkn{id}"));
        // Interface names are at most 15 bytes.
        let (va, vb) = (&va[..va.len().min(15)], &vb[..vb.len().min(15)]);
        run(&["ip", "netns", "add", &ns.pod]);
        run(&["ip", "netns", "add", &ns.net]);
        run(&[
            "ip", "link", "add", va, "netns", &ns.pod, "type", "veth", "peer", "name", vb, "netns",
            &ns.net,
        ]);
        for (n, dev, addr) in [(&ns.pod, va, "10.99.0.2/24"), (&ns.net, vb, "10.99.0.1/24")] {
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
            run(&["ip", "-n", n, "addr", "add", addr, "dev", dev]);
            run(&["ip", "-n", n, "link", "set", dev, "up"]);
        }
        run(&[
            "ip", "-n", &ns.pod, "route", "add", "default", "via", INTERNET,
        ]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.pod, &self.net] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread that joined namespace `ns` (it stays there: listeners live on it).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on an open namespace descriptor, for this thread only.
        let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A TCP canary: records every connection (and its first bytes) under `label`.
fn tcp_canary(ns: &str, addr: &'static str, label: &'static str, seen: &Seen) {
    let seen = seen.clone();
    let listener = in_ns(ns, move || TcpListener::bind(addr).unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            seen.lock().unwrap().push(label.to_owned());
            drop(conn);
        }
    });
}

/// A UDP canary: records every datagram under `label`.
fn udp_canary(ns: &str, addr: &'static str, label: &'static str, seen: &Seen) {
    let seen = seen.clone();
    let socket = in_ns(ns, move || UdpSocket::bind(addr).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while socket.recv_from(&mut buf).is_ok() {
            seen.lock().unwrap().push(label.to_owned());
        }
    });
}

/// Runs a bash snippet in the pod namespace as `uid`; whether it succeeded.
fn as_uid(ns: &str, uid: u32, script: &str) -> (bool, String) {
    let id = uid.to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "setpriv"])
        .args([
            &format!("--reuid={id}"),
            &format!("--regid={id}"),
            "--clear-groups",
            "--",
            "timeout",
            "5",
            "bash",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn connect(host: &str, port: u16) -> String {
    format!("exec 3<>/dev/tcp/{host}/{port} && echo connected")
}

fn udp(host: &str, port: u16) -> String {
    format!("echo probe > /dev/udp/{host}/{port}")
}

#[test]
fn the_init_containers_rules_confine_the_agent_uid_to_the_sidecar_ports() {
    if let Some(why) = missing() {
        eprintln!("skipping the nftables isolation test: {why}");
        return;
    }
    let ns = Namespaces::create();
    let seen: Seen = Arc::default();
    // The pod's loopback: the sidecar's ports, a port of the bundle's own (not the
    // contract's), a DNS resolver; the "internet" beyond the veth.
    tcp_canary(&ns.pod, "127.0.0.1:3128", "sidecar-3128", &seen);
    tcp_canary(&ns.pod, "127.0.0.1:3130", "sidecar-3130", &seen);
    tcp_canary(&ns.pod, "[::1]:3128", "sidecar-v6", &seen);
    tcp_canary(&ns.pod, "127.0.0.1:4000", "bundle-internal", &seen);
    // The bundle's operator port: the launcher's relay reaches it through port-forward.
    let operator = format!("127.0.0.1:{}", backend::kubernetes::OPERATOR_PORT);
    tcp_canary(&ns.pod, operator.leak(), "operator-port", &seen);
    // A warm pod's config intake: the launcher sends the bottle's files through port-forward.
    let intake = format!("127.0.0.1:{}", backend::kubernetes::objects::INTAKE_PORT);
    tcp_canary(&ns.pod, intake.leak(), "intake-port", &seen);
    udp_canary(&ns.pod, "127.0.0.1:53", "pod-dns", &seen);
    tcp_canary(&ns.pod, "10.99.0.2:8081", "pod-ip", &seen);
    tcp_canary(&ns.net, "10.99.0.1:8080", "internet-tcp", &seen);
    udp_canary(&ns.net, "10.99.0.1:53", "internet-dns", &seen);

    // Control: without the rules, the agent's uid reaches the internet.
    let (ok, text) = as_uid(&ns.pod, AGENT, &connect(INTERNET, 8080));
    assert!(ok, "control: the namespaces do not route ({text})");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        seen.lock().unwrap().drain(..).collect::<Vec<_>>(),
        vec!["internet-tcp"]
    );

    let rules = nft::ruleset(AGENT, SIDECAR, &PORTS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, &rules).unwrap();
    let file = file.display().to_string();
    run(&["ip", "netns", "exec", &ns.pod, "nft", "-f", &file]);
    // Applying twice (a restarted init container) leaves one copy of the table.
    run(&["ip", "netns", "exec", &ns.pod, "nft", "-f", &file]);
    let listed = Command::new("ip")
        .args(["netns", "exec", &ns.pod, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(
        listed.matches("table inet bot_bottle").count(),
        1,
        "{listed}"
    );

    let reach = |uid: u32, script: &str| as_uid(&ns.pod, uid, script);
    let mut table = Vec::new();
    for (who, uid, what, script, expect_ok) in [
        (
            "agent",
            AGENT,
            "sidecar 127.0.0.1:3128",
            connect("127.0.0.1", 3128),
            true,
        ),
        (
            "agent",
            AGENT,
            "sidecar 127.0.0.1:3130",
            connect("127.0.0.1", 3130),
            true,
        ),
        (
            "agent",
            AGENT,
            "sidecar port on ::1",
            connect("::1", 3128),
            false,
        ),
        (
            "agent",
            AGENT,
            "bundle port 127.0.0.1:4000",
            connect("127.0.0.1", 4000),
            false,
        ),
        (
            "agent",
            AGENT,
            "operator port (the relay's)",
            connect("127.0.0.1", backend::kubernetes::OPERATOR_PORT),
            false,
        ),
        (
            "agent",
            AGENT,
            "intake port (a warm pod's config)",
            connect("127.0.0.1", backend::kubernetes::objects::INTAKE_PORT),
            false,
        ),
        (
            "agent",
            AGENT,
            "own pod IP",
            connect("10.99.0.2", 8081),
            false,
        ),
        (
            "agent",
            AGENT,
            "internet tcp",
            connect(INTERNET, 8080),
            false,
        ),
        (
            "agent",
            AGENT,
            "dns on loopback",
            udp("127.0.0.1", 53),
            false,
        ),
        (
            "agent",
            AGENT,
            "dns on the internet",
            udp(INTERNET, 53),
            false,
        ),
        (
            "agent",
            AGENT,
            "flush the rules",
            "nft flush ruleset".to_owned(),
            false,
        ),
        (
            "sidecar",
            SIDECAR,
            "internet tcp",
            connect(INTERNET, 8080),
            true,
        ),
        (
            "sidecar",
            SIDECAR,
            "dns on the internet",
            udp(INTERNET, 53),
            true,
        ),
        ("root", 0, "internet tcp", connect(INTERNET, 8080), false),
        (
            "root",
            0,
            "supervise 127.0.0.1:3130 (port-forward)",
            connect("127.0.0.1", 3130),
            true,
        ),
        (
            "root",
            0,
            "operator port (port-forward)",
            connect("127.0.0.1", backend::kubernetes::OPERATOR_PORT),
            true,
        ),
        (
            "root",
            0,
            "intake port (port-forward)",
            connect("127.0.0.1", backend::kubernetes::objects::INTAKE_PORT),
            true,
        ),
    ] {
        let (ok, text) = reach(uid, &script);
        table.push(format!(
            "{who:8} {what:40} {}",
            if ok { "reached" } else { "blocked" }
        ));
        assert_eq!(ok, expect_ok, "{who} -> {what}: {text}");
    }
    eprintln!("{}", table.join("\n"));
    std::thread::sleep(Duration::from_millis(200));
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    // Only the allowed ones arrived: nothing of the agent's beyond the two sidecar ports
    // (the operator and intake ports saw root's connections only).
    assert_eq!(
        got,
        vec![
            "intake-port",
            "internet-dns",
            "internet-tcp",
            "operator-port",
            "sidecar-3128",
            "sidecar-3130",
            "sidecar-3130",
        ],
        "what the canaries saw"
    );
    // The agent's uid could not flush the table: it is still there.
    let still = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.pod,
            "nft",
            "list",
            "table",
            "inet",
            nft::TABLE,
        ])
        .output()
        .unwrap();
    assert!(still.status.success());
}
