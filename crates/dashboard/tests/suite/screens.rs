//! Insta snapshots of the dashboard's screens (ratatui's TestBackend).

use proposals::queue::Problem;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use dashboard::{App, ui};

use super::fixtures::snapshot;

fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(110, 30)).unwrap();
    t.draw(|f| ui::render(f, app)).unwrap();
    t.backend().to_string()
}

fn key(app: &mut App, c: KeyCode) {
    app.handle_key(KeyEvent::from(c));
}

#[test]
fn empty_queue() {
    let mut app = App::new(None);
    app.load(dashboard::Snapshot::default());
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn routes_proposal_with_diff_and_stale_warning() {
    let mut app = App::new(None);
    app.load(snapshot());
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn diff_lines_are_coloured() {
    use ratatui::style::Color;
    let mut app = App::new(None);
    app.load(snapshot());
    let mut t = Terminal::new(TestBackend::new(110, 30)).unwrap();
    t.draw(|f| ui::render(f, &app)).unwrap();
    let buf = t.backend().buffer().clone();
    let colour_of = |prefix: &str| {
        (0..30u16)
            .find_map(|y| {
                let row: String = (0..110u16)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect();
                row.starts_with(&format!("│{prefix}"))
                    .then(|| buf[(1, y)].fg)
            })
            .unwrap()
    };
    assert_eq!(
        (
            colour_of("+   - host: pypi.org"),
            colour_of("-   - host: old.example.com")
        ),
        (Color::Green, Color::Red)
    );
}

#[test]
fn failed_apply_and_filter() {
    let mut app = App::new(None);
    app.load(snapshot());
    key(&mut app, KeyCode::Char('f')); // claude-1a2b3
    key(&mut app, KeyCode::Char('f')); // claude-dead0
    key(&mut app, KeyCode::Char('f')); // codex-0b0b0
    key(&mut app, KeyCode::Char('j'));
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn gone_bottle_token_proposal_and_reject_prompt() {
    let mut app = App::new(None);
    let mut s = snapshot();
    s.problems.push(Problem {
        path: "/h/queue/x/0000000000000bad.json".into(),
        reason: "corrupt: EOF".into(),
    });
    app.load(s);
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Char('r'));
    for c in "use a scoped token".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    insta::assert_snapshot!(draw(&app));
}

/// A proposal called a block that widens (one queued before blocks were judged by their
/// effect) shows what it does first, in red: the name is not what the operator judges.
#[test]
fn a_block_that_widens_shows_its_effect_first() {
    use ratatui::style::Color;
    let mut app = App::new(None);
    app.load(snapshot());
    key(&mut app, KeyCode::Char('j')); // the egress-block of codex-0b0b0
    insta::assert_snapshot!(draw(&app));
    let mut t = Terminal::new(TestBackend::new(110, 30)).unwrap();
    t.draw(|f| ui::render(f, &app)).unwrap();
    let buf = t.backend().buffer().clone();
    let line = (0..30u16)
        .find(|y| {
            let row: String = (0..110u16)
                .map(|x| buf[(x, *y)].symbol().to_owned())
                .collect();
            row.starts_with("│  adds host pypi.org: any request")
        })
        .unwrap();
    assert_eq!(buf[(3, line)].fg, Color::Red);
}

#[test]
fn quit_prompt_while_proposals_wait() {
    let mut app = App::new(None);
    app.load(snapshot());
    key(&mut app, KeyCode::Char('q'));
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn footer_after_an_unchanged_edit_and_after_the_next_key() {
    use proposals::queue::{NewProposal, Queue};
    let dir = tempfile::tempdir().unwrap();
    let home = proposals::Home::new(dir.path());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    let (p, _) = q
        .submit(NewProposal {
            tool: proposals::Tool::EgressAllow,
            proposed_file: "routes:\n  - host: a.example\n".into(),
            justification: "need it".into(),
            current_file: Some("routes: []\n".into()),
            args: None,
        })
        .unwrap();
    let mut app = App::new(None);
    app.load(dashboard::snapshot(&home).unwrap());
    app.message = Some(dashboard::perform(
        &home,
        &app,
        &dashboard::Action::Edit(p.id.clone()),
        "op",
        Some(p.proposed_file.clone()),
    ));
    let footer = |app: &App| draw(app).lines().last().unwrap().replace(&p.id, "<id>");
    let after_edit = footer(&app);
    key(&mut app, KeyCode::Char('j'));
    insta::assert_snapshot!(format!("{after_edit}\n{}", footer(&app)));
}

#[test]
fn duration_prompt_and_manifest_confirm_screen() {
    let mut app = App::new(None);
    app.load(snapshot());
    key(&mut app, KeyCode::Char('t'));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('h'));
    let prompt = draw(&app);
    key(&mut app, KeyCode::Esc);
    let before =
        "bottles:\n  dev:\n    egress:\n      routes:\n        - host: crates.io\n  other: {}\n";
    app.persist = Some((
        "00000000000000a1".into(),
        proposals::persist::Plan {
            file: "/work/project/bot-bottle.yaml".into(),
            bottle: "dev".into(),
            before: before.into(),
            after: before.replace(
                "        - host: crates.io\n",
                "        - host: crates.io\n        - host: pypi.org\n",
            ),
        },
    ));
    insta::assert_snapshot!(format!("{prompt}\n{}", draw(&app)));
}

/// A grant the kind cannot have is refused on the key, with why, and nothing is decided.
#[test]
fn a_grant_the_kind_cannot_have_says_why() {
    let mut app = App::new(None);
    app.load(snapshot());
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('j')); // the gitleaks-allow of codex-0b0b0
    assert_eq!(
        app.handle_key(KeyEvent::from(KeyCode::Char('p'))),
        dashboard::Action::None
    );
    insta::assert_snapshot!(draw(&app));
}
