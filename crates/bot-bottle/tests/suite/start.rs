//! `bot-bottle start` end to end on the native and the docker backend: a probe runs inside a
//! real bottle as the agent and checks the contract from inside, while the test checks from
//! outside what reached the upstreams (on loopback for native; for docker, whose sidecar runs
//! in a container, on the host side of a docker network the test creates).

use std::path::PathBuf;
use std::process::{Command, Output};

use test_support::{TestCa, Upstream};

const TOKEN: &str = "tok-e2e-REALSECRET-0123456789";

struct World {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
    upstream_git: PathBuf,
    /// What every `bot-bottle` command of the test gets: the backend and its settings.
    env: Vec<(String, String)>,
}

/// The backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Native,
    Docker,
    /// Under software emulation (`BOT_BOTTLE_QEMU_ACCEL=tcg`): this machine's KVM cannot boot
    /// a guest.
    Qemu,
}

/// Runs an end-to-end test on each backend: `<test>::native` and `<test>::docker`.
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn native() {
                super::$name(super::On::Native).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn docker() {
                super::$name(super::On::Docker).await
            }
        }
    )*};
}

on_each_backend!(
    a_probe_inside_a_bottle_sees_the_whole_contract,
    a_clean_exit_removes_the_state,
    the_request_log_outlives_a_clean_exit,
    a_failed_bottle_resumes_with_its_home_and_is_removed_after_a_clean_exit,
    stop_ends_a_running_bottle_and_keeps_its_state,
    stop_of_an_agent_that_ignores_sigterm_is_not_a_failure,
    two_bottles_at_once_each_see_only_their_own_sidecars,
    cleanup_removes_what_a_killed_start_left_and_keeps_preserved_state,
    the_health_check_sees_every_sidecar_answer,
    stop_right_after_start_waits_for_the_agent_and_stops_it,
    a_sidecar_killed_with_sigkill_stops_the_bottle_and_keeps_it,
);

/// The agent contract and the lifecycle (`list`, `stop`, `resume`) on qemu, under TCG.
mod qemu {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_probe_inside_a_bottle_sees_the_whole_contract() {
        super::a_probe_inside_a_bottle_sees_the_whole_contract(super::On::Qemu).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_exit_removes_the_state() {
        super::a_clean_exit_removes_the_state(super::On::Qemu).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_bottle_resumes_with_its_home_and_is_removed_after_a_clean_exit() {
        super::a_failed_bottle_resumes_with_its_home_and_is_removed_after_a_clean_exit(
            super::On::Qemu,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_ends_a_running_bottle_and_keeps_its_state() {
        super::stop_ends_a_running_bottle_and_keeps_its_state(super::On::Qemu).await
    }
}

/// The processes that hold a running native or qemu bottle are the small `bot-bottle-helper`
/// (built beside `bot-bottle`), not copies of all of `bot-bottle`.
mod small_helper {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn native() {
        super::the_bottle_is_held_by_the_small_helper(super::On::Native).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qemu() {
        super::the_bottle_is_held_by_the_small_helper(super::On::Qemu).await
    }
}

/// `start` ended by SIGTERM (a service manager stopping it, `kill`): on qemu as on native,
/// where `start` has no handler and the signal ends it (checked on native before this test:
/// exit by signal 15, the bottle killed with it by its parent-death signal, the state kept
/// as `stale` for `cleanup`). Nothing of the bottle may outlive it: no QEMU, no jail helper,
/// no sidecar bundle, and `cleanup` removes what is left on disk, the VM's runtime files too.
/// The bundle is stopped in order (its parent-death signal is SIGTERM), not killed: its
/// shutdown is where the git gate revokes the forge deploy keys it made.
mod sigterm_to_start {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn native() {
        super::sigterm_to_start_leaves_no_process_and_cleanup_removes_the_rest(super::On::Native)
            .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qemu() {
        super::sigterm_to_start_leaves_no_process_and_cleanup_removes_the_rest(super::On::Qemu)
            .await
    }
}

async fn sigterm_to_start_leaves_no_process_and_cleanup_removes_the_rest(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    // `info`: the bundle's log says when it stops in order
    let running = start_sleeping_with(&world, &[("BOT_BOTTLE_LOG", "info")]).await;
    let processes = descendants_by_pid(running.id());
    if on == On::Qemu {
        assert!(
            processes
                .iter()
                .any(|(_, exe, _)| exe.starts_with("qemu-system")),
            "{processes:?}"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || running.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    eprintln!("start ended: {}", out.status);
    // Each process of the bottle goes (the parent-death signal reaches them one after the
    // other); bounded generously for a loaded machine.
    let alive = || {
        processes
            .iter()
            .filter(|(pid, exe, _)| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(c.split(|b| *b == 0).next().unwrap_or_default())
                        .ends_with(exe.as_str())
                })
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    for _ in 0..600 {
        if alive().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(alive(), Vec::new(), "left running after SIGTERM to start");
    // The sidecar bundle was stopped in order, not killed: it ran its shutdown, which is where
    // the git gate revokes the forge deploy keys it made (nothing revokes them later, and
    // `cleanup` removes the state that lists them).
    let logs: Vec<String> = std::fs::read_dir(world.home.join("state"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("logs/sidecar.log")).ok())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].contains("sidecar bundle stopping"),
        "the sidecar bundle was killed without its shutdown:\n{}",
        logs[0]
    );
    let bottles = listed(&world);
    assert_eq!(bottles.as_array().unwrap().len(), 1, "{bottles}");
    assert_eq!(bottles[0]["state"], "stale", "{bottles}");
    let out = bot_bottle(&world).arg("cleanup").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(listed(&world).as_array().unwrap().len(), 0);
    let run = world.home.join("run");
    let mut left = Vec::new();
    let mut todo = vec![run.clone()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                left.push(e.path());
            }
        }
    }
    assert_eq!(
        left,
        Vec::<PathBuf>::new(),
        "runtime files left under {run:?}"
    );
}

use test_support::docker::{TestNetwork, base_image as docker_base};
use test_support::git::seeded_upstream;

fn usable(on: On) -> bool {
    let name = match on {
        On::Native => "native",
        On::Docker => "docker",
        On::Qemu => "qemu",
    };
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("doctor")
        .env("BOT_BOTTLE_QEMU_ACCEL", "tcg")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let usable = text
        .lines()
        .any(|l| l.starts_with(name) && l.contains(": usable"));
    if !usable {
        eprintln!("skipping: the {name} backend is not usable here:\n{text}");
        return false;
    }
    if on == On::Docker
        && let Err(why) = docker_base()
    {
        eprintln!("skipping: {why}");
        return false;
    }
    true
}

/// A workspace, a home, a bare upstream repository with one commit, and a manifest whose
/// route to `api.example.test` is pinned to the loopback upstream.
fn world(upstream: &Upstream, ca: &TestCa, on: On) -> World {
    // Short paths: Unix socket paths are limited to 107 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("bb")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    let (upstream_git, _) = seeded_upstream(tmp.path());
    let ca_path = tmp.path().join("upstream-ca.pem");
    ca.write_pem(&ca_path);
    let manifest = format!(
        r#"bottles:
  dev:
    env: {{PROBE_MODE: "1"}}
    git-gate:
      user: {{name: Probe, email: probe@example.com}}
      repos:
        app:
          url: {up}
    egress:
      upstream_ca: [{ca}]
      routes:
        - host: api.example.test
          connect_to: "{addr}"
          auth_scheme: Bearer
          token_env: E2E_TOKEN
          matches:
            - paths: [{{type: prefix, value: /v1/}}]
agents:
  demo:
    bottle: dev
"#,
        up = upstream_git.display(),
        ca = ca_path.display(),
        addr = upstream.addr(),
    );
    std::fs::write(workspace.join("bot-bottle.yaml"), manifest).unwrap();
    let mut env = vec![("E2E_TOKEN".to_owned(), TOKEN.to_owned())];
    if on == On::Qemu {
        eprintln!("the qemu bottle runs under TCG (software emulation)");
        env.extend([
            ("BOT_BOTTLE_BACKEND".to_owned(), "qemu".to_owned()),
            ("BOT_BOTTLE_QEMU_ACCEL".to_owned(), "tcg".to_owned()),
        ]);
    }
    if on == On::Docker {
        env.extend([
            ("BOT_BOTTLE_BACKEND".to_owned(), "docker".to_owned()),
            (
                "BOT_BOTTLE_DOCKER_BASE".to_owned(),
                docker_base().unwrap().to_owned(),
            ),
            // The local base has the tools; the agent CLI would come from npm.
            ("BOT_BOTTLE_DOCKER_AGENT_PACKAGE".to_owned(), String::new()),
        ]);
        // Started by root, the agent runs as uid 1000 and writes its workspace.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&workspace, Some(1000), Some(1000)).unwrap();
        }
    }
    World {
        _tmp: tmp,
        home,
        workspace,
        upstream_git,
        env,
    }
}

/// An upstream behind the pinned route, and a world around it; `None` (with the reason
/// printed) when the backend cannot run here.
async fn setup(on: On) -> Option<(Upstream, std::sync::Arc<World>, Option<TestNetwork>)> {
    if !usable(on) {
        return None;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("e2e upstream CA");
    let (upstream, network) = match on {
        On::Native | On::Qemu => (Upstream::start_tls(&ca, &["api.example.test"]).await, None),
        On::Docker => {
            let network = TestNetwork::create("bot-bottle-test-up").unwrap();
            let upstream =
                Upstream::start_tls_on(network.gateway, &ca, &["api.example.test"]).await;
            (upstream, Some(network))
        }
    };
    let world = std::sync::Arc::new(world(&upstream, &ca, on));
    Some((upstream, world, network))
}

fn start(world: &World, script: &str) -> Output {
    bot_bottle(world)
        .args(["start", "demo", "--", "bash", "-c", script])
        .output()
        .unwrap()
}

const PROBE: &str = r#"
set -u
ok() { echo "PASS $1"; }
no() { echo "FAIL $1: $2"; }
check() { name=$1; shift; if out=$("$@" 2>&1); then ok "$name"; else no "$name" "$out"; fi; }

code=$(curl -sS -o /dev/null -w '%{http_code}' https://api.example.test/v1/curl)
[ "$code" = 200 ] && ok curl-allowed || no curl-allowed "$code"

check python-allowed python3 -c '
import urllib.request
assert urllib.request.urlopen("https://api.example.test/v1/python").status == 200'

check node-allowed node -e '
const http = require("http"), tls = require("tls");
const req = http.request({host: "127.0.0.1", port: 3128, method: "CONNECT", path: "api.example.test:443"});
req.on("connect", (res, socket) => {
  if (res.statusCode !== 200) { console.error("connect", res.statusCode); process.exit(1); }
  const s = tls.connect({socket, servername: "api.example.test"}, () => {
    s.write("GET /v1/node HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n");
  });
  let data = ""; s.on("data", d => data += d);
  s.on("end", () => process.exit(data.startsWith("HTTP/1.1 200") ? 0 : 1));
  s.on("error", e => { console.error(e.message); process.exit(1); });
});
req.on("error", e => { console.error(e.message); process.exit(1); });
req.end();'

hdr=$(curl -sS -i http://blocked.example.test/ | tr -d '\r' | grep -i '^x-bot-bottle-blocked:')
[ -n "$hdr" ] && ok blocked-host || no blocked-host "no 403 header"
code=$(curl -sS -o /dev/null -w '%{http_code}' https://api.example.test/admin)
[ "$code" = 403 ] && ok blocked-path || no blocked-path "$code"

tools=$(curl -sS -X POST http://127.0.0.1:3130/mcp -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
case "$tools" in *egress-allow*) ok supervise-tools ;; *) no supervise-tools "$tools" ;; esac

cd /tmp
check git-clone git clone -q "$UPSTREAM" app
cd app
echo change >> README
git commit -qam "clean change"
check git-push-clean git push -q origin HEAD:main
k1=AKIA; k2=Q3EGRKPL7WZ5N2XB
printf 'aws_access_key_id = %s%s\n' "$k1" "$k2" > creds.txt
git add creds.txt && git commit -qm "oops"
if out=$(git push origin HEAD:main 2>&1); then no git-push-secret "accepted"; else
  case "$out" in *creds.txt*) ok git-push-secret ;; *) no git-push-secret "$out" ;; esac; fi

# Ask the operator for an exception through supervise; the test approves it from outside.
fp=$(printf '%s\n' "$out" | sed -n 's/.*fingerprint \([^ ]*\).*/\1/p' | head -n1 | tr -d '\r')
answer=$(python3 - "$fp" <<'EOF'
import json, os, sys, urllib.request
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "gitleaks-allow",
    "arguments": {"fingerprint": sys.argv[1], "justification": "test fixture, not a real key"}}})
req = urllib.request.Request(os.environ["BOT_BOTTLE_SUPERVISE_URL"], body.encode(), {
    "content-type": "application/json", "accept": "application/json, text/event-stream"})
print(urllib.request.urlopen(req, timeout=90).read().decode())
EOF
)
case "$answer" in *approved*) ok exception-approved ;; *) no exception-approved "$fp: $answer" ;; esac
check git-push-allowed git push -q origin HEAD:main

pat=REAL; pat="${pat}SECRET"
if env | grep -q "$pat"; then no env-clean "token in env"; else ok env-clean; fi
if grep -rqs "$pat" /proc/[0-9]*/environ /proc/[0-9]*/cmdline "$HOME" /etc /run 2>/dev/null; then
  no no-token-visible "found"; else ok no-token-visible; fi
[ "$(id -u)" != 0 ] && ok not-root || no not-root "uid 0"
echo PROBE-DONE
exit 7
"#;

async fn a_probe_inside_a_bottle_sees_the_whole_contract(on: On) {
    let Some((upstream, world, _network)) = setup(on).await else {
        return;
    };
    let script = format!(
        // `git clone /path` takes a local path before any `insteadOf`; `file://` goes
        // through the transport and so through the gate (real upstreams are ssh://).
        "export UPSTREAM=file://{}\n{PROBE}",
        world.upstream_git.display()
    );
    let w = world.clone();
    let running = tokio::task::spawn_blocking(move || start(&w, &script));
    // The operator: approve the agent's exception request as soon as it arrives.
    let mut approved = None;
    for _ in 0..1200 {
        if running.is_finished() {
            break;
        }
        let out = bot_bottle(&world)
            .args(["proposals", "list", "--json"])
            .output()
            .unwrap();
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(p) = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["tool"] == "gitleaks-allow")
        {
            let id = p["id"].as_str().unwrap().to_string();
            let ok = bot_bottle(&world)
                .args(["proposals", "approve", &id, "--notes", "fixture"])
                .output()
                .unwrap();
            assert!(
                ok.status.success(),
                "{}",
                String::from_utf8_lossy(&ok.stderr)
            );
            approved = Some(id);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = running.await.unwrap();
    assert!(approved.is_some(), "no gitleaks-allow proposal arrived");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .collect();
    pretty_assertions::assert_eq!(
        results,
        vec![
            "PASS curl-allowed",
            "PASS python-allowed",
            "PASS node-allowed",
            "PASS blocked-host",
            "PASS blocked-path",
            "PASS supervise-tools",
            "PASS git-clone",
            "PASS git-push-clean",
            "PASS git-push-secret",
            "PASS exception-approved",
            "PASS git-push-allowed",
            "PASS env-clean",
            "PASS no-token-visible",
            "PASS not-root",
        ],
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "the agent's exit code propagates"
    );
    assert!(stderr.contains("its state is kept"), "{stderr}");

    // What left the bottle: exactly the three allowed requests, each with the real token.
    let reqs = upstream.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, vec!["/v1/curl", "/v1/python", "/v1/node"]);
    for r in &reqs {
        assert_eq!(r.header("authorization"), vec![format!("Bearer {TOKEN}")]);
    }

    // The clean commit reached upstream; the secret only after the operator's exception.
    let log = Command::new("git")
        .args(["log", "--format=%s", "main"])
        .current_dir(&world.upstream_git)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout),
        "oops\nclean change\nseed\n"
    );

    // The decision is in the audit log, and the chain verifies.
    let audit = bot_bottle(&world)
        .args(["audit", "--json"])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("gitleaks-allow") && audit.contains("approved"),
        "{audit}"
    );
    let verify = bot_bottle(&world)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The failed run is kept for resume and listed as preserved.
    let listed = listed(&world);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["state"], "preserved");
    assert_eq!(listed[0]["agent"], "demo");
}

/// `(argv[0]'s file name, argv[1])` of every process under `pid` (not `pid` itself).
fn descendants(pid: u32) -> Vec<(String, String)> {
    descendants_by_pid(pid)
        .into_iter()
        .map(|(_, name, arg)| (name, arg))
        .collect()
}

/// `(pid, argv[0]'s file name, argv[1])` of every process under `pid` (not `pid` itself).
fn descendants_by_pid(pid: u32) -> Vec<(u32, String, String)> {
    let mut parent = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.push((p, ppid));
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (child, _) in parent.iter().filter(|(_, pp)| *pp == p) {
            todo.push(*child);
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let mut args = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned());
            let exe = args.next().unwrap_or_default();
            let name = exe.rsplit('/').next().unwrap_or_default().to_owned();
            found.push((*child, name, args.next().unwrap_or_default()));
        }
    }
    found
}

async fn the_bottle_is_held_by_the_small_helper(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let mut running = start_sleeping(&world).await;
    let processes = descendants(running.id());
    let _ = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || running.wait())
        .await
        .unwrap();
    assert!(
        processes
            .iter()
            .any(|(exe, arg)| exe == "bot-bottle-helper" && arg == "__bottle-init"),
        "no bot-bottle-helper under start: {processes:?}"
    );
    // All of `bot-bottle` runs only as the sidecar bundle.
    let big: Vec<_> = processes
        .iter()
        .filter(|(exe, arg)| exe == "bot-bottle" && arg != "sidecar")
        .collect();
    assert!(
        big.is_empty(),
        "copies of bot-bottle: {big:?} in {processes:?}"
    );
    if on == On::Qemu {
        assert!(
            processes
                .iter()
                .any(|(exe, _)| exe.starts_with("qemu-system")),
            "QEMU runs under the helper: {processes:?}"
        );
    }
}

async fn a_clean_exit_removes_the_state(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let script = "test -n \"$HTTPS_PROXY\" && echo $BOT_BOTTLE_IDENTITY";
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || start(&w, script))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let identity = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(identity.starts_with("demo-"), "{identity:?}");
    // Gone when `start` returns: its state, its queue, its runtime directory.
    let state = world.home.join("state");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "state left behind: {left:?}");
    for dir in [
        world.home.join("queue").join(&identity),
        world.home.join("run/native").join(&identity),
        world.home.join("run/qemu/jail").join(&identity),
    ] {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert_eq!(listed(&world), serde_json::json!([]));
    if on == On::Docker {
        // Nothing of it runs any more (its sidecar was stopped before `start` returned);
        // its containers and networks are removed by the trash's remover.
        assert_eq!(docker_running(&identity), Vec::<String>::new());
        // A new bottle of the same agent starts at once, beside what is left of the first.
        let w = world.clone();
        let again = tokio::task::spawn_blocking(move || start(&w, script))
            .await
            .unwrap();
        assert_eq!(
            again.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        let second = String::from_utf8_lossy(&again.stdout).trim().to_string();
        assert_ne!(second, identity);
        trash_empties(&world).await;
        assert_eq!(docker_objects(&second), Vec::<String>::new());
    }
    // Their files are removed after `start` returned, by a remover of their own.
    trash_empties(&world).await;
    if on == On::Docker {
        assert_eq!(docker_objects(&identity), Vec::<String>::new());
    }
    // A remover killed before it finished leaves its entries: the next `start` hands them
    // to a new remover, and `cleanup` removes them itself.
    let leftover = |n: u32| {
        let entry = world
            .home
            .join("trash")
            .join(format!("demo-0000{n}.state.1.2.{n}"));
        std::fs::create_dir_all(entry.join("ca")).unwrap();
        std::fs::write(entry.join("ca/key.pem"), "left by a killed remover").unwrap();
    };
    leftover(1);
    // On docker, what a killed remover left of a bottle's objects: its record in the trash
    // and, still on the daemon, a network of its own.
    if on == On::Docker {
        docker_leftover(&world, "demo-0000a");
    }
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || start(&w, script))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    trash_empties(&world).await;
    if on == On::Docker {
        assert_eq!(docker_objects("demo-0000a"), Vec::<String>::new());
        docker_leftover(&world, "demo-0000b");
    }
    leftover(2);
    let out = bot_bottle(&world).arg("cleanup").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    if on == On::Docker {
        assert!(text.contains("ended bottle directories left in"), "{text}");
        assert_eq!(docker_objects("demo-0000b"), Vec::<String>::new());
    } else {
        assert!(text.contains("ended bottle directory left in"), "{text}");
    }
    assert_eq!(trash_entries(&world), Vec::<String>::new());
}

/// What a trash remover killed before it finished leaves of docker bottle `identity`: a
/// network of its bottle on the daemon (with its labels, from a launcher long gone) and the
/// record naming it in the trash.
fn docker_leftover(world: &World, identity: &str) {
    let out = Command::new("docker")
        .args(["network", "create", "--internal"])
        .args(["--label", "org.bot-bottle.managed=true"])
        .args(["--label", &format!("org.bot-bottle.identity={identity}")])
        .args(["--label", "org.bot-bottle.role=internal-network"])
        .args(["--label", "org.bot-bottle.launcher=gone:1:1"])
        .arg(format!("bot-bottle-net-{identity}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = serde_json::json!({"identity": identity, "socket": "/var/run/docker.sock"});
    std::fs::write(
        world
            .home
            .join("trash")
            .join(format!("{identity}.docker.1.2.3.record")),
        record.to_string(),
    )
    .unwrap();
    assert_eq!(docker_objects(identity).len(), 1);
}

/// The containers of a docker bottle that still run.
fn docker_running(identity: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.ends_with(identity))
        .map(str::to_owned)
        .collect()
}

/// A trash remover that cannot remove an entry says so where the operator looks: the next
/// `start`, `list` and `cleanup` name the entry, the error and what to do, until it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trash_removers_failures_are_shown_by_start_list_and_cleanup() {
    let Some((_upstream, world, _network)) = setup(On::Native).await else {
        return;
    };
    // What an ended docker bottle left, on a daemon that does not answer (its socket is gone).
    let trash = world.home.join("trash");
    std::fs::create_dir_all(&trash).unwrap();
    let record = trash.join("demo-0000c.docker.1.2.3.record");
    std::fs::write(
        &record,
        r#"{"identity": "demo-0000c", "socket": "/nonexistent/docker.sock"}"#,
    )
    .unwrap();
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || start(&w, "true"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The remover this start spawned fails, and writes down why.
    let failures = trash.join(".failures");
    for _ in 0..600 {
        if failures.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let said = std::fs::read_to_string(&failures).expect("the remover's failure is kept");
    let expected = format!(
        "the trash remover cannot remove what {} records:",
        record.display()
    );
    assert!(said.starts_with(&expected), "{said}");
    for part in [
        "/nonexistent/docker.sock",
        "`bot-bottle cleanup` tries again",
    ] {
        assert!(said.contains(part), "{part}: {said}");
    }
    let line = said.trim_end();
    // `list`: on stderr, its JSON untouched.
    let out = bot_bottle(&world)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("bot-bottle: {line}\n")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    // The next `start`.
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || start(&w, "true"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(line),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `cleanup` tries again itself and fails naming it.
    let out = bot_bottle(&world).arg("cleanup").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(record.exists());
    // Gone (removed by hand here): nothing is said any more.
    std::fs::remove_file(&record).unwrap();
    let out = bot_bottle(&world).arg("cleanup").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!failures.exists());
    let out = bot_bottle(&world)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// What is in the home's trash (its lock aside).
fn trash_entries(world: &World) -> Vec<String> {
    std::fs::read_dir(world.home.join("trash"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock")
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the trash is empty (its remover runs after `start` returned).
async fn trash_empties(world: &World) {
    for _ in 0..600 {
        if trash_entries(world).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the trash was not emptied: {:?}", trash_entries(world));
}

async fn the_request_log_outlives_a_clean_exit(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || {
        start(
            &w,
            "curl -sS -o /dev/null https://blocked.example.test/secret-path; echo $BOT_BOTTLE_IDENTITY",
        )
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let identity = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(listed(&world), serde_json::json!([]));
    assert!(
        world
            .home
            .join("logs/bottles")
            .join(&identity)
            .join("egress.jsonl")
            .is_file()
    );
    let logs = bot_bottle(&world)
        .args(["logs", &identity])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&logs.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].ends_with(" blocked 403 CONNECT blocked.example.test (host-not-allowed)"),
        "{text}"
    );
    let unknown = bot_bottle(&world)
        .args(["logs", "demo-00000"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        format!(
            "error: no logs of bottle `demo-00000`: it is not in `bot-bottle list`, and {} has no logs of it (the logs of the last 20 ended bottles are kept there)\n",
            world.home.join("logs/bottles").display()
        )
    );
}

fn bot_bottle(world: &World) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
    cmd.current_dir(&world.workspace)
        .env("BOT_BOTTLE_HOME", &world.home)
        .envs(world.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    cmd
}

/// `start` with an agent that sleeps; returns once the agent runs (it marks the mounted
/// workspace).
async fn start_sleeping(world: &World) -> std::process::Child {
    start_sleeping_with(world, &[]).await
}

/// [`start_sleeping`] with more environment for `start` (and so for its sidecar bundle).
async fn start_sleeping_with(world: &World, env: &[(&str, &str)]) -> std::process::Child {
    let mut child = bot_bottle(world)
        .envs(env.iter().copied())
        .args([
            "start",
            "demo",
            "--",
            "bash",
            "-c",
            "touch started; exec sleep 60",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded generously: a qemu bottle under TCG on a loaded machine takes tens of seconds
    // to boot; a `start` that ended is not waited for.
    for _ in 0..4800 {
        if world.workspace.join("started").exists() {
            return child;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "the agent never started ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listed(world: &World) -> serde_json::Value {
    let out = bot_bottle(world).args(["list", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn a_failed_bottle_resumes_with_its_home_and_is_removed_after_a_clean_exit(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let w = world.clone();
    let script = "test -f \"$HOME/marker\" && exit 0; touch \"$HOME/marker\"; exit 5";
    let first = tokio::task::spawn_blocking(move || start(&w, script))
        .await
        .unwrap();
    assert_eq!(first.status.code(), Some(5));
    let list = listed(&world);
    assert_eq!(list[0]["state"], "preserved", "{list}");
    let identity = list[0]["identity"].as_str().unwrap().to_string();

    let w = world.clone();
    let resumed = tokio::task::spawn_blocking(move || {
        bot_bottle(&w).args(["resume", &identity]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "the resumed bottle kept its home: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(listed(&world), serde_json::json!([]));
}

async fn stop_ends_a_running_bottle_and_keeps_its_state(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let mut running = start_sleeping(&world).await;
    let mut identity = None;
    for _ in 0..200 {
        let list = listed(&world);
        if list.get(0).and_then(|b| b["state"].as_str()) == Some("running") {
            identity = list[0]["identity"].as_str().map(str::to_string);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let identity = identity.expect("the bottle shows up as running");
    // The agent may not have started yet when the state appears: retry until stop finds it.
    let mut stopped = false;
    for _ in 0..100 {
        let out = bot_bottle(&world)
            .args(["stop", &identity, "--grace", "2", "--keep"])
            .output()
            .unwrap();
        if out.status.success() {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(stopped, "stop never succeeded");
    let status = tokio::task::spawn_blocking(move || running.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a stop the operator asked for is not a failure"
    );
    let list = listed(&world);
    assert_eq!(list[0]["identity"], identity.as_str());
    assert_eq!(list[0]["state"], "preserved", "--keep keeps the state");
    // Thrown away on request: asked first, then gone.
    let refused = bot_bottle(&world)
        .args(["discard", &identity])
        .output()
        .unwrap();
    assert_eq!(
        (
            refused.status.code(),
            String::from_utf8_lossy(&refused.stderr).into_owned()
        ),
        (
            Some(2),
            format!(
                "error: discarding bottle `{identity}` needs a confirmation and stdin is not a terminal; pass --yes\n"
            )
        )
    );
    let discarded = bot_bottle(&world)
        .args(["discard", &identity, "--yes"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&discarded.stdout),
        format!("discarded {identity} (its logs are kept: `bot-bottle logs {identity}`)\n")
    );
    assert_eq!(listed(&world), serde_json::json!([]));
}

async fn stop_of_an_agent_that_ignores_sigterm_is_not_a_failure(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let running = bot_bottle(&world)
        .args([
            "start",
            "demo",
            "--",
            "bash",
            "-c",
            "trap '' TERM; touch started; while :; do sleep 1; done",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut identity = None;
    for _ in 0..400 {
        if world.workspace.join("started").exists() {
            identity = listed(&world)
                .get(0)
                .and_then(|b| b["identity"].as_str())
                .map(str::to_owned);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let identity = identity.expect("the agent runs");
    let stop = bot_bottle(&world)
        .args(["stop", &identity, "--grace", "1"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stop.stdout),
        format!("stopped {identity}\n")
    );
    let out = tokio::task::spawn_blocking(move || running.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bot-bottle: {identity} stopped by `bot-bottle stop` (the agent ended with 137)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("exited with an error"), "{stderr}");
    // not preserved: removed as after a clean exit
    assert_eq!(listed(&world), serde_json::json!([]));
}

async fn two_bottles_at_once_each_see_only_their_own_sidecars(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    // A second agent whose bottle allows a different host.
    let manifest_path = world.workspace.join("bot-bottle.yaml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap().replace(
        "agents:\n",
        "  other:\n    egress:\n      routes:\n        - host: other.example.test\nagents:\n  other:\n    bottle: other\n",
    );
    std::fs::write(&manifest_path, manifest).unwrap();
    let probe = "for i in $(seq 50); do [ -e both ] && break; sleep 0.1; done; \
                 curl -sS http://_egress.local/allowlist; echo; echo ID=$BOT_BOTTLE_IDENTITY";
    let spawn = |agent: &str| {
        bot_bottle(&world)
            .args(["start", agent, "--", "bash", "-c", probe])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("demo");
    let b = spawn("other");
    // Both are running before either answers.
    for _ in 0..400 {
        let list = listed(&world);
        let running = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["state"] == "running")
            .count();
        if running == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::fs::write(world.workspace.join("both"), "").unwrap();
    let (a, b) = tokio::task::spawn_blocking(move || {
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let a_out = String::from_utf8_lossy(&a.stdout).to_string();
    let b_out = String::from_utf8_lossy(&b.stdout).to_string();
    assert!(
        a.status.success(),
        "{a_out}{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert!(
        b.status.success(),
        "{b_out}{}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(
        a_out.contains("api.example.test") && !a_out.contains("other.example.test"),
        "{a_out}"
    );
    assert!(
        b_out.contains("other.example.test") && !b_out.contains("api.example.test"),
        "{b_out}"
    );
    assert!(a_out.contains("ID=demo-") && b_out.contains("ID=other-"));
}

async fn cleanup_removes_what_a_killed_start_left_and_keeps_preserved_state(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    // One preserved bottle...
    let w = world.clone();
    let failed = tokio::task::spawn_blocking(move || start(&w, "exit 9"))
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(9));
    // ...and one whose `start` is killed outright.
    let mut running = start_sleeping(&world).await;
    running.kill().unwrap();
    running.wait().unwrap();
    if on == On::Docker {
        // Containers are dockerd's children, not the launcher's: its reaper removes them,
        // as a native bottle dies with its launcher.
        let killed = listed(&world)
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["state"] == "stale")
            .and_then(|b| b["identity"].as_str())
            .expect("the killed bottle is listed as stale")
            .to_owned();
        let mut left = docker_objects(&killed);
        for _ in 0..300 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            left = docker_objects(&killed);
        }
        assert_eq!(left, Vec::<String>::new(), "what the killed {killed} left");
    }
    let states: Vec<String> = listed(&world)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["preserved", "stale"], "{states:?}");
    // The killed bottle's state was written (and made durable) before its agent ran, the
    // metadata `resume` reads and the live routes among it: whole, as for a clean start.
    let bottles = listed(&world);
    let killed = bottles
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["state"] == "stale")
        .expect("the killed bottle is listed as stale");
    assert_eq!(killed["agent"], "demo", "its metadata: {killed}");
    let state_dir = world
        .home
        .join("state")
        .join(killed["identity"].as_str().unwrap());
    for file in [
        "metadata.json",
        "live-config/routes.yaml",
        "home/.gitconfig",
    ] {
        let text = std::fs::read_to_string(state_dir.join(file)).unwrap_or_default();
        assert!(
            !text.trim().is_empty(),
            "{file} of the killed bottle: {text:?}"
        );
    }

    let out = bot_bottle(&world).arg("cleanup").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("removed state of demo-"), "{text}");
    assert!(text.contains("kept preserved bottle demo-"), "{text}");
    let left = listed(&world);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["state"], "preserved");
}

async fn the_health_check_sees_every_sidecar_answer(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let mut running = start_sleeping(&world).await;
    let identity = listed(&world)[0]["identity"].as_str().unwrap().to_owned();
    let config = world
        .home
        .join("state")
        .join(&identity)
        .join("sidecar.json");
    let check = || {
        bot_bottle(&world)
            .args(["sidecar", "--config"])
            .arg(&config)
            .arg("--check")
            .output()
            .unwrap()
    };
    match on {
        On::Native | On::Qemu => {
            let out = check();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "egress: answering\ngit gate: answering\nsupervise: answering\n"
            );
            assert!(out.status.success());
        }
        On::Docker => {
            // The same check is the sidecar container's HEALTHCHECK (every 10 s).
            let container = format!("bot-bottle-sidecar-{identity}");
            let mut health = String::new();
            // The first check runs 10 s after the start; allow for a loaded machine.
            for _ in 0..240 {
                let out = Command::new("docker")
                    .args(["inspect", "-f", "{{.State.Health.Status}}", &container])
                    .output()
                    .unwrap();
                health = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if health != "starting" {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            assert_eq!(health, "healthy");
        }
    }
    // Kept (`--keep`), so that its sidecar config stays to check against.
    let _ = bot_bottle(&world)
        .args(["stop", &identity, "--grace", "1", "--keep"])
        .output()
        .unwrap();
    tokio::task::spawn_blocking(move || running.wait().unwrap())
        .await
        .unwrap();
    if on == On::Native {
        // A bundle that is gone fails the check, naming each sidecar.
        let out = check();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.lines().count() == 3 && text.lines().all(|l| l.contains(": not answering (")),
            "{text}"
        );
    }
}

async fn stop_right_after_start_waits_for_the_agent_and_stops_it(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    let running = bot_bottle(&world)
        .args(["start", "demo", "--", "sleep", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // As soon as the bottle is listed (its state exists), before its agent runs.
    let mut identity = None;
    for _ in 0..400 {
        if let Some(id) = listed(&world)
            .get(0)
            .and_then(|b| b["identity"].as_str())
            .map(str::to_owned)
        {
            identity = Some(id);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let identity = identity.expect("the bottle is listed");
    let stop = bot_bottle(&world)
        .args(["stop", &identity, "--grace", "2"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&stop.stdout),
        format!("stopped {identity}\n")
    );
    let out = tokio::task::spawn_blocking(move || running.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn a_sidecar_killed_with_sigkill_stops_the_bottle_and_keeps_it(on: On) {
    let Some((_upstream, world, _network)) = setup(on).await else {
        return;
    };
    // An agent that ignores SIGTERM: the bottle is `stopping` for the whole grace period.
    // Resumed, it finds the mark in its kept home and exits cleanly.
    let running = bot_bottle(&world)
        .args([
            "start",
            "demo",
            "--",
            "bash",
            "-c",
            "test -f \"$HOME/again\" && exit 0; touch \"$HOME/again\"; \
             trap '' TERM; touch started; while :; do sleep 1; done",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if world.workspace.join("started").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        world.workspace.join("started").exists(),
        "the agent never started"
    );
    let identity = listed(&world)[0]["identity"].as_str().unwrap().to_owned();
    let sidecar = match on {
        On::Native | On::Qemu => native_sidecar_pid(running.id()),
        On::Docker => docker_sidecar_pid(&identity),
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // While its `start` stops it, `list` no longer says `running`.
    let mut states = Vec::new();
    for _ in 0..200 {
        let state = listed(&world)[0]["state"].as_str().unwrap().to_owned();
        let done = state != "running";
        states.push(state);
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("stopping"),
        "{states:?}"
    );
    let out = tokio::task::spawn_blocking(move || running.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Said at once on the operator's terminal, then as `start`'s error.
    assert!(
        stderr.contains(&format!(
            "bot-bottle: the sidecar bundle of {identity} was killed by signal 9 (SIGKILL); nothing can leave the bottle without it, so the bottle is being stopped and its state kept for `bot-bottle resume {identity}`\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: the sidecar bundle of {identity} was killed by signal 9 (SIGKILL) while the agent ran, so the bottle was stopped (nothing could leave it); its state is kept"
        )),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // No longer `running`: kept for resume, with its live routes.
    let list = listed(&world);
    assert_eq!(list[0]["identity"], identity.as_str(), "{list}");
    assert_eq!(list[0]["state"], "preserved", "{list}");
    let state = world.home.join("state").join(&identity);
    assert!(state.join("live-config/routes.yaml").is_file());
    if on == On::Docker {
        // Nothing of it runs; its objects go with the trash's remover.
        assert_eq!(docker_running(&identity), Vec::<String>::new());
        trash_empties(&world).await;
        assert_eq!(docker_objects(&identity), Vec::<String>::new());
    }
    // `resume` brings it back with a new bundle.
    let w = world.clone();
    let resumed = tokio::task::spawn_blocking(move || {
        bot_bottle(&w).args(["resume", &identity]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(listed(&world), serde_json::json!([]));
}

/// The sidecar bundle of a native bottle: the child of its `start` running `sidecar`.
fn native_sidecar_pid(start: u32) -> i32 {
    for entry in std::fs::read_dir("/proc").unwrap() {
        let name = entry.unwrap().file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(start) && cmdline.windows(8).any(|w| w == b"sidecar\0") {
            return pid;
        }
    }
    panic!("no sidecar bundle under start {start}");
}

/// The host pid of a docker bottle's sidecar bundle (PID 1 of its container).
fn docker_sidecar_pid(identity: &str) -> i32 {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Pid}}",
            &format!("bot-bottle-sidecar-{identity}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

/// The containers and networks of a docker bottle that still exist.
fn docker_objects(identity: &str) -> Vec<String> {
    let mut names = Vec::new();
    for args in [
        ["ps", "-a", "--format", "{{.Names}}"],
        ["network", "ls", "--format", "{{.Name}}"],
    ] {
        let out = Command::new("docker").args(args).output().unwrap();
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|n| n.ends_with(identity))
                .map(str::to_owned),
        );
    }
    names
}

fn refused(backend: &str, env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bot-bottle.yaml"),
        "bottles: {dev: {}}\nagents: {demo: {bottle: dev}}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["start", "demo", "--backend", backend, "--", "true"])
        .current_dir(tmp.path())
        .env("BOT_BOTTLE_HOME", tmp.path().join("h"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("h/state").exists(), "nothing was created");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn smolmachines_and_apple_are_refused_with_their_fixes_before_anything_starts() {
    // No smolvm on this machine's PATH (the test says so when one is installed).
    if backend::preflight::find_in_path("smolvm").is_some() {
        eprintln!("skipped the smolmachines half: smolvm is installed here");
    } else {
        let err = refused("smolmachines", &[]);
        assert!(err.contains("smolmachines"), "{err}");
        assert!(
            err.contains("smolvm not found on PATH") && err.contains("smolmachines.com/install.sh"),
            "{err}"
        );
    }
    if cfg!(target_os = "linux") {
        let err = refused("apple", &[]);
        assert!(err.contains("only available on macOS"), "{err}");
    }
}

#[test]
fn docker_without_a_daemon_is_refused_with_the_fix_before_anything_starts() {
    let err = refused(
        "docker",
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert!(
        err.starts_with("error: the docker backend cannot isolate a bottle on this machine, so nothing was started"),
        "{err}"
    );
    assert!(err.contains("/nonexistent/docker.sock"), "{err}");
}

#[test]
fn cleanup_without_a_docker_daemon_still_cleans_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("cleanup")
        .env("BOT_BOTTLE_HOME", tmp.path().join("h"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // No bottle of this home used docker: nothing to say about it (see
    // `friction::cleanup_speaks_of_a_missing_docker_only_when_a_bottle_used_it`).
    assert_eq!(stderr, "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nothing to clean up\n"
    );
}

#[test]
fn docker_bottle_dockerfile_is_built_and_a_failed_build_shows_its_log_and_starts_nothing() {
    if !usable(On::Docker) {
        return;
    }
    let base = docker_base().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(workspace.join("image")).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&workspace, Some(1000), Some(1000)).unwrap();
    }
    std::fs::write(
        workspace.join("bot-bottle.yaml"),
        "bottles:\n  dev:\n    agent_provider: {template: claude, dockerfile: ./image/Dockerfile}\nagents:\n  demo:\n    bottle: dev\n",
    )
    .unwrap();
    let start = |dockerfile: &str| {
        std::fs::write(workspace.join("image/Dockerfile"), dockerfile).unwrap();
        std::fs::write(workspace.join("image/marker"), "from the build context\n").unwrap();
        Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .args([
                "start",
                "demo",
                "--backend",
                "docker",
                "--",
                "cat",
                "/marker",
            ])
            .current_dir(&workspace)
            .env("BOT_BOTTLE_HOME", tmp.path().join("h"))
            .env("BOT_BOTTLE_DOCKER_BASE", base)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // The bottle's own Dockerfile, with its directory as the build context.
    let ok = start(&format!("FROM {base}\nCOPY marker /marker\n"));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "from the build context\n",
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(ok.status.success());
    // A build that fails: its log and the hint, exit 2, nothing left behind.
    let failed = start(&format!(
        "FROM {base}\nRUN echo building-step-fails && false\n"
    ));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot prepare the agent's container")
            && stderr.contains("full build log:")
            && stderr.contains("building-step-fails")
            && stderr.contains("\nhint: "),
        "{stderr}"
    );
    let state = tmp.path().join("h/state");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "state left behind: {left:?}");
}
