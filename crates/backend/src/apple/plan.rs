//! What the apple backend asks Apple's `container` CLI for, and how it checks the result.
//!
//! Two networks per bottle: `bb-<id>-agent`, created `--internal` (vmnet's host-only mode:
//! containers on it reach each other, nothing beyond), and `bb-<id>-egress` (NAT). The sidecar
//! bundle's container is on both; the agent's only on the first, with no DNS. The agent's PID 1
//! is bot-bottle's container init ([`crate::inbottle::docker_init`], the same as docker's):
//! it relays `127.0.0.1:<port>` to the sidecar's address on the agent network and starts the
//! agent only when released, after the backend confirmed with `container inspect` that the
//! agent network is host-only and the agent container is attached to it alone, publishes
//! nothing, forwards no SSH agent and has the bottle's size and mounts. Anything else deletes
//! the bottle and refuses.

use std::path::{Path, PathBuf};

use crate::docker::SidecarSpec;
use crate::inbottle::docker_init::{INIT_SUBCOMMAND, InitConfig, InitForward};
use crate::{BackendError, LaunchSpec};

/// Label on every network and container of a bottle.
pub const LABEL: &str = "bot-bottle";
/// Where the init executable is mounted (a Linux build of bot-bottle, read-only).
pub const INIT_DIR: &str = "/run/bot-bottle/bin";
pub const INIT_EXE: &str = "/run/bot-bottle/bin/bot-bottle";
/// The agent's uid and gid.
pub const AGENT_ID: u32 = 1000;

/// The names of one bottle's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub identity: String,
    pub agent_network: String,
    pub egress_network: String,
    pub agent: String,
    pub sidecar: String,
}

impl Names {
    /// Apple's network names are lowercase (`^[a-z0-9][a-z0-9._-]*`): identities that are not
    /// are refused.
    pub fn new(identity: &str) -> Result<Names, BackendError> {
        let ok = !identity.is_empty()
            && identity.len() <= 48
            && identity
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(BackendError::InvalidSpec(format!(
                "bottle identity `{identity}` cannot name an Apple container network (lowercase letters, digits and `-` only); rename the agent"
            )));
        }
        Ok(Names {
            identity: identity.to_owned(),
            agent_network: format!("bb-{identity}-agent"),
            egress_network: format!("bb-{identity}-egress"),
            agent: format!("bb-{identity}-agent"),
            sidecar: format!("bb-{identity}-sidecar"),
        })
    }

    pub fn of_container(name: &str) -> Option<&str> {
        name.strip_prefix("bb-")?
            .strip_suffix("-agent")
            .or_else(|| name.strip_prefix("bb-")?.strip_suffix("-sidecar"))
    }

    /// The identity whose network `name` is (`bb-<id>-agent`, `bb-<id>-egress`).
    pub fn of_network(name: &str) -> Option<&str> {
        name.strip_prefix("bb-")?
            .strip_suffix("-agent")
            .or_else(|| name.strip_prefix("bb-")?.strip_suffix("-egress"))
            .filter(|id| !id.is_empty())
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `container system status`.
pub fn system_status_args() -> Vec<String> {
    strings(&["system", "status"])
}

/// The two `container network create` commands (agent: host-only; egress: NAT).
pub fn network_create_args(names: &Names) -> [Vec<String>; 2] {
    let label = format!("{LABEL}={}", names.identity);
    [
        strings(&[
            "network",
            "create",
            "--internal",
            "--label",
            &label,
            &names.agent_network,
        ]),
        strings(&[
            "network",
            "create",
            "--label",
            &label,
            &names.egress_network,
        ]),
    ]
}

/// `container list --all --format json`.
pub fn list_args() -> Vec<String> {
    strings(&["list", "--all", "--format", "json"])
}

/// `container network list --format json`.
pub fn network_list_args() -> Vec<String> {
    strings(&["network", "list", "--format", "json"])
}

/// `container network inspect <name>`.
pub fn network_inspect_args(name: &str) -> Vec<String> {
    strings(&["network", "inspect", name])
}

/// `container inspect <name>`.
pub fn inspect_args(name: &str) -> Vec<String> {
    strings(&["inspect", name])
}

fn mount_arg(host: &Path, inside: &Path, read_only: bool) -> String {
    let mut m = format!(
        "type=bind,source={},target={}",
        host.display(),
        inside.display()
    );
    if read_only {
        m.push_str(",readonly");
    }
    m
}

/// `container run --detach …` of the sidecar bundle: on both networks; its environment given
/// by name only (`-e NAME`: `container` reads the value from its own environment, so a token
/// never appears on a command line).
pub fn sidecar_run_args(names: &Names, sidecar: &SidecarSpec) -> Vec<String> {
    let mut args = strings(&[
        "run",
        "--detach",
        "--name",
        &names.sidecar,
        "--label",
        &format!("{LABEL}={}", names.identity),
        "--network",
        &names.agent_network,
        "--network",
        &names.egress_network,
    ]);
    if let Some((uid, gid)) = sidecar.user.split_once(':') {
        args.extend(strings(&["--uid", uid, "--gid", gid]));
    }
    for m in &sidecar.mounts {
        args.push("--mount".into());
        args.push(mount_arg(&m.host, &m.inside, m.read_only));
    }
    for name in sidecar.env.keys() {
        args.push("--env".into());
        args.push(name.clone());
    }
    args.push(sidecar.image.clone());
    args.extend(sidecar.argv.iter().cloned());
    args
}

/// The agent container's mounts: workspace and home read-write, the read-only files, the init
/// executable's directory read-only.
pub fn agent_mounts(spec: &LaunchSpec, init_dir: &Path) -> Vec<(PathBuf, PathBuf, bool)> {
    let workspace = match &spec.workspace.mode {
        crate::WorkspaceMode::Mount => spec.workspace.host.clone(),
        crate::WorkspaceMode::Copy { into } => into.clone(),
    };
    let mut mounts = vec![
        (workspace, spec.workspace.inside.clone(), false),
        (spec.home.host.clone(), spec.home.inside.clone(), false),
        (init_dir.to_path_buf(), INIT_DIR.into(), true),
    ];
    for f in &spec.files {
        mounts.push((f.host.clone(), f.inside.clone(), true));
    }
    mounts
}

/// The init's configuration: the sidecar reached at its address on the agent network.
pub fn init_config(spec: &LaunchSpec, sidecar_ip: &str) -> InitConfig {
    InitConfig {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.workspace.inside.clone(),
        sidecar_host: sidecar_ip.to_owned(),
        forwards: spec
            .forwards
            .iter()
            .map(|f| InitForward {
                port: f.inside_port,
                sidecar_port: f.inside_port,
            })
            .collect(),
        interactive: spec.interactive,
        release_timeout_secs: 120,
    }
}

/// `container create …` of the agent: the agent network only, no DNS, every capability
/// dropped, a read-only root with private `/tmp` and `/var/tmp` (as docker's agent), uid 1000,
/// the bottle's CPUs and memory, the init as its command.
pub fn agent_create_args(
    names: &Names,
    spec: &LaunchSpec,
    image: &str,
    init_dir: &Path,
    init_json: &str,
) -> Vec<String> {
    let (cpus, memory_mib) = spec.resources.vm_size();
    let mut args = strings(&[
        "create",
        "--name",
        &names.agent,
        "--label",
        &format!("{LABEL}={}", names.identity),
        "--network",
        &names.agent_network,
        "--no-dns",
        "--cap-drop",
        "ALL",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var/tmp",
        "--uid",
        &AGENT_ID.to_string(),
        "--gid",
        &AGENT_ID.to_string(),
        "--cpus",
        &cpus.to_string(),
        "--memory",
        &format!("{memory_mib}M"),
        "--workdir",
        &spec.workspace.inside.display().to_string(),
    ]);
    for (host, inside, ro) in agent_mounts(spec, init_dir) {
        args.push("--mount".into());
        args.push(mount_arg(&host, &inside, ro));
    }
    if spec.interactive {
        args.extend(strings(&["--interactive", "--tty"]));
    }
    args.push(image.to_owned());
    args.extend(strings(&[INIT_EXE, INIT_SUBCOMMAND, init_json]));
    args
}

/// `container start --attach [--interactive] <agent>`.
pub fn start_args(names: &Names, interactive: bool) -> Vec<String> {
    let mut args = strings(&["start", "--attach"]);
    if interactive {
        args.push("--interactive".into());
    }
    args.push(names.agent.clone());
    args
}

/// `container kill --signal SIGUSR1 <agent>`: the release.
pub fn release_args(names: &Names) -> Vec<String> {
    strings(&["kill", "--signal", "SIGUSR1", &names.agent])
}

/// `container delete --force <container>…`.
pub fn delete_args(containers: &[String]) -> Vec<String> {
    let mut args = strings(&["delete", "--force"]);
    args.extend_from_slice(containers);
    args
}

/// `container network delete <network>…`.
pub fn network_delete_args(networks: &[String]) -> Vec<String> {
    let mut args = strings(&["network", "delete"]);
    args.extend_from_slice(networks);
    args
}

fn refuse(what: impl std::fmt::Display) -> BackendError {
    BackendError::Setup {
        stage: "confirm the bottle's isolation".into(),
        message: format!("{what}; refusing to start the agent"),
    }
}

/// The first element of a `container … inspect` JSON array.
fn first(json: &str, what: &str) -> Result<serde_json::Value, BackendError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        refuse(format_args!(
            "`container inspect` of {what} is not JSON: {e}"
        ))
    })?;
    match v {
        serde_json::Value::Array(mut a) if !a.is_empty() => Ok(a.swap_remove(0)),
        _ => Err(refuse(format_args!("`container inspect` found no {what}"))),
    }
}

/// The agent network is vmnet's host-only mode.
pub fn confirm_network(names: &Names, inspect_json: &str) -> Result<(), BackendError> {
    let net = first(inspect_json, &names.agent_network)?;
    let mode = &net["configuration"]["mode"];
    if mode != "hostOnly" {
        return Err(refuse(format_args!(
            "network {} is in mode {mode}, not hostOnly (host-only): the agent could reach beyond its sidecar",
            names.agent_network
        )));
    }
    Ok(())
}

/// The sidecar's IPv4 address on the agent network (`status.networks[].ipv4Address`).
pub fn sidecar_address(names: &Names, inspect_json: &str) -> Result<String, BackendError> {
    let c = first(inspect_json, &names.sidecar)?;
    let address = c["status"]["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["network"] == names.agent_network.as_str())
        .and_then(|a| a["ipv4Address"].as_str())
        .and_then(|cidr| cidr.split('/').next())
        .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .ok_or_else(|| {
            refuse(format_args!(
                "the sidecar container has no IPv4 address on {}",
                names.agent_network
            ))
        })?;
    Ok(address.to_owned())
}

/// The agent container is what was asked for: attached to the agent network alone, nothing
/// published, a read-only root without capabilities, no SSH agent, no nested virtualization,
/// the bottle's size, exactly its mounts with their read-only flags.
pub fn confirm_agent(
    names: &Names,
    spec: &LaunchSpec,
    init_dir: &Path,
    inspect_json: &str,
) -> Result<(), BackendError> {
    let c = first(inspect_json, &names.agent)?;
    let config = &c["configuration"];
    if !config.is_object() {
        return Err(refuse("the agent container has no configuration"));
    }
    let networks: Vec<&str> = config["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["network"].as_str())
        .collect();
    if networks != [names.agent_network.as_str()] {
        return Err(refuse(format_args!(
            "the agent container is attached to {networks:?}, not to {} alone",
            names.agent_network
        )));
    }
    for field in ["publishedPorts", "publishedSockets"] {
        if config[field].as_array().is_none_or(|a| !a.is_empty()) {
            return Err(refuse(format_args!(
                "the agent container has {field} = {}",
                config[field]
            )));
        }
    }
    if config["readOnly"] != true
        || !config["capDrop"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == "ALL"))
    {
        return Err(refuse(format_args!(
            "the agent container has readOnly = {} and capDrop = {}, not a read-only root without capabilities",
            config["readOnly"], config["capDrop"]
        )));
    }
    for field in ["ssh", "virtualization"] {
        if config[field] != false {
            return Err(refuse(format_args!(
                "the agent container has {field} = {}",
                config[field]
            )));
        }
    }
    let (cpus, memory_mib) = spec.resources.vm_size();
    let resources = &config["resources"];
    if resources["cpus"].as_u64() != Some(u64::from(cpus))
        || resources["memoryInBytes"].as_u64() != Some(memory_mib << 20)
    {
        return Err(refuse(format_args!(
            "the agent container has resources {resources}, not {cpus} CPUs and {memory_mib} MiB"
        )));
    }
    let mut got: Vec<(PathBuf, PathBuf, bool)> = config["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"].get("tmpfs").is_none())
        .map(|m| {
            (
                PathBuf::from(m["source"].as_str().unwrap_or_default()),
                PathBuf::from(m["destination"].as_str().unwrap_or_default()),
                m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "ro")),
            )
        })
        .collect();
    let mut want = agent_mounts(spec, init_dir);
    got.sort();
    want.sort();
    if got != want {
        return Err(refuse(format_args!(
            "the agent container's mounts are {got:?}, not {want:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::SidecarMount;
    use crate::{Forward, Home, ReadOnlyFile, Workspace, WorkspaceMode};
    use pretty_assertions::assert_eq;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            identity: "demo-1a2b3".into(),
            argv: vec!["claude".into()],
            env: [("HOME".to_owned(), "/home/agent".to_owned())].into(),
            workspace: Workspace {
                host: "/Users/a/proj".into(),
                inside: "/Users/a/proj".into(),
                mode: WorkspaceMode::Mount,
            },
            home: Home {
                host: "/bb/state/demo-1a2b3/home".into(),
                inside: "/home/agent".into(),
            },
            files: vec![ReadOnlyFile {
                host: "/bb/state/demo-1a2b3/ca/bundle.pem".into(),
                inside: "/etc/ssl/certs/ca-certificates.crt".into(),
            }],
            forwards: vec![Forward {
                inside_port: 3128,
                host_unix_socket: "/unused".into(),
            }],
            interactive: false,
            resources: crate::Resources::default(),
            dangerously_run_as_host_root: false,
        }
    }

    #[test]
    fn the_agent_is_on_the_host_only_network_alone_and_the_sidecar_on_both() {
        let names = Names::new("demo-1a2b3").unwrap();
        assert_eq!(
            network_create_args(&names)[0].join(" "),
            "network create --internal --label bot-bottle=demo-1a2b3 bb-demo-1a2b3-agent"
        );
        assert_eq!(
            agent_create_args(
                &names,
                &spec(),
                "bot-bottle/agent-claude:1",
                Path::new("/bb/bin"),
                "{}"
            )
            .join(" "),
            "create --name bb-demo-1a2b3-agent --label bot-bottle=demo-1a2b3 --network bb-demo-1a2b3-agent --no-dns \
             --cap-drop ALL --read-only --tmpfs /tmp --tmpfs /var/tmp --uid 1000 --gid 1000 --cpus 2 --memory 4096M --workdir /Users/a/proj \
             --mount type=bind,source=/Users/a/proj,target=/Users/a/proj \
             --mount type=bind,source=/bb/state/demo-1a2b3/home,target=/home/agent \
             --mount type=bind,source=/bb/bin,target=/run/bot-bottle/bin,readonly \
             --mount type=bind,source=/bb/state/demo-1a2b3/ca/bundle.pem,target=/etc/ssl/certs/ca-certificates.crt,readonly \
             bot-bottle/agent-claude:1 /run/bot-bottle/bin/bot-bottle __docker-init {}"
        );
        let sidecar = SidecarSpec {
            image: "bot-bottle/sidecar:1".into(),
            argv: vec!["bot-bottle".into(), "sidecar".into()],
            env: [(
                "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN".to_owned(),
                "sk-secret".to_owned(),
            )]
            .into(),
            mounts: vec![SidecarMount {
                host: "/bb".into(),
                inside: "/bb".into(),
                read_only: false,
            }],
            user: "501:20".into(),
            ready_line: Some("ready".into()),
            health: None,
        };
        let args = sidecar_run_args(&names, &sidecar).join(" ");
        assert_eq!(
            args,
            "run --detach --name bb-demo-1a2b3-sidecar --label bot-bottle=demo-1a2b3 \
             --network bb-demo-1a2b3-agent --network bb-demo-1a2b3-egress --uid 501 --gid 20 \
             --mount type=bind,source=/bb,target=/bb --env BOT_BOTTLE_CLAUDE_OAUTH_TOKEN \
             bot-bottle/sidecar:1 bot-bottle sidecar"
        );
        assert!(!args.contains("sk-secret"));
    }

    #[test]
    fn identities_that_cannot_name_a_network_are_refused() {
        assert!(Names::new("Demo-1").is_err());
        assert!(Names::new("a b").is_err());
        assert_eq!(Names::of_container("bb-demo-1-agent"), Some("demo-1"));
        assert_eq!(Names::of_container("bb-demo-1-sidecar"), Some("demo-1"));
        assert_eq!(Names::of_container("other"), None);
        assert_eq!(Names::of_network("bb-demo-1-egress"), Some("demo-1"));
        assert_eq!(Names::of_network("bb-demo-1-agent"), Some("demo-1"));
        assert_eq!(Names::of_network("bb--agent"), None);
        assert_eq!(Names::of_network("default"), None);
    }

    #[test]
    fn a_nat_agent_network_refuses() {
        let names = Names::new("demo-1a2b3").unwrap();
        confirm_network(&names, r#"[{"configuration":{"mode":"hostOnly"}}]"#).unwrap();
        let err = confirm_network(&names, r#"[{"configuration":{"mode":"nat"}}]"#).unwrap_err();
        assert!(err.to_string().contains("not hostOnly"), "{err}");
        assert!(confirm_network(&names, "[]").is_err());
        assert!(confirm_network(&names, "nope").is_err());
    }
}
