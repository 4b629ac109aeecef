//! `bot-bottle`: the one binary. Parses the command line, sets up logging and hands over to
//! the subcommand; every subcommand lives in its own file under `commands/`.

mod cli;
mod commands;
mod exit;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    exit::init_tracing(cli.verbose);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => exit::report(&err),
    }
}
