//! `bot-bottle sidecar`: one bottle's sidecar bundle (egress, git gate, supervise).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's sidecar config directory, written by `start`
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("sidecar").into())
}
