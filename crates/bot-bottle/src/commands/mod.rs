//! One module per subcommand. Each exposes its clap arguments and a `run` function that
//! returns the process exit code.

pub mod audit;
pub mod cleanup;
pub mod completions;
pub mod discard;
pub mod doctor;
pub mod egress;
pub mod gate;
pub mod intake;
pub mod kube_dry_run;
pub mod list;
pub mod logs;
pub mod manifest;
pub mod pool;
pub mod prepare;
pub mod proposals;
pub mod resume;
pub mod scan;
pub mod scan_git;
pub mod sidecar;
pub mod start;
pub mod stop;
pub mod supervise;

use std::process::ExitCode;

use crate::cli::Command;

/// Dispatches a parsed command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Start(args) => start::run(args),
        Command::Resume(args) => resume::run(args),
        Command::List(args) => list::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Pool(command) => pool::run(command),
        Command::Cleanup(args) => cleanup::run(args),
        Command::Discard(args) => discard::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Supervise(args) => supervise::run(args),
        Command::Proposals(cmd) => proposals::run(cmd),
        Command::Audit(args) => audit::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Egress(cmd) => egress::run(cmd),
        Command::Gate(cmd) => gate::run(cmd),
        Command::Sidecar(args) => sidecar::run(args),
        Command::Intake(args) => intake::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Prepare(cmd) => prepare::run(cmd),
        Command::Manifest(cmd) => manifest::run(cmd),
        Command::Completions(args) => completions::run(args),
    }
}
