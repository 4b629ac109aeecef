use super::*;
use pretty_assertions::assert_eq;

fn input(provider: Provider) -> Input {
    Input {
        provider,
        identity: "demo-3fa9c".into(),
        endpoints: Endpoints::DEFAULT,
        home: "/home/agent".into(),
        workspace: "/workspace".into(),
        ca_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
        bottle_ca: "/etc/bot-bottle/ca.pem".into(),
        gitconfig: "[user]\n\tname = Bot\n".into(),
        bottle_env: BTreeMap::from([("RUST_LOG".to_string(), "info".to_string())]),
        claude_auth: ClaudeAuth::OAuth,
        codex_auth: CodexAuth::ApiKey,
        instructions: None,
    }
}

fn host(k: &str) -> Option<String> {
    match k {
        "TERM" => Some("xterm-256color".into()),
        "AWS_SECRET_ACCESS_KEY" | "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN" => Some("real-secret".into()),
        _ => None,
    }
}

#[test]
fn claude_contract() {
    let c = build(&input(Provider::Claude), host).unwrap();
    insta::assert_debug_snapshot!("claude_env", c.env);
    assert_eq!(c.home_files.len(), 2);
    insta::assert_snapshot!("claude_json", c.home_files[1].contents);
}

#[test]
fn codex_contract() {
    let c = build(&input(Provider::Codex), host).unwrap();
    assert_eq!(c.env["OPENAI_API_KEY"], PLACEHOLDER_TOKEN);
    assert_eq!(c.env["CODEX_API_KEY"], PLACEHOLDER_TOKEN);
    assert_eq!(c.env["CODEX_HOME"], "/home/agent/.codex");
    assert!(!c.env.contains_key("CLAUDE_CODE_OAUTH_TOKEN"));
    assert_eq!(c.home_files.len(), 2);
    assert_eq!(c.home_files[1].path, Path::new(".codex/config.toml"));
    insta::assert_snapshot!("codex_config_toml", c.home_files[1].contents);
}

#[test]
fn codex_with_a_forwarded_login_has_no_api_key_placeholder() {
    let mut i = input(Provider::Codex);
    i.codex_auth = CodexAuth::ChatGptLogin;
    let c = build(&i, host).unwrap();
    let api_key = build(&input(Provider::Codex), host).unwrap();
    let mut expected_env = api_key.env.clone();
    expected_env.remove("OPENAI_API_KEY");
    expected_env.remove("CODEX_API_KEY");
    assert_eq!(c.env, expected_env);
    assert!(c.env.values().all(|v| v != PLACEHOLDER_TOKEN));
    // The login file itself is not the contract's: `start` copies it (0600).
    assert_eq!(
        c.home_files.iter().map(|f| &f.path).collect::<Vec<_>>(),
        vec![Path::new(".gitconfig"), Path::new(".codex/config.toml")]
    );
    insta::assert_snapshot!("codex_chatgpt_config_toml", c.home_files[1].contents);
    let config: toml::Table = c.home_files[1].contents.parse().unwrap();
    assert_eq!(
        config["model_provider"].as_str(),
        Some(CODEX_CHATGPT_PROVIDER_ID)
    );
    let provider = &config["model_providers"][CODEX_CHATGPT_PROVIDER_ID];
    assert_eq!(provider.get("env_key"), None);
    assert_eq!(provider["requires_openai_auth"].as_bool(), Some(true));
}

#[test]
fn a_forwarded_login_changes_nothing_for_claude() {
    let mut i = input(Provider::Claude);
    i.codex_auth = CodexAuth::ChatGptLogin;
    assert_eq!(
        build(&i, host).unwrap(),
        build(&input(Provider::Claude), host).unwrap()
    );
}

#[test]
fn claude_with_an_api_key_holds_an_api_key_placeholder() {
    let mut i = input(Provider::Claude);
    i.claude_auth = ClaudeAuth::ApiKey;
    let c = build(&i, host).unwrap();
    assert_eq!(c.env["ANTHROPIC_API_KEY"], PLACEHOLDER_TOKEN);
    assert!(!c.env.contains_key("CLAUDE_CODE_OAUTH_TOKEN"));
}

#[test]
fn instructions_go_where_each_client_reads_them() {
    for (p, path) in [
        (Provider::Claude, ".claude/CLAUDE.md"),
        (Provider::Codex, ".codex/AGENTS.md"),
    ] {
        let mut i = input(p);
        i.instructions = Some("# Skills\n".into());
        let c = build(&i, host).unwrap();
        assert_eq!(
            c.home_files.last(),
            Some(&HomeFile {
                path: path.into(),
                contents: "# Skills\n".into()
            })
        );
    }
}

#[test]
fn host_secrets_never_reach_the_environment() {
    for p in [Provider::Claude, Provider::Codex] {
        let c = build(&input(p), host).unwrap();
        assert!(
            c.env.values().all(|v| !v.contains("real-secret")),
            "{:?}",
            c.env
        );
        assert!(!c.env.contains_key("AWS_SECRET_ACCESS_KEY"));
    }
}

#[test]
fn bottle_env_cannot_override_the_wiring() {
    for k in [
        "HTTPS_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "LD_PRELOAD",
        "BOT_BOTTLE_SUPERVISE_URL",
        "HOME",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_GLOBAL",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "CODEX_API_KEY",
        "CODEX_ACCESS_TOKEN",
    ] {
        let mut i = input(Provider::Claude);
        i.bottle_env.insert(k.into(), "x".into());
        assert_eq!(
            build(&i, host),
            Err(ContractError::Reserved(k.into())),
            "{k}"
        );
    }
    let mut i = input(Provider::Claude);
    i.bottle_env.insert("BAD-NAME".into(), "x".into());
    assert_eq!(
        build(&i, host),
        Err(ContractError::Invalid("BAD-NAME".into()))
    );
    assert_eq!(
        ContractError::Reserved("HTTPS_PROXY".into()).to_string(),
        "env `HTTPS_PROXY` is set by bot-bottle itself (proxy, CA or sidecar wiring) and cannot be overridden in a bottle's `env:`; remove it from the manifest"
    );
}

#[test]
fn bottle_env_is_kept() {
    let c = build(&input(Provider::Claude), host).unwrap();
    assert_eq!(c.env["RUST_LOG"], "info");
    assert_eq!(c.env["TERM"], "xterm-256color");
}

#[test]
fn ca_bundle_appends_the_bottle_ca() {
    assert_eq!(
        ca_bundle("ROOTS", "CA\n"),
        "ROOTS\n# bot-bottle: this bottle's CA (egress terminates TLS with it)\nCA\n"
    );
    assert_eq!(
        ca_bundle("", "CA"),
        "# bot-bottle: this bottle's CA (egress terminates TLS with it)\nCA\n"
    );
}
