//! `bot-bottle stop`: stop a running bottle. Its `start` process then tears it down.

use std::process::ExitCode;
use std::time::Duration;

use backend::BackendKind;
use state::{Home, Identity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list`
    pub identity: String,
    /// Seconds the agent gets to exit after SIGTERM before it is killed
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = Identity::parse(&args.identity)?;
    let home = Home::from_env()?;
    let meta = home.read_metadata(&identity)?;
    let backend = backend::open(BackendKind::parse(&meta.backend)?, home.root())?;
    if backend.stop(identity.as_str(), Duration::from_secs(args.grace))? {
        println!("stopped {identity}");
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("bottle `{identity}` is not running (`bot-bottle list` shows its state)")
    }
}
