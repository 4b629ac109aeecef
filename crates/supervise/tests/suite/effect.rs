//! A proposal is what it does: an `egress-block` that widens access is refused when the
//! agent sends it (never queued, never shown or audited as a block), checked against a
//! running egress proxy that holds a real credential and a loopback upstream that records
//! what reaches it.

use std::sync::Arc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use supervise::{Home, queue};
use test_support::Upstream;

use super::common::{call, live_bottle, post, through_proxy};

/// What the agent sends: a placeholder the proxy replaces with the real token.
const AGENT_AUTH: &str = "Authorization: Bearer placeholder\r\n";

const LIVE: &str = "routes:
  - host: api.test
    auth_scheme: Bearer
    token_env: SEC_TOKEN_A
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET]
";

/// The same route without its path and method limits: wider, though sent as a block.
const NO_LIMITS: &str = "routes:
  - host: api.test
    auth_scheme: Bearer
    token_env: SEC_TOKEN_A
";

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_widens_is_refused_and_delete_admin_stays_blocked() {
    let upstream = Upstream::start_plain().await;
    let b = live_bottle(
        &upstream,
        "dev-00001",
        LIVE,
        &["api.test"],
        |pc| {
            pc.env = Arc::new(|name| (name == "SEC_TOKEN_A").then(|| "real-secret-a".to_owned()));
        },
        Duration::from_secs(5),
    )
    .await;
    let (home, paddr, saddr) = (b.home.clone(), b.proxy, b.supervise);

    // The agent calls it a block; what it does is remove the path and method limits.
    let body = call(
        1,
        "egress-block",
        json!({"routes_yaml": NO_LIMITS, "justification": "tidy up the routes"}),
    );
    let (status, answer) = post(saddr, "127.0.0.1", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        error_of(&answer),
        json!({
            "code": -32602,
            "message": "egress-block: egress-block cannot widen access, and this proposal does: widens host api.test: any request (was GET /v1/*); send egress-allow to ask for more, or keep every route at least as strict as list-egress-routes shows"
        })
    );
    // Never queued, nothing to approve, nothing audited as a block.
    assert_eq!(queue::pending_all(&home, None).unwrap().0, vec![]);
    assert_eq!(
        supervise::audit::read_all(&home, None, None).unwrap(),
        vec![]
    );

    // The proxy still refuses DELETE /admin: the upstream sees only the allowed GET (and,
    // this being plain http, neither the agent's placeholder nor the token, which travels
    // only inside TLS).
    let r = through_proxy(
        paddr,
        "DELETE",
        "http://api.test/admin",
        "api.test",
        AGENT_AUTH,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = through_proxy(paddr, "GET", "http://api.test/v1/x", "api.test", AGENT_AUTH).await;
    assert_eq!(r, "HTTP/1.1 200 OK");
    let seen: Vec<(String, String, Vec<String>)> = upstream
        .requests()
        .into_iter()
        .map(|r| {
            let auth = r
                .header("authorization")
                .into_iter()
                .map(str::to_owned)
                .collect();
            (r.method, r.path, auth)
        })
        .collect();
    assert_eq!(
        seen,
        vec![("GET".to_owned(), "/v1/x".to_owned(), Vec::<String>::new())]
    );
}

/// A widening block already in the queue (sent before blocks were judged by their effect)
/// is not applied as "approved": the operator must make it their own edited version.
#[tokio::test]
async fn a_queued_block_that_widens_is_not_applied_as_approved() {
    use supervise::{Decision, Engine, NewProposal, Queue, RecordingApplier, Status, Tool};
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = RecordingApplier::with_routes(LIVE);
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let (p, _) = q
        .submit(NewProposal {
            tool: Tool::EgressBlock,
            proposed_file: NO_LIMITS.into(),
            justification: "tidy up".into(),
            current_file: Some(LIVE.into()),
            args: None,
        })
        .unwrap();
    let engine = Engine::new(q.clone(), Arc::new(applier.clone()));
    queue::answer(&home, &p.id, Decision::Approved, None, None, "op").unwrap();
    engine.process_responses().await;
    assert_eq!(q.status(&p.id).unwrap(), Some(Status::ApplyFailed));
    assert_eq!(
        q.failure(&p.id).unwrap().unwrap().error,
        "egress-block cannot widen access, and this proposal does: widens host api.test: any request (was GET /v1/*); send egress-allow to ask for more, or keep every route at least as strict as list-egress-routes shows; to apply it anyway, approve it as your own edited file"
    );
    assert_eq!(applier.calls(), vec![]);
    // The operator's own version (modified) is theirs to apply.
    queue::answer(
        &home,
        &p.id,
        Decision::Modified,
        Some(format!("{NO_LIMITS}  - host: other.test\n")),
        None,
        "op",
    )
    .unwrap();
    engine.process_responses().await;
    assert_eq!(q.status(&p.id).unwrap(), Some(Status::Modified));
    let effects: Vec<Vec<String>> = supervise::audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| e.effect)
        .collect();
    assert_eq!(
        effects.last().unwrap(),
        &vec![
            "adds host other.test: any request".to_owned(),
            "widens host api.test: any request (was GET /v1/*)".to_owned()
        ]
    );
}

/// Every spelling of "wider" sent as a block is refused before it is queued; a real
/// narrowing is queued.
#[tokio::test]
async fn every_widening_spelling_of_a_block_is_refused() {
    use supervise::{Engine, Queue, RecordingApplier, SuperviseServer};
    let live = "routes:
  - host: api.test
    port: 8443
    auth_scheme: Bearer
    token_env: SEC_TOKEN_A
    matches:
      - paths: [{type: exact, value: /v1/a}]
        methods: [GET]
        headers: [{name: X-Scope, value: read}]
  - host: a.eu.example.org
    matches:
      - methods: [GET]
  - host: '*.eu.example.org'
    auth_scheme: Bearer
    token_env: ORG_TOKEN
";
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let engine = Engine::new(q.clone(), Arc::new(RecordingApplier::with_routes(live)));
    let srv = SuperviseServer::new(engine, Duration::from_millis(100));
    let widenings: Vec<(&str, String)> = vec![
        (
            "header limit dropped",
            live.replace("        headers: [{name: X-Scope, value: read}]\n", ""),
        ),
        (
            "exact path made a prefix",
            live.replace("type: exact, value: /v1/a", "type: prefix, value: /v1/"),
        ),
        (
            "method added",
            live.replace(
                "methods: [GET]\n        headers",
                "methods: [GET, DELETE]\n        headers",
            ),
        ),
        ("port changed", live.replace("port: 8443", "port: 9443")),
        (
            "wildcard broadened",
            live.replace("'*.eu.example.org'", "'*.example.org'"),
        ),
        (
            "narrow exact route under a wildcard removed",
            live.replace(
                "  - host: a.eu.example.org\n    matches:\n      - methods: [GET]\n",
                "",
            ),
        ),
        (
            "credential moved",
            live.replace(
                "  - host: a.eu.example.org\n",
                "  - host: a.eu.example.org\n    auth_scheme: Bearer\n    token_env: SEC_TOKEN_A\n",
            ),
        ),
        (
            "credential header changed",
            live.replace(
                "    auth_scheme: Bearer\n    token_env: ORG_TOKEN\n",
                "    auth_header: x-echo\n    token_env: ORG_TOKEN\n",
            ),
        ),
        ("route added", format!("{live}  - host: evil.test\n")),
    ];
    for (what, proposed) in widenings {
        let err = srv
            .dispatch(
                "egress-block",
                json!({"routes_yaml": proposed, "justification": "fewer routes"})
                    .as_object()
                    .cloned(),
            )
            .await
            .map(|_| format!("{what}: queued"))
            .unwrap_err();
        assert_eq!(err.code, rmcp::model::ErrorCode::INVALID_PARAMS, "{what}");
        assert!(
            err.message.starts_with(
                "egress-block: egress-block cannot widen access, and this proposal does: "
            ),
            "{what}: {}",
            err.message
        );
    }
    assert_eq!(q.pending().unwrap().0, vec![]);
    // A real block: queued, shown as what it is.
    let narrower = live.replace("  - host: api.test\n    port: 8443\n    auth_scheme: Bearer\n    token_env: SEC_TOKEN_A\n    matches:\n      - paths: [{type: exact, value: /v1/a}]\n        methods: [GET]\n        headers: [{name: X-Scope, value: read}]\n", "");
    let narrower = narrower.replace(
        "'*.eu.example.org'\n    auth_scheme: Bearer\n    token_env: ORG_TOKEN\n",
        "'*.eu.example.org'\n    matches:\n      - methods: [GET]\n",
    );
    let r = srv
        .dispatch(
            "egress-block",
            json!({"routes_yaml": narrower, "justification": "fewer routes"})
                .as_object()
                .cloned(),
        )
        .await
        .unwrap();
    let rmcp::model::CallToolResponse::Complete(r) = r else {
        panic!("incomplete")
    };
    assert_eq!(r.structured_content.unwrap()["status"], "pending");
    let (pending, _) = q.pending().unwrap();
    assert_eq!(
        supervise::effect::proposal_effect(&pending[0].proposal)
            .unwrap()
            .lines(),
        vec![
            "narrows host *.eu.example.org: GET any path (was any request)",
            "stops giving host *.eu.example.org the credential ORG_TOKEN",
            "removes host api.test:8443 (was GET /v1/a with x-scope: read)",
        ]
    );
}
