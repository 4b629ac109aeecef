//! The launcher's messages on the operator's terminal: every line on stderr prefixed with
//! `bot-bottle: `, an alert readable while the agent holds the terminal in raw mode, and image
//! builds as a spinner with the current step (the steps alone when stderr is no terminal; a
//! failed build reports its full log in the error either way).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// [`launcher::Report`] on this process's stderr.
pub struct Terminal {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    terminal: bool,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal {
            bar: Mutex::new(None),
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl launcher::Report for Terminal {
    fn line(&self, text: &str) {
        eprintln!("bot-bottle: {text}");
    }

    fn alert(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if err.is_terminal() {
            write!(err, "\r\nbot-bottle: {text}\r\n")
        } else {
            writeln!(err, "bot-bottle: {text}")
        };
    }

    fn build_output(&self, line: &str) {
        let step = line.trim_start().starts_with("Step ");
        if !self.terminal {
            if step {
                eprintln!("bot-bottle: building an image: {}", line.trim());
            }
            return;
        }
        let Ok(mut bar) = self.bar.lock() else { return };
        let bar = bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} building an image: {wide_msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        bar.set_message(line.trim().to_owned());
    }

    fn build_finished(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }
}

/// The launcher's options for this process: this executable serves the sidecar bundle and
/// the backends' helpers, the agent gets a terminal when all three standard streams are one,
/// and messages go to stderr.
pub fn launch_options() -> anyhow::Result<launcher::Options> {
    use anyhow::Context;
    Ok(launcher::Options {
        exe: std::env::current_exe().context("cannot find the bot-bottle executable")?,
        interactive: std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal(),
        report: std::sync::Arc::new(Terminal::new()),
        env: launcher::HostEnv::Process,
        cluster: None,
    })
}

/// The agent's exit code as this process's (clamped to 0..=255).
pub fn exit_code(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}
