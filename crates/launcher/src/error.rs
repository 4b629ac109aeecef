//! The launcher's errors. Every message names what failed and, where the operator can do
//! something about it, what to do; the binary adds its own context with `anyhow` and prints
//! the chain.

use std::path::PathBuf;

use state::Identity;

/// Why a bottle could not be launched, or how it ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The backend's preflight failed: nothing was started (the message lists the failed
    /// checks and their fixes).
    #[error("{0}")]
    BackendUnusable(String),
    /// The backend refused or failed.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The agent's contract (its environment and home files) cannot be built.
    #[error(transparent)]
    Contract(#[from] contract::ContractError),
    /// The sidecar bundle exited or stayed silent before its readiness line.
    #[error(
        "the sidecar bundle {why}; nothing was started. Its log ({}) ends with:\n{tail}",
        log.display()
    )]
    SidecarNotReady {
        why: &'static str,
        log: PathBuf,
        tail: String,
    },
    /// The sidecar bundle died while the agent ran: the bottle was stopped and kept.
    #[error(transparent)]
    SidecarDown(#[from] crate::watch::SidecarDown),
    /// A sidecar socket path the kernel would refuse.
    #[error(transparent)]
    SocketPathTooLong(#[from] state::SocketPathTooLong),
    /// The forwarded Codex login cannot be used (the message says why and what to do).
    #[error("{0}")]
    CodexLogin(String),
    /// Something the manifest or the host provides is unusable (the message names it and
    /// the fix).
    #[error("{0}")]
    Invalid(String),
    /// A step failed: what was being done, and why.
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl LaunchError {
    /// Whether the bottle's sidecar bundle died under the agent (the bottle is then kept).
    pub fn is_sidecar_down(&self) -> bool {
        matches!(self, LaunchError::SidecarDown(_))
    }

    /// The bottle this error is about, when it names one.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            LaunchError::SidecarDown(down) => Some(&down.identity),
            _ => None,
        }
    }
}

/// `what: cause` for any error, as the launcher's steps report them.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, LaunchError>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, LaunchError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, LaunchError> {
        self.map_err(|e| LaunchError::Step {
            what: what.into(),
            source: Box::new(e),
        })
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, LaunchError> {
        self.map_err(|e| LaunchError::Step {
            what: what(),
            source: Box::new(e),
        })
    }
}

/// The whole chain of an error on one line (`outer: cause: cause`).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
