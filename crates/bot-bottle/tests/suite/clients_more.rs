//! More agent clients in a native bottle: the real Gemini CLI and OpenCode, and a generic
//! provider running a small scripted agent, each against the fake model API on loopback
//! (see `clients.rs` for the shape of a session and its checks).
//!
//! Gemini CLI talks to `generativelanguage.googleapis.com` (the Gemini API with an API key,
//! `x-goog-api-key`); OpenCode with `ANTHROPIC_API_KEY` on the host talks to the Anthropic
//! API. Both find the supervise MCP server in their own configuration, and `gemini mcp
//! list` / `opencode mcp list` run in the same bottle must show it connected.

use std::process::{Command, Output};

use test_support::TestCa;
use test_support::model_api::{ModelApi, ModelRequest};

use super::clients::{
    TOKEN, TOOL, World, check_session, client_installed, native_usable, run, summary, world,
    world_with_routes,
};

/// Runs `run` on a blocking thread (the fake model API needs the runtime meanwhile).
async fn run_blocking(world: &std::sync::Arc<World>, token_env: &str, cmd: String) -> Output {
    let (w, token_env) = (world.clone(), token_env.to_string());
    tokio::task::spawn_blocking(move || run(&w, &token_env, &cmd))
        .await
        .unwrap()
}

/// The lines of `stdout` between the markers the session script printed around the
/// client's `mcp list`.
fn mcp_list(stdout: &str) -> String {
    stdout
        .split("MCP-LIST-BEGIN")
        .nth(1)
        .and_then(|rest| rest.split("MCP-LIST-END").next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gemini_cli_completes_a_scripted_session_in_a_bottle() {
    if !native_usable() || !client_installed("gemini") {
        return;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake Gemini CA");
    let api = ModelApi::start_tls(&ca, &["generativelanguage.googleapis.com"], TOOL).await;
    let world = std::sync::Arc::new(world(
        "gemini",
        "generativelanguage.googleapis.com",
        &[
            ("auth_header", "x-goog-api-key"),
            ("token_env", "BOT_BOTTLE_GEMINI_API_KEY"),
        ],
        &api,
        &ca,
    ));
    // Gemini CLI runs headless only in a trusted folder: the workspace (`$ws`).
    let out = run_blocking(
        &world,
        "BOT_BOTTLE_GEMINI_API_KEY",
        "bash -c 'cd \"$0\" && echo MCP-LIST-BEGIN && gemini mcp list 2>&1; echo MCP-LIST-END; exec gemini --yolo -p \"List the egress routes of this bottle.\"' \"$ws\"".into(),
    )
    .await;
    check_session("gemini", &api, &world, &out, "x-goog-api-key", TOKEN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let list = mcp_list(&stdout);
    assert!(
        list.lines()
            .any(|l| l.contains("bot-bottle") && l.contains("Connected")),
        "`gemini mcp list` does not show the supervise server connected:\n{list}"
    );
    // Every model request went to the Gemini API (no other protocol was needed).
    let reqs = api.requests();
    assert!(
        reqs.iter().all(|r| r.path.starts_with("/v1beta/models/")),
        "{}",
        summary(&reqs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_opencode_completes_a_scripted_session_in_a_bottle() {
    if !native_usable() || !client_installed("opencode") {
        return;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake Anthropic CA");
    let api = ModelApi::start_tls(&ca, &["api.anthropic.com"], TOOL).await;
    let world = std::sync::Arc::new(world(
        "opencode",
        "api.anthropic.com",
        &[
            ("auth_header", "x-api-key"),
            ("token_env", "ANTHROPIC_API_KEY"),
        ],
        &api,
        &ca,
    ));
    let out = run_blocking(
        &world,
        "ANTHROPIC_API_KEY",
        "bash -c 'cd \"$0\" && echo MCP-LIST-BEGIN && opencode mcp list 2>&1; echo MCP-LIST-END; exec opencode run \"List the egress routes of this bottle.\"' \"$ws\"".into(),
    )
    .await;
    check_session("opencode", &api, &world, &out, "x-api-key", TOKEN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let list = mcp_list(&stdout);
    assert!(
        list.lines()
            .any(|l| l.contains("bot-bottle") && l.to_ascii_lowercase().contains("connected")),
        "`opencode mcp list` does not show the supervise server connected:\n{list}"
    );
    for r in api.requests() {
        assert_eq!(
            r.header("authorization"),
            Vec::<&str>::new(),
            "no bearer token with an API key: {} {}",
            r.method,
            r.path
        );
    }
}

/// The repository's root (for the worked example of the generic provider).
fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
}

/// The generic provider's command: the agent, then the checks `run` makes for the real
/// clients (a blocked request logged, the real key nowhere inside); exit 3 keeps the state.
const RUN_AGENT: &str = "timeout 180 python3 agent.py \"$1\" </dev/null; echo \"CLIENT-EXIT=$?\"\n\
curl -sS -m 20 -o /dev/null -w 'TELEMETRY-STATUS=%{http_code}\\n' https://telemetry.example.test/v1/events\n\
pat=REAL; pat=\"${pat}SECRET\"\n\
if grep -rqs \"$pat\" /proc/[0-9]*/environ \"$HOME\" 2>/dev/null; then echo TOKEN-VISIBLE; else echo TOKEN-HIDDEN; fi\n\
echo \"PLACEHOLDER-ENV=${OPENAI_API_KEY:0:22}\"\n\
exit 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_provider_runs_its_command_with_its_mcp_file_and_placeholder() {
    if !native_usable() {
        return;
    }
    if !Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipping: python3 is not installed (the scripted agent is a Python script)");
        return;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake LLM CA");
    let api = ModelApi::start_tls(&ca, &["api.fake-llm.test"], TOOL).await;
    // The worked example (examples/generic.yaml and its agent), with the model API moved to
    // the fake: its host pinned to the fake's address, trusting the fake's CA, and the
    // agent's command wrapped in the session checks.
    let example = std::fs::read_to_string(repo_root().join("examples/generic.yaml")).unwrap();
    let agent =
        std::fs::read_to_string(repo_root().join("examples/generic-agent/agent.py")).unwrap();
    let world = world_with_routes("claude", "", &ca);
    let ca_path = world._tmp.path().join("model-ca.pem");
    let replaced = example
        .replace("api.openai.com", "api.fake-llm.test")
        .replace(
            "command: [python3, examples/generic-agent/agent.py]",
            "command: [bash, run-agent.sh]",
        )
        .replace(
            "agents:\n",
            &format!(
                "    env: {{MINI_AGENT_URL: \"https://api.fake-llm.test/v1/responses\"}}\n    egress:\n      upstream_ca: [{}]\n      routes:\n        - host: api.fake-llm.test\n          connect_to: \"{}\"\n          auth_scheme: Bearer\n          token_env: OPENAI_API_KEY\nagents:\n",
                ca_path.display(),
                api.addr()
            ),
        );
    assert_ne!(replaced, example);
    std::fs::write(world.workspace.join("bot-bottle.yaml"), replaced).unwrap();
    std::fs::write(world.workspace.join("agent.py"), agent).unwrap();
    std::fs::write(world.workspace.join("run-agent.sh"), RUN_AGENT).unwrap();

    let w = std::sync::Arc::new(world);
    let w2 = w.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .args(["start", "mini"])
            .current_dir(&w2.workspace)
            .env("BOT_BOTTLE_HOME", &w2.home)
            .env("OPENAI_API_KEY", TOKEN)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    check_session(
        "generic",
        &api,
        &w,
        &out,
        "authorization",
        &format!("Bearer {TOKEN}"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PLACEHOLDER-ENV=bot-bottle-placeholder"),
        "the agent's key variable does not hold the placeholder\n{stdout}"
    );
    let first: &ModelRequest = &api.requests()[0];
    assert!(
        first.text().contains("# Access"),
        "the agent did not get its instructions: {}",
        first.text()
    );
}

#[test]
fn the_provider_examples_pass_manifest_check() {
    for example in ["gemini.yaml", "opencode.yaml", "generic.yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .args(["manifest", "check", "--manifest"])
            .arg(repo_root().join("examples").join(example))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
