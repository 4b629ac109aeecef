//! A `container` CLI that behaves like Apple's, for tests of the fail-closed paths: it parses
//! `system status`, `network create/inspect/list/delete`, `run`, `create`, `start`, `kill`,
//! `logs`, `inspect`, `delete` and `list` as the Swift argument parser does (unknown options are
//! usage errors, exit 64), keeps networks and containers as the API server does and answers
//! `inspect` with the same JSON shapes (`configuration.mode`, `configuration.networks`,
//! `status.networks[].ipv4Address`, `mounts[].options`), and reproduces what can go wrong:
//! macOS before 26 has no user-defined networks, the API server not running, and [`Bug`]s a
//! version could have. `--env NAME` takes the value from the environment the command was run
//! with, as the real CLI does; the fake keeps which names had a value.
//!
//! Every call is recorded as one line (`network create --internal …`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use super::cli::{CliChild, CliOutput, ContainerCli};
use crate::{BackendError, BottleStdio};

/// A fault of a `container` version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bug {
    /// `--internal` is ignored: the network is created in NAT mode.
    InternalIgnored,
    /// Every container is also attached to the `default` network.
    AddsDefaultNetwork,
    /// `readonly` on `--mount` is dropped.
    DropsReadOnly,
    /// The sidecar never prints its ready line.
    SidecarNeverReady,
}

#[derive(Debug, Clone)]
struct Ctr {
    config: serde_json::Value,
    running: bool,
    logs: String,
    addresses: BTreeMap<String, String>,
}

/// What the fake answers and what it was asked.
#[derive(Debug)]
pub struct FakeState {
    /// The macOS major version (user-defined networks need 26).
    pub macos: u32,
    pub api_server_running: bool,
    pub bugs: Vec<Bug>,
    /// Subcommands (`network create`, `run`, `create`, `start`, `kill`, `inspect`, …) that
    /// fail with this message (exit 1).
    pub fail: BTreeMap<String, String>,
    /// The exit code of the agent's `start --attach`.
    pub exit_code: i32,
    pub calls: Vec<String>,
    /// `--env NAME` names that had a value in the command's environment.
    pub env_given: BTreeSet<String>,
    /// Containers that were sent SIGUSR1.
    pub released: Vec<String>,
    /// Image tags that exist.
    pub images: BTreeSet<String>,
    /// Name → (mode, labels).
    networks: BTreeMap<String, (String, serde_json::Value)>,
    containers: BTreeMap<String, Ctr>,
    next_ip: u8,
}

/// The fake; clones share one state.
#[derive(Clone, Debug)]
pub struct FakeContainer {
    pub state: Arc<Mutex<FakeState>>,
}

impl Default for FakeContainer {
    fn default() -> Self {
        FakeContainer::new()
    }
}

fn out(status: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> CliOutput {
    CliOutput {
        status,
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

fn usage(message: String) -> CliOutput {
    out(
        64,
        "",
        format!("Error: {message}\nUsage: see 'container --help'\n"),
    )
}

fn failure(message: impl Into<String>) -> CliOutput {
    out(1, "", format!("Error: {}\n", message.into()))
}

fn parse_memory(v: &str) -> Option<u64> {
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    Some(n << shift)
}

impl FakeContainer {
    /// macOS 26, the API server running, no bugs.
    pub fn new() -> FakeContainer {
        FakeContainer {
            state: Arc::new(Mutex::new(FakeState {
                macos: 26,
                api_server_running: true,
                bugs: Vec::new(),
                fail: BTreeMap::new(),
                exit_code: 0,
                calls: Vec::new(),
                env_given: BTreeSet::new(),
                released: Vec::new(),
                images: BTreeSet::new(),
                networks: BTreeMap::new(),
                containers: BTreeMap::new(),
                next_ip: 2,
            })),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// The networks and containers that exist.
    pub fn resources(&self) -> (Vec<String>, Vec<String>) {
        self.with(|s| {
            (
                s.networks.keys().cloned().collect(),
                s.containers.keys().cloned().collect(),
            )
        })
    }

    fn has(&self, bug: &Bug) -> bool {
        self.with(|s| s.bugs.contains(bug))
    }

    fn dispatch(&self, args: &[String], env: &[(String, String)]) -> CliOutput {
        let w: Vec<&str> = args.iter().map(String::as_str).collect();
        let key = match w.as_slice() {
            ["network" | "system", sub, ..] => format!("{} {sub}", w[0]),
            ["image", sub, ..] => format!("image {sub}"),
            [sub, ..] => (*sub).to_owned(),
            [] => return usage("missing subcommand".into()),
        };
        if let Some(m) = self.with(|s| s.fail.get(&key).cloned()) {
            return failure(m);
        }
        match w.as_slice() {
            ["system", "status"] => {
                if self.with(|s| s.api_server_running) {
                    out(0, "apiserver is running\n", "")
                } else {
                    failure("apiserver is not running and not registered with launchd")
                }
            }
            ["network", "create", rest @ ..] => self.network_create(rest),
            ["network", "inspect", name] => self.with(|s| match s.networks.get(*name) {
                Some(net) => out(
                    0,
                    serde_json::json!([Self::network(name, net)]).to_string(),
                    "",
                ),
                None => failure(format!("network {name} not found")),
            }),
            ["network", "list" | "ls", "--format", "json"] => self.with(|s| {
                // The builtin `default` network is listed too, as the real CLI does.
                let default = ("nat".to_owned(), serde_json::json!({}));
                let all: Vec<serde_json::Value> =
                    std::iter::once(Self::network("default", &default))
                        .chain(s.networks.iter().map(|(n, net)| Self::network(n, net)))
                        .collect();
                out(0, serde_json::Value::Array(all).to_string(), "")
            }),
            ["network", "delete" | "rm", names @ ..] => self.with(|s| {
                for n in names {
                    if !s.networks.contains_key(*n) {
                        return failure(format!("network {n} not found"));
                    }
                    // The real CLI refuses while addresses of the network are in use.
                    let attached = s.containers.values().any(|c| {
                        c.config["networks"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x["network"] == *n))
                    });
                    if attached {
                        return failure(format!("network {n} has containers attached"));
                    }
                    s.networks.remove(*n);
                }
                out(0, names.join("\n"), "")
            }),
            ["run", rest @ ..] => self.create(rest, env, true),
            ["create", rest @ ..] => self.create(rest, env, false),
            ["kill", "--signal", sig, name] => self.with(|s| match s.containers.get(*name) {
                Some(c) if c.running => {
                    s.released.push(format!("{name} {sig}"));
                    out(0, "", "")
                }
                Some(_) => failure(format!("container {name} is not running")),
                None => failure(format!("container {name} not found")),
            }),
            ["logs", name] => self.with(|s| match s.containers.get(*name) {
                Some(c) => out(0, c.logs.clone(), ""),
                None => failure(format!("container {name} not found")),
            }),
            ["inspect", name] => self.with(|s| match s.containers.get(*name) {
                Some(c) => out(
                    0,
                    serde_json::json!([Self::managed(name, c)]).to_string(),
                    "",
                ),
                None => failure(format!("container {name} not found")),
            }),
            ["delete", "--force", names @ ..] => self.with(|s| {
                for n in names {
                    s.containers.remove(*n);
                }
                out(0, "", "")
            }),
            ["image", "inspect", tag] => self.with(|s| {
                if s.images.contains(*tag) {
                    out(0, serde_json::json!([{"name": tag}]).to_string(), "")
                } else {
                    failure(format!("image {tag} not found"))
                }
            }),
            ["build", rest @ ..] => {
                let tag = rest
                    .windows(2)
                    .find(|w| w[0] == "--tag" || w[0] == "-t")
                    .map(|w| w[1].to_owned());
                let context = rest.last().map(|c| std::path::Path::new(c).is_dir());
                match (tag, context) {
                    (Some(tag), Some(true)) => self.with(|s| {
                        s.images.insert(tag);
                        out(0, "", "")
                    }),
                    _ => usage("build needs --tag and an existing context directory".into()),
                }
            }
            ["stop", rest @ ..] => {
                let Some(name) = rest.last() else {
                    return usage("Missing expected argument '<container-ids>'".into());
                };
                self.with(|s| match s.containers.get_mut(*name) {
                    Some(c) => {
                        c.running = false;
                        out(0, "", "")
                    }
                    None => failure(format!("container {name} not found")),
                })
            }
            ["list", "--all", "--format", "json"] => self.with(|s| {
                let all: Vec<serde_json::Value> = s
                    .containers
                    .iter()
                    .map(|(n, c)| Self::managed(n, c))
                    .collect();
                out(0, serde_json::Value::Array(all).to_string(), "")
            }),
            _ => usage(format!("unknown command {w:?}")),
        }
    }

    fn network(name: &str, (mode, labels): &(String, serde_json::Value)) -> serde_json::Value {
        serde_json::json!({"id": name, "configuration": {"id": name, "mode": mode, "labels": labels, "plugin": "container-network-vmnet", "options": {}}, "status": {}})
    }

    fn managed(name: &str, c: &Ctr) -> serde_json::Value {
        let networks: Vec<serde_json::Value> = c
            .addresses
            .iter()
            .map(|(net, ip)| serde_json::json!({"network": net, "hostname": name, "ipv4Address": format!("{ip}/24"), "ipv4Gateway": "192.168.64.1"}))
            .collect();
        serde_json::json!({
            "id": name,
            "configuration": c.config,
            "status": {"state": if c.running { "running" } else { "stopped" }, "networks": if c.running { networks } else { vec![] }},
        })
    }

    fn network_create(&self, args: &[&str]) -> CliOutput {
        if self.with(|s| s.macos) < 26 {
            return failure("user-defined networks require macOS 26 or later");
        }
        let (mut internal, mut name) = (false, None);
        let mut labels = serde_json::Map::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match *a {
                "--internal" => internal = true,
                "--label" => {
                    let Some((k, v)) = it.next().and_then(|l| l.split_once('=')) else {
                        return usage("--label needs key=value".into());
                    };
                    labels.insert(k.into(), v.into());
                }
                other if other.starts_with('-') => {
                    return usage(format!("Unknown option '{other}'"));
                }
                other => name = Some(other.to_owned()),
            }
        }
        let Some(name) = name else {
            return usage("Missing expected argument '<name>'".into());
        };
        let mode = if internal && !self.has(&Bug::InternalIgnored) {
            "hostOnly"
        } else {
            "nat"
        };
        self.with(|s| {
            if s.networks.contains_key(&name) {
                return failure(format!("network {name} already exists"));
            }
            s.networks
                .insert(name, (mode.to_owned(), serde_json::Value::Object(labels)));
            out(0, "", "")
        })
    }

    fn create(&self, args: &[&str], env: &[(String, String)], run: bool) -> CliOutput {
        let mut name = None;
        let mut labels = serde_json::Map::new();
        let mut networks: Vec<String> = Vec::new();
        let mut mounts: Vec<serde_json::Value> = Vec::new();
        let mut env_out: Vec<String> = Vec::new();
        let (mut cpus, mut memory) = (4u64, 1u64 << 30);
        let (mut uid, mut gid) = (0u32, 0u32);
        let mut workdir = String::from("/");
        let mut detach = false;
        let mut read_only = false;
        let mut cap_drop: Vec<String> = Vec::new();
        let mut tmpfs: Vec<String> = Vec::new();
        let mut rest: Vec<String> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let flag = *a;
            if !flag.starts_with('-') {
                rest.push(flag.to_owned());
                rest.extend(it.by_ref().map(|s| (*s).to_owned()));
                break;
            }
            match flag {
                "--detach" | "-d" => detach = true,
                "--no-dns" | "--interactive" | "-i" | "--tty" | "-t" | "--rm" => {}
                "--read-only" => read_only = true,
                "--name" | "--label" | "--network" | "--uid" | "--gid" | "--mount" | "--env"
                | "-e" | "--cpus" | "-c" | "--memory" | "-m" | "--workdir" | "-w"
                | "--cap-drop" | "--tmpfs" => {
                    let Some(v) = it.next() else {
                        return usage(format!("Missing value for '{flag}'"));
                    };
                    let v = (*v).to_owned();
                    match flag {
                        "--name" => name = Some(v),
                        "--cap-drop" => cap_drop.push(v),
                        "--tmpfs" => tmpfs.push(v),
                        "--label" => {
                            if let Some((k, val)) = v.split_once('=') {
                                labels.insert(k.into(), val.into());
                            }
                        }
                        "--network" => networks.push(v),
                        "--uid" | "--gid" => match v.parse() {
                            Ok(n) if flag == "--uid" => uid = n,
                            Ok(n) => gid = n,
                            Err(_) => return usage(format!("invalid value '{v}' for '{flag}'")),
                        },
                        "--mount" => {
                            let mut source = None;
                            let mut target = None;
                            let mut ro = false;
                            for part in v.split(',') {
                                match part.split_once('=') {
                                    Some(("type", "bind")) => {}
                                    Some(("source", p)) => source = Some(p.to_owned()),
                                    Some(("target", p)) => target = Some(p.to_owned()),
                                    None if part == "readonly" => ro = true,
                                    _ => return failure(format!("invalid mount '{v}'")),
                                }
                            }
                            let (Some(source), Some(target)) = (source, target) else {
                                return failure(format!("invalid mount '{v}'"));
                            };
                            if self.has(&Bug::DropsReadOnly) {
                                ro = false;
                            }
                            let options: Vec<&str> = if ro { vec!["ro"] } else { vec![] };
                            mounts.push(serde_json::json!({"type": {"virtiofs": {}}, "source": source, "destination": target, "options": options}));
                        }
                        "--env" | "-e" => {
                            if let Some((k, _)) = v.split_once('=') {
                                env_out.push(v.clone());
                                let _ = k;
                            } else if let Some((_, value)) = env.iter().find(|(k, _)| *k == v) {
                                self.with(|s| s.env_given.insert(v.clone()));
                                env_out.push(format!("{v}={value}"));
                            }
                        }
                        "--cpus" | "-c" => match v.parse() {
                            Ok(n) => cpus = n,
                            Err(_) => return usage(format!("invalid value '{v}' for '--cpus'")),
                        },
                        "--memory" | "-m" => match parse_memory(&v) {
                            Some(n) => memory = n,
                            None => return usage(format!("invalid value '{v}' for '--memory'")),
                        },
                        _ => workdir = v,
                    }
                }
                other => return usage(format!("Unknown option '{other}'")),
            }
        }
        if rest.is_empty() {
            return usage("Missing expected argument '<image>'".into());
        }
        let Some(name) = name else {
            return usage("a --name is required by bot-bottle's fake".into());
        };
        if networks.is_empty() {
            networks.push("default".into());
        }
        if self.has(&Bug::AddsDefaultNetwork) && !networks.iter().any(|n| n == "default") {
            networks.push("default".into());
        }
        let missing = self.with(|s| {
            networks
                .iter()
                .find(|n| *n != "default" && !s.networks.contains_key(*n))
                .cloned()
        });
        if let Some(n) = missing {
            return failure(format!("network {n} not found"));
        }
        for t in &tmpfs {
            mounts.push(serde_json::json!({"type": {"tmpfs": {}}, "source": "", "destination": t, "options": []}));
        }
        let config = serde_json::json!({
            "id": name, "image": {"reference": rest[0]}, "mounts": mounts,
            "publishedPorts": [], "publishedSockets": [], "labels": labels,
            "networks": networks.iter().map(|n| serde_json::json!({"network": n, "options": {"hostname": name}})).collect::<Vec<_>>(),
            "rosetta": false, "ssh": false, "virtualization": false, "readOnly": read_only,
            "capDrop": cap_drop, "capAdd": [],
            "resources": {"cpus": cpus, "memoryInBytes": memory},
            "initProcess": {"executable": rest.get(1), "arguments": rest.get(2..).unwrap_or_default(), "environment": env_out, "workingDirectory": workdir, "user": {"id": {"uid": uid, "gid": gid}}},
        });
        let ready = !self.has(&Bug::SidecarNeverReady);
        self.with(|s| {
            if s.containers.contains_key(&name) {
                return failure(format!("container {name} already exists"));
            }
            let mut addresses = BTreeMap::new();
            for n in &networks {
                addresses.insert(n.clone(), format!("192.168.64.{}", s.next_ip));
                s.next_ip = s.next_ip.wrapping_add(1);
            }
            let logs = if run && ready {
                "ready\n".to_owned()
            } else {
                String::new()
            };
            s.containers.insert(
                name.clone(),
                Ctr {
                    config,
                    running: run,
                    logs,
                    addresses,
                },
            );
            let _ = detach;
            out(0, format!("{name}\n"), "")
        })
    }
}

impl ContainerCli for FakeContainer {
    fn run(&self, args: &[String], env: &[(String, String)]) -> Result<CliOutput, BackendError> {
        self.with(|s| s.calls.push(args.join(" ")));
        Ok(self.dispatch(args, env))
    }

    fn spawn(
        &self,
        args: &[String],
        _stdio: BottleStdio,
    ) -> Result<Box<dyn CliChild>, BackendError> {
        self.with(|s| s.calls.push(args.join(" ")));
        let w: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(name) = w.last().copied() else {
            return Ok(Box::new(FakeChild(64)));
        };
        if w.first() != Some(&"start") {
            return Ok(Box::new(FakeChild(64)));
        }
        if let Some(_m) = self.with(|s| s.fail.get("start").cloned()) {
            return Ok(Box::new(FakeChild(1)));
        }
        let code = self.with(|s| match s.containers.get_mut(name) {
            Some(c) => {
                c.running = true;
                s.exit_code
            }
            None => 1,
        });
        Ok(Box::new(FakeChild(code)))
    }
}

struct FakeChild(i32);

impl CliChild for FakeChild {
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        Some(Box::new(std::io::sink()))
    }
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        Some(Box::new(std::io::empty()))
    }
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        Some(Box::new(std::io::empty()))
    }
    fn wait(&mut self) -> Result<i32, BackendError> {
        Ok(self.0)
    }
    fn kill(&mut self) -> Result<(), BackendError> {
        self.0 = 137;
        Ok(())
    }
}
