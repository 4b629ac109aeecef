//! `bot-bottle audit`: the operator decisions, and proof that nobody edited them.

use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Only this bottle
    #[arg(long, value_name = "IDENTITY")]
    pub bottle: Option<String>,
    /// Only this component (egress, gitleaks)
    #[arg(long)]
    pub component: Option<String>,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain of every audit log; fails if a line was edited or deleted
    Verify,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Command::Verify) => Err(NotAvailable("audit verify").into()),
        None => Err(NotAvailable("audit").into()),
    }
}
