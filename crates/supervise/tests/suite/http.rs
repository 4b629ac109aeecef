//! The HTTP face: `/mcp` with initialize, tools/list, Host checks, body limit, parse errors.

use std::sync::Arc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use supervise::{Home, SuperviseConfig};

use super::common::{call, post, recording, rpc, start};

fn json_body(body: &str) -> Value {
    let body = body.trim();
    let body = body
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn initialize_list_and_call_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let srv = start(
        &home,
        "dev-00001",
        Arc::new(recording()),
        Duration::from_secs(1),
    )
    .await;
    let init = rpc(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    let (status, body) = post(srv.addr, "127.0.0.1", &init).await;
    assert_eq!(status, 200, "{body}");
    let v = json_body(&body);
    assert_eq!(v["result"]["serverInfo"]["name"], "bot-bottle-supervise");

    let (_, body) = post(srv.addr, "127.0.0.1", &rpc(2, "tools/list", json!({}))).await;
    let v = json_body(&body);
    let mut names: Vec<String> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "dlp-allow",
            "egress-allow",
            "egress-block",
            "egress-token-allow",
            "gitleaks-allow",
            "list-egress-routes",
            "proposal-status"
        ]
    );
    let allow = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "egress-allow")
        .unwrap();
    assert_eq!(
        allow["inputSchema"]["required"],
        json!(["routes_yaml", "justification"])
    );

    let (_, body) = post(
        srv.addr,
        "127.0.0.1",
        &call(3, "list-egress-routes", json!({})),
    )
    .await;
    assert_eq!(
        json_body(&body)["result"]["content"][0]["text"],
        super::common::ROUTES
    );

    let (_, body) = post(
        srv.addr,
        "localhost",
        &call(
            4,
            "egress-allow",
            json!({"routes_yaml": "", "justification": "x"}),
        ),
    )
    .await;
    assert_eq!(json_body(&body)["error"]["code"], -32602);
    let (_, body) = post(srv.addr, "127.0.0.1", &call(5, "rm-rf", json!({}))).await;
    assert_eq!(json_body(&body)["error"]["code"], -32601);
    let (_, body) = post(srv.addr, "127.0.0.1", "{\"jsonrpc\": \"2.0\", \"id\": 6, ").await;
    assert_eq!(json_body(&body)["error"]["code"], -32700, "{body}");
    srv.shutdown().await;
}

#[tokio::test]
async fn foreign_host_headers_and_oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let srv = start(
        &home,
        "dev-00001",
        Arc::new(recording()),
        Duration::from_secs(1),
    )
    .await;
    let (status, _) = post(srv.addr, "evil.example", &rpc(1, "tools/list", json!({}))).await;
    assert_eq!(status, 403);
    let big = call(
        2,
        "egress-allow",
        json!({"routes_yaml": "x".repeat(100 * 1024), "justification": "x"}),
    );
    let (status, _) = post(srv.addr, "127.0.0.1", &big).await;
    assert_eq!(status, 413);
    srv.shutdown().await;
}

#[tokio::test]
async fn configured_host_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = SuperviseConfig::new(home, "dev-00001", Arc::new(recording()));
    cfg.allowed_hosts = vec!["supervise:9100".into()];
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(supervise::serve(listener, cfg, async move {
        let _ = rx.await;
    }));
    let (ok, _) = post(addr, "supervise:9100", &rpc(1, "tools/list", json!({}))).await;
    let (other_port, _) = post(addr, "supervise:9200", &rpc(1, "tools/list", json!({}))).await;
    let (loopback, _) = post(addr, "127.0.0.1", &rpc(1, "tools/list", json!({}))).await;
    assert_eq!((ok, other_port, loopback), (200, 403, 403));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
