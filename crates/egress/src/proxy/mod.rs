//! The proxy itself: one accept loop for every kind of listener, the outer connection
//! (absolute-form `http://` and `CONNECT`) and the TLS-terminated tunnel. The per-request
//! path (check, rewrite, forward, stream back) is in [`forward`].

mod blocked;
mod forward;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use policy::{EgressConfig, Reason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::body::RespBody;
use crate::ca::{CaError, CertificateAuthority};
use crate::config::{Limits, ProxyConfig, Timeouts};
use crate::idle::{Tracked, until_idle};
use crate::log::RequestLog;
use crate::park::{self, Parkable, Rest};
use crate::routes::{Base, ReloadError, RoutesHandle, read_pem_certs};
use crate::strict::StrictIo;
use forward::{Exchange, forward, is_upgrade};

/// Host name answered by the proxy itself (`GET http://_egress.local/routes`).
pub const INTROSPECTION_HOST: &str = "_egress.local";

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The CA directory.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The initial routes.
    #[error(transparent)]
    Routes(#[from] ReloadError),
    /// The request log file.
    #[error("cannot open request log {}", path.display())]
    Log {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The listener.
    #[error("cannot use the listening socket: {0}")]
    Listen(#[source] std::io::Error),
}

struct Shared {
    ca: CertificateAuthority,
    routes: RoutesHandle,
    log: RequestLog,
    timeouts: Timeouts,
    limits: Limits,
    listen: Arc<OnceLock<SocketAddr>>,
    skip_dlp: bool,
    dlp_hits: Option<crate::log::DlpHitSink>,
}

/// A configured egress proxy, ready to serve on a listener.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// Loads (or creates) the CA, reads the extra upstream roots and the routes' tokens.
    pub fn new(config: ProxyConfig, routes: EgressConfig) -> Result<Proxy, ProxyError> {
        let ca = CertificateAuthority::load_or_create(&config.ca_dir)?;
        // The system's roots (when it has any) join the built-in webpki roots on the first
        // upstream handshake (`routes::UpstreamVerifier`); a system store that cannot be read
        // is not fatal, the webpki roots remain.
        let mut extra_roots = Vec::new();
        for path in &config.upstream_ca {
            extra_roots.extend(read_pem_certs(path)?);
        }
        let log = RequestLog::open(&config.log).map_err(|source| ProxyError::Log {
            path: match &config.log {
                crate::log::LogSink::File(p) => p.clone(),
                _ => "stderr".into(),
            },
            source,
        })?;
        let listen = Arc::new(OnceLock::new());
        let base = Base {
            env: config.env.clone(),
            extra_roots,
            system_roots: config.system_roots,
            pins: config.connect_to.clone(),
            resolver: config.resolver.clone(),
            listen: listen.clone(),
            timeouts: config.timeouts,
            skip_dlp: config.dangerously_skip_dlp,
        };
        let routes = RoutesHandle::new(base, routes)?;
        Ok(Proxy {
            shared: Arc::new(Shared {
                ca,
                routes,
                log,
                timeouts: config.timeouts,
                limits: config.limits,
                listen,
                skip_dlp: config.dangerously_skip_dlp,
                dlp_hits: config.dlp_hits.clone(),
            }),
        })
    }

    /// The handle for live route changes.
    pub fn routes(&self) -> RoutesHandle {
        self.shared.routes.clone()
    }

    /// The bottle CA certificate (PEM) that clients must trust.
    pub fn ca_pem(&self) -> &str {
        self.shared.ca.cert_pem()
    }

    /// Serves connections from `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProxyError> {
        let addr = listener.local_addr().map_err(ProxyError::Listen)?;
        let _ = self.shared.listen.set(addr);
        accept_loop(&self.shared, listener, shutdown).await;
        Ok(())
    }

    /// Serves connections from a Unix socket until `shutdown` completes: the sidecar
    /// bundle listens this way, and the backend forwards the bottle's proxy port to it.
    /// The socket is outside the bottle, so no loop back to the proxy is possible through it.
    pub async fn serve_unix(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProxyError> {
        accept_loop(&self.shared, listener, shutdown).await;
        Ok(())
    }
}

/// Runs a proxy on `listener` until `shutdown` completes: the entry point for the
/// sidecar bundle. Use [`Proxy::new`] + [`Proxy::routes`] first when the routes must be
/// changed while serving.
pub async fn serve(
    listener: TcpListener,
    config: ProxyConfig,
    routes: EgressConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    Proxy::new(config, routes)?.serve(listener, shutdown).await
}

fn server_builder(shared: &Shared) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(shared.timeouts.request_head)
        .max_buf_size(shared.limits.head.max(8192) + 8192)
        .max_headers(shared.limits.headers);
    b
}

/// A listening socket the proxy takes clients from.
trait Listener {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> std::io::Result<TcpStream> {
        let (tcp, _peer) = TcpListener::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> std::io::Result<UnixStream> {
        UnixListener::accept(self)
            .await
            .map(|(stream, _peer)| stream)
    }
}

/// Takes clients from `listener`, each served on its own task, until `shutdown` completes.
async fn accept_loop<L: Listener>(
    shared: &Arc<Shared>,
    listener: L,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    tokio::spawn(serve_client(shared.clone(), stream));
                }
                // EMFILE and friends: back off briefly instead of spinning
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
}

/// One client connection: absolute-form `http://` requests and `CONNECT`.
async fn serve_client<S>(shared: Arc<Shared>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = shared.clone();
    serve_http1(&shared, stream, move |req| outer(s.clone(), req)).await;
}

/// HTTP/1.1 on a client's stream (the outer connection, or the TLS inside a tunnel): the
/// framing check in front, upgrades allowed, dropped once idle, and parked between
/// requests once quiet (hyper and its buffers dropped until the next request: see
/// [`crate::park`]).
fn serve_http1<'a, S, F, Fut>(
    shared: &'a Shared,
    stream: S,
    handler: F,
) -> impl Future<Output = ()> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<RespBody>, Infallible>> + Send + 'static,
{
    let (stream, last) = Tracked::new(stream);
    let rest = Arc::new(Rest::default());
    let r = rest.clone();
    let service = service_fn(move |req| {
        let busy = r.busy();
        let exchange = handler(req);
        async move {
            let resp = exchange.await?;
            Ok::<_, Infallible>(resp.map(|body| park::counted(body, busy)))
        }
    });
    // Not an `async fn`: its arguments would stay in the future beside what is made of
    // them, and a tunnel's TLS stream (rustls' connection inline) would be held twice for
    // the tunnel's life. The block below owns the stream once.
    let mut io = StrictIo::new(stream, shared.limits);
    async move {
        let t = shared.timeouts;
        let mut prefix = Bytes::new();
        let mut head_timeout = t.request_head;
        loop {
            rest.set_parking(false);
            let mut conn = Box::pin(
                server_builder(shared)
                    .header_read_timeout(head_timeout)
                    .serve_connection(
                        TokioIo::new(Parkable::new(io, prefix, rest.clone())),
                        service.clone(),
                    )
                    .with_upgrades(),
            );
            // Run hyper until the connection ends, is idle for the idle timeout (dropped, as
            // `until_idle` does), or is parked.
            let mut seen = last.load(Ordering::Relaxed);
            let mut check = at_ms(seen) + t.park;
            let parked = loop {
                let idle_at = at_ms(seen) + t.idle;
                let wake = if rest.parking() {
                    idle_at
                } else {
                    check.min(idle_at)
                };
                tokio::select! {
                    biased;
                    done = conn.as_mut() => break done.is_ok() && rest.parking(),
                    () = tokio::time::sleep_until(wake) => {
                        let now = last.load(Ordering::Relaxed);
                        if now != seen {
                            seen = now;
                            check = at_ms(seen) + t.park;
                        } else if tokio::time::Instant::now() >= idle_at {
                            return;
                        } else if !rest.parking() && rest.parkable() {
                            rest.set_parking(true);
                            conn.as_mut().graceful_shutdown();
                        } else {
                            // something in flight without a byte moving (a slow upstream):
                            // look again later
                            check = tokio::time::Instant::now() + t.park;
                        }
                    }
                }
            };
            if !parked {
                return;
            }
            let Some(parts) = Pin::into_inner(conn).into_parts() else {
                return;
            };
            let (strict, unread) = parts.io.into_inner().into_inner();
            io = strict;
            // hyper stops between requests, so it holds no bytes it read; if it did, they go first
            prefix = if parts.read_buf.is_empty() {
                unread
            } else {
                let mut both = parts.read_buf.to_vec();
                both.extend_from_slice(&unread);
                Bytes::from(both)
            };
            // Dropped before the wait, not at the end of the loop's body: hyper's leftover is a
            // view of its whole read buffer (8 KiB), which it would keep alive.
            drop(parts.read_buf);
            drop(parts.service);
            park::count_parked();
            park::trim_soon();
            // hyper started its request-head timer when it began waiting, at the last byte moved
            let base = at_ms(last.load(Ordering::Relaxed));
            let head_deadline = base + t.request_head;
            if prefix.is_empty() {
                let mut byte = [0u8; 1];
                match tokio::time::timeout_at(head_deadline.min(base + t.idle), io.read(&mut byte))
                    .await
                {
                    // hyper: a head timeout fails the connection; idle: it is dropped
                    Err(_) => return,
                    // hyper: the end (or a failed read) between requests closes the
                    // connection cleanly
                    Ok(Ok(0) | Err(_)) => {
                        let _ = tokio::time::timeout_at(base + t.idle, io.shutdown()).await;
                        return;
                    }
                    Ok(Ok(_)) => prefix = Bytes::copy_from_slice(&byte),
                }
            }
            head_timeout = head_deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(1));
        }
    }
}

/// The instant of an activity mark ([`Tracked`]).
fn at_ms(ms: u64) -> tokio::time::Instant {
    crate::idle::epoch() + Duration::from_millis(ms)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// After a `CONNECT` or a real upgrade request the framing check has stepped aside (the
/// bytes that follow are not HTTP): unless the protocol really switched, the connection
/// must end with this response, or hyper would go on reading requests unchecked.
fn close_unless_switched(leaves: Leaves, mut resp: Response<RespBody>) -> Response<RespBody> {
    let switched = match leaves {
        Leaves::No => true,
        Leaves::Connect => resp.status().is_success(),
        Leaves::Upgrade => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
    };
    if !switched {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Whether the framing check steps aside after this request head (see [`crate::strict`]).
#[derive(Clone, Copy)]
enum Leaves {
    No,
    Connect,
    Upgrade,
}

fn leaves_http(req: &Request<Incoming>) -> Leaves {
    if req.method() == Method::CONNECT {
        Leaves::Connect
    } else if is_upgrade(req.headers()) {
        Leaves::Upgrade
    } else {
        Leaves::No
    }
}

async fn outer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let leaves = leaves_http(&req);
    let resp = outer_inner(shared, req).await;
    Ok(close_unless_switched(leaves, resp))
}

async fn outer_inner(shared: Arc<Shared>, req: Request<Incoming>) -> Response<RespBody> {
    if req.method() == Method::CONNECT {
        return connect(shared, req);
    }
    let (host, port) = match plain_target(req.uri()) {
        Ok(target) => target,
        Err(true) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress: send https:// requests through CONNECT (set HTTPS_PROXY)\n",
            );
        }
        Err(false) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress is a forward proxy: send absolute-form http:// requests or CONNECT\n",
            );
        }
    };
    if host == INTROSPECTION_HOST {
        return introspect(&shared, &req);
    }
    // Boxed here and in `tunnel`: the exchange's state is written in a box of its own, freed
    // with the exchange, not in memory an idle connection keeps (measured: 2.3 KB less RSS
    // per idle tunnel, bench/README.md "sidecar memory").
    Box::pin(forward(shared, req, Scheme::Http, host, port)).await
}

/// The introspection page's path, and the name it had before the rename (still served: an
/// agent or a health check of a bottle started before it may ask for it).
const ROUTES_PAGE: [&str; 2] = ["/routes", "/allowlist"];

fn introspect(shared: &Shared, req: &Request<Incoming>) -> Response<RespBody> {
    if req.method() == Method::GET && ROUTES_PAGE.contains(&req.uri().path()) {
        let json = shared.routes.current().routes_json.clone();
        let mut resp = Response::new(Full::new(json).map_err(|e| match e {}).boxed());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    } else {
        plain(
            StatusCode::NOT_FOUND,
            "bot-bottle egress: only GET /routes is served here\n",
        )
    }
}

/// Why a `CONNECT` target is refused before any route is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// No `host:port`.
    NoAuthority,
    /// User information (`user@host`).
    UserInfo,
}

/// The tunnel's target of a `CONNECT`, as the routes and the leaf certificate see it.
pub(crate) fn connect_target(uri: &http::Uri) -> Result<(String, u16), ConnectRefusal> {
    let auth = uri.authority().ok_or(ConnectRefusal::NoAuthority)?;
    if auth.as_str().contains('@') {
        return Err(ConnectRefusal::UserInfo);
    }
    Ok((
        policy::normalize_host(auth.host()),
        auth.port_u16().unwrap_or(443),
    ))
}

/// The target of an absolute-form `http://` request; `Err(true)` for another scheme (an
/// `https://` request must come through `CONNECT`), `Err(false)` for no absolute form.
pub(crate) fn plain_target(uri: &http::Uri) -> Result<(String, u16), bool> {
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(auth)) => Ok((
            policy::normalize_host(auth.host()),
            auth.port_u16().unwrap_or(80),
        )),
        (Some(_), Some(_)) => Err(true),
        _ => Err(false),
    }
}

fn connect(shared: Arc<Shared>, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let (host, port) = match connect_target(req.uri()) {
        Ok(target) => target,
        Err(ConnectRefusal::NoAuthority) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress: CONNECT needs host:port\n",
            );
        }
        Err(ConnectRefusal::UserInfo) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress: CONNECT takes host:port without user information\n",
            );
        }
    };
    let loaded = shared.routes.current();
    if loaded.policy.route_for(&host, port, true).is_none() {
        let ex = Exchange {
            shared: &shared,
            log: loaded.log,
            method: &Method::CONNECT,
            scheme: Scheme::Https,
            host: &host,
            port,
            path: "",
            started,
        };
        let reason = Reason::HostNotAllowed.as_str();
        ex.log_blocked(reason, None, 403);
        let why = format!("no route allows {host}:{port}");
        if blocked::answers_in_tunnel(&shared, &host, port) {
            tokio::spawn(async move {
                if let Ok(upgraded) = hyper::upgrade::on(req).await {
                    blocked::answer_in_tunnel(shared, upgraded, host, port, why).await;
                }
            });
            return Response::new(empty());
        }
        return ex.blocked(reason, &why, true);
    }
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            tunnel(shared, upgraded, host, port).await;
        }
    });
    Response::new(empty())
}

/// The TLS inside a tunnel, terminated with a certificate of the bottle's CA for `host`;
/// `None` (the tunnel is dropped) for anything that is not a TLS ClientHello naming `host`.
async fn accept_tls(
    shared: &Shared,
    upgraded: hyper::upgrade::Upgraded,
    host: &str,
) -> Option<tokio_rustls::server::TlsStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let io = TokioIo::new(upgraded);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    // Anything that is not a TLS ClientHello fails here: no opaque tunnels.
    let start = tokio::time::timeout(shared.timeouts.tls, acceptor)
        .await
        .ok()?
        .ok()?;
    if let Some(sni) = start.client_hello().server_name()
        && policy::normalize_host(sni) != host
    {
        tracing::debug!(%host, sni, "tls server name does not match the CONNECT target");
        return None;
    }
    let config = shared.ca.server_config(host).ok()?;
    tokio::time::timeout(shared.timeouts.tls, start.into_stream(config))
        .await
        .ok()?
        .ok()
}

async fn tunnel(shared: Arc<Shared>, upgraded: hyper::upgrade::Upgraded, host: String, port: u16) {
    // Boxed for the same reason: the handshake's state is freed once it is done.
    let Some(tls) = Box::pin(accept_tls(&shared, upgraded, &host)).await else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let idle = shared.timeouts.idle;
    let s = shared.clone();
    let handler = move |req: Request<Incoming>| {
        let s = s.clone();
        let host = host.clone();
        async move {
            let leaves = leaves_http(&req);
            let resp = Box::pin(forward(s, req, Scheme::Https, host, port)).await;
            Ok::<_, Infallible>(close_unless_switched(leaves, resp))
        }
    };
    if h2 {
        // HTTP/2 has binary framing checked by the h2 crate (content-length against
        // data, no connection-specific headers), so the HTTP/1 framing check is not used.
        let (tls, last) = Tracked::new(tls);
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(shared.limits.head).unwrap_or(u32::MAX))
            .keep_alive_interval(None)
            .serve_connection(TokioIo::new(tls), service_fn(handler));
        // Boxed: an HTTP/1 tunnel's task (most tunnels) does not carry the size of an HTTP/2
        // connection while it waits parked.
        let _ = Box::pin(until_idle(conn, last, idle)).await;
    } else {
        serve_http1(&shared, tls, handler).await;
    }
}

fn empty() -> RespBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

fn plain(status: StatusCode, text: &str) -> Response<RespBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What the fuzz targets (`fuzz/`) call: the request-head decisions of the proxy, without
/// sockets; and a counter the tests read. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use http::{HeaderMap, Method, Uri};

    pub use super::ConnectRefusal;
    pub use super::forward::HeadRefusal;

    /// How many HTTP/1 connections were parked in this process so far (`park` module).
    pub fn parked_connections() -> u64 {
        crate::park::parked()
    }

    /// The framing check every HTTP/1 head passes before hyper parses it.
    pub fn strict_head(head: &[u8]) -> Result<(), &'static str> {
        crate::strict::check_head(head, crate::config::Limits::default().headers)
    }

    /// The target of a `CONNECT` (see `connect`).
    pub fn connect_target(uri: &Uri) -> Result<(String, u16), ConnectRefusal> {
        super::connect_target(uri)
    }

    /// The target of an absolute-form request (see `outer_inner`).
    pub fn plain_target(uri: &Uri) -> Result<(String, u16), bool> {
        super::plain_target(uri)
    }

    /// The checks before the routes, with the default limits; `tls` for a request inside a
    /// tunnel.
    pub fn check_head(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        tls: bool,
        host: &str,
        port: u16,
    ) -> Result<(), HeadRefusal> {
        let scheme = if tls {
            super::Scheme::Https
        } else {
            super::Scheme::Http
        };
        super::forward::check_head(
            method,
            uri,
            headers,
            scheme,
            host,
            port,
            &crate::config::Limits::default(),
        )
    }

    /// The headers as they are judged and forwarded (hop-by-hop ones removed).
    pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
        super::forward::strip_hop_by_hop(headers);
    }

    /// Outbound DLP over a request body that arrives in `chunks` (no `Content-Encoding`),
    /// on a route in `mode` whose credentials are `credentials`: the bytes that go, or the
    /// rule that stopped the body. What the DLP profile driver (`examples/dlp_profile`) calls.
    pub fn dlp_body<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
        mode: policy::DlpMode,
        credentials: &[&str],
    ) -> Result<Vec<u8>, String> {
        use crate::dlp::{Detector, Report, RouteDlp, scanner, window::Window};
        let det = Detector::new(scanner()?, credentials)?;
        let route = RouteDlp {
            mode,
            ..RouteDlp::default()
        };
        let report: Report = std::sync::Arc::new(|_| {});
        let mut window = Window::default();
        let mut out = Vec::new();
        for chunk in chunks {
            if let Some(go) = window
                .push(chunk, &det, &route, &report)
                .map_err(|s| s.rule().to_string())?
            {
                out.extend_from_slice(&go);
            }
        }
        if let Some(go) = window
            .finish(&det, &route, &report)
            .map_err(|s| s.rule().to_string())?
        {
            out.extend_from_slice(&go);
        }
        Ok(out)
    }

    /// Whether `authority` names `host:port` (the `Host` check).
    pub fn same_place(authority: &str, tls: bool, host: &str, port: u16) -> bool {
        let scheme = if tls {
            super::Scheme::Https
        } else {
            super::Scheme::Http
        };
        super::forward::same_place(authority, scheme, host, port)
    }
}
