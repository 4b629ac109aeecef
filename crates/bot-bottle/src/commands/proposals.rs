//! `bot-bottle proposals`: the operator's queue, for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::NotAvailable;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List pending proposals of every bottle
    List {
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Show one proposal with its diff
    Show {
        /// Proposal id
        id: String,
    },
    /// Approve a proposal, optionally with an edited file (becomes `modified`)
    Approve {
        /// Proposal id
        id: String,
        /// Approve this file instead of the proposed one
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// A note for the agent and the audit log
        #[arg(long)]
        notes: Option<String>,
    },
    /// Reject a proposal
    Reject {
        /// Proposal id
        id: String,
        /// A note for the agent and the audit log
        #[arg(long)]
        notes: Option<String>,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let name = match cmd {
        Command::List { .. } => "proposals list",
        Command::Show { .. } => "proposals show",
        Command::Approve { .. } => "proposals approve",
        Command::Reject { .. } => "proposals reject",
    };
    Err(NotAvailable(name).into())
}
