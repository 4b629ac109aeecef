//! A warm pod's topology on Docker (kubernetes warm pools, issue 21), beside the cold one
//! (`kube_pod.rs`, whose holder, `network` init step and uids it reuses): the pod is made
//! before any bottle claims it, so its sidecar waits in `bot-bottle intake` on
//! [`INTAKE_PORT`] and its agent waits in [`warm::WAITER`] for a plan in [`PLAN_DIR`], a
//! volume the sidecar writes and the agent mounts read-only.
//!
//! With the pod's real ruleset applied, judged from what each side can do:
//! * the agent's uid cannot reach the intake port nor the operator port; root in the pod's
//!   namespace (what the kubelet's port-forward connects as) reaches both;
//! * root in the namespace (a port-forward: anyone allowed `pods/portforward`) without the
//!   claim's token is refused — before the claim and with another token after it — and its
//!   planted config is never written nor its `start.sh` run; the port keeps listening;
//! * the sidecar takes the config of the launcher whose token's SHA-256 is the pod's claim
//!   annotation (a file standing in for the downward API's, mounted read-only where the
//!   template mounts it), sent by root from inside the namespace (a thread of this test
//!   `setns`ed into it), and refuses a second;
//! * the agent cannot write a plan itself, and runs nothing until the bundle, started on
//!   the config, is ready and publishes the plan; then it runs the plan's command, which
//!   reaches egress.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use backend::kubernetes::objects::{
    self, ANNOTATIONS_FILE, INTAKE_PORT, INTAKE_TOKEN_ANNOTATION, PLAN_DIR, PODINFO_DIR,
    SIDECAR_DIR, START_SCRIPT,
};
use backend::kubernetes::{OPERATOR_PORT, warm};
use bundle::intake::{self, IntakeToken};

use super::docker::{base_image, docker};
use super::kube_pod::{Pod, apply_ruleset, connect_script, missing, run_in_pod};

const EXE: &str = "/usr/local/bin/bot-bottle";
const TOKEN: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e75e1f0a2b3c4d5e6f708192a3b4c5d6e7";

/// Runs `f` on a thread inside the network namespace of the process `pid`, as root: what
/// the kubelet's port-forward is to the pod.
fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let path = format!("/proc/{pid}/ns/net");
        let ns = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on an open namespace descriptor, for this thread only.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// Whether something listens on `127.0.0.1:port` in the namespace of `pid` (read from its
/// socket table: a probe connection would be a refused sender in the intake's log).
fn listens(pid: u32, port: u16) -> bool {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A")
    })
}

/// Writes the pod's annotations file as the kubelet does: the whole file replaced at once
/// (here by a rename; the kubelet swaps a symlink), sorted `key="value"` lines.
fn annotate(dir: &std::path::Path, token: Option<&IntakeToken>) {
    let mut text = r#"agents.x-k8s.io/pod-name="bbk-warm""#.to_owned();
    if let Some(token) = token {
        text.push_str(&format!(
            "\n{INTAKE_TOKEN_ANNOTATION}=\"{}\"",
            token.annotation_value()
        ));
    }
    let tmp = dir.join(".annotations.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::rename(&tmp, dir.join(ANNOTATIONS_FILE)).unwrap();
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what} did not happen within 30 s");
}

/// The config the launcher sends once the claim binds: the bundle's files, `start.sh` (the
/// sidecar's script: read the operator token, run the bundle publishing the plan) and the
/// agent's plan.
fn config(plan: &str) -> BTreeMap<String, Vec<u8>> {
    let sidecar_json = serde_json::json!({
        "identity": "demo-0a1b2",
        "home": "/tmp/bot-bottle",
        "egress": {
            "listen": {"tcp": "127.0.0.1:3128"},
            "routes": format!("{SIDECAR_DIR}/routes.yaml"),
            "ca_dir": "/tmp/bot-bottle/ca",
            "log": "/tmp/bot-bottle/egress.jsonl",
        },
        "operator": {
            "listen": {"tcp": format!("127.0.0.1:{OPERATOR_PORT}")},
            "token_env": "BOT_BOTTLE_OPERATOR_TOKEN",
        },
    });
    let start = format!(
        "set -eu\numask 077\nmkdir -p /tmp/bot-bottle\n\
         BOT_BOTTLE_OPERATOR_TOKEN=\"$(cat '{SIDECAR_DIR}/token-operator')\"; export BOT_BOTTLE_OPERATOR_TOKEN\n\
         exec {EXE} sidecar --config '{SIDECAR_DIR}/sidecar.json' --plan '{SIDECAR_DIR}/{plan_file}' --plan-dir '{PLAN_DIR}'\n",
        plan_file = warm::PLAN_FILE
    );
    BTreeMap::from([
        (
            "sidecar.json".to_owned(),
            sidecar_json.to_string().into_bytes(),
        ),
        (
            "routes.yaml".to_owned(),
            b"routes:\n  - host: api.example\n".to_vec(),
        ),
        ("token-operator".to_owned(), TOKEN.as_bytes().to_vec()),
        (START_SCRIPT.to_owned(), start.into_bytes()),
        (warm::PLAN_FILE.to_owned(), plan.as_bytes().to_vec()),
    ])
}

#[test]
fn a_warm_pod_takes_one_config_from_root_in_its_namespace_and_the_agent_only_its_plan() {
    if let Some(why) = missing() {
        eprintln!("skipping the kubernetes warm-pod test: {why}");
        return;
    }
    let base = match base_image() {
        Ok(b) => b.to_owned(),
        Err(e) => {
            eprintln!("skipping the kubernetes warm-pod test: {e}");
            return;
        }
    };
    let exe = super::bot_bottle();
    let id = std::process::id();
    let holder = format!("bbk-warm-holder-{id}");
    let sidecar = format!("bbk-warm-sidecar-{id}");
    let agent = format!("bbk-warm-agent-{id}");
    let _pod = Pod {
        names: vec![holder.clone(), sidecar.clone(), agent.clone()],
    };
    // The pod's sandbox: loopback only (nothing here leaves the pod).
    docker(&[
        "run",
        "-d",
        "--name",
        &holder,
        "--network",
        "none",
        "--label",
        "org.bot-bottle.test=true",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        "sleep",
        &base,
        "900",
    ])
    .unwrap();
    let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", &holder])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    apply_ruleset(&holder, &base);

    // The plan volume: the sidecar's uid writes it, the agent mounts it read-only.
    let plan_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(plan_dir.path(), Some(1001), Some(1001)).unwrap();
    std::fs::set_permissions(plan_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let plan_rw = format!("{}:{PLAN_DIR}", plan_dir.path().display());
    let plan_ro = format!("{plan_rw}:ro");
    let pod_net = format!("container:{holder}");
    let hardened = [
        "--network",
        pod_net.as_str(),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--label",
        "org.bot-bottle.test=true",
    ];

    // The pod's annotations, as the downward API volume shows them: not claimed yet.
    let podinfo = tempfile::tempdir().unwrap();
    std::fs::set_permissions(podinfo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    annotate(podinfo.path(), None);
    let podinfo_ro = format!("{}:{PODINFO_DIR}:ro", podinfo.path().display());

    // The sidecar container, as the warm template runs it: intake, then start.sh.
    let contract = format!(
        "{} && exec /bin/sh {SIDECAR_DIR}/{START_SCRIPT}",
        objects::intake_step(EXE)
    );
    let mut run = vec!["run", "-d", "--name", &sidecar, "--user", "1001:1001"];
    run.extend(hardened);
    let exe_mount = format!("{}:{EXE}:ro", exe.display());
    let tmpfs = format!("{SIDECAR_DIR}:uid=1001,gid=1001,mode=0700");
    run.extend(["-v", &exe_mount, "-v", &plan_rw, "-v", &podinfo_ro]);
    run.extend(["--tmpfs", &tmpfs, base.as_str(), "/bin/sh", "-c", &contract]);
    docker(&run).unwrap();

    // The agent container: the waiter, on the read-only plan volume, its stdin open for
    // the start line.
    let mut agent_child = Command::new("docker")
        .args(["run", "-i", "--rm", "--name", &agent, "--user", "1000:1000"])
        .args(hardened)
        .args([
            "-v",
            &plan_ro,
            &base,
            "/bin/sh",
            "-c",
            warm::WAITER,
            "agent",
            PLAN_DIR,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for("the sidecar's intake listening", || {
        listens(pid, INTAKE_PORT)
    });
    wait_for("the agent's waiter running", || {
        docker(&["inspect", "-f", "{{.State.Running}}", &agent]).is_ok_and(|r| r.trim() == "true")
    });

    // The agent's uid reaches neither the intake port nor the operator port (nothing
    // listens there yet: refused all the same, by the filter, before any listener).
    let (ok, text) = run_in_pod(
        &holder,
        "1000:1000",
        &base,
        &connect_script("127.0.0.1", INTAKE_PORT),
    );
    assert!(!ok, "the agent's uid reached the intake port: {text}");
    let (ok, text) = run_in_pod(
        &holder,
        "1000:1000",
        &base,
        &connect_script("127.0.0.1", OPERATOR_PORT),
    );
    assert!(!ok, "the agent's uid reached the operator port: {text}");
    // The agent cannot plant a plan: its volume is read-only to it.
    let planted = docker(&[
        "exec",
        "--user",
        "1000:1000",
        &agent,
        "/bin/sh",
        "-c",
        &format!("echo 'echo planted' > {PLAN_DIR}/{}", warm::PLAN_FILE),
    ]);
    let e = planted.expect_err("the agent wrote a plan");
    assert!(e.contains("Read-only file system"), "{e}");
    // Nothing to run yet: the waiter waits, the volume is empty, the intake still listens
    // (the agent's attempt never reached it).
    assert_eq!(std::fs::read_dir(plan_dir.path()).unwrap().count(), 0);
    assert!(listens(pid, INTAKE_PORT));
    assert!(agent_child.try_wait().unwrap().is_none());

    // A planter: root in the namespace (what a port-forward is) before the claim, with any
    // token, then after the claim with another one. Its start.sh would leave a mark in the
    // plan volume, which the sidecar's uid can write.
    let planted = BTreeMap::from([
        (
            START_SCRIPT.to_owned(),
            format!("touch {PLAN_DIR}/planted-start-ran\n").into_bytes(),
        ),
        ("sidecar.json".to_owned(), b"{}".to_vec()),
    ]);
    let token = IntakeToken::random();
    let files = planted.clone();
    let refused = in_netns(pid, move || {
        let mut stream = TcpStream::connect(("127.0.0.1", INTAKE_PORT)).unwrap();
        intake::send(&mut stream, &IntakeToken::random(), &files).unwrap_err()
    });
    assert!(
        matches!(refused, intake::IntakeError::NotClaimedYet),
        "{refused}"
    );
    annotate(podinfo.path(), Some(&token));
    let files = planted.clone();
    let refused = in_netns(pid, move || {
        let mut stream = TcpStream::connect(("127.0.0.1", INTAKE_PORT)).unwrap();
        intake::send(&mut stream, &IntakeToken::random(), &files).unwrap_err()
    });
    assert!(refused.to_string().contains(intake::MISMATCH), "{refused}");
    // Nothing planted was written, nothing ran, the port still listens.
    let held = docker(&["exec", &sidecar, "/bin/ls", "-A", SIDECAR_DIR]).unwrap();
    assert_eq!(held.trim(), "", "the sidecar holds planted files");
    assert_eq!(std::fs::read_dir(plan_dir.path()).unwrap().count(), 0);
    assert!(listens(pid, INTAKE_PORT));

    // The launcher's send, as root in the namespace, with the claim's token: taken.
    let plan = warm::plan_script(
        &[
            "python3".to_owned(),
            "-c".to_owned(),
            "import socket; socket.create_connection(('127.0.0.1', 3128), timeout=3); print('agent ran; egress answered')".to_owned(),
        ],
        &BTreeMap::from([(
            "PATH".to_owned(),
            "/usr/local/bin:/usr/bin:/bin".to_owned(),
        )]),
        "/tmp",
        &[],
    )
    .unwrap();
    let files = config(&plan);
    in_netns(pid, move || {
        intake::send_when_claimed(
            "bbk-warm",
            || {
                TcpStream::connect(("127.0.0.1", INTAKE_PORT)).map_err(|source| {
                    intake::IntakeError::Io {
                        action: "connect",
                        source,
                    }
                })
            },
            &token,
            &files,
            intake::CLAIM_WAIT,
        )
        .unwrap();
    });
    // A second sender (a planted config after the launcher's, or the other way round) is
    // refused: the port is closed.
    let second = in_netns(pid, || TcpStream::connect(("127.0.0.1", INTAKE_PORT)).err());
    assert_eq!(
        second.map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a second config could be sent"
    );

    // The bundle starts on the config and publishes the plan once ready.
    let published = plan_dir.path().join(warm::PLAN_FILE);
    wait_for("the plan published", || {
        if docker(&["inspect", "-f", "{{.State.Running}}", &sidecar])
            .is_ok_and(|r| r.trim() == "false")
        {
            let logs = docker(&["logs", &sidecar]).unwrap_or_default();
            panic!("the sidecar stopped: {logs}");
        }
        published.exists()
    });
    assert_eq!(std::fs::read_to_string(&published).unwrap(), plan);
    assert!(
        !plan_dir.path().join("planted-start-ran").exists(),
        "the planted start.sh ran"
    );
    let mode = std::fs::metadata(&published).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o444);
    // Root in the namespace reaches the operator port (the relay's port-forward); the
    // agent's uid still does not, with the bundle listening there now.
    wait_for("the operator port", || listens(pid, OPERATOR_PORT));
    in_netns(pid, || {
        TcpStream::connect(("127.0.0.1", OPERATOR_PORT)).unwrap()
    });
    let (ok, text) = run_in_pod(
        &holder,
        "1000:1000",
        &base,
        &connect_script("127.0.0.1", OPERATOR_PORT),
    );
    assert!(!ok, "the agent's uid reached the operator port: {text}");

    // The start line: the agent runs the plan's command, which finds egress there.
    agent_child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = agent_child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("agent ran; egress answered"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
