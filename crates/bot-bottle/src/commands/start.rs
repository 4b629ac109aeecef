//! `bot-bottle start`: create a bottle for an agent and run it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use backend::BackendKind;
use manifest::{DiscoverOptions, Manifest};
use state::Home;

use launcher::Launch;

use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent to start (a name under `agents:` in the manifest)
    pub agent: String,
    /// Isolation backend: native, docker, qemu, kubernetes, smolmachines, apple [default: native on Linux]
    #[arg(long, env = "BOT_BOTTLE_BACKEND")]
    pub backend: Option<String>,
    /// Manifest file or directory (default: $BOT_BOTTLE_MANIFEST, ./bot-bottle.yaml, ./.bot-bottle/, $BOT_BOTTLE_HOME/manifest/)
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Give the bottle a copy of the working directory instead of mounting it writable
    #[arg(long)]
    pub copy_cwd: bool,
    /// Codex only: forward the host's ChatGPT login (`codex login --device-auth`, in
    /// $CODEX_HOME/auth.json or ~/.codex/auth.json) into the bottle instead of injecting
    /// OPENAI_API_KEY. The agent can then read and use a refreshable credential
    #[arg(long)]
    pub forward_codex_auth: bool,
    /// Print the objects the backend would create, as YAML, and touch nothing: no cluster,
    /// no state, no secret read (kubernetes only)
    #[arg(long)]
    pub dry_run: bool,
    /// Command to run instead of the provider's agent (e.g. `-- bash`)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    if args.dry_run {
        return dry_run(args, cwd);
    }
    let home = Home::from_env()?;
    let user_home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    if let Some(refusal) = workspace_refusal(&cwd, user_home.as_deref(), home.root()) {
        anyhow::bail!(refusal);
    }
    let backend = match &args.backend {
        Some(name) => BackendKind::parse(name)?,
        None => backend::default_backend(),
    };
    let opts = DiscoverOptions::from_env(args.manifest, |k| std::env::var_os(k), cwd.clone());
    let manifest = Manifest::discover(&opts)?;
    let agent = manifest.agent(&args.agent)?;
    // The native bottle runs the host's agent: said now, with the fix, if it cannot. (A
    // generic agent named by a path is found, or not, inside the bottle.)
    let program = launcher::provider::program(&agent.bottle.agent_provider);
    if backend == BackendKind::Native && args.command.is_empty() && !program.contains('/') {
        let name = program.as_str();
        let host_path = std::env::var_os("PATH");
        backend::native::program::find_for_bottle(name, host_path.as_deref()).with_context(
            || format!("cannot start agent `{}` on the native backend", agent.name),
        )?;
    }
    let codex_login = if args.forward_codex_auth {
        Some(codex_login(&agent)?)
    } else {
        None
    };
    let options = report::launch_options()?;
    let running = launcher::launch(
        &home,
        Launch {
            agent,
            backend,
            cwd,
            copy_cwd: args.copy_cwd,
            command: args.command,
            manifest: Some(manifest.path().to_path_buf()),
            codex_login,
        },
        &options,
    )?;
    Ok(report::exit_code(running.wait()?))
}

/// `--dry-run`: the kubernetes objects of the agent, printed; nothing is created.
fn dry_run(args: Args, cwd: PathBuf) -> anyhow::Result<ExitCode> {
    let backend = match &args.backend {
        Some(name) => BackendKind::parse(name)?,
        None => backend::default_backend(),
    };
    if backend != BackendKind::Kubernetes {
        anyhow::bail!(
            "--dry-run prints the objects of a kubernetes bottle; add `--backend kubernetes` (the {backend} backend has no objects to print)"
        );
    }
    let opts = DiscoverOptions::from_env(args.manifest, |k| std::env::var_os(k), cwd);
    let manifest = Manifest::discover(&opts)?;
    let agent = manifest.agent(&args.agent)?;
    let k = &agent.bottle.kubernetes;
    let settings = backend::kubernetes::ClusterSettings {
        context: None,
        namespace: k.namespace.clone(),
        runtime_class: k.runtime_class.clone(),
        registry: k.registry.clone(),
        home_size: k.home_size.clone(),
        storage_class: k.storage_class.clone(),
        sandbox: k.sandbox,
    };
    let yaml =
        super::kube_dry_run::render(agent, &settings, args.command, &launcher::HostEnv::Process)?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}

/// Why `cwd` cannot be a bottle's workspace, said with the fix: the filesystem root, the
/// user's home (or a directory holding it) and the bot-bottle home hold credentials and
/// state, never a project. Checked before the manifest is looked for, so that starting
/// from `~` is not first mistaken for a manifest problem (`~/.bot-bottle` is the state).
pub fn workspace_refusal(
    cwd: &Path,
    user_home: Option<&Path>,
    bot_bottle_home: &Path,
) -> Option<String> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let cwd_real = real(cwd);
    let fix = "cd into your project directory (e.g. `cd ~/src/myproject`) and run it there";
    let state = real(bot_bottle_home);
    if cwd_real.starts_with(&state) {
        return Some(format!(
            "bot-bottle start gives the bottle the directory it runs in, and {} is inside bot-bottle's own state ({}); {fix}",
            cwd.display(),
            bot_bottle_home.display()
        ));
    }
    if let Some(home) = user_home.map(real)
        && home.starts_with(&cwd_real)
    {
        let what = if home == cwd_real {
            "is your home directory"
        } else {
            "contains your home directory"
        };
        return Some(format!(
            "bot-bottle start gives the bottle the directory it runs in, and {} {what}, with your credentials (~/.ssh, ~/.bot-bottle...); {fix}",
            cwd.display()
        ));
    }
    if cwd_real.parent().is_none() {
        return Some(format!(
            "bot-bottle start gives the bottle the directory it runs in, and {} is the root of the file system; {fix}",
            cwd.display()
        ));
    }
    None
}

/// The host's Codex login for `--forward-codex-auth`, checked before anything is created;
/// prints the warning every time it is forwarded (also on `resume`).
pub fn codex_login(agent: &manifest::ResolvedAgent) -> anyhow::Result<PathBuf> {
    let kind = agent.bottle.agent_provider.kind();
    if kind != manifest::ProviderKind::Codex {
        anyhow::bail!(
            "--forward-codex-auth is for Codex bottles, and agent `{}` runs {}; leave the flag off",
            agent.name,
            kind.display_name()
        );
    }
    let path = launcher::provider::host_codex_login(|k| std::env::var_os(k)).context(
        "--forward-codex-auth: neither CODEX_HOME nor HOME is set, so there is no Codex login to find; run `codex login --device-auth` on the host first",
    )?;
    launcher::provider::check_codex_login(&path)?;
    eprintln!("{}", launcher::provider::codex_login_warning(&path));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_project_directory_is_a_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("u");
        let project = home.join("src/app");
        std::fs::create_dir_all(&project).unwrap();
        assert_eq!(
            workspace_refusal(&project, Some(&home), &home.join(".bot-bottle")),
            None
        );
    }

    #[test]
    fn home_its_parents_the_state_and_the_root_are_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("u");
        let state = home.join(".bot-bottle");
        std::fs::create_dir_all(state.join("state")).unwrap();
        let refusal = |cwd: &Path| workspace_refusal(cwd, Some(&home), &state).unwrap();
        let fix = "cd into your project directory (e.g. `cd ~/src/myproject`) and run it there";
        assert_eq!(
            refusal(&home),
            format!(
                "bot-bottle start gives the bottle the directory it runs in, and {} is your home directory, with your credentials (~/.ssh, ~/.bot-bottle...); {fix}",
                home.display()
            )
        );
        assert_eq!(
            refusal(tmp.path()),
            format!(
                "bot-bottle start gives the bottle the directory it runs in, and {} contains your home directory, with your credentials (~/.ssh, ~/.bot-bottle...); {fix}",
                tmp.path().display()
            )
        );
        assert_eq!(
            refusal(&state.join("state")),
            format!(
                "bot-bottle start gives the bottle the directory it runs in, and {} is inside bot-bottle's own state ({}); {fix}",
                state.join("state").display(),
                state.display()
            )
        );
        assert_eq!(
            workspace_refusal(Path::new("/"), None, &state),
            Some(format!(
                "bot-bottle start gives the bottle the directory it runs in, and / is the root of the file system; {fix}"
            ))
        );
    }
}
