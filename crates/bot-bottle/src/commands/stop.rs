//! `bot-bottle stop`: stop a running bottle. Its `start` process then tears it down. A stop
//! the operator asked for is the bottle's normal end: its `start` exits 0 and removes the
//! state (even when the agent ignored SIGTERM and was killed), unless `--keep` keeps it for
//! `resume`.
//!
//! A bottle whose `start` is still setting it up (building an image, waiting for the
//! sidecars) has nothing to signal yet: `stop` waits for the agent to run, then stops it,
//! rather than fail while the bottle is about to start.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use backend::BackendKind;
use state::{Home, Identity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list`
    pub identity: String,
    /// Seconds the agent gets to exit after SIGTERM before it is killed
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
    /// Keep the bottle's state for `bot-bottle resume` (default: removed, as after a clean exit)
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = Identity::parse(&args.identity)?;
    let home = Home::from_env()?;
    let meta = home.read_metadata(&identity)?;
    let backend = backend::open(
        BackendKind::parse(&meta.backend)?,
        &backend::OpenOptions::current_exe(home.root())?,
    )?;
    let grace = Duration::from_secs(args.grace);
    let deadline = std::time::Instant::now() + SETUP_WAIT;
    let mut said = false;
    let started = home.bottle(&identity).agent_started();
    loop {
        // Signalled only once its `start` launched the agent: a signal during setup would
        // hit a bottle half built (and be lost, or fail the setup instead of stopping it).
        if started.exists() {
            let paths = launcher::BottlePaths::new(home.state_dir(&identity));
            launcher::request_stop(&paths, args.keep).with_context(|| {
                format!(
                    "cannot record the stop request in {}",
                    paths.stop_requested().display()
                )
            })?;
            match backend.stop(identity.as_str(), grace) {
                Ok(true) => {
                    println!("stopped {identity}");
                    return Ok(ExitCode::SUCCESS);
                }
                other => {
                    let _ = std::fs::remove_file(paths.stop_requested());
                    other?;
                }
            }
        }
        // Its `start` holds the run lock: still setting up, the agent is about to run.
        if !home.is_running(&identity) || std::time::Instant::now() >= deadline {
            break;
        }
        if !said {
            eprintln!("bot-bottle: {identity} is still starting; waiting for it to run to stop it");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("bottle `{identity}` is not running (`bot-bottle list` shows its state)")
}

/// How long `stop` waits for a bottle that is still being set up (an image build included).
const SETUP_WAIT: Duration = Duration::from_secs(600);
