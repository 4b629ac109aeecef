//! `bot-bottle start`: create a bottle for an agent and run it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use backend::BackendKind;
use manifest::{DiscoverOptions, Manifest};
use state::Home;

use crate::bottle::{self, Launch};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent to start (a name under `agents:` in the manifest)
    pub agent: String,
    /// Isolation backend: native, docker, smolmachines, apple [default: native on Linux]
    #[arg(long, env = "BOT_BOTTLE_BACKEND")]
    pub backend: Option<String>,
    /// Manifest file or directory (default: $BOT_BOTTLE_MANIFEST, ./bot-bottle.yaml, ./.bot-bottle/, $BOT_BOTTLE_HOME/manifest/)
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Give the bottle a copy of the working directory instead of mounting it writable
    #[arg(long)]
    pub copy_cwd: bool,
    /// Command to run instead of the provider's agent (e.g. `-- bash`)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let home = Home::from_env()?;
    let backend = match &args.backend {
        Some(name) => BackendKind::parse(name)?,
        None => backend::default_backend(),
    };
    let opts = DiscoverOptions::from_env(args.manifest, |k| std::env::var_os(k), cwd.clone());
    let manifest = Manifest::discover(&opts)?;
    let agent = manifest.agent(&args.agent)?;
    bottle::start(
        &home,
        Launch {
            agent,
            backend,
            cwd,
            copy_cwd: args.copy_cwd,
            command: args.command,
            manifest: Some(manifest.path().to_path_buf()),
        },
    )
}
