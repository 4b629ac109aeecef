//! The queue-to-answer path without HTTP: ordering, failures, timeouts, restarts,
//! concurrency and corrupt files.

use std::sync::Arc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use rmcp::model::{CallToolResponse, ErrorCode};
use serde_json::{Value, json};
use supervise::apply::AppliedCall;
use supervise::{
    Decision, Engine, Home, Queue, RecordingApplier, Status, SuperviseServer, audit, queue,
};
use tokio_util::sync::CancellationToken;

use super::common::{ROUTES, approve, recording, wait_pending};

fn server(
    home: &Home,
    identity: &str,
    applier: &RecordingApplier,
    wait: Duration,
) -> (SuperviseServer, CancellationToken) {
    let q = Queue::new(home.clone(), identity).unwrap();
    let engine = Engine::new(q, Arc::new(applier.clone()));
    let stop = CancellationToken::new();
    tokio::spawn(engine.clone().run(stop.clone()));
    (SuperviseServer::new(engine, wait), stop)
}

fn structured(r: &CallToolResponse) -> Value {
    match r {
        CallToolResponse::Complete(c) => c.structured_content.clone().unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

fn args(routes: &str, why: &str) -> Option<rmcp::model::JsonObject> {
    json!({"routes_yaml": routes, "justification": why})
        .as_object()
        .cloned()
}

const WIDER: &str = "log: blocks\nroutes:\n  - host: api.example.com\n  - host: pypi.org\n";

#[tokio::test]
async fn agent_is_answered_only_after_the_change_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let mut applier = recording();
    applier.delay = Some(Duration::from_millis(50));
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_secs(10));
    let events = applier.events.clone();
    let call = tokio::spawn(async move {
        let r = srv.dispatch("egress-allow", args(WIDER, "need pypi")).await;
        events.lock().unwrap().push("answered".into());
        r
    });
    let p = wait_pending(&home, Some("dev-00001"), 1).await;
    approve(&home, &p[0].proposal.id);
    let r = call.await.unwrap().unwrap();
    assert_eq!(structured(&r)["status"], "approved");
    assert_eq!(
        applier.events.lock().unwrap().clone(),
        vec!["apply:routes", "answered"]
    );
    assert_eq!(
        applier.calls(),
        vec![AppliedCall::Routes {
            bottle: "dev-00001".into(),
            text: WIDER.into()
        }]
    );
    // handled: out of the queue, in processed/, audited with a valid chain
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    assert_eq!(q.status(&p[0].proposal.id).unwrap(), Some(Status::Approved));
    assert!(q.pending().unwrap().0.is_empty());
    // Two lines: the decision when the operator made it, then the change in effect; both
    // say what it does.
    let log: Vec<_> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| (e.decision, e.stage, e.effect, e.before, e.after))
        .collect();
    let line = |stage: &str| {
        (
            "approved".to_owned(),
            Some(stage.to_owned()),
            vec!["adds host pypi.org: any request".to_owned()],
            Some(ROUTES.to_owned()),
            Some(WIDER.to_owned()),
        )
    };
    assert_eq!(log, vec![line("decided"), line("applied")]);
    assert_eq!(audit::verify(&home).unwrap(), (vec![], 1));
}

#[tokio::test]
async fn failed_apply_is_reported_and_the_proposal_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    applier.fail_next("the proxy is restarting");
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_secs(10));
    let srv2 = srv.clone();
    let call = tokio::spawn(async move {
        srv2.dispatch("egress-allow", args(WIDER, "need pypi"))
            .await
    });
    let p = wait_pending(&home, None, 1).await;
    let id = p[0].proposal.id.clone();
    approve(&home, &id);
    let r = call.await.unwrap().unwrap();
    let s = structured(&r);
    assert_eq!(
        (s["status"].as_str(), s["error"].as_str()),
        (Some("apply-failed"), Some("the proxy is restarting"))
    );
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    assert_eq!(q.status(&id).unwrap(), Some(Status::ApplyFailed));
    assert!(applier.calls().is_empty());
    // The operator approves again; the agent's long-poll gets the success.
    let srv3 = srv.clone();
    let id2 = id.clone();
    let poll = tokio::spawn(async move {
        srv3.dispatch(
            "proposal-status",
            json!({"id": id2, "wait_seconds": 10}).as_object().cloned(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    approve(&home, &id);
    assert_eq!(
        structured(&poll.await.unwrap().unwrap())["status"],
        "approved"
    );
    let decisions: Vec<String> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| format!("{}:{}", e.decision, e.stage.unwrap_or_default()))
        .collect();
    assert_eq!(
        decisions,
        vec![
            "approved:decided",
            "apply-failed:not-applied",
            "approved:decided",
            "approved:applied"
        ]
    );
}

#[tokio::test]
async fn timeout_answers_pending_and_a_restarted_server_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    let (srv, stop) = server(&home, "dev-00001", &applier, Duration::from_millis(200));
    let r = srv
        .dispatch("egress-allow", args(WIDER, "need pypi"))
        .await
        .unwrap();
    let s = structured(&r);
    assert_eq!(s["status"], "pending");
    let id = s["id"].as_str().unwrap().to_owned();
    // The agent retries the same call: same proposal, not a duplicate.
    let again = structured(
        &srv.dispatch("egress-allow", args(WIDER, "need pypi, really"))
            .await
            .unwrap(),
    );
    assert_eq!(
        (again["status"].as_str(), again["id"].as_str()),
        (Some("pending"), Some(id.as_str()))
    );
    // The server goes away; the operator approves meanwhile; a new server picks it up.
    stop.cancel();
    drop(srv);
    approve(&home, &id);
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_secs(5));
    let r = srv
        .dispatch(
            "proposal-status",
            json!({"id": id, "wait_seconds": 5}).as_object().cloned(),
        )
        .await
        .unwrap();
    assert_eq!(structured(&r)["status"], "approved");
    assert_eq!(applier.calls().len(), 1);
    assert_eq!(queue::pending_all(&home, None).unwrap().0.len(), 0);
}

#[tokio::test]
async fn several_bottles_and_concurrent_calls() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let mut calls = Vec::new();
    let mut appliers = Vec::new();
    for b in ["alpha-00001", "beta-00002"] {
        let applier = recording();
        let (srv, _stop) = server(&home, b, &applier, Duration::from_secs(10));
        appliers.push(applier);
        for i in 0..3 {
            let srv = srv.clone();
            let routes = format!("{ROUTES}  - host: h{i}.example\n");
            calls.push(tokio::spawn(async move {
                srv.dispatch("egress-allow", args(&routes, "need it")).await
            }));
        }
        // one duplicate of the first
        let srv = srv.clone();
        let routes = format!("{ROUTES}  - host: h0.example\n");
        calls.push(tokio::spawn(async move {
            srv.dispatch("egress-allow", args(&routes, "need it")).await
        }));
        std::mem::forget(_stop);
    }
    let pending = wait_pending(&home, None, 6).await;
    assert_eq!(pending.len(), 6, "the duplicate was not queued twice");
    for e in &pending {
        approve(&home, &e.proposal.id);
    }
    // Each proposal replaces the whole file it was made against: once one of a bottle's
    // three is in effect, the other two would undo it, which is not what the operator
    // saw. Exactly one per bottle applies; the others come back to the operator.
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    for c in calls {
        let s = structured(&c.await.unwrap().unwrap());
        ids.push(s["id"].as_str().unwrap().to_owned());
        statuses.push(s["status"].as_str().unwrap().to_owned());
        if s["status"] == "apply-failed" {
            assert!(
                s["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("the live routes changed since this proposal arrived, and against them it would do something else (adds host "),
                "{s}"
            );
        }
    }
    assert_eq!(ids[0], ids[3]);
    assert_eq!(ids[4], ids[7]);
    for bottle in [&statuses[..4], &statuses[4..]] {
        let distinct = [&bottle[..3]].concat();
        assert_eq!(
            distinct.iter().filter(|s| *s == "approved").count(),
            1,
            "{statuses:?}"
        );
    }
    assert_eq!(
        appliers.iter().map(|a| a.calls().len()).collect::<Vec<_>>(),
        vec![1, 1]
    );
    let (breaks, files) = audit::verify(&home).unwrap();
    assert_eq!((breaks, files), (vec![], 2));
}

#[tokio::test]
async fn modified_and_rejected_answers_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_secs(10));
    let s1 = srv.clone();
    let c1 =
        tokio::spawn(async move { s1.dispatch("egress-allow", args(WIDER, "need pypi")).await });
    let p = wait_pending(&home, None, 1).await;
    let edited = "log: blocks\nroutes:\n  - host: api.example.com\n  - host: pypi.org\n    matches:\n      - methods: [GET]\n";
    queue::answer(
        &home,
        &p[0].proposal.id,
        Decision::Modified,
        Some(edited.into()),
        Some("read-only".into()),
        "op",
    )
    .unwrap();
    let s = structured(&c1.await.unwrap().unwrap());
    assert_eq!(
        (
            s["status"].as_str(),
            s["final_file"].as_str(),
            s["notes"].as_str()
        ),
        (Some("modified"), Some(edited), Some("read-only"))
    );

    let s2 = srv.clone();
    let c2 = tokio::spawn(async move {
        s2.dispatch(
            "gitleaks-allow",
            json!({"fingerprint": "abc:tests/f.py:generic-api-key:3", "justification": "fixture"})
                .as_object()
                .cloned(),
        )
        .await
    });
    let p = wait_pending(&home, None, 1).await;
    queue::answer(
        &home,
        &p[0].proposal.id,
        Decision::Rejected,
        None,
        Some("rotate it instead".into()),
        "op",
    )
    .unwrap();
    let s = structured(&c2.await.unwrap().unwrap());
    assert_eq!(
        (s["status"].as_str(), s["notes"].as_str()),
        (Some("rejected"), Some("rotate it instead"))
    );
    let comps: Vec<String> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| {
            format!(
                "{}:{}:{}",
                e.component,
                e.decision,
                e.stage.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        comps,
        vec![
            "egress:modified:decided",
            "egress:modified:applied",
            "gitleaks:rejected:decided"
        ]
    );
}

#[tokio::test]
async fn bad_input_gets_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_secs(1));
    let cases: Vec<(&str, Value, ErrorCode, &str)> = vec![
        (
            "egress-allow",
            json!({"routes_yaml": "", "justification": "x"}),
            ErrorCode::INVALID_PARAMS,
            "egress-allow: 'routes_yaml' is empty: pass the full content",
        ),
        (
            "egress-allow",
            json!({"routes_yaml": WIDER}),
            ErrorCode::INVALID_PARAMS,
            "egress-allow: 'justification' is required: say in a sentence or two why you need this, the operator reads it",
        ),
        (
            "egress-allow",
            json!({"routes_yaml": WIDER, "justification": "  "}),
            ErrorCode::INVALID_PARAMS,
            "egress-allow: 'justification' is required: say in a sentence or two why you need this, the operator reads it",
        ),
        (
            "egress-block",
            json!({"routes_yaml": "log: all\nroutes: []\n", "justification": "x"}),
            ErrorCode::INVALID_PARAMS,
            "egress-block: the proposed routes.yaml changes 'log' (from blocks to all); the request log is not yours to change, keep 'log' as it is",
        ),
        (
            "egress-allow",
            json!({"routes_yaml": ROUTES, "justification": "x"}),
            ErrorCode::INVALID_PARAMS,
            "egress-allow: the proposed routes.yaml is the same as the live routes; nothing to ask for",
        ),
        (
            "egress-allow",
            json!({"routes_yaml": "log: blocks\nroutes:\n  - host: pypi.org\n", "justification": "x"}),
            ErrorCode::INVALID_PARAMS,
            "egress-allow: the proposed routes.yaml leaves out the route for api.example.com, and egress-allow only adds or widens routes (a route left out would be removed, such as the model API route the provider adds); start from list-egress-routes and keep every route in it, or send egress-block to remove one",
        ),
        (
            "egress-token-allow",
            json!({"host": "nope.example", "token_name": "TOKEN", "justification": "x"}),
            ErrorCode::INVALID_PARAMS,
            "egress-token-allow: there is no route for host nope.example; ask for the route with egress-allow first",
        ),
        (
            "gitleaks-allow",
            json!({"justification": "x"}),
            ErrorCode::INVALID_PARAMS,
            "gitleaks-allow: pass either 'fingerprint' (as printed by the rejected push) or both 'file' and 'line' (1-based)",
        ),
        (
            "proposal-status",
            json!({"id": "0123456789abcdef"}),
            ErrorCode::INVALID_PARAMS,
            "proposal-status: there is no proposal 0123456789abcdef in this bottle's queue; use the id from the 'pending' answer",
        ),
        (
            "shell",
            json!({}),
            ErrorCode::METHOD_NOT_FOUND,
            "unknown tool \"shell\"; the tools are list-egress-routes, egress-allow, egress-block, egress-token-allow, gitleaks-allow, dlp-allow and proposal-status",
        ),
    ];
    for (tool, a, code, msg) in cases {
        let err = srv
            .dispatch(tool, a.as_object().cloned())
            .await
            .unwrap_err();
        assert_eq!((err.code, err.message.as_ref()), (code, msg), "{tool}");
    }
    let err = srv
        .dispatch("egress-allow", args("routes: [unclosed", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
    assert!(
        err.message
            .starts_with("egress-allow: the proposed routes.yaml does not parse: "),
        "{}",
        err.message
    );
    assert!(
        queue::pending_all(&home, None).unwrap().0.is_empty(),
        "nothing queued"
    );
}

#[tokio::test]
async fn corrupt_response_is_set_aside_and_the_proposal_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_millis(300));
    let s = structured(
        &srv.dispatch("egress-allow", args(WIDER, "need pypi"))
            .await
            .unwrap(),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    std::fs::write(q.dir().join(format!("{id}.response.json")), "{\"id\": ").unwrap();
    std::fs::write(q.dir().join("00000000000000ff.json"), "garbage").unwrap();
    for _ in 0..300 {
        if q.status(&id).unwrap() == Some(Status::Pending) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(q.status(&id).unwrap(), Some(Status::Pending));
    assert!(applier.calls().is_empty());
    let (entries, problems) = queue::pending_all(&home, None).unwrap();
    assert_eq!((entries.len(), problems.len()), (1, 1));
    // still works afterwards
    approve(&home, &id);
    let r = srv
        .dispatch("proposal-status", json!({"id": id}).as_object().cloned())
        .await
        .unwrap();
    assert_eq!(structured(&r)["status"], "approved");
}

/// A response asking for a grant the kind cannot have (written by other means than the
/// dashboard or the CLI, which refuse it) is not applied: the proposal is pending again
/// with the reason, and nothing reached the applier.
#[tokio::test]
async fn a_grant_the_kind_cannot_have_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = RecordingApplier::with_routes(WIDER);
    let (srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_millis(300));
    let s = structured(
        &srv.dispatch("egress-block", args(ROUTES, "pypi is not needed"))
            .await
            .unwrap(),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    q.write_response(&supervise::proposal::Response {
        id: id.clone(),
        status: Decision::Approved,
        final_file: None,
        notes: None,
        operator: "script".to_owned(),
        responded_at: supervise::proposal::now_timestamp(),
        audited: false,
        grant: supervise::Grant::Once,
    })
    .unwrap();
    let mut failure = None;
    for _ in 0..500 {
        failure = q.failure(&id).unwrap();
        if failure.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        failure.map(|f| f.error),
        Some("egress-block proposals cannot be approved once: a block narrows the routes, and one that ended would widen them again unasked; approve it for this bottle or into the manifest".to_owned())
    );
    assert!(applier.calls().is_empty());
}

/// The crash the engine's durability argument allows: the agent was answered, then the
/// machine went down before the directory syncs after the answer, and the outcome's name
/// (with the moves to `processed/`) was lost. What the promise needs survived: the decision
/// and the change in effect are in the audit log, and the restarted engine neither loses
/// the change nor applies anything the log does not record; the proposal comes back to the
/// operator with the reason.
#[tokio::test]
async fn an_outcome_lost_after_the_answer_leaves_the_change_audited_and_the_proposal_with_the_operator()
 {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = recording();
    let (srv, stop) = server(&home, "dev-00001", &applier, Duration::from_secs(10));
    let srv2 = srv.clone();
    let call = tokio::spawn(async move {
        srv2.dispatch("egress-allow", args(WIDER, "need pypi"))
            .await
    });
    let p = wait_pending(&home, None, 1).await;
    let id = p[0].proposal.id.clone();
    approve(&home, &id);
    assert_eq!(
        structured(&call.await.unwrap().unwrap())["status"],
        "approved"
    );
    stop.cancel();
    drop(srv);
    // The crash: everything after the answer is undone on disk.
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let processed = q.dir().join("processed");
    for name in [format!("{id}.json"), format!("{id}.response.json")] {
        std::fs::rename(processed.join(&name), q.dir().join(&name)).unwrap();
    }
    std::fs::remove_file(processed.join(format!("{id}.outcome.json"))).unwrap();

    let (_srv, _stop) = server(&home, "dev-00001", &applier, Duration::from_secs(10));
    for _ in 0..500 {
        if q.status(&id).unwrap() == Some(Status::ApplyFailed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(q.status(&id).unwrap(), Some(Status::ApplyFailed));
    let failure = q.failure(&id).unwrap().unwrap();
    assert!(
        failure.error.contains("live routes changed"),
        "{}",
        failure.error
    );
    // The change stays in effect, applied once.
    assert_eq!(
        applier.calls(),
        vec![AppliedCall::Routes {
            bottle: "dev-00001".into(),
            text: WIDER.into()
        }]
    );
    let decisions: Vec<String> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| format!("{}:{}", e.decision, e.stage.unwrap_or_default()))
        .collect();
    assert_eq!(
        decisions,
        vec![
            "approved:decided",
            "approved:applied",
            "apply-failed:not-applied"
        ]
    );
    assert_eq!(audit::verify(&home).unwrap(), (vec![], 1));
}

/// A grant's end is audited before the live files change, so a crash or a failed write
/// between the two cannot leave an ended grant without its line; a sweep that fails and is
/// tried again does not write the line twice.
#[tokio::test]
async fn an_ended_grant_is_audited_before_the_live_files_change_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let identity = "dev-00001";
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refusing = refuse.clone();
    let applier = supervise::FileApplier::new(home.clone()).with_reload(Arc::new(
        move |_: &str, _: &policy::EgressConfig| {
            if refusing.load(std::sync::atomic::Ordering::SeqCst) {
                Err("the proxy is restarting".to_owned())
            } else {
                Ok(())
            }
        },
    ));
    let routes_file = applier.routes_path(identity);
    std::fs::create_dir_all(routes_file.parent().unwrap()).unwrap();
    std::fs::write(
        &routes_file,
        "routes:\n  - host: keep.example\n  - host: gone.example\n    expires: 2026-05-25T12:00:00Z\n    grant: 00aa\n",
    )
    .unwrap();
    let q = Queue::new(home.clone(), identity).unwrap();
    let engine = Engine::new(q, Arc::new(applier));
    let ends = || {
        audit::read_all(&home, Some(identity), None)
            .unwrap()
            .into_iter()
            .filter(|e| e.stage.as_deref() == Some("expired"))
            .map(|e| (e.proposal_id, e.effect.join("; ")))
            .collect::<Vec<_>>()
    };
    let line = vec![(
        "00aa".to_owned(),
        "removes route gone.example: its grant expired".to_owned(),
    )];

    // The write fails (the proxy refuses the reload): the route stays in the file (the
    // proxy refuses it on its own, it expired), and its end is audited all the same.
    engine.sweep().await;
    assert!(
        std::fs::read_to_string(&routes_file)
            .unwrap()
            .contains("gone.example")
    );
    assert_eq!(ends(), line);
    // Tried again, still failing: no second line.
    engine.sweep().await;
    assert_eq!(ends(), line);
    // The write goes through: the route leaves the file, still one line.
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    engine.sweep().await;
    let left = std::fs::read_to_string(&routes_file).unwrap();
    assert!(
        !left.contains("gone.example") && left.contains("keep.example"),
        "{left}"
    );
    assert_eq!(ends(), line);
    let (breaks, _) = audit::verify(&home).unwrap();
    assert_eq!(breaks, vec![]);
}
