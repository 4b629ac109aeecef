//! The dashboard against real queue files: arrivals wake it through file events, and
//! its actions become responses that validate edited files.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use pretty_assertions::assert_eq;
use proposals::queue::{NewProposal, Queue};
use supervise::{Decision, Engine, Home, RecordingApplier, Tool};
use tokio_util::sync::CancellationToken;

use dashboard::{Action, App, Event, Tone};

fn propose(q: &Queue, host: &str) -> proposals::Proposal {
    q.submit(NewProposal {
        tool: Tool::EgressAllow,
        proposed_file: format!("routes:\n  - host: {host}\n"),
        justification: "need it".into(),
        current_file: Some("routes: []\n".into()),
        args: None,
    })
    .unwrap()
    .0
}

#[test]
fn arrival_wakes_the_dashboard_through_file_events() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let (tx, rx) = mpsc::channel();
    let _w = dashboard::watch_queues(&home, tx).unwrap();
    let mut app = App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let p = propose(&q, "a.example");
    let ev = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(ev, Event::QueueChanged));
    while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
    assert_eq!(app.load(dashboard::snapshot(&home).unwrap()), 1);
    assert_eq!(app.selected().unwrap().proposal.id, p.id);
}

#[test]
fn actions_write_validated_responses() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let a = propose(&q, "a.example");
    let b = propose(&q, "b.example");
    let c = propose(&q, "c.example");
    let mut app = App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());

    let (tone, msg) = dashboard::perform(
        &home,
        &app,
        &Action::Edit(a.id.clone()),
        "op",
        Some("routes: [broken".into()),
    );
    assert_eq!(tone, Tone::Error);
    assert!(
        msg.starts_with("the edited file is not valid, nothing was sent: "),
        "{msg}"
    );
    assert_eq!(q.response(&a.id).unwrap(), None);

    let edited = "routes:\n  - host: a.example\n    port: 8443\n".to_owned();
    let (tone, _) = dashboard::perform(
        &home,
        &app,
        &Action::Edit(a.id.clone()),
        "op",
        Some(edited.clone()),
    );
    assert_eq!(tone, Tone::Info);
    let r = q.response(&a.id).unwrap().unwrap();
    assert_eq!(
        (r.status, r.final_file, r.operator.as_str()),
        (Decision::Modified, Some(edited), "op")
    );

    dashboard::perform(&home, &app, &Action::Approve(b.id.clone()), "op", None);
    assert_eq!(
        q.response(&b.id).unwrap().unwrap().status,
        Decision::Approved
    );

    dashboard::perform(
        &home,
        &app,
        &Action::Reject {
            id: c.id.clone(),
            notes: Some("no".into()),
        },
        "op",
        None,
    );
    let r = q.response(&c.id).unwrap().unwrap();
    assert_eq!((r.status, r.notes), (Decision::Rejected, Some("no".into())));
}

#[test]
fn grant_keys_write_responses_and_the_manifest_after_the_confirm_screen() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let a = propose(&q, "a.example");
    let b = propose(&q, "b.example");
    let c = propose(&q, "c.example");
    // The bottle was started from this manifest, for agent demo of bottle dev.
    let manifest = dir.path().join("bot-bottle.yaml");
    let original = "bottles:\n  dev:\n    egress:\n      routes:\n        - host: z.example # kept\nagents:\n  demo: {bottle: dev}\n";
    std::fs::write(&manifest, original).unwrap();
    std::fs::create_dir_all(home.state_dir("dev-00001")).unwrap();
    std::fs::write(
        home.state_dir("dev-00001").join("metadata.json"),
        serde_json::to_vec(&serde_json::json!({
            "agent": "demo", "cwd": dir.path(), "copy_cwd": false, "backend": "native",
            "created": "2026-05-25T12:00:00Z", "manifest": manifest,
        }))
        .unwrap(),
    )
    .unwrap();
    let mut app = App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());

    let once = Action::Grant {
        id: a.id.clone(),
        grant: proposals::Grant::Once,
    };
    let (tone, msg) = dashboard::perform(&home, &app, &once, "op", None);
    assert_eq!(
        (tone, msg),
        (
            Tone::Info,
            format!(
                "approved {} (it holds for one request only, then it is gone); its bottle applies it now",
                a.id
            )
        )
    );
    assert_eq!(
        q.response(&a.id).unwrap().unwrap().grant,
        proposals::Grant::Once
    );
    let timed = Action::Grant {
        id: b.id.clone(),
        grant: proposals::Grant::For { seconds: 600 },
    };
    dashboard::perform(&home, &app, &timed, "op", None);
    assert_eq!(
        q.response(&b.id).unwrap().unwrap().grant,
        proposals::Grant::For { seconds: 600 }
    );

    // p: the confirm screen with the diff; nothing written or decided before y.
    dashboard::preview_persist(&home, &mut app, &c.id);
    let (id, plan) = app.persist.clone().unwrap();
    assert_eq!(
        (id.as_str(), plan.file.as_path()),
        (c.id.as_str(), manifest.as_path())
    );
    assert!(
        plan.diff().contains("+        - host: c.example\n"),
        "{}",
        plan.diff()
    );
    assert_eq!(q.response(&c.id).unwrap(), None);
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), original);
    let action = app.handle_key(ratatui::crossterm::event::KeyEvent::from(
        ratatui::crossterm::event::KeyCode::Char('y'),
    ));
    let (tone, msg) = dashboard::perform(&home, &app, &action, "op", None);
    assert_eq!(tone, Tone::Info, "{msg}");
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        original.replace("# kept\n", "# kept\n        - host: c.example\n")
    );
    assert_eq!(
        q.response(&c.id).unwrap().unwrap().grant,
        proposals::Grant::Persist
    );
}

#[test]
fn an_idle_sidecar_and_its_own_reloads_do_not_wake_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    propose(&q, "a.example");
    propose(&q, "b.example");
    let (tx, rx) = mpsc::channel();
    let watch = dashboard::watch_queues(&home, tx).unwrap();
    let mut app = App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());

    // The bottle's sidecar, idle: its queue holds two proposals and nothing changes.
    let before = watch.deliveries();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::new(
        q.clone(),
        Arc::new(RecordingApplier::with_routes("routes: []\n")),
    );
    let stop = CancellationToken::new();
    let run = rt.spawn(engine.clone().run(stop.clone()));
    std::thread::sleep(Duration::from_secs(2));
    let woken = watch.deliveries() - before;
    stop.cancel();
    rt.block_on(run).unwrap();
    // The engine's start-up pass opens the queue once (and the events of the dashboard's
    // first load may arrive late); an idle sidecar adds nothing.
    assert!(
        woken <= 20,
        "an idle sidecar woke the dashboard's watcher {woken} times in two seconds"
    );

    // The dashboard's reloads open every queue file; none of that is a change.
    for _ in 0..5 {
        app.load(dashboard::snapshot(&home).unwrap());
    }
    let changes = rx
        .recv_timeout(Duration::from_millis(500))
        .into_iter()
        .chain(rx.try_iter())
        .filter(|e| matches!(e, Event::QueueChanged))
        .count();
    assert_eq!(changes, 0, "reads of the queues were taken for changes");
}
