//! The kubernetes backend: one bottle is one pod on a cluster the operator's kubeconfig
//! reaches; the operator's side (list, stop, cleanup, the dashboard) stays on the laptop.
//!
//! # The pod ([`objects`])
//!
//! The agent container runs as a non-root uid with no capability, no privilege escalation,
//! a read-only root, the runtime's default seccomp profile, no service-account token and the
//! manifest's `runtimeClassName` (gVisor, Kata). Beside it the sidecar bundle (egress, git
//! gate, supervise) is a native sidecar container and the only one that mounts the bottle's
//! Secret (config, CA key, tokens). Before either runs, the `network` init container installs
//! the pod's packet filter ([`nft`]): the agent's uid reaches `127.0.0.1` on the sidecar's
//! ports and nothing else — no DNS, no pod network, no node — while the sidecar's uid goes
//! out. The agent keeps the contract of every backend: the sidecars at `127.0.0.1:<port>`.
//!
//! The operator's working tree is not on the cluster: the workspace is an `emptyDir` the
//! `workspace` init container fills by cloning through the git gate, and the agent pushes its
//! work back the same way. The home is an `emptyDir`, or with `kubernetes.home_size` a
//! PersistentVolumeClaim that no pod owns: `launch` creates it on a bottle's first run and
//! mounts the one it finds on `resume` (unseeded; a claim of that name that is not this
//! bottle's is refused), [`Backend::discard`] removes it once the bottle's state is gone
//! (never while its pod runs), and `cleanup` removes those of this home's bottles whose state
//! is gone and that no pod mounts.
//!
//! # The API side ([`cluster`])
//!
//! Everything the backend asks of the API server goes through the [`Cluster`] trait: the real
//! one is kube-rs ([`client::KubeCluster`], kubeconfig and context as kubectl reads them); the
//! lifecycle is tested against an in-memory cluster ([`fake`]) that answers like an API
//! server. `launch` creates the Pod, then its Secret and ConfigMap owned by it (deleting the
//! pod deletes them), watches it until the agent runs — failing with the fix on RBAC
//! refusals, quotas, invalid objects, image pulls, unschedulable pods or a failed init
//! container, and deleting what it created — then attaches to the agent container
//! (`pods/attach`: the caller's terminal, or pipes) and releases it (`attach.rs`); `wait`
//! watches until the agent ends, takes its exit code from the pod's status and deletes the
//! pod. `stop`, `list` and `cleanup` select our pods by label (`cleanup` in the context's
//! namespace and in every one a bottle of this home recorded); `cleanup` only kills pods
//! whose launcher ran on this machine and is gone (other operators' bottles in a shared
//! namespace are never judged). [`KubernetesBackend::port_forward`] reaches a pod's loopback
//! port through the API server: the launcher's relay reaches the bundle's [`OPERATOR_PORT`]
//! so, and the laptop's dashboard shows the pod's proposals.
//!
//! The operator's side reaches the pod the launch checked and no other of its name: the
//! launch returns that pod's uid, the launcher records it ([`PodRecord::pod_uid`]), and every
//! port-forward and attach fetches the pod before and after opening it by name and refuses
//! another uid ([`ClusterError::Replaced`]; a uid never comes back, so the launched pod there
//! before and after is the pod opened). `stop` and the bottle's own end delete the pod with the
//! uid as a delete precondition. The check is the uid, not [`podcheck`] again: the uid pins the
//! object that was checked (twice, the second time running), and the relay has no built pod to
//! compare with (it runs without the launch's spec). What the uid does not cover: an image
//! patched into the same pod after the launch's second check.
//!
//! Every object of a bottle is deleted the same way, pinned by the uid the launch saw when
//! it made or took it ([`PodRecord::sandbox_uid`], [`PodRecord::claim_uid`]): the Sandbox,
//! a warm bottle's SandboxClaim, and the pod of a failed launch (the one it made or
//! checked). An object made again under the name since (another bottle, a controller
//! replacing it) is not the bottle's: the API server refuses the precondition (409), the
//! teardown leaves it, says so once in the log ([`ClusterError::ReplacedObject`]) and goes
//! on, and the launch's own error stays the one returned. The bottle's Secret and ConfigMap
//! are never deleted by name on a failed launch: they are owned by the Sandbox or pod and
//! go with it, and one of their name that is not ours (its creation refused) stays.
//! A uid is never empty: an object the launch makes or takes that the API server answered
//! without one fails the launch, naming it, before anything of the bottle's is sent, and is
//! left ([`ClusterError::NoUid`]); a recorded empty uid counts as none.
//! Nothing is deleted by its name alone: `stop` from a record of an older binary, which
//! holds the launched pod's uid but not its Sandbox's or claim's, takes those from the
//! launched pod (the Sandbox controlling it, the claim controlling that Sandbox, by uid);
//! a Sandbox or claim of the bottle's name that the launched pod does not prove the
//! bottle's (the pod gone, or not one they control) is refused before anything is deleted
//! ([`ClusterError::Unproven`], saying what to run by hand).
//! `cleanup` deletes only what it judged, each pinned by its uid: an orphan's pod and its
//! Sandbox, the claim the pod's annotation names only when it is the one that took the pod
//! (the controller of the pod's Sandbox; a claim made again under the name stays), a listed
//! Sandbox or claim, a home claim, and a Secret or ConfigMap that nothing owns, of a
//! bottle (its identity label names it) whose launcher ran here and is gone.
//!
//! # agent-sandbox
//!
//! Where the cluster serves agent-sandbox's `Sandbox` (`agents.x-k8s.io`, found by API
//! discovery: [`Cluster::sandbox_version`]) and the manifest does not say
//! `kubernetes.sandbox: false`, `launch` creates a `Sandbox` instead of the pod
//! ([`BottleObjects::as_sandbox`]: its pod template is the pod above, unchanged), owns the
//! Secret and ConfigMap by it, waits until its controller names the pod it made (the
//! Sandbox's own name; its `Ready` condition's message when it cannot) and goes on with the
//! pod as before. The controller may have adopted a pod of that name made beforehand
//! instead (an unowned one labelled `agents.x-k8s.io/adoptable: "true"`, whose spec it
//! keeps): before the Secret and ConfigMap are created, and again once the agent runs (a
//! pod's images can be patched), the pod found is compared with the pod built, field by
//! field ([`podcheck`]); one that differs fails the launch, naming the field, and is
//! deleted with its Sandbox. A plain pod is checked the same way (a pod made beforehand
//! under its name makes its creation fail: 409). A Sandbox's pod is never deleted alone
//! (the controller would make it again): every deletion goes through `delete_bottle`,
//! which deletes the Sandbox first;
//! `list` shows a Sandbox that has no pod (starting while its controller works on it, not
//! running once the controller refused or it is being deleted), and `cleanup` removes
//! pod-less Sandboxes whose launcher here is gone.
//!
//! ## Warm pools
//!
//! Where the cluster also serves agent-sandbox's extensions (`extensions.agents.x-k8s.io/v1beta1`:
//! `SandboxTemplate`, `SandboxWarmPool`, `SandboxClaim`; [`Cluster::extensions_served`]) and a
//! pool of this bottle's template has a ready pod, `launch` takes that pod through a claim
//! instead of making one. What agent-sandbox does (read at commit 2fd412d5): the pool makes
//! its Sandboxes from a `SandboxTemplate` ahead of time (`GenerateName: <pool>-`,
//! `extensions/controllers/sandboxwarmpool_controller.go:1060`); a claim adopts one by moving
//! its controller reference to the claim (`sandboxclaim_controller.go:1236`) and rewriting
//! the labels and annotations of its pod template alone (`:1296`, with the claim's
//! `additionalPodMetadata`); the pod's spec is never changed
//! (`controllers/sandbox_controller.go:1393`); a claim's `env` or `volumeClaimTemplates` force
//! a cold start (`extensions/api/v1beta1/sandboxclaim_types.go:125,132`), so a claim of ours
//! has neither; an `OnReplenish` pool hands out Sandboxes made from an older template
//! (`sandboxclaim_controller.go:923`), so ours say `Recreate`, and the pod is checked anyway;
//! a template's default `Managed` NetworkPolicy points the pod's resolvers at public DNS
//! (`sandboxtemplate_controller.go:228`), so ours say `Unmanaged`: the pod's own packet filter
//! confines the agent.
//!
//! What is built ([`pool`]):
//! * `bot-bottle pool apply AGENT` makes the template and the pool of an agent's bottle
//!   (`bot-bottle-warm-<hash>`, labelled with the hash of the template's pod spec). The
//!   template's pod is the cold pod made generic ([`pool::warm_pod`]): our images, the
//!   hardened spec, the `network` init container with the same rules (the sidecar ports are
//!   fixed per template), no Secret, no ConfigMap, no `workspace` or `home` init container,
//!   no bottle label. Its sidecar runs `bot-bottle intake` on [`objects::INTAKE_PORT`] (a
//!   loopback port that is not a sidecar port: the filter refuses it to the agent's uid;
//!   [`objects::intake_step`]), which takes one config from the claimer only: a sender
//!   whose 32-byte token hashes (SHA-256) to the pod's [`objects::INTAKE_TOKEN_ANNOTATION`],
//!   read at every connection from a downward API file that only the sidecar mounts
//!   ([`objects::podinfo_volume`]); anyone else (whoever may port-forward to the pod) is
//!   answered `refused: not claimed yet` or `refused: the token does not match`, nothing is
//!   written, and the port keeps listening. The template never sets that annotation. The
//!   sidecar then copies the agent's read-only files into per-directory `emptyDir`s the
//!   agent mounts read-only, and runs the [`objects::START_SCRIPT`] it was sent; its agent
//!   waits for a plan in [`objects::PLAN_DIR`] ([`warm`]). The sidecar has no probe: a probe
//!   that connects would only be refused, and the pool counts a pod ready once it runs.
//! * `launch` ([`KubernetesBackend::launch_pod`]) builds that template's pod for the launch
//!   and lists the pools of its hash. With one that has a ready pod, it creates a
//!   `SandboxClaim` named as the bottle (its labels and launcher annotation, the claim's
//!   name, and the hash of the launch's intake token ([`WarmSender::intake_sha256`]; the
//!   launcher keeps the token) as `additionalPodMetadata`), waits until the claim names its
//!   Sandbox and the Sandbox its pod, checks that pod against the template's pod built now
//!   ([`podcheck`]: a stale or altered template, an added container, host path or mount of
//!   the annotations, another filter port) and that it is the claim's, waits until it
//!   carries the bottle's labels, then sends the bundle's files, the start script, the
//!   agent's read-only files and the plan (the home's first files written by the plan,
//!   then [`warm::plan_script`]) with the token through the API server's port-forward to
//!   the intake ([`KubernetesConfig::warm_send`], the launcher's `bundle::intake` sender).
//!   Until the kubelet has refreshed the sidecar's file the intake answers `not claimed
//!   yet` and closes the connection: the send is tried again through a new port-forward
//!   (200 ms doubling to 2 s, for [`WarmSender::claim_wait`], then an error naming the pod,
//!   the annotation and what to check); any other refusal fails at once. Once the agent
//!   runs the pod is checked again, and the launch goes on as a cold one: attach, start
//!   line. Every failure after the claim deletes the claim (its Sandbox and pod go with
//!   it); none falls back to a cold start.
//! * Cold, with one line saying why ([`KubeBottle::start_note`], which the launcher
//!   reports): no warm start script or sender from the launcher, `kubernetes.sandbox: false`,
//!   no Sandbox or extensions API, `kubernetes.home_size`, an agent file in a directory a
//!   warm pod cannot give a volume of its own, or no pool of this template (another image,
//!   terminal, runtime class, resources or ports) with a ready pod.
//! * The bottle's record carries the pod's name (`<pool>-<suffix>`) and the claim
//!   ([`PodRecord::pod_name`], [`PodRecord::claim`]): `stop`, the relay's port-forward,
//!   `discard`, `wait` and `remove` reach the pod by that name and delete through the claim;
//!   `list` and `cleanup` find the pod by the labels its adoption gave it, and `cleanup`
//!   deletes an orphan's claim (the pod's `bot-bottle.org/claim` annotation).
//!
//! * The bottle's operator token (with supervise) also goes into a Secret of the bottle's
//!   name that holds it alone, owned by the pod and mounted nowhere
//!   ([`objects::operator_secret`]), so that the laptop's relay reaches a warm bottle whose
//!   `start` is gone as it reaches a cold one.
//!
//! Nothing of it has been run against agent-sandbox's controllers: the fake cluster
//! ([`fake`]) plays them as read.
//!
//! # What is not here yet
//!
//! `bot-bottle attach` to a cluster bottle from a second terminal. Nothing of this module has been
//! run against a real cluster from the machines it was written on (README: running on a
//! cluster).

mod attach;
pub mod client;
pub mod cluster;
pub mod fake;
pub mod nft;
pub mod objects;
pub mod podcheck;
pub mod pool;
pub mod settings;
pub mod warm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::runtime::Runtime;

use self::cluster::ObjectKind;
pub use self::cluster::{Attached, Cluster, ClusterError, PodState, PortStream, pod_state};
pub use self::objects::{AgentFile, BottleObjects, PodPlan, SidecarPlan, bottle_objects};
pub use self::settings::ClusterSettings;
use crate::preflight::{BackendStatus, Check};
use crate::spec::{BottleStdio, LaunchSpec};
use crate::{
    Backend, BackendError, BackendKind, BottleExit, BottleInfo, CleanupAction, OpenOptions,
    RunningBottle, SidecarPlacement,
};

/// The sidecar bundle's operator port on the pod's loopback: the launcher's relay reaches
/// the bottle's queue and audit log there through port-forward. It is never one of the
/// sidecar ports, so the pod's packet filter refuses it to the agent's uid ([`nft`]).
pub const OPERATOR_PORT: u16 = 3199;

/// The sidecar bundle's container, as the caller prepared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSidecar {
    pub image: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ready_check: Option<Vec<String>>,
    /// The bottle's Secret by key (the bundle's config, CA key, tokens), mounted at
    /// [`objects::SIDECAR_DIR`] in the sidecar alone. Kept in memory: the tokens are never
    /// written to the operator's disk on their way to the cluster.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Warm pools: the script the sidecar of a pod taken from a warm pool runs once its
    /// files are in [`objects::SIDECAR_DIR`] (sent as [`objects::START_SCRIPT`]); `None`
    /// never takes a warm pod.
    pub warm_script: Option<String>,
}

/// Configuration of the kubernetes backend.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub settings: ClusterSettings,
    /// The agent image as the cluster pulls it.
    pub agent_image: String,
    /// The sidecar; `launch` fails without one.
    pub sidecar: Option<KubeSidecar>,
    /// The `network` init container's image (needs `nft`); the sidecar's when `None`.
    pub init_image: Option<String>,
    pub agent_uid: u32,
    pub agent_gid: u32,
    pub sidecar_uid: u32,
    /// Repositories cloned into the workspace through the gate: (URL, directory).
    pub clones: Vec<(String, String)>,
    /// The pod's `terminationGracePeriodSeconds` (the launcher derives it from the sidecar
    /// bundle's shutdown bound; 30 s, the API server's default, otherwise).
    pub termination_grace: Duration,
    /// How long `launch` waits for the pod (image pulls included).
    pub ready_timeout: Duration,
    /// What the bottle's record says of its home claim ([`PodRecord::home_claim_state`]):
    /// unless it says none was made, a missing claim is an error, never a fresh empty home.
    pub kept_home: HomeClaimState,
    /// Warm pools: sends a claimed warm pod's sidecar its config through the port-forward
    /// to [`objects::INTAKE_PORT`] (the launcher's `bundle::intake` sender; the backend does
    /// not depend on the bundle). `None` never takes a warm pod.
    pub warm_send: Option<WarmSender>,
}

/// Sends the files (by name) on the stream with the launch's intake token and waits for the
/// bundle's answer ([`WarmSendError`] says why the bundle did not take them).
pub type WarmSend = dyn Fn(PortStream, BTreeMap<String, Vec<u8>>) -> WarmSending + Send + Sync;

/// A launch's sender of its warm pod's config (the launcher's `bundle::intake` sender, which
/// keeps the launch's intake token; the backend does not depend on the bundle and never
/// sees the token, only its hash).
#[derive(Clone)]
pub struct WarmSender {
    /// Sends on one port-forward connection.
    pub send: Arc<WarmSend>,
    /// The lowercase hex SHA-256 of the launch's intake token: the claim gives it to the pod
    /// as [`objects::INTAKE_TOKEN_ANNOTATION`], and the pod's intake admits only that token.
    pub intake_sha256: String,
    /// How long a pod that answers "not claimed yet" (the kubelet has not refreshed the
    /// sidecar's annotations file) is tried again (`bundle::intake::CLAIM_WAIT`).
    pub claim_wait: Duration,
    /// The error once `claim_wait` is spent, given the pod's name and how long it was tried
    /// (`bundle::intake::IntakeError::NeverClaimed`'s text: what to check).
    pub never_claimed: Arc<NeverClaimed>,
}

/// Says why a warm pod was never claimed, given its name and how long it was tried.
pub type NeverClaimed = dyn Fn(&str, Duration) -> String + Send + Sync;

/// A [`WarmSender`] in the config is shown as such: it is code, and the hash says nothing.
impl std::fmt::Debug for WarmSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarmSender")
    }
}

/// Why a warm pod's sidecar did not take the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmSendError {
    /// The sidecar answered `refused: not claimed yet`: the pod does not carry the claim's
    /// annotation yet (or its file is not refreshed yet); it closed the connection and
    /// keeps listening, so a new port-forward may try again.
    NotClaimedYet,
    /// Any other failure (the token refused, the connection failed, the config refused):
    /// the launch fails at once.
    Failed(String),
}

/// A [`WarmSend`] under way.
pub type WarmSending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WarmSendError>> + Send>>;

/// What a bottle's [`PodRecord`] says of its home claim (`kubernetes.home_size`), which
/// decides what a `launch` that does not find the claim does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HomeClaimState {
    /// None was made (no record: the bottle's first launch; or the last launch failed,
    /// removing the claim it made): a missing claim is made, the home seeded.
    #[default]
    NotMade,
    /// A launch got the agent running on it: a missing claim is an error.
    Made,
    /// The record does not say (written by a bot-bottle older than `home_made`, or
    /// unreadable): a missing claim may be a lost home, so it is an error too.
    Unknown,
}

impl KubernetesConfig {
    /// Defaults: agent uid/gid 1000, sidecar uid 1001, 10 minutes to get ready.
    pub fn new(settings: ClusterSettings, agent_image: impl Into<String>) -> KubernetesConfig {
        KubernetesConfig {
            settings,
            agent_image: agent_image.into(),
            sidecar: None,
            init_image: None,
            agent_uid: 1000,
            agent_gid: 1000,
            sidecar_uid: 1001,
            clones: Vec::new(),
            termination_grace: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(600),
            kept_home: HomeClaimState::NotMade,
            warm_send: None,
        }
    }
}

/// The kubernetes backend.
pub struct KubernetesBackend {
    config: KubernetesConfig,
    /// `$BOT_BOTTLE_HOME`, where `stop` finds a bottle's [`PodRecord`].
    home: Option<PathBuf>,
    runtime: Arc<Runtime>,
    /// Connected on first use (`doctor` and `--dry-run` never connect).
    cluster: Mutex<Option<Arc<dyn Cluster>>>,
    /// How clusters other than this backend's are reached (the kubeconfig's contexts; tests:
    /// in-memory ones).
    connector: Option<Arc<Connector>>,
}

/// Reaches the cluster of a (context, namespace), as a bottle's [`PodRecord`] names them.
pub type Connector =
    dyn Fn(Option<&str>, Option<&str>) -> Result<Arc<dyn Cluster>, ClusterError> + Send + Sync;

/// `bot-bottle`'s entry: the settings come with each launch's spec, so the opened backend
/// knows the kubeconfig's current context and namespace (enough for `list` and `cleanup`),
/// and `stop` finds a bottle's own context and namespace in its [`RECORD`].
pub fn open(options: &OpenOptions) -> Result<Box<dyn Backend>, BackendError> {
    let mut backend = KubernetesBackend::new(KubernetesConfig::new(
        ClusterSettings::default(),
        String::new(),
    ))?;
    backend.home = Some(options.home.clone());
    Ok(Box::new(backend))
}

/// The file in a bottle's state directory naming the context and namespace its pod is in
/// (`start` writes it; `stop` from another terminal reads it).
pub const RECORD: &str = "kubernetes.json";

/// Where a bottle's pod is: what `start` records for `stop`.
///
/// Unknown fields are refused, and that fails closed: a record this binary cannot read
/// whole is read as no record, and no record never reaches a pod by its name alone
/// (`stop`, the relay's port-forward and attach refuse without [`PodRecord::pod_uid`];
/// [`PodRecord::home_claim_state`] says [`HomeClaimState::Unknown`], so `resume` refuses an
/// empty home; `discard` and `cleanup` leave its claim and namespace alone). Upgrades are
/// not broken by it: every field added since the first is `#[serde(default)]`, so a newer
/// binary reads every older record; only a downgrade meets a field it does not know, and
/// it then refuses (saying how to reach the pod with kubectl) instead of guessing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRecord {
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// The home's claim (`kubernetes.home_size`), which outlives the pod: `discard` and
    /// the bottle's clean end remove it, and ask the cluster only when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_claim: Option<String>,
    /// Whether the home claim was made: `true` once a launch got the agent running on it,
    /// `false` after a launch that failed (it removes the claim it made). Unset while a
    /// launch that may make it runs (a launcher killed then leaves a record that does not
    /// say) and in records of older binaries: [`HomeClaimState::Unknown`]. A `resume` that
    /// does not find a claim that was, or may have been, made refuses an empty home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_made: Option<bool>,
    /// The uid of the pod the launch checked ([`podcheck`]) and got the agent running in.
    /// The operator's side reaches that pod and no other of the bottle's name: the relay's
    /// port-forward and `stop` refuse a pod made again under it ([`ClusterError::Replaced`]).
    /// Unset while a launch runs, after one that failed, and in records of older binaries:
    /// they are refused too (fail closed), saying what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's name when it is not the bottle's own (`bot-bottle-<identity>`): a pod taken
    /// from a warm pool is named `<pool>-<suffix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The `SandboxClaim` a warm pod was taken with: the bottle goes by deleting it (its
    /// Sandbox and pod go with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The uid of that claim: `stop` deletes it and no claim made again under its name
    /// (a delete precondition). Unset in records of older binaries: `stop` takes the uid of
    /// the claim that took the launched pod (the controller of its Sandbox), else refuses
    /// a claim of that name ([`ClusterError::Unproven`]); never deleted by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_uid: Option<String>,
    /// The uid of the bottle's Sandbox (cold or warm): `stop` deletes it and no Sandbox made
    /// again under its name. Unset for a plain pod; in records of older binaries, `stop`
    /// takes the uid of the Sandbox controlling the launched pod, else refuses a Sandbox of
    /// that name ([`ClusterError::Unproven`]); never deleted by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_uid: Option<String>,
}

impl PodRecord {
    /// Writes the record into `state_dir`.
    pub fn write(&self, state_dir: &Path) -> Result<(), BackendError> {
        let path = state_dir.join(RECORD);
        let text = serde_json::to_vec(self).map_err(|e| setup("record the pod", e))?;
        std::fs::write(&path, text).map_err(|source| BackendError::Io {
            action: "record where the pod is",
            path,
            source,
        })
    }

    /// The record in `state_dir`, `None` when there is none (or it is unreadable: the
    /// caller then uses the kubeconfig's context and namespace).
    pub fn read(state_dir: &Path) -> Option<PodRecord> {
        let text = std::fs::read(state_dir.join(RECORD)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// What the record in `state_dir` says of the bottle's home claim: no record, or one
    /// naming no claim, says none was made; one naming a claim says whether it was made,
    /// or does not (an older binary's). A record that is there but cannot be read says
    /// nothing either: fail closed.
    pub fn home_claim_state(state_dir: &Path) -> HomeClaimState {
        let path = state_dir.join(RECORD);
        if matches!(path.symlink_metadata(), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            return HomeClaimState::NotMade;
        }
        match PodRecord::read(state_dir) {
            None => HomeClaimState::Unknown,
            Some(r) if r.home_claim.is_none() => HomeClaimState::NotMade,
            Some(r) => match r.home_made {
                Some(true) => HomeClaimState::Made,
                Some(false) => HomeClaimState::NotMade,
                None => HomeClaimState::Unknown,
            },
        }
    }
}

fn setup(stage: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Setup {
        stage: stage.to_owned(),
        message: e.to_string(),
    }
}

fn runtime() -> Result<Runtime, BackendError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| BackendError::Process {
            action: "start the kubernetes backend's runtime",
            source,
        })
}

impl KubernetesBackend {
    /// A backend that connects with the kubeconfig on first use.
    pub fn new(config: KubernetesConfig) -> Result<KubernetesBackend, BackendError> {
        config
            .settings
            .validate()
            .map_err(BackendError::InvalidSpec)?;
        Ok(KubernetesBackend {
            config,
            home: None,
            runtime: Arc::new(runtime()?),
            cluster: Mutex::new(None),
            connector: None,
        })
    }

    /// A backend over a given cluster (tests: the in-memory one).
    pub fn with_cluster(
        config: KubernetesConfig,
        cluster: Arc<dyn Cluster>,
    ) -> Result<KubernetesBackend, BackendError> {
        let backend = KubernetesBackend::new(config)?;
        *backend.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster);
        Ok(backend)
    }

    /// `$BOT_BOTTLE_HOME`, where the bottles' records say which cluster each is in (the
    /// laptop's relay of bottles whose `start` is gone).
    pub fn with_home(mut self, home: PathBuf) -> Self {
        self.home = Some(home);
        self
    }

    /// The value of `key` in the bottle's Secret, `None` when the Secret (or the key) is
    /// not there: the pod is gone, the Secret going with it.
    pub fn secret_value(&self, identity: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let cluster = self.cluster_of(identity)?;
        let secret = self
            .runtime
            .block_on(cluster.get_secret(&objects::object_name(identity)))
            .map_err(|e| setup("read the bottle's Secret", e))?;
        Ok(secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(key))
            .map(|v| v.0))
    }

    /// The bottle's record, if there is one to read.
    fn record_of(&self, identity: &str) -> Option<PodRecord> {
        self.home
            .as_ref()
            .and_then(|home| PodRecord::read(&home.join("state").join(identity)))
    }

    /// The name of the bottle's pod (its record's, for a pod taken from a warm pool) and the
    /// claim it was taken with.
    fn pod_name_of(&self, identity: &str) -> (String, Option<String>) {
        let record = self.record_of(identity);
        let claim = record.as_ref().and_then(|r| r.claim.clone());
        let name = record
            .and_then(|r| r.pod_name)
            .unwrap_or_else(|| objects::object_name(identity));
        (name, claim)
    }

    /// Whether the bottle's pod is still there: the pod its launch checked, when its record
    /// names it (a pod made again under its name is not the bottle's).
    pub fn pod_exists(&self, identity: &str) -> Result<bool, BackendError> {
        let cluster = self.cluster_of(identity)?;
        let launched = self.launched_uid(identity, cluster.namespace()).ok();
        let (name, _) = self.pod_name_of(identity);
        self.runtime
            .block_on(cluster.get_pod(&name))
            .map(|p| match (p, launched) {
                (Some(p), Some(uid)) => p.metadata.uid.as_deref() == Some(uid.as_str()),
                (p, _) => p.is_some(),
            })
            .map_err(|e| setup("get the bottle's pod", e))
    }

    /// Tests: `$BOT_BOTTLE_HOME` (where `stop` and `cleanup` read the bottles' records) and
    /// how the clusters those records name are reached.
    pub fn with_records(mut self, home: PathBuf, connector: Arc<Connector>) -> Self {
        self.home = Some(home);
        self.connector = Some(connector);
        self
    }

    /// The cluster of a recorded (context, namespace).
    fn connect(
        &self,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Arc<dyn Cluster>, BackendError> {
        let unavailable = |e: ClusterError| BackendError::Unavailable {
            backend: BackendKind::Kubernetes,
            reason: e.to_string(),
        };
        if let Some(connector) = &self.connector {
            return connector(context, namespace).map_err(unavailable);
        }
        let connected = self
            .runtime
            .block_on(client::KubeCluster::connect(context, namespace))
            .map_err(unavailable)?;
        Ok(Arc::new(connected))
    }

    /// The (context, namespace) pairs other than this backend's that bottles of this home
    /// were started in: `cleanup` looks there too.
    fn recorded_elsewhere(&self) -> Vec<PodRecord> {
        let Some(home) = &self.home else {
            return Vec::new();
        };
        let s = &self.config.settings;
        let mut out: Vec<PodRecord> = Vec::new();
        let entries = std::fs::read_dir(home.join("state")).into_iter().flatten();
        for entry in entries.flatten() {
            if let Some(r) = PodRecord::read(&entry.path())
                && (r.context != s.context || r.namespace != s.namespace)
                && !out.contains(&r)
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (&a.context, &a.namespace).cmp(&(&b.context, &b.namespace)));
        out
    }

    fn cluster(&self) -> Result<Arc<dyn Cluster>, BackendError> {
        let mut slot = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cluster) = slot.as_ref() {
            return Ok(cluster.clone());
        }
        let s = &self.config.settings;
        let connected = self
            .runtime
            .block_on(client::KubeCluster::connect(
                s.context.as_deref(),
                s.namespace.as_deref(),
            ))
            .map_err(|e| BackendError::Unavailable {
                backend: BackendKind::Kubernetes,
                reason: e.to_string(),
            })?;
        let cluster: Arc<dyn Cluster> = Arc::new(connected);
        *slot = Some(cluster.clone());
        Ok(cluster)
    }

    /// The cluster a bottle's pod is in: the one its `start` recorded when that differs
    /// from this backend's settings.
    fn cluster_of(&self, identity: &str) -> Result<Arc<dyn Cluster>, BackendError> {
        let record = self
            .home
            .as_ref()
            .and_then(|home| PodRecord::read(&home.join("state").join(identity)));
        let s = &self.config.settings;
        match record {
            Some(r) if r.context != s.context || r.namespace != s.namespace => {
                self.connect(r.context.as_deref(), r.namespace.as_deref())
            }
            _ => self.cluster(),
        }
    }

    /// The uid of the pod the bottle's launch checked, from its record; fails closed when
    /// the record does not name one (an older binary's, a launch that did not get the agent
    /// running, or none at all): the pod of its name is then not known to be the bottle's.
    fn launched_uid(&self, identity: &str, namespace: &str) -> Result<String, BackendError> {
        let record = self
            .home
            .as_ref()
            .and_then(|home| PodRecord::read(&home.join("state").join(identity)));
        // An empty uid (recorded by a binary that turned a missing one into "") names none.
        let uid = record.and_then(|r| r.pod_uid).filter(|u| !u.is_empty());
        uid.ok_or_else(|| {
            let (pod, _) = self.pod_name_of(identity);
            setup(
                "find the bottle's pod",
                format!(
                    "bottle {identity}'s record (written by an older bot-bottle, by a launch that did not get the agent running, or missing or unreadable) does not name the pod its launch checked, so pod `{pod}` in namespace `{namespace}` is not reached by its name alone (it could be a pod made again under that name); look at it (`kubectl -n {namespace} get pod {pod} -o yaml`), delete it yourself if it is the bottle's (`kubectl -n {namespace} delete pod {pod}`), then `bot-bottle resume {identity}` or `bot-bottle discard {identity}`"
                ),
            )
        })
    }

    /// The plan of a launch, reading the files it ships (the agent's read-only files, its
    /// home's first contents, the sidecar's Secret) from the host.
    pub fn plan(&self, spec: &LaunchSpec, namespace: &str) -> Result<PodPlan, BackendError> {
        let sidecar = self.config.sidecar.as_ref().ok_or_else(|| {
            BackendError::InvalidSpec("a kubernetes bottle needs its sidecar bundle".into())
        })?;
        let mut files = Vec::new();
        for f in &spec.files {
            files.push(AgentFile {
                inside: f.inside.display().to_string(),
                content: read(&f.host)?,
            });
        }
        let mut home_files = Vec::new();
        collect(&spec.home.host, Path::new(""), &mut home_files)?;
        let sidecar_files = sidecar.files.clone();
        let shipped: usize = files
            .iter()
            .chain(&home_files)
            .map(|f| f.content.len())
            .sum::<usize>()
            .max(sidecar_files.values().map(Vec::len).sum());
        // The API server refuses objects over 1 MiB; say so before sending.
        if shipped > 900 * 1024 {
            return Err(BackendError::InvalidSpec(format!(
                "the bottle's files come to {shipped} bytes, more than a ConfigMap or Secret holds (1 MiB); keep large files out of the home directory"
            )));
        }
        Ok(PodPlan {
            identity: spec.identity.clone(),
            namespace: namespace.to_owned(),
            runtime_class: self.config.settings.runtime_class.clone(),
            agent_image: self.config.agent_image.clone(),
            init_image: self
                .config
                .init_image
                .clone()
                .unwrap_or_else(|| sidecar.image.clone()),
            agent_uid: self.config.agent_uid,
            agent_gid: self.config.agent_gid,
            sidecar_uid: self.config.sidecar_uid,
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            workdir: spec.workspace.inside.display().to_string(),
            home: spec.home.inside.display().to_string(),
            home_volume: self
                .config
                .settings
                .home_size
                .as_ref()
                .map(|size| objects::HomeVolume {
                    size: size.clone(),
                    storage_class: self.config.settings.storage_class.clone(),
                    owner: self.home_annotation(),
                }),
            files,
            home_files,
            clones: self.config.clones.clone(),
            ports: spec.forwards.iter().map(|f| f.inside_port).collect(),
            resources: spec.resources,
            interactive: spec.interactive,
            launcher: launcher_annotation(),
            termination_grace: self.config.termination_grace,
            sidecar: SidecarPlan {
                image: sidecar.image.clone(),
                argv: sidecar.argv.clone(),
                env: sidecar.env.clone(),
                ready_check: sidecar.ready_check.clone(),
                files: sidecar_files,
            },
        })
    }

    /// Creates the bottle's objects and waits until the agent runs; on any failure deletes
    /// what it created (a bottle never half-exists).
    async fn create(
        cluster: &dyn Cluster,
        objects: BottleObjects,
        fresh_claim: bool,
        timeout: Duration,
    ) -> Result<Launched, ClusterError> {
        let name = objects.pod.metadata.name.clone().unwrap_or_default();
        // The home's claim before the pod that mounts it; one found from an earlier run
        // (`resume`) is mounted as it is.
        let mut created_claim = None;
        if let Some(claim) = &objects.home_claim
            && fresh_claim
        {
            let stored = cluster.create_claim(claim).await?;
            // Its uid pins it for the deletion of a failed launch; without one it is left.
            let uid = uid_of(cluster, ObjectKind::VolumeClaim, &stored.metadata)?;
            created_claim = claim.metadata.name.clone().map(|n| (n, uid));
        }
        // With agent-sandbox, the Sandbox is created and its controller makes the pod (the
        // same pod: it is the Sandbox's template); the Secret and ConfigMap are then owned
        // by the Sandbox, deleting which deletes the pod and them.
        let (owner_api, owner_kind) = match &objects.sandbox {
            Some(sandbox) => (sandbox.api_version.clone(), "Sandbox"),
            None => ("v1".to_owned(), "Pod"),
        };
        let sandboxed = objects.sandbox.is_some();
        // What was made is pinned by its uid from here on: one answered without a uid is
        // refused (and left: nothing pins it for a deletion).
        let stored = match &objects.sandbox {
            Some(sandbox) => cluster.create_sandbox(sandbox).await.and_then(|s| {
                uid_of(cluster, ObjectKind::Sandbox, &s.metadata).map(|uid| (uid, None))
            }),
            None => cluster.create_pod(&objects.pod).await.and_then(|p| {
                uid_of(cluster, ObjectKind::Pod, &p.metadata).map(|uid| (uid, Some(p)))
            }),
        };
        let (uid, stored_pod) = match stored {
            Ok(stored) => stored,
            Err(e) => {
                delete_created_claim(cluster, created_claim.as_ref()).await;
                return Err(e);
            }
        };
        let built = &objects.pod;
        let namespace = cluster.namespace().to_owned();
        // The uid of the pod this launch made or checked: a failed launch deletes that pod
        // and no other made under its name since.
        let mut pod_seen: Option<String> = stored_pod.as_ref().map(|_| uid.clone());
        let result = async {
            // The pod the bottle is to run in, checked before anything of the bottle (its
            // Secret, its files) is sent to it: a Sandbox's controller may have adopted a
            // pod made beforehand instead of making the one built here.
            let found = match stored_pod {
                Some(pod) => pod,
                None => {
                    sandbox_pod(cluster, &name, timeout).await?;
                    cluster
                        .get_pod(&name)
                        .await?
                        .ok_or_else(|| ClusterError::SetupFailed {
                            container: "pod".into(),
                            message: "the pod was deleted while it started".into(),
                        })?
                }
            };
            // Pinned by its uid, checked, and only then sent anything.
            let checked = uid_of(cluster, ObjectKind::Pod, &found.metadata)?;
            pod_seen = Some(checked.clone());
            podcheck::check(built, &found, &namespace)?;
            let mut secret = objects.secret;
            objects::owned_by_kind(&mut secret.metadata, &owner_api, owner_kind, &name, &uid);
            cluster.create_secret(&secret).await?;
            let mut config_map = objects.config_map;
            objects::owned_by_kind(
                &mut config_map.metadata,
                &owner_api,
                owner_kind,
                &name,
                &uid,
            );
            cluster.create_config_map(&config_map).await?;
            let pod = cluster
                .watch_pod(&name, timeout, &|p| pod_state(p) != PodState::Starting)
                .await?;
            // Again as it runs: its images can be patched after it was created, and it
            // must still be the pod checked (not one made in its place since).
            if let Some(pod) = &pod {
                podcheck::check(built, pod, &namespace)?;
                if pod.metadata.uid.as_deref() != Some(checked.as_str()) {
                    return Err(ClusterError::SetupFailed {
                        container: "pod".into(),
                        message: format!(
                            "pod `{name}` in namespace `{namespace}` was deleted and made again while the bottle started (uid {checked} before, {} now), so it is not the pod checked; start the bottle again, and check who may delete and create pods in `{namespace}`",
                            pod.metadata.uid.as_deref().unwrap_or("none"),
                        ),
                    });
                }
            }
            match pod.as_ref().map(pod_state) {
                Some(PodState::Running) | Some(PodState::Ended(_)) => Ok(Launched {
                    pod_name: name.clone(),
                    pod_uid: checked,
                    sandbox_uid: sandboxed.then(|| uid.clone()),
                    claim: None,
                }),
                Some(PodState::Failed(e)) => Err(e),
                Some(PodState::Starting) | None => Err(ClusterError::SetupFailed {
                    container: "pod".into(),
                    message: "the pod was deleted while it started".into(),
                }),
            }
        }
        .await;
        if result.is_err() {
            // What this launch made, pinned by uid: a Sandbox or pod made again under the
            // name since is not the bottle's and stays (said once in the log; the launch's
            // own error is the one returned). A Sandbox's pod that never came goes with it.
            // The Secret and ConfigMap are owned by the Sandbox or pod (the garbage collector
            // takes them with it); one of their name that is not ours (its creation refused,
            // 409) is never deleted by name.
            let torn = match &pod_seen {
                Some(pod_uid) => {
                    let teardown = Teardown {
                        name: &name,
                        pod_uid,
                        sandbox_uid: sandboxed.then_some(uid.as_str()),
                        claim: None,
                    };
                    delete_bottle(cluster, Duration::ZERO, teardown).await
                }
                // No pod of the Sandbox was seen (its controller refused, or gave it
                // another): the Sandbox goes, and a pod of its name it does not control
                // (one made beforehand) is not the bottle's and stays.
                None if sandboxed => pinned(
                    cluster
                        .delete_sandbox(&name, Duration::ZERO, Some(&uid))
                        .await,
                )
                .map(|gone| gone == Some(true)),
                None => Ok(false),
            };
            if let Err(e) = torn {
                // A pod made again under the name (refused), or a call that failed: the
                // launch's own error is the one returned.
                tracing::warn!(error = %e, "a failed launch's teardown left something");
            }
            // A claim made for this launch holds nothing yet; a resumed one holds the home.
            delete_created_claim(cluster, created_claim.as_ref()).await;
        }
        result
    }

    /// Whether this launch runs a `Sandbox` (its API version) or a plain pod:
    /// `kubernetes.sandbox` decides, else whether the cluster serves the API.
    fn sandbox_choice(&self, cluster: &dyn Cluster) -> Result<Option<String>, BackendError> {
        let wanted = self.config.settings.sandbox;
        if wanted == Some(false) {
            return Ok(None);
        }
        let served = self
            .runtime
            .block_on(cluster.sandbox_version())
            .map_err(|e| setup("discover the agent-sandbox API", e))?;
        if wanted == Some(true) && served.is_none() {
            return Err(BackendError::InvalidSpec(format!(
                "the manifest says `kubernetes.sandbox: true` but the cluster serves no {}/Sandbox API (tried {}) for namespace `{}`; install agent-sandbox (github.com/kubernetes-sigs/agent-sandbox) on the cluster, or set `sandbox: false` to run a plain pod",
                objects::SANDBOX_GROUP,
                objects::SANDBOX_VERSIONS.join(", "),
                cluster.namespace()
            )));
        }
        Ok(served)
    }

    /// `launch`, as the bottle's own type: its caller can act between the agent's end and
    /// the pod's removal ([`KubeBottle::wait_agent`], [`KubeBottle::remove`]).
    pub fn launch_pod(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<KubeBottle, BackendError> {
        self.prepare(spec)?;
        let cluster = self.cluster()?;
        let mut plan = self.plan(spec, cluster.namespace())?;
        // A Sandbox or a pod, decided before anything is looked up or made.
        let sandbox = self.sandbox_choice(cluster.as_ref())?;
        // A pod of a warm pool when one matches; cold otherwise, saying why.
        let start_note = match self.warm_choice(cluster.as_ref(), &plan, sandbox.is_some()) {
            Ok(pick) => return self.launch_warm(spec, stdio, cluster, plan, pick),
            Err(reason) => {
                tracing::info!(identity = %spec.identity, %reason, "cold start");
                format!("cold start (no warm pod): {reason}")
            }
        };
        let fresh_claim = match &plan.home_volume {
            Some(_) => {
                let found = self.kept_home(cluster.as_ref(), &spec.identity)?;
                let name = objects::home_claim_name(&spec.identity);
                let ns = cluster.namespace();
                let id = &spec.identity;
                match self.config.kept_home {
                    _ if found => {}
                    HomeClaimState::NotMade => {}
                    HomeClaimState::Made => {
                        return Err(BackendError::InvalidSpec(format!(
                            "bottle {id}'s home claim `{name}` is gone from namespace `{ns}`, so resuming it would give the agent an empty home instead of the one it left; if the claim was moved, put it back as `{name}` in `{ns}` and resume again, otherwise `bot-bottle discard {id}` removes the bottle (then `bot-bottle start` a new one)"
                        )));
                    }
                    HomeClaimState::Unknown => {
                        return Err(BackendError::InvalidSpec(format!(
                            "bottle {id}'s record (written by an older bot-bottle, or unreadable) does not say whether its home claim `{name}` was made, and namespace `{ns}` has no such claim, so resuming it could give the agent an empty home instead of the one it left; if the claim was moved, put it back as `{name}` in `{ns}` and resume again; if the bottle never ran or its home can go, `bot-bottle discard {id}` removes the bottle (then `bot-bottle start` a new one)"
                        )));
                    }
                }
                if found {
                    // `resume`: the home is the agent's already, not seeded again.
                    plan.home_files.clear();
                }
                !found
            }
            None => false,
        };
        let mut objects = bottle_objects(&plan).map_err(|e| BackendError::InvalidSpec(e.0))?;
        if let Some(version) = &sandbox {
            objects.as_sandbox(version);
        }
        let timeout = self.config.ready_timeout;
        let launched = self
            .runtime
            .block_on(Self::create(
                cluster.as_ref(),
                objects,
                fresh_claim,
                timeout,
            ))
            .map_err(|e| setup("kubernetes pod", e))?;
        self.attached_bottle(spec, stdio, cluster, launched, start_note)
    }

    /// The bottle of a pod its launch made (cold) or took (warm) and checked, attached: the
    /// one place a [`KubeBottle`] is built. From here the pod exists: the bottle removes it
    /// when dropped, on any error too (the attach's included).
    fn attached_bottle(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
        cluster: Arc<dyn Cluster>,
        launched: Launched,
        start_note: String,
    ) -> Result<KubeBottle, BackendError> {
        let name = launched.pod_name.clone();
        let uid = launched.pod_uid.clone();
        let mut bottle = KubeBottle {
            identity: spec.identity.clone(),
            cluster: cluster.clone(),
            runtime: self.runtime.clone(),
            done: false,
            wired: attach::Wired::default(),
            grace: self.config.termination_grace,
            launched,
            start_note,
        };
        // The terminal goes to the pod checked, not one made again under its name since.
        let attached = self
            .runtime
            .block_on(to_launched_pod(cluster.as_ref(), &name, &uid, || {
                cluster.attach(&name, spec.interactive)
            }))
            .map_err(|e| setup("attach to the agent", e))?;
        bottle.wired = attach::wire(&self.runtime, attached, stdio, spec.interactive)?;
        Ok(bottle)
    }

    /// The warm pool this launch takes its pod from, or why it starts cold: no way to
    /// send a warm pod its config, a plain pod asked for, settings a template cannot be
    /// made for ([`pool::cold_reason`]), no extensions API, or no pool of this bottle's
    /// template with a ready pod. Nothing is created here.
    fn warm_choice(
        &self,
        cluster: &dyn Cluster,
        plan: &PodPlan,
        sandboxed: bool,
    ) -> Result<WarmPick, String> {
        let script = self
            .config
            .sidecar
            .as_ref()
            .and_then(|s| s.warm_script.clone())
            .ok_or("the launcher gave the sidecar no warm start script")?;
        if self.config.warm_send.is_none() {
            return Err("the launcher gave no way to send a warm pod its config".into());
        }
        if !sandboxed {
            return Err(if self.config.settings.sandbox == Some(false) {
                "the manifest says `kubernetes.sandbox: false` (a plain pod)".into()
            } else {
                format!(
                    "the cluster serves no {}/Sandbox API",
                    objects::SANDBOX_GROUP
                )
            });
        }
        if let Some(reason) = pool::cold_reason(plan) {
            return Err(reason);
        }
        let served = self
            .runtime
            .block_on(cluster.extensions_served())
            .map_err(|e| format!("discovering the warm pool API failed: {e}"))?;
        if !served {
            return Err(format!(
                "the cluster serves no {}/{} (agent-sandbox's warm pools)",
                pool::EXT_GROUP,
                pool::EXT_VERSION
            ));
        }
        let template = pool::warm_pod(plan).map_err(|e| e.0)?;
        let pools = self
            .runtime
            .block_on(cluster.ext_list(
                pool::ExtKind::WarmPool,
                &pool::pool_selector(&template.hash),
            ))
            .map_err(|e| format!("listing the warm pools failed: {e}"))?;
        let ready = pools
            .into_iter()
            .filter_map(|v| serde_json::from_value::<pool::SandboxWarmPool>(v).ok())
            .filter(|p| p.ready_replicas() > 0)
            .filter_map(|p| p.metadata.name)
            .min();
        // What the pod would be sent, before any claim: one it cannot take is a cold start.
        let files = pool::warm_config(plan, &template, &script).map_err(|e| e.0)?;
        let Some(pool) = ready else {
            return Err(format!(
                "no warm pool of this bottle's template ({}) in namespace `{}` has a ready pod (`bot-bottle pool apply` makes one)",
                template.hash,
                cluster.namespace()
            ));
        };
        Ok(WarmPick {
            pool,
            template,
            files,
        })
    }

    /// `launch` through a claim on a warm pool: the claim is created, the pod it is given
    /// checked against the template's pod built now and sent the bottle's config, then
    /// attached as a cold pod is. Every failure after the claim deletes it; none falls back
    /// to a cold start.
    fn launch_warm(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
        cluster: Arc<dyn Cluster>,
        plan: PodPlan,
        pick: WarmPick,
    ) -> Result<KubeBottle, BackendError> {
        let send = self
            .config
            .warm_send
            .clone()
            .ok_or_else(|| BackendError::InvalidSpec("no warm sender".into()))?;
        let claim = pool::claim(&plan, &pick.pool, &send.intake_sha256);
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let launched = self
            .runtime
            .block_on(claim_pod(
                cluster.as_ref(),
                &claim,
                &pick.template.pod,
                pick.files,
                send,
                self.config.ready_timeout,
            ))
            .map_err(|e| setup("kubernetes warm pod", e))?;
        let note = format!(
            "warm start: pod {} of pool {} (claim {claim_name})",
            launched.pod_name, pick.pool
        );
        self.attached_bottle(spec, stdio, cluster, launched, note)
    }

    /// Creates or updates the warm template and pool of a launch's bottle (the pods
    /// `launch` would take for the same spec, `replicas` of them kept ready); returns the
    /// pool's name.
    pub fn apply_pool(&self, spec: &LaunchSpec, replicas: i32) -> Result<String, BackendError> {
        self.prepare(spec)?;
        let cluster = self.cluster()?;
        let plan = self.plan(spec, cluster.namespace())?;
        let template = pool::warm_pod(&plan).map_err(|e| {
            BackendError::InvalidSpec(format!("this bottle cannot have a warm pool: {}", e.0))
        })?;
        self.apply_pool_template(&template, replicas)
    }

    /// Creates or updates the warm template and pool of `template`; returns the pool's name.
    pub fn apply_pool_template(
        &self,
        template: &pool::WarmTemplate,
        replicas: i32,
    ) -> Result<String, BackendError> {
        let cluster = self.cluster()?;
        let served = self
            .runtime
            .block_on(cluster.extensions_served())
            .map_err(|e| setup("discover the warm pool API", e))?;
        if !served {
            return Err(BackendError::InvalidSpec(format!(
                "the cluster serves no {}/{} for namespace `{}`: install agent-sandbox with its extensions (github.com/kubernetes-sigs/agent-sandbox) to keep warm pods",
                pool::EXT_GROUP,
                pool::EXT_VERSION,
                cluster.namespace()
            )));
        }
        let (template, warm_pool) = pool::pool_objects(template, cluster.namespace(), replicas);
        let name = warm_pool.metadata.name.clone().unwrap_or_default();
        let to_value = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| setup("write the warm pool", e))
        };
        let template = to_value(serde_json::to_value(&template))?;
        let warm_pool = to_value(serde_json::to_value(&warm_pool))?;
        self.runtime
            .block_on(async {
                cluster
                    .ext_apply(pool::ExtKind::Template, &template)
                    .await?;
                cluster.ext_apply(pool::ExtKind::WarmPool, &warm_pool).await
            })
            .map_err(|e| setup("apply the warm pool", e))?;
        Ok(name)
    }

    /// Deletes warm pool `name` (its unclaimed pods go with it; claimed ones are their
    /// bottles') and its template; `false` when there was neither.
    pub fn delete_pool(&self, name: &str) -> Result<bool, BackendError> {
        let cluster = self.cluster()?;
        self.runtime
            .block_on(async {
                // By name: the operator names the pool to delete (`bot-bottle pool delete`).
                let pool = cluster
                    .ext_delete(pool::ExtKind::WarmPool, name, None)
                    .await?;
                let template = cluster
                    .ext_delete(pool::ExtKind::Template, name, None)
                    .await?;
                Ok::<bool, ClusterError>(pool || template)
            })
            .map_err(|e| setup("delete the warm pool", e))
    }

    /// Whether the bottle's home claim is there from an earlier run (and is ours: a claim of
    /// that name bot-bottle did not make for this bottle is never mounted as its home).
    fn kept_home(&self, cluster: &dyn Cluster, identity: &str) -> Result<bool, BackendError> {
        let name = objects::home_claim_name(identity);
        let found = self
            .runtime
            .block_on(cluster.get_claim(&name))
            .map_err(|e| setup("find the bottle's home claim", e))?;
        let Some(claim) = found else {
            return Ok(false);
        };
        if !home_claim_of(&claim, identity) {
            return Err(BackendError::InvalidSpec(format!(
                "a PersistentVolumeClaim `{name}` exists in namespace `{}` that bot-bottle did not make for bottle {identity}; it is not mounted as the agent's home: rename or delete it (`kubectl -n {} delete pvc {name}`) if it is not needed",
                cluster.namespace(),
                cluster.namespace()
            )));
        }
        Ok(true)
    }

    /// The [`objects::ANNOTATION_HOME`] value of this backend's `$BOT_BOTTLE_HOME`.
    fn home_annotation(&self) -> String {
        home_annotation(self.home.as_deref())
    }

    /// A byte stream to `port` on the bottle's loopback (supervise, for the dashboard), in
    /// the cluster its `start` recorded.
    pub fn port_forward(
        &self,
        identity: &str,
        port: u16,
    ) -> Result<(Arc<Runtime>, PortStream), BackendError> {
        let cluster = self.cluster_of(identity)?;
        let uid = self.launched_uid(identity, cluster.namespace())?;
        let (name, _) = self.pod_name_of(identity);
        let stream = self
            .runtime
            .block_on(to_launched_pod(cluster.as_ref(), &name, &uid, || {
                cluster.port_forward(&name, port)
            }))
            .map_err(|e| setup("port-forward", e))?;
        Ok((self.runtime.clone(), stream))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|source| BackendError::Io {
        action: "read a file for the bottle",
        path: path.to_path_buf(),
        source,
    })
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, BackendError> {
    let io = |source| BackendError::Io {
        action: "read the directory",
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    Ok(entries)
}

/// The home's regular files, relative paths (symlinks are not followed).
fn collect(root: &Path, rel: &Path, out: &mut Vec<AgentFile>) -> Result<(), BackendError> {
    let dir = root.join(rel);
    if !dir.exists() {
        return Ok(());
    }
    for entry in read_dir(&dir)? {
        let kind = entry.file_type().map_err(|source| BackendError::Io {
            action: "read the type of",
            path: entry.path(),
            source,
        })?;
        let rel = rel.join(entry.file_name());
        if kind.is_dir() {
            collect(root, &rel, out)?;
        } else if kind.is_file() {
            out.push(AgentFile {
                inside: rel.display().to_string(),
                content: read(&entry.path())?,
            });
        }
    }
    Ok(())
}

/// `<machine id>/<boot id>:<pid>:<start time>` of this process.
pub fn launcher_annotation() -> String {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{machine}/{}", crate::docker::launcher_label_value())
}

/// `<machine id>/<16 hex of sha256 of $BOT_BOTTLE_HOME>` (the path itself stays on the
/// laptop); empty without a home, which `cleanup` never judges.
pub fn home_annotation(home: Option<&Path>) -> String {
    use sha2::Digest;
    let Some(home) = home else {
        return String::new();
    };
    let machine = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    // As for pods: no machine id, no judging (two such machines could not be told apart).
    if machine.is_empty() {
        return String::new();
    }
    let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    format!("{machine}/{}", &hex::encode(digest)[..16])
}

/// Whether a pod's launcher ran on this machine and is gone. Pods launched elsewhere (or with
/// no readable annotation) are never judged: in a shared namespace they are someone else's.
fn launcher_gone_here(pod: &Pod) -> bool {
    launcher_gone_here_meta(&pod.metadata)
}

/// [`launcher_gone_here`] of any object carrying the launcher's annotation (a Sandbox).
fn launcher_gone_here_meta(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    let Some(value) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(objects::ANNOTATION_LAUNCHER))
    else {
        return false;
    };
    let Some((machine, label)) = value.split_once('/') else {
        return false;
    };
    let here = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    !machine.is_empty()
        && machine == here
        && crate::docker::launcher_gone_label(Some(&label.to_owned()))
}

/// Whether a PersistentVolumeClaim is bottle `identity`'s home, as bot-bottle made it (its
/// labels): one of that name that is not is never mounted nor deleted.
fn home_claim_of(
    claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
    identity: &str,
) -> bool {
    let labels = claim.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label("app.kubernetes.io/managed-by") == Some(objects::MANAGED_BY)
        && label(objects::LABEL_IDENTITY) == Some(identity)
}

/// Deletes the home claim a failed launch made (its uid a delete precondition: one made
/// again under its name since stays); a failure is logged, the launch's error kept.
async fn delete_created_claim(cluster: &dyn Cluster, created: Option<&(String, String)>) {
    let Some((name, uid)) = created else {
        return;
    };
    if let Err(e) = pinned(cluster.delete_claim(name, Some(uid)).await) {
        tracing::warn!(error = %e, "a failed launch's home claim was not deleted");
    }
}

/// The uid the API server gave the object `meta` of `kind`, which pins it from then on (the
/// operator's reach, every deletion). One answered without a uid (or with an empty one) is
/// refused ([`ClusterError::NoUid`]): recorded as it is, an empty identity would make
/// every later comparison of uids pass or fail for the wrong reason.
fn uid_of(
    cluster: &dyn Cluster,
    kind: ObjectKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, ClusterError> {
    match meta.uid.as_deref() {
        Some(uid) if !uid.is_empty() => Ok(uid.to_owned()),
        _ => Err(ClusterError::NoUid {
            kind: kind.noun().to_owned(),
            name: meta.name.clone().unwrap_or_default(),
            namespace: cluster.namespace().to_owned(),
        }),
    }
}

/// The uid of the Sandbox controlling a pod (its controller reference), if one does.
fn sandbox_controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "Sandbox" && r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// The uid of the SandboxClaim `claim` if it is the one that took `pod`: the controller of
/// the Sandbox that controls the pod, both by uid. `None` when there is none or it is not
/// (a claim made again under the name, or one that let go of the Sandbox): it is left.
async fn claim_of_pod(
    cluster: &dyn Cluster,
    pod: &Pod,
    claim: &str,
) -> Result<Option<String>, ClusterError> {
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "Sandbox" && r.controller == Some(true))
    else {
        return Ok(None);
    };
    let Some(sandbox) = cluster.get_sandbox(&owner.name).await? else {
        return Ok(None);
    };
    if sandbox.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return Ok(None);
    }
    Ok(sandbox
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "SandboxClaim" && r.controller == Some(true) && r.name == claim)
        .map(|r| r.uid.clone()))
}

/// Whether a pod is a Sandbox's (its controller reference).
fn owned_by_sandbox(pod: &Pod) -> bool {
    sandbox_controller_uid(pod).is_some()
}

/// What a launch made or took, each with the uid that pins it: the bottle deletes these
/// objects and none made again under their names since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Launched {
    /// The pod's name (a warm pod's is `<pool>-<suffix>`; a Sandbox is named as its pod).
    pod_name: String,
    /// The uid of the pod the launch checked and got the agent running in.
    pod_uid: String,
    /// The uid of the bottle's Sandbox; `None` for a plain pod.
    sandbox_uid: Option<String>,
    /// The SandboxClaim a warm pod was taken with (the bottle goes by deleting it) and its
    /// uid, as the API server stored it.
    claim: Option<(String, String)>,
}

/// A bottle's objects as its teardown deletes them, each pinned by its uid (a delete
/// precondition): nothing is deleted by its name alone. An object whose uid is not known
/// is not in it: whoever builds one proves each uid first (the launch saw it; `cleanup`
/// judged the object; `stop` has it from the record or from the pod its launch checked).
#[derive(Debug, Clone, Copy)]
struct Teardown<'a> {
    /// The pod's name; the bottle's Sandbox has the same.
    name: &'a str,
    /// The uid of the pod the launch checked (or `cleanup` judged).
    pod_uid: &'a str,
    /// The uid of the bottle's Sandbox; `None`: a plain pod (no Sandbox is deleted).
    sandbox_uid: Option<&'a str>,
    /// A warm pod's SandboxClaim: its name and uid.
    claim: Option<(&'a str, &'a str)>,
}

impl<'a> Teardown<'a> {
    /// The teardown of what a launch made or took.
    fn of(launched: &'a Launched) -> Teardown<'a> {
        Teardown {
            name: &launched.pod_name,
            pod_uid: &launched.pod_uid,
            sandbox_uid: launched.sandbox_uid.as_deref(),
            claim: launched
                .claim
                .as_ref()
                .map(|(name, uid)| (name.as_str(), uid.as_str())),
        }
    }
}

/// Says once, in the log, that an object of the bottle's name was made again since the
/// bottle made or took it and is left where it is ([`ClusterError::ReplacedObject`]); the
/// teardown goes on, and an error that caused it stays the one returned.
fn left_alone(e: &ClusterError) {
    tracing::warn!(error = %e, "teardown leaves an object that is not the bottle's");
}

/// A pinned deletion's result, with an object made again under the name since taken for
/// what it is: not the bottle's, left ([`left_alone`]), `Ok(None)`; otherwise whether there
/// was one to delete.
fn pinned(result: Result<bool, ClusterError>) -> Result<Option<bool>, ClusterError> {
    match result {
        Err(e @ ClusterError::ReplacedObject { .. }) => {
            left_alone(&e);
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// Deletes a bottle's pod, through its Sandbox when it has one (a Sandbox's controller makes
/// a pod deleted alone again), and a warm pod's claim first. Each deletion carries the
/// object's uid ([`Teardown`]): a Sandbox or claim made again under its name is left
/// ([`left_alone`]) and the rest goes on; a pod made again is refused
/// ([`ClusterError::Replaced`]) unless the bottle's claim or Sandbox went (it takes the pod
/// it controls). `false` when there was nothing to delete.
async fn delete_bottle(
    cluster: &dyn Cluster,
    grace: Duration,
    t: Teardown<'_>,
) -> Result<bool, ClusterError> {
    let name = t.name;
    let mut deleted = false;
    let mut gone = |result: Result<bool, ClusterError>| {
        deleted |= pinned(result)? == Some(true);
        Ok::<(), ClusterError>(())
    };
    if let Some((claim, uid)) = t.claim {
        // A warm pod's claim first: a claim whose Sandbox is gone would get another.
        gone(
            cluster
                .ext_delete(pool::ExtKind::Claim, claim, Some(uid))
                .await,
        )?;
    }
    if let Some(uid) = t.sandbox_uid {
        gone(cluster.delete_sandbox(name, grace, Some(uid)).await)?;
    }
    // The Sandbox's pod goes with it; deleting it too gives it this grace (not its own).
    match cluster.delete_pod(name, grace, Some(t.pod_uid)).await {
        Ok(gone) => deleted |= gone,
        // The claim's or Sandbox's deletion takes the pod it controls now, whichever it is.
        Err(ClusterError::Replaced { .. }) if deleted => {}
        Err(e) => return Err(e),
    }
    Ok(deleted)
}

/// What `stop` reads in a bottle's record: the pod's name and the uid of the pod its launch
/// checked, and (in a record of this binary, not always an older one's) the uids of its
/// Sandbox and of a warm pod's claim.
#[derive(Debug, Clone, Copy)]
struct Recorded<'a> {
    name: &'a str,
    pod_uid: &'a str,
    sandbox_uid: Option<&'a str>,
    claim: Option<&'a str>,
    claim_uid: Option<&'a str>,
}

/// What the pod a launch checked says of the bottle's other objects, for `stop` from a
/// record that does not hold their uids: the pod itself (`None`: it is gone), or another
/// of its name is there (`Replaced`).
type LaunchedPod = Result<Option<Pod>, ClusterError>;

/// An object of the bottle's name that nothing proves the bottle's: refused
/// ([`ClusterError::Unproven`]), saying why (`relation`: what the launched pod, there, says
/// against it).
fn unproven(
    cluster: &dyn Cluster,
    kind: ObjectKind,
    name: &str,
    launched: &LaunchedPod,
    relation: &str,
) -> ClusterError {
    let why = match launched {
        Ok(Some(_)) => relation,
        Ok(None) => "the pod its launch checked is gone, so nothing ties it to the bottle",
        Err(_) => "the pod under the bottle's name is not the one its launch checked",
    };
    ClusterError::Unproven {
        kind: kind.noun().to_owned(),
        name: name.to_owned(),
        namespace: cluster.namespace().to_owned(),
        why: why.to_owned(),
    }
}

/// The uid of the bottle's Sandbox where its record holds none: that of the Sandbox
/// controlling the pod the launch checked. Without that, a Sandbox of the bottle's name is
/// not proven the bottle's (refused); with none there, there is none to delete.
async fn proven_sandbox(
    cluster: &dyn Cluster,
    name: &str,
    launched: &LaunchedPod,
) -> Result<Option<String>, ClusterError> {
    if let Ok(Some(pod)) = launched
        && let Some(uid) = sandbox_controller_uid(pod)
    {
        return Ok(Some(uid));
    }
    if cluster.get_sandbox(name).await?.is_some() {
        return Err(unproven(
            cluster,
            ObjectKind::Sandbox,
            name,
            launched,
            "it does not control the pod its launch checked",
        ));
    }
    Ok(None)
}

/// The uid of a warm bottle's claim where its record holds none: that of the claim that took
/// the pod the launch checked (the controller of the Sandbox controlling it, both by uid).
/// Without that, a claim of its name is not proven the bottle's (refused); with none there,
/// there is none to delete.
async fn proven_claim(
    cluster: &dyn Cluster,
    claim: &str,
    launched: &LaunchedPod,
) -> Result<Option<String>, ClusterError> {
    if let Ok(Some(pod)) = launched
        && let Some(uid) = claim_of_pod(cluster, pod, claim).await?
    {
        return Ok(Some(uid));
    }
    if cluster
        .ext_get(pool::ExtKind::Claim, claim)
        .await?
        .is_some()
    {
        return Err(unproven(
            cluster,
            ObjectKind::Ext(pool::ExtKind::Claim),
            claim,
            launched,
            "it is not the claim that took the pod its launch checked",
        ));
    }
    Ok(None)
}

/// `stop`: the bottle's objects, each pinned by its uid ([`delete_bottle`]). A uid the
/// record does not hold (an older binary's) is taken from the pod the launch checked, which
/// the record pins: the uid of the Sandbox controlling it, and of the claim controlling that
/// Sandbox. An object there under the bottle's name that this does not prove the bottle's
/// is never deleted by its name: `stop` refuses before it deletes anything
/// ([`ClusterError::Unproven`]).
async fn stop_bottle(
    cluster: &dyn Cluster,
    grace: Duration,
    r: Recorded<'_>,
) -> Result<bool, ClusterError> {
    let name = r.name;
    if let Some(claim) = r.claim {
        // A pod taken from a warm pool goes with its claim (its Sandbox and pod with it);
        // the pod's deletion, the launched one only, gives it the grace.
        let launched = match (r.claim_uid, r.sandbox_uid) {
            (Some(_), Some(_)) => Ok(None),
            _ => match launched_pod(cluster, name, r.pod_uid).await {
                Err(e) if !matches!(e, ClusterError::Replaced { .. }) => return Err(e),
                launched => launched,
            },
        };
        let claim_uid = match r.claim_uid {
            Some(uid) => Some(uid.to_owned()),
            None => proven_claim(cluster, claim, &launched).await?,
        };
        let sandbox_uid = match r.sandbox_uid {
            Some(uid) => Some(uid.to_owned()),
            None => proven_sandbox(cluster, name, &launched).await?,
        };
        let teardown = Teardown {
            name,
            pod_uid: r.pod_uid,
            sandbox_uid: sandbox_uid.as_deref(),
            claim: claim_uid.as_deref().map(|uid| (claim, uid)),
        };
        return delete_bottle(cluster, grace, teardown).await;
    }
    let teardown = |sandbox_uid| Teardown {
        name,
        pod_uid: r.pod_uid,
        sandbox_uid,
        claim: None,
    };
    match launched_pod(cluster, name, r.pod_uid).await {
        // The launched pod's deletion carries its uid as a precondition (for one made again
        // in between); its Sandbox goes with its uid: the recorded one, else (a record of an
        // older binary) that of the Sandbox controlling the launched pod.
        Ok(Some(pod)) => {
            let sandbox_uid = sandbox_controller_uid(&pod)
                .map(|controller| r.sandbox_uid.map_or(controller, str::to_owned));
            delete_bottle(cluster, grace, teardown(sandbox_uid.as_deref())).await
        }
        Ok(None) => {
            let sandbox_uid = match (cluster.sandbox_version().await?, r.sandbox_uid) {
                (None, _) => None,
                (Some(_), Some(uid)) => Some(uid.to_owned()),
                (Some(_), None) => proven_sandbox(cluster, name, &Ok(None)).await?,
            };
            delete_bottle(cluster, grace, teardown(sandbox_uid.as_deref())).await
        }
        // A pod made again under the bottle's name is never deleted by name: a plain one is
        // refused; one the bottle's Sandbox's controller made again (its pod deleted alone)
        // or adopted goes by deleting the Sandbox, the one of the recorded uid (a record
        // without it, an older binary's, proves nothing here: refused).
        Err(e @ ClusterError::Replaced { .. })
            if cluster
                .get_pod(name)
                .await?
                .is_some_and(|p| controlled_by_sandbox(&p, name)) =>
        {
            match r.sandbox_uid {
                Some(uid) => cluster.delete_sandbox(name, grace, Some(uid)).await,
                None => Err(unproven(cluster, ObjectKind::Sandbox, name, &Err(e), "")),
            }
        }
        Err(e) => Err(e),
    }
}

/// The first pause before a warm pod that answered "not claimed yet" is tried again; it
/// doubles up to [`CLAIM_RETRY_MAX`] (`bundle::intake::ClaimRetry`'s policy).
pub const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest pause between two attempts on a warm pod not claimed yet.
pub const CLAIM_RETRY_MAX: Duration = Duration::from_secs(2);

/// A warm pool a launch takes its pod from.
struct WarmPick {
    pool: String,
    template: pool::WarmTemplate,
    /// What the claimed pod is sent ([`pool::warm_config`]).
    files: BTreeMap<String, Vec<u8>>,
}

/// Claims a pod of a warm pool with `claim` and readies it for the bottle: waits until the
/// claim names its Sandbox and the Sandbox its pod, checks the pod against `built` (and
/// that it is the claim's), waits until it carries the bottle's labels, sends it `files`
/// through a port-forward to [`objects::INTAKE_PORT`] (a new one per attempt while the
/// sidecar answers "not claimed yet", as [`WarmSender::claim_wait`] bounds), and checks it
/// again once its agent runs. Returns the pod, its Sandbox and the claim, each with its uid;
/// on any failure the claim is deleted (the one created here: one made again under its
/// name since is left).
async fn claim_pod(
    cluster: &dyn Cluster,
    claim: &pool::SandboxClaim,
    built: &Pod,
    files: BTreeMap<String, Vec<u8>>,
    sender: WarmSender,
    timeout: Duration,
) -> Result<Launched, ClusterError> {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let pool_name = claim.spec.warm_pool_ref.name.clone();
    let identity = identity_label(&claim.metadata).cloned().unwrap_or_default();
    let namespace = cluster.namespace().to_owned();
    let value = serde_json::to_value(claim).map_err(|e| ClusterError::Invalid {
        kind: "sandboxclaim".into(),
        message: e.to_string(),
    })?;
    let created = cluster.ext_create(pool::ExtKind::Claim, &value).await?;
    // Pinned by its uid from here on (every deletion of it); one answered without a uid is
    // refused and left (nothing pins it for a deletion).
    let created_meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(created["metadata"].clone()).unwrap_or_default();
    let claim_uid = uid_of(
        cluster,
        ObjectKind::Ext(pool::ExtKind::Claim),
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            ..created_meta
        },
    )?;
    let failed = |container: &str, message: String| ClusterError::SetupFailed {
        container: container.to_owned(),
        message,
    };
    let result = async {
        let bound = cluster
            .ext_watch(pool::ExtKind::Claim, &name, timeout, &|v| {
                serde_json::from_value::<pool::SandboxClaim>(v.clone())
                    .is_ok_and(|c| c.sandbox_name().is_some())
            })
            .await
            .map_err(|e| match e {
                ClusterError::Timeout(_) => ClusterError::Timeout(format!(
                    "claim `{name}` in namespace `{namespace}` was given no pod of warm pool `{pool_name}` within {} s (its ready pods were taken, or agent-sandbox's extensions controller does not run); `kubectl -n {namespace} describe sandboxclaim {name}` shows why; `bot-bottle pool apply` with more replicas keeps more pods ready, and the claim was deleted",
                    timeout.as_secs()
                )),
                e => e,
            })?
            .ok_or_else(|| failed("claim", "the claim was deleted while the bottle started".into()))?;
        let bound: pool::SandboxClaim = serde_json::from_value(bound).map_err(|e| {
            failed("claim", format!("the claim the API server returned cannot be read: {e}"))
        })?;
        let sandbox_name = bound.sandbox_name().unwrap_or_default().to_owned();
        let sandbox = cluster
            .watch_sandbox(&sandbox_name, timeout, &|s| {
                s.pod_name().is_some() || controller_refused(s)
            })
            .await?
            .ok_or_else(|| failed("sandbox", format!("Sandbox `{sandbox_name}` was deleted while the bottle started")))?;
        let owner = sandbox
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        if !owner.is_some_and(|r| r.kind == "SandboxClaim" && r.name == name) {
            return Err(failed(
                "sandbox",
                format!("Sandbox `{sandbox_name}`, which claim `{name}` names, is not controlled by that claim; the claim was deleted"),
            ));
        }
        let Some(pod_name) = sandbox.pod_name() else {
            return Err(failed(
                "sandbox",
                format!(
                    "the agent-sandbox controller could not make the pod of Sandbox `{sandbox_name}`: {}",
                    sandbox
                        .condition("Ready")
                        .and_then(|c| c.message.clone())
                        .unwrap_or_default()
                ),
            ));
        };
        let found = cluster
            .get_pod(&pod_name)
            .await?
            .ok_or_else(|| failed("pod", format!("pod `{pod_name}` of Sandbox `{sandbox_name}` is gone")))?;
        // Before anything of the bottle is sent to it.
        podcheck::check(built, &found, &namespace)?;
        if !controlled_by_sandbox(&found, &sandbox_name) {
            return Err(failed(
                "pod",
                format!("pod `{pod_name}` is not controlled by Sandbox `{sandbox_name}`, which claim `{name}` names; the claim was deleted"),
            ));
        }
        let uid = uid_of(cluster, ObjectKind::Pod, &found.metadata)?;
        let sandbox_uid = uid_of(cluster, ObjectKind::Sandbox, &sandbox.metadata)?;
        // Adoption gives it the bottle's labels (`list`, `cleanup` find it by them).
        cluster
            .watch_pod(&pod_name, timeout, &|p| {
                identity_label(&p.metadata) == Some(&identity)
            })
            .await?
            .ok_or_else(|| failed("pod", format!("pod `{pod_name}` was deleted while the bottle started")))?;
        // The operator token alone in the bottle's Secret (owned by the pod, never mounted):
        // the laptop's relay reads it there once `start` is gone, as for a cold bottle.
        if let Some(token) = files.get(objects::OPERATOR_TOKEN_KEY) {
            let launcher = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(objects::ANNOTATION_LAUNCHER))
                .cloned()
                .unwrap_or_default();
            cluster
                .create_secret(&objects::operator_secret(
                    &identity, &namespace, &launcher, token, &pod_name, &uid,
                ))
                .await?;
        }
        let not_taken = |e: String| {
            failed(
                "sidecar",
                format!(
                    "the warm pod's sidecar did not take the bottle's config: {e}; the claim was deleted (the pod goes with it), start the bottle again"
                ),
            )
        };
        // The intake admits only the launch's token, once the pod carries the claim's
        // annotation in the sidecar's file (the kubelet refreshes it some time after the
        // adoption); it closes a refused connection, so each attempt is a new port-forward.
        let started = std::time::Instant::now();
        let mut backoff = CLAIM_RETRY_FIRST;
        loop {
            let stream = to_launched_pod(cluster, &pod_name, &uid, || {
                cluster.port_forward(&pod_name, objects::INTAKE_PORT)
            })
            .await
            .map_err(|e| match e {
                // The pod replaced or gone: said as such.
                e @ (ClusterError::Replaced { .. } | ClusterError::Forbidden { .. }) => e,
                e => not_taken(format!(
                    "its config port {} cannot be reached ({e})",
                    objects::INTAKE_PORT
                )),
            })?;
            match (sender.send)(stream, files.clone()).await {
                Ok(()) => break,
                Err(WarmSendError::NotClaimedYet) => {}
                Err(WarmSendError::Failed(e)) => return Err(not_taken(e)),
            }
            if started.elapsed() + backoff > sender.claim_wait {
                return Err(failed(
                    "sidecar",
                    format!(
                        "{}; the claim was deleted",
                        (sender.never_claimed)(&pod_name, started.elapsed())
                    ),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(CLAIM_RETRY_MAX);
        }
        let pod = cluster
            .watch_pod(&pod_name, timeout, &|p| pod_state(p) != PodState::Starting)
            .await?;
        let Some(pod) = pod else {
            return Err(failed("pod", "the pod was deleted while it started".into()));
        };
        // Again as it runs: the pod checked, its images unpatched.
        podcheck::check(built, &pod, &namespace)?;
        if pod.metadata.uid.as_deref() != Some(uid.as_str()) {
            return Err(failed(
                "pod",
                format!("pod `{pod_name}` was deleted and made again while the bottle started"),
            ));
        }
        match pod_state(&pod) {
            PodState::Running | PodState::Ended(_) => Ok(Launched {
                pod_name,
                pod_uid: uid,
                sandbox_uid: Some(sandbox_uid),
                claim: Some((name.clone(), claim_uid.clone())),
            }),
            PodState::Failed(e) => Err(e),
            PodState::Starting => Err(failed("pod", "the pod was deleted while it started".into())),
        }
    }
    .await;
    if result.is_err() {
        let deleted = cluster
            .ext_delete(pool::ExtKind::Claim, &name, Some(&claim_uid))
            .await;
        if let Err(e) = pinned(deleted) {
            tracing::warn!(error = %e, "a failed warm launch's claim was not deleted");
        }
    }
    result
}

/// Whether `pod` is controlled by the Sandbox `name` (the bottle's).
fn controlled_by_sandbox(pod: &Pod, name: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Sandbox" && r.controller == Some(true) && r.name == name)
}

/// The bottle's pod `name`, if it is the one its launch checked (uid `uid`): `None` when
/// there is none; one made again under the name is refused ([`ClusterError::Replaced`]).
async fn launched_pod(
    cluster: &dyn Cluster,
    name: &str,
    uid: &str,
) -> Result<Option<Pod>, ClusterError> {
    let pod = cluster.get_pod(name).await?;
    if let Some(p) = &pod
        && p.metadata.uid.as_deref() != Some(uid)
    {
        return Err(ObjectKind::Pod.replaced(
            name,
            cluster.namespace(),
            uid,
            p.metadata.uid.as_deref().unwrap_or("none"),
        ));
    }
    Ok(pod)
}

/// Opens a stream to pod `name` by name (`open`: a port-forward, an attach), only while it
/// is the launched pod (uid `uid`): checked before (nothing is opened to a pod made again
/// under the name) and after (the API server opened it by name; a uid never comes back, so
/// the launched pod there before and after is the pod opened).
async fn to_launched_pod<T, F, Fut>(
    cluster: &dyn Cluster,
    name: &str,
    uid: &str,
    open: F,
) -> Result<T, ClusterError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let gone = || ClusterError::Api {
        code: 404,
        reason: "NotFound".into(),
        message: format!(
            "pod `{name}` in namespace `{}` is gone (the bottle ended or was stopped)",
            cluster.namespace()
        ),
    };
    launched_pod(cluster, name, uid).await?.ok_or_else(gone)?;
    let opened = open().await?;
    launched_pod(cluster, name, uid).await?.ok_or_else(gone)?;
    Ok(opened)
}

/// Waits until the controller of Sandbox `name` made its pod, named as the Sandbox; fails
/// with its word when it reports it cannot (`Ready=False`, `ReconcilerError`).
async fn sandbox_pod(
    cluster: &dyn Cluster,
    name: &str,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let sandbox = cluster
        .watch_sandbox(name, timeout, &|s| {
            s.pod_name().is_some() || controller_refused(s)
        })
        .await?
        .ok_or_else(|| ClusterError::SetupFailed {
            container: "sandbox".into(),
            message: "the Sandbox was deleted while it started".into(),
        })?;
    match sandbox.pod_name() {
        Some(pod) if pod == name => Ok(()),
        // A pod of another name (one adopted from a warm pool) was not built for this
        // bottle: its Secret, config and packet filter are not this bottle's.
        Some(pod) => Err(ClusterError::SetupFailed {
            container: "sandbox".into(),
            message: format!(
                "the Sandbox's controller gave it pod `{pod}`, not the pod built for this bottle (`{name}`); a bottle takes a warm pool's pod through a SandboxClaim only, never through its own Sandbox (README: running on a cluster)"
            ),
        }),
        None => Err(ClusterError::SetupFailed {
            container: "sandbox".into(),
            message: format!(
                "the agent-sandbox controller could not make the bottle's pod: {}",
                sandbox
                    .condition("Ready")
                    .and_then(|c| c.message.clone())
                    .unwrap_or_default()
            ),
        }),
    }
}

fn identity_of(pod: &Pod) -> Option<String> {
    identity_label(&pod.metadata).cloned()
}

/// The bottle identity an object of ours carries as its label (pods, Sandboxes, claims).
fn identity_label(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&String> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(objects::LABEL_IDENTITY))
}

/// Whether a Sandbox's controller reported that it cannot make its pod (`Ready=False`,
/// `ReconcilerError`): a launch fails on it, `list` shows the bottle as not running.
fn controller_refused(sandbox: &objects::Sandbox) -> bool {
    sandbox
        .condition("Ready")
        .is_some_and(|c| c.reason.as_deref() == Some("ReconcilerError"))
}

/// Whether a Sandbox without a pod is still on its way to one: not being deleted, and not
/// refused by its controller.
fn sandbox_starting(sandbox: &objects::Sandbox) -> bool {
    sandbox.metadata.deletion_timestamp.is_none() && !controller_refused(sandbox)
}

fn created_secs(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.creation_timestamp
        .as_ref()
        .and_then(|t| u64::try_from(t.0.as_second()).ok())
        .unwrap_or(0)
}

impl Backend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    fn sidecar_placement(&self) -> SidecarPlacement {
        SidecarPlacement::Container
    }

    fn preflight(&self) -> BackendStatus {
        preflight(&|k| std::env::var_os(k))
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<(), BackendError> {
        if self.config.agent_image.is_empty() {
            return Err(BackendError::InvalidSpec(
                "no agent image for the kubernetes bottle".into(),
            ));
        }
        if spec.forwards.is_empty() {
            return Err(BackendError::InvalidSpec(
                "a kubernetes bottle needs its sidecar ports".into(),
            ));
        }
        // The agent's uid reaches the sidecar ports: the operator's port is never one.
        if spec.forwards.iter().any(|f| f.inside_port == OPERATOR_PORT) {
            return Err(BackendError::InvalidSpec(format!(
                "port {OPERATOR_PORT} is the bundle's operator port, which the agent must not reach; give the sidecar another port"
            )));
        }
        Ok(())
    }

    fn launch(
        &self,
        spec: &LaunchSpec,
        stdio: BottleStdio,
    ) -> Result<Box<dyn RunningBottle>, BackendError> {
        Ok(Box::new(self.launch_pod(spec, stdio)?))
    }

    fn attach(&self, identity: &str) -> Result<Box<dyn RunningBottle>, BackendError> {
        Err(BackendError::Unsupported(format!(
            "attaching to kubernetes bottle {identity} is not implemented yet; `kubectl logs -f {}` follows it",
            self.pod_name_of(identity).0
        )))
    }

    fn stop(&self, identity: &str, grace: Duration) -> Result<bool, BackendError> {
        let cluster = self.cluster_of(identity)?;
        let uid = self.launched_uid(identity, cluster.namespace())?;
        let (name, claim) = self.pod_name_of(identity);
        let record = self.record_of(identity).unwrap_or_default();
        let recorded = Recorded {
            name: &name,
            pod_uid: &uid,
            // An empty uid (an older binary's for a missing one) pins nothing: as none.
            sandbox_uid: record.sandbox_uid.as_deref().filter(|u| !u.is_empty()),
            claim: claim.as_deref(),
            claim_uid: record.claim_uid.as_deref().filter(|u| !u.is_empty()),
        };
        self.runtime
            .block_on(stop_bottle(cluster.as_ref(), grace, recorded))
            .map_err(|e| setup("stop", e))
    }

    fn list(&self) -> Result<Vec<BottleInfo>, BackendError> {
        let cluster = self.cluster()?;
        let pods = self
            .runtime
            .block_on(cluster.list_pods(&objects::selector(None)))
            .map_err(|e| setup("list", e))?;
        let mut listed: Vec<BottleInfo> = pods
            .iter()
            .filter_map(|pod| {
                let identity = identity_of(pod)?;
                let running = matches!(pod_state(pod), PodState::Running | PodState::Starting);
                Some(BottleInfo {
                    identity,
                    backend: BackendKind::Kubernetes,
                    running,
                    orphaned: running && launcher_gone_here(pod),
                    created: created_secs(&pod.metadata),
                })
            })
            .collect();
        // Bottles whose Sandbox has no pod: not made yet, never made (its controller cannot),
        // or gone while the Sandbox stays. (A cluster without the API lists none.)
        let sandboxes = self
            .runtime
            .block_on(cluster.list_sandboxes(&objects::selector(None)))
            .map_err(|e| setup("list", e))?;
        for sandbox in &sandboxes {
            let has_pod = pods
                .iter()
                .any(|p| p.metadata.name == sandbox.metadata.name);
            let Some(identity) = identity_label(&sandbox.metadata) else {
                continue;
            };
            if has_pod || listed.iter().any(|b| &b.identity == identity) {
                continue;
            }
            let running = sandbox_starting(sandbox);
            listed.push(BottleInfo {
                identity: identity.clone(),
                backend: BackendKind::Kubernetes,
                running,
                orphaned: running && launcher_gone_here_meta(&sandbox.metadata),
                created: created_secs(&sandbox.metadata),
            });
        }
        Ok(listed)
    }

    fn discard(&self, identity: &str) -> Result<Vec<CleanupAction>, BackendError> {
        // The record `start` wrote says whether the bottle has a claim; without one no pod
        // was created (it is written first). Only a backend without a home asks anyway.
        if let Some(home) = &self.home {
            let record = PodRecord::read(&home.join("state").join(identity));
            if record.is_none_or(|r| r.home_claim.is_none()) {
                return Ok(Vec::new());
            }
        }
        let cluster = self.cluster_of(identity)?;
        let name = objects::home_claim_name(identity);
        let (pod_name, _) = self.pod_name_of(identity);
        let pod = self
            .runtime
            .block_on(cluster.get_pod(&pod_name))
            .map_err(|e| setup("discard", e))?;
        // Never under a running bottle. A pod being deleted lets go of it: the API server's
        // `pvc-protection` keeps the storage until the pod is gone.
        if pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none()) {
            return Err(BackendError::InvalidSpec(format!(
                "bottle {identity} still runs in namespace `{}` (pod {}), so its home claim `{name}` stays; `bot-bottle stop {identity}` first",
                cluster.namespace(),
                pod_name
            )));
        }
        // The bottle's own claim only, the one found here (its uid a delete precondition):
        // a claim of its name that bot-bottle did not make for it stays.
        let found = self
            .runtime
            .block_on(cluster.get_claim(&name))
            .map_err(|e| setup("find the bottle's home claim", e))?;
        let Some(found) = found else {
            return Ok(Vec::new());
        };
        if !home_claim_of(&found, identity) {
            tracing::warn!(%identity, claim = %name, namespace = %cluster.namespace(), "discard leaves a claim of the bottle's home's name that bot-bottle did not make for it");
            return Ok(Vec::new());
        }
        // Pinned by its uid; one without (no API server stores one so) is never deleted by
        // its name alone.
        let Some(uid) = found.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
            tracing::warn!(%identity, claim = %name, namespace = %cluster.namespace(), "discard leaves the bottle's home claim: the API server answered it without a uid, so nothing pins it");
            return Ok(Vec::new());
        };
        let deleted = self
            .runtime
            .block_on(cluster.delete_claim(&name, Some(uid)));
        let deleted = pinned(deleted).map_err(|e| setup("delete the bottle's home claim", e))?;
        Ok(if deleted == Some(true) {
            vec![CleanupAction::RemovedVolume { name }]
        } else {
            Vec::new()
        })
    }

    fn cleanup(&self, dry_run: bool) -> Result<Vec<CleanupAction>, BackendError> {
        let mut actions = Vec::new();
        self.cleanup_in(self.cluster()?.as_ref(), dry_run, &mut actions)?;
        // Bottles started in another namespace (the manifest's) or context: there too.
        for r in self.recorded_elsewhere() {
            let cluster = match self.connect(r.context.as_deref(), r.namespace.as_deref()) {
                Ok(cluster) => cluster,
                Err(e) => {
                    // A context removed since: the others are still cleaned up.
                    tracing::warn!(context = ?r.context, namespace = ?r.namespace, error = %e, "cleanup skips a recorded namespace");
                    continue;
                }
            };
            self.cleanup_in(cluster.as_ref(), dry_run, &mut actions)?;
        }
        Ok(actions)
    }
}

impl KubernetesBackend {
    /// `cleanup` in one namespace; actions already listed (the same namespace reached
    /// twice) are not listed again.
    fn cleanup_in(
        &self,
        cluster: &dyn Cluster,
        dry_run: bool,
        actions: &mut Vec<CleanupAction>,
    ) -> Result<(), BackendError> {
        let mut push = |a: CleanupAction| {
            if !actions.contains(&a) {
                actions.push(a);
            }
        };
        let pods = self
            .runtime
            .block_on(cluster.list_pods(&objects::selector(None)))
            .map_err(|e| setup("cleanup", e))?;
        for pod in &pods {
            let Some(identity) = identity_of(pod) else {
                continue;
            };
            // The pod's own name: a pod taken from a warm pool is not named after the bottle.
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            // Only what its uid pins is judged (the API server gives every object one).
            let Some(pod_uid) = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
                continue;
            };
            let claim = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(pool::ANNOTATION_CLAIM))
                .cloned();
            let state = pod_state(pod);
            let ended = matches!(state, PodState::Ended(_) | PodState::Failed(_));
            if ended && !launcher_gone_here(pod) {
                // Ended pods of a live launcher are its to remove (it is reading the end).
                continue;
            }
            if ended || launcher_gone_here(pod) {
                let sandboxed = owned_by_sandbox(pod);
                let controller = sandbox_controller_uid(pod);
                if !dry_run {
                    // The claim its annotation names only as the one that took this pod
                    // (its Sandbox's controller, by uid): one made again under the name
                    // since is another launch's.
                    let claim_uid = match &claim {
                        Some(claim) => self
                            .runtime
                            .block_on(claim_of_pod(cluster, pod, claim))
                            .map_err(|e| setup("cleanup", e))?,
                        None => None,
                    };
                    if let (Some(claim), None) = (&claim, &claim_uid) {
                        tracing::warn!(%claim, pod = %name, namespace = %cluster.namespace(), "cleanup leaves a claim of the orphan's claim name that did not take its pod");
                    }
                    self.runtime
                        .block_on(delete_bottle(
                            cluster,
                            Duration::ZERO,
                            Teardown {
                                name: &name,
                                // The pod judged here and its Sandbox, not ones made under
                                // their names since.
                                pod_uid,
                                sandbox_uid: controller.as_deref(),
                                claim: claim.as_deref().zip(claim_uid.as_deref()),
                            },
                        ))
                        .map_err(|e| setup("cleanup", e))?;
                }
                push(match (ended, sandboxed) {
                    (true, true) => CleanupAction::RemovedSandbox { name },
                    (true, false) => CleanupAction::RemovedContainer { name },
                    (false, _) => CleanupAction::KilledOrphan { identity },
                });
            }
        }
        // Sandboxes with no pod (their controller could not make it, or it was deleted
        // while the Sandbox stays) whose launcher ran here and is gone.
        let served = self
            .runtime
            .block_on(cluster.sandbox_version())
            .map_err(|e| setup("cleanup", e))?;
        if served.is_some() {
            let sandboxes = self
                .runtime
                .block_on(cluster.list_sandboxes(&objects::selector(None)))
                .map_err(|e| setup("cleanup", e))?;
            for sandbox in &sandboxes {
                let Some(name) = sandbox.metadata.name.clone() else {
                    continue;
                };
                let has_pod = pods
                    .iter()
                    .any(|p| p.metadata.name.as_deref() == Some(name.as_str()));
                // Only what its uid pins is judged (the API server gives every object one).
                let Some(uid) = sandbox.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
                    continue;
                };
                if has_pod || !launcher_gone_here_meta(&sandbox.metadata) {
                    continue;
                }
                if !dry_run {
                    // The Sandbox judged here: one made again under its name since stays.
                    let deleted = self.runtime.block_on(cluster.delete_sandbox(
                        &name,
                        Duration::ZERO,
                        Some(uid),
                    ));
                    if pinned(deleted).map_err(|e| setup("cleanup", e))?.is_none() {
                        continue;
                    }
                }
                push(CleanupAction::RemovedSandbox { name });
            }
        }
        // Warm bottles' SandboxClaims whose launcher here is gone and that hold no pod of
        // ours (a launch killed between the claim and the pod's adoption): the claim holds
        // a pool's pod for nothing. Their deletion takes their Sandbox and pod.
        let warm = match self.runtime.block_on(cluster.extensions_served()) {
            Ok(served) => served,
            Err(e) => return Err(setup("cleanup", e)),
        };
        if warm {
            let claims = self
                .runtime
                .block_on(cluster.ext_list(pool::ExtKind::Claim, &objects::selector(None)))
                .map_err(|e| setup("cleanup", e))?;
            for claim in claims {
                let Ok(claim) = serde_json::from_value::<pool::SandboxClaim>(claim) else {
                    continue;
                };
                let Some(name) = claim.metadata.name.clone() else {
                    continue;
                };
                let holds_pod = pods.iter().any(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(pool::ANNOTATION_CLAIM))
                        == Some(&name)
                });
                let Some(uid) = claim.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
                    continue;
                };
                if holds_pod || !launcher_gone_here_meta(&claim.metadata) {
                    continue;
                }
                if !dry_run {
                    // The claim judged here: one made again under its name since stays.
                    let deleted = self.runtime.block_on(cluster.ext_delete(
                        pool::ExtKind::Claim,
                        &name,
                        Some(uid),
                    ));
                    if pinned(deleted).map_err(|e| setup("cleanup", e))?.is_none() {
                        continue;
                    }
                }
                push(CleanupAction::RemovedSandbox { name });
            }
        }
        // Home claims of this home's bottles whose state is gone (a removed state can never
        // be resumed) and that no pod of ours mounts. Claims of other machines or homes are
        // never judged: their state is not here to look at.
        let claims = match self
            .runtime
            .block_on(cluster.list_claims(&objects::selector(None)))
        {
            Ok(claims) => claims,
            // An operator who may not list claims made none (`home_size` needs it): the
            // rest of the cleanup goes on.
            Err(e @ ClusterError::Forbidden { .. }) => {
                tracing::debug!(error = %e, "cleanup skips the home claims");
                Vec::new()
            }
            Err(e) => return Err(setup("cleanup", e)),
        };
        let here = self.home_annotation();
        for claim in &claims {
            let Some(identity) = identity_label(&claim.metadata) else {
                continue;
            };
            let owner = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(objects::ANNOTATION_HOME));
            let (Some(home), Some(owner)) = (&self.home, owner) else {
                continue;
            };
            if here.is_empty() || *owner != here {
                continue;
            }
            // Only a claim named as ours for a well-formed identity (the label is the
            // cluster's word, and it names a directory here).
            let name = objects::home_claim_name(identity);
            if state::Identity::parse(identity).is_err()
                || claim.metadata.name.as_deref() != Some(name.as_str())
            {
                continue;
            }
            let mounted = pods.iter().any(|pod| {
                pod.metadata.deletion_timestamp.is_none()
                    && pod
                        .spec
                        .iter()
                        .flat_map(|s| s.volumes.iter().flatten())
                        .any(|v| {
                            v.persistent_volume_claim
                                .as_ref()
                                .is_some_and(|c| c.claim_name == name)
                        })
            });
            let Some(uid) = claim.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
                continue;
            };
            if mounted || home.join("state").join(identity).exists() {
                continue;
            }
            if !dry_run {
                // The claim judged here: one made again under its name since stays.
                let deleted = self
                    .runtime
                    .block_on(cluster.delete_claim(&name, Some(uid)));
                if pinned(deleted).map_err(|e| setup("cleanup", e))?.is_none() {
                    continue;
                }
            }
            push(CleanupAction::RemovedVolume { name });
        }
        // Secrets and ConfigMaps no pod or Sandbox owns (what is owned goes with its owner):
        // a bottle's own (its identity label names it) whose launcher ran here and is gone,
        // each deleted as the object judged (its uid a delete precondition).
        let leftovers = self
            .runtime
            .block_on(cluster.list_leftovers(&objects::selector(None)))
            .map_err(|e| setup("cleanup", e))?;
        for leftover in leftovers {
            let meta = &leftover.metadata;
            let Some(name) = meta.name.clone() else {
                continue;
            };
            let bottles = identity_label(meta).is_some_and(|identity| {
                state::Identity::parse(identity).is_ok() && objects::object_name(identity) == name
            });
            let unowned = meta.owner_references.as_ref().is_none_or(Vec::is_empty);
            let Some(uid) = meta.uid.as_deref().filter(|u| !u.is_empty()) else {
                continue;
            };
            if !bottles || !unowned || !launcher_gone_here_meta(meta) {
                continue;
            }
            if !dry_run {
                let deleted =
                    self.runtime
                        .block_on(cluster.delete_leftover(leftover.kind, &name, uid));
                if pinned(deleted).map_err(|e| setup("cleanup", e))?.is_none() {
                    continue;
                }
            }
            push(CleanupAction::RemovedContainer { name });
        }
        Ok(())
    }
}

/// A running kubernetes bottle: waiting watches the pod until the agent ends, then deletes
/// the pod (and with it the Secret and ConfigMap). [`KubeBottle::wait_agent`] and
/// [`KubeBottle::remove`] are the two halves, for a caller with something to do in between
/// (the launcher's relay takes the pod's last audit lines).
pub struct KubeBottle {
    identity: String,
    cluster: Arc<dyn Cluster>,
    runtime: Arc<Runtime>,
    done: bool,
    /// The agent's streams, attached.
    wired: attach::Wired,
    /// The pod's termination grace: `terminate` gives the sidecar bundle all of it.
    grace: Duration,
    /// What the launch made or took, each with its uid: only those objects are deleted (a
    /// Sandbox's pod goes by deleting the Sandbox, a warm pod's by deleting its claim).
    launched: Launched,
    /// How the launch got its pod, in one line for the operator.
    start_note: String,
}

impl KubeBottle {
    fn name(&self) -> String {
        self.launched.pod_name.clone()
    }

    /// The pod's name (the launcher records it: [`PodRecord::pod_name`]).
    pub fn pod_name(&self) -> &str {
        &self.launched.pod_name
    }

    /// The claim a warm pod was taken with ([`PodRecord::claim`]).
    pub fn claim(&self) -> Option<&str> {
        self.launched.claim.as_ref().map(|(name, _)| name.as_str())
    }

    /// The uid of that claim ([`PodRecord::claim_uid`]).
    pub fn claim_uid(&self) -> Option<&str> {
        self.launched.claim.as_ref().map(|(_, uid)| uid.as_str())
    }

    /// The uid of the bottle's Sandbox, `None` for a plain pod ([`PodRecord::sandbox_uid`]).
    pub fn sandbox_uid(&self) -> Option<&str> {
        self.launched.sandbox_uid.as_deref()
    }

    /// How the launch got its pod: taken from a warm pool, or made cold and why.
    pub fn start_note(&self) -> &str {
        &self.start_note
    }

    /// The uid of the pod the launch checked and got the agent running in (the launcher
    /// records it: [`PodRecord::pod_uid`]).
    pub fn pod_uid(&self) -> &str {
        &self.launched.pod_uid
    }

    /// Waits until the agent ends, leaving the pod in place (the sidecar bundle still runs
    /// until the kubelet stops it): `Some(exit)` then, `None` when the pod was deleted under
    /// us (`stop`, or someone's kubectl).
    pub fn wait_agent(&mut self) -> Result<Option<BottleExit>, BackendError> {
        let name = self.name();
        let cluster = self.cluster.clone();
        let launched = self.launched.pod_uid.clone();
        // Another pod under the bottle's name (deleted and made again: by someone allowed
        // to, or by a Sandbox's controller after an eviction) ends the watch: its state is
        // not the bottle's, and its exit code must never pass for the agent's.
        let other = |p: &Pod| p.metadata.uid.as_deref() != Some(&launched);
        let ended = self.runtime.block_on(async {
            // A day at most per watch round; the watch itself reconnects as needed.
            loop {
                match cluster
                    .watch_pod(&name, Duration::from_secs(86_400), &|p| {
                        other(p) || matches!(pod_state(p), PodState::Ended(_) | PodState::Failed(_))
                    })
                    .await
                {
                    Err(ClusterError::Timeout(_)) => continue,
                    other => break other,
                }
            }
        });
        // The API server closes the outputs when the agent ends; what is left is written out.
        self.wired.drain(Duration::from_secs(5));
        match ended.map_err(|e| setup("wait", e))? {
            Some(pod) if other(&pod) => Err(setup(
                "wait",
                ObjectKind::Pod.replaced(
                    &name,
                    self.cluster.namespace(),
                    &launched,
                    pod.metadata.uid.as_deref().unwrap_or("none"),
                ),
            )),
            Some(pod) => match pod_state(&pod) {
                PodState::Ended(code) => Ok(Some(BottleExit { code })),
                PodState::Failed(e) => Err(setup("wait", e)),
                _ => Ok(Some(BottleExit { code: 137 })),
            },
            None => Ok(None),
        }
    }

    /// Deletes the pod (its Secret and ConfigMap go with it) at once.
    pub fn remove(&mut self) -> Result<(), BackendError> {
        self.runtime
            .block_on(delete_bottle(
                self.cluster.as_ref(),
                Duration::ZERO,
                Teardown::of(&self.launched),
            ))
            .map_err(|e| setup("remove the pod", e))?;
        self.done = true;
        Ok(())
    }
}

impl RunningBottle for KubeBottle {
    fn identity(&self) -> &str {
        &self.identity
    }
    fn take_stdin(&mut self) -> Option<Box<dyn std::io::Write + Send>> {
        self.wired.stdin.take()
    }
    fn take_stdout(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.wired.stdout.take()
    }
    fn take_stderr(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.wired.stderr.take()
    }

    fn wait(&mut self) -> Result<BottleExit, BackendError> {
        // Deleted under us (`stop`, or someone's kubectl): killed.
        let exit = self.wait_agent()?.unwrap_or(BottleExit { code: 137 });
        self.remove()?;
        Ok(exit)
    }

    fn terminate(&mut self) -> Result<(), BackendError> {
        self.runtime
            .block_on(delete_bottle(
                self.cluster.as_ref(),
                self.grace,
                Teardown::of(&self.launched),
            ))
            .map(drop)
            .map_err(|e| setup("terminate", e))
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        self.runtime
            .block_on(delete_bottle(
                self.cluster.as_ref(),
                Duration::ZERO,
                Teardown::of(&self.launched),
            ))
            .map(drop)
            .map_err(|e| setup("kill", e))
    }
}

impl Drop for KubeBottle {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.kill();
        }
    }
}

/// Whether a kubeconfig (or an in-cluster service account) is there to use. Offline: `doctor`
/// never contacts a cluster.
pub fn preflight(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> BackendStatus {
    let kubeconfig = env("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .or_else(|| env("HOME").map(|h| vec![PathBuf::from(h).join(".kube/config")]))
        .unwrap_or_default();
    let found: Vec<&PathBuf> = kubeconfig.iter().filter(|p| p.is_file()).collect();
    let in_cluster = env("KUBERNETES_SERVICE_HOST").is_some();
    let check = if let Some(path) = found.first() {
        Check {
            name: "kubeconfig".into(),
            ok: true,
            detail: format!(
                "{} (not contacted: `kubectl cluster-info` checks the cluster)",
                path.display()
            ),
            fix: None,
            required: true,
        }
    } else if in_cluster {
        Check {
            name: "kubeconfig".into(),
            ok: true,
            detail: "in-cluster service account".into(),
            fix: None,
            required: true,
        }
    } else {
        Check {
            name: "kubeconfig".into(),
            ok: false,
            detail: format!(
                "no kubeconfig at {}",
                kubeconfig
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix: Some("point $KUBECONFIG at your cluster's kubeconfig (or write ~/.kube/config), then check `kubectl cluster-info`".into()),
            required: true,
        }
    };
    BackendStatus {
        backend: BackendKind::Kubernetes,
        usable: check.ok,
        checks: vec![check],
    }
}

#[cfg(test)]
mod tests;
