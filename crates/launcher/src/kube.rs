//! `start` on the kubernetes backend: the bottle's files shipped to the cluster and the pod
//! launched through `backend::kubernetes`.
//!
//! On a laptop the sidecar bundle reads the bottle's state directory; in a pod it has only
//! what the bottle's Secret brings. So the launcher prepares the same state as for every
//! backend (CA, live routes, gate config, the agent's home) and then ships it:
//!
//! * the bundle's files go into the Secret under flat keys ([`PodFiles`]), and the sidecar
//!   container's script copies each to its place under [`POD_HOME`] (a writable `emptyDir`
//!   only the sidecar mounts) before it runs `bot-bottle sidecar`: the bundle finds the
//!   layout it knows, with a config whose paths are the pod's;
//! * the tokens are Secret keys too, read into the bundle's environment by the script: never
//!   in the pod spec, never on the operator's disk (they stay in memory on their way);
//! * the sidecars listen on `127.0.0.1` only: a pod's other addresses are reachable from the
//!   whole cluster network, and the agent reaches the bundle on loopback anyway;
//! * the agent's home and read-only files go into the ConfigMap (the backend's plan).
//!
//! Deploy key files travel in the Secret too, and the pod's `gate.yaml` names their place.
//! What a laptop path would mean on a cluster is refused with the reason: a local upstream,
//! a forwarded Codex login (a credential would land in the ConfigMap).
//!
//! # The dashboard for cluster bottles
//!
//! supervise's queue and audit log are files under the pod's [`POD_HOME`]. With supervise
//! on, `start` makes an operator token (a Secret key, read into the bundle's environment
//! like the other tokens) and the pod's bundle opens its operator port on loopback; while
//! `start` runs, [`crate::kube_relay`] reaches that port through the API server's
//! port-forward — a port the agent's uid cannot reach (the pod's nftables let it reach
//! only the sidecar ports; the kubelet's port-forward connects as root) — copies pending
//! proposals into the laptop's `queue/<identity>/`, sends the operator's responses back,
//! and appends the pod's audit lines to the laptop's audit log.
//!
//! When the agent ends, `start` makes the relay's last rounds before it deletes the pod
//! ([`crate::kube_relay::Relay::finish`]): the bundle stops its sidecars, writes out what
//! they queued and answers until the laptop has its whole audit log.
//!
//! Once `start` is gone, `bot-bottle supervise` relays the bottle
//! ([`crate::kube_relay::Recorded`]), reading the token from the bottle's Secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::bundle::{Listen, OperatorSidecar, SidecarConfig};
use backend::docker::ImageSource;
use backend::kubernetes::{
    ClusterSettings, HomeClaimState, KubeSidecar, KubernetesBackend, KubernetesConfig,
};
use backend::{Backend, BottleStdio, LaunchSpec};
use state::Home;

use crate::error::Context;
use crate::{BottlePaths, Launch, LaunchError, Options};

/// Where the bundle's home (`$BOT_BOTTLE_HOME` of the pod) is inside the sidecar container:
/// its `/tmp`, an `emptyDir` no other container mounts.
pub const POD_HOME: &str = "/tmp/bot-bottle";
/// The bot-bottle executable in the sidecar image (as the docker backend mounts it).
pub const POD_EXE: &str = backend::kubernetes::pool::POD_EXE;

/// The cluster settings of a launch: the manifest's `kubernetes:` block.
pub fn settings(launch: &Launch) -> ClusterSettings {
    let k = &launch.agent.bottle.kubernetes;
    ClusterSettings {
        context: None,
        namespace: k.namespace.clone(),
        runtime_class: k.runtime_class.clone(),
        registry: k.registry.clone(),
        home_size: k.home_size.clone(),
        storage_class: k.storage_class.clone(),
        sandbox: k.sandbox,
    }
}

/// The pod's `terminationGracePeriodSeconds`: the sidecar bundle's whole shutdown after the
/// kubelet's SIGTERM ([`::bundle::SHUTDOWN_BOUND`]: its last audit lines, the operator's
/// last round) and a margin for the signal and the exit, so the kubelet never kills the
/// bundle in the middle of it (the API server's default, 30 s, is shorter).
pub fn termination_grace() -> std::time::Duration {
    ::bundle::SHUTDOWN_BOUND + std::time::Duration::from_secs(10)
}

/// The Secret key of a token's value.
pub fn token_key(var: &str) -> String {
    format!("token-{var}")
}

/// The bundle's files by Secret key, and where the sidecar's script puts each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodFiles {
    /// Key -> content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Key -> path in the sidecar container (keys of tokens have none: they are read into
    /// the environment).
    pub places: BTreeMap<String, PathBuf>,
    /// Token variable -> key.
    pub tokens: BTreeMap<String, String>,
    /// Directories the bundle writes into that no shipped file creates (the egress log's).
    pub dirs: std::collections::BTreeSet<PathBuf>,
}

impl PodFiles {
    fn put(&mut self, key: &str, content: Vec<u8>, place: PathBuf) {
        self.files.insert(key.to_owned(), content);
        self.places.insert(key.to_owned(), place);
    }

    /// The sidecar container's script: copy the files into place, read the tokens, run the
    /// bundle. Every path and name is quoted; token names are checked to be variable names.
    pub fn script(&self, config_inside: &Path) -> String {
        self.script_running(config_inside, None)
    }

    /// The script of a warm pod's sidecar ([`KubeSidecar::warm_script`], sent as
    /// [`objects::START_SCRIPT`](backend::kubernetes::objects::START_SCRIPT)): the same files
    /// are in the same directory once `bot-bottle intake` took them, with the agent's plan
    /// beside them ([`warm::PLAN_FILE`](backend::kubernetes::warm::PLAN_FILE)); the bundle
    /// publishes that plan into [`objects::PLAN_DIR`](backend::kubernetes::objects::PLAN_DIR)
    /// once it is ready, and the agent's waiter runs it.
    pub fn warm_script(&self, config_inside: &Path) -> String {
        use backend::kubernetes::{objects, warm};
        let plan = Path::new(objects::SIDECAR_DIR).join(warm::PLAN_FILE);
        self.script_running(config_inside, Some((&plan, Path::new(objects::PLAN_DIR))))
    }

    /// The script, its bundle publishing `plan` (the received file, the plan directory).
    fn script_running(&self, config_inside: &Path, plan: Option<(&Path, &Path)>) -> String {
        let secret = backend::kubernetes::objects::SIDECAR_DIR;
        let mut lines = vec!["set -eu".to_owned(), "umask 077".to_owned()];
        let mut dirs: Vec<String> = self
            .places
            .values()
            .filter_map(|p| p.parent())
            .chain(self.dirs.iter().map(PathBuf::as_path))
            .map(quote)
            .collect();
        dirs.sort();
        dirs.dedup();
        if !dirs.is_empty() {
            lines.push(format!("mkdir -p {}", dirs.join(" ")));
        }
        for (key, place) in &self.places {
            // `-L`: the Secret's files are symlinks into its data directory.
            lines.push(format!(
                "cp -L {} {}",
                quote(&Path::new(secret).join(key)),
                quote(place)
            ));
        }
        for (var, key) in &self.tokens {
            lines.push(format!(
                "{var}=\"$(cat {})\"; export {var}",
                quote(&Path::new(secret).join(key))
            ));
        }
        let mut exec = format!("exec {POD_EXE} sidecar --config {}", quote(config_inside));
        if let Some((file, dir)) = plan {
            exec.push_str(&format!(
                " --plan {} --plan-dir {}",
                quote(file),
                quote(dir)
            ));
        }
        lines.push(exec);
        lines.join("\n")
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The config the bundle reads in the pod and the files it needs, from the laptop's
/// `config` (whose paths are under `home`). With supervise, `operator_token` opens the
/// bundle's operator port to the launcher's relay ([`crate::kube_relay`]).
pub fn pod_config(
    home: &Path,
    config: &SidecarConfig,
    gate: &PodGate,
    tokens: &[(String, String)],
    operator_token: Option<&str>,
) -> Result<(SidecarConfig, PodFiles), LaunchError> {
    let pod_home = Path::new(POD_HOME);
    let rebase = |p: &Path| -> Result<PathBuf, LaunchError> {
        p.strip_prefix(home)
            .map(|rel| pod_home.join(rel))
            .map_err(|_| {
                LaunchError::Invalid(format!(
                    "{} is outside the bot-bottle home {}; a kubernetes bottle's files come from its state directory",
                    p.display(),
                    home.display()
                ))
            })
    };
    let read = |p: &Path| -> Result<Vec<u8>, LaunchError> {
        std::fs::read(p).with_context(|| format!("cannot read {} for the cluster", p.display()))
    };
    let loopback = |listen: &Listen| -> Listen {
        let port = match listen {
            Listen::Tcp(addr) => addr.port(),
            Listen::Unix(_) => 0,
        };
        Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let mut files = PodFiles::default();
    let mut pod = config.clone();
    pod.home = pod_home.to_path_buf();

    pod.egress.listen = loopback(&config.egress.listen);
    pod.egress.routes = rebase(&config.egress.routes)?;
    files.put(
        "routes.yaml",
        read(&config.egress.routes)?,
        pod.egress.routes.clone(),
    );
    pod.egress.ca_dir = rebase(&config.egress.ca_dir)?;
    for name in ["ca.pem", "ca-key.pem"] {
        files.put(
            name,
            read(&config.egress.ca_dir.join(name))?,
            pod.egress.ca_dir.join(name),
        );
    }
    pod.egress.log = rebase(&config.egress.log)?;
    // Egress opens its log at start: its directory must exist in the pod's empty home.
    if let Some(dir) = pod.egress.log.parent() {
        files.dirs.insert(dir.to_path_buf());
    }
    pod.egress.upstream_ca = Vec::new();
    for (n, ca) in config.egress.upstream_ca.iter().enumerate() {
        let inside = pod_home.join("upstream-ca").join(format!("{n}.pem"));
        files.put(&format!("upstream-ca-{n}.pem"), read(ca)?, inside.clone());
        pod.egress.upstream_ca.push(inside);
    }
    let pod_gate = gate;
    if let (Some(gate), Some(laptop)) = (pod.gate.as_mut(), config.gate.as_ref()) {
        gate.listen = loopback(&laptop.listen);
        gate.repos = rebase(&laptop.repos)?;
        gate.state_dir = rebase(&laptop.state_dir)?;
        files.put("gate.yaml", pod_gate.yaml.clone(), gate.repos.clone());
        for (key, content, place) in &pod_gate.keys {
            files.put(key, content.clone(), place.clone());
        }
    }
    if let (Some(supervise), Some(laptop)) = (pod.supervise.as_mut(), config.supervise.as_ref()) {
        supervise.listen = loopback(&laptop.listen);
        // The queue is in the pod: the relay reaches it on the operator port, which is not
        // a sidecar port (the pod's packet filter refuses it to the agent's uid).
        if let Some(token) = operator_token {
            pod.operator = Some(OperatorSidecar {
                listen: Listen::Tcp(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    backend::kubernetes::OPERATOR_PORT,
                ))),
                token_env: ::bundle::operator::TOKEN_ENV.to_owned(),
            });
            let key = crate::kube_relay::TOKEN_KEY.to_owned();
            files.files.insert(key.clone(), token.as_bytes().to_vec());
            files
                .tokens
                .insert(::bundle::operator::TOKEN_ENV.to_owned(), key);
        }
    }
    for (var, value) in tokens {
        if !is_env_name(var) {
            return Err(LaunchError::Invalid(format!(
                "token variable `{var}` is not a variable name; fix the manifest's `token_env`"
            )));
        }
        let key = token_key(var);
        files.files.insert(key.clone(), value.clone().into_bytes());
        files.tokens.insert(var.clone(), key);
    }
    let config_inside = pod_home
        .join("state")
        .join(&config.identity)
        .join("sidecar.json");
    let json = serde_json::to_vec_pretty(&pod).context("cannot encode the pod's sidecar config")?;
    files.put("sidecar.json", json, config_inside);
    Ok((pod, files))
}

/// The git gate's config as the pod's bundle reads it: deploy key files shipped in the
/// Secret (key `key-<repo>`) and the config pointing at their place in the pod.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodGate {
    /// `gate.yaml` for the pod.
    pub yaml: Vec<u8>,
    /// (Secret key, content, place in the sidecar) per deploy key.
    pub keys: Vec<(String, Vec<u8>, PathBuf)>,
}

/// The gate of `launch` for a pod; `read_keys` false leaves the keys' contents empty (the
/// checks before any state exists, `--dry-run`).
fn pod_gate(launch: &Launch, read_keys: bool) -> Result<PodGate, LaunchError> {
    let mut spec = crate::spec::gate_spec(&launch.agent.bottle.git_gate);
    let checked = gitgate::GateConfig::from_spec(&gitgate::GateSpec {
        user: None,
        ..spec.clone()
    })
    .context("the bottle's `git-gate` block is invalid")?;
    let mut gate = PodGate::default();
    for (name, repo) in &checked.repos {
        if repo.upstream == gitgate::Upstream::Local {
            return Err(LaunchError::Invalid(format!(
                "repository `{name}` has a local upstream ({}), which is not on the cluster; give it a remote URL (ssh://...) or use another backend",
                repo.url
            )));
        }
        if let Some(gitgate::KeySource::Static { path }) = &repo.key {
            let key = format!("key-{name}");
            if !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(LaunchError::Invalid(format!(
                    "repository name `{name}` cannot name a Kubernetes Secret key; use letters, digits, `-`, `_` and `.`"
                )));
            }
            if !path.is_file() {
                return Err(LaunchError::Invalid(format!(
                    "the deploy key {} of repository `{name}` does not exist; fix `git-gate.repos.{name}.key.path`",
                    path.display()
                )));
            }
            let place = Path::new(POD_HOME).join("keys").join(name);
            let content = if read_keys {
                std::fs::read(path)
                    .with_context(|| format!("cannot read the deploy key {}", path.display()))?
            } else {
                Vec::new()
            };
            gate.keys.push((key, content, place.clone()));
            if let Some(repo) = spec.repos.as_mut().and_then(|r| r.get_mut(name)) {
                repo.key = Some(gitgate::KeySpec::Static {
                    path: place.display().to_string(),
                });
            }
        }
    }
    gate.yaml = serde_saphyr::to_string(&spec)
        .context("cannot encode the `git-gate` block")?
        .into_bytes();
    Ok(gate)
}

/// The Secret's keys and the sidecar's script of `launch` as `start` makes them, with every
/// value empty: what `start --dry-run` shows (no CA, no token, no key file read).
pub fn planned_files(
    launch: &Launch,
    identity: &str,
    token_vars: &[String],
) -> Result<(PodFiles, PathBuf), LaunchError> {
    refuse_laptop_only(launch)?;
    let paths = Home::new(POD_HOME).bottle(identity);
    let mut files = PodFiles::default();
    files.put("routes.yaml", Vec::new(), paths.routes_file());
    if let Some(dir) = paths.egress_log().parent() {
        files.dirs.insert(dir.to_path_buf());
    }
    for name in ["ca.pem", "ca-key.pem"] {
        files.put(name, Vec::new(), paths.ca_dir().join(name));
    }
    for (n, _) in launch.agent.bottle.egress.upstream_ca.iter().enumerate() {
        let inside = Path::new(POD_HOME)
            .join("upstream-ca")
            .join(format!("{n}.pem"));
        files.put(&format!("upstream-ca-{n}.pem"), Vec::new(), inside);
    }
    if !launch.agent.bottle.git_gate.repos.is_empty() {
        files.put("gate.yaml", Vec::new(), paths.gate_config());
        for (key, _, place) in pod_gate(launch, false)?.keys {
            files.put(&key, Vec::new(), place);
        }
    }
    for var in token_vars {
        if is_env_name(var) {
            files.files.insert(token_key(var), Vec::new());
            files.tokens.insert(var.clone(), token_key(var));
        }
    }
    if launch.agent.bottle.supervise {
        let key = crate::kube_relay::TOKEN_KEY.to_owned();
        files.files.insert(key.clone(), Vec::new());
        files
            .tokens
            .insert(::bundle::operator::TOKEN_ENV.to_owned(), key);
    }
    let config = paths.sidecar_config();
    files.put("sidecar.json", Vec::new(), config.clone());
    Ok((files, config))
}

/// What only a laptop has, refused with the reason before anything is created.
fn refuse_laptop_only(launch: &Launch) -> Result<(), LaunchError> {
    if launch.codex_login.is_some() {
        return Err(LaunchError::Invalid(
            "--forward-codex-auth is not supported on the kubernetes backend: the login would travel in the bottle's ConfigMap; leave the flag off (the bottle uses OPENAI_API_KEY through egress)".into(),
        ));
    }
    pod_gate(launch, false).map(drop)
}

/// The image name the cluster pulls for a locally tagged image source.
fn image_ref(settings: &ClusterSettings, source: &ImageSource) -> Result<String, LaunchError> {
    let hash = source
        .input_hash()
        .map_err(|e| LaunchError::Invalid(format!("cannot hash the image's inputs: {e}")))?;
    Ok(settings.image_ref(&source.tag(&hash)))
}

/// The sender of a claimed warm pod's config: `bundle::intake` over the port-forward, with
/// a new intake token for this launch. The token stays in the send closure (it is written
/// on the connection only); the backend is given its hash, which the claim sets as the
/// pod's annotation, and `bundle::intake`'s retry bound and never-claimed error.
pub(crate) fn warm_sender() -> backend::kubernetes::WarmSender {
    use backend::kubernetes::{PortStream, WarmSendError, WarmSending};
    use bundle::intake::{IntakeError, IntakeToken};
    let token = Arc::new(IntakeToken::random());
    let intake_sha256 = token.annotation_value();
    backend::kubernetes::WarmSender {
        send: Arc::new(
            move |mut stream: PortStream, files: BTreeMap<String, Vec<u8>>| -> WarmSending {
                let token = token.clone();
                Box::pin(async move {
                    match bundle::intake::send_async(&mut stream, &token, &files).await {
                        Ok(()) => Ok(()),
                        Err(IntakeError::NotClaimedYet) => Err(WarmSendError::NotClaimedYet),
                        Err(e) => Err(WarmSendError::Failed(e.to_string())),
                    }
                })
            },
        ),
        intake_sha256,
        claim_wait: bundle::intake::CLAIM_WAIT,
        never_claimed: Arc::new(|pod: &str, waited: std::time::Duration| {
            IntakeError::NeverClaimed {
                pod: pod.to_owned(),
                waited,
            }
            .to_string()
        }),
    }
}

/// Builds the pod's config and files, creates the pod and attaches to the agent.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    home: &Home,
    paths: &BottlePaths,
    launch: &Launch,
    sidecar_env: &[String],
    config: &SidecarConfig,
    spec: &LaunchSpec,
    options: &Options,
) -> Result<Box<dyn backend::RunningBottle>, LaunchError> {
    refuse_laptop_only(launch)?;
    let settings = settings(launch);
    settings.validate().map_err(LaunchError::Invalid)?;
    let tokens: Vec<(String, String)> = sidecar_env
        .iter()
        .filter_map(|k| options.env.var(k).map(|v| (k.clone(), v)))
        .collect();
    let gate = pod_gate(launch, true)?;
    // Made here, shipped in the Secret, kept in this process's memory for the relay.
    let operator_token = config
        .supervise
        .is_some()
        .then(crate::kube_relay::new_token);
    let (pod_config, files) = pod_config(
        home.root(),
        config,
        &gate,
        &tokens,
        operator_token.as_deref(),
    )?;
    let base = options
        .env
        .var("BOT_BOTTLE_DOCKER_BASE")
        .filter(|v| !v.trim().is_empty());
    let agent_image = image_ref(
        &settings,
        &super::docker::agent_image(launch, paths, base.as_deref(), &options.env)?,
    )?;
    let sidecar_image = image_ref(&settings, &ImageSource::sidecar(base.as_deref()))?;
    let config_inside = files
        .places
        .get("sidecar.json")
        .cloned()
        .unwrap_or_default();
    let mut env = BTreeMap::from([
        (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ),
        ("HOME".to_owned(), "/tmp".to_owned()),
    ]);
    for name in ["BOT_BOTTLE_LOG", "RUST_LOG", "TZ", "LANG"] {
        if let Some(value) = options.env.var(name) {
            env.insert(name.to_owned(), value);
        }
    }
    // Where the pod is, for a `bot-bottle stop` from another terminal. A home claim an
    // earlier run made must still be there (`resume`): the record says so, and one that
    // does not say (an older binary's, or unreadable) is kept as it is until a launch
    // finds the claim, so that a refused `resume` refuses again.
    let state_dir = home.state_dir(&spec.identity);
    let kept_home = match settings.home_size {
        Some(_) => backend::kubernetes::PodRecord::home_claim_state(&state_dir),
        None => HomeClaimState::NotMade,
    };
    let mut record = backend::kubernetes::PodRecord {
        context: settings.context.clone(),
        namespace: settings.namespace.clone(),
        home_claim: settings
            .home_size
            .is_some()
            .then(|| backend::kubernetes::objects::home_claim_name(&spec.identity)),
        home_made: None,
        // Written once the launch checked the pod and got the agent running in it; until
        // then the operator's side (a relay, `stop`) reaches no pod of the bottle's name.
        pod_uid: None,
        pod_name: None,
        claim: None,
        claim_uid: None,
        sandbox_uid: None,
    };
    // A claim made earlier: said. One this launch may make: not said until the launch ends,
    // so that a launcher killed once the agent runs on it leaves a record that fails closed
    // (`HomeClaimState::Unknown`); a launch that fails says none was made.
    if record.home_claim.is_some() && kept_home == HomeClaimState::Made {
        record.home_made = Some(true);
    }
    if kept_home != HomeClaimState::Unknown {
        record.write(&state_dir)?;
    }
    let mut kube = KubernetesConfig::new(settings, agent_image);
    kube.kept_home = kept_home;
    kube.sidecar = Some(KubeSidecar {
        image: sidecar_image,
        argv: vec!["/bin/sh".into(), "-c".into(), files.script(&config_inside)],
        warm_script: Some(files.warm_script(&config_inside)),
        env,
        ready_check: Some(vec![
            POD_EXE.into(),
            "sidecar".into(),
            "--config".into(),
            config_inside.display().to_string(),
            "--check".into(),
        ]),
        files: files.files,
    });
    kube.clones = crate::pod::clones(&launch.agent.bottle);
    kube.termination_grace = termination_grace();
    // Warm pools: a claimed pod's config goes through the port-forward to its intake.
    kube.warm_send = Some(warm_sender());
    debug_assert_eq!(pod_config.identity, spec.identity);
    let backend = Arc::new(
        match &options.cluster {
            Some(cluster) => KubernetesBackend::with_cluster(kube, cluster.clone())?,
            None => KubernetesBackend::new(kube)?,
        }
        // Its home claim carries this home's mark, for `cleanup`.
        .with_home(home.root().to_path_buf()),
    );
    let launched = backend
        .prepare(spec)
        .and_then(|()| backend.launch_pod(spec, BottleStdio::inherit()));
    let running = match launched {
        Ok(running) => running,
        Err(e) => {
            if record.home_claim.is_some() && kept_home == HomeClaimState::NotMade {
                // The failed launch removed the claim it made, or made none (one it could
                // not remove is found and mounted by the next run). Unwritten, the record
                // keeps saying nothing, which fails closed.
                record.home_made = Some(false);
                if let Err(w) = record.write(&state_dir) {
                    tracing::warn!(identity = %spec.identity, error = %w, "the bottle's record does not say its home claim was never made; a resume without the claim will refuse");
                }
            }
            return Err(e.into());
        }
    };
    if record.home_claim.is_some() && record.home_made != Some(true) {
        // The claim exists now: a `resume` that does not find it says so.
        record.home_made = Some(true);
    }
    // The pod the launch checked: the relay's port-forwards and `stop` reach that one and
    // no pod made again under the bottle's name (a `resume` records its new pod).
    record.pod_uid = Some(running.pod_uid().to_owned());
    // A warm pod is `<pool>-<suffix>` and goes with its claim.
    record.claim = running.claim().map(str::to_owned);
    // The Sandbox and the claim as the launch made or took them: `stop` deletes those and
    // none made again under their names.
    record.claim_uid = running.claim_uid().map(str::to_owned);
    record.sandbox_uid = running.sandbox_uid().map(str::to_owned);
    record.pod_name = record
        .claim
        .is_some()
        .then(|| running.pod_name().to_owned());
    record.write(&state_dir)?;
    options.report.line(running.start_note());
    super::agent_started(paths, options.report.as_ref());
    Ok(match operator_token {
        Some(token) => Box::new(Relayed {
            relay: crate::kube_relay::Relay::start(
                backend,
                home.clone(),
                spec.identity.clone(),
                token,
            ),
            inner: running,
        }),
        None => Box::new(running),
    })
}

/// A cluster bottle whose proposals are relayed to the laptop while it runs, and whose
/// pod's last audit lines are taken between the agent's end and the pod's removal.
struct Relayed {
    inner: backend::kubernetes::KubeBottle,
    relay: crate::kube_relay::Relay,
}

impl backend::RunningBottle for Relayed {
    fn identity(&self) -> &str {
        self.inner.identity()
    }
    fn take_stdin(&mut self) -> Option<Box<dyn std::io::Write + Send>> {
        self.inner.take_stdin()
    }
    fn take_stdout(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.inner.take_stdout()
    }
    fn take_stderr(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.inner.take_stderr()
    }
    fn wait(&mut self) -> Result<backend::BottleExit, backend::BackendError> {
        let ended = self.inner.wait_agent();
        match &ended {
            // The agent ended and the pod is still there: its bundle's last lines first.
            Ok(Some(_)) => {
                if let Err(e) = self.relay.finish(crate::kube_relay::FINISH_WITHIN) {
                    tracing::warn!(identity = %self.inner.identity(), error = %e, "the pod's last audit lines may be missing from this machine's audit log; `kubectl logs` of its sidecar container shows what the bundle did");
                }
            }
            // Deleted under us, or failed: nothing more to take.
            _ => self.relay.stop(),
        }
        let exit = ended?.unwrap_or(backend::BottleExit { code: 137 });
        self.inner.remove()?;
        Ok(exit)
    }
    fn terminate(&mut self) -> Result<(), backend::BackendError> {
        self.inner.terminate()
    }
    fn kill(&mut self) -> Result<(), backend::BackendError> {
        self.relay.stop();
        self.inner.kill()
    }
}

/// The backend `start` keeps for stopping the bottle: the manifest's cluster settings (a
/// namespace other than the context's is where the pod is), over the tests' cluster if any.
pub(super) fn open(
    home: &Home,
    launch: &Launch,
    options: &Options,
) -> Result<Arc<dyn Backend>, LaunchError> {
    // Said before any state is made.
    refuse_laptop_only(launch)?;
    let config = KubernetesConfig::new(settings(launch), String::new());
    let backend = match &options.cluster {
        Some(cluster) => KubernetesBackend::with_cluster(config, cluster.clone())?,
        None => KubernetesBackend::new(config)?,
    };
    // `stop` and `discard` find the bottle's recorded cluster through the home.
    Ok(Arc::new(backend.with_home(home.root().to_path_buf())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn the_script_copies_each_file_reads_the_tokens_and_runs_the_bundle() {
        let mut files = PodFiles::default();
        files.put(
            "ca.pem",
            b"cert".to_vec(),
            PathBuf::from("/tmp/bot-bottle/state/a-1/ca/ca.pem"),
        );
        files.files.insert("token-GH_TOKEN".into(), b"x".to_vec());
        files
            .tokens
            .insert("GH_TOKEN".into(), "token-GH_TOKEN".into());
        assert_eq!(
            files.script(Path::new("/tmp/bot-bottle/state/a-1/sidecar.json")),
            "set -eu\n\
             umask 077\n\
             mkdir -p '/tmp/bot-bottle/state/a-1/ca'\n\
             cp -L '/run/bot-bottle/sidecar/ca.pem' '/tmp/bot-bottle/state/a-1/ca/ca.pem'\n\
             GH_TOKEN=\"$(cat '/run/bot-bottle/sidecar/token-GH_TOKEN')\"; export GH_TOKEN\n\
             exec /usr/local/bin/bot-bottle sidecar --config '/tmp/bot-bottle/state/a-1/sidecar.json'"
        );
    }

    /// The warm script is the cold one with the plan's two flags on its exec line, quoted
    /// the same way; its plan is the file the waiter looks for.
    #[test]
    fn the_warm_script_is_the_cold_one_publishing_the_plan() {
        let mut files = PodFiles::default();
        files.put(
            "ca.pem",
            b"cert".to_vec(),
            PathBuf::from("/tmp/bot-bottle/state/a-1/ca/ca.pem"),
        );
        let config = Path::new("/tmp/bot-bottle/state/a-1/sidecar.json");
        assert_eq!(
            files.warm_script(config),
            format!(
                "{} --plan '/run/bot-bottle/sidecar/plan.sh' --plan-dir '/run/bot-bottle/plan'",
                files.script(config)
            )
        );
        assert_eq!(
            ::bundle::plan::PLAN_FILE,
            backend::kubernetes::warm::PLAN_FILE
        );
    }

    /// A warm pod's sidecar and agent, played here with real parts and the pod's paths
    /// standing elsewhere: the agent's waiter ([`warm::WAITER`] in a real `sh`) waits; the
    /// sidecar takes the launcher's send once (`bundle::intake`: the bundle's files as the
    /// cold pod's Secret has them, `start.sh` = the warm script, `plan.sh`); `start.sh` runs
    /// under a real `sh` and copies everything into the pod's home; the bundle it would
    /// exec runs here on what the script hands it (its argv and environment), becomes
    /// ready and publishes the plan; the waiter runs the plan, which waits for its start
    /// line and then runs the agent's command.
    #[test]
    fn a_warm_pods_sidecar_takes_its_files_then_the_bundle_releases_the_agents_plan() {
        use backend::kubernetes::{objects, warm};
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // The laptop's home: the bottle's state as `start` prepares it.
        let laptop = root.join("laptop");
        let identity = "demo-0a1b2";
        let state = laptop.join("state").join(identity);
        egress::ca::CertificateAuthority::load_or_create(&state.join("ca")).unwrap();
        std::fs::create_dir_all(state.join("live-config")).unwrap();
        std::fs::write(
            state.join("live-config/routes.yaml"),
            "routes:\n  - host: api.example\n",
        )
        .unwrap();
        let egress_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let laptop_config = SidecarConfig {
            identity: identity.into(),
            home: laptop.clone(),
            egress: ::bundle::EgressSidecar {
                listen: Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], egress_port))),
                routes: state.join("live-config/routes.yaml"),
                ca_dir: state.join("ca"),
                upstream_ca: Vec::new(),
                log: state.join("logs/egress.jsonl"),
            },
            gate: None,
            supervise: None,
            tokens: vec!["GH_TOKEN".into()],
            operator: None,
        };
        let tokens = vec![("GH_TOKEN".to_owned(), "not-a-real-token 'q'".to_owned())];
        let (_, files) =
            pod_config(&laptop, &laptop_config, &PodGate::default(), &tokens, None).unwrap();
        let config_inside = Path::new(POD_HOME)
            .join("state")
            .join(identity)
            .join("sidecar.json");

        // The pod's volumes, here.
        let sidecar_dir = root.join("sidecar");
        let plan_dir = root.join("plan");
        let pod_home = root.join("pod");
        let workdir = root.join("work");
        for d in [&sidecar_dir, &plan_dir, &workdir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let here = |text: &str| {
            text.replace(POD_HOME, pod_home.to_str().unwrap())
                .replace(objects::SIDECAR_DIR, sidecar_dir.to_str().unwrap())
                .replace(objects::PLAN_DIR, plan_dir.to_str().unwrap())
        };

        // The agent container: its waiter, before anything is sent.
        let mut agent = std::process::Command::new("/bin/sh")
            .args(["-c", warm::WAITER, "agent"])
            .arg(&plan_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();

        // The sidecar container's first step: intake on loopback; the launcher's send.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let intake_addr = listener.local_addr().unwrap();
        let into = sidecar_dir.clone();
        // The pod as claimed: its annotations file (the downward API's) holds the token's hash.
        let token = ::bundle::intake::IntakeToken::random();
        let annotations = root.join(objects::ANNOTATIONS_FILE);
        std::fs::write(
            &annotations,
            format!(
                "{}=\"{}\"",
                objects::INTAKE_TOKEN_ANNOTATION,
                token.annotation_value()
            ),
        )
        .unwrap();
        let intake =
            std::thread::spawn(move || ::bundle::intake::receive(listener, &into, &annotations));
        // The bundle's start replaced by printing its argv and environment.
        let script = here(&files.warm_script(&config_inside)).replace(
            &format!("exec {POD_EXE} sidecar"),
            "env; exec printf 'arg=%s\\n' sidecar",
        );
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "printf '%s' \"$GREETING\" > greeted; printf '%s|' \"$0\" \"$@\" > args".to_owned(),
            "agent".to_owned(),
            "a b".to_owned(),
        ];
        let env = BTreeMap::from([
            ("GREETING".to_owned(), "it's $HOME".to_owned()),
            ("PATH".to_owned(), std::env::var("PATH").unwrap()),
        ]);
        let plan = warm::plan_script(&argv, &env, workdir.to_str().unwrap(), &[]).unwrap();
        let mut sent = files.files.clone();
        sent.insert(objects::START_SCRIPT.to_owned(), script.into_bytes());
        sent.insert(warm::PLAN_FILE.to_owned(), plan.clone().into_bytes());
        let mut stream = std::net::TcpStream::connect(intake_addr).unwrap();
        ::bundle::intake::send(&mut stream, &token, &sent).unwrap();
        intake.join().unwrap().unwrap();
        // The port is closed: nobody sends a second config.
        assert!(std::net::TcpStream::connect(intake_addr).is_err());

        // `exec /bin/sh /run/bot-bottle/sidecar/start.sh`.
        let out = std::process::Command::new("/bin/sh")
            .arg(sidecar_dir.join(objects::START_SCRIPT))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let args: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("arg="))
            .collect();
        let env: BTreeMap<String, String> = stdout
            .lines()
            .filter(|l| !l.starts_with("arg="))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(env["GH_TOKEN"], "not-a-real-token 'q'");
        let config_here = here(config_inside.to_str().unwrap());
        let plan_file = sidecar_dir.join(warm::PLAN_FILE);
        assert_eq!(
            args,
            [
                "sidecar",
                "--config",
                config_here.as_str(),
                "--plan",
                plan_file.to_str().unwrap(),
                "--plan-dir",
                plan_dir.to_str().unwrap(),
            ]
        );
        // Nothing published yet: the agent still waits.
        assert_eq!(std::fs::read_dir(&plan_dir).unwrap().count(), 0);
        assert!(agent.try_wait().unwrap().is_none());

        // The bundle, as `bot-bottle sidecar` runs it with those arguments.
        let config: SidecarConfig =
            serde_json::from_str(&here(&std::fs::read_to_string(&config_here).unwrap())).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let publish = ::bundle::Plan {
            file: PathBuf::from(args[4]),
            dir: PathBuf::from(args[6]),
        };
        let bundle = rt.spawn(async move {
            let env = move |k: &str| env.get(k).cloned();
            ::bundle::serve_with_plan(config, &env, Some(publish)).await
        });
        let published = plan_dir.join(warm::PLAN_FILE);
        test_support::eventually("the plan published", || {
            assert!(!bundle.is_finished(), "the bundle stopped");
            published.exists().then_some(())
        });
        // Published only with egress listening, byte for byte the plan sent.
        std::net::TcpStream::connect(("127.0.0.1", egress_port)).unwrap();
        assert_eq!(std::fs::read_to_string(&published).unwrap(), plan);

        // The launcher's start line: the agent runs its command, as the plan says.
        agent.stdin.take().unwrap().write_all(b"\n").unwrap();
        let out = agent.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("greeted")).unwrap(),
            "it's $HOME"
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("args")).unwrap(),
            "agent|a b|"
        );
        bundle.abort();
    }

    #[test]
    fn variable_names_only() {
        assert!(is_env_name("ANTHROPIC_API_KEY"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A;rm -rf /"));
        assert!(!is_env_name(""));
    }

    /// A whole `start` against the in-memory cluster: the launcher's state, the pod's files
    /// in the Secret, the agent attached and released, its exit code, the teardown.
    mod start {
        use super::*;
        use backend::kubernetes::fake::{self, FakeCluster};
        use backend::kubernetes::{Cluster, objects};
        use pretty_assertions::assert_eq;
        use std::time::Duration;
        use test_support::eventually;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const TOKEN: &str = "sk-ant-oat01-not-a-real-token-4242";
        const DEPLOY_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n";

        struct World {
            tmp: tempfile::TempDir,
            home: Home,
            report: Arc<crate::Recorded>,
            cluster: Arc<FakeCluster>,
        }

        fn world() -> World {
            let tmp = tempfile::tempdir().unwrap();
            let key = tmp.path().join("deploy_key");
            std::fs::write(&key, DEPLOY_KEY).unwrap();
            std::fs::write(
                tmp.path().join("bot-bottle.yaml"),
                format!(
                    "bottles:\n  dev:\n    agent_provider: claude\n    supervise: true\n    git-gate:\n      user: {{name: Bot, email: bot@example.com}}\n      repos:\n        app:\n          url: ssh://git@git.example/org/app.git\n          key: {{provider: static, path: {}}}\n          host_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n    egress:\n      routes:\n        - host: api.anthropic.com\n          auth_scheme: Bearer\n          token_env: BOT_BOTTLE_CLAUDE_OAUTH_TOKEN\n    kubernetes:\n      namespace: agents\n      registry: registry.example/team\nagents:\n  demo:\n    bottle: dev\n",
                    key.display()
                ),
            )
            .unwrap();
            World {
                home: Home::new(tmp.path().join("h")),
                tmp,
                report: Arc::new(crate::Recorded::default()),
                cluster: Arc::new(FakeCluster::new()),
            }
        }

        impl World {
            fn options(&self) -> Options {
                Options {
                    exe: PathBuf::from("/nonexistent/bot-bottle"),
                    interactive: false,
                    env: crate::HostEnv::map([("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN", TOKEN)]),
                    report: self.report.clone(),
                    cluster: Some(self.cluster.clone() as Arc<dyn Cluster>),
                }
            }

            fn launch(&self, command: &[&str]) -> Launch {
                let manifest =
                    manifest::Manifest::load(self.tmp.path().join("bot-bottle.yaml")).unwrap();
                Launch {
                    agent: manifest.agent("demo").unwrap(),
                    backend: backend::BackendKind::Kubernetes,
                    cwd: self.tmp.path().to_path_buf(),
                    copy_cwd: false,
                    command: command.iter().map(|s| s.to_string()).collect(),
                    manifest: None,
                    codex_login: None,
                }
            }
        }

        /// Plays the agent container: the start line, one line of output, then the end.
        fn agent(cluster: Arc<FakeCluster>, code: i32) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let name = loop {
                        if let Some(name) = cluster
                            .calls()
                            .iter()
                            .find_map(|c| c.strip_prefix("attach pod ").map(str::to_owned))
                        {
                            break name.split(' ').next().unwrap().to_owned();
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    };
                    let mut ends = cluster
                        .attached(&name, Duration::from_secs(20))
                        .await
                        .unwrap();
                    let mut first = [0u8; 1];
                    ends.stdin.read_exact(&mut first).await.unwrap();
                    assert_eq!(&first, objects::START_LINE);
                    ends.stdout.write_all(b"agent ran\n").await.unwrap();
                    drop(ends);
                    cluster.set_status(&name, fake::agent_ended(code));
                    name
                })
            })
        }

        fn config_inside_of(identity: &str) -> PathBuf {
            Home::new(POD_HOME).bottle(identity).sidecar_config()
        }

        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }

        #[test]
        fn start_ships_the_bundle_in_the_secret_runs_the_agent_and_tears_it_down() {
            let w = world();
            w.cluster.kubelet(vec![
                fake::starting(),
                fake::sidecar_started(),
                fake::agent_running(),
            ]);
            let player = agent(w.cluster.clone(), 0);
            let running =
                crate::launch(&w.home, w.launch(&["sh", "-c", "echo hi"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            let name = objects::object_name(&identity);

            // The pod, as created: the manifest's registry, the gate's clone, the wrapper.
            let pod = w.cluster.pod(&name).unwrap();
            let spec = pod.spec.clone().unwrap();
            let agent = &spec.containers[0];
            assert!(
                agent
                    .image
                    .as_deref()
                    .unwrap()
                    .starts_with("registry.example/team/bot-bottle/agent-claude:"),
                "{agent:?}"
            );
            assert_eq!(
                agent.command.as_ref().unwrap()[4..].to_vec(),
                vec!["sh", "-c", "echo hi"]
            );
            assert_eq!(
                agent.working_dir.as_deref(),
                Some(crate::pod::POD_WORKSPACE)
            );
            let sidecar = spec
                .init_containers
                .iter()
                .flatten()
                .find(|c| c.name == "sidecar")
                .unwrap();
            assert!(
                sidecar
                    .image
                    .as_deref()
                    .unwrap()
                    .starts_with("registry.example/team/bot-bottle/sidecar:")
            );
            let script = sidecar.args.as_ref().unwrap()[2].clone();
            assert!(
                script.contains("export BOT_BOTTLE_CLAUDE_OAUTH_TOKEN"),
                "{script}"
            );

            // The Secret: the bundle's files, the token and the deploy key; the pod's
            // config listens on loopback only, with the pod's paths, each one shipped.
            let secret = w.cluster.secret(&name).unwrap();
            let data = secret.data.clone().unwrap();
            let keys: Vec<&str> = data.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                vec![
                    "ca-key.pem",
                    "ca.pem",
                    "gate.yaml",
                    "key-app",
                    "operator-token",
                    "routes.yaml",
                    "sidecar.json",
                    "token-BOT_BOTTLE_CLAUDE_OAUTH_TOKEN",
                ]
            );
            assert_eq!(
                data["token-BOT_BOTTLE_CLAUDE_OAUTH_TOKEN"].0,
                TOKEN.as_bytes()
            );
            assert_eq!(data["key-app"].0, DEPLOY_KEY.as_bytes());
            let config: SidecarConfig = serde_json::from_slice(&data["sidecar.json"].0).unwrap();
            let loopback = |l: &Listen| match l {
                Listen::Tcp(addr) => addr.ip().is_loopback(),
                Listen::Unix(_) => false,
            };
            assert!(loopback(&config.egress.listen));
            assert!(loopback(&config.gate.as_ref().unwrap().listen));
            assert!(loopback(&config.supervise.as_ref().unwrap().listen));
            assert_eq!(config.home, Path::new(POD_HOME));
            for path in [
                &config.egress.routes,
                &config.egress.ca_dir.join("ca-key.pem"),
                &config.gate.as_ref().unwrap().repos,
            ] {
                assert!(path.starts_with(POD_HOME), "{}", path.display());
                assert!(
                    script.contains(&format!("'{}'", path.display())),
                    "{} is not copied into place: {script}",
                    path.display()
                );
            }
            // `start --dry-run` shows the same keys and the same script.
            let (planned, _) = planned_files(
                &w.launch(&["sh", "-c", "echo hi"]),
                &identity,
                &["BOT_BOTTLE_CLAUDE_OAUTH_TOKEN".to_owned()],
            )
            .unwrap();
            let planned_keys: Vec<&str> = planned.files.keys().map(String::as_str).collect();
            assert_eq!(planned_keys, keys);
            assert_eq!(planned.script(&config_inside_of(&identity)), script);
            let gate_yaml = String::from_utf8(data["gate.yaml"].0.clone()).unwrap();
            assert!(
                gate_yaml.contains("/tmp/bot-bottle/keys/app"),
                "{gate_yaml}"
            );
            assert!(
                !gate_yaml.contains(&w.tmp.path().display().to_string()),
                "{gate_yaml}"
            );

            // The token is in the Secret alone: not in the pod, not in the ConfigMap, not on
            // the operator's disk.
            let pod_json = serde_json::to_string(&pod).unwrap();
            assert!(!pod_json.contains(TOKEN));
            let cm = serde_json::to_string(&w.cluster.config_map(&name).unwrap()).unwrap();
            assert!(!cm.contains(TOKEN));
            assert!(!cm.contains("not-a-real-key"));
            let mut files = Vec::new();
            walk(w.home.root(), &mut files);
            for file in files {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(TOKEN),
                    "the token is in {}",
                    file.display()
                );
            }

            // `stop` from another terminal finds the pod's namespace.
            assert_eq!(
                backend::kubernetes::PodRecord::read(&w.home.state_dir(&identity))
                    .unwrap()
                    .namespace
                    .as_deref(),
                Some("agents")
            );

            // The agent runs, ends with 0: the pod is deleted and the state removed.
            assert_eq!(running.wait().unwrap(), 0);
            assert_eq!(player.join().unwrap(), name);
            assert_eq!(w.cluster.pod(&name), None);
            assert_eq!(w.cluster.secret(&name), None);
            assert!(!w.home.state_dir(&identity).exists());
        }

        #[test]
        fn a_failing_agent_keeps_the_state_resume_runs_it_again_and_an_image_pull_failure_says_which_image()
         {
            let w = world();
            w.cluster.on_create(fake::agent_running());
            let player = agent(w.cluster.clone(), 3);
            let running = crate::launch(&w.home, w.launch(&["false"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            let record = |w: &World| {
                backend::kubernetes::PodRecord::read(&w.home.state_dir(&identity))
                    .unwrap()
                    .pod_uid
                    .unwrap()
            };
            // The record names the pod the launch checked.
            let first = w
                .cluster
                .pod(&objects::object_name(&identity))
                .unwrap()
                .metadata
                .uid
                .unwrap();
            assert_eq!(record(&w), first);
            assert_eq!(running.wait().unwrap(), 3);
            player.join().unwrap();
            let id = state::Identity::parse(&identity).unwrap();
            assert!(w.home.is_preserved(&id));

            // `resume`: a new pod from the kept state (same CA, same routes), then a clean
            // end removes the state.
            let ca = std::fs::read(w.home.bottle(&id).ca_dir().join("ca.pem")).unwrap();
            let player = agent(w.cluster.clone(), 0);
            let lock = w.home.lock_bottle(&id).unwrap();
            let running =
                crate::resume(&w.home, &id, lock, w.launch(&["true"]), &w.options()).unwrap();
            let name = objects::object_name(&identity);
            let secret = w.cluster.secret(&name).unwrap();
            assert_eq!(secret.data.unwrap()["ca.pem"].0, ca);
            // The resumed bottle's record names its new pod, not the first run's.
            let resumed = w.cluster.pod(&name).unwrap().metadata.uid.unwrap();
            assert_ne!(resumed, first);
            assert_eq!(record(&w), resumed);
            assert_eq!(running.wait().unwrap(), 0);
            player.join().unwrap();
            assert!(!w.home.state_dir(&id).exists());

            let w = world();
            w.cluster.on_create(fake::image_pull_failure());
            let e = crate::launch(&w.home, w.launch(&["true"]), &w.options())
                .unwrap_err()
                .to_string();
            assert!(e.contains("cannot pull image"), "{e}");
            assert!(e.contains("kubernetes.registry"), "{e}");
            let created: Vec<String> = w
                .cluster
                .calls()
                .iter()
                .filter_map(|c| c.strip_prefix("create pod ").map(str::to_owned))
                .collect();
            assert_eq!(created.len(), 1);
            assert_eq!(w.cluster.pod(&created[0]), None);
        }

        /// The world's bottle keeps its agent's home in a claim (`kubernetes.home_size`), and
        /// the cluster's pods run.
        fn keep_home_in_a_claim(w: &World) {
            let manifest = w.tmp.path().join("bot-bottle.yaml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            std::fs::write(
                &manifest,
                text.replace(
                    "      registry: registry.example/team\n",
                    "      registry: registry.example/team\n      home_size: 1Gi\n",
                ),
            )
            .unwrap();
            w.cluster.on_create(fake::agent_running());
        }

        /// `kubernetes.home_size`: a failed run's pod goes, its home stays in the claim;
        /// `resume` mounts that claim (not seeded again); the clean end removes it with the
        /// state. The pod's grace period outlasts the bundle's whole shutdown.
        #[test]
        fn a_kept_home_outlives_a_failed_run_for_resume_and_goes_with_the_clean_end() {
            let w = world();
            keep_home_in_a_claim(&w);
            let player = agent(w.cluster.clone(), 3);
            let running = crate::launch(&w.home, w.launch(&["false"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            let name = objects::object_name(&identity);
            let claim = objects::home_claim_name(&identity);
            let spec = w.cluster.pod(&name).unwrap().spec.unwrap();
            let grace = spec.termination_grace_period_seconds.unwrap();
            assert_eq!(u64::try_from(grace).unwrap(), termination_grace().as_secs());
            assert!(
                termination_grace() > ::bundle::SHUTDOWN_BOUND,
                "{grace} s does not outlast the bundle's shutdown"
            );
            macro_rules! claimed {
                ($spec:expr) => {
                    $spec
                        .volumes
                        .iter()
                        .flatten()
                        .find(|v| v.name == "home")
                        .and_then(|v| v.persistent_volume_claim.clone())
                        .map(|c| c.claim_name)
                };
            }
            assert_eq!(claimed!(spec), Some(claim.clone()));
            assert_eq!(running.wait().unwrap(), 3);
            player.join().unwrap();
            assert_eq!(w.cluster.pod(&name), None);
            assert!(
                w.cluster.claim(&claim).is_some(),
                "the home went with the pod"
            );

            let id = state::Identity::parse(&identity).unwrap();
            let player = agent(w.cluster.clone(), 0);
            let lock = w.home.lock_bottle(&id).unwrap();
            let running =
                crate::resume(&w.home, &id, lock, w.launch(&["true"]), &w.options()).unwrap();
            let spec = w.cluster.pod(&name).unwrap().spec.unwrap();
            assert_eq!(claimed!(spec), Some(claim.clone()));
            assert!(
                !spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == "home"),
                "the kept home is seeded over"
            );
            assert_eq!(running.wait().unwrap(), 0);
            player.join().unwrap();
            assert!(!w.home.state_dir(&id).exists());
            assert_eq!(w.cluster.claim(&claim), None);
            let creates = w
                .cluster
                .calls()
                .iter()
                .filter(|c| c.starts_with("create claim"))
                .count();
            assert_eq!(creates, 1);
        }

        /// With `kubernetes.home_size`: a `resume` whose claim (made by the failed run) is
        /// gone refuses to start on an empty home, naming the bottle, namespace, claim and
        /// what to do, and creates nothing; a clean end whose claim cannot be removed keeps
        /// the bottle's state (what tells `cleanup` where the claim is).
        #[test]
        fn a_resume_without_its_claim_refuses_and_a_clean_end_that_cannot_remove_it_keeps_the_state()
         {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();

            let w = world();
            keep_home_in_a_claim(&w);
            let player = agent(w.cluster.clone(), 3);
            let running = crate::launch(&w.home, w.launch(&["false"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            assert_eq!(running.wait().unwrap(), 3);
            player.join().unwrap();
            let claim = objects::home_claim_name(&identity);
            assert!(rt.block_on(w.cluster.delete_claim(&claim, None)).unwrap());
            let before = w.cluster.calls().len();
            let id = state::Identity::parse(&identity).unwrap();
            let lock = w.home.lock_bottle(&id).unwrap();
            let err = match crate::resume(&w.home, &id, lock, w.launch(&["true"]), &w.options()) {
                Ok(_) => panic!("resumed on an empty home"),
                Err(e) => e.to_string(),
            };
            for part in [
                format!("bottle {identity}'s home claim `{claim}`"),
                format!("namespace `{}`", fake::NAMESPACE),
                "empty home".to_owned(),
                format!("`bot-bottle discard {identity}`"),
            ] {
                assert!(err.contains(&part), "no `{part}` in: {err}");
            }
            let created: Vec<String> = w.cluster.calls()[before..]
                .iter()
                .filter(|c| c.starts_with("create"))
                .cloned()
                .collect();
            assert_eq!(created, Vec::<String>::new());
            assert!(
                w.home.state_dir(&id).exists(),
                "the refused resume lost the state"
            );

            let w = world();
            keep_home_in_a_claim(&w);
            w.cluster.refuse(
                "delete claim",
                "delete persistentvolumeclaims",
                503,
                "ServiceUnavailable",
                "etcdserver: request timed out",
            );
            let player = agent(w.cluster.clone(), 0);
            let running = crate::launch(&w.home, w.launch(&["true"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            assert_eq!(running.wait().unwrap(), 0);
            player.join().unwrap();
            let id = state::Identity::parse(&identity).unwrap();
            assert!(
                w.home.state_dir(&id).exists(),
                "the state went while the claim stays on the cluster"
            );
            assert!(
                w.cluster
                    .claim(&objects::home_claim_name(&identity))
                    .is_some()
            );
        }

        /// A bottle recorded by an older bot-bottle (its record names the home claim but not
        /// whether it was made) whose claim is gone: `resume` cannot tell a first run that
        /// never made it from a home that was lost, so it refuses, naming the bottle, the
        /// namespace, the claim and what to do, creates nothing and keeps the record as it
        /// was (a second try refuses again). So does a record that cannot be read. With the
        /// claim put back, the same record resumes on it, and says from then on that it was
        /// made. A record that says the claim was never made resumes on a new one, and goes on
        /// saying so when that launch fails.
        #[test]
        fn a_resume_whose_record_does_not_say_the_claim_was_made_refuses_without_it() {
            let w = world();
            keep_home_in_a_claim(&w);
            let player = agent(w.cluster.clone(), 3);
            let running = crate::launch(&w.home, w.launch(&["false"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            assert_eq!(running.wait().unwrap(), 3);
            player.join().unwrap();
            let id = state::Identity::parse(&identity).unwrap();
            let claim = objects::home_claim_name(&identity);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let kept = w.cluster.claim(&claim).unwrap();
            assert!(rt.block_on(w.cluster.delete_claim(&claim, None)).unwrap());
            let record = w.home.state_dir(&id).join(backend::kubernetes::RECORD);
            let older =
                format!("{{\"context\":null,\"namespace\":\"agents\",\"home_claim\":\"{claim}\"}}");
            for written in [older.as_str(), older.as_str(), "{\"namespace\":"] {
                std::fs::write(&record, written).unwrap();
                let before = w.cluster.calls().len();
                let lock = w.home.lock_bottle(&id).unwrap();
                let err = match crate::resume(&w.home, &id, lock, w.launch(&["true"]), &w.options())
                {
                    Ok(_) => panic!("resumed on an empty home with record {written}"),
                    Err(e) => e.to_string(),
                };
                for part in [
                    format!("bottle {identity}"),
                    format!("`{claim}`"),
                    format!("namespace `{}`", fake::NAMESPACE),
                    "does not say whether".to_owned(),
                    "empty home".to_owned(),
                    format!("`bot-bottle discard {identity}`"),
                ] {
                    assert!(err.contains(&part), "no `{part}` in: {err}");
                }
                let created: Vec<String> = w.cluster.calls()[before..]
                    .iter()
                    .filter(|c| c.starts_with("create"))
                    .cloned()
                    .collect();
                assert_eq!(created, Vec::<String>::new());
                assert_eq!(std::fs::read_to_string(&record).unwrap(), written);
            }

            // The claim put back (what the error says to do): resumed on it, not seeded over.
            std::fs::write(&record, &older).unwrap();
            w.cluster.insert_claim(kept);
            let player = agent(w.cluster.clone(), 3);
            let lock = w.home.lock_bottle(&id).unwrap();
            let running =
                crate::resume(&w.home, &id, lock, w.launch(&["false"]), &w.options()).unwrap();
            let spec = w
                .cluster
                .pod(&objects::object_name(&identity))
                .unwrap()
                .spec
                .unwrap();
            assert!(
                !spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == "home"),
                "the kept home is seeded over"
            );
            assert_eq!(running.wait().unwrap(), 3);
            player.join().unwrap();
            let state_dir = w.home.state_dir(&id);
            assert_eq!(
                backend::kubernetes::PodRecord::read(&state_dir)
                    .unwrap()
                    .home_made,
                Some(true)
            );
            assert!(rt.block_on(w.cluster.delete_claim(&claim, None)).unwrap());

            // A record that says the claim was never made (a first run that failed before
            // it): resumed on a new claim.
            std::fs::write(
                &record,
                format!(
                    "{{\"context\":null,\"namespace\":\"agents\",\"home_claim\":\"{claim}\",\"home_made\":false}}"
                ),
            )
            .unwrap();
            // One that fails (an image the nodes cannot pull) removes the claim it made and
            // still says so; the next one makes a new claim again.
            w.cluster.on_create(fake::image_pull_failure());
            let lock = w.home.lock_bottle(&id).unwrap();
            assert!(crate::resume(&w.home, &id, lock, w.launch(&["true"]), &w.options()).is_err());
            assert_eq!(w.cluster.claim(&claim), None);
            assert_eq!(
                backend::kubernetes::PodRecord::home_claim_state(&w.home.state_dir(&id)),
                backend::kubernetes::HomeClaimState::NotMade
            );
            w.cluster.on_create(fake::agent_running());
            let player = agent(w.cluster.clone(), 0);
            let lock = w.home.lock_bottle(&id).unwrap();
            let running =
                crate::resume(&w.home, &id, lock, w.launch(&["true"]), &w.options()).unwrap();
            assert!(w.cluster.claim(&claim).is_some());
            assert_eq!(running.wait().unwrap(), 0);
            player.join().unwrap();
            assert!(!w.home.state_dir(&id).exists());
        }

        /// From the moment a launch makes the home claim until the agent has run on it and
        /// `start` has recorded that, the record does not say that no claim was made: a
        /// launcher killed in between (the agent released, writing its home) leaves a record
        /// that refuses a `resume` without the claim. Read while the pod starts (the launch
        /// waits on it), which is what the record says until the launch returns.
        #[test]
        fn while_a_launch_makes_the_claim_the_record_does_not_say_none_was_made() {
            let w = world();
            keep_home_in_a_claim(&w);
            w.cluster.kubelet(vec![fake::starting()]);
            let cluster = w.cluster.clone();
            let home = w.home.clone();
            let player = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let name = eventually("the launch watching its pod", || {
                    let calls = cluster.calls();
                    let made = calls.iter().any(|c| c.starts_with("create claim "));
                    calls
                        .iter()
                        .find_map(|c| c.strip_prefix("watch pod "))
                        .filter(|_| made)
                        .map(|n| n.split(' ').next().unwrap().to_owned())
                });
                let identity = name.strip_prefix("bot-bottle-").unwrap().to_owned();
                let id = state::Identity::parse(&identity).unwrap();
                let said = backend::kubernetes::PodRecord::home_claim_state(&home.state_dir(&id));
                cluster.set_status(&name, fake::agent_running());
                let mut ends = rt
                    .block_on(cluster.attached(&name, Duration::from_secs(20)))
                    .unwrap();
                let mut first = [0u8; 1];
                rt.block_on(ends.stdin.read_exact(&mut first)).unwrap();
                drop(ends);
                cluster.set_status(&name, fake::agent_ended(3));
                said
            });
            let running = crate::launch(&w.home, w.launch(&["false"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            assert_eq!(running.wait().unwrap(), 3);
            assert_eq!(
                player.join().unwrap(),
                backend::kubernetes::HomeClaimState::Unknown
            );
            let id = state::Identity::parse(&identity).unwrap();
            assert_eq!(
                backend::kubernetes::PodRecord::home_claim_state(&w.home.state_dir(&id)),
                backend::kubernetes::HomeClaimState::Made
            );
        }

        /// On a cluster serving agent-sandbox, `start` runs the bottle as a `Sandbox` (the
        /// same pod as its template, the bundle's Secret owned by the Sandbox) and its end
        /// deletes the Sandbox: nothing of the bottle is left, its state goes.
        #[test]
        fn start_on_a_cluster_with_agent_sandbox_runs_a_sandbox_and_deletes_it_at_the_end() {
            let w = world();
            w.cluster.serve_sandboxes("v1beta1");
            w.cluster.on_create(fake::agent_running());
            let player = agent(w.cluster.clone(), 0);
            let running =
                crate::launch(&w.home, w.launch(&["sh", "-c", "echo hi"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            let name = objects::object_name(&identity);
            let sandbox = w.cluster.sandbox(&name).expect("no Sandbox");
            let pod = w.cluster.pod(&name).unwrap();
            assert_eq!(Some(sandbox.spec.pod_template.spec), pod.spec);
            let secret = w.cluster.secret(&name).unwrap();
            assert_eq!(secret.metadata.owner_references.unwrap()[0].kind, "Sandbox");
            assert!(secret.data.unwrap().contains_key("sidecar.json"));
            assert_eq!(running.wait().unwrap(), 0);
            player.join().unwrap();
            assert_eq!(w.cluster.sandbox(&name), None);
            assert_eq!(w.cluster.pod(&name), None);
            assert_eq!(w.cluster.secret(&name), None);
            let id = state::Identity::parse(&identity).unwrap();
            assert!(!w.home.state_dir(&id).exists());
        }

        #[test]
        fn a_forwarded_codex_login_or_a_local_upstream_is_refused_before_anything_exists() {
            let w = world();
            let mut launch = w.launch(&["true"]);
            launch.codex_login = Some(w.tmp.path().join("auth.json"));
            let e = crate::launch(&w.home, launch, &w.options())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--forward-codex-auth is not supported on the kubernetes backend"),
                "{e}"
            );
            assert!(w.cluster.calls().is_empty());
            assert!(w.home.list().unwrap().is_empty());

            // A repository on the laptop's disk is not on the cluster.
            let manifest = w.tmp.path().join("bot-bottle.yaml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            std::fs::write(
                &manifest,
                text.replace("ssh://git@git.example/org/app.git", "/srv/git/app.git"),
            )
            .unwrap();
            let e = crate::launch(&w.home, w.launch(&["true"]), &w.options())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("repository `app` has a local upstream (/srv/git/app.git), which is not on the cluster"),
                "{e}"
            );
            assert!(w.cluster.calls().is_empty());
            assert!(w.home.list().unwrap().is_empty());
        }

        /// A bottle without repositories or route tokens: its bundle runs in this process
        /// without any network (egress reads route tokens from the process's environment).
        const SUPERVISED: &str = "bottles:\n  dev:\n    agent_provider: claude\n    supervise: true\n    egress:\n      routes:\n        - host: api.anthropic.com\n    kubernetes:\n      namespace: agents\n      registry: registry.example/team\nagents:\n  demo:\n    bottle: dev\n";

        fn free_port() -> std::net::SocketAddr {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        }

        /// One MCP call to supervise over TCP; the whole HTTP answer.
        async fn mcp(addr: std::net::SocketAddr, body: String) -> String {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }

        /// The agent of a cluster bottle proposes through its pod's supervise; the proposal
        /// reaches the laptop's queue through the relay (the real kube-rs port-forward over
        /// the fake API server's websocket, to the real bundle's operator port); the
        /// operator approves on the laptop; the pod's bundle applies it and answers the
        /// agent; the laptop's audit log holds the decision and the pod's applied line, and
        /// its chain verifies. A wrong token gets nothing from the same port.
        #[test]
        fn a_cluster_bottles_proposal_is_answered_from_the_laptop_and_applied_in_the_pod() {
            let w = world();
            std::fs::write(w.tmp.path().join("bot-bottle.yaml"), SUPERVISED).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let api = rt.block_on(test_support::kube_api::FakeApiServer::start());
            let through = {
                let _in = rt.enter();
                Arc::new(
                    backend::kubernetes::client::KubeCluster::at_url(&api.url(), fake::NAMESPACE)
                        .unwrap(),
                )
            };
            w.cluster.forward_through(through.clone());
            w.cluster.on_create(fake::agent_running());
            // The agent: attached and released, it runs until the test ends it.
            let (end, ended) = std::sync::mpsc::channel::<()>();
            let cluster = w.cluster.clone();
            let player = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let name = eventually("the attach", || {
                    cluster.calls().iter().find_map(|c| {
                        c.strip_prefix("attach pod ")
                            .map(|n| n.split(' ').next().unwrap().to_owned())
                    })
                });
                let mut ends = rt
                    .block_on(cluster.attached(&name, Duration::from_secs(20)))
                    .unwrap();
                let mut first = [0u8; 1];
                rt.block_on(ends.stdin.read_exact(&mut first)).unwrap();
                ended.recv().unwrap();
                drop(ends);
                cluster.set_status(&name, fake::agent_ended(0));
            });
            let running = crate::launch(&w.home, w.launch(&["true"]), &w.options()).unwrap();
            let identity = running.identity().to_string();
            let name = objects::object_name(&identity);

            // The pod's sidecar container, played here: its real script, run by `sh` with
            // the Secret's directory and the pod's home standing elsewhere, and the bundle's
            // start replaced by printing the environment it would have.
            let secret = w.cluster.secret(&name).unwrap().data.unwrap();
            let token = String::from_utf8(secret[crate::kube_relay::TOKEN_KEY].0.clone()).unwrap();
            assert_eq!(token.len(), 64);
            let secret_dir = w.tmp.path().join("secret");
            std::fs::create_dir_all(&secret_dir).unwrap();
            for (key, value) in &secret {
                std::fs::write(secret_dir.join(key), &value.0).unwrap();
            }
            let pod_home = w.tmp.path().join("pod");
            let rebase = |text: &str| text.replace(POD_HOME, pod_home.to_str().unwrap());
            let sidecar = w
                .cluster
                .pod(&name)
                .unwrap()
                .spec
                .unwrap()
                .init_containers
                .unwrap()
                .into_iter()
                .find(|c| c.name == "sidecar")
                .unwrap();
            let script = rebase(&sidecar.args.unwrap()[2]).replace(
                backend::kubernetes::objects::SIDECAR_DIR,
                secret_dir.to_str().unwrap(),
            );
            let script = script.replace(&format!("exec {POD_EXE} sidecar"), "exec env #");
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let env: BTreeMap<String, String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(env[::bundle::operator::TOKEN_ENV], token);
            let placed = Home::new(&pod_home).bottle(&identity).sidecar_config();
            let mut config: SidecarConfig =
                serde_json::from_str(&rebase(&std::fs::read_to_string(&placed).unwrap())).unwrap();
            let operator = config.operator.clone().unwrap();
            assert_eq!(
                operator.listen,
                Listen::Tcp(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    backend::kubernetes::OPERATOR_PORT
                )))
            );
            // Several tests run at once: the bundle's ports are free ones here, and the fake
            // API server forwards the pod's operator port to this one.
            let (operator_addr, supervise_addr) = (free_port(), free_port());
            config.egress.listen = Listen::Tcp(free_port());
            config.supervise.as_mut().unwrap().listen = Listen::Tcp(supervise_addr);
            config.operator.as_mut().unwrap().listen = Listen::Tcp(operator_addr);
            api.serve_port(
                fake::NAMESPACE,
                &name,
                backend::kubernetes::OPERATOR_PORT,
                operator_addr,
            );
            let routes = config.egress.routes.clone();
            let bundle = rt.spawn(async move {
                let env = move |k: &str| env.get(k).cloned();
                ::bundle::serve_with_env(config, &env).await
            });
            let up = eventually("the bundle's supervise", || {
                if bundle.is_finished() {
                    return Some(false);
                }
                std::net::TcpStream::connect(supervise_addr)
                    .ok()
                    .map(|_| true)
            });
            if !up {
                panic!("the bundle stopped: {:?}", rt.block_on(bundle));
            }

            // The agent asks for a wider route through its pod's supervise.
            let current = std::fs::read_to_string(&routes).unwrap();
            let wider = format!("{current}- host: pypi.org\n");
            let body =
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "egress-allow",
                "arguments": {"routes_yaml": wider, "justification": "install deps"}}})
                .to_string();
            let asked = rt.spawn(mcp(supervise_addr, body));

            // It is in the laptop's queue, where the dashboard and the CLI look.
            let id = eventually("the proposal in the laptop's queue", || {
                let (pending, _) = proposals::queue::pending_all(&w.home, Some(&identity)).unwrap();
                pending.first().map(|e| e.proposal.id.clone())
            });
            // The operator approves on the laptop (what `bot-bottle proposals approve` calls).
            proposals::queue::answer(
                &w.home,
                &id,
                proposals::Decision::Approved,
                None,
                None,
                "operator",
            )
            .unwrap();

            // The pod's bundle applied it and told the agent.
            let answer = rt.block_on(asked).unwrap();
            assert!(answer.contains("approved"), "{answer}");
            assert_eq!(std::fs::read_to_string(&routes).unwrap(), wider);

            // On the laptop: handled, and the audit log has the decision (written here) and
            // the pod's applied line, in one chain that verifies.
            let laptop = proposals::Queue::new(w.home.clone(), &identity).unwrap();
            eventually("the outcome on the laptop", || {
                (laptop.status(&id).unwrap() == Some(proposals::Status::Approved)).then_some(())
            });
            let log = w.home.audit_file("egress", &identity);
            let lines = eventually("the pod's audit line on the laptop", || {
                let lines = proposals::audit::read_file(&log).unwrap_or_default();
                (lines.len() >= 2).then_some(lines)
            });
            let stages: Vec<(u64, Option<&str>, &str)> = lines
                .iter()
                .map(|l| (l.seq, l.stage.as_deref(), l.proposal_id.as_str()))
                .collect();
            assert_eq!(
                stages,
                vec![
                    (1, Some("decided"), id.as_str()),
                    (2, Some("applied"), id.as_str())
                ]
            );
            assert_eq!(proposals::audit::verify(&w.home).unwrap(), (vec![], 1));

            // A connection with another token gets a refusal and nothing else.
            let refused = rt.block_on(async {
                let stream = through
                    .port_forward(&name, backend::kubernetes::OPERATOR_PORT)
                    .await
                    .unwrap();
                let (read, mut write) = tokio::io::split(stream);
                let mut read = tokio::io::BufReader::new(read);
                ::bundle::operator::write_line(
                    &mut write,
                    &::bundle::operator::Hello {
                        token: crate::kube_relay::new_token(),
                    },
                )
                .await
                .unwrap();
                let line = ::bundle::operator::read_line(&mut read)
                    .await
                    .unwrap()
                    .unwrap();
                let more = ::bundle::operator::read_line(&mut read).await.unwrap();
                (
                    serde_json::from_slice::<::bundle::operator::Welcome>(&line).unwrap(),
                    more,
                )
            });
            assert_eq!(refused.0.identity, None);
            assert!(
                refused
                    .0
                    .error
                    .unwrap()
                    .contains("the operator token is wrong")
            );
            assert_eq!(refused.1, None);

            // The token is in the Secret alone: not in the pod, not in the ConfigMap, not
            // on the operator's disk.
            let pod_json = serde_json::to_string(&w.cluster.pod(&name).unwrap()).unwrap();
            assert!(!pod_json.contains(&token));
            let cm = serde_json::to_string(&w.cluster.config_map(&name).unwrap()).unwrap();
            assert!(!cm.contains(&token));
            let mut files = Vec::new();
            walk(w.home.root(), &mut files);
            for file in files {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(&token),
                    "the operator token is in {}",
                    file.display()
                );
            }

            // The pod's last audit line: a DLP hit written just before the agent ends (egress
            // audits a hit as it judges the agent's last request). It reaches the laptop
            // although the next round would have come after the agent's end: `start` makes a
            // last round between the agent's end and the pod's removal, in which the bundle
            // stops its sidecars, writes out what they queued and answers with everything.
            let hit = proposals::dlp::Hit {
                time: "2026-12-06T09:00:00Z".into(),
                method: "POST".into(),
                host: "api.anthropic.com".into(),
                path: Some("/v1/messages".into()),
                rule: "credential".into(),
                place: "body".into(),
                action: "blocked".into(),
            };
            proposals::audit::append(&Home::new(&pod_home), hit.audit_entry(&identity)).unwrap();
            end.send(()).unwrap();
            assert_eq!(running.wait().unwrap(), 0);
            let lines = proposals::audit::read_file(&log).unwrap();
            let stages: Vec<Option<&str>> = lines.iter().map(|l| l.stage.as_deref()).collect();
            assert_eq!(
                stages,
                vec![
                    Some("decided"),
                    Some("applied"),
                    Some(proposals::dlp::Hit::STAGE)
                ]
            );
            assert_eq!(proposals::audit::verify(&w.home).unwrap(), (vec![], 1));
            // The pod is removed only after that round.
            let calls = w.cluster.calls();
            let last_forward = calls
                .iter()
                .rposition(|c| c.starts_with("portforward "))
                .unwrap();
            let removal = calls
                .iter()
                .rposition(|c| c.starts_with(&format!("delete pod {name}")))
                .unwrap();
            assert!(last_forward < removal, "{calls:?}");
            // The bundle, told so in that round, ended by itself once the laptop had it all.
            let ended =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), bundle).await });
            assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
            player.join().unwrap();
            rt.shutdown_background();
        }
    }
}
