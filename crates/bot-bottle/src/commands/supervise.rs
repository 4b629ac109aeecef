//! `bot-bottle supervise`: the operator dashboard.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show only this bottle's proposals
    #[arg(long, value_name = "IDENTITY")]
    pub bottle: Option<String>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("supervise").into())
}
