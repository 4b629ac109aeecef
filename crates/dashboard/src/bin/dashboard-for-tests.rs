//! The dashboard alone on a terminal, for the tests that drive it in a pseudo-terminal:
//! `BOT_BOTTLE_HOME` names the home; exit code 0 when the operator quits. (Users run it
//! as `bot-bottle supervise`.)

use std::process::ExitCode;

fn main() -> ExitCode {
    let home = match proposals::Home::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match dashboard::run(home, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the dashboard stopped: {e}");
            ExitCode::FAILURE
        }
    }
}
