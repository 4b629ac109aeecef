//! The real agent clients inside a native bottle, against a fake model API of ours.
//!
//! `claude -p` and `codex exec` (installed by `scripts/install-agent-clients`) run as the
//! agent inside a bottle whose route to the provider's API host is pinned (`connect_to`)
//! to a loopback fake speaking the provider's streaming API with its own test CA. The fake
//! scripts one call of the supervise MCP tool `list-egress-routes`; the tool's result (the
//! bottle's live routes, naming the fake's address) must come back in the next request,
//! which only happens when the call reached the supervise server. The agent's command then
//! exits 3 on purpose, so the bottle's state (and its egress log) is kept for inspection.
//!
//! `codex exec` also runs with the host's ChatGPT login forwarded (`--forward-codex-auth`):
//! `chatgpt.com` and `auth.openai.com` are pinned to the same fake, which then plays the
//! ChatGPT backend and the login refresh; the host's login file is a fake one in the test's
//! own `CODEX_HOME`. A login Codex refreshed inside the bottle is written back to that file
//! when the bottle ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_support::TestCa;
use test_support::model_api::{
    Answer, Api, FINAL_TEXT, ModelApi, ModelRequest, REFRESHED_ACCESS_TOKEN,
    REFRESHED_REFRESH_TOKEN,
};

pub(crate) const TOKEN: &str = "tok-clients-REALSECRET-9876543210";
pub(crate) const PLACEHOLDER: &str = "bot-bottle-placeholder";
pub(crate) const TOOL: &str = "list-egress-routes";

pub(crate) fn native_usable() -> bool {
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

pub(crate) fn client_installed(bin: &str) -> bool {
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

pub(crate) struct World {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) home: PathBuf,
    pub(crate) workspace: PathBuf,
}

/// A workspace whose manifest runs `provider` in bottle `box` with `routes` (YAML list
/// items), trusting `ca` for upstreams; agent `agent`.
pub(crate) fn world_with_routes(provider: &str, routes: &str, ca: &TestCa) -> World {
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
        "bottles:\n  box:\n    agent_provider: {provider}\n    egress:\n      upstream_ca: [{ca}]\n      routes:\n{routes}agents:\n  agent:\n    bottle: box\n",
        ca = ca_path.display(),
    );
    std::fs::write(workspace.join("bot-bottle.yaml"), manifest).unwrap();
    World {
        _tmp: tmp,
        home,
        workspace,
    }
}

/// One route to `host`, pinned to the fake API; `credential` is the route's credential
/// fields, e.g. `("auth_scheme", "Bearer")`.
pub(crate) fn world(
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
    let routes = format!(
        "        - host: {host}\n          connect_to: \"{}\"\n{credential}",
        api.addr()
    );
    world_with_routes(provider, &routes, ca)
}

/// Runs `client_cmd` inside the bottle; the command line ends with `exit 3` so the state
/// is preserved. A telemetry-like host is also tried with curl so the egress log has a
/// block even if the client sent nothing else.
pub(crate) fn run(world: &World, token_env: &str, client_cmd: &str) -> Output {
    run_on(world, None, 180, token_env, client_cmd)
}

/// [`run`] on `backend` (`None`: the default), the client bounded by `timeout` seconds.
pub(crate) fn run_on(
    world: &World,
    backend: Option<&str>,
    timeout: u32,
    token_env: &str,
    client_cmd: &str,
) -> Output {
    // `$ws` is the workspace, for clients that must run there.
    let script = format!(
        "ws=\"$PWD\"; cd \"$HOME\"\n\
         timeout {timeout} {client_cmd} </dev/null; echo \"CLIENT-EXIT=$?\"\n\
         curl -sS -m 20 -o /dev/null -w 'TELEMETRY-STATUS=%{{http_code}}\\n' https://telemetry.example.test/v1/events\n\
         pat=REAL; pat=\"${{pat}}SECRET\"\n\
         if grep -rqs \"$pat\" /proc/[0-9]*/environ \"$HOME\" 2>/dev/null; then echo TOKEN-VISIBLE; else echo TOKEN-HIDDEN; fi\n\
         exit 3\n"
    );
    let mut args = vec!["start", "agent"];
    if let Some(backend) = backend {
        args.extend(["--backend", backend]);
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
    if backend == Some("qemu") {
        // Software emulation: this machine's KVM cannot boot a guest.
        command.env("BOT_BOTTLE_QEMU_ACCEL", "tcg");
    }
    command
        .args(args)
        .args(["--", "bash", "-c", &script])
        .current_dir(&world.workspace)
        .env("BOT_BOTTLE_HOME", &world.home)
        .env(token_env, TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The egress log of the only (preserved) bottle, as JSON lines.
pub(crate) fn egress_log(home: &Path) -> Vec<serde_json::Value> {
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

pub(crate) fn summary(reqs: &[ModelRequest]) -> String {
    reqs.iter()
        .map(|r| format!("{} {} -> {:?}", r.method, r.path, r.answer))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every check shared by both clients.
pub(crate) fn check_session(
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

/// Whether `doctor` finds the qemu backend usable (under software emulation, which these
/// tests allow with `BOT_BOTTLE_QEMU_ACCEL=tcg`: this machine's KVM cannot boot a guest).
fn qemu_usable() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .arg("doctor")
        .env("BOT_BOTTLE_QEMU_ACCEL", "tcg")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let usable = text
        .lines()
        .any(|l| l.starts_with("qemu") && l.contains(": usable"));
    if !usable {
        eprintln!(
            "skipping: the qemu backend is not usable here (`bot-bottle prepare qemu`):\n{text}"
        );
    }
    usable
}

/// The same scripted Claude Code session in a qemu bottle: the client runs on the guest's
/// own kernel, and reaches the model API, egress and supervise only through the sidecar
/// endpoints QEMU's user network forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_code_completes_a_scripted_session_in_a_qemu_bottle() {
    if !native_usable() || !qemu_usable() || !client_installed("claude") {
        return;
    }
    eprintln!("the qemu bottle runs under TCG (software emulation)");
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
        run_on(
            &w,
            Some("qemu"),
            900,
            "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN",
            "claude --dangerously-skip-permissions -p 'List the egress routes of this bottle.'",
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("software emulation"),
        "the TCG warning is missing:\n{stderr}"
    );
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

// --- Codex with the host's ChatGPT login forwarded (`start --forward-codex-auth`) ---

/// A ChatGPT login as `codex login --device-auth` writes it: unsigned JWTs naming a fake
/// account (`acct-fake-forwarded`); the access token is valid until 2100.
const LOGIN_ID_TOKEN: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJlbWFpbCI6ImJvdEBleGFtcGxlLnRlc3QiLCJodHRwczovL2FwaS5vcGVuYWkuY29tL2F1dGgiOnsiY2hhdGdwdF9wbGFuX3R5cGUiOiJwbHVzIiwiY2hhdGdwdF9hY2NvdW50X2lkIjoiYWNjdC1mYWtlLWZvcndhcmRlZCIsImNoYXRncHRfdXNlcl9pZCI6InVzZXItZmFrZS1mb3J3YXJkZWQifX0.ZmFrZQ";
const LOGIN_ACCESS_TOKEN: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQxMDI0NDQ4MDAsInN1YiI6IkZPUldBUkRFRC1BQ0NFU1MifQ.ZmFrZQ";
/// The same login's access token, expired in 2023.
const EXPIRED_ACCESS_TOKEN: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjE3MDAwMDAwMDAsInN1YiI6IkVYUElSRUQtQUNDRVNTIn0.ZmFrZQ";
const LOGIN_ACCOUNT: &str = "acct-fake-forwarded";
const LOGIN_REFRESH_TOKEN: &str = "fake-refresh-token-from-the-host";
const FORWARD_WARNING: &str =
    "bot-bottle: WARNING: --forward-codex-auth copies your Codex ChatGPT login";

fn login_json(access_token: &str, last_refresh: time::OffsetDateTime) -> String {
    let at = last_refresh
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::to_string_pretty(&serde_json::json!({
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": LOGIN_ID_TOKEN,
            "access_token": access_token,
            "refresh_token": LOGIN_REFRESH_TOKEN,
            "account_id": LOGIN_ACCOUNT,
        },
        "last_refresh": at,
    }))
    .unwrap()
}

/// A world whose manifest names `provider` and pins the ChatGPT backend and the login
/// refresh to the fake (when given); the host's Codex home is `<tmp>/codex-home`.
fn login_world(provider: &str, api: Option<&ModelApi>, ca: &TestCa) -> (World, PathBuf) {
    let routes: String = api
        .map(|api| {
            // The provider's default routes for a forwarded login (same matches, same
            // outbound DLP: the bottle's own login may go), pinned to the fake: the session
            // below shows they are all Codex needs.
            [
                (
                    "chatgpt.com",
                    "[{paths: [{type: prefix, value: /backend-api/}]}]",
                    "dlp: redact\n          dlp_allow: [jwt, generic-bearer-token]",
                ),
                (
                    "auth.openai.com",
                    "[{paths: [{type: exact, value: /oauth/token}], methods: [POST]}]",
                    "dlp: log",
                ),
            ]
            .iter()
            .map(|(h, m, dlp)| {
                format!(
                    "        - host: {h}\n          connect_to: \"{}\"\n          matches: {m}\n          {dlp}\n",
                    api.addr()
                )
            })
            .collect()
        })
        .unwrap_or_default();
    let world = world_with_routes(
        provider,
        &format!("{routes}        - host: example.test\n"),
        ca,
    );
    let codex_home = world._tmp.path().join("codex-home");
    std::fs::create_dir_all(&codex_home).unwrap();
    (world, codex_home)
}

/// `bot-bottle start agent --forward-codex-auth -- bash -c <script>` with the host's
/// Codex home at `codex_home` and no API key anywhere on the host side.
fn start_forwarding(world: &World, codex_home: &Path, script: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args([
            "start",
            "agent",
            "--forward-codex-auth",
            "--",
            "bash",
            "-c",
            script,
        ])
        .current_dir(&world.workspace)
        .env("BOT_BOTTLE_HOME", &world.home)
        .env("CODEX_HOME", codex_home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

const FORWARD_SCRIPT: &str = "cd \"$HOME\"\n\
     timeout 180 codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox 'List the egress routes of this bottle.' </dev/null; echo \"CLIENT-EXIT=$?\"\n\
     echo \"LOGIN-MODE=$(stat -c %a \"$CODEX_HOME/auth.json\")\"\n\
     echo \"API-KEY-VARS=$(env | grep -c -e '^OPENAI_API_KEY=' -e '^CODEX_API_KEY=')\"\n\
     exit 3\n";

/// The only bottle's state directory.
pub(crate) fn only_state_dir(home: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(home.join("state"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

/// Every check of a forwarded-login session; `bearer` is the access token the ChatGPT
/// backend must have seen on every model request.
fn check_forwarded_session(api: &ModelApi, world: &World, out: &Output, bearer: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reqs = api.requests();
    let ctx = format!(
        "stdout:\n{stdout}\nstderr:\n{stderr}\nrequests:\n{}",
        summary(&reqs)
    );
    assert!(stderr.contains(FORWARD_WARNING), "no warning\n{ctx}");
    assert!(
        stderr.contains("refreshable credential"),
        "the warning does not say what is handed over\n{ctx}"
    );
    let problems = api.protocol_problems();
    assert!(
        problems.is_empty(),
        "the codex protocol changed: {problems:?}\n{ctx}"
    );
    assert!(
        stdout.contains("CLIENT-EXIT=0"),
        "codex did not complete\n{ctx}"
    );
    assert!(stdout.contains(FINAL_TEXT), "no final answer\n{ctx}");
    assert!(stdout.contains("LOGIN-MODE=600"), "{ctx}");
    assert!(
        stdout.contains("API-KEY-VARS=0"),
        "an API key variable is set\n{ctx}"
    );
    assert_eq!(out.status.code(), Some(3), "{ctx}");

    // The model requests went to the ChatGPT backend's Codex API with the login's token
    // and account, and the scripted supervise tool call came back.
    let model: Vec<&ModelRequest> = reqs
        .iter()
        .filter(|r| r.api == Api::ChatGptResponses)
        .collect();
    assert!(
        !model.is_empty(),
        "no request reached the ChatGPT backend\n{ctx}"
    );
    assert!(
        reqs.iter().all(|r| r.api != Api::OpenAiResponses),
        "a request went to the API-key endpoint\n{ctx}"
    );
    for r in &model {
        assert_eq!(r.sni.as_deref(), Some("chatgpt.com"), "{ctx}");
        assert_eq!(
            r.header("authorization"),
            vec![format!("Bearer {bearer}")],
            "{ctx}"
        );
        assert_eq!(r.header("chatgpt-account-id"), vec![LOGIN_ACCOUNT], "{ctx}");
    }
    assert!(
        model
            .iter()
            .any(|r| matches!(&r.answer, Answer::ToolCall(n) if n.contains("egress"))),
        "codex never offered the supervise tool\n{ctx}"
    );
    let addr = api.addr().to_string();
    assert!(
        model
            .iter()
            .any(|r| r.answer == Answer::Final && r.text().contains(&addr)),
        "the tool result does not hold the bottle's routes from supervise\n{ctx}"
    );
    // No placeholder and no API key went anywhere.
    for r in &reqs {
        let leaked = r.headers.iter().any(|(_, v)| v.contains(PLACEHOLDER))
            || r.text().contains(PLACEHOLDER);
        assert!(
            !leaked,
            "the placeholder left the bottle in {} {}",
            r.method, r.path
        );
    }

    // Nothing Codex sent to the ChatGPT backend or the login refresh was blocked: the
    // routes' path and method limits cover all of it.
    let blocked: Vec<String> = egress_log(&world.home)
        .iter()
        .filter(|e| e["decision"] != "allow" && e["decision"] != "allowed")
        .map(|e| format!("{} {}{}", e["method"], e["host"], e["path"]))
        .collect();
    assert!(
        blocked
            .iter()
            .all(|b| !b.contains("chatgpt.com") && !b.contains("auth.openai.com")),
        "{blocked:#?}\n{ctx}"
    );

    // `resume` forwards the login again.
    let state = only_state_dir(&world.home);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["forward_codex_auth"], true, "{meta}");
}

/// A real Codex session in a native bottle with a forwarded host login (its access token,
/// refreshed at `refreshed`) against the fake ChatGPT backend; `None` (the reason printed)
/// where the backend or the client is missing.
async fn forwarded_session(
    access_token: &str,
    refreshed: time::OffsetDateTime,
) -> Option<(ModelApi, std::sync::Arc<World>, PathBuf, String, Output)> {
    if !native_usable() || !client_installed("codex") {
        return None;
    }
    test_support::install_crypto_provider();
    let ca = TestCa::new("fake ChatGPT CA");
    let api = ModelApi::start_tls(&ca, &["chatgpt.com", "auth.openai.com"], TOOL).await;
    let (world, codex_home) = login_world("codex", Some(&api), &ca);
    let login = login_json(access_token, refreshed);
    std::fs::write(codex_home.join("auth.json"), &login).unwrap();
    let world = std::sync::Arc::new(world);
    let (w, ch) = (world.clone(), codex_home.clone());
    let out = tokio::task::spawn_blocking(move || start_forwarding(&w, &ch, FORWARD_SCRIPT))
        .await
        .unwrap();
    Some((api, world, codex_home, login, out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_codex_uses_a_forwarded_chatgpt_login_in_a_bottle() {
    let Some((api, world, codex_home, login, out)) =
        forwarded_session(LOGIN_ACCESS_TOKEN, time::OffsetDateTime::now_utc()).await
    else {
        return;
    };
    check_forwarded_session(&api, &world, &out, LOGIN_ACCESS_TOKEN);
    let before = api.requests().len();

    // `resume` forwards the login again (and warns again) ...
    let identity = only_state_dir(&world.home)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let resume = |w: std::sync::Arc<World>, ch: PathBuf, id: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
                .args(["resume", &id])
                .current_dir(&w.workspace)
                .env("BOT_BOTTLE_HOME", &w.home)
                .env("CODEX_HOME", &ch)
                .env_remove("OPENAI_API_KEY")
                .env_remove("CODEX_API_KEY")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
    };
    let again = resume(world.clone(), codex_home.clone(), identity.clone())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains(FORWARD_WARNING), "{stderr}");
    assert!(stdout.contains("CLIENT-EXIT=0"), "{stdout}\n{stderr}");
    assert_eq!(again.status.code(), Some(3), "{stderr}");
    let resumed: Vec<ModelRequest> = api.requests()[before..]
        .iter()
        .filter(|r| r.api == Api::ChatGptResponses)
        .cloned()
        .collect();
    assert!(!resumed.is_empty(), "{}", summary(&api.requests()));
    for r in &resumed {
        assert_eq!(
            r.header("authorization"),
            vec![format!("Bearer {LOGIN_ACCESS_TOKEN}")]
        );
    }
    // ... and refuses, keeping the bottle, once the host has no login any more.
    std::fs::rename(
        codex_home.join("auth.json"),
        codex_home.join("auth.json.moved"),
    )
    .unwrap();
    let refused = resume(world.clone(), codex_home.clone(), identity.clone())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("run `codex login --device-auth` on the host first"),
        "{stderr}"
    );
    assert!(only_state_dir(&world.home).join("metadata.json").is_file());
    std::fs::rename(
        codex_home.join("auth.json.moved"),
        codex_home.join("auth.json"),
    )
    .unwrap();

    // A fresh login is not refreshed, and the host's copy is untouched.
    assert!(
        api.requests().iter().all(|r| r.api != Api::OAuthToken),
        "{}",
        summary(&api.requests())
    );
    assert_eq!(
        std::fs::read_to_string(codex_home.join("auth.json")).unwrap(),
        login
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refreshed_in_the_bottle_is_written_back_to_the_host_when_it_ends() {
    let stale = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let Some((api, world, codex_home, login, out)) =
        forwarded_session(EXPIRED_ACCESS_TOKEN, stale).await
    else {
        return;
    };
    // Codex refreshed the login through the pinned auth.openai.com route ...
    let refreshes: Vec<ModelRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.api == Api::OAuthToken)
        .collect();
    assert!(!refreshes.is_empty(), "{}", summary(&api.requests()));
    for r in &refreshes {
        assert_eq!(r.sni.as_deref(), Some("auth.openai.com"));
        assert!(r.text().contains(LOGIN_REFRESH_TOKEN), "{}", r.text());
    }
    // ... and used the refreshed token from then on.
    check_forwarded_session(&api, &world, &out, REFRESHED_ACCESS_TOKEN);
    // The bottle's copy holds the refreshed login, and so does the host's now: the host's
    // file was still the one forwarded, so the rotated refresh token replaced the old one
    // (which the login server would no longer accept).
    let inside =
        std::fs::read_to_string(only_state_dir(&world.home).join("home/.codex/auth.json")).unwrap();
    assert!(inside.contains(REFRESHED_ACCESS_TOKEN), "{inside}");
    assert!(inside.contains(REFRESHED_REFRESH_TOKEN), "{inside}");
    let host = codex_home.join("auth.json");
    let host_now = std::fs::read_to_string(&host).unwrap();
    assert_ne!(host_now, login);
    assert_eq!(host_now, inside);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&host).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("was written back to {}", host.display())),
        "{stderr}"
    );

    // The host now holds the rotated refresh token of the same account.
    let refreshed: serde_json::Value = serde_json::from_str(&host_now).unwrap();
    assert_eq!(
        refreshed["tokens"]["refresh_token"].as_str(),
        Some(REFRESHED_REFRESH_TOKEN)
    );
    assert_eq!(
        refreshed["tokens"]["account_id"].as_str(),
        Some(LOGIN_ACCOUNT)
    );
}

/// Runs `start --forward-codex-auth` expecting a refusal: exit 2, nothing created, the
/// message on stderr (the world's temporary path shown as `<tmp>`).
fn refusal(world: &World, codex_home: &Path) -> String {
    let out = start_forwarding(world, codex_home, "exit 0");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!world.home.join("state").exists(), "nothing was created");
    assert!(!stderr.contains(FORWARD_WARNING), "{stderr}");
    let tmp = world.workspace.parent().unwrap().display().to_string();
    stderr.replace(&tmp, "<tmp>")
}

#[test]
fn forwarding_a_codex_login_is_refused_for_another_agent() {
    let ca = TestCa::new("unused CA");
    let (world, codex_home) = login_world("claude", None, &ca);
    std::fs::write(
        codex_home.join("auth.json"),
        login_json(LOGIN_ACCESS_TOKEN, time::OffsetDateTime::now_utc()),
    )
    .unwrap();
    assert_eq!(
        refusal(&world, &codex_home),
        "error: --forward-codex-auth is for Codex bottles, and agent `agent` runs Claude Code; leave the flag off\n"
    );
}

#[test]
fn forwarding_a_codex_login_is_refused_without_a_login() {
    let ca = TestCa::new("unused CA");
    let (world, codex_home) = login_world("codex", None, &ca);
    assert_eq!(
        refusal(&world, &codex_home),
        "error: --forward-codex-auth: there is no Codex login on the host (<tmp>/codex-home/auth.json does not exist); run `codex login --device-auth` on the host first, then try again\n"
    );
    // An API-key login is not forwarded either: the key belongs in egress.
    std::fs::write(
        codex_home.join("auth.json"),
        r#"{"OPENAI_API_KEY":"sk-REALSECRET-never-printed"}"#,
    )
    .unwrap();
    let err = refusal(&world, &codex_home);
    assert_eq!(
        err,
        "error: --forward-codex-auth: the host's Codex login <tmp>/codex-home/auth.json is an API key, not a ChatGPT login; leave the flag off and export OPENAI_API_KEY instead (egress injects it and the bottle never sees it), or run `codex login --device-auth` on the host first\n"
    );
}
