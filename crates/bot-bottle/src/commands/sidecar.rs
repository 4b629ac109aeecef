//! `bot-bottle sidecar`: one bottle's sidecar bundle (the `bundle` crate), started by `start`,
//! which waits for its `ready` line (and, when it stops it, for `stopped`); `--check` is the
//! health check of a running bundle. In a warm pod (kubernetes warm pools) `--plan` and
//! `--plan-dir` hand the agent its plan once the bundle is ready (`bundle::plan`): the
//! agent's container waits for it and runs nothing without it.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bottle's sidecar config file (`sidecar.json`), written by `start`
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Health check of the bundle that runs with this config: ask each of its sidecars a
    /// real question, print one line each, exit 0 only when all answered
    #[arg(long)]
    pub check: bool,
    /// The agent's plan to publish once every sidecar listens (a warm pod's; with --plan-dir)
    #[arg(
        long,
        value_name = "FILE",
        requires = "plan_dir",
        conflicts_with = "check"
    )]
    pub plan: Option<PathBuf>,
    /// The directory the agent's waiter reads the plan from (with --plan)
    #[arg(long, value_name = "DIR", requires = "plan")]
    pub plan_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = bundle::SidecarConfig::load(&args.config)?;
    if args.check {
        let health = bundle::check(&config);
        for answer in &health {
            println!("{answer}");
        }
        return Ok(if health.iter().all(bundle::Health::is_answering) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let plan = match (args.plan, args.plan_dir) {
        (Some(file), Some(dir)) => Some(bundle::Plan { file, dir }),
        (None, None) => None,
        // clap requires each with the other.
        _ => anyhow::bail!("--plan and --plan-dir go together: give both, or neither"),
    };
    bundle::run_with_plan(config, plan)?;
    // The shutdown is done and the runtime gone: `start` need not wait for the kernel's end
    // of this process (`launcher`'s bundle module). Not said after a failure.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "stopped");
        let _ = out.flush();
    }
    Ok(ExitCode::SUCCESS)
}
