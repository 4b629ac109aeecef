//! An in-memory cluster for the lifecycle tests: stores what is created, answers watches when
//! a test moves a pod along, and fails the calls a test tells it to.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodStatus, Secret,
};
use tokio::sync::Notify;

use super::cluster::{Cluster, ClusterError, PortStream};

#[derive(Default)]
pub(crate) struct FakeCluster {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    secrets: BTreeMap<String, Secret>,
    config_maps: BTreeMap<String, ConfigMap>,
    /// Every call, in order (`create pod NAME`, `delete pod NAME grace=N`, ...).
    calls: Vec<String>,
    /// Calls (by their first two words, e.g. `create pod`) that fail with the error.
    fail: BTreeMap<String, ClusterError>,
    /// The status a created pod gets at once (e.g. the agent running, an image pull error).
    on_create: Option<PodStatus>,
    next_uid: u32,
}

impl FakeCluster {
    pub(crate) fn new() -> FakeCluster {
        FakeCluster::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn fail(&self, call: &str, error: ClusterError) {
        self.lock().fail.insert(call.to_owned(), error);
    }

    pub(crate) fn on_create(&self, status: PodStatus) {
        self.lock().on_create = Some(status);
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub(crate) fn pod(&self, name: &str) -> Option<Pod> {
        self.lock().pods.get(name).cloned()
    }

    pub(crate) fn secret(&self, name: &str) -> Option<Secret> {
        self.lock().secrets.get(name).cloned()
    }

    pub(crate) fn config_map(&self, name: &str) -> Option<ConfigMap> {
        self.lock().config_maps.get(name).cloned()
    }

    /// Puts a pod there directly (one another launcher created).
    pub(crate) fn insert_pod(&self, pod: Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.lock().pods.insert(name, pod);
        self.changed.notify_waiters();
    }

    /// Puts a Secret there directly (a leftover of a failed launch).
    pub(crate) fn insert_secret(&self, secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.lock().secrets.insert(name, secret);
    }

    /// Moves a pod along, as the kubelet would.
    pub(crate) fn set_status(&self, name: &str, status: PodStatus) {
        if let Some(pod) = self.lock().pods.get_mut(name) {
            pod.status = Some(status);
        }
        self.changed.notify_waiters();
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
        let Some(pod) = state.pods.remove(name) else {
            return false;
        };
        let uid = pod.metadata.uid.unwrap_or_default();
        let owned = |refs: &Option<
            Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
        >| { refs.iter().flatten().any(|r| r.uid == uid) };
        state
            .secrets
            .retain(|_, s| !owned(&s.metadata.owner_references));
        state
            .config_maps
            .retain(|_, c| !owned(&c.metadata.owner_references));
        true
    }
}

#[async_trait::async_trait]
impl Cluster for FakeCluster {
    fn namespace(&self) -> &str {
        "agents"
    }

    async fn create_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.call(format!("create pod {name}"))?;
        let stored = {
            let mut state = self.lock();
            if state.pods.contains_key(&name) {
                return Err(ClusterError::Exists(format!("pod {name}")));
            }
            state.next_uid += 1;
            let mut stored = pod.clone();
            stored.metadata.uid = Some(format!("uid-{}", state.next_uid));
            stored.status = state.on_create.clone();
            state.pods.insert(name, stored.clone());
            stored
        };
        self.changed.notify_waiters();
        Ok(stored)
    }

    async fn create_secret(&self, secret: &Secret) -> Result<(), ClusterError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.call(format!("create secret {name}"))?;
        self.lock().secrets.insert(name, secret.clone());
        Ok(())
    }

    async fn create_config_map(&self, config_map: &ConfigMap) -> Result<(), ClusterError> {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        self.call(format!("create configmap {name}"))?;
        self.lock().config_maps.insert(name, config_map.clone());
        Ok(())
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
        let work = async {
            loop {
                let notified = self.changed.notified();
                match self.pod(name) {
                    None => return None,
                    Some(pod) if done(&pod) => return Some(pod),
                    Some(_) => notified.await,
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClusterError::Timeout(format!("pod {name} did not get there")))
    }

    async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, ClusterError> {
        self.call(format!("list pods {selector}"))?;
        let wanted: Vec<(String, String)> = selector
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(self
            .lock()
            .pods
            .values()
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .cloned()
            .collect())
    }

    async fn delete_pod(&self, name: &str, grace: Duration) -> Result<bool, ClusterError> {
        self.call(format!("delete pod {name} grace={}", grace.as_secs()))?;
        let removed = FakeCluster::remove_pod(&mut self.lock(), name);
        self.changed.notify_waiters();
        Ok(removed)
    }

    async fn delete_leftovers(&self, name: &str) -> Result<(), ClusterError> {
        self.call(format!("delete leftovers {name}"))?;
        let mut state = self.lock();
        state.secrets.remove(name);
        state.config_maps.remove(name);
        Ok(())
    }

    async fn unowned_secrets(&self, selector: &str) -> Result<Vec<String>, ClusterError> {
        self.call(format!("list secrets {selector}"))?;
        Ok(self
            .lock()
            .secrets
            .iter()
            .filter(|(_, s)| {
                s.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(Vec::is_empty)
            })
            .map(|(n, _)| n.clone())
            .collect())
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
        // The pod's loopback port, as an in-memory pipe whose far end echoes (a stand-in
        // for the sidecar's listener).
        let (near, mut far) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(&mut far);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        Ok(Box::new(near))
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
pub(crate) fn agent_running() -> PodStatus {
    status(
        vec![
            container("network", terminated(0, None)),
            container("sidecar", running()),
        ],
        vec![container("agent", running())],
        "Running",
    )
}

/// The agent ended with `code` (the native sidecar is stopped after it).
pub(crate) fn agent_ended(code: i32) -> PodStatus {
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
pub(crate) fn image_pull_failure() -> PodStatus {
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
pub(crate) fn network_init_failed() -> PodStatus {
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
pub(crate) fn starting() -> PodStatus {
    status(
        vec![container("network", waiting("PodInitializing", ""))],
        vec![container("agent", waiting("PodInitializing", ""))],
        "Pending",
    )
}
