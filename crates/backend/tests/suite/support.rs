//! Fixtures: a scratch `$BOT_BOTTLE_HOME`, workspace and home, and a native backend whose
//! helper is this crate's test helper binary.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use backend::native::{HelperCommand, NativeBackend, NativeConfig};
use backend::{Backend, BottleStdio, Home, LaunchSpec, Workspace, WorkspaceMode};

pub struct Fixture {
    /// Holds the scratch directory for the fixture's lifetime.
    _dir: tempfile::TempDir,
    pub backend: NativeBackend,
    /// The fake `$BOT_BOTTLE_HOME`.
    pub state: PathBuf,
    pub workspace: PathBuf,
    pub home: PathBuf,
}

pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("bot-bottle-home");
        let workspace = dir.path().join("project");
        let home = state.join("state").join("home");
        for d in [&state, &workspace, &home] {
            std::fs::create_dir_all(d).unwrap();
        }
        let helper = HelperCommand {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_bottle-helper-for-tests")),
            args: vec![],
        };
        let backend = NativeBackend::new(NativeConfig::new(helper, &state));
        Fixture {
            _dir: dir,
            backend,
            state,
            workspace,
            home,
        }
    }

    pub fn spec(&self, argv: &[&str]) -> LaunchSpec {
        let env: BTreeMap<String, String> =
            [("PATH", PATH), ("HOME", "/home/agent"), ("LANG", "C.UTF-8")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        LaunchSpec {
            identity: format!("test-{:x}", rand_suffix()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env,
            workspace: Workspace {
                host: self.workspace.clone(),
                inside: "/workspace".into(),
                mode: WorkspaceMode::Mount,
            },
            home: Home {
                host: self.home.clone(),
                inside: "/home/agent".into(),
            },
            files: vec![],
            forwards: vec![],
            interactive: false,
            resources: backend::Resources::default(),
            dangerously_run_as_host_root: false,
        }
    }

    /// Runs a spec to completion with piped output.
    pub fn run(&self, spec: &LaunchSpec) -> Output {
        let mut bottle = self
            .backend
            .launch(spec, BottleStdio::piped())
            .unwrap_or_else(|e| panic!("launch failed: {e}"));
        drop(bottle.take_stdin());
        let mut out = bottle.take_stdout().unwrap();
        let mut err = bottle.take_stderr().unwrap();
        let t = std::thread::spawn(move || {
            let mut s = String::new();
            err.read_to_string(&mut s).unwrap();
            s
        });
        let mut stdout = String::new();
        out.read_to_string(&mut stdout).unwrap();
        let stderr = t.join().unwrap();
        let code = bottle.wait().unwrap().code;
        Output {
            code,
            stdout,
            stderr,
        }
    }

    /// Runs a bash script inside a bottle.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&self.spec(&["bash", "-c", script]))
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::process::id().wrapping_mul(31) ^ (N.fetch_add(1, Ordering::Relaxed) << 20)
}
