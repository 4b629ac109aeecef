//! A `smolvm` that behaves like the real CLI, for tests of the fail-closed paths: it parses
//! `machine create/start/exec/stop/delete/ls` and `--version` as smolvm's clap definitions do
//! (unknown flags and bad values are usage errors, exit 2), persists each machine as smolvm
//! does — a JSON `VmRecord` in the `vms` table of a real SQLite state database, read back by
//! the real [`StateDb`] — and reproduces smolvm's known bugs and runtime behaviour:
//!
//! * smolvm 0.8.x drops `--allow-cidr` when combined with `--from` (automatic for that
//!   version), and versions before 1.6.10 have no `--mount-socket`;
//! * TSI's CIDR filter does not enforce: [`FakeSmolvm::guest_reaches`] answers `true` for any
//!   address from a TSI machine with a network, whatever its allow list (smolvm's own
//!   `network/launch.rs`); the virtio-net gateway enforces its list;
//! * [`Bug`]s a version could have: a flag silently not persisted, a default network, a lost
//!   row, no database, a row that is not JSON;
//! * scripted failures of any subcommand and the exit code of the agent's exec.
//!
//! Every call is recorded as one line (`machine create --name …`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::cli::{CliChild, CliOutput, SmolvmCli, StateDb};
use crate::{BackendError, BottleStdio};

/// A fault of a smolvm version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bug {
    /// `:ro` on `--volume` is not persisted (the mount becomes writable).
    DropsReadOnly,
    /// `--mount-socket` is accepted but not persisted.
    DropsMountSocket,
    /// Every machine is persisted with a network (`network: true`, TSI), asked or not.
    DefaultNetwork,
    /// `create` succeeds but writes no row.
    LosesRow,
    /// The state database is somewhere else (bot-bottle finds no file).
    NoDatabase,
    /// The row's data is not JSON.
    GarbageRow,
    /// The record has a field this bot-bottle does not know, with this name and value.
    ExtraField(String, serde_json::Value),
}

/// What the fake answers and what it was asked.
#[derive(Debug)]
pub struct FakeState {
    pub version: (u32, u32, u32),
    pub bugs: Vec<Bug>,
    /// Subcommands (`create`, `start`, `exec`, `stop`, `delete`, `ls`) that fail with this
    /// message on stderr (exit 1).
    pub fail: BTreeMap<String, String>,
    /// The exit code of the agent's `machine exec`.
    pub exec_code: i32,
    /// Whether `--volume` host paths must be existing directories (smolvm's virtiofs check).
    pub check_host_paths: bool,
    /// Every call, in order.
    pub calls: Vec<String>,
    pub running: BTreeSet<String>,
}

/// The fake; clones share one state and one database.
#[derive(Clone)]
pub struct FakeSmolvm {
    pub state: Arc<Mutex<FakeState>>,
    db: StateDb,
    sqlite3: PathBuf,
}

impl std::fmt::Debug for FakeSmolvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSmolvm").field("db", &self.db).finish()
    }
}

/// smolvm's schema of the table the backend reads (its `db.rs`).
const SCHEMA: &str = "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL);";

fn usage(message: String) -> CliOutput {
    CliOutput {
        status: 2,
        stdout: String::new(),
        stderr: format!("error: {message}\n\nFor more information, try '--help'.\n"),
    }
}

fn failure(message: impl Into<String>) -> CliOutput {
    CliOutput {
        status: 1,
        stdout: String::new(),
        stderr: format!("Error: {}\n", message.into()),
    }
}

fn success(stdout: impl Into<String>) -> CliOutput {
    CliOutput {
        status: 0,
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

impl FakeSmolvm {
    /// A smolvm of `version` whose state database is `<dir>/smolvm.db` (created with smolvm's
    /// schema through `sqlite3`, which must be on `PATH` or given as `sqlite3`).
    pub fn new(dir: &Path, version: (u32, u32, u32), sqlite3: &Path) -> Result<FakeSmolvm, String> {
        let path = dir.join("smolvm.db");
        let fake = FakeSmolvm {
            state: Arc::new(Mutex::new(FakeState {
                version,
                bugs: Vec::new(),
                fail: BTreeMap::new(),
                exec_code: 0,
                check_host_paths: true,
                calls: Vec::new(),
                running: BTreeSet::new(),
            })),
            db: StateDb::new(&path, sqlite3),
            sqlite3: sqlite3.to_path_buf(),
        };
        fake.sql(SCHEMA)?;
        Ok(fake)
    }

    /// Runs `f` on the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db.path
    }

    fn has_bug(&self, bug: &Bug) -> bool {
        self.with(|s| s.bugs.contains(bug))
    }

    fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(&self.sqlite3)
            .arg("-batch")
            .arg("-bail")
            .arg(&self.db.path)
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.sqlite3.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes a record as smolvm does (`INSERT … ON CONFLICT DO UPDATE`, data as a BLOB).
    pub fn put_record(&self, name: &str, data: &[u8]) -> Result<(), String> {
        self.sql(&format!(
            "INSERT INTO vms (name, data) VALUES ('{name}', X'{}') ON CONFLICT(name) DO UPDATE SET data = excluded.data;",
            hex::encode(data)
        ))
        .map(drop)
    }

    fn record(&self, name: &str) -> Option<serde_json::Value> {
        self.db.machine_record(name).ok().flatten()
    }

    fn names(&self) -> Vec<String> {
        self.sql("SELECT name FROM vms ORDER BY name;")
            .map(|out| out.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Whether a process in the running machine could open a connection to `ip` on the host
    /// side, as smolvm's network paths behave: no network device reaches nothing; TSI reaches
    /// everything (its CIDR filter does not enforce); virtio-net reaches its allow list (or
    /// everything without one).
    pub fn guest_reaches(&self, machine: &str, ip: IpAddr) -> bool {
        if !self.with(|s| s.running.contains(machine)) {
            return false;
        }
        let Some(r) = self.record(machine) else {
            return false;
        };
        let cidrs: Vec<String> = r["allowed_cidrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let ports = r["ports"].as_array().is_some_and(|p| !p.is_empty());
        let wants = r["network"].as_bool().unwrap_or(false) || ports || !cidrs.is_empty();
        if !wants {
            return false;
        }
        let backend = r["network_backend"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if ports || !cidrs.is_empty() {
                    "virtio-net".into()
                } else {
                    "tsi".into()
                }
            });
        if backend == "tsi" || cidrs.is_empty() {
            return true;
        }
        cidrs.iter().any(|c| cidr_contains(c, ip))
    }

    /// The socket bridges of a machine: (host socket, guest path).
    pub fn bridges(&self, machine: &str) -> Vec<(PathBuf, PathBuf)> {
        self.record(machine)
            .and_then(|r| r["published_sockets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|s| s["direction"] == "mount")
            .filter_map(|s| {
                Some((
                    PathBuf::from(s["host_path"].as_str()?),
                    PathBuf::from(s["guest_path"].as_str()?),
                ))
            })
            .collect()
    }

    fn dispatch(&self, args: &[String]) -> CliOutput {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["--version"] | ["-V"] => {
                let (a, b, c) = self.with(|s| s.version);
                success(format!("smolvm {a}.{b}.{c}\n"))
            }
            ["machine" | "vm", sub, rest @ ..] => {
                if let Some(message) = self.with(|s| s.fail.get(*sub).cloned()) {
                    return failure(message);
                }
                match *sub {
                    "create" => self.create(rest),
                    "start" => self.start(rest),
                    "stop" => self.stop(rest),
                    "delete" | "rm" => self.delete(rest),
                    "ls" | "list" => self.ls(rest),
                    other => usage(format!("unrecognized subcommand '{other}'")),
                }
            }
            _ => usage(format!("unrecognized arguments {words:?}")),
        }
    }

    fn create(&self, args: &[&str]) -> CliOutput {
        let version = self.with(|s| s.version);
        let mut name = None;
        let (mut cpus, mut mem) = (4u8, 8192u32);
        let (mut image, mut from) = (None::<String>, None::<String>);
        let mut volumes: Vec<(String, String, bool)> = Vec::new();
        let mut sockets: Vec<serde_json::Value> = Vec::new();
        let mut labels = serde_json::Map::new();
        let mut env: Vec<(String, String)> = Vec::new();
        let (mut net, mut outbound_localhost_only) = (false, false);
        let mut net_backend: Option<String> = None;
        let mut allow_cidr: Vec<String> = Vec::new();
        let mut ports: Vec<(u16, u16)> = Vec::new();
        let mut workdir = None::<String>;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let flag = *arg;
            let takes_value = matches!(
                flag,
                "--name"
                    | "-n"
                    | "--label"
                    | "--cpus"
                    | "--mem"
                    | "--image"
                    | "-I"
                    | "--from"
                    | "--volume"
                    | "-v"
                    | "--mount-socket"
                    | "--net-backend"
                    | "--allow-cidr"
                    | "--env"
                    | "-e"
                    | "--workdir"
                    | "-w"
                    | "--port"
                    | "-p"
            );
            let boolean = matches!(flag, "--net" | "--outbound-localhost-only");
            if flag == "--" {
                break;
            }
            if flag == "--mount-socket" && version < (1, 6, 10) {
                return usage(format!("unexpected argument '{flag}' found"));
            }
            if boolean {
                match flag {
                    "--net" => net = true,
                    _ => outbound_localhost_only = true,
                }
                continue;
            }
            if !takes_value {
                return usage(format!("unexpected argument '{flag}' found"));
            }
            let Some(value) = it.next() else {
                return usage(format!(
                    "a value is required for '{flag}' but none was supplied"
                ));
            };
            let value = (*value).to_owned();
            match flag {
                "--name" | "-n" => name = Some(value),
                "--label" => match value.split_once('=') {
                    Some((k, v)) => {
                        labels.insert(k.into(), v.into());
                    }
                    None => return failure(format!("invalid label '{value}': expected KEY=VALUE")),
                },
                "--cpus" => match value.parse() {
                    Ok(n) => cpus = n,
                    Err(_) => {
                        return usage(format!(
                            "invalid value '{value}' for '--cpus <N>': number too large to fit in target type"
                        ));
                    }
                },
                "--mem" => match value.parse() {
                    Ok(n) => mem = n,
                    Err(_) => return usage(format!("invalid value '{value}' for '--mem <MiB>'")),
                },
                "--image" | "-I" => image = Some(value),
                "--from" => from = Some(value),
                "--volume" | "-v" => {
                    let (spec, ro) = match value.strip_suffix(":ro") {
                        Some(spec) => (spec.to_owned(), true),
                        None => (value.clone(), false),
                    };
                    let Some((host, guest)) = spec.split_once(':') else {
                        return failure(format!(
                            "invalid volume '{value}': expected HOST:GUEST[:ro]"
                        ));
                    };
                    if self.with(|s| s.check_host_paths) && !Path::new(host).is_dir() {
                        return failure(format!(
                            "source path on host must be a directory (virtiofs limitation): {host}"
                        ));
                    }
                    volumes.push((host.into(), guest.into(), ro));
                }
                "--mount-socket" => {
                    let Some((host, guest)) = value.split_once(':') else {
                        return failure(format!(
                            "mount-socket: expected HOST_PATH:GUEST_PATH, got '{value}'"
                        ));
                    };
                    if !guest.starts_with('/') {
                        return failure(format!(
                            "publish-socket: guest path '{guest}' must be absolute"
                        ));
                    }
                    sockets.push(serde_json::json!({
                        "direction": "mount", "guest_path": guest, "host_path": host,
                    }));
                }
                "--net-backend" => match value.as_str() {
                    "tsi" | "virtio-net" => net_backend = Some(value),
                    _ => {
                        return usage(format!(
                            "invalid value '{value}' for '--net-backend <NET_BACKEND>'"
                        ));
                    }
                },
                "--allow-cidr" => allow_cidr.push(value),
                "--env" | "-e" => {
                    let (k, v) = value.split_once('=').unwrap_or((value.as_str(), ""));
                    env.push((k.into(), v.into()));
                }
                "--workdir" | "-w" => workdir = Some(value),
                "--port" | "-p" => {
                    let parsed = value
                        .split_once(':')
                        .and_then(|(h, g)| Some((h.parse().ok()?, g.parse().ok()?)));
                    match parsed {
                        Some(p) => ports.push(p),
                        None => return usage(format!("invalid value '{value}' for '--port'")),
                    }
                }
                _ => return usage(format!("unexpected argument '{flag}' found")),
            }
        }
        if image.is_some() && from.is_some() {
            return usage(
                "the argument '--from <PATH>' cannot be used with '--image <IMAGE>'".into(),
            );
        }
        let name = name.unwrap_or_else(|| "default".into());
        if self.record(&name).is_some() {
            return failure(format!("machine '{name}' already exists"));
        }
        // smolvm's resolve_egress_flags.
        if outbound_localhost_only {
            allow_cidr.push("127.0.0.0/8".into());
            allow_cidr.push("::1/128".into());
        }
        let mut network = net || !allow_cidr.is_empty();
        // smolvm 0.8.x: `--allow-cidr` silently dropped with `--from`.
        if from.is_some() && version.0 == 0 && version.1 == 8 {
            allow_cidr.clear();
        }
        if self.has_bug(&Bug::DropsReadOnly) {
            for v in &mut volumes {
                v.2 = false;
            }
        }
        if self.has_bug(&Bug::DropsMountSocket) {
            sockets.clear();
        }
        if self.has_bug(&Bug::DefaultNetwork) {
            network = true;
            net_backend.get_or_insert_with(|| "tsi".into());
        }
        let mut record = serde_json::json!({
            "name": name, "created_at": 1_700_000_000u64, "state": "created", "pid": null,
            "pid_start_time": null, "cpus": cpus, "mem": mem, "mounts": volumes, "ports": ports,
            "published_sockets": sockets, "network": network, "gpu": null, "gpu_vram_mib": null,
            "rosetta": null, "restart": {"policy": "never", "max_retries": 0}, "last_exit_code": null,
            "init": [], "init_completed": false, "remote_volumes": [], "env": env,
            "workdir": workdir, "storage_gb": null, "overlay_gb": null,
            "allowed_cidrs": if allow_cidr.is_empty() { serde_json::Value::Null } else { serde_json::json!(allow_cidr) },
            "image": image.map(|i| format!("local:{}", hex::encode(&i.as_bytes()[..i.len().min(6)]))),
            "source_smolmachine": from, "entrypoint": [], "cmd": [], "labels": labels,
            "ssh_agent": false, "docker_socket": false, "dns_filter_hosts": null, "ephemeral": false,
        });
        if let Some(b) = net_backend {
            record["network_backend"] = serde_json::json!(b);
        }
        for bug in self.with(|s| s.bugs.clone()) {
            if let Bug::ExtraField(k, v) = bug {
                record[k.as_str()] = v;
            }
        }
        if self.has_bug(&Bug::LosesRow) {
            return success(format!("Created machine: {name}\n"));
        }
        let data = if self.has_bug(&Bug::GarbageRow) {
            b"\x00not json".to_vec()
        } else {
            record.to_string().into_bytes()
        };
        if let Err(e) = self.put_record(&name, &data) {
            return failure(format!("database error: {e}"));
        }
        if self.has_bug(&Bug::NoDatabase) {
            let _ = std::fs::remove_file(&self.db.path);
        }
        success(format!("Created machine: {name}\n"))
    }

    fn name_arg(args: &[&str]) -> Result<String, CliOutput> {
        let mut it = args.iter();
        let mut name = None;
        while let Some(a) = it.next() {
            match *a {
                "--name" | "-n" => name = it.next().map(|v| (*v).to_owned()),
                "--force" | "-f" | "--json" => {}
                other => return Err(usage(format!("unexpected argument '{other}' found"))),
            }
        }
        Ok(name.unwrap_or_else(|| "default".into()))
    }

    fn start(&self, args: &[&str]) -> CliOutput {
        let name = match Self::name_arg(args) {
            Ok(n) => n,
            Err(out) => return out,
        };
        if self.record(&name).is_none() {
            return failure(format!("machine '{name}' not found"));
        }
        self.with(|s| s.running.insert(name.clone()));
        success(format!("Started machine: {name}\n"))
    }

    fn stop(&self, args: &[&str]) -> CliOutput {
        let name = match Self::name_arg(args) {
            Ok(n) => n,
            Err(out) => return out,
        };
        if self.record(&name).is_none() {
            return failure(format!("machine '{name}' not found"));
        }
        if self.with(|s| s.running.remove(&name)) {
            success(format!("Stopped machine: {name}\n"))
        } else {
            success(format!("Machine '{name}' is not running\n"))
        }
    }

    fn delete(&self, args: &[&str]) -> CliOutput {
        let name = match Self::name_arg(args) {
            Ok(n) => n,
            Err(out) => return out,
        };
        if self.record(&name).is_none() {
            return failure(format!("machine '{name}' not found"));
        }
        self.with(|s| s.running.remove(&name));
        match self.sql(&format!("DELETE FROM vms WHERE name = '{name}';")) {
            Ok(_) => success(format!("Deleted machine: {name}\n")),
            Err(e) => failure(format!("database error: {e}")),
        }
    }

    fn ls(&self, args: &[&str]) -> CliOutput {
        if args != ["--json"] {
            return usage(format!("unexpected arguments {args:?}"));
        }
        let running = self.with(|s| s.running.clone());
        let list: Vec<serde_json::Value> = self
            .names()
            .into_iter()
            .filter_map(|n| {
                let r = self.record(&n)?;
                Some(serde_json::json!({
                    "name": n,
                    "state": if running.contains(&n) { "running" } else { "stopped" },
                    "cpus": r["cpus"], "memory_mib": r["mem"], "created_at": r["created_at"],
                    "labels": r["labels"], "network": r["network"],
                }))
            })
            .collect();
        success(serde_json::Value::Array(list).to_string())
    }
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (addr, len) = match cidr.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (cidr, None),
    };
    match (addr.parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(net)), IpAddr::V4(ip)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (Ok(IpAddr::V6(net)), IpAddr::V6(ip)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

impl SmolvmCli for FakeSmolvm {
    fn run(&self, args: &[String]) -> Result<CliOutput, BackendError> {
        self.with(|s| s.calls.push(args.join(" ")));
        Ok(self.dispatch(args))
    }

    fn spawn(
        &self,
        args: &[String],
        _stdio: BottleStdio,
    ) -> Result<Box<dyn CliChild>, BackendError> {
        self.with(|s| s.calls.push(args.join(" ")));
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let ["machine", "exec", "--name", name, ..] = words.as_slice() else {
            return Ok(Box::new(FakeChild::exited(2, "error: usage")));
        };
        if !words.contains(&"--") {
            return Ok(Box::new(FakeChild::exited(
                2,
                "error: a command is required",
            )));
        }
        if let Some(message) = self.with(|s| s.fail.get("exec").cloned()) {
            return Ok(Box::new(FakeChild::exited(1, &message)));
        }
        if self.record(name).is_none() {
            return Ok(Box::new(FakeChild::exited(
                1,
                &format!("machine '{name}' not found"),
            )));
        }
        // `exec` starts a stopped machine, as smolvm's ensure_running_and_connect does.
        self.with(|s| s.running.insert((*name).to_owned()));
        let code = self.with(|s| s.exec_code);
        Ok(Box::new(FakeChild::exited(code, "")))
    }

    fn machine_record(&self, machine: &str) -> Result<Option<serde_json::Value>, BackendError> {
        self.db.machine_record(machine)
    }
}

/// The fake agent: already finished with its code; `kill` makes it 137.
struct FakeChild {
    code: i32,
    stderr: Option<Vec<u8>>,
}

impl FakeChild {
    fn exited(code: i32, stderr: &str) -> FakeChild {
        FakeChild {
            code,
            stderr: Some(stderr.as_bytes().to_vec()),
        }
    }
}

impl CliChild for FakeChild {
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        Some(Box::new(std::io::sink()))
    }
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        Some(Box::new(std::io::empty()))
    }
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.stderr
            .take()
            .map(|b| Box::new(std::io::Cursor::new(b)) as _)
    }
    fn wait(&mut self) -> Result<i32, BackendError> {
        Ok(self.code)
    }
    fn kill(&mut self) -> Result<(), BackendError> {
        self.code = 137;
        Ok(())
    }
}
