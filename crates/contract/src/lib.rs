//! The agent's contract: what the agent finds inside a bottle, on every backend.
//!
//! A backend decides *how* a bottle is isolated; this crate decides *what* the agent sees:
//! the proxy variables pointing at egress, the bottle CA trusted by every tool, a
//! `.gitconfig` whose remotes lead to the git gate, the supervise MCP server registered for
//! its provider, and placeholder credentials. Keeping it here, as pure functions, is what
//! makes the contract identical across backends and testable without starting anything.
//!
//! The environment is built from nothing: only the variables listed here, a few harmless
//! ones copied from the host (terminal and locale), and the bottle's own `env:`. The bottle's
//! `env:` may not override a variable the contract sets — that would let a manifest bypass
//! the proxy or the CA — so such a manifest is refused rather than silently corrected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The user name the agent runs as inside every bottle (never root: Claude Code refuses its
/// skip-permissions flag as root, and nothing the agent does needs it).
pub const AGENT_USER: &str = "agent";

/// Name under which the supervise MCP server is registered with the agent's client.
pub const MCP_SERVER_NAME: &str = "bot-bottle";

/// The Codex model provider id bot-bottle configures (the OpenAI API without WebSockets).
pub const CODEX_PROVIDER_ID: &str = "bot-bottle-openai";

/// The Codex model provider id for a forwarded ChatGPT login (the ChatGPT backend without
/// WebSockets).
pub const CODEX_CHATGPT_PROVIDER_ID: &str = "bot-bottle-chatgpt";

/// Where Codex reaches the ChatGPT backend with a ChatGPT login (Codex's own default).
pub const CHATGPT_BASE_URL: &str = "https://chatgpt.com/backend-api/";

/// The Codex model API inside the ChatGPT backend (`<base>/responses`).
pub const CHATGPT_CODEX_BASE_URL: &str = "https://chatgpt.com/backend-api/codex";

/// Placeholder put where a provider expects a credential. Egress replaces it on the way out.
pub const PLACEHOLDER_TOKEN: &str = "bot-bottle-placeholder-the-real-token-is-injected-by-egress";

/// Host variables copied into the bottle when set: terminal and locale only.
const HOST_PASSTHROUGH: &[&str] = &["TERM", "COLORTERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// Which agent client the bottle runs; decides MCP registration and placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Claude Code.
    Claude,
    /// OpenAI Codex CLI.
    Codex,
    /// Google Gemini CLI.
    Gemini,
    /// OpenCode.
    OpenCode,
    /// Any other terminal agent, described by [`Input::generic`].
    Generic,
}

/// Which model API OpenCode uses (a placeholder key for it; egress swaps in the real one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenCodeAuth {
    /// The Anthropic API with `ANTHROPIC_API_KEY` (sent as `x-api-key`).
    #[default]
    Anthropic,
    /// The OpenAI API with `OPENAI_API_KEY` (sent as `Authorization: Bearer`).
    OpenAi,
}

/// What a generic provider's client needs from the contract.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenericClient {
    /// Variables the agent reads its keys from; each holds [`PLACEHOLDER_TOKEN`].
    pub placeholder_env: Vec<String>,
    /// Where the supervise MCP server is registered, if anywhere.
    pub mcp: Option<McpRegistration>,
    /// The client's instructions file, relative to `$HOME`.
    pub instructions: Option<PathBuf>,
}

/// A generic client's MCP configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRegistration {
    /// The file, relative to `$HOME`; TOML when it ends in `.toml`, JSON otherwise.
    pub file: PathBuf,
    /// The path of keys to the table of servers (`["mcp", "servers"]`).
    pub key: Vec<String>,
    /// One server's entry; every string `{url}` in it becomes the supervise URL.
    pub entry: serde_json::Value,
}

/// Which credential Claude Code presents (a placeholder either way; egress swaps in the
/// real one on the route to the Anthropic API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaudeAuth {
    /// `CLAUDE_CODE_OAUTH_TOKEN`: sent as `Authorization: Bearer`.
    #[default]
    OAuth,
    /// `ANTHROPIC_API_KEY`: sent as `x-api-key`.
    ApiKey,
}

/// How Codex authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodexAuth {
    /// `OPENAI_API_KEY`: the agent holds a placeholder, egress injects the real key.
    #[default]
    ApiKey,
    /// The host's ChatGPT (device-auth) login, forwarded on the operator's explicit request:
    /// the agent holds the real, refreshable credential in `~/.codex/auth.json` (written by
    /// `start`, not by this crate), so no API-key placeholder may compete with it.
    ChatGptLogin,
}

/// Where the sidecars are reached from inside the bottle: ports on the bottle's own
/// loopback (each backend forwards them to the sidecar bundle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// Egress proxy port.
    pub egress: u16,
    /// Git gate port.
    pub gate: u16,
    /// Supervise MCP port.
    pub supervise: u16,
}

impl Endpoints {
    /// The ports every backend uses unless it has a reason not to.
    pub const DEFAULT: Endpoints = Endpoints {
        egress: 3128,
        gate: 3129,
        supervise: 3130,
    };

    /// `http://127.0.0.1:<egress>`.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.egress)
    }

    /// `http://127.0.0.1:<gate>`: the base the `.gitconfig` rewrites point at.
    pub fn gate_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gate)
    }

    /// `http://127.0.0.1:<supervise>/mcp`.
    pub fn supervise_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.supervise)
    }
}

/// Everything the contract is built from.
#[derive(Debug, Clone)]
pub struct Input {
    /// The agent's client.
    pub provider: Provider,
    /// The bottle's identity, exported as `BOT_BOTTLE_IDENTITY`.
    pub identity: String,
    /// Sidecar ports inside the bottle.
    pub endpoints: Endpoints,
    /// `$HOME` inside the bottle.
    pub home: PathBuf,
    /// The workspace inside the bottle (the agent's working directory).
    pub workspace: PathBuf,
    /// Inside path of the CA bundle: the system roots plus the bottle CA.
    pub ca_bundle: PathBuf,
    /// Inside path of the bottle CA certificate alone (never its key).
    pub bottle_ca: PathBuf,
    /// The rendered `.gitconfig` (user identity and `insteadOf` rewrites to the gate).
    pub gitconfig: String,
    /// The bottle's `env:` from the manifest.
    pub bottle_env: BTreeMap<String, String>,
    /// Which placeholder credential Claude Code gets (ignored for Codex).
    pub claude_auth: ClaudeAuth,
    /// How Codex authenticates (ignored for Claude Code).
    pub codex_auth: CodexAuth,
    /// Which model API OpenCode uses (ignored for the others).
    pub opencode_auth: OpenCodeAuth,
    /// The generic provider's client (required for [`Provider::Generic`], ignored
    /// otherwise).
    pub generic: Option<GenericClient>,
    /// Instructions for the agent's client beyond its prompt (Codex: `~/.codex/AGENTS.md`;
    /// Claude Code: `~/.claude/CLAUDE.md`; Gemini CLI: `~/.gemini/GEMINI.md`; OpenCode:
    /// `~/.config/opencode/AGENTS.md`; a generic client: its `instructions` file), e.g. how
    /// to ask for access and the index of the delivered skills.
    pub instructions: Option<String>,
}

/// A file placed in the agent's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeFile {
    /// Path relative to `$HOME`.
    pub path: PathBuf,
    /// Content.
    pub contents: String,
}

/// What the agent finds: its complete environment and the files of its home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    /// The agent's whole environment.
    pub env: BTreeMap<String, String>,
    /// Files to write into the fresh home before the agent starts.
    pub home_files: Vec<HomeFile>,
}

/// Why a contract cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The bottle's `env:` tries to set a variable the contract owns.
    #[error(
        "env `{0}` is set by bot-bottle itself (proxy, CA or sidecar wiring) and cannot be overridden in a bottle's `env:`; remove it from the manifest"
    )]
    Reserved(String),
    /// A variable name or value that cannot be passed safely.
    #[error(
        "env `{0}` is not a valid variable (names are letters, digits and `_`; values have no NUL)"
    )]
    Invalid(String),
    /// A generic provider's description the contract cannot honour.
    #[error("agent_provider: {0}")]
    Generic(String),
}

/// Builds the contract. `host_var` looks up the host's environment; only terminal and
/// locale variables are ever read through it.
pub fn build(
    input: &Input,
    host_var: impl Fn(&str) -> Option<String>,
) -> Result<Contract, ContractError> {
    let mut ours: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        ours.insert(k.to_string(), v);
    };
    let home = input.home.display().to_string();
    set("HOME", home.clone());
    set("USER", AGENT_USER.into());
    set("LOGNAME", AGENT_USER.into());
    set("SHELL", "/bin/bash".into());
    set(
        "PATH",
        format!("{home}/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    set("PWD", input.workspace.display().to_string());
    let proxy = input.endpoints.proxy_url();
    for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        set(k, proxy.clone());
    }
    for k in ["NO_PROXY", "no_proxy"] {
        set(k, "127.0.0.1,localhost,::1".into());
    }
    for k in ["ALL_PROXY", "all_proxy"] {
        // Set empty so a SOCKS proxy from elsewhere can never be picked up.
        set(k, String::new());
    }
    let bundle = input.ca_bundle.display().to_string();
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "NPM_CONFIG_CAFILE",
    ] {
        set(k, bundle.clone());
    }
    // Node keeps its own roots and adds these: the bottle CA alone is enough.
    set("NODE_EXTRA_CA_CERTS", input.bottle_ca.display().to_string());
    set("BOT_BOTTLE_SUPERVISE_URL", input.endpoints.supervise_url());
    set("BOT_BOTTLE_IDENTITY", input.identity.clone());
    match input.provider {
        Provider::Claude => {
            match input.claude_auth {
                ClaudeAuth::OAuth => set("CLAUDE_CODE_OAUTH_TOKEN", PLACEHOLDER_TOKEN.into()),
                ClaudeAuth::ApiKey => set("ANTHROPIC_API_KEY", PLACEHOLDER_TOKEN.into()),
            }
            // Telemetry, error reporting, update checks and other non-essential traffic off
            // by Claude Code's own settings (egress would block them anyway).
            set("DISABLE_TELEMETRY", "1".into());
            set("DISABLE_ERROR_REPORTING", "1".into());
            set("DISABLE_AUTOUPDATER", "1".into());
            set("DISABLE_BUG_COMMAND", "1".into());
            set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into());
            set("CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY", "1".into());
            // The supervise tools are the bottle's line to the operator: load them up front
            // (not deferred behind tool search) and wait for the local MCP server before
            // the first turn, so even a one-shot `claude -p` can use them.
            set("ENABLE_TOOL_SEARCH", "false".into());
            set("MCP_CONNECTION_NONBLOCKING", "false".into());
        }
        Provider::Codex => {
            if input.codex_auth == CodexAuth::ApiKey {
                // `codex` reads OPENAI_API_KEY, `codex exec` also CODEX_API_KEY. With a
                // forwarded login neither is set: `codex exec` prefers CODEX_API_KEY over
                // the login.
                set("OPENAI_API_KEY", PLACEHOLDER_TOKEN.into());
                set("CODEX_API_KEY", PLACEHOLDER_TOKEN.into());
            }
            set("CODEX_HOME", format!("{home}/.codex"));
        }
        Provider::Gemini => {
            set("GEMINI_API_KEY", PLACEHOLDER_TOKEN.into());
        }
        Provider::OpenCode => {
            match input.opencode_auth {
                OpenCodeAuth::Anthropic => set("ANTHROPIC_API_KEY", PLACEHOLDER_TOKEN.into()),
                OpenCodeAuth::OpenAi => set("OPENAI_API_KEY", PLACEHOLDER_TOKEN.into()),
            }
            // The model catalogue, updates and language servers would be fetched from
            // hosts the bottle does not route; OpenCode has its catalogue built in.
            set("OPENCODE_DISABLE_MODELS_FETCH", "1".into());
            set("OPENCODE_DISABLE_AUTOUPDATE", "1".into());
            set("OPENCODE_DISABLE_LSP_DOWNLOAD", "1".into());
        }
        // The key variables are checked against everything above once it is all set.
        Provider::Generic => {}
    }
    if input.provider == Provider::Generic {
        let generic = input.generic.as_ref().ok_or_else(|| {
            ContractError::Generic("a generic provider needs its description".into())
        })?;
        for k in &generic.placeholder_env {
            if !valid_name(k) {
                return Err(ContractError::Invalid(k.clone()));
            }
            if ours.contains_key(k) || is_wiring(k) {
                return Err(ContractError::Generic(format!(
                    "model_api env `{k}` is set by bot-bottle itself (proxy, CA or sidecar wiring); name the variable the agent reads its key from"
                )));
            }
            ours.insert(k.clone(), PLACEHOLDER_TOKEN.into());
        }
    }

    let mut env = BTreeMap::new();
    for k in HOST_PASSTHROUGH {
        if let Some(v) = host_var(k).filter(|v| !v.contains('\0')) {
            env.insert((*k).to_string(), v);
        }
    }
    for (k, v) in &input.bottle_env {
        if !valid_name(k) || v.contains('\0') {
            return Err(ContractError::Invalid(k.clone()));
        }
        if ours.contains_key(k) || is_reserved(k) {
            return Err(ContractError::Reserved(k.clone()));
        }
        env.insert(k.clone(), v.clone());
    }
    env.extend(ours);

    let home_files = home_files(input)?;
    Ok(Contract { env, home_files })
}

fn valid_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Variables that change how programs load code, trust peers or reach the sidecars: never a
/// generic provider's key variable either.
fn is_wiring(k: &str) -> bool {
    k.starts_with("LD_")
        || k.starts_with("BOT_BOTTLE_")
        || k.starts_with("GIT_")
        || matches!(k, "NODE_OPTIONS" | "SSL_CERT_DIR")
}

/// Variables that change how programs load code or trust peers; never from a manifest.
fn is_reserved(k: &str) -> bool {
    k.starts_with("LD_")
        || k.starts_with("BOT_BOTTLE_")
        || k.starts_with("GIT_CONFIG")
        || matches!(
            k,
            // Credentials: the agent only ever holds placeholders.
            "CLAUDE_CODE_OAUTH_TOKEN"
                | "ANTHROPIC_API_KEY"
                | "ANTHROPIC_AUTH_TOKEN"
                | "OPENAI_API_KEY"
                | "CODEX_API_KEY"
                | "CODEX_ACCESS_TOKEN"
                | "GEMINI_API_KEY"
                | "GOOGLE_API_KEY"
                | "NODE_OPTIONS"
                | "GIT_SSH"
                | "GIT_SSH_COMMAND"
                | "GIT_PROXY_COMMAND"
                | "SSL_CERT_DIR"
        )
}

fn home_files(input: &Input) -> Result<Vec<HomeFile>, ContractError> {
    let mut files = vec![HomeFile {
        path: ".gitconfig".into(),
        contents: input.gitconfig.clone(),
    }];
    let url = input.endpoints.supervise_url();
    match input.provider {
        Provider::Claude => {
            let workspace = input.workspace.display().to_string();
            let mut projects = serde_json::Map::new();
            projects.insert(
                workspace,
                serde_json::json!({ "hasTrustDialogAccepted": true, "allowedTools": [] }),
            );
            let config = serde_json::json!({
                "hasCompletedOnboarding": true,
                "bypassPermissionsModeAccepted": true,
                "autoUpdates": false,
                "projects": projects,
                "mcpServers": { MCP_SERVER_NAME: { "type": "http", "url": url } },
            });
            files.push(HomeFile {
                path: ".claude.json".into(),
                contents: pretty_json(&config),
            });
            if let Some(text) = &input.instructions {
                files.push(HomeFile {
                    path: Path::new(".claude").join("CLAUDE.md"),
                    contents: text.clone(),
                });
            }
        }
        Provider::Codex => {
            let mut server = toml::Table::new();
            server.insert("url".into(), toml::Value::String(url));
            let mut servers = toml::Table::new();
            servers.insert(MCP_SERVER_NAME.into(), toml::Value::Table(server));
            let mut root = toml::Table::new();
            // Update checks and analytics off by Codex's own settings.
            root.insert(
                "check_for_update_on_startup".into(),
                toml::Value::Boolean(false),
            );
            let mut analytics = toml::Table::new();
            analytics.insert("enabled".into(), toml::Value::Boolean(false));
            root.insert("analytics".into(), toml::Value::Table(analytics));
            let (id, provider) = match input.codex_auth {
                // The OpenAI API over HTTPS + SSE only: the built-in provider tries the
                // Responses WebSocket first and falls back only after several retries; the
                // built-in provider id cannot be reconfigured, so this is a copy of it.
                CodexAuth::ApiKey => (
                    CODEX_PROVIDER_ID,
                    codex_provider(&[
                        ("base_url", "https://api.openai.com/v1"),
                        ("env_key", "OPENAI_API_KEY"),
                    ]),
                ),
                // The same for a ChatGPT login: the ChatGPT backend's Codex API, with the
                // login from `auth.json` (`requires_openai_auth`) and nothing from the env.
                CodexAuth::ChatGptLogin => {
                    root.insert(
                        "chatgpt_base_url".into(),
                        toml::Value::String(CHATGPT_BASE_URL.into()),
                    );
                    // The login is the file `start` wrote, never a keyring the bottle lacks.
                    root.insert(
                        "cli_auth_credentials_store".into(),
                        toml::Value::String("file".into()),
                    );
                    let mut p = codex_provider(&[("base_url", CHATGPT_CODEX_BASE_URL)]);
                    p.insert("requires_openai_auth".into(), toml::Value::Boolean(true));
                    (CODEX_CHATGPT_PROVIDER_ID, p)
                }
            };
            root.insert("model_provider".into(), toml::Value::String(id.into()));
            let mut providers = toml::Table::new();
            providers.insert(id.into(), toml::Value::Table(provider));
            root.insert("model_providers".into(), toml::Value::Table(providers));
            root.insert("mcp_servers".into(), toml::Value::Table(servers));
            files.push(HomeFile {
                path: Path::new(".codex").join("config.toml"),
                contents: root.to_string(),
            });
            if let Some(text) = &input.instructions {
                files.push(HomeFile {
                    path: Path::new(".codex").join("AGENTS.md"),
                    contents: text.clone(),
                });
            }
        }
        Provider::Gemini => {
            let config = serde_json::json!({
                // The API key (a placeholder; egress injects the real one), never a Google
                // login the bottle could not complete.
                "security": { "auth": { "selectedType": "gemini-api-key" } },
                "general": { "disableAutoUpdate": true, "disableUpdateNag": true },
                "privacy": { "usageStatisticsEnabled": false },
                "telemetry": { "enabled": false },
                // `trust`: calls of the supervise tools need no confirmation in the
                // client; the operator approves what they propose.
                "mcpServers": { MCP_SERVER_NAME: { "httpUrl": url, "trust": true } },
            });
            files.push(HomeFile {
                path: Path::new(".gemini").join("settings.json"),
                contents: pretty_json(&config),
            });
            // The workspace is trusted (Gemini CLI refuses to run headless elsewhere).
            let mut trusted = serde_json::Map::new();
            trusted.insert(
                input.workspace.display().to_string(),
                serde_json::Value::String("TRUST_FOLDER".into()),
            );
            files.push(HomeFile {
                path: Path::new(".gemini").join("trustedFolders.json"),
                contents: pretty_json(&serde_json::Value::Object(trusted)),
            });
            if let Some(text) = &input.instructions {
                files.push(HomeFile {
                    path: Path::new(".gemini").join("GEMINI.md"),
                    contents: text.clone(),
                });
            }
        }
        Provider::OpenCode => {
            let provider = match input.opencode_auth {
                OpenCodeAuth::Anthropic => "anthropic",
                OpenCodeAuth::OpenAi => "openai",
            };
            let config = serde_json::json!({
                "$schema": "https://opencode.ai/config.json",
                "autoupdate": false,
                "share": "disabled",
                // Only the provider whose key egress injects: no other provider is offered
                // a placeholder it cannot use.
                "enabled_providers": [provider],
                "mcp": { MCP_SERVER_NAME: { "type": "remote", "url": url, "enabled": true } },
            });
            let dir = Path::new(".config").join("opencode");
            files.push(HomeFile {
                path: dir.join("opencode.json"),
                contents: pretty_json(&config),
            });
            if let Some(text) = &input.instructions {
                files.push(HomeFile {
                    path: dir.join("AGENTS.md"),
                    contents: text.clone(),
                });
            }
        }
        Provider::Generic => {
            let Some(generic) = &input.generic else {
                return Err(ContractError::Generic(
                    "a generic provider needs its description".into(),
                ));
            };
            if let Some(mcp) = &generic.mcp {
                files.push(HomeFile {
                    path: mcp.file.clone(),
                    contents: mcp_file(mcp, &url)?,
                });
            }
            if let (Some(path), Some(text)) = (&generic.instructions, &input.instructions) {
                files.push(HomeFile {
                    path: path.clone(),
                    contents: text.clone(),
                });
            }
        }
    }
    Ok(files)
}

/// A generic client's MCP file: `entry` (with `{url}` filled in) under `key` and the
/// server's name, as JSON or TOML.
fn mcp_file(mcp: &McpRegistration, url: &str) -> Result<String, ContractError> {
    fn fill(v: &serde_json::Value, url: &str) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(s.replace("{url}", url)),
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(|i| fill(i, url)).collect())
            }
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), fill(v, url))).collect(),
            ),
            other => other.clone(),
        }
    }
    let mut value = serde_json::json!({ MCP_SERVER_NAME: fill(&mcp.entry, url) });
    for k in mcp.key.iter().rev() {
        let mut map = serde_json::Map::new();
        map.insert(k.clone(), value);
        value = serde_json::Value::Object(map);
    }
    if mcp.file.extension().is_some_and(|e| e == "toml") {
        let table = toml::Table::try_from(&value).map_err(|e| {
            ContractError::Generic(format!(
                "mcp.entry cannot be written as TOML ({e}); TOML has no null, so leave null values out"
            ))
        })?;
        Ok(table.to_string())
    } else {
        Ok(pretty_json(&value))
    }
}

/// A Codex model provider speaking the Responses API over HTTPS + SSE, with `fields`.
fn codex_provider(fields: &[(&str, &str)]) -> toml::Table {
    let mut p = toml::Table::new();
    p.insert("name".into(), toml::Value::String("OpenAI".into()));
    p.insert("wire_api".into(), toml::Value::String("responses".into()));
    for (k, v) in fields {
        p.insert((*k).into(), toml::Value::String((*v).into()));
    }
    p.insert("supports_websockets".into(), toml::Value::Boolean(false));
    p
}

fn pretty_json(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The CA bundle a bottle trusts: the system's roots followed by the bottle CA.
pub fn ca_bundle(system_roots_pem: &str, bottle_ca_pem: &str) -> String {
    let mut out = String::with_capacity(system_roots_pem.len() + bottle_ca_pem.len() + 64);
    out.push_str(system_roots_pem);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# bot-bottle: this bottle's CA (egress terminates TLS with it)\n");
    out.push_str(bottle_ca_pem);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
