//! `bot-bottle proposals`: the operator's queue, for scripts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use proposals::queue::{self, Entry};
use proposals::{Decision, Grant, Home, Status, validate};
use serde_json::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List pending proposals of every bottle
    List {
        /// Print a JSON array
        #[arg(long)]
        json: bool,
        /// Only this bottle's proposals
        #[arg(long, value_name = "IDENTITY")]
        bottle: Option<String>,
    },
    /// Show one proposal with its diff
    Show {
        /// Proposal id
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Approve a proposal, optionally with an edited file (becomes `modified`)
    Approve {
        /// Proposal id
        id: String,
        /// Approve this file instead of the proposed one
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// A note for the agent and the audit log
        #[arg(long)]
        notes: Option<String>,
        /// Seconds to wait for the bottle to apply the change (0: do not wait)
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait: u64,
        /// Hold for one request (egress), one push (finding) or one use of the token, then end
        #[arg(long, conflicts_with_all = ["for_", "persist"])]
        once: bool,
        /// Hold for a while, then end even with nobody watching: 30s, 10m, 2h, 1d
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "persist")]
        for_: Option<String>,
        /// Hold for this bottle and write the added route(s) into the project's manifest
        /// (shows the diff and asks first; egress-allow only)
        #[arg(long)]
        persist: bool,
        /// With --persist: write the manifest without asking
        #[arg(long, requires = "persist")]
        yes: bool,
    },
    /// Reject a proposal
    Reject {
        /// Proposal id
        id: String,
        /// A note for the agent and the audit log
        #[arg(long)]
        notes: Option<String>,
        /// Seconds to wait for the bottle to record the rejection (0: do not wait)
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait: u64,
    },
}

fn home() -> anyhow::Result<Home> {
    Home::from_env().context("cannot find the bot-bottle home")
}

/// This home's cluster bottles whose `start` is gone and that no dashboard relays, relayed
/// while the command runs (dropped: stopped), one round made with each already: their pods'
/// proposals are in the laptop's queue, and an answer reaches them (`launcher::kube_relay`).
fn cluster_relays(home: &Home) -> launcher::kube_relay::Relays {
    use backend::kubernetes::{ClusterSettings, KubernetesBackend, KubernetesConfig};
    let config = KubernetesConfig::new(ClusterSettings::default(), String::new());
    match KubernetesBackend::new(config) {
        Ok(backend) => launcher::kube_relay::relay_now(
            home,
            &std::sync::Arc::new(backend.with_home(home.root().to_path_buf())),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cluster bottles' proposals are not relayed");
            launcher::kube_relay::Relays::default()
        }
    }
}

fn warn_problems(problems: &[queue::Problem]) {
    for p in problems {
        eprintln!("warning: {p}");
    }
}

fn status_text(e: &Entry) -> String {
    let mut s = e.status.as_str().to_owned();
    if e.status == Status::Answered {
        // Decided (and audited), but the bottle's supervise server has not applied it.
        s.push_str(", not applied yet");
    }
    if !e.bottle_present {
        s.push_str(" (bottle gone)");
    }
    s
}

/// What the proposal does, most dangerous first; a proposal whose effect cannot be
/// computed says why instead.
fn effect_lines(e: &Entry) -> Result<Vec<String>, String> {
    proposals::effect::proposal_effect(&e.proposal)
        .map(|f| f.lines())
        .map_err(|err| format!("cannot tell what it does: {err}"))
}

fn entry_json(e: &Entry) -> serde_json::Value {
    let p = &e.proposal;
    let (effect, effect_error) = match effect_lines(e) {
        Ok(lines) => (Some(lines), None),
        Err(why) => (None, Some(why)),
    };
    json!({
        "id": p.id,
        "bottle": p.bottle_slug,
        "tool": p.tool.as_str(),
        "status": e.status.as_str(),
        "arrival_timestamp": p.arrival_timestamp,
        "effect": effect,
        "effect_error": effect_error,
        "justification": p.justification,
        "bottle_present": e.bottle_present,
        "proposed_file": p.proposed_file,
        "current_file_hash": p.current_file_hash,
        "apply_error": e.failure.as_ref().map(|f| f.error.clone()),
        "outcome": e.outcome.as_ref().map(|o| json!({
            "status": o.status.as_str(),
            "operator": o.operator,
            "notes": o.notes,
            "decided_at": o.decided_at,
            "applied_at": o.applied_at,
        })),
    })
}

fn list(json_out: bool, bottle: Option<&str>) -> anyhow::Result<ExitCode> {
    let home = home()?;
    let _relays = cluster_relays(&home);
    let (entries, problems) =
        queue::pending_all(&home, bottle).context("cannot read the proposal queues")?;
    warn_problems(&problems);
    if json_out {
        let arr: Vec<_> = entries.iter().map(entry_json).collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no pending proposals");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<16}  {:<18}  {:<22}  {:<19}  EFFECT",
        "ID", "BOTTLE", "TOOL", "STATUS", "ARRIVED"
    );
    for e in &entries {
        let p = &e.proposal;
        let arrived = p
            .arrival_timestamp
            .get(..19)
            .unwrap_or(&p.arrival_timestamp);
        // The effect, not the agent's words: what approving would do, worst change first.
        let effect = match proposals::effect::proposal_effect(p) {
            Ok(f) => f.headline(),
            Err(err) => format!("cannot tell what it does: {err}"),
        };
        println!(
            "{:<16}  {:<16}  {:<18}  {:<22}  {:<19}  {}",
            p.id,
            p.bottle_slug,
            p.tool.as_str(),
            status_text(e),
            arrived,
            effect
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn find(home: &Home, id: &str) -> anyhow::Result<(proposals::Queue, Entry)> {
    queue::find(home, id)
        .context("cannot read the proposal queues")?
        .with_context(|| {
            format!("no proposal {id}; `bot-bottle proposals list` shows the pending ones")
        })
}

fn show(id: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let home = home()?;
    let _relays = cluster_relays(&home);
    let (_, e) = find(&home, id)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&entry_json(&e))?);
        return Ok(ExitCode::SUCCESS);
    }
    let p = &e.proposal;
    println!("proposal  {}", p.id);
    println!("bottle    {}", p.bottle_slug);
    println!("tool      {}", p.tool);
    println!("status    {}", status_text(&e));
    println!("arrived   {}", p.arrival_timestamp);
    if let Some(f) = &e.failure {
        println!("apply     failed: {}", f.error);
    }
    if let Some(o) = &e.outcome {
        println!(
            "decided   {} by {} at {}",
            o.status, o.operator, o.decided_at
        );
        if let Some(n) = &o.notes {
            println!("notes     {n}");
        }
    }
    if e.outcome.is_none() && dashboard::snapshot(&home)?.stale.contains(&p.id) {
        println!(
            "warning   the live routes changed since this arrived: approving replaces them with the proposed file"
        );
    }
    println!("\neffect (what approving does, most dangerous first):");
    match effect_lines(&e) {
        Ok(lines) => {
            for l in lines {
                println!("  {l}");
            }
        }
        Err(why) => println!("  {why}"),
    }
    println!("\njustification:");
    for l in p.justification.lines() {
        println!("  {l}");
    }
    let current = match p.tool {
        proposals::Tool::EgressAllow | proposals::Tool::EgressBlock => {
            p.current_file.as_deref().unwrap_or("")
        }
        _ => "",
    };
    println!("\ndiff (live -> proposed):");
    print!("{}", dashboard::diff::plain(current, &p.proposed_file));
    Ok(ExitCode::SUCCESS)
}

/// Waits (bounded) for the bottle's supervise server to handle the response, and says
/// what happened.
fn wait_outcome(
    queue: &proposals::Queue,
    id: &str,
    decision: Decision,
    wait: u64,
    relays: &launcher::kube_relay::Relays,
) -> anyhow::Result<ExitCode> {
    let bottle = queue.identity();
    // A cluster bottle whose `start` is gone runs in its pod: this command's relay carries
    // the answer there and the outcome back.
    let relayed = relays.relayed().iter().any(|b| b == bottle);
    // Said at once and plainly when the bottle cannot apply it now: the decision is audited
    // and kept in its queue (`cleanup` keeps the bottle) until its supervise server runs.
    let state_home = state::Home::from_env()?;
    let identity = state::Identity::parse(bottle)?;
    let present = state_home.state_dir(&identity).is_dir();
    if !present || !(state_home.is_running(&identity) || relayed) {
        if decision == Decision::Rejected {
            println!(
                "recorded in the audit log; bottle {bottle} is not running: its agent is told when the bottle runs again"
            );
            return Ok(ExitCode::SUCCESS);
        }
        if present {
            eprintln!(
                "NOT applied: bottle {bottle} is not running, so nothing changed yet; the decision is in the audit log and waits in the bottle's queue: `bot-bottle resume {bottle}` applies it (`cleanup` keeps the bottle until then)"
            );
        } else {
            eprintln!(
                "NOT applied: bottle {bottle} is gone; the decision is in the audit log but will never take effect"
            );
        }
        return Ok(ExitCode::from(NOT_APPLIED));
    }
    if wait == 0 && relayed {
        // Not waiting for the outcome, but the answer must leave with this command.
        if !relays
            .settle(launcher::kube_relay::COMMAND_ROUND)
            .is_empty()
        {
            eprintln!(
                "NOT sent yet: cluster bottle {bottle}'s pod did not answer within {} s; the decision is in the audit log and waits in this machine's queue: `bot-bottle supervise` (or the next `bot-bottle proposals` command) sends it",
                launcher::kube_relay::COMMAND_ROUND.as_secs()
            );
            return Ok(ExitCode::from(NOT_APPLIED));
        }
        println!("recorded and sent to bottle {bottle}'s pod; its supervise server applies it");
        return Ok(ExitCode::SUCCESS);
    }
    if wait == 0 {
        println!("recorded; the bottle's supervise server applies it");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    while Instant::now() < deadline {
        match queue.status(id).context("cannot read the proposal queue")? {
            Some(Status::Approved | Status::Modified) => {
                println!("in effect: the bottle applied proposal {id}");
                return Ok(ExitCode::SUCCESS);
            }
            Some(Status::Rejected) => {
                println!("recorded: the agent is told proposal {id} was rejected");
                return Ok(ExitCode::SUCCESS);
            }
            Some(Status::ApplyFailed) => {
                let why = queue
                    .failure(id)
                    .ok()
                    .flatten()
                    .map(|f| f.error)
                    .unwrap_or_else(|| "unknown error".to_owned());
                anyhow::bail!(
                    "the bottle could not apply proposal {id}: {why}; it is pending again, approve it once the cause is fixed or reject it"
                );
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    if decision == Decision::Rejected {
        println!(
            "recorded in the audit log; bottle {bottle}'s supervise server has not picked it up yet; its agent is told when it does"
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "NOT applied yet: bottle {bottle} runs but its supervise server has not picked the decision up in {wait} s (`bot-bottle sidecar --check` on its sidecar.json says whether it answers); the decision is in the audit log and takes effect when the server reads the queue"
    );
    Ok(ExitCode::from(NOT_APPLIED))
}

/// Exit code of `approve` when the decision is recorded and audited but not in effect.
const NOT_APPLIED: u8 = 1;

/// How long the approval holds, from the flags.
#[derive(Debug, Clone, Default)]
pub struct GrantArgs {
    pub once: bool,
    pub for_: Option<String>,
    pub persist: bool,
    pub yes: bool,
}

impl GrantArgs {
    fn grant(&self) -> anyhow::Result<Grant> {
        Ok(match (&self.for_, self.once, self.persist) {
            (Some(d), _, _) => Grant::For {
                seconds: proposals::grant::parse_duration(d).context("--for")?,
            },
            (None, true, _) => Grant::Once,
            (None, false, true) => Grant::Persist,
            (None, false, false) => Grant::Bottle,
        })
    }
}

/// Shows the manifest diff and asks (unless `--yes`); `Ok(false)` when the operator says no.
fn confirm_persist(plan: &proposals::persist::Plan, yes: bool) -> anyhow::Result<bool> {
    println!(
        "--persist adds to bottle {} in {}:",
        plan.bottle,
        plan.file.display()
    );
    print!("{}", plan.diff());
    if yes {
        return Ok(true);
    }
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--persist changes {}: confirm with --yes (stdin is not a terminal to ask on); nothing was approved",
            plan.file.display()
        );
    }
    print!("write this into the manifest and approve? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn approve(
    id: &str,
    file: Option<PathBuf>,
    notes: Option<String>,
    wait: u64,
    grant_args: &GrantArgs,
) -> anyhow::Result<ExitCode> {
    let grant = grant_args.grant()?;
    let home = home()?;
    let relays = cluster_relays(&home);
    let (_, entry) = find(&home, id)?;
    proposals::grant::check(entry.proposal.tool, grant)
        .with_context(|| format!("proposal {id} was not approved"))?;
    let (decision, final_file) = match file {
        None => (Decision::Approved, None),
        Some(path) => {
            let text = state::read::read_limited_to_string(&path, state::read::CONFIG_LIMIT)
                .with_context(|| format!("cannot read {}", path.display()))?;
            validate::parse_payload(entry.proposal.tool, &text).with_context(|| {
                format!(
                    "{} is not a valid {} file; nothing was sent",
                    path.display(),
                    entry.proposal.tool
                )
            })?;
            if text == entry.proposal.proposed_file {
                (Decision::Approved, None)
            } else {
                (Decision::Modified, Some(text))
            }
        }
    };
    // The manifest diff is shown and confirmed before anything is decided.
    let plan = if grant == Grant::Persist {
        let plan =
            proposals::persist::plan(&home, &entry.proposal, decision, final_file.as_deref())
                .with_context(|| {
                    format!("cannot write proposal {id} into the manifest; nothing was approved")
                })?;
        if !confirm_persist(&plan, grant_args.yes)? {
            println!("not approved: proposal {id} is still pending");
            return Ok(ExitCode::from(NOT_APPLIED));
        }
        Some(plan)
    } else {
        None
    };
    let operator = queue::operator_name();
    let queue = queue::answer_granted(&home, id, decision, final_file, notes, &operator, grant)
        .with_context(|| format!("cannot answer proposal {id}"))?;
    // How long it holds, when not the default (for the bottle).
    let holds = match grant {
        Grant::Bottle => String::new(),
        g => format!(" ({})", g.holds(entry.proposal.tool, None)),
    };
    println!(
        "{decision} proposal {id} of bottle {}{holds}",
        queue.identity()
    );
    if let Some(plan) = plan {
        proposals::persist::write(&plan).with_context(|| {
            format!("proposal {id} is approved for this bottle, but the manifest was not changed")
        })?;
        println!("wrote the route(s) into {}", plan.file.display());
    }
    wait_outcome(&queue, id, decision, wait, &relays)
}

fn reject(id: &str, notes: Option<String>, wait: u64) -> anyhow::Result<ExitCode> {
    let home = home()?;
    let relays = cluster_relays(&home);
    let operator = queue::operator_name();
    let queue = queue::answer(&home, id, Decision::Rejected, None, notes, &operator)
        .with_context(|| format!("cannot answer proposal {id}"))?;
    println!("rejected proposal {id} of bottle {}", queue.identity());
    wait_outcome(&queue, id, Decision::Rejected, wait, &relays)
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List { json, bottle } => list(json, bottle.as_deref()),
        Command::Show { id, json } => show(&id, json),
        Command::Approve {
            id,
            file,
            notes,
            wait,
            once,
            for_,
            persist,
            yes,
        } => approve(
            &id,
            file,
            notes,
            wait,
            &GrantArgs {
                once,
                for_,
                persist,
                yes,
            },
        ),
        Command::Reject { id, notes, wait } => reject(&id, notes, wait),
    }
}
