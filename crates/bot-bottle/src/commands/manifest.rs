//! `bot-bottle manifest check|show`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the manifest; lists every error with file and line (exit 1 if invalid)
    Check {
        /// Manifest file or directory
        #[arg(long, value_name = "PATH")]
        manifest: Option<PathBuf>,
    },
    /// Print a bottle as resolved through `extends`
    Show {
        /// The bottle's name under `bottles:`
        bottle: String,
        /// Manifest file or directory
        #[arg(long, value_name = "PATH")]
        manifest: Option<PathBuf>,
        /// Print JSON instead of YAML
        #[arg(long)]
        json: bool,
    },
}

pub fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("manifest").into())
}
