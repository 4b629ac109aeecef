//! `bot-bottle doctor`: preflight of each backend.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("doctor").into())
}
