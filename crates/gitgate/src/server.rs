//! The HTTP side: only git's smart-HTTP endpoints of configured repositories are served;
//! everything else is a clear 4xx. Fetches sync the mirror first; pushes hold the
//! repository's lock for their whole run so they apply one at a time.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::cgi::{self, CgiBody, CgiRequest, CgiSettings};
use crate::mirror::RepoHandle;

/// Response bodies the gate sends.
pub enum GateBody {
    /// A short message.
    Text(Option<Bytes>),
    /// Streamed from `git http-backend`.
    Cgi(Box<CgiBody>),
}

impl Body for GateBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            GateBody::Text(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GateBody::Cgi(c) => Pin::new(c.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GateBody::Text(b) => b.is_none(),
            GateBody::Cgi(c) => c.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GateBody::Text(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GateBody::Text(None) => SizeHint::with_exact(0),
            GateBody::Cgi(c) => c.size_hint(),
        }
    }
}

/// A plain-text response (git shows `text/plain` error bodies to the user as `remote:`).
pub(crate) fn text_response(status: StatusCode, text: &str) -> Response<GateBody> {
    let mut r = Response::new(GateBody::Text(Some(Bytes::from(text.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// Shared server state.
pub(crate) struct Shared {
    pub repos: BTreeMap<String, RepoHandle>,
    pub cgi: CgiSettings,
    pub git_timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
}

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    InfoRefs(&'a str),
    UploadPack(&'a str),
    ReceivePack(&'a str),
}

pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
    let rest = path.strip_prefix('/')?;
    let (repo, endpoint) = rest.split_once(".git/")?;
    if repo.is_empty() || repo.contains('/') {
        return None;
    }
    match (method, endpoint) {
        (&Method::GET, "info/refs") => Some(Route::InfoRefs(repo)),
        (&Method::POST, "git-upload-pack") => Some(Route::UploadPack(repo)),
        (&Method::POST, "git-receive-pack") => Some(Route::ReceivePack(repo)),
        _ => None,
    }
}

fn header(req: &Request<Incoming>, name: http::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
    probe: Arc<Probe>,
) -> Result<Response<GateBody>, Infallible> {
    let path = req.uri().path().to_string();
    let Some(route) = route(req.method(), &path) else {
        return Ok(text_response(
            StatusCode::NOT_FOUND,
            "the git gate only serves git smart-HTTP requests for /<name>.git\n",
        ));
    };
    let name = match &route {
        Route::InfoRefs(n) | Route::UploadPack(n) | Route::ReceivePack(n) => *n,
    };
    let Some(repo) = shared.repos.get(name) else {
        let known: Vec<&str> = shared.repos.keys().map(String::as_str).collect();
        return Ok(text_response(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown repository `{name}`: this gate serves {}; add it to git-gate.repos in the manifest\n",
                if known.is_empty() {
                    "no repositories".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let query = req.uri().query().unwrap_or_default().to_string();
    let mut hold: Option<Box<dyn Send + Sync>> = None;
    match route {
        Route::InfoRefs(_) => {
            let service = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("service="))
                .unwrap_or_default();
            if service != "git-upload-pack" && service != "git-receive-pack" {
                return Ok(text_response(
                    StatusCode::FORBIDDEN,
                    "the git gate serves only smart HTTP; use a current git client\n",
                ));
            }
            if let Err(e) = repo.sync(shared.git_timeout, shared.connect_timeout).await {
                tracing::warn!(repo = name, error = %e, "upstream sync failed");
                return Ok(text_response(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "the git gate cannot sync `{name}` with its upstream, so it will not serve stale data: {}\n",
                        one_line(&e)
                    ),
                ));
            }
        }
        Route::UploadPack(_) => {}
        Route::ReceivePack(_) => {
            // One push at a time per repository, and no sync in between.
            hold = Some(Box::new(repo.lock.clone().lock_owned().await));
        }
    }
    let cgi_req = CgiRequest {
        method: req.method().as_str().to_string(),
        path_info: path.clone(),
        query,
        content_type: header(&req, http::header::CONTENT_TYPE),
        content_length: header(&req, http::header::CONTENT_LENGTH),
        content_encoding: header(&req, http::header::CONTENT_ENCODING),
        git_protocol: header(&req, http::HeaderName::from_static("git-protocol")),
        remote_addr: remote.ip().to_string(),
    };
    Ok(cgi::run(&shared.cgi, cgi_req, req.into_body(), hold, &probe).await)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn split_probe(stream: tokio::net::TcpStream) -> io::Result<(tokio::net::TcpStream, Probe)> {
    let std = stream.into_std()?;
    let probe = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, Probe::Tcp(probe)))
}

fn split_probe_unix(stream: tokio::net::UnixStream) -> io::Result<(tokio::net::UnixStream, Probe)> {
    let std = stream.into_std()?;
    let probe = std.try_clone()?;
    Ok((tokio::net::UnixStream::from_std(std)?, Probe::Unix(probe)))
}

/// A second handle on a client connection, used only to notice that the client went away.
#[derive(Debug)]
pub(crate) enum Probe {
    /// A TCP client.
    Tcp(std::net::TcpStream),
    /// A Unix socket client (the sidecar bundle, forwarded into the bottle).
    Unix(std::os::unix::net::UnixStream),
}

impl Probe {
    pub(crate) fn try_clone(&self) -> io::Result<Probe> {
        Ok(match self {
            Probe::Tcp(s) => Probe::Tcp(s.try_clone()?),
            Probe::Unix(s) => Probe::Unix(s.try_clone()?),
        })
    }
}

/// Resolves when the client has closed its connection (or it failed).
///
/// The probe watches a duplicate of the connection for *read-closed* readiness (the peer's
/// FIN or close, `EPOLLRDHUP`/`EPOLLHUP`) and never reads or peeks. Data the client sends
/// meanwhile (the rest of a request body, a next request) belongs to hyper's handle; it
/// wakes the probe, which then waits for the next change. An earlier version peeked after
/// readiness and took "nothing there" as "client gone": when hyper had read a body chunk in
/// between, it killed `git http-backend` mid-request and the client's push or fetch failed
/// (a 400, or a response cut short). Only the Unix side did that (the TCP side used tokio's
/// peek, which waits again), so only native bottles, whose forwarder reaches the gate's
/// Unix socket, saw it. It also stopped watching for good once it had seen data.
pub(crate) async fn client_gone(probe: &Probe) {
    let registered = match probe.try_clone() {
        Ok(Probe::Tcp(dup)) => dup
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(dup))
            .map(Registered::Tcp),
        Ok(Probe::Unix(dup)) => dup
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(dup))
            .map(Registered::Unix),
        Err(e) => Err(e),
    };
    // Without a probe the request runs to its end or its deadline.
    let Ok(sock) = registered else {
        return std::future::pending().await;
    };
    loop {
        let ready = match &sock {
            Registered::Tcp(s) => s.ready(tokio::io::Interest::READABLE).await,
            Registered::Unix(s) => s.ready(tokio::io::Interest::READABLE).await,
        };
        match ready {
            Err(_) => return,
            Ok(r) if r.is_read_closed() => return,
            Ok(_) => {}
        }
        // Readable only: forget this readiness (unless something newer arrived meanwhile)
        // and wait for the next event on the socket.
        let again = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
        let _ = match &sock {
            Registered::Tcp(s) => s.try_io(tokio::io::Interest::READABLE, again),
            Registered::Unix(s) => s.try_io(tokio::io::Interest::READABLE, again),
        };
    }
}

/// The probe's duplicate, registered with the runtime.
enum Registered {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Serves one client connection (TCP or Unix) on its own task.
fn spawn_connection<S>(shared: Arc<Shared>, stream: S, remote: SocketAddr, probe: Probe)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let probe = Arc::new(probe);
    tokio::spawn(async move {
        let svc = service_fn(move |req| handle(shared.clone(), req, remote, probe.clone()));
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(false)
            .header_read_timeout(std::time::Duration::from_secs(30))
            .timer(hyper_util::rt::TokioTimer::new())
            .serve_connection(TokioIo::new(stream), svc);
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// Accepts connections on a Unix socket until `shutdown` resolves (the sidecar bundle).
pub(crate) async fn serve_unix(
    shared: Arc<Shared>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let remote = SocketAddr::from(([127, 0, 0, 1], 0));
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (stream, probe) = match split_probe_unix(stream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up a connection");
                continue;
            }
        };
        spawn_connection(shared.clone(), stream, remote, probe);
    }
}

/// Accepts connections until `shutdown` resolves.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // A second handle on the socket lets a request notice that its client went away
        // while git is still working (hyper only reads when it wants the next request).
        let (stream, probe) = match split_probe(stream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up a connection");
                continue;
            }
        };
        spawn_connection(shared.clone(), stream, remote, probe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn routes_only_smart_http() {
        assert_eq!(
            route(&Method::GET, "/app.git/info/refs"),
            Some(Route::InfoRefs("app"))
        );
        assert_eq!(
            route(&Method::POST, "/app.git/git-receive-pack"),
            Some(Route::ReceivePack("app"))
        );
        assert_eq!(route(&Method::GET, "/app.git/HEAD"), None);
        assert_eq!(route(&Method::GET, "/app.git/objects/info/packs"), None);
        assert_eq!(route(&Method::GET, "/a/b.git/info/refs"), None);
        assert_eq!(route(&Method::POST, "/app.git/info/refs"), None);
    }

    /// The request's own reader (hyper) consumes what the client sends while the probe
    /// watches a second handle on the socket. Data that is gone by the time the probe looks
    /// must not be taken as the client going away (that killed `git http-backend` after it
    /// had sent its headers, so the client got a cut response), and a client that really
    /// closes must still be noticed, even after it sent more data.
    ///
    /// The reader spins on its own handle, so it takes every byte moments after it arrives,
    /// often before the probe's task gets to look.
    async fn probe_survives_reads_then_sees_close(
        probe: Probe,
        reader_fd: std::os::fd::OwnedFd,
        mut client: impl std::io::Write,
    ) {
        let gone = tokio::spawn(async move { client_gone(&probe).await });
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match rustix::net::recv(&reader_fd, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
                    Ok((0, _)) => return,
                    Ok(_) => {}
                    Err(rustix::io::Errno::AGAIN) => std::thread::yield_now(),
                    Err(_) => return,
                }
            }
        });
        for _ in 0..200 {
            client.write_all(b"x").unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            assert!(
                !gone.is_finished(),
                "the probe took data the reader had already read for a closed client"
            );
        }
        drop(client);
        tokio::time::timeout(std::time::Duration::from_secs(20), gone)
            .await
            .expect("a closed client is noticed")
            .unwrap();
        reader.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unix_probe_is_not_fooled_by_data_the_request_reader_took() {
        let (server, client) = std::os::unix::net::UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let reader = std::os::fd::OwnedFd::from(server.try_clone().unwrap());
        let (_server, probe) =
            split_probe_unix(tokio::net::UnixStream::from_std(server).unwrap()).unwrap();
        probe_survives_reads_then_sees_close(probe, reader, client).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_probe_is_not_fooled_by_data_the_request_reader_took() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nodelay(true).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let reader = std::os::fd::OwnedFd::from(server.try_clone().unwrap());
        let (_server, probe) =
            split_probe(tokio::net::TcpStream::from_std(server).unwrap()).unwrap();
        probe_survives_reads_then_sees_close(probe, reader, client).await;
    }
}
