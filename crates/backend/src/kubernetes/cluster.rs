//! The seam between the backend and the API server: the few calls a bottle needs, as a
//! trait, so the lifecycle is tested against an in-memory cluster (`fake.rs`) and the real
//! client ([`super::client::KubeCluster`]) stays a thin translation tested against kube's
//! mocked service.
//!
//! Errors are classified here, once, into what an operator can act on ([`ClusterError`]):
//! refused by RBAC, over a ResourceQuota, an image the nodes cannot pull, a pod that cannot be
//! scheduled — each with the fix.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};

use super::objects::Sandbox;
use super::pool::ExtKind;

/// A Secret or ConfigMap as `cleanup` judges it: which of the two, and its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Leftover {
    pub kind: LeftoverKind,
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

/// The two kinds of a bottle's objects that hold its files: the Secret (the sidecar's
/// config, keys, tokens) and the ConfigMap (the agent's files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverKind {
    Secret,
    ConfigMap,
}

impl LeftoverKind {
    /// The API's lowercase name of the kind (`secret`, `configmap`).
    pub fn noun(self) -> &'static str {
        match self {
            LeftoverKind::Secret => "secret",
            LeftoverKind::ConfigMap => "configmap",
        }
    }
}

/// The kinds of object a bottle deletes, as a deletion's errors name them: the one place
/// those names come from, for the real client and the in-memory cluster alike (a delete of
/// one kind never says another's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Pod,
    /// The bottle's Secret or ConfigMap.
    Leftover(LeftoverKind),
    /// A PersistentVolumeClaim (a bottle's home).
    VolumeClaim,
    Sandbox,
    /// agent-sandbox's extension objects (templates, warm pools, claims).
    Ext(ExtKind),
}

impl ObjectKind {
    /// The resource as kubectl names it (`pod`, `persistentvolumeclaim`, `sandboxclaim`).
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pod",
            ObjectKind::Leftover(kind) => kind.noun(),
            ObjectKind::VolumeClaim => "persistentvolumeclaim",
            ObjectKind::Sandbox => "sandbox",
            ObjectKind::Ext(kind) => kind.noun(),
        }
    }

    /// The resource as the API names it (its paths, RBAC's verbs): `pods`, `sandboxes`.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pods",
            ObjectKind::Leftover(LeftoverKind::Secret) => "secrets",
            ObjectKind::Leftover(LeftoverKind::ConfigMap) => "configmaps",
            ObjectKind::VolumeClaim => "persistentvolumeclaims",
            ObjectKind::Sandbox => "sandboxes",
            ObjectKind::Ext(kind) => kind.plural(),
        }
    }

    /// The refusal of a delete precondition on the uid `recorded` by the object `name` of
    /// this kind, whose uid is `found` (409): made again under its name since the bottle
    /// made or took it. A pod's is [`ClusterError::Replaced`] (the operator's side reaches
    /// none but the launched pod); any other's [`ClusterError::ReplacedObject`].
    pub fn replaced(
        self,
        name: &str,
        namespace: &str,
        recorded: &str,
        found: &str,
    ) -> ClusterError {
        match self {
            ObjectKind::Pod => ClusterError::Replaced {
                pod: name.to_owned(),
                namespace: namespace.to_owned(),
                recorded: recorded.to_owned(),
                found: found.to_owned(),
            },
            other => ClusterError::ReplacedObject {
                kind: other.noun().to_owned(),
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                recorded: recorded.to_owned(),
                found: found.to_owned(),
            },
        }
    }
}

/// What the backend asks of a cluster (one namespace). Methods are async because the real
/// client is; the backend drives them on its own runtime.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// The namespace every call works in.
    fn namespace(&self) -> &str;
    /// Creates the pod; returns it as stored (with its uid).
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, ClusterError>;
    async fn create_secret(&self, secret: &Secret) -> Result<(), ClusterError>;
    async fn create_config_map(&self, config_map: &ConfigMap) -> Result<(), ClusterError>;
    /// The Secret by name, `None` when there is none (a pod's goes with it).
    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, ClusterError>;
    /// The pod by name, `None` when there is none.
    async fn get_pod(&self, name: &str) -> Result<Option<Pod>, ClusterError>;
    /// Waits (a watch, not a poll) until `done` says the pod reached a state of interest,
    /// and returns that state; `None` for a pod that is gone. Fails after `timeout`.
    async fn watch_pod(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'p> Fn(&'p Pod) -> bool + Send + Sync),
    ) -> Result<Option<Pod>, ClusterError>;
    /// The pods matching a label selector.
    async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, ClusterError>;
    /// Deletes the pod (its Secret and ConfigMap go with it: they are owned by it) with a
    /// grace period; `false` when there was none. With `uid`, only the pod of that uid (a
    /// delete precondition: a pod made again under the name is refused with
    /// [`ClusterError::Replaced`], not deleted).
    async fn delete_pod(
        &self,
        name: &str,
        grace: Duration,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError>;
    /// The Secrets and ConfigMaps matching a label selector, their metadata only (a
    /// Secret's data is never read here): what `cleanup` judges as leftovers.
    async fn list_leftovers(&self, selector: &str) -> Result<Vec<Leftover>, ClusterError>;
    /// Deletes the Secret or ConfigMap `name` of uid `uid` (a delete precondition: one made
    /// again under the name is refused with [`ClusterError::ReplacedObject`], not
    /// deleted); `false` when there was none.
    async fn delete_leftover(
        &self,
        kind: LeftoverKind,
        name: &str,
        uid: &str,
    ) -> Result<bool, ClusterError>;
    /// The PersistentVolumeClaim by name, `None` when there is none.
    async fn get_claim(&self, name: &str) -> Result<Option<PersistentVolumeClaim>, ClusterError>;
    /// Creates a PersistentVolumeClaim (a bottle's home, kept for `resume`); returns it as
    /// stored (with its uid).
    async fn create_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ClusterError>;
    /// Deletes a PersistentVolumeClaim; `false` when there was none. (The API server's
    /// `pvc-protection` finalizer keeps its storage until no pod mounts it.) With `uid`,
    /// only the claim of that uid (a delete precondition, as [`Cluster::delete_sandbox`]).
    async fn delete_claim(&self, name: &str, uid: Option<&str>) -> Result<bool, ClusterError>;
    /// The PersistentVolumeClaims matching a label selector.
    async fn list_claims(&self, selector: &str)
    -> Result<Vec<PersistentVolumeClaim>, ClusterError>;
    /// A byte stream to `port` on the pod's loopback, through the API server's port-forward
    /// (the operator's dashboard reaches a cluster bottle's supervise this way).
    async fn port_forward(&self, name: &str, port: u16) -> Result<PortStream, ClusterError>;
    /// Attaches to the `agent` container's standard streams (its terminal with `tty`),
    /// through the API server's `pods/attach`.
    async fn attach(&self, name: &str, tty: bool) -> Result<Attached, ClusterError>;
    /// The version of agent-sandbox's `Sandbox` the cluster serves (API discovery: the
    /// first of [`super::objects::SANDBOX_VERSIONS`] it lists), `None` when it serves none
    /// (the CRD is not installed). Asked of the API server once per value.
    async fn sandbox_version(&self) -> Result<Option<String>, ClusterError>;
    /// Creates the Sandbox; returns it as stored (with its uid). Its controller then
    /// creates the pod from its template.
    async fn create_sandbox(&self, sandbox: &Sandbox) -> Result<Sandbox, ClusterError>;
    /// As [`Cluster::watch_pod`], for a Sandbox.
    async fn watch_sandbox(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'s> Fn(&'s Sandbox) -> bool + Send + Sync),
    ) -> Result<Option<Sandbox>, ClusterError>;
    /// Deletes the Sandbox with a grace period for its pod (the pod and what both own go
    /// with it); `false` when there was none. With `uid`, only the Sandbox of that uid (a
    /// delete precondition: one made again under the name is refused with
    /// [`ClusterError::ReplacedObject`], not deleted).
    async fn delete_sandbox(
        &self,
        name: &str,
        grace: Duration,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError>;
    /// The Sandbox by name, `None` when there is none (or the API is not served).
    async fn get_sandbox(&self, name: &str) -> Result<Option<Sandbox>, ClusterError>;
    /// The Sandboxes matching a label selector (none where the API is not served).
    async fn list_sandboxes(&self, selector: &str) -> Result<Vec<Sandbox>, ClusterError>;
    /// Whether the cluster serves agent-sandbox's extensions (templates, warm pools, claims)
    /// at [`super::pool::EXT_VERSION`] (API discovery, once per value).
    async fn extensions_served(&self) -> Result<bool, ClusterError>;
    /// Creates an extension object; returns it as stored.
    async fn ext_create(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ClusterError>;
    /// Creates the object, or replaces the one of its name (`bot-bottle pool apply`).
    async fn ext_apply(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ClusterError>;
    /// The object by name, `None` when there is none.
    async fn ext_get(
        &self,
        kind: ExtKind,
        name: &str,
    ) -> Result<Option<serde_json::Value>, ClusterError>;
    /// As [`Cluster::watch_pod`], for an extension object.
    async fn ext_watch(
        &self,
        kind: ExtKind,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'v> Fn(&'v serde_json::Value) -> bool + Send + Sync),
    ) -> Result<Option<serde_json::Value>, ClusterError>;
    /// Deletes the object (what it owns goes with it); `false` when there was none. With
    /// `uid`, only the object of that uid (a delete precondition, as
    /// [`Cluster::delete_sandbox`]).
    async fn ext_delete(
        &self,
        kind: ExtKind,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError>;
    /// The objects matching a label selector (none where the extensions are not served).
    async fn ext_list(
        &self,
        kind: ExtKind,
        selector: &str,
    ) -> Result<Vec<serde_json::Value>, ClusterError>;
}

/// The error of a Sandbox call to a cluster that serves no Sandbox API.
pub fn no_sandbox_api(namespace: &str) -> ClusterError {
    ClusterError::Api {
        code: 404,
        reason: "NotFound".into(),
        message: format!(
            "the cluster serves no {}/Sandbox API (agent-sandbox is not installed) for namespace `{namespace}`",
            super::objects::SANDBOX_GROUP
        ),
    }
}

/// The agent container's streams, attached. With a terminal, stdout carries both outputs
/// and there is no stderr.
pub struct Attached {
    pub stdin: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    pub stdout: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    pub stderr: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
    /// Window sizes (rows, columns) for the terminal; `None` without one.
    pub resize: Option<tokio::sync::mpsc::Sender<(u16, u16)>>,
}

/// A port-forwarded connection.
pub type PortStream = Box<dyn PortIo>;

/// Read and write halves of a forwarded port.
pub trait PortIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> PortIo for T {}

/// Why a call to the cluster failed, in the operator's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig, no such context, or the API server cannot be reached.
    #[error(
        "cannot reach the Kubernetes API server: {0}; check `kubectl cluster-info` works with the same kubeconfig and context"
    )]
    Connect(String),
    /// RBAC refused the call.
    #[error(
        "the cluster refused to {action} in namespace `{namespace}`: {message}; ask the cluster's admin for a Role allowing pods, pods/attach, pods/portforward, secrets, configmaps and persistentvolumeclaims there (and sandboxes of agents.x-k8s.io where agent-sandbox is installed) (README: running on a cluster)"
    )]
    Forbidden {
        action: String,
        namespace: String,
        message: String,
    },
    /// A ResourceQuota (or LimitRange) refused the pod.
    #[error(
        "the namespace `{namespace}` has no room for this bottle: {message}; lower `resources:` in the manifest or ask for a larger quota"
    )]
    Quota { namespace: String, message: String },
    /// The nodes cannot pull an image.
    #[error(
        "the cluster cannot pull image `{image}` ({reason}: {message}); push it to the registry named by `kubernetes.registry` in the manifest and give the namespace a pull secret if the registry is private"
    )]
    ImagePull {
        image: String,
        reason: String,
        message: String,
    },
    /// The scheduler found no node (resources, runtime class, taints).
    #[error(
        "no node can run this bottle: {0}; check the runtime class exists (`kubectl get runtimeclass`) and that a node has the requested resources"
    )]
    Unschedulable(String),
    /// A container of the pod failed before the agent started (the packet filter, the
    /// sidecar bundle, the workspace clone): the bottle is not started.
    #[error("the bottle's `{container}` container failed before the agent started: {message}")]
    SetupFailed { container: String, message: String },
    /// The object exists already (an identity is never reused).
    #[error("{0} exists already in the cluster")]
    Exists(String),
    /// The API server found the object invalid (422): a value bot-bottle sent is wrong.
    #[error(
        "the Kubernetes API server rejected the bottle's {kind} as invalid: {message}; check the manifest's `kubernetes:` values (`bot-bottle start --dry-run` prints the objects) and report it if they look right"
    )]
    Invalid { kind: String, message: String },
    /// The pod found under the bottle's name is not the pod built for it (one made
    /// beforehand that agent-sandbox's controller adopted, or one changed since it was
    /// created): the bottle is not run in it ([`super::podcheck`]).
    #[error(
        "pod `{pod}` in namespace `{namespace}` is not the pod built for this bottle: its `{field}` differs, so the bottle was not started in it and its Sandbox or pod was deleted; a pod of the bottle's name made beforehand (agent-sandbox adopts an unowned pod labelled `agents.x-k8s.io/adoptable: \"true\"`) or changed after it was created (`kubectl patch`, a mutating admission webhook) is refused: check who may create and patch pods in `{namespace}` (`kubectl -n {namespace} get rolebindings`), exempt the namespace from webhooks that change pods, and start the bottle again"
    )]
    NotBuilt {
        pod: String,
        namespace: String,
        field: String,
    },
    /// The pod under the bottle's name is not the one its launch checked and ran the agent
    /// in (another uid): it was deleted and made again under that name (on the Sandbox
    /// path, one its controller adopted). The operator's side (the relay's port-forward,
    /// the terminal's attach, `stop`) neither reaches nor deletes it.
    #[error(
        "pod `{pod}` in namespace `{namespace}` is not the pod this bottle was launched in: its uid is {found}, the launch checked uid {recorded}; it was deleted and made again under the bottle's name, so nothing of the operator's (proposals, decisions, the terminal) is sent to it and bot-bottle does not delete it: look at it (`kubectl -n {namespace} get pod {pod} -o yaml`), check who may delete and create pods in `{namespace}` (`kubectl -n {namespace} get rolebindings`), delete it yourself if it must go, and start the bottle again"
    )]
    Replaced {
        pod: String,
        namespace: String,
        recorded: String,
        found: String,
    },
    /// An object of the bottle's other than its pod (its Sandbox, a warm bottle's
    /// SandboxClaim) was deleted and made again under its name since the bottle made or
    /// took it (another uid: the API server refused the delete precondition). It is not the
    /// bottle's: its teardown leaves it and goes on.
    #[error(
        "{kind} `{name}` in namespace `{namespace}` is not the one this bottle made or took: its uid is {found}, the bottle's was {recorded}; it was deleted and made again under that name, so bot-bottle left it: look at it (`kubectl -n {namespace} get {kind} {name} -o yaml`) and delete it yourself if it must go"
    )]
    ReplacedObject {
        /// As kubectl names the resource (`sandbox`, `sandboxclaim`).
        kind: String,
        name: String,
        namespace: String,
        recorded: String,
        found: String,
    },
    /// An object under a bottle's name whose uid the bottle's record does not hold (a record
    /// of an older binary) and that the pod its launch checked does not prove the bottle's
    /// (that pod's controller, by uid): it could be one made again under the name, so
    /// `stop` deletes nothing by the name alone and says what to do by hand.
    #[error(
        "{kind} `{name}` in namespace `{namespace}` is not known to be this bottle's: the bottle's record (written by an older bot-bottle) does not hold its uid and {why}, so bot-bottle deletes nothing by that name alone (it could be one made again under it): look at it (`kubectl -n {namespace} get {kind} {name} -o yaml`) and, if it is the bottle's, delete it yourself (`kubectl -n {namespace} delete {kind} {name}`)"
    )]
    Unproven {
        /// As kubectl names the resource (`sandbox`, `sandboxclaim`).
        kind: String,
        name: String,
        namespace: String,
        /// Why the pod the launch checked proves nothing of it.
        why: String,
    },
    /// The API server answered with an object the bottle makes or takes (its pod, Sandbox,
    /// claims) without a uid: the object cannot be told from one made again under its name,
    /// so the bottle is not started in it and it is not deleted by its name alone. No API
    /// server stores an object so; something answering for it may.
    #[error(
        "the Kubernetes API server answered with {kind} `{name}` in namespace `{namespace}` without a uid, so it cannot be told from one made again under that name: the bottle was not started, and bot-bottle does not delete it by its name alone; look at it (`kubectl -n {namespace} get {kind} {name} -o yaml`), delete it yourself if it is still there (`kubectl -n {namespace} delete {kind} {name}`), and check what answers for the API server (it gives every object a uid)"
    )]
    NoUid {
        /// As kubectl names the resource (`pod`, `sandboxclaim`).
        kind: String,
        name: String,
        namespace: String,
    },
    /// Waiting took longer than allowed.
    #[error("{0}")]
    Timeout(String),
    /// Anything else the API server answered.
    #[error("the Kubernetes API answered {code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
}

impl ClusterError {
    /// Classifies an API error status (code, reason, message) of `action`.
    pub fn from_status(
        action: &str,
        namespace: &str,
        code: u16,
        reason: &str,
        message: &str,
    ) -> ClusterError {
        let quota = message.contains("exceeded quota")
            || message.contains("must specify limits")
            || message.contains("maximum cpu usage")
            || message.contains("maximum memory usage");
        // `create pods` -> `pod`, `create sandboxes` -> `sandbox`: what the refused object
        // is (a subresource's, `pods/attach`, is its object's).
        let plural = action
            .rsplit(' ')
            .next()
            .unwrap_or(action)
            .split('/')
            .next()
            .unwrap_or(action);
        let kind = match plural.strip_suffix("xes") {
            Some(stem) => format!("{stem}x"),
            None => plural.strip_suffix('s').unwrap_or(plural).to_owned(),
        };
        match (code, reason) {
            (403, _) if quota => ClusterError::Quota {
                namespace: namespace.to_owned(),
                message: message.to_owned(),
            },
            (403, _) | (_, "Forbidden") => ClusterError::Forbidden {
                action: action.to_owned(),
                namespace: namespace.to_owned(),
                message: message.to_owned(),
            },
            (409, _) | (_, "AlreadyExists") => {
                ClusterError::Exists(format!("a {kind} of that name"))
            }
            (422, _) | (_, "Invalid") => ClusterError::Invalid {
                kind,
                message: message.to_owned(),
            },
            (401, _) => ClusterError::Connect(format!("unauthorized: {message}")),
            _ => ClusterError::Api {
                code,
                reason: reason.to_owned(),
                message: message.to_owned(),
            },
        }
    }
}

/// Where a bottle's pod is, as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Still being set up (scheduling, pulling, init containers).
    Starting,
    /// The sidecar is ready and the agent runs.
    Running,
    /// The agent ended with this exit code.
    Ended(i32),
    /// It can never become ready: the error says why.
    Failed(ClusterError),
}

/// Reasons a container waits that mean it never will start.
const IMAGE_PULL: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const CONFIG: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];

/// Judges a pod's status (pure: tested on hand-written statuses).
pub fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Starting;
    };
    let image_of = |name: &str| {
        pod.spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
            })
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let inits = status.init_container_statuses.iter().flatten();
    let mains = status.container_statuses.iter().flatten();
    for c in inits.clone().chain(mains.clone()) {
        let Some(state) = &c.state else { continue };
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.clone().unwrap_or_default();
            let message = waiting.message.clone().unwrap_or_default();
            if IMAGE_PULL.contains(&reason.as_str()) {
                return PodState::Failed(ClusterError::ImagePull {
                    image: image_of(&c.name),
                    reason,
                    message,
                });
            }
            if CONFIG.contains(&reason.as_str()) {
                return PodState::Failed(ClusterError::SetupFailed {
                    container: c.name.clone(),
                    message: format!("{reason}: {message}"),
                });
            }
        }
    }
    // An init container that ended badly (the packet filter, the clone): fail closed.
    for c in inits.clone() {
        if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref())
            && t.exit_code != 0
            && c.name != "sidecar"
        {
            return PodState::Failed(ClusterError::SetupFailed {
                container: c.name.clone(),
                message: format!(
                    "exit code {}{}",
                    t.exit_code,
                    t.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            });
        }
    }
    if let Some(agent) = mains
        .clone()
        .find(|c| c.name == super::objects::AGENT_CONTAINER)
        && let Some(t) = agent.state.as_ref().and_then(|s| s.terminated.as_ref())
    {
        return PodState::Ended(t.exit_code);
    }
    // The sidecar died while the agent runs (or before): the bottle has no sidecar.
    let sidecar_dead = inits
        .clone()
        .find(|c| c.name == "sidecar")
        .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
    if sidecar_dead {
        return PodState::Failed(ClusterError::SetupFailed {
            container: "sidecar".into(),
            message: "the sidecar bundle ended; the bottle never runs without it".into(),
        });
    }
    if let Some(cond) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        && cond.reason.as_deref() == Some("Unschedulable")
    {
        return PodState::Failed(ClusterError::Unschedulable(
            cond.message.clone().unwrap_or_default(),
        ));
    }
    match status.phase.as_deref() {
        Some("Failed") => PodState::Failed(ClusterError::SetupFailed {
            container: "pod".into(),
            message: status
                .message
                .clone()
                .or_else(|| status.reason.clone())
                .unwrap_or_else(|| "the pod failed".into()),
        }),
        Some("Succeeded") => PodState::Ended(0),
        _ => {
            let agent_running = mains.clone().any(|c| {
                c.name == super::objects::AGENT_CONTAINER
                    && c.state.as_ref().is_some_and(|s| s.running.is_some())
            });
            if agent_running {
                PodState::Running
            } else {
                PodState::Starting
            }
        }
    }
}
