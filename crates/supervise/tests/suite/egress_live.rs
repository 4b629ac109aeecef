//! Apply-then-answer against a running egress proxy: the agent's `egress-allow` call
//! returns "approved" only once the proxy has loaded the new routes, so the very next
//! request through the proxy succeeds; a change the proxy refuses is reported to the
//! agent as failed and nothing changes.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;
use supervise::{Applier, FileApplier, queue};
use test_support::Upstream;

use super::common::{approve, call, live_bottle, post, result_of, through_proxy, wait_pending};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_route_works_for_the_very_next_request() {
    let upstream = Upstream::start_plain().await;
    // The proxy, as the sidecar bundle runs it; new.test is pinned to the loopback upstream
    // by the operator (as `--connect-to` does), so no DNS and no private-range exception.
    // Supervise applies with the file applier, reloading the live proxy first.
    let initial = "routes:\n  - host: other.test\n";
    let b = live_bottle(
        &upstream,
        "dev-00001",
        initial,
        &["new.test"],
        |_| {},
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, paddr, saddr) = (b.home.clone(), b.identity, b.proxy, b.supervise);
    let routes = b.routes.clone();
    assert_eq!(
        FileApplier::new(home.clone())
            .current_routes(identity)
            .await
            .unwrap(),
        initial
    );

    // Blocked before.
    let before = through_proxy(paddr, "GET", "http://new.test/x", "new.test", "").await;
    assert!(before.starts_with("HTTP/1.1 403"), "{before}");

    // The agent asks; the operator approves; the answer arrives; the next request passes.
    let wider = format!("{initial}  - host: new.test\n");
    let body = call(
        1,
        "egress-allow",
        json!({"routes_yaml": wider, "justification": "fetch from new.test"}),
    );
    let agent = tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await });
    let p = wait_pending(&home, Some(identity), 1).await;
    approve(&home, &p[0].proposal.id);
    let (_, answer) = agent.await.unwrap();
    assert_eq!(result_of(&answer)["status"], "approved", "{answer}");
    let after = through_proxy(paddr, "GET", "http://new.test/x", "new.test", "").await;
    assert_eq!(after, "HTTP/1.1 200 OK");
    let seen: Vec<(String, String)> = upstream
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(seen, vec![("GET".to_owned(), "/x".to_owned())]);
    assert_eq!(
        std::fs::read_to_string(home.live_config_dir(identity).join("routes.yaml")).unwrap(),
        wider
    );

    // A credential the proxy does not have: the proxy refuses the reload, the agent is told
    // why, the routes stay as they are and the proposal waits for the operator again.
    let body = call(
        2,
        "egress-token-allow",
        json!({"host": "new.test", "token_name": "NOT_SET_TOKEN", "justification": "auth"}),
    );
    let agent = tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await });
    let p = wait_pending(&home, Some(identity), 1).await;
    approve(&home, &p[0].proposal.id);
    let (_, answer) = agent.await.unwrap();
    let r = result_of(&answer);
    assert_eq!(r["status"], "apply-failed", "{answer}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("token_env NOT_SET_TOKEN is not set"),
        "{r}"
    );
    assert_eq!(routes.config().routes.unwrap().len(), 2);
    assert!(routes.config().routes.unwrap()[1].token_env.is_none());
    let (entries, _) = queue::pending_all(&home, None).unwrap();
    assert_eq!(entries[0].status, supervise::Status::ApplyFailed);

    // The audit log shows both decisions, with an intact hash chain.
    let log: Vec<_> = supervise::audit::read_all(&home, Some(identity), None)
        .unwrap()
        .into_iter()
        .map(|e| (e.tool, e.decision, e.stage.unwrap_or_default(), e.effect))
        .collect();
    let line = |tool: &str, decision: &str, stage: &str, effect: &[&str]| {
        (
            tool.to_owned(),
            decision.to_owned(),
            stage.to_owned(),
            effect.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        log,
        vec![
            line(
                "egress-allow",
                "approved",
                "decided",
                &["adds host new.test: any request"]
            ),
            line(
                "egress-allow",
                "approved",
                "applied",
                &["adds host new.test: any request"]
            ),
            line(
                "egress-token-allow",
                "approved",
                "decided",
                &["gives host new.test the credential NOT_SET_TOKEN"]
            ),
            line("egress-token-allow", "apply-failed", "not-applied", &[]),
        ]
    );
    assert_eq!(supervise::audit::verify(&home).unwrap(), (vec![], 1));
}
