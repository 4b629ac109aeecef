//! `bot-bottle start`: create a bottle for an agent and run it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use backend::BackendKind;
use manifest::{DiscoverOptions, Manifest};
use state::Home;

use launcher::Launch;

use crate::report;

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
    /// Codex only: forward the host's ChatGPT login (`codex login --device-auth`, in
    /// $CODEX_HOME/auth.json or ~/.codex/auth.json) into the bottle instead of injecting
    /// OPENAI_API_KEY. The agent can then read and use a refreshable credential
    #[arg(long)]
    pub forward_codex_auth: bool,
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
    let codex_login = if args.forward_codex_auth {
        Some(codex_login(&agent)?)
    } else {
        None
    };
    let options = report::launch_options()?;
    let running = launcher::launch(
        &home,
        Launch {
            agent,
            backend,
            cwd,
            copy_cwd: args.copy_cwd,
            command: args.command,
            manifest: Some(manifest.path().to_path_buf()),
            codex_login,
        },
        &options,
    )?;
    Ok(report::exit_code(running.wait()?))
}

/// The host's Codex login for `--forward-codex-auth`, checked before anything is created;
/// prints the warning every time it is forwarded (also on `resume`).
pub fn codex_login(agent: &manifest::ResolvedAgent) -> anyhow::Result<PathBuf> {
    let kind = agent.bottle.agent_provider.kind();
    if kind != manifest::ProviderKind::Codex {
        anyhow::bail!(
            "--forward-codex-auth is for Codex bottles, and agent `{}` runs {}; leave the flag off",
            agent.name,
            match kind {
                manifest::ProviderKind::Claude => "Claude Code",
                manifest::ProviderKind::Codex => "Codex",
            }
        );
    }
    let path = launcher::provider::host_codex_login(|k| std::env::var_os(k)).context(
        "--forward-codex-auth: neither CODEX_HOME nor HOME is set, so there is no Codex login to find; run `codex login --device-auth` on the host first",
    )?;
    launcher::provider::check_codex_login(&path)?;
    eprintln!("{}", launcher::provider::codex_login_warning(&path));
    Ok(path)
}
