//! Clients that talk through a forward proxy, written directly on hyper so tests control
//! every byte: CONNECT + TLS (trusting the proxy's CA), or absolute-form plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Opens a TCP connection to the proxy and sends `CONNECT host:port`; returns the stream
/// and the proxy's whole response head (status line and headers) as text.
pub async fn connect_tunnel(
    proxy: SocketAddr,
    host: &str,
    port: u16,
) -> std::io::Result<(TcpStream, String)> {
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok((tcp, String::from_utf8_lossy(&head).into_owned()))
}

/// CONNECT through the proxy, then TLS to `sni` trusting `config`'s roots.
pub async fn tls_through_proxy(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let (tcp, head) = connect_tunnel(proxy, host, port).await?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("CONNECT refused: {head}")));
    }
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// An HTTP/1.1 sender over any stream.
pub async fn http1<S>(stream: S) -> SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    send
}

/// An HTTP/2 sender over any stream (the TLS layer must have negotiated `h2`).
pub async fn http2<S>(stream: S) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("http2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A fully read response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Collected {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a whole response.
pub async fn collect(resp: Response<Incoming>) -> Collected {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Collected {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends one request and reads the whole response.
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> hyper::Result<Collected> {
    let resp = sender.send_request(req).await?;
    Ok(collect(resp).await)
}
