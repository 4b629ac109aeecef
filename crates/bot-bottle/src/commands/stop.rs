//! `bot-bottle stop`: stop a running bottle.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list`
    pub identity: String,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("stop").into())
}
