//! The native bottle's resource limits and host uid, against the real kernel: a fork bomb
//! stops at `pids`, a memory hog is killed at `memory`, the CPU quota is set, and a bottle
//! started by root runs as an unprivileged host uid.

use std::path::PathBuf;

use backend::{Backend, BottleStdio, Resources};
use pretty_assertions::assert_eq;

use super::support::{Fixture, Output};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn limited(pids: u32, memory_bytes: u64) -> Resources {
    Resources {
        millicpus: 1500,
        memory_bytes,
        pids,
        allow_unenforced: false,
    }
}

fn python(f: &Fixture, resources: Resources, script: &str) -> Output {
    let mut spec = f.spec(&["python3", "-c", script]);
    spec.resources = resources;
    f.run(&spec)
}

/// The host cgroup directories of a process, one per line of `/proc/PID/cgroup` naming
/// `controller` (v1) or the v2 line.
fn cgroup_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == controller) {
            continue;
        }
        let mount = mounts.lines().find_map(|m| {
            let (left, right) = m.split_once(" - ")?;
            let right: Vec<&str> = right.split(' ').collect();
            let fields: Vec<&str> = left.split(' ').collect();
            let matches = if v2 {
                right[0] == "cgroup2"
            } else {
                right[0] == "cgroup" && right.get(2)?.split(',').any(|o| o == controller)
            };
            matches.then(|| PathBuf::from(fields[4]))
        })?;
        let dir = mount.join(path.trim_start_matches('/'));
        if v2 && !dir.join(format!("{controller}.max")).exists() && controller != "cpu" {
            continue;
        }
        return Some(dir);
    }
    None
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    if !is_root() {
        println!("skipping: needs root to create cgroups on this host");
        return;
    }
    let f = Fixture::new();
    let out = python(
        &f,
        limited(64, 512 << 20),
        "import os, time\n\
         kids, err = [], ''\n\
         for i in range(200):\n\
         \x20   try:\n\
         \x20       pid = os.fork()\n\
         \x20   except OSError as e:\n\
         \x20       err = e.strerror\n\
         \x20       break\n\
         \x20   if pid == 0:\n\
         \x20       time.sleep(30)\n\
         \x20       os._exit(0)\n\
         \x20   kids.append(pid)\n\
         print(len(kids) < 64, err)\n\
         for k in kids: os.kill(k, 9)\n\
         for k in kids: os.waitpid(k, 0)\n",
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "True Resource temporarily unavailable\n"),
        "{}",
        out.stderr
    );
}

/// A Unix-socket sidecar on the host that answers each connection's line with `ok:<line>`.
fn answering_sidecar(path: &std::path::Path) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut line = String::new();
                if BufReader::new(conn).read_line(&mut line).is_ok() {
                    let _ = writer.write_all(format!("ok:{line}").as_bytes());
                }
            });
        }
    });
}

/// The forwarder runs in the bottle's init, inside the bottle's `pids` limit. An agent that
/// has used up that limit still gets every connection through to its sidecar answered —
/// one at a time and many at once — never refused for want of a thread, never left hanging.
#[test]
fn a_bottle_at_its_pids_limit_still_reaches_its_sidecar() {
    if !is_root() {
        println!("skipping: needs root to create cgroups on this host");
        return;
    }
    let f = Fixture::new();
    let sock = f.state.join("sidecar.sock");
    answering_sidecar(&sock);
    let script = "import os, socket, time\n\
         kids, err = [], ''\n\
         while len(kids) < 200:\n\
         \x20   try:\n\
         \x20       pid = os.fork()\n\
         \x20   except OSError as e:\n\
         \x20       err = e.strerror\n\
         \x20       break\n\
         \x20   if pid == 0:\n\
         \x20       time.sleep(120)\n\
         \x20       os._exit(0)\n\
         \x20   kids.append(pid)\n\
         print('full:', err)\n\
         def ask(s, i):\n\
         \x20   s.sendall(b'q%d\\n' % i)\n\
         def answer(s):\n\
         \x20   try:\n\
         \x20       got = s.recv(100).decode().strip()\n\
         \x20       return got or 'closed'\n\
         \x20   except socket.timeout:\n\
         \x20       return 'hung'\n\
         \x20   except OSError as e:\n\
         \x20       return 'closed'\n\
         def conn():\n\
         \x20   s = socket.create_connection(('127.0.0.1', 4000), timeout=30)\n\
         \x20   s.settimeout(30)\n\
         \x20   return s\n\
         for i in range(5):\n\
         \x20   s = conn(); ask(s, i); print(answer(s)); s.close()\n\
         many = [conn() for i in range(20)]\n\
         for i, s in enumerate(many): ask(s, i)\n\
         print(' '.join(answer(s) for s in many))\n\
         for k in kids: os.kill(k, 9)\n\
         for k in kids: os.waitpid(k, 0)\n";
    let mut spec = f.spec(&["python3", "-c", script]);
    spec.resources = limited(48, 512 << 20);
    spec.forwards.push(backend::Forward {
        inside_port: 4000,
        host_unix_socket: sock,
    });
    let out = f.run(&spec);
    let many: Vec<String> = (0..20).map(|i| format!("ok:q{i}")).collect();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            0,
            format!(
                "full: Resource temporarily unavailable\nok:q0\nok:q1\nok:q2\nok:q3\nok:q4\n{}\n",
                many.join(" ")
            )
            .as_str()
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_memory_hog_is_killed_at_the_memory_limit() {
    if !is_root() {
        println!("skipping: needs root to create cgroups on this host");
        return;
    }
    let f = Fixture::new();
    let out = python(
        &f,
        limited(256, 96 << 20),
        "import os\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   x = b'x' * (512 << 20)\n\
         \x20   os._exit(0)\n\
         _, st = os.waitpid(pid, 0)\n\
         print('killed by', os.WTERMSIG(st) if os.WIFSIGNALED(st) else None)\n",
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "killed by 9\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_bottle_runs_in_its_own_cgroups_which_go_with_it() {
    if !is_root() {
        println!("skipping: needs root to create cgroups on this host");
        return;
    }
    let f = Fixture::new();
    let marker = "4711.5";
    let mut spec = f.spec(&["sleep", marker]);
    spec.resources = limited(300, 200 << 20);
    let bottle = f.backend.launch(&spec, BottleStdio::piped()).unwrap();
    let pid = loop {
        if let Some(pid) = super::native::pids_with_marker(marker).first() {
            break *pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |controller: &str, file: &str| {
        let dir = cgroup_dir(pid, controller).expect("the agent's cgroup");
        assert!(
            dir.to_string_lossy().contains(&spec.identity),
            "{} is not the bottle's own cgroup",
            dir.display()
        );
        (
            dir.clone(),
            std::fs::read_to_string(dir.join(file))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|e| format!("{}: {e}", dir.join(file).display())),
        )
    };
    let v2 = cgroup_dir(pid, "pids")
        .is_some_and(|d| d.join("pids.max").exists() && d.join("cgroup.controllers").exists());
    let (dirs, values): (Vec<PathBuf>, Vec<String>) = if v2 {
        [
            read("cpu", "cpu.max"),
            read("memory", "memory.max"),
            read("pids", "pids.max"),
        ]
        .into_iter()
        .unzip()
    } else {
        [
            read("cpu", "cpu.cfs_quota_us"),
            read("memory", "memory.limit_in_bytes"),
            read("pids", "pids.max"),
        ]
        .into_iter()
        .unzip()
    };
    let expected = if v2 {
        vec!["150000 100000", "209715200", "300"]
    } else {
        vec!["150000", "209715200", "300"]
    };
    assert_eq!(values, expected);
    drop(bottle);
    for dir in dirs {
        assert!(!dir.exists(), "{} outlived the bottle", dir.display());
    }
}

/// Runs `script` as root's bottle and returns (stdout, host owner of `/workspace/w`).
fn written_by_root_bottle(f: &Fixture, dangerously_run_as_host_root: bool) -> (String, (u32, u32)) {
    use std::os::unix::fs::MetadataExt;
    let mut spec = f.spec(&[
        "bash",
        "-c",
        "echo x > /workspace/w && echo x > /home/agent/h && id -u && \
         tr -s ' ' < /proc/self/uid_map && tr -s ' ' < /proc/self/gid_map",
    ]);
    spec.dangerously_run_as_host_root = dangerously_run_as_host_root;
    let out = f.run(&spec);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let meta = std::fs::metadata(f.workspace.join("w")).unwrap();
    (out.stdout, (meta.uid(), meta.gid()))
}

#[test]
fn root_started_bottle_runs_as_an_unprivileged_host_uid() {
    if !is_root() {
        println!("skipping: the root-started bottle needs root");
        return;
    }
    let id = backend::native::owner::BOTTLE_HOST_ID;
    // A workspace of root's: the dedicated id; root is not mapped at all.
    let f = Fixture::new();
    assert_eq!(
        written_by_root_bottle(&f, false),
        (format!("1000\n 1000 {id} 1\n 1000 {id} 1\n"), (id, id))
    );
    // A workspace of a user's: that user.
    let f = Fixture::new();
    std::os::unix::fs::chown(&f.workspace, Some(1000), Some(1000)).unwrap();
    assert_eq!(
        written_by_root_bottle(&f, false),
        (
            "1000\n 1000 1000 1\n 1000 1000 1\n".to_owned(),
            (1000, 1000)
        )
    );
    // Only the dangerous opt-out keeps host root.
    let f = Fixture::new();
    assert_eq!(
        written_by_root_bottle(&f, true),
        ("1000\n 1000 0 1\n 1000 0 1\n".to_owned(), (0, 0))
    );
}

#[test]
fn cleanup_removes_the_cgroups_a_killed_launcher_left() {
    if !is_root() {
        println!("skipping: needs root to create cgroups on this host");
        return;
    }
    let f = Fixture::new();
    let marker = "4712.5";
    let spec = f.spec(&["sleep", marker]);
    let spec_path = f.state.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut launcher = std::process::Command::new(env!("CARGO_BIN_EXE_bottle-helper-for-tests"))
        .arg("launch")
        .arg(&spec_path)
        .arg(&f.state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = loop {
        if let Some(pid) = super::native::pids_with_marker(marker).first() {
            break *pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let dir = cgroup_dir(pid, "pids").expect("the agent's pids cgroup");
    assert!(
        dir.to_string_lossy().contains(&spec.identity),
        "{}",
        dir.display()
    );
    launcher.kill().unwrap(); // SIGKILL: the launcher removes nothing
    launcher.wait().unwrap();
    while !super::native::pids_with_marker(marker).is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        dir.exists(),
        "the killed launcher could not have removed {}",
        dir.display()
    );
    f.backend.cleanup(false).unwrap();
    assert!(!dir.exists(), "cleanup left {}", dir.display());
}
