//! `bot-bottle-sidecar`: a bottle's sidecar bundle and nothing else (`bundle::run_process`,
//! the very code of `bot-bottle sidecar`), built and installed with `bot-bottle` and found
//! next to it by `start` on the native and docker backends (`launcher`'s
//! `sidecar_executable`). The bundle lives as long as its bottle; as its own executable it
//! maps the pages of the bundle's code only, not the whole `bot-bottle` with its CLI, the
//! Kubernetes and Docker clients and the dashboard. Where it is missing, `start` runs
//! `bot-bottle sidecar`.

use std::process::ExitCode;

// `die_quietly_on_closed_pipe` is for `bot-bottle`'s pipe-printing commands only.
#[allow(dead_code)]
#[path = "exit.rs"]
mod exit;

fn main() -> ExitCode {
    let args = match bundle::SidecarArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(exit::ERROR);
        }
    };
    // As `bot-bottle sidecar` logs: `BOT_BOTTLE_LOG`, default `warn` (`start` passes no -v).
    exit::init_tracing(0);
    match bundle::run_process(&args) {
        Ok(code) => code,
        Err(err) => exit::report(&err.into()),
    }
}
