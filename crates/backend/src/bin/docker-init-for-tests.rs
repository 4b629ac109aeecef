//! The docker backend's in-container init as its own executable, for this crate's integration
//! tests only (`bot-bottle` runs the same code through a hidden subcommand).
//!
//! `docker-init-for-tests launch <spec.json> <agent image> <sidecar spec.json>` is a stand-in
//! launcher instead: it starts the bottle with the caller's stdio (so a test can put it on a
//! pseudo-terminal) and exits with the agent's exit code.

use backend::Backend;
use backend::HelperCommand;
use backend::docker::{AgentImage, DockerBackend, DockerConfig, RuntimeChoice};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "launch" {
        std::process::exit(launch(&args[2], &args[3], &args[4]));
    }
    backend::inbottle::docker_init::init_main()
}

fn launch(spec: &str, image: &str, sidecar: &str) -> i32 {
    let read = |path: &str| std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let spec: backend::LaunchSpec =
        serde_json::from_slice(&read(spec)).unwrap_or_else(|e| panic!("bad spec: {e}"));
    let sidecar = serde_json::from_slice(&read(sidecar)).unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut config = DockerConfig::new(
        AgentImage::Image(image.to_owned()),
        HelperCommand { exe, args: vec![] },
    );
    config.runtime = RuntimeChoice::Named("runc".into());
    config.sidecar = Some(sidecar);
    let backend = DockerBackend::new(config).unwrap_or_else(|e| panic!("{e}"));
    let mut bottle = backend
        .launch(&spec, backend::BottleStdio::inherit())
        .unwrap_or_else(|e| panic!("launch: {e}"));
    let code = bottle.wait().unwrap_or_else(|e| panic!("wait: {e}")).code;
    drop(bottle);
    code
}
