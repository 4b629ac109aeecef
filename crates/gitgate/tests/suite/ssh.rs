//! Deploy keys over a real sshd on loopback: the push goes through with the right key and
//! pinned host key, and fails closed with a wrong host key or a wrong key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;

use super::support::*;

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    host_pub: String,
    user: String,
    log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(format!("{}.pub", path.display()))
        .unwrap()
        .trim()
        .to_string()
}

/// Starts sshd on a free loopback port, accepting `authorized` for the current user.
/// Returns None (and says why) when sshd is not installed.
fn start_sshd(dir: &Path, authorized: &str) -> Option<Sshd> {
    if !Path::new(SSHD).exists() {
        eprintln!("skipping: {SSHD} not found (install the openssh-server package)");
        return None;
    }
    let _ = std::fs::create_dir_all("/run/sshd");
    let host_pub = keygen(&dir.join("host_key"));
    let auth = dir.join("authorized_keys");
    std::fs::write(&auth, format!("{authorized}\n")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             AuthenticationMethods publickey\nAllowTcpForwarding no\nX11Forwarding no\n\
             AllowAgentForwarding no\nLogLevel VERBOSE\n",
            dir.join("host_key").display(),
            auth.display()
        ),
    )
    .unwrap();
    let log = dir.join("sshd.log");
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let mut sshd = Sshd {
        child,
        port,
        host_pub,
        user,
        log,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = sshd.child.try_wait() {
            panic!(
                "sshd exited ({status}): {}",
                std::fs::read_to_string(&sshd.log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(sshd)
}

fn ssh_yaml(sshd: &Sshd, upstream: &Path, key: &Path, host_key: &str) -> String {
    format!(
        "repos:\n  app:\n    url: ssh://{}@127.0.0.1:{}{}\n    key:\n      provider: static\n      path: {}\n    host_key: {host_key}\n",
        sshd.user,
        sshd.port,
        upstream.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_over_ssh_with_deploy_key_and_pinned_host_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let deploy = root.join("deploy");
    let deploy_pub = keygen(&deploy);
    let Some(sshd) = start_sshd(&root, &deploy_pub) else {
        return;
    };
    let up = upstream(&root, "app");
    let gate = start_gate(
        &root,
        &ssh_yaml(&sshd, &up, &deploy, &sshd.host_pub),
        options(),
    )
    .await;

    // The key the gate uses is its own 0600 copy.
    let copied = gate.state.join("keys/app");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copied).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let work = root.join("work");
    let (g, w) = (gate.url("app"), work.clone());
    let out = blocking(move || {
        git_out(
            w.parent().unwrap(),
            &["clone", "-q", &g, w.to_str().unwrap()],
        )
    })
    .await;
    assert!(
        out.status.success(),
        "clone over ssh failed: {}\nsshd log:\n{}",
        stderr(&out),
        std::fs::read_to_string(&sshd.log).unwrap_or_default()
    );
    let head = commit_file(&work, "a.txt", "a\n", "over ssh");
    let w = work.clone();
    let out = blocking(move || git_out(&w, &["push", "origin", "main"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(git(&up, &["rev-parse", "main"]), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_or_wrong_deploy_key_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let deploy = root.join("deploy");
    let deploy_pub = keygen(&deploy);
    let Some(sshd) = start_sshd(&root, &deploy_pub) else {
        return;
    };
    let up = upstream(&root, "app");

    // A host key that is not the server's.
    let impostor = keygen(&root.join("impostor"));
    let dir = root.join("g1");
    std::fs::create_dir_all(&dir).unwrap();
    let gate = start_gate(&dir, &ssh_yaml(&sshd, &up, &deploy, &impostor), options()).await;
    let (g, r) = (gate.url("app"), root.clone());
    let out = blocking(move || git_out(&r, &["clone", "-q", &g, "w1"])).await;
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(msg.contains("cannot sync `app` with its upstream"), "{msg}");
    assert!(msg.contains("Host key verification failed"), "{msg}");

    // The right host key but a key the server does not know.
    let stranger = root.join("stranger");
    keygen(&stranger);
    let dir = root.join("g2");
    std::fs::create_dir_all(&dir).unwrap();
    let gate = start_gate(
        &dir,
        &ssh_yaml(&sshd, &up, &stranger, &sshd.host_pub),
        options(),
    )
    .await;
    let (g, r) = (gate.url("app"), root.clone());
    let out = blocking(move || git_out(&r, &["clone", "-q", &g, "w2"])).await;
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(msg.contains("Permission denied"), "{msg}");
}
