//! What the launcher tells the operator while a bottle starts and runs.
//!
//! The library never prints: warnings, notes and image build output go to a [`Report`] the
//! front end gives it. The `bot-bottle` binary prints them on the terminal (prefixed with
//! `bot-bottle: `, readable while an agent holds the terminal in raw mode); a test records
//! them.

/// Where the launcher's messages for the operator go.
pub trait Report: Send + Sync {
    /// A warning or a note for the operator (one or more lines, without a prefix).
    fn line(&self, text: &str);
    /// An urgent message while the agent may own the terminal (the sidecar bundle died).
    fn alert(&self, text: &str) {
        self.line(text);
    }
    /// One line of an image build's output, as it comes.
    fn build_output(&self, _line: &str) {}
    /// The image builds are over (a progress display can be cleared).
    fn build_finished(&self) {}
}

/// A [`Report`] that keeps every message, for tests and front ends that show them later.
#[derive(Debug, Default)]
pub struct Recorded {
    lines: std::sync::Mutex<Vec<String>>,
}

impl Recorded {
    /// The messages so far (alerts included), in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Report for Recorded {
    fn line(&self, text: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(text.to_owned());
        }
    }
}
