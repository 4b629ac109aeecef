//! `bot-bottle completions`: shell completion scripts generated from the command tree.

use std::process::ExitCode;

use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate completions for
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "bot-bottle", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
