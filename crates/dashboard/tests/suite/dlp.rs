//! A `dlp-allow` proposal on the dashboard: shown by its effect (which rule may leave to
//! which host), with the request file, not a routes diff. And the outbound DLP hits of every
//! bottle (`d`), read from their request logs.

use proposals::{Entry, Proposal, Status, Tool};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use dashboard::hits::DlpHit;
use dashboard::{Action, App, ui};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

fn dlp_allow_entry() -> Entry {
    Entry {
        proposal: Proposal {
            id: "00000000000000e5".to_owned(),
            arrival_timestamp: "2026-05-25T12:00:05.000000Z".to_owned(),
            bottle_slug: "claude-1a2b3".to_owned(),
            tool: Tool::DlpAllow,
            proposed_file: "host: api.example.com\nrule: aws-access-key-id\n".to_owned(),
            justification: "the key is AWS's published example, the test fixture needs it"
                .to_owned(),
            current_file_hash: None,
            current_file: Some("routes:\n  - host: api.example.com\n".to_owned()),
            args: None,
        },
        status: Status::Pending,
        failure: None,
        outcome: None,
        bottle_present: true,
    }
}

#[test]
fn a_dlp_allow_proposal_shows_its_effect_and_request() {
    let mut app = App::new(None);
    app.load(dashboard::Snapshot {
        entries: vec![dlp_allow_entry()],
        ..dashboard::Snapshot::default()
    });
    let mut t = Terminal::new(TestBackend::new(110, 24)).unwrap();
    t.draw(|f| ui::render(f, &app)).unwrap();
    insta::assert_snapshot!(t.backend().to_string());
}

fn hit(time: &str, bottle: &str, action: &str, rule: &str, place: &str) -> DlpHit {
    DlpHit {
        time: time.to_owned(),
        bottle: bottle.to_owned(),
        method: "POST".to_owned(),
        host: "api.example.com".to_owned(),
        path: "/v1/upload".to_owned(),
        rule: rule.to_owned(),
        place: place.to_owned(),
        action: action.to_owned(),
    }
}

#[test]
fn the_dlp_hits_of_every_bottle_show_on_d_and_esc_goes_back() {
    let mut app = App::new(None);
    app.load(dashboard::Snapshot {
        entries: vec![dlp_allow_entry()],
        hits: vec![
            hit(
                "2026-05-25T12:00:09Z",
                "claude-1a2b3",
                "blocked",
                "aws-access-key-id",
                "body",
            ),
            hit(
                "2026-05-25T12:00:07Z",
                "codex-0b0b0",
                "redacted",
                "credential",
                "header x-debug",
            ),
        ],
        ..dashboard::Snapshot::default()
    });
    assert_eq!(
        app.handle_key(KeyEvent::from(KeyCode::Char('d'))),
        Action::ToggleHits
    );
    let mut t = Terminal::new(TestBackend::new(110, 24)).unwrap();
    t.draw(|f| ui::render(f, &app)).unwrap();
    insta::assert_snapshot!(t.backend().to_string());
    app.handle_key(KeyEvent::from(KeyCode::Esc));
    assert!(!app.show_hits);
}

#[test]
fn hits_are_read_from_each_bottles_request_log_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let home = proposals::Home::new(dir.path());
    let write = |id: &str, text: &str| {
        let log = home.bottle(id).egress_log();
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(log, text).unwrap();
    };
    write(
        "claude-1a2b3",
        concat!(
            "{\"time\":\"2026-05-25T12:00:01Z\",\"method\":\"GET\",\"host\":\"api.example.com\",\"path\":\"/\",\"decision\":\"allowed\",\"reason\":\"allowed\",\"rule\":0,\"status\":200,\"bytes_up\":0,\"bytes_down\":2,\"duration_ms\":1.0}\n",
            "{\"time\":\"2026-05-25T12:00:02Z\",\"method\":\"POST\",\"host\":\"api.example.com\",\"path\":\"/v1/upload\",\"decision\":\"blocked\",\"reason\":\"dlp\",\"rule\":0,\"status\":403,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":1.0,\"dlp\":{\"rule\":\"aws-access-key-id\",\"place\":\"body\",\"action\":\"blocked\"}}\n",
        ),
    );
    write(
        "codex-0b0b0",
        "{\"time\":\"2026-05-25T12:00:03Z\",\"method\":\"POST\",\"host\":\"api.example.com\",\"path\":\"/v1/upload\",\"decision\":\"allowed\",\"reason\":\"allowed\",\"rule\":0,\"status\":200,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":1.0,\"dlp\":{\"rule\":\"credential\",\"place\":\"header x-debug\",\"action\":\"redacted\"}}\n",
    );
    assert_eq!(
        dashboard::hits::read(&home),
        vec![
            hit(
                "2026-05-25T12:00:03Z",
                "codex-0b0b0",
                "redacted",
                "credential",
                "header x-debug"
            ),
            hit(
                "2026-05-25T12:00:02Z",
                "claude-1a2b3",
                "blocked",
                "aws-access-key-id",
                "body"
            ),
        ]
    );
}
