//! The request log: one JSON object per line. It never holds a token or a body: entries
//! are built from the method, host, path, decision and counters only. A log file is
//! bounded: past [`ROTATE_AT`] bytes it becomes `<file>.1` (replacing the previous one) and
//! a new file starts, so an agent that makes many requests cannot fill the disk.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Where request log lines go.
#[derive(Debug, Clone)]
pub enum LogSink {
    /// Standard error.
    Stderr,
    /// Appended to this file (created 0600 if absent).
    File(PathBuf),
    /// Kept in memory (tests, embedding).
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// One line of the request log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// Method.
    pub method: String,
    /// Host.
    pub host: String,
    /// Path (without the query, which may carry secrets).
    pub path: String,
    /// `allowed` or `blocked`.
    pub decision: &'static str,
    /// Why (`allowed`, `host-not-allowed`, ...).
    pub reason: &'static str,
    /// Index of the matching route.
    pub rule: Option<usize>,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes sent to the client.
    pub bytes_down: u64,
    /// Milliseconds from arrival to the end of the response.
    pub duration_ms: f64,
    /// The outbound DLP finding this line reports (rule, place, action; never the secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlp: Option<crate::dlp::DlpLog>,
}

/// One outbound DLP hit, as the bottle's audit chain records it: what was found, where,
/// on which request, and what egress did. Never the secret: no query, no header value, no
/// body, and no path when the hit was in the request line (the path may hold it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlpHit {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// The request's method.
    pub method: String,
    /// Its host.
    pub host: String,
    /// Its path without the query; `None` when the secret was in the request line.
    pub path: Option<String>,
    /// The scanner rule id, `credential`, or `unscannable`.
    pub rule: String,
    /// Where: `request-line`, `header <name>`, `body`, `trailer <name>`.
    pub place: String,
    /// `blocked`, `redacted` or `logged`.
    pub action: &'static str,
}

/// Receives every DLP hit (at most a few per request, as the request log) as the
/// request is judged. It must not block: the sidecar bundle queues the hit and writes the
/// audit line on another thread.
pub type DlpHitSink = std::sync::Arc<dyn Fn(DlpHit) + Send + Sync>;

/// What the request log and the audit chain show for the path of a request whose DLP hit
/// was in the request line: the path itself may carry the secret.
pub const WITHHELD_PATH: &str = "(withheld: the secret was in the request line)";

pub(crate) struct RequestLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl RequestLog {
    pub fn open(sink: &LogSink) -> std::io::Result<RequestLog> {
        let out: Box<dyn Write + Send> = match sink {
            LogSink::Stderr => Box::new(std::io::stderr()),
            LogSink::File(path) => Box::new(Rotating::open(path.clone(), ROTATE_AT)?),
            LogSink::Memory(buf) => Box::new(MemoryWriter(buf.clone())),
        };
        Ok(RequestLog {
            out: Mutex::new(out),
        })
    }

    pub fn write(&self, entry: &LogEntry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
    }
}

/// Size at which a request log file is rotated.
pub const ROTATE_AT: u64 = 8 << 20;

/// A log file rotated at `max` bytes into `<file>.1`.
struct Rotating {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max: u64,
}

impl Rotating {
    fn open(path: PathBuf, max: u64) -> std::io::Result<Rotating> {
        let file = Self::append(&path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path,
            file,
            size,
            max,
        })
    }

    fn append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    }
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = Self::append(&self.path)?;
            self.size = 0;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct MemoryWriter(Arc<Mutex<Vec<u8>>>);

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// An instant as a log line writes it; taken with `OffsetDateTime::now_utc()` where the line
/// may never be written (formatting it is most of the cost).
pub(crate) fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_log_file_is_rotated_past_its_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("egress.jsonl");
        let mut log = Rotating::open(path.clone(), 10).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n"] {
            log.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "eeee\n");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("egress.jsonl.1")).unwrap(),
            "cccc\ndddd\n"
        );
        // reopened: continues from the file's size
        let mut log = Rotating::open(path.clone(), 10).unwrap();
        log.write_all(b"ffff\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "eeee\nffff\n");
    }
}
