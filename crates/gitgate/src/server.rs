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

/// Resolves when the client has closed its connection (or it failed). A client that sends
/// more data before the response is complete is taken as still there.
pub(crate) async fn client_gone(probe: &Probe) {
    let mut byte = [0u8; 1];
    let peeked = match probe.try_clone() {
        Ok(Probe::Tcp(dup)) => {
            if dup.set_nonblocking(true).is_err() {
                return std::future::pending().await;
            }
            let Ok(sock) = tokio::net::TcpStream::from_std(dup) else {
                return std::future::pending().await;
            };
            sock.peek(&mut byte).await
        }
        Ok(Probe::Unix(dup)) => {
            if dup.set_nonblocking(true).is_err() {
                return std::future::pending().await;
            }
            let Ok(sock) = tokio::net::UnixStream::from_std(dup) else {
                return std::future::pending().await;
            };
            // Unix stream sockets have no peek in tokio: wait for readability, then peek
            // without consuming through the std socket.
            if sock.readable().await.is_err() {
                return;
            }
            let Ok(std) = sock.into_std() else {
                return std::future::pending().await;
            };
            let _ = std.set_nonblocking(true);
            rustix::net::recv(&std, &mut byte, rustix::net::RecvFlags::PEEK)
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        }
        Err(_) => return std::future::pending().await,
    };
    match peeked {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
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
}
