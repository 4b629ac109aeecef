//! `bot-bottle egress serve`: the egress proxy on its own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the proxy until interrupted; prints `listening on ADDR` once ready
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// routes.yaml: the routes egress lets out (re-read when it changes)
    #[arg(long, value_name = "FILE")]
    pub routes: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:8080
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Directory holding ca.pem and ca-key.pem (created if absent)
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Extra PEM file of roots trusted for upstream TLS (repeatable)
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// Pin HOST:PORT to CONNECT_HOST:CONNECT_PORT (curl's meaning; repeatable)
    #[arg(long, value_name = "HOST:PORT:CONNECT_HOST:CONNECT_PORT")]
    pub connect_to: Vec<String>,
    /// Append the request log (JSON lines) to FILE instead of stderr
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Forward requests without outbound DLP (secrets in requests are not looked for);
    /// only for measuring what DLP costs
    #[arg(long)]
    pub dangerously_skip_dlp: bool,
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Serve(args) => {
            let listen = args.listen.clone();
            egress::standalone::run(egress::standalone::ServeOptions {
                routes: args.routes,
                listen: args.listen,
                ca_dir: args.ca_dir,
                upstream_ca: args.upstream_ca,
                connect_to: args.connect_to,
                log_file: args.log_file,
                dangerously_skip_dlp: args.dangerously_skip_dlp,
            })
            .with_context(|| format!("cannot run the egress proxy on {listen}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
