//! `bot-bottle manifest check|show`.
//!
//! Exit codes: 0 the manifest is valid (or the bottle was printed), 1 the manifest has
//! errors (every one is listed as `path:line:col: message`), 2 the manifest could not be
//! found or read, or the bottle does not exist.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use manifest::{DiscoverOptions, Manifest, ManifestError};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the manifest; lists every error with file and line (exit 1 if invalid)
    Check {
        /// Manifest file or directory
        #[arg(long, value_name = "PATH")]
        manifest: Option<PathBuf>,
    },
    /// Print a bottle as resolved through `extends`
    Show {
        /// The bottle's name under `bottles:`
        bottle: String,
        /// Manifest file or directory
        #[arg(long, value_name = "PATH")]
        manifest: Option<PathBuf>,
        /// Print JSON instead of YAML
        #[arg(long)]
        json: bool,
    },
}

/// Exit code of an invalid manifest.
const INVALID: u8 = 1;

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Check { manifest } => check(manifest),
        Command::Show {
            bottle,
            manifest,
            json,
        } => show(manifest, &bottle, json),
    }
}

fn load(explicit: Option<PathBuf>) -> anyhow::Result<Manifest> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let opts = DiscoverOptions::from_env(explicit, |name| std::env::var_os(name), cwd);
    Ok(Manifest::discover(&opts)?)
}

/// Prints every diagnostic and a closing count on stderr.
fn report_invalid(manifest: &Manifest, errors: &[manifest::Diagnostic]) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    let n = errors.len();
    eprintln!(
        "error: {} has {n} error{}; fix {} and run `bot-bottle manifest check` again",
        manifest.path().display(),
        if n == 1 { "" } else { "s" },
        if n == 1 { "it" } else { "them" }
    );
    ExitCode::from(INVALID)
}

fn check(explicit: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let manifest = load(explicit)?;
    if !manifest.errors().is_empty() {
        return Ok(report_invalid(&manifest, manifest.errors()));
    }
    let bottles = manifest.bottle_names().len();
    let agents = manifest.agent_names().len();
    println!(
        "{}: ok, {bottles} bottle{}, {agents} agent{}",
        manifest.path().display(),
        if bottles == 1 { "" } else { "s" },
        if agents == 1 { "" } else { "s" },
    );
    Ok(ExitCode::SUCCESS)
}

fn show(explicit: Option<PathBuf>, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let manifest = load(explicit)?;
    let bottle = match manifest.bottle(name) {
        Ok(bottle) => bottle,
        Err(ManifestError::Invalid { errors, .. }) => {
            return Ok(report_invalid(&manifest, &errors));
        }
        Err(other) => return Err(other.into()),
    };
    if json {
        let text = serde_json::to_string_pretty(&bottle).context("cannot render the bottle")?;
        println!("{text}");
    } else {
        let text = bottle.to_yaml().context("cannot render the bottle")?;
        println!(
            "# bottle `{name}` from {}, with `extends` resolved",
            manifest.path().display()
        );
        print!("{text}");
        print!("{}", implicit_routes_comment(&bottle));
    }
    Ok(ExitCode::SUCCESS)
}

/// The routes the agent provider adds at `start`, as YAML comments after the bottle: they
/// are not in the manifest, yet the bottle runs with them (and they come first).
fn implicit_routes_comment(bottle: &manifest::ResolvedBottle) -> String {
    let routes = launcher::provider::implicit_routes(bottle, |k| {
        std::env::var_os(k).is_some_and(|v| !v.is_empty())
    });
    if routes.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "# implicit routes, added at `start` by the {} provider before the routes above (a route\n# of your own for the same host replaces one):\n",
        bottle.agent_provider.kind().as_str()
    );
    for r in routes {
        let what = if r.matches.is_none() {
            "any method, any path"
        } else {
            "the paths and methods of the provider"
        };
        let credential = match (&r.token_env, &r.auth_header, &r.auth_scheme) {
            (Some(env), Some(header), _) => format!("; credential {env} as {header}"),
            (Some(env), None, Some(scheme)) => {
                format!("; credential {env} as Authorization: {scheme}")
            }
            (Some(env), None, None) => format!("; credential {env}"),
            (None, _, _) => String::new(),
        };
        out.push_str(&format!("#   - host: {}  # {what}{credential}\n", r.host));
    }
    out
}
