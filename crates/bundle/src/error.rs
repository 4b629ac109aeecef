//! What can stop the sidecar bundle from starting or keep it from serving.

use std::path::PathBuf;

/// Why the sidecar bundle could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The config file could not be read.
    #[error("cannot read the sidecar config {}: {source}", path.display())]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not a valid bundle config.
    #[error("the sidecar config {} is invalid: {source}", path.display())]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The async runtime or the signal watch could not be set up.
    #[error("{action}: {source}")]
    Runtime {
        /// What failed.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A listener could not be bound (or its Unix socket replaced or restricted).
    #[error("cannot {action} {target}: {source}")]
    Listen {
        /// `listen on`, `replace`, `restrict`.
        action: &'static str,
        /// The address or socket path.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The live routes could not be loaded.
    #[error("cannot load routes {}: {source}", path.display())]
    Routes {
        /// The routes file.
        path: PathBuf,
        /// What is wrong.
        source: policy::ParseError,
    },
    /// The egress proxy could not start or stopped with an error.
    #[error("{action}: {source}")]
    Egress {
        /// `cannot start egress`, `egress stopped`.
        action: &'static str,
        /// Why.
        source: egress::ProxyError,
    },
    /// The git gate's config could not be loaded.
    #[error("cannot load {}: {source}", path.display())]
    GateConfig {
        /// The git gate's config file.
        path: PathBuf,
        /// What is wrong.
        source: gitgate::ConfigError,
    },
    /// The git gate's options could not be prepared.
    #[error(transparent)]
    GateOptions(gitgate::GateError),
    /// The git gate could not start.
    #[error("cannot start the git gate: {0}")]
    Gate(#[source] gitgate::GateError),
    /// The git gate stopped with an error.
    #[error("the git gate stopped: {0}")]
    GateStopped(#[source] std::io::Error),
    /// Supervise stopped with an error.
    #[error("supervise stopped: {0}")]
    SuperviseStopped(#[source] supervise::ServeError),
    /// The operator port is configured but its token is not in the environment.
    #[error(
        "the operator port needs its token in ${var}, which is unset or empty; the launcher puts it there from the bottle's Secret (start the bottle again)"
    )]
    OperatorToken {
        /// The variable.
        var: String,
    },
    /// The operator port stopped with an error.
    #[error("the operator port stopped: {0}")]
    OperatorStopped(#[source] std::io::Error),
    /// The agent's plan could not be published (a warm pod's bundle).
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// A sidecar ended while the bundle was serving.
    #[error("a sidecar stopped unexpectedly")]
    Unexpected,
    /// A sidecar's task panicked or was cancelled.
    #[error("a sidecar task failed: {0}")]
    Task(String),
}
