//! Warm pools (issue 21): the agent-sandbox extension objects of a bottle's pool — its
//! `SandboxTemplate`, `SandboxWarmPool` and the `SandboxClaim` a `start` takes a pod with
//! (`extensions.agents.x-k8s.io/v1beta1`, field names as in agent-sandbox's
//! `extensions/api/v1beta1/*_types.go` at 2fd412d5) — and what a warm pod is sent once
//! claimed.
//!
//! The template's pod ([`warm_pod`]) is the cold pod made generic: the same images,
//! hardened spec, uids, resources, runtime class and `network` init container with the
//! same rules (the sidecar ports are fixed per template; the rules are in the init
//! container's environment, there being no ConfigMap), and nothing of any bottle — no
//! Secret, no ConfigMap, no `workspace` or `home` init container, no bottle label. Its
//! sidecar waits for the bottle's config on [`INTAKE_PORT`] (`bot-bottle intake`, which
//! admits only the sender whose token hashes to the pod's
//! [`objects::INTAKE_TOKEN_ANNOTATION`], given by the claim and read from a downward API
//! file only the sidecar mounts: [`objects::intake_step`], [`objects::podinfo_volume`]),
//! copies the agent's read-only files into their directories, then runs the
//! [`START_SCRIPT`] it was sent; its agent waits for a plan in [`PLAN_DIR`]
//! ([`super::warm::WAITER`]). The agent's read-only files (the CA bundle, the bottle's CA)
//! cannot be mounted one by one from volumes filled after the pod started, so each of their
//! directories is an `emptyDir` of its own that the sidecar writes and the agent mounts
//! read-only (the agent sees only the bottle's files there, where the cold pod lays one file
//! over the image's directory). The home's first files are written by the plan itself.
//!
//! The template's hash ([`WarmTemplate::hash`]: of its pod spec) labels the template and
//! the pool ([`LABEL_TEMPLATE`]): `start` looks for a pool of the hash of the pod it would
//! build now, and checks the pod it is given against that pod ([`super::podcheck`]) all
//! the same — the label is the cluster's word, the spec is what bounds the agent.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Capabilities, Container, Pod, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::objects::{
    self, AGENT_CONTAINER, INTAKE_PORT, PLAN_DIR, PlanError, PodPlan, SIDECAR_DIR, START_SCRIPT,
    SandboxCondition, SandboxPodMetadata, SandboxPodTemplate,
};
use super::{nft, warm};

/// The API group of agent-sandbox's extensions (templates, warm pools, claims).
pub const EXT_GROUP: &str = "extensions.agents.x-k8s.io";
/// The one version whose claims name a warm pool (`spec.warmPoolRef`; `v1alpha1` claims
/// name a template instead).
pub const EXT_VERSION: &str = "v1beta1";
/// The label carrying a template's hash, on the template, its pool and the pool's pods.
pub const LABEL_TEMPLATE: &str = "bot-bottle.org/warm-template";
/// The annotation naming the claim a warm bottle's pod was taken with (`cleanup` deletes
/// an orphan through it).
pub const ANNOTATION_CLAIM: &str = "bot-bottle.org/claim";
/// `bot-bottle` in the sidecar image (cold and warm pods alike; the launcher's `POD_EXE` is this).
pub const POD_EXE: &str = "/usr/local/bin/bot-bottle";
/// Where the warm sidecar writes the agent's read-only files: one directory per directory
/// of the agent's, by index.
const AGENT_FILES_DIR: &str = "/run/bot-bottle/agent-files";
/// A warm sidecar's environment (the cold sidecar's, less the operator's logging settings).
const SIDECAR_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/tmp"),
];
/// The most a warm pod's intake takes: bytes of content, and files (`bundle::intake`'s
/// `MAX_BYTES` and `MAX_FILES`; the launcher's tests check they agree). A config over them is
/// a cold start, said, never a claim whose send fails.
pub const SEND_MAX_BYTES: usize = 1024 * 1024;
pub const SEND_MAX_FILES: usize = 64;
/// The name, among the files sent, of the agent's plan.
pub const PLAN_SENT: &str = warm::PLAN_FILE;

/// The extension objects a bottle uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExtKind {
    Template,
    WarmPool,
    Claim,
}

impl ExtKind {
    pub fn kind(self) -> &'static str {
        match self {
            ExtKind::Template => "SandboxTemplate",
            ExtKind::WarmPool => "SandboxWarmPool",
            ExtKind::Claim => "SandboxClaim",
        }
    }

    /// As kubectl names the resource (`sandboxclaim`).
    pub fn noun(self) -> &'static str {
        match self {
            ExtKind::Template => "sandboxtemplate",
            ExtKind::WarmPool => "sandboxwarmpool",
            ExtKind::Claim => "sandboxclaim",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ExtKind::Template => "sandboxtemplates",
            ExtKind::WarmPool => "sandboxwarmpools",
            ExtKind::Claim => "sandboxclaims",
        }
    }

    pub fn api_version() -> String {
        format!("{EXT_GROUP}/{EXT_VERSION}")
    }
}

/// A name, as the extension objects refer to each other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameRef {
    pub name: String,
}

/// `SandboxTemplate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplate {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SandboxTemplateSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    #[serde(default)]
    pub pod_template: SandboxPodTemplate,
    /// `Unmanaged`: the pod's own packet filter confines the agent; the controller's
    /// default `Managed` policy would point the pod's resolvers at public DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy_management: Option<String>,
}

/// `SandboxWarmPool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPool {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SandboxWarmPoolSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SandboxWarmPoolStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub sandbox_template_ref: NameRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStrategy {
    #[serde(rename = "type")]
    pub type_: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
}

/// `SandboxClaim`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaim {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SandboxClaimSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SandboxClaimStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimSpec {
    #[serde(default)]
    pub warm_pool_ref: NameRef,
    #[serde(default)]
    pub additional_pod_metadata: SandboxPodMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxClaimStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SandboxCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<ClaimedSandbox>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimedSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl SandboxClaim {
    /// The Sandbox the claim controller gave it, `None` before it binds.
    pub fn sandbox_name(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.sandbox.as_ref())
            .and_then(|s| s.name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

impl SandboxWarmPool {
    pub fn ready_replicas(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.ready_replicas)
    }
}

/// A bottle's warm template: its pod and the hash that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmTemplate {
    /// The pod every Sandbox of the pool is made from (labelled with the hash only).
    pub pod: Pod,
    /// 16 hex of the sha256 of the pod's spec.
    pub hash: String,
    /// The agent's read-only files (inside path) by the directory index they go to.
    files: Vec<(String, usize)>,
}

/// Why a launch cannot take a warm pod whatever the cluster has: the settings or files a
/// template cannot be made for (`None`: it can).
pub fn cold_reason(plan: &PodPlan) -> Option<String> {
    if plan.home_volume.is_some() {
        return Some(
            "`kubernetes.home_size` keeps the home in a claim of the bottle's own, which a warm pod made beforehand cannot mount".into(),
        );
    }
    for file in &plan.files {
        let dir = parent(&file.inside);
        let under = |root: &str| dir == root || dir.starts_with(&format!("{root}/"));
        if dir == "/"
            || under(&plan.workdir)
            || under(&plan.home)
            || under("/tmp")
            || under(PLAN_DIR)
        {
            return Some(format!(
                "the agent's read-only file `{}` is in a directory a warm pod cannot give a volume of its own",
                file.inside
            ));
        }
    }
    if plan.ports.contains(&INTAKE_PORT) {
        return Some(format!(
            "port {INTAKE_PORT} is a warm pod's config port, which the agent must not reach"
        ));
    }
    None
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((dir, _)) => dir.to_owned(),
    }
}

fn base(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, b)| b)
}

/// `value` as one single-quoted shell word.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// The sent file name of the agent's `n`th read-only file.
fn agent_file(n: usize) -> String {
    format!("agent-file-{n}")
}

/// The template's pod: the cold pod of `plan` with nothing of its bottle (see the module
/// doc). Fails as [`objects::bottle_objects`] does on a plan it refuses, and on one that
/// [`cold_reason`] names.
pub fn warm_pod(plan: &PodPlan) -> Result<WarmTemplate, PlanError> {
    objects::check(plan)?;
    if let Some(reason) = cold_reason(plan) {
        return Err(PlanError(reason));
    }
    let rules = nft::ruleset(plan.agent_uid, plan.sidecar_uid, &plan.ports)
        .ok_or_else(|| PlanError("no packet filter for these uids and ports".into()))?;
    let network = Container {
        name: "network".to_owned(),
        image: Some(plan.init_image.clone()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "printf '%s' \"$RULES\" | nft -f -".to_owned(),
        ]),
        env: Some(objects::env_list(&BTreeMap::from([(
            "RULES".to_owned(),
            rules,
        )]))),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(vec!["NET_ADMIN".to_owned()]),
            }),
            ..objects::confined(0, 0)
        }),
        ..Default::default()
    };

    // The agent's read-only files by directory.
    let dirs: Vec<String> = plan
        .files
        .iter()
        .map(|f| parent(&f.inside))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let files: Vec<(String, usize)> = plan
        .files
        .iter()
        .map(|f| {
            let dir = parent(&f.inside);
            let n = dirs.iter().position(|d| *d == dir).unwrap_or(0);
            (f.inside.clone(), n)
        })
        .collect();
    let mut steps = vec![objects::intake_step(POD_EXE)];
    for (n, (inside, dir)) in files.iter().enumerate() {
        steps.push(format!(
            "cat {SIDECAR_DIR}/{} > {}",
            agent_file(n),
            quote(&format!("{AGENT_FILES_DIR}/{dir}/{}", base(inside)))
        ));
    }
    steps.push(format!("exec /bin/sh {SIDECAR_DIR}/{START_SCRIPT}"));
    let mut sidecar_mounts = vec![
        objects::mount("sidecar", SIDECAR_DIR, false),
        objects::mount("sidecar-tmp", "/tmp", false),
        objects::mount("plan", PLAN_DIR, false),
    ];
    // The pod's annotations (the claim's token hash), for the sidecar alone.
    let (podinfo, podinfo_mount) = objects::podinfo_volume();
    sidecar_mounts.push(podinfo_mount);
    for n in 0..dirs.len() {
        sidecar_mounts.push(objects::mount(
            &format!("agent-files-{n}"),
            &format!("{AGENT_FILES_DIR}/{n}"),
            false,
        ));
    }
    // Fixed: the template is the same for every operator and launch (the operator's
    // logging settings are the sent start script's to set).
    let env: BTreeMap<String, String> = SIDECAR_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sidecar = Container {
        name: "sidecar".to_owned(),
        image: Some(plan.sidecar.image.clone()),
        args: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            steps.join(" && "),
        ]),
        env: Some(objects::env_list(&env)),
        restart_policy: Some("Always".to_owned()),
        // No probe: a probe that connects would only be refused by the intake (it
        // admits the claimer's token alone), and one that execs could only say that the
        // process runs, which the kubelet knows. The pool counts the pod ready once it runs; the bundle's readiness after
        // its config is what the agent waits for (the plan is published once every
        // sidecar is ready).
        volume_mounts: Some(sidecar_mounts),
        resources: Some(objects::sidecar_resources()),
        security_context: Some(objects::confined(plan.sidecar_uid, plan.sidecar_uid)),
        ..Default::default()
    };

    let mut agent_mounts = vec![
        objects::mount("workspace", &plan.workdir, false),
        objects::mount("home", &plan.home, false),
        objects::mount("tmp", "/tmp", false),
        objects::mount("plan", PLAN_DIR, true),
    ];
    for (n, dir) in dirs.iter().enumerate() {
        agent_mounts.push(objects::mount(&format!("agent-files-{n}"), dir, true));
    }
    let agent = Container {
        name: AGENT_CONTAINER.to_owned(),
        image: Some(plan.agent_image.clone()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            warm::WAITER.to_owned(),
            AGENT_CONTAINER.to_owned(),
            PLAN_DIR.to_owned(),
        ]),
        working_dir: Some(plan.workdir.clone()),
        stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(plan.interactive),
        volume_mounts: Some(agent_mounts),
        resources: Some(objects::agent_resources(&plan.resources)),
        security_context: Some(objects::confined(plan.agent_uid, plan.agent_gid)),
        ..Default::default()
    };

    // The cold pod's spec, for what a pod of a template keeps of it.
    let cold = objects::bottle_objects(plan)?.pod.spec.unwrap_or_default();
    let mut volumes = vec![
        objects::empty_dir("sidecar", true, "4Mi"),
        objects::empty_dir("plan", true, "8Mi"),
    ];
    for n in 0..dirs.len() {
        volumes.push(objects::empty_dir(&format!("agent-files-{n}"), true, "4Mi"));
    }
    volumes.extend([
        objects::empty_dir("home", false, "10Gi"),
        objects::empty_dir("workspace", false, "20Gi"),
        objects::empty_dir("tmp", true, "1Gi"),
        objects::empty_dir("sidecar-tmp", true, "256Mi"),
        podinfo,
    ]);
    let spec = PodSpec {
        init_containers: Some(vec![network, sidecar]),
        containers: vec![agent],
        volumes: Some(volumes),
        ..cold
    };
    let hash = spec_hash(&spec);
    let pod = Pod {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(LABEL_TEMPLATE.to_owned(), hash.clone())])),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    Ok(WarmTemplate { pod, hash, files })
}

/// 16 hex of the sha256 of a pod spec's JSON.
pub fn spec_hash(spec: &PodSpec) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(spec).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&json))[..16].to_owned()
}

/// The name of the template and the pool of a template hash.
pub fn pool_name(hash: &str) -> String {
    format!("bot-bottle-warm-{hash}")
}

/// The pool's labels: ours, and the template's hash.
fn pool_labels(hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            objects::MANAGED_BY.to_owned(),
        ),
        (LABEL_TEMPLATE.to_owned(), hash.to_owned()),
    ])
}

/// The label selector of the pools of a template hash.
pub fn pool_selector(hash: &str) -> String {
    format!(
        "app.kubernetes.io/managed-by={},{LABEL_TEMPLATE}={hash}",
        objects::MANAGED_BY
    )
}

/// The template and the pool of `replicas` warm pods of a template.
pub fn pool_objects(
    template: &WarmTemplate,
    namespace: &str,
    replicas: i32,
) -> (SandboxTemplate, SandboxWarmPool) {
    let name = pool_name(&template.hash);
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_owned()),
        labels: Some(pool_labels(&template.hash)),
        ..Default::default()
    };
    let sandbox_template = SandboxTemplate {
        api_version: ExtKind::api_version(),
        kind: ExtKind::Template.kind().to_owned(),
        metadata: meta.clone(),
        spec: SandboxTemplateSpec {
            pod_template: SandboxPodTemplate {
                metadata: SandboxPodMetadata {
                    labels: template.pod.metadata.labels.clone(),
                    annotations: None,
                },
                spec: template.pod.spec.clone().unwrap_or_default(),
            },
            network_policy_management: Some("Unmanaged".to_owned()),
        },
    };
    let pool = SandboxWarmPool {
        api_version: ExtKind::api_version(),
        kind: ExtKind::WarmPool.kind().to_owned(),
        metadata: meta,
        spec: SandboxWarmPoolSpec {
            replicas: Some(replicas),
            sandbox_template_ref: NameRef { name },
            // A changed template replaces the pool's pods (`OnReplenish` would hand out
            // ones of the older template; `start` would refuse them).
            update_strategy: Some(UpdateStrategy {
                type_: "Recreate".to_owned(),
            }),
        },
        status: None,
    };
    (sandbox_template, pool)
}

/// The template and the pool as a YAML stream (`bot-bottle pool apply --dry-run`).
pub fn pool_yaml(
    template: &SandboxTemplate,
    pool: &SandboxWarmPool,
) -> Result<String, serde_saphyr::ser::Error> {
    Ok([
        serde_saphyr::to_string(template)?,
        serde_saphyr::to_string(pool)?,
    ]
    .join("---\n"))
}

/// The claim of bottle `plan.identity` on pool `pool`: named, labelled and annotated as the
/// bottle's objects, its `additionalPodMetadata` giving the pod the bottle's labels, its
/// launcher, the claim's name and [`objects::INTAKE_TOKEN_ANNOTATION`] = `intake_sha256`
/// (the hex SHA-256 of the launch's intake token: the pod's intake admits only that token).
pub fn claim(plan: &PodPlan, pool: &str, intake_sha256: &str) -> SandboxClaim {
    let name = objects::object_name(&plan.identity);
    let labels = objects::labels(&plan.identity);
    let annotations = BTreeMap::from([
        (
            objects::ANNOTATION_LAUNCHER.to_owned(),
            plan.launcher.clone(),
        ),
        (ANNOTATION_CLAIM.to_owned(), name.clone()),
    ]);
    SandboxClaim {
        api_version: ExtKind::api_version(),
        kind: ExtKind::Claim.kind().to_owned(),
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(plan.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: SandboxClaimSpec {
            warm_pool_ref: NameRef {
                name: pool.to_owned(),
            },
            additional_pod_metadata: SandboxPodMetadata {
                labels: Some(labels),
                annotations: Some({
                    let mut pod = annotations;
                    pod.insert(
                        objects::INTAKE_TOKEN_ANNOTATION.to_owned(),
                        intake_sha256.to_owned(),
                    );
                    pod
                }),
            },
        },
        status: None,
    }
}

/// `content` as a `printf` format that writes exactly its bytes.
fn printf_bytes(content: &[u8]) -> String {
    let mut out = String::with_capacity(content.len());
    for (n, &b) in content.iter().enumerate() {
        match b {
            b'%' => out.push_str("%%"),
            // Never an option of `printf`.
            b'-' if n == 0 => out.push_str("\\055"),
            b'\'' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out
}

/// What a claimed warm pod is sent (through port-forward to [`INTAKE_PORT`]): the bundle's
/// files, the [`START_SCRIPT`], the agent's read-only files, and the plan — the home's
/// first files written into the home, then [`warm::plan_script`]. A bundle file of one of
/// those names is refused.
pub fn warm_config(
    plan: &PodPlan,
    template: &WarmTemplate,
    start_script: &str,
) -> Result<BTreeMap<String, Vec<u8>>, PlanError> {
    let mut out = plan.sidecar.files.clone();
    let mut put = |name: String, content: Vec<u8>| {
        if out.insert(name.clone(), content).is_some() {
            return Err(PlanError(format!(
                "the bundle's file `{name}` has the name of a file a warm pod is sent; rename it"
            )));
        }
        Ok(())
    };
    put(START_SCRIPT.to_owned(), start_script.as_bytes().to_vec())?;
    for (n, f) in plan.files.iter().enumerate() {
        if template.files.get(n).map(|(inside, _)| inside) != Some(&f.inside) {
            return Err(PlanError(format!(
                "the agent's read-only file `{}` is not one the template was made for",
                f.inside
            )));
        }
        put(agent_file(n), f.content.clone())?;
    }
    let mut script = String::from("set -e\n");
    for f in &plan.home_files {
        let path = format!("{}/{}", plan.home, f.inside);
        script.push_str(&format!("mkdir -p -- {}\n", quote(&parent(&path))));
        script.push_str(&format!(
            "printf '{}' > {}\n",
            printf_bytes(&f.content),
            quote(&path)
        ));
    }
    script.push_str(&warm::plan_script(
        &plan.argv,
        &plan.env,
        &plan.workdir,
        &plan.clones,
    )?);
    put(PLAN_SENT.to_owned(), script.into_bytes())?;
    let bytes: usize = out.values().map(Vec::len).sum();
    if out.len() > SEND_MAX_FILES || bytes > SEND_MAX_BYTES {
        return Err(PlanError(format!(
            "the bottle's config for a warm pod ({} files, {bytes} bytes with the home's first files written into the plan) is more than its intake takes ({SEND_MAX_FILES} files, {SEND_MAX_BYTES} bytes)",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::objects::tests::plan;

    #[test]
    fn the_template_and_pool_of_a_bottle() {
        let template = warm_pod(&plan()).unwrap();
        let (t, p) = pool_objects(&template, "agents", 2);
        insta::assert_snapshot!("warm_pool", pool_yaml(&t, &p).unwrap());
        let yaml = pool_yaml(&t, &p).unwrap();
        // Nothing of the bottle: its identity, tokens, command, files.
        for secret in [
            "claude-1a2b3",
            "ghp_",
            "claude\n",
            "BEGIN CERTIFICATE",
            "[user]",
        ] {
            assert!(!yaml.contains(secret), "{secret}: {yaml}");
        }
        // Parses back.
        let docs: Vec<&str> = yaml.split("\n---\n").collect();
        let back: SandboxTemplate = serde_saphyr::from_str(docs[0]).unwrap();
        assert_eq!(back, t);
        let back: SandboxWarmPool = serde_saphyr::from_str(docs[1]).unwrap();
        assert_eq!(back, p);
        // The template never sets the intake's token annotation (only a claim does), and
        // only the sidecar mounts the pod's annotations.
        assert!(!yaml.contains(objects::INTAKE_TOKEN_ANNOTATION), "{yaml}");
        let spec = template.pod.spec.as_ref().unwrap();
        let mounting: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == objects::PODINFO_VOLUME)
            })
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(mounting, vec!["sidecar"]);
    }

    /// The claim gives the pod the launch's token hash; the claim's own metadata need not.
    #[test]
    fn the_claim_gives_the_pod_the_intake_token_hash() {
        let hash = "ab".repeat(32);
        let claim = claim(&plan(), "bot-bottle-warm-0123", &hash);
        let pod = claim.spec.additional_pod_metadata.annotations.unwrap();
        assert_eq!(pod[objects::INTAKE_TOKEN_ANNOTATION], hash);
        assert_eq!(pod[ANNOTATION_CLAIM], "bot-bottle-claude-1a2b3");
    }

    #[test]
    fn the_hash_follows_what_bounds_the_agent_and_not_the_bottle() {
        let a = warm_pod(&plan()).unwrap();
        let mut other = plan();
        other.identity = "codex-9z8y7".into();
        other.argv = vec!["codex".into()];
        other.sidecar.files.insert("token-x".into(), b"y".to_vec());
        other.files[0].content = b"another CA".to_vec();
        other.launcher = "elsewhere".into();
        assert_eq!(warm_pod(&other).unwrap().hash, a.hash);
        for change in [
            (|p: &mut PodPlan| p.agent_image.push('x')) as fn(&mut PodPlan),
            |p| p.ports.push(4000),
            |p| p.interactive = !p.interactive,
            |p| p.runtime_class = None,
            |p| p.resources.millicpus += 1,
        ] {
            let mut p = plan();
            change(&mut p);
            assert_ne!(warm_pod(&p).unwrap().hash, a.hash);
        }
    }

    #[test]
    fn settings_a_warm_pod_cannot_serve_are_named() {
        let mut p = plan();
        p.home_volume = Some(objects::HomeVolume {
            size: "1Gi".into(),
            storage_class: None,
            owner: "x".into(),
        });
        assert!(cold_reason(&p).unwrap().contains("home_size"));
        let mut p = plan();
        p.files[0].inside = "/workspace/ca.pem".into();
        assert!(cold_reason(&p).unwrap().contains("/workspace/ca.pem"));
        let mut p = plan();
        p.ports.push(INTAKE_PORT);
        assert!(cold_reason(&p).unwrap().contains("3198"));
        assert!(warm_pod(&p).is_err());
    }

    /// The plan writes the home's first files byte for byte (quotes, `%`, `\`, binary), then
    /// runs the agent's plan; run in a real shell.
    #[test]
    fn the_sent_plan_seeds_the_home_with_exact_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = plan();
        p.home = tmp.path().join("home").display().to_string();
        p.workdir = tmp.path().display().to_string();
        p.files.clear();
        p.clones.clear();
        let tricky: Vec<u8> = b"it's 100% \\n $HOME `id`\n"
            .iter()
            .copied()
            .chain([0u8, 1, 200, 255])
            .collect();
        p.home_files = vec![objects::AgentFile {
            inside: ".claude/settings.json".into(),
            content: tricky.clone(),
        }];
        p.argv = vec!["/bin/sh".into(), "-c".into(), "echo ran > ran".into()];
        p.env = BTreeMap::from([("PATH".into(), std::env::var("PATH").unwrap())]);
        let template = warm_pod(&p).unwrap();
        let sent = warm_config(&p, &template, "exec true").unwrap();
        let keys: Vec<&String> = sent.keys().collect();
        assert_eq!(
            keys,
            vec!["plan.sh", "sidecar.json", "start.sh", "token-github"]
        );
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(String::from_utf8(sent["plan.sh"].clone()).unwrap())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(tmp.path().join("home/.claude/settings.json")).unwrap(),
            tricky
        );
        assert!(tmp.path().join("ran").exists());
        // A bundle file named as a sent one is refused.
        let mut named = p.clone();
        named.sidecar.files.insert("start.sh".into(), Vec::new());
        assert!(warm_config(&named, &template, "x").is_err());
        // More than the intake takes: refused, said (the launch starts cold).
        p.home_files[0].content = vec![0u8; 300 * 1024];
        let e = warm_config(&p, &template, "x").unwrap_err();
        assert!(e.0.contains("more than its intake takes"), "{e}");
    }
}
