//! `bot-bottle scan`: look for secrets in files or git commits.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to scan (`-` for stdin) [default: .]
    pub paths: Vec<PathBuf>,
    /// Scan the added lines of the commits in this git range instead (e.g. main..HEAD)
    #[arg(long, value_name = "RANGE")]
    pub git: Option<String>,
    /// gitleaks-format rule file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: text, json, sarif
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Show secrets in full instead of redacted
    #[arg(long)]
    pub no_redact: bool,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("scan").into())
}
