//! Warm start of a bottle, docker against native side by side (`cargo bench -p backend --bench
//! start`). Two rows per backend: `true` (launch to exit) and the first request through a
//! forwarded sidecar port (launch, connect to `127.0.0.1:3128`, read the answer, exit). Each
//! figure is the median of several warm runs; the ratio is against native measured in the same
//! run. Docker rows need a daemon and the local base image (`scripts/docker/build-base-image`);
//! without them only native is printed, with the reason.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backend::docker::{
    AgentImage, DockerBackend, DockerConfig, ImageSource, RuntimeChoice, SidecarSpec,
};
use backend::native::{HelperCommand, NativeBackend, NativeConfig};
use backend::{
    Backend, BottleStdio, Forward, Home, LaunchSpec, StdioMode, Workspace, WorkspaceMode,
};

const RUNS: usize = 7;
const PORT: u16 = 3128;
const FIRST_REQUEST: &str =
    "import socket; s = socket.create_connection(('127.0.0.1', 3128)); assert s.recv(64)";

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let workspace = dir.path().join("project");
    let home = dir.path().join("home");
    let state = dir.path().join("state");
    for d in [&workspace, &home, &state] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(d, Some(1000), Some(1000)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
    // The native sidecar stand-in: a Unix socket answering every connection.
    let socket = dir.path().join("sidecar.sock");
    let listener =
        std::os::unix::net::UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(b"sidecar\n");
        }
    });

    let spec = |argv: &[&str]| LaunchSpec {
        identity: format!("bench-{:05x}", std::process::id() & 0xfffff),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/home/agent".into()),
        ]),
        workspace: Workspace {
            host: workspace.clone(),
            inside: "/workspace".into(),
            mode: WorkspaceMode::Mount,
        },
        home: Home {
            host: home.clone(),
            inside: "/home/agent".into(),
        },
        files: vec![],
        forwards: vec![Forward {
            inside_port: PORT,
            host_unix_socket: socket.clone(),
        }],
        interactive: false,
        resources: backend::Resources::default(),
        dangerously_run_as_host_root: false,
    };
    let cases: [(&str, Vec<&str>); 2] = [
        ("start -- true", vec!["true"]),
        (
            "first forwarded request",
            vec!["python3", "-c", FIRST_REQUEST],
        ),
    ];

    let native = NativeBackend::new(NativeConfig::new(
        HelperCommand {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_bottle-helper-for-tests")),
            args: vec![],
        },
        &state,
    ));
    let docker = docker_backend();
    println!("| case | backend | median | ratio to native |");
    println!("|---|---|---|---|");
    for (name, argv) in &cases {
        let spec = spec(argv);
        let base = median(&native, &spec);
        println!("| {name} | native | {} | 1.00 |", ms(base));
        match &docker {
            Ok(docker) => {
                let d = median(docker, &spec);
                println!(
                    "| {name} | docker (runc) | {} | {:.2} |",
                    ms(d),
                    d.as_secs_f64() / base.as_secs_f64()
                );
            }
            Err(reason) if name.starts_with("start") => {
                println!("| {name} | docker | skipped: {reason} | |")
            }
            Err(_) => {}
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn median(backend: &dyn Backend, spec: &LaunchSpec) -> Duration {
    backend
        .prepare(spec)
        .unwrap_or_else(|e| panic!("prepare: {e}"));
    let quiet = BottleStdio {
        stdin: StdioMode::Null,
        stdout: StdioMode::Null,
        stderr: StdioMode::Piped,
    };
    let mut times = Vec::new();
    // One warm-up run, then the measured ones.
    for run in 0..=RUNS {
        let started = Instant::now();
        let mut bottle = backend
            .launch(spec, quiet)
            .unwrap_or_else(|e| panic!("launch: {e}"));
        let mut err = String::new();
        if let Some(mut e) = bottle.take_stderr() {
            let _ = e.read_to_string(&mut err);
        }
        let exit = bottle.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert_eq!(exit.code, 0, "{}: {err}", backend.kind());
        if run > 0 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    times[times.len() / 2]
}

fn docker_backend() -> Result<DockerBackend, String> {
    let init = HelperCommand {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_docker-init-for-tests")),
        args: vec![],
    };
    let probe = DockerBackend::new(DockerConfig::new(
        AgentImage::Image(String::new()),
        init.clone(),
    ))
    .map_err(|e| e.to_string())?;
    probe.client().map_err(|e| e.to_string())?;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/docker/build-base-image");
    let out = std::process::Command::new(&script)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let base = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let sidecar_image = probe
        .ensure_image(&ImageSource::sidecar(Some(&base)), "sidecar-image")
        .map_err(|e| e.to_string())?;
    let mut config = DockerConfig::new(AgentImage::Image(base), init);
    config.runtime = RuntimeChoice::Named("runc".into());
    config.sidecar = Some(SidecarSpec {
        image: sidecar_image,
        argv: vec![
            "python3".into(),
            "-c".into(),
            "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 3128))\ns.listen(64)\nwhile True:\n    c, _ = s.accept()\n    c.sendall(b'sidecar\\n')\n    c.close()".into(),
        ],
        env: BTreeMap::new(),
        mounts: vec![],
        user: "65534:65534".into(),
        ready_line: None,
        health: None,
    });
    DockerBackend::new(config).map_err(|e| e.to_string())
}
