//! A warm pod's sidecar as the built binary (kubernetes warm pools, issue 21): `bot-bottle
//! intake` taking the bottle's config once on loopback, and `bot-bottle sidecar --plan
//! --plan-dir` publishing the agent's plan once the bundle is ready.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use backend::kubernetes::objects;
use bundle::intake::{self, IntakeToken};
use pretty_assertions::assert_eq;
use serde_json::json;
use test_support::eventually;

fn bot_bottle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `bot-bottle intake --listen ADDR --dir DIR --claim-annotations FILE`, started; returns
/// once it listens (waited for on the socket table rather than by a probe connection).
fn start_intake(addr: SocketAddr, dir: &Path, annotations: &Path) -> Child {
    let child = bot_bottle()
        .args(["intake", "--listen", &addr.to_string(), "--dir"])
        .arg(dir)
        .arg("--claim-annotations")
        .arg(annotations)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(addr);
    child
}

fn wait_listening(addr: SocketAddr) {
    let hex = format!(":{:04X}", addr.port());
    eventually("intake listening", || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        // state 0A: LISTEN, on 127.0.0.1 (0100007F).
        table
            .lines()
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&format!("0100007F{hex}").as_str())
                    && cols.get(3) == Some(&"0A")
            })
            .then_some(())
    });
}

fn config() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("sidecar.json".to_owned(), b"{\"identity\":\"x\"}".to_vec()),
        ("token-GH_TOKEN".to_owned(), b"not-a-real-token".to_vec()),
        ("start.sh".to_owned(), b"exec true\n".to_vec()),
    ])
}

/// The pod's downward API file as the kubelet writes it (sorted `key="value"` lines, Go
/// quoting, no final newline), claimed by `token` or not yet.
fn annotate(file: &Path, token: Option<&IntakeToken>) {
    let mut lines = vec![r#"agents.x-k8s.io/pod-name="demo""#.to_owned()];
    if let Some(token) = token {
        lines.push(format!(
            "{}=\"{}\"",
            objects::INTAKE_TOKEN_ANNOTATION,
            token.annotation_value()
        ));
    }
    lines.push(r#"z.example/odd="a=\"b\"\n\tc""#.to_owned());
    std::fs::write(file, lines.join("\n")).unwrap();
}

/// A sidecar's volumes: the empty config directory and the annotations file (not claimed).
fn pod_dirs(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tmp.join("sidecar");
    std::fs::create_dir(&dir).unwrap();
    let annotations = tmp.join("annotations");
    annotate(&annotations, None);
    (dir, annotations)
}

/// The bundle's annotation and the backend's are one text (the backend puts it in the
/// claim, the sidecar reads it).
#[test]
fn the_sidecar_reads_the_annotation_the_backend_sets() {
    assert_eq!(
        bundle::intake::TOKEN_ANNOTATION,
        objects::INTAKE_TOKEN_ANNOTATION
    );
}

/// Issue 21's hole, through the binary: before the claim anyone who reaches the port (root
/// in the pod's namespace: a port-forward) is refused `not claimed yet`, after it another
/// token is refused; nothing is written, the command keeps listening and logs each refusal
/// (never a token); the claimer's send is then taken: every file, read-only, one line on
/// stdout, exit 0; and the port is closed.
#[test]
fn intake_refuses_all_but_the_claimer_then_takes_its_config_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, annotations) = pod_dirs(tmp.path());
    let addr = free_port();
    let mut child = start_intake(addr, &dir, &annotations);
    let token = IntakeToken::random();
    let planted = BTreeMap::from([("start.sh".to_owned(), b"touch pwned\n".to_vec())]);
    let err = intake::send(&mut TcpStream::connect(addr).unwrap(), &token, &planted).unwrap_err();
    assert!(matches!(err, intake::IntakeError::NotClaimedYet), "{err}");
    annotate(&annotations, Some(&token));
    let other = IntakeToken::random();
    let err = intake::send(&mut TcpStream::connect(addr).unwrap(), &other, &planted).unwrap_err();
    assert!(
        err.to_string().contains("the token does not match"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert!(child.try_wait().unwrap().is_none(), "intake stopped");

    intake::send(&mut TcpStream::connect(addr).unwrap(), &token, &config()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        text(&out.stdout),
        format!("took the bottle's config: 3 files into {}\n", dir.display())
    );
    assert!(
        err.contains("a connection was refused: not claimed yet")
            && err.contains("a connection was refused: the token does not match"),
        "{err}"
    );
    for t in [&token, &other] {
        assert!(!err.contains(&t.annotation_value()), "{err}");
    }
    for (name, content) in config() {
        assert_eq!(std::fs::read(dir.join(&name)).unwrap(), content, "{name}");
        let mode = std::fs::metadata(dir.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400, "{name}");
    }
    assert!(!tmp.path().join("pwned").exists() && !dir.join("pwned").exists());
    let second = TcpStream::connect(addr);
    assert_eq!(
        second.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a second config could be sent"
    );
}

/// The kubelet's lag: the annotation appears in the file after the launcher's first
/// attempt; the retrying send gets through. A planted connection that stalls before it
/// delays it by the bound at most and does not keep it out.
#[test]
fn intake_takes_the_retrying_claimer_once_the_annotation_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, annotations) = pod_dirs(tmp.path());
    let addr = free_port();
    let child = start_intake(addr, &dir, &annotations);
    let stalled = TcpStream::connect(addr).unwrap();
    let token = IntakeToken::random();
    let mut attempts = 0;
    intake::send_when_claimed(
        "bot-bottle-demo",
        || {
            attempts += 1;
            if attempts == 2 {
                annotate(&annotations, Some(&token));
            }
            TcpStream::connect(addr).map_err(|source| intake::IntakeError::Io {
                action: "connect",
                source,
            })
        },
        &token,
        &config(),
        intake::CLAIM_WAIT,
    )
    .unwrap();
    assert_eq!(attempts, 2);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    assert!(
        text(&out.stderr).contains("were not sent within 5 s"),
        "{}",
        text(&out.stderr)
    );
    drop(stalled);
}

/// The claimer's stream that is not a config: the sender is told why, nothing is written,
/// and the command fails naming the directory and the address (the container then stops:
/// the bundle never runs without its config).
#[test]
fn intake_writes_nothing_of_a_malformed_config_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, annotations) = pod_dirs(tmp.path());
    let token = IntakeToken::random();
    annotate(&annotations, Some(&token));
    let addr = free_port();
    let child = start_intake(addr, &dir, &annotations);
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut bytes = intake::header(&token);
    bytes.extend_from_slice(&13u16.to_be_bytes());
    bytes.extend_from_slice(b"../etc/passwd");
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.push(b'x');
    bytes.extend_from_slice(&0u16.to_be_bytes());
    stream.write_all(&bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("go\nrefused: "), "{answer:?}");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "no config was taken into {} on {addr}",
            dir.display()
        )) && err.contains("file name \"../etc/passwd\""),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert!(!tmp.path().join("etc").exists());
    assert_eq!(text(&out.stdout), "");
}

/// Refused before anything listens: not loopback, a directory that holds something, no
/// `--claim-annotations`, an annotations file that is missing or not the kubelet's format.
#[test]
fn intake_refuses_a_bad_address_directory_or_annotations_file_before_listening() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, annotations) = pod_dirs(tmp.path());
    let run = |listen: &str, dir: &Path, annotations: Option<&Path>| {
        let mut cmd = bot_bottle();
        cmd.args(["intake", "--listen", listen, "--dir"]).arg(dir);
        if let Some(a) = annotations {
            cmd.arg("--claim-annotations").arg(a);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{listen}");
        text(&out.stderr)
    };
    let err = run("0.0.0.0:3198", &dir, Some(&annotations));
    assert!(
        err.contains("0.0.0.0:3198 is not a loopback address") && err.contains("127.0.0.1:<port>"),
        "{err}"
    );
    let addr = free_port();
    let err = run(&addr.to_string(), &dir, None);
    assert!(err.contains("--claim-annotations <FILE>"), "{err}");
    let missing = tmp.path().join("no-podinfo");
    let err = run(&addr.to_string(), &dir, Some(&missing));
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("downwardAPI"),
        "{err}"
    );
    std::fs::write(&annotations, "bot-bottle.org/intake-sha256=unquoted").unwrap();
    let err = run(&addr.to_string(), &dir, Some(&annotations));
    assert!(err.contains("cannot parse it"), "{err}");
    annotate(&annotations, None);
    std::fs::write(dir.join("sidecar.json"), "{}").unwrap();
    let err = run(&addr.to_string(), &dir, Some(&annotations));
    assert!(err.contains("is not empty"), "{err}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "it still listens on {addr}"
    );
}

/// A bottle's bundle config in `dir` (egress only, on `egress`); returns its path.
fn bundle_config(dir: &Path, egress: SocketAddr) -> std::path::PathBuf {
    let state = dir.join("state").join("demo-0a1b2");
    std::fs::create_dir_all(state.join("logs")).unwrap();
    let routes = state.join("routes.yaml");
    std::fs::write(&routes, "routes:\n  - host: api.example\n").unwrap();
    let config = state.join("sidecar.json");
    std::fs::write(
        &config,
        json!({
            "identity": "demo-0a1b2",
            "home": dir,
            "egress": {
                "listen": {"tcp": egress},
                "routes": routes,
                "ca_dir": state.join("ca"),
                "log": state.join("logs/egress.jsonl"),
            },
        })
        .to_string(),
    )
    .unwrap();
    config
}

fn start_sidecar(config: &Path, plan: &Path, plan_dir: &Path) -> Child {
    bot_bottle()
        .args(["sidecar", "--config"])
        .arg(config)
        .arg("--plan")
        .arg(plan)
        .arg("--plan-dir")
        .arg(plan_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) -> Output {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = child.stdin.take();
    child.wait_with_output().unwrap()
}

/// The plan appears only once the bundle said `ready`, and at that moment its health check
/// answers; the content is the file's, byte for byte, readable by every uid, and nothing
/// else is left in the plan directory.
#[test]
fn the_bundle_publishes_the_plan_once_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let config = bundle_config(tmp.path(), free_port());
    let plan = tmp.path().join("received-plan.sh");
    let content = "set -e\nexport A='it'\\''s'\nset -- '/bin/sh' '-c' 'echo $A'\nIFS= read -r _ || exit 125\nexec \"$@\"\n";
    std::fs::write(&plan, content).unwrap();
    let plan_dir = tmp.path().join("plan");
    std::fs::create_dir(&plan_dir).unwrap();
    let mut child = start_sidecar(&config, &plan, &plan_dir);
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let published = plan_dir.join(bundle::plan::PLAN_FILE);
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "ready");
    let published_path = published.clone();
    eventually("the plan", || published_path.exists().then_some(()));
    let check = bot_bottle()
        .args(["sidecar", "--config"])
        .arg(&config)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the plan is there but the bundle does not answer: {}",
        text(&check.stdout)
    );
    assert_eq!(std::fs::read_to_string(&published).unwrap(), content);
    let mode = std::fs::metadata(&published).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o444);
    let names: Vec<_> = std::fs::read_dir(&plan_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["plan.sh"]);
    let out = stop(child);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Fail closed: a plan directory that cannot be written stops the bundle with the reason
/// (its listeners close: the agent has neither a plan nor a way out); a bundle that never
/// becomes ready (its port is taken) publishes no plan.
#[test]
fn no_plan_without_a_ready_bundle_and_no_bundle_without_its_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = bundle_config(tmp.path(), egress);
    let plan = tmp.path().join("received-plan.sh");
    std::fs::write(&plan, "exec true\n").unwrap();

    let missing = tmp.path().join("no-such-volume");
    let out = start_sidecar(&config, &plan, &missing)
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot publish the agent's plan {} into {}",
            plan.display(),
            missing.display()
        )) && err.contains("writable volume"),
        "{err}"
    );
    assert!(!missing.exists());
    assert!(
        !text(&out.stdout).contains("stopped"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        TcpStream::connect(egress).is_err(),
        "egress still listens after the bundle failed"
    );

    // Its egress port taken: the bundle fails before `ready`, and writes no plan.
    let plan_dir = tmp.path().join("plan");
    std::fs::create_dir(&plan_dir).unwrap();
    let taken = std::net::TcpListener::bind(egress).unwrap();
    let out = start_sidecar(&config, &plan, &plan_dir)
        .wait_with_output()
        .unwrap();
    drop(taken);
    assert!(!out.status.success());
    assert!(
        !text(&out.stdout).contains("ready"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on {egress}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&plan_dir).unwrap().count(), 0);
}

/// `--plan` and `--plan-dir` go together, and not with `--check`.
#[test]
fn plan_flags_go_together() {
    let tmp = tempfile::tempdir().unwrap();
    let config = bundle_config(tmp.path(), free_port());
    for (args, said) in [
        (vec!["--plan", "p.sh"], "--plan-dir <DIR>"),
        (vec!["--plan-dir", "plan"], "--plan <FILE>"),
        (
            vec!["--plan", "p.sh", "--plan-dir", "plan", "--check"],
            "cannot be used with",
        ),
    ] {
        let out = bot_bottle()
            .args(["sidecar", "--config"])
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(said),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// The whole warm pod's sidecar with real parts, on loopback: the warm template's command
/// (`intake`, then `start.sh`) run by `sh` with this binary; the launcher's files
/// (`launcher::kube::pod_config`) and its warm script sent as the launcher sends them; the
/// real bundle started by that script publishing the plan; the agent's waiter in a real
/// `sh` running it. The pod's paths stand elsewhere (the same text replaced in the files).
#[test]
fn the_warm_template_command_runs_intake_then_the_bundle_that_releases_the_agent() {
    use backend::kubernetes::warm;
    use launcher::kube::{POD_EXE, POD_HOME, PodGate, pod_config};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let laptop = root.join("laptop");
    let identity = "demo-0a1b2";
    let state = laptop.join("state").join(identity);
    egress::ca::CertificateAuthority::load_or_create(&state.join("ca")).unwrap();
    std::fs::create_dir_all(state.join("live-config")).unwrap();
    std::fs::write(
        state.join("live-config/routes.yaml"),
        "routes:\n  - host: api.example\n",
    )
    .unwrap();
    let egress = free_port();
    let laptop_config = bundle::SidecarConfig {
        identity: identity.into(),
        home: laptop.clone(),
        egress: bundle::EgressSidecar {
            listen: bundle::Listen::Tcp(egress),
            routes: state.join("live-config/routes.yaml"),
            ca_dir: state.join("ca"),
            upstream_ca: Vec::new(),
            log: state.join("logs/egress.jsonl"),
        },
        gate: None,
        supervise: None,
        tokens: vec!["GH_TOKEN".into()],
        operator: None,
    };
    let tokens = vec![("GH_TOKEN".to_owned(), "not-a-real-token".to_owned())];
    let (_, files) =
        pod_config(&laptop, &laptop_config, &PodGate::default(), &tokens, None).unwrap();
    let config_inside = Path::new(POD_HOME)
        .join("state")
        .join(identity)
        .join("sidecar.json");

    let sidecar_dir = root.join("sidecar");
    let plan_dir = root.join("plan");
    let workdir = root.join("work");
    for d in [&sidecar_dir, &plan_dir, &workdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let pod_home = root.join("pod");
    let exe = env!("CARGO_BIN_EXE_bot-bottle");
    // The executable last: its path may hold the pod's paths as text (a target directory
    // such as `/var/tmp/bot-bottle-ci-target` holds `/tmp/bot-bottle`, the pod's home).
    let here = |text: &str| {
        text.replace(POD_HOME, pod_home.to_str().unwrap())
            .replace(objects::SIDECAR_DIR, sidecar_dir.to_str().unwrap())
            .replace(objects::PLAN_DIR, plan_dir.to_str().unwrap())
            .replace(POD_EXE, exe)
    };

    // The agent's waiter first: the pod is warm long before any bottle.
    let mut agent = Command::new("/bin/sh")
        .args(["-c", warm::WAITER, "agent"])
        .arg(&plan_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The warm template's sidecar command.
    let intake = free_port();
    let contract = format!(
        "{} && exec /bin/sh {}/{}",
        objects::intake_step(POD_EXE),
        objects::SIDECAR_DIR,
        objects::START_SCRIPT
    );
    let podinfo = root.join("podinfo");
    std::fs::create_dir(&podinfo).unwrap();
    let token = IntakeToken::random();
    annotate(&podinfo.join(objects::ANNOTATIONS_FILE), Some(&token));
    let contract = here(&contract)
        .replace(
            &format!("127.0.0.1:{}", objects::INTAKE_PORT),
            &intake.to_string(),
        )
        .replace(objects::PODINFO_DIR, podinfo.to_str().unwrap());
    let mut sidecar = Command::new("/bin/sh")
        .args(["-c", &contract])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let hex = format!("0100007F:{:04X}", intake.port());
    eventually("intake listening", || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&hex.as_str()) && cols.get(3) == Some(&"0A")
            })
            .then_some(())
    });

    // The launcher's send once the claim binds: the bundle's files, start.sh, the plan.
    let argv: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        "printf '%s' \"$0 $1\" > ran".into(),
        "agent".into(),
        "it's".into(),
    ];
    let env = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]);
    let plan = warm::plan_script(&argv, &env, workdir.to_str().unwrap(), &[]).unwrap();
    let mut sent: BTreeMap<String, Vec<u8>> = files
        .files
        .iter()
        .map(|(k, v)| {
            let v = match std::str::from_utf8(v) {
                Ok(text) if k == "sidecar.json" => here(text).into_bytes(),
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    sent.insert(
        objects::START_SCRIPT.to_owned(),
        here(&files.warm_script(&config_inside)).into_bytes(),
    );
    sent.insert(warm::PLAN_FILE.to_owned(), plan.clone().into_bytes());
    let mut stream = TcpStream::connect(intake).unwrap();
    intake::send(&mut stream, &token, &sent).unwrap();

    // intake's line, then the bundle's `ready`; then the plan, with egress listening.
    let mut lines = std::io::BufReader::new(sidecar.stdout.take().unwrap()).lines();
    assert!(
        lines
            .next()
            .unwrap()
            .unwrap()
            .starts_with("took the bottle's config: "),
    );
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let published = plan_dir.join(warm::PLAN_FILE);
    eventually("the plan", || published.exists().then_some(()));
    TcpStream::connect(egress).unwrap();
    assert_eq!(std::fs::read_to_string(&published).unwrap(), plan);
    assert!(TcpStream::connect(intake).is_err(), "intake still listens");

    // The start line: the agent runs.
    agent.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = agent.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(workdir.join("ran")).unwrap(),
        "agent it's"
    );
    let out = stop(sidecar);
    assert!(out.status.success());
}
