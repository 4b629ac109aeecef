//! `bot-bottle`: the one binary. Parses the command line, sets up logging and hands over to
//! the subcommand; every subcommand lives in its own file under `commands/`.

mod cli;
mod commands;
mod exit;
mod report;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The native backend's in-bottle helper (hidden; started only by the backend itself):
    // dispatched before anything else so it starts single-threaded and unlogged.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(backend::native::HELPER_SUBCOMMAND))
    {
        backend::inbottle::native_helper::helper_main();
    }
    // The docker backend's init, PID 1 of an agent container (this executable is mounted
    // read-only into it): relays the sidecar ports and starts the agent once released.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            backend::inbottle::docker_init::INIT_SUBCOMMAND,
        ))
    {
        backend::inbottle::docker_init::init_main();
    }
    // The docker bottle's reaper: tears the bottle down if `start` dies without doing so.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            backend::docker::reaper::REAPER_SUBCOMMAND,
        ))
    {
        backend::docker::reaper::reaper_main();
    }
    // The remover of the trash: what ended bottles left, emptied after `start` returned.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(state::EMPTY_TRASH_SUBCOMMAND))
    {
        state::trash::empty_trash_main(backend::TRASH_REMOVERS);
    }
    // The smolmachines backend's guest init (run by `smolvm machine exec` in the machine).
    backend::inbottle::smolvm_guest::dispatch(std::env::args_os().nth(1).as_deref());
    let cli = cli::Cli::parse();
    if cli.command.prints_for_pipes() {
        exit::die_quietly_on_closed_pipe();
    }
    exit::init_tracing(cli.verbose);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => exit::report(&err),
    }
}
