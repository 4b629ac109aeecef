//! `bot-bottle discard ID`: throw away a bottle that is not running — above all a preserved
//! one, which `cleanup` always keeps — with its state, its home and its unapplied decisions.
//! Asked first (`y` on a terminal, or `--yes`): what is removed cannot be resumed.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use state::{Home, Identity, StateError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's identity, as shown by `bot-bottle list`
    pub identity: String,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = Identity::parse(&args.identity)?;
    let home = Home::from_env()?;
    // Fails for a bottle this home does not have.
    let _ = home.read_metadata(&identity)?;
    if home.is_running(&identity) {
        anyhow::bail!(
            "bottle `{identity}` is running; stop it first (`bot-bottle stop {identity}`), which also removes it unless you pass --keep"
        );
    }
    if !args.yes {
        let unapplied = home.unapplied_decisions(&identity)?;
        let mut question = format!(
            "discard bottle {identity} and everything in its state (its home, its workspace copy, its logs)"
        );
        if !unapplied.is_empty() {
            question.push_str(&format!(
                ", with {} operator decision(s) not applied yet",
                unapplied.len()
            ));
        }
        question.push_str("? It cannot be resumed afterwards. [y/N] ");
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "discarding bottle `{identity}` needs a confirmation and stdin is not a terminal; pass --yes"
            );
        }
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("kept {identity}");
            return Ok(ExitCode::from(1));
        }
    }
    // Held while the logs move, so that the bottle cannot start running meanwhile.
    let lock = match home.lock_bottle(&identity) {
        Err(StateError::Running(_)) => anyhow::bail!(
            "bottle `{identity}` started running meanwhile; stop it first (`bot-bottle stop {identity}`)"
        ),
        other => other?,
    };
    // A cluster bottle's home claim first, while its state says where it is: if the
    // cluster cannot be asked, nothing is discarded and the same command works later.
    let metadata = home.read_metadata(&identity).ok();
    let removed = super::cleanup::discard_kept(&home, &identity, metadata.as_ref())
        .with_context(|| format!("bottle {identity} is not discarded"))?;
    for name in removed {
        println!("removed volume {name}");
    }
    let logs = launcher::BottlePaths::new(home.state_dir(&identity)).logs();
    home.keep_logs(&identity, &logs)?;
    drop(lock);
    // Kept logs beyond the newest ones went into the trash: removed in the background.
    if !home.trash_is_empty() {
        let spawned = std::env::current_exe().and_then(|exe| home.spawn_emptying_trash(&exe));
        if spawned.is_err() {
            home.empty_trash(backend::TRASH_REMOVERS)?;
        }
    }
    match home.discard_bottle(&identity) {
        Ok(()) => {
            println!("discarded {identity} (its logs are kept: `bot-bottle logs {identity}`)");
            Ok(ExitCode::SUCCESS)
        }
        Err(StateError::Running(_)) => anyhow::bail!(
            "bottle `{identity}` started running meanwhile; stop it first (`bot-bottle stop {identity}`)"
        ),
        Err(e) => Err(e.into()),
    }
}
