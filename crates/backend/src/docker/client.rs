//! The Docker Engine API as the docker backend uses it: the [`Engine`] trait, its real
//! implementation on `bollard` ([`bollard::Docker`]), and the error helpers shared by the
//! callers.
//!
//! Why a trait: every decision of the backend (what `launch` creates and in which order, what
//! teardown removes, what a dead sidecar or a failed create leads to, which runtime is chosen,
//! when a dropped limit refuses the bottle) is a sequence of engine calls. Behind the trait they
//! can be unit-tested against the recording fake in `fake.rs`, as the native backend does with
//! `native::os::Os`; the real implementation stays exercised by the integration tests against a
//! real dockerd (`tests/suite/docker.rs`).
//!
//! The trait is narrowed to the calls the backend makes, with the options it always passes
//! fixed here (e.g. containers are always removed with `force` and their anonymous volumes), so
//! a fake records exactly the decisions and nothing of bollard's option plumbing.

use std::collections::HashMap;
use std::future::Future;

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as ApiError;
use bollard::models::{
    BuildInfo, ContainerCreateBody, ContainerCreateResponse, ContainerInspectResponse,
    ContainerSummary, ImageSummary, Network, NetworkConnectRequest, NetworkCreateRequest,
    SystemInfo, Volume,
};
use bollard::query_parameters::{
    AttachContainerOptions, BuildImageOptions, CreateContainerOptions,
    DownloadFromContainerOptions, KillContainerOptions, ListContainersOptions, ListImagesOptions,
    ListNetworksOptions, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions, ResizeContainerTTYOptions, StopContainerOptions,
    WaitContainerOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::spec::ROUTE_TABLE;
use crate::BackendError;

/// Label filters as the Engine API takes them (`{"label": ["k=v", …], …}`).
pub type Filters = HashMap<String, Vec<String>>;

/// The Engine API calls of the docker backend. Names are container / network / image names
/// or ids as the daemon accepts them.
pub trait Engine: Clone + Send + Sync + 'static {
    /// `GET /info`.
    fn info(&self) -> impl Future<Output = Result<SystemInfo, ApiError>> + Send;
    /// Whether `GET /images/{tag}/json` finds the image.
    fn image_exists(&self, tag: &str) -> impl Future<Output = bool> + Send;
    /// `POST /build` with `context` (a tar archive) as the body; the build's progress.
    fn build_image(
        &self,
        options: BuildImageOptions,
        context: Vec<u8>,
    ) -> BoxStream<'_, Result<BuildInfo, ApiError>>;
    /// `GET /images/json` (top-level images only).
    fn list_images(
        &self,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<ImageSummary>, ApiError>> + Send;
    /// `DELETE /images/{name}`, never forced.
    fn remove_image(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `POST /networks/create`.
    fn create_network(
        &self,
        request: NetworkCreateRequest,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `POST /networks/{network}/connect`.
    fn connect_network(
        &self,
        network: &str,
        container: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `DELETE /networks/{name}`.
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `GET /networks`.
    fn list_networks(
        &self,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Network>, ApiError>> + Send;
    /// `GET /volumes`.
    fn list_volumes(
        &self,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Volume>, ApiError>> + Send;
    /// `DELETE /volumes/{name}`.
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `GET /containers/json?all=true`.
    fn list_containers(
        &self,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<ContainerSummary>, ApiError>> + Send;
    /// `POST /containers/create?name={name}`.
    fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> impl Future<Output = Result<ContainerCreateResponse, ApiError>> + Send;
    /// `POST /containers/{name}/start`.
    fn start_container(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `POST /containers/{name}/attach` (a hijacked stream).
    fn attach_container(
        &self,
        name: &str,
        options: AttachContainerOptions,
    ) -> impl Future<Output = Result<AttachContainerResults, ApiError>> + Send;
    /// `GET /containers/{name}/json`.
    fn inspect_container(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ContainerInspectResponse, ApiError>> + Send;
    /// `POST /containers/{name}/wait?condition=not-running`: the exit code once the container
    /// is not running (`-1` when the daemon ends the wait without one).
    fn wait_exit(&self, name: &str) -> impl Future<Output = Result<i64, ApiError>> + Send;
    /// `GET /containers/{name}/logs` (stdout and stderr), following them when `follow`.
    fn logs(&self, name: &str, follow: bool) -> BoxStream<'_, Result<LogOutput, ApiError>>;
    /// `POST /containers/{name}/kill?signal={signal}`.
    fn kill_container(
        &self,
        name: &str,
        signal: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `POST /containers/{name}/stop?t={grace_secs}` (SIGTERM, SIGKILL after the grace).
    fn stop_container(
        &self,
        name: &str,
        grace_secs: i32,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `DELETE /containers/{name}?force=true&v=true`.
    fn remove_container(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `POST /containers/{name}/resize`.
    fn resize_tty(
        &self,
        name: &str,
        rows: u16,
        cols: u16,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `GET /containers/{name}/archive?path={path}`: a tar archive of `path`.
    fn download(&self, name: &str, path: &str) -> BoxStream<'_, Result<Bytes, ApiError>>;
    /// The IPv4 route table of the daemon's host, as the kernel prints it in
    /// [`ROUTE_TABLE`]. Not an Engine API call: the daemon is local (the workspace and the
    /// init are bind mounts of host paths), so its host's routes are this host's. It is here
    /// so that the subnet choice, like every other decision of `launch`, is tested against
    /// the fake (with canned tables) and not against the test machine's routes.
    fn host_routes(&self) -> impl Future<Output = std::io::Result<String>> + Send;
}

impl Engine for Docker {
    async fn info(&self) -> Result<SystemInfo, ApiError> {
        Docker::info(self).await
    }

    async fn image_exists(&self, tag: &str) -> bool {
        self.inspect_image(tag).await.is_ok()
    }

    fn build_image(
        &self,
        options: BuildImageOptions,
        context: Vec<u8>,
    ) -> BoxStream<'_, Result<BuildInfo, ApiError>> {
        Docker::build_image(
            self,
            options,
            None,
            Some(bollard::body_full(context.into())),
        )
        .boxed()
    }

    async fn list_images(&self, filters: Filters) -> Result<Vec<ImageSummary>, ApiError> {
        Docker::list_images(
            self,
            Some(ListImagesOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }),
        )
        .await
    }

    async fn remove_image(&self, name: &str) -> Result<(), ApiError> {
        Docker::remove_image(self, name, None::<RemoveImageOptions>, None)
            .await
            .map(|_| ())
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> Result<(), ApiError> {
        Docker::create_network(self, request).await.map(|_| ())
    }

    async fn connect_network(&self, network: &str, container: &str) -> Result<(), ApiError> {
        Docker::connect_network(
            self,
            network,
            NetworkConnectRequest {
                container: container.to_owned(),
                endpoint_config: None,
            },
        )
        .await
    }

    async fn remove_network(&self, name: &str) -> Result<(), ApiError> {
        Docker::remove_network(self, name).await
    }

    async fn list_networks(&self, filters: Filters) -> Result<Vec<Network>, ApiError> {
        Docker::list_networks(
            self,
            Some(ListNetworksOptions {
                filters: Some(filters),
            }),
        )
        .await
    }

    async fn list_volumes(&self, filters: Filters) -> Result<Vec<Volume>, ApiError> {
        Docker::list_volumes(
            self,
            Some(ListVolumesOptions {
                filters: Some(filters),
            }),
        )
        .await
        .map(|list| list.volumes.unwrap_or_default())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), ApiError> {
        Docker::remove_volume(self, name, None::<RemoveVolumeOptions>).await
    }

    async fn list_containers(&self, filters: Filters) -> Result<Vec<ContainerSummary>, ApiError> {
        Docker::list_containers(
            self,
            Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }),
        )
        .await
    }

    async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<ContainerCreateResponse, ApiError> {
        Docker::create_container(
            self,
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                platform: String::new(),
            }),
            body,
        )
        .await
    }

    async fn start_container(&self, name: &str) -> Result<(), ApiError> {
        Docker::start_container(self, name, None).await
    }

    async fn attach_container(
        &self,
        name: &str,
        options: AttachContainerOptions,
    ) -> Result<AttachContainerResults, ApiError> {
        Docker::attach_container(self, name, Some(options)).await
    }

    async fn inspect_container(&self, name: &str) -> Result<ContainerInspectResponse, ApiError> {
        Docker::inspect_container(self, name, None).await
    }

    async fn wait_exit(&self, name: &str) -> Result<i64, ApiError> {
        let mut wait = Docker::wait_container(
            self,
            name,
            Some(WaitContainerOptions {
                condition: "not-running".to_owned(),
            }),
        );
        match wait.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(ApiError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => Err(err),
            None => Ok(-1),
        }
    }

    fn logs(&self, name: &str, follow: bool) -> BoxStream<'_, Result<LogOutput, ApiError>> {
        Docker::logs(
            self,
            name,
            Some(LogsOptions {
                follow,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .boxed()
    }

    async fn kill_container(&self, name: &str, signal: &str) -> Result<(), ApiError> {
        Docker::kill_container(
            self,
            name,
            Some(KillContainerOptions {
                signal: signal.to_owned(),
            }),
        )
        .await
    }

    async fn stop_container(&self, name: &str, grace_secs: i32) -> Result<(), ApiError> {
        Docker::stop_container(
            self,
            name,
            Some(StopContainerOptions {
                t: Some(grace_secs),
                signal: None,
            }),
        )
        .await
    }

    async fn remove_container(&self, name: &str) -> Result<(), ApiError> {
        Docker::remove_container(
            self,
            name,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
    }

    async fn resize_tty(&self, name: &str, rows: u16, cols: u16) -> Result<(), ApiError> {
        Docker::resize_container_tty(
            self,
            name,
            ResizeContainerTTYOptions {
                h: i32::from(rows),
                w: i32::from(cols),
            },
        )
        .await
    }

    fn download(&self, name: &str, path: &str) -> BoxStream<'_, Result<Bytes, ApiError>> {
        Docker::download_from_container(
            self,
            name,
            Some(DownloadFromContainerOptions {
                path: path.to_owned(),
            }),
        )
        .boxed()
    }

    async fn host_routes(&self) -> std::io::Result<String> {
        tokio::fs::read_to_string(ROUTE_TABLE).await
    }
}

/// Maps an Engine API error to a setup failure of `stage`.
pub(crate) fn setup(stage: &str) -> impl FnOnce(ApiError) -> BackendError + '_ {
    move |err| BackendError::Setup {
        stage: stage.to_owned(),
        message: api_message(&err),
    }
}

/// The daemon's own message when there is one (no Rust type names).
pub(crate) fn api_message(err: &ApiError) -> String {
    match err {
        ApiError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Whether the daemon answered 404 (no such container / image / network).
pub(crate) fn is_not_found(err: &ApiError) -> bool {
    matches!(
        err,
        ApiError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::spec::HostRoutes;

    /// The real engine's route table is this kernel's, and it parses whole (the header and
    /// every line): a kernel whose format the parser refused would refuse every bottle. No
    /// daemon is needed: the client connects on its first request only (bollard wants the
    /// socket's path to exist; an empty file stands in, never connected to).
    #[test]
    fn the_real_engine_reads_the_kernels_route_table_and_it_parses() {
        if !std::path::Path::new(ROUTE_TABLE).exists() {
            eprintln!("skipping: no {ROUTE_TABLE} here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, b"").unwrap();
        let docker =
            Docker::connect_with_socket(socket.to_str().unwrap(), 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let table = rt.block_on(Engine::host_routes(&docker)).unwrap();
        assert_eq!(table, std::fs::read_to_string(ROUTE_TABLE).unwrap());
        HostRoutes::parse(&table).unwrap();
    }
}
