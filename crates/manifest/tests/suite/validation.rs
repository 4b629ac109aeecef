//! Values that reach the agent's git configuration, file names or environment are checked.

use pretty_assertions::assert_eq;

use super::{bottle, default_bottle, errors};

#[test]
fn git_user_with_newline_or_carriage_return() {
    let yaml = "bottles:\n  a:\n    git-gate:\n      user: {name: \"Bot\\n[core]\", email: \"bot@example.com\\r\"}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:4:13: bottle `a`: git-gate.user.name contains a newline; it is written into \
             the agent's git configuration, so it must be one plain line",
            "m.yaml:4:13: bottle `a`: git-gate.user.email contains a carriage return; it is \
             written into the agent's git configuration, so it must be one plain line",
        ]
    );
}

#[test]
fn repo_values_with_control_characters() {
    let yaml = r#"bottles:
  a:
    git-gate:
      repos:
        app:
          url: "/srv/app.git\u0000"
          push_branches: ["ok", "bad\u001b"]
          key: {provider: gitea, forge_token_env: "NOT-AN-ENV"}
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:9: bottle `a`: git-gate.repos.app.url contains a NUL byte; it is written \
             into the agent's git configuration, so it must be one plain line",
            "m.yaml:5:9: bottle `a`: git-gate.repos.app.push_branches[1] contains a control \
             character; it is written into the agent's git configuration, so it must be one \
             plain line",
            "m.yaml:5:9: bottle `a`: git-gate.repos.app.key.forge_token_env `NOT-AN-ENV` is not \
             a valid environment variable name",
        ]
    );
}

#[test]
fn repo_names_are_checked() {
    let yaml = "bottles:\n  a:\n    git-gate:\n      repos:\n        \".hidden\": {url: /a}\n        \"a/b\": {url: /b}\n        \"ok.v2_x-y\": {url: /c}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:9: bottle `a`: git-gate.repos: `.hidden` is not a valid repository name; \
             use letters, digits, `.`, `_` and `-`, not starting with `.`",
            "m.yaml:6:9: bottle `a`: git-gate.repos: `a/b` is not a valid repository name; use \
             letters, digits, `.`, `_` and `-`, not starting with `.`",
        ]
    );
}

#[test]
fn repos_need_url_and_ssh_repos_need_key_and_host_key() {
    let yaml = "bottles:\n  a:\n    git-gate:\n      repos:\n        nourl: {push_branches: [main]}\n        ssh: {url: \"git@example.com:org/app.git\"}\n        local: {url: /srv/local.git}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:9: bottle `a`: git-gate.repos.nourl has no `url`; add the upstream \
             repository's URL",
            "m.yaml:6:9: bottle `a`: git-gate.repos.ssh has an SSH upstream but no `key`; add \
             `key: {provider: static, path: PATH}` or `key: {provider: gitea, forge_token_env: \
             VAR}`",
            "m.yaml:6:9: bottle `a`: git-gate.repos.ssh has an SSH upstream but no `host_key`; \
             pin the upstream's host key (see `ssh-keyscan HOST`)",
        ]
    );
}

#[test]
fn env_names_must_be_identifiers() {
    let yaml =
        "bottles:\n  a:\n    env:\n      GOOD_1: x\n      1BAD: x\n      \"WITH SPACE\": x\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:7: bottle `a`: env name `1BAD` is not a valid environment variable name; \
             use letters, digits and `_`, not starting with a digit",
            "m.yaml:6:7: bottle `a`: env name `WITH SPACE` is not a valid environment variable \
             name; use letters, digits and `_`, not starting with a digit",
        ]
    );
}

#[test]
fn bottle_and_agent_names_are_checked() {
    let yaml = "bottles:\n  \"../up\": {}\n  ok: {}\nagents:\n  \"a b\": {bottle: ok}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:2:3: bottle name `../up` is not valid; use letters, digits, `.`, `_` and \
             `-`, not starting with `.`",
            "m.yaml:5:3: agent name `a b` is not valid; use letters, digits, `.`, `_` and `-`, \
             not starting with `.` (it becomes part of the bottle's identity)",
        ]
    );
}

#[test]
fn agent_errors() {
    let yaml = "bottles:\n  base: {}\n  broken: {extends: nope}\nagents:\n  nobottle: {prompt: hi}\n  ghost: {bottle: gone}\n  onbroken: {bottle: broken}\n  noskill: {bottle: base, skills: [./skills/missing]}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:3:21: bottle `broken`: extends `nope`, which is not defined; available \
             bottles: base, broken",
            "m.yaml:5:3: agent `nobottle` has no `bottle`; add `bottle: NAME` (available \
             bottles: base, broken)",
            "m.yaml:6:19: agent `ghost`: bottle `gone` is not defined; available bottles: base, \
             broken",
            "m.yaml:8:36: agent `noskill`: skill `./skills/missing` not found (looked at \
             skills/missing); skill paths are relative to the manifest",
        ]
    );
}

#[test]
fn names_that_yaml_1_1_would_read_as_booleans() {
    let yaml = "bottles:\n  no: {egress: {log: off}}\n  y: {extends: no, supervise: false}\n";
    assert_eq!(
        bottle(yaml, "y"),
        manifest::ResolvedBottle {
            supervise: false,
            egress: manifest::ResolvedEgress {
                log: policy::LogMode::Off,
                ..manifest::ResolvedEgress::default()
            },
            ..default_bottle("y")
        }
    );
}

#[test]
fn resource_limits_are_checked_where_they_are_written() {
    let yaml = "bottles:\n  a:\n    resources:\n      cpus: 0\n      memory: 2GB\n      pids: many\n  b:\n    resources: {memory: [1], cpus: yes}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:4:13: bottle `a`: resources.cpus must be between 0.01 and 1024 CPUs, found 0",
            "m.yaml:5:15: bottle `a`: resources.memory `2GB` is ambiguous (decimal or binary?); \
             write GiB instead",
            "m.yaml:6:13: bottle `a`: resources.pids must be a whole number of processes, found \
             the string `many`",
            "m.yaml:8:25: bottle `b`: resources.memory must be a size, found a list; write a \
             size such as `2GiB` or `512MiB` (binary units K, M, G, T, optionally with `iB`) or \
             a number of bytes",
            "m.yaml:8:36: bottle `b`: resources.cpus must be a number of CPUs such as `1.5`, \
             found the string `yes`",
        ]
    );
    let typo = "bottles:\n  a:\n    resources: {memroy: 1GiB}\n";
    assert_eq!(errors(typo).len(), 1, "{:?}", errors(typo));
    assert!(
        errors(typo)[0].starts_with("m.yaml:3:"),
        "{:?}",
        errors(typo)
    );
}

#[test]
fn kubernetes_values_are_checked_with_the_fix() {
    let yaml = "bottles:\n  a:\n    kubernetes:\n      namespace: Agents\n      runtime_class: -kata\n      registry: https://registry.example.com/team\n      home_size: 10GB\n      storage_class: Fast\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:4:18: bottle `a`: kubernetes.namespace `Agents` may hold only lowercase \
             letters, digits and `-`; use a namespace name like `agents`",
            "m.yaml:5:22: bottle `a`: kubernetes.runtime_class `-kata` must start and end with \
             a letter or digit; use a RuntimeClass name like `gvisor` (`kubectl get \
             runtimeclass` lists them)",
            "m.yaml:6:17: bottle `a`: kubernetes.registry `https://registry.example.com/team` \
             has a scheme; write it as an image name prefix like `registry.example.com/team` \
             (no scheme, no tag)",
            "m.yaml:7:18: bottle `a`: kubernetes.home_size `10GB` has a unit other than Ki, Mi, \
             Gi, Ti, Pi (or k, M, G, T, P); write a storage size like `10Gi` or `500Mi`",
            "m.yaml:8:22: bottle `a`: kubernetes.storage_class `Fast` may hold only lowercase \
             letters, digits and `-`; use a StorageClass name like `standard` (`kubectl get \
             storageclass` lists them)",
        ]
    );
}
