//! The launcher as a library: a test is its front end. It resolves a manifest, calls
//! `launcher::launch` / `launcher::resume` and waits on the running bottle, with no
//! `bot-bottle start` in between; the `bot-bottle` executable only serves the sidecar bundle
//! and the native backend's in-bottle helper, as it does for any front end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backend::BackendKind;
use launcher::{HostEnv, Launch, LaunchError, Options, Recorded};
use state::Home;

struct World {
    _tmp: tempfile::TempDir,
    home: Home,
    workspace: PathBuf,
    report: Arc<Recorded>,
}

fn world() -> World {
    world_of("bottles:\n  dev: {}\nagents:\n  demo:\n    bottle: dev\n")
}

/// A world whose workspace manifest is `manifest` (an agent `demo`).
fn world_of(manifest: &str) -> World {
    // Short paths: Unix socket paths are limited to 107 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("bb")
        .tempdir_in("/tmp")
        .unwrap();
    let workspace = tmp.path().join("w");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("bot-bottle.yaml"), manifest).unwrap();
    World {
        home: Home::new(tmp.path().join("h")),
        workspace,
        _tmp: tmp,
        report: Arc::new(Recorded::default()),
    }
}

impl World {
    fn options(&self) -> Options {
        Options {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_bot-bottle")),
            interactive: false,
            report: self.report.clone(),
            env: HostEnv::Process,
            cluster: None,
        }
    }

    fn launch_of(&self, command: &[&str]) -> Launch {
        let path = self.workspace.join("bot-bottle.yaml");
        let manifest = manifest::Manifest::load(&path).unwrap();
        Launch {
            agent: manifest.agent("demo").unwrap(),
            backend: BackendKind::Native,
            cwd: self.workspace.clone(),
            copy_cwd: false,
            command: command.iter().map(|s| s.to_string()).collect(),
            manifest: Some(path),
            codex_login: None,
        }
    }

    /// What the operator is told on every launch of this bottle: the provider's route has
    /// no credential on this host (unless the host has one).
    fn expected_lines(&self, launches: usize) -> Vec<String> {
        let set = std::env::var_os("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN").is_some_and(|v| !v.is_empty())
            || std::env::var_os("ANTHROPIC_API_KEY").is_some_and(|v| !v.is_empty());
        if set {
            return vec![];
        }
        vec!["warning: BOT_BOTTLE_CLAUDE_OAUTH_TOKEN is not set, so requests to api.anthropic.com go out without credentials; export it before `start` (the agent never sees it)".to_owned(); launches]
    }
}

/// `None` (with the reason printed) when the native backend cannot isolate a bottle here.
fn launched(world: &World, command: &[&str]) -> Option<launcher::RunningBottle> {
    match launcher::launch(&world.home, world.launch_of(command), &world.options()) {
        Ok(running) => Some(running),
        Err(LaunchError::BackendUnusable(why)) => {
            eprintln!("skipping: {why}");
            None
        }
        Err(e) => panic!("launch failed: {e}"),
    }
}

#[test]
fn a_native_bottle_runs_true_and_its_state_is_removed() {
    let world = world();
    let Some(running) = launched(&world, &["true"]) else {
        return;
    };
    let identity = running.identity().clone();
    assert!(world.home.state_dir(&identity).is_dir());
    assert!(world.home.is_running(&identity));
    assert_eq!(running.wait().unwrap(), 0);
    assert!(!world.home.state_dir(&identity).exists());
    assert_eq!(world.report.lines(), world.expected_lines(1));
}

#[test]
fn a_stopped_bottle_is_kept_and_resumes_through_the_library() {
    let world = world();
    let Some(running) = launched(&world, &["sleep", "60"]) else {
        return;
    };
    let identity = running.identity().clone();
    assert!(running.stop(Duration::from_secs(2)).unwrap());
    // Killed by SIGTERM, as a shell reports it.
    assert_eq!(running.wait().unwrap(), 128 + 15);
    assert!(world.home.is_preserved(&identity));
    assert!(!world.home.is_running(&identity));
    let mut lines = world.expected_lines(1);
    lines.push(format!(
        "the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle discard {identity}` removes it"
    ));
    assert_eq!(world.report.lines(), lines);

    let lock = world.home.lock_bottle(&identity).unwrap();
    let resumed = launcher::resume(
        &world.home,
        &identity,
        lock,
        world.launch_of(&["true"]),
        &world.options(),
    )
    .unwrap();
    assert_eq!(resumed.identity(), &identity);
    assert_eq!(resumed.wait().unwrap(), 0);
    assert!(!world.home.state_dir(&identity).exists());
}

#[test]
fn a_dropped_bottle_is_stopped_and_kept() {
    let world = world();
    let Some(running) = launched(&world, &["sleep", "60"]) else {
        return;
    };
    let identity = running.identity().clone();
    assert!(world.home.is_running(&identity));
    drop(running);
    assert!(!world.home.is_running(&identity));
    assert!(world.home.is_preserved(&identity));
    let mut lines = world.expected_lines(1);
    lines.push(format!(
        "the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle discard {identity}` removes it"
    ));
    assert_eq!(world.report.lines(), lines);
}

/// The launcher reads host variables only through `Options::env`: given a token the host may
/// not have, the bottle's route carries it and the bundle is told about it; not given one the
/// host may have, the operator is warned that it is missing.
#[test]
fn the_launcher_sees_only_the_host_variables_it_is_given() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let with_token = world();
    let mut options = with_token.options();
    options.env = HostEnv::map([
        ("PATH", path.clone()),
        (
            "BOT_BOTTLE_CLAUDE_OAUTH_TOKEN",
            std::ffi::OsString::from("test-token"),
        ),
    ]);
    let running = match launcher::launch(
        &with_token.home,
        with_token.launch_of(&["sleep", "60"]),
        &options,
    ) {
        Ok(running) => running,
        Err(LaunchError::BackendUnusable(why)) => {
            eprintln!("skipping: {why}");
            return;
        }
        Err(e) => panic!("launch failed: {e}"),
    };
    let identity = running.identity().clone();
    let config = bundle::SidecarConfig::load(&running.paths().sidecar_config()).unwrap();
    assert_eq!(
        config.tokens,
        vec!["BOT_BOTTLE_CLAUDE_OAUTH_TOKEN".to_owned()]
    );
    assert!(running.stop(Duration::from_secs(2)).unwrap());
    assert_eq!(running.wait().unwrap(), 128 + 15);
    assert_eq!(
        with_token.report.lines(),
        vec![format!(
            "the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle discard {identity}` removes it"
        )]
    );

    let without = world();
    let mut options = without.options();
    options.env = HostEnv::map([("PATH", path)]);
    let running = launcher::launch(&without.home, without.launch_of(&["true"]), &options).unwrap();
    assert_eq!(running.wait().unwrap(), 0);
    assert_eq!(
        without.report.lines(),
        vec!["warning: BOT_BOTTLE_CLAUDE_OAUTH_TOKEN is not set, so requests to api.anthropic.com go out without credentials; export it before `start` (the agent never sees it)".to_owned()]
    );
}

/// The warning about `BOT_BOTTLE_CLAUDE_OAUTH_TOKEN` is given only for a bottle whose
/// routes use it: a Claude bottle without it on the host is warned; a Codex bottle on the
/// same host (its route takes `OPENAI_API_KEY`, which is given) is told nothing, and its
/// bundle is given only the key its route uses.
#[test]
fn the_claude_token_warning_is_given_only_when_a_route_uses_it() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let claude = world();
    let mut options = claude.options();
    options.env = HostEnv::map([("PATH", path.clone())]);
    let running = match launcher::launch(&claude.home, claude.launch_of(&["true"]), &options) {
        Ok(running) => running,
        Err(LaunchError::BackendUnusable(why)) => {
            eprintln!("skipping: {why}");
            return;
        }
        Err(e) => panic!("launch failed: {e}"),
    };
    assert_eq!(running.wait().unwrap(), 0);
    let warning = "warning: BOT_BOTTLE_CLAUDE_OAUTH_TOKEN is not set, so requests to api.anthropic.com go out without credentials; export it before `start` (the agent never sees it)";
    assert_eq!(claude.report.lines(), vec![warning.to_owned()]);

    let codex =
        world_of("bottles:\n  dev: {agent_provider: codex}\nagents:\n  demo:\n    bottle: dev\n");
    let mut options = codex.options();
    options.env = HostEnv::map([
        ("PATH", path),
        ("OPENAI_API_KEY", std::ffi::OsString::from("test-key")),
    ]);
    let running =
        launcher::launch(&codex.home, codex.launch_of(&["sleep", "60"]), &options).unwrap();
    let config = bundle::SidecarConfig::load(&running.paths().sidecar_config()).unwrap();
    assert_eq!(config.tokens, vec!["OPENAI_API_KEY".to_owned()]);
    let identity = running.identity().clone();
    assert!(running.stop(Duration::from_secs(2)).unwrap());
    assert_eq!(running.wait().unwrap(), 128 + 15);
    assert!(
        codex
            .report
            .lines()
            .iter()
            .all(|l| !l.contains("BOT_BOTTLE_CLAUDE_OAUTH_TOKEN")),
        "{:?}",
        codex.report.lines()
    );
    assert_eq!(
        codex.report.lines(),
        vec![format!(
            "the agent exited with an error; its state is kept: `bot-bottle resume {identity}` brings it back, `bot-bottle discard {identity}` removes it"
        )]
    );
}
