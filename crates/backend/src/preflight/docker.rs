//! Preflight of the docker backend: the daemon's socket, its answer to `/info`, and the
//! runtimes it has registered (gVisor when present).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{BackendStatus, Check, find_in_path};
use crate::BackendKind;
use crate::docker::runtime::{Registered, RuntimeChoice};

/// What the docker backend depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerFacts {
    pub cli: Option<PathBuf>,
    /// The daemon socket looked at (`$DOCKER_HOST` or `/var/run/docker.sock`).
    pub socket: PathBuf,
    /// Whether a daemon answered on its socket (`None`: no socket found).
    pub daemon: Option<bool>,
    /// Whether this build has the docker backend.
    pub built: bool,
    /// The OCI runtimes the daemon lists, with their arguments (`runsc` in host network mode
    /// means gVisor is used automatically: see [`crate::docker::runtime`]).
    pub runtimes: BTreeMap<String, Registered>,
    /// The daemon's default runtime (`DefaultRuntime`, `runc` unless configured).
    pub default_runtime: String,
    /// What `BOT_BOTTLE_DOCKER_RUNTIME` asks for.
    pub choice: RuntimeChoice,
}

/// The daemon's runtimes as the last [`DockerFacts::gather`] of this process read them, by
/// socket, for the launch that follows it: `start` runs the preflight, then chooses the
/// agent's runtime from the same `/info` answer instead of asking the daemon a second time
/// (each `/info` is one of the slowest calls of dockerd's API). Taken once
/// ([`take_runtimes`]): a later launch in the same process asks the daemon again.
static LAST_RUNTIMES: Mutex<BTreeMap<PathBuf, DaemonRuntimes>> = Mutex::new(BTreeMap::new());

/// What one `/info` said about the daemon's runtimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DaemonRuntimes {
    /// Its registered runtimes.
    pub runtimes: BTreeMap<String, Registered>,
    /// Its default runtime.
    pub default_runtime: String,
}

/// What the last preflight read from the daemon on `socket` (see [`LAST_RUNTIMES`]), once.
pub(crate) fn take_runtimes(socket: &Path) -> Option<DaemonRuntimes> {
    LAST_RUNTIMES.lock().ok()?.remove(socket)
}

/// Keeps what a daemon that answered said, for [`take_runtimes`].
fn remember(facts: &DockerFacts) {
    if facts.daemon == Some(true)
        && let Ok(mut last) = LAST_RUNTIMES.lock()
    {
        last.insert(
            facts.socket.clone(),
            DaemonRuntimes {
                runtimes: facts.runtimes.clone(),
                default_runtime: facts.default_runtime.clone(),
            },
        );
    }
}

impl DockerFacts {
    pub fn gather() -> DockerFacts {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let info = socket.exists().then(|| docker_info(&socket));
        let facts = Self::from_info(socket, info);
        remember(&facts);
        facts
    }

    /// The facts from `/info`'s answer on `socket` (`None`: no socket; `Some(None)`: no
    /// answer).
    fn from_info(socket: PathBuf, info: Option<Option<serde_json::Value>>) -> DockerFacts {
        DockerFacts {
            cli: find_in_path("docker"),
            socket: socket.clone(),
            daemon: info.as_ref().map(Option::is_some),
            built: true,
            runtimes: info
                .clone()
                .flatten()
                .and_then(|info| {
                    info.get("Runtimes").and_then(|r| r.as_object()).map(|r| {
                        r.iter()
                            .map(|(name, r)| (name.clone(), registered(r)))
                            .collect()
                    })
                })
                .unwrap_or_default(),
            default_runtime: info
                .as_ref()
                .and_then(|i| i.as_ref())
                .and_then(|i| i.get("DefaultRuntime"))
                .and_then(|r| r.as_str())
                .unwrap_or("runc")
                .to_owned(),
            choice: RuntimeChoice::from_env(),
        }
    }
}

/// One entry of `/info`'s `Runtimes` (`{"path": ..., "runtimeArgs": [...]}`).
fn registered(value: &serde_json::Value) -> Registered {
    Registered {
        path: value
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_owned(),
        args: value
            .get("runtimeArgs")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `GET /info` on the daemon socket (a plain HTTP/1.0 request: no client runtime needed for a
/// preflight); `None` when the daemon does not answer with JSON.
fn docker_info(socket: &Path) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let timeout = Some(std::time::Duration::from_secs(5));
    stream.set_read_timeout(timeout).ok()?;
    stream.set_write_timeout(timeout).ok()?;
    stream
        .write_all(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

pub fn diagnose_docker(f: &DockerFacts) -> BackendStatus {
    let mut checks = vec![
        match &f.cli {
            Some(p) => Check::pass("docker cli", format!("docker at {}", p.display())),
            None => Check::fail(
                "docker cli",
                "docker is not installed",
                "sudo apt-get install docker.io",
            ),
        },
        match f.daemon {
            Some(true) => Check::pass("dockerd", "dockerd running"),
            Some(false) => Check::fail(
                "dockerd",
                format!(
                    "the Docker socket {} exists but dockerd does not answer (or you may not use it)",
                    f.socket.display()
                ),
                "sudo systemctl start docker; and sudo usermod -aG docker $USER (then log in again)",
            ),
            None => Check::fail(
                "dockerd",
                format!(
                    "dockerd is not running (no socket at {})",
                    f.socket.display()
                ),
                "sudo systemctl start docker, or point DOCKER_HOST at its socket",
            ),
        },
    ];
    if f.daemon == Some(true) {
        match crate::docker::runtime::choose(&f.choice, &f.runtimes, &f.default_runtime) {
            Ok(chosen) => {
                checks.push(Check::pass("runtime", chosen.summary));
                if let Some((why, fix)) = chosen.warning {
                    checks.push(Check::warn("gvisor", why, fix));
                }
            }
            Err(refused) => checks.push(Check::fail("runtime", refused.reason, refused.fix)),
        }
    }
    if !f.built {
        checks.push(Check::fail(
            "backend",
            "this build of bot-bottle has no docker backend yet",
            "use --backend native",
        ));
    }
    BackendStatus::from_checks(BackendKind::Docker, checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// `/info` as dockerd 20.10 answers it (the fields read here), with gVisor registered in
    /// host network mode.
    fn info_with_gvisor() -> serde_json::Value {
        serde_json::json!({
            "DefaultRuntime": "runc",
            "Runtimes": {
                "runc": {"path": "runc"},
                "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}
            }
        })
    }

    #[test]
    fn the_launch_after_a_preflight_chooses_from_its_answer_once() {
        let socket = PathBuf::from("/nonexistent/preflight-test/docker.sock");
        let facts = DockerFacts::from_info(socket.clone(), Some(Some(info_with_gvisor())));
        assert_eq!(facts.daemon, Some(true));
        remember(&facts);
        assert_eq!(take_runtimes(Path::new("/nonexistent/other.sock")), None);
        let seen = take_runtimes(&socket).expect("the preflight's answer");
        assert_eq!(seen.default_runtime, "runc");
        // The choice `DockerBackend` makes from it (`lifecycle::choose_from`), the same as from
        // bollard's reading of the same `/info` (lifecycle tests):
        // gVisor, automatically, because the daemon lists it in host network mode.
        let chosen = crate::docker::runtime::choose(
            &RuntimeChoice::Auto,
            &seen.runtimes,
            &seen.default_runtime,
        )
        .unwrap();
        assert_eq!(chosen.runtime.as_deref(), Some("runsc"));
        assert!(chosen.gvisor);
        // Taken once: a second launch asks the daemon again.
        assert_eq!(take_runtimes(&socket), None);
        // A daemon that did not answer leaves nothing to reuse.
        remember(&DockerFacts::from_info(socket.clone(), Some(None)));
        assert_eq!(take_runtimes(&socket), None);
    }
}
