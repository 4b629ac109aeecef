//! `bot-bottle sidecar`: one bottle's sidecar bundle — egress, git gate and supervise as
//! tasks of one runtime, listening on Unix sockets in the bottle's state directory (the
//! native backend forwards them into the bottle) or, inside a docker sidecar container, on
//! TCP ports of the bottle's internal network. Started by `start`, which waits for the `ready`
//! line on stdout; SIGTERM stops it cleanly (in-flight requests finish or fail, forge deploy
//! keys are revoked). It holds the tokens and the CA key; neither is ever written where the
//! agent can read it. `--check` is the health check: it asks a running bundle's sidecars.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use launcher::{Listen, SidecarConfig};

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
    let text = state::read::read_limited(&args.config, state::read::CONFIG_LIMIT)
        .with_context(|| format!("cannot read the sidecar config {}", args.config.display()))?;
    let config: SidecarConfig = serde_json::from_slice(&text)
        .with_context(|| format!("the sidecar config {} is invalid", args.config.display()))?;
    if args.check {
        return Ok(check(&config));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

/// A bound listener of either kind.
enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

fn bind(listen: &Listen) -> anyhow::Result<Bound> {
    match listen {
        Listen::Unix(path) => bind_unix(path).map(Bound::Unix),
        Listen::Tcp(addr) => {
            let std = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            std.set_nonblocking(true)
                .with_context(|| format!("cannot listen on {addr}"))?;
            Ok(Bound::Tcp(
                TcpListener::from_std(std).with_context(|| format!("cannot listen on {addr}"))?,
            ))
        }
    }
}

fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()));
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

async fn serve(config: SidecarConfig) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();

    // Egress.
    let routes = egress::standalone::read_routes(&config.egress.routes)
        .with_context(|| format!("cannot load routes {}", config.egress.routes.display()))?;
    let mut proxy_config = egress::ProxyConfig::new(&config.egress.ca_dir);
    proxy_config.upstream_ca = config.egress.upstream_ca.clone();
    proxy_config.log = egress::LogSink::File(config.egress.log.clone());
    let proxy = egress::Proxy::new(proxy_config, routes).context("cannot start egress")?;
    let routes_handle = proxy.routes();
    let egress_listener = bind(&config.egress.listen)?;

    // Git gate.
    let gate = match &config.gate {
        Some(g) => {
            let gate_config = gitgate::GateConfig::load(&g.repos)
                .with_context(|| format!("cannot load {}", g.repos.display()))?;
            let options = gitgate::GateOptions::new(&config.identity)?;
            let gate = gitgate::Gate::new(gate_config, &g.state_dir, options)
                .await
                .context("cannot start the git gate")?;
            Some((Arc::new(gate), bind(&g.listen)?))
        }
        None => None,
    };

    // Supervise: approvals reload egress in place and extend the gate's allowlist.
    let supervise = match &config.supervise {
        Some(s) => {
            let reload_handle = routes_handle.clone();
            let reload: supervise::ReloadHook = Arc::new(move |_bottle, routes| {
                reload_handle
                    .replace(routes.clone())
                    .map_err(|e| e.to_string())
            });
            let uses_handle = routes_handle.clone();
            let uses: supervise::UsesHook = Arc::new(move |_bottle| uses_handle.used());
            let files = supervise::FileApplier::new(supervise::Home::new(&config.home))
                .with_reload(reload)
                .with_uses(uses)
                .with_known_tokens(config.tokens.clone());
            let applier: Arc<dyn supervise::Applier> = Arc::new(SidecarApplier {
                files,
                gate_allowlist: gate.as_ref().map(|(g, _)| g.allowlist_path()),
            });
            let supervise_config = supervise::SuperviseConfig {
                home: supervise::Home::new(&config.home),
                identity: config.identity.clone(),
                applier,
                allowed_hosts: Vec::new(),
                max_wait: supervise::MAX_WAIT,
                max_body_bytes: 1024 * 1024,
            };
            Some((supervise_config, bind(&s.listen)?))
        }
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    {
        let stop = cancel.clone();
        tasks.spawn(async move {
            match egress_listener {
                Bound::Unix(l) => proxy.serve_unix(l, stop.cancelled_owned()).await,
                Bound::Tcp(l) => proxy.serve(l, stop.cancelled_owned()).await,
            }
            .context("egress stopped")
        });
    }
    let gate = gate.map(|(gate, listener)| {
        let stop = cancel.clone();
        let serving = gate.clone();
        tasks.spawn(async move {
            match listener {
                Bound::Unix(l) => serving.serve_unix(l, stop.cancelled_owned()).await,
                Bound::Tcp(l) => serving.serve(l, stop.cancelled_owned()).await,
            }
            .context("the git gate stopped")
        });
        gate
    });
    if let Some((supervise_config, listener)) = supervise {
        let stop = cancel.clone();
        tasks.spawn(async move {
            match listener {
                Bound::Unix(l) => {
                    supervise::serve(l, supervise_config, stop.cancelled_owned()).await
                }
                Bound::Tcp(l) => {
                    supervise::serve(l, supervise_config, stop.cancelled_owned()).await
                }
            }
            .context("supervise stopped")
        });
    }

    // Every listener is bound and the gate's mirrors are prepared: tell `start`.
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    tracing::info!(identity = %config.identity, "sidecar bundle ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let mut failure = None;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        Some(done) = tasks.join_next() => {
            // A sidecar that stops on its own leaves the bottle without a way out: stop all.
            failure = Some(match done {
                Ok(Ok(())) => anyhow::anyhow!("a sidecar stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a sidecar task failed: {e}"),
            });
        }
    }
    cancel.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("sidecars did not finish within 10 s of shutdown");
    }
    if let Some(gate) = gate
        && let Err(e) = gate.teardown().await
    {
        tracing::error!(error = %e, "cannot revoke forge deploy keys");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How long one health question may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks every sidecar of a running bundle a question only it answers that way: egress its
/// allowlist page, the gate its answer to a path it does not serve, supervise an MCP `ping`.
fn check(config: &SidecarConfig) -> ExitCode {
    let mut probes = vec![(
        "egress",
        &config.egress.listen,
        "GET http://_egress.local/allowlist HTTP/1.1\r\nHost: _egress.local\r\nConnection: close\r\n\r\n".to_owned(),
        "HTTP/1.1 200",
    )];
    if let Some(g) = &config.gate {
        probes.push((
            "git gate",
            &g.listen,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_owned(),
            "the git gate",
        ));
    }
    if let Some(s) = &config.supervise {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        probes.push((
            "supervise",
            &s.listen,
            format!(
                "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            "\"result\"",
        ));
    }
    let mut healthy = true;
    for (name, listen, request, expect) in probes {
        match ask(listen, &request) {
            Ok(answer) if answer.contains(expect) => println!("{name}: answering"),
            Ok(answer) => {
                healthy = false;
                let first = answer.lines().next().unwrap_or("nothing").to_owned();
                println!("{name}: unexpected answer ({first})");
            }
            Err(e) => {
                healthy = false;
                println!("{name}: not answering ({e})");
            }
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One request on a fresh connection; the whole answer (until the sidecar closes it).
fn ask(listen: &Listen, request: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    fn exchange(mut stream: impl Read + Write, request: &str) -> std::io::Result<String> {
        stream.write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
    match listen {
        Listen::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            stream.set_read_timeout(Some(CHECK_TIMEOUT))?;
            stream.set_write_timeout(Some(CHECK_TIMEOUT))?;
            exchange(stream, request)
        }
        Listen::Tcp(addr) => {
            // A bundle listening on every address answers on loopback too.
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let stream = std::net::TcpStream::connect_timeout(&target, CHECK_TIMEOUT)?;
            stream.set_read_timeout(Some(CHECK_TIMEOUT))?;
            stream.set_write_timeout(Some(CHECK_TIMEOUT))?;
            exchange(stream, request)
        }
    }
}

/// Applies approvals: routes and tokens through supervise's file applier (which reloads
/// egress first), findings into the git gate's own allowlist.
struct SidecarApplier {
    files: supervise::FileApplier,
    gate_allowlist: Option<PathBuf>,
}

#[async_trait::async_trait]
impl supervise::Applier for SidecarApplier {
    async fn current_routes(&self, bottle: &str) -> Result<String, supervise::ApplyError> {
        self.files.current_routes(bottle).await
    }

    async fn apply_routes(
        &self,
        bottle: &str,
        routes: &policy::EgressConfig,
        text: &str,
    ) -> Result<(), supervise::ApplyError> {
        self.files.apply_routes(bottle, routes, text).await
    }

    async fn attach_token(
        &self,
        bottle: &str,
        host: &str,
        token_name: &str,
        stamp: &proposals::grant::Stamp,
    ) -> Result<(), supervise::ApplyError> {
        self.files
            .attach_token(bottle, host, token_name, stamp)
            .await
    }

    async fn allow_finding(
        &self,
        _bottle: &str,
        fingerprint: &str,
        stamp: &proposals::grant::Stamp,
    ) -> Result<(), supervise::ApplyError> {
        let Some(path) = &self.gate_allowlist else {
            return Err(supervise::ApplyError::Other(
                "this bottle has no git gate, so there is no push scan to allow a finding in"
                    .into(),
            ));
        };
        let entry = gitgate::AllowedFinding {
            finding: fingerprint.to_owned(),
            expires: stamp.expires.clone(),
            uses: stamp.uses,
            grant: stamp.grant.clone().filter(|_| !stamp.is_empty()),
        };
        gitgate::add_allowed(path, &entry).map_err(|e| supervise::ApplyError::Io {
            action: e.action,
            path: path.clone(),
            reason: e.source.to_string(),
        })
    }

    async fn uses_spent(&self, bottle: &str) -> Vec<(String, Option<String>, u32)> {
        self.files.uses_spent(bottle).await
    }

    async fn sweep(&self, bottle: &str) -> Result<supervise::Swept, supervise::ApplyError> {
        let mut swept = self.files.sweep(bottle).await?;
        let Some(path) = &self.gate_allowlist else {
            return Ok(swept);
        };
        let now = time::OffsetDateTime::now_utc();
        let gone = gitgate::remove_ended(path, now).map_err(|e| supervise::ApplyError::Io {
            action: e.action,
            path: path.clone(),
            reason: e.source.to_string(),
        })?;
        for a in gone {
            swept.ended.push(supervise::Ended {
                tool: supervise::Tool::GitleaksAllow,
                grant: a.grant,
                what: format!("finding {}", a.finding),
                why: if a.uses == Some(0) {
                    "used-up"
                } else {
                    "expired"
                },
            });
        }
        // The next allowed finding to end.
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for a in gitgate::parse_entries(&text) {
            if let Some(at) = a.expires.as_deref().and_then(proposals::grant::parse_time) {
                let d: std::time::Duration = (at - now).try_into().unwrap_or_default();
                swept.next = Some(swept.next.map_or(d, |n| n.min(d)));
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use supervise::Applier;

    #[tokio::test]
    async fn findings_approved_once_or_for_a_while_reach_the_gate_and_are_swept_when_ended() {
        let dir = tempfile::tempdir().unwrap();
        let gate_file = gitgate::allowlist_path(&dir.path().join("gate"));
        let applier = SidecarApplier {
            files: supervise::FileApplier::new(supervise::Home::new(dir.path().join("home"))),
            gate_allowlist: Some(gate_file.clone()),
        };
        let now = time::OffsetDateTime::now_utc();
        let once = proposals::grant::Stamp::new(proposals::Grant::Once, "00000000000000a1", now);
        let past = proposals::grant::Stamp {
            expires: Some("2020-01-01T00:00:00Z".into()),
            uses: None,
            grant: Some("00000000000000b2".into()),
        };
        applier
            .allow_finding("b-1", "c1:a.rs:r:1", &once)
            .await
            .unwrap();
        applier
            .allow_finding("b-1", "c2:b.rs:r:2", &past)
            .await
            .unwrap();
        applier
            .allow_finding("b-1", "c3:c.rs:r:3", &proposals::grant::Stamp::default())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&gate_file).unwrap(),
            "c1:a.rs:r:1\tuses=1\tgrant=00000000000000a1\nc2:b.rs:r:2\texpires=2020-01-01T00:00:00Z\tgrant=00000000000000b2\nc3:c.rs:r:3\n"
        );
        // what the gate allows now: the once one and the permanent one
        assert_eq!(
            gitgate::read_allowlist(&gate_file).unwrap(),
            ["c1:a.rs:r:1", "c3:c.rs:r:3"].map(String::from).into()
        );
        // the gate spends the once-approval after a push; the sweep takes both ended out
        gitgate::spend_uses(&gate_file, &["c1:a.rs:r:1".to_owned()].into()).unwrap();
        let swept = applier.sweep("b-1").await.unwrap();
        let ended: Vec<(Option<String>, String, &str)> = swept
            .ended
            .into_iter()
            .map(|e| (e.grant, e.what, e.why))
            .collect();
        assert_eq!(
            ended,
            vec![
                (
                    Some("00000000000000a1".to_owned()),
                    "finding c1:a.rs:r:1".to_owned(),
                    "used-up"
                ),
                (
                    Some("00000000000000b2".to_owned()),
                    "finding c2:b.rs:r:2".to_owned(),
                    "expired"
                ),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&gate_file).unwrap(),
            "c3:c.rs:r:3\n"
        );
    }
}
