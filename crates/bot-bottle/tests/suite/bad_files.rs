//! Files the user names that are not regular files, or are far too large: every command that
//! reads one refuses it at once, naming the path and what it is, instead of hanging on a FIFO
//! or reading `/dev/zero` until memory runs out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;

/// How long a command may take before the test calls it hung (it answers in milliseconds;
/// the bound only turns a hang into a failure).
const HUNG: Duration = Duration::from_secs(60);

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn fifo(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
        path
    }

    /// A FIFO with a writer that never stops (`yes` on a read-write descriptor, so that its
    /// open does not wait for a reader); killed when the returned guard drops.
    fn fifo_with_writer(&self, name: &str) -> (PathBuf, Writer) {
        let path = self.fifo(name);
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let child = Command::new("yes").stdout(rw).spawn().unwrap();
        (path, Writer(child))
    }

    fn file_of(&self, name: &str, len: usize) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, vec![b'#'; len]).unwrap();
        path
    }
}

struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bot_bottle(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bot-bottle"));
    cmd.current_dir(cwd)
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env("BOT_BOTTLE_HOME", cwd.join("home"))
        .env("HOME", cwd)
        .env_remove("BOT_BOTTLE_LOG");
    cmd
}

/// Runs the command to its end, failing the test if it hangs.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HUNG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn manifest_check(cwd: &Path, manifest: Option<&Path>) -> (i32, String, String) {
    let mut cmd = bot_bottle(cwd);
    cmd.args(["manifest", "check"]);
    if let Some(path) = manifest {
        cmd.arg("--manifest").arg(path);
    }
    let out = run(cmd);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(path: &Path, what: &str) -> (i32, String, String) {
    (
        2,
        String::new(),
        format!(
            "error: cannot read manifest {}: it is {what}, not a regular file\n",
            path.display()
        ),
    )
}

#[test]
fn manifest_check_refuses_a_fifo_without_a_writer() {
    let dir = Dir::new();
    let fifo = dir.fifo("m.yaml");
    assert_eq!(
        manifest_check(dir.tmp.path(), Some(&fifo)),
        refused(&fifo, "a named pipe (FIFO)")
    );
}

#[test]
fn manifest_check_refuses_a_fifo_with_an_endless_writer() {
    let dir = Dir::new();
    let (fifo, _writer) = dir.fifo_with_writer("m.yaml");
    assert_eq!(
        manifest_check(dir.tmp.path(), Some(&fifo)),
        refused(&fifo, "a named pipe (FIFO)")
    );
}

#[test]
fn manifest_check_refuses_dev_zero() {
    let dir = Dir::new();
    let zero = Path::new("/dev/zero");
    assert_eq!(
        manifest_check(dir.tmp.path(), Some(zero)),
        refused(zero, "a character device")
    );
}

#[test]
fn manifest_check_refuses_a_found_bot_bottle_yaml_that_is_a_directory_or_fifo() {
    let dir = Dir::new();
    let found = dir.path("bot-bottle.yaml");
    std::fs::create_dir(&found).unwrap();
    assert_eq!(
        manifest_check(dir.tmp.path(), None),
        refused(&found, "a directory")
    );
    std::fs::remove_dir(&found).unwrap();
    dir.fifo("bot-bottle.yaml");
    assert_eq!(
        manifest_check(dir.tmp.path(), None),
        refused(&found, "a named pipe (FIFO)")
    );
}

#[test]
fn manifest_check_refuses_a_fifo_in_the_directory_form() {
    let dir = Dir::new();
    let manifest = dir.path("manifest");
    std::fs::create_dir_all(manifest.join("bottles")).unwrap();
    std::fs::create_dir_all(manifest.join("agents")).unwrap();
    let fifo = manifest.join("agents/demo.md");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    assert_eq!(
        manifest_check(dir.tmp.path(), Some(&manifest)),
        refused(&fifo, "a named pipe (FIFO)")
    );
}

#[test]
fn manifest_check_refuses_a_file_over_the_limit() {
    let dir = Dir::new();
    let big = dir.file_of("m.yaml", (4 << 20) + 1);
    assert_eq!(
        manifest_check(dir.tmp.path(), Some(&big)),
        (
            2,
            String::new(),
            format!(
                "error: cannot read manifest {}: it holds more than 4 MiB, more than any real file of this kind; check that it is the right file\n",
                big.display()
            )
        )
    );
    // At the limit it is read (and judged as YAML: a comment is an empty manifest).
    let fits = dir.file_of("fits.yaml", 4 << 20);
    let (code, stdout, stderr) = manifest_check(dir.tmp.path(), Some(&fits));
    assert_eq!(
        (code, stdout.as_str()),
        (
            0,
            format!("{}: ok, 0 bottles, 0 agents\n", fits.display()).as_str()
        ),
        "{stderr}"
    );
}

/// Every other command that reads a file the user names: the error names the path and what
/// it is.
#[test]
fn every_command_reading_a_named_file_refuses_fifos_and_devices() {
    let dir = Dir::new();
    let cwd = dir.tmp.path();
    let fifo = dir.fifo("input");
    let fifo_s = fifo.to_str().unwrap();
    let routes = dir.path("routes.yaml");
    std::fs::write(&routes, "routes: []\n").unwrap();
    let routes_s = routes.to_str().unwrap();
    let ca_dir = dir.path("ca");
    let ca_dir_s = ca_dir.to_str().unwrap();
    let state = dir.path("gate-state");
    let state_s = state.to_str().unwrap();
    // A bundle that starts (`sidecar --plan` reads its plan once ready).
    let sidecar_json = dir.path("sidecar.json");
    std::fs::write(
        &sidecar_json,
        serde_json::json!({
            "identity": "demo-0a1b2",
            "home": cwd,
            "egress": {"listen": {"tcp": "127.0.0.1:0"}, "routes": routes,
                       "ca_dir": ca_dir, "log": dir.path("egress.jsonl")},
        })
        .to_string(),
    )
    .unwrap();
    let sidecar_s = sidecar_json.to_str().unwrap();
    // A warm pod's empty config directory (`intake --claim-annotations` reads the pod's
    // annotations before it listens).
    let intake_dir = dir.path("intake");
    std::fs::create_dir(&intake_dir).unwrap();
    let intake_dir_s = intake_dir.to_str().unwrap();
    let plan_dir = dir.path("plan");
    std::fs::create_dir(&plan_dir).unwrap();
    let plan_dir_s = plan_dir.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "scan --config",
            vec!["scan", "--config", fifo_s, cwd.to_str().unwrap()],
            fifo_s,
        ),
        (
            "scan --baseline",
            vec!["scan", "--baseline", "/dev/zero", routes_s],
            "/dev/zero",
        ),
        (
            "gate serve --repos",
            vec![
                "gate",
                "serve",
                "--repos",
                fifo_s,
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                state_s,
            ],
            fifo_s,
        ),
        (
            "egress serve --routes",
            vec![
                "egress",
                "serve",
                "--routes",
                fifo_s,
                "--listen",
                "127.0.0.1:0",
                "--ca-dir",
                ca_dir_s,
            ],
            fifo_s,
        ),
        (
            "egress serve --upstream-ca",
            vec![
                "egress",
                "serve",
                "--routes",
                routes_s,
                "--listen",
                "127.0.0.1:0",
                "--ca-dir",
                ca_dir_s,
                "--upstream-ca",
                "/dev/zero",
            ],
            "/dev/zero",
        ),
        (
            "sidecar --config",
            vec!["sidecar", "--config", fifo_s],
            fifo_s,
        ),
        (
            "sidecar --plan FIFO",
            vec![
                "sidecar",
                "--config",
                sidecar_s,
                "--plan",
                fifo_s,
                "--plan-dir",
                plan_dir_s,
            ],
            fifo_s,
        ),
        (
            "sidecar --plan device",
            vec![
                "sidecar",
                "--config",
                sidecar_s,
                "--plan",
                "/dev/zero",
                "--plan-dir",
                plan_dir_s,
            ],
            "/dev/zero",
        ),
        (
            "intake --claim-annotations FIFO",
            vec![
                "intake",
                "--listen",
                "127.0.0.1:0",
                "--dir",
                intake_dir_s,
                "--claim-annotations",
                fifo_s,
            ],
            fifo_s,
        ),
        (
            "intake --claim-annotations device",
            vec![
                "intake",
                "--listen",
                "127.0.0.1:0",
                "--dir",
                intake_dir_s,
                "--claim-annotations",
                "/dev/zero",
            ],
            "/dev/zero",
        ),
        ("scan PATH", vec!["scan", "/dev/zero"], "/dev/zero"),
        ("scan FIFO", vec!["scan", fifo_s], fifo_s),
    ];
    for (name, args, path) in cases {
        let mut cmd = bot_bottle(cwd);
        cmd.args(&args);
        let out = run(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = if path == "/dev/zero" {
            "a character device"
        } else {
            "a named pipe (FIFO)"
        };
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(path) && stderr.contains(&format!("it is {what}, not a regular file")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn forward_codex_auth_refuses_a_login_that_is_a_fifo() {
    let dir = Dir::new();
    let cwd = dir.tmp.path();
    std::fs::write(
        dir.path("bot-bottle.yaml"),
        "bottles:\n  dev: {agent_provider: codex}\nagents:\n  demo: {bottle: dev}\n",
    )
    .unwrap();
    let codex_home = dir.path("codex");
    std::fs::create_dir(&codex_home).unwrap();
    let login = codex_home.join("auth.json");
    let status = Command::new("mkfifo").arg(&login).status().unwrap();
    assert!(status.success());
    let mut cmd = bot_bottle(cwd);
    // The project directory is not the home: `start` refuses to run in the home.
    cmd.env("HOME", "/nonexistent/home");
    cmd.env("CODEX_HOME", &codex_home).args([
        "start",
        "demo",
        "--forward-codex-auth",
        "--",
        "true",
    ]);
    let out = run(cmd);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
        ),
        (
            Some(2),
            format!(
                "error: --forward-codex-auth: cannot read the host's Codex login {}: it is a named pipe (FIFO), not a regular file\n",
                login.display()
            )
        )
    );
}
