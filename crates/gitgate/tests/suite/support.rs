//! Fixtures: upstream repositories, a running gate, git clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gitgate::{Gate, GateConfig, GateOptions};

/// Environment for every git the tests run: no host config, a fixed identity.
pub fn git_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_AUTHOR_NAME", "Test"),
        ("GIT_AUTHOR_EMAIL", "test@example.org"),
        ("GIT_COMMITTER_NAME", "Test"),
        ("GIT_COMMITTER_EMAIL", "test@example.org"),
    ]
}

/// Runs git in `dir`, returning its output whatever the exit status.
pub fn git_out(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(git_env())
        .output()
        .unwrap()
}

/// Runs git in `dir` and asserts it succeeds; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_out(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A bare upstream with one commit on `main`.
pub fn upstream(root: &Path, name: &str) -> PathBuf {
    let bare = root.join(format!("{name}-upstream.git"));
    git(
        root,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let seed = root.join(format!("{name}-seed"));
    git(root, &["init", "-q", "-b", "main", seed.to_str().unwrap()]);
    std::fs::write(seed.join("README.md"), "hello\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "initial"]);
    git(&seed, &["push", "-q", bare.to_str().unwrap(), "main"]);
    bare
}

/// Commits `content` to `file` in a work tree; returns the new commit id.
pub fn commit_file(work: &Path, file: &str, content: &str, msg: &str) -> String {
    let path = work.join(file);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(&path, content).unwrap();
    git(work, &["add", file]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["rev-parse", "HEAD"])
}

/// A gate running in the test's runtime.
pub struct TestGate {
    pub base: String,
    pub gate: std::sync::Arc<Gate>,
    pub state: PathBuf,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestGate {
    pub fn url(&self, repo: &str) -> String {
        format!("{}/{repo}.git", self.base)
    }
}

pub fn hook_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gitgate-hook"))
}

pub fn options() -> GateOptions {
    let mut o = GateOptions::new("test").unwrap();
    o.hook_exe = hook_exe();
    o.git_timeout = Duration::from_secs(60);
    o.connect_timeout = Duration::from_secs(5);
    o.api_timeout = Duration::from_secs(5);
    o
}

pub async fn start_gate(root: &Path, yaml: &str, options: GateOptions) -> TestGate {
    let config = GateConfig::parse(yaml, Path::new("test.yaml")).unwrap();
    let state = root.join("state");
    let gate = std::sync::Arc::new(Gate::new(config, &state, options).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let g = gate.clone();
    tokio::spawn(async move {
        g.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestGate {
        base: format!("http://{addr}"),
        state: gate.state_dir().to_path_buf(),
        gate,
        _shutdown: tx,
    }
}

/// Runs a blocking closure (git clients) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Processes (not zombies) whose environment mentions `needle`.
pub fn processes_with_env(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !String::from_utf8_lossy(&env).contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if state == Some("Z") {
            continue;
        }
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        found.push(format!(
            "{name}: {}",
            String::from_utf8_lossy(&cmd).replace('\0', " ")
        ));
    }
    found
}
