//! The verdicts: one `CASE` line per case on stdout, and whether any case escaped.
//!
//! The harness parses these lines (`escape::parse_cases`) and the table in `SECURITY.md` is
//! generated from their names and details, so their text is the suite's interface.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set when any case printed ESCAPED (the probe then exits 1, which keeps the bottle's state
/// for inspection).
static ANY_ESCAPED: AtomicBool = AtomicBool::new(false);

fn case(name: &str, verdict: &str, detail: impl AsRef<str>) {
    if verdict == "ESCAPED" {
        ANY_ESCAPED.store(true, Ordering::SeqCst);
    }
    let d = detail.as_ref().replace('\n', " ");
    let d: String = d.chars().take(300).collect();
    println!("CASE {name} {verdict} {d}");
}

pub(crate) fn blocked(name: &str, detail: impl AsRef<str>) {
    case(name, "blocked", detail)
}
pub(crate) fn escaped(name: &str, detail: impl AsRef<str>) {
    case(name, "ESCAPED", detail)
}
pub(crate) fn na(name: &str, detail: impl AsRef<str>) {
    case(name, "n/a", detail)
}

/// Several attempts: ESCAPED if any got through, else blocked with every reason.
pub(crate) struct Tally {
    name: &'static str,
    ok: Vec<String>,
    bad: Vec<String>,
}

impl Tally {
    pub(crate) fn new(name: &'static str) -> Tally {
        Tally {
            name,
            ok: Vec::new(),
            bad: Vec::new(),
        }
    }
    pub(crate) fn blocked(&mut self, what: impl AsRef<str>) {
        self.ok.push(what.as_ref().to_string());
    }
    /// A blocked attempt put before the others in the detail (which is cut at 300 characters).
    pub(crate) fn blocked_first(&mut self, what: impl AsRef<str>) {
        self.ok.insert(0, what.as_ref().to_string());
    }
    pub(crate) fn escaped(&mut self, what: impl AsRef<str>) {
        self.bad.push(what.as_ref().to_string());
    }
    pub(crate) fn done(self) {
        eprintln!("escape-probe: {} done", self.name);
        if self.bad.is_empty() {
            blocked(self.name, self.ok.join("; "));
        } else {
            escaped(self.name, self.bad.join("; "));
        }
    }
}

/// Whether any case of this process printed ESCAPED.
pub(crate) fn any_escaped() -> bool {
    ANY_ESCAPED.load(Ordering::SeqCst)
}

/// Records that a child (a section run by [`crate::fork::section`]) printed ESCAPED.
pub(crate) fn mark_escaped() {
    ANY_ESCAPED.store(true, Ordering::SeqCst);
}
