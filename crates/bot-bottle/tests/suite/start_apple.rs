//! `bot-bottle start --backend apple` end to end on Linux, against the stand-in for Apple's
//! `container` CLI (`test_support::apple_container`: Apple's argument parsing, state and
//! `inspect` JSON, with the containers run by docker; `$BOT_BOTTLE_APPLE_CLI` names it). No
//! Mac is available to the project: these tests prove the launcher → backend → CLI path, the
//! agent's contract from inside, the exit code, `stop`, `cleanup` and the refusals; they do not
//! prove Apple's runtime itself.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use test_support::apple_container::FakeAppleCli;

const TOKEN: &str = "tok-apple-REALSECRET-0123456789";

struct World {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
    fake: FakeAppleCli,
    base: String,
}

/// A workspace, a home and a stand-in CLI; `None` (with the reason printed) without docker
/// and its local base image (the stand-in runs the containers in docker).
fn world() -> Option<World> {
    let base = match test_support::docker::base_image() {
        Ok(base) => base.to_owned(),
        Err(why) => {
            eprintln!("skipping: the apple stand-in runs its containers in docker: {why}");
            return None;
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("bba")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    // Started by root, the agent runs as uid 1000 and writes its workspace.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&workspace, Some(1000), Some(1000)).unwrap();
    }
    // One route with a token: the token reaches the sidecar container, never a command line.
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
    let fake = FakeAppleCli::new().unwrap();
    Some(World {
        _tmp: tmp,
        home,
        workspace,
        fake,
        base,
    })
}

fn bot_bottle(w: &World) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
    cmd.current_dir(&w.workspace)
        .env("BOT_BOTTLE_HOME", &w.home)
        .env("BOT_BOTTLE_BACKEND", "apple")
        .env("BOT_BOTTLE_APPLE_CLI", &w.fake.cli)
        .env("BOT_BOTTLE_DOCKER_BASE", &w.base)
        // The local base has the tools; the agent CLI would come from npm.
        .env("BOT_BOTTLE_DOCKER_AGENT_PACKAGE", "")
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

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Nothing of the bottle is left, on the Apple side or in docker.
fn assert_nothing_left(w: &World) {
    let (networks, containers) = w.fake.resources();
    assert!(
        networks.is_empty() && containers.is_empty(),
        "left behind: networks {networks:?}, containers {containers:?}"
    );
    assert_eq!(w.fake.docker_objects(), Vec::<String>::new());
}

fn listed(w: &World) -> serde_json::Value {
    let out = bot_bottle(w).args(["list", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)))
}

const PROBE: &str = r#"
set -u
[ "$(id -u)" = 1000 ] && echo "PASS uid-1000" || echo "FAIL uid-1000 $(id -u)"
[ "$HTTPS_PROXY" = http://127.0.0.1:3128 ] && echo "PASS proxy-env" || echo "FAIL proxy-env $HTTPS_PROXY"
hdr=$(curl -sS -i http://blocked.example.test/ | tr -d '\r' | grep -i '^x-bot-bottle-blocked:')
[ -n "$hdr" ] && echo "PASS sidecar-answers" || echo "FAIL sidecar-answers"
pat=REAL; pat="${pat}SECRET"
if env | grep -q "$pat"; then echo "FAIL env-clean"; else echo "PASS env-clean"; fi
touch ran
exit 7
"#;

#[test]
fn start_runs_the_agent_beside_its_sidecar_container_and_returns_its_exit_code() {
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
            "PASS env-clean"
        ],
        "{}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("its state is kept"),
        "{}",
        text(&out)
    );
    // The backend's whole conversation with the CLI, in order; no token on any command line.
    let calls = w.fake.calls();
    let first_words = |c: &String| -> String {
        let w: Vec<&str> = c.split_whitespace().collect();
        match w.as_slice() {
            ["network" | "system" | "image", sub, ..] => format!("{} {sub}", w[0]),
            [sub, ..] => (*sub).to_owned(),
            [] => String::new(),
        }
    };
    let steps: Vec<String> = calls
        .iter()
        .map(first_words)
        .filter(|s| !matches!(s.as_str(), "inspect" | "logs" | "image inspect" | "build"))
        .collect();
    assert_eq!(
        steps,
        [
            "system status",
            "system status",
            "network create",
            "network create",
            "network inspect",
            "run",
            "create",
            "start",
            "kill",
            "delete",
            "network delete"
        ],
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("network create --internal ")),
        "{calls:#?}"
    );
    for call in &calls {
        assert!(!call.contains(TOKEN), "a token on a command line: {call}");
    }
    assert_nothing_left(&w);
    // The failed run is kept for resume, as on every backend.
    let list = listed(&w);
    assert_eq!(list[0]["state"], "preserved", "{list}");
    assert_eq!(list[0]["backend"], "apple", "{list}");
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

#[test]
fn stop_ends_a_running_apple_bottle_and_nothing_is_left() {
    let Some(w) = world() else { return };
    let child = start_sleeping(&w);
    let list = listed(&w);
    assert_eq!(list[0]["state"], "running", "{list}");
    let identity = list[0]["identity"].as_str().unwrap().to_owned();
    let stop = bot_bottle(&w).args(["stop", &identity]).output().unwrap();
    assert!(stop.status.success(), "{}", text(&stop));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        w.fake
            .calls()
            .iter()
            .any(|c| c.starts_with("stop --time ") && c.ends_with(&format!("bb-{identity}-agent"))),
        "{:#?}",
        w.fake.calls()
    );
    assert_nothing_left(&w);
    assert_eq!(listed(&w), serde_json::json!([]));
}

#[test]
fn cleanup_kills_the_bottle_of_a_killed_start_and_removes_its_networks() {
    let Some(w) = world() else { return };
    let mut child = start_sleeping(&w);
    let list = listed(&w);
    let identity = list[0]["identity"].as_str().unwrap().to_owned();
    // A `start` killed at once cannot tear anything down.
    child.kill().unwrap();
    child.wait().unwrap();
    let (networks, containers) = w.fake.resources();
    assert_eq!(networks.len(), 2, "{networks:?}");
    assert_eq!(containers.len(), 2, "{containers:?}");

    let dry = bot_bottle(&w)
        .args(["cleanup", "--dry-run"])
        .output()
        .unwrap();
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        dry_text.contains(&format!("would kill orphaned bottle {identity} (apple)")),
        "{dry_text}"
    );
    assert_eq!(w.fake.resources().0.len(), 2, "a dry run removes nothing");

    let out = bot_bottle(&w).args(["cleanup"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for line in [
        format!("killed orphaned bottle {identity} (apple)"),
        format!("removed network bb-{identity}-agent"),
        format!("removed network bb-{identity}-egress"),
    ] {
        assert!(stdout.contains(&line), "{line} not in:\n{stdout}");
    }
    assert_nothing_left(&w);
    // A second cleanup has nothing of the backend's left to do.
    let again = bot_bottle(&w).args(["cleanup"]).output().unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(!again.contains("network"), "{again}");
}

#[test]
fn a_network_the_cli_does_not_confirm_host_only_refuses_before_the_agent_runs() {
    let Some(w) = world() else { return };
    for (fault, expect) in [
        (
            "internal-ignored",
            "is in mode \"nat\", not hostOnly (host-only): the agent could reach beyond its sidecar; refusing to start the agent",
        ),
        ("adds-default-network", "alone; refusing to start the agent"),
        ("drops-readonly", "mounts are"),
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
        // is `start`'s notice about the unset token), and nothing about objects set-up never
        // made.
        let first = stderr
            .lines()
            .find(|l| !l.contains("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN is not set"))
            .unwrap_or_default();
        assert!(
            first.starts_with("error: could not set up the bottle")
                && !stderr.contains("not found")
                && !stderr.contains("WARN"),
            "{fault}: {}",
            text(&out)
        );
        assert!(!w.workspace.join("ran").exists(), "{fault}: the agent ran");
        assert!(
            !w.fake.calls().iter().any(|c| c.starts_with("start ")),
            "{fault}: {:#?}",
            w.fake.calls()
        );
        assert_nothing_left(&w);
    }
    // A stopped API server is refused by the preflight, with the fix, before anything.
    w.fake.set_faults(&["api-server-stopped"]);
    let before = w.fake.calls().len();
    let out = start(&w, "touch ran; exit 0");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the container API server is not running")
            && stderr.contains("fix: container system start"),
        "{}",
        text(&out)
    );
    let after: Vec<String> = w.fake.calls().split_off(before);
    assert_eq!(after, ["system status"], "only the preflight asked");
}

#[test]
fn doctor_names_the_stand_in_and_without_one_apple_stays_macos_only() {
    let fake = FakeAppleCli::new().unwrap();
    let doctor = |cli: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
        cmd.arg("doctor").env_remove("BOT_BOTTLE_APPLE_CLI");
        if let Some(cli) = cli {
            cmd.env("BOT_BOTTLE_APPLE_CLI", cli);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("apple:"))
            .unwrap()
            .to_owned()
    };
    let line = doctor(Some(&fake.cli));
    assert!(line.starts_with("apple: usable"), "{line}");
    assert!(
        line.contains(&format!(
            "not macOS: {} (BOT_BOTTLE_APPLE_CLI) stands in for Apple's container CLI",
            fake.cli.display()
        )),
        "{line}"
    );
    if cfg!(target_os = "linux") {
        let line = doctor(None);
        assert_eq!(
            line,
            "apple: not usable: only available on macOS; fix: use --backend native on Linux"
        );
    }
}
