//! `bot-bottle start AGENT --backend kubernetes --dry-run`, run as the built binary: prints
//! the Pod, Secret and ConfigMap as YAML that parse as Kubernetes objects, with the
//! manifest's `kubernetes:` settings, no secret value, and nothing created on the machine.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};

const MANIFEST: &str = r#"
bottles:
  dev:
    git-gate:
      user: {name: Bot, email: bot@example.com}
      repos:
        app:
          url: ssh://git@git.example.com/org/app.git
          key: {provider: gitea, forge_token_env: GITEA_TOKEN}
          host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    resources: {cpus: 1.5, memory: 2GiB}
    kubernetes:
      namespace: agents
      runtime_class: gvisor
      registry: registry.example.com/team
agents:
  coder: {bottle: dev, prompt: fix the tests}
"#;

fn dry_run(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    dry_run_of(dir, MANIFEST, extra)
}

fn dry_run_of(dir: &Path, manifest: &str, extra: &[&str]) -> (i32, String, String) {
    std::fs::write(dir.join("bot-bottle.yaml"), manifest).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["start", "coder", "--backend", "kubernetes", "--dry-run"])
        .args(extra)
        .current_dir(dir)
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_BACKEND")
        .env("BOT_BOTTLE_HOME", dir.join("bbhome"))
        .env("HOME", dir.join("home"))
        .env("ANTHROPIC_API_KEY", "sk-ant-not-a-real-key-0123456789")
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn dry_run_prints_the_pod_secret_and_config_map_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, yaml, stderr) = dry_run(tmp.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !yaml.contains("sk-ant-not-a-real-key"),
        "a secret was printed:\n{yaml}"
    );
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 3, "{yaml}");
    let pod: Pod = serde_saphyr::from_str(docs[0]).unwrap();
    let secret: Secret = serde_saphyr::from_str(docs[1]).unwrap();
    let config_map: ConfigMap = serde_saphyr::from_str(docs[2]).unwrap();
    assert_eq!(pod.metadata.namespace.as_deref(), Some("agents"));
    let spec = pod.spec.unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    let agent = &spec.containers[0];
    assert!(
        agent
            .image
            .as_deref()
            .unwrap()
            .starts_with("registry.example.com/team/bot-bottle/agent-claude:"),
        "{agent:?}"
    );
    assert_eq!(
        agent.command.as_ref().unwrap().last().map(String::as_str),
        Some("fix the tests")
    );
    let limits = agent.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "1500m");
    // The gate's clone of the repository fills the workspace before the agent starts.
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, vec!["network", "sidecar", "home", "workspace"]);
    // The Secret lists the bundle's files without values; the ConfigMap has the rules.
    assert_eq!(secret.data, None);
    let listed = secret.string_data.unwrap();
    for key in ["sidecar.json", "ca-key.pem", "routes.yaml", "gate.yaml"] {
        assert!(listed.contains_key(key), "{key} missing: {listed:?}");
    }
    // The sidecar's script puts them in place and runs the bundle (as `start` does).
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "sidecar")
        .unwrap();
    let script = &sidecar.args.as_ref().unwrap()[2];
    assert!(
        script.contains("exec /usr/local/bin/bot-bottle sidecar --config"),
        "{script}"
    );
    assert!(config_map.data.unwrap()["rules.nft"].contains("meta skuid 1000"));
    // The kubelet waits out the sidecar bundle's whole shutdown, not the default 30 s.
    assert_eq!(spec.termination_grace_period_seconds, Some(66));
    // Nothing was created: no state, no home.
    assert!(!tmp.path().join("bbhome").exists());
    assert!(!tmp.path().join("home").exists());
}

#[test]
fn dry_run_is_for_the_kubernetes_backend_only() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bot-bottle.yaml"), MANIFEST).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["start", "coder", "--backend", "docker", "--dry-run"])
        .current_dir(tmp.path())
        .env("BOT_BOTTLE_HOME", tmp.path().join("bbhome"))
        .env("HOME", tmp.path().join("home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("add `--backend kubernetes`"), "{stderr}");
}

/// With `kubernetes.home_size` the home is a claim of its own, printed as a fourth object
/// and mounted by the pod.
#[test]
fn dry_run_prints_the_home_claim_when_the_home_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = MANIFEST.replace(
        "      registry: registry.example.com/team\n",
        "      registry: registry.example.com/team\n      home_size: 5Gi\n      storage_class: fast\n",
    );
    let (code, yaml, stderr) = dry_run_of(tmp.path(), &manifest, &[]);
    assert_eq!(code, 0, "{stderr}");
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 4, "{yaml}");
    let pod: Pod = serde_saphyr::from_str(docs[0]).unwrap();
    let claim: PersistentVolumeClaim = serde_saphyr::from_str(docs[3]).unwrap();
    let name = claim.metadata.name.unwrap();
    assert!(
        name.starts_with("bot-bottle-coder-") && name.ends_with("-home"),
        "{name}"
    );
    let spec = claim.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "5Gi"
    );
    let home = pod
        .spec
        .unwrap()
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "home")
        .unwrap();
    assert_eq!(home.persistent_volume_claim.unwrap().claim_name, name);
    assert!(!tmp.path().join("bbhome").exists());
}

/// `kubernetes.sandbox: true` prints the agent-sandbox `Sandbox` in the pod's place: named
/// and labelled as the pod, its pod template the hardened pod (runtime class, no token, the
/// `network` init container, the Secret mounted by the sidecar alone). Unset, the pod is
/// printed with a note saying a Sandbox wraps it where the cluster serves that API; `false`
/// prints the pod alone.
#[test]
fn dry_run_prints_the_sandbox_in_the_pods_place_when_the_manifest_asks_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let with = |value: &str| {
        MANIFEST.replace(
            "      registry: registry.example.com/team\n",
            &format!("      registry: registry.example.com/team\n      sandbox: {value}\n"),
        )
    };
    let (code, yaml, stderr) = dry_run_of(tmp.path(), &with("true"), &[]);
    assert_eq!(code, 0, "{stderr}");
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 3, "{yaml}");
    let sandbox: serde_json::Value = serde_saphyr::from_str(docs[0]).unwrap();
    assert_eq!(sandbox["apiVersion"], "agents.x-k8s.io/v1beta1", "{yaml}");
    assert_eq!(sandbox["kind"], "Sandbox");
    assert_eq!(sandbox["metadata"]["namespace"], "agents");
    let name = sandbox["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("bot-bottle-coder-"), "{name}");
    assert_eq!(
        sandbox["spec"]["podTemplate"]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "bot-bottle"
    );
    let spec: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(sandbox["spec"]["podTemplate"]["spec"].clone()).unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        inits,
        vec!["network", "sidecar", "home", "workspace"],
        "{yaml}"
    );
    let secret_mounts: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "sidecar")
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(secret_mounts, vec!["sidecar"], "{yaml}");
    let secret: Secret = serde_saphyr::from_str(docs[1]).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some(name));

    let (code, yaml, stderr) = dry_run_of(tmp.path(), MANIFEST, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        yaml.starts_with("# kubernetes.sandbox is not set"),
        "{yaml}"
    );
    let pod: Pod = serde_saphyr::from_str(yaml.split("\n---\n").next().unwrap()).unwrap();
    assert_eq!(pod.metadata.namespace.as_deref(), Some("agents"));

    let (code, yaml, stderr) = dry_run_of(tmp.path(), &with("false"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(yaml.starts_with("apiVersion: v1\n"), "{yaml}");
    assert!(!tmp.path().join("bbhome").exists());
}
