//! Running one bottle: shared by `start` and `resume`.
//!
//! The order matters and each step fails closed:
//! 1. the backend's preflight must pass (never run the agent less isolated than promised);
//! 2. the state directory holds the CA, the live routes and the gate config;
//! 3. the sidecar bundle starts as a child process holding the tokens and the CA key, and
//!    `start` waits for its readiness line (a bundle that dies or stays silent aborts);
//! 4. the agent's home is written from the contract, and the backend launches the agent with
//!    the sidecar sockets forwarded to fixed loopback ports inside the bottle;
//! 5. while the agent runs the bundle is watched ([`watch`]): if it dies, the operator is
//!    told, the bottle is stopped and its state kept (fail closed, nothing silently restarted);
//! 6. on exit the bundle is stopped; a non-zero exit keeps the state (`.preserve`) for
//!    `resume`, a clean exit removes it.

mod docker;
pub mod layout;
pub mod provider;
pub mod watch;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use backend::{Backend, BackendKind, BottleStdio, Forward, LaunchSpec, ReadOnlyFile};
use manifest::ProviderKind;
use manifest::ResolvedAgent;
use state::{Home, Identity, Metadata, RunLock};

pub use layout::{
    BottlePaths, EgressSidecar, GateSidecar, Listen, SidecarConfig, SuperviseSidecar,
};

/// Where the agent's home is inside every bottle.
const AGENT_HOME: &str = "/home/agent";
/// The combined CA bundle replaces the system one inside the bottle.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The bottle CA certificate alone (for `NODE_EXTRA_CA_CERTS`).
const BOTTLE_CA_INSIDE: &str = "/run/bot-bottle/ca.pem";
/// The bundle's path inside when the host has no system bundle to replace.
const BUNDLE_FALLBACK_INSIDE: &str = "/run/bot-bottle/ca-bundle.crt";
/// How long the sidecar bundle may take to become ready (the gate's first upstream sync).
const SIDECAR_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run, decided by `start` (from the manifest) or `resume` (from metadata).
#[derive(Debug)]
pub struct Launch {
    /// The resolved agent and its bottle.
    pub agent: ResolvedAgent,
    /// The backend to use.
    pub backend: BackendKind,
    /// The working directory to give the bottle.
    pub cwd: PathBuf,
    /// Copy the working directory instead of mounting it.
    pub copy_cwd: bool,
    /// Replaces the provider's agent command when not empty.
    pub command: Vec<String>,
    /// The manifest the agent came from.
    pub manifest: Option<PathBuf>,
    /// The host's Codex login to copy into the bottle (`--forward-codex-auth`), already
    /// checked by the command.
    pub codex_login: Option<PathBuf>,
}

impl Launch {
    /// How Codex authenticates in this bottle.
    fn codex_auth(&self) -> contract::CodexAuth {
        if self.codex_login.is_some() {
            contract::CodexAuth::ChatGptLogin
        } else {
            contract::CodexAuth::ApiKey
        }
    }
}

/// Creates a new bottle and runs it to the end; returns the agent's exit code.
pub fn start(home: &Home, launch: Launch) -> anyhow::Result<ExitCode> {
    let backend = open_backend(home, launch.backend)?;
    let meta = Metadata {
        agent: launch.agent.name.clone(),
        cwd: launch.cwd.clone(),
        copy_cwd: launch.copy_cwd,
        backend: launch.backend.name().to_string(),
        created: now_rfc3339(),
        manifest: launch.manifest.clone(),
        command: launch.command.clone(),
        forward_codex_auth: launch.codex_login.is_some(),
    };
    let (identity, lock) = home
        .create_bottle(&meta)
        .context("cannot create the bottle's state")?;
    run(home, backend.as_ref(), &identity, lock, &launch, true)
}

/// Runs an existing (preserved) bottle again.
pub fn resume(
    home: &Home,
    identity: &Identity,
    lock: RunLock,
    launch: Launch,
) -> anyhow::Result<ExitCode> {
    let backend = open_backend(home, launch.backend)?;
    run(home, backend.as_ref(), identity, lock, &launch, false)
}

fn open_backend(home: &Home, kind: BackendKind) -> anyhow::Result<Box<dyn Backend>> {
    let backend = backend::open(kind, home.root())?;
    // The kernel's facts only: `doctor` also runs a test bottle, which would double the
    // start-up time here, and the launch itself fails closed on anything the facts miss.
    let status = match kind {
        BackendKind::Native => backend::preflight::native(None),
        _ => backend.preflight(),
    };
    if !status.usable {
        let mut msg = format!(
            "the {kind} backend cannot isolate a bottle on this machine, so nothing was started"
        );
        for check in status.checks.iter().filter(|c| c.required && !c.ok) {
            msg.push_str(&format!("\n  {}: {}", check.name, check.detail));
            if let Some(fix) = &check.fix {
                msg.push_str(&format!("\n    fix: {fix}"));
            }
        }
        msg.push_str("\n(`bot-bottle doctor` shows every backend)");
        bail!(msg);
    }
    Ok(backend)
}

fn run(
    home: &Home,
    backend: &dyn Backend,
    identity: &Identity,
    lock: RunLock,
    launch: &Launch,
    fresh: bool,
) -> anyhow::Result<ExitCode> {
    let paths = BottlePaths::new(home.state_dir(identity));
    // Markers left by a `start` that was killed belong to a bottle long gone.
    let _ = std::fs::remove_file(paths.agent_started());
    let _ = home.clear_sidecar_down(identity);
    let outcome = run_inner(home, backend, identity, &paths, launch, fresh);
    let _ = std::fs::remove_file(paths.agent_started());
    let preserve = match &outcome {
        Ok(code) => *code != 0,
        // A bottle whose sidecar bundle died is kept even on its first run.
        Err(e) => !fresh || e.is::<watch::SidecarDown>(),
    };
    drop(lock);
    if preserve {
        if let Err(e) = home.mark_preserved(identity) {
            eprintln!("bot-bottle: cannot mark {identity} preserved: {e}");
        } else if outcome.is_ok() {
            eprintln!(
                "bot-bottle: the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle list` shows it"
            );
        }
    } else {
        let _ = home.clear_preserved(identity);
        if let Err(e) = home.remove_bottle(identity) {
            eprintln!("bot-bottle: cannot remove the state of {identity}: {e}");
        }
    }
    let code = outcome?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

fn run_inner(
    home: &Home,
    backend: &dyn Backend,
    identity: &Identity,
    paths: &BottlePaths,
    launch: &Launch,
    fresh: bool,
) -> anyhow::Result<i32> {
    let bottle = &launch.agent.bottle;
    for dir in [
        paths.live_config(),
        paths.sockets(),
        paths.agent_home(),
        paths.files(),
        paths.logs(),
    ] {
        create_private_dir(&dir)?;
    }

    // The CA: created once per bottle, kept for resume.
    let ca = egress::ca::CertificateAuthority::load_or_create(&paths.ca_dir())
        .context("cannot create the bottle CA")?;
    let ca_pem = ca.cert_pem().to_string();

    // Live routes: from the manifest on a fresh start; a resumed bottle keeps what the
    // operator approved since.
    // Provider template (clients): the client's default routes go before the bottle's own.
    let all_routes = provider::routes_for(bottle, launch.codex_auth());
    if fresh || !paths.routes_file().exists() {
        let routes = policy::EgressConfig {
            log: Some(bottle.egress.log),
            upstream_ca: None,
            routes: Some(without_missing_tokens(&all_routes, |k| {
                std::env::var_os(k).is_some_and(|v| !v.is_empty())
            })),
        };
        let text = serde_saphyr::to_string(&routes).context("cannot encode the routes")?;
        state::atomic_write(&paths.routes_file(), text.as_bytes())
            .with_context(|| format!("cannot write {}", paths.routes_file().display()))?;
    }
    let has_repos = !bottle.git_gate.repos.is_empty();
    if has_repos {
        let text = serde_saphyr::to_string(&gate_spec(&bottle.git_gate))
            .context("cannot encode the git-gate block")?;
        state::atomic_write(&paths.gate_config(), text.as_bytes())
            .with_context(|| format!("cannot write {}", paths.gate_config().display()))?;
    }

    // The sidecar bundle: it gets the route tokens and the forge tokens of the gate, nothing
    // else of the host's environment.
    let tokens: Vec<String> = all_routes
        .iter()
        .filter_map(|r| r.token_env.clone())
        .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut sidecar_env = tokens.clone();
    sidecar_env.extend(forge_token_envs(&bottle.git_gate.repos));
    sidecar_env.sort();
    sidecar_env.dedup();
    let endpoints = contract::Endpoints::DEFAULT;
    let docker = launch.backend == BackendKind::Docker;
    // Native: Unix sockets in the state directory, forwarded into the bottle. Docker: TCP on
    // the sidecar container's side of the bottle's internal network.
    let listen = |name: &str, port: u16| -> anyhow::Result<Listen> {
        if docker {
            Ok(Listen::Tcp(std::net::SocketAddr::from((
                [0, 0, 0, 0],
                port,
            ))))
        } else {
            Ok(Listen::Unix(paths.socket(name)?))
        }
    };
    let config = SidecarConfig {
        identity: identity.to_string(),
        home: home.root().to_path_buf(),
        egress: EgressSidecar {
            listen: listen("egress", endpoints.egress)?,
            routes: paths.routes_file(),
            ca_dir: paths.ca_dir(),
            upstream_ca: bottle.egress.upstream_ca.clone(),
            log: paths.logs().join("egress.jsonl"),
        },
        gate: has_repos
            .then(|| -> anyhow::Result<GateSidecar> {
                Ok(GateSidecar {
                    listen: listen("gate", endpoints.gate)?,
                    repos: paths.gate_config(),
                    state_dir: paths.gate_dir(),
                })
            })
            .transpose()?,
        supervise: bottle
            .supervise
            .then(|| -> anyhow::Result<SuperviseSidecar> {
                Ok(SuperviseSidecar {
                    listen: listen("supervise", endpoints.supervise)?,
                })
            })
            .transpose()?,
        tokens,
    };
    let json = serde_json::to_vec_pretty(&config)?;
    state::atomic_write(&paths.sidecar_config(), &json)
        .with_context(|| format!("cannot write {}", paths.sidecar_config().display()))?;
    let spec = agent_spec(identity, paths, launch, fresh, &config, &ca_pem)?;
    let watch = std::sync::Arc::new(watch::Watch::new(home, identity));
    let result = if docker {
        docker::run(home, paths, launch, &sidecar_env, &spec, watch.clone())
    } else {
        run_native(backend, identity, paths, &sidecar_env, &spec, &watch)
    };
    match watch.down() {
        Some(how) => Err(watch::SidecarDown {
            identity: identity.clone(),
            how,
            log: paths.logs().join("sidecar.log"),
            tail: log_tail(&paths.logs().join("sidecar.log")),
        }
        .into()),
        None => result,
    }
}

/// The native bottle beside its bundle, a child of this process: a watcher thread waits for
/// the bundle to exit (without reaping it) and stops the bottle if it does while the agent
/// runs.
fn run_native(
    backend: &dyn Backend,
    identity: &Identity,
    paths: &BottlePaths,
    sidecar_env: &[String],
    spec: &LaunchSpec,
    watch: &watch::Watch,
) -> anyhow::Result<i32> {
    let mut sidecar = Sidecar::start(paths, sidecar_env)?;
    let pid = sidecar.pid();
    let result = std::thread::scope(|scope| -> anyhow::Result<i32> {
        backend.prepare(spec)?;
        let mut running = backend.launch(spec, BottleStdio::inherit())?;
        agent_started(paths);
        scope.spawn(move || {
            if let Some(how) = watch::wait_exited(pid)
                && watch.sidecar_down(&how)
                && let Err(e) = backend.stop(identity.as_str(), watch::STOP_GRACE)
            {
                eprintln!("bot-bottle: cannot stop {identity}: {e}");
            }
        });
        let waited = running.wait();
        watch.agent_ended(watch::exited_now(pid));
        // Ends the watcher's wait (the scope joins it).
        sidecar.stop();
        Ok(waited?.code)
    });
    sidecar.stop();
    result
}

/// The last lines of the bundle's log (where a crash says why).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Marks the agent as running for `stop` (removed when the bottle ends). Not fatal when it
/// cannot be written: `stop` then keeps waiting, as for a bottle still being set up.
fn agent_started(paths: &BottlePaths) {
    if let Err(e) = state::atomic_write(&paths.agent_started(), b"") {
        eprintln!("bot-bottle: cannot mark the agent as started: {e}");
    }
}

/// The manifest's `git-gate:` block as the gate's own input ([`gitgate::GateSpec`]): the
/// gate knows no manifest, so the launcher maps one onto the other, field by field.
fn gate_spec(gate: &manifest::ResolvedGitGate) -> gitgate::GateSpec {
    let repo = |r: &manifest::raw::RepoSpec| gitgate::RepoSpec {
        url: r.url.clone(),
        key: r.key.as_ref().map(|k| match k {
            manifest::raw::KeySpec::Static { path } => {
                gitgate::KeySpec::Static { path: path.clone() }
            }
            manifest::raw::KeySpec::Gitea {
                forge_token_env,
                api_url,
            } => gitgate::KeySpec::Gitea {
                forge_token_env: forge_token_env.clone(),
                api_url: api_url.clone(),
            },
        }),
        host_key: r.host_key.clone(),
        push_branches: r.push_branches.clone(),
        allow_force_push: r.allow_force_push,
        dangerously_push_unscannable: r.dangerously_push_unscannable,
    };
    gitgate::GateSpec {
        user: Some(gitgate::UserSpec {
            name: gate.user.name.clone(),
            email: gate.user.email.clone(),
        }),
        repos: Some(
            gate.repos
                .iter()
                .map(|(n, r)| (n.clone(), repo(r)))
                .collect(),
        ),
    }
}

/// The host variables holding the forge API tokens of the gate's repositories.
fn forge_token_envs(
    repos: &BTreeMap<String, manifest::raw::RepoSpec>,
) -> impl Iterator<Item = String> + '_ {
    repos.values().filter_map(|r| match &r.key {
        Some(manifest::raw::KeySpec::Gitea {
            forge_token_env, ..
        }) if std::env::var_os(forge_token_env).is_some_and(|v| !v.is_empty()) => {
            Some(forge_token_env.clone())
        }
        _ => None,
    })
}

/// Writes the agent's home from the contract and describes the bottle to launch.
fn agent_spec(
    identity: &Identity,
    paths: &BottlePaths,
    launch: &Launch,
    fresh: bool,
    config: &SidecarConfig,
    ca_pem: &str,
) -> anyhow::Result<LaunchSpec> {
    let bottle = &launch.agent.bottle;
    let has_repos = config.gate.is_some();
    let raw_gate = gate_spec(&bottle.git_gate);
    // The agent's contract.
    let endpoints = contract::Endpoints::DEFAULT;
    let gitconfig = if has_repos {
        gitgate::render_agent_gitconfig(&endpoints.gate_url(), &raw_gate)
            .context("cannot write the agent's gitconfig")?
    } else {
        render_user_only_gitconfig(&bottle.git_gate.user)
    };
    let system_roots = std::fs::read_to_string(SYSTEM_BUNDLE).unwrap_or_default();
    let bundle_inside = if Path::new(SYSTEM_BUNDLE).is_file() {
        SYSTEM_BUNDLE
    } else {
        BUNDLE_FALLBACK_INSIDE
    };
    let workspace_inside = launch.cwd.clone();
    let provider = match bottle.agent_provider.kind() {
        ProviderKind::Claude => contract::Provider::Claude,
        ProviderKind::Codex => contract::Provider::Codex,
    };
    let contract = contract::build(
        &contract::Input {
            provider,
            identity: identity.to_string(),
            endpoints,
            home: AGENT_HOME.into(),
            workspace: workspace_inside.clone(),
            ca_bundle: bundle_inside.into(),
            bottle_ca: BOTTLE_CA_INSIDE.into(),
            gitconfig,
            bottle_env: bottle.env.clone(),
            // Provider template (clients): placeholder kind and skills index.
            claude_auth: provider::claude_auth(&provider::routes_for(bottle, launch.codex_auth())),
            codex_auth: launch.codex_auth(),
            instructions: provider::instructions(
                provider,
                &launch.agent.skills,
                Path::new(AGENT_HOME),
            )?,
        },
        |k| std::env::var(k).ok(),
    )?;
    for file in &contract.home_files {
        let path = paths.agent_home().join(&file.path);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        // On resume, keep what the agent changed in its own config (e.g. Claude's state).
        if !fresh && path.exists() && file.path != Path::new(".gitconfig") {
            continue;
        }
        state::atomic_write(&path, file.contents.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    provider::install_skills(provider, &launch.agent.skills, &paths.agent_home())?;
    if let Some(login) = &launch.codex_login {
        provider::forward_codex_login(login, &paths.agent_home())?;
    }
    let bundle_host = paths.files().join("ca-bundle.crt");
    let ca_host = paths.files().join("ca.pem");
    state::atomic_write_mode(
        &bundle_host,
        contract::ca_bundle(&system_roots, ca_pem).as_bytes(),
        0o644,
    )?;
    state::atomic_write_mode(&ca_host, ca_pem.as_bytes(), 0o644)?;

    // The bottle's loopback ports, each to its sidecar (docker relays to the same port of
    // the sidecar container and has no socket to name).
    let forward = |inside_port: u16, listen: &Listen| Forward {
        inside_port,
        host_unix_socket: listen.unix_socket().cloned().unwrap_or_default(),
    };
    let mut forwards = vec![forward(endpoints.egress, &config.egress.listen)];
    if let Some(g) = &config.gate {
        forwards.push(forward(endpoints.gate, &g.listen));
    }
    if let Some(s) = &config.supervise {
        forwards.push(forward(endpoints.supervise, &s.listen));
    }
    let argv = if launch.command.is_empty() {
        agent_command(provider, launch.agent.prompt.as_deref(), !fresh)
    } else {
        launch.command.clone()
    };
    let interactive = std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    let spec = LaunchSpec {
        identity: identity.to_string(),
        argv,
        env: contract.env.clone(),
        workspace: backend::Workspace {
            host: launch.cwd.clone(),
            inside: workspace_inside,
            mode: if launch.copy_cwd {
                backend::WorkspaceMode::Copy {
                    into: paths.workspace_copy(),
                }
            } else {
                backend::WorkspaceMode::Mount
            },
        },
        home: backend::Home {
            host: paths.agent_home(),
            inside: AGENT_HOME.into(),
        },
        files: vec![
            ReadOnlyFile {
                host: bundle_host,
                inside: bundle_inside.into(),
            },
            ReadOnlyFile {
                host: ca_host,
                inside: BOTTLE_CA_INSIDE.into(),
            },
        ],
        forwards,
        interactive,
        resources: resources(&bottle.resources),
        dangerously_run_as_host_root: bottle.dangerously_run_as_host_root,
    };
    Ok(spec)
}

/// The manifest's limits as the backends take them.
fn resources(r: &manifest::ResolvedResources) -> backend::Resources {
    backend::Resources {
        millicpus: r.millicpus,
        memory_bytes: r.memory_bytes,
        pids: r.pids,
        allow_unenforced: r.dangerously_allow_unenforced,
    }
}

/// Routes whose credential variable is not set on the host lose the credential (with a
/// warning): their requests go out unauthenticated rather than the bottle not starting.
/// Nothing is weakened — the agent holds only placeholders either way.
fn without_missing_tokens(
    routes: &[policy::Route],
    is_set: impl Fn(&str) -> bool,
) -> Vec<policy::Route> {
    routes
        .iter()
        .map(|r| match &r.token_env {
            Some(var) if !is_set(var) => {
                eprintln!(
                    "bot-bottle: warning: {var} is not set, so requests to {} go out without credentials; export it before `start` (the agent never sees it)",
                    r.host
                );
                policy::Route {
                    token_env: None,
                    auth_scheme: None,
                    auth_header: None,
                    ..r.clone()
                }
            }
            _ => r.clone(),
        })
        .collect()
}

fn render_user_only_gitconfig(user: &manifest::raw::GitUser) -> String {
    let mut out = String::new();
    if user.name.is_some() || user.email.is_some() {
        out.push_str("[user]\n");
        if let Some(n) = &user.name {
            out.push_str(&format!("\tname = {n}\n"));
        }
        if let Some(e) = &user.email {
            out.push_str(&format!("\temail = {e}\n"));
        }
    }
    out
}

/// The provider's own agent command, with the manifest's prompt.
/// A resumed bottle continues the agent's last conversation instead of the prompt.
fn agent_command(provider: contract::Provider, prompt: Option<&str>, resume: bool) -> Vec<String> {
    let mut argv: Vec<String> = match (provider, resume) {
        (contract::Provider::Claude, false) => {
            vec!["claude".into(), "--dangerously-skip-permissions".into()]
        }
        (contract::Provider::Claude, true) => vec![
            "claude".into(),
            "--dangerously-skip-permissions".into(),
            "--continue".into(),
        ],
        (contract::Provider::Codex, false) => vec![
            "codex".into(),
            "--dangerously-bypass-approvals-and-sandbox".into(),
        ],
        (contract::Provider::Codex, true) => vec![
            "codex".into(),
            "--dangerously-bypass-approvals-and-sandbox".into(),
            "resume".into(),
            "--last".into(),
        ],
    };
    if resume {
        return argv;
    }
    if let Some(p) = prompt.filter(|p| !p.trim().is_empty()) {
        argv.push(p.to_string());
    }
    argv
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The sidecar bundle as a child process of `start`: it dies with `start` (parent-death
/// signal) and is stopped with SIGTERM when the agent exits.
struct Sidecar {
    child: Child,
}

impl Sidecar {
    fn start(paths: &BottlePaths, tokens: &[String]) -> anyhow::Result<Sidecar> {
        let exe = std::env::current_exe().context("cannot find the bot-bottle executable")?;
        let log_path = paths.logs().join("sidecar.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("sidecar")
            .arg("--config")
            .arg(paths.sidecar_config())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // A minimal environment plus the tokens the routes name: nothing else of the host's.
        let mut env: BTreeMap<&str, String> = BTreeMap::new();
        for k in [
            "PATH",
            "HOME",
            "USER",
            "LANG",
            "TZ",
            "BOT_BOTTLE_LOG",
            "RUST_LOG",
        ] {
            if let Ok(v) = std::env::var(k) {
                env.insert(k, v);
            }
        }
        for t in tokens {
            if let Ok(v) = std::env::var(t) {
                env.insert(t, v);
            }
        }
        cmd.envs(env);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent; it only makes the kernel kill the bundle if `start` dies.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().context("cannot start the sidecar bundle")?;
        let stdout = child
            .stdout
            .take()
            .context("the sidecar bundle has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let ready = matches!(lines.next(), Some(Ok(l)) if l.trim() == "ready");
            let _ = tx.send(ready);
            // Keep draining so the bundle never blocks on a full pipe.
            for _ in lines {}
        });
        let mut sidecar = Sidecar { child };
        match rx.recv_timeout(SIDECAR_READY_TIMEOUT) {
            Ok(true) => Ok(sidecar),
            outcome => {
                sidecar.stop();
                let why = if outcome.is_err() {
                    "did not become ready in time"
                } else {
                    "exited before it was ready"
                };
                bail!(
                    "the sidecar bundle {why}; nothing was started. Its log ({}) ends with:\n{}",
                    log_path.display(),
                    log_tail(&log_path)
                )
            }
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0))
    }

    /// SIGTERM, then SIGKILL after 5 s; reaps it. Does nothing once it has been reaped (its
    /// pid may belong to another process by then).
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_spec_carries_every_key_of_the_manifest_block() {
        let yaml = "user:\n  name: agent\n  email: a@example.org\nrepos:\n  app:\n    url: git@example.org:team/app.git\n    key:\n      provider: gitea\n      forge_token_env: FORGE\n      api_url: https://example.org/api/v1\n    host_key: ssh-ed25519 AAAA\n    push_branches:\n    - agent/*\n    allow_force_push: true\n    dangerously_push_unscannable: true\n  lib:\n    url: /srv/lib.git\n    key:\n      provider: static\n      path: ~/.ssh/deploy\n";
        let raw: manifest::raw::GitGate = serde_saphyr::from_str(yaml).unwrap();
        let resolved = manifest::ResolvedGitGate {
            user: raw.user.clone().unwrap_or_default(),
            repos: raw.repos.clone().unwrap_or_default(),
        };
        let spec = gate_spec(&resolved);
        assert_eq!(
            serde_saphyr::to_string(&spec).unwrap(),
            serde_saphyr::to_string(&raw).unwrap()
        );
    }

    fn route(host: &str, token: Option<&str>) -> policy::Route {
        policy::Route {
            host: host.into(),
            websocket: None,
            dangerously_raw_paths: None,
            port: None,
            auth_scheme: token.map(|_| "Bearer".into()),
            token_env: token.map(Into::into),
            auth_header: None,
            connect_to: None,
            matches: None,
        }
    }

    #[test]
    fn routes_lose_only_the_credentials_that_are_not_set() {
        let routes = vec![
            route("a.test", Some("SET")),
            route("b.test", Some("UNSET")),
            route("c.test", None),
        ];
        let out = without_missing_tokens(&routes, |k| k == "SET");
        assert_eq!(
            out,
            vec![
                route("a.test", Some("SET")),
                route("b.test", None),
                route("c.test", None)
            ]
        );
    }

    #[test]
    fn the_manifests_resource_defaults_are_the_backends() {
        assert_eq!(
            resources(&manifest::ResolvedResources::default()),
            backend::Resources::default()
        );
        assert_eq!(
            resources(&manifest::ResolvedResources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                dangerously_allow_unenforced: true,
            }),
            backend::Resources {
                millicpus: 1500,
                memory_bytes: 2 << 30,
                pids: 512,
                allow_unenforced: true,
            }
        );
    }

    #[test]
    fn resume_continues_the_conversation() {
        assert_eq!(
            agent_command(contract::Provider::Claude, Some("fix it"), false),
            vec!["claude", "--dangerously-skip-permissions", "fix it"]
        );
        assert_eq!(
            agent_command(contract::Provider::Claude, Some("fix it"), true),
            vec!["claude", "--dangerously-skip-permissions", "--continue"]
        );
        assert_eq!(
            agent_command(contract::Provider::Codex, None, false),
            vec!["codex", "--dangerously-bypass-approvals-and-sandbox"]
        );
    }
}
