//! Serving the bundle: binding the listeners, building each sidecar from the config,
//! joining them (an approval reaches egress and the git gate through `SidecarApplier`), the
//! `ready` line `start` waits for, and the shutdown on SIGTERM or on a sidecar's end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::{BundleError, Listen, Plan, SidecarConfig};

/// How long the sidecars get to finish once the bundle is told to stop.
pub const SIDECARS_STOP: Duration = Duration::from_secs(10);
/// How long the git gate gets to revoke the forge deploy keys it made (one forge API
/// timeout); a key not revoked by then keeps its record in the gate's state and is logged.
pub const GATE_TEARDOWN: Duration = Duration::from_secs(20);
/// How long the DLP hits egress queued get to be written as audit lines.
pub const DLP_FLUSH: Duration = Duration::from_secs(10);
/// How long the operator port gets to close after its last round.
pub const OPERATOR_STOP: Duration = Duration::from_secs(1);
/// The longest the bundle takes from SIGTERM to its exit, every step above at its bound
/// and the operator's last round ([`crate::operator::DRAIN_WAIT`]) waited for in full. A
/// pod's `terminationGracePeriodSeconds` must be longer, or the kubelet kills the bundle
/// before the operator has the pod's last audit lines.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(
    SIDECARS_STOP.as_secs()
        + GATE_TEARDOWN.as_secs()
        + DLP_FLUSH.as_secs()
        + crate::operator::DRAIN_WAIT.as_secs()
        + OPERATOR_STOP.as_secs(),
);

/// Runs the bundle of `config` on a runtime of its own until SIGTERM (or Ctrl-C), or until a
/// sidecar stops: the whole of `bot-bottle sidecar --config FILE`.
pub fn run(config: SidecarConfig) -> Result<(), BundleError> {
    run_with_plan(config, None)
}

/// [`run`], publishing the agent's `plan` once every sidecar listens (a warm pod's bundle).
pub fn run_with_plan(config: SidecarConfig, plan: Option<Plan>) -> Result<(), BundleError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BundleError::Runtime {
            action: "cannot start the async runtime",
            source,
        })?;
    runtime.block_on(serve_with_plan(
        config,
        &|name| std::env::var(name).ok(),
        plan,
    ))
}

/// A bound listener of either kind.
enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

fn bind(listen: &Listen) -> Result<Bound, BundleError> {
    match listen {
        Listen::Unix(path) => bind_unix(path).map(Bound::Unix),
        Listen::Tcp(addr) => {
            let failed = |source| BundleError::Listen {
                action: "listen on",
                target: addr.to_string(),
                source,
            };
            let std = std::net::TcpListener::bind(addr).map_err(failed)?;
            std.set_nonblocking(true).map_err(failed)?;
            Ok(Bound::Tcp(TcpListener::from_std(std).map_err(failed)?))
        }
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener, BundleError> {
    let failed = |action| {
        move |source| BundleError::Listen {
            action,
            target: path.display().to_string(),
            source,
        }
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(failed("replace")(e));
        }
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(failed("listen on"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(failed("restrict"))?;
    Ok(listener)
}

/// Serves the bundle of `config` on the current runtime until SIGTERM (or Ctrl-C), or until
/// a sidecar stops; prints `ready` on stdout once every listener is bound.
pub async fn serve(config: SidecarConfig) -> Result<(), BundleError> {
    serve_with_env(config, &|name| std::env::var(name).ok()).await
}

/// [`serve`], reading the operator token through `env` instead of the process's
/// environment (tests run several bundles in one process).
pub async fn serve_with_env(
    config: SidecarConfig,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(), BundleError> {
    serve_with_plan(config, env, None).await
}

/// [`serve_with_env`], publishing the agent's `plan` right after `ready`; a plan that
/// cannot be published stops the bundle with the reason (the agent then runs nothing).
pub async fn serve_with_plan(
    config: SidecarConfig,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    plan: Option<Plan>,
) -> Result<(), BundleError> {
    let cancel = CancellationToken::new();

    // Egress.
    let routes = egress::standalone::read_routes(&config.egress.routes).map_err(|source| {
        BundleError::Routes {
            path: config.egress.routes.clone(),
            source,
        }
    })?;
    let mut proxy_config = egress::ProxyConfig::new(&config.egress.ca_dir);
    proxy_config.upstream_ca = config.egress.upstream_ca.clone();
    proxy_config.log = egress::LogSink::File(config.egress.log.clone());
    // Each DLP hit is also a line of the bottle's audit chain (redacted: never the secret).
    let (dlp_hits, dlp_flush) =
        crate::dlp_audit::sink(proposals::Home::new(&config.home), config.identity.clone());
    proxy_config.dlp_hits = Some(dlp_hits);
    let proxy = egress::Proxy::new(proxy_config, routes).map_err(|source| BundleError::Egress {
        action: "cannot start egress",
        source,
    })?;
    let routes_handle = proxy.routes();
    let egress_listener = bind(&config.egress.listen)?;

    // Git gate.
    let gate = match &config.gate {
        Some(g) => {
            let gate_config =
                gitgate::GateConfig::load(&g.repos).map_err(|source| BundleError::GateConfig {
                    path: g.repos.clone(),
                    source,
                })?;
            let options =
                gitgate::GateOptions::new(&config.identity).map_err(BundleError::GateOptions)?;
            let gate = gitgate::Gate::new(gate_config, &g.state_dir, options)
                .await
                .map_err(BundleError::Gate)?;
            Some((Arc::new(gate), bind(&g.listen)?))
        }
        None => None,
    };

    // Supervise: approvals reload egress in place and extend the git gate's allowed findings.
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
                gate_allowed_findings: gate.as_ref().map(|(g, _)| g.allowed_findings_path()),
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

    // The operator port: fail closed without its token (never open to anyone). It takes
    // part in the bottle's end (`operator` module doc): it outlives the sidecars.
    let lifecycle = crate::operator::Lifecycle::default();
    let operator = match &config.operator {
        Some(o) => {
            let token = env(&o.token_env).unwrap_or_default();
            let port = crate::operator::OperatorPort::new(
                supervise::Home::new(&config.home),
                config.identity.clone(),
                token,
            )
            .ok_or_else(|| BundleError::OperatorToken {
                var: o.token_env.clone(),
            })?
            .with_lifecycle(lifecycle.clone());
            Some((port, bind(&o.listen)?))
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
            .map_err(|source| BundleError::Egress {
                action: "egress stopped",
                source,
            })
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
            .map_err(BundleError::GateStopped)
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
            .map_err(BundleError::SuperviseStopped)
        });
    }

    let operator_stop = CancellationToken::new();
    let operator = operator.map(|(port, listener)| {
        let stop = operator_stop.clone();
        tokio::spawn(async move {
            match listener {
                Bound::Unix(l) => crate::operator::serve_unix(l, port, stop).await,
                Bound::Tcp(l) => crate::operator::serve_tcp(l, port, stop).await,
            }
            .map_err(BundleError::OperatorStopped)
        })
    });

    // Watched before `ready`: a SIGTERM (or Ctrl-C) right after it must stop the bundle in
    // order (the default action would end it with the forge keys unrevoked and the lines
    // unwritten).
    let watch = |kind, action| {
        tokio::signal::unix::signal(kind).map_err(|source| BundleError::Runtime { action, source })
    };
    let mut term = watch(
        tokio::signal::unix::SignalKind::terminate(),
        "cannot watch SIGTERM",
    )?;
    let mut interrupt = watch(
        tokio::signal::unix::SignalKind::interrupt(),
        "cannot watch SIGINT",
    )?;

    // Every listener is bound and the gate's mirrors are prepared: tell `start`.
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    tracing::info!(identity = %config.identity, "sidecar bundle ready");

    // The agent's plan: only now, every sidecar listening. Not published, the bundle stops.
    let mut failure = plan.and_then(|plan| match plan.publish() {
        Ok(published) => {
            tracing::info!(plan = %published.display(), "the agent's plan published");
            None
        }
        Err(e) => Some(BundleError::Plan(e)),
    });
    if failure.is_none() {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
            // The launcher saw the agent end and asks for the last lines.
            () = lifecycle.stop.cancelled() => {}
            Some(done) = tasks.join_next() => {
                // A sidecar that stops on its own leaves the bottle without a way out: stop all.
                failure = Some(match done {
                    Ok(Ok(())) => BundleError::Unexpected,
                    Ok(Err(e)) => e,
                    Err(e) => BundleError::Task(e.to_string()),
                });
            }
        }
    }
    // Said before anything stops: the line that shows the bundle ran its shutdown (the
    // forge keys' revocation among it) rather than being killed.
    tracing::info!("sidecar bundle stopping");
    cancel.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SIDECARS_STOP, drain).await.is_err() {
        tracing::warn!(
            "sidecars did not finish within {} s of shutdown",
            SIDECARS_STOP.as_secs()
        );
    }
    if let Some(gate) = gate {
        match tokio::time::timeout(GATE_TEARDOWN, gate.teardown()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot revoke forge deploy keys"),
            Err(_) => tracing::error!(
                "forge deploy keys not revoked within {} s of shutdown; revoke them on the forge (the gate's state lists them)",
                GATE_TEARDOWN.as_secs()
            ),
        }
    }
    // The DLP hits egress queued before it stopped are lines of the chain before the
    // bundle ends (and before the operator port says `ended`).
    if tokio::time::timeout(DLP_FLUSH, dlp_flush.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            "the dlp hits' audit lines were not all written within {} s of shutdown",
            DLP_FLUSH.as_secs()
        );
    }
    lifecycle.ended.cancel();
    if let Some(operator) = operator {
        // The operator's last round (the launcher's, or none if it is gone).
        let drained =
            tokio::time::timeout(crate::operator::DRAIN_WAIT, lifecycle.drained.cancelled()).await;
        if drained.is_err() {
            tracing::warn!(
                "no operator's round took the last audit lines within {} s; they stay in this bottle's home",
                crate::operator::DRAIN_WAIT.as_secs()
            );
        }
        operator_stop.cancel();
        let _ = tokio::time::timeout(OPERATOR_STOP, operator).await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Applies approvals: routes and tokens through supervise's file applier (which reloads
/// egress first), findings into the git gate's allowed findings.
struct SidecarApplier {
    files: supervise::FileApplier,
    gate_allowed_findings: Option<PathBuf>,
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
        let Some(path) = &self.gate_allowed_findings else {
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

    async fn sweep(
        &self,
        bottle: &str,
        audit: supervise::SweepAudit<'_>,
    ) -> Result<supervise::Swept, supervise::ApplyError> {
        let mut swept = self.files.sweep(bottle, audit).await?;
        let Some(path) = &self.gate_allowed_findings else {
            return Ok(swept);
        };
        let now = time::OffsetDateTime::now_utc();
        // The ends are audited before the file loses them (see `Applier::sweep`).
        let gone = gitgate::remove_ended(path, now, |gone| {
            let ended: Vec<supervise::Ended> = gone.iter().map(ended_finding).collect();
            audit(&ended, None);
        })
        .map_err(|e| supervise::ApplyError::Io {
            action: e.action,
            path: path.clone(),
            reason: e.source.to_string(),
        })?;
        swept.ended.extend(gone.iter().map(ended_finding));
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

/// An allowed finding whose grant ended, as a sweep reports it.
fn ended_finding(a: &gitgate::AllowedFinding) -> supervise::Ended {
    supervise::Ended {
        tool: supervise::Tool::GitleaksAllow,
        grant: a.grant.clone(),
        what: format!("finding {}", a.finding),
        why: if a.uses == Some(0) {
            "used-up"
        } else {
            "expired"
        },
        restored: false,
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
        let gate_file = gitgate::allowed_findings_path(&dir.path().join("gate"));
        let applier = SidecarApplier {
            files: supervise::FileApplier::new(supervise::Home::new(dir.path().join("home"))),
            gate_allowed_findings: Some(gate_file.clone()),
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
            gitgate::read_allowed_findings(&gate_file).unwrap(),
            ["c1:a.rs:r:1", "c3:c.rs:r:3"].map(String::from).into()
        );
        // the gate spends the once-approval after a push; the sweep takes both ended out
        gitgate::spend_uses(&gate_file, &["c1:a.rs:r:1".to_owned()].into()).unwrap();
        // Their ends are handed to the audit while the file still holds them.
        let audited = std::sync::Mutex::new(Vec::new());
        let audit = |ended: &[supervise::Ended], routes: Option<(&str, &str)>| {
            let file = std::fs::read_to_string(&gate_file).unwrap();
            for e in ended {
                let line = e.what.trim_start_matches("finding ");
                audited.lock().unwrap().push((
                    e.what.clone(),
                    routes.is_some(),
                    file.contains(line),
                ));
            }
        };
        let swept = applier.sweep("b-1", &audit).await.unwrap();
        assert_eq!(
            audited.into_inner().unwrap(),
            vec![
                ("finding c1:a.rs:r:1".to_owned(), false, true),
                ("finding c2:b.rs:r:2".to_owned(), false, true),
            ]
        );
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
