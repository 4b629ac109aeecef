//! `bot-bottle supervise`: the operator dashboard.

use std::process::ExitCode;

use anyhow::Context;
use proposals::Home;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show only this bottle's proposals
    #[arg(long, value_name = "IDENTITY")]
    pub bottle: Option<String>,
}

/// Sends this process's stderr (where logs go) to `logs/dashboard.log` while the
/// dashboard owns the terminal, and puts it back afterwards.
struct StderrToFile {
    saved: rustix::fd::OwnedFd,
}

impl StderrToFile {
    fn redirect(home: &Home) -> anyhow::Result<Self> {
        let dir = home.logs_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("dashboard.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        let saved = rustix::io::dup(rustix::stdio::stderr()).context("cannot save stderr")?;
        rustix::stdio::dup2_stderr(&file).context("cannot send logs to the log file")?;
        Ok(Self { saved })
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        let _ = rustix::stdio::dup2_stderr(&self.saved);
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let home = Home::from_env().context("cannot find the bot-bottle home")?;
    if let Some(b) = &args.bottle {
        proposals::paths::check_identity(b)?;
    }
    let redirect = StderrToFile::redirect(&home)?;
    // Cluster bottles whose `start` is gone: their proposals still reach this dashboard.
    let relays = cluster_relays(&home);
    let result = dashboard::run(home, args.bottle);
    drop(relays);
    drop(redirect);
    result.context("the dashboard stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// The relays of this home's cluster bottles whose `start` is gone
/// (`launcher::kube_relay::Recorded`); none if the backend cannot start (said in the log).
fn cluster_relays(home: &Home) -> Option<launcher::kube_relay::Recorded> {
    use backend::kubernetes::{ClusterSettings, KubernetesBackend, KubernetesConfig};
    let config = KubernetesConfig::new(ClusterSettings::default(), String::new());
    match KubernetesBackend::new(config) {
        Ok(backend) => Some(launcher::kube_relay::Recorded::start(
            home.clone(),
            std::sync::Arc::new(backend.with_home(home.root().to_path_buf())),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cluster bottles' proposals are not relayed to this dashboard");
            None
        }
    }
}
