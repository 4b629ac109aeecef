//! The audit chain reader: a real log of a few entries (written by `audit::append`) is
//! truncated, has bytes changed, or lines deleted, duplicated or swapped; the verifier
//! never panics and reports every change to the lines as a break (never trusts it).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use supervise::Home;
use supervise::audit::{NewEntry, append, verify_file};

#[derive(Arbitrary, Debug)]
enum Change {
    Truncate(u16),
    SetByte(u16, u8),
    Insert(u16, Vec<u8>),
    DeleteLine(u8),
    DuplicateLine(u8),
    SwapLines(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    changes: Vec<Change>,
}

/// A pristine log with its head record, written once.
fn pristine() -> &'static (PathBuf, Vec<u8>, Vec<u8>) {
    static P: OnceLock<(PathBuf, Vec<u8>, Vec<u8>)> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bb-fuzz-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let home = Home::new(&dir);
        for i in 0..4 {
            append(
                &home,
                NewEntry {
                    component: "supervise".into(),
                    bottle: "b1".into(),
                    proposal_id: format!("p{i}"),
                    tool: "egress-allow".into(),
                    justification: format!("need host {i}"),
                    arrival_timestamp: "2026-01-01T00:00:00Z".into(),
                    decided_at: "2026-01-01T00:00:01Z".into(),
                    decision: "approved".into(),
                    operator: "op".into(),
                    notes: None,
                    before: Some("routes: []".into()),
                    after: Some(format!("routes: [{{host: h{i}.example}}]")),
                    error: None,
                    effect: vec![format!("adds host h{i}.example: any request")],
                    stage: Some("decided".into()),
                    grant: None,
                },
            )
            .expect("append to a fresh audit log");
        }
        let log = home.audit_file("supervise", "b1");
        let text = std::fs::read(&log).unwrap();
        let head = std::fs::read(log.with_extension("head")).unwrap();
        assert_eq!(verify_file(&log).unwrap(), None, "a fresh log verifies");
        (log, text, head)
    })
}

fn lines(b: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = b.split(|&c| c == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fuzz_target!(|input: Input| {
    let (log, text, head) = pristine();
    let mut b = text.clone();
    for c in input.changes.iter().take(4) {
        match c {
            Change::Truncate(n) => b.truncate(usize::from(*n) % (b.len() + 1)),
            Change::SetByte(at, v) if !b.is_empty() => {
                let i = usize::from(*at) % b.len();
                b[i] = *v;
            }
            Change::Insert(at, bytes) => {
                let i = usize::from(*at) % (b.len() + 1);
                b.splice(i..i, bytes.iter().take(64).copied());
            }
            Change::DeleteLine(n) | Change::DuplicateLine(n) | Change::SwapLines(n, _) => {
                let mut ls: Vec<Vec<u8>> = lines(&b).into_iter().map(<[u8]>::to_vec).collect();
                if ls.is_empty() {
                    continue;
                }
                let i = usize::from(*n) % ls.len();
                match c {
                    Change::DeleteLine(_) => {
                        ls.remove(i);
                    }
                    Change::DuplicateLine(_) => {
                        let l = ls[i].clone();
                        ls.insert(i, l);
                    }
                    Change::SwapLines(_, m) => {
                        let j = usize::from(*m) % ls.len();
                        ls.swap(i, j);
                    }
                    _ => unreachable!(),
                }
                b = ls.join(&b'\n');
                b.push(b'\n');
            }
            Change::SetByte(..) => {}
        }
    }
    let path = log.with_extension(format!("fuzz{}.jsonl", std::process::id()));
    std::fs::write(&path, &b).unwrap();
    std::fs::write(path.with_extension("head"), head).unwrap();
    let result = verify_file(&path);
    let same = lines(&b) == lines(text);
    match result {
        Ok(None) => assert!(
            same,
            "changed log verified as intact:\n{}",
            String::from_utf8_lossy(&b)
        ),
        Ok(Some(_)) | Err(_) => assert!(!same, "an intact log was reported broken: {result:?}"),
    }
});
