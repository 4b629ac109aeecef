//! `bot-bottle resume`: relaunch a preserved bottle from its metadata.

use std::process::ExitCode;

use anyhow::Context;
use backend::BackendKind;
use manifest::{DiscoverOptions, Manifest};
use state::{Home, Identity};

use launcher::Launch;

use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list` (e.g. fixer-3fa9c)
    pub identity: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = Identity::parse(&args.identity)?;
    let home = Home::from_env()?;
    let lock = home.lock_bottle(&identity)?;
    let meta = home.read_metadata(&identity)?;
    let backend = BackendKind::parse(&meta.backend)?;
    let opts = DiscoverOptions::from_env(
        meta.manifest.clone(),
        |k| std::env::var_os(k),
        meta.cwd.clone(),
    );
    let manifest = Manifest::discover(&opts).with_context(|| {
        format!("cannot load the manifest bottle `{identity}` was started from")
    })?;
    let agent = manifest.agent(&meta.agent)?;
    let codex_login = if meta.forward_codex_auth {
        Some(super::start::codex_login(&agent)?)
    } else {
        None
    };
    let options = report::launch_options()?;
    let running = launcher::resume(
        &home,
        &identity,
        lock,
        Launch {
            agent,
            backend,
            cwd: meta.cwd,
            copy_cwd: meta.copy_cwd,
            command: meta.command,
            manifest: meta.manifest,
            codex_login,
        },
        &options,
    )?;
    Ok(report::exit_code(running.wait()?))
}
