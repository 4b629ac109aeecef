//! The smolmachines backend against a fake `smolvm` that behaves like the real CLI (its
//! argument parsing, its state database — a real SQLite file read back through the real
//! `sqlite3` reader —, its known bugs and failures). No smolvm can be installed on the
//! project's machines, so these tests are what proves the driver; what they cannot prove (the
//! real smolvm's behaviour) is listed in the README.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::smolvm::fake::{Bug, FakeSmolvm};
use backend::smolvm::{SmolImage, SmolvmBackend, SmolvmCli, SmolvmConfig};
use backend::{
    Backend, BackendError, BottleStdio, Forward, Home, LaunchSpec, ReadOnlyFile, Workspace,
    WorkspaceMode,
};

pub struct Smol {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub fake: FakeSmolvm,
    pub backend: SmolvmBackend,
}

/// The `sqlite3` shell, or `None` with the reason printed (the fake's database needs it).
pub fn sqlite3() -> Option<PathBuf> {
    let found = backend::preflight::find_in_path("sqlite3");
    if found.is_none() {
        eprintln!(
            "skipped: sqlite3 is not installed (apt-get install sqlite3); the fake smolvm keeps its state database with it"
        );
    }
    found
}

impl Smol {
    pub fn new(version: (u32, u32, u32)) -> Option<Smol> {
        let sqlite3 = sqlite3()?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for d in [
            "home",
            "project",
            "agent-home",
            "state/ca",
            "smolvm",
            "linux",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(
            root.join("state/ca/bundle.pem"),
            "-----BEGIN CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(root.join("linux/bot-bottle"), "#!/bin/false\n").unwrap();
        let fake = FakeSmolvm::new(&root.join("smolvm"), version, &sqlite3).unwrap();
        let backend = SmolvmBackend::new(
            SmolvmConfig {
                bot_bottle_home: root.join("home"),
                guest_exe: Some(root.join("linux/bot-bottle")),
                image: Some(SmolImage::Image(
                    root.join("agent.tar").display().to_string(),
                )),
            },
            Arc::new(fake.clone()),
        );
        Some(Smol {
            _dir: dir,
            root,
            fake,
            backend,
        })
    }

    pub fn spec(&self) -> LaunchSpec {
        spec(&self.root)
    }
}

/// The launch spec of the contract tests: one sidecar, one read-only file.
pub fn spec(root: &Path) -> LaunchSpec {
    LaunchSpec {
        identity: "demo-1a2b3".into(),
        argv: vec!["claude".into(), "--print".into()],
        env: [
            ("HOME", "/home/agent"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HTTPS_PROXY", "http://127.0.0.1:3128"),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        workspace: Workspace {
            host: root.join("project"),
            inside: "/workspace".into(),
            mode: WorkspaceMode::Mount,
        },
        home: Home {
            host: root.join("agent-home"),
            inside: "/home/agent".into(),
        },
        files: vec![ReadOnlyFile {
            host: root.join("state/ca/bundle.pem"),
            inside: "/etc/ssl/certs/ca-certificates.crt".into(),
        }],
        forwards: vec![Forward {
            inside_port: 3128,
            host_unix_socket: root.join("state/egress.sock"),
        }],
        interactive: false,
        resources: backend::Resources::default(),
        dangerously_run_as_host_root: false,
    }
}

fn subcommands(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_bottle_runs_in_a_machine_without_network_and_the_machine_is_gone_after() {
    let Some(s) = Smol::new((1, 9, 2)) else {
        return;
    };
    s.fake.with(|f| f.exec_code = 7);
    let spec = s.spec();
    let mut bottle = s.backend.launch(&spec, BottleStdio::piped()).unwrap();
    let machine = "bb-demo-1a2b3";
    // While it runs: no address of the host is reachable, the sidecar socket is bridged.
    for ip in ["127.0.0.1", "127.0.0.16", "10.0.0.1", "8.8.8.8", "::1"] {
        assert!(
            !s.fake.guest_reaches(machine, ip.parse::<IpAddr>().unwrap()),
            "{ip}"
        );
    }
    assert_eq!(
        s.fake.bridges(machine),
        vec![(
            s.root.join("state/egress.sock"),
            PathBuf::from("/run/bot-bottle/sidecars/3128.sock")
        )]
    );
    let record = s.fake.machine_record(machine).unwrap().unwrap();
    assert_eq!(record["network"], false);
    assert_eq!(record["cpus"], 2);
    assert_eq!(record["mem"], 4096);
    assert_eq!(bottle.wait().unwrap().code, 7);
    assert_eq!(
        subcommands(&s.fake.calls()),
        [
            "--version",
            "machine create",
            "machine start",
            "machine exec",
            "machine stop",
            "machine delete"
        ]
    );
    assert!(s.fake.machine_record(machine).unwrap().is_none(), "deleted");
    let create = &s.fake.calls()[1];
    for flag in [
        "--net",
        "--allow-cidr",
        "--port",
        "--network",
        "--dns",
        "--ssh-agent",
    ] {
        assert!(
            !create.split_whitespace().any(|w| w == flag),
            "{flag} in {create}"
        );
    }
    // The staged read-only file is a copy in its own read-only directory.
    let staged = s.root.join("home/run/smolvm/demo-1a2b3");
    assert!(
        !staged.exists(),
        "runtime directory removed after the bottle"
    );
}

#[test]
fn what_smolvm_persisted_is_confirmed_before_start_and_any_deviation_refuses() {
    let cases = [
        (Bug::DropsReadOnly, "mounts"),
        (Bug::DropsMountSocket, "socket bridges"),
        (Bug::DefaultNetwork, "`network` = true"),
        (Bug::LosesRow, "no row"),
        (Bug::NoDatabase, "no such file"),
        (Bug::GarbageRow, "not JSON"),
        (
            Bug::ExtraField(
                "egress_proxy".into(),
                serde_json::json!("http://10.0.0.1:3128"),
            ),
            "egress_proxy",
        ),
        (
            Bug::ExtraField("allowed_cidrs".into(), serde_json::json!(["0.0.0.0/0"])),
            "allowed_cidrs",
        ),
    ];
    for (bug, expect) in cases {
        let Some(s) = Smol::new((1, 9, 2)) else {
            return;
        };
        s.fake.with(|f| f.bugs.push(bug.clone()));
        let err = s
            .backend
            .launch(&s.spec(), BottleStdio::piped())
            .err()
            .unwrap_or_else(|| panic!("{bug:?} launched"));
        let text = err.to_string();
        assert!(text.contains(expect), "{bug:?}: {text}");
        assert!(text.contains("refus"), "{bug:?}: {text}");
        let calls = subcommands(&s.fake.calls());
        assert!(
            !calls
                .iter()
                .any(|c| c == "machine start" || c == "machine exec"),
            "{bug:?}: {calls:?}"
        );
        if !matches!(bug, Bug::LosesRow | Bug::NoDatabase) {
            assert_eq!(
                calls.last().map(String::as_str),
                Some("machine delete"),
                "{bug:?}"
            );
        }
        assert!(
            s.fake
                .machine_record("bb-demo-1a2b3")
                .map(|r| r.is_none())
                .unwrap_or(true),
            "{bug:?}: the machine is left"
        );
    }
}

#[test]
fn an_old_or_unreadable_smolvm_is_refused_before_anything_is_created() {
    for version in [(0, 8, 0), (1, 6, 10)] {
        let Some(s) = Smol::new(version) else { return };
        let err = s
            .backend
            .launch(&s.spec(), BottleStdio::piped())
            .err()
            .unwrap();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("too old"), "{err}");
        assert!(
            err.to_string().contains("smolmachines.com/install.sh"),
            "{err}"
        );
        assert_eq!(s.fake.calls(), ["--version"]);
    }
}

#[test]
fn a_failing_smolvm_command_deletes_the_machine_and_says_why() {
    for sub in ["create", "start"] {
        let Some(s) = Smol::new((1, 9, 2)) else {
            return;
        };
        s.fake.with(|f| {
            f.fail.insert(
                sub.into(),
                "libkrun: failed to create VM: KVM_CREATE_VM".into(),
            )
        });
        let err = s
            .backend
            .launch(&s.spec(), BottleStdio::piped())
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains(&format!("smolvm machine {sub}")), "{text}");
        assert!(text.contains("KVM_CREATE_VM"), "{text}");
        let calls = subcommands(&s.fake.calls());
        assert!(!calls.contains(&"machine exec".to_owned()), "{calls:?}");
        assert_eq!(
            calls.last().map(String::as_str),
            Some("machine delete"),
            "{calls:?}"
        );
    }
}

#[test]
fn a_spec_smolvm_cannot_carry_is_refused_with_the_reason() {
    let Some(s) = Smol::new((1, 9, 2)) else {
        return;
    };
    let mut spec = s.spec();
    spec.workspace.host = s.root.join("pro:ject");
    let err = s.backend.launch(&spec, BottleStdio::piped()).err().unwrap();
    assert!(err.to_string().contains("contains `:`"), "{err}");
    let mut spec = s.spec();
    spec.dangerously_run_as_host_root = true;
    let err = s.backend.launch(&spec, BottleStdio::piped()).err().unwrap();
    assert!(
        err.to_string().contains("dangerously_run_as_host_root"),
        "{err}"
    );
    assert!(s.fake.calls().is_empty(), "{:?}", s.fake.calls());
}

#[test]
fn list_stop_and_cleanup_see_only_bot_bottle_machines() {
    let Some(s) = Smol::new((1, 9, 2)) else {
        return;
    };
    // Someone else's machine, which bot-bottle must never touch.
    s.fake
        .run(&["machine", "create", "--name", "users-vm"].map(String::from))
        .unwrap();
    // And stopped machines of the user's named like bot-bottle's: one without the identity
    // label bot-bottle gives its machines, one labelled for another identity. The name alone
    // never makes a machine bot-bottle's.
    s.fake
        .run(&["machine", "create", "--name", "bb-mine"].map(String::from))
        .unwrap();
    s.fake
        .run(
            &[
                "machine",
                "create",
                "--name",
                "bb-lent",
                "--label",
                "bot-bottle=other-00000",
            ]
            .map(String::from),
        )
        .unwrap();
    let mut bottle = s.backend.launch(&s.spec(), BottleStdio::piped()).unwrap();
    let listed = s.backend.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].identity, "demo-1a2b3");
    assert!(listed[0].running);
    assert!(
        s.backend
            .stop("demo-1a2b3", std::time::Duration::from_secs(1))
            .unwrap()
    );
    for not_ours in ["other-00000", "mine", "lent"] {
        assert!(
            !s.backend
                .stop(not_ours, std::time::Duration::from_secs(1))
                .unwrap(),
            "{not_ours}"
        );
    }
    // A launcher that died leaves a stopped machine: cleanup deletes it.
    std::mem::forget(bottle.take_stdin());
    let cleaned = s.backend.cleanup(false).unwrap();
    assert!(
        cleaned.iter().any(|a| matches!(a, backend::CleanupAction::RemovedContainer { name } if name == "bb-demo-1a2b3")),
        "{cleaned:?}"
    );
    for theirs in ["users-vm", "bb-mine", "bb-lent"] {
        assert!(
            s.fake.machine_record(theirs).unwrap().is_some(),
            "{theirs} is left alone"
        );
    }
    assert!(
        !cleaned.iter().any(|a| matches!(a, backend::CleanupAction::RemovedContainer { name } if name != "bb-demo-1a2b3")),
        "{cleaned:?}"
    );
    drop(bottle);
}

#[test]
fn why_no_smolvm_network_path_is_used() {
    // The facts the backend's design rests on, as the fake reproduces them from smolvm's code:
    let Some(s) = Smol::new((1, 9, 2)) else {
        return;
    };
    let run = |args: &[&str]| {
        let out = s
            .fake
            .run(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .unwrap();
        assert!(out.ok(), "{args:?}: {}", out.stderr);
    };
    let host_loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let bottle_alias: IpAddr = "127.0.0.16".parse().unwrap();
    // TSI with the predecessor's per-bottle /32: its filter does not enforce.
    run(&[
        "machine",
        "create",
        "--name",
        "tsi",
        "--net-backend",
        "tsi",
        "--allow-cidr",
        "127.0.0.16/32",
    ]);
    run(&["machine", "start", "--name", "tsi"]);
    assert!(s.fake.guest_reaches("tsi", host_loopback));
    // virtio-net enforces its list.
    run(&[
        "machine",
        "create",
        "--name",
        "vnet",
        "--allow-cidr",
        "127.0.0.16/32",
    ]);
    run(&["machine", "start", "--name", "vnet"]);
    assert!(!s.fake.guest_reaches("vnet", host_loopback));
    assert!(s.fake.guest_reaches("vnet", bottle_alias));
    // No network at all: nothing.
    run(&["machine", "create", "--name", "none"]);
    run(&["machine", "start", "--name", "none"]);
    assert!(!s.fake.guest_reaches("none", bottle_alias));
    // smolvm 0.8.x: `--allow-cidr` silently dropped with `--from`.
    let Some(old) = Smol::new((0, 8, 0)) else {
        return;
    };
    let out = old
        .fake
        .run(
            &[
                "machine",
                "create",
                "--name",
                "packed",
                "--from",
                "/x.smolmachine",
                "--allow-cidr",
                "127.0.0.16/32",
            ]
            .map(String::from),
        )
        .unwrap();
    assert!(out.ok(), "{}", out.stderr);
    let record = old.fake.machine_record("packed").unwrap().unwrap();
    assert_eq!(record["allowed_cidrs"], serde_json::Value::Null);
    assert_eq!(record["network"], true);
    // And before 1.6.10 there is no --mount-socket at all: a usage error, exit 2.
    let out = old
        .fake
        .run(
            &[
                "machine",
                "create",
                "--name",
                "x",
                "--mount-socket",
                "/a:/b",
            ]
            .map(String::from),
        )
        .unwrap();
    assert_eq!(out.status, 2);
    assert!(
        out.stderr.contains("unexpected argument '--mount-socket'"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_real_state_database_reader_reads_smolvm_s_schema() {
    // The reader the real driver uses, on a database created by the real sqlite3 with smolvm's
    // schema and a BLOB row as smolvm writes it (`serde_json::to_vec` into `data`).
    let Some(sqlite3) = sqlite3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("smolvm.db");
    let status = std::process::Command::new(&sqlite3)
        .arg(&db)
        .arg(format!(
            "CREATE TABLE vms (name TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL); \
             INSERT INTO vms VALUES ('bb-x', X'{}');",
            hex::encode(br#"{"name":"bb-x","network":false,"mounts":[["/a","/b",true]]}"#)
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let reader = backend::smolvm::StateDb::new(&db, &sqlite3);
    let record = reader.machine_record("bb-x").unwrap().unwrap();
    assert_eq!(record["mounts"][0][2], true);
    assert!(reader.machine_record("bb-y").unwrap().is_none());
    let missing = backend::smolvm::StateDb::new(dir.path().join("nope.db"), &sqlite3);
    assert!(missing.machine_record("bb-x").is_err());
}

#[test]
fn a_running_machine_whose_launcher_died_is_an_orphan_cleanup_ends() {
    let Some(s) = Smol::new((1, 9, 2)) else {
        return;
    };
    let bottle = s.backend.launch(&s.spec(), BottleStdio::piped()).unwrap();
    assert!(
        !s.backend.list().unwrap()[0].orphaned,
        "its launcher (this test) lives"
    );
    // The launcher dies: its pid file names a process that is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let pid_file = s.root.join("home/run/smolvm/demo-1a2b3/launcher.pid");
    std::fs::write(&pid_file, pid.to_string()).unwrap();
    let listed = s.backend.list().unwrap();
    assert!(listed[0].running && listed[0].orphaned, "{listed:?}");
    assert_eq!(
        s.backend.cleanup(true).unwrap(),
        vec![
            backend::CleanupAction::KilledOrphan {
                identity: "demo-1a2b3".into()
            },
            backend::CleanupAction::RemovedRuntimeDir {
                identity: "demo-1a2b3".into(),
                path: s.root.join("home/run/smolvm/demo-1a2b3"),
            },
        ]
    );
    assert!(
        s.fake.machine_record("bb-demo-1a2b3").unwrap().is_some(),
        "dry run"
    );
    s.backend.cleanup(false).unwrap();
    assert!(s.fake.machine_record("bb-demo-1a2b3").unwrap().is_none());
    assert!(!pid_file.exists(), "its runtime directory is gone too");
    std::mem::forget(bottle);
}
