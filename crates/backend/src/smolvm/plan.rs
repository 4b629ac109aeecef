//! What the smolmachines backend asks `smolvm` for, and how it checks what smolvm persisted.
//!
//! Pure functions over a [`LaunchSpec`]: the `smolvm machine …` argument lists and the
//! confirmation of the machine record smolvm stored, so every decision is unit-tested without
//! a smolvm.
//!
//! **Why the machine has no network device.** smolvm offers two egress paths and neither can
//! confine a bottle to its own sidecars: its TSI backend's in-libkrun CIDR filter does not
//! enforce (smolvm's own `network/launch.rs` says a non-allowed IP stays reachable, and forces
//! virtio-net whenever an egress policy is set), and smolvm 0.8.0 silently dropped
//! `--allow-cidr` when combined with `--from`; the virtio-net gateway does enforce its allow
//! list, but the guest reaches the host only through the gateway address, which smolvm maps to
//! the host's `127.0.0.1` — every loopback service of the host, not one bottle's sidecars. So
//! the machine is created with no network at all (no `--net`, `--allow-cidr`, `-p`,
//! `--network`, `--dns`), and each sidecar endpoint reaches the guest as a host Unix socket
//! bridged over vsock (`--mount-socket`, the way native and qemu forward to the same sockets).
//! The guest init relays `127.0.0.1:<port>` to that socket, so the agent's contract is the
//! same as on every other backend.
//!
//! **Fail closed.** A flag smolvm drops silently is a bottle less isolated than promised, so
//! after `machine create` the backend reads the record smolvm persisted (its state database)
//! and refuses to start unless [`confirm_record`] finds exactly what was asked: no network of
//! any kind, exactly these mounts with their read-only flags, exactly these socket bridges, the
//! bottle's size, no SSH agent or Docker socket, and no field it does not know whose name
//! suggests a way out.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{BackendError, LaunchSpec};

/// Machines of bot-bottle are named `bb-<identity>` (and labelled `bot-bottle=<identity>`).
pub const MACHINE_PREFIX: &str = "bb-";
/// The label smolvm stores on each machine of bot-bottle.
pub const LABEL: &str = "bot-bottle";
/// Where the guest sees the directory holding the guest executable (read-only).
pub const GUEST_BIN_DIR: &str = "/run/bot-bottle/bin";
/// The guest executable (`bot-bottle`, a Linux build) inside the guest.
pub const GUEST_EXE: &str = "/run/bot-bottle/bin/bot-bottle";
/// Where the sidecar sockets are bridged in (`<port>.sock`).
pub const GUEST_SOCKET_DIR: &str = "/run/bot-bottle/sidecars";
/// Where the read-only files' directories are mounted (`<n>`), before the guest init copies
/// each into place.
pub const GUEST_FILES_DIR: &str = "/run/bot-bottle/files";
/// The agent's uid and gid inside the guest.
pub const AGENT_ID: u32 = 1000;
/// The oldest smolvm this backend drives: `--mount-socket` (the sidecar path) appeared in
/// 1.6.10 and the machine record's `published_sockets` with it; 1.7.0 is the first minor
/// release that has both.
pub const MIN_VERSION: (u32, u32, u32) = (1, 7, 0);

/// The machine name of a bottle.
pub fn machine_name(identity: &str) -> String {
    format!("{MACHINE_PREFIX}{identity}")
}

/// The bottle identity of a machine name, when it is one of bot-bottle's.
pub fn identity_of(machine: &str) -> Option<&str> {
    machine.strip_prefix(MACHINE_PREFIX)
}

/// Parses `smolvm --version` (`smolvm 1.9.2`) into its numbers.
pub fn parse_version(output: &str) -> Option<(u32, u32, u32)> {
    let word = output.split_whitespace().nth(1)?;
    let word = word.trim_start_matches('v');
    let core = word.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()?.unwrap_or(0)))
}

/// Whether a parsed version is one this backend drives.
pub fn version_supported(v: (u32, u32, u32)) -> bool {
    v >= MIN_VERSION
}

/// The root filesystem of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmolImage {
    /// A registry reference, a `docker save` archive or an unpacked rootfs directory
    /// (`--image`).
    Image(String),
    /// A packed `.smolmachine` artifact (`--from`).
    Pack(PathBuf),
}

impl SmolImage {
    /// `.smolmachine` paths are packs, everything else an image.
    pub fn parse(value: &str) -> SmolImage {
        if value.ends_with(".smolmachine") {
            SmolImage::Pack(PathBuf::from(value))
        } else {
            SmolImage::Image(value.to_owned())
        }
    }
}

/// One `-v HOST:GUEST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: PathBuf,
    pub read_only: bool,
}

/// One `--mount-socket HOST:GUEST`: the sidecar's host socket, reachable in the guest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SocketBridge {
    pub host: PathBuf,
    pub guest: PathBuf,
}

/// A read-only file of the spec as the guest gets it: the directory `stage` (on the host)
/// mounted read-only at `GUEST_FILES_DIR/<n>`, then `source` (inside that mount) copied by the
/// guest init onto `inside`. virtiofs shares directories only, hence the staging directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// The host file or directory of the spec.
    pub host: PathBuf,
    /// The host directory that is mounted (a copy's directory for a file; the directory
    /// itself for a directory).
    pub stage: PathBuf,
    /// What the guest init copies into place, inside the guest.
    pub source: PathBuf,
    /// Where the agent sees it.
    pub inside: PathBuf,
}

/// The machine of one bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePlan {
    pub name: String,
    pub identity: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub image: Option<SmolImage>,
    pub mounts: Vec<Mount>,
    pub sockets: Vec<SocketBridge>,
    pub files: Vec<StagedFile>,
}

/// The guest's socket path of a sidecar port.
pub fn guest_socket(port: u16) -> PathBuf {
    Path::new(GUEST_SOCKET_DIR).join(format!("{port}.sock"))
}

impl MachinePlan {
    /// The plan for `spec`: `guest_bin` is the host directory holding the guest executable,
    /// `stage_dir` a per-bottle host directory for the read-only files' copies.
    pub fn new(
        spec: &LaunchSpec,
        image: Option<SmolImage>,
        guest_bin: &Path,
        stage_dir: &Path,
        is_dir: impl Fn(&Path) -> bool,
    ) -> Result<MachinePlan, BackendError> {
        let (cpus, memory_mib) = spec.resources.vm_size();
        if cpus > u32::from(u8::MAX) {
            return Err(BackendError::InvalidSpec(format!(
                "resources.cpus asks for {cpus} CPUs; smolvm gives a machine at most 255"
            )));
        }
        if memory_mib > u64::from(u32::MAX) {
            return Err(BackendError::InvalidSpec(
                "resources.memory is more than smolvm can give one machine".to_owned(),
            ));
        }
        let workspace_host = match &spec.workspace.mode {
            crate::WorkspaceMode::Mount => spec.workspace.host.clone(),
            crate::WorkspaceMode::Copy { into } => into.clone(),
        };
        let mut mounts = vec![
            Mount {
                host: workspace_host,
                guest: spec.workspace.inside.clone(),
                read_only: false,
            },
            Mount {
                host: spec.home.host.clone(),
                guest: spec.home.inside.clone(),
                read_only: false,
            },
            Mount {
                host: guest_bin.to_path_buf(),
                guest: GUEST_BIN_DIR.into(),
                read_only: true,
            },
        ];
        let mut files = Vec::new();
        for (n, file) in spec.files.iter().enumerate() {
            let guest_dir = Path::new(GUEST_FILES_DIR).join(n.to_string());
            let staged = if is_dir(&file.host) {
                StagedFile {
                    host: file.host.clone(),
                    stage: file.host.clone(),
                    source: guest_dir.clone(),
                    inside: file.inside.clone(),
                }
            } else {
                let name = file.host.file_name().ok_or_else(|| {
                    BackendError::InvalidSpec(format!(
                        "read-only file {} has no file name",
                        file.host.display()
                    ))
                })?;
                StagedFile {
                    host: file.host.clone(),
                    stage: stage_dir.join(n.to_string()),
                    source: guest_dir.join(name),
                    inside: file.inside.clone(),
                }
            };
            mounts.push(Mount {
                host: staged.stage.clone(),
                guest: guest_dir,
                read_only: true,
            });
            files.push(staged);
        }
        let sockets = spec
            .forwards
            .iter()
            .map(|f| SocketBridge {
                host: f.host_unix_socket.clone(),
                guest: guest_socket(f.inside_port),
            })
            .collect();
        Ok(MachinePlan {
            name: machine_name(&spec.identity),
            identity: spec.identity.clone(),
            cpus,
            memory_mib,
            image,
            mounts,
            sockets,
            files,
        })
    }

    /// `smolvm machine create …`: the size, the root filesystem, the mounts and the socket
    /// bridges, and nothing that gives the machine a network.
    pub fn create_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "machine".into(),
            "create".into(),
            "--name".into(),
            self.name.clone(),
            "--label".into(),
            format!("{LABEL}={}", self.identity),
            "--cpus".into(),
            self.cpus.to_string(),
            "--mem".into(),
            self.memory_mib.to_string(),
        ];
        match &self.image {
            Some(SmolImage::Image(image)) => args.extend(["--image".into(), image.clone()]),
            Some(SmolImage::Pack(pack)) => {
                args.extend(["--from".into(), pack.display().to_string()])
            }
            None => {}
        }
        for m in &self.mounts {
            let ro = if m.read_only { ":ro" } else { "" };
            args.push("--volume".into());
            args.push(format!("{}:{}{ro}", m.host.display(), m.guest.display()));
        }
        for s in &self.sockets {
            args.push("--mount-socket".into());
            args.push(format!("{}:{}", s.host.display(), s.guest.display()));
        }
        args
    }
}

/// `smolvm machine start --name <machine>`.
pub fn start_args(machine: &str) -> Vec<String> {
    ["machine", "start", "--name", machine]
        .map(String::from)
        .to_vec()
}

/// `smolvm machine stop --name <machine>`.
pub fn stop_args(machine: &str) -> Vec<String> {
    ["machine", "stop", "--name", machine]
        .map(String::from)
        .to_vec()
}

/// `smolvm machine delete --name <machine> --force` (smolvm stops a running machine first).
pub fn delete_args(machine: &str) -> Vec<String> {
    ["machine", "delete", "--name", machine, "--force"]
        .map(String::from)
        .to_vec()
}

/// `smolvm machine ls --json`.
pub fn list_args() -> Vec<String> {
    ["machine", "ls", "--json"].map(String::from).to_vec()
}

/// `smolvm machine exec --name <machine> [-i -t] -- <guest init> <guest spec>`: the guest
/// init runs as root in the machine, sets up the bottle and runs the agent as uid 1000.
pub fn exec_args(machine: &str, interactive: bool, guest_spec_json: &str) -> Vec<String> {
    let mut args: Vec<String> = ["machine", "exec", "--name", machine]
        .map(String::from)
        .to_vec();
    if interactive {
        args.extend(["-i".into(), "-t".into()]);
    }
    args.extend([
        "--".into(),
        GUEST_EXE.into(),
        crate::inbottle::smolvm_guest::INIT_SUBCOMMAND.into(),
        guest_spec_json.into(),
    ]);
    args
}

/// Why the persisted record is not the machine that was asked for.
fn refuse(machine: &str, what: impl std::fmt::Display) -> BackendError {
    BackendError::Setup {
        stage: "confirm the machine smolvm persisted".into(),
        message: format!(
            "machine {machine}: {what}; refusing to start it (the bottle would not be isolated as promised). \
             Check `smolvm --version` (bot-bottle needs {}.{}.{} or later) and report the smolvm version if it is newer",
            MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
        ),
    }
}

/// Record fields that must be present: without them the check below could pass a record it
/// does not understand.
const REQUIRED_FIELDS: [&str; 6] = [
    "network",
    "mounts",
    "ports",
    "published_sockets",
    "cpus",
    "mem",
];

/// Record fields whose every value the check below judges.
const JUDGED_FIELDS: [&str; 16] = [
    "network",
    "allowed_cidrs",
    "network_backend",
    "ports",
    "dns",
    "dns_filter_hosts",
    "network_name",
    "mounts",
    "published_sockets",
    "ssh_agent",
    "docker_socket",
    "remote_volumes",
    "secret_refs",
    "cpus",
    "mem",
    "labels",
];

/// Words in an unknown field's name that suggest a way out of the machine.
const RISKY_WORDS: [&str; 12] = [
    "net", "cidr", "port", "dns", "sock", "ssh", "proxy", "host", "remote", "secret", "volume",
    "mount",
];

fn is_empty_value(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Number(_) => false,
    }
}

/// The record smolvm persisted for a machine (its state database's `vms.data`, JSON) is
/// exactly `plan`: see the module doc. Any doubt refuses.
pub fn confirm_record(plan: &MachinePlan, record: &serde_json::Value) -> Result<(), BackendError> {
    let name = plan.name.as_str();
    let obj = record
        .as_object()
        .ok_or_else(|| refuse(name, "its record is not a JSON object"))?;
    for field in REQUIRED_FIELDS {
        if !obj.contains_key(field) {
            return Err(refuse(
                name,
                format_args!("its record has no `{field}` field (an unknown record layout)"),
            ));
        }
    }
    for (key, value) in obj {
        if JUDGED_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let lower = key.to_ascii_lowercase();
        if RISKY_WORDS.iter().any(|w| lower.contains(w)) && !is_empty_value(value) {
            return Err(refuse(
                name,
                format_args!("its record has `{key}` = {value}, a field bot-bottle does not know"),
            ));
        }
    }
    // No network of any kind.
    if obj.get("network") != Some(&serde_json::Value::Bool(false)) {
        return Err(refuse(
            name,
            format_args!("it was persisted with `network` = {}", obj["network"]),
        ));
    }
    for field in [
        "allowed_cidrs",
        "network_backend",
        "ports",
        "dns",
        "dns_filter_hosts",
        "network_name",
        "ssh_agent",
        "docker_socket",
        "remote_volumes",
        "secret_refs",
    ] {
        if let Some(value) = obj.get(field)
            && !is_empty_value(value)
        {
            return Err(refuse(
                name,
                format_args!(
                    "it was persisted with `{field}` = {value}, which bot-bottle never asks for"
                ),
            ));
        }
    }
    // The identity label: list, stop and cleanup know the machine as bot-bottle's by it.
    if obj["labels"][LABEL] != plan.identity.as_str() {
        return Err(refuse(
            name,
            format_args!(
                "its persisted labels are {} without `{LABEL}={}`, so bot-bottle could not find \
                 it again to stop or clean it up",
                obj["labels"], plan.identity
            ),
        ));
    }
    // Exactly the mounts, with their read-only flags.
    let mounts: Vec<(String, String, bool)> = serde_json::from_value(obj["mounts"].clone())
        .map_err(|e| refuse(name, format_args!("its `mounts` cannot be read: {e}")))?;
    let mut got: Vec<Mount> = mounts
        .into_iter()
        .map(|(host, guest, read_only)| Mount {
            host: host.into(),
            guest: guest.into(),
            read_only,
        })
        .collect();
    let mut want = plan.mounts.clone();
    got.sort();
    want.sort();
    if got != want {
        return Err(refuse(
            name,
            format_args!(
                "its persisted mounts are {} but bot-bottle asked for {}",
                describe_mounts(&got),
                describe_mounts(&want)
            ),
        ));
    }
    // Exactly the socket bridges, all host→guest.
    #[derive(Deserialize)]
    struct Persisted {
        direction: String,
        guest_path: String,
        host_path: Option<String>,
    }
    let sockets: Vec<Persisted> = serde_json::from_value(obj["published_sockets"].clone())
        .map_err(|e| {
            refuse(
                name,
                format_args!("its `published_sockets` cannot be read: {e}"),
            )
        })?;
    let mut got = Vec::new();
    for s in sockets {
        if s.direction != "mount" {
            return Err(refuse(
                name,
                format_args!(
                    "it has a `{}` socket bridge at {}",
                    s.direction, s.guest_path
                ),
            ));
        }
        let Some(host) = s.host_path else {
            return Err(refuse(
                name,
                format_args!("its socket bridge {} has no host path", s.guest_path),
            ));
        };
        got.push(SocketBridge {
            host: host.into(),
            guest: s.guest_path.into(),
        });
    }
    let mut want = plan.sockets.clone();
    got.sort();
    want.sort();
    if got != want {
        return Err(refuse(
            name,
            format_args!(
                "its persisted socket bridges are {got:?} but bot-bottle asked for {want:?}"
            ),
        ));
    }
    // The bottle's size (the resource limits are the VM's size).
    let cpus = obj["cpus"].as_u64();
    let mem = obj["mem"].as_u64();
    if cpus != Some(u64::from(plan.cpus)) || mem != Some(plan.memory_mib) {
        return Err(refuse(
            name,
            format_args!(
                "it was persisted with `cpus` = {} and `mem` = {} MiB, not the bottle's {} CPUs and {} MiB",
                obj["cpus"], obj["mem"], plan.cpus, plan.memory_mib
            ),
        ));
    }
    Ok(())
}

fn describe_mounts(mounts: &[Mount]) -> String {
    let parts: Vec<String> = mounts
        .iter()
        .map(|m| {
            format!(
                "{}:{}{}",
                m.host.display(),
                m.guest.display(),
                if m.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Forward, Home, ReadOnlyFile, Resources, Workspace, WorkspaceMode};
    use pretty_assertions::assert_eq;

    pub(crate) fn spec() -> LaunchSpec {
        LaunchSpec {
            identity: "demo-1a2b3".into(),
            argv: vec!["claude".into()],
            env: [("HOME".to_owned(), "/home/agent".to_owned())].into(),
            workspace: Workspace {
                host: "/work/proj".into(),
                inside: "/work/proj".into(),
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
                host_unix_socket: "/bb/state/demo-1a2b3/egress.sock".into(),
            }],
            interactive: false,
            resources: Resources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                allow_unenforced: false,
            },
            dangerously_run_as_host_root: false,
        }
    }

    fn plan() -> MachinePlan {
        MachinePlan::new(
            &spec(),
            Some(SmolImage::Image("/bb/images/claude.tar".into())),
            Path::new("/bb/run/smolvm/demo-1a2b3/bin"),
            Path::new("/bb/run/smolvm/demo-1a2b3/files"),
            |_| false,
        )
        .unwrap()
    }

    #[test]
    fn the_create_command_has_no_network_and_bridges_the_sidecar_sockets() {
        assert_eq!(
            plan().create_args().join(" "),
            "machine create --name bb-demo-1a2b3 --label bot-bottle=demo-1a2b3 --cpus 2 --mem 2048 \
             --image /bb/images/claude.tar \
             --volume /work/proj:/work/proj \
             --volume /bb/state/demo-1a2b3/home:/home/agent \
             --volume /bb/run/smolvm/demo-1a2b3/bin:/run/bot-bottle/bin:ro \
             --volume /bb/run/smolvm/demo-1a2b3/files/0:/run/bot-bottle/files/0:ro \
             --mount-socket /bb/state/demo-1a2b3/egress.sock:/run/bot-bottle/sidecars/3128.sock"
        );
    }

    #[test]
    fn a_pack_is_created_with_from() {
        let mut p = plan();
        p.image = Some(SmolImage::parse("/bb/agent.smolmachine"));
        assert!(
            p.create_args()
                .join(" ")
                .contains("--from /bb/agent.smolmachine")
        );
    }

    #[test]
    fn versions_parse_and_old_ones_are_refused() {
        assert_eq!(parse_version("smolvm 1.9.2\n"), Some((1, 9, 2)));
        assert_eq!(parse_version("smolvm v0.8.0"), Some((0, 8, 0)));
        assert_eq!(parse_version("smolvm 1.10.0-rc1"), Some((1, 10, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(!version_supported((0, 8, 0)));
        assert!(!version_supported((1, 6, 10)));
        assert!(version_supported((1, 7, 0)));
        assert!(version_supported((1, 9, 2)));
    }

    fn record(plan: &MachinePlan) -> serde_json::Value {
        serde_json::json!({
            "name": plan.name, "created_at": 1, "state": "created", "pid": null,
            "cpus": plan.cpus, "mem": plan.memory_mib,
            "mounts": plan.mounts.iter().map(|m| (m.host.display().to_string(), m.guest.display().to_string(), m.read_only)).collect::<Vec<_>>(),
            "ports": [], "published_sockets": plan.sockets.iter().map(|s| serde_json::json!({"direction": "mount", "guest_path": s.guest, "host_path": s.host})).collect::<Vec<_>>(),
            "network": false, "gpu": null, "allowed_cidrs": null, "image": "local:abc",
            "labels": {"bot-bottle": plan.identity}, "ssh_agent": false, "docker_socket": false,
            "dns_filter_hosts": null, "remote_volumes": [], "env": [], "workdir": null,
        })
    }

    #[test]
    fn the_record_asked_for_is_confirmed() {
        let p = plan();
        confirm_record(&p, &record(&p)).unwrap();
    }

    #[test]
    fn every_way_out_in_the_record_refuses() {
        let p = plan();
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("network", serde_json::json!(true)),
            ("allowed_cidrs", serde_json::json!(["127.0.0.0/8"])),
            ("network_backend", serde_json::json!("tsi")),
            ("ports", serde_json::json!([[8080, 80]])),
            ("dns", serde_json::json!("1.1.1.1")),
            ("dns_filter_hosts", serde_json::json!(["example.com"])),
            ("network_name", serde_json::json!("shared")),
            ("ssh_agent", serde_json::json!(true)),
            ("docker_socket", serde_json::json!(true)),
            ("remote_volumes", serde_json::json!([{"source": "s3://x"}])),
            ("egress_proxy", serde_json::json!("http://x")),
            ("cpus", serde_json::json!(64)),
            ("mem", serde_json::json!(65536)),
        ];
        for (field, value) in cases {
            let mut r = record(&p);
            r[field] = value;
            let err = confirm_record(&p, &r).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
            assert!(err.contains("refusing to start"), "{field}: {err}");
        }
    }

    #[test]
    fn a_dropped_read_only_flag_or_socket_or_field_refuses() {
        let p = plan();
        let mut r = record(&p);
        r["mounts"][2][2] = serde_json::json!(false);
        assert!(
            confirm_record(&p, &r)
                .unwrap_err()
                .to_string()
                .contains("mounts")
        );
        let mut r = record(&p);
        r["published_sockets"] = serde_json::json!([]);
        assert!(
            confirm_record(&p, &r)
                .unwrap_err()
                .to_string()
                .contains("socket bridges")
        );
        let mut r = record(&p);
        r["published_sockets"][0]["direction"] = serde_json::json!("expose");
        assert!(
            confirm_record(&p, &r)
                .unwrap_err()
                .to_string()
                .contains("expose")
        );
        for field in REQUIRED_FIELDS {
            let mut r = record(&p);
            r.as_object_mut().unwrap().remove(field);
            let err = confirm_record(&p, &r).unwrap_err().to_string();
            assert!(err.contains("unknown record layout"), "{field}: {err}");
        }
        assert!(confirm_record(&p, &serde_json::json!("x")).is_err());
    }

    #[test]
    fn a_machine_without_its_identity_label_refuses() {
        // list, stop and cleanup know a machine as bot-bottle's by this label alone: one that
        // lost it could be neither stopped nor cleaned up.
        let p = plan();
        for labels in [
            serde_json::json!({}),
            serde_json::json!(null),
            serde_json::json!({"bot-bottle": "other-00000"}),
        ] {
            let mut r = record(&p);
            r["labels"] = labels.clone();
            let err = confirm_record(&p, &r).unwrap_err().to_string();
            assert!(err.contains("bot-bottle=demo-1a2b3"), "{labels}: {err}");
        }
    }

    #[test]
    fn unknown_harmless_fields_and_empty_risky_ones_pass() {
        let p = plan();
        let mut r = record(&p);
        r["restart_policy"] = serde_json::json!("never");
        r["future_proxy"] = serde_json::json!(null);
        confirm_record(&p, &r).unwrap();
    }

    #[test]
    fn a_directory_is_mounted_as_is_and_too_many_cpus_are_refused() {
        let p =
            MachinePlan::new(&spec(), None, Path::new("/b"), Path::new("/s"), |_| true).unwrap();
        assert_eq!(
            p.files[0].stage,
            Path::new("/bb/state/demo-1a2b3/ca/bundle.pem")
        );
        assert_eq!(p.files[0].source, Path::new("/run/bot-bottle/files/0"));
        let mut s = spec();
        s.resources.millicpus = 300_000;
        let err =
            MachinePlan::new(&s, None, Path::new("/b"), Path::new("/s"), |_| true).unwrap_err();
        assert!(err.to_string().contains("255"), "{err}");
    }
}
