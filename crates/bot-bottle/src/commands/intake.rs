//! `bot-bottle intake`: a warm pod's sidecar waiting for its bottle (kubernetes warm pools,
//! issue 21). A pod of a warm pool is made before any bottle claims it, so its sidecar
//! container starts here instead of in the bundle: it takes the bottle's files once, from
//! the launcher through the API server's port-forward (`bundle::intake`), then its script
//! runs the bundle on them. Loopback only: the pod's other addresses are reachable from the
//! whole cluster network, while loopback is reached only from inside the pod's network
//! namespace (the packet filter refuses the port to the agent's uid); within it, only the
//! launcher that made the claim is admitted: its token's SHA-256 must be the pod's
//! `bot-bottle.org/intake-sha256` annotation, read from the downward API file given by
//! `--claim-annotations` at every connection (others are refused, and it keeps listening).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The loopback address to take the config on (one connection, then the port is closed)
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The empty directory the config's files are written into (read-only)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The pod's annotations as the kubelet writes them (a downwardAPI volume's
    /// metadata.annotations file): a sender is admitted only with the token whose SHA-256
    /// the claim put there
    #[arg(long, value_name = "FILE")]
    pub claim_annotations: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "intake listens on loopback only, and {} is not a loopback address: a pod's other addresses are reachable from the whole cluster network (use 127.0.0.1:<port>)",
            args.listen
        );
    }
    let listener = TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {} for the bottle's config (is another process on that port?)",
            args.listen
        )
    })?;
    let written = bundle::intake::receive(listener, &args.dir, &args.claim_annotations)
        .with_context(|| {
        format!(
            "no config was taken into {} on {}; the sidecar does not start without one (the launcher's send fails: start the bottle again)",
            args.dir.display(),
            args.listen
        )
    })?;
    println!(
        "took the bottle's config: {} files into {}",
        written.len(),
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
