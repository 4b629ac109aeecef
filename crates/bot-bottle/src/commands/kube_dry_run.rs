//! `start --backend kubernetes --dry-run`: the objects the kubernetes backend would create
//! for an agent, as YAML, made from the manifest alone — no cluster, no state directory, no
//! CA, no image build and no secret read. The Secret lists the files the bundle would get,
//! never their values (they do not exist yet).

use std::collections::BTreeMap;

use anyhow::Context;
use backend::docker::ImageSource;
use backend::kubernetes::{AgentFile, ClusterSettings, PodPlan, SidecarPlan, bottle_objects};
use launcher::pod::{POD_BOTTLE_CA, POD_CA_BUNDLE, POD_WORKSPACE};
use manifest::ResolvedAgent;
use state::Identity;

/// The uids of a kubernetes bottle (the pod's packet filter tells them apart).
const AGENT_UID: u32 = 1000;
const SIDECAR_UID: u32 = 1001;

/// The YAML of the objects for `agent` (and `command` instead of the provider's when given).
pub fn render(
    agent: ResolvedAgent,
    settings: &ClusterSettings,
    command: Vec<String>,
    env: &launcher::HostEnv,
) -> anyhow::Result<String> {
    let plan = plan(agent, settings, command, env)?;
    let mut objects = bottle_objects(&plan).map_err(|e| anyhow::anyhow!(e.0))?;
    // Without a cluster there is no API discovery: `sandbox: true` shows the Sandbox (at the
    // first version bot-bottle writes), otherwise the pod, said to be wrapped in a Sandbox
    // where the cluster serves that API (unless `sandbox: false`).
    let note = match settings.sandbox {
        Some(true) => {
            objects.as_sandbox(backend::kubernetes::objects::SANDBOX_VERSIONS[0]);
            ""
        }
        Some(false) => "",
        None => {
            "# kubernetes.sandbox is not set: on a cluster that serves agents.x-k8s.io Sandbox,\n# this Pod is the template of a Sandbox of the same name (`sandbox: true` shows it).\n"
        }
    };
    Ok(format!("{note}{}", objects.to_yaml(true)?))
}

/// The plan of a bottle of `agent` as `start` would make it, from the manifest alone (the
/// bottle CA and the bundle's files as placeholders; non-interactive).
pub fn plan(
    agent: ResolvedAgent,
    settings: &ClusterSettings,
    command: Vec<String>,
    env: &launcher::HostEnv,
) -> anyhow::Result<PodPlan> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let identity = Identity::generate(&agent.name)?;
    let agent_image = tag(&launcher::provider_image(&agent, None, env)?)?;
    let launch = launcher::Launch {
        agent,
        backend: backend::BackendKind::Kubernetes,
        cwd: POD_WORKSPACE.into(),
        copy_cwd: false,
        command,
        manifest: None,
        codex_login: None,
    };
    let pod = launcher::pod::pod_contract(&launch, &identity, env)?;
    let sidecar_image = settings.image_ref(&tag(&ImageSource::sidecar(None))?);
    let tokens: Vec<String> =
        launcher::provider::routes_for(&launch.agent.bottle, contract::CodexAuth::ApiKey, env)
            .into_iter()
            .filter_map(|route| route.token_env)
            .collect();
    // The Secret's keys and the sidecar's script as `start` makes them, values left out.
    let (files, config) = launcher::kube::planned_files(&launch, identity.as_str(), &tokens)?;
    let config = config.display().to_string();
    let plan = PodPlan {
        identity: identity.to_string(),
        namespace: settings
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        runtime_class: settings.runtime_class.clone(),
        agent_image: settings.image_ref(&agent_image),
        init_image: sidecar_image.clone(),
        agent_uid: AGENT_UID,
        agent_gid: AGENT_UID,
        sidecar_uid: SIDECAR_UID,
        argv: pod.argv,
        env: pod.env,
        workdir: POD_WORKSPACE.into(),
        home: pod.home,
        home_volume: settings.home_size.as_ref().map(|size| {
            backend::kubernetes::objects::HomeVolume {
                size: size.clone(),
                storage_class: settings.storage_class.clone(),
                owner: "(set at launch)".into(),
            }
        }),
        files: [POD_CA_BUNDLE, POD_BOTTLE_CA]
            .into_iter()
            .map(|inside| AgentFile {
                inside: inside.into(),
                content: b"(the bottle CA, made at launch)\n".to_vec(),
            })
            .collect(),
        home_files: pod
            .home_files
            .into_iter()
            .map(|(inside, content)| AgentFile {
                inside,
                content: content.into_bytes(),
            })
            .collect(),
        clones: pod.clones,
        ports: pod.ports,
        resources: pod.resources,
        interactive: false,
        launcher: "(set at launch)".into(),
        termination_grace: launcher::kube::termination_grace(),
        sidecar: SidecarPlan {
            image: sidecar_image,
            argv: vec!["/bin/sh".into(), "-c".into(), files.script(config.as_ref())],
            env: BTreeMap::new(),
            ready_check: Some(vec![
                launcher::kube::POD_EXE.into(),
                "sidecar".into(),
                "--config".into(),
                config,
                "--check".into(),
            ]),
            files: files.files,
        },
    };
    Ok(plan)
}

fn tag(source: &ImageSource) -> anyhow::Result<String> {
    let hash = source
        .input_hash()
        .context("cannot hash the image's inputs")?;
    Ok(source.tag(&hash))
}
