//! The Kubernetes objects of one bottle, as pure functions of a [`PodPlan`] (snapshot-tested
//! below, no cluster needed; `start --dry-run` prints them).
//!
//! Per bottle `<identity>`, all named `bot-bottle-<identity>` in the bottle's namespace:
//!
//! | object | what |
//! |---|---|
//! | `Pod` | init `network` (nftables), native sidecar `sidecar` (the bundle), init `workspace` (clones through the gate), container `agent` |
//! | `Secret` | the bundle's files (config, CA key, tokens): mounted into the sidecar alone |
//! | `ConfigMap` | the nftables rules, the agent's read-only files and its home's first contents |
//! | `PersistentVolumeClaim` `bot-bottle-<identity>-home` | with `kubernetes.home_size` only: the agent's home, kept for `resume` |
//!
//! The sidecar is a *native sidecar* (an init container with `restartPolicy: Always`,
//! Kubernetes ≥ 1.29): it starts before the workspace is cloned (which goes through its
//! git gate), keeps running beside the agent, and is stopped once the agent ends. The
//! Secret and the ConfigMap are owned by the Pod once it exists ([`owned_by`]), so deleting
//! the Pod deletes them.
//!
//! A bottle that takes a pod from a warm pool has none of these: its pod is the pool's
//! (`<pool>-<suffix>`), made from the template's generic pod, and its one object is the
//! `SandboxClaim` named `bot-bottle-<identity>` ([`super::pool`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, ExecAction, KeyToPath,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use super::nft;
use crate::spec::Resources;

/// `app.kubernetes.io/managed-by` value on every object of ours: `list` and `cleanup` select
/// on it.
pub const MANAGED_BY: &str = "bot-bottle";
/// The bottle identity an object belongs to.
pub const LABEL_IDENTITY: &str = "bot-bottle.org/identity";
/// The launcher (`<machine id>/<boot id>:<pid>:<start time>`), so `cleanup` on the same
/// machine can tell an orphan from a running bottle (an annotation: it does not fit a label).
pub const ANNOTATION_LAUNCHER: &str = "bot-bottle.org/launcher";
/// Which home (`<machine id>/<hash of $BOT_BOTTLE_HOME>`) a home claim belongs to, so that
/// `cleanup` judges only the claims of bottles whose state it can see.
pub const ANNOTATION_HOME: &str = "bot-bottle.org/home";
/// Where the bundle's files (the Secret) appear in the sidecar container.
pub const SIDECAR_DIR: &str = "/run/bot-bottle/sidecar";
/// Warm pools (issue 21): the loopback port a warm pod's sidecar takes its config on, once
/// (`bot-bottle intake`, the bundle crate's `intake` module; not a dependency here: the port is the
/// contract). Never a sidecar port, so the pod's packet filter refuses it to the agent's uid.
pub const INTAKE_PORT: u16 = 3198;
/// Warm pools: the directory the sidecar bundle publishes the agent's plan into
/// (`bot-bottle sidecar --plan FILE --plan-dir DIR`, once every sidecar is ready); an
/// `emptyDir` the sidecar mounts read-write and the agent read-only.
pub const PLAN_DIR: &str = "/run/bot-bottle/plan";
/// Warm pools: the name, among the files the launcher sends, of the script the sidecar
/// container runs once `intake` has written them into [`SIDECAR_DIR`] (the cold pod's
/// sidecar script, with the `--plan` flags).
pub const START_SCRIPT: &str = "start.sh";
/// The key of the bottle's operator token (supervise's operator port) among the bundle's
/// files: the laptop's relay reads it from the bottle's Secret once `start` is gone. A warm
/// bottle's Secret holds this key alone ([`operator_secret`]).
pub const OPERATOR_TOKEN_KEY: &str = "operator-token";
/// Warm pools: the pod annotation the launcher's claim carries (in the SandboxClaim's
/// `spec.additionalPodMetadata.annotations`; agent-sandbox's controllers copy it onto the
/// adopted pod): the lowercase hex SHA-256 of the launch's intake token
/// (`bundle::intake::IntakeToken::annotation_value`; the same text as
/// `bundle::intake::TOKEN_ANNOTATION`). The warm pod's `intake` admits only the sender of
/// that token.
pub const INTAKE_TOKEN_ANNOTATION: &str = "bot-bottle.org/intake-sha256";
/// Warm pools: where the warm pod's sidecar mounts its `downwardAPI` volume
/// ([`podinfo_volume`]), read-only.
pub const PODINFO_DIR: &str = "/run/bot-bottle/podinfo";
/// Warm pools: the file of that volume holding the pod's annotations, one `key="value"` per
/// line (the kubelet rewrites it when the pod's annotations change).
pub const ANNOTATIONS_FILE: &str = "annotations";
/// The name of the `downwardAPI` volume in a warm pod.
pub const PODINFO_VOLUME: &str = "podinfo";
/// Where the init container finds the nftables rules.
pub const RULES_DIR: &str = "/run/bot-bottle/network";
/// The ConfigMap key of the rules.
pub const RULES_KEY: &str = "rules.nft";
/// Where the home's first contents are mounted for the seeding init container.
const HOME_SEED_DIR: &str = "/run/bot-bottle/home-seed";

/// The agent's container (the one `start` attaches to).
pub const AGENT_CONTAINER: &str = "agent";
/// The agent's command waits for this line on its stdin before it runs: `start` sends it
/// once attached, so no output is written before anyone reads it (the API server's attach
/// only carries what is written after it connects). The line is read by the shell and
/// never reaches the agent; a closed stdin instead of it ends the container (exit 125,
/// the agent never ran).
pub const START_LINE: &[u8] = b"\n";
/// The shell wrapper of the agent's command (see [`START_LINE`]).
const START_GATE: &str = "IFS= read -r _ || exit 125; exec \"$@\"";

/// The name of every object of a bottle.
pub fn object_name(identity: &str) -> String {
    format!("bot-bottle-{identity}")
}

/// The name of a bottle's home claim (`kubernetes.home_size`).
pub fn home_claim_name(identity: &str) -> String {
    format!("bot-bottle-{identity}-home")
}

/// The agent's home kept in a PersistentVolumeClaim for `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeVolume {
    /// The claim's size (`10Gi`).
    pub size: String,
    /// Its StorageClass; the cluster's default when `None`.
    pub storage_class: Option<String>,
    /// The [`ANNOTATION_HOME`] value.
    pub owner: String,
}

/// A file the agent reads (read-only, e.g. the bottle CA certificate) or finds in its home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFile {
    /// Absolute path inside the agent container ([`PodPlan::home_files`]: relative to home).
    pub inside: String,
    pub content: Vec<u8>,
}

/// The sidecar bundle's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarPlan {
    pub image: String,
    /// Command (the image's entrypoint when empty).
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Readiness: a command run inside the sidecar (`bot-bottle sidecar --check`).
    pub ready_check: Option<Vec<String>>,
    /// The bundle's files by name, mounted under [`SIDECAR_DIR`]. In `--dry-run` output only
    /// the names are shown.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Everything the objects are made from (the launch spec plus the cluster settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub identity: String,
    pub namespace: String,
    /// `runtimeClassName` (e.g. `gvisor`, `kata`); the cluster's default when `None`.
    pub runtime_class: Option<String>,
    pub agent_image: String,
    /// The image of the `network` init container (needs `nft`); the sidecar's by default.
    pub init_image: String,
    pub agent_uid: u32,
    pub agent_gid: u32,
    pub sidecar_uid: u32,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The agent's working directory (the workspace, an `emptyDir`).
    pub workdir: String,
    /// The agent's home directory.
    pub home: String,
    /// A PersistentVolumeClaim ([`home_claim_name`]) that keeps the home for `resume`; an
    /// `emptyDir` when `None`. A claim found from an earlier run is mounted as it is (the
    /// plan then has no `home_files`: the home is the agent's already).
    pub home_volume: Option<HomeVolume>,
    /// Files mounted read-only into the agent (absolute paths).
    pub files: Vec<AgentFile>,
    /// Files copied into the home before the agent starts (paths relative to the home).
    pub home_files: Vec<AgentFile>,
    /// `git clone` URL and directory (relative to the workspace) per repository, cloned
    /// through the git gate before the agent starts.
    pub clones: Vec<(String, String)>,
    /// The sidecar's ports on `127.0.0.1`, the only ones the agent reaches.
    pub ports: Vec<u16>,
    pub resources: Resources,
    pub interactive: bool,
    /// The [`ANNOTATION_LAUNCHER`] value.
    pub launcher: String,
    /// The pod's `terminationGracePeriodSeconds`: how long the kubelet lets the sidecar
    /// bundle drain after SIGTERM before it kills it (the launcher derives it from the
    /// bundle's shutdown bound).
    pub termination_grace: std::time::Duration,
    pub sidecar: SidecarPlan,
}

/// One bottle's objects, in the order they are shown (and the Pod is created first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BottleObjects {
    pub pod: Pod,
    pub secret: Secret,
    pub config_map: ConfigMap,
    /// The home's claim (`kubernetes.home_size`), created before the pod unless it exists.
    pub home_claim: Option<PersistentVolumeClaim>,
    /// The agent-sandbox `Sandbox` whose pod template is [`BottleObjects::pod`]
    /// ([`BottleObjects::as_sandbox`]): created instead of the pod, whose controller then
    /// creates the pod.
    pub sandbox: Option<Sandbox>,
}

/// The API group of agent-sandbox (github.com/kubernetes-sigs/agent-sandbox).
pub const SANDBOX_GROUP: &str = "agents.x-k8s.io";
/// Its resource of one sandbox.
pub const SANDBOX_PLURAL: &str = "sandboxes";
/// The versions of `Sandbox` whose `spec.podTemplate` is the one written here, best first
/// (the first the cluster serves is used).
pub const SANDBOX_VERSIONS: [&str; 2] = ["v1beta1", "v1alpha1"];
/// The Sandbox annotation in which its controller names the pod it made (or adopted).
pub const SANDBOX_POD_NAME: &str = "agents.x-k8s.io/pod-name";

/// An agent-sandbox `Sandbox`, as much of it as a bottle uses: metadata, the pod template
/// (labels, annotations, spec), and the status the controller reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SandboxSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SandboxStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    #[serde(default)]
    pub pod_template: SandboxPodTemplate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SandboxPodTemplate {
    #[serde(default)]
    pub metadata: SandboxPodMetadata,
    #[serde(default)]
    pub spec: PodSpec,
}

/// Only labels and annotations of a pod template's metadata are used by the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SandboxPodMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SandboxStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SandboxCondition>,
}

/// A status condition (`Ready`, `Finished`, ...), the fields a bottle reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SandboxCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Sandbox {
    /// The name of the pod its controller made: the annotation it sets, `None` before.
    pub fn pod_name(&self) -> Option<String> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SANDBOX_POD_NAME))
            .cloned()
    }

    /// The condition `type_` of its status.
    pub fn condition(&self, type_: &str) -> Option<&SandboxCondition> {
        self.status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == type_)
    }
}

impl BottleObjects {
    /// The bottle as an agent-sandbox `Sandbox` of API version `version`: named, labelled
    /// and annotated as the pod, its pod template exactly the pod (security contexts, init
    /// containers, the Secret's volume), so the controller's pod is the one built here.
    pub fn as_sandbox(&mut self, version: &str) {
        let pod = &self.pod;
        self.sandbox = Some(Sandbox {
            api_version: format!("{SANDBOX_GROUP}/{version}"),
            kind: "Sandbox".to_owned(),
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: SandboxSpec {
                pod_template: SandboxPodTemplate {
                    metadata: SandboxPodMetadata {
                        labels: pod.metadata.labels.clone(),
                        annotations: pod.metadata.annotations.clone(),
                    },
                    spec: pod.spec.clone().unwrap_or_default(),
                },
            },
            status: None,
        });
    }
}

impl BottleObjects {
    /// The objects as a multi-document YAML stream, as `kubectl apply -f` reads it. With
    /// `redact`, the Secret's values are replaced by `<redacted>` (`--dry-run` output is
    /// printed and may be pasted into tickets; the values are credentials).
    pub fn to_yaml(&self, redact: bool) -> Result<String, serde_saphyr::ser::Error> {
        let mut secret = self.secret.clone();
        if redact {
            secret.string_data = secret.data.take().map(|data| {
                data.into_keys()
                    .map(|k| (k, "<redacted>".to_owned()))
                    .collect()
            });
        }
        let first = match &self.sandbox {
            Some(sandbox) => serde_saphyr::to_string(sandbox)?,
            None => serde_saphyr::to_string(&self.pod)?,
        };
        let mut docs = vec![
            first,
            serde_saphyr::to_string(&secret)?,
            serde_saphyr::to_string(&self.config_map)?,
        ];
        if let Some(claim) = &self.home_claim {
            docs.push(serde_saphyr::to_string(claim)?);
        }
        Ok(docs.join("---\n"))
    }
}

/// An invalid plan, said with the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

pub(super) fn labels(identity: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
        ("app.kubernetes.io/name".to_owned(), "bot-bottle".to_owned()),
        (LABEL_IDENTITY.to_owned(), identity.to_owned()),
    ])
}

/// The label selector of every object of ours (`Some(identity)`: of one bottle).
pub fn selector(identity: Option<&str>) -> String {
    let mut s = format!("app.kubernetes.io/managed-by={MANAGED_BY}");
    if let Some(identity) = identity {
        s.push_str(&format!(",{LABEL_IDENTITY}={identity}"));
    }
    s
}

fn meta(plan: &PodPlan) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(&plan.identity)),
        namespace: Some(plan.namespace.clone()),
        labels: Some(labels(&plan.identity)),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_LAUNCHER.to_owned(),
            plan.launcher.clone(),
        )])),
        ..Default::default()
    }
}

/// The Secret of a bottle started in a warm pool's pod: its operator token alone (never
/// mounted: the pod got its files through the intake), owned by pod `pod_name` so that it
/// goes with the pod, so that the laptop's relay reaches the bottle's supervise once its
/// `start` is gone, as it does a cold bottle's (whose Secret holds every file).
pub fn operator_secret(
    identity: &str,
    namespace: &str,
    launcher: &str,
    token: &[u8],
    pod_name: &str,
    pod_uid: &str,
) -> Secret {
    let mut metadata = ObjectMeta {
        name: Some(object_name(identity)),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(identity)),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_LAUNCHER.to_owned(),
            launcher.to_owned(),
        )])),
        ..Default::default()
    };
    owned_by(&mut metadata, pod_name, pod_uid);
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            OPERATOR_TOKEN_KEY.to_owned(),
            ByteString(token.to_vec()),
        )])),
        string_data: None,
    }
}

/// Makes `meta` owned by the pod (name and uid as the API server returned them).
pub fn owned_by(meta: &mut ObjectMeta, pod_name: &str, pod_uid: &str) {
    owned_by_kind(meta, "v1", "Pod", pod_name, pod_uid);
}

/// Makes `meta` owned by an object of `kind` (a pod, or the bottle's `Sandbox`, whose
/// deletion deletes its pod and what it owns).
pub fn owned_by_kind(meta: &mut ObjectMeta, api_version: &str, kind: &str, name: &str, uid: &str) {
    meta.owner_references = Some(vec![OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }]);
}

/// The hardening every long-running container gets: its own non-root uid, no capability, no
/// privilege escalation, read-only root, the runtime's default seccomp profile.
pub(super) fn confined(uid: u32, gid: u32) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(i64::from(uid)),
        run_as_group: Some(i64::from(gid)),
        run_as_non_root: Some(true),
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

pub(super) fn empty_dir(name: &str, memory: bool, size: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_owned()),
            size_limit: Some(Quantity(size.to_owned())),
        }),
        ..Default::default()
    }
}

/// Warm pools: the sidecar's `downwardAPI` volume of the pod's annotations and its
/// read-only mount at [`PODINFO_DIR`] (file [`ANNOTATIONS_FILE`]), from which `bot-bottle
/// intake --claim-annotations` learns the claim's [`INTAKE_TOKEN_ANNOTATION`]. Only the
/// sidecar container mounts it. The file holds no secret (a hash), mode 0444 so that the
/// sidecar's uid reads it whatever the runtime's owner.
pub fn podinfo_volume() -> (Volume, VolumeMount) {
    let volume = Volume {
        name: PODINFO_VOLUME.to_owned(),
        downward_api: Some(DownwardAPIVolumeSource {
            default_mode: Some(0o444),
            items: Some(vec![DownwardAPIVolumeFile {
                path: ANNOTATIONS_FILE.to_owned(),
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: "metadata.annotations".to_owned(),
                }),
                mode: Some(0o444),
                resource_field_ref: None,
            }]),
        }),
        ..Default::default()
    };
    (volume, mount(PODINFO_VOLUME, PODINFO_DIR, true))
}

/// Warm pools: the first step of the warm template's sidecar script (the contract between
/// the template, the `intake` command and the launcher): `intake` takes the claimer's
/// config on `127.0.0.1:`[`INTAKE_PORT`] into [`SIDECAR_DIR`], admitting only the token
/// whose SHA-256 is the pod's [`INTAKE_TOKEN_ANNOTATION`], read from the annotations file
/// of [`podinfo_volume`]. The script goes on (`&&`) with any steps of its own and ends with
/// `exec /bin/sh` [`SIDECAR_DIR`]`/`[`START_SCRIPT`]. `exe` is the `bot-bottle` binary in
/// the sidecar image.
pub fn intake_step(exe: &str) -> String {
    format!(
        "{exe} intake --listen 127.0.0.1:{INTAKE_PORT} --dir {SIDECAR_DIR} \
         --claim-annotations {PODINFO_DIR}/{ANNOTATIONS_FILE}"
    )
}

pub(super) fn env_list(env: &BTreeMap<String, String>) -> Vec<EnvVar> {
    env.iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect()
}

/// The agent's limits: requests equal limits (the scheduler reserves what the bottle may
/// use). `pids` has no per-pod field: the kubelet's `podPidsLimit` bounds it (README).
pub(super) fn agent_resources(r: &Resources) -> ResourceRequirements {
    let q = BTreeMap::from([
        ("cpu".to_owned(), Quantity(format!("{}m", r.millicpus))),
        ("memory".to_owned(), Quantity(r.memory_bytes.to_string())),
    ]);
    ResourceRequirements {
        limits: Some(q.clone()),
        requests: Some(q),
        ..Default::default()
    }
}

/// The sidecar's fixed share (the bundle is small; its limits keep a busy agent's proxy
/// from starving the node).
pub(super) fn sidecar_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("128Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("1".to_owned())),
            ("memory".to_owned(), Quantity("512Mi".to_owned())),
        ])),
        ..Default::default()
    }
}

/// The key of the `n`th agent file in the ConfigMap (keys may not hold `/`).
fn file_key(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n}")
}

/// Checks what the objects cannot express safely (the manifest's settings were validated
/// when it was read; these are the launch's own values).
pub(super) fn check(plan: &PodPlan) -> Result<(), PlanError> {
    if plan.agent_uid == 0 {
        return Err(PlanError(
            "the agent's uid is 0; kubernetes bottles never run the agent as root".into(),
        ));
    }
    if plan.sidecar_uid == 0 || plan.sidecar_uid == plan.agent_uid {
        return Err(PlanError(format!(
            "the sidecar's uid ({}) must be neither 0 nor the agent's ({}): the pod's packet filter tells them apart by uid",
            plan.sidecar_uid, plan.agent_uid
        )));
    }
    if plan.ports.is_empty() {
        return Err(PlanError(
            "the bottle has no sidecar port; the agent would have no way out at all".into(),
        ));
    }
    if plan.argv.is_empty() {
        return Err(PlanError("the agent's command is empty".into()));
    }
    for file in plan.files.iter() {
        if !file.inside.starts_with('/') {
            return Err(PlanError(format!(
                "agent file `{}` is not an absolute path",
                file.inside
            )));
        }
    }
    for file in plan.home_files.iter() {
        if file.inside.starts_with('/') || file.inside.split('/').any(|c| c == ".." || c.is_empty())
        {
            return Err(PlanError(format!(
                "home file `{}` must be a relative path without `..`",
                file.inside
            )));
        }
    }
    Ok(())
}

/// The objects of one bottle.
pub fn bottle_objects(plan: &PodPlan) -> Result<BottleObjects, PlanError> {
    check(plan)?;
    let name = object_name(&plan.identity);
    let rules = nft::ruleset(plan.agent_uid, plan.sidecar_uid, &plan.ports)
        .ok_or_else(|| PlanError("no packet filter for these uids and ports".into()))?;

    let mut config_data = BTreeMap::from([(RULES_KEY.to_owned(), rules)]);
    let mut binary_data = BTreeMap::new();
    let mut put = |key: String, content: &[u8]| match std::str::from_utf8(content) {
        Ok(text) => {
            config_data.insert(key, text.to_owned());
        }
        Err(_) => {
            binary_data.insert(key, ByteString(content.to_vec()));
        }
    };
    for (n, f) in plan.files.iter().enumerate() {
        put(file_key("file", n), &f.content);
    }
    for (n, f) in plan.home_files.iter().enumerate() {
        put(file_key("home", n), &f.content);
    }
    let config_map = ConfigMap {
        metadata: meta(plan),
        data: Some(config_data),
        binary_data: (!binary_data.is_empty()).then_some(binary_data),
        immutable: Some(true),
    };
    let secret = Secret {
        metadata: meta(plan),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(
            plan.sidecar
                .files
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        string_data: None,
    };

    let network = Container {
        name: "network".to_owned(),
        image: Some(plan.init_image.clone()),
        command: Some(vec![
            "nft".to_owned(),
            "-f".to_owned(),
            format!("{RULES_DIR}/{RULES_KEY}"),
        ]),
        volume_mounts: Some(vec![mount("config", RULES_DIR, true)]),
        security_context: Some(SecurityContext {
            // Root with NET_ADMIN alone, for the one command; it exits before the agent runs.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(vec!["NET_ADMIN".to_owned()]),
            }),
            ..confined(0, 0)
        }),
        ..Default::default()
    };
    let mut config_items = vec![KeyToPath {
        key: RULES_KEY.to_owned(),
        path: RULES_KEY.to_owned(),
        mode: None,
    }];
    for (n, f) in plan.home_files.iter().enumerate() {
        config_items.push(KeyToPath {
            key: file_key("home", n),
            path: format!("home-seed/{}", f.inside),
            mode: None,
        });
    }
    for n in 0..plan.files.len() {
        config_items.push(KeyToPath {
            key: file_key("file", n),
            path: file_key("file", n),
            mode: None,
        });
    }

    let sidecar = Container {
        name: "sidecar".to_owned(),
        image: Some(plan.sidecar.image.clone()),
        args: (!plan.sidecar.argv.is_empty()).then(|| plan.sidecar.argv.clone()),
        env: Some(env_list(&plan.sidecar.env)),
        // A native sidecar: started before the workspace init, stopped after the agent.
        restart_policy: Some("Always".to_owned()),
        startup_probe: plan.sidecar.ready_check.as_ref().map(|command| Probe {
            exec: Some(ExecAction {
                command: Some(command.clone()),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(120),
            ..Default::default()
        }),
        readiness_probe: plan.sidecar.ready_check.as_ref().map(|command| Probe {
            exec: Some(ExecAction {
                command: Some(command.clone()),
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("sidecar", SIDECAR_DIR, true),
            mount("sidecar-tmp", "/tmp", false),
        ]),
        resources: Some(sidecar_resources()),
        security_context: Some(confined(plan.sidecar_uid, plan.sidecar_uid)),
        ..Default::default()
    };

    let mut init_containers = vec![network, sidecar];
    let agent_sc = confined(plan.agent_uid, plan.agent_gid);
    if !plan.home_files.is_empty() {
        init_containers.push(Container {
            name: "home".to_owned(),
            image: Some(plan.agent_image.clone()),
            command: Some(vec![
                "cp".to_owned(),
                // `-L`: the ConfigMap's files are symlinks into its data directory.
                "-RL".to_owned(),
                format!("{HOME_SEED_DIR}/."),
                plan.home.clone(),
            ]),
            volume_mounts: Some(vec![
                mount("home", &plan.home, false),
                VolumeMount {
                    sub_path: Some("home-seed".to_owned()),
                    ..mount("config", HOME_SEED_DIR, true)
                },
            ]),
            security_context: Some(agent_sc.clone()),
            ..Default::default()
        });
    }
    if !plan.clones.is_empty() {
        // One `git clone` per repository; URLs and directories come in through the
        // environment, never spliced into the script.
        let script = plan
            .clones
            .iter()
            .enumerate()
            .map(|(n, _)| format!("git clone -- \"$url{n}\" \"$dir{n}\""))
            .collect::<Vec<_>>()
            .join(" && ");
        let mut env = plan.env.clone();
        for (n, (url, dir)) in plan.clones.iter().enumerate() {
            env.insert(format!("url{n}"), url.clone());
            env.insert(format!("dir{n}"), dir.clone());
        }
        init_containers.push(Container {
            name: "workspace".to_owned(),
            image: Some(plan.agent_image.clone()),
            command: Some(vec!["/bin/sh".to_owned(), "-ec".to_owned(), script]),
            working_dir: Some(plan.workdir.clone()),
            env: Some(env_list(&env)),
            volume_mounts: Some(agent_mounts(plan)),
            security_context: Some(agent_sc.clone()),
            ..Default::default()
        });
    }

    let mut command = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        START_GATE.to_owned(),
        // `$0` of the wrapper; the agent's argv follows as `$@`.
        AGENT_CONTAINER.to_owned(),
    ];
    command.extend(plan.argv.iter().cloned());
    let agent = Container {
        name: AGENT_CONTAINER.to_owned(),
        image: Some(plan.agent_image.clone()),
        command: Some(command),
        env: Some(env_list(&plan.env)),
        working_dir: Some(plan.workdir.clone()),
        // Always a stdin: the start line comes through it; closed when `start` detaches.
        stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(plan.interactive),
        volume_mounts: Some(agent_mounts(plan)),
        resources: Some(agent_resources(&plan.resources)),
        security_context: Some(agent_sc),
        ..Default::default()
    };

    let home_volume = match &plan.home_volume {
        Some(_) => Volume {
            name: "home".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: home_claim_name(&plan.identity),
                read_only: Some(false),
            }),
            ..Default::default()
        },
        None => empty_dir("home", false, "10Gi"),
    };
    let pod = Pod {
        metadata: meta(plan),
        spec: Some(PodSpec {
            // No service-account token, no service links (addresses of the namespace's
            // services in the environment), nothing of the node's.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            share_process_namespace: Some(false),
            restart_policy: Some("Never".to_owned()),
            // Explicit, not the API server's default: the sidecar bundle's shutdown after the
            // kubelet's SIGTERM (its last audit lines, the operator's last round) must fit.
            termination_grace_period_seconds: Some(
                i64::try_from(plan.termination_grace.as_secs()).unwrap_or(i64::MAX),
            ),
            runtime_class_name: plan.runtime_class.clone(),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            init_containers: Some(init_containers),
            containers: vec![agent],
            volumes: Some(vec![
                Volume {
                    name: "sidecar".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name.clone()),
                        // Readable by the sidecar's uid. Only the sidecar container mounts
                        // this volume, and containers share no mount or PID namespace.
                        default_mode: Some(0o444),
                        optional: Some(false),
                        items: None,
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "config".to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.clone(),
                        default_mode: Some(0o444),
                        optional: Some(false),
                        items: Some(config_items),
                    }),
                    ..Default::default()
                },
                home_volume,
                empty_dir("workspace", false, "20Gi"),
                empty_dir("tmp", true, "1Gi"),
                empty_dir("sidecar-tmp", true, "256Mi"),
            ]),
            ..Default::default()
        }),
        status: None,
    };
    let home_claim = plan.home_volume.as_ref().map(|home| {
        let mut metadata = meta(plan);
        metadata.name = Some(home_claim_name(&plan.identity));
        metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_HOME.to_owned(), home.owner.clone());
        PersistentVolumeClaim {
            metadata,
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: home.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(home.size.clone()),
                    )])),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    });
    Ok(BottleObjects {
        pod,
        secret,
        config_map,
        home_claim,
        sandbox: None,
    })
}

/// The agent's volumes: workspace, home, `/tmp`, and its read-only files one by one.
fn agent_mounts(plan: &PodPlan) -> Vec<VolumeMount> {
    let mut mounts = vec![
        mount("workspace", &plan.workdir, false),
        mount("home", &plan.home, false),
        mount("tmp", "/tmp", false),
    ];
    for (n, f) in plan.files.iter().enumerate() {
        mounts.push(VolumeMount {
            sub_path: Some(file_key("file", n)),
            ..mount("config", &f.inside, true)
        });
    }
    mounts
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn plan() -> PodPlan {
        PodPlan {
            identity: "claude-1a2b3".into(),
            namespace: "agents".into(),
            runtime_class: Some("gvisor".into()),
            agent_image: "registry.example/bot-bottle/agent-claude:0123456789ab".into(),
            init_image: "registry.example/bot-bottle/sidecar:0123456789ab".into(),
            agent_uid: 1000,
            agent_gid: 1000,
            sidecar_uid: 1001,
            argv: vec!["claude".into()],
            env: BTreeMap::from([
                ("HOME".into(), "/home/agent".into()),
                ("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into()),
            ]),
            workdir: "/workspace".into(),
            home: "/home/agent".into(),
            home_volume: None,
            files: vec![AgentFile {
                inside: "/etc/ssl/certs/ca-certificates.crt".into(),
                content: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            }],
            home_files: vec![AgentFile {
                inside: ".gitconfig".into(),
                content: b"[user]\n\tname = agent\n".to_vec(),
            }],
            clones: vec![("http://127.0.0.1:3129/app.git".into(), "app".into())],
            ports: vec![3128, 3129, 3130],
            resources: Resources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                allow_unenforced: false,
            },
            interactive: true,
            launcher: "0f0e/boot:4242:99".into(),
            termination_grace: std::time::Duration::from_secs(45),
            sidecar: SidecarPlan {
                image: "registry.example/bot-bottle/sidecar:0123456789ab".into(),
                argv: vec![
                    "bot-bottle".into(),
                    "sidecar".into(),
                    "--config".into(),
                    format!("{SIDECAR_DIR}/sidecar.json"),
                ],
                env: BTreeMap::from([("RUST_LOG".into(), "info".into())]),
                ready_check: Some(vec![
                    "bot-bottle".into(),
                    "sidecar".into(),
                    "--config".into(),
                    format!("{SIDECAR_DIR}/sidecar.json"),
                    "--check".into(),
                ]),
                files: BTreeMap::from([
                    ("sidecar.json".into(), b"{}".to_vec()),
                    ("token-github".into(), b"ghp_not_a_real_token".to_vec()),
                ]),
            },
        }
    }

    #[test]
    fn the_objects_of_a_bottle() {
        let objects = bottle_objects(&plan()).unwrap();
        insta::assert_snapshot!("bottle_objects", objects.to_yaml(false).unwrap());
    }

    #[test]
    fn the_objects_of_a_bottle_whose_home_is_kept_in_a_claim() {
        let mut p = plan();
        p.home_volume = Some(HomeVolume {
            size: "10Gi".into(),
            storage_class: Some("fast".into()),
            owner: "0f0e/0123456789abcdef".into(),
        });
        let objects = bottle_objects(&p).unwrap();
        let yaml = objects.to_yaml(true).unwrap();
        let docs: Vec<&str> = yaml.split("\n---\n").collect();
        assert_eq!(docs.len(), 4, "{yaml}");
        let claim: PersistentVolumeClaim = serde_saphyr::from_str(docs[3]).unwrap();
        assert_eq!(Some(&claim), objects.home_claim.as_ref());
        insta::assert_snapshot!("home_claim", docs[3]);
        let volume = objects
            .pod
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "home")
            .unwrap();
        assert_eq!(
            volume.persistent_volume_claim.unwrap().claim_name,
            "bot-bottle-claude-1a2b3-home"
        );
    }

    #[test]
    fn the_printed_objects_parse_back_as_kubernetes_types_and_redact_the_secret() {
        let objects = bottle_objects(&plan()).unwrap();
        let yaml = objects.to_yaml(true).unwrap();
        assert!(!yaml.contains("ghp_not_a_real_token"), "{yaml}");
        // Documents are separated by `---` lines (block scalars indent theirs).
        let docs: Vec<&str> = yaml.split("\n---\n").collect();
        assert_eq!(docs.len(), 3, "{yaml}");
        let pod: Pod = serde_saphyr::from_str(docs[0]).unwrap();
        assert_eq!(pod, objects.pod);
        let secret: Secret = serde_saphyr::from_str(docs[1]).unwrap();
        assert_eq!(secret.data, None);
        assert_eq!(
            secret.string_data.unwrap().get("token-github").unwrap(),
            "<redacted>"
        );
        let config_map: ConfigMap = serde_saphyr::from_str(docs[2]).unwrap();
        assert_eq!(config_map, objects.config_map);
        // Unredacted, the Secret round-trips exactly (base64 data).
        let plain = objects.to_yaml(false).unwrap();
        let secret: Secret =
            serde_saphyr::from_str(plain.split("\n---\n").nth(1).unwrap()).unwrap();
        assert_eq!(secret, objects.secret);
    }

    #[test]
    fn only_the_sidecar_mounts_the_secret_and_the_agent_is_confined() {
        let objects = bottle_objects(&plan()).unwrap();
        let spec = objects.pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        let every: Vec<&Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        let with_secret: Vec<&str> = every
            .iter()
            .filter(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "sidecar")
            })
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(with_secret, vec!["sidecar"]);
        let agent = &spec.containers[0];
        let sc = agent.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(1000));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        // Only the network init container holds a capability, and only NET_ADMIN.
        let with_caps: Vec<(&str, Vec<String>)> = every
            .iter()
            .filter_map(|c| {
                let add = c
                    .security_context
                    .as_ref()?
                    .capabilities
                    .as_ref()?
                    .add
                    .clone()?;
                Some((c.name.as_str(), add))
            })
            .collect();
        assert_eq!(with_caps, vec![("network", vec!["NET_ADMIN".to_owned()])]);
    }

    #[test]
    fn unsafe_plans_are_refused_with_the_reason() {
        let mut p = plan();
        p.agent_uid = 0;
        assert!(
            bottle_objects(&p)
                .unwrap_err()
                .0
                .contains("never run the agent as root")
        );
        let mut p = plan();
        p.sidecar_uid = p.agent_uid;
        assert!(
            bottle_objects(&p)
                .unwrap_err()
                .0
                .contains("tells them apart by uid")
        );
        let mut p = plan();
        p.ports.clear();
        assert!(
            bottle_objects(&p)
                .unwrap_err()
                .0
                .contains("no sidecar port")
        );
        let mut p = plan();
        p.home_files[0].inside = "../etc/passwd".into();
        assert!(bottle_objects(&p).unwrap_err().0.contains("without `..`"));
    }

    /// The warm pod's sidecar volume: the pod's annotations through the downward API, one
    /// file, read-only, at the path the contract command reads.
    #[test]
    fn the_podinfo_volume_carries_the_annotations_file_read_only() {
        let (volume, mount) = podinfo_volume();
        let json = serde_json::to_value(&volume).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "podinfo",
                "downwardAPI": {
                    "defaultMode": 0o444,
                    "items": [{
                        "path": "annotations",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"},
                        "mode": 0o444,
                    }],
                },
            })
        );
        assert_eq!(mount.name, volume.name);
        assert_eq!(mount.mount_path, PODINFO_DIR);
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            intake_step("/usr/local/bin/bot-bottle"),
            "/usr/local/bin/bot-bottle intake --listen 127.0.0.1:3198 --dir /run/bot-bottle/sidecar \
             --claim-annotations /run/bot-bottle/podinfo/annotations"
        );
    }
}
