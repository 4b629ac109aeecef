//! A recording [`Engine`] for unit tests: every call is recorded as one line
//! (`create_container bb-x-agent`), and the answers are scripted: failures by call line,
//! create warnings, exit codes, the sidecar's address, log output, the lists `cleanup` reads,
//! the host's route table (`host_routes`: canned, never the test machine's).
//! A container without a scripted exit code runs until it is stopped or killed (then it
//! exits 143 / 137, as dockerd reports SIGTERM / SIGKILL).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as ApiError;
use bollard::models::{
    BuildInfo, ContainerCreateBody, ContainerCreateResponse, ContainerInspectResponse,
    ContainerState, ContainerSummary, EndpointSettings, ImageSummary, Network,
    NetworkCreateRequest, NetworkSettings, SystemInfo, Volume,
};
use bollard::query_parameters::{AttachContainerOptions, BuildImageOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::client::{Engine, Filters};

/// What the fake answers and what it was asked.
#[derive(Default)]
pub struct Script {
    /// Every call, in order.
    pub calls: Vec<String>,
    /// Calls (by their recorded line) that fail with this daemon message (status 500).
    pub fail: BTreeMap<String, String>,
    /// Warnings returned by `create_container`, by container name.
    pub warnings: BTreeMap<String, Vec<String>>,
    /// Exit codes by container name; absent: running until stopped or killed.
    pub exits: BTreeMap<String, i64>,
    /// Containers the OOM killer ended.
    pub oom: Vec<String>,
    /// The address every container has on every network created so far.
    pub ip: String,
    /// Stdout lines of `logs`, by container name.
    pub logs: BTreeMap<String, Vec<String>>,
    /// The daemon's `info`.
    pub info: SystemInfo,
    pub containers: Vec<ContainerSummary>,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
    pub images: Vec<ImageSummary>,
    /// The bodies `create_container` received, by name.
    pub created: BTreeMap<String, ContainerCreateBody>,
    /// The requests `create_network` received.
    pub created_networks: Vec<NetworkCreateRequest>,
    /// Every call fails with "not found" (404): the objects are gone.
    pub fail_not_found: bool,
    /// Subnets the daemon already has a network on: a `create_network` asking for one is
    /// refused as dockerd refuses it (403, "Pool overlaps ...").
    pub taken_subnets: Vec<String>,
    /// The host's route table (`/proc/net/route` text) `host_routes` answers; `None`: it
    /// cannot be read (permission denied). [`RecordingEngine::new`] gives a table with no
    /// routes (its header alone).
    pub routes: Option<String>,
}

/// The header line of `/proc/net/route`, as the kernel prints it.
pub const ROUTE_HEADER: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

/// The recording engine; clones share one [`Script`].
#[derive(Clone, Default)]
pub struct RecordingEngine {
    pub script: Arc<Mutex<Script>>,
}

impl RecordingEngine {
    pub fn new() -> RecordingEngine {
        let engine = RecordingEngine::default();
        engine.with(|s| {
            s.ip = "172.30.0.2".to_owned();
            s.routes = Some(ROUTE_HEADER.to_owned());
        });
        engine
    }

    /// Runs `f` on the script.
    pub fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut script)
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// Records `line`; its scripted failure if any.
    fn record(&self, line: String) -> Result<(), ApiError> {
        self.with(|s| {
            let failure = s.fail.get(&line).cloned();
            s.calls.push(line);
            if s.fail_not_found {
                return Err(ApiError::DockerResponseServerError {
                    status_code: 404,
                    message: "no such object".to_owned(),
                });
            }
            match failure {
                Some(message) => Err(ApiError::DockerResponseServerError {
                    status_code: 500,
                    message,
                }),
                None => Ok(()),
            }
        })
    }
}

impl Engine for RecordingEngine {
    async fn info(&self) -> Result<SystemInfo, ApiError> {
        self.record("info".to_owned())?;
        Ok(self.with(|s| s.info.clone()))
    }

    async fn image_exists(&self, tag: &str) -> bool {
        self.record(format!("image_exists {tag}")).is_ok()
    }

    fn build_image(
        &self,
        options: BuildImageOptions,
        _context: Vec<u8>,
    ) -> BoxStream<'_, Result<BuildInfo, ApiError>> {
        let result = self.record(format!("build_image {}", options.t.unwrap_or_default()));
        futures_util::stream::iter(result.err().map(Err)).boxed()
    }

    async fn list_images(&self, _filters: Filters) -> Result<Vec<ImageSummary>, ApiError> {
        self.record("list_images".to_owned())?;
        Ok(self.with(|s| s.images.clone()))
    }

    async fn remove_image(&self, name: &str) -> Result<(), ApiError> {
        self.record(format!("remove_image {name}"))
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> Result<(), ApiError> {
        self.record(format!("create_network {}", request.name))?;
        let subnets: Vec<String> = request
            .ipam
            .iter()
            .flat_map(|ipam| ipam.config.iter().flatten())
            .filter_map(|c| c.subnet.clone())
            .collect();
        self.with(|s| {
            if subnets.iter().any(|n| s.taken_subnets.contains(n)) {
                return Err(ApiError::DockerResponseServerError {
                    status_code: 403,
                    message: "Pool overlaps with other one on this address space".to_owned(),
                });
            }
            s.created_networks.push(request);
            Ok(())
        })
    }

    async fn connect_network(&self, network: &str, container: &str) -> Result<(), ApiError> {
        self.record(format!("connect_network {network} {container}"))
    }

    async fn remove_network(&self, name: &str) -> Result<(), ApiError> {
        self.record(format!("remove_network {name}"))
    }

    async fn list_networks(&self, _filters: Filters) -> Result<Vec<Network>, ApiError> {
        self.record("list_networks".to_owned())?;
        Ok(self.with(|s| s.networks.clone()))
    }

    async fn list_volumes(&self, _filters: Filters) -> Result<Vec<Volume>, ApiError> {
        self.record("list_volumes".to_owned())?;
        Ok(self.with(|s| s.volumes.clone()))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), ApiError> {
        self.record(format!("remove_volume {name}"))
    }

    async fn list_containers(&self, filters: Filters) -> Result<Vec<ContainerSummary>, ApiError> {
        let labels = filters.get("label").cloned().unwrap_or_default();
        self.record(format!("list_containers {}", labels.join(",")))?;
        Ok(self.with(|s| s.containers.clone()))
    }

    async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<ContainerCreateResponse, ApiError> {
        self.record(format!("create_container {name}"))?;
        Ok(self.with(|s| {
            s.created.insert(name.to_owned(), body);
            ContainerCreateResponse {
                id: name.to_owned(),
                warnings: s.warnings.get(name).cloned().unwrap_or_default(),
            }
        }))
    }

    async fn start_container(&self, name: &str) -> Result<(), ApiError> {
        self.record(format!("start_container {name}"))
    }

    async fn attach_container(
        &self,
        name: &str,
        _options: AttachContainerOptions,
    ) -> Result<AttachContainerResults, ApiError> {
        self.record(format!("attach_container {name}"))?;
        Ok(AttachContainerResults {
            output: Box::pin(futures_util::stream::empty()),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn inspect_container(&self, name: &str) -> Result<ContainerInspectResponse, ApiError> {
        self.record(format!("inspect_container {name}"))?;
        Ok(self.with(|s| {
            let exit = s.exits.get(name).copied();
            ContainerInspectResponse {
                state: Some(ContainerState {
                    running: Some(exit.is_none()),
                    exit_code: exit,
                    oom_killed: Some(s.oom.iter().any(|c| c == name)),
                    ..Default::default()
                }),
                network_settings: Some(NetworkSettings {
                    networks: Some(
                        s.created_networks
                            .iter()
                            .map(|n| n.name.clone())
                            .map(|n| {
                                (
                                    n,
                                    EndpointSettings {
                                        ip_address: Some(s.ip.clone()),
                                        ..Default::default()
                                    },
                                )
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }))
    }

    async fn wait_exit(&self, name: &str) -> Result<i64, ApiError> {
        self.record(format!("wait_exit {name}"))?;
        loop {
            if let Some(code) = self.with(|s| s.exits.get(name).copied()) {
                return Ok(code);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn logs(&self, name: &str, follow: bool) -> BoxStream<'_, Result<LogOutput, ApiError>> {
        let result = self.record(format!("logs {name} follow={follow}"));
        let lines = self.with(|s| s.logs.get(name).cloned().unwrap_or_default());
        let items: Vec<Result<LogOutput, ApiError>> = match result {
            Err(err) => vec![Err(err)],
            Ok(()) => lines
                .into_iter()
                .map(|l| {
                    Ok(LogOutput::StdOut {
                        message: Bytes::from(format!("{l}\n")),
                    })
                })
                .collect(),
        };
        futures_util::stream::iter(items).boxed()
    }

    async fn kill_container(&self, name: &str, signal: &str) -> Result<(), ApiError> {
        self.record(format!("kill_container {name} {signal}"))?;
        if signal == "SIGKILL" {
            self.with(|s| {
                s.exits.entry(name.to_owned()).or_insert(137);
            });
        }
        Ok(())
    }

    async fn stop_container(&self, name: &str, grace_secs: i32) -> Result<(), ApiError> {
        self.record(format!("stop_container {name} t={grace_secs}"))?;
        self.with(|s| {
            s.exits.entry(name.to_owned()).or_insert(143);
        });
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> Result<(), ApiError> {
        self.record(format!("remove_container {name}"))
    }

    async fn resize_tty(&self, name: &str, rows: u16, cols: u16) -> Result<(), ApiError> {
        self.record(format!("resize_tty {name} {rows}x{cols}"))
    }

    fn download(&self, name: &str, path: &str) -> BoxStream<'_, Result<Bytes, ApiError>> {
        let result = self.record(format!("download {name} {path}"));
        futures_util::stream::iter(result.err().map(Err)).boxed()
    }

    async fn host_routes(&self) -> std::io::Result<String> {
        self.with(|s| {
            s.calls.push("host_routes".to_owned());
            s.routes.clone().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied")
            })
        })
    }
}
