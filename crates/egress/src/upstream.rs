//! Connections to upstreams: pinned or resolved destination, address checks, TCP with
//! `TCP_NODELAY`, verified TLS; pooled by hyper-util's client per routes generation.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{ConnectTo, Timeouts};
use crate::net::{Resolve, forbidden_reason, parse_ip_literal};

/// Why no connection to an upstream was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Every address of the host is one the bottle may not reach.
    #[error("{host} resolves to a {why} address ({addr}), which the bottle may not reach")]
    Forbidden {
        /// The host.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Class of the address.
        why: &'static str,
    },
    /// The destination is the proxy itself.
    #[error("{host} points back at the egress proxy itself ({addr})")]
    Loop {
        /// The host.
        host: String,
        /// The address.
        addr: SocketAddr,
    },
    /// DNS failed.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A stage took too long.
    #[error("{stage} to {host} timed out")]
    Timeout {
        /// DNS, connect or TLS handshake.
        stage: &'static str,
        /// The host.
        host: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to {host} ({addr})")]
    Connect {
        /// The host.
        host: String,
        /// The address tried last.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (including certificate verification).
    #[error("tls handshake with {host} failed")]
    Tls {
        /// The host.
        host: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The request URI had no host.
    #[error("request has no host")]
    NoHost,
}

/// Pinned destinations of one routes generation: `--connect-to` entries first, then
/// routes' `connect_to`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pins {
    pub cli: Vec<ConnectTo>,
    /// (exact host, port or None for 443/80) -> (host, port)
    pub routes: Vec<(String, Option<u16>, String, u16)>,
}

impl Pins {
    pub fn lookup(&self, host: &str, port: u16) -> Option<(String, u16)> {
        for c in &self.cli {
            if let Some(t) = c.apply(host, port) {
                return Some(t);
            }
        }
        self.routes
            .iter()
            .find(|(h, p, _, _)| {
                h == host
                    && match p {
                        Some(p) => *p == port,
                        None => port == 443 || port == 80,
                    }
            })
            .map(|(_, _, th, tp)| (th.clone(), *tp))
    }
}

/// Connects for hyper-util's pooled client.
#[derive(Clone)]
pub(crate) struct Connector {
    pub resolver: Arc<dyn Resolve>,
    pub tls: Arc<rustls::ClientConfig>,
    pub pins: Arc<Pins>,
    pub listen: Arc<OnceLock<SocketAddr>>,
    pub timeouts: Timeouts,
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let host = uri
            .host()
            .map(policy::normalize_host)
            .ok_or(ConnectError::NoHost)?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let (target_host, target_port, pinned) = match self.pins.lookup(&host, port) {
            Some((h, p)) => (h, p, true),
            None => (host.clone(), port, false),
        };
        let addrs: Vec<SocketAddr> = match parse_ip_literal(&target_host) {
            Some(ip) => vec![SocketAddr::new(ip, target_port)],
            None => tokio::time::timeout(
                self.timeouts.dns,
                self.resolver.resolve(&target_host, target_port),
            )
            .await
            .map_err(|_| ConnectError::Timeout {
                stage: "dns lookup",
                host: host.clone(),
            })?
            .map_err(|source| ConnectError::Resolve {
                host: host.clone(),
                source,
            })?,
        };
        let mut last: Option<ConnectError> = None;
        let mut tcp = None;
        for addr in addrs {
            if self.is_loop(addr) {
                last = Some(ConnectError::Loop {
                    host: host.clone(),
                    addr,
                });
                continue;
            }
            if !pinned && let Some(why) = forbidden_reason(addr.ip()) {
                last = Some(ConnectError::Forbidden {
                    host: host.clone(),
                    addr: addr.ip(),
                    why,
                });
                continue;
            }
            // Connect to exactly the address that was checked: no second lookup.
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(source)) => {
                    last = Some(ConnectError::Connect {
                        host: host.clone(),
                        addr,
                        source,
                    })
                }
                Err(_) => {
                    last = Some(ConnectError::Timeout {
                        stage: "connect",
                        host: host.clone(),
                    })
                }
            }
        }
        let Some(tcp) = tcp else {
            return Err(last.unwrap_or(ConnectError::Resolve {
                host: host.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            }));
        };
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(UpstreamIo::Plain(tcp));
        }
        let name = match parse_ip_literal(&host) {
            Some(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            None => rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                ConnectError::Tls {
                    host: host.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
                }
            })?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = tokio::time::timeout(self.timeouts.tls, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout {
                stage: "tls handshake",
                host: host.clone(),
            })?
            .map_err(|source| ConnectError::Tls {
                host: host.clone(),
                source,
            })?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }

    fn is_loop(&self, addr: SocketAddr) -> bool {
        let Some(listen) = self.listen.get() else {
            return false;
        };
        if addr == *listen {
            return true;
        }
        addr.port() == listen.port()
            && (listen.ip().is_unspecified() || addr.ip().is_unspecified())
            && (addr.ip().is_loopback() || addr.ip().is_unspecified() || addr.ip() == listen.ip())
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<UpstreamIo>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(hyper_util::rt::TokioIo::new) })
    }
}

/// A connection to an upstream, plain or TLS.
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
}
