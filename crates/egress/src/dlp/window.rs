//! The streaming window over a request body: what has arrived is scanned, and all but its
//! last [`HOLD`] bytes is let go. A secret shorter than `HOLD - MARGIN` is therefore whole in
//! the window before any byte of it is let go, wherever the chunks were cut; a finding that
//! ends within [`MARGIN`] of what has arrived waits for more (a longer match may follow).
//! Memory is bounded by `HOLD + CONTEXT + BATCH` plus one chunk, whatever the body's size.

use bytes::Bytes;

use super::{Detector, Report, RouteDlp, Stop, apply};

/// Bytes held back until more arrives: more than the longest secret a rule matches (an
/// RSA-4096 private key in PEM is about 3.3 KiB) plus [`MARGIN`].
pub(crate) const HOLD: usize = 16 * 1024;
/// A finding ending this close to the end of what has arrived is judged on the next chunk.
const MARGIN: usize = 1024;
/// Bytes already let go that stay in front of the window, for the rules' context.
const CONTEXT: usize = 1024;
/// New bytes gathered before the window is scanned again: each scan also reads the held and
/// context bytes again, so scanning every small chunk would read a body several times, and
/// each batch is handed to another thread and back ([`super::body`]). 512 KiB (128 KiB
/// before 2026-12-07): the held bytes read again fall from 13% to 3% of a body and the
/// hand-offs to a quarter (bench/README.md, "the upload's judging in line").
pub(crate) const BATCH: usize = 512 * 1024;

/// The window of one body.
#[derive(Debug, Default)]
pub(crate) struct Window {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already let go.
    sent: usize,
    /// Findings ending at or before this position of `buf` have been judged.
    frontier: usize,
}

impl Window {
    /// Takes a chunk; returns the bytes that may go now.
    pub(crate) fn push(
        &mut self,
        chunk: &[u8],
        det: &Detector,
        route: &RouteDlp,
        report: &Report,
    ) -> Result<Option<Bytes>, Stop> {
        self.add(chunk);
        if !self.due() {
            return Ok(None);
        }
        self.release(det, route, report)
    }

    /// Takes a chunk without judging anything ([`Window::push`] is this, then
    /// [`Window::release`] when [`Window::due`]).
    pub(crate) fn add(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes taken and not let go yet.
    pub(crate) fn unsent(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Whether a batch has gathered: the window is to be judged before it takes more.
    pub(crate) fn due(&self) -> bool {
        self.buf.len() >= self.sent + HOLD + BATCH
    }

    /// Judges what has gathered and returns the bytes that may go now (all but the held
    /// back ones).
    pub(crate) fn release(
        &mut self,
        det: &Detector,
        route: &RouteDlp,
        report: &Report,
    ) -> Result<Option<Bytes>, Stop> {
        self.judge(false, det, route, report)?;
        let cut = self.buf.len().saturating_sub(HOLD);
        if cut <= self.sent {
            return Ok(None);
        }
        // What goes leaves in the buffer it was judged in (no copy of the batch); the held
        // back bytes and the context before them start the next one.
        let drop = cut.saturating_sub(CONTEXT);
        let mut next = Vec::with_capacity(self.buf.capacity());
        next.extend_from_slice(&self.buf[drop..]);
        let mut judged = std::mem::replace(&mut self.buf, next);
        judged.truncate(cut);
        let out = Bytes::from(judged).slice(self.sent..);
        self.sent = cut - drop;
        self.frontier = self.frontier.saturating_sub(drop);
        Ok(Some(out))
    }

    /// The body ended: judges the rest and returns it.
    pub(crate) fn finish(
        &mut self,
        det: &Detector,
        route: &RouteDlp,
        report: &Report,
    ) -> Result<Option<Bytes>, Stop> {
        self.judge(true, det, route, report)?;
        let rest = std::mem::take(&mut self.buf);
        let out = (rest.len() > self.sent).then(|| Bytes::from(rest).slice(self.sent..));
        self.sent = 0;
        self.frontier = 0;
        Ok(out)
    }

    fn judge(
        &mut self,
        last: bool,
        det: &Detector,
        route: &RouteDlp,
        report: &Report,
    ) -> Result<(), Stop> {
        let limit = if last {
            self.buf.len()
        } else {
            self.buf.len().saturating_sub(MARGIN)
        };
        if limit <= self.frontier {
            return Ok(());
        }
        let hits: Vec<_> = det
            .find(&self.buf)
            .into_iter()
            .filter(|h| h.span.end > self.frontier && h.span.end <= limit)
            .collect();
        let before = self.buf.len();
        apply(route, hits, &mut self.buf, "body", report)?;
        // redactions happen before `limit`; what follows it is unchanged
        self.frontier = (limit + self.buf.len()).saturating_sub(before);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use policy::DlpMode;
    use pretty_assertions::assert_eq;

    use super::super::{DlpLog, MARKER, scanner};
    use super::*;

    const AWS: &str = "AKIAZ3MSJV4WWNKWW5FG";

    fn run(mode: DlpMode, chunks: &[Vec<u8>]) -> (Result<Vec<u8>, Stop>, Vec<DlpLog>) {
        let det = Detector::new(scanner().unwrap(), &[]).unwrap();
        let route = RouteDlp {
            mode,
            ..RouteDlp::default()
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        let l = logs.clone();
        let report: Report = Arc::new(move |e| l.lock().unwrap().push(e));
        let mut w = Window::default();
        let mut out = Vec::new();
        let mut result = Ok(());
        for c in chunks {
            match w.push(c, &det, &route, &report) {
                Ok(Some(b)) => out.extend_from_slice(&b),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let result = result.and_then(|()| {
            if let Some(b) = w.finish(&det, &route, &report)? {
                out.extend_from_slice(&b);
            }
            Ok(out)
        });
        let logs = logs.lock().unwrap().clone();
        (result, logs)
    }

    #[test]
    fn keys_at_many_places_of_a_large_body_in_small_chunks_are_all_redacted() {
        let mut body = Vec::new();
        let mut expected = Vec::new();
        for i in 0..40 {
            let filler = vec![b'a' + (i % 20) as u8; BATCH / 14 + i * 731];
            body.extend_from_slice(&filler);
            expected.extend_from_slice(&filler);
            body.extend_from_slice(format!(" key={AWS} ").as_bytes());
            expected.extend_from_slice(format!(" key={MARKER} ").as_bytes());
        }
        for chunk in [997, 16 * 1024, 100_000] {
            let chunks: Vec<Vec<u8>> = body.chunks(chunk).map(<[u8]>::to_vec).collect();
            let (out, logs) = run(DlpMode::Redact, &chunks);
            assert!(out.unwrap() == expected, "chunks of {chunk}");
            assert_eq!(logs.len(), 40, "chunks of {chunk}");
        }
    }

    fn body_with_key(filler: usize) -> Vec<u8> {
        let mut b = vec![b'a'; filler];
        b.extend_from_slice(format!(" key={AWS} ").as_bytes());
        b.extend(vec![b'b'; filler]);
        b
    }

    #[test]
    fn a_key_split_at_every_offset_is_redacted_and_never_let_go() {
        // the key past the first batch
        let body = body_with_key(BATCH + BATCH / 2);
        let at = body
            .windows(AWS.len())
            .position(|w| w == AWS.as_bytes())
            .unwrap();
        for cut in [
            at - 1,
            at,
            at + 1,
            at + 7,
            at + AWS.len() - 1,
            at + AWS.len(),
        ] {
            let chunks = vec![body[..cut].to_vec(), body[cut..].to_vec()];
            let (out, logs) = run(DlpMode::Redact, &chunks);
            let out = out.unwrap();
            let expected = String::from_utf8(body.clone())
                .unwrap()
                .replace(AWS, MARKER);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "cut at {cut}");
            assert_eq!(logs.len(), 1, "cut at {cut}: {logs:?}");
        }
    }

    #[test]
    fn block_stops_before_any_byte_of_the_key_goes() {
        // the key in the third batch: two were let go before it
        let body = body_with_key(2 * BATCH + BATCH / 2);
        let chunks: Vec<Vec<u8>> = body.chunks(1000).map(<[u8]>::to_vec).collect();
        let det = Detector::new(scanner().unwrap(), &[]).unwrap();
        let route = RouteDlp::default();
        let report: Report = Arc::new(|_| {});
        let mut w = Window::default();
        let mut sent = Vec::new();
        let mut stopped = None;
        for c in &chunks {
            match w.push(c, &det, &route, &report) {
                Ok(Some(b)) => sent.extend_from_slice(&b),
                Ok(None) => {}
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            }
        }
        assert_eq!(
            stopped,
            Some(Stop::Secret {
                rule: "aws-access-key-id".into(),
                place: "body"
            })
        );
        assert!(sent.len() >= 2 * BATCH, "{} bytes went first", sent.len());
        assert!(!String::from_utf8_lossy(&sent).contains("AKIA"));
    }

    #[test]
    fn log_mode_reports_once_and_changes_nothing() {
        let body = body_with_key(30_000);
        let chunks: Vec<Vec<u8>> = body.chunks(777).map(<[u8]>::to_vec).collect();
        let (out, logs) = run(DlpMode::Log, &chunks);
        assert_eq!(out.unwrap(), body);
        assert_eq!(
            logs,
            vec![DlpLog {
                rule: "aws-access-key-id".into(),
                place: "body".into(),
                action: "logged"
            }]
        );
    }
}
