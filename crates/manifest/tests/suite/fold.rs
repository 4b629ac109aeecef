//! Every fold rule of `extends`, each asserted on the whole resolved bottle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use manifest::raw::{GitUser, KeySpec, RepoSpec};
use manifest::{AgentProvider, ProviderKind, ResolvedEgress, ResolvedGitGate};
use policy::LogMode;
use pretty_assertions::assert_eq;

use super::{bottle, default_bottle, env, errors, route};

#[test]
fn defaults_of_a_bare_bottle() {
    assert_eq!(bottle("bottles:\n  a: {}\n", "a"), default_bottle("a"));
}

#[test]
fn env_dict_merge_later_wins_child_on_top() {
    let yaml = r#"
bottles:
  p1: {env: {A: "1", B: "1"}}
  p2: {env: {B: "2", C: "2"}}
  child:
    extends: [p1, p2]
    env: {C: "3", D: "3"}
"#;
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            env: env(&[("A", "1"), ("B", "2"), ("C", "3"), ("D", "3")]),
            ..default_bottle("child")
        }
    );
}

#[test]
fn git_user_per_field_later_non_empty_wins() {
    let yaml = r#"
bottles:
  p1: {git-gate: {user: {name: Alice, email: alice@example.com}}}
  p2: {git-gate: {user: {name: Bob, email: ""}}}
  child:
    extends: [p1, p2]
  child2:
    extends: [p1, p2]
    git-gate: {user: {email: carol@example.com}}
"#;
    let gate = |name: &str, email: &str| ResolvedGitGate {
        user: GitUser {
            name: Some(name.into()),
            email: Some(email.into()),
        },
        repos: BTreeMap::new(),
    };
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            git_gate: gate("Bob", "alice@example.com"),
            ..default_bottle("child")
        }
    );
    assert_eq!(
        bottle(yaml, "child2"),
        manifest::ResolvedBottle {
            git_gate: gate("Bob", "carol@example.com"),
            ..default_bottle("child2")
        }
    );
}

#[test]
fn repos_union_by_name_same_name_merged_per_field_key_replaced_whole() {
    let yaml = r#"
bottles:
  p1:
    git-gate:
      repos:
        app: {url: /srv/app.git, key: {provider: gitea, forge_token_env: TOKEN, api_url: "https://forge/api/v1"}, push_branches: ["bot/*"]}
        lib: {url: /srv/lib.git}
  p2:
    git-gate:
      repos:
        app: {url: /srv/app.git, key: {provider: static, path: /keys/app}, allow_force_push: true}
        docs: {url: /srv/docs.git}
  child:
    extends: [p1, p2]
    git-gate:
      repos:
        lib: {push_branches: [main]}
"#;
    let mut repos = BTreeMap::new();
    repos.insert(
        "app".to_owned(),
        RepoSpec {
            url: Some("/srv/app.git".into()),
            key: Some(KeySpec::Static {
                path: "/keys/app".into(),
            }),
            host_key: None,
            push_branches: Some(vec!["bot/*".into()]),
            allow_force_push: Some(true),
            dangerously_push_unscannable: None,
        },
    );
    repos.insert(
        "docs".to_owned(),
        RepoSpec {
            url: Some("/srv/docs.git".into()),
            ..RepoSpec::default()
        },
    );
    repos.insert(
        "lib".to_owned(),
        RepoSpec {
            url: Some("/srv/lib.git".into()),
            push_branches: Some(vec!["main".into()]),
            ..RepoSpec::default()
        },
    );
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            git_gate: ResolvedGitGate {
                user: GitUser::default(),
                repos
            },
            ..default_bottle("child")
        }
    );
}

#[test]
fn routes_concatenated_earlier_first_child_last() {
    let yaml = r#"
bottles:
  p1: {egress: {routes: [{host: a.example.com}]}}
  p2: {egress: {routes: [{host: b.example.com}, {host: c.example.com}]}}
  child:
    extends: [p1, p2]
    egress: {routes: [{host: d.example.com}]}
"#;
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            egress: ResolvedEgress {
                routes: vec![
                    route("a.example.com"),
                    route("b.example.com"),
                    route("c.example.com"),
                    route("d.example.com"),
                ],
                ..ResolvedEgress::default()
            },
            ..default_bottle("child")
        }
    );
}

#[test]
fn diamond_route_kept_once_at_first_place() {
    let yaml = r#"
bottles:
  base:
    env: {FROM_BASE: "1"}
    egress: {routes: [{host: api.example.com, auth_scheme: Bearer, token_env: API_TOKEN}]}
  left:
    extends: base
    env: {FROM_LEFT: "1"}
    egress: {routes: [{host: left.example.com}]}
  right:
    extends: base
    env: {FROM_RIGHT: "1"}
    egress: {routes: [{host: right.example.com}]}
  child:
    extends: [left, right]
"#;
    let api = policy::Route {
        auth_scheme: Some("Bearer".into()),
        token_env: Some("API_TOKEN".into()),
        ..route("api.example.com")
    };
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            env: env(&[("FROM_BASE", "1"), ("FROM_LEFT", "1"), ("FROM_RIGHT", "1")]),
            egress: ResolvedEgress {
                routes: vec![api, route("left.example.com"), route("right.example.com")],
                ..ResolvedEgress::default()
            },
            ..default_bottle("child")
        }
    );
}

#[test]
fn diamond_shared_ancestor_error_reported_once() {
    let yaml = r#"
bottles:
  base: {env: {"BAD-NAME": x}}
  left: {extends: base}
  right: {extends: base}
  child: {extends: [left, right]}
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:3:16: bottle `base`: env name `BAD-NAME` is not a valid environment \
             variable name; use letters, digits and `_`, not starting with a digit"
        ]
    );
}

#[test]
fn scalars_last_wins() {
    let yaml = r#"
bottles:
  p1: {agent_provider: codex, supervise: false, egress: {log: all}}
  p2: {egress: {log: "off"}}
  child: {extends: [p1, p2]}
  child2: {extends: [p1, p2], agent_provider: claude, supervise: true}
"#;
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            agent_provider: AgentProvider::Stock(ProviderKind::Codex),
            supervise: false,
            egress: ResolvedEgress {
                log: LogMode::Off,
                ..ResolvedEgress::default()
            },
            ..default_bottle("child")
        }
    );
    assert_eq!(
        bottle(yaml, "child2"),
        manifest::ResolvedBottle {
            egress: ResolvedEgress {
                log: LogMode::Off,
                ..ResolvedEgress::default()
            },
            ..default_bottle("child2")
        }
    );
}

#[test]
fn string_extends_equals_one_element_list() {
    let yaml = r#"
bottles:
  base: {env: {A: "1"}, supervise: false}
  s: {extends: base}
  l: {extends: [base]}
"#;
    let mut s = bottle(yaml, "s");
    let l = bottle(yaml, "l");
    s.name = "l".into();
    assert_eq!(s, l);
}

#[test]
fn deep_chain_child_wins_over_grandparent() {
    let yaml = r#"
bottles:
  a: {env: {X: a, Y: a}, supervise: false}
  b: {extends: a, env: {X: b}}
  c: {extends: b, env: {Y: c}, supervise: true}
"#;
    assert_eq!(
        bottle(yaml, "c"),
        manifest::ResolvedBottle {
            env: env(&[("X", "b"), ("Y", "c")]),
            ..default_bottle("c")
        }
    );
}

#[test]
fn template_provider_dockerfile_relative_to_manifest() {
    let m = manifest::Manifest::from_yaml(
        "/proj/bot-bottle.yaml",
        "bottles:\n  a: {agent_provider: {template: codex, dockerfile: ./docker/Dockerfile}}\n  b: {agent_provider: {template: claude, dockerfile: ~/Dockerfile}}\n",
        Some(std::path::Path::new("/home/u")),
    );
    assert_eq!(
        m.bottle("a").unwrap().agent_provider,
        AgentProvider::Template {
            template: ProviderKind::Codex,
            dockerfile: PathBuf::from("/proj/docker/Dockerfile"),
        }
    );
    assert_eq!(
        m.bottle("b").unwrap().agent_provider,
        AgentProvider::Template {
            template: ProviderKind::Claude,
            dockerfile: PathBuf::from("/home/u/Dockerfile"),
        }
    );
}

#[test]
fn upstream_ca_concatenated_without_repeats() {
    let m = manifest::Manifest::from_yaml(
        "/proj/bot-bottle.yaml",
        "bottles:\n  p: {egress: {upstream_ca: [corp.pem]}}\n  c: {extends: p, egress: {upstream_ca: [corp.pem, /etc/extra.pem]}}\n",
        None,
    );
    assert_eq!(
        m.bottle("c").unwrap().egress,
        ResolvedEgress {
            upstream_ca: vec![
                PathBuf::from("/proj/corp.pem"),
                PathBuf::from("/etc/extra.pem")
            ],
            ..ResolvedEgress::default()
        }
    );
}

#[test]
fn resources_per_field_last_wins_defaults_fill_the_rest() {
    let yaml = r#"
bottles:
  p1: {resources: {cpus: 1.5, memory: 2GiB, pids: 512}}
  p2: {resources: {memory: 1GiB, dangerously_allow_unenforced: true}}
  child:
    extends: [p1, p2]
    resources: {pids: 256}
  lone: {resources: {cpus: 4}, dangerously_run_as_host_root: true}
"#;
    assert_eq!(
        bottle(yaml, "child"),
        manifest::ResolvedBottle {
            resources: manifest::ResolvedResources {
                millicpus: 1500,
                memory_bytes: 1 << 30,
                pids: 256,
                dangerously_allow_unenforced: true,
            },
            ..default_bottle("child")
        }
    );
    assert_eq!(
        bottle(yaml, "lone"),
        manifest::ResolvedBottle {
            resources: manifest::ResolvedResources {
                millicpus: 4000,
                ..manifest::ResolvedResources::default()
            },
            dangerously_run_as_host_root: true,
            ..default_bottle("lone")
        }
    );
    assert_eq!(
        manifest::ResolvedResources::default(),
        manifest::ResolvedResources {
            millicpus: 2000,
            memory_bytes: 4 << 30,
            pids: 1024,
            dangerously_allow_unenforced: false,
        }
    );
}

#[test]
fn show_prints_resources_as_written_and_the_dangerous_keys_only_when_set() {
    let yaml = "bottles:\n  a:\n    resources: {cpus: 1.5, memory: 1.5GiB, pids: 100, dangerously_allow_unenforced: true}\n    dangerously_run_as_host_root: true\n  b: {}\n";
    let shown = |name: &str| {
        let text = bottle(yaml, name).to_yaml().unwrap();
        let from = text.find("resources:").unwrap();
        text[from..].to_owned()
    };
    assert_eq!(
        shown("a"),
        "resources:\n  cpus: 1.5\n  memory: 1536MiB\n  pids: 100\n  dangerously_allow_unenforced: true\ndangerously_run_as_host_root: true\n"
    );
    assert_eq!(
        shown("b"),
        "resources:\n  cpus: 2\n  memory: 4GiB\n  pids: 1024\n"
    );
}

#[test]
fn kubernetes_per_field_last_wins_and_show_prints_it_only_when_set() {
    let yaml = r#"
bottles:
  team: {kubernetes: {namespace: agents, registry: registry.example.com/team, home_size: 5Gi, sandbox: false}}
  child:
    extends: team
    kubernetes: {runtime_class: gvisor, namespace: ci, home_size: 10Gi, storage_class: fast}
  plain: {}
"#;
    let child = bottle(yaml, "child");
    assert_eq!(
        child.kubernetes,
        manifest::ResolvedKubernetes {
            namespace: Some("ci".into()),
            runtime_class: Some("gvisor".into()),
            registry: Some("registry.example.com/team".into()),
            home_size: Some("10Gi".into()),
            storage_class: Some("fast".into()),
            sandbox: Some(false),
        }
    );
    let text = child.to_yaml().unwrap();
    let from = text.find("kubernetes:").unwrap();
    assert_eq!(
        &text[from..],
        "kubernetes:\n  namespace: ci\n  runtime_class: gvisor\n  registry: registry.example.com/team\n  home_size: 10Gi\n  storage_class: fast\n  sandbox: false\n"
    );
    assert!(
        !bottle(yaml, "plain")
            .to_yaml()
            .unwrap()
            .contains("kubernetes")
    );
}
