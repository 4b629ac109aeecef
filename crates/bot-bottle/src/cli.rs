//! The command tree. Each subcommand's arguments are defined next to its code in
//! `commands/<name>.rs`; this file only assembles them.

use clap::{Parser, Subcommand};

use crate::commands;

/// Run a coding agent unsupervised in a bottle whose only ways out are checked sidecars:
/// an egress proxy that lets out only the bottle's routes, a git gate that scans pushes, and
/// a supervise server through
/// which the agent asks a human for more access.
#[derive(Debug, Parser)]
#[command(
    name = "bot-bottle",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); BOT_BOTTLE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an agent in a new bottle (builds what it needs, tears down on exit)
    Start(commands::start::Args),
    /// Relaunch a preserved bottle from its saved state
    Resume(commands::resume::Args),
    /// List bottles: running and preserved
    List(commands::list::Args),
    /// Stop a running bottle
    Stop(commands::stop::Args),
    /// Keep warm pods of an agent's kubernetes bottle ready (agent-sandbox warm pools)
    #[command(subcommand)]
    Pool(commands::pool::Command),
    /// Remove orphaned resources and state (never a preserved bottle)
    Cleanup(commands::cleanup::Args),
    /// Throw away a bottle that is not running, preserved or not (asks first)
    Discard(commands::discard::Args),
    /// Show a bottle's egress request log (also after it ended)
    Logs(commands::logs::Args),
    /// Operator dashboard: review, edit, approve or reject agents' proposals
    Supervise(commands::supervise::Args),
    /// Review proposals from scripts (list, show, approve, reject)
    #[command(subcommand)]
    Proposals(commands::proposals::Command),
    /// Show or verify the audit log of operator decisions
    Audit(commands::audit::Args),
    /// Scan files or git commits for secrets
    Scan(commands::scan::Args),
    /// Run the egress proxy on its own
    #[command(subcommand)]
    Egress(commands::egress::Command),
    /// Run the git gate on its own
    #[command(subcommand)]
    Gate(commands::gate::Command),
    /// Run a bottle's sidecar bundle (egress, git gate, supervise); started by `start`
    Sidecar(commands::sidecar::Args),
    /// Take a warm pod's sidecar config once on loopback (run by the pod, not by hand)
    #[command(hide = true)]
    Intake(commands::intake::Args),
    /// Check which backends this machine can run, and how to fix what is missing
    Doctor(commands::doctor::Args),
    /// Do a backend's one-time preparation (qemu: download the guest kernel, check KVM)
    #[command(subcommand)]
    Prepare(commands::prepare::Command),
    /// Check a manifest or show a resolved bottle
    #[command(subcommand)]
    Manifest(commands::manifest::Command),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions(commands::completions::Args),
}

impl Command {
    /// Commands that print a result and exit, often into a pipe.
    pub fn prints_for_pipes(&self) -> bool {
        matches!(
            self,
            Command::List(_)
                | Command::Logs(_)
                | Command::Proposals(_)
                | Command::Audit(_)
                | Command::Scan(_)
                | Command::Doctor(_)
                | Command::Manifest(_)
                | Command::Completions(_)
        )
    }
}
