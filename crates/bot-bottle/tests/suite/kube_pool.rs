//! `bot-bottle pool apply AGENT --dry-run`, run as the built binary: the agent's warm
//! template and pool as YAML that parse back, holding nothing of a bottle, made of the same
//! images and packet filter as the pod `start --dry-run` prints for the same manifest.

use std::path::Path;
use std::process::Command;

use backend::kubernetes::pool::{SandboxTemplate, SandboxWarmPool};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};

const MANIFEST: &str = r#"
bottles:
  dev:
    resources: {cpus: 1.5, memory: 2GiB}
    kubernetes:
      namespace: agents
      runtime_class: gvisor
      registry: registry.example.com/team
agents:
  coder: {bottle: dev, prompt: fix the tests}
"#;

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    std::fs::write(dir.join("bot-bottle.yaml"), MANIFEST).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(args)
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
fn pool_apply_dry_run_prints_a_generic_template_of_the_pod_start_would_make() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, yaml, stderr) = run(
        tmp.path(),
        &["pool", "apply", "coder", "--replicas", "3", "--dry-run"],
    );
    assert_eq!(code, 0, "{stderr}");
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    let template: SandboxTemplate = serde_saphyr::from_str(docs[0]).unwrap();
    let pool: SandboxWarmPool = serde_saphyr::from_str(docs[1]).unwrap();
    assert_eq!(pool.spec.replicas, Some(3));
    assert_eq!(
        pool.spec.sandbox_template_ref.name,
        template.metadata.name.clone().unwrap()
    );
    assert_eq!(template.metadata.namespace.as_deref(), Some("agents"));
    assert_eq!(
        template.spec.network_policy_management.as_deref(),
        Some("Unmanaged")
    );
    // Nothing of a bottle: no key, no prompt, no identity.
    for word in ["sk-ant-", "fix the tests", "coder-"] {
        assert!(!yaml.contains(word), "{word} in:\n{yaml}");
    }
    // The same images, runtime class and packet filter as the cold pod.
    let (code, cold, stderr) = run(
        tmp.path(),
        &["start", "coder", "--backend", "kubernetes", "--dry-run"],
    );
    assert_eq!(code, 0, "{stderr}");
    let cold: Vec<&str> = cold.split("\n---\n").collect();
    let pod: Pod = serde_saphyr::from_str(cold[0]).unwrap();
    let config_map: ConfigMap = serde_saphyr::from_str(cold[2]).unwrap();
    let cold_spec = pod.spec.unwrap();
    let warm_spec = &template.spec.pod_template.spec;
    assert_eq!(warm_spec.containers[0].image, cold_spec.containers[0].image);
    assert_eq!(warm_spec.runtime_class_name, cold_spec.runtime_class_name);
    let images = |s: &k8s_openapi::api::core::v1::PodSpec| -> Vec<Option<String>> {
        s.init_containers
            .iter()
            .flatten()
            .filter(|c| c.name == "network" || c.name == "sidecar")
            .map(|c| c.image.clone())
            .collect()
    };
    assert_eq!(images(warm_spec), images(&cold_spec));
    let rules = warm_spec.init_containers.as_ref().unwrap()[0]
        .env
        .as_ref()
        .unwrap()[0]
        .value
        .clone()
        .unwrap();
    assert_eq!(rules, config_map.data.unwrap()["rules.nft"]);
    // A pool for starts without a terminal is another pool.
    let (_, other, _) = run(
        tmp.path(),
        &["pool", "apply", "coder", "--no-tty", "--dry-run"],
    );
    let other: SandboxTemplate =
        serde_saphyr::from_str(other.split("\n---\n").next().unwrap()).unwrap();
    assert_ne!(other.metadata.name, template.metadata.name);
    // Nothing was created: no state, no home.
    assert!(!tmp.path().join("bbhome").exists());
}

#[test]
fn pool_apply_without_a_cluster_says_how_to_reach_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(tmp.path(), &["pool", "apply", "coder"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("kubeconfig") || stderr.contains("Kubernetes API"),
        "{stderr}"
    );
}
