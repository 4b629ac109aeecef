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
    let bottles = home.list()?;
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
            // Said only where it matters: when a bottle of this home used that backend.
            Err(backend::BackendError::Unavailable { reason, .. }) => {
                if let Some(warning) = unavailable_warning(kind, &reason, &bottles) {
                    eprintln!("{warning}");
                }
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
                CleanupAction::RemovedSandbox { name } => println!("{verb} sandbox {name}"),
            }
        }
    }
    for bottle in bottles {
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
                    Some(
                        state::StateError::UnappliedDecisions {
                            identity: bottle.identity.clone(),
                            ids: unapplied,
                        }
                        .to_string(),
                    )
                } else if args.dry_run {
                    // What `discard_kept` would remove: the claim its record names.
                    if let Some(claim) =
                        kept_claim(&home, &bottle.identity, bottle.metadata.as_ref())
                    {
                        count += 1;
                        println!("{verb} volume {claim}");
                    }
                    None
                } else {
                    // What its backend kept for `resume` (a cluster bottle's home claim) goes
                    // first, while the state still says where it is.
                    match discard_kept(&home, &bottle.identity, bottle.metadata.as_ref()) {
                        Err(e) => Some(format!("{e:#}")),
                        Ok(removed) => {
                            for name in removed {
                                count += 1;
                                println!("{verb} volume {name}");
                            }
                            match home.remove_bottle(&bottle.identity) {
                                Ok(()) => None,
                                Err(e @ state::StateError::UnappliedDecisions { .. }) => {
                                    Some(e.to_string())
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
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
    // What ended bottles left in the trash (its remover may have been killed): removed now.
    if args.dry_run {
        if !home.trash_is_empty() {
            count += 1;
            println!(
                "{verb} what ended bottles left: {}",
                home.trash_dir().display()
            );
        }
    } else {
        let removed = home.empty_trash(backend::TRASH_REMOVERS)?;
        if removed.moved > 0 {
            count += 1;
            println!(
                "{verb} what {} ended bottle director{} left in {}",
                removed.moved,
                if removed.moved == 1 { "y" } else { "ies" },
                home.trash_dir().display()
            );
        }
        if removed.records > 0 {
            count += 1;
            println!(
                "{verb} the containers and networks of {} ended bottle{} (recorded in {})",
                removed.records,
                if removed.records == 1 { "" } else { "s" },
                home.trash_dir().display()
            );
        }
    }
    if count == 0 {
        println!("nothing to clean up");
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes what the backend of `bottle` keeps outside its state for `resume` (the
/// kubernetes backend's home claim), before its state goes: the names removed. An error
/// keeps the state, so that a second try still knows where the rest is.
pub(crate) fn discard_kept(
    home: &Home,
    identity: &state::Identity,
    metadata: Option<&state::Metadata>,
) -> anyhow::Result<Vec<String>> {
    let Some(kind) = metadata.and_then(|m| BackendKind::parse(&m.backend).ok()) else {
        return Ok(Vec::new());
    };
    if kind != BackendKind::Kubernetes {
        return Ok(Vec::new());
    }
    let options = backend::OpenOptions::current_exe(home.root())?;
    let backend = backend::open(kind, &options)?;
    let actions = backend.discard(identity.as_str()).map_err(|e| {
        // Where the claim is, from the record `start` wrote.
        let record = backend::kubernetes::PodRecord::read(&home.state_dir(identity))
            .unwrap_or_default();
        anyhow::anyhow!(
            "cannot remove the home claim `{}` of cluster bottle {identity} in namespace `{}` (context `{}`): {e}; its state is kept so that a second try finds the claim once the cluster answers (or delete it with `kubectl delete pvc`)",
            record
                .home_claim
                .unwrap_or_else(|| backend::kubernetes::objects::home_claim_name(identity.as_str())),
            record.namespace.as_deref().unwrap_or("the context's"),
            record.context.as_deref().unwrap_or("current")
        )
    })?;
    Ok(actions
        .into_iter()
        .filter_map(|a| match a {
            CleanupAction::RemovedVolume { name } => Some(name),
            _ => None,
        })
        .collect())
}

/// The home claim a stale cluster bottle's record names (what [`discard_kept`] removes).
fn kept_claim(
    home: &Home,
    identity: &state::Identity,
    metadata: Option<&state::Metadata>,
) -> Option<String> {
    let kind = metadata.and_then(|m| BackendKind::parse(&m.backend).ok())?;
    if kind != BackendKind::Kubernetes {
        return None;
    }
    backend::kubernetes::PodRecord::read(&home.state_dir(identity))?.home_claim
}

/// The warning for a backend `cleanup` could not ask (no docker daemon): only when a bottle
/// of this home ran on it, naming those bottles; a machine that never used docker hears
/// nothing about it.
fn unavailable_warning(
    kind: BackendKind,
    reason: &str,
    bottles: &[state::BottleEntry],
) -> Option<String> {
    let used: Vec<String> = bottles
        .iter()
        .filter(|b| {
            b.metadata
                .as_ref()
                .is_some_and(|m| m.backend == kind.name())
        })
        .map(|b| b.identity.to_string())
        .collect();
    (!used.is_empty()).then(|| {
        format!(
            "bot-bottle: cannot clean up the {kind} resources of {} ({reason}); run `bot-bottle cleanup` again once {kind} is available",
            used.join(", ")
        )
    })
}
