//! The native backend against the real kernel: what the agent can and cannot reach.
//! Network traffic only ever goes to loopback (the host's, or the bottle's own).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use backend::{
    Backend, BackendError, BottleStdio, Forward, ReadOnlyFile, RunningBottle, StdioMode,
};
use pretty_assertions::assert_eq;

use super::support::{Fixture, Output};

fn ok(out: &Output) {
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
}

#[test]
fn runs_a_command_and_propagates_its_exit_code() {
    let f = Fixture::new();
    let out = f.sh("echo hello; exit 7");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (7, "hello\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_signal_death_is_reported_shell_style() {
    let f = Fixture::new();
    let out = f.sh("kill -9 $$");
    assert_eq!(out.code, 128 + 9);
}

#[test]
fn a_missing_command_fails_the_launch_instead_of_running() {
    let f = Fixture::new();
    let spec = f.spec(&["no-such-command-here"]);
    let err = f
        .backend
        .launch(&spec, BottleStdio::piped())
        .err()
        .expect("launch must fail");
    match err {
        BackendError::Setup { stage, message } => {
            assert_eq!(stage, "command");
            assert!(
                message.contains("`no-such-command-here` not found"),
                "{message}"
            );
        }
        other => panic!("unexpected error: {other}"),
    }
    // Nothing is left behind: no record, no runtime directory.
    assert_eq!(f.backend.list().unwrap(), vec![]);
    assert!(!f.backend.config().runtime_dir.join(&spec.identity).exists());
}

#[test]
fn the_environment_is_exactly_the_specs() {
    let f = Fixture::new();
    let mut spec = f.spec(&["/usr/bin/env"]);
    spec.env.insert(
        "BOT_BOTTLE_SUPERVISE_URL".into(),
        "http://127.0.0.1:4003/mcp".into(),
    );
    let out = f.run(&spec);
    ok(&out);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    let expected: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(lines, expected);
}

#[test]
fn only_loopback_exists_in_the_network_namespace() {
    let f = Fixture::new();
    let out = f.sh("ip -o link | cut -d: -f2 | tr -d ' '; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip -o addr | awk '{print $4}'; ip -4 route; ip -6 route | grep -v ' dev lo '; true");
    ok(&out);
    assert_eq!(out.stdout, "lo\nlo\n127.0.0.1/8\n::1/128\n");
}

#[test]
fn a_host_loopback_server_is_unreachable() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let f = Fixture::new();
    let out = f.sh(&format!(
        "if exec 3<>/dev/tcp/127.0.0.1/{port}; then echo connected; else echo refused; fi; \
         curl -sS --max-time 3 http://127.0.0.1:{port}/ >/dev/null 2>&1; echo curl=$?; \
         getent hosts example.com || echo no-dns"
    ));
    assert_eq!(out.stdout, "refused\ncurl=7\nno-dns\n", "{}", out.stderr);
    assert_eq!(
        host.accept().map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the host server must not have received a connection"
    );
}

#[test]
fn a_host_abstract_unix_socket_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("bot-bottle-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let host = UnixListener::bind_addr(&addr).unwrap();
    host.set_nonblocking(true).unwrap();
    let f = Fixture::new();
    let out = f.run(&f.spec(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n  s.connect('\\0{name}'); print('CONNECTED')\nexcept OSError as e:\n  print(e.strerror)"
        ),
    ]));
    assert_eq!(out.stdout, "Connection refused\n", "{}", out.stderr);
    assert_eq!(
        host.accept().map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
}

/// A Unix-socket echo server that prefixes each line with `name`.
fn echo_server(path: &Path, name: &'static str) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(writer, "{name}:{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

const ASK: &str =
    "exec 3<>/dev/tcp/127.0.0.1/4000 && echo ping >&3 && read -r reply <&3 && echo \"$reply\"";

#[test]
fn a_forwarded_port_reaches_the_sidecar_socket_and_nothing_else_of_it_is_visible() {
    let f = Fixture::new();
    let sock = f.state.join("egress.sock");
    echo_server(&sock, "egress");
    let mut spec = f.spec(&[
        "bash",
        "-c",
        &format!(
            "{ASK}; exec 5<>/dev/tcp/::1/4000 && echo v6 >&5 && read -r r <&5 && echo \"$r\"; \
             exec 6<>/dev/tcp/127.0.0.1/4000; {{ head -c 300000 /dev/zero | tr '\\0' a; echo; }} >&6; \
             read -r big <&6; echo ${{#big}}; \
             exec 4<>/dev/tcp/127.0.0.1/4001 2>/dev/null || echo other-port-closed; \
             test -e {} || echo socket-path-absent; find / -xdev -type s 2>/dev/null | wc -l",
            sock.display()
        ),
    ]);
    spec.forwards.push(Forward {
        inside_port: 4000,
        host_unix_socket: sock.clone(),
    });
    let out = f.run(&spec);
    ok(&out);
    assert_eq!(
        out.stdout,
        "egress:ping\negress:v6\n300007\nother-port-closed\nsocket-path-absent\n0\n"
    );
}

#[test]
fn two_bottles_at_once_each_reach_only_their_own_sidecar() {
    let a = Fixture::new();
    let b = Fixture::new();
    let sock_a = a.state.join("a.sock");
    let sock_b = b.state.join("b.sock");
    echo_server(&sock_a, "a");
    echo_server(&sock_b, "b");
    let launch = |f: &Fixture, sock: &Path, other: &Path| {
        // Both run at the same time: each waits until the other's marker appears in its own
        // workspace (written by the test), so their lifetimes overlap.
        let mut spec = f.spec(&[
            "bash",
            "-c",
            &format!(
                "{ASK}; test -e {} || echo other-absent; set -- /proc/[0-9]*; echo $#; \
                 for i in $(seq 100); do test -e /workspace/go && break; sleep 0.05; done; echo done",
                other.display()
            ),
        ]);
        spec.forwards.push(Forward {
            inside_port: 4000,
            host_unix_socket: sock.to_path_buf(),
        });
        let mut stdio = BottleStdio::piped();
        stdio.stderr = StdioMode::Null;
        f.backend.launch(&spec, stdio).unwrap()
    };
    let mut bottle_a = launch(&a, &sock_a, &sock_b);
    let mut bottle_b = launch(&b, &sock_b, &sock_a);
    let names: Vec<String> = [&a, &b]
        .iter()
        .map(|f| {
            let list = f.backend.list().unwrap();
            assert_eq!(list.len(), 1);
            assert!(list[0].running && !list[0].orphaned);
            list[0].identity.clone()
        })
        .collect();
    assert_ne!(names[0], names[1]);
    std::fs::write(a.workspace.join("go"), "").unwrap();
    std::fs::write(b.workspace.join("go"), "").unwrap();
    let read = |bottle: &mut Box<dyn RunningBottle>| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut bottle.take_stdout().unwrap(), &mut s).unwrap();
        (bottle.wait().unwrap().code, s)
    };
    // Only the bottle's init and its bash are in its PID namespace.
    assert_eq!(
        read(&mut bottle_a),
        (0, "a:ping\nother-absent\n2\ndone\n".to_owned())
    );
    assert_eq!(
        read(&mut bottle_b),
        (0, "b:ping\nother-absent\n2\ndone\n".to_owned())
    );
}

#[test]
fn only_workspace_home_and_tmp_are_writable() {
    let f = Fixture::new();
    let out = f.sh(
        "for p in /workspace/w /home/agent/h /tmp/t /var/tmp/v /dev/shm/s; do echo x > $p && echo ok $p; done; \
         for p in /x /usr/x /etc/x /opt/x /run/x /var/x /proc/x /dev/x /etc/hostname; do \
           (echo x > $p) 2>/dev/null && echo WROTE $p || echo denied $p; done; \
         mkdir /newdir 2>/dev/null && echo WROTE /newdir || echo denied /newdir",
    );
    ok(&out);
    assert_eq!(
        out.stdout,
        "ok /workspace/w\nok /home/agent/h\nok /tmp/t\nok /var/tmp/v\nok /dev/shm/s\n\
         denied /x\ndenied /usr/x\ndenied /etc/x\ndenied /opt/x\ndenied /run/x\ndenied /var/x\n\
         denied /proc/x\ndenied /dev/x\ndenied /etc/hostname\ndenied /newdir\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.workspace.join("w")).unwrap(),
        "x\n"
    );
    assert_eq!(std::fs::read_to_string(f.home.join("h")).unwrap(), "x\n");
}

#[test]
fn host_secrets_are_absent() {
    let f = Fixture::new();
    let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let out = f.sh(&format!(
        "for p in /root {real_home} {real_home}/.ssh {real_home}/.aws {real_home}/.config {state} \
           /var/run/docker.sock /run/docker.sock /var/lib /srv /mnt /sys/kernel {ws}; do \
           test -e $p && echo VISIBLE $p || echo absent $p; done; \
         cat /etc/shadow >/dev/null 2>&1 && echo READ /etc/shadow || echo unreadable /etc/shadow; \
         ls /run | wc -l; ls /tmp | wc -l",
        state = f.state.display(),
        ws = f.workspace.display(),
    ));
    ok(&out);
    let expected: String = [
        "/root".to_owned(),
        real_home.clone(),
        format!("{real_home}/.ssh"),
        format!("{real_home}/.aws"),
        format!("{real_home}/.config"),
        f.state.display().to_string(),
        "/var/run/docker.sock".into(),
        "/run/docker.sock".into(),
        "/var/lib".into(),
        "/srv".into(),
        "/mnt".into(),
        "/sys/kernel".into(),
        f.workspace.display().to_string(),
    ]
    .iter()
    .map(|p| format!("absent {p}\n"))
    .collect::<String>()
        + "unreadable /etc/shadow\n0\n0\n";
    assert_eq!(out.stdout, expected);
}

/// The scan of `/etc` and `/opt` (see `plan`) masks what a stranger on the machine could not
/// reach: a socket anyone may connect to but that lives in a system directory, a file only
/// its owner reads, a directory only its owner enters. Started as the launcher starts a
/// bottle (`prepare`, then `launch`): if the launch's plan did not scan, the socket and the
/// file would keep their type inside and the directory would refuse its listing.
#[test]
fn sockets_and_private_entries_under_opt_are_masked_after_prepare_and_launch() {
    if !nix_is_root() {
        println!(
            "skipped: creating entries under /opt needs root (the unit tests of `os` cover the scan)"
        );
        return;
    }
    let f = Fixture::new();
    let opt = tempfile::Builder::new()
        .prefix("bot-bottle-scan-test-")
        .tempdir_in("/opt")
        .unwrap();
    let dir = opt.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = dir.join("daemon.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(dir.join("private.key"), "SECRET\n").unwrap();
    std::fs::set_permissions(
        dir.join("private.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::create_dir(dir.join("private")).unwrap();
    std::fs::write(dir.join("private/inner"), "x\n").unwrap();
    std::fs::set_permissions(
        dir.join("private"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(dir.join("public.txt"), "public\n").unwrap();
    let d = dir.display();
    let spec = f.spec(&[
        "bash",
        "-c",
        &format!(
            "stat -c %F {d}/daemon.sock {d}/private.key; \
             ls -A {d}/private 2>&1 | wc -l; cat {d}/public.txt"
        ),
    ]);
    f.backend.prepare(&spec).unwrap();
    let out = f.run(&spec);
    ok(&out);
    // Masked: `/dev/null` over the socket and the file, an empty tmpfs over the directory.
    assert_eq!(
        out.stdout,
        "character special file\ncharacter special file\n0\npublic\n"
    );
}

#[test]
fn read_only_files_are_placed_and_stay_read_only() {
    let f = Fixture::new();
    let ca = f.state.join("ca.pem");
    std::fs::write(&ca, "BOTTLE CA\n").unwrap();
    let mut spec = f.spec(&[
        "bash",
        "-c",
        "cat /run/bot-bottle/ca.pem; (echo x > /run/bot-bottle/ca.pem) 2>/dev/null || echo ro; \
         test -e /etc/ssl/certs/ca-certificates.crt && cat /etc/ssl/certs/ca-certificates.crt",
    ]);
    spec.files.push(ReadOnlyFile {
        host: ca.clone(),
        inside: "/run/bot-bottle/ca.pem".into(),
    });
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        spec.files.push(ReadOnlyFile {
            host: ca.clone(),
            inside: "/etc/ssl/certs/ca-certificates.crt".into(),
        });
    }
    let out = f.run(&spec);
    let expected = if spec.files.len() == 2 {
        "BOTTLE CA\nro\nBOTTLE CA\n"
    } else {
        "BOTTLE CA\nro\n"
    };
    assert_eq!(out.stdout, expected, "{}", out.stderr);
}

/// Python prints the errno of each dangerous call (0 = it worked).
const SYSCALL_PROBE: &str = r#"
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": {"add_key": 248, "keyctl": 250, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "setns": 308, "io_uring_setup": 425},
      "aarch64": {"add_key": 217, "keyctl": 219, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "setns": 268, "io_uring_setup": 425}}[platform.machine()]
def errno_of(rc):
    return 0 if rc >= 0 else ctypes.get_errno()
res = {}
res["unshare_user"] = errno_of(libc.unshare(0x10000000))
res["unshare_net"] = errno_of(libc.unshare(0x40000000))
res["mount"] = errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
res["ptrace_traceme"] = errno_of(libc.ptrace(0, 0, 0, 0))
res["add_key"] = errno_of(libc.syscall(nr["add_key"], b"user", b"k", b"v", 1, -3))
res["keyctl"] = errno_of(libc.syscall(nr["keyctl"], 0, -3, 0))
res["bpf"] = errno_of(libc.syscall(nr["bpf"], 0, 0, 0))
res["perf_event_open"] = errno_of(libc.syscall(nr["perf_event_open"], 0, 0, -1, -1, 0))
res["userfaultfd"] = errno_of(libc.syscall(nr["userfaultfd"], 0))
res["setns"] = errno_of(libc.syscall(nr["setns"], 0, 0))
res["io_uring_setup"] = errno_of(libc.syscall(nr["io_uring_setup"], 1, None))
for k in sorted(res):
    print(k, os.strerror(res[k]) if res[k] else "ALLOWED")
"#;

#[test]
fn namespace_mount_ptrace_keyring_and_kernel_calls_are_denied() {
    let f = Fixture::new();
    let out = f.run(&f.spec(&["python3", "-c", SYSCALL_PROBE]));
    ok(&out);
    assert_eq!(
        out.stdout,
        "add_key Operation not permitted\nbpf Operation not permitted\nio_uring_setup Operation not permitted\nkeyctl Operation not permitted\n\
         mount Operation not permitted\nperf_event_open Operation not permitted\n\
         ptrace_traceme Operation not permitted\nsetns Operation not permitted\n\
         unshare_net Operation not permitted\nunshare_user Operation not permitted\n\
         userfaultfd Operation not permitted\n"
    );
    let tools = f.sh("unshare -U true 2>/dev/null || echo unshare-denied; \
                      mount -t tmpfs none /tmp 2>/dev/null || echo mount-denied; \
                      if command -v strace >/dev/null; then strace -o /dev/null true 2>/dev/null || echo ptrace-denied; else echo ptrace-denied; fi");
    assert_eq!(
        tools.stdout,
        "unshare-denied\nmount-denied\nptrace-denied\n"
    );
}

#[test]
fn normal_tools_work() {
    let f = Fixture::new();
    let out = f.sh(
        "set -e; cd /workspace; git init -q r; cd r; git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x; \
         git log --format=%s; python3 -c 'import threading,subprocess; t=threading.Thread(target=print, args=(\"py\",)); t.start(); t.join(); print(subprocess.run([\"true\"]).returncode)'; \
         node -e 'require(\"child_process\").execSync(\"true\"); console.log(\"node\")'; curl --version >/dev/null && echo curl",
    );
    ok(&out);
    assert_eq!(out.stdout, "x\npy\n0\nnode\ncurl\n");
}

#[test]
fn the_agent_has_no_privilege_and_cannot_touch_init() {
    let f = Fixture::new();
    let out = f.sh(
        "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'; \
         for l in /proc/1/fd/0 /proc/1/fd/3 /proc/1/root /proc/1/cwd; do readlink $l 2>/dev/null && echo REVEALED $l; done; \
         cat /proc/1/environ >/dev/null 2>&1 && echo REVEALED environ; echo init-hidden; \
         hostname",
    );
    ok(&out);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("1000"));
    assert_eq!(
        lines.by_ref().take(4).collect::<Vec<_>>(),
        vec![
            "CapEff:0000000000000000",
            "CapBnd:0000000000000000",
            "NoNewPrivs:1",
            "Seccomp:2"
        ]
    );
    assert_eq!(lines.next(), Some("init-hidden"));
    assert!(lines.next().is_some_and(|h| h.starts_with("test-")));
}

#[test]
fn landlock_is_enforced_where_the_kernel_has_it() {
    let f = Fixture::new();
    let abi = backend::preflight::landlock_abi();
    let mut bottle = f
        .backend
        .launch(
            &f.spec(&[
                "bash",
                "-c",
                "kill -0 1 2>/dev/null && echo signalled-init || echo init-unreachable",
            ]),
            BottleStdio::piped(),
        )
        .unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut bottle.take_stdout().unwrap(), &mut s).unwrap();
    assert_eq!(bottle.wait().unwrap().code, 0);
    if abi >= 6 {
        assert_eq!(s, "init-unreachable\n");
    } else {
        println!("skipping the Landlock signal-scope check: kernel Landlock ABI is {abi} (< 6)");
    }
}

#[test]
fn copy_mode_gives_the_bottle_a_copy() {
    let f = Fixture::new();
    std::fs::write(f.workspace.join("file"), "original\n").unwrap();
    let copy = f.state.join("copy");
    let mut spec = f.spec(&["bash", "-c", "cat file; echo changed > file"]);
    spec.workspace.mode = backend::WorkspaceMode::Copy { into: copy.clone() };
    let out = f.run(&spec);
    assert_eq!(out.stdout, "original\n");
    assert_eq!(
        std::fs::read_to_string(f.workspace.join("file")).unwrap(),
        "original\n"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("file")).unwrap(),
        "changed\n"
    );
}

#[test]
fn a_workspace_that_would_expose_state_is_refused() {
    let f = Fixture::new();
    let mut spec = f.spec(&["true"]);
    spec.workspace.host = f.state.clone();
    let err = f
        .backend
        .launch(&spec, BottleStdio::piped())
        .err()
        .expect("must refuse");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid bottle spec: the workspace `{0}` would make `{0}` visible inside the bottle; use a directory that does not contain it",
            f.state.display()
        )
    );
    spec.workspace.host = f.state.join("queue");
    std::fs::create_dir_all(&spec.workspace.host).unwrap();
    let err = f
        .backend
        .launch(&spec, BottleStdio::piped())
        .err()
        .expect("must refuse");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid bottle spec: the workspace `{}` lies inside `{}`, which is never given to a bottle; run from a project directory",
            spec.workspace.host.display(),
            f.state.display()
        )
    );
}

/// Host PIDs of `sleep <marker>` processes.
#[test]
fn the_agent_has_a_user_name_home_and_hostname() {
    let f = Fixture::new();
    let mut spec = f.spec(&[
        "bash",
        "-c",
        "whoami; id -gn; getent passwd $(id -u) | cut -d: -f6; getent hosts $(hostname) | awk '{print $1}'",
    ]);
    spec.env.insert("USER".into(), "alice".into());
    let out = f.run(&spec);
    ok(&out);
    assert_eq!(out.stdout, "alice\nalice\n/home/agent\n::1\n");
}

#[test]
fn a_workspace_inside_the_home_is_mounted_over_it() {
    let f = Fixture::new();
    std::fs::write(f.workspace.join("README"), "project\n").unwrap();
    std::fs::write(f.home.join(".gitconfig"), "[user]\n\tname = agent\n").unwrap();
    let mut spec = f.spec(&[
        "bash",
        "-c",
        "pwd; cat README; git config user.name; echo new > ~/project/made-here",
    ]);
    spec.workspace.inside = "/home/agent/project".into();
    let out = f.run(&spec);
    ok(&out);
    assert_eq!(out.stdout, "/home/agent/project\nproject\nagent\n");
    assert_eq!(
        std::fs::read_to_string(f.workspace.join("made-here")).unwrap(),
        "new\n"
    );
}

#[test]
fn a_symlink_to_a_secret_is_refused_as_workspace() {
    let f = Fixture::new();
    let link = f.workspace.join("innocent");
    std::os::unix::fs::symlink(&f.state, &link).unwrap();
    let mut spec = f.spec(&["true"]);
    spec.workspace.host = link;
    let err = f
        .backend
        .launch(&spec, BottleStdio::piped())
        .err()
        .expect("must refuse");
    assert!(
        err.to_string().contains("visible inside the bottle"),
        "{err}"
    );
}

pub(super) fn pids_with_marker(marker: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{marker}\0");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling a PID; at worst it no longer exists.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGKILL);
        }
    }
}

#[test]
fn killing_the_launcher_kills_the_whole_bottle() {
    let f = Fixture::new();
    let marker = format!("{}", 900_000 + std::process::id() % 99_999);
    // A process tree inside: a background sleeper and a foreground one.
    let spec = f.spec(&[
        "bash",
        "-c",
        &format!("sleep {marker} & sleep {marker}; wait"),
    ]);
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
    let launcher_pid = launcher.id();
    // Whatever happens below, the launcher does not outlive the test.
    let _guard = KillOnDrop(launcher_pid);
    wait_until("both sleepers run", || pids_with_marker(&marker).len() == 2);
    assert_eq!(f.backend.list().unwrap().len(), 1);
    launcher.kill().unwrap(); // SIGKILL: no cleanup code runs in the launcher
    launcher.wait().unwrap();
    wait_until("every process of the bottle is gone", || {
        pids_with_marker(&marker).is_empty()
    });
    // What the launcher could not remove is found and removed by cleanup.
    let list = f.backend.list().unwrap();
    assert_eq!(list.len(), 1);
    assert!(!list[0].running);
    let actions = f.backend.cleanup(false).unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(f.backend.list().unwrap(), vec![]);
}

#[test]
fn stop_ends_a_bottle_started_elsewhere() {
    let f = Fixture::new();
    let spec = f.spec(&[
        "bash",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    let mut bottle = f.backend.launch(&spec, BottleStdio::piped()).unwrap();
    let mut out = BufReader::new(bottle.take_stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert!(
        f.backend
            .stop(&spec.identity, Duration::from_secs(5))
            .unwrap()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(
        (bottle.wait().unwrap().code, rest.as_str()),
        (3, "got-term\n")
    );
    assert!(
        !f.backend
            .stop(&spec.identity, Duration::from_secs(1))
            .unwrap()
    );
}

#[test]
fn dropping_the_handle_kills_the_bottle() {
    let f = Fixture::new();
    let marker = format!("{}", 800_000 + std::process::id() % 99_999);
    let spec = f.spec(&["sleep", &marker]);
    let bottle = f.backend.launch(&spec, BottleStdio::piped()).unwrap();
    wait_until("the sleeper runs", || pids_with_marker(&marker).len() == 1);
    drop(bottle);
    assert_eq!(pids_with_marker(&marker), Vec::<u32>::new());
    assert_eq!(f.backend.list().unwrap(), vec![]);
}

#[test]
fn preflight_runs_a_probe_bottle() {
    let f = Fixture::new();
    let status = f.backend.preflight();
    assert!(status.usable, "{}", status.line());
    assert!(
        status.line().contains("a test bottle ran"),
        "{}",
        status.line()
    );
}

#[test]
fn an_unprivileged_launcher_gets_the_same_bottle() {
    if !nix_is_root() {
        println!("already unprivileged: the whole suite covers this case");
        return;
    }
    let f = Fixture::new();
    // Hand the scratch tree to uid/gid 1000 and launch from there.
    let top = f.state.parent().unwrap().to_path_buf();
    chown_tree(&top, 1000, 1000);
    let mut spec = f.spec(&[
        "bash",
        "-c",
        "id -u; cat /etc/shadow >/dev/null 2>&1 || echo shadow-unreadable; echo x > /workspace/w && echo ws-writable; \
         (echo x > /usr/x) 2>/dev/null || echo usr-readonly; ip -o link | wc -l; unshare -U true 2>/dev/null || echo unshare-denied; \
         grep '^CapEff' /proc/self/status | tr -d '\\t'; exit 5",
    ]);
    // Namespaces are what this test is about; a user without a delegated cgroup (this host
    // gives none to uid 1000) could not get limits, see `limits.rs` and `cgroup.rs`.
    spec.resources.allow_unenforced = true;
    let spec_path = f.state.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    chown_tree(&top, 1000, 1000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bottle-helper-for-tests"))
        .arg("launch")
        .arg(&spec_path)
        .arg(&f.state)
        .env_clear()
        .env("HOME", &top)
        .uid(1000)
        .gid(1000)
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (
            Some(5),
            "1000\nshadow-unreadable\nws-writable\nusr-readonly\n1\nunshare-denied\nCapEff:0000000000000000\n"
        ),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(f.workspace.join("w")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        1000,
        "files are created as the launching user"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// Runs the stand-in launcher on a fresh pseudo-terminal (its controlling terminal), feeds
/// `input` after the bottle printed `ready`, and returns (exit code, terminal output).
fn run_on_terminal(f: &Fixture, script: &str, input: &[u8]) -> (Option<i32>, String) {
    use std::io::Read;
    use std::os::fd::{AsRawFd, OwnedFd};
    let mut spec = f.spec(&["bash", "-c", script]);
    spec.interactive = true;
    spec.env.insert("TERM".into(), "dumb".into());
    let spec_path = f.state.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let slave_fd = slave.as_raw_fd();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bottle-helper-for-tests"));
    cmd.arg("launch").arg(&spec_path).arg(&f.state);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0
                || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0
                || libc::dup2(slave_fd, 0) < 0
                || libc::dup2(slave_fd, 1) < 0
                || libc::dup2(slave_fd, 2) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let _guard = KillOnDrop(child.id());
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once every slave descriptor is closed
            Ok(n) => output.extend_from_slice(&buf[..n]),
        }
        if !sent && String::from_utf8_lossy(&output).contains("ready") {
            master.write_all(input).unwrap();
            sent = true;
        }
    }
    let code = child.wait().unwrap().code();
    (code, String::from_utf8_lossy(&output).replace('\r', ""))
}

#[test]
fn an_interactive_bottle_owns_the_terminal_and_gives_it_back() {
    let f = Fixture::new();
    let (code, out) = run_on_terminal(
        &f,
        "read -ra st < /proc/self/stat; [ \"${st[4]}\" = \"${st[7]}\" ] && echo foreground; \
         python3 -c 'import fcntl, termios\ntry:\n  fcntl.ioctl(0, termios.TIOCSTI, b\"x\"); print(\"INJECTED\")\nexcept OSError as e:\n  print(\"tiocsti\", e.strerror)'; \
         echo to-stdout > /dev/stdout; echo to-tty > /dev/tty; \
         trap 'echo got-interrupt; exit 4' INT; echo ready; while true; do sleep 0.05; done",
        b"\x03",
    );
    assert_eq!(
        (code, out.as_str()),
        (
            Some(4),
            "foreground\ntiocsti Operation not permitted\nto-stdout\nto-tty\nready\n^Cgot-interrupt\nlauncher-foreground=yes\n"
        )
    );
}
