//! How errors reach the user: one line (plus causes) on stderr, no Rust types, no
//! backtraces, and a stable exit code.

use std::process::ExitCode;

/// Exit code for errors of bot-bottle itself (bad input, failed setup, unavailable command).
pub const ERROR: u8 = 2;

/// Prints the error chain as `error: outer: cause: cause` and returns the error exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", render(err));
    ExitCode::from(ERROR)
}

/// `outer: cause: cause`, leaving out a cause the message before it already ends with (an
/// error whose message includes its `source` would otherwise say it twice).
fn render(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.ends_with(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// An error whose message includes its source, as thiserror's `{source}` makes them.
    #[derive(Debug)]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for Read {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read {}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for Read {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let read = Read {
            path: "m.yaml".into(),
            source: std::io::Error::other("it is a named pipe (FIFO)"),
        };
        let err = Err::<(), _>(read)
            .context("cannot load the manifest")
            .unwrap_err();
        assert_eq!(
            render(&err),
            "cannot load the manifest: cannot read m.yaml: it is a named pipe (FIFO)"
        );
        let plain = Err::<(), _>(std::io::Error::other("denied"))
            .context("cannot open x")
            .unwrap_err();
        assert_eq!(render(&plain), "cannot open x: denied");
    }
}
