//! The request heads the agents' own clients send on every model call, through the rules
//! egress DLP uses (the built-in rules but `generic-keyed-secret`, egress's `RULES_LEFT_OUT`),
//! scanned as egress scans a head: the request target and each header as a `name: value` line,
//! all at once and each alone. A finding here stops (or redacts) every call of that client.
//!
//! The header sets are shaped like the real ones (names, value formats, versions), from the
//! clients' published sources and captures of their traffic: Claude Code (`claude-cli` user
//! agent, the Anthropic SDK's `x-stainless-*`, `anthropic-beta` flags, session and request
//! UUIDs), Codex (`codex_cli_rs` originator and user agent, `session_id` / `conversation_id`,
//! `chatgpt-account-id`), the Gemini CLI (`GeminiCLI/<version>/<model>` user agent,
//! `x-goog-api-client`, on the Gemini API and on Code Assist) and OpenCode (`x-opencode-*`,
//! the AI SDK's user agent). The ids and nonces are made up in the real formats. The
//! credential each sends is the bottle's placeholder, in the header egress replaces with the
//! real one and leaves out of the scan (as here).

use pretty_assertions::assert_eq;
use scan::{RuleSet, ScanOptions, Scanner};

/// What the agent holds instead of a credential (`contract::PLACEHOLDER_TOKEN`).
const PLACEHOLDER: &str = "bot-bottle-placeholder-the-real-token-is-injected-by-egress";

/// The built-in rules egress DLP leaves to the file scanner and the git gate.
const LEFT_OUT_OF_DLP: &[&str] = &["generic-keyed-secret"];

fn dlp_scanner() -> Scanner {
    let mut rules = RuleSet::builtin().unwrap();
    rules
        .rules
        .retain(|r| !LEFT_OUT_OF_DLP.contains(&r.id.as_str()));
    Scanner::from_rules(rules).with_options(ScanOptions {
        honor_inline_allow: false,
        ..ScanOptions::default()
    })
}

struct Client {
    name: &'static str,
    target: &'static str,
    /// The credential header, which egress injects and does not scan.
    injected: &'static str,
    headers: Vec<(&'static str, String)>,
}

fn clients() -> Vec<Client> {
    let bearer = format!("Bearer {PLACEHOLDER}");
    let stainless = |package: &str, runtime: &str| {
        vec![
            ("x-stainless-arch", "x64".to_string()),
            ("x-stainless-lang", "js".into()),
            ("x-stainless-os", "Linux".into()),
            ("x-stainless-package-version", package.into()),
            ("x-stainless-retry-count", "0".into()),
            ("x-stainless-runtime", "node".into()),
            ("x-stainless-runtime-version", runtime.into()),
            ("x-stainless-timeout", "600".into()),
            ("x-stainless-helper-method", "stream".into()),
        ]
    };
    let mut claude_api_key = vec![
        ("accept", "application/json".to_string()),
        ("accept-encoding", "br, gzip, deflate".into()),
        ("accept-language", "*".into()),
        ("sec-fetch-mode", "cors".into()),
        (
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,fine-grained-tool-streaming-2025-05-14".into(),
        ),
        ("anthropic-dangerous-direct-browser-access", "true".into()),
        ("anthropic-version", "2023-06-01".into()),
        ("content-type", "application/json".into()),
        ("user-agent", "claude-cli/2.0.14 (external, cli)".into()),
        ("x-app", "cli".into()),
        ("x-api-key", PLACEHOLDER.into()),
        (
            "x-claude-code-session-id",
            "4f0c8e9a-6b1d-4a7e-9c3f-2d5b8e1a7c40".into(),
        ),
        (
            "x-client-request-id",
            "b2e7d1c4-93a8-4f6e-8d20-5c1a9e7f3b68".into(),
        ),
    ];
    claude_api_key.extend(stainless("0.60.0", "v24.3.0"));
    let mut claude_oauth = vec![
        ("accept", "application/json".to_string()),
        (
            "anthropic-beta",
            "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,context-management-2025-06-27,prompt-caching-scope-2026-01-05,effort-2025-11-24".into(),
        ),
        ("anthropic-version", "2023-06-01".into()),
        ("authorization", bearer.clone()),
        ("content-type", "application/json".into()),
        ("user-agent", "claude-cli/2.1.92 (external, sdk-cli)".into()),
        ("x-app", "cli".into()),
        (
            "x-claude-code-session-id",
            "9d3a7f52-0e6b-4c18-a5f9-7b2e6d4c1a83".into(),
        ),
    ];
    claude_oauth.extend(stainless("0.80.0", "v24.14.0"));
    vec![
        Client {
            name: "Claude Code (API key)",
            target: "/v1/messages?beta=true",
            injected: "x-api-key",
            headers: claude_api_key,
        },
        Client {
            name: "Claude Code (login)",
            target: "/v1/messages/count_tokens?beta=true",
            injected: "authorization",
            headers: claude_oauth,
        },
        Client {
            name: "Codex (ChatGPT login)",
            target: "/backend-api/codex/responses",
            injected: "authorization",
            headers: vec![
                ("accept", "text/event-stream".into()),
                ("authorization", bearer.clone()),
                (
                    "chatgpt-account-id",
                    "5a4c2f1e-8b7d-4e3a-9f6b-1c2d3e4f5a6b".into(),
                ),
                ("content-type", "application/json".into()),
                ("conversation_id", "0199a3f2-7c4e-7b81-9d25-3e6f8a1c4b70".into()),
                ("session_id", "0199a3f2-7c4e-7b81-9d25-3e6f8a1c4b70".into()),
                ("originator", "codex_cli_rs".into()),
                (
                    "user-agent",
                    "codex_cli_rs/0.46.0 (Ubuntu 24.4.0; x86_64) xterm-256color".into(),
                ),
                ("version", "0.46.0".into()),
                ("openai-beta", "responses=experimental".into()),
                (
                    "x-client-request-id",
                    "0199a3f2-8d10-7e42-a6c3-91b5d7e2f084".into(),
                ),
                (
                    "traceparent",
                    "00-7d9c2e4f1a3b5c6d8e0f2a4b6c8d0e1f-3a5c7e9b1d2f4a6c-01".into(),
                ),
            ],
        },
        Client {
            name: "Codex (API key)",
            target: "/v1/responses",
            injected: "authorization",
            headers: vec![
                ("accept", "text/event-stream".into()),
                ("authorization", bearer.clone()),
                ("content-type", "application/json".into()),
                ("openai-organization", "org-2Fq8LxV3nT0bR7kWm9YcJd4H".into()),
                ("openai-project", "proj_Vb2nQ8xK4mT7rL1wZ9cY3hF6".into()),
                ("originator", "codex_cli_rs".into()),
                (
                    "user-agent",
                    "codex_cli_rs/0.63.0 (Debian 12.0.0; aarch64) dumb".into(),
                ),
                ("session_id", "0199b7c1-2e5d-7a03-8f46-c2d9e1a7b538".into()),
                ("version", "0.63.0".into()),
            ],
        },
        Client {
            name: "Gemini CLI (API key)",
            target: "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            injected: "x-goog-api-key",
            headers: vec![
                ("content-type", "application/json".into()),
                (
                    "user-agent",
                    "GeminiCLI/0.21.0/gemini-2.5-pro (linux; x64; terminal) google-api-nodejs-client/9.15.1".into(),
                ),
                (
                    "x-goog-api-client",
                    "google-genai-sdk/1.30.0 gl-node/v20.19.5".into(),
                ),
                ("x-goog-api-key", PLACEHOLDER.into()),
            ],
        },
        Client {
            name: "Gemini CLI (Code Assist login)",
            target: "/v1internal:streamGenerateContent?alt=sse",
            injected: "authorization",
            headers: vec![
                ("authorization", bearer.clone()),
                ("content-type", "application/json".into()),
                (
                    "user-agent",
                    "GeminiCLI/0.34.0/gemini-3.1-pro-preview (linux; x64; vscode) google-api-nodejs-client/10.5.0".into(),
                ),
                ("x-goog-api-client", "gl-node/22.17.0 gccl/0.34.0".into()),
            ],
        },
        Client {
            name: "OpenCode (Zen)",
            target: "/zen/v1/chat/completions",
            injected: "authorization",
            headers: vec![
                ("authorization", bearer.clone()),
                ("content-type", "application/json".into()),
                (
                    "user-agent",
                    "opencode/1.0.134 ai-sdk/openai-compatible/1.0.27 ai-sdk/provider-utils/3.0.17 runtime/bun/1.3.2".into(),
                ),
                (
                    "x-opencode-project",
                    "8c1f4e2a9b7d3c6e0f5a1b2c4d6e8f0a3b5c7d9e".into(),
                ),
                ("x-opencode-session", "ses_6a1f3c9e2ffeQ8hN2kLm4Rt7Vb".into()),
                ("x-opencode-request", "msg_6a1f3c9e3001Zx8Kp2Lm5Nq7Tb".into()),
                ("x-opencode-client", "cli".into()),
            ],
        },
        Client {
            name: "OpenCode (Anthropic)",
            target: "/v1/messages",
            injected: "x-api-key",
            headers: vec![
                (
                    "anthropic-beta",
                    "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14".into(),
                ),
                ("anthropic-version", "2023-06-01".into()),
                ("content-type", "application/json".into()),
                (
                    "user-agent",
                    "ai-sdk/anthropic/2.0.45 ai-sdk/provider-utils/3.0.17 runtime/bun/1.3.2".into(),
                ),
                ("x-api-key", PLACEHOLDER.into()),
            ],
        },
    ]
}

/// (client, rule, the line it matched in) of each finding, scanning as egress scans a head.
fn findings(scanner: &Scanner, client: &Client) -> Vec<(String, String, String)> {
    let scanned = || {
        client
            .headers
            .iter()
            .filter(|(name, _)| *name != client.injected)
    };
    assert!(
        client
            .headers
            .iter()
            .any(|(name, _)| *name == client.injected),
        "{}",
        client.name
    );
    let mut head = format!("{}\n", client.target);
    for (name, value) in scanned() {
        head.push_str(&format!("{name}: {value}\n"));
    }
    let mut out: Vec<(String, String, String)> = scanner
        .scan_bytes("request-head", head.as_bytes())
        .into_iter()
        .map(|f| {
            let line = head.lines().nth(f.line as usize - 1).unwrap_or("");
            (client.name.to_string(), f.rule_id, line.to_string())
        })
        .collect();
    for (name, value) in scanned() {
        let line = format!("{name}: {value}");
        out.extend(
            scanner
                .scan_bytes("header", line.as_bytes())
                .into_iter()
                .map(|f| (client.name.to_string(), f.rule_id, line.clone())),
        );
    }
    out
}

#[test]
fn the_heads_agent_clients_send_on_every_model_call_hold_no_finding_for_dlp() {
    let scanner = dlp_scanner();
    let found: Vec<_> = clients()
        .iter()
        .flat_map(|c| findings(&scanner, c))
        .collect();
    assert_eq!(found, vec![]);
}
