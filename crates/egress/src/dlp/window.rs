//! The streaming window over a request body: what has arrived is scanned, and all but its
//! last [`HOLD`] bytes is let go. A secret shorter than `HOLD - MARGIN` is therefore whole in
//! the window before any byte of it is let go, wherever the chunks were cut; a finding that
//! ends within [`MARGIN`] of what has arrived waits for more (a longer match may follow).
//! Memory is bounded by `HOLD + CONTEXT + BATCH` plus one chunk, whatever the body's size.
//!
//! The buffer a batch was judged in goes out as it is, and comes back once the batch went
//! (at most [`SPARES`] kept per window, freed with it): a fresh buffer per batch was pages
//! the kernel maps and zeroes on first touch, ~7 page faults per MiB of an upload against ~1
//! (bench/README.md, "the upload's cost per byte"). A spare only takes the place of a buffer
//! that would be allocated, so no more buffers are alive at once than without them.

use std::sync::{Arc, Mutex, Weak};

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

/// Buffers of batches that went, kept for the next batches of the same body.
const SPARES: usize = 2;

/// The buffers a window's judged batches give back once they went (emptied).
type Spares = Arc<Mutex<Vec<Vec<u8>>>>;

/// The window of one body.
#[derive(Debug, Default)]
pub(crate) struct Window {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already let go.
    sent: usize,
    /// Findings ending at or before this position of `buf` have been judged.
    frontier: usize,
    spares: Spares,
}

/// The buffer of a judged batch while it goes out; it returns to its window's spares when
/// the last handle on it is dropped (or is freed, when the window is gone or has enough).
struct Going {
    buf: Vec<u8>,
    home: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Going {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Going {
    fn drop(&mut self) {
        let Some(home) = self.home.upgrade() else {
            return;
        };
        // (a poisoned lock: the buffer is freed, as it was before buffers came back)
        if let Ok(mut spares) = home.lock()
            && spares.len() < SPARES
        {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            spares.push(buf);
        }
    }
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
        let mut next = self.spare();
        next.extend_from_slice(&self.buf[drop..]);
        let mut judged = std::mem::replace(&mut self.buf, next);
        judged.truncate(cut);
        let going = Going {
            buf: judged,
            home: Arc::downgrade(&self.spares),
        };
        let out = Bytes::from_owner(going).slice(self.sent..);
        self.sent = cut - drop;
        self.frontier = self.frontier.saturating_sub(drop);
        Ok(Some(out))
    }

    /// An empty buffer for the next batch: one that went and came back, else a new one as
    /// large as the window's.
    fn spare(&self) -> Vec<u8> {
        let back = self.spares.lock().ok().and_then(|mut s| s.pop());
        back.unwrap_or_else(|| Vec::with_capacity(self.buf.capacity()))
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
    fn the_buffer_of_a_batch_that_went_carries_a_later_batch_and_one_held_is_left_alone() {
        let det = Detector::new(scanner().unwrap(), &[]).unwrap();
        let route = RouteDlp::default();
        let report: Report = Arc::new(|_| {});
        let mut w = Window::default();
        let body: Vec<u8> = (0..6 * (HOLD + BATCH))
            .map(|i| b'a' + (i % 23) as u8)
            .collect();
        let mut chunks = body.chunks(HOLD + BATCH);
        let mut went = 0;
        // each batch is the body's next bytes
        let mut next = |w: &mut Window| {
            let out = w
                .push(chunks.next().unwrap(), &det, &route, &report)
                .unwrap()
                .unwrap();
            assert!(out == body[went..went + out.len()], "at {went}");
            went += out.len();
            out
        };
        let first = next(&mut w);
        let first_bytes = first.to_vec();
        // held: the next batches cannot take its buffer, and it does not change
        let second = next(&mut w);
        let third = next(&mut w);
        let first_at = first.as_ptr() as usize..first.as_ptr() as usize + first.len();
        for b in [&second, &third] {
            assert!(!first_at.contains(&(b.as_ptr() as usize)));
        }
        assert!(first == first_bytes);
        // gone: their buffers come back (at most SPARES) and carry the next batches
        let spares = |w: &Window| w.spares.lock().unwrap().len();
        assert_eq!(spares(&w), 0);
        drop(first);
        drop(second);
        drop(third);
        assert_eq!(spares(&w), SPARES);
        let fourth = next(&mut w);
        assert_eq!(spares(&w), SPARES - 1);
        let fifth = next(&mut w);
        assert_eq!(spares(&w), SPARES - 2);
        // a batch that goes after its window is gone is simply freed
        drop(w);
        drop(fourth);
        drop(fifth);
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
