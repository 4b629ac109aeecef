//! The raw HTTP/1.1 and TLS client the sections share: requests are written as bytes (most
//! attacks are about framing: two `Content-Length`s, a bare LF, a pipelined second request),
//! responses are read with a deliberately small parser that keeps whatever came back, and
//! TLS goes through a `CONNECT` tunnel with rustls and the bottle's trust store.
//!
//! The project's HTTP stack (hyper) would normalise exactly what these cases must send, and
//! would bring an async runtime into a probe that forks; the few plain requests (the sanity
//! checks, the MCP call) are two lines each here, so they stay on this client too.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::PROXY;
use crate::sockets::tcp;
use crate::verdict::Tally;

/// A response as read off the wire; `status` 0 when none came.
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) head: String,
    #[allow(dead_code)]
    pub(crate) body: Vec<u8>,
}

impl Resp {
    /// A `CONNECT` answer: only its status is read.
    fn status_only(status: u16) -> Resp {
        Resp {
            status,
            head: String::new(),
            body: Vec::new(),
        }
    }
}

/// Reads a response head and its body.
pub(crate) fn read_resp<R: Read>(r: &mut R) -> std::io::Result<Resp> {
    read_resp_inner(r, false)
}

/// Reads a response head and (unless `head_only`, as for a `CONNECT` answer) its body.
fn read_resp_inner<R: Read>(r: &mut R, head_only: bool) -> std::io::Result<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
        if head.len() > 256 * 1024 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_only && status == 200 {
        return Ok(Resp { status, head, body });
    }
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.resize(len.min(1 << 20), 0);
        r.read_exact(&mut body)?;
    } else if lower.contains("transfer-encoding: chunked") {
        let mut br = std::io::BufReader::new(r);
        loop {
            let mut line = String::new();
            br.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            br.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 101 && !(100..200).contains(&status) && status != 204 {
        let _ = r.take(1 << 20).read_to_end(&mut body);
    }
    Ok(Resp { status, head, body })
}

/// `req`, as bytes, to the proxy's plain HTTP listener.
pub(crate) fn plain_proxy(req: &str) -> Result<Resp, String> {
    let mut s = tcp(PROXY).map_err(|e| format!("proxy: {e}"))?;
    s.write_all(req.as_bytes()).map_err(|e| format!("{e}"))?;
    read_resp(&mut s).map_err(|e| format!("{e}"))
}

/// `CONNECT target` through the proxy: its status and the connection.
pub(crate) fn connect(target: &str) -> Result<(u16, TcpStream), String> {
    let mut s = tcp(PROXY).map_err(|e| format!("proxy: {e}"))?;
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").map_err(|e| format!("{e}"))?;
    let r = read_resp_inner(&mut s, true).map_err(|e| format!("{e}"))?;
    Ok((r.status, s))
}

/// [`connect`] for the cases that judge only the proxy's answer to the `CONNECT`.
pub(crate) fn connect_status(target: &str) -> Result<Resp, String> {
    connect(target).map(|(status, _)| Resp::status_only(status))
}

/// A TLS session inside a tunnel through the proxy.
pub(crate) type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The bottle's trust store (the proxy's CA), offering HTTP/1.1.
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    let mut c = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// A TLS session to `sni` in a `CONNECT target` tunnel, offering HTTP/1.1.
pub(crate) fn tunnel(target: &str, sni: &str) -> Result<Tls, String> {
    tunnel_with(target, sni, tls_config()?)
}

/// [`tunnel`] with the caller's client config (the HTTP/2 cases offer `h2`).
pub(crate) fn tunnel_with(
    target: &str,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Tls, String> {
    let (status, s) = connect(target)?;
    if status != 200 {
        return Err(format!("CONNECT {target}: {status}"));
    }
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| format!("{e}"))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("{e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("tls {sni}: {e}"))?;
    }
    Ok(tls)
}

/// `req`, as bytes, over [`tunnel`]; the response read back.
pub(crate) fn https(target: &str, sni: &str, req: &[u8]) -> Result<Resp, String> {
    let mut t = tunnel(target, sni)?;
    t.write_all(req).map_err(|e| format!("{e}"))?;
    t.flush().map_err(|e| format!("{e}"))?;
    read_resp(&mut t).map_err(|e| format!("{e}"))
}

/// Refused: an error status, or the connection closed without any response.
pub(crate) fn is_block(r: &Resp) -> bool {
    r.status >= 400 || r.status == 0
}

/// The status and the proxy's `x-bot-bottle-blocked` reason, or the error.
pub(crate) fn desc(r: &Result<Resp, String>) -> String {
    match r {
        Ok(r) => {
            let reason = r
                .head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("x-bot-bottle-blocked:")
                        .map(|v| v.trim().to_string())
                })
                .map(|v| format!(" ({v})"))
                .unwrap_or_default();
            format!("{}{reason}", r.status)
        }
        Err(e) => e.clone(),
    }
}

/// Blocked when refused ([`is_block`]) or when the attempt failed.
pub(crate) fn expect_block(t: &mut Tally, what: &str, r: Result<Resp, String>) {
    match &r {
        Ok(resp) if !is_block(resp) => t.escaped(format!("{what}: {}", resp.status)),
        _ => t.blocked(format!("{what}: {}", desc(&r))),
    }
}

/// Like [`expect_block`], but only a refusal by the proxy's policy (403 with the
/// `x-bot-bottle-blocked` reason) counts as blocked.
pub(crate) fn expect_policy_block(t: &mut Tally, what: &str, r: Result<Resp, String>) {
    match &r {
        Ok(resp)
            if resp.status == 403
                && resp
                    .head
                    .to_ascii_lowercase()
                    .contains("x-bot-bottle-blocked:") =>
        {
            t.blocked(format!("{what}: {}", desc(&r)))
        }
        Ok(resp) => t.escaped(
            format!(
                "{what}: {} is not the proxy's refusal (it tried to connect)",
                desc(&r).trim_end_matches(char::is_whitespace)
            ) + if resp.status == 0 {
                " [no response]"
            } else {
                ""
            },
        ),
        Err(e) => t.blocked(format!("{what}: {e}")),
    }
}
