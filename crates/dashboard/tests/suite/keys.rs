//! Key handling: which action each key asks for.

use pretty_assertions::assert_eq;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use proposals::queue::{NewProposal, Queue};
use proposals::{Home, Status, Tool};

use dashboard::{Action, App, Tone};

use super::fixtures::snapshot;

fn press(app: &mut App, c: KeyCode) -> Action {
    app.handle_key(KeyEvent::from(c))
}

#[test]
fn approve_edit_reject_and_quit() {
    let mut app = App::new(None);
    app.load(snapshot());
    assert_eq!(
        press(&mut app, KeyCode::Char('a')),
        Action::Approve("00000000000000a1".into())
    );
    assert_eq!(
        press(&mut app, KeyCode::Char('e')),
        Action::Edit("00000000000000a1".into())
    );
    // the answered one cannot be answered again
    assert_eq!(press(&mut app, KeyCode::Down), Action::None);
    assert_eq!(press(&mut app, KeyCode::Char('a')), Action::None);
    assert!(app.message.as_ref().unwrap().1.contains("answered already"));
    // reject with a note, with typing, backspace and enter
    press(&mut app, KeyCode::Down);
    assert_eq!(press(&mut app, KeyCode::Char('r')), Action::None);
    for c in "nop".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Char('!'));
    // 'q' while typing is text, not quit
    press(&mut app, KeyCode::Char('q'));
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::Reject {
            id: "00000000000000c3".into(),
            notes: Some("no!q".into())
        }
    );
    // Esc cancels a note
    press(&mut app, KeyCode::Char('r'));
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(app.note, None);
    // proposals are waiting: q asks, y confirms
    assert_eq!(
        [KeyCode::Char('q'), KeyCode::Char('y')].map(|k| press(&mut app, k)),
        [Action::None, Action::Quit]
    );
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
}

#[test]
fn esc_cancels_and_never_quits() {
    let mut app = App::new(None);
    app.load(snapshot());
    let keys = [
        KeyCode::Esc, // on the list: nothing to cancel
        KeyCode::Down,
        KeyCode::Char('a'), // answered already: a status line
        KeyCode::Esc,       // dismisses it
        KeyCode::Up,
        KeyCode::Char('r'), // the reject-note prompt
        KeyCode::Char('x'),
        KeyCode::Esc,       // closes it
        KeyCode::Char('q'), // the quit prompt
        KeyCode::Esc,       // closes it
        KeyCode::Esc,
    ];
    assert_eq!(
        keys.map(|k| press(&mut app, k)).to_vec(),
        vec![Action::None; keys.len()]
    );
    assert_eq!((app.note.clone(), app.message.clone()), (None, None));
    // still on the list: the selected proposal can be approved
    assert_eq!(
        press(&mut app, KeyCode::Char('a')),
        Action::Approve("00000000000000a1".into())
    );
}

#[test]
fn q_asks_before_leaving_waiting_proposals() {
    let mut app = App::new(None);
    app.load(snapshot());
    // anything but y keeps the dashboard open, and decides nothing
    for stay in [
        KeyCode::Char('n'),
        KeyCode::Esc,
        KeyCode::Char('q'),
        KeyCode::Char('a'),
    ] {
        assert_eq!(
            [KeyCode::Char('q'), stay].map(|k| press(&mut app, k)),
            [Action::None, Action::None],
            "{stay:?}"
        );
    }
    assert_eq!(
        [KeyCode::Char('q'), KeyCode::Char('y')].map(|k| press(&mut app, k)),
        [Action::None, Action::Quit]
    );
    // only answered proposals left (their bottles apply them): nothing to ask
    let mut s = snapshot();
    s.entries.retain(|e| e.status == Status::Answered);
    let mut app = App::new(None);
    app.load(s);
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    let mut app = App::new(None);
    app.load(dashboard::Snapshot::default());
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
}

fn submit(q: &Queue, host: &str) -> proposals::Proposal {
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
fn leaving_the_editor_without_a_change_decides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let p = submit(&q, "a.example");
    let mut app = App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());
    // as proposed; with the final newline an editor adds or drops; the editor failed
    let untouched = p.proposed_file.clone();
    let newline_added = format!("{}\n", p.proposed_file);
    let newline_dropped = p.proposed_file.trim_end().to_owned();
    let mut said = vec![];
    for edited in [
        Some(untouched),
        Some(newline_added),
        Some(newline_dropped),
        None,
    ] {
        said.push(dashboard::perform(
            &home,
            &app,
            &Action::Edit(p.id.clone()),
            "op",
            edited,
        ));
    }
    let unchanged = format!(
        "edit unchanged: nothing was decided, {} is still pending (a approves it as proposed)",
        p.id
    );
    assert_eq!(
        said,
        vec![
            (Tone::Info, unchanged.clone()),
            (Tone::Info, unchanged.clone()),
            (Tone::Info, unchanged),
            (
                Tone::Info,
                format!(
                    "edit cancelled: nothing was decided, {} is still pending",
                    p.id
                )
            ),
        ]
    );
    assert_eq!(
        (q.response(&p.id).unwrap(), q.status(&p.id).unwrap()),
        (None, Some(Status::Pending))
    );
}

#[test]
fn filter_cycles_through_bottles_and_back() {
    let mut app = App::new(None);
    app.load(snapshot());
    let mut seen = vec![];
    for _ in 0..4 {
        press(&mut app, KeyCode::Char('f'));
        seen.push((app.filter().map(str::to_owned), app.visible().len()));
    }
    assert_eq!(
        seen,
        vec![
            (Some("claude-1a2b3".to_owned()), 1),
            (Some("claude-dead0".to_owned()), 1),
            (Some("codex-0b0b0".to_owned()), 2),
            (None, 4),
        ]
    );
}

#[test]
fn selection_survives_reloads_and_arrivals_are_counted() {
    let mut app = App::new(None);
    let mut s = snapshot();
    let last = s.entries.pop().unwrap();
    assert_eq!(app.load(s.clone()), 0, "the first load announces nothing");
    press(&mut app, KeyCode::Down);
    let selected = app.selected().unwrap().proposal.id.clone();
    s.entries.push(last);
    assert_eq!(app.load(s.clone()), 1);
    assert_eq!(app.selected().unwrap().proposal.id, selected);
    s.entries.remove(1);
    app.load(s);
    assert_eq!(
        app.selected().unwrap().proposal.id,
        "00000000000000a1",
        "falls back to the first"
    );
}

#[test]
fn once_for_a_while_and_into_the_manifest() {
    let mut app = App::new(None);
    app.load(snapshot());
    let id = "00000000000000a1".to_owned();
    assert_eq!(
        press(&mut app, KeyCode::Char('o')),
        Action::Grant {
            id: id.clone(),
            grant: proposals::Grant::Once
        }
    );
    // t opens the duration prompt; a bad duration says so and keeps it open
    assert_eq!(press(&mut app, KeyCode::Char('t')), Action::None);
    for c in "90x".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.message.as_ref().map(|m| m.0), Some(Tone::Error));
    assert_eq!(app.duration.as_deref(), Some("90x"));
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Char('m'));
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::Grant {
            id: id.clone(),
            grant: proposals::Grant::For { seconds: 5400 }
        }
    );
    // Esc cancels the prompt without deciding
    press(&mut app, KeyCode::Char('t'));
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(app.duration, None);
    // p asks the runner for the diff; the confirm screen takes y, anything else cancels
    assert_eq!(
        press(&mut app, KeyCode::Char('p')),
        Action::PreviewPersist(id.clone())
    );
    let plan = proposals::persist::Plan {
        file: "/p/bot-bottle.yaml".into(),
        bottle: "dev".into(),
        before: "a\n".into(),
        after: "a\nb\n".into(),
    };
    app.persist = Some((id.clone(), plan.clone()));
    assert_eq!(press(&mut app, KeyCode::Char('n')), Action::None);
    assert_eq!(app.persist, None);
    app.persist = Some((id.clone(), plan.clone()));
    assert_eq!(
        press(&mut app, KeyCode::Char('y')),
        Action::Persist {
            id,
            plan: Box::new(plan)
        }
    );
}
