//! Broken manifests: each gets one clear error naming the file, the line and what is
//! expected; never a panic, never a Rust type name.

use std::path::Path;

use manifest::{LoadError, Manifest};
use pretty_assertions::assert_eq;

use super::errors;

/// Bad inputs, each with a short name. Every one must produce exactly one error.
const CASES: &[(&str, &str)] = &[
    ("typo'd key", "bottles:\n  dev:\n    supervize: true\n"),
    ("typo'd top-level key", "bottle:\n  dev: {}\n"),
    (
        "typo'd key in a route",
        "bottles:\n  dev:\n    egress:\n      routes:\n        - hots: crates.io\n",
    ),
    (
        "typo'd key in an agent",
        "agents:\n  demo:\n    botle: dev\n",
    ),
    (
        "wrong type: boolean",
        "bottles:\n  dev:\n    supervise: maybe\n",
    ),
    (
        "wrong type: yes is not a boolean",
        "bottles:\n  dev:\n    supervise: yes\n",
    ),
    (
        "wrong type: env is a list",
        "bottles:\n  dev:\n    env: [A, B]\n",
    ),
    ("wrong type: bottle is a string", "bottles:\n  dev: hello\n"),
    (
        "wrong type: routes is a mapping",
        "bottles:\n  dev:\n    egress: {routes: {host: a}}\n",
    ),
    (
        "wrong type: port",
        "bottles:\n  dev:\n    egress: {routes: [{host: a, port: https}]}\n",
    ),
    (
        "wrong type: agent bottle is a list",
        "agents:\n  demo: {bottle: [dev]}\n",
    ),
    (
        "unknown log mode",
        "bottles:\n  dev:\n    egress: {log: verbose}\n",
    ),
    (
        "unknown path match type",
        "bottles:\n  dev:\n    egress: {routes: [{host: a, matches: [{paths: [{type: glob, value: /}]}]}]}\n",
    ),
    (
        "unknown agent provider",
        "bottles:\n  dev:\n    agent_provider: aider\n",
    ),
    (
        "generic provider without its description",
        "bottles:\n  dev:\n    agent_provider: generic\n",
    ),
    (
        "template and command",
        "bottles:\n  dev:\n    agent_provider: {template: claude, dockerfile: D, command: [x]}\n",
    ),
    (
        "generic provider without a command",
        "bottles:\n  dev:\n    agent_provider: {command: []}\n",
    ),
    (
        "generic provider with a URL for a host",
        "bottles:\n  dev:\n    agent_provider:\n      command: [aider]\n      model_api: [{host: \"https://api.x.test/v1\", token_env: KEY}]\n",
    ),
    (
        "generic provider with an MCP file outside the home",
        "bottles:\n  dev:\n    agent_provider:\n      command: [aider]\n      mcp: {file: ../../etc/agent.json, key: servers}\n",
    ),
    (
        "generic provider with a typo",
        "bottles:\n  dev:\n    agent_provider:\n      command: [aider]\n      model_apis: []\n",
    ),
    (
        "template without dockerfile",
        "bottles:\n  dev:\n    agent_provider: {template: claude}\n",
    ),
    (
        "unknown key provider",
        "bottles:\n  dev:\n    git-gate:\n      repos:\n        app: {url: /a, key: {provider: ftp}}\n",
    ),
    (
        "route without host",
        "bottles:\n  dev:\n    egress: {routes: [{port: 443}]}\n",
    ),
    (
        "bad indent",
        "bottles:\n  dev:\n    env:\n      A: x\n     B: y\n",
    ),
    (
        "bad indent of a key",
        "bottles:\n  dev:\n    supervise: true\n      env: {}\n",
    ),
    ("tab indent", "bottles:\n\tdev: {}\n"),
    ("unclosed bracket", "bottles:\n  dev:\n    extends: [base\n"),
    ("unclosed quote", "bottles:\n  dev:\n    env: {A: \"x}\n"),
    ("duplicate bottle", "bottles:\n  dev: {}\n  dev: {}\n"),
    ("top level is a list", "- bottles\n"),
];

fn render_all() -> String {
    let mut out = String::new();
    for (name, yaml) in CASES {
        let errs = errors(yaml);
        out.push_str(&format!("## {name}\n"));
        for e in &errs {
            out.push_str(e);
            out.push('\n');
        }
    }
    out
}

#[test]
fn each_bad_input_has_exactly_one_located_error() {
    for (name, yaml) in CASES {
        let errs = manifest::Manifest::from_yaml("m.yaml", yaml, None)
            .errors()
            .to_vec();
        assert_eq!(errs.len(), 1, "{name}: {errs:#?}");
        assert!(errs[0].line.is_some(), "{name}: no line in {}", errs[0]);
        assert_eq!(errs[0].file, Path::new("m.yaml"), "{name}");
    }
}

#[test]
fn no_rust_type_names_in_messages() {
    let words = [
        "struct ",
        "enum ",
        "Raw",
        "Spanned",
        "Option",
        "Vec<",
        "String",
        "BTreeMap",
        "u16",
        "u32",
        "u64",
        "i64",
        "usize",
        "newtype",
        "EgressConfig",
        "Route",
        "GitGate",
        "KeySpec",
        "RepoSpec",
        "LogMode",
        "PathMatch",
        "HeaderMatch",
        "AgentProvider",
        "Entries",
        "Extends",
        "serde",
        "Options",
        "DuplicateKeyPolicy",
    ];
    let all = render_all();
    for word in words {
        assert!(!all.contains(word), "`{word}` in:\n{all}");
    }
}

#[test]
fn bad_input_messages() {
    insta::assert_snapshot!(render_all());
}

#[test]
fn missing_file_is_a_load_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nope.yaml");
    let err = Manifest::load(&path).unwrap_err();
    assert!(
        matches!(&err, LoadError::Read { path: p, source } if *p == path && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert_eq!(
        err.to_string()
            .replace(&tmp.path().display().to_string(), "<tmp>"),
        "cannot read manifest <tmp>/nope.yaml: No such file or directory (os error 2)"
    );
}

#[test]
fn not_found_lists_where_it_looked() {
    let err = LoadError::NotFound {
        searched: vec!["/w/bot-bottle.yaml".into(), "/w/.bot-bottle".into()],
    };
    assert_eq!(
        err.to_string(),
        "no manifest found; looked for /w/bot-bottle.yaml, /w/.bot-bottle; create \
         bot-bottle.yaml (see examples/bot-bottle.yaml) or pass --manifest PATH"
    );
}

#[test]
fn empty_manifest_is_valid_and_empty() {
    let m = manifest::Manifest::from_yaml("m.yaml", "# nothing yet\n", None);
    assert_eq!(m.errors(), &[]);
    assert_eq!(m.bottle_names(), Vec::<&str>::new());
}

#[test]
fn yaml_files_read_on_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("repos.yaml");
    std::fs::write(
        &path,
        "user: {name: Bot}\nrepos:\n  app:\n    url: /srv/app.git\n    key: {provider: ftp}\n",
    )
    .unwrap();
    let err = manifest::read_yaml_file::<manifest::raw::GitGate>(&path).unwrap_err();
    assert_eq!(
        err.to_string()
            .replace(&tmp.path().display().to_string(), "<tmp>"),
        "<tmp>/repos.yaml:5:11: unknown variant `ftp`, expected one of static, gitea"
    );
    std::fs::write(&path, "repos:\n  app: [1]\n").unwrap();
    let err = manifest::read_yaml_file::<manifest::raw::GitGate>(&path).unwrap_err();
    assert_eq!(
        err.to_string()
            .replace(&tmp.path().display().to_string(), "<tmp>"),
        "<tmp>/repos.yaml:2:8: `repos.app`: expected a mapping (`key: value` entries) here"
    );
    std::fs::write(&path, "repos:\n  app: {url: /srv/app.git}\n").unwrap();
    let gate = manifest::read_yaml_file::<manifest::raw::GitGate>(&path).unwrap();
    assert_eq!(
        gate.repos.unwrap()["app"].url.as_deref(),
        Some("/srv/app.git")
    );
}
