//! `bot-bottle cleanup`: remove what no running bottle uses, never a preserved state and
//! never a bottle whose queue holds an operator decision not applied yet.

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
        let opened = backend::OpenOptions::current_exe(home.root())
            .and_then(|options| backend::open(kind, &options));
        let Ok(backend) = opened else {
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
                // A decision the operator made while the bottle's supervise server was down
                // lives only in its queue until it is applied: never delete it.
                let unapplied = home.unapplied_decisions(&bottle.identity)?;
                let kept = if !unapplied.is_empty() {
                    Some(state::StateError::UnappliedDecisions {
                        identity: bottle.identity.clone(),
                        ids: unapplied,
                    })
                } else if args.dry_run {
                    None
                } else {
                    match home.remove_bottle(&bottle.identity) {
                        Ok(()) => None,
                        Err(e @ state::StateError::UnappliedDecisions { .. }) => Some(e),
                        Err(e) => return Err(e.into()),
                    }
                };
                match kept {
                    Some(why) => println!("kept state of {}: {why}", bottle.identity),
                    None => {
                        count += 1;
                        println!("{verb} state of {}", bottle.identity);
                    }
                }
            }
        }
    }
    if count == 0 {
        println!("nothing to clean up");
    }
    Ok(ExitCode::SUCCESS)
}
