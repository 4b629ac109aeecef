//! `bot-bottle cleanup`: remove what no running bottle uses, never a preserved state.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only print what would be removed
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("cleanup").into())
}
