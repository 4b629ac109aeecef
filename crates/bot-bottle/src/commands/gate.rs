//! `bot-bottle gate serve`: the git gate on its own; `gate hook` is the mirrors'
//! pre-receive hook (hidden: the gate installs it, nobody types it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the git gate until interrupted; prints `listening on ADDR` once ready
    Serve(ServeArgs),
    /// The pre-receive hook the git gate installs in its mirrors (internal)
    #[command(hide = true)]
    Hook(HookArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A manifest `git-gate:` block as YAML (user, repos)
    #[arg(long, value_name = "FILE")]
    pub repos: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:9418
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Directory for mirrors, keys and the allowed findings
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// Which hook git is running
    #[arg(value_parser = ["pre-receive"])]
    pub kind: String,
    /// The git gate's state directory
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The repository being pushed to
    #[arg(long, value_name = "NAME")]
    pub repo: String,
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Serve(args) => serve(args),
        Command::Hook(args) => Ok(hook(args)),
    }
}

fn hook(args: HookArgs) -> ExitCode {
    let argv = vec![
        args.kind,
        "--state-dir".to_string(),
        args.state_dir.to_string_lossy().into_owned(),
        "--repo".to_string(),
        args.repo,
    ];
    let scanner = gitgate::push_scanner();
    match gitgate::hook::run_cli(&argv, scanner.as_ref()) {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = gitgate::GateConfig::load(&args.repos)?;
    let bottle = args
        .state_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gate".into());
    let options = gitgate::GateOptions::new(&bottle)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let gate = gitgate::Gate::new(config, &args.state_dir, options)
            .await
            .context("cannot set up the git gate")?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}; is the address free?", args.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let mut out = std::io::stdout();
        writeln!(out, "listening on {addr}").context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
        gate.serve(listener, shutdown_signal())
            .await
            .context("the git gate stopped serving")?;
        // Deploy keys created through a forge API live only as long as the gate.
        gate.teardown().await.context(
            "cannot revoke the deploy keys this git gate created; remove them in the forge",
        )?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
