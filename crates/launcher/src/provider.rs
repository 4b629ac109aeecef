//! Provider templates: what each agent client needs beyond the contract.
//!
//! * the default egress routes to its model API, with the credential egress injects
//!   (Claude Code: `api.anthropic.com` with `BOT_BOTTLE_CLAUDE_OAUTH_TOKEN` as
//!   `Authorization: Bearer`, or `ANTHROPIC_API_KEY` as `x-api-key`; Codex:
//!   `api.openai.com` with `OPENAI_API_KEY` as `Authorization: Bearer`). They go before the
//!   bottle's own routes, and a bottle that already routes the host keeps its own route;
//! * Codex with the host's ChatGPT login forwarded (`start --forward-codex-auth`): the
//!   login file is copied into the bottle, because Codex must refresh it and sign every
//!   request with it; egress routes the ChatGPT backend and the login refresh without
//!   injecting anything. This is the one credential the agent holds itself, so it is an
//!   explicit opt-in with a warning every time;
//! * which placeholder Claude Code holds, decided by the header its route injects;
//! * skills delivery: each manifest skill directory is copied into the client's skills
//!   directory (`~/.claude/skills/<name>/`, `~/.codex/skills/<name>/`), and an index of
//!   them is written where the client reads standing instructions (`~/.claude/CLAUDE.md`,
//!   `~/.codex/AGENTS.md`).
//!
//! Transcripts need nothing here: they live in the agent's home, which a preserved bottle
//! keeps, and `resume` continues them (`claude --continue`, `codex resume --last`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use contract::{ClaudeAuth, CodexAuth, Provider};
use policy::{DlpMode, PathMatch, PathMatchKind, Route, RouteMatch};

use crate::error::Context;
use crate::{LaunchError, Report};

/// The host variable holding a Claude Code OAuth token (`claude setup-token`).
pub const CLAUDE_OAUTH_ENV: &str = "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN";
/// The host variable holding an Anthropic API key.
pub const ANTHROPIC_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The host variable holding an OpenAI API key.
pub const OPENAI_KEY_ENV: &str = "OPENAI_API_KEY";

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
    }
}

/// The routes a bottle runs with: its provider's defaults (credentials from the host's
/// environment) merged before its own routes.
pub fn routes_for(
    bottle: &manifest::ResolvedBottle,
    codex_auth: CodexAuth,
    env: &crate::HostEnv,
) -> Vec<Route> {
    with_default_routes(
        of(bottle.agent_provider.kind()),
        codex_auth,
        &bottle.egress.routes,
        |k| env.is_set(k),
    )
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
    let mut out: Vec<Route> = default_routes(provider, codex_auth, is_set)
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
    let all = with_default_routes(
        of(bottle.agent_provider.kind()),
        CodexAuth::ApiKey,
        &bottle.egress.routes,
        is_set,
    );
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
         bot-bottle: WARNING: a refresh inside the bottle is not copied back; if `codex` on the host then fails to refresh, run `codex login --device-auth` there again.",
        path.display()
    )
}

/// Where a forwarded login lives in the agent's home.
pub fn codex_login_in_home(agent_home: &Path) -> PathBuf {
    agent_home.join(".codex").join("auth.json")
}

/// Copies the host's Codex login into the agent's home (0600). A resumed bottle keeps its
/// own copy when that one was refreshed later than the host's (Codex rotates the refresh
/// token, so the older copy may no longer refresh). Nothing is ever written to the host.
pub fn forward_codex_login(host: &Path, agent_home: &Path) -> Result<(), LaunchError> {
    let text = state::read::read_limited(host, state::read::CONFIG_LIMIT)
        .with_context(|| format!("cannot read the host's Codex login {}", host.display()))?;
    let dest = codex_login_in_home(agent_home);
    if let Ok(own) = state::read::read_limited(&dest, state::read::CONFIG_LIMIT)
        && last_refresh(&own) > last_refresh(&text)
    {
        return Ok(());
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
        .with_context(|| format!("cannot write {}", dest.display()))
}

/// The `last_refresh` time of a Codex login, if it has a readable one.
fn last_refresh(login: &[u8]) -> Option<time::OffsetDateTime> {
    let json: serde_json::Value = serde_json::from_slice(login).ok()?;
    let at = json.get("last_refresh")?.as_str()?;
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// The client's skills directory, relative to the agent's home.
pub fn skills_dir(provider: Provider) -> PathBuf {
    match provider {
        Provider::Claude => Path::new(".claude").join("skills"),
        Provider::Codex => Path::new(".codex").join("skills"),
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

/// Standing instructions listing the delivered skills (none without skills).
pub fn instructions(
    provider: Provider,
    skills: &[PathBuf],
    home_inside: &Path,
) -> Result<Option<String>, LaunchError> {
    if skills.is_empty() {
        return Ok(None);
    }
    let base = home_inside.join(skills_dir(provider));
    let mut out = String::from(
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
        // The host's file is never written.
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
    fn every_default_route_passes_policy_validation() {
        for (p, auth) in [
            (Provider::Claude, CodexAuth::ApiKey),
            (Provider::Codex, CodexAuth::ApiKey),
            (Provider::Codex, CodexAuth::ChatGptLogin),
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
                Path::new("/home/agent")
            )
            .unwrap()
            .unwrap(),
            "# Skills\n\nThese skills are installed for you. Before a task one of them covers, read its SKILL.md and follow it.\n\n- `review` (/home/agent/.codex/skills/review/SKILL.md): Review a diff carefully\n"
        );
        assert_eq!(
            instructions(Provider::Claude, &[], Path::new("/home/agent")).unwrap(),
            None
        );
    }
}
