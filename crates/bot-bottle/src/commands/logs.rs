//! `bot-bottle logs ID`: the egress request log of a bottle — running, preserved, or ended
//! (kept under `$BOT_BOTTLE_HOME/logs/bottles/<identity>/`, see `state::KEPT_BOTTLES`) —
//! one line per request; `--json` prints the log's own lines, `--sidecar` the sidecar
//! bundle's log instead, `--console` a qemu bottle's guest console.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use state::{Home, Identity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list` or printed when it ended
    pub identity: String,
    /// Print the log's JSON lines as they are
    #[arg(long)]
    pub json: bool,
    /// The sidecar bundle's own log instead of the request log
    #[arg(long)]
    pub sidecar: bool,
    /// The guest's console (kernel messages, boot failures) of a qemu bottle instead
    #[arg(long, conflicts_with = "sidecar")]
    pub console: bool,
}

/// One line of the request log, as the proxy writes it.
#[derive(Debug, serde::Deserialize)]
struct Entry {
    time: String,
    method: String,
    host: String,
    path: String,
    decision: String,
    reason: String,
    status: u16,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = Identity::parse(&args.identity)?;
    let home = Home::from_env()?;
    let dir = logs_dir(&home, &identity)?;
    let name = if args.sidecar {
        "sidecar.log"
    } else if args.console {
        backend::qemu::CONSOLE_LOG
    } else {
        "egress.jsonl"
    };
    if args.console && !dir.join(name).is_file() {
        anyhow::bail!(
            "bottle `{identity}` has no console log: only qemu bottles have one ({} is missing)",
            dir.join(name).display()
        );
    }
    // The rotated part first, so the lines come in order.
    let mut text = String::new();
    for file in [dir.join(format!("{name}.1")), dir.join(name)] {
        match std::fs::read_to_string(&file) {
            Ok(t) => text.push_str(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }
    if args.json || args.sidecar || args.console {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => println!(
                "{} {:<7} {} {} {}{} ({})",
                e.time, e.decision, e.status, e.method, e.host, e.path, e.reason
            ),
            Err(_) => println!("{line}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The bottle's logs: in its state while it exists, else where they were kept.
fn logs_dir(home: &Home, identity: &Identity) -> anyhow::Result<PathBuf> {
    let live = launcher::BottlePaths::new(home.state_dir(identity)).logs();
    if live.is_dir() {
        return Ok(live);
    }
    let kept = home.kept_logs_dir(identity);
    if kept.is_dir() {
        return Ok(kept);
    }
    anyhow::bail!(
        "no logs of bottle `{identity}`: it is not in `bot-bottle list`, and {} has no logs of it (the logs of the last {} ended bottles are kept there)",
        home.kept_logs_root().display(),
        state::KEPT_BOTTLES
    )
}
