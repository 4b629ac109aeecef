//! `bot-bottle list`: the bottles this machine knows about.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use state::{BottleState, Home};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array (identity, agent, backend, state, created)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    identity: String,
    agent: String,
    backend: String,
    state: BottleState,
    created: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    // What the trash's remover could not remove (what ended bottles left), on stderr so
    // that `--json` stays parseable.
    for failure in home.trash_failures() {
        eprintln!("bot-bottle: {failure}");
    }
    let rows: Vec<Row> = home
        .list()
        .context("cannot list bottles")?
        .into_iter()
        .map(|b| {
            let (agent, backend, created) = match b.metadata {
                Some(m) => (m.agent, m.backend, m.created),
                None => (b.identity.agent().to_string(), "?".into(), "?".into()),
            };
            Row {
                identity: b.identity.to_string(),
                agent,
                backend,
                state: b.state,
                created,
            }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no bottles (start one with `bot-bottle start <agent>`)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<16} {:<10} {:<10} CREATED",
        "IDENTITY", "AGENT", "BACKEND", "STATE"
    );
    for r in rows {
        let state = match r.state {
            BottleState::Running => "running",
            BottleState::Stopping => "stopping",
            BottleState::Preserved => "preserved",
            BottleState::Stale => "stale",
        };
        println!(
            "{:<24} {:<16} {:<10} {:<10} {}",
            r.identity, r.agent, r.backend, state, r.created
        );
    }
    Ok(ExitCode::SUCCESS)
}
