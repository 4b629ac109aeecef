//! Proposal validation in supervise: what an agent proposes (routes YAML, token requests,
//! finding fingerprints, justifications) with hostile hosts, paths and sizes never panics,
//! and whatever passes validation is within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervise::Tool;
use supervise::validate::{Payload, check_justification, parse_payload};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let tool = [
        Tool::EgressAllow,
        Tool::EgressBlock,
        Tool::EgressTokenAllow,
        Tool::GitleaksAllow,
        Tool::DlpAllow,
    ][usize::from(sel) % 5];
    let _ = check_justification(text);
    match parse_payload(tool, text) {
        Ok(Payload::Finding(f)) => assert!(f.len() <= 4096),
        Ok(Payload::Routes(cfg)) => {
            // accepted routes must also pass the egress validation the sidecar applies
            assert!(
                policy::validate(&cfg).is_ok(),
                "supervise accepted routes the egress sidecar refuses: {text:?}"
            );
        }
        Ok(Payload::DlpAllow(r)) => {
            // what passes validation passes the check the applier repeats
            assert!(
                proposals::dlp::check_dlp_allow(&r).is_ok(),
                "a dlp-allow request passed parsing but not its own check: {text:?}"
            );
        }
        Ok(Payload::Token(_)) | Err(_) => {}
    }
});
