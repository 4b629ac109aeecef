//! The stand-in for Apple's `container` CLI that `bot-bottle start --backend apple` runs
//! against on Linux (`fakes/apple-container.py`, whose docstring says what it emulates and
//! how): an executable in a directory of the test's own, with its state directory, its
//! faults, its record of every command line, and the docker objects it made (removed on drop).
//! Test setup only: the backend reaches it through `$BOT_BOTTLE_APPLE_CLI`.

use std::path::{Path, PathBuf};

use crate::docker::docker;

/// One stand-in `container` CLI with a state of its own.
pub struct FakeAppleCli {
    dir: tempfile::TempDir,
    /// The executable (`<dir>/bin/container`).
    pub cli: PathBuf,
    /// The prefix of the docker objects it creates.
    pub prefix: String,
}

impl FakeAppleCli {
    /// A new stand-in; the Python interpreter is `$PYTHON` or `python3`.
    pub fn new() -> Result<FakeAppleCli, String> {
        let made = StandIn::new(
            "apple-container.py",
            "container",
            "BB_FAKE_CONTAINER_DIR",
            &[],
        )?;
        Ok(FakeAppleCli {
            cli: made.bin.join("container"),
            prefix: made.prefix,
            dir: made.dir,
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Replaces the faults (see the script's docstring: `internal-ignored`, …).
    pub fn set_faults(&self, faults: &[&str]) {
        write_faults(&self.state_dir(), faults);
    }

    /// Every command line it was given, in order.
    pub fn calls(&self) -> Vec<String> {
        read_calls(&self.state_dir())
    }

    /// The Apple-side networks and containers it holds.
    pub fn resources(&self) -> (Vec<String>, Vec<String>) {
        let text = std::fs::read_to_string(self.state_dir().join("state.json"))
            .unwrap_or_else(|_| "{}".into());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys = |field: &str| -> Vec<String> {
            v[field]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        (keys("networks"), keys("containers"))
    }

    /// The docker containers and networks it made that still exist.
    pub fn docker_objects(&self) -> Vec<String> {
        let filter = format!("name={}", self.prefix);
        let mut all = Vec::new();
        for args in [
            ["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"],
            [
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ],
        ] {
            if let Ok(out) = docker(&args) {
                all.extend(out.lines().map(str::to_owned));
            }
        }
        all.retain(|n| n.starts_with(&self.prefix));
        all
    }
}

impl Drop for FakeAppleCli {
    fn drop(&mut self) {
        remove_docker_objects(&self.docker_objects());
    }
}

/// Writes a stand-in's fault list (one a line) into its state directory.
pub(crate) fn write_faults(state: &Path, faults: &[&str]) {
    let mut text = faults.join("\n");
    text.push('\n');
    std::fs::write(state.join("faults"), text).unwrap();
}

/// The command lines a stand-in was given, in order (its `calls.log`).
pub(crate) fn read_calls(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes docker containers and networks by name (a network may share a container's name).
pub(crate) fn remove_docker_objects(names: &[String]) {
    for name in names {
        if docker(&["rm", "--force", name]).is_err() {
            let _ = docker(&["network", "rm", name]);
        }
    }
}

/// What every stand-in executable has: a directory of its own with `bin/<name>` (a shell
/// wrapper running `fakes/<script>` with its state directory and `env` baked in), `state/`
/// and the prefix of its docker objects in `state/prefix`.
pub(crate) struct StandIn {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub prefix: String,
}

impl StandIn {
    pub fn new(
        script: &str,
        name: &str,
        dir_env: &str,
        env: &[(&str, &Path)],
    ) -> Result<StandIn, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("bbsi{}x{n}-", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("bbsi")
            .tempdir()
            .map_err(|e| format!("cannot create the stand-in's directory: {e}"))?;
        let bin = dir.path().join("bin");
        let state = dir.path().join("state");
        for d in [&bin, &state] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(state.join("prefix"), &prefix).map_err(|e| e.to_string())?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fakes")
            .join(script);
        let python = std::env::var("PYTHON")
            .ok()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| "python3".to_owned());
        let mut vars = format!("{dir_env}='{}'", state.display());
        for (k, v) in env {
            vars.push_str(&format!(" {k}='{}'", v.display()));
        }
        let exe = bin.join(name);
        let wrapper = format!(
            "#!/bin/sh\n{vars} exec '{python}' '{}' \"$@\"\n",
            script.display()
        );
        std::fs::write(&exe, wrapper).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        Ok(StandIn { dir, bin, prefix })
    }
}
