//! A `dlp-allow` proposal on the dashboard: shown by its effect (which rule may leave to
//! which host), with the request file, not a routes diff.

use proposals::{Entry, Proposal, Status, Tool};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use dashboard::{App, ui};

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
