//! An in-memory cluster that answers like an API server does, for the lifecycle tests here
//! and the launcher's (public so that `launcher`'s tests drive a whole `start` against it).
//!
//! What it keeps of the API server's behaviour, because the backend depends on it:
//! * every change bumps one resource version (`metadata.resourceVersion`), and a watch sees
//!   every change after the version it started from, in order (a pod that goes through two
//!   states quickly shows both);
//! * objects get a `uid` on creation (and when a test puts one there); a name that exists is
//!   refused (409 AlreadyExists); [`FakeCluster::without_uids`] makes a kind's objects
//!   without one, as no API server does, for the tests of what bot-bottle refuses then;
//!   an object the API server would not store is refused (422 Invalid: a name that is not a
//!   DNS subdomain, a pod without containers, a container without an image, a Secret or
//!   ConfigMap key with a `/`), and one over 1 MiB too (413);
//! * deleting a pod deletes what it owns (the garbage collector), with a `DELETED` event;
//!   a delete with a uid precondition (of any kind) refuses an object of another uid (409),
//!   as the API server does, in the words the real client uses ([`ObjectKind::replaced`]);
//! * attach works only to a running agent container (400 otherwise), and gives the test the
//!   container's end of its stdin, stdout and stderr;
//! * a test plays the kubelet: a script of pod statuses applied after creation, one event
//!   each ([`FakeCluster::kubelet`]), or a status set later ([`FakeCluster::set_status`]);
//!   and it can make a call fail as the API server would refuse it ([`FakeCluster::refuse`]);
//! * with [`FakeCluster::serve_sandboxes`] it serves agent-sandbox's `Sandbox` (API
//!   discovery answers with that version) and plays its controller: a created Sandbox gets
//!   a pod made from its template, named as it, owned by it (a controller reference), its
//!   name in the Sandbox's `agents.x-k8s.io/pod-name` annotation and a `Ready` condition
//!   that follows the pod; a pod template the API server refuses leaves the Sandbox with
//!   `Ready=False` (`ReconcilerError`) and no pod, as the controller reports it; a pod of a
//!   Sandbox that is deleted alone is made again (the controller keeps it), and deleting
//!   the Sandbox deletes its pod and what either owns; a pod of the Sandbox's name that
//!   is there already is adopted as it is when it is unowned and labelled
//!   `agents.x-k8s.io/adoptable: "true"` (or carries the tracking label), refused
//!   (`ReconcilerError`) otherwise;
//! * with [`FakeCluster::serve_warm_pools`] it serves agent-sandbox's extensions and plays
//!   the warm pool controller (a pool's Sandboxes made from its template, named
//!   `<pool>-<suffix>`, controlled by the pool, with the controller's secure defaults:
//!   public resolvers unless the template's network policy is `Unmanaged`; its status
//!   counts those whose pod runs) and the claim controller (a claim adopts a ready Sandbox
//!   of its pool: the controller reference moved to the claim, the pod template's and the
//!   pod's labels and annotations rewritten from `additionalPodMetadata`, the spec kept;
//!   the claim's status names the Sandbox and the pool makes another; deleting the claim
//!   deletes the Sandbox and its pod); [`FakeCluster::hold_claims`] stops the claim
//!   controller;
//! * port-forward to a port the test routed ([`FakeCluster::forward_port_to`]) is a real TCP
//!   connection to a listener on loopback;
//! * port-forward reaches a real listener when the test says where its bytes go
//!   ([`FakeCluster::forward_through`]: the real client over the websocket protocol of
//!   `test_support::kube_api`'s fake API server); otherwise the port echoes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PersistentVolumeClaim, Pod, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::DuplexStream;
use tokio::sync::Notify;

use super::cluster::{
    Attached, Cluster, ClusterError, Leftover, LeftoverKind, ObjectKind, PodState, PortStream,
    no_sandbox_api, pod_state,
};
use super::objects::{SANDBOX_POD_NAME, Sandbox, SandboxCondition, SandboxStatus};
use super::pool::{self, ExtKind, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use super::settings::dns_subdomain;

/// The label by which agent-sandbox's controller may adopt an unowned pod.
pub const ADOPTABLE_LABEL: &str = "agents.x-k8s.io/adoptable";

/// The label by which agent-sandbox's controller finds a Sandbox's pod.
const TRACKING_LABEL: &str = "agents.x-k8s.io/sandbox-name-hash";

/// The namespace the fake cluster works in.
pub const NAMESPACE: &str = "agents";

/// The API server's object size limit.
const MAX_OBJECT: usize = 1024 * 1024;

/// An in-memory cluster (one namespace, [`NAMESPACE`]).
#[derive(Default)]
pub struct FakeCluster {
    state: Mutex<State>,
    changed: Notify,
}

/// What a watch sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Added,
    Modified,
    Deleted,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    secrets: BTreeMap<String, Secret>,
    config_maps: BTreeMap<String, ConfigMap>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    /// Pod events by resource version, as a watch replays them.
    history: Vec<(u64, Event, Pod)>,
    version: u64,
    /// Every call, in order (`create pod NAME`, `delete pod NAME grace=N`, ...).
    calls: Vec<String>,
    /// Calls (by their first two words, e.g. `create pod`) that fail with the error.
    fail: BTreeMap<String, ClusterError>,
    /// The statuses a created pod goes through, one event each.
    kubelet: Vec<PodStatus>,
    next_uid: u32,
    /// The container's ends of attached streams, by pod name.
    attached: BTreeMap<String, AgentEnds>,
    /// Where port-forwards go (a real client of a fake API server), if anywhere.
    forward: Option<std::sync::Arc<dyn Cluster>>,
    /// The served version of the `Sandbox` API; `None`: agent-sandbox is not installed.
    sandbox_version: Option<String>,
    sandboxes: BTreeMap<String, Sandbox>,
    /// Sandbox events by resource version.
    sandbox_history: Vec<(u64, Event, Sandbox)>,
    /// Whether agent-sandbox's extensions (templates, warm pools, claims) are served.
    extensions: bool,
    /// Extension objects by kind and name.
    ext: BTreeMap<(ExtKind, String), serde_json::Value>,
    /// Port-forwards to these ports go to a real listener on loopback.
    forward_ports: BTreeMap<u16, std::net::SocketAddr>,
    /// The claim controller does not act (not running, or too slow).
    claims_held: bool,
    /// Secrets and ConfigMaps made again under their names (a new uid) right after the
    /// next list of them returned the old ones: a launch racing `cleanup`.
    remade_after_list: Vec<Leftover>,
    /// Kinds whose objects are made without a uid ([`FakeCluster::without_uids`]).
    uidless: Vec<ObjectKind>,
}

/// The agent container's side of an attach: what `start` writes to its stdin is read from
/// `stdin`; what is written to `stdout` / `stderr` reaches `start`.
pub struct AgentEnds {
    pub stdin: DuplexStream,
    pub stdout: DuplexStream,
    pub stderr: Option<DuplexStream>,
    /// The window sizes sent, when attached with a terminal.
    pub sizes: Option<tokio::sync::mpsc::Receiver<(u16, u16)>>,
    pub tty: bool,
}

fn invalid(kind: &str, message: String) -> ClusterError {
    ClusterError::from_status(
        &format!("create {kind}s"),
        NAMESPACE,
        422,
        "Invalid",
        &message,
    )
}

fn exists(kind: &str, name: &str) -> ClusterError {
    ClusterError::from_status(
        &format!("create {kind}s"),
        NAMESPACE,
        409,
        "AlreadyExists",
        &format!("{kind}s \"{name}\" already exists"),
    )
}

/// Checks what the API server checks of every object: its name, its size.
fn admit(kind: &str, meta: &ObjectMeta, size: usize) -> Result<String, ClusterError> {
    let name = meta.name.clone().unwrap_or_default();
    // An empty name fails too (its one label is empty).
    if let Err(why) = dns_subdomain(&name) {
        return Err(invalid(
            kind,
            format!("{kind} \"{name}\" is invalid: metadata.name: Invalid value: {why}"),
        ));
    }
    if meta.namespace.as_deref().is_some_and(|ns| ns != NAMESPACE) {
        return Err(ClusterError::Api {
            code: 400,
            reason: "BadRequest".into(),
            message: "the namespace of the provided object does not match the namespace sent on the request".into(),
        });
    }
    if size > MAX_OBJECT {
        return Err(ClusterError::Api {
            code: 413,
            reason: "RequestEntityTooLarge".into(),
            message: "Request entity too large: limit is 3145728".into(),
        });
    }
    Ok(name)
}

/// The objects whose labels hold every `key=value` of `selector` (a label selector of
/// equalities, as the fake's callers write them).
fn selected<'a, T: Clone + 'a>(
    objects: impl IntoIterator<Item = &'a T>,
    selector: &str,
    meta: impl Fn(&T) -> &ObjectMeta,
) -> Vec<T> {
    let wanted: Vec<(&str, &str)> = selector
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    objects
        .into_iter()
        .filter(|o| {
            let labels = meta(o).labels.as_ref();
            wanted
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(*k)).map(String::as_str) == Some(*v))
        })
        .cloned()
        .collect()
}

/// What the API server checks of a pod beyond its name: containers, their names, images.
fn check_pod(pod: &Pod) -> Result<(), ClusterError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.containers.is_empty() {
        return Err(invalid(
            "pod",
            format!("Pod \"{name}\" is invalid: spec.containers: Required value"),
        ));
    }
    for (n, c) in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .enumerate()
    {
        if super::settings::dns_label(&c.name).is_err() {
            return Err(invalid(
                "pod",
                format!(
                    "Pod \"{name}\" is invalid: spec.containers[{n}].name: Invalid value: \"{}\"",
                    c.name
                ),
            ));
        }
        if c.image.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "pod",
                format!("Pod \"{name}\" is invalid: spec.containers[{n}].image: Required value"),
            ));
        }
    }
    Ok(())
}

/// The Sandbox that controls a pod, by name.
fn sandbox_owner(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "Sandbox" && r.controller == Some(true))
        .map(|r| r.name.clone())
}

/// The template's pod template as the pool controller puts it in a Sandbox: with
/// agent-sandbox's "secure by default" changes (`extensions/controllers/utils.go:24`): no
/// service-account token unless said, and with a `Managed` network policy (the default)
/// public resolvers in place of the cluster's DNS.
fn secure_defaults(template: &SandboxTemplate) -> super::objects::SandboxPodTemplate {
    let mut pod = template.spec.pod_template.clone();
    let spec = &mut pod.spec;
    if spec.automount_service_account_token.is_none() {
        spec.automount_service_account_token = Some(false);
    }
    let managed = template
        .spec
        .network_policy_management
        .as_deref()
        .is_none_or(|m| m == "Managed");
    if managed && spec.dns_policy.is_none() {
        spec.dns_policy = Some("None".into());
        spec.dns_config = Some(k8s_openapi::api::core::v1::PodDNSConfig {
            nameservers: Some(vec!["8.8.8.8".into(), "1.1.1.1".into()]),
            ..Default::default()
        });
    }
    pod
}

/// The (kind, name) of an object's controller reference.
fn controller_of(meta: &ObjectMeta) -> Option<(String, String)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.kind.clone(), r.name.clone()))
}

fn controller_ref(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A delete precondition on `uid` as the API server checks it (409 Conflict): `found` is
/// the uid of the object of that name, `None` when there is none (nothing to refuse).
fn precondition(
    kind: ObjectKind,
    name: &str,
    uid: Option<&str>,
    found: Option<Option<String>>,
) -> Result<(), ClusterError> {
    match (uid, found) {
        (Some(uid), Some(found)) if found.as_deref() != Some(uid) => {
            Err(kind.replaced(name, NAMESPACE, uid, found.as_deref().unwrap_or("none")))
        }
        _ => Ok(()),
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: Option<&serde_json::Value>) -> Option<T> {
    value.and_then(|v| serde_json::from_value(v.clone()).ok())
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// What the fake keeps a watchable history of: pods, and agent-sandbox `Sandbox`es.
trait Watched: Clone + Send + Sync {
    /// As the timeout names it (`pod`, `sandbox`).
    const KIND: &'static str;
    fn name(&self) -> Option<&str>;
    fn current(state: &State, name: &str) -> Option<Self>;
    fn history(state: &State) -> &[(u64, Event, Self)];
}

impl Watched for Pod {
    const KIND: &'static str = "pod";
    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
    fn current(state: &State, name: &str) -> Option<Pod> {
        state.pods.get(name).cloned()
    }
    fn history(state: &State) -> &[(u64, Event, Pod)] {
        &state.history
    }
}

impl Watched for Sandbox {
    const KIND: &'static str = "sandbox";
    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
    fn current(state: &State, name: &str) -> Option<Sandbox> {
        state.sandboxes.get(name).cloned()
    }
    fn history(state: &State) -> &[(u64, Event, Sandbox)] {
        &state.sandbox_history
    }
}

impl FakeCluster {
    pub fn new() -> FakeCluster {
        FakeCluster::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// As the real client: get, then watch every event of `name` after that version, until
    /// `done` holds (`Some`), the object is deleted (`None`) or `timeout` passes.
    async fn watch<T: Watched>(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'o> Fn(&'o T) -> bool + Send + Sync),
    ) -> Result<Option<T>, ClusterError> {
        let (current, mut seen) = {
            let state = self.lock();
            (T::current(&state, name), state.version)
        };
        let Some(current) = current else {
            return Ok(None);
        };
        if done(&current) {
            return Ok(Some(current));
        }
        let work = async {
            loop {
                let notified = self.changed.notified();
                let events: Vec<(u64, Event, T)> = T::history(&self.lock())
                    .iter()
                    .filter(|(v, _, o)| *v > seen && o.name() == Some(name))
                    .cloned()
                    .collect();
                for (version, event, object) in events {
                    seen = version;
                    match event {
                        Event::Deleted => return None,
                        Event::Added | Event::Modified if done(&object) => return Some(object),
                        _ => {}
                    }
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClusterError::Timeout(format!("{} {name} did not get there", T::KIND)))
    }

    /// Makes the calls starting with `call` (`create pod`, `watch pod`, `attach pod`...) fail
    /// with `error` from now on.
    /// Objects of `kind` made from now on (created, made by a controller, put there) get no
    /// uid. No API server stores one so; an answer without one (from something between, or
    /// a broken server) must still not pass for an identity: the tests of what bot-bottle
    /// refuses then.
    pub fn without_uids(&self, kind: ObjectKind) {
        self.lock().uidless.push(kind);
    }

    pub fn fail(&self, call: &str, error: ClusterError) {
        self.lock().fail.insert(call.to_owned(), error);
    }

    /// Makes `call` fail as the API server answers `code reason: message` to `action`
    /// (`create pods`): the error the real client would return.
    pub fn refuse(&self, call: &str, action: &str, code: u16, reason: &str, message: &str) {
        self.fail(
            call,
            ClusterError::from_status(action, NAMESPACE, code, reason, message),
        );
    }

    /// Port-forwards to existing pods go through `cluster` from now on (the real client,
    /// [`super::client::KubeCluster`], over a fake API server's websocket).
    pub fn forward_through(&self, cluster: std::sync::Arc<dyn Cluster>) {
        self.lock().forward = Some(cluster);
    }

    /// Port-forwards to `port` of any pod go to `addr` on loopback from now on (a real
    /// listener: a warm pod's `bot-bottle intake`).
    pub fn forward_port_to(&self, port: u16, addr: std::net::SocketAddr) {
        self.lock().forward_ports.insert(port, addr);
    }

    /// Serves agent-sandbox's extensions (templates, warm pools, claims) from now on, with
    /// the pool and claim controllers; the `Sandbox` API too, at `v1beta1`, if it is not
    /// served yet.
    pub fn serve_warm_pools(&self) {
        let mut state = self.lock();
        state.extensions = true;
        if state.sandbox_version.is_none() {
            state.sandbox_version = Some("v1beta1".into());
        }
    }

    /// The claim controller stops acting: claims stay unbound.
    pub fn hold_claims(&self) {
        self.lock().claims_held = true;
    }

    /// The extension object `kind` `name` as stored.
    pub fn ext_object(&self, kind: ExtKind, name: &str) -> Option<serde_json::Value> {
        self.lock().ext.get(&(kind, name.to_owned())).cloned()
    }

    /// The Sandboxes (by name) of warm pool `pool` not claimed yet.
    pub fn pool_sandboxes(&self, pool: &str) -> Vec<String> {
        let state = self.lock();
        state
            .sandboxes
            .values()
            .filter(|s| {
                controller_of(&s.metadata).is_some_and(|(k, n)| k == "SandboxWarmPool" && n == pool)
            })
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    }

    /// Serves agent-sandbox's `Sandbox` at `version` (`v1beta1`) from now on, its
    /// controller included: the CRD and the controller installed.
    pub fn serve_sandboxes(&self, version: &str) {
        self.lock().sandbox_version = Some(version.to_owned());
    }

    pub fn sandbox(&self, name: &str) -> Option<Sandbox> {
        self.lock().sandboxes.get(name).cloned()
    }

    /// Puts a Sandbox there directly, its controller not acting on it (one whose pod is
    /// gone, or that a launcher left behind).
    pub fn insert_sandbox(&self, mut sandbox: Sandbox) {
        let name = sandbox.metadata.name.clone().unwrap_or_default();
        let mut state = self.lock();
        FakeCluster::stamp(&mut state, ObjectKind::Sandbox, &mut sandbox.metadata);
        let version = state.version;
        state
            .sandbox_history
            .push((version, Event::Added, sandbox.clone()));
        state.sandboxes.insert(name, sandbox);
        drop(state);
        self.changed.notify_waiters();
    }

    /// A created pod gets `status` at once (one event).
    pub fn on_create(&self, status: PodStatus) {
        self.kubelet(vec![status]);
    }

    /// A created pod goes through `statuses`, one event each, as the kubelet reports them.
    pub fn kubelet(&self, statuses: Vec<PodStatus>) {
        self.lock().kubelet = statuses;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn pod(&self, name: &str) -> Option<Pod> {
        self.lock().pods.get(name).cloned()
    }

    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.lock().secrets.get(name).cloned()
    }

    pub fn config_map(&self, name: &str) -> Option<ConfigMap> {
        self.lock().config_maps.get(name).cloned()
    }

    pub fn claim(&self, name: &str) -> Option<PersistentVolumeClaim> {
        self.lock().claims.get(name).cloned()
    }

    /// Puts a claim there directly (someone else's, or one of another home), with a uid of
    /// its own unless it has one.
    pub fn insert_claim(&self, mut claim: PersistentVolumeClaim) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let mut state = self.lock();
        FakeCluster::give_uid(&mut state, ObjectKind::VolumeClaim, &mut claim.metadata);
        state.claims.insert(name, claim);
    }

    /// Puts a pod there directly (one another launcher created), with a uid of its own
    /// unless it has one (the API server gives every object one).
    pub fn insert_pod(&self, mut pod: Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut state = self.lock();
        FakeCluster::give_uid(&mut state, ObjectKind::Pod, &mut pod.metadata);
        state.version += 1;
        pod.metadata.resource_version = Some(state.version.to_string());
        let version = state.version;
        state.history.push((version, Event::Added, pod.clone()));
        state.pods.insert(name, pod);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Changes a pod as `kubectl patch` would (one `MODIFIED` event); `false` when there is
    /// no such pod.
    pub fn patch_pod(&self, name: &str, change: impl FnOnce(&mut Pod)) -> bool {
        let mut state = self.lock();
        state.version += 1;
        let version = state.version;
        let Some(pod) = state.pods.get_mut(name) else {
            return false;
        };
        change(pod);
        pod.metadata.resource_version = Some(version.to_string());
        let pod = pod.clone();
        state.history.push((version, Event::Modified, pod));
        drop(state);
        self.changed.notify_waiters();
        true
    }

    /// Puts a Secret there directly (a leftover of a failed launch), with a uid of its own
    /// unless it has one.
    pub fn insert_secret(&self, mut secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let mut state = self.lock();
        FakeCluster::give_uid(
            &mut state,
            ObjectKind::Leftover(LeftoverKind::Secret),
            &mut secret.metadata,
        );
        state.secrets.insert(name, secret);
    }

    /// Puts a ConfigMap there directly, with a uid of its own unless it has one.
    pub fn insert_config_map(&self, mut config_map: ConfigMap) {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let mut state = self.lock();
        FakeCluster::give_uid(
            &mut state,
            ObjectKind::Leftover(LeftoverKind::ConfigMap),
            &mut config_map.metadata,
        );
        state.config_maps.insert(name, config_map);
    }

    /// Makes `object` again under its name (a new uid) right after the next list of
    /// Secrets and ConfigMaps returned the one there: what a list returned is then not
    /// what the name holds.
    pub fn remake_after_list(&self, object: Leftover) {
        self.lock().remade_after_list.push(object);
    }

    /// Deletes an extension object with `propagationPolicy: Orphan` (as `kubectl delete
    /// --cascade=orphan`): what it controls stays, its owner reference to the object gone.
    pub fn orphan_ext(&self, kind: ExtKind, name: &str) -> bool {
        let mut state = self.lock();
        let Some(object) = state.ext.remove(&(kind, name.to_owned())) else {
            return false;
        };
        state.version += 1;
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for sandbox in state.sandboxes.values_mut() {
            if let Some(refs) = sandbox.metadata.owner_references.as_mut() {
                refs.retain(|r| r.uid != uid);
            }
        }
        true
    }

    /// A uid for an object put there directly, unless it has one (or its kind is made
    /// without, [`FakeCluster::without_uids`]).
    fn give_uid(state: &mut State, kind: ObjectKind, meta: &mut ObjectMeta) {
        if meta.uid.is_none() && !state.uidless.contains(&kind) {
            state.next_uid += 1;
            meta.uid = Some(format!("uid-{}", state.next_uid));
        }
    }

    /// Makes the objects [`FakeCluster::remake_after_list`] names again, each with a new uid.
    fn remake_listed(state: &mut State) {
        for Leftover { kind, mut metadata } in std::mem::take(&mut state.remade_after_list) {
            let name = metadata.name.clone().unwrap_or_default();
            FakeCluster::stamp(state, ObjectKind::Leftover(kind), &mut metadata);
            match kind {
                LeftoverKind::Secret => {
                    state.secrets.insert(
                        name,
                        Secret {
                            metadata,
                            ..Default::default()
                        },
                    );
                }
                LeftoverKind::ConfigMap => {
                    state.config_maps.insert(
                        name,
                        ConfigMap {
                            metadata,
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }

    /// Moves a pod along, as the kubelet would (one `MODIFIED` event).
    pub fn set_status(&self, name: &str, status: PodStatus) {
        let mut state = self.lock();
        FakeCluster::modify(&mut state, name, status);
        drop(state);
        self.changed.notify_waiters();
    }

    /// The agent container's ends of the last attach to `name`, once.
    pub fn take_attached(&self, name: &str) -> Option<AgentEnds> {
        self.lock().attached.remove(name)
    }

    /// Waits (up to `timeout`) until something attached to `name`, and takes its ends.
    pub async fn attached(&self, name: &str, timeout: Duration) -> Option<AgentEnds> {
        let work = async {
            loop {
                let notified = self.changed.notified();
                if let Some(ends) = self.take_attached(name) {
                    return ends;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, work).await.ok()
    }

    fn modify(state: &mut State, name: &str, status: PodStatus) {
        state.version += 1;
        let version = state.version;
        if let Some(pod) = state.pods.get_mut(name) {
            pod.status = Some(status);
            pod.metadata.resource_version = Some(version.to_string());
            let pod = pod.clone();
            // The agent ended: the API server closes the streams attached to it.
            if matches!(pod_state(&pod), PodState::Ended(_)) {
                state.attached.remove(name);
            }
            let owner = sandbox_owner(&pod);
            state.history.push((version, Event::Modified, pod.clone()));
            if let Some(owner) = owner {
                FakeCluster::sandbox_follows(state, &owner, Some(&pod));
            }
        }
    }

    /// The controller's status of Sandbox `name` after its pod changed (`None`: gone).
    fn sandbox_follows(state: &mut State, name: &str, pod: Option<&Pod>) {
        let ready = match pod.map(pod_state) {
            Some(PodState::Running) => ("True", "DependenciesReady", String::new()),
            Some(PodState::Ended(0)) => ("False", "PodSucceeded", String::new()),
            Some(PodState::Ended(_)) => ("False", "PodFailed", String::new()),
            Some(PodState::Failed(e)) => ("False", "DependenciesNotReady", e.to_string()),
            Some(PodState::Starting) | None => ("False", "DependenciesNotReady", String::new()),
        };
        FakeCluster::set_ready(state, name, ready.0, ready.1, &ready.2);
    }

    fn set_ready(state: &mut State, name: &str, status: &str, reason: &str, message: &str) {
        state.version += 1;
        let version = state.version;
        let Some(sandbox) = state.sandboxes.get_mut(name) else {
            return;
        };
        sandbox.status = Some(SandboxStatus {
            conditions: vec![SandboxCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: (!message.is_empty()).then(|| message.to_owned()),
            }],
        });
        sandbox.metadata.resource_version = Some(version.to_string());
        let sandbox = sandbox.clone();
        state
            .sandbox_history
            .push((version, Event::Modified, sandbox));
    }

    /// The controller's step for Sandbox `name`: its pod, made from the template, unless it
    /// has one. A template the API server refuses is reported in the `Ready` condition.
    fn reconcile(state: &mut State, name: &str) {
        let Some(sandbox) = state.sandboxes.get(name).cloned() else {
            return;
        };
        let name_hash = format!("{:08x}", name.len());
        if let Some(pod) = state.pods.get(name).cloned() {
            FakeCluster::adopt(state, &sandbox, pod, &name_hash);
            return;
        }
        let template = &sandbox.spec.pod_template;
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        labels.insert(TRACKING_LABEL.into(), name_hash);
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(NAMESPACE.to_owned()),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: sandbox.api_version.clone(),
                        kind: "Sandbox".into(),
                        name: name.to_owned(),
                        uid: sandbox.metadata.uid.clone().unwrap_or_default(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    },
                ]),
                ..Default::default()
            },
            spec: Some(template.spec.clone()),
            status: None,
        };
        if let Err(e) = check_pod(&pod) {
            FakeCluster::set_ready(state, name, "False", "ReconcilerError", &e.to_string());
            return;
        }
        FakeCluster::stamp(state, ObjectKind::Pod, &mut pod.metadata);
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        let version = state.version;
        state.history.push((version, Event::Added, pod.clone()));
        state.pods.insert(name.to_owned(), pod);
        if let Some(sandbox) = state.sandboxes.get_mut(name) {
            sandbox
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(SANDBOX_POD_NAME.into(), name.to_owned());
        }
        FakeCluster::set_ready(state, name, "False", "DependenciesNotReady", "");
        for status in state.kubelet.clone() {
            FakeCluster::modify(state, name, status);
        }
    }

    /// The controller's step for a Sandbox whose pod name is taken: a pod it controls is
    /// kept; an unowned one labelled `agents.x-k8s.io/adoptable: "true"` (or carrying the
    /// Sandbox's tracking label) is adopted as it is, its spec unchanged
    /// (`controllers/sandbox_controller.go:1328,1393` at 2fd412d5); any other is refused
    /// (`ReconcilerError`).
    fn adopt(state: &mut State, sandbox: &Sandbox, mut pod: Pod, name_hash: &str) {
        let name = sandbox.metadata.name.clone().unwrap_or_default();
        let uid = sandbox.metadata.uid.clone().unwrap_or_default();
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .cloned();
        match controller {
            Some(r) if r.uid == uid => return,
            Some(r) => {
                let message = format!(
                    "pod {name:?} is owned by {}/{} (UID: {}), not by sandbox {name:?}",
                    r.kind, r.name, r.uid
                );
                FakeCluster::set_ready(state, &name, "False", "ReconcilerError", &message);
                return;
            }
            None => {}
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let adoptable = labels.get(ADOPTABLE_LABEL).map(String::as_str) == Some("true")
            || labels.get(TRACKING_LABEL).map(String::as_str) == Some(name_hash);
        if !adoptable {
            let message = format!(
                "cannot adopt unowned pod {name:?}: missing required pool authorization label ({ADOPTABLE_LABEL:?}) or sandbox tracking label ({TRACKING_LABEL:?})"
            );
            FakeCluster::set_ready(state, &name, "False", "ReconcilerError", &message);
            return;
        }
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: sandbox.api_version.clone(),
                kind: "Sandbox".into(),
                name: name.clone(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        state.version += 1;
        pod.metadata.resource_version = Some(state.version.to_string());
        let version = state.version;
        state.history.push((version, Event::Modified, pod.clone()));
        state.pods.insert(name.clone(), pod.clone());
        if let Some(sandbox) = state.sandboxes.get_mut(&name) {
            sandbox
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(SANDBOX_POD_NAME.into(), name.clone());
        }
        FakeCluster::sandbox_follows(state, &name, Some(&pod));
    }

    /// The warm pool controller's step for pool `name`: Sandboxes made from its template
    /// (`<pool>-<suffix>`, controlled by the pool) up to its replicas, each with its pod
    /// as the Sandbox controller makes it (`sandboxwarmpool_controller.go:1060`).
    fn reconcile_pool(state: &mut State, name: &str) {
        let Some(pool) =
            typed::<SandboxWarmPool>(state.ext.get(&(ExtKind::WarmPool, name.to_owned())))
        else {
            return;
        };
        let Some(template) = typed::<SandboxTemplate>(state.ext.get(&(
            ExtKind::Template,
            pool.spec.sandbox_template_ref.name.clone(),
        ))) else {
            return;
        };
        let have = state
            .sandboxes
            .values()
            .filter(|s| {
                controller_of(&s.metadata).is_some_and(|(k, n)| k == "SandboxWarmPool" && n == name)
            })
            .count();
        let wanted = usize::try_from(pool.spec.replicas.unwrap_or(1)).unwrap_or(0);
        let version = state
            .sandbox_version
            .clone()
            .unwrap_or_else(|| "v1beta1".into());
        for _ in have..wanted {
            state.next_uid += 1;
            let sandbox_name = format!("{name}-{:05x}", state.next_uid);
            let mut sandbox = Sandbox {
                api_version: format!("{}/{version}", super::objects::SANDBOX_GROUP),
                kind: "Sandbox".into(),
                metadata: ObjectMeta {
                    name: Some(sandbox_name.clone()),
                    owner_references: Some(vec![controller_ref(
                        &ExtKind::api_version(),
                        "SandboxWarmPool",
                        name,
                        pool.metadata.uid.as_deref().unwrap_or_default(),
                    )]),
                    ..Default::default()
                },
                spec: super::objects::SandboxSpec {
                    pod_template: secure_defaults(&template),
                },
                status: None,
            };
            FakeCluster::stamp(state, ObjectKind::Sandbox, &mut sandbox.metadata);
            let v = state.version;
            state
                .sandbox_history
                .push((v, Event::Added, sandbox.clone()));
            state.sandboxes.insert(sandbox_name.clone(), sandbox);
            FakeCluster::reconcile(state, &sandbox_name);
        }
    }

    /// The pool's status: its Sandboxes, and those whose pod runs.
    fn pool_status(state: &State, name: &str) -> pool::SandboxWarmPoolStatus {
        let mine: Vec<&Sandbox> = state
            .sandboxes
            .values()
            .filter(|s| {
                controller_of(&s.metadata).is_some_and(|(k, n)| k == "SandboxWarmPool" && n == name)
            })
            .collect();
        let ready = mine
            .iter()
            .filter(|s| {
                s.pod_name()
                    .and_then(|p| state.pods.get(&p))
                    .is_some_and(|p| pod_state(p) == PodState::Running)
            })
            .count();
        pool::SandboxWarmPoolStatus {
            replicas: i32::try_from(mine.len()).unwrap_or(i32::MAX),
            ready_replicas: i32::try_from(ready).unwrap_or(i32::MAX),
        }
    }

    /// The claim controller's step for claim `name`: it adopts a ready Sandbox of its pool
    /// — the controller reference moved to the claim, the pod template's and the pod's
    /// labels and annotations rewritten with `additionalPodMetadata`, the spec untouched
    /// (`sandboxclaim_controller.go:1236,1296`) — names it in its status and the pool makes
    /// another. With no ready Sandbox in the pool it stays unbound here, where agent-sandbox
    /// makes one from the template (a cold start, `sandboxclaim_controller.go:858`), whose
    /// pod `launch` checks the same way.
    fn reconcile_claim(state: &mut State, name: &str) {
        let Some(claim) = typed::<SandboxClaim>(state.ext.get(&(ExtKind::Claim, name.to_owned())))
        else {
            return;
        };
        if claim.sandbox_name().is_some() || state.claims_held {
            return;
        }
        let pool_name = claim.spec.warm_pool_ref.name.clone();
        let Some(sandbox_name) = state
            .sandboxes
            .values()
            .filter(|s| {
                controller_of(&s.metadata)
                    .is_some_and(|(k, n)| k == "SandboxWarmPool" && n == pool_name)
            })
            .find(|s| {
                s.pod_name()
                    .and_then(|p| state.pods.get(&p))
                    .is_some_and(|p| pod_state(p) == PodState::Running)
            })
            .and_then(|s| s.metadata.name.clone())
        else {
            return;
        };
        let extra = claim.spec.additional_pod_metadata.clone();
        let merge = |into: &mut Option<BTreeMap<String, String>>,
                     from: &Option<BTreeMap<String, String>>| {
            into.get_or_insert_default()
                .extend(from.clone().unwrap_or_default());
        };
        state.version += 1;
        let version = state.version;
        let Some(sandbox) = state.sandboxes.get_mut(&sandbox_name) else {
            return;
        };
        sandbox.metadata.owner_references = Some(vec![controller_ref(
            &ExtKind::api_version(),
            "SandboxClaim",
            name,
            claim.metadata.uid.as_deref().unwrap_or_default(),
        )]);
        merge(
            &mut sandbox.spec.pod_template.metadata.labels,
            &extra.labels,
        );
        merge(
            &mut sandbox.spec.pod_template.metadata.annotations,
            &extra.annotations,
        );
        sandbox.metadata.resource_version = Some(version.to_string());
        let sandbox = sandbox.clone();
        state
            .sandbox_history
            .push((version, Event::Modified, sandbox.clone()));
        if let Some(pod_name) = sandbox.pod_name() {
            state.version += 1;
            let version = state.version;
            if let Some(pod) = state.pods.get_mut(&pod_name) {
                merge(&mut pod.metadata.labels, &extra.labels);
                merge(&mut pod.metadata.annotations, &extra.annotations);
                pod.metadata.resource_version = Some(version.to_string());
                let pod = pod.clone();
                state.history.push((version, Event::Modified, pod));
            }
        }
        let mut bound = claim;
        bound.status = Some(pool::SandboxClaimStatus {
            conditions: vec![SandboxCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("SandboxReady".into()),
                message: None,
            }],
            sandbox: Some(pool::ClaimedSandbox {
                name: Some(sandbox_name),
            }),
        });
        state.version += 1;
        bound.metadata.resource_version = Some(state.version.to_string());
        state.ext.insert(
            (ExtKind::Claim, name.to_owned()),
            serde_json::to_value(&bound).unwrap_or_default(),
        );
        // The pool makes another in its place.
        FakeCluster::reconcile_pool(state, &pool_name);
    }

    /// Deletes an extension object and what it controls, as the garbage collector would.
    fn remove_ext(state: &mut State, kind: ExtKind, name: &str) -> bool {
        let Some(object) = state.ext.remove(&(kind, name.to_owned())) else {
            return false;
        };
        state.version += 1;
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let owned: Vec<String> = state
            .sandboxes
            .values()
            .filter(|s| {
                s.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
            })
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        for sandbox in owned {
            FakeCluster::remove_sandbox(state, &sandbox);
        }
        true
    }

    fn call(&self, call: String) -> Result<(), ClusterError> {
        let mut state = self.lock();
        let key: String = call.split(' ').take(2).collect::<Vec<_>>().join(" ");
        state.calls.push(call);
        match state.fail.get(&key) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Deletes a pod and what it owns, as the garbage collector would.
    fn remove_pod(state: &mut State, name: &str) -> bool {
        let Some(mut pod) = state.pods.remove(name) else {
            return false;
        };
        state.attached.remove(name);
        state.version += 1;
        pod.metadata.resource_version = Some(state.version.to_string());
        let version = state.version;
        state.history.push((version, Event::Deleted, pod.clone()));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let owned = |refs: &Option<
            Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
        >| { refs.iter().flatten().any(|r| r.uid == uid) };
        state
            .secrets
            .retain(|_, s| !owned(&s.metadata.owner_references));
        state
            .config_maps
            .retain(|_, c| !owned(&c.metadata.owner_references));
        // A Sandbox's controller keeps its pod: one deleted alone is made again.
        if let Some(owner) = sandbox_owner(&pod) {
            FakeCluster::reconcile(state, &owner);
        }
        true
    }

    /// Deletes a Sandbox, its pod and what either owns, as the garbage collector would.
    fn remove_sandbox(state: &mut State, name: &str) -> bool {
        let Some(mut sandbox) = state.sandboxes.remove(name) else {
            return false;
        };
        state.version += 1;
        sandbox.metadata.resource_version = Some(state.version.to_string());
        let version = state.version;
        state
            .sandbox_history
            .push((version, Event::Deleted, sandbox.clone()));
        let uid = sandbox.metadata.uid.unwrap_or_default();
        let owned = |refs: &Option<
            Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
        >| { refs.iter().flatten().any(|r| r.uid == uid) };
        let pods: Vec<String> = state
            .pods
            .iter()
            .filter(|(_, p)| owned(&p.metadata.owner_references))
            .map(|(n, _)| n.clone())
            .collect();
        for pod in pods {
            FakeCluster::remove_pod(state, &pod);
        }
        state
            .secrets
            .retain(|_, s| !owned(&s.metadata.owner_references));
        state
            .config_maps
            .retain(|_, c| !owned(&c.metadata.owner_references));
        true
    }

    /// What the API server sets on an object it stores: a new resource version, a uid
    /// (unless its kind is made without, [`FakeCluster::without_uids`]), the namespace.
    fn stamp(state: &mut State, kind: ObjectKind, meta: &mut ObjectMeta) {
        state.version += 1;
        state.next_uid += 1;
        meta.uid = (!state.uidless.contains(&kind)).then(|| format!("uid-{}", state.next_uid));
        meta.resource_version = Some(state.version.to_string());
        meta.namespace = Some(NAMESPACE.to_owned());
    }
}

#[async_trait::async_trait]
impl Cluster for FakeCluster {
    fn namespace(&self) -> &str {
        NAMESPACE
    }

    async fn create_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.call(format!("create pod {name}"))?;
        let size = serde_json::to_vec(pod).map(|v| v.len()).unwrap_or(0);
        admit("pod", &pod.metadata, size)?;
        check_pod(pod)?;
        let stored = {
            let mut state = self.lock();
            if state.pods.contains_key(&name) {
                return Err(exists("pod", &name));
            }
            let mut stored = pod.clone();
            FakeCluster::stamp(&mut state, ObjectKind::Pod, &mut stored.metadata);
            stored.status = Some(PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            });
            let version = state.version;
            state.history.push((version, Event::Added, stored.clone()));
            state.pods.insert(name.clone(), stored.clone());
            for status in state.kubelet.clone() {
                FakeCluster::modify(&mut state, &name, status);
            }
            stored
        };
        self.changed.notify_waiters();
        Ok(stored)
    }

    async fn create_secret(&self, secret: &Secret) -> Result<(), ClusterError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.call(format!("create secret {name}"))?;
        let size = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.0.len())
            .sum();
        admit("secret", &secret.metadata, size)?;
        if let Some(key) = secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .find(|k| !valid_key(k))
        {
            return Err(invalid(
                "secret",
                format!(
                    "Secret \"{name}\" is invalid: data[{key}]: Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                ),
            ));
        }
        let mut state = self.lock();
        if state.secrets.contains_key(&name) {
            return Err(exists("secret", &name));
        }
        let mut stored = secret.clone();
        FakeCluster::stamp(
            &mut state,
            ObjectKind::Leftover(LeftoverKind::Secret),
            &mut stored.metadata,
        );
        state.secrets.insert(name, stored);
        Ok(())
    }

    async fn create_config_map(&self, config_map: &ConfigMap) -> Result<(), ClusterError> {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        self.call(format!("create configmap {name}"))?;
        let size = config_map
            .data
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .chain(
                config_map
                    .binary_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| k.len() + v.0.len()),
            )
            .sum();
        admit("configmap", &config_map.metadata, size)?;
        let keys = config_map
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .chain(config_map.binary_data.iter().flatten().map(|(k, _)| k));
        for key in keys {
            if !valid_key(key) {
                return Err(invalid(
                    "configmap",
                    format!(
                        "ConfigMap \"{name}\" is invalid: data[{key}]: Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                    ),
                ));
            }
        }
        let mut state = self.lock();
        if state.config_maps.contains_key(&name) {
            return Err(exists("configmap", &name));
        }
        let mut stored = config_map.clone();
        FakeCluster::stamp(
            &mut state,
            ObjectKind::Leftover(LeftoverKind::ConfigMap),
            &mut stored.metadata,
        );
        state.config_maps.insert(name, stored);
        Ok(())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, ClusterError> {
        self.call(format!("get secret {name}"))?;
        Ok(self.lock().secrets.get(name).cloned())
    }

    async fn get_pod(&self, name: &str) -> Result<Option<Pod>, ClusterError> {
        self.call(format!("get pod {name}"))?;
        Ok(self.pod(name))
    }

    async fn watch_pod(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'p> Fn(&'p Pod) -> bool + Send + Sync),
    ) -> Result<Option<Pod>, ClusterError> {
        self.call(format!("watch pod {name}"))?;
        self.watch(name, timeout, done).await
    }

    async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, ClusterError> {
        self.call(format!("list pods {selector}"))?;
        Ok(selected(self.lock().pods.values(), selector, |o| {
            &o.metadata
        }))
    }

    async fn delete_pod(
        &self,
        name: &str,
        grace: Duration,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError> {
        self.call(format!("delete pod {name} grace={}", grace.as_secs()))?;
        let mut state = self.lock();
        let found = state.pods.get(name).map(|p| p.metadata.uid.clone());
        precondition(ObjectKind::Pod, name, uid, found)?;
        let removed = FakeCluster::remove_pod(&mut state, name);
        drop(state);
        self.changed.notify_waiters();
        Ok(removed)
    }

    async fn list_leftovers(&self, selector: &str) -> Result<Vec<Leftover>, ClusterError> {
        self.call(format!("list secrets {selector}"))?;
        self.call(format!("list configmaps {selector}"))?;
        let mut state = self.lock();
        let secrets = selected(state.secrets.values(), selector, |o| &o.metadata)
            .into_iter()
            .map(|s| Leftover {
                kind: LeftoverKind::Secret,
                metadata: s.metadata,
            });
        let maps = selected(state.config_maps.values(), selector, |o| &o.metadata)
            .into_iter()
            .map(|c| Leftover {
                kind: LeftoverKind::ConfigMap,
                metadata: c.metadata,
            });
        let listed = secrets.chain(maps).collect();
        FakeCluster::remake_listed(&mut state);
        Ok(listed)
    }

    async fn delete_leftover(
        &self,
        kind: LeftoverKind,
        name: &str,
        uid: &str,
    ) -> Result<bool, ClusterError> {
        self.call(format!("delete {} {name}", kind.noun()))?;
        let mut state = self.lock();
        let found = match kind {
            LeftoverKind::Secret => state.secrets.get(name).map(|o| o.metadata.uid.clone()),
            LeftoverKind::ConfigMap => state.config_maps.get(name).map(|o| o.metadata.uid.clone()),
        };
        precondition(ObjectKind::Leftover(kind), name, Some(uid), found)?;
        Ok(match kind {
            LeftoverKind::Secret => state.secrets.remove(name).is_some(),
            LeftoverKind::ConfigMap => state.config_maps.remove(name).is_some(),
        })
    }

    async fn get_claim(&self, name: &str) -> Result<Option<PersistentVolumeClaim>, ClusterError> {
        self.call(format!("get claim {name}"))?;
        Ok(self.claim(name))
    }

    async fn create_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ClusterError> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        self.call(format!("create claim {name}"))?;
        admit("persistentvolumeclaim", &claim.metadata, 0)?;
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|r| r.contains_key("storage"));
        if !requested {
            return Err(invalid(
                "persistentvolumeclaim",
                format!(
                    "PersistentVolumeClaim \"{name}\" is invalid: spec.resources[storage]: Required value"
                ),
            ));
        }
        let mut state = self.lock();
        if state.claims.contains_key(&name) {
            return Err(exists("persistentvolumeclaim", &name));
        }
        let mut stored = claim.clone();
        FakeCluster::stamp(&mut state, ObjectKind::VolumeClaim, &mut stored.metadata);
        state.claims.insert(name, stored.clone());
        Ok(stored)
    }

    async fn delete_claim(&self, name: &str, uid: Option<&str>) -> Result<bool, ClusterError> {
        self.call(format!("delete claim {name}"))?;
        let mut state = self.lock();
        let found = state.claims.get(name).map(|c| c.metadata.uid.clone());
        precondition(ObjectKind::VolumeClaim, name, uid, found)?;
        Ok(state.claims.remove(name).is_some())
    }

    async fn list_claims(
        &self,
        selector: &str,
    ) -> Result<Vec<PersistentVolumeClaim>, ClusterError> {
        self.call(format!("list claims {selector}"))?;
        Ok(selected(self.lock().claims.values(), selector, |o| {
            &o.metadata
        }))
    }

    async fn port_forward(&self, name: &str, port: u16) -> Result<PortStream, ClusterError> {
        self.call(format!("portforward {name} {port}"))?;
        if self.pod(name).is_none() {
            return Err(ClusterError::Api {
                code: 404,
                reason: "NotFound".into(),
                message: format!("pods \"{name}\" not found"),
            });
        }
        let to = self.lock().forward_ports.get(&port).copied();
        if let Some(addr) = to {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| ClusterError::Api {
                    code: 500,
                    reason: "InternalError".into(),
                    message: format!(
                        "error forwarding port {port} to pod {name}: failed to connect to localhost:{port}: {e}"
                    ),
                })?;
            return Ok(Box::new(stream));
        }
        let forward = self.lock().forward.clone();
        if let Some(cluster) = forward {
            return cluster.port_forward(name, port).await;
        }
        // The pod's loopback port, as an in-memory pipe whose far end echoes (a stand-in
        // for the sidecar's listener).
        let (near, mut far) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(&mut far);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        Ok(Box::new(near))
    }

    async fn attach(&self, name: &str, tty: bool) -> Result<Attached, ClusterError> {
        self.call(format!("attach pod {name} tty={tty}"))?;
        let Some(pod) = self.pod(name) else {
            return Err(ClusterError::Api {
                code: 404,
                reason: "NotFound".into(),
                message: format!("pods \"{name}\" not found"),
            });
        };
        if pod_state(&pod) != PodState::Running {
            return Err(ClusterError::Api {
                code: 400,
                reason: "BadRequest".into(),
                message: format!(
                    "container {} is not running in pod {name}",
                    super::objects::AGENT_CONTAINER
                ),
            });
        }
        let (stdin_near, stdin_far) = tokio::io::duplex(64 * 1024);
        let (stdout_near, stdout_far) = tokio::io::duplex(64 * 1024);
        let (stderr_near, stderr_far) = if tty {
            (None, None)
        } else {
            let (near, far) = tokio::io::duplex(64 * 1024);
            (Some(near), Some(far))
        };
        let (resize, sizes) = if tty {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.lock().attached.insert(
            name.to_owned(),
            AgentEnds {
                stdin: stdin_far,
                stdout: stdout_far,
                stderr: stderr_far,
                sizes,
                tty,
            },
        );
        self.changed.notify_waiters();
        Ok(Attached {
            stdin: Box::new(stdin_near),
            stdout: Box::new(stdout_near),
            stderr: stderr_near
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            resize,
        })
    }

    async fn sandbox_version(&self) -> Result<Option<String>, ClusterError> {
        self.call(format!("discover {}", super::objects::SANDBOX_GROUP))?;
        Ok(self.lock().sandbox_version.clone())
    }

    async fn create_sandbox(&self, sandbox: &Sandbox) -> Result<Sandbox, ClusterError> {
        let name = sandbox.metadata.name.clone().unwrap_or_default();
        self.call(format!("create sandbox {name}"))?;
        let served = self.lock().sandbox_version.clone();
        let Some(version) = served else {
            return Err(no_sandbox_api(NAMESPACE));
        };
        let wanted = format!("{}/{version}", super::objects::SANDBOX_GROUP);
        if sandbox.api_version != wanted || sandbox.kind != "Sandbox" {
            return Err(ClusterError::Api {
                code: 400,
                reason: "BadRequest".into(),
                message: format!(
                    "the API version of the object, {}/{}, is not {wanted}/Sandbox",
                    sandbox.api_version, sandbox.kind
                ),
            });
        }
        let size = serde_json::to_vec(sandbox).map(|v| v.len()).unwrap_or(0);
        admit("sandbox", &sandbox.metadata, size)?;
        let stored = {
            let mut state = self.lock();
            if state.sandboxes.contains_key(&name) {
                return Err(exists("sandbox", &name));
            }
            let mut stored = sandbox.clone();
            stored.status = None;
            FakeCluster::stamp(&mut state, ObjectKind::Sandbox, &mut stored.metadata);
            let version = state.version;
            state
                .sandbox_history
                .push((version, Event::Added, stored.clone()));
            state.sandboxes.insert(name.clone(), stored.clone());
            // The controller's step (at once here; a real controller is a moment later).
            FakeCluster::reconcile(&mut state, &name);
            stored
        };
        self.changed.notify_waiters();
        Ok(stored)
    }

    async fn watch_sandbox(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'s> Fn(&'s Sandbox) -> bool + Send + Sync),
    ) -> Result<Option<Sandbox>, ClusterError> {
        self.call(format!("watch sandbox {name}"))?;
        self.watch(name, timeout, done).await
    }

    async fn delete_sandbox(
        &self,
        name: &str,
        grace: Duration,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError> {
        self.call(format!("delete sandbox {name} grace={}", grace.as_secs()))?;
        let mut state = self.lock();
        let found = state.sandboxes.get(name).map(|s| s.metadata.uid.clone());
        precondition(ObjectKind::Sandbox, name, uid, found)?;
        let removed = FakeCluster::remove_sandbox(&mut state, name);
        drop(state);
        self.changed.notify_waiters();
        Ok(removed)
    }

    async fn get_sandbox(&self, name: &str) -> Result<Option<Sandbox>, ClusterError> {
        self.call(format!("get sandbox {name}"))?;
        Ok(self.sandbox(name))
    }

    async fn list_sandboxes(&self, selector: &str) -> Result<Vec<Sandbox>, ClusterError> {
        self.call(format!("list sandboxes {selector}"))?;
        Ok(selected(self.lock().sandboxes.values(), selector, |o| {
            &o.metadata
        }))
    }

    async fn extensions_served(&self) -> Result<bool, ClusterError> {
        self.call(format!("discover {}", pool::EXT_GROUP))?;
        Ok(self.lock().extensions)
    }

    async fn ext_create(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ClusterError> {
        self.ext_write("create", kind, object, false)
    }

    async fn ext_apply(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ClusterError> {
        self.ext_write("apply", kind, object, true)
    }

    async fn ext_get(
        &self,
        kind: ExtKind,
        name: &str,
    ) -> Result<Option<serde_json::Value>, ClusterError> {
        self.call(format!("get {} {name}", kind.plural()))?;
        Ok(self.ext_now(kind, name))
    }

    async fn ext_watch(
        &self,
        kind: ExtKind,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'v> Fn(&'v serde_json::Value) -> bool + Send + Sync),
    ) -> Result<Option<serde_json::Value>, ClusterError> {
        self.call(format!("watch {} {name}", kind.plural()))?;
        let work = async {
            loop {
                let notified = self.changed.notified();
                match self.ext_now(kind, name) {
                    None => return None,
                    Some(v) if done(&v) => return Some(v),
                    Some(_) => {}
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClusterError::Timeout(format!("{} {name} did not get there", kind.kind())))
    }

    async fn ext_delete(
        &self,
        kind: ExtKind,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError> {
        self.call(format!("delete {} {name}", kind.plural()))?;
        let mut state = self.lock();
        let found = state
            .ext
            .get(&(kind, name.to_owned()))
            .map(|v| v["metadata"]["uid"].as_str().map(str::to_owned));
        precondition(ObjectKind::Ext(kind), name, uid, found)?;
        let removed = FakeCluster::remove_ext(&mut state, kind, name);
        drop(state);
        self.changed.notify_waiters();
        Ok(removed)
    }

    async fn ext_list(
        &self,
        kind: ExtKind,
        selector: &str,
    ) -> Result<Vec<serde_json::Value>, ClusterError> {
        self.call(format!("list {} {selector}", kind.plural()))?;
        let names: Vec<String> = {
            let state = self.lock();
            if !state.extensions {
                return Ok(Vec::new());
            }
            let metas: Vec<(String, ObjectMeta)> = state
                .ext
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, n), v)| {
                    (
                        n.clone(),
                        serde_json::from_value(v["metadata"].clone()).unwrap_or_default(),
                    )
                })
                .collect();
            selected(metas.iter(), selector, |(_, m)| m)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        Ok(names.iter().filter_map(|n| self.ext_now(kind, n)).collect())
    }
}

impl FakeCluster {
    /// An extension object as the API server returns it now (a pool with its status).
    fn ext_now(&self, kind: ExtKind, name: &str) -> Option<serde_json::Value> {
        let state = self.lock();
        let mut value = state.ext.get(&(kind, name.to_owned())).cloned()?;
        if kind == ExtKind::WarmPool {
            value["status"] =
                serde_json::to_value(FakeCluster::pool_status(&state, name)).unwrap_or_default();
        }
        Some(value)
    }

    /// A `verb` (`create`, `apply`) of an extension object: the call is recorded by the
    /// object's name (and refused if the test set it to fail), then the object is stored.
    fn ext_write(
        &self,
        verb: &str,
        kind: ExtKind,
        object: &serde_json::Value,
        replace: bool,
    ) -> Result<serde_json::Value, ClusterError> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.call(format!("{verb} {} {name}", kind.plural()))?;
        self.ext_put(kind, object, replace)
    }

    /// Stores an extension object (replacing one of its name with `replace`), then runs
    /// the controllers that act on it.
    fn ext_put(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
        replace: bool,
    ) -> Result<serde_json::Value, ClusterError> {
        let meta: ObjectMeta =
            serde_json::from_value(object["metadata"].clone()).unwrap_or_default();
        let size = serde_json::to_vec(object).map(|v| v.len()).unwrap_or(0);
        let name = admit(&kind.kind().to_lowercase(), &meta, size)?;
        let stored = {
            let mut state = self.lock();
            if !state.extensions {
                return Err(ClusterError::Api {
                    code: 404,
                    reason: "NotFound".into(),
                    message: format!(
                        "the server could not find the requested resource ({}.{})",
                        kind.plural(),
                        pool::EXT_GROUP
                    ),
                });
            }
            if object["apiVersion"].as_str() != Some(ExtKind::api_version().as_str())
                || object["kind"].as_str() != Some(kind.kind())
            {
                return Err(ClusterError::Api {
                    code: 400,
                    reason: "BadRequest".into(),
                    message: format!(
                        "the object is not a {}/{}",
                        ExtKind::api_version(),
                        kind.kind()
                    ),
                });
            }
            let key = (kind, name.clone());
            let old = state.ext.get(&key).cloned();
            if old.is_some() && !replace {
                return Err(exists(&kind.kind().to_lowercase(), &name));
            }
            let mut stored = object.clone();
            let mut meta = meta;
            FakeCluster::stamp(&mut state, ObjectKind::Ext(kind), &mut meta);
            if let Some(old) = &old {
                meta.uid = old["metadata"]["uid"].as_str().map(str::to_owned);
            }
            stored["metadata"] = serde_json::to_value(&meta).unwrap_or_default();
            if let Some(map) = stored.as_object_mut() {
                map.remove("status");
            }
            state.ext.insert(key, stored.clone());
            match kind {
                ExtKind::WarmPool => FakeCluster::reconcile_pool(&mut state, &name),
                ExtKind::Claim => FakeCluster::reconcile_claim(&mut state, &name),
                ExtKind::Template => {}
            }
            stored
        };
        self.changed.notify_waiters();
        Ok(stored)
    }
}

fn status(inits: Vec<ContainerStatus>, mains: Vec<ContainerStatus>, phase: &str) -> PodStatus {
    PodStatus {
        phase: Some(phase.to_owned()),
        init_container_statuses: Some(inits),
        container_statuses: Some(mains),
        ..Default::default()
    }
}

fn container(name: &str, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: name.to_owned(),
        state: Some(state),
        ..Default::default()
    }
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

fn terminated(code: i32, message: Option<&str>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            message: message.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
        }),
        ..Default::default()
    }
}

/// The agent runs beside a ready sidecar.
pub fn agent_running() -> PodStatus {
    status(
        vec![
            container("network", terminated(0, None)),
            container("sidecar", running()),
        ],
        vec![container("agent", running())],
        "Running",
    )
}

/// Plays the agent of pod `pod` on a thread of its own: once the launch attached, takes the
/// start line, writes `says` to its stdout and ends with `code`. The thread's result says
/// what went otherwise (nothing attached within 20 s, another start line).
pub fn play_agent(
    cluster: std::sync::Arc<FakeCluster>,
    pod: String,
    says: &'static [u8],
    code: i32,
) -> std::thread::JoinHandle<Result<(), String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("the agent of pod {pod} got no runtime: {e}"))?;
        rt.block_on(async {
            let mut ends = cluster
                .attached(&pod, Duration::from_secs(20))
                .await
                .ok_or_else(|| format!("the start never attached to pod {pod}'s agent"))?;
            let mut first = [0u8; 1];
            ends.stdin
                .read_exact(&mut first)
                .await
                .map_err(|e| format!("pod {pod}'s agent got no start line: {e}"))?;
            if first != super::objects::START_LINE {
                return Err(format!(
                    "pod {pod}'s agent got {first:?} for the start line"
                ));
            }
            ends.stdout
                .write_all(says)
                .await
                .map_err(|e| format!("pod {pod}'s agent could not write: {e}"))?;
            drop(ends);
            cluster.set_status(&pod, agent_ended(code));
            Ok(())
        })
    })
}

/// The agent ended with `code` (the native sidecar is stopped after it).
pub fn agent_ended(code: i32) -> PodStatus {
    status(
        vec![
            container("network", terminated(0, None)),
            container("sidecar", terminated(0, None)),
        ],
        vec![container("agent", terminated(code, None))],
        if code == 0 { "Succeeded" } else { "Failed" },
    )
}

/// The agent's image cannot be pulled.
pub fn image_pull_failure() -> PodStatus {
    status(
        vec![
            container("network", terminated(0, None)),
            container("sidecar", running()),
        ],
        vec![container(
            "agent",
            waiting(
                "ImagePullBackOff",
                "Back-off pulling image \"registry.example/bot-bottle/agent-claude:0123456789ab\"",
            ),
        )],
        "Pending",
    )
}

/// The packet filter could not be installed.
pub fn network_init_failed() -> PodStatus {
    status(
        vec![container(
            "network",
            terminated(
                1,
                Some("Error: Could not process rule: Operation not permitted"),
            ),
        )],
        vec![container("agent", waiting("PodInitializing", ""))],
        "Pending",
    )
}

/// Still pulling: neither ready nor failed.
pub fn starting() -> PodStatus {
    status(
        vec![container("network", waiting("PodInitializing", ""))],
        vec![container("agent", waiting("PodInitializing", ""))],
        "Pending",
    )
}

/// The sidecar bundle runs (started), the agent's container does not yet.
pub fn sidecar_started() -> PodStatus {
    status(
        vec![
            container("network", terminated(0, None)),
            container("sidecar", running()),
        ],
        vec![container("agent", waiting("PodInitializing", ""))],
        "Pending",
    )
}

/// The scheduler found no node.
pub fn unschedulable(message: &str) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message.into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}
