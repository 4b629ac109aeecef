//! `bot-bottle start --backend smolmachines` end to end on Linux, against the stand-in for
//! `smolvm` (`test_support::smolvm`: smolvm's argument parsing and its SQLite state database,
//! with each machine a docker container without network; it is first on `PATH`). No smolvm can
//! be installed here: these tests prove the launcher → backend → CLI path with the sidecar
//! bundle as a host process beside the machine, the agent's contract from inside, the exit
//! code and the refusals; they do not prove smolvm or libkrun themselves.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use test_support::smolvm::FakeSmolvmCli;

const TOKEN: &str = "tok-smol-REALSECRET-0123456789";

struct World {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
    fake: FakeSmolvmCli,
    image: String,
}

/// `None` (with the reason printed) without docker and its local base image (the machine
/// image here) or without `sqlite3` (the backend reads smolvm's database with it).
fn world() -> Option<World> {
    let image = match test_support::docker::base_image() {
        Ok(base) => base.to_owned(),
        Err(why) => {
            eprintln!("skipping: the smolvm stand-in runs its machines in docker: {why}");
            return None;
        }
    };
    if backend::preflight::find_in_path("sqlite3").is_none() {
        eprintln!("skipping: sqlite3 is not installed (apt-get install sqlite3)");
        return None;
    }
    // Short paths: Unix socket paths are limited to 107 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("bbs")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&workspace, Some(1000), Some(1000)).unwrap();
    }
    std::fs::write(
        workspace.join("bot-bottle.yaml"),
        r#"bottles:
  dev:
    env: {PROBE_MODE: "1"}
    egress:
      routes:
        - host: api.example.test
          connect_to: "127.0.0.1:9"
          auth_scheme: Bearer
          token_env: E2E_TOKEN
agents:
  demo:
    bottle: dev
"#,
    )
    .unwrap();
    Some(World {
        _tmp: tmp,
        home,
        workspace,
        fake: FakeSmolvmCli::new().unwrap(),
        image,
    })
}

fn bot_bottle(w: &World) -> Command {
    let path = format!(
        "{}:{}",
        w.fake.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
    cmd.current_dir(&w.workspace)
        .env("BOT_BOTTLE_HOME", &w.home)
        .env("BOT_BOTTLE_BACKEND", "smolmachines")
        .env("PATH", path)
        .env("XDG_DATA_HOME", &w.fake.data_home)
        .env("BOT_BOTTLE_SMOLVM_IMAGE", &w.image)
        .env("E2E_TOKEN", TOKEN)
        .stdin(Stdio::null());
    cmd
}

fn start(w: &World, script: &str) -> Output {
    bot_bottle(w)
        .args(["start", "demo", "--", "bash", "-c", script])
        .output()
        .unwrap()
}

/// `start` with an agent that sleeps; returns once the agent runs.
fn start_sleeping(w: &World) -> std::process::Child {
    let mut child = bot_bottle(w)
        .args([
            "start",
            "demo",
            "--",
            "bash",
            "-c",
            "touch started; exec sleep 120",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..2400 {
        if w.workspace.join("started").exists() {
            return child;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("the agent never started:\n{}", text(&out));
}

fn identity(w: &World) -> String {
    let out = bot_bottle(w).args(["list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list[0]["identity"].as_str().unwrap().to_owned()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_nothing_left(w: &World) {
    assert_eq!(w.fake.machines(), Vec::<String>::new());
    assert_eq!(w.fake.docker_objects(), Vec::<String>::new());
}

const PROBE: &str = r#"
set -u
[ "$(id -u)" = 1000 ] && echo "PASS uid-1000" || echo "FAIL uid-1000 $(id -u)"
[ "$HTTPS_PROXY" = http://127.0.0.1:3128 ] && echo "PASS proxy-env" || echo "FAIL proxy-env $HTTPS_PROXY"
hdr=$(curl -sS -i http://blocked.example.test/ | tr -d '\r' | grep -i '^x-bot-bottle-blocked:')
[ -n "$hdr" ] && echo "PASS sidecar-answers" || echo "FAIL sidecar-answers"
[ -s /etc/ssl/certs/ca-certificates.crt ] && echo "PASS ca-file" || echo "FAIL ca-file"
pat=REAL; pat="${pat}SECRET"
if env | grep -q "$pat"; then echo "FAIL env-clean"; else echo "PASS env-clean"; fi
touch ran
exit 7
"#;

#[test]
fn start_runs_the_agent_in_a_machine_beside_its_host_sidecars_and_returns_its_exit_code() {
    let Some(w) = world() else { return };
    let out = start(&w, PROBE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .collect();
    assert_eq!(
        results,
        [
            "PASS uid-1000",
            "PASS proxy-env",
            "PASS sidecar-answers",
            "PASS ca-file",
            "PASS env-clean"
        ],
        "{}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    // The version is asked first (by the preflight and the backend), then the machine's life.
    let calls = w.fake.calls();
    assert_eq!(calls.first().map(String::as_str), Some("--version"));
    let steps: Vec<String> = calls
        .iter()
        .filter(|c| *c != "--version")
        .map(|c| c.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        steps,
        [
            "machine create",
            "machine start",
            "machine exec",
            "machine stop",
            "machine delete"
        ],
        "{calls:#?}"
    );
    let create = w
        .fake
        .calls()
        .into_iter()
        .find(|c| c.starts_with("machine create"))
        .unwrap();
    assert!(
        !create.contains("--net") && !create.contains("--allow-cidr") && !create.contains("--port"),
        "no network of any kind: {create}"
    );
    for call in w.fake.calls() {
        assert!(!call.contains(TOKEN), "a token on a command line: {call}");
    }
    assert_nothing_left(&w);
}

/// The agent forks up to its bottle's `pids` limit, then asks the sidecar through its
/// loopback endpoint: five requests one after another, then twenty connections held open at
/// once. The guest init relays on one event loop, so none is refused or left unanswered for
/// want of a thread or a process (as docker's `docker_limits_come_from_the_bottles_resources`).
const AT_THE_LIMIT: &str = r#"
import os, signal, socket
kids, err = [], ''
for i in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.strerror
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    kids.append(pid)
print(len(kids) < 64, err)
ASK = b'GET http://blocked.example.test/ HTTP/1.1\r\nHost: blocked.example.test\r\nConnection: close\r\n\r\n'
def conn():
    try:
        return socket.create_connection(('127.0.0.1', 3128), timeout=30)
    except OSError:
        return None
def answer(s):
    if s is None:
        return 'refused'
    try:
        s.sendall(ASK)
        got = b''
        while b'\r\n\r\n' not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        return 'hung'
    except OSError:
        return 'closed'
    finally:
        s.close()
    return 'blocked' if b'x-bot-bottle-blocked:' in got.lower() else 'other'
for i in range(5):
    print(answer(conn()))
many = [conn() for i in range(20)]
print(' '.join(answer(s) for s in many))
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
"#;

#[test]
fn at_its_pids_limit_the_agent_still_has_every_sidecar_connection_answered() {
    let Some(w) = world() else { return };
    let manifest = w.workspace.join("bot-bottle.yaml");
    let yaml = std::fs::read_to_string(&manifest).unwrap().replace(
        "    env: {PROBE_MODE: \"1\"}\n",
        "    env: {PROBE_MODE: \"1\"}\n    resources: {pids: 64}\n",
    );
    std::fs::write(&manifest, yaml).unwrap();
    std::fs::write(w.workspace.join("at_the_limit.py"), AT_THE_LIMIT).unwrap();
    let out = start(&w, "exec python3 at_the_limit.py");
    let many = vec!["blocked"; 20].join(" ");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (
            Some(0),
            format!(
                "True Resource temporarily unavailable\n{}{many}\n",
                "blocked\n".repeat(5)
            )
            .as_str()
        ),
        "{}",
        text(&out)
    );
    assert_nothing_left(&w);
}

#[test]
fn a_machine_smolvm_did_not_persist_as_asked_is_refused_before_the_agent_runs() {
    let Some(w) = world() else { return };
    for (fault, expect) in [
        ("default-network", "it was persisted with `network` = true"),
        ("drops-readonly", "its persisted mounts are"),
        ("drops-mount-socket", "refusing to start it"),
        ("loses-row", "has no row for machine"),
        (
            "fail create no space left on device",
            "smolvm machine create",
        ),
    ] {
        w.fake.set_faults(&[fault]);
        let out = start(&w, "touch ran; exit 0");
        assert!(
            !out.status.success() && out.status.code() != Some(7),
            "{fault}: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{fault}: {}", text(&out));
        // The cause is the first thing the user sees after the launch began (the line before
        // is `start`'s notice about the unset token): no warning about deleting a machine
        // smolvm may never have made.
        let first = stderr
            .lines()
            .find(|l| !l.contains("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN is not set"))
            .unwrap_or_default();
        assert!(
            first.starts_with("error: ")
                && !stderr.contains("not found")
                && !stderr.contains("WARN"),
            "{fault}: {}",
            text(&out)
        );
        assert!(!w.workspace.join("ran").exists(), "{fault}: the agent ran");
        assert!(
            !w.fake
                .calls()
                .iter()
                .any(|c| c.starts_with("machine start") || c.starts_with("machine exec")),
            "{fault}: {:#?}",
            w.fake.calls()
        );
        assert_nothing_left(&w);
    }
}

#[test]
fn stop_and_cleanup_end_smolmachines_bottles_through_the_cli() {
    let Some(w) = world() else { return };
    // `bot-bottle stop`: the machine is stopped, `start` ends as asked and deletes it.
    let child = start_sleeping(&w);
    let id = identity(&w);
    let stop = bot_bottle(&w).args(["stop", &id]).output().unwrap();
    assert!(stop.status.success(), "{}", text(&stop));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_nothing_left(&w);

    // A `start` killed at once leaves its machine running: `cleanup` ends it.
    std::fs::remove_file(w.workspace.join("started")).unwrap();
    let mut child = start_sleeping(&w);
    let id = identity(&w);
    child.kill().unwrap();
    child.wait().unwrap();
    // Beside it, a stopped machine of the user's named like one of bot-bottle's but without
    // the identity label bot-bottle gives its machines: cleanup never judges by a name alone.
    let made = Command::new(w.fake.bin.join("smolvm"))
        .args([
            "machine", "create", "--name", "bb-mine", "--image", &w.image,
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let mut machines = vec![format!("bb-{id}"), "bb-mine".to_owned()];
    machines.sort();
    assert_eq!(w.fake.machines(), machines);
    let out = bot_bottle(&w).args(["cleanup"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains(&format!("killed orphaned bottle {id} (smolmachines)")),
        "{stdout}"
    );
    assert!(!stdout.contains("bb-mine"), "{stdout}");
    assert_eq!(w.fake.machines(), ["bb-mine"], "the user's machine is kept");
    let gone = Command::new(w.fake.bin.join("smolvm"))
        .args(["machine", "delete", "--name", "bb-mine"])
        .output()
        .unwrap();
    assert!(gone.status.success(), "{}", text(&gone));
    assert_nothing_left(&w);
}
