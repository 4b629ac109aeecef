//! `bot-bottle egress serve`: the proxy on its own, with its routes file watched for
//! changes. Lives here (not in the binary) so the binary stays a thin argument parser.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use policy::EgressConfig;

use crate::config::{ConnectTo, ProxyConfig};
use crate::log::LogSink;
use crate::routes::RoutesHandle;

/// Options of `egress serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The routes file (re-read when it changes).
    pub routes: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// CA directory.
    pub ca_dir: PathBuf,
    /// Extra upstream roots.
    pub upstream_ca: Vec<PathBuf>,
    /// `--connect-to` values as given.
    pub connect_to: Vec<String>,
    /// Request log file (stderr when absent).
    pub log_file: Option<PathBuf>,
    /// Forward without outbound DLP (a benchmark's baseline).
    pub dangerously_skip_dlp: bool,
}

/// Why `egress serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The routes file.
    #[error(transparent)]
    Routes(#[from] policy::ParseError),
    /// A `--connect-to` value.
    #[error(transparent)]
    ConnectTo(#[from] crate::config::ConnectToError),
    /// The routes file parses but its routes cannot be used.
    #[error("routes file {}", path.display())]
    RoutesInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::routes::ReloadError,
    },
    /// Starting the proxy.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    /// Binding the listener or starting the runtime.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Reads a routes file, making relative `upstream_ca` paths relative to the file.
pub fn read_routes(path: &Path) -> Result<EgressConfig, policy::ParseError> {
    let mut config = policy::load_routes_file(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(cas) = config.upstream_ca.as_mut() {
        for ca in cas.iter_mut() {
            if Path::new(ca.as_str()).is_relative() {
                *ca = dir.join(ca.as_str()).to_string_lossy().into_owned();
            }
        }
    }
    Ok(config)
}

/// Runs until SIGTERM or Ctrl-C. Prints `listening on ADDR` on stdout once ready.
pub fn run(opts: ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    runtime.block_on(run_async(opts))
}

async fn run_async(opts: ServeOptions) -> Result<(), ServeError> {
    let routes = read_routes(&opts.routes)?;
    let mut config = ProxyConfig::new(&opts.ca_dir);
    config.upstream_ca = opts.upstream_ca.clone();
    config.dangerously_skip_dlp = opts.dangerously_skip_dlp;
    config.connect_to = opts
        .connect_to
        .iter()
        .map(|c| ConnectTo::parse(c))
        .collect::<Result<_, _>>()?;
    if let Some(file) = &opts.log_file {
        config.log = LogSink::File(file.clone());
    }
    let proxy = crate::Proxy::new(config, routes).map_err(|e| match e {
        crate::proxy::ProxyError::Routes(source) => ServeError::RoutesInvalid {
            path: opts.routes.clone(),
            source,
        },
        other => ServeError::Proxy(other),
    })?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: opts.listen.clone(),
        source,
    })?;
    let shutdown = shutdown_signal().map_err(|source| ServeError::Listen {
        addr: opts.listen.clone(),
        source,
    })?;
    let handle = proxy.routes();
    tokio::spawn(watch(opts.routes.clone(), handle));
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
    proxy.serve(listener, shutdown).await?;
    Ok(())
}

/// Installs the SIGTERM / SIGINT handlers now (so a signal that arrives right after
/// `listening on` is printed is not lost) and returns a future that completes on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Polls the routes file and swaps in valid changes; an invalid file keeps the old rules.
async fn watch(path: PathBuf, handle: RoutesHandle) {
    let mut last = state::read::read_limited(&path, state::read::CONFIG_LIMIT).ok();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = state::read::read_limited(&path, state::read::CONFIG_LIMIT).ok();
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        match read_routes(&path) {
            Ok(config) => match handle.replace(config) {
                Ok(()) => tracing::info!(file = %path.display(), "reloaded routes"),
                Err(e) => tracing::warn!(
                    "routes file {} refused, keeping the old rules: {}",
                    path.display(),
                    chain(&e)
                ),
            },
            Err(e) => tracing::warn!("routes file refused, keeping the old rules: {}", chain(&e)),
        }
    }
}

/// `error: cause: cause`, for messages that are not printed through anyhow.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
