//! The recording upstream server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::TestCa;

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in arrival order, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body length in bytes.
    pub body_len: u64,
    /// The first 64 KiB of the body.
    pub body: Vec<u8>,
    /// TLS server name the client sent (TLS upstreams only).
    pub sni: Option<String>,
    /// HTTP version of the request (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
}

impl Recorded {
    /// All values of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A recording HTTP/1.1 upstream on `127.0.0.1`.
///
/// Behaviours by path (everything else answers `200 ok`):
/// * `/sse?n=N&gap_ms=M`: `text/event-stream` with N events `data: I`, M ms apart;
/// * `/bytes?n=N`: N bytes (`x`), streamed in 64 KiB chunks with a content length;
/// * `/echo`: the request body back;
/// * `/delay?ms=N`: answers after N ms;
/// * `/ws`: answers an `Upgrade` request with `101` and then echoes raw bytes (kept: see
///   [`Upstream::upgraded`]).
pub struct Upstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    upgraded: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts a TLS upstream whose certificate (from `ca`) names `names`.
    pub async fn start_tls(ca: &TestCa, names: &[&str]) -> Upstream {
        Self::start(Some(tokio_rustls::TlsAcceptor::from(
            ca.server_config(names),
        )))
        .await
    }

    /// Starts a TLS upstream on `ip` (a port of its own) instead of `127.0.0.1`: the host side
    /// of a network the test created, for sidecars that run in a container.
    pub async fn start_tls_on(ip: std::net::IpAddr, ca: &TestCa, names: &[&str]) -> Upstream {
        Self::start_on(
            ip,
            Some(tokio_rustls::TlsAcceptor::from(ca.server_config(names))),
        )
        .await
    }

    /// Starts a TLS upstream that also offers HTTP/2 (ALPN `h2`).
    pub async fn start_tls_h2(ca: &TestCa, names: &[&str]) -> Upstream {
        let mut config = (*ca.server_config(names)).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    /// Starts a plain-HTTP upstream.
    pub async fn start_plain() -> Upstream {
        Self::start(None).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), tls).await
    }

    async fn start_on(ip: std::net::IpAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let upgraded = Arc::new(Mutex::new(Vec::new()));
        let (rec, up) = (requests.clone(), upgraded.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let (rec, up) = (rec.clone(), up.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_string);
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                let service = service_fn(move |req| {
                                    handle(req, rec.clone(), sni.clone(), up.clone())
                                });
                                let _ = hyper::server::conn::http2::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                            } else {
                                serve_conn(TokioIo::new(stream), rec, sni, up).await;
                            }
                        }
                        None => serve_conn(TokioIo::new(tcp), rec, None, up).await,
                    }
                });
            }
        });
        Upstream {
            addr,
            requests,
            upgraded,
            task,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Every byte received on `/ws` connections after their `101`, in arrival order (what
    /// crossed the proxy once the protocol switched).
    pub fn upgraded(&self) -> Vec<u8> {
        self.upgraded.lock().unwrap().clone()
    }

    /// Requests received so far, clearing the record.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

async fn serve_conn<I>(
    io: I,
    rec: Arc<Mutex<Vec<Recorded>>>,
    sni: Option<String>,
    upgraded: Arc<Mutex<Vec<u8>>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(req, rec.clone(), sni.clone(), upgraded.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

type Out = BoxBody<Bytes, Infallible>;

fn query(path: &str, key: &str) -> Option<u64> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

async fn handle(
    mut req: Request<Incoming>,
    rec: Arc<Mutex<Vec<Recorded>>>,
    sni: Option<String>,
    upgraded: Arc<Mutex<Vec<u8>>>,
) -> Result<Response<Out>, Infallible> {
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let upgrade = hyper::upgrade::on(&mut req);
    let is_ws = req.uri().path() == "/ws";
    let mut body = Vec::new();
    let mut body_len = 0u64;
    let mut incoming = req.into_body();
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            body_len += data.len() as u64;
            if body.len() < 65536 {
                body.extend_from_slice(&data[..data.len().min(65536 - body.len())]);
            }
        }
    }
    rec.lock().unwrap().push(Recorded {
        method,
        path: path.clone(),
        headers,
        body_len,
        body: body.clone(),
        sni,
        version,
    });
    let p = path.split('?').next().unwrap_or("");
    let resp = match p {
        "/ws" if is_ws => {
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = io.read(&mut buf).await {
                        upgraded.lock().unwrap().extend_from_slice(&buf[..n]);
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        }
        "/sse" => {
            let n = query(&path, "n").unwrap_or(3);
            let gap = query(&path, "gap_ms").unwrap_or(100);
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                // on an absolute schedule (event i at i * gap), so delays do not add up
                let start = tokio::time::Instant::now();
                for i in 0..n {
                    tokio::time::sleep_until(start + Duration::from_millis(gap * i)).await;
                    if tx
                        .send(Bytes::from(format!("data: {i}\n\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(ChannelBody { rx }.boxed())
                .unwrap()
        }
        "/bytes" => {
            let n = query(&path, "n").unwrap_or(0);
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 65536]);
                let mut left = n;
                while left > 0 {
                    let take = left.min(chunk.len() as u64) as usize;
                    if tx.send(chunk.slice(..take)).await.is_err() {
                        return;
                    }
                    left -= take as u64;
                }
            });
            Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-length", n.to_string())
                .body(ChannelBody { rx }.boxed())
                .unwrap()
        }
        "/echo" => Response::new(Full::new(Bytes::from(body)).boxed()),
        "/delay" => {
            tokio::time::sleep(Duration::from_millis(query(&path, "ms").unwrap_or(1000))).await;
            Response::new(Full::new(Bytes::from_static(b"late")).boxed())
        }
        _ => Response::new(Full::new(Bytes::from_static(b"ok")).boxed()),
    };
    Ok(resp)
}

/// A response body fed from a channel, so the server streams as it produces.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
