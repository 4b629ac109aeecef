//! `dlp-allow` against a running egress proxy: a request egress's outbound DLP refused
//! passes once the operator approved the rule for that host, and only then; the audit line
//! says what the approval did. Approved once or for a while, the rule ends in the proxy on
//! its own and supervise's sweep takes it off the route with an audit line.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;
use supervise::{Decision, audit, queue};
use test_support::Upstream;

use super::common::{
    approve, call, live_bottle, post, result_of, through_proxy, until, wait_pending,
};

const KEY: &str = "AKIAZ3MSJV4WWNKWW5FG";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_dlp_allow_lets_the_refused_request_through() {
    let upstream = Upstream::start_plain().await;
    let b = live_bottle(
        &upstream,
        "dev-00001",
        "routes:\n  - host: new.test\n  - host: other.test\n",
        &["new.test", "other.test"],
        |_| {},
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, paddr, saddr) = (b.home.clone(), b.identity, b.proxy, b.supervise);
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

/// A `dlp-allow` approved once lets one request with the rule's secret through and is then
/// gone; approved for a while, it lets them through until its time and is then gone, with
/// nobody answering anything. Each is shown in `list-egress-routes` while it holds, the agent
/// is told how long it holds, and its end is an audit line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlp_allow_once_or_for_a_while_ends_in_the_proxy_and_is_swept_and_audited() {
    let upstream = Upstream::start_plain().await;
    let b = live_bottle(
        &upstream,
        "dev-00002",
        "routes:\n  - host: once.test\n  - host: timed.test\n",
        &["once.test", "timed.test"],
        |_| {},
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, paddr, saddr) = (b.home.clone(), b.identity, b.proxy, b.supervise);
    let header = format!("x-note: {KEY}\r\n");
    let ask = |id: u64, host: &'static str| {
        let body = call(
            id,
            "dlp-allow",
            json!({"host": host, "rule": "aws-access-key-id", "justification": "example key"}),
        );
        tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await })
    };
    let grant = |id: &str, grant: supervise::Grant| {
        queue::answer_granted(&home, id, Decision::Approved, None, None, "tester", grant).unwrap();
    };

    // Once.
    let agent = ask(1, "once.test");
    let p = wait_pending(&home, Some(identity), 1).await;
    let once_id = p[0].proposal.id.clone();
    grant(&once_id, supervise::Grant::Once);
    let (_, answer) = agent.await.unwrap();
    assert_eq!(result_of(&answer)["grant"], "once", "{answer}");
    assert!(
        answer.contains("How long: it holds for one request only, then it is gone."),
        "{answer}"
    );
    let (_, listed) = post(
        saddr,
        "127.0.0.1",
        &call(9, "list-egress-routes", json!({})),
    )
    .await;
    assert!(
        listed.contains(
            "# routes[0] (once.test): dlp rule aws-access-key-id let through: 1 request left, then it is gone"
        ),
        "{listed}"
    );
    let url = "http://once.test/x";
    let first = through_proxy(paddr, "GET", url, "once.test", &header).await;
    let second = through_proxy(paddr, "GET", url, "once.test", &header).await;
    let clean = through_proxy(paddr, "GET", url, "once.test", "").await;
    assert_eq!(
        [first.as_str(), second.as_str(), clean.as_str()],
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 403 Forbidden",
            "HTTP/1.1 200 OK"
        ]
    );
    until("the used-up dlp grant leaves the live routes", async || {
        !std::fs::read_to_string(b.routes_file())
            .unwrap()
            .contains("dlp_allow_grants")
    })
    .await;

    // For 4 s.
    let agent = ask(2, "timed.test");
    let p = wait_pending(&home, Some(identity), 1).await;
    let timed_id = p[0].proposal.id.clone();
    grant(&timed_id, supervise::Grant::For { seconds: 4 });
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
    let first = through_proxy(paddr, "GET", url, "timed.test", &header).await;
    // It works until its time; only a machine too slow to ask within 4 s sees it refused.
    if time::OffsetDateTime::now_utc() < expires {
        assert_eq!(first, "HTTP/1.1 200 OK");
    } else {
        eprintln!("note: the first request came after the expiry; only the end is checked");
    }
    until("the proxy refuses the key again", async || {
        through_proxy(paddr, "GET", url, "timed.test", &header).await == "HTTP/1.1 403 Forbidden"
    })
    .await;
    until("the expired dlp grant leaves the live routes", async || {
        !std::fs::read_to_string(b.routes_file())
            .unwrap()
            .contains("dlp_allow_grants")
    })
    .await;
    // The sweep writes the audit line before the live files: it is there already.
    assert!(
        audit::read_all(&home, Some(identity), None)
            .unwrap()
            .iter()
            .any(|e| e.stage.as_deref() == Some("expired")),
        "the grant left the live routes before its end was audited"
    );
    // the routes themselves stay: only the rule's grant ended
    assert_eq!(
        b.routes
            .config()
            .routes
            .unwrap()
            .iter()
            .map(|r| (r.host.as_str(), r.dlp_allow_grants.is_none()))
            .collect::<Vec<_>>(),
        vec![("once.test", true), ("timed.test", true)]
    );

    let log: Vec<(String, String, Option<String>, String)> =
        audit::read_all(&home, Some(identity), None)
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
                "lets requests to host once.test carry secrets of the dlp rule aws-access-key-id"
            ),
            line(
                &once_id,
                "used-up",
                "ended: used-up",
                "removes dlp rule aws-access-key-id on route once.test: its grant is used up"
            ),
            line(
                &timed_id,
                "applied",
                "for 4s",
                "lets requests to host timed.test carry secrets of the dlp rule aws-access-key-id"
            ),
            line(
                &timed_id,
                "expired",
                "ended: expired",
                "removes dlp rule aws-access-key-id on route timed.test: its grant expired"
            ),
        ]
    );
    assert_eq!(audit::verify(&home).unwrap(), (vec![], 1));
    // only the requests DLP let through, and the clean one, reached the upstream: the once
    // pair, then /y for as long as the timed grant held
    let paths: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[..2], ["/x", "/x"], "{paths:?}");
    assert!(paths[2..].iter().all(|p| p == "/y"), "{paths:?}");
}
