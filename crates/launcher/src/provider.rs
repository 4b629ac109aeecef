//! Provider templates: what each agent client needs beyond the contract.
//!
//! * the default egress routes to its model API, with the credential egress injects
//!   (Claude Code: `api.anthropic.com` with `BOT_BOTTLE_CLAUDE_OAUTH_TOKEN` as
//!   `Authorization: Bearer`, or `ANTHROPIC_API_KEY` as `x-api-key`; Codex:
//!   `api.openai.com` with `OPENAI_API_KEY` as `Authorization: Bearer`; Gemini CLI:
//!   `generativelanguage.googleapis.com` with `BOT_BOTTLE_GEMINI_API_KEY` (or
//!   `GEMINI_API_KEY`) as `x-goog-api-key`; OpenCode: the Anthropic API with
//!   `ANTHROPIC_API_KEY`, or else the OpenAI API with `OPENAI_API_KEY`; a generic provider:
//!   its manifest's `model_api` list). They go before the bottle's own routes, and a bottle
//!   that already routes the host keeps its own route;
//! * Codex with the host's ChatGPT login forwarded (`start --forward-codex-auth`): the
//!   login file is copied into the bottle, because Codex must refresh it and sign every
//!   request with it; egress routes the ChatGPT backend and the login refresh without
//!   injecting anything. This is the one credential the agent holds itself, so it is an
//!   explicit opt-in with a warning every time;
//! * which placeholder Claude Code holds, decided by the header its route injects;
//! * standing instructions, written where the client reads them (`~/.claude/CLAUDE.md`,
//!   `~/.codex/AGENTS.md`, `~/.gemini/GEMINI.md`, `~/.config/opencode/AGENTS.md`, a generic
//!   client's `instructions` file): how to ask the operator for access through supervise,
//!   and an index of the skills, each copied into the client's skills directory
//!   (`~/.claude/skills/<name>/`, `~/.codex/skills/<name>/`, `~/.gemini/skills/<name>/`,
//!   `~/.config/opencode/skills/<name>/`, `~/skills/<name>/`).
//!
//! Transcripts need nothing here: they live in the agent's home, which a preserved bottle
//! keeps, and `resume` continues them (`claude --continue`, `codex resume --last`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use contract::{ClaudeAuth, CodexAuth, OpenCodeAuth, Provider};
use policy::{DlpMode, PathMatch, PathMatchKind, Route, RouteMatch};

use crate::error::Context;
use crate::{LaunchError, Report};

/// The host variable holding a Claude Code OAuth token (`claude setup-token`).
pub const CLAUDE_OAUTH_ENV: &str = "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN";
/// The host variable holding an Anthropic API key.
pub const ANTHROPIC_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The host variable holding an OpenAI API key.
pub const OPENAI_KEY_ENV: &str = "OPENAI_API_KEY";
/// The host variable holding a Gemini API key for bot-bottle.
pub const GEMINI_KEY_ENV: &str = "BOT_BOTTLE_GEMINI_API_KEY";
/// The Gemini CLI's own variable, used on the host when [`GEMINI_KEY_ENV`] is not set.
pub const GEMINI_CLIENT_KEY_ENV: &str = "GEMINI_API_KEY";
/// The Gemini API host Gemini CLI talks to with an API key.
pub const GEMINI_HOST: &str = "generativelanguage.googleapis.com";

/// The Anthropic API host Claude Code talks to.
pub const ANTHROPIC_HOST: &str = "api.anthropic.com";
/// The OpenAI API host Codex talks to.
pub const OPENAI_HOST: &str = "api.openai.com";
/// The ChatGPT backend Codex talks to with a ChatGPT login.
pub const CHATGPT_HOST: &str = "chatgpt.com";
/// Where Codex refreshes a ChatGPT login.
pub const OPENAI_AUTH_HOST: &str = "auth.openai.com";

/// The contract's provider for a manifest provider kind.
pub fn of(kind: manifest::ProviderKind) -> Provider {
    match kind {
        manifest::ProviderKind::Claude => Provider::Claude,
        manifest::ProviderKind::Codex => Provider::Codex,
        manifest::ProviderKind::Gemini => Provider::Gemini,
        manifest::ProviderKind::OpenCode => Provider::OpenCode,
        manifest::ProviderKind::Generic => Provider::Generic,
    }
}

/// The program the provider's agent command runs (a generic provider's `command[0]`).
pub fn program(provider: &manifest::AgentProvider) -> String {
    match provider.generic() {
        Some(g) => g.command.first().cloned().unwrap_or_default(),
        None => match provider.kind() {
            manifest::ProviderKind::Claude => "claude".into(),
            manifest::ProviderKind::Codex => "codex".into(),
            manifest::ProviderKind::Gemini => "gemini".into(),
            manifest::ProviderKind::OpenCode => "opencode".into(),
            manifest::ProviderKind::Generic => String::new(),
        },
    }
}

/// The routes a bottle runs with: its provider's defaults (credentials from the host's
/// environment) merged before its own routes.
pub fn routes_for(
    bottle: &manifest::ResolvedBottle,
    codex_auth: CodexAuth,
    env: &crate::HostEnv,
) -> Vec<Route> {
    let is_set = |k: &str| env.is_set(k);
    match bottle.agent_provider.generic() {
        Some(g) => merge_routes(generic_routes(g), &bottle.egress.routes),
        None => with_default_routes(
            of(bottle.agent_provider.kind()),
            codex_auth,
            &bottle.egress.routes,
            is_set,
        ),
    }
}

/// A generic provider's model API routes: each host with the credential its entry names
/// (`Authorization: Bearer <key>` unless it says otherwise), outbound DLP `redact` as for
/// the stock providers.
pub fn generic_routes(g: &manifest::GenericProvider) -> Vec<Route> {
    let routes = g
        .model_api
        .iter()
        .map(|api| {
            let scheme = match (&api.auth_scheme, &api.auth_header) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(_)) => None,
                (None, None) => Some("Bearer".into()),
            };
            Route {
                auth_scheme: scheme,
                auth_header: api.auth_header.clone(),
                token_env: Some(api.token_env.clone()),
                ..route(&api.host)
            }
        })
        .collect();
    with_model_dlp(routes)
}

/// The contract's view of a generic provider: its placeholders, MCP file and
/// instructions file.
pub fn generic_client(g: &manifest::GenericProvider) -> contract::GenericClient {
    contract::GenericClient {
        placeholder_env: g.model_api.iter().filter_map(|a| a.env.clone()).collect(),
        mcp: g.mcp.as_ref().map(|m| contract::McpRegistration {
            file: PathBuf::from(&m.file),
            key: m.key.split('.').map(str::to_string).collect(),
            entry: m
                .entry
                .clone()
                .unwrap_or_else(|| serde_json::json!({ "url": "{url}" })),
        }),
        instructions: g.instructions.as_ref().map(PathBuf::from),
    }
}

/// Which model API OpenCode uses: the Anthropic API when the host has `ANTHROPIC_API_KEY`,
/// else the OpenAI API when it has `OPENAI_API_KEY`, else the Anthropic API (and `start`
/// warns that its route goes out without credentials).
pub fn opencode_auth(is_set: impl Fn(&str) -> bool) -> OpenCodeAuth {
    if !is_set(ANTHROPIC_KEY_ENV) && is_set(OPENAI_KEY_ENV) {
        OpenCodeAuth::OpenAi
    } else {
        OpenCodeAuth::Anthropic
    }
}

fn route(host: &str) -> Route {
    Route {
        host: host.into(),
        websocket: None,
        dangerously_raw_paths: None,
        expires: None,
        uses: None,
        grant: None,
        dlp: None,
        dlp_allow: None,
        dlp_allow_grants: None,
        after_grant: None,
        dangerously_dlp_pass_unscannable: None,
        port: None,
        auth_scheme: None,
        token_env: None,
        auth_header: None,
        connect_to: None,
        matches: None,
    }
}

/// The routes the provider needs, with the credential taken from the host variables that
/// are set (`is_set`). Claude Code prefers the OAuth token over an API key; with neither,
/// the OAuth route is returned and `start` warns that it goes out without credentials.
/// Codex with a forwarded ChatGPT login gets the ChatGPT backend (`/backend-api/`) and the
/// login refresh (`POST /oauth/token`), with nothing injected: the bottle holds the login.
pub fn default_routes(
    provider: Provider,
    codex_auth: CodexAuth,
    is_set: impl Fn(&str) -> bool,
) -> Vec<Route> {
    with_model_dlp(provider_routes(provider, codex_auth, is_set))
}

/// Outbound DLP on the model API's routes: `redact`, so that one key pasted into a
/// conversation is cut out instead of killing the conversation. The ChatGPT login's routes
/// carry the bottle's own login (a JWT bearer, the refresh token) by design: their backend
/// allows those two rules, and the login refresh is only logged.
fn with_model_dlp(routes: Vec<Route>) -> Vec<Route> {
    routes
        .into_iter()
        .map(|r| {
            if r.host == OPENAI_AUTH_HOST {
                Route {
                    dlp: Some(DlpMode::Log),
                    ..r
                }
            } else if r.host == CHATGPT_HOST {
                Route {
                    dlp: Some(DlpMode::Redact),
                    dlp_allow: Some(vec!["jwt".into(), "generic-bearer-token".into()]),
                    ..r
                }
            } else {
                Route {
                    dlp: Some(DlpMode::Redact),
                    ..r
                }
            }
        })
        .collect()
}

fn provider_routes(
    provider: Provider,
    codex_auth: CodexAuth,
    is_set: impl Fn(&str) -> bool,
) -> Vec<Route> {
    match provider {
        Provider::Claude => {
            if !is_set(CLAUDE_OAUTH_ENV) && is_set(ANTHROPIC_KEY_ENV) {
                vec![Route {
                    auth_header: Some("x-api-key".into()),
                    token_env: Some(ANTHROPIC_KEY_ENV.into()),
                    ..route(ANTHROPIC_HOST)
                }]
            } else {
                vec![Route {
                    auth_scheme: Some("Bearer".into()),
                    token_env: Some(CLAUDE_OAUTH_ENV.into()),
                    ..route(ANTHROPIC_HOST)
                }]
            }
        }
        Provider::Codex if codex_auth == CodexAuth::ChatGptLogin => vec![
            Route {
                matches: Some(vec![RouteMatch {
                    paths: Some(vec![path(PathMatchKind::Prefix, "/backend-api/")]),
                    ..RouteMatch::default()
                }]),
                ..route(CHATGPT_HOST)
            },
            Route {
                matches: Some(vec![RouteMatch {
                    paths: Some(vec![path(PathMatchKind::Exact, "/oauth/token")]),
                    methods: Some(vec!["POST".into()]),
                    headers: None,
                }]),
                ..route(OPENAI_AUTH_HOST)
            },
        ],
        Provider::Codex => vec![Route {
            auth_scheme: Some("Bearer".into()),
            token_env: Some(OPENAI_KEY_ENV.into()),
            ..route(OPENAI_HOST)
        }],
        Provider::Gemini => {
            let env = if !is_set(GEMINI_KEY_ENV) && is_set(GEMINI_CLIENT_KEY_ENV) {
                GEMINI_CLIENT_KEY_ENV
            } else {
                GEMINI_KEY_ENV
            };
            vec![Route {
                auth_header: Some("x-goog-api-key".into()),
                token_env: Some(env.into()),
                ..route(GEMINI_HOST)
            }]
        }
        Provider::OpenCode => match opencode_auth(is_set) {
            OpenCodeAuth::Anthropic => vec![Route {
                auth_header: Some("x-api-key".into()),
                token_env: Some(ANTHROPIC_KEY_ENV.into()),
                ..route(ANTHROPIC_HOST)
            }],
            OpenCodeAuth::OpenAi => vec![Route {
                auth_scheme: Some("Bearer".into()),
                token_env: Some(OPENAI_KEY_ENV.into()),
                ..route(OPENAI_HOST)
            }],
        },
        // Described by the manifest: see [`generic_routes`].
        Provider::Generic => Vec::new(),
    }
}

fn path(kind: PathMatchKind, value: &str) -> PathMatch {
    PathMatch {
        kind,
        value: value.into(),
    }
}

/// The provider's default routes followed by the bottle's own; a default is left out when
/// the bottle already has a route for its host (the bottle's route wins: pins, paths,
/// another credential).
pub fn with_default_routes(
    provider: Provider,
    codex_auth: CodexAuth,
    bottle_routes: &[Route],
    is_set: impl Fn(&str) -> bool,
) -> Vec<Route> {
    merge_routes(default_routes(provider, codex_auth, is_set), bottle_routes)
}

/// `defaults` followed by `bottle_routes`, leaving out a default whose host the bottle
/// routes itself.
fn merge_routes(defaults: Vec<Route>, bottle_routes: &[Route]) -> Vec<Route> {
    let mut out: Vec<Route> = defaults
        .into_iter()
        .filter(|d| {
            !bottle_routes
                .iter()
                .any(|r| r.host.eq_ignore_ascii_case(&d.host))
        })
        .collect();
    out.extend(bottle_routes.iter().cloned());
    out
}

/// The routes the provider adds to `bottle` at `start` that the manifest does not write
/// (its own route for the host replaces a default), with the credential the host's
/// environment gives now (`is_set`); for `manifest show`, which marks them.
pub fn implicit_routes(
    bottle: &manifest::ResolvedBottle,
    is_set: impl Fn(&str) -> bool,
) -> Vec<Route> {
    let all = match bottle.agent_provider.generic() {
        Some(g) => merge_routes(generic_routes(g), &bottle.egress.routes),
        None => with_default_routes(
            of(bottle.agent_provider.kind()),
            CodexAuth::ApiKey,
            &bottle.egress.routes,
            is_set,
        ),
    };
    let own = bottle.egress.routes.len();
    all[..all.len() - own].to_vec()
}

/// Which placeholder Claude Code must hold so that egress replaces it: an API key when the
/// first route to the Anthropic API injects `x-api-key`, the OAuth token otherwise.
pub fn claude_auth(routes: &[Route]) -> ClaudeAuth {
    let api_key = routes
        .iter()
        .find(|r| r.host.eq_ignore_ascii_case(ANTHROPIC_HOST))
        .and_then(|r| r.auth_header.as_deref())
        .is_some_and(|h| h.eq_ignore_ascii_case("x-api-key"));
    if api_key {
        ClaudeAuth::ApiKey
    } else {
        ClaudeAuth::OAuth
    }
}

/// The host's Codex login file: `$CODEX_HOME/auth.json`, else `~/.codex/auth.json`
/// (`var` reads the host's environment).
pub fn host_codex_login(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |k: &str| var(k).filter(|v| !v.is_empty());
    non_empty("CODEX_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| Path::new(&h).join(".codex")))
        .map(|dir| dir.join("auth.json"))
}

/// Checks that `path` holds a ChatGPT login Codex can use (tokens, not an API key) before
/// anything is created. Errors never quote the file's contents.
pub fn check_codex_login(path: &Path) -> Result<(), LaunchError> {
    let login = "run `codex login --device-auth` on the host first";
    let text = match state::read::read_limited(path, state::read::CONFIG_LIMIT) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LaunchError::CodexLogin(format!(
                "--forward-codex-auth: there is no Codex login on the host ({} does not exist); {login}, then try again",
                path.display()
            )));
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "--forward-codex-auth: cannot read the host's Codex login {}",
                    path.display()
                )
            });
        }
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return Err(LaunchError::CodexLogin(format!(
            "--forward-codex-auth: the host's Codex login {} is not valid JSON; {login}",
            path.display()
        )));
    };
    let token = |k: &str| {
        json.get("tokens")
            .and_then(|t| t.get(k))
            .and_then(serde_json::Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if token("access_token") && token("refresh_token") {
        return Ok(());
    }
    if json
        .get("OPENAI_API_KEY")
        .is_some_and(|k| k.as_str().is_some_and(|k| !k.is_empty()))
    {
        return Err(LaunchError::CodexLogin(format!(
            "--forward-codex-auth: the host's Codex login {} is an API key, not a ChatGPT login; leave the flag off and export {OPENAI_KEY_ENV} instead (egress injects it and the bottle never sees it), or {login}",
            path.display()
        )));
    }
    Err(LaunchError::CodexLogin(format!(
        "--forward-codex-auth: {} holds no ChatGPT login (no access and refresh tokens); {login}",
        path.display()
    )))
}

/// The warning printed on every start and resume that forwards the host's Codex login.
pub fn codex_login_warning(path: &Path) -> String {
    format!(
        "bot-bottle: WARNING: --forward-codex-auth copies your Codex ChatGPT login ({}) into this bottle.\n\
         bot-bottle: WARNING: unlike an API key, which stays in the egress sidecar, this is a refreshable credential: the agent can read it and use it through any route the bottle allows, and a refresh can keep it alive after the bottle is gone.\n\
         bot-bottle: WARNING: when the bottle ends, a login Codex refreshed inside it is written back to {} (only if that file is still the one forwarded), so the host's login keeps working.",
        path.display(),
        path.display()
    )
}

/// Where a forwarded login lives in the agent's home.
pub fn codex_login_in_home(agent_home: &Path) -> PathBuf {
    agent_home.join(".codex").join("auth.json")
}

/// Copies the host's Codex login into the agent's home (0600) and returns what was
/// forwarded, for the write-back when the bottle ends ([`crate::codex_login`]). A resumed
/// bottle keeps its own copy when that one was refreshed later than the host's (Codex
/// rotates the refresh token, so the older copy may no longer refresh).
pub fn forward_codex_login(
    host: &Path,
    agent_home: &Path,
) -> Result<crate::codex_login::ForwardedLogin, LaunchError> {
    let text = state::read::read_limited(host, state::read::CONFIG_LIMIT)
        .with_context(|| format!("cannot read the host's Codex login {}", host.display()))?;
    let forwarded = crate::codex_login::forwarded(host, &text);
    let dest = codex_login_in_home(agent_home);
    if let Ok(own) = state::read::read_limited(&dest, state::read::CONFIG_LIMIT)
        && last_refresh(&own) > last_refresh(&text)
    {
        return Ok(forwarded);
    }
    if let Some(dir) = dest.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    state::atomic_write_mode(&dest, &text, 0o600)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(forwarded)
}

/// The `last_refresh` time of a Codex login, if it has a readable one.
fn last_refresh(login: &[u8]) -> Option<time::OffsetDateTime> {
    let json: serde_json::Value = serde_json::from_slice(login).ok()?;
    let at = json.get("last_refresh")?.as_str()?;
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// The client's skills directory, relative to the agent's home (a generic client gets
/// `~/skills`, listed in its instructions).
pub fn skills_dir(provider: Provider) -> PathBuf {
    match provider {
        Provider::Claude => Path::new(".claude").join("skills"),
        Provider::Codex => Path::new(".codex").join("skills"),
        Provider::Gemini => Path::new(".gemini").join("skills"),
        Provider::OpenCode => Path::new(".config").join("opencode").join("skills"),
        Provider::Generic => PathBuf::from("skills"),
    }
}

fn skill_name(dir: &Path) -> Result<String, LaunchError> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .map(str::to_string)
        .ok_or_else(|| {
            LaunchError::Invalid(format!(
                "skill directory {} has no usable name; rename it",
                dir.display()
            ))
        })
}

/// The `description:` of a skill's `SKILL.md` front matter, if any.
fn skill_description(dir: &Path) -> Option<String> {
    let text =
        state::read::read_limited_to_string(&dir.join("SKILL.md"), state::read::CONFIG_LIMIT)
            .ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "---" {
        return None;
    }
    lines
        .take_while(|l| l.trim() != "---")
        .find_map(|l| l.strip_prefix("description:"))
        .map(|d| d.trim().trim_matches('"').to_string())
        .filter(|d| !d.is_empty())
}

/// How the agent asks for access, for its standing instructions (with supervise on).
pub const ACCESS_INSTRUCTIONS: &str = "# Access\n\n\
You work in a bot-bottle: your network goes through an allowlist and your pushes are scanned for secrets. \
A request the allowlist blocks gets status 403 with the header `x-bot-bottle-blocked` saying why. \
Do not work around a block: ask the operator through the `bot-bottle` MCP server's tools \
(`list-egress-routes` shows what is allowed; `egress-allow` proposes new routes with a justification; \
`gitleaks-allow` asks for a secret-scan exception). A proposal waits for the operator's decision; \
when a call answers `pending`, poll `proposal-status` with its id.\n";

/// Standing instructions: how to ask for access (with `supervise` on) and the delivered
/// skills; none when there is neither.
pub fn instructions(
    provider: Provider,
    skills: &[PathBuf],
    home_inside: &Path,
    supervise: bool,
) -> Result<Option<String>, LaunchError> {
    let mut out = String::new();
    if supervise {
        out.push_str(ACCESS_INSTRUCTIONS);
    }
    if skills.is_empty() {
        return Ok((!out.is_empty()).then_some(out));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let base = home_inside.join(skills_dir(provider));
    out.push_str(
        "# Skills\n\nThese skills are installed for you. Before a task one of them covers, read its SKILL.md and follow it.\n\n",
    );
    for dir in skills {
        let name = skill_name(dir)?;
        let path = base.join(&name).join("SKILL.md");
        match skill_description(dir) {
            Some(d) => out.push_str(&format!("- `{name}` ({}): {d}\n", path.display())),
            None => out.push_str(&format!("- `{name}` ({})\n", path.display())),
        }
    }
    Ok(Some(out))
}

/// Copies each skill directory into the client's skills directory under `agent_home`.
/// Regular files and directories are copied; symbolic links are not followed (a skill
/// cannot pull in files from elsewhere on the host).
pub fn install_skills(
    provider: Provider,
    skills: &[PathBuf],
    agent_home: &Path,
    report: &dyn Report,
) -> Result<(), LaunchError> {
    let base = agent_home.join(skills_dir(provider));
    for dir in skills {
        let name = skill_name(dir)?;
        let meta = std::fs::symlink_metadata(dir)
            .with_context(|| format!("cannot read skill directory {}", dir.display()))?;
        if !meta.is_dir() {
            return Err(LaunchError::Invalid(format!(
                "skill {} is not a directory; a skill is a directory holding SKILL.md",
                dir.display()
            )));
        }
        let dest = base.join(&name);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        copy_tree(dir, &dest, report)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, report: &dyn Report) -> Result<(), LaunchError> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let entries =
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, report)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        } else {
            report.line(&format!(
                "warning: skipping {} in a skill (only regular files and directories are copied)",
                entry.path().display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// A default route of the model API, with its DLP mode.
    fn redacted(r: Route) -> Route {
        Route {
            dlp: Some(DlpMode::Redact),
            ..r
        }
    }

    fn bearer(host: &str, env: &str) -> Route {
        Route {
            auth_scheme: Some("Bearer".into()),
            token_env: Some(env.into()),
            ..route(host)
        }
    }

    #[test]
    fn claude_prefers_the_oauth_token_then_the_api_key() {
        assert_eq!(
            default_routes(Provider::Claude, CodexAuth::ApiKey, |k| k
                == CLAUDE_OAUTH_ENV
                || k == ANTHROPIC_KEY_ENV),
            vec![redacted(bearer(ANTHROPIC_HOST, CLAUDE_OAUTH_ENV))]
        );
        assert_eq!(
            default_routes(Provider::Claude, CodexAuth::ApiKey, |k| k
                == ANTHROPIC_KEY_ENV),
            vec![redacted(Route {
                auth_header: Some("x-api-key".into()),
                token_env: Some(ANTHROPIC_KEY_ENV.into()),
                ..route(ANTHROPIC_HOST)
            })]
        );
        assert_eq!(
            default_routes(Provider::Claude, CodexAuth::ApiKey, |_| false),
            vec![redacted(bearer(ANTHROPIC_HOST, CLAUDE_OAUTH_ENV))]
        );
    }

    #[test]
    fn codex_gets_the_openai_key_as_bearer() {
        assert_eq!(
            default_routes(Provider::Codex, CodexAuth::ApiKey, |_| true),
            vec![redacted(bearer(OPENAI_HOST, OPENAI_KEY_ENV))]
        );
    }

    #[test]
    fn a_forwarded_codex_login_routes_the_chatgpt_backend_without_credentials() {
        let routes = default_routes(Provider::Codex, CodexAuth::ChatGptLogin, |_| true);
        let text = serde_saphyr::to_string(&routes).unwrap();
        assert_eq!(
            text,
            "- host: chatgpt.com\n  matches:\n  - paths:\n    - type: prefix\n      value: /backend-api/\n  dlp: redact\n  dlp_allow:\n  - jwt\n  - generic-bearer-token\n- host: auth.openai.com\n  matches:\n  - paths:\n    - type: exact\n      value: /oauth/token\n    methods:\n    - POST\n  dlp: log\n"
        );
        assert!(
            routes.iter().all(|r| r.token_env.is_none()
                && r.auth_scheme.is_none()
                && r.auth_header.is_none())
        );
        // Claude Code ignores the Codex login.
        assert_eq!(
            default_routes(Provider::Claude, CodexAuth::ChatGptLogin, |_| true),
            default_routes(Provider::Claude, CodexAuth::ApiKey, |_| true)
        );
    }

    #[test]
    fn the_host_login_is_found_in_codex_home_then_home() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            host_codex_login(vars(&[("CODEX_HOME", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c/auth.json"))
        );
        assert_eq!(
            host_codex_login(vars(&[("CODEX_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.codex/auth.json"))
        );
        assert_eq!(host_codex_login(vars(&[])), None);
    }

    #[test]
    fn only_a_chatgpt_login_can_be_forwarded() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("auth.json");
        let err = |text: Option<&str>| {
            if let Some(t) = text {
                std::fs::write(&file, t).unwrap();
            }
            check_codex_login(&file)
                .err()
                .map(|e| format!("{e:#}").replace(&file.display().to_string(), "F"))
        };
        assert_eq!(
            err(None).unwrap(),
            "--forward-codex-auth: there is no Codex login on the host (F does not exist); run `codex login --device-auth` on the host first, then try again"
        );
        assert_eq!(
            err(Some(r#"{"OPENAI_API_KEY":"sk-SECRETKEY"}"#)).unwrap(),
            "--forward-codex-auth: the host's Codex login F is an API key, not a ChatGPT login; leave the flag off and export OPENAI_API_KEY instead (egress injects it and the bottle never sees it), or run `codex login --device-auth` on the host first"
        );
        assert_eq!(
            err(Some(
                r#"{"tokens":{"access_token":"a","refresh_token":""}}"#
            ))
            .unwrap(),
            "--forward-codex-auth: F holds no ChatGPT login (no access and refresh tokens); run `codex login --device-auth` on the host first"
        );
        assert_eq!(
            err(Some("{secret-not-json")).unwrap(),
            "--forward-codex-auth: the host's Codex login F is not valid JSON; run `codex login --device-auth` on the host first"
        );
        assert_eq!(
            err(Some(
                r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"x","access_token":"a","refresh_token":"r"}}"#
            )),
            None
        );
    }

    #[test]
    fn the_login_is_copied_private_and_a_newer_bottle_copy_is_kept() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("auth.json");
        let home = tmp.path().join("home");
        let login =
            |at: &str| format!(r#"{{"tokens":{{"access_token":"{at}"}},"last_refresh":"{at}"}}"#);
        std::fs::write(&host, login("2026-11-01T00:00:00Z")).unwrap();
        forward_codex_login(&host, &home).unwrap();
        let dest = codex_login_in_home(&home);
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            login("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The agent refreshed its copy: a resume keeps it.
        std::fs::write(&dest, login("2026-11-20T00:00:00Z")).unwrap();
        forward_codex_login(&host, &home).unwrap();
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            login("2026-11-20T00:00:00Z")
        );
        // The host logged in again since: a resume takes the host's.
        std::fs::write(&host, login("2026-11-25T00:00:00Z")).unwrap();
        forward_codex_login(&host, &home).unwrap();
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            login("2026-11-25T00:00:00Z")
        );
        // Forwarding never writes the host's file (the write-back happens at the end).
        assert_eq!(
            std::fs::read_to_string(&host).unwrap(),
            login("2026-11-25T00:00:00Z")
        );
    }

    #[test]
    fn defaults_go_first_unless_the_bottle_routes_the_host() {
        let own = vec![route("github.com")];
        assert_eq!(
            with_default_routes(Provider::Codex, CodexAuth::ApiKey, &own, |_| true),
            vec![
                redacted(bearer(OPENAI_HOST, OPENAI_KEY_ENV)),
                route("github.com")
            ]
        );
        let pinned = vec![Route {
            connect_to: Some("127.0.0.1:9".into()),
            ..bearer("API.anthropic.com", "MINE")
        }];
        assert_eq!(
            with_default_routes(Provider::Claude, CodexAuth::ApiKey, &pinned, |_| true),
            pinned
        );
    }

    #[test]
    fn gemini_gets_its_key_as_x_goog_api_key() {
        let key = |env: &str| {
            redacted(Route {
                auth_header: Some("x-goog-api-key".into()),
                token_env: Some(env.into()),
                ..route(GEMINI_HOST)
            })
        };
        assert_eq!(
            default_routes(Provider::Gemini, CodexAuth::ApiKey, |_| true),
            vec![key(GEMINI_KEY_ENV)]
        );
        // The client's own variable on the host, when bot-bottle's is not set.
        assert_eq!(
            default_routes(Provider::Gemini, CodexAuth::ApiKey, |k| k
                == GEMINI_CLIENT_KEY_ENV),
            vec![key(GEMINI_CLIENT_KEY_ENV)]
        );
        assert_eq!(
            default_routes(Provider::Gemini, CodexAuth::ApiKey, |_| false),
            vec![key(GEMINI_KEY_ENV)]
        );
    }

    #[test]
    fn opencode_uses_the_anthropic_key_else_the_openai_key() {
        let anthropic = vec![redacted(Route {
            auth_header: Some("x-api-key".into()),
            token_env: Some(ANTHROPIC_KEY_ENV.into()),
            ..route(ANTHROPIC_HOST)
        })];
        assert_eq!(
            default_routes(Provider::OpenCode, CodexAuth::ApiKey, |_| true),
            anthropic
        );
        assert_eq!(
            default_routes(Provider::OpenCode, CodexAuth::ApiKey, |k| k
                == OPENAI_KEY_ENV),
            vec![redacted(bearer(OPENAI_HOST, OPENAI_KEY_ENV))]
        );
        assert_eq!(
            default_routes(Provider::OpenCode, CodexAuth::ApiKey, |_| false),
            anthropic
        );
        assert_eq!(opencode_auth(|k| k == OPENAI_KEY_ENV), OpenCodeAuth::OpenAi);
        assert_eq!(opencode_auth(|_| true), OpenCodeAuth::Anthropic);
    }

    fn generic_provider() -> manifest::GenericProvider {
        manifest::GenericProvider {
            command: vec!["aider".into()],
            model_api: vec![
                manifest::ModelApiSpec {
                    host: "api.mistral.ai".into(),
                    token_env: "MISTRAL_KEY".into(),
                    auth_header: None,
                    auth_scheme: None,
                    env: Some("MISTRAL_API_KEY".into()),
                },
                manifest::ModelApiSpec {
                    host: "api.x.test".into(),
                    token_env: "X_KEY".into(),
                    auth_header: Some("x-api-key".into()),
                    auth_scheme: None,
                    env: None,
                },
                manifest::ModelApiSpec {
                    host: "api.y.test".into(),
                    token_env: "Y_KEY".into(),
                    auth_header: Some("api-key".into()),
                    auth_scheme: Some("Token".into()),
                    env: Some("Y_API_KEY".into()),
                },
            ],
            mcp: Some(manifest::McpFileSpec {
                file: ".aider/mcp.json".into(),
                key: "mcp.servers".into(),
                entry: None,
            }),
            instructions: Some(".aider/CONVENTIONS.md".into()),
            dockerfile: None,
        }
    }

    #[test]
    fn a_generic_provider_routes_each_model_api_with_its_credential() {
        let routes = generic_routes(&generic_provider());
        assert_eq!(
            routes,
            vec![
                redacted(bearer("api.mistral.ai", "MISTRAL_KEY")),
                redacted(Route {
                    auth_header: Some("x-api-key".into()),
                    token_env: Some("X_KEY".into()),
                    ..route("api.x.test")
                }),
                redacted(Route {
                    auth_header: Some("api-key".into()),
                    auth_scheme: Some("Token".into()),
                    token_env: Some("Y_KEY".into()),
                    ..route("api.y.test")
                }),
            ]
        );
        let config = policy::EgressConfig {
            log: None,
            upstream_ca: None,
            routes: Some(routes),
        };
        assert!(policy::validate(&config).is_ok());
        assert_eq!(
            generic_client(&generic_provider()),
            contract::GenericClient {
                placeholder_env: vec!["MISTRAL_API_KEY".into(), "Y_API_KEY".into()],
                mcp: Some(contract::McpRegistration {
                    file: ".aider/mcp.json".into(),
                    key: vec!["mcp".into(), "servers".into()],
                    entry: serde_json::json!({"url": "{url}"}),
                }),
                instructions: Some(".aider/CONVENTIONS.md".into()),
            }
        );
        assert_eq!(
            program(&manifest::AgentProvider::Generic(generic_provider())),
            "aider"
        );
        assert_eq!(
            program(&manifest::AgentProvider::Stock(
                manifest::ProviderKind::OpenCode
            )),
            "opencode"
        );
    }

    #[test]
    fn with_supervise_the_agent_is_told_how_to_ask_for_access() {
        let text = instructions(Provider::Gemini, &[], Path::new("/home/agent"), true)
            .unwrap()
            .unwrap();
        assert_eq!(text, ACCESS_INSTRUCTIONS);
        for tool in [
            "egress-allow",
            "list-egress-routes",
            "proposal-status",
            "x-bot-bottle-blocked",
        ] {
            assert!(text.contains(tool), "{tool}");
        }
    }

    #[test]
    fn every_default_route_passes_policy_validation() {
        for (p, auth) in [
            (Provider::Claude, CodexAuth::ApiKey),
            (Provider::Codex, CodexAuth::ApiKey),
            (Provider::Codex, CodexAuth::ChatGptLogin),
            (Provider::Gemini, CodexAuth::ApiKey),
            (Provider::OpenCode, CodexAuth::ApiKey),
        ] {
            for set in [true, false] {
                let routes = default_routes(p, auth, |k| set || k == ANTHROPIC_KEY_ENV);
                let config = policy::EgressConfig {
                    log: None,
                    upstream_ca: None,
                    routes: Some(routes.clone()),
                };
                assert!(policy::validate(&config).is_ok(), "{routes:?}");
            }
        }
    }

    #[test]
    fn the_placeholder_follows_the_injected_header() {
        let key = default_routes(Provider::Claude, CodexAuth::ApiKey, |k| {
            k == ANTHROPIC_KEY_ENV
        });
        assert_eq!(claude_auth(&key), ClaudeAuth::ApiKey);
        let oauth = default_routes(Provider::Claude, CodexAuth::ApiKey, |_| true);
        assert_eq!(claude_auth(&oauth), ClaudeAuth::OAuth);
        assert_eq!(claude_auth(&[]), ClaudeAuth::OAuth);
    }

    #[test]
    fn skills_are_copied_and_indexed() {
        let tmp = tempfile::tempdir().unwrap();
        let skill = tmp.path().join("src").join("review");
        std::fs::create_dir_all(skill.join("scripts")).unwrap();
        std::fs::write(
            skill.join("SKILL.md"),
            "---\nname: review\ndescription: Review a diff carefully\n---\nBody\n",
        )
        .unwrap();
        std::fs::write(skill.join("scripts").join("run.sh"), "echo hi\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", skill.join("leak")).unwrap();
        let home = tmp.path().join("home");
        for p in [Provider::Claude, Provider::Codex] {
            let report = crate::Recorded::default();
            install_skills(p, std::slice::from_ref(&skill), &home, &report).unwrap();
            let dest = home.join(skills_dir(p)).join("review");
            assert_eq!(
                std::fs::read_to_string(dest.join("scripts").join("run.sh")).unwrap(),
                "echo hi\n"
            );
            assert!(!dest.join("leak").exists(), "symlinks are not followed");
            assert_eq!(
                report.lines(),
                vec![format!(
                    "warning: skipping {} in a skill (only regular files and directories are copied)",
                    skill.join("leak").display()
                )]
            );
        }
        assert_eq!(
            instructions(
                Provider::Codex,
                std::slice::from_ref(&skill),
                Path::new("/home/agent"),
                false
            )
            .unwrap()
            .unwrap(),
            "# Skills\n\nThese skills are installed for you. Before a task one of them covers, read its SKILL.md and follow it.\n\n- `review` (/home/agent/.codex/skills/review/SKILL.md): Review a diff carefully\n"
        );
        assert_eq!(
            instructions(Provider::Claude, &[], Path::new("/home/agent"), false).unwrap(),
            None
        );
    }
}
