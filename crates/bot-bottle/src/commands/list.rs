//! `bot-bottle list`: the bottles this machine knows about.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array (identity, agent, backend, state, created)
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("list").into())
}
