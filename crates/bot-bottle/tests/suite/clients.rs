//! The real agent clients inside a native bottle, against a fake model API of ours.
//!
//! `claude -p` and `codex exec` (installed by `scripts/install-agent-clients`) run as the
//! agent inside a bottle whose route to the provider's API host is pinned (`connect_to`)
//! to a loopback fake speaking the provider's streaming API with its own test CA. The fake
//! scripts one call of the supervise MCP tool `list-egress-routes`; the tool's result (the
//! bottle's live routes, naming the fake's address) must come back in the next request,
//! which only happens when the call reached the supervise server. The agent's command then
//! exits 3 on purpose, so the bottle's state (and its egress log) is kept for inspection.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_support::TestCa;
use test_support::model_api::{Answer, FINAL_TEXT, ModelApi, ModelRequest};

const TOKEN: &str = "tok-clients-REALSECRET-9876543210";
const PLACEHOLDER: &str = "bot-bottle-placeholder";
const TOOL: &str = "list-egress-routes";

fn native_usable() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let usable = text
        .lines()
        .any(|l| l.starts_with("native") && l.contains(": usable"));
    if !usable {
        eprintln!("skipping: the native backend is not usable here:\n{text}");
    }
    usable
}

fn client_installed(bin: &str) -> bool {
    let ok = Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipping: `{bin}` is not installed; run scripts/install-agent-clients (npm: @anthropic-ai/claude-code, @openai/codex)"
        );
    }
    ok
}

struct World {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
}

/// `credential` is the route's credential fields, e.g. `("auth_scheme", "Bearer")`.
fn world(
    provider: &str,
    host: &str,
    credential: &[(&str, &str)],
    api: &ModelApi,
    ca: &TestCa,
) -> World {
    let credential: String = credential
        .iter()
        .map(|(k, v)| format!("          {k}: {v}\n"))
        .collect();
    let tmp = tempfile::Builder::new()
        .prefix("bc")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    let ca_path = tmp.path().join("model-ca.pem");
    ca.write_pem(&ca_path);
    let manifest = format!(
        r#"bottles:
  box:
    agent_provider: {provider}
    egress:
      upstream_ca: [{ca}]
      routes:
        - host: {host}
          connect_to: "{addr}"
{credential}agents:
  agent:
    bottle: box
"#,
        ca = ca_path.display(),
        addr = api.addr(),
    );
    std::fs::write(workspace.join("bot-bottle.yaml"), manifest).unwrap();
    World {
        _tmp: tmp,
        home,
        workspace,
    }
}

/// Runs `client_cmd` inside the bottle; the command line ends with `exit 3` so the state
/// is preserved. A telemetry-like host is also tried with curl so the egress log has a
/// block even if the client sent nothing else.
fn run(world: &World, token_env: &str, client_cmd: &str) -> Output {
    let script = format!(
        "cd \"$HOME\"\n\
         timeout 180 {client_cmd} </dev/null; echo \"CLIENT-EXIT=$?\"\n\
         curl -sS -m 20 -o /dev/null -w 'TELEMETRY-STATUS=%{{http_connect}}\\n' https://telemetry.example.test/v1/events\n\
         pat=REAL; pat=\"${{pat}}SECRET\"\n\
         if grep -rqs \"$pat\" /proc/[0-9]*/environ \"$HOME\" 2>/dev/null; then echo TOKEN-VISIBLE; else echo TOKEN-HIDDEN; fi\n\
         exit 3\n"
    );
    Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["start", "agent", "--", "bash", "-c", &script])
        .current_dir(&world.workspace)
        .env("BOT_BOTTLE_HOME", &world.home)
        .env(token_env, TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The egress log of the only (preserved) bottle, as JSON lines.
fn egress_log(home: &Path) -> Vec<serde_json::Value> {
    let state = home.join("state");
    let Ok(dirs) = std::fs::read_dir(&state) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in dirs.flatten() {
        let text =
            std::fs::read_to_string(d.path().join("logs").join("egress.jsonl")).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
        );
    }
    out
}

fn summary(reqs: &[ModelRequest]) -> String {
    reqs.iter()
        .map(|r| format!("{} {} -> {:?}", r.method, r.path, r.answer))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every check shared by both clients.
fn check_session(
    client: &str,
    api: &ModelApi,
    world: &World,
    out: &Output,
    auth_header: &str,
    expected_auth: &str,
) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reqs = api.requests();
    let ctx = format!(
        "{client}\nstdout:\n{stdout}\nstderr:\n{stderr}\nrequests:\n{}",
        summary(&reqs)
    );
    // `CLIENTS_DUMP=<dir>` keeps every request body for looking at a client's protocol.
    if let Some(dir) = std::env::var_os("CLIENTS_DUMP") {
        for (i, r) in reqs.iter().enumerate() {
            let name = format!("{client}-{i}-{}.body", r.path.replace(['/', '?'], "_"));
            std::fs::write(Path::new(&dir).join(name), &r.body).unwrap();
        }
    }
    let problems = api.protocol_problems();
    assert!(
        problems.is_empty(),
        "the {client} protocol changed: {problems:?}\n{ctx}"
    );
    assert!(
        stdout.contains("CLIENT-EXIT=0"),
        "{client} did not complete (124 = hung past the timeout)\n{ctx}"
    );
    assert!(
        stdout.contains(FINAL_TEXT),
        "{client} did not print the fake model's final answer\n{ctx}"
    );
    assert!(
        stdout.contains("TOKEN-HIDDEN"),
        "token visible inside\n{ctx}"
    );
    assert_eq!(out.status.code(), Some(3), "{ctx}");

    // The scripted tool call happened and its result came back from supervise.
    let called = reqs
        .iter()
        .any(|r| matches!(&r.answer, Answer::ToolCall(n) if n.contains("egress")));
    assert!(
        called,
        "{client} never offered the supervise MCP tool `{TOOL}` to the model (the MCP registration or the client's tool format changed)\n{ctx}"
    );
    let finals: Vec<&ModelRequest> = reqs.iter().filter(|r| r.answer == Answer::Final).collect();
    assert!(
        !finals.is_empty(),
        "{client} never sent the tool result back\n{ctx}"
    );
    let addr = api.addr().to_string();
    assert!(
        reqs.iter()
            .filter(|r| matches!(r.answer, Answer::ToolCall(_)))
            .all(|r| !r.text().contains(&addr)),
        "the pinned address was known before the tool call, so it proves nothing\n{ctx}"
    );
    assert!(
        finals.iter().any(|r| r.text().contains(&addr)),
        "the tool result does not hold the bottle's routes from supervise (expected the pinned address {addr})\n{ctx}"
    );

    // The real token reached the fake on every model request; the placeholder never did.
    for r in &reqs {
        assert_eq!(
            r.header(auth_header),
            vec![expected_auth],
            "{} {}\n{ctx}",
            r.method,
            r.path
        );
        let leaked = r.headers.iter().any(|(_, v)| v.contains(PLACEHOLDER))
            || r.text().contains(PLACEHOLDER);
        assert!(
            !leaked,
            "the placeholder left the bottle in {} {}",
            r.method, r.path
        );
    }

    // Everything else was blocked and logged by egress, not hung.
    let log = egress_log(&world.home);
    let blocked: Vec<String> = log
        .iter()
        .filter(|e| e["decision"] != "allow" && e["decision"] != "allowed")
        .map(|e| format!("{} {}{}", e["method"], e["host"], e["path"]))
        .collect();
    assert!(
        blocked.iter().any(|b| b.contains("telemetry.example.test")),
        "egress log lacks the blocked request: {log:?}\n{ctx}"
    );
    assert!(stdout.contains("TELEMETRY-STATUS=403"), "{ctx}");
    eprintln!("{client}: blocked by egress: {blocked:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_code_completes_a_scripted_session_in_a_bottle() {
    if !native_usable() || !client_installed("claude") {
        return;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake Anthropic CA");
    let api = ModelApi::start_tls(&ca, &["api.anthropic.com"], TOOL).await;
    let world = world(
        "claude",
        "api.anthropic.com",
        &[
            ("auth_scheme", "Bearer"),
            ("token_env", "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN"),
        ],
        &api,
        &ca,
    );
    let world = std::sync::Arc::new(world);
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &w,
            "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN",
            "claude --dangerously-skip-permissions -p 'List the egress routes of this bottle.'",
        )
    })
    .await
    .unwrap();
    check_session(
        "claude",
        &api,
        &world,
        &out,
        "authorization",
        &format!("Bearer {TOKEN}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_codex_completes_a_scripted_session_in_a_bottle() {
    if !native_usable() || !client_installed("codex") {
        return;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake OpenAI CA");
    let api = ModelApi::start_tls(&ca, &["api.openai.com"], TOOL).await;
    let world = world(
        "codex",
        "api.openai.com",
        &[("auth_scheme", "Bearer"), ("token_env", "OPENAI_API_KEY")],
        &api,
        &ca,
    );
    let world = std::sync::Arc::new(world);
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &w,
            "OPENAI_API_KEY",
            "codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox 'List the egress routes of this bottle.'",
        )
    })
    .await
    .unwrap();
    check_session(
        "codex",
        &api,
        &world,
        &out,
        "authorization",
        &format!("Bearer {TOKEN}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_code_with_an_api_key_gets_it_as_x_api_key() {
    if !native_usable() || !client_installed("claude") {
        return;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake Anthropic CA");
    let api = ModelApi::start_tls(&ca, &["api.anthropic.com"], TOOL).await;
    let world = world(
        "claude",
        "api.anthropic.com",
        &[
            ("auth_header", "x-api-key"),
            ("token_env", "ANTHROPIC_API_KEY"),
        ],
        &api,
        &ca,
    );
    let world = std::sync::Arc::new(world);
    let w = world.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &w,
            "ANTHROPIC_API_KEY",
            "claude --dangerously-skip-permissions -p 'List the egress routes of this bottle.'",
        )
    })
    .await
    .unwrap();
    check_session("claude", &api, &world, &out, "x-api-key", TOKEN);
    for r in api.requests() {
        assert_eq!(
            r.header("authorization"),
            Vec::<&str>::new(),
            "no OAuth header with an API key: {} {}",
            r.method,
            r.path
        );
    }
}
