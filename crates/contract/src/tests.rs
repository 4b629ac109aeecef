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
        opencode_auth: OpenCodeAuth::Anthropic,
        generic: None,
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
        (Provider::Gemini, ".gemini/GEMINI.md"),
        (Provider::OpenCode, ".config/opencode/AGENTS.md"),
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
    for p in [
        Provider::Claude,
        Provider::Codex,
        Provider::Gemini,
        Provider::OpenCode,
    ] {
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

/// The paths of a contract's home files.
fn paths(c: &Contract) -> Vec<&Path> {
    c.home_files.iter().map(|f| f.path.as_path()).collect()
}

fn file<'a>(c: &'a Contract, path: &str) -> &'a str {
    &c.home_files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("no {path} in {:?}", paths(c)))
        .contents
}

#[test]
fn gemini_contract() {
    let c = build(&input(Provider::Gemini), host).unwrap();
    assert_eq!(c.env["GEMINI_API_KEY"], PLACEHOLDER_TOKEN);
    for k in [
        "CLAUDE_CODE_OAUTH_TOKEN",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
    ] {
        assert!(!c.env.contains_key(k), "{k}");
    }
    assert_eq!(
        paths(&c),
        vec![
            Path::new(".gitconfig"),
            Path::new(".gemini/settings.json"),
            Path::new(".gemini/trustedFolders.json")
        ]
    );
    let settings: serde_json::Value =
        serde_json::from_str(file(&c, ".gemini/settings.json")).unwrap();
    assert_eq!(
        settings,
        serde_json::json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "mcpServers": {"bot-bottle": {"httpUrl": "http://127.0.0.1:3130/mcp", "trust": true}},
        })
    );
    assert_eq!(
        file(&c, ".gemini/trustedFolders.json"),
        "{\n  \"/workspace\": \"TRUST_FOLDER\"\n}\n"
    );
}

#[test]
fn opencode_contract_follows_the_chosen_api() {
    for (auth, key, provider) in [
        (OpenCodeAuth::Anthropic, "ANTHROPIC_API_KEY", "anthropic"),
        (OpenCodeAuth::OpenAi, "OPENAI_API_KEY", "openai"),
    ] {
        let mut i = input(Provider::OpenCode);
        i.opencode_auth = auth;
        let c = build(&i, host).unwrap();
        let placeholders: Vec<&str> = c
            .env
            .iter()
            .filter(|(_, v)| *v == PLACEHOLDER_TOKEN)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(placeholders, vec![key]);
        assert_eq!(c.env["OPENCODE_DISABLE_MODELS_FETCH"], "1");
        let config: serde_json::Value =
            serde_json::from_str(file(&c, ".config/opencode/opencode.json")).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "$schema": "https://opencode.ai/config.json",
                "autoupdate": false,
                "share": "disabled",
                "enabled_providers": [provider],
                "mcp": {"bot-bottle": {"type": "remote", "url": "http://127.0.0.1:3130/mcp", "enabled": true}},
            })
        );
    }
}

fn generic(mcp_file: &str, key: &[&str]) -> GenericClient {
    GenericClient {
        placeholder_env: vec!["MISTRAL_API_KEY".into()],
        mcp: Some(McpRegistration {
            file: mcp_file.into(),
            key: key.iter().map(|k| k.to_string()).collect(),
            entry: serde_json::json!({"type": "http", "url": "{url}", "headers": ["x-{url}"]}),
        }),
        instructions: Some(".config/agent/AGENTS.md".into()),
    }
}

#[test]
fn a_generic_client_gets_its_placeholders_and_its_mcp_file() {
    let mut i = input(Provider::Generic);
    i.generic = Some(generic(".config/agent/mcp.json", &["mcp", "servers"]));
    i.instructions = Some("# Access\n".into());
    let c = build(&i, host).unwrap();
    assert_eq!(c.env["MISTRAL_API_KEY"], PLACEHOLDER_TOKEN);
    assert_eq!(
        paths(&c),
        vec![
            Path::new(".gitconfig"),
            Path::new(".config/agent/mcp.json"),
            Path::new(".config/agent/AGENTS.md")
        ]
    );
    let mcp: serde_json::Value = serde_json::from_str(file(&c, ".config/agent/mcp.json")).unwrap();
    assert_eq!(
        mcp,
        serde_json::json!({"mcp": {"servers": {"bot-bottle": {
            "type": "http", "url": "http://127.0.0.1:3130/mcp",
            "headers": ["x-http://127.0.0.1:3130/mcp"]}}}})
    );
    assert_eq!(file(&c, ".config/agent/AGENTS.md"), "# Access\n");

    // TOML by the file's extension.
    i.generic = Some(generic("agent.toml", &["mcp_servers"]));
    let c = build(&i, host).unwrap();
    let toml: toml::Table = file(&c, "agent.toml").parse().unwrap();
    assert_eq!(
        toml["mcp_servers"]["bot-bottle"]["url"].as_str(),
        Some("http://127.0.0.1:3130/mcp")
    );
}

#[test]
fn a_generic_client_cannot_take_over_the_wiring() {
    for k in [
        "HTTPS_PROXY",
        "NODE_EXTRA_CA_CERTS",
        "HOME",
        "LD_PRELOAD",
        "GIT_SSH_COMMAND",
    ] {
        let mut i = input(Provider::Generic);
        i.generic = Some(GenericClient {
            placeholder_env: vec![k.into()],
            ..GenericClient::default()
        });
        assert_eq!(
            build(&i, host).unwrap_err().to_string(),
            format!(
                "agent_provider: model_api env `{k}` is set by bot-bottle itself (proxy, CA or sidecar wiring); name the variable the agent reads its key from"
            )
        );
    }
    // ... and the bottle's `env:` cannot replace its placeholder.
    let mut i = input(Provider::Generic);
    i.generic = Some(generic("m.json", &["mcpServers"]));
    i.bottle_env.insert("MISTRAL_API_KEY".into(), "x".into());
    assert_eq!(
        build(&i, host),
        Err(ContractError::Reserved("MISTRAL_API_KEY".into()))
    );
    // TOML has no null.
    let mut i = input(Provider::Generic);
    let mut g = generic("m.toml", &["mcp"]);
    g.mcp.as_mut().unwrap().entry = serde_json::json!({"url": "{url}", "x": null});
    i.generic = Some(g);
    assert!(
        build(&i, host)
            .unwrap_err()
            .to_string()
            .contains("TOML has no null")
    );
}
