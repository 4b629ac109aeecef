//! The real `bot-bottle egress serve` fronting a real `curl`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use pretty_assertions::assert_eq;
use test_support::{TestCa, Upstream};

use super::common::{bot_bottle_bin, curl_available};

struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, routes: &Path, upstream_ca: &Path) -> Served {
    let mut child = Command::new(bot_bottle_bin())
        .args(["egress", "serve", "--listen", "127.0.0.1:0"])
        .arg("--routes")
        .arg(routes)
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .arg("--upstream-ca")
        .arg(upstream_ca)
        .arg("--log-file")
        .arg(dir.join("requests.log"))
        .env("TEST_TOKEN", "sk-binary-SECRET-42")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Served { child, addr }
}

fn curl(served: &Served, ca: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}", "--proxy"])
        .arg(format!("http://{}", served.addr))
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.to_string(), body.to_string())
}

async fn setup(routes: &str) -> (tempfile::TempDir, Upstream, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new("binary upstream CA");
    let upstream = Upstream::start_tls(&upstream_ca, &["api.test", "other.test"]).await;
    upstream_ca.write_pem(&dir.path().join("upstream-ca.pem"));
    let routes_path = dir.path().join("routes.yaml");
    std::fs::write(
        &routes_path,
        routes.replace("UPSTREAM", &upstream.addr().to_string()),
    )
    .unwrap();
    (dir, upstream, routes_path)
}

const ROUTES: &str = "log: all\nroutes:\n  - host: api.test\n    connect_to: UPSTREAM\n    auth_scheme: Bearer\n    token_env: TEST_TOKEN\n    matches:\n      - paths: [{type: prefix, value: /v1/}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_binary() {
    if !curl_available() {
        return;
    }
    let (dir, upstream, routes) = setup(ROUTES).await;
    let served = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || serve(&d, &routes, &d.join("upstream-ca.pem"))
    })
    .await
    .unwrap();
    let ca = dir.path().join("ca/ca.pem");
    let run = |url: &'static str, extra: Vec<&'static str>| {
        let ca = ca.clone();
        let s = &served;
        curl(s, &ca, url, &extra)
    };
    let ok = tokio::task::block_in_place(|| {
        run(
            "https://api.test/v1/models",
            vec!["-H", "Authorization: Bearer placeholder"],
        )
    });
    assert_eq!(ok, ("200".to_string(), "ok".to_string()));
    let blocked = tokio::task::block_in_place(|| run("https://api.test/v2/models", vec!["-i"]));
    assert_eq!(blocked.0, "403");
    assert!(
        blocked.1.contains("x-bot-bottle-blocked: path-not-allowed"),
        "{}",
        blocked.1
    );
    assert!(blocked.1.contains("egress-allow"), "{}", blocked.1);
    // a host without a route: the tunnel is completed and the request inside it answered,
    // so curl shows the advice (not only `CONNECT tunnel failed, response 403`)
    let refused = tokio::task::block_in_place(|| run("https://nothere.test/", vec![]));
    assert_eq!(
        refused,
        (
            "403".to_string(),
            "bot-bottle egress blocked GET https://nothere.test:443/: no route allows nothere.test:443.\nTo ask the operator for access, use the egress-allow MCP tool.\n".to_string()
        )
    );
    let reqs = upstream.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("authorization"),
        vec!["Bearer sk-binary-SECRET-42"]
    );
    let log = std::fs::read_to_string(dir.path().join("requests.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(!log.contains("sk-binary-SECRET-42") && !log.contains("placeholder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_file_reload_keeps_old_rules_when_malformed() {
    if !curl_available() {
        return;
    }
    let (dir, _upstream, routes) = setup(ROUTES).await;
    let served = {
        let d = dir.path().to_path_buf();
        let r = routes.clone();
        tokio::task::spawn_blocking(move || serve(&d, &r, &d.join("upstream-ca.pem")))
            .await
            .unwrap()
    };
    let ca = dir.path().join("ca/ca.pem");
    let get = |url: &str| tokio::task::block_in_place(|| curl(&served, &ca, url, &[]).0);
    assert_eq!(get("https://api.test/v2/x"), "403");
    std::fs::write(&routes, "routes:\n  - host: api.test\n    bogus: [\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(get("https://api.test/v1/x"), "200");
    assert_eq!(get("https://api.test/v2/x"), "403");
    let widened = std::fs::read_to_string(dir.path().join("upstream-ca.pem"))
        .map(|_| ())
        .ok();
    assert_eq!(widened, Some(()));
    let new_routes = ROUTES.replace("prefix, value: /v1/", "prefix, value: /v");
    let addr = _upstream.addr().to_string();
    std::fs::write(&routes, new_routes.replace("UPSTREAM", &addr)).unwrap();
    let mut status = String::new();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        status = get("https://api.test/v2/x");
        if status == "200" {
            break;
        }
    }
    assert_eq!(status, "200");
}

fn vm_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_download_stays_in_constant_memory() {
    if !curl_available() {
        return;
    }
    let (dir, _upstream, routes) =
        setup("routes:\n  - host: api.test\n    connect_to: UPSTREAM\n").await;
    let served = {
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || serve(&d, &routes, &d.join("upstream-ca.pem")))
            .await
            .unwrap()
    };
    let ca = dir.path().join("ca/ca.pem");
    let pid = served.child.id();
    let before = vm_kb(pid, "VmRSS:");
    let n: u64 = 1 << 30;
    let out = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "600",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                "--proxy",
            ])
            .arg(format!("http://{}", served.addr))
            .arg("--cacert")
            .arg(&ca)
            .arg(format!("https://api.test/bytes?n={n}"))
            .output()
            .unwrap()
    });
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        n.to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = vm_kb(pid, "VmHWM:");
    eprintln!("egress RSS before {before} KiB, peak during 1 GiB download {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB is not constant memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_proxy_cleanly() {
    let (dir, _upstream, routes) = setup(ROUTES).await;
    let mut served = {
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || serve(&d, &routes, &d.join("upstream-ca.pem")))
            .await
            .unwrap()
    };
    let pid = served.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..50 {
        if let Some(s) = served.child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(exited.map(|s| s.code()), Some(Some(0)));
}
