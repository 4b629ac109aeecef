//! `bot-bottle resume`: relaunch a preserved bottle.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list` (e.g. fixer-3fa9c)
    pub identity: String,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("resume").into())
}
