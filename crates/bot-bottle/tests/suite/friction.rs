//! A newcomer's first runs (issue 16 §3): each refusal names the input and says the fix.

use std::path::Path;
use std::process::Command;

use pretty_assertions::assert_eq;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bot-bottle ARGS` in `cwd` with `HOME` = `home` and no `BOT_BOTTLE_*` variables.
fn run(cwd: &Path, home: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_HOME")
        .env_remove("BOT_BOTTLE_BACKEND")
        .env_remove("BOT_BOTTLE_LOG")
        .env("HOME", home)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn start_from_home_says_to_run_it_in_the_project_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("u");
    // A home that has been used: the state directory exists, no manifest anywhere.
    std::fs::create_dir_all(home.join(".bot-bottle/state")).unwrap();
    for args in [
        &["start", "demo"][..],
        &["start", "--copy-cwd", "demo"][..],
        &["start", "--backend", "docker", "demo"][..],
    ] {
        let r = run(&home, &home, args);
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (
                2,
                "",
                format!(
                    "error: bot-bottle start gives the bottle the directory it runs in, and {} is your home directory, with your credentials (~/.ssh, ~/.bot-bottle...); cd into your project directory (e.g. `cd ~/src/myproject`) and run it there\n",
                    home.display()
                )
                .as_str()
            ),
            "{args:?}"
        );
    }
}

#[test]
fn the_state_directory_is_not_taken_for_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("u");
    std::fs::create_dir_all(home.join(".bot-bottle/state")).unwrap();
    let r = run(&home, &home, &["manifest", "check"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            format!(
                "error: no manifest found; looked for {h}/bot-bottle.yaml, {h}/.bot-bottle, {h}/.bot-bottle/manifest; create bot-bottle.yaml (see examples/bot-bottle.yaml) or pass --manifest PATH\n",
                h = home.display()
            )
            .as_str()
        )
    );
}

/// Runs `bot-bottle cleanup` with a docker socket that does not exist.
fn cleanup_without_docker(home: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("cleanup")
        .env_remove("BOT_BOTTLE_LOG")
        .env("HOME", home)
        .env("BOT_BOTTLE_HOME", home.join(".bot-bottle"))
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-docker.sock", home.display()),
        )
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn cleanup_speaks_of_a_missing_docker_only_when_a_bottle_used_it() {
    let tmp = tempfile::tempdir().unwrap();
    let r = cleanup_without_docker(tmp.path());
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "nothing to clean up\n", "")
    );
    // A docker bottle left behind (its start was killed), then docker went away.
    let home = state::Home::new(tmp.path().join(".bot-bottle"));
    let (id, lock) = home
        .create_bottle(&state::Metadata {
            agent: "demo".into(),
            cwd: tmp.path().to_path_buf(),
            copy_cwd: false,
            backend: "docker".into(),
            created: "2026-12-05T18:00:00Z".into(),
            manifest: None,
            command: Vec::new(),
            forward_codex_auth: false,
        })
        .unwrap();
    home.mark_preserved(&id).unwrap();
    drop(lock);
    let r = cleanup_without_docker(tmp.path());
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.starts_with(&format!(
            "bot-bottle: cannot clean up the docker resources of {id} ("
        )) && r
            .stderr
            .ends_with("); run `bot-bottle cleanup` again once docker is available\n"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn start_on_native_without_the_agent_on_the_host_says_how_to_install_it() {
    if backend::native::program::find_for_bottle("claude", None).is_ok() {
        eprintln!("skipping: this machine has a system-wide `claude`, so start would not refuse");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("bot-bottle.yaml"),
        "bottles:\n  dev:\n    agent_provider: claude\nagents:\n  demo:\n    bottle: dev\n",
    )
    .unwrap();
    let r = run(
        &project,
        tmp.path(),
        &["start", "--backend", "native", "demo"],
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "error: cannot start agent `demo` on the native backend: the native backend runs the host's `claude` inside the bottle, and there is none on this machine; install it system-wide (as root: `npm install -g @anthropic-ai/claude-code`, which puts it in /usr/local/bin), or use --backend docker\n"
        )
    );
}

#[test]
fn manifest_show_marks_the_routes_the_provider_adds() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bot-bottle.yaml"),
        "bottles:\n  dev:\n    agent_provider: claude\n    egress:\n      routes:\n        - host: crates.io\nagents:\n  demo:\n    bottle: dev\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["manifest", "show", "dev"])
        .current_dir(tmp.path())
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_HOME")
        .env_remove("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN")
        .env_remove("ANTHROPIC_API_KEY")
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.ends_with(
            "# implicit routes, added at `start` by the claude provider before the routes above (a route\n# of your own for the same host replaces one):\n#   - host: api.anthropic.com  # any method, any path; credential BOT_BOTTLE_CLAUDE_OAUTH_TOKEN as Authorization: Bearer\n"
        ),
        "{stdout}"
    );
}

/// `bot-bottle manifest check --manifest bot-bottle.yaml` on `yaml`, in a fresh directory.
fn check(yaml: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bot-bottle.yaml"), yaml).unwrap();
    run(
        tmp.path(),
        tmp.path(),
        &["manifest", "check", "--manifest", "bot-bottle.yaml"],
    )
}

#[test]
fn manifest_check_lists_every_schema_error_and_names_the_key() {
    let r = check(
        "bottles:\n  base:\n    agent_provider: claude\n  dev:\n    extends: [base]\n    supervise: 3\n    env:\n      A: [1]\n    egres:\n      routes: []\nagents:\n  demo:\n    bottle: dev\n",
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            1,
            "",
            "bot-bottle.yaml:6:16: `bottles.dev.supervise`: expected `true` or `false`\n\
             bot-bottle.yaml:8:10: `bottles.dev.env.A`: expected a string here\n\
             bot-bottle.yaml:9:5: unknown field `egres`, expected one of extends, agent_provider, supervise, env, git-gate, egress, resources, dangerously_run_as_host_root, kubernetes; did you mean `egress`?\n\
             error: bot-bottle.yaml has 3 errors; fix them and run `bot-bottle manifest check` again\n"
        )
    );
}

#[test]
fn manifest_check_suggests_the_bottle_an_extends_meant() {
    let r = check(
        "bottles:\n  base:\n    agent_provider: claude\n  dev:\n    extends: [bsae]\nagents:\n  demo:\n    bottle: dev\n",
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            1,
            "",
            "bot-bottle.yaml:5:15: bottle `dev`: extends `bsae`, which is not defined; did you mean `base`? available bottles: base, dev\n\
             error: bot-bottle.yaml has 1 error; fix it and run `bot-bottle manifest check` again\n"
        )
    );
}

#[test]
fn manifest_check_lists_every_schema_error_of_a_front_matter_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".bot-bottle");
    std::fs::create_dir_all(dir.join("bottles")).unwrap();
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    std::fs::write(
        dir.join("bottles/dev.md"),
        "---\nagent_provider: claude\nsupervise: 3\nenv:\n  A: [1]\negres: {}\n---\nnotes\n",
    )
    .unwrap();
    std::fs::write(dir.join("agents/demo.md"), "---\nbottle: dev\n---\n").unwrap();
    let r = run(
        tmp.path(),
        tmp.path(),
        &["manifest", "check", "--manifest", ".bot-bottle"],
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            1,
            "",
            ".bot-bottle/bottles/dev.md:3:12: `supervise`: expected `true` or `false`\n\
             .bot-bottle/bottles/dev.md:5:6: `env.A`: expected a string here\n\
             .bot-bottle/bottles/dev.md:6:1: unknown field `egres`, expected one of extends, agent_provider, supervise, env, git-gate, egress, resources, dangerously_run_as_host_root, kubernetes; did you mean `egress`?\n\
             error: .bot-bottle has 3 errors; fix them and run `bot-bottle manifest check` again\n"
        )
    );
}

#[test]
fn discard_refuses_a_running_or_unknown_bottle_and_keeps_the_logs_of_a_discarded_one() {
    let tmp = tempfile::tempdir().unwrap();
    let home = state::Home::new(tmp.path().join(".bot-bottle"));
    let discard = |id: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .args(["discard", id, "--yes"])
            .env("HOME", tmp.path())
            .env("BOT_BOTTLE_HOME", home.root())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (id, lock) = home
        .create_bottle(&state::Metadata {
            agent: "demo".into(),
            cwd: tmp.path().to_path_buf(),
            copy_cwd: false,
            backend: "native".into(),
            created: "2026-12-05T18:00:00Z".into(),
            manifest: None,
            command: Vec::new(),
            forward_codex_auth: false,
        })
        .unwrap();
    assert_eq!(
        discard(id.as_str()),
        (
            2,
            String::new(),
            format!(
                "error: bottle `{id}` is running; stop it first (`bot-bottle stop {id}`), which also removes it unless you pass --keep\n"
            )
        )
    );
    drop(lock);
    home.mark_preserved(&id).unwrap();
    let logs = home.state_dir(&id).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // The request log as the egress proxy writes it: a rotated part and the current one.
    let line = |time: &str, path: &str, decision: &'static str, status: u16| {
        let entry = egress::LogEntry {
            time: time.into(),
            method: "GET".into(),
            host: "api.test".into(),
            path: path.into(),
            decision,
            reason: if decision == "allowed" {
                "allowed"
            } else {
                "destination-not-allowed"
            },
            rule: (decision == "allowed").then_some(0),
            status,
            bytes_up: 0,
            bytes_down: 2,
            duration_ms: 1.5,
            dlp: None,
        };
        serde_json::to_string(&entry).unwrap() + "\n"
    };
    let rotated = line("2026-12-05T18:00:01Z", "/a", "allowed", 200);
    let current = line("2026-12-05T18:00:02Z", "/b", "blocked", 403);
    std::fs::write(logs.join("egress.jsonl.1"), &rotated).unwrap();
    std::fs::write(logs.join("egress.jsonl"), &current).unwrap();
    std::fs::write(logs.join("sidecar.log"), "egress listening\n").unwrap();
    assert_eq!(
        discard(id.as_str()),
        (
            0,
            format!("discarded {id} (its logs are kept: `bot-bottle logs {id}`)\n"),
            String::new()
        )
    );
    assert!(!home.state_dir(&id).exists());
    assert_eq!(
        std::fs::read_to_string(home.kept_logs_dir(&id).join("egress.jsonl")).unwrap(),
        current
    );
    // `bot-bottle logs ID` itself reads the kept log of the bottle that is gone.
    let logs_of = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .arg("logs")
            .args(args)
            .env("HOME", tmp.path())
            .env("BOT_BOTTLE_HOME", home.root())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    assert_eq!(
        logs_of(&[id.as_str()]),
        (
            0,
            "2026-12-05T18:00:01Z allowed 200 GET api.test/a (allowed)\n\
             2026-12-05T18:00:02Z blocked 403 GET api.test/b (destination-not-allowed)\n"
                .to_owned(),
            String::new()
        )
    );
    assert_eq!(
        logs_of(&[id.as_str(), "--json"]),
        (0, format!("{rotated}{current}"), String::new())
    );
    assert_eq!(
        logs_of(&[id.as_str(), "--sidecar"]),
        (0, "egress listening\n".to_owned(), String::new())
    );
    assert_eq!(
        discard(id.as_str()),
        (
            2,
            String::new(),
            format!(
                "error: no bottle `{id}` here; `bot-bottle list` shows the bottles there are\n"
            )
        )
    );
}
