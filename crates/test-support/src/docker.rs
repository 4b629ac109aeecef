//! What tests of the docker backend share: the local base image (there is no registry on
//! test machines) and docker networks of the test's own, whose bridge's host side is where a
//! test upstream listens for a sidecar container (which has a loopback of its own).
//! Test setup only: this talks to the `docker` CLI, the backend itself never does.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Runs `docker ARGS`; its trimmed stdout, or what went wrong.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The local base image (`scripts/docker/build-base-image`, built once and cached by tag),
/// or why docker cannot be tested here.
pub fn base_image() -> Result<&'static str, String> {
    static BASE: OnceLock<Result<String, String>> = OnceLock::new();
    BASE.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/docker/build-base-image");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "the local base image could not be built: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned())
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// A docker network of the test's own (labelled `org.bot-bottle.test=true`); removed on drop.
#[derive(Debug)]
pub struct TestNetwork {
    pub name: String,
    /// The host side of its bridge.
    pub gateway: IpAddr,
}

impl TestNetwork {
    /// Creates `<prefix>-<pid>-<n>` (a leftover of that name from an earlier run is replaced).
    pub fn create(prefix: &str) -> Result<TestNetwork, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let _ = docker(&["network", "rm", &name]);
        docker(&[
            "network",
            "create",
            "--label",
            "org.bot-bottle.test=true",
            &name,
        ])?;
        let text = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            &name,
        ]);
        let gateway = text.as_deref().ok().and_then(|text| {
            text.split_whitespace()
                .find_map(|g| g.parse::<std::net::Ipv4Addr>().ok())
        });
        match gateway {
            Some(gateway) => Ok(TestNetwork {
                name,
                gateway: gateway.into(),
            }),
            None => {
                let _ = docker(&["network", "rm", &name]);
                Err(format!("no IPv4 gateway on {name}: {text:?}"))
            }
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}
