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

/// The scripted agent of the generic provider: it reads its MCP registration and its
/// instructions from the files the manifest names, lists the supervise tools, offers them
/// to the model (OpenAI Responses API, streamed), calls the one the model picks through
/// supervise and sends the result back; then prints the model's answer.
const FAKE_AGENT: &str = r#"import json, os, sys, urllib.request
home = os.environ["HOME"]
servers = json.load(open(os.path.join(home, ".config/fake-agent/mcp.json")))["servers"]
url = servers["bot-bottle"]["url"]
assert servers["bot-bottle"]["transport"] == "http", servers
instructions = open(os.path.join(home, ".config/fake-agent/AGENTS.md")).read()
assert "egress-allow" in instructions, instructions
key = os.environ["FAKE_LLM_KEY"]
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def mcp(method, params, session=None, id=None):
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        msg["id"] = id
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if session:
        headers["mcp-session-id"] = session
    req = urllib.request.Request(url, data=json.dumps(msg).encode(), method="POST", headers=headers)
    with direct.open(req, timeout=60) as r:
        text = r.read().decode()
        return r.headers.get("mcp-session-id"), (json.loads(text) if text.strip() else None)

sid, _ = mcp("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                            "clientInfo": {"name": "fake-agent", "version": "1"}}, id=1)
mcp("notifications/initialized", {}, sid)
_, listed = mcp("tools/list", {}, sid, id=2)
tools = [{"type": "function", "name": t["name"], "parameters": {"type": "object", "properties": {}}}
         for t in listed["result"]["tools"]]

def model(items):
    body = json.dumps({"model": "fake", "stream": True, "input": items, "tools": tools}).encode()
    req = urllib.request.Request("https://api.fake-llm.test/v1/responses", data=body, method="POST",
                                 headers={"content-type": "application/json", "authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=60) as r:
        events = [json.loads(l[5:]) for l in r.read().decode().splitlines() if l.startswith("data:")]
    return [e for e in events if e.get("type") == "response.completed"][0]["response"]["output"]

items = [{"role": "system", "content": instructions}, {"role": "user", "content": sys.argv[1]}]
call = [o for o in model(items) if o["type"] == "function_call"][0]
_, result = mcp("tools/call", {"name": call["name"], "arguments": {}}, sid, id=3)
text = "".join(c.get("text", "") for c in result["result"]["content"])
items += [call, {"type": "function_call_output", "call_id": call["call_id"], "output": text}]
print(model(items)[0]["content"][0]["text"])
"#;

/// The generic provider's command: the agent, then the checks `run` makes for the real
/// clients (a blocked request logged, the real key nowhere inside); exit 3 keeps the state.
const RUN_AGENT: &str = "timeout 180 python3 fake_agent.py \"$1\" </dev/null; echo \"CLIENT-EXIT=$?\"\n\
curl -sS -m 20 -o /dev/null -w 'TELEMETRY-STATUS=%{http_code}\\n' https://telemetry.example.test/v1/events\n\
pat=REAL; pat=\"${pat}SECRET\"\n\
if grep -rqs \"$pat\" /proc/[0-9]*/environ \"$HOME\" 2>/dev/null; then echo TOKEN-VISIBLE; else echo TOKEN-HIDDEN; fi\n\
echo \"PLACEHOLDER-ENV=${FAKE_LLM_KEY:0:22}\"\n\
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
    let routes = format!(
        "        - host: api.fake-llm.test\n          connect_to: \"{}\"\n          auth_scheme: Bearer\n          token_env: FAKE_LLM_KEY\n",
        api.addr()
    );
    let world = world_with_routes("claude", &routes, &ca);
    // The provider: replace `agent_provider: claude` by the generic description.
    let manifest_path = world.workspace.join("bot-bottle.yaml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap().replace(
        "    agent_provider: claude\n",
        "    agent_provider:\n      command: [bash, run-agent.sh]\n      model_api:\n        - {host: api.fake-llm.test, token_env: FAKE_LLM_KEY, env: FAKE_LLM_KEY}\n      mcp: {file: .config/fake-agent/mcp.json, key: servers, entry: {transport: http, url: \"{url}\"}}\n      instructions: .config/fake-agent/AGENTS.md\n",
    ) + "    prompt: List the egress routes of this bottle.\n";
    std::fs::write(&manifest_path, manifest).unwrap();
    std::fs::write(world.workspace.join("fake_agent.py"), FAKE_AGENT).unwrap();
    std::fs::write(world.workspace.join("run-agent.sh"), RUN_AGENT).unwrap();

    let w = std::sync::Arc::new(world);
    let w2 = w.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .args(["start", "agent"])
            .current_dir(&w2.workspace)
            .env("BOT_BOTTLE_HOME", &w2.home)
            .env("FAKE_LLM_KEY", TOKEN)
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
