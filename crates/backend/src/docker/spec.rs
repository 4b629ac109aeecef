//! The Engine API objects of one bottle, as pure functions of the launch spec (snapshot-tested
//! in this module's tests, no daemon needed).
//!
//! Per bottle `<identity>`:
//!
//! | object | name | what |
//! |---|---|---|
//! | network | `bot-bottle-net-<identity>` | `internal: true` bridge on the launcher's [`InternalSubnet`]: agent + sidecar only, no route out |
//! | network | `bot-bottle-egress-<identity>` | ordinary bridge, the sidecar's way out |
//! | container | `bot-bottle-sidecar-<identity>` | the sidecar, on both networks (at [`InternalSubnet::sidecar`] on the internal one) |
//! | container | `bot-bottle-<identity>` | the agent, on the internal network only |
//! | container | `bot-bottle-firewall-<identity>` | one-shot: closes the agent's network namespace |
//!
//! Everything carries [`LABEL_MANAGED`] and [`LABEL_IDENTITY`] so `list` and `cleanup` find it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig, Ipam,
    IpamConfig, NetworkCreateRequest, NetworkingConfig,
};
use serde::{Deserialize, Serialize};

use crate::inbottle::docker_init::{InitConfig, InitForward};
use crate::spec::{LaunchSpec, WorkspaceMode};

/// Every object of ours carries this label (value `true`).
pub const LABEL_MANAGED: &str = "org.bot-bottle.managed";
/// The bottle identity an object belongs to.
pub const LABEL_IDENTITY: &str = "org.bot-bottle.identity";
/// What an object is: `agent`, `sidecar`, `firewall`, `internal-network`, `egress-network`,
/// `agent-image`, `sidecar-image`.
pub const LABEL_ROLE: &str = "org.bot-bottle.role";
/// The launcher (`bot-bottle start`) of a bottle: `<boot id>:<pid>:<start time>`, so `cleanup`
/// can tell an orphan from a running bottle.
pub const LABEL_LAUNCHER: &str = "org.bot-bottle.launcher";
/// The content hash of an image's inputs.
pub const LABEL_INPUT_HASH: &str = "org.bot-bottle.input-hash";

/// Where the init executable is mounted inside the agent container.
pub const INIT_PATH: &str = "/run/bot-bottle/init";

/// The names of one bottle's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub agent: String,
    pub sidecar: String,
    pub firewall: String,
    pub internal_network: String,
    pub egress_network: String,
}

impl Names {
    pub fn new(identity: &str) -> Names {
        Names {
            agent: format!("bot-bottle-{identity}"),
            sidecar: format!("bot-bottle-sidecar-{identity}"),
            firewall: format!("bot-bottle-firewall-{identity}"),
            internal_network: format!("bot-bottle-net-{identity}"),
            egress_network: format!("bot-bottle-egress-{identity}"),
        }
    }
}

/// The sidecar container of a bottle (its image is built by the caller, e.g. with
/// [`super::ImageSource::sidecar`] and [`super::DockerBackend::ensure_image`]). It must listen
/// on `0.0.0.0:<inside_port>` for every [`crate::Forward`] of the spec: the agent's
/// `127.0.0.1:<inside_port>` is relayed there (`host_unix_socket` is not used by docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarSpec {
    pub image: String,
    /// Command (the image's entrypoint is kept when empty).
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Host paths mounted into the sidecar (config, tokens, CA key: never into the agent).
    pub mounts: Vec<SidecarMount>,
    /// `uid:gid` inside the sidecar container.
    pub user: String,
    /// A line the sidecar prints on stdout once it serves (`bot-bottle sidecar` prints
    /// `ready`): the agent is not released before it appears, and a sidecar that exits first
    /// fails the launch with its output. `None`: released as soon as the container runs.
    #[serde(default)]
    pub ready_line: Option<String>,
    /// A health check command run inside the sidecar container every 10 s (`bot-bottle
    /// sidecar --check`): `docker ps` shows the bundle unhealthy when a sidecar stops
    /// answering.
    #[serde(default)]
    pub health: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarMount {
    pub host: PathBuf,
    pub inside: PathBuf,
    pub read_only: bool,
}

/// The agent container's settings that are not in the launch spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// The agent image (built by `prepare`).
    pub image: String,
    /// `uid:gid` the agent runs as (never root).
    pub user: String,
    /// Host path of the init executable and the arguments that select it.
    pub init_exe: PathBuf,
    pub init_args: Vec<String>,
    /// The OCI runtime (`runsc` when the daemon has it), `None` for the daemon's default.
    pub runtime: Option<String>,
    /// Whether that runtime is gVisor (its PID limit counts the sandbox's host tasks).
    pub gvisor: bool,
    pub read_only_root: bool,
    /// The launcher label value.
    pub launcher: String,
    /// The host directory the workspace comes from (the copy for [`WorkspaceMode::Copy`]).
    pub workspace_host: PathBuf,
}

fn labels(identity: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_IDENTITY.to_owned(), identity.to_owned()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ])
}

/// The addresses of a bottle's internal network, picked by the launcher before anything
/// starts (so that the firewall's rules and the init's relay target are known before the
/// sidecar runs): a `/28` in [`InternalSubnet::RANGES`], whose gateway (the host's side of the
/// bridge) is `.1`, the sidecar `.2`, and whose other containers (the agent) get addresses
/// from `.8/29` only, so that nothing else can take the sidecar's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalSubnet {
    base: Ipv4Addr,
}

impl InternalSubnet {
    /// Where the internal networks are carved from, in this order: `172.16.0.0/16`, then
    /// `10.254.0.0/16` (for hosts where a route covers the first, e.g. a LAN or VPN on
    /// `172.16.0.0/12`). Both are private (RFC 1918) and outside Docker's own default pools
    /// (`172.17.0.0/16`–`172.31.0.0/16`, `192.168.0.0/16`), so that bottles do not take the
    /// daemon's pools away from other networks. The daemon refuses a subnet that overlaps one
    /// of its networks (the launcher then tries the next), and the launcher skips those that
    /// overlap a host route.
    pub const RANGES: [Ipv4Addr; 2] = [Ipv4Addr::new(172, 16, 0, 0), Ipv4Addr::new(10, 254, 0, 0)];
    /// How many `/28`s one `/16` of [`InternalSubnet::RANGES`] holds.
    const PER_RANGE: u32 = 1 << (28 - 16);
    /// How many `/28`s [`InternalSubnet::RANGES`] hold together.
    pub const COUNT: u32 = Self::PER_RANGE * Self::RANGES.len() as u32;

    /// The `index`-th `/28` of [`InternalSubnet::RANGES`], counted through the first range and
    /// on into the next (modulo [`InternalSubnet::COUNT`]).
    pub fn nth(index: u32) -> InternalSubnet {
        let index = index % Self::COUNT;
        let range = Self::RANGES[(index / Self::PER_RANGE) as usize];
        let base = u32::from(range) + ((index % Self::PER_RANGE) << 4);
        InternalSubnet {
            base: Ipv4Addr::from(base),
        }
    }

    /// Where a bottle's search for a free subnet starts: a hash of its identity into the
    /// first range, so that bottles started at once rarely try the same one.
    pub fn first_for(identity: &str) -> u32 {
        // FNV-1a: stable across builds (std's hasher is not).
        identity.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        }) % Self::PER_RANGE
    }

    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + offset)
    }

    /// `a.b.c.d/28`.
    pub fn cidr(&self) -> String {
        format!("{}/28", self.base)
    }

    /// The bridge's address on the host (the network's gateway, which the firewall rejects).
    pub fn gateway(&self) -> Ipv4Addr {
        self.at(1)
    }

    /// The sidecar container's fixed address.
    pub fn sidecar(&self) -> Ipv4Addr {
        self.at(2)
    }

    /// The range the daemon gives every other container an address from (`.8/29`).
    pub fn dynamic_range(&self) -> String {
        format!("{}/29", self.at(8))
    }

    /// Whether this subnet shares an address with a route of `routes` (default routes are
    /// not counted: they contain every address).
    pub fn overlaps_a_route(&self, routes: &HostRoutes) -> bool {
        let (ours, our_mask) = (u32::from(self.base), 0xffff_fff0_u32);
        routes.routes.iter().any(|&(dest, mask)| {
            if mask == 0 {
                return false;
            }
            let common = mask & our_mask;
            dest & common == ours & common
        })
    }
}

/// Where the host's IPv4 routes are read from (the daemon is local: its host is this one).
pub const ROUTE_TABLE: &str = "/proc/net/route";

/// The host's IPv4 routes (destination and mask, as numbers), read from the kernel's
/// [`ROUTE_TABLE`] text by [`HostRoutes::parse`]. A bottle's [`InternalSubnet`] must overlap
/// none of them, so a table that cannot be read whole is an error, never an empty table: a
/// route skipped could be the one a subnet would shadow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRoutes {
    routes: Vec<(u32, u32)>,
}

/// A route table that is not the kernel's [`ROUTE_TABLE`] format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteTableError {
    /// The first line is not the kernel's header (`Iface Destination Gateway ... Mask ...`).
    #[error("its first line is not the kernel's route table header: `{0}`")]
    Header(String),
    /// A route line without a hexadecimal destination and mask where the header has them.
    #[error("line {number} is not a route: `{line}`")]
    Line { number: usize, line: String },
}

impl HostRoutes {
    /// The routes of a [`ROUTE_TABLE`] text: a header naming `Destination` and `Mask` as its
    /// second and eighth columns, then one route a line, both fields in host (little-endian)
    /// byte order as the kernel prints them. Blank lines are allowed; anything else that is
    /// not a route is an error naming the line.
    pub fn parse(table: &str) -> Result<HostRoutes, RouteTableError> {
        let mut lines = table.lines();
        let header = lines.next().unwrap_or_default();
        let columns: Vec<&str> = header.split_whitespace().collect();
        if columns.first() != Some(&"Iface")
            || columns.get(1) != Some(&"Destination")
            || columns.get(7) != Some(&"Mask")
        {
            return Err(RouteTableError::Header(header.to_owned()));
        }
        let mut routes = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| u32::from_str_radix(f, 16).ok())
                    .map(u32::from_be)
            };
            let (Some(dest), Some(mask)) = (hex(1), hex(7)) else {
                return Err(RouteTableError::Line {
                    number: n + 2,
                    line: line.to_owned(),
                });
            };
            routes.push((dest, mask));
        }
        Ok(HostRoutes { routes })
    }
}

/// The internal network shared by the agent and the sidecar: no gateway route out of the host,
/// the addresses of `subnet`.
pub fn internal_network(
    identity: &str,
    launcher: &str,
    subnet: &InternalSubnet,
) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: Names::new(identity).internal_network,
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        attachable: Some(false),
        labels: Some(launched(identity, "internal-network", launcher)),
        ipam: Some(Ipam {
            driver: Some("default".to_owned()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.cidr()),
                ip_range: Some(subnet.dynamic_range()),
                gateway: Some(subnet.gateway().to_string()),
                auxiliary_addresses: None,
            }]),
            options: None,
        }),
        ..Default::default()
    }
}

/// The sidecar's own network to the outside.
pub fn egress_network(identity: &str, launcher: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: Names::new(identity).egress_network,
        driver: Some("bridge".to_owned()),
        internal: Some(false),
        attachable: Some(false),
        labels: Some(launched(identity, "egress-network", launcher)),
        ..Default::default()
    }
}

/// [`labels`] plus the launcher, for objects of a running bottle.
fn launched(identity: &str, role: &str, launcher: &str) -> HashMap<String, String> {
    let mut labels = labels(identity, role);
    labels.insert(LABEL_LAUNCHER.to_owned(), launcher.to_owned());
    labels
}

fn endpoint_on(network: &str, address: Option<Ipv4Addr>) -> NetworkingConfig {
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.to_owned(),
            EndpointSettings {
                ipam_config: address.map(|a| EndpointIpamConfig {
                    ipv4_address: Some(a.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )])),
    }
}

fn bind(host: &Path, inside: &Path, read_only: bool) -> String {
    format!(
        "{}:{}:{}",
        host.display(),
        inside.display(),
        if read_only { "ro" } else { "rw" }
    )
}

/// The sidecar container (created on the internal network at `subnet`'s sidecar address;
/// the launcher connects it to the egress network before starting it).
pub fn sidecar_container(
    identity: &str,
    sidecar: &SidecarSpec,
    launcher: &str,
    subnet: &InternalSubnet,
) -> ContainerCreateBody {
    let names = Names::new(identity);
    let labels = launched(identity, "sidecar", launcher);
    ContainerCreateBody {
        image: Some(sidecar.image.clone()),
        cmd: (!sidecar.argv.is_empty()).then(|| sidecar.argv.clone()),
        env: Some(
            sidecar
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        user: Some(sidecar.user.clone()),
        hostname: Some(format!("sidecar-{identity}")),
        healthcheck: sidecar.health.as_ref().map(|command| HealthConfig {
            test: Some(
                std::iter::once("CMD".to_owned())
                    .chain(command.iter().cloned())
                    .collect(),
            ),
            interval: Some(10_000_000_000),
            timeout: Some(5_000_000_000),
            retries: Some(3),
            ..Default::default()
        }),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(names.internal_network.clone()),
            binds: Some(
                sidecar
                    .mounts
                    .iter()
                    .map(|m| bind(&m.host, &m.inside, m.read_only))
                    .collect(),
            ),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,nosuid,nodev,size=256m".to_owned(),
            )])),
            ..Default::default()
        }),
        networking_config: Some(endpoint_on(&names.internal_network, Some(subnet.sidecar()))),
        ..Default::default()
    }
}

/// The init's configuration for a spec: the sidecar is its fixed address on the internal
/// network (an address, not the container's name: the init needs no DNS and no running
/// sidecar to bind its loopback ports).
pub fn init_config(spec: &LaunchSpec, subnet: &InternalSubnet) -> InitConfig {
    InitConfig {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        cwd: spec.workspace.inside.clone(),
        sidecar_host: subnet.sidecar().to_string(),
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

/// The agent container: internal network only, non-root, no capabilities, no new privileges,
/// read-only root with private `/tmp` and `/var/tmp`, the spec's CPU, memory (no swap) and PID
/// limits, the init as PID 1.
pub fn agent_container(
    spec: &LaunchSpec,
    settings: &AgentSettings,
    init: &InitConfig,
    stdin_open: bool,
) -> Result<ContainerCreateBody, serde_json::Error> {
    let names = Names::new(&spec.identity);
    let labels = launched(&spec.identity, "agent", &settings.launcher);
    let mut binds = vec![
        bind(&settings.workspace_host, &spec.workspace.inside, false),
        bind(&spec.home.host, &spec.home.inside, false),
    ];
    binds.extend(spec.files.iter().map(|f| bind(&f.host, &f.inside, true)));
    binds.push(bind(&settings.init_exe, Path::new(INIT_PATH), true));
    let mut cmd = settings.init_args.clone();
    cmd.push(serde_json::to_string(init)?);
    let tmp = "rw,nosuid,nodev,size=1g".to_owned();
    let memory = i64::try_from(spec.resources.memory_bytes).unwrap_or(i64::MAX);
    Ok(ContainerCreateBody {
        image: Some(settings.image.clone()),
        hostname: Some(spec.identity.clone()),
        user: Some(settings.user.clone()),
        entrypoint: Some(vec![INIT_PATH.to_owned()]),
        cmd: Some(cmd),
        // The init gives the agent exactly the spec's environment; nothing is needed here.
        env: Some(vec![]),
        working_dir: Some(spec.workspace.inside.display().to_string()),
        tty: Some(spec.interactive),
        open_stdin: Some(stdin_open),
        stdin_once: Some(stdin_open),
        attach_stdin: Some(stdin_open),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(labels),
        stop_signal: Some("SIGTERM".to_owned()),
        host_config: Some(HostConfig {
            network_mode: Some(names.internal_network.clone()),
            binds: Some(binds),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            readonly_rootfs: Some(settings.read_only_root),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_owned(), tmp.clone()),
                ("/var/tmp".to_owned(), tmp),
            ])),
            nano_cpus: Some(i64::from(spec.resources.millicpus) * 1_000_000),
            memory: Some(memory),
            // Memory plus swap equal to memory: no swap on top.
            memory_swap: Some(memory),
            pids_limit: Some(super::runtime::host_pids_limit(
                settings.gvisor,
                i64::from(spec.resources.pids),
            )),
            runtime: settings.runtime.clone(),
            init: Some(false),
            ipc_mode: Some("private".to_owned()),
            ..Default::default()
        }),
        networking_config: Some(endpoint_on(&names.internal_network, None)),
        ..Default::default()
    })
}

/// The engine's warnings on creating a container that mean one of its limits was dropped
/// (`Your kernel does not support pids limit capabilities ... PIDs limit discarded.`, the
/// same for memory, swap and CPU): Docker creates the container anyway.
pub fn dropped_limits(warnings: &[String]) -> Vec<String> {
    warnings
        .iter()
        .filter(|w| {
            let w = w.to_ascii_lowercase();
            (w.contains("limit") || w.contains("cpu"))
                && (w.contains("does not support") || w.contains("discarded"))
        })
        .map(|w| w.trim().to_owned())
        .collect()
}

/// The workspace directory the agent container mounts.
pub fn workspace_host(spec: &LaunchSpec) -> PathBuf {
    match &spec.workspace.mode {
        WorkspaceMode::Mount => spec.workspace.host.clone(),
        WorkspaceMode::Copy { into } => into.clone(),
    }
}

/// The rules that close the agent's network namespace: loopback (except Docker's embedded DNS
/// at `127.0.0.11`) and the sidecar's forwarded TCP ports are the only destinations; everything
/// else (the gateway, i.e. the host; other containers; IPv6) is rejected at once.
///
/// They go in as soon as the agent's container runs: the init needs no DNS (it is given the
/// sidecar's fixed address, [`InternalSubnet::sidecar`]), so nothing waits for it.
pub fn firewall_script(sidecar_ip: IpAddr, ports: &[u16]) -> String {
    let mut lines = vec![
        "set -eu".to_owned(),
        "iptables -w -F OUTPUT".to_owned(),
        "iptables -w -A OUTPUT -d 127.0.0.11/32 -p tcp -j REJECT --reject-with tcp-reset"
            .to_owned(),
        "iptables -w -A OUTPUT -d 127.0.0.11/32 -j REJECT".to_owned(),
        "iptables -w -A OUTPUT -o lo -j ACCEPT".to_owned(),
    ];
    for port in ports {
        lines.push(format!(
            "iptables -w -A OUTPUT -d {sidecar_ip}/32 -p tcp --dport {port} -j ACCEPT"
        ));
    }
    lines.extend([
        "iptables -w -A OUTPUT -p tcp -j REJECT --reject-with tcp-reset".to_owned(),
        "iptables -w -A OUTPUT -j REJECT".to_owned(),
        "iptables -w -P OUTPUT DROP".to_owned(),
        "ip6tables -w -F OUTPUT".to_owned(),
        "ip6tables -w -A OUTPUT -o lo -j ACCEPT".to_owned(),
        "ip6tables -w -A OUTPUT -j REJECT".to_owned(),
        "ip6tables -w -P OUTPUT DROP".to_owned(),
    ]);
    lines.join("\n")
}

/// The one-shot container that installs [`firewall_script`] in the agent's network namespace
/// (it joins it with `network_mode: container:<agent>`; it only has `NET_ADMIN`/`NET_RAW` and
/// exits at once). Always runc: the rules belong to the host kernel's view of the namespace.
pub fn firewall_container(
    identity: &str,
    launcher: &str,
    image: &str,
    agent_id: &str,
    sidecar_ip: IpAddr,
    ports: &[u16],
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        user: Some("0:0".to_owned()),
        entrypoint: Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
        cmd: Some(vec![firewall_script(sidecar_ip, ports)]),
        env: Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ]),
        labels: Some(launched(identity, "firewall", launcher)),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{agent_id}")),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            readonly_rootfs: Some(true),
            runtime: Some("runc".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod limit_tests {
    use super::dropped_limits;

    #[test]
    fn dropped_limits_are_recognised_and_other_warnings_are_not() {
        let warnings = vec![
            "Your kernel does not support pids limit capabilities or the cgroup is not mounted. PIDs limit discarded.".to_owned(),
            "Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap.".to_owned(),
            "Published ports are discarded when using host network mode".to_owned(),
            "IPv4 forwarding is disabled. Networking will not work.".to_owned(),
        ];
        assert_eq!(dropped_limits(&warnings), warnings[..2].to_vec());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::{Forward, Home, ReadOnlyFile, Workspace};

    fn spec() -> LaunchSpec {
        LaunchSpec {
            identity: "claude-1a2b3".into(),
            argv: vec!["claude".into(), "--help".into()],
            env: BTreeMap::from([
                ("HOME".into(), "/home/agent".into()),
                ("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into()),
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ]),
            workspace: Workspace {
                host: "/home/dev/project".into(),
                inside: "/home/dev/project".into(),
                mode: WorkspaceMode::Mount,
            },
            home: Home {
                host: "/home/dev/.bot-bottle/state/claude-1a2b3/home".into(),
                inside: "/home/agent".into(),
            },
            files: vec![ReadOnlyFile {
                host: "/home/dev/.bot-bottle/state/claude-1a2b3/ca/ca.pem".into(),
                inside: "/run/bot-bottle/ca.pem".into(),
            }],
            forwards: vec![
                Forward {
                    inside_port: 3128,
                    host_unix_socket: "/unused".into(),
                },
                Forward {
                    inside_port: 9418,
                    host_unix_socket: "/unused".into(),
                },
            ],
            interactive: true,
            resources: crate::spec::Resources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                allow_unenforced: false,
            },
            dangerously_run_as_host_root: false,
        }
    }

    fn settings() -> AgentSettings {
        AgentSettings {
            image: "bot-bottle/agent-claude:0123456789ab".into(),
            user: "1000:1000".into(),
            init_exe: "/usr/local/bin/bot-bottle".into(),
            init_args: vec!["__docker-init".into()],
            runtime: Some("runsc".into()),
            gvisor: true,
            read_only_root: true,
            launcher: "boot:4242:99".into(),
            workspace_host: "/home/dev/project".into(),
        }
    }

    fn sidecar() -> SidecarSpec {
        SidecarSpec {
            image: "bot-bottle/sidecar:0123456789ab".into(),
            argv: vec![
                "bot-bottle".into(),
                "sidecar".into(),
                "--config".into(),
                "/config".into(),
            ],
            env: BTreeMap::from([("RUST_LOG".into(), "info".into())]),
            mounts: vec![SidecarMount {
                host: "/home/dev/.bot-bottle/state/claude-1a2b3".into(),
                inside: "/config".into(),
                read_only: false,
            }],
            user: "1000:1000".into(),
            ready_line: Some("ready".into()),
            health: Some(vec![
                "/usr/local/bin/bot-bottle".into(),
                "sidecar".into(),
                "--config".into(),
                "/home/u/.bot-bottle/state/demo-3fa9c/sidecar.json".into(),
                "--check".into(),
            ]),
        }
    }

    /// Maps (labels, tmpfs) are hash maps: snapshot them sorted.
    fn sorted(f: impl FnOnce()) {
        let mut settings = insta::Settings::clone_current();
        settings.set_sort_maps(true);
        settings.bind(f);
    }

    #[test]
    fn networks() {
        sorted(|| {
            insta::assert_json_snapshot!(
                "networks",
                (
                    internal_network("claude-1a2b3", "boot:4242:99", &InternalSubnet::nth(5)),
                    egress_network("claude-1a2b3", "boot:4242:99")
                )
            )
        });
    }

    #[test]
    fn agent() {
        let spec = spec();
        let init = init_config(&spec, &InternalSubnet::nth(5));
        assert_eq!(init.sidecar_host, "172.16.0.82");
        let body = agent_container(&spec, &settings(), &init, true).unwrap();
        sorted(|| insta::assert_json_snapshot!("agent_container", &body));
        // The init gets exactly the spec's command and environment.
        let cmd = body.cmd.unwrap();
        let parsed: InitConfig = serde_json::from_str(cmd.last().unwrap()).unwrap();
        assert_eq!(parsed, init);
    }

    #[test]
    fn sidecar_body() {
        sorted(|| {
            insta::assert_json_snapshot!(
                "sidecar_container",
                sidecar_container(
                    "claude-1a2b3",
                    &sidecar(),
                    "boot:4242:99",
                    &InternalSubnet::nth(5)
                )
            )
        });
    }

    #[test]
    fn firewall() {
        sorted(|| {
            insta::assert_json_snapshot!(
                "firewall_container",
                firewall_container(
                    "claude-1a2b3",
                    "boot:4242:99",
                    "bot-bottle/sidecar:0123456789ab",
                    "f00d",
                    "172.30.0.2".parse().unwrap(),
                    &[3128, 9418],
                )
            )
        });
    }

    /// A bottle's subnet: its addresses, and the host routes that rule it out (the kernel's
    /// `/proc/net/route` format, little-endian hex).
    #[test]
    fn internal_subnets_are_sixteenths_of_the_range_and_avoid_host_routes() {
        let s = InternalSubnet::nth(5);
        assert_eq!(s.cidr(), "172.16.0.80/28");
        assert_eq!(s.gateway().to_string(), "172.16.0.81");
        assert_eq!(s.sidecar().to_string(), "172.16.0.82");
        assert_eq!(s.dynamic_range(), "172.16.0.88/29");
        assert_eq!(InternalSubnet::nth(4095).cidr(), "172.16.255.240/28");
        // On into the second range (for a host that routes the first), then back round.
        assert_eq!(InternalSubnet::nth(4096).cidr(), "10.254.0.0/28");
        assert_eq!(
            InternalSubnet::nth(InternalSubnet::COUNT - 1).cidr(),
            "10.254.255.240/28"
        );
        assert_eq!(
            InternalSubnet::nth(InternalSubnet::COUNT),
            InternalSubnet::nth(0)
        );
        assert!(InternalSubnet::first_for("claude-1a2b3") < 4096);
        assert_eq!(
            InternalSubnet::first_for("claude-1a2b3"),
            InternalSubnet::first_for("claude-1a2b3")
        );
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let parse = |table: &str| HostRoutes::parse(table).unwrap();
        // Default route via 10.0.2.2, 10.0.2.0/24, docker0 172.17.0.0/16.
        let routes = format!(
            "{header}eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        );
        assert!(
            !s.overlaps_a_route(&parse(&routes)),
            "the default route counts for nothing"
        );
        // A LAN on 172.16.0.0/24 (wider than ours) and a /30 inside ours both rule it out.
        let lan = format!("{routes}eth1\t000010AC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(s.overlaps_a_route(&parse(&lan)));
        let narrow =
            format!("{routes}tun0\t540010AC\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n");
        assert!(s.overlaps_a_route(&parse(&narrow)));
        // A neighbouring /28 does not.
        let next = format!("{routes}tun0\t600010AC\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n");
        assert!(!s.overlaps_a_route(&parse(&next)));
        // A table with no routes (a host with no IPv4 network) has its header still.
        assert_eq!(parse(header), HostRoutes::default());
    }

    /// A route table read in part would let a subnet shadow the route left out: anything
    /// that is not the kernel's format is refused, naming what was found.
    #[test]
    fn a_route_table_that_is_not_the_kernels_is_refused() {
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";
        assert_eq!(
            HostRoutes::parse(""),
            Err(RouteTableError::Header(String::new()))
        );
        assert_eq!(
            HostRoutes::parse("eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"),
            Err(RouteTableError::Header(
                "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0".into()
            ))
        );
        let cut = format!("{header}\neth0\t0002000A\t00000000\t0001\t0\t0\n");
        assert_eq!(
            HostRoutes::parse(&cut),
            Err(RouteTableError::Line {
                number: 2,
                line: "eth0\t0002000A\t00000000\t0001\t0\t0".into()
            })
        );
        let garbled = format!(
            "{header}\n\neth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\ntun0\tnot-hex\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        let err = HostRoutes::parse(&garbled).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4 is not a route: `tun0\tnot-hex\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0`"
        );
    }

    #[test]
    fn names() {
        pretty_assertions::assert_eq!(
            Names::new("codex-00aa1"),
            Names {
                agent: "bot-bottle-codex-00aa1".into(),
                sidecar: "bot-bottle-sidecar-codex-00aa1".into(),
                firewall: "bot-bottle-firewall-codex-00aa1".into(),
                internal_network: "bot-bottle-net-codex-00aa1".into(),
                egress_network: "bot-bottle-egress-codex-00aa1".into(),
            }
        );
    }
}
