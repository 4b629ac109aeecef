//! Grants that end, end to end: an approval once serves one request through the real
//! egress proxy, an approval for 4 s stops at its expiry with nobody answering anything,
//! and supervise's sweep takes both out of the live routes with an audit line each.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;
use supervise::{Decision, queue};
use test_support::Upstream;

use super::common::{call, live_bottle, post, result_of, through_proxy, until, wait_pending};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_timed_approvals_end_in_the_proxy_and_are_swept_and_audited() {
    let upstream = Upstream::start_plain().await;
    let initial = "routes:\n  - host: other.test\n";
    let b = live_bottle(
        &upstream,
        "dev-00001",
        initial,
        &["once.test", "timed.test"],
        |_| {},
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, paddr, saddr) = (b.home.clone(), b.identity, b.proxy, b.supervise);
    let (routes, routes_file) = (b.routes.clone(), b.routes_file());

    // Once: the agent is told so, one request passes, the next is refused.
    let body = call(
        1,
        "egress-allow",
        json!({"routes_yaml": format!("{initial}  - host: once.test\n"), "justification": "one fetch"}),
    );
    let agent = tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await });
    let p = wait_pending(&home, Some(identity), 1).await;
    let once_id = p[0].proposal.id.clone();
    queue::answer_granted(
        &home,
        &once_id,
        Decision::Approved,
        None,
        None,
        "tester",
        supervise::Grant::Once,
    )
    .unwrap();
    let (_, answer) = agent.await.unwrap();
    let r = result_of(&answer);
    assert_eq!(
        (r["status"].as_str(), r["grant"].as_str()),
        (Some("approved"), Some("once"))
    );
    assert!(
        answer.contains("How long: it holds for one request only, then it is gone."),
        "{answer}"
    );
    // list-egress-routes shows what is left of it.
    let (_, listed) = post(
        saddr,
        "127.0.0.1",
        &call(9, "list-egress-routes", json!({})),
    )
    .await;
    assert!(
        listed.contains("# routes[1] (once.test): 1 request left, then it is gone"),
        "{listed}"
    );
    let url = "http://once.test/x";
    assert_eq!(
        through_proxy(paddr, "GET", url, "once.test", "").await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        through_proxy(paddr, "GET", url, "once.test", "").await,
        "HTTP/1.1 403 Forbidden"
    );
    until("the used-up route leaves the live routes", async || {
        !std::fs::read_to_string(&routes_file)
            .unwrap()
            .contains("once.test")
    })
    .await;

    // For 4 s: works, then stops on its own; nobody calls supervise or answers anything.
    let body = call(
        2,
        "egress-allow",
        json!({"routes_yaml": format!("{initial}  - host: timed.test\n"), "justification": "a while"}),
    );
    let agent = tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await });
    let p = wait_pending(&home, Some(identity), 1).await;
    let timed_id = p[0].proposal.id.clone();
    queue::answer_granted(
        &home,
        &timed_id,
        Decision::Approved,
        None,
        None,
        "tester",
        supervise::Grant::For { seconds: 4 },
    )
    .unwrap();
    let (_, answer) = agent.await.unwrap();
    assert!(
        answer.contains("How long: it holds for 4s (until "),
        "{answer}"
    );
    let expires = result_of(&answer)["expires"].as_str().unwrap().to_owned();
    let expires =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let url = "http://timed.test/y";
    let first = through_proxy(paddr, "GET", url, "timed.test", "").await;
    // It works until its time; only a machine too slow to ask within 4 s sees it refused.
    if time::OffsetDateTime::now_utc() < expires {
        assert_eq!(first, "HTTP/1.1 200 OK");
    } else {
        eprintln!("note: the first request came after the expiry; only the end is checked");
    }
    until("the proxy refuses the expired route", async || {
        through_proxy(paddr, "GET", url, "timed.test", "").await == "HTTP/1.1 403 Forbidden"
    })
    .await;
    until("the expired route leaves the live routes", async || {
        !std::fs::read_to_string(&routes_file)
            .unwrap()
            .contains("timed.test")
    })
    .await;
    assert_eq!(
        routes
            .config()
            .routes
            .unwrap()
            .iter()
            .map(|r| r.host.as_str())
            .collect::<Vec<_>>(),
        vec!["other.test"]
    );

    // The audit chain: each grant's scope when applied, and its end.
    let log: Vec<(String, String, Option<String>, String)> =
        supervise::audit::read_all(&home, Some(identity), None)
            .unwrap()
            .into_iter()
            .filter(|e| e.stage.as_deref() != Some("decided"))
            .map(|e| {
                let grant = e
                    .grant
                    .map(|g| g.split(" until ").next().unwrap().to_owned());
                (
                    e.proposal_id,
                    e.stage.unwrap_or_default(),
                    grant,
                    e.effect.join("; "),
                )
            })
            .collect();
    let line = |id: &str, stage: &str, grant: &str, effect: &str| {
        (
            id.to_owned(),
            stage.to_owned(),
            Some(grant.to_owned()),
            effect.to_owned(),
        )
    };
    assert_eq!(
        log,
        vec![
            line(
                &once_id,
                "applied",
                "once",
                "adds host once.test: any request"
            ),
            line(
                &once_id,
                "used-up",
                "ended: used-up",
                "removes route once.test: its grant is used up"
            ),
            line(
                &timed_id,
                "applied",
                "for 4s",
                "adds host timed.test: any request"
            ),
            line(
                &timed_id,
                "expired",
                "ended: expired",
                "removes route timed.test: its grant expired"
            ),
        ]
    );
    let (breaks, files) = supervise::audit::verify(&home).unwrap();
    assert_eq!((breaks, files), (vec![], 1));
}
