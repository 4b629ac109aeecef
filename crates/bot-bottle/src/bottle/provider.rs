//! Provider templates: what each agent client needs beyond the contract.
//!
//! * the default egress routes to its model API, with the credential egress injects
//!   (Claude Code: `api.anthropic.com` with `BOT_BOTTLE_CLAUDE_OAUTH_TOKEN` as
//!   `Authorization: Bearer`, or `ANTHROPIC_API_KEY` as `x-api-key`; Codex:
//!   `api.openai.com` with `OPENAI_API_KEY` as `Authorization: Bearer`). They go before the
//!   bottle's own routes, and a bottle that already routes the host keeps its own route;
//! * which placeholder Claude Code holds, decided by the header its route injects;
//! * skills delivery: each manifest skill directory is copied into the client's skills
//!   directory (`~/.claude/skills/<name>/`, `~/.codex/skills/<name>/`), and an index of
//!   them is written where the client reads standing instructions (`~/.claude/CLAUDE.md`,
//!   `~/.codex/AGENTS.md`).
//!
//! Transcripts need nothing here: they live in the agent's home, which a preserved bottle
//! keeps, and `resume` continues them (`claude --continue`, `codex resume --last`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use contract::{ClaudeAuth, Provider};
use policy::Route;

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

/// The contract's provider for a manifest provider kind.
pub fn of(kind: manifest::ProviderKind) -> Provider {
    match kind {
        manifest::ProviderKind::Claude => Provider::Claude,
        manifest::ProviderKind::Codex => Provider::Codex,
    }
}

/// The routes a bottle runs with: its provider's defaults (credentials from the host's
/// environment) merged before its own routes.
pub fn routes_for(bottle: &manifest::ResolvedBottle) -> Vec<Route> {
    with_default_routes(
        of(bottle.agent_provider.kind()),
        &bottle.egress.routes,
        |k| std::env::var_os(k).is_some_and(|v| !v.is_empty()),
    )
}

fn route(host: &str) -> Route {
    Route {
        host: host.into(),
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
pub fn default_routes(provider: Provider, is_set: impl Fn(&str) -> bool) -> Vec<Route> {
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
        Provider::Codex => vec![Route {
            auth_scheme: Some("Bearer".into()),
            token_env: Some(OPENAI_KEY_ENV.into()),
            ..route(OPENAI_HOST)
        }],
    }
}

/// The provider's default routes followed by the bottle's own; a default is left out when
/// the bottle already has a route for its host (the bottle's route wins: pins, paths,
/// another credential).
pub fn with_default_routes(
    provider: Provider,
    bottle_routes: &[Route],
    is_set: impl Fn(&str) -> bool,
) -> Vec<Route> {
    let mut out: Vec<Route> = default_routes(provider, is_set)
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

/// The client's skills directory, relative to the agent's home.
pub fn skills_dir(provider: Provider) -> PathBuf {
    match provider {
        Provider::Claude => Path::new(".claude").join("skills"),
        Provider::Codex => Path::new(".codex").join("skills"),
    }
}

fn skill_name(dir: &Path) -> anyhow::Result<String> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "skill directory {} has no usable name; rename it",
                dir.display()
            )
        })
}

/// The `description:` of a skill's `SKILL.md` front matter, if any.
fn skill_description(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("SKILL.md")).ok()?;
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
) -> anyhow::Result<Option<String>> {
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
) -> anyhow::Result<()> {
    let base = agent_home.join(skills_dir(provider));
    for dir in skills {
        let name = skill_name(dir)?;
        let meta = std::fs::symlink_metadata(dir)
            .with_context(|| format!("cannot read skill directory {}", dir.display()))?;
        if !meta.is_dir() {
            anyhow::bail!(
                "skill {} is not a directory; a skill is a directory holding SKILL.md",
                dir.display()
            );
        }
        let dest = base.join(&name);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        copy_tree(dir, &dest)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
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
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        } else {
            eprintln!(
                "bot-bottle: warning: skipping {} in a skill (only regular files and directories are copied)",
                entry.path().display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

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
            default_routes(Provider::Claude, |k| k == CLAUDE_OAUTH_ENV
                || k == ANTHROPIC_KEY_ENV),
            vec![bearer(ANTHROPIC_HOST, CLAUDE_OAUTH_ENV)]
        );
        assert_eq!(
            default_routes(Provider::Claude, |k| k == ANTHROPIC_KEY_ENV),
            vec![Route {
                auth_header: Some("x-api-key".into()),
                token_env: Some(ANTHROPIC_KEY_ENV.into()),
                ..route(ANTHROPIC_HOST)
            }]
        );
        assert_eq!(
            default_routes(Provider::Claude, |_| false),
            vec![bearer(ANTHROPIC_HOST, CLAUDE_OAUTH_ENV)]
        );
    }

    #[test]
    fn codex_gets_the_openai_key_as_bearer() {
        assert_eq!(
            default_routes(Provider::Codex, |_| true),
            vec![bearer(OPENAI_HOST, OPENAI_KEY_ENV)]
        );
    }

    #[test]
    fn defaults_go_first_unless_the_bottle_routes_the_host() {
        let own = vec![route("github.com")];
        assert_eq!(
            with_default_routes(Provider::Codex, &own, |_| true),
            vec![bearer(OPENAI_HOST, OPENAI_KEY_ENV), route("github.com")]
        );
        let pinned = vec![Route {
            connect_to: Some("127.0.0.1:9".into()),
            ..bearer("API.anthropic.com", "MINE")
        }];
        assert_eq!(
            with_default_routes(Provider::Claude, &pinned, |_| true),
            pinned
        );
    }

    #[test]
    fn every_default_route_passes_policy_validation() {
        for p in [Provider::Claude, Provider::Codex] {
            for set in [true, false] {
                let routes = default_routes(p, |k| set || k == ANTHROPIC_KEY_ENV);
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
        let key = default_routes(Provider::Claude, |k| k == ANTHROPIC_KEY_ENV);
        assert_eq!(claude_auth(&key), ClaudeAuth::ApiKey);
        let oauth = default_routes(Provider::Claude, |_| true);
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
            install_skills(p, std::slice::from_ref(&skill), &home).unwrap();
            let dest = home.join(skills_dir(p)).join("review");
            assert_eq!(
                std::fs::read_to_string(dest.join("scripts").join("run.sh")).unwrap(),
                "echo hi\n"
            );
            assert!(!dest.join("leak").exists(), "symlinks are not followed");
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
