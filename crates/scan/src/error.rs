//! Errors of a scan (rule files have their own, [`crate::ConfigError`]).

use std::path::PathBuf;

use crate::config::ConfigError;

/// Why a scan could not be done. Findings are not errors.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The rules could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A path to scan could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Walking a directory failed.
    #[error("cannot scan {path}: {message}")]
    Walk {
        /// The directory or entry.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `git log` failed: bad range, not a repository, timeout.
    #[error("cannot scan git range `{range}` in {repo}: {message}")]
    Git {
        /// The repository.
        repo: PathBuf,
        /// The revision arguments.
        range: String,
        /// git's message.
        message: String,
    },
    /// A baseline (fingerprint allowlist) file is unreadable or malformed.
    #[error("baseline {path}: {message}")]
    Baseline {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
