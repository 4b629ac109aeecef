//! The proxy itself: the outer connection (absolute-form `http://` and `CONNECT`), the
//! TLS-terminated tunnel, and the per-request path (check, rewrite, forward, stream back).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use policy::{EgressConfig, LogMode, Reason};
use tokio::net::{TcpListener, TcpStream};

use crate::body::{Metered, OnDrop, RespBody};
use crate::ca::{CaError, CertificateAuthority};
use crate::config::{Limits, ProxyConfig, Timeouts};
use crate::idle::{Tracked, until_idle};
use crate::log::{LogEntry, RequestLog, now_rfc3339};
use crate::routes::{Base, ReloadError, RoutesHandle, read_pem_certs};
use crate::strict::StrictIo;
use crate::upstream::ConnectError;

/// Host name answered by the proxy itself (`GET http://_egress.local/allowlist`).
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
        // The system's roots (when it has any) join the built-in webpki roots; a system
        // store that cannot be read is not fatal, the webpki roots remain.
        let mut extra_roots = if config.system_roots {
            rustls_native_certs::load_native_certs().certs
        } else {
            Vec::new()
        };
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
            pins: config.connect_to.clone(),
            resolver: config.resolver.clone(),
            listen: listen.clone(),
            timeouts: config.timeouts,
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
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => {
                    let Ok((tcp, _peer)) = accepted else {
                        // EMFILE and friends: back off briefly instead of spinning
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    };
                    let shared = self.shared.clone();
                    tokio::spawn(serve_client(shared, tcp));
                }
            }
        }
    }
}

impl Proxy {
    /// Serves connections from a Unix socket until `shutdown` completes: the sidecar
    /// bundle listens this way, and the backend forwards the bottle's proxy port to it.
    /// The socket is outside the bottle, so no loop back to the proxy is possible through it.
    pub async fn serve_unix(
        self,
        listener: tokio::net::UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProxyError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => {
                    let Ok((stream, _peer)) = accepted else {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    };
                    tokio::spawn(serve_stream(self.shared.clone(), stream));
                }
            }
        }
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

async fn serve_client(shared: Arc<Shared>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    serve_stream(shared, tcp).await;
}

async fn serve_stream<S>(shared: Arc<Shared>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (stream, last) = Tracked::new(stream);
    let io = TokioIo::new(StrictIo::new(stream, shared.limits));
    let s = shared.clone();
    let service = service_fn(move |req| outer(s.clone(), req));
    let conn = server_builder(&shared)
        .serve_connection(io, service)
        .with_upgrades();
    let _ = until_idle(conn, last, shared.timeouts.idle).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
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
    let (host, port) = match (req.uri().scheme_str(), req.uri().authority()) {
        (Some("http"), Some(auth)) => (
            policy::normalize_host(auth.host()),
            auth.port_u16().unwrap_or(80),
        ),
        (Some(_), Some(_)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress: send https:// requests through CONNECT (set HTTPS_PROXY)\n",
            );
        }
        _ => {
            return plain(
                StatusCode::BAD_REQUEST,
                "bot-bottle egress is a forward proxy: send absolute-form http:// requests or CONNECT\n",
            );
        }
    };
    if host == INTROSPECTION_HOST {
        return introspect(&shared, &req);
    }
    inner(shared, req, Scheme::Http, host, port).await
}

fn introspect(shared: &Shared, req: &Request<Incoming>) -> Response<RespBody> {
    if req.method() == Method::GET && req.uri().path() == "/allowlist" {
        let json = shared.routes.current().allowlist_json.clone();
        let mut resp = Response::new(Full::new(json).map_err(|e| match e {}).boxed());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    } else {
        plain(
            StatusCode::NOT_FOUND,
            "bot-bottle egress: only GET /allowlist is served here\n",
        )
    }
}

fn connect(shared: Arc<Shared>, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let Some(auth) = req.uri().authority().cloned() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: CONNECT needs host:port\n",
        );
    };
    if auth.as_str().contains('@') {
        return plain(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: CONNECT takes host:port without user information\n",
        );
    }
    let host = policy::normalize_host(auth.host());
    let port = auth.port_u16().unwrap_or(443);
    let loaded = shared.routes.current();
    if loaded.policy.route_for(&host, port, true).is_none() {
        let resp = blocked(
            &Method::CONNECT,
            Scheme::Https,
            &host,
            port,
            "",
            Reason::HostNotAllowed.as_str(),
            &format!("no route allows {host}:{port}"),
            true,
        );
        log_now(
            &shared,
            loaded.log,
            &Method::CONNECT,
            &host,
            "",
            Reason::HostNotAllowed.as_str(),
            None,
            403,
            started,
        );
        return resp;
    }
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            tunnel(shared, upgraded, host, port).await;
        }
    });
    Response::new(empty())
}

async fn tunnel(shared: Arc<Shared>, upgraded: hyper::upgrade::Upgraded, host: String, port: u16) {
    let io = TokioIo::new(upgraded);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    // Anything that is not a TLS ClientHello fails here: no opaque tunnels.
    let Ok(Ok(start)) = tokio::time::timeout(shared.timeouts.tls, acceptor).await else {
        return;
    };
    if let Some(sni) = start.client_hello().server_name()
        && policy::normalize_host(sni) != host
    {
        tracing::debug!(%host, sni, "tls server name does not match the CONNECT target");
        return;
    }
    let Ok(config) = shared.ca.server_config(&host) else {
        return;
    };
    let Ok(Ok(tls)) = tokio::time::timeout(shared.timeouts.tls, start.into_stream(config)).await
    else {
        return;
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let idle = shared.timeouts.idle;
    let s = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let s = s.clone();
        let host = host.clone();
        async move {
            let leaves = leaves_http(&req);
            let resp = inner(s, req, Scheme::Https, host, port).await;
            Ok::<_, Infallible>(close_unless_switched(leaves, resp))
        }
    });
    let (tls, last) = Tracked::new(tls);
    if h2 {
        // HTTP/2 has binary framing checked by the h2 crate (content-length against
        // data, no connection-specific headers), so the HTTP/1 framing check is not used.
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(shared.limits.head).unwrap_or(u32::MAX))
            .keep_alive_interval(None)
            .serve_connection(TokioIo::new(tls), service);
        let _ = until_idle(conn, last, idle).await;
    } else {
        let io = TokioIo::new(StrictIo::new(tls, shared.limits));
        let conn = server_builder(&shared)
            .serve_connection(io, service)
            .with_upgrades();
        let _ = until_idle(conn, last, idle).await;
    }
}

/// Whether an authority (`host[:port]`) names the same place as `host:port`. User
/// information (`user@host`) is never the same place: upstreams read it differently.
fn same_place(authority: &str, scheme: Scheme, host: &str, port: u16) -> bool {
    if authority.contains('@') {
        return false;
    }
    match authority.parse::<http::uri::Authority>() {
        Ok(a) => {
            policy::normalize_host(a.host()) == host
                && a.port_u16().unwrap_or(scheme.default_port()) == port
        }
        Err(_) => false,
    }
}

async fn inner(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    scheme: Scheme,
    host: String,
    port: u16,
) -> Response<RespBody> {
    let started = Instant::now();
    let arrived = now_rfc3339();
    let loaded = shared.routes.current();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let refuse = |status: StatusCode, reason: &'static str, why: &str| {
        log_now(
            &shared,
            loaded.log,
            &method,
            &host,
            &path,
            reason,
            None,
            status.as_u16(),
            started,
        );
        let mut resp = blocked(&method, scheme, &host, port, &path, reason, why, true);
        *resp.status_mut() = status;
        resp
    };

    // Host / :authority must name the CONNECT target (and so the SNI).
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_ok = match (hosts.next(), hosts.next()) {
        (None, _) => true,
        (Some(h), None) => h.to_str().is_ok_and(|h| same_place(h, scheme, &host, port)),
        (Some(_), Some(_)) => false,
    };
    let uri_ok = req
        .uri()
        .authority()
        .is_none_or(|a| same_place(a.as_str(), scheme, &host, port));
    if !host_ok || !uri_ok {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "host-mismatch",
            "the Host header does not match the proxy target",
        );
    }
    if method == Method::CONNECT {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect-in-tunnel",
            "CONNECT is not allowed inside a tunnel or as a plain request",
        );
    }
    if req.headers().contains_key(header::TRANSFER_ENCODING)
        && req.headers().contains_key(header::CONTENT_LENGTH)
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: conflicting Content-Length and Transfer-Encoding\n",
        );
    }
    // The same limits for HTTP/2 as the framing check applies to HTTP/1.1.
    if req.headers().len() > shared.limits.headers {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too-many-headers",
            &format!("more than {} header fields", shared.limits.headers),
        );
    }
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > shared.limits.request_line {
        return refuse(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            &format!(
                "the path is longer than {} bytes",
                shared.limits.request_line
            ),
        );
    }

    // Judge the request exactly as it will be forwarded: hop-by-hop headers (and those
    // `Connection` names) go first.
    let upgrade = is_upgrade(req.headers());
    let mut req = req;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_proto = if upgrade {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(&mut parts.headers);
    let judged = loaded.policy.judge(
        &host,
        port,
        &policy::Ask {
            tls: scheme == Scheme::Https,
            method: method.as_str(),
            path: &path,
            query: parts.uri.query(),
            headers: &parts.headers,
            upgrade: upgrade_proto
                .as_ref()
                .map(|p| p.to_str().unwrap_or("not text")),
        },
    );
    let decision = judged.decision;
    let normalised = match judged.path {
        std::borrow::Cow::Owned(p) => Some(p),
        std::borrow::Cow::Borrowed(_) => None,
    };
    if !decision.allowed {
        let why = match decision.reason {
            Reason::HostNotAllowed => format!("no route allows {host}:{port}"),
            Reason::AmbiguousPath => format!(
                "routes[{}] ({host}) judges paths, and this one has {}, which upstreams read differently; write the path plainly",
                decision.route.unwrap_or_default(),
                decision
                    .path_problem
                    .map_or("an ambiguous spelling", |p| p.as_str())
            ),
            r => format!(
                "routes[{}] ({host}) does not allow this request ({})",
                decision.route.unwrap_or_default(),
                r.as_str()
            ),
        };
        log_now(
            &shared,
            loaded.log,
            &method,
            &host,
            &path,
            decision.reason.as_str(),
            decision.route,
            if decision.reason == Reason::AmbiguousPath {
                400
            } else {
                403
            },
            started,
        );
        let mut resp = blocked(
            &method,
            scheme,
            &host,
            port,
            &path,
            decision.reason.as_str(),
            &why,
            upgrade,
        );
        if decision.reason == Reason::AmbiguousPath {
            *resp.status_mut() = StatusCode::BAD_REQUEST;
        }
        return resp;
    }

    if let (true, Some(proto)) = (upgrade, upgrade_proto) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    if let Some(Some((name, value))) = decision.route.and_then(|i| loaded.credentials.get(i)) {
        // Whatever the client put in the credential header never goes out, and the
        // token itself only travels inside TLS: plain http:// requests get neither.
        parts.headers.remove(name);
        if scheme == Scheme::Https {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    let host_in_uri = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    // One spelling of Host for the upstream: the target's (no user information, no
    // trailing dot, no default port).
    let default_port = port == scheme.default_port();
    let canonical = parts.headers.get(header::HOST).is_some_and(|v| {
        let rest = v.as_bytes().strip_prefix(host_in_uri.as_bytes());
        match (rest, default_port) {
            (Some(b""), true) => true,
            (Some(r), false) => r.strip_prefix(b":").is_some_and(|p| {
                !p.starts_with(b"0")
                    && std::str::from_utf8(p).is_ok_and(|p| p.parse::<u16>() == Ok(port))
            }),
            _ => false,
        }
    });
    if !canonical {
        let v = if default_port {
            HeaderValue::from_str(&host_in_uri)
        } else {
            HeaderValue::from_str(&format!("{host_in_uri}:{port}"))
        };
        if let Ok(v) = v {
            parts.headers.insert(header::HOST, v);
        }
    }
    let target = match (normalised, parts.uri.query()) {
        (Some(p), Some(q)) => format!("{}://{host_in_uri}:{port}{p}?{q}", scheme.as_str()),
        (Some(p), None) => format!("{}://{host_in_uri}:{port}{p}", scheme.as_str()),
        (None, _) => {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            format!("{}://{host_in_uri}:{port}{pq}", scheme.as_str())
        }
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "bot-bottle egress: malformed request target\n",
        );
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let body = Metered::new(body, shared.timeouts.idle, up.clone(), None).boxed();
    let outgoing = Request::from_parts(parts, body);

    let client = if upgrade {
        &loaded.client_h1
    } else {
        &loaded.client
    };
    let result = tokio::time::timeout(shared.timeouts.first_byte, client.request(outgoing)).await;
    let mut resp = match result {
        Err(_) => {
            log_status(
                &shared,
                loaded.log,
                &method,
                &host,
                &path,
                "allowed",
                decision.route,
                504,
                started,
            );
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("bot-bottle egress: {host} sent no response in time\n"),
            );
        }
        Ok(Err(err)) => {
            let connect_err = find_connect_error(&err);
            return match connect_err {
                Some(e @ (ConnectError::Forbidden { .. } | ConnectError::Loop { .. })) => {
                    log_now(
                        &shared,
                        loaded.log,
                        &method,
                        &host,
                        &path,
                        "destination-not-allowed",
                        decision.route,
                        403,
                        started,
                    );
                    blocked(
                        &method,
                        scheme,
                        &host,
                        port,
                        &path,
                        "destination-not-allowed",
                        &short_error(e),
                        false,
                    )
                }
                other => {
                    log_status(
                        &shared,
                        loaded.log,
                        &method,
                        &host,
                        &path,
                        "allowed",
                        decision.route,
                        502,
                        started,
                    );
                    let why = match other {
                        Some(e) => short_error(e),
                        None => format!("upstream {host} failed: {}", short_error(&err)),
                    };
                    plain(
                        StatusCode::BAD_GATEWAY,
                        &format!("bot-bottle egress: {why}\n"),
                    )
                }
            };
        }
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // an upstream may not switch protocols on a request that did not ask to
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("bot-bottle egress: {host} switched protocols unasked\n"),
            );
        };
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let idle = shared.timeouts.idle;
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    let _ = crate::body::splice_with_idle(&mut c, &mut u, idle).await;
                }
            });
        }
        log_status(
            &shared,
            loaded.log,
            &method,
            &host,
            &path,
            "allowed",
            decision.route,
            101,
            started,
        );
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, empty());
    }

    let status = resp.status().as_u16();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let guard = (loaded.log == LogMode::All).then(|| {
        let shared = shared.clone();
        let time = arrived;
        let rule = decision.route;
        let method = method.to_string();
        let down = down.clone();
        OnDrop::new(move || {
            shared.log.write(&LogEntry {
                time,
                method,
                host,
                path,
                decision: "allowed",
                reason: "allowed",
                rule,
                status,
                bytes_up: up.load(Ordering::Relaxed),
                bytes_down: down.load(Ordering::Relaxed),
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            })
        })
    });
    let body = Metered::new(body, shared.timeouts.idle, down, guard).boxed();
    Response::from_parts(parts, body)
}

fn find_connect_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

fn short_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Removes hop-by-hop headers (and any header the `Connection` header names) and every
/// `Proxy-*` header.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-") || k.as_str() == "keep-alive")
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
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

#[allow(clippy::too_many_arguments)]
fn blocked(
    method: &Method,
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    reason: &str,
    why: &str,
    close: bool,
) -> Response<RespBody> {
    let host_in = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let text = format!(
        "bot-bottle egress blocked {method} {}://{host_in}:{port}{path}: {why}.\n\
         To ask the operator for access, use the egress-allow MCP tool.\n",
        scheme.as_str()
    );
    let mut resp = plain(StatusCode::FORBIDDEN, &text);
    if let Ok(v) = HeaderValue::from_str(reason) {
        resp.headers_mut().insert("x-bot-bottle-blocked", v);
    }
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn log_status(
    shared: &Shared,
    mode: LogMode,
    method: &Method,
    host: &str,
    path: &str,
    reason: &'static str,
    rule: Option<usize>,
    status: u16,
    started: Instant,
) {
    if mode != LogMode::All {
        return;
    }
    shared.log.write(&LogEntry {
        time: now_rfc3339(),
        method: method.to_string(),
        host: host.to_string(),
        path: path.to_string(),
        decision: "allowed",
        reason,
        rule,
        status,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
}

#[allow(clippy::too_many_arguments)]
fn log_now(
    shared: &Shared,
    mode: LogMode,
    method: &Method,
    host: &str,
    path: &str,
    reason: &'static str,
    rule: Option<usize>,
    status: u16,
    started: Instant,
) {
    if mode == LogMode::Off {
        return;
    }
    shared.log.write(&LogEntry {
        time: now_rfc3339(),
        method: method.to_string(),
        host: host.to_string(),
        path: path.to_string(),
        decision: "blocked",
        reason,
        rule,
        status,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
}
