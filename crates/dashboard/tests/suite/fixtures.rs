use std::collections::HashSet;

use proposals::proposal::ApplyFailure;
use proposals::{Entry, Proposal, Status, Tool};

pub fn entry(id: &str, bottle: &str, tool: Tool, at: &str, status: Status) -> Entry {
    let (current, proposed) = match tool {
        Tool::GitleaksAllow => (None, "0a1b:tests/fixture.py:generic-api-key:3\n".to_owned()),
        Tool::EgressTokenAllow => (
            Some("routes:\n  - host: api.github.com\n".to_owned()),
            "host: api.github.com\ntoken_name: GITHUB_TOKEN\n".to_owned(),
        ),
        _ => (
            Some(
                "log: blocks\nroutes:\n  - host: api.example.com\n  - host: old.example.com\n"
                    .to_owned(),
            ),
            "log: blocks\nroutes:\n  - host: api.example.com\n  - host: pypi.org\n".to_owned(),
        ),
    };
    Entry {
        proposal: Proposal {
            id: id.to_owned(),
            arrival_timestamp: at.to_owned(),
            bottle_slug: bottle.to_owned(),
            tool,
            proposed_file: proposed,
            justification: format!("{tool} needed to install the dependencies\nsecond line"),
            current_file_hash: None,
            current_file: current,
            args: None,
        },
        status,
        failure: None,
        outcome: None,
        bottle_present: true,
    }
}

pub fn snapshot() -> dashboard::Snapshot {
    let mut failed = entry(
        "00000000000000c3",
        "codex-0b0b0",
        Tool::GitleaksAllow,
        "2026-05-25T12:00:03.000000Z",
        Status::ApplyFailed,
    );
    failed.failure = Some(ApplyFailure {
        id: "00000000000000c3".into(),
        error: "cannot write allowlist: disk full".into(),
        operator: "op".into(),
        at: "2026-05-25T12:01:00.000000Z".into(),
    });
    let mut gone = entry(
        "00000000000000d4",
        "claude-dead0",
        Tool::EgressTokenAllow,
        "2026-05-25T12:00:04.000000Z",
        Status::Pending,
    );
    gone.bottle_present = false;
    dashboard::Snapshot {
        entries: vec![
            entry(
                "00000000000000a1",
                "claude-1a2b3",
                Tool::EgressAllow,
                "2026-05-25T12:00:01.000000Z",
                Status::Pending,
            ),
            entry(
                "00000000000000b2",
                "codex-0b0b0",
                Tool::EgressBlock,
                "2026-05-25T12:00:02.000000Z",
                Status::Answered,
            ),
            failed,
            gone,
        ],
        problems: vec![],
        stale: HashSet::from(["00000000000000a1".to_owned()]),
        hits: vec![],
    }
}
