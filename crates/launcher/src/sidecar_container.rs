//! `start` on a backend that runs the sidecar bundle in a container it starts itself
//! ([`backend::SidecarPlacement::BackendContainer`]: apple). The images come from the same
//! Dockerfiles as docker's, built by the backend; the sidecar container is the same spec as
//! docker's (`bot-bottle sidecar` with `$BOT_BOTTLE_HOME` at the same path, the tokens in its
//! environment only), with the bot-bottle executable a Linux build: `$BOT_BOTTLE_LINUX_EXE`,
//! else this executable on Linux.

use std::path::PathBuf;

use backend::docker::ImageSource;
use backend::{Backend, BottleStdio, LaunchSpec};
use state::Home;

use crate::error::chain;
use crate::{BottlePaths, Launch, LaunchError, Options};

/// Builds the images through the backend and starts the sidecar and agent containers; the
/// running agent.
pub(super) fn launch(
    backend: &dyn Backend,
    home: &Home,
    paths: &BottlePaths,
    launch: &Launch,
    sidecar_env: &[String],
    spec: &LaunchSpec,
    options: &Options,
) -> Result<Box<dyn backend::RunningBottle>, LaunchError> {
    let linux_exe = match options.env.var(backend::smolvm::GUEST_EXE_ENV) {
        Some(path) if !path.trim().is_empty() => PathBuf::from(path),
        _ if cfg!(target_os = "linux") => options.exe.clone(),
        _ => {
            return Err(LaunchError::Invalid(format!(
                "the {} backend's containers run Linux: set {} to a Linux build of bot-bottle",
                backend.kind(),
                backend::smolvm::GUEST_EXE_ENV
            )));
        }
    };
    let base = options
        .env
        .var("BOT_BOTTLE_DOCKER_BASE")
        .filter(|v| !v.trim().is_empty());
    let built = |what: &str, source: &ImageSource| {
        backend.build_image(source).map_err(|e| {
            LaunchError::Invalid(format!("cannot build the {what} image: {}", chain(&e)))
        })
    };
    let agent = built(
        "agent",
        &super::docker::agent_image(launch, paths, base.as_deref(), &options.env)?,
    )?;
    let sidecar_image = built("sidecar", &ImageSource::sidecar(base.as_deref()))?;
    let mut sidecar =
        super::docker::sidecar_spec(home, paths, launch, sidecar_env, options, sidecar_image)?;
    for mount in &mut sidecar.mounts {
        if mount.inside == std::path::Path::new(super::docker::SIDECAR_EXE) {
            mount.host = linux_exe.clone();
        }
    }
    // No health checks outside docker: a sidecar that stops answering fails the agent's
    // requests (nothing else leads out), it does not open anything.
    sidecar.health = None;
    backend.prepare(spec)?;
    // The agent is uid 1000 in its container, as on docker: started by root, it gets its home.
    if nix::unistd::geteuid().is_root() {
        super::docker::hand_to_agent_user(spec, options.report.as_ref())?;
    }
    let running = backend.launch_beside(spec, &agent, &sidecar, BottleStdio::inherit())?;
    super::agent_started(paths, options.report.as_ref());
    Ok(running)
}
