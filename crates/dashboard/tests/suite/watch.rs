//! The dashboard against real queue files: arrivals wake it through file events, and
//! its actions become responses that validate edited files.

use std::sync::mpsc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use supervise::queue::{NewProposal, Queue};
use supervise::{Decision, Home, Tool};

use dashboard::{Action, App, Event, Tone};

fn propose(q: &Queue, host: &str) -> supervise::Proposal {
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

    dashboard::perform(
        &home,
        &app,
        &Action::Edit(b.id.clone()),
        "op",
        Some(b.proposed_file.clone()),
    );
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
