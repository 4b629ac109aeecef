//! `bot-bottle gate serve`: the git gate on its own.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the gate until interrupted; prints `listening on ADDR` once ready
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A manifest `git-gate:` block as YAML (user, repos)
    #[arg(long, value_name = "FILE")]
    pub repos: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:9418
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Directory for mirrors, keys and the allowlist
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

pub fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    Err(NotAvailable("gate serve").into())
}
