//! `dlp-allow` against a running egress proxy: a request egress's outbound DLP refused
//! passes once the operator approved the rule for that host, and only then; the audit line
//! says what the approval did.

use std::sync::Arc;
use std::time::Duration;

use egress::{ConnectTo, Proxy, ProxyConfig};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use supervise::{FileApplier, Home, SuperviseConfig, audit, queue};
use test_support::Upstream;

use super::common::{approve, call, post, through_proxy, wait_pending};

const KEY: &str = "AKIAZ3MSJV4WWNKWW5FG";

fn result_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["result"]["structuredContent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_dlp_allow_lets_the_refused_request_through() {
    let upstream = Upstream::start_plain().await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let identity = "dev-00001";
    let initial = "routes:\n  - host: new.test\n  - host: other.test\n";
    let mut pc = ProxyConfig::new(dir.path().join("ca"));
    for host in ["new.test", "other.test"] {
        pc.connect_to.push(
            ConnectTo::parse(&format!("{host}:80:127.0.0.1:{}", upstream.addr().port())).unwrap(),
        );
    }
    let proxy = Proxy::new(pc, supervise::validate::parse_routes(initial).unwrap()).unwrap();
    let routes = proxy.routes();
    let plistener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = plistener.local_addr().unwrap();
    tokio::spawn(proxy.serve(plistener, std::future::pending()));
    let live = routes.clone();
    let applier = FileApplier::new(home.clone()).with_reload(Arc::new(move |_bottle, cfg| {
        live.replace(cfg.clone()).map_err(|e| e.to_string())
    }));
    std::fs::create_dir_all(home.live_config_dir(identity)).unwrap();
    std::fs::write(home.live_config_dir(identity).join("routes.yaml"), initial).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let saddr = listener.local_addr().unwrap();
    let mut cfg = SuperviseConfig::new(home.clone(), identity, Arc::new(applier));
    cfg.max_wait = Duration::from_secs(20);
    tokio::spawn(supervise::serve(listener, cfg, std::future::pending()));

    let header = format!("x-note: {KEY}\r\n");
    let before = through_proxy(paddr, "GET", "http://new.test/x", "new.test", &header).await;
    assert!(before.starts_with("HTTP/1.1 403"), "{before}");

    // an agent cannot weaken dlp through egress-allow
    let weaker = "routes:\n  - host: new.test\n    dlp: log\n  - host: other.test\n";
    let (_, answer) = post(
        saddr,
        "127.0.0.1",
        &call(
            1,
            "egress-allow",
            json!({"routes_yaml": weaker, "justification": "x"}),
        ),
    )
    .await;
    assert!(
        answer.contains("changes the outbound dlp of route new.test"),
        "{answer}"
    );

    let body = call(
        2,
        "dlp-allow",
        json!({"host": "new.test", "rule": "aws-access-key-id", "justification": "the key is a published example"}),
    );
    let agent = tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await });
    let p = wait_pending(&home, Some(identity), 1).await;
    approve(&home, &p[0].proposal.id);
    let (_, answer) = agent.await.unwrap();
    assert_eq!(result_of(&answer)["status"], "approved", "{answer}");

    let after = through_proxy(paddr, "GET", "http://new.test/x", "new.test", &header).await;
    assert_eq!(after, "HTTP/1.1 200 OK");
    // only that host
    let other = through_proxy(paddr, "GET", "http://other.test/x", "other.test", &header).await;
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    let seen: Vec<(String, Vec<String>)> = upstream
        .requests()
        .into_iter()
        .map(|r| {
            let note = r.header("x-note").into_iter().map(str::to_owned).collect();
            (r.path, note)
        })
        .collect();
    assert_eq!(seen, vec![("/x".to_owned(), vec![KEY.to_owned()])]);
    let effects: Vec<Vec<String>> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| e.effect)
        .collect();
    assert_eq!(
        effects,
        vec![
            vec![
                "lets requests to host new.test carry secrets of the dlp rule aws-access-key-id"
                    .to_owned()
            ];
            2
        ]
    );
}

/// A `dlp-allow` holds for the bottle only: approved `once` or for a while, it is refused
/// (the operator is told) instead of silently holding longer than the operator said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlp_allow_approved_once_is_refused_not_widened_to_the_bottle() {
    let upstream = Upstream::start_plain().await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let identity = "dev-00002";
    let initial = "routes:\n  - host: new.test\n";
    let mut pc = ProxyConfig::new(dir.path().join("ca"));
    pc.connect_to.push(
        ConnectTo::parse(&format!("new.test:80:127.0.0.1:{}", upstream.addr().port())).unwrap(),
    );
    let proxy = Proxy::new(pc, supervise::validate::parse_routes(initial).unwrap()).unwrap();
    let routes = proxy.routes();
    let plistener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = plistener.local_addr().unwrap();
    tokio::spawn(proxy.serve(plistener, std::future::pending()));
    let live = routes.clone();
    let applier = FileApplier::new(home.clone()).with_reload(Arc::new(move |_bottle, cfg| {
        live.replace(cfg.clone()).map_err(|e| e.to_string())
    }));
    std::fs::create_dir_all(home.live_config_dir(identity)).unwrap();
    std::fs::write(home.live_config_dir(identity).join("routes.yaml"), initial).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let saddr = listener.local_addr().unwrap();
    let mut cfg = SuperviseConfig::new(home.clone(), identity, Arc::new(applier));
    cfg.max_wait = Duration::from_secs(20);
    tokio::spawn(supervise::serve(listener, cfg, std::future::pending()));

    let header = format!("x-note: {KEY}\r\n");
    let body = call(
        1,
        "dlp-allow",
        json!({"host": "new.test", "rule": "aws-access-key-id", "justification": "example key"}),
    );
    let agent = tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await });
    let p = wait_pending(&home, Some(identity), 1).await;
    queue::answer_granted(
        &home,
        &p[0].proposal.id,
        supervise::Decision::Approved,
        None,
        None,
        "tester",
        supervise::Grant::Once,
    )
    .unwrap();
    let (_, answer) = agent.await.unwrap();
    assert!(
        answer.contains("holds for this bottle only"),
        "the agent is told why: {answer}"
    );
    let after = through_proxy(paddr, "GET", "http://new.test/x", "new.test", &header).await;
    assert!(after.starts_with("HTTP/1.1 403"), "{after}");
    assert!(upstream.requests().is_empty());
}
