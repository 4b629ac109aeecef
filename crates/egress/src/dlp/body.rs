//! The request body as DLP lets it go: decoded when it is compressed, passed through the
//! window, trailers scanned like headers. When a secret stops it, the body ends with an
//! error (the upstream sees an aborted request) and the stop is kept for the proxy's answer.
//!
//! [`DlpBody::prime`] reads until the first bytes may go (or the body ended) before the
//! upstream is contacted, so a small request carrying a secret is refused without any
//! connection being made, and a small body that ended keeps an exact `Content-Length`.
//!
//! A large body is judged on another thread, a batch of the window at a time (tokio's
//! blocking pool), while the proxy goes on: it forwards the bytes judged before and reads
//! and decrypts the next ones (up to [`BATCH`] of them wait), and the next batch is judged
//! while the last one's bytes go out (at most two judged batches wait to go). Nothing goes
//! before its batch has been judged, and the batches are judged one after another in the
//! same window, so what is found, cut out and let go is what judging in line finds; when a
//! batch stops the body, what the batches before it let go still goes, then the error, as
//! in line (unit test `a_body_judged_on_another_thread_is_the_body_judged_in_line`). The
//! last part of a body is judged there too when it is large (a body shorter than a batch
//! would otherwise be judged whole on the proxy's thread); the trailers follow it. A body
//! in flight holds at most about four batches: the window's, what arrived meanwhile, and
//! two judged ones waiting to go (the buffers of batches that went come back to the window
//! for the next ones, at most two, in place of new ones: the same bound, held until the body
//! is done rather than freed between batches).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::decode::Decoder;
use super::head::check_headers;
use super::window::{BATCH, Window};
use super::{DECODE_LIMIT, Detector, DlpStopped, Report, RouteDlp, Stop};
use crate::body::BoxError;

/// Where the stop of a request is kept (set once).
pub(crate) type Verdict = Arc<OnceLock<Stop>>;

/// The window handed back by the thread that judged a batch, with what may go.
type Judged = (Window, Result<Option<Bytes>, Stop>);

/// When the body ends with at least this much in the window not yet let go, the last part
/// is judged on another thread too (less is judged in line: the hand-off costs more).
const FINISH_ELSEWHERE: usize = 64 * 1024;

/// What the body's source gave that waits while a batch is judged.
enum Arrived {
    Data(Bytes),
    /// Trailers: the data ended.
    Trailers(Frame<Bytes>),
    /// The end.
    End,
}

/// A request body under DLP.
pub(crate) struct DlpBody<B> {
    inner: B,
    det: Arc<Detector>,
    route: RouteDlp,
    report: Report,
    decoder: Option<Decoder>,
    window: Window,
    decoded: u64,
    /// Past the decode bound on a route that passes what it cannot scan.
    unscanned: bool,
    ready: VecDeque<Frame<Bytes>>,
    done: bool,
    /// The error the body ends with once the frames judged before the stop went.
    stopped: Option<BoxError>,
    /// How the data ended (its end, or trailers), while its last part is judged elsewhere.
    ending: Option<Arrived>,
    verdict: Verdict,
    /// A batch being judged on another thread (the window is there meanwhile).
    judging: Option<tokio::task::JoinHandle<Judged>>,
    /// What arrived meanwhile, in order, and its data's size.
    waiting: VecDeque<Arrived>,
    waiting_len: usize,
    /// The source has given its last frame (it may still wait in `waiting`).
    source_done: bool,
}

impl<B> DlpBody<B> {
    pub(crate) fn new(
        inner: B,
        det: Arc<Detector>,
        route: RouteDlp,
        report: Report,
        decoder: Option<Decoder>,
        verdict: Verdict,
    ) -> Self {
        DlpBody {
            inner,
            det,
            route,
            report,
            decoder,
            window: Window::default(),
            decoded: 0,
            unscanned: false,
            ready: VecDeque::new(),
            done: false,
            stopped: None,
            ending: None,
            verdict,
            judging: None,
            waiting: VecDeque::new(),
            waiting_len: 0,
            source_done: false,
        }
    }

    /// The whole body's length, when it has ended and all of it is waiting to go.
    pub(crate) fn complete_len(&self) -> Option<u64> {
        self.done.then(|| {
            self.ready
                .iter()
                .filter_map(|f| f.data_ref())
                .map(|d| d.len() as u64)
                .sum()
        })
    }

    fn stop(&mut self, stop: Stop) -> BoxError {
        let rule = stop.rule().to_string();
        let _ = self.verdict.set(stop);
        // (frames judged before the stop still go first, as when judging in line)
        self.waiting.clear();
        self.ending = None;
        // (a batch still being judged finishes on its own; what it lets go goes nowhere)
        self.judging = None;
        self.done = true;
        Box::new(DlpStopped { rule })
    }

    fn take(&mut self, data: Bytes) -> Result<(), Stop> {
        let plain = match &mut self.decoder {
            None => data,
            Some(d) => {
                let out = d.push(&data).map_err(|why| Stop::Unscannable { why })?;
                self.decoded += out.len() as u64;
                Bytes::from(out)
            }
        };
        self.judge(plain, true)
    }

    /// Takes decoded bytes into the window (or past it, beyond the decode bound on a route
    /// that passes what it cannot scan); a batch that gathered is judged, on another thread
    /// when `elsewhere` and a runtime can lend one.
    fn judge(&mut self, plain: Bytes, elsewhere: bool) -> Result<(), Stop> {
        if self.decoded > DECODE_LIMIT && !self.unscanned {
            if !self.route.pass_unscannable {
                return Err(Stop::Unscannable {
                    why: format!("it decodes to more than {} MiB", DECODE_LIMIT >> 20),
                });
            }
            // let go what the window holds, then pass the rest unscanned
            self.unscanned = true;
            if let Some(rest) = self.window.finish(&self.det, &self.route, &self.report)? {
                self.ready.push_back(Frame::data(rest));
            }
        }
        if self.unscanned {
            if !plain.is_empty() {
                self.ready.push_back(Frame::data(plain));
            }
            return Ok(());
        }
        self.window.add(&plain);
        if !self.window.due() {
            return Ok(());
        }
        if elsewhere && self.judge_elsewhere(false) {
            return Ok(());
        }
        if let Some(out) = self.window.release(&self.det, &self.route, &self.report)? {
            self.ready.push_back(Frame::data(out));
        }
        Ok(())
    }

    /// Hands the window to the blocking pool to be judged (`last`: finished, the body has
    /// ended; else a batch released); false when no runtime can lend a thread.
    fn judge_elsewhere(&mut self, last: bool) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let mut window = std::mem::take(&mut self.window);
        let (det, route, report) = (self.det.clone(), self.route.clone(), self.report.clone());
        self.judging = Some(rt.spawn_blocking(move || {
            let out = if last {
                window.finish(&det, &route, &report)
            } else {
                window.release(&det, &route, &report)
            };
            (window, out)
        }));
        true
    }

    fn end(&mut self) -> Result<(), Stop> {
        if let Some(d) = &mut self.decoder {
            let out = d.finish().map_err(|why| Stop::Unscannable { why })?;
            self.decoded += out.len() as u64;
            // (here: the window is finished right after)
            self.judge(Bytes::from(out), false)?;
        }
        if self.unscanned {
            return Ok(());
        }
        if self.window.unsent() >= FINISH_ELSEWHERE && self.judge_elsewhere(true) {
            return Ok(());
        }
        if let Some(rest) = self.window.finish(&self.det, &self.route, &self.report)? {
            self.ready.push_back(Frame::data(rest));
        }
        Ok(())
    }

    /// The data ended (and its last part was judged): trailers are judged and go, the body
    /// is done.
    fn ended(&mut self, end: Arrived) -> Result<(), Stop> {
        if let Arrived::Trailers(mut frame) = end {
            if let Some(t) = frame.trailers_mut() {
                check_headers(&self.det, &self.route, t, None, "trailer", &self.report)?;
            }
            self.ready.push_back(frame);
        }
        self.done = true;
        Ok(())
    }
}

impl<B> DlpBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads until something may go or the body ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if let Some(judging) = self.judging.as_mut() {
                match Pin::new(judging).poll(cx) {
                    Poll::Ready(joined) => {
                        self.judging = None;
                        let out = match joined {
                            Ok((window, out)) => {
                                self.window = window;
                                out
                            }
                            // (a panic while judging: the window is lost, nothing more goes)
                            Err(e) => Err(Stop::Unscannable {
                                why: format!("judging the body failed: {e}"),
                            }),
                        };
                        match out {
                            Ok(Some(data)) => self.ready.push_back(Frame::data(data)),
                            Ok(None) => {}
                            Err(stop) => return Poll::Ready(Err(self.stop(stop))),
                        }
                        // (the last part judged: the data's end comes after it)
                        if let Some(end) = self.ending.take()
                            && let Err(stop) = self.ended(end)
                        {
                            return Poll::Ready(Err(self.stop(stop)));
                        }
                    }
                    Poll::Pending => {
                        if !self.ready.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        if self.source_done || self.waiting_len >= BATCH {
                            return Poll::Pending;
                        }
                        // read on (and decrypt) while the batch is judged
                        match self.poll_source(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Ready(Ok(arrived)) => {
                                if let Arrived::Data(d) = &arrived {
                                    self.waiting_len += d.len();
                                }
                                self.waiting.push_back(arrived);
                                continue;
                            }
                        }
                    }
                }
            }
            // What arrived while a batch was judged, in order, until one is judged again
            // (what the last one let go goes first, as when judging in line): the next batch
            // is judged while the last one's bytes go out (at most two judged batches wait).
            while self.judging.is_none()
                && self.ready.len() < 2
                && !self.done
                && let Some(arrived) = self.waiting.pop_front()
            {
                if let Arrived::Data(d) = &arrived {
                    self.waiting_len -= d.len();
                }
                if let Err(stop) = self.arrived(arrived) {
                    return Poll::Ready(Err(self.stop(stop)));
                }
            }
            if self.judging.is_some() {
                continue;
            }
            if !self.ready.is_empty() || self.done {
                return Poll::Ready(Ok(()));
            }
            let arrived = match self.poll_source(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(arrived)) => arrived,
            };
            if let Err(stop) = self.arrived(arrived) {
                return Poll::Ready(Err(self.stop(stop)));
            }
        }
    }

    /// The source's next frame (its end once).
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arrived, BoxError>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(None) => {
                self.source_done = true;
                return Poll::Ready(Ok(Arrived::End));
            }
        };
        Poll::Ready(Ok(match frame.into_data() {
            Ok(data) => Arrived::Data(data),
            Err(frame) => {
                self.source_done = true;
                Arrived::Trailers(frame)
            }
        }))
    }

    /// Takes what the source gave: data into the window, the end (or trailers: after the
    /// data) lets the rest go.
    fn arrived(&mut self, arrived: Arrived) -> Result<(), Stop> {
        match arrived {
            Arrived::Data(data) => self.take(data),
            end => {
                // the rest of the data goes first (trailers come after it)
                self.end()?;
                if self.judging.is_some() {
                    self.ending = Some(end);
                    return Ok(());
                }
                self.ended(end)
            }
        }
    }

    /// Reads until the first bytes may go (or the body ended, or DLP stopped it).
    pub(crate) async fn prime(&mut self) -> Result<(), BoxError> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

impl<B> Body for DlpBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(e) = this.stopped.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.poll_fill(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => match this.ready.pop_front() {
                // what was judged before the stop goes first, then the error
                Some(f) => {
                    this.stopped = Some(e);
                    Poll::Ready(Some(Ok(f)))
                }
                None => Poll::Ready(Some(Err(e))),
            },
            Poll::Ready(Ok(())) => Poll::Ready(this.ready.pop_front().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty() && self.stopped.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.complete_len() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use policy::DlpMode;
    use pretty_assertions::assert_eq;

    use super::super::{DlpLog, scanner};
    use super::*;

    const AWS: &str = "AKIAZ3MSJV4WWNKWW5FG";

    /// A body that gives its chunks as fast as they are asked for, then its trailers (if
    /// any).
    struct Chunks(VecDeque<Bytes>, Option<http::HeaderMap>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let frame = match self.0.pop_front() {
                Some(b) => Some(Frame::data(b)),
                None => self.1.take().map(Frame::trailers),
            };
            Poll::Ready(frame.map(Ok))
        }
    }

    fn route(mode: DlpMode) -> RouteDlp {
        RouteDlp {
            mode,
            ..RouteDlp::default()
        }
    }

    fn recorder() -> (Report, Arc<Mutex<Vec<DlpLog>>>) {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let l = logs.clone();
        (Arc::new(move |e| l.lock().unwrap().push(e)), logs)
    }

    /// What went and what stopped it, judged in line by the window alone (as before).
    fn in_line(mode: DlpMode, chunks: &[&[u8]]) -> (Vec<u8>, Option<Stop>, Vec<DlpLog>) {
        let det = Detector::new(scanner().unwrap(), &[]).unwrap();
        let (report, logs) = recorder();
        let mut w = Window::default();
        let mut out = Vec::new();
        for c in chunks {
            match w.push(c, &det, &route(mode), &report) {
                Ok(Some(b)) => out.extend_from_slice(&b),
                Ok(None) => {}
                Err(stop) => return (out, Some(stop), logs.lock().unwrap().clone()),
            }
        }
        let stop = match w.finish(&det, &route(mode), &report) {
            Ok(Some(b)) => {
                out.extend_from_slice(&b);
                None
            }
            Ok(None) => None,
            Err(stop) => Some(stop),
        };
        (out, stop, logs.lock().unwrap().clone())
    }

    /// The same through [`DlpBody`], whose batches are judged on the blocking pool.
    async fn through_body(mode: DlpMode, chunks: &[&[u8]]) -> (Vec<u8>, Option<Stop>, Vec<DlpLog>) {
        let det = Arc::new(Detector::new(scanner().unwrap(), &[]).unwrap());
        let (report, logs) = recorder();
        let verdict: Verdict = Arc::new(OnceLock::new());
        let source = Chunks(
            chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
            None,
        );
        let mut body = DlpBody::new(source, det, route(mode), report, None, verdict.clone());
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => out.extend_from_slice(f.data_ref().unwrap()),
                Err(_) => break,
            }
        }
        let stop = verdict.get().cloned();
        (out, stop, logs.lock().unwrap().clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_last_part_judged_elsewhere_goes_before_the_trailers_and_stops_as_in_line() {
        // Bodies shorter than a batch whose last part (over FINISH_ELSEWHERE) is judged on
        // the blocking pool: the data, then the trailers; a key in the data or in a trailer
        // stops the body, and nothing of the key goes.
        let clean = vec![b'a'; FINISH_ELSEWHERE + 100_000];
        let mut keyed = clean.clone();
        keyed.extend_from_slice(format!(" key={AWS} ").as_bytes());
        let trailers = |value: &str| {
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", value.parse().unwrap());
            t
        };
        for (data, trailer, stopped) in [
            (&clean, "abc", false),
            (&keyed, "abc", true),
            (&clean, AWS, true),
        ] {
            let det = Arc::new(Detector::new(scanner().unwrap(), &[]).unwrap());
            let (report, logs) = recorder();
            let verdict: Verdict = Arc::new(OnceLock::new());
            let source = Chunks(
                data.chunks(10_000).map(Bytes::copy_from_slice).collect(),
                Some(trailers(trailer)),
            );
            let mut body = DlpBody::new(
                source,
                det,
                route(DlpMode::Block),
                report,
                None,
                verdict.clone(),
            );
            // (a stop while priming refuses the request before the upstream is contacted)
            let mut failed = body.prime().await.is_err();
            let (mut went, mut got_trailers) = (Vec::new(), None);
            while !failed && let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) if f.is_data() => {
                        assert!(got_trailers.is_none(), "data after the trailers");
                        went.extend_from_slice(f.data_ref().unwrap());
                    }
                    Ok(f) => got_trailers = f.into_trailers().ok(),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert_eq!(verdict.get().is_some(), stopped, "{trailer}");
            assert_eq!(failed, stopped, "{trailer}");
            assert!(!String::from_utf8_lossy(&went).contains("AKIA"));
            if stopped {
                assert!(got_trailers.is_none());
                assert_eq!(logs.lock().unwrap().len(), 1);
            } else {
                assert!(went == *data, "{} bytes went of {}", went.len(), data.len());
                assert_eq!(got_trailers.unwrap()["x-checksum"], "abc");
                assert!(body.is_end_stream());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_judged_on_another_thread_is_the_body_judged_in_line() {
        // Keys at many places of a body of ~1.6 MB (12 batches), in chunks of several sizes,
        // in each mode: the same bytes go, the same findings are logged, the same stop.
        let mut body = Vec::new();
        for i in 0..60usize {
            body.extend(std::iter::repeat_n(
                b'a' + (i % 20) as u8,
                20_000 + i * 1_013,
            ));
            body.extend_from_slice(format!(" key={AWS} ").as_bytes());
        }
        let mut late = vec![b'x'; 1_500_000];
        late.extend_from_slice(format!(" key={AWS} ").as_bytes());
        late.extend(vec![b'y'; 300_000]);
        let plain = vec![b'z'; 1_000_000];
        for (name, data) in [("keys", &body), ("late key", &late), ("no key", &plain)] {
            for chunk in [997, 16 * 1024, 100_000, 400_000] {
                let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
                for mode in [DlpMode::Block, DlpMode::Redact, DlpMode::Log] {
                    let want = in_line(mode, &chunks);
                    let got = through_body(mode, &chunks).await;
                    assert!(
                        got.0 == want.0,
                        "{name}, chunks of {chunk}, {mode:?}: {} bytes went, {} in line",
                        got.0.len(),
                        want.0.len()
                    );
                    assert_eq!(got.1, want.1, "{name}, chunks of {chunk}, {mode:?}");
                    assert_eq!(got.2, want.2, "{name}, chunks of {chunk}, {mode:?}");
                    if mode == DlpMode::Block && name != "no key" {
                        assert!(want.1.is_some());
                        assert!(!String::from_utf8_lossy(&got.0).contains("AKIA"));
                    }
                }
            }
        }
    }
}
