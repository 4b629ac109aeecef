//! The probe's config, as the harness passes it (`escape-probe '<json>'`), and the wait for
//! the harness's go.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::verdict::escaped;

/// The harness's JSON config (addresses, ports, names the cases need).
pub(crate) struct Cfg(pub(crate) Value);

impl Cfg {
    pub(crate) fn s(&self, k: &str) -> String {
        self.0
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
    pub(crate) fn n(&self, k: &str) -> u16 {
        self.0
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(0)
    }
    /// A list of strings, `{id}` replaced by this bottle's identity.
    pub(crate) fn list(&self, k: &str) -> Vec<String> {
        let id = std::env::var("BOT_BOTTLE_IDENTITY").unwrap_or_else(|_| "unknown".into());
        self.0
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(|s| s.replace("{id}", &id)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `wait_for` (optional): a file the harness writes once everything outside the bottle is
/// ready (docker: the sidecar's resolver points at the DNS canary). `go` releases the probe;
/// anything else, or nothing within 10 minutes, is reported and ends it.
pub(crate) fn wait_for_harness(c: &Cfg) -> bool {
    let path = c.s("wait_for");
    if path.is_empty() {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.is_empty()
        {
            if text.trim() == "go" {
                return true;
            }
            escaped(
                "probe-gate",
                format!("the harness did not release the probe: {text}"),
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    escaped("probe-gate", format!("{path} never appeared"));
    false
}
