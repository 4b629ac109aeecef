//! The request log: one JSON object per line. It never holds a token or a body: entries
//! are built from the method, host, path, decision and counters only.

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

pub(crate) struct RequestLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl RequestLog {
    pub fn open(sink: &LogSink) -> std::io::Result<RequestLog> {
        let out: Box<dyn Write + Send> = match sink {
            LogSink::Stderr => Box::new(std::io::stderr()),
            LogSink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)?,
                )
            }
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
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
