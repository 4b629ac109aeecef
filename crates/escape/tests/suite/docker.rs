//! What the docker backend needs from the harness: the local base image, a docker network of
//! the test's own (the host side of its bridge is where the allowed upstream listens, as the
//! sidecar container cannot reach host loopback), and a look at the bottle's containers.
//!
//! Name resolution of the sidecar container: Docker's embedded DNS (`127.0.0.11`) forwards the
//! names it does not know to the host's resolvers, which the network rule forbids the suite to
//! reach. So, as on native (where `start` runs with `/etc/resolv.conf` pointing at the DNS
//! canary), each sidecar container's resolver is pointed at a DNS canary: one bound on
//! `127.0.0.1:53` inside the sidecar's own network namespace, written into the
//! `resolv.conf` Docker keeps for the container (glibc rereads it when it changes). The probe
//! only starts once that is done (its `wait_for` file).

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use super::canary::{self, Answer, Events};

/// The label every object of a bottle carries, and the one naming the container's role.
const LABEL_IDENTITY: &str = "org.bot-bottle.identity";
const LABEL_ROLE: &str = "org.bot-bottle.role";

pub use test_support::docker::{TestNetwork, base_image, docker};

/// A running container of a bottle, as the harness sees it.
pub struct Container {
    pub pid: u32,
    pub resolv_conf: String,
    pub ips: Vec<IpAddr>,
}

/// The running container of `identity` with `role` (`agent`, `sidecar`), if any.
pub fn container(identity: &str, role: &str) -> Option<Container> {
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label={LABEL_IDENTITY}={identity}"),
        "--filter",
        &format!("label={LABEL_ROLE}={role}"),
    ])
    .ok()?;
    let id = id.lines().next()?.to_string();
    let text = docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}} {{.ResolvConfPath}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &id,
    ])
    .ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse().ok().filter(|p| *p != 0)?;
    let resolv_conf = words.next()?.to_string();
    let ips = words.filter_map(|w| w.parse().ok()).collect();
    Some(Container {
        pid,
        resolv_conf,
        ips,
    })
}

/// The runtime (`HostConfig.Runtime`) of the agent container of `identity`, waiting a while
/// for it to exist (it is created beside the sidecar's).
pub fn agent_runtime(identity: &str) -> Result<String, String> {
    let filter = format!("label={LABEL_IDENTITY}={identity}");
    let role = format!("label={LABEL_ROLE}=agent");
    for _ in 0..600 {
        let id = docker(&["ps", "-aq", "--filter", &filter, "--filter", &role])?;
        if let Some(id) = id.lines().next() {
            return docker(&["inspect", "-f", "{{.HostConfig.Runtime}}", id])
                .map(|r| r.trim().to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(format!("no agent container of {identity} appeared"))
}

/// The identities of the running sidecar containers whose bottles live in `home` (their
/// state directory is mounted at the same path).
pub fn sidecar_identities() -> Vec<String> {
    docker(&[
        "ps",
        "--filter",
        &format!("label={LABEL_ROLE}=sidecar"),
        "--format",
        &format!("{{{{.Label \"{LABEL_IDENTITY}\"}}}}"),
    ])
    .map(|t| t.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

/// Points the sidecar container's resolver at a DNS canary inside its own network namespace
/// (see the module doc). Records as `host-dns`, like the canary `start` uses on native.
pub fn redirect_dns(c: &Container, events: &Events, answer: Answer) -> Result<(), String> {
    let path = format!("/proc/{}/ns/net", c.pid);
    let (events, answer2) = (events.clone(), answer.clone());
    std::thread::spawn(move || -> Result<(), String> {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns on an open namespace descriptor, for this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        let u = UdpSocket::bind("127.0.0.1:53").map_err(|e| format!("sidecar dns udp: {e}"))?;
        let t = TcpListener::bind("127.0.0.1:53").map_err(|e| format!("sidecar dns tcp: {e}"))?;
        canary::dns_udp(u, "host-dns", &events, answer);
        canary::dns_tcp(t, "host-dns", &events, answer2);
        Ok(())
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())??;
    // In place (same inode): the file is bind-mounted into the container.
    std::fs::write(&c.resolv_conf, "nameserver 127.0.0.1\n")
        .map_err(|e| format!("{}: {e}", c.resolv_conf))
}

/// The control for docker: the probe's network section in a plain container (not a bottle)
/// on the test's network; returns its stdout.
pub fn control_container(
    net: &TestNetwork,
    image: &str,
    runtime: &str,
    probe: &Path,
    cfg: &str,
) -> Result<String, String> {
    let name = format!("bot-bottle-test-esc-control-{}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--name",
            &name,
            "--label",
            "org.bot-bottle.test=true",
            "--network",
            &net.name,
            "--runtime",
            runtime,
            "-v",
            &format!("{}:/escape-probe:ro", probe.display()),
            "--entrypoint",
            "/escape-probe",
            image,
            cfg,
        ])
        .output()
        .map_err(|e| format!("docker run: {e}"));
    let _ = docker(&["rm", "-f", &name]);
    // The probe exits 1 when something escaped, which is what the control wants.
    let out = out?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Every container or network a bottle of this run left (by identity), for the report.
pub fn leftovers(identities: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in identities {
        let filter = format!("label={LABEL_IDENTITY}={id}");
        for kind in [
            &["ps", "-a", "--format", "{{.Names}}", "--filter", &filter][..],
            &[
                "network",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &filter,
            ][..],
        ] {
            if let Ok(t) = docker(kind) {
                out.extend(t.lines().map(|l| format!("{} {l}", kind[0])));
            }
        }
    }
    out
}

/// Removes what [`leftovers`] found.
pub fn remove(leftovers: &[String]) {
    for l in leftovers {
        match l.split_once(' ') {
            Some(("ps", id)) => {
                let _ = docker(&["rm", "-f", id]);
            }
            Some(("network", id)) => {
                let _ = docker(&["network", "rm", id]);
            }
            _ => {}
        }
    }
}
