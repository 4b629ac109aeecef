//! `bot-bottle doctor`: preflight of each backend this build has — one line per backend
//! saying whether this machine can run it and, if not, the exact fix — then whether a native
//! bottle can run each provider's agent (`claude`, `codex`, `gemini`, `opencode`: the
//! host's, from the system directories a bottle sees). The native backend is checked for real: a test bottle runs
//! `true`. Exit code 0 when the default backend is usable, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use backend::default_backend;
use backend::native::{HelperCommand, NativeBackend, NativeConfig};

#[derive(Debug, clap::Args)]
pub struct Args {}

/// `$BOT_BOTTLE_HOME`, else `~/.bot-bottle`.
fn bot_bottle_home() -> anyhow::Result<PathBuf> {
    Ok(state::Home::from_env()?.root().to_path_buf())
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let mut config = NativeConfig::new(HelperCommand::current_exe()?, &bot_bottle_home()?);
    // The probe bottle's runtime record goes to a scratch directory: doctor leaves nothing.
    let scratch =
        std::env::temp_dir().join(format!("bot-bottle-doctor-run-{}", std::process::id()));
    config.runtime_dir = scratch.clone();
    // Removed with the scratch directory, not moved into the home's trash.
    config.trash = None;
    let native = NativeBackend::new(config);
    let statuses = backend::preflight::all(Some(&native));
    let _ = std::fs::remove_dir_all(&scratch);

    let default = default_backend();
    let mut default_usable = false;
    // Backends this build does not have are not offered (their fixes would not help).
    for status in statuses.iter().filter(|s| s.backend.is_built()) {
        let line = status.line();
        if status.backend == default {
            default_usable = status.usable;
            // `native: usable (…)` → `native (default): usable (…)`
            let rest = line.strip_prefix(status.backend.name()).unwrap_or(&line);
            println!("{} (default){rest}", status.backend.name());
        } else {
            println!("{line}");
        }
    }
    for name in ["claude", "codex", "gemini", "opencode"] {
        let host_path = std::env::var_os("PATH");
        match backend::native::program::find_for_bottle(name, host_path.as_deref()) {
            Ok(path) => println!("{name} (native): usable ({})", path.display()),
            Err(problem) => println!("{name} (native): not usable: {problem}"),
        }
    }
    if default_usable {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the default backend ({default}) is not usable on this machine; apply the fix above or choose another backend with --backend"
        );
        Ok(ExitCode::from(1))
    }
}
