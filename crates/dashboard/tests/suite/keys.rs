//! Key handling: which action each key asks for.

use pretty_assertions::assert_eq;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use dashboard::{Action, App};

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
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
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
