//! `bot-bottle audit`: the operator decisions, and proof that nobody edited them.

use std::process::ExitCode;

use anyhow::Context;
use proposals::{Home, audit};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Only this bottle
    #[arg(long, value_name = "IDENTITY")]
    pub bottle: Option<String>,
    /// Only this component (egress, gitleaks)
    #[arg(long)]
    pub component: Option<String>,
    /// Print JSON lines
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain of every audit log; fails if a line was edited or deleted
    Verify,
}

fn show(args: &Args, home: &Home) -> anyhow::Result<ExitCode> {
    if let Some(c) = &args.component
        && !audit::COMPONENTS.contains(&c.as_str())
    {
        anyhow::bail!("unknown component {c:?}; use egress or gitleaks");
    }
    let entries = audit::read_all(home, args.bottle.as_deref(), args.component.as_deref())
        .context("cannot read the audit log")?;
    if args.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no decisions recorded");
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let time = e.time.get(..19).unwrap_or(&e.time);
        let decision = match &e.stage {
            Some(stage) => format!("{} ({stage})", e.decision),
            None => e.decision.clone(),
        };
        println!(
            "{time}  {:<8}  {:<16}  {:<18}  {:<24}  by {:<10}  {}",
            e.component, e.bottle, e.tool, decision, e.operator, e.proposal_id
        );
        for change in &e.effect {
            println!("    does: {change}");
        }
        println!("    why: {}", e.justification.lines().next().unwrap_or(""));
        if let Some(n) = &e.notes {
            println!("    notes: {n}");
        }
        if let Some(err) = &e.error {
            println!("    error: {err}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(home: &Home) -> anyhow::Result<ExitCode> {
    let (breaks, files) = audit::verify(home).context("cannot read the audit log")?;
    if breaks.is_empty() {
        println!("ok: {files} audit log(s), every hash chain intact");
        return Ok(ExitCode::SUCCESS);
    }
    for b in &breaks {
        eprintln!("tampered: {b}");
    }
    eprintln!(
        "error: {} of {files} audit log(s) were edited or truncated; keep a copy as evidence",
        breaks.len()
    );
    Ok(ExitCode::from(1))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let home = Home::from_env().context("cannot find the bot-bottle home")?;
    match args.command {
        Some(Command::Verify) => verify(&home),
        None => show(&args, &home),
    }
}
