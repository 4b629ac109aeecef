//! `bot-bottle proposals` and `bot-bottle audit` run as the built binary against a
//! temporary `$BOT_BOTTLE_HOME`.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use pretty_assertions::assert_eq;
use serde_json::json;
use supervise::queue::Queue;
use supervise::{Decision, Home, Proposal, Status, Tool, audit};

fn bb(home: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(args)
        .env("BOT_BOTTLE_HOME", home)
        .env("USER", "alice")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn put(home: &Home, id: &str, bottle: &str, tool: Tool, at: &str, proposed: &str, why: &str) {
    let p = Proposal {
        id: id.into(),
        arrival_timestamp: at.into(),
        bottle_slug: bottle.into(),
        tool,
        proposed_file: proposed.into(),
        justification: why.into(),
        current_file_hash: Some(supervise::proposal::sha256_hex(
            "routes:\n  - host: a.example\n",
        )),
        current_file: Some("routes:\n  - host: a.example\n".into()),
        args: None,
    };
    let dir = home.queue_dir(bottle);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{id}.json")),
        serde_json::to_vec(&p).unwrap(),
    )
    .unwrap();
}

fn fixture() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    put(
        &home,
        "00000000000000a1",
        "claude-1a2b3",
        Tool::EgressAllow,
        "2026-05-25T12:00:01.000000Z",
        "routes:\n  - host: a.example\n  - host: pypi.org\n",
        "install deps from pypi",
    );
    put(
        &home,
        "00000000000000b2",
        "codex-0b0b0",
        Tool::GitleaksAllow,
        "2026-05-25T12:00:02.000000Z",
        "0a1b:tests/f.py:generic-api-key:3\n",
        "test fixture",
    );
    std::fs::create_dir_all(home.state_dir("claude-1a2b3")).unwrap();
    std::fs::write(
        home.queue_dir("codex-0b0b0").join("00000000000000ff.json"),
        "{broken",
    )
    .unwrap();
    (dir, home)
}

#[test]
fn list_json_has_the_documented_fields_and_skips_corrupt_files() {
    let (dir, _home) = fixture();
    let out = bb(dir.path(), &["proposals", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let short: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!({
                "id": e["id"], "bottle": e["bottle"], "tool": e["tool"], "status": e["status"],
                "arrival_timestamp": e["arrival_timestamp"], "justification": e["justification"],
                "bottle_present": e["bottle_present"],
            })
        })
        .collect();
    assert_eq!(
        short,
        vec![
            json!({"id": "00000000000000a1", "bottle": "claude-1a2b3", "tool": "egress-allow", "status": "pending",
                   "arrival_timestamp": "2026-05-25T12:00:01.000000Z", "justification": "install deps from pypi", "bottle_present": true}),
            json!({"id": "00000000000000b2", "bottle": "codex-0b0b0", "tool": "gitleaks-allow", "status": "pending",
                   "arrival_timestamp": "2026-05-25T12:00:02.000000Z", "justification": "test fixture", "bottle_present": false}),
        ]
    );
    let err = text(&out.stderr);
    assert!(
        err.starts_with("warning: skipped ") && err.contains("00000000000000ff.json: corrupt: "),
        "{err}"
    );
}

#[test]
fn list_and_show_text() {
    let (dir, home) = fixture();
    let out = bb(dir.path(), &["proposals", "list"]);
    insta::assert_snapshot!("proposals_list", text(&out.stdout));
    let out = bb(dir.path(), &["proposals", "show", "00000000000000a1"]);
    assert!(out.status.success());
    insta::assert_snapshot!("proposals_show", text(&out.stdout));
    // The live routes moved on since the proposal arrived: show warns.
    let live = home.live_config_dir("claude-1a2b3");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(live.join("routes.yaml"), "routes:\n  - host: b.example\n").unwrap();
    let out = bb(dir.path(), &["proposals", "show", "00000000000000a1"]);
    assert!(text(&out.stdout).contains("warning   the live routes changed since this arrived"));
    let out = bb(dir.path(), &["proposals", "show", "0000000000000000"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: no proposal 0000000000000000; `bot-bottle proposals list` shows the pending ones\n"
    );
}

#[test]
fn approve_validates_the_file_then_writes_modified_and_reject_writes_notes() {
    let (dir, home) = fixture();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "routes: [oops").unwrap();
    let out = bb(
        dir.path(),
        &[
            "proposals",
            "approve",
            "00000000000000a1",
            "--file",
            bad.to_str().unwrap(),
            "--wait",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with(&format!("error: {} is not a valid egress-allow file; nothing was sent: the proposed routes.yaml does not parse", bad.display())), "{}", text(&out.stderr));
    let q = Queue::new(home.clone(), "claude-1a2b3").unwrap();
    assert_eq!(q.response("00000000000000a1").unwrap(), None);

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "routes:\n  - host: a.example\n  - host: files.pythonhosted.org\n",
    )
    .unwrap();
    let out = bb(
        dir.path(),
        &[
            "proposals",
            "approve",
            "00000000000000a1",
            "--file",
            good.to_str().unwrap(),
            "--notes",
            "mirror only",
            "--wait",
            "0",
        ],
    );
    // The bottle is not running: said at once and plainly, with exit code 1.
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (
            Some(1),
            "modified proposal 00000000000000a1 of bottle claude-1a2b3\n".to_owned(),
            "NOT applied: bottle claude-1a2b3 is not running, so nothing changed yet; the decision is in the audit log and waits in the bottle's queue: `bot-bottle resume claude-1a2b3` applies it (`cleanup` keeps the bottle until then)\n".to_owned()
        )
    );
    let r = q.response("00000000000000a1").unwrap().unwrap();
    assert_eq!(
        (
            r.status,
            r.final_file.as_deref(),
            r.notes.as_deref(),
            r.operator.as_str()
        ),
        (
            Decision::Modified,
            Some("routes:\n  - host: a.example\n  - host: files.pythonhosted.org\n"),
            Some("mirror only"),
            "alice"
        )
    );
    let out = bb(
        dir.path(),
        &["proposals", "reject", "00000000000000a1", "--wait", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("was answered already"),
        "{}",
        text(&out.stderr)
    );

    let out = bb(
        dir.path(),
        &[
            "proposals",
            "reject",
            "00000000000000b2",
            "--notes",
            "rotate the key",
            "--wait",
            "0",
        ],
    );
    assert!(out.status.success());
    let r = Queue::new(home, "codex-0b0b0")
        .unwrap()
        .response("00000000000000b2")
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.notes.as_deref()),
        (Decision::Rejected, Some("rotate the key"))
    );
}

#[test]
fn approve_once_for_a_while_and_into_the_manifest() {
    let (dir, home) = fixture();
    let approve = |args: &[&str]| {
        let mut all = vec!["proposals", "approve"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--wait", "0"]);
        bb(dir.path(), &all)
    };
    // A duration that is not one: refused, nothing sent.
    let out = approve(&["00000000000000a1", "--for", "10x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "\"10x\" is not a duration; write a whole number and a unit: 30s, 10m, 2h or 1d"
        ),
        "{}",
        text(&out.stderr)
    );
    let q = Queue::new(home.clone(), "claude-1a2b3").unwrap();
    assert_eq!(q.response("00000000000000a1").unwrap(), None);
    // --once and --for are one choice.
    let out = approve(&["00000000000000a1", "--once", "--for", "1h"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = approve(&["00000000000000a1", "--once"]);
    assert_eq!(
        text(&out.stdout),
        "approved proposal 00000000000000a1 of bottle claude-1a2b3 (it holds for one request only, then it is gone)\n"
    );
    assert_eq!(
        q.response("00000000000000a1").unwrap().unwrap().grant,
        supervise::Grant::Once
    );
    let out = approve(&["00000000000000b2", "--for", "2h"]);
    assert!(
        text(&out.stdout).starts_with("approved proposal 00000000000000b2 of bottle codex-0b0b0 (it holds for 2h, then it is gone)"),
        "{}",
        text(&out.stdout)
    );
    let r = Queue::new(home.clone(), "codex-0b0b0")
        .unwrap()
        .response("00000000000000b2")
        .unwrap()
        .unwrap();
    assert_eq!(r.grant, supervise::Grant::For { seconds: 7200 });
    // The audit line of the decision records the grant.
    let grants: Vec<Option<String>> = audit::read_all(&home, None, None)
        .unwrap()
        .into_iter()
        .map(|e| e.grant)
        .collect();
    assert_eq!(
        grants,
        vec![Some("once".to_owned()), Some("for 2h".to_owned())]
    );

    // --persist: the bottle came from a manifest; the diff is shown, --yes writes it.
    let manifest = dir.path().join("project/bot-bottle.yaml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    let original = "# the project's bottles\nbottles:\n  dev:\n    egress:\n      routes:\n        - host: a.example # the API\nagents:\n  demo: {bottle: dev}\n";
    std::fs::write(&manifest, original).unwrap();
    std::fs::write(
        home.state_dir("claude-1a2b3").join("metadata.json"),
        serde_json::to_vec(&json!({
            "agent": "demo", "cwd": dir.path(), "copy_cwd": false, "backend": "native",
            "created": "2026-05-25T12:00:00Z", "manifest": manifest,
        }))
        .unwrap(),
    )
    .unwrap();
    put(
        &home,
        "00000000000000a3",
        "claude-1a2b3",
        Tool::EgressAllow,
        "2026-05-25T12:00:03.000000Z",
        "routes:\n  - host: a.example\n  - host: pypi.org\n    matches:\n      - methods: [GET]\n",
        "install deps from pypi",
    );
    // Not a terminal and no --yes: nothing approved, nothing written.
    let out = approve(&["00000000000000a3", "--persist"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("confirm with --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(q.response("00000000000000a3").unwrap(), None);
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), original);

    let out = approve(&["00000000000000a3", "--persist", "--yes"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("+        - host: pypi.org\n"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        original.replace(
            "# the API\n",
            "# the API\n        - host: pypi.org\n          matches:\n          - methods:\n            - GET\n"
        )
    );
    assert_eq!(
        q.response("00000000000000a3").unwrap().unwrap().grant,
        supervise::Grant::Persist
    );
    // A dlp-allow on a route the bottle lists itself: that route is rewritten in place.
    put(
        &home,
        "00000000000000a5",
        "claude-1a2b3",
        Tool::DlpAllow,
        "2026-05-25T12:00:05.000000Z",
        "host: a.example\nrule: aws-access-key-id\n",
        "the key is AWS's published example",
    );
    let out = approve(&["00000000000000a5", "--persist", "--yes"]);
    // approved and written (not applied yet: the bottle does not run here)
    assert!(
        text(&out.stdout).contains("wrote the route(s) into"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        "# the project's bottles\nbottles:\n  dev:\n    egress:\n      routes:\n        - host: a.example\n          dlp_allow:\n          - aws-access-key-id\n        - host: pypi.org\n          matches:\n          - methods:\n            - GET\nagents:\n  demo: {bottle: dev}\n"
    );
    // A block that narrows a route the bottle lists: rewritten in place too.
    put(
        &home,
        "00000000000000a6",
        "claude-1a2b3",
        Tool::EgressBlock,
        "2026-05-25T12:00:06.000000Z",
        "routes:\n  - host: a.example\n    matches:\n      - methods: [GET]\n",
        "reads only from now on",
    );
    let out = approve(&["00000000000000a6", "--persist", "--yes"]);
    // approved and written (not applied yet: the bottle does not run here)
    assert!(
        text(&out.stdout).contains("wrote the route(s) into"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        "# the project's bottles\nbottles:\n  dev:\n    egress:\n      routes:\n        - host: a.example\n          matches:\n          - methods:\n            - GET\n        - host: pypi.org\n          matches:\n          - methods:\n            - GET\nagents:\n  demo: {bottle: dev}\n"
    );
    put(
        &home,
        "00000000000000a7",
        "claude-1a2b3",
        Tool::EgressBlock,
        "2026-05-25T12:00:07.000000Z",
        "routes:\n  - host: a.example\n    matches:\n      - methods: [HEAD]\n",
        "even less",
    );
    // A block cannot be approved once: it says why, and nothing is decided.
    let out = approve(&["00000000000000a7", "--once"]);
    assert!(
        text(&out.stderr)
            .contains("egress-block proposals cannot be approved once: a block narrows the routes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(q.response("00000000000000a7").unwrap(), None);
    // A gitleaks-allow has no route to write, and says why.
    put(
        &home,
        "00000000000000b4",
        "codex-0b0b0",
        Tool::GitleaksAllow,
        "2026-05-25T12:00:04.000000Z",
        "0a1b:tests/g.py:generic-api-key:3\n",
        "fixture",
    );
    let out = approve(&["00000000000000b4", "--persist", "--yes"]);
    assert!(
        text(&out.stderr).contains(
            "gitleaks-allow proposals cannot be approved into the manifest: an allowed finding is named by its fingerprint, which holds the commit it was found in"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_waits_until_the_running_bottle_applied_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = supervise::RecordingApplier::with_routes("routes: []\n");
    // The bottle runs: its state exists and its run lock is held (as `start` holds it).
    std::fs::create_dir_all(home.state_dir("dev-00001")).unwrap();
    let _running = state::Home::new(dir.path())
        .lock_bottle(&state::Identity::parse("dev-00001").unwrap())
        .unwrap();
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let engine = supervise::Engine::new(q.clone(), Arc::new(applier.clone()));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(engine.clone().run(stop.clone()));
    let srv = supervise::SuperviseServer::new(engine, std::time::Duration::from_secs(20));
    let call = tokio::spawn(async move {
        srv.dispatch(
            "egress-allow",
            json!({"routes_yaml": "routes:\n  - host: pypi.org\n", "justification": "deps"})
                .as_object()
                .cloned(),
        )
        .await
    });
    let id = loop {
        if let Some(e) = q.pending().unwrap().0.first() {
            break e.proposal.id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let path = dir.path().to_owned();
    let id2 = id.clone();
    let out = tokio::task::spawn_blocking(move || bb(&path, &["proposals", "approve", &id2]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "approved proposal {id} of bottle dev-00001\nin effect: the bottle applied proposal {id}\n"
        )
    );
    assert!(call.await.unwrap().is_ok());
    assert_eq!(q.status(&id).unwrap(), Some(Status::Approved));
    assert_eq!(applier.calls().len(), 1);

    // The audit log shows it, and the chain verifies; an edit is caught and named.
    let out = bb(dir.path(), &["audit", "--json"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let short: Vec<_> = lines
        .iter()
        .map(|l| {
            json!([
                l["decision"],
                l["stage"],
                l["operator"],
                l["proposal_id"],
                l["effect"]
            ])
        })
        .collect();
    assert_eq!(
        short,
        ["decided", "applied"]
            .map(|stage| json!([
                "approved",
                stage,
                "alice",
                id,
                ["adds host pypi.org: any request"]
            ]))
            .to_vec()
    );
    let out = bb(dir.path(), &["audit", "verify"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (
            Some(0),
            "ok: 1 audit log(s), every hash chain intact\n".to_owned()
        )
    );
    stop.cancel();
}

#[test]
fn audit_verify_names_the_edited_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    for n in 0..3 {
        audit::append(
            &home,
            audit::NewEntry {
                component: "egress".into(),
                bottle: "dev-00001".into(),
                proposal_id: format!("{n:016x}"),
                tool: "egress-allow".into(),
                justification: "why".into(),
                arrival_timestamp: "t".into(),
                decided_at: "t".into(),
                decision: "approved".into(),
                operator: "alice".into(),
                notes: None,
                before: None,
                after: Some(format!("routes:\n  - host: h{n}\n")),
                error: None,
                effect: vec![format!("adds host h{n}: any request")],
                stage: Some("applied".into()),
                grant: None,
            },
        )
        .unwrap();
    }
    let out = bb(dir.path(), &["audit"]);
    assert!(out.status.success());
    // per decision: the headline, what it does, why
    assert_eq!(text(&out.stdout).lines().count(), 9);
    let path = home.audit_file("egress", "dev-00001");
    let edited =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"approved\"", "\"rejected\"", 1);
    std::fs::write(&path, edited).unwrap();
    let out = bb(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "tampered: {} line 1: line 1 was edited: its hash does not match what line 2 recorded\nerror: 1 of 1 audit log(s) were edited or truncated; keep a copy as evidence\n",
            path.display()
        )
    );
}

/// The operator approves in the dashboard (on a pseudo-terminal); the waiting agent call
/// gets "approved"; the dashboard's logs go to its log file, never onto its screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_approves_in_the_dashboard() {
    if std::process::Command::new("python3")
        .args(["-c", "import pty"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("skipping: python3 (for a pseudo-terminal) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let applier = supervise::RecordingApplier::with_routes("routes: []\n");
    // The bottle runs: its state exists and its run lock is held (as `start` holds it).
    std::fs::create_dir_all(home.state_dir("dev-00001")).unwrap();
    let _running = state::Home::new(dir.path())
        .lock_bottle(&state::Identity::parse("dev-00001").unwrap())
        .unwrap();
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let engine = supervise::Engine::new(q.clone(), Arc::new(applier.clone()));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(engine.clone().run(stop.clone()));
    let srv = supervise::SuperviseServer::new(engine, std::time::Duration::from_secs(30));
    let call = tokio::spawn(async move {
        srv.dispatch(
            "egress-allow",
            json!({"routes_yaml": "routes:\n  - host: pypi.org\n", "justification": "install deps"}).as_object().cloned(),
        )
        .await
    });
    let id = loop {
        if let Some(e) = q.pending().unwrap().0.first() {
            break e.proposal.id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    // An unreadable file in another queue makes the dashboard log a warning.
    std::fs::create_dir_all(home.queue_dir("other-00002")).unwrap();
    std::fs::write(
        home.queue_dir("other-00002").join("00000000000000ff.json"),
        "{",
    )
    .unwrap();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/pty_dashboard.py"
    );
    let home_dir = dir.path().to_owned();
    let id2 = id.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, env!("CARGO_BIN_EXE_bot-bottle"), &id2, "aq"])
            .env("BOT_BOTTLE_HOME", &home_dir)
            .env("BOT_BOTTLE_LOG", "debug")
            .env("USER", "carol")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("adds host pypi.org: any request"),
        "the proposal was on screen, by what it does"
    );
    assert!(
        !screen.contains("skipping queue file"),
        "no log lines on the dashboard's screen"
    );
    let log = std::fs::read_to_string(home.logs_dir().join("dashboard.log")).unwrap();
    assert!(log.contains("skipping queue file"), "{log}");

    let answer = call.await.unwrap().unwrap();
    let rmcp::model::CallToolResponse::Complete(result) = answer else {
        panic!("incomplete")
    };
    assert_eq!(result.structured_content.unwrap()["status"], "approved");
    assert_eq!(applier.calls().len(), 1);
    let entries = audit::read_all(&home, None, None).unwrap();
    assert_eq!(
        (entries[0].decision.as_str(), entries[0].operator.as_str()),
        ("approved", "carol")
    );
    stop.cancel();
}

/// One JSON-RPC call to a supervise server on a Unix socket; returns the response text
/// (empty when the server went away first).
async fn mcp_over_unix(socket: &Path, body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    text(&out)
}

/// Starts the real sidecar bundle (`bot-bottle sidecar`) and waits for its `ready` line.
fn start_sidecar(config: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["sidecar", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    child
}

/// The sidecar is down when the operator decides: the decision is audited at once, the
/// operator is told plainly that nothing changed, `cleanup` keeps the bottle, and the
/// restarted sidecar applies it (and audits that) before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_the_sidecar_is_down_is_audited_kept_and_applied_on_return() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let home = Home::new(root);
    let identity = "demo-0a1b2";
    let state_dir = root.join("state").join(identity);
    for d in ["live-config", "sockets", "logs"] {
        std::fs::create_dir_all(state_dir.join(d)).unwrap();
    }
    std::fs::write(
        state_dir.join("metadata.json"),
        json!({"agent": "demo", "cwd": root, "copy_cwd": false, "backend": "native",
               "created": "2026-12-05T12:00:00Z"})
        .to_string(),
    )
    .unwrap();
    let routes = state_dir.join("live-config/routes.yaml");
    let live = "routes:\n  - host: api.example.com\n";
    std::fs::write(&routes, live).unwrap();
    let socket = state_dir.join("sockets/supervise.sock");
    let config = state_dir.join("sidecar.json");
    std::fs::write(
        &config,
        json!({
            "identity": identity,
            "home": root,
            "egress": {
                "listen": {"unix": state_dir.join("sockets/egress.sock")},
                "routes": routes,
                "ca_dir": state_dir.join("ca"),
                "log": state_dir.join("logs/egress.jsonl"),
            },
            "supervise": {"listen": {"unix": socket}},
        })
        .to_string(),
    )
    .unwrap();

    // The agent asks through the real sidecar; then the sidecar dies (kill -9).
    let mut sidecar = start_sidecar(&config);
    let wider = format!("{live}  - host: pypi.org\n");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "egress-allow",
        "arguments": {"routes_yaml": wider, "justification": "install deps"}}})
    .to_string();
    let sock = socket.clone();
    let agent = tokio::spawn(async move { mcp_over_unix(&sock, body).await });
    let q = Queue::new(home.clone(), identity).unwrap();
    let id = loop {
        if let Some(e) = q.pending().unwrap().0.first() {
            break e.proposal.id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    sidecar.kill().unwrap();
    sidecar.wait().unwrap();
    agent.abort();

    // The operator approves while it is down: audited now, said plainly, exit 1.
    let out = bb(root, &["proposals", "approve", &id]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(1),
            format!(
                "NOT applied: bottle {identity} is not running, so nothing changed yet; the decision is in the audit log and waits in the bottle's queue: `bot-bottle resume {identity}` applies it (`cleanup` keeps the bottle until then)\n"
            )
        )
    );
    let stages = |home: &Home| -> Vec<(String, Option<String>, Vec<String>)> {
        audit::read_all(home, None, None)
            .unwrap()
            .into_iter()
            .map(|e| (e.decision, e.stage, e.effect))
            .collect()
    };
    let line = |stage: &str| {
        (
            "approved".to_owned(),
            Some(stage.to_owned()),
            vec!["adds host pypi.org: any request".to_owned()],
        )
    };
    assert_eq!(stages(&home), vec![line("decided")]);
    assert_eq!(std::fs::read_to_string(&routes).unwrap(), live);

    // cleanup keeps the bottle and its queue (docker is out of this test's reach).
    let cleanup = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
            .arg("cleanup")
            .env("BOT_BOTTLE_HOME", root)
            .env(
                "DOCKER_HOST",
                format!("unix://{}/no-docker.sock", root.display()),
            )
            .output()
            .unwrap()
    };
    let out = cleanup();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "kept state of {identity}: bottle `{identity}` has 1 operator decision(s) not applied yet (proposal {id}); `bot-bottle resume {identity}` applies them"
        )),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(q.status(&id).unwrap(), Some(Status::Answered));

    // The sidecar returns: its engine applies the waiting decision as it starts, and audits it.
    let mut sidecar = start_sidecar(&config);
    for _ in 0..500 {
        if q.status(&id).unwrap() == Some(Status::Approved) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(q.status(&id).unwrap(), Some(Status::Approved));
    assert_eq!(std::fs::read_to_string(&routes).unwrap(), wider);
    assert_eq!(stages(&home), vec![line("decided"), line("applied")]);
    assert_eq!(audit::verify(&home).unwrap(), (vec![], 1));
    // The agent's long-poll hears the outcome from the restarted server.
    let status = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "proposal-status", "arguments": {"id": id, "wait_seconds": 5}}})
    .to_string();
    let answer = mcp_over_unix(&socket, status).await;
    assert!(answer.contains(r#""status":"approved""#), "{answer}");
    sidecar.kill().unwrap();
    sidecar.wait().unwrap();

    // Now nothing is left unapplied: cleanup removes the bottle.
    let out = cleanup();
    assert!(
        text(&out.stdout).contains(&format!("removed state of {identity}")),
        "{}",
        text(&out.stdout)
    );
}

/// One plain-HTTP request through an egress proxy on a Unix socket; returns the status line.
async fn through_egress_unix(socket: &Path, method: &str, url: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!(
        "{method} {url} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    text(&out).lines().next().unwrap_or("").to_owned()
}

/// Every outbound DLP hit of the real sidecar bundle's egress is a line of the bottle's
/// audit chain, whatever its route's mode (blocked, redacted, logged): it names the rule,
/// the place and what egress did, never the secret (not even through the path, when the
/// secret was in it), and the chain still verifies with the lines among the decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dlp_hit_is_a_redacted_line_of_the_audit_chain() {
    const KEY: &str = "AKIAZ3MSJV4WWNKWW5FG";
    let upstream = test_support::Upstream::start_plain().await;
    let to = upstream.addr();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let home = Home::new(root);
    let identity = "demo-0d1f0";
    let state_dir = root.join("state").join(identity);
    for d in ["live-config", "sockets", "logs"] {
        std::fs::create_dir_all(state_dir.join(d)).unwrap();
    }
    let routes = state_dir.join("live-config/routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "routes:\n  - host: block.test\n    connect_to: {to}\n  - host: redact.test\n    connect_to: {to}\n    dlp: redact\n  - host: log.test\n    connect_to: {to}\n    dlp: log\n"
        ),
    )
    .unwrap();
    let egress_sock = state_dir.join("sockets/egress.sock");
    let config = state_dir.join("sidecar.json");
    std::fs::write(
        &config,
        json!({
            "identity": identity,
            "home": root,
            "egress": {
                "listen": {"unix": egress_sock},
                "routes": routes,
                "ca_dir": state_dir.join("ca"),
                "log": state_dir.join("logs/egress.jsonl"),
            },
        })
        .to_string(),
    )
    .unwrap();
    let mut sidecar = start_sidecar(&config);
    let body = format!("{{\"note\": \"{KEY}\"}}");
    let statuses = [
        through_egress_unix(&egress_sock, "POST", "http://block.test/a", &body).await,
        through_egress_unix(&egress_sock, "POST", "http://redact.test/b", &body).await,
        through_egress_unix(&egress_sock, "GET", &format!("http://log.test/c/{KEY}"), "").await,
    ];
    assert_eq!(
        statuses.iter().map(|s| &s[..12]).collect::<Vec<_>>(),
        ["HTTP/1.1 403", "HTTP/1.1 200", "HTTP/1.1 200"]
    );
    let file = home.audit_file("egress", identity);
    let hits = || -> Vec<audit::AuditEntry> {
        audit::read_file(&file)
            .unwrap()
            .into_iter()
            .filter(|e| e.stage.as_deref() == Some("dlp-hit"))
            .collect()
    };
    for _ in 0..200 {
        if hits().len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sidecar.kill().unwrap();
    sidecar.wait().unwrap();
    let got: Vec<(String, String, Vec<String>)> = hits()
        .into_iter()
        .map(|e| (e.tool, e.decision, e.effect))
        .collect();
    let line = |decision: &str, effect: &str| {
        (
            "dlp".to_owned(),
            decision.to_owned(),
            vec![effect.to_owned()],
        )
    };
    assert_eq!(
        got,
        vec![
            line(
                "blocked",
                "dlp rule aws-access-key-id in the body of POST block.test/a: blocked"
            ),
            line(
                "redacted",
                "dlp rule aws-access-key-id in the body of POST redact.test/b: redacted"
            ),
            line(
                "logged",
                "dlp rule aws-access-key-id in the request-line of GET log.test (path withheld): logged"
            ),
        ]
    );
    // Redacted: the secret is nowhere in the audit chain or its head, nor in the request log.
    for f in [
        file.clone(),
        file.with_extension("head"),
        state_dir.join("logs/egress.jsonl"),
    ] {
        let t = std::fs::read_to_string(&f).unwrap();
        assert!(!t.contains(KEY), "{}: {t}", f.display());
    }
    // The chain verifies, with the CLI too.
    assert_eq!(audit::verify(&home).unwrap(), (vec![], 1));
    let out = bb(root, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bb(root, &["audit"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("dlp rule aws-access-key-id in the body of POST block.test/a: blocked")
            && !shown.contains(KEY),
        "{shown}"
    );
    // The redacted request reached the upstream without the key; the logged one with it.
    let seen: Vec<bool> = upstream
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).contains(KEY) || r.path.contains(KEY))
        .collect();
    assert_eq!(seen, vec![false, true]);
}

/// A cluster bottle's end as the pod sees it: the agent's last request was a DLP hit, then
/// the kubelet sends the sidecar bundle SIGTERM. The real bundle stops its sidecars but keeps
/// its operator port; the launcher's finishing round gets the hit's line with `ended`, the
/// next finishing round (nothing new) lets the bundle exit by itself, successfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_bundle_keeps_its_operator_port_until_the_last_lines_are_taken() {
    use bundle::operator::{Hello, SyncReply, SyncRequest, Welcome, read_line, write_line};
    use std::io::BufRead;
    const KEY: &str = "AKIAZ3MSJV4WWNKWW5FG";
    const TOKEN: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e75e1f0a2b3c4d5e6f708192a3b4c5d6e7";
    let upstream = test_support::Upstream::start_plain().await;
    let to = upstream.addr();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let identity = "demo-0e1d0";
    let state_dir = root.join("state").join(identity);
    for d in ["live-config", "sockets", "logs"] {
        std::fs::create_dir_all(state_dir.join(d)).unwrap();
    }
    let routes = state_dir.join("live-config/routes.yaml");
    std::fs::write(
        &routes,
        format!("routes:\n  - host: block.test\n    connect_to: {to}\n"),
    )
    .unwrap();
    let egress_sock = state_dir.join("sockets/egress.sock");
    let operator_sock = state_dir.join("sockets/operator.sock");
    let config = state_dir.join("sidecar.json");
    std::fs::write(
        &config,
        json!({
            "identity": identity,
            "home": root,
            "egress": {
                "listen": {"unix": egress_sock},
                "routes": routes,
                "ca_dir": state_dir.join("ca"),
                "log": state_dir.join("logs/egress.jsonl"),
            },
            "operator": {
                "listen": {"unix": operator_sock},
                "token_env": bundle::operator::TOKEN_ENV,
            },
        })
        .to_string(),
    )
    .unwrap();
    let mut sidecar = std::process::Command::new(env!("CARGO_BIN_EXE_bot-bottle"))
        .args(["sidecar", "--config"])
        .arg(&config)
        .env(bundle::operator::TOKEN_ENV, TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = sidecar.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    // The agent's last request, then the kubelet's SIGTERM.
    let body = format!("{{\"note\": \"{KEY}\"}}");
    let status = through_egress_unix(&egress_sock, "POST", "http://block.test/last", &body).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(sidecar.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Egress has stopped (SIGTERM taken) ...
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(&egress_sock).await.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(tokio::net::UnixStream::connect(&egress_sock).await.is_err());
    // ... and the operator port still answers.
    let stream = tokio::net::UnixStream::connect(&operator_sock)
        .await
        .unwrap();
    let (read, mut write) = tokio::io::split(stream);
    let mut read = tokio::io::BufReader::new(read);
    write_line(
        &mut write,
        &Hello {
            token: TOKEN.into(),
        },
    )
    .await
    .unwrap();
    let welcome: Welcome =
        serde_json::from_slice(&read_line(&mut read).await.unwrap().unwrap()).unwrap();
    assert_eq!(welcome.identity.as_deref(), Some(identity));
    let round = |seen: u64| SyncRequest {
        audit_seen: [("egress".to_owned(), seen)].into_iter().collect(),
        finish: true,
        ..SyncRequest::default()
    };
    let request = round(0);
    write_line(&mut write, &request).await.unwrap();
    let reply: SyncReply =
        serde_json::from_slice(&read_line(&mut read).await.unwrap().unwrap()).unwrap();
    assert!(reply.ended);
    let got: Vec<(Option<String>, Vec<String>)> = reply.audit["egress"]
        .iter()
        .map(|e| (e.stage.clone(), e.effect.clone()))
        .collect();
    assert_eq!(
        got,
        vec![(
            Some("dlp-hit".to_owned()),
            vec![
                "dlp rule aws-access-key-id in the body of POST block.test/last: blocked"
                    .to_owned()
            ]
        )]
    );
    let request = round(got.len() as u64);
    write_line(&mut write, &request).await.unwrap();
    let reply: SyncReply =
        serde_json::from_slice(&read_line(&mut read).await.unwrap().unwrap()).unwrap();
    assert!(reply.ended && reply.audit.is_empty(), "{reply:?}");
    // The operator's side has everything: the bundle ends by itself.
    let mut exited = None;
    for _ in 0..200 {
        exited = sidecar.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let Some(exited) = exited else {
        sidecar.kill().unwrap();
        panic!("the bundle did not end within 10 s of the last round");
    };
    assert!(exited.success(), "{exited}");
}
