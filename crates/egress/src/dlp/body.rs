//! The request body as DLP lets it go: decoded when it is compressed, passed through the
//! window, trailers scanned like headers. When a secret stops it, the body ends with an
//! error (the upstream sees an aborted request) and the stop is kept for the proxy's answer.
//!
//! [`DlpBody::prime`] reads until the first bytes may go (or the body ended) before the
//! upstream is contacted, so a small request carrying a secret is refused without any
//! connection being made, and a small body that ended keeps an exact `Content-Length`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::decode::Decoder;
use super::head::check_headers;
use super::window::Window;
use super::{DECODE_LIMIT, Detector, DlpStopped, Report, RouteDlp, Stop};
use crate::body::BoxError;

/// Where the stop of a request is kept (set once).
pub(crate) type Verdict = Arc<OnceLock<Stop>>;

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
    verdict: Verdict,
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
            verdict,
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
        self.ready.clear();
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
        self.judge(plain)
    }

    fn judge(&mut self, plain: Bytes) -> Result<(), Stop> {
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
        if let Some(out) = self
            .window
            .push(&plain, &self.det, &self.route, &self.report)?
        {
            self.ready.push_back(Frame::data(out));
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Stop> {
        if let Some(d) = &mut self.decoder {
            let out = d.finish().map_err(|why| Stop::Unscannable { why })?;
            self.decoded += out.len() as u64;
            self.judge(Bytes::from(out))?;
        }
        if !self.unscanned
            && let Some(rest) = self.window.finish(&self.det, &self.route, &self.report)?
        {
            self.ready.push_back(Frame::data(rest));
        }
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
        while self.ready.is_empty() && !self.done {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(None) => {
                    if let Err(stop) = self.end() {
                        return Poll::Ready(Err(self.stop(stop)));
                    }
                    self.done = true;
                    break;
                }
            };
            let result = match frame.into_data() {
                Ok(data) => self.take(data),
                Err(mut frame) => {
                    // trailers come after the data: let the rest of it go first
                    let mut r = self.end();
                    if r.is_ok()
                        && let Some(t) = frame.trailers_mut()
                    {
                        r = check_headers(&self.det, &self.route, t, None, "trailer", &self.report);
                    }
                    if r.is_ok() {
                        self.ready.push_back(frame);
                        self.done = true;
                    }
                    r
                }
            };
            if let Err(stop) = result {
                return Poll::Ready(Err(self.stop(stop)));
            }
        }
        Poll::Ready(Ok(()))
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
        if this.done {
            return Poll::Ready(None);
        }
        match this.poll_fill(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => Poll::Ready(this.ready.pop_front().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.complete_len() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
