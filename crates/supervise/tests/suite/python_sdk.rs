//! A real MCP client written by others (the official Python SDK, `pip install mcp`)
//! drives the server while this test plays the operator through the queue API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use supervise::apply::AppliedCall;
use supervise::{Decision, Home, Status, audit, queue};

use super::common::{recording, start};

fn python_with_mcp() -> Option<String> {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import mcp"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(py)
}

/// Plays the operator until `stop`: answers each pending proposal by the keyword in its
/// justification (APPROVE, MODIFY, REJECT; LATER only once the agent got 'pending' and
/// said so by creating the `marker` file).
async fn operator(home: Home, stop: tokio::sync::watch::Receiver<bool>, marker: PathBuf) {
    while !*stop.borrow() {
        let (entries, _) = queue::pending_all(&home, None).unwrap();
        for e in entries.into_iter().filter(|e| e.status == Status::Pending) {
            let p = &e.proposal;
            let j = p.justification.as_str();
            let (decision, file, notes) = if j.starts_with("APPROVE") {
                (Decision::Approved, None, None)
            } else if j.starts_with("MODIFY") {
                let edited = p.proposed_file.replace("crates.io", "index.crates.io");
                (
                    Decision::Modified,
                    Some(edited),
                    Some("only the index".to_owned()),
                )
            } else if j.starts_with("REJECT") {
                (Decision::Rejected, None, Some("keep the routes".to_owned()))
            } else {
                if !marker.exists() {
                    continue;
                }
                (Decision::Approved, None, None)
            };
            queue::answer(&home, &p.id, decision, file, notes, "tester").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_client(py: &str, url: &str, mode: &str, marker: &Path) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");
    let t = std::time::Instant::now();
    let out = tokio::process::Command::new(py)
        .args([script, url, mode])
        .env("PENDING_MARKER", marker)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}\nits steps:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "client ({mode}) ran {:?}; its timings:\n{}",
        t.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(steps: &[Value]) -> Vec<Value> {
    steps
        .iter()
        .map(|s| {
            let mut m = s.as_object().unwrap().clone();
            m.remove("id");
            if let Some(Value::String(t)) = m.get("text").cloned() {
                // keep the first word of answers (their status), whole text of listings
                if m.contains_key("status") {
                    m.insert(
                        "text".into(),
                        Value::String(t.split(':').next().unwrap_or("").to_owned()),
                    );
                }
            }
            Value::Object(m)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_drives_every_tool() {
    let Some(py) = python_with_mcp() else {
        eprintln!("skipping: python3 with the `mcp` package is not installed (pip install mcp)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    let srv = start(
        &home,
        "dev-00001",
        Arc::new(applier.clone()),
        Duration::from_secs(4),
    )
    .await;
    let marker = dir.path().join("agent-got-pending");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let op = tokio::spawn(operator(home.clone(), stop_rx, marker.clone()));
    let url = format!("http://{}/mcp", srv.addr);

    let steps = run_client(&py, &url, "legacy", &marker).await;
    let base = "log: blocks\nroutes:\n  - host: api.example.com\n";
    assert_eq!(
        summary(&steps),
        vec![
            json!({"step": "list_tools", "names": ["dlp-allow", "egress-allow", "egress-block", "egress-token-allow", "gitleaks-allow", "list-egress-routes", "proposal-status"]}),
            json!({"step": "list_routes", "text": base}),
            json!({"step": "allow", "status": "approved", "is_error": false, "text": "approved"}),
            json!({"step": "modify", "status": "modified", "is_error": false, "text": "modified"}),
            json!({"step": "reject", "status": "rejected", "is_error": false, "text": "rejected"}),
            json!({"step": "token", "status": "approved", "is_error": false, "text": "approved"}),
            json!({"step": "gitleaks", "status": "approved", "is_error": false, "text": "approved"}),
            json!({"step": "later", "status": "pending", "is_error": false, "text": "pending"}),
            json!({"step": "status", "status": "approved", "is_error": false, "text": "approved"}),
            json!({"step": "empty", "error_code": -32602, "message": "egress-allow: 'routes_yaml' is empty: pass the full content"}),
            json!({"step": "no_justification", "error_code": -32602, "message": "egress-allow: 'justification' is required: say in a sentence or two why you need this, the operator reads it"}),
            json!({"step": "log_change", "error_code": -32602, "message": "egress-allow: the proposed routes.yaml changes 'log' (from blocks to off); the request log is not yours to change, keep 'log' as it is"}),
            json!({"step": "unknown", "error_code": -32601, "message": "unknown tool \"run-shell\"; the tools are list-egress-routes, egress-allow, egress-block, egress-token-allow, gitleaks-allow, dlp-allow and proposal-status"}),
        ]
    );
    // What was applied, in order: pypi, the operator's edit, the token, the finding, later.
    let calls = applier.calls();
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(
        calls[0],
        AppliedCall::Routes {
            bottle: "dev-00001".into(),
            text: format!("{base}  - host: pypi.org\n")
        }
    );
    assert_eq!(
        calls[1],
        AppliedCall::Routes {
            bottle: "dev-00001".into(),
            text: format!("{base}  - host: pypi.org\n  - host: index.crates.io\n")
        }
    );
    assert_eq!(
        calls[2],
        AppliedCall::Token {
            bottle: "dev-00001".into(),
            host: "api.example.com".into(),
            token_name: "API_TOKEN".into()
        }
    );
    assert_eq!(
        calls[3],
        AppliedCall::Finding {
            bottle: "dev-00001".into(),
            fingerprint: "0a1b:tests/fixture.py:generic-api-key:3".into()
        }
    );
    let decisions: Vec<String> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| {
            format!(
                "{}:{}:{}:{}",
                e.component,
                e.tool,
                e.decision,
                e.stage.as_deref().unwrap_or("-")
            )
        })
        .collect();
    // Each decision is audited when the operator makes it, and an approval again when its
    // server puts it in effect.
    assert_eq!(
        decisions,
        vec![
            "egress:egress-allow:approved:decided",
            "egress:egress-allow:approved:applied",
            "egress:egress-allow:modified:decided",
            "egress:egress-allow:modified:applied",
            "egress:egress-block:rejected:decided",
            "egress:egress-token-allow:approved:decided",
            "egress:egress-token-allow:approved:applied",
            "gitleaks:gitleaks-allow:approved:decided",
            "gitleaks:gitleaks-allow:approved:applied",
            "egress:egress-allow:approved:decided",
            "egress:egress-allow:approved:applied",
        ]
    );
    assert_eq!(audit::verify(&home).unwrap(), (vec![], 2));

    // A client of the stateless revision (discover, no initialize) works too.
    let steps = run_client(&py, &url, "auto", &marker).await;
    assert_eq!(
        summary(&steps).last().unwrap(),
        &json!({"step": "allow", "status": "approved", "is_error": false, "text": "approved"})
    );

    let _ = stop_tx.send(true);
    op.await.unwrap();
    let t = std::time::Instant::now();
    srv.shutdown().await;
    eprintln!("server shutdown took {:?}", t.elapsed());
}
