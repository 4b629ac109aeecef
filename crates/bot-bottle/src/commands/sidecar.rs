//! `bot-bottle sidecar`: one bottle's sidecar bundle (the `bundle` crate), started by `start`,
//! which waits for its `ready` line (and, when it stops it, for `stopped`); `--check` is the
//! health check of a running bundle.

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
    bundle::run(config)?;
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
