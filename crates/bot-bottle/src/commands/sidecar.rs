//! `bot-bottle sidecar`: one bottle's sidecar bundle (the `bundle` crate), started by `start`,
//! which waits for its `ready` line (and, when it stops it, for `stopped`); `--check` is the
//! health check of a running bundle. The small `bot-bottle-sidecar` (src/sidecar.rs), which
//! `start` runs where it is installed, runs the same [`bundle::run_process`].

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's sidecar config file (`sidecar.json`), written by `start`
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Health check of the bundle that runs with this config: ask each of its sidecars a
    /// real question, print one line each, exit 0 only when all answered
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    Ok(bundle::run_process(&bundle::SidecarArgs {
        config: args.config,
        check: args.check,
    })?)
}
