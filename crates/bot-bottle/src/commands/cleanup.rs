//! `bot-bottle cleanup`: remove what no running bottle uses, never a preserved state.

use std::process::ExitCode;

use backend::{BackendKind, CleanupAction};
use state::{BottleState, Home};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only print what would be removed
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut count = 0usize;
    for kind in BackendKind::ALL {
        // Only backends this build can open have resources to clean.
        let Ok(backend) = backend::open(kind, home.root()) else {
            continue;
        };
        let actions = match backend.cleanup(args.dry_run) {
            Ok(actions) => actions,
            // No daemon to ask (docker not installed or not running): it runs nothing of
            // ours either; the state directories below are still cleaned.
            Err(backend::BackendError::Unavailable { reason, .. }) => {
                eprintln!("bot-bottle: skipped the {kind} backend: {reason}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for action in actions {
            count += 1;
            match action {
                CleanupAction::KilledOrphan { identity } => {
                    let verb = if args.dry_run { "would kill" } else { "killed" };
                    println!("{verb} orphaned bottle {identity} ({kind})");
                }
                CleanupAction::RemovedRuntimeDir { identity, path } => {
                    println!("{verb} runtime files of {identity}: {}", path.display());
                }
                CleanupAction::RemovedContainer { name } => println!("{verb} container {name}"),
                CleanupAction::RemovedNetwork { name } => println!("{verb} network {name}"),
                CleanupAction::RemovedVolume { name } => println!("{verb} volume {name}"),
                CleanupAction::RemovedImage { id } => println!("{verb} image {id}"),
            }
        }
    }
    for bottle in home.list()? {
        match bottle.state {
            BottleState::Running | BottleState::Stopping => {}
            BottleState::Preserved => {
                println!(
                    "kept preserved bottle {} (`bot-bottle resume {}`)",
                    bottle.identity, bottle.identity
                );
            }
            BottleState::Stale => {
                count += 1;
                if !args.dry_run {
                    home.remove_bottle(&bottle.identity)?;
                }
                println!("{verb} state of {}", bottle.identity);
            }
        }
    }
    if count == 0 {
        println!("nothing to clean up");
    }
    Ok(ExitCode::SUCCESS)
}
