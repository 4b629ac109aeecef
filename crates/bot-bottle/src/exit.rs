//! How errors reach the user: one line (plus causes) on stderr, no Rust types, no
//! backtraces, and a stable exit code.

use std::process::ExitCode;

/// Exit code for errors of bot-bottle itself (bad input, failed setup, unavailable command).
pub const ERROR: u8 = 2;

/// Prints the error chain as `error: outer: cause: cause` and returns the error exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(ERROR)
}

/// Logs go to stderr, filtered by `BOT_BOTTLE_LOG` (default `warn`, `-v` for `info`,
/// `-vv` for `debug`). Commands that own a terminal (the dashboard, an attached agent)
/// redirect logging to a file themselves.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOT_BOTTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// For commands whose output is made to be piped (`list | head`): a closed pipe ends the
/// process quietly, as it does for other command-line tools, instead of a panic message.
/// Never for long-running servers, where a client closing its socket must not kill them.
pub fn die_quietly_on_closed_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE installs no handler code; it is
    // done before any thread is started.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}
