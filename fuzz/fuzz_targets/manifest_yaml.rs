//! Manifest loading from arbitrary text (file form): never panics, and every input is
//! answered within libFuzzer's time and memory bounds (alias bombs, deep nesting).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = manifest::Manifest::from_yaml(Path::new("/fuzz/bot-bottle.yaml"), text, None);
    let _ = m.check();
    for name in m.bottle_names() {
        let _ = m.bottle(name);
    }
    for name in m.agent_names() {
        if let Ok(agent) = m.agent(name) {
            // a resolved agent can always be written back out
            let _ = agent.bottle.to_yaml();
        }
    }
});
