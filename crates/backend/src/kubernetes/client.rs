//! [`Cluster`] over a real API server with kube-rs: the kubeconfig and context as kubectl
//! reads them (`$KUBECONFIG`, `~/.kube/config`, in-cluster config), one namespace.
//!
//! Each method is one API call (or one watch) plus the translation of its errors into
//! [`ClusterError`]; tested against `tower_test::mock` in this module's tests. Every delete,
//! whatever the kind, goes through one function (`delete_object`): the same uid
//! precondition, the same answers to 404 and 409, the kind named as
//! [`ObjectKind`] names it.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client};

use super::cluster::{
    Attached, Cluster, ClusterError, Leftover, LeftoverKind, ObjectKind, PortStream, no_sandbox_api,
};
use super::objects::{SANDBOX_GROUP, SANDBOX_PLURAL, SANDBOX_VERSIONS, Sandbox};
use super::pool::{EXT_GROUP, EXT_VERSION, ExtKind};

/// What a watch follows, for its errors: the kind as said (`pod`, `SandboxClaim`), the resource
/// kubectl describes, and the plural the API calls are named by.
struct Watched<'a> {
    noun: &'a str,
    resource: &'a str,
    plural: &'a str,
}

/// A namespace of a real cluster.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    namespace: String,
    /// The served `Sandbox` version, once discovered (for the run: a CRD installed while
    /// bottles start is seen by the next command).
    sandbox_version: std::sync::Arc<std::sync::OnceLock<Option<String>>>,
    /// Whether the extensions are served, once discovered.
    extensions: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl KubeCluster {
    /// Connects with the kubeconfig's `context` (its current context when `None`); the
    /// namespace is `namespace`, else the context's, else `default`.
    pub async fn connect(
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<KubeCluster, ClusterError> {
        let options = kube::config::KubeConfigOptions {
            context: context.map(str::to_owned),
            ..Default::default()
        };
        let config = match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            // No kubeconfig and no context asked for: maybe we run inside a cluster.
            Err(e) if context.is_none() => kube::Config::incluster()
                .map_err(|_| ClusterError::Connect(format!("no usable kubeconfig: {e}")))?,
            Err(e) => return Err(ClusterError::Connect(e.to_string())),
        };
        let namespace = namespace
            .map(str::to_owned)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| ClusterError::Connect(e.to_string()))?;
        Ok(KubeCluster::new(client, namespace))
    }

    /// An API server at `url` reached without credentials (tests: the fake API server of
    /// `test_support::kube_api` on loopback). Needs a tokio runtime (the client's worker).
    pub fn at_url(url: &str, namespace: &str) -> Result<KubeCluster, ClusterError> {
        let url = url
            .parse()
            .map_err(|e| ClusterError::Connect(format!("{url} is not a URL: {e}")))?;
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_owned();
        let client = Client::try_from(config).map_err(|e| ClusterError::Connect(e.to_string()))?;
        Ok(KubeCluster::new(client, namespace))
    }

    /// Over an existing client (tests: a mocked service).
    pub fn new(client: Client, namespace: impl Into<String>) -> KubeCluster {
        KubeCluster {
            client,
            namespace: namespace.into(),
            sandbox_version: Default::default(),
            extensions: Default::default(),
        }
    }

    /// The `Sandbox` resource at the served version; an error where none is served.
    async fn sandboxes(&self) -> Result<Api<DynamicObject>, ClusterError> {
        let version = self
            .sandbox_version()
            .await?
            .ok_or_else(|| no_sandbox_api(&self.namespace))?;
        let resource = ApiResource {
            group: SANDBOX_GROUP.to_owned(),
            version: version.clone(),
            api_version: format!("{SANDBOX_GROUP}/{version}"),
            kind: "Sandbox".to_owned(),
            plural: SANDBOX_PLURAL.to_owned(),
        };
        Ok(Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &resource,
        ))
    }

    /// An extension resource (templates, warm pools, claims) at its one version.
    fn ext(&self, kind: ExtKind) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: EXT_GROUP.to_owned(),
            version: EXT_VERSION.to_owned(),
            api_version: ExtKind::api_version(),
            kind: kind.kind().to_owned(),
            plural: kind.plural().to_owned(),
        };
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Gets the object named `name`, then watches it from that version (no change between the
    /// two is missed) until `done` holds of it as `view` sees it: `None` once it is gone or
    /// deleted. A watch whose stream ends (the API server's timeout) or that answers an error
    /// (410 Gone, the version expired, and the like) starts over with a new get. Past
    /// `timeout` the error says how to see why with kubectl.
    async fn watch_until<K, T>(
        &self,
        api: &Api<K>,
        watched: Watched<'_>,
        name: &str,
        timeout: Duration,
        view: impl Fn(K) -> Result<T, ClusterError> + Send + Sync,
        done: &(dyn for<'t> Fn(&'t T) -> bool + Send + Sync),
    ) -> Result<Option<T>, ClusterError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        T: Send,
    {
        let plural = watched.plural;
        let work = async {
            loop {
                let Some(current) = api
                    .get_opt(name)
                    .await
                    .map_err(|e| self.error(&format!("get {plural}"), e))?
                else {
                    return Ok(None);
                };
                let version = current.meta().resource_version.clone().unwrap_or_default();
                let object = view(current)?;
                if done(&object) {
                    return Ok(Some(object));
                }
                let params = WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(290);
                let mut events = api
                    .watch(&params, &version)
                    .await
                    .map_err(|e| self.error(&format!("watch {plural}"), e))?
                    .boxed();
                while let Some(event) = events
                    .try_next()
                    .await
                    .map_err(|e| self.error(&format!("watch {plural}"), e))?
                {
                    match event {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                            let object = view(o)?;
                            if done(&object) {
                                return Ok(Some(object));
                            }
                        }
                        WatchEvent::Deleted(_) => return Ok(None),
                        WatchEvent::Bookmark(_) => {}
                        // 410 Gone (the version expired) and the like: start over.
                        WatchEvent::Error(_) => break,
                    }
                }
            }
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            ClusterError::Timeout(format!(
                "{} {name} did not get there within {} s; `kubectl -n {} describe {} {name}` shows why",
                watched.noun,
                timeout.as_secs(),
                self.namespace,
                watched.resource
            ))
        })?
    }

    fn error(&self, action: &str, e: kube::Error) -> ClusterError {
        match e {
            kube::Error::Api(status) => ClusterError::from_status(
                action,
                &self.namespace,
                status.code,
                &status.reason,
                &status.message,
            ),
            other => ClusterError::Connect(other.to_string()),
        }
    }

    /// Deletes the object `name` of `kind` through `api`, the one way every delete goes
    /// (no kind's can drift from the others'): its uid as a delete precondition when there
    /// is one to pin, `grace` when given, what it owns deleted in the background. The API
    /// server's 404 is `false` (gone); its refusal of the uid precondition (409) is the
    /// object made again under its name ([`ObjectKind::replaced`]); anything else is
    /// classified as `delete <plural>`.
    async fn delete_object<K>(
        &self,
        api: Api<K>,
        kind: ObjectKind,
        name: &str,
        grace: Option<Duration>,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = DeleteParams {
            grace_period_seconds: grace.map(|g| u32::try_from(g.as_secs()).unwrap_or(u32::MAX)),
            preconditions: uid.map(|uid| kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match (api.delete(name, &params).await, uid) {
            (Ok(_), _) => Ok(true),
            (Err(kube::Error::Api(status)), _) if status.is_not_found() => Ok(false),
            (Err(kube::Error::Api(status)), Some(uid)) if status.code == 409 => {
                Err(kind.replaced(name, &self.namespace, uid, &found_uid(&status.message)))
            }
            (Err(e), _) => Err(self.error(&format!("delete {}", kind.plural()), e)),
        }
    }
}

/// The uid the API server found, from its refusal of a uid precondition: "Precondition
/// failed: UID in precondition: <ours>, UID in object meta: <its>".
fn found_uid(message: &str) -> String {
    message
        .rsplit_once("UID in object meta: ")
        .map(|(_, found)| found.trim().to_owned())
        .unwrap_or_else(|| "another".to_owned())
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn create_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        self.pods()
            .create(&PostParams::default(), pod)
            .await
            .map_err(|e| self.error("create pods", e))
    }

    async fn create_secret(&self, secret: &Secret) -> Result<(), ClusterError> {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), secret)
            .await
            .map(drop)
            .map_err(|e| self.error("create secrets", e))
    }

    async fn create_config_map(&self, config_map: &ConfigMap) -> Result<(), ClusterError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), config_map)
            .await
            .map(drop)
            .map_err(|e| self.error("create configmaps", e))
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, ClusterError> {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| self.error("get secrets", e))
    }

    async fn get_pod(&self, name: &str) -> Result<Option<Pod>, ClusterError> {
        self.pods()
            .get_opt(name)
            .await
            .map_err(|e| self.error("get pods", e))
    }

    async fn watch_pod(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'p> Fn(&'p Pod) -> bool + Send + Sync),
    ) -> Result<Option<Pod>, ClusterError> {
        self.watch_until(
            &self.pods(),
            Watched {
                noun: "pod",
                resource: "pod",
                plural: "pods",
            },
            name,
            timeout,
            Ok,
            done,
        )
        .await
    }

    async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, ClusterError> {
        self.pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map(|list| list.items)
            .map_err(|e| self.error("list pods", e))
    }

    async fn delete_pod(
        &self,
        name: &str,
        grace: Duration,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError> {
        self.delete_object(self.pods(), ObjectKind::Pod, name, Some(grace), uid)
            .await
    }

    async fn list_leftovers(&self, selector: &str) -> Result<Vec<Leftover>, ClusterError> {
        let params = ListParams::default().labels(selector);
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .list_metadata(&params)
            .await
            .map_err(|e| self.error("list secrets", e))?;
        let maps = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .list_metadata(&params)
            .await
            .map_err(|e| self.error("list configmaps", e))?;
        let secrets = secrets.items.into_iter().map(|s| Leftover {
            kind: LeftoverKind::Secret,
            metadata: s.metadata,
        });
        let maps = maps.items.into_iter().map(|c| Leftover {
            kind: LeftoverKind::ConfigMap,
            metadata: c.metadata,
        });
        Ok(secrets.chain(maps).collect())
    }

    async fn delete_leftover(
        &self,
        kind: LeftoverKind,
        name: &str,
        uid: &str,
    ) -> Result<bool, ClusterError> {
        let object = ObjectKind::Leftover(kind);
        match kind {
            LeftoverKind::Secret => {
                let api = Api::<Secret>::namespaced(self.client.clone(), &self.namespace);
                self.delete_object(api, object, name, None, Some(uid)).await
            }
            LeftoverKind::ConfigMap => {
                let api = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace);
                self.delete_object(api, object, name, None, Some(uid)).await
            }
        }
    }

    async fn get_claim(&self, name: &str) -> Result<Option<PersistentVolumeClaim>, ClusterError> {
        self.claims()
            .get_opt(name)
            .await
            .map_err(|e| self.error("get persistentvolumeclaims", e))
    }

    async fn create_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ClusterError> {
        self.claims()
            .create(&PostParams::default(), claim)
            .await
            .map_err(|e| self.error("create persistentvolumeclaims", e))
    }

    async fn delete_claim(&self, name: &str, uid: Option<&str>) -> Result<bool, ClusterError> {
        self.delete_object(self.claims(), ObjectKind::VolumeClaim, name, None, uid)
            .await
    }

    async fn list_claims(
        &self,
        selector: &str,
    ) -> Result<Vec<PersistentVolumeClaim>, ClusterError> {
        self.claims()
            .list(&ListParams::default().labels(selector))
            .await
            .map(|list| list.items)
            .map_err(|e| self.error("list persistentvolumeclaims", e))
    }

    async fn port_forward(&self, name: &str, port: u16) -> Result<PortStream, ClusterError> {
        let mut forwarder = self
            .pods()
            .portforward(name, &[port])
            .await
            .map_err(|e| self.error("create pods/portforward", e))?;
        let stream = forwarder
            .take_stream(port)
            .ok_or_else(|| ClusterError::Api {
                code: 0,
                reason: "PortForward".into(),
                message: format!("the API server opened no stream for port {port}"),
            })?;
        // The error channel: what the kubelet says when it cannot reach the port (nothing
        // listening yet, the pod going away). Taken here, it is the stream's error.
        let error = forwarder
            .take_error(port)
            .map(|e| Box::pin(e) as ErrorMessage);
        // The forwarder's task ends with the stream; keep it polled in the background.
        tokio::spawn(async move {
            let _ = forwarder.join().await;
        });
        Ok(Box::new(ForwardedPort {
            stream,
            error,
            failed: None,
            pod: name.to_owned(),
            namespace: self.namespace.clone(),
            port,
        }))
    }

    async fn sandbox_version(&self) -> Result<Option<String>, ClusterError> {
        if let Some(found) = self.sandbox_version.get() {
            return Ok(found.clone());
        }
        let mut found = None;
        for version in SANDBOX_VERSIONS {
            match self
                .client
                .list_api_group_resources(&format!("{SANDBOX_GROUP}/{version}"))
                .await
            {
                Ok(list) if list.resources.iter().any(|r| r.name == SANDBOX_PLURAL) => {
                    found = Some(version.to_owned());
                    break;
                }
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(self.error("discover the agent-sandbox API", e)),
            }
        }
        Ok(self.sandbox_version.get_or_init(|| found).clone())
    }

    async fn create_sandbox(&self, sandbox: &Sandbox) -> Result<Sandbox, ClusterError> {
        let object = to_dynamic(sandbox)?;
        let stored = self
            .sandboxes()
            .await?
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| self.error("create sandboxes", e))?;
        from_dynamic(&stored)
    }

    async fn watch_sandbox(
        &self,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'s> Fn(&'s Sandbox) -> bool + Send + Sync),
    ) -> Result<Option<Sandbox>, ClusterError> {
        self.watch_until(
            &self.sandboxes().await?,
            Watched {
                noun: "sandbox",
                resource: "sandbox",
                plural: "sandboxes",
            },
            name,
            timeout,
            |o| from_dynamic(&o),
            done,
        )
        .await
    }

    async fn delete_sandbox(
        &self,
        name: &str,
        grace: Duration,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError> {
        let api = self.sandboxes().await?;
        self.delete_object(api, ObjectKind::Sandbox, name, Some(grace), uid)
            .await
    }

    async fn get_sandbox(&self, name: &str) -> Result<Option<Sandbox>, ClusterError> {
        if self.sandbox_version().await?.is_none() {
            return Ok(None);
        }
        self.sandboxes()
            .await?
            .get_opt(name)
            .await
            .map_err(|e| self.error("get sandboxes", e))?
            .as_ref()
            .map(from_dynamic)
            .transpose()
    }

    async fn list_sandboxes(&self, selector: &str) -> Result<Vec<Sandbox>, ClusterError> {
        if self.sandbox_version().await?.is_none() {
            return Ok(Vec::new());
        }
        let list = self
            .sandboxes()
            .await?
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| self.error("list sandboxes", e))?;
        list.items.iter().map(from_dynamic).collect()
    }

    async fn extensions_served(&self) -> Result<bool, ClusterError> {
        if let Some(found) = self.extensions.get() {
            return Ok(*found);
        }
        let found = match self
            .client
            .list_api_group_resources(&ExtKind::api_version())
            .await
        {
            Ok(list) => list
                .resources
                .iter()
                .any(|r| r.name == ExtKind::Claim.plural()),
            Err(kube::Error::Api(status)) if status.is_not_found() => false,
            Err(e) => return Err(self.error("discover agent-sandbox's extensions API", e)),
        };
        Ok(*self.extensions.get_or_init(|| found))
    }

    async fn ext_create(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ClusterError> {
        let object = to_dynamic_value(kind, object)?;
        let stored = self
            .ext(kind)
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| self.error(&format!("create {}", kind.plural()), e))?;
        Ok(serde_json::to_value(stored).unwrap_or_default())
    }

    async fn ext_apply(
        &self,
        kind: ExtKind,
        object: &serde_json::Value,
    ) -> Result<serde_json::Value, ClusterError> {
        let mut object = to_dynamic_value(kind, object)?;
        let name = object.metadata.name.clone().unwrap_or_default();
        let api = self.ext(kind);
        let action = format!("update {}", kind.plural());
        let stored = match api
            .get_opt(&name)
            .await
            .map_err(|e| self.error(&action, e))?
        {
            Some(current) => {
                object.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| self.error(&action, e))?
            }
            None => api
                .create(&PostParams::default(), &object)
                .await
                .map_err(|e| self.error(&format!("create {}", kind.plural()), e))?,
        };
        Ok(serde_json::to_value(stored).unwrap_or_default())
    }

    async fn ext_get(
        &self,
        kind: ExtKind,
        name: &str,
    ) -> Result<Option<serde_json::Value>, ClusterError> {
        let found = self
            .ext(kind)
            .get_opt(name)
            .await
            .map_err(|e| self.error(&format!("get {}", kind.plural()), e))?;
        Ok(found.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    async fn ext_watch(
        &self,
        kind: ExtKind,
        name: &str,
        timeout: Duration,
        done: &(dyn for<'v> Fn(&'v serde_json::Value) -> bool + Send + Sync),
    ) -> Result<Option<serde_json::Value>, ClusterError> {
        self.watch_until(
            &self.ext(kind),
            Watched {
                noun: kind.kind(),
                resource: kind.plural(),
                plural: kind.plural(),
            },
            name,
            timeout,
            |o| Ok(serde_json::to_value(&o).unwrap_or_default()),
            done,
        )
        .await
    }

    async fn ext_delete(
        &self,
        kind: ExtKind,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, ClusterError> {
        self.delete_object(self.ext(kind), ObjectKind::Ext(kind), name, None, uid)
            .await
    }

    async fn ext_list(
        &self,
        kind: ExtKind,
        selector: &str,
    ) -> Result<Vec<serde_json::Value>, ClusterError> {
        if !self.extensions_served().await? {
            return Ok(Vec::new());
        }
        let list = self
            .ext(kind)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| self.error(&format!("list {}", kind.plural()), e))?;
        Ok(list
            .items
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect())
    }

    async fn attach(&self, name: &str, tty: bool) -> Result<Attached, ClusterError> {
        let params = kube::api::AttachParams::default()
            .container(super::objects::AGENT_CONTAINER)
            .stdin(true)
            .stdout(true)
            .stderr(!tty)
            .tty(tty);
        let mut process = self
            .pods()
            .attach(name, &params)
            .await
            .map_err(|e| self.error("create pods/attach", e))?;
        let missing = || ClusterError::Api {
            code: 0,
            reason: "Attach".into(),
            message: "the API server opened no stream for the agent's stdin or stdout".into(),
        };
        let stdin = process.stdin().ok_or_else(missing)?;
        let stdout = process.stdout().ok_or_else(missing)?;
        let stderr = process.stderr();
        let sizes = process.terminal_size();
        let (resize, mut resized) = tokio::sync::mpsc::channel::<(u16, u16)>(4);
        // The attached process ends its streams when dropped: keep it (and the window
        // sizes it forwards) in a task that lives until the agent's streams close.
        tokio::spawn(async move {
            if let Some(mut sizes) = sizes {
                let forward = async {
                    while let Some((height, width)) = resized.recv().await {
                        let size = kube::api::TerminalSize { width, height };
                        // A full queue drops a size: the next one replaces it anyway.
                        if sizes.try_send(size).is_err() && sizes.is_closed() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    _ = forward => {}
                    _ = process.join() => {}
                }
            } else {
                let _ = process.join().await;
            }
        });
        Ok(Attached {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr: stderr.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            resize: tty.then_some(resize),
        })
    }
}

/// The message of a port-forward's error channel, once (`None`: the channel closed
/// without one).
type ErrorMessage = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

/// A forwarded port whose reads and writes fail with the API server's error message once it
/// sent one on the port's error channel (kube-rs delivers it apart from the bytes; ignored,
/// a refused port would look like a connection closed for no reason).
struct ForwardedPort {
    stream: tokio::io::DuplexStream,
    error: Option<ErrorMessage>,
    /// The error, once received: every later call fails with it.
    failed: Option<String>,
    pod: String,
    namespace: String,
    port: u16,
}

impl ForwardedPort {
    /// The error channel's message, if one came (polled without waiting).
    fn failure(&mut self, cx: &mut std::task::Context<'_>) -> Option<std::io::Error> {
        if self.failed.is_none()
            && let Some(error) = self.error.as_mut()
            && let std::task::Poll::Ready(message) = error.as_mut().poll(cx)
        {
            self.error = None;
            self.failed = message;
        }
        self.failed.as_ref().map(|message| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "the API server's port-forward to port {} of pod {} failed: {message}; `kubectl -n {} describe pod {}` and `kubectl -n {} logs {} -c sidecar` show the pod's state",
                    self.port, self.pod, self.namespace, self.pod, self.namespace, self.pod
                ),
            )
        })
    }
}

impl tokio::io::AsyncRead for ForwardedPort {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failure(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.stream).poll_read(cx, buf) {
            // The end of the bytes: the error that came before it says why. (kube-rs hands
            // the error over before it ends the stream.)
            std::task::Poll::Ready(Ok(())) if buf.filled().len() == before => {
                match this.failure(cx) {
                    Some(e) => std::task::Poll::Ready(Err(e)),
                    None => std::task::Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for ForwardedPort {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.failure(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A Sandbox as the API's untyped object (the CRD's types are not in k8s-openapi).
fn to_dynamic(sandbox: &Sandbox) -> Result<DynamicObject, ClusterError> {
    serde_json::to_value(sandbox)
        .and_then(serde_json::from_value)
        .map_err(|e| ClusterError::Invalid {
            kind: "sandbox".into(),
            message: e.to_string(),
        })
}

/// An extension object as the API's untyped object.
fn to_dynamic_value(
    kind: ExtKind,
    object: &serde_json::Value,
) -> Result<DynamicObject, ClusterError> {
    serde_json::from_value(object.clone()).map_err(|e| ClusterError::Invalid {
        kind: kind.kind().to_owned(),
        message: e.to_string(),
    })
}

/// A Sandbox the API server returned, read into the fields a bottle uses.
fn from_dynamic(object: &DynamicObject) -> Result<Sandbox, ClusterError> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| ClusterError::Api {
            code: 0,
            reason: "Decode".into(),
            message: format!("the API server returned a Sandbox bot-bottle cannot read: {e}"),
        })
}

#[cfg(test)]
mod tests {
    //! The real client against kube's mocked tier: requests are answered by the test like
    //! an API server would (status bodies as the API server sends them).
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn cluster() -> (KubeCluster, Handle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "agents");
        (KubeCluster::new(client, "agents"), handle)
    }

    fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        });
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn json(value: serde_json::Value) -> Response<Body> {
        Response::builder()
            .body(Body::from(serde_json::to_vec(&value).unwrap()))
            .unwrap()
    }

    /// `request` lists `path` by the label all of bot-bottle's objects carry.
    fn assert_lists_bottles(request: &Request<Body>, path: &str) {
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), path);
        let query = request.uri().query().unwrap_or_default();
        assert!(
            query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dbot-bottle"),
            "{:?}",
            request.uri()
        );
    }

    fn pod() -> Pod {
        super::super::objects::bottle_objects(&super::super::objects::tests::plan())
            .unwrap()
            .pod
    }

    #[tokio::test]
    async fn create_posts_the_pod_to_the_namespace_and_returns_the_stored_one() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(request.uri().path(), "/api/v1/namespaces/agents/pods");
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let mut sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["metadata"]["name"], "bot-bottle-claude-1a2b3");
            sent["metadata"]["uid"] = "u-1".into();
            send.send_response(json(sent));
        });
        let stored = cluster.create_pod(&pod()).await.unwrap();
        assert_eq!(stored.metadata.uid.as_deref(), Some("u-1"));
        server.await.unwrap();
    }

    const CLAIMS: &str = "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/agents/sandboxclaims";
    const POOLS: &str =
        "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/agents/sandboxwarmpools";

    /// The warm pool API: discovered once; a claim posted to its resource, pools listed by
    /// label, a pool applied (created when missing, replaced with the stored resource
    /// version when there), a missing claim's deletion is `false`.
    #[tokio::test]
    async fn the_warm_pool_api_is_discovered_once_and_its_objects_are_sent_to_their_resources() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(
                request.uri().path(),
                "/apis/extensions.agents.x-k8s.io/v1beta1"
            );
            send.send_response(json(serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "extensions.agents.x-k8s.io/v1beta1",
                "resources": [
                    {"name": "sandboxclaims", "singularName": "sandboxclaim", "namespaced": true,
                     "kind": "SandboxClaim", "verbs": ["create", "delete", "get", "list", "watch"]},
                    {"name": "sandboxwarmpools", "singularName": "sandboxwarmpool", "namespaced": true,
                     "kind": "SandboxWarmPool", "verbs": ["create", "delete", "get", "list", "watch"]}],
            })));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(request.uri().path(), CLAIMS);
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let mut sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["kind"], "SandboxClaim");
            assert_eq!(sent["spec"]["warmPoolRef"]["name"], "bot-bottle-warm-0123");
            sent["metadata"]["uid"] = "c-1".into();
            send.send_response(json(sent));
            let (request, send) = handle.next_request().await.unwrap();
            assert_lists_bottles(&request, POOLS);
            send.send_response(json(serde_json::json!({
                "kind": "SandboxWarmPoolList", "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                "metadata": {"resourceVersion": "9"},
                "items": [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
                    "metadata": {"name": "bot-bottle-warm-0123", "namespace": "agents"},
                    "spec": {"replicas": 2, "sandboxTemplateRef": {"name": "bot-bottle-warm-0123"}},
                    "status": {"replicas": 2, "readyReplicas": 1}}],
            })));
            // apply: there already, so replaced with its resource version.
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(
                request.uri().path(),
                format!("{POOLS}/bot-bottle-warm-0123")
            );
            send.send_response(json(serde_json::json!({
                "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
                "metadata": {"name": "bot-bottle-warm-0123", "namespace": "agents", "resourceVersion": "41"},
                "spec": {"replicas": 1},
            })));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::PUT);
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["metadata"]["resourceVersion"], "41");
            assert_eq!(sent["spec"]["replicas"], 3);
            send.send_response(json(sent));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::DELETE);
            assert_eq!(
                request.uri().path(),
                format!("{CLAIMS}/bot-bottle-claude-1a2b3")
            );
            send.send_response(status(
                404,
                "NotFound",
                "sandboxclaims.extensions.agents.x-k8s.io \"bot-bottle-claude-1a2b3\" not found",
            ));
        });
        assert!(cluster.extensions_served().await.unwrap());
        assert!(cluster.extensions_served().await.unwrap());
        let plan = super::super::objects::tests::plan();
        let claim = super::super::pool::claim(&plan, "bot-bottle-warm-0123", &"0".repeat(64));
        let stored = cluster
            .ext_create(ExtKind::Claim, &serde_json::to_value(&claim).unwrap())
            .await
            .unwrap();
        assert_eq!(stored["metadata"]["uid"], "c-1");
        let pools = cluster
            .ext_list(ExtKind::WarmPool, "app.kubernetes.io/managed-by=bot-bottle")
            .await
            .unwrap();
        let pool: super::super::pool::SandboxWarmPool =
            serde_json::from_value(pools[0].clone()).unwrap();
        assert_eq!(pool.ready_replicas(), 1);
        let mut applied = pools[0].clone();
        applied["spec"]["replicas"] = 3.into();
        cluster
            .ext_apply(ExtKind::WarmPool, &applied)
            .await
            .unwrap();
        assert!(
            !cluster
                .ext_delete(ExtKind::Claim, "bot-bottle-claude-1a2b3", None)
                .await
                .unwrap()
        );
        server.await.unwrap();

        // Not served: no pools listed; a refused claim says what to ask for.
        let (cluster, mut handle) = self::cluster();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                403,
                "Forbidden",
                "sandboxclaims.extensions.agents.x-k8s.io is forbidden: User \"dev\" cannot create resource \"sandboxclaims\"",
            ));
        });
        assert!(!cluster.extensions_served().await.unwrap());
        assert_eq!(
            cluster.ext_list(ExtKind::WarmPool, "a=b").await.unwrap(),
            Vec::<serde_json::Value>::new()
        );
        let e = cluster
            .ext_create(ExtKind::Claim, &serde_json::to_value(&claim).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClusterError::Forbidden { action, .. } if action == "create sandboxclaims"),
            "{e:?}"
        );
        server.await.unwrap();
    }

    /// Discovery asks for `v1beta1`, then `v1alpha1`, once per cluster value (the answer is
    /// kept for the run); the Sandbox is posted to the served version's path and read back
    /// with its uid and the controller's status; a cluster without the API says so.
    #[tokio::test]
    async fn the_sandbox_api_is_discovered_once_and_a_sandbox_is_posted_to_its_version() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/apis/agents.x-k8s.io/v1beta1");
            send.send_response(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/apis/agents.x-k8s.io/v1alpha1");
            send.send_response(json(serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "agents.x-k8s.io/v1alpha1",
                "resources": [{"name": "sandboxes", "singularName": "sandbox", "namespaced": true,
                    "kind": "Sandbox", "verbs": ["create", "delete", "get", "list", "watch"]}],
            })));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(
                request.uri().path(),
                "/apis/agents.x-k8s.io/v1alpha1/namespaces/agents/sandboxes"
            );
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let mut sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["kind"], "Sandbox");
            assert_eq!(
                sent["spec"]["podTemplate"]["spec"]["automountServiceAccountToken"],
                false
            );
            sent["metadata"]["uid"] = "u-7".into();
            sent["status"] = serde_json::json!({"conditions": [{
                "type": "Ready", "status": "False", "reason": "DependenciesNotReady",
                "message": "", "lastTransitionTime": "2026-12-06T15:00:00Z", "observedGeneration": 1}]});
            send.send_response(json(sent));
        });
        assert_eq!(
            cluster.sandbox_version().await.unwrap().as_deref(),
            Some("v1alpha1")
        );
        // Kept: no second discovery (the mock would see a request it does not answer).
        assert_eq!(
            cluster.sandbox_version().await.unwrap().as_deref(),
            Some("v1alpha1")
        );
        let mut objects =
            super::super::objects::bottle_objects(&super::super::objects::tests::plan()).unwrap();
        objects.as_sandbox("v1alpha1");
        let stored = cluster
            .create_sandbox(objects.sandbox.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(stored.metadata.uid.as_deref(), Some("u-7"));
        assert_eq!(
            stored.condition("Ready").and_then(|c| c.reason.as_deref()),
            Some("DependenciesNotReady")
        );
        server.await.unwrap();

        let (cluster, mut handle) = self::cluster();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (_, send) = handle.next_request().await.unwrap();
                send.send_response(status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
        });
        assert_eq!(cluster.sandbox_version().await.unwrap(), None);
        assert_eq!(cluster.list_sandboxes("a=b").await.unwrap(), Vec::new());
        let e = cluster
            .create_sandbox(objects.sandbox.as_ref().unwrap())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("agent-sandbox is not installed"),
            "{e}"
        );
        server.await.unwrap();
    }

    /// Deleting a Sandbox sends its grace to the served version's path (a missing one is
    /// `false`); a list by label selector reads each Sandbox's pod-name annotation.
    #[tokio::test]
    async fn sandboxes_are_deleted_with_their_grace_and_listed_by_selector() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/apis/agents.x-k8s.io/v1beta1");
            send.send_response(json(serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "agents.x-k8s.io/v1beta1",
                "resources": [{"name": "sandboxes", "singularName": "sandbox", "namespaced": true,
                    "kind": "Sandbox", "verbs": ["delete", "list"]}],
            })));
            let path = "/apis/agents.x-k8s.io/v1beta1/namespaces/agents/sandboxes";
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::DELETE);
            assert_eq!(
                request.uri().path(),
                format!("{path}/bot-bottle-claude-1a2b3")
            );
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["gracePeriodSeconds"], 7, "{sent}");
            send.send_response(json(serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            })));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                404,
                "NotFound",
                "sandboxes.agents.x-k8s.io \"bot-bottle-claude-1a2b3\" not found",
            ));
            let (request, send) = handle.next_request().await.unwrap();
            assert_lists_bottles(&request, path);
            send.send_response(json(serde_json::json!({
                "kind": "SandboxList", "apiVersion": "agents.x-k8s.io/v1beta1", "metadata": {},
                "items": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                    "metadata": {"name": "bot-bottle-claude-1a2b3",
                        "annotations": {"agents.x-k8s.io/pod-name": "bot-bottle-claude-1a2b3"}},
                    "spec": {"podTemplate": {"spec": {"containers": []}}}}],
            })));
        });
        let grace = Duration::from_secs(7);
        assert!(
            cluster
                .delete_sandbox("bot-bottle-claude-1a2b3", grace, None)
                .await
                .unwrap()
        );
        assert!(
            !cluster
                .delete_sandbox("bot-bottle-claude-1a2b3", grace, None)
                .await
                .unwrap()
        );
        let listed = cluster
            .list_sandboxes("app.kubernetes.io/managed-by=bot-bottle")
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].pod_name().as_deref(),
            Some("bot-bottle-claude-1a2b3")
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn forbidden_and_quota_answers_become_errors_that_say_what_to_do() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                403,
                "Forbidden",
                "pods is forbidden: User \"dev\" cannot create resource \"pods\" in API group \"\" in the namespace \"agents\"",
            ));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                403,
                "Forbidden",
                "pods \"bot-bottle-claude-1a2b3\" is forbidden: exceeded quota: compute, requested: limits.memory=2Gi, used: limits.memory=7Gi, limited: limits.memory=8Gi",
            ));
        });
        let e = cluster.create_pod(&pod()).await.unwrap_err();
        assert!(matches!(e, ClusterError::Forbidden { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("refused to create pods in namespace `agents`"),
            "{text}"
        );
        assert!(
            text.contains("ask the cluster's admin for a Role"),
            "{text}"
        );
        let e = cluster.create_pod(&pod()).await.unwrap_err();
        assert!(matches!(e, ClusterError::Quota { .. }), "{e:?}");
        assert!(
            e.to_string().contains("lower `resources:` in the manifest"),
            "{e}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_pod_is_none_and_deleting_it_says_there_was_none() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (_, send) = handle.next_request().await.unwrap();
                send.send_response(status(404, "NotFound", "pods \"x\" not found"));
            }
        });
        assert_eq!(cluster.get_pod("x").await.unwrap(), None);
        assert!(
            !cluster
                .delete_pod("x", Duration::from_secs(5), None)
                .await
                .unwrap()
        );
        server.await.unwrap();
    }

    /// `stop` deletes the pod its launch checked and no other of its name: the uid goes as
    /// a delete precondition, and the API server's refusal of a pod made again under the
    /// name (409, "Precondition failed") says so, naming both uids.
    #[tokio::test]
    async fn deleting_the_launched_pod_sends_its_uid_as_a_precondition_and_a_pod_made_again_is_refused()
     {
        let (cluster, handle) = cluster();
        let server = tokio::spawn(deleted_then_replaced(
            handle,
            "/api/v1/namespaces/agents/pods/bot-bottle-claude-1a2b3",
            "Pod",
            "u",
            Some(5),
        ));
        let name = "bot-bottle-claude-1a2b3";
        let grace = Duration::from_secs(5);
        assert!(cluster.delete_pod(name, grace, Some("u-1")).await.unwrap());
        let e = cluster
            .delete_pod(name, grace, Some("u-1"))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ClusterError::Replaced {
                pod: name.into(),
                namespace: "agents".into(),
                recorded: "u-1".into(),
                found: "u-2".into(),
            }
        );
        server.await.unwrap();
    }

    /// One of the client's deletes, as the table of
    /// [`every_delete_pins_the_uid_and_answers_gone_replaced_and_refused_alike`] calls it.
    #[derive(Debug, Clone, Copy)]
    enum Delete {
        Pod,
        Leftover(LeftoverKind),
        HomeClaim,
        Sandbox,
        Ext(ExtKind),
    }

    const DELETED: &str = "bot-bottle-claude-1a2b3";

    impl Delete {
        const ALL: [Delete; 8] = [
            Delete::Pod,
            Delete::Leftover(LeftoverKind::Secret),
            Delete::Leftover(LeftoverKind::ConfigMap),
            Delete::HomeClaim,
            Delete::Sandbox,
            Delete::Ext(ExtKind::Claim),
            Delete::Ext(ExtKind::WarmPool),
            Delete::Ext(ExtKind::Template),
        ];

        async fn call(
            self,
            cluster: &KubeCluster,
            uid: Option<&str>,
        ) -> Result<bool, ClusterError> {
            let grace = Duration::from_secs(7);
            match self {
                Delete::Pod => cluster.delete_pod(DELETED, grace, uid).await,
                Delete::Leftover(kind) => {
                    let uid = uid.expect("a leftover is always deleted with its uid");
                    cluster.delete_leftover(kind, DELETED, uid).await
                }
                Delete::HomeClaim => cluster.delete_claim(DELETED, uid).await,
                Delete::Sandbox => cluster.delete_sandbox(DELETED, grace, uid).await,
                Delete::Ext(kind) => cluster.ext_delete(kind, DELETED, uid).await,
            }
        }

        /// Whether the call takes no uid at all (deletes by name).
        fn takes_none(self) -> bool {
            !matches!(self, Delete::Leftover(_))
        }

        fn plural(self) -> &'static str {
            match self {
                Delete::Pod => "pods",
                Delete::Leftover(LeftoverKind::Secret) => "secrets",
                Delete::Leftover(LeftoverKind::ConfigMap) => "configmaps",
                Delete::HomeClaim => "persistentvolumeclaims",
                Delete::Sandbox => "sandboxes",
                Delete::Ext(kind) => kind.plural(),
            }
        }

        fn path(self) -> String {
            let plural = self.plural();
            match self {
                Delete::Sandbox => {
                    format!("/apis/agents.x-k8s.io/v1beta1/namespaces/agents/{plural}/{DELETED}")
                }
                Delete::Ext(_) => format!(
                    "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/agents/{plural}/{DELETED}"
                ),
                _ => format!("/api/v1/namespaces/agents/{plural}/{DELETED}"),
            }
        }

        fn grace(self) -> Option<u64> {
            matches!(self, Delete::Pod | Delete::Sandbox).then_some(7)
        }

        /// The refusal of the uid precondition `x-1` by an object of uid `x-2`, as the
        /// operator reads it: a pod's own error, the object's kind as kubectl names it.
        fn replaced(self) -> ClusterError {
            let kind = match self {
                Delete::Pod => {
                    return ClusterError::Replaced {
                        pod: DELETED.into(),
                        namespace: "agents".into(),
                        recorded: "x-1".into(),
                        found: "x-2".into(),
                    };
                }
                Delete::Leftover(LeftoverKind::Secret) => "secret",
                Delete::Leftover(LeftoverKind::ConfigMap) => "configmap",
                Delete::HomeClaim => "persistentvolumeclaim",
                Delete::Sandbox => "sandbox",
                Delete::Ext(ExtKind::Claim) => "sandboxclaim",
                Delete::Ext(ExtKind::WarmPool) => "sandboxwarmpool",
                Delete::Ext(ExtKind::Template) => "sandboxtemplate",
            };
            ClusterError::ReplacedObject {
                kind: kind.into(),
                name: DELETED.into(),
                namespace: "agents".into(),
                recorded: "x-1".into(),
                found: "x-2".into(),
            }
        }
    }

    /// Every delete of the client goes the same way, whatever the kind: the uid (when
    /// given) as a delete precondition, the grace for a pod or Sandbox, dependents in the
    /// background; the API server's 404 is `false` (gone), its refusal of the uid
    /// precondition (409) is the object made again under the name (naming both uids and
    /// the kind as kubectl names it), any other refusal (403; a 409 without a precondition)
    /// is classified as `delete <plural>` in the namespace.
    #[tokio::test]
    async fn every_delete_pins_the_uid_and_answers_gone_replaced_and_refused_alike() {
        let conflict = "Operation cannot be fulfilled on the object: the object has been modified";
        let forbidden = "it is forbidden: User \"dev\" cannot delete resource";
        for delete in Delete::ALL {
            let (cluster, mut handle) = cluster();
            let mut steps: Vec<(Option<&'static str>, Response<Body>)> = vec![
                (
                    Some("x-1"),
                    json(
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    ),
                ),
                (Some("x-1"), status(404, "NotFound", "not found")),
                (
                    Some("x-1"),
                    status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {DELETED}: Precondition failed: UID in precondition: x-1, UID in object meta: x-2"
                        ),
                    ),
                ),
                (Some("x-1"), status(403, "Forbidden", forbidden)),
            ];
            if delete.takes_none() {
                steps.push((None, status(409, "Conflict", conflict)));
                steps.push((
                    None,
                    json(serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
                ));
            }
            let uids: Vec<Option<&'static str>> = steps.iter().map(|(uid, _)| *uid).collect();
            let server = tokio::spawn(async move {
                if matches!(delete, Delete::Sandbox) {
                    let (request, send) = handle.next_request().await.unwrap();
                    assert_eq!(request.uri().path(), "/apis/agents.x-k8s.io/v1beta1");
                    send.send_response(json(serde_json::json!({
                        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "agents.x-k8s.io/v1beta1",
                        "resources": [{"name": "sandboxes", "singularName": "sandbox", "namespaced": true,
                            "kind": "Sandbox", "verbs": ["delete"]}],
                    })));
                }
                for (uid, answer) in steps {
                    let (request, send) = handle.next_request().await.unwrap();
                    assert_eq!(request.method(), http::Method::DELETE, "{delete:?}");
                    assert_eq!(request.uri().path(), delete.path(), "{delete:?}");
                    let body = http_body_util::BodyExt::collect(request.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let mut expected = serde_json::json!({"propagationPolicy": "Background"});
                    if let Some(uid) = uid {
                        expected["preconditions"] = serde_json::json!({"uid": uid});
                    }
                    if let Some(grace) = delete.grace() {
                        expected["gracePeriodSeconds"] = grace.into();
                    }
                    assert_eq!(sent, expected, "{delete:?}");
                    send.send_response(answer);
                }
            });
            let mut got = Vec::new();
            for uid in uids {
                got.push(delete.call(&cluster, uid).await);
            }
            let action = format!("delete {}", delete.plural());
            let mut expected = vec![
                Ok(true),
                Ok(false),
                Err(delete.replaced()),
                Err(ClusterError::Forbidden {
                    action: action.clone(),
                    namespace: "agents".into(),
                    message: forbidden.into(),
                }),
            ];
            if delete.takes_none() {
                expected.push(Err(ClusterError::from_status(
                    &action, "agents", 409, "Conflict", conflict,
                )));
                expected.push(Ok(true));
            }
            assert_eq!(got, expected, "{delete:?}");
            server.await.unwrap();
        }
    }

    /// The API server of two deletes of `path` (a `kind`) carrying the uid precondition
    /// `<uid>-1` (and `grace` seconds, when given): the first deletes, the second is
    /// refused as the API server refuses an object of another uid (`<uid>-2`), 409.
    async fn deleted_then_replaced(
        mut handle: Handle,
        path: &'static str,
        kind: &'static str,
        uid: &'static str,
        grace: Option<u64>,
    ) {
        let refused = format!(
            "Operation cannot be fulfilled on {kind} \"bot-bottle-claude-1a2b3\": Precondition failed: UID in precondition: {uid}-1, UID in object meta: {uid}-2"
        );
        for answer in [
            json(serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
            status(409, "Conflict", &refused),
        ] {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::DELETE);
            assert_eq!(request.uri().path(), path);
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                sent["preconditions"],
                serde_json::json!({"uid": format!("{uid}-1")})
            );
            if let Some(grace) = grace {
                assert_eq!(sent["gracePeriodSeconds"], grace);
            }
            send.send_response(answer);
        }
    }

    /// A warm bottle's SandboxClaim goes the same way: its uid as a delete precondition,
    /// and a claim made again under its name (409) is refused as not the bottle's, naming
    /// both uids, never deleted.
    #[tokio::test]
    async fn deleting_a_claim_sends_its_uid_as_a_precondition_and_one_made_again_is_refused() {
        let (cluster, handle) = cluster();
        let server = tokio::spawn(deleted_then_replaced(
            handle,
            "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/agents/sandboxclaims/bot-bottle-claude-1a2b3",
            "SandboxClaim",
            "c",
            None,
        ));
        let name = "bot-bottle-claude-1a2b3";
        assert!(
            cluster
                .ext_delete(ExtKind::Claim, name, Some("c-1"))
                .await
                .unwrap()
        );
        let e = cluster
            .ext_delete(ExtKind::Claim, name, Some("c-1"))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ClusterError::ReplacedObject {
                kind: "sandboxclaim".into(),
                name: name.into(),
                namespace: "agents".into(),
                recorded: "c-1".into(),
                found: "c-2".into(),
            }
        );
        server.await.unwrap();
    }

    /// `cleanup`'s leftovers: the Secrets and ConfigMaps of the label selector, their
    /// metadata alone (a Secret's data is not fetched), each deleted with its uid as a delete
    /// precondition; one made again under the name (409) is refused, naming both uids.
    #[tokio::test]
    async fn leftovers_are_listed_by_metadata_and_deleted_with_their_uid_as_a_precondition() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            for (plural, uid) in [("secrets", "s-1"), ("configmaps", "m-1")] {
                let (request, send) = handle.next_request().await.unwrap();
                assert_lists_bottles(&request, &format!("/api/v1/namespaces/agents/{plural}"));
                let accept = request.headers()[http::header::ACCEPT].to_str().unwrap();
                assert!(accept.contains("as=PartialObjectMetadataList"), "{accept}");
                send.send_response(json(serde_json::json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": {},
                    "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "bot-bottle-claude-1a2b3", "uid": uid}}],
                })));
            }
            deleted_then_replaced(
                handle,
                "/api/v1/namespaces/agents/secrets/bot-bottle-claude-1a2b3",
                "Secret",
                "s",
                None,
            )
            .await;
        });
        let listed = cluster
            .list_leftovers("app.kubernetes.io/managed-by=bot-bottle")
            .await
            .unwrap();
        let listed: Vec<(LeftoverKind, Option<String>)> = listed
            .into_iter()
            .map(|l| (l.kind, l.metadata.uid))
            .collect();
        assert_eq!(
            listed,
            vec![
                (LeftoverKind::Secret, Some("s-1".into())),
                (LeftoverKind::ConfigMap, Some("m-1".into())),
            ]
        );
        let name = "bot-bottle-claude-1a2b3";
        assert!(
            cluster
                .delete_leftover(LeftoverKind::Secret, name, "s-1")
                .await
                .unwrap()
        );
        let e = cluster
            .delete_leftover(LeftoverKind::Secret, name, "s-1")
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ClusterError::ReplacedObject {
                kind: "secret".into(),
                name: name.into(),
                namespace: "agents".into(),
                recorded: "s-1".into(),
                found: "s-2".into(),
            }
        );
        server.await.unwrap();
    }

    /// A Sandbox is read by name from the served version's path; a missing one is `None`.
    #[tokio::test]
    async fn a_sandbox_is_read_by_name_and_a_missing_one_is_none() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/apis/agents.x-k8s.io/v1beta1");
            send.send_response(json(serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "agents.x-k8s.io/v1beta1",
                "resources": [{"name": "sandboxes", "singularName": "sandbox", "namespaced": true,
                    "kind": "Sandbox", "verbs": ["get"]}],
            })));
            let path = "/apis/agents.x-k8s.io/v1beta1/namespaces/agents/sandboxes";
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(request.uri().path(), format!("{path}/warm-abcde"));
            send.send_response(json(serde_json::json!({
                "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "metadata": {"name": "warm-abcde", "uid": "sb-1",
                    "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                        "kind": "SandboxClaim", "name": "bot-bottle-claude-1a2b3",
                        "uid": "c-1", "controller": true}]},
                "spec": {"podTemplate": {"spec": {"containers": []}}},
            })));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), format!("{path}/gone"));
            send.send_response(status(
                404,
                "NotFound",
                "sandboxes.agents.x-k8s.io \"gone\" not found",
            ));
        });
        let sandbox = cluster.get_sandbox("warm-abcde").await.unwrap().unwrap();
        assert_eq!(sandbox.metadata.uid.as_deref(), Some("sb-1"));
        let owner = &sandbox.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("SandboxClaim", "c-1")
        );
        assert_eq!(cluster.get_sandbox("gone").await.unwrap(), None);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_bottles_secret_is_read_from_its_namespace_and_a_missing_one_is_none() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(
                request.uri().path(),
                "/api/v1/namespaces/agents/secrets/bot-bottle-claude-1a2b3"
            );
            send.send_response(json(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "bot-bottle-claude-1a2b3"},
                "data": {"operator-token": "YWJj"},
            })));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(404, "NotFound", "secrets \"x\" not found"));
        });
        let secret = cluster
            .get_secret("bot-bottle-claude-1a2b3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret.data.unwrap()["operator-token"].0, b"abc".to_vec());
        assert_eq!(cluster.get_secret("x").await.unwrap(), None);
        server.await.unwrap();
    }

    /// The adoption check on pods read through the real client: the pod built, as an API
    /// server serves it back (its defaults, other spellings of its quantities, scheduled),
    /// passes; the same pod made beforehand with another command for the agent (labelled
    /// adoptable) is refused, naming the pod, its namespace and the field.
    #[tokio::test]
    async fn a_pod_served_with_the_api_servers_defaults_passes_the_check_and_an_altered_one_does_not()
     {
        let (cluster, mut handle) = cluster();
        let built = pod();
        let served = super::super::podcheck::tests::as_the_api_server_stores_it(&built);
        let mut altered = served.clone();
        altered["metadata"]["labels"]["agents.x-k8s.io/adoptable"] = "true".into();
        altered["spec"]["containers"][0]["command"] =
            serde_json::json!(["/bin/sh", "-c", "exec nc -l 4444"]);
        let server = tokio::spawn(async move {
            for body in [served, altered] {
                let (request, send) = handle.next_request().await.unwrap();
                assert_eq!(request.method(), http::Method::GET);
                assert_eq!(
                    request.uri().path(),
                    "/api/v1/namespaces/agents/pods/bot-bottle-claude-1a2b3"
                );
                send.send_response(json(body));
            }
        });
        let found = cluster
            .get_pod("bot-bottle-claude-1a2b3")
            .await
            .unwrap()
            .unwrap();
        super::super::podcheck::check(&built, &found, cluster.namespace()).unwrap();
        let found = cluster
            .get_pod("bot-bottle-claude-1a2b3")
            .await
            .unwrap()
            .unwrap();
        let e = super::super::podcheck::check(&built, &found, cluster.namespace()).unwrap_err();
        assert!(matches!(e, ClusterError::NotBuilt { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("pod `bot-bottle-claude-1a2b3` in namespace `agents`")
                && e.contains("its `containers[agent].command` differs"),
            "{e}"
        );
        server.await.unwrap();
    }

    const SANDBOX: &str = "bot-bottle-claude-1a2b3";
    const SANDBOXES: &str = "/apis/agents.x-k8s.io/v1beta1/namespaces/agents/sandboxes";

    /// Answers the client's discovery of the Sandbox API: `v1beta1` is served.
    async fn serve_sandbox_discovery(handle: &mut Handle) {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.uri().path(), "/apis/agents.x-k8s.io/v1beta1");
        send.send_response(json(serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "agents.x-k8s.io/v1beta1",
            "resources": [{"name": "sandboxes", "singularName": "sandbox", "namespaced": true,
                "kind": "Sandbox", "verbs": ["create", "delete", "get", "list", "watch"]}],
        })));
    }

    /// The bottle's Sandbox as the API server returns it at resource version `version`: the
    /// controller's pod-name annotation once it made the pod, its `Ready` condition if any.
    fn sandbox_json(
        version: u32,
        pod: Option<&str>,
        ready: Option<(&str, &str, &str)>,
    ) -> serde_json::Value {
        let mut sandbox = serde_json::json!({
            "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": SANDBOX, "namespace": "agents", "resourceVersion": version.to_string()},
            "spec": {"podTemplate": {"spec": {"containers": []}}},
        });
        if let Some(pod) = pod {
            sandbox["metadata"]["annotations"] =
                serde_json::json!({"agents.x-k8s.io/pod-name": pod});
        }
        if let Some((status, reason, message)) = ready {
            sandbox["status"] = serde_json::json!({"conditions": [{"type": "Ready",
                "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2026-12-06T15:00:00Z", "observedGeneration": 1}]});
        }
        sandbox
    }

    /// Answers a `GET` of the Sandbox with `sandbox`.
    async fn serve_sandbox_get(handle: &mut Handle, sandbox: serde_json::Value) {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), format!("{SANDBOXES}/{SANDBOX}"));
        assert_eq!(request.uri().query(), None, "{:?}", request.uri());
        send.send_response(json(sandbox));
    }

    /// Takes the client's watch of the Sandbox, checks it starts from `version` and selects
    /// the one Sandbox by name, and gives back where to answer it.
    async fn take_sandbox_watch(
        handle: &mut Handle,
        version: u32,
    ) -> tower_test::mock::SendResponse<Response<Body>> {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), SANDBOXES);
        let query = request.uri().query().unwrap_or_default().to_owned();
        for part in [
            "watch=true".to_owned(),
            format!("resourceVersion={version}"),
            format!("fieldSelector=metadata.name%3D{SANDBOX}"),
        ] {
            assert!(query.contains(&part), "{part} not in {query}");
        }
        send
    }

    /// A watch's answer: the events, one JSON line each, then the end of the stream.
    fn events(events: &[(&str, serde_json::Value)]) -> Response<Body> {
        let lines: String = events
            .iter()
            .map(|(kind, object)| {
                format!("{}\n", serde_json::json!({"type": kind, "object": object}))
            })
            .collect();
        Response::builder()
            .body(Body::from(lines.into_bytes()))
            .unwrap()
    }

    /// The launch's wait for a Sandbox's pod, as it runs over the real client: a get, a
    /// watch from its version; a watch whose stream ends (the API server's timeout) and one
    /// answered `410 Gone` (the version expired) start over with a new get; an event that
    /// does not name the pod is not the end; the one that names it is.
    #[tokio::test]
    async fn the_sandbox_watch_follows_the_controller_until_it_names_the_pod() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            serve_sandbox_discovery(&mut handle).await;
            serve_sandbox_get(&mut handle, sandbox_json(5, None, None)).await;
            let pending = sandbox_json(6, None, Some(("False", "DependenciesNotReady", "")));
            take_sandbox_watch(&mut handle, 5)
                .await
                .send_response(events(&[("MODIFIED", pending.clone())]));
            // The stream ended: a new get, a new watch from what it says.
            serve_sandbox_get(&mut handle, pending).await;
            let gone = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "too old resource version: 6 (9)",
                "reason": "Expired", "code": 410});
            take_sandbox_watch(&mut handle, 6)
                .await
                .send_response(events(&[("ERROR", gone)]));
            serve_sandbox_get(&mut handle, sandbox_json(9, None, None)).await;
            take_sandbox_watch(&mut handle, 9)
                .await
                .send_response(events(&[
                    ("MODIFIED", sandbox_json(10, None, None)),
                    (
                        "MODIFIED",
                        sandbox_json(11, Some(SANDBOX), Some(("True", "DependenciesReady", ""))),
                    ),
                ]));
        });
        super::super::sandbox_pod(&cluster, SANDBOX, Duration::from_secs(30))
            .await
            .unwrap();
        server.await.unwrap();
    }

    /// A Sandbox deleted while the launch waits (a `DELETED` event, or gone at the get), one
    /// whose controller reports it cannot make the pod, and one given another pod than the
    /// bottle's each fail the wait with what happened.
    #[tokio::test]
    async fn the_sandbox_watch_fails_on_deletion_on_the_controllers_refusal_and_on_another_pod() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            serve_sandbox_discovery(&mut handle).await;
            serve_sandbox_get(&mut handle, sandbox_json(5, None, None)).await;
            take_sandbox_watch(&mut handle, 5)
                .await
                .send_response(events(&[("DELETED", sandbox_json(6, None, None))]));

            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), format!("{SANDBOXES}/{SANDBOX}"));
            send.send_response(status(
                404,
                "NotFound",
                "sandboxes.agents.x-k8s.io \"bot-bottle-claude-1a2b3\" not found",
            ));

            serve_sandbox_get(&mut handle, sandbox_json(5, None, None)).await;
            let refused = sandbox_json(
                6,
                None,
                Some((
                    "False",
                    "ReconcilerError",
                    "Pod \"bot-bottle-claude-1a2b3\" is invalid: spec.runtimeClassName: Invalid value: \"gvisor\"",
                )),
            );
            take_sandbox_watch(&mut handle, 5)
                .await
                .send_response(events(&[("MODIFIED", refused)]));

            serve_sandbox_get(&mut handle, sandbox_json(5, None, None)).await;
            take_sandbox_watch(&mut handle, 5)
                .await
                .send_response(events(&[(
                    "MODIFIED",
                    sandbox_json(6, Some("warm-pool-x7k2p"), None),
                )]));
        });
        let wait = || super::super::sandbox_pod(&cluster, SANDBOX, Duration::from_secs(30));
        for _ in 0..2 {
            let e = wait().await.unwrap_err().to_string();
            assert!(
                e.contains("the Sandbox was deleted while it started"),
                "{e}"
            );
        }
        let e = wait().await.unwrap_err().to_string();
        for part in [
            "the agent-sandbox controller could not make the bottle's pod",
            "spec.runtimeClassName: Invalid value: \"gvisor\"",
        ] {
            assert!(e.contains(part), "{part} not in {e}");
        }
        let e = wait().await.unwrap_err().to_string();
        assert!(
            e.contains("gave it pod `warm-pool-x7k2p`, not the pod built for this bottle"),
            "{e}"
        );
        server.await.unwrap();
    }

    /// A controller that never acts: the wait ends at its bound with the command that shows
    /// why, although the watch it was in never answered.
    #[tokio::test]
    async fn the_sandbox_watch_times_out_with_how_to_see_why() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            serve_sandbox_discovery(&mut handle).await;
            serve_sandbox_get(&mut handle, sandbox_json(5, None, None)).await;
            // Held, never answered, until the client gave up.
            let held = take_sandbox_watch(&mut handle, 5).await;
            (handle, held)
        });
        let e = super::super::sandbox_pod(&cluster, SANDBOX, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, ClusterError::Timeout(_)), "{e:?}");
        let text = e.to_string();
        for part in [
            "sandbox bot-bottle-claude-1a2b3 did not get there within",
            "`kubectl -n agents describe sandbox bot-bottle-claude-1a2b3` shows why",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn watch_follows_the_pod_from_its_version_until_the_condition_holds() {
        let (cluster, mut handle) = cluster();
        let mut running = pod();
        running.metadata.resource_version = Some("7".into());
        let first = running.clone();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(
                request.uri().path(),
                "/api/v1/namespaces/agents/pods/bot-bottle-claude-1a2b3"
            );
            send.send_response(json(serde_json::to_value(&first).unwrap()));
            let (request, send) = handle.next_request().await.unwrap();
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert!(query.contains("watch=true"), "{query}");
            assert!(query.contains("resourceVersion=7"), "{query}");
            let mut later = first.clone();
            later.metadata.resource_version = Some("8".into());
            let line = serde_json::json!({"type": "MODIFIED", "object": later});
            send.send_response(
                Response::builder()
                    .body(Body::from(format!("{line}\n").into_bytes()))
                    .unwrap(),
            );
        });
        let pod = cluster
            .watch_pod("bot-bottle-claude-1a2b3", Duration::from_secs(30), &|p| {
                p.metadata.resource_version.as_deref() == Some("8")
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("8"));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn attach_asks_for_the_agent_containers_streams_and_a_refusal_names_pods_attach() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            for tty in [false, true] {
                let (request, send) = handle.next_request().await.unwrap();
                assert_eq!(
                    request.uri().path(),
                    "/api/v1/namespaces/agents/pods/bot-bottle-claude-1a2b3/attach"
                );
                let query = request.uri().query().unwrap_or_default().to_owned();
                for part in ["container=agent", "stdin=true", "stdout=true"] {
                    assert!(query.contains(part), "{part} not in {query}");
                }
                // A terminal carries both outputs: no stderr stream then.
                assert_eq!(query.contains("tty=true"), tty, "{query}");
                assert_eq!(query.contains("stderr=true"), !tty, "{query}");
                assert_eq!(
                    request.headers().get(http::header::UPGRADE).unwrap(),
                    "websocket"
                );
                send.send_response(status(
                    403,
                    "Forbidden",
                    "pods \"bot-bottle-claude-1a2b3\" is forbidden: User \"dev\" cannot create resource \"pods/attach\" in API group \"\" in the namespace \"agents\"",
                ));
            }
        });
        for tty in [false, true] {
            let e = cluster
                .attach("bot-bottle-claude-1a2b3", tty)
                .await
                .err()
                .unwrap();
            assert!(matches!(e, ClusterError::Forbidden { .. }), "{e:?}");
            assert!(
                e.to_string()
                    .contains("refused to create pods/attach in namespace `agents`"),
                "{e}"
            );
        }
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_invalid_or_existing_object_is_said_as_such() {
        let (cluster, mut handle) = cluster();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                422,
                "Invalid",
                "Pod \"bot-bottle-claude-1a2b3\" is invalid: spec.runtimeClassName: Invalid value",
            ));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(
                409,
                "AlreadyExists",
                "pods \"bot-bottle-claude-1a2b3\" already exists",
            ));
        });
        let e = cluster.create_pod(&pod()).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("rejected the bottle's pod as invalid: Pod \"bot-bottle-claude-1a2b3\""),
            "{e}"
        );
        let e = cluster.create_pod(&pod()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "a pod of that name exists already in the cluster"
        );
        server.await.unwrap();
    }

    /// The fake API server on loopback keeps claims as the API server does (a uid each; a
    /// delete whose uid precondition is another's refused `409`), and the real client reads
    /// its answers as it reads the API server's: so the CLI tests that clean up claims through
    /// it see what a cluster would do.
    #[tokio::test]
    async fn a_claim_on_the_fake_api_server_is_deleted_only_with_its_uid() {
        let api = test_support::kube_api::FakeApiServer::start().await;
        let name = "bot-bottle-coder-1a2b3-home";
        api.serve_claim(
            "agents",
            name,
            serde_json::json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "agents"},
            }),
        );
        let uid = test_support::kube_api::claim_uid("agents", name);
        let cluster = KubeCluster::at_url(&api.url(), "agents").unwrap();
        let e = cluster
            .delete_claim(name, Some("uid-of-another"))
            .await
            .unwrap_err();
        assert!(matches!(e, ClusterError::ReplacedObject { .. }), "{e:?}");
        assert!(api.has_claim("agents", name));
        assert!(cluster.delete_claim(name, Some(&uid)).await.unwrap());
        assert!(!api.has_claim("agents", name));
        assert!(!cluster.delete_claim(name, Some(&uid)).await.unwrap());
    }

    #[tokio::test]
    async fn port_forward_speaks_the_api_servers_websocket_protocol_to_the_pods_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api = test_support::kube_api::FakeApiServer::start().await;
        // The pod's listener on loopback: answers each line with its length.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(format!("{n}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        api.serve_port("agents", "bot-bottle-claude-1a2b3", 3199, target);
        let cluster = KubeCluster::at_url(&api.url(), "agents").unwrap();

        let mut stream = cluster
            .port_forward("bot-bottle-claude-1a2b3", 3199)
            .await
            .unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut answer = [0u8; 2];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"5\n");
        assert_eq!(
            api.calls(),
            vec![
                "GET /api/v1/namespaces/agents/pods/bot-bottle-claude-1a2b3/portforward?&ports=3199"
            ]
        );
        // What kube-rs negotiates: v5 first, then v4. An API server's websocket port-forward
        // has no v5 (its channel protocols are v4 and the unnamed one), so it answers v4, as
        // the fake does; the tunnelled `v2.portforward.k8s.io` (KEP 4006) is not offered.
        assert_eq!(api.offered(), vec!["v5.channel.k8s.io, v4.channel.k8s.io"]);

        // A port nothing listens on (the bundle not up yet): the kubelet's error on the
        // port's error channel is the stream's error, said with where to look.
        let mut refused = cluster
            .port_forward("bot-bottle-claude-1a2b3", 3130)
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let e = refused.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        let text = e.to_string();
        for part in [
            "the API server's port-forward to port 3130 of pod bot-bottle-claude-1a2b3 failed: error forwarding port 3130",
            "connection refused",
            "kubectl -n agents logs bot-bottle-claude-1a2b3 -c sidecar",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
        // And so is every later call.
        assert!(refused.write_all(b"x").await.is_err());

        // No such pod: the API server's 404, in the operator's terms.
        let e = cluster
            .port_forward("bot-bottle-claude-00000", 3199)
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("pods \"bot-bottle-claude-00000\" not found"),
            "{e}"
        );
    }
}
