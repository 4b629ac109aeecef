//! `bot-bottle pool`: the warm pool of an agent's kubernetes bottles (agent-sandbox's
//! `SandboxTemplate` and `SandboxWarmPool`, `extensions.agents.x-k8s.io`). Its pods are made
//! from the manifest alone and hold nothing of any bottle: `start` claims one whose pod is
//! the one it would build, sends it the bottle's config, and starts cold when none matches.
//! The pool's name is its template's hash (`bot-bottle-warm-<hash>`): a changed manifest
//! (image, resources, ports, runtime class) is another pool.

use std::process::ExitCode;

use anyhow::Context;
use backend::kubernetes::{ClusterSettings, KubernetesBackend, KubernetesConfig, pool};
use manifest::{DiscoverOptions, Manifest};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create or update an agent's warm pool on the cluster
    Apply(Args),
    /// Delete an agent's warm pool (its unclaimed pods; claimed ones stay their bottles')
    Delete(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent (a name under `agents:` in the manifest)
    pub agent: String,
    /// Manifest file or directory (as `start` finds it when not given)
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<std::path::PathBuf>,
    /// How many pods the pool keeps ready (apply)
    #[arg(long, default_value_t = 1)]
    pub replicas: u16,
    /// Pods for starts without a terminal (`start` with stdin not a terminal); by default
    /// the pool serves starts from a terminal
    #[arg(long)]
    pub no_tty: bool,
    /// Print the template and the pool as YAML and touch nothing (apply)
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let (args, apply) = match command {
        Command::Apply(args) => (args, true),
        Command::Delete(args) => (args, false),
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let opts = DiscoverOptions::from_env(args.manifest, |k| std::env::var_os(k), cwd);
    let manifest = Manifest::discover(&opts)?;
    let agent = manifest.agent(&args.agent)?;
    let k = &agent.bottle.kubernetes;
    let settings = ClusterSettings {
        context: None,
        namespace: k.namespace.clone(),
        runtime_class: k.runtime_class.clone(),
        registry: k.registry.clone(),
        home_size: k.home_size.clone(),
        storage_class: k.storage_class.clone(),
        sandbox: k.sandbox,
    };
    let env = launcher::HostEnv::Process;
    let mut plan = super::kube_dry_run::plan(agent, &settings, Vec::new(), &env)?;
    plan.interactive = !args.no_tty;
    if let Some(namespace) = &settings.namespace {
        plan.namespace = namespace.clone();
    }
    let template = pool::warm_pod(&plan)
        .map_err(|e| anyhow::anyhow!("agent {} cannot have a warm pool: {}", args.agent, e.0))?;
    let name = pool::pool_name(&template.hash);
    if args.dry_run {
        let (t, p) = pool::pool_objects(&template, &plan.namespace, i32::from(args.replicas));
        print!("{}", pool::pool_yaml(&t, &p)?);
        return Ok(ExitCode::SUCCESS);
    }
    let backend = KubernetesBackend::new(KubernetesConfig::new(settings, plan.agent_image))?;
    if apply {
        backend.apply_pool_template(&template, i32::from(args.replicas))?;
        println!(
            "warm pool {name} keeps {} pod(s) of agent {} ready",
            args.replicas, args.agent
        );
    } else if backend.delete_pool(&name)? {
        println!("deleted warm pool {name}");
    } else {
        println!("agent {} has no warm pool ({name})", args.agent);
    }
    Ok(ExitCode::SUCCESS)
}
