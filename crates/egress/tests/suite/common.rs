//! Shared setup: a proxy in-process with a controlled resolver, environment and log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use egress::{LogSink, Proxy, ProxyConfig, RoutesHandle, StaticResolver};
use http::Request;
use http_body_util::Full;
use test_support::client::{self, Collected};
use test_support::{TestCa, Upstream};

pub const TOKEN: &str = "sk-test-SECRET-0123456789";

pub struct Harness {
    pub proxy: SocketAddr,
    pub ca_pem: String,
    pub routes: RoutesHandle,
    pub log: Arc<Mutex<Vec<u8>>>,
    pub _upstream_ca: TestCa,
    pub upstream: Upstream,
    pub _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// Routes YAML with `UPSTREAM` replaced by the upstream's `127.0.0.1:PORT`.
pub async fn start(routes_yaml: &str) -> Harness {
    start_with(routes_yaml, |_, _| {}).await
}

pub async fn start_with(
    routes_yaml: &str,
    tweak: impl FnOnce(&mut ProxyConfig, SocketAddr),
) -> Harness {
    let upstream_ca = TestCa::new("upstream test CA");
    let upstream = Upstream::start_tls(
        &upstream_ca,
        &[
            "api.test",
            "a.wild.test",
            "b.wild.test",
            "other.test",
            "127.0.0.1",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    upstream_ca.write_pem(&ca_file);
    let yaml = routes_yaml.replace("UPSTREAM", &upstream.addr().to_string());
    let routes = policy::parse_routes(&yaml, Path::new("routes.yaml")).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut config = ProxyConfig::new(dir.path().join("ca"));
    config.upstream_ca = vec![ca_file];
    config.log = LogSink::Memory(log.clone());
    let env: HashMap<String, String> = [("TEST_TOKEN".to_string(), TOKEN.to_string())].into();
    config.env = Arc::new(move |k| env.get(k).cloned());
    config.resolver = Arc::new(
        StaticResolver::new()
            .with("localhost", &[IpAddr::from([127, 0, 0, 1])])
            .with("evil.localtest", &[IpAddr::from([127, 0, 0, 1])])
            .with("private.localtest", &[IpAddr::from([10, 0, 0, 5])])
            .with("metadata.localtest", &[IpAddr::from([169, 254, 169, 254])])
            .with("mapped.localtest", &["::ffff:127.0.0.1".parse().unwrap()]),
    );
    tweak(&mut config, upstream.addr());
    let proxy = Proxy::new(config, routes).unwrap();
    let ca_pem = proxy.ca_pem().to_string();
    let handle = proxy.routes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.serve(listener, async move {
        let _ = rx.await;
    }));
    Harness {
        proxy: addr,
        ca_pem,
        routes: handle,
        log,
        _upstream_ca: upstream_ca,
        upstream,
        _dir: dir,
        shutdown: Some(tx),
    }
}

impl Harness {
    /// One HTTPS request through CONNECT host:port, SNI = host.
    pub async fn https(
        &self,
        method: &str,
        host: &str,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Collected {
        let config = test_support::client_config_for_pem(&self.ca_pem);
        let tls = client::tls_through_proxy(self.proxy, host, port, host, config)
            .await
            .unwrap();
        let mut send = client::http1(tls).await;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        client::send(&mut send, req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }

    /// One plain absolute-form request through the proxy.
    pub async fn http_abs(&self, method: &str, url: &str) -> Collected {
        let tcp = tokio::net::TcpStream::connect(self.proxy).await.unwrap();
        let mut send = client::http1(tcp).await;
        let uri: http::Uri = url.parse().unwrap();
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header("host", uri.authority().unwrap().as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        client::send(&mut send, req).await.unwrap()
    }

    pub fn log_text(&self) -> String {
        String::from_utf8(self.log.lock().unwrap().clone()).unwrap()
    }

    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub fn curl_available() -> bool {
    let ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("skipping: curl is not installed (apt-get install curl)");
    }
    ok
}

/// The `bot-bottle` binary, built if needed (it lives in another crate of the workspace), in
/// the profile this test was built in (`debug`, or `release` under `cargo test --release`).
pub fn bot_bottle_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("bot-bottle");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", "bot-bottle", "--bin", "bot-bottle"])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile_dir.file_name() == Some(std::ffi::OsStr::new("release")) {
            cmd.arg("--release");
        }
        // the variables cargo sets for this test binary would make that build differ from
        // (and rebuild over) the normal one
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_CRATE_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_MANIFEST_")
                || key == "CARGO_PRIMARY_PACKAGE"
                || key == "CARGO_TARGET_TMPDIR"
                || key == "OUT_DIR"
            {
                cmd.env_remove(key);
            }
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building bot-bottle failed");
    });
    bin
}
