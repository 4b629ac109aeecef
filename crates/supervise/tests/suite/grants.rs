//! Grants that end, end to end: an approval once serves one request through the real
//! egress proxy, an approval for 4 s stops at its expiry with nobody answering anything,
//! and supervise's sweep takes both out of the live routes with an audit line each.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;
use supervise::{Decision, queue};
use test_support::Upstream;

use super::common::{
    TOKEN, call, https_through_proxy, live_bottle, live_bottle_tls, post, result_of, through_proxy,
    until, wait_pending,
};

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
    // The sweep writes the audit line, then takes the route out of the live files (the
    // proxy refused it on its own already): the line is there once the file changed.
    assert!(
        supervise::audit::read_all(&home, Some(identity), None)
            .unwrap()
            .iter()
            .any(|e| e.stage.as_deref() == Some("expired")),
        "the route left the live files before its end was audited"
    );
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

/// Parses a routes file as the proxy would, to compare routes by what they say.
fn parsed(text: &str) -> policy::EgressConfig {
    supervise::validate::parse_routes(text).unwrap()
}

/// [`ends`], once `count` of them are written (the sweep writes a grant's audit line before
/// it takes the grant out of the live files; waiting costs nothing and keeps the tests
/// independent of that order).
async fn ends_once_audited(
    home: &supervise::Home,
    identity: &str,
    count: usize,
) -> Vec<(String, String, String)> {
    until("the grants' ends are audited", async || {
        ends(home, identity).len() >= count
    })
    .await;
    ends(home, identity)
}

/// The audit lines of the grants' ends: (proposal, stage, effect).
fn ends(home: &supervise::Home, identity: &str) -> Vec<(String, String, String)> {
    supervise::audit::read_all(home, Some(identity), None)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.stage.as_deref(), Some("used-up" | "expired")))
        .map(|e| {
            (
                e.proposal_id,
                e.stage.unwrap_or_default(),
                e.effect.join("; "),
            )
        })
        .collect()
}

/// A path added to a route that was already live, approved once and then for 4 s: while
/// the grant holds the new path passes, and when it ends (used up; expired with nobody
/// answering anything) the route goes back to exactly what it was: the path it allowed
/// before keeps working, and the live routes file says what it said before the approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_granted_once_or_for_a_while_ends_and_the_route_goes_back_to_what_it_was() {
    let upstream = Upstream::start_plain().await;
    let initial = "routes:\n  - host: api.test\n    matches:\n      - paths:\n          - type: prefix\n            value: /a\n  - host: other.test\n";
    let widened = "routes:\n  - host: api.test\n    matches:\n      - paths:\n          - type: prefix\n            value: /a\n          - type: prefix\n            value: /b\n  - host: other.test\n";
    let b = live_bottle(
        &upstream,
        "dev-00003",
        initial,
        &["api.test", "other.test"],
        |_| {},
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, paddr, saddr) = (b.home.clone(), b.identity, b.proxy, b.supervise);
    let get = async |path: &str| {
        through_proxy(
            paddr,
            "GET",
            &format!("http://api.test{path}"),
            "api.test",
            "",
        )
        .await
    };
    assert_eq!(
        [get("/a/1").await, get("/b/1").await],
        ["HTTP/1.1 200 OK", "HTTP/1.1 403 Forbidden"]
    );
    let ask = |id: u64| {
        let body = call(
            id,
            "egress-allow",
            json!({"routes_yaml": widened, "justification": "one more path"}),
        );
        tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await })
    };

    // Once: /b passes one time; then the route is what it was, /a still allowed.
    let agent = ask(1);
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
    assert_eq!(result_of(&answer)["status"], "approved", "{answer}");
    let (_, listed) = post(
        saddr,
        "127.0.0.1",
        &call(9, "list-egress-routes", json!({})),
    )
    .await;
    assert!(
        listed.contains(
            "# routes[0] (api.test): 1 request left, then it goes back to what it was before the grant"
        ),
        "{listed}"
    );
    assert_eq!(
        [get("/b/2").await, get("/b/3").await, get("/a/2").await],
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 403 Forbidden",
            "HTTP/1.1 200 OK"
        ]
    );
    until("the used-up grant leaves the live routes", async || {
        parsed(&std::fs::read_to_string(b.routes_file()).unwrap()) == parsed(initial)
    })
    .await;
    assert_eq!(b.routes.config(), parsed(initial));
    assert_eq!(get("/a/3").await, "HTTP/1.1 200 OK");

    // For 4 s: /b passes until the expiry, then the route is what it was.
    let agent = ask(2);
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
    let expires = result_of(&answer)["expires"].as_str().unwrap().to_owned();
    let expires =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let first = get("/b/4").await;
    if time::OffsetDateTime::now_utc() < expires {
        assert_eq!(first, "HTTP/1.1 200 OK");
    } else {
        eprintln!("note: the first request came after the expiry; only the end is checked");
    }
    until("the proxy refuses /b again", async || {
        get("/b/5").await == "HTTP/1.1 403 Forbidden"
    })
    .await;
    assert_eq!(get("/a/4").await, "HTTP/1.1 200 OK");
    until("the expired grant leaves the live routes", async || {
        parsed(&std::fs::read_to_string(b.routes_file()).unwrap()) == parsed(initial)
    })
    .await;
    assert_eq!(b.routes.config(), parsed(initial));
    assert_eq!(get("/a/5").await, "HTTP/1.1 200 OK");
    assert_eq!(
        ends_once_audited(&home, identity, 2).await,
        vec![
            (
                once_id,
                "used-up".to_owned(),
                "puts route api.test back as it was before the grant: its grant is used up"
                    .to_owned()
            ),
            (
                timed_id,
                "expired".to_owned(),
                "puts route api.test back as it was before the grant: its grant expired".to_owned()
            ),
        ]
    );
    assert_eq!(supervise::audit::verify(&home).unwrap(), (vec![], 1));
}

/// A token given to a route that was already live, approved once and then for 4 s: one
/// request (then every request until the expiry) carries it, and when the grant ends the
/// host is still reachable exactly as before the approval, without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_granted_once_or_for_a_while_ends_and_the_host_keeps_its_earlier_access() {
    let upstream_ca = test_support::TestCa::new("grant upstream CA");
    let upstream = Upstream::start_tls(&upstream_ca, &["api.test"]).await;
    let initial = "routes:\n  - host: api.test\n";
    let b = live_bottle_tls(
        &upstream,
        &upstream_ca,
        "dev-00004",
        initial,
        &["api.test"],
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, saddr) = (b.home.clone(), b.identity, b.supervise);
    let bearer = format!("Bearer {TOKEN}");
    // (path, authorization) of every request the upstream saw since the last call.
    let seen = || -> Vec<(String, Vec<String>)> {
        upstream
            .take()
            .into_iter()
            .map(|r| {
                let auth = r
                    .header("authorization")
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                (r.path, auth)
            })
            .collect()
    };
    assert_eq!(
        https_through_proxy(&b, "api.test", "/0").await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(seen(), vec![("/0".to_owned(), vec![])]);
    let ask = |id: u64| {
        let body = call(
            id,
            "egress-token-allow",
            json!({"host": "api.test", "token_name": "TEST_TOKEN", "justification": "auth"}),
        );
        tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await })
    };

    // Once: one request carries the token, the next goes out as before the approval.
    let agent = ask(1);
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
    assert!(
        answer.contains("How long: it holds for one request with the secret only"),
        "{answer}"
    );
    assert_eq!(
        [
            https_through_proxy(&b, "api.test", "/1").await,
            https_through_proxy(&b, "api.test", "/2").await,
        ],
        ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    );
    assert_eq!(
        seen(),
        vec![
            ("/1".to_owned(), vec![bearer.clone()]),
            ("/2".to_owned(), vec![])
        ]
    );
    until("the used-up token leaves the live routes", async || {
        parsed(&std::fs::read_to_string(b.routes_file()).unwrap()) == parsed(initial)
    })
    .await;
    assert_eq!(b.routes.config(), parsed(initial));

    // For 4 s: requests carry it until the expiry, then go out without it.
    let agent = ask(2);
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
    let expires = result_of(&answer)["expires"].as_str().unwrap().to_owned();
    let expires =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(
        https_through_proxy(&b, "api.test", "/3").await,
        "HTTP/1.1 200 OK"
    );
    if time::OffsetDateTime::now_utc() < expires {
        assert_eq!(seen(), vec![("/3".to_owned(), vec![bearer.clone()])]);
    } else {
        eprintln!("note: the first request came after the expiry; only the end is checked");
        seen();
    }
    until("requests go out without the token again", async || {
        assert_eq!(
            https_through_proxy(&b, "api.test", "/4").await,
            "HTTP/1.1 200 OK"
        );
        seen().iter().all(|(_, auth)| auth.is_empty())
    })
    .await;
    until("the expired token leaves the live routes", async || {
        parsed(&std::fs::read_to_string(b.routes_file()).unwrap()) == parsed(initial)
    })
    .await;
    assert_eq!(b.routes.config(), parsed(initial));
    assert_eq!(
        ends_once_audited(&home, identity, 2).await,
        vec![
            (
                once_id,
                "used-up".to_owned(),
                "puts route api.test back as it was before the grant: its grant is used up"
                    .to_owned()
            ),
            (
                timed_id,
                "expired".to_owned(),
                "puts route api.test back as it was before the grant: its grant expired".to_owned()
            ),
        ]
    );
    assert_eq!(supervise::audit::verify(&home).unwrap(), (vec![], 1));
}

/// A path approved for the bottle on a route whose once-grant still runs outlasts that
/// grant: when the grant is used up, the route goes back to what it was before it, with the
/// bottle-long path in it (was: only the granted form had it, and it was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_for_the_bottle_under_a_running_grant_outlasts_the_grant() {
    let upstream = Upstream::start_plain().await;
    let initial = "routes:\n  - host: api.test\n    matches:\n      - paths:\n          - type: prefix\n            value: /a\n";
    let widened = "routes:\n  - host: api.test\n    matches:\n      - paths:\n          - type: prefix\n            value: /a\n          - type: prefix\n            value: /b\n";
    let b = live_bottle(
        &upstream,
        "dev-00005",
        initial,
        &["api.test"],
        |_| {},
        Duration::from_secs(20),
    )
    .await;
    let (home, identity, paddr, saddr) = (b.home.clone(), b.identity, b.proxy, b.supervise);
    let get = async |path: &str| {
        through_proxy(
            paddr,
            "GET",
            &format!("http://api.test{path}"),
            "api.test",
            "",
        )
        .await
    };
    let ask = |id: u64, routes: String| {
        let body = call(
            id,
            "egress-allow",
            json!({"routes_yaml": routes, "justification": "paths"}),
        );
        tokio::spawn(async move { post(saddr, "127.0.0.1", &body).await })
    };
    let answer = async |grant: supervise::Grant| {
        let p = wait_pending(&home, Some(identity), 1).await;
        queue::answer_granted(
            &home,
            &p[0].proposal.id,
            Decision::Approved,
            None,
            None,
            "tester",
            grant,
        )
        .unwrap();
    };

    // /b once.
    let agent = ask(1, widened.to_owned());
    answer(supervise::Grant::Once).await;
    let (_, a) = agent.await.unwrap();
    assert_eq!(result_of(&a)["status"], "approved", "{a}");

    // While it runs, /c for the bottle: the agent proposes the live file with one more path.
    let mut live = parsed(&std::fs::read_to_string(b.routes_file()).unwrap());
    let route = &mut live.routes.as_mut().unwrap()[0];
    assert_eq!(route.uses, Some(1), "the once-grant is running");
    let c: policy::PathMatch = serde_saphyr::from_str("type: prefix\nvalue: /c\n").unwrap();
    route.matches.as_mut().unwrap()[0]
        .paths
        .as_mut()
        .unwrap()
        .push(c);
    let agent = ask(2, serde_saphyr::to_string(&live).unwrap());
    answer(supervise::Grant::Bottle).await;
    let (_, a) = agent.await.unwrap();
    assert_eq!(result_of(&a)["status"], "approved", "{a}");

    // The grant serves one request (any on the route counts), then ends; /a and the
    // bottle-long /c stay.
    assert_eq!(
        [get("/b/1").await, get("/b/2").await, get("/c/1").await],
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 403 Forbidden",
            "HTTP/1.1 200 OK"
        ]
    );
    assert_eq!(
        [get("/a/1").await, get("/c/2").await],
        ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    );
    let with_c = "routes:\n  - host: api.test\n    matches:\n      - paths:\n          - type: prefix\n            value: /a\n          - type: prefix\n            value: /c\n";
    until("the used-up grant leaves the live routes", async || {
        parsed(&std::fs::read_to_string(b.routes_file()).unwrap()) == parsed(with_c)
    })
    .await;
    assert_eq!(get("/c/3").await, "HTTP/1.1 200 OK");
    assert_eq!(get("/b/3").await, "HTTP/1.1 403 Forbidden");
}
